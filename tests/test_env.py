import random

import numpy as np
import pytest
import torch

from nbhelpers import env


def test_pick_device_auto_and_cpu():
    assert env.pick_device().type in ("cuda", "mps", "cpu")
    assert env.pick_device("cpu") == torch.device("cpu")


def test_pick_device_rejects_unknown():
    with pytest.raises(ValueError, match="device='tpu' is invalid; valid: 'auto', 'cuda'"):
        env.pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_pick_device_cuda_missing_is_clear():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        env.pick_device("cuda")


def test_pick_device_env_var(monkeypatch):
    monkeypatch.setenv("NBHELPERS_DEVICE", "cpu")
    assert env.pick_device() == torch.device("cpu")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    env.seed_everything(3)
    a = draw()
    gen_a = torch.randint(0, 100, (5,), generator=env.seed_everything(3))
    env.seed_everything(3)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    gen_b = torch.randint(0, 100, (5,), generator=env.seed_everything(3))
    assert torch.equal(gen_a, gen_b)
    env.seed_everything(4)
    assert draw()[0] != a[0]


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, 2**32, 2**70])
def test_seed_everything_rejects_bad(bad):
    with pytest.raises(ValueError, match=rf"seed={bad!r} is invalid; valid: .*>= 0.*<= 4294967295"):
        env.seed_everything(bad)


def test_seed_everything_takes_the_largest_seed():
    generator = env.seed_everything(2**32 - 1)
    assert generator.initial_seed() == 2**32 - 1 == torch.initial_seed()
    assert np.random.get_state()[1][0] == np.random.RandomState(2**32 - 1).get_state()[1][0]


def test_banner_mentions_versions_device_and_the_synthetic_stand_in():
    line = env.banner("cpu", data_source="synthetic")
    for word in ("python", "torch", "torchvision", "backpack", "cockpit", "device cpu", "STAND-IN"):
        assert word in line
    assert "\n" not in line


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NBHELPERS_DATA_DIR", str(tmp_path / "x"))
    assert env.default_data_dir() == tmp_path / "x"


def test_in_colab_false_here(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert env.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    assert env.in_colab() is True


def test_project_dir_finds_checkout_root(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "nbhelpers").mkdir(parents=True)
    (root / "nbhelpers" / "__init__.py").write_text("")
    (root / "notebooks").mkdir()
    assert env.project_dir(root / "notebooks") == root.resolve()
    assert env.project_dir(tmp_path) == tmp_path.resolve()
    monkeypatch.delenv("NBHELPERS_RUNS_DIR", raising=False)
    monkeypatch.chdir(root / "notebooks")
    assert env.work_dir("runs", "NBHELPERS_RUNS_DIR") == root.resolve() / "runs"
    monkeypatch.setenv("NBHELPERS_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert env.work_dir("runs", "NBHELPERS_RUNS_DIR") == tmp_path / "elsewhere"
