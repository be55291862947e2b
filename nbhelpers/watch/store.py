"""What the watch keeps between runs, in ``watch.json`` in the runs folder.

- ``ends``: where each watched run ended: a fingerprint of the model's weights then, the
  learning rate its next step would have used, its step count. A later watch whose model
  starts from exactly those weights is a resume of that run (:func:`weights_fingerprint`), so
  its first learning rate can be compared with the one the run ended with.
- ``splits``: a fingerprint of each split drawn in random order, so a later run can tell
  whether it drew the same one.

The file may come from someone else's Drive: it is read as plain JSON, at most 1 MB, checked
against its schema (:func:`load`); a file that breaks it is moved aside with a warning.
Writing goes through :func:`nbhelpers.files.atomic_path`; a folder that cannot be written
only costs a warning (the learner's training never stops for it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from nbhelpers.files import atomic_path

#: File name in the runs folder, largest size read, most entries kept per section.
FILE_NAME, MAX_BYTES, MAX_ENTRIES = "watch.json", 1_000_000, 200
_FIELDS = {
    "ends": {"lr": float, "step": int, "time": str},
    "splits": {"fingerprint": str, "size": int, "time": str},
}


def store_path() -> Path:
    """``watch.json`` in the runs folder (:func:`nbhelpers.records.default_runs_dir`)."""
    from nbhelpers.records import default_runs_dir

    return default_runs_dir() / FILE_NAME


def now() -> str:
    """The current UTC time as an ISO 8601 string (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _valid_entry(entry: Any, fields: dict[str, type]) -> bool:
    if not isinstance(entry, dict) or set(entry) != set(fields):
        return False
    for key, kind in fields.items():
        value = entry[key]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and value >= 0
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            ok = isinstance(value, str) and len(value) <= 64
        if not ok:
            return False
    return True


def _valid(data: Any) -> bool:
    """Whether ``data`` follows the schema (two sections of short keys and typed entries)."""
    if not isinstance(data, dict) or not set(data) <= set(_FIELDS):
        return False
    for section, fields in _FIELDS.items():
        entries = data.get(section, {})
        if not isinstance(entries, dict) or len(entries) > MAX_ENTRIES:
            return False
        if not all(isinstance(k, str) and len(k) <= 200 for k in entries):
            return False
        if not all(_valid_entry(e, fields) for e in entries.values()):
            return False
    return True


def load(path: Path | None = None) -> dict[str, dict[str, dict]]:
    """The stored data (``{"ends": {...}, "splits": {...}}``; empty sections when there is no
    file). A file over 1 MB, not JSON, or not following the schema is renamed to
    ``watch.json.bad`` with a warning, and empty sections are returned."""
    path = path or store_path()
    empty: dict[str, dict[str, dict]] = {section: {} for section in _FIELDS}
    if not path.is_file():
        return empty
    try:
        data = json.loads(path.read_text()) if path.stat().st_size <= MAX_BYTES else None
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not _valid(data):
        aside = path.with_name(path.name + ".bad")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        warnings.warn(
            f"{path} is not a watch file (moved to {aside}); starting afresh.", stacklevel=3
        )
        return empty
    return {section: dict(data.get(section, {})) for section in _FIELDS}


def save(data: dict[str, dict[str, dict]], path: Path | None = None) -> None:
    """Write ``data`` (the newest :data:`MAX_ENTRIES` entries of each section) atomically; a
    folder that cannot be written gives a warning instead of an error."""
    path = path or store_path()
    kept = {
        section: dict(sorted(entries.items(), key=lambda kv: kv[1]["time"])[-MAX_ENTRIES:])
        for section, entries in data.items()
    }
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(kept, indent=1, sort_keys=True))
    except OSError as err:
        warnings.warn(
            f"The watch could not write {path} ({err}); nothing else is affected.", stacklevel=3
        )


def index_digest(values: Any) -> str:
    """A short hex digest of an array of integers (a split's indices, a dataset's labels)."""
    data = np.ascontiguousarray(np.asarray(values, dtype=np.int64)).tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """A short hex digest of the model's parameters (their values, float32 bytes)."""
    digest = hashlib.blake2b(digest_size=8)
    for p in model.parameters():
        digest.update(np.ascontiguousarray(p.detach().float().cpu().numpy()).tobytes())
    return digest.hexdigest()
