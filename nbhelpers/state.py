"""Snapshots of training objects and random states, and the device of a model.

Tools that look inside a learner's run (checks, the profiler, the watch) must leave the
learner's model, optimizer, schedule and random streams as they found them; this module is
the one place that knows how.
"""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["changed", "model_device", "preserved_rng", "preserved_state", "restore", "snapshot"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without any."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def preserved_rng():
    """Save Python's, NumPy's and torch's (CPU, CUDA, MPS) random states; restore them on exit."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    mps_backend = getattr(torch.backends, "mps", None)
    mps = torch.mps.get_rng_state() if mps_backend and mps_backend.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if mps is not None:
            torch.mps.set_rng_state(mps)


def snapshot(model: nn.Module, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """Copies of everything training changes: weights and buffers, gradients, train/eval mode,
    optimizer and scheduler state. Restore with :func:`restore`."""
    return {
        "model": copy.deepcopy(model.state_dict()),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "training": {name: m.training for name, m in model.named_modules()},
        "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
    }


def changed(model: nn.Module, saved: dict[str, Any]) -> bool:
    """Whether ``model``'s weights, buffers, gradients or modes differ from ``saved``."""
    now = model.state_dict()
    if any(not torch.equal(now[k], v) for k, v in saved["model"].items()):
        return True
    for g, p in zip(saved["grads"], model.parameters(), strict=True):
        if (g is None) != (p.grad is None) or (g is not None and not torch.equal(g, p.grad)):
            return True
    return any(m.training != saved["training"][n] for n, m in model.named_modules())


def restore(
    model: nn.Module, saved: dict[str, Any], optimizer: Any = None, scheduler: Any = None
) -> None:
    """Put back what :func:`snapshot` saved (weights, gradients, modes, optimizer, scheduler)."""
    with torch.no_grad():
        model.load_state_dict(saved["model"])
        for g, p in zip(saved["grads"], model.parameters(), strict=True):
            p.grad = g
    for name, module in model.named_modules():
        module.training = saved["training"][name]
    if optimizer is not None and saved["optimizer"] is not None:
        optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])


@contextmanager
def preserved_state(model: nn.Module, optimizer: Any = None, scheduler: Any = None):
    """Run the body, then put the model, optimizer and scheduler back as they were.

    Yields a dict whose ``"changed"`` is True afterwards when the body changed the model
    (weights, buffers, gradients or modes).
    """
    saved = snapshot(model, optimizer, scheduler)
    info = {"changed": False}
    try:
        yield info
    finally:
        info["changed"] = changed(model, saved)
        restore(model, saved, optimizer, scheduler)
