"""Cockpit tools: presets, guard, BatchNorm/GroupNorm validity, clear errors, plots, hook."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from nbhelpers import cockpit_tools as ct
from nbhelpers.cockpit_tools import QuantitySpec, compat, logs
from nbhelpers.cockpit_tools.lanczos import HessMaxEV
from nbhelpers.cockpit_tools.logs import total_norm
from nbhelpers.cockpit_tools.memory import Term
from nbhelpers.experiment import RunConfig
from nbhelpers.models import build_cnn
from nbhelpers.train import train

GiB = 1 << 30
_PER_EXAMPLE_EVERY_2 = {
    name: 2
    for name in (
        "Alpha",
        "InnerTest",
        "NormTest",
        "OrthoTest",
        "GradHist1d",
        "GradHist2d",
        "HessTrace",
        "TICDiag",
    )
}


def _batches(n_batches=3, batch=8, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def _tiny_cnn(norm: str = "none") -> nn.Sequential:
    """A CNN with ~900 weights, small enough for Hessian eigenvalues in a unit test."""
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1), nn.Tanh()]
    if norm == "group":
        layers.append(nn.GroupNorm(2, 4))
    layers += [nn.MaxPool2d(4), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(4 * 4 * 4, 10)]
    return nn.Sequential(*layers)


def _run(model, preset, *, steps=3, lr=1e-3, zero_grad=True, hooks=(), **hook_kwargs):
    torch.manual_seed(0)
    hook = ct.CockpitHook(preset, available_bytes=16 * GiB, **hook_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    hooks = [hook, *hooks]
    train(
        model,
        optimizer,
        _batches(steps),
        epochs=1,
        hooks=hooks,
        progress=False,
        zero_grad=zero_grad,
    )
    return hook


def _png_pixels(fig) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(ct.figure_to_png(fig))).convert("L"), dtype=float)


@pytest.fixture(scope="module")
def standard_log():
    torch.manual_seed(0)
    hook = _run(build_cnn("tanh", "none", width=4), "standard", steps=4, every=_PER_EXAMPLE_EVERY_2)
    return hook.log


# -- presets ---------------------------------------------------------------------------------


def test_preset_table_lists_quantities_intervals_and_batchnorm_validity():
    from nbhelpers.cockpit_tools.quantities import CHEAP_ALPHA_EVERY

    table = ct.preset_table(["cheap", "handover", "thorough"])
    cheap = table[table.preset == "cheap"].set_index("quantity")
    assert list(cheap.index) == ["Loss", "GradNorm", "Distance", "UpdateSize", "Alpha"]
    assert cheap.loc["Alpha", "every"] == CHEAP_ALPHA_EVERY and cheap.loc["Loss", "every"] == 1
    handover = table[table.preset == "handover"].set_index("quantity")
    assert list(handover.index) == list(cheap.index)  # the colleague's set, under its name
    assert handover.loc["Alpha", "every"] == 10 and (handover.every[:4] == 1).all()
    assert (
        not cheap.loc["Alpha", "valid_with_batchnorm"] and cheap.loc["Loss", "valid_with_batchnorm"]
    )
    thorough = table[table.preset == "thorough"]
    curvature = thorough[thorough.quantity.str.startswith(("HessTrace", "TICDiag"))]
    assert len(curvature) == 2 and curvature.needs.str.contains("GGN").all()
    assert "| `cheap` |" in ct.preset_markdown()
    assert ct.DEFAULT_PRESET == "cheap"


def test_our_presets_never_use_the_exact_hessian_diagonal():
    from backpack.extensions import DiagGGNMC, DiagHessian

    ours = [
        spec
        for name in ("basic", "cheap", "standard", "thorough")
        for spec in ct.preset_specs(name)
    ]
    extensions = [type(ext) for spec in ours for ext in spec.extensions()]
    assert DiagGGNMC in extensions and DiagHessian not in extensions
    full = [type(ext) for spec in ct.preset_specs("full") for ext in spec.extensions()]
    assert DiagHessian in full  # Cockpit's own configuration keeps Cockpit's default


def test_bad_names_raise_clear_errors():
    with pytest.raises(ValueError, match="preset='fast' is invalid; valid: .*'cheap'"):
        ct.preset_specs("fast")
    with pytest.raises(ValueError, match="quantity='Alfa' is invalid; valid: .*'Alpha'"):
        ct.preset_specs("cheap", every={"Alfa": 3})
    with pytest.raises(ValueError, match="every of Loss=0 is invalid"):
        QuantitySpec("Loss", 0)
    with pytest.raises(TypeError, match="QuantitySpec objects"):
        ct.preset_specs(["Loss"])
    with pytest.raises(ValueError, match="on_refusal"):
        ct.CockpitHook(on_refusal="ignore")


@pytest.mark.parametrize("preset", ["basic", "cheap", "standard"])
def test_each_preset_tracks_its_quantities(preset):
    hook = _run(build_cnn("tanh", "none", width=4), preset, every=_PER_EXAMPLE_EVERY_2)
    expected = {spec.name for spec in ct.preset_specs(preset)}
    tracked = {key for entry in hook.log.values() for key in entry}
    assert expected <= tracked
    assert sorted(step for step, entry in hook.log.items() if "Loss" in entry) == [0, 1, 2]
    assert hook.log[0]["learning_rate"] == pytest.approx(1e-3)
    assert all(np.isfinite(hook.frame()["GradNorm"]))


def test_thorough_preset_runs_with_groupnorm():
    hook = _run(_tiny_cnn("group"), "thorough", every={**_PER_EXAMPLE_EVERY_2, "HessMaxEV": 100})
    entry = hook.log[0]
    for name in ("HessTrace", "TICDiag", "GradHist2d", "HessMaxEV", "Alpha", "NormTest"):
        assert name in entry, name
    assert math.isfinite(entry["HessMaxEV"]) and entry["HessMaxEV"] > 0
    assert all(v >= 0 for v in entry["HessTrace"])  # a GGN diagonal is never negative


def test_lanczos_max_eigenvalue_matches_dense_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector):
        chunks = vector.split([math.prod(s) for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=False)}
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    dense = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))[-1].item()
    loss = F.cross_entropy(model(x), y)
    loss.backward(create_graph=True)
    quantity = HessMaxEV(lambda step: True, method="lanczos", tol=1e-4, maxiter=50)
    value = quantity._compute(0, list(model.parameters()), loss)
    assert value == pytest.approx(dense, rel=1e-3)


@pytest.fixture
def made_up_quantity():
    """A quantity added by one registry entry (and removed again after the test)."""
    cockpit = compat.import_cockpit()

    class MadeUpNorm(cockpit.quantities.GradNorm):
        """GradNorm under another name, standing in for a new Cockpit quantity."""

    def plot_made_up(source, ax=None):
        return ct.plot_grad_norm(ct.log_frame(source).rename(columns={"MadeUpNorm": "GradNorm"}))

    entry = ct.register(
        ct.Quantity(
            MadeUpNorm,
            "a made-up norm",
            "standard",
            every=5,
            memory=Term("a made-up buffer", lambda sh, n: 7 * n),
            plot=plot_made_up,
            column=total_norm,
        )
    )
    yield entry
    del ct.QUANTITIES["MadeUpNorm"]


def test_a_quantity_is_one_registry_entry(made_up_quantity):
    name = made_up_quantity.name
    assert QuantitySpec(name, 5) in ct.preset_specs("standard") + ct.preset_specs("thorough")
    assert name not in {s.name for s in ct.preset_specs("cheap")}
    row = ct.preset_table(["standard"]).set_index("quantity").loc[name]
    assert row.every == 5 and row.needs == "a made-up buffer" and row.valid_with_batchnorm
    assert f"| {name} | valid | a made-up norm |" in ct.batchnorm_note()
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))

    def peak(specs):
        return ct.guard(model, 10, specs, input_shape=(3, 2, 2), available_bytes=GiB).peak_bytes

    from nbhelpers.cockpit_tools.memory import ALLOCATOR_SLACK

    loss = [QuantitySpec("Loss")]
    base = peak(loss) / ALLOCATOR_SLACK
    assert peak([*loss, QuantitySpec(name, 5)]) == int(ALLOCATOR_SLACK * (base + 70))  # its own
    assert ct.INSTRUMENTS["made_up"] is made_up_quantity.plot
    hook = _run(
        build_cnn("tanh", "none", width=4), [QuantitySpec("Loss"), QuantitySpec(name)], steps=2
    )
    frame = hook.frame()
    assert len(frame) == 2 and (frame[name] > 0).all()  # tracked by Cockpit, one column
    fig = ct.plot_instruments(hook)  # the default: every instrument with data
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3  # loss, made_up, learning rate


def test_a_preset_row_can_change_intervals(monkeypatch):
    from nbhelpers.cockpit_tools import quantities

    monkeypatch.setitem(quantities.OUR_PRESETS, "cheap", ct.Preset("less often", {"Alpha": 50}))
    every = {s.name: s.every for s in ct.preset_specs("cheap")}
    assert every == {"Loss": 1, "GradNorm": 1, "Distance": 1, "UpdateSize": 1, "Alpha": 50}
    assert {s.name: s.every for s in ct.preset_specs("standard")}["Alpha"] == 10


def test_guard_reads_backpack_and_changes_nothing(monkeypatch):
    from backpack.extensions import BatchGrad, DiagGGNMC

    from nbhelpers.cockpit_tools import groupnorm

    def refuse(*args):
        raise AssertionError("the guard must not change BackPACK")

    monkeypatch.setattr(groupnorm, "_wrap_init", refuse)
    monkeypatch.setattr(groupnorm, "enable_groupnorm_support", refuse)
    inits = (BatchGrad.__init__, DiagGGNMC.__init__)
    report = ct.guard(build_cnn("relu", "group", width=4), 8, "thorough", available_bytes=GiB)
    assert report.ok  # GroupNorm counts as covered by the package's rules
    assert (BatchGrad.__init__, DiagGGNMC.__init__) == inits
    assert {r.kind for r in ct.guard(_tiny_cnn(), 8, "full", available_bytes=GiB).refused} <= {
        "memory"
    }


# -- guard -----------------------------------------------------------------------------------


def test_guard_refuses_cockpit_full_on_the_handover_cnn_at_batch_256():
    report = ct.guard(build_cnn("tanh", "none"), 256, "full", "cpu", available_bytes=64 * GiB)
    refused = {row.quantity: row for row in report.refused}
    assert set(refused) == {"TICDiag", "HessTrace"}
    assert all(row.kind == "memory" and row.estimate_bytes > 1 << 40 for row in refused.values())
    message = report.message()
    assert "TiB" in message and "Tanh" in message and "diag_ggn_mc" in message
    with pytest.raises(ct.CockpitGuardError, match="HessTrace needs ~"):
        report.raise_if_refused()
    accepted = {spec.name for spec in report.accepted}
    assert {"Loss", "Alpha", "HessMaxEV", "GradHist2d"} <= accepted


def test_guard_accepts_the_default_preset_on_the_handover_cnn():
    report = ct.guard(build_cnn("tanh", "none"), 256, device="cpu", available_bytes=16 * GiB)
    assert report.ok and [s.name for s in report.accepted] == [
        "Loss",
        "GradNorm",
        "Distance",
        "UpdateSize",
        "Alpha",
    ]
    assert report.raise_if_refused() is report


def test_guard_estimates_follow_the_documented_formulas():
    from nbhelpers.cockpit_tools.memory import ALLOCATOR_SLACK

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))  # D = 65 weights, one layer
    n, d, s, activations = 10, 65, 4, 12 + 12 + 5

    def peak(*specs, optimizer=None):
        report = ct.guard(
            model, n, [QuantitySpec("Loss"), *specs], input_shape=(3, 2, 2), optimizer=optimizer
        )
        return report.peak_bytes, report.peak_step

    def estimate(nbytes, step=0):
        return int(ALLOCATOR_SLACK * nbytes), step

    base = (2 * n * activations + 4 * d) * s  # the extended model keeps inputs and outputs
    assert peak() == estimate(base)
    assert peak(QuantitySpec("Distance")) == estimate(base + d * s)
    # per-example gradients of the layer, and their squares
    assert peak(QuantitySpec("NormTest")) == estimate(base + 2 * n * d * s)
    # Alpha with Adam: at its end step the kept per-example gradients, the layer being
    # computed, the start step's copy and the end step's copy (each with weights and gradient)
    alpha = QuantitySpec("Alpha", 10)
    assert peak(alpha) == estimate(base + 2 * n * d * s + 2 * (n * d + 2 * d) * s, 1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert peak(alpha, optimizer=sgd) == estimate(base + n * d * s)  # projected while it runs


def test_guard_adds_up_what_coincides_in_one_step():
    model = build_cnn("tanh", "none", width=8)

    def guard(*names):
        return ct.guard(model, 32, [QuantitySpec(n, 10) for n in names], available_bytes=GiB)

    alone = {name: guard(name).peak_bytes for name in ("Alpha", "GradHist1d")}
    both = guard("Alpha", "GradHist1d")  # both at steps 0, 10, 20, ...
    assert both.peak_bytes > max(alone.values())
    assert both.peak_step == 0 and both.peak_quantities == ["Alpha", "GradHist1d"]
    assert all(row.estimate_bytes == both.peak_bytes for row in both.rows)


def test_guard_refuses_what_does_not_fit_and_names_a_batch_that_does():
    report = ct.guard(build_cnn("tanh", "none"), 256, "cheap", "cpu", available_bytes=800 << 20)
    (row,) = report.refused
    assert row.quantity == "Alpha" and row.kind == "memory"
    assert "fits up to batch" in row.alternative
    fit = int(row.alternative.split("fits up to batch ")[1].split(";")[0])
    assert 1 <= fit < 256
    smaller = ct.guard(build_cnn("tanh", "none"), fit, "cheap", "cpu", available_bytes=800 << 20)
    assert smaller.ok


def test_layer_shapes_come_from_one_forward_pass_that_changes_nothing():
    from nbhelpers.cockpit_tools.memory import layer_shapes

    model = build_cnn("tanh", "batch", width=8)
    model.train()
    stats = [b.clone() for b in model.buffers()]
    layers, itemsize = layer_shapes(model, (3, 32, 32))
    assert itemsize == 4 and model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))
    conv = next(layer for layer in layers if layer.kind == "Conv2d")
    assert conv.out_numel == 8 * 32 * 32 and conv.params == 3 * 8 * 9 + 8
    assert conv.in_numel == 3 * 32 * 32 and conv.channels == (3, 8) and conv.first
    assert not conv.curved and not any(x.first for x in layers[1:])
    assert layers[-1].out_numel == 10 and all(x.curved for x in layers if x.kind == "Tanh")


def test_guard_refuses_layers_backpack_cannot_handle():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.SiLU(), nn.Linear(6, 3))
    specs = [QuantitySpec("Loss"), QuantitySpec("HessTrace", 1, {"curvature": "diag_ggn_mc"})]
    report = ct.guard(model, 4, specs, input_shape=(3, 2, 2), available_bytes=GiB)
    (row,) = report.refused
    assert row.kind == "unsupported layer" and "SiLU" in row.reason


# -- BatchNorm and GroupNorm -----------------------------------------------------------------


def test_batchnorm_model_gets_only_valid_instruments_with_true_values():
    torch.manual_seed(0)
    model = build_cnn("relu", "batch", width=4)
    reference = copy.deepcopy(model)
    hook = _run(model, "standard", steps=2, every=_PER_EXAMPLE_EVERY_2)
    assert [s.name for s in hook.report.accepted] == ["Loss", "GradNorm", "Distance", "UpdateSize"]
    assert {row.kind for row in hook.report.refused} == {"batch mixing"}
    assert "norm1 (BatchNorm2d)" in hook.report.refused[0].reason
    assert (
        ct.quantities_for(build_cnn("relu", "batch", width=4), "standard") == hook.report.accepted
    )

    # The same two steps with plain autograd (BatchNorm in train mode, mean loss).
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    start = [p.detach().clone() for p in reference.parameters()]
    reference.train()
    for step, (x, y) in enumerate(_batches(2)):
        before = [p.detach().clone() for p in reference.parameters()]
        optimizer.zero_grad()
        loss = F.cross_entropy(reference(x), y)
        loss.backward()
        grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in reference.parameters()))
        distance = torch.sqrt(
            sum(((p - q) ** 2).sum() for p, q in zip(before, start, strict=False))
        )
        optimizer.step()
        update = torch.sqrt(
            sum(((p - q) ** 2).sum() for p, q in zip(reference.parameters(), before, strict=False))
        )
        frame = hook.frame()
        assert frame.loc[step, "Loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert frame.loc[step, "GradNorm"] == pytest.approx(grad_norm.item(), rel=1e-4)
        assert frame.loc[step, "Distance"] == pytest.approx(distance.item(), rel=1e-4, abs=1e-7)
        if step == 0:  # UpdateSize of step 0 is stored once step 1 has run
            assert frame.loc[step, "UpdateSize"] == pytest.approx(update.item(), rel=1e-4)
    assert "BatchNorm" in ct.BATCHNORM_NOTE and "GroupNorm" in ct.BATCHNORM_NOTE


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_groupnorm_per_example_gradients_and_ggn_match_autograd():
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, DiagGGNExact

    ct.enable_groupnorm_support()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(100, 3),
    ).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x, y = torch.randn(6, 2, 5, 5, dtype=torch.double), torch.randint(0, 3, (6,))
    extend(model)
    loss = extend(nn.CrossEntropyLoss())(model(x), y)
    with backpack(BatchGrad(), DiagGGNExact()):
        loss.backward()
    params = list(model.parameters())
    ggn = [torch.zeros_like(p) for p in params]
    for i in range(6):  # one example at a time, plain autograd
        grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        for p, g in zip(params, grads, strict=False):
            torch.testing.assert_close(p.grad_batch[i] * 6, g)
        logits = model(x[i : i + 1])[0]
        prob = logits.softmax(0)
        hess = (torch.diag(prob) - torch.outer(prob, prob)) / 6
        jac = [torch.autograd.grad(logits[c], params, retain_graph=True) for c in range(3)]
        for k in range(len(params)):
            jk = torch.stack([jac[c][k].reshape(-1) for c in range(3)])
            ggn[k] += torch.einsum("ci,cd,di->i", jk, hess, jk).view_as(params[k])
    for p, d in zip(params, ggn, strict=False):
        torch.testing.assert_close(p.diag_ggn_exact, d)


def test_cockpit_norm_test_on_groupnorm_matches_autograd_per_example_gradients():
    torch.manual_seed(0)
    model = _tiny_cnn("group")
    reference = copy.deepcopy(model)
    hook = _run(model, [QuantitySpec("Loss"), QuantitySpec("NormTest")], steps=1)
    x, y = _batches(1)[0]
    n = len(y)
    per_example = []
    for i in range(n):
        grads = torch.autograd.grad(
            F.cross_entropy(reference(x[i : i + 1]), y[i : i + 1]), list(reference.parameters())
        )
        per_example.append(torch.cat([g.reshape(-1) for g in grads]))
    g = torch.stack(per_example)
    mean = g.mean(0)
    # Byrd et al. (2012), eq. (3.9), as Cockpit evaluates it: sample variance over examples.
    variance_l1 = ((g - mean) ** 2).sum() / (n - 1)
    expected = torch.sqrt(variance_l1 / n / (mean**2).sum()).item()
    assert hook.log[0]["NormTest"] == pytest.approx(expected, rel=1e-3)


# -- are the values meaningful? batch mixing, unreset gradients ------------------------------


class BatchStandardize(nn.Module):
    """Parameter-free batch statistics, the way a learner might write it."""

    def forward(self, x):
        return F.batch_norm(x, None, None, training=True)


def _mixing_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), BatchStandardize(), nn.Tanh(), nn.MaxPool2d(8),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
    )  # fmt: skip


def test_guard_finds_layers_that_mix_examples_by_what_they_do():
    report = ct.guard(_mixing_cnn(), 8, "handover", available_bytes=GiB)
    (row,) = report.refused
    assert row.quantity == "Alpha" and row.kind == "batch mixing"
    assert "1 (BatchStandardize) mixes the examples" in row.reason
    for model in (
        build_cnn("relu", "group", width=4),
        nn.Sequential(_tiny_cnn(), nn.Dropout(0.5)),  # random, but per example
        _tiny_cnn(),
    ):
        assert ct.guard(model, 8, "standard", available_bytes=GiB).ok
    bn = build_cnn("relu", "batch", width=4)
    stats = [b.clone() for b in bn.buffers()]
    ct.guard(bn, 8, "cheap", available_bytes=GiB)
    assert all(torch.equal(a, b) for a, b in zip(stats, bn.buffers(), strict=True))


def test_make_quantities_checks_the_model_it_is_given():
    with pytest.raises(ct.BatchMixingError, match="Alpha.*BatchStandardize.*GroupNorm"):
        ct.make_quantities("cheap", model=_mixing_cnn())
    assert len(ct.make_quantities("basic", model=_mixing_cnn())) == 4  # nothing per example
    assert len(ct.make_quantities("standard", model=build_cnn("relu", "group", width=4))) == 9


def _own_loop(model, quantities, steps=2, zero_grad=True, optimizer=None, scheduler=None):
    """The learner's own loop with a plain cockpit.Cockpit, as in the tutorial."""
    from backpack import extend

    cockpit = compat.import_cockpit()
    extend(model)
    loss_fn = extend(nn.CrossEntropyLoss())
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    cp = cockpit.Cockpit(model.parameters(), quantities=quantities)
    for step, (x, y) in enumerate(_batches(steps)):
        if zero_grad:
            optimizer.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        losses = F.cross_entropy(logits, y, reduction="none")
        info = {"batch_size": len(y), "individual_losses": losses, "loss": loss}
        with cp(step, info={**info, "optimizer": optimizer}):
            loss.backward(create_graph=cp.create_graph(step))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return cp


