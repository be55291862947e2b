"""Compute budgets: one switch that sizes every notebook for tests, a CPU laptop or a GPU.

The handover's faults act per optimizer step (Adam moves weights by about the learning rate
per step; the schedule multiplies the learning rate by 1.001 per step; the accumulated
gradient grows with every step), so its step count is part of the story: 10 epochs of 286
steps. Every budget that tells the story keeps those 2,860 steps and shrinks the work per
step instead (batch size, images, evaluation).

- ``tiny``: seconds per notebook; used by the test suite. Results are noise, only the code
  path is checked (the step count is not kept).
- ``quick``: a 2-core CPU laptop. The handover's 2,860 steps at its width (32) on batches of
  16 (4,576 training images per epoch instead of 73,257), evaluated every 5 epochs.
- ``colab``: a GPU in minutes (the default on CUDA): 2,860 steps on batches of 64.
- ``full``: the handover's own sizes (all of SVHN, batch 256, 10 epochs, evaluated every
  epoch); an hour or more for the notebooks with many runs.

Every notebook reads the budget from its parameters cell; ``BUDGET = None`` picks ``colab``
on a CUDA GPU and ``quick`` elsewhere. :data:`BUDGETS` is the one table of sizes; the
notebooks read every size from it. Step counts and costs were measured on the synthetic
stand-in with one CPU thread (budgets of notebook 00 and 07: see ``sweep_*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BUDGETS", "HANDOVER", "Budget", "resolve_budget"]


@dataclass(frozen=True)
class Budget:
    """How much data and compute one notebook may use.

    The first group sizes the runs that study the handover (notebooks 01-06, the handover
    and the reference fix); the ``sweep_*`` group sizes the notebooks that train many runs
    (00's searches, 07's sweeps), which do not study the handover's faults.

    Attributes:
        name: ``"tiny"``, ``"quick"``, ``"colab"`` or ``"full"``.
        n_train: training images (``None``: all of the source's train split minus validation).
        n_valid: validation images carved from the train split.
        n_test: test images (``None``: the whole test split).
        epochs: epochs of one training run (the handover used 10).
        batch_size: training batch size (the handover used 256).
        width: channels of the first convolution block (the handover used 32).
        eval_every: evaluate every this many epochs and after the last (the handover: 1).
        n_seeds: seeds per configuration when comparing or averaging.
        n_trials: trials of one random search in notebook 00 (the tutorial's question uses 20).
        profile_steps: steps timed by the profiler.
        cockpit_steps: training steps tracked by Cockpit in notebook 06.
        sweep_width, sweep_n_train, sweep_batch_size, sweep_epochs: the many-run notebooks'
            width, training images (None: all), batch size and epochs.
        sweep_lrs: the learning rates of notebook 07's sweeps, on a log scale: half a decade
            apart on the GPU budgets; on the CPU budgets three steps of the 1-2-5 series
            (1e-3, 2e-3, 5e-3), a finer grid of the same three runs that holds the reference
            fix's 2e-3, so a sweep is not beaten by the grid alone.
    """

    name: str
    n_train: int | None
    n_valid: int
    n_test: int | None
    epochs: int
    batch_size: int
    width: int
    eval_every: int
    n_seeds: int
    n_trials: int
    profile_steps: int
    cockpit_steps: int
    sweep_width: int
    sweep_n_train: int | None
    sweep_batch_size: int
    sweep_epochs: int
    sweep_lrs: tuple[float, ...]

    @property
    def steps(self) -> int | None:
        """Optimizer steps of one run (None when ``n_train`` is the source's default)."""
        return None if self.n_train is None else self.epochs * -(-self.n_train // self.batch_size)

    def describe(self) -> str:
        """What this budget keeps of the handover and what it scales down, in one sentence."""
        n_train = "all" if self.n_train is None else f"{self.n_train:,}"
        steps = "" if self.steps is None else f" = {self.steps:,} optimizer steps"
        kept = " (the handover's step count)" if self.steps == HANDOVER["steps"] else ""
        return (
            f"budget {self.name}: {self.epochs} epochs{steps}{kept} at batch size "
            f"{self.batch_size} (handover {HANDOVER['batch_size']}), {n_train} training images "
            f"(handover {HANDOVER['n_train']:,}), width {self.width} (handover "
            f"{HANDOVER['width']}), {self.n_valid:,} validation / "
            f"{'all' if self.n_test is None else f'{self.n_test:,}'} test images, "
            f"evaluated every {self.eval_every} epoch(s)"
        )


#: The handover's own sizes (design of the series; 10 x 286 = 2,860 optimizer steps).
HANDOVER = {"n_train": 73_257, "batch_size": 256, "width": 32, "epochs": 10, "steps": 2_860}

_CPU_LRS = (1e-3, 2e-3, 5e-3)

# fmt: off
BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        "tiny", n_train=256, n_valid=128, n_test=128, epochs=2, batch_size=16, width=8,
        eval_every=1, n_seeds=2, n_trials=3, profile_steps=3, cockpit_steps=12,
        sweep_width=8, sweep_n_train=256, sweep_batch_size=32, sweep_epochs=2,
        sweep_lrs=_CPU_LRS,
    ),
    "quick": Budget(
        "quick", n_train=4576, n_valid=1000, n_test=2000, epochs=10, batch_size=16, width=32,
        eval_every=5, n_seeds=3, n_trials=6, profile_steps=20, cockpit_steps=500,
        sweep_width=8, sweep_n_train=2288, sweep_batch_size=32, sweep_epochs=6,
        sweep_lrs=_CPU_LRS,
    ),
    "colab": Budget(
        "colab", n_train=18304, n_valid=2000, n_test=5000, epochs=10, batch_size=64, width=32,
        eval_every=1, n_seeds=3, n_trials=10, profile_steps=30, cockpit_steps=1000,
        sweep_width=32, sweep_n_train=18304, sweep_batch_size=64, sweep_epochs=6,
        sweep_lrs=(1e-3, 3e-3, 1e-2),
    ),
    "full": Budget(
        "full", n_train=None, n_valid=6000, n_test=None, epochs=10, batch_size=256, width=32,
        eval_every=1, n_seeds=5, n_trials=20, profile_steps=30, cockpit_steps=2000,
        sweep_width=32, sweep_n_train=None, sweep_batch_size=256, sweep_epochs=10,
        sweep_lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    ),
}
# fmt: on


def resolve_budget(
    name: str | Budget | None = None, device: torch.device | str | None = None
) -> Budget:
    """Return the :class:`Budget` called ``name``.

    Args:
        name: ``"tiny"``, ``"quick"``, ``"colab"``, ``"full"``, a :class:`Budget` (returned
            as is), or ``None``: ``"colab"`` when ``device`` is a CUDA GPU, else ``"quick"``.
        device: the training device (only used when ``name`` is None).

    Raises:
        ValueError: unknown budget name (the message lists the valid ones).
    """
    if isinstance(name, Budget):
        return name
    if name is None:
        kind = torch.device(device).type if device is not None else "cpu"
        name = "colab" if kind == "cuda" else "quick"
    if not isinstance(name, str) or name not in BUDGETS:
        valid = ", ".join(BUDGETS)
        raise ValueError(f"Unknown budget {name!r}; valid: {valid} (or None for automatic).")
    return BUDGETS[name]
