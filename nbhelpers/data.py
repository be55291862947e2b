"""The data layer: the source switch, the three splits, datasets, loaders and image grids.

Both sources give uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)`` with values 0..9:

- ``"svhn"``: the real Street View House Numbers through torchvision (:mod:`nbhelpers.svhn`);
- ``"synthetic"``: the synthetic stand-in, generated offline (:mod:`nbhelpers.synthetic`);
- ``"auto"``: SVHN when its files are on disk and intact (or, with ``download=True``, can be
  downloaded), else the synthetic stand-in, announced loudly with the reason.

:func:`load_data` returns a :class:`DataBundle` of the three disjoint splits :data:`SPLITS`:
validation is carved out of the source's train split with a fixed generator, test comes from
its test split.

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

from nbhelpers import validate

SOURCES = ("svhn", "synthetic", "auto")
LOADER_KINDS = ("tensor", "pil")
#: The splits of every data set in the series, in this order (the one list of their names).
SPLITS = ("train", "valid", "test")
NUM_CLASSES = 10

SYNTHETIC_MESSAGE = (
    "Using the SYNTHETIC STAND-IN, not real SVHN: accuracies and times will differ from real "
    "SVHN. To use real SVHN, put train_32x32.mat and test_32x32.mat into <data_dir>/svhn/ or "
    "run with download=True on a machine with internet access."
)


class SyntheticDataWarning(UserWarning):
    """Warns that the synthetic stand-in is used instead of real SVHN."""


@dataclass
class ImageSet:
    """One split held in memory.

    Attributes:
        images: uint8 tensor ``(N, 3, 32, 32)`` on the CPU.
        labels: int64 tensor ``(N,)`` with values 0..9.
        name: the split name (one of :data:`SPLITS`, or any label).
        source: ``"svhn"`` or ``"synthetic"``.

    Raises:
        ValueError: images not uint8 ``(N, 3, H, W)``, or labels not int64 ``(N,)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = "train"
    source: str = "synthetic"

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        images_ok = x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3
        if not images_ok or y.dtype != torch.int64 or tuple(y.shape) != tuple(x.shape[:1]):
            raise ValueError(
                f"ImageSet {self.name!r}: images must be uint8 of shape (N, 3, H, W) and labels "
                f"int64 of shape (N,), got {x.dtype} {tuple(x.shape)} and {y.dtype} {tuple(y.shape)}."
            )

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
    Build it with :meth:`ImageSet.to_dataset`, which has checked the tensors.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None
    ) -> None:
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
    """

    train: ImageSet
    valid: ImageSet
    test: ImageSet
    source: str

    @property
    def is_synthetic(self) -> bool:
        """True for the synthetic stand-in."""
        return self.source == "synthetic"

    is_stand_in = is_synthetic  # the earlier name of the same property

    def splits(self) -> dict[str, ImageSet]:
        """``{"train": ..., "valid": ..., "test": ...}`` (in the order of :data:`SPLITS`)."""
        return {name: getattr(self, name) for name in SPLITS}

    def summary(self) -> str:
        """A few lines: the source, split sizes and class counts."""
        kind = "STAND-IN, not real SVHN" if self.is_synthetic else "real SVHN"
        lines = [f"data source: {self.source} ({kind})"]
        for name, split in self.splits().items():
            lines.append(
                f"  {name:<5} {len(split):>6} images   class counts {split.class_counts()}"
            )
        return "\n".join(lines)


def resolve_source(source: str, data_dir: str | Path | None = None, download: bool = True) -> str:
    """Decide which source ``source`` means on this machine: ``"svhn"`` or ``"synthetic"``.

    ``"auto"`` gives ``"svhn"`` when both SVHN files are on disk with their MD5 sums, or when
    :func:`nbhelpers.svhn.load_svhn` can put them there (``download=True``; a damaged file is
    renamed aside first). Otherwise it gives ``"synthetic"`` and warns, on this first call,
    with the reason (:class:`SyntheticDataWarning`).

    Raises:
        ValueError: unknown source name.
    """
    validate.one_of("source", source, SOURCES)
    if source != "auto":
        return source
    from nbhelpers import svhn

    try:
        for split in svhn.SVHN_SPLIT_SIZES:
            if not svhn.svhn_present(split, data_dir):
                svhn.load_svhn(split, data_dir, download=download)
        return "svhn"
    except svhn.SVHNUnavailable as err:
        reason = str(err).split("\n\n")[0]  # what happened, without the manual instructions
        warnings.warn(f"{reason}\n{SYNTHETIC_MESSAGE}", SyntheticDataWarning, stacklevel=2)
        return "synthetic"


def _load_split(source: str, split: str, n: int | None, data_dir, download: bool, seed: int):
    """``(images, labels)`` of one split of a resolved source (``n``: synthetic only)."""
    if source == "svhn":
        from nbhelpers.svhn import load_svhn

        return load_svhn(split, data_dir, download=download)
    from nbhelpers.synthetic import load_synthetic

    return load_synthetic(split, n, seed=seed, data_dir=data_dir)


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
    """Load train / validation / test splits of SVHN or the synthetic stand-in.

    Validation is carved out of the source's train split by a random permutation drawn from
    ``torch.Generator().manual_seed(seed)``; test comes from the source's test split. The three
    splits are disjoint by construction. Both sources have SVHN's split sizes (train 73,257,
    test 26,032 images), so the sizes are checked before anything is loaded or generated.

    Args:
        source: ``"svhn"``, ``"synthetic"`` or ``"auto"`` (see :func:`resolve_source`).
        data_dir: where data lives; default :func:`nbhelpers.env.default_data_dir`.
        n_train: training images (after the validation carve-out); ``None`` = all the rest.
        n_valid: validation images; ``None`` = 5,000 or a tenth of the train split, whichever is
            smaller.
        n_test: test images; ``None`` = the whole test split.
        download: allow downloading SVHN.
        seed: seed of the split permutation (and of the synthetic stand-in).

    Returns:
        A :class:`DataBundle`.

    Raises:
        ValueError: unknown source; sizes not positive; more images asked for than the source has.
        nbhelpers.svhn.SVHNUnavailable: ``source="svhn"`` and the files are missing and cannot be
            downloaded (the message says how to put them in place by hand).
    """
    from nbhelpers.svhn import SVHN_SPLIT_SIZES as sizes

    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        validate.positive_int(name, value, allow_none=True)
    pool = None if n_train is None or n_valid is None else n_train + n_valid  # None: whole split
    n_valid = min(5000, sizes["train"] // 10) if n_valid is None else n_valid
    n_train = sizes["train"] - n_valid if n_train is None else n_train
    if n_train + n_valid > sizes["train"] or (n_test or 0) > sizes["test"]:
        raise ValueError(
            f"n_train + n_valid = {n_train + n_valid:,} and n_test = {n_test} ask for more than "
            f"the splits have: train {sizes['train']:,}, test {sizes['test']:,} images."
        )
    used = resolve_source(source, data_dir, download)
    train_x, train_y = _load_split(used, "train", pool, data_dir, download, seed)
    test_x, test_y = _load_split(used, "test", n_test, data_dir, download, seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train_y), generator=gen)
    whole = ImageSet(train_x, train_y, "train", used)
    valid = whole.subset(perm[:n_valid], "valid")
    train = whole.subset(perm[n_valid : n_valid + n_train], "train")
    test = ImageSet(test_x, test_y, "test", used)
    if n_test is not None and n_test < len(test):
        test = test.subset(torch.randperm(len(test), generator=gen)[:n_test], "test")
    return DataBundle(train, valid, test, used)


@dataclass(frozen=True)
class BatchOptions:
    """How a :class:`TensorLoader` orders and shapes its batches (its keyword arguments).

    Attributes:
        shuffle: a fresh random order every epoch, drawn from ``seed`` and the epoch number (so
            runs repeat); ``False`` keeps the stored order.
        seed: seed of the shuffling.
        drop_last: drop a final incomplete batch.
        augment: a callable on the float batch ``(B, 3, H, W)`` on the device, applied to every
            batch (e.g. an on-device rotation); ``None`` for no augmentation.
        channels_last: return batches in ``torch.channels_last`` memory format.
    """

    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    channels_last: bool = False


class TensorLoader:
    """Batches of a split held as one uint8 tensor on the training device.

    Why: the handover decoded a PIL image and ran torchvision transforms per sample on the
    CPU for every step; here the whole split sits on the device once (SVHN's train split is
    73,257 x 3,072 bytes = 225 MB as uint8), batches are gathered by index and scaled on the
    device, so data loading costs almost nothing.

    Args:
        images: uint8 ``(N, 3, H, W)`` (an :class:`ImageSet`'s, which are checked).
        labels: int64 ``(N,)``.
        batch_size: images per batch (positive int).
        device: where batches live (the images are moved there once).
        **options: the fields of :class:`BatchOptions`: ``shuffle`` (default True), ``seed``,
            ``drop_last``, ``augment``, ``channels_last``.

    Yields:
        ``(x, y)``: ``x`` float32 ``(B, 3, H, W)`` in [0, 1], ``y`` int64 ``(B,)``, on ``device``.

    Raises:
        ValueError: non-positive batch size.
        TypeError: an unknown option.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        **options,
    ) -> None:
        self.options = BatchOptions(**options)
        self.batch_size = validate.positive_int("batch_size", batch_size)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.epoch = 0

    drop_last = property(lambda self: self.options.drop_last, doc="Drop a final short batch.")
    augment = property(lambda self: self.options.augment, doc="The batch augmentation or None.")

    @property
    def dataset_size(self) -> int:
        """Number of images in the split."""
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        n, b = self.dataset_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        opts, n = self.options, self.dataset_size
        if opts.shuffle:
            gen = torch.Generator().manual_seed(opts.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images.index_select(0, idx).float().div_(255.0)
            if opts.augment is not None:
                x = opts.augment(x)
            if opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)


