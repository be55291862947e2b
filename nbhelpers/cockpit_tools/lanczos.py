"""Cockpit's HessMaxEV quantity with a bounded Lanczos iteration as an option.

Cockpit's default power iteration finds the eigenvalue of largest *magnitude* (which may be
negative) and can take its full 100 Hessian-vector products; with ``use_power=False`` it calls
``scipy.sparse.linalg.eigsh`` at machine precision with no iteration limit, which can run for
many minutes on a CPU. :class:`HessMaxEV` (same class name, so logs and plots are unchanged)
keeps Cockpit's behaviour with ``method="power"`` (the default) and adds ``method="lanczos"``:
``eigsh(k=1, which="LA")`` -- the largest algebraic eigenvalue -- with ``tol=1e-2``,
``ncv=10``, at most ``maxiter=5`` restarts and a fixed start vector (about 20-50
Hessian-vector products through the gradient's graph, by Cockpit's ``HVPLinearOperator``);
without convergence it returns its best estimate (or NaN).
"""

from __future__ import annotations

import numpy as np

from nbhelpers.cockpit_tools.compat import import_cockpit

_quantities = import_cockpit().quantities


class HessMaxEV(_quantities.HessMaxEV):
    """Largest Hessian eigenvalue: Cockpit's power iteration, or bounded Lanczos (module docstring).

    Args:
        track_schedule, verbose: as for every Cockpit quantity.
        method: "power" (Cockpit's own) or "lanczos".
        tol, ncv, maxiter, seed: Lanczos tolerance, basis size, restarts, start-vector seed.
    """

    def __init__(
        self, track_schedule, verbose=False, method="power", tol=1e-2, ncv=10, maxiter=5, seed=0
    ):
        super().__init__(track_schedule, verbose=verbose, use_power=method != "lanczos")
        self._lanczos = method == "lanczos"
        self._tol, self._ncv, self._maxiter, self._seed = tol, ncv, maxiter, seed

    def _compute(self, global_step, params, batch_loss):
        if not self._lanczos:
            return super()._compute(global_step, params, batch_loss)
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        grads = self._fetch_grad(params)
        if any(g is None or g.grad_fn is None for g in grads):
            return np.float64(np.nan)  # no graph kept (create_graph was not requested)
        operator = _quantities.hess_max_ev.HVPLinearOperator(batch_loss, params, grad_params=grads)
        n = operator.shape[0]
        v0 = np.random.default_rng(self._seed).standard_normal(n).astype(np.float32)
        try:
            values = eigsh(
                operator,
                k=1,
                which="LA",
                tol=self._tol,
                ncv=min(self._ncv, n - 1),
                maxiter=self._maxiter,
                v0=v0,
                return_eigenvectors=False,
            )
        except ArpackNoConvergence as err:
            values = err.eigenvalues if len(err.eigenvalues) else [np.nan]
        return np.float64(values[0])
