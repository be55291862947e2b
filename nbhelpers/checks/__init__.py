"""Automatic sanity checks that catch common training bugs, and ``run_all_checks``.

Every check takes the learner's own objects (model, loaders, datasets, loss, optimizer,
scheduler, train step), runs in seconds on a CPU, never changes them (it works on deep copies,
simulates schedules on copies, restores random states and loader epoch counters), and returns a
:class:`CheckResult` that prints as one pass/fail line with the evidence and a hint::

    [FAIL] zero_grad: gradient norm after 3 identical steps ... 0.41, 0.82, 1.23 (x3.00) ...
           hint: Call optimizer.zero_grad() before loss.backward() in every step.

The checks, by kind:

1. splits: :func:`check_split_overlap`, :func:`check_split_sources`
2. labels: :func:`check_labels`
3. inputs: :func:`check_input_statistics`, :func:`check_image_layout`
4. augmentation and evaluation: :func:`check_augmentation` (with
   :func:`show_augmentation_pairs`), :func:`check_eval_augmentation`,
   :func:`check_eval_determinism`
5. loader: :func:`check_shuffle`, :func:`check_last_batch`
6. training step: :func:`check_zero_grad`, :func:`check_model_modes`,
   :func:`check_softmax_output`, :func:`check_gradients`, :func:`check_optimizer_params`
7. learning rate: :func:`check_lr_schedule` (with :func:`simulate_lr`),
   :func:`check_learning_rate`, :func:`check_lr_range` (with :func:`lr_range_test`)
8. capacity: :func:`check_overfit_one_batch`

:func:`run_all_checks` runs what applies and returns a :class:`CheckReport` (a table);
:func:`check_config` does it for a :class:`nbhelpers.experiment.RunConfig`.
"""

from ._core import CheckReport, CheckResult, preserved_loader_state, preserved_rng
from .augmentation import (
    check_augmentation,
    check_eval_augmentation,
    check_eval_determinism,
    find_transform,
    list_transforms,
    show_augmentation_pairs,
)
from .capacity import check_overfit_one_batch
from .data_checks import (
    check_image_layout,
    check_input_statistics,
    check_labels,
    check_split_overlap,
    check_split_sources,
    image_hashes,
)
from .loader import check_last_batch, check_shuffle
from .lr import (
    LRRangeTest,
    check_learning_rate,
    check_lr_range,
    check_lr_schedule,
    lr_range_test,
    simulate_lr,
)
from .runner import CHECK_NAMES, build_check_inputs, check_config, make_train_step, run_all_checks
from .training import (
    check_gradients,
    check_model_modes,
    check_optimizer_params,
    check_softmax_output,
    check_zero_grad,
    grad_norm,
)

__all__ = [
    "CHECK_NAMES",
    "CheckReport",
    "CheckResult",
    "LRRangeTest",
    "build_check_inputs",
    "check_augmentation",
    "check_config",
    "check_eval_augmentation",
    "check_eval_determinism",
    "check_gradients",
    "check_image_layout",
    "check_input_statistics",
    "check_labels",
    "check_last_batch",
    "check_learning_rate",
    "check_lr_range",
    "check_lr_schedule",
    "check_model_modes",
    "check_optimizer_params",
    "check_overfit_one_batch",
    "check_shuffle",
    "check_softmax_output",
    "check_split_overlap",
    "check_split_sources",
    "check_zero_grad",
    "find_transform",
    "grad_norm",
    "image_hashes",
    "list_transforms",
    "lr_range_test",
    "make_train_step",
    "preserved_loader_state",
    "preserved_rng",
    "run_all_checks",
    "show_augmentation_pairs",
    "simulate_lr",
]
