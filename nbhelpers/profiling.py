"""Where the time goes: per-phase timing of a few training steps, projected to an epoch.

:func:`profile_training` trains a given setup (model, optimizer, train loader, optional
evaluation loaders, optional diagnostics hooks such as Cockpit's) for a few steps with
:func:`nbhelpers.train.train` and returns a :class:`TimingProfile`: seconds spent in

- ``data loading``: waiting for the next batch (and moving it to the device),
- ``forward/backward/step``: forward pass, loss, backward pass, optimizer (and scheduler) step,
- ``evaluation``: loss and accuracy on the evaluation splits (:func:`nbhelpers.train.evaluate`),
- ``diagnostics``: time inside training hooks (Cockpit),

measured, and projected to one epoch (seconds), plus images/s. On a GPU the device is
synchronised at every phase boundary while profiling, so each phase is charged with its own
work (GPU kernels run asynchronously; without this, waiting time lands in whichever phase
happens to read a result first).

Also here: :func:`compare_profiles` / :func:`plot_comparison` (lever -> time per epoch ->
speed-up), :func:`time_raw_steps` (forward+backward+step on one fixed resident batch: the
limit any data pipeline can reach), :func:`batch_size_sweep` (throughput by batch size, on a
GPU doubling until out of memory or a memory cap) and :class:`Autocast` (mixed precision).

The tutorial's first strategy (Numerics of ML, Tutorial 11, "Debugging Strategy I": make the
run fast enough to iterate) is what notebook 02 measures with these tools.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nbhelpers.train import evaluate, synchronize, train

__all__ = [
    "PHASES",
    "Autocast",
    "TimingProfile",
    "batch_size_sweep",
    "compare_profiles",
    "plot_comparison",
    "profile_training",
    "time_raw_steps",
]

#: The phases of a training epoch, in table order.
PHASES: tuple[str, ...] = ("data loading", "forward/backward/step", "evaluation", "diagnostics")
_PHASE_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2")
_TRAIN_KEYS = {
    "data loading": "data_s",
    "forward/backward/step": "compute_s",
    "diagnostics": "diagnostics_s",
}


# --------------------------------------------------------------------------- result
@dataclass(repr=False)
class TimingProfile:
    """What :func:`profile_training` measured, and its projection to one epoch.

    Attributes:
        label: a name for the setup (e.g. ``"handover"``), used in tables and charts.
        device: the training device as a string.
        steps: training steps measured (after the warm-up).
        images: training images in those steps.
        steps_per_epoch: optimizer steps in one epoch (from the train loader).
        epoch_images: training images in one epoch (None if the loader does not say).
        eval_every: evaluation every this many epochs (0: never) for the projection.
        epochs: epochs of the run this setup stands for (for the projected run time).
        measured_s: phase -> seconds measured; for ``evaluation``, the seconds of the timed
            fraction of the evaluation splits.
        total_s: wall-clock seconds of the whole measurement (training steps plus timed
            evaluation), measured independently of the phases.
        epoch_s: phase -> projected seconds per epoch: training phases scaled from ``steps``
            to ``steps_per_epoch``; evaluation scaled to the full splits and divided by
            ``eval_every``.
        eval_split_s: split -> projected seconds of one full evaluation of that split.
        eval_split_measured_s: split -> seconds measured for that split (its timed fraction).
        notes: caveats about the measurement (e.g. a hook that runs the backward pass).
    """

    label: str
    device: str
    steps: int
    images: int
    steps_per_epoch: int
    epoch_images: int | None
    eval_every: int
    epochs: int
    measured_s: dict[str, float]
    total_s: float
    epoch_s: dict[str, float]
    eval_split_s: dict[str, float] = field(default_factory=dict)
    eval_split_measured_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def time_per_epoch_s(self) -> float:
        """Projected seconds per epoch, all phases (evaluation amortised over ``eval_every``)."""
        return float(sum(self.epoch_s.values()))

    @property
    def time_per_run_s(self) -> float:
        """Projected seconds of the whole run: ``epochs * time_per_epoch_s``."""
        return self.epochs * self.time_per_epoch_s

    @property
    def images_per_s(self) -> float:
        """Effective training throughput, images/s: images per epoch / projected epoch time
        (so evaluation and diagnostics slow it down)."""
        images = (
            self.epoch_images
            if self.epoch_images
            else self.images / self.steps * self.steps_per_epoch
        )
        return images / self.time_per_epoch_s if self.time_per_epoch_s > 0 else 0.0

    @property
    def train_images_per_s(self) -> float:
        """Training-loop throughput, images/s: measured images / (data loading +
        forward/backward/step) seconds, without evaluation and diagnostics."""
        seconds = self.measured_s["data loading"] + self.measured_s["forward/backward/step"]
        return self.images / seconds if seconds > 0 else 0.0

    def table(self):
        """The profile as a pandas DataFrame.

        Rows: the four :data:`PHASES` and ``"total"``. Columns: ``measured (s)`` (seconds of
        this measurement), ``per epoch (s)`` (projected), ``share (%)`` (of the projected
        epoch). ``df.attrs`` holds ``label``, ``images_per_s`` and ``time_per_epoch_s``.
        """
        import pandas as pd

        epoch_total = self.time_per_epoch_s
        rows = []
        for phase in PHASES:
            share = 100.0 * self.epoch_s[phase] / epoch_total if epoch_total > 0 else 0.0
            rows.append((phase, self.measured_s[phase], self.epoch_s[phase], share))
        rows.append(("total", sum(self.measured_s.values()), epoch_total, 100.0))
        df = pd.DataFrame(rows, columns=["phase", "measured (s)", "per epoch (s)", "share (%)"])
        df = df.set_index("phase")
        df.attrs.update(
            label=self.label, images_per_s=self.images_per_s, time_per_epoch_s=epoch_total
        )
        return df

    def project(
        self,
        label: str,
        *,
        epochs: int | None = None,
        eval_splits: Sequence[str] | None = None,
        eval_every: int | None = None,
    ) -> TimingProfile:
        """The same measurement projected to fewer epochs or less evaluation (no new timing).

        Training phases do not depend on these settings, and every evaluation split was
        timed on its own, so the projection needs no new measurement.

        Args:
            label: name of the new profile.
            epochs: epochs of the run (default: unchanged).
            eval_splits: which of the measured splits to keep (default: all; ``()``: none).
            eval_every: evaluation every this many epochs (0: never; default: unchanged).

        Returns:
            A new :class:`TimingProfile`.

        Raises:
            ValueError: a split that was not measured, or a bad ``epochs``/``eval_every``.
        """
        epochs = self.epochs if epochs is None else _check_positive_int("epochs", epochs)
        every = self.eval_every if eval_every is None else eval_every
        _check_positive_int("eval_every", every, minimum=0)
        splits = tuple(self.eval_split_s) if eval_splits is None else tuple(eval_splits)
        unknown = [s for s in splits if s not in self.eval_split_s]
        if unknown:
            raise ValueError(
                f"splits {unknown} were not measured; measured: {list(self.eval_split_s)}"
            )
        kept = splits if every else ()
        split_s = {s: self.eval_split_s[s] for s in kept}
        split_measured = {s: self.eval_split_measured_s.get(s, 0.0) for s in kept}
        measured = dict(self.measured_s, evaluation=sum(split_measured.values()))
        epoch_s = dict(self.epoch_s, evaluation=sum(split_s.values()) / every if every else 0.0)
        return dataclasses.replace(
            self,
            label=label,
            epochs=epochs,
            eval_every=every,
            measured_s=measured,
            total_s=self.total_s - self.measured_s["evaluation"] + measured["evaluation"],
            epoch_s=epoch_s,
            eval_split_s=split_s,
            eval_split_measured_s=split_measured,
            notes=[*self.notes, f"projected from '{self.label}' (no new timing)"],
        )

    def __repr__(self) -> str:
        return f"<TimingProfile {self.summary()}>"

    def summary(self) -> str:
        """One line: label, epoch time, images/s and the largest phase."""
        top = max(PHASES, key=lambda p: self.epoch_s[p])
        share = self.epoch_s[top] / self.time_per_epoch_s if self.time_per_epoch_s > 0 else 0.0
        return (
            f"{self.label}: {self.time_per_epoch_s:.1f} s per epoch "
            f"({self.steps_per_epoch} steps), {self.images_per_s:,.0f} images/s; "
            f"largest phase: {top} ({share:.0%})"
        )

    def plot(self, ax=None):
        """Bar chart of the projected seconds per epoch by phase; returns the Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 2.8))
        else:
            fig = ax.figure
        values = [self.epoch_s[p] for p in PHASES]
        bars = ax.barh(list(PHASES), values, color=_PHASE_COLOURS)
        total = self.time_per_epoch_s
        for bar, value in zip(bars, values, strict=True):
            share = value / total if total > 0 else 0.0
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {value:.2f} s ({share:.0%})",
                va="center",
                fontsize=9,
            )
        ax.invert_yaxis()
        ax.set_xlabel("seconds per epoch (projected)")
        ax.set_ylabel("phase")
        ax.set_xlim(0, max(values + [1e-9]) * 1.35)
        ax.set_title(
            f"Where the time goes: {self.label} on {self.device} "
            f"({total:.1f} s per epoch, {self.images_per_s:,.0f} images/s)"
        )
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields and the derived numbers."""
        out = dict(self.__dict__)
        out.update(
            time_per_epoch_s=self.time_per_epoch_s,
            time_per_run_s=self.time_per_run_s,
            images_per_s=self.images_per_s,
            train_images_per_s=self.train_images_per_s,
        )
        return out


# --------------------------------------------------------------------------- checks
def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_fraction(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0.0 < float(value) <= 1.0):
        raise ValueError(f"eval_fraction must be a number in (0, 1], got {value!r}")
    return float(value)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _loader_images(loader: Any) -> int | None:
    """Number of samples one pass over ``loader`` yields, when the loader says."""
    size = getattr(loader, "dataset_size", None)
    if isinstance(size, int):
        return size
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        try:
            n = len(dataset)
        except TypeError:
            return None
        if getattr(loader, "drop_last", False) and getattr(loader, "batch_size", None):
            return n // loader.batch_size * loader.batch_size
        return n
    return None


def _steps_per_epoch(train_loader: Any, steps_per_epoch: int | None) -> int:
    if steps_per_epoch is not None:
        return _check_positive_int("steps_per_epoch", steps_per_epoch)
    try:
        n = len(train_loader)
    except TypeError:
        raise ValueError(
            "train_loader has no len(); pass steps_per_epoch (optimizer steps in one epoch)."
        ) from None
    if n <= 0:
        raise ValueError("train_loader is empty (len() == 0); it must yield at least one batch.")
    return n


# --------------------------------------------------------------------------- evaluation timing
def _time_evaluation(
    model, eval_loaders, fraction, max_batches, loss_fn, device
) -> tuple[dict[str, float], dict[str, float]]:
    """Time evaluation of a fraction of every split; return (split -> measured s, split -> full s)."""
    measured: dict[str, float] = {}
    full: dict[str, float] = {}
    for split, loader in eval_loaders.items():
        try:
            n_batches = len(loader)
        except TypeError:
            n_batches = None
        k = max_batches
        if n_batches is not None:
            k = max(1, math.ceil(fraction * n_batches))
            k = k if max_batches is None else min(k, max_batches)
        limited = k is not None and (n_batches is None or k < n_batches)
        batches = itertools.islice(loader, k) if limited else loader
        synchronize(device)
        t0 = time.perf_counter()
        result = evaluate(model, batches, loss_fn=loss_fn, device=device)
        synchronize(device)
        seconds = time.perf_counter() - t0
        measured[split] = seconds
        size = _loader_images(loader)
        scale = size / result["n"] if size else (n_batches / k if n_batches else 1.0)
        full[split] = seconds * scale
    return measured, full


# --------------------------------------------------------------------------- the profiler
def profile_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable,
    *,
    steps: int,
    eval_loaders: Mapping[str, Iterable] | None = None,
    eval_fraction: float = 1.0,
    eval_max_batches: int | None = None,
    eval_every: int = 1,
    hooks: Sequence[Any] = (),
    loss_fn: nn.Module | None = None,
    scheduler: Any | None = None,
    scheduler_step: str = "batch",
    zero_grad: bool = True,
    warmup_steps: int = 1,
    steps_per_epoch: int | None = None,
    epochs: int = 1,
    device: torch.device | str | None = None,
    label: str = "run",
    restore: bool = True,
) -> TimingProfile:
    """Time a few training steps of a setup and project them to one epoch.

    Runs ``warmup_steps`` untimed steps (one-off costs: memory allocation, kernel
    selection, worker start-up), then ``steps`` timed steps with
    :func:`nbhelpers.train.train` (``profile=True``: the device is synchronised at every
    phase boundary, so on a GPU each phase is charged with its own work), then times
    :func:`nbhelpers.train.evaluate` on ``eval_fraction`` of every evaluation loader.

    Projection to one epoch (seconds): data loading, forward/backward/step and diagnostics
    per step times ``steps_per_epoch``; evaluation scaled from the timed fraction to the
    whole split (by images), summed over splits and divided by ``eval_every`` (evaluating
    every ``k`` epochs costs ``1/k`` of an evaluation per epoch).

    Caveats: a hook that runs the backward pass itself (Cockpit does, inside its context)
    has that backward pass counted as diagnostics, so "forward/backward/step" then holds
    forward and step only; compare with a profile without hooks for the net cost (a note
    says so). Hooks that act every ``n`` steps are sampled as often as the ``steps`` allow;
    time at least ``n`` steps for a fair share.

    Args:
        model: maps float32 ``(B, 3, 32, 32)`` to ``(B, C)`` logits; already on ``device``.
        optimizer: optimizer over the model's parameters.
        train_loader: iterable of ``(x, y)`` batches; must have ``len()`` or give
            ``steps_per_epoch``.
        steps: timed training steps (int >= 1).
        eval_loaders: split name -> loader (e.g. ``{"train": ..., "valid": ..., "test": ...}``);
            None or empty: no evaluation.
        eval_fraction: share of each evaluation loader's batches that is timed, in (0, 1]
            (at least one batch); the time is scaled up to the whole split.
        eval_max_batches: at most this many batches timed per split (None: no limit), e.g.
            ``steps`` to keep profiling short whatever the split size.
        eval_every: evaluation every this many epochs for the projection (0: never).
        hooks: training hooks (see :mod:`nbhelpers.train`), e.g. a Cockpit hook.
        loss_fn, scheduler, scheduler_step, zero_grad: passed to :func:`nbhelpers.train.train`.
        warmup_steps: untimed steps first (int >= 0); hooks are not attached during them.
        steps_per_epoch: optimizer steps per epoch; default ``len(train_loader)``.
        epochs: epochs of the run this setup stands for (only for ``time_per_run_s``).
        device: default the device of the model's parameters.
        label: the setup's name in tables and charts.
        restore: put the model's, optimizer's and scheduler's state back afterwards, so
            profiling does not change the training that follows.

    Returns:
        A :class:`TimingProfile` (``.table()``, ``.plot()``, ``.summary()``).

    Raises:
        ValueError: ``steps`` < 1, ``warmup_steps`` < 0, ``eval_every`` < 0, ``epochs`` < 1,
            ``eval_fraction`` outside (0, 1], a loader without ``len()`` and no
            ``steps_per_epoch``, or a train loader that yields no batches.
        TypeError: ``model`` is not an ``nn.Module`` or ``eval_loaders`` is not a mapping.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_positive_int("steps", steps)
    _check_positive_int("warmup_steps", warmup_steps, minimum=0)
    _check_positive_int("eval_every", eval_every, minimum=0)
    _check_positive_int("epochs", epochs)
    fraction = _check_fraction(eval_fraction)
    if eval_max_batches is not None:
        _check_positive_int("eval_max_batches", eval_max_batches)
    if eval_loaders is not None and not isinstance(eval_loaders, Mapping):
        raise TypeError(
            f"eval_loaders must be a dict of split name -> loader, got {type(eval_loaders).__name__}"
        )
    per_epoch = _steps_per_epoch(train_loader, steps_per_epoch)
    device = _model_device(model) if device is None else torch.device(device)
    eval_loaders = dict(eval_loaders or {}) if eval_every else {}
    saved = _snapshot(model, optimizer, scheduler) if restore else None
    common = dict(
        loss_fn=loss_fn,
        scheduler=scheduler,
        scheduler_step=scheduler_step,
        zero_grad=zero_grad,
        progress=False,
        device=device,
        profile=True,
        eval_every=0,
    )
    try:
        if warmup_steps:
            train(
                model,
                optimizer,
                train_loader,
                epochs=warmup_steps,
                max_steps=warmup_steps,
                **common,
            )
        history = train(
            model,
            optimizer,
            train_loader,
            epochs=steps,
            max_steps=steps,
            hooks=tuple(hooks),
            **common,
        )
        if history.steps == 0:
            raise ValueError("train_loader yielded no batches; cannot profile.")
        eval_measured, eval_full = _time_evaluation(
            model, eval_loaders, fraction, eval_max_batches, loss_fn, device
        )
    finally:
        if saved is not None:
            _restore(model, optimizer, scheduler, saved)
    return _make_profile(
        history,
        eval_measured,
        eval_full,
        per_epoch,
        train_loader,
        eval_every,
        epochs,
        device,
        label,
        hooks,
    )


