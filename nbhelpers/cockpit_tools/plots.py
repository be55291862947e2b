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
a log dict ``{step: {quantity: value}}``, the path of a JSON log written by
``Cockpit.write`` / ``write_log`` (".json" optional), or a frame from ``log_frame``.

* :func:`plot_dashboard`: Cockpit's full dashboard (its own instrument code).
* single instruments ``plot_loss``, ``plot_grad_norm``, ``plot_distance``, ``plot_alpha``,
  ``plot_gradient_tests``, ``plot_learning_rate``: each ``plot_x(source, ax=None)`` draws on
  ``ax`` (default: a new 7 x 3.2 inch figure) and returns its figure. Which quantities feed
  which instrument is said by the registry (``Quantity.plot``); :data:`INSTRUMENTS` and
  :func:`plot_instruments` read it there.
* :class:`LiveView`: refreshes a few instruments during training.
"""

from __future__ import annotations

import functools
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from nbhelpers.cockpit_tools.compat import known_warnings_silenced
from nbhelpers.cockpit_tools.logs import load_log, log_frame
from nbhelpers.cockpit_tools.quantities import OUR_PRESETS, QUANTITIES
from nbhelpers.validate import number, one_of, positive_int

_BLUE, _ORANGE, _GREEN, _GREY = (0.29, 0.45, 0.68), (0.95, 0.50, 0.20), (0.30, 0.60, 0.40), "0.45"
_GRID = {"wspace": 0.1, "hspace": 0.1, "left": 0.05, "right": 0.97, "bottom": 0.05, "top": 0.9}


# -- figures without pyplot ------------------------------------------------------------------


@contextmanager
def _style(font_scale: float = 1.0):
    """Seaborn's "dark" style in a temporary rc context; known-harmless warnings silenced."""
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context(), known_warnings_silenced():
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


def _new_figure(width: float, height: float, dpi: float = 100, layout=None) -> NotebookFigure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = NotebookFigure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


# -- the dashboard ---------------------------------------------------------------------------


