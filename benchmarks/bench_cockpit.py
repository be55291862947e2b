"""What Cockpit costs: a training step with each preset, and against the tracking interval.

Trains the handover CNN (Tanh, Adam) on one fixed random batch, a plain copy and a Cockpit
copy (:class:`nbhelpers.cockpit_tools.CockpitHook`, the step as :func:`nbhelpers.train.train`
takes it) in turns: step i of one, step i of the other, the order alternating. Each Cockpit
step is divided by the plain step of its turn, so a neighbour's burst of load hits both
sides of a ratio alike; medians of those ratios are reported.

* the interval sweep, the tutorial's "reduce the tracking frequency of Cockpit": the
  colleague's set (preset ``handover``: Loss, GradNorm, Distance, UpdateSize every step)
  with Alpha every ``k`` steps. One run with Alpha every 5 steps gives the median ratio of
  an Alpha start step, an end step and an other step; at interval ``k >= 2`` a step costs
  on average ``(r_start + r_end + (k - 2) * r_other) / k`` plain steps; ``k = 1`` (start and
  end every step) is run on its own. The default preset ``cheap`` is this set at the
  interval where the cost stays <= 1.25x plain.
* one run per preset of ``--presets``: mean Cockpit step over mean plain step.

Cost is this process's CPU time per step (``time.process_time``); wall-clock ratios are
recorded too. Step 0 (one-off set-up) is left out. ``--rounds`` repetitions give the median
and the spread (min..max) of every ratio. Also timed: the guard with Cockpit's "full" at
batch 256, the dashboard and the instruments rendered from a shipped log.

Writes benchmarks/results/cockpit.json. Usage::

    python benchmarks/bench_cockpit.py                      # 2 threads, batch 128, 3 rounds
    python benchmarks/bench_cockpit.py --batch-size 32 --rounds 2 --steps 20 --presets cheap
                                                            # a quick smoke run
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
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbhelpers import cockpit_tools as ct  # noqa: E402
from nbhelpers.models import build_cnn  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cockpit.json"


def _setup(batch_size: int):
    torch.manual_seed(0)
    model = build_cnn("tanh", "none")
    return model, torch.optim.Adam(model.parameters(), lr=1e-5), nn.CrossEntropyLoss()


def _step(model, optimizer, loss_fn, batch, hook=None, step: int = 0) -> tuple[float, float]:
    """One training step as :func:`nbhelpers.train.train` takes it; (wall, CPU) seconds."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = loss_fn(logits, y)
    if hook is None or not hook.backward(step, model, x, y, logits, loss, loss_fn):
        loss.backward()
    optimizer.step()
    return time.perf_counter() - t_wall, time.process_time() - t_cpu


def _lockstep(preset, steps: int, batch_size: int) -> dict[str, list[float]]:
    """Steps 0..steps of a plain run and a Cockpit run taken in turns (the order alternates),
    so a change of the machine's load hits both alike. Key -> seconds per step."""
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(batch_size, 3, 32, 32, generator=g), torch.randint(0, 10, (batch_size,)))
    plain, tracked = _setup(batch_size), _setup(batch_size)
    hook = ct.CockpitHook(preset, available_bytes=64 << 30)
    hook.on_train_begin(*tracked)
    out = {"plain_wall": [], "plain_cpu": [], "wall": [], "cpu": []}
    for step in range(steps + 1):
        runs = [("plain_", plain, None), ("", tracked, hook)]
        for prefix, (model, optimizer, loss_fn), h in runs[:: 1 if step % 2 else -1]:
            wall, cpu = _step(model, optimizer, loss_fn, batch, h, step)
            out[prefix + "wall"].append(wall)
            out[prefix + "cpu"].append(cpu)
    hook.on_train_end(None)
    return out


def _ratios(run: dict, key: str, kind=lambda step: "all") -> dict[str, float]:
    """Median ratio Cockpit step / plain step of the same turn, per kind of step (step 0 out)."""
    ratios: dict[str, list[float]] = {}
    for step, (a, b) in enumerate(zip(run[key], run["plain_" + key], strict=True)):
        if step:
            ratios.setdefault(kind(step), []).append(a / b)
    return {k: statistics.median(v) for k, v in ratios.items()}


def _one_round(args) -> dict[str, dict[str, float]]:
    """Ratios to a plain step, key ("cpu", "wall") -> name -> value, for one round."""
    sweep = 5

    def kind(step):
        return "start" if step % sweep == 0 else "end" if step % sweep == 1 else "other"

    every = {"Alpha every 1": 1, "sweep": sweep}
    runs = {
        name: _lockstep(
            ct.preset_specs("handover", every={"Alpha": k}), args.steps, args.batch_size
        )
        for name, k in every.items()
    }
    runs |= {f"preset {n}": _lockstep(n, args.steps, args.batch_size) for n in args.presets}
    out = {}
    for key in ("cpu", "wall"):
        r = _ratios(runs["sweep"], key, kind)
        row = {"Alpha every 1": _ratios(runs["Alpha every 1"], key)["all"]}
        for k in (k for k in args.intervals if k > 1):
            row[f"Alpha every {k}"] = (r["start"] + r["end"] + (k - 2) * r["other"]) / k
        row |= {f"step kind: Alpha {name}": value for name, value in r.items()}
        row |= {n: statistics.fmean(runs[n][key][1:]) / statistics.fmean(runs[n]["plain_" + key][1:])
                for n in runs if n.startswith("preset")}  # fmt: skip
        row["plain step (s)"] = statistics.median(runs["sweep"]["plain_" + key][1:])
        out[key] = row
    return out


def _summary(rounds: list[dict], key: str) -> dict[str, dict]:
    """Name -> median and spread (min, max) over the rounds."""
    out = {}
    for name in rounds[0][key]:
        values = [r[key][name] for r in rounds]
        out[name] = {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }
    return out


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
            times.append(round(time.perf_counter() - t0, 3))
        out[name] = times
    return out


def _time_guard() -> dict:
    model = build_cnn("tanh", "none")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        report = ct.guard(model, 256, "full", "cpu", available_bytes=64 << 30)
        times.append(round(time.perf_counter() - t0, 4))
    return {"seconds": times, "refused": [row.quantity for row in report.refused]}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--presets", default="basic,cheap,handover", help="comma-separated")
    parser.add_argument("--intervals", default="2,5,10,20,25,50,100", help="Alpha intervals")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.presets = [p for p in args.presets.split(",") if p]
    args.intervals = [int(k) for k in args.intervals.split(",") if k]
    return args


def _machine(args) -> dict:
    return {
        "model": "handover CNN (build_cnn('tanh', 'none'), 550,570 weights), Adam",
        "batch_size": args.batch_size,
        "steps_per_run": args.steps,
        "rounds_run": args.rounds,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cockpit": ct.cockpit_version(),
        "cheap_alpha_every": ct.preset_specs("cheap")[-1].every,
        "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    result = _machine(args)
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch_size}")
    result["guard_full_batch256"] = _time_guard()
    rounds = []
    for r in range(args.rounds):
        rounds.append(_one_round(args))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in rounds[-1]["cpu"].items()))
    result["rounds"] = rounds
    result["cpu"], result["wall"] = _summary(rounds, "cpu"), _summary(rounds, "wall")
    result["plots"] = _time_plots()
    result["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nCPU time per step / plain (median [min..max] of {args.rounds} rounds), "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}:")  # fmt: skip
    for name, r in result["cpu"].items():
        print(f"  {name:<30} {r['median']:.3f} [{r['min']:.3f}..{r['max']:.3f}]")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
