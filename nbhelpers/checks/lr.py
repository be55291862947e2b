"""Checks of the learning rate: the schedule over the planned steps, its size, a range test.

- :func:`simulate_lr`: the learning rate at every planned optimizer step, from copies of the
  optimizer and scheduler (the learner's own are never stepped).
- :func:`check_lr_schedule`: a schedule that grows without a warm-up intent, or one that
  collapses long before the end (a per-epoch schedule stepped every batch); with a plot.
- :func:`check_learning_rate`: a rule-of-thumb lower bound per optimizer family.
- :func:`lr_range_test` / :func:`check_lr_range`: the LR range test (Smith 2017, "Cyclical
  Learning Rates for Training Neural Networks", arXiv:1506.01186; popularised as fastai's
  ``lr_find``): train a copy for ~50-100 steps with an exponentially increasing learning rate,
  plot loss against learning rate, suggest a learning rate.
"""

from __future__ import annotations

import collections
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._core import (
    CheckResult,
    call_quietly,
    clone_training_objects,
    fmt,
    model_device,
    new_figure,
    not_applicable,
    preserved_loader_state,
    preserved_rng,
)

__all__ = [
    "LRRangeTest",
    "check_learning_rate",
    "check_lr_range",
    "check_lr_schedule",
    "lr_range_test",
    "simulate_lr",
]

#: Optimizers that scale steps per parameter (Adam family, RMSprop ...): their usual learning
#: rates are around 1e-3 (Adam's default, Kingma & Ba 2015).
ADAPTIVE = (
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "SparseAdam",
    "Adafactor",
)
#: Schedulers whose growing phase is intended.
_INTENDED_GROWTH = ("OneCycleLR", "CyclicLR", "LinearLR", "CosineAnnealingWarmRestarts")
_MAX_SIM_STEPS = 1_000_000


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
        ValueError: ``steps`` not a positive int (at most 1,000,000), an unknown
            ``scheduler_step``, ``"epoch"`` without ``steps_per_epoch``, or a
            ``ReduceLROnPlateau`` (it needs the validation metric).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 < steps <= _MAX_SIM_STEPS:
        raise ValueError(f"steps must be an int in 1..{_MAX_SIM_STEPS}, got {steps!r}.")
    if scheduler_step not in ("batch", "epoch"):
        raise ValueError(f"scheduler_step must be 'batch' or 'epoch', got {scheduler_step!r}.")
    if scheduler_step == "epoch" and not steps_per_epoch:
        raise ValueError("scheduler_step='epoch' needs steps_per_epoch (batches per epoch).")
    if scheduler is None:
        return [_lr_of(optimizer)] * steps
    if type(scheduler).__name__ == "ReduceLROnPlateau":
        raise ValueError(
            "ReduceLROnPlateau depends on the validation metric; it cannot be simulated."
        )
    opt = getattr(scheduler, "optimizer", optimizer)
    memo: dict[int, Any] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            memo[id(p)] = p
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                memo[id(value)] = value
    opt_copy, sched_copy = copy.deepcopy((opt, scheduler), memo)
    lrs = []
    for i in range(steps):
        lrs.append(_lr_of(opt_copy))
        if scheduler_step == "batch" or (i + 1) % int(steps_per_epoch) == 0:
            call_quietly(sched_copy.step)
    return lrs


