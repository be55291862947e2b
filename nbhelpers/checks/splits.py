"""Checks of how the splits were cut from their datasets (their structure, not their images).

- :func:`check_split_sources`: an evaluation split that overlaps the training data by
  construction (the train split loaded again and halved, as in the handover; a validation
  subset that shares indices with train). A seeded ``random_split`` into disjoint parts passes.
- :func:`check_split_seed`: a split in random order that the next run cannot re-create
  (``random_split`` with torch's global generator never seeded).
- :func:`check_shared_transform`: train and evaluation subsets of *one* dataset object, which
  therefore share one transform: setting the evaluation transform removes the training
  augmentation (or evaluation gets it).

:func:`split_chain` reads a split's structure (the dataset it ends in, its indices there, the
``Subset`` objects on the way); the watch (:mod:`nbhelpers.watch`) uses it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from nbhelpers.validate import MAX_SEED

from .access import as_splits, list_transforms
from .augmentation import random_transforms
from .results import HINTS, CheckResult, not_applicable, verdict

#: Seeds a learner types (tried to re-create a split drawn with an explicit generator), and the
#: seed of a fresh ``torch.Generator()``.
COMMON_SEEDS = (*range(100), 123, 1234, 12345, 42, 1337, 2022, 2023, 2024, 2025, 67280421310721)


@dataclass
class SplitChain:
    """How one split reaches its data.

    Attributes:
        root: the dataset at the end of the ``.dataset`` chain (not a Subset or DataLoader).
        indices: the split's indices into ``root`` (None: all of it).
        subsets: the ``Subset`` objects on the way, outermost first.
        part: which part of its source the root is, e.g. ``"split='train'"`` (or ``""``).
    """

    root: Any
    indices: list[int] | None = None
    subsets: list[Subset] = field(default_factory=list)
    part: str = ""


def split_chain(split: Any) -> SplitChain:
    """Follow ``split`` through DataLoaders and Subsets (nested ones compose) to its dataset."""
    chain = SplitChain(split)
    while isinstance(chain.root, (Subset, DataLoader)):
        if isinstance(chain.root, Subset):
            chain.subsets.append(chain.root)
            idx = [int(i) for i in chain.root.indices]
            chain.indices = idx if chain.indices is None else [idx[i] for i in chain.indices]
        chain.root = chain.root.dataset
    root = chain.root
    if isinstance(getattr(root, "split", None), str):
        chain.part = f"split={root.split!r}"
    elif isinstance(getattr(root, "train", None), bool):
        chain.part = f"train={root.train}"
    return chain


def _same_data(a: SplitChain, b: SplitChain) -> bool:
    """Whether two roots hold the same examples: one object, or two loads of one source."""
    if a.root is b.root:
        return True
    if type(a.root) is not type(b.root) or a.part != b.part:
        return False
    try:
        if len(a.root) != len(b.root):
            return False
    except TypeError:
        return False
    if a.part:
        return True
    labels = [stored_labels(c.root) for c in (a, b)]
    return all(v is not None for v in labels) and np.array_equal(*labels)


def stored_labels(dataset: Any) -> np.ndarray | None:
    """A dataset's labels as stored (``labels``, ``targets``, a TensorDataset's last tensor)."""
    labels = getattr(dataset, "labels", getattr(dataset, "targets", None))
    if labels is None and isinstance(dataset, torch.utils.data.TensorDataset):
        labels = dataset.tensors[-1]
    return None if labels is None else np.asarray(labels)


def _overlap(name: str, chain: SplitChain, train: SplitChain) -> str | None:
    """Why split ``name`` overlaps train by construction, or None."""
    if not _same_data(chain, train):
        if "test" in name and chain.part in ("split='train'", "train=True"):
            return f"{name} comes from a dataset loaded with {chain.part}"
        return None
    copy = "" if chain.root is train.root else " a second load of"
    if train.indices is None:
        return f"{name} is cut from{copy} the training data, all of which train uses"
    if chain.indices is None:
        return f"{name} is{copy} the whole dataset train is cut from"
    shared = len(set(chain.indices) & set(train.indices))
    return (
        f"{name} shares {shared} of its {len(chain.indices)} examples with train"
        if shared
        else None
    )


def check_split_sources(splits: Any) -> CheckResult:
    """Look at how the splits were built: does an evaluation split overlap the training data?

    Follows each split to its dataset (:func:`split_chain`) and fails when an evaluation split
    (any name other than ``train``) reads the same examples as train: the training data loaded
    a second time (same dataset class, same ``split=``/``train=`` part, or the same labels) and
    cut up while train uses all of it (the handover: the train split loaded again and randomly
    halved into validation and test), or a subset that shares indices with train's. A
    validation split carved out of the training data with indices disjoint from train's (a
    seeded ``random_split``) passes; a split named ``test`` loaded from the training files
    fails. This reads only the objects' structure (no images).

    Args:
        splits: ``{name: split}`` or a DataBundle (for ImageSets, which keep no parent, the
            answer is "not applicable": use :func:`check_split_overlap`).

    Returns:
        A :class:`CheckResult` named ``split_sources``.
    """
    named = as_splits(splits)
    chains = {k: split_chain(v) for k, v in named.items()}
    train = chains.get("train")
    findings = []
    if train is not None:
        others = [
            (k, c) for k, c in chains.items() if k != "train" and named[k] is not named["train"]
        ]
        findings = [f for k, c in others if (f := _overlap(k, c, train))]
    parts = [
        f"{k}: {type(c.root).__name__}" + (f"({c.part})" if c.part else "")
        + (f", {len(c.indices)} indices" if c.indices is not None else "")
        for k, c in chains.items()
    ]  # fmt: skip
    evidence = "; ".join(parts) + "."
    if not findings and not any(c.subsets or c.part for c in chains.values()):
        why = f"the splits keep no record of their parent dataset ({evidence[:-1]})."
        return not_applicable("split_sources", why, "check_split_overlap compares the images.")
    hint = (
        "Load the test split from the test files (e.g. SVHN(split='test')) and split "
        "validation off train with disjoint indices (a seeded random_split)."
    )
    return verdict("split_sources", findings, evidence, hint)


def index_fingerprint(indices: list[int]) -> str:
    """A short hex digest of a split's indices (in their order)."""
    data = np.asarray(indices, dtype=np.int64).tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _recreated_by(subset: Subset) -> int | None:
    """A seed of :data:`COMMON_SEEDS` whose ``randperm`` holds the subset's indices as one
    slice (as ``random_split`` cuts them), or None."""
    indices = torch.as_tensor([int(i) for i in subset.indices], dtype=torch.long)
    n = len(subset.dataset)
    for seed in COMMON_SEEDS:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        start = int((perm == indices[0]).nonzero()[0]) if len(indices) else 0
        if torch.equal(perm[start : start + len(indices)], indices):
            return seed
    return None


