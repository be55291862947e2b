"""Random search with Optuna, stored on disk so it survives restarts and runs in parallel.

The tutorial's comparison question tunes each algorithm "using random search with
20 tuning trials" for "the best-observed performance after 100 epochs". This module
does that for our runs:

* a search space is a small dict::

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
failed and simply not counted; one cut off by a killed kernel is marked failed by
Optuna's heartbeat after about two minutes.

Several workers
---------------
The same code runs in several processes at once: point them all at one storage URL
and one study name, e.g. in several terminals::

    python -m nbhelpers.search --storage sqlite:///runs/optuna.db --study lr-search \\
        --trials 20 --objective my_module:objective

or the same notebook cell in several notebooks. ``my_module.objective`` is an Optuna
objective ``trial -> float``, for example one built with :func:`make_objective` at
module level. For several machines use a database server they all reach, e.g.
``postgresql://user:password@host/optuna`` or ``mysql+pymysql://user:password@host/optuna``
(SQLite files on network drives lock badly). Every worker stops once the study holds
exactly the requested number of complete trials: before training, a trial checks
whether the complete trials plus the trials already running elsewhere (with smaller
trial numbers) reach the total; if so it is marked "pruned" without training and the
worker stops. Should a trial running elsewhere then fail, the total is one short:
run any worker again to top it up.

Trial ``k`` of a study always gets the same hyperparameters for a given seed, whichever
worker runs it and however often the study was resumed (the sampler is re-seeded from
``(seed, k)`` before each trial), so a resumed search never repeats earlier draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nbhelpers.stats import history_rows, raise_if_interrupted

__all__ = [
    "DEFAULT_STORAGE",
    "Objective",
    "RUN_METRICS",
    "TuningTarget",
    "config_train_fn",
    "count_trials",
    "main",
    "make_objective",
    "metric_at_epoch",
    "open_study",
    "plot_trials",
    "random_search",
    "run_study",
    "sqlite_url",
    "suggest",
    "trials_frame",
    "tune_config",
    "validate_space",
]

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_TRIALS = 20  # the tutorial's question: "random search with 20 tuning trials"
KINDS = ("log", "float", "int", "cat")
# the metrics a run's per-epoch history holds (nbhelpers.train.History: running_* every
# epoch, {split}_loss / {split}_accuracy for each split of experiment.EVAL_SPLITS)
_SPLITS = ("train", "valid", "test")
RUN_METRICS = ("running_loss", "running_accuracy") + tuple(
    f"{split}_{kind}" for split in _SPLITS for kind in ("loss", "accuracy")
)
_CAT_TYPES = (str, int, float, bool, type(None))


# ---------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------
def validate_space(space: Mapping[str, Sequence[Any]]) -> dict[str, tuple]:
    """Check a declarative search space and return it as ``{name: tuple}``.

    Entries: ``("log", low, high)`` (float, log scale, ``0 < low < high``),
    ``("float", low, high)`` (``low < high``), ``("int", low, high)`` (ints,
    ``low < high``, both ends included), ``("cat", [choice, ...])`` (non-empty,
    distinct choices of type str/int/float/bool/None).

    Raises:
        ValueError: empty space, unknown kind, wrong entry length, an empty range
            (``low >= high``), ``low <= 0`` on a log scale, bad choices; the message
            names the parameter.
        TypeError: the space is not a dict or a bound is not a number.
    """
    if not isinstance(space, Mapping):
        raise TypeError(f"the search space must be a dict, got {type(space).__name__}")
    if not space:
        raise ValueError(
            "the search space is empty; give at least one parameter, e.g. {'lr': ('log', 1e-5, 1e-1)}"
        )
    return {str(name): _check_entry(str(name), entry) for name, entry in space.items()}


def _check_entry(name: str, entry: Any) -> tuple:
    where = f"search space entry {name!r}"
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or not entry:
        raise ValueError(f"{where}: expected a tuple like ('log', 1e-5, 1e-1), got {entry!r}")
    kind = entry[0]
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; valid kinds are {KINDS}")
    if kind == "cat":
        if (
            len(entry) != 2
            or isinstance(entry[1], (str, bytes))
            or not isinstance(entry[1], Sequence)
        ):
            raise ValueError(f"{where}: expected ('cat', [choice, ...]), got {entry!r}")
        choices = tuple(entry[1])
        if not choices:
            raise ValueError(f"{where}: 'cat' needs at least one choice")
        bad = [c for c in choices if not isinstance(c, _CAT_TYPES)]
        if bad:
            raise ValueError(f"{where}: choices must be str, int, float, bool or None, got {bad!r}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"{where}: choices must be distinct, got {list(choices)}")
        return ("cat", choices)
    if len(entry) != 3:
        raise ValueError(f"{where}: expected ({kind!r}, low, high), got {entry!r}")
    low, high = entry[1], entry[2]
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float, np.number)):
            raise TypeError(f"{where}: bounds must be numbers, got {bound!r}")
        if not math.isfinite(float(bound)):
            raise ValueError(f"{where}: bounds must be finite, got {bound!r}")
    if kind == "int" and not all(float(b).is_integer() for b in (low, high)):
        raise ValueError(f"{where}: 'int' bounds must be whole numbers, got {low!r}, {high!r}")
    if low >= high:
        raise ValueError(f"{where}: empty range, low={low!r} must be smaller than high={high!r}")
    if kind == "log" and low <= 0:
        raise ValueError(f"{where}: a log scale needs low > 0, got low={low!r}")
    if kind == "int":
        return ("int", int(low), int(high))
    return (kind, float(low), float(high))


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Draw one value per parameter of ``space`` through ``trial.suggest_*``.

    Returns:
        ``{name: value}`` in the order of ``space``.
    """
    params = {}
    for name, entry in validate_space(space).items():
        kind = entry[0]
        if kind == "cat":
            params[name] = trial.suggest_categorical(name, list(entry[1]))
        elif kind == "int":
            params[name] = trial.suggest_int(name, entry[1], entry[2])
        else:
            params[name] = trial.suggest_float(name, entry[1], entry[2], log=kind == "log")
    return params


