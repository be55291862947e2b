"""Chance level, label entropy and the binomial test against chance (nbhelpers.stats), and the
reference lines of nbhelpers.plots."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from nbhelpers.plots import add_reference_lines, plot_runs
from nbhelpers.stats import above_chance, label_entropy, majority_share

matplotlib.use("Agg")


def test_majority_share_and_entropy_of_known_labels():
    labels = torch.tensor([1, 1, 1, 0, 2, 2, 3, 1])  # shares 1/8, 4/8, 2/8, 1/8
    assert majority_share(labels) == pytest.approx(0.5)
    expected = -(2 * 0.125 * math.log(0.125) + 0.5 * math.log(0.5) + 0.25 * math.log(0.25))
    assert label_entropy(labels) == pytest.approx(expected)
    assert label_entropy(list(range(10))) == pytest.approx(math.log(10))  # uniform: ln 10
    assert label_entropy([3, 3, 3]) == 0.0


@pytest.mark.parametrize("bad", [[], [0, 10], [-1, 2], [0.5, 1.0]])
def test_labels_that_are_not_class_indices_are_refused(bad):
    with pytest.raises(ValueError):
        majority_share(bad)


def test_above_chance_tells_signal_from_luck():
    clear = above_chance(0.30, 2000, 0.186)
    assert clear.above and clear.correct == 600 and clear.p_value < 1e-30
    luck = above_chance(0.19, 2000, 0.186)
    assert not luck.above and luck.p_value > 0.1
    below = above_chance(0.10, 2000, 0.186)
    assert not below.above and below.p_value > 0.99
    assert "2,000 images" in clear.evidence and "p =" in clear.evidence


@pytest.mark.parametrize(
    "args", [(1.2, 10, 0.1), (0.5, 0, 0.1), (0.5, 10, 0.0), (0.5, 10, 1.0), (0.5, 2.5, 0.1)]
)
def test_above_chance_refuses_bad_input(args):
    with pytest.raises(ValueError):
        above_chance(*args)


def test_reference_lines_are_drawn_and_labelled():
    history = [{"epoch": 1, "running_loss": 2.3, "running_accuracy": 0.1}]
    fig = plot_runs([{"name": "a", "history": history}], split="running")
    add_reference_lines(fig, chance=0.186, entropy=2.237)
    ax_loss, ax_acc = fig.axes
    assert "label entropy (2.237)" in ax_loss.get_legend_handles_labels()[1]
    assert "chance (18.6%)" in ax_acc.get_legend_handles_labels()[1]
    assert [line.get_ydata()[0] for line in ax_acc.lines][-1] == pytest.approx(0.186)
    with pytest.raises(ValueError):
        add_reference_lines(matplotlib.pyplot.figure(), chance=0.1)
