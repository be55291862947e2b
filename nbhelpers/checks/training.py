"""Checks of the training step: zero_grad, train/eval mode, softmax before the loss, gradients.

All of them work on deep copies of the learner's model and optimizer
(:func:`~nbhelpers.checks._core.clone_training_objects`) and restore every random state.

- :func:`check_zero_grad`: the learner's ``train_step(model, optimizer, x, y)`` run three times on
  the same batch with the learning rate set to 0 in the copy: the gradient must not grow.
- :func:`check_model_modes`: evaluation runs in eval mode, training in train mode (matters for
  Dropout and BatchNorm).
- :func:`check_softmax_output`: the model returns logits, not probabilities, when the loss is
  ``CrossEntropyLoss`` (which applies log-softmax itself).
- :func:`check_gradients`: the loss is finite; the gradient norm is neither 0 nor NaN/inf.
- :func:`check_optimizer_params`: the optimizer holds exactly the model's trainable parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import (
    TOUCHED_NOTE,
    CheckResult,
    clone_training_objects,
    fmt,
    guard_learner_state,
    limited,
    model_device,
    not_applicable,
    preserved_loader_state,
    preserved_rng,
)

__all__ = [
    "check_gradients",
    "check_model_modes",
    "check_optimizer_params",
    "check_softmax_output",
    "check_zero_grad",
    "grad_norm",
]

_MODE_SENSITIVE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout)


def grad_norm(model: nn.Module) -> float | None:
    """Euclidean norm of all parameter gradients together (None when no gradient is stored)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    if not norms:
        return None
    return float(torch.linalg.vector_norm(torch.stack(norms)).cpu())


