"""Tests of nbhelpers.records: JSON records, atomic writes, the config-hash cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nbhelpers import records
from nbhelpers.records import (
    RunRecord,
    config_hash,
    default_runs_dir,
    find_cached,
    load_record,
    record_path,
    save_record,
)


def _record(name="demo", status="complete", **config) -> RunRecord:
    config = {"lr": 0.001, "epochs": 2, **config}
    return RunRecord(
        name=name,
        config=config,
        config_hash=config_hash(config),
        history=[
            {"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.2},
            {"epoch": 2, "test_accuracy": 0.6, "test_loss": math.nan},
        ],
        step_losses=[2.3, 2.0],
        timings={"total_s": 1.5},
        seed=0,
        status=status,
    )


def test_config_hash_ignores_key_order_and_depends_on_values_and_salt():
    a = config_hash({"lr": 0.1, "epochs": 3})
    assert a == config_hash({"epochs": 3, "lr": 0.1})
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != config_hash({"lr": 0.2, "epochs": 3})
    assert a != config_hash({"lr": 0.1, "epochs": 3}, salt="other-code")
    with pytest.raises(TypeError):
        config_hash(["lr", 0.1])


def test_save_and_load_roundtrip_without_temp_files(tmp_path):
    rec = _record()
    path = save_record(rec, tmp_path)
    assert path == record_path("demo", rec.config_hash, tmp_path)
    assert path.name == f"demo-{rec.config_hash[:12]}.json"
    assert rec.path == str(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    loaded = load_record(path)
    assert loaded.config == rec.config and loaded.history[0] == rec.history[0]
    assert math.isnan(loaded.history[1]["test_loss"])
    assert loaded.path == str(path) and loaded.from_cache is False
    data = json.loads(path.read_text())
    assert "path" not in data and data["status"] == "complete"


def test_failed_write_keeps_the_old_record(tmp_path, monkeypatch):
    rec = _record()
    path = save_record(rec, tmp_path)
    before = path.read_text()

    def broken_dump(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(records.json, "dump", broken_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        save_record(_record(), tmp_path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_find_cached_serves_complete_records_only(tmp_path):
    rec = _record()
    assert find_cached("demo", rec.config_hash, tmp_path) is None
    save_record(rec, tmp_path)
    complete = rec.path
    hit = find_cached("demo", rec.config_hash, tmp_path)
    assert hit is not None and hit.from_cache and hit.history == load_record(rec.path).history
    before = Path(complete).read_bytes()
    interrupted = _record(status="interrupted")
    save_record(interrupted, tmp_path)  # same config: saved beside, never over the complete one
    assert interrupted.path != complete and ".interrupted-" in interrupted.path
    assert Path(complete).read_bytes() == before
    assert load_record(interrupted.path).status == "interrupted"
    again = find_cached("demo", rec.config_hash, tmp_path)
    assert again is not None and again.status == "complete" and again.path == complete


def test_interrupted_records_never_replace_each_other(tmp_path):
    first, second = _record(status="interrupted"), _record(status="interrupted")
    second.created = first.created  # the same second: the name must still be new
    paths = {save_record(first, tmp_path), save_record(second, tmp_path)}
    assert len(paths) == 2 and all(load_record(p).status == "interrupted" for p in paths)
    assert find_cached("demo", first.config_hash, tmp_path) is None  # never served


def test_default_runs_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    path = save_record(_record())
    assert path.parent == tmp_path / "elsewhere"
    monkeypatch.delenv("NBHELPERS_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_runs_dir() == tmp_path.resolve() / "runs"


def test_record_helpers_and_validation(tmp_path):
    rec = _record()
    assert rec.final("test_accuracy") == 0.6
    assert rec.best("test_loss", mode="min") == 1.2  # NaN ignored
    assert rec.final("valid_accuracy", "none") == "none"
    with pytest.raises(ValueError, match="status"):
        _record(status="crashed")
    (tmp_path / "x.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="config"):
        load_record(tmp_path / "x.json")


def test_unsafe_names_become_safe_file_names(tmp_path):
    rec = _record(name="lr 1e-3 / relu?")
    path = save_record(rec, tmp_path)
    assert path.parent == tmp_path and "/" not in path.name[:-5] and " " not in path.name
    assert load_record(path).name == "lr 1e-3 / relu?"


def test_config_hash_ignores_the_device():
    base = {"lr": 0.1, "device": "cuda"}
    assert config_hash(base) == config_hash({**base, "device": "cpu"})
    assert config_hash(base) != config_hash({**base, "lr": 0.2})


def test_code_version_moves_with_what_a_record_holds():
    """A new record field or status changes what a record means: bump CODE_VERSION with it
    (then update this snapshot), so records of the older meaning miss the cache."""
    from dataclasses import fields

    snapshot = (records.CODE_VERSION, [f.name for f in fields(RunRecord)], records.STATUSES)
    assert snapshot == (
        "nbhelpers-train-3",
        ["name", "config", "config_hash", "history", "step_losses", "step_lrs", "timings",
         "seed", "device", "versions", "status", "created", "extra", "path", "from_cache"],
        ("complete", "interrupted", "diverged"),
    )  # fmt: skip
    config = {"lr": 0.1}
    assert config_hash(config) == config_hash(config, salt="nbhelpers-train-3")
    assert config_hash(config) != config_hash(config, salt="nbhelpers-train-2")


BAD_RECORDS = {  # a record file's data -> what the error must name
    "history a string": ({"history": "abc"}, "history='abc' is invalid; valid: a list of objects"),
    "timings a list": (
        {"timings": [1, 2]},
        "timings=[1, 2] is invalid; valid: an object of numbers",
    ),
    "a history row holding a list": ({"history": [{"epoch": [1]}]}, "history=[{'epoch': [1]}]"),
    "losses of strings": ({"step_losses": ["2.3"]}, "step_losses=['2.3'] is invalid"),
    "seed a float": ({"seed": 0.5}, "seed=0.5 is invalid; valid: an integer or null"),
    "status unknown": ({"status": "served"}, "status='served' is invalid; valid: one of complete"),
    "hash not hex": ({"config_hash": "../../x"}, "config_hash='../../x' is invalid"),
    "config of objects": ({"config": {"lr": {"a": 1}}}, "config={'lr': {'a': 1}} is invalid"),
    "name empty": ({"name": " "}, "name=' ' is invalid"),
    "extra a list": ({"extra": []}, "extra=[] is invalid; valid: an object"),
    "nested too deeply": ({"extra": {"a": [[[[[[[[1]]]]]]]]}}, "nested deeper than 8 levels"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_load_record_checks_the_schema_naming_the_field(tmp_path, kind):
    changes, fragment = BAD_RECORDS[kind]
    path = save_record(_record(), tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    with pytest.raises(ValueError) as err:
        load_record(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_load_record_refuses_huge_and_bottomless_files(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        load_record(deep)
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 100)
    path = save_record(_record(), tmp_path)
    with pytest.raises(ValueError, match="bytes, over 100"):
        load_record(path)


def test_find_cached_moves_a_record_of_another_config_aside(tmp_path):
    rec = _record()
    path = save_record(rec, tmp_path)
    path.write_text(path.read_text().replace('"lr": 0.001', '"lr": 0.5'))  # edited by hand
    with pytest.warns(UserWarning, match="its config does not match its key"):
        assert find_cached("demo", rec.config_hash, tmp_path) is None
    assert not path.exists() and path.with_name(path.name + ".invalid").is_file()
    save_record(rec, tmp_path)
    path.write_text("{}")  # a second bad one goes beside the first
    with pytest.warns(UserWarning, match="moved it to .*invalid-2"):
        assert find_cached("demo", rec.config_hash, tmp_path) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, [1.0, math.nan], {"a": -math.inf}])
def test_stage_records_refuse_nan_and_infinity(tmp_path, value):
    from nbhelpers.notebook import record_stage

    with pytest.raises(ValueError, match="extra=.* is invalid; valid: JSON values with finite"):
        record_stage("03", "zero_grad fixed", stages_dir=tmp_path, note=value)
    with pytest.raises(ValueError, match="run_time_s=nan is invalid"):
        record_stage("03", "zero_grad fixed", run_time_s=math.nan, stages_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_runs_dir_makes_the_folder_and_tolerates_an_unknown_free_space(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "runs"
    assert records.check_runs_dir(folder) == folder and list(folder.iterdir()) == []

    def no_statvfs(path):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(records.shutil, "disk_usage", no_statvfs)  # some network mounts
    assert records.check_runs_dir(folder) == folder
