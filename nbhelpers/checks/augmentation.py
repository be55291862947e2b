"""Checks of augmentation and evaluation: label-preserving transforms, randomness in evaluation.

- :func:`find_transform` / :func:`list_transforms`: the transform a loader or dataset applies,
  and every transform nested in it (``Compose``, ``RandomApply``, ``nn.Sequential`` ...).
- :func:`show_augmentation_pairs`: a figure of original vs augmented images.
- :func:`check_augmentation`: transforms that do not preserve a digit's label (large rotations:
  6 vs 9; flips; large vertical shifts, which bring neighbouring digits of an SVHN crop into
  view), with the figure of pairs.
- :func:`check_eval_augmentation`: random transforms on an evaluation split.
- :func:`check_eval_determinism`: evaluating the same model twice gives the same numbers.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._core import (
    TOUCHED_NOTE,
    CheckResult,
    generators_in,
    guard_learner_state,
    limited,
    model_device,
    not_applicable,
    preserved_generators,
    preserved_loader_state,
    preserved_rng,
    raw_images_labels,
    take_batches,
)
from .data_checks import as_splits

__all__ = [
    "check_augmentation",
    "check_eval_augmentation",
    "check_eval_determinism",
    "find_transform",
    "list_transforms",
    "show_augmentation_pairs",
]

#: Class names of torchvision transforms that draw random numbers although their name does not
#: start with "Random".
_RANDOM_NAMES = {
    "ColorJitter",
    "RandAugment",
    "AutoAugment",
    "TrivialAugmentWide",
    "AugMix",
    "GaussianBlur",
    "ElasticTransform",
    "GaussianNoise",
    "JPEG",
}


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
        augment = getattr(obj, "augment", None)
        if callable(augment):
            return augment, "batch"
        transform = getattr(obj, "transform", None)
        if callable(transform):
            return transform, "sample"
        if (
            callable(obj)
            and not isinstance(obj, (torch.utils.data.Dataset, torch.utils.data.DataLoader))
            and not hasattr(obj, "__iter__")
        ):
            return obj, "sample"
        obj = getattr(obj, "dataset", None)
    return None, "none"


def list_transforms(transform: Any) -> list[Any]:
    """``transform`` and every transform nested inside it, depth first, each once.

    Walks ``.transforms`` lists (torchvision ``Compose``, ``RandomApply``, ``RandomChoice``,
    ``RandomOrder``, v1 and v2), ``nn.Module`` children (``nn.Sequential``) and
    ``functools.partial``.
    """
    out, seen = [], set()

    def walk(t: Any) -> None:
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        out.append(t)
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple, nn.ModuleList)):
            for s in inner:
                walk(s)
        if isinstance(t, nn.Module):
            for s in t.children():
                walk(s)
        func = getattr(t, "func", None)
        if func is not None and hasattr(t, "args"):
            walk(func)

    walk(transform)
    return out


def _degrees(t: Any) -> float | None:
    deg = getattr(t, "degrees", None)
    if isinstance(deg, numbers.Number):
        return abs(float(deg))
    if isinstance(deg, (list, tuple)) and deg and all(isinstance(d, numbers.Number) for d in deg):
        return max(abs(float(d)) for d in deg)
    return None


def _transform_generators(transform: Any) -> list[torch.Generator]:
    """``torch.Generator`` attributes of ``transform`` and of every transform nested in it."""
    gens: list[torch.Generator] = []
    for t in list_transforms(transform):
        for gen in generators_in(t):
            if all(gen is not g for g in gens):
                gens.append(gen)
    return gens


def _is_random(t: Any) -> bool:
    name = type(t).__name__
    return name.startswith("Random") or name in _RANDOM_NAMES


def _label_problems(t: Any, max_rotation: float, max_vertical_shift: float) -> str | None:
    """Why ``t`` does not preserve a digit's label, or None."""
    name = type(t).__name__
    p = getattr(t, "p", 1.0)
    p = float(p) if isinstance(p, numbers.Number) else 1.0
    if name in ("RandomHorizontalFlip", "RandomVerticalFlip") and p > 0:
        return f"{name}(p={p:g}): a mirrored digit is not the same digit"
    deg = _degrees(t)
    if deg is not None and ("Rotat" in name or "Affine" in name) and deg > max_rotation:
        return f"{name} up to {deg:g} degrees: rotation turns 6 into 9 (and 9 into 6)"
    translate = getattr(t, "translate", None)
    if "Affine" in name and isinstance(translate, (list, tuple)) and len(translate) == 2:
        ty = float(translate[1] or 0.0)
        if ty > max_vertical_shift:
            return (
                f"{name} with vertical shifts up to {ty:.0%} of the height: moves the digit off "
                "centre and brings neighbouring digits into view"
            )
    return None


def _pil_image(img: torch.Tensor):
    from PIL import Image

    arr = img.detach().cpu()
    if arr.dtype != torch.uint8:
        arr = (arr.float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.numpy()
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(arr))


def _to_display(x: Any) -> torch.Tensor:
    """float (C, H, W) in [0, 1] from a tensor or PIL image."""
    if not isinstance(x, torch.Tensor):
        arr = np.asarray(x)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float().clamp(0, 1)


