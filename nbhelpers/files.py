"""Atomic file writes: a record, cache or logbook file is either the old one or the new one.

Every file the package writes for the learner (run records, stage records, the stand-in
cache, logbook entries, figures and exports) goes through :func:`atomic_path`: the content
is written to a temporary file in the target's folder, which then replaces the target in
one rename. A crash or an interrupt mid-write leaves the previous file intact and no
half-written one. A process killed outright (``kill -9``, a lost Colab runtime) can leave
its temporary file behind; the next write into that folder removes such leftovers once
they are an hour old (:func:`remove_stale_temp_files`). :func:`umask_file_mode` gives the
files the permissions a plain ``open()`` would, so a shared runs folder stays readable by
its other users. :func:`explained_os_error` re-raises a failed write naming the folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "explained_os_error", "remove_stale_temp_files", "umask_file_mode"]

#: Temporary files of :func:`atomic_path`: ``.<target name>.tmp-<8 random characters><suffix>``
#: (and the older ``.<target name>.<8 random characters>.tmp``).
_TEMP_NAME = re.compile(r"\..+\.(tmp-[a-z0-9_]{8}.*|[a-z0-9_]{8}\.tmp)")
#: A temporary file untouched this long (seconds) belongs to no live write: every writer
#: here writes its file within seconds, and a download touches its file with every read.
STALE_AFTER_S = 3600.0


def umask_file_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain ``open()`` would have (``0o666`` minus the umask).

    ``tempfile.mkstemp`` creates files readable by their owner only (``0o600``), and an
    atomic rename keeps that mode; call this before the rename so that run records and
    caches in a shared folder stay readable by the other users of the machine.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def remove_stale_temp_files(
    folder: str | os.PathLike, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` when a process was
    killed mid-write, once they are older than ``max_age_s`` seconds (by modification time).

    Younger ones may belong to a write still running in another process and are kept, and
    so is every file whose name does not have the temporary pattern. Errors (a file already
    gone, a read-only folder) are ignored: this is tidying, never a reason to fail a write.

    Returns:
        The files removed.
    """
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > max_age_s:
                os.remove(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    Creates ``target``'s folder if needed and first removes stale temporary files there
    (:func:`remove_stale_temp_files`). The block writes the content to the yielded path
    (any way it likes: ``open``, ``torch.save``, ``savefig``). When the block ends without
    an exception, the file gets :func:`umask_file_mode` permissions and is renamed onto
    ``target`` (atomic on one file system); on any exception, KeyboardInterrupt included,
    the temporary file is removed and ``target`` is left as it was.

    Args:
        target: the file to write.
        suffix: how the temporary file's name ends (its name is
            ``.<target name>.tmp-<random><suffix>``).

    Raises:
        OSError: the folder cannot be created or written; whatever the block raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask_file_mode(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def explained_os_error(what: str, hint: str = "") -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as the same kind, saying what failed and why.

    The message is ``"<what>: <original error><hint>"``, e.g. ``"cannot write the logbook
    in /content/drive/x: [Errno 2] No such file or directory: ...; this folder comes from
    NBHELPERS_LOGBOOK_DIR=..."``; the original error is chained as the cause.

    Raises:
        OSError: the same subclass as the original (``PermissionError``, ...), or a plain
            ``OSError`` when that subclass cannot be built from a message.
    """
    try:
        yield
    except OSError as err:
        message = f"{what}: {err}{hint}"
        try:
            new = type(err)(message)
        except Exception:  # an OSError subclass with another signature
            new = OSError(message)
        raise new from err
