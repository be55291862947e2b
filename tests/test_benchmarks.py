"""Tests of the benchmark tooling (not of speed): the GPU check stops clearly without a GPU and
never hangs, the busy neighbour is bounded and always stopped, the ratios are what they say.

No test here asserts on how fast anything runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbhelpers.profiling import TimingProfile
from nbhelpers.threads import busy_neighbour

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_busy  # noqa: E402
import bench_pipeline  # noqa: E402


def _env(**changes: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **changes}
    return env


# --------------------------------------------------------------------------- the GPU check
def test_gpu_check_stops_clearly_without_a_gpu(tmp_path):
    out = tmp_path / "gpu"
    t0 = time.perf_counter()
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, timeout=180,
        env=_env(CUDA_VISIBLE_DEVICES="", GPU_CHECK_OUT=str(out), PYTHON=sys.executable),
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA GPU here" in done.stderr and "Nothing was measured" in done.stderr
    assert "== device check" in done.stdout and "bench_pipeline" not in done.stdout
    assert not out.exists()  # nothing was written
    assert time.perf_counter() - t0 < 180


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for python: a device check that finds a GPU, benchmarks that only say how they ran
if [ "$1" = "-" ]; then cat >/dev/null; echo "cuda:0 Fake GPU"; exit 0; fi
echo "ran $*" >> "$FAKE_LOG"
case "$1" in
  *bench_training.py) sleep 60 ;;   # a step that hangs
  *bench_cockpit.py) [ "$2" = "--help" ] && echo "usage: --device DEVICE" ;;
esac
exit 0
"""


def test_gpu_check_runs_every_step_on_cuda_and_stops_a_hanging_one(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log, out = tmp_path / "log", tmp_path / "gpu"
    t0 = time.perf_counter()
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
        env=_env(PYTHON=str(fake), FAKE_LOG=str(log), GPU_CHECK_OUT=str(out),
                 GPU_CHECK_STEP_S="10"),
    )  # fmt: skip
    assert time.perf_counter() - t0 < 60  # the hanging step was stopped, not waited for
    ran = log.read_text().splitlines()
    for script in ("bench_pipeline", "bench_cockpit", "bench_training", "time_full_budget"):
        line = next(r for r in ran if f"{script}.py" in r and "--help" not in r)
        assert "--device cuda" in line and str(out) in line
    assert done.returncode == 1
    assert "bench_training.py did not finish within 10 s" in done.stderr
    assert "not passed: bench_training.py (stopped after 10 s)" in done.stderr
    assert out.is_dir()


def test_full_budget_timing_refuses_to_run_without_a_gpu(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "time_full_budget.py"), "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=120, env=_env(CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert done.returncode == 2 and "no CUDA GPU is visible here" in done.stderr
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- the busy neighbour
def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_neighbour_burns_while_the_block_runs_and_is_stopped_after():
    with busy_neighbour(cores=1, max_seconds=60) as procs:
        assert len(procs) == 1 and procs[0].poll() is None
        if Path("/proc/self/stat").exists():
            start = _cpu_ticks(procs[0].pid)
            time.sleep(1.0)
            assert _cpu_ticks(procs[0].pid) > start  # it is burning CPU
    assert procs[0].returncode is not None and procs[0].returncode != 0  # terminated by us


def test_neighbour_is_stopped_when_the_block_fails():
    with pytest.raises(RuntimeError, match="boom"), busy_neighbour(1, 60) as procs:
        raise RuntimeError("boom")
    assert procs[0].returncode is not None


def test_neighbour_ends_itself_after_its_bound():
    with busy_neighbour(cores=1, max_seconds=1.0) as procs:
        deadline = time.monotonic() + 30
        while procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs[0].returncode == 0  # it ended on its own, before the block did


@pytest.mark.parametrize(("kwargs", "match"), [({"cores": 0}, "cores=0"),
                                               ({"max_seconds": 0}, "max_seconds=0"),
                                               ({"max_seconds": 7200}, "max_seconds=7200")])  # fmt: skip
def test_neighbour_refuses_bad_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match), busy_neighbour(**kwargs):
        pass


def test_busy_worker_trains_in_a_fresh_process_with_the_learners_default():
    spec = dict(width=4, batch=8, n_train=32, epochs=1, warmup=1)
    for variant in ("defaults", "old"):
        result = bench_busy._measure(variant, spec, timeout_s=120)
        assert result["images_per_s"] > 0 and result["wall_s"] > 0
        assert all(isinstance(t, int) and t >= 1 for t in result["threads"])
        assert result["learner_threads"] >= 1
        if variant == "old":  # torch's setting as it is: one thread per core, untouched
            assert result["threads"] == [result["learner_threads"]]


# --------------------------------------------------------------------------- the ratios
def _profile(epoch_s: float, diagnostics_s: float = 0.0, images_per_s: float = 0.0):
    train_s = {"data loading": 0.0, "forward/backward/step": epoch_s, "diagnostics": diagnostics_s}
    return TimingProfile("p", "cpu", 1, 10, 1, 10, 0, 1, train_s, epoch_s + diagnostics_s)


def test_pipeline_ratios_compare_like_with_like_per_round():
    rounds = {
        "handover": [_profile(8.0, 4.0), _profile(9.0, 3.0)],  # with Cockpit: 12 s per epoch
        "handover, no Cockpit": [_profile(6.0), _profile(6.0)],
        "tuned": [_profile(3.0), _profile(4.0)],
        "tuned, contiguous": [_profile(3.6), _profile(4.4)],
        "tuned + Cockpit (default preset)": [_profile(3.6, 1.8), _profile(4.4, 2.2)],
    }
    raw = [{"images_per_s": 5.0}, {"images_per_s": 2.5}]
    ratios = bench_pipeline._round_ratios(rounds, raw)
    assert ratios["tuned_over_handover"] == pytest.approx([4.0, 3.0])  # Cockpit's handover
    assert ratios["cockpit_handover_over_plain"] == pytest.approx([2.0, 2.0])
    # the Cockpit step counts its diagnostics (its backward pass) and is compared in one layout
    assert ratios["cockpit_default_over_plain"] == pytest.approx([1.5, 1.5])
    assert ratios["channels_last_gain"] == pytest.approx([1.2, 1.1])
    assert ratios["tuned_loop_over_raw"] == pytest.approx([10 / 3 / 5.0, 10 / 4 / 2.5])


def test_pipeline_ratios_compare_cockpit_with_the_plain_float32_step():
    rounds = {
        "handover": [_profile(8.0, 4.0)],
        "handover, no Cockpit": [_profile(6.0)],
        "tuned": [_profile(2.0)],  # channels_last and bf16
        "tuned, contiguous": [_profile(2.5)],
        "tuned, fp32": [_profile(4.0)],
        "tuned, plain": [_profile(5.0)],  # contiguous float32: what Cockpit runs in
        "tuned + Cockpit (default preset)": [_profile(5.0, 2.5)],
    }
    ratios = bench_pipeline._round_ratios(rounds, [{"images_per_s": 5.0}])
    assert ratios["bf16_gain"] == pytest.approx([2.0]) and ratios[
        "channels_last_gain"
    ] == pytest.approx([1.25])
    assert ratios["cockpit_default_over_plain"] == pytest.approx([1.5])
    assert ratios["tuned_over_handover"] == pytest.approx([6.0])


def test_summary_helpers():
    from _common import summary, with_spread

    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "spread": 1.0}
    assert with_spread([3.0, 1.0, 2.0], 1, "x") == "2.0x (1.0-3.0)"
    assert with_spread([2.0]) == "2.00"
    assert summary([1, 2])["median"] == 1.5