def _make_profile(
    history, eval_measured, eval_full, per_epoch, loader, eval_every, epochs, device, label, hooks
) -> TimingProfile:
    timings = history.timings
    measured = {phase: float(timings[key]) for phase, key in _TRAIN_KEYS.items()}
    measured["evaluation"] = sum(eval_measured.values())
    measured = {phase: measured[phase] for phase in PHASES}
    scale = per_epoch / history.steps
    epoch_s = {phase: measured[phase] * scale for phase in _TRAIN_KEYS}
    epoch_s["evaluation"] = sum(eval_full.values()) / eval_every if eval_every else 0.0
    epoch_s = {phase: epoch_s[phase] for phase in PHASES}
    notes = []
    if any(callable(getattr(h, "backward", None)) for h in hooks):
        notes.append(
            "A hook runs the backward pass itself, so 'diagnostics' includes the backward pass; "
            "compare with a profile without hooks for the net cost of the diagnostics."
        )
    return TimingProfile(
        label=label,
        device=str(device),
        steps=history.steps,
        images=int(timings["images"]),
        steps_per_epoch=per_epoch,
        epoch_images=_loader_images(loader),
        eval_every=eval_every,
        epochs=epochs,
        measured_s=measured,
        total_s=float(timings["total_s"]) + measured["evaluation"],
        epoch_s=epoch_s,
        eval_split_s=eval_full,
        eval_split_measured_s=eval_measured,
        notes=notes,
    )