def check_split_seed(splits: Any) -> CheckResult:
    """Can the next run re-create the splits? (``random_split`` needs a seed.)

    A ``Subset`` whose indices are in random order was drawn at random: with
    ``random_split(data, sizes)`` and no ``generator``, from torch's global generator. A fresh
    Python process seeds that generator at random (``torch.initial_seed()`` is then a 64-bit
    number no one typed), so the next run, or a restarted notebook, draws another split, and
    images a saved model trained on end up in validation. The check passes when the indices
    are in order (a deterministic cut), when the global generator was seeded
    (``torch.manual_seed``, ``initial_seed()`` at most 2**32 - 1), or when a seed a learner
    types (:data:`COMMON_SEEDS`) re-creates the split as ``random_split`` cuts it; else it
    fails. A split drawn in an unseeded process with another seed of its own is reported too:
    the watch compares fingerprints between runs for that.

    Args:
        splits: ``{name: split}`` (Subsets, DataLoaders over them, ...) or a DataBundle.

    Returns:
        A :class:`CheckResult` named ``split_seed``; ``details`` maps split names to
        ``{"fingerprint": hex, "seed": int | None}``.
    """
    seeded = torch.initial_seed() <= MAX_SEED
    found, parts, details = [], [], {}
    for name, split in as_splits(splits).items():
        chain = split_chain(split)
        if not chain.subsets or chain.indices == sorted(chain.indices):
            continue
        seed = None if seeded else _recreated_by(chain.subsets[0])
        details[name] = {"fingerprint": index_fingerprint(chain.indices), "seed": seed}
        how = f"seed {seed} re-creates it" if seed is not None else "drawn in random order"
        parts.append(f"{name}: {len(chain.indices)} of {len(chain.root)} examples, {how}")
        if not seeded and seed is None:
            found.append(f"{name} was drawn at random and no seed re-creates it")
    if not parts:
        return not_applicable("split_seed", "no split in random order (no random_split).")
    state = "seeded" if seeded else "never seeded in this process"
    evidence = (
        "; ".join(parts)
        + f"; torch's global generator was {state} (initial seed {torch.initial_seed()})."
    )
    return verdict("split_seed", found, evidence, HINTS["split_seed"], details=details)


