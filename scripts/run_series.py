"""Run the whole series end to end (what ``make run`` calls).

First prints the version banner and a summary of the data (source, split sizes, class counts),
then trains the handover configuration and the tutorial's reference fix and prints a two-row
table (configuration, test accuracy, wall time). Then executes the solution notebooks
``solutions/NN_*.ipynb`` in order with papermill, saves the executed copies (with their
outputs and plots) under ``build/``, prints the journey table (stage -> test accuracy -> wall
time) from the stage records the notebooks wrote, and writes both tables to
``build/journey.md``.

Offline by default: ``--source auto --no-download`` uses real SVHN when its files are already
on disk and the stand-in otherwise. Training runs are cached in ``runs/`` (or
``$NBHELPERS_RUNS_DIR``), so a second ``make run`` replays them.

Usage::

    python scripts/run_series.py                        # quick budget, offline
    python scripts/run_series.py --budget tiny --only 01 03
    python scripts/run_series.py --budget full --download   # on a GPU, real SVHN
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="quick", choices=["tiny", "quick", "colab", "full"])
    parser.add_argument("--source", default="auto", choices=["auto", "svhn", "synthetic"])
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="allow downloading SVHN (about 240 MB); default: offline",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the handover and the reference fix first and print their table",
    )
    parser.add_argument("--only", nargs="*", default=None, help="stage numbers, e.g. 01 03")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "solutions")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--kernel", default="python3")
    parser.add_argument(
        "--write-timings",
        action="store_true",
        help="also write the measured times to nbsource/timings.json (the notebooks' time "
        "estimates; then run `make notebooks`)",
    )
    return parser.parse_args(argv)


TIME_MARK = re.compile(r"^# time: ([\w.-]+)")


def cell_timings(executed: Path) -> dict[str, float]:
    """Seconds of each code cell of an executed notebook whose first line is ``# time: LABEL``,
    read from papermill's per-cell ``duration`` metadata: ``{LABEL: seconds}``."""
    import nbformat

    found = {}
    for cell in nbformat.read(executed, as_version=4).cells:
        match = TIME_MARK.match(cell.source) if cell.cell_type == "code" else None
        duration = cell.metadata.get("papermill", {}).get("duration")
        if match and duration is not None:
            found[match.group(1)] = round(float(duration), 1)
    return found


def run_records() -> set[str]:
    """The names of the complete run records in the runs folder (``$NBHELPERS_RUNS_DIR``)."""
    from nbhelpers.records import default_runs_dir

    return {p.name for p in default_runs_dir().glob("*-*.json") if ".interrupted-" not in p.name}


def timings_table(budget: str, times: dict[str, tuple[float, Path]]) -> dict:
    """The measured times of this run: per notebook (``{stage: (seconds, executed copy)}``) its
    wall time and its marked cells, in seconds."""
    return {
        "budget": budget,
        "machine": f"{os.cpu_count()} CPU cores",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d"),
        "notebooks": {
            stage: {"total_s": round(seconds, 1), "cells": cell_timings(path)}
            for stage, (seconds, path) in times.items()
        },
    }


