"""Checks of the training step: zero_grad, train/eval mode, softmax before the loss, gradients.

All of them work on deep copies of the learner's model and optimizer, restore every random
state, and put the learner's objects back if a learner-supplied function touched them anyway
(:func:`nbhelpers.state.preserved_state`).

- :func:`check_zero_grad`: the learner's ``train_step(model, optimizer, x, y)`` run three times on
  the same batch with the learning rate set to 0 in the copy: the gradient must not grow.
- :func:`check_model_modes`: evaluation runs in eval mode, training in train mode (matters for
  Dropout and BatchNorm).
- :func:`check_softmax_output`: the model returns logits, not probabilities (or outputs that are
  never negative, a ReLU on the logits), when the loss is ``CrossEntropyLoss`` (which applies
  log-softmax itself); :func:`output_kind` is the test, shared with the watch.
- :func:`check_gradients`: the loss is finite; the gradient norm is neither 0 nor NaN/inf.
- :func:`check_optimizer_params`: the optimizer holds exactly the model's trainable parameters.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nbhelpers.state import model_device, preserved_rng, preserved_state

from .access import Limited, eval_outputs, untouched
from .results import HINTS, TOUCHED_NOTE, CheckResult, fmt, not_applicable, verdict

#: Layers that behave differently in train and eval mode.
MODE_SENSITIVE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
#: check_zero_grad: calls of the learner's step, and the gradient growth over them that fails.
_ZERO_GRAD_STEPS, _MAX_GROWTH = 3, 1.5


def grad_norm(model: nn.Module) -> float | None:
    """Euclidean norm of all parameter gradients together (None when no gradient is stored)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms)).cpu()) if norms else None


@contextmanager
def _copy_at_lr_zero(model: nn.Module, optimizer: torch.optim.Optimizer | None):
    """Yield ``(model copy, optimizer copy, state)``: copies wired to each other (one deepcopy),
    in train mode, learning rate 0 (so parameters and gradients stay comparable; a plain SGD
    when there is no optimizer). ``state["changed"]`` is True afterwards when the learner's own
    model was changed (through globals); it has then been put back."""
    with preserved_state(model, optimizer) as state, preserved_rng():
        m, opt = copy.deepcopy((model, optimizer))
        opt = opt if opt is not None else torch.optim.SGD(m.parameters(), lr=0.0)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * 0  # a float stays a float, a tensor a tensor
        yield m.train(), opt, state


def _on_device(model: nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(model_device(model)) for t in tensors]


def check_zero_grad(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    train_step: Callable | None,
    x: torch.Tensor,
    y: torch.Tensor,
) -> CheckResult:
    """Does the learner's training step reset gradients before adding new ones?

    ``train_step(model, optimizer, x, y)`` is called 3 times on the same batch, with a
    copy of the model and of the optimizer whose learning rate is set to 0 (so the parameters
    and therefore the gradient stay the same) and the same random seed each time. With
    ``optimizer.zero_grad()`` the stored gradient norm stays constant; without it, gradients
    accumulate and the norm grows linearly (1x, 2x, 3x) -- the handover's bug (tutorial,
    "Debugging Strategy II"); it fails above 1.5x. A step that resets right after
    ``optimizer.step()`` leaves no gradient behind and passes; so does a step that accumulates
    several micro-batches inside and resets once.

    Args:
        model: the learner's model.
        optimizer: the learner's optimizer (None: a plain SGD on the copy).
        train_step: ``train_step(model, optimizer, x, y)`` doing one optimisation step.
        x, y: one batch (float (B, C, H, W), int64 (B,)).

    Returns:
        A :class:`CheckResult` named ``zero_grad``; ``details["norms"]`` lists the norms.
    """
    if train_step is None:
        hint = "Pass train_step=your_function (called as train_step(model, optimizer, x, y))."
        return not_applicable("zero_grad", "no train_step given.", hint)
    norms = []
    with _copy_at_lr_zero(model, optimizer) as (m, opt, state):
        m.zero_grad(set_to_none=True)
        xb, yb = _on_device(m, x, y)
        for _ in range(_ZERO_GRAD_STEPS):
            torch.manual_seed(0)
            train_step(m, opt, xb, yb)
            norms.append(grad_norm(m))
    note = TOUCHED_NOTE if state["changed"] else ""
    shown = ", ".join("none" if v is None else fmt(v) for v in norms)
    details = {"norms": norms}
    if all(not v for v in norms):
        evidence = f"gradients are cleared after every step (stored norms: {shown})."
        return CheckResult("zero_grad", True, evidence + note, details=details)
    if not norms[0] or norms[-1] is None:
        why = f"gradient norms {shown}: cannot compare." + note
        return not_applicable("zero_grad", why, "Look at train_step.")
    growth = details["growth"] = norms[-1] / norms[0]
    evidence = (
        f"gradient norm after {len(norms)} identical steps on one batch (learning rate 0 in a "
        "copy): "
        f"{shown} (x{growth:.2f})"
    )
    if growth > _MAX_GROWTH:
        evidence += ": gradients add up from step to step." + note
        return CheckResult("zero_grad", False, evidence, HINTS["zero_grad"], details=details)
    return CheckResult("zero_grad", True, evidence + "." + note, details=details)


