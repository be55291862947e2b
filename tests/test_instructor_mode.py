"""Instructor mode: with the run records cached, a notebook executed again replays its training.

``nbhelpers.experiment.run`` stores every finished run under ``$NBHELPERS_RUNS_DIR`` keyed
by a hash of its configuration. A solution notebook executed twice with the same runs
directory trains on the first execution and, on the second, loads every run from there
("Loaded cached run ...") without writing new records. The speed-up is printed, not asserted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_RUN_CALL = re.compile(r"(?<![\w.])run\(")


def _uses_run(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    imports_run = any(
        re.search(r"from nbhelpers\.experiment import[^\n]*\brun\b", s) for s in sources
    )
    return imports_run and any(_RUN_CALL.search(s) for s in sources)


def _solution_notebook() -> Path:
    """``solutions/03_*`` if it trains through ``run()``, else the first solution that does."""
    candidates = sorted((ROOT / "solutions").glob("03_*.ipynb")) + sorted(
        (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")
    )
    for path in candidates:
        if _uses_run(path):
            return path
    pytest.skip("no solution notebook trains through nbhelpers.experiment.run yet")


def _stream_text(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def _execute(path: Path, output: Path, cwd: Path) -> tuple[str, float]:
    import papermill as pm

    t0 = time.perf_counter()
    pm.execute_notebook(
        str(path),
        str(output),
        parameters={"BUDGET": "tiny", "DATA_SOURCE": "synthetic", "DOWNLOAD": False},
        kernel_name="python3",
        cwd=str(cwd),
        progress_bar=False,
        execution_timeout=600,
    )
    seconds = time.perf_counter() - t0
    return _stream_text(nbformat.read(output, as_version=4)), seconds


def _records(runs_dir: Path) -> dict[str, int]:
    """Run record files (name -> modification time in ns); stage, logbook and watch files excluded."""
    from nbhelpers.watch.store import FILE_NAME as WATCH_FILE

    return {p.name: p.stat().st_mtime_ns for p in runs_dir.glob("*.json") if p.name != WATCH_FILE}


@pytest.mark.timeout(1200)
def test_second_execution_replays_cached_runs(tmp_path, monkeypatch, capsys):
    path = _solution_notebook()
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("NBHELPERS_STAGES_DIR", str(tmp_path / "stages"))
    monkeypatch.setenv("NBHELPERS_LOGBOOK_DIR", str(tmp_path / "logbook"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    first, first_s = _execute(path, tmp_path / "first.ipynb", cwd)
    records = _records(runs_dir)
    assert records, f"{path.name} saved no run record in {runs_dir}"
    first_hits = len(re.findall(r"Loaded cached run", first))  # same config twice in one go

    second, second_s = _execute(path, tmp_path / "second.ipynb", cwd)
    hits = re.findall(r"Loaded cached run (\S+) \((\w+)[,)]", second)
    with capsys.disabled():
        print(
            f"\n  {path.parent.name}/{path.name}: first execution {first_s:.1f} s, "
            f"second {second_s:.1f} s with {len(hits)} cached runs replayed"
        )
    expected = first_hits + len(records)  # every run() call of the first execution
    assert len(hits) == expected, f"expected {expected} cache hits, got {hits}"
    assert {f"{name}-{short}.json" for name, short in hits} == set(records)
    assert "Saved run" not in second, "the second execution trained again"
    assert _records(runs_dir) == records, "the second execution wrote run records"
