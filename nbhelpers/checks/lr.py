"""Checks of the learning rate: the schedule over the planned steps, its size, a range test.

- :func:`simulate_lr`: the learning rate at every planned optimizer step, from copies of the
  optimizer and scheduler (the learner's own are never stepped).
- :func:`check_lr_schedule`: a schedule that grows without a warm-up intent, or one that
  collapses long before the end (a per-epoch schedule stepped every batch, a factor below 1
  applied at every step); with a plot.
- :func:`check_learning_rate`: a rule-of-thumb lower bound per optimizer family, on the
  learning rate the schedule uses for most of the run.
- :func:`lr_range_test` / :func:`check_lr_range`: the LR range test (Smith 2017, "Cyclical
  Learning Rates for Training Neural Networks", arXiv:1506.01186; popularised as fastai's
  ``lr_find``): train a copy for ~50-100 steps with an exponentially increasing learning rate,
  plot loss against learning rate, suggest a learning rate.
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nbhelpers.state import model_device
from nbhelpers.validate import integer, invalid, number, one_of, positive_int

from .access import untouched
from .results import HINTS, CheckResult, fmt, new_figure, not_applicable

#: Optimizers that scale steps per parameter (Adam family, RMSprop ...): their usual learning
#: rates are around 1e-3 (Adam's default, Kingma & Ba 2015).
ADAPTIVE = "Adam AdamW NAdam RAdam Adamax RMSprop Adagrad Adadelta SparseAdam Adafactor".split()
#: Schedulers whose growing phase is intended.
_INTENDED_GROWTH = ("OneCycleLR", "CyclicLR", "LinearLR", "CosineAnnealingWarmRestarts")
#: Schedulers usually sized in epochs: stepped every batch they decay far too early.
_PER_EPOCH = ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "PolynomialLR")
#: A collapse: below this fraction of the peak before 90% of the planned steps.
_COLLAPSE = 1e-3
#: Rule-of-thumb lowest learning rates: Adam family (default 1e-3, Kingma & Ba 2015) and SGD.
_ADAPTIVE_MIN, _SGD_MIN = 1e-4, 1e-3
_MAX_SIM_STEPS = 1_000_000
#: LR range test: smoothing of the loss (exponential moving average), the divergence stop
#: (smoothed loss above 4x its minimum, fastai's rule) and the smallest drop that counts.
_BETA, _DIVERGE, _MIN_DROP = 0.8, 4.0, 0.05


def _lr_of(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def simulate_lr(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    steps: int,
    *,
    scheduler_step: str = "batch",
    steps_per_epoch: int | None = None,
) -> list[float]:
    """The learning rate (of the first parameter group) at each of ``steps`` optimizer steps.

    The scheduler is stepped on a copy: ``copy.deepcopy`` of (optimizer, scheduler) with the
    parameters and optimizer-state tensors shared, not copied (the copy is never asked to
    update them), so this is cheap and the learner's scheduler keeps its position.

    Args:
        optimizer: the learner's optimizer.
        scheduler: the learner's LR scheduler (None: a constant learning rate).
        steps: number of optimizer steps planned (batches per epoch x epochs).
        scheduler_step: ``"batch"`` (``scheduler.step()`` after every optimizer step) or
            ``"epoch"`` (after every ``steps_per_epoch`` steps).
        steps_per_epoch: batches per epoch (needed for ``"epoch"``).

    Returns:
        A list of ``steps`` floats.

    Raises:
        ValueError: ``steps`` not an int in 1..1,000,000, an unknown ``scheduler_step``,
            ``"epoch"`` without a positive ``steps_per_epoch``, or a ``ReduceLROnPlateau`` (it
            needs the validation metric).
    """
    integer("steps", steps, 1, _MAX_SIM_STEPS)
    one_of("scheduler_step", scheduler_step, ("batch", "epoch"))
    if scheduler_step == "epoch":
        positive_int("steps_per_epoch", steps_per_epoch)
    if scheduler is None:
        return [_lr_of(optimizer)] * steps
    if type(scheduler).__name__ == "ReduceLROnPlateau":
        raise invalid("scheduler", scheduler, "a schedule that does not need the validation metric")
    opt = getattr(scheduler, "optimizer", optimizer)
    shared = [p for group in opt.param_groups for p in group["params"]]
    shared += [
        v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1
    ]
    opt_copy, sched_copy = copy.deepcopy((opt, scheduler), {id(t): t for t in shared})
    lrs = []
    with warnings.catch_warnings():  # the copy is stepped without optimizer.step()
        warnings.simplefilter("ignore")
        for i in range(steps):
            lrs.append(_lr_of(opt_copy))
            if scheduler_step == "batch" or (i + 1) % steps_per_epoch == 0:
                sched_copy.step()
    return lrs


def _lr_figure(lrs: list[float], title: str):
    fig, ax = new_figure(6.0, 2.8)
    ax.plot(np.arange(len(lrs)), lrs)
    ax.set_yscale("log" if min(lrs) > 0 else "linear")
    ax.set(xlabel="optimizer step", ylabel="learning rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _schedule_fault(lrs: list[float], name: str, warmup: bool | None, per_batch: bool):
    """``(problem, hint)`` when the simulated schedule grows by mistake or collapses, else
    ``("", "")``; the problem text continues the evidence."""
    n, first, last = len(lrs), lrs[0], lrs[-1]
    still_growing = last > lrs[int(0.9 * (n - 1))] * (1 + 1e-9)
    intended = warmup if warmup is not None else (name in _INTENDED_GROWTH or not still_growing)
    if first > 0 and last > first * (1 + 1e-9) and not intended:
        return (
            ": the learning rate grows to the end.",
            "A decaying schedule needs gamma < 1 (or use none); if growth is a warm-up, say "
            "warmup=True.",
        )
    peaks = np.maximum.accumulate(lrs)
    collapse = next((i for i, v in enumerate(lrs) if v < _COLLAPSE * peaks[i]), None)
    if collapse is None or collapse >= 0.9 * n:
        return "", ""
    problem = f": below {_COLLAPSE:g} x peak already at step {collapse} of {n}."
    if per_batch and name in _PER_EPOCH:
        problem += " Was a per-epoch schedule meant? It is stepped every batch."
        hint = (
            "Step per-epoch schedules once per epoch, or size them in batches "
            "(e.g. T_max = epochs x batches per epoch)."
        )
        return problem, hint
    return problem + " A factor below 1 is applied at every step.", HINTS["lr_collapse"]


def check_lr_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    planned_steps: int,
    *,
    scheduler_step: str = "batch",
    steps_per_epoch: int | None = None,
    warmup: bool | None = None,
    show: bool = True,
) -> CheckResult:
    """The learning rate over the planned steps: growing by mistake, or collapsing early?

    Simulates the schedule (:func:`simulate_lr`) and fails when

    - it ends higher than it starts and is still growing in the last tenth of the run, without
      a warm-up intent (the handover: ``ExponentialLR(gamma=1.001)`` stepped every batch grows
      1.001**2870, about 17.6x, over 10 SVHN epochs; tutorial, "Learning rate schedule looks
      weird"). ``warmup=None`` infers the intent: schedulers built to rise (``OneCycleLR``,
      ``CyclicLR``, ``LinearLR``) or a schedule that stops rising before the end;
    - it falls below a thousandth of its peak before 90% of the planned steps: typical of a
      per-epoch schedule (``StepLR``, ``ExponentialLR(0.9)``, ``CosineAnnealingLR(T_max=epochs)``)
      stepped every batch, or of a factor below 1 applied at every step (a warm-up that
      multiplies the current learning rate); the hint says which.

    Args:
        optimizer: the learner's optimizer (never stepped).
        scheduler: the learner's scheduler (never stepped); None: constant, passes.
        planned_steps: optimizer steps of the planned run (batches per epoch x epochs).
        scheduler_step: how the learner steps it, ``"batch"`` or ``"epoch"``.
        steps_per_epoch: batches per epoch (needed for ``"epoch"``).
        warmup: True when growth is intended, False when it is not, None to infer.
        show: plot the schedule.

    Returns:
        A :class:`CheckResult` named ``lr_schedule`` with the plot; ``details["lrs"]``.

    Raises:
        ValueError: as :func:`simulate_lr`.
    """
    name = type(scheduler).__name__
    if scheduler is None:
        why = f"no schedule: the learning rate stays at {fmt(_lr_of(optimizer))}."
        return CheckResult("lr_schedule", True, why)
    if name == "ReduceLROnPlateau":
        why = "ReduceLROnPlateau follows the validation metric; nothing to simulate."
        return not_applicable("lr_schedule", why)
    if not planned_steps:
        return not_applicable("lr_schedule", "planned_steps not given.", "Pass planned_steps=...")
    per = {"scheduler_step": scheduler_step, "steps_per_epoch": steps_per_epoch}
    lrs = simulate_lr(optimizer, scheduler, planned_steps, **per)
    first, last = lrs[0], lrs[-1]
    evidence = (
        f"{name} stepped per {scheduler_step}: learning rate {fmt(first)} -> {fmt(last)} "
        f"(x{fmt(last / first) if first else 'inf'}) over {len(lrs)} steps, peak {fmt(max(lrs))}"
    )
    figure = _lr_figure(lrs, f"{name}, stepped per {scheduler_step}") if show else None
    problem, hint = _schedule_fault(lrs, name, warmup, scheduler_step == "batch")
    evidence += problem or "."
    return CheckResult("lr_schedule", not problem, evidence, hint, figure, {"lrs": lrs})


def _typical_lrs(optimizer, scheduler, planned_steps, per: dict[str, Any]) -> tuple[list, str]:
    """The learning rate the run uses for most of its steps, per group, and how it was found."""
    current = [float(g["lr"]) for g in optimizer.param_groups]
    if scheduler is None or type(scheduler).__name__ == "ReduceLROnPlateau":
        return current, ""
    if not planned_steps:
        bases = getattr(scheduler, "base_lrs", current)
        base = [max(a, float(b)) for a, b in zip(current, bases, strict=False)]
        return base, f" (the larger of now and {type(scheduler).__name__}'s base)"
    lrs = simulate_lr(optimizer, scheduler, planned_steps, **per)
    median = float(np.median(lrs))
    text = f" ({type(scheduler).__name__}: {fmt(lrs[0])} -> {fmt(lrs[-1])}, median {fmt(median)})"
    return [v * median / lrs[0] if lrs[0] else median for v in current], text


def check_learning_rate(
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    planned_steps: int | None = None,
    *,
    scheduler_step: str = "batch",
    steps_per_epoch: int | None = None,
) -> CheckResult:
    """Is the learning rate far below the usual range for this optimizer? (A rule of thumb.)

    Thresholds are a heuristic, not a law: Adam-family optimizers usually train small CNNs
    well with learning rates around 1e-3 (Adam's default, Kingma & Ba 2015), so below 1e-4 is
    suspicious; SGD usually needs 1e-2..1e-1, so below 1e-3 is. With a scheduler the median
    learning rate over the planned steps is judged (:func:`simulate_lr`), so a warm-up's small
    first values or a decay's last ones do not decide it; without ``planned_steps``, the larger
    of the current and the scheduler's base learning rate. Pair it with the LR range test
    (:func:`check_lr_range`), which measures on the learner's own model and data.

    Args:
        optimizer: the learner's optimizer (never stepped).
        scheduler: the learner's scheduler (simulated on a copy), or None.
        planned_steps, scheduler_step, steps_per_epoch: as in :func:`simulate_lr`.

    Returns:
        A :class:`CheckResult` named ``learning_rate``.

    Raises:
        ValueError: as :func:`simulate_lr`.
    """
    name = type(optimizer).__name__
    per = {"scheduler_step": scheduler_step, "steps_per_epoch": steps_per_epoch}
    values, how = _typical_lrs(optimizer, scheduler, planned_steps, per)
    lrs = sorted(set(values))
    low = _ADAPTIVE_MIN if name in ADAPTIVE else _SGD_MIN
    evidence = (
        f"{name} with learning rate {', '.join(fmt(v) for v in lrs)}{how}; rule of thumb: at "
        f"least {fmt(low)}"
    )
    details = {"lrs": lrs, "threshold": low}
    if min(lrs) < low:
        hint = (
            "Try a learning rate about 10-100x larger, or run the LR range test (check_lr_range)."
        )
        evidence += " (a heuristic)."
        return CheckResult("learning_rate", False, evidence, hint, details=details)
    return CheckResult("learning_rate", True, evidence + ".", details=details)


@dataclass
class LRRangeTest:
    """Result of :func:`lr_range_test`.

    Attributes:
        lrs: learning rate of each step.
        losses: training loss of each step (of the batch, before the update).
        smoothed: bias-corrected exponential moving average of ``losses``.
        min_loss_lr: learning rate at the lowest smoothed loss.
        steepest_lr: learning rate where the smoothed loss falls fastest per log-lr.
        suggested_lr: ``min_loss_lr / 10`` (fastai's "minimum / 10" rule).
            All three are None when the loss did not clearly fall (flat curve).
        stopped_early: True when the loss diverged before the last step.
        your_lr: the learner's learning rate (marked in the figure), if known.
        figure: loss vs learning rate (log x axis), suggestions marked (drawn when first read).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    min_loss_lr: float | None
    steepest_lr: float | None
    suggested_lr: float | None
    stopped_early: bool
    your_lr: float | None = None

    @functools.cached_property
    def figure(self):
        """Loss vs learning rate (log x axis), the suggestions and the learner's lr marked."""
        fig, ax = new_figure(6.0, 3.0)
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss per step")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        marks = [
            (self.suggested_lr, "green", "--", "suggested"),
            (self.steepest_lr, "orange", ":", "steepest"),
            (self.your_lr, "red", "-", "yours"),
        ]
        for value, colour, style, label in marks:
            if value:
                ax.axvline(value, color=colour, ls=style, label=f"{label} {fmt(value)}")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:
            ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * self.smoothed[0]) * 1.05)
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss")
        ax.legend(fontsize=7)
        ax.set_title("LR range test (Smith 2017)", fontsize=9)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        return fig


