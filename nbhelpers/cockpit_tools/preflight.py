"""Memory and support guard for Cockpit, run before training.

:func:`guard` answers, for a model, a batch size, a preset and a device, which Cockpit
quantities can run and which cannot, without a backward pass: one single-example forward
pass gives the layer sizes, and a quantity's memory is the sum of its terms
(:mod:`nbhelpers.cockpit_tools.memory`): the plain training step, the BackPACK extensions and
the graph the quantity asks Cockpit for, and its own term (its registry entry). A quantity
is refused when

* it needs a BackPACK extension and the model has BatchNorm (train mode mixes the examples
  of a batch; see ``batchnorm_note()``), or
* BackPACK has no rule for one of the model's layers for an extension it needs (read from
  BackPACK's own tables; GroupNorm counts as covered where ``enable_groupnorm_support`` adds
  a rule), or
* its estimate does not fit into the free memory of the device (GPU: CUDA's free memory;
  CPU: psutil, else ``/proc/meminfo``); by default 80 % of it may be used.

The guard reads BackPACK's tables and changes nothing in them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

import torch
from backpack.extensions import DiagHessian
from torch import nn

from nbhelpers.cockpit_tools import groupnorm
from nbhelpers.cockpit_tools.memory import Shapes, Term, layer_shapes, module_rules
from nbhelpers.cockpit_tools.quantities import DEFAULT_PRESET, QuantitySpec, preset_specs
from nbhelpers.display import Report
from nbhelpers.state import model_device
from nbhelpers.validate import number, positive_int


class CockpitGuardError(RuntimeError):
    """Some Cockpit quantities were refused by :func:`guard` (the message lists them)."""


def format_bytes(n: float) -> str:
    """Human-readable size with binary units, e.g. ``format_bytes(3 * 2**30) == "3.0 GiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _cpu_available() -> tuple[int, str]:
    try:
        import psutil

        return int(psutil.virtual_memory().available), "psutil"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            line = next(x for x in handle if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024, "/proc/meminfo"
    except (OSError, StopIteration):
        return 0, "unknown"


def available_memory(device: torch.device | str | None = None) -> tuple[int, str]:
    """Free memory of ``device`` in bytes, and where the number came from.

    Args:
        device: "cpu", "cuda", "cuda:1", "mps" or a torch.device (default "cpu").

    Returns:
        ``(bytes, source)``; source is "torch.cuda.mem_get_info", "torch.mps",
        "psutil", "/proc/meminfo" or "unknown" (then bytes is 0).
    """
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0]), "torch.cuda.mem_get_info"
    if device.type == "mps" and hasattr(torch, "mps"):
        try:
            free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
            return int(max(free, 0)), "torch.mps"
        except (AttributeError, RuntimeError):
            pass
    return _cpu_available()


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` (1d, 2d, 3d, SyncBatchNorm)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _unsupported_layers(model: nn.Module, extensions: Iterable) -> list[str]:
    """Leaf layers without a BackPACK rule for one of ``extensions`` (extension objects).

    First-order extensions need a rule for every layer with parameters; second-order ones
    backpropagate through every layer and need a rule for each.
    """
    bad: list[str] = []
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    for ext in extensions:
        rules = set(module_rules(ext)) | ({nn.GroupNorm} if groupnorm.covers(ext) else set())
        every_layer = ext.expects_backpropagation_quantities()
        for name, m in leaves:
            label = f"{name} ({type(m).__name__})"
            needs_rule = every_layer or next(m.parameters(recurse=False), None) is not None
            if needs_rule and type(m) not in rules and label not in bad:
                bad.append(label)
    return bad


@dataclass
class GuardRow:
    """The guard's answer for one quantity.

    Attributes:
        quantity: label, e.g. "HessTrace(curvature='diag_h')".
        every: tracking interval in steps.
        needs: what it needs beyond a plain training step.
        estimate_bytes: estimated peak memory of a tracked step with it (bytes).
        ok: True if accepted.
        kind: "" if accepted, else why it was refused: "memory", "batchnorm" or
            "unsupported layer".
        reason: details ("" if accepted): what the memory holds, the BatchNorm layers or
            the unsupported layers.
        alternative: what to do instead ("" if accepted).
    """

    quantity: str
    every: int
    needs: str
    estimate_bytes: int
    ok: bool = True
    kind: str = ""
    reason: str = ""
    alternative: str = ""

    @property
    def estimate(self) -> str:
        """``estimate_bytes`` human readable."""
        return format_bytes(self.estimate_bytes)


@dataclass
class GuardReport(Report):
    """What :func:`guard` found. ``accepted`` are the specs that can run.

    Attributes:
        rows: one :class:`GuardRow` per quantity.
        accepted: the :class:`QuantitySpec` s that passed.
        batch_size, device, budget_bytes (the memory allowed, bytes), available_bytes,
        memory_source, base_bytes (plain training step, bytes), notes (extra remarks),
        fraction (share of the free memory allowed).
    """

    rows: list[GuardRow]
    accepted: list[QuantitySpec]
    batch_size: int
    device: str
    budget_bytes: int
    available_bytes: int
    memory_source: str
    base_bytes: int
    notes: list[str] = field(default_factory=list)
    fraction: float = 0.8
    status_column = "verdict"

    @property
    def refused(self) -> list[GuardRow]:
        """Rows of the refused quantities."""
        return [row for row in self.rows if not row.ok]

    @property
    def ok(self) -> bool:
        """True when nothing was refused."""
        return not self.refused

    def summary(self) -> str:
        """The memory budget, and how many quantities fit."""
        n, refused = len(self.rows), len(self.refused)
        verdict = f"Refused {refused} of {n} quantities." if refused else f"All {n} quantities fit."
        return (
            f"Cockpit guard: batch {self.batch_size} on {self.device}; plain training step "
            f"~{format_bytes(self.base_bytes)}; allowed {format_bytes(self.budget_bytes)} "
            f"({self.fraction:.0%} of {format_bytes(self.available_bytes)} free, "
            f"via {self.memory_source}). {verdict}"
        )

    def message(self) -> str:
        """Plain text: :meth:`summary`, then the refused quantities with reason and alternative."""
        lines, groups = [self.summary()], {}
        for row in self.refused:
            if row.kind == "memory":
                lines.append(
                    f"- {row.quantity} needs ~{row.estimate} ({row.reason}), more than allowed. "
                    f"{row.alternative}"
                )
            else:
                groups.setdefault((row.reason, row.alternative), []).append(row.quantity)
        lines += [f"- {', '.join(names)}: {r}. {alt}" for (r, alt), names in groups.items()]
        return "\n".join(lines + self.notes)

    def raise_if_refused(self) -> GuardReport:
        """Raise :class:`CockpitGuardError` with :meth:`message` if anything was refused.

        Returns:
            self, when nothing was refused.
        """
        if not self.ok:
            raise CockpitGuardError(self.message())
        return self

    def to_frame(self):
        """``pandas.DataFrame``: quantity, every, needs, estimate, verdict, kind, reason,
        alternative."""
        import pandas as pd

        rows = [
            {**asdict(r), "estimate": r.estimate, "verdict": "ok" if r.ok else "refused"}
            for r in self.rows
        ]
        columns = [
            "quantity",
            "every",
            "needs",
            "estimate",
            "verdict",
            "kind",
            "reason",
            "alternative",
        ]
        return pd.DataFrame(rows, columns=columns)


def _estimate(terms: list[Term], sh: Shapes, n: int) -> int:
    return sh.base(n) + sum(term.bytes(sh, n) for term in terms)


def _max_batch(terms: list[Term], sh: Shapes, budget: int) -> int:
    """Largest batch size whose estimate fits ``budget`` (0 if none); every term of the
    memory model is linear in the batch size."""
    fixed, per_example = _estimate(terms, sh, 0), _estimate(terms, sh, 1) - _estimate(terms, sh, 0)
    return max(0, (budget - fixed) // per_example)


def _memory_alternative(spec: QuantitySpec, sh: Shapes, n: int, budget: int) -> str:
    exact_hessian = any(isinstance(ext, DiagHessian) for ext in spec.extensions())
    if exact_hessian and hasattr(spec.entry.cls, "extensions_from_str"):  # a curvature option
        cheaper = replace(spec, options={**spec.options, "curvature": "diag_ggn_mc"})
        worst = max((x for x in sh.layers if x.curved), key=lambda x: x.out_numel, default=None)
        behind = f" behind {worst.name} ({worst.kind}, V = {worst.out_numel:,})" if worst else ""
        return (
            f"The exact Hessian diagonal keeps a dense N x V x V residual{behind}. Use the "
            f"generalised Gauss-Newton diagonal instead: {cheaper.label} needs "
            f"~{format_bytes(_estimate(cheaper.terms(), sh, n))} (preset 'thorough' does this)."
        )
    fit = _max_batch(spec.terms(), sh, budget)
    if fit:
        return f"It fits up to batch {fit}; or use preset 'cheap' or 'basic'."
    return "Use preset 'basic' (no per-example quantities)."


def _judge(spec: QuantitySpec, model: nn.Module, sh: Shapes, n: int, budget: int, bn) -> GuardRow:
    """The row of one quantity: BatchNorm first, then unsupported layers, then memory."""
    extensions = spec.extensions()
    row = GuardRow(spec.label, spec.every, spec.needs, _estimate(spec.terms(), sh, n))
    unsupported = _unsupported_layers(model, extensions)
    if bn and extensions:
        shown = ", ".join(bn[:3]) + (", ..." if len(bn) > 3 else "")
        row.kind = "batchnorm"
        row.reason = f"not valid with BatchNorm in train mode (layers {shown})"
        row.alternative = (
            "Per-example quantities do not exist with BatchNorm; keep Loss, GradNorm, "
            "Distance, UpdateSize (preset 'basic'), or use GroupNorm (see BATCHNORM_NOTE)."
        )
    elif unsupported:
        row.kind = "unsupported layer"
        row.reason = f"BackPACK has no rule for {', '.join(unsupported)}"
        row.alternative = "Use preset 'basic', or replace those layers."
    elif row.estimate_bytes > budget:
        row.kind, row.reason = "memory", row.needs
        row.alternative = _memory_alternative(spec, sh, n, budget)
    row.ok = not row.kind
    return row


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
) -> GuardReport:
    """Check which quantities of a Cockpit preset can run, before training.

    Arithmetic on layer sizes from one single-example forward pass (no backward):
    typically a few milliseconds. Nothing in BackPACK is changed.

    Args:
        model: the network (float32 ``(B, *input_shape)`` -> ``(B, C)`` logits).
        batch_size: training batch size N (positive int).
        preset: preset name (see ``PRESETS``) or specs (``preset_specs(..., every=...)``
            changes intervals).
        device: training device (default: where the parameters are); decides
            whose free memory counts.
        input_shape: one example's shape, default (3, 32, 32).
        num_classes: C, default the size of the last layer's output.
        available_bytes: free memory to assume instead of asking the system.
        fraction: share of the free memory a tracked step may use (0 < f <= 1).

    Returns:
        A :class:`GuardReport`; ``report.accepted`` are the specs that can run,
        ``report.raise_if_refused()`` raises :class:`CockpitGuardError`.

    Raises:
        ValueError: bad batch size, fraction, preset or quantity name.
        TypeError: ``model`` is not an ``nn.Module``.
    """
    batch_size = positive_int("batch_size", batch_size)
    fraction = number("fraction", fraction, 0, 1, low_open=True)
    specs = preset_specs(preset)
    layers, itemsize = layer_shapes(model, tuple(input_shape))
    device = torch.device(device) if device is not None else model_device(model)
    classes = num_classes or (layers[-1].out_numel if layers else 10)
    sh = Shapes(tuple(layers), itemsize, math.prod(input_shape), classes)
    available, source = (
        available_memory(device) if available_bytes is None else (available_bytes, "given")
    )
    budget, base = int(available * fraction), sh.base(batch_size)
    rows = [_judge(spec, model, sh, batch_size, budget, batchnorm_layers(model)) for spec in specs]
    tight = (
        f"Note: even a plain training step (~{format_bytes(base)}) may not fit; reduce the batch."
    )
    return GuardReport(
        rows=rows,
        accepted=[spec for spec, row in zip(specs, rows, strict=True) if row.ok],
        batch_size=batch_size,
        device=str(device),
        budget_bytes=budget,
        available_bytes=int(available),
        memory_source=source,
        base_bytes=base,
        notes=[tight] if base > budget else [],
        fraction=fraction,
    )
