"""Random search with Optuna, stored on disk so that it survives a kernel restart.

The tutorial's comparison question tunes each algorithm "using random search with
20 tuning trials" for "the best-observed performance after 100 epochs". This module
does that for our runs:

* a search space is a small dict; each entry becomes an Optuna distribution
  (:data:`KINDS`), and Optuna checks its bounds::

      space = {
          "lr": ("log", 1e-5, 1e-1),          # float, sampled on a log scale
          "momentum": ("float", 0.0, 0.99),   # float, uniform
          "width": ("int", 16, 64),           # int, uniform, both ends included
          "optimizer": ("cat", ["adam", "sgd"]),
      }

* a :class:`TuningTarget` names the budget tuned for, e.g. "validation accuracy at
  epoch 8": the objective reads that metric at that epoch from the run's history.
  Tuning for epoch 8 and for epoch 10 can pick different settings; that is the point
  of the tutorial's question.
* :func:`random_search` (any training function ``params -> history``) and
  :func:`tune_config` (a ``RunConfig`` through :func:`nbhelpers.experiment.run`) run
  the search with ``optuna.samplers.RandomSampler``; :func:`trials_frame` and
  :func:`plot_trials` show the result.

Storage and resuming
--------------------
By default a study lives in the SQLite file ``runs/optuna.db`` (URL
``sqlite:///runs/optuna.db``, relative to the working directory) under the study name
you give. Calling the same function again with the same name loads it
(``load_if_exists=True``), counts the trials already *complete* and only runs the
rest, so after a kernel restart or an interrupted cell the search continues up to the
requested total. A trial interrupted with Ctrl-C / "Interrupt kernel" is recorded as
failed and simply not counted. Each (re)start seeds the sampler from ``(seed, number of
trials so far)``, so a resumed search draws new settings and a rerun draws the same ones.

Any Optuna storage works in place of the URL (a database server, a
``JournalStorage``), which is how one study is shared between machines (see the README).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nbhelpers.data import SPLITS
from nbhelpers.plots import finish_axes, history_rows
from nbhelpers.records import default_runs_dir
from nbhelpers.stats import curves_from_history, raise_if_interrupted
from nbhelpers.validate import invalid, one_of, positive_int
from nbhelpers.validate import seed as valid_seed

__all__ = [
    "DEFAULT_STORAGE",
    "KINDS",
    "Objective",
    "RUN_METRICS",
    "TuningTarget",
    "distributions",
    "metric_at_epoch",
    "open_study",
    "plot_trials",
    "random_search",
    "sampler_seed",
    "sqlite_url",
    "trials_frame",
    "tune_config",
]

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_TRIALS = 20  # the tutorial's question: "random search with 20 tuning trials"
DIRECTIONS = ("maximize", "minimize")
#: the metrics a run's per-epoch history holds (nbhelpers.train.History): running_* every
#: epoch, {split}_loss / {split}_accuracy for each evaluated split
RUN_METRICS = ("running_loss", "running_accuracy") + tuple(
    f"{split}_{kind}" for split in SPLITS for kind in ("loss", "accuracy")
)
#: kind of a search-space entry -> the Optuna distribution its arguments make
KINDS: dict[str, Callable[..., optuna.distributions.BaseDistribution]] = {
    "log": functools.partial(FloatDistribution, log=True),
    "float": FloatDistribution,
    "int": IntDistribution,
    "cat": CategoricalDistribution,
}


# ---------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------
def distributions(space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The Optuna distribution of every entry of ``space`` (see :data:`KINDS`).

    Entries: ``("log", low, high)`` (float, log scale), ``("float", low, high)``,
    ``("int", low, high)`` (both ends included), ``("cat", [choice, ...])``.

    Raises:
        ValueError: empty space, unknown kind, or Optuna's own error for the entry's
            arguments (e.g. ``low > high``, ``low <= 0`` on a log scale, no choices, a
            missing bound); the message names the entry.
        TypeError: the space is not a dict.
    """
    if not isinstance(space, Mapping):
        raise TypeError(f"the search space must be a dict, got {type(space).__name__}")
    if not space:
        raise invalid("space", space, "at least one entry, e.g. {'lr': ('log', 1e-5, 1e-1)}")
    result = {}
    for name, entry in space.items():
        where = f"search space entry {name!r}"
        is_tuple = isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) > 0
        if not is_tuple or entry[0] not in tuple(KINDS):
            raise invalid(where, entry, f"a tuple of a kind ({', '.join(KINDS)}) and its arguments")
        try:
            result[name] = KINDS[entry[0]](*entry[1:])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where} = {entry!r}: {err}") from err
    return result


