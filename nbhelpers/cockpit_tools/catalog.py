"""Every Cockpit quantity the package knows: one registry entry each.

Adding a quantity is one more ``register(Quantity(...))`` here: presets, the guard, the
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
_GGN_MC = {"curvature": "diag_ggn_mc"}
_PER_LAYER_NORM = "(per layer; the plot shows the total)"

register(Quantity(q.Loss, "mini-batch training loss of the step", "basic", plot=plots.plot_loss))
register(
    Quantity(
        q.GradNorm,
        f"L2 norm of the gradient the optimizer uses {_PER_LAYER_NORM}",
        "basic",
        plot=plots.plot_grad_norm,
        column=total_norm,
    )
)
register(
    Quantity(
        q.Distance,
        "L2 distance of the weights from their initial values (per layer)",
        "basic",
        memory=_WEIGHTS,
        plot=plots.plot_distance,
        column=total_norm,
    )
)
register(
    Quantity(
        q.UpdateSize,
        "L2 norm of the change the optimizer step made to the weights (per layer)",
        "basic",
        memory=_WEIGHTS,
        plot=plots.plot_distance,
        column=total_norm,
    )
)
register(
    Quantity(
        q.Alpha,
        "normalised step length from a noise-aware 1D quadratic fit along the step (Mahsereci & "
        "Hennig, 2017): -1 = no progress (step far too small), 0 = step lands in the valley "
        "floor, +1 = step jumps to the same height on the other side (too large)",
        "cheap",
        every=10,
        plot=plots.plot_alpha,
        # kept from the start to the end step for optimizers other than plain SGD
        memory=Term("its start step's per-example gradients", lambda sh, n: sh.per_example(n)),
    )
)
register(
    Quantity(
        q.InnerTest,
        "inner-product test (Bollapragada et al., 2018): noise of the batch gradient along its "
        "own direction, relative to its norm; near or above 1 = batch too small",
        "standard",
        every=10,
        plot=plots.plot_gradient_tests,
    )
)
register(
    Quantity(
        q.NormTest,
        "norm test (Byrd et al., 2012): noise of the batch gradient relative to its norm "
        "(smallest passing theta); near or above 1 = batch too small",
        "standard",
        every=10,
        plot=plots.plot_gradient_tests,
    )
)
register(
    Quantity(
        q.OrthoTest,
        "orthogonality test (Bollapragada et al., 2018): noise orthogonal to the batch gradient, "
        "relative to its norm; large = the direction is unreliable",
        "standard",
        every=10,
        plot=plots.plot_gradient_tests,
    )
)
register(
    Quantity(
        q.GradHist1d,
        "histogram of all per-example gradient entries",
        "standard",
        every=10,
        column=None,
    )
)
register(
    Quantity(
        q.GradHist2d,
        "2D histogram of per-example gradient entries against weight values",
        "thorough",
        every=20,
        column=None,
        memory=Term("2D binning", lambda sh, n: 3 * n * sh.largest("params") * sh.itemsize),
    )
)
register(
    Quantity(
        q.HessTrace,
        "trace of the curvature matrix per layer (GGN diagonal in our presets)",
        "thorough",
        every=20,
        options=_GGN_MC,
        column=layer_sum,
    )
)
register(
    Quantity(
        q.TICDiag,
        "Takeuchi information criterion with a diagonal curvature (Thomas et al., 2020)",
        "thorough",
        every=20,
        options=_GGN_MC,
    )
)
register(
    Quantity(
        HessMaxEV,
        "largest eigenvalue of the mini-batch loss Hessian (sharpness)",
        "thorough",
        every=100,
        options={"method": "lanczos"},
        memory=Term("20 iteration vectors", lambda sh, n: 20 * sh.D * sh.itemsize),
    )
)
register(Quantity(q.MeanGSNR, "mean gradient signal-to-noise ratio (Liu et al., 2020)"))

#: Markdown for the notebook: what each quantity means on a BatchNorm model (train mode).
BATCHNORM_NOTE = batchnorm_note()
