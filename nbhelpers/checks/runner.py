"""Run every check that applies, as one table; and the checks of a :class:`RunConfig`.

- :func:`run_all_checks`: given whatever the learner has (model, loaders, datasets, loss,
  optimizer, scheduler, train step ...), run each check whose inputs are present and return a
  :class:`~nbhelpers.checks._core.CheckReport`.
- :func:`make_train_step`: the training step of :func:`nbhelpers.train.train` as a function
  ``train_step(model, optimizer, x, y)`` (optionally without ``zero_grad``, the handover's bug).
- :func:`build_check_inputs` / :func:`check_config`: build a configuration's model, optimizer,
  schedule, loaders and splits the way :func:`nbhelpers.experiment.run` does, and check them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ._core import (
    CheckReport,
    CheckResult,
    model_batch,
    not_applicable,
    preserved_rng,
    take_batches,
)
from .augmentation import check_augmentation, check_eval_augmentation, check_eval_determinism
from .capacity import check_overfit_one_batch
from .data_checks import (
    as_splits,
    check_image_layout,
    check_input_statistics,
    check_labels,
    check_split_overlap,
    check_split_sources,
)
from .loader import check_last_batch, check_shuffle
from .lr import check_learning_rate, check_lr_range, check_lr_schedule
from .training import (
    check_gradients,
    check_model_modes,
    check_optimizer_params,
    check_softmax_output,
    check_zero_grad,
)

__all__ = ["build_check_inputs", "check_config", "make_train_step", "run_all_checks"]

#: Every check :func:`run_all_checks` knows, in the order it runs them.
CHECK_NAMES = (
    "split_overlap",
    "split_sources",
    "labels",
    "input_statistics",
    "image_layout",
    "augmentation",
    "eval_augmentation",
    "eval_determinism",
    "shuffle",
    "last_batch",
    "optimizer_params",
    "zero_grad",
    "model_modes",
    "softmax_output",
    "gradients",
    "learning_rate",
    "lr_schedule",
    "lr_range",
    "overfit_one_batch",
)


def _safe(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - one broken check must not stop the others
        return CheckResult(
            name,
            None,
            f"could not run: {type(err).__name__}: {err}",
            "Look at the inputs passed for this check.",
            error=f"{type(err).__name__}: {err}",
        )
    return result


def _split_sources(datasets, train_loader, eval_loaders) -> dict[str, Any]:
    """Splits to compare: the datasets if given, else the loaders (eval 'train' left out)."""
    if datasets is not None:
        return as_splits(datasets)
    splits = {}
    if train_loader is not None:
        splits["train"] = train_loader
    for name, loader in (eval_loaders or {}).items():
        if name != "train" and loader is not train_loader:
            splits[name] = loader
    return splits


def _input_sources(train_loader, eval_loaders) -> dict[str, Any]:
    out = {}
    if train_loader is not None:
        out["train"] = train_loader
    for name, loader in (eval_loaders or {}).items():
        if loader is train_loader:
            continue
        out[f"{name} (eval)" if name in out else name] = loader
    return out


def run_all_checks(
    model: nn.Module | None = None,
    train_loader: Iterable | None = None,
    eval_loaders: Mapping[str, Iterable] | None = None,
    datasets: Any = None,
    loss_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    train_step: Callable | None = None,
    planned_steps: int | None = None,
    num_classes: int = 10,
    *,
    evaluate_fn: Callable | None = None,
    scheduler_step: str = "batch",
    steps_per_epoch: int | None = None,
    warmup: bool | None = None,
    lr_range: bool = True,
    lr_range_steps: int = 60,
    overfit: bool = True,
    overfit_steps: int = 100,
    max_batch_size: int | None = 64,
    skip: Iterable[str] = (),
    show: bool = True,
    progress: bool = True,
) -> CheckReport:
    """Run every check whose inputs are given; return one table.

    Nothing of the learner's is changed: models and optimizers are deep-copied before use,
    schedulers simulated on copies, loaders' epoch counters and all random states restored.
    A check that cannot run on the given objects shows as ``ERROR`` with the reason; the
    others still run.

    Args:
        model: the model (``nn.Module``).
        train_loader: the training loader (iterable of ``(x, y)``).
        eval_loaders: ``{name: loader}`` of the evaluation splits.
        datasets: ``{name: split}`` or a :class:`nbhelpers.data.DataBundle` (ImageSets,
            Datasets, ...); default: the loaders' data.
        loss_fn: the loss (default ``nn.CrossEntropyLoss()``).
        optimizer, scheduler: the learner's optimizer and LR scheduler.
        train_step: ``train_step(model, optimizer, x, y)``, one optimisation step.
        planned_steps: optimizer steps of the planned run (batches per epoch x epochs).
        num_classes: number of classes (10 digits).
        evaluate_fn: ``evaluate_fn(model, loader)``, the learner's evaluation.
        scheduler_step: how the learner steps the scheduler, ``"batch"`` or ``"epoch"``.
        steps_per_epoch: batches per epoch (default ``len(train_loader)``).
        warmup: growth of the learning rate intended (None: infer).
        lr_range: run the LR range test (``lr_range_steps`` steps, a few seconds on a CPU).
        overfit: run "overfit one batch" (up to ``overfit_steps`` steps).
        max_batch_size: examples per batch used by the LR range test (64: a few seconds on a
            CPU; None: the loader's whole batches).
        skip: names of checks not to run (see ``CHECK_NAMES``).
        show: make figures.
        progress: show a progress bar.

    Returns:
        A :class:`CheckReport` (``print(report)`` for text; displays as a table in notebooks).

    Raises:
        ValueError: an unknown name in ``skip``.
    """
    skip = set(skip)
    unknown = skip - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check names in skip: {sorted(unknown)}; valid: {CHECK_NAMES}")
    eval_loaders = dict(eval_loaders or {})
    if steps_per_epoch is None and train_loader is not None:
        try:
            steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
        except TypeError:
            steps_per_epoch = None
    batch, batch_error = _training_batch(train_loader, datasets)
    x, y = (batch[0][:32], batch[1][:32]) if batch is not None else (None, None)
    splits = _split_sources(datasets, train_loader, eval_loaders)
    first_eval = next((v for k, v in eval_loaders.items() if k != "train"), None)
    plan: list[tuple[str, Callable[[], CheckResult]]] = []

    def add(name: str, ready: bool, fn: Callable[[], CheckResult]) -> None:
        if name not in skip and ready:
            plan.append((name, fn))

    add("split_overlap", len(splits) >= 2, lambda: check_split_overlap(splits))
    add("split_sources", len(splits) >= 2, lambda: check_split_sources(splits))
    add("labels", bool(splits), lambda: check_labels(splits, num_classes, model=model))
    inputs = _input_sources(train_loader, eval_loaders)
    add("input_statistics", bool(inputs), lambda: check_input_statistics(inputs))
    layout_source = train_loader if train_loader is not None else splits.get("train")
    add(
        "image_layout",
        layout_source is not None,
        lambda: check_image_layout(layout_source, model=model),
    )
    aug_source = train_loader if train_loader is not None else splits.get("train")
    add("augmentation", aug_source is not None, lambda: check_augmentation(aug_source, show=show))
    add("eval_augmentation", bool(eval_loaders), lambda: check_eval_augmentation(eval_loaders))
    add(
        "eval_determinism",
        model is not None and bool(eval_loaders),
        lambda: check_eval_determinism(
            model, eval_loaders, evaluate_fn=evaluate_fn, loss_fn=loss_fn
        ),
    )
    add(
        "shuffle",
        train_loader is not None,
        lambda: check_shuffle(train_loader, num_classes=num_classes, show=show),
    )
    add("last_batch", train_loader is not None, lambda: check_last_batch(train_loader, model))
    has_model_batch = model is not None and x is not None
    add(
        "optimizer_params",
        model is not None and optimizer is not None,
        lambda: check_optimizer_params(model, optimizer),
    )
    add("zero_grad", has_model_batch, lambda: check_zero_grad(model, optimizer, train_step, x, y))
    add(
        "model_modes",
        model is not None and (train_step is not None or evaluate_fn is not None),
        lambda: check_model_modes(
            model,
            train_step=train_step,
            optimizer=optimizer,
            x=x,
            y=y,
            evaluate_fn=evaluate_fn,
            eval_loader=first_eval,
        ),
    )
    add("softmax_output", has_model_batch, lambda: check_softmax_output(model, x, loss_fn))
    add("gradients", has_model_batch, lambda: check_gradients(model, x, y, loss_fn))
    add("learning_rate", optimizer is not None, lambda: check_learning_rate(optimizer))
    add(
        "lr_schedule",
        optimizer is not None or scheduler is not None,
        lambda: _schedule(
            optimizer, scheduler, planned_steps, scheduler_step, steps_per_epoch, warmup, show
        ),
    )
    add(
        "lr_range",
        lr_range and model is not None and train_loader is not None,
        lambda: check_lr_range(
            model,
            train_loader,
            loss_fn,
            optimizer,
            steps=lr_range_steps,
            max_batch_size=max_batch_size,
            show=show,
        ),
    )
    add(
        "overfit_one_batch",
        overfit and has_model_batch,
        lambda: check_overfit_one_batch(model, x, y, loss_fn, steps=overfit_steps, show=show),
    )
    results = _run_plan(plan, progress)
    if batch_error is not None:
        results.insert(
            0,
            CheckResult(
                "training_batch",
                None,
                f"could not take a batch for the model checks: {batch_error}",
                "The training loader must yield (x, y) pairs.",
                error=batch_error,
            ),
        )
    return CheckReport(results)


def _run_plan(plan, progress: bool) -> list[CheckResult]:
    results = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="checks", leave=False)
    try:
        for name, fn in plan:
            if bar is not None:
                bar.set_postfix_str(name)
            results.append(_safe(name, fn))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def _training_batch(train_loader, datasets):
    """``((x, y), None)``, or ``(None, error text)`` when no batch could be taken."""
    try:
        if train_loader is not None:
            return take_batches(train_loader, 1)[0], None
        if datasets is not None:
            splits = as_splits(datasets)
            if "train" in splits:
                return model_batch(splits["train"], 32), None
    except Exception as err:  # noqa: BLE001 - reported as an ERROR row
        return None, f"{type(err).__name__}: {err}"
    return None, None


def _schedule(optimizer, scheduler, planned_steps, scheduler_step, steps_per_epoch, warmup, show):
    if optimizer is None:
        optimizer = scheduler.optimizer
    if scheduler is not None and not planned_steps:
        return not_applicable(
            "lr_schedule",
            "a scheduler but no planned_steps.",
            "Pass planned_steps = batches per epoch x epochs.",
        )
    return check_lr_schedule(
        optimizer,
        scheduler,
        planned_steps or 1,
        scheduler_step=scheduler_step,
        steps_per_epoch=steps_per_epoch,
        warmup=warmup,
        show=show,
    )


def make_train_step(loss_fn: Callable | None = None, *, zero_grad: bool = True) -> Callable:
    """One step of :func:`nbhelpers.train.train` as ``train_step(model, optimizer, x, y)``.

    ``optimizer.zero_grad(set_to_none=True)`` (unless ``zero_grad=False``, the handover's bug),
    forward, loss, ``loss.backward()``, ``optimizer.step()``. Returns the loss (a tensor).
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()

    def train_step(model, optimizer, x, y):
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def build_check_inputs(config: Any, *, data: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Build what :func:`run_all_checks` needs for a :class:`nbhelpers.experiment.RunConfig`.

    Mirrors :func:`nbhelpers.experiment.run`: the data (``data`` or the config's), evaluation
    splits (with ``eval_from_train`` the train split halved, as in the handover), the model,
    optimizer, schedule, training and evaluation loaders, and a train step honouring
    ``config.zero_grad``. Random states are restored afterwards.

    Args:
        config: a ``RunConfig``.
        data: a ready :class:`nbhelpers.data.DataBundle` (default: loaded for the config).
        device: where model and loaders live (the checks are meant for a CPU).

    Returns:
        Keyword arguments for :func:`run_all_checks`.

    Raises:
        TypeError: ``config`` is not a RunConfig.
    """
    from nbhelpers import experiment as ex

    if not isinstance(config, ex.RunConfig):
        raise TypeError(f"expected a RunConfig, got {type(config).__name__}.")
    device = torch.device(device)
    with preserved_rng():
        bundle = data if data is not None else ex.get_data(config)
        parts = ex.build_run(config, bundle, device)
        sets, model, optimizer = parts.eval_sets, parts.model, parts.optimizer
        train_loader, scheduler, eval_loaders = (
            parts.train_loader,
            parts.scheduler,
            parts.eval_loaders,
        )
    planned = len(train_loader) * config.epochs
    if config.max_steps is not None:
        planned = min(planned, config.max_steps)
    loss_fn = nn.CrossEntropyLoss()
    return {
        "model": model,
        "train_loader": train_loader,
        "eval_loaders": eval_loaders,
        "datasets": {"train": sets["train"], "valid": sets["valid"], "test": sets["test"]},
        "loss_fn": loss_fn,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "train_step": make_train_step(loss_fn, zero_grad=config.zero_grad),
        "planned_steps": max(planned, 1),
        "scheduler_step": config.schedule_step,
        "steps_per_epoch": len(train_loader),
    }


def check_config(
    config: Any, *, data: Any = None, device: str = "cpu", **kwargs: Any
) -> CheckReport:
    """Run :func:`run_all_checks` on the objects a ``RunConfig`` builds (see
    :func:`build_check_inputs`); ``kwargs`` go to :func:`run_all_checks`."""
    return run_all_checks(**build_check_inputs(config, data=data, device=device), **kwargs)