def _suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Draw one value per entry of ``space`` through Optuna's ``trial.suggest_*``.

    Returns:
        ``{name: value}`` in the order of ``space``.
    """
    params = {}
    for name, dist in distributions(space).items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:
            number = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
            params[name] = number(name, dist.low, dist.high, log=dist.log)
    return params


# ---------------------------------------------------------------------------
# the budget tuned for
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningTarget:
    """What a search optimises: ``metric`` after ``epoch`` (1-based).

    ``metric`` must be one a run records per epoch (:data:`RUN_METRICS`):
    ``running_loss``, ``running_accuracy``, or ``{split}_loss`` / ``{split}_accuracy``
    for split ``train``, ``valid`` or ``test``. ``direction`` is "maximize" or
    "minimize"; None picks "minimize" for a loss and "maximize" otherwise.

    Raises:
        ValueError: ``metric`` not one of :data:`RUN_METRICS` (the message lists them),
            ``epoch`` not a positive int, unknown ``direction``.
    """

    metric: str = "valid_accuracy"
    epoch: int = 10
    direction: str | None = None

    def __post_init__(self) -> None:
        one_of("metric", self.metric, RUN_METRICS)
        positive_int("epoch", self.epoch)
        default = "minimize" if "loss" in self.metric else "maximize"
        object.__setattr__(
            self, "direction", one_of("direction", self.direction or default, DIRECTIONS)
        )

    def label(self) -> str:
        """The quantity, e.g. "valid accuracy at epoch 8" (an axis label)."""
        return f"{self.metric.replace('_', ' ')} at epoch {self.epoch}"

    def describe(self) -> str:
        """The goal in plain words, e.g. "highest valid accuracy at epoch 8"."""
        return f"{'highest' if self.direction == 'maximize' else 'lowest'} {self.label()}"


def metric_at_epoch(result: Any, metric: str, epoch: int) -> float:
    """The value of ``metric`` after ``epoch`` (1-based) in a run's per-epoch history.

    Args:
        result: a ``RunRecord``, a ``History`` or a list of per-epoch dicts with an
            ``epoch`` key.

    Raises:
        ValueError: the history is empty, ``epoch`` is beyond the run's length, or the
            metric was not recorded at that epoch (the message lists the epochs where it was).
        TypeError: ``result`` has no per-epoch history.
    """
    rows = history_rows(result)
    if not rows:
        raise ValueError("the run's history is empty (no epoch finished)")
    last = max(int(row.get("epoch", i)) for i, row in enumerate(rows, start=1))
    if epoch > last:
        raise ValueError(
            f"epoch {epoch} is beyond this run's length ({last} epochs); "
            f"tune for an epoch <= {last} or train longer"
        )
    curve = curves_from_history(rows, metric)
    at = curve.loc[curve["epoch"] == epoch, "value"]
    if at.empty:
        epochs = curve["epoch"].tolist()
        raise ValueError(
            f"{metric!r} was not recorded at epoch {epoch}; it was recorded at epochs {epochs}"
        )
    return float(at.iloc[-1])


class Objective:
    """An Optuna objective ``trial -> float`` built from a training function.

    Calling it draws hyperparameters from ``space``, runs ``train_fn(params)`` and
    returns ``target.metric`` at ``target.epoch``. It stores the curve of the target
    metric (``user_attrs["curve"]``, list of ``[epoch, value]``) and the run record's
    path (``user_attrs["record_path"]``) on the trial. A run record with status
    "interrupted" (Ctrl-C inside :func:`nbhelpers.experiment.run`) fails the trial and stops.

    Raises:
        ValueError / TypeError: (at construction) a bad ``space`` (see :func:`distributions`).
    """

    def __init__(self, train_fn: Callable[[dict[str, Any]], Any], space, target: TuningTarget):
        distributions(space)  # a bad entry raises here, before the study starts
        self.train_fn, self.space, self.target = train_fn, dict(space), target

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        result = self.train_fn(_suggest(trial, self.space))
        raise_if_interrupted(result)
        value = metric_at_epoch(result, self.target.metric, self.target.epoch)
        curve = curves_from_history(history_rows(result), self.target.metric)
        trial.set_user_attr(
            "curve", [[int(e), v] for e, v in zip(curve["epoch"], curve["value"], strict=True)]
        )
        if getattr(result, "path", None) is not None:
            trial.set_user_attr("record_path", str(result.path))
        return value


# ---------------------------------------------------------------------------
# storage and studies
# ---------------------------------------------------------------------------
def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file, e.g. ``sqlite:////home/me/runs/optuna.db``."""
    return f"sqlite:///{Path(path).expanduser().absolute().as_posix()}"


