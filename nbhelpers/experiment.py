"""Experiments: a run configuration, ``run(config)``, and the two reference configurations.

A :class:`RunConfig` names everything that decides a training run: data, the
handover's faults (each one a switch), model, optimizer, schedule, batch size,
epochs, evaluation and seed. :func:`run` builds it all, trains with
:func:`nbhelpers.train.train`, and saves a record under ``runs/``; the same
configuration run again is loaded from there instead of retrained (pass
``cache=False`` to retrain).

:func:`handover_config` is the colleague's run with all its faults (tutorial,
"Bugs": no ``zero_grad``, train data loaded again as valid/test, rotation
augmentation, a growing exponential schedule, a too-small learning rate, Tanh);
:func:`reference_fix_config` is the tutorial's fixed run (to-tensor only, test
split for evaluation, ``zero_grad``, no schedule, Adam lr 2e-3, ReLU then BatchNorm).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nbhelpers import data as data_mod
from nbhelpers import env
from nbhelpers.budget import Budget, resolve_budget
from nbhelpers.models import (
    ACTIVATIONS,
    GROUPS,
    INITS,
    NORMS,
    build_cnn,
    check_group_norm,
    count_parameters,
)
from nbhelpers.records import (
    RunRecord,
    config_hash,
    find_cached,
    save_record,
)
from nbhelpers.train import History, train

__all__ = [
    "AUGMENTATIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "RandomRotationBatch",
    "RunConfig",
    "RunRecord",
    "build_optimizer",
    "build_scheduler",
    "clear_data_cache",
    "compare_table",
    "describe_config",
    "get_data",
    "handover_config",
    "reference_fix_config",
    "run",
]

AUGMENTATIONS = ("none", "rotate180")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "exponential", "cosine")
SCHEDULE_STEPS = ("batch", "epoch")
EVAL_SPLITS = ("train", "valid", "test")
_DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# --------------------------------------------------------------------------- config
def _bad(field_name: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"RunConfig.{field_name}={value!r} is invalid; valid: {valid}")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise _bad(name, value, f"an int >= {minimum}{extra}")


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *, open_low=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value < high
    if not ok:
        bracket = "(" if open_low else "["
        raise _bad(name, value, f"a finite number in {bracket}{low}, {high})")


def _check_name(name: str, value: Any, valid: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise _bad(name, value, ", ".join(repr(v) for v in valid))


@dataclass
class RunConfig:
    """Everything that decides one training run.

    Defaults are the tutorial's reference fix on the offline-or-real ``"auto"`` source
    at the handover's batch size (256) and epoch count (10); :func:`handover_config`
    and :func:`reference_fix_config` fill the sizes from a compute budget.

    Attributes:
        name: the run's name (file name of its record; part of the cache key).
        source: data source, "svhn", "synthetic" or "auto" (see :func:`nbhelpers.data.load_data`).
        n_train, n_valid, n_test: split sizes (None: the source's default).
        data_seed: seed of the data split (and of the stand-in generator).
        eval_from_train: the handover's bug: evaluation data is the train split again,
            randomly halved into "valid" and "test", so every split holds training images.
        augmentation: "none" or "rotate180" (the handover's ``RandomRotation(180)``; not
            label-preserving for digits: 6 and 9).
        loader: "tensor" (device-resident :class:`nbhelpers.data.TensorLoader`) or "pil"
            (the handover's per-sample PIL DataLoader).
        num_workers: DataLoader worker processes for ``loader="pil"``.
        activation: one of "tanh", "relu", "gelu", "silu", "elu".
        norm: "none", "batch" or "group".
        width: channels of the first convolution block (32 in the handover).
        init: weight initialisation, "default" (PyTorch's, as in the handover) or "kaiming"
            (He et al., 2015; see :func:`nbhelpers.models.build_cnn`).
        optimizer: "adam", "adamw" or "sgd".
        lr: learning rate (> 0).
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 weight decay (>= 0).
        schedule: "none", "exponential" (``lr * gamma**t``) or "cosine" (to 0 at the end).
        gamma: factor of the exponential schedule (the handover's 1.001 per batch makes
            the learning rate grow: 1.001**2870 is about 17.6 after 10 SVHN epochs).
        schedule_step: "batch" (t counts optimizer steps) or "epoch" (t counts epochs).
        zero_grad: reset gradients before every step (False is the handover's bug).
        batch_size, epochs: training batch size and epochs.
        eval_every: evaluate every this many epochs and after the last one (0: never).
        eval_splits: which of "train", "valid", "test" to evaluate.
        eval_batch_size: batch size of evaluation (does not change the result).
        seed: seed of the model's initialisation, shuffling and augmentation.
        device: "auto" / None (pick the fastest), "cpu", "cuda", "cuda:N" or "mps".
        max_steps: stop after this many optimizer steps (None: no limit).

    Raises:
        ValueError: on construction, for any value outside its valid range or set, naming
            the field, the value and what is valid.
    """

    name: str = "run"
    source: str = "auto"
    n_train: int | None = None
    n_valid: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    eval_from_train: bool = False
    augmentation: str = "none"
    loader: str = "tensor"
    num_workers: int = 0
    activation: str = "relu"
    norm: str = "batch"
    width: int = 32
    init: str = "default"
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"
    gamma: float = 1.0
    schedule_step: str = "batch"
    zero_grad: bool = True
    batch_size: int = 256
    epochs: int = 10
    eval_every: int = 1
    eval_splits: tuple[str, ...] = ("train", "valid", "test")
    eval_batch_size: int = 1024
    seed: int = 0
    device: str | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.eval_splits, str):
            self.eval_splits = (self.eval_splits,)
        if isinstance(self.eval_splits, list):
            self.eval_splits = tuple(self.eval_splits)
        self.validate()

    def validate(self) -> RunConfig:
        """Check every field; return self. Raises ValueError naming the bad field and value."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise _bad("name", self.name, "a non-empty string")
        _check_name("source", self.source, data_mod.SOURCES)
        for size in ("n_train", "n_valid", "n_test"):
            _check_int(size, getattr(self, size), 1, allow_none=True)
        _check_int("data_seed", self.data_seed, 0)
        _check_int("seed", self.seed, 0)
        for flag in ("eval_from_train", "zero_grad"):
            if not isinstance(getattr(self, flag), bool):
                raise _bad(flag, getattr(self, flag), "True or False")
        _check_name("augmentation", self.augmentation, AUGMENTATIONS)
        _check_name("loader", self.loader, data_mod.LOADER_KINDS)
        _check_int("num_workers", self.num_workers, 0)
        _check_name("activation", self.activation, tuple(ACTIVATIONS))
        _check_name("norm", self.norm, NORMS)
        _check_int("width", self.width, 1)
        _check_name("init", self.init, INITS)
        _check_name("optimizer", self.optimizer, OPTIMIZERS)
        _check_float("lr", self.lr, 0.0)
        _check_float("momentum", self.momentum, 0.0, 1.0, open_low=False)
        _check_float("weight_decay", self.weight_decay, 0.0, open_low=False)
        _check_name("schedule", self.schedule, SCHEDULES)
        _check_float("gamma", self.gamma, 0.0)
        _check_name("schedule_step", self.schedule_step, SCHEDULE_STEPS)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 0)
        _check_int("eval_every", self.eval_every, 0)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("max_steps", self.max_steps, 0, allow_none=True)
        if (
            not isinstance(self.eval_splits, tuple)
            or any(s not in EVAL_SPLITS for s in self.eval_splits)
            or len(set(self.eval_splits)) != len(self.eval_splits)
        ):
            raise _bad("eval_splits", self.eval_splits, f"distinct names from {EVAL_SPLITS}")
        if self.eval_every and not self.eval_splits:
            raise _bad("eval_splits", self.eval_splits, "at least one split while eval_every > 0")
        if self.device is not None and not (
            isinstance(self.device, str) and _DEVICE_PATTERN.fullmatch(self.device)
        ):
            raise _bad("device", self.device, "None, 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
        if self.norm == "group":
            try:
                check_group_norm(self.width, GROUPS)
            except ValueError as err:
                raise ValueError(f"width={self.width} does not suit norm='group': {err}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["eval_splits"] = list(self.eval_splits)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Rebuild a config from :meth:`to_dict` output (e.g. ``record.config``).

        Raises:
            ValueError: unknown field names (listed) or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated), e.g. ``cfg.replace(lr=1e-3)``."""
        return dataclasses.replace(self, **changes)


def _budget(budget: Budget | str | None, device: Any) -> Budget:
    if budget is None:  # the automatic choice depends on the device
        device = env.pick_device(None if device in (None, "auto") else device)
    return resolve_budget(budget, device)


def _config_at_budget(
    budget: Budget | str | None, source: str, fields: dict[str, Any], changes: dict[str, Any]
) -> RunConfig:
    """A RunConfig of ``fields`` sized by ``budget`` (data sizes, batch size, epochs), then ``changes``."""
    b = _budget(budget, changes.get("device"))
    sizes = dict(n_train=b.n_train, n_valid=b.n_valid, n_test=b.n_test)
    steps = dict(batch_size=b.batch_size, epochs=b.epochs)
    return RunConfig(**{"source": source, **sizes, **fields, **steps, **changes})


def handover_config(
    budget: Budget | str | None = None, *, source: str = "auto", **changes: Any
) -> RunConfig:
    """The colleague's run as handed over, with all its faults, at a compute budget.

    Faults, each a config field: ``eval_from_train=True`` (valid/test are the train
    split again), ``augmentation="rotate180"``, ``zero_grad=False``, ``lr=1e-5`` with
    Adam, ``schedule="exponential"``, ``gamma=1.001`` stepped every batch, Tanh and no
    normalisation. The loader is the handover's per-sample PIL pipeline ("pil"), and
    all three splits are evaluated after every epoch, as in the original.

    Args:
        budget: a :class:`nbhelpers.budget.Budget` or its name ("tiny", "quick", "full");
            None picks "full" on a GPU and "quick" otherwise. Sizes, epochs and batch size
            come from it.
        source: data source ("auto", "svhn", "synthetic").
        **changes: any other :class:`RunConfig` field to override.

    Raises:
        ValueError: unknown budget name or invalid field values.
    """
    fields = dict(
        name="handover",
        eval_from_train=True,
        augmentation="rotate180",
        loader="pil",
        activation="tanh",
        norm="none",
        optimizer="adam",
        lr=1e-5,
        schedule="exponential",
        gamma=1.001,
        schedule_step="batch",
        zero_grad=False,
    )
    return _config_at_budget(budget, source, fields, changes)


def reference_fix_config(
    budget: Budget | str | None = None, *, source: str = "auto", **changes: Any
) -> RunConfig:
    """The tutorial's reference fix at a compute budget.

    To-tensor only (no augmentation), evaluation data from the test split, gradients
    zeroed every step, no schedule, Adam with lr 2e-3, ReLU then BatchNorm after every
    convolution. It reached 93.2% test accuracy on real SVHN in 10 epochs (tutorial).
    Uses the fast device-resident "tensor" loader; pass ``loader="pil"`` for the
    handover's pipeline. Arguments as in :func:`handover_config`.
    """
    fields = dict(
        name="reference-fix",
        eval_from_train=False,
        augmentation="none",
        loader="tensor",
        activation="relu",
        norm="batch",
        optimizer="adam",
        lr=2e-3,
        schedule="none",
        zero_grad=True,
    )
    return _config_at_budget(budget, source, fields, changes)


# --------------------------------------------------------------------------- data
_DATA_CACHE: OrderedDict[tuple, data_mod.DataBundle] = OrderedDict()
_DATA_CACHE_SIZE = 3
_RESOLVED_SOURCES: dict[str, str] = {}


def clear_data_cache() -> None:
    """Forget the data sets :func:`get_data` keeps in memory (and which source "auto" meant)."""
    _DATA_CACHE.clear()
    _RESOLVED_SOURCES.clear()


def get_data(config: RunConfig) -> data_mod.DataBundle:
    """The :class:`nbhelpers.data.DataBundle` of ``config``, loaded once per process.

    Keyed by (source, n_train, n_valid, n_test, data_seed); the last three different
    keys are kept, so a notebook comparing runs does not reload the data every time.
    """
    key = (config.source, config.n_train, config.n_valid, config.n_test, config.data_seed)
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    bundle = data_mod.load_data(
        config.source,
        n_train=config.n_train,
        n_valid=config.n_valid,
        n_test=config.n_test,
        seed=config.data_seed,
    )
    _DATA_CACHE[key] = bundle
    if bundle.source != config.source:  # "auto" resolved: also file it under the real source
        _DATA_CACHE[(bundle.source, *key[1:])] = bundle
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return bundle


def _eval_sets(config: RunConfig, bundle: data_mod.DataBundle) -> dict[str, data_mod.ImageSet]:
    """The splits to evaluate; with ``eval_from_train`` the handover's shared data."""
    if not config.eval_from_train:
        return {"train": bundle.train, "valid": bundle.valid, "test": bundle.test}
    train_set = bundle.train
    gen = torch.Generator().manual_seed(config.data_seed)
    perm = torch.randperm(len(train_set), generator=gen)
    half = len(train_set) // 2
    return {
        "train": train_set,
        "valid": train_set.subset(perm[:half], "valid"),
        "test": train_set.subset(perm[half:], "test"),
    }


class RandomRotationBatch:
    """Per-sample random rotation of a float batch on its device.

    The on-device equivalent of torchvision's ``RandomRotation(degrees)`` applied to each
    image: an angle uniform in [-degrees, degrees] per image, rotation about the image
    centre, nearest-neighbour sampling, zeros outside (torchvision's defaults).

    Args:
        degrees: the largest rotation in degrees (positive number).
        seed: seed of the angle generator (angles are drawn on the CPU).

    Call with x float32 ``(B, C, H, W)``; returns a tensor of the same shape and device.

    Raises:
        ValueError: ``degrees`` not a positive finite number.
    """

    def __init__(self, degrees: float = 180.0, seed: int = 0):
        if not isinstance(degrees, (int, float)) or not math.isfinite(degrees) or degrees <= 0:
            raise ValueError(f"degrees must be a positive number, got {degrees!r}")
        self.degrees = float(degrees)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        angles = (torch.rand(x.shape[0], generator=self.generator) * 2 - 1) * self.degrees
        return self.rotate(x, torch.deg2rad(angles))

    @staticmethod
    def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate each image of x ``(B, C, H, W)`` by its angle (radians, ``(B,)``) about the centre."""
        cos, sin = torch.cos(angles), torch.sin(angles)
        theta = torch.zeros(x.shape[0], 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(
            x, grid, mode="nearest", padding_mode="zeros", align_corners=False
        )

    def __repr__(self) -> str:
        return f"RandomRotationBatch(degrees={self.degrees})"


def _train_loader(config: RunConfig, train_set: data_mod.ImageSet, device: torch.device):
    rotate = config.augmentation == "rotate180"
    if config.loader == "pil":
        from torchvision import transforms

        transform = (
            transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
            if rotate
            else None
        )
        return data_mod.make_loader(
            train_set,
            config.batch_size,
            shuffle=True,
            device=device,
            kind="pil",
            transform=transform,
            num_workers=config.num_workers,
            seed=config.seed,
        )
    augment = RandomRotationBatch(180, seed=config.seed) if rotate else None
    return data_mod.make_loader(
        train_set,
        config.batch_size,
        shuffle=True,
        device=device,
        kind="tensor",
        augment=augment,
        seed=config.seed,
    )


def _eval_loaders(config: RunConfig, sets: dict[str, data_mod.ImageSet], device: torch.device):
    loaders = {}
    for split in config.eval_splits:
        loaders[split] = data_mod.make_loader(
            sets[split],
            config.eval_batch_size,
            shuffle=False,
            device=device,
            kind=config.loader,
            num_workers=config.num_workers if config.loader == "pil" else 0,
        )
    return loaders


# --------------------------------------------------------------------------- optimisation
def build_optimizer(config: RunConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` with its lr, momentum and weight decay."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def build_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning-rate schedule of ``config`` (None for "none").

    "exponential": ``torch.optim.lr_scheduler.ExponentialLR(gamma)``; "cosine":
    ``CosineAnnealingLR`` reaching 0 after all scheduler steps of the run (optimizer
    steps with ``schedule_step="batch"``, epochs with "epoch").
    """
    if config.schedule == "none":
        return None
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
    if config.schedule_step == "batch":
        t_max = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            t_max = min(t_max, config.max_steps)
    else:
        t_max = config.epochs
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(t_max), 1))


# --------------------------------------------------------------------------- run
def _resolve(config: RunConfig, data: data_mod.DataBundle | None) -> tuple[RunConfig, torch.device]:
    """Config with source and device resolved to what this machine will actually use."""
    device = env.pick_device(None if config.device in (None, "auto") else config.device)
    source = data.source if data is not None else _resolve_source(config.source)
    return config.replace(source=source, device=str(device)), device


def _resolve_source(source: str) -> str:
    """``data.resolve_source`` once per process (so "auto" tries a download only once)."""
    if source not in _RESOLVED_SOURCES:
        _RESOLVED_SOURCES[source] = data_mod.resolve_source(source)
    return _RESOLVED_SOURCES[source]


def run(
    config: RunConfig,
    *,
    data: data_mod.DataBundle | None = None,
    cache: bool = True,
    runs_dir: Any = None,
    hooks: Sequence[Any] = (),
    progress: bool = True,
    profile: bool = False,
) -> RunRecord:
    """Train one configuration and save its record (or load it from the cache).

    The configuration is validated first; then "auto" source and device are resolved
    (the resolved values are what the record stores and the cache key covers). With
    ``cache=True`` and no ``hooks``, a complete record of the same configuration in
    ``runs_dir`` is returned instead of retraining, with a message saying so. Otherwise
    the data are loaded (or taken from ``data``), seeds set
    (:func:`nbhelpers.env.seed_everything` with ``config.seed``), the model, optimizer
    and schedule built, the model trained, and the record written to
    ``runs_dir/<name>-<hash>.json``. A run stopped with KeyboardInterrupt is saved with
    status "interrupted" (never served from the cache) and returned.

    Args:
        config: the :class:`RunConfig`.
        data: a ready :class:`nbhelpers.data.DataBundle` (e.g. from a notebook) whose split
            sizes match the config's; default :func:`get_data`. Its ``source`` replaces
            ``config.source``.
        cache: look for a stored record first.
        runs_dir: where records live; default ``$NBHELPERS_RUNS_DIR`` or ``./runs``.
        hooks: training hooks (e.g. Cockpit); a run with hooks always trains.
        progress: show the progress bar and one-line messages.
        profile: exact per-phase timing on GPUs (see :func:`nbhelpers.train.train`).

    Returns:
        The :class:`nbhelpers.records.RunRecord` (``from_cache`` tells which way).

    Raises:
        TypeError: ``config`` is not a RunConfig, or ``data`` is not a DataBundle.
        ValueError: invalid configuration (before any work).
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"run() expects a RunConfig, got {type(config).__name__}")
    if data is not None and not isinstance(data, data_mod.DataBundle):
        raise TypeError(
            f"run(data=...) expects a DataBundle from nbhelpers.data.load_data(...) or None, "
            f"got {data!r:.80}; to choose the data source, set the config's source field "
            "(e.g. config.replace(source='synthetic'))"
        )
    config.validate()
    t_wall = time.perf_counter()
    resolved, device = _resolve(config, data)
    key = config_hash(resolved.to_dict())
    if cache and not hooks:
        cached = find_cached(resolved.name, key, runs_dir)
        if cached is not None:
            print(
                f"Loaded cached run {cached.name} ({cached.short_hash}, trained on "
                f"{cached.device}) from {cached.path}; "
                "pass cache=False to retrain"
                + (
                    " (this run DIVERGED: its loss became NaN or infinite)"
                    if cached.status == "diverged"
                    else ""
                )
            )
            return cached
    bundle = data if data is not None else get_data(resolved)
    history, extra = _train_config(resolved, bundle, device, hooks, progress, profile)
    timings = dict(history.timings)
    timings["wall_s"] = time.perf_counter() - t_wall
    timings["setup_s"] = extra.pop("setup_s")
    record = RunRecord(
        name=resolved.name,
        config=resolved.to_dict(),
        config_hash=key,
        history=history.epochs,
        step_losses=history.step_losses,
        step_lrs=history.step_lrs,
        timings=timings,
        seed=resolved.seed,
        device=env.device_name(device),
        versions=env.versions(),
        status=history.status,
        extra=extra,
    )
    path = save_record(record, runs_dir)
    if progress or record.status != "complete":  # a diverged or interrupted run always says so
        print(_finished_message(record, path))
    return record


@dataclass
class RunParts:
    """Everything :func:`run` trains with, built from one :class:`RunConfig`.

    Attributes:
        model: the CNN on ``device``.
        optimizer, scheduler: as configured (``scheduler`` may be None).
        train_loader: batches of the training split (with the configured augmentation).
        eval_loaders: ``{split: loader}`` for ``config.eval_splits``.
        eval_sets: ``{"train", "valid", "test": ImageSet}`` (with ``eval_from_train`` the
            handover's shared data).
        device: the training device.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    eval_sets: dict[str, data_mod.ImageSet]
    device: torch.device


def build_run(
    config: RunConfig, data: data_mod.DataBundle | None = None, device: Any = None
) -> RunParts:
    """Build the model, optimizer, schedule and loaders of ``config`` without training.

    Seeds everything with ``config.seed`` first (as :func:`run` does), so the model's
    initial weights are the ones a run of this configuration starts from. Useful to
    inspect a configuration (e.g. with :mod:`nbhelpers.checks`).

    Args:
        config: the configuration (validated here).
        data: a ready DataBundle; default :func:`get_data`.
        device: the device; default ``config.device`` resolved by
            :func:`nbhelpers.env.pick_device`.

    Raises:
        ValueError: invalid configuration.
    """
    config.validate()
    if device is None:
        device = env.pick_device(None if config.device in (None, "auto") else config.device)
    device = torch.device(device)
    bundle = data if data is not None else get_data(config)
    sets = _eval_sets(config, bundle)
    env.seed_everything(config.seed)
    model = build_cnn(config.activation, config.norm, config.width, init=config.init).to(device)
    optimizer = build_optimizer(config, model.parameters())
    train_loader = _train_loader(config, bundle.train, device)
    scheduler = build_scheduler(config, optimizer, len(train_loader))
    eval_loaders = _eval_loaders(config, sets, device)
    return RunParts(model, optimizer, scheduler, train_loader, eval_loaders, sets, device)


def _train_config(config, bundle, device, hooks, progress, profile) -> tuple[History, dict]:
    t0 = time.perf_counter()
    parts = build_run(config, bundle, device)
    model, optimizer, scheduler = parts.model, parts.optimizer, parts.scheduler
    train_loader, sets = parts.train_loader, parts.eval_sets
    eval_loaders = parts.eval_loaders if config.eval_every else {}
    extra = {
        "data_source": bundle.source,
        "is_stand_in": bundle.is_stand_in,
        "split_sizes": {name: len(s) for name, s in sets.items()},
        "n_parameters": count_parameters(model),
        "scheduler_step": config.schedule_step if scheduler is not None else None,
        "setup_s": time.perf_counter() - t0,
    }
    if progress:
        stand_in = " (offline stand-in)" if bundle.is_stand_in else ""
        print(f"Training {config.name} on {device} with {bundle.source}{stand_in} data ...")
    history = train(
        model,
        optimizer,
        train_loader,
        epochs=config.epochs,
        scheduler=scheduler,
        scheduler_step=config.schedule_step,
        zero_grad=config.zero_grad,
        eval_loaders=eval_loaders,
        eval_every=config.eval_every,
        hooks=hooks,
        progress=progress,
        device=device,
        max_steps=config.max_steps,
        profile=profile,
    )
    return history, extra


def _finished_message(record: RunRecord, path) -> str:
    acc = record.final("test_accuracy")
    acc_text = f"test accuracy {acc:.1%}, " if acc is not None else ""
    state = {"complete": "Saved", "diverged": "Saved DIVERGED"}.get(
        record.status, "Saved INTERRUPTED"
    )
    return f"{state} run {record.name} to {path}: {acc_text}{record.timings['wall_s']:.1f} s"


# --------------------------------------------------------------------------- comparison
def describe_config(config: RunConfig | dict[str, Any]) -> str:
    """A one-line summary of a configuration, e.g.
    ``"tanh/none, adam lr=1e-05, exponential(1.001)/batch, NO zero_grad, rotate180, eval=train"``.
    """
    c = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    parts = [f"{c.get('activation')}/{c.get('norm')}", f"{c.get('optimizer')} lr={c.get('lr'):g}"]
    if c.get("init", "default") != "default":
        parts.insert(1, f"{c['init']} init")
    if c.get("schedule", "none") != "none":
        gamma = f"({c.get('gamma'):g})" if c.get("schedule") == "exponential" else ""
        parts.append(f"{c['schedule']}{gamma}/{c.get('schedule_step')}")
    if not c.get("zero_grad", True):
        parts.append("NO zero_grad")
    if c.get("augmentation", "none") != "none":
        parts.append(str(c["augmentation"]))
    if c.get("eval_from_train"):
        parts.append("eval=train")
    parts.append(f"bs={c.get('batch_size')} ep={c.get('epochs')}")
    return ", ".join(parts)


def compare_table(records: Sequence[RunRecord], split: str = "test"):
    """A compact comparison of runs as a pandas DataFrame (one row per run).

    Columns: run, configuration (:func:`describe_config`), final ``{split}`` accuracy,
    best valid accuracy, wall time (s, whole run), training throughput (images/s),
    status, cached.

    Raises:
        TypeError: an entry is not a :class:`RunRecord`.
    """
    import pandas as pd

    rows = []
    for record in records:
        if not isinstance(record, RunRecord):
            raise TypeError(f"compare_table expects RunRecords, got {type(record).__name__}")
        timings = record.timings
        rows.append(
            {
                "run": record.name,
                "configuration": describe_config(record.config),
                f"{split} accuracy": record.final(f"{split}_accuracy"),
                "best valid accuracy": record.best("valid_accuracy"),
                "wall time (s)": timings.get("wall_s", timings.get("total_s")),
                "images/s": timings.get("images_per_s"),
                "status": record.status,
                "cached": record.from_cache,
            }
        )
    return pd.DataFrame(rows)
