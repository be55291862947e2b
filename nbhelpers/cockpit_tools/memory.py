"""What one Cockpit step costs in memory: layer sizes, one model per BackPACK extension, steps.

A tracked step's estimate (:func:`step_bytes`) is what the step holds at its peak::

    plain step of the extended model + everything held through the step
        + the largest buffer alive while one layer is processed

summed over what *all* quantities tracked at that step ask Cockpit for (Cockpit runs their
BackPACK extensions in one backward pass). Symbols: ``N`` batch size, ``s`` bytes per float,
``D`` parameters, ``A`` one example's input plus every layer's output, ``V_l`` (``V'_l``)
one example's output (input) size of layer ``l``, ``P_l`` its parameters, ``C`` classes.

* plain step of a BackPACK-extended model: ``2 * N * A * s + 4 * D * s``. BackPACK keeps
  every module's input and output for its backward hooks, and the backward pass holds
  gradients beside them (measured: twice the activations of a plain step); weights,
  gradients, two Adam buffers.
* ``BatchGrad`` (per-example gradients): per layer ``N * P_l`` while it is computed, plus
  for a convolution the input repeated for BackPACK's per-example convolution trick and its
  reordered copy, ``2 * N * V'_l``. When a quantity keeps them to the end of the step (Alpha
  for any optimizer but plain SGD: ``protected_savefields``), ``N * D`` held.
* ``DiagGGNMC`` (``M = mc_samples``), ``DiagGGNExact`` (``M = C``), ``DiagHessian``: BackPACK
  backpropagates a list of matrices ``[columns, N, V_l]``, starting with the loss's factor
  of ``M`` (``C``) columns; the Hessian diagonal adds, at every layer whose second derivative
  BackPACK does not know to be zero (Tanh, Sigmoid, ...), a positive and a negative dense
  factor of ``V_l`` columns each (built from an ``N x V_l x V_l`` diagonal embedding) and
  carries them all back to the first layer. At each layer the matrices at its output and the
  results at its input coexist (``rows = columns * N``); the largest matrix then adds a
  weight's products (``rows * V_l``, for a convolution plus ``rows * P_l`` and the unfolded
  input ``N * C_in * k * k * HW_out``) and, for the transposed convolution, oneDNN's reordered
  copies, whose channels are padded to blocks of 16
  (``rows * (pad16(C_out) * HW_out + pad16(C_in) * HW_in + V'_l)``; they add up in resident
  memory, as the allocator keeps freed blocks), or the two new factors
  (``3 * N * V_l**2``). The busiest layer counts.
* a second graph for Hessian-vector products (``create_graph``): ``2 * N * A * s`` held.
* a quantity's own buffers: its registry entry's :class:`Term` (e.g. Alpha's copies of the
  per-example gradients, a histogram's clipped copy of one layer's).
* all times :data:`ALLOCATOR_SLACK`.

Resident memory, not only live tensors, is what runs out: glibc keeps freed blocks below its
(growing) mmap threshold for reuse, and when a second-order extension runs at consecutive
steps the next step reuses them only in part, so the peak grows for a few steps before it
levels off (measured: up to 1.5x; :data:`REPEATED_SECOND_ORDER`).

These follow what BackPACK 1.7 and Cockpit 1.0 allocate; tests/test_cockpit_memory.py checks
them against the peak resident memory of real runs (estimate >= measured, <= 2x measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
        in_numel, out_numel: input and output values per example (V', V).
        params: parameters of the layer (P).
        channels: a convolution's (C_in, C_out), else (0, 0).
        unfold_numel: a convolution's unfolded input per example
            (``C_in / groups * k * k * H_out * W_out``), else 0.
        curved: BackPACK does not know the layer's second derivative to be zero.
        first: its input is the model's input (nothing is backpropagated past it).
    """

    name: str
    kind: str
    in_numel: int
    out_numel: int
    params: int
    channels: tuple[int, int]
    unfold_numel: int
    curved: bool
    first: bool


def module_rules(extension) -> dict:
    """BackPACK's map module class -> rule of one ``extension`` object (read, never changed)."""
    return extension._BackpropExtension__module_extensions  # BackPACK keeps the map private


def _curved(module: nn.Module, rules: dict) -> bool:
    derivatives = getattr(rules.get(type(module)), "derivatives", None)
    try:
        return derivatives is None or not derivatives.hessian_is_zero(module)
    except NotImplementedError:
        return True


def _layer_info(name, module, x, out, rules, model_input) -> LayerInfo:
    conv = isinstance(module, nn.modules.conv._ConvNd)
    channels, unfold = (0, 0), 0
    if conv:
        channels = (module.in_channels, module.out_channels)
        kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
        unfold = kernel * math.prod(out.shape[2:])
    params = sum(p.numel() for p in module.parameters(recurse=False))
    first = x.data_ptr() == model_input.data_ptr()
    numel = (x[0].numel(), out[0].numel())
    curved = _curved(module, rules)
    return LayerInfo(name, type(module).__name__, *numel, params, channels, unfold, curved, first)


