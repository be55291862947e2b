"""The README says what the series really does and how long it really takes.

Its times come from ``make run`` (``nbsource/timings.json``, measured); its description of
notebook 06 must match the notebook's default.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TIMINGS = json.loads((ROOT / "nbsource" / "timings.json").read_text(encoding="utf-8"))


def test_the_per_notebook_times_are_the_measured_ones():
    row = re.search(r"^\| wall time \|(.*)\|$", README, re.M)
    assert row, "README: no per-notebook time table"
    quoted = [int(cell.strip().removesuffix(" s")) for cell in row.group(1).split("|")]
    measured = [round(entry["total_s"]) for entry in TIMINGS["notebooks"].values()]
    assert quoted == measured


def test_the_make_run_time_is_at_least_its_notebooks():
    minutes = float(re.search(r"the first `make run` took ([\d.]+) minutes", README).group(1))
    notebooks = sum(entry["total_s"] for entry in TIMINGS["notebooks"].values()) / 60
    assert notebooks <= minutes <= 1.5 * notebooks  # plus the two baseline runs before them


def test_notebook_06_is_described_as_it_runs():
    source = (ROOT / "nbsource" / "06_cockpit.py").read_text(encoding="utf-8")
    assert re.search(r"^TRAIN_LIVE = True\b", source, re.M), "06 trains live by default"
    assert "With `TRAIN_LIVE = False` it reads" in README
    assert "shows shipped Cockpit logs" not in README  # the old description
