"""Per-epoch cost of the handover pipeline against the tuned one, on one device (run by hand).

Measures, in one run and on the same device, with :func:`nbhelpers.profiling.profile_training`
(warm-up excluded; on a GPU the device is synchronised at every phase boundary):

1. ``handover``: the handover CNN (Tanh), Adam, the per-batch exponential schedule, no
   ``zero_grad``; a ``DataLoader`` over per-sample PIL images with ``RandomRotation(180)``
   and ``ToTensor()``; after every epoch, evaluation of the train split and of its two
   halves ("valid", "test"), as the handover does (2x the training images, every epoch);
   Cockpit with the tutorial's tracking (preset "cheap": Loss, GradNorm,
   Distance, UpdateSize every step, Alpha every 10 steps) when Cockpit can run here.
2. ``handover, no Cockpit``: the same without Cockpit (Cockpit's share of the handover).
3. ``tuned``: the same model and optimizer on the device-resident
   :class:`nbhelpers.data.TensorLoader`, no augmentation, evaluation of the validation split
   only (a tenth of the training images, batch 1024), no Cockpit.
4. ``tuned + Cockpit (default preset)``: the tuned pipeline with the notebooks' default
   Cockpit preset (``nbhelpers.cockpit_tools.DEFAULT_PRESET``).
5. ``raw``: forward + backward + optimizer step on one fixed batch resident on the device
   (:func:`nbhelpers.profiling.time_raw_steps`): the limit of any pipeline.

Prints images/s per epoch and the ratios ``tuned / handover`` (per epoch, evaluation
included), ``tuned loop / raw`` (training loop only, no evaluation) and ``Cockpit default /
plain`` (seconds per training step), and writes them to ``benchmarks/results/pipeline.json``.
Images are random uint8 tensors: the time does not depend on the pixels.

Targets: tuned >= 3x handover per epoch on 2 CPU cores (>= 10x on a GPU); tuned loop >=
0.9x raw; default Cockpit <= 1.25x plain.

Usage::

    python benchmarks/bench_pipeline.py                        # auto device, 20 steps
    python benchmarks/bench_pipeline.py --device cpu --steps 30 --n-train 8192
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import torch
from torchvision import transforms

from nbhelpers import env
from nbhelpers.data import ImageSet, TensorLoader
from nbhelpers.models import build_cnn
from nbhelpers.profiling import TimingProfile, profile_training, time_raw_steps

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"
TARGETS = {
    "tuned_over_handover_cpu": 3.0,
    "tuned_over_handover_gpu": 10.0,
    "tuned_loop_over_raw": 0.9,
    "cockpit_default_over_plain": 1.25,
}


def _images(n: int, seed: int, name: str) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageSet(images, labels, name, "synthetic")


def _model(device: torch.device, channels_last: bool = False):
    env.seed_everything(0, deterministic=False)
    model = build_cnn("tanh", "none").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    return model, optimizer


def _pil_loader(imageset: ImageSet, batch_size: int, *, shuffle: bool, rotate: bool, workers: int):
    steps = [transforms.RandomRotation(180)] if rotate else []
    dataset = imageset.to_dataset(transforms.Compose([*steps, transforms.ToTensor()]))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def cockpit_hook(preset: str | None = None):
    """A training hook running Cockpit with ``preset`` (default: the notebooks' default),
    or ``(None, reason)`` when Cockpit cannot run here."""
    try:
        from nbhelpers import cockpit_tools
    except ImportError as err:
        return None, f"nbhelpers.cockpit_tools is not available ({err})"
    factory = getattr(cockpit_tools, "CockpitHook", None)
    if factory is None:
        return None, "nbhelpers.cockpit_tools has no CockpitHook"
    try:
        return factory(preset or cockpit_tools.DEFAULT_PRESET), None
    except Exception as err:  # noqa: BLE001 - report, do not crash the benchmark
        return None, f"Cockpit could not start: {type(err).__name__}: {err}"


def _handover(device, train_set, steps, warmup, batch_size, eval_batches, hooks, label):
    model, optimizer = _model(device)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.001)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(train_set), generator=gen)
    half = len(train_set) // 2
    eval_sets = {
        "train": train_set,
        "valid": train_set.subset(perm[:half], "valid"),
        "test": train_set.subset(perm[half:], "test"),
    }
    loader = _pil_loader(train_set, batch_size, shuffle=True, rotate=True, workers=0)
    eval_loaders = {
        name: _pil_loader(s, batch_size, shuffle=False, rotate=False, workers=0)
        for name, s in eval_sets.items()
    }
    return profile_training(
        model, optimizer, loader, steps=steps, warmup_steps=warmup, eval_loaders=eval_loaders,
        eval_max_batches=eval_batches, scheduler=scheduler, zero_grad=False, hooks=hooks,
        label=label,
    )  # fmt: skip


def _tuned(
    device, train_set, valid_set, steps, warmup, batch_size, eval_batches, hooks, label,
    channels_last=False,
):  # fmt: skip
    model, optimizer = _model(device, channels_last)
    loader = TensorLoader(
        train_set.images, train_set.labels, batch_size, device=device, channels_last=channels_last
    )
    eval_loaders = {
        "valid": TensorLoader(
            valid_set.images,
            valid_set.labels,
            1024,
            shuffle=False,
            device=device,
            channels_last=channels_last,
        )  # fmt: skip
    }
    return profile_training(
        model, optimizer, loader, steps=steps, warmup_steps=warmup, eval_loaders=eval_loaders,
        eval_max_batches=eval_batches, hooks=hooks, label=label,
    )  # fmt: skip


def _row(prof: TimingProfile) -> dict:
    return {
        "label": prof.label,
        "epoch_s": prof.time_per_epoch_s,
        "images_per_s_epoch": prof.images_per_s,
        "train_images_per_s": prof.train_images_per_s,
        "train_step_s": sum(
            prof.measured_s[p] for p in ("data loading", "forward/backward/step", "diagnostics")
        )
        / prof.steps,
        "epoch_s_by_phase": prof.epoch_s,
        "steps_measured": prof.steps,
        "notes": prof.notes,
    }


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed training steps per setup (>= 10 samples Alpha fairly)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=256, help="the handover's 256")
    parser.add_argument(
        "--tuned-batch-size",
        type=int,
        default=None,
        help="batch size of the tuned pipeline and the raw step (default: --batch-size); on a "
        "CPU the fastest is often smaller (notebook 02's batch-size sweep finds it)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="tuned pipeline and raw step in the channels_last memory format (model and batches)",
    )
    parser.add_argument("--n-train", type=int, default=8192, help="training images per epoch")
    parser.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="timed batches per evaluation split (default: all)",
    )
    parser.add_argument("--no-cockpit", action="store_true", help="skip the Cockpit measurements")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tuned_bs = args.tuned_batch_size or args.batch_size
    if args.steps < 1 or args.n_train < max(args.batch_size, tuned_bs) or tuned_bs < 1:
        parser.error("--steps must be >= 1 and --n-train >= both batch sizes >= 1")

    device = env.pick_device(args.device)
    train_set = _images(args.n_train, 0, "train")
    valid_set = _images(max(args.n_train // 10, 1), 1, "valid")
    common = dict(
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        eval_batches=args.eval_batches,
    )
    print(f"{env.banner(device)} | load average {_load()}")
    print(
        f"{args.n_train} training images per epoch, batch {args.batch_size} (tuned and raw: "
        f"{tuned_bs}{', channels_last' if args.channels_last else ''}), "
        f"{args.steps} timed steps per setup\n"
    )
    tuned_common = {**common, "batch_size": tuned_bs, "channels_last": args.channels_last}

    hook, why_not = (None, "skipped (--no-cockpit)") if args.no_cockpit else cockpit_hook("cheap")
    profiles = {}
    if hook is not None:
        profiles["handover"] = _handover(
            device, train_set, hooks=[hook], label="handover", **common
        )
        profiles["handover, no Cockpit"] = _handover(
            device, train_set, hooks=[], label="handover, no Cockpit", **common
        )
    else:
        print(f"Cockpit not measured: {why_not}")
        profiles["handover, no Cockpit"] = _handover(
            device, train_set, hooks=[], label="handover, no Cockpit", **common
        )
    profiles["tuned"] = _tuned(
        device, train_set, valid_set, hooks=[], label="tuned", **tuned_common
    )
    default_hook, why_default = (None, why_not) if args.no_cockpit else cockpit_hook(None)
    if default_hook is not None:
        profiles["tuned + Cockpit (default preset)"] = _tuned(
            device,
            train_set,
            valid_set,
            hooks=[default_hook],
            label="tuned + Cockpit (default preset)",
            **tuned_common,
        )
    model, optimizer = _model(device, args.channels_last)
    raw = time_raw_steps(
        model, optimizer, tuned_bs, steps=args.steps, warmup_steps=args.warmup,
        channels_last=args.channels_last,
    )  # fmt: skip

    handover = profiles.get("handover", profiles["handover, no Cockpit"])
    tuned = profiles["tuned"]
    ratios = {
        "tuned_over_handover": handover.time_per_epoch_s / tuned.time_per_epoch_s,
        "tuned_over_handover_no_cockpit": profiles["handover, no Cockpit"].time_per_epoch_s
        / tuned.time_per_epoch_s,
        "tuned_loop_over_raw": tuned.train_images_per_s / raw["images_per_s"],
        "cockpit_default_over_plain": None,
        "cockpit_handover_over_plain": None,
    }
    step_s = {k: _row(p)["train_step_s"] for k, p in profiles.items()}
    if "tuned + Cockpit (default preset)" in profiles:
        ratios["cockpit_default_over_plain"] = (
            step_s["tuned + Cockpit (default preset)"] / step_s["tuned"]
        )
    if "handover" in profiles:
        ratios["cockpit_handover_over_plain"] = (
            handover.time_per_epoch_s / profiles["handover, no Cockpit"].time_per_epoch_s
        )

    print(f"{'setup':<34}{'s/epoch':>10}{'images/s':>10}{'loop img/s':>12}  largest phase")
    for label, prof in profiles.items():
        top = max(prof.epoch_s, key=prof.epoch_s.get)
        print(
            f"{label:<34}{prof.time_per_epoch_s:>10.2f}{prof.images_per_s:>10.0f}{prof.train_images_per_s:>12.0f}  {top}"
        )
    print(f"{'raw forward+backward+step':<34}{'':>10}{'':>10}{raw['images_per_s']:>12.0f}")
    print()
    gpu = device.type == "cuda"
    target = TARGETS["tuned_over_handover_gpu" if gpu else "tuned_over_handover_cpu"]
    print(
        f"tuned / handover (per epoch):        {ratios['tuned_over_handover']:.2f}x   (target >= {target:g}x)"
    )
    print(
        f"tuned loop / raw fwd+bwd+step:       {ratios['tuned_loop_over_raw']:.2f}x   (target >= {TARGETS['tuned_loop_over_raw']:g}x)"
    )
    if ratios["cockpit_default_over_plain"] is not None:
        print(
            f"Cockpit default preset / plain step: {ratios['cockpit_default_over_plain']:.2f}x   (target <= {TARGETS['cockpit_default_over_plain']:g}x)"
        )
    else:
        print(f"Cockpit default preset / plain step: not measured ({why_default})")
    if ratios["cockpit_handover_over_plain"] is not None:
        print(
            f"handover with / without Cockpit:     {ratios['cockpit_handover_over_plain']:.2f}x (per epoch)"
        )

    result = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": env.device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": _load(),
        "platform": platform.platform(),
        "versions": env.versions(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cockpit": "measured" if hook is not None else f"not measured: {why_not}",
        "setups": {k: _row(p) for k, p in profiles.items()},
        "raw": raw,
        "ratios": ratios,
        "targets": TARGETS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
