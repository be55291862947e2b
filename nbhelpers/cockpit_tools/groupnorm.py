"""BackPACK rules for ``nn.GroupNorm``, so Cockpit's per-example instruments work with it.

BatchNorm in train mode normalises each feature with statistics of the whole
batch, so the loss of one example depends on every other example and
"per-example gradients" do not exist; Cockpit's Alpha, gradient tests,
histograms and curvature quantities are then silently wrong. GroupNorm (Wu & He,
"Group Normalization", ECCV 2018) normalises each example with its *own*
statistics, so per-example gradients are well defined -- but BackPACK 1.7.1 has
no rule for it: for per-example gradients it only warns ("does not have an
extension for Module GroupNorm although the module has parameters") and leaves
that layer's out, so Cockpit's quantities would fail later (the package's Cockpit
context stops at the layer instead, naming it); its curvature extensions refuse it.

This module adds the missing rules through BackPACK's documented way of
supporting extra layers (``BackpropExtension.set_module_extension``):

* :class:`GroupNormDerivatives`: the transposed Jacobians of
  ``y = x_hat * weight + bias`` with ``x_hat = (x - mean) / sqrt(var + eps)``
  (mean and biased variance over each example's group of ``C/G * H * W``
  values): w.r.t. the input, ``dx = (d - mean(d) - x_hat * mean(d * x_hat)) /
  sqrt(var + eps)`` with ``d = v * weight`` (means over the group), w.r.t. the
  weight ``sum_hw v * x_hat`` and the bias ``sum_hw v``.
* :func:`enable_groupnorm_support` registers them for ``BatchGrad`` (per-example
  gradients: Alpha, gradient tests, histograms, GSNR, TIC) and for the
  generalised Gauss-Newton diagonals ``DiagGGNExact`` / ``DiagGGNMC`` (HessTrace,
  TIC with ``curvature="diag_ggn_*"``). ``DiagHessian`` would also need
  GroupNorm's second derivative and stays unsupported.

The test suite checks both rules against plain autograd.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from backpack.core.derivatives.basederivatives import BaseParameterDerivatives
from torch import Tensor, nn


def _x_hat(module: nn.GroupNorm, subsampling: list[int] | None = None) -> Tensor:
    """Normalised input (before weight and bias), shape ``[N, C, *spatial]``."""
    x = module.input0 if subsampling is None else module.input0[subsampling]
    return F.group_norm(x, module.num_groups, eps=module.eps)


def _channel_view(vector: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector ``[C]`` to broadcast over ``[V, N, C, *spatial]``."""
    return vector.view(1, 1, -1, *([1] * (ndim - 3)))


class GroupNormDerivatives(BaseParameterDerivatives):
    """Transposed Jacobians of ``nn.GroupNorm`` for BackPACK (see module docstring).

    Shapes: ``mat`` is ``[V, N, C, *spatial]`` (V stacked vectors shaped like the
    layer output); results are ``[V, N, C, *spatial]`` (input),
    ``[V, (N,) C]`` (weight and bias; N kept when ``sum_batch=False``). The methods override
    BackPACK's ``BaseParameterDerivatives`` (arguments as documented there).
    """

    def hessian_is_zero(self, module: nn.GroupNorm) -> bool:
        """GroupNorm is not linear in its input."""
        return False

    def hessian_is_diagonal(self, module: nn.GroupNorm) -> bool:
        """The second derivative couples all values of a group."""
        return False

    def _jac_t_mat_prod(self, module, g_inp, g_out, mat, subsampling=None) -> Tensor:
        x = module.input0 if subsampling is None else module.input0[subsampling]
        n, groups = x.shape[0], module.num_groups
        grouped = x.reshape(n, groups, -1)
        var = grouped.var(dim=-1, unbiased=False)
        inv_std = (var + module.eps).rsqrt()[None, :, :, None]  # [1, N, G, 1]
        d = mat if module.weight is None else mat * _channel_view(module.weight, mat.dim())
        d = d.reshape(mat.shape[0], n, groups, -1)
        x_hat = ((grouped - grouped.mean(dim=-1, keepdim=True)) * inv_std[0])[None]
        mean_d = d.mean(dim=-1, keepdim=True)
        mean_dx = (d * x_hat).mean(dim=-1, keepdim=True)
        return ((d - mean_d - x_hat * mean_dx) * inv_std).reshape(mat.shape)

    def _weight_jac_t_mat_prod(self, module, g_inp, g_out, mat, sum_batch=True, subsampling=None):
        x_hat = _x_hat(module, subsampling)
        equation = f"vnc...,nc...->v{'' if sum_batch else 'n'}c"
        return torch.einsum(equation, mat, x_hat)

    def _bias_jac_t_mat_prod(self, module, g_inp, g_out, mat, sum_batch=True, subsampling=None):
        axes = tuple(range(3, mat.dim()))
        if sum_batch:
            axes = (1, *axes)
        return mat.sum(dim=axes) if axes else mat


def _module_extensions():
    """(extension class, factory of its GroupNorm module extension) pairs."""
    from backpack.extensions import BatchGrad, DiagGGNExact, DiagGGNMC
    from backpack.extensions.firstorder.batch_grad.batch_grad_base import BatchGradBase
    from backpack.extensions.secondorder.diag_ggn.diag_ggn_base import DiagGGNBaseModule

    def batch_grad():
        return BatchGradBase(derivatives=GroupNormDerivatives(), params=["bias", "weight"])

    def diag_ggn():
        return DiagGGNBaseModule(GroupNormDerivatives(), ["weight", "bias"], sum_batch=True)

    return ((BatchGrad, batch_grad), (DiagGGNExact, diag_ggn), (DiagGGNMC, diag_ggn))


def covers(extension) -> bool:
    """Whether :func:`enable_groupnorm_support` gives ``extension`` (an instance) a GroupNorm rule."""
    return isinstance(extension, tuple(cls for cls, _ in _module_extensions()))


def _wrap_init(ext_cls, factory) -> None:
    original = ext_cls.__init__
    if getattr(original, "_nbhelpers_groupnorm", False):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):  # noqa: N807
        original(self, *args, **kwargs)
        self.set_module_extension(nn.GroupNorm, factory(), overwrite=True)

    __init__._nbhelpers_groupnorm = True
    ext_cls.__init__ = __init__


def enable_groupnorm_support() -> None:
    """Teach BackPACK's ``BatchGrad``, ``DiagGGNExact`` and ``DiagGGNMC`` about ``nn.GroupNorm``.

    Every extension object created afterwards (Cockpit creates new ones at every
    tracked step) knows the GroupNorm rules of :class:`GroupNormDerivatives`.
    Idempotent; affects this Python process only. The memory guard does not call it:
    it counts GroupNorm as supported by the extensions this covers (:func:`covers`).

    Raises:
        ImportError: backpack-for-pytorch is not installed.
    """
    for ext_cls, factory in _module_extensions():
        _wrap_init(ext_cls, factory)