def _lr_figure(lrs: list[float], title: str):
    fig, ax = new_figure(6.0, 2.8)
    ax.plot(np.arange(len(lrs)), lrs)
    if min(lrs) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def check_lr_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    planned_steps: int,
    *,
    scheduler_step: str = "batch",
    steps_per_epoch: int | None = None,
    warmup: bool | None = None,
    min_ratio: float = 1e-3,
    show: bool = True,
) -> CheckResult:
    """The learning rate over the planned steps: growing by mistake, or collapsing early?

    Simulates the schedule (:func:`simulate_lr`) and fails when

    - it ends higher than it starts and is still growing in the last tenth of the run, without
      a warm-up intent (the handover: ``ExponentialLR(gamma=1.001)`` stepped every batch grows
      1.001**2870, about 17.6x, over 10 SVHN epochs; tutorial, "Learning rate schedule looks
      weird"). ``warmup=None`` infers the intent: schedulers built to rise (``OneCycleLR``,
      ``CyclicLR``, ``LinearLR``) or a schedule that stops rising before the end;
    - it falls below ``min_ratio`` of its peak before 90% of the planned steps: typical of a
      per-epoch schedule (``StepLR``, ``ExponentialLR(0.9)``, ``CosineAnnealingLR(T_max=epochs)``)
      stepped every batch.

    Args:
        optimizer: the learner's optimizer (never stepped).
        scheduler: the learner's scheduler (never stepped); None: constant, passes.
        planned_steps: optimizer steps of the planned run (batches per epoch x epochs).
        scheduler_step: how the learner steps it, ``"batch"`` or ``"epoch"``.
        steps_per_epoch: batches per epoch (needed for ``"epoch"``).
        warmup: True when growth is intended, False when it is not, None to infer.
        min_ratio: collapse threshold as a fraction of the peak.
        show: plot the schedule.

    Returns:
        A :class:`CheckResult` named ``lr_schedule`` with the plot; ``details["lrs"]``.
    """
    if scheduler is None:
        lr = _lr_of(optimizer)
        return CheckResult(
            "lr_schedule", True, f"no schedule: the learning rate stays at {fmt(lr)}."
        )
    if type(scheduler).__name__ == "ReduceLROnPlateau":
        return not_applicable(
            "lr_schedule", "ReduceLROnPlateau follows the validation metric; nothing to simulate."
        )
    if not planned_steps:
        return not_applicable("lr_schedule", "planned_steps not given.", "Pass planned_steps=...")
    lrs = simulate_lr(
        optimizer,
        scheduler,
        int(planned_steps),
        scheduler_step=scheduler_step,
        steps_per_epoch=steps_per_epoch,
    )
    n, first, last, peak = len(lrs), lrs[0], lrs[-1], max(lrs)
    name = type(scheduler).__name__
    evidence = (
        f"{name} stepped per {scheduler_step}: learning rate {fmt(first)} -> {fmt(last)} "
        f"(x{fmt(last / first) if first else 'inf'}) over {n} steps, peak {fmt(peak)}"
    )
    figure = _lr_figure(lrs, f"{name}, stepped per {scheduler_step}") if show else None
    details = {"lrs": lrs}
    still_growing = last > lrs[int(0.9 * (n - 1))] * (1 + 1e-9)
    intended = warmup if warmup is not None else (name in _INTENDED_GROWTH or not still_growing)
    if first > 0 and last > first * (1 + 1e-9) and not intended:
        return CheckResult(
            "lr_schedule",
            False,
            evidence + ": the learning rate grows to the end.",
            "A decaying schedule needs gamma < 1 (or use none); if growth is a warm-up, say "
            "warmup=True.",
            figure=figure,
            details=details,
        )
    collapse = next((i for i, v in enumerate(lrs) if v < min_ratio * max(lrs[: i + 1])), None)
    if collapse is not None and collapse < 0.9 * n:
        how = (
            " Was a per-epoch schedule meant? It is stepped every batch."
            if scheduler_step == "batch"
            else ""
        )
        return CheckResult(
            "lr_schedule",
            False,
            evidence + f": below {min_ratio:g} x peak already at step {collapse} of {n}." + how,
            "Step per-epoch schedules once per epoch, or size them in batches "
            "(e.g. T_max = epochs x batches per epoch).",
            figure=figure,
            details=details,
        )
    return CheckResult("lr_schedule", True, evidence + ".", figure=figure, details=details)


