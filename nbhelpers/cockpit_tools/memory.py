"""What a tracked step costs in memory: layer sizes, and one memory term per BackPACK extension.

The guard (:mod:`nbhelpers.cockpit_tools.preflight`) adds up, for a quantity, the plain training
step, the term of every BackPACK extension the quantity asks Cockpit for
(``quantity.extensions(step)``), a second graph when it asks for one
(``quantity.create_graph(step)``), and the quantity's own term (its registry entry).

Symbols: ``N`` batch size, ``s`` bytes per float, ``D`` parameters, ``V_l`` one example's
output size of layer ``l``, ``P_l`` parameters of layer ``l``, ``C`` classes.

* plain training step: ``N * (input + sum_l V_l) * s`` for activations plus ``4 * D * s``
  for weights, gradients and two optimizer buffers;
* ``BatchGrad`` (per-example gradients): ``N * D * s`` plus the largest unfolded convolution
  input, ``N * C_in * k * k * H_out * W_out * s``;
* ``DiagGGNMC`` (``M = 1`` sample) and ``DiagGGNExact`` (``M = C``):
  ``2 * M * N * max_l V_l * s`` backpropagated plus ``M * N * max_l P_l * s`` per-layer products;
* ``DiagHessian`` (Cockpit's default curvature): the ``DiagGGNExact`` term plus, behind every
  layer whose second derivative BackPACK does not know to be zero (Tanh, Sigmoid, ELU, ...),
  a dense residual of ``2 * N * V_l**2 * s`` -- why Cockpit's "business" and "full"
  configurations cannot run on the handover CNN;
* a second graph for Hessian-vector products: ``2 * N * sum_l V_l * s``.

These are estimates of the dominant tensors (within a small factor), not exact peaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from backpack.extensions import BatchGrad, DiagGGNExact, DiagGGNMC, DiagHessian
from torch import nn

from nbhelpers.state import model_device
from nbhelpers.validate import invalid


@dataclass(frozen=True)
class LayerInfo:
    """One leaf layer of the model, for one example.

    Attributes:
        name: qualified module name ("conv1"); kind: its class name ("Conv2d").
        out_numel: output values per example (V); params: parameters of the layer (P).
        unfold_numel: a convolution's unfolded input per example
            (``C_in / groups * k * k * H_out * W_out``), else 0.
        curved: BackPACK does not know the layer's second derivative to be zero.
    """

    name: str
    kind: str
    out_numel: int
    params: int
    unfold_numel: int
    curved: bool


def module_rules(extension) -> dict:
    """BackPACK's map module class -> rule of one ``extension`` object (read, never changed)."""
    return extension._BackpropExtension__module_extensions  # BackPACK keeps the map private


def _curved(module: nn.Module, rules: dict) -> bool:
    derivatives = getattr(rules.get(type(module)), "derivatives", None)
    try:
        return derivatives is None or not derivatives.hessian_is_zero(module)
    except NotImplementedError:
        return True


def _layer_info(name: str, module: nn.Module, out_shape: tuple[int, ...], rules) -> LayerInfo:
    unfold = 0
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        unfold = module.in_channels // module.groups * kernel * math.prod(out_shape[1:])
    params = sum(p.numel() for p in module.parameters(recurse=False))
    return LayerInfo(
        name, type(module).__name__, math.prod(out_shape), params, unfold, _curved(module, rules)
    )


def layer_shapes(
    model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)
) -> tuple[list[LayerInfo], int]:
    """Per-example output size and parameter count of every leaf layer, in call order.

    One single-example forward pass (zeros) in eval mode under ``torch.no_grad()`` on the
    model's device: BatchNorm statistics stay untouched and every module gets its mode back.

    Args:
        model: the network; its parameters decide the device and dtype.
        input_shape: one example's shape without the batch axis, e.g. (3, 32, 32).

    Returns:
        ``(layers, itemsize)``: a :class:`LayerInfo` per leaf layer and the bytes per float
        of the parameters (4 for float32).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"guard expects an nn.Module, got {type(model).__name__}")
    rules = module_rules(DiagHessian())
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    layers: list[LayerInfo] = []

    def recorder(name: str):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            layers.append(_layer_info(name, module, tuple(out.shape[1:]), rules))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(recorder(n)) for n, m in leaves]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return layers, torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class Shapes:
    """The sizes the memory terms read: layers (per example), bytes per float, classes."""

    layers: tuple[LayerInfo, ...]
    itemsize: int
    input_numel: int
    num_classes: int

    @property
    def D(self) -> int:  # noqa: N802 - the standard symbol
        return sum(layer.params for layer in self.layers)

    @property
    def activations(self) -> int:
        return self.input_numel + sum(layer.out_numel for layer in self.layers)

    def largest(self, field: str, curved_only: bool = False) -> int:
        """The largest ``LayerInfo.<field>`` over the layers (0 if none)."""
        values = [getattr(x, field) for x in self.layers if x.curved or not curved_only]
        return max(values, default=0)

    def base(self, n: int) -> int:
        """Bytes of a plain training step at batch size ``n``."""
        return (n * self.activations + 4 * self.D) * self.itemsize

    def per_example(self, n: int) -> int:
        """Bytes of ``n`` per-example gradients and the largest unfolded input."""
        return n * (self.D + self.largest("unfold_numel")) * self.itemsize

    def ggn(self, n: int, samples: int) -> int:
        """Bytes of a GGN diagonal backpropagating ``samples`` vectors per example."""
        per_vector = 2 * self.largest("out_numel") + self.largest("params")
        return samples * n * per_vector * self.itemsize


@dataclass(frozen=True)
class Term:
    """One memory term: what it holds, and its bytes as a function of (shapes, batch size)."""

    label: str
    bytes: Callable[[Shapes, int], int]


def _hessian_residual(sh: Shapes, n: int) -> int:
    return 2 * n * sh.largest("out_numel", curved_only=True) ** 2 * sh.itemsize


#: One memory term per BackPACK extension (see the module docstring).
EXTENSION_MEMORY: dict[type, Term] = {
    BatchGrad: Term("per-example gradients", lambda sh, n: sh.per_example(n)),
    DiagGGNMC: Term("GGN diagonal (Monte Carlo)", lambda sh, n: sh.ggn(n, 1)),
    DiagGGNExact: Term("GGN diagonal (exact)", lambda sh, n: sh.ggn(n, sh.num_classes)),
    DiagHessian: Term(
        "exact Hessian diagonal",
        lambda sh, n: sh.ggn(n, sh.num_classes) + _hessian_residual(sh, n),
    ),
}

#: The term of a quantity that keeps the graph for Hessian-vector products.
SECOND_GRAPH = Term(
    "second graph for Hessian-vector products", lambda sh, n: 2 * n * sh.activations * sh.itemsize
)


def extension_term(extension) -> Term:
    """The memory term of one BackPACK extension object.

    Raises:
        ValueError: no term is known for its class (add one to :data:`EXTENSION_MEMORY`).
    """
    if type(extension) not in EXTENSION_MEMORY:
        known = ", ".join(cls.__name__ for cls in EXTENSION_MEMORY)
        raise invalid(
            "BackPACK extension", type(extension).__name__, f"one with a memory term: {known}"
        )
    return EXTENSION_MEMORY[type(extension)]