def _set_lr_zero(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"].fill_(0.0)
        else:
            group["lr"] = 0.0


def _on_device(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    device = model_device(model)
    return x.to(device), y.to(device)


def check_zero_grad(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    train_step: Callable | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 3,
    max_growth: float = 1.5,
) -> CheckResult:
    """Does the learner's training step reset gradients before adding new ones?

    ``train_step(model, optimizer, x, y)`` is called ``steps`` times on the same batch, with a
    copy of the model and of the optimizer whose learning rate is set to 0 (so the parameters
    and therefore the gradient stay the same) and the same random seed each time. With
    ``optimizer.zero_grad()`` the stored gradient norm stays constant; without it, gradients
    accumulate and the norm grows linearly (1x, 2x, 3x) -- the handover's bug (tutorial,
    "Debugging Strategy II").

    Args:
        model: the learner's model.
        optimizer: the learner's optimizer (None: a plain SGD on the copy).
        train_step: ``train_step(model, optimizer, x, y)`` doing one optimisation step.
        x, y: one batch (float (B, C, H, W), int64 (B,)).
        steps: calls of ``train_step``.
        max_growth: last/first gradient-norm ratio above which the check fails.

    Returns:
        A :class:`CheckResult` named ``zero_grad``; ``details["norms"]`` lists the norms.
    """
    if train_step is None:
        return not_applicable(
            "zero_grad",
            "no train_step given.",
            "Pass train_step=your_function (called as train_step(model, optimizer, x, y)).",
        )
    with guard_learner_state(model, optimizer) as guard, preserved_rng():
        m, opt, _ = clone_training_objects(model, optimizer)
        opt = opt if opt is not None else torch.optim.SGD(m.parameters(), lr=0.0)
        _set_lr_zero(opt)
        m.train()
        for p in m.parameters():
            p.grad = None
        xb, yb = _on_device(m, x, y)
        norms = []
        for _ in range(steps):
            torch.manual_seed(0)
            train_step(m, opt, xb, yb)
            norms.append(grad_norm(m))
    note = TOUCHED_NOTE if guard["touched"] else ""
    shown = ", ".join("none" if v is None else fmt(v) for v in norms)
    details = {"norms": norms}
    if all(v is None or v == 0 for v in norms):
        return CheckResult(
            "zero_grad",
            True,
            f"gradients are cleared after every step (stored norms: {shown})." + note,
            details=details,
        )
    if norms[0] is None or norms[0] == 0 or norms[-1] is None:
        return not_applicable(
            "zero_grad", f"gradient norms {shown}: cannot compare." + note, "Look at train_step."
        )
    growth = norms[-1] / norms[0]
    details["growth"] = growth
    evidence = (
        f"gradient norm after {steps} identical steps on one batch (learning rate 0 in a copy): "
        f"{shown} (x{growth:.2f})"
    )
    if growth > max_growth:
        return CheckResult(
            "zero_grad",
            False,
            evidence + ": gradients add up from step to step." + note,
            "Call optimizer.zero_grad() before loss.backward() in every step.",
            details=details,
        )
    return CheckResult("zero_grad", True, evidence + "." + note, details=details)


def check_model_modes(
    model: nn.Module,
    *,
    train_step: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    evaluate_fn: Callable | None = None,
    eval_loader: Any = None,
) -> CheckResult:
    """Train mode while training, eval mode while evaluating?

    A forward pre-hook on a copy records ``model.training`` at every forward pass of
    ``evaluate_fn(model, loader)`` (started in train mode, as after training) and of
    ``train_step(model, optimizer, x, y)`` (started in train mode; learning rate 0).
    Fails when evaluation runs in train mode, or the training step switches to eval mode, and
    the model has Dropout or BatchNorm (otherwise the mode changes nothing and it passes). Also
    notes when evaluation leaves the model in eval mode: then the loop must call
    ``model.train()`` before the next epoch.

    Args:
        model: the learner's model.
        train_step, optimizer, x, y: the training step and one batch (optional).
        evaluate_fn, eval_loader: the evaluation function and a loader (optional; two batches
            are used).

    Returns:
        A :class:`CheckResult` named ``model_modes``.
    """
    can_eval = evaluate_fn is not None and eval_loader is not None
    can_train = train_step is not None and x is not None and y is not None
    if not (can_eval or can_train):
        return not_applicable(
            "model_modes",
            "neither evaluate_fn with an eval loader nor train_step with a batch given.",
            "Pass evaluate_fn=... and/or train_step=... to check train/eval modes.",
        )
    sensitive = sorted(
        {type(m).__name__ for m in model.modules() if isinstance(m, _MODE_SENSITIVE)}
    )
    problems, parts = [], []
    with guard_learner_state(model, optimizer) as guard, preserved_rng():
        m, opt, _ = clone_training_objects(model, optimizer)
        modes: list[bool] = []
        handle = m.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
        try:
            if can_eval:
                m.train()
                with preserved_loader_state(eval_loader):
                    evaluate_fn(m, limited(eval_loader, 2, 64))
                parts.append(_mode_text("evaluation", modes))
                if any(modes):
                    problems.append("evaluation runs in train mode")
                if not m.training:
                    parts.append("evaluation leaves the model in eval mode")
            if can_train:
                opt = opt if opt is not None else torch.optim.SGD(m.parameters(), lr=0.0)
                _set_lr_zero(opt)
                m.train()
                modes.clear()
                xb, yb = _on_device(m, x, y)
                train_step(m, opt, xb, yb)
                parts.append(_mode_text("train_step", modes))
                if modes and not all(modes):
                    problems.append("the training step runs in eval mode")
        finally:
            handle.remove()
    evidence = "; ".join(parts) + f"; mode-dependent layers: {', '.join(sensitive) or 'none'}."
    if guard["touched"]:
        evidence += TOUCHED_NOTE
    if problems and sensitive:
        return CheckResult(
            "model_modes",
            False,
            "; ".join(problems) + ". " + evidence,
            "Call model.train() before each training epoch and model.eval() (with "
            "torch.no_grad()) for evaluation.",
        )
    return CheckResult("model_modes", True, evidence)


def _mode_text(what: str, modes: list[bool]) -> str:
    if not modes:
        return f"{what}: no forward pass seen"
    train = sum(modes)
    return f"{what}: {train} of {len(modes)} forward passes in train mode"


def check_softmax_output(
    model: nn.Module, x: torch.Tensor, loss_fn: Callable | None = None
) -> CheckResult:
    """Does the model output logits (what ``CrossEntropyLoss`` expects)?

    Looks at the outputs of a copy in eval mode on ``x``: all in [0, 1] with every row summing
    to 1 means the model ends in a softmax; ``nn.CrossEntropyLoss`` then applies log-softmax to
    probabilities, which squashes the gradients and slows or stalls training. With
    ``nn.NLLLoss`` the outputs must instead be log-probabilities (rows whose exp sums to 1).

    Args:
        model: the learner's model.
        x: a batch of inputs (float (B, C, H, W)).
        loss_fn: the loss (default: cross-entropy).

    Returns:
        A :class:`CheckResult` named ``softmax_output``.
    """
    import copy

    with preserved_rng():
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            out = m(x.to(model_device(m))).float()
    if out.ndim != 2:
        return not_applicable(
            "softmax_output", f"outputs have shape {tuple(out.shape)}, not (B, C)."
        )
    row_sums = out.sum(dim=1)
    probs = bool(out.min() >= 0 and out.max() <= 1 and (row_sums - 1).abs().max() < 1e-3)
    log_probs = bool(out.max() <= 1e-6 and (torch.logsumexp(out, dim=1).abs().max() < 1e-3))
    nll = isinstance(loss_fn, nn.NLLLoss) or getattr(loss_fn, "__name__", "") == "nll_loss"
    evidence = (
        f"outputs range [{fmt(float(out.min()))}, {fmt(float(out.max()))}], row sums "
        f"{fmt(float(row_sums.min()))}..{fmt(float(row_sums.max()))}"
    )
    if probs:
        return CheckResult(
            "softmax_output",
            False,
            evidence + ": every row is a probability distribution, so the model ends in a softmax.",
            "Return raw logits (remove the final Softmax); CrossEntropyLoss applies log-softmax "
            "itself.",
        )
    if nll and not log_probs:
        return CheckResult(
            "softmax_output",
            False,
            evidence + ": NLLLoss expects log-probabilities but these are not.",
            "Use nn.CrossEntropyLoss on logits, or add LogSoftmax before NLLLoss.",
        )
    kind = "log-probabilities" if log_probs else "logits"
    return CheckResult("softmax_output", True, evidence + f": {kind}.")


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable | None = None
) -> CheckResult:
    """One forward/backward pass on a copy: is the loss finite, is the gradient useful?

    Fails on a NaN/inf loss, NaN/inf gradients, or a total gradient norm of 0 (nothing would
    change). Notes trainable parameters that receive no gradient (not used in ``forward``) or an
    exactly zero one (e.g. dead ReLUs, saturated Tanh).

    Args:
        model: the learner's model (a copy in train mode is used).
        x, y: one batch.
        loss_fn: the loss (default ``nn.CrossEntropyLoss()``).

    Returns:
        A :class:`CheckResult` named ``gradients``; ``details["norms"]`` maps parameter names to
        gradient norms.
    """
    import copy

    loss_fn = loss_fn or nn.CrossEntropyLoss()
    with preserved_rng():
        m = copy.deepcopy(model).train()
        m.zero_grad(set_to_none=True)
        xb, yb = _on_device(m, x, y)
        loss = loss_fn(m(xb), yb)
        loss_value = float(loss.detach())
        if not loss.requires_grad:
            return CheckResult(
                "gradients",
                False,
                f"loss {fmt(loss_value)} does not depend on any trainable parameter (no graph).",
                "Remove .detach(), .item(), argmax or torch.no_grad() between the model output "
                "and the loss.",
                details={"loss": loss_value, "total_norm": 0.0, "norms": {}},
            )
        if math.isfinite(loss_value):
            loss.backward()
    norms, unused, zero, nonfinite = {}, [], [], []
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            unused.append(name)
            continue
        value = float(p.grad.detach().float().norm())
        norms[name] = value
        if not math.isfinite(value):
            nonfinite.append(name)
        elif value == 0.0:
            zero.append(name)
    total = math.sqrt(sum(v * v for v in norms.values())) if norms else 0.0
    evidence = f"loss {fmt(loss_value)}, gradient norm {fmt(total)} over {len(norms)} tensors"
    details = {"loss": loss_value, "total_norm": total, "norms": norms}
    if unused:
        evidence += f"; no gradient for {_names(unused)} (not used in forward?)"
    if zero and len(zero) < len(norms):
        evidence += f"; zero gradient for {_names(zero)}"
    if not math.isfinite(loss_value) or nonfinite:
        return CheckResult(
            "gradients",
            False,
            evidence + ": NaN or inf values.",
            "Look for log(0), division by zero, a too-large learning rate, or bad inputs.",
            details=details,
        )
    if total == 0.0:
        return CheckResult(
            "gradients",
            False,
            evidence + ": the gradient is zero, so training cannot change anything.",
            "Check that the loss depends on the model output (no .detach(), no argmax, no "
            "torch.no_grad()) and that parameters require gradients.",
            details=details,
        )
    return CheckResult("gradients", True, evidence + ".", details=details)


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_optimizer_params(model: nn.Module, optimizer: torch.optim.Optimizer) -> CheckResult:
    """Does the optimizer update exactly the model's trainable parameters?

    An optimizer built for another model object (e.g. before the model was re-created in a
    notebook) updates tensors the model no longer uses: the loss never moves.

    Args:
        model: the learner's model.
        optimizer: the learner's optimizer.

    Returns:
        A :class:`CheckResult` named ``optimizer_params``.
    """
    trainable = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    held_ids = {id(p) for p in held}
    missing = [name for pid, name in trainable.items() if pid not in held_ids]
    foreign = [p for p in held if id(p) not in trainable]
    evidence = (
        f"the optimizer holds {len(held)} tensors; the model has {len(trainable)} trainable ones"
    )
    if missing or foreign:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} model tensors are not in the optimizer ({_names(missing)})"
            )
        if foreign:
            parts.append(f"{len(foreign)} optimizer tensors do not belong to this model")
        return CheckResult(
            "optimizer_params",
            False,
            evidence + "; " + "; ".join(parts) + ".",
            "Create the optimizer after the model: optimizer = Adam(model.parameters(), lr=...).",
        )
    return CheckResult("optimizer_params", True, evidence + ".")