def check_learning_rate(
    optimizer: torch.optim.Optimizer, *, adaptive_min: float = 1e-4, sgd_min: float = 1e-3
) -> CheckResult:
    """Is the learning rate far below the usual range for this optimizer? (A rule of thumb.)

    Thresholds are a heuristic, not a law: Adam-family optimizers usually train small CNNs
    well with learning rates around 1e-3 (Adam's default, Kingma & Ba 2015), so below
    ``adaptive_min`` (1e-4) is suspicious; SGD usually needs 1e-2..1e-1, so below ``sgd_min``
    (1e-3) is. Pair it with the LR range test (:func:`check_lr_range`), which measures on the
    learner's own model and data.

    Args:
        optimizer: the learner's optimizer.
        adaptive_min: lowest unsuspicious lr for adaptive optimizers.
        sgd_min: lowest unsuspicious lr for SGD and others.

    Returns:
        A :class:`CheckResult` named ``learning_rate``.
    """
    name = type(optimizer).__name__
    lrs = sorted({float(g["lr"]) for g in optimizer.param_groups})
    low = adaptive_min if name in ADAPTIVE else sgd_min
    shown = ", ".join(fmt(v) for v in lrs)
    evidence = f"{name} with learning rate {shown}; rule of thumb: at least {fmt(low)}"
    if min(lrs) < low:
        return CheckResult(
            "learning_rate",
            False,
            evidence + " (a heuristic threshold).",
            "Try a learning rate about 10-100x larger, or run the LR range test (check_lr_range).",
            details={"lrs": lrs, "threshold": low},
        )
    return CheckResult(
        "learning_rate", True, evidence + ".", details={"lrs": lrs, "threshold": low}
    )


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
        figure: loss vs learning rate (log x axis), suggestions marked.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    min_loss_lr: float | None
    steepest_lr: float | None
    suggested_lr: float | None
    stopped_early: bool
    figure: Any = field(default=None, repr=False)


