"""The story holds at the quick budget: ``make run``'s journey, claim by claim (slow).

``make test-slow`` runs the series at the quick budget on the offline stand-in (as
``make run`` does, through ``scripts/run_series.py``) and asserts every claim the notebooks
record, and that the time estimates the notebooks print are of the right size. A second test
shows that the check can fail: notebook 03 with its ``zero_grad`` fix taken out again records
a claim that does not hold. At the tiny budget (``make test``) the notebooks only have to run
(``tests/test_notebooks.py``); their numbers are noise there.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from nbhelpers.notebook import read_stages

ROOT = Path(__file__).resolve().parents[1]
#: Stages whose notebook states at least one claim of the tutorial.
STAGES_WITH_CLAIMS = ("01", "03", "04", "05", "06", "07")


def _run_series():
    spec = importlib.util.spec_from_file_location("run_series", ROOT / "scripts" / "run_series.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_series"] = module
    spec.loader.exec_module(module)
    return module


def failing_claims(stages: list[dict]) -> list[str]:
    """``"03: <claim line>"`` for every recorded claim that does not hold."""
    return [
        f"{rec['stage']}: {claim['text']} ({claim['evidence']})"
        for rec in stages
        for claim in rec.get("claims") or []
        if not claim["holds"]
    ]


def _series(tmp_path: Path, monkeypatch, *extra: str) -> Path:
    monkeypatch.setenv("NBHELPERS_LOGBOOK_DIR", str(tmp_path / "logbook"))
    out = tmp_path / "build"
    args = ["--budget", "quick", "--source", "synthetic", "--out", str(out), *extra]
    assert _run_series().main(args) == 0
    return out


@pytest.mark.slow
def test_every_claim_of_the_journey_holds_at_the_quick_budget(tmp_path, monkeypatch):
    """The runs go through the checkout's run cache (``runs/``), as ``make run``'s do."""
    out = _series(tmp_path, monkeypatch)
    stages = read_stages(out / "stages")
    with_claims = {rec["stage"] for rec in stages if rec.get("claims")}
    assert set(STAGES_WITH_CLAIMS) <= with_claims, f"stages without claims: {with_claims}"
    assert not failing_claims(stages), failing_claims(stages)
    assert "Claims:" in (out / "journey.md").read_text()
    measured = json.loads((out / "timings.json").read_text())["notebooks"]
    estimates = json.loads((ROOT / "nbsource" / "timings.json").read_text())["notebooks"]
    for stage, entry in measured.items():
        if entry.get("runs_trained"):  # replayed runs take seconds: only a full run compares
            estimate = estimates[stage]["total_s"]
            assert entry["total_s"] <= 3 * estimate + 60, (stage, entry, estimate)


#: A statement that resets the gradients, e.g. ``    optimizer.zero_grad(set_to_none=True)``.
_RESET = re.compile(r"^(\s*)[\w.]+\.zero_grad\([^)]*\)\s*(#.*)?$")


def _without_zero_grad(solution: Path, target: Path) -> None:
    """Notebook 03's solution with every ``zero_grad`` call of the fixed loop taken out again."""
    nb = nbformat.read(solution, as_version=4)
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = [
            _RESET.sub(r"\1pass  # the reset, taken out again", x) for x in cell.source.split("\n")
        ]
        changed += sum(x.endswith("taken out again") for x in lines)
        cell.source = "\n".join(lines).replace("zero_grad=True", "zero_grad=False")
        if "solution" in cell.metadata.get("tags", []) and "assert" in cell.source:
            body = "\n".join("    " + line for line in cell.source.split("\n"))
            cell.source = f"try:  # the solution's checks fail now; the stage is recorded anyway\n{body}\nexcept AssertionError as err:\n    print('check failed:', err)"
    assert changed, "no zero_grad call found in notebook 03's solution"
    nbformat.write(nb, target)


@pytest.mark.slow
def test_the_check_fails_when_the_zero_grad_fix_is_reverted(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _without_zero_grad(ROOT / "solutions" / "03_code_review.ipynb", folder / "03_code_review.ipynb")
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "runs"))  # nothing replays
    out = _series(
        tmp_path, monkeypatch, "--only", "03", "--no-baseline", "--notebooks", str(folder)
    )
    failing = failing_claims(read_stages(out / "stages"))
    assert failing and all(line.startswith("03: ") for line in failing), failing
