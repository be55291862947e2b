"""Memory and support guard for Cockpit, run before training.

:func:`guard` answers, for a model, a batch size, a preset and a device, which Cockpit
quantities can run and which cannot, without a backward pass. Memory is estimated per
*step*: from the tracking schedules, every step's estimate is the sum of what all quantities
tracked at that step ask for (:mod:`nbhelpers.cockpit_tools.memory`: the extended model's
plain step, the BackPACK extensions, a second graph, each quantity's own buffers); the busiest
step decides. Quantities are taken in order (cheapest first); one is refused when

* it needs a BackPACK extension and a layer mixes the examples of a batch (found by what
  the layers do, :func:`~nbhelpers.cockpit_tools.validity.mixing_layers`: BatchNorm in train
  mode, a parameter-free ``F.batch_norm``, ...), or
* BackPACK has no rule for one of the model's layers for an extension it needs (read from
  BackPACK's own tables; GroupNorm counts as covered where ``enable_groupnorm_support`` adds
  a rule), or
* adding it makes one of its steps exceed the free memory of the device (GPU: CUDA's free
  memory; CPU: psutil, else ``/proc/meminfo``); by default 80 % of it may be used.

What the guard accepts is never estimated below what it takes (tests/test_cockpit_memory.py).
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
from nbhelpers.cockpit_tools.memory import (
    Shapes,
    activity,
    model_shapes,
    module_rules,
    optimizer_info,
    step_bytes,
)
from nbhelpers.cockpit_tools.quantities import DEFAULT_PRESET, QuantitySpec, preset_specs
from nbhelpers.cockpit_tools.validity import MIXING_ADVICE, mixing_layers, mixing_reason
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
        estimate_bytes: estimated peak memory of its busiest step, with everything accepted
            that is tracked at that step too (bytes).
        ok: True if accepted.
        kind: "" if accepted, else why it was refused: "memory", "batch mixing" or
            "unsupported layer".
        reason: details ("" if accepted): what the memory holds, the layers that mix the
            examples or the unsupported layers.
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
        memory_source, base_bytes (plain training step of the extended model, bytes),
        notes (extra remarks), fraction (share of the free memory allowed).
        peak_bytes: estimate of the busiest step of the accepted quantities (bytes).
        peak_step: that step (the first one if several tie); peak_quantities: the
            quantities tracked there.
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
    peak_bytes: int = 0
    peak_step: int = 0
    peak_quantities: list[str] = field(default_factory=list)
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
        busiest = ", ".join(self.peak_quantities) or "nothing tracked"
        return (
            f"Cockpit guard: batch {self.batch_size} on {self.device}; plain training step "
            f"~{format_bytes(self.base_bytes)}; busiest tracked step {self.peak_step} "
            f"({busiest}) ~{format_bytes(self.peak_bytes)}; allowed "
            f"{format_bytes(self.budget_bytes)} ({self.fraction:.0%} of "
            f"{format_bytes(self.available_bytes)} free, via {self.memory_source}). {verdict}"
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


class _Schedule:
    """Every spec's :class:`~nbhelpers.cockpit_tools.memory.Activity` at every step of one
    period of the tracking schedules (steps 0 .. lcm(intervals) + 1, at most ~1000)."""

    def __init__(self, specs: list[QuantitySpec], optimizer):
        period = min(math.lcm(*(s.every for s in specs)) if specs else 1, 1000)
        self.steps = range(period + 2)
        with optimizer_info(optimizer):
            self.table = [self._activities(spec) for spec in specs]

    def _activities(self, spec: QuantitySpec) -> dict:
        quantity, own = spec.build(), spec.entry.memory
        found = {step: activity(quantity, own, step) for step in self.steps}
        return {step: a for step, a in found.items() if a is not None}

    def peak(self, chosen: list[int], sh: Shapes, n: int, within: int | None = None):
        """``(bytes, step)`` of the busiest step of the specs ``chosen`` (indices), over the
        steps where spec ``within`` is tracked (default: all)."""
        steps = self.table[within] if within is not None else self.steps
        best = (sh.base(n), 0)
        for step in steps:
            active = [self.table[i][step] for i in chosen if step in self.table[i]]
            ran = [self.table[i][step - 1] for i in chosen if step - 1 in self.table[i]]
            before = frozenset(type(e) for a in ran for e in a.extensions)
            if active:
                best = max(best, (step_bytes(active, sh, n, before), -step))
        return best[0], -best[1]


def _max_batch(schedule: _Schedule, chosen: list[int], sh: Shapes, n: int, budget: int) -> int:
    """Largest batch size below ``n`` whose busiest step fits ``budget`` (0 if none)."""
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if schedule.peak(chosen, sh, mid)[0] <= budget else (low, mid - 1)
    return low


def _memory_alternative(spec: QuantitySpec, fit: int, sh: Shapes, n: int) -> str:
    exact_hessian = any(isinstance(ext, DiagHessian) for ext in spec.extensions())
    if exact_hessian and hasattr(spec.entry.cls, "extensions_from_str"):  # a curvature option
        cheaper = replace(spec, options={**spec.options, "curvature": "diag_ggn_mc"})
        estimate = _Schedule([cheaper], None).peak([0], sh, n)[0]
        curved = [x for x in sh.layers if x.curved]
        behind = f" behind {len(curved)} curved layers ({curved[0].kind}, ...)" if curved else ""
        return (
            f"The exact Hessian diagonal builds dense N x V x V factors{behind} and carries "
            f"them all back to the first layer. Use the generalised Gauss-Newton diagonal "
            f"instead: {cheaper.label} alone needs ~{format_bytes(estimate)} (preset "
            "'thorough' does this)."
        )
    if fit:
        return f"It fits up to batch {fit}; or track it less often, or use preset 'basic'."
    return "Use preset 'basic' (no per-example quantities)."


def _support(spec: QuantitySpec, model: nn.Module, mixing: list[str]) -> tuple[str, str, str]:
    """``(kind, reason, alternative)`` if the model cannot give ``spec`` its BackPACK
    extensions, else empty strings."""
    extensions = spec.extensions()
    if mixing and extensions:
        return "batch mixing", mixing_reason(mixing), MIXING_ADVICE
    unsupported = _unsupported_layers(model, extensions)
    if unsupported:
        reason = f"BackPACK has no rule for {', '.join(unsupported)}"
        return "unsupported layer", reason, "Use preset 'basic', or replace those layers."
    return "", "", ""


def _judge_all(specs, model, sh: Shapes, n: int, budget: int, optimizer):
    """``(rows, accepted indices, schedule)``: support first, then memory, spec by spec."""
    schedule, mixing = _Schedule(specs, optimizer), None
    rows, chosen = [], []
    for i, spec in enumerate(specs):
        if mixing is None and spec.extensions():
            mixing = mixing_layers(model, sh.input_shape)
        kind, reason, alternative = _support(spec, model, mixing or [])
        estimate, _ = schedule.peak([*chosen, i], sh, n, within=i)
        if not kind and estimate > budget:
            fit = _max_batch(schedule, [*chosen, i], sh, n, budget)
            kind, reason, alternative = "memory", spec.needs, _memory_alternative(spec, fit, sh, n)
        row = GuardRow(spec.label, spec.every, spec.needs, estimate, not kind, kind, reason)
        row.alternative = alternative
        rows.append(row)
        chosen += [] if kind else [i]
    for i in chosen:  # what the accepted ones hold at their busiest step, all together
        rows[i].estimate_bytes = schedule.peak(chosen, sh, n, within=i)[0]
    return rows, chosen, schedule


def guard(
    model: nn.Module,
    batch_size: int,
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    device: torch.device | str | None = None,
    *,
    input_shape: tuple[int, ...] = (3, 32, 32),
    optimizer: torch.optim.Optimizer | None = None,
    available_bytes: int | None = None,
    fraction: float = 0.8,
) -> GuardReport:
    """Check which quantities of a Cockpit preset can run, before training.

    Arithmetic on layer sizes from one single-example forward pass, plus a probe of four
    examples for layers that mix them (no backward): typically tens of milliseconds.
    Nothing in BackPACK or the model is changed.

    Args:
        model: the network (float32 ``(B, *input_shape)`` -> ``(B, C)`` logits).
        batch_size: training batch size N (positive int).
        preset: preset name (see ``PRESETS``) or specs (``preset_specs(..., every=...)``
            changes intervals).
        device: training device (default: where the parameters are); decides
            whose free memory counts.
        input_shape: one example's shape, default (3, 32, 32).
        optimizer: the training optimizer, if known: with plain SGD Alpha keeps no
            per-example gradients (default: assume it does, the larger estimate).
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
    sh = model_shapes(model, tuple(input_shape))
    device = torch.device(device) if device is not None else model_device(model)
    available, source = (
        available_memory(device) if available_bytes is None else (available_bytes, "given")
    )
    budget, base = int(available * fraction), sh.base(batch_size)
    rows, chosen, schedule = _judge_all(specs, model, sh, batch_size, budget, optimizer)
    peak, step = schedule.peak(chosen, sh, batch_size)
    at_peak = [specs[i].label for i in chosen if step in schedule.table[i]]
    tight = (
        f"Note: even a plain training step (~{format_bytes(base)}) may not fit; reduce the batch."
    )
    return GuardReport(
        rows=rows,
        accepted=[specs[i] for i in chosen],
        batch_size=batch_size,
        device=str(device),
        budget_bytes=budget,
        available_bytes=int(available),
        memory_source=source,
        base_bytes=base,
        notes=[tight] if base > budget else [],
        fraction=fraction,
        peak_bytes=peak,
        peak_step=step,
        peak_quantities=at_peak,
    )