def _apply(transform: Callable, kind: str, images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to uint8 images (N, C, H, W); return float (N, C, H, W) in [0, 1]."""
    if kind == "batch":
        dev = getattr(transform, "device", None)
        x = images.float() / 255.0
        out = transform(x.to(dev) if isinstance(dev, torch.device) else x)
        return out.detach().cpu().float().clamp(0, 1)
    return torch.stack([_to_display(transform(_pil_image(img))) for img in images])


def show_augmentation_pairs(
    source: Any,
    transform: Callable | None = None,
    *,
    n: int = 8,
    kind: str | None = None,
    title: str | None = None,
):
    """A figure: ``n`` original images (top row) and the same images augmented (bottom row).

    Args:
        source: where the images come from: an ImageSet, a dataset, a loader, or uint8 images
            (N, 3, H, W). The stored (un-augmented) images are used as originals.
        transform: the augmentation; default the one ``source`` applies (:func:`find_transform`).
        n: number of pairs.
        kind: ``"sample"`` (per-sample transform on a PIL image) or ``"batch"`` (callable on a
            float batch); default: as found, else ``"sample"``.
        title: figure title.

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
    images = source if isinstance(source, torch.Tensor) else raw_images_labels(source, n)[0]
    if images is None or images.ndim != 4:
        raise ValueError("could not read images from the source to show augmentation pairs.")
    images = images[:n]
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    with preserved_rng(), preserved_generators(_transform_generators(transform)):
        augmented = _apply(transform, kind, images.contiguous())
    originals = torch.stack([_to_display(img) for img in images])
    return _pairs_figure(originals, augmented, title or "original (top) vs augmented (bottom)")


def _pairs_figure(originals: torch.Tensor, augmented: torch.Tensor, title: str):
    from matplotlib.figure import Figure

    k = originals.shape[0]
    fig = Figure(figsize=(1.1 * k + 0.4, 2.6))
    axes = fig.subplots(2, k, squeeze=False)
    for i in range(k):
        for row, imgs in enumerate((originals, augmented)):
            ax = axes[row][i]
            img = imgs[i].permute(1, 2, 0).numpy()
            ax.imshow(
                img[:, :, 0] if img.shape[2] == 1 else img,
                interpolation="nearest",
                cmap="gray" if img.shape[2] == 1 else None,
            )
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig


def check_augmentation(
    source: Any,
    transform: Callable | None = None,
    *,
    max_rotation: float = 20.0,
    max_vertical_shift: float = 0.1,
    n_pairs: int = 8,
    show: bool = True,
) -> CheckResult:
    """Is the training augmentation label-preserving for digits?

    Inspects every nested transform (:func:`list_transforms`) and fails on:
    rotations beyond ``max_rotation`` degrees (``RandomRotation``, ``RandomAffine``, or any
    transform with "Rotat" in its class name and a ``degrees`` attribute): 6 and 9 swap under
    180 degrees (tutorial, "Bugs: inappropriate data augmentation"); horizontal or vertical
    flips; ``RandomAffine`` vertical translation beyond ``max_vertical_shift`` of the height
    (the tutorial calls vertical shifts unsuitable). The 20-degree default is a rule of thumb:
    small tilts keep digits readable. Custom callables cannot be inspected: look at the figure.

    Args:
        source: a loader, dataset or ImageSet (images for the figure, transform found there).
        transform: the augmentation if not attached to ``source``.
        max_rotation: largest acceptable rotation (degrees).
        max_vertical_shift: largest acceptable vertical translation (fraction of the height).
        n_pairs: original/augmented pairs in the figure (0: no figure).
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
    problems = [msg for t in parts if (msg := _label_problems(t, max_rotation, max_vertical_shift))]
    figure, fig_note = None, ""
    if show and n_pairs > 0:
        try:
            figure = show_augmentation_pairs(
                source, transform, n=n_pairs, kind=kind if kind != "none" else None
            )
        except Exception as err:  # noqa: BLE001 - the figure is a bonus, the verdict stands
            fig_note = f" (no figure: {err})"
    evidence = f"transforms: {', '.join(dict.fromkeys(names))}" + fig_note
    custom = [n for n in names if n in ("function", "lambda", "Lambda")]
    if problems:
        return CheckResult(
            "augmentation",
            False,
            "; ".join(problems) + f". ({evidence})",
            "Remove it, or keep rotations within about 15-20 degrees and shifts horizontal; "
            "start without augmentation and add it back once training works.",
            figure=figure,
            details={"transforms": names, "problems": problems},
        )
    if custom:
        evidence += "; custom functions cannot be inspected, look at the pairs"
    return CheckResult(
        "augmentation", True, evidence + ".", figure=figure, details={"transforms": names}
    )


def _differs_on_repeat(source: Any, kind: str, transform: Callable | None) -> bool | None:
    """Apply a split's transform twice to the same items; True if the results differ."""
    with (
        preserved_rng(),
        preserved_loader_state(source),
        preserved_generators(_transform_generators(transform)),
    ):
        if kind == "batch" and transform is not None:
            x, _, _ = raw_images_labels(source, 4)
            if x is None or x.ndim != 4:
                return None
            a, b = _apply(transform, "batch", x[:4]), _apply(transform, "batch", x[:4])
            return not torch.equal(a, b)
        target = source
        while isinstance(target, torch.utils.data.DataLoader):
            target = target.dataset
        if hasattr(target, "__getitem__") and hasattr(target, "__len__") and len(target) > 0:
            for i in range(min(3, len(target))):
                a, b = target[i][0], target[i][0]
                ta, tb = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
                if ta.shape != tb.shape or not torch.equal(ta, tb):
                    return True
            return False
    return None


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
    named = {k: v for k, v in as_splits(eval_sources).items() if k != "train"} or as_splits(
        eval_sources
    )
    found, looked = [], []
    for name, src in named.items():
        transform, kind = find_transform(src)
        randoms = [type(t).__name__ for t in list_transforms(transform) if _is_random(t)]
        differs = _differs_on_repeat(src, kind, transform)
        looked.append(f"{name}: {type(transform).__name__ if transform else 'no transform'}")
        if randoms or differs:
            why = (
                f"random transforms {randoms}"
                if randoms
                else "the same item comes out different twice"
            )
            found.append(f"{name} applies {why}")
    evidence = "; ".join(looked) + "."
    if found:
        return CheckResult(
            "eval_augmentation",
            False,
            "; ".join(found) + ". " + evidence,
            "Use only deterministic transforms (e.g. ToTensor) for validation and test.",
        )
    return CheckResult("eval_augmentation", True, evidence)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, numbers.Number):
        return [float(value)]
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.detach().flatten().cpu().tolist()]
    if isinstance(value, Mapping):
        return [v for k in sorted(value, key=str) for v in _numbers(value[k])]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _numbers(item)]
    return []


