"""Cockpit logs: read one from anywhere, one row per step as a frame, and the logs shipped here.

A log is ``{step: {key: value}}`` as ``Cockpit.get_output()`` returns it: one key per tracked
quantity (per-layer values are lists, histograms dicts) plus what the hook records (the
learning rate, the per-epoch losses and accuracies).

Log files are shared (shipped with the package, passed around on Drive), so a file is read
as plain data, never through ``json_tricks.load`` (whose default hooks import any module a
file names and build any class): ``json.load``, then a check of the structure (steps ->
names -> numbers, lists, small dicts; bounded size and depth) in which only json_tricks's
numeric arrays (``{"__ndarray__": ..., "dtype": "float32", "shape": [...]}``) become numpy
arrays; anything else that asks to be decoded is refused.
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
from nbhelpers.validate import invalid

#: Largest log file read (bytes) and deepest nesting inside one value.
MAX_LOG_BYTES = 64 << 20
MAX_DEPTH = 8
#: dtypes a json_tricks array in a log may have.
ARRAY_DTYPES = frozenset(
    f"{kind}{bits}" for kind, sizes in (("float", (16, 32, 64)), ("int", (8, 16, 32, 64)),
                                        ("uint", (8, 16, 32, 64))) for bits in sizes
) | {"bool"}  # fmt: skip
_ARRAY_KEYS = {"__ndarray__", "dtype", "shape", "Corder"}

#: Name -> description of the logs shipped in ``nbhelpers/data_files/cockpit_logs`` (notebook
#: 06's two Cockpit runs, written by ``scripts/make_cockpit_logs.py``; details in each
#: ``.meta.json``, see :func:`shipped_log_info`).
SHIPPED_LOGS: dict[str, str] = {
    "handover": (
        "notebook 06's run of the handover's optimizer settings after the fixes of notebooks "
        "03-05: Tanh CNN, Adam lr 1e-5, ExponentialLR(gamma=1.001) stepped every batch; "
        "gradients zeroed every step, no augmentation, valid/test held out; quick budget "
        "(batch 16, width 32), first 500 steps, synthetic stand-in data, preset 'handover'"
    ),
    "fixed": (
        "notebook 06's fix: the same run with Adam lr 1e-3 and no schedule; quick budget "
        "(batch 16, width 32), first 500 steps, synthetic stand-in data, preset 'handover'"
    ),
}


def _int_keys(data: Mapping) -> dict[int, dict[str, Any]]:
    try:
        return {
            int(step): dict(entry)
            for step, entry in sorted(data.items(), key=lambda kv: int(kv[0]))
        }
    except (TypeError, ValueError) as err:
        raise ValueError(f"log keys must be step numbers, got {list(data)[:5]!r}") from err


def _array(value: dict, where: str) -> np.ndarray:
    """A json_tricks array as numpy, if it is a plain numeric one."""
    if set(value) - _ARRAY_KEYS or value.get("dtype") not in ARRAY_DTYPES:
        raise invalid(f"array at {where}", f"{sorted(value)} dtype {value.get('dtype')!r}",
                      f"numeric dtypes only: {', '.join(sorted(ARRAY_DTYPES))}")  # fmt: skip
    try:
        shape = tuple(int(k) for k in value.get("shape", ()))
        return np.asarray(value["__ndarray__"], dtype=value["dtype"]).reshape(shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"array at {where} is malformed: {err}") from err


def _plain(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` checked to be plain data (numbers, strings, lists, dicts), arrays decoded."""
    if depth > MAX_DEPTH:
        raise ValueError(f"log value at {where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return _array(value, where)
        hooks = [k for k in value if not isinstance(k, str) or k.startswith("__")]
        if hooks:
            raise invalid(f"key at {where}", hooks[0], "plain names (a log is data, not objects)")
        return {k: _plain(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise invalid(f"value at {where}", type(value).__name__, "numbers, strings, lists, dicts")


def read_log_file(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """A JSON Cockpit log from a file, read as plain data (module docstring).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not JSON, too large, or not a Cockpit log's structure (the message
            names where).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Cockpit log at {path}")
    if path.stat().st_size > MAX_LOG_BYTES:
        raise invalid(f"size of {path}", path.stat().st_size, f"at most {MAX_LOG_BYTES} bytes")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not a JSON Cockpit log: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(e, dict) for e in data.values()):
        raise ValueError(f"{path} is not a Cockpit log: expected {{step: {{name: value}}}}")
    return _int_keys({step: _plain(entry, f"step {step}") for step, entry in data.items()})


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
        ValueError: a key is not a step number; a file that is not plain log data
            (see :func:`read_log_file`).
    """
    if hasattr(source, "get_output"):
        return _int_keys(source.get_output())
    if isinstance(source, Mapping):
        return _int_keys(source)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        return read_log_file(path if path.endswith(".json") else path + ".json")
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
