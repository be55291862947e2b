"""Tests of nbhelpers.plots: learning curves, run comparisons, text summaries."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from nbhelpers.plots import (  # noqa: E402
    finish_axes,
    history_rows,
    plot_learning_curves,
    plot_runs,
    plot_step_losses,
    summary_text,
)
from nbhelpers.records import RunRecord  # noqa: E402
from nbhelpers.train import History  # noqa: E402


def _record(name: str, base: float) -> RunRecord:
    history = [
        {
            "epoch": e,
            "running_loss": 2.0 - 0.2 * e,
            "running_accuracy": 0.2 + 0.1 * e,
            "train_loss": 2.0 - base * e,
            "train_accuracy": 0.2 + base * e,
            "valid_loss": 2.1 - base * e,
            "valid_accuracy": 0.1 + base * e,
            "test_loss": 2.2 - base * e,
            "test_accuracy": 0.1 + base * e - (0.25 if e == 3 else 0.0),
        }
        for e in (1, 2, 3)
    ]
    return RunRecord(
        name=name, config={}, config_hash="0" * 64, history=history,
        step_losses=[2.3, 2.1, 1.9], timings={"wall_s": 12.34},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_learning_curves_have_labelled_axes_and_legends():
    fig = plot_learning_curves(_record("demo", 0.2))
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "epoch"
    assert "loss" in ax_loss.get_ylabel() and "accuracy" in ax_acc.get_ylabel()
    labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert labels == ["train", "valid", "test", "train (running)"]
    test_line = ax_acc.get_lines()[2]
    assert list(test_line.get_xdata()) == [1, 2, 3]
    assert list(test_line.get_ydata()) == pytest.approx([0.3, 0.5, 0.45])
    assert fig._suptitle.get_text() == "demo"


def test_learning_curves_accept_history_and_subset_of_splits():
    history = History(epochs=[{"epoch": 1, "running_loss": 1.0, "running_accuracy": 0.5}])
    fig = plot_learning_curves(history, title="no evaluation")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train (running)"]
    fig = plot_learning_curves(_record("x", 0.1), splits=["test"])
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [
        "test",
        "train (running)",
    ]
    with pytest.raises(TypeError, match="per-epoch"):
        plot_learning_curves(42)


def test_plot_runs_one_line_per_run_with_names():
    runs = [_record("handover", 0.01), _record("reference-fix", 0.2)]
    fig = plot_runs(runs, split="valid")
    ax_loss, ax_acc = fig.axes
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["handover", "reference-fix"]
    assert len(ax_loss.get_lines()) == 2 and ax_acc.get_ylabel() == "valid accuracy"
    assert ax_loss.get_lines()[0].get_color() == ax_acc.get_lines()[0].get_color()
    fig = plot_runs(runs, names=["A", "B"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["A", "B"]
    with pytest.raises(ValueError, match="names"):
        plot_runs(runs, names=["only one"])
    with pytest.raises(ValueError, match="at least one"):
        plot_runs([])


def test_plot_step_losses():
    fig = plot_step_losses([_record("a", 0.1), _record("b", 0.2)], log_y=True)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "step" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 2


def test_summary_text_best_and_final_accuracy():
    text = summary_text(_record("demo", 0.2))
    lines = text.splitlines()
    assert lines[0] == "demo (complete, 3 epochs, 12.3 s)"
    test_row = [line for line in lines if line.strip().startswith("test")][0]
    assert test_row.split()[1:] == ["50.0%", "45.0%"]  # best (epoch 2), final (epoch 3)
    bare = summary_text(History(epochs=[{"epoch": 1, "running_accuracy": 0.25}]))
    assert "no evaluation" in bare and "25.0%" in bare


def test_epoch_axes_show_whole_epochs_only():
    for fig in (
        plot_learning_curves(_record("a", 0.1)),
        plot_runs([_record("a", 0.1), _record("b", 0.2)], split="valid"),
    ):
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_history_rows_reads_every_form_of_a_run():
    record = _record("a", 0.1)
    rows = record.history
    assert history_rows(record) == rows
    assert history_rows(History(epochs=rows)) == rows
    assert history_rows({"name": "a", "history": rows}) == rows
    assert history_rows(rows) == rows and history_rows([]) == []
    for bad in (42, "abc", [1.0, 2.0], {"name": "no history"}):
        with pytest.raises(TypeError, match="per-epoch dicts"):
            history_rows(bad)


def test_finish_axes_keeps_a_legend_and_clips_only_on_request():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [-0.5, 1.5], label="band")
    ax.legend(title="mine")
    finish_axes(ax, "accuracy", xlabel="", unit_interval=True)
    assert ax.get_legend().get_title().get_text() == "mine"
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel() == "accuracy"
    finish_axes(ax2 := fig.add_subplot(2, 1, 2), "loss")
    assert ax2.get_xlabel() == "epoch" and ax2.get_legend() is None


def test_plot_journey_marks_splits_chance_and_reference():
    from nbhelpers.plots import plot_journey

    rows = [
        dict(label="01 handover", accuracy=0.19, origin="stage record", test_split="colleague"),
        dict(label="final", accuracy=0.8, ci=0.03, origin="this notebook", test_split="test"),
    ]
    fig = plot_journey(rows, chance=0.186, reference=("reference fix", 0.78))
    ax = fig.axes[0]
    (legend,) = fig.legends  # under the axes, so the long stage labels keep their width
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 < ax.get_tightbbox(renderer).y0
    labels = [t.get_text() for t in legend.get_texts()]
    assert (
        "the colleague's test split (training images)" in labels and "the real test split" in labels
    )
    assert any("chance" in t for t in labels) and any("reference fix (78.0%)" in t for t in labels)
    assert [p.get_hatch() for p in ax.patches[:2]] == ["//", ""]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["01 handover", "final"]
    with pytest.raises(ValueError):
        plot_journey([])
    with pytest.raises(ValueError):
        plot_journey([dict(label="x", accuracy=0.5, test_split="train")])
