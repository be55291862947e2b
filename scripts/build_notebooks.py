"""Build the learner and solution notebooks from their single source in ``nbsource/``.

Each ``nbsource/NN_slug.py`` (jupytext percent format) gives two notebooks:

- ``notebooks/NN_slug.ipynb`` (learner): cells tagged ``solution`` are dropped; inside a code
  cell, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are replaced by the lines
  between ``# BEGIN EXERCISE`` and ``# END EXERCISE`` that follow right after (if present), else
  by ``# YOUR CODE HERE``.
- ``solutions/NN_slug.ipynb`` (worked answers): cells tagged ``exercise`` are dropped; the marker
  lines and the exercise blocks are removed, the solution lines stay.

Time estimates: in markdown, ``{{time}}`` becomes the notebook's measured time and
``{{time:LABEL}}`` the measured time of the code cell whose first line is ``# time: LABEL``,
both read from ``nbsource/timings.json`` (written by ``scripts/run_series.py
--write-timings`` at the quick budget on 2 CPU cores; see :func:`fill_times`).

In both, a cell containing only ``# SETUP`` becomes the standard setup cell (:data:`SETUP_CELL`),
the "Open in Colab" link of the solution copy points to ``solutions/``, and the notebook carries
the python3 kernelspec, no outputs and stable cell ids (``<name>-<index>``), so the same source
always gives byte-identical files. See ``nbsource/README.md``.

Usage::

    python scripts/build_notebooks.py            # (re)write notebooks/ and solutions/
    python scripts/build_notebooks.py --check    # exit 1 and list the files that are out of date
    python scripts/build_notebooks.py nbsource/03_code_review.py   # just this source
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]

#: Which notebook each kind of output goes into, relative to the output root.
KINDS = ("notebooks", "solutions")

SETUP_PLACEHOLDER = "# SETUP"

#: The setup cell of every notebook (replaces a source cell containing only ``# SETUP``).
SETUP_CELL = """\
# Setup: safe to re-run. In Google Colab this installs the companion package `nbhelpers`
# (its requirements are lower bounds only, so Colab's preinstalled torch is never downgraded).
# Anywhere else it does nothing: install the repository with `pip install -e .`
# (`make lab` or `make test` does it for you).
import importlib.util
import os
import subprocess
import sys

if "google.colab" not in sys.modules:
    print("Not in Colab: nothing to install here (nbhelpers comes from this repository).")
elif importlib.util.find_spec("nbhelpers") is not None:
    print("nbhelpers is already installed.")