def _snapshot(model, optimizer, scheduler) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        "training": model.training,
    }


def _restore(model, optimizer, scheduler, saved) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    model.train(saved["training"])
    optimizer.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- comparison
def compare_profiles(
    profiles: Sequence[TimingProfile] | Mapping[str, TimingProfile], baseline: str | None = None
):
    """Lever -> time per epoch -> speed-up, as a pandas DataFrame (one row per profile).

    Args:
        profiles: profiles in display order, or a dict label -> profile (the keys then
            replace the profiles' labels).
        baseline: label of the reference row (speed-up 1.0); default the first profile.

    Returns:
        DataFrame indexed by ``lever`` with columns: one per phase (seconds per epoch),
        ``epoch (s)``, ``images/s``, ``speed-up per epoch``, ``epochs``, ``run (s)``,
        ``speed-up per run`` (speed-ups: baseline time / this time).

    Raises:
        ValueError: no profiles, duplicate labels, or an unknown ``baseline``.
        TypeError: an entry is not a :class:`TimingProfile`.
    """
    import pandas as pd

    if isinstance(profiles, Mapping):
        items = list(profiles.items())
    else:
        items = [(getattr(p, "label", None), p) for p in profiles]
    if not items:
        raise ValueError("compare_profiles needs at least one TimingProfile.")
    for _, prof in items:
        if not isinstance(prof, TimingProfile):
            raise TypeError(f"compare_profiles expects TimingProfiles, got {type(prof).__name__}")
    labels = [label for label, _ in items]
    if len(set(labels)) != len(labels):
        raise ValueError(f"profile labels must be unique, got {labels}")
    baseline = labels[0] if baseline is None else baseline
    if baseline not in labels:
        raise ValueError(f"baseline {baseline!r} is not one of {labels}")
    base = dict(items)[baseline]
    rows = []
    for label, prof in items:
        row = {"lever": label, **{p: prof.epoch_s[p] for p in PHASES}}
        row.update(
            {
                "epoch (s)": prof.time_per_epoch_s,
                "images/s": prof.images_per_s,
                "speed-up per epoch": _ratio(base.time_per_epoch_s, prof.time_per_epoch_s),
                "epochs": prof.epochs,
                "run (s)": prof.time_per_run_s,
                "speed-up per run": _ratio(base.time_per_run_s, prof.time_per_run_s),
            }
        )
        rows.append(row)
    df = pd.DataFrame(rows).set_index("lever")
    df.attrs["baseline"] = baseline
    return df


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def plot_comparison(table, *, per: str = "epoch", ax=None, title: str | None = None):
    """Stacked horizontal bars of seconds per phase for each lever, speed-ups annotated.

    Args:
        table: the DataFrame of :func:`compare_profiles`.
        per: ``"epoch"`` (seconds per epoch) or ``"run"`` (seconds per run: epochs x epoch).
        ax: a matplotlib Axes to draw into; default a new figure.
        title: the title; a default names the baseline.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``per`` is not "epoch" or "run", or the table lacks the phase columns.
    """
    import matplotlib.pyplot as plt

    if per not in ("epoch", "run"):
        raise ValueError(f"per must be 'epoch' or 'run', got {per!r}")
    missing = [p for p in PHASES if p not in table.columns]
    if missing:
        raise ValueError(f"table lacks the phase columns {missing}; use compare_profiles()")
    if ax is None:
        fig, ax = plt.subplots(figsize=(9.5, 0.55 * len(table) + 1.6))
    else:
        fig = ax.figure
    factor = table["epochs"] if per == "run" else 1
    left = [0.0] * len(table)
    labels = list(table.index)
    for phase, colour in zip(PHASES, _PHASE_COLOURS, strict=True):
        widths = list(table[phase] * factor)
        ax.barh(labels, widths, left=left, color=colour, label=phase)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    speedups = table[f"speed-up per {per}"]
    for y, (total, speed) in enumerate(zip(left, speedups, strict=True)):
        ax.text(total, y, f" {total:.1f} s  (x{speed:.1f})", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left + [1e-9]) * 1.3)
    ax.set_xlabel(f"seconds per {per} (projected)")
    ax.set_ylabel("setup")
    baseline = table.attrs.get("baseline", labels[0])
    ax.set_title(title or f"Time per {per} by phase; (xN) = speed-up vs {baseline}")
    ax.legend(title="phase", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- raw steps, batch size
class Autocast(nn.Module):
    """Run a model under ``torch.autocast`` (mixed precision) and return float32 logits.

    On CUDA GPUs with bfloat16 support (Ampere and newer) ``Autocast(model)`` runs
    convolutions and matrix products in bfloat16 (half the memory traffic, tensor cores);
    weights, gradients and the optimizer stay float32, and bfloat16 has float32's range, so
    no loss scaling is needed. On a CPU it is usually slower, not faster.

    Args:
        model: the wrapped module (kept as ``self.model``).
        dtype: ``torch.bfloat16`` (default) or ``torch.float16``.
        device_type: ``"cuda"`` (default) or ``"cpu"``.

    Raises:
        ValueError: ``dtype`` not a 16-bit float type, or ``device_type`` unknown.
    """

    def __init__(
        self, model: nn.Module, dtype: torch.dtype = torch.bfloat16, device_type: str = "cuda"
    ):
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype!r}")
        if device_type not in ("cuda", "cpu", "mps"):
            raise ValueError(f"device_type must be 'cuda', 'cpu' or 'mps', got {device_type!r}")
        self.model = model
        self.dtype = dtype
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        return out.float()


