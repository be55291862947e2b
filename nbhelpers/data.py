"""The data layer: source switch, splits, datasets, loaders and image grids.

Two sources give the same thing, uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``
with values 0..9:

- ``"svhn"``: the real Street View House Numbers through torchvision (:mod:`nbhelpers.svhn`);
- ``"synthetic"``: the offline stand-in "synthetic house numbers" (:mod:`nbhelpers.synthetic`);
- ``"auto"``: SVHN when its files are on disk (or, with ``download=True``, can be downloaded),
  else the stand-in, announced loudly.

:func:`load_data` returns a :class:`DataBundle` of three disjoint splits: validation is carved
out of SVHN's train split with a fixed generator, test comes from SVHN's test split.

Two kinds of loader give ``(x, y)`` batches, ``x`` float32 ``(B, 3, 32, 32)`` in [0, 1]:

- ``"pil"``: a ``torch.utils.data.DataLoader`` over per-sample PIL images with torchvision
  transforms (what the handover used; flexible, slow);
- ``"tensor"``: :class:`TensorLoader`, the whole split as one uint8 tensor resident on the
  device, shuffled by index, scaled on the device (fast).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SOURCES = ("svhn", "synthetic", "auto")
LOADER_KINDS = ("tensor", "pil")
SPLITS = ("train", "valid", "test")
NUM_CLASSES = 10

STAND_IN_MESSAGE = (
    "Using the OFFLINE STAND-IN data ('synthetic house numbers'), not real SVHN. "
    "Numbers you see (accuracies, times) will differ from real SVHN. To use real SVHN, put "
    "train_32x32.mat and test_32x32.mat into <data_dir>/svhn/ or run with download=True on a "
    "machine with internet access."
)


class StandInWarning(UserWarning):
    """Warns that the offline stand-in is used instead of real SVHN."""


def _check_images(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{what}: images and labels must be torch tensors, got "
            f"{type(images).__name__} and {type(labels).__name__}."
        )
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{what}: images must be uint8 of shape (N, 3, H, W), got dtype {images.dtype} and "
            f"shape {tuple(images.shape)}."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what}: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}."
        )
    if labels.dtype != torch.int64:
        raise ValueError(f"{what}: labels must be int64, got {labels.dtype}.")


@dataclass
class ImageSet:
    """One split held in memory.

    Attributes:
        images: uint8 tensor ``(N, 3, 32, 32)`` on the CPU.
        labels: int64 tensor ``(N,)`` with values 0..9.
        name: the split name (``"train"``, ``"valid"``, ``"test"`` or any label).
        source: ``"svhn"`` or ``"synthetic"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = "train"
    source: str = "synthetic"

    def __post_init__(self) -> None:
        _check_images(self.images, self.labels, f"ImageSet {self.name!r}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"ImageSet(name={self.name!r}, source={self.source!r}, n={len(self)})"

    def subset(self, indices: Sequence[int] | torch.Tensor, name: str | None = None) -> ImageSet:
        """Return the images at ``indices`` (a copy) as a new :class:`ImageSet`."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], name or self.name, self.source)

    def class_counts(self) -> list[int]:
        """Number of images per class 0..9 (a list of 10 ints)."""
        return torch.bincount(self.labels, minlength=NUM_CLASSES).tolist()

    def to_dataset(self, transform: Callable | None = None) -> SVHNLikeDataset:
        """A map-style dataset of PIL images, exactly like ``torchvision.datasets.SVHN``.

        Args:
            transform: a torchvision transform applied to each PIL image; ``None`` means
                ``ToTensor()`` (float32 ``(3, 32, 32)`` in [0, 1]).
        """
        return SVHNLikeDataset(self.images, self.labels, transform)


class SVHNLikeDataset(torch.utils.data.Dataset):
    """Per-sample dataset: item ``i`` is ``(transform(PIL image), int label)``.

    Mirrors ``torchvision.datasets.SVHN.__getitem__`` (a PIL RGB image built from the
    ``(3, 32, 32)`` uint8 array, then the transform), so the handover's pipeline runs unchanged.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None
    ) -> None:
        _check_images(images, labels, "SVHNLikeDataset")
        from torchvision.transforms import ToTensor

        self.data = images.numpy()
        self.labels = labels.numpy()
        self.transform = transform if transform is not None else ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(np.transpose(self.data[index], (1, 2, 0)))
        return self.transform(img), int(self.labels[index])


