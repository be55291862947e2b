"""The checks as one table, and :func:`run_all_checks`, which runs the rows whose inputs are given.

- :class:`CheckInputs`: what the learner has (model, loaders, datasets, loss, optimizer,
  scheduler, train step ...) and the checks' options, in one frozen object; its properties
  derive what several checks share (the splits, the training source).
- :class:`Check` and ``CHECKS``: one row per check: its name, the inputs it needs, and how it
  runs on a :class:`CheckInputs`. ``CHECK_NAMES`` is the table's names, in order. Adding a
  check is one row (:func:`register`).
- :func:`make_train_step`: the training step of :func:`nbhelpers.train.train` as a function
  ``train_step(model, optimizer, x, y)`` (optionally without ``zero_grad``, the handover's bug).
- :func:`build_check_inputs` / :func:`check_config`: build a configuration's model, optimizer,
  schedule, loaders and splits the way :func:`nbhelpers.experiment.run` does, and check them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nbhelpers.state import preserved_rng
from nbhelpers.validate import invalid, one_of, positive_int

from .access import as_splits, model_batch
from .augmentation import check_augmentation, check_eval_augmentation, check_eval_determinism
from .capacity import check_overfit_one_batch
from .data_checks import (
    check_image_layout,
    check_input_statistics,
    check_labels,
    check_split_overlap,
)
from .loader import check_last_batch, check_shuffle
from .lr import check_learning_rate, check_lr_range, check_lr_schedule
from .results import CheckReport, CheckResult
from .splits import check_shared_transform, check_split_seed, check_split_sources
from .training import (
    check_gradients,
    check_model_modes,
    check_optimizer_params,
    check_softmax_output,
    check_zero_grad,
)


@dataclass(frozen=True, eq=False)
class CheckInputs:
    """Everything the checks look at, given once (every field is optional).

    Attributes:
        model: the model (``nn.Module``).
        train_loader: the training loader (iterable of ``(x, y)``).
        eval_loaders: ``{name: loader}`` of the evaluation splits.
        datasets: ``{name: split}`` or a :class:`nbhelpers.data.DataBundle` (ImageSets,
            Datasets, ...); default: the loaders' data.
        loss_fn: the loss (default ``nn.CrossEntropyLoss()``).
        optimizer, scheduler: the learner's optimizer and LR scheduler.
        train_step: ``train_step(model, optimizer, x, y)``, one optimisation step.
        evaluate_fn: ``evaluate_fn(model, loader)``, the learner's evaluation.
        x, y: one training batch for the model checks (default: 32 examples of the training
            loader, or of ``datasets["train"]``).
        planned_steps: optimizer steps of the planned run (batches per epoch x epochs).
        steps_per_epoch: batches per epoch (default ``len(train_loader)``).
        scheduler_step: how the learner steps the scheduler, ``"batch"`` or ``"epoch"``.
        warmup: growth of the learning rate intended (None: infer).
        num_classes: number of classes (10 digits).
        lr_range_steps: steps of the LR range test (a few seconds on a CPU).
        overfit_steps: the most steps of "overfit one batch" (it stops when done or stalled).
        max_batch_size: examples per batch used by the LR range test (64: a few seconds on a
            CPU; None: the loader's whole batches).
        show: make figures.

    Raises:
        ValueError: an unknown ``scheduler_step``; a count that is not a positive integer.
    """

    model: nn.Module | None = None
    train_loader: Iterable | None = None
    eval_loaders: Mapping[str, Iterable] | None = None
    datasets: Any = None
    loss_fn: Callable | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    train_step: Callable | None = None
    evaluate_fn: Callable | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    planned_steps: int | None = None
    steps_per_epoch: int | None = None
    scheduler_step: str = "batch"
    warmup: bool | None = None
    num_classes: int = 10
    lr_range_steps: int = 60
    overfit_steps: int = 300
    max_batch_size: int | None = 64
    show: bool = True

    def __post_init__(self) -> None:
        one_of("scheduler_step", self.scheduler_step, ("batch", "epoch"))
        for name in ("num_classes", "lr_range_steps", "overfit_steps"):
            positive_int(name, getattr(self, name))
        for name in ("planned_steps", "steps_per_epoch", "max_batch_size"):
            positive_int(name, getattr(self, name), allow_none=True)
        object.__setattr__(self, "eval_loaders", dict(self.eval_loaders or {}) or None)

    @cached_property
    def splits(self) -> dict[str, Any] | None:
        """The splits: the datasets if given, else the loaders (an evaluation loader named
        ``"train"``, or the training loader evaluated, left out)."""
        if self.datasets is not None:
            return as_splits(self.datasets) or None
        named = {"train": self.train_loader} if self.train_loader is not None else {}
        for name, loader in (self.eval_loaders or {}).items():
            if name != "train" and loader is not self.train_loader:
                named[name] = loader
        return named or None

    @property
    def splits_to_compare(self) -> dict[str, Any] | None:
        """:attr:`splits` when there are at least two."""
        return self.splits if self.splits and len(self.splits) >= 2 else None

    @cached_property
    def inputs(self) -> dict[str, Any] | None:
        """What each loader feeds the model: ``{"train": train_loader, name: eval loader}``."""
        named = {"train": self.train_loader} if self.train_loader is not None else {}
        for name, loader in (self.eval_loaders or {}).items():
            if loader is not self.train_loader:
                named[f"{name} (eval)" if name in named else name] = loader
        return named or None

    @property
    def train_data(self) -> Any:
        """The training loader, else the training split."""
        return (
            self.train_loader if self.train_loader is not None else (self.splits or {}).get("train")
        )

    @property
    def eval_loader(self) -> Any:
        """The first evaluation loader not named ``"train"``."""
        return next((v for k, v in (self.eval_loaders or {}).items() if k != "train"), None)

    @property
    def epoch_steps(self) -> int | None:
        """``steps_per_epoch``, else ``len(train_loader)`` (None when unknown)."""
        try:
            return self.steps_per_epoch or len(self.train_loader)  # type: ignore[arg-type]
        except TypeError:
            return None

    def with_batch(self) -> tuple[CheckInputs, str | None]:
        """These inputs with ``x, y`` (32 training examples) filled in when missing, and the
        error text when none could be taken."""
        if self.x is not None or self.train_data is None:
            return self, None
        try:
            x, y = model_batch(self.train_data, 32)
        except Exception as err:  # noqa: BLE001 - reported as an ERROR row
            return self, f"{type(err).__name__}: {err}"
        return dataclasses.replace(self, x=x, y=y), None


@dataclass(frozen=True, eq=False)
class Check:
    """One row of the table of checks.

    Attributes:
        name: the check's name (the name of its :class:`CheckResult`).
        needs: the names of the :class:`CheckInputs` fields or properties that must be given
            (not None) for the check to run, separated by spaces; ``"a|b"`` means either.
        run: ``run(inputs) -> CheckResult``.

    Raises:
        ValueError: a name in ``needs`` that :class:`CheckInputs` does not have.
    """

    name: str
    needs: str
    run: Callable[[CheckInputs], CheckResult]

    def __post_init__(self) -> None:
        for need in self.needs.split():
            if not all(hasattr(CheckInputs, n) for n in need.split("|")):
                raise invalid("needs", need, "names of CheckInputs fields or properties")

    def ready(self, inputs: CheckInputs) -> bool:
        """True when every input the check needs is given."""
        needs = [need.split("|") for need in self.needs.split()]
        return all(any(getattr(inputs, n) is not None for n in need) for need in needs)


#: The table: every check :func:`run_all_checks` knows, in the order it runs them.
CHECKS: dict[str, Check] = {}
#: The names of the checks, in order (a live view of ``CHECKS``).
CHECK_NAMES = CHECKS.keys()


def register(check: Check) -> Check:
    """Add ``check`` to the table (last, or in place of the row with its name); return it."""
    CHECKS[check.name] = check
    return check


for _row in [
    Check("split_overlap", "splits_to_compare", lambda i: check_split_overlap(i.splits)),
    Check("split_sources", "splits_to_compare", lambda i: check_split_sources(i.splits)),
    Check("split_seed", "splits", lambda i: check_split_seed(i.splits)),
    Check("shared_transform", "splits_to_compare", lambda i: check_shared_transform(i.splits)),
    Check("labels", "splits", lambda i: check_labels(i.splits, i.num_classes, model=i.model)),
    Check("input_statistics", "inputs", lambda i: check_input_statistics(i.inputs)),
    Check("image_layout", "train_data", lambda i: check_image_layout(i.train_data, model=i.model)),
    Check("augmentation", "train_data", lambda i: check_augmentation(i.train_data, show=i.show)),
    Check("eval_augmentation", "eval_loaders", lambda i: check_eval_augmentation(i.eval_loaders)),
    Check(
        "eval_determinism",
        "model eval_loaders",
        lambda i: check_eval_determinism(
            i.model, i.eval_loaders, evaluate_fn=i.evaluate_fn, loss_fn=i.loss_fn, x=i.x, y=i.y
        ),
    ),
    Check(
        "shuffle",
        "train_loader",
        lambda i: check_shuffle(i.train_loader, num_classes=i.num_classes, show=i.show),
    ),
    Check("last_batch", "train_loader", lambda i: check_last_batch(i.train_loader, i.model)),
    Check(
        "optimizer_params",
        "model optimizer",
        lambda i: check_optimizer_params(i.model, i.optimizer),
    ),
    Check(
        "zero_grad",
        "model x",
        lambda i: check_zero_grad(i.model, i.optimizer, i.train_step, i.x, i.y),
    ),
    Check(
        "model_modes",
        "model train_step|evaluate_fn",
        lambda i: check_model_modes(
            i.model,
            train_step=i.train_step,
            optimizer=i.optimizer,
            x=i.x,
            y=i.y,
            evaluate_fn=i.evaluate_fn,
            eval_loader=i.eval_loader,
        ),
    ),
    Check("softmax_output", "model x", lambda i: check_softmax_output(i.model, i.x, i.loss_fn)),
    Check("gradients", "model x", lambda i: check_gradients(i.model, i.x, i.y, i.loss_fn)),
    Check(
        "learning_rate",
        "optimizer",
        lambda i: check_learning_rate(
            i.optimizer,
            i.scheduler,
            i.planned_steps,
            scheduler_step=i.scheduler_step,
            steps_per_epoch=i.epoch_steps,
        ),
    ),
    Check(
        "lr_schedule",
        "optimizer|scheduler",
        lambda i: check_lr_schedule(
            i.optimizer or i.scheduler.optimizer,
            i.scheduler,
            i.planned_steps,
            scheduler_step=i.scheduler_step,
            steps_per_epoch=i.epoch_steps,
            warmup=i.warmup,
            show=i.show,
        ),
    ),
    Check(
        "lr_range",
        "model train_loader",
        lambda i: check_lr_range(
            i.model,
            i.train_loader,
            i.loss_fn,
            i.optimizer,
            steps=i.lr_range_steps,
            max_batch_size=i.max_batch_size,
            show=i.show,
        ),
    ),
    Check(
        "overfit_one_batch",
        "model x",
        lambda i: check_overfit_one_batch(
            i.model, i.x, i.y, i.loss_fn, steps=i.overfit_steps, show=i.show
        ),
    ),
]:
    register(_row)


def _as_list(names: Iterable[str] | str) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _selected(only: Iterable[str] | None, skip: Iterable[str]) -> list[str]:
    """The names of the rows to run, in table order. Raises ValueError for an unknown name."""
    only = None if only is None else _as_list(only)
    skip = _as_list(skip)
    for what, names in (("only", only or []), ("skip", skip)):
        unknown = sorted(set(names) - set(CHECKS))
        if unknown:
            raise invalid(what, unknown, "names of checks: " + ", ".join(CHECKS))
    return [name for name in CHECKS if (only is None or name in only) and name not in skip]


def _run(check: Check, inputs: CheckInputs) -> CheckResult:
    """Run one row; an exception becomes an ``ERROR`` result (the other checks still run)."""
    try:
        return check.run(inputs)
    except Exception as err:  # noqa: BLE001 - one broken check must not stop the others
        error = f"{type(err).__name__}: {err}"
        why = f"could not run: {error}"
        return CheckResult(
            check.name, None, why, "Look at the inputs passed for this check.", error=error
        )


def run_all_checks(
    model: nn.Module | None = None,
    train_loader: Iterable | None = None,
    eval_loaders: Mapping[str, Iterable] | None = None,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    progress: bool = True,
    **inputs: Any,
) -> CheckReport:
    """Run every check of the table whose inputs are given; return one table of results.

    Nothing of the learner's is changed: models and optimizers are deep-copied before use,
    schedulers simulated on copies, loaders' epoch counters and all random states restored.
    A check that cannot run on the given objects shows as ``ERROR`` with the reason; the
    others still run.

    Args:
        model, train_loader, eval_loaders: the model, the training loader and
            ``{name: loader}`` of the evaluation splits.
        only: run only these checks (names from ``CHECK_NAMES``; default: all).
        skip: names of checks not to run.
        progress: show a progress bar.
        **inputs: the other fields of :class:`CheckInputs` (``datasets``, ``loss_fn``,
            ``optimizer``, ``scheduler``, ``train_step``, ``planned_steps``, ``show`` ...).

    Returns:
        A :class:`CheckReport` (``print(report)`` for text; displays as a table in notebooks).

    Raises:
        ValueError: an unknown name in ``only`` or ``skip``; a bad :class:`CheckInputs` value.
        TypeError: a keyword that is not a :class:`CheckInputs` field.
    """
    names = _selected(only, skip)
    given, batch_error = CheckInputs(model, train_loader, eval_loaders, **inputs).with_batch()
    rows = [CHECKS[name] for name in names if CHECKS[name].ready(given)]
    results = []
    with tqdm(total=len(rows), desc="checks", leave=False, disable=not progress) as bar:
        for row in rows:
            bar.set_postfix_str(row.name)
            results.append(_run(row, given))
            bar.update(1)
    if batch_error is not None:
        why = f"could not take a batch for the model checks: {batch_error}"
        hint = "The training loader must yield (x, y) pairs."
        results.insert(0, CheckResult("training_batch", None, why, hint, error=batch_error))
    return CheckReport(results)


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
    with preserved_rng():
        bundle = data if data is not None else ex.get_data(config)
        parts = ex.build_run(config, bundle, torch.device(device))
    steps_per_epoch = len(parts.train_loader)
    planned = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        planned = min(planned, config.max_steps)
    loss_fn = nn.CrossEntropyLoss()
    return {
        "model": parts.model,
        "train_loader": parts.train_loader,
        "eval_loaders": parts.eval_loaders,
        "datasets": {name: parts.eval_sets[name] for name in ("train", "valid", "test")},
        "loss_fn": loss_fn,
        "optimizer": parts.optimizer,
        "scheduler": parts.scheduler,
        "train_step": make_train_step(loss_fn, zero_grad=config.zero_grad),
        "planned_steps": max(planned, 1),
        "scheduler_step": config.schedule_step,
        "steps_per_epoch": steps_per_epoch,
    }


def check_config(
    config: Any, *, data: Any = None, device: str = "cpu", **kwargs: Any
) -> CheckReport:
    """Run :func:`run_all_checks` on the objects a ``RunConfig`` builds (see
    :func:`build_check_inputs`); ``kwargs`` go to :func:`run_all_checks`."""
    return run_all_checks(**build_check_inputs(config, data=data, device=device), **kwargs)
