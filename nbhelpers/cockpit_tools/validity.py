"""Is what Cockpit tracks meaningful? Layers that mix the examples of a batch, unreset gradients.

Every quantity that needs a BackPACK extension (Alpha, the gradient tests, histograms,
curvature) assumes that the loss of one example depends on that example alone. A layer that
mixes the examples of a batch (BatchNorm in train mode, a parameter-free
``F.batch_norm(x, None, None, training=True)``, anything computing batch statistics) breaks
that: BackPACK still returns numbers, but they are not per-example quantities. Such layers
are found by what they do, never by their type: change one example of a small probe batch
and see whether the outputs of the *other* examples change (:func:`mixes_examples`).

* :func:`mixing_layers`: before training, for the guard (``guard``, ``make_cockpit``,
  ``CockpitHook``, ``make_quantities(model=...)``).
* :class:`StepChecks`: inside every Cockpit backward context (installed by
  :mod:`~nbhelpers.cockpit_tools.compat`, so also in a plain ``cockpit.Cockpit`` built from
  ``make_quantities`` or ``cockpit.utils.configuration``): at a step with BackPACK extensions
  every module BackPACK visits is checked once with its real input, and a mixing one stops
  the step with :class:`BatchMixingError` (a layer BackPACK has no rule for stops it too,
  named, instead of failing later in a quantity); and when a quantity that compares ``p.grad`` with
  this batch's per-example gradients (registry field ``needs_zero_grad``: Alpha, the
  gradient tests, GSNR) is tracked while ``p.grad`` already holds a gradient before the
  backward pass, a :class:`GradientsNotResetWarning` says once why its values are then
  meaningless.
"""

from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager

import torch
from torch import Tensor, nn

#: Examples in a probe batch.
PROBE_EXAMPLES = 4


class BatchMixingError(RuntimeError):
    """A layer mixes the examples of a batch, so per-example quantities do not exist."""


class GradientsNotResetWarning(UserWarning):
    """Quantities that compare the gradient with per-example gradients run on an accumulated
    gradient (``optimizer.zero_grad()`` missing, or gradient accumulation)."""


@contextmanager
def _quiet(x: Tensor):
    """No autograd; the random state restored afterwards."""
    cpu = x.device.type == "cpu"
    fork = torch.random.fork_rng(
        devices=[] if cpu else [x.device], device_type=None if cpu else x.device.type
    )
    with fork, torch.no_grad():
        yield


def _output(module: nn.Module, batch: Tensor) -> Tensor | None:
    """``module(batch)``'s first tensor, run on copies of its buffers: running statistics and
    their version counters (autograd checks them) stay untouched."""
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    torch.manual_seed(0)
    output = torch.func.functional_call(module, buffers, (batch,))
    out = output[0] if isinstance(output, tuple | list) and output else output
    return out if isinstance(out, Tensor) else None


def mixes_examples(module: nn.Module, x: Tensor) -> bool:
    """Whether changing example 0 of ``x`` changes ``module``'s output for the other examples.

    Runs ``module`` twice on the first :data:`PROBE_EXAMPLES` examples of ``x`` (in its current
    mode, with the same random seed, under ``torch.no_grad()``), the second time with example
    0 replaced by ``1 - 2 x_0``. Its buffers and the random state stay untouched.

    Args:
        module: any module taking one batched tensor (first axis: examples).
        x: a batch of its inputs, at least 2 examples (fewer: False, nothing to compare).

    Returns:
        True if the other examples' outputs changed (beyond float round-off).
    """
    if x.dim() == 0 or len(x) < 2 or not x.is_floating_point():
        return False
    x = x[:PROBE_EXAMPLES].detach()
    changed = x.clone()
    changed[0] = 1 - 2 * x[0]
    with _quiet(x):
        a, b = _output(module, x), _output(module, changed)
    if a is None or b is None or a.dim() == 0 or len(a) != len(x):
        return False
    scale = float(a[1:].abs().max()) if a[1:].numel() else 0.0
    return not torch.allclose(a[1:], b[1:], rtol=1e-4, atol=1e-6 * (1 + scale))


def _label(name: str, module: nn.Module) -> str:
    return f"{name or 'model'} ({type(module).__name__})"


def mixing_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Layers of ``model`` that mix the examples of a batch, found by what they do.

    One probe forward pass of :data:`PROBE_EXAMPLES` random examples in train mode (the mode
    of training) records every leaf module's
    input; each leaf is then checked with :func:`mixes_examples`, and the whole model too (a
    functional ``F.batch_norm`` between layers mixes without any leaf doing so). Modes are
    restored; buffers are never touched (copies are used).

    Args:
        model: the network.
        input_shape: one example's shape, e.g. (3, 32, 32).

    Returns:
        Labels like ``"bn1 (BatchNorm2d)"``; ``"model (Net)"`` when only the whole forward
        mixes; empty when no layer mixes.
    """
    param = next(model.parameters(), None)
    dtype, device = (param.dtype, param.device) if param is not None else (torch.float32, "cpu")
    x = torch.rand((PROBE_EXAMPLES, *input_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=dtype)
    inputs: dict[str, Tensor] = {}
    leaves = {n: m for n, m in model.named_modules() if not list(m.children())}

    def recorder(name):
        def hook(module, args, output):
            inputs.setdefault(name, args[0] if args else None)

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in leaves.items()]
    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        with _quiet(x):
            _output(model, x)
        found = [
            _label(n, leaves[n])
            for n, inp in inputs.items()
            if isinstance(inp, Tensor) and mixes_examples(leaves[n], inp)
        ]
        if not found and mixes_examples(model, x):
            found = [_label("", model)]
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return found


#: What to do when a layer mixes the examples.
MIXING_ADVICE = (
    "Keep Loss, GradNorm, Distance, UpdateSize (preset 'basic'; quantities_for(model, preset) "
    "picks the valid ones), or use GroupNorm (see BATCHNORM_NOTE)."
)


def mixing_reason(layers: list[str]) -> str:
    """Why per-example quantities do not exist with ``layers`` (no final period)."""
    shown = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
    return (
        f"{shown} mix{'es' if len(layers) == 1 else ''} the examples of a batch (changing one "
        "example changed the others' outputs, as BatchNorm in train mode does), so "
        "per-example gradients and curvature do not exist"
    )


class StepChecks:
    """The checks run inside each Cockpit backward context (module docstring).

    Modules checked for mixing are remembered (weakly) with the mode they were checked in,
    so each is probed once per mode and process.
    """

    checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def on_enter(cls, cockpit, step: int, extensions) -> None:
        """Before the backward pass: warn once per Cockpit if gradients were not reset."""
        if getattr(cockpit, "_nbhelpers_warned_reset", False) or not extensions:
            return
        from nbhelpers.cockpit_tools.quantities import QUANTITIES

        names = [
            type(q).__name__
            for q in cockpit.quantities
            if getattr(QUANTITIES.get(type(q).__name__), "needs_zero_grad", False)
            and q.extensions(step)
        ]
        stale = any(p.grad is not None and bool(p.grad.any()) for p in cockpit.params)
        if names and stale:
            cockpit._nbhelpers_warned_reset = True
            warnings.warn(_RESET_MESSAGE.format(step=step, names=", ".join(names)),
                          GradientsNotResetWarning, stacklevel=3)  # fmt: skip

    @classmethod
    def module_hook(cls, module: nn.Module) -> None:
        """BackPACK extension hook, before Cockpit's own: stop the step if BackPACK had no
        rule for ``module`` (it only warns, and the quantities would fail later with a
        misleading error) or if ``module`` mixes the examples."""
        from backpack.context import CTX

        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        for ext in CTX.get_active_exts():
            if any(not hasattr(p, ext.savefield) for p in params):
                raise NotImplementedError(
                    f"Extension saving to {ext.savefield} does not have an extension for "
                    f"Module {type(module)} (BackPACK only warned and left it out)"
                )
        modes = cls.checked.setdefault(module, set())
        if module.training in modes or hasattr(module, "input1"):
            return
        modes.add(module.training)
        x = getattr(module, "input0", None)
        if isinstance(x, Tensor) and mixes_examples(module, x):
            reason = mixing_reason([_label("layer", module)])
            raise BatchMixingError(f"{reason}. {MIXING_ADVICE}")


_RESET_MESSAGE = (
    "Cockpit step {step}: {names} tracked while the gradients were not reset (p.grad already "
    "held a gradient before this backward pass: optimizer.zero_grad() is missing, or "
    "gradients are accumulated). They compare the accumulated p.grad with this batch's "
    "per-example gradients, so their values mean nothing (alpha then sits near -1 for any "
    "learning rate). Call optimizer.zero_grad() before loss.backward() to read them."
)
