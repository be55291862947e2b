"""Plots and text summaries of training runs, and the axes style every figure shares.

* :func:`plot_learning_curves`: loss and accuracy per split against the epoch, one run.
* :func:`plot_runs`: several runs on the same axes, legend by run name.
* :func:`plot_step_losses`: the mini-batch training loss of every step.
* :func:`plot_journey`: test accuracy per stage of the series as bars, with chance level,
  a reference line and which test split each number comes from.
* :func:`summary_text`: best and final accuracy per split and the wall time, as text.
* :func:`history_rows`: the per-epoch rows of a run, whatever form it comes in.
* :func:`add_reference_lines`: chance level and label-entropy loss on such a figure.
* :func:`finish_axes`: labels, grid and legend; whole-number epoch ticks; an accuracy
  axis kept within [0, 1] on request (used by :mod:`nbhelpers.stats` too).

Every function accepts a :class:`nbhelpers.records.RunRecord`, a
:class:`nbhelpers.train.History` or a record dict, and returns the matplotlib
Figure without calling ``plt.show()``; a notebook displays the returned figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nbhelpers.data import SPLITS
from nbhelpers.notebook import TEST_SPLITS

__all__ = [
    "add_reference_lines",
    "finish_axes",
    "history_rows",
    "plot_journey",
    "plot_learning_curves",
    "plot_runs",
    "plot_step_losses",
    "summary_text",
]

_SPLIT_STYLE = {"train": "-", "valid": "--", "test": ":"}


def _get(run: Any, key: str, default: Any = None) -> Any:
    """``run[key]`` of a record dict, ``run.key`` of a record object."""
    return run.get(key, default) if isinstance(run, Mapping) else getattr(run, key, default)


def history_rows(run: Any) -> list[dict[str, Any]]:
    """The per-epoch dicts of a run: a ``RunRecord`` (``.history``), a ``History``
    (``.epochs``), a record dict (``["history"]``) or the list of per-epoch dicts itself.

    Raises:
        TypeError: ``run`` holds no per-epoch history (the message names its type).
    """
    rows = next((v for v in (_get(run, "history"), _get(run, "epochs")) if v is not None), run)
    if isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        if all(isinstance(row, Mapping) for row in rows):
            return list(rows)  # may be empty: a run that finished no epoch
    raise TypeError(
        "expected a RunRecord, a History, a record dict or a list of per-epoch dicts, "
        f"got {type(run).__name__}"
    )


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [
        (row["epoch"], float(row[key]))
        for row in rows
        if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
    ]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _splits_present(rows: list[dict[str, Any]], splits: Sequence[str] | None = None) -> list[str]:
    return [s for s in (splits or SPLITS) if any(f"{s}_accuracy" in row for row in rows)]


def finish_axes(ax, ylabel: str, *, xlabel: str = "epoch", unit_interval: bool = False) -> None:
    """Label, grid and legend ``ax`` the way every figure of the package does.

    An ``xlabel`` of "epoch" gets whole-number ticks (epochs are counted, not
    measured); ``unit_interval`` keeps the y-axis within [0, 1] (an accuracy whose
    confidence band reaches beyond). A legend is added when there are labelled
    artists and ``ax`` has none yet.
    """
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if unit_interval:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 1.0))
    ax.grid(alpha=0.3)
    if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_learning_curves(run: Any, splits: Sequence[str] | None = None, *, title=None):
    """Loss (left) and accuracy (right) per split against the epoch, for one run.

    Also draws the running mini-batch training loss/accuracy (measured while training,
    in train mode) in grey, so a run without evaluation still shows something.

    Args:
        run: a RunRecord, History or record dict.
        splits: which evaluated splits to draw (default all of train/valid/test present).
        title: figure title (default the run's name).

    Returns:
        The matplotlib Figure (two Axes).

    Raises:
        TypeError: ``run`` has no per-epoch metrics.
    """
    import matplotlib.pyplot as plt

    rows = history_rows(run)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split in _splits_present(rows, splits):
        style = _SPLIT_STYLE.get(split, "-")
        ax_loss.plot(*_series(rows, f"{split}_loss"), style, marker="o", label=split)
        ax_acc.plot(*_series(rows, f"{split}_accuracy"), style, marker="o", label=split)
    for key, ax in (("running_loss", ax_loss), ("running_accuracy", ax_acc)):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, color="0.6", marker=".", label="train (running)")
    finish_axes(ax_loss, "loss (cross-entropy)")
    finish_axes(ax_acc, "accuracy")
    fig.suptitle(title if title is not None else _get(run, "name", "run"))
    fig.tight_layout()
    return fig


def plot_runs(runs: Sequence[Any], split: str = "test", *, names: Sequence[str] | None = None):
    """Several runs side by side: loss and accuracy of one split against the epoch.

    Args:
        runs: RunRecords, Histories or record dicts.
        split: "train", "valid" or "test" (or "running" for the running training metrics).
        names: legend labels (default each run's name).

    Returns:
        The matplotlib Figure (two Axes, one line per run, legend by run name).

    Raises:
        ValueError: no runs, or ``names`` of the wrong length.
        TypeError: an entry has no per-epoch metrics.
    """
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("plot_runs needs at least one run")
    names = _names(runs, names)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, label in zip(runs, names, strict=True):
        rows = history_rows(run)
        (line,) = ax_loss.plot(*_series(rows, f"{split}_loss"), marker="o", label=label)
        ax_acc.plot(
            *_series(rows, f"{split}_accuracy"), marker="o", color=line.get_color(), label=label
        )
    finish_axes(ax_loss, f"{split} loss")
    finish_axes(ax_acc, f"{split} accuracy")
    fig.tight_layout()
    return fig


def _names(runs: Sequence[Any], names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) != len(runs):
        raise ValueError(f"got {len(names)} names for {len(runs)} runs")
    return (
        list(names)
        if names is not None
        else [_get(r, "name", f"run {i + 1}") for i, r in enumerate(runs)]
    )


def plot_step_losses(runs: Any, *, names: Sequence[str] | None = None, log_y: bool = False):
    """The mini-batch training loss of every optimizer step, for one run or several.

    Args:
        runs: a RunRecord / History, or a sequence of them.
        names: legend labels (default the runs' names).
        log_y: logarithmic loss axis.

    Returns:
        The matplotlib Figure.

    Raises:
        TypeError: an entry has no ``step_losses``.
    """
    import matplotlib.pyplot as plt

    runs = runs if isinstance(runs, (list, tuple)) else [runs]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for run, label in zip(runs, _names(runs, names), strict=True):
        losses = _get(run, "step_losses")
        if losses is None:
            raise TypeError(f"{type(run).__name__} has no step_losses")
        ax.plot(range(len(losses)), losses, lw=1, label=label)
    if log_y:
        ax.set_yscale("log")
    finish_axes(ax, "mini-batch training loss", xlabel="step")
    fig.tight_layout()
    return fig


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def summary_text(run: Any) -> str:
    """A compact text summary: best and final accuracy per split, and the wall time.

    Example::

        reference-fix (complete, 4 epochs, 96.3 s)
          split   best    final
          train   97.1%   97.1%
          valid   88.0%   87.5%
          test    87.9%   87.9%

    Raises:
        TypeError: ``run`` has no per-epoch metrics.
    """
    rows = history_rows(run)
    timings = _get(run, "timings") or {}
    wall = timings.get("wall_s", timings.get("total_s"))
    head = f"{_get(run, 'name', 'run')} ({_get(run, 'status') or 'complete'}, {len(rows)} epochs"
    lines = [head + (f", {wall:.1f} s)" if isinstance(wall, (int, float)) else ")")]
    lines.append(f"  {'split':<7} {'best':>6}  {'final':>6}")
    for split in _splits_present(rows):
        accs = _series(rows, f"{split}_accuracy")[1]
        best = max((a for a in accs if math.isfinite(a)), default=math.nan)
        lines.append(f"  {split:<7} {_percent(best):>6}  {_percent(accs[-1]):>6}")
    if not _splits_present(rows):
        accs = _series(rows, "running_accuracy")[1]
        lines.append(
            f"  (no evaluation; running train accuracy {_percent(accs[-1] if accs else math.nan)})"
        )
    return "\n".join(lines)


#: How a stage's test split is drawn in :func:`plot_journey`: (legend text, bar hatch).
SPLIT_MARKS = {
    split: (label, "//" if split == "colleague" else "") for split, label in TEST_SPLITS.items()
}
SPLIT_MARKS[None] = ("test split not recorded", "..")


def plot_journey(
    rows: Sequence[Mapping[str, Any]],
    *,
    chance: float | None = None,
    reference: tuple[str, float] | None = None,
    title: str = "The journey: test accuracy per stage",
):
    """Horizontal bars of test accuracy, one per stage, top to bottom in order.

    Args:
        rows: one mapping per stage with ``label`` (str), ``accuracy`` (float in [0, 1]),
            optional ``ci`` (half-width of a confidence interval, same unit), ``origin``
            (str: where the number comes from; one colour per origin) and ``test_split``
            (``"colleague"``, ``"test"`` or None; see :data:`SPLIT_MARKS`, drawn as hatching).
        chance: accuracy of always guessing the most frequent class (a dotted line).
        reference: ``(label, accuracy)`` of a reference to beat (a dashed red line).
        title: axes title.

    Returns:
        The matplotlib Figure; the legend sits under the bars.

    Raises:
        ValueError: no rows, or a row without ``label``/``accuracy``, or an unknown
            ``test_split``.
    """
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("plot_journey needs at least one row")
    for row in rows:
        if "label" not in row or "accuracy" not in row or row.get("test_split") not in SPLIT_MARKS:
            raise ValueError(
                f"bad journey row {dict(row)!r}: needs label, accuracy, test_split in {list(SPLIT_MARKS)}"
            )
    origins = list(dict.fromkeys(str(row.get("origin", "")) for row in rows))
    colors = dict(zip(origins, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.6))
    for i, row in enumerate(rows):
        acc, half = float(row["accuracy"]), row.get("ci")
        hatch = SPLIT_MARKS[row.get("test_split")][1]
        ax.barh(
            i,
            acc,
            color=colors[str(row.get("origin", ""))],
            alpha=0.75,
            hatch=hatch,
            edgecolor="white",
        )
        if half is not None:
            ax.errorbar(acc, i, xerr=half, color="black", capsize=4)
        ax.text(acc + (half or 0.0) + 0.01, i, f"{acc:.1%}", va="center", fontsize=8)
    handles = _journey_handles(ax, rows, colors, chance, reference)
    ax.set_yticks(range(len(rows)), [str(row["label"]) for row in rows])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.08), xlabel="test accuracy", title=title)
    ax.grid(axis="x", alpha=0.3)
    legend_h = 0.25 * -(-len(handles) // 2) + 0.2  # inches: two columns under the axes
    fig.set_figheight(fig.get_figheight() + legend_h)
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    return fig


def _journey_handles(ax, rows, colors: dict, chance, reference) -> list:
    """Legend entries of :func:`plot_journey`: origins, test splits, chance and reference lines."""
    from matplotlib.patches import Patch

    handles = [Patch(color=c, alpha=0.75, label=o) for o, c in colors.items() if o]
    splits = dict.fromkeys(row.get("test_split") for row in rows)
    handles += [
        Patch(facecolor="0.85", hatch=SPLIT_MARKS[k][1], edgecolor="0.4", label=SPLIT_MARKS[k][0])
        for k in splits
    ]
    if chance is not None:
        label = f"chance (most frequent class, {chance:.1%})"
        handles.append(ax.axvline(chance, color="black", ls=":", lw=1.2, label=label))
    if reference is not None:
        name, value = reference
        label = f"{name} ({value:.1%})"
        handles.append(ax.axvline(value, color="tab:red", ls="--", lw=1.2, label=label))
    return handles


def add_reference_lines(fig, *, chance: float | None = None, entropy: float | None = None):
    """Mark what a model that ignores the image scores on a figure of :func:`plot_runs` or
    :func:`plot_learning_curves` (loss axes first, accuracy axes second).

    Args:
        fig: a Figure with two Axes, loss then accuracy.
        chance: chance accuracy (e.g. :func:`nbhelpers.stats.majority_share`), drawn dotted
            on the accuracy axes, labelled "chance".
        entropy: loss of predicting the class frequencies in nats (e.g.
            :func:`nbhelpers.stats.label_entropy`), drawn dashed on the loss axes.

    Returns:
        ``fig``, with the lines labelled in each axes' legend.

    Raises:
        ValueError: ``fig`` has fewer than two Axes.
    """
    if len(fig.axes) < 2:
        raise ValueError(f"expected a figure with loss and accuracy axes, got {len(fig.axes)} axes")
    ax_loss, ax_acc = fig.axes[:2]
    if entropy is not None:
        ax_loss.axhline(entropy, color="0.4", ls="--", label=f"label entropy ({entropy:.3f})")
        ax_loss.legend(fontsize=8)
    if chance is not None:
        ax_acc.axhline(chance, color="0.4", ls=":", label=f"chance ({chance:.1%})")
        ax_acc.legend(fontsize=8)
    return fig
