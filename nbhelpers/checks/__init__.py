"""Automatic sanity checks that catch common training bugs, and ``run_all_checks``.

Every check takes the learner's own objects (model, loaders, datasets, loss, optimizer,
scheduler, train step), runs in seconds on a CPU, never changes them (it works on deep copies,
simulates schedules on copies, restores random states and loader epoch counters), and returns a
:class:`CheckResult` that prints as one pass/fail line with the evidence and a hint::

    [FAIL] zero_grad: gradient norm after 3 identical steps ... 0.41, 0.82, 1.23 (x3.00) ...
           hint: Call optimizer.zero_grad() before loss.backward() in every step.

The checks, by kind (one module each):

1. splits, labels, inputs (``data_checks``): :func:`check_split_overlap`,
   :func:`check_labels`, :func:`check_input_statistics`, :func:`check_image_layout`; how the
   splits were cut (``splits``): :func:`check_split_sources`, :func:`check_split_seed`,
   :func:`check_shared_transform`
2. augmentation and evaluation (``augmentation``): :func:`check_augmentation` (with
   :func:`show_augmentation_pairs`), :func:`check_eval_augmentation`,
   :func:`check_eval_determinism`
3. loader (``loader``): :func:`check_shuffle`, :func:`check_last_batch`
4. training step (``training``): :func:`check_zero_grad`, :func:`check_model_modes`,
   :func:`check_softmax_output`, :func:`check_gradients`, :func:`check_optimizer_params`
5. learning rate (``lr``): :func:`check_lr_schedule` (with :func:`simulate_lr`),
   :func:`check_learning_rate`, :func:`check_lr_range` (with :func:`lr_range_test`)
6. capacity (``capacity``): :func:`check_overfit_one_batch`

The same faults found in a live run, in the learner's own loop, are the watch's
(:mod:`nbhelpers.watch`); both word them with ``results.HINTS``.

``CHECKS`` (``runner``) is the table of them: one :class:`Check` row per check (its name, the
inputs it needs, how it runs). :func:`run_all_checks` runs the rows whose inputs are given
(``only=`` / ``skip=`` choose by name) and returns a :class:`CheckReport`; :func:`check_config`
does it for a :class:`nbhelpers.experiment.RunConfig`. ``results`` holds the result types,
``access`` the code that reads the learner's objects without changing them.
"""

from .access import find_transform
from .augmentation import (
    check_augmentation,
    check_eval_augmentation,
    check_eval_determinism,
    show_augmentation_pairs,
)
from .capacity import check_overfit_one_batch
from .data_checks import (
    check_image_layout,
    check_input_statistics,
    check_labels,
    check_split_overlap,
)
from .loader import check_last_batch, check_shuffle
from .lr import check_learning_rate, check_lr_range, check_lr_schedule, lr_range_test, simulate_lr
from .results import HINTS, CheckReport, CheckResult
from .runner import CHECK_NAMES, CHECKS, Check, CheckInputs, check_config, register, run_all_checks
from .splits import check_shared_transform, check_split_seed, check_split_sources
from .training import (
    check_gradients,
    check_model_modes,
    check_optimizer_params,
    check_softmax_output,
    check_zero_grad,
)
