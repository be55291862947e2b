"""Tests of nbhelpers.synthetic, the synthetic stand-in for SVHN."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from nbhelpers import synthetic
from nbhelpers.env import default_data_dir
from nbhelpers.synthetic import (
    SVHN_CLASS_COUNTS,
    SVHN_CLASS_PROBS,
    SVHN_SPLIT_SIZES,
    cache_path,
    generate,
    glyph_bank,
    load_synthetic,
)


def _row_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


@pytest.fixture(scope="module")
def sample():
    return generate(2048, seed=0)


def test_shapes_dtypes_and_ranges(sample):
    images, labels = sample
    assert images.shape == (2048, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (2048,) and labels.dtype == torch.int64
    assert images.device.type == "cpu"
    assert int(labels.min()) >= 0 and int(labels.max()) <= 9
    assert set(labels.tolist()) == set(range(10))
    assert int(images.max()) - int(images.min()) > 200  # uses the value range


def test_same_seed_same_images_and_prefix_property():
    a_img, a_lab = generate(300, seed=7)
    b_img, b_lab = generate(300, seed=7)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    c_img, c_lab = generate(1100, seed=7)  # spans two internal chunks
    assert torch.equal(c_img[:300], a_img) and torch.equal(c_lab[:300], a_lab)


def test_different_seeds_differ():
    a, _ = generate(256, seed=0)
    b, _ = generate(256, seed=1)
    assert not _row_hashes(a) & _row_hashes(b)


def test_train_and_test_splits_are_disjoint():
    train, _ = load_synthetic("train", 1000, cache=False)
    test, _ = load_synthetic("test", 1000, cache=False)
    plain, _ = generate(1000, seed=0)
    h_train, h_test, h_plain = _row_hashes(train), _row_hashes(test), _row_hashes(plain)
    assert len(h_train) == 1000 and len(h_test) == 1000  # no duplicates inside a split
    assert not h_train & h_test
    assert not h_plain & (h_train | h_test)


def test_svhn_class_counts_add_up():
    assert sum(SVHN_CLASS_COUNTS) == SVHN_SPLIT_SIZES["train"] == 73257
    assert math.isclose(sum(SVHN_CLASS_PROBS), 1.0)
    assert max(range(10), key=lambda d: SVHN_CLASS_PROBS[d]) == 1


def test_class_frequencies_follow_svhn(sample):
    images, labels = sample
    freq = torch.bincount(labels, minlength=10).double() / len(labels)
    expected = torch.tensor(SVHN_CLASS_PROBS, dtype=torch.float64)
    assert torch.allclose(freq, expected, atol=0.03), freq
    assert int(freq.argmax()) == 1


def test_nine_is_six_rotated_by_180_degrees():
    masks, widths = glyph_bank()
    assert masks.ndim == 4 and masks.shape[1:] == (10, 32, 32)
    assert masks.shape[0] >= 8  # several fonts and weights
    assert torch.equal(masks[:, 9], torch.flip(masks[:, 6], dims=(-2, -1)))
    # ...and the 6 itself is not symmetric under that rotation, so orientation is what tells them apart.
    assert (masks[:, 6] - masks[:, 9]).abs().amax(dim=(-2, -1)).min() > 0.5
    assert masks.amax(dim=(-2, -1)).min() > 0.9  # every glyph has ink
    assert widths.shape == masks.shape[:2] and bool((widths > 3).all())


def test_no_blank_tiles(sample):
    images, _ = sample
    x = images.float()
    assert x.std(dim=(1, 2, 3)).min() > 10.0
    centre = x[:, :, 8:24, 8:24].mean(dim=1)  # where the labelled digit is
    assert centre.std(dim=(1, 2)).min() > 8.0


def test_tilt_leaves_no_black_corners():
    """Strongest tilt and slant on a plain mid-grey background: corners stay background-grey."""
    n = 64
    p = synthetic._draw_params(torch.Generator().manual_seed(0), n)
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    p.update(
        angle=sign * math.radians(15.0),
        shear=-sign * 0.3,
        has_left=torch.zeros(n, dtype=torch.bool),
        has_right=torch.zeros(n, dtype=torch.bool),
        has_edge=torch.zeros(n, dtype=torch.bool),
        has_line=torch.zeros(n, dtype=torch.bool),
        height=torch.full((n,), 20.0),  # a digit this size stays clear of the corners
        dx=torch.zeros(n),
        dy=torch.zeros(n),
        warp=torch.zeros(n, 2, 4, 4),
        bg_lum=torch.full((n,), 0.5),
        bg_tint=torch.zeros(n, 3),
        light_grad=torch.zeros(n, 2),
        clutter=torch.zeros(n, 3, 4, 4),
        texture=torch.zeros(n, 3, 8, 8),
        noise=torch.zeros(n),
    )
    images = synthetic._compose(p).float()
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners - 127.5).abs().max() <= 1.0


def test_real_corners_rarely_black(sample):
    images, _ = sample
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (n, 3, 4)
    black = (corners.amax(dim=1) == 0).float().mean()
    assert black < 0.005


def test_cache_round_trip(tmp_path, monkeypatch):
    images, labels = load_synthetic("test", 300, seed=2, data_dir=tmp_path)
    path = cache_path("test", 300, 2, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "synthetic"
    assert "v" + str(synthetic.GENERATOR_VERSION) in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left

    def fail(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(synthetic, "_generate_stream", fail)
    again_images, again_labels = load_synthetic("test", 300, seed=2, data_dir=tmp_path)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)


def test_corrupt_cache_is_regenerated(tmp_path):
    path = cache_path("train", 64, 0, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    images, labels = load_synthetic("train", 64, data_dir=tmp_path)
    fresh_images, fresh_labels = load_synthetic("train", 64, cache=False)
    assert torch.equal(images, fresh_images) and torch.equal(labels, fresh_labels)
    assert path.stat().st_size > 64 * 3 * 32 * 32


def test_cache_false_writes_nothing(tmp_path):
    load_synthetic("train", 32, data_dir=tmp_path, cache=False)
    assert not any(tmp_path.iterdir())


def test_default_size_is_svhn_size(monkeypatch):
    seen = {}

    def fake(n, seed, stream, progress=False):
        seen["n"] = n
        return torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64)

    monkeypatch.setattr(synthetic, "_generate_stream", fake)
    for split, size in SVHN_SPLIT_SIZES.items():
        images, _ = load_synthetic(split, cache=False)
        assert seen["n"] == size == images.shape[0]
    assert SVHN_SPLIT_SIZES == {"train": 73257, "test": 26032}


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NBHELPERS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert cache_path("train", 5, 0).parent == tmp_path / "synthetic"
    monkeypatch.delenv("NBHELPERS_DATA_DIR")
    assert default_data_dir() == Path.home() / ".cache" / "nbhelpers"


@pytest.mark.parametrize(
    ("call", "exc", "needle"),
    [
        (lambda: load_synthetic("valid"), ValueError, "'valid'"),
        (lambda: load_synthetic("train", 0), ValueError, "0"),
        (lambda: load_synthetic("test", -5), ValueError, "-5"),
        (lambda: load_synthetic("test", 10, seed=-1), ValueError, "seed=-1 is invalid"),
        (lambda: load_synthetic("test", 10, seed=2**32), ValueError, "<= 4294967295"),
        (lambda: load_synthetic("test", 2.5), ValueError, "n=2.5 is invalid"),
        (
            lambda: load_synthetic("test", 26_033),
            ValueError,
            "n=26033 is invalid; valid: an integer >= 1 and <= 26032",
        ),
        (lambda: generate(0), ValueError, "n=0 is invalid"),
        (lambda: generate(10, seed=-3), ValueError, "seed=-3 is invalid"),
        (lambda: generate(10, seed=1.0), ValueError, "seed=1.0"),
    ],
)
def test_bad_inputs_raise(call, exc, needle):
    with pytest.raises(exc) as info:
        call()
    assert needle in str(info.value)
