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
happens to read a result first). :class:`ProfileOptions` holds how it measures and projects.

Timings on a shared machine vary from one moment to the next, so a figure worth comparing is
the median of several rounds: :func:`repeat_profiles` measures setups in interleaved rounds
(A, B, A, B, ...; a change in the machine's load hits all of them alike) and keeps each one's
median round with the others for the spread (:attr:`TimingProfile.rounds`).

Also here: :func:`compare_profiles` / :func:`plot_comparison` (lever -> time per epoch ->
speed-up), :func:`time_raw_steps` (forward+backward+step on one fixed resident batch: the
limit any data pipeline can reach), :func:`batch_size_sweep` (throughput by batch size, on a
GPU doubling until out of memory or a memory cap), :func:`fastest_memory_format` and
:func:`fastest_precision` (the memory layout and the arithmetic that train fastest here,
measured) and :class:`Autocast` (mixed precision).

The tutorial's first strategy (Numerics of ML, Tutorial 11, "Debugging Strategy I": make the
run fast enough to iterate) is what notebook 02 measures with these tools.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nbhelpers import state
from nbhelpers.display import Report
from nbhelpers.threads import ThreadPolicy, check_threads
from nbhelpers.train import History, TrainOptions, evaluate, synchronize, train
from nbhelpers.validate import integer, one_of, positive_int

__all__ = [
    "MEMORY_FORMATS", "PHASES", "PRECISIONS", "Autocast", "ProfileOptions", "TimingProfile", "batch_size_sweep",
    "compare_profiles", "count_operations", "fastest_memory_format", "fastest_precision", "median_profile",
    "plot_comparison", "profile_training", "repeat_profiles", "time_raw_steps", "with_precision",
]  # fmt: skip

#: The phases of a training epoch, in table order.
PHASES: tuple[str, ...] = ("data loading", "forward/backward/step", "evaluation", "diagnostics")
_PHASE_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2")
#: Training phases -> their key in :attr:`nbhelpers.train.History.timings`.
_TRAIN_KEYS = {
    "data loading": "data_s", "forward/backward/step": "compute_s", "diagnostics": "diagnostics_s",
}  # fmt: skip


