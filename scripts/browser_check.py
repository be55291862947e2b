"""Run a learner notebook in JupyterLab in a real browser (headless Chromium, driven by Playwright).

What a learner does, done by a program: start JupyterLab, open the notebook, choose
*Run > Run All Cells*, wait until the kernel is idle, look at the page. The check passes when
no cell shows a traceback, the progress bars (tqdm) and other ipywidgets render as widgets
(not as "Error displaying widget" or plain text), and the plots appear as images. Screenshots
(the whole window, then scrolled to the first widget, the first plot and the end) go to
``build/screenshots/``.

The copy that runs gets the tiny budget and the offline stand-in data by papermill's own
parameter injection (a cell tagged ``injected-parameters`` after the ``parameters`` cell), so
the notebook file under test is not changed. JupyterLab runs from this interpreter on
127.0.0.1, on a free port, with a random token, a temporary root directory and temporary
Jupyter and ``NBHELPERS_*`` directories; it is shut down at the end, also on failure.

Needs Playwright (``pip install playwright``) and a Chromium (Debian: ``apt-get install -y
chromium``; Playwright's own browser download is not needed). ``make browser-test`` installs
both and runs ``tests/test_browser.py``, which uses this module.

Usage::

    python scripts/browser_check.py                          # notebooks/03_*.ipynb (or the first)
    python scripts/browser_check.py notebooks/04_turn_off_extras.ipynb --screenshots /tmp/shots
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Where Debian (and most Linux distributions) put Chromium; the first one found is used.
CHROMIUM_CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
)

#: Chromium flags: headless, no sandbox (containers), no GPU, and no traffic of its own.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Parameters injected into the copy that runs: seconds of work, no network.
DEFAULT_PARAMETERS = {"BUDGET": "tiny", "DATA_SOURCE": "synthetic", "DOWNLOAD": False}

#: JupyterLab user settings for the run: no news or update check (no network, no pop-up).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

VIEWPORT = {"width": 1440, "height": 1000}

# DOM selectors of JupyterLab 4 and ipywidgets 8.
SEL_CODE_CELL = ".jp-Notebook .jp-CodeCell"
SEL_PROMPT = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"
SEL_STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
SEL_ERROR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
SEL_WIDGET = ".jp-OutputArea-output .jupyter-widgets"
SEL_PROGRESS = ".jp-OutputArea-output .widget-hprogress"
SEL_IMAGE = ".jp-OutputArea-output img"


@dataclass
class LabServer:
    """A running JupyterLab.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:38211/``.
        token: the access token.
        root_dir: the directory JupyterLab serves.
        process: the server process (leader of its own process group).
        log_path: the server's stdout and stderr.
    """

    url: str
    token: str
    root_dir: Path
    process: subprocess.Popen
    log_path: Path

    def api(self, path: str, method: str = "GET", timeout: float = 10.0):
        """Call the Jupyter REST API; return the decoded JSON (None for an empty body).

        Raises:
            urllib.error.URLError: the server cannot be reached or answers with an error status.
        """
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "PUT") else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body.strip() else None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last ``n_chars`` characters of the server log."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


@dataclass
class BrowserResult:
    """What the browser saw after *Run All Cells*.

    Attributes:
        notebook: the notebook's file name.
        seconds: wall-clock seconds from the click on *Run All Cells* to an idle kernel.
        n_code_cells: code cells in the notebook (non-empty ones).
        n_executed: code cells that show an execution count.
        n_images: ``<img>`` elements in outputs (plots).
        n_widgets: ipywidgets views in outputs (``.jupyter-widgets``).
        n_progress_bars: progress-bar widgets in outputs (tqdm in Jupyter draws these).
        widget_errors: texts of "Error displaying widget" messages.
        tracebacks: stderr outputs of the page that hold a traceback.
        saved_errors: ``ename: evalue`` of error outputs in the saved notebook file.
        saved_widget_views: widget-view outputs in the saved notebook file.
        console_errors: error messages in the browser console (for information).
        screenshots: PNG files written.
    """

    notebook: str
    seconds: float = 0.0
    n_code_cells: int = 0
    n_executed: int = 0
    n_images: int = 0
    n_widgets: int = 0
    n_progress_bars: int = 0
    widget_errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    saved_errors: list[str] = field(default_factory=list)
    saved_widget_views: int = 0
    console_errors: list[str] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that makes the check fail, as sentences (empty list: it passed)."""
        found = []
        if self.n_executed < self.n_code_cells:
            found.append(f"only {self.n_executed} of {self.n_code_cells} code cells ran")
        found += [f"traceback in the page: {t[:300]}" for t in self.tracebacks]
        found += [f"error output in the saved notebook: {e}" for e in self.saved_errors]
        found += [f"widget not rendered: {w[:200]}" for w in self.widget_errors]
        if self.n_progress_bars == 0:
            found.append("no progress bar widget rendered")
        if self.n_widgets == 0:
            found.append("no ipywidgets widget rendered")
        if self.n_images == 0:
            found.append("no image (plot) in the outputs")
        return found


