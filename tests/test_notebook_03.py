"""Notebook 03 as a learner meets it: nothing before its exercise gives the answer away, and
every correct answer to its exercise runs every cell without an error and passes the
self-check (two correct variants and the model answer); a wrong answer fails the self-check
without a crash."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from notebook_runs import execute_tiny, output_text

ROOT = Path(__file__).resolve().parents[1]
LEARNER = ROOT / "notebooks" / "03_code_review.ipynb"
#: Words that name the bug or its effect: none may appear before the exercise asks for it.
GIVE_AWAYS = (
    "zero_grad",
    "zero grad",
    "never reset",
    "not reset",
    "reset the grad",
    "accumulat",
    "pile up",
)
STEP_CELL = re.compile(r"^def train_step\(model, optimizer, x, y\):", re.M)

#: Correct answers (the model answer and two others) and one wrong one, as whole cells.
ANSWERS = {
    "before the forward pass": (
        "    optimizer.zero_grad()\n    logits = model(x)\n    loss = loss_fn(logits, y)\n"
        "    loss.backward()\n    optimizer.step()\n"
    ),
    "after optimizer.step()": (
        "    logits = model(x)\n    loss = loss_fn(logits, y)\n    loss.backward()\n"
        "    optimizer.step()\n    optimizer.zero_grad()\n"
    ),
    "model.zero_grad in place": (
        "    model.zero_grad(set_to_none=False)\n    logits = model(x)\n    loss = loss_fn(logits, y)\n"
        "    loss.backward()\n    optimizer.step()\n"
    ),
    "wrong: between backward and step": (
        "    logits = model(x)\n    loss = loss_fn(logits, y)\n    loss.backward()\n"
        "    optimizer.zero_grad()\n    optimizer.step()\n"
    ),
}


def _exercise_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", []))


def test_nothing_before_the_exercise_gives_the_answer_away():
    nb = nbformat.read(LEARNER, as_version=4)
    first = _exercise_index(nb)
    assert "What is missing?" in nb.cells[first].source
    before = "\n".join(c.source for c in nb.cells[:first]).lower()
    found = [phrase for phrase in GIVE_AWAYS if phrase in before]
    assert not found, f"given away before the exercise: {found}"
    assert "zero_grad" in "\n".join(c.source for c in nb.cells[first:])  # the notebook is about it


def _with_answer(body: str):
    nb = nbformat.read(LEARNER, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and STEP_CELL.search(c.source))
    doc = '    """One optimisation step on the batch (x, y); returns the loss (a float)."""\n'
    cell.source = (
        "def train_step(model, optimizer, x, y):\n" + doc + body + "    return loss.item()\n"
    )
    return nb


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_correct_answer_runs_every_cell_and_passes_the_check(answer, tmp_path, monkeypatch):
    executed = execute_tiny(_with_answer(ANSWERS[answer]), tmp_path, monkeypatch)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    verdicts = [output_text(c) for c in executed.cells if "exercise" in c.metadata.get("tags", [])]
    verdict = next(v for v in verdicts if "fresh gradient" in v or "❌" in v)
    if answer.startswith("wrong"):
        assert "❌" in verdict and "between backward() and step()" in verdict
    else:
        assert "✅ Every step starts from a fresh gradient." in verdict
        fixed = next(output_text(c) for c in executed.cells if "as fixed_watch" in c.source)
        assert "no fault found" in fixed  # the watch agrees
