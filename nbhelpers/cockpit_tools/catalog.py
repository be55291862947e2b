"""Every Cockpit quantity the package knows: one registry entry each.

Adding a quantity is one more ``Quantity(...)`` in :data:`ENTRIES`: presets, the guard, the
preset and BatchNorm tables, ``log_frame`` and the plots then know it. What it needs from
BackPACK is asked from Cockpit (the built quantity's ``extensions`` and ``create_graph``);
an entry only adds what Cockpit does not say (see :class:`~.quantities.Quantity`).
Meanings: Cockpit's documentation and the papers named there.
"""

from __future__ import annotations

from nbhelpers.cockpit_tools import plots
from nbhelpers.cockpit_tools.compat import import_cockpit
from nbhelpers.cockpit_tools.lanczos import HessMaxEV
from nbhelpers.cockpit_tools.logs import layer_sum, total_norm
from nbhelpers.cockpit_tools.memory import Term
from nbhelpers.cockpit_tools.quantities import Quantity, batchnorm_note, register

q = import_cockpit().quantities
_WEIGHTS = Term("a copy of the weights", lambda sh, n: sh.D * sh.itemsize)


def _alpha_copies(quantity, step: int) -> int:
    """For any optimizer but plain SGD, Alpha copies the per-example gradients (and weights
    and gradient) at its start step, keeps them to its end step, and copies again there."""
    if "grad_batch" not in quantity.protected_savefields(step):
        return 0  # plain SGD: projected during the backward pass, nothing kept
    return int(quantity.is_start(step)) + 2 * int(quantity.is_end(step))


def _layer_copies(k: int):
    return lambda sh, n: k * n * sh.largest("params") * sh.itemsize


_ALPHA = Term(
    "copies of its start and end step's per-example gradients",
    lambda sh, n: sh.per_example(n) + 2 * sh.D * sh.itemsize,
    copies=_alpha_copies,
)
_SQUARES = Term("squares of one layer's per-example gradients", _layer_copies(1), True)
_CLIPPED = Term("clipped copies of one layer's per-example gradients", _layer_copies(2), True)
_BINS = Term("2D binning of one layer's per-example gradients", _layer_copies(8), True)
# After the backward pass (BackPACK's buffers freed): one product through the second graph
# holds about 5 N A floats (measured), the iteration ~20 vectors of D.
_LANCZOS = Term(
    "Lanczos vectors and a Hessian-vector product's temporaries",
    lambda sh, n: (20 * sh.D + 5 * n * sh.activations) * sh.itemsize,
    transient=True,
)
_GGN_MC = {"curvature": "diag_ggn_mc"}
_TESTS = plots.plot_gradient_tests

#: The registry's entries, in the order of the tables (cheapest preset first).
ENTRIES = (
    Quantity(q.Loss, "mini-batch training loss of the step", "basic", plot=plots.plot_loss),
    Quantity(
        q.GradNorm,
        "L2 norm of the gradient the optimizer uses (per layer; the plot shows the total)",
        "basic",
        plot=plots.plot_grad_norm,
        column=total_norm,
    ),
    Quantity(
        q.Distance,
        "L2 distance of the weights from their initial values (per layer)",
        "basic",
        memory=_WEIGHTS,
        plot=plots.plot_distance,
        column=total_norm,
    ),
    Quantity(
        q.UpdateSize,
        "L2 norm of the change the optimizer step made to the weights (per layer)",
        "basic",
        memory=_WEIGHTS,
        plot=plots.plot_distance,
        column=total_norm,
    ),
    Quantity(
        q.Alpha,
        "normalised step length from a noise-aware 1D quadratic fit along the step (Mahsereci & "
        "Hennig, 2017): -1 = no progress (step far too small), 0 = step lands in the valley "
        "floor, +1 = step jumps to the same height on the other side (too large)",
        "cheap",
        every=10,
        memory=_ALPHA,
        plot=plots.plot_alpha,
        needs_zero_grad=True,
    ),
    Quantity(
        q.InnerTest,
        "inner-product test (Bollapragada et al., 2018): noise of the batch gradient along its "
        "own direction, relative to its norm; near or above 1 = batch too small",
        "standard",
        every=10,
        memory=_SQUARES,
        plot=_TESTS,
        needs_zero_grad=True,
    ),
    Quantity(
        q.NormTest,
        "norm test (Byrd et al., 2012): noise of the batch gradient relative to its norm "
        "(smallest passing theta); near or above 1 = batch too small",
        "standard",
        every=10,
        memory=_SQUARES,
        plot=_TESTS,
        needs_zero_grad=True,
    ),
    Quantity(
        q.OrthoTest,
        "orthogonality test (Bollapragada et al., 2018): noise orthogonal to the batch gradient, "
        "relative to its norm; large = the direction is unreliable",
        "standard",
        every=10,
        memory=_SQUARES,
        plot=_TESTS,
        needs_zero_grad=True,
    ),
    Quantity(
        q.GradHist1d,
        "histogram of all per-example gradient entries",
        "standard",
        10,
        memory=_CLIPPED,
        column=None,
    ),
    Quantity(
        q.GradHist2d,
        "2D histogram of per-example gradient entries against weight values",
        "thorough",
        every=20,
        memory=_BINS,
        column=None,
    ),
    Quantity(
        q.HessTrace,
        "trace of the curvature matrix per layer (GGN diagonal in our presets)",
        "thorough",
        every=20,
        options=_GGN_MC,
        column=layer_sum,
    ),
    Quantity(
        q.TICDiag,
        "Takeuchi information criterion with a diagonal curvature (Thomas et al., 2020); "
        "with the one-sample Monte-Carlo GGN of our presets it is biased high (it divides by "
        "a noisy curvature estimate, and E[1/X] > 1/E[X]): compare runs of one curvature only",
        "thorough",
        every=20,
        options=_GGN_MC,
        memory=_SQUARES,
    ),
    Quantity(
        HessMaxEV,
        "largest eigenvalue of the mini-batch loss Hessian (sharpness); our presets' Lanczos "
        "gives the largest *algebraic* one (the most positive: a negative eigenvalue of larger "
        "magnitude is not shown), Cockpit's power iteration the one of largest magnitude",
        "thorough",
        every=100,
        options={"method": "lanczos"},
        memory=_LANCZOS,
    ),
    Quantity(
        q.MeanGSNR,
        "mean gradient signal-to-noise ratio (Liu et al., 2020)",
        memory=_SQUARES,
        needs_zero_grad=True,
    ),
)
for _entry in ENTRIES:
    register(_entry)

#: Markdown for the notebook: what each quantity means on a BatchNorm model (train mode).
BATCHNORM_NOTE = batchnorm_note()
