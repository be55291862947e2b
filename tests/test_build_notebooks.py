"""Tests of scripts/build_notebooks.py: tags, markers, setup cell, no outputs, --check."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", ROOT / "scripts" / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_notebooks"] = module
    spec.loader.exec_module(module)
    return module


bn = _load_script()

FIXTURE = """\
# %% [markdown]
# # 99 · Fixture
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/99_fixture.ipynb)

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None

# %%
def step(optimizer):
    # BEGIN SOLUTION
    optimizer.zero_grad()
    # END SOLUTION
    return 1

# %%
x = 0
# BEGIN SOLUTION
x = 42
# END SOLUTION
# BEGIN EXERCISE
x = None  # set x
# END EXERCISE
print(x)

# %% tags=["exercise"]
print("learner only")

# %% tags=["solution"]
assert x == 42

# %% [markdown] tags=["solution"]
# A sample answer.
"""


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    path = folder / "99_fixture.py"
    path.write_text(FIXTURE, encoding="utf-8")
    return path


def _built(source: Path, out: Path) -> tuple[dict, dict]:
    assert bn.main(["--source-dir", str(source.parent), "--out-dir", str(out)]) == 0
    learner = nbformat.read(out / "notebooks" / "99_fixture.ipynb", as_version=4)
    solution = nbformat.read(out / "solutions" / "99_fixture.ipynb", as_version=4)
    return learner, solution


def _text(nb: dict) -> str:
    return "\n".join(cell["source"] for cell in nb["cells"])


def test_tags_select_cells(source, tmp_path):
    learner, solution = _built(source, tmp_path / "out")
    assert 'print("learner only")' in _text(learner)
    assert 'print("learner only")' not in _text(solution)
    assert "assert x == 42" in _text(solution) and "assert x == 42" not in _text(learner)
    assert "A sample answer." in _text(solution) and "A sample answer." not in _text(learner)


def test_markers_replaced(source, tmp_path):
    learner, solution = _built(source, tmp_path / "out")
    cells = {c["id"]: c["source"] for c in learner["cells"]}
    step_cell = next(s for s in cells.values() if s.startswith("def step"))
    assert step_cell == "def step(optimizer):\n    # YOUR CODE HERE\n    return 1"
    x_cell = next(s for s in cells.values() if s.startswith("x = 0"))
    assert x_cell == "x = 0\nx = None  # set x\nprint(x)"
    sol_x = next(c["source"] for c in solution["cells"] if c["source"].startswith("x = 0"))
    assert sol_x == "x = 0\nx = 42\nprint(x)"
    for nb in (learner, solution):
        assert "BEGIN" not in _text(nb) and "END SOLUTION" not in _text(nb)


def test_setup_badge_metadata_and_no_outputs(source, tmp_path):
    learner, solution = _built(source, tmp_path / "out")
    for nb in (learner, solution):
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert bn.SETUP_CELL in [c["source"] for c in nb["cells"]]
        assert "# SETUP" not in [c["source"] for c in nb["cells"]]
        params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
        ids = [c["id"] for c in nb["cells"]]
        assert len(set(ids)) == len(ids) and ids[0] == "99_fixture-000"
    assert "/blob/main/notebooks/99_fixture.ipynb" in learner["cells"][0]["source"]
    assert "/blob/main/solutions/99_fixture.ipynb" in solution["cells"][0]["source"]


def test_build_is_deterministic(source, tmp_path):
    _built(source, tmp_path / "a")
    _built(source, tmp_path / "b")
    for kind in bn.KINDS:
        a = (tmp_path / "a" / kind / "99_fixture.ipynb").read_bytes()
        b = (tmp_path / "b" / kind / "99_fixture.ipynb").read_bytes()
        assert a == b


def test_check_detects_stale_and_orphan(source, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--source-dir", str(source.parent), "--out-dir", str(out)]
    _built(source, out)
    assert bn.main([*args, "--check"]) == 0
    source.write_text(FIXTURE.replace("x = 42", "x = 43"), encoding="utf-8")
    capsys.readouterr()
    assert bn.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "notebooks/99_fixture.ipynb (out of date)" not in err  # learner copy unchanged
    assert "solutions/99_fixture.ipynb (out of date)" in err
    bn.main(args)
    (out / "notebooks" / "98_orphan.ipynb").write_text("{}")
    assert bn.main([*args, "--check"]) == 1
    assert "98_orphan.ipynb (no source" in capsys.readouterr().err


def test_unbalanced_marker_is_an_error(source, tmp_path):
    source.write_text(FIXTURE.replace("    # END SOLUTION\n    return 1", "    return 1"))
    with pytest.raises(bn.SourceError, match="no '# END SOLUTION'"):
        bn.build(source)


def test_committed_notebooks_are_up_to_date():
    """The CI staleness check: notebooks/ and solutions/ match nbsource/."""
    sources = bn.sources_in(ROOT / "nbsource")
    assert sources, "no notebook sources in nbsource/"
    problems = bn.stale_files(sources, ROOT)
    assert not problems, "run `make notebooks`; stale: " + ", ".join(problems)


def _run_setup(monkeypatch, *, colab: bool, installed: bool, spec: str | None):
    """Execute the setup cell with a fake Colab and a recording subprocess.run."""
    calls = []
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if installed else None) if name == "nbhelpers" else real_find_spec(name, *a)
        ),
    )
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    if spec is None:
        monkeypatch.delenv("NBHELPERS_INSTALL_SPEC", raising=False)
    else:
        monkeypatch.setenv("NBHELPERS_INSTALL_SPEC", spec)
    exec(compile(bn.SETUP_CELL, "setup-cell", "exec"), {})
    exec(compile(bn.SETUP_CELL, "setup-cell", "exec"), {})  # safe to re-run
    return calls


def test_setup_cell_installs_only_in_colab(monkeypatch, capsys):
    assert _run_setup(monkeypatch, colab=False, installed=False, spec=None) == []
    assert "Not in Colab" in capsys.readouterr().out
    assert _run_setup(monkeypatch, colab=True, installed=True, spec=None) == []
    calls = _run_setup(monkeypatch, colab=True, installed=False, spec="/tmp/checkout")
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "/tmp/checkout"]] * 2
    calls = _run_setup(monkeypatch, colab=True, installed=False, spec=None)
    assert calls[0][-1].startswith("nbhelpers @ git+https://github.com/")
    assert not any("--upgrade" in c or "-U" in c for c in calls[0])


# --- time estimates -------------------------------------------------------------------------


def test_time_placeholders_take_the_measured_seconds():
    timings = {
        "budget": "quick",
        "machine": "2 CPU cores",
        "notebooks": {"03": {"total_s": 171.0, "cells": {"train": 42.3}}},
    }
    text = bn.fill_times("Intro\n{{time}}\n\n{{time:train}}\n{{time:other}}", "03", timings)
    assert "This notebook: about 3 min at the quick budget on 2 CPU cores (measured)" in text
    assert "The next cell: about 50 s at the quick budget" in text
    assert "The next cell: not measured yet" in text and "{{" not in text
    assert bn.format_duration(4) == "about 10 s" and bn.format_duration(61) == "about 1 min"


def _time_marks(source: Path) -> tuple[set[str], set[str], bool]:
    """Labels asked for in markdown, labels marked on code cells, and whether {{time}} is used."""
    text = source.read_text(encoding="utf-8")
    asked = set(bn._TIME.findall(text)) - {""}
    marked = set(re.findall(r"^# %%[^\n]*\n# time: ([\w.-]+)", text, re.M))
    return asked, marked, "{{time}}" in text


def test_every_notebook_states_its_measured_time():
    """Each notebook says how long it takes, and each long cell too, from measured times
    (``scripts/run_series.py --write-timings`` after ``make run``): nothing "not measured yet"."""
    timings = bn.load_timings()
    assert timings["budget"] == "quick", "estimates are for the learner's default CPU budget"
    for source in bn.sources_in(ROOT / "nbsource"):
        stage = source.stem[:2]
        asked, marked, total = _time_marks(source)
        assert total, f"{source.name}: no {{{{time}}}} line in its introduction"
        assert asked == marked, f"{source.name}: placeholders {asked} vs '# time:' cells {marked}"
        entry = timings["notebooks"].get(stage)
        assert entry, f"{source.name}: no measured time in nbsource/timings.json"
        assert asked <= set(entry["cells"]), (
            f"{source.name}: unmeasured cells {asked - set(entry['cells'])}"
        )
