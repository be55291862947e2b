"""The registry of Cockpit quantities, the presets derived from it, and the tables explaining them.

One registry, :data:`QUANTITIES`: quantity name -> :class:`Quantity` (its Cockpit class, what
it means, where our presets track it, its own memory term, its instrument plot and the log
column it fills). The entries are listed in :mod:`nbhelpers.cockpit_tools.catalog`. What a
quantity needs from BackPACK is never written down here: it is asked from Cockpit, from the
built quantity's ``extensions(step)`` and ``create_graph(step)``. The presets, the guard
(:mod:`~nbhelpers.cockpit_tools.preflight`), the plots (:mod:`~nbhelpers.cockpit_tools.plots`),
:func:`preset_table` and :func:`batchnorm_note` all follow from the registry.

Our presets, cheapest first; each tracks what the one before tracks, plus the quantities
whose entry names it:

* ``"basic"``: Loss, GradNorm, Distance, UpdateSize at every step. No BackPACK extension,
  so it also stays valid for BatchNorm models.
* ``"cheap"`` (the default): plus Alpha every :data:`CHEAP_ALPHA_EVERY` steps, the interval
  at which the whole step costs at most 1.25x a plain one on 2 CPU cores
  (``benchmarks/bench_cockpit.py`` measures cost against the tracking interval; the
  tutorial's first strategy: "reduce the tracking frequency of Cockpit").
* ``"handover"``: the same instruments at the handover notebook's intervals, Alpha every
  10 steps -- the colleague's set, which the tutorial says to read first.
* ``"standard"``: plus the three gradient tests and the 1D gradient histogram every 10 steps
  (Cockpit's "economy" set, at a tenth of the steps).
* ``"thorough"``: plus the 2D histogram, the Hessian trace and TIC every 20 steps and the
  largest Hessian eigenvalue every 100 steps (bounded Lanczos). The curvature is BackPACK's
  Monte-Carlo generalised Gauss-Newton diagonal (``curvature="diag_ggn_mc"``), never the exact
  Hessian diagonal, which through a Tanh layer builds dense ``N x V x V`` factors and carries
  them to the first layer (many GiB even for small models).

Cockpit's own configurations ``"economy"``, ``"business"`` and ``"full"``
(``cockpit.utils.configuration``; every quantity at every step, business/full with the exact
Hessian diagonal) are accepted too, so the guard can show why ``"full"`` does not fit.

Without ``optimizer.zero_grad()`` (the handover's bug) GradNorm shows the accumulated
gradient the optimizer really used, while Alpha, the gradient tests and GSNR compare that
accumulated gradient with one batch's per-example gradients: their values are then
meaningless (entries with ``needs_zero_grad``; Cockpit warns at run time, see
:mod:`~nbhelpers.cockpit_tools.validity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nbhelpers.cockpit_tools.memory import SECOND_GRAPH, Term, extension_memory
from nbhelpers.validate import one_of, positive_int


@dataclass(frozen=True)
class Preset:
    """One of our presets: what it is for, and tracking intervals other than the entries' own.

    A preset tracks every registry entry whose ``preset`` is this one or one listed before it
    in :data:`OUR_PRESETS`, at the entry's ``every`` unless ``every`` here names another.
    """

    purpose: str
    every: Mapping[str, int] = field(default_factory=dict)


#: Alpha's interval in the default preset "cheap" (see the module docstring).
CHEAP_ALPHA_EVERY = 50

#: Our presets, cheapest first.
OUR_PRESETS: dict[str, Preset] = {
    "basic": Preset("valid for any model (BatchNorm too); costs ~nothing"),
    "cheap": Preset(
        "is the step size right? Alpha less often, <= 1.25x a plain step (default)",
        {"Alpha": CHEAP_ALPHA_EVERY},
    ),
    "handover": Preset("the colleague's set: the handover notebook's instruments and intervals"),
    "standard": Preset("adds gradient noise: is the batch large enough?"),
    "thorough": Preset("adds curvature (GGN) and sharpness; slow, for a few hundred steps"),
}
#: Cockpit's own configurations (``cockpit.utils.configuration``), name -> purpose.
COCKPIT_CONFIGURATIONS: dict[str, str] = {
    "economy": "Cockpit's own 'economy', every step",
    "business": "Cockpit's own 'business', every step, exact Hessian diagonal",
    "full": "Cockpit's own 'full', every step, exact Hessian diagonal",
}
#: Every preset name accepted by :func:`preset_specs`, the guard and the hook -> its purpose.
PRESETS: dict[str, str] = {
    **{n: p.purpose for n, p in OUR_PRESETS.items()},
    **COCKPIT_CONFIGURATIONS,
}
#: The preset used when none is given.
DEFAULT_PRESET = "cheap"


@dataclass(frozen=True)
class Quantity:
    """One entry of the registry: a Cockpit quantity and what the package derives from it.

    Attributes:
        cls: the Cockpit quantity class; its name is the quantity's name and its log key.
        meaning: what it tells you (tables, the BatchNorm note).
        preset: the cheapest of :data:`OUR_PRESETS` that tracks it (None: none does).
        every: its tracking interval in our presets (steps).
        options: its keyword options in our presets, e.g. ``{"curvature": "diag_ggn_mc"}``.
        memory: its own memory beyond the BackPACK extensions and graph Cockpit asks for
            (a :class:`~nbhelpers.cockpit_tools.memory.Term`), if any.
        plot: the single-instrument plot that draws it (its name without ``plot_`` is the
            instrument's name), if any.
        column: turns its logged value into the number of its ``log_frame`` column
            (None: no column, e.g. histograms).
        needs_zero_grad: it compares ``p.grad`` with this batch's per-example gradients,
            so it means nothing while gradients are not reset.
    """

    cls: type
    meaning: str
    preset: str | None = None
    every: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    memory: Term | None = None
    plot: Callable[..., Any] | None = None
    column: Callable[[Any], float] | None = float
    needs_zero_grad: bool = False

    @property
    def name(self) -> str:
        """The Cockpit class name, e.g. "Alpha"."""
        return self.cls.__name__

    @property
    def spec(self) -> QuantitySpec:
        """How our presets track it."""
        return QuantitySpec(self.name, self.every, self.options)


#: The registry: quantity name -> :class:`Quantity` (filled by :mod:`~nbhelpers.cockpit_tools.catalog`).
QUANTITIES: dict[str, Quantity] = {}


def register(quantity: Quantity) -> Quantity:
    """Add ``quantity`` to :data:`QUANTITIES`; presets, guard, tables and plots then know it.

    Raises:
        ValueError: the name is taken, the preset is unknown, or ``every`` is not positive.
    """
    if quantity.name in QUANTITIES:
        raise ValueError(f"a Cockpit quantity named {quantity.name!r} is already registered")
    if quantity.preset is not None:
        one_of("preset", quantity.preset, OUR_PRESETS)
    positive_int("every", quantity.every)
    QUANTITIES[quantity.name] = quantity
    return quantity


@dataclass(frozen=True)
class QuantitySpec:
    """One Cockpit quantity as a preset tracks it.

    Attributes:
        name: a name in :data:`QUANTITIES` ("Loss", "Alpha", "HessTrace", ...).
        every: tracked at steps 0, every, 2*every, ... (a positive int).
        options: keyword options of the quantity, e.g. ``{"curvature": "diag_ggn_mc"}``.

    Raises:
        ValueError: unknown name or non-positive ``every``.
    """

    name: str
    every: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        one_of("quantity", self.name, QUANTITIES)
        positive_int(f"every of {self.name}", self.every)

    @property
    def entry(self) -> Quantity:
        """Its registry entry."""
        return QUANTITIES[self.name]

    @property
    def label(self) -> str:
        """Name plus options, e.g. "HessTrace(curvature='diag_ggn_mc')"."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name

    def build(self) -> Any:
        """The Cockpit quantity object, tracked on ``cockpit.utils.schedules.linear(every)``."""
        from cockpit.utils.schedules import linear

        return self.entry.cls(track_schedule=linear(self.every), **self.options)

    def extensions(self, step: int = 0) -> list:
        """The BackPACK extension objects the quantity asks Cockpit for at ``step``."""
        return self.build().extensions(step)

    @property
    def needs(self) -> str:
        """What it needs beyond a plain training step, e.g. "per-example gradients"."""
        quantity = self.build()
        labels = [extension_memory(ext).label for ext in quantity.extensions(0)]
        labels += [SECOND_GRAPH.label] if quantity.create_graph(0) else []
        labels += [self.entry.memory.label] if self.entry.memory else []
        return ", ".join(labels) or "nothing beyond the training step"

    @property
    def valid_with_batchnorm(self) -> bool:
        """True when it needs no BackPACK extension (BackPACK's per-example and curvature
        results do not hold for a model that mixes the examples of a batch, e.g. BatchNorm
        in train mode)."""
        return not self.extensions()


def _preset(name: str) -> list[QuantitySpec]:
    one_of("preset", name, PRESETS)
    if name in COCKPIT_CONFIGURATIONS:
        from cockpit.utils.configuration import quantities_cls_for_configuration

        return [QuantitySpec(cls.__name__) for cls in quantities_cls_for_configuration(name)]
    rank, every = list(OUR_PRESETS).index, OUR_PRESETS[name].every
    chosen = [q for q in QUANTITIES.values() if q.preset and rank(q.preset) <= rank(name)]
    return [replace(q.spec, every=every.get(q.name, q.every)) for q in chosen]


def preset_specs(
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    every: Mapping[str, int] | None = None,
    exclude: Iterable[str] = (),
) -> list[QuantitySpec]:
    """The quantity specs of a preset, optionally with other intervals or without some.

    Args:
        preset: a name from :data:`PRESETS` or an iterable of :class:`QuantitySpec`.
        every: quantity name -> new tracking interval, e.g. ``{"Alpha": 5}``.
        exclude: quantity names to leave out.

    Returns:
        A new list of specs.

    Raises:
        ValueError: unknown preset or quantity name, non-positive interval.
        TypeError: ``preset`` is neither a preset name nor QuantitySpec objects.
    """
    if isinstance(preset, str):
        specs = _preset(preset)
    else:
        specs = list(preset) if isinstance(preset, Iterable) else [preset]
        if not all(isinstance(s, QuantitySpec) for s in specs):
            raise TypeError(
                f"preset must be one of {', '.join(PRESETS)} or QuantitySpec objects, "
                f"got {preset!r:.200}"
            )
    every, exclude = dict(every or {}), set(exclude)
    for name in [*every, *exclude]:
        one_of("quantity", name, QUANTITIES)
    return [replace(s, every=every.get(s.name, s.every)) for s in specs if s.name not in exclude]


def make_quantities(
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    model: Any = None,
    every: Mapping[str, int] | None = None,
    exclude: Iterable[str] = (),
    input_shape: tuple[int, ...] = (3, 32, 32),
) -> list[Any]:
    """Cockpit quantity objects for a preset, ready for ``Cockpit(params, quantities=...)``.

    Per-example quantities (those needing a BackPACK extension) need a model whose layers
    keep the examples of a batch apart. With ``model`` this is checked now, by what its layers
    do (:func:`~nbhelpers.cockpit_tools.validity.mixing_layers`); without, at the first
    tracked step inside Cockpit (which then stops with the same error).

    Args:
        preset, every, exclude: as in :func:`preset_specs`.
        model: the network the quantities will watch (optional, see above).
        input_shape: one example's shape, for the check with ``model``.

    Raises:
        ValueError, TypeError: as in :func:`preset_specs`.
        BatchMixingError: ``model`` mixes the examples of a batch and per-example
            quantities were requested.
    """
    from nbhelpers.cockpit_tools.validity import (
        MIXING_ADVICE,
        BatchMixingError,
        mixing_layers,
        mixing_reason,
    )

    specs = preset_specs(preset, every=every, exclude=exclude)
    per_example = [s.label for s in specs if not s.valid_with_batchnorm]
    if model is not None and per_example:
        mixing = mixing_layers(model, tuple(input_shape))
        if mixing:
            reason = mixing_reason(mixing)
            raise BatchMixingError(f"{', '.join(per_example)}: {reason}. {MIXING_ADVICE}")
    return [spec.build() for spec in specs]


def preset_table(presets: Iterable[str] | None = None):
    """One row per (preset, quantity): interval, what it needs, BatchNorm validity, meaning.

    Args:
        presets: preset names (default: all of :data:`PRESETS`).

    Returns:
        ``pandas.DataFrame`` with columns preset, quantity, every, needs,
        valid_with_batchnorm (bool), meaning.

    Raises:
        ValueError: unknown preset name.
    """
    import pandas as pd

    columns = ["preset", "quantity", "every", "needs", "valid_with_batchnorm", "meaning"]
    rows = [
        (name, s.label, s.every, s.needs, s.valid_with_batchnorm, s.entry.meaning)
        for name in presets or PRESETS
        for s in preset_specs(name)
    ]
    return pd.DataFrame(rows, columns=columns)


def preset_markdown(presets: Iterable[str] | None = None) -> str:
    """A markdown table of presets: purpose, and quantities with their intervals.

    Raises:
        ValueError: unknown preset name.
    """
    lines = ["| preset | purpose | quantities (tracked every n steps) |", "|---|---|---|"]
    for name in presets or PRESETS:
        items = ", ".join(f"{s.label} ({s.every})" for s in preset_specs(name))
        lines.append(f"| `{name}` | {PRESETS[name]} | {items} |")
    return "\n".join(lines)


_BATCHNORM_HEAD = """\
**Cockpit on a model with BatchNorm (train mode)**

BatchNorm mixes the examples of a batch, so a per-example gradient does not exist: every
quantity that needs a BackPACK extension would be silently wrong (BackPACK's curvature rules
refuse it); the others describe the mini-batch loss that was minimised, statistics included.

| quantity | with BatchNorm (train mode) | what it measures |
|---|---|---|
"""
_BATCHNORM_TAIL = """

All instruments come back with **GroupNorm** (each image normalised with its own statistics;
`build_cnn(..., norm="group")`, whose BackPACK rules are checked against plain autograd); they
then describe that model. BatchNorm in eval mode for the tracked steps only is *not* offered:
the optimizer would take a different step on those steps than on all others.
"""


def batchnorm_note() -> str:
    """Markdown for the notebook: which quantities stay valid on a BatchNorm model, and why."""
    rows = []
    for q in QUANTITIES.values():
        spec = q.spec
        verdict = "valid" if spec.valid_with_batchnorm else f"**not available** ({spec.needs})"
        rows.append(f"| {q.name} | {verdict} | {q.meaning} |")
    return _BATCHNORM_HEAD + "\n".join(rows) + _BATCHNORM_TAIL
