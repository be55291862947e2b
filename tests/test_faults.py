"""Fault injection: nothing the learner made is lost, nothing from a shared file runs or leaks.

Each test breaks something on purpose (an interrupt mid-run, an unwritable, full or invalid
runs folder, a process killed mid-write, a crafted record, Cockpit log or logbook entry, a
loss that explodes) and checks that what was there survives and that the learner is told
what happened and what to do.
"""

from __future__ import annotations

import base64
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nbhelpers import experiment, files, records
from nbhelpers import train as train_mod
from nbhelpers.data import DataBundle, ImageSet
from nbhelpers.experiment import RunConfig, run
from nbhelpers.logbook import Logbook
from nbhelpers.records import find_cached, load_record

ROOT = Path(__file__).resolve().parents[1]


def _bundle() -> DataBundle:
    gen = torch.Generator().manual_seed(0)

    def split(n, name):
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return ImageSet(images, torch.randint(0, 10, (n,), generator=gen), name, "synthetic")

    return DataBundle(split(32, "train"), split(16, "valid"), split(16, "test"), "synthetic")


def _config(**changes) -> RunConfig:
    base = dict(
        name="tiny", source="synthetic", n_train=32, n_valid=16, n_test=16, width=4,
        batch_size=16, epochs=2, eval_batch_size=32, device="cpu",
    )  # fmt: skip
    return RunConfig(**{**base, **changes})


def _run(config=None, **kwargs):
    return run(config or _config(), data=_bundle(), progress=False, **kwargs)


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """Python's own SIGINT handler, as in a fresh kernel: code that ran earlier in this process
    (an asyncio loop of an in-process notebook run) may have left its own installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c():
    """What the stop button does: SIGINT, which Python turns into KeyboardInterrupt."""
    signal.raise_signal(signal.SIGINT)
    time.sleep(0.01)  # the handler runs here at the latest


@pytest.fixture
def interrupt_at_step(monkeypatch):
    """Press Ctrl-C inside the real training loop (no hook) at the given optimizer step."""

    def arm(step: int):
        real = train_mod._Loop._train_step

        def step_then_maybe_stop(self, x, y, epoch):
            if self.step == step:
                _ctrl_c()
            return real(self, x, y, epoch)

        monkeypatch.setattr(train_mod._Loop, "_train_step", step_then_maybe_stop)

    return arm


def _json_files(folder: Path) -> dict[str, str]:
    return {p.name: load_record(p).status for p in sorted(folder.glob("*.json"))}


# --------------------------------------------------------------------------- interrupts
def test_interrupted_retrain_keeps_the_complete_record(tmp_path, interrupt_at_step, capsys):
    """``run(cfg)``, then ``run(cfg, cache=False)`` stopped with Ctrl-C: the complete record
    is untouched and still served; the interrupted run is kept beside it."""
    complete = _run(runs_dir=tmp_path)
    before = Path(complete.path).read_bytes()
    interrupt_at_step(1)
    stopped = _run(runs_dir=tmp_path, cache=False)
    assert stopped.status == "interrupted" and len(stopped.step_losses) == 1
    assert "Saved INTERRUPTED" in capsys.readouterr().out
    assert Path(complete.path).read_bytes() == before
    assert stopped.path != complete.path and load_record(stopped.path).status == "interrupted"
    again = _run(runs_dir=tmp_path)
    assert again.from_cache and again.status == "complete" and again.path == complete.path


def test_a_second_interruption_keeps_the_first(tmp_path, interrupt_at_step):
    interrupt_at_step(2)
    first = _run(runs_dir=tmp_path)
    second = _run(runs_dir=tmp_path)
    assert first.status == second.status == "interrupted" and first.path != second.path
    assert sorted(_json_files(tmp_path).values()) == ["interrupted", "interrupted"]
    assert load_record(first.path).step_losses == first.step_losses


class _StopIn:
    """A hook that presses Ctrl-C in one of its methods (where a long hook would be)."""

    def __init__(self, method: str):
        setattr(self, method, lambda *args: _ctrl_c())


@pytest.mark.parametrize(
    "method", ["on_train_begin", "on_step_end", "on_epoch_end", "on_train_end"]
)
def test_interrupt_anywhere_in_training_keeps_the_complete_record(tmp_path, method):
    complete = _run(runs_dir=tmp_path)
    before = Path(complete.path).read_bytes()
    stopped = _run(runs_dir=tmp_path, hooks=[_StopIn(method)])
    assert stopped.status == "interrupted"
    assert Path(complete.path).read_bytes() == before
    assert sorted(_json_files(tmp_path).values()) == ["complete", "interrupted"]
    assert _run(runs_dir=tmp_path).from_cache


# --------------------------------------------------------------------------- runs folder
@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if run() gets as far as loading data or training."""

    def must_not_start(*args, **kwargs):
        raise AssertionError("training started although the record could not be saved")

    monkeypatch.setattr(experiment, "_train_config", must_not_start)


