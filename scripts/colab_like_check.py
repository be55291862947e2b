"""Run a notebook the way Google Colab would: fresh environment, only Colab's packages, setup cell.

Colab comes with torch, torchvision, numpy, pandas, matplotlib, scipy, tqdm, ipywidgets
(and what those need) preinstalled; its kernel imports ``google.colab`` at start. A notebook's
setup cell then installs ``nbhelpers`` from the repository with pip. This check rebuilds that
situation on this machine and executes a notebook end to end (tiny budget, offline stand-in
data), then checks that:

- the setup cell saw "Colab" and installed ``nbhelpers`` (from ``$NBHELPERS_INSTALL_SPEC``,
  here a copy of this checkout, as the Colab cell would from the git URL);
- the notebook ran without an error;
- torch's version is the same before and after (the install never downgrades Colab's torch),
  and no other preinstalled distribution was replaced;
- setuptools in the environment is >= 81 (the releases without ``pkg_resources``) or absent.

How the environment is made, fast: instead of installing torch (about 6 GB, 90 s) into a new
virtual environment, a directory ``colab-base/`` gets symbolic links to exactly the
distributions Colab preinstalls, with their dist-info and all their dependencies, taken from
this interpreter's environment (plus Colab's runtime: ipykernel, papermill, pip, setuptools).
A new, empty virtual environment (``--without-pip``) sees them through one ``.pth`` file
(``site.addsitedir``), exactly as if they were installed there, but it can only *add*
packages: pip never removes a distribution outside the environment's prefix, and anything it
installs lands in the new environment, where this check finds it. Its ``google/colab``
package is a stand-in, imported by the kernel launcher ``colab_kernel_launcher`` as Colab's
kernel does; ``COLAB_RELEASE_TAG`` is set as in Colab.

Uses the machine's pip configuration (index, find-links) for the packages Colab lacks
(backpack, cockpit, optuna, ...).

Usage::

    python scripts/colab_like_check.py                    # notebooks/01_*.ipynb
    python scripts/colab_like_check.py notebooks/03_code_review.ipynb --keep /tmp/colab
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: What Colab preinstalls that the series uses (their dependencies come along).
COLAB_PREINSTALLED = (
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "matplotlib",
    "scipy",
    "tqdm",
    "pillow",
    "ipywidgets",
)

#: Colab's own runtime: the kernel, pip and setuptools; papermill executes the notebook here.
COLAB_RUNTIME = ("ipykernel", "papermill", "pip", "setuptools")

#: Files of the checkout that a ``pip install`` of the repository needs (a clone has them).
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.py", "setup.cfg", "MANIFEST.in")

PARAMETERS = {"BUDGET": "tiny", "DATA_SOURCE": "synthetic", "DOWNLOAD": False}

FAKE_COLAB = '''"""Stand-in for Google Colab's ``google.colab`` package (checks only): importable, nothing more."""

__version__ = "0.0.0+stand-in"
'''

FAKE_LAUNCHER = '''"""Stand-in for Colab's kernel launcher: imports ``google.colab`` first, as Colab's kernel does."""

import google.colab  # noqa: F401

from ipykernel import kernelapp

if __name__ == "__main__":
    kernelapp.launch_new_instance()