# ---------------------------------------------------------------------------
# the budget tuned for
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningTarget:
    """What a search optimises: ``metric`` after ``epoch`` (1-based).

    ``direction`` is "maximize" or "minimize"; None picks "minimize" for metric names
    containing "loss" and "maximize" otherwise.

    ``metric`` must be one a run records per epoch (:data:`RUN_METRICS`):
    ``running_loss``, ``running_accuracy``, or ``{split}_loss`` / ``{split}_accuracy``
    for split ``train``, ``valid`` or ``test``.

    Raises:
        ValueError: ``metric`` not one of :data:`RUN_METRICS` (the message lists them),
            ``epoch`` not a positive int, unknown ``direction``.
    """

    metric: str = "valid_accuracy"
    epoch: int = 10
    direction: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or self.metric not in RUN_METRICS:
            close = difflib.get_close_matches(str(self.metric), RUN_METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"metric {self.metric!r} is not recorded by a run{hint}; "
                f"valid metrics: {', '.join(RUN_METRICS)}"
            )
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 1:
            raise ValueError(
                f"epoch must be a positive int (1 = after the first epoch), got {self.epoch!r}"
            )
        direction = self.direction
        if direction is None:
            direction = "minimize" if "loss" in self.metric else "maximize"
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {self.direction!r}")
        object.__setattr__(self, "direction", direction)

    def label(self) -> str:
        """The quantity, e.g. "valid accuracy at epoch 8" (an axis label)."""
        return f"{self.metric.replace('_', ' ')} at epoch {self.epoch}"

    def describe(self) -> str:
        """The goal in plain words, e.g. "highest valid accuracy at epoch 8"."""
        best = "highest" if self.direction == "maximize" else "lowest"
        return f"{best} {self.label()}"


