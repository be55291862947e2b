"""No exercise's answer appears before the exercise asks for it.

A learner who reads "the missing ``zero_grad``" in a title, or sees "learning rate x 17.6"
printed two notebooks before the exercise that asks for that factor, has nothing left to find.
Titles and introductions may say what a notebook *does*, never what the learner is to find.
This test reads the learner notebooks (their text; ``tests/test_notebooks.py`` also checks the
printed outputs of the executed ones with :func:`giveaways_in`) and the README's notebook table.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The growth of the handover's learning rate is the answer of notebook 06's exercise.
_GROWTH = [
    r"\d+(\.\d+)?\s*-?\s*fold",
    r"learning rate\s*(x|×)\s*\d",
    r"raises the learning rate",
    r"(?<![\d.])1[67](\.\d+)?\s*(x|×)",
]

#: Per notebook: phrases that give its exercises' answers away, and the notebooks of the
#: series that must not show them before that exercise (the notebook itself up to it, and
#: every earlier notebook).
GIVEAWAYS: dict[str, list[str]] = {
    "03": [r"zero_grad", r"never reset", r"accumulat\w* (the )?gradients", r"gradients accumulate"],
    "05": [
        r"6 into (a )?9",
        r"turns? (a )?6",
        r"share (the same )?images",
        r"(are|is) made of training images",
    ],
    "06": _GROWTH + [r"learning rate (is )?(much )?too small"],
}


def _first_exercise(nb) -> int:
    """Index of the first cell that asks the learner for code (or the end of the notebook)."""
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags or "YOUR CODE HERE" in cell.source:
            return index
    return len(nb.cells)


def _learner(stage: str):
    (path,) = sorted((ROOT / "notebooks").glob(f"{stage}_*.ipynb"))
    return nbformat.read(path, as_version=4)


def giveaways_in(text: str, stage: str) -> list[str]:
    """The phrases of :data:`GIVEAWAYS` that ``text`` of notebook ``stage`` must not hold
    (those of its own exercises and of every later notebook's)."""
    found = []
    for later, patterns in GIVEAWAYS.items():
        if later >= stage:
            found += [p for p in patterns if re.search(p, text, re.I)]
    return found


def _text_before(stage: str, of: str) -> str:
    """What a learner reads in notebook ``stage`` before ``of``'s exercise: in that notebook,
    every cell up to the exercise; in an earlier one, its text (markdown; its code is the
    measuring harness of that notebook, e.g. 02 profiles the handover with its settings)."""
    nb = _learner(stage)
    if stage == of:
        cells = nb.cells[: _first_exercise(nb)]
    else:
        cells = [cell for cell in nb.cells if cell.cell_type == "markdown"]
    return "\n".join(cell.source for cell in cells if "SETUP" not in cell.source[:200])


@pytest.mark.parametrize("stage", ["00", "01", "02", "03", "04", "05", "06"])
def test_no_answer_before_its_exercise(stage):
    for of, patterns in GIVEAWAYS.items():
        if of < stage:
            continue
        text = _text_before(stage, of)
        found = [p for p in patterns if re.search(p, text, re.I)]
        assert not found, f"notebook {stage} gives away notebook {of}'s answer: {found}"


def test_the_checker_finds_a_giveaway():
    assert giveaways_in("the learning rate x 17.6 over the run", "04")
    assert giveaways_in("# 03 · Code review: the missing `zero_grad`", "03")
    assert not giveaways_in("we read the colleague's loop line by line", "03")


def test_the_readme_table_names_no_bug():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| # | notebook |") :].split("\n\n")[0]
    found = giveaways_in(table, "00") + [
        p for p in (r"tiny learning rate", r"growing schedule", r"missing") if re.search(p, table)
    ]
    assert not found, found
