"""Cockpit presets named for their purpose, and what each instrument means.

A preset is a list of :class:`QuantitySpec` (a Cockpit quantity, how often it is
tracked, its options). Ours, from cheapest to most thorough:

* ``"basic"``: Loss, GradNorm, Distance, UpdateSize at every step. Needs no
  per-example information, so it also stays valid for BatchNorm models.
* ``"cheap"`` (the default): ``"basic"`` plus Alpha every 10 steps -- the set the
  handover notebook (and the tutorial, Numerics of ML Tutorial 11) tracks.
* ``"standard"``: ``"cheap"`` plus the three gradient tests and the 1D gradient
  histogram every 10 steps (Cockpit's "economy" set, at a tenth of the steps).
* ``"thorough"``: ``"standard"`` plus the 2D histogram, the Hessian trace and
  TIC every 20 steps and the largest Hessian eigenvalue every 100 steps. The
  curvature uses BackPACK's Monte-Carlo generalised Gauss-Newton diagonal
  (``curvature="diag_ggn_mc"``), never the exact Hessian diagonal, which through
  a Tanh layer builds a dense ``N x V x V`` tensor (hundreds of GiB for the
  handover CNN).

Cockpit's own configurations ``"economy"``, ``"business"`` and ``"full"``
(``cockpit.utils.configuration``; every quantity at every step, business/full
with the exact Hessian diagonal) are accepted too, so :func:`guard` can show
why ``"full"`` does not fit.

:data:`QUANTITY_INFO` says, per quantity, what it needs and what it tells you;
:data:`BATCHNORM_NOTE` (markdown) what stays valid with BatchNorm.

Without ``optimizer.zero_grad()`` (the handover's bug) GradNorm shows the
accumulated gradient the optimizer really used, while the gradient tests compare
that accumulated gradient with one batch's per-example gradients: their values
are then meaningless, and the norm and inner-product tests often undefined (NaN).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BATCHNORM_NOTE",
    "COCKPIT_CONFIGURATIONS",
    "DEFAULT_PRESET",
    "OUR_PRESETS",
    "PRESETS",
    "QUANTITY_INFO",
    "QuantitySpec",
    "lanczos_hess_max_ev",
    "make_quantities",
    "preset_markdown",
    "preset_specs",
    "preset_table",
]

#: Needs: "loss" (the mini-batch loss), "gradient" (the mini-batch gradient p.grad),
#: "parameters" (copies of the weights), "per-example gradients" (BackPACK BatchGrad),
#: "curvature diagonal" (BackPACK DiagGGNMC/DiagGGNExact/DiagHessian),
#: "Hessian-vector products" (double backward through the graph).
QUANTITY_INFO: dict[str, dict[str, Any]] = {
    "Loss": {
        "needs": "loss",
        "instrument": "performance plot",
        "meaning": "mini-batch training loss of the step",
    },
    "GradNorm": {
        "needs": "gradient",
        "instrument": "gradient norm",
        "meaning": "L2 norm of the gradient the optimizer uses (per layer; the plot shows the total)",
    },
    "Distance": {
        "needs": "parameters",
        "instrument": "distance",
        "meaning": "L2 distance of the weights from their initial values (per layer)",
    },
    "UpdateSize": {
        "needs": "parameters",
        "instrument": "distance",
        "meaning": "L2 norm of the change the optimizer step made to the weights (per layer)",
    },
    "Alpha": {
        "needs": "per-example gradients",
        "instrument": "alpha distribution",
        "meaning": (
            "normalised step length from a noise-aware 1D quadratic fit along the step: "
            "-1 = no progress (step far too small), 0 = step lands in the valley floor, "
            "+1 = step jumps to the same height on the other side (too large)"
        ),
    },
    "InnerTest": {
        "needs": "per-example gradients",
        "instrument": "gradient tests",
        "meaning": (
            "inner-product test (Bollapragada et al., 2018): noise of the batch gradient along "
            "its own direction, relative to its norm; near or above 1 = batch too small"
        ),
    },
    "NormTest": {
        "needs": "per-example gradients",
        "instrument": "gradient tests",
        "meaning": (
            "norm test (Byrd et al., 2012): noise of the batch gradient relative to its norm "
            "(smallest passing theta); near or above 1 = batch too small"
        ),
    },
    "OrthoTest": {
        "needs": "per-example gradients",
        "instrument": "gradient tests",
        "meaning": (
            "orthogonality test (Bollapragada et al., 2018): noise orthogonal to the batch "
            "gradient, relative to its norm; large = the direction is unreliable"
        ),
    },
    "GradHist1d": {
        "needs": "per-example gradients",
        "instrument": "gradient histogram",
        "meaning": "histogram of all per-example gradient entries",
    },
    "GradHist2d": {
        "needs": "per-example gradients",
        "instrument": "gradient/parameter histogram",
        "meaning": "2D histogram of per-example gradient entries against weight values",
    },
    "MeanGSNR": {
        "needs": "per-example gradients",
        "instrument": "gradient signal-to-noise",
        "meaning": "mean gradient signal-to-noise ratio (Liu et al., 2020)",
    },
    "TICDiag": {
        "needs": "per-example gradients + curvature diagonal",
        "instrument": "TIC",
        "meaning": "Takeuchi information criterion with a diagonal curvature (Thomas et al., 2020)",
    },
    "HessTrace": {
        "needs": "curvature diagonal",
        "instrument": "Hessian trace",
        "meaning": "trace of the curvature matrix per layer (GGN diagonal in our presets)",
    },
    "HessMaxEV": {
        "needs": "Hessian-vector products",
        "instrument": "Hessian max eigenvalue",
        "meaning": "largest eigenvalue of the mini-batch loss Hessian (sharpness)",
    },
}

_PER_EXAMPLE = "per-example gradients"


@dataclass(frozen=True)
class QuantitySpec:
    """One Cockpit quantity in a preset.

    Attributes:
        name: class name in ``cockpit.quantities`` ("Loss", "Alpha", "HessTrace", ...).
        every: tracked at steps 0, every, 2*every, ... (a positive int).
        options: extra keyword arguments of the quantity, e.g.
            ``{"curvature": "diag_ggn_mc"}``.
    """

    name: str
    every: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in QUANTITY_INFO:
            raise ValueError(
                f"unknown Cockpit quantity {self.name!r}; valid: {', '.join(QUANTITY_INFO)}"
            )
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive int, got {self.every!r} for {self.name}")

    @property
    def curvature(self) -> str | None:
        """Curvature option of HessTrace/TICDiag ("diag_h" is Cockpit's default), else None."""
        if self.name in ("HessTrace", "TICDiag"):
            return self.options.get("curvature", "diag_h")
        return None

    @property
    def needs(self) -> str:
        """What the quantity needs (see :data:`QUANTITY_INFO`), naming the curvature."""
        needs = QUANTITY_INFO[self.name]["needs"]
        if self.curvature is not None:
            label = {
                "diag_h": "exact Hessian diagonal",
                "diag_ggn_exact": "GGN diagonal (exact)",
                "diag_ggn_mc": "GGN diagonal (Monte Carlo)",
            }.get(self.curvature, self.curvature)
            needs = needs.replace("curvature diagonal", label)
        return needs

    @property
    def per_example(self) -> bool:
        """Whether the quantity needs per-example gradients (invalid with BatchNorm in train mode)."""
        return _PER_EXAMPLE in QUANTITY_INFO[self.name]["needs"]

    @property
    def label(self) -> str:
        """Name plus options, e.g. "HessTrace(curvature='diag_ggn_mc')"."""
        if not self.options:
            return self.name
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})"

    def build(self) -> Any:
        """The Cockpit quantity object, tracked on ``cockpit.utils.schedules.linear(every)``."""
        from nbhelpers.cockpit_compat import import_cockpit

        import_cockpit()
        from cockpit import quantities
        from cockpit.utils import schedules

        options = dict(self.options)
        cls = getattr(quantities, self.name)
        if self.name == "HessMaxEV" and options.pop("method", "power") == "lanczos":
            cls = lanczos_hess_max_ev()
        return cls(track_schedule=schedules.linear(self.every), **options)


