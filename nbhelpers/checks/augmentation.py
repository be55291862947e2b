"""Checks of augmentation and evaluation: label-preserving transforms, randomness in evaluation.

- :func:`show_augmentation_pairs`: a figure of original vs augmented images.
- :func:`check_augmentation`: transforms that do not preserve a digit's label (large rotations:
  6 vs 9; flips; large vertical shifts, which bring neighbouring digits of an SVHN crop into
  view), with the figure of pairs.
- :func:`check_eval_augmentation`: random transforms on an evaluation split.
- :func:`check_eval_determinism`: evaluating the same model twice gives the same numbers.
- :func:`random_transforms`: the transforms that draw random numbers (also used by the split
  checks).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from nbhelpers.state import preserved_rng, preserved_state

from .access import (
    Limited,
    as_splits,
    find_transform,
    list_transforms,
    raw_images_labels,
    to_tensor,
    untouched,
)
from .capacity import train_copy
from .results import HINTS, TOUCHED_NOTE, CheckResult, not_applicable, verdict

#: Class names of torchvision transforms that draw random numbers although their name does not
#: start with "Random".
_RANDOM_NAMES = set(
    "ColorJitter RandAugment AutoAugment TrivialAugmentWide AugMix GaussianBlur ElasticTransform "
    "GaussianNoise JPEG".split()
)
#: Label-preserving limits for digits (rules of thumb): rotation in degrees, vertical shift as
#: a fraction of the height.
_MAX_ROTATION, _MAX_VERTICAL_SHIFT = 20.0, 0.1
#: eval_determinism: batches per loader, examples per batch, relative tolerance, and the Adam
#: steps on one batch that make an untrained copy react to its inputs.
_EVAL_BATCHES, _EVAL_BATCH_SIZE, _EVAL_RTOL, _BRIEF_STEPS = 2, 256, 1e-4, 20


def random_transforms(transform: Any) -> list[str]:
    """Class names of the transforms nested in ``transform`` that draw random numbers
    (torchvision's ``Random*``, ``ColorJitter``, ``RandAugment`` ...)."""
    names = [type(t).__name__ for t in list_transforms(transform)]
    return [n for n in names if n.startswith("Random") or n in _RANDOM_NAMES]


def _degrees(t: Any) -> float | None:
    deg = getattr(t, "degrees", None)
    values = deg if isinstance(deg, (list, tuple)) else [deg]
    if values and all(isinstance(d, numbers.Number) for d in values):
        return max(abs(float(d)) for d in values)
    return None


def _label_problem(t: Any) -> str | None:
    """Why ``t`` does not preserve a digit's label, or None."""
    name = type(t).__name__
    p = getattr(t, "p", 1.0)
    if name in ("RandomHorizontalFlip", "RandomVerticalFlip") and p > 0:
        return f"{name}(p={p:g}): a mirrored digit is not the same digit"
    deg = _degrees(t)
    if deg is not None and ("Rotat" in name or "Affine" in name) and deg > _MAX_ROTATION:
        return f"{name} up to {deg:g} degrees: rotation turns 6 into 9 (and 9 into 6)"
    translate = getattr(t, "translate", None)
    if "Affine" in name and isinstance(translate, (list, tuple)) and len(translate) == 2:
        if float(translate[1] or 0.0) > _MAX_VERTICAL_SHIFT:
            return (
                f"{name} with vertical shifts up to {translate[1]:.0%} of the height: moves the "
                "digit off centre and brings neighbouring digits into view"
            )
    return None


def _display(x: Any) -> torch.Tensor:
    """float (C, H, W) in [0, 1] from a tensor or a PIL image."""
    x = to_tensor(x)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)