def _modes_text(what: str, modes: list[bool]) -> str:
    if not modes:
        return f"{what}: no forward pass seen"
    return f"{what}: {sum(modes)} of {len(modes)} forward passes in train mode"


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
            of at most 64 examples are used).

    Returns:
        A :class:`CheckResult` named ``model_modes``.
    """
    can_eval = evaluate_fn is not None and eval_loader is not None
    can_train = train_step is not None and x is not None and y is not None
    if not (can_eval or can_train):
        why = "neither evaluate_fn with an eval loader nor train_step with a batch given."
        hint = "Pass evaluate_fn=... and/or train_step=... to check train/eval modes."
        return not_applicable("model_modes", why, hint)
    sensitive = sorted({type(m).__name__ for m in model.modules() if isinstance(m, MODE_SENSITIVE)})
    problems, parts, modes = [], [], []
    with _copy_at_lr_zero(model, optimizer) as (m, opt, state):
        m.register_forward_pre_hook(lambda module, args: modes.append(module.training))
        if can_eval:
            with untouched(eval_loader):
                evaluate_fn(m, Limited(eval_loader, 2, 64))
            parts.append(_modes_text("evaluation", modes))
            if any(modes):
                problems.append("evaluation runs in train mode")
            if not m.training:
                parts.append("evaluation leaves the model in eval mode")
        if can_train:
            modes.clear()
            train_step(m.train(), opt, *_on_device(m, x, y))
            parts.append(_modes_text("train_step", modes))
            if not all(modes):
                problems.append("the training step runs in eval mode")
    evidence = "; ".join(parts) + f"; mode-dependent layers: {', '.join(sensitive) or 'none'}."
    evidence += TOUCHED_NOTE if state["changed"] else ""
    return verdict("model_modes", problems if sensitive else [], evidence, HINTS["model_modes"])


def output_kind(out: torch.Tensor) -> str:
    """What a batch of model outputs ``(B, C)`` looks like to a classification loss.

    Returns:
        ``"probabilities"`` (every row in [0, 1] summing to 1: a softmax), ``"log-probabilities"``
        (rows whose exp sums to 1), ``"nonnegative"`` (never below 0, e.g. a ReLU or a sigmoid
        after the last layer) or ``"logits"``.
    """
    out = out.detach().float()
    low, high = float(out.min()), float(out.max())
    if low >= 0 and high <= 1 and float((out.sum(dim=1) - 1).abs().max()) < 1e-3:
        return "probabilities"
    if high <= 1e-6 and float(torch.logsumexp(out, dim=1).abs().max()) < 1e-3:
        return "log-probabilities"
    return "nonnegative" if low >= 0 else "logits"


_OUTPUT_FAULTS = {
    "probabilities": ("every row is a probability distribution: the model ends in a softmax", "softmax_output"),
    "nonnegative": ("no output is negative: a ReLU (or another non-negative function) is applied to the logits", "nonnegative_logits"),
}  # fmt: skip


def check_softmax_output(
    model: nn.Module, x: torch.Tensor, loss_fn: Callable | None = None
) -> CheckResult:
    """Does the model output logits (what ``CrossEntropyLoss`` expects)?

    Looks at the outputs of a copy in eval mode on ``x`` (:func:`output_kind`): rows that are
    probability distributions mean the model ends in a softmax; ``nn.CrossEntropyLoss`` then
    applies log-softmax to probabilities, which squashes the gradients and slows or stalls
    training. Outputs that are never negative mean a ReLU (or sigmoid) on the logits: the
    model cannot lower the score of a wrong class below zero. With ``nn.NLLLoss`` the outputs
    must instead be log-probabilities (rows whose exp sums to 1).

    Args:
        model: the learner's model.
        x: a batch of inputs (float (B, C, H, W)).
        loss_fn: the loss (default: cross-entropy).

    Returns:
        A :class:`CheckResult` named ``softmax_output``.
    """
    out = eval_outputs(model, x)
    if out.ndim != 2:
        return not_applicable(
            "softmax_output", f"outputs have shape {tuple(out.shape)}, not (B, C)."
        )
    kind, row_sums = output_kind(out), out.sum(dim=1)
    nll = isinstance(loss_fn, nn.NLLLoss) or getattr(loss_fn, "__name__", "") == "nll_loss"
    evidence = (
        f"outputs range [{fmt(out.min())}, {fmt(out.max())}], row sums "
        f"{fmt(row_sums.min())}..{fmt(row_sums.max())}"
    )
    if kind in _OUTPUT_FAULTS:
        problem, hint = _OUTPUT_FAULTS[kind]
        return CheckResult("softmax_output", False, f"{evidence}: {problem}.", HINTS[hint])
    if nll and kind != "log-probabilities":
        problem = ": NLLLoss expects log-probabilities but these are not."
        hint = "Use nn.CrossEntropyLoss on logits, or add LogSoftmax before NLLLoss."
        return CheckResult("softmax_output", False, evidence + problem, hint)
    return CheckResult("softmax_output", True, evidence + f": {kind}.")


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _gradient_evidence(m: nn.Module, loss_value: float) -> tuple[str, dict, bool]:
    """Evidence text, details and "NaN/inf found" from the gradients stored in ``m``."""
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    norms = {n: float(g.detach().float().norm()) for n, g in grads.items() if g is not None}
    unused = [n for n, g in grads.items() if g is None]
    zero = [n for n, v in norms.items() if v == 0.0]
    total = math.sqrt(sum(v * v for v in norms.values()))
    evidence = f"loss {fmt(loss_value)}, gradient norm {fmt(total)} over {len(norms)} tensors"
    if unused:
        evidence += f"; no gradient for {_names(unused)} (not used in forward?)"
    if zero and len(zero) < len(norms):
        evidence += f"; zero gradient for {_names(zero)}"
    nonfinite = not math.isfinite(loss_value) or not all(math.isfinite(v) for v in norms.values())
    return evidence, {"loss": loss_value, "total_norm": total, "norms": norms}, nonfinite


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable | None = None
) -> CheckResult:
    """One forward/backward pass on a copy: is the loss finite, is the gradient useful?

    Fails on a NaN/inf loss, NaN/inf gradients, or a total gradient norm of 0 (nothing would
    change), or a loss with no graph back to the parameters. Notes trainable parameters that
    receive no gradient (not used in ``forward``) or an exactly zero one (e.g. dead ReLUs,
    saturated Tanh).

    Args:
        model: the learner's model (a copy in train mode is used).
        x, y: one batch.
        loss_fn: the loss (default ``nn.CrossEntropyLoss()``).

    Returns:
        A :class:`CheckResult` named ``gradients``; ``details["norms"]`` maps parameter names to
        gradient norms.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    with preserved_rng():
        m = copy.deepcopy(model).train()
        m.zero_grad(set_to_none=True)
        xb, yb = _on_device(m, x, y)
        loss = loss_fn(m(xb), yb)
        loss_value = float(loss.detach())
        if not loss.requires_grad:
            why = f"loss {fmt(loss_value)} does not depend on any trainable parameter (no graph)."
            hint = "Remove .detach(), .item(), argmax or torch.no_grad() between output and loss."
            details = {"loss": loss_value, "total_norm": 0.0, "norms": {}}
            return CheckResult("gradients", False, why, hint, details=details)
        if math.isfinite(loss_value):
            loss.backward()
    evidence, details, nonfinite = _gradient_evidence(m, loss_value)
    if nonfinite:
        problem, hint = ": NaN or inf values.", HINTS["gradients"]
    elif details["total_norm"] == 0.0:
        problem = ": the gradient is zero, so training cannot change anything."
        hint = HINTS["zero_gradient"]
    else:
        return CheckResult("gradients", True, evidence + ".", details=details)
    return CheckResult("gradients", False, evidence + problem, hint, details=details)


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
    missing = [name for pid, name in trainable.items() if pid not in {id(p) for p in held}]
    foreign = [p for p in held if id(p) not in trainable]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} model tensors are not in the optimizer ({_names(missing)})"
        )
    if foreign:
        problems.append(f"{len(foreign)} optimizer tensors do not belong to this model")
    return verdict(
        "optimizer_params",
        problems,
        f"the optimizer holds {len(held)} tensors; the model has {len(trainable)} trainable ones.",
        HINTS["optimizer_params"],
    )
