"""Tests of nbhelpers.files: atomic writes and file permissions."""

from __future__ import annotations

import os
import stat
import time

import pytest

from nbhelpers.files import (
    STALE_AFTER_S,
    atomic_path,
    explained_os_error,
    remove_stale_temp_files,
)


def test_atomic_path_replaces_the_target_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "record.json"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            assert not target.exists()  # nothing visible before the block ends
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path, error):
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_leftovers_of_killed_writes_are_cleared_and_nothing_else(tmp_path):
    old = time.time() - STALE_AFTER_S - 60
    names = {
        ".record.json.abcdefgh.tmp": True,  # the older temp name: cleared
        ".record.json.tmp-abcdefgh.png": True,
        ".record.json.tmp-ijklmnop.tmp": False,  # young: maybe a write going on right now
        "notes.tmp": False,  # not ours
        ".hidden": False,
        "record.json.tmp-abcdefgh": False,  # not hidden: not ours
    }
    for name in names:
        (tmp_path / name).write_text("x")
        if name != ".record.json.tmp-ijklmnop.tmp":  # all but one are an hour old
            os.utime(tmp_path / name, (old, old))
    with atomic_path(tmp_path / "other.json") as tmp:
        tmp.write_text("{}")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"other.json"} | {name for name, stale in names.items() if not stale}
    assert remove_stale_temp_files(tmp_path / "missing") == []  # tidying never fails


def test_explained_os_error_keeps_the_kind_and_names_what_failed():
    with pytest.raises(PermissionError) as err:
        with explained_os_error("cannot save x in /data", "; try another folder"):
            raise PermissionError(13, "Permission denied")
    assert (
        str(err.value) == "cannot save x in /data: [Errno 13] Permission denied; try another folder"
    )
    assert isinstance(err.value.__cause__, PermissionError)