else:
    NBHELPERS_SPEC = os.environ.get(
        "NBHELPERS_INSTALL_SPEC",
        "nbhelpers @ git+https://github.com/nbhelpers-series/debugging-a-training-run",
    )
    print(f"Installing {NBHELPERS_SPEC} (about a minute) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", NBHELPERS_SPEC], check=True)
    importlib.invalidate_caches()
    print("nbhelpers installed.")"""

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}

_COLAB_LINK = re.compile(r"(colab\.research\.google\.com/github/\S+?/blob/[^/\s]+/)notebooks/")
_MARKER = re.compile(r"^\s*# (BEGIN|END) (SOLUTION|EXERCISE)\s*$")


#: Measured times per notebook (``scripts/run_series.py --write-timings``).
TIMINGS_FILE = ROOT / "nbsource" / "timings.json"
_TIME = re.compile(r"\{\{time(?::([\w.-]+))?\}\}")


def load_timings(path: Path = TIMINGS_FILE) -> dict:
    """The measured times: ``{"budget", "machine", "notebooks": {"03": {"total_s", "cells"}}}``
    (seconds); an empty table when the file does not exist yet."""
    import json

    if not path.is_file():
        return {"budget": "quick", "machine": "", "notebooks": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def format_duration(seconds: float) -> str:
    """``"about 40 s"`` under a minute (rounded up to 10 s), else ``"about 3 min"``."""
    if seconds < 60:
        return f"about {max(10, -(-int(seconds) // 10) * 10)} s"
    return f"about {round(seconds / 60)} min"


def fill_times(text: str, stage: str, timings: dict) -> str:
    """Replace the ``{{time}}`` / ``{{time:LABEL}}`` placeholders of a markdown cell.

    Args:
        text: the cell's markdown.
        stage: the notebook's number, e.g. ``"03"``.
        timings: :func:`load_timings`.

    Returns the text with each placeholder replaced by a line like "⏱ This notebook: about
    3 min at the quick budget on 2 CPU cores (measured)." or, not measured yet, "⏱ (not
    measured yet: `make run` then `scripts/run_series.py --write-timings`)".
    """
    entry = timings.get("notebooks", {}).get(stage, {})
    where = f"at the {timings.get('budget', 'quick')} budget on {timings.get('machine') or '2 CPU cores'}"

    def one(match: re.Match) -> str:
        label = match.group(1)
        seconds = entry.get("total_s") if label is None else entry.get("cells", {}).get(label)
        what = "This notebook" if label is None else "The next cell"
        if seconds is None:
            return f"⏱ *{what}: not measured yet.*"
        return f"⏱ *{what}: {format_duration(seconds)} {where} (measured).*"

    return _TIME.sub(one, text)


class SourceError(ValueError):
    """A source file breaks the conventions (unbalanced markers, both tags on one cell, ...)."""


@dataclass
class _Split:
    """One code cell split into its learner and solution versions."""

    learner: str
    solution: str


def split_markers(source: str, where: str = "cell") -> _Split:
    """Split a code cell's text at its SOLUTION / EXERCISE markers.

    Args:
        source: the cell's text.
        where: a name for error messages (e.g. ``"03_code_review.py cell 7"``).

    Returns:
        The learner text (solution blocks replaced by the exercise block that follows, or by
        ``# YOUR CODE HERE`` at the marker's indentation) and the solution text (marker lines and
        exercise blocks removed).

    Raises:
        SourceError: markers unbalanced, nested, or an EXERCISE block not right after a
            SOLUTION block.
    """
    learner: list[str] = []
    solution: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        match = _MARKER.match(lines[i])
        if match is None:
            learner.append(lines[i])
            solution.append(lines[i])
            i += 1
            continue
        if match.groups() != ("BEGIN", "SOLUTION"):
            raise SourceError(f"{where}: unexpected '{lines[i].strip()}' at line {i + 1}.")
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        sol_block, i = _block(lines, i + 1, "SOLUTION", where)
        solution.extend(sol_block)
        exercise = None
        if i < len(lines) and _MARKER.match(lines[i]) and "BEGIN EXERCISE" in lines[i]:
            exercise, i = _block(lines, i + 1, "EXERCISE", where)
        learner.extend(exercise if exercise is not None else [f"{indent}# YOUR CODE HERE"])
    return _Split("\n".join(learner), "\n".join(solution))


def _block(lines: list[str], start: int, kind: str, where: str) -> tuple[list[str], int]:
    """Lines from ``start`` up to ``# END <kind>``; returns them and the index after the END."""
    for j in range(start, len(lines)):
        match = _MARKER.match(lines[j])
        if match is None:
            continue
        if match.groups() == ("END", kind):
            return lines[start:j], j + 1
        raise SourceError(f"{where}: '{lines[j].strip()}' at line {j + 1} inside a {kind} block.")
    raise SourceError(f"{where}: '# BEGIN {kind}' at line {start} has no '# END {kind}'.")


def _cell_id(name: str, index: int) -> str:
    """A stable cell id from the notebook name and the cell's position (nbformat allows 64 chars)."""
    suffix = f"-{index:03d}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[: 64 - len(suffix)] + suffix


