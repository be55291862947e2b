"""The correct training loop, evaluation, phase timing and the hook protocol.

:func:`train` runs epochs over any iterable of ``(x, y)`` batches (x float32
``(B, 3, 32, 32)`` in [0, 1], y int64 ``(B,)``); :func:`evaluate` gives the
sample-weighted loss and accuracy on one split. Both are fixed and tested; the
handover's faulty loop is written out in the notebooks, and its missing
``optimizer.zero_grad()`` can be reproduced here with ``zero_grad=False``.

Hook protocol (Cockpit attaches here). A hook is any object with some of these
optional methods; time spent in them is counted as "diagnostics":

* ``on_train_begin(model, optimizer, loss_fn)``
* ``backward(step, model, x, y, logits, loss, loss_fn) -> bool``: return True if the
  hook called ``loss.backward()`` itself (e.g. inside Cockpit's context); the loop
  then skips its own backward. At most one hook per step does this: hooks are asked
  in order and the first that returns True ends the round.
* ``on_step_end(step, loss)``: ``loss`` is a Python float (reading it waits for the
  device, so the loop only does it when some hook has this method).
* ``on_epoch_end(epoch, metrics)``: ``metrics`` is the epoch's dict in the history.
* ``on_train_end(history)``

``step`` is the 0-based index of the optimizer step over the whole run; ``epoch`` is
1-based.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["History", "evaluate", "train", "synchronize"]

_SCHEDULER_STEPS = ("batch", "epoch")
_TIMING_KEYS = ("data_s", "compute_s", "eval_s", "diagnostics_s", "total_s")


@dataclass
class History:
    """What :func:`train` returns.

    Attributes:
        epochs: one dict per (possibly partial) epoch: ``epoch`` (1-based), ``steps``
            (optimizer steps in it), ``images``, ``lr`` (learning rate of the epoch's
            last step), ``lr_first`` (of its first step), ``running_loss`` and
            ``running_accuracy`` (sample-weighted over the mini-batches as they were
            trained, in train mode), ``epoch_s`` (seconds, without evaluation) and,
            for each evaluated split ``s``, ``{s}_loss`` and ``{s}_accuracy``.
        step_losses: mini-batch training loss of every step (floats).
        step_lrs: learning rate used by every step (floats).
        timings: seconds spent per phase, ``data_s`` (waiting for batches),
            ``compute_s`` (forward, backward, optimizer and scheduler step),
            ``eval_s``, ``diagnostics_s`` (hooks), ``total_s``; plus ``images``,
            ``images_per_s`` (training images / (data_s + compute_s)) and
            ``overall_images_per_s`` (training images / total_s).
        status: "complete", "interrupted" (KeyboardInterrupt, e.g. the stop button) or
            "diverged" (a training loss became NaN or infinite; training went on, but every
            later metric is meaningless; the epoch row where it happened holds
            ``diverged_at_step``, the 0-based step).
        steps: optimizer steps done.
        scheduler_step: "batch", "epoch" or None (no scheduler).
        zero_grad: whether gradients were zeroed before every step.
        device: the training device as a string.
        profile: whether phases were timed with a device synchronisation at every
            boundary (see :func:`train`).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    status: str = "complete"
    steps: int = 0
    scheduler_step: str | None = None
    zero_grad: bool = True
    device: str = "cpu"
    profile: bool = False

    @property
    def interrupted(self) -> bool:
        """True if training stopped on a KeyboardInterrupt."""
        return self.status == "interrupted"

    def last(self, key: str, default: Any = None) -> Any:
        """The latest value of ``key`` (e.g. ``"test_accuracy"``) over the epochs, or ``default``."""
        for row in reversed(self.epochs):
            if key in row:
                return row[key]
        return default

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields."""
        return asdict(self)


def synchronize(device: torch.device | str) -> None:
    """Wait until queued work on ``device`` has finished (CUDA, MPS); no-op on the CPU.

    GPU kernels run asynchronously, so a wall-clock reading taken without this
    call only measures how long it took to *queue* the work.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps sums over tens of thousands of samples exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _summed_loss(loss_fn: nn.Module | None, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of per-example losses of one batch, whatever the reduction of ``loss_fn``."""
    if loss_fn is None:
        return nn.functional.cross_entropy(logits, y, reduction="sum")
    value = loss_fn(logits, y)
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction == "sum":
        return value
    if reduction == "none":
        return value.sum()
    return value * y.shape[0]


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float | int]:
    """Loss and accuracy of ``model`` on every sample of ``loader``.

    The loss is sample-weighted: the sum of per-example losses divided by the number
    of samples (not the mean of batch means, which over-weights a short last batch),
    so the result does not depend on the batch size. Runs in eval mode (BatchNorm
    uses its running statistics, dropout is off) under ``torch.no_grad()``, and puts
    the model back into the mode it was in.

    Args:
        model: maps float32 ``(B, 3, 32, 32)`` to ``(B, C)`` logits.
        loader: iterable of ``(x, y)``; x float32 ``(B, 3, 32, 32)``, y int64 ``(B,)``,
            on any device (moved to ``device``).
        loss_fn: default cross-entropy. A custom one is taken to average over the batch
            unless its ``reduction`` attribute says "sum" or "none".
        device: where to evaluate; default the device of the model's parameters.

    Returns:
        ``{"loss": float, "accuracy": float in [0, 1], "n": int}``.

    Raises:
        ValueError: the loader yields no samples.
    """
    device = _model_device(model) if device is None else torch.device(device)
    acc_dtype = _accumulator_dtype(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loss_sum = torch.zeros((), dtype=acc_dtype, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            n = 0
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                logits = model(x)
                loss_sum += _summed_loss(loss_fn, logits, y).to(acc_dtype)
                correct += (logits.argmax(dim=1) == y).sum()
                n += int(y.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() got an empty loader (0 samples).")
    return {"loss": float(loss_sum.item()) / n, "accuracy": float(correct.item()) / n, "n": n}


def _hook_methods(hooks: Sequence[Any], name: str) -> list:
    return [getattr(h, name) for h in hooks if callable(getattr(h, name, None))]


def _check_train_args(epochs, scheduler, scheduler_step, eval_every, max_steps, eval_loaders):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if scheduler is not None and scheduler_step not in _SCHEDULER_STEPS:
        raise ValueError(
            f"scheduler_step must be one of {', '.join(_SCHEDULER_STEPS)}, got {scheduler_step!r}"
        )
    if eval_every is not None and (
        isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0
    ):
        raise ValueError(f"eval_every must be a non-negative int or None, got {eval_every!r}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0
    ):
        raise ValueError(f"max_steps must be a non-negative int or None, got {max_steps!r}")
    if eval_loaders is not None and not isinstance(eval_loaders, Mapping):
        raise TypeError(
            "eval_loaders must be a dict of split name -> loader, "
            f"got {type(eval_loaders).__name__}"
        )


class _Clock:
    """Phase timer: host wall-clock, synchronising the device only when asked."""

    def __init__(self, device: torch.device, profile: bool):
        self.device = device
        self.profile = profile
        self.totals = dict.fromkeys(_TIMING_KEYS, 0.0)

    def now(self, sync: bool = False) -> float:
        if sync or self.profile:
            synchronize(self.device)
        return time.perf_counter()


def _total_steps(train_loader: Iterable, epochs: int, max_steps: int | None) -> int | None:
    try:
        total = len(train_loader) * epochs  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    return total


def _progress_bar(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", desc="training", leave=True)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable,
    *,
    epochs: int,
    loss_fn: nn.Module | None = None,
    scheduler: Any | None = None,
    scheduler_step: str = "batch",
    zero_grad: bool = True,
    eval_loaders: Mapping[str, Iterable] | None = None,
    eval_every: int | None = 1,
    hooks: Sequence[Any] = (),
    progress: bool = True,
    device: torch.device | str | None = None,
    max_steps: int | None = None,
    profile: bool = False,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the :class:`History`.

    Every step: ``optimizer.zero_grad()`` (unless ``zero_grad=False``), forward,
    loss, backward (or a hook's backward, see the module docstring), ``optimizer.step()``,
    and ``scheduler.step()`` if ``scheduler_step="batch"``. With
    ``scheduler_step="epoch"`` the scheduler steps once after each epoch's last
    batch instead (before evaluation).

    ``zero_grad=False`` reproduces the handover's bug: gradients are never reset, so
    each step uses the sum of all gradients so far (accidental gradient accumulation;
    tutorial, "Debugging Strategy II").

    Evaluation: after epoch ``e`` when ``e % eval_every == 0`` and after the last epoch
    (also when ``max_steps`` ends training early); ``eval_every=0`` or None turns it off.
    Each split ``s`` of ``eval_loaders`` adds ``{s}_loss`` and ``{s}_accuracy`` to the
    epoch's dict (see :func:`evaluate`).

    Timing (seconds): the device is synchronised at the start and end of each epoch's
    training and around evaluation, so ``total_s`` and ``compute_s`` are honest; within
    an epoch, ``data_s`` and ``diagnostics_s`` are host wall-clock times and
    ``compute_s`` is the rest of the epoch. On a GPU, work the loader or a hook only
    queues (without waiting for it) then lands in ``compute_s``; pass ``profile=True``
    to synchronise at every phase boundary for an exact split (a little slower).

    Interrupting (KeyboardInterrupt, e.g. the notebook's stop button) ends training
    cleanly: the partial epoch is recorded, ``status`` becomes "interrupted", hooks get
    ``on_train_end`` and the history is returned instead of raising.

    Args:
        model: maps float32 ``(B, 3, 32, 32)`` to ``(B, C)`` logits; already on ``device``.
        optimizer: a torch optimizer over the model's parameters.
        train_loader: iterable of ``(x, y)`` batches (moved to ``device`` if needed).
        epochs: number of passes over ``train_loader`` (non-negative int).
        loss_fn: default ``nn.CrossEntropyLoss()`` (mean over the batch), which
            BackPACK can extend.
        scheduler: optional learning-rate scheduler with a ``step()`` method.
        scheduler_step: "batch" (every optimizer step) or "epoch".
        zero_grad: reset gradients before each step (``set_to_none=True``).
        eval_loaders: split name -> loader, e.g. ``{"train": ..., "valid": ..., "test": ...}``.
        eval_every: evaluate every this many epochs (0 or None: never).
        hooks: objects following the hook protocol (module docstring).
        progress: show a tqdm.auto progress bar with loss and throughput (images/s).
        device: default the device of the model's parameters.
        max_steps: stop after this many optimizer steps in total (None: no limit).
        profile: synchronise the device at every phase boundary (exact phase split).

    Returns:
        The :class:`History`.

    Raises:
        ValueError: negative ``epochs``/``eval_every``/``max_steps``, unknown ``scheduler_step``.
        TypeError: ``eval_loaders`` is not a mapping.
    """
    _check_train_args(epochs, scheduler, scheduler_step, eval_every, max_steps, eval_loaders)
    device = _model_device(model) if device is None else torch.device(device)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    eval_loaders = dict(eval_loaders or {})
    hooks = tuple(hooks)
    history = History(
        scheduler_step=scheduler_step if scheduler is not None else None,
        zero_grad=bool(zero_grad),
        device=str(device),
        profile=bool(profile),
    )
    clock = _Clock(device, profile)
    loop = _Loop(model, optimizer, loss_fn, scheduler, scheduler_step, zero_grad, hooks, clock)
    bar = _progress_bar(_total_steps(train_loader, epochs, max_steps), progress)
    t_start = clock.now(sync=True)
    try:
        loop.call_hooks("on_train_begin", model, optimizer, loss_fn)
        for epoch in range(1, epochs + 1):
            row = loop.run_epoch(epoch, train_loader, device, bar, max_steps, history)
            _check_divergence(history, row)
            stop = max_steps is not None and loop.step >= max_steps
            if eval_every and (epoch % eval_every == 0 or epoch == epochs or stop):
                _evaluate_splits(model, eval_loaders, loss_fn, device, clock, row)
            loop.call_hooks("on_epoch_end", epoch, row)
            if stop:
                break
    except KeyboardInterrupt:
        history.status = "interrupted"
        loop.finish_partial_epoch(history)
    finally:
        bar.close()
    _finish_timings(history, clock, t_start, loop)  # hooks see the timings so far
    try:
        loop.call_hooks("on_train_end", history)
    except KeyboardInterrupt:
        history.status = "interrupted"
    _finish_timings(history, clock, t_start, loop)
    return history


def _check_divergence(history: History, row: dict[str, Any]) -> None:
    """Mark the run "diverged" (and warn once) at the first non-finite training loss."""
    if history.status == "diverged":
        return
    first = len(history.step_losses) - row["steps"]  # this epoch's losses only
    losses = history.step_losses
    bad = next((i for i in range(first, len(losses)) if not math.isfinite(losses[i])), None)
    if bad is None:
        return
    history.status = "diverged"
    row["diverged_at_step"] = bad
    lr = history.step_lrs[bad] if bad < len(history.step_lrs) else float("nan")
    warnings.warn(
        f"Training diverged: the loss became {history.step_losses[bad]} at step {bad} "
        f"(learning rate {lr:g}). Every later result of this run is meaningless: lower the "
        "learning rate (or look at the schedule and the inputs), then train again.",
        RuntimeWarning,
        stacklevel=3,
    )


def _evaluate_splits(model, eval_loaders, loss_fn, device, clock, row) -> None:
    t0 = clock.now(sync=True)
    for split, loader in eval_loaders.items():
        result = evaluate(model, loader, loss_fn=loss_fn, device=device)
        row[f"{split}_loss"] = result["loss"]
        row[f"{split}_accuracy"] = result["accuracy"]
    clock.totals["eval_s"] += clock.now(sync=True) - t0


def _finish_timings(history: History, clock: _Clock, t_start: float, loop: _Loop) -> None:
    totals = clock.totals
    totals["total_s"] = clock.now(sync=True) - t_start
    train_s = totals["data_s"] + totals["compute_s"]
    history.timings = {
        **{k: float(totals[k]) for k in _TIMING_KEYS},
        "images": int(loop.images),
        "images_per_s": loop.images / train_s if train_s > 0 else 0.0,
        "overall_images_per_s": loop.images / totals["total_s"] if totals["total_s"] > 0 else 0.0,
    }
    history.steps = loop.step


class _Loop:
    """State of one :func:`train` call: steps, running sums, the current epoch's row."""

    def __init__(
        self, model, optimizer, loss_fn, scheduler, scheduler_step, zero_grad, hooks, clock
    ):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.scheduler, self.scheduler_step = scheduler, scheduler_step
        self.zero_grad, self.hooks, self.clock = zero_grad, hooks, clock
        self.backward_hooks = _hook_methods(hooks, "backward")
        self.step_end_hooks = _hook_methods(hooks, "on_step_end")
        self.step = 0
        self.images = 0
        self._epoch_state: dict[str, Any] | None = None

    # -- hooks ---------------------------------------------------------------
    def call_hooks(self, name: str, *args) -> None:
        methods = _hook_methods(self.hooks, name)
        if not methods:
            return
        t0 = self.clock.now()
        try:
            for method in methods:
                method(*args)
        finally:
            self.clock.totals["diagnostics_s"] += self.clock.now() - t0

    def _backward(self, x, y, logits, loss) -> None:
        if self.backward_hooks:
            t0 = self.clock.now()
            try:
                for method in self.backward_hooks:
                    if method(self.step, self.model, x, y, logits, loss, self.loss_fn):
                        return
            finally:
                self.clock.totals["diagnostics_s"] += self.clock.now() - t0
        loss.backward()

    # -- one step -------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, y: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        if self.zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        self._backward(x, y, logits, loss)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_step == "batch":
            self.scheduler.step()
        batch = int(y.shape[0])
        detached = loss.detach()
        state["losses"].append(detached)
        state["lrs"].append(lr)
        weight = 1 if getattr(self.loss_fn, "reduction", "mean") == "sum" else batch
        state["loss_sum"] += detached.to(state["loss_sum"].dtype) * weight
        state["correct"] += (logits.detach().argmax(dim=1) == y).sum()
        state["images"] += batch
        self.images += batch
        self.step += 1
        return detached

    # -- one epoch ------------------------------------------------------------
    def run_epoch(self, epoch, loader, device, bar, max_steps, history) -> dict[str, Any]:
        self.model.train()
        dtype = _accumulator_dtype(device)
        state = {
            "epoch": epoch,
            "losses": [],
            "lrs": [],
            "loss_sum": torch.zeros((), dtype=dtype, device=device),
            "correct": torch.zeros((), dtype=torch.int64, device=device),
            "images": 0,
            "data_s": self.clock.totals["data_s"],
            "diag_s": self.clock.totals["diagnostics_s"],
            "t0": self.clock.now(sync=True),
        }
        self._epoch_state = state
        bar.set_description(f"epoch {epoch}")
        iterator = iter(loader)
        t_refresh = time.perf_counter()
        while max_steps is None or self.step < max_steps:
            t0 = self.clock.now()
            try:
                x, y = next(iterator)
            except StopIteration:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            self.clock.totals["data_s"] += self.clock.now() - t0
            loss = self._train_step(x, y, state)
            if self.step_end_hooks:
                self.call_hooks("on_step_end", self.step - 1, float(loss.item()))
            bar.update(1)
            if not bar.disable and time.perf_counter() - t_refresh > 0.5:
                t_refresh = time.perf_counter()
                self._refresh_bar(bar, loss, state)
        if state["losses"] and not bar.disable:
            self._refresh_bar(bar, state["losses"][-1], state)
        return self._close_epoch(history, complete=True)

    def _refresh_bar(self, bar, loss: torch.Tensor, state: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - state["t0"]
        rate = state["images"] / elapsed if elapsed > 0 else 0.0
        bar.set_postfix({"loss": f"{loss.item():.4f}", "img/s": f"{rate:,.0f}"}, refresh=False)

    def _close_epoch(self, history: History, complete: bool) -> dict[str, Any]:
        state = self._epoch_state
        assert state is not None
        if complete and self.scheduler is not None and self.scheduler_step == "epoch":
            self.scheduler.step()
        epoch_s = self.clock.now(sync=True) - state["t0"]
        data_s = self.clock.totals["data_s"] - state["data_s"]
        diag_s = self.clock.totals["diagnostics_s"] - state["diag_s"]
        self.clock.totals["compute_s"] += max(epoch_s - data_s - diag_s, 0.0)
        losses = (
            [float(v) for v in torch.stack(state["losses"]).tolist()] if state["losses"] else []
        )
        n = state["images"]
        row: dict[str, Any] = {
            "epoch": state["epoch"],
            "steps": len(losses),
            "images": n,
            "lr": state["lrs"][-1] if state["lrs"] else float(self.optimizer.param_groups[0]["lr"]),
            "lr_first": state["lrs"][0] if state["lrs"] else None,
            "running_loss": float(state["loss_sum"].item()) / n if n else math.nan,
            "running_accuracy": float(state["correct"].item()) / n if n else math.nan,
            "epoch_s": epoch_s,
        }
        if not complete:
            row["partial"] = True
        history.epochs.append(row)
        history.step_losses.extend(losses)
        history.step_lrs.extend(state["lrs"])
        self._epoch_state = None
        return row

    def finish_partial_epoch(self, history: History) -> None:
        """Record the interrupted epoch (if it was still open) with what was trained of it."""
        if self._epoch_state is not None:
            self._close_epoch(history, complete=False)
