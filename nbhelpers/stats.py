"""Honest comparisons: several seeds, confidence intervals, significance tests, band plots.

One training run is one draw from a random process (initialisation, batch order,
augmentation all depend on the seed). The tutorial's advice: "average all results
across multiple seeds (e.g. reruns) to show whether they are significant". This
module does exactly that, with well-kept tools from :mod:`scipy.stats`:

* :func:`run_seeds` runs one configuration once per seed and collects the per-epoch
  curves in a long ("tidy") :class:`pandas.DataFrame` with columns
  ``seed, epoch, metric, value``.
* :func:`summarize` gives per epoch the mean over seeds and a confidence interval of
  that mean (Student-t interval by default, bootstrap on request).
* :func:`compare` asks whether two training algorithms differ at one budget (e.g. the
  test accuracy after epoch 10) with Welch's t-test and a permutation test, and
  returns a :class:`Comparison` with the p-values, the difference of means, its
  confidence interval and a one-sentence verdict that does not claim more than the
  data show.
* :func:`plot_curves` draws mean curves with confidence bands.
* :func:`run_config_seeds` and :func:`compare_configs` are thin wrappers over
  :func:`nbhelpers.experiment.run`.

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

__all__ = [
    "Comparison",
    "compare",
    "compare_at_epoch",
    "compare_configs",
    "curves_from_history",
    "history_rows",
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
def history_rows(result: Any) -> list[dict] | None:
    """The per-epoch history (list of dicts) inside a run result, or None if there is none.

    Accepts a ``RunRecord`` (``.history``), a ``train.History`` (``.epochs``), a record
    loaded as a dict (``["history"]``) or the list of per-epoch dicts itself.
    """
    if hasattr(result, "history"):  # RunRecord
        result = result.history
    if isinstance(getattr(result, "epochs", None), list):  # train.History
        result = result.epochs
    if isinstance(result, Mapping) and "history" in result:  # a record loaded as a dict
        result = result["history"]
    if isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        rows = list(result)
        if all(isinstance(r, Mapping) for r in rows):
            return rows  # may be empty: a run that finished no epoch
    return None


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
    rows = []
    for position, row in enumerate(history, start=1):
        epoch = int(row.get("epoch", position))
        for key, value in row.items():
            if key == "epoch" or (wanted is not None and key not in wanted):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                continue
            rows.append({"epoch": epoch, "metric": key, "value": float(value)})
    frame = pd.DataFrame(rows, columns=["epoch", "metric", "value"])
    if wanted is not None:
        missing = sorted(set(wanted) - set(frame["metric"]))
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
        ValueError: no seeds, repeated seeds, a seed that is not a non-negative int
            (the message names it), or ``fn`` returned an empty curve.
        TypeError: ``seeds`` is not an iterable of ints (e.g. ``seeds=3``: use
            ``range(3)``), or ``fn`` returned something that is neither a curve nor a
            history.
    """
    seeds = _check_seeds(seeds)
    if not seeds:
        raise ValueError("run_seeds needs at least one seed, got none")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    frames = []
    for seed in _maybe_tqdm(seeds, progress, desc="seeds"):
        frame = _curve_frame(fn(seed), metric, seed)
        frame.insert(0, "seed", seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a list of ints like [0, 1, 2] or range(3), got {seeds!r}")
    seeds = list(seeds)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(
                f"seed {seed!r} is invalid; seeds must be non-negative ints, got {seeds!r}"
            )
    return [int(s) for s in seeds]


def _check_names(names: Any) -> tuple[str, str]:
    if (
        isinstance(names, (str, bytes))
        or not isinstance(names, Sequence)
        or len(names) != 2
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(
            f"names must be a pair of strings like ('Adam', 'SGD'), one per algorithm, "
            f"got {names!r}"
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
    history = history_rows(result)
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
    return pd.DataFrame(
        {"epoch": range(1, len(values) + 1), "metric": name, "value": values},
    )


def _maybe_tqdm(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


# ---------------------------------------------------------------------------
# confidence intervals
# ---------------------------------------------------------------------------
def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the *mean* of ``values``.

    ``scipy.stats.t.interval(confidence, df=n-1, loc=mean, scale=sem)`` with
    ``sem = std(ddof=1) / sqrt(n)``: it describes how precisely the mean over seeds
    is known, not how spread out single runs are. It assumes the values are roughly
    normal; with 3-5 seeds it is wide, which is honest.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 values (no spread to estimate);
        ``(mean, mean)`` if all values are equal.

    Raises:
        ValueError: ``confidence`` not strictly between 0 and 1.
    """
    _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    n = x.size
    if n < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    sem = float(x.std(ddof=1) / math.sqrt(n))
    if sem == 0.0:
        return (mean, mean)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return (float(low), float(high))


def _bootstrap_interval(values, confidence: float, seed: int, method: str) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        method=method,
        **_rng_kwarg(stats.bootstrap, seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _rng_kwarg(func, seed: int) -> dict:
    """``rng=seed`` on SciPy >= 1.15, ``random_state=seed`` before."""
    params = inspect.signature(func).parameters
    return {"rng": seed} if "rng" in params else {"random_state": seed}


def _check_confidence(confidence: float) -> None:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")


def summarize(
    curves: pd.DataFrame,
    metric: str | None = None,
    *,
    confidence: float = 0.95,
    method: str = "t",
    bootstrap_method: str = "percentile",
    seed: int = 0,
) -> pd.DataFrame:
    """Mean over seeds and a confidence interval of the mean, per epoch.

    Method "t" (default): Student-t interval on the mean, see :func:`t_interval`.
    Method "bootstrap": ``scipy.stats.bootstrap`` of the mean (``bootstrap_method``
    "percentile" or "BCa", seeded by ``seed``); with only a handful of seeds a
    bootstrap interval is too narrow, so prefer "t" there.

    Args:
        curves: long frame from :func:`run_seeds` (columns seed, epoch, metric, value).
        metric: which metric to summarise; may be None if the frame holds only one.
        confidence: confidence level, e.g. 0.95.

    Returns:
        DataFrame with one row per epoch: ``epoch, n`` (seeds), ``mean``, ``std``
        (ddof=1, spread of single runs), ``ci_low``, ``ci_high`` (interval of the mean;
        NaN when n < 2).

    Raises:
        ValueError: unknown ``method``, bad ``confidence``, or ``metric`` missing /
            ambiguous.
    """
    _check_confidence(confidence)
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    data = _select_metric(curves, metric)
    rows = []
    for epoch, group in data.groupby("epoch", sort=True):
        values = group["value"].to_numpy(dtype=float)
        if method == "t":
            low, high = t_interval(values, confidence)
        else:
            low, high = _bootstrap_interval(values, confidence, seed, bootstrap_method)
        rows.append(
            {
                "epoch": int(epoch),
                "n": int(values.size),
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows, columns=["epoch", "n", "mean", "std", "ci_low", "ci_high"])


def _select_metric(curves: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    missing = set(COLUMNS) - set(curves.columns)
    if missing:
        raise ValueError(
            f"expected a long frame with columns {COLUMNS} (from run_seeds); missing {sorted(missing)}"
        )
    names = list(pd.unique(curves["metric"]))
    if metric is None:
        if len(names) != 1:
            raise ValueError(f"the frame holds several metrics {names}; pass metric=one of them")
        metric = names[0]
    if metric not in names:
        raise ValueError(f"metric {metric!r} not in the frame; it has {names}")
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
@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`: are A and B different at this budget?

    ``difference`` is ``mean_a - mean_b``; ``ci_low``/``ci_high`` its Welch
    confidence interval. ``p_value`` is Welch's two-sided p-value,
    ``p_permutation`` the permutation test's. ``verdict`` is one plain sentence.
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
    verdict: str

    @property
    def significant(self) -> bool:
        """True only when both tests give p < alpha."""
        return bool(self.p_value < self.alpha and self.p_permutation < self.alpha)

    def __str__(self) -> str:
        return self.verdict

    def _repr_markdown_(self) -> str:
        level = round(100 * self.confidence)
        return (
            f"| | {self.name_a} | {self.name_b} |\n|---|---|---|\n"
            f"| seeds | {self.n_a} | {self.n_b} |\n"
            f"| mean {self.label} | {self.mean_a:.4g} | {self.mean_b:.4g} |\n\n"
            f"Difference {self.name_a} - {self.name_b}: {self.difference:+.4g} "
            f"({level}% CI {self.ci_low:+.4g} to {self.ci_high:+.4g}); "
            f"Welch p = {self.p_value:.3g}, permutation p = {self.p_permutation:.3g}.\n\n"
            f"**{self.verdict}**"
        )


def _as_sample(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size < 2:
        raise ValueError(
            f"{name} has {x.size} seed(s); a significance test needs at least 2 per "
            "algorithm to estimate the seed-to-seed spread (3-5 are better)"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values: {x.tolist()}")
    return x


def welch_interval(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """Welch confidence interval of ``mean(a) - mean(b)`` (unequal variances).

    Degrees of freedom from the Welch-Satterthwaite equation; the same interval as
    ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval()``.
    Returns ``(d, d)`` when both samples have zero spread.

    Raises:
        ValueError: fewer than 2 values in ``a`` or ``b`` (no spread to estimate; the
            message names the count), non-finite values, bad ``confidence``.
    """
    _check_confidence(confidence)
    a = _as_sample(a, "a")
    b = _as_sample(b, "b")
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return (diff, diff)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    low, high = stats.t.interval(confidence, df=dof, loc=diff, scale=se)
    return (float(low), float(high))


def min_permutation_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value an exact permutation test of two samples can give:
    ``2 / C(n_a + n_b, n_a)`` (e.g. 1/3 for 2 vs 2 seeds, 0.1 for 3 vs 3, 0.029 for 4 vs 4)."""
    return min(1.0, 2.0 / math.comb(int(n_a) + int(n_b), int(n_a)))


def _permutation_p(a, b, n_resamples: int, seed: int) -> float:
    def diff_of_means(x, y, axis):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    res = stats.permutation_test(
        (a, b),
        diff_of_means,
        permutation_type="independent",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        **_rng_kwarg(stats.permutation_test, seed),
    )
    return float(min(1.0, res.pvalue))


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("A", "B"),
    label: str = "metric",
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 9999,
    seed: int = 0,
    higher_is_better: bool = True,
) -> Comparison:
    """Do two training algorithms differ at one budget? Welch's t-test + permutation test.

    ``a`` and ``b`` hold one value per seed, e.g. the test accuracy after epoch 10 of
    algorithm A (with its tuned hyperparameters) and of B. Two tests, both two-sided:

    * Welch's t-test, ``scipy.stats.ttest_ind(a, b, equal_var=False)``: does not assume
      equal spreads; assumes roughly normal values.
    * A permutation test, ``scipy.stats.permutation_test`` on the difference of means
      (exact when there are fewer than ``n_resamples`` distinct splits): no normality
      assumption, but with few seeds it cannot reach small p-values at all (2 vs 2
      seeds: never below 1/3).

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
        n_resamples: permutations for the permutation test.
        seed: seed of the permutation test.
        higher_is_better: which direction is better (accuracy: True, loss: False);
            decides who the verdict names as better.

    Returns:
        :class:`Comparison`.

    Raises:
        ValueError: fewer than 2 values in ``a`` or ``b`` (the message names the count),
            non-finite values, bad ``confidence``/``alpha``, ``names`` not a pair of
            strings.
    """
    name_a, name_b = _check_names(names)
    xa = _as_sample(a, name_a)
    xb = _as_sample(b, name_b)
    _check_confidence(confidence)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha!r}")
    diff = float(xa.mean() - xb.mean())
    if xa.var() == 0.0 and xb.var() == 0.0:
        p_welch = 1.0 if diff == 0.0 else 0.0  # no spread: t undefined, the data are exact
    else:
        p_welch = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    p_perm = _permutation_p(xa, xb, n_resamples, seed)
    low, high = welch_interval(xa, xb, confidence)
    verdict = _verdict(
        name_a, name_b, label, xa.size, xb.size, diff, (low, high), confidence,
        p_welch, p_perm, alpha, higher_is_better,
    )  # fmt: skip
    return Comparison(
        name_a=name_a,
        name_b=name_b,
        label=label,
        n_a=int(xa.size),
        n_b=int(xb.size),
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        difference=diff,
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
        p_value=p_welch,
        p_permutation=p_perm,
        alpha=float(alpha),
        verdict=verdict,
    )


def _verdict(
    name_a, name_b, label, n_a, n_b, diff, ci, confidence, p_welch, p_perm, alpha, higher_is_better
) -> str:
    seeds = f"{n_a} seeds each" if n_a == n_b else f"{n_a} and {n_b} seeds"
    level = round(100 * confidence)
    numbers = (
        f"difference of means {diff:+.3g}, {level}% CI {ci[0]:+.3g} to {ci[1]:+.3g}, "
        f"Welch p = {p_welch:.2g}, permutation p = {p_perm:.2g}"
    )
    if p_welch < alpha and p_perm < alpha:
        a_wins = diff > 0 if higher_is_better else diff < 0
        winner, loser = (name_a, name_b) if a_wins else (name_b, name_a)
        return (
            f"With {seeds}, {winner} did better than {loser} on {label} ({numbers}), "
            "a difference unlikely to be seed noise alone, shown for these runs at this "
            "budget only."
        )
    if p_welch < alpha or p_perm < alpha:
        floor = min_permutation_p(n_a, n_b)
        why = (
            f"the permutation test cannot go below p = {floor:.2g} with this few seeds"
            if floor >= alpha
            else "the two tests disagree"
        )
        return (
            f"With {seeds}, {why} ({label}: {numbers}), so the difference is a hint, "
            "not a result: run more seeds before preferring either."
        )
    return (
        f"With {seeds}, the data do not show that {name_a} and {name_b} differ on {label} "
        f"({numbers}); this is not proof that they are equal, only that the difference "
        "is within seed-to-seed noise."
    )


def compare_at_epoch(
    curves_a: pd.DataFrame,
    curves_b: pd.DataFrame,
    epoch: int,
    metric: str | None = None,
    **kwargs: Any,
) -> Comparison:
    """:func:`compare` the per-seed values after ``epoch`` of two :func:`run_seeds` frames.

    ``label`` defaults to ``"<metric> at epoch <epoch>"``; other keyword arguments go
    to :func:`compare`.

    Raises:
        ValueError: as :func:`compare` and :func:`values_at_epoch`.
    """
    a = values_at_epoch(curves_a, epoch, metric)
    b = values_at_epoch(curves_b, epoch, metric)
    name = metric or str(_select_metric(curves_a, None)["metric"].iloc[0])
    kwargs.setdefault("label", f"{name.replace('_', ' ')} at epoch {epoch}")
    return compare(a, b, **kwargs)


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------
def plot_curves(
    curves: pd.DataFrame | Mapping[str, pd.DataFrame],
    metric: str | None = None,
    *,
    confidence: float = 0.95,
    method: str = "t",
    show_seeds: bool = False,
    mark_epoch: int | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    ax=None,
):
    """Mean curve over seeds with a confidence band, one per algorithm.

    Args:
        curves: one :func:`run_seeds` frame, or ``{"A": frame_a, "B": frame_b}``.
        metric: the metric to draw (may be None if each frame holds only one).
        confidence, method: the band, as in :func:`summarize`.
        show_seeds: also draw each seed's curve thinly.
        mark_epoch: draw a dashed vertical line at this epoch (e.g. the budget compared).
        ylabel: y-axis label (default: the metric name).
        ax: matplotlib Axes to draw into (default: a new figure).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    groups = {"": curves} if isinstance(curves, pd.DataFrame) else dict(curves)
    if not groups:
        raise ValueError("plot_curves needs at least one frame of curves")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    level = round(100 * confidence)
    name = metric
    first = True
    for label, frame in groups.items():
        data = _select_metric(frame, metric)
        name = name or str(data["metric"].iloc[0])
        summary = summarize(frame, name, confidence=confidence, method=method)
        n = int(summary["n"].max())
        tag = f"{label} (" if label else "mean ("
        (line,) = ax.plot(summary["epoch"], summary["mean"], marker=".", label=f"{tag}{n} seeds)")
        band_label = f"shaded: {level}% CI of the mean" if first else None
        first = False
        ax.fill_between(
            summary["epoch"], summary["ci_low"], summary["ci_high"], color=line.get_color(),
            alpha=0.2, label=band_label,
        )  # fmt: skip
        if show_seeds:
            for _, one in data.groupby("seed"):
                ax.plot(one["epoch"], one["value"], color=line.get_color(), lw=0.6, alpha=0.4)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="grey", ls="--", lw=1, label=f"epoch {mark_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or (name or "metric").replace("_", " "))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
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


def compare_configs(
    config_a: Any,
    config_b: Any,
    *,
    epoch: int,
    metric: str = "test_accuracy",
    seeds: Iterable[int] = (0, 1, 2),
    names: tuple[str, str] = ("A", "B"),
    **run_kwargs: Any,
) -> tuple[Comparison, pd.DataFrame, pd.DataFrame]:
    """Run two configurations over the same seeds and compare them at ``epoch``.

    Returns:
        ``(comparison, curves_a, curves_b)``.

    Raises:
        ValueError / TypeError: bad ``names`` or ``seeds`` (before any training), and
            as :func:`compare_at_epoch`.
    """
    _check_names(names)
    seeds = _check_seeds(seeds)
    curves_a = run_config_seeds(config_a, seeds, metric=metric, **run_kwargs)
    curves_b = run_config_seeds(config_b, seeds, metric=metric, **run_kwargs)
    result = compare_at_epoch(curves_a, curves_b, epoch, metric, names=names)
    return result, curves_a, curves_b
