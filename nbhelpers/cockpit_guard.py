"""Memory and support guard for Cockpit, run before training.

:func:`guard` answers, for a model, a batch size, a preset and a device, which
Cockpit quantities can run and which cannot, without running a backward pass:
every layer's output shape is worked out by arithmetic (for an ``nn.Sequential``
of common layers; other models get one single-example forward pass in eval mode
without gradients), and the memory each quantity needs is computed from those
shapes. A quantity is refused when

* its estimate does not fit into the free memory of the device (GPU: CUDA's free
  memory; CPU: psutil, else ``/proc/meminfo``, else ``os.sysconf``), or
* it needs per-example gradients and the model has BatchNorm (train mode mixes
  the examples of a batch; see :data:`nbhelpers.cockpit_presets.BATCHNORM_NOTE`), or
* BackPACK has no rule for one of the model's layers.

Memory model (``N`` batch size, ``s`` bytes per float, ``D`` parameters, ``V`` the
size of one example's output of a layer, ``C`` classes, ``P_l`` parameters of
layer ``l``); every estimate includes the plain training step,
``N * (input + sum_l V_l) * s`` for activations plus ``4 * D * s`` for weights,
gradients and two optimizer buffers:

* Loss, GradNorm: nothing extra. Distance, UpdateSize: one copy of the weights, ``D * s``.
* per-example gradients (BackPACK ``BatchGrad``): ``N * D * s`` for the gradients
  plus the largest unfolded convolution input, ``N * C_in * k * k * H_out * W_out * s``;
  Alpha keeps the per-example gradients of its start step for non-SGD optimizers, so twice that.
* GradHist2d: per-example gradients plus ``3 * N * max_l P_l * s`` for its 2D binning.
* GGN diagonal (``DiagGGNMC`` with M=1 sample, ``DiagGGNExact`` with M=C):
  ``2 * M * N * max_l V_l * s`` backpropagated plus ``M * N * max_l P_l * s`` per-layer products.
* exact Hessian diagonal (``DiagHessian``, Cockpit's default curvature): the GGN-exact
  cost plus, for every layer whose second derivative is not zero (Tanh, Sigmoid, ELU,
  GELU, ...), a dense residual of ``2 * N * V_l**2 * s`` -- the reason Cockpit's
  "business"/"full" configurations cannot run on the handover CNN.
* HessMaxEV: a second graph for Hessian-vector products, ``2 * N * sum_l V_l * s``,
  plus 20 Lanczos vectors ``20 * D * s``.

These are estimates of the dominant tensors (within a small factor), not exact
peaks; the default budget uses 80 % of the free memory.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nbhelpers.cockpit_presets import DEFAULT_PRESET, QuantitySpec, preset_specs

__all__ = [
    "CockpitGuardError",
    "batchnorm_layers",
    "GuardReport",
    "GuardRow",
    "LayerInfo",
    "available_memory",
    "format_bytes",
    "guard",
    "layer_shapes",
]


class CockpitGuardError(RuntimeError):
    """Some Cockpit quantities were refused by :func:`guard` (the message lists them)."""


def format_bytes(n: float) -> str:
    """Human-readable size with binary units, e.g. ``format_bytes(3 * 2**30) == "3.0 GiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


# -- available memory ------------------------------------------------------------------------


def _cpu_available() -> tuple[int, str]:
    try:
        import psutil

        return int(psutil.virtual_memory().available), "psutil"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo"
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "os.sysconf"
    except (ValueError, OSError, AttributeError):
        return 0, "unknown"


def available_memory(device: torch.device | str | None = None) -> tuple[int, str]:
    """Free memory of ``device`` in bytes, and where the number came from.

    Args:
        device: "cpu", "cuda", "cuda:1", "mps" or a torch.device (default "cpu").

    Returns:
        ``(bytes, source)``; source is "torch.cuda.mem_get_info", "torch.mps",
        "psutil", "/proc/meminfo", "os.sysconf" or "unknown" (then bytes is 0).
    """
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info"
    if device.type == "mps" and hasattr(torch, "mps"):
        try:
            limit = torch.mps.recommended_max_memory()
            used = torch.mps.driver_allocated_memory()
            return int(max(limit - used, 0)), "torch.mps"
        except (AttributeError, RuntimeError):
            pass
    return _cpu_available()