def layer_shapes(
    model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)
) -> tuple[list[LayerInfo], int]:
    """Per-example input/output size and parameter count of every leaf layer, in call order.

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
    x = torch.zeros((1, *input_shape), dtype=dtype, device=model_device(model))
    layers: list[LayerInfo] = []

    def recorder(name: str):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            layers.append(_layer_info(name, module, inputs[0], out, rules, x))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(recorder(n)) for n, m in leaves]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return layers, torch.empty((), dtype=dtype).element_size()


def _pad16(channels: int) -> int:
    return -(-channels // 16) * 16


@dataclass(frozen=True)
class Shapes:
    """The sizes the memory models read: layers (per example), bytes per float, classes."""

    layers: tuple[LayerInfo, ...]
    itemsize: int
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    @property
    def D(self) -> int:  # noqa: N802 - the standard symbol
        return sum(layer.params for layer in self.layers)

    @property
    def activations(self) -> int:
        return self.input_numel + sum(layer.out_numel for layer in self.layers)

    def largest(self, field: str) -> int:
        """The largest ``LayerInfo.<field>`` over the layers (0 if none)."""
        return max((getattr(x, field) for x in self.layers), default=0)

    def base(self, n: int) -> int:
        """Bytes of a plain training step of the BackPACK-extended model at batch size ``n``."""
        return (2 * n * self.activations + 4 * self.D) * self.itemsize

    def per_example(self, n: int) -> int:
        """Bytes of ``n`` per-example gradients of all parameters."""
        return n * self.D * self.itemsize

    def batch_grad_peak(self, n: int) -> int:
        """Bytes alive while BackPACK computes one layer's per-example gradients."""
        return (
            n
            * max((x.params + 2 * x.in_numel * (x.channels[0] > 0) for x in self.layers), default=0)
            * self.itemsize
        )

    def second_order_peak(self, n: int, columns: int, residuals: bool) -> int:
        """Bytes of BackPACK's busiest layer when it backpropagates matrices (module docstring)."""
        matrices, peak = [columns], 0
        for x in reversed(self.layers):
            if residuals and x.curved:
                matrices += [x.in_numel, x.in_numel]
            rows, largest = n * sum(matrices), n * max(matrices)
            held = rows * (x.out_numel + (0 if x.first else x.in_numel))
            local = largest * x.out_numel  # a weight's products J^T S
            if x.channels[0]:
                local += largest * x.params + n * x.unfold_numel
            if x.channels[0] and not x.first:  # the transposed convolution, oneDNN's copies
                c_in, c_out = x.channels
                padded = _pad16(c_out) * x.out_numel // c_out + _pad16(c_in) * x.in_numel // c_in
                local += largest * (padded + x.in_numel)
            if residuals and x.curved:  # the new factors: a diagonal embedding and its copy
                local = max(local, 3 * n * x.in_numel**2)
            peak = max(peak, held + local)
        return peak * self.itemsize


@dataclass(frozen=True)
class Cost:
    """Bytes a step holds until its end (``held``) and bytes alive only while one layer is
    processed (``peak``; the largest of a step counts, they do not add up)."""

    held: int = 0
    peak: int = 0


@dataclass(frozen=True)
class ExtensionMemory:
    """The memory model of one BackPACK extension: a label and ``cost(shapes, N, ext, kept)``
    (``kept``: a quantity keeps the per-example gradients to the end of the step).

    ``repeated``: factor on its peak when it also ran the step before (module docstring).
    """

    label: str
    cost: Callable[[Shapes, int, Any, bool], Cost]
    repeated: float = 1.0


def _batch_grad(sh: Shapes, n: int, ext, kept: bool) -> Cost:
    return Cost(sh.per_example(n) if kept else 0, sh.batch_grad_peak(n))


def _second_order(columns: Callable[[Shapes, Any], int], residuals: bool = False):
    def cost(sh: Shapes, n: int, ext, kept: bool) -> Cost:
        return Cost(sh.D * sh.itemsize, sh.second_order_peak(n, columns(sh, ext), residuals))

    return cost


def _classes(sh: Shapes, ext) -> int:
    return sh.num_classes


#: Growth of a second-order extension's peak when it runs at consecutive steps (measured up
#: to 1.5x, then flat; see the module docstring).
REPEATED_SECOND_ORDER = 1.6

