"""The correct training loop, evaluation, phase timing and the hook protocol.

:func:`train` runs epochs over any iterable of ``(x, y)`` batches (x float32
``(B, 3, 32, 32)`` in [0, 1], y int64 ``(B,)``); :func:`evaluate` gives the
sample-weighted loss and accuracy on one split. Both are fixed and tested; the
handover's faulty loop is written out in the notebooks, and its missing
``optimizer.zero_grad()`` can be reproduced here with ``zero_grad=False``.
:class:`TrainOptions` holds how the loop runs (loss, schedule stepping, evaluation
interval, progress bar, device, step limit, profiling).

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

CPU threads: with ``threads="auto"`` (the default) a run on the CPU chooses its intra-op
thread count from the step's work and the cores other programs leave idle, again after every
epoch, and puts the learner's setting back at the end (:mod:`nbhelpers.threads`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nbhelpers.state import model_device
from nbhelpers.threads import ThreadPolicy, check_threads
from nbhelpers.validate import integer, one_of

__all__ = ["SCHEDULER_STEPS", "History", "TrainOptions", "evaluate", "synchronize", "train"]

#: When a learning-rate scheduler steps: after every optimizer step, or after every epoch.
SCHEDULER_STEPS = ("batch", "epoch")
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
            for each evaluated split ``s``, ``{s}_loss`` and ``{s}_accuracy``; a partial
            epoch (interrupted) has ``partial: True``.
        step_losses: mini-batch training loss of every step (floats).
        step_lrs: learning rate used by every step (floats).
        timings: seconds spent per phase, ``data_s`` (waiting for batches),
            ``compute_s`` (forward, backward, optimizer and scheduler step),
            ``eval_s``, ``diagnostics_s`` (hooks), ``total_s``; plus ``images``,
            ``images_per_s`` (training images / (data_s + compute_s)).
        status: "complete", "interrupted" (KeyboardInterrupt, e.g. the stop button) or
            "diverged" (a training loss became NaN or infinite, or more than
            :data:`DIVERGENCE_FACTOR` (100) times its start; training went on, but every
            later metric is meaningless; the epoch row where it happened holds
            ``diverged_at_step``, the 0-based step).
        steps: optimizer steps done.
        device: the training device as a string.
        threads: CPU intra-op threads of every epoch (also in each epoch's row as
            ``threads``); empty for a run off the CPU.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    status: str = "complete"
    steps: int = 0
    device: str = "cpu"
    threads: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` runs the loop (every field can also be passed to ``train`` by name).

    Attributes:
        loss_fn: default ``nn.CrossEntropyLoss()`` (mean over the batch), which BackPACK
            can extend.
        scheduler_step: "batch" (the scheduler steps after every optimizer step) or "epoch"
            (once after each epoch's last batch, before evaluation).
        zero_grad: reset gradients before each step (``set_to_none=True``); False is the
            handover's bug.
        eval_every: evaluate every this many epochs and after the last one (0 or None: never).
        progress: show a tqdm.auto progress bar with loss and throughput (images/s).
        device: default the device of the model's parameters.
        max_steps: stop after this many optimizer steps in total (None: no limit).
        profile: synchronise the device at every phase boundary (exact phase split on a GPU).
        threads: CPU intra-op threads: "auto" (chosen per run and epoch, see
            :mod:`nbhelpers.threads`), an int >= 1 (exactly that many) or None (torch's setting
            as it is). The learner's setting is put back afterwards. Ignored off the CPU.

    Raises:
        ValueError: an unknown ``scheduler_step``, a negative ``eval_every`` or ``max_steps``,
            a bad ``threads``.
    """

    loss_fn: nn.Module | None = None
    scheduler_step: str = "batch"
    zero_grad: bool = True
    eval_every: int | None = 1
    progress: bool = True
    device: torch.device | str | None = None
    max_steps: int | None = None
    profile: bool = False
    threads: int | str | None = "auto"

    def __post_init__(self) -> None:
        one_of("scheduler_step", self.scheduler_step, SCHEDULER_STEPS)
        check_threads("threads", self.threads)
        integer("eval_every", self.eval_every, 0, allow_none=True)
        integer("max_steps", self.max_steps, 0, allow_none=True)


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


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps sums over tens of thousands of samples exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _summed_loss(loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of per-example losses of one batch, whatever the reduction of ``loss_fn``."""
    value = loss_fn(logits, y)
    summed = getattr(loss_fn, "reduction", "mean") in ("sum", "none")
    return value.sum() if summed else value * y.shape[0]


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
    device = model_device(model) if device is None else torch.device(device)
    loss_fn = nn.CrossEntropyLoss(reduction="sum") if loss_fn is None else loss_fn
    acc_dtype = _accumulator_dtype(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=acc_dtype, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    try:
        with torch.no_grad():
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


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable,
    *,
    epochs: int,
    scheduler: Any | None = None,
    eval_loaders: Mapping[str, Iterable] | None = None,
    hooks: Sequence[Any] = (),
    options: TrainOptions | None = None,
    **option_fields: Any,
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
        model: maps float32 ``(B, 3, 32, 32)`` to ``(B, C)`` logits; already on the device.
        optimizer: a torch optimizer over the model's parameters.
        train_loader: iterable of ``(x, y)`` batches (moved to the device if needed).
        epochs: number of passes over ``train_loader`` (non-negative int).
        scheduler: optional learning-rate scheduler with a ``step()`` method.
        eval_loaders: split name -> loader, e.g. ``{"train": ..., "valid": ..., "test": ...}``.
        hooks: objects following the hook protocol (module docstring).
        options: a :class:`TrainOptions` (default: its defaults).
        **option_fields: :class:`TrainOptions` fields by name, e.g. ``progress=False,
            max_steps=10`` (they replace those of ``options``).

    Returns:
        The :class:`History`.

    Raises:
        ValueError: negative ``epochs``, or an invalid option (see :class:`TrainOptions`).
        TypeError: ``eval_loaders`` is not a mapping, or an unknown option name.
    """
    opts = dataclasses.replace(options or TrainOptions(), **option_fields)
    integer("epochs", epochs, 0)
    if eval_loaders is not None and not isinstance(eval_loaders, Mapping):
        raise TypeError(
            f"eval_loaders must be a dict of split name -> loader, got {eval_loaders!r:.80}"
        )
    loop = _Loop(model, optimizer, scheduler, tuple(hooks), opts)
    bar = _progress_bar(train_loader, epochs, opts)
    loop.threads.begin(model, *_batch_shape(train_loader))
    t_start = loop.now(sync=True)
    try:
        loop.call_hooks("on_train_begin", model, optimizer, loop.loss_fn)
        for epoch in range(1, epochs + 1):
            row = loop.run_epoch(epoch, train_loader, bar)
            _check_divergence(loop.history, row)
            stop = opts.max_steps is not None and loop.step >= opts.max_steps
            if opts.eval_every and (epoch % opts.eval_every == 0 or epoch == epochs or stop):
                loop.evaluate_splits(eval_loaders or {}, row)
            loop.call_hooks("on_epoch_end", epoch, row)
            if stop:
                break
    except KeyboardInterrupt:
        loop.history.status = "interrupted"
        loop.close_epoch(complete=False)
    finally:
        bar.close()
        loop.threads.close()  # the learner's thread setting again
    loop.finish(t_start)  # hooks see the timings so far
    try:
        loop.call_hooks("on_train_end", loop.history)
    except KeyboardInterrupt:
        loop.history.status = "interrupted"
    loop.finish(t_start)
    return loop.history


def _batch_shape(loader: Iterable) -> tuple[int | None, tuple[int, ...]]:
    """The loader's batch size (None if it does not say) and image shape (default 3x32x32)."""
    images = getattr(loader, "images", None)
    four_d = isinstance(images, torch.Tensor) and images.ndim == 4
    return getattr(loader, "batch_size", None), tuple(images.shape[1:]) if four_d else (3, 32, 32)


def _progress_bar(train_loader: Iterable, epochs: int, opts: TrainOptions):
    from tqdm.auto import tqdm

    total = len(train_loader) * epochs if hasattr(train_loader, "__len__") else None
    if opts.max_steps is not None:
        total = opts.max_steps if total is None else min(total, opts.max_steps)
    return tqdm(total=total, disable=not opts.progress, unit="step", desc="training", leave=True)


#: A training loss more than this many times its start counts as diverged ...
DIVERGENCE_FACTOR = 100.0
#: ... where its start is the smallest of the run's first this many losses (a blow-up within
#: them does not raise it). Cross-entropy over 10 classes starts near ln 10 = 2.3, so a loss
#: above about 230 is flagged: no run that learns gets there.
START_STEPS = 5


def _divergence(losses: list[float], first: int) -> tuple[int, str] | None:
    """The first step from ``first`` on whose loss is non-finite or over
    :data:`DIVERGENCE_FACTOR` times its start, with what happened; None if there is none."""
    early = [v for v in losses[:START_STEPS] if math.isfinite(v)]
    start = min(early) if early else 0.0  # a start <= 0 (a custom loss): NaN/inf only
    for i in range(first, len(losses)):
        if not math.isfinite(losses[i]):
            return i, f"the loss became {losses[i]} at step {i}"
        if start > 0 and losses[i] > DIVERGENCE_FACTOR * start:
            factor = f"{DIVERGENCE_FACTOR:g}x its start ({start:.3g})"
            return i, f"the loss reached {losses[i]:.3g} at step {i}, over {factor}"
    return None


def _check_divergence(history: History, row: dict[str, Any]) -> None:
    """Mark the run "diverged" (and warn once) at the first training loss that is NaN or
    infinite or more than :data:`DIVERGENCE_FACTOR` times its start (:data:`START_STEPS`)."""
    if history.status == "diverged":
        return
    found = _divergence(history.step_losses, len(history.step_losses) - row["steps"])
    if found is None:
        return
    bad, what = found
    history.status = "diverged"
    row["diverged_at_step"] = bad
    warnings.warn(
        f"Training diverged: {what} "
        f"(learning rate {history.step_lrs[bad]:g}). Every later result of this run is "
        "meaningless: lower the learning rate (or look at the schedule and the inputs), "
        "then train again.",
        RuntimeWarning,
        stacklevel=3,
    )


@dataclass
class _Epoch:
    """The open epoch: what its steps have added up so far (sums on the training device)."""

    number: int
    device: torch.device
    t0: float  # when it began, and the loop's data and diagnostics seconds by then
    data_s0: float
    diagnostics_s0: float
    losses: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    images: int = 0

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), dtype=_accumulator_dtype(self.device), device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)