def build(source_path: Path) -> dict[str, str]:
    """Build the two notebooks of one source.

    Args:
        source_path: an ``nbsource/NN_slug.py`` file in jupytext percent format.

    Returns:
        ``{"notebooks": json_text, "solutions": json_text}``, each the full .ipynb file content.

    Raises:
        SourceError: the source breaks a convention (see :func:`split_markers`; a cell tagged
            both ``solution`` and ``exercise``; no ``parameters`` cell).
    """
    name = source_path.stem
    timings = load_timings()
    source_nb = jupytext.read(source_path, fmt="py:percent")
    cells: dict[str, list] = {kind: [] for kind in KINDS}
    has_parameters = False
    for index, cell in enumerate(source_nb.cells):
        where = f"{source_path.name} cell {index + 1}"
        tags = list(cell.metadata.get("tags", []))
        has_parameters = has_parameters or "parameters" in tags
        if "solution" in tags and "exercise" in tags:
            raise SourceError(f"{where}: tagged both 'solution' and 'exercise'.")
        text = cell.source
        if cell.cell_type == "code" and text.strip() == SETUP_PLACEHOLDER:
            text = SETUP_CELL
        if cell.cell_type == "markdown":
            text = fill_times(text, name[:2], timings)
        versions = {"notebooks": text, "solutions": text}
        if cell.cell_type == "code":
            split = split_markers(text, where)
            versions = {"notebooks": split.learner, "solutions": split.solution}
        for kind in KINDS:
            if (kind == "notebooks" and "solution" in tags) or (
                kind == "solutions" and "exercise" in tags
            ):
                continue
            body = versions[kind]
            if kind == "solutions":
                body = _COLAB_LINK.sub(r"\1solutions/", body)
            cells[kind].append((cell.cell_type, body, tags))
    if not has_parameters:
        raise SourceError(f"{source_path.name}: no cell tagged 'parameters' (papermill needs one).")
    return {kind: _to_json(name, cells[kind]) for kind in KINDS}


def _to_json(name: str, cells: list[tuple[str, str, list[str]]]) -> str:
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 5
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    for index, (cell_type, body, tags) in enumerate(cells):
        meta = {"tags": tags} if tags else {}
        cid = _cell_id(name, index)
        if cell_type == "code":
            nb.cells.append(nbformat.v4.new_code_cell(body, id=cid, metadata=meta))
        elif cell_type == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(body, id=cid, metadata=meta))
        else:
            nb.cells.append(nbformat.v4.new_raw_cell(body, id=cid, metadata=meta))
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def sources_in(source_dir: Path) -> list[Path]:
    """The notebook sources of a directory: ``NN_*.py`` files, sorted by name."""
    return sorted(p for p in source_dir.glob("[0-9][0-9]_*.py") if p.is_file())


def expected_files(sources: list[Path], out_root: Path) -> dict[Path, str]:
    """Map every output path to the JSON it should hold."""
    wanted: dict[Path, str] = {}
    for source in sources:
        for kind, text in build(source).items():
            wanted[out_root / kind / f"{source.stem}.ipynb"] = text
    return wanted


def stale_files(sources: list[Path], out_root: Path, *, orphans: bool = True) -> list[str]:
    """Describe every output that differs from what the sources give (empty list: up to date).

    With ``orphans=True``, a notebook in ``notebooks/`` or ``solutions/`` without a source counts
    too.
    """
    wanted = expected_files(sources, out_root)
    problems = []
    for path, text in wanted.items():
        if not path.exists():
            problems.append(f"{_rel(path, out_root)} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{_rel(path, out_root)} (out of date)")
    if orphans:
        for kind in KINDS:
            for path in sorted((out_root / kind).glob("*.ipynb")):
                if path not in wanted:
                    problems.append(f"{_rel(path, out_root)} (no source in nbsource/)")
    return problems


def write_all(sources: list[Path], out_root: Path) -> list[Path]:
    """Write the notebooks of ``sources`` under ``out_root``; return the files that changed."""
    changed = []
    for path, text in expected_files(sources, out_root).items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    return changed


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, help="sources to build (default: all)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    parser.add_argument("--source-dir", type=Path, default=ROOT / "nbsource")
    parser.add_argument("--out-dir", type=Path, default=ROOT, help="holds notebooks/, solutions/")
    args = parser.parse_args(argv)
    sources = [p.resolve() for p in args.sources] or sources_in(args.source_dir)
    if not sources:
        print(f"No sources (NN_*.py) in {args.source_dir}.", file=sys.stderr)
        return 1
    try:
        if args.check:
            problems = stale_files(sources, args.out_dir, orphans=not args.sources)
            if problems:
                print("Generated notebooks are out of date; run `make notebooks`:", file=sys.stderr)
                for line in problems:
                    print(f"  {line}", file=sys.stderr)
                return 1
            print(f"{2 * len(sources)} notebooks up to date.")
            return 0
        changed = write_all(sources, args.out_dir)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {_rel(path, args.out_dir)}")
    print(f"{len(changed)} of {2 * len(sources)} notebooks changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