@pytest.mark.parametrize("make", [_mixing_cnn, lambda: build_cnn("relu", "batch", width=4)])
@pytest.mark.parametrize("preset", ["standard", "economy"])
def test_a_plain_cockpit_stops_on_a_model_that_mixes_examples(make, preset):
    from cockpit.utils.configuration import configuration

    quantities = ct.make_quantities("standard") if preset == "standard" else configuration(preset)
    with pytest.raises(ct.CockpitBackwardError, match="mixes the examples") as info:
        _own_loop(make(), quantities)
    assert isinstance(info.value.__cause__, ct.BatchMixingError)


def test_a_plain_cockpit_runs_on_models_that_keep_examples_apart(recwarn):
    from cockpit.utils.configuration import configuration

    for model in (_tiny_cnn(), _tiny_cnn("group")):
        ct.enable_groupnorm_support()
        cp = _own_loop(model, configuration("economy"), steps=3)
        assert {"Alpha", "NormTest", "GradHist1d"} <= set(cp.get_output()[1])
    assert not [w for w in recwarn if issubclass(w.category, ct.GradientsNotResetWarning)]


def test_alpha_without_zero_grad_warns_why_it_is_meaningless():
    specs = [QuantitySpec("Loss"), QuantitySpec("Alpha", 1), QuantitySpec("NormTest", 1)]
    with pytest.warns(ct.GradientsNotResetWarning, match=r"Alpha, NormTest .*not reset") as rec:
        _own_loop(_tiny_cnn(), ct.make_quantities(specs), steps=3, zero_grad=False)
    assert len(rec) == 1 and "near -1 for any learning rate" in str(rec[0].message)
    with pytest.warns(ct.GradientsNotResetWarning, match="Alpha"):
        _run(_tiny_cnn(), "handover", steps=3, zero_grad=False)