def select_notebooks(folder: Path, only: list[str] | None) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks of ``folder`` in order, optionally only the given stages.

    Raises:
        SystemExit: none found, or a requested stage has no notebook.
    """
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {s.zfill(2) for s in only}
        missing = wanted - {p.name[:2] for p in found}
        if missing:
            raise SystemExit(f"No notebook for stage(s) {', '.join(sorted(missing))} in {folder}.")
        found = [p for p in found if p.name[:2] in wanted]
    if not found:
        raise SystemExit(f"No notebooks NN_*.ipynb in {folder}.")
    return found


def _failure_message(path: Path, output: Path, err: Exception) -> str:
    """Name the notebook and the failing cell (papermill's error carries its index)."""
    cell = getattr(err, "cell_index", None)
    count = getattr(err, "exec_count", None)
    where = f"cell {cell}" if cell is not None else "a cell"
    if count is not None:
        where += f" (execution count {count})"
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    return (
        f"\nFAILED: {path.name}, {where}: {ename}: {evalue}\n"
        f"The partly executed notebook is {output}; open it to see the traceback."
    )


def execute(path: Path, output: Path, parameters: dict, kernel: str, cwd: Path) -> float:
    """Execute one notebook with papermill; return its wall time in seconds."""
    import papermill as pm

    t0 = time.perf_counter()
    pm.execute_notebook(
        str(path),
        str(output),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(cwd),
        progress_bar=True,
    )
    return time.perf_counter() - t0


def _fmt_acc(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _fmt_s(value) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def baseline_table(budget: str, source: str, download: bool, seed: int) -> str:
    """Print the banner and data summary, train the handover and the reference fix.

    Both runs go through the run cache (``$NBHELPERS_RUNS_DIR``), so a second call replays
    them. Returns a Markdown table: configuration, test accuracy, wall time (seconds of the
    original training, also when replayed), device.
    """
    from nbhelpers.experiment import describe_config, handover_config, reference_fix_config, run
    from nbhelpers.notebook import start

    ctx = start(budget, source, download, seed)  # prints the banner, budget and data summary
    common = dict(source=ctx.bundle.source, seed=seed, data_seed=seed)
    configs = {
        "handover": handover_config(ctx.budget, **common),
        "reference fix": reference_fix_config(ctx.budget, **common),
    }
    lines = [
        f"# Handover vs reference fix ({ctx.budget.name} budget, {ctx.bundle.source} data)",
        "",
        "| configuration | test accuracy (real test split) | on its own test split | wall time | settings |",
        "|---|---|---|---|---|",
    ]
    for label, config in configs.items():
        record = run(config, data=ctx.bundle, progress=False)
        own = record.final("test_accuracy")
        real = record.final("real_test_accuracy") if config.eval_from_train else own
        lines.append(
            f"| {label} | {_fmt_acc(real)} | {_fmt_acc(own)} | "
            f"{_fmt_s(record.timings.get('wall_s'))} | {describe_config(config)} |"
        )
    counts = ctx.bundle.test.labels.bincount(minlength=10)
    chance = counts.max().item() / counts.sum().item()  # always guessing the most frequent digit
    lines += [
        "",
        "Both trained at the same budget, on the same data, with the same seed, and both measured",
        "on the real test split. The handover's own test split is made of training images (one of",
        f"its faults). Chance level: {chance:.1%} (always guessing the most frequent digit).",
    ]
    return "\n".join(lines) + "\n"


def _fmt_claims(rec: dict) -> str:
    """The stage's claims, one per line of the cell: "holds: ..." or "does not hold: ..."."""
    from nbhelpers.notebook import Claim

    lines = [Claim(**claim).line() for claim in rec.get("claims") or []]
    return "<br>".join(line.replace("|", "/") for line in lines) or "-"


def _fmt_test(rec: dict) -> str:
    """The test accuracy with the split it was measured on (the colleague's split is training
    images, one of the handover's faults)."""
    from nbhelpers.notebook import TEST_SPLITS

    split, acc = TEST_SPLITS.get(rec.get("test_split")), _fmt_acc(rec.get("test_accuracy"))
    return f"{acc} ({split})" if split and acc != "-" else acc


def journey_table(stages: list[dict], notebook_times: dict[str, float], header: str) -> str:
    """The journey as a Markdown table: stage, label, test accuracy (and its split), the
    tutorial's claims with whether this run supports them, run and notebook time, data."""
    lines = [
        header,
        "",
        "| stage | what | test accuracy | the tutorial's claim | training run | notebook | data |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in stages:
        stage = str(rec.get("stage"))
        lines.append(
            f"| {stage} | {rec.get('label', '')} | {_fmt_test(rec)} | {_fmt_claims(rec)} | "
            f"{_fmt_s(rec.get('run_time_s'))} | {_fmt_s(notebook_times.get(stage))} | "
            f"{rec.get('data_source') or '-'} |"
        )
    claims = [c for rec in stages for c in rec.get("claims") or []]
    failing = sum(not c.get("holds") for c in claims)
    lines += ["", f"Claims: {len(claims) - failing} of {len(claims)} hold on this run."]
    return "\n".join(lines) + "\n"


def write_estimates(measured: dict, target: Path) -> None:
    """Merge this run's times into the notebooks' time estimates (``--write-timings``).

    Raises:
        SystemExit: ``target`` holds estimates of another budget (they would mix).
    """
    table = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
    if table and table.get("budget") != measured["budget"]:
        raise SystemExit(
            f"{target} holds times of the {table.get('budget')!r} budget, this run was "
            f"{measured['budget']!r}: delete the file to start over."
        )
    notebooks = {**table.get("notebooks", {}), **measured["notebooks"]}
    merged = {**measured, "notebooks": dict(sorted(notebooks.items()))}
    target.write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    print(f"Time estimates written to {target}; run `make notebooks`.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nbhelpers.notebook import read_stages

    notebooks = select_notebooks(args.notebooks, args.only)
    out = args.out.resolve()
    stages_dir = out / "stages"
    shutil.rmtree(stages_dir, ignore_errors=True)
    stages_dir.mkdir(parents=True, exist_ok=True)
    os.environ["NBHELPERS_STAGES_DIR"] = str(stages_dir)
    os.environ.setdefault("NBHELPERS_RUNS_DIR", str(ROOT / "runs"))
    os.environ.setdefault("NBHELPERS_LOGBOOK_DIR", str(ROOT / "runs" / "logbook"))
    parameters = {
        "BUDGET": args.budget,
        "DATA_SOURCE": args.source,
        "DOWNLOAD": args.download,
        "SEED": args.seed,
    }
    baseline = ""
    if args.baseline:
        baseline = baseline_table(args.budget, args.source, args.download, args.seed)
        print("\n" + baseline, flush=True)
    print(f"Running {len(notebooks)} notebooks with {parameters}; executed copies go to {out}/")
    times: dict[str, float] = {}
    executed: dict[str, tuple[float, Path]] = {}
    trained: dict[str, int] = {}
    for i, path in enumerate(notebooks, 1):
        output = out / path.name
        print(f"\n[{i}/{len(notebooks)}] {path.name}", flush=True)
        before = run_records()
        try:
            seconds = execute(path, output, parameters, args.kernel, ROOT)
        except Exception as err:  # papermill raises PapermillExecutionError and others
            print(_failure_message(path, output, err), file=sys.stderr)
            return 1
        times[path.name[:2]] = seconds
        executed[path.name[:2]] = (seconds, output)
        trained[path.name[:2]] = len(run_records() - before)
        print(f"    done in {_fmt_s(seconds)}", flush=True)
    header = (
        f"# The journey ({args.budget} budget, data source {args.source}, "
        f"{'download allowed' if args.download else 'offline'})"
    )
    table = journey_table(read_stages(stages_dir), times, header)
    (out / "journey.md").write_text(baseline + ("\n" if baseline else "") + table, encoding="utf-8")
    print("\n" + baseline + ("\n" if baseline else "") + table)
    print(f"Written to {out / 'journey.md'}.")
    measured = timings_table(args.budget, executed)
    for stage, count in trained.items():  # runs trained (not replayed from the cache)
        measured["notebooks"][stage]["runs_trained"] = count
    (out / "timings.json").write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    if args.write_timings:
        write_estimates(measured, ROOT / "nbsource" / "timings.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