# --------------------------------------------------------------------------- set-up
def find_chromium() -> str | None:
    """Path of a Chromium executable (``$CHROMIUM_PATH`` first), or None."""
    env = os.environ.get("CHROMIUM_PATH")
    candidates = ([env] if env else []) + list(CHROMIUM_CANDIDATES)
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_notebook(folder: Path = ROOT / "notebooks") -> Path | None:
    """The learner notebook to check: ``03_*``, else ``04_*``, else the first one (None: none)."""
    for pattern in ("03_*.ipynb", "04_*.ipynb", "[0-9][0-9]_*.ipynb"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def prepare_notebook(source: Path, dest_dir: Path, parameters: dict | None = None) -> Path:
    """Copy ``source`` into ``dest_dir`` with ``parameters`` injected the way papermill does it.

    The copy gets a cell tagged ``injected-parameters`` right after the cell tagged
    ``parameters``; nothing else changes (no outputs, same kernelspec).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the notebook has no cell tagged ``parameters``.
    """
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    if not Path(source).is_file():
        raise FileNotFoundError(f"No notebook at {source}.")
    nb = load_notebook_node(str(source))  # adds the metadata papermill works with
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{source} has no cell tagged 'parameters' to inject into.")
    nb = parameterize_notebook(nb, dict(DEFAULT_PARAMETERS if parameters is None else parameters))
    for cell in nb.cells:  # drop the empty per-cell entries papermill added
        for key in ("tags", "papermill"):
            if not cell.metadata.get(key, True):
                del cell.metadata[key]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / source.name
    nbformat.write(nb, dest)
    return dest


def _lab_env(state_dir: Path) -> dict[str, str]:
    """Environment of the server and its kernels: private Jupyter and nbhelpers directories."""
    env = dict(os.environ)
    for var in ("MPLBACKEND", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "PYTHONPATH"):
        env.pop(var, None)
    dirs = {
        "JUPYTER_CONFIG_DIR": "jupyter-config",
        "JUPYTER_DATA_DIR": "jupyter-data",
        "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
    }
    for var in ("NBHELPERS_RUNS_DIR", "NBHELPERS_LOGBOOK_DIR", "NBHELPERS_STAGES_DIR"):
        dirs[var] = var.removeprefix("NBHELPERS_").removesuffix("_DIR").lower()
    for var, sub in dirs.items():
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(state_dir / sub)
    env.setdefault("NBHELPERS_DATA_DIR", str(state_dir / "data"))
    env["PYTHONUNBUFFERED"] = "1"
    for name, settings in LAB_SETTINGS.items():
        path = state_dir / "lab-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return env


@contextlib.contextmanager
def jupyterlab(
    root_dir: Path,
    state_dir: Path,
    *,
    python: str = sys.executable,
    start_timeout: float = 120.0,
) -> Iterator[LabServer]:
    """Start JupyterLab on 127.0.0.1 with a token; stop it (and its kernels) on exit.

    Args:
        root_dir: the directory JupyterLab serves (holds the notebook).
        state_dir: a scratch directory for Jupyter settings, runtime files and the
            ``NBHELPERS_*`` directories (``NBHELPERS_DATA_DIR`` is kept when already set).
        python: the interpreter that has JupyterLab installed.
        start_timeout: seconds to wait for the server to answer.

    Yields:
        The :class:`LabServer`.

    Raises:
        RuntimeError: the server exits or does not answer within ``start_timeout`` seconds
            (the message ends with its log).
    """
    port, token = free_port(), secrets.token_hex(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "jupyterlab.log"
    cmd = [
        python,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=_lab_env(state_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, root_dir, process, log_path)
    try:
        _wait_until_up(server, start_timeout)
        yield server
    finally:
        stop_jupyterlab(server)


def _wait_until_up(server: LabServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            server.api("api/status", timeout=2)
            return
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def stop_jupyterlab(server: LabServer, timeout: float = 20.0) -> None:
    """Shut the server and its kernels down: REST shutdown, then SIGTERM, then SIGKILL.

    Kernels run in process groups of their own, so they are shut down through the REST API
    first (the server also stops its kernels when it shuts down).
    """
    if server.process.poll() is None:
        with contextlib.suppress(Exception):
            for kernel in server.api("api/kernels", timeout=5) or []:
                with contextlib.suppress(Exception):
                    server.api(f"api/kernels/{kernel['id']}", method="DELETE", timeout=10)
        with contextlib.suppress(Exception):
            server.api("api/shutdown", method="POST", timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=timeout)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if server.process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=10)
    # Anything left in the server's own process group (it leads it) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the browser
def _kernels_idle(server: LabServer, connected: bool = False) -> bool:
    """True when the server has kernels and all are idle (and, if asked, have a client)."""
    try:
        kernels = server.api("api/kernels", timeout=5) or []
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return bool(kernels) and all(
        k.get("execution_state") == "idle" and (not connected or k.get("connections", 0) > 0)
        for k in kernels
    )


def _wait_for_kernel(page, server: LabServer, timeout: float) -> None:
    """Wait until the notebook's kernel has started, is connected to the page and is idle.

    The toolbar's execution indicator already says "idle" before the kernel starts, so the
    server's view (REST API: idle, one connection) is checked as well, and must hold for 1 s.
    """
    deadline = time.monotonic() + timeout
    steady_since = None
    indicator = page.locator(".jp-Notebook-ExecutionIndicator")
    while time.monotonic() < deadline:
        ready = _kernels_idle(server, connected=True) and (
            indicator.count() > 0 and indicator.first.get_attribute("data-status") == "idle"
        )
        if not ready:
            steady_since = None
        elif steady_since is None:
            steady_since = time.monotonic()
        elif time.monotonic() - steady_since >= 1.0:
            return
        page.wait_for_timeout(250)
    raise TimeoutError(f"The kernel was not ready within {timeout:.0f} s:\n{server.log_tail()}")


def _prompt_counts(page) -> tuple[int, int]:
    """(cells still queued or running ``[*]``, cells with an execution count ``[n]``).

    Uses ``textContent``: ``innerText`` is empty for the off-screen cells that JupyterLab's
    default windowing mode ("contentVisibility") does not lay out.
    """
    texts = page.locator(SEL_PROMPT).all_text_contents()
    running = sum("*" in t for t in texts)
    done = sum(bool(re.search(r"\[\d+\]", t)) for t in texts)
    return running, done


def _wait_for_run_all(page, server: LabServer, n_code: int, timeout: float) -> None:
    """Wait until no cell is queued or running and the kernel stays idle for 2 s."""
    deadline = time.monotonic() + timeout
    started_by = time.monotonic() + 20
    idle_since = None
    while time.monotonic() < deadline:
        running, done = _prompt_counts(page)
        if running == 0 and done == 0 and time.monotonic() > started_by:
            raise RuntimeError("Run All Cells did not start any cell within 20 s.")
        # Finished: nothing queued or running, the kernel idle. After an error JupyterLab
        # cancels the queued cells, so fewer than n_code cells may show a count.
        idle = running == 0 and done > 0 and _kernels_idle(server)
        if idle:
            if idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 2.0:  # idle, and it stays idle
                return
        else:
            idle_since = None
        page.wait_for_timeout(500)
    running, done = _prompt_counts(page)
    raise TimeoutError(
        f"Run All did not finish within {timeout:.0f} s: {done} of {n_code} cells ran, "
        f"{running} still queued or running."
    )


def _click_run_all(page) -> None:
    """Choose *Run > Run All Cells* in the menu bar, as a learner would."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).first.click()


def _screenshot(page, target, path: Path, shots: list[str]) -> None:
    """Scroll ``target`` (a locator; None: as it is) into view and save a screenshot."""
    if target is not None and target.count():
        target.first.scroll_into_view_if_needed()
        page.wait_for_timeout(600)
    page.screenshot(path=str(path), full_page=True)
    shots.append(str(path))


def _saved_notebook_facts(path: Path) -> tuple[list[str], int]:
    """Error outputs (``ename: evalue``) and widget-view outputs of the saved file."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    errors, views = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                errors.append(f"{out.get('ename')}: {out.get('evalue')}")
            views += "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    return errors, views


def run_notebook_in_browser(
    server: LabServer,
    notebook: Path,
    screenshots_dir: Path,
    *,
    chromium: str | None = None,
    timeout: float = 300.0,
) -> BrowserResult:
    """Open ``notebook`` in JupyterLab, *Run All Cells*, wait for an idle kernel, inspect the page.

    Args:
        server: a running :class:`LabServer` whose root directory holds ``notebook``.
        notebook: the notebook file (inside ``server.root_dir``).
        screenshots_dir: where the PNG screenshots go (created).
        chromium: the Chromium executable (default :func:`find_chromium`).
        timeout: seconds the notebook may take to run.

    Returns:
        A :class:`BrowserResult`; its :meth:`~BrowserResult.problems` lists what failed.

    Raises:
        RuntimeError: no Chromium found.
        TimeoutError: the notebook does not finish within ``timeout`` seconds.
    """
    import nbformat
    from playwright.sync_api import sync_playwright

    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("No Chromium found: apt-get install -y chromium (or set CHROMIUM_PATH).")
    nb = nbformat.read(notebook, as_version=4)
    n_code = sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells)
    result = BrowserResult(notebook.name, n_code_cells=n_code)
    screenshots_dir.mkdir(parents=True, exist_ok=True)
    stem = notebook.stem
    relative = notebook.resolve().relative_to(server.root_dir.resolve()).as_posix()
    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda msg: (
                    result.console_errors.append(msg.text[:300]) if msg.type == "error" else None
                ),
            )
            page.goto(f"{server.url}lab/tree/{relative}?token={server.token}&reset")
            page.wait_for_selector(SEL_CODE_CELL, timeout=90_000)
            _wait_for_kernel(page, server, timeout=120)
            t0 = time.monotonic()
            _click_run_all(page)
            _wait_for_run_all(page, server, n_code, timeout)
            result.seconds = time.monotonic() - t0
            page.wait_for_timeout(1000)  # let the last widgets and images attach
            _inspect_page(page, result)
            page.keyboard.press("Control+s")
            page.wait_for_timeout(1500)
            result.saved_errors, result.saved_widget_views = _saved_notebook_facts(notebook)
            shots = [
                (page.locator(".jp-Notebook .jp-Cell").first, "1-top"),
                (page.locator(SEL_PROGRESS), "2-progress-bar"),
                (page.locator(SEL_IMAGE), "3-first-plot"),
                (page.locator(SEL_IMAGE).last, "4-last-plot"),
                (page.locator(SEL_CODE_CELL).last, "5-end"),
            ]
            for target, name in shots:
                _screenshot(
                    page, target, screenshots_dir / f"{stem}-{name}.png", result.screenshots
                )
        finally:
            context.close()
    return result


def _inspect_page(page, result: BrowserResult) -> None:
    """Fill the DOM counts of ``result`` (all cells are attached: JupyterLab's default
    windowing mode, "contentVisibility", keeps off-screen cells in the DOM)."""
    result.n_executed = _prompt_counts(page)[1]
    result.n_images = page.locator(SEL_IMAGE).count()
    result.n_widgets = page.locator(SEL_WIDGET).count()
    result.n_progress_bars = page.locator(SEL_PROGRESS).count()
    result.widget_errors = [
        t
        for t in page.locator(".jp-OutputArea-output").all_text_contents()
        if "Error displaying widget" in t or "Loading widget..." in t
    ]
    # JupyterLab shows error outputs (tracebacks) as stderr; the error mime type is a fallback.
    stderr = page.locator(SEL_STDERR).all_text_contents()
    result.tracebacks = [t for t in stderr if "Traceback" in t]
    result.tracebacks += page.locator(SEL_ERROR).all_text_contents()


# --------------------------------------------------------------------------- command line
def check(
    notebook: Path,
    screenshots_dir: Path,
    *,
    work_dir: Path | None = None,
    parameters: dict | None = None,
    timeout: float = 300.0,
) -> BrowserResult:
    """The whole check: copy with injected parameters, JupyterLab up, browser run, shut down.

    Args:
        notebook: the learner notebook to run.
        screenshots_dir: where the screenshots go.
        work_dir: scratch directory (default: a temporary one, removed afterwards).
        parameters: injected parameters (default :data:`DEFAULT_PARAMETERS`).
        timeout: seconds the notebook may take to run.
    """
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-check-")))
        root = work_dir / "root"
        copy = prepare_notebook(notebook, root, parameters)
        server = stack.enter_context(jupyterlab(root, work_dir / "state"))
        return run_notebook_in_browser(server, copy, screenshots_dir, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=None)
    parser.add_argument("--screenshots", type=Path, default=ROOT / "build" / "screenshots")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for Run All")
    args = parser.parse_args(argv)
    notebook = args.notebook or default_notebook()
    if notebook is None:
        print("No learner notebook in notebooks/; run `make notebooks` first.", file=sys.stderr)
        return 1
    result = check(notebook, args.screenshots, timeout=args.timeout)
    print(json.dumps(asdict(result), indent=2))
    problems = result.problems()
    for line in problems:
        print(f"FAIL: {line}", file=sys.stderr)
    print(f"{notebook.name}: {'OK' if not problems else 'FAILED'} in {result.seconds:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