#: One memory model per BackPACK extension (see the module docstring).
EXTENSION_MEMORY: dict[type, ExtensionMemory] = {
    BatchGrad: ExtensionMemory("per-example gradients", _batch_grad),
    DiagGGNMC: ExtensionMemory(
        "GGN diagonal (Monte Carlo)",
        _second_order(lambda sh, ext: ext.get_num_mc_samples()),
        REPEATED_SECOND_ORDER,
    ),
    DiagGGNExact: ExtensionMemory(
        "GGN diagonal (exact)", _second_order(_classes), REPEATED_SECOND_ORDER
    ),
    DiagHessian: ExtensionMemory(
        "exact Hessian diagonal", _second_order(_classes, True), REPEATED_SECOND_ORDER
    ),
}


def extension_memory(extension) -> ExtensionMemory:
    """The memory model of one BackPACK extension object.

    Raises:
        ValueError: no model is known for its class (add one to :data:`EXTENSION_MEMORY`).
    """
    if type(extension) not in EXTENSION_MEMORY:
        known = ", ".join(cls.__name__ for cls in EXTENSION_MEMORY)
        raise invalid(
            "BackPACK extension", type(extension).__name__, f"one with a memory model: {known}"
        )
    return EXTENSION_MEMORY[type(extension)]


#: Allowance for memory the allocator keeps between uses (glibc keeps freed blocks for
#: reuse; runs measured 2-8 % above the tensors counted here, tests/test_cockpit_memory.py).
ALLOCATOR_SLACK = 1.1


def _tracked(quantity, step: int) -> int:
    return int(bool(quantity.should_compute(step)))


@dataclass(frozen=True)
class Term:
    """A quantity's own memory: what it holds, bytes per copy as a function of (shapes, batch
    size), and how many copies it holds at a step (default: one when it is tracked there).

    ``transient``: alive only while one layer is processed (e.g. a clipped copy of one
    layer's per-example gradients), else held to the end of the step.
    """

    label: str
    bytes: Callable[[Shapes, int], int]
    transient: bool = False
    copies: Callable[[Any, int], int] = _tracked


#: The term of a quantity that keeps the graph for Hessian-vector products.
SECOND_GRAPH = Term(
    "second graph for Hessian-vector products", lambda sh, n: 2 * n * sh.activations * sh.itemsize
)


@dataclass(frozen=True)
class Activity:
    """What one quantity asks for at one step: BackPACK extensions, a second graph, whether
    it keeps the per-example gradients (``kept``), its own terms with their copies."""

    extensions: tuple
    graph: bool
    kept: bool
    own: tuple[tuple[Term, int], ...]


@contextmanager
def optimizer_info(optimizer=None) -> Iterator[None]:
    """Let Cockpit's quantities see ``optimizer`` at every step (as ``info["optimizer"]``).

    Without one, a stand-in Adam: Alpha then keeps its per-example gradients, the larger case.
    """
    from cockpit.context import CockpitCTX

    if optimizer is None:
        optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    class _EveryStep(dict):
        def __missing__(self, step):
            return {"optimizer": optimizer}

    saved, CockpitCTX.INFO = CockpitCTX.INFO, _EveryStep()
    try:
        yield
    finally:
        CockpitCTX.INFO = saved


def activity(quantity, own: Term | None, step: int) -> Activity | None:
    """What the built Cockpit ``quantity`` asks for at ``step`` (None: nothing), asked from
    Cockpit itself; use inside :func:`optimizer_info`."""
    if not quantity.should_compute(step):
        return None
    terms = ((own, own.copies(quantity, step)),) if own else ()
    kept = "grad_batch" in quantity.protected_savefields(step)
    return Activity(tuple(quantity.extensions(step)), quantity.create_graph(step), kept, terms)


def step_bytes(
    activities: list[Activity], sh: Shapes, n: int, before: frozenset = frozenset()
) -> int:
    """Estimated peak bytes of a step at which ``activities`` are tracked (module docstring).

    ``before``: classes of the BackPACK extensions that ran at the step before.

    Raises:
        ValueError: an extension without a memory model.
    """
    kept = any(a.kept for a in activities)
    extensions = {type(e): e for a in activities for e in a.extensions}  # Cockpit dedupes so
    held = 0
    for cls, ext in extensions.items():
        model = extension_memory(ext)
        cost = model.cost(sh, n, ext, kept)
        held += cost.held + int(cost.peak * (model.repeated if cls in before else 1.0))
    if any(a.graph for a in activities):
        held += SECOND_GRAPH.bytes(sh, n)
    transient = [0]
    for term, copies in (t for a in activities for t in a.own):
        size = copies * term.bytes(sh, n)
        transient.append(size) if term.transient else None
        held += 0 if term.transient else size
    return int(ALLOCATOR_SLACK * (sh.base(n) + held + max(transient)))


def model_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> Shapes:
    """The :class:`Shapes` of ``model`` (classes: the size of its last layer's output)."""
    layers, itemsize = layer_shapes(model, tuple(input_shape))
    classes = layers[-1].out_numel if layers else 10
    return Shapes(tuple(layers), itemsize, tuple(input_shape), classes)
