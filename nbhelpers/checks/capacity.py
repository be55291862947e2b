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

from ._core import CheckResult, fmt, model_device, new_figure, preserved_rng

__all__ = ["check_overfit_one_batch"]


def check_overfit_one_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable | None = None,
    *,
    n: int = 32,
    steps: int = 100,
    lr: float = 1e-3,
    target_loss: float = 0.1,
    optimizer_factory: Callable | None = None,
    show: bool = True,
) -> CheckResult:
    """Train a copy of the model on ``n`` examples for up to ``steps`` steps: does the loss drop
    below ``target_loss``?

    Uses Adam with ``lr`` (a known-good default; Karpathy's recipe) unless
    ``optimizer_factory(params)`` is given, so a too-small learning rate of the learner does not
    hide the answer; the learning rate has its own checks. Stops as soon as the target is met.

    Args:
        model: the learner's model (a copy is trained in train mode).
        x, y: a batch; the first ``n`` examples are used.
        loss_fn: default ``nn.CrossEntropyLoss()``.
        n: examples to memorise.
        steps: the most optimizer steps.
        lr: Adam learning rate.
        target_loss: "near zero" (for 10 classes the loss starts near ln 10 = 2.3).
        optimizer_factory: ``params -> optimizer`` to use instead of Adam.
        show: plot the loss curve.

    Returns:
        A :class:`CheckResult` named ``overfit_one_batch``; ``details["losses"]``.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    losses = []
    with preserved_rng():
        torch.manual_seed(0)
        m = copy.deepcopy(model).train()
        opt = (optimizer_factory or (lambda ps: torch.optim.Adam(ps, lr=lr)))(m.parameters())
        device = model_device(m)
        xb, yb = x[:n].to(device), y[:n].to(device)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(xb), yb)
            losses.append(float(loss.detach()))
            if losses[-1] < target_loss or not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
    figure = None
    if show:
        fig, ax = new_figure(5.0, 2.6)
        ax.plot(losses)
        ax.axhline(target_loss, color="green", ls="--", label=f"target {target_loss:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss on the batch")
        ax.set_title(f"overfitting {xb.shape[0]} examples", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        figure = fig
    best = min(losses)
    evidence = (
        f"loss on {xb.shape[0]} examples {fmt(losses[0])} -> {fmt(losses[-1])} "
        f"in {len(losses) - 1} steps (target {target_loss:g})"
    )
    details = {"losses": losses}
    if best < target_loss:
        return CheckResult(
            "overfit_one_batch", True, evidence + ".", figure=figure, details=details
        )
    return CheckResult(
        "overfit_one_batch",
        False,
        evidence + ": the model cannot even memorise one batch.",
        "Something in the pipeline is broken: check that labels match the images, the loss gets "
        "logits, gradients reach every layer, and no layer is frozen.",
        figure=figure,
        details=details,
    )