def _default_evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None):
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    device = model_device(model)
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += float(loss_fn(logits, y)) * int(y.shape[0])
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.shape[0])
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)}


def check_eval_determinism(
    model: nn.Module,
    eval_loaders: Any,
    *,
    evaluate_fn: Callable | None = None,
    loss_fn: Callable | None = None,
    max_batches: int = 2,
    max_batch_size: int | None = 256,
    rtol: float = 1e-4,
) -> CheckResult:
    """Evaluate a copy of the model twice on the same data: are the numbers the same?

    Random augmentation in the evaluation loader, dropout left on (train mode) or a shuffled
    subset make evaluation noisy; then a difference between two runs may be just this noise.
    Uses ``evaluate_fn(model, loader)`` (any return of numbers, dicts or tuples of them) or a
    plain eval-mode loss/accuracy, on the first ``max_batches`` batches of each loader, each cut
    to ``max_batch_size`` examples.

    Args:
        model: the model (a deep copy is evaluated; the original is untouched).
        eval_loaders: ``{name: loader}`` or one loader.
        evaluate_fn: the learner's evaluation function, called as ``evaluate_fn(model, loader)``.
        loss_fn: loss for the default evaluation (cross-entropy).
        max_batches: batches per loader.
        max_batch_size: examples per batch (None: whole batches).
        rtol: relative tolerance between the two results (float noise on GPUs).

    Returns:
        A :class:`CheckResult` named ``eval_determinism``.
    """
    named = {k: v for k, v in as_splits(eval_loaders).items() if k != "train"} or as_splits(
        eval_loaders
    )
    evaluate = evaluate_fn or (lambda m, ld: _default_evaluate(m, ld, loss_fn))
    differing, parts = [], []
    with guard_learner_state(model) as guard, preserved_rng():
        m = copy.deepcopy(model)
        for name, loader in named.items():
            with preserved_loader_state(loader):
                first = _numbers(evaluate(m, limited(loader, max_batches, max_batch_size)))
                second = _numbers(evaluate(m, limited(loader, max_batches, max_batch_size)))
            if not first:
                parts.append(f"{name}: no numbers returned")
                continue
            same = len(first) == len(second) and all(
                math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7)
                for a, b in zip(first, second, strict=True)
            )
            parts.append(f"{name}: {_short(first)} then {_short(second)}")
            if not same:
                differing.append(name)
    evidence = "; ".join(parts) + "." + (TOUCHED_NOTE if guard["touched"] else "")
    if not parts:
        return not_applicable("eval_determinism", "no evaluation loader given.")
    if differing:
        return CheckResult(
            "eval_determinism",
            False,
            f"two evaluations of the same model differ on {', '.join(differing)}: {evidence}",
            "Evaluate in model.eval() mode under torch.no_grad(), without random transforms.",
        )
    return CheckResult("eval_determinism", True, "the same results twice: " + evidence)


def _short(values: list[float]) -> str:
    return (
        "[" + ", ".join(f"{v:.4g}" for v in values[:3]) + (", ..." if len(values) > 3 else "") + "]"
    )


def take_first_batch(loader: Iterable):
    """The first batch ``(x, y)`` of a fresh pass over ``loader`` (RNG and loader state kept)."""
    return take_batches(loader, 1)[0]
