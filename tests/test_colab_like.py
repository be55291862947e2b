"""A notebook in a Colab-like fresh environment: the setup cell installs nbhelpers, nothing breaks.

``scripts/colab_like_check.py`` builds an empty virtual environment that sees only what
Colab preinstalls (torch, torchvision, numpy, pandas, matplotlib, scipy, tqdm, ipywidgets and
their dependencies, linked from this environment, plus Colab's runtime: ipykernel, pip,
setuptools, and papermill to execute), a stand-in ``google.colab`` imported by the kernel
launcher, and executes a learner notebook (tiny budget, stand-in data) whose setup cell
pip-installs nbhelpers from a copy of this checkout (``NBHELPERS_INSTALL_SPEC``).

The notebook is ``notebooks/01_*`` (what a Colab learner opens first), or
``$NBHELPERS_COLAB_NOTEBOOK``. pip uses this machine's package index for what Colab lacks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "colab_like_check", ROOT / "scripts" / "colab_like_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["colab_like_check"] = module
    spec.loader.exec_module(module)
    return module


clc = _load_script()


def _notebook() -> Path:
    chosen = os.environ.get("NBHELPERS_COLAB_NOTEBOOK")
    if chosen:
        return Path(chosen)
    found = sorted((ROOT / "notebooks").glob("01_*.ipynb")) or sorted(
        (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
    )
    if not found:
        pytest.skip("no learner notebook built yet (make notebooks)")
    return found[0]


# --------------------------------------------------------------------------- the pieces
def test_closure_holds_colab_packages_and_their_dependencies_only():
    closure = clc.dependency_closure(clc.COLAB_PREINSTALLED + clc.COLAB_RUNTIME)
    assert {"torch", "torchvision", "numpy", "ipywidgets", "ipykernel", "papermill"} <= set(closure)
    assert "filelock" in closure  # a dependency of torch
    for not_in_colab in ("nbhelpers", "optuna", "backpack-for-pytorch", "cockpit-for-pytorch"):
        assert not_in_colab not in closure


def test_closure_rejects_a_package_that_is_not_installed():
    with pytest.raises(ValueError, match="not installed"):
        clc.dependency_closure(["no-such-distribution-xyz"])


def test_environment_sees_the_base_but_not_nbhelpers(tmp_path):
    closure = clc.dependency_closure(["tqdm"])
    base = tmp_path / "base"
    assert clc.link_base(closure, base) >= 2  # the package and its dist-info
    python = clc.make_environment(tmp_path / "venv", base)
    code = (
        "import importlib.util, json, tqdm, sys; "
        "print(json.dumps([tqdm.__file__, importlib.util.find_spec('nbhelpers') is None, "
        "'google.colab' in sys.modules, importlib.util.find_spec('google.colab') is not None]))"
    )
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    tqdm_file, no_nbhelpers, imported, findable = json.loads(out.stdout)
    assert tqdm_file.startswith(str(base))
    assert no_nbhelpers and findable
    assert not imported  # only the Colab-like kernel launcher imports it


def test_environment_refuses_a_base_inside_it(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        clc.make_environment(tmp_path / "venv", tmp_path / "venv" / "base")


def test_setup_cell_is_found_in_every_notebook():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (ROOT / "solutions").glob("*.ipynb")
    )
    if not notebooks:
        pytest.skip("no notebooks built yet")
    for path in notebooks:
        source = clc.setup_cell_source(path)
        assert "NBHELPERS_INSTALL_SPEC" in source, path.name


# --------------------------------------------------------------------------- the whole check
@pytest.mark.timeout(1200)
def test_notebook_runs_in_colab_like_environment(tmp_path, capsys):
    result = clc.run_check(_notebook(), tmp_path / "colab")
    with capsys.disabled():
        seconds = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        print(f"\n  Colab-like run of {result.notebook}: {seconds}")
        print(f"  installed by the setup cell: {', '.join(result.installed)}")
    details = json.dumps(asdict(result), indent=1)[:4000]
    assert result.errors == [], details
    assert result.torch_before is not None
    assert result.torch_after == result.torch_before, "the setup cell changed torch"
    assert result.replaced == [], "pip replaced a preinstalled distribution"
    assert result.setuptools is None or Version(result.setuptools) >= Version("81")
    assert "Installing" in result.setup_output and "nbhelpers installed" in result.setup_output
    venv_site = str(tmp_path / "colab" / "venv")
    assert result.nbhelpers_file is not None and result.nbhelpers_file.startswith(venv_site)
    assert "already installed" in result.rerun_output
    assert result.import_errors == []
    assert result.missing_files == [], "package data missing from the installed package"
    assert result.problems() == []
