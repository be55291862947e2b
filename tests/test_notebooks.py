"""Execute every learner and solution notebook top to bottom (papermill, fresh kernel).

Notebooks are discovered by glob, so a new notebook is tested as soon as it is built.
``make test`` runs them at the tiny budget on the offline stand-in data; the quick budget is
``tests/test_journey.py`` (``make test-slow``). Each notebook's execution time is printed. Also tests the
helpers of :mod:`nbhelpers.notebook` (start, record_stage, read_stages).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from nbhelpers.notebook import Claim, read_stages, record_stage, stage_path, start

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "solutions").glob("*.ipynb")
)
_PLOT = re.compile(r"\bplt\.|\bplot_\w*\(|\bshow_grid\(|\.plot\(|\bplot\w*\(")


def _ids(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory):
    """One data directory for the session, so the stand-in cache is generated once."""
    return tmp_path_factory.mktemp("nbdata")


def _has_plot(nb) -> bool:
    return any(c.cell_type == "code" and _PLOT.search(c.source) for c in nb.cells)


def _images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.get("outputs", [])
    )


def _execute(path: Path, budget: str, tmp_path: Path, data_dir: Path, monkeypatch, capsys):
    import papermill as pm

    for var, sub in (
        ("NBHELPERS_RUNS_DIR", "runs"),
        ("NBHELPERS_LOGBOOK_DIR", "logbook"),
        ("NBHELPERS_STAGES_DIR", "stages"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("NBHELPERS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend
    work = tmp_path / "cwd"
    work.mkdir()
    output = tmp_path / f"executed-{path.name}"
    t0 = time.perf_counter()
    pm.execute_notebook(
        str(path),
        str(output),
        parameters={"BUDGET": budget, "DATA_SOURCE": "synthetic", "DOWNLOAD": False},
        kernel_name="python3",
        cwd=str(work),
        progress_bar=False,
        execution_timeout=600,
    )
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n  {_ids(path)} ({budget} budget): executed in {seconds:.1f} s")
    executed = nbformat.read(output, as_version=4)
    if _has_plot(nbformat.read(path, as_version=4)):
        assert _images(executed) >= 1, f"{_ids(path)} draws a plot but shows no image"
    return executed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_tiny(path, tmp_path, shared_data_dir, monkeypatch, capsys):
    executed = _execute(path, "tiny", tmp_path, shared_data_dir, monkeypatch, capsys)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if path.parent.name == "notebooks":  # what it prints gives no later exercise's answer away
        found = _printed_giveaways(executed, path.name[:2])
        assert not found, f"{_ids(path)} prints answers of exercises to come: {found}"


def _printed_giveaways(nb, stage: str) -> list[str]:
    """Give-away phrases (tests/test_giveaways.py) in the outputs: before the notebook's first
    exercise those of its own and later exercises, after it those of later notebooks."""
    from test_giveaways import _first_exercise, giveaways_in

    first = _first_exercise(nb)
    found = []
    for index, cell in enumerate(nb.cells):
        texts = [o.get("text", "") for o in cell.get("outputs", [])]
        texts += [str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
        own = stage if index < first else f"{int(stage) + 1:02d}"
        found += giveaways_in("\n".join(texts), own)
    return found


def test_every_notebook_has_parameters_cell():
    assert NOTEBOOKS, "no notebooks built yet"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{_ids(path)}: needs exactly one 'parameters' cell"
        for name in ("BUDGET", "DATA_SOURCE", "DOWNLOAD", "SEED"):
            assert re.search(rf"^{name}\s*=", tagged[0].source, re.M), f"{_ids(path)}: {name}"


# --- nbhelpers.notebook -------------------------------------------------------------------------


def test_start_loads_budget_sized_data(capsys):
    ctx = start("tiny", "synthetic", download=False, seed=0)
    out = capsys.readouterr().out
    assert ctx.budget.name == "tiny" and ctx.device.type in ("cpu", "cuda", "mps")
    assert len(ctx.bundle.train) == ctx.budget.n_train
    assert len(ctx.bundle.test) == ctx.budget.n_test
    assert "STAND-IN" in out and "budget tiny" in out
    device, budget, bundle = ctx
    assert bundle is ctx.bundle


def test_start_rejects_unknown_budget():
    with pytest.raises(ValueError, match="Unknown budget"):
        start("huge", "synthetic", download=False)


def test_record_and_read_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("NBHELPERS_STAGES_DIR", str(tmp_path / "st"))
    record_stage("03", "zero_grad fixed", test_accuracy=0.5, test_split="colleague", note="x")
    record_stage("01", "handover", test_accuracy=0.1, test_split="colleague")
    claim = Claim("clearly above chance", True, "60% vs 19%")
    record_stage("03", "zero_grad fixed", test_accuracy=0.6, test_split="test", claims=[claim])
    stages = read_stages()  # the re-run overwrote stage 03
    assert [s["stage"] for s in stages] == ["01", "03"]
    assert stages[1]["test_accuracy"] == 0.6 and "note" not in stages[1]
    assert stages[1]["claims"] == [
        {"text": "clearly above chance", "holds": True, "evidence": "60% vs 19%"}
    ]
    assert stages[1]["test_split"] == "test" and stages[0]["claims"] == []
    assert not list((tmp_path / "st").glob("*.tmp"))
    assert json.loads((tmp_path / "st" / "stage-01.json").read_text())["label"] == "handover"


def test_stages_dir_defaults_under_runs_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NBHELPERS_STAGES_DIR", raising=False)
    record_stage("02", "faster")
    assert (tmp_path / "runs" / "stages" / "stage-02.json").is_file()
    assert stage_path("02") == tmp_path / "runs" / "stages" / "stage-02.json"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stage": "0 1", "label": "x"}, "stage"),
        ({"stage": "01", "label": " "}, "label"),
        ({"stage": "01", "label": "x", "test_accuracy": 93.2, "test_split": "test"}, r"\[0, 1\]"),
        ({"stage": "01", "label": "x", "test_accuracy": 0.9}, "test_split"),
        ({"stage": "01", "label": "x", "test_accuracy": 0.9, "test_split": "valid"}, "colleague"),
        ({"stage": "01", "label": "x", "claims": ["holds"]}, "Claim"),
        ({"stage": "01", "label": "x", "run_time_s": -1}, "run_time_s"),
    ],
)
def test_record_stage_rejects_bad_input(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        record_stage(stages_dir=tmp_path, **kwargs)


# --- scripts/run_series.py ----------------------------------------------------------------------


def _fixture_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell(
        'BUDGET = None\nDATA_SOURCE = "auto"\nDOWNLOAD = True\nSEED = 0',
        metadata={"tags": ["parameters"]},
    )
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_run_series_journey_and_failure(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys

    monkeypatch.setenv("NBHELPERS_STAGES_DIR", str(tmp_path / "unused"))  # restored afterwards
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "runs"))

    spec = importlib.util.spec_from_file_location("run_series", ROOT / "scripts" / "run_series.py")
    run_series = importlib.util.module_from_spec(spec)
    sys.modules["run_series"] = run_series
    spec.loader.exec_module(run_series)

    src = tmp_path / "src"
    src.mkdir()
    _fixture_notebook(
        src / "01_ok.ipynb",
        "# time: record\n"
        "from nbhelpers.notebook import record_stage\n"
        "from nbhelpers.notebook import Claim\n"
        'record_stage("01", f"ok {BUDGET}", test_accuracy=0.25, run_time_s=3.0, test_split="test",'
        ' claims=[Claim("learns", False, "25% vs 19%"), Claim("fast", True, "3 s")])',
    )
    _fixture_notebook(src / "02_fail.ipynb", 'raise RuntimeError("boom")')
    out = tmp_path / "build"
    args = ["--notebooks", str(src), "--out", str(out), "--budget", "tiny", "--source", "synthetic"]
    assert run_series.main([*args, "--no-baseline"]) == 1
    err = capsys.readouterr().err
    assert "02_fail.ipynb" in err and "cell" in err and "boom" in err
    assert (out / "01_ok.ipynb").is_file() and not (out / "journey.md").exists()
    assert run_series.main([*args, "--only", "1"]) == 0
    printed = capsys.readouterr().out
    assert "torch" in printed and "class counts" in printed  # banner and data summary first
    journey = (out / "journey.md").read_text()
    assert (
        "| 01 | ok tiny | 25.0% (the real test split) | does not hold: learns (25% vs 19%)<br>holds: fast (3 s) | 3.0 s |"
        in journey
    )
    row = r"^\| (handover|reference fix) \| (\d+\.\d)% \| (\d+\.\d)% \| [\d.]+ s \|"
    rows = re.findall(row, journey, re.M)
    assert [r[0] for r in rows] == ["handover", "reference fix"], journey
    assert rows[1][1] == rows[1][2]  # the reference fix's own test split is the real one
    assert "NO zero_grad" in journey and len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert "Claims: 1 of 2 hold on this run." in journey
    timings = json.loads((out / "timings.json").read_text())
    assert timings["budget"] == "tiny" and set(timings["notebooks"]) == {"01"}
    assert set(timings["notebooks"]["01"]["cells"]) == {"record"}  # the cell marked "# time:"


def test_write_estimates_merges_and_refuses_another_budget(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_series", ROOT / "scripts" / "run_series.py")
    run_series = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_series)
    target = tmp_path / "timings.json"
    first = {"budget": "quick", "notebooks": {"03": {"total_s": 100.0, "cells": {}}}}
    run_series.write_estimates(first, target)
    run_series.write_estimates({"budget": "quick", "notebooks": {"01": {"total_s": 5.0}}}, target)
    assert set(json.loads(target.read_text())["notebooks"]) == {"01", "03"}  # --only keeps others
    with pytest.raises(SystemExit, match="'quick' budget, this run was 'tiny'"):
        run_series.write_estimates({"budget": "tiny", "notebooks": {}}, target)