@dataclass
class DataBundle:
    """The three splits of one data source.

    Attributes:
        train, valid, test: the splits (:class:`ImageSet`); disjoint by construction.
        source: ``"svhn"`` or ``"synthetic"`` (what was actually used).
        is_stand_in: True for the synthetic stand-in.
    """

    train: ImageSet
    valid: ImageSet
    test: ImageSet
    source: str

    @property
    def is_stand_in(self) -> bool:
        return self.source == "synthetic"

    def splits(self) -> dict[str, ImageSet]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def summary(self) -> str:
        """A few lines: the source, split sizes and class counts."""
        head = f"data source: {self.source}" + (
            " (OFFLINE STAND-IN, not real SVHN)" if self.is_stand_in else " (real SVHN)"
        )
        lines = [head]
        for name, split in self.splits().items():
            lines.append(
                f"  {name:<5} {len(split):>6} images   class counts {split.class_counts()}"
            )
        return "\n".join(lines)


def _check_size(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")


def resolve_source(source: str, data_dir: str | Path | None = None, download: bool = True) -> str:
    """Decide which source ``source`` means on this machine: ``"svhn"`` or ``"synthetic"``.

    ``"auto"`` gives ``"svhn"`` when both SVHN files are on disk; otherwise, with
    ``download=True``, it tries to download them; when that fails it gives ``"synthetic"``
    and warns (:class:`StandInWarning`).

    Raises:
        ValueError: unknown source name.
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown data source {source!r}; valid: {', '.join(SOURCES)}.")
    if source != "auto":
        return source
    from nbhelpers import svhn

    if all(svhn.svhn_present(split, data_dir, check_md5=False) for split in ("train", "test")):
        return "svhn"
    if download:
        try:
            for split in ("train", "test"):
                svhn.load_svhn(split, data_dir, download=True)
            return "svhn"
        except svhn.SVHNUnavailable as err:
            warnings.warn(f"SVHN could not be downloaded ({err}).", StandInWarning, stacklevel=2)
    warnings.warn(STAND_IN_MESSAGE, StandInWarning, stacklevel=2)
    return "synthetic"


def _load_split(source: str, split: str, n: int | None, data_dir, download: bool, seed: int):
    if source == "svhn":
        from nbhelpers.svhn import load_svhn

        return load_svhn(split, data_dir, download=download)
    from nbhelpers.synthetic import load_synthetic

    return load_synthetic(split, n, seed=seed, data_dir=data_dir)


def _check_within_svhn(n_train: int | None, n_valid: int | None, n_test: int | None) -> None:
    """Refuse sizes beyond SVHN's splits before anything is loaded or generated."""
    from nbhelpers.synthetic import SVHN_SPLIT_SIZES

    pool = SVHN_SPLIT_SIZES["train"]
    if (n_train or 0) + (n_valid or 0) > pool:
        raise ValueError(
            f"n_train + n_valid = {(n_train or 0) + (n_valid or 0):,} but the train split has only "
            f"{pool:,} images (SVHN's size, also used by the stand-in); ask for at most {pool:,}."
        )
    if (n_test or 0) > SVHN_SPLIT_SIZES["test"]:
        raise ValueError(
            f"n_test = {n_test:,} but the test split has only {SVHN_SPLIT_SIZES['test']:,} images."
        )


def load_data(
    source: str = "auto",
    *,
    data_dir: str | Path | None = None,
    n_train: int | None = None,
    n_valid: int | None = None,
    n_test: int | None = None,
    download: bool = True,
    seed: int = 0,
) -> DataBundle:
    """Load train / validation / test splits of SVHN or the stand-in.

    Validation is carved out of the source's train split by a random permutation drawn from
    ``torch.Generator().manual_seed(seed)``; test comes from the source's test split. The three
    splits are disjoint by construction.

    Args:
        source: ``"svhn"``, ``"synthetic"`` or ``"auto"`` (see :func:`resolve_source`).
        data_dir: where data lives; default :func:`nbhelpers.env.default_data_dir`.
        n_train: training images (after the validation carve-out); ``None`` = all the rest.
        n_valid: validation images; ``None`` = 5,000 or a tenth of the train split, whichever is
            smaller.
        n_test: test images; ``None`` = the whole test split (26,032 for SVHN).
        download: allow downloading SVHN.
        seed: seed of the split permutation (and of the stand-in generator).

    Returns:
        A :class:`DataBundle`.

    Raises:
        ValueError: unknown source; sizes not positive; more images asked for than the source has.
        nbhelpers.svhn.SVHNUnavailable: ``source="svhn"`` and the files are missing and cannot be
            downloaded (the message says how to put them in place by hand).
    """
    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        _check_size(name, value)
    _check_within_svhn(n_train, n_valid, n_test)  # both sources have SVHN's split sizes
    used = resolve_source(source, data_dir, download)
    n_pool = None if (n_train is None or n_valid is None) else n_train + n_valid
    train_x, train_y = _load_split(used, "train", n_pool, data_dir, download, seed)
    test_x, test_y = _load_split(used, "test", n_test, data_dir, download, seed)
    total = len(train_y)
    if n_valid is None:
        n_valid = min(5000, total // 10)
    if n_train is None:
        n_train = total - n_valid
    if n_train + n_valid > total:
        raise ValueError(
            f"n_train + n_valid = {n_train + n_valid} but the {used} train split has only "
            f"{total} images."
        )
    if n_test is not None and n_test > len(test_y):
        raise ValueError(
            f"n_test = {n_test} but the {used} test split has only {len(test_y)} images."
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=gen)
    pool = ImageSet(train_x, train_y, "train", used)
    valid = pool.subset(perm[:n_valid], "valid")
    train = pool.subset(perm[n_valid : n_valid + n_train], "train")
    test = ImageSet(test_x, test_y, "test", used)
    if n_test is not None and n_test < len(test):
        test = test.subset(torch.randperm(len(test), generator=gen)[:n_test], "test")
    return DataBundle(train, valid, test, used)


class TensorLoader:
    """Batches of a split held as one uint8 tensor on the training device.

    Why: the handover decoded a PIL image and ran torchvision transforms per sample on the
    CPU for every step; here the whole split sits on the device once (SVHN's train split is
    73,257 x 3,072 bytes = 225 MB as uint8), batches are gathered by index and scaled on the
    device, so data loading costs almost nothing.

    Args:
        images: uint8 ``(N, 3, H, W)``.
        labels: int64 ``(N,)``.
        batch_size: images per batch (positive int).
        shuffle: draw a fresh random order every epoch (from ``seed`` and the epoch number,
            so runs are repeatable).
        device: where batches live (the images are moved there once).
        seed: seed of the shuffling.
        drop_last: drop a final incomplete batch.
        augment: optional callable on the float batch ``(B, 3, H, W)`` on the device, applied to
            every batch (e.g. an on-device rotation); ``None`` for no augmentation.
        channels_last: return batches in ``torch.channels_last`` memory format.

    Yields:
        ``(x, y)``: ``x`` float32 ``(B, 3, H, W)`` in [0, 1], ``y`` int64 ``(B,)``, on ``device``.

    Raises:
        ValueError: non-positive batch size or mismatched inputs.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        channels_last: bool = False,
    ) -> None:
        _check_images(images, labels, "TensorLoader")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.augment = augment
        self.channels_last = channels_last
        self.epoch = 0

    @property
    def dataset_size(self) -> int:
        """Number of images in the split."""
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        n, b = self.dataset_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.dataset_size
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images.index_select(0, idx).float().div_(255.0)
            if self.augment is not None:
                x = self.augment(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)


def make_loader(
    imageset: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    device: torch.device | str = "cpu",
    kind: str = "tensor",
    transform: Callable | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
):
    """Make a loader of ``(x, y)`` batches for one split.

    Args:
        imageset: the split.
        batch_size: images per batch.
        shuffle: shuffle every epoch (train: yes; evaluation: no).
        device: the training device (used by ``"tensor"``; ``"pil"`` batches stay on the CPU and
            the training loop moves them).
        kind: ``"tensor"`` (:class:`TensorLoader`) or ``"pil"`` (DataLoader over PIL images).
        transform: per-sample torchvision transform for ``"pil"`` (default ``ToTensor()``).
        augment: on-device batch augmentation for ``"tensor"``.
        num_workers, pin_memory: passed to the DataLoader (``"pil"`` only).
        seed: seed of the shuffling.

    Raises:
        ValueError: unknown ``kind``, or an option that the kind does not support.
    """
    if kind not in LOADER_KINDS:
        raise ValueError(f"Unknown loader kind {kind!r}; valid: {', '.join(LOADER_KINDS)}.")
    if kind == "tensor":
        if transform is not None:
            raise ValueError(
                "kind='tensor' works on whole batches and takes `augment`, not a per-sample "
                "`transform`; use kind='pil' for torchvision PIL transforms."
            )
        return TensorLoader(
            imageset.images,
            imageset.labels,
            batch_size,
            shuffle=shuffle,
            device=device,
            seed=seed,
            augment=augment,
        )
    if augment is not None:
        raise ValueError("kind='pil' takes a per-sample `transform`, not a batch `augment`.")
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        imageset.to_dataset(transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=gen,
        persistent_workers=num_workers > 0,
    )


def _as_display_images(images: torch.Tensor) -> torch.Tensor:
    """float ``(N, 3, H, W)`` in [0, 1] on the CPU, from uint8 or float input."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W), got {shape}.")
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float().clamp(0.0, 1.0)


def show_grid(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    n: int = 64,
    ncols: int = 8,
    title: str | None = None,
    predictions: torch.Tensor | Sequence[int] | None = None,
    ax=None,
):
    """Show the first ``n`` images as a grid with their labels.

    Args:
        images: uint8 ``(N, 3, H, W)`` or float ``(N, 3, H, W)`` in [0, 1] (an
            :class:`ImageSet`'s images, or a batch ``x`` from a loader).
        labels: labels to print on each tile (optional).
        n: how many images to show (at most N).
        ncols: tiles per row.
        title: the figure title.
        predictions: model predictions; tiles where they differ from ``labels`` are marked red
            with ``label->prediction``.
        ax: a matplotlib Axes to draw into; default a new figure.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: wrong image shape, or ``n`` not positive.
    """
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    if isinstance(images, ImageSet):
        labels = images.labels if labels is None else labels
        images = images.images
    if n <= 0 or ncols <= 0:
        raise ValueError(f"n and ncols must be positive, got n={n!r}, ncols={ncols!r}.")
    imgs = _as_display_images(images)[:n]
    count = imgs.shape[0]
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    pad = 2
    h, w = imgs.shape[2], imgs.shape[3]
    grid = make_grid(imgs, nrow=ncols, padding=pad, pad_value=1.0)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 * ncols + 0.4, 1.12 * nrows + 0.6))
    else:
        fig = ax.figure
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if labels is not None:
        labels = [int(v) for v in list(labels)[:count]]
        preds = None if predictions is None else [int(v) for v in list(predictions)[:count]]
        for i, lab in enumerate(labels):
            r, c = divmod(i, ncols)
            x0, y0 = c * (w + pad) + pad, r * (h + pad) + pad
            text, color = str(lab), "black"
            if preds is not None and preds[i] != lab:
                text, color = f"{lab}\u2192{preds[i]}", "red"
            ax.text(
                x0 + 1,
                y0 + 1,
                text,
                fontsize=8,
                color=color,
                va="top",
                ha="left",
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 0.6, "edgecolor": "none"},
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
