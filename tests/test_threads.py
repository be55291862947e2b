"""Tests of nbhelpers.threads: reading the load, the thread rule, setting and restoring it.

No test asserts on speed. The load is injected where a number must come out exactly; the
tests that read the real machine only assert what any amount of other load keeps true.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nbhelpers import threads
from nbhelpers.data import TensorLoader
from nbhelpers.models import build_cnn
from nbhelpers.threads import (
    MIN_FLOP_PER_THREAD,
    LoadMeter,
    ThreadPolicy,
    busy_neighbour,
    check_threads,
    choose_threads,
    describe_threads,
    step_flops,
)
from nbhelpers.train import train

STAT = """cpu  500 0 300 9000 20 0 0 0 0 0
cpu0 100 0 100 4000 10 0 0 0 0 0
cpu1 400 0 200 5000 10 0 0 0 0 0
intr 12345
"""


@pytest.fixture
def learner_threads():
    """The learner's setting before the test, put back after it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def _stat(cpu0: tuple[int, int], cpu1: tuple[int, int]) -> str:
    """/proc/stat text with (busy, idle) ticks of two CPUs."""
    return "".join(f"cpu{i} {b} 0 0 {d} 0 0 0 0 0 0\n" for i, (b, d) in enumerate((cpu0, cpu1)))


def test_cpu_ticks_reads_the_cpus_asked_for():
    assert threads._cpu_ticks(STAT, None) == (800, 800 + 9020)
    assert threads._cpu_ticks(STAT, {1}) == (600, 600 + 5010)
    steal = "cpu0 10 0 0 80 0 0 0 10 0 0\n"  # time the hypervisor gave to others is busy
    assert threads._cpu_ticks(steal, None) == (20, 100)


def test_load_meter_subtracts_this_process_and_scales_to_cores(monkeypatch):
    samples = iter([_stat((0, 0), (0, 0)), _stat((200, 0), (100, 100))])  # 2 s at 100 Hz
    clock = iter([10.0, 11.0])  # this process used 1 s of CPU in the window
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(threads.time, "process_time", lambda: next(clock))
    meter = LoadMeter(read=lambda: next(samples))
    # busy 300 ticks = 3 CPU-seconds, minus 1 of ours, over a 2 s window
    assert meter.others() == pytest.approx(1.0)


def test_load_meter_without_proc_stat_says_unknown():
    def missing():
        raise FileNotFoundError("/proc/stat")

    assert LoadMeter(read=missing).others() is None


def test_idle_cores_is_within_the_machine():
    idle = threads.idle_cores(0.05)
    if idle is not None:  # Linux
        assert 0.0 <= idle <= threads.cpu_limit()


def test_cpu_limit_follows_a_cgroup_quota(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "_CPU_MAX", quota)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.cpu_limit() == 8  # no file: the affinity
    quota.write_text("max 100000\n")
    assert threads.cpu_limit() == 8
    quota.write_text("200000 100000\n")
    assert threads.cpu_limit() == 2
    quota.write_text("30000 100000\n")
    assert threads.cpu_limit() == 1


@pytest.mark.parametrize(
    ("limit", "idle", "flops", "expected"),
    [
        (2, None, None, 2),  # nothing known: the learner's setting
        (2, 2.0, 1e12, 2),  # quiet machine, a big step
        (2, 1.0, 1e12, 1),  # a neighbour holds one of two cores
        (2, 1.6, 1e12, 2),  # most of a core free: rounded
        (2, 0.0, 1e12, 1),  # all busy: still one thread
        (8, 8.0, 3.5 * MIN_FLOP_PER_THREAD, 3),  # a small step: fewer threads
        (8, 8.0, 0.5 * MIN_FLOP_PER_THREAD, 1),
        (1, 4.0, 1e12, 1),  # never above the learner's setting
    ],
)
def test_choose_threads(limit, idle, flops, expected):
    assert choose_threads(limit, idle, flops) == expected


@pytest.mark.parametrize(
    ("activation", "norm", "width"), [("relu", "batch", 8), ("tanh", "none", 4)]
)
def test_step_flops_matches_torchs_flop_counter(activation, norm, width):
    model = build_cnn(activation, norm, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, 32, 32))
    model.train()
    assert step_flops(model, 32) == pytest.approx(3 * 32 * counter.get_total_flops(), rel=1e-6)
    assert model.training  # its mode is put back


def test_step_flops_of_a_model_that_does_not_take_the_shape_is_none():
    assert step_flops(torch.nn.Linear(5, 2), 32) is None


@pytest.mark.parametrize("bad", ["two", 0, 2000, True, 1.5])
def test_bad_thread_settings_are_refused_naming_the_choices(bad):
    with pytest.raises(ValueError, match=r"threads=.* is invalid; valid: .*"):
        check_threads("threads", bad)


