"""Tests of nbhelpers.search: search spaces, budgets, storage and resuming (no training)."""

import math

import matplotlib

matplotlib.use("Agg")

import optuna
import pytest
from optuna.trial import TrialState

from nbhelpers import search

SPACE = {
    "lr": ("log", 1e-5, 1e-1),
    "momentum": ("float", 0.0, 0.99),
    "opt": ("cat", ["adam", "sgd"]),
}
TARGET = search.TuningTarget("valid_accuracy", epoch=3)


def fake_train(params, epochs=4):
    """Pretend run: best at lr = 10**-2.5, accuracy grows with the epoch."""
    peak = 1 - abs(math.log10(params["lr"]) + 2.5) / 5
    return [
        {"epoch": e, "valid_accuracy": peak - 0.05 * (epochs - e)} for e in range(1, epochs + 1)
    ]


def complete_trials(study):
    return study.get_trials(states=(TrialState.COMPLETE,))


@pytest.mark.parametrize(
    ("space", "message"),
    [  # Optuna's own errors, prefixed with the entry
        ({"lr": ("log", 0.1, 0.01)}, "'lr'.*`low <= high` must hold"),
        ({"lr": ("log", 0.0, 0.1)}, "'lr'.*`low > 0` must hold for `log=True`"),
        ({"momentum": ("float", 0.9, 0.1)}, "'momentum'.*`low <= high`"),
        ({"width": ("int", 32, 16)}, "'width'.*`low <= high`"),
        ({"opt": ("cat", [])}, "'opt'.*one or more elements"),
        ({"lr": ("log", 1e-3)}, "'lr'.*missing 1 required positional argument: 'high'"),
        # ours: what Optuna cannot see
        ({"lr": ("uniform", 0.0, 1.0)}, "'lr'.*kind \\(log, float, int, cat\\)"),
        ({"lr": 1e-3}, "'lr'=0.001 is invalid"),
        ({}, "at least one entry"),
    ],
)
def test_bad_spaces_raise(space, message):
    with pytest.raises(ValueError, match=message):
        search.distributions(space)
    with pytest.raises(ValueError, match=message):  # before any study or training
        search.Objective(fake_train, space, TARGET)


def test_space_and_target():
    dists = search.distributions({"width": ("int", 16, 64), "lr": ("log", 1e-4, 1e-2)})
    assert dists == {
        "width": optuna.distributions.IntDistribution(16, 64),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    with pytest.raises(TypeError, match="dict"):
        search.distributions([("lr", "log", 1e-5, 1e-1)])
    assert search.TuningTarget("valid_loss", 2).direction == "minimize"
    assert TARGET.direction == "maximize"
    assert TARGET.describe() == "highest valid accuracy at epoch 3"
    with pytest.raises(ValueError, match="epoch"):
        search.TuningTarget("valid_accuracy", 0)
    with pytest.raises(ValueError, match="direction"):
        search.TuningTarget("valid_accuracy", 2, "up")


def test_metric_at_epoch():
    history = fake_train({"lr": 10**-2.5})
    assert search.metric_at_epoch(history, "valid_accuracy", 3) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="epoch 5 is beyond this run's length \\(4 epochs\\)"):
        search.metric_at_epoch(history, "valid_accuracy", 5)
    sparse = [
        {"epoch": 1, "train_loss": 2.0},
        {"epoch": 2, "train_loss": 1.0, "valid_accuracy": 0.5},
    ]
    with pytest.raises(ValueError, match=r"recorded at epochs \[2\]"):
        search.metric_at_epoch(sparse, "valid_accuracy", 1)
    with pytest.raises(TypeError):
        search.metric_at_epoch(0.5, "valid_accuracy", 1)


def test_random_search_in_memory_reads_the_budget_epoch():
    study = search.random_search(
        fake_train, SPACE, TARGET, study_name="mem", storage=None, n_trials=6, progress=False
    )
    trials = complete_trials(study)
    assert len(trials) == 6
    for t in trials:
        assert t.value == pytest.approx(fake_train(t.params)[2]["valid_accuracy"])  # epoch 3
        assert [e for e, _ in t.user_attrs["curve"]] == [1, 2, 3, 4]
    frame = search.trials_frame(study)
    assert list(frame["number"]) == list(range(6))
    assert {"lr", "momentum", "opt", "value", "state", "duration_s"} <= set(frame.columns)
    fig = search.plot_trials(study, "lr", hue="opt")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_ylabel() == "valid accuracy at epoch 3"
    assert "lr" in ax.get_xlabel()
    with pytest.raises(ValueError, match="'width' is not a parameter"):
        search.plot_trials(study, "width")