@functools.cache
def lanczos_hess_max_ev() -> type:
    """Cockpit's HessMaxEV quantity, computed by a bounded Lanczos iteration.

    Cockpit's default power iteration finds the eigenvalue of largest *magnitude*
    (which may be negative) and can take its full 100 Hessian-vector products;
    with ``use_power=False`` it calls ``scipy.sparse.linalg.eigsh`` at machine
    precision with no iteration limit, which can run for many minutes on a CPU.
    This subclass (same class name, so logs and plots are unchanged) calls
    ``eigsh(k=1, which="LA")`` -- the largest algebraic eigenvalue -- with
    ``tol=1e-2``, ``ncv=10``, at most ``maxiter=5`` restarts and a fixed start
    vector (about 20-50 Hessian-vector products), each product one
    ``torch.autograd.grad`` through the gradient's graph; without convergence it
    returns its best estimate (or NaN).

    Returns:
        The quantity class; its constructor takes ``track_schedule``, ``verbose``,
        ``tol``, ``ncv``, ``maxiter`` and ``seed``.
    """
    import numpy as np
    import torch
    from cockpit.quantities import HessMaxEV as CockpitHessMaxEV
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def hvp_operator(grads: list, params: list) -> LinearOperator:
        sizes = [p.numel() for p in params]
        n = sum(sizes)

        def matvec(vector):
            flat = torch.as_tensor(
                np.asarray(vector, dtype=np.float32).ravel(), device=params[0].device
            )
            chunks = [c.view_as(p) for c, p in zip(flat.split(sizes), params, strict=False)]
            products = torch.autograd.grad(
                grads, params, chunks, retain_graph=True, allow_unused=True
            )
            out = [
                torch.zeros_like(p) if h is None else h
                for h, p in zip(products, params, strict=False)
            ]
            return torch.cat([h.reshape(-1) for h in out]).detach().cpu().numpy()

        return LinearOperator((n, n), matvec=matvec, dtype=np.float32)

    class HessMaxEV(CockpitHessMaxEV):
        """Largest Hessian eigenvalue by bounded Lanczos (see :func:`lanczos_hess_max_ev`)."""

        def __init__(self, track_schedule, verbose=False, tol=1e-2, ncv=10, maxiter=5, seed=0):
            super().__init__(track_schedule, verbose=verbose, use_power=False)
            self._tol, self._ncv, self._maxiter, self._seed = tol, ncv, maxiter, seed

        def _compute(self, global_step, params, batch_loss):
            grads = self._fetch_grad(params)
            if any(g is None or g.grad_fn is None for g in grads):
                return np.float64(np.nan)  # no graph kept (create_graph was not requested)
            operator = hvp_operator(grads, params)
            n = operator.shape[0]
            v0 = np.random.default_rng(self._seed).standard_normal(n).astype(np.float32)
            try:
                values = eigsh(
                    operator,
                    k=1,
                    which="LA",
                    tol=self._tol,
                    ncv=min(self._ncv, n - 1),
                    maxiter=self._maxiter,
                    v0=v0,
                    return_eigenvectors=False,
                )
            except ArpackNoConvergence as err:
                values = err.eigenvalues if len(err.eigenvalues) else [np.nan]
            return np.float64(values[0])

    HessMaxEV.__module__ = __name__
    HessMaxEV.__qualname__ = "HessMaxEV"
    return HessMaxEV


