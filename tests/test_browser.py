"""A learner notebook in JupyterLab in a real browser (headless Chromium driven by Playwright).

The browser tests are marked ``browser`` and left out of ``make test``; ``make browser-test``
installs Chromium and Playwright and runs them. Without Playwright or Chromium they are
skipped, unless ``NBHELPERS_REQUIRE_BROWSER=1`` (set by ``make browser-test``): then they fail.
Screenshots go to ``build/screenshots/``. The notebook is ``notebooks/03_*`` (else ``04_*``,
else the first learner notebook), or ``$NBHELPERS_BROWSER_NOTEBOOK``.

The parameter-injection test needs no browser and runs in ``make test``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots"


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "browser_check", ROOT / "scripts" / "browser_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["browser_check"] = module
    spec.loader.exec_module(module)
    return module


bc = _load_script()


def _missing(reason: str) -> None:
    """Skip, or fail under ``make browser-test`` (``NBHELPERS_REQUIRE_BROWSER=1``)."""
    if os.environ.get("NBHELPERS_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _notebook() -> Path:
    chosen = os.environ.get("NBHELPERS_BROWSER_NOTEBOOK")
    path = Path(chosen) if chosen else bc.default_notebook()
    if path is None or not path.is_file():
        _missing(f"no learner notebook to run ({chosen or 'notebooks/ is empty'})")
    return path


def _tiny_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "BUDGET = None\nDATA_SOURCE = 'auto'", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("print(BUDGET, DATA_SOURCE)"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def _processes_mentioning(text: str) -> list[int]:
    """Ids of processes whose command line contains ``text`` (Linux /proc; else empty)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------- no browser needed
def test_prepare_notebook_injects_parameters_after_the_parameters_cell(tmp_path):
    source = _tiny_notebook(tmp_path / "src")
    before = source.read_text()
    copy = bc.prepare_notebook(source, tmp_path / "root")
    nb = nbformat.read(copy, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags[0] == ["parameters"] and tags[1] == ["injected-parameters"]
    assert 'BUDGET = "tiny"' in nb.cells[1].source
    assert 'DATA_SOURCE = "synthetic"' in nb.cells[1].source
    assert "DOWNLOAD = False" in nb.cells[1].source
    assert "tags" not in nb.cells[2].metadata  # no empty tag lists added
    assert source.read_text() == before  # the original is untouched


def test_prepare_notebook_needs_a_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "plain.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="parameters"):
        bc.prepare_notebook(path, tmp_path / "root")


# --------------------------------------------------------------------------- the browser
@pytest.fixture
def browser_ready():
    """Chromium's path; skips (or fails under ``make browser-test``) when a piece is missing."""
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright is not installed (pip install playwright)")
    chromium = bc.find_chromium()
    if chromium is None:
        _missing("Chromium is not installed (apt-get install -y chromium)")
    return chromium


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the learner notebook (tiny budget, stand-in data).

    The context manager's ``finally`` shuts the server and its kernels down, also when the
    test fails.
    """
    copy = bc.prepare_notebook(_notebook(), tmp_path / "root")
    with bc.jupyterlab(tmp_path / "root", tmp_path / "state") as server:
        yield server, copy


@pytest.mark.browser
@pytest.mark.timeout(1200)
def test_learner_notebook_runs_in_jupyterlab(browser_ready, lab, capsys):
    server, copy = lab
    result = bc.run_notebook_in_browser(
        server, copy, SCREENSHOTS, chromium=browser_ready, timeout=900
    )
    with capsys.disabled():
        print(f"\n  {copy.name} in JupyterLab: Run All took {result.seconds:.1f} s")
        print("  " + json.dumps({k: v for k, v in asdict(result).items() if k != "screenshots"}))
        print(f"  screenshots: {SCREENSHOTS}")
    assert result.n_code_cells > 0
    assert result.n_executed == result.n_code_cells, "not every code cell ran"
    assert result.tracebacks == [], "a cell shows a traceback"
    assert result.saved_errors == [], "the saved notebook holds error outputs"
    assert result.widget_errors == [], "a widget did not render"
    assert result.n_progress_bars >= 1, "no tqdm progress bar rendered as a widget"
    assert result.n_widgets >= 1 and result.saved_widget_views >= 1
    assert result.n_images >= 1, "no plot rendered"
    assert result.problems() == []
    assert len(result.screenshots) == 5
    for shot in result.screenshots:
        assert Path(shot).stat().st_size > 20_000, f"{shot} looks empty"


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_jupyterlab_is_shut_down_after_use(tmp_path):
    """The server and its kernel are gone after the context manager, and the port is free."""
    _tiny_notebook(tmp_path / "root")
    with bc.jupyterlab(tmp_path / "root", tmp_path / "state") as server:
        started = server.api("api/kernels", method="POST")
        assert started["execution_state"] in ("starting", "idle", "busy")
        deadline = time.monotonic() + 60
        while not _processes_mentioning(started["id"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_mentioning(started["id"]), "the kernel process never appeared"
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
    assert server.process.poll() is not None
    assert _processes_mentioning(started["id"]) == [], "the kernel process is still running"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_check_reports_a_failing_cell(browser_ready, tmp_path):
    """The check can fail: a traceback is reported, and cells after it count as not run."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("BUDGET = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3)):\n    pass"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "broken.ipynb")
    copy = bc.prepare_notebook(tmp_path / "src" / "broken.ipynb", tmp_path / "root", {})
    with bc.jupyterlab(tmp_path / "root", tmp_path / "state") as server:
        result = bc.run_notebook_in_browser(
            server, copy, tmp_path / "shots", chromium=browser_ready, timeout=300
        )
    assert any("broken on purpose" in t for t in result.tracebacks)
    assert any("ValueError" in e for e in result.saved_errors)
    assert result.n_executed < result.n_code_cells == 5  # with the injected-parameters cell
    assert result.n_progress_bars == 1
    problems = result.problems()
    assert any("traceback" in p for p in problems) and any("no image" in p for p in problems)
