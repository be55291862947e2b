"""Cockpit imports and runs on today's stack: setuptools >= 81 (no pkg_resources), Python 3.12."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import types

import pytest

from nbhelpers.cockpit_tools import compat as cockpit_compat

# Runs in a fresh interpreter where ``import pkg_resources`` is impossible (as on Python
# 3.12 without setuptools): nbhelpers must still make ``import cockpit`` work, a Cockpit
# must track two steps, and ``Cockpit.write`` must accept a bare file name.
_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.modules["pkg_resources"] = None  # block the real module
    import nbhelpers.cockpit_tools  # noqa: F401  (installs the stand-in)
    import cockpit
    import torch
    import torch.nn.functional as F
    from backpack import extend
    from cockpit import quantities
    from cockpit.utils import schedules

    torch.manual_seed(0)
    model = extend(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)))
    loss_fn = extend(torch.nn.CrossEntropyLoss())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    every = schedules.linear(1)
    cp = cockpit.Cockpit(model.parameters(), quantities=[
        quantities.Loss(every), quantities.GradNorm(every), quantities.Alpha(every)])
    x, y = torch.rand(6, 3, 2, 2), torch.randint(0, 3, (6,))
    for step in range(2):
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        info = {"batch_size": 6, "optimizer": opt, "loss": loss,
                "individual_losses": F.cross_entropy(logits, y, reduction="none")}
        with cp(step, info=info):
            loss.backward()
        opt.step()
    cp.write("cockpit_log")  # bare name: crashed in cockpit 1.0.2
    print(json.dumps({
        "version": cockpit.__version__,
        "shim": type(sys.modules["pkg_resources"]).__name__,
        "shim_doc": sys.modules["pkg_resources"].__doc__,
        "steps": sorted(cp.get_output()),
        "alpha": "Alpha" in cp.get_output()[0],
        "written": os.path.exists("cockpit_log.json"),
    }))
    """
)


def test_cockpit_runs_without_pkg_resources(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["version"] == importlib.metadata.version("cockpit-for-pytorch")
    assert "stand-in" in summary["shim_doc"]
    assert summary["steps"] == [0, 1]
    assert summary["alpha"] is True
    assert summary["written"] is True
    assert (tmp_path / "cockpit_log.json").stat().st_size > 0


def test_this_venv_has_setuptools_without_pkg_resources():
    """The situation the shim exists for: setuptools >= 81 ships no pkg_resources."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("no setuptools at all (as on Python 3.12); covered by the subprocess test")
    major = int(version.split(".")[0])
    if major < 81:
        pytest.skip(f"setuptools {version} still ships pkg_resources")
    result = subprocess.run(
        [sys.executable, "-c", "import pkg_resources"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "pkg_resources" in result.stderr


def test_shim_answers_like_pkg_resources():
    shim = cockpit_compat._make_pkg_resources_shim()
    dist = shim.get_distribution("cockpit-for-pytorch")
    assert dist.version == importlib.metadata.version("cockpit-for-pytorch")
    with pytest.raises(shim.DistributionNotFound):
        shim.get_distribution("no-such-distribution-xyz")


def test_shim_leaves_a_real_pkg_resources_alone(monkeypatch):
    real = types.ModuleType("pkg_resources")
    monkeypatch.setitem(sys.modules, "pkg_resources", real)
    assert cockpit_compat.install_pkg_resources_shim() is False
    assert sys.modules["pkg_resources"] is real


def test_shim_replaces_a_blocked_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    assert cockpit_compat.install_pkg_resources_shim() is True
    assert hasattr(sys.modules["pkg_resources"], "get_distribution")


def test_import_cockpit_sets_version_and_patches_write(tmp_path, monkeypatch):
    cockpit = cockpit_compat.import_cockpit()
    assert cockpit.__version__ == cockpit_compat.cockpit_version() != "unknown"
    monkeypatch.chdir(tmp_path)
    cp = cockpit.Cockpit([__import__("torch").zeros(2, requires_grad=True)], quantities=[])
    cp.write("bare_name")
    assert (tmp_path / "bare_name.json").exists()
    path = cockpit_compat.write_log({0: {"Loss": 1.0}}, tmp_path / "sub" / "log.json", quiet=True)
    assert path == tmp_path / "sub" / "log.json" and path.exists()
    with pytest.raises(ValueError, match="non-empty"):
        cockpit_compat.write_log({}, "")


def test_write_log_keeps_nan_and_infinity(tmp_path):
    from nbhelpers.cockpit_tools.logs import load_log

    log = {0: {"Alpha": float("nan"), "Loss": 2.3}, 1: {"Alpha": float("inf"), "Loss": 2.2}}
    path = cockpit_compat.write_log(log, tmp_path / "log", quiet=True)
    back = load_log(path)
    assert back[0]["Loss"] == 2.3 and back[1]["Alpha"] == float("inf")
    assert back[0]["Alpha"] != back[0]["Alpha"]  # NaN