def make_loader(
    imageset: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    device: torch.device | str = "cpu",
    kind: str = "tensor",
    seed: int = 0,
    **options,
):
    """Make a loader of ``(x, y)`` batches for one split.

    Args:
        imageset: the split.
        batch_size: images per batch.
        shuffle: shuffle every epoch (train: yes; evaluation: no).
        device: the training device (used by ``"tensor"``; ``"pil"`` batches stay on the CPU and
            the training loop moves them).
        kind: ``"tensor"`` (:class:`TensorLoader`) or ``"pil"`` (DataLoader over PIL images).
        seed: seed of the shuffling.
        **options: for ``"tensor"`` those of :class:`BatchOptions` (``augment``, ``drop_last``,
            ``channels_last``); for ``"pil"`` ``transform`` (per-sample torchvision transform,
            default ``ToTensor()``) and DataLoader's own keywords (``num_workers``,
            ``pin_memory``, ...). ``"tensor"`` also takes ``transform=None`` and
            ``num_workers=0``, so one call can serve both kinds.

    Raises:
        ValueError: unknown ``kind``; a ``transform`` or worker processes for ``"tensor"``; an
            ``augment`` for ``"pil"``.
        TypeError: an option the kind's loader does not take.
    """
    validate.one_of("kind", kind, LOADER_KINDS)
    if kind == "tensor":
        sample_wise = options.pop("transform", None) is not None
        if sample_wise or options.pop("num_workers", 0) or options.pop("pin_memory", False):
            raise ValueError(
                "kind='tensor' works on whole batches on the device: it takes `augment`, no "
                "per-sample `transform` and no workers; use kind='pil' for those."
            )
        return TensorLoader(
            imageset.images, imageset.labels, batch_size, device=device, shuffle=shuffle,
            seed=seed, **options,
        )  # fmt: skip
    if options.pop("augment", None) is not None:
        raise ValueError("kind='pil' takes a per-sample `transform`, not a batch `augment`.")
    dataset = imageset.to_dataset(options.pop("transform", None))
    workers = options.setdefault("num_workers", 0)
    return torch.utils.data.DataLoader(
        dataset, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0, **options,
    )  # fmt: skip