def _describe(transform: Any) -> str:
    names = [type(t).__name__ for t in list_transforms(transform)]
    return "none" if not names else names[0] + (f"({', '.join(names[1:])})" if names[1:] else "")


def transform_holder(split: Any) -> Any:
    """The object whose ``transform`` a split applies (the end of its chain), or None."""
    root = split_chain(split).root
    return root if hasattr(root, "transform") else None


def _built_with(holder: Any) -> Any:
    """The transform a torchvision dataset was built with (its ``transforms`` keeps it), or
    ``...`` when the dataset does not say."""
    if not hasattr(holder, "transforms"):
        return ...
    kept = holder.transforms
    return None if kept is None else getattr(kept, "transform", ...)


def _sharing_problem(name: str, holder: Any) -> str | None:
    """Why train and split ``name``, which share ``holder``, get the wrong transform, or None."""
    now, built = holder.transform, _built_with(holder)
    if built is not ... and built is not now:
        return (
            f"train and {name} share one {type(holder).__name__}, whose transform was replaced "
            f"after it was built ({_describe(built)}, now {_describe(now)}): setting it for one "
            "split set it for both"
        )
    if random_transforms(now):
        return f"{name} gets the training augmentation {_describe(now)}: it shares train's {type(holder).__name__}"
    return None


def check_shared_transform(splits: Any) -> CheckResult:
    """Do train and an evaluation split share one dataset object, and so one transform?

    ``train, valid = random_split(data, sizes)`` gives two ``Subset`` views of one dataset
    object; its ``transform`` is the one both apply. Setting ``valid.dataset.transform =
    eval_tf`` then removes the training augmentation too, and setting the augmentation gives
    it to evaluation. Fails when train and an evaluation split share a dataset object and its
    transform is random (evaluation is augmented), or was replaced after the dataset was built
    (torchvision datasets keep the transform they were built with in ``transforms``); and when
    a ``transform`` was set on a ``Subset``, which never applies it. Sharing one deterministic
    transform (no augmentation anywhere) passes.

    Args:
        splits: ``{name: split}`` or a DataBundle.

    Returns:
        A :class:`CheckResult` named ``shared_transform``.
    """
    named = as_splits(splits)
    holders = {k: transform_holder(v) for k, v in named.items()}
    found = [
        f"{k}.transform was set on a Subset, which never applies it: {k} uses its dataset's "
        f"{_describe(holders[k].transform if holders[k] is not None else None)}"
        for k, v in named.items()
        if any("transform" in vars(s) for s in split_chain(v).subsets)
    ]
    train = holders.get("train")
    shared = [k for k, h in holders.items() if k != "train" and h is not None and h is train]
    found += [p for k in shared if (p := _sharing_problem(k, train))]
    if train is None and not found:
        return not_applicable("shared_transform", "no training split with a transform given.")
    evidence = "each split reads its own dataset object."
    if shared:
        evidence = (
            f"train and {', '.join(shared)} share one {type(train).__name__} with transform "
            f"{_describe(train.transform)}."
        )
    return verdict("shared_transform", found, evidence, HINTS["shared_transform"])
