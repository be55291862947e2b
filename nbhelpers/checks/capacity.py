"""Capacity check: can the model memorise one small batch?

"Overfit one batch" (Karpathy, "A Recipe for Training Neural Networks", 2019): a model that
cannot drive the loss on a couple of dozen examples close to zero has a bug somewhere in the
pipeline (labels not matching inputs, a detached loss, a frozen layer, a broken gradient)
long before any question of tuning. As the recipe says, regularisation is off for it (dropout
layers in eval mode), and "close to zero" is measured from the lowest loss the loss function
can give (label smoothing keeps it above zero). :func:`train_copy` (a copy trained on one
batch) also gives :func:`nbhelpers.checks.check_eval_determinism` a model that reacts to its
inputs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from nbhelpers.state import model_device, preserved_rng

from .results import CheckResult, fmt, new_figure

__all__ = ["check_overfit_one_batch", "train_copy"]

#: Adam's default learning rate (Kingma & Ba 2015), known to work for small CNNs, and "near
#: zero" for the loss above its lowest value (for 10 classes it starts near ln 10 = 2.3).
_LR, _TARGET_LOSS = 1e-3, 0.1
#: A loss that has not improved by 1% over this many steps has stalled.
_STALL = 50


def loss_floor(loss_fn: Callable, logits: torch.Tensor, y: torch.Tensor) -> float:
    """About the lowest loss ``loss_fn`` gives on labels ``y``: its smallest value on confident
    one-hot logits (scales 2..32) shaped like ``logits``; 0 when it cannot be computed."""
    try:
        onehot = torch.zeros_like(logits).scatter_(1, y.view(-1, 1), 1.0)
        return max(0.0, min(float(loss_fn(s * onehot, y)) for s in (2, 4, 8, 16, 32)))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return 0.0


def train_copy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, steps: int
) -> tuple[nn.Module, list[float]]:
    """A train-mode copy of ``model`` (dropout off) after up to ``steps`` Adam steps (lr 1e-3)
    on ``(x, y)``.

    Stops early once the loss is within 0.1 of :func:`loss_floor`, not finite, or stalled (not
    1% lower than 50 steps before); random states are kept.

    Returns:
        ``(copy, losses, target)``: the trained copy, the loss before each step (floats), and
        the loss that counts as memorised.
    """
    losses, target = [], None
    with preserved_rng():
        torch.manual_seed(0)
        m = copy.deepcopy(model).train()
        for module in m.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()
        opt = torch.optim.Adam(m.parameters(), lr=_LR)
        xb, yb = x.to(model_device(m)), y.to(model_device(m))
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            logits = m(xb)
            loss = loss_fn(logits, yb)
            losses.append(float(loss.detach()))
            if target is None:
                target = loss_floor(loss_fn, logits.detach(), yb) + _TARGET_LOSS
            stalled = len(losses) > _STALL and min(losses[-_STALL:]) > 0.99 * min(losses[:-_STALL])
            if losses[-1] < target or not torch.isfinite(loss) or stalled:
                break
            loss.backward()
            opt.step()
    return m, losses, target if target is not None else _TARGET_LOSS


def check_overfit_one_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable | None = None,
    *,
    steps: int = 300,
    show: bool = True,
) -> CheckResult:
    """Train a copy of the model on the batch ``(x, y)`` for up to ``steps`` steps: does the
    loss drop to within 0.1 of the lowest it can be (0 for plain cross-entropy)?

    Uses Adam with learning rate 1e-3 (a known-good default; Karpathy's recipe), so a
    too-small learning rate of the learner does not hide the answer; the learning rate has
    its own checks. Stops as soon as the target is met, or when the loss stalls (then it
    fails). A loss still falling when the steps run out (a slow but sound model, e.g. ReLU
    without normalisation) gives "not applicable": more steps would tell.

    Args:
        model: the learner's model (a copy is trained in train mode).
        x, y: the examples to memorise (float (B, C, H, W), int64 (B,)); 32 are plenty
            (:func:`~nbhelpers.checks.run_all_checks` passes 32).
        loss_fn: default ``nn.CrossEntropyLoss()``.
        steps: the most optimizer steps (a sound small CNN needs 10 to 200).
        show: plot the loss curve.

    Returns:
        A :class:`CheckResult` named ``overfit_one_batch``; ``details["losses"]``.
    """
    _, losses, target = train_copy(model, x, y, loss_fn or nn.CrossEntropyLoss(), steps)
    figure = None
    if show:
        figure, ax = new_figure(5.0, 2.6)
        ax.plot(losses)
        ax.axhline(target, color="green", ls="--", label=f"target {target:.3g}")
        ax.set(xlabel="step", ylabel="loss on the batch")
        ax.set_title(f"overfitting {len(x)} examples", fontsize=9)
        ax.legend(fontsize=7)
        figure.tight_layout()
    evidence = (
        f"loss on {len(x)} examples {fmt(losses[0])} -> {fmt(losses[-1])} "
        f"in {len(losses) - 1} steps (target {target:.3g})"
    )
    extra = {"figure": figure, "details": {"losses": losses, "target": target}}
    if min(losses) < target:
        return CheckResult("overfit_one_batch", True, evidence + ".", **extra)
    if len(losses) >= steps and math.isfinite(losses[-1]):  # not stalled: still falling
        why = evidence + ": still falling when the steps ran out."
        hint = f"Give it more steps (overfit_steps={2 * steps}) to tell."
        return CheckResult("overfit_one_batch", None, why, hint, **extra)
    problem = ": the model cannot even memorise one batch."
    hint = (
        "Something in the pipeline is broken: check that labels match the images, the loss gets "
        "logits, gradients reach every layer, and no layer is frozen."
    )
    return CheckResult("overfit_one_batch", False, evidence + problem, hint, **extra)