def time_raw_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    *,
    steps: int = 10,
    warmup_steps: int = 1,
    loss_fn: nn.Module | None = None,
    device: torch.device | str | None = None,
    image_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    channels_last: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Forward+backward+step on one fixed batch resident on the device: the loop's limit.

    No data loading, no evaluation, no hooks: the fastest a training step of this model,
    optimizer and batch size can go on this device. The model's and optimizer's state are
    changed (they train on random data); use fresh copies.

    Args:
        model, optimizer: as for training, model already on ``device``.
        batch_size: images per step (int >= 1).
        steps: timed steps (int >= 1); warmup_steps: untimed steps first (int >= 0).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        device: default the model's device.
        image_shape: ``(C, H, W)`` of the random float32 images in [0, 1].
        num_classes: labels are random int64 in ``0..num_classes-1``.
        channels_last: put the batch in ``torch.channels_last`` memory format.
        seed: seed of the random batch.

    Returns:
        ``{"step_s": seconds per step, "images_per_s": images/s, "batch_size": ...}``.

    Raises:
        ValueError: ``batch_size`` or ``steps`` < 1, ``warmup_steps`` < 0.
        torch.OutOfMemoryError: the batch does not fit on the GPU.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("steps", steps)
    _check_positive_int("warmup_steps", warmup_steps, minimum=0)
    device = _model_device(model) if device is None else torch.device(device)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, *image_shape, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    model.train()

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(warmup_steps):
        one_step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    synchronize(device)
    step_s = (time.perf_counter() - t0) / steps
    return {"batch_size": batch_size, "step_s": step_s, "images_per_s": batch_size / step_s}


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or "out of memory" in str(err).lower()


