"""Checks of the data itself: shared images between splits, labels, input statistics, layout.

- :func:`image_hashes` / :func:`pair_overlaps`: the one way the package finds images shared by
  two splits (also behind :func:`nbhelpers.selfcheck.check_splits_disjoint`).
- :func:`check_split_overlap`: exact duplicates between train / validation / test (image hashes).
- :func:`check_labels`: label dtype and range against the number of classes and the model's
  output size, missing classes, labels shifted by one (SVHN's "10 means 0").
- :func:`check_input_statistics`: per-channel mean / std and value range per split; raw 0-255
  inputs; splits whose statistics disagree (normalisation applied to one split only).
- :func:`check_image_layout`: channels-first vs channels-last confusion (shape, and the
  neighbouring-pixel correlation along each image axis, which a wrong reshape destroys).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import nn

from nbhelpers.validate import positive_int

from .access import as_splits, eval_outputs, model_batch, raw_images_labels
from .results import CheckResult, fmt, not_applicable, verdict

#: Tolerated shared fraction of the smaller split of a pair (real datasets hold a handful of
#: exact duplicates; a leak is usually most of a split), and the most items read one by one.
_MAX_SHARED, _MAX_ITEMS = 0.001, 20_000
#: Largest plausible value of scaled inputs, and the tolerated std ratio between splits.
_RAW_MAX, _STD_RATIO = 20.0, 2.0


# ---------------------------------------------------------------------------------------------
# 1. Splits
# ---------------------------------------------------------------------------------------------
def image_hashes(images: torch.Tensor) -> list[bytes]:
    """One BLAKE2b digest (16 bytes) per image of the bytes of its uint8 pixels.

    Args:
        images: tensor (N, ...) of images; float images in [0, 1] are first scaled to uint8, so
            the same picture hashes the same whether stored as uint8 or as float.

    Returns:
        A list of N digests; equal digests mean byte-identical images.
    """
    x = images.detach().cpu()
    if x.dtype != torch.uint8 and x.numel() and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0:
        x = (x.float() * 255.0).round().to(torch.uint8)
    flat = np.ascontiguousarray(x.numpy()).reshape(x.shape[0], -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def pair_overlaps(hashes: Mapping[str, set[bytes]]) -> list[tuple[str, str, int, float]]:
    """For every pair of splits, the distinct images both hold (exact pixel equality).

    Args:
        hashes: ``{name: set of image_hashes(images)}`` per split.

    Returns:
        ``(a, b, shared, fraction)`` per pair, ``fraction`` = ``shared`` over the number of
        distinct images of the smaller split of the pair.
    """
    pairs = []
    for a, b in combinations(hashes, 2):
        shared = len(hashes[a] & hashes[b])
        pairs.append((a, b, shared, shared / max(1, min(len(hashes[a]), len(hashes[b])))))
    return pairs


def check_split_overlap(splits: Any) -> CheckResult:
    """Count images that appear in more than one split (exact duplicates, by hash).

    Every image's uint8 bytes are hashed with BLAKE2b (:func:`image_hashes`); for each pair of
    splits the number of distinct images present in both is reported. A fraction above 0.1% of
    the smaller split fails (real datasets can hold a handful of exact duplicates; a leak is
    usually most of a split). At most 20,000 items are read from datasets read one by one.

    Args:
        splits: ``{name: split}`` (ImageSet, Dataset, DataLoader, TensorLoader, ``(images,
            labels)``) or a DataBundle. Splits read through their transform (generic datasets)
            are compared as transformed, which random augmentation would hide; stored data
            (ImageSet, torchvision datasets, Subset, TensorLoader) is compared raw.

    Returns:
        A :class:`CheckResult` named ``split_overlap``; ``details["shared"]`` maps
        ``"a&b"`` to the count.

    Raises:
        TypeError: a split's images cannot be read.
    """
    named = as_splits(splits)
    if len(named) < 2:
        return not_applicable(
            "split_overlap", "only one split given.", "Pass train and eval splits."
        )
    images, notes = {}, []
    for name, split in named.items():
        x, _, how = raw_images_labels(split, _MAX_ITEMS)
        if x is None:
            raise TypeError(f"split {name!r}: no images could be read from {type(split).__name__}.")
        images[name] = x
        notes += [f"{name} {how}"] if how != "stored" else []
    hashes = {name: set(image_hashes(x)) for name, x in images.items()}
    pairs = pair_overlaps(hashes)
    shared = {f"{a}&{b}": n for a, b, n, _ in pairs}
    sizes = {name: len(x) for name, x in images.items()}
    evidence = (
        f"shared images {', '.join(f'{k}: {n}' for k, n in shared.items())} "
        f"(sizes: {', '.join(f'{k} {n}' for k, n in sizes.items())})."
        + _carved_from(hashes, sizes)
        + (" Read: " + "; ".join(notes) + "." if notes else "")
    )
    leak = any(fraction > _MAX_SHARED for *_, fraction in pairs)
    hint = (
        "Evaluation splits must hold images the model never trains on: take the test split "
        "from the dataset's test files and carve validation out of train without overlap."
    )
    details = {"shared": shared, "sizes": sizes}
    return CheckResult("split_overlap", not leak, evidence, hint if leak else "", details=details)


def _carved_from(sets: dict[str, set[bytes]], sizes: dict[str, int]) -> str:
    """A sentence when evaluation splits lie entirely inside train (two of equal size: halves)."""
    if "train" not in sets:
        return ""
    inside = [k for k in sets if k != "train" and sets[k] and sets[k] <= sets["train"]]
    for a, b in combinations(inside, 2):
        if sizes[a] == sizes[b]:
            return (
                f" {a} and {b} have exactly the same size ({sizes[a]}) and both lie entirely "
                "inside train: they look like the train split cut in halves."
            )
    return f" {', '.join(inside)} lie(s) entirely inside train." if inside else ""


# ---------------------------------------------------------------------------------------------
# 2. Labels
# ---------------------------------------------------------------------------------------------
def check_labels(
    data: Any, num_classes: int = 10, *, model: nn.Module | None = None
) -> CheckResult:
    """Check labels: dtype, range, missing classes, a shift by one; and the model's output size.

    Faults found:

    - dtype not int64 (``nn.CrossEntropyLoss`` wants class indices as int64);
    - labels outside ``0..num_classes-1``; labels ``1..num_classes`` (shifted by one: SVHN
      stores the digit 0 as label 10, which must become 0);
    - a class missing from a split of at least ``5 * num_classes`` labels;
    - a model whose output size differs from ``num_classes``.

    Args:
        data: one split or ``{name: split}`` / DataBundle (labels read as in
            ``raw_images_labels``; a loader's labels from its first batches).
        num_classes: the number of classes (10 for digits).
        model: optional; its output size is compared with ``num_classes`` (at most 20,000
            labels per split are read from slow datasets).

    Returns:
        A :class:`CheckResult` named ``labels``.

    Raises:
        ValueError: ``num_classes`` is not a positive int.
    """
    k = positive_int("num_classes", num_classes)
    named = as_splits(data)
    problems, parts, details, sample = [], [], {}, None
    for name, split in named.items():
        images, labels, _ = raw_images_labels(split, _MAX_ITEMS)
        if labels is None:
            parts.append(f"{name}: no labels found")
            continue
        if sample is None and images is not None and images.ndim == 4 and images.shape[1] <= 3:
            sample = images[:2]
        problems += _label_problems(name, labels, k)
        low, high = (int(labels.min()), int(labels.max())) if labels.numel() else (None, None)
        details[name] = {"dtype": str(labels.dtype), "min": low, "max": high}
        parts.append(f"{name}: {labels.numel()} labels {labels.dtype} in {low}..{high}")
    if model is not None:
        x = sample if sample is not None else model_batch(next(iter(named.values())), 2)[0]
        out = eval_outputs(model, x.float() / 255.0 if x.dtype == torch.uint8 else x)
        outputs = details["model_outputs"] = int(out.shape[-1]) if out.ndim >= 2 else None
        parts.append(f"model outputs {outputs} values")
        if outputs is not None and outputs != k:
            problems.append(f"the model outputs {outputs} values for {k} classes")
    hint = _label_hint(problems, k)
    return verdict("labels", problems, "; ".join(parts) + ".", hint, details=details)


def _label_problems(name: str, labels: torch.Tensor, k: int) -> list[str]:
    if labels.numel() == 0:
        return [f"{name} has no labels"]
    problems = []
    if labels.dtype != torch.int64:
        problems.append(f"{name} labels are {labels.dtype}, not int64")
    values = labels.round().long() if labels.is_floating_point() else labels.long()
    lo, hi = int(values.min()), int(values.max())
    if lo == 1 and hi == k:
        shifted = "shifted by one (SVHN's label 10 means 0)"
        problems.append(f"{name} labels run 1..{k} for {k} classes: {shifted}")
    elif lo < 0 or hi >= k:
        problems.append(f"{name} labels range {lo}..{hi}, outside 0..{k - 1}")
    elif values.numel() >= 5 * k and (missing := sorted(set(range(k)) - set(values.tolist()))):
        problems.append(f"{name} has no example of class(es) {missing}")
    return problems


def _label_hint(problems: list[str], k: int) -> str:
    text = " ".join(problems)
    hints = {
        "shifted": "Map label 10 to 0 (labels % 10) so classes are 0..9.",
        "outputs": f"Make the last layer output {k} logits, one per class.",
        "not int64": "Convert labels with .long(): cross-entropy wants int64 class indices.",
        "no example": "A split missing some classes cannot measure them; draw it stratified.",
    }
    default = f"Labels must be class indices 0..{k - 1}."
    return next((hint for key, hint in hints.items() if key in text), default)


# ---------------------------------------------------------------------------------------------
# 3. Inputs
# ---------------------------------------------------------------------------------------------
def _stats(x: torch.Tensor) -> dict[str, Any]:
    xf = x.detach().float().cpu()
    per_channel = xf.transpose(0, 1).flatten(1) if xf.ndim == 4 else xf.flatten()[None]
    return {
        "dtype": str(x.dtype),
        "mean": per_channel.mean(dim=1).tolist(),
        "std": per_channel.std(dim=1).tolist(),
        "min": float(xf.min()),
        "max": float(xf.max()),
        "n": int(x.shape[0]),
    }


def check_input_statistics(loaders: Any) -> CheckResult:
    """Per-channel mean and std and the value range of the inputs each split feeds the model.

    Faults found:

    - values above 20 (e.g. raw 0-255 pixels never divided by 255) or a non-float dtype;
    - constant inputs (std 0);
    - splits that disagree: a channel mean differs by more than the smaller split's std, the std
      differs by more than 2 times, or one split has negative values and another none
      -- typical of normalisation applied to one split only.

    Training batches may be augmented, which shifts their statistics a little; the thresholds
    leave room for that.

    Args:
        loaders: ``{name: loader_or_dataset}`` (the first 256 examples of each are used) or
            one loader.

    Returns:
        A :class:`CheckResult` named ``input_statistics``; ``details[name]`` holds the numbers.
    """
    stats = {name: _stats(model_batch(src, 256)[0]) for name, src in as_splits(loaders).items()}
    problems = []
    for name, s in stats.items():
        if "float" not in s["dtype"]:
            problems.append(f"{name} inputs are {s['dtype']}, not float")
        if s["max"] > _RAW_MAX:
            problems.append(f"{name} inputs reach {fmt(s['max'])}: raw 0-255 pixel values?")
        if max(s["std"]) == 0:
            problems.append(f"{name} inputs are constant")
    for a, b in combinations(stats, 2):
        problems += _disagreement(a, stats[a], b, stats[b])
    evidence = "; ".join(
        f"{k}: mean {_vec(s['mean'])} std {_vec(s['std'])} range [{fmt(s['min'])}, {fmt(s['max'])}]"
        for k, s in stats.items()
    )
    hint = "Scale images to [0, 1] (ToTensor or x / 255); normalise every split the same way."
    return verdict("input_statistics", problems, evidence + ".", hint, details=stats)


def _vec(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def _disagreement(a: str, sa: dict, b: str, sb: dict) -> list[str]:
    if len(sa["mean"]) != len(sb["mean"]):
        return [f"{a} and {b} have different numbers of channels"]
    for c, (ma, mb, da, db) in enumerate(
        zip(sa["mean"], sb["mean"], sa["std"], sb["std"], strict=True)
    ):
        small, large = min(da, db), max(da, db)
        if abs(ma - mb) > max(small, 1e-6) or large > _STD_RATIO * small:
            return [
                f"{a} and {b} disagree in channel {c} (mean {ma:.2f} vs {mb:.2f}, std {da:.2f} "
                f"vs {db:.2f}): normalised differently?"
            ]
    if (sa["min"] < -0.05) != (sb["min"] < -0.05):
        return [f"{a} and {b} disagree in range (min {fmt(sa['min'])} vs {fmt(sb['min'])})"]
    return []


# ---------------------------------------------------------------------------------------------
# 4. Layout
# ---------------------------------------------------------------------------------------------
#: The fix for a channels-last buffer read as channels-first.
LAYOUT_HINT = (
    "Use x.permute(0, 3, 1, 2) (or np.transpose(x, (0, 3, 1, 2))) to go from (N, H, W, C) to "
    "(N, C, H, W); reshape/view scrambles pixels."
)


def _neighbour_correlation(x: torch.Tensor, axis: int) -> float:
    """Median over images of the correlation between each pixel and its neighbour on ``axis``."""
    xf = x.float()
    a = xf.narrow(axis, 1, xf.shape[axis] - 1).flatten(1)
    b = xf.narrow(axis, 0, xf.shape[axis] - 1).flatten(1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    corr = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)
    return float(corr.median())


def _channel_axis_fault(shape: tuple[int, ...], model: nn.Module | None) -> CheckResult | None:
    """A failed result when axis 1 cannot be the channel axis (for the model's first conv)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None) if model else None
    expected = conv.in_channels if conv is not None else None
    if shape[1] in (1, 3, 4) and expected in (None, shape[1]):
        return None
    where = [i for i in range(1, 4) if shape[i] in ((expected,) if expected else (1, 3, 4))]
    if not where:
        return None
    evidence = f"images have shape {shape}: the channel axis looks like axis {where[-1]}, not 1"
    if expected:
        evidence += f" (the model's first convolution expects {expected} channels)"
    return CheckResult("image_layout", False, evidence + ".", LAYOUT_HINT, details={"shape": shape})


def check_image_layout(source: Any, *, model: nn.Module | None = None) -> CheckResult:
    """Are images channels-first ``(N, C, H, W)`` with intact rows and columns?

    Two tests: (1) the shape: the channel axis (size 1 or 3) must be axis 1 (and match the
    model's first convolution); (2) the picture: in a natural image neighbouring pixels are
    strongly correlated along both the height and the width axis. A channels-last buffer
    reshaped (not permuted) to channels-first interleaves colour channels and pixels: the
    correlation along one axis (or both) collapses and image grids look striped. Fails when the
    weaker axis has less than half the stronger one's correlation, or when reading
    the same bytes as channels-last gives much smoother images.

    Args:
        source: a loader, dataset, ImageSet or an images tensor (N, C, H, W).
        model: optional; the ``in_channels`` of its first ``Conv2d`` is compared with axis 1.

    Returns:
        A :class:`CheckResult` named ``image_layout``.
    """
    x = source[:128] if torch.is_tensor(source) else model_batch(source, 128)[0]
    if x.ndim != 4:
        return not_applicable("image_layout", f"inputs have shape {tuple(x.shape)}, not 4-D.")
    shape = tuple(x.shape)
    fault = _channel_axis_fault(shape, model)
    if fault is not None:
        return fault
    h, w = _neighbour_correlation(x, 2), _neighbour_correlation(x, 3)
    details = {"shape": shape, "corr_height": h, "corr_width": w}
    evidence = f"shape {shape}; neighbouring-pixel correlation along height {h:.2f}, width {w:.2f}"
    alt_h = alt_w = 0.0
    if shape[1] in (3, 4):  # the same bytes read as (N, H, W, C), then permuted
        alt = x.contiguous().reshape(shape[0], shape[2], shape[3], shape[1]).permute(0, 3, 1, 2)
        alt_h, alt_w = _neighbour_correlation(alt, 2), _neighbour_correlation(alt, 3)
        details.update(alt_corr_height=alt_h, alt_corr_width=alt_w)
    if min(alt_h, alt_w) > max(0.5, min(h, w) + 0.3):
        problem = (
            f"; the same bytes read as (N, H, W, C) give smooth images (correlation {alt_h:.2f} / "
            f"{alt_w:.2f}): a channels-last array was reshaped to channels-first (striped grids)."
        )
    elif max(h, w) < 0.3:
        why = evidence + ": too weak on both axes to judge (noise-like images?)."
        return CheckResult(
            "image_layout", None, why, "Look at a grid of the images.", details=details
        )
    elif min(h, w) < 0.5 * max(h, w):
        problem = (
            ": one axis has lost its structure, as when a channels-last array is reshaped "
            "instead of permuted (striped grids)."
        )
    else:
        return CheckResult("image_layout", True, evidence + ".", details=details)
    return CheckResult("image_layout", False, evidence + problem, LAYOUT_HINT, details=details)
