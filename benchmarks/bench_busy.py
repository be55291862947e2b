"""A busy core against a quiet machine: a small run with the package's thread choice and with
the old behaviour (run by hand, on a CPU with at least 2 cores).

Trains the notebook-00-sized run (``build_cnn("relu", "batch", 8)``, Adam, batch 32,
``--n-train`` images per epoch, ``--epochs`` epochs, no evaluation) with
:func:`nbhelpers.train.train` on the CPU. Every measurement runs in a fresh worker process whose
OpenMP runtime starts as a learner's does (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``OMP_WAIT_POLICY`` removed from its environment: torch's default of one thread per core), in
``--rounds`` rounds; in each round (variant order reversed every other round):

- conditions: **quiet** (nothing started by the benchmark; what else runs on the machine is
  measured and printed) and **busy** (one CPU-burning neighbour process pinned to one core,
  :func:`nbhelpers.threads.busy_neighbour`: started and running before the measurement,
  stopped after it, and ending itself after ``--neighbour-max-s`` whatever happens);
- variants: **defaults** (``threads="auto"``, the package's choice), **old** (``threads=None``:
  torch's setting, one thread per core, as before) and **old, passive waiting** (the same with
  ``OMP_WAIT_POLICY=PASSIVE``: threads that sleep at once instead of spinning while they wait;
  ``--no-passive`` leaves it out).

Then the quiet speed of a width-32 run (``--wide-batch``, ``--wide-n-train``) with the defaults
and with the old behaviour: the defaults must not slow a larger network down on a quiet machine.

Prints per variant and condition the median images/s with its spread (fastest-slowest round),
the threads used and the other programs' load during the measurement; then busy/quiet (time)
per variant, the median of the per-round ratios with their range; writes every round to
``benchmarks/results/busy.json``. Target: busy/quiet <= 2.5x with the defaults.

Usage::

    python benchmarks/bench_busy.py                                      # 3 rounds
    python benchmarks/bench_busy.py --rounds 1 --n-train 256 --wide-n-train 128   # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, load_average, machine, with_spread, write

TARGET_BUSY_OVER_QUIET = 2.5
VARIANTS = {  # name -> (threads setting of train(), extra environment of the worker)
    "defaults": ("auto", {}),
    "old": (None, {}),
    "old, passive waiting": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
_CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def worker(spec: dict) -> dict:
    """One measurement (in a fresh process): train as ``spec`` says and return what it took."""
    import torch

    from nbhelpers.data import TensorLoader
    from nbhelpers.models import build_cnn
    from nbhelpers.threads import LoadMeter
    from nbhelpers.train import train

    gen = torch.Generator().manual_seed(0)
    n = spec["n_train"]
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    loader = TensorLoader(images, torch.randint(0, 10, (n,), generator=gen), spec["batch"])
    torch.manual_seed(0)
    model = build_cnn("relu", "batch", spec["width"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    options = dict(progress=False, eval_every=0, threads=spec["threads"])
    train(model, optimizer, loader, epochs=1, max_steps=spec["warmup"], **options)
    meter, t0 = LoadMeter(), time.perf_counter()
    history = train(model, optimizer, loader, epochs=spec["epochs"], **options)
    wall = time.perf_counter() - t0
    return {
        "images_per_s": history.timings["images"] / wall,
        "wall_s": wall,
        "threads": history.threads or [torch.get_num_threads()],  # None: torch's setting
        "learner_threads": torch.get_num_threads(),
        "others_busy_cores": meter.others(),
    }


def _measure(variant: str, spec: dict, timeout_s: float) -> dict:
    threads, extra_env = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(extra_env)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    job = json.dumps({**spec, "threads": threads})
    done = subprocess.run(
        [sys.executable, __file__, "--worker", job], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"worker for {variant!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rounds(args, variants: list[str]) -> dict[str, dict[str, list[dict]]]:
    """condition -> variant -> one result per round (the wide run under "wide")."""
    from nbhelpers.threads import busy_neighbour

    small = dict(width=8, batch=32, n_train=args.n_train, epochs=args.epochs, warmup=3)
    wide = dict(width=32, batch=args.wide_batch, n_train=args.wide_n_train, epochs=1, warmup=2)
    out = {c: {v: [] for v in variants} for c in ("quiet", "busy")}
    out["wide"] = {v: [] for v in ("defaults", "old")}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for condition in ("quiet", "busy"):
            neighbour = busy_neighbour(1, args.neighbour_max_s) if condition == "busy" else None
            with neighbour or contextlib.nullcontext():
                for variant in order:
                    result = _measure(variant, small, args.neighbour_max_s)
                    out[condition][variant].append(result)
                    print(f"round {r + 1} {condition:<5} {variant:<22}{_line(result)}", flush=True)
        for variant in ("defaults", "old")[:: 1 if r % 2 == 0 else -1]:
            result = _measure(variant, wide, args.neighbour_max_s)
            out["wide"][variant].append(result)
            print(f"round {r + 1} wide  {variant:<22}{_line(result)}", flush=True)
    return out


def _line(result: dict) -> str:
    others = result["others_busy_cores"]
    load = "unknown" if others is None else f"{others:.2f}"
    return f"{result['images_per_s']:>9,.0f} images/s, threads {result['threads']}, others {load}"


def _ratios(out: dict, variants: list[str]) -> dict[str, list[float]]:
    """busy/quiet time per variant and round; wide run: defaults' images/s / old's."""
    ratios = {
        variant: [q["images_per_s"] / b["images_per_s"]
                  for q, b in zip(out["quiet"][variant], out["busy"][variant], strict=True)]
        for variant in variants
    }  # fmt: skip
    ratios["wide: defaults / old (quiet images/s)"] = [
        d["images_per_s"] / o["images_per_s"]
        for d, o in zip(out["wide"]["defaults"], out["wide"]["old"], strict=True)
    ]
    return ratios


def _report(out: dict, ratios: dict[str, list[float]]) -> None:
    print(f"\n{'variant':<24}{'condition':<8}{'images/s (spread)':>26}  threads  others' load")
    for condition in ("quiet", "busy", "wide"):
        for variant, results in out[condition].items():
            ips = with_spread([r["images_per_s"] for r in results], 0)
            threads = sorted({t for r in results for t in r["threads"]})
            loads = [r["others_busy_cores"] for r in results if r["others_busy_cores"] is not None]
            load = with_spread(loads) if loads else "unknown"
            print(f"{variant:<24}{condition:<8}{ips:>26}  {threads!s:<8} {load}")
    print("\nbusy/quiet (time per image): median of the rounds (range)")
    for name, values in ratios.items():
        if name.startswith("wide"):
            print(f"  {name:<40}{with_spread(values, unit='x'):>22}   (no drop: >= about 1x)")
        else:
            target = f"target <= {TARGET_BUSY_OVER_QUIET:g}x" if name == "defaults" else "before"
            print(f"  {name:<40}{with_spread(values, unit='x'):>22}   ({target})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    p.add_argument("--n-train", type=int, default=3000, help="images per epoch (notebook 00)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per measurement (00 runs 4)")
    p.add_argument("--wide-batch", type=int, default=128, help="batch of the width-32 run")
    p.add_argument("--wide-n-train", type=int, default=1024, help="images of the width-32 run")
    p.add_argument(
        "--neighbour-max-s",
        type=float,
        default=900.0,
        help="the neighbour ends itself after this long (also a worker's time limit)",
    )
    p.add_argument("--no-passive", action="store_true", help="leave out the passive variant")
    p.add_argument("--out", type=Path, default=RESULTS / "busy.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench_busy needs at least 2 CPU cores: one for the neighbour.")
    variants = [v for v in VARIANTS if not (args.no_passive and "passive" in v)]
    print(f"busy-core benchmark | {os.cpu_count()} CPU cores | load average {load_average()}")
    print(f"notebook-00-sized run: width 8, batch 32, {args.n_train} images x {args.epochs} "
          f"epoch(s); wide: width 32, batch {args.wide_batch}, {args.wide_n_train} images\n")  # fmt: skip
    out = _rounds(args, variants)
    ratios = _ratios(out, variants)
    _report(out, ratios)
    result = {
        **machine("cpu"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rounds": out,
        "busy_over_quiet": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_rounds": ratios,
        "target_busy_over_quiet_defaults": TARGET_BUSY_OVER_QUIET,
        "load_average_after": load_average(),
    }
    write(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
