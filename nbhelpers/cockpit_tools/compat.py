"""Make cockpit-for-pytorch 1.0.2 work on today's Python stack.

Cockpit (Schneider, Dangel & Hennig, "Cockpit: A Practical Debugging Tool for
the Training of Deep Neural Networks", NeurIPS 2021) was last released in 2021.
On a current stack it has four rough edges, each fixed here without asking the
learner to pin any package:

* ``import cockpit`` imports ``pkg_resources``, which setuptools 81+ no longer
  ships and Python 3.12 virtual environments do not have at all.
  :func:`install_pkg_resources_shim` puts a minimal stand-in into
  ``sys.modules`` (``get_distribution`` and ``DistributionNotFound`` answered by
  :mod:`importlib.metadata`) -- only when the real module is missing.
* ``cockpit.__version__`` reads "unknown"; :func:`import_cockpit` sets it from
  the installed distribution's metadata.
* ``Cockpit.write("cockpit_log")`` (a bare file name) crashes in
  ``os.makedirs("")``; :func:`write_log` (also patched in as ``Cockpit.write``)
  accepts any path.
* When the backward pass inside ``with cockpit(step, ...)`` fails, Cockpit still
  tries to compute its quantities and the learner sees a misleading
  ``AttributeError: 'Parameter' object has no attribute 'grad_batch_transforms'``.
  The patched context skips tracking after a failure and raises
  :class:`CockpitBackwardError`, which names the real error and what to do.

The patched backward context also records the learning rate of every step from
``info["optimizer"]`` (so Cockpit's learning-rate panel fills in any loop) and runs the
checks of :mod:`~nbhelpers.cockpit_tools.validity` (layers that mix the examples of a batch,
gradients that were not reset), for every Cockpit, also one the learner builds.

:func:`silence_known_warnings` installs targeted filters for two warnings that
are known to be harmless (PyTorch's "Full backward hook is firing ..." on every
backward pass of an extended model, and matplotlib's "pixel maker ','" warning
from Cockpit's plots); every other warning still shows.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbhelpers.cockpit_tools.validity import BatchMixingError, StepChecks

#: Distribution name of Cockpit on PyPI (the import name is ``cockpit``).
COCKPIT_DISTRIBUTION = "cockpit-for-pytorch"

#: (message regex, category) of warnings known to be harmless with Cockpit.
KNOWN_HARMLESS_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # BackPACK's module hooks fire on outputs when the input image needs no gradient.
    (r"Full backward hook is firing when gradients are computed", UserWarning),
    # Cockpit's scatter plots ask for marker ',' (one pixel); matplotlib draws a small square.
    (r"The pixel maker ',' is not supported on scatter\(\)", UserWarning),
)

_PATCH_MARK = "_nbhelpers_patched"


class CockpitBackwardError(RuntimeError):
    """The backward pass (or the quantity computation) inside Cockpit failed.

    The message names the original error and what to do about it; the original
    exception is attached as ``__cause__`` (shown as "The above exception was the
    direct cause of ...").
    """


# -- pkg_resources ---------------------------------------------------------------------------


def _make_pkg_resources_shim() -> types.ModuleType:
    """A module offering just what Cockpit and BackPACK use from ``pkg_resources``."""
    shim = types.ModuleType("pkg_resources")
    shim.__doc__ = (
        "Minimal stand-in for setuptools' pkg_resources (installed by nbhelpers): "
        "get_distribution() and DistributionNotFound, answered by importlib.metadata."
    )

    class DistributionNotFound(Exception):
        """No installed distribution has the requested name."""

    def get_distribution(name: str) -> types.SimpleNamespace:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise DistributionNotFound(name) from err
        return types.SimpleNamespace(project_name=name, key=name.lower(), version=version)

    shim.DistributionNotFound = DistributionNotFound
    shim.get_distribution = get_distribution
    setattr(shim, _PATCH_MARK, True)
    return shim


def install_pkg_resources_shim() -> bool:
    """Provide ``pkg_resources`` for ``import cockpit`` if the real one is missing.

    Tries ``import pkg_resources`` first (silencing setuptools' deprecation
    warning); only when that fails (setuptools >= 81, no setuptools at all, or the
    name blocked with ``sys.modules["pkg_resources"] = None``) a minimal module
    with ``get_distribution`` / ``DistributionNotFound`` based on
    :mod:`importlib.metadata` is put into ``sys.modules``.

    Returns:
        True if the stand-in was installed (now or earlier), False if the real
        ``pkg_resources`` is used.
    """
    present = sys.modules.get("pkg_resources")
    if present is not None:
        return bool(getattr(present, _PATCH_MARK, False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pkg_resources")
        return False
    except ImportError:
        sys.modules["pkg_resources"] = _make_pkg_resources_shim()
        return True


def cockpit_version() -> str:
    """Installed version of cockpit-for-pytorch, e.g. "1.0.2" ("unknown" if not installed)."""
    try:
        return importlib.metadata.version(COCKPIT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def silence_known_warnings(*extra: tuple[str, type[Warning]]) -> None:
    """Hide the warnings in :data:`KNOWN_HARMLESS_WARNINGS` and ``extra`` (targeted filters)."""
    for message, category in (*KNOWN_HARMLESS_WARNINGS, *extra):
        warnings.filterwarnings("ignore", message=message, category=category)


@contextmanager
def known_warnings_silenced(*extra: tuple[str, type[Warning]]):
    """Silence the known-harmless warnings (and ``extra``) in the body, whatever filters are set."""
    with warnings.catch_warnings():
        silence_known_warnings(*extra)
        yield


def import_cockpit() -> types.ModuleType:
    """Import and return the ``cockpit`` package, working on today's stack.

    Installs the ``pkg_resources`` stand-in when needed, sets
    ``cockpit.__version__`` from the package metadata, silences the known-harmless
    warnings, and patches ``Cockpit.write`` (any path works) and the backward context
    (failures show their real cause, see :class:`CockpitBackwardError`). Safe to call many
    times.

    Returns:
        The ``cockpit`` module.

    Raises:
        ImportError: cockpit-for-pytorch or backpack-for-pytorch is not installed
            (the message says how to install them).
    """
    install_pkg_resources_shim()
    silence_known_warnings()
    try:
        import cockpit
    except ImportError as err:
        if getattr(err, "name", None) in ("cockpit", "backpack", "json_tricks"):
            raise ImportError(
                f"Cockpit is not installed ({err}). Install it with "
                "`pip install cockpit-for-pytorch backpack-for-pytorch`."
            ) from err
        raise
    if getattr(cockpit, "__version__", "unknown") in ("unknown", None, ""):
        cockpit.__version__ = cockpit_version()
    _patch_cockpit()
    return cockpit


# -- writing logs ----------------------------------------------------------------------------


def write_log(
    source: Any, path: str | os.PathLike, *, quiet: bool = False, indent: int | None = 1
) -> Path:
    """Write a Cockpit log as JSON (the format ``CockpitPlotter`` and ``Cockpit.write`` use).

    Unlike ``Cockpit.write`` in cockpit 1.0.2, a bare file name ("cockpit_log")
    works, missing folders are created, a ".json" suffix is not doubled, and a
    NaN or infinite value (e.g. an undefined Alpha) is written as ``NaN`` /
    ``Infinity`` instead of failing the whole write.

    Args:
        source: a ``Cockpit`` (its ``get_output()`` is written) or a log dict
            ``{step: {quantity: value}}``.
        path: target file, with or without the ".json" suffix.
        quiet: do not print where the log went.
        indent: JSON indentation (None: compact, the smallest file).

    Returns:
        The path of the written file (ending in ".json").

    Raises:
        ValueError: empty path.
        TypeError: ``source`` is neither a Cockpit nor a dict.
    """
    import json_tricks

    text = os.fspath(path)
    if not text:
        raise ValueError("log path must be a non-empty str or Path, got ''")
    target = Path(text if text.endswith(".json") else text + ".json")
    data = source.get_output() if hasattr(source, "get_output") else source
    if not isinstance(data, Mapping):
        raise TypeError(f"write_log expects a Cockpit or a log dict, got {type(source).__name__}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"[cockpit] writing output to {target}")
    with open(target, "w") as handle:
        json_tricks.dump(dict(data), handle, indent=indent, sort_keys=True, allow_nan=True)
    return target


# -- clear errors ----------------------------------------------------------------------------

_HINT_UNSUPPORTED = (
    "BackPACK, the engine behind Cockpit's per-example and curvature quantities, has no rule "
    "for the layer {layer}. Use a preset without those quantities (preset 'basic' needs no "
    "BackPACK rule at all) or replace the layer."
)
_HINT_GROUPNORM = (
    " For nn.GroupNorm, call nbhelpers.cockpit_tools.enable_groupnorm_support() first."
)
_HINT_BATCHNORM = (
    "BatchNorm in train mode mixes the examples of a batch, so per-example gradients and "
    "curvature per example do not exist. Track only the instruments that stay valid "
    "(preset 'basic': loss, gradient norm, distance, update size; "
    "nbhelpers.cockpit_tools.quantities_for(model, preset) picks them), or use GroupNorm."
)
_HINT_MEMORY = (
    "The tracked step ran out of memory. Run nbhelpers.cockpit_tools.guard(model, batch_size, "
    "preset) to see what each quantity needs, then pick a cheaper preset or a smaller batch."
)
_HINT_NOT_EXTENDED = (
    "BackPACK did not compute '{field}'. The model and the loss function must be extended "
    "with backpack.extend(...) before the forward pass (CockpitHook does this for you), and "
    "the loss must come from the extended loss function."
)


def explain_cockpit_error(err: BaseException) -> str:
    """One short paragraph: what went wrong in a Cockpit backward pass and what to do.

    Args:
        err: the exception raised by the backward pass or by Cockpit's tracking.

    Returns:
        The explanation, starting with the original error type and message.
    """
    text = str(err)
    head = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".strip()
    if "BatchNorm module in training mode" in text:
        hint = _HINT_BATCHNORM
    elif "does not have an extension for" in text:
        layer = text.split("Module")[-1].strip(" <>'\"").replace("class '", "")
        hint = _HINT_UNSUPPORTED.format(layer=layer)
        if "GroupNorm" in layer:
            hint += _HINT_GROUPNORM
    elif isinstance(err, BatchMixingError):
        hint = "Per-example quantities are not available for this model."
    elif isinstance(err, MemoryError) or "out of memory" in text.lower():
        hint = _HINT_MEMORY
    elif isinstance(err, AttributeError) and "'Parameter' object has no attribute" in text:
        field = text.rsplit("attribute", 1)[-1].strip(" '\"")
        hint = _HINT_NOT_EXTENDED.format(field=field)
    else:
        hint = "The error happened in the backward pass while Cockpit was recording."
    return f"Cockpit's tracked backward pass failed with {head}\n{hint}"


def _patched_exit(original_exit):
    def __exit__(self, exc_type, exc, tb):  # noqa: N807 - context protocol
        if exc_type is None:
            try:
                return original_exit(self, exc_type, exc, tb)
            except Exception as err:  # tracking itself failed
                from cockpit.context import CockpitCTX

                CockpitCTX.erase()
                raise CockpitBackwardError(explain_cockpit_error(err)) from err
        from cockpit.context import CockpitCTX

        for ctx in self.contexts:
            ctx.__exit__(exc_type, exc, tb)
        CockpitCTX.erase()
        self.cp._free_backpack_buffers(self.global_step, set())
        if isinstance(exc, Exception):
            raise CockpitBackwardError(explain_cockpit_error(exc)) from exc
        return False  # KeyboardInterrupt and friends pass through unchanged

    __exit__.__doc__ = "Leave Cockpit's context; after a failure, skip tracking and explain."
    setattr(__exit__, _PATCH_MARK, True)
    return __exit__


def _patched_enter(original_enter):
    def __enter__(self):  # noqa: N807 - context protocol
        from cockpit.context import CockpitCTX

        step, info = self.global_step, CockpitCTX.INFO.get(self.global_step, {})
        optimizer = info.get("optimizer")
        if optimizer is not None:
            self.cp.output[step]["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        tracked = next((c for c in self.contexts if hasattr(c, "extension_hook")), None)
        StepChecks.on_enter(self.cp, step, tracked.exts if tracked else ())
        if tracked is not None:
            backpack_hook = tracked.extension_hook

            def extension_hook(module):
                StepChecks.module_hook(module)
                backpack_hook(module)

            tracked.extension_hook = extension_hook
        return original_enter(self)

    __enter__.__doc__ = "Record the learning rate, run the validity checks, enter the context."
    setattr(__enter__, _PATCH_MARK, True)
    return __enter__


def _patch_cockpit() -> None:
    """Apply the write and backward-context patches once per process."""
    from cockpit.cockpit import Cockpit
    from cockpit.context import BackwardCTX

    if not getattr(BackwardCTX.__exit__, _PATCH_MARK, False):
        BackwardCTX.__exit__ = _patched_exit(BackwardCTX.__exit__)
    if not getattr(BackwardCTX.__enter__, _PATCH_MARK, False):
        BackwardCTX.__enter__ = _patched_enter(BackwardCTX.__enter__)
    Cockpit.write = write_log  # cockpit.write(logpath) is write_log(cockpit, logpath)
