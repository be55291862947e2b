"""Cockpit plots that work in notebooks: the full dashboard, single instruments, a live view.

Cockpit's own ``CockpitPlotter`` reuses one pyplot figure, switches the global
matplotlib backend (``show_plot=False`` turns it to Agg for the whole kernel)
and changes global style settings, so in a notebook only its first plot shows.
Everything here draws on a fresh ``matplotlib.figure.Figure`` that pyplot does
not manage, inside a temporary style context, and returns it: the backend and
global settings are never touched, and the 2nd, 3rd, ... call work the same.
In a notebook, a returned figure shows when it is the last expression of a cell
(or with ``display(fig)``).

Sources: every function takes a Cockpit, a :class:`~nbhelpers.cockpit_tools.CockpitHook`,
a log dict ``{step: {quantity: value}}`` or the path of a JSON log written by
``Cockpit.write`` / :func:`~nbhelpers.cockpit_compat.write_log` (".json" optional).

* :func:`plot_dashboard`: Cockpit's full dashboard (its own instrument code).
* :func:`plot_instruments` and ``plot_loss``, ``plot_learning_rate``,
  ``plot_grad_norm``, ``plot_distance``, ``plot_alpha``,
  ``plot_gradient_tests``: one instrument per axes, readable at notebook width.
* :class:`LiveView`: refreshes a few instruments during training.
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from nbhelpers.cockpit_compat import KNOWN_HARMLESS_WARNINGS

__all__ = [
    "INSTRUMENTS",
    "LiveView",
    "NotebookFigure",
    "figure_to_png",
    "load_log",
    "log_frame",
    "plot_alpha",
    "plot_dashboard",
    "plot_distance",
    "plot_grad_norm",
    "plot_gradient_tests",
    "plot_instruments",
    "plot_learning_rate",
    "plot_loss",
]

_BLUE = (0.29, 0.45, 0.68)
_ORANGE = (0.95, 0.50, 0.20)
_GREEN = (0.30, 0.60, 0.40)
_GREY = "0.45"


# -- reading logs ----------------------------------------------------------------------------


def _int_keys(data: Mapping) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, value in data.items():
        try:
            step = int(key)
        except (TypeError, ValueError) as err:
            raise ValueError(f"log keys must be step numbers, got {key!r}") from err
        out[step] = dict(value)
    return dict(sorted(out.items()))


def load_log(source: Any) -> dict[int, dict[str, Any]]:
    """The Cockpit log as ``{step: {quantity name: value}}``, sorted by step.

    Args:
        source: a ``Cockpit``, a ``CockpitHook`` (anything with ``get_output()`` or
            a ``log`` attribute), a log dict, or the path of a JSON log (str or
            Path, with or without ".json").

    Returns:
        The log; per-layer values are lists, histograms dicts of numpy arrays.

    Raises:
        FileNotFoundError: the JSON file does not exist.
        TypeError: unsupported source type.
        ValueError: a key is not a step number.
    """
    if hasattr(source, "get_output"):
        return _int_keys(source.get_output())
    if hasattr(source, "log") and isinstance(source.log, Mapping):
        return _int_keys(source.log)
    if isinstance(source, Mapping):
        return _int_keys(source)
    if isinstance(source, str | os.PathLike):
        import json_tricks

        path = os.fspath(source)
        if not path.endswith(".json"):
            path += ".json"
        if not os.path.exists(path):
            raise FileNotFoundError(f"no Cockpit log at {path}")
        with open(path) as handle:
            return _int_keys(json_tricks.load(handle))
    raise TypeError(
        "expected a Cockpit, a CockpitHook, a log dict or a path to a JSON log, "
        f"got {type(source).__name__}"
    )


def _total_norm(value: Any) -> float:
    """Combine per-layer L2 norms into the norm of the whole parameter vector."""
    if isinstance(value, list | tuple | np.ndarray):
        return float(math.sqrt(sum(float(v) ** 2 for v in value)))
    return float(value)


def _sum(value: Any) -> float:
    if isinstance(value, list | tuple | np.ndarray):
        return float(sum(float(v) for v in value))
    return float(value)


_SCALARS = (
    "Loss",
    "Alpha",
    "InnerTest",
    "NormTest",
    "OrthoTest",
    "MeanGSNR",
    "TICDiag",
    "HessMaxEV",
)
_NORMS = ("GradNorm", "Distance", "UpdateSize")
_EXTRA = (
    "learning_rate",
    "epoch_count",
    "train_loss",
    "valid_loss",
    "test_loss",
    "train_accuracy",
    "valid_accuracy",
    "test_accuracy",
)


def log_frame(source: Any):
    """One row per step with the scalar instruments, ready to plot or inspect.

    Per-layer norms (GradNorm, Distance, UpdateSize) are combined into the norm of
    the whole parameter vector, ``sqrt(sum of squares)``; HessTrace is summed over
    layers. Missing values are NaN.

    Args:
        source: see :func:`load_log`.

    Returns:
        ``pandas.DataFrame`` indexed by ``step`` (int) with the columns present in
        the log among Loss, GradNorm, Distance, UpdateSize, Alpha, InnerTest,
        NormTest, OrthoTest, MeanGSNR, TICDiag, HessMaxEV, HessTrace,
        learning_rate, epoch_count and the per-epoch losses and accuracies.
    """
    import pandas as pd

    rows = []
    for step, entry in load_log(source).items():
        row: dict[str, Any] = {"step": step}
        for key in _SCALARS + _EXTRA:
            if key in entry and entry[key] is not None:
                row[key] = float(entry[key])
        for key in _NORMS:
            if key in entry:
                row[key] = _total_norm(entry[key])
        if "HessTrace" in entry:
            row["HessTrace"] = _sum(entry["HessTrace"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="step", dtype=int))
    return frame.set_index("step").sort_index()


# -- figures without pyplot ------------------------------------------------------------------


@contextmanager
def _style(font_scale: float = 1.0):
    """Seaborn's "dark" style in a temporary rc context; known-harmless warnings silenced."""
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context(), warnings.catch_warnings():
        for message, category in KNOWN_HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        sns.set_style("dark")
        sns.set_context("paper", font_scale=font_scale)
        yield


