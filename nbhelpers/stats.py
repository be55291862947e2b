"""Honest comparisons: several seeds, confidence intervals, significance tests, band plots.

One training run is one draw from a random process (initialisation, batch order,
augmentation all depend on the seed). The tutorial's advice: "average all results
across multiple seeds (e.g. reruns) to show whether they are significant". This
module does exactly that, with well-kept tools from :mod:`scipy.stats`:

* :func:`run_seeds` runs one configuration once per seed and collects the per-epoch
  curves in a long ("tidy") :class:`pandas.DataFrame` with columns
  ``seed, epoch, metric, value``.
* :func:`summarize` gives per epoch the mean over seeds and a Student-t confidence
  interval of that mean.
* :func:`compare` asks whether two training algorithms differ at one budget (e.g. the
  test accuracy after epoch 10) with Welch's t-test (the paired t-test for runs on the
  same seeds) and a permutation test, and
  returns a :class:`Comparison` with the p-values, the difference of means, its
  confidence interval and a one-sentence verdict that does not claim more than the
  data show.
* :func:`plot_curves` draws mean curves with confidence bands.
* :func:`majority_share`, :func:`label_entropy` and :func:`above_chance`: what a model
  that ignores the image scores (chance level, loss), and whether an accuracy beats it.
* :func:`run_config_seeds` runs a ``RunConfig`` once per seed through
  :func:`nbhelpers.experiment.run`.
* :func:`activation_variances` measures how the signal's scale changes through a
  network at initialisation (the reason for He initialisation).

The training function is always a parameter, so anything that maps a seed to a
learning curve works here, including cheap fakes in tests.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from nbhelpers.display import Report
from nbhelpers.plots import finish_axes, history_rows
from nbhelpers.validate import boolean, invalid, number, one_of
from nbhelpers.validate import seed as valid_seed

__all__ = [
    "ChanceTest",
    "Comparison",
    "above_chance",
    "activation_variances",
    "compare",
    "curves_from_history",
    "label_entropy",
    "majority_share",
    "min_permutation_p",
    "plot_curves",
    "raise_if_interrupted",
    "run_config_seeds",
    "run_seeds",
    "summarize",
    "t_interval",
    "values_at_epoch",
    "welch_interval",
]

COLUMNS = ["seed", "epoch", "metric", "value"]


# ---------------------------------------------------------------------------
# collecting curves over seeds
# ---------------------------------------------------------------------------
def curves_from_history(
    history: Sequence[Mapping[str, Any]], metrics: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Turn a run's per-epoch history into long rows ``epoch, metric, value``.

    Args:
        history: list of per-epoch dicts with an ``epoch`` key (1-based), as in
            ``RunRecord.history``; rows without ``epoch`` are numbered 1, 2, ...
        metrics: metric name(s) to keep, e.g. ``"valid_accuracy"``; None keeps every
            numeric key except ``epoch``. Epochs where a metric is missing (no
            evaluation that epoch) give no row for it.

    Returns:
        DataFrame with columns ``epoch`` (int), ``metric`` (str), ``value`` (float).

    Raises:
        ValueError: a requested metric appears in no epoch (the message lists those
            that do).
    """
    wanted = [metrics] if isinstance(metrics, str) else (list(metrics) if metrics else None)
    rows = [
        {"epoch": int(row.get("epoch", position)), "metric": key, "value": float(value)}
        for position, row in enumerate(history, start=1)
        for key, value in row.items()
        if key != "epoch" and (wanted is None or key in wanted)
        and isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["epoch", "metric", "value"])
    missing = sorted(set(wanted or ()) - set(frame["metric"]))
    if missing:
        known = sorted({k for r in history for k in r if k != "epoch"})
        raise ValueError(f"metric(s) {missing} not in the history; it has: {known}")
    return frame


