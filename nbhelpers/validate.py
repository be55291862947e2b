"""Small validators used at the package's boundaries (configs, public functions).

Each one checks one value and returns it normalised (a plain ``int``, ``float``, ``bool``
or ``str``), or raises ``ValueError`` naming the value and what would be valid::

    >>> positive_int("batch_size", 0)
    Traceback (most recent call last):
    ValueError: batch_size=0 is invalid; valid: an integer >= 1

Validate once, where a value enters (a frozen config, a public function), then trust it.
Errors torch, torchvision and Optuna already raise clearly are left to them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "MAX_SEED",
    "boolean",
    "integer",
    "invalid",
    "number",
    "one_of",
    "positive_int",
    "probability",
    "seed",
]

#: Largest seed accepted everywhere: NumPy's legacy seeding takes 32-bit seeds.
MAX_SEED = 2**32 - 1

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def invalid(name: str, value: Any, valid: str) -> ValueError:
    """The package's one error for a bad value: ``"{name}={value!r} is invalid; valid: {valid}"``."""
    return ValueError(f"{name}={value!r:.200} is invalid; valid: {valid}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (bounds optional; bools are refused).

    Raises:
        ValueError: not an integer, or outside the bounds.
    """
    if value is None and allow_none:
        return None
    low_ok = minimum is None or (_is_int(value) and value >= minimum)
    high_ok = maximum is None or (_is_int(value) and value <= maximum)
    if not (_is_int(value) and low_ok and high_ok):
        bounds = [
            f">= {minimum}" if minimum is not None else "",
            f"<= {maximum}" if maximum is not None else "",
        ]
        text = "an integer " + " and ".join(b for b in bounds if b) if any(bounds) else "an integer"
        raise invalid(name, value, text.strip() + (" or None" if allow_none else ""))
    return int(value)


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an ``int >= 1``. Raises ValueError otherwise."""
    return integer(name, value, 1, allow_none=allow_none)


def seed(name: str, value: Any) -> int:
    """A seed: an integer in ``[0, MAX_SEED]`` (2**32 - 1, NumPy's limit). Raises ValueError."""
    return integer(name, value, 0, MAX_SEED)


def number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high``.

    ``low_open``/``high_open`` exclude the bound itself, e.g. a learning rate is
    ``number("lr", lr, 0, low_open=True)``.

    Raises:
        ValueError: not a real number, NaN/inf, or outside the interval.
    """
    if value is None and allow_none:
        return None
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    ok = real and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise invalid(
            name, value, f"a finite number in {interval}" + (" or None" if allow_none else "")
        )
    return float(value)


def probability(name: str, value: Any) -> float:
    """A number in ``[0, 1]``. Raises ValueError otherwise."""
    return number(name, value, 0.0, 1.0)


def one_of(name: str, value: Any, valid: Iterable[Any]) -> Any:
    """``value`` if it is one of ``valid`` (compared with ``==``; unhashable values are refused).

    Raises:
        ValueError: ``value`` is not among ``valid`` (the message lists them).
    """
    valid = tuple(valid)
    if not any(type(value) is type(v) and value == v for v in valid):
        raise invalid(name, value, ", ".join(repr(v) for v in valid))
    return value


def boolean(name: str, value: Any, *, spellings: bool = False) -> bool:
    """``value`` as a ``bool``.

    Args:
        spellings: also accept the strings "true"/"false", "yes"/"no", "1"/"0", "on"/"off"
            (any case), e.g. a notebook parameter passed as text by papermill.

    Raises:
        ValueError: anything else (a non-empty string is *not* taken as True).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if spellings and isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    valid = "True or False" + (f" (or one of {', '.join(_TRUE + _FALSE)})" if spellings else "")
    raise invalid(name, value, valid)