def _dashboard_plotter(fig: Figure, log: dict, optimizer: str):
    """A CockpitPlotter drawing on ``fig``. Its constructor changes global style settings
    (undone by the caller's rc context) and switches pyplot's interactive mode on (undone here)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from cockpit import CockpitPlotter

    interactive = plt.isinteractive()
    plotter = CockpitPlotter()
    if not interactive:
        plt.ioff()
    data = pd.DataFrame.from_dict(log, orient="index").replace([np.inf, -np.inf], np.nan)
    plotter.tracking_data = data.sort_index().rename_axis("iteration").reset_index()
    plotter.fig, plotter.optimizer = fig, optimizer
    plotter.debug = plotter.show_log_iter = False
    return plotter


#: Cockpit's dashboard: group drawer -> (its grid attribute, the quantities of the gauges in
#: rows 1, 2, 3 of that grid), from Cockpit's ``CockpitPlotter`` and its instruments' ``requires``.
_GAUGES = {
    "_plot_step": ("gs_step", (("Alpha",), ("Distance", "UpdateSize"), ("GradNorm",))),
    "_plot_gradients": (
        "gs_gradients",
        (("NormTest", "InnerTest", "OrthoTest"), ("GradHist1d",), ("GradHist2d",)),
    ),
    "_plot_curvature": ("gs_curvature", (("HessMaxEV",), ("HessTrace",), ("TICDiag",))),
}


def _why_empty(names: tuple[str, ...], log: dict) -> str:
    """Why a gauge drawing ``names`` has nothing to show."""
    lines = []
    for name in names:
        steps = sum(1 for entry in log.values() if entry.get(name) is not None)
        entry = QUANTITIES.get(name)
        where = f"preset '{entry.preset}' tracks it" if entry and entry.preset else "not in ours"
        lines.append(f"{name}: " + (f"only {steps} value" if steps else f"not tracked ({where})"))
    return "\n".join(lines)


def _explain_empty_gauges(fig: Figure, plotter, drawer: str, log: dict) -> None:
    """Write into every gauge of a dashboard group that Cockpit left empty why it is empty."""
    grid_name, rows = _GAUGES[drawer]
    grid = getattr(plotter, grid_name)
    for row, names in enumerate(rows, start=1):
        cell = grid[row, 1]
        if any(ax.get_subplotspec() == cell for ax in fig.axes if ax.get_subplotspec()):
            continue
        ax = fig.add_subplot(cell)
        ax.set_facecolor("white")
        ax.set(xticks=[], yticks=[])
        ax.text(0.5, 0.5, _why_empty(names, log), ha="center", va="center", color=_GREY,
                transform=ax.transAxes, fontsize="small")  # fmt: skip


def _note_alpha_mean(fig: Figure, plotter, log: dict) -> None:
    """Say in the title of Cockpit's alpha gauge what its mu is, next to the median the text
    reads (in the title, where it covers no bars and no legend)."""
    values = [float(e["Alpha"]) for e in log.values() if e.get("Alpha") is not None]
    values = [v for v in values if math.isfinite(v)]
    cell = plotter.gs_step[1, 1]
    axes = [ax for ax in fig.axes if ax.get_subplotspec() == cell]
    if len(values) < 2 or not axes:
        return
    ax = axes[0]
    ax.set_title(
        f"{ax.get_title()}\nmedian {np.median(values):+.2f}; \u03bc = mean of a normal fit, "
        "pulled by far-off steps",
        fontsize="small",
    )


def _tracked_groups(log: dict) -> list[str]:
    """The dashboard groups (drawers of :data:`_GAUGES`) with at least one quantity in ``log``;
    the step-size group always."""
    present = {name for entry in log.values() for name, v in entry.items() if v is not None}
    return [
        drawer
        for drawer, (_, rows) in _GAUGES.items()
        if drawer == "_plot_step" or present & {n for names in rows for n in names}
    ]


def _untracked_note(groups: list[str]) -> str:
    """One line naming the dashboard groups left out and the cheapest preset that fills each."""
    names = {"_plot_gradients": "gradient noise", "_plot_curvature": "curvature"}
    ranks = list(OUR_PRESETS)
    parts = []
    for drawer in (d for d in _GAUGES if d not in groups):
        quantities = [QUANTITIES[n] for row in _GAUGES[drawer][1] for n in row if n in QUANTITIES]
        presets = [q.preset for q in quantities if q.preset]
        cheapest = f" (preset '{min(presets, key=ranks.index)}' tracks it)" if presets else ""
        parts.append(names[drawer] + cheapest)
    return "Not tracked in this log, so not drawn: " + ", ".join(parts) if parts else ""


def plot_dashboard(
    source: Any,
    *,
    title: str | None = None,
    width: float = 22.0,
    height: float = 12.0,
    dpi: float = 100,
    font_scale: float = 1.0,
    only_tracked: bool = True,
) -> Figure:
    """Cockpit's dashboard (step size, gradients, curvature, learning rate, performance).

    Drawn with Cockpit's own instrument functions on a new figure. With ``only_tracked``
    the gradient-noise and curvature groups are drawn only when the log has one of their
    quantities (a line under the title names what was left out and which preset tracks
    it; the step-size group then spans the width, on a narrower figure); an instrument of
    a drawn group without data says in its place why. The alpha gauge's label says what
    its mu is (the mean of a normal fit) next to the median. Infinite values are left out. Works any number of times in the same kernel and never changes
    the matplotlib backend.

    Args:
        source: see :func:`~nbhelpers.cockpit_tools.logs.load_log`.
        title: figure title (default "Cockpit for <optimizer>" when known).
        width, height: figure size in inches (Cockpit's own is 30 x 15).
        dpi: dots per inch.
        font_scale: seaborn font scale (text size relative to the figure is
            ~1.4x Cockpit's own, so labels stay readable at notebook width).
        only_tracked: leave out the groups the log has no quantity of (False: Cockpit's
            full layout, every empty gauge saying why).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: the log is empty.
    """
    import matplotlib as mpl

    log = load_log(source)
    if not log:
        raise ValueError("the Cockpit log is empty: nothing was tracked yet")
    optimizer = getattr(source, "optimizer_name", None) or getattr(source, "_optimizer_name", "")
    if title is None:
        title = f"Cockpit for {optimizer}" if optimizer else "Cockpit"
    groups = _tracked_groups(log) if only_tracked else list(_GAUGES)
    columns = max(len(groups), 2)
    with mpl.rc_context():
        fig = _new_figure(width * (1 if len(groups) > 1 else 0.7), height, dpi)
        plotter = _dashboard_plotter(fig, log, optimizer)
        with _style(font_scale):
            plotter.grid_spec = grid = fig.add_gridspec(2, columns, height_ratios=[3, 1], **_GRID)
            for column, drawer in enumerate(groups):
                getattr(plotter, drawer)(grid[0, :] if len(groups) == 1 else grid[0, column])
                _explain_empty_gauges(fig, plotter, drawer, log)
            _note_alpha_mean(fig, plotter, log)
            plotter._plot_hyperparams(grid[1, 0])
            plotter._plot_performance(grid[1, 1:])
            fig.suptitle(title, fontsize="xx-large", fontweight="bold")
            note = _untracked_note(groups)
            if note:
                fig.text(0.5, 0.935, note, ha="center", va="top", color=_GREY, fontsize="large")
    return fig


# -- single instruments ----------------------------------------------------------------------


def _series(frame, column: str, positive: bool = False):
    """The finite (and, with ``positive``, positive) values of ``column``, or None."""
    if column not in frame.columns:
        return None
    col = frame[column].replace([np.inf, -np.inf], np.nan).dropna()
    col = col[col > 0] if positive else col
    return col if len(col) else None


def _title(ax, text: str) -> None:
    ax.set_title(text, loc="left", fontweight="bold")


def _say(ax, text: str) -> None:
    """Write ``text`` in the middle of empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=_GREY)
    ax.set(xticks=[], yticks=[])


def _instrument(title: str, missing: str):
    """Turn ``draw(frame, ax)`` into a public single-instrument plot ``(source, ax=None)``.

    ``draw`` returns False when the frame has nothing to draw; the axes then say ``missing``.
    """

    def decorate(draw: Callable[[Any, Any], Any]) -> Callable[..., Figure]:
        @functools.wraps(draw)
        def plot(source: Any, ax=None) -> Figure:
            frame, own = log_frame(source), ax is None
            if own:
                with _style():
                    ax = _new_figure(7, 3.2).add_subplot()
            _title(ax, title)
            if draw(frame, ax) is False:
                _say(ax, missing)
            if own:
                ax.figure.tight_layout()
            return ax.figure

        return plot

    return decorate


def _dots_and_line(ax, col, color, label=None) -> None:
    """The values as dots and their exponential moving average (weight 0.1 on the newest)."""
    ax.plot(col.index, col.values, ".", ms=3, color=color, alpha=0.35)
    ax.plot(
        col.index, col.ewm(alpha=0.1, adjust=False).mean().values, color=color, lw=2, label=label
    )


@_instrument("Mini-batch loss", "no Loss tracked")
def plot_loss(frame, ax):
    """Mini-batch training loss per step (dots), smoothed (EMA, weight 0.1), and per-epoch losses."""
    col = _series(frame, "Loss")
    if col is None:
        return False
    _dots_and_line(ax, col, _BLUE, "smoothed")
    for key, color in (("train_loss", _GREEN), ("valid_loss", _ORANGE)):
        epochs = _series(frame, key)
        if epochs is not None:
            ax.plot(epochs.index, epochs.values, "o-", color=color, label=key.replace("_", " "))
    ax.set(xlabel="step", ylabel="loss")
    ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none")


@_instrument("Learning rate", "no learning rate recorded")
def plot_learning_rate(frame, ax):
    """Learning rate per step (recorded by CockpitHook) -- shows what a schedule really does."""
    col = _series(frame, "learning_rate")
    if col is None:
        return False
    ax.plot(col.index, col.values, color=_GREEN, lw=2)
    first, last = float(col.values[0]), float(col.values[-1])
    ratio = last / first if first else float("nan")
    _title(ax, f"Learning rate: {first:.3g} -> {last:.3g} (x{ratio:.3g})")
    ax.set(xlabel="step", ylabel="lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


@_instrument("Gradient norm", "no GradNorm tracked")
def plot_grad_norm(frame, ax):
    """L2 norm of the mini-batch gradient the optimizer used, per step (log scale when wide).

    Without ``zero_grad`` the gradients accumulate and this norm grows step after step.
    """
    col = _series(frame, "GradNorm")
    if col is None:
        return False
    _dots_and_line(ax, col, _ORANGE)
    positive = col.values[col.values > 0]
    if len(positive) > 1 and positive.max() / positive.min() > 30:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="||g||")


@_instrument("Distance from init and update size", "no positive Distance / UpdateSize tracked")
def plot_distance(frame, ax):
    """Distance of the weights from their initial values and size of each update (log scale).

    Values that a log scale cannot show are left out (the distance at step 0 is exactly 0).
    """
    dist, upd = _series(frame, "Distance", True), _series(frame, "UpdateSize", True)
    if dist is None and upd is None:
        return False
    if dist is not None:
        ax.plot(dist.index, dist.values, color=_BLUE, lw=2, label="distance from init")
    if upd is not None:
        _dots_and_line(ax, upd, _ORANGE, "update size")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="L2 norm (weights)")
    ax.legend(loc="best", frameon=False)


