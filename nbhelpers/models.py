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

The result is a flat ``nn.Sequential`` with named layers, which is what
BackPACK's ``extend`` (and so Cockpit) expects.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = [
    "ACTIVATIONS",
    "GROUPS",
    "INITS",
    "NORMS",
    "build_cnn",
    "check_group_norm",
    "count_parameters",
    "handover_cnn",
    "reference_fix_cnn",
]

#: Activation names accepted by :func:`build_cnn`, mapped to their module class.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}

#: Normalisation names accepted by :func:`build_cnn`.
#: "none": no normalisation; "batch": ``nn.BatchNorm2d``; "group": ``nn.GroupNorm``
#: (statistics per sample, so per-example gradients stay well defined in train mode).
NORMS: tuple[str, ...] = ("none", "batch", "group")

#: Weight initialisations accepted by :func:`build_cnn`.
#: "default": PyTorch's own layer defaults (what the colleague's code used);
#: "kaiming": He et al. (2015), "Delving Deep into Rectifiers", normal, fan-in, gain for ReLU.
INITS: tuple[str, ...] = ("default", "kaiming")


def _check_choice(kind: str, value: object, valid) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ValueError naming both."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid names: {', '.join(sorted(valid))}")
    return value


#: Groups of ``norm="group"`` (capped at each layer's channel count).
GROUPS = 8


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
                f"a layer with {channels} channels cannot be split into {g} groups "
                f"(width={width}, groups={groups}); use a width divisible by {groups}, e.g. "
                f"{max(groups, width - width % groups)}"
            )


def _norm_layer(norm: str, channels: int, groups: int) -> nn.Module | None:
    """The normalisation module for ``channels`` feature maps, or None for ``norm="none"``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    return None


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
        activation: one of :data:`ACTIVATIONS` ("tanh", "relu", "gelu", "silu", "elu").
        norm: one of :data:`NORMS` ("none", "batch", "group").
        width: channels of the first block, a positive int (32 in the handover).
        num_classes: number of output logits, a positive int (10 for digits).
        groups: number of groups for ``norm="group"`` (capped at the channel count;
            must divide ``width``).
        init: one of :data:`INITS`. "default" keeps PyTorch's layer defaults (uniform,
            variance ``1 / (3 * fan_in)``): through ReLU without normalisation the signal
            then shrinks about 6-fold in variance per layer. "kaiming" draws every
            convolution and the hidden linear layer from ``N(0, 2 / fan_in)`` (He et al.,
            2015, derived for ReLU), biases 0, so the signal keeps its scale; the output
            layer keeps PyTorch's default.

    Returns:
        ``nn.Sequential`` mapping float32 ``(B, 3, 32, 32)`` images to float32
        ``(B, num_classes)`` logits.

    Raises:
        ValueError: unknown activation or norm name (the message lists valid names),
            or a non-positive ``width``/``num_classes``/``groups``, or ``groups`` not
            dividing ``width`` with ``norm="group"``, or an unknown ``init``.
    """
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("norm", norm, NORMS)
    _check_choice("init", init, INITS)
    for label, value in (("width", width), ("num_classes", num_classes), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    if norm == "group":
        check_group_norm(width, groups)

    act = ACTIVATIONS[activation]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels, index = 3, 0
    for block, channels in enumerate((width, 2 * width, 4 * width), start=1):
        for _ in range(2):
            index += 1
            layers[f"conv{index}"] = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
            layers[f"act{index}"] = act()
            norm_layer = _norm_layer(norm, channels, groups)
            if norm_layer is not None:
                layers[f"norm{index}"] = norm_layer
            in_channels = channels
        layers[f"pool{block}"] = nn.MaxPool2d(2)
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(4 * width * 4 * 4, 128)
    layers["act_fc"] = act()
    layers["fc2"] = nn.Linear(128, num_classes)
    model = nn.Sequential(layers)
    if init == "kaiming":
        _kaiming_init(model)
    return model


def _kaiming_init(model: nn.Sequential) -> None:
    """He initialisation of every conv and hidden linear layer; the output layer is left alone."""
    hidden = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    for layer in hidden:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)


def handover_cnn() -> nn.Sequential:
    """The handover model: ``build_cnn("tanh", "none", 32, 10)``."""
    return build_cnn("tanh", "none", 32, 10)


def reference_fix_cnn() -> nn.Sequential:
    """The tutorial's reference fix: ``build_cnn("relu", "batch", 32, 10)``."""
    return build_cnn("relu", "batch", 32, 10)


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
