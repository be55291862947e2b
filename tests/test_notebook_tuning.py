"""Notebooks 00 and 07 as a learner meets them: every correct answer to their exercises runs
every cell without an error and passes the self-checks (two correct variants each, tiny
budget); a wrong one gets "not yet". The executed 07 shows the logbook and exports it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from notebook_runs import execute_tiny, output_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_00 = ROOT / "notebooks" / "00_what_is_wrong.ipynb"
NOTEBOOK_07 = ROOT / "notebooks" / "07_tuning.ipynb"

#: 00's exercise block (as shipped) and correct answers to put in its place.
SHIPPED_00 = (
    "B_short = B  # ... how long should each run of B be, if we want the best model after SHORT epochs?\n"
    'SHORT_TARGET = TuningTarget("valid_accuracy", epoch=LONG)  # ... and at which epoch do we measure?\n'
)
ANSWERS_00 = {
    "replace epochs": 'B_short = B.replace(epochs=SHORT)\nSHORT_TARGET = TuningTarget("valid_accuracy", epoch=SHORT)\n',
    "dataclasses.replace, default metric": (
        "import dataclasses\n\nB_short = dataclasses.replace(B, name='B-short', epochs=SHORT)\n"
        "SHORT_TARGET = TuningTarget(epoch=SHORT)\n"
    ),
}
#: 07's exercise block (as shipped) and correct answers.
SHIPPED_07 = (
    'NEXT_CHANGE = dict()  # e.g. dict(schedule="cosine") or dict(activation="gelu")\n'
    "NEXT_LRS = [best_config.lr]  # which learning rates will you try?\n"
    "FINAL_SEEDS = [SEED]  # on how many seeds will you decide?\n"
)
ANSWERS_07 = {
    "cosine, the budget's sweep and seeds": 'NEXT_CHANGE = dict(schedule="cosine")\nNEXT_LRS = LRS\nFINAL_SEEDS = SEEDS\n',
    "gelu, two learning rates, two seeds": (
        'NEXT_CHANGE = {"activation": "gelu"}\nNEXT_LRS = [best_config.lr, 3 * best_config.lr]\n'
        "FINAL_SEEDS = [SEED, SEED + 1]\n"
    ),
}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One runs folder for all variants: the runs they share come from the cache."""
    return tmp_path_factory.mktemp("runs")


def _with(path: Path, shipped: str, answer: str | None):
    nb = nbformat.read(path, as_version=4)
    shipped, answer = shipped.rstrip("\n"), answer and answer.rstrip("\n")
    cells = [c for c in nb.cells if c.cell_type == "code" and shipped in c.source]
    assert len(cells) == 1, f"the exercise block of {path.name} changed"
    if answer is not None:
        cells[0].source = cells[0].source.replace(shipped, answer)
    return nb


def _run(nb, tmp_path: Path, runs: Path, monkeypatch):
    """Execute at tiny with the runs folder shared by this module's tests; no cell may fail."""
    executed = execute_tiny(nb, tmp_path, monkeypatch, runs_dir=runs)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return executed


def _verdicts(executed) -> str:
    return "".join(
        output_text(c) for c in executed.cells if "exercise" in c.metadata.get("tags", [])
    )


@pytest.mark.parametrize("answer", ANSWERS_00)
def test_00_every_correct_answer_passes(answer, tmp_path, shared_runs, monkeypatch):
    executed = _run(
        _with(NOTEBOOK_00, SHIPPED_00, ANSWERS_00[answer]), tmp_path, shared_runs, monkeypatch
    )
    verdicts = _verdicts(executed)
    assert verdicts.count("✅") == 2 and "❌" not in verdicts, verdicts


@pytest.mark.parametrize("answer", ANSWERS_07)
def test_07_every_correct_answer_passes_and_the_logbook_is_exported(
    answer, tmp_path, shared_runs, monkeypatch
):
    executed = _run(
        _with(NOTEBOOK_07, SHIPPED_07, ANSWERS_07[answer]), tmp_path, shared_runs, monkeypatch
    )
    verdicts = _verdicts(executed)
    assert verdicts.count("✅") == 2 and "❌" not in verdicts, verdicts
    shown = next(output_text(c) for c in executed.cells if "Logbook().to_frame()" in c.source)
    assert "07 tuning" in shown and "logbook exported" in shown
    html, markdown = tmp_path / "logbook" / "logbook.html", tmp_path / "logbook" / "logbook.md"
    assert "07 tuning" in html.read_text(encoding="utf-8")
    assert "07 tuning" in markdown.read_text(encoding="utf-8")


def test_07_as_shipped_says_not_yet(tmp_path, shared_runs, monkeypatch):
    verdicts = _verdicts(
        _run(_with(NOTEBOOK_07, SHIPPED_07, None), tmp_path, shared_runs, monkeypatch)
    )
    assert verdicts.count("❌") == 2, verdicts
