"""Capacity check: can the model memorise one small batch?

"Overfit one batch" (Karpathy, "A Recipe for Training Neural Networks", 2019): a model that
cannot drive the loss on a couple of dozen examples close to zero has a bug somewhere in the
pipeline (labels not matching inputs, a detached loss, a frozen layer, a broken gradient)
long before any question of tuning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from nbhelpers.state import model_device, preserved_rng

from .results import CheckResult, fmt, new_figure

__all__ = ["check_overfit_one_batch"]


def _losses(model: nn.Module, x, y, loss_fn: Callable, steps: int, lr: float, target: float):
    """Losses of Adam(lr) steps on a train-mode copy of ``model``, until below ``target``."""
    losses = []
    with preserved_rng():
        torch.manual_seed(0)
        m = copy.deepcopy(model).train()
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        xb, yb = x.to(model_device(m)), y.to(model_device(m))
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(xb), yb)
            losses.append(float(loss.detach()))
            if losses[-1] < target or not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
    return losses


def check_overfit_one_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable | None = None,
    *,
    steps: int = 100,
    lr: float = 1e-3,
    target_loss: float = 0.1,
    show: bool = True,
) -> CheckResult:
    """Train a copy of the model on the batch ``(x, y)`` for up to ``steps`` steps: does the
    loss drop below ``target_loss``?

    Uses Adam with ``lr`` (a known-good default; Karpathy's recipe), so a too-small learning
    rate of the learner does not hide the answer; the learning rate has its own checks. Stops
    as soon as the target is met.

    Args:
        model: the learner's model (a copy is trained in train mode).
        x, y: the examples to memorise (float (B, C, H, W), int64 (B,)); 32 are plenty
            (:func:`~nbhelpers.checks.run_all_checks` passes 32).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        steps: the most optimizer steps.
        lr: Adam learning rate.
        target_loss: "near zero" (for 10 classes the loss starts near ln 10 = 2.3).
        show: plot the loss curve.

    Returns:
        A :class:`CheckResult` named ``overfit_one_batch``; ``details["losses"]``.
    """
    losses = _losses(model, x, y, loss_fn or nn.CrossEntropyLoss(), steps, lr, target_loss)
    figure = None
    if show:
        figure, ax = new_figure(5.0, 2.6)
        ax.plot(losses)
        ax.axhline(target_loss, color="green", ls="--", label=f"target {target_loss:g}")
        ax.set(xlabel="step", ylabel="loss on the batch")
        ax.set_title(f"overfitting {len(x)} examples", fontsize=9)
        ax.legend(fontsize=7)
        figure.tight_layout()
    evidence = (
        f"loss on {len(x)} examples {fmt(losses[0])} -> {fmt(losses[-1])} "
        f"in {len(losses) - 1} steps (target {target_loss:g})"
    )
    if min(losses) < target_loss:
        return CheckResult(
            "overfit_one_batch", True, evidence + ".", figure=figure, details={"losses": losses}
        )
    return CheckResult(
        "overfit_one_batch",
        False,
        evidence + ": the model cannot even memorise one batch.",
        "Something in the pipeline is broken: check that labels match the images, the loss gets "
        "logits, gradients reach every layer, and no layer is frozen.",
        figure=figure,
        details={"losses": losses},
    )
