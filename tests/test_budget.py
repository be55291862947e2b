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


def test_many_run_sizes_shrink_the_work_on_the_cpu_budgets_only():
    for name in ("tiny", "quick"):
        b = BUDGETS[name]
        assert (b.sweep_width, b.sweep_n_train) == (8, b.n_train // 2)
        assert b.sweep_batch_size == max(32, b.batch_size // 4)
        assert b.sweep_lrs == (1e-3, 3e-3, 1e-2)
    full = BUDGETS["full"]
    assert (full.sweep_width, full.sweep_n_train, full.sweep_batch_size) == (32, None, 256)
    assert full.sweep_lrs == (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def test_unknown_budget_is_clear():
    with pytest.raises(ValueError, match="'huge'.*tiny, quick, full"):
        resolve_budget("huge")


@pytest.mark.parametrize("name", [["tiny"], {"tiny": 1}, 3, "TINY", ""])
def test_anything_but_a_budget_name_is_refused_clearly(name):
    with pytest.raises(ValueError) as err:
        resolve_budget(name)
    assert f"Unknown budget {name!r}; valid: tiny, quick, full (or None" in str(err.value)
