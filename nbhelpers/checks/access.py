"""Reading the learner's own objects without changing them.

- :func:`untouched`: iterate a loader or apply a transform freely inside; afterwards every
  random state, every generator of the loader (sampler, augmentation) and its epoch counter
  are as before.
- :func:`as_splits`, :func:`raw_images_labels`: the splits, and the stored images and labels of
  one, before any transform; :func:`model_batch` / :func:`take_examples`: examples ``(x, y)``
  as the model sees them; :class:`Limited`: a loader cut to a few small batches;
  :func:`eval_outputs`: what an eval-mode copy of the model outputs.
- :func:`find_transform` / :func:`list_transforms`: the transform a loader or dataset applies,
  and every transform nested in it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from nbhelpers.state import model_device, preserved_rng


# ---------------------------------------------------------------------------------------------
# Transforms and random streams
# ---------------------------------------------------------------------------------------------
def find_transform(obj: Any) -> tuple[Callable | None, str]:
    """The transform applied to a split's images, and its kind.

    Looks at ``augment`` (a batch callable, e.g. of :class:`nbhelpers.data.TensorLoader`),
    ``transform`` (a per-sample callable, e.g. of a torchvision dataset), then into ``dataset``
    (DataLoader, Subset). A callable passed directly is returned as ``"sample"`` kind.

    Returns:
        ``(transform, kind)``, kind ``"batch"`` (called on a float batch ``(B, C, H, W)``),
        ``"sample"`` (called on one PIL image) or ``"none"``.
    """
    seen = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        if callable(getattr(obj, "augment", None)):
            return obj.augment, "batch"
        if callable(getattr(obj, "transform", None)):
            return obj.transform, "sample"
        if callable(obj) and not isinstance(obj, (Dataset, DataLoader, Iterable)):
            return obj, "sample"
        obj = getattr(obj, "dataset", None)
    return None, "none"


def list_transforms(transform: Any) -> list[Any]:
    """``transform`` and every transform nested inside it, depth first, each once.

    Walks ``.transforms`` lists (torchvision ``Compose``, ``RandomApply``, ``RandomChoice``,
    ``RandomOrder``, v1 and v2), ``nn.Module`` children (``nn.Sequential``) and
    ``functools.partial``. ``None`` gives ``[]``.
    """
    out, seen = [], set()

    def walk(t: Any) -> None:
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        out.append(t)
        inner = getattr(t, "transforms", None)
        for s in inner if isinstance(inner, (list, tuple, nn.ModuleList)) else ():
            walk(s)
        for s in t.children() if isinstance(t, nn.Module) else ():
            walk(s)
        if hasattr(t, "args"):
            walk(getattr(t, "func", None))

    walk(transform)
    return out


def generators_of(*sources: Any) -> list[torch.Generator]:
    """Every ``torch.Generator`` the sources draw from, each once: their own, their sampler's,
    and those of their augmentation / transform (nested ones too), down the ``dataset`` chain."""
    owners: list[Any] = []
    for obj in sources:
        sampler = getattr(getattr(obj, "batch_sampler", None), "sampler", None)
        owners += [getattr(obj, "sampler", None), sampler]
        seen = set()
        while obj is not None and id(obj) not in seen:
            seen.add(id(obj))
            for part in (obj, getattr(obj, "augment", None), getattr(obj, "transform", None)):
                owners += list_transforms(part)
            obj = getattr(obj, "dataset", None)
    found: list[torch.Generator] = []
    for owner in owners:
        for value in getattr(owner, "__dict__", {}).values():
            if isinstance(value, torch.Generator) and all(value is not g for g in found):
                found.append(value)
    return found


@contextmanager
def untouched(*sources: Any):
    """Run the body; afterwards the random streams are as before.

    Restores Python's, NumPy's and torch's global random states
    (:func:`nbhelpers.state.preserved_rng`), every generator of the sources
    (:func:`generators_of`: a loader, its sampler, its augmentation) and an integer ``epoch``
    attribute (:class:`nbhelpers.data.TensorLoader` draws its shuffle order from it), so the
    learner's next epoch is the one it would have been.
    """
    epochs = [(s, s.epoch) for s in sources if type(getattr(s, "epoch", None)) is int]
    gens = generators_of(*sources)
    states = [g.get_state() for g in gens]
    try:
        with preserved_rng():
            yield
    finally:
        for gen, state in zip(gens, states, strict=True):
            gen.set_state(state)
        for source, epoch in epochs:
            with contextlib.suppress(AttributeError):
                source.epoch = epoch


# ---------------------------------------------------------------------------------------------
# Splits, stored images, batches
# ---------------------------------------------------------------------------------------------
def as_splits(data: Any) -> dict[str, Any]:
    """``{name: split}`` from a dict, a :class:`nbhelpers.data.DataBundle` or one split.

    Raises:
        TypeError: ``data`` is None.
    """
    if data is None:
        raise TypeError("no data given: pass a dict {'train': ..., 'valid': ...} or a DataBundle.")
    if isinstance(data, Mapping):
        return dict(data)
    if callable(getattr(data, "splits", None)):
        return dict(data.splits())
    return {getattr(data, "name", None) or "data": data}


def to_tensor(value: Any) -> torch.Tensor | None:
    """``value`` as a CPU tensor (a PIL image as uint8 ``(C, H, W)``), or None."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("RGB") if value.mode not in ("RGB", "L") else value)
        value = (value[:, :, None] if value.ndim == 2 else value).transpose(2, 0, 1)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, np.integer)):
        return torch.as_tensor(value)
    return None


