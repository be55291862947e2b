"""The CNN of the series: one builder for the handover model and the reference fix.

The handover model (from the colleague's notebook) is six 3x3 convolutions with
padding 1 in three blocks of two (channels 32, 32 | pool | 64, 64 | pool |
128, 128 | pool), a Tanh after every convolution, then flatten (128 * 4 * 4 =
2048 features), Linear 2048 -> 128, Tanh, Linear 128 -> 10 (logits).

The reference fix of the tutorial (Numerics of ML, Tutorial 11, "Debugging
Strategy VI") swaps Tanh for ReLU and adds BatchNorm after every convolution,
in the order conv -> ReLU -> BatchNorm.

Both come from :func:`build_cnn`::

    handover = build_cnn("tanh", "none")
    reference_fix = build_cnn("relu", "batch")

Activations, normalisations and initialisations are registries (:data:`ACTIVATIONS`,
:data:`NORMS`, :data:`INITS`): adding one is one entry there. The result is a flat
``nn.Sequential`` with named layers, which is what BackPACK's ``extend`` (and so
Cockpit) expects.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from nbhelpers.validate import one_of, positive_int

__all__ = [
    "ACTIVATIONS", "GROUPS", "INITS", "NORMS", "build_cnn", "check_group_norm", "count_parameters",
]  # fmt: skip

#: Groups of ``norm="group"`` (capped at each layer's channel count).
GROUPS = 8

#: Activation name -> its module class.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}

#: Normalisation name -> ``(channels, groups) -> module`` (None: no layer).
#: "batch": ``nn.BatchNorm2d``; "group": ``nn.GroupNorm`` with ``min(groups, channels)``
#: groups (statistics per sample, so per-example gradients stay well defined in train mode).
NORMS: dict[str, Callable[[int, int], nn.Module | None]] = {
    "none": lambda channels, groups: None,
    "batch": lambda channels, groups: nn.BatchNorm2d(channels),
    "group": lambda channels, groups: nn.GroupNorm(min(groups, channels), channels),
}


def _kaiming_init(model: nn.Sequential) -> None:
    """He initialisation of every conv and hidden linear layer; the output layer is left alone."""
    hidden = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    for layer in hidden:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)


#: Initialisation name -> a function that re-initialises a freshly built model in place.
#: "default": PyTorch's own layer defaults (what the colleague's code used);
#: "kaiming": He et al. (2015), "Delving Deep into Rectifiers", normal, fan-in, gain for ReLU.
INITS: dict[str, Callable[[nn.Sequential], None]] = {
    "default": lambda model: None,
    "kaiming": _kaiming_init,
}


def check_group_norm(width: int, groups: int = GROUPS) -> None:
    """Check that every conv layer of :func:`build_cnn` can be split into ``groups`` groups.

    The layers have ``width``, ``2 * width`` and ``4 * width`` channels; each must be divisible
    by ``min(groups, channels)``.

    Raises:
        ValueError: naming the first layer whose channel count does not divide.
    """
    for channels in (width, 2 * width, 4 * width):
        g = min(groups, channels)
        if channels % g:
            raise ValueError(
                f"norm='group': a layer with {channels} channels cannot be split into {g} groups "
                f"(width={width}, groups={groups}); use a width divisible by {groups}, e.g. "
                f"{max(groups, width - width % groups)}"
            )


def build_cnn(
    activation: str = "tanh",
    norm: str = "none",
    width: int = 32,
    num_classes: int = 10,
    *,
    groups: int = GROUPS,
    init: str = "default",
) -> nn.Sequential:
    """Build the series' CNN for 3x32x32 images.

    Layout (``w = width``): three blocks of two 3x3 convolutions (padding 1) with
    ``w, w | 2w, 2w | 4w, 4w`` output channels, each convolution followed by the
    activation and then (if ``norm`` is not "none") the normalisation layer, each
    block ending in 2x2 max pooling; then flatten (``4w * 4 * 4`` features, 2048 for
    ``w = 32``), Linear -> 128, activation, Linear 128 -> ``num_classes``.

    ``build_cnn("tanh", "none")`` is the handover model (550,570 parameters);
    ``build_cnn("relu", "batch")`` is the tutorial's reference fix (551,466).

    Args:
        activation: a name of :data:`ACTIVATIONS` ("tanh", "relu", "gelu", "silu", "elu").
        norm: a name of :data:`NORMS` ("none", "batch", "group").
        width: channels of the first block, a positive int (32 in the handover).
        num_classes: number of output logits, a positive int (10 for digits).
        groups: number of groups for ``norm="group"`` (capped at the channel count;
            must divide ``width``).
        init: a name of :data:`INITS`. "default" keeps PyTorch's layer defaults (uniform,
            variance ``1 / (3 * fan_in)``): through ReLU without normalisation the signal
            then shrinks about 6-fold in variance per layer. "kaiming" draws every
            convolution and the hidden linear layer from ``N(0, 2 / fan_in)`` (He et al.,
            2015, derived for ReLU), biases 0, so the signal keeps its scale; the output
            layer keeps PyTorch's default.

    Returns:
        ``nn.Sequential`` mapping float32 ``(B, 3, 32, 32)`` images to float32
        ``(B, num_classes)`` logits.

    Raises:
        ValueError: an unknown activation, norm or init name (the message lists the valid
            ones), a non-positive ``width``/``num_classes``/``groups``, or ``groups`` not
            dividing the channel counts with ``norm="group"``.
    """
    act = ACTIVATIONS[one_of("activation", activation, ACTIVATIONS)]
    make_norm = NORMS[one_of("norm", norm, NORMS)]
    initialise = INITS[one_of("init", init, INITS)]
    for label, value in (("width", width), ("num_classes", num_classes), ("groups", groups)):
        positive_int(label, value)
    if norm == "group":
        check_group_norm(width, groups)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels, index = 3, 0
    for block, channels in enumerate((width, 2 * width, 4 * width), start=1):
        for _ in range(2):
            index += 1
            layers[f"conv{index}"] = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
            layers[f"act{index}"] = act()
            norm_layer = make_norm(channels, groups)
            if norm_layer is not None:
                layers[f"norm{index}"] = norm_layer
            in_channels = channels
        layers[f"pool{block}"] = nn.MaxPool2d(2)
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(4 * width * 4 * 4, 128)
    layers["act_fc"] = act()
    layers["fc2"] = nn.Linear(128, num_classes)
    model = nn.Sequential(layers)
    initialise(model)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model``.

    Args:
        model: any ``nn.Module``.
        trainable_only: count only parameters with ``requires_grad`` (default True).
            BatchNorm running statistics are buffers and are never counted.

    Returns:
        The count as an int.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters expects an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
