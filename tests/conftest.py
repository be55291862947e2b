"""Shared test fixtures: every test gets private data, runs and logbook directories."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    """Point data, runs and logbook directories to a per-test temporary folder."""
    monkeypatch.setenv("NBHELPERS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("NBHELPERS_LOGBOOK_DIR", str(tmp_path / "logbook"))
    monkeypatch.setenv("NBHELPERS_SVHN_URL", "http://127.0.0.1:9/")  # nothing listens: offline
    monkeypatch.delenv("NBHELPERS_DEVICE", raising=False)
    yield