def test_target_epoch_beyond_run_raises():
    late = search.TuningTarget("valid_accuracy", epoch=9)
    with pytest.raises(ValueError, match="epoch 9 is beyond"):
        search.random_search(
            fake_train, SPACE, late, study_name="late", storage=None, n_trials=2, progress=False
        )


def test_same_seed_same_draws_per_trial_number():
    runs = [
        search.random_search(
            fake_train,
            SPACE,
            TARGET,
            study_name=f"s{i}",
            storage=None,
            n_trials=4,
            seed=7,
            progress=False,
        )  # fmt: skip
        for i in range(2)
    ]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]


def test_interrupted_study_resumes_to_total(tmp_path):
    storage = search.sqlite_url(tmp_path / "runs" / "optuna.db")
    calls = []

    def flaky(params):
        calls.append(params)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the learner interrupts the kernel during trial 4
        return fake_train(params)

    with pytest.raises(KeyboardInterrupt):
        search.random_search(
            flaky, SPACE, TARGET, study_name="lr", storage=storage, n_trials=6, progress=False
        )
    assert (tmp_path / "runs" / "optuna.db").is_file()

    # "kernel restart": a fresh study object from the same file
    first = optuna.load_study(study_name="lr", storage=storage)
    assert len(complete_trials(first)) == 3
    assert len(first.get_trials(states=(TrialState.FAIL,))) == 1
    kept = {t.number: t.params for t in complete_trials(first)}

    resumed = search.random_search(
        fake_train, SPACE, TARGET, study_name="lr", storage=storage, n_trials=6, progress=False
    )
    done = complete_trials(resumed)
    assert len(done) == 6
    assert {t.number: t.params for t in done if t.number in kept} == kept
    lrs = [t.params["lr"] for t in done]
    assert len(set(lrs)) == 6  # the resumed sampler did not repeat earlier draws

    again = search.random_search(
        fake_train, SPACE, TARGET, study_name="lr", storage=storage, n_trials=6, progress=False
    )
    assert len(again.trials) == len(resumed.trials)  # already complete: nothing ran

    with pytest.raises(ValueError, match="maximize"):
        search.open_study("lr", storage, direction="minimize")


def test_interrupted_run_record_fails_the_trial():
    class Interrupted:  # what experiment.run returns after Ctrl-C
        status = "interrupted"
        name = "r"
        history = [{"epoch": 1, "valid_accuracy": 0.3}]

    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(KeyboardInterrupt):
        search.random_search(
            lambda p: Interrupted(), SPACE, TARGET, study_name="intr", storage=storage,
            n_trials=3, progress=False,
        )  # fmt: skip
    study = search.open_study("intr", storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_target_metric_is_checked_at_construction():
    with pytest.raises(
        ValueError, match="metric='valid_acc' is invalid.*'valid_accuracy'.*'test_loss'"
    ):
        search.TuningTarget("valid_acc", epoch=3)
    for epoch in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="epoch=.* is invalid; valid: an integer >= 1"):
            search.TuningTarget("valid_accuracy", epoch)
    from nbhelpers.experiment import EVAL_SPLITS

    for split in EVAL_SPLITS:  # every metric a run records is accepted
        assert search.TuningTarget(f"{split}_loss", 1).direction == "minimize"
        assert search.TuningTarget(f"{split}_accuracy", 1).direction == "maximize"
    assert search.TuningTarget("running_loss", 1).direction == "minimize"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": ("float", -1, -0.5)}, r"'lr' = \('float', -1, -0.5\): -1.0 is not a valid lr"),
        ({"momentum": ("float", 0.0, 1.0)}, "'momentum'.*1.0 is not a valid momentum"),
        ({"optimizer": ("cat", ["adam", "rmsprop"])}, "'rmsprop' is not a valid optimizer"),
    ],
)
def test_tune_config_checks_range_values_before_the_study(tmp_path, monkeypatch, space, message):
    from nbhelpers import experiment

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(experiment, "run", no_training)
    storage = search.sqlite_url(tmp_path / "optuna.db")
    base = experiment.RunConfig(epochs=2)
    with pytest.raises(ValueError, match=message):
        search.tune_config(base, space, study_name="bad", storage=storage, progress=False)
    assert not (tmp_path / "optuna.db").exists()  # no study was started