class _Loop:
    """State of one :func:`train` call: the history, counters, phase clock, the open epoch."""

    def __init__(self, model, optimizer, scheduler, hooks, opts: TrainOptions):
        self.model, self.optimizer, self.scheduler, self.hooks = model, optimizer, scheduler, hooks
        self.opts = opts
        self.device = model_device(model) if opts.device is None else torch.device(opts.device)
        self.loss_fn = nn.CrossEntropyLoss() if opts.loss_fn is None else opts.loss_fn
        self.sum_weighted = getattr(self.loss_fn, "reduction", "mean") == "sum"
        self.backward_hooks = self._methods("backward")
        self.step_end_hooks = self._methods("on_step_end")
        self.totals = dict.fromkeys(_TIMING_KEYS, 0.0)
        self.step = self.images = 0
        self.epoch: _Epoch | None = None
        self.history = History(device=str(self.device))
        self.threads = ThreadPolicy(opts.threads, self.device)

    def now(self, sync: bool = False) -> float:
        """Host wall-clock seconds; waits for the device first when asked or when profiling."""
        if sync or self.opts.profile:
            synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def timed(self, phase: str, sync: bool = False):
        """Add the seconds the block takes to ``phase`` (a key of :data:`_TIMING_KEYS`)."""
        t0 = self.now(sync)
        try:
            yield
        finally:
            self.totals[phase] += self.now(sync) - t0

    def _methods(self, name: str) -> list:
        return [getattr(h, name) for h in self.hooks if callable(getattr(h, name, None))]

    def call_hooks(self, name: str, *args) -> None:
        methods = self._methods(name)
        if methods:
            with self.timed("diagnostics_s"):
                for method in methods:
                    method(*args)

    def _backward(self, x, y, logits, loss) -> None:
        if self.backward_hooks:
            with self.timed("diagnostics_s"):  # the first hook that returns True ends the round
                args = (self.step, self.model, x, y, logits, loss, self.loss_fn)
                if any(method(*args) for method in self.backward_hooks):
                    return
        loss.backward()

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: _Epoch) -> torch.Tensor:
        if self.opts.zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        self._backward(x, y, logits, loss)
        epoch.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self.optimizer.step()
        if self.scheduler is not None and self.opts.scheduler_step == "batch":
            self.scheduler.step()
        batch, loss = int(y.shape[0]), loss.detach()
        epoch.losses.append(loss)
        epoch.loss_sum += loss.to(epoch.loss_sum.dtype) * (1 if self.sum_weighted else batch)
        epoch.correct += (logits.detach().argmax(dim=1) == y).sum()
        epoch.images += batch
        self.images += batch
        self.step += 1
        return loss

    def run_epoch(self, number: int, loader: Iterable, bar) -> dict[str, Any]:
        """Train one pass over ``loader`` (or up to ``max_steps``); return the epoch's row."""
        self.model.train()
        totals = self.totals
        self.epoch = epoch = _Epoch(
            number, self.device, self.now(sync=True), totals["data_s"], totals["diagnostics_s"]
        )
        bar.set_description(f"epoch {number}")
        iterator, t_refresh, max_steps = iter(loader), time.perf_counter(), self.opts.max_steps
        while max_steps is None or self.step < max_steps:
            with self.timed("data_s"):
                batch = next(iterator, None)
                if batch is not None:
                    x, y = (t.to(self.device, non_blocking=True) for t in batch)
            if batch is None:
                break
            loss = self._train_step(x, y, epoch)
            if self.step_end_hooks:
                self.call_hooks("on_step_end", self.step - 1, float(loss.item()))
            bar.update(1)
            if not bar.disable and time.perf_counter() - t_refresh > 0.5:
                t_refresh = time.perf_counter()
                self._refresh_bar(bar, loss, epoch)
        if epoch.losses and not bar.disable:
            self._refresh_bar(bar, epoch.losses[-1], epoch)
        return self.close_epoch(complete=True)

    def _refresh_bar(self, bar, loss: torch.Tensor, epoch: _Epoch) -> None:
        elapsed = time.perf_counter() - epoch.t0
        rate = epoch.images / elapsed if elapsed > 0 else 0.0
        bar.set_postfix({"loss": f"{loss.item():.4f}", "img/s": f"{rate:,.0f}"}, refresh=False)

    def close_epoch(self, complete: bool) -> dict[str, Any] | None:
        """Add the open epoch's row (``partial`` when interrupted) to the history."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return None
        if complete and self.scheduler is not None and self.opts.scheduler_step == "epoch":
            self.scheduler.step()
        epoch_s = self.now(sync=True) - epoch.t0
        data_s = self.totals["data_s"] - epoch.data_s0
        diagnostics_s = self.totals["diagnostics_s"] - epoch.diagnostics_s0
        self.totals["compute_s"] += max(epoch_s - data_s - diagnostics_s, 0.0)
        losses = torch.stack(epoch.losses).tolist() if epoch.losses else []
        n, lrs = epoch.images, epoch.lrs
        row: dict[str, Any] = {
            "epoch": epoch.number, "steps": len(losses), "images": n,
            "lr": lrs[-1] if lrs else float(self.optimizer.param_groups[0]["lr"]),
            "lr_first": lrs[0] if lrs else None,
            "running_loss": float(epoch.loss_sum.item()) / n if n else math.nan,
            "running_accuracy": float(epoch.correct.item()) / n if n else math.nan,
            "epoch_s": epoch_s,
        }  # fmt: skip
        if not complete:
            row["partial"] = True
        threads = self.threads.epoch_end()
        if threads is not None:
            row["threads"] = threads
        self.history.epochs.append(row)
        self.history.step_losses.extend(losses)
        self.history.step_lrs.extend(lrs)
        return row

    def evaluate_splits(self, eval_loaders: Mapping[str, Iterable], row: dict[str, Any]) -> None:
        with self.timed("eval_s", sync=True):
            for split, loader in eval_loaders.items():
                result = evaluate(self.model, loader, loss_fn=self.loss_fn, device=self.device)
                row[f"{split}_loss"], row[f"{split}_accuracy"] = result["loss"], result["accuracy"]

    def finish(self, t_start: float) -> None:
        """Write the phase totals and throughput into the history's timings."""
        totals = self.totals
        totals["total_s"] = self.now(sync=True) - t_start
        train_s = totals["data_s"] + totals["compute_s"]
        self.history.timings = {
            **{k: float(totals[k]) for k in _TIMING_KEYS},
            "images": int(self.images),
            "images_per_s": self.images / train_s if train_s > 0 else 0.0,
        }  # fmt: skip
        self.history.steps = self.step
        self.history.threads = list(self.threads.used)