def _read_only(monkeypatch):
    """The runs folder refuses new files, as a read-only folder or mount does (also for root)."""

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(str(dir), "x"))

    monkeypatch.setattr(records.tempfile, "mkstemp", refuse)


def _full_disk(monkeypatch):
    usage = records.shutil.disk_usage
    monkeypatch.setattr(records.shutil, "disk_usage", lambda p: usage(p)._replace(free=4096))


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        ("read-only", PermissionError, "Permission denied"),
        ("full disk", OSError, "4,096 bytes free"),
        ("a file", NotADirectoryError, "is a file, not a folder"),
        ("under a file", NotADirectoryError, "is a file, not a folder"),
        ("cannot be made", FileNotFoundError, "No such file or directory"),
    ],
)
def test_unusable_runs_folder_stops_before_training(
    tmp_path, monkeypatch, no_training, fault, error, fragment
):
    folder = tmp_path / "runs"
    if fault == "read-only":
        _read_only(monkeypatch)
    elif fault == "full disk":
        _full_disk(monkeypatch)
    elif fault in ("a file", "under a file"):
        (tmp_path / "runs").write_text("not a folder")
        folder = folder / "sub" if fault == "under a file" else folder
    else:
        folder = Path("/proc/nbhelpers-runs")  # not even root can make a folder here
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(folder))
    with pytest.raises(error) as err:
        _run()
    message = str(err.value)
    assert str(folder) in message and fragment in message
    assert f"NBHELPERS_RUNS_DIR={str(folder)!r}" in message  # where the folder came from
    with pytest.raises(error, match="pass runs_dir= a folder you can write"):
        _run(runs_dir=folder)


def test_a_cached_run_replays_from_a_read_only_folder(tmp_path, monkeypatch):
    """A shared read-only cache still serves: writability only matters when training."""
    complete = _run(runs_dir=tmp_path)
    monkeypatch.setattr(experiment, "_train_config", lambda *a, **k: pytest.fail("retrained"))
    _read_only(monkeypatch)
    again = _run(runs_dir=tmp_path)
    assert again.from_cache and again.history == complete.history


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.EIO, "Input/output error"),
    ],
)
def test_save_failing_after_training_keeps_the_result(tmp_path, monkeypatch, error):
    """The disk fills up (or the folder goes away) while training: the finished run is
    returned, the warning says where it could not be saved and how to save it."""
    real_dump = records.json.dump

    def failing_dump(obj, fh, **kwargs):
        fh.write('{"name": "half a rec')
        raise error

    monkeypatch.setattr(records.json, "dump", failing_dump)
    with pytest.warns(RuntimeWarning, match="was not saved") as caught:
        record = _run(runs_dir=tmp_path)
    message = _warning(caught, "was not saved")
    assert record.status == "complete" and len(record.step_losses) == 4 and record.path is None
    assert str(records.record_path("tiny", record.config_hash, tmp_path)) in message
    assert error.strerror in message and "record.save(" in message
    assert list(tmp_path.iterdir()) == []  # no half-written record, no temp file
    monkeypatch.setattr(records.json, "dump", real_dump)
    path = record.save(tmp_path / "elsewhere")
    assert load_record(path).step_losses == record.step_losses
    assert find_cached("tiny", record.config_hash, tmp_path / "elsewhere") is not None


# --------------------------------------------------------------------------- kill -9
_DIE_WHILE_SAVING = """
import json, os, signal, sys
from nbhelpers import records
config = {"lr": 0.1}
record = records.RunRecord("demo", config, records.config_hash(config), status="complete")
def die(obj, fh, **kwargs):
    fh.write('{"name": "demo", "half')
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
records.json.dump = die
records.save_record(record, sys.argv[1])
"""