# --------------------------------------------------------------------------- result
@dataclass(repr=False)
class TimingProfile(Report):
    """What :func:`profile_training` measured, and its projection to one epoch.

    Shows as its :meth:`table` and :meth:`summary` (plain text, or HTML in a notebook).

    Attributes:
        label: a name for the setup (e.g. ``"handover"``), used in tables and charts.
        device: the training device as a string.
        steps: training steps measured (after the warm-up).
        images: training images in those steps.
        steps_per_epoch: optimizer steps in one epoch (from the train loader).
        epoch_images: training images in one epoch (None if the loader does not say).
        eval_every: evaluation every this many epochs (0: never) for the projection.
        epochs: epochs of the run this setup stands for (for the projected run time).
        train_s: training phase (data loading, forward/backward/step, diagnostics) ->
            seconds measured over the ``steps``.
        train_total_s: wall-clock seconds of the timed training steps, measured
            independently of the phases.
        eval_split_s: split -> projected seconds of one full evaluation of that split.
        eval_split_measured_s: split -> seconds measured for that split (its timed batches).
        notes: caveats about the measurement (e.g. a hook that runs the backward pass).
        rounds: every round of a repeated measurement (:func:`median_profile`), this one
            among them; empty for a single measurement.
        threads: CPU intra-op threads of the measurement (None: not on a CPU).
    """

    label: str
    device: str
    steps: int
    images: int
    steps_per_epoch: int
    epoch_images: int | None
    eval_every: int
    epochs: int
    train_s: dict[str, float]
    train_total_s: float
    eval_split_s: dict[str, float] = field(default_factory=dict)
    eval_split_measured_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rounds: tuple[TimingProfile, ...] = ()
    threads: int | None = None

    @property
    def round_epoch_s(self) -> list[float]:
        """Projected seconds per epoch of every round (just this one's without rounds)."""
        return [r.time_per_epoch_s for r in self.rounds] or [self.time_per_epoch_s]

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / this profile's epoch time: 0.1 means the rounds lie
        within 10% of the median; 0 for a single measurement."""
        epoch_s = self.round_epoch_s
        return _ratio(max(epoch_s) - min(epoch_s), self.time_per_epoch_s, 0.0)

    @property
    def measured_s(self) -> dict[str, float]:
        """Phase -> seconds measured (``evaluation``: the timed batches of all splits)."""
        evaluation = sum(self.eval_split_measured_s.values())
        return {p: self.train_s[p] if p in self.train_s else evaluation for p in PHASES}

    @property
    def total_s(self) -> float:
        """Wall-clock seconds of the whole measurement (training steps plus timed evaluation)."""
        return self.train_total_s + sum(self.eval_split_measured_s.values())

    @property
    def epoch_s(self) -> dict[str, float]:
        """Phase -> projected seconds per epoch: training phases scaled from ``steps`` to
        ``steps_per_epoch``; evaluation of the full splits divided by ``eval_every``."""
        evaluation = _ratio(sum(self.eval_split_s.values()), self.eval_every, 0.0)
        scale = self.steps_per_epoch / self.steps
        return {p: self.train_s[p] * scale if p in self.train_s else evaluation for p in PHASES}

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
        images = self.epoch_images or self.images / self.steps * self.steps_per_epoch
        return _ratio(images, self.time_per_epoch_s, 0.0)

    @property
    def train_images_per_s(self) -> float:
        """Training-loop throughput, images/s: measured images / (data loading +
        forward/backward/step) seconds, without evaluation and diagnostics."""
        seconds = self.measured_s["data loading"] + self.measured_s["forward/backward/step"]
        return _ratio(self.images, seconds, 0.0)

    def table(self):
        """The profile as a pandas DataFrame.

        Rows: the four :data:`PHASES` and ``"total"``. Columns: ``measured (s)`` (seconds of
        this measurement), ``per epoch (s)`` (projected), ``share (%)`` (of the projected
        epoch). ``df.attrs`` holds ``label``, ``images_per_s`` and ``time_per_epoch_s``.
        """
        import pandas as pd

        total = self.time_per_epoch_s
        rows = [
            (p, self.measured_s[p], self.epoch_s[p], _ratio(100.0 * self.epoch_s[p], total, 0.0))
            for p in PHASES
        ]
        rows.append(("total", sum(self.measured_s.values()), total, 100.0))
        df = pd.DataFrame(rows, columns=["phase", "measured (s)", "per epoch (s)", "share (%)"])
        df = df.set_index("phase")
        df.attrs.update(label=self.label, images_per_s=self.images_per_s, time_per_epoch_s=total)
        return df

    def to_frame(self):
        """:meth:`table` with the phase as a column (the display's table)."""
        return self.table().reset_index()

    def project(
        self, label: str, *, epochs=None, eval_splits=None, eval_every=None
    ) -> TimingProfile:
        """The same measurement projected to fewer epochs or less evaluation (no new timing).

        Training phases do not depend on these settings, and every evaluation split was
        timed on its own, so the projection needs no new measurement.

        Args:
            label: name of the new profile.
            epochs: epochs of the run (int >= 1; default: unchanged).
            eval_splits: which of the measured splits to keep (default: all; ``()``: none).
            eval_every: evaluation every this many epochs (0: never; default: unchanged).

        Returns:
            A new :class:`TimingProfile`.

        Raises:
            ValueError: a split that was not measured, or a bad ``epochs``/``eval_every``.
        """
        epochs = self.epochs if epochs is None else positive_int("epochs", epochs)
        every = integer("eval_every", self.eval_every if eval_every is None else eval_every, 0)
        splits = tuple(self.eval_split_s) if eval_splits is None else tuple(eval_splits)
        unknown = [s for s in splits if s not in self.eval_split_s]
        if unknown:
            raise ValueError(
                f"splits {unknown} were not measured; measured: {list(self.eval_split_s)}"
            )
        kept = splits if every else ()
        return dataclasses.replace(
            self, label=label, epochs=epochs, eval_every=every,
            eval_split_s={s: self.eval_split_s[s] for s in kept},
            eval_split_measured_s={s: self.eval_split_measured_s[s] for s in kept},
            notes=[*self.notes, f"projected from '{self.label}' (no new timing)"],
            rounds=tuple(
                r.project(label, epochs=epochs, eval_splits=splits, eval_every=every)
                for r in self.rounds
            ),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<TimingProfile {self.summary()}>"

    def summary(self) -> str:
        """One line: label, epoch time, images/s and the largest phase."""
        top = max(PHASES, key=lambda p: self.epoch_s[p])
        share = _ratio(self.epoch_s[top], self.time_per_epoch_s, 0.0)
        epoch_s = self.round_epoch_s
        spread = (
            f" (median of {len(epoch_s)} rounds: {min(epoch_s):.1f}-{max(epoch_s):.1f} s)"
            if len(epoch_s) > 1
            else ""
        )
        return (
            f"{self.label}: {self.time_per_epoch_s:.1f} s per epoch{spread} "
            f"({self.steps_per_epoch} steps), {self.images_per_s:,.0f} images/s; "
            f"largest phase: {top} ({share:.0%})"
        )

    def plot(self, ax=None):
        """Bar chart of the projected seconds per epoch by phase; returns the Figure."""
        fig, ax = _axes(ax, (7, 2.8))
        values = [self.epoch_s[p] for p in PHASES]
        bars = ax.barh(list(PHASES), values, color=_PHASE_COLOURS)
        total = self.time_per_epoch_s
        for bar, value in zip(bars, values, strict=True):
            text = f" {value:.2f} s ({_ratio(value, total, 0.0):.0%})"
            ax.text(
                bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=9
            )
        ax.invert_yaxis()
        ax.set(
            xlabel="seconds per epoch (projected)",
            ylabel="phase",
            xlim=(0, max(values + [1e-9]) * 1.35),
        )
        ax.set_title(
            f"Where the time goes: {self.label} on {self.device} "
            f"({total:.1f} s per epoch, {self.images_per_s:,.0f} images/s)"
        )
        fig.tight_layout()
        return fig


def _ratio(numerator: float, denominator: float, otherwise: float = math.inf) -> float:
    return numerator / denominator if denominator > 0 else otherwise


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize) if ax is None else (ax.figure, ax)


# --------------------------------------------------------------------------- the profiler
@dataclass(frozen=True)
class ProfileOptions:
    """How :func:`profile_training` measures and projects (every field can also be passed
    to it by name).

    Attributes:
        eval_max_batches: at most this many batches timed per split (None: all), e.g.
            ``steps`` to keep profiling short whatever the split size; the time is scaled
            up to the whole split.
        eval_every: evaluation every this many epochs for the projection (0: never).
        warmup_steps: untimed steps first (int >= 0); hooks are not attached during them.
        epochs: epochs of the run this setup stands for (only for ``time_per_run_s``).
        label: the setup's name in tables and charts.
        restore: put the model's, optimizer's and scheduler's state back afterwards
            (:mod:`nbhelpers.state`), so profiling does not change the training that follows.
        loss_fn, scheduler_step, zero_grad, device: as in :class:`nbhelpers.train.TrainOptions`.
        threads: CPU threads of the whole measurement (training steps and evaluation), as in
            :class:`nbhelpers.train.TrainOptions`: "auto" (chosen once, before the warm-up),
            an int, or None (torch's setting as it is).

    Raises:
        ValueError: any value outside its range (naming it).
    """

    eval_max_batches: int | None = None
    eval_every: int = 1
    warmup_steps: int = 1
    epochs: int = 1
    label: str = "run"
    restore: bool = True
    loss_fn: nn.Module | None = None
    scheduler_step: str = "batch"
    zero_grad: bool = True
    device: torch.device | str | None = None
    threads: int | str | None = "auto"

    def __post_init__(self) -> None:
        check_threads("threads", self.threads)
        positive_int("eval_max_batches", self.eval_max_batches, allow_none=True)
        integer("eval_every", self.eval_every, 0)
        integer("warmup_steps", self.warmup_steps, 0)
        positive_int("epochs", self.epochs)

    def train_options(self, device: torch.device) -> TrainOptions:
        """The :class:`nbhelpers.train.TrainOptions` of the timed steps (no evaluation)."""
        return TrainOptions(
            loss_fn=self.loss_fn, scheduler_step=self.scheduler_step, zero_grad=self.zero_grad,
            eval_every=0, progress=False, device=device, profile=True, threads=None,
        )  # fmt: skip


def _loader_images(loader: Any) -> int | None:
    """Number of samples one pass over ``loader`` yields, when the loader says."""
    size = getattr(loader, "dataset_size", None)
    if isinstance(size, int):
        return size
    try:
        n = len(loader.dataset)
    except (AttributeError, TypeError):
        return None
    batch = getattr(loader, "batch_size", None)
    return n // batch * batch if getattr(loader, "drop_last", False) and batch else n


def _time_evaluation(model, eval_loaders, opts: ProfileOptions, device) -> tuple[dict, dict]:
    """Time evaluation of every split (its first batches); return (split -> measured s, full s)."""
    measured, full = {}, {}
    for split, loader in eval_loaders.items():
        n_batches = len(loader) if hasattr(loader, "__len__") else None
        k = opts.eval_max_batches  # batches timed: all, or at most the cap
        if n_batches is not None:
            k = min(k or n_batches, n_batches)
        batches = loader if k is None or k == n_batches else itertools.islice(loader, k)
        synchronize(device)
        t0 = time.perf_counter()
        n = evaluate(model, batches, opts.loss_fn, device)["n"]
        synchronize(device)
        measured[split] = time.perf_counter() - t0
        size = _loader_images(loader)
        full[split] = measured[split] * (size / n if size else n_batches / k if n_batches else 1.0)
    return measured, full


def profile_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable,
    *,
    steps: int,
    eval_loaders: Mapping[str, Iterable] | None = None,
    hooks: Sequence[Any] = (),
    scheduler: Any | None = None,
    options: ProfileOptions | None = None,
    **option_fields: Any,
) -> TimingProfile:
    """Time a few training steps of a setup and project them to one epoch.

    Runs ``warmup_steps`` untimed steps (one-off costs: memory allocation, kernel
    selection, worker start-up), then ``steps`` timed steps with
    :func:`nbhelpers.train.train` (``profile=True``: the device is synchronised at every
    phase boundary, so on a GPU each phase is charged with its own work), then times
    :func:`nbhelpers.train.evaluate` on (the first ``eval_max_batches`` batches of) every
    evaluation loader.

    Projection to one epoch (seconds): data loading, forward/backward/step and diagnostics
    per step times the steps of one epoch (``len(train_loader)``); evaluation scaled from the
    timed batches to the whole split (by images), summed over splits and divided by
    ``eval_every`` (evaluating every ``k`` epochs costs ``1/k`` of an evaluation per epoch).

    Caveats: a hook that runs the backward pass itself (Cockpit does, inside its context)
    has that backward pass counted as diagnostics, so "forward/backward/step" then holds
    forward and step only; compare with a profile without hooks for the net cost (a note
    says so). Hooks that act every ``n`` steps are sampled as often as the ``steps`` allow;
    time at least ``n`` steps for a fair share.

    Args:
        model: maps float32 ``(B, 3, 32, 32)`` to ``(B, C)`` logits; already on the device.
        optimizer: optimizer over the model's parameters.
        train_loader: iterable of ``(x, y)`` batches with ``len()`` (the steps of one epoch).
        steps: timed training steps (int >= 1).
        eval_loaders: split name -> loader (e.g. ``{"train": ..., "valid": ..., "test": ...}``);
            None or empty: no evaluation.
        hooks: training hooks (see :mod:`nbhelpers.train`), e.g. a Cockpit hook.
        scheduler: the learning-rate scheduler, stepped as in training.
        options: a :class:`ProfileOptions` (default: its defaults).
        **option_fields: :class:`ProfileOptions` fields by name, e.g. ``eval_every=2,
            label="handover"`` (they replace those of ``options``).

    Returns:
        A :class:`TimingProfile` (``.table()``, ``.plot()``, ``.summary()``).

    Raises:
        ValueError: ``steps`` < 1, an option out of range (see :class:`ProfileOptions`), a
            train loader without ``len()``, or a train loader that
            yields no batches.
        TypeError: ``model`` is not an ``nn.Module``, ``eval_loaders`` is not a mapping, or
            an unknown option name.
    """
    opts = dataclasses.replace(options or ProfileOptions(), **option_fields)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if eval_loaders is not None and not isinstance(eval_loaders, Mapping):
        raise TypeError(
            f"eval_loaders must be a dict of split name -> loader, got {eval_loaders!r:.80}"
        )
    positive_int("steps", steps)
    if not hasattr(train_loader, "__len__"):
        raise ValueError("train_loader has no len(): the steps of one epoch must be known.")
    per_epoch = len(train_loader)
    device = state.model_device(model) if opts.device is None else torch.device(opts.device)
    train_opts = opts.train_options(device)
    saved = state.snapshot(model, optimizer, scheduler) if opts.restore else None
    threads = ThreadPolicy(opts.threads, device)  # one choice for all of the measurement
    try:
        threads.begin(model, getattr(train_loader, "batch_size", None))
        used = torch.get_num_threads() if device.type == "cpu" else None
        if opts.warmup_steps:
            train(model, optimizer, train_loader, epochs=opts.warmup_steps, scheduler=scheduler,
                  options=train_opts, max_steps=opts.warmup_steps)  # fmt: skip
        history = train(model, optimizer, train_loader, epochs=steps, scheduler=scheduler,
                        hooks=tuple(hooks), options=train_opts, max_steps=steps)  # fmt: skip
        if history.steps == 0:
            raise ValueError("train_loader yielded no batches; cannot profile.")
        evaluation = _time_evaluation(
            model, dict(eval_loaders or {}) if opts.eval_every else {}, opts, device
        )
    finally:
        threads.close()
        if saved is not None:
            state.restore(model, saved, optimizer, scheduler)
    profile = _profile(history, evaluation, per_epoch, _loader_images(train_loader), opts, hooks)
    return dataclasses.replace(profile, threads=used)