def test_open_study_creates_only_one_missing_folder(tmp_path, monkeypatch):
    deep = tmp_path / "nonexistent" / "dir" / "x.db"
    with pytest.raises(FileNotFoundError, match="nonexistent.*create it"):
        search.open_study("s", search.sqlite_url(deep))
    assert not (tmp_path / "nonexistent").exists()
    search.open_study("s", search.sqlite_url(tmp_path / "one" / "x.db"))
    assert (tmp_path / "one" / "x.db").is_file()
    # the runs folder is created even when its parent is missing too
    from nbhelpers.records import default_runs_dir

    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "project" / "runs"))
    search.open_study("s", search.sqlite_url(default_runs_dir() / "optuna.db"))
    assert (tmp_path / "project" / "runs" / "optuna.db").is_file()
    monkeypatch.chdir(tmp_path)  # the default "sqlite:///runs/optuna.db"
    search.open_study("s")
    assert (tmp_path / "runs" / "optuna.db").is_file()


def test_a_study_in_an_optuna_journal_file_is_shared(tmp_path):
    """How the README shares one study between machines: one Optuna storage, one name."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    def machine():  # each machine opens its own storage object on the shared file
        return JournalStorage(JournalFileBackend(str(tmp_path / "optuna.log")))

    first = search.random_search(
        fake_train,
        SPACE,
        TARGET,
        study_name="shared",
        storage=machine(),
        n_trials=3,
        progress=False,
    )
    assert len(complete_trials(first)) == 3
    second = search.random_search(
        fake_train,
        SPACE,
        TARGET,
        study_name="shared",
        storage=machine(),
        n_trials=5,
        progress=False,
    )
    assert len(complete_trials(second)) == 5  # the first machine's trials count
    assert len({t.params["lr"] for t in second.trials}) == 5  # and are not drawn again


@pytest.mark.parametrize(
    ("storage", "fragments"),
    [
        ("foo://bar", ["storage='foo://bar' is invalid; valid: a URL like", "foo"]),
        ("postgresql://me:secret@localhost:1/db", ["storage='postgresql://me:***@localhost:1/db'"]),
        ("not a url", ["storage='not a url' is invalid"]),
        (42, ["storage=42 is invalid"]),
    ],
)
def test_a_storage_optuna_cannot_open_is_named(storage, fragments):
    with pytest.raises(ValueError) as err:
        search.open_study("x", storage)
    assert all(f in str(err.value) for f in fragments) and "secret" not in str(err.value)


def test_a_damaged_study_database_is_named_and_left_alone(tmp_path):
    damaged = tmp_path / "optuna.db"
    damaged.write_bytes(b"this is not SQLite " * 200)
    with pytest.raises(ValueError) as err:
        search.open_study("x", search.sqlite_url(damaged))
    assert str(damaged) in str(err.value) and "damaged" in str(err.value)
    assert damaged.read_bytes() == b"this is not SQLite " * 200  # the learner's file is kept


def test_sampler_seed_reproduces_optunas_draws_by_hand():
    import math

    import numpy as np

    from nbhelpers.search import open_study, sampler_seed

    study = open_study("by-hand", None, seed=7)
    with _quiet():
        study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=4)
    rng = np.random.RandomState(sampler_seed(7))
    by_hand = [math.exp(rng.uniform(math.log(1e-4), math.log(1e-2))) for _ in range(4)]
    assert [t.params["lr"] for t in study.trials] == pytest.approx(by_hand, rel=1e-12)
    assert sampler_seed(7) != sampler_seed(8) and sampler_seed(7, 1) != sampler_seed(7)
    with pytest.raises(ValueError):
        sampler_seed(-1)


def _quiet():
    import optuna

    from nbhelpers.search import _optuna_verbosity

    return _optuna_verbosity(optuna.logging.WARNING)
