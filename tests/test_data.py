import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torchvision import transforms

from nbhelpers import data, svhn
from nbhelpers.data import DataBundle, ImageSet, TensorLoader, load_data, make_loader, show_grid
from nbhelpers.notebook import start


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


@pytest.fixture
def fake_source(monkeypatch):
    """Replace the raw loaders by small random splits (train 300 images, test 120), and the
    split sizes both sources share by theirs."""
    pools = {"train": _images(300, 1), "test": _images(120, 2)}

    def fake_load(source, split, n, data_dir, download, seed):
        x, y = pools[split]
        return (x, y) if n is None else (x[:n], y[:n])

    monkeypatch.setattr(data, "_load_split", fake_load)
    monkeypatch.setitem(svhn.SVHN_SPLIT_SIZES, "train", 300)
    monkeypatch.setitem(svhn.SVHN_SPLIT_SIZES, "test", 120)
    return pools


def test_load_data_splits_are_disjoint_and_sized(fake_source):
    bundle = load_data("synthetic", n_train=200, n_valid=50, n_test=100, seed=0)
    assert isinstance(bundle, DataBundle) and bundle.is_synthetic and bundle.is_stand_in
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (200, 50, 100)
    rows = lambda s: {bytes(img.numpy()) for img in s.images}  # noqa: E731
    assert not rows(bundle.train) & rows(bundle.valid)
    assert rows(bundle.test) <= {bytes(img.numpy()) for img in fake_source["test"][0]}
    assert "synthetic (STAND-IN, not real SVHN)" in bundle.summary()


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
        ({"source": "mnist"}, "source='mnist' is invalid; valid: 'svhn', 'synthetic', 'auto'"),
        ({"source": "synthetic", "n_train": -5}, r"n_train=-5 is invalid; valid: an integer >= 1"),
        ({"source": "synthetic", "n_valid": 0}, "n_valid=0"),
        ({"source": "synthetic", "n_valid": 2.5}, "n_valid=2.5"),
        ({"source": "synthetic", "n_train": 10_000, "n_valid": 10}, "10,010.*train 300"),
        ({"source": "synthetic", "n_train": 280}, "10.*train 300"),  # + the default 30 valid
        ({"source": "synthetic", "n_test": 10_000}, "n_test = 10000.*test 120"),
    ],
)
def test_load_data_bad_input(fake_source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_data(**kwargs)


def test_auto_falls_back_to_synthetic_loudly(fake_source, tmp_path):
    with pytest.warns(data.SyntheticDataWarning, match="(?s)download=False.*SYNTHETIC STAND-IN"):
        bundle = load_data("auto", data_dir=tmp_path, download=False, n_train=50, n_valid=10)
    assert bundle.source == "synthetic"


def _damaged_svhn(data_dir):
    folder = data_dir / "svhn"
    folder.mkdir(parents=True)
    for name, _ in svhn.SVHN_FILES.values():
        (folder / name).write_bytes(b"half a download")  # on disk, but not SVHN
    return folder


def test_auto_falls_back_on_the_first_call_when_svhn_files_are_damaged(fake_source, tmp_path):
    folder = _damaged_svhn(tmp_path / "a")
    with pytest.warns(data.SyntheticDataWarning, match="(?s)wrong MD5 sum.*SYNTHETIC STAND-IN"):
        bundle = load_data("auto", data_dir=tmp_path / "a", download=False, n_train=50, n_valid=10)
    assert bundle.source == "synthetic"
    assert sorted(p.name for p in folder.iterdir()) == ["test_32x32.mat", "train_32x32.mat.corrupt"]
    _damaged_svhn(tmp_path / "b")
    with pytest.warns(data.SyntheticDataWarning, match="wrong MD5 sum"):
        assert data.resolve_source("auto", tmp_path / "b", download=False) == "synthetic"


def test_auto_uses_svhn_when_present(fake_source, monkeypatch):
    from nbhelpers import svhn

    monkeypatch.setattr(svhn, "svhn_present", lambda *a, **k: True)
    assert data.resolve_source("auto") == "svhn"


def test_imageset_rejects_wrong_shapes():
    x, y = _images(4)
    with pytest.raises(ValueError, match=r"uint8 of shape.*got torch.float32 \(4, 3, 32, 32\)"):
        ImageSet(x.float(), y)
    with pytest.raises(ValueError, match=r"uint8 of shape.*\(4, 32, 32, 3\)"):
        ImageSet(x.permute(0, 2, 3, 1).contiguous(), y)
    with pytest.raises(ValueError, match=r"labels int64 of shape \(N,\).*\(3,\)"):
        ImageSet(x, y[:3])
    with pytest.raises(ValueError, match="torch.int32"):
        ImageSet(x, y.int())


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
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        TensorLoader(x, y, 0)
    with pytest.raises(TypeError, match="shufle"):
        TensorLoader(x, y, 4, shufle=False)


def test_tensor_loader_channels_last_and_attributes_the_checks_read():
    x, y = _images(10)
    loader = TensorLoader(x, y, 4, shuffle=False, drop_last=True, channels_last=True)
    xb = next(iter(loader))[0]
    assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
    assert loader.drop_last is True and loader.augment is None
    assert (loader.dataset_size, loader.batch_size, loader.epoch) == (10, 4, 1)


def test_make_loader_kinds():
    x, y = _images(20)
    s = ImageSet(x, y)
    pil = make_loader(s, 8, shuffle=False, kind="pil", transform=transforms.ToTensor())
    tensor = make_loader(s, 8, shuffle=False, kind="tensor")
    a, b = next(iter(pil)), next(iter(tensor))
    assert torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="kind='fast' is invalid; valid: 'tensor', 'pil'"):
        make_loader(s, 8, shuffle=False, kind="fast")
    with pytest.raises(ValueError, match="augment"):
        make_loader(s, 8, shuffle=False, kind="tensor", transform=transforms.ToTensor())
    with pytest.raises(ValueError, match="workers"):
        make_loader(s, 8, shuffle=False, kind="tensor", num_workers=2)
    with pytest.raises(ValueError, match="transform"):
        make_loader(s, 8, shuffle=False, kind="pil", augment=lambda b: b)
    with pytest.raises(TypeError, match="colour"):
        make_loader(s, 8, shuffle=False, kind="tensor", colour=True)


