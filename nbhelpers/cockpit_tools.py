"""Cockpit that works today: compatibility, presets, a memory/support guard, plots, a training hook.

Cockpit (Schneider, Dangel & Hennig, NeurIPS 2021; ``pip install
cockpit-for-pytorch``) shows what happens inside a training run: step sizes,
gradient noise, curvature. This module is the one the notebooks import:

* importing it makes ``import cockpit`` work on today's stack (see
  :mod:`nbhelpers.cockpit_compat`); :func:`import_cockpit` also patches
  ``Cockpit.write`` and makes failed backward passes show their real cause;
* presets ``"basic"``, ``"cheap"`` (default, the tutorial's set), ``"standard"``,
  ``"thorough"`` (:mod:`nbhelpers.cockpit_presets`), curvature always from a
  generalised Gauss-Newton diagonal;
* :func:`guard` -- which quantities fit into memory and are valid for the model,
  before training (:mod:`nbhelpers.cockpit_guard`);
* BatchNorm: only the instruments that stay valid (:data:`BATCHNORM_NOTE`); GroupNorm
  gets full support (:mod:`nbhelpers.cockpit_groupnorm`, enabled by the guard and the hook);
* plots that work on every call in a notebook (:mod:`nbhelpers.cockpit_plots`);
* :class:`CockpitHook` for :func:`nbhelpers.train.train`, and the logs of two
  finished runs shipped with the package (:func:`load_shipped_log`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.cockpit_compat import (
    KNOWN_HARMLESS_WARNINGS,
    CockpitBackwardError,
    cockpit_version,
    explain_cockpit_error,
    import_cockpit,
    install_pkg_resources_shim,
    silence_known_warnings,
    write_log,
)
from nbhelpers.cockpit_groupnorm import enable_groupnorm_support
from nbhelpers.cockpit_guard import (
    CockpitGuardError,
    GuardReport,
    available_memory,
    batchnorm_layers,
    format_bytes,
    guard,
)
from nbhelpers.cockpit_plots import (
    INSTRUMENTS,
    LiveView,
    figure_to_png,
    load_log,
    log_frame,
    plot_alpha,
    plot_dashboard,
    plot_distance,
    plot_grad_norm,
    plot_gradient_tests,
    plot_instruments,
    plot_learning_rate,
    plot_loss,
)
from nbhelpers.cockpit_presets import (
    BATCHNORM_NOTE,
    DEFAULT_PRESET,
    PRESETS,
    QUANTITY_INFO,
    QuantitySpec,
    make_quantities,
    preset_markdown,
    preset_specs,
    preset_table,
)

__all__ = [
    "BATCHNORM_NOTE",
    "DEFAULT_PRESET",
    "INSTRUMENTS",
    "PRESETS",
    "QUANTITY_INFO",
    "SHIPPED_LOGS",
    "CockpitBackwardError",
    "CockpitGuardError",
    "CockpitHook",
    "GuardReport",
    "LiveView",
    "QuantitySpec",
    "available_memory",
    "batchnorm_layers",
    "cockpit_version",
    "enable_groupnorm_support",
    "explain_cockpit_error",
    "figure_to_png",
    "format_bytes",
    "guard",
    "import_cockpit",
    "load_log",
    "load_shipped_log",
    "log_frame",
    "make_cockpit",
    "make_quantities",
    "plot_alpha",
    "plot_dashboard",
    "plot_distance",
    "plot_grad_norm",
    "plot_gradient_tests",
    "plot_instruments",
    "plot_learning_rate",
    "plot_loss",
    "preset_markdown",
    "preset_specs",
    "preset_table",
    "quantities_for",
    "shipped_log_info",
    "shipped_log_path",
    "write_log",
]

# Importing this module is enough for a later plain ``import cockpit`` to work.
try:  # shim, version and the write/backward patches, so a plain `import cockpit` just works
    import_cockpit()
except ImportError:  # Cockpit not installed: said again, clearly, when it is used
    install_pkg_resources_shim()
silence_known_warnings()

_SUPPORT_KINDS = ("batchnorm", "unsupported layer")
_CREATE_GRAPH_WARNING = r"Using backward\(\) with create_graph=True will create a reference cycle"


def quantities_for(
    model: nn.Module,
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    every: Mapping[str, int] | None = None,
) -> list[QuantitySpec]:
    """The specs of ``preset`` that are valid for ``model`` (support only, no memory check).

    With BatchNorm this keeps Loss, GradNorm, Distance, UpdateSize and HessMaxEV
    (see :data:`BATCHNORM_NOTE`); layers BackPACK cannot handle remove the
    quantities that need BackPACK there.

    Args:
        model: the network.
        preset: preset name or specs.
        every: quantity name -> tracking interval override.

    Returns:
        The list of valid :class:`QuantitySpec`.
    """
    specs = preset_specs(preset, every=every)
    report = guard(model, 1, specs, available_bytes=1 << 60)
    return [
        spec for spec, row in zip(specs, report.rows, strict=True) if row.kind not in _SUPPORT_KINDS
    ]


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

    Args:
        model: the network (extended in place).
        loss_fn: ``nn.CrossEntropyLoss()`` with mean reduction (extended in place).
        preset: preset name or specs.
        batch_size: training batch size, for the memory guard.
        every: quantity name -> tracking interval override.
        on_refusal: "drop" (leave refused quantities out and print why) or "raise"
            (raise :class:`CockpitGuardError`).
        available_bytes: free memory to assume instead of asking the system.
        input_shape: one example's shape.

    Returns:
        ``(cockpit, report)``: the ``cockpit.Cockpit`` and the :class:`GuardReport`.

    Raises:
        CockpitGuardError: something was refused and ``on_refusal="raise"``.
        ValueError, TypeError: bad arguments (see :func:`guard`).
    """
    cockpit = import_cockpit()
    _check_loss_fn(loss_fn)
    _check_on_refusal(on_refusal)
    enable_groupnorm_support()
    report = guard(
        model,
        batch_size,
        preset,
        every=every,
        available_bytes=available_bytes,
        input_shape=input_shape,
    )
    _handle_refusals(report, on_refusal)
    from backpack import extend

    extend(model)
    extend(loss_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    return cockpit.Cockpit(params, quantities=[s.build() for s in report.accepted]), report


def _check_on_refusal(on_refusal: str) -> None:
    if on_refusal not in ("drop", "raise"):
        raise ValueError(f"on_refusal must be 'drop' or 'raise', got {on_refusal!r}")


def _check_loss_fn(loss_fn: Any) -> None:
    if not isinstance(loss_fn, nn.CrossEntropyLoss):
        raise TypeError(
            "Cockpit here needs loss_fn = nn.CrossEntropyLoss() (BackPACK extends it and the "
            f"per-example losses are cross-entropies); got {type(loss_fn).__name__}"
        )
    if loss_fn.reduction != "mean":
        raise ValueError(
            f"loss_fn.reduction must be 'mean' (Cockpit assumes the batch mean), got {loss_fn.reduction!r}"
        )


def _handle_refusals(report: GuardReport, on_refusal: str) -> None:
    if report.ok:
        return
    if on_refusal == "raise":
        report.raise_if_refused()
    kept = ", ".join(s.label for s in report.accepted) or "nothing"
    print(report.message() + f"\nTracking only: {kept}.")


class CockpitHook:
    """Cockpit for :func:`nbhelpers.train.train` (the hook protocol of that module).

    * ``on_train_begin``: extends the model and the loss function with BackPACK.
    * ``backward`` (first call): runs :func:`guard` with the real batch size and
      builds the Cockpit from the accepted quantities; every call: wraps
      ``loss.backward()`` in ``with cockpit(step, info=...)`` with the per-example
      losses ``F.cross_entropy(logits, y, reduction="none")``, the batch size and
      the optimizer, and records the learning rate of the step.
    * ``on_epoch_end``: records losses, accuracies and the learning rate
      (``Cockpit.log``) for the dashboard's performance and learning-rate gauges.
    * ``on_train_end``: writes the log if ``logpath`` is set; last live refresh.

    One hook per ``train()`` call (steps restart at 0 in every call).

    Args:
        preset: preset name (:data:`PRESETS`) or a list of :class:`QuantitySpec`.
        every: quantity name -> tracking interval override, e.g. ``{"Alpha": 5}``.
        exclude: quantity names to leave out.
        logpath: write the JSON log here at the end (".json" optional).
        live: False (no live view), True (default instruments), a list of
            instrument names, or a :class:`LiveView`.
        on_refusal: "drop" (default: refused quantities are left out, with a printed
            explanation) or "raise" (:class:`CockpitGuardError` before the first step).
        available_bytes: free memory for the guard instead of asking the system.

    Attributes:
        cockpit: the ``cockpit.Cockpit`` (None before the first step).
        report: the :class:`GuardReport` (None before the first step).
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
        _check_on_refusal(on_refusal)
        self.specs = preset_specs(preset, every=every, exclude=exclude)
        self.logpath = logpath
        self.on_refusal = on_refusal
        self.available_bytes = available_bytes
        self.live = _make_live_view(live)
        self.cockpit = None
        self.report: GuardReport | None = None
        self.optimizer = None
        self.optimizer_name = ""
        self._params: list[torch.Tensor] = []
        self._last_step = -1

    # -- hook protocol -------------------------------------------------------------------
    def on_train_begin(self, model: nn.Module, optimizer, loss_fn: nn.Module) -> None:
        """Extend ``model`` and ``loss_fn`` with BackPACK (in place)."""
        import_cockpit()
        enable_groupnorm_support()
        _check_loss_fn(loss_fn)
        from backpack import extend

        extend(model)
        extend(loss_fn)
        self.optimizer = optimizer
        self.optimizer_name = type(optimizer).__name__

    def backward(self, step: int, model, x, y, logits, loss, loss_fn) -> bool:
        """Run ``loss.backward()`` inside Cockpit's context for ``step``; always returns True."""
        if self.cockpit is None:
            self._setup(model, x)
        cockpit = self.cockpit
        with torch.no_grad():
            losses = F.cross_entropy(logits.detach(), y, reduction="none")
        info = {
            "batch_size": int(x.shape[0]),
            "individual_losses": losses,
            "loss": loss,
            "optimizer": self.optimizer,
        }
        create_graph = cockpit.create_graph(step)
        with warnings.catch_warnings():
            for message, category in KNOWN_HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            warnings.filterwarnings("ignore", message=_CREATE_GRAPH_WARNING, category=UserWarning)
            with cockpit(step, info=info):
                loss.backward(create_graph=create_graph)
        if create_graph:  # drop the graph kept for Hessian-vector products (no reference cycle)
            for p in self._params:
                if p.grad is not None:
                    p.grad = p.grad.detach()
        if self.optimizer is not None:
            cockpit.output[step]["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        self._last_step = step
        if self.live is not None and self.live.due(step):
            self.live.update(self, step)
        return True

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Record the epoch's losses, accuracies and learning rate (``Cockpit.log``)."""
        if self.cockpit is None or self._last_step < 0:
            return

        def get(*keys):
            for key in keys:
                if metrics.get(key) is not None:
                    return float(metrics[key])
            return None

        self.cockpit.log(
            self._last_step,
            epoch,
            get("train_loss", "running_loss"),
            get("valid_loss"),
            get("test_loss"),
            get("train_accuracy", "running_accuracy"),
            get("valid_accuracy"),
            get("test_accuracy"),
            get("lr"),
        )

    def on_train_end(self, history) -> None:
        """Write the log (if ``logpath``) and refresh the live view a last time."""
        if self.cockpit is None:
            return
        if self.logpath is not None:
            write_log(self.cockpit, self.logpath)
        if self.live is not None:
            self.live.update(self, self._last_step, force=True)

    # -- results -------------------------------------------------------------------------
    @property
    def log(self) -> dict:
        """The log so far, ``{step: {quantity: value}}`` (empty before the first step)."""
        return {} if self.cockpit is None else self.cockpit.get_output()

    def frame(self):
        """The log as a ``pandas.DataFrame`` (see :func:`log_frame`)."""
        return log_frame(self.log)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the log as JSON (see :func:`write_log`); returns the path."""
        if self.cockpit is None:
            raise ValueError("nothing to write: the hook has not tracked any step yet")
        return write_log(self.cockpit, path)

    def plot(self, **kwargs):
        """Cockpit's full dashboard of this run (see :func:`plot_dashboard`)."""
        return plot_dashboard(self, **kwargs)

    def plot_instruments(self, which: Iterable[str] | None = None, **kwargs):
        """Single instruments of this run (see :func:`plot_instruments`)."""
        return plot_instruments(self, which, **kwargs)

    def get_output(self) -> dict:
        """Same as :attr:`log` (so the hook works wherever a Cockpit is accepted)."""
        return self.log

    # -- internals -----------------------------------------------------------------------
    def _setup(self, model: nn.Module, x: torch.Tensor) -> None:
        cockpit = import_cockpit()
        report = guard(
            model,
            int(x.shape[0]),
            self.specs,
            device=x.device,
            input_shape=tuple(x.shape[1:]),
            available_bytes=self.available_bytes,
        )
        self.report = report
        _handle_refusals(report, self.on_refusal)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.cockpit = cockpit.Cockpit(
            self._params, quantities=[s.build() for s in report.accepted]
        )


def _make_live_view(live) -> LiveView | None:
    if live is False or live is None:
        return None
    if live is True:
        return LiveView()
    if isinstance(live, LiveView):
        return live
    if isinstance(live, str):
        return LiveView([live])
    return LiveView(list(live))


# -- shipped logs ----------------------------------------------------------------------------

#: Name -> description of the logs shipped in ``nbhelpers/data_files/cockpit_logs``.
SHIPPED_LOGS: dict[str, str] = {
    "handover": (
        "the handover's settings: Tanh CNN, Adam lr 1e-5, ExponentialLR(gamma=1.001) stepped "
        "every batch, gradients never zeroed, rotation augmentation"
    ),
    "fixed": "the fixes: zero_grad every step, Adam lr 1e-3, no schedule, no augmentation, Tanh CNN",
}


def _log_dir():
    return resources.files("nbhelpers") / "data_files" / "cockpit_logs"


def shipped_log_path(name: str) -> Path:
    """Path of a shipped log (``"handover"`` or ``"fixed"``).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing (run scripts/make_cockpit_logs.py).
    """
    if name not in SHIPPED_LOGS:
        raise ValueError(f"unknown shipped Cockpit log {name!r}; valid: {', '.join(SHIPPED_LOGS)}")
    path = Path(str(_log_dir() / f"{name}.json"))
    if not path.exists():
        raise FileNotFoundError(
            f"shipped Cockpit log {path} is missing; create it with scripts/make_cockpit_logs.py"
        )
    return path


def load_shipped_log(name: str) -> dict[int, dict[str, Any]]:
    """A finished run's Cockpit log shipped with the package, e.g. to show a dashboard at once.

    Args:
        name: one of :data:`SHIPPED_LOGS` ("handover", "fixed").

    Returns:
        The log ``{step: {quantity: value}}`` (plot it with :func:`plot_dashboard`).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing.
    """
    return load_log(shipped_log_path(name))


def shipped_log_info(name: str) -> dict[str, Any]:
    """How a shipped log was made: settings, data, steps, timings (its ``.meta.json``).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing.
    """
    path = shipped_log_path(name).with_suffix(".meta.json")
    if not path.exists():
        raise FileNotFoundError(f"no description of the shipped log at {path}")
    return json.loads(path.read_text())
