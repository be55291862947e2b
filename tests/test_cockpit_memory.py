"""The Cockpit guard is never optimistic: its estimate against the measured peak of real runs.

Each configuration trains a few steps with :class:`~nbhelpers.cockpit_tools.CockpitHook` in a
fresh Python process (run as ``python tests/test_cockpit_memory.py CONFIG``) and measures the
peak resident memory of that process above what it held before training: Linux's high-water
mark ``VmHWM`` is reset (``/proc/self/clear_refs``) after imports, model, data and one small
warm-up run of the same configuration (library code and one-off buffers), then read after
training. The guard's estimate of the busiest tracked step must be at least the measured peak
and at most twice it.
"""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

#: name -> configuration: width and activation/norm of ``build_cnn``, batch size, the tracked
#: quantities (a preset name or [name, every, options] triples), optimizer, steps to train.
CONFIGS = {
    "handover set, Adam (Alpha keeps per-example gradients)": {
        "width": 16, "batch": 48, "preset": "handover", "steps": 3,
    },
    "handover set, plain SGD (Alpha projects while it runs)": {
        "width": 32, "batch": 32, "preset": "handover", "optimizer": "sgd", "steps": 3,
    },
    "standard: Alpha, tests and histogram coincide at step 0": {
        "width": 16, "batch": 48, "preset": "standard", "steps": 3,
    },
    "Cockpit's economy: everything at every step": {
        "width": 8, "batch": 64, "preset": "economy", "steps": 3,
    },
    "thorough: GGN, TIC, 2D histogram, Lanczos at step 0": {
        "width": 8, "batch": 32, "preset": "thorough", "steps": 2,
    },
    "exact Hessian diagonal, width 1": {
        "width": 1, "batch": 2, "preset": [["Loss", 1, {}], ["HessTrace", 2, {}]], "steps": 2,
    },
    "exact GGN diagonal at every step (resident memory grows, then levels off)": {
        "width": 8, "batch": 48,
        "preset": [["Loss", 1, {}], ["HessTrace", 1, {"curvature": "diag_ggn_exact"}]],
        "steps": 6,
    },
    "GroupNorm model, standard": {
        "width": 8, "batch": 64, "preset": "standard", "activation": "relu", "norm": "group",
        "steps": 3,
    },
}  # fmt: skip


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(x for x in handle if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _setup(config: dict, batch: int, steps: int):
    import torch

    from nbhelpers import cockpit_tools as ct
    from nbhelpers.models import build_cnn

    torch.manual_seed(0)
    model = build_cnn(config.get("activation", "tanh"), config.get("norm", "none"), config["width"])
    make = torch.optim.SGD if config.get("optimizer") == "sgd" else torch.optim.Adam
    optimizer = make(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(steps)
    ]
    preset = config["preset"]
    if not isinstance(preset, str):
        preset = [ct.QuantitySpec(name, every, options) for name, every, options in preset]
    hook = ct.CockpitHook(preset, available_bytes=64 << 30)
    return model, optimizer, data, hook


def measure(config: dict) -> dict:
    """Train ``config`` in this process; the guard's estimate and the measured peak (bytes)."""
    import torch

    from nbhelpers.train import train

    torch.set_num_threads(1)
    warm = _setup(config, 2, 2)
    train(*warm[:3], epochs=1, hooks=[warm[3]], progress=False)
    del warm
    model, optimizer, data, hook = _setup(config, config["batch"], config["steps"])
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the high-water mark
    train(model, optimizer, copy.copy(data), epochs=1, hooks=[hook], progress=False)
    report = hook.report
    return {
        "estimate": report.peak_bytes,
        "measured": _status("VmHWM") - before,
        "peak_step": report.peak_step,
        "refused": [row.quantity for row in report.refused],
    }


def _run_fresh(config: dict) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_guard_estimate_bounds_the_measured_peak(name):
    config = CONFIGS[name]
    out = _run_fresh(config)
    mib = {k: round(out[k] / 2**20, 1) for k in ("estimate", "measured")}
    print(f"{name}: estimate {mib['estimate']} MiB, measured {mib['measured']} MiB")
    assert out["refused"] == []  # accepted, so it must keep its promise
    assert out["peak_step"] < config["steps"]  # the busiest step was trained
    assert out["measured"] > 8 << 20  # Cockpit's memory is well above noise here
    assert out["estimate"] >= out["measured"], mib
    assert out["estimate"] <= 2 * out["measured"], mib


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's nbhelpers
    print(json.dumps(measure(json.loads(sys.argv[1]))))
