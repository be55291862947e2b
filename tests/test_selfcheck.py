"""Tests of nbhelpers.selfcheck: verdicts, never raising on a wrong answer, clear input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbhelpers.data import DataBundle, ImageSet
from nbhelpers.selfcheck import (
    Verdict,
    check,
    check_close,
    check_loss_falls,
    check_splits_disjoint,
)


def _imageset(seed: int, n: int = 20, name: str = "train") -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.randint(0, 10, (n,), generator=gen), name, "synthetic")


def test_check_prints_verdict_and_hint(capsys):
    assert check(True, "Works.", "unused")
    assert "✅ Works." in capsys.readouterr().out
    assert not check(False, "Works.", "Look at line 3.")
    out = capsys.readouterr().out
    assert "❌" in out and "Hint: Look at line 3." in out


def test_outcome_is_bool_like_and_silent_in_ipython(capsys):
    passed, failed = check(True, "ok", "h"), check(False, "ok", "h")
    assert passed == True and failed == False  # noqa: E712 - the point of the test
    assert passed.passed and not failed.passed and repr(failed) == "False"
    assert passed._ipython_display_() is None  # shows nothing: the verdict is already out


def test_check_never_raises_on_odd_condition(capsys):
    assert not check(torch.tensor([1, 2]), "ok", "hint")  # ambiguous truth value


def test_verdict_html_escapes():
    html = Verdict(False, "a<b", "use <zero_grad>")._repr_html_()
    assert "a&lt;b" in html and "&lt;zero_grad&gt;" in html


@pytest.mark.parametrize(
    "losses, expected",
    [
        ([2.3, 2.2, 2.0, 1.5, 1.2, 1.0, 0.9, 0.8], True),
        ([2.3, 2.31, 2.29, 2.3, 2.3, 2.31, 2.3, 2.3], False),
        ([2.3, 2.0, float("nan"), 1.0], False),
        ([2.3], False),
        (torch.linspace(2.3, 0.5, 20), True),
        (np.linspace(2.3, 0.5, 20), True),
    ],
)
def test_check_loss_falls(losses, expected, capsys):
    assert bool(check_loss_falls(losses)) is expected


def test_check_loss_falls_reads_step_losses(capsys):
    class Hist:
        step_losses = [3.0, 2.0, 1.0, 0.5]

    assert check_loss_falls(Hist())


def test_check_loss_falls_rejects_non_numbers():
    with pytest.raises(TypeError, match="losses"):
        check_loss_falls("2.3, 1.0")
    with pytest.raises(ValueError, match="min_drop"):
        check_loss_falls([1.0, 0.5], min_drop=2)


def test_check_splits_disjoint(capsys):
    train, valid, test = _imageset(0), _imageset(1, name="valid"), _imageset(2, name="test")
    assert check_splits_disjoint(DataBundle(train, valid, test, "synthetic"))
    leaky = DataBundle(train, train.subset(range(10), "valid"), test, "synthetic")
    assert not check_splits_disjoint(leaky)
    assert "train/valid share 10 images" in capsys.readouterr().out
    assert check_splits_disjoint({"a": train.images, "b": test.images})


def test_check_splits_disjoint_tolerates_tiny_overlap(capsys):
    a, b = _imageset(0, n=2000), _imageset(1, n=2000, name="test")
    b.images[0] = a.images[0]
    assert check_splits_disjoint([a, b])  # 1 of 2000 < 0.1 %
    assert not check_splits_disjoint([a, b], max_shared_fraction=0.0)


def test_check_splits_disjoint_bad_input():
    with pytest.raises(ValueError, match="at least two"):
        check_splits_disjoint([_imageset(0)])
    with pytest.raises(TypeError):
        check_splits_disjoint(42)


def test_check_close(capsys):
    assert check_close(17.2, 17.0, 0.5, name="growth")
    assert not check_close(1.0, 17.0, 0.5, name="growth")
    assert not check_close(None, 17.0, 0.5)
    assert "not a number yet" in capsys.readouterr().out
    assert check_close(torch.tensor(2.0), 2.0, 0.0)
    with pytest.raises(ValueError, match="tol"):
        check_close(1.0, 1.0, -1)
