import pytest

from nbhelpers.budget import BUDGETS, resolve_budget


def test_auto_budget_depends_on_device():
    assert resolve_budget(None, "cpu").name == "quick"
    assert resolve_budget(None, "cuda").name == "full"


def test_named_budgets_grow():
    tiny, quick, full = (BUDGETS[k] for k in ("tiny", "quick", "full"))
    assert tiny.n_train < quick.n_train
    assert full.n_train is None and full.epochs == 10 and full.batch_size == 256
    assert full.n_trials == 20
    assert resolve_budget(tiny) is tiny


def test_unknown_budget_is_clear():
    with pytest.raises(ValueError, match="'huge'.*tiny, quick, full"):
        resolve_budget("huge")
