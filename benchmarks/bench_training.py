"""Training throughput of the handover CNN, three ways, on one device (run by hand).

Measures images/s at batch 256 for

1. ``raw``: forward + backward + optimizer step on one fixed batch already on the device
   (the limit: no data loading, no bookkeeping);
2. ``loop_tensor``: :func:`nbhelpers.train.train` fed by the device-resident
   :class:`nbhelpers.data.TensorLoader`;
3. ``loop_pil``: the same loop fed by the handover's pipeline, a ``DataLoader`` over
   per-sample PIL images with ``RandomRotation(180)`` and ``ToTensor()``;

plus ``pil_data_only``: the PIL pipeline alone (batches produced, no model), which
shows whether data loading caps the training speed. Warm-up steps are excluded. Every figure
is the median of ``--rounds`` rounds (all measurements once per round), printed with its range.
Prints a table and the ratios and writes ``benchmarks/results/training.json``.

Usage::

    python benchmarks/bench_training.py                 # defaults per device
    python benchmarks/bench_training.py --steps 40 --warmup 5 --workers 2 --device cuda
    python benchmarks/bench_training.py --rounds 1 --steps 2 --batch-size 64   # a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import load_average, machine, summary, with_spread, write
from torchvision import transforms

from nbhelpers import env
from nbhelpers.data import ImageSet, TensorLoader, make_loader
from nbhelpers.models import build_cnn
from nbhelpers.profiling import time_raw_steps
from nbhelpers.threads import ThreadPolicy
from nbhelpers.train import synchronize, train

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"


def _images(n: int, seed: int = 0) -> ImageSet:
    """Random uint8 images: throughput does not depend on the pixels."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageSet(images, labels, "train", "synthetic")


def _model_and_optimizer(device: torch.device):
    env.seed_everything(0)
    model = build_cnn("tanh", "none").to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-5)


def bench_raw(device, batch_size: int, warmup: int, steps: int) -> float:
    """images/s of forward + backward + step on one resident batch (the loop's limit)."""
    model, opt = _model_and_optimizer(device)
    timing = time_raw_steps(model, opt, batch_size, steps=steps, warmup_steps=warmup, device=device)
    return timing["images_per_s"]


def bench_loop(device, loader, warmup: int, steps: int, batch_size: int) -> dict:
    """images/s of :func:`train` over ``loader`` (its own timing and the wall clock)."""
    model, opt = _model_and_optimizer(device)
    policy = ThreadPolicy("auto", device)  # chosen once, outside the timed part, as raw does
    policy.begin(model, batch_size)
    try:
        options = dict(progress=False, eval_every=0, threads=None)
        train(model, opt, loader, epochs=1, max_steps=warmup, **options)
        synchronize(device)
        t0 = time.perf_counter()
        history = train(model, opt, loader, epochs=1, max_steps=steps, **options)
        synchronize(device)
        wall = time.perf_counter() - t0
    finally:
        policy.close()
    t = history.timings
    return {
        "images_per_s": steps * batch_size / wall,
        "loop_images_per_s": t["images_per_s"],
        "data_s": t["data_s"],
        "compute_s": t["compute_s"],
        "steps": history.steps,
    }


def bench_pil_data_only(loader, warmup: int, steps: int, batch_size: int) -> float:
    """images/s of producing PIL-pipeline batches (no model)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - t0)


def _round(device, args, steps, warmup, data) -> dict:
    """One round of every measurement (images/s), in table order."""
    b = args.batch_size
    tensor_loader = TensorLoader(data.images, data.labels, b, device=device, drop_last=True)
    handover_transform = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])

    def pil_loader():
        return make_loader(
            data, b, shuffle=True, kind="pil", transform=handover_transform,
            num_workers=args.workers, pin_memory=device.type == "cuda",
        )  # fmt: skip

    return {
        "raw": bench_raw(device, b, warmup, steps),
        "loop_tensor": bench_loop(device, tensor_loader, warmup, steps, b)["images_per_s"],
        "loop_pil": bench_loop(device, pil_loader(), warmup, steps, b)["images_per_s"],
        "pil_data_only": bench_pil_data_only(pil_loader(), warmup, steps, b),
    }


LABELS = {
    "raw": "raw step on a resident batch",
    "loop_tensor": "train() + TensorLoader",
    "loop_pil": "train() + PIL pipeline (handover)",
    "pil_data_only": "PIL pipeline alone (no model)",
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 40 GPU, 6 CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default 5 GPU, 1 CPU)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers for the PIL pipeline"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    device = env.pick_device(args.device)
    gpu = device.type != "cpu"
    steps = args.steps or (40 if gpu else 6)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    data = _images((steps + warmup) * args.batch_size)
    print(f"{env.banner(device)} | load average {load_average()}")
    print(
        f"handover CNN, batch {args.batch_size}, {warmup} warm-up + {steps} timed steps per "
        f"measurement, {args.rounds} rounds (threads: the package's choice)"
    )
    rounds = [_round(device, args, steps, warmup, data) for _ in range(args.rounds)]
    results = {key: [r[key] for r in rounds] for key in LABELS}
    ratios = {
        "loop_tensor / raw": [r["loop_tensor"] / r["raw"] for r in rounds],
        "loop_pil / raw": [r["loop_pil"] / r["raw"] for r in rounds],
        "loop_tensor / loop_pil": [r["loop_tensor"] / r["loop_pil"] for r in rounds],
    }
    print(f"{'measurement':<36}{'images/s: median (range)':>30}")
    for key, label in LABELS.items():
        print(f"{label:<36}{with_spread(results[key], 0):>30}")
    for name, values in ratios.items():
        print(f"{name:<36}{with_spread(values, unit='x'):>30}")
    report = {
        "benchmark": "bench_training",
        **machine(device),
        "batch_size": args.batch_size,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "pil_workers": args.workers,
        "results": {k: summary(v) for k, v in results.items()},
        "rounds": rounds,
        "ratios": {k: summary(v)["median"] for k, v in ratios.items()},
        "ratio_rounds": ratios,
    }
    write(args.out, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