def metric_at_epoch(result: Any, metric: str, epoch: int) -> float:
    """The value of ``metric`` after ``epoch`` (1-based) in a run's per-epoch history.

    Args:
        result: a ``RunRecord``, a ``History`` or a list of per-epoch dicts with an
            ``epoch`` key.

    Raises:
        ValueError: ``epoch`` is beyond the run's length, the metric was not recorded
            at that epoch (the message lists the epochs where it was), or the history
            is empty.
        TypeError: ``result`` has no per-epoch history.
    """
    rows = history_rows(result)
    if rows is None:
        raise TypeError(
            f"expected a run record or a per-epoch history (list of dicts), got {type(result).__name__}"
        )
    epochs = [int(r.get("epoch", i)) for i, r in enumerate(rows, start=1)]
    if not epochs:
        raise ValueError("the run's history is empty (no epoch finished)")
    if epoch > max(epochs):
        raise ValueError(
            f"epoch {epoch} is beyond this run's length ({max(epochs)} epochs); "
            f"tune for an epoch <= {max(epochs)} or train longer"
        )
    found = [r for e, r in zip(epochs, rows, strict=True) if e == epoch and metric in r]
    if not found:
        with_metric = [e for e, r in zip(epochs, rows, strict=True) if metric in r]
        raise ValueError(
            f"{metric!r} was not recorded at epoch {epoch}; it was recorded at epochs {with_metric}"
        )
    return float(found[-1][metric])


# ---------------------------------------------------------------------------
# objective
# ---------------------------------------------------------------------------
class Objective:
    """An Optuna objective ``trial -> float`` built from a training function.

    Calling it draws hyperparameters from ``space``, runs ``train_fn(params)`` and
    returns ``target.metric`` at ``target.epoch``. It stores the curve of the target
    metric (``user_attrs["curve"]``, list of ``[epoch, value]``) and the run record's
    path (``user_attrs["record_path"]``) on the trial.
    """

    def __init__(
        self,
        train_fn: Callable[[dict[str, Any]], Any],
        space: Mapping[str, Sequence[Any]],
        target: TuningTarget,
    ) -> None:
        if not callable(train_fn):
            raise TypeError(f"train_fn must be callable (params -> run record), got {train_fn!r}")
        if not isinstance(target, TuningTarget):
            raise TypeError(f"target must be a TuningTarget, got {type(target).__name__}")
        self.train_fn = train_fn
        self.space = validate_space(space)
        self.target = target
        self.direction = target.direction

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        params = suggest(trial, self.space)
        result = self.train_fn(params)
        raise_if_interrupted(result)  # Ctrl-C inside experiment.run: fail the trial, stop
        value = metric_at_epoch(result, self.target.metric, self.target.epoch)
        rows = history_rows(result) or []
        curve = [
            [int(r.get("epoch", i)), float(r[self.target.metric])]
            for i, r in enumerate(rows, start=1)
            if self.target.metric in r
        ]
        trial.set_user_attr("curve", curve)
        path = getattr(result, "path", None)
        if path is not None:
            trial.set_user_attr("record_path", str(path))
        return value


def make_objective(
    train_fn: Callable[[dict[str, Any]], Any],
    space: Mapping[str, Sequence[Any]],
    target: TuningTarget,
) -> Objective:
    """An :class:`Objective` for ``train_fn`` (``params dict -> run record / history``).

    Raises:
        ValueError / TypeError: bad ``space`` (see :func:`validate_space`) or ``target``.
    """
    return Objective(train_fn, space, target)


# ---------------------------------------------------------------------------
# storage and studies
# ---------------------------------------------------------------------------
class _PerTrialRandomSampler(optuna.samplers.RandomSampler):
    """``RandomSampler`` re-seeded from ``(seed, trial.number)`` before each trial.

    Plain ``RandomSampler(seed=s)`` restarts its stream in every process, so a resumed
    study or a second worker would draw the same settings again.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.base_seed = int(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().before_trial(study, trial)
        state = np.random.SeedSequence([self.base_seed, trial.number]).generate_state(1)[0]
        self._rng.rng.seed(int(state))


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file, e.g. ``sqlite:////home/me/runs/optuna.db``."""
    return f"sqlite:///{Path(path).expanduser().absolute().as_posix()}"