def show_grid(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    n: int = 64,
    ncols: int = 8,
    title: str | None = None,
    ax=None,
):
    """Show the first ``n`` images as a grid, each with its label in the corner.

    Args:
        images: uint8 ``(N, 3, H, W)`` (an :class:`ImageSet`'s images) or float
            ``(N, 3, H, W)`` in [0, 1] (a batch ``x`` from a loader).
        labels: labels to print on each tile (optional).
        n: how many images to show (at most N).
        ncols: tiles per row.
        title: the title of the Axes.
        ax: a matplotlib Axes to draw into; default a new figure.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: wrong image shape, or ``n`` / ``ncols`` not positive.
    """
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    n, ncols = validate.positive_int("n", n), validate.positive_int("ncols", ncols)
    shape = tuple(getattr(images, "shape", ()))
    if not isinstance(images, torch.Tensor) or len(shape) != 4 or shape[1] not in (1, 3):
        raise ValueError(
            f"images must be a tensor of shape (N, 3, H, W), got {shape or images!r:.80}."
        )
    imgs = images[:n].detach().cpu()
    imgs = imgs.float() / 255.0 if imgs.dtype == torch.uint8 else imgs.float().clamp(0.0, 1.0)
    count, (h, w), pad = imgs.shape[0], imgs.shape[2:], 2
    ncols = min(ncols, count)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 * ncols + 0.4, 1.12 * -(-count // ncols) + 0.6))
    grid = make_grid(imgs, nrow=ncols, padding=pad, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    box = {"facecolor": "white", "alpha": 0.8, "pad": 0.6, "edgecolor": "none"}
    for i, label in enumerate([] if labels is None else list(labels)[:count]):
        r, c = divmod(i, ncols)
        x0, y0 = c * (w + pad) + pad + 1, r * (h + pad) + pad + 1
        ax.text(x0, y0, str(int(label)), fontsize=8, va="top", ha="left", bbox=box)
    if title:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure
