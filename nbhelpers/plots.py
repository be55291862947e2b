"""Plots and text summaries of training runs.

* :func:`plot_learning_curves`: loss and accuracy per split against the epoch, one run.
* :func:`plot_runs`: several runs on the same axes, legend by run name.
* :func:`plot_step_losses`: the mini-batch training loss of every step.
* :func:`summary_text`: best and final accuracy per split and the wall time, as text.

Every function accepts a :class:`nbhelpers.records.RunRecord`, a
:class:`nbhelpers.train.History` or a record dict, and returns the matplotlib
Figure without calling ``plt.show()``; a notebook displays the returned figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_learning_curves", "plot_runs", "plot_step_losses", "summary_text"]

SPLITS = ("train", "valid", "test")
_SPLIT_STYLE = {"train": "-", "valid": "--", "test": ":"}


def _rows(run: Any) -> list[dict[str, Any]]:
    """The per-epoch dicts of a RunRecord, History or record dict."""
    if isinstance(run, dict):
        rows = run.get("history", run.get("epochs"))
    else:
        rows = getattr(run, "history", None)
        if not isinstance(rows, list):
            rows = getattr(run, "epochs", None)
    if not isinstance(rows, list):
        raise TypeError(
            "expected a RunRecord, a History or a record dict with per-epoch metrics, "
            f"got {type(run).__name__}"
        )
    return rows


def _name(run: Any, default: str) -> str:
    if isinstance(run, dict):
        return str(run.get("name", default))
    return str(getattr(run, "name", default))


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(row["epoch"])
            ys.append(float(value))
    return xs, ys


def _splits_present(rows: list[dict[str, Any]], splits: Sequence[str] | None) -> list[str]:
    wanted = SPLITS if splits is None else tuple(splits)
    return [s for s in wanted if any(f"{s}_accuracy" in row for row in rows)]


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

    rows = _rows(run)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split in _splits_present(rows, splits):
        style = _SPLIT_STYLE.get(split, "-")
        ax_loss.plot(*_series(rows, f"{split}_loss"), style, marker="o", label=split)
        ax_acc.plot(*_series(rows, f"{split}_accuracy"), style, marker="o", label=split)
    for key, ax in (("running_loss", ax_loss), ("running_accuracy", ax_acc)):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, color="0.6", marker=".", label="train (running)")
    _label(ax_loss, "loss (cross-entropy)")
    _label(ax_acc, "accuracy")
    fig.suptitle(title if title is not None else _name(run, "run"))
    fig.tight_layout()
    return fig


def _label(ax, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


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
    if names is not None and len(names) != len(runs):
        raise ValueError(f"got {len(names)} names for {len(runs)} runs")
    prefix = "running" if split == "running" else split
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, run in enumerate(runs):
        rows = _rows(run)
        label = names[i] if names is not None else _name(run, f"run {i + 1}")
        (line,) = ax_loss.plot(*_series(rows, f"{prefix}_loss"), marker="o", label=label)
        ax_acc.plot(
            *_series(rows, f"{prefix}_accuracy"), marker="o", color=line.get_color(), label=label
        )
    _label(ax_loss, f"{split} loss")
    _label(ax_acc, f"{split} accuracy")
    fig.tight_layout()
    return fig


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

    if not isinstance(runs, (list, tuple)):
        runs = [runs]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, run in enumerate(runs):
        losses = (
            run.get("step_losses") if isinstance(run, dict) else getattr(run, "step_losses", None)
        )
        if losses is None:
            raise TypeError(f"{type(run).__name__} has no step_losses")
        label = names[i] if names is not None else _name(run, f"run {i + 1}")
        ax.plot(range(len(losses)), losses, lw=1, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mini-batch training loss")
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _fmt_acc(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.1%}"
    return "n/a"


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
    rows = _rows(run)
    timings = run.get("timings", {}) if isinstance(run, dict) else getattr(run, "timings", {})
    status = run.get("status") if isinstance(run, dict) else getattr(run, "status", None)
    wall = timings.get("wall_s", timings.get("total_s"))
    head = f"{_name(run, 'run')} ({status or 'complete'}, {len(rows)} epochs"
    head += f", {wall:.1f} s)" if isinstance(wall, (int, float)) else ")"
    lines = [head, f"  {'split':<7} {'best':>6}  {'final':>6}"]
    splits = _splits_present(rows, None)
    for split in splits:
        _, accs = _series(rows, f"{split}_accuracy")
        finite = [a for a in accs if math.isfinite(a)]
        best = max(finite) if finite else math.nan
        lines.append(f"  {split:<7} {_fmt_acc(best):>6}  {_fmt_acc(accs[-1]):>6}")
    if not splits:
        _, accs = _series(rows, "running_accuracy")
        final = accs[-1] if accs else math.nan
        lines.append(f"  (no evaluation; running train accuracy {_fmt_acc(final)})")
    return "\n".join(lines)
