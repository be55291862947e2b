"""Atomic file writes: a record, cache or logbook file is either the old one or the new one.

Every file the package writes for the learner (run records, stage records, the stand-in
cache, logbook entries, figures and exports) goes through :func:`atomic_path`: the content
is written to a temporary file in the target's folder, which then replaces the target in
one rename. A crash or an interrupt mid-write leaves the previous file intact and no
half-written one. :func:`umask_file_mode` gives such files the permissions a plain
``open()`` would, so a shared runs folder stays readable by its other users.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "umask_file_mode"]


def umask_file_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain ``open()`` would have (``0o666`` minus the umask).

    ``tempfile.mkstemp`` creates files readable by their owner only (``0o600``), and an
    atomic rename keeps that mode; call this before the rename so that run records and
    caches in a shared folder stay readable by the other users of the machine.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    Creates ``target``'s folder if needed. The block writes the content to the yielded
    path (any way it likes: ``open``, ``torch.save``, ``savefig``). When the block ends
    without an exception, the file gets :func:`umask_file_mode` permissions and is renamed
    onto ``target`` (atomic on one file system); on any exception, KeyboardInterrupt
    included, the temporary file is removed and ``target`` is left as it was.

    Args:
        target: the file to write.
        suffix: suffix of the temporary file (its name starts with ``.<target name>.``).

    Raises:
        OSError: the folder cannot be created or written; whatever the block raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask_file_mode(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
