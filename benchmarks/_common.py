"""What the benchmark scripts share: the machine's state, medians with their spread, results.

Every figure a benchmark reports is the median of several rounds, printed with its spread
(fastest to slowest round), next to the machine's load, so that a reader can tell a real
difference from a busy moment.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from nbhelpers import env

RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as text ("unknown" where the OS has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max", "spread"}`` of the rounds (spread: (max - min) / median)."""
    values = [float(v) for v in values]
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else 0.0
    return {"median": median, "min": min(values), "max": max(values), "spread": spread}


def with_spread(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """``"3.10x (2.90-3.40)"``: the median and, for several rounds, the fastest and slowest."""
    s = summary(values)
    text = f"{s['median']:.{digits}f}{unit}"
    if len(values) > 1:
        text += f" ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
    return text


def machine(device: torch.device | str) -> dict:
    """What the numbers depend on: device, cores, threads, load, platform, library versions."""
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": env.device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "versions": env.versions(),
    }


def write(path: Path, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path`` (folders made) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
