"""Running one learner or solution notebook at the tiny budget, for the exercise tests.

Imported by ``tests/test_notebook_*.py`` and ``tests/test_speed_notebook.py`` (pytest puts
``tests/`` on the path).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

TINY = {"BUDGET": "tiny", "DATA_SOURCE": "synthetic", "DOWNLOAD": False}


def execute_tiny(nb, tmp_path: Path, monkeypatch, *, runs_dir: Path | None = None, **parameters):
    """Execute ``nb`` with papermill at the tiny budget on the stand-in, in private folders.

    Data, logbook and stage records go under ``tmp_path``; runs too unless ``runs_dir`` names a
    folder shared between tests. ``parameters`` are added to the tiny ones (e.g.
    ``TRAIN_LIVE=False``). Returns the executed notebook.
    """
    import papermill as pm

    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(runs_dir or tmp_path / "runs"))
    for var in ("LOGBOOK", "STAGES", "DATA"):
        monkeypatch.setenv(f"NBHELPERS_{var}_DIR", str(tmp_path / var.lower()))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    source, output = tmp_path / "notebook.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(nb, source)
    (tmp_path / "cwd").mkdir()
    pm.execute_notebook(
        str(source), str(output), kernel_name="python3", cwd=str(tmp_path / "cwd"),
        parameters=TINY | parameters, progress_bar=False, execution_timeout=600,
    )  # fmt: skip
    return nbformat.read(output, as_version=4)


def output_text(cell) -> str:
    """What a code cell printed: its streams and the plain-text form of its results."""
    return "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "")
        for out in cell.get("outputs", [])
    )
