"""Per-epoch cost of the handover pipeline against the tuned one, on one device (run by hand).

Measures, in one run, on one device, in ``--rounds`` interleaved rounds (every setup once per
round, so a change in the machine's load hits all of them alike), with
:func:`nbhelpers.profiling.profile_training` (warm-up excluded; on a GPU the device is
synchronised at every phase boundary):

1. ``handover``: the handover CNN (Tanh), Adam, the per-batch exponential schedule, no
   ``zero_grad``; a ``DataLoader`` over per-sample PIL images with ``RandomRotation(180)``
   and ``ToTensor()``; after every epoch, evaluation of the train split and of its two
   halves ("valid", "test"), as the handover does (2x the training images, every epoch);
   Cockpit with the tutorial's instruments (preset "handover": Loss, GradNorm, Distance,
   UpdateSize every step, Alpha every 10 steps) when Cockpit can run here.
2. ``handover, no Cockpit``: the same without Cockpit (Cockpit's share of the handover).
3. ``tuned``: the same model and optimizer on the device-resident
   :class:`nbhelpers.data.TensorLoader`, no augmentation, evaluation of the validation split
   only (a tenth of the training images, batch 1024), no Cockpit, in the memory layout and
   the arithmetic that train fastest on this device (``--memory-format auto``,
   ``--precision auto``: measured with :func:`nbhelpers.profiling.fastest_memory_format` and
   :func:`nbhelpers.profiling.fastest_precision`, as ``RunConfig(memory_format="auto",
   precision="auto")`` does, the tutorial's reference fix among them).
4. ``tuned, contiguous``: the tuned pipeline in torch's default layout (only when the tuned
   one is channels_last): what the layout alone gains.
5. ``tuned, fp32``: the tuned pipeline in float32 (only when the tuned one is bf16): what
   the arithmetic alone gains.
6. ``tuned + Cockpit (default preset)``: the tuned pipeline in torch's default layout and
   float32 (what Cockpit's BackPACK extensions expect, as ``run()`` uses with hooks) with the
   notebooks' default preset (``nbhelpers.cockpit_tools.DEFAULT_PRESET``); beside it
   ``tuned, plain``, the same without Cockpit, when no setup above is already that.
7. ``raw``: forward + backward + optimizer step on one fixed batch resident on the device, in
   the tuned layout and arithmetic (:func:`nbhelpers.profiling.time_raw_steps`): the limit of
   any pipeline.

All of them run with the package's CPU thread choice (``--threads auto``, see
:mod:`nbhelpers.threads`); the table says how many threads each used. Images are random
uint8 tensors: the time does not depend on the pixels.

Prints, per setup, the median seconds per epoch with the spread over rounds, images/s, the
training-step throughput (data loading + forward/backward/step + diagnostics: everything a
training step costs, so a hook that runs the backward pass itself is counted), and how well
the measured phases add up to the measured wall time; then the ratios, each the median of
its per-round ratios with their range:

- ``tuned_over_handover``: handover seconds per epoch / tuned (evaluation included);
- ``tuned_loop_over_raw``: tuned training-loop images/s / raw images/s;
- ``cockpit_default_over_plain``: seconds per training step with the default Cockpit preset /
  without (tuned pipeline, torch's default layout);
- ``cockpit_handover_over_plain``: the handover's seconds per epoch with / without Cockpit;
- ``channels_last_gain``: tuned, contiguous / tuned, per epoch (when measured);
- ``bf16_gain``: tuned, fp32 / tuned, per epoch (when measured).

Writes everything, every round included, to ``benchmarks/results/pipeline.json``.
Targets: tuned >= 3x handover per epoch on 2 CPU cores (>= 10x on a GPU); tuned loop >= 0.9x
raw; default Cockpit <= 1.25x plain.

Usage::

    python benchmarks/bench_pipeline.py                          # auto device, 5 rounds
    python benchmarks/bench_pipeline.py --rounds 2 --steps 3 --n-train 1024   # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from _common import RESULTS, load_average, machine, summary, with_spread, write
from torchvision import transforms

from nbhelpers import env
from nbhelpers.data import ImageSet, TensorLoader
from nbhelpers.models import build_cnn
from nbhelpers.profiling import (
    MEMORY_FORMATS,
    PRECISIONS,
    TimingProfile,
    fastest_memory_format,
    fastest_precision,
    median_profile,
    profile_training,
    time_raw_steps,
    with_precision,
)

TARGETS = {
    "tuned_over_handover_cpu": 3.0,
    "tuned_over_handover_gpu": 10.0,
    "tuned_loop_over_raw": 0.9,
    "cockpit_default_over_plain": 1.25,
}
TRAIN_PHASES = ("data loading", "forward/backward/step", "diagnostics")


def _images(n: int, seed: int, name: str) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageSet(images, labels, name, "synthetic")


def _model(device: torch.device, layout: str = "contiguous"):
    env.seed_everything(0, deterministic=False)
    model = build_cnn("tanh", "none").to(device, memory_format=MEMORY_FORMATS[layout])
    return model, torch.optim.Adam(model.parameters(), lr=1e-5)


def _pil_loader(imageset: ImageSet, batch_size: int, *, shuffle: bool, rotate: bool):
    steps = [transforms.RandomRotation(180)] if rotate else []
    dataset = imageset.to_dataset(transforms.Compose([*steps, transforms.ToTensor()]))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def cockpit_hook(preset: str | None = None):
    """A fresh training hook running Cockpit with ``preset`` (default: the notebooks'
    default), or ``(None, reason)`` when Cockpit cannot run here."""
    try:
        from nbhelpers import cockpit_tools
    except ImportError as err:
        return None, f"nbhelpers.cockpit_tools is not available ({err})"
    try:
        return cockpit_tools.CockpitHook(preset or cockpit_tools.DEFAULT_PRESET), None
    except Exception as err:  # noqa: BLE001 - report, do not crash the benchmark
        return None, f"Cockpit could not start: {type(err).__name__}: {err}"


class Setups:
    """The setups of the benchmark; each call builds its setup afresh and profiles it once."""

    def __init__(self, args, device: torch.device, layout: str, precision: str):
        self.args, self.device, self.layout, self.precision = args, device, layout, precision
        self.train_set = _images(args.n_train, 0, "train")
        self.valid_set = _images(max(args.n_train // 10, 1), 1, "valid")
        perm = torch.randperm(args.n_train, generator=torch.Generator().manual_seed(0))
        half = args.n_train // 2
        self.handover_eval = {
            "train": self.train_set,
            "valid": self.train_set.subset(perm[:half], "valid"),
            "test": self.train_set.subset(perm[half:], "test"),
        }

    def _profile(self, model, optimizer, loader, eval_loaders, hooks, **options):
        a = self.args
        return profile_training(
            model, optimizer, loader, steps=a.steps, warmup_steps=a.warmup,
            eval_loaders=eval_loaders, eval_max_batches=a.eval_batches, hooks=hooks,
            threads=a.threads, **options,
        )  # fmt: skip

    def handover(self, cockpit: bool) -> TimingProfile:
        model, optimizer = _model(self.device)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.001)
        b = self.args.batch_size
        loader = _pil_loader(self.train_set, b, shuffle=True, rotate=True)
        evals = {
            name: _pil_loader(s, b, shuffle=False, rotate=False)
            for name, s in self.handover_eval.items()
        }
        hooks = [cockpit_hook("handover")[0]] if cockpit else []
        return self._profile(
            model, optimizer, loader, evals, hooks, scheduler=scheduler, zero_grad=False
        )

    def tuned(self, layout: str, precision: str, cockpit: bool = False) -> TimingProfile:
        model, optimizer = _model(self.device, layout)
        model = with_precision(model, precision, self.device)
        cl = layout == "channels_last"
        t, v, b = self.train_set, self.valid_set, self.args.tuned_batch_size
        loader = TensorLoader(t.images, t.labels, b, device=self.device, channels_last=cl)
        evals = {
            "valid": TensorLoader(
                v.images, v.labels, 1024, shuffle=False, device=self.device, channels_last=cl
            )
        }
        return self._profile(
            model, optimizer, loader, evals, [cockpit_hook()[0]] if cockpit else []
        )

    def raw(self) -> dict:
        model, optimizer = _model(self.device, self.layout)
        model = with_precision(model, self.precision, self.device)
        return time_raw_steps(
            model, optimizer, self.args.tuned_batch_size, steps=self.args.steps,
            warmup_steps=self.args.warmup, channels_last=self.layout == "channels_last",
            threads=self.args.threads,
        )  # fmt: skip


def _measurements(setups: Setups, cockpit_ok: bool) -> dict:
    """label -> a function measuring that setup once (in table order)."""
    out = {}
    if cockpit_ok:
        out["handover"] = lambda: setups.handover(cockpit=True)
    out["handover, no Cockpit"] = lambda: setups.handover(cockpit=False)
    out["tuned"] = lambda: setups.tuned(setups.layout, setups.precision)
    if setups.layout != "contiguous":
        out["tuned, contiguous"] = lambda: setups.tuned("contiguous", setups.precision)
    if setups.precision != "fp32":
        out["tuned, fp32"] = lambda: setups.tuned(setups.layout, "fp32")
    if cockpit_ok:
        if setups.layout != "contiguous" and setups.precision != "fp32":  # Cockpit's plain twin
            out["tuned, plain"] = lambda: setups.tuned("contiguous", "fp32")
        out["tuned + Cockpit (default preset)"] = lambda: setups.tuned(
            "contiguous", "fp32", cockpit=True
        )
    return out


def _step_s(prof: TimingProfile) -> float:
    """Seconds per training step: everything a step costs, hooks included."""
    return sum(prof.measured_s[p] for p in TRAIN_PHASES) / prof.steps


def _plain(rounds: dict[str, list]) -> list:
    """The rounds of the tuned pipeline in torch's layout and float32 (Cockpit's setting)."""
    if "tuned, plain" in rounds:
        return rounds["tuned, plain"]
    if "tuned, contiguous" in rounds and "tuned, fp32" not in rounds:
        return rounds["tuned, contiguous"]
    return rounds.get("tuned, fp32", rounds["tuned"])


def _round_ratios(rounds: dict[str, list], raw: list[dict]) -> dict[str, list[float]]:
    """Each ratio of the module docstring, once per round."""
    handover = rounds.get("handover", rounds["handover, no Cockpit"])
    plain = _plain(rounds)
    pairs = {
        "tuned_over_handover": [h.time_per_epoch_s / t.time_per_epoch_s
                                for h, t in zip(handover, rounds["tuned"], strict=True)],
        "tuned_loop_over_raw": [t.train_images_per_s / r["images_per_s"]
                                for t, r in zip(rounds["tuned"], raw, strict=True)],
    }  # fmt: skip
    if "tuned + Cockpit (default preset)" in rounds:
        cockpit = rounds["tuned + Cockpit (default preset)"]
        pairs["cockpit_default_over_plain"] = [
            _step_s(c) / _step_s(p) for c, p in zip(cockpit, plain, strict=True)
        ]
        pairs["cockpit_handover_over_plain"] = [
            h.time_per_epoch_s / n.time_per_epoch_s
            for h, n in zip(rounds["handover"], rounds["handover, no Cockpit"], strict=True)
        ]
    for label, key in (("tuned, contiguous", "channels_last_gain"), ("tuned, fp32", "bf16_gain")):
        if label in rounds:
            pairs[key] = [
                c.time_per_epoch_s / t.time_per_epoch_s
                for c, t in zip(rounds[label], rounds["tuned"], strict=True)
            ]
    return pairs


def _row(prof: TimingProfile) -> dict:
    wall = prof.total_s
    return {
        "epoch_s": prof.time_per_epoch_s,
        "epoch_s_rounds": prof.round_epoch_s,
        "images_per_s_epoch": prof.images_per_s,
        "train_step_images_per_s": prof.images / (_step_s(prof) * prof.steps),
        "train_loop_images_per_s": prof.train_images_per_s,
        "epoch_s_by_phase": prof.epoch_s,
        "phases_over_wall": sum(prof.measured_s.values()) / wall if wall > 0 else None,
        "threads": prof.threads,
        "steps_measured": prof.steps,
        "notes": prof.notes,
    }


def _print_table(profiles: dict[str, TimingProfile], raw: list[dict]) -> None:
    head = f"{'setup':<34}{'s/epoch (spread)':>22}{'images/s':>10}{'step img/s':>12}"
    print(f"{head}{'phases/wall':>13}{'threads':>9}")
    for label, prof in profiles.items():
        row = _row(prof)
        print(
            f"{label:<34}{with_spread(prof.round_epoch_s):>22}{prof.images_per_s:>10.0f}"
            f"{row['train_step_images_per_s']:>12.0f}{row['phases_over_wall']:>13.0%}"
            f"{prof.threads if prof.threads is not None else '-':>9}"
        )
    raw_ips = [r["images_per_s"] for r in raw]
    print(f"{'raw forward+backward+step':<34}{'':>22}{'':>10}{with_spread(raw_ips, 0):>12}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every setup")
    p.add_argument("--steps", type=int, default=20, help="timed steps per setup and round (>= 10 "
                   "samples Cockpit's Alpha, every 10th step, fairly)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=256, help="the handover's 256")
    p.add_argument(
        "--tuned-batch-size",
        type=int,
        default=None,
        help="batch size of the tuned pipeline and the raw step (default: --batch-size)",
    )
    p.add_argument(
        "--memory-format",
        default="auto",
        choices=["auto", *MEMORY_FORMATS],
        help="layout of the tuned pipeline and the raw step (auto: the faster, measured)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", *PRECISIONS],
        help="arithmetic of the tuned pipeline and the raw step (auto: the faster, measured)",
    )
    p.add_argument(
        "--threads",
        default="auto",
        help="CPU threads of every setup: auto (the package's choice), N, or none",
    )
    p.add_argument("--n-train", type=int, default=8192, help="training images per epoch")
    p.add_argument(
        "--eval-batches",
        type=int,
        default=8,
        help="timed batches per evaluation split, scaled to the split (0: all)",
    )
    p.add_argument("--no-cockpit", action="store_true", help="skip the Cockpit measurements")
    p.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    return p


def _arguments(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    args.tuned_batch_size = args.tuned_batch_size or args.batch_size
    args.eval_batches = args.eval_batches or None
    args.threads = None if args.threads == "none" else args.threads
    args.threads = int(args.threads) if str(args.threads).isdigit() else args.threads
    small = min(args.steps, args.rounds, args.tuned_batch_size)
    if small < 1 or args.n_train < max(args.batch_size, args.tuned_batch_size):
        parser.error("--steps, --rounds >= 1 and --n-train >= both batch sizes >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = _arguments(argv)
    device = env.pick_device(args.device)
    make = lambda: build_cnn("tanh", "none")  # noqa: E731 - the handover CNN, as in _model
    layout, layout_s = args.memory_format, None
    if layout == "auto":
        layout, layout_s = fastest_memory_format(
            make, args.tuned_batch_size, device=device, threads=args.threads
        )
    precision, precision_s = args.precision, None
    if precision == "auto":
        precision, precision_s = fastest_precision(
            make, args.tuned_batch_size, device=device, memory_format=layout, threads=args.threads
        )
    setups = Setups(args, device, layout, precision)
    hook, why_not = (None, "skipped (--no-cockpit)") if args.no_cockpit else cockpit_hook()
    measure = _measurements(setups, hook is not None)
    print(f"{env.banner(device)} | load average {load_average()}")
    print(
        f"{args.n_train} training images per epoch, batch {args.batch_size} (tuned and raw: "
        f"{args.tuned_batch_size}, {layout}, {precision}{' (measured: auto)' if layout_s or precision_s else ''}), "
        f"{args.rounds} rounds of {args.steps} timed steps per setup, threads {args.threads}"
    )
    if hook is None:
        print(f"Cockpit not measured: {why_not}")
    rounds: dict[str, list[TimingProfile]] = {label: [] for label in measure}
    raw: list[dict] = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: ", end="", flush=True)
        for label, fn in measure.items():
            rounds[label].append(fn())
            print(".", end="", flush=True)
        raw.append(setups.raw())
        print(f" load {load_average()}", flush=True)
    profiles = {label: median_profile(profs) for label, profs in rounds.items()}
    print()
    _print_table(profiles, raw)
    ratios = _round_ratios(rounds, raw)
    _print_ratios(ratios, device, why_not)
    result = {
        **machine(device),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "memory_format": {"tuned": layout, "measured_step_s": layout_s},
        "precision": {"tuned": precision, "measured_step_s": precision_s},
        "cockpit": "measured" if hook is not None else f"not measured: {why_not}",
        "setups": {k: _row(p) for k, p in profiles.items()},
        "raw": {"rounds": raw, **summary([r["images_per_s"] for r in raw])},
        "ratios": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_rounds": ratios,
        "targets": TARGETS,
        "load_average_after": load_average(),
    }
    write(args.out, result)
    return result


def _print_ratios(ratios: dict[str, list[float]], device: torch.device, why_not) -> None:
    gpu = device.type == "cuda"
    target = TARGETS["tuned_over_handover_gpu" if gpu else "tuned_over_handover_cpu"]
    lines = {
        "tuned_over_handover": ("tuned / handover (per epoch)", f"target >= {target:g}x"),
        "tuned_loop_over_raw": ("tuned loop / raw fwd+bwd+step", "target >= 0.9x"),
        "cockpit_default_over_plain": ("Cockpit default preset / plain step", "target <= 1.25x"),
        "cockpit_handover_over_plain": ("handover with / without Cockpit", "per epoch"),
        "channels_last_gain": ("tuned contiguous / channels_last", "what the layout gains"),
        "bf16_gain": ("tuned fp32 / bf16", "what the arithmetic gains"),
    }
    print("\nratios: median of the rounds (fastest-slowest round)")
    for key, (name, note) in lines.items():
        if key in ratios:
            print(f"  {name:<38}{with_spread(ratios[key], unit='x'):>22}   ({note})")
        elif key.startswith("cockpit"):
            print(f"  {name:<38}{'not measured':>22}   ({why_not})")


if __name__ == "__main__":
    main(sys.argv[1:])