def test_zero_grad_anywhere_in_the_step_raises_no_warning(recwarn):
    specs = [QuantitySpec("Loss"), QuantitySpec("Alpha", 1), QuantitySpec("InnerTest", 1)]
    _own_loop(_tiny_cnn(), ct.make_quantities(specs), steps=3)

    class ZeroAfterStep(torch.optim.Adam):
        def step(self, closure=None):
            super().step(closure)
            self.zero_grad(set_to_none=False)  # zero_grad() after step(): correct too

    model = _tiny_cnn()
    _own_loop(model, ct.make_quantities(specs), 3, False, ZeroAfterStep(model.parameters()))
    _run(_tiny_cnn(), [QuantitySpec("Loss"), QuantitySpec("GradNorm")], zero_grad=False)
    assert not [w for w in recwarn if issubclass(w.category, ct.GradientsNotResetWarning)]


def test_make_cockpit_logs_the_learning_rate_of_every_step():
    model = _tiny_cnn()
    cp, report = ct.make_cockpit(model, nn.CrossEntropyLoss(), "basic", batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(_batches(3)):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        with cp(step, info={"batch_size": 8, "loss": loss, "optimizer": optimizer}):
            loss.backward()
        optimizer.step()
        scheduler.step()
    frame = ct.log_frame(cp)
    assert list(frame["learning_rate"]) == pytest.approx([0.1, 0.05, 0.025])
    ax = ct.plot_learning_rate(frame).axes[0]
    assert "0.1 -> 0.025" in ax.get_title(loc="left")


def test_backpack_keeps_inputs_only_for_steps_that_need_them(monkeypatch):
    from backpack import disable

    seen, original = {}, ct.CockpitHook.backward

    def spy(self, step, model, *args):
        seen[step] = hasattr(model[0], "input0")  # BackPACK stored the layer's input
        return original(self, step, model, *args)

    monkeypatch.setattr(ct.CockpitHook, "backward", spy)
    hook = _run(_tiny_cnn(), [QuantitySpec("Loss"), QuantitySpec("Alpha", 3)], steps=5)
    assert seen == {0: True, 1: True, 2: False, 3: True, 4: True}  # Alpha: 0-1 and 3-4
    assert disable.store_io is True and set(hook.frame()["Alpha"].dropna().index) == {0, 3}


def test_the_last_steps_update_size_is_logged():
    model = _tiny_cnn()

    class Weights:  # the weights after every step
        def __init__(self):
            self.after = []

        def on_step_end(self, step, loss):
            self.after.append([p.detach().clone() for p in model.parameters()])

    weights = Weights()
    frame = _run(model, "basic", steps=3, lr=1e-2, hooks=[weights]).frame()
    last, before = weights.after[-1], weights.after[-2]
    expected = math.sqrt(
        sum(float(((p - q) ** 2).sum()) for p, q in zip(last, before, strict=True))
    )
    assert frame.loc[2, "UpdateSize"] == pytest.approx(expected, rel=1e-5)
    assert frame["UpdateSize"].notna().all() and len(frame) == 3


# -- errors ----------------------------------------------------------------------------------


def test_failed_tracked_backward_shows_the_real_error():
    from backpack import extend

    cockpit = compat.import_cockpit()
    model = extend(nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.SiLU(), nn.Linear(6, 3)))
    loss_fn = extend(nn.CrossEntropyLoss())
    quantities = ct.make_quantities([QuantitySpec("HessTrace", 1, {"curvature": "diag_ggn_mc"})])
    cp = cockpit.Cockpit(model.parameters(), quantities=quantities)
    x, y = torch.rand(4, 3, 2, 2), torch.randint(0, 3, (4,))
    loss = loss_fn(model(x), y)
    with pytest.raises(ct.CockpitBackwardError) as info:
        with cp(0, info={"batch_size": 4, "loss": loss}):
            loss.backward()
    message = str(info.value)
    assert "NotImplementedError" in message and "SiLU" in message
    assert "grad_batch_transforms" not in message and "diag_h" not in message
    assert isinstance(info.value.__cause__, NotImplementedError)