def _specs(*items) -> tuple[QuantitySpec, ...]:
    return tuple(QuantitySpec(*item) if isinstance(item, tuple) else item for item in items)


_GGN_MC = {"curvature": "diag_ggn_mc"}
_BASIC = _specs(("Loss", 1), ("GradNorm", 1), ("Distance", 1), ("UpdateSize", 1))
_CHEAP = _BASIC + _specs(("Alpha", 10))
_STANDARD = _CHEAP + _specs(
    ("InnerTest", 10), ("NormTest", 10), ("OrthoTest", 10), ("GradHist1d", 10)
)
_THOROUGH = _STANDARD + _specs(
    ("GradHist2d", 20),
    ("HessTrace", 20, _GGN_MC),
    ("TICDiag", 20, _GGN_MC),
    # bounded Lanczos instead of Cockpit's power iteration (see lanczos_hess_max_ev)
    ("HessMaxEV", 100, {"method": "lanczos"}),
)

#: Our presets, cheapest first.
OUR_PRESETS: dict[str, tuple[QuantitySpec, ...]] = {
    "basic": _BASIC,
    "cheap": _CHEAP,
    "standard": _STANDARD,
    "thorough": _THOROUGH,
}

_ECONOMY = _specs(
    *(
        (name, 1)
        for name in (
            "Alpha",
            "Distance",
            "GradHist1d",
            "GradNorm",
            "InnerTest",
            "Loss",
            "NormTest",
            "OrthoTest",
            "UpdateSize",
        )
    )
)
#: Cockpit's own configurations (cockpit.utils.configuration): every step, exact Hessian diagonal.
COCKPIT_CONFIGURATIONS: dict[str, tuple[QuantitySpec, ...]] = {
    "economy": _ECONOMY,
    "business": _ECONOMY + _specs(("TICDiag", 1), ("HessTrace", 1)),
    "full": _ECONOMY
    + _specs(("TICDiag", 1), ("HessTrace", 1), ("HessMaxEV", 1), ("GradHist2d", 1)),
}

#: All preset names accepted by :func:`make_quantities` and the guard.
PRESETS: dict[str, tuple[QuantitySpec, ...]] = {**OUR_PRESETS, **COCKPIT_CONFIGURATIONS}

#: The preset used when none is given: the handover's (and tutorial's) instruments.
DEFAULT_PRESET = "cheap"