'''

PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
spec = importlib.util.find_spec("nbhelpers")
print(json.dumps({
    "torch": version("torch"),
    "setuptools": version("setuptools"),
    "pkg_resources": importlib.util.find_spec("pkg_resources") is not None,
    "nbhelpers_file": spec.origin if spec else None,
    "executable": sys.executable,
    "prefix": sys.prefix,
}))
"""

#: Imports every module of nbhelpers, and Cockpit and BackPACK, in the new environment.
IMPORT_ALL = r"""
import importlib, json, pkgutil, traceback
import nbhelpers
names = sorted(m.name for m in pkgutil.walk_packages(nbhelpers.__path__, "nbhelpers."))
errors = []
for name in names + ["cockpit", "backpack"]:
    try:
        importlib.import_module(name)
    except Exception as err:
        errors.append(f"{name}: {type(err).__name__}: {err}")
print(json.dumps({"modules": len(names), "errors": errors}))
"""


@dataclass
class ColabResult:
    """What the Colab-like run found.

    Attributes:
        notebook: the notebook executed.
        n_base: distributions linked into the Colab-like base.
        torch_before, torch_after: torch's version before and after the notebook ran.
        setuptools: the environment's setuptools version (None: absent).
        installed: ``name==version`` of every distribution the setup cell installed.
        replaced: preinstalled distributions that pip installed again (shadowing Colab's).
        setup_output: the setup cell's printed text.
        errors: ``ename: evalue`` of the executed notebook's error outputs, or papermill's
            failure message.
        nbhelpers_file: where the kernel environment imports ``nbhelpers`` from afterwards.
        missing_files: files of the checkout's ``nbhelpers/`` (package data such as shipped
            logs) that the installed package lacks (pyproject's package-data must list them).
        rerun_output: what the setup cell prints when run a second time (Colab, installed).
        import_errors: modules of nbhelpers (and cockpit, backpack) that fail to import in
            the new environment afterwards, as ``module: error``.
        seconds: wall-clock seconds per phase (``base``, ``venv``, ``execute`` (papermill in
            all), ``setup_cell`` (the pip install), ``rerun_and_imports``, ``total``).
        work_dir: the scratch directory (kept only with ``keep``).
    """

    notebook: str
    n_base: int = 0
    torch_before: str | None = None
    torch_after: str | None = None
    setuptools: str | None = None
    installed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    setup_output: str = ""
    errors: list[str] = field(default_factory=list)
    nbhelpers_file: str | None = None
    missing_files: list[str] = field(default_factory=list)
    rerun_output: str = ""
    import_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    work_dir: str = ""

    def problems(self) -> list[str]:
        """Everything that makes the check fail, as sentences (empty list: it passed)."""
        found = [f"notebook error: {e}" for e in self.errors]
        if self.torch_before is None or self.torch_before != self.torch_after:
            found.append(f"torch changed: {self.torch_before} -> {self.torch_after}")
        if self.setuptools is not None and Version(self.setuptools) < Version("81"):
            found.append(f"setuptools {self.setuptools} < 81 in the environment")
        if self.replaced:
            found.append(f"preinstalled distributions replaced: {', '.join(self.replaced)}")
        if "Installing" not in self.setup_output or "nbhelpers installed" not in self.setup_output:
            found.append(f"the setup cell did not install nbhelpers: {self.setup_output[:300]!r}")
        if not self.installed or not any(i.startswith("nbhelpers==") for i in self.installed):
            found.append("nbhelpers is not installed in the new environment")
        if "already installed" not in self.rerun_output:
            found.append(f"re-running the setup cell printed {self.rerun_output[:200]!r}")
        found += [f"import fails in the new environment: {e}" for e in self.import_errors]
        if self.missing_files:
            found.append(f"files missing from the installed package: {self.missing_files[:10]}")
        return found


# --------------------------------------------------------------------------- the base
def _requirements(dist: md.Distribution, extras: frozenset[str]) -> list[Requirement]:
    """The requirements of ``dist`` that apply here, with the given extras requested."""
    found = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None:
            found.append(req)
            continue
        for extra in ("", *sorted(extras)):
            if req.marker.evaluate({"extra": extra}):
                found.append(req)
                break
    return found


def dependency_closure(roots: tuple[str, ...] | list[str]) -> dict[str, md.Distribution]:
    """The installed distributions ``roots`` need, recursively (name -> distribution).

    Requirements are followed with their environment markers evaluated for this machine and
    the requested extras; requirements that are not installed here are skipped.

    Raises:
        ValueError: a root distribution is not installed in this environment.
    """
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(r), frozenset()) for r in roots]
    for name, _ in todo:
        try:
            md.distribution(name)
        except md.PackageNotFoundError as err:
            raise ValueError(
                f"{name!r} is not installed here; cannot link it into the base"
            ) from err
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[name] = dist
        for req in _requirements(dist, extras):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return found


def _top_level_entries(dist: md.Distribution) -> set[str]:
    """The first path components a distribution owns in site-packages (packages, modules,
    ``.libs`` folders, ``.pth`` files, its dist-info)."""
    entries = set()
    for path in dist.files or []:
        parts = Path(path).parts
        if parts and parts[0] not in ("..", "__pycache__") and not parts[0].startswith("."):
            entries.add(parts[0])
    info = getattr(dist, "_path", None)
    if info is not None:
        entries.add(Path(info).name)
    return entries


def link_base(dists: dict[str, md.Distribution], base: Path) -> int:
    """Fill ``base`` with symbolic links to the site-packages entries of ``dists``.

    Returns:
        The number of links made.

    Raises:
        ValueError: a distribution is not a plain site-packages install (e.g. editable).
    """
    base.mkdir(parents=True, exist_ok=True)
    made = 0
    for name, dist in sorted(dists.items()):
        site = Path(dist.locate_file(""))
        for entry in sorted(_top_level_entries(dist)):
            source = site / entry
            target = base / entry
            if target.exists() or target.is_symlink() or not source.exists():
                continue
            if entry.startswith("__editable__"):
                raise ValueError(f"{name} is an editable install; the base needs a normal one.")
            target.symlink_to(source, target_is_directory=source.is_dir())
            made += 1
    return made


# --------------------------------------------------------------------------- the environment
def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages in {venv}")
    return found[0]


def make_environment(venv: Path, base: Path) -> Path:
    """Create an empty virtual environment that sees ``base`` as installed, plus fake Colab.

    Returns:
        The environment's python.

    Raises:
        ValueError: ``base`` lies inside ``venv`` (pip could then remove linked files).
    """
    if base.resolve().is_relative_to(venv.resolve()):
        raise ValueError(f"the base {base} must lie outside the environment {venv}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = _site_packages(venv)
    (site / "_colab_preinstalled.pth").write_text(f"import site; site.addsitedir({str(base)!r})\n")
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "colab" / "__init__.py").write_text(FAKE_COLAB)
    (site / "colab_kernel_launcher.py").write_text(FAKE_LAUNCHER)
    return venv / "bin" / "python"


def _kernelspec(jupyter_dir: Path, python: Path) -> str:
    folder = jupyter_dir / "kernels" / "colab"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python), "-m", "colab_kernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (Colab-like)",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return "colab"


def copy_checkout(dest: Path, root: Path = ROOT) -> Path:
    """Copy what ``pip install <repository>`` needs (package and metadata files) to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    shutil.copytree(
        root / "nbhelpers", dest / "nbhelpers", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest


def _env(work: Path, venv: Path, spec: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MPLBACKEND", "JUPYTER_PATH")
    }
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "jupyter-config"),
        ("JUPYTER_DATA_DIR", "jupyter"),
        ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"),
        ("IPYTHONDIR", "ipython"),
        ("NBHELPERS_RUNS_DIR", "runs"),
        ("NBHELPERS_LOGBOOK_DIR", "logbook"),
        ("NBHELPERS_STAGES_DIR", "stages"),
    ):
        env[var] = str(work / sub)
    env.setdefault("NBHELPERS_DATA_DIR", str(work / "data"))
    env["JUPYTER_PATH"] = str(work / "jupyter")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["NBHELPERS_INSTALL_SPEC"] = str(spec)
    env["COLAB_RELEASE_TAG"] = "stand-in"
    env["PIP_NO_INPUT"] = "1"
    return env


def _probe(python: Path, env: dict[str, str], cwd: Path) -> dict:
    out = subprocess.run(
        [str(python), "-c", PROBE], env=env, cwd=cwd, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _installed_here(site: Path) -> list[str]:
    """``name==version`` of the distributions installed in ``site`` itself (not the base)."""
    found = []
    for info in sorted(site.glob("*.dist-info")):
        meta = md.PathDistribution(info).metadata
        found.append(f"{canonicalize_name(meta['Name'])}=={meta['Version']}")
    return found


def _package_files(folder: Path) -> set[str]:
    """Relative paths of the files of a package folder, without caches and compiled files."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def _is_setup_cell(source: str) -> bool:
    return "google.colab" in source and "pip" in source


def setup_cell_source(notebook: Path) -> str:
    """The source of the notebook's setup cell (the code cell that pip-installs in Colab).

    Raises:
        ValueError: the notebook has no such cell.
    """
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "code" and _is_setup_cell(cell.source):
            return cell.source
    raise ValueError(f"{notebook} has no setup cell (a code cell that checks google.colab).")


def _notebook_facts(path: Path) -> tuple[list[str], str, float]:
    """Error outputs, the setup cell's text output and its duration (s) of an executed notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    errors, setup, setup_s = [], "", 0.0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        errors += [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
        if _is_setup_cell(cell.source) and not setup:
            setup = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
            setup_s = float(cell.metadata.get("papermill", {}).get("duration") or 0.0)
    return errors, setup, setup_s


def _run_python(python: Path, code: str, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(
        [str(python), "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    return proc.stdout + (
        f"\n[exit {proc.returncode}] {proc.stderr[-1500:]}" if proc.returncode else ""
    )


# --------------------------------------------------------------------------- the check
def run_check(
    notebook: Path,
    work: Path,
    *,
    parameters: dict | None = None,
    timeout: float = 900.0,
) -> ColabResult:
    """Build the Colab-like environment in ``work`` and execute ``notebook`` there.

    Args:
        notebook: the notebook (its setup cell must install nbhelpers when in Colab).
        work: an empty scratch directory.
        parameters: papermill parameters (default: tiny budget, stand-in data, no download).
        timeout: seconds papermill may take in all.

    Returns:
        A :class:`ColabResult`; its :meth:`~ColabResult.problems` lists what failed.
    """
    notebook, work = Path(notebook).resolve(), Path(work).resolve()
    t_start = time.perf_counter()
    result = ColabResult(notebook.name, work_dir=str(work))
    base = work / "colab-base"
    closure = dependency_closure(COLAB_PREINSTALLED + COLAB_RUNTIME)
    result.n_base = link_base(closure, base)
    result.seconds["base"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    venv = work / "venv"
    python = make_environment(venv, base)
    spec = copy_checkout(work / "checkout")
    env = _env(work, venv, spec)
    kernel = _kernelspec(work / "jupyter", python)
    before = _probe(python, env, work)
    result.torch_before = before["torch"]
    if before["nbhelpers_file"] is not None:
        raise RuntimeError(f"nbhelpers is importable before the setup cell: {before}")
    result.seconds["venv"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    output = work / f"executed-{notebook.name}"
    cmd = [str(python), "-m", "papermill", str(notebook), str(output), "-k", kernel]
    cmd += ["--cwd", str(work), "--no-progress-bar", "--log-level", "WARNING"]
    for key, value in (PARAMETERS if parameters is None else parameters).items():
        cmd += ["-p", key, str(value)]
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    result.seconds["execute"] = time.perf_counter() - t0
    if output.exists():
        result.errors, result.setup_output, result.seconds["setup_cell"] = _notebook_facts(output)
    if proc.returncode != 0 and not result.errors:
        result.errors.append(f"papermill exited with {proc.returncode}: {proc.stderr[-2000:]}")

    # The setup cell again in a Colab-like interpreter (it must find the installed package),
    # then every module imported there.
    t0 = time.perf_counter()
    code = "import google.colab\n" + setup_cell_source(notebook) + "\n" + IMPORT_ALL
    out = _run_python(python, code, env, work)
    result.seconds["rerun_and_imports"] = time.perf_counter() - t0
    result.rerun_output = out
    try:
        result.import_errors = json.loads(out.strip().splitlines()[-1])["errors"]
    except (ValueError, KeyError, IndexError):
        result.import_errors = [f"import check failed: {out[-1500:]}"]

    after = _probe(python, env, work)
    result.torch_after = after["torch"]
    result.setuptools = after["setuptools"]
    result.nbhelpers_file = after["nbhelpers_file"]
    site = _site_packages(venv)
    result.installed = _installed_here(site)
    result.replaced = [i for i in result.installed if i.split("==")[0] in closure]
    if (site / "nbhelpers").is_dir():
        shipped = _package_files(spec / "nbhelpers")
        result.missing_files = sorted(shipped - _package_files(site / "nbhelpers"))
    result.seconds["total"] = time.perf_counter() - t_start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="scratch directory to keep")
    args = parser.parse_args(argv)
    notebook = args.notebook or next(
        iter(sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))), None
    )
    if notebook is None:
        print("No notebook in notebooks/; run `make notebooks` first.", file=sys.stderr)
        return 1
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run_check(notebook, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="colab-like-") as tmp:
            result = run_check(notebook, Path(tmp))
    print(json.dumps(asdict(result), indent=2))
    problems = result.problems()
    for line in problems:
        print(f"FAIL: {line}", file=sys.stderr)
    print(
        f"{notebook.name}: {'OK' if not problems else 'FAILED'} in {result.seconds['total']:.1f} s"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
