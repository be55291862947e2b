"""What the watch costs on a plain training step, and how long the checks take (run by hand).

1. Watch overhead: a learner's plain step (``zero_grad``, forward, cross-entropy, ``backward``,
   ``optimizer.step()``) on batches already in memory, timed without and with
   :func:`nbhelpers.watch.watch` around the loop. Each round times ``--steps`` plain steps and
   ``--steps`` watched steps (an eighth of them for the large setup), in alternating order (so a machine that gets busier or quieter
   affects both alike), after ``--warmup`` untimed steps each. The ratio watched / plain is
   printed per round, then its median and spread (min..max); the watch's one-off cost of
   entering and leaving its block is printed apart. Target: median ratio <= 1.10.
2. Checks: :func:`nbhelpers.checks.check_config` on the handover and on the reference fix at
   the ``tiny`` budget and width 8, ``--check-rounds`` times each (median, spread).

Two setups by default: the notebook-00-sized run (width 8, batch 32, ReLU + BatchNorm, Adam:
the smallest step, so the largest relative overhead) and the handover-sized one (width 32,
batch 256, Tanh, no normalisation). Images are random uint8 (times do not depend on the
pixels). The thread count is stated in the output. Results go to
``benchmarks/results/watch.json``.

Usage::

    python benchmarks/bench_watch.py                     # defaults: 5 rounds of 40 steps
    python benchmarks/bench_watch.py --rounds 3 --steps 10 --check-rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nbhelpers import checks
from nbhelpers.data import DataBundle, ImageSet
from nbhelpers.experiment import handover_config, reference_fix_config
from nbhelpers.models import build_cnn
from nbhelpers.watch import watch

RESULTS = Path(__file__).resolve().parent / "results" / "watch.json"
#: (name, width, batch size, activation, normalisation, fraction of --steps it runs)
SETUPS = [
    ("notebook-00 size", 8, 32, "relu", "batch", 1.0),
    ("handover size", 32, 256, "tanh", "none", 0.125),
]


def _batches(batch_size: int, n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(batch_size, 3, 32, 32, generator=gen),
            torch.randint(0, 10, (batch_size,), generator=gen),
        )
        for _ in range(n)
    ]


def _steps(model, optimizer, batches, steps: int) -> float:
    """Seconds for ``steps`` plain training steps."""
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - t0


def _one_round(setup, steps: int, warmup: int, watched_first: bool) -> dict[str, float]:
    _, width, batch_size, activation, norm, _ = setup
    torch.manual_seed(0)
    model = build_cnn(activation, norm, width=width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = _batches(batch_size)
    times: dict[str, float] = {}
    for kind in ("watched", "plain") if watched_first else ("plain", "watched"):
        if kind == "plain":
            _steps(model, optimizer, batches, warmup)
            times["plain"] = _steps(model, optimizer, batches, steps)
            continue
        t0 = time.perf_counter()
        with watch(model, optimizer, quiet=True, remember=False) as w:
            entered = time.perf_counter()
            _steps(model, optimizer, batches, warmup)
            times["watched"] = _steps(model, optimizer, batches, steps)
            leaving = time.perf_counter()
        times["enter_exit_s"] = (entered - t0) + (time.perf_counter() - leaving)
        assert w.ok, str(w.report())  # a plain, correct step: nothing to find
    return times


def bench_overhead(setup, rounds: int, steps: int, warmup: int) -> dict:
    steps = max(3, round(steps * setup[5]))
    results = [_one_round(setup, steps, warmup, watched_first=r % 2 == 1) for r in range(rounds)]
    ratios = [r["watched"] / r["plain"] for r in results]
    plain_ms = [1000 * r["plain"] / steps for r in results]
    return {
        "setup": setup[0], "width": setup[1], "batch_size": setup[2], "steps": steps,
        "plain_ms_per_step": statistics.median(plain_ms),
        "ratios": ratios, "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios), "max_ratio": max(ratios),
        "enter_exit_s": statistics.median(r["enter_exit_s"] for r in results),
    }  # fmt: skip


def _bundle(n_train: int, n_eval: int) -> DataBundle:
    gen = torch.Generator().manual_seed(0)

    def split(n: int, name: str) -> ImageSet:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return ImageSet(images, torch.arange(n) % 10, name, "synthetic")

    return DataBundle(
        split(n_train, "train"), split(n_eval, "valid"), split(n_eval, "test"), "synthetic"
    )


def bench_checks(width: int, rounds: int) -> list[dict]:
    bundle = _bundle(512, 256)
    out = []
    for make in (handover_config, reference_fix_config):
        config = make("tiny", source="synthetic", width=width, device="cpu")
        seconds, report = [], None
        for _ in range(rounds):
            t0 = time.perf_counter()
            report = checks.check_config(config, data=bundle, show=False, progress=False)
            seconds.append(time.perf_counter() - t0)
        out.append({
            "config": config.name, "width": width, "median_s": statistics.median(seconds),
            "min_s": min(seconds), "max_s": max(seconds), "checks": len(report),
            "failed": [r.name for r in report.failed],
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, CPU, {threads} intra-op thread(s)")
    overhead = [bench_overhead(s, args.rounds, args.steps, args.warmup) for s in SETUPS]
    print(f"\nwatch overhead ({args.rounds} rounds, ratio = watched / plain)")
    for r in overhead:
        print(
            f"  {r['setup']:<17} {r['steps']:3d} steps  plain {r['plain_ms_per_step']:7.2f} ms/step   ratio median "
            f"{r['median_ratio']:.3f} (min {r['min_ratio']:.3f}, max {r['max_ratio']:.3f})   "
            f"enter+exit {1000 * r['enter_exit_s']:.1f} ms"
        )
    timing = bench_checks(8, args.check_rounds)
    print(f"\nrun_all_checks (check_config, tiny budget, width 8, {args.check_rounds} round(s))")
    for r in timing:
        print(
            f"  {r['config']:<17} {r['median_s']:6.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}); "
            f"{r['checks']} checks, failed: {', '.join(r['failed']) or 'none'}"
        )
    results = {
        "threads": threads,
        "torch": torch.__version__,
        "overhead": overhead,
        "checks": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {args.out}")
    return results


if __name__ == "__main__":
    main()
