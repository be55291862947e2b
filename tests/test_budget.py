import pytest

from nbhelpers.budget import BUDGETS, HANDOVER, resolve_budget
from nbhelpers.experiment import handover_config, reference_fix_config


def test_auto_budget_depends_on_device():
    assert resolve_budget(None, "cpu").name == "quick"
    assert resolve_budget(None, "cuda").name == "colab"


def test_story_budgets_keep_the_handovers_step_count():
    """The faults act per optimizer step: quick and colab take the handover's 2,860 steps."""
    assert HANDOVER["steps"] == HANDOVER["epochs"] * 286
    for name in ("quick", "colab"):
        b = BUDGETS[name]
        assert b.steps == HANDOVER["steps"] and b.n_train % b.batch_size == 0
        assert b.width == HANDOVER["width"]  # narrower networks do not leave the plateau
        assert "the handover's step count" in b.describe()


def test_full_budget_is_the_handovers_sizes():
    full = BUDGETS["full"]
    assert (full.n_train, full.epochs, full.batch_size, full.width) == (None, 10, 256, 32)
    assert full.eval_every == 1 and full.n_trials == 20
    tiny = BUDGETS["tiny"]
    assert tiny.steps < BUDGETS["quick"].steps and resolve_budget(tiny) is tiny


@pytest.mark.parametrize("build", [handover_config, reference_fix_config])
def test_configs_take_their_sizes_from_the_budget(build):
    b = BUDGETS["quick"]
    cfg = build("quick", source="synthetic")
    sizes = (cfg.n_train, cfg.batch_size, cfg.epochs, cfg.width, cfg.eval_every)
    assert sizes == (b.n_train, b.batch_size, b.epochs, b.width, b.eval_every)


def test_many_run_sizes():
    for name in ("tiny", "quick"):
        b = BUDGETS[name]
        assert b.sweep_width == 8 and b.sweep_batch_size == 32
        assert b.sweep_lrs == (1e-3, 2e-3, 5e-3)
    full = BUDGETS["full"]
    assert (full.sweep_width, full.sweep_n_train, full.sweep_batch_size) == (32, None, 256)
    assert full.sweep_lrs == (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def test_unknown_budget_is_clear():
    with pytest.raises(ValueError, match="'huge'.*tiny, quick, colab, full"):
        resolve_budget("huge")


@pytest.mark.parametrize("name", [["tiny"], {"tiny": 1}, 3, "TINY", ""])
def test_anything_but_a_budget_name_is_refused_clearly(name):
    with pytest.raises(ValueError) as err:
        resolve_budget(name)
    assert f"Unknown budget {name!r}; valid: tiny, quick, colab, full (or None" in str(err.value)
