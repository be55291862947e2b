"""Tests of nbhelpers.profiling: phase attribution, projection, tables, charts, bad input.

No test asserts on speed; timings only serve to check where time is attributed.
"""

from __future__ import annotations

import io
import math
import time

import pytest
import torch

from nbhelpers.data import TensorLoader
from nbhelpers.models import build_cnn
from nbhelpers.profiling import (
    MEMORY_FORMATS,
    PHASES,
    PRECISIONS,
    Autocast,
    ProfileOptions,
    TimingProfile,
    batch_size_sweep,
    compare_profiles,
    count_operations,
    fastest_memory_format,
    fastest_precision,
    median_profile,
    plot_comparison,
    profile_training,
    repeat_profiles,
    time_raw_steps,
)

SLEEP_S = 0.3


def _data(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return images, labels


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = build_cnn("tanh", "none", width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = _data(64)
    loader = TensorLoader(images, labels, 16, shuffle=True)
    v_images, v_labels = _data(40, seed=1)
    eval_loaders = {
        "valid": TensorLoader(v_images, v_labels, 8, shuffle=False),
        "test": TensorLoader(v_images[:20], v_labels[:20], 8, shuffle=False),
    }
    return model, optimizer, loader, eval_loaders


class FakeClock:
    """Stands in for ``time.perf_counter``: advances 1 microsecond per reading, plus what
    :meth:`sleep` adds, so attribution can be checked exactly whatever the machine's load."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1e-6
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class SleepyStepHook:
    """Sleeps at the end of every step (a stand-in for an expensive diagnostic)."""

    def __init__(self, sleep=time.sleep) -> None:
        self.calls = 0
        self.sleep = sleep

    def on_step_end(self, step, loss):
        self.calls += 1
        self.sleep(SLEEP_S)


class SleepyBackwardHook:
    """Does the backward pass itself, like Cockpit, and sleeps."""

    def __init__(self, sleep=time.sleep) -> None:
        self.sleep = sleep

    def backward(self, step, model, x, y, logits, loss, loss_fn):
        self.sleep(SLEEP_S)
        loss.backward()
        return True


def test_phases_add_up_to_total(setup):
    model, optimizer, loader, eval_loaders = setup
    prof = profile_training(model, optimizer, loader, steps=3, eval_loaders=eval_loaders)
    assert isinstance(prof, TimingProfile)
    assert set(prof.measured_s) == set(PHASES)
    assert all(v >= 0 for v in prof.measured_s.values())
    phase_sum = sum(prof.measured_s.values())
    assert phase_sum == pytest.approx(prof.total_s, rel=0.05, abs=0.05)
    assert prof.time_per_epoch_s == pytest.approx(sum(prof.epoch_s.values()))
    assert prof.steps == 3 and prof.images == 48


def test_table_has_expected_rows_and_columns(setup):
    model, optimizer, loader, eval_loaders = setup
    prof = profile_training(model, optimizer, loader, steps=2, eval_loaders=eval_loaders, label="x")
    df = prof.table()
    assert list(df.index) == [*PHASES, "total"]
    assert list(df.columns) == ["measured (s)", "per epoch (s)", "share (%)"]
    assert df.loc["total", "per epoch (s)"] == pytest.approx(
        df.loc[list(PHASES), "per epoch (s)"].sum()
    )
    assert df.loc[list(PHASES), "share (%)"].sum() == pytest.approx(100.0)
    assert df.attrs["label"] == "x" and df.attrs["images_per_s"] > 0
    assert "x:" in prof.summary()


def test_sleeping_step_hook_lands_in_diagnostics(setup):
    model, optimizer, loader, _ = setup
    hook = SleepyStepHook()
    prof = profile_training(model, optimizer, loader, steps=3, hooks=[hook], warmup_steps=1)
    assert hook.calls == 3  # not attached during the warm-up
    assert prof.measured_s["diagnostics"] >= 3 * SLEEP_S


def test_hook_time_is_attributed_exactly_with_a_fake_clock(setup, monkeypatch):
    model, optimizer, loader, _ = setup
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    prof = profile_training(model, optimizer, loader, steps=3, hooks=[SleepyStepHook(clock.sleep)])
    assert prof.measured_s["diagnostics"] == pytest.approx(3 * SLEEP_S, abs=1e-3)
    assert prof.measured_s["forward/backward/step"] < 1e-3
    assert prof.measured_s["data loading"] < 1e-3
    assert prof.notes == []
    assert sum(prof.measured_s.values()) == pytest.approx(prof.total_s, abs=1e-3)


def test_hook_doing_backward_is_diagnostics_and_noted(setup, monkeypatch):
    model, optimizer, loader, _ = setup
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    prof = profile_training(
        model, optimizer, loader, steps=2, hooks=[SleepyBackwardHook(clock.sleep)]
    )
    assert prof.measured_s["diagnostics"] == pytest.approx(2 * SLEEP_S, abs=1e-3)
    assert prof.measured_s["forward/backward/step"] < 1e-3
    assert any("backward" in note for note in prof.notes)


def test_projection_scales_steps_and_amortises_evaluation(setup):
    model, optimizer, loader, eval_loaders = setup
    prof = profile_training(
        model, optimizer, loader, steps=2, eval_loaders=eval_loaders, eval_every=2, epochs=5
    )
    assert prof.steps_per_epoch == len(loader) == 4
    for phase in ("data loading", "forward/backward/step", "diagnostics"):
        assert prof.epoch_s[phase] == pytest.approx(prof.measured_s[phase] * 4 / 2)
    assert set(prof.eval_split_s) == {"valid", "test"}
    assert prof.epoch_s["evaluation"] == pytest.approx(sum(prof.eval_split_s.values()) / 2)
    assert prof.time_per_run_s == pytest.approx(5 * prof.time_per_epoch_s)
    assert prof.epoch_images == 64


def test_no_evaluation_when_eval_every_is_zero(setup):
    model, optimizer, loader, eval_loaders = setup
    no_eval = profile_training(
        model, optimizer, loader, steps=1, eval_loaders=eval_loaders, eval_every=0
    )
    assert no_eval.epoch_s["evaluation"] == 0.0 and no_eval.eval_split_s == {}


def test_eval_max_batches_caps_the_timed_batches(setup, monkeypatch):
    model, optimizer, loader, eval_loaders = setup
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    prof = profile_training(
        model, optimizer, loader, steps=1, eval_loaders=eval_loaders, eval_max_batches=2
    )
    # valid: 2 of 5 batches timed (16 of 40 images); test: 2 of 3 batches (16 of 20 images)
    assert prof.eval_split_s["valid"] / prof.eval_split_s["test"] == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="eval_max_batches"):
        profile_training(model, optimizer, loader, steps=1, eval_max_batches=0)


def test_project_changes_epochs_and_evaluation_without_new_timing(setup):
    model, optimizer, loader, eval_loaders = setup
    prof = profile_training(model, optimizer, loader, steps=1, eval_loaders=eval_loaders, epochs=4)
    fewer = prof.project("fewer", epochs=2)
    assert fewer.label == "fewer" and fewer.time_per_run_s == pytest.approx(prof.time_per_run_s / 2)
    assert fewer.epoch_s == prof.epoch_s
    valid = prof.project("valid only", eval_splits=("valid",))
    assert valid.epoch_s["evaluation"] == pytest.approx(prof.eval_split_s["valid"])
    assert valid.measured_s["evaluation"] == pytest.approx(prof.eval_split_measured_s["valid"])
    assert sum(valid.measured_s.values()) == pytest.approx(valid.total_s, rel=0.05, abs=0.05)
    for phase in ("data loading", "forward/backward/step", "diagnostics"):
        assert valid.epoch_s[phase] == prof.epoch_s[phase]
    none = prof.project("no evaluation", eval_every=0)
    assert none.epoch_s["evaluation"] == 0.0 and none.eval_split_s == {}
    every2 = prof.project("every 2", eval_every=2)
    assert every2.epoch_s["evaluation"] == pytest.approx(prof.epoch_s["evaluation"] / 2)
    assert prof.epochs == 4 and "valid" in prof.eval_split_s  # the original is unchanged
    with pytest.raises(ValueError, match="not measured"):
        prof.project("x", eval_splits=("train",))
    with pytest.raises(ValueError, match="epochs"):
        prof.project("x", epochs=0)


def test_restore_keeps_model_unchanged(setup):
    model, optimizer, loader, _ = setup
    before = [p.detach().clone() for p in model.parameters()]
    profile_training(model, optimizer, loader, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    profile_training(model, optimizer, loader, steps=2, restore=False)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, None])
def test_bad_steps_raise(setup, steps):
    model, optimizer, loader, _ = setup
    with pytest.raises(ValueError, match="steps"):
        profile_training(model, optimizer, loader, steps=steps)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eval_every": -1}, "eval_every"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_options_raise(setup, kwargs, match):
    model, optimizer, loader, _ = setup
    with pytest.raises(ValueError, match=match):
        profile_training(model, optimizer, loader, steps=1, **kwargs)


def test_bad_model_loader_and_eval_loaders_raise(setup):
    model, optimizer, loader, _ = setup
    with pytest.raises(TypeError, match="nn.Module"):
        profile_training("model", optimizer, loader, steps=1)
    with pytest.raises(TypeError, match="eval_loaders"):
        profile_training(model, optimizer, loader, steps=1, eval_loaders=[loader])
    unsized = (batch for batch in loader)
    with pytest.raises(ValueError, match="len()"):
        profile_training(model, optimizer, unsized, steps=1)
    with pytest.raises(TypeError, match="eval_fractions"):
        profile_training(model, optimizer, loader, steps=1, eval_fractions=0.5)


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_charts_render_to_png(setup):
    import matplotlib.pyplot as plt

    model, optimizer, loader, eval_loaders = setup
    slow = profile_training(
        model, optimizer, loader, steps=1, eval_loaders=eval_loaders, label="slow"
    )
    fast = profile_training(model, optimizer, loader, steps=1, label="fast")
    fig = slow.plot()
    png = _png_bytes(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_title()
    table = compare_profiles([slow, fast])
    for per in ("epoch", "run"):
        fig2 = plot_comparison(table, per=per)
        assert len(_png_bytes(fig2)) > 2000
        assert fig2.axes[0].get_legend() is not None
    plt.close("all")
    with pytest.raises(ValueError, match="per"):
        plot_comparison(table, per="step")


def test_compare_profiles_speedups(setup):
    model, optimizer, loader, eval_loaders = setup
    slow = profile_training(model, optimizer, loader, steps=1, eval_loaders=eval_loaders, epochs=4)
    fast = profile_training(model, optimizer, loader, steps=1, epochs=2)
    table = compare_profiles({"handover": slow, "tuned": fast})
    assert list(table.index) == ["handover", "tuned"]
    assert table.loc["handover", "speed-up per epoch"] == pytest.approx(1.0)
    expected = slow.time_per_epoch_s / fast.time_per_epoch_s
    assert table.loc["tuned", "speed-up per epoch"] == pytest.approx(expected)
    expected_run = slow.time_per_run_s / fast.time_per_run_s
    assert table.loc["tuned", "speed-up per run"] == pytest.approx(expected_run)
    with pytest.raises(ValueError, match="baseline"):
        compare_profiles([slow], baseline="nope")
    with pytest.raises(ValueError, match="unique"):
        compare_profiles([slow, slow])
    with pytest.raises(ValueError, match="at least one"):
        compare_profiles([])
    with pytest.raises(TypeError, match="TimingProfile"):
        compare_profiles({"x": "not a profile"})


def test_time_raw_steps_and_batch_size_sweep_on_cpu():
    model = build_cnn("tanh", "none", width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = time_raw_steps(model, optimizer, 8, steps=2)
    assert result["batch_size"] == 8 and result["images_per_s"] > 0 and result["step_s"] > 0
    df = batch_size_sweep(
        lambda: build_cnn("tanh", "none", width=4), device="cpu", start=2, max_batch_size=8, steps=1
    )
    assert list(df["batch size"]) == [2, 4, 8]
    assert (df["status"] == "ok").all()
    assert df.attrs["largest_ok"] == 8 and df.attrs["best"] in (2, 4, 8)
    with pytest.raises(ValueError, match="start"):
        batch_size_sweep(lambda: model, device="cpu", start=16, max_batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        time_raw_steps(model, optimizer, 0)


class OutOfMemoryAbove(torch.nn.Module):
    """A tiny model that raises the out-of-memory error torch gives when a batch is too large."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return self.linear(x.flatten(1))


def test_batch_size_sweep_stops_at_out_of_memory():
    df = batch_size_sweep(
        lambda: OutOfMemoryAbove(8), device="cpu", start=2, max_batch_size=64, steps=1
    )
    assert list(df["batch size"]) == [2, 4, 8, 16]
    assert list(df["status"]) == ["ok", "ok", "ok", "out of memory"]
    assert df.attrs["largest_ok"] == 8
    assert list(df.columns) == ["batch size", "images/s", "step (ms)", "peak memory (MB)", "status"]


def test_autocast_wrapper_returns_float32_logits():
    model = Autocast(build_cnn("relu", "none", width=4), dtype=torch.bfloat16, device_type="cpu")
    out = model(torch.rand(2, 3, 32, 32))
    assert out.dtype == torch.float32 and out.shape == (2, 10)
    with pytest.raises(ValueError, match="dtype"):
        Autocast(model, dtype=torch.float32)


def test_options_as_an_object_or_by_name(setup):
    model, optimizer, loader, eval_loaders = setup
    options = ProfileOptions(eval_every=2, epochs=3, label="object")
    by_object = profile_training(
        model, optimizer, loader, steps=1, eval_loaders=eval_loaders, options=options
    )
    by_name = profile_training(
        model, optimizer, loader, steps=1, eval_loaders=eval_loaders, options=options, label="name"
    )
    assert (by_object.label, by_name.label) == ("object", "name")  # a name replaces the object's
    assert by_object.eval_every == by_name.eval_every == 2 and by_name.epochs == 3
    with pytest.raises(ValueError, match="warmup_steps=-1"):
        ProfileOptions(warmup_steps=-1)


# --------------------------------------------------------------------------- rounds, threads, layout
def _profile_with_epoch_s(label: str, seconds: float) -> TimingProfile:
    """A profile whose one training phase makes its epoch take ``seconds`` (no timing)."""
    train_s = {"data loading": 0.0, "forward/backward/step": seconds, "diagnostics": 0.0}
    return TimingProfile(label, "cpu", 1, 16, 1, 16, 0, 2, train_s, seconds)


def test_median_profile_keeps_the_middle_round_and_all_rounds():
    rounds = [_profile_with_epoch_s("x", s) for s in (3.0, 1.0, 2.0)]
    median = median_profile(rounds)
    assert median.time_per_epoch_s == 2.0
    assert sorted(median.round_epoch_s) == [1.0, 2.0, 3.0]
    assert median.spread == pytest.approx((3.0 - 1.0) / 2.0)
    assert "median of 3 rounds: 1.0-3.0 s" in median.summary()
    assert median_profile(rounds[:2]).time_per_epoch_s == 1.0  # even count: the lower one
    assert _profile_with_epoch_s("y", 1.0).spread == 0.0
    projected = median.project("two epochs", epochs=4)
    assert projected.time_per_run_s == 8.0 and len(projected.rounds) == 3
    assert [r.epochs for r in projected.rounds] == [4, 4, 4]
    with pytest.raises(ValueError, match="at least one"):
        median_profile([])


def test_repeat_profiles_interleaves_the_setups():
    calls = []

    def measure(label, seconds):
        def fn():
            calls.append(label)
            return _profile_with_epoch_s("unnamed", seconds.pop(0))

        return fn

    result = repeat_profiles(
        {"a": measure("a", [5.0, 1.0, 3.0]), "b": measure("b", [2.0, 2.0, 2.0])}, rounds=3
    )
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert result["a"].label == "a" and result["a"].time_per_epoch_s == 3.0
    table = compare_profiles(result, baseline="a")
    assert table.loc["a", "rounds"] == 3 and table.loc["a", "spread (%)"] == pytest.approx(400 / 3)
    assert table.loc["b", "spread (%)"] == 0.0
    assert table.loc["b", "speed-up per epoch"] == pytest.approx(1.5)
    fig = plot_comparison(table)
    assert len(fig.axes[0].lines) == 1  # one whisker: "b" has no spread
    with pytest.raises(ValueError, match="rounds=0"):
        repeat_profiles({"a": measure("a", [1.0])}, rounds=0)


def test_profiling_sets_its_threads_for_the_whole_measurement_and_restores(setup):
    model, optimizer, loader, eval_loaders = setup
    before = torch.get_num_threads()
    seen = []

    class Spy:
        def on_step_end(self, step, loss):
            seen.append(torch.get_num_threads())

    try:
        torch.set_num_threads(1)
        prof = profile_training(
            model, optimizer, loader, steps=2, eval_loaders=eval_loaders, hooks=[Spy()], threads=2
        )
        assert prof.threads == 2 and seen == [2, 2]
        assert torch.get_num_threads() == 1
        raw = time_raw_steps(model, optimizer, 8, steps=1, threads=2)
        assert raw["threads"] == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_fastest_memory_format_names_a_layout_and_keeps_the_default_within_the_margin():
    def make():
        return build_cnn("relu", "batch", 4)

    name, seconds = fastest_memory_format(make, 8, device="cpu", rounds=2)
    assert name in MEMORY_FORMATS and set(seconds) == set(MEMORY_FORMATS)
    assert all(s > 0 for s in seconds.values())
    expected = "channels_last" if seconds["channels_last"] * 1.05 <= seconds["contiguous"] else None
    assert name == (expected or "contiguous")
    with pytest.raises(ValueError, match="min_gain=1.5"):
        fastest_memory_format(make, 8, device="cpu", min_gain=1.5)


def test_fastest_memory_format_needs_channels_last_to_win_by_the_margin(monkeypatch):
    from nbhelpers import profiling

    def timed(*args, channels_last=False, **kwargs):  # channels_last 10% faster, every round
        return {"step_s": 0.009 if channels_last else 0.010}

    monkeypatch.setattr(profiling, "time_raw_steps", timed)
    make = lambda: build_cnn("relu", "batch", 4)  # noqa: E731
    assert fastest_memory_format(make, 8, device="cpu", min_gain=0.05)[0] == "channels_last"
    assert fastest_memory_format(make, 8, device="cpu", min_gain=0.2)[0] == "contiguous"


def test_count_operations_counts_forward_backward_and_step():
    model = build_cnn("relu", "batch", 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))

    def forward():
        model(x)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    n_forward, n_step = count_operations(forward), count_operations(step)
    assert n_forward >= 6 * 3  # six convolutions, their norms and activations at least
    assert n_step > 2 * n_forward  # backward and Adam add more than the forward pass
    assert count_operations(lambda: None) == 0


def test_fastest_memory_format_keeps_the_default_where_channels_last_fails(monkeypatch):
    from nbhelpers import profiling

    real = profiling.time_raw_steps

    def no_channels_last(*args, channels_last=False, **kwargs):
        if channels_last:
            raise RuntimeError("channels_last is not supported on this device")
        return real(*args, channels_last=channels_last, **kwargs)

    monkeypatch.setattr(profiling, "time_raw_steps", no_channels_last)
    name, seconds = fastest_memory_format(lambda: build_cnn("relu", "batch", 4), 8, device="cpu")
    assert name == "contiguous" and seconds["channels_last"] == float("inf")


def test_fastest_precision_needs_bf16_to_win_by_the_margin(monkeypatch):
    from nbhelpers import profiling

    def timed(model, *args, **kwargs):  # bf16 (the Autocast wrapper) 10% faster, every round
        return {"step_s": 0.009 if isinstance(model, Autocast) else 0.010}

    monkeypatch.setattr(profiling, "time_raw_steps", timed)
    make = lambda: build_cnn("relu", "batch", 4)  # noqa: E731
    name, seconds = fastest_precision(make, 8, device="cpu", min_gain=0.05)
    assert name == "bf16" and set(seconds) == set(PRECISIONS)
    assert fastest_precision(make, 8, device="cpu", min_gain=0.2)[0] == "fp32"
    with pytest.raises(ValueError, match="memory_format='nhwc'"):
        fastest_precision(make, 8, device="cpu", memory_format="nhwc")


def test_fastest_precision_measures_both_and_keeps_fp32_where_bf16_fails(monkeypatch):
    from nbhelpers import profiling

    name, seconds = fastest_precision(
        lambda: build_cnn("relu", "batch", 4), 8, device="cpu", rounds=2
    )
    assert name in PRECISIONS and all(0 < s < math.inf for s in seconds.values())
    real = profiling.time_raw_steps

    def no_bf16(model, *args, **kwargs):
        if isinstance(model, Autocast):
            raise RuntimeError("bfloat16 is not supported on this device")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(profiling, "time_raw_steps", no_bf16)
    name, seconds = fastest_precision(lambda: build_cnn("relu", "batch", 4), 8, device="cpu")
    assert name == "fp32" and seconds["bf16"] == math.inf


def test_with_precision_wraps_only_for_bf16():
    from nbhelpers.profiling import with_precision

    model = build_cnn("relu", "batch", 4)
    assert with_precision(model, "fp32", "cpu") is model
    wrapped = with_precision(model, "bf16", "cpu")
    assert isinstance(wrapped, Autocast) and wrapped.model is model
    assert wrapped(torch.rand(2, 3, 32, 32)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision='fp16'"):
        with_precision(model, "fp16", "cpu")
