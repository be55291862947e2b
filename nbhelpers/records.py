"""Run records: one JSON file per training run under ``runs/``, and the config-hash cache.

A record holds the run's configuration, per-epoch metrics, per-step training
losses, timings, seed, device and library versions. Files are written
atomically (a temporary file in the same directory, then ``os.replace``), so an
interrupted write never leaves a half-written record.

The cache: a configuration's key is the SHA-256 of its sorted-keys JSON plus
:data:`CODE_VERSION` (bumped whenever a change to the training code would change
results). :func:`find_cached` returns a complete (or diverged) record with the same
key, so a notebook re-run does not retrain. An interrupted run is saved in a file of its
own beside the cache file (:func:`interrupted_path`), so it never replaces a finished
record nor an earlier interrupted one, and it is never served.

Records may come from someone else's folder (a shared Drive), so a record is read as
plain JSON data only, checked against a schema (:data:`SCHEMA`; bounded size and nesting)
and, before the cache serves it, against its key. A file that fails is moved aside to
``<file>.invalid`` with a warning, and the run trains again. :func:`check_runs_dir` tells
before training whether records can be saved at all.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nbhelpers.files import atomic_path, explained_os_error
from nbhelpers.validate import one_of

__all__ = [
    "CODE_VERSION", "ENV_VAR", "SCHEMA", "RunRecord", "check_record_data", "check_runs_dir",
    "config_hash", "default_runs_dir", "find_cached", "interrupted_path", "load_record",
    "record_path", "save_record",
]  # fmt: skip

ENV_VAR = "NBHELPERS_RUNS_DIR"

#: Salt of every cache key. Bump it whenever what a record of the same configuration holds or
#: means changes: training code that changes the numbers a config produces, new or renamed
#: record fields, a new status. Old records then miss the cache and are retrained.
#: 2: records gained ``step_lrs`` and the "diverged" status; unused timings/extra entries went.
#: 3: "diverged" also means a finite loss far above its start (:func:`nbhelpers.train.train`).
CODE_VERSION = "nbhelpers-train-3"

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
            infinite, or far above its start; see :class:`nbhelpers.train.History`).
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

    def save(self, runs_dir: str | os.PathLike | None = None) -> Path:
        """Write the record into ``runs_dir`` (default :func:`default_runs_dir`), e.g. after
        :func:`nbhelpers.experiment.run` could not: ``record.save("/content/drive/MyDrive/runs")``.
        See :func:`save_record` (returns the path; raises ``OSError`` naming it)."""
        return save_record(self, runs_dir)

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


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _real(value) and math.isfinite(value)


def default_runs_dir() -> Path:
    """Where records go: ``$NBHELPERS_RUNS_DIR`` if set, else ``runs/`` in the project folder
    (:func:`nbhelpers.env.project_dir`: the checkout's root, or the working directory)."""
    from nbhelpers.env import work_dir

    return work_dir("runs", ENV_VAR)


def _runs_folder(runs_dir: str | os.PathLike | None) -> Path:
    return default_runs_dir() if runs_dir is None else Path(runs_dir).expanduser()


def _runs_dir_hint(runs_dir: str | os.PathLike | None) -> str:
    """How to choose another runs folder, naming ``$NBHELPERS_RUNS_DIR`` when it chose this one."""
    value = os.environ.get(ENV_VAR, "").strip()
    if runs_dir is None and value:
        return (
            f"; this folder comes from the environment variable {ENV_VAR}={value!r}: point it "
            "at a folder you can write (on Colab: mount Google Drive first) or unset it"
        )
    if runs_dir is None:
        return f"; set the environment variable {ENV_VAR} to a folder you can write"
    return f"; pass runs_dir= a folder you can write (or leave it out to use ${ENV_VAR})"


#: Free space (bytes) :func:`check_runs_dir` asks for: far above the largest record (the full
#: budget's record of 2,860 steps is about 0.2 MB), so a nearly full disk is caught early.
MIN_FREE_BYTES = 8 * 2**20


def check_runs_dir(runs_dir: str | os.PathLike | None = None) -> Path:
    """Make sure run records can be saved in ``runs_dir`` before a run trains; return the folder.

    Creates the folder if needed, writes and removes a small probe file, and asks for
    :data:`MIN_FREE_BYTES` of free space on its disk.

    Args:
        runs_dir: the runs folder; default :func:`default_runs_dir` (``$NBHELPERS_RUNS_DIR``).

    Raises:
        NotADirectoryError: the folder (or one above it) is a file.
        PermissionError: the folder cannot be written (read-only).
        OSError: any other failure, e.g. ``ENOSPC`` when the disk is (nearly) full. Every
            message names the folder and how to choose another, naming ``$NBHELPERS_RUNS_DIR``.
    """
    folder = _runs_folder(runs_dir)
    what, hint = f"run records cannot be saved in {folder}", _runs_dir_hint(runs_dir)
    existing = next((f for f in (folder, *folder.parents) if f.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NotADirectoryError(f"{what}: {existing} is a file, not a folder{hint}")
    with explained_os_error(what, hint):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.tmp-", dir=folder)
        os.close(fd)
        os.remove(probe)
        if _free_bytes(folder) < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"only {_free_bytes(folder):,} bytes free on its disk; "
                          f"a record needs up to {MIN_FREE_BYTES:,}")  # fmt: skip
    return folder


def _free_bytes(folder: Path) -> float:
    """Free bytes on the disk of ``folder``; infinite where the file system cannot say."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # e.g. a network mount without statvfs: let the save itself find out
        return math.inf


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
    """The cache file of a run: ``<runs_dir>/<name>-<first 12 hex digits of the hash>.json``."""
    return _runs_folder(runs_dir) / f"{_safe_name(name)}-{hash_[:12]}.json"


def interrupted_path(record: RunRecord, runs_dir: str | os.PathLike | None = None) -> Path:
    """A free file for an interrupted run, beside its cache file:
    ``<name>-<hash>.interrupted-<UTC time made, e.g. 20250101T120000>.json`` (``-2``, ``-3``, ...
    appended when taken), so it replaces neither a finished record nor an earlier interruption."""
    stamp = re.sub(r"[^0-9T]", "", record.created)[:15] or "unknown"
    base = record_path(record.name, record.config_hash, runs_dir).with_suffix("")
    path, counter = base.with_name(f"{base.name}.interrupted-{stamp}.json"), 2
    while path.exists():
        path, counter = (
            base.with_name(f"{base.name}.interrupted-{stamp}-{counter}.json"),
            counter + 1,
        )
    return path


def save_record(record: RunRecord, runs_dir: str | os.PathLike | None = None) -> Path:
    """Write ``record`` as JSON (atomically) and set ``record.path``.

    A complete or diverged record goes to :func:`record_path` (the cache file; it replaces
    an older record of the same configuration); an interrupted one to a new file of its own,
    :func:`interrupted_path`, so the cache file and earlier interruptions stay as they are.

    Returns:
        The path written.

    Raises:
        OSError: the folder cannot be created or written, the disk is full, ... (same kind
            as the original error); the message names the file and ``$NBHELPERS_RUNS_DIR``.
    """
    if record.status == "interrupted":
        path = interrupted_path(record, runs_dir)
    else:
        path = record_path(record.name, record.config_hash, runs_dir)
    with explained_os_error(f"cannot save the run record {path}", _runs_dir_hint(runs_dir)):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record.to_dict(), fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    record.path = str(path)
    return path


# --------------------------------------------------------------------------- schema
#: Largest record file read (bytes): the full budget's records are about 0.2 MB.
MAX_RECORD_BYTES = 32 * 2**20
#: Deepest nesting of objects and lists in a record (a record itself needs 4: extra ->
#: split_sizes -> value).
MAX_DEPTH = 8


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())
    )


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


#: What each field of a record file must hold: ``field: (description, check)``. Only
#: ``name``, ``config`` and ``config_hash`` are required; unknown fields go to ``extra``.
SCHEMA: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "name": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "config": ("an object of plain values or lists of them",
               _dict_of(lambda v: _plain(v) or _list_of(_plain)(v))),
    "config_hash": ("64 hex digits", lambda v: isinstance(v, str) and bool(re.fullmatch("[0-9a-f]{64}", v))),
    "history": ("a list of objects of plain values", _list_of(_dict_of(_plain))),
    "step_losses": ("a list of numbers", _list_of(_real)),
    "step_lrs": ("a list of numbers", _list_of(_real)),
    "timings": ("an object of numbers", _dict_of(_real)),
    "seed": ("an integer or null", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))),
    "device": ("a string", lambda v: isinstance(v, str)),
    "versions": ("an object of strings", _dict_of(lambda v: isinstance(v, str) or v is None)),
    "status": (f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES),
    "created": ("a string", lambda v: isinstance(v, str)),
    "extra": ("an object", lambda v: isinstance(v, dict)),
}  # fmt: skip


def _depth(data: Any) -> int:
    """Nesting depth of lists and dicts in ``data`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            stack.extend(
                (child, depth + 1) for child in children if isinstance(child, (dict, list))
            )
    return deepest


def check_record_data(data: Any) -> dict[str, Any]:
    """``data`` (parsed JSON) if it is a run record by :data:`SCHEMA`, else ValueError.

    Raises:
        ValueError: not an object, nested deeper than :data:`MAX_DEPTH`, a required field
            missing or a field of the wrong kind (the message names the field, what it holds
            and what it should hold).
    """
    if not isinstance(data, dict):
        raise ValueError(f"not a run record: the top level is {type(data).__name__}, not an object")
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"not a run record: nested deeper than {MAX_DEPTH} levels")
    missing = [k for k in ("name", "config", "config_hash") if k not in data]
    if missing:
        raise ValueError(f"not a run record: the key {missing[0]!r} is missing")
    for key, (valid, check) in SCHEMA.items():
        if key in data and not check(data[key]):
            raise ValueError(f"{key}={data[key]!r:.80} is invalid; valid: {valid}")
    return data


def load_record(path: str | os.PathLike) -> RunRecord:
    """Read one record file as plain JSON data, checked by :func:`check_record_data`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: larger than :data:`MAX_RECORD_BYTES`, not valid JSON, nested too deeply
            or not a run record; the message names the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"{path} is not a run record: {size:,} bytes, over {MAX_RECORD_BYTES:,}")
    try:
        data = check_record_data(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        why = "it is nested too deeply" if isinstance(err, RecursionError) else err
        raise ValueError(f"{path} is not a valid run record: {why}") from err
    record = RunRecord.from_dict(data)
    record.path = str(path)
    return record


def _key_problem(record: RunRecord, hash_: str) -> str | None:
    """Why ``record`` is not a record of the configuration with key ``hash_`` (None: it is)."""
    if record.config_hash != hash_:
        return f"it holds the key {record.short_hash}, not {hash_[:12]}"
    if config_hash(record.config) != hash_:
        return "its config does not match its key (was it edited?)"
    return None


def _move_aside(path: Path) -> Path | None:
    """Rename ``path`` to a free ``<path>.invalid`` (``.invalid-2``, ...); None if that fails."""
    target, counter = path.with_name(path.name + ".invalid"), 2
    while target.exists():
        target, counter = path.with_name(f"{path.name}.invalid-{counter}"), counter + 1
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


def find_cached(
    name: str, hash_: str, runs_dir: str | os.PathLike | None = None
) -> RunRecord | None:
    """The stored complete (or diverged) record of a configuration, or None.

    A diverged run is served because the same configuration diverges again; interrupted
    runs are never returned. A file that is not a valid record (:func:`load_record`) or
    not one of this configuration (its stored key or its config's key differs from
    ``hash_``) is moved aside to ``<file>.invalid`` with a ``UserWarning`` (the run then
    trains again); an unreadable one is left alone, with a warning.
    """
    path = record_path(name, hash_, runs_dir)
    if not path.is_file():
        return None
    try:
        record = load_record(path)
        problem = _key_problem(record, hash_)
    except ValueError as err:
        problem = str(err)
    except OSError as err:
        warnings.warn(f"cannot read the run record {path} ({err}); training again", stacklevel=2)
        return None
    if problem is not None:
        moved = _move_aside(path)
        where = f"moved it to {moved}" if moved else "could not move it aside"
        warnings.warn(
            f"The run record {path} was not used: {problem}. {where}; training again.",
            stacklevel=2,
        )
        return None
    if record.status not in _SERVED:
        return None
    record.from_cache = True
    return record