# -- shapes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One leaf layer of the model, for one example.

    Attributes:
        name: qualified module name ("conv1").
        kind: module class name ("Conv2d").
        out_numel: number of output values per example (V).
        params: number of parameters of this layer (P).
        unfold_numel: per-example size of the unfolded input of a convolution
            (``C_in * k * k * H_out * W_out``), else 0.
        curved: whether the layer's second derivative is non-zero (Tanh, ...).
    """

    name: str
    kind: str
    out_numel: int
    params: int
    unfold_numel: int
    curved: bool


#: Leaf layers whose output is piecewise linear in the input (zero second derivative).
_PIECEWISE_LINEAR = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    nn.ZeroPad2d,
)


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


_SAME_SHAPE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.SELU,
    nn.Softplus,
    nn.LogSigmoid,
    nn.Dropout,
    nn.Identity,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def _pair(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def _window_out(size, kernel, stride, padding, dilation, ceil_mode=False) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    return (math.ceil if ceil_mode else math.floor)(span / stride) + 1


def _next_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Output shape of one example through ``module``, or None if not known here."""
    if isinstance(module, _SAME_SHAPE):
        return shape
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        n = len(module.kernel_size)
        if isinstance(module.padding, str) or len(shape) != n + 1 or shape[0] != module.in_channels:
            return None
        spatial = [
            _window_out(size, k, st, p, d)
            for size, k, st, p, d in zip(
                shape[1:],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                strict=False,
            )
        ]
        return (module.out_channels, *spatial)
    if isinstance(
        module,
        nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d | nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d,
    ):
        n = len(shape) - 1
        kernel = _pair(module.kernel_size, n)
        stride = _pair(module.stride if module.stride else module.kernel_size, n)
        padding = _pair(module.padding, n)
        dilation = _pair(getattr(module, "dilation", 1), n)
        spatial = [
            _window_out(size, k, st, p, d, module.ceil_mode)
            for size, k, st, p, d in zip(shape[1:], kernel, stride, padding, dilation, strict=False)
        ]
        return (shape[0], *spatial)
    if isinstance(module, nn.Flatten):
        full = (1, *shape)
        start = module.start_dim % len(full)
        end = module.end_dim % len(full)
        if start == 0:
            return None
        return (*full[1:start], math.prod(full[start : end + 1]), *full[end + 1 :])
    if isinstance(module, nn.Linear):
        if shape[-1] != module.in_features:
            return None
        return (*shape[:-1], module.out_features)
    return None


def _leaf_sequence(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Leaf layers in call order if the model is (nested) ``nn.Sequential``, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    leaves: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if list(child.children()):
            inner = _leaf_sequence(child)
            if inner is None:
                return None
            leaves.extend((f"{name}.{n}", m) for n, m in inner)
        else:
            leaves.append((name, child))
    return leaves


def _layer_info(name: str, module: nn.Module, out_shape: tuple[int, ...]) -> LayerInfo:
    unfold = 0
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        kernel = math.prod(module.kernel_size)
        unfold = module.in_channels // module.groups * kernel * math.prod(out_shape[1:])
    return LayerInfo(
        name=name,
        kind=type(module).__name__,
        out_numel=int(math.prod(out_shape)),
        params=sum(p.numel() for p in module.parameters(recurse=False)),
        unfold_numel=int(unfold),
        curved=not isinstance(module, _PIECEWISE_LINEAR),
    )


def _shapes_by_arithmetic(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerInfo] | None:
    leaves = _leaf_sequence(model)
    if leaves is None:
        return None
    shape, infos = tuple(input_shape), []
    for name, module in leaves:
        shape = _next_shape(module, shape)
        if shape is None:
            return None
        infos.append(_layer_info(name, module, shape))
    return infos


def _shapes_by_forward(model: nn.Module, input_shape, dtype, device) -> list[LayerInfo]:
    records: list[LayerInfo] = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            records.append(_layer_info(name, module, tuple(out.shape[1:])))

        return hook

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook_for(n)) for n, m in _leaf_modules(model)]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return records


