"""Compute budgets: one switch that sizes every notebook for tests, a CPU laptop or a GPU.

- ``tiny``: seconds per notebook; used by the test suite. Results are noise, only the code
  path is checked.
- ``quick``: a few minutes per notebook on a 2-core CPU laptop; results show the trends.
- ``full``: the real thing (all of SVHN, 10 epochs as in the handover); meant for a GPU.

Every notebook reads the budget from its parameters cell; ``BUDGET = None`` picks ``full`` on
a GPU and ``quick`` elsewhere. The code path is the same for all three. :data:`BUDGETS` is
the one table of sizes: the notebooks read every size from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BUDGETS", "Budget", "resolve_budget"]


@dataclass(frozen=True)
class Budget:
    """How much data and compute one notebook may use.

    Attributes:
        name: ``"tiny"``, ``"quick"`` or ``"full"``.
        n_train: training images (``None``: all of the source's train split minus validation).
        n_valid: validation images carved from the train split.
        n_test: test images (``None``: the whole test split).
        epochs: epochs of one training run (the handover used 10).
        batch_size: training batch size (the handover used 256).
        n_seeds: seeds per configuration when comparing or averaging.
        n_trials: trials of one random search in notebook 00 (the tutorial's question uses 20).
        profile_steps: steps timed by the profiler.
        cockpit_steps: training steps tracked by Cockpit in notebook 06.
        sweep_width: network width (channels of the first conv layer) of the notebooks that
            train many runs (00's searches, 07's sweeps); the colleague's is 32. The CPU
            budgets use 8: the same layout, about 6x less compute.
        sweep_n_train: training images of those runs (None: all of the budget's); the CPU
            budgets use half.
        sweep_batch_size: their batch size; the CPU budgets use a quarter of ``batch_size``
            (at least 32): more optimizer steps for the same compute.
        sweep_lrs: the learning rates of notebook 07's sweeps, half a decade apart.
    """

    name: str
    n_train: int | None
    n_valid: int
    n_test: int | None
    epochs: int
    batch_size: int
    n_seeds: int
    n_trials: int
    profile_steps: int
    cockpit_steps: int
    sweep_width: int
    sweep_n_train: int | None
    sweep_batch_size: int
    sweep_lrs: tuple[float, ...]


_CPU_LRS = (1e-3, 3e-3, 1e-2)

# fmt: off
BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        "tiny", n_train=512, n_valid=256, n_test=256, epochs=2, batch_size=64,
        n_seeds=2, n_trials=3, profile_steps=3, cockpit_steps=12,
        sweep_width=8, sweep_n_train=256, sweep_batch_size=32, sweep_lrs=_CPU_LRS,
    ),
    "quick": Budget(
        "quick", n_train=6000, n_valid=1000, n_test=2000, epochs=4, batch_size=128,
        n_seeds=3, n_trials=4, profile_steps=10, cockpit_steps=150,
        sweep_width=8, sweep_n_train=3000, sweep_batch_size=32, sweep_lrs=_CPU_LRS,
    ),
    "full": Budget(
        "full", n_train=None, n_valid=6000, n_test=None, epochs=10, batch_size=256,
        n_seeds=5, n_trials=20, profile_steps=30, cockpit_steps=2000,
        sweep_width=32, sweep_n_train=None, sweep_batch_size=256,
        sweep_lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    ),
}
# fmt: on


def resolve_budget(
    name: str | Budget | None = None, device: torch.device | str | None = None
) -> Budget:
    """Return the :class:`Budget` called ``name``.

    Args:
        name: ``"tiny"``, ``"quick"``, ``"full"``, a :class:`Budget` (returned as is), or
            ``None``: ``"full"`` when ``device`` is a CUDA GPU, else ``"quick"``.
        device: the training device (only used when ``name`` is None).

    Raises:
        ValueError: unknown budget name (the message lists the valid ones).
    """
    if isinstance(name, Budget):
        return name
    if name is None:
        kind = torch.device(device).type if device is not None else "cpu"
        name = "full" if kind == "cuda" else "quick"
    if not isinstance(name, str) or name not in BUDGETS:
        valid = ", ".join(BUDGETS)
        raise ValueError(f"Unknown budget {name!r}; valid: {valid} (or None for automatic).")
    return BUDGETS[name]
