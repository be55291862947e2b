"""Tests of nbhelpers.stats with cheap fake training functions (no training)."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nbhelpers import stats


def fake_curve(seed, shift=0.0, epochs=6):
    rng = np.random.default_rng(seed)
    t = np.arange(1, epochs + 1)
    return list(0.9 * (1 - np.exp(-t / 2)) + shift + rng.normal(0, 0.01, epochs))


def test_run_seeds_long_format():
    df = stats.run_seeds(fake_curve, [3, 1, 2], metric="test_accuracy", progress=False)
    assert list(df.columns) == ["seed", "epoch", "metric", "value"]
    assert len(df) == 3 * 6
    assert set(df["seed"]) == {1, 2, 3}
    assert df["epoch"].min() == 1 and df["epoch"].max() == 6
    assert set(df["metric"]) == {"test_accuracy"}
    assert df.loc[(df.seed == 1) & (df.epoch == 2), "value"].item() == pytest.approx(
        fake_curve(1)[1]
    )


def test_run_seeds_reads_histories():
    class Record:  # like RunRecord: .history is a list of per-epoch dicts
        def __init__(self, seed):
            self.history = [
                {"epoch": e, "lr": 0.1, "valid_accuracy": 0.1 * e + seed, "note": "x"}
                for e in (1, 2, 3)
            ]

    df = stats.run_seeds(Record, [0, 1], metric="valid_accuracy", progress=False)
    assert len(df) == 6
    assert df.loc[(df.seed == 1) & (df.epoch == 3), "value"].item() == pytest.approx(1.3)
    every = stats.run_seeds(Record, [0], progress=False)
    assert set(every["metric"]) == {"lr", "valid_accuracy"}  # non-numeric "note" dropped
    with pytest.raises(ValueError, match="test_accuracy"):
        stats.run_seeds(Record, [0], metric="test_accuracy", progress=False)


def test_run_seeds_bad_inputs():
    with pytest.raises(ValueError, match="at least one seed"):
        stats.run_seeds(fake_curve, [], progress=False)
    with pytest.raises(ValueError, match="each seed once"):
        stats.run_seeds(fake_curve, [1, 1], progress=False)
    with pytest.raises(ValueError, match="empty"):
        stats.run_seeds(lambda s: [], [0], progress=False)
    with pytest.raises(TypeError, match="float"):
        stats.run_seeds(lambda s: 0.5, [0], progress=False)


def test_t_interval_matches_hand_computation():
    x = [1.0, 2.0, 3.0, 4.0]
    # mean 2.5, sample std sqrt(5/3), sem = sqrt(5/3)/2; t_{0.975, 3} = 3.182446305284263
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    low, high = stats.t_interval(x, 0.95)
    assert low == pytest.approx(2.5 - half, rel=1e-9)
    assert high == pytest.approx(2.5 + half, rel=1e-9)
    assert all(math.isnan(v) for v in stats.t_interval([1.0], 0.95))
    assert stats.t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval(x, 95)


def test_summarize_per_epoch():
    df = pd.DataFrame(
        {
            "seed": [0, 1, 2, 3, 0, 1, 2, 3],
            "epoch": [1, 1, 1, 1, 2, 2, 2, 2],
            "metric": ["acc"] * 8,
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0],
        }
    )
    s = stats.summarize(df)
    assert list(s["epoch"]) == [1, 2]
    assert list(s["n"]) == [4, 4]
    assert s["mean"].tolist() == [2.5, 5.0]
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert s.loc[0, "ci_low"] == pytest.approx(2.5 - half)
    assert s.loc[1, "ci_low"] == s.loc[1, "ci_high"] == 5.0
    with pytest.raises(ValueError, match="confidence"):
        stats.summarize(df, confidence=1.0)
    with pytest.raises(ValueError, match="loss"):
        stats.summarize(df, metric="loss")


def test_welch_interval_matches_scipy():
    a = [0.80, 0.82, 0.81, 0.85]
    b = [0.78, 0.83, 0.70]
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert stats.welch_interval(a, b, 0.9) == pytest.approx((ci.low, ci.high))


def test_compare_identical_samples_not_significant():
    a = [0.91, 0.92, 0.90, 0.93, 0.915]
    result = stats.compare(a, list(a), names=("A", "B"), label="test accuracy at epoch 10")
    assert result.p_value == pytest.approx(1.0)
    assert result.p_permutation == pytest.approx(1.0)
    assert result.difference == 0.0
    assert result.ci_low < 0.0 < result.ci_high
    assert not result.significant
    assert "do not show" in result.verdict
    assert "not proof that they are equal" in result.verdict
    assert result.verdict.count(". ") == 0  # one sentence


def test_compare_clearly_different_samples():
    a = [0.93, 0.94, 0.935, 0.945, 0.94, 0.932]
    b = [0.80, 0.81, 0.805, 0.79, 0.80, 0.812]
    result = stats.compare(a, b, names=("ReLU+BN", "tanh"), label="test accuracy at epoch 10")
    assert result.p_value < 1e-6
    assert result.p_permutation < 0.01
    assert result.significant
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    assert 0 < result.ci_low < result.difference < result.ci_high
    assert result.verdict.startswith("With 6 seeds each, ReLU+BN did better than tanh")
    assert "this budget only" in result.verdict
    # for a loss, lower is better: the same numbers make the other one the winner
    loss = stats.compare(a, b, names=("A", "B"), higher_is_better=False)
    assert "B did better than A" in loss.verdict
    shown = result._repr_html_()
    assert "ReLU+BN" in shown and "Welch p" in shown and result.verdict in str(result)
    assert result.to_frame().iloc[0].tolist() == ["seeds", 6, 6]


def test_compare_few_seeds_does_not_overclaim():
    result = stats.compare([0.90, 0.91], [0.80, 0.81])
    assert result.p_value < 0.05  # Welch alone would say "significant" ...
    assert result.p_permutation == pytest.approx(1 / 3)  # ... the permutation test cannot
    assert not result.significant
    assert "cannot go below p = 0.33" in result.verdict
    assert stats.min_permutation_p(3, 3) == pytest.approx(0.1)


def test_compare_paired_cancels_shared_seed_noise():
    # seed-to-seed noise shared by both (same initial weights, same batches) swamps a
    # steady gain of 0.01 for Welch's test; per seed, every difference is +0.01 +- 0.002
    shared = np.array([0.80, 0.86, 0.83, 0.78, 0.88, 0.82])
    gain = np.array([0.010, 0.012, 0.008, 0.011, 0.009, 0.010])
    a, b = shared + gain, shared
    welch = stats.compare(a, b, names=("new", "old"))
    paired = stats.compare(a, b, names=("new", "old"), paired=True)
    assert welch.ci_low < 0 < welch.ci_high and not welch.significant
    rel = sps.ttest_rel(a, b)
    ci = rel.confidence_interval(0.95)
    assert paired.p_value == pytest.approx(rel.pvalue)
    assert (paired.ci_low, paired.ci_high) == pytest.approx((ci.low, ci.high))
    assert paired.ci_low > 0
    assert paired.p_permutation == pytest.approx(2 / 2**6)  # every pair has new ahead: exact floor
    assert paired.significant
    assert paired.verdict.startswith("With 6 seeds each, paired by seed, new did better than old")
    assert "paired t p" in paired.summary()
    # 5 pairs: the permutation test cannot go below 2 / 32 = 0.0625
    five = stats.compare(a[:5], b[:5], paired=True)
    assert five.p_value < 0.05 and not five.significant
    assert "cannot go below p = 0.062" in five.verdict
    assert stats.min_permutation_p(5, 5, paired=True) == pytest.approx(0.0625)


def test_compare_paired_equal_differences_give_no_interval():
    # accuracies come in steps: three differences of exactly +0.002 do not show zero spread
    same_step = stats.compare([0.843, 0.512, 0.822], [0.841, 0.510, 0.82], paired=True)
    assert np.isnan(same_step.p_value) and np.isnan(same_step.ci_low)
    assert not same_step.ci_low > 0 and not same_step.significant
    assert "too few distinct values to estimate the spread" in same_step.verdict
    same_runs = stats.compare([0.8, 0.81], [0.8, 0.81], paired=True)
    assert (same_runs.p_value, same_runs.ci_low, same_runs.ci_high) == (1.0, 0.0, 0.0)


def test_compare_paired_needs_pairs():
    with pytest.raises(ValueError, match="one value of each per seed; got 3 and 2"):
        stats.compare([0.9, 0.8, 0.7], [0.7, 0.8], paired=True)
    with pytest.raises(ValueError, match="paired"):
        stats.compare([0.9, 0.8], [0.7, 0.8], paired="yes")


def test_compare_needs_two_seeds():
    with pytest.raises(ValueError, match="B has 1 seed"):
        stats.compare([0.9, 0.8], [0.7], names=("A", "B"))
    with pytest.raises(ValueError, match="A has 0 seed"):
        stats.compare([], [0.7, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        stats.compare([0.9, float("nan")], [0.7, 0.8])
    with pytest.raises(ValueError, match="alpha"):
        stats.compare([0.9, 0.8], [0.7, 0.8], alpha=5)


def test_compare_at_an_epoch_and_plot():
    fa = stats.run_seeds(lambda s: fake_curve(s, 0.05), range(4), progress=False)
    fb = stats.run_seeds(fake_curve, range(4), progress=False)
    a, b = stats.values_at_epoch(fa, 6), stats.values_at_epoch(fb, 6)
    assert a.tolist() == [fake_curve(s, 0.05)[5] for s in range(4)]  # ordered by seed
    result = stats.compare(a, b, names=("A", "B"), label="metric at epoch 6")
    assert result.n_a == result.n_b == 4
    assert result.mean_a > result.mean_b
    with pytest.raises(ValueError, match="no values at epoch 9; the curves have epochs 1..6"):
        stats.values_at_epoch(fa, 9)
    fig = stats.plot_curves({"A": fa, "B": fb}, mark_epoch=5, ylabel="test accuracy")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "test accuracy"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "A (4 seeds)" in labels and "B (4 seeds)" in labels
    assert "shaded: 95% CI of the mean" in labels
    # identical curves stay distinguishable: each group has its own line style
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles["A (4 seeds)"] != styles["B (4 seeds)"]


def test_plot_curves_whole_epochs_and_accuracy_within_0_and_1():
    # two seeds far apart: the t band of the mean (df = 1) reaches far beyond [0, 1]
    curves = stats.run_seeds(
        lambda s: [0.1 + 0.8 * s] * 3, [0, 1], metric="test_accuracy", progress=False
    )
    fig = stats.plot_curves(curves, "test_accuracy")
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    loss = stats.run_seeds(lambda s: [2.0 + s] * 3, [0, 1], metric="test_loss", progress=False)
    assert stats.plot_curves(loss).axes[0].get_ylim()[0] < 0.0  # a loss axis is not clipped


def test_interrupted_run_is_not_averaged():
    class Interrupted:  # what experiment.run returns after Ctrl-C
        status = "interrupted"
        name = "r"
        history = [{"epoch": 1, "valid_accuracy": 0.3}]

    with pytest.raises(KeyboardInterrupt):
        stats.run_seeds(lambda s: Interrupted(), [0, 1], progress=False)


def test_welch_interval_needs_two_values_per_group():
    with pytest.raises(ValueError, match="b has 1 seed"):
        stats.welch_interval([0.8, 0.9], [0.7])
    with pytest.raises(ValueError, match="a has 0 seed"):
        stats.welch_interval([], [0.7, 0.8])


def test_compare_names_must_be_a_pair_of_strings():
    for names in (("A",), ("A", "B", "C"), "AB", ("A", 2)):
        with pytest.raises(ValueError, match="pair of strings"):
            stats.compare([0.9, 0.8], [0.7, 0.8], names=names)


def test_run_seeds_names_a_bad_seed_before_training():
    calls = []

    def fn(seed):
        calls.append(seed)
        return fake_curve(seed)

    for seeds in (["a"], [0, -1], [0, 1.5], [True]):
        with pytest.raises(
            ValueError, match=f"seed={seeds[-1]!r} is invalid; valid: an integer >= 0"
        ):
            stats.run_seeds(fn, seeds, progress=False)
    with pytest.raises(TypeError, match="range\\(3\\)"):
        stats.run_seeds(fn, 3, progress=False)
    assert calls == []
    assert set(stats.run_seeds(fn, np.arange(2), progress=False)["seed"]) == {0, 1}


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: stats.compare(["a", "b"], [0.7, 0.8]), "A=['a', 'b'] is invalid"),
        (lambda: stats.compare([0.9, 0.8], [[0.7], [0.8, 0.9]], names=("x", "y")), "y=[[0.7]"),
        (lambda: stats.compare([0.9, 0.8], {"a": 1}), "B={'a': 1} is invalid"),
        (lambda: stats.welch_interval(["a", "b"], [0.7, 0.8]), "a=['a', 'b'] is invalid"),
        (lambda: stats.t_interval([]), "values=[] is invalid"),
        (lambda: stats.t_interval(["a", "b"]), "values=['a', 'b'] is invalid"),
    ],
)
def test_samples_that_are_not_numbers_are_named(call, fragment):
    with pytest.raises(ValueError) as err:
        call()
    assert fragment in str(err.value) and "valid:" in str(err.value)
    assert "could not convert" not in str(err.value).split("valid:")[0]


def test_activation_variances_show_he_init_keeps_the_scale():
    import torch

    from nbhelpers.models import build_cnn
    from nbhelpers.stats import activation_variances

    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    default = activation_variances(build_cnn("relu", "none", 8), images)
    torch.manual_seed(0)
    he = activation_variances(build_cnn("relu", "none", 8, init="kaiming"), images)
    assert list(default.index) == ["act1", "act2", "act3", "act4", "act5", "act6", "act_fc"]
    assert default.iloc[-1] / default.iloc[0] < 0.1  # shrinks through the layers
    assert 0.1 < he.iloc[-1] / he.iloc[0] < 10  # keeps its scale
    with pytest.raises(ValueError, match="no layer"):
        activation_variances(torch.nn.Linear(3, 3), torch.zeros(2, 3))