_PRESET_PURPOSE = {
    "basic": "valid for any model (BatchNorm too); costs ~nothing",
    "cheap": "the tutorial's set: is the step size right? (default)",
    "standard": "adds gradient noise: is the batch large enough?",
    "thorough": "adds curvature (GGN) and sharpness; slow, for a few hundred steps",
    "economy": "Cockpit's own 'economy', every step",
    "business": "Cockpit's own 'business', every step, exact Hessian diagonal",
    "full": "Cockpit's own 'full', every step, exact Hessian diagonal",
}


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
        TypeError: ``preset`` is neither a str nor an iterable of specs.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown Cockpit preset {preset!r}; valid: {', '.join(PRESETS)}")
        specs = list(PRESETS[preset])
    else:
        try:
            specs = list(preset)
        except TypeError as err:
            raise TypeError(
                f"preset must be a preset name or QuantitySpec list, got {preset!r}"
            ) from err
        for spec in specs:
            if not isinstance(spec, QuantitySpec):
                raise TypeError(f"expected QuantitySpec items, got {type(spec).__name__}")
    every = dict(every or {})
    exclude = set(exclude)
    for name in [*every, *exclude]:
        if name not in QUANTITY_INFO:
            raise ValueError(
                f"unknown Cockpit quantity {name!r}; valid: {', '.join(QUANTITY_INFO)}"
            )
    return [
        QuantitySpec(s.name, every.get(s.name, s.every), s.options)
        for s in specs
        if s.name not in exclude
    ]


def make_quantities(
    preset: str | Iterable[QuantitySpec] = DEFAULT_PRESET,
    *,
    every: Mapping[str, int] | None = None,
    exclude: Iterable[str] = (),
) -> list[Any]:
    """Cockpit quantity objects for a preset, ready for ``Cockpit(params, quantities=...)``.

    Args:
        preset, every, exclude: as in :func:`preset_specs`.

    Returns:
        A list of ``cockpit.quantities.Quantity`` objects.

    Raises:
        ValueError, TypeError: as in :func:`preset_specs`.
    """
    return [spec.build() for spec in preset_specs(preset, every=every, exclude=exclude)]


def preset_table(presets: Iterable[str] | None = None):
    """One row per (preset, quantity): interval, what it needs, what it tells you.

    Args:
        presets: preset names (default: all of :data:`PRESETS`).

    Returns:
        ``pandas.DataFrame`` with columns preset, quantity, every, needs,
        valid_with_batchnorm (bool), meaning.

    Raises:
        ValueError: unknown preset name.
    """
    import pandas as pd

    rows = []
    for name in presets or PRESETS:
        for spec in preset_specs(name):
            rows.append(
                {
                    "preset": name,
                    "quantity": spec.label,
                    "every": spec.every,
                    "needs": spec.needs,
                    "valid_with_batchnorm": not spec.per_example and spec.curvature is None,
                    "meaning": QUANTITY_INFO[spec.name]["meaning"],
                }
            )
    return pd.DataFrame(rows)


def preset_markdown(presets: Iterable[str] | None = None) -> str:
    """A markdown table of presets: purpose and quantities with their intervals.

    Args:
        presets: preset names (default: all of :data:`PRESETS`).

    Returns:
        Markdown text (show it with ``IPython.display.Markdown``).
    """
    lines = ["| preset | purpose | quantities (tracked every n steps) |", "|---|---|---|"]
    for name in presets or PRESETS:
        items = ", ".join(f"{s.label} ({s.every})" for s in preset_specs(name))
        lines.append(f"| `{name}` | {_PRESET_PURPOSE.get(name, '')} | {items} |")
    return "\n".join(lines)


#: Markdown for the notebook: what each instrument means on a BatchNorm model.
BATCHNORM_NOTE = """\
**Cockpit on a model with BatchNorm (train mode)**

BatchNorm normalises every feature with the mean and variance *of the whole batch*.
The loss of one image therefore depends on all other images in the batch, and a
"per-example gradient" does not exist. BackPACK still returns numbers, but they are
not per-example gradients, so every instrument built on them would be silently wrong.

| instrument | with BatchNorm (train mode) | what it measures |
|---|---|---|
| Loss | valid | the mini-batch loss that was minimised (batch statistics included) |
| GradNorm | valid | norm of the mini-batch gradient the optimizer really used |
| Distance | valid | distance of the weights from their initial values |
| UpdateSize | valid | size of each optimizer step in weight space |
| HessMaxEV | valid | largest eigenvalue of the mini-batch loss Hessian (statistics included) |
| Alpha, gradient tests, histograms, GSNR, TIC | **not available** | need per-example gradients |
| HessTrace (GGN) | **not available** | BackPACK's curvature rules refuse BatchNorm in train mode |

To get all instruments back honestly, train a model whose examples do not interact:
**GroupNorm** normalises each image with its own statistics
(`build_cnn(..., norm="group")`; `enable_groupnorm_support()` adds GroupNorm to BackPACK,
checked against plain autograd). Its instruments then describe that model, not the
BatchNorm one. Switching BatchNorm to eval mode just for the tracked steps is *not*
offered: the optimizer would then take a different step on those steps than on all others.
"""
