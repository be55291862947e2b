"""Tests of nbhelpers.models: layouts, parameter counts, name checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nbhelpers.models import ACTIVATIONS, NORMS, build_cnn, count_parameters


def handover_cnn() -> nn.Sequential:
    return build_cnn("tanh", "none", 32, 10)


def reference_fix_cnn() -> nn.Sequential:
    return build_cnn("relu", "batch", 32, 10)


def _conv(cin: int, cout: int) -> int:
    return cin * cout * 3 * 3 + cout  # 3x3 kernel weights + bias


def _handover_count() -> int:
    convs = _conv(3, 32) + _conv(32, 32) + _conv(32, 64) + _conv(64, 64)
    convs += _conv(64, 128) + _conv(128, 128)
    linear = (2048 * 128 + 128) + (128 * 10 + 10)
    return convs + linear


def test_handover_parameter_count_by_hand():
    expected = _handover_count()
    assert expected == 550_570
    assert count_parameters(handover_cnn()) == expected
    assert count_parameters(build_cnn("tanh", "none", 32, 10)) == expected


def test_reference_fix_adds_batchnorm_scale_and_shift_only():
    batchnorm = 2 * (32 + 32 + 64 + 64 + 128 + 128)  # weight + bias per channel
    assert count_parameters(reference_fix_cnn()) == _handover_count() + batchnorm == 551_466


def test_handover_layout_and_output_shape():
    model = handover_cnn()
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.Tanh) for m in model) == 7  # six convs + hidden linear
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model)
    assert model.fc1.in_features == 2048 and model.fc2.out_features == 10
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and out.dtype == torch.float32


def test_reference_fix_order_is_conv_relu_batchnorm():
    model = reference_fix_cnn()
    kinds = [type(m) for m in model][:4]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d]
    assert not any(isinstance(m, nn.Tanh) for m in model)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_all_names_build_and_run(activation, norm):
    model = build_cnn(activation, norm, width=8, num_classes=5)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 5)
    assert model.fc1.in_features == 4 * 8 * 4 * 4
    assert (
        type(model.act1) is ACTIVATIONS[activation]
        and type(model.act_fc) is ACTIVATIONS[activation]
    )
    expected = {"none": [], "batch": [nn.BatchNorm2d] * 6, "group": [nn.GroupNorm] * 6}[norm]
    assert [type(m) for m in model if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))] == expected


def test_group_norm_is_used():
    model = build_cnn("relu", "group", width=16)
    norms = [m for m in model if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 6 and norms[0].num_groups == 8


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"activation": "sigmoid"},
            "activation='sigmoid' is invalid; valid: 'tanh', 'relu', 'gelu'",
        ),
        ({"norm": "layer"}, "norm='layer' is invalid; valid: 'none', 'batch', 'group'"),
        ({"width": 0}, "width=0 is invalid; valid: an integer >= 1"),
        ({"num_classes": -1}, "num_classes"),
        ({"norm": "group", "width": 12}, "12 channels cannot be split into 8 groups"),
        ({"norm": "group", "width": 3}, "12 channels cannot be split into 8 groups"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_cnn(**kwargs)


def test_count_parameters_trainable_only_and_type_check():
    model = build_cnn("relu", "none", width=4)
    total = count_parameters(model)
    model.fc2.weight.requires_grad_(False)
    assert count_parameters(model) == total - 128 * 10
    assert count_parameters(model, trainable_only=False) == total
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters("model")


def _signal_std(model, x):
    """Standard deviation of the input to the output layer (the last hidden features)."""
    with torch.no_grad():
        return model[:-1](x).std().item()


def test_kaiming_init_keeps_the_signal_through_relu_layers():
    x = torch.rand(64, 3, 32, 32)
    torch.manual_seed(0)
    default = build_cnn("relu", "none", width=8)
    torch.manual_seed(0)
    kaiming = build_cnn("relu", "none", width=8, init="kaiming")
    assert _signal_std(kaiming, x) > 10 * _signal_std(default, x)
    assert all(
        float(m.bias.detach().abs().max()) == 0.0 for m in kaiming if isinstance(m, torch.nn.Conv2d)
    )
    # the output layer keeps PyTorch's default initialisation
    torch.manual_seed(0)
    assert kaiming.fc2.weight.abs().max() <= 1 / 128**0.5 + 1e-6


def test_unknown_init_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="init='xavier' is invalid; valid: 'default', 'kaiming'"):
        build_cnn("relu", "none", init="xavier")