def batch_size_sweep(
    make_model: Callable[[], nn.Module],
    *,
    device: torch.device | str,
    start: int = 32,
    max_batch_size: int = 4096,
    memory_cap_bytes: int | None = None,
    steps: int = 3,
    make_optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] | None = None,
    channels_last: bool = False,
):
    """Throughput by batch size: double from ``start`` until out of memory, a cap, or the max.

    For each batch size a fresh model (``make_model()`` moved to ``device``) and optimizer
    (default Adam) run :func:`time_raw_steps`. On CUDA the peak memory of each size is
    recorded; the sweep stops before a size whose doubled peak would exceed
    ``memory_cap_bytes`` (default: half of the GPU's memory, to leave room for data and
    evaluation), and at the first out-of-memory error (which is caught and recorded).
    On CPU and MPS memory is not the limit; the sweep runs up to ``max_batch_size``.

    Why bigger is faster on a GPU: thousands of cores need large batches to be busy, and
    per-step overheads (kernel launches, the optimizer step over all 0.55 M parameters) are
    shared by more images. On a CPU the few cores are already busy at small batches, so
    throughput levels off (and can fall once activations outgrow the caches).

    Args:
        make_model: builds a fresh model (e.g. ``lambda: build_cnn("tanh")``).
        device: where to run.
        start: first batch size (int >= 1); max_batch_size: the largest tried.
        memory_cap_bytes: CUDA only; peak memory allowed.
        steps: timed steps per batch size.
        make_optimizer: ``params -> optimizer``; default ``torch.optim.Adam(params, lr=1e-3)``.
        channels_last: model and batch in ``torch.channels_last`` memory format.

    Returns:
        DataFrame with columns ``batch size``, ``images/s``, ``step (ms)``,
        ``peak memory (MB)`` (NaN off CUDA), ``status`` ("ok" or "out of memory").
        ``df.attrs["largest_ok"]`` is the largest batch size that ran,
        ``df.attrs["best"]`` the one with the highest images/s.

    Raises:
        ValueError: ``start``/``max_batch_size``/``steps`` not positive or ``start > max_batch_size``.
    """
    import pandas as pd

    _check_positive_int("start", start)
    _check_positive_int("max_batch_size", max_batch_size)
    _check_positive_int("steps", steps)
    if start > max_batch_size:
        raise ValueError(f"start={start} must be <= max_batch_size={max_batch_size}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and memory_cap_bytes is None:
        memory_cap_bytes = torch.cuda.get_device_properties(device).total_memory // 2
    make_optimizer = make_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
    rows = []
    batch = start
    while batch <= max_batch_size:
        row, peak = _sweep_one(make_model, make_optimizer, batch, device, steps, channels_last)
        rows.append(row)
        if row["status"] != "ok":
            break
        if cuda and memory_cap_bytes is not None and 2 * peak > memory_cap_bytes:
            break
        batch *= 2
    df = pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
    df.attrs["largest_ok"] = int(ok["batch size"].max()) if len(ok) else None
    df.attrs["best"] = int(ok.loc[ok["images/s"].idxmax(), "batch size"]) if len(ok) else None
    return df


def _sweep_one(make_model, make_optimizer, batch, device, steps, channels_last):
    cuda = device.type == "cuda"
    model = make_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters())
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    result = None
    try:
        result = time_raw_steps(
            model, optimizer, batch, steps=steps, device=device, channels_last=channels_last
        )
    except RuntimeError as err:
        if not _is_oom(err):
            raise
    peak = torch.cuda.max_memory_allocated(device) if cuda and result is not None else 0
    del model, optimizer
    if cuda:  # outside the except block, so the failed step's tensors can be freed
        torch.cuda.empty_cache()
    if result is None:
        nan = math.nan
        row = {
            "images/s": nan,
            "step (ms)": nan,
            "peak memory (MB)": nan,
            "status": "out of memory",
        }
        return {"batch size": batch, **row}, math.inf
    return {
        "batch size": batch,
        "images/s": result["images_per_s"],
        "step (ms)": 1000 * result["step_s"],
        "peak memory (MB)": peak / 2**20 if cuda else math.nan,
        "status": "ok",
    }, peak