def test_groupnorm_without_its_rules_is_named_not_blamed_on_extend(monkeypatch):
    from backpack.extensions import BatchGrad

    original = getattr(BatchGrad.__init__, "__wrapped__", BatchGrad.__init__)
    monkeypatch.setattr(BatchGrad, "__init__", original)  # as before enable_groupnorm_support()
    with pytest.raises(ct.CockpitBackwardError) as info:
        with pytest.warns(UserWarning, match="does not have an extension for Module"):
            _own_loop(_tiny_cnn("group"), ct.make_quantities([QuantitySpec("NormTest")]))
    message = str(info.value)
    assert "GroupNorm" in message and "enable_groupnorm_support()" in message
    assert "must be extended" not in message and "grad_batch_transforms" not in message


def test_hook_needs_mean_cross_entropy():
    hook = ct.CockpitHook("basic")
    model = build_cnn("tanh", "none", width=4)
    with pytest.raises(TypeError, match="CrossEntropyLoss"):
        hook.on_train_begin(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss())
    with pytest.raises(ValueError, match="reduction"):
        hook.on_train_begin(
            model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(reduction="sum")
        )


# -- plots -----------------------------------------------------------------------------------


def test_dashboard_renders_on_every_call_without_touching_pyplot(standard_log):
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    figures_before = plt.get_fignums()
    for _ in range(3):
        fig = ct.plot_dashboard(standard_log, width=11, height=6, dpi=60)
        pixels = _png_pixels(fig)
        assert pixels.shape == (360, 660)
        assert pixels.std() > 20  # drawn, not blank
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures_before
    assert not plt.isinteractive()


