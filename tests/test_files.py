"""Tests of nbhelpers.files: atomic writes and file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from nbhelpers.files import atomic_path


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