def raw_images_labels(
    obj: Any, max_items: int | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None, str]:
    """The stored images and labels of one split, before any transform.

    Understands, in this order: an ``(images, labels)`` pair of tensors/arrays;
    ``torch.utils.data.Subset`` (its parent's items at ``indices``); ``TensorDataset``; objects
    with ``images`` (:class:`nbhelpers.data.ImageSet`, ``TensorLoader``) or ``data`` tensors or
    arrays and ``labels``/``targets`` (``torchvision.datasets.SVHN``, CIFAR, MNIST,
    ``SVHNLikeDataset``; a bare images tensor); a ``DataLoader`` (its dataset). Anything else
    that can be indexed (a Dataset) or iterated (batches ``(x, y)``) is read item by item, up
    to ``max_items`` items, *through* its transform.

    Returns:
        ``(images, labels, how)``: images a CPU tensor (N, ...) in the stored dtype (uint8 for
        image datasets), labels a CPU tensor (N,), ``how`` a few words on where they came from
        (``"stored"`` or ``"read through the transform"``). Either tensor may be None when the
        object does not provide it.

    Raises:
        TypeError: ``obj`` can be neither indexed nor iterated.
    """
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = to_tensor(obj[0]), to_tensor(obj[1])
        if x is not None and y is not None and x.ndim >= 2:
            return x, y, "stored"
    if isinstance(obj, Subset):
        x, y, how = raw_images_labels(obj.dataset)
        if x is None or how != "stored":
            return _read_items(obj, max_items)
        idx = torch.as_tensor(list(obj.indices), dtype=torch.long)
        return x[idx], (y[idx] if y is not None else None), how
    if isinstance(obj, TensorDataset) and len(obj.tensors) >= 2:
        return to_tensor(obj.tensors[0]), to_tensor(obj.tensors[1]), "stored"
    x = to_tensor(getattr(obj, "images", getattr(obj, "data", None)))
    if x is not None and x.ndim >= 3:
        labels = getattr(obj, "labels", None)
        return (
            x,
            to_tensor(labels if labels is not None else getattr(obj, "targets", None)),
            "stored",
        )
    if isinstance(obj, DataLoader):
        return raw_images_labels(obj.dataset, max_items)
    return _read_items(obj, max_items)