def _make_db_folder(folder: Path, file: str) -> None:
    """Create the folder of an SQLite file if its parent exists (or it is the runs folder).

    A deeper missing path is more likely a typo or an unmounted drive than a wish.
    """
    if folder.is_dir():
        return
    if folder.exists():
        raise NotADirectoryError(f"{folder} is a file, not a folder; cannot store the study {file}")
    if not folder.parent.is_dir():
        from nbhelpers.records import default_runs_dir

        if folder.resolve() != default_runs_dir().resolve():
            raise FileNotFoundError(
                f"the folder {folder} of the study database {file} does not exist and neither "
                f"does its parent {folder.parent}; check the path, or create it first, e.g. "
                f"Path({str(folder)!r}).mkdir(parents=True)"
            )
    folder.mkdir(parents=True, exist_ok=True)


def _make_storage(storage: str | optuna.storages.BaseStorage | None, heartbeat_s: int | None):
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage  # None: in memory, gone with the process
    if not isinstance(storage, str) or "://" not in storage:
        raise ValueError(
            f"storage must be a database URL like {DEFAULT_STORAGE!r}, an Optuna storage or None, "
            f"got {storage!r}"
        )
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite:///"):
        file = storage[len("sqlite:///") :]
        if file and file != ":memory:":
            _make_db_folder(Path(file).parent, file)
        # wait (seconds) for a lock held by another worker instead of failing at once
        engine_kwargs["connect_args"] = {"timeout": 60}
    kwargs: dict[str, Any] = {}
    if heartbeat_s:
        kwargs = {"heartbeat_interval": int(heartbeat_s), "grace_period": 2 * int(heartbeat_s)}
    import sqlalchemy.exc

    # Workers starting together race to create the tables (IntegrityError on the schema
    # version row, or a locked SQLite file): wait a moment and try again.
    for attempt in range(6):
        try:
            with _quiet_experimental():
                return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == 5:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