def test_single_instruments_render_from_a_saved_log(standard_log, tmp_path):
    path = ct.write_log(standard_log, tmp_path / "run", quiet=True)
    frame = ct.log_frame(str(path)[: -len(".json")])  # the ".json" suffix is optional
    assert {"Loss", "GradNorm", "Alpha", "NormTest"} <= set(frame.columns)
    fig = ct.plot_instruments(path)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6
    assert _png_pixels(fig).std() > 20
    for plot in (ct.plot_alpha, ct.plot_gradient_tests, ct.plot_distance, ct.plot_loss):
        assert _png_pixels(plot(path)).std() > 10
    with pytest.raises(ValueError, match="instrument='speedometer' is invalid"):
        ct.plot_instruments(path, ["speedometer"])


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_dashboard_says_why_a_panel_is_empty_and_what_mu_is(standard_log):
    basic = {step: {k: v for k, v in entry.items() if k in ("Loss", "GradNorm", "Distance",
             "UpdateSize", "learning_rate")} for step, entry in standard_log.items()}  # fmt: skip
    full = ct.plot_dashboard(basic, width=11, height=6, dpi=40, only_tracked=False)
    texts = _texts(full)
    assert "Alpha: not tracked (preset 'cheap' tracks it)" in texts
    assert "HessTrace: not tracked (preset 'thorough' tracks it)" in texts
    assert any("NormTest: not tracked (preset 'standard'" in t for t in texts)
    compact = ct.plot_dashboard(basic, width=11, height=6, dpi=40)  # only what was tracked
    assert not any("HessTrace" in t or "NormTest" in t for t in _texts(compact))
    assert len(compact.axes) < len(full.axes)
    assert (
        "Not tracked in this log, so not drawn: gradient noise (preset 'standard' tracks it), "
        "curvature (preset 'thorough' tracks it)"
    ) in [t.get_text() for t in compact.texts]
    texts = _texts(ct.plot_dashboard(standard_log, width=11, height=6, dpi=40))
    assert not any(t.startswith(("Alpha:", "NormTest:", "GradHist1d:")) for t in texts)
    assert any("not tracked" in t for t in texts)  # the 2D histogram (preset 'thorough')
    median = np.median([float(e["Alpha"]) for e in standard_log.values() if "Alpha" in e])
    titles = [ax.get_title() for ax in ct.plot_dashboard(standard_log, dpi=40).axes]
    assert any(f"median {median:+.2f}; \u03bc = mean" in t for t in titles)
    alpha = ct.plot_alpha(standard_log).axes[0]
    assert f"median {median:+.2f}" in alpha.get_title(loc="left")
    assert "Cockpit's \u03bc" in alpha.get_xlabel()