def _apply(transform: Callable, kind: str, images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to images (N, C, H, W); return float (N, C, H, W) in [0, 1]."""
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if kind == "batch":
        device = getattr(transform, "device", None)
        x = images.float() / 255.0
        out = transform(x.to(device) if isinstance(device, torch.device) else x)
        return out.detach().cpu().float().clamp(0, 1)
    arrays = (np.ascontiguousarray(img.permute(1, 2, 0).squeeze(2).numpy()) for img in images)
    return torch.stack([_display(transform(Image.fromarray(a))) for a in arrays])


def show_augmentation_pairs(
    source: Any, transform: Callable | None = None, *, n: int = 8, kind: str | None = None
):
    """A figure: ``n`` original images (top row) and the same images augmented (bottom row).

    Args:
        source: where the images come from: an ImageSet, a dataset, a loader, or uint8 images
            (N, 3, H, W). The stored (un-augmented) images are used as originals.
        transform: the augmentation; default the one ``source`` applies (``find_transform``).
        n: number of pairs.
        kind: ``"sample"`` (per-sample transform on a PIL image) or ``"batch"`` (callable on a
            float batch); default: as found, else ``"sample"``.

    Returns:
        A matplotlib Figure (not registered with pyplot).

    Raises:
        ValueError: no transform given or found; no images could be read.
    """
    found, found_kind = find_transform(source)
    transform = transform if transform is not None else found
    kind = kind or (found_kind if found_kind != "none" else "sample")
    if transform is None:
        raise ValueError("no augmentation found: pass transform=...")
    images = source if torch.is_tensor(source) else raw_images_labels(source, n)[0]
    if images is None or images.ndim != 4:
        raise ValueError("could not read images from the source to show augmentation pairs.")
    images = images[:n]
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    with untouched(transform):
        augmented = _apply(transform, kind, images.contiguous())
    originals = torch.stack([_display(img) for img in images])
    return _pairs_figure(originals, augmented)


def _pairs_figure(originals: torch.Tensor, augmented: torch.Tensor):
    from matplotlib.figure import Figure

    k = originals.shape[0]
    fig = Figure(figsize=(1.1 * k + 0.4, 2.6))
    axes = fig.subplots(2, k, squeeze=False)
    for row, imgs in enumerate((originals, augmented)):
        for ax, img in zip(axes[row], imgs, strict=True):
            grey = img.shape[0] == 1
            picture = (img[0] if grey else img.permute(1, 2, 0)).numpy()
            ax.imshow(picture, cmap="gray" if grey else None, interpolation="nearest")
            ax.set_axis_off()
    fig.suptitle("original (top) vs augmented (bottom)", fontsize=9)
    return fig


def check_augmentation(
    source: Any,
    transform: Callable | None = None,
    *,
    show: bool = True,
) -> CheckResult:
    """Is the training augmentation label-preserving for digits?

    Inspects every nested transform (``list_transforms``) and fails on:
    rotations beyond 20 degrees (``RandomRotation``, ``RandomAffine``, or any
    transform with "Rotat" in its class name and a ``degrees`` attribute): 6 and 9 swap under
    180 degrees (tutorial, "Bugs: inappropriate data augmentation"); horizontal or vertical
    flips; ``RandomAffine`` vertical translation beyond a tenth of the height (the tutorial
    calls vertical shifts unsuitable). Both limits are rules of thumb: small tilts and shifts
    keep digits readable. Custom callables cannot be inspected: look at the figure (8 pairs).

    Args:
        source: a loader, dataset or ImageSet (images for the figure, transform found there).
        transform: the augmentation if not attached to ``source``.
        show: make the figure.

    Returns:
        A :class:`CheckResult` named ``augmentation`` with the pairs figure.
    """
    found, kind = find_transform(source)
    transform = transform if transform is not None else found
    if transform is None:
        return CheckResult("augmentation", True, "no augmentation (no transform found).")
    parts = list_transforms(transform)
    names = [type(t).__name__ for t in parts if not isinstance(t, nn.Sequential)]
    problems = [msg for t in parts if (msg := _label_problem(t))]
    figure, evidence = None, f"transforms: {', '.join(dict.fromkeys(names))}"
    if show:
        try:
            figure = show_augmentation_pairs(
                source, transform, kind=kind if kind != "none" else None
            )
        except Exception as err:  # noqa: BLE001 - the figure is a bonus, the verdict stands
            evidence += f" (no figure: {err})"
    if not problems and any(n in ("function", "lambda", "Lambda") for n in names):
        evidence += "; custom functions cannot be inspected, look at the pairs"
    hint = (
        "Remove it, or keep rotations within about 15-20 degrees and shifts horizontal; "
        "start without augmentation and add it back once training works."
    )
    evidence = f"({evidence})" if problems else evidence + "."
    details = {"transforms": names, "problems": problems}
    return verdict("augmentation", problems, evidence, hint, figure=figure, details=details)


def _differs_on_repeat(source: Any, kind: str, transform: Callable | None) -> bool | None:
    """Apply a split's transform twice to the same items; True if the results differ."""
    with untouched(source, transform):
        if kind == "batch":
            x = raw_images_labels(source, 4)[0]
            if x is None or x.ndim != 4:
                return None
            return not torch.equal(_apply(transform, kind, x[:4]), _apply(transform, kind, x[:4]))
        target = source.dataset if isinstance(source, torch.utils.data.DataLoader) else source
        if not (hasattr(target, "__getitem__") and hasattr(target, "__len__")):
            return None
        for i in range(min(3, len(target))):
            a, b = (torch.as_tensor(np.asarray(target[i][0])) for _ in range(2))
            if a.shape != b.shape or not torch.equal(a, b):
                return True
        return False


def _eval_splits(sources: Any) -> dict[str, Any]:
    """The evaluation splits of ``sources`` (a split named ``"train"`` left out, unless alone)."""
    named = as_splits(sources)
    return {k: v for k, v in named.items() if k != "train"} or named


def check_eval_augmentation(eval_sources: Any) -> CheckResult:
    """Do evaluation splits apply random transforms (augmentation)?

    Two ways of looking: the transforms' types (any ``Random*`` torchvision transform,
    ``ColorJitter``, ``RandAugment`` ...) and the result (the same item fetched twice, or the
    same batch augmented twice, differs). Evaluation must see fixed images, or its numbers
    change from run to run and do not measure the model on the real data.

    Args:
        eval_sources: ``{name: loader_or_dataset}`` of the evaluation splits (a split named
            ``"train"`` is skipped: it is the training split evaluated).

    Returns:
        A :class:`CheckResult` named ``eval_augmentation``.
    """
    found, looked = [], []
    for name, src in _eval_splits(eval_sources).items():
        transform, kind = find_transform(src)
        randoms = random_transforms(transform)
        looked.append(f"{name}: {type(transform).__name__ if transform else 'no transform'}")
        if randoms:
            found.append(f"{name} applies random transforms {randoms}")
        elif _differs_on_repeat(src, kind, transform):
            found.append(f"{name}: the same item comes out different twice")
    hint = "Use only deterministic transforms (e.g. ToTensor) for validation and test."
    return verdict("eval_augmentation", found, "; ".join(looked) + ".", hint)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, numbers.Number):
        return [float(value)]
    if torch.is_tensor(value):
        return [float(v) for v in value.detach().flatten().cpu().tolist()]
    if isinstance(value, Mapping):
        return [v for k in sorted(value, key=str) for v in _numbers(value[k])]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _numbers(item)]
    return []