def _storage(storage: str | optuna.storages.BaseStorage | None):
    """``storage`` for ``optuna.create_study``; creates the folder of an SQLite file.

    Only one missing folder level is created (or the runs folder): a deeper missing path
    is more likely a typo or an unmounted drive than a wish.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage  # None: in memory, gone with the process
    if not isinstance(storage, str) or "://" not in storage:
        raise invalid(
            "storage", storage, f"a URL like {DEFAULT_STORAGE!r}, an Optuna storage, None"
        )
    file = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else ""
    if file and file != ":memory:":
        folder = Path(file).parent
        if not folder.parent.is_dir() and folder.resolve() != default_runs_dir().resolve():
            raise FileNotFoundError(
                f"the folder {folder} of the study database {file} does not exist and neither "
                f"does its parent {folder.parent}; check the path, or create it first, e.g. "
                f"Path({str(folder)!r}).mkdir(parents=True)"
            )
        folder.mkdir(parents=True, exist_ok=True)
    return storage


def _without_password(url: str) -> str:
    """``url`` with the password of ``user:password@host`` hidden (for error messages)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


@contextmanager
def _storage_errors(storage: Any):
    """Re-raise a storage that Optuna cannot open (SQLAlchemy's errors, a missing database
    driver) as ValueError naming it: an unknown URL scheme, or an SQLite file that is damaged."""
    import sqlalchemy.exc

    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        cause = getattr(err, "orig", None) or str(err).splitlines()[0]
        if not isinstance(storage, str):
            raise ValueError(f"the Optuna storage {storage!r} cannot be opened: {cause}") from err
        file = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else ""
        if file and Path(file).is_file():
            raise ValueError(
                f"the study database {Path(file).absolute()} cannot be read ({cause}); it may "
                f"be damaged: move it aside (e.g. rename it to {Path(file).name}.damaged) to start "
                "new studies there, or pass another storage"
            ) from err
        valid = (
            f"a URL like {DEFAULT_STORAGE!r} or 'postgresql://user:password@host/db' (with its "
            f"database driver installed), an Optuna storage, or None; the error: {cause}"
        )
        raise invalid("storage", _without_password(storage), valid) from err


@contextmanager
def _optuna_verbosity(level: int):
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


def open_study(
    study_name: str,
    storage: str | optuna.storages.BaseStorage | None = DEFAULT_STORAGE,
    *,
    direction: str = "maximize",
    seed: int = 0,
) -> optuna.Study:
    """Create the study ``study_name`` in ``storage`` or load it if it exists.

    Args:
        study_name: name of the study inside the database, e.g. ``"adam-lr-epoch8"``.
        storage: database URL (default ``sqlite:///runs/optuna.db``; the folder is
            created if its parent exists), an Optuna storage object, or None for an
            in-memory study.
        direction: "maximize" or "minimize"; must match an existing study.
        seed: seed of the random sampler; it is combined with the number of trials the
            study already holds, so that a resumed study does not repeat its draws.

    Raises:
        ValueError: bad storage URL (also an unknown scheme or a missing database driver)
            or ``direction``, a damaged SQLite file (named), or the existing study
            optimises in the other direction.
        FileNotFoundError: an SQLite file whose folder is missing together with its
            parent (only one missing level is created, and the runs folder).
        FileExistsError: the SQLite file's folder is a file.
    """
    one_of("direction", direction, DIRECTIONS)
    with _storage_errors(storage):
        study = optuna.create_study(
            storage=_storage(storage), study_name=study_name, direction=direction,
            load_if_exists=True,
        )  # fmt: skip
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study_name!r} already exists and was made to {study.direction.name.lower()}; "
            f"it cannot {direction}. Use another study name."
        )
    so_far = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.RandomSampler(seed=sampler_seed(seed, so_far))
    return study


