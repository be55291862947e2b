"""Run records: one JSON file per training run under ``runs/``, and the config-hash cache.

A record holds the run's configuration, per-epoch metrics, per-step training
losses, timings, seed, device and library versions. Files are written
atomically (a temporary file in the same directory, then ``os.replace``), so an
interrupted write never leaves a half-written record.

The cache: a configuration's key is the SHA-256 of its sorted-keys JSON plus
:data:`CODE_VERSION` (bumped whenever a change to the training code would change
results). :func:`find_cached` returns a complete (or diverged) record with the same
key, so a notebook re-run does not retrain; interrupted runs are saved but never served.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nbhelpers.files import atomic_path
from nbhelpers.validate import one_of

__all__ = [
    "CODE_VERSION", "RunRecord", "config_hash", "default_runs_dir", "find_cached", "load_record",
    "record_path", "save_record",
]  # fmt: skip

#: Salt of every cache key. Bump it whenever what a record of the same configuration holds or
#: means changes: training code that changes the numbers a config produces, new or renamed
#: record fields, a new status. Old records then miss the cache and are retrained.
#: 2: records gained ``step_lrs`` and the "diverged" status; unused timings/extra entries went.
CODE_VERSION = "nbhelpers-train-2"

STATUSES = ("complete", "interrupted", "diverged")
#: Statuses a cache lookup serves: a diverged run diverges again with the same config.
_SERVED = ("complete", "diverged")


@dataclass
class RunRecord:
    """Everything one training run produced.

    Attributes:
        name: the run's name (from its configuration).
        config: the configuration as a plain dict.
        config_hash: cache key (hex SHA-256, see :func:`config_hash`).
        history: one dict per epoch (``epoch``, ``lr``, ``running_loss``,
            ``train_loss``, ``train_accuracy``, ``valid_loss``, ... as evaluated).
        step_losses: mini-batch training loss of every optimizer step.
        step_lrs: learning rate of every optimizer step.
        timings: seconds per phase (``data_s``, ``compute_s``, ``eval_s``,
            ``diagnostics_s``, ``total_s``) and throughput (``images_per_s``).
        seed: the training seed.
        device: the device it ran on, e.g. ``"cuda (NVIDIA T4)"``.
        versions: library versions (python, torch, torchvision, ...).
        status: "complete", "interrupted" or "diverged" (a training loss became NaN or
            infinite; see :class:`nbhelpers.train.History`).
        created: ISO 8601 time the record was made (UTC).
        extra: anything else worth keeping (data source, parameter count, ...).
        path: where the record is stored (not saved inside the file).
        from_cache: True when :func:`find_cached` served it (not saved inside the file).
    """

    name: str
    config: dict[str, Any]
    config_hash: str
    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    status: str = "complete"
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    from_cache: bool = False

    def __post_init__(self) -> None:
        one_of("status", self.status, STATUSES)

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of :attr:`config_hash`."""
        return self.config_hash[:12]

    def final(self, key: str, default: Any = None) -> Any:
        """The latest value of a metric, e.g. ``record.final("test_accuracy")``, or ``default``."""
        for row in reversed(self.history):
            value = row.get(key)
            if value is not None:
                return value
        return default

    def best(self, key: str, default: Any = None, mode: str = "max") -> Any:
        """The best value of a metric over the epochs ("max" for accuracy, "min" for loss)."""
        values = [row[key] for row in self.history if _is_number(row.get(key))]
        if not values:
            return default
        return max(values) if mode == "max" else min(values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without ``path`` and ``from_cache``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("path", "from_cache")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record from :meth:`to_dict` output (unknown keys go to ``extra``)."""
        data = {k: v for k, v in data.items() if k not in ("path", "from_cache")}
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        missing = [k for k in ("name", "config", "config_hash") if k not in kwargs]
        if missing:
            raise ValueError(f"not a run record: the key {missing[0]!r} is missing")
        return cls(**kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def default_runs_dir() -> Path:
    """Where records go: ``$NBHELPERS_RUNS_DIR`` if set, else ``runs/`` in the project folder
    (:func:`nbhelpers.env.project_dir`: the checkout's root, or the working directory)."""
    from nbhelpers.env import work_dir

    return work_dir("runs", "NBHELPERS_RUNS_DIR")


HASH_EXCLUDES = ("device",)


def config_hash(config: dict[str, Any], salt: str = CODE_VERSION) -> str:
    """Cache key of a configuration: SHA-256 (hex) of ``salt`` and the sorted-keys JSON of ``config``.

    The ``device`` entry is left out: where a run trained does not change what it computes
    (up to floating-point noise), so runs pre-warmed on a GPU replay on a laptop. The record
    itself names the device.

    Args:
        config: a JSON-serialisable dict (tuples become lists).
        salt: code-version salt, default :data:`CODE_VERSION`.

    Raises:
        TypeError: ``config`` is not a dict or holds values JSON cannot encode.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    config = {k: v for k, v in config.items() if k not in HASH_EXCLUDES}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "run"


def record_path(name: str, hash_: str, runs_dir: str | os.PathLike | None = None) -> Path:
    """The file of a run: ``<runs_dir>/<name>-<first 12 hex digits of the hash>.json``."""
    folder = default_runs_dir() if runs_dir is None else Path(runs_dir).expanduser()
    return folder / f"{_safe_name(name)}-{hash_[:12]}.json"


def save_record(record: RunRecord, runs_dir: str | os.PathLike | None = None) -> Path:
    """Write ``record`` as JSON (atomically) and set ``record.path``.

    The file is :func:`record_path` of the record's name and hash; an older record of
    the same configuration is replaced.

    Returns:
        The path written.
    """
    path = record_path(record.name, record.config_hash, runs_dir)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record.to_dict(), fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    record.path = str(path)
    return path


def load_record(path: str | os.PathLike) -> RunRecord:
    """Read one record file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not valid JSON or not a run record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a run record (top level is not an object)")
    record = RunRecord.from_dict(data)
    record.path = str(path)
    return record


def find_cached(
    name: str, hash_: str, runs_dir: str | os.PathLike | None = None
) -> RunRecord | None:
    """The stored complete (or diverged) record of a configuration, or None.

    A diverged run is served because the same configuration diverges again; interrupted
    runs and records whose stored hash differs are never returned.
    """
    path = record_path(name, hash_, runs_dir)
    if not path.is_file():
        return None
    try:
        record = load_record(path)
    except (ValueError, TypeError, OSError):
        return None
    if record.status not in _SERVED or record.config_hash != hash_:
        return None
    record.from_cache = True
    return record
