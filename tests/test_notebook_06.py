"""Notebook 06 as a learner meets it: every correct answer to its diagnosis exercise (two
variants of the growth factor and of the step size) runs every cell and passes both
self-checks, and the notebook runs with ``TRAIN_LIVE = False`` (the shipped Cockpit logs,
the same readings at every budget) as well as with the default ``True`` (tests/test_notebooks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from notebook_runs import execute_tiny, output_text

ROOT = Path(__file__).resolve().parents[1]
LEARNER = ROOT / "notebooks" / "06_cockpit.ipynb"
SOLUTION = ROOT / "solutions" / "06_cockpit.ipynb"
ANSWER_CELL = re.compile(r"^growth_factor = .*\nstep_size = ", re.M)

#: Correct answers, as the whole answer cell.
ANSWERS = {
    "gamma to the power of the steps": 'growth_factor = 1.001 ** 2860\nstep_size = "too small"\n',
    "read off the schedule": 'growth_factor = lrs[-1] / lrs[0]\nstep_size = "Too small "\n',
}


def _errors(executed) -> list:
    return [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.parametrize("answer", ANSWERS)
def test_correct_answers_pass_both_checks(answer, tmp_path, monkeypatch):
    nb = nbformat.read(LEARNER, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and ANSWER_CELL.search(c.source))
    cell.source = ANSWERS[answer]
    executed = execute_tiny(nb, tmp_path, monkeypatch, TRAIN_LIVE=False)
    assert not _errors(executed)
    verdicts = "".join(
        output_text(c) for c in executed.cells if "exercise" in c.metadata.get("tags", [])
    )
    assert verdicts.count("✅") == 2 and "❌" not in verdicts, verdicts
    assert "times higher than it starts" in verdicts and "the steps are too small" in verdicts


def test_solution_runs_from_the_shipped_logs_and_every_claim_holds(tmp_path, monkeypatch):
    import json

    executed = execute_tiny(
        nbformat.read(SOLUTION, as_version=4), tmp_path, monkeypatch, TRAIN_LIVE=False
    )
    assert not _errors(executed)
    text = "".join(output_text(c) for c in executed.cells)
    assert "Shipped log 'handover'" in text and "Shipped log 'fixed'" in text
    stage = json.loads((tmp_path / "stages" / "stage-06.json").read_text())
    assert len(stage["claims"]) == 3 and all(c["holds"] for c in stage["claims"]), stage["claims"]
    assert stage["test_split"] == "test" and stage["test_accuracy"] > 0.5