def test_distance_plot_uses_its_log_scale_on_a_real_log(standard_log):
    frame = ct.log_frame(standard_log)
    assert frame["Distance"].iloc[0] == 0  # the weights have not moved at step 0
    ax = ct.plot_distance(frame).axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert (lines["distance from init"] > 0).all() and (lines["update size"] > 0).all()
    assert len(lines["update size"]) == len(frame)  # the last step's update is logged too


def test_plots_skip_nan_and_infinite_values():
    log = {
        step: {
            "Loss": 2.3 - 0.01 * step,
            "GradNorm": [0.1, 0.2],
            "Alpha": [float("nan"), float("inf"), -0.5, 0.2][step % 4],
            "learning_rate": 1e-3,
        }
        for step in range(20)
    }
    frame = ct.log_frame(log)
    assert frame["GradNorm"].iloc[0] == pytest.approx(math.hypot(0.1, 0.2))
    assert _png_pixels(ct.plot_instruments(log)).std() > 10
    assert _png_pixels(ct.plot_dashboard(log, width=11, height=6, dpi=40)).std() > 10


def test_live_view_refreshes_during_training():
    shown = []
    view = ct.LiveView(["loss", "grad_norm"], every=2, display=shown.append)
    _run(build_cnn("tanh", "none", width=4), "basic", steps=4, live=view)
    assert view.refreshes == len(shown) == 3  # steps 0 and 2, and once at the end
    assert _png_pixels(shown[-1]).std() > 10