def test_make_loader_passes_options_to_each_kind():
    x, y = _images(20)
    s = ImageSet(x, y)
    # one call serves both kinds: transform=None and num_workers=0 mean nothing to "tensor"
    tensor = make_loader(s, 8, shuffle=True, seed=3, transform=None, num_workers=0, drop_last=True)
    assert isinstance(tensor, TensorLoader) and len(tensor) == 2 and tensor.options.seed == 3
    assert torch.equal(next(iter(tensor))[1], next(iter(TensorLoader(x, y, 8, seed=3)))[1])
    pil = make_loader(s, 8, shuffle=False, kind="pil", drop_last=True, pin_memory=False)
    assert isinstance(pil, torch.utils.data.DataLoader) and pil.drop_last and len(pil) == 2
    flipped = make_loader(
        s,
        20,
        shuffle=False,
        kind="pil",
        transform=lambda img: transforms.functional.to_tensor(img).flip(-1),
    )
    assert torch.allclose(next(iter(flipped))[0], x.float().div(255).flip(-1))


def test_show_grid_draws_labels(tmp_path):
    x, y = _images(20)
    fig = show_grid(x, y, n=16, ncols=4, title="grid")
    path = tmp_path / "grid.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 5_000
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 16 and str(int(y[0])) in texts[0]
    assert [t.get_text() for t in fig.axes[0].texts] == [str(int(v)) for v in y[:16]]
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\), got \(3, 32, 32\)"):
        show_grid(x[0])
    with pytest.raises(ValueError, match="n=0"):
        show_grid(x, n=0)


def test_class_counts():
    x, y = _images(50)
    counts = ImageSet(x, y).class_counts()
    assert sum(counts) == 50 and counts == np.bincount(y.numpy(), minlength=10).tolist()


# --- nbhelpers.notebook.start: the values of a notebook's parameters cell ---------------------


@pytest.fixture
def no_download(monkeypatch):
    """Make any SVHN download attempt fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(svhn, "_download", refuse)


@pytest.mark.parametrize("spelling", [False, "False", "no", "0", "off"])
def test_start_takes_download_false_in_its_usual_spellings(spelling, tmp_path, no_download):
    with pytest.warns(data.SyntheticDataWarning, match="download=False"):
        ctx = start("tiny", "auto", spelling, 0, data_dir=tmp_path, verbose=False)
    assert ctx.bundle.source == "synthetic" and len(ctx.bundle.train) == ctx.budget.n_train


@pytest.mark.parametrize("bad", ["maybe", "", None, 2])
def test_start_refuses_other_download_values_before_loading(bad, tmp_path, no_download):
    with pytest.raises(ValueError, match=f"download={bad!r} is invalid; valid: True or False"):
        start("tiny", "auto", bad, 0, data_dir=tmp_path, verbose=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("seed", [2**32, 2**70, -1])
def test_start_refuses_seeds_out_of_range_before_loading(seed, tmp_path):
    with pytest.raises(ValueError, match=f"seed={seed} is invalid; valid: .*<= 4294967295"):
        start("tiny", "synthetic", False, seed, data_dir=tmp_path, verbose=False)
    assert not any(tmp_path.iterdir())