@contextmanager
def _quiet_experimental():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_study(
    study_name: str,
    storage: str | optuna.storages.BaseStorage | None = DEFAULT_STORAGE,
    *,
    direction: str = "maximize",
    seed: int = 0,
    heartbeat_s: int | None = 60,
) -> optuna.Study:
    """Create the study ``study_name`` in ``storage`` or load it if it exists.

    Args:
        study_name: name of the study inside the database, e.g. ``"adam-lr-epoch8"``.
        storage: database URL (default ``sqlite:///runs/optuna.db``; the folder is
            created if its parent exists), an Optuna storage object, or None for an
            in-memory study.
        direction: "maximize" or "minimize"; must match an existing study.
        seed: seed of the random sampler (trial ``k`` draws from ``(seed, k)``).
        heartbeat_s: for database URLs, seconds between a running trial's heartbeats;
            a trial silent for twice that long (its process was killed) is marked
            failed. None turns the heartbeat off.

    Raises:
        ValueError: bad storage URL or ``direction``, or the existing study optimises
            in the other direction.
        FileNotFoundError: an SQLite file whose folder is missing together with its
            parent (only one missing level is created, and the runs folder).
        NotADirectoryError: the SQLite file's folder is a file.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if not isinstance(study_name, str) or not study_name:
        raise ValueError(f"study_name must be a non-empty string, got {study_name!r}")
    study = optuna.create_study(
        storage=_make_storage(storage, heartbeat_s),
        sampler=_PerTrialRandomSampler(seed),
        study_name=study_name,
        direction=direction,
        load_if_exists=True,
    )
    existing = study.direction.name.lower()
    if existing != direction:
        raise ValueError(
            f"study {study_name!r} already exists and was made to {existing}; "
            f"it cannot {direction}. Use another study name."
        )
    return study


def count_trials(study: optuna.Study, state: TrialState = TrialState.COMPLETE) -> int:
    """Number of trials of ``study`` in ``state`` (default: complete)."""
    return len(study.get_trials(deepcopy=False, states=(state,)))


@contextmanager
def _optuna_verbosity(level: int):
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


def _guarded(objective: Callable, n_trials: int) -> Callable:
    """Skip (prune) a trial when complete + earlier running trials already reach ``n_trials``."""

    def run_one(trial: optuna.Trial) -> float:
        study = trial.study
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        ahead = sum(1 for t in others if t.state == TrialState.COMPLETE or t.number < trial.number)
        if ahead >= n_trials:
            study.stop()
            raise optuna.TrialPruned(f"{n_trials} trials are already complete or running elsewhere")
        return objective(trial)

    return run_one


def run_study(
    objective: Callable[[optuna.Trial], float],
    *,
    study_name: str,
    n_trials: int = DEFAULT_TRIALS,
    storage: str | optuna.storages.BaseStorage | None = DEFAULT_STORAGE,
    seed: int = 0,
    direction: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    heartbeat_s: int | None = 60,
) -> optuna.Study:
    """Run ``objective`` until ``study_name`` holds ``n_trials`` complete trials.

    Trials complete from earlier calls (a restarted kernel) or from other workers on
    the same storage count; only the rest run. Each worker stops at exactly
    ``n_trials`` complete trials (``optuna.study.MaxTrialsCallback`` plus a check
    before each trial, see the module docstring). An exception in the objective
    (including Ctrl-C) marks that trial failed and propagates; call again to resume.

    Args:
        objective: ``trial -> float``; its ``direction`` attribute (an
            :class:`Objective` has one) is used when ``direction`` is None.
        study_name, storage, seed, heartbeat_s: see :func:`open_study`.
        n_trials: total number of complete trials wanted (default 20, the tutorial's).
        direction: "maximize"/"minimize"; default: the objective's, else "maximize".
        progress: show Optuna's progress bar.
        verbose: keep Optuna's per-trial log lines.

    Returns:
        The ``optuna.Study``.

    Raises:
        ValueError: ``n_trials`` not a positive int; see :func:`open_study`.
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    direction = direction or getattr(objective, "direction", None) or "maximize"
    level = optuna.logging.INFO if verbose else optuna.logging.WARNING
    with _optuna_verbosity(level):
        study = open_study(
            study_name, storage, direction=direction, seed=seed, heartbeat_s=heartbeat_s
        )
    target = getattr(objective, "target", None)
    if isinstance(target, TuningTarget) and "target" not in study.user_attrs:
        study.set_user_attr("target", target.label())
    done = count_trials(study)
    if done >= n_trials:
        print(
            f"Study {study_name!r}: {done} of {n_trials} trials already complete, nothing to run."
        )
        return study
    print(
        f"Study {study_name!r}: {done} of {n_trials} trials complete, running up to {n_trials - done} more."
    )
    with _optuna_verbosity(level):
        study.optimize(
            _guarded(objective, n_trials),
            n_trials=n_trials - done,
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))],
            show_progress_bar=progress,
        )
    done = count_trials(study)
    if done < n_trials:
        print(
            f"Study {study_name!r}: {done} of {n_trials} trials complete; the rest is running "
            "in other workers or failed. Run again to top it up."
        )
    return study


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
    """Random search: ``n_trials`` draws from ``space``, each trained by ``train_fn``.

    ``train_fn(params)`` gets ``{name: value}`` and returns a run record or per-epoch
    history; the trial's value is ``target.metric`` at ``target.epoch``. Resumes and
    runs in parallel as :func:`run_study`. Best setting: ``study.best_params``.

    Raises:
        ValueError / TypeError: bad space, target or ``n_trials`` (before any training).
    """
    objective = make_objective(train_fn, space, target)
    return run_study(
        objective,
        study_name=study_name,
        n_trials=n_trials,
        storage=storage,
        seed=seed,
        progress=progress,
    )


# ---------------------------------------------------------------------------
# wrappers over nbhelpers.experiment.run
# ---------------------------------------------------------------------------
def config_train_fn(base_config: Any, **run_kwargs: Any) -> Callable[[dict[str, Any]], Any]:
    """A training function ``params -> RunRecord`` over :func:`nbhelpers.experiment.run`.

    Each call runs ``run(dataclasses.replace(base_config, **params), progress=False,
    **run_kwargs)`` (``data=...``, ``runs_dir=...`` pass through).

    Raises:
        ValueError: (when called) a parameter name that is not a ``RunConfig`` field.
    """
    from nbhelpers import experiment

    fields = {f.name for f in dataclasses.fields(base_config)}
    run_kwargs.setdefault("progress", False)

    def train_fn(params: dict[str, Any]) -> Any:
        _check_fields(params, fields)
        return experiment.run(dataclasses.replace(base_config, **params), **run_kwargs)

    return train_fn