def test_describe_threads():
    assert describe_threads([1, 1]) == "1 CPU thread"
    assert describe_threads([2]) == "2 CPU threads"
    assert describe_threads([2, 1, 2]) == "1-2 CPU threads"
    assert describe_threads(["x"]) == "CPU threads unknown"


def test_policy_auto_follows_the_load_and_the_step(monkeypatch, learner_threads):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "cpu_limit", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda window_s=0.05: 2.0)
    big, small = build_cnn("relu", "batch", 32), build_cnn("relu", "batch", 4)
    for model, batch, expected in ((big, 64, 2), (small, 2, 1)):
        policy = ThreadPolicy("auto", torch.device("cpu"))
        policy.begin(model, batch)
        assert torch.get_num_threads() == expected
        policy.close()
        assert torch.get_num_threads() == 2
    monkeypatch.setattr(threads, "idle_cores", lambda window_s=0.05: 1.0)
    policy = ThreadPolicy("auto", torch.device("cpu"))
    policy.begin(big, 64)
    assert torch.get_num_threads() == 1
    policy.close()


def test_policy_changes_nothing_off_the_cpu_and_for_none(learner_threads):
    policy = ThreadPolicy(2, torch.device("cuda"))
    policy.begin(build_cnn("relu", "batch", 4), 8)
    assert torch.get_num_threads() == learner_threads
    assert policy.epoch_end() is None and policy.used == []
    policy = ThreadPolicy(None, torch.device("cpu"))  # torch's setting as it is, but noted
    policy.begin(build_cnn("relu", "batch", 4), 8)
    assert torch.get_num_threads() == learner_threads
    assert policy.epoch_end() == learner_threads and policy.used == [learner_threads]


def _loader(n=64, batch=16):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return TensorLoader(images, torch.randint(0, 10, (n,)), batch)


def test_train_uses_a_fixed_count_records_it_and_restores(learner_threads):
    torch.set_num_threads(1)
    model = build_cnn("relu", "batch", 4)
    history = train(
        model, torch.optim.Adam(model.parameters()), _loader(), epochs=2, threads=2,
        progress=False, eval_every=0,
    )  # fmt: skip
    assert history.threads == [2, 2] and [row["threads"] for row in history.epochs] == [2, 2]
    assert torch.get_num_threads() == 1


def test_train_restores_the_setting_after_an_interrupt(learner_threads):
    class Stop:
        def on_step_end(self, step, loss):
            raise KeyboardInterrupt

    torch.set_num_threads(1)
    model = build_cnn("relu", "batch", 4)
    history = train(
        model, torch.optim.Adam(model.parameters()), _loader(), epochs=2, threads=2,
        hooks=[Stop()], progress=False, eval_every=0,
    )  # fmt: skip
    assert history.status == "interrupted" and history.threads == [2]
    assert torch.get_num_threads() == 1


def test_train_auto_chooses_again_after_every_epoch(monkeypatch, learner_threads):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "cpu_limit", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda window_s=0.05: 2.0)  # quiet at the start
    others = iter([1.0, 0.0, 0.0])  # a neighbour during epoch 1, gone in epoch 2
    monkeypatch.setattr(LoadMeter, "others", lambda self: next(others))
    model = build_cnn("relu", "batch", 32)
    history = train(
        model, torch.optim.Adam(model.parameters()), _loader(batch=64), epochs=3,
        progress=False, eval_every=0,
    )  # fmt: skip
    assert history.threads == [2, 1, 2]
    assert torch.get_num_threads() == 2


def test_train_auto_keeps_a_small_step_on_one_thread_when_the_machine_frees_up(
    monkeypatch, learner_threads
):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "cpu_limit", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda window_s=0.05: 1.0)  # busy at the start
    monkeypatch.setattr(LoadMeter, "others", lambda self: 0.0)  # then quiet
    model = build_cnn("relu", "batch", 4)
    history = train(
        model, torch.optim.Adam(model.parameters()), _loader(n=8, batch=2), epochs=3,
        progress=False, eval_every=0,
    )  # fmt: skip
    assert history.threads == [1, 1, 1]  # its step is too small for two threads anyway


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a busy core needs a second core")
def test_train_auto_gives_up_a_core_a_neighbour_holds(learner_threads):
    torch.set_num_threads(threads.cpu_limit())
    model = build_cnn("relu", "batch", 32)
    with busy_neighbour(cores=1, max_seconds=60):
        history = train(
            model, torch.optim.Adam(model.parameters()), _loader(batch=64), epochs=1,
            progress=False, eval_every=0,
        )  # fmt: skip
    # the neighbour (and anything else running) keeps at least one core busy
    assert len(history.threads) == 1 and 1 <= history.threads[0] <= threads.cpu_limit() - 1
    assert torch.get_num_threads() == threads.cpu_limit()