def _batches_forever(loader: Iterable):
    """Batches from ``loader``, starting a new pass when one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batches.")


def _range_run(m: nn.Module, opt, loader, loss_fn: Callable, lrs: np.ndarray, max_batch_size):
    """Train ``m`` one batch per learning rate of ``lrs``; the losses, smoothed, until divergence."""
    losses, smoothed, avg = [], [], 0.0
    batches = _batches_forever(loader)
    for i, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = float(lr)
        x, y = (t[:max_batch_size].to(model_device(m)) for t in next(batches)[:2])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(m(x), y)
        if not math.isfinite(value := float(loss.detach())):
            return losses, smoothed, True
        loss.backward()
        opt.step()
        avg = _BETA * avg + (1 - _BETA) * value
        losses.append(value)
        smoothed.append(avg / (1 - _BETA ** (i + 1)))
        if smoothed[-1] > _DIVERGE * min(smoothed) and i > 5:
            return losses, smoothed, True
    return losses, smoothed, False


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 60,
    max_batch_size: int | None = None,
) -> LRRangeTest:
    """LR range test (Smith 2017, arXiv:1506.01186; fastai's ``lr_find``) on a copy of the model.

    A copy of the model is trained with a copy of the optimizer (same type and settings, fresh
    state; Adam if none is given) for ``steps`` batches while the learning rate rises
    exponentially from ``start_lr`` to ``end_lr``. The loss falls once the learning rate is
    large enough to make progress and explodes when it is too large. The test stops when the
    smoothed loss (exponential moving average, factor 0.8, bias-corrected) exceeds 4 times its
    minimum (fastai's rule). A suggestion needs the smoothed loss to fall at least 5% below its
    first value (otherwise the curve is flat noise and the suggestions are None).

    Args:
        model: the learner's model (untouched).
        loader: the training loader (iterated as often as needed; state restored).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        optimizer: the learner's optimizer (untouched; its type and settings are used).
        start_lr, end_lr: range of learning rates (``0 < start_lr < end_lr``).
        steps: number of steps (at least 5; 50-100 is typical).
        max_batch_size: use at most this many examples of each batch (faster on a CPU).

    Returns:
        An :class:`LRRangeTest`.

    Raises:
        ValueError: bad range or step count; an empty loader.
    """
    number("start_lr", start_lr, 0, low_open=True)
    number("end_lr", end_lr, start_lr, low_open=True)
    integer("steps", steps, 5)
    lrs = start_lr * (end_lr / start_lr) ** np.linspace(0.0, 1.0, steps)
    with untouched(loader):
        m, opt = copy.deepcopy((model, optimizer))
        opt = opt if opt is not None else torch.optim.Adam(m.parameters(), lr=start_lr)
        opt.state = collections.defaultdict(dict)
        run = _range_run(
            m.train(), opt, loader, loss_fn or nn.CrossEntropyLoss(), lrs, max_batch_size
        )
    losses, smoothed, stopped = run
    lrs = [float(v) for v in lrs[: len(losses)]]
    your_lr = _lr_of(optimizer) if optimizer is not None else None
    return LRRangeTest(lrs, losses, smoothed, *_suggestions(lrs, smoothed), stopped, your_lr)


def _suggestions(lrs: list[float], smoothed: list[float]):
    """``(min_loss_lr, steepest_lr, suggested_lr)``, or Nones for a flat curve."""
    if len(smoothed) < 5:
        return None, None, None
    i_min = int(np.argmin(smoothed))
    if i_min < 2 or smoothed[i_min] > (1 - _MIN_DROP) * smoothed[0]:
        return None, None, None
    slopes = np.gradient(np.asarray(smoothed), np.log10(np.asarray(lrs)))
    i_steep = 2 + int(np.argmin(slopes[2 : i_min + 1]))
    return lrs[i_min], lrs[i_steep], lrs[i_min] / 10.0


def check_lr_range(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    lr: float | None = None,
    show: bool = True,
    **options: Any,
) -> CheckResult:
    """Run :func:`lr_range_test` and compare its suggestion with the learner's learning rate.

    Fails when the learner's learning rate is more than 10x below both the suggestion (a tenth
    of the learning rate with the lowest loss) and the steepest-descent learning rate.

    Args:
        model, loader, loss_fn, optimizer: as in :func:`lr_range_test`.
        lr: the learner's learning rate (default: the optimizer's first group).
        show: attach the loss-vs-lr figure.
        **options: passed to :func:`lr_range_test` (``steps``, ``max_batch_size``,
            ``start_lr``, ``end_lr``).

    Returns:
        A :class:`CheckResult` named ``lr_range`` with the loss-vs-lr figure;
        ``details["test"]`` is the :class:`LRRangeTest`.
    """
    test = lr_range_test(model, loader, loss_fn, optimizer, **options)
    lr = lr if lr is not None else test.your_lr
    extra = {"figure": test.figure if show and test.lrs else None, "details": {"test": test}}
    if test.suggested_lr is None:
        drop = 1 - min(test.smoothed) / test.smoothed[0] if test.smoothed else 0.0
        span = f"{fmt(test.lrs[0])}..{fmt(test.lrs[-1])}" if test.lrs else "(none)"
        why = f"the loss fell by only {drop:.0%} over learning rates {span} ({len(test.lrs)} steps)"
        hint = "Run more steps (steps=100+); if the loss stays flat, check the pipeline first."
        return CheckResult("lr_range", None, why + ": too flat to suggest one.", hint, **extra)
    evidence = (
        f"lowest loss at lr {fmt(test.min_loss_lr)}, steepest descent at {fmt(test.steepest_lr)}; "
        f"suggested lr {fmt(test.suggested_lr)}"
    )
    if lr is None:
        why = evidence + "; no learning rate of yours to compare."
        return CheckResult("lr_range", None, why, **extra)
    evidence += f"; yours {fmt(lr)}"
    if lr < min(test.suggested_lr, test.steepest_lr or test.suggested_lr) / 10:
        evidence += f" (x{fmt(test.suggested_lr / lr)} below the suggestion)."
        hint = f"Try a learning rate near {fmt(test.suggested_lr)}."
        return CheckResult("lr_range", False, evidence, hint, **extra)
    return CheckResult("lr_range", True, evidence + ".", **extra)