def _read_items(obj: Any, max_items: int | None):
    how = "read through the transform"
    if not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        if not isinstance(obj, Iterable):
            raise TypeError(
                f"cannot read images from a {type(obj).__name__}; pass an ImageSet, a Dataset, "
                "a DataLoader, a TensorLoader or an (images, labels) pair."
            )
        return *take_examples(obj, max_items or 10_000), how
    n = len(obj) if max_items is None else min(len(obj), max_items)
    items = [obj[i] for i in range(n)]
    how += f" (first {n} of {len(obj)})" if n < len(obj) else ""
    pairs = [it if isinstance(it, (tuple, list)) else (it, None) for it in items]
    xs, ys = [to_tensor(p[0]) for p in pairs], [p[1] for p in pairs]
    if ys and isinstance(ys[0], torch.Tensor) and ys[0].ndim == 1:  # a list of batches
        return torch.cat(xs), torch.cat([to_tensor(y) for y in ys]), how
    x = torch.stack(xs) if xs and all(v is not None for v in xs) else None
    y = torch.as_tensor([int(v) for v in ys]) if ys and all(v is not None for v in ys) else None
    return x, y, how


def _batch_xy(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"a loader must yield (x, y) pairs, got a {type(batch).__name__}; "
            "wrap it so that each batch is (inputs, labels)."
        )
    return batch[0], batch[1]


def take_examples(loader: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``min(n, len)`` examples ``(x, y)`` of a fresh pass over ``loader``, on the CPU.

    Random states and the loader's epoch counter are restored afterwards (:func:`untouched`).

    Raises:
        TypeError: the loader does not yield ``(x, y)`` pairs.
        ValueError: it yields no batches.
    """
    xs, ys, count = [], [], 0
    with untouched(loader):
        for batch in loader:
            x, y = (torch.as_tensor(v).detach().cpu() for v in _batch_xy(batch))
            xs.append(x)
            ys.append(y)
            count += int(x.shape[0])
            if count >= n:
                break
    if not xs:
        raise ValueError("the loader yielded no batches.")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def model_batch(source: Any, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples ``(x, y)`` as the model sees them, from a loader, a dataset or a pair.

    Args:
        source: an iterable of ``(x, y)`` batches, a map-style dataset of ``(x, y)`` items, an
            ``(x, y)`` pair of tensors, or an :class:`~nbhelpers.data.ImageSet` (uint8 images
            scaled to [0, 1], as its ``to_dataset()`` would give them).
        n: number of examples wanted (fewer if the source is smaller).

    Returns:
        ``x`` float (n, C, H, W), ``y`` int64 (n,) on the CPU.

    Raises:
        TypeError: ``source`` gives no ``(x, y)`` pairs.
    """
    if isinstance(source, (tuple, list)) and len(source) == 2 and torch.is_tensor(source[0]):
        return source[0][:n], torch.as_tensor(source[1])[:n]
    if isinstance(source, Dataset) and hasattr(source, "__len__"):
        if not isinstance(source, IterableDataset):
            with untouched(source):
                x, y, _ = _read_items(source, n)
        else:
            x, y = take_examples(source, n)
    elif torch.is_tensor(getattr(source, "images", None)) and not isinstance(source, Iterable):
        x, y = source.images[:n].detach().cpu(), source.labels[:n].detach().cpu()
    else:
        x, y = take_examples(source, n)
    return (x.float() / 255.0 if x.dtype == torch.uint8 else x), y


class Limited:
    """A view of ``loader`` that stops after ``n_batches`` batches (it has ``len``); with
    ``max_batch_size``, each batch ``(x, y, ...)`` is cut to its first that many examples."""

    def __init__(self, loader: Iterable, n_batches: int, max_batch_size: int | None = None):
        self.loader, self.n_batches, self.max_batch_size = loader, n_batches, max_batch_size

    def __len__(self) -> int:
        try:
            return min(len(self.loader), self.n_batches)  # type: ignore[arg-type]
        except TypeError:
            return self.n_batches

    def __iter__(self):
        for batch in itertools.islice(self.loader, self.n_batches):
            if self.max_batch_size and isinstance(batch, (tuple, list)):
                batch = type(batch)(b[: self.max_batch_size] for b in batch)
            yield batch


def eval_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The outputs of an eval-mode copy of ``model`` on ``x`` (float32, on the model's device),
    without gradients; random states are kept."""
    with preserved_rng(), torch.no_grad():
        m = copy.deepcopy(model).eval()
        return m(x.to(model_device(m), dtype=torch.float32)).float()
