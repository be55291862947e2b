"""Cockpit in a training loop: the hook for ``nbhelpers.train.train``, a guarded Cockpit for
your own loop, and the quantities a model can use.

Both build the Cockpit from the quantities :func:`~nbhelpers.cockpit_tools.preflight.guard`
accepts, after extending the model and the loss function with BackPACK (and enabling the
GroupNorm rules); per-example losses are ``F.cross_entropy(logits, y, reduction="none")``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.cockpit_tools.compat import import_cockpit, known_warnings_silenced, write_log
from nbhelpers.cockpit_tools.groupnorm import enable_groupnorm_support
from nbhelpers.cockpit_tools.logs import log_frame
from nbhelpers.cockpit_tools.plots import LiveView
from nbhelpers.cockpit_tools.preflight import guard
from nbhelpers.cockpit_tools.quantities import DEFAULT_PRESET, QuantitySpec, preset_specs
from nbhelpers.validate import invalid, one_of

_SUPPORT_KINDS = ("batch mixing", "unsupported layer")
_CREATE_GRAPH_WARNING = (r"Using backward\(\) with create_graph=True", UserWarning)


def quantities_for(
    model: nn.Module,
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    every: Mapping[str, int] | None = None,
) -> list[QuantitySpec]:
    """The specs of ``preset`` that are valid for ``model`` (support only, no memory check).

    With a layer that mixes the examples of a batch (BatchNorm in train mode, ...) this keeps
    Loss, GradNorm, Distance, UpdateSize and HessMaxEV (see ``BATCHNORM_NOTE``); layers
    BackPACK cannot handle remove the quantities that need BackPACK there.

    Args:
        model: the network.
        preset: preset name or specs.
        every: quantity name -> tracking interval override.

    Returns:
        The list of valid :class:`QuantitySpec`.
    """
    specs = preset_specs(preset, every=every)
    report = guard(model, 1, specs, available_bytes=1 << 60)
    return [s for s, row in zip(specs, report.rows, strict=True) if row.kind not in _SUPPORT_KINDS]


def _extend(model: nn.Module, loss_fn: Any) -> None:
    """Check the loss function, enable the GroupNorm rules, extend both with BackPACK."""
    from backpack import extend

    if not isinstance(loss_fn, nn.CrossEntropyLoss):
        raise TypeError(
            "Cockpit here needs loss_fn = nn.CrossEntropyLoss() (BackPACK extends it and the "
            f"per-example losses are cross-entropies); got {type(loss_fn).__name__}"
        )
    if loss_fn.reduction != "mean":
        raise invalid(
            "loss_fn.reduction", loss_fn.reduction, "'mean' (Cockpit assumes the batch mean)"
        )
    enable_groupnorm_support()
    extend(model)
    extend(loss_fn)


def _guarded_cockpit(model: nn.Module, specs, on_refusal: str, guard_options: dict):
    """``(cockpit, report)``: a Cockpit of the quantities the guard accepts.

    Refused quantities are printed and left out (``on_refusal="drop"``) or raise
    :class:`~nbhelpers.cockpit_tools.preflight.CockpitGuardError` (``"raise"``).
    """
    report = guard(model, preset=specs, **guard_options)
    if not report.ok:
        if on_refusal == "raise":
            report.raise_if_refused()
        kept = ", ".join(s.label for s in report.accepted) or "nothing"
        print(report.message() + f"\nTracking only: {kept}.")
    params = [p for p in model.parameters() if p.requires_grad]
    cockpit = import_cockpit().Cockpit(params, quantities=[s.build() for s in report.accepted])
    return cockpit, report


def make_cockpit(
    model: nn.Module,
    loss_fn: nn.Module,
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    batch_size: int,
    every: Mapping[str, int] | None = None,
    on_refusal: str = "drop",
    available_bytes: int | None = None,
    input_shape: tuple[int, ...] = (3, 32, 32),
):
    """Extend ``model`` and ``loss_fn`` with BackPACK and build a guarded Cockpit, for your own loop.

    Use it as in the tutorial::

        cockpit, report = make_cockpit(model, loss_fn, "cheap", batch_size=256)
        ...
        losses = F.cross_entropy(logits, y, reduction="none")
        with cockpit(step, info={"batch_size": len(y), "individual_losses": losses,
                                 "loss": loss, "optimizer": optimizer}):
            loss.backward(create_graph=cockpit.create_graph(step))

    With ``"optimizer"`` in ``info`` every step's learning rate is logged too (the
    dashboard's learning-rate panel). The guard assumes an optimizer other than plain SGD
    (Alpha then keeps per-example gradients: the larger memory estimate).

    Args:
        model: the network (extended in place).
        loss_fn: ``nn.CrossEntropyLoss()`` with mean reduction (extended in place).
        preset: preset name or specs.
        batch_size: training batch size, for the memory guard.
        every: quantity name -> tracking interval override.
        on_refusal: "drop" (leave refused quantities out and print why) or "raise"
            (raise ``CockpitGuardError``).
        available_bytes: free memory to assume instead of asking the system.
        input_shape: one example's shape.

    Returns:
        ``(cockpit, report)``: the ``cockpit.Cockpit`` and the ``GuardReport``.

    Raises:
        CockpitGuardError: something was refused and ``on_refusal="raise"``.
        ValueError, TypeError: bad arguments (see ``guard``), a loss other than mean
            cross-entropy.
    """
    one_of("on_refusal", on_refusal, ("drop", "raise"))
    specs = preset_specs(preset, every=every)
    _extend(model, loss_fn)
    options = {"batch_size": batch_size, "available_bytes": available_bytes}
    return _guarded_cockpit(model, specs, on_refusal, {**options, "input_shape": input_shape})


def _log_last_updates(cockpit, last_step: int) -> None:
    """Finish the two-step quantities whose end point needs no backward pass (UpdateSize):
    their value for ``last_step`` is computed one step later, which never comes."""
    end = last_step + 1
    for q in cockpit.quantities:
        shift = getattr(q, "SAVE_SHIFT", 0)
        if shift and q.is_end(end) and not q.extensions(end) and not q.create_graph(end):
            q.track(end, cockpit.params, None)


class CockpitHook:
    """Cockpit for :func:`nbhelpers.train.train` (the hook protocol of that module).

    * ``on_train_begin``: extends the model and the loss function with BackPACK. BackPACK
      then keeps every module's input and output in each forward pass for its backward
      pass; the hook lets it do so only before steps where a quantity asks for a BackPACK
      extension (elsewhere that memory is freed as in a plain step, which saves time too).
    * ``backward`` (first call): runs the guard with the real batch size and builds the
      Cockpit from the accepted quantities; every call: wraps ``loss.backward()`` in
      ``with cockpit(step, info=...)`` with the per-example losses
      ``F.cross_entropy(logits, y, reduction="none")``, the batch size and the optimizer
      (the patched context records the step's learning rate from it).
    * ``on_epoch_end``: records losses, accuracies and the learning rate
      (``Cockpit.log``) for the dashboard's performance and learning-rate gauges.
    * ``on_train_end``: logs the last step's update size (Cockpit logs a step's update only
      at the next step's backward pass), writes the log if ``logpath`` is set; last live
      refresh.

    One hook per ``train()`` call (steps restart at 0 in every call).

    Args:
        preset: preset name (``PRESETS``) or a list of :class:`QuantitySpec`.
        every: quantity name -> tracking interval override, e.g. ``{"Alpha": 5}``.
        exclude: quantity names to leave out.
        logpath: write the JSON log here at the end (".json" optional).
        live: False (no live view), True (default instruments), a list of
            instrument names, or a :class:`LiveView`.
        on_refusal: "drop" (default: refused quantities are left out, with a printed
            explanation) or "raise" (``CockpitGuardError`` before the first step).
        available_bytes: free memory for the guard instead of asking the system.

    Attributes:
        cockpit: the ``cockpit.Cockpit`` (None before the first step).
        report: the ``GuardReport`` (None before the first step).
        optimizer_name: class name of the optimizer.

    Raises:
        ValueError: unknown preset/quantity names, bad ``on_refusal``.
    """

    def __init__(
        self,
        preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
        *,
        every: Mapping[str, int] | None = None,
        exclude: Iterable[str] = (),
        logpath: str | os.PathLike | None = None,
        live: bool | Iterable[str] | LiveView = False,
        on_refusal: str = "drop",
        available_bytes: int | None = None,
    ):
        self.on_refusal = one_of("on_refusal", on_refusal, ("drop", "raise"))
        self.specs = preset_specs(preset, every=every, exclude=exclude)
        self.logpath, self.available_bytes = logpath, available_bytes
        if live is True or isinstance(live, LiveView):
            self.live = LiveView() if live is True else live
        else:
            self.live = LiveView([live] if isinstance(live, str) else live) if live else None
        self.cockpit = self.report = self.optimizer = None
        self.optimizer_name = ""
        self._last_step = -1
        self._handles: list = []
        self._store_io: list[bool] = []

    # -- hook protocol -------------------------------------------------------------------
    def on_train_begin(self, model: nn.Module, optimizer, loss_fn: nn.Module) -> None:
        """Extend ``model`` and ``loss_fn`` with BackPACK (in place)."""
        _extend(model, loss_fn)
        self.optimizer, self.optimizer_name = optimizer, type(optimizer).__name__
        self._handles = [
            model.register_forward_pre_hook(self._before_forward),
            model.register_forward_hook(self._after_forward, always_call=True),
        ]

    def _before_forward(self, module, args) -> None:
        """Let BackPACK keep inputs and outputs only for a step with a BackPACK extension."""
        from backpack import disable

        self._store_io.append(disable.store_io)
        step = self._last_step + 1
        if self.cockpit is not None and not any(
            q.extensions(step) for q in self.cockpit.quantities
        ):
            disable.store_io = False

    def _after_forward(self, module, args, output) -> None:
        from backpack import disable

        if self._store_io:
            disable.store_io = self._store_io.pop()

    def backward(self, step: int, model, x, y, logits, loss, loss_fn) -> bool:
        """Run ``loss.backward()`` inside Cockpit's context for ``step``; always returns True."""
        try:
            return self._backward(step, model, x, y, logits, loss)
        except Exception:
            self._remove_handles()  # train() calls no on_train_end after an error
            raise

    def _remove_handles(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _backward(self, step: int, model, x, y, logits, loss) -> bool:
        if self.cockpit is None:
            options = {"batch_size": len(x), "device": x.device, "input_shape": x.shape[1:]}
            options |= {"available_bytes": self.available_bytes, "optimizer": self.optimizer}
            self.cockpit, self.report = _guarded_cockpit(
                model, self.specs, self.on_refusal, options
            )
        with torch.no_grad():
            losses = F.cross_entropy(logits.detach(), y, reduction="none")
        info = {"batch_size": len(x), "individual_losses": losses, "loss": loss}
        info["optimizer"] = self.optimizer
        create_graph = self.cockpit.create_graph(step)
        with known_warnings_silenced(_CREATE_GRAPH_WARNING), self.cockpit(step, info=info):
            loss.backward(create_graph=create_graph)
        if create_graph:  # drop the graph kept for Hessian-vector products (no reference cycle)
            for p in self.cockpit.params:
                p.grad = None if p.grad is None else p.grad.detach()
        self._last_step = step
        if self.live is not None and self.live.due(step):
            self.live.update(self, step)
        return True

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Record the epoch's losses, accuracies and learning rate (``Cockpit.log``)."""
        if self.cockpit is None or self._last_step < 0:
            return

        def get(*keys):
            found = [float(metrics[k]) for k in keys if metrics.get(k) is not None]
            return found[0] if found else None

        keys = [("train_loss", "running_loss"), ("valid_loss",), ("test_loss",)]
        keys += [("train_accuracy", "running_accuracy"), ("valid_accuracy",), ("test_accuracy",)]
        self.cockpit.log(self._last_step, epoch, *(get(*k) for k in keys), get("lr"))

    def on_train_end(self, history) -> None:
        """Write the log (if ``logpath``) and refresh the live view a last time."""
        self._remove_handles()
        if self.cockpit is None:
            return
        _log_last_updates(self.cockpit, self._last_step)
        if self.logpath is not None:
            write_log(self.cockpit, self.logpath)
        if self.live is not None:
            self.live.update(self, self._last_step, force=True)

    # -- results -------------------------------------------------------------------------
    @property
    def log(self) -> dict:
        """The log so far, ``{step: {quantity: value}}`` (empty before the first step)."""
        return {} if self.cockpit is None else self.cockpit.get_output()

    def get_output(self) -> dict:
        """Same as :attr:`log` (so the hook works wherever a Cockpit is accepted)."""
        return self.log

    def frame(self):
        """The log as a ``pandas.DataFrame`` (see ``log_frame``)."""
        return log_frame(self.log)
