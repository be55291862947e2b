"""Experiments: a run configuration, ``run(config)``, and the two reference configurations.

A :class:`RunConfig` names everything that decides a training run: data, the
handover's faults (each one a switch), model, optimizer, schedule, batch size,
epochs, evaluation and seed. It is frozen and validated once, when it is made.
:func:`run` builds it all, trains with :func:`nbhelpers.train.train`, and saves a
record under ``runs/``; the same configuration run again is loaded from there
instead of retrained (pass ``cache=False`` to retrain).

Optimizers, schedules and augmentations are registries (:data:`OPTIMIZERS`,
:data:`SCHEDULES`, :data:`AUGMENTATIONS`): name -> builder, one entry each; a
configuration naming anything else is refused when it is made.

:func:`handover_config` is the colleague's run with all its faults (tutorial,
"Bugs": no ``zero_grad``, train data loaded again as valid/test, rotation
augmentation, a growing exponential schedule, a too-small learning rate, Tanh);
:func:`reference_fix_config` is the tutorial's fixed run (to-tensor only, test
split for evaluation, ``zero_grad``, no schedule, Adam lr 2e-3, ReLU then BatchNorm).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from nbhelpers import data as data_mod
from nbhelpers import env, models, profiling
from nbhelpers.budget import Budget, resolve_budget
from nbhelpers.records import RunRecord, check_runs_dir, config_hash, find_cached, save_record
from nbhelpers.threads import check_threads, describe_threads
from nbhelpers.train import SCHEDULER_STEPS, History, TrainOptions, train
from nbhelpers.validate import boolean, integer, invalid, number, one_of, positive_int, seed

__all__ = [
    "AUGMENTATIONS", "EVAL_SPLITS", "OPTIMIZERS", "SCHEDULES", "RandomRotationBatch", "RunConfig",
    "RunParts", "RunRecord", "build_optimizer", "build_run", "build_scheduler", "clear_data_cache",
    "compare_table", "describe_config", "get_data", "handover_config", "memory_format_of",
    "precision_of", "reference_fix_config", "run",
]  # fmt: skip

EVAL_SPLITS = data_mod.SPLITS
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

# --------------------------------------------------------------------------- registries
#: Optimizer name -> ``(config, params) -> optimizer`` with the config's hyper-parameters.
OPTIMIZERS: dict[str, Callable[[Any, Iterable[torch.Tensor]], torch.optim.Optimizer]] = {
    "adam": lambda c, params: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda c, params: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda c, params: torch.optim.SGD(
        params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
    ),
}


def _cosine(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Cosine annealing to 0 after all scheduler steps of the run (optimizer steps with
    ``schedule_step="batch"``, capped by ``max_steps``; epochs with "epoch")."""
    if config.schedule_step == "epoch":
        t_max = config.epochs
    else:
        t_max = steps_per_epoch * config.epochs
        t_max = t_max if config.max_steps is None else min(t_max, config.max_steps)
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(t_max), 1))


#: Schedule name -> ``(config, optimizer, steps_per_epoch) -> scheduler`` (None: constant).
#: "exponential": ``lr * gamma**t``; "cosine": to 0 at the end of the run.
SCHEDULES: dict[str, Callable[[Any, torch.optim.Optimizer, int], Any]] = {
    "none": lambda c, optimizer, steps_per_epoch: None,
    "exponential": lambda c, optimizer, steps_per_epoch: lr_scheduler.ExponentialLR(
        optimizer, gamma=c.gamma
    ),
    "cosine": _cosine,
}


def _rotate180(seed: int):
    from torchvision import transforms

    pil = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
    return pil, RandomRotationBatch(180, seed=seed)


#: Augmentation name -> ``seed -> (per-sample transform of the "pil" loader, on-device batch
#: augmentation of the "tensor" loader)``; None: to-tensor only / no augmentation.
#: "rotate180" is the handover's ``RandomRotation(180)`` (not label-preserving: 6 and 9).
AUGMENTATIONS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "none": lambda seed: (None, None),
    "rotate180": _rotate180,
}


