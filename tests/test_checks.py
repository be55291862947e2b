"""Tests of nbhelpers.checks: every check fires on a small faulty input and stays quiet on a
sound one; nothing of the learner's is changed; the handover configuration is flagged for each
of its visible faults and the reference fix for none."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, random_split
from torchvision import transforms

from nbhelpers import checks
from nbhelpers.data import DataBundle, ImageSet, TensorLoader


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread while these tests run (the test machine's cores are shared; two
    threads fighting for one free core make small convolutions ~10x slower). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth uint8 images (N, 3, 32, 32); with labels, class k gets a bright band at row 3k."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32, mode="bilinear")
    if labels is not None:
        x = 0.4 * x
        for i, k in enumerate(labels.tolist()):
            x[i, :, 3 * k : 3 * k + 3, :] = 1.0
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def imageset(n: int, seed: int = 0, name: str = "train") -> ImageSet:
    y = labels(n)
    return ImageSet(images(n, seed, y), y, name, "synthetic")


def tiny_cnn(*, bn: bool = False, softmax: bool = False, dropout: bool = False, k: int = 10):
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.MaxPool2d(4), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(8 * 8 * 8, k))
    if softmax:
        layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers)


class Times0(nn.Module):
    """Multiplies by zero: the loss no longer depends on the parameters (zero gradient)."""

    def forward(self, a):
        return a * 0.0


def batch(n: int = 32):
    y = labels(n)
    return images(n, 3, y).float() / 255.0, y


def step_with_zero_grad(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def step_without_zero_grad(model, optimizer, x, y):
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def state_of(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ results
def test_result_prints_one_line_with_hint_and_html():
    fig, ax = checks.results.new_figure()
    ax.plot([1, 2])
    r = checks.CheckResult("demo", False, "something is off", "fix it", figure=fig)
    text = str(r)
    assert text.startswith("[FAIL] demo: something is off")
    assert "hint: fix it" in text
    html = r._repr_html_()
    assert "FAIL" in html and "data:image/png;base64," in html
    assert checks.CheckResult("x", None, "n/a").status == "N/A"


def test_report_table_and_lookup():
    report = checks.CheckReport(
        [checks.CheckResult("a", True, "ok"), checks.CheckResult("b", False, "bad", "do x")]
    )
    frame = report.to_frame()
    assert list(frame["status"]) == ["PASS", "FAIL"]
    assert report["b"].failed and [r.name for r in report.failed] == ["b"]
    assert "b" in report and "c" not in report and report.names == ["a", "b"]
    assert "1 passed, 1 failed" in str(report)
    assert "FAIL" in report._repr_html_()
    with pytest.raises(KeyError):
        report["missing"]


# ------------------------------------------------------------------------------ 1. splits
def test_split_overlap_fires_on_halved_train_and_not_on_disjoint():
    train = imageset(64, 0)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    bad = checks.check_split_overlap(
        {
            "train": train,
            "valid": train.subset(perm[:32], "valid"),
            "test": train.subset(perm[32:], "test"),
        }
    )
    assert bad.passed is False
    assert bad.details["shared"] == {"train&valid": 32, "train&test": 32, "valid&test": 0}
    assert "cut in halves" in bad.evidence
    good = checks.check_split_overlap(
        {"train": train, "valid": imageset(32, 1, "valid"), "test": imageset(32, 2, "test")}
    )
    assert good.passed is True and sum(good.details["shared"].values()) == 0


def test_split_overlap_reads_loaders_and_float_datasets():
    train = imageset(40, 0)
    loader = TensorLoader(train.images, train.labels, 16, shuffle=True)
    as_float = TensorDataset(train.images[:10].float() / 255.0, train.labels[:10])
    assert checks.check_split_overlap({"train": loader, "valid": as_float}).passed is False


def test_split_sources_fires_on_subsets_of_train():
    base = TensorDataset(torch.zeros(10, 3, 4, 4), torch.zeros(10, dtype=torch.long))
    bad = checks.check_split_sources(
        {"train": base, "valid": Subset(base, range(5)), "test": Subset(base, range(5, 10))}
    )
    assert bad.passed is False

    class Fake(TensorDataset):
        def __init__(self, split):
            super().__init__(torch.zeros(4, 3, 4, 4), torch.zeros(4, dtype=torch.long))
            self.split = split

    assert (
        checks.check_split_sources({"train": Fake("train"), "test": Fake("train")}).passed is False
    )
    assert checks.check_split_sources({"train": Fake("train"), "test": Fake("test")}).passed is True


# ------------------------------------------------------------------------------ 2. labels
def test_labels_fire_on_shift_dtype_missing_class_and_output_size():
    x = images(60)
    good_y = torch.arange(60) % 10
    assert checks.check_labels((x, good_y), 10, model=tiny_cnn()).passed is True
    shifted = checks.check_labels((x, good_y + 1), 10)
    assert shifted.passed is False and "shifted" in shifted.evidence
    assert checks.check_labels((x, good_y.float()), 10).passed is False
    assert checks.check_labels((x, torch.arange(60) % 9), 10).passed is False
    wrong_out = checks.check_labels((x, good_y), 10, model=tiny_cnn(k=5))
    assert wrong_out.passed is False and "outputs 5" in wrong_out.evidence


# ------------------------------------------------------------------------------ 3. inputs
def test_input_statistics_fire_on_raw_pixels_and_one_sided_normalisation():
    x, y = batch(64)
    good = checks.check_input_statistics({"train": (x, y), "valid": (x.flip(0), y)})
    assert good.passed is True
    raw = checks.check_input_statistics({"train": (x * 255, y), "valid": (x * 255, y)})
    assert raw.passed is False and "0-255" in raw.evidence
    normalised = (x - x.mean()) / x.std()
    one_sided = checks.check_input_statistics({"train": (normalised, y), "valid": (x, y)})
    assert one_sided.passed is False and "disagree" in one_sided.evidence


def test_image_layout_fires_on_reshaped_channels_last():
    x = images(64)
    assert checks.check_image_layout(x).passed is True
    striped = x.permute(0, 2, 3, 1).contiguous().reshape(64, 3, 32, 32)
    assert checks.check_image_layout(striped).passed is False
    grey = x[:, :1].expand(-1, 3, -1, -1)  # channels as correlated as in photos
    assert checks.check_image_layout(grey).passed is True
    grey_striped = grey.permute(0, 2, 3, 1).contiguous().reshape(64, 3, 32, 32)
    assert checks.check_image_layout(grey_striped).passed is False
    hwc = x.permute(0, 2, 3, 1)
    assert checks.check_image_layout(hwc, model=tiny_cnn()).passed is False


# ------------------------------------------------------------------------------ 4. augmentation
def test_augmentation_fires_on_rotation_flip_vertical_shift_and_shows_pairs():
    split = imageset(16)
    bad = checks.check_augmentation(
        split.to_dataset(
            transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
        )
    )
    assert bad.passed is False and "6 into 9" in bad.evidence
    assert bad.figure is not None
    flip = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    assert checks.check_augmentation(split.to_dataset(flip), show=False).passed is False
    shift = transforms.RandomAffine(degrees=0, translate=(0.0, 0.3))
    assert checks.check_augmentation(split, shift, show=False).passed is False
    mild = transforms.Compose(
        [transforms.RandomAffine(degrees=10, translate=(0.1, 0.05)), transforms.ToTensor()]
    )
    good = checks.check_augmentation(split.to_dataset(mild))
    assert good.passed is True and good.figure is not None


def test_augmentation_on_batch_augment_callable():
    from nbhelpers.experiment import RandomRotationBatch

    split = imageset(16)
    loader = TensorLoader(split.images, split.labels, 8, augment=RandomRotationBatch(180))
    assert checks.check_augmentation(loader).passed is False
    plain = TensorLoader(split.images, split.labels, 8)
    assert checks.check_augmentation(plain).passed is True


def test_eval_augmentation_fires_on_random_eval_transform():
    split = imageset(8, name="valid")
    noisy = split.to_dataset(
        transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])
    )
    assert checks.check_eval_augmentation({"valid": DataLoader(noisy, 4)}).passed is False
    assert checks.check_eval_augmentation({"valid": DataLoader(split.to_dataset(), 4)}).passed


def test_eval_determinism_fires_when_dropout_stays_on():
    x, y = batch(32)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = tiny_cnn(dropout=True)

    def careless_eval(m, ld):  # no model.eval(): dropout stays on
        return sum(float(F.cross_entropy(m(a), b).detach()) for a, b in ld)

    assert (
        checks.check_eval_determinism(model, {"valid": loader}, evaluate_fn=careless_eval).passed
        is False
    )
    assert checks.check_eval_determinism(model, {"valid": loader}).passed is True


# ------------------------------------------------------------------------------ 5. loader
def test_shuffle_fires_without_shuffling_and_keeps_rng():
    x, y = batch(64)
    ds = TensorDataset(x, y)
    assert checks.check_shuffle(DataLoader(ds, 8, shuffle=False), show=False).passed is False
    fixed_order = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    assert checks.check_shuffle(fixed_order, show=False).passed is False
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    good = checks.check_shuffle(DataLoader(ds, 8, shuffle=True))
    assert good.passed is True and good.figure is not None
    assert torch.equal(torch.rand(3), expected)  # the global RNG was put back


def test_shuffle_leaves_tensor_loader_epoch_alone():
    split = imageset(64)
    loader = TensorLoader(split.images, split.labels, 8, shuffle=True)
    assert checks.check_shuffle(loader, show=False).passed is True
    assert loader.epoch == 0


def test_last_batch_fires_on_single_example_with_batchnorm():
    ds = TensorDataset(*batch(65))
    assert checks.check_last_batch(DataLoader(ds, 64), tiny_cnn(bn=True)).passed is False
    assert checks.check_last_batch(DataLoader(ds, 64, drop_last=True), tiny_cnn(bn=True)).passed
    assert checks.check_last_batch(DataLoader(ds, 64), tiny_cnn()).passed is True


# ------------------------------------------------------------------------------ 6. training step
def test_zero_grad_fires_without_zero_grad_and_leaves_learner_untouched():
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = state_of(model)
    x, y = batch(16)
    bad = checks.check_zero_grad(model, opt, step_without_zero_grad, x, y)
    assert bad.passed is False and bad.details["growth"] == pytest.approx(3.0, rel=0.01)
    good = checks.check_zero_grad(model, opt, step_with_zero_grad, x, y)
    assert good.passed is True and good.details["growth"] == pytest.approx(1.0, rel=0.01)
    assert same_state(before, state_of(model)) and opt.state_dict()["state"] == {}
    assert all(p.grad is None for p in model.parameters())


def test_zero_grad_restores_a_learner_model_touched_through_globals():
    model = tiny_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = state_of(model)

    def uses_globals(m, o, x, y):  # ignores its arguments: trains the real model
        step_with_zero_grad(model, opt, x, y)

    result = checks.check_zero_grad(model, opt, uses_globals, *batch(8))
    assert "put back" in result.evidence
    assert same_state(before, state_of(model))


def test_model_modes_fire_on_train_mode_evaluation_and_eval_mode_training():
    model = tiny_cnn(dropout=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch(16)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)

    def eval_in_train_mode(m, ld):
        return [m(a).sum() for a, _ in ld]

    def proper_eval(m, ld):
        m.eval()
        with torch.no_grad():
            return [m(a).sum() for a, _ in ld]

    def step_in_eval_mode(m, o, a, b):
        m.eval()
        step_with_zero_grad(m, o, a, b)

    assert (
        checks.check_model_modes(model, evaluate_fn=eval_in_train_mode, eval_loader=loader).passed
        is False
    )
    assert (
        checks.check_model_modes(
            model, train_step=step_in_eval_mode, optimizer=opt, x=x, y=y
        ).passed
        is False
    )
    good = checks.check_model_modes(
        model,
        train_step=step_with_zero_grad,
        optimizer=opt,
        x=x,
        y=y,
        evaluate_fn=proper_eval,
        eval_loader=loader,
    )
    assert good.passed is True and "leaves the model in eval mode" in good.evidence
    assert model.training  # the learner's model is still in train mode


def test_softmax_output_fires_on_probabilities():
    x, _ = batch(8)
    assert checks.check_softmax_output(tiny_cnn(softmax=True), x).passed is False
    assert checks.check_softmax_output(tiny_cnn(), x).passed is True
    assert checks.check_softmax_output(tiny_cnn(), x, nn.NLLLoss()).passed is False


def test_gradients_fire_on_nan_zero_and_detached():
    x, y = batch(8)
    assert checks.check_gradients(tiny_cnn(), x, y).passed is True
    nan_model = tiny_cnn()
    with torch.no_grad():
        nan_model[0].weight[0, 0, 0, 0] = float("nan")
    assert checks.check_gradients(nan_model, x, y).passed is False

    zero_model = nn.Sequential(tiny_cnn(), Times0())
    assert checks.check_gradients(zero_model, x, y).passed is False

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_cnn()

        def forward(self, a):
            return self.net(a).detach()

    assert checks.check_gradients(Detached(), x, y).passed is False


def test_optimizer_params_fire_on_optimizer_of_another_model():
    model = tiny_cnn()
    assert (
        checks.check_optimizer_params(model, torch.optim.SGD(tiny_cnn().parameters(), 0.1)).passed
        is False
    )
    assert checks.check_optimizer_params(model, torch.optim.SGD(model.parameters(), 0.1)).passed


# ------------------------------------------------------------------------------ 7. learning rate
def test_learning_rate_heuristic():
    params = tiny_cnn().parameters
    assert checks.check_learning_rate(torch.optim.Adam(params(), lr=1e-5)).passed is False
    assert checks.check_learning_rate(torch.optim.SGD(params(), lr=1e-4)).passed is False
    assert checks.check_learning_rate(torch.optim.Adam(params(), lr=1e-3)).passed is True
    assert checks.check_learning_rate(torch.optim.SGD(params(), lr=0.05)).passed is True


def test_lr_schedule_fires_on_growth_and_on_per_batch_collapse():
    sched = torch.optim.lr_scheduler

    def opt():
        return torch.optim.Adam(tiny_cnn().parameters(), lr=1e-3)

    o = opt()
    growing = sched.ExponentialLR(o, gamma=1.001)
    res = checks.check_lr_schedule(o, growing, 300)
    assert res.passed is False and res.figure is not None
    assert res.details["lrs"][-1] == pytest.approx(1e-3 * 1.001**299)
    assert o.param_groups[0]["lr"] == 1e-3 and growing.last_epoch == 0  # never stepped
    o = opt()
    step = sched.StepLR(o, step_size=10, gamma=0.1)
    assert checks.check_lr_schedule(o, step, 200).passed is False  # meant per epoch
    assert (
        checks.check_lr_schedule(o, step, 200, scheduler_step="epoch", steps_per_epoch=50).passed
        is True
    )
    o = opt()
    assert checks.check_lr_schedule(o, sched.CosineAnnealingLR(o, T_max=200), 200).passed
    o = opt()
    assert checks.check_lr_schedule(o, sched.LinearLR(o, 0.1, total_iters=20), 200).passed
    o = opt()
    assert checks.check_lr_schedule(o, sched.OneCycleLR(o, 1e-2, total_steps=200), 200).passed
    assert checks.check_lr_schedule(o, None, 200).passed is True


def test_simulate_lr_per_epoch():
    o = torch.optim.SGD(tiny_cnn().parameters(), lr=1.0)
    s = torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5)
    lrs = checks.simulate_lr(o, s, 6, scheduler_step="epoch", steps_per_epoch=2)
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError):
        checks.simulate_lr(o, s, 0)


def test_lr_range_flags_a_far_too_small_learning_rate():
    y = labels(64)
    x = images(64, 4, y).float() / 255.0
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = tiny_cnn()
    tiny = torch.optim.Adam(model.parameters(), lr=1e-6)
    bad = checks.check_lr_range(model, loader, optimizer=tiny, steps=40, start_lr=1e-6)
    assert bad.passed is False and bad.figure is not None
    suggested = bad.details["test"].suggested_lr
    assert 1e-4 < suggested < 1.0
    good = torch.optim.Adam(model.parameters(), lr=suggested)
    assert checks.check_lr_range(model, loader, optimizer=good, steps=40, start_lr=1e-6).passed
    flat = nn.Sequential(tiny_cnn(), Times0())
    assert checks.check_lr_range(flat, loader, optimizer=tiny, steps=10, show=False).passed is None


# ------------------------------------------------------------------------------ 8. capacity
def test_overfit_one_batch_fires_when_the_model_cannot_memorise():
    x, y = batch(32)
    good = checks.check_overfit_one_batch(tiny_cnn(), x, y)
    assert good.passed is True
    bad = checks.check_overfit_one_batch(tiny_cnn(softmax=True), x, y)
    assert bad.passed is False and len(bad.details["losses"]) < 300  # it stalls above 1.46


# ------------------------------------------------------------------------------ run_all_checks
def test_run_all_checks_on_plain_objects():
    train, valid = imageset(64, 0), imageset(32, 1, "valid")
    loader = TensorLoader(train.images, train.labels, 16, shuffle=True)
    eval_loader = TensorLoader(valid.images, valid.labels, 16, shuffle=False)
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = state_of(model)
    report = checks.run_all_checks(
        model,
        loader,
        {"valid": eval_loader},
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=opt,
        train_step=step_without_zero_grad,
        planned_steps=40,
        lr_range_steps=20,
        overfit_steps=30,
        progress=False,
        show=False,
    )
    assert report["zero_grad"].passed is False
    assert report["split_overlap"].passed is True
    assert not any(r.error for r in report), str(report)
    assert same_state(before, state_of(model)) and loader.epoch == 0
    assert "zero_grad" in report.to_frame()["check"].tolist()
    assert "<table" in report._repr_html_()
    with pytest.raises(ValueError, match="split_overlap"):  # the message lists the valid names
        checks.run_all_checks(model, skip=["nonsense"])
    with pytest.raises(ValueError, match="nonsense"):
        checks.run_all_checks(model, only=["zero_grad", "nonsense"])


def test_only_runs_the_named_checks_and_skip_leaves_them_out():
    model, (x, y) = tiny_cnn(), batch(8)
    only = checks.run_all_checks(
        model, x=x, y=y, only=["gradients", "softmax_output"], progress=False
    )
    assert only.names == ["softmax_output", "gradients"]  # in table order
    rest = checks.run_all_checks(model, x=x, y=y, skip=["overfit_one_batch"], progress=False)
    assert "overfit_one_batch" not in rest.names and "gradients" in rest.names


def test_a_registered_check_is_run_when_its_inputs_are_given(monkeypatch):
    seen = []

    def count_parameters(inputs):
        seen.append(inputs.model)
        n = sum(p.numel() for p in inputs.model.parameters())
        return checks.CheckResult("made_up", n < 10, f"{n} parameters", "Use a smaller model.")

    row = checks.Check("made_up", "model optimizer|scheduler", count_parameters)
    monkeypatch.setitem(checks.CHECKS, "made_up", row)
    assert "made_up" in checks.CHECK_NAMES  # the names follow the table
    model = tiny_cnn()
    no_optimizer = checks.run_all_checks(model, only=["made_up"], progress=False)
    assert no_optimizer.names == [] and seen == []  # an input it needs is missing: not run
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    report = checks.run_all_checks(model, optimizer=opt, only=["made_up"], progress=False)
    assert report["made_up"].failed and seen == [model]
    assert report["made_up"].hint == "Use a smaller model."


def test_a_check_row_needs_known_inputs_and_inputs_are_validated():
    with pytest.raises(ValueError, match="modle"):
        checks.Check("typo", "modle", lambda inputs: None)
    with pytest.raises(ValueError, match="scheduler_step"):
        checks.run_all_checks(scheduler_step="sometimes")
    with pytest.raises(TypeError, match="not_an_input"):
        checks.run_all_checks(not_an_input=1)


# ------------------------------------------------------------------------------ integration
@pytest.fixture(scope="module")
def synthetic_bundle() -> DataBundle:
    from nbhelpers.synthetic import generate

    x, y = generate(768, seed=0)
    tx, ty = generate(256, seed=1)
    pool = ImageSet(x, y, "train", "synthetic")
    return DataBundle(
        pool.subset(range(512), "train"),
        pool.subset(range(512, 768), "valid"),
        ImageSet(tx, ty, "test", "synthetic"),
        "synthetic",
    )


HANDOVER_FAULTS = {"zero_grad", "split_overlap", "augmentation", "lr_schedule", "learning_rate"}


def test_handover_faults_flagged_and_reference_fix_clean(synthetic_bundle):
    from nbhelpers.experiment import handover_config, reference_fix_config

    options = dict(
        lr_range_steps=30, overfit_steps=60, max_batch_size=32, progress=False, show=False
    )
    handover = handover_config("tiny", source="synthetic", width=8, device="cpu")
    report = checks.check_config(handover, data=synthetic_bundle, **options)
    flagged = {r.name for r in report.failed}
    assert HANDOVER_FAULTS <= flagged, str(report)
    assert report.names == list(checks.CHECK_NAMES)  # given everything, every row runs
    assert not any(r.error for r in report), str(report)
    fix = reference_fix_config("tiny", source="synthetic", width=8, device="cpu")
    clean = checks.check_config(fix, data=synthetic_bundle, **options)
    assert clean.failed == [], str(clean)
    assert not any(r.error for r in clean), str(clean)


def test_checks_leave_an_augmentation_generator_alone():
    from nbhelpers.experiment import RandomRotationBatch

    split = imageset(32)
    rotate = RandomRotationBatch(10, seed=1)
    loader = TensorLoader(split.images, split.labels, 8, augment=rotate)
    state = rotate.generator.get_state()
    checks.check_augmentation(loader)
    checks.check_shuffle(loader, show=False)
    checks.check_input_statistics({"train": loader})
    assert torch.equal(rotate.generator.get_state(), state) and loader.epoch == 0


def test_raw_images_from_a_list_of_batches():
    x, y = batch(16)
    got_x, got_y, _ = checks.access.raw_images_labels([(x[:8], y[:8]), (x[8:], y[8:])])
    assert got_x.shape == (16, 3, 32, 32) and torch.equal(got_y, y)


# ------------------------------------------------------------------------------ what the checks got wrong
def test_split_sources_passes_a_seeded_random_split_and_fails_the_handover():
    base = TensorDataset(torch.zeros(40, 3, 4, 4), torch.arange(40) % 10)
    train, valid = torch.utils.data.random_split(base, [30, 10], torch.Generator().manual_seed(0))
    good = checks.check_split_sources({"train": train, "valid": valid})
    assert good.passed is True, good
    second_load = TensorDataset(torch.zeros(40, 3, 4, 4), torch.arange(40) % 10)
    halves = torch.utils.data.random_split(second_load, [20, 20], torch.Generator().manual_seed(0))
    bad = checks.check_split_sources({"train": base, "valid": halves[0], "test": halves[1]})
    assert bad.passed is False and "a second load of the training data" in bad.evidence
    overlapping = checks.check_split_sources(
        {"train": Subset(base, range(30)), "valid": Subset(base, range(25, 40))}
    )
    assert overlapping.passed is False and "shares 5 of its 15 examples" in overlapping.evidence


def test_split_seed_and_shared_transform_checks():
    data = imageset(40).to_dataset()
    torch.seed()  # as in a fresh process: the global generator was never seeded
    try:
        unseeded = checks.check_split_seed(
            dict(zip(("train", "valid"), random_split(data, [30, 10]), strict=False))
        )
        seeded = checks.check_split_seed(
            dict(
                zip(
                    ("train", "valid"),
                    random_split(data, [30, 10], torch.Generator().manual_seed(7)),
                    strict=False,
                )
            )
        )
    finally:
        torch.manual_seed(0)
    assert (
        unseeded.passed is False
        and seeded.passed is True
        and "seed 7 re-creates it" in seeded.evidence
    )
    shared = dict(
        zip(
            ("train", "valid"),
            random_split(data, [30, 10], torch.Generator().manual_seed(0)),
            strict=False,
        )
    )
    assert checks.check_shared_transform(shared).passed is True  # one deterministic transform
    data.transform = transforms.Compose(
        [transforms.RandomCrop(32, padding=2), transforms.ToTensor()]
    )
    assert checks.check_shared_transform(shared).passed is False  # evaluation gets the crop


def test_eval_determinism_catches_augmentation_even_with_an_untrained_model():
    split = imageset(64, name="valid")
    rotating = split.to_dataset(
        transforms.Compose([transforms.RandomRotation(30), transforms.ToTensor()])
    )
    loader = {"valid": DataLoader(rotating, 32)}
    x, y = batch(32)
    result = checks.check_eval_determinism(tiny_cnn(), loader, x=x, y=y)
    assert result.passed is False and "trained 20 steps" in result.evidence
    plain = {"valid": DataLoader(split.to_dataset(), 32)}
    assert checks.check_eval_determinism(tiny_cnn(), plain, x=x, y=y).passed is True


def test_lr_schedule_names_the_right_cause_of_a_collapse():
    o = torch.optim.Adam(tiny_cnn().parameters(), lr=1e-3)
    warmup = torch.optim.lr_scheduler.MultiplicativeLR(o, lambda s: (s + 1) / 20 if s < 20 else 1.0)
    collapse = checks.check_lr_schedule(o, warmup, 200, show=False)
    assert collapse.passed is False and "per-epoch" not in collapse.evidence
    assert "base_lr * (step + 1) / warmup_steps" in collapse.hint
    o = torch.optim.Adam(tiny_cnn().parameters(), lr=1e-3)
    per_epoch = checks.check_lr_schedule(
        o, torch.optim.lr_scheduler.StepLR(o, 1, 0.1), 200, show=False
    )
    assert per_epoch.passed is False and "per-epoch schedule" in per_epoch.evidence


def test_learning_rate_passes_a_warm_up_and_still_fails_the_handover():
    o = torch.optim.Adam(tiny_cnn().parameters(), lr=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=50)
    assert o.param_groups[0]["lr"] == pytest.approx(1e-5)  # what the old check read
    assert checks.check_learning_rate(o, warmup, 500).passed is True
    assert checks.check_learning_rate(o, warmup).passed is True  # the scheduler's base
    o = torch.optim.Adam(tiny_cnn().parameters(), lr=1e-5)
    growing = torch.optim.lr_scheduler.ExponentialLR(o, gamma=1.001)
    handover = checks.check_learning_rate(o, growing, 2860)
    assert handover.passed is False and "median" in handover.evidence


def test_hints_respect_gradient_accumulation_and_relu_on_the_logits_is_flagged():
    assert "once per accumulated step" in checks.HINTS["zero_grad"]
    x, _ = batch(8)
    relu_head = nn.Sequential(tiny_cnn(), nn.ReLU())
    result = checks.check_softmax_output(relu_head, x)
    assert result.passed is False and "ReLU" in result.evidence


def test_overfit_one_batch_allows_label_smoothing_dropout_and_slow_models():
    x, y = batch(32)
    smoothed = checks.check_overfit_one_batch(
        tiny_cnn(), x, y, nn.CrossEntropyLoss(label_smoothing=0.1)
    )
    assert smoothed.passed is True and smoothed.details["target"] > 0.5  # the floor is about 0.5
    assert checks.check_overfit_one_batch(tiny_cnn(dropout=True), x, y).passed is True
    slow = checks.check_overfit_one_batch(tiny_cnn(), x, y, steps=8, show=False)
    assert slow.passed is None and "still falling" in slow.evidence