def layer_shapes(
    model: nn.Module,
    input_shape: tuple[int, ...] = (3, 32, 32),
    device: torch.device | str | None = None,
) -> tuple[list[LayerInfo], int]:
    """Per-example output size and parameter count of every leaf layer.

    For an ``nn.Sequential`` of common layers (convolutions, pooling, Flatten,
    Linear, activations, normalisations, Dropout) this is pure arithmetic on
    shapes. Other models get one single-example forward pass in eval mode under
    ``torch.no_grad()`` (BatchNorm statistics untouched; every module is put back
    into its previous mode).

    Args:
        model: the network; its parameters decide the device and dtype.
        input_shape: shape of one example without the batch axis, e.g. (3, 32, 32).
        device: where a forward pass would run (default: the device of the parameters).

    Returns:
        ``(layers, itemsize)``: a :class:`LayerInfo` per leaf layer in call order,
        and the bytes per float of the parameters (4 for float32).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"guard expects an nn.Module, got {type(model).__name__}")
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    itemsize = torch.empty((), dtype=dtype).element_size()
    infos = _shapes_by_arithmetic(model, tuple(input_shape))
    if infos is None:
        if device is None:
            device = param.device if param is not None else torch.device("cpu")
        infos = _shapes_by_forward(model, tuple(input_shape), dtype, device)
    return infos, itemsize


# -- support ---------------------------------------------------------------------------------


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` (1d, 2d, 3d, SyncBatchNorm)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _extension_map(ext_cls) -> dict:
    ext = ext_cls()
    return ext._BackpropExtension__module_extensions  # BackPACK keeps the map private


def _unsupported_layers(model: nn.Module, spec: QuantitySpec) -> list[str]:
    """Leaf layers BackPACK cannot handle for the extensions ``spec`` needs."""
    from backpack import extensions
    from backpack.utils.module_classification import is_no_op

    from nbhelpers.cockpit_groupnorm import enable_groupnorm_support

    enable_groupnorm_support()
    bad: list[str] = []
    leaves = _leaf_modules(model)
    if spec.per_example:
        known = _extension_map(extensions.BatchGrad)
        for name, m in leaves:
            has_params = any(True for _ in m.parameters(recurse=False))
            if has_params and type(m) not in known:
                bad.append(f"{name} ({type(m).__name__})")
    if spec.curvature is not None:
        ext_cls = {
            "diag_h": extensions.DiagHessian,
            "diag_ggn_exact": extensions.DiagGGNExact,
            "diag_ggn_mc": extensions.DiagGGNMC,
        }.get(spec.curvature)
        if ext_cls is not None:
            known = _extension_map(ext_cls)
            for name, m in leaves:
                if type(m) not in known and not is_no_op(m):
                    label = f"{name} ({type(m).__name__})"
                    if label not in bad:
                        bad.append(label)
    return bad


# -- estimates -------------------------------------------------------------------------------


@dataclass
class _Shapes:
    layers: list[LayerInfo]
    itemsize: int
    input_numel: int
    num_classes: int

    @property
    def D(self) -> int:  # noqa: N802 - the standard symbol
        return sum(layer.params for layer in self.layers)

    @property
    def activations(self) -> int:
        return self.input_numel + sum(layer.out_numel for layer in self.layers)

    @property
    def max_v(self) -> int:
        return max((layer.out_numel for layer in self.layers), default=0)

    @property
    def max_p(self) -> int:
        return max((layer.params for layer in self.layers), default=0)

    @property
    def max_unfold(self) -> int:
        return max((layer.unfold_numel for layer in self.layers), default=0)


def _base_bytes(sh: _Shapes, n: int) -> int:
    return (n * sh.activations + 4 * sh.D) * sh.itemsize


def _per_example_bytes(sh: _Shapes, n: int) -> int:
    return n * (sh.D + sh.max_unfold) * sh.itemsize


def _ggn_bytes(sh: _Shapes, n: int, samples: int) -> int:
    return samples * n * (2 * sh.max_v + sh.max_p) * sh.itemsize


def _extra_bytes(spec: QuantitySpec, sh: _Shapes, n: int) -> tuple[int, str]:
    """Memory beyond a plain training step, and the term that dominates it."""
    s = sh.itemsize
    name = spec.name
    if name in ("Loss", "GradNorm"):
        return 0, "nothing beyond the training step"
    if name in ("Distance", "UpdateSize"):
        return sh.D * s, "a copy of the weights"
    extra, what = 0, []
    if spec.per_example:
        factor = 2 if name == "Alpha" else 1
        extra += factor * _per_example_bytes(sh, n)
        what.append("per-example gradients" + (" (start and end step)" if factor == 2 else ""))
        if name == "GradHist2d":
            extra += 3 * n * sh.max_p * s
            what.append("2D binning")
    curvature = spec.curvature
    if curvature is not None:
        samples = 1 if curvature == "diag_ggn_mc" else sh.num_classes
        extra += _ggn_bytes(sh, n, samples)
        if curvature == "diag_h":
            residual = max((layer.out_numel**2 for layer in sh.layers if layer.curved), default=0)
            extra += 2 * n * residual * s
            curved = [layer for layer in sh.layers if layer.curved]
            if curved:
                worst = max(curved, key=lambda layer: layer.out_numel)
                what.append(
                    f"exact Hessian diagonal: dense N x V x V residual behind {worst.name} "
                    f"({worst.kind}, V = {worst.out_numel:,})"
                )
            else:
                what.append("exact Hessian diagonal")
        else:
            what.append(
                "GGN diagonal (" + ("1 MC sample" if samples == 1 else f"{samples} classes") + ")"
            )
    if name == "HessMaxEV":
        extra += 2 * n * sh.activations * s + 20 * sh.D * s
        what.append("second graph for Hessian-vector products")
    return extra, ", ".join(what)


# -- report ----------------------------------------------------------------------------------


@dataclass
class GuardRow:
    """The guard's answer for one quantity.

    Attributes:
        quantity: label, e.g. "HessTrace(curvature='diag_h')".
        every: tracking interval in steps.
        needs: what it needs (see QUANTITY_INFO).
        estimate_bytes: estimated peak memory of a tracked step with it (bytes).
        ok: True if accepted.
        kind: "" if accepted, else why it was refused: "memory", "batchnorm" or
            "unsupported layer".
        reason: details ("" if accepted): the dominant term of the estimate, the
            BatchNorm layers or the unsupported layers.
        alternative: what to do instead ("" if accepted).
    """

    quantity: str
    every: int
    needs: str
    estimate_bytes: int
    ok: bool
    kind: str = ""
    reason: str = ""
    alternative: str = ""

    @property
    def estimate(self) -> str:
        """``estimate_bytes`` human readable."""
        return format_bytes(self.estimate_bytes)


@dataclass
class GuardReport:
    """What :func:`guard` found. ``accepted`` are the specs that can run.

    Attributes:
        rows: one :class:`GuardRow` per quantity.
        accepted: the :class:`QuantitySpec` s that passed.
        refused: the refused rows.
        batch_size, device, budget_bytes (the memory allowed, bytes), available_bytes,
        memory_source, base_bytes (plain training step, bytes), seconds (time the guard
        took), notes (extra remarks), fraction (share of the free memory allowed).
    """

    rows: list[GuardRow]
    accepted: list[QuantitySpec]
    batch_size: int
    device: str
    budget_bytes: int
    available_bytes: int
    memory_source: str
    base_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    fraction: float = 0.8

    @property
    def refused(self) -> list[GuardRow]:
        """Rows of the refused quantities."""
        return [row for row in self.rows if not row.ok]

    @property
    def ok(self) -> bool:
        """True when nothing was refused."""
        return not self.refused

    def message(self) -> str:
        """Plain text: the memory budget, then the refused quantities with reason and alternative."""
        head = (
            f"Cockpit guard: batch {self.batch_size} on {self.device}; plain training step "
            f"~{format_bytes(self.base_bytes)}; allowed {format_bytes(self.budget_bytes)} "
            f"({self.fraction:.0%} of {format_bytes(self.available_bytes)} free, "
            f"via {self.memory_source})."
        )
        if self.ok:
            return head + f"\nAll {len(self.rows)} quantities fit."
        lines = [head, f"Refused {len(self.refused)} of {len(self.rows)} quantities:"]
        groups: dict[tuple[str, str], list[str]] = {}
        for row in self.refused:
            if row.kind == "memory":
                lines.append(
                    f"- {row.quantity} needs ~{row.estimate} ({row.reason}), more than allowed. "
                    f"{row.alternative}"
                )
            else:
                groups.setdefault((row.reason, row.alternative), []).append(row.quantity)
        for (reason, alternative), names in groups.items():
            lines.append(f"- {', '.join(names)}: {reason}. {alternative}")
        lines.extend(self.notes)
        return "\n".join(lines)

    def raise_if_refused(self) -> GuardReport:
        """Raise :class:`CockpitGuardError` with :meth:`message` if anything was refused.

        Returns:
            self, when nothing was refused.
        """
        if not self.ok:
            raise CockpitGuardError(self.message())
        return self

    def to_frame(self):
        """``pandas.DataFrame``: quantity, every, needs, estimate, ok, kind, reason, alternative."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "quantity": r.quantity,
                    "every": r.every,
                    "needs": r.needs,
                    "estimate": r.estimate,
                    "ok": r.ok,
                    "kind": r.kind,
                    "reason": r.reason,
                    "alternative": r.alternative,
                }
                for r in self.rows
            ]
        )

    def __str__(self) -> str:
        return self.message()

    def _repr_markdown_(self) -> str:
        lines = [
            f"**Cockpit guard** -- batch {self.batch_size} on `{self.device}`, "
            f"allowed {format_bytes(self.budget_bytes)}",
            "",
            "| quantity | every | needs | estimate | verdict |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            verdict = "ok" if r.ok else f"**refused**: {r.reason}. {r.alternative}"
            lines.append(f"| {r.quantity} | {r.every} | {r.needs} | {r.estimate} | {verdict} |")
        return "\n".join(lines)


def _max_batch(spec: QuantitySpec, sh: _Shapes, budget: int) -> int:
    """Largest batch size for which ``spec`` fits (0 if none), by bisection on the estimate."""

    def fits(n: int) -> bool:
        return _base_bytes(sh, n) + _extra_bytes(spec, sh, n)[0] <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi) and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _memory_alternative(spec: QuantitySpec, sh: _Shapes, n: int, budget: int) -> str:
    if spec.curvature == "diag_h":
        cheaper = QuantitySpec(spec.name, spec.every, {**spec.options, "curvature": "diag_ggn_mc"})
        est = _base_bytes(sh, n) + _extra_bytes(cheaper, sh, n)[0]
        return (
            f"Use the generalised Gauss-Newton diagonal instead: {cheaper.label} "
            f"needs ~{format_bytes(est)} (preset 'thorough' does this)."
        )
    fit = _max_batch(spec, sh, budget)
    if fit:
        return f"It fits up to batch {fit}; or use preset 'cheap' or 'basic'."
    return "Use preset 'basic' (no per-example quantities)."


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _guess_num_classes(layers: list[LayerInfo]) -> int:
    return layers[-1].out_numel if layers else 10