@_instrument("Step size: alpha", "no Alpha tracked\n(needs per-example gradients)")
def plot_alpha(frame, ax):
    """Distribution of the normalised step length alpha (Cockpit's alpha gauge).

    alpha comes from a noise-aware quadratic fit of the loss along each step:
    -1 = the step hardly changes the loss (too small), 0 = it lands at the valley
    floor, +1 = it jumps to the same height on the other side (too large). A
    distribution piled up left of 0 means the learning rate is too small. The title gives
    the median; the mean (Cockpit's mu) is noted in the axis label, as a few far-off values (alpha can be
    -5 or +8) move it and not the median.
    """
    from matplotlib.ticker import MaxNLocator

    col = _series(frame, "Alpha")
    if col is None:
        return False
    ax.axvspan(-3, -0.5, color=_BLUE, alpha=0.08)
    ax.axvspan(0.5, 3, color=_ORANGE, alpha=0.08)
    ax.hist(np.clip(col.values, -3, 3), bins=np.linspace(-3, 3, 31), color=_BLUE, alpha=0.85)
    for x in (-1, 1):
        ax.axvline(x, color=_GREY, lw=1, ls="--")
    ax.axvline(0, color="black", lw=1.5)
    box = {"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5}
    for x, text in ((-1.75, "step too small"), (0, "about right"), (1.75, "step too large")):
        ax.text(x, ax.get_ylim()[1] * 0.97, text, ha="center", va="top", color="0.25", bbox=box)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    median, mean = np.median(col.values), np.mean(col.values)
    _title(ax, f"Step size: alpha (median {median:+.2f}, {len(col)} steps)")
    ax.set(ylabel="steps", xlim=(-3, 3))
    ax.set_xlabel(
        f"alpha (clipped to [-3, 3])\nmean {mean:+.2f} (Cockpit's \u03bc): far-off steps move "
        "it, not the median",
        fontsize="small",
    )


@_instrument("Gradient tests", "no gradient tests tracked\n(preset 'standard' or 'thorough')")
def plot_gradient_tests(frame, ax):
    """Norm, inner-product and orthogonality tests per step (log scale, line at 1).

    Each value is the noise of the mini-batch gradient relative to its norm
    (the smallest theta for which the test passes): far below 1 = the batch
    gradient is reliable; near or above 1 = the batch is too small for this noise.

    Steps where a test is undefined (NaN) are counted in the legend. That happens
    when gradients are never zeroed: the tests then compare the *accumulated*
    gradient with this batch's per-example gradients, and the variance estimate
    of the norm and inner-product tests turns negative.
    """
    names = [n for n in ("NormTest", "InnerTest", "OrthoTest") if _series(frame, n) is not None]
    if not names:
        return False
    tracked = int(frame[names].notna().any(axis=1).sum())
    for name, color in zip(names, (_BLUE, _ORANGE, _GREEN), strict=False):
        col = _series(frame, name)
        label = name.replace("Test", " test").lower()
        if tracked > len(col):
            label += f" (undefined at {tracked - len(col)} of {tracked} steps)"
        ax.plot(col.index, col.values, "o-", ms=3, color=color, label=label)
    ax.axhline(1.0, color="black", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="relative noise")
    ax.legend(loc="best", frameon=False)


# -- several instruments ---------------------------------------------------------------------


def _instruments() -> dict[str, tuple[Callable[..., Figure], list[str]]]:
    """Instrument name -> (plot, the log columns it draws), from the registry's ``plot``
    fields; plus the learning rate, which the hook records."""
    table: dict[str, tuple[Callable[..., Figure], list[str]]] = {}
    for q in QUANTITIES.values():
        if q.plot is not None:
            table.setdefault(q.plot.__name__.removeprefix("plot_"), (q.plot, []))[1].append(q.name)
    table["learning_rate"] = (plot_learning_rate, ["learning_rate"])
    return table


class _Instruments(Mapping):
    """Instrument name -> single-instrument plot, read from the registry at every access."""

    def __getitem__(self, name: str) -> Callable[..., Figure]:
        return _instruments()[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(_instruments())

    def __len__(self) -> int:
        return len(_instruments())


#: Instrument name -> plot function, for :func:`plot_instruments` and :class:`LiveView`.
INSTRUMENTS: Mapping[str, Callable[..., Figure]] = _Instruments()


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
        source: see :func:`~nbhelpers.cockpit_tools.logs.load_log`, or a ``log_frame``.
        which: names from :data:`INSTRUMENTS` (default: those with data in the log, in
            registry order, the learning rate last).
        ncols: columns of the grid (a positive int).
        width: figure width in inches; ``row_height`` inches per row.
        title: optional figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: unknown instrument name, or ``ncols`` < 1.
    """
    frame, table = log_frame(source), _instruments()
    if which is None:
        names = [n for n, (_, cols) in table.items() if set(cols) & set(frame.columns)] or ["loss"]
    else:
        names = [one_of("instrument", name, table) for name in which]
    ncols = min(positive_int("ncols", ncols), len(names))
    nrows = math.ceil(len(names) / ncols)
    with _style():
        fig = _new_figure(width, row_height * nrows + (0.4 if title else 0), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for name, ax in zip(names, axes, strict=False):
            table[name][0](frame, ax=ax)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontweight="bold")
    return fig


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
        self.which = None if which is None else list(which)
        self.every = positive_int("every", every, allow_none=True)
        self.max_overhead = number(
            "max_overhead", max_overhead, 0, 1, low_open=True, high_open=True
        )
        self._display, self.ncols, self.width = display, ncols, width
        self._handle, self._next_time, self.refreshes, self.seconds = None, 0.0, 0, 0.0

    def due(self, step: int) -> bool:
        """Whether :meth:`update` at ``step`` would redraw."""
        if self.every is not None:
            return step % self.every == 0
        return time.perf_counter() >= self._next_time

    def update(self, source: Any, step: int | None = None, *, force: bool = False) -> bool:
        """Redraw from ``source`` (see :func:`~nbhelpers.cockpit_tools.logs.load_log`) if due
        (or ``force``).

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
