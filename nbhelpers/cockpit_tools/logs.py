"""Cockpit logs: read one from anywhere, one row per step as a frame, and the logs shipped here.

A log is ``{step: {key: value}}`` as ``Cockpit.get_output()`` returns it: one key per tracked
quantity (per-layer values are lists, histograms dicts) plus what the hook records (the
learning rate, the per-epoch losses and accuracies).
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nbhelpers.cockpit_tools.quantities import QUANTITIES

#: Name -> description of the logs shipped in ``nbhelpers/data_files/cockpit_logs``.
SHIPPED_LOGS: dict[str, str] = {
    "handover": (
        "the handover's settings: Tanh CNN, Adam lr 1e-5, ExponentialLR(gamma=1.001) stepped "
        "every batch, gradients never zeroed, rotation augmentation"
    ),
    "fixed": "the fixes: zero_grad every step, Adam lr 1e-3, no schedule, no augmentation, Tanh CNN",
}


def _int_keys(data: Mapping) -> dict[int, dict[str, Any]]:
    try:
        return {
            int(step): dict(entry)
            for step, entry in sorted(data.items(), key=lambda kv: int(kv[0]))
        }
    except (TypeError, ValueError) as err:
        raise ValueError(f"log keys must be step numbers, got {list(data)[:5]!r}") from err


def load_log(source: Any) -> dict[int, dict[str, Any]]:
    """The Cockpit log as ``{step: {quantity name: value}}``, sorted by step.

    Args:
        source: a ``Cockpit`` or a ``CockpitHook`` (anything with ``get_output()``), a log
            dict, or the path of a JSON log (str or Path, with or without ".json").

    Returns:
        The log; per-layer values are lists, histograms dicts of numpy arrays.

    Raises:
        FileNotFoundError: the JSON file does not exist.
        TypeError: unsupported source type.
        ValueError: a key is not a step number.
    """
    if hasattr(source, "get_output"):
        return _int_keys(source.get_output())
    if isinstance(source, Mapping):
        return _int_keys(source)
    if isinstance(source, str | os.PathLike):
        import json_tricks

        path = os.fspath(source)
        path += "" if path.endswith(".json") else ".json"
        if not os.path.exists(path):
            raise FileNotFoundError(f"no Cockpit log at {path}")
        with open(path) as handle:
            return _int_keys(json_tricks.load(handle))
    kinds = "a Cockpit, a CockpitHook, a log dict or the path of a JSON log"
    raise TypeError(f"expected {kinds}, got {type(source).__name__}")


def total_norm(value: Any) -> float:
    """Per-layer L2 norms combined into the norm of the whole parameter vector."""
    return float(np.linalg.norm(np.asarray(value, dtype=float).ravel()))


def layer_sum(value: Any) -> float:
    """Per-layer values (e.g. Hessian traces) summed over the layers."""
    return float(np.sum(np.asarray(value, dtype=float)))


def log_frame(source: Any):
    """One row per step with one column per scalar in the log, ready to plot or inspect.

    A quantity's column is what its registry entry makes of its value (``Quantity.column``):
    per-layer norms (GradNorm, Distance, UpdateSize) become the norm of the whole parameter
    vector, ``sqrt(sum of squares)``; HessTrace is summed over layers; histograms get none.
    Other numbers (learning_rate, epoch_count, per-epoch losses and accuracies) are kept as
    they are. Missing values are NaN.

    Args:
        source: see :func:`load_log`; a frame made here is returned as it is.

    Returns:
        ``pandas.DataFrame`` indexed by ``step`` (int).
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    rows = []
    for step, entry in load_log(source).items():
        row: dict[str, Any] = {"step": step}
        for key, value in entry.items():
            known = QUANTITIES.get(key)
            reduce = known.column if known else float if isinstance(value, numbers.Real) else None
            if reduce is not None and value is not None:
                row[key] = reduce(value)
        rows.append(row)
    if not rows:
        return pd.DataFrame(index=pd.Index([], name="step", dtype=int))
    return pd.DataFrame(rows).set_index("step").sort_index()


def shipped_log_path(name: str) -> Path:
    """Path of a shipped log (``"handover"`` or ``"fixed"``).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing (run scripts/make_cockpit_logs.py).
    """
    if name not in SHIPPED_LOGS:
        raise ValueError(f"unknown shipped Cockpit log {name!r}; valid: {', '.join(SHIPPED_LOGS)}")
    path = Path(str(resources.files("nbhelpers") / "data_files" / "cockpit_logs" / f"{name}.json"))
    if not path.exists():
        raise FileNotFoundError(
            f"shipped Cockpit log {path} is missing; create it with scripts/make_cockpit_logs.py"
        )
    return path


def load_shipped_log(name: str) -> dict[int, dict[str, Any]]:
    """A finished run's Cockpit log shipped with the package, e.g. to show a dashboard at once.

    Args:
        name: one of :data:`SHIPPED_LOGS` ("handover", "fixed").

    Returns:
        The log ``{step: {quantity: value}}`` (plot it with ``plot_dashboard``).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing.
    """
    return load_log(shipped_log_path(name))


def shipped_log_info(name: str) -> dict[str, Any]:
    """How a shipped log was made: settings, data, steps, timings (its ``.meta.json``).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the file is missing.
    """
    path = shipped_log_path(name).with_suffix(".meta.json")
    if not path.exists():
        raise FileNotFoundError(f"no description of the shipped log at {path}")
    return json.loads(path.read_text())