def test_kill_during_a_save_keeps_the_old_record_and_the_leftover_is_cleared(tmp_path):
    config = {"lr": 0.1}
    old = records.RunRecord("demo", config, records.config_hash(config), step_losses=[2.3])
    path = records.save_record(old, tmp_path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", _DIE_WHILE_SAVING, str(tmp_path)], env=env)
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before  # the old record is whole
    (leftover,) = [p for p in tmp_path.iterdir() if p != path]
    assert leftover.name.startswith(f".{path.name}.tmp-")
    live = tmp_path / f".{path.name}.tmp-abcdefgh.tmp"  # another process writing right now
    live.write_text("{")
    hour_ago = time.time() - files.STALE_AFTER_S - 60
    os.utime(leftover, (hour_ago, hour_ago))
    records.save_record(records.RunRecord("other", config, records.config_hash(config)), tmp_path)
    assert not leftover.exists() and live.exists()
    assert find_cached("demo", old.config_hash, tmp_path).step_losses == [2.3]


# --------------------------------------------------------------------------- crafted records
def _changed(**changes):
    return lambda data: json.dumps({**data, **changes}).encode()


def _deep(depth: int) -> bytes:
    return ('{"name": "tiny", "extra": ' + "[" * depth + "]" * depth + "}").encode()


#: How a record file in a shared runs folder can be wrong: name -> (stored data -> new bytes).
CRAFTED = {
    "config edited to another lr": lambda d: _changed(config={**d["config"], "lr": 0.5})(d),
    "history a string": _changed(history="abc"),
    "timings a list": _changed(timings=[1, 2]),
    "step losses of strings": _changed(step_losses=["2.3"]),
    "unknown status": _changed(status="served"),
    "another key inside": _changed(config_hash="0" * 64),
    "nested 100,000 deep": lambda d: _deep(100_000),
    "nested 20 deep": lambda d: _deep(20),
    "not an object": lambda d: json.dumps([d]).encode(),
    "cut off": lambda d: json.dumps(d).encode()[:100],
    "not UTF-8": lambda d: b'{"name": "\xff\xfe"}',
}


def _warning(caught, fragment: str) -> str:
    return next(str(w.message) for w in caught if fragment in str(w.message))


@pytest.mark.parametrize("fault", sorted(CRAFTED))
def test_a_bad_record_is_moved_aside_and_the_run_retrains(tmp_path, fault):
    complete = _run(runs_dir=tmp_path)
    data = json.loads(Path(complete.path).read_text())
    Path(complete.path).write_bytes(CRAFTED[fault](data))
    tampered = Path(complete.path).read_bytes()
    with pytest.warns(UserWarning, match="was not used") as caught:
        again = _run(runs_dir=tmp_path)
    message = _warning(caught, "was not used")
    assert complete.path in message and "moved it to" in message and "training again" in message
    assert not again.from_cache and again.status == "complete"
    assert again.config["lr"] == 2e-3
    (aside,) = tmp_path.glob("*.invalid")
    assert aside.read_bytes() == tampered  # kept for a look, never served
    assert _run(runs_dir=tmp_path).from_cache


# --------------------------------------------------------------------------- divergence
class _ExplodingLoss(torch.nn.Module):
    """Cross-entropy, multiplied by ``factor`` from step ``at`` on: a finite blow-up."""

    reduction = "mean"

    def __init__(self, at: int, factor: float):
        super().__init__()
        self.at, self.factor, self.calls = at, factor, 0

    def forward(self, logits, y):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * (self.factor if self.calls > self.at else 1.0)


def _train_with(loss_fn, steps=8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    data = [(torch.randn(8, 3, 2, 2), torch.randint(0, 10, (8,))) for _ in range(steps)]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the loss alone decides
    return train_mod.train(
        model, opt, data, epochs=1, loss_fn=loss_fn, progress=False, eval_every=0
    )


def test_a_huge_finite_loss_is_flagged_as_diverged():
    with pytest.warns(
        RuntimeWarning, match=r"the loss reached 2.*e\+06 at step 5, over 100x its start \(2"
    ):
        history = _train_with(_ExplodingLoss(at=5, factor=1e6))
    assert history.status == "diverged" and history.epochs[0]["diverged_at_step"] == 5
    assert all(math.isfinite(v) for v in history.step_losses)  # finite, yet diverged


def test_a_loss_that_grows_tenfold_is_not_a_false_alarm():
    history = _train_with(_ExplodingLoss(at=5, factor=10.0))
    assert history.status == "complete"


@pytest.mark.parametrize("gamma", [1e6, 2.5, math.inf, math.nan, 0.0, -1.0, "1.001", True])
def test_an_exploding_schedule_is_refused(gamma):
    with pytest.raises(ValueError) as err:
        _config(schedule="exponential", gamma=gamma)
    assert f"RunConfig.gamma={gamma!r} is invalid; valid: a finite number in (0, 2]" in str(
        err.value
    )


def test_a_diverged_run_says_so_when_it_replays(tmp_path, capsys):
    assert _config(schedule="exponential", gamma=2.0).gamma == 2.0
    config = _config(lr=1e6, norm="none")  # blows up at once
    with pytest.warns(RuntimeWarning, match="Training diverged"):
        _run(config, runs_dir=tmp_path)
    capsys.readouterr()
    assert _run(config, runs_dir=tmp_path).from_cache
    assert (
        "DIVERGED: its loss became NaN, infinite or far above its start" in capsys.readouterr().out
    )


# --------------------------------------------------------------------------- shared files
_EVIL_MODULE = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the log ran this module's code")
class Payload:
    def __json_decode__(self, **kwargs):
        Path(__file__).with_name("BUILT").write_text("the log built a class")
"""


def test_a_crafted_cockpit_log_imports_nothing(tmp_path, monkeypatch):
    """Cockpit logs are shared (shipped logs, Drive folders): they load as plain data."""
    from nbhelpers.cockpit_tools import logs

    (tmp_path / "crafted_payload.py").write_text(_EVIL_MODULE)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # importable, if anything tried
    payload = {"__instance_type__": ["crafted_payload", "Payload"], "attributes": {}}
    log = tmp_path / "log.json"
    log.write_text(json.dumps({"0": {"Loss": 2.3, "x": payload}}))
    try:
        loaded = logs.load_log(log)
    except ValueError:  # refusing the file is fine too
        loaded = None
    finally:
        imported = sys.modules.pop("crafted_payload", None)
    assert imported is None
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "BUILT").exists()
    if loaded is not None:
        assert loaded[0]["x"] == payload  # a plain dict, as written


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "private" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(b"my password is hunter2")
    return path


def _crafted_logbook(folder: Path, figure: str) -> Logbook:
    folder.mkdir(parents=True, exist_ok=True)
    line = {
        "stage": "05",
        "observation": "look",
        "timestamp": "2025-01-01T00:00:00",
        "figure": figure,
    }
    (folder / "logbook.jsonl").write_text(json.dumps(line) + "\n")
    return Logbook(folder)


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink", "not a PNG", "PNG elsewhere"])
def test_a_crafted_figure_path_embeds_nothing(tmp_path, secret, kind):
    folder = tmp_path / "shared" / "logbook"
    figures = folder / "figures"
    figures.mkdir(parents=True)
    if kind == "relative":
        figure = os.path.relpath(secret, folder)
    elif kind == "absolute":
        figure = str(secret)
    elif kind == "symlink":
        (figures / "plot.png").symlink_to(secret)
        figure = "figures/plot.png"
    elif kind == "not a PNG":
        (figures / "plot.png").write_bytes(secret.read_bytes())
        figure = "figures/plot.png"
    else:  # a real PNG, but outside the logbook's figures/
        secret.write_bytes(b"\x89PNG\r\n\x1a\n" + secret.read_bytes())
        figure = os.path.relpath(secret, folder)
    book = _crafted_logbook(folder, figure)
    (entry,) = book.entries()  # the entry's text is kept
    encoded = base64.b64encode(secret.read_bytes()).decode()
    for page in (book.to_html(), book._repr_html_(), book.to_html(embed_figures=False)):
        assert encoded not in page and "hunter2" not in page
        assert "not shown" in page and "<img" not in page
    markdown = book.to_markdown()
    assert f"]({figure})" not in markdown and "hunter2" not in markdown
    assert "look" in markdown
