"""Capacity check: can the model memorise one small batch?

"Overfit one batch" (Karpathy, "A Recipe for Training Neural Networks", 2019): a model that
cannot drive the loss on a couple of dozen examples close to zero has a bug somewhere in the
pipeline (labels not matching inputs, a detached loss, a frozen layer, a broken gradient)
long before any question of tuning. :func:`train_copy` (a copy trained on one batch) also
gives :func:`nbhelpers.checks.check_eval_determinism` a model that reacts to its inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from nbhelpers.state import model_device, preserved_rng

from .results import CheckResult, fmt, new_figure

__all__ = ["check_overfit_one_batch", "train_copy"]

#: Adam's default learning rate (Kingma & Ba 2015), known to work for small CNNs, and "near
#: zero" for the loss (for 10 classes it starts near ln 10 = 2.3).
_LR, _TARGET_LOSS = 1e-3, 0.1


def train_copy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, steps: int
) -> tuple[nn.Module, list[float]]:
    """A train-mode copy of ``model`` after up to ``steps`` Adam steps (lr 1e-3) on ``(x, y)``.

    Stops early once the loss is below 0.1 or not finite; random states are kept.

    Returns:
        ``(copy, losses)``: the trained copy and the loss before each step (floats).
    """
    losses = []
    with preserved_rng():
        torch.manual_seed(0)
        m = copy.deepcopy(model).train()
        opt = torch.optim.Adam(m.parameters(), lr=_LR)
        xb, yb = x.to(model_device(m)), y.to(model_device(m))
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(xb), yb)
            losses.append(float(loss.detach()))
            if losses[-1] < _TARGET_LOSS or not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
    return m, losses


def check_overfit_one_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable | None = None,
    *,
    steps: int = 100,
    show: bool = True,
) -> CheckResult:
    """Train a copy of the model on the batch ``(x, y)`` for up to ``steps`` steps: does the
    loss drop below 0.1?

    Uses Adam with learning rate 1e-3 (a known-good default; Karpathy's recipe), so a
    too-small learning rate of the learner does not hide the answer; the learning rate has
    its own checks. Stops as soon as the target is met.

    Args:
        model: the learner's model (a copy is trained in train mode).
        x, y: the examples to memorise (float (B, C, H, W), int64 (B,)); 32 are plenty
            (:func:`~nbhelpers.checks.run_all_checks` passes 32).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        steps: the most optimizer steps.
        show: plot the loss curve.

    Returns:
        A :class:`CheckResult` named ``overfit_one_batch``; ``details["losses"]``.
    """
    _, losses = train_copy(model, x, y, loss_fn or nn.CrossEntropyLoss(), steps)
    figure = None
    if show:
        figure, ax = new_figure(5.0, 2.6)
        ax.plot(losses)
        ax.axhline(_TARGET_LOSS, color="green", ls="--", label=f"target {_TARGET_LOSS:g}")
        ax.set(xlabel="step", ylabel="loss on the batch")
        ax.set_title(f"overfitting {len(x)} examples", fontsize=9)
        ax.legend(fontsize=7)
        figure.tight_layout()
    evidence = (
        f"loss on {len(x)} examples {fmt(losses[0])} -> {fmt(losses[-1])} "
        f"in {len(losses) - 1} steps (target {_TARGET_LOSS:g})"
    )
    extra = {"figure": figure, "details": {"losses": losses}}
    if min(losses) < _TARGET_LOSS:
        return CheckResult("overfit_one_batch", True, evidence + ".", **extra)
    problem = ": the model cannot even memorise one batch."
    hint = (
        "Something in the pipeline is broken: check that labels match the images, the loss gets "
        "logits, gradients reach every layer, and no layer is frozen."
    )
    return CheckResult("overfit_one_batch", False, evidence + problem, hint, **extra)