def _make_cockpit_logs():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_cockpit_logs.py"
    spec = importlib.util.spec_from_file_location("make_cockpit_logs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_logs_show_the_growing_learning_rate():
    handover = ct.log_frame(ct.load_shipped_log("handover"))
    fixed = ct.log_frame(ct.load_shipped_log("fixed"))
    lr = handover["learning_rate"].dropna()
    assert lr.iloc[-1] / lr.iloc[0] == pytest.approx(
        1.001 ** (lr.index[-1] - lr.index[0]), rel=1e-3
    )
    assert fixed["learning_rate"].dropna().nunique() == 1
    assert handover["Alpha"].notna().sum() >= 5 and fixed["Alpha"].notna().sum() >= 5
    for name, config in _make_cockpit_logs().notebook_configs("quick").items():
        info = logs.shipped_log_info(name)  # made from notebook 06's runs, and says so
        made = {**info["config"], "device": config.device}  # fields added since take their defaults
        assert RunConfig.from_dict(made) == config
        assert info["config"]["zero_grad"] is True and info["config"]["augmentation"] == "none"
        assert info["batch_size"] == info["config"]["batch_size"] == 16 and info["steps"] == 500
        assert info["preset"] == "handover" and len(ct.log_frame(ct.load_shipped_log(name))) == 500
        assert "batch 16" in ct.SHIPPED_LOGS[name] and "500 steps" in ct.SHIPPED_LOGS[name]
    for name in ct.SHIPPED_LOGS:
        assert logs.shipped_log_path(name).stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="unknown shipped"):
        ct.load_shipped_log("nope")