def _profile(history: History, evaluation, per_epoch, epoch_images, opts, hooks) -> TimingProfile:
    eval_measured, eval_full = evaluation
    notes = []
    if any(callable(getattr(h, "backward", None)) for h in hooks):
        notes.append(
            "A hook runs the backward pass itself, so 'diagnostics' includes the backward pass; "
            "compare with a profile without hooks for the net cost of the diagnostics."
        )
    timings = history.timings
    return TimingProfile(
        label=opts.label, device=history.device, steps=history.steps,
        images=int(timings["images"]), steps_per_epoch=per_epoch, epoch_images=epoch_images,
        eval_every=opts.eval_every, epochs=opts.epochs,
        train_s={phase: float(timings[key]) for phase, key in _TRAIN_KEYS.items()},
        train_total_s=float(timings["total_s"]), eval_split_s=eval_full,
        eval_split_measured_s=eval_measured, notes=notes,
    )  # fmt: skip


def median_profile(profiles: Sequence[TimingProfile]) -> TimingProfile:
    """The round with the median time per epoch (the lower one of an even count), carrying all
    rounds in :attr:`TimingProfile.rounds` for the spread. Its phases are one real measurement,
    so they add up to its total.

    Raises:
        ValueError: no profiles.
        TypeError: an entry is not a :class:`TimingProfile`.
    """
    profiles = list(profiles)
    if not profiles:
        raise ValueError("median_profile needs at least one TimingProfile.")
    if not all(isinstance(p, TimingProfile) for p in profiles):
        raise TypeError("median_profile expects TimingProfiles")
    ranked = sorted(profiles, key=lambda p: p.time_per_epoch_s)
    middle = ranked[(len(ranked) - 1) // 2]
    single = tuple(dataclasses.replace(p, rounds=()) for p in profiles)
    return dataclasses.replace(middle, rounds=single)


def repeat_profiles(
    measure: Mapping[str, Callable[[], TimingProfile]], rounds: int = 3
) -> dict[str, TimingProfile]:
    """Measure every setup ``rounds`` times, interleaved, and keep each one's median round.

    Round 1 measures every setup once in order, then round 2, and so on, so that a change in
    the machine's load (another program starting or ending) hits all setups alike instead of
    one of them.

    Args:
        measure: label -> a function that builds its setup afresh and returns one
            :class:`TimingProfile` (e.g. ``lambda: profile_training(...)``).
        rounds: rounds (int >= 1).

    Returns:
        label -> :func:`median_profile` of its rounds, labelled with the key.

    Raises:
        ValueError: ``rounds`` < 1 or no setups.
    """
    positive_int("rounds", rounds)
    if not measure:
        raise ValueError("repeat_profiles needs at least one setup to measure.")
    results: dict[str, list[TimingProfile]] = {label: [] for label in measure}
    for _ in range(rounds):
        for label, fn in measure.items():
            results[label].append(dataclasses.replace(fn(), label=label))
    return {label: median_profile(profiles) for label, profiles in results.items()}


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
        ``epoch (s)`` (the median round's), ``spread (%)`` (slowest minus fastest round, in %
        of ``epoch (s)``; 0 for a single measurement), ``rounds``, ``images/s``,
        ``speed-up per epoch``, ``epochs``, ``run (s)``, ``speed-up per run`` (speed-ups:
        baseline time / this time, of the medians).

    Raises:
        ValueError: no profiles, duplicate labels, or an unknown ``baseline``.
        TypeError: an entry is not a :class:`TimingProfile`.
    """
    import pandas as pd

    items = (
        list(profiles.items())
        if isinstance(profiles, Mapping)
        else [(getattr(p, "label", None), p) for p in profiles]
    )
    if not items:
        raise ValueError("compare_profiles needs at least one TimingProfile.")
    wrong = [type(p).__name__ for _, p in items if not isinstance(p, TimingProfile)]
    if wrong:
        raise TypeError(f"compare_profiles expects TimingProfiles, got {wrong[0]}")
    labels = [label for label, _ in items]
    if len(set(labels)) != len(labels):
        raise ValueError(f"profile labels must be unique, got {labels}")
    baseline = one_of("baseline", labels[0] if baseline is None else baseline, labels)
    base = dict(items)[baseline]
    rows = [
        {
            "lever": label, **{p: prof.epoch_s[p] for p in PHASES},
            "epoch (s)": prof.time_per_epoch_s, "spread (%)": 100 * prof.spread,
            "rounds": len(prof.round_epoch_s), "images/s": prof.images_per_s,
            "speed-up per epoch": _ratio(base.time_per_epoch_s, prof.time_per_epoch_s),
            "epochs": prof.epochs, "run (s)": prof.time_per_run_s,
            "speed-up per run": _ratio(base.time_per_run_s, prof.time_per_run_s),
        }
        for label, prof in items
    ]  # fmt: skip
    df = pd.DataFrame(rows).set_index("lever")
    df.attrs["baseline"] = baseline
    df.attrs["round_epoch_s"] = {label: prof.round_epoch_s for label, prof in items}
    return df


def plot_comparison(table, *, per: str = "epoch", ax=None, title: str | None = None):
    """Stacked horizontal bars of seconds per phase for each lever, speed-ups annotated; a
    black line across a bar's end spans its fastest to slowest round (repeated measurements).

    Args:
        table: the DataFrame of :func:`compare_profiles`.
        per: ``"epoch"`` (seconds per epoch) or ``"run"`` (seconds per run: epochs x epoch).
        ax: a matplotlib Axes to draw into; default a new figure.
        title: the title; a default names the baseline.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``per`` is not "epoch" or "run".
        KeyError: the table lacks a phase column (it is not from :func:`compare_profiles`).
    """
    one_of("per", per, ("epoch", "run"))
    fig, ax = _axes(ax, (9.5, 0.55 * len(table) + 1.6))
    factor = table["epochs"] if per == "run" else 1
    left = [0.0] * len(table)
    labels = list(table.index)
    for phase, colour in zip(PHASES, _PHASE_COLOURS, strict=True):
        widths = list(table[phase] * factor)
        ax.barh(labels, widths, left=left, color=colour, label=phase)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    rounds, ends = table.attrs.get("round_epoch_s", {}), list(left)
    for y, label in enumerate(labels):
        scale = table["epochs"].iloc[y] if per == "run" else 1
        times = [t * scale for t in rounds.get(label, [])]
        if len(times) > 1 and max(times) > min(times):
            ax.plot([min(times), max(times)], [y, y], color="black", linewidth=1.2)
            ends[y] = max(ends[y], max(times))
    for y, (total, speed) in enumerate(zip(left, table[f"speed-up per {per}"], strict=True)):
        ax.text(ends[y], y, f" {total:.1f} s  (x{speed:.1f})", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set(
        xlim=(0, max(ends + [1e-9]) * 1.3), xlabel=f"seconds per {per} (projected)", ylabel="setup"
    )
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
    no loss scaling is needed. On a CPU it depends on the hardware: with bfloat16
    instructions (e.g. AVX512-BF16) large batches run faster, elsewhere bfloat16 is emulated
    and slower; :func:`fastest_precision` measures it.

    Args:
        model: the wrapped module (kept as ``self.model``).
        dtype: ``torch.bfloat16`` (default) or ``torch.float16``.
        device_type: ``"cuda"`` (default), ``"cpu"`` or ``"mps"`` (torch refuses others on
            the first forward pass).

    Raises:
        ValueError: ``dtype`` not a 16-bit float type (torch would only warn and run in
            float32).
    """

    def __init__(
        self, model: nn.Module, dtype: torch.dtype = torch.bfloat16, device_type: str = "cuda"
    ):
        super().__init__()
        self.model, self.device_type = model, device_type
        self.dtype = one_of("dtype", dtype, (torch.bfloat16, torch.float16))

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
    device: torch.device | str | None = None,
    channels_last: bool = False,
    threads: int | str | None = "auto",
) -> dict[str, float]:
    """Forward+backward+step on one fixed batch resident on the device: the loop's limit.

    No data loading, no evaluation, no hooks: the fastest a training step of this model,
    optimizer and batch size can go on this device. The batch is the series' shape: float32
    images ``(batch_size, 3, 32, 32)`` uniform in [0, 1] and int64 labels 0..9 (seed 0), with
    cross-entropy. The model's and optimizer's state are changed (they train on random
    data); use fresh copies.

    Args:
        model, optimizer: as for training, model already on ``device``.
        batch_size: images per step (int >= 1).
        steps: timed steps (int >= 1); warmup_steps: untimed steps first (int >= 0).
        device: default the model's device.
        channels_last: put the batch in ``torch.channels_last`` memory format.
        threads: CPU threads, as in :class:`nbhelpers.train.TrainOptions` ("auto": chosen as
            a training run would, so that the limit is the one a run meets).

    Returns:
        ``{"step_s": seconds per step, "images_per_s": images/s, "batch_size": ...,
        "threads": CPU threads used (None off the CPU)}``.

    Raises:
        ValueError: ``batch_size`` or ``steps`` < 1, ``warmup_steps`` < 0, a bad ``threads``.
        torch.OutOfMemoryError: the batch does not fit on the GPU.
    """
    positive_int("batch_size", batch_size)
    positive_int("steps", steps)
    integer("warmup_steps", warmup_steps, 0)
    device = state.model_device(model) if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, 32, 32, generator=gen).to(device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    model.train()

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    policy = ThreadPolicy(threads, device)
    try:
        policy.begin(model, batch_size)
        used = torch.get_num_threads() if device.type == "cpu" else None
        for _ in range(warmup_steps):
            one_step()
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            one_step()
        synchronize(device)
        step_s = (time.perf_counter() - t0) / steps
    finally:
        policy.close()
    return {
        "batch_size": batch_size, "step_s": step_s, "images_per_s": batch_size / step_s,
        "threads": used,
    }  # fmt: skip


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

    positive_int("steps", steps)
    integer("start", start, 1, positive_int("max_batch_size", max_batch_size))
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and memory_cap_bytes is None:
        memory_cap_bytes = torch.cuda.get_device_properties(device).total_memory // 2
    make_optimizer = make_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
    rows, batch = [], start
    while batch <= max_batch_size:
        row, peak = _sweep_one(make_model, make_optimizer, batch, device, steps, channels_last)
        rows.append(row)
        if row["status"] != "ok" or (cuda and 2 * peak > memory_cap_bytes):
            break
        batch *= 2
    df = pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
    df.attrs["largest_ok"] = int(ok["batch size"].max()) if len(ok) else None
    df.attrs["best"] = int(ok.loc[ok["images/s"].idxmax(), "batch size"]) if len(ok) else None
    return df


def _sweep_one(make_model, make_optimizer, batch, device, steps, channels_last):
    """One batch size of the sweep: its table row and peak memory (bytes; inf when out of memory)."""
    cuda = device.type == "cuda"
    model = make_model().to(device)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    optimizer = make_optimizer(model.parameters())
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = time_raw_steps(
            model, optimizer, batch, steps=steps, device=device, channels_last=channels_last
        )
    except torch.OutOfMemoryError:
        result = None
    peak = torch.cuda.max_memory_allocated(device) if cuda and result else 0
    del model, optimizer
    if cuda:  # outside the except block, so the failed step's tensors can be freed
        torch.cuda.empty_cache()
    nan = math.nan
    row = {"batch size": batch, "images/s": nan, "step (ms)": nan, "peak memory (MB)": nan}
    if result is None:
        return {**row, "status": "out of memory"}, math.inf
    row.update({"images/s": result["images_per_s"], "step (ms)": 1000 * result["step_s"]})
    row["status"] = "ok"
    if cuda:
        row["peak memory (MB)"] = peak / 2**20
    return row, peak


def count_operations(step: Callable[[], Any]) -> int:
    """How many tensor operations (calls into torch's ATen kernels) one call of ``step`` runs,
    e.g. a training step: forward, backward and the optimizer together.

    Counted with a ``TorchDispatchMode`` (the operations still run). On a CPU each operation
    that is large enough runs as one parallel region of the thread team, whose threads all
    wait at its end: the number says how often a step waits.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            _Counter.calls += 1
            return func(*args, **(kwargs or {}))

    with _Counter():
        step()
    return _Counter.calls


# --------------------------------------------------------------------------- memory format, precision
#: Memory layouts a model can train in: torch's default (NCHW) and channels_last (NHWC, each
#: pixel's channels side by side, which many convolution kernels prefer).
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

#: Arithmetic a model can train in: float32 throughout, or bfloat16 mixed precision
#: (:class:`Autocast`: convolutions and matrix products in bfloat16, weights, gradients and
#: the optimizer's state in float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def with_precision(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """``model`` itself for "fp32", ``Autocast(model, bfloat16)`` on ``device``'s type for "bf16".

    Raises:
        ValueError: a name not in :data:`PRECISIONS`.
    """
    dtype = PRECISIONS[one_of("precision", precision, PRECISIONS)]
    return model if dtype is None else Autocast(model, dtype, torch.device(device).type)


def _median_steps(
    setups: dict, batch_size: int, device: torch.device, rounds: int, threads
) -> dict:
    """Median seconds per training step of each setup ``name -> (model, optimizer,
    channels_last)``, timed with :func:`time_raw_steps` in ``rounds`` interleaved rounds (one
    warm-up step each first; one timed step per round, or more when a step is short, so that
    a round lasts about 20 ms). A setup other than the first that fails (RuntimeError: the
    device cannot train that way) gets ``inf``; the first one's error is raised."""
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    first = next(iter(setups))
    steps, policy = 1, ThreadPolicy(threads, device)  # one thread choice for all rounds
    try:
        policy.begin(setups[first][0], batch_size)
        for r in range(rounds):
            for name, (model, optimizer, channels_last) in setups.items():
                try:
                    timing = time_raw_steps(
                        model, optimizer, batch_size, steps=steps, warmup_steps=int(r == 0),
                        device=device, channels_last=channels_last, threads=None,
                    )  # fmt: skip
                except RuntimeError:
                    if name == first:
                        raise
                    timing = {"step_s": math.inf}
                seconds[name].append(timing["step_s"])
            steps = max(steps, min(10, int(0.02 / max(min(v[-1] for v in seconds.values()), 1e-6))))
    finally:
        policy.close()
    return {name: statistics.median(values) for name, values in seconds.items()}


def _check_search(batch_size: int, rounds: int, min_gain: float) -> None:
    from nbhelpers.validate import number

    positive_int("batch_size", batch_size)
    positive_int("rounds", rounds)
    number("min_gain", min_gain, 0, 1, high_open=True)


def fastest_memory_format(
    make_model: Callable[[], nn.Module],
    batch_size: int,
    *,
    device: torch.device | str,
    rounds: int = 3,
    min_gain: float = 0.05,
    threads: int | str | None = "auto",
) -> tuple[str, dict[str, float]]:
    """The memory layout in which a model's training step is fastest on ``device``, measured.

    Builds the model (``make_model()``, moved to ``device``) once per layout of
    :data:`MEMORY_FORMATS`, with Adam, and times :func:`time_raw_steps` on each in
    ``rounds`` interleaved rounds. channels_last is chosen only when its median step is at
    least ``min_gain`` faster: a layout within the noise keeps torch's default, and so does a
    device that cannot train in channels_last (an error while timing it). Uses the global
    random generator (model initialisation): seed afterwards.

    Args:
        make_model: builds a fresh model (e.g. ``lambda: build_cnn("relu", "batch", 8)``).
        batch_size: images per step (int >= 1).
        device: where to measure.
        rounds: interleaved rounds (int >= 1).
        min_gain: the fraction channels_last must gain, in [0, 1).
        threads: CPU threads, as in :func:`time_raw_steps`.

    Returns:
        ``(name, seconds)``: the fastest layout's name ("contiguous" or "channels_last") and
        layout -> median seconds per step.

    Raises:
        ValueError: ``batch_size`` or ``rounds`` < 1, ``min_gain`` outside [0, 1).
    """
    _check_search(batch_size, rounds, min_gain)
    device = torch.device(device)
    setups = {}
    for name, fmt in MEMORY_FORMATS.items():
        model = make_model().to(device).to(memory_format=fmt)
        setups[name] = (
            model,
            torch.optim.Adam(model.parameters(), lr=1e-3),
            name == "channels_last",
        )
    medians = _median_steps(setups, batch_size, device, rounds, threads)
    faster = medians["channels_last"] * (1 + min_gain) <= medians["contiguous"]
    return ("channels_last" if faster else "contiguous"), medians


def fastest_precision(
    make_model: Callable[[], nn.Module],
    batch_size: int,
    *,
    device: torch.device | str,
    memory_format: str = "contiguous",
    rounds: int = 3,
    min_gain: float = 0.05,
    threads: int | str | None = "auto",
) -> tuple[str, dict[str, float]]:
    """The arithmetic (:data:`PRECISIONS`) in which a model's training step is fastest, measured.

    As :func:`fastest_memory_format`, in the layout ``memory_format``: "bf16" is chosen only
    when its median step is at least ``min_gain`` faster than "fp32". Whether it is depends on
    the hardware: CPUs with bfloat16 instructions (e.g. AVX512-BF16) and recent GPUs run it
    faster, others emulate it and run it slower; a device that cannot run it at all (an
    error while timing) keeps "fp32".

    Returns:
        ``(name, seconds)``: "fp32" or "bf16", and precision -> median seconds per step.

    Raises:
        ValueError: ``batch_size`` or ``rounds`` < 1, ``min_gain`` outside [0, 1), an unknown
            ``memory_format``.
    """
    _check_search(batch_size, rounds, min_gain)
    fmt = MEMORY_FORMATS[one_of("memory_format", memory_format, MEMORY_FORMATS)]
    device = torch.device(device)
    setups = {}
    for name in PRECISIONS:
        model = make_model().to(device).to(memory_format=fmt)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        setups[name] = (
            with_precision(model, name, device),
            optimizer,
            memory_format == "channels_last",
        )
    medians = _median_steps(setups, batch_size, device, rounds, threads)
    faster = medians["bf16"] * (1 + min_gain) <= medians["fp32"]
    return ("bf16" if faster else "fp32"), medians
