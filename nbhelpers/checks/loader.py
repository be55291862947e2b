"""Checks of the training loader: shuffling, and a last batch of one example with BatchNorm.

- :func:`check_shuffle`: two epochs of the training loader start with the same order, or
  batches hold a single class (data sorted by label and not shuffled).
- :func:`check_last_batch`: the last batch of an epoch has exactly one example while the model
  has BatchNorm (its batch statistics are then meaningless, and ``BatchNorm1d`` raises).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from .access import untouched
from .results import CheckResult, new_figure, not_applicable


def _first_batches(loader: Any, n_batches: int) -> tuple[list[torch.Tensor], bytes]:
    """Labels of the first ``n_batches`` batches of a fresh pass and a digest of their inputs."""
    labels, digest = [], hashlib.blake2b(digest_size=16)
    for batch in itertools.islice(loader, n_batches):
        labels.append(torch.as_tensor(batch[1]).detach().cpu().long().flatten())
        inputs = torch.as_tensor(batch[0]).detach().cpu().float().numpy()
        digest.update(np.ascontiguousarray(inputs).tobytes()[:1_000_000])
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
    hint = "Shuffle the training data every epoch (DataLoader(shuffle=True))."
    if isinstance(getattr(train_loader, "sampler", None), torch.utils.data.SequentialSampler):
        why = "the DataLoader uses a SequentialSampler (shuffle=False): every epoch sees the "
        return CheckResult("shuffle", False, why + "images in the same order.", hint)
    with untouched(train_loader):
        (first, hash1), (second, hash2) = (
            _first_batches(train_loader, n_batches) for _ in range(2)
        )
    if not first:
        return not_applicable("shuffle", "the training loader yielded no batches.")
    same = hash1 == hash2 and len(first) == len(second)
    same = same and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    classes = [int(torch.unique(b).numel()) for b in first]
    several = [n for b, n in zip(first, classes, strict=True) if b.numel() > 1]
    sorted_by_label = bool(several) and all(n == 1 for n in several)
    evidence = (
        f"first {len(first)} batches of two passes are "
        f"{'identical' if same else 'different'}; classes per batch {classes}"
    )
    if sorted_by_label and not same:
        evidence += "; every batch holds a single class (data sorted by label)"
    figure = _histogram_figure(first + second, num_classes) if show else None
    details = {"same_order": same, "classes_per_batch": classes}
    bad = same or sorted_by_label
    return CheckResult("shuffle", not bad, evidence + ".", hint if bad else "", figure, details)


def _histogram_figure(batches: list[torch.Tensor], k: int):
    fig, ax = new_figure(6.0, 2.4)
    rows = [torch.bincount(b.clamp(0, k - 1), minlength=k).numpy() for b in batches]
    ax.imshow(np.stack(rows), aspect="auto", cmap="Blues")
    ax.set(xlabel="class", ylabel="batch (pass 1, then pass 2)", xticks=range(k))
    ax.set_title("labels per batch", fontsize=9)
    fig.tight_layout()
    return fig


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
    size = getattr(train_loader, "dataset_size", None)
    try:
        size = size if size is not None else len(train_loader.dataset)
    except (AttributeError, TypeError):
        size = None
    batch = getattr(train_loader, "batch_size", None)
    drop_last = bool(getattr(train_loader, "drop_last", False))
    if not size or not batch:
        why = "the loader does not tell its dataset size and batch size."
        return not_applicable("last_batch", why)
    last = size % batch
    bn = model is not None and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    evidence = (
        f"{size} examples, batch size {batch}, drop_last={drop_last}: last batch has "
        f"{last if last and not drop_last else batch} example(s); BatchNorm in model: {bn}."
    )
    bad = last == 1 and not drop_last and bn
    hint = "Use drop_last=True for the training loader, or change the batch size." if bad else ""
    return CheckResult("last_batch", not bad, evidence, hint, details={"last": last})