def test_a_crafted_log_is_read_as_data_and_runs_nothing(tmp_path, monkeypatch):
    import json
    import sys

    import json_tricks

    marker = tmp_path / "ran"
    module = tmp_path / "log_payload_module.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('x')\nclass Payload:\n    pass\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    payload = {"__instance_type__": ["log_payload_module", "Payload"], "attributes": {}}
    path = tmp_path / "shared_log.json"
    path.write_text(json.dumps({"0": {"Loss": 2.3, "Alpha": payload}}))
    with pytest.raises(ValueError, match="__instance_type__.*plain names"):
        ct.log_frame(path)
    assert not marker.exists() and "log_payload_module" not in sys.modules
    with open(path) as handle:  # what json_tricks' default hooks do with the same file
        json_tricks.load(handle)
    assert marker.exists()
    monkeypatch.delitem(sys.modules, "log_payload_module")

    bad = {
        "object array": {"0": {"Loss": {"__ndarray__": [1], "dtype": "object", "shape": [1]}}},
        "deep": {"0": {"Loss": json.loads("[" * 20 + "]" * 20)}},
        "not steps": {"a": {"Loss": 1.0}},
        "not a log": [1, 2, 3],
    }
    for content in bad.values():
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match="log|array|nested"):
            logs.load_log(path)


def test_a_written_log_reads_back_with_its_arrays(tmp_path, standard_log):
    path = ct.write_log(standard_log, tmp_path / "run", quiet=True)
    back = logs.load_log(path)
    hist = back[0]["GradHist1d"]
    assert isinstance(hist["hist"], np.ndarray) and hist["hist"].shape == (100,)
    np.testing.assert_array_equal(hist["hist"], np.asarray(standard_log[0]["GradHist1d"]["hist"]))
    assert back[0]["Loss"] == pytest.approx(float(standard_log[0]["Loss"]))