def _short(values: list[float]) -> str:
    more = ", ..." if len(values) > 3 else ""
    return "[" + ", ".join(f"{v:.4g}" for v in values[:3]) + more + "]"


def check_eval_determinism(
    model: nn.Module,
    eval_loaders: Any,
    *,
    evaluate_fn: Callable | None = None,
    loss_fn: Callable | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> CheckResult:
    """Evaluate a copy of the model twice on the same data: are the numbers the same?

    Random augmentation in the evaluation loader, dropout left on (train mode) or a shuffled
    subset make evaluation noisy; then a difference between two runs may be just this noise.
    An untrained model gives nearly the same outputs for every input, which would hide random
    transforms: with a training batch ``x, y`` the copy is first trained on it for 20 Adam
    steps (:func:`nbhelpers.checks.capacity.train_copy`), so its outputs depend on the images.
    Uses ``evaluate_fn(model, loader)`` (any return of numbers, dicts or tuples of them) or
    :func:`nbhelpers.train.evaluate` (eval-mode loss and accuracy), on the first 2 batches of
    each loader, each cut to 256 examples; results must agree to a relative 1e-4 (float noise
    on GPUs).

    Args:
        model: the model (a deep copy is evaluated; the original is untouched).
        eval_loaders: ``{name: loader}`` or one loader.
        evaluate_fn: the learner's evaluation function, called as ``evaluate_fn(model, loader)``.
        loss_fn: loss for the default evaluation and the brief training (cross-entropy).
        x, y: a training batch (float (B, C, H, W), int64 (B,)); None: the copy stays as it is.

    Returns:
        A :class:`CheckResult` named ``eval_determinism``.
    """
    from nbhelpers.train import evaluate

    loss_fn = loss_fn or nn.CrossEntropyLoss()
    evaluate_fn = evaluate_fn or (lambda m, loader: evaluate(m, loader, loss_fn))
    differing, parts = [], []
    with preserved_state(model) as state, preserved_rng():
        m = copy.deepcopy(model) if x is None else train_copy(model, x, y, loss_fn, _BRIEF_STEPS)[0]
        m.train(model.training)  # the learner's mode, dropout included
        for name, loader in _eval_splits(eval_loaders).items():
            with untouched(loader):
                first, second = (
                    _numbers(evaluate_fn(m, Limited(loader, _EVAL_BATCHES, _EVAL_BATCH_SIZE)))
                    for _ in range(2)
                )
            if not first:
                parts.append(f"{name}: no numbers returned")
                continue
            parts.append(f"{name}: {_short(first)} then {_short(second)}")
            same = len(first) == len(second) and np.allclose(first, second, _EVAL_RTOL, 1e-7)
            differing += [] if same else [name]
    if not parts:
        return not_applicable("eval_determinism", "no evaluation loader given.")
    trained = "" if x is None else f" (a copy trained {_BRIEF_STEPS} steps on one batch)"
    evidence = "; ".join(parts) + "." + (TOUCHED_NOTE if state["changed"] else "")
    if differing:
        evidence = f"two evaluations of the same model{trained} differ on {', '.join(differing)}: {evidence}"
        return CheckResult("eval_determinism", False, evidence, HINTS["eval_determinism"])
    return CheckResult("eval_determinism", True, f"the same results twice{trained}: " + evidence)
