"""Tests of nbhelpers.experiment: configs, validation, run(), cache, interrupts, comparisons."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nbhelpers import experiment
from nbhelpers.budget import BUDGETS
from nbhelpers.data import DataBundle, ImageSet
from nbhelpers.experiment import (
    RandomRotationBatch,
    RunConfig,
    compare_table,
    describe_config,
    handover_config,
    reference_fix_config,
    run,
)
from nbhelpers.records import RunRecord, config_hash, load_record


def _bundle(n_train=32, n_valid=16, n_test=16, seed=0) -> DataBundle:
    gen = torch.Generator().manual_seed(seed)

    def split(n, name):
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen)
        return ImageSet(images, labels, name, "synthetic")

    return DataBundle(
        split(n_train, "train"), split(n_valid, "valid"), split(n_test, "test"), "synthetic"
    )


def _config(**changes) -> RunConfig:
    base = dict(
        name="tiny",
        source="synthetic",
        n_train=32,
        n_valid=16,
        n_test=16,
        width=4,
        batch_size=16,
        epochs=2,
        eval_batch_size=32,
        device="cpu",
    )
    base.update(changes)
    return RunConfig(**base)


def _metrics(record):
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in record.history]


# --------------------------------------------------------------------------- configs
def test_handover_config_carries_every_fault():
    cfg = handover_config("tiny", source="synthetic")
    tiny = BUDGETS["tiny"]
    assert (cfg.n_train, cfg.n_valid, cfg.n_test) == (tiny.n_train, tiny.n_valid, tiny.n_test)
    assert (cfg.batch_size, cfg.epochs) == (tiny.batch_size, tiny.epochs)
    assert cfg.eval_from_train and cfg.augmentation == "rotate180" and cfg.loader == "pil"
    assert cfg.zero_grad is False
    assert (cfg.optimizer, cfg.lr) == ("adam", 1e-5)
    assert (cfg.schedule, cfg.gamma, cfg.schedule_step) == ("exponential", 1.001, "batch")
    assert (cfg.activation, cfg.norm) == ("tanh", "none")
    assert cfg.eval_splits == ("train", "valid", "test")


def test_reference_fix_config_and_overrides():
    cfg = reference_fix_config("quick", source="synthetic", lr=1e-3)
    assert not cfg.eval_from_train and cfg.augmentation == "none" and cfg.zero_grad
    assert cfg.schedule == "none" and cfg.optimizer == "adam" and cfg.lr == 1e-3
    assert (cfg.activation, cfg.norm) == ("relu", "batch")
    assert reference_fix_config("tiny").lr == 2e-3
    with pytest.raises(ValueError, match="budget"):
        reference_fix_config("huge")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("lr", 0.0, "lr=0.0"),
        ("lr", -1e-3, "lr=-0.001"),
        ("lr", math.nan, "lr=nan"),
        ("batch_size", 0, "batch_size=0"),
        ("epochs", -1, "epochs=-1"),
        ("activation", "sigmoid", "'relu'"),
        ("norm", "layer", "'batch'"),
        ("init", "xavier", "'kaiming'"),
        ("optimizer", "rmsprop", "'sgd'"),
        ("schedule", "step", "'cosine'"),
        ("schedule_step", "iteration", "'epoch'"),
        ("augmentation", "flip", "'rotate180'"),
        ("loader", "fast", "'tensor'"),
        ("source", "mnist", "'svhn'"),
        ("eval_splits", ("train", "holdout"), "eval_splits"),
        ("momentum", 1.0, "momentum"),
        ("gamma", 0.0, "gamma"),
        ("zero_grad", "yes", "True or False"),
        ("device", "tpu", "device"),
        ("device", "cuda:abc", "cuda:N"),
        ("device", "cpu:7", "cuda:N"),
        ("eval_splits", (), "at least one split"),
        ("eval_splits", ("test", "test"), "distinct"),
        ("width", 3, "norm='group'"),
        ("memory_format", "nhwc", "'channels_last'"),
        ("threads", "many", "'auto', None"),
        ("threads", 0, "threads=0"),
    ],
)
def test_bad_config_values_raise_naming_value_and_valid_choices(field, value, fragment):
    extra = {"norm": "group"} if field == "width" else {}
    with pytest.raises(ValueError, match=field) as err:
        _config(**{field: value}, **extra)
    assert fragment in str(err.value)


def test_config_cannot_be_changed_after_construction(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("work started despite an invalid config")

    monkeypatch.setattr(experiment, "get_data", must_not_run)
    monkeypatch.setattr(experiment, "train", must_not_run)
    monkeypatch.setattr(experiment, "find_cached", must_not_run)
    cfg = _config()
    with pytest.raises(dataclasses.FrozenInstanceError, match="lr"):
        cfg.lr = -1.0  # a config is validated once, when made: it cannot change afterwards
    assert cfg.lr == 2e-3
    for change in (cfg.replace, lambda **kw: dataclasses.replace(cfg, **kw)):
        with pytest.raises(ValueError, match="lr=-1.0"):
            change(lr=-1.0)
    with pytest.raises(TypeError, match="RunConfig"):
        run({"lr": 1e-3})


def test_every_config_field_has_its_check():
    unchecked = [f.name for f in dataclasses.fields(RunConfig) if "check" not in f.metadata]
    assert unchecked == []


def test_config_dict_roundtrip_and_replace():
    cfg = _config(eval_splits=["valid", "test"])
    assert cfg.eval_splits == ("valid", "test")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown RunConfig fields"):
        RunConfig.from_dict({**cfg.to_dict(), "learning_rate": 1})
    with pytest.raises(ValueError, match="batch_size"):
        cfg.replace(batch_size=-4)


# --------------------------------------------------------------------------- run
def test_run_trains_saves_and_serves_from_cache(tmp_path, monkeypatch, capsys):
    data = _bundle()
    record = run(_config(), data=data, runs_dir=tmp_path, progress=False)
    assert record.status == "complete" and not record.from_cache
    assert [row["epoch"] for row in record.history] == [1, 2]
    assert {"train_accuracy", "valid_accuracy", "test_accuracy", "lr"} <= set(record.history[-1])
    assert record.config_hash == config_hash(record.config)
    assert record.config["device"] == "cpu" and record.config["source"] == "synthetic"
    assert record.extra["n_parameters"] > 0 and record.extra["split_sizes"]["test"] == 16
    for key in ("data_s", "compute_s", "eval_s", "diagnostics_s", "total_s", "wall_s"):
        assert record.timings[key] >= 0
    assert record.versions["torch"] == torch.__version__
    assert load_record(record.path).history == record.history

    def must_not_train(*args, **kwargs):
        raise AssertionError("retrained although the run is cached")

    monkeypatch.setattr(experiment, "train", must_not_train)
    capsys.readouterr()
    again = run(_config(), data=data, runs_dir=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert again.from_cache and again.history == record.history
    assert f"Loaded cached run tiny ({record.config_hash[:12]}, trained on cpu" in out
    assert "pass cache=False to retrain" in out
    with pytest.raises(AssertionError, match="retrained"):
        run(_config(), data=data, runs_dir=tmp_path, cache=False, progress=False)


def test_same_seed_gives_identical_metrics_and_other_seed_differs(tmp_path):
    data = _bundle()
    a = run(_config(epochs=1), data=data, runs_dir=tmp_path, cache=False, progress=False)
    b = run(_config(epochs=1), data=data, runs_dir=tmp_path, cache=False, progress=False)
    c = run(_config(epochs=1, seed=1), data=data, runs_dir=tmp_path, cache=False, progress=False)
    assert _metrics(a) == _metrics(b) and a.step_losses == b.step_losses
    assert a.step_losses != c.step_losses


class _InterruptAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, loss):
        if step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_is_saved_readable_and_never_cached(tmp_path, capsys):
    data = _bundle()
    cfg = _config(epochs=3)
    rec = run(cfg, data=data, runs_dir=tmp_path, hooks=[_InterruptAt(4)], progress=False)
    assert rec.status == "interrupted"
    stored = load_record(rec.path)  # 2 steps per epoch: stopped after the first step of epoch 3
    assert stored.status == "interrupted" and len(stored.step_losses) == 5
    assert [row["epoch"] for row in stored.history] == [1, 2, 3]
    assert stored.history[-1]["partial"] is True
    assert [load_record(p).status for p in tmp_path.glob("*.json")] == ["interrupted"]
    capsys.readouterr()
    fresh = run(cfg, data=data, runs_dir=tmp_path, progress=False)
    assert not fresh.from_cache and fresh.status == "complete"
    assert "Loaded cached" not in capsys.readouterr().out


def test_eval_from_train_evaluates_on_training_images(tmp_path):
    data = _bundle()
    sets = experiment._eval_sets(_config(eval_from_train=True), data)
    train_rows = {bytes(img.numpy()) for img in data.train.images}
    for split in ("valid", "test"):
        assert len(sets[split]) == 16
        assert all(bytes(img.numpy()) in train_rows for img in sets[split].images)
    valid_rows = {bytes(img.numpy()) for img in sets["valid"].images}
    assert not valid_rows & {bytes(img.numpy()) for img in sets["test"].images}
    honest = experiment._eval_sets(_config(), data)
    assert honest["test"] is data.test


def test_handover_faults_run_with_both_loaders(tmp_path):
    data = _bundle()
    for loader in ("pil", "tensor"):
        cfg = handover_config(
            "tiny", source="synthetic", name=f"handover-{loader}", loader=loader, width=4,
            n_train=32, n_valid=16, n_test=16, batch_size=16, epochs=1, device="cpu",
        )  # fmt: skip
        rec = run(cfg, data=data, runs_dir=tmp_path, progress=False)
        assert rec.step_lrs[1] == pytest.approx(1e-5 * 1.001)  # the schedule grows per batch
        assert rec.extra["split_sizes"] == {"train": 32, "valid": 16, "test": 16, "real_test": 16}
        assert rec.final("real_test_accuracy") is not None  # measured on the real test split too


def test_get_data_is_cached_in_process():
    experiment.clear_data_cache()
    cfg = _config(n_train=24, n_valid=8, n_test=8)
    first = experiment.get_data(cfg)
    assert experiment.get_data(cfg) is first
    assert len(first.train) == 24 and first.source == "synthetic"


# One row per registered optimizer: its class and the hyper-parameters it must take from the
# config. A new entry of OPTIMIZERS needs its row here, and building the wrong class fails.
OPTIMIZER_ROWS = {
    "adam": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1}),
}


@pytest.mark.parametrize("name", sorted(experiment.OPTIMIZERS))
def test_every_registered_optimizer_builds_its_class_with_the_configs_values(name):
    assert set(OPTIMIZER_ROWS) == set(experiment.OPTIMIZERS)
    cls, hyper = OPTIMIZER_ROWS[name]
    cfg = _config(optimizer=name, lr=0.01, momentum=0.5, weight_decay=0.1)
    opt = experiment.build_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    assert type(opt) is cls  # AdamW is a subclass of Adam: the exact class must match
    assert {key: opt.param_groups[0][key] for key in hyper} == hyper


def _scheduler(**changes):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    return opt, experiment.build_scheduler(_config(**changes), opt, steps_per_epoch=4)


def test_every_registered_schedule_builds_its_scheduler():
    lr_scheduler = torch.optim.lr_scheduler
    assert set(experiment.SCHEDULES) == {"none", "exponential", "cosine"}
    assert _scheduler(schedule="none")[1] is None
    _, exponential = _scheduler(schedule="exponential", gamma=1.5)
    assert type(exponential) is lr_scheduler.ExponentialLR and exponential.gamma == 1.5
    cosine = {  # T_max: all scheduler steps of the run
        (("schedule_step", "batch"), ("epochs", 3)): 12,
        (("schedule_step", "batch"), ("epochs", 3), ("max_steps", 5)): 5,
        (("schedule_step", "epoch"), ("epochs", 3)): 3,
    }
    for changes, t_max in cosine.items():
        _, sched = _scheduler(schedule="cosine", **dict(changes))
        assert type(sched) is lr_scheduler.CosineAnnealingLR and sched.T_max == t_max


def test_cosine_schedule_reaches_zero_at_the_end():
    opt, sched = _scheduler(schedule="cosine", epochs=2)
    for _ in range(8):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- rotation
def test_random_rotation_batch_is_seeded_and_shape_preserving():
    x = torch.rand(6, 3, 32, 32)
    a = RandomRotationBatch(180, seed=1)(x)
    b = RandomRotationBatch(180, seed=1)(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    tiny = RandomRotationBatch(1e-4, seed=0)(x)  # (almost) no rotation: identity sampling
    assert torch.equal(tiny, x)
    with pytest.raises(ValueError, match="degrees"):
        RandomRotationBatch(0)


def test_rotation_by_180_degrees_turns_images_upside_down():
    x = torch.rand(2, 3, 8, 8)
    out = RandomRotationBatch.rotate(x, torch.tensor([math.pi, 0.0]))
    torch.testing.assert_close(out[0], torch.flip(x[0], dims=(1, 2)))
    torch.testing.assert_close(out[1], x[1])


# --------------------------------------------------------------------------- comparison
def _fake_record(name: str, config: RunConfig, test_accuracy: float) -> RunRecord:
    history = [{"epoch": 1, "valid_accuracy": test_accuracy + 0.01, "test_accuracy": test_accuracy}]
    timings = {"wall_s": 3.0, "images_per_s": 100.0}
    return RunRecord(
        name, config.to_dict(), config_hash(config.to_dict()), history, timings=timings
    )


def test_compare_table_and_description():
    recs = [
        _fake_record("a", _config(name="a"), 0.8),
        _fake_record("b", _config(name="b", lr=1e-2, zero_grad=False), 0.2),
    ]
    table = compare_table(recs)
    assert list(table["run"]) == ["a", "b"]
    assert {"configuration", "test accuracy", "wall time (s)", "images/s"} <= set(table.columns)
    assert list(table["test accuracy"]) == [0.8, 0.2]
    assert table.loc[0, "best valid accuracy"] == pytest.approx(0.81)
    assert "NO zero_grad" in table.loc[1, "configuration"]
    assert "NO zero_grad" not in table.loc[0, "configuration"]
    text = describe_config(handover_config("tiny", source="synthetic"))
    assert "tanh/none" in text and "exponential(1.001)/batch" in text and "eval=train" in text
    with pytest.raises(TypeError, match="RunRecord"):
        compare_table([{"name": "x"}])


def test_run_rejects_data_that_is_not_a_bundle():
    with pytest.raises(TypeError, match="DataBundle.*source='synthetic'"):
        run(_config(), data="synthetic")


def test_diverged_run_is_flagged_warned_saved_and_replayed(tmp_path, capsys):
    data = _bundle()
    config = _config(lr=1e6, norm="none")
    with pytest.warns(RuntimeWarning, match="Training diverged: the loss became nan at step"):
        record = run(config, data=data, runs_dir=tmp_path, progress=False)
    assert record.status == "diverged"
    assert any("diverged_at_step" in row for row in record.history)
    assert "Saved DIVERGED run" in capsys.readouterr().out
    again = run(config, data=data, runs_dir=tmp_path, progress=False)
    assert again.from_cache and again.status == "diverged"
    assert "this run DIVERGED" in capsys.readouterr().out
    healthy = run(_config(), data=data, runs_dir=tmp_path, progress=False)
    assert healthy.status == "complete"


def test_run_records_are_readable_by_others_as_the_umask_allows(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        record = run(_config(epochs=1), data=_bundle(), runs_dir=tmp_path, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(record.path).st_mode) == 0o644


def test_adding_an_optimizer_is_one_registry_entry(monkeypatch):
    """One entry in OPTIMIZERS: RunConfig accepts the name and build_run builds it."""
    with pytest.raises(ValueError, match="optimizer='rmsprop' is invalid"):
        _config(optimizer="rmsprop")
    monkeypatch.setitem(
        experiment.OPTIMIZERS, "rmsprop", lambda c, params: torch.optim.RMSprop(params, lr=c.lr)
    )
    cfg = _config(optimizer="rmsprop", lr=0.02)
    opt = experiment.build_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    assert type(opt) is torch.optim.RMSprop and opt.param_groups[0]["lr"] == 0.02


# --------------------------------------------------------------------------- layout, CPU threads
def test_memory_format_lays_out_model_and_batches_with_the_same_weights():
    data = _bundle()
    plain = experiment.build_run(_config(memory_format="contiguous"), data)
    fast = experiment.build_run(_config(memory_format="channels_last"), data)
    assert (plain.memory_format, fast.memory_format) == ("contiguous", "channels_last")
    conv = fast.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = next(iter(fast.train_loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    x_eval, _ = next(iter(fast.eval_loaders["valid"]))
    assert x_eval.is_contiguous(memory_format=torch.channels_last)
    assert next(iter(plain.train_loader))[0].is_contiguous()
    for a, b in zip(plain.model.parameters(), fast.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the same initial weights in either layout


def test_memory_format_auto_is_measured_recorded_and_contiguous_with_hooks(tmp_path):
    data = _bundle()
    assert experiment.memory_format_of(_config(), "cpu") in ("contiguous", "channels_last")
    assert handover_config("tiny").memory_format == "contiguous"  # the colleague's layout
    assert reference_fix_config("tiny").memory_format == "auto"
    rec = run(_config(epochs=1), data=data, runs_dir=tmp_path, progress=False)
    assert rec.extra["memory_format"] == experiment.memory_format_of(_config(), "cpu")

    class Hook:
        def on_step_end(self, step, loss):
            pass

    hooked = run(_config(epochs=1), data=data, runs_dir=tmp_path, hooks=[Hook()], progress=False)
    assert hooked.extra["memory_format"] == "contiguous"


def test_pil_loader_trains_a_channels_last_model(tmp_path):
    cfg = _config(epochs=1, loader="pil", memory_format="channels_last", name="pil-cl")
    rec = run(cfg, data=_bundle(), runs_dir=tmp_path, progress=False)
    assert rec.status == "complete" and rec.extra["memory_format"] == "channels_last"


def test_thread_counts_are_recorded_fixed_counts_are_in_the_key(tmp_path, capsys):
    data = _bundle()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(_config(epochs=2, threads=1), data=data, runs_dir=tmp_path, progress=False)
        two = run(_config(epochs=2, threads=2), data=data, runs_dir=tmp_path, progress=False)
        assert one.config_hash != two.config_hash and not two.from_cache
        assert one.extra["cpu_threads"] == [1, 1] and two.extra["cpu_threads"] == [2, 2]
        assert one.device == "cpu (1 thread)" and two.device == "cpu (2 threads)"
        assert [row["threads"] for row in two.history] == [2, 2]
        assert torch.get_num_threads() == 1  # the learner's setting again
        again = run(_config(epochs=2, threads=1), data=data, runs_dir=tmp_path, cache=False,
                    progress=False)  # fmt: skip
        assert again.step_losses == one.step_losses  # a fixed count reruns bit-identically
        capsys.readouterr()
        assert run(_config(epochs=2, threads=2), data=data, runs_dir=tmp_path).from_cache
        assert "CPU thread" not in capsys.readouterr().out  # a fixed count needs no note
    finally:
        torch.set_num_threads(before)


def test_replaying_an_auto_run_says_what_it_was_trained_with(tmp_path, capsys):
    data = _bundle()
    first = run(_config(epochs=1), data=data, runs_dir=tmp_path, progress=False)
    counts = first.extra["cpu_threads"]
    assert counts and all(isinstance(c, int) and c >= 1 for c in counts)
    capsys.readouterr()
    again = run(_config(epochs=1), data=data, runs_dir=tmp_path)
    out = capsys.readouterr().out
    assert again.from_cache
    layout = first.extra["memory_format"]
    assert f"trained with {counts[0]} CPU thread" in out and f"the {layout} memory format" in out
    assert (
        "set threads=N, memory_format and precision in the config for bit-identical reruns" in out
    )


def test_replay_note_ignores_what_a_record_does_not_hold_or_holds_wrongly():
    from nbhelpers.records import RunRecord

    def record(config, extra):
        return RunRecord(name="x", config=config, config_hash="0" * 64, extra=extra)

    assert experiment.replay_note(record({"threads": 2}, {"cpu_threads": [2]})) == ""
    assert experiment.replay_note(record({}, {})) == ""
    assert experiment.replay_note(record({"threads": "auto"}, {"cpu_threads": "2"})) == ""
    note = experiment.replay_note(record({"threads": "auto"}, {"cpu_threads": [1, 2]}))
    assert "1-2 CPU threads" in note


def test_precision_is_validated_recorded_fp32_with_hooks_and_bf16_trains(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        _config(precision="fp16")
    assert handover_config("tiny").precision == "fp32"  # the colleague's arithmetic
    assert reference_fix_config("tiny").precision == "auto"  # the fastest, measured
    data = _bundle()
    rec = run(_config(epochs=1, precision="bf16"), data=data, runs_dir=tmp_path, progress=False)
    assert rec.status == "complete" and rec.extra["precision"] == "bf16"
    assert "bf16" in describe_config(rec.config) and 0 <= rec.final("test_accuracy") <= 1
    auto = run(_config(epochs=1, precision="auto"), data=data, runs_dir=tmp_path, progress=False)
    layout = experiment.memory_format_of(_config(), "cpu")
    assert auto.extra["precision"] == experiment.precision_of(
        _config(precision="auto"), "cpu", layout
    )

    class Hook:
        def on_step_end(self, step, loss):
            pass

    hooked = run(
        _config(epochs=1, precision="auto"),
        data=data,
        runs_dir=tmp_path,
        hooks=[Hook()],
        progress=False,
    )
    assert hooked.extra["precision"] == "fp32"