def sampler_seed(seed: int, trials_so_far: int = 0) -> int:
    """The seed :func:`open_study` gives Optuna's ``RandomSampler``.

    ``numpy.random.SeedSequence([seed, trials_so_far])``: a resumed study (``trials_so_far``
    > 0) draws new settings, a rerun draws the same ones. The sampler draws a ``("log", low,
    high)`` entry as ``exp(rng.uniform(log(low), log(high)))`` with
    ``rng = numpy.random.RandomState(sampler_seed(seed))``, one draw per entry and trial in
    the order of the space, so a hand-written loop with that ``rng`` draws the same values.

    Raises:
        ValueError: ``seed`` or ``trials_so_far`` not a non-negative int.
    """
    stream = np.random.SeedSequence(
        [valid_seed("seed", seed), valid_seed("trials_so_far", trials_so_far)]
    )
    return int(stream.generate_state(1)[0])


def random_search(
    train_fn: Callable[[dict[str, Any]], Any],
    space: Mapping[str, Sequence[Any]],
    target: TuningTarget,
    *,
    study_name: str,
    n_trials: int = DEFAULT_TRIALS,
    storage: str | optuna.storages.BaseStorage | None = DEFAULT_STORAGE,
    seed: int = 0,
    progress: bool = True,
) -> optuna.Study:
    """Random search: draws from ``space``, each trained by ``train_fn``, until
    ``study_name`` holds ``n_trials`` complete trials.

    ``train_fn(params)`` gets ``{name: value}`` and returns a run record or per-epoch
    history; the trial's value is ``target.metric`` at ``target.epoch`` (see
    :class:`Objective`). Trials complete from earlier calls (a restarted kernel) count;
    only the rest run. An exception in ``train_fn`` (including Ctrl-C) marks that trial
    failed and propagates; call again to resume. Best setting: ``study.best_params``.

    Args:
        study_name, storage, seed: see :func:`open_study`.
        n_trials: total number of complete trials wanted (default 20, the tutorial's).
        progress: show Optuna's progress bar.

    Raises:
        ValueError / TypeError: bad space or ``n_trials`` (before any training); see
            :func:`open_study`.
    """
    objective = Objective(train_fn, space, target)
    positive_int("n_trials", n_trials)
    with _optuna_verbosity(optuna.logging.WARNING):
        study = open_study(study_name, storage, direction=target.direction, seed=seed)
        study.set_user_attr("target", target.label())
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        todo = f"running {n_trials - done} more" if done < n_trials else "nothing to run"
        print(f"Study {study_name!r}: {done} of {n_trials} trials complete, {todo}.")
        if done < n_trials:
            study.optimize(objective, n_trials=n_trials - done, show_progress_bar=progress)
    return study


