"""Checks of the training loader: shuffling, and a last batch of one example with BatchNorm.

- :func:`check_shuffle`: two epochs of the training loader start with the same order, or
  batches hold a single class (data sorted by label and not shuffled).
- :func:`check_last_batch`: the last batch of an epoch has exactly one example while the model
  has BatchNorm (its batch statistics are then meaningless, and ``BatchNorm1d`` raises).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from .access import untouched
from .results import CheckResult, new_figure, not_applicable

__all__ = ["check_last_batch", "check_shuffle"]


def _epoch_signature(loader: Any, n_batches: int) -> tuple[list[torch.Tensor], bytes]:
    """Labels of the first ``n_batches`` batches and a hash of their inputs."""
    labels, digest = [], hashlib.blake2b(digest_size=16)
    for i, batch in enumerate(loader):
        if i >= n_batches:
            break
        x, y = batch[0], batch[1]
        labels.append(torch.as_tensor(y).detach().cpu().long().flatten())
        xb = torch.as_tensor(x).detach().cpu()
        digest.update(np.ascontiguousarray(xb.float().numpy()).tobytes()[:1_000_000])
    return labels, digest.digest()


def check_shuffle(
    train_loader: Any, *, n_batches: int = 3, num_classes: int = 10, show: bool = True
) -> CheckResult:
    """Is the training loader shuffled (a new order every epoch)?

    A ``DataLoader`` with a ``SequentialSampler`` fails at once. Otherwise two fresh passes are
    started and their first ``n_batches`` batches compared (labels and input bytes): the same
    order twice means no shuffling between epochs. The label histogram of each batch is shown;
    batches holding one class betray data sorted by label. Random states and the loader's epoch
    counter are restored afterwards.

    Args:
        train_loader: the learner's training loader (iterable of ``(x, y)``).
        n_batches: batches compared per pass.
        num_classes: classes for the histogram.
        show: make the histogram figure.

    Returns:
        A :class:`CheckResult` named ``shuffle``.
    """
    sampler = getattr(train_loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.SequentialSampler):
        return CheckResult(
            "shuffle",
            False,
            "the DataLoader uses a SequentialSampler (shuffle=False): every epoch sees the "
            "images in the same order.",
            "Pass shuffle=True to the training DataLoader.",
        )
    with untouched(train_loader):
        first, hash1 = _epoch_signature(train_loader, n_batches)
        second, hash2 = _epoch_signature(train_loader, n_batches)
    if not first:
        return not_applicable("shuffle", "the training loader yielded no batches.")
    same_labels = len(first) == len(second) and all(
        torch.equal(a, b) for a, b in zip(first, second, strict=True)
    )
    same = same_labels and hash1 == hash2
    single = sum(int(torch.unique(b).numel() == 1) for b in first if b.numel() > 1)
    figure = _histogram_figure(first, second, num_classes) if show else None
    n_classes = [int(torch.unique(b).numel()) for b in first]
    evidence = (
        f"first {len(first)} batches of two passes are "
        f"{'identical' if same else 'different'}; classes per batch {n_classes}"
    )
    details = {"same_order": same, "classes_per_batch": n_classes}
    multi = [b for b in first if b.numel() > 1]
    if same or (single > 0 and single == len(multi)):
        hint = "Shuffle the training data every epoch (DataLoader(shuffle=True))."
        if not same:
            evidence += "; every batch holds a single class (data sorted by label)"
        return CheckResult("shuffle", False, evidence + ".", hint, figure=figure, details=details)
    return CheckResult("shuffle", True, evidence + ".", figure=figure, details=details)


def _histogram_figure(first: list[torch.Tensor], second: list[torch.Tensor], k: int):
    fig, ax = new_figure(6.0, 2.4)
    rows = [torch.bincount(b.clamp(0, k - 1), minlength=k).numpy() for b in first + second]
    ax.imshow(np.stack(rows), aspect="auto", cmap="Blues")
    ax.set_xlabel("class")
    ax.set_ylabel("batch (pass 1, then pass 2)")
    ax.set_xticks(range(k))
    ax.set_title("labels per batch", fontsize=9)
    fig.tight_layout()
    return fig


def _loader_sizes(loader: Any) -> tuple[int | None, int | None, bool]:
    """``(dataset size, batch size, drop_last)`` of a loader, None where unknown."""
    size = getattr(loader, "dataset_size", None)
    if size is None:
        dataset = getattr(loader, "dataset", None)
        try:
            size = len(dataset) if dataset is not None else None
        except TypeError:
            size = None
    batch = getattr(loader, "batch_size", None)
    drop_last = bool(getattr(loader, "drop_last", False))
    return size, batch, drop_last


def check_last_batch(train_loader: Any, model: nn.Module | None = None) -> CheckResult:
    """Does an epoch end with a batch of a single example while the model uses BatchNorm?

    With ``N`` examples, batch size ``B`` and ``drop_last=False`` the last batch has
    ``N mod B`` examples. One example gives BatchNorm batch statistics of a single sample
    (``BatchNorm1d`` raises "Expected more than 1 value per channel when training";
    ``BatchNorm2d`` normalises over the pixels of one image only, a noisy, different step).

    Args:
        train_loader: a ``DataLoader`` (``dataset``, ``batch_size``, ``drop_last``) or a loader
            with ``dataset_size`` and ``batch_size`` (:class:`nbhelpers.data.TensorLoader`).
        model: the model (looked at for BatchNorm layers).

    Returns:
        A :class:`CheckResult` named ``last_batch``.
    """
    size, batch, drop_last = _loader_sizes(train_loader)
    if not size or not batch:
        return not_applicable(
            "last_batch", "the loader does not tell its dataset size and batch size."
        )
    last = size % batch
    has_bn = model is not None and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    evidence = (
        f"{size} examples, batch size {batch}, drop_last={drop_last}: last batch has "
        f"{last if last and not drop_last else batch} example(s); BatchNorm in model: {has_bn}"
    )
    if last == 1 and not drop_last and has_bn:
        return CheckResult(
            "last_batch",
            False,
            evidence + ".",
            "Use drop_last=True for the training loader, or change the batch size.",
            details={"last": last},
        )
    return CheckResult("last_batch", True, evidence + ".", details={"last": last})
