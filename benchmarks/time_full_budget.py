"""Wall time of the handover, the reference fix and one tuned run at the full budget, on the
offline stand-in data (run by hand, on a GPU; part of ``benchmarks/gpu_check.sh``).

The three runs, each with :func:`nbhelpers.experiment.run` (no cache, records in a temporary
folder), at the full budget's sizes (all of the stand-in's 73,257 - 6,000 training images,
batch 256, 10 epochs; see :mod:`nbhelpers.budget`):

- ``handover``: :func:`nbhelpers.experiment.handover_config` (per-sample PIL pipeline with
  rotation, evaluation of the train split and both its halves after every epoch);
- ``reference fix``: :func:`nbhelpers.experiment.reference_fix_config` (the tutorial's fix,
  device-resident loader, train/valid/test evaluated after every epoch);
- ``tuned``: the reference fix with notebook 02's debug levers that keep what is learned:
  evaluation of the validation split only, the faster memory layout (``memory_format="auto"``).

By default each trains ``--epochs 2`` of the 10 and the whole run is projected from what was
measured: what happens once (loading the data, set-up, saving), the first epoch (it includes
one-off costs), the median of the later epochs for each remaining epoch, and the evaluation
per epoch. ``--epochs 10`` measures the whole run.
Prints measured and projected seconds and writes ``benchmarks/results/full_budget.json``.

Refuses to run without a CUDA GPU (exit status 2) unless ``--allow-cpu`` (e.g. a smoke test:
``--allow-cpu --device cpu --budget tiny --epochs 2``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from _common import RESULTS, load_average, machine, write

from nbhelpers import env
from nbhelpers.budget import resolve_budget
from nbhelpers.experiment import handover_config, reference_fix_config, run


def _configs(budget: str, device: str, epochs: int) -> dict:
    common = dict(source="synthetic", device=device, epochs=epochs)
    return {
        "handover": handover_config(budget, **common),
        "reference fix": reference_fix_config(budget, **common),
        "tuned": reference_fix_config(
            budget, name="tuned", eval_splits=("valid",), memory_format="auto", **common
        ),
    }


def projected_s(record, epochs_full: int) -> float:
    """Seconds of the whole run of ``epochs_full`` epochs, from a record of fewer epochs."""
    rows = [row for row in record.history if not row.get("partial")]
    epoch_s = [row["epoch_s"] for row in rows]
    if not epoch_s:
        raise ValueError(f"run {record.name} has no complete epoch to project from")
    later = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    eval_s = record.timings.get("eval_s", 0.0)
    once = record.timings["wall_s"] - sum(epoch_s) - eval_s  # data, set-up, saving
    return once + epoch_s[0] + later * (epochs_full - 1) + eval_s / len(rows) * epochs_full


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu with --allow-cpu)")
    parser.add_argument("--budget", default="full", help="full (tiny or quick for a smoke test)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured (of the budget's)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "full_budget.json")
    args = parser.parse_args(argv)
    if not args.allow_cpu and not torch.cuda.is_available():
        print(
            "time_full_budget: no CUDA GPU is visible here (torch.cuda.is_available() is "
            "False); nothing was measured. Pass --allow-cpu for a smoke test on the CPU.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    budget = resolve_budget(args.budget)
    device = env.pick_device(args.device)
    epochs = min(max(1, args.epochs), budget.epochs)
    print(f"{env.banner(device, 'synthetic')} | load average {load_average()}")
    print(f"budget {budget.name}: {epochs} of {budget.epochs} epochs measured per run\n")
    rows = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for label, config in _configs(budget.name, str(device), epochs).items():
            record = run(config, cache=False, runs_dir=runs_dir, progress=False)
            rows[label] = {
                "measured_s": record.timings["wall_s"],
                "projected_full_s": projected_s(record, budget.epochs),
                "epochs_measured": epochs,
                "epoch_s": [row["epoch_s"] for row in record.history],
                "timings": record.timings,
                "memory_format": record.extra.get("memory_format"),
                "device": record.device,
            }
            print(
                f"{label:<16}{rows[label]['measured_s']:>9.1f} s for {epochs} epoch(s); "
                f"{budget.epochs} epochs projected: {rows[label]['projected_full_s']:>8.1f} s"
            )
    result = {**machine(device), "budget": budget.name, "epochs_full": budget.epochs, "runs": rows}
    write(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