def run_seeds(
    fn: Callable[[int], Any],
    seeds: Iterable[int] = (0, 1, 2),
    *,
    metric: str | Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run ``fn(seed)`` once per seed and collect the learning curves.

    Args:
        fn: training function taking an int seed. It returns either a plain
            per-epoch curve (sequence of floats, epoch 1 first) or a run result with a
            per-epoch history (a ``RunRecord``, a ``History``, or a list of dicts with
            an ``epoch`` key).
        seeds: distinct int seeds, e.g. ``range(5)``.
        metric: for plain curves, the name stored in the ``metric`` column (default
            ``"metric"``); for histories, the metric name(s) to keep (default: all
            numeric ones).
        progress: show a tqdm progress bar over the seeds.

    Returns:
        Long DataFrame with columns ``seed`` (int), ``epoch`` (int, 1-based),
        ``metric`` (str) and ``value`` (float): one row per seed, epoch and metric.

    Raises:
        ValueError: no seeds, repeated seeds, a seed that is not an int in
            ``[0, 2**32 - 1]`` (the message names it), or ``fn`` returned an empty curve.
        TypeError: ``seeds`` is not an iterable of ints (e.g. ``seeds=3``: use
            ``range(3)``), or ``fn`` returned something that is neither a curve nor a
            history.
    """
    from tqdm.auto import tqdm

    seeds = _check_seeds(seeds)
    frames = [
        _curve_frame(fn(seed), metric, seed).assign(seed=seed)
        for seed in tqdm(seeds, desc="seeds", leave=False, disable=not progress)
    ]
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a list of ints like [0, 1, 2] or range(3), got {seeds!r}")
    seeds = [valid_seed("seed", s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise invalid("seeds", seeds, "at least one seed, each seed once")
    return seeds


def _check_names(names: Any) -> tuple[str, str]:
    pair = not isinstance(names, str) and isinstance(names, Sequence) and len(names) == 2
    if not pair or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"names must be a pair of strings like ('Adam', 'SGD'), one per algorithm, got {names!r}"
        )
    return names[0], names[1]


def raise_if_interrupted(result: Any) -> None:
    """Re-raise KeyboardInterrupt for a run record with status "interrupted".

    :func:`nbhelpers.experiment.run` catches Ctrl-C and returns the partial record; a
    partial curve must not enter a mean over seeds or a search.
    """
    if getattr(result, "status", None) == "interrupted":
        raise KeyboardInterrupt(f"run {getattr(result, 'name', '')} was interrupted")


def _curve_frame(result: Any, metric, seed: int) -> pd.DataFrame:
    raise_if_interrupted(result)
    try:
        history = history_rows(result)
    except TypeError:  # not a run: a plain per-epoch curve of floats, or nothing usable
        history = None
    if history is not None:
        if not history:
            raise ValueError(f"the training function returned an empty history for seed {seed}")
        return curves_from_history(history, metric)
    if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        raise TypeError(
            f"the training function returned {type(result).__name__} for seed {seed}; "
            "expected a per-epoch list of floats or a run record with a history"
        )
    values = [float(v) for v in result]
    if not values:
        raise ValueError(f"the training function returned an empty curve for seed {seed}")
    name = metric if isinstance(metric, str) else "metric"
    return pd.DataFrame({"epoch": range(1, len(values) + 1), "metric": name, "value": values})


# ---------------------------------------------------------------------------
# confidence intervals
# ---------------------------------------------------------------------------
def _check_level(name: str, value: Any) -> float:
    return number(name, value, 0.0, 1.0, low_open=True, high_open=True)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the *mean* of ``values``.

    ``scipy.stats.t.interval(confidence, df=n-1, loc=mean, scale=sem)`` with
    ``sem = std(ddof=1) / sqrt(n)``: it describes how precisely the mean over seeds
    is known, not how spread out single runs are. It assumes the values are roughly
    normal; with 3-5 seeds it is wide, which is honest.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for a single value (no spread to estimate) or when
        a value is NaN; ``(mean, mean)`` if all values are equal.

    Raises:
        ValueError: no values, values that are not numbers (naming them), ``confidence``
            not strictly between 0 and 1.
    """
    _check_level("confidence", confidence)
    x = _floats(values, "values")
    if x.size == 0:
        raise invalid("values", values, "at least one number (two or more for an interval)")
    if x.size < 2:
        return (math.nan, math.nan)
    sem = float(stats.sem(x))
    if sem == 0.0:
        return (float(x.mean()), float(x.mean()))
    low, high = stats.t.interval(confidence, df=x.size - 1, loc=x.mean(), scale=sem)
    return (float(low), float(high))


def _rng_kwarg(func, seed: int) -> dict:
    """``rng=seed`` on SciPy >= 1.15, ``random_state=seed`` before."""
    return {"rng": seed} if "rng" in inspect.signature(func).parameters else {"random_state": seed}


def summarize(
    curves: pd.DataFrame, metric: str | None = None, *, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean over seeds and a Student-t confidence interval of the mean (:func:`t_interval`),
    per epoch.

    Args:
        curves: long frame from :func:`run_seeds` (columns seed, epoch, metric, value).
        metric: which metric to summarise; may be None if the frame holds only one.
        confidence: confidence level, e.g. 0.95.

    Returns:
        DataFrame with one row per epoch: ``epoch, n`` (seeds), ``mean``, ``std``
        (ddof=1, spread of single runs), ``ci_low``, ``ci_high`` (interval of the mean;
        NaN when n < 2).

    Raises:
        ValueError: bad ``confidence``, or ``metric`` missing / ambiguous.
    """
    _check_level("confidence", confidence)
    rows = []
    for epoch, group in _select_metric(curves, metric).groupby("epoch", sort=True):
        x = group["value"].to_numpy(dtype=float)
        std = float(x.std(ddof=1)) if x.size > 1 else math.nan
        rows.append((int(epoch), x.size, float(x.mean()), std, *t_interval(x, confidence)))
    return pd.DataFrame(rows, columns=["epoch", "n", "mean", "std", "ci_low", "ci_high"])


def _select_metric(curves: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    missing = set(COLUMNS) - set(curves.columns)
    if missing:
        raise ValueError(
            f"expected a long frame with columns {COLUMNS} (from run_seeds); missing {sorted(missing)}"
        )
    names = list(pd.unique(curves["metric"]))
    if metric is None and len(names) != 1:
        raise ValueError(f"the frame holds several metrics {names}; pass metric=one of them")
    metric = one_of("metric", names[0] if metric is None else metric, names)
    return curves[curves["metric"] == metric]


def values_at_epoch(curves: pd.DataFrame, epoch: int, metric: str | None = None) -> np.ndarray:
    """The per-seed values of ``metric`` after ``epoch`` (1-based), ordered by seed.

    Raises:
        ValueError: no seed has that epoch (the message names the epochs there are).
    """
    data = _select_metric(curves, metric)
    at = data[data["epoch"] == int(epoch)].sort_values("seed")
    if at.empty:
        raise ValueError(
            f"no values at epoch {epoch}; the curves have epochs "
            f"{int(data['epoch'].min())}..{int(data['epoch'].max())}"
        )
    return at["value"].to_numpy(dtype=float)


# ---------------------------------------------------------------------------
# significance tests
# ---------------------------------------------------------------------------
def _floats(values: Any, name: str) -> np.ndarray:
    """``values`` as a flat float array; ValueError naming ``name`` if they are not numbers."""
    try:
        return np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as err:
        raise invalid(name, values, f"a list of numbers, one per seed ({err})") from err


def _as_sample(values, name: str) -> np.ndarray:
    x = _floats(values, name)
    if x.size < 2:
        raise ValueError(
            f"{name} has {x.size} seed(s); a significance test needs at least 2 per "
            "algorithm to estimate the seed-to-seed spread (3-5 are better)"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values: {x.tolist()}")
    return x


def _welch(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Welch's two-sided p-value and confidence interval of ``mean(a) - mean(b)``.

    Both samples without spread: the t statistic is undefined but the data are exact, so
    p is 1 for equal means and 0 otherwise, and the interval is the difference itself.
    """
    diff = float(a.mean() - b.mean())
    if a.var() == 0.0 and b.var() == 0.0:
        return (1.0 if diff == 0.0 else 0.0), diff, diff
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(confidence)
    return float(test.pvalue), float(ci.low), float(ci.high)


def _paired_t(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Paired t-test (``scipy.stats.ttest_rel``): two-sided p-value and confidence interval
    of the mean per-seed difference ``mean(a - b)``. Differences without spread: all zero
    (the same runs) gives p = 1 and the interval (0, 0); all equal but not zero (e.g. +0.002
    three times, accuracies come in steps) gives NaN: a few equal values do not show that
    the spread is zero, so no interval can be given."""
    d = a - b
    if np.ptp(d) <= 1e-12:  # no spread, up to float rounding (0.843 - 0.841 vs 0.512 - 0.510)
        return (1.0, 0.0, 0.0) if np.all(d == 0.0) else (math.nan, math.nan, math.nan)
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(confidence)
    return float(test.pvalue), float(ci.low), float(ci.high)


#: Design of :func:`compare` -> (t-test, ``permutation_type`` of ``scipy.stats.permutation_test``,
#: the t-test's name in reports). Independent: Welch's test, labels shuffled across all seeds;
#: paired (seed i of A with seed i of B): the paired t-test, labels swapped within each pair.
_DESIGNS = {False: (_welch, "independent", "Welch"), True: (_paired_t, "samples", "paired t")}


def welch_interval(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """Welch confidence interval of ``mean(a) - mean(b)`` (unequal variances).

    ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)``
    (degrees of freedom from the Welch-Satterthwaite equation). Returns ``(d, d)`` when
    both samples have zero spread.

    Raises:
        ValueError: fewer than 2 values in ``a`` or ``b`` (no spread to estimate; the
            message names the count), non-finite values, bad ``confidence``.
    """
    confidence = _check_level("confidence", confidence)
    return _welch(_as_sample(a, "a"), _as_sample(b, "b"), confidence)[1:]


def min_permutation_p(n_a: int, n_b: int, paired: bool = False) -> float:
    """Smallest two-sided p-value an exact permutation test of two samples can give:
    ``2 / C(n_a + n_b, n_a)`` (e.g. 1/3 for 2 vs 2 seeds, 0.1 for 3 vs 3, 0.029 for 4 vs 4);
    paired (``n_a == n_b`` pairs, labels swapped within a pair): ``2 / 2**n_a`` (0.0625 for
    5 pairs, 0.031 for 6)."""
    splits = 2 ** int(n_a) if paired else math.comb(int(n_a) + int(n_b), int(n_a))
    return min(1.0, 2.0 / splits)


def _permutation_p(a: np.ndarray, b: np.ndarray, seed: int, paired: bool = False) -> float:
    """``scipy.stats.permutation_test`` of the difference of means (its default 9999
    resamples; exact when there are fewer distinct splits), two-sided."""
    res = stats.permutation_test(
        (a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        permutation_type=_DESIGNS[paired][1], vectorized=True, alternative="two-sided",
        **_rng_kwarg(stats.permutation_test, seed),
    )  # fmt: skip
    return float(min(1.0, res.pvalue))


@dataclass(frozen=True)
class Comparison(Report):
    """Result of :func:`compare`: are A and B different at this budget?

    ``difference`` is ``mean_a - mean_b``; ``ci_low``/``ci_high`` its confidence interval
    at level ``confidence`` (Welch's, or the paired t-test's when ``paired``). ``p_value``
    is that t-test's two-sided p-value, ``p_permutation`` the permutation test's. :attr:`verdict` is one plain
    sentence. Shows as a table of seeds and means with the test results under it.
    """

    name_a: str
    name_b: str
    label: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    p_permutation: float
    alpha: float
    higher_is_better: bool = True
    paired: bool = False

    @property
    def significant(self) -> bool:
        """True only when both tests give p < alpha."""
        return bool(self.p_value < self.alpha and self.p_permutation < self.alpha)

    @property
    def verdict(self) -> str:
        """One sentence that claims no more than the data show (see :func:`compare`)."""
        seeds = (
            f"{self.n_a} seeds each" if self.n_a == self.n_b else f"{self.n_a} and {self.n_b} seeds"
        ) + (", paired by seed" if self.paired else "")
        numbers = (
            f"{'mean per-seed difference' if self.paired else 'difference of means'} "
            f"{self.difference:+.3g}, {round(100 * self.confidence)}% CI "
            f"{self.ci_low:+.3g} to {self.ci_high:+.3g}, {_DESIGNS[self.paired][2]} "
            f"p = {self.p_value:.2g}, permutation p = {self.p_permutation:.2g}"
        )
        if math.isnan(self.p_value):
            return (
                f"With {seeds}, every seed gave the same difference ({self.difference:+.3g} on "
                f"{self.label}): too few distinct values to estimate the spread, so no interval; "
                "run more seeds before preferring either."
            )
        if self.significant:
            a_wins = (self.difference > 0) == self.higher_is_better
            winner, loser = (self.name_a, self.name_b) if a_wins else (self.name_b, self.name_a)
            return (
                f"With {seeds}, {winner} did better than {loser} on {self.label} ({numbers}), "
                "a difference unlikely to be seed noise alone, shown for these runs at this "
                "budget only."
            )
        if min(self.p_value, self.p_permutation) < self.alpha:
            floor = min_permutation_p(self.n_a, self.n_b, self.paired)
            why = (
                f"the permutation test cannot go below p = {floor:.2g} with this few seeds"
                if floor >= self.alpha
                else "the two tests disagree"
            )
            return (
                f"With {seeds}, {why} ({self.label}: {numbers}), so the difference is a hint, "
                "not a result: run more seeds before preferring either."
            )
        return (
            f"With {seeds}, the data do not show that {self.name_a} and {self.name_b} differ on "
            f"{self.label} ({numbers}); this is not proof that they are equal, only that the "
            "difference is within seed-to-seed noise."
        )

    def to_frame(self) -> pd.DataFrame:
        """Seeds and mean of A and B, one row each."""
        rows = [
            ["seeds", self.n_a, self.n_b],
            [f"mean {self.label}", f"{self.mean_a:.4g}", f"{self.mean_b:.4g}"],
        ]
        return pd.DataFrame(rows, columns=["", self.name_a, self.name_b])

    def summary(self) -> str:
        """The difference, its interval, both p-values and the verdict."""
        return (
            f"Difference {self.name_a} - {self.name_b}: {self.difference:+.4g} "
            f"({round(100 * self.confidence)}% CI {self.ci_low:+.4g} to {self.ci_high:+.4g}); "
            f"{_DESIGNS[self.paired][2]} p = {self.p_value:.3g}, "
            f"permutation p = {self.p_permutation:.3g}. {self.verdict}"
        )


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("A", "B"),
    label: str = "metric",
    confidence: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
    higher_is_better: bool = True,
    paired: bool = False,
) -> Comparison:
    """Do two training algorithms differ at one budget? A t-test + a permutation test.

    ``a`` and ``b`` hold one value per seed, e.g. the test accuracy after epoch 10 of
    algorithm A (with its tuned hyperparameters) and of B. Two tests, both two-sided:

    * Welch's t-test, ``scipy.stats.ttest_ind(a, b, equal_var=False)``: does not assume
      equal spreads; assumes roughly normal values.
    * A permutation test, ``scipy.stats.permutation_test`` on the difference of means
      (exact when there are fewer than 9999 distinct splits): no normality
      assumption, but with few seeds it cannot reach small p-values at all (2 vs 2
      seeds: never below 1/3).

    With ``paired=True``, ``a[i]`` and ``b[i]`` ran on the same seed (the same initial
    weights where the shapes agree, the same order of batches), so seed-to-seed noise that
    both share cancels in ``a[i] - b[i]``: the paired t-test ``scipy.stats.ttest_rel``
    replaces Welch's, and the permutation test swaps A and B within each pair
    (``permutation_type="samples"``; 5 pairs cannot go below p = 0.0625).

    The verdict calls a difference "shown" only when both p-values are below
    ``alpha``; "no difference shown" is not "the same". It speaks of these runs at
    this budget only: tuning for another budget (the tutorial's 80 vs 100 epochs)
    can change the answer.

    Args:
        a, b: per-seed values (at least 2 each, finite).
        names: display names of A and B.
        label: what the values are, e.g. ``"test accuracy at epoch 10"``.
        confidence: level of the interval of the difference (e.g. 0.95).
        alpha: significance level for the verdict.
        seed: seed of the permutation test.
        higher_is_better: which direction is better (accuracy: True, loss: False);
            decides who the verdict names as better.
        paired: ``a[i]`` and ``b[i]`` come from the same seed (see above).

    Returns:
        :class:`Comparison`.

    Raises:
        ValueError: fewer than 2 values in ``a`` or ``b`` (the message names the count),
            non-finite values, bad ``confidence``/``alpha``, ``names`` not a pair of
            strings, ``paired`` not a bool, or paired samples of different lengths.
    """
    name_a, name_b = _check_names(names)
    xa, xb = _as_sample(a, name_a), _as_sample(b, name_b)
    paired = boolean("paired", paired)
    if paired and xa.size != xb.size:
        raise ValueError(
            f"paired samples need one value of each per seed; got {xa.size} and {xb.size}"
        )
    p_t, low, high = _DESIGNS[paired][0](xa, xb, _check_level("confidence", confidence))
    return Comparison(
        name_a=name_a, name_b=name_b, label=label, n_a=int(xa.size), n_b=int(xb.size),
        mean_a=float(xa.mean()), mean_b=float(xb.mean()), difference=float(xa.mean() - xb.mean()),
        ci_low=low, ci_high=high, confidence=float(confidence), p_value=p_t,
        p_permutation=_permutation_p(xa, xb, seed, paired), alpha=_check_level("alpha", alpha),
        higher_is_better=bool(higher_is_better), paired=paired,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------
#: Line style of the mean curve of each group of :func:`plot_curves`, in turn.
_LINE_STYLES = ("-", "--", ":", "-.")


def plot_curves(
    curves: pd.DataFrame | Mapping[str, pd.DataFrame],
    metric: str | None = None,
    *,
    confidence: float = 0.95,
    show_seeds: bool = False,
    mark_epoch: int | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    ax=None,
):
    """Mean curve over seeds with a Student-t confidence band, one per algorithm (each in
    its own line style, so curves that coincide stay visible).

    Whole epochs on the x-axis; an accuracy axis stays within [0, 1] (with few seeds
    the band of the mean can reach beyond).

    Args:
        curves: one :func:`run_seeds` frame, or ``{"A": frame_a, "B": frame_b}``.
        metric: the metric to draw (may be None if each frame holds only one).
        confidence: level of the band, as in :func:`summarize`.
        show_seeds: also draw each seed's curve thinly.
        mark_epoch: draw a dashed vertical line at this epoch (e.g. the budget compared).
        ylabel: y-axis label (default: the metric name).
        title: axes title.
        ax: matplotlib Axes to draw into (default: a new figure).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no frame, or as :func:`summarize`.
    """
    import matplotlib.pyplot as plt

    groups = {"": curves} if isinstance(curves, pd.DataFrame) else dict(curves)
    if not groups:
        raise ValueError("plot_curves needs at least one frame of curves")
    fig, ax = plt.subplots(figsize=(7, 4)) if ax is None else (ax.figure, ax)
    for i, (label, frame) in enumerate(groups.items()):
        data = _select_metric(frame, metric)
        metric = metric or str(data["metric"].iloc[0])
        summary = summarize(frame, metric, confidence=confidence)
        seeds = f"{label or 'mean'} ({int(summary['n'].max())} seeds)"
        style = _LINE_STYLES[i % len(_LINE_STYLES)]  # curves that coincide stay visible
        (line,) = ax.plot(summary["epoch"], summary["mean"], marker=".", ls=style, label=seeds)
        ax.fill_between(
            summary["epoch"], summary["ci_low"], summary["ci_high"], color=line.get_color(), alpha=0.2,
            label=f"shaded: {round(100 * confidence)}% CI of the mean" if i == 0 else None,
        )  # fmt: skip
        for _, one in data.groupby("seed") if show_seeds else ():
            ax.plot(one["epoch"], one["value"], color=line.get_color(), lw=0.6, alpha=0.4)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", ls="--", lw=1, label=f"epoch {mark_epoch}")
    finish_axes(ax, ylabel or metric.replace("_", " "), unit_interval="accuracy" in metric)
    if title:
        ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------
# wrappers over nbhelpers.experiment.run
# ---------------------------------------------------------------------------
def run_config_seeds(
    config: Any,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    metric: str | Sequence[str] | None = None,
    progress: bool = True,
    **run_kwargs: Any,
) -> pd.DataFrame:
    """Run one ``RunConfig`` once per seed through :func:`nbhelpers.experiment.run`.

    Each run is ``run(dataclasses.replace(config, seed=s), progress=False, **run_kwargs)``;
    cached runs come back from disk. Returns the long frame of :func:`run_seeds`.
    """
    from nbhelpers import experiment

    run_kwargs.setdefault("progress", False)

    def one(seed: int):
        return experiment.run(dataclasses.replace(config, seed=seed), **run_kwargs)

    return run_seeds(one, seeds, metric=metric, progress=progress)


# ---------------------------------------------------------------------------
# the signal through a network at initialisation
# ---------------------------------------------------------------------------
def activation_variances(
    model: Any, images: Any, kinds: tuple[type, ...] | None = None
) -> pd.Series:
    """Variance of the output of every activation layer of ``model`` for one batch.

    Runs ``model(images)`` once in eval mode without gradients and records, for each
    submodule of one of ``kinds`` (default: ``torch.nn`` ReLU, Tanh, GELU, SiLU, ELU), the
    variance of its output over all elements of the batch. A signal that keeps its scale
    through the layers keeps this variance roughly constant; one that shrinks by a factor
    per layer falls on a straight line on a log axis.

    Args:
        model: a ``torch.nn.Module`` (e.g. :func:`nbhelpers.models.build_cnn`).
        images: float tensor ``(B, 3, 32, 32)`` (values in [0, 1]) or uint8 (divided by 255).
        kinds: the module types whose outputs are measured.

    Returns:
        Series indexed by layer name (in forward order), float variances (dimensionless).

    Raises:
        ValueError: the model has no layer of ``kinds``.
    """
    import torch

    kinds = kinds or (torch.nn.ReLU, torch.nn.Tanh, torch.nn.GELU, torch.nn.SiLU, torch.nn.ELU)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    found: dict[str, float] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, n=name: found.__setitem__(n, float(out.var()))
        )
        for name, module in model.named_modules()
        if isinstance(module, kinds)
    ]
    if not hooks:
        raise ValueError(f"the model has no layer of {[k.__name__ for k in kinds]}")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return pd.Series(found, name="variance", dtype=float)


# ---------------------------------------------------------------------------
# references: what a model that ignores the image achieves
# ---------------------------------------------------------------------------
def _class_shares(labels: Any, n_classes: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise invalid("labels", labels, f"a non-empty sequence of class indices 0..{n_classes - 1}")
    return np.bincount(y, minlength=n_classes) / y.size


def majority_share(labels: Any, n_classes: int = 10) -> float:
    """Chance level: the accuracy of always answering the most frequent class of ``labels``.

    Args:
        labels: class indices (ints in ``0..n_classes-1``; a tensor, array or list).
        n_classes: number of classes.

    Returns:
        The share of the most frequent class, in (0, 1]; no constant answer scores more on
        these labels.

    Raises:
        ValueError: empty labels, or values that are not class indices.
    """
    return float(_class_shares(labels, n_classes).max())


def label_entropy(labels: Any, n_classes: int = 10) -> float:
    """The cross-entropy loss (nats, natural log) of predicting the class frequencies.

    A model that ignores the image and outputs the frequencies of ``labels`` as its
    probabilities has exactly this mean loss on them; a loss at or above it means the
    model has learned nothing about the images. Uniform over 10 classes: ln 10 = 2.303.

    Raises:
        ValueError: as :func:`majority_share`.
    """
    p = _class_shares(labels, n_classes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class ChanceTest:
    """Is an accuracy on ``n`` images above ``chance``? (see :func:`above_chance`).

    Attributes:
        accuracy: the measured accuracy, in [0, 1].
        n: images it was measured on.
        correct: correctly classified images (``round(accuracy * n)``).
        chance: the chance level (e.g. :func:`majority_share` of the same labels).
        p_value: one-sided exact binomial test, H0: each image correct with probability
            ``chance``.
        alpha: significance level.
    """

    accuracy: float
    n: int
    correct: int
    chance: float
    p_value: float
    alpha: float

    @property
    def above(self) -> bool:
        """True when the accuracy is significantly above chance (p < alpha)."""
        return bool(self.p_value < self.alpha)

    @property
    def evidence(self) -> str:
        """The numbers, e.g. ``"41.2% of 2,000 vs chance 18.6%, binomial test p = 1e-90"``."""
        return (
            f"{self.accuracy:.1%} of {self.n:,} images vs chance {self.chance:.1%}, "
            f"one-sided binomial test p = {self.p_value:.2g}"
        )


def above_chance(accuracy: float, n: int, chance: float, alpha: float = 0.01) -> ChanceTest:
    """Test whether ``accuracy`` on ``n`` images is above ``chance`` (exact binomial test).

    ``scipy.stats.binomtest(k, n, chance, alternative="greater")`` with ``k = round(accuracy
    * n)`` correct images: the probability that a classifier right with probability
    ``chance`` per image gets ``k`` or more right. It treats images as independent draws.

    Raises:
        ValueError: accuracy or chance outside [0, 1] (chance strictly inside), ``n`` < 1,
            alpha not strictly between 0 and 1.
    """
    accuracy = number("accuracy", accuracy, 0.0, 1.0)
    chance = _check_level("chance", chance)
    alpha = _check_level("alpha", alpha)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise invalid("n", n, "a positive whole number of images")
    correct = int(round(accuracy * n))
    p = float(stats.binomtest(correct, int(n), chance, alternative="greater").pvalue)
    return ChanceTest(accuracy, int(n), correct, chance, p, alpha)