def _batches_forever(loader: Iterable):
    """Batches from ``loader``, starting a new pass when one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batches.")


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 60,
    beta: float = 0.8,
    diverge: float = 4.0,
    min_drop: float = 0.05,
    max_batch_size: int | None = None,
    show: bool = True,
) -> LRRangeTest:
    """LR range test (Smith 2017, arXiv:1506.01186; fastai's ``lr_find``) on a copy of the model.

    A copy of the model is trained with a copy of the optimizer (same type and settings, fresh
    state; Adam if none is given) for ``steps`` batches while the learning rate rises
    exponentially from ``start_lr`` to ``end_lr``. The loss falls once the learning rate is
    large enough to make progress and explodes when it is too large. The test stops when the
    smoothed loss exceeds ``diverge`` times its minimum (fastai uses 4).

    Args:
        model: the learner's model (untouched).
        loader: the training loader (iterated as often as needed; state restored).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        optimizer: the learner's optimizer (untouched; its type and settings are used).
        start_lr, end_lr: range of learning rates (positive, start < end).
        steps: number of steps (50-100 is typical).
        beta: smoothing factor of the moving average of the loss.
        diverge: stop when the smoothed loss exceeds this multiple of its minimum.
        min_drop: the smoothed loss must fall at least this fraction below its first value for
            a suggestion (otherwise the suggestions are None: the curve is flat noise).
        max_batch_size: use at most this many examples of each batch (faster on a CPU).
        show: make the figure.

    Returns:
        An :class:`LRRangeTest`.

    Raises:
        ValueError: bad range or step count; an empty loader.
    """
    if not (0 < start_lr < end_lr) or steps < 5:
        raise ValueError(
            f"need 0 < start_lr < end_lr and steps >= 5, got {start_lr!r}, {end_lr!r}, {steps!r}."
        )
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    factor = (end_lr / start_lr) ** (1.0 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, False
    with preserved_rng(), preserved_loader_state(loader):
        m, opt, _ = clone_training_objects(model, optimizer)
        if opt is None:
            opt = torch.optim.Adam(m.parameters(), lr=start_lr)
        opt.state = collections.defaultdict(dict)
        m.train()
        device = model_device(m)
        batches = _batches_forever(loader)
        for i in range(steps):
            lr = start_lr * factor**i
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = next(batches)[:2]
            if max_batch_size:
                x, y = x[:max_batch_size], y[:max_batch_size]
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                stopped = True
                break
            loss.backward()
            opt.step()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > diverge * best and i > 5:
                stopped = True
                break
    min_lr, steep_lr, suggested = _suggestions(lrs, smoothed, min_drop)
    result = LRRangeTest(lrs, losses, smoothed, min_lr, steep_lr, suggested, stopped)
    if show and lrs:
        result.figure = _range_figure(result, getattr(optimizer, "param_groups", None))
    return result


def _suggestions(lrs: list[float], smoothed: list[float], min_drop: float):
    if len(smoothed) < 5:
        return None, None, None
    i_min = int(np.argmin(smoothed))
    if i_min < 2 or smoothed[i_min] > (1 - min_drop) * smoothed[0]:
        return None, None, None
    slopes = np.gradient(np.asarray(smoothed), np.log10(np.asarray(lrs)))
    lo = 2
    i_steep = lo + int(np.argmin(slopes[lo : i_min + 1]))
    return lrs[i_min], lrs[i_steep], lrs[i_min] / 10.0


def _range_figure(result: LRRangeTest, groups):
    fig, ax = new_figure(6.0, 3.0)
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss per step")
    ax.plot(result.lrs, result.smoothed, label="smoothed")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if result.suggested_lr:
        ax.axvline(
            result.suggested_lr,
            color="green",
            ls="--",
            label=f"suggested {fmt(result.suggested_lr)}",
        )
    if result.steepest_lr:
        ax.axvline(
            result.steepest_lr, color="orange", ls=":", label=f"steepest {fmt(result.steepest_lr)}"
        )
    if groups:
        ax.axvline(
            float(groups[0]["lr"]),
            color="red",
            ls="-",
            label=f"yours {fmt(float(groups[0]['lr']))}",
        )
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * result.smoothed[0]) * 1.05)
    ax.legend(fontsize=7)
    ax.set_title("LR range test (Smith 2017)", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def check_lr_range(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    lr: float | None = None,
    steps: int = 60,
    max_batch_size: int | None = None,
    show: bool = True,
    **kwargs: Any,
) -> CheckResult:
    """Run :func:`lr_range_test` and compare its suggestion with the learner's learning rate.

    Fails when the learner's learning rate is more than 10x below both the suggestion (a tenth
    of the learning rate with the lowest loss) and the steepest-descent learning rate.

    Args:
        model, loader, loss_fn, optimizer: as in :func:`lr_range_test`.
        lr: the learner's learning rate (default: the optimizer's first group).
        steps, max_batch_size, show, **kwargs: passed to :func:`lr_range_test`.

    Returns:
        A :class:`CheckResult` named ``lr_range`` with the loss-vs-lr figure;
        ``details["test"]`` is the :class:`LRRangeTest`.
    """
    if lr is None and optimizer is not None:
        lr = float(optimizer.param_groups[0]["lr"])
    test = lr_range_test(
        model,
        loader,
        loss_fn,
        optimizer,
        steps=steps,
        max_batch_size=max_batch_size,
        show=show,
        **kwargs,
    )
    details = {"test": test}
    if test.suggested_lr is None:
        drop = 1 - min(test.smoothed) / test.smoothed[0] if test.smoothed else 0.0
        return CheckResult(
            "lr_range",
            None,
            f"the loss fell by only {drop:.0%} over learning rates "
            f"{fmt(test.lrs[0] if test.lrs else 0)}..{fmt(test.lrs[-1] if test.lrs else 0)} "
            f"({len(test.lrs)} steps): too flat to suggest a learning rate.",
            "Run more steps (steps=100+); if the loss stays flat, check the pipeline first "
            "(overfit one batch).",
            figure=test.figure,
            details=details,
        )
    evidence = (
        f"lowest loss at lr {fmt(test.min_loss_lr)}, steepest descent at {fmt(test.steepest_lr)}; "
        f"suggested lr {fmt(test.suggested_lr)}"
    )
    if lr is None:
        return CheckResult(
            "lr_range",
            None,
            evidence + "; no learning rate of yours to compare.",
            figure=test.figure,
            details=details,
        )
    evidence += f"; yours {fmt(lr)}"
    ceiling = min(test.suggested_lr, test.steepest_lr or test.suggested_lr)
    if lr < ceiling / 10:
        return CheckResult(
            "lr_range",
            False,
            evidence + f" (x{fmt(test.suggested_lr / lr)} below the suggestion).",
            f"Try a learning rate near {fmt(test.suggested_lr)}.",
            figure=test.figure,
            details=details,
        )
    return CheckResult("lr_range", True, evidence + ".", figure=test.figure, details=details)
