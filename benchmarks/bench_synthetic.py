"""Benchmark of the synthetic stand-in: full-size generation and cached load.

Generates both full-size splits (train 73,257 + test 26,032 images) into a temporary data
directory (so the on-disk cache is written too), then loads them again from that cache.
Prints the times and writes them to benchmarks/results/synthetic.json.

Usage: python benchmarks/bench_synthetic.py [--seed 0] [--threads N]
(--threads sets torch.set_num_threads for this benchmark process only; default: torch's choice.)
Targets (from the project's issue): generation <= 60 s on 2 CPU cores, cached load <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from nbhelpers import synthetic

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic.json"


def _timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process) of fn(*args, **kwargs)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run(seed: int = 0) -> dict:
    """Measure glyph-bank rendering, full-size generation (+ cache write) and cached load."""
    synthetic.glyph_bank.cache_clear()
    _, bank_s, _ = _timed(synthetic.glyph_bank)
    result = {
        "generator_version": synthetic.GENERATOR_VERSION,
        "seed": seed,
        "glyph_bank_s": round(bank_s, 3),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "splits": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "test"):
            (images, _), gen_s, gen_cpu = _timed(
                synthetic.load_synthetic, split, seed=seed, data_dir=tmp
            )
            del images
            (images, _), load_s, _ = _timed(
                synthetic.load_synthetic, split, seed=seed, data_dir=tmp
            )
            path = synthetic.cache_path(split, images.shape[0], seed, tmp)
            result["splits"][split] = {
                "n": images.shape[0],
                "generate_and_write_s": round(gen_s, 2),
                "generate_and_write_cpu_s": round(gen_cpu, 2),
                "images_per_s": round(images.shape[0] / gen_s),
                "cached_load_s": round(load_s, 3),
                "cache_bytes": path.stat().st_size,
            }
            del images
    splits = result["splits"].values()
    result["total_generate_and_write_s"] = round(sum(s["generate_and_write_s"] for s in splits), 2)
    result["total_cached_load_s"] = round(sum(s["cached_load_s"] for s in splits), 3)
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.seed)
    for split, r in result["splits"].items():
        print(
            f"{split:5s}: {r['n']:6d} images  generate+write {r['generate_and_write_s']:6.2f} s "
            f"({r['images_per_s']} images/s, CPU {r['generate_and_write_cpu_s']:.2f} s)  "
            f"cached load {r['cached_load_s']:.3f} s  ({r['cache_bytes'] / 1e6:.0f} MB)"
        )
    print(
        f"both splits: generate+write {result['total_generate_and_write_s']:.2f} s (target <= 60 s), "
        f"cached load {result['total_cached_load_s']:.3f} s (target <= 2 s); "
        f"glyph bank {result['glyph_bank_s']:.2f} s; torch threads {result['torch_threads']}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
