"""What Cockpit costs: each preset's training step relative to a plain one, guard and plot times.

Trains the handover CNN (Tanh, Adam) on random images with :func:`nbhelpers.train.train`
and times every optimizer step (forward, backward incl. Cockpit, optimizer step):

* ``plain``: no hook (model not extended);
* one run per preset (``basic``, ``cheap``, ``standard``, ``thorough``, and Cockpit's own
  ``economy``) with :class:`nbhelpers.cockpit_tools.CockpitHook`.

Cost is measured as this process's CPU time per step (``time.process_time``), which
a busy shared machine disturbs far less than wall-clock time (recorded too); run with
``--threads 1`` so that no second thread spins while it waits. Steps 1..N are
averaged (step 0 holds one-off setup; with N a multiple of 20, every
"every 10" and "every 20" quantity is hit in its long-run proportion). The runs are
interleaved in rounds (plain, basic, cheap, ..., plain, basic, ...) so that a change in
the machine's load hits all of them alike. HessMaxEV (every
100 steps in "thorough") is timed separately in a tracked step of its own and its
share added, ``(t_hessmaxev - t_plain) / 100``. Also timed: the guard on the
handover CNN with Cockpit's "full" at batch 256 (first call and repeated), the full
dashboard and the single-instrument figure rendered to PNG from a 300-step log.

Writes benchmarks/results/cockpit.json. Usage::

    python benchmarks/bench_cockpit.py --threads 1     # batch 128, 2 rounds of 20 steps
    python benchmarks/bench_cockpit.py --batch-size 256 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbhelpers import cockpit_tools as ct  # noqa: E402
from nbhelpers.models import build_cnn  # noqa: E402
from nbhelpers.train import train  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cockpit.json"


class StepClock:
    """Hook recording, at the end of every step, wall-clock time and this process's CPU time."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_begin(self, model, optimizer, loss_fn):
        self.wall, self.cpu = [time.perf_counter()], [time.process_time()]

    def on_step_end(self, step, loss):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    @staticmethod
    def _diff(values: list[float]) -> list[float]:
        return [b - a for a, b in zip(values, values[1:], strict=False)]

    def step_seconds(self) -> tuple[list[float], list[float]]:
        """(wall-clock, CPU) seconds of every step."""
        return self._diff(self.wall), self._diff(self.cpu)


def _batches(n: int, batch_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    return [(x, y)] * n  # the same batch: timing does not depend on the data


def _run(preset, steps: int, batch_size: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of steps 1..steps of one training run (step 0 is left out)."""
    torch.manual_seed(0)
    model = build_cnn("tanh", "none")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    clock = StepClock()
    hooks = [clock]
    if preset is not None:
        hooks.insert(0, ct.CockpitHook(preset, available_bytes=64 << 30))
    train(model, optimizer, _batches(steps + 1, batch_size), epochs=1, hooks=hooks, progress=False)
    wall, cpu = clock.step_seconds()
    return wall[1:], cpu[1:]


def _summary(wall: list[float], cpu: list[float]) -> dict:
    return {
        "mean_step_cpu_s": statistics.fmean(cpu),
        "mean_step_s": statistics.fmean(wall),
        "median_step_s": statistics.median(wall),
        "max_step_s": max(wall),
        "steps": len(wall),
    }


def _time_plots() -> dict:
    try:
        log = ct.load_shipped_log("handover")
    except FileNotFoundError:
        return {"note": "no shipped log; run scripts/make_cockpit_logs.py"}
    out = {"log_steps": len(log)}
    for name, make in (
        ("dashboard_png_s", lambda: ct.plot_dashboard(log)),
        ("instruments_png_s", lambda: ct.plot_instruments(log)),
    ):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            ct.figure_to_png(make())
            times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def _time_guard() -> dict:
    model = build_cnn("tanh", "none")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        report = ct.guard(model, 256, "full", "cpu", available_bytes=64 << 30)
        times.append(time.perf_counter() - t0)
    return {"seconds": times, "refused": [row.quantity for row in report.refused]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (20, 40, ...)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all runs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--presets", default="basic,cheap,standard,thorough,economy", help="comma-separated"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "model": "handover CNN (build_cnn('tanh', 'none'), 550,570 weights), Adam",
        "batch_size": args.batch_size,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cockpit": ct.cockpit_version(),
        "load_average_before": load_before,
    }
    print("guard ... ", end="", flush=True)
    result["guard_full_batch256"] = _time_guard()
    print(result["guard_full_batch256"]["seconds"])

    names = ["plain", *args.presets.split(",")]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    round_means: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            print(f"round {r + 1}: {name} ... ", end="", flush=True)
            w, c = _run(None if name == "plain" else name, args.steps, args.batch_size)
            wall[name] += w
            cpu[name] += c
            round_means[name].append(round(statistics.fmean(c), 4))
            print(f"{statistics.fmean(c):.3f} s CPU/step, {statistics.fmean(w):.3f} s wall/step")
    runs = {
        name: {**_summary(wall[name], cpu[name]), "round_means_cpu_s": round_means[name]}
        for name in names
    }
    print("HessMaxEV step ... ", end="", flush=True)
    spec = [ct.QuantitySpec("Loss"), ct.QuantitySpec("HessMaxEV", 1, {"method": "lanczos"})]
    hess = _summary(*_run(spec, 2, args.batch_size))
    print(f"{hess['mean_step_cpu_s']:.2f} s CPU/step")
    for key in ("mean_step_cpu_s", "mean_step_s"):
        plain = runs["plain"][key]
        if "thorough" in runs:  # HessMaxEV runs every 100 steps in "thorough"
            runs["thorough"][key + "_incl_hessmaxev"] = (
                runs["thorough"][key] + (hess[key] - plain) / 100
            )
    result["runs"] = runs
    result["hessmaxev_step"] = hess

    def ratios(key: str) -> dict[str, float]:
        plain = runs["plain"][key]
        return {
            n: round(r.get(key + "_incl_hessmaxev", r[key]) / plain, 2) for n, r in runs.items()
        }

    result["ratio_to_plain"] = ratios("mean_step_cpu_s")
    result["ratio_to_plain_wall"] = ratios("mean_step_s")
    result["hessmaxev_step_ratio"] = round(
        hess["mean_step_cpu_s"] / runs["plain"]["mean_step_cpu_s"], 1
    )
    print("plots ... ", end="", flush=True)
    result["plots"] = _time_plots()
    print(result["plots"])
    result["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["ratio_to_plain"], indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
