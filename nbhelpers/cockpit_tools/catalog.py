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
# Alpha keeps them from its start to its end step for optimizers other than plain SGD.
_ALPHA = Term("its start step's per-example gradients", lambda sh, n: sh.per_example(n))
_BINS = Term("2D binning", lambda sh, n: 3 * n * sh.largest("params") * sh.itemsize)
_LANCZOS = Term("20 iteration vectors", lambda sh, n: 20 * sh.D * sh.itemsize)
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
    ),
    Quantity(
        q.InnerTest,
        "inner-product test (Bollapragada et al., 2018): noise of the batch gradient along its "
        "own direction, relative to its norm; near or above 1 = batch too small",
        "standard",
        every=10,
        plot=_TESTS,
    ),
    Quantity(
        q.NormTest,
        "norm test (Byrd et al., 2012): noise of the batch gradient relative to its norm "
        "(smallest passing theta); near or above 1 = batch too small",
        "standard",
        every=10,
        plot=_TESTS,
    ),
    Quantity(
        q.OrthoTest,
        "orthogonality test (Bollapragada et al., 2018): noise orthogonal to the batch gradient, "
        "relative to its norm; large = the direction is unreliable",
        "standard",
        every=10,
        plot=_TESTS,
    ),
    Quantity(
        q.GradHist1d, "histogram of all per-example gradient entries", "standard", 10, column=None
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
        "Takeuchi information criterion with a diagonal curvature (Thomas et al., 2020)",
        "thorough",
        every=20,
        options=_GGN_MC,
    ),
    Quantity(
        HessMaxEV,
        "largest eigenvalue of the mini-batch loss Hessian (sharpness)",
        "thorough",
        every=100,
        options={"method": "lanczos"},
        memory=_LANCZOS,
    ),
    Quantity(q.MeanGSNR, "mean gradient signal-to-noise ratio (Liu et al., 2020)"),
)
for _entry in ENTRIES:
    register(_entry)

#: Markdown for the notebook: what each quantity means on a BatchNorm model (train mode).
BATCHNORM_NOTE = batchnorm_note()