def guard(
    model: nn.Module,
    batch_size: int,
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    device: torch.device | str | None = None,
    *,
    input_shape: tuple[int, ...] = (3, 32, 32),
    num_classes: int | None = None,
    available_bytes: int | None = None,
    fraction: float = 0.8,
    every: Mapping[str, int] | None = None,
) -> GuardReport:
    """Check which quantities of a Cockpit preset can run, before training.

    Pure arithmetic on layer shapes (one single-example forward pass, no
    backward): typically a few milliseconds.

    Args:
        model: the network (float32 ``(B, *input_shape)`` -> ``(B, C)`` logits).
        batch_size: training batch size N (positive int).
        preset: preset name (see :data:`nbhelpers.cockpit_presets.PRESETS`) or specs.
        device: training device (default: where the parameters are); decides
            whose free memory counts.
        input_shape: one example's shape, default (3, 32, 32).
        num_classes: C, default the size of the last layer's output.
        available_bytes: free memory to assume instead of asking the system.
        fraction: share of the free memory a tracked step may use (0 < f <= 1).
        every: quantity name -> tracking interval override.

    Returns:
        A :class:`GuardReport`; ``report.accepted`` are the specs that can run,
        ``report.raise_if_refused()`` raises :class:`CockpitGuardError`.

    Raises:
        ValueError: bad batch size, fraction, preset or quantity name.
        TypeError: ``model`` is not an ``nn.Module``.
    """
    t0 = time.perf_counter()
    batch_size = _check_batch_size(batch_size)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    specs = preset_specs(preset, every=every)
    if device is None:
        first = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    layers, itemsize = layer_shapes(model, input_shape)
    sh = _Shapes(
        layers, itemsize, math.prod(input_shape), num_classes or _guess_num_classes(layers)
    )
    if available_bytes is None:
        available_bytes, source = available_memory(device)
    else:
        source = "given"
    budget = int(available_bytes * fraction)
    base = _base_bytes(sh, batch_size)
    bn = batchnorm_layers(model)
    rows, accepted, notes = [], [], []
    for spec in specs:
        extra, what = _extra_bytes(spec, sh, batch_size)
        row = GuardRow(spec.label, spec.every, spec.needs, base + extra, ok=True)
        unsupported = (
            _unsupported_layers(model, spec) if (spec.per_example or spec.curvature) else []
        )
        if bn and (spec.per_example or spec.curvature is not None):
            row.ok, row.kind = False, "batchnorm"
            layers = ", ".join(bn[:3]) + (", ..." if len(bn) > 3 else "")
            row.reason = f"not valid with BatchNorm in train mode (layers {layers})"
            row.alternative = (
                "Per-example quantities do not exist with BatchNorm; keep Loss, GradNorm, "
                "Distance, UpdateSize (preset 'basic'), or use GroupNorm (see BATCHNORM_NOTE)."
            )
        elif unsupported:
            row.ok, row.kind = False, "unsupported layer"
            row.reason = f"BackPACK has no rule for {', '.join(unsupported)}"
            row.alternative = "Use preset 'basic', or replace those layers."
        elif base + extra > budget:
            row.ok, row.kind = False, "memory"
            row.reason = what
            row.alternative = _memory_alternative(spec, sh, batch_size, budget)
        rows.append(row)
        if row.ok:
            accepted.append(spec)
    if base > budget:
        notes.append(
            f"Note: even a plain training step (~{format_bytes(base)}) may not fit; "
            "reduce the batch size."
        )
    return GuardReport(
        rows=rows,
        accepted=accepted,
        batch_size=batch_size,
        device=str(device),
        budget_bytes=budget,
        available_bytes=int(available_bytes),
        memory_source=source,
        base_bytes=base,
        seconds=time.perf_counter() - t0,
        notes=notes,
        fraction=fraction,
    )