# --------------------------------------------------------------------------- config
def _non_empty(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise invalid(name, value, "a non-empty string")


def _splits(name: str, value: Any) -> None:
    known = isinstance(value, tuple) and all(s in EVAL_SPLITS for s in value)
    if not known or len(set(value)) != len(value):
        raise invalid(name, value, f"distinct names from {EVAL_SPLITS}")


def _device(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and _DEVICE_PATTERN.fullmatch(value)):
        raise invalid(name, value, "None, 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")


def _positive(name: str, value: Any) -> None:
    number(name, value, 0, low_open=True, high_open=True)


def _choice(valid: Iterable[str]) -> Callable[[str, Any], Any]:
    return lambda name, value: one_of(name, value, valid)


_SIZE = functools.partial(integer, minimum=1, allow_none=True)  # None: the source's default
_COUNT = functools.partial(integer, minimum=0)


def _checked(default: Any, check: Callable[[str, Any], Any]) -> Any:
    """A RunConfig field with its ``default`` and its ``check(name, value)`` (raises ValueError)."""
    return dataclasses.field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one training run (frozen; validated when made).

    Defaults are the tutorial's reference fix on the offline-or-real ``"auto"`` source
    at the handover's batch size (256) and epoch count (10); :func:`handover_config`
    and :func:`reference_fix_config` fill the sizes from a compute budget. Change a
    field with :meth:`replace` (or ``dataclasses.replace``), which validates again.
    Every field carries its own check next to its default, so a new field is one line.

    Attributes:
        name: the run's name (file name of its record; part of the cache key).
        source: data source, "svhn", "synthetic" or "auto" (see :func:`nbhelpers.data.load_data`).
        n_train, n_valid, n_test: split sizes (None: the source's default).
        data_seed: seed of the data split (and of the stand-in generator).
        eval_from_train: the handover's bug: evaluation data is the train split again,
            randomly halved into "valid" and "test", so every split holds training images.
        augmentation: a name of :data:`AUGMENTATIONS`, "none" or "rotate180".
        loader: "tensor" (device-resident :class:`nbhelpers.data.TensorLoader`) or "pil"
            (the handover's per-sample PIL DataLoader).
        num_workers: DataLoader worker processes for ``loader="pil"``.
        activation: a name of :data:`nbhelpers.models.ACTIVATIONS` ("tanh", "relu", ...).
        norm: a name of :data:`nbhelpers.models.NORMS`, "none", "batch" or "group".
        width: channels of the first convolution block (32 in the handover).
        init: a name of :data:`nbhelpers.models.INITS`, "default" (PyTorch's, as in the
            handover) or "kaiming" (He et al., 2015; see :func:`nbhelpers.models.build_cnn`).
        optimizer: a name of :data:`OPTIMIZERS`, "adam", "adamw" or "sgd".
        lr: learning rate (> 0).
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 weight decay (>= 0).
        schedule: a name of :data:`SCHEDULES`, "none", "exponential" or "cosine".
        gamma: factor of the exponential schedule, in (0, 2] (the handover's 1.001 per batch
            makes the learning rate grow: 1.001**2870 is about 17.6 after 10 SVHN epochs; a
            factor above 2 would multiply it by over 1000 within 10 steps).
        schedule_step: "batch" (t counts optimizer steps) or "epoch" (t counts epochs).
        zero_grad: reset gradients before every step (False is the handover's bug).
        batch_size, epochs: training batch size and epochs.
        eval_every: evaluate every this many epochs and after the last one (0: never).
        eval_splits: which of "train", "valid", "test" to evaluate (a list or a single name
            is turned into a tuple).
        eval_batch_size: batch size of evaluation (does not change the result).
        seed: seed of the model's initialisation, shuffling and augmentation.
        device: "auto" / None (pick the fastest), "cpu", "cuda", "cuda:N" or "mps".
        max_steps: stop after this many optimizer steps (None: no limit).
        memory_format: layout of the model's weights and the batches: "contiguous" (torch's
            default), "channels_last", or "auto": whichever trains faster on this device,
            measured (:func:`nbhelpers.profiling.fastest_memory_format`, once per process for
            each model, batch size and thread setting; torch's default with training hooks
            such as Cockpit, whose BackPACK extensions expect it). The layout changes how the
            arithmetic is done, not what is computed: results differ only by rounding.
        precision: arithmetic of training and evaluation (:data:`nbhelpers.profiling.PRECISIONS`):
            "fp32" (float32 throughout), "bf16" (bfloat16 mixed precision: convolutions and
            matrix products in bfloat16, weights and optimizer in float32), or "auto": "bf16"
            where it trains faster on this device, measured
            (:func:`nbhelpers.profiling.fastest_precision`, once per process for each model,
            batch size, layout and thread setting; "fp32" with training hooks such as Cockpit,
            whose BackPACK extensions compute in float32). bfloat16 keeps about 3 significant
            digits, so results differ from "fp32" by more than rounding.
        threads: CPU intra-op threads: "auto" (chosen per run and epoch from the step's work and
            the idle cores, see :mod:`nbhelpers.threads`), an int >= 1 (exactly that many), or
            None (torch's setting as it is). Results on the CPU differ by rounding between
            thread counts, and training amplifies that; an int keeps reruns bit-identical and
            is part of the cache key, while "auto" records the counts it used.

    Raises:
        ValueError: on construction, for any value outside its valid range or set, naming
            the field, the value and what is valid.
        dataclasses.FrozenInstanceError: on assigning to a field (use :meth:`replace`).
    """

    name: str = _checked("run", _non_empty)
    source: str = _checked("auto", _choice(data_mod.SOURCES))
    n_train: int | None = _checked(None, _SIZE)
    n_valid: int | None = _checked(None, _SIZE)
    n_test: int | None = _checked(None, _SIZE)
    data_seed: int = _checked(0, seed)
    eval_from_train: bool = _checked(False, boolean)
    augmentation: str = _checked("none", _choice(AUGMENTATIONS))
    loader: str = _checked("tensor", _choice(data_mod.LOADER_KINDS))
    num_workers: int = _checked(0, _COUNT)
    activation: str = _checked("relu", _choice(models.ACTIVATIONS))
    norm: str = _checked("batch", _choice(models.NORMS))
    width: int = _checked(32, positive_int)
    init: str = _checked("default", _choice(models.INITS))
    optimizer: str = _checked("adam", _choice(OPTIMIZERS))
    lr: float = _checked(2e-3, _positive)
    momentum: float = _checked(0.0, lambda name, value: number(name, value, 0, 1, high_open=True))
    weight_decay: float = _checked(0.0, lambda name, value: number(name, value, 0, high_open=True))
    schedule: str = _checked("none", _choice(SCHEDULES))
    gamma: float = _checked(1.0, lambda name, value: number(name, value, 0, 2, low_open=True))
    schedule_step: str = _checked("batch", _choice(SCHEDULER_STEPS))
    zero_grad: bool = _checked(True, boolean)
    batch_size: int = _checked(256, positive_int)
    epochs: int = _checked(10, _COUNT)
    eval_every: int = _checked(1, _COUNT)
    eval_splits: tuple[str, ...] = _checked(("train", "valid", "test"), _splits)
    eval_batch_size: int = _checked(1024, positive_int)
    seed: int = _checked(0, seed)
    device: str | None = _checked(None, _device)
    max_steps: int | None = _checked(None, functools.partial(integer, minimum=0, allow_none=True))
    memory_format: str = _checked("auto", _choice(("auto", *profiling.MEMORY_FORMATS)))
    precision: str = _checked("fp32", _choice(("auto", *profiling.PRECISIONS)))
    threads: int | str | None = _checked("auto", check_threads)

    def __post_init__(self) -> None:
        if isinstance(self.eval_splits, (str, list)):  # one name or a list: as a tuple
            splits = [self.eval_splits] if isinstance(self.eval_splits, str) else self.eval_splits
            object.__setattr__(self, "eval_splits", tuple(splits))
        for f in dataclasses.fields(self):
            f.metadata["check"](f"RunConfig.{f.name}", getattr(self, f.name))
        if self.eval_every and not self.eval_splits:
            raise invalid("RunConfig.eval_splits", (), "at least one split while eval_every > 0")
        if self.norm == "group":
            models.check_group_norm(self.width)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict (tuples become lists)."""
        return {**dataclasses.asdict(self), "eval_splits": list(self.eval_splits)}

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


def _config_at_budget(budget: Budget | str | None, source: str, fields: dict, changes: dict):
    """A RunConfig of ``fields`` sized by ``budget`` (data sizes, batch size, epochs, width,
    evaluation interval), then ``changes``."""
    b = resolve_budget(budget, _pick_device(changes.get("device")) if budget is None else None)
    keys = ("n_train", "n_valid", "n_test", "batch_size", "epochs", "width", "eval_every")
    sizes = {k: getattr(b, k) for k in keys}
    return RunConfig(**{"source": source, **fields, **sizes, **changes})


def handover_config(
    budget: Budget | str | None = None, *, source: str = "auto", **changes: Any
) -> RunConfig:
    """The colleague's run as handed over, with all its faults, at a compute budget.

    Faults, each a config field: ``eval_from_train=True`` (valid/test are the train
    split again), ``augmentation="rotate180"``, ``zero_grad=False``, ``lr=1e-5`` with
    Adam, ``schedule="exponential"``, ``gamma=1.001`` stepped every batch, Tanh and no
    normalisation. The loader is the handover's per-sample PIL pipeline ("pil") with torch's
    default memory layout ("contiguous"), and all three splits are evaluated after every
    epoch, as in the original.

    Args:
        budget: a :class:`nbhelpers.budget.Budget` or its name ("tiny", "quick", "colab",
            "full"); None picks "colab" on a GPU and "quick" otherwise. Sizes, epochs, batch
            size, width and evaluation interval come from it.
        source: data source ("auto", "svhn", "synthetic").
        **changes: any other :class:`RunConfig` field to override.

    Raises:
        ValueError: unknown budget name or invalid field values.
    """
    fields = dict(
        name="handover", eval_from_train=True, augmentation="rotate180", loader="pil",
        activation="tanh", norm="none", optimizer="adam", lr=1e-5, schedule="exponential",
        gamma=1.001, schedule_step="batch", zero_grad=False, memory_format="contiguous",
    )  # fmt: skip
    return _config_at_budget(budget, source, fields, changes)


def reference_fix_config(
    budget: Budget | str | None = None, *, source: str = "auto", **changes: Any
) -> RunConfig:
    """The tutorial's reference fix at a compute budget.

    To-tensor only (no augmentation), evaluation data from the test split, gradients
    zeroed every step, no schedule, Adam with lr 2e-3, ReLU then BatchNorm after every
    convolution. It reached 93.2% test accuracy on real SVHN in 10 epochs (tutorial).
    Uses the fast device-resident "tensor" loader and the faster memory layout and arithmetic
    on this device (``memory_format="auto"``, ``precision="auto"``); pass ``loader="pil"`` for the handover's pipeline. Arguments as
    in :func:`handover_config`.
    """
    fields = dict(
        name="reference-fix", eval_from_train=False, augmentation="none", loader="tensor",
        activation="relu", norm="batch", optimizer="adam", lr=2e-3, schedule="none",
        zero_grad=True, precision="auto",
    )  # fmt: skip
    return _config_at_budget(budget, source, fields, changes)


# --------------------------------------------------------------------------- data
_RESOLVED_SOURCES: dict[str, str] = {}


def _pick_device(device: str | None) -> torch.device:
    return env.pick_device(None if device in (None, "auto") else device)


def _resolve_source(source: str) -> str:
    """``data.resolve_source`` once per process (so "auto" tries a download only once)."""
    if source not in _RESOLVED_SOURCES:
        _RESOLVED_SOURCES[source] = data_mod.resolve_source(source)
    return _RESOLVED_SOURCES[source]


@functools.lru_cache(maxsize=3)
def _load(source: str, n_train, n_valid, n_test, data_seed: int) -> data_mod.DataBundle:
    return data_mod.load_data(
        source, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=data_seed
    )


def clear_data_cache() -> None:
    """Forget the data sets :func:`get_data` keeps in memory (and which source "auto" meant)."""
    _load.cache_clear()
    _RESOLVED_SOURCES.clear()


def get_data(config: RunConfig) -> data_mod.DataBundle:
    """The :class:`nbhelpers.data.DataBundle` of ``config``, loaded once per process.

    Keyed by (source, n_train, n_valid, n_test, data_seed), with "auto" resolved to the
    source it means here; the last three different keys are kept, so a notebook comparing
    runs does not reload the data every time.
    """
    source = _resolve_source(config.source)
    return _load(source, config.n_train, config.n_valid, config.n_test, config.data_seed)


def _eval_sets(config: RunConfig, bundle: data_mod.DataBundle) -> dict[str, data_mod.ImageSet]:
    """The splits to evaluate; with ``eval_from_train`` the handover's shared data, and the real
    test split as ``"real_test"`` (so the handover can be compared with runs measured on it)."""
    if not config.eval_from_train:
        return {"train": bundle.train, "valid": bundle.valid, "test": bundle.test}
    gen = torch.Generator().manual_seed(config.data_seed)
    perm = torch.randperm(len(bundle.train), generator=gen)
    half = len(bundle.train) // 2
    return {
        "train": bundle.train,
        "valid": bundle.train.subset(perm[:half], "valid"),
        "test": bundle.train.subset(perm[half:], "test"),
        "real_test": bundle.test,
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
        self.degrees = number("degrees", degrees, 0, low_open=True, high_open=True)
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


def _train_loader(config: RunConfig, train_set: data_mod.ImageSet, device, channels_last: bool):
    transform, augment = AUGMENTATIONS[config.augmentation](config.seed)
    if config.loader == "pil":  # the model's first convolution takes its batches in any layout
        extra = dict(transform=transform, num_workers=config.num_workers)
    else:
        extra = dict(augment=augment, channels_last=channels_last)
    return data_mod.make_loader(
        train_set, config.batch_size, shuffle=True, device=device, kind=config.loader,
        seed=config.seed, **extra,
    )  # fmt: skip


def _eval_loaders(config: RunConfig, sets: dict, device: torch.device, channels_last: bool):
    pil = config.loader == "pil"
    extra = dict(num_workers=config.num_workers) if pil else dict(channels_last=channels_last)
    return {
        split: data_mod.make_loader(
            sets[split], config.eval_batch_size, shuffle=False, device=device,
            kind=config.loader, **extra,
        )
        for split in _evaluated(config)
    }  # fmt: skip


def _evaluated(config: RunConfig) -> tuple[str, ...]:
    """``config.eval_splits``, plus ``"real_test"`` when the test split is the handover's."""
    extra = ("real_test",) if config.eval_from_train and "test" in config.eval_splits else ()
    return tuple(config.eval_splits) + extra


#: The "auto" settings of a RunConfig and how each is measured:
#: ``(make_model, batch_size, device, threads, layout) -> the fastest choice's name``.
_MEASURED: dict[str, Callable[..., str]] = {
    "memory_format": lambda make, batch, device, threads, layout: profiling.fastest_memory_format(
        make, batch, device=device, threads=threads
    )[0],
    "precision": lambda make, batch, device, threads, layout: profiling.fastest_precision(
        make, batch, device=device, memory_format=layout, threads=threads
    )[0],
}


@functools.lru_cache(maxsize=64)
def _fastest(setting: str, device: str, activation: str, norm: str, width: int, batch_size: int,
             threads: Any, learner_threads: int, layout: str | None) -> str:  # fmt: skip
    def make_model() -> nn.Module:
        return models.build_cnn(activation, norm, width)

    return _MEASURED[setting](make_model, batch_size, device, threads, layout)


def _measured(setting: str, config: RunConfig, device, layout: str | None = None) -> str:
    """``_MEASURED[setting]`` for ``config``'s model, batch size and threads, once per process."""
    key = (config.activation, config.norm, config.width, config.batch_size, config.threads)
    return _fastest(setting, str(torch.device(device)), *key, torch.get_num_threads(), layout)


def precision_of(config: RunConfig, device: torch.device | str, layout: str) -> str:
    """The arithmetic a run of ``config`` trains in on ``device`` in memory ``layout``:
    ``config.precision``, with "auto" measured (:func:`nbhelpers.profiling.fastest_precision`;
    once per process for each model, batch size, layout and thread setting, before any seeding)."""
    if config.precision != "auto":
        return config.precision
    return _measured("precision", config, device, layout)


def memory_format_of(config: RunConfig, device: torch.device | str) -> str:
    """The memory layout a run of ``config`` trains in on ``device``: ``config.memory_format``,
    with "auto" measured (:func:`nbhelpers.profiling.fastest_memory_format`; once per process
    for each model, batch size and thread setting, before any seeding)."""
    if config.memory_format != "auto":
        return config.memory_format
    return _measured("memory_format", config, device)


# --------------------------------------------------------------------------- optimisation
def build_optimizer(config: RunConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer :data:`OPTIMIZERS` builds for ``config.optimizer`` (lr, momentum, weight decay)."""
    return OPTIMIZERS[config.optimizer](config, params)


def build_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning-rate schedule :data:`SCHEDULES` builds for ``config.schedule`` (None for "none").

    "exponential": ``torch.optim.lr_scheduler.ExponentialLR(gamma)``; "cosine":
    ``CosineAnnealingLR`` reaching 0 after all scheduler steps of the run (optimizer
    steps with ``schedule_step="batch"``, epochs with "epoch").
    """
    return SCHEDULES[config.schedule](config, optimizer, steps_per_epoch)


# --------------------------------------------------------------------------- run
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
        memory_format: the layout of the model and the "tensor" batches, "contiguous" or
            "channels_last" (:func:`memory_format_of`).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    eval_sets: dict[str, data_mod.ImageSet]
    device: torch.device
    memory_format: str = "contiguous"


def build_run(
    config: RunConfig, data: data_mod.DataBundle | None = None, device: Any = None
) -> RunParts:
    """Build the model, optimizer, schedule and loaders of ``config`` without training.

    Seeds everything with ``config.seed`` first (as :func:`run` does), so the model's
    initial weights are the ones a run of this configuration starts from (in either memory
    layout: the weights are made first, then laid out). Useful to inspect a configuration
    (e.g. with :mod:`nbhelpers.checks`).

    Args:
        config: the configuration.
        data: a ready DataBundle; default :func:`get_data`.
        device: the device; default ``config.device`` resolved by
            :func:`nbhelpers.env.pick_device`.
    """
    device = torch.device(_pick_device(config.device) if device is None else device)
    bundle = data if data is not None else get_data(config)
    sets = _eval_sets(config, bundle)
    layout = memory_format_of(config, device)  # measures with "auto": before seeding
    channels_last = layout == "channels_last"
    env.seed_everything(config.seed)
    model = models.build_cnn(config.activation, config.norm, config.width, init=config.init)
    model = model.to(device, memory_format=profiling.MEMORY_FORMATS[layout])
    optimizer = build_optimizer(config, model.parameters())
    train_loader = _train_loader(config, bundle.train, device, channels_last)
    scheduler = build_scheduler(config, optimizer, len(train_loader))
    eval_loaders = _eval_loaders(config, sets, device, channels_last)
    return RunParts(model, optimizer, scheduler, train_loader, eval_loaders, sets, device, layout)


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

    First "auto" source and device are resolved (the resolved values are what the
    record stores and the cache key covers). With ``cache=True`` and no ``hooks``, a
    complete record of the same configuration in ``runs_dir`` is returned instead of
    retraining, with a message saying so (a record that fails its checks is moved aside
    with a warning, see :func:`nbhelpers.records.find_cached`). Otherwise the runs folder
    is checked to be writable (:func:`nbhelpers.records.check_runs_dir`), the data are
    loaded (or taken from ``data``), seeds set (:func:`nbhelpers.env.seed_everything`
    with ``config.seed``), the model, optimizer and schedule built, the model trained,
    and the record written to ``runs_dir/<name>-<hash>.json``.

    Nothing trained is lost: a run stopped with KeyboardInterrupt is saved with status
    "interrupted" in a file of its own beside that one (never served from the cache, and
    never replacing a complete record) and returned; if saving fails after training
    (e.g. the disk filled up), a ``RuntimeWarning`` says where it could not be saved and
    the record is returned all the same (``record.save(folder)`` saves it elsewhere).

    Args:
        config: the :class:`RunConfig` (validated when it was made).
        data: a ready :class:`nbhelpers.data.DataBundle` (e.g. from a notebook) whose split
            sizes match the config's; default :func:`get_data`. Its ``source`` replaces
            ``config.source``.
        cache: look for a stored record first.
        runs_dir: where records live; default ``$NBHELPERS_RUNS_DIR`` or ``./runs``.
        hooks: training hooks (e.g. Cockpit); a run with hooks always trains.
        progress: show the progress bar and one-line messages.
        profile: exact per-phase timing on GPUs (see :class:`nbhelpers.train.TrainOptions`).

    Returns:
        The :class:`nbhelpers.records.RunRecord` (``from_cache`` tells which way).

    Raises:
        TypeError: ``config`` is not a RunConfig, or ``data`` is not a DataBundle.
        OSError: before training, the runs folder cannot be written (``PermissionError``,
            ``NotADirectoryError``, a full disk); the message names the folder and
            ``$NBHELPERS_RUNS_DIR``.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"run() expects a RunConfig, got {type(config).__name__}")
    if data is not None and not isinstance(data, data_mod.DataBundle):
        raise TypeError(
            f"run(data=...) expects a DataBundle from nbhelpers.data.load_data(...) or None, "
            f"got {data!r:.80}; to choose the data source, set the config's source field "
            "(e.g. config.replace(source='synthetic'))"
        )
    t_wall = time.perf_counter()
    device = _pick_device(config.device)
    source = data.source if data is not None else _resolve_source(config.source)
    resolved = config.replace(source=source, device=str(device))
    key = config_hash(resolved.to_dict())
    cached = find_cached(resolved.name, key, runs_dir) if cache and not hooks else None
    if cached is not None:
        print(_cached_message(cached))
        return cached
    check_runs_dir(runs_dir)
    bundle = data if data is not None else get_data(resolved)
    history, extra = _train_config(resolved, bundle, device, hooks, progress, profile)
    timings = {**history.timings, "wall_s": time.perf_counter() - t_wall}
    timings["setup_s"] = extra.pop("setup_s")
    record = RunRecord(
        name=resolved.name, config=resolved.to_dict(), config_hash=key, history=history.epochs,
        step_losses=history.step_losses, step_lrs=history.step_lrs, timings=timings,
        seed=resolved.seed, device=env.device_name(device, history.threads),
        versions=env.versions(),
        status=history.status, extra=extra,
    )  # fmt: skip
    _save(record, runs_dir, progress)
    return record


def _save(record: RunRecord, runs_dir: Any, progress: bool) -> None:
    """Save ``record`` and say so; if that fails, warn where and how to save it instead."""
    try:
        path = save_record(record, runs_dir)
    except OSError as err:
        warnings.warn(
            f"Run {record.name} finished ({record.status}) but was not saved: {err}. Nothing "
            "is lost yet: run() returns the record; save it with record.save(folder), e.g. "
            "record.save('runs-elsewhere'), before this kernel stops.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    if progress or record.status != "complete":  # a diverged or interrupted run always says so
        print(_finished_message(record, path))


def _cached_message(cached: RunRecord) -> str:
    diverged = " (this run DIVERGED: its loss became NaN, infinite or far above its start)"
    return (
        f"Loaded cached run {cached.name} ({cached.short_hash}, trained on {cached.device}) "
        f"from {cached.path}; pass cache=False to retrain"
        + (diverged if cached.status == "diverged" else "")
        + replay_note(cached)
    )


def _train_config(config, bundle, device, hooks, progress, profile) -> tuple[History, dict]:
    t0 = time.perf_counter()
    if hooks and config.memory_format == "auto":  # BackPACK (Cockpit) expects torch's layout
        config = config.replace(memory_format="contiguous")
    if hooks and config.precision == "auto":  # ... and computes in float32
        config = config.replace(precision="fp32")
    precision = precision_of(config, device, memory_format_of(config, device))  # before seeding
    parts = build_run(config, bundle, device)
    extra = {
        "is_stand_in": bundle.is_stand_in,
        "split_sizes": {name: len(s) for name, s in parts.eval_sets.items()},
        "n_parameters": models.count_parameters(parts.model),
        "setup_s": time.perf_counter() - t0,
        "memory_format": parts.memory_format,
        "precision": precision,
    }
    if progress:
        stand_in = " (offline stand-in)" if bundle.is_stand_in else ""
        print(f"Training {config.name} on {device} with {bundle.source}{stand_in} data ...")
    options = TrainOptions(
        scheduler_step=config.schedule_step, zero_grad=config.zero_grad,
        eval_every=config.eval_every, progress=progress, device=device,
        max_steps=config.max_steps, profile=profile, threads=config.threads,
    )  # fmt: skip
    history = train(
        profiling.with_precision(parts.model, precision, device), parts.optimizer,
        parts.train_loader, epochs=config.epochs,
        scheduler=parts.scheduler, eval_loaders=parts.eval_loaders if config.eval_every else {},
        hooks=hooks, options=options,
    )  # fmt: skip
    extra["cpu_threads"] = history.threads  # what changes CPU results by rounding: kept
    return history, extra


def replay_note(record: RunRecord) -> str:
    """What a served record's numbers depend on beyond its configuration, for the replay message.

    A CPU run with ``threads="auto"`` (or None) used the thread counts its record names
    (``extra["cpu_threads"]``), and ``memory_format="auto"`` the layout in
    ``extra["memory_format"]``, ``precision="auto"`` the arithmetic in ``extra["precision"]``;
    a retrain that chooses other ones gives numbers that differ by
    rounding, which training amplifies. Returns "" when the config fixes both.
    """
    config, extra = record.config, record.extra
    counts = extra.get("cpu_threads")
    chosen = []
    if isinstance(counts, list) and counts and not isinstance(config.get("threads"), int):
        chosen.append(describe_threads(counts))
    if config.get("memory_format") == "auto" and isinstance(extra.get("memory_format"), str):
        chosen.append(f"the {extra['memory_format']} memory format")
    if config.get("precision") == "auto" and isinstance(extra.get("precision"), str):
        chosen.append(f"{extra['precision']} arithmetic")
    if not chosen:
        return ""
    return (
        f"; it was trained with {' and '.join(chosen)}, which its config does not fix: a "
        "retrain may use others and then differ by rounding (amplified by training); set "
        "threads=N, memory_format and precision in the config for bit-identical reruns"
    )


def _finished_message(record: RunRecord, path) -> str:
    acc = record.final("test_accuracy")
    acc_text = f"test accuracy {acc:.1%}, " if acc is not None else ""
    states = {"complete": "Saved", "diverged": "Saved DIVERGED", "interrupted": "Saved INTERRUPTED"}
    seconds = record.timings["wall_s"]
    text = f"{states[record.status]} run {record.name} to {path}: {acc_text}{seconds:.1f} s"
    if record.status == "interrupted":  # its own file: the cache file is left as it was
        text += "; interrupted runs are kept beside the cache and never replayed"
    return text


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
    if c.get("threads", "auto") != "auto":
        parts.append(f"threads={c['threads']}")
    if c.get("memory_format") == "channels_last":
        parts.append("channels_last")
    if c.get("precision") == "bf16":
        parts.append("bf16")
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

    wrong = [type(r).__name__ for r in records if not isinstance(r, RunRecord)]
    if wrong:
        raise TypeError(f"compare_table expects RunRecords, got {wrong[0]}")
    rows = [
        {
            "run": r.name, "configuration": describe_config(r.config),
            f"{split} accuracy": r.final(f"{split}_accuracy"),
            "best valid accuracy": r.best("valid_accuracy"),
            "wall time (s)": r.timings.get("wall_s", r.timings.get("total_s")),
            "images/s": r.timings.get("images_per_s"), "status": r.status, "cached": r.from_cache,
        }
        for r in records
    ]  # fmt: skip
    return pd.DataFrame(rows)
