"""Cockpit that works today: compatibility, one registry of quantities, a memory/support
guard, plots, a training hook. ``from nbhelpers import cockpit_tools as ct`` is the one import.

Cockpit (Schneider, Dangel & Hennig, NeurIPS 2021; ``pip install cockpit-for-pytorch``)
shows what happens inside a training run: step sizes, gradient noise, curvature.

* importing this package makes ``import cockpit`` work on today's stack, patches
  ``Cockpit.write`` and makes failed backward passes show their real cause (:mod:`.compat`);
* :data:`QUANTITIES` (:mod:`.quantities`, entries in :mod:`.catalog`): one entry per
  quantity; the presets ``"basic"``, ``"cheap"`` (default, <= 1.25x a plain step),
  ``"handover"`` (the colleague's set), ``"standard"``, ``"thorough"`` and Cockpit's own,
  the tables, the guard and the plots follow from it;
* :func:`guard` (:mod:`.preflight`, memory model in :mod:`.memory`): which quantities fit
  into memory (estimated per tracked step) and are valid for the model, before training;
* :mod:`.validity`: layers that mix the examples of a batch (BatchNorm in train mode, ...)
  found by what they do, before training and inside every Cockpit; a warning when Alpha or
  the gradient tests run on gradients that were not reset. Only the quantities that stay
  valid run there (:data:`BATCHNORM_NOTE`); GroupNorm gets full support (:mod:`.groupnorm`,
  enabled by the hook and ``make_cockpit``);
* plots that work on every call in a notebook (:mod:`.plots`), logs (:mod:`.logs`),
  including the logs of two finished runs shipped with the package;
* :class:`CockpitHook` for :func:`nbhelpers.train.train`, :func:`make_cockpit` for your own
  loop (:mod:`.hook`).
"""

from nbhelpers.cockpit_tools.catalog import BATCHNORM_NOTE
from nbhelpers.cockpit_tools.compat import CockpitBackwardError, cockpit_version, write_log
from nbhelpers.cockpit_tools.groupnorm import enable_groupnorm_support
from nbhelpers.cockpit_tools.hook import CockpitHook, make_cockpit, quantities_for
from nbhelpers.cockpit_tools.logs import SHIPPED_LOGS, load_shipped_log, log_frame
from nbhelpers.cockpit_tools.plots import (
    INSTRUMENTS,
    LiveView,
    figure_to_png,
    plot_alpha,
    plot_dashboard,
    plot_distance,
    plot_grad_norm,
    plot_gradient_tests,
    plot_instruments,
    plot_learning_rate,
    plot_loss,
)
from nbhelpers.cockpit_tools.preflight import CockpitGuardError, guard
from nbhelpers.cockpit_tools.quantities import (
    DEFAULT_PRESET,
    PRESETS,
    QUANTITIES,
    Preset,
    Quantity,
    QuantitySpec,
    batchnorm_note,
    make_quantities,
    preset_markdown,
    preset_specs,
    preset_table,
    register,
)
from nbhelpers.cockpit_tools.validity import BatchMixingError, GradientsNotResetWarning
