import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torchvision import transforms

from nbhelpers import data
from nbhelpers.data import DataBundle, ImageSet, TensorLoader, load_data, make_loader, show_grid


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


@pytest.fixture
def fake_source(monkeypatch):
    """Replace the raw loaders by small random splits (train 300 images, test 120)."""
    pools = {"train": _images(300, 1), "test": _images(120, 2)}

    def fake_load(source, split, n, data_dir, download, seed):
        return pools[split]

    monkeypatch.setattr(data, "_load_split", fake_load)
    return pools


def test_load_data_splits_are_disjoint_and_sized(fake_source):
    bundle = load_data("synthetic", n_train=200, n_valid=50, n_test=100, seed=0)
    assert isinstance(bundle, DataBundle) and bundle.is_stand_in
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (200, 50, 100)
    rows = lambda s: {bytes(img.numpy()) for img in s.images}  # noqa: E731
    assert not rows(bundle.train) & rows(bundle.valid)
    assert rows(bundle.test) <= {bytes(img.numpy()) for img in fake_source["test"][0]}
    assert "OFFLINE STAND-IN" in bundle.summary()


def test_load_data_is_deterministic_for_a_seed(fake_source):
    a = load_data("synthetic", n_train=100, n_valid=20, seed=5)
    b = load_data("synthetic", n_train=100, n_valid=20, seed=5)
    c = load_data("synthetic", n_train=100, n_valid=20, seed=6)
    assert torch.equal(a.valid.images, b.valid.images)
    assert not torch.equal(a.valid.images, c.valid.images)


def test_load_data_defaults_use_rest_of_train(fake_source):
    bundle = load_data("synthetic")
    assert len(bundle.valid) == 30 and len(bundle.train) == 270 and len(bundle.test) == 120


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "mnist"}, "Unknown data source 'mnist'"),
        ({"source": "synthetic", "n_train": -5}, "n_train must be a positive integer"),
        ({"source": "synthetic", "n_valid": 0}, "n_valid"),
        ({"source": "synthetic", "n_train": 10_000, "n_valid": 10}, "has only 300"),
        ({"source": "synthetic", "n_test": 10_000}, "has only 120"),
    ],
)
def test_load_data_bad_input(fake_source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_data(**kwargs)


def test_auto_falls_back_to_stand_in_loudly(fake_source, monkeypatch):
    from nbhelpers import svhn

    monkeypatch.setattr(svhn, "svhn_present", lambda *a, **k: False)
    with pytest.warns(data.StandInWarning, match="OFFLINE STAND-IN"):
        bundle = load_data("auto", download=False, n_train=50, n_valid=10)
    assert bundle.source == "synthetic"


def test_auto_uses_svhn_when_present(fake_source, monkeypatch):
    from nbhelpers import svhn

    monkeypatch.setattr(svhn, "svhn_present", lambda *a, **k: True)
    assert data.resolve_source("auto") == "svhn"


def test_imageset_rejects_wrong_shapes():
    x, y = _images(4)
    with pytest.raises(ValueError, match="uint8 of shape"):
        ImageSet(x.float(), y)
    with pytest.raises(ValueError, match="uint8 of shape"):
        ImageSet(x.permute(0, 2, 3, 1).contiguous(), y)
    with pytest.raises(ValueError, match="labels must have shape"):
        ImageSet(x, y[:3])


def test_pil_dataset_matches_tensor_scaling():
    x, y = _images(8)
    ds = ImageSet(x, y).to_dataset()
    img, label = ds[3]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32)
    assert torch.allclose(img, x[3].float() / 255)
    assert label == int(y[3])


def test_tensor_loader_covers_epoch_and_reshuffles():
    x, y = _images(100)
    loader = TensorLoader(x, y, 32, shuffle=True, seed=1)
    assert len(loader) == 4
    epoch1 = list(loader)
    epoch2 = list(loader)
    assert [len(b[1]) for b in epoch1] == [32, 32, 32, 4]
    xb, yb = epoch1[0]
    assert xb.dtype == torch.float32 and 0.0 <= xb.min() and xb.max() <= 1.0
    seen = torch.cat([b[1] for b in epoch1])
    assert sorted(seen.tolist()) == sorted(y.tolist())
    assert not torch.equal(epoch1[0][1], epoch2[0][1])
    # same seed -> same order
    again = list(TensorLoader(x, y, 32, shuffle=True, seed=1))
    assert torch.equal(again[0][0], xb)


def test_tensor_loader_without_shuffle_keeps_order_and_drop_last():
    x, y = _images(10)
    batches = list(TensorLoader(x, y, 4, shuffle=False, drop_last=True))
    assert len(batches) == 2
    assert torch.equal(torch.cat([b[1] for b in batches]), y[:8])
    assert torch.allclose(batches[0][0], x[:4].float() / 255)


def test_tensor_loader_augment_and_bad_batch():
    x, y = _images(10)
    flipped = next(iter(TensorLoader(x, y, 10, shuffle=False, augment=lambda b: b.flip(-1))))[0]
    assert torch.allclose(flipped, x.float().div(255).flip(-1))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TensorLoader(x, y, 0)


def test_make_loader_kinds():
    x, y = _images(20)
    s = ImageSet(x, y)
    pil = make_loader(s, 8, shuffle=False, kind="pil", transform=transforms.ToTensor())
    tensor = make_loader(s, 8, shuffle=False, kind="tensor")
    a, b = next(iter(pil)), next(iter(tensor))
    assert torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="Unknown loader kind 'fast'"):
        make_loader(s, 8, shuffle=False, kind="fast")
    with pytest.raises(ValueError, match="augment"):
        make_loader(s, 8, shuffle=False, kind="tensor", transform=transforms.ToTensor())


def test_show_grid_draws_labels(tmp_path):
    x, y = _images(20)
    fig = show_grid(x, y, n=16, ncols=4, title="grid", predictions=y.flip(0))
    path = tmp_path / "grid.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 5_000
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 16 and str(int(y[0])) in texts[0]
    with pytest.raises(ValueError, match="shape"):
        show_grid(x[0])


def test_class_counts():
    x, y = _images(50)
    counts = ImageSet(x, y).class_counts()
    assert sum(counts) == 50 and counts == np.bincount(y.numpy(), minlength=10).tolist()