def figure_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (rendered with Agg; the global backend is not touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class NotebookFigure(Figure):
    """A Figure that shows itself as PNG in IPython/Jupyter, even before pyplot is set up.

    Jupyter's inline backend only learns to display figures once pyplot has made
    one; ``_repr_png_`` makes a returned figure show up in any case.
    """

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def _new_figure(
    width: float, height: float, dpi: float = 100, layout: str | None = None
) -> NotebookFigure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = NotebookFigure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _make_dashboard_plotter(fig: Figure, data, title: str):
    """A CockpitPlotter that draws on ``fig`` without touching global matplotlib state."""
    from nbhelpers.cockpit_compat import import_cockpit

    import_cockpit()
    import matplotlib.pyplot as plt
    from cockpit import CockpitPlotter
    from cockpit.instruments import utils_plotting

    plotter = CockpitPlotter.__new__(CockpitPlotter)  # its __init__ changes global settings
    plotter._secondary_screen = False
    plotter._set_layout_params()
    # The colours of CockpitPlotter._set_plotting_params (cockpit 1.0.2), without plt.ion()
    # and without the global figure size it sets there.
    plotter.primary_color = (*_BLUE, 1.0)
    plotter.secondary_color = (*_ORANGE, 1.0)
    plotter.tertiary_color = (*_GREEN, 1.0)
    plotter.bg_color_one = (*_BLUE, 0.75)
    plotter.bg_color_two = (*_ORANGE, 0.75)
    plotter.bg_color_three = (*_GREEN, 0.75)
    plotter.cmap = plt.cm.viridis
    plotter.cmap2 = plt.cm.cool
    plotter.alpha_cmap = utils_plotting._alpha_cmap(plotter.primary_color)
    plotter.bg_color_instruments = (1.0, 1.0, 1.0)
    plotter.bg_color_instruments2 = "#ababba"
    plotter.EMA_alpha = 0.2
    plotter.save_format = "png"
    plotter.debug = False
    plotter.show_log_iter = False
    plotter.optimizer = title
    plotter.fig = fig
    plotter.tracking_data = data
    return plotter


def _tracking_data(log: dict[int, dict[str, Any]]):
    """The DataFrame CockpitPlotter builds from a log (iteration column, sorted)."""
    import pandas as pd

    data = pd.DataFrame.from_dict({k: v for k, v in log.items()}, orient="index")
    data.index = pd.to_numeric(data.index)
    data = data.replace([np.inf, -np.inf], np.nan)  # not plottable; Cockpit's gauges skip NaN
    return data.sort_index().rename_axis("iteration").reset_index()


def plot_dashboard(
    source: Any,
    *,
    title: str | None = None,
    width: float = 22.0,
    height: float = 12.0,
    dpi: float = 100,
    font_scale: float = 1.0,
) -> Figure:
    """Cockpit's full dashboard (step size, gradients, curvature, learning rate, performance).

    Drawn with Cockpit's own instrument functions on a new figure; instruments
    without data stay empty. Works any number of times in the same kernel and never
    changes the matplotlib backend.

    Args:
        source: see :func:`load_log`.
        title: figure title (default "Cockpit for <optimizer>" when known).
        width, height: figure size in inches (Cockpit's own is 30 x 15).
        dpi: dots per inch.
        font_scale: seaborn font scale (text size relative to the figure is
            ~1.4x Cockpit's own, so labels stay readable at notebook width).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: the log is empty.
    """
    log = load_log(source)
    if not log:
        raise ValueError("the Cockpit log is empty: nothing was tracked yet")
    optimizer = getattr(source, "optimizer_name", None) or getattr(source, "_optimizer_name", "")
    if title is None:
        title = f"Cockpit for {optimizer}" if optimizer else "Cockpit"
    with _style(font_scale):
        fig = _new_figure(width, height, dpi)
        plotter = _make_dashboard_plotter(fig, _tracking_data(log), optimizer)
        grid = fig.add_gridspec(
            ncols=3,
            nrows=2,
            width_ratios=[1, 1, 1],
            height_ratios=[3, 1],
            wspace=0.1,
            hspace=0.1,
            left=0.05,
            right=0.97,
            bottom=0.05,
            top=0.9,
        )
        plotter.grid_spec = grid
        plotter._plot_step(grid[0, 0])
        plotter._plot_gradients(grid[0, 1])
        plotter._plot_curvature(grid[0, 2])
        plotter._plot_hyperparams(grid[1, 0])
        plotter._plot_performance(grid[1, 1:])
        fig.suptitle(title, fontsize="xx-large", fontweight="bold")
    return fig


# -- single instruments ----------------------------------------------------------------------


def _ema(values: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average (weight ``alpha`` on the newest value)."""
    out = np.empty(len(values), dtype=float)
    acc = float(values[0])
    for i, v in enumerate(values):
        acc = alpha * float(v) + (1 - alpha) * acc
        out[i] = acc
    return out


def _series(frame, column: str):
    """The finite values of ``column`` (NaN and infinities dropped), or None."""
    if column not in frame.columns:
        return None
    col = frame[column].replace([np.inf, -np.inf], np.nan).dropna()
    return col if len(col) else None


def _title(ax, text: str) -> None:
    ax.set_title(text, loc="left", fontweight="bold")


def _empty(ax, title: str, why: str) -> None:
    _title(ax, title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color=_GREY, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _log_scale_if_wide(ax, values) -> None:
    positive = np.asarray(values, dtype=float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if len(positive) > 1 and positive.max() / positive.min() > 30:
        ax.set_yscale("log")


def plot_loss(source: Any, ax=None) -> Figure:
    """Mini-batch training loss per step, with a smoothed line (EMA, weight 0.1).

    Args:
        source: see :func:`load_log` (or a frame from :func:`log_frame`).
        ax: axes to draw on (default: a new 7 x 3.2 inch figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    col = _series(frame, "Loss")
    title = "Mini-batch loss"
    if col is None:
        _empty(ax, title, "no Loss tracked")
        return _done(ax)
    ax.plot(col.index, col.values, ".", ms=3, color=_BLUE, alpha=0.35, label="per step")
    ax.plot(col.index, _ema(col.values), color=_BLUE, lw=2, label="smoothed")
    for key, color in (("train_loss", _GREEN), ("valid_loss", _ORANGE)):
        epochs = _series(frame, key)
        if epochs is not None:
            ax.plot(epochs.index, epochs.values, "o-", color=color, label=key.replace("_", " "))
    _title(ax, title)
    ax.set(xlabel="step", ylabel="loss")
    ax.legend(loc="upper right", frameon=False)
    return _done(ax)


def plot_learning_rate(source: Any, ax=None) -> Figure:
    """Learning rate per step (recorded by CockpitHook) -- shows what a schedule really does.

    Args:
        source: see :func:`load_log`.
        ax: axes to draw on (default: a new figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    col = _series(frame, "learning_rate")
    title = "Learning rate"
    if col is None:
        _empty(ax, title, "no learning rate recorded")
        return _done(ax)
    ax.plot(col.index, col.values, color=_GREEN, lw=2)
    first, last = float(col.values[0]), float(col.values[-1])
    ratio = last / first if first else float("nan")
    _title(ax, f"{title}: {first:.3g} -> {last:.3g} (x{ratio:.3g})")
    ax.set(xlabel="step", ylabel="lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _done(ax)


def plot_grad_norm(source: Any, ax=None) -> Figure:
    """L2 norm of the mini-batch gradient the optimizer used, per step.

    Without ``zero_grad`` the gradients accumulate and this norm grows step after step.

    Args:
        source: see :func:`load_log`.
        ax: axes to draw on (default: a new figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    col = _series(frame, "GradNorm")
    title = "Gradient norm"
    if col is None:
        _empty(ax, title, "no GradNorm tracked")
        return _done(ax)
    ax.plot(col.index, col.values, ".", ms=3, color=_ORANGE, alpha=0.35)
    ax.plot(col.index, _ema(col.values), color=_ORANGE, lw=2)
    _log_scale_if_wide(ax, col.values)
    _title(ax, title)
    ax.set(xlabel="step", ylabel="||g||")
    return _done(ax)


def plot_distance(source: Any, ax=None) -> Figure:
    """Distance of the weights from their initial values and size of each update (log scale).

    Args:
        source: see :func:`load_log`.
        ax: axes to draw on (default: a new figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    title = "Distance from init and update size"
    dist, upd = _series(frame, "Distance"), _series(frame, "UpdateSize")
    if dist is None and upd is None:
        _empty(ax, title, "no Distance / UpdateSize tracked")
        return _done(ax)
    if dist is not None:
        ax.plot(dist.index, dist.values, color=_BLUE, lw=2, label="distance from init")
    if upd is not None:
        ax.plot(upd.index, upd.values, ".", ms=3, color=_ORANGE, alpha=0.4)
        ax.plot(upd.index, _ema(upd.values), color=_ORANGE, lw=2, label="update size")
    values = np.concatenate([s.values for s in (dist, upd) if s is not None])
    if np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    _title(ax, title)
    ax.set(xlabel="step", ylabel="L2 norm (weights)")
    ax.legend(loc="best", frameon=False)
    return _done(ax)


def plot_alpha(source: Any, ax=None) -> Figure:
    """Distribution of the normalised step length alpha (Cockpit's alpha gauge).

    alpha comes from a noise-aware quadratic fit of the loss along each step:
    -1 = the step hardly changes the loss (too small), 0 = it lands at the valley
    floor, +1 = it jumps to the same height on the other side (too large). A
    distribution piled up left of 0 means the learning rate is too small.

    Args:
        source: see :func:`load_log`.
        ax: axes to draw on (default: a new figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    col = _series(frame, "Alpha")
    title = "Step size: alpha"
    if col is None:
        _empty(ax, title, "no Alpha tracked\n(needs per-example gradients)")
        return _done(ax)
    values = np.clip(col.values, -3, 3)
    ax.axvspan(-3, -0.5, color=_BLUE, alpha=0.08)
    ax.axvspan(0.5, 3, color=_ORANGE, alpha=0.08)
    ax.hist(values, bins=np.linspace(-3, 3, 31), color=_BLUE, alpha=0.85)
    for x in (-1, 0, 1):
        ax.axvline(
            x,
            color="black" if x == 0 else _GREY,
            lw=1.5 if x == 0 else 1,
            ls="-" if x == 0 else "--",
        )
    ymax = ax.get_ylim()[1]
    for x, text in ((-1.75, "step too small"), (0, "about right"), (1.75, "step too large")):
        ax.text(
            x,
            ymax * 0.97,
            text,
            ha="center",
            va="top",
            color="0.25",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    median = float(np.median(col.values))
    _title(ax, f"{title} (median {median:+.2f}, {len(col)} steps)")
    ax.set(
        xlabel="alpha (clipped to [-3, 3])",
        ylabel="steps",
        xlim=(-3, 3),
    )
    return _done(ax)


def plot_gradient_tests(source: Any, ax=None) -> Figure:
    """Norm, inner-product and orthogonality tests per step (log scale, line at 1).

    Each value is the noise of the mini-batch gradient relative to its norm
    (the smallest theta for which the test passes): far below 1 = the batch
    gradient is reliable; near or above 1 = the batch is too small for this noise.

    Steps where a test is undefined (NaN) are counted in the legend. That happens
    when gradients are never zeroed: the tests then compare the *accumulated*
    gradient with this batch's per-example gradients, and the variance estimate
    of the norm and inner-product tests turns negative.

    Args:
        source: see :func:`load_log`.
        ax: axes to draw on (default: a new figure).

    Returns:
        The figure of ``ax``.
    """
    frame, ax = _frame_and_axes(source, ax)
    title = "Gradient tests"
    series = [(k, _series(frame, k)) for k in ("NormTest", "InnerTest", "OrthoTest")]
    if all(col is None for _, col in series):
        _empty(ax, title, "no gradient tests tracked\n(preset 'standard' or 'thorough')")
        return _done(ax)
    names = [name for name, _ in series if name in frame.columns]
    tracked = frame[names].notna().any(axis=1)
    for (name, col), color in zip(series, (_BLUE, _ORANGE, _GREEN), strict=True):
        if col is not None:
            label = name.replace("Test", " test").lower()
            undefined = int(tracked.sum() - len(col))
            if undefined:
                label += f" (undefined at {undefined} of {int(tracked.sum())} steps)"
            ax.plot(col.index, col.values, "o-", ms=3, color=color, label=label)
    ax.axhline(1.0, color="black", ls="--", lw=1)
    ax.set_yscale("log")
    _title(ax, title)
    ax.set(xlabel="step", ylabel="relative noise")
    ax.legend(loc="best", frameon=False)
    return _done(ax)


def _done(ax) -> Figure:
    """The figure of ``ax``, laid out (tight) if this module created it for one instrument."""
    fig = ax.figure
    if getattr(fig, "_nbhelpers_own", False):
        fig.tight_layout()
    return fig


def _frame_and_axes(source: Any, ax):
    import pandas as pd

    frame = source if isinstance(source, pd.DataFrame) else log_frame(source)
    if ax is None:
        with _style():
            fig = _new_figure(7, 3.2)
            fig._nbhelpers_own = True  # laid out by _done()
            ax = fig.add_subplot()
    return frame, ax


#: Instrument name -> plotting function, for :func:`plot_instruments` and :class:`LiveView`.
INSTRUMENTS: dict[str, Callable[..., Figure]] = {
    "loss": plot_loss,
    "learning_rate": plot_learning_rate,
    "grad_norm": plot_grad_norm,
    "distance": plot_distance,
    "alpha": plot_alpha,
    "gradient_tests": plot_gradient_tests,
}

_COLUMNS_OF = {
    "loss": ("Loss",),
    "learning_rate": ("learning_rate",),
    "grad_norm": ("GradNorm",),
    "distance": ("Distance", "UpdateSize"),
    "alpha": ("Alpha",),
    "gradient_tests": ("NormTest", "InnerTest", "OrthoTest"),
}


def plot_instruments(
    source: Any,
    which: Iterable[str] | None = None,
    *,
    ncols: int = 2,
    width: float = 11.0,
    row_height: float = 3.3,
    title: str | None = None,
) -> Figure:
    """Several instruments, one per axes, in a grid sized for a notebook.

    Args:
        source: see :func:`load_log`.
        which: names from :data:`INSTRUMENTS` (default: those with data in the log,
            in the order loss, learning_rate, grad_norm, distance, alpha, gradient_tests).
        ncols: columns of the grid.
        width: figure width in inches; ``row_height`` inches per row.
        title: optional figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: unknown instrument name, or ``ncols`` < 1.
    """
    frame = log_frame(source)
    if which is None:
        names = [n for n, cols in _COLUMNS_OF.items() if any(c in frame.columns for c in cols)]
        names = names or ["loss"]
    else:
        names = list(which)
        bad = [n for n in names if n not in INSTRUMENTS]
        if bad:
            raise ValueError(f"unknown instrument(s) {bad}; valid: {', '.join(INSTRUMENTS)}")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    with _style():
        fig = _new_figure(width, row_height * nrows + (0.4 if title else 0), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for name, ax in zip(names, axes, strict=False):
            INSTRUMENTS[name](frame, ax=ax)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontweight="bold")
    return fig


# -- live view -------------------------------------------------------------------------------


class LiveView:
    """Instruments that refresh in place during training (one output area in the notebook).

    By default the refresh rate adapts so that drawing costs at most
    ``max_overhead`` (10 %) of the training time: after a refresh that took
    ``r`` seconds, the next one waits at least ``r / max_overhead`` seconds.

    Args:
        which: instrument names (see :data:`INSTRUMENTS`; default: those with data).
        every: refresh every this many steps instead of the adaptive rate.
        max_overhead: share of wall-clock time the view may use (0 < x < 1).
        display: function receiving each new figure, for use outside a notebook;
            default: an IPython display handle updated in place (PNG).
        ncols, width: passed to :func:`plot_instruments`.

    Raises:
        ValueError: bad ``every`` or ``max_overhead``.
    """

    def __init__(
        self,
        which: Iterable[str] | None = None,
        *,
        every: int | None = None,
        max_overhead: float = 0.1,
        display: Callable[[Figure], Any] | None = None,
        ncols: int = 3,
        width: float = 13.0,
    ):
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"every must be a positive int or None, got {every!r}")
        if not 0 < max_overhead < 1:
            raise ValueError(f"max_overhead must be in (0, 1), got {max_overhead!r}")
        self.which = None if which is None else list(which)
        self.every = every
        self.max_overhead = max_overhead
        self._display = display
        self.ncols, self.width = ncols, width
        self._handle = None
        self._next_time = 0.0
        self.refreshes = 0
        self.seconds = 0.0

    def due(self, step: int) -> bool:
        """Whether :meth:`update` at ``step`` would redraw."""
        if self.every is not None:
            return step % self.every == 0
        return time.perf_counter() >= self._next_time

    def update(self, source: Any, step: int | None = None, *, force: bool = False) -> bool:
        """Redraw from ``source`` (see :func:`load_log`) if due (or ``force``).

        Returns:
            True if the view was redrawn.
        """
        if not force and step is not None and not self.due(step):
            return False
        t0 = time.perf_counter()
        log = load_log(source)
        if not log:
            return False
        title = None if step is None else f"step {step}"
        fig = plot_instruments(log, self.which, ncols=self.ncols, width=self.width, title=title)
        self._show(fig)
        spent = time.perf_counter() - t0
        self.seconds += spent
        self.refreshes += 1
        self._next_time = time.perf_counter() + spent / self.max_overhead
        return True

    def _show(self, fig: Figure) -> None:
        if self._display is not None:
            self._display(fig)
            return
        from IPython.display import Image, display

        image = Image(figure_to_png(fig), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