def tune_config(
    base_config: Any,
    space: Mapping[str, Sequence[Any]],
    target: TuningTarget | None = None,
    *,
    study_name: str,
    n_trials: int = DEFAULT_TRIALS,
    storage: str | optuna.storages.BaseStorage | None = DEFAULT_STORAGE,
    seed: int = 0,
    progress: bool = True,
    **run_kwargs: Any,
) -> optuna.Study:
    """Random search over fields of a ``RunConfig`` (e.g. ``lr``, ``optimizer``).

    Each trial runs ``run(dataclasses.replace(base_config, **params), progress=False,
    **run_kwargs)`` (``data=...``, ``runs_dir=...`` pass through); cached runs come back
    from disk. ``target`` defaults to the validation accuracy after the config's last
    epoch. Checked before any training: the space, that both ends of each range (and
    every choice) are valid values of that ``RunConfig`` field, and that
    ``target.epoch <= base_config.epochs``.

    Raises:
        ValueError: as above (the message names the bad entry, value or epoch).
    """
    from nbhelpers import experiment

    target = target or TuningTarget("valid_accuracy", epoch=int(base_config.epochs))
    for name, dist in distributions(space).items():
        for value in getattr(dist, "choices", None) or (dist.low, dist.high):
            try:
                dataclasses.replace(base_config, **{name: value})
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"search space entry {name!r} = {space[name]!r}: {value!r} is not a valid "
                    f"{name}: {err}"
                ) from err
    if target.epoch > int(base_config.epochs):
        raise ValueError(
            f"target epoch {target.epoch} is beyond the run length (epochs={base_config.epochs}); "
            "tune for an earlier epoch or raise epochs"
        )
    run_kwargs.setdefault("progress", False)

    def train_fn(params: dict[str, Any]) -> Any:
        return experiment.run(dataclasses.replace(base_config, **params), **run_kwargs)

    return random_search(
        train_fn, space, target, study_name=study_name, n_trials=n_trials, storage=storage,
        seed=seed, progress=progress,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# looking at the result
# ---------------------------------------------------------------------------
def trials_frame(
    study: optuna.Study, *, states: Sequence[TrialState] | None = None
) -> pd.DataFrame:
    """One row per trial: ``number, state, value``, one column per parameter,
    ``duration_s`` (seconds) and ``record_path``; sorted by trial number.

    Args:
        states: keep only trials in these states (default: all).
    """
    rows = [
        {"number": t.number, "state": t.state.name, "value": t.value, **t.params,
         "duration_s": t.duration.total_seconds() if t.duration is not None else math.nan,
         "record_path": t.user_attrs.get("record_path")}
        for t in study.get_trials(deepcopy=False, states=states)
    ]  # fmt: skip
    columns = None if rows else ["number", "state", "value", "duration_s", "record_path"]
    return pd.DataFrame(rows, columns=columns).sort_values("number", ignore_index=True)


def plot_trials(
    study: optuna.Study,
    param: str = "lr",
    *,
    hue: str | None = None,
    log_x: bool | None = None,
    ax=None,
):
    """Scatter the complete trials' values against one hyperparameter; best trial marked.

    Args:
        param: parameter on the x-axis (default "lr").
        hue: a categorical parameter to colour by (e.g. "optimizer").
        log_x: log x-axis; None: log when ``param`` was sampled on a log scale.
        ax: matplotlib Axes (default: a new figure).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: no complete trial, or ``param`` / ``hue`` not in the study.
    """
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trial to plot yet")
    frame = trials_frame(study, states=(TrialState.COMPLETE,))
    params = sorted({p for t in complete for p in t.params})
    for name in (param, hue):
        if name is not None and name not in params:
            raise ValueError(f"{name!r} is not a parameter of this study; it has {params}")
    if log_x is None:
        log_x = bool(getattr(complete[0].distributions.get(param), "log", False))
    fig, ax = plt.subplots(figsize=(7, 4)) if ax is None else (ax.figure, ax)
    for key, group in frame.groupby(hue, sort=True) if hue else [(None, frame)]:
        ax.scatter(
            group[param], group["value"], alpha=0.8, label=f"{hue} = {key}" if hue else "trial"
        )
    best = study.best_trial
    ax.scatter(
        [best.params[param]], [best.value], s=160, facecolors="none", edgecolors="red",
        linewidths=2, label=f"best (trial {best.number})",
    )  # fmt: skip
    if log_x:
        ax.set_xscale("log")
    ax.set_title(f"{study.study_name}: {len(complete)} complete trials")
    xlabel = param.replace("_", " ") + (" (log scale)" if log_x else "")
    finish_axes(ax, study.user_attrs.get("target", "objective value"), xlabel=xlabel)
    return fig
