"""Self-check cells of the learner notebooks: ✅ when a fix works, ❌ plus a hint when not.

A failed check is a wrong answer, not a crash: the functions here never raise on a failed
check; they show the verdict (HTML in a notebook, plain text elsewhere) and return a bool::

    from nbhelpers.selfcheck import check, check_loss_falls
    check_loss_falls(history.step_losses, hint="Is optimizer.zero_grad() called every step?")
    check(model[1].__class__.__name__ == "ReLU", "ReLU it is.", "Which activation follows conv 1?")

Each returns an :class:`Outcome` that behaves like a bool (``if check(...)``, ``assert
check(...)``); as the last line of a cell it adds no ``Out: True`` under the verdict.
They raise only on *malformed* input (e.g. a string where losses should be), which is a bug
in the notebook rather than a wrong answer.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nbhelpers.validate import number

__all__ = [
    "Outcome",
    "Verdict",
    "check",
    "check_close",
    "check_loss_falls",
    "check_splits_disjoint",
]


class Verdict:
    """A displayed result: rich HTML in Jupyter, plain text in a terminal."""

    def __init__(self, ok: bool, message: str, hint: str | None = None) -> None:
        self.ok = bool(ok)
        self.message = message
        self.hint = hint

    def text(self) -> str:
        """The plain-text form, e.g. ``"✅ The loss falls."`` or ``"❌ ... Hint: ..."``."""
        line = ("✅ " if self.ok else "❌ ") + self.message
        if not self.ok and self.hint:
            line += f"\n   Hint: {self.hint}"
        return line

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        color, mark = ("#1a7f37", "✅") if self.ok else ("#cf222e", "❌")
        body = f"<b>{mark} {html.escape(self.message)}</b>"
        if not self.ok and self.hint:
            body += f"<br><i>Hint:</i> {html.escape(self.hint)}"
        return (
            f'<div style="border-left: 4px solid {color}; padding: 4px 10px; '
            f'margin: 4px 0;">{body}</div>'
        )


class Outcome(int):
    """The result of a check: behaves like a bool (``if``, ``assert``, ``== True`` work).

    An ``int`` subclass (1 passed, 0 failed) rather than ``bool`` (which cannot be
    subclassed), so that a check as the last line of a notebook cell shows only its verdict,
    not an extra ``Out: True``: IPython calls :meth:`_ipython_display_`, which shows nothing
    because the verdict is already displayed.
    """

    def __new__(cls, passed: bool) -> Outcome:
        return super().__new__(cls, 1 if passed else 0)

    @property
    def passed(self) -> bool:
        """True if the check passed."""
        return bool(self)

    def __repr__(self) -> str:
        return repr(bool(self))

    __str__ = __repr__

    def _ipython_display_(self) -> None:
        """Show nothing: the verdict was displayed when the check ran."""


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(verdict: Verdict) -> None:
    """Display ``verdict``: rich output in a Jupyter kernel, ``print`` elsewhere."""
    if _in_notebook():
        from IPython.display import display

        display(verdict)
    else:
        print(verdict.text())


def check(condition: Any, ok_msg: str, hint: str, *, fail_msg: str | None = None) -> Outcome:
    """Show ✅ ``ok_msg`` when ``condition`` is truthy, else ❌ with ``hint``.

    Args:
        condition: anything truthy / falsy (a one-element tensor works too).
        ok_msg: what to say when the check passes.
        hint: a nudge towards the fix when it fails (without giving the answer away).
        fail_msg: what to say when it fails (default ``"Not yet."``).

    Returns:
        An :class:`Outcome`, truthy if the check passed (use it like a bool). Never raises on
        a failed check.
    """
    try:
        ok = bool(condition)
    except (RuntimeError, ValueError, TypeError):  # e.g. a multi-element tensor
        ok = False
    show(Verdict(ok, ok_msg if ok else (fail_msg or "Not yet."), hint))
    return Outcome(ok)


def _as_floats(values: Any, what: str) -> list[float]:
    if hasattr(values, "step_losses"):  # a History or RunRecord
        values = list(values.step_losses)
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.detach().flatten().cpu()]
    if isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of numbers, got {type(values).__name__}.")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must hold numbers only ({err}).") from err


def check_loss_falls(
    losses: Any,
    *,
    min_drop: float = 0.05,
    hint: str = "Does every step start from fresh gradients, and is the learning rate sensible?",
) -> Outcome:
    """Check that a training loss falls: the mean of the last quarter of the values is at least
    ``min_drop`` (relative) below the mean of the first quarter.

    Args:
        losses: per-step (or per-epoch) losses: a list of floats, a 1-D tensor, or an object with
            ``step_losses`` (a :class:`nbhelpers.train.History` or a run record).
        min_drop: the relative drop required, e.g. 0.05 = 5 %.
        hint: shown when the check fails.

    Returns:
        An :class:`Outcome` (bool-like), truthy if the loss fell enough and stayed finite.
        Never raises on a failed check.

    Raises:
        TypeError: ``losses`` is not a sequence of numbers.
        ValueError: ``min_drop`` is not in [0, 1).
    """
    number("min_drop", min_drop, 0.0, 1.0, high_open=True)
    values = _as_floats(losses, "losses")
    if len(values) < 2:
        return check(False, "", "Train for at least two steps first.", fail_msg="Too few losses.")
    if not all(math.isfinite(v) for v in values):
        return check(False, "", hint, fail_msg="The loss is not finite (NaN or inf): it diverged.")
    k = max(1, len(values) // 4)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    drop = (first - last) / abs(first) if first else 0.0
    return check(
        drop >= min_drop,
        f"The loss falls: {first:.3f} → {last:.3f} ({drop:.0%} lower).",
        hint,
        fail_msg=f"The loss does not fall enough: {first:.3f} → {last:.3f} (needs {min_drop:.0%}).",
    )


def _split_images(data: Any) -> dict[str, torch.Tensor]:
    """``{name: images (N, C, H, W)}`` from a DataBundle, a dict or a list of ImageSets/tensors."""
    from nbhelpers.checks.access import as_splits

    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        data = {getattr(s, "name", f"set {i}"): s for i, s in enumerate(data)}
    named = {str(k): getattr(v, "images", v) for k, v in as_splits(data).items()}
    for name, images in named.items():
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise TypeError(
                f"split {name!r}: expected an ImageSet or an (N, C, H, W) tensor in a DataBundle, "
                "a dict name -> ImageSet/tensor or a list of them."
            )
    if len(named) < 2:
        raise ValueError(f"check_splits_disjoint needs at least two splits, got {len(named)}.")
    return named


def check_splits_disjoint(
    data: Any,
    *,
    max_shared_fraction: float = 0.001,
    hint: str = "Where do the validation and test images come from? Look at how each is loaded.",
) -> Outcome:
    """Check that no image appears in two splits (exact pixel equality, via hashes).

    Real SVHN may hold a few identical crops across its official splits, so a tiny overlap
    (``max_shared_fraction`` of the smaller split of each pair) is tolerated; the handover's
    bug (evaluation data taken from the train split) shares nearly all of them. The images are
    compared as :func:`nbhelpers.checks.check_split_overlap` compares them
    (:func:`nbhelpers.checks.data_checks.pair_overlaps`).

    Args:
        data: a :class:`nbhelpers.data.DataBundle`, a dict name -> ImageSet (or uint8 tensor
            ``(N, 3, 32, 32)``), or a list of ImageSets.
        max_shared_fraction: tolerated fraction of shared images per pair, in [0, 1).
        hint: shown when the check fails.

    Returns:
        An :class:`Outcome` (bool-like), truthy if every pair of splits is (nearly) disjoint.
        Never raises on a failed check.

    Raises:
        TypeError / ValueError: malformed ``data`` (fewer than two splits, not images), or
            ``max_shared_fraction`` outside [0, 1).
    """
    from nbhelpers.checks.data_checks import image_hashes, pair_overlaps

    number("max_shared_fraction", max_shared_fraction, 0.0, 1.0, high_open=True)
    hashes = {name: set(image_hashes(x)) for name, x in _split_images(data).items()}
    overlaps = [
        f"{a}/{b} share {shared} images ({fraction:.0%})"
        for a, b, shared, fraction in pair_overlaps(hashes)
        if fraction > max_shared_fraction
    ]
    return check(
        not overlaps,
        f"The splits {', '.join(hashes)} share no images.",
        hint,
        fail_msg="The splits overlap: " + "; ".join(overlaps) + ".",
    )


def check_close(
    value: Any,
    target: float,
    tol: float,
    *,
    name: str = "value",
    hint: str = "Recompute it step by step and compare with the formula.",
) -> Outcome:
    """Check that ``|value - target| <= tol``.

    Args:
        value: a number (or one-element tensor).
        target: the expected number.
        tol: absolute tolerance (non-negative).
        name: what the value is, for the message (e.g. ``"learning rate after 10 epochs"``).
        hint: shown when the check fails.

    Returns:
        An :class:`Outcome` (bool-like), truthy if close. A non-number ``value`` (e.g. ``None``
        left by an unfinished exercise) fails the check instead of raising.

    Raises:
        ValueError: negative ``tol``.
    """
    number("tol", tol, 0.0)
    try:
        got = float(value)
    except (TypeError, ValueError, RuntimeError):
        return check(False, "", hint, fail_msg=f"{name} is {value!r}, not a number yet.")
    return check(
        math.isfinite(got) and abs(got - target) <= tol,
        f"{name} = {got:.4g} (expected {target:.4g} ± {tol:.2g}).",
        hint,
        fail_msg=f"{name} = {got:.4g}, expected {target:.4g} ± {tol:.2g}.",
    )