def _check_fields(names, fields) -> None:
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise ValueError(f"{unknown} are not RunConfig fields; valid names: {sorted(fields)}")


def _check_values(base_config: Any, space: Mapping[str, tuple]) -> None:
    """Both ends of each range (every choice of a 'cat') must be valid for its field."""
    for name, entry in space.items():
        values = entry[1] if entry[0] == "cat" else entry[1:]
        for value in values:
            try:
                dataclasses.replace(base_config, **{name: value})
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"search space entry {name!r} = {entry!r}: {value!r} is not a valid "
                    f"{name}: {err}"
                ) from err


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

    ``target`` defaults to the validation accuracy after the config's last epoch.
    Checked before any training: the space, that its names are ``RunConfig``
    fields, that both ends of each range (and every choice) are valid values of
    that field, and that ``target.epoch <= base_config.epochs``.

    Raises:
        ValueError: as above (the message names the bad parameter, range or epoch).
    """
    if target is None:
        target = TuningTarget("valid_accuracy", epoch=int(base_config.epochs))
    space = validate_space(space)
    _check_fields(space, {f.name for f in dataclasses.fields(base_config)})
    _check_values(base_config, space)
    if target.epoch > int(base_config.epochs):
        raise ValueError(
            f"target epoch {target.epoch} is beyond the run length (epochs={base_config.epochs}); "
            "tune for an earlier epoch or raise epochs"
        )
    train_fn = config_train_fn(base_config, **run_kwargs)
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
    rows = []
    for t in study.get_trials(deepcopy=False, states=states):
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        row = {"number": t.number, "state": t.state.name, "value": t.value}
        row.update(t.params)
        row.update({"duration_s": duration, "record_path": t.user_attrs.get("record_path")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "value", "duration_s", "record_path"])
    return frame.sort_values("number", ignore_index=True)


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
    for name in (param, hue):
        if name is not None and name not in frame.columns:
            params = sorted({p for t in complete for p in t.params})
            raise ValueError(f"{name!r} is not a parameter of this study; it has {params}")
    if log_x is None:
        dist = complete[0].distributions.get(param)
        log_x = bool(getattr(dist, "log", False))
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    groups = frame.groupby(hue, sort=True) if hue else [(None, frame)]
    for key, group in groups:
        label = f"{hue} = {key}" if hue else "trial"
        ax.scatter(group[param], group["value"], alpha=0.8, label=label)
    best = study.best_trial
    ax.scatter(
        [best.params[param]], [best.value], s=160, facecolors="none", edgecolors="red",
        linewidths=2, label=f"best (trial {best.number})",
    )  # fmt: skip
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(param.replace("_", " ") + (" (log scale)" if log_x else ""))
    ax.set_ylabel(study.user_attrs.get("target", "objective value"))
    ax.set_title(f"{study.study_name}: {len(complete)} complete trials")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def _load_objective(spec: str) -> Callable:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--objective must look like module:function, got {spec!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nbhelpers.search``: one worker of a shared study (see module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m nbhelpers.search",
        description="Run one worker of a random search stored in a shared database.",
    )
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"database URL (default {DEFAULT_STORAGE})"
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--trials", type=int, default=DEFAULT_TRIALS, help="total complete trials wanted"
    )
    parser.add_argument(
        "--objective", required=True, help="module:function, an Optuna objective trial -> float"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--direction", choices=("maximize", "minimize"), default=None)
    parser.add_argument(
        "--heartbeat-s", type=int, default=60, help="seconds between heartbeats (0: off)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    objective = _load_objective(args.objective)
    study = run_study(
        objective, study_name=args.study, n_trials=args.trials, storage=args.storage,
        seed=args.seed, direction=args.direction, progress=not args.no_progress,
        heartbeat_s=args.heartbeat_s or None,
    )  # fmt: skip
    print(f"Study {args.study!r}: {count_trials(study)} complete trials.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
