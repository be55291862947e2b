"""Tests of nbhelpers.watch: each kind of training bug, written as a learner would write it on
the series' CNN and the stand-in data, is flagged by name in the first epoch (in each of its
forms), and its correct twin passes silently; the watch changes nothing in the run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, random_split
from torchvision import transforms

from nbhelpers.data import ImageSet, make_loader
from nbhelpers.models import build_cnn
from nbhelpers.watch import INVARIANTS, watch
from nbhelpers.watch import store as watch_store

BATCH, EPOCHS = 32, 2
N_TRAIN = 256
STEPS_PER_EPOCH = N_TRAIN // BATCH


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread (the test machine's cores are shared). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def standin() -> tuple[ImageSet, ImageSet]:
    """256 training and 128 validation images of the stand-in data."""
    from nbhelpers.synthetic import generate

    x, y = generate(N_TRAIN + 128, seed=0)
    pool = ImageSet(x, y, "train", "synthetic")
    return pool.subset(range(N_TRAIN), "train"), pool.subset(range(N_TRAIN, N_TRAIN + 128), "valid")


def new_model(norm: str = "batch", *, seed: bool = True) -> nn.Module:
    if seed:
        torch.manual_seed(0)
    return build_cnn("relu", norm, width=4)


def fast_loaders(standin):
    train, valid = standin
    return make_loader(train, BATCH, shuffle=True), make_loader(valid, 64, shuffle=False)


def evaluate(model, loader):
    """A learner's evaluation function: mean loss and accuracy."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            total += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return total / n, correct / n


def fit(
    model, optimizer, train_loader, step, *, eval_loader=None, epochs=EPOCHS, evaluate_fn=evaluate
):
    """The learner's loop around a ``step(model, optimizer, x, y)``; evaluation after each epoch."""
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            step(model, optimizer, x, y)
        if eval_loader is not None:
            evaluate_fn(model, eval_loader)


def watched(model, optimizer, run, **options):
    """Run ``run()`` (the learner's code) under a quiet watch; return the watch."""
    with watch(model, optimizer, quiet=True, **options) as w:
        run()
    return w


def watched_fit(model, optimizer, *args, watch_options=None, **kwargs):
    """:func:`fit` under a quiet watch; return the watch."""
    return watched(
        model, optimizer, lambda: fit(model, optimizer, *args, **kwargs), **(watch_options or {})
    )


def assert_flags(w, name: str, within: int = STEPS_PER_EPOCH) -> None:
    assert name in w.found, str(w.report())
    assert w.found[name].details["step"] <= within, w.found[name]  # found in the first epoch
    assert w.found[name].hint


def assert_silent(w) -> None:
    assert w.ok, str(w.report())


# ------------------------------------------------------------------------------ zero_grad
def step_plain(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def step_no_reset(model, optimizer, x, y):  # the handover's step
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()


def step_reset_after(model, optimizer, x, y):
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def step_model_zero_grad_in_place(model, optimizer, x, y):
    model.zero_grad(set_to_none=False)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_missing_zero_grad_is_flagged_in_the_colleagues_loop(standin):
    train_loader, _ = fast_loaders(standin)
    model = new_model("none")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = watched(model, opt, lambda: fit(model, opt, train_loader, step_no_reset))
    assert_flags(w, "zero_grad", within=1)
    assert "step 1 still held the gradient of step 0" in w.found["zero_grad"].evidence


def test_reset_once_per_epoch_is_flagged(standin):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def run():
        for _ in range(EPOCHS):
            opt.zero_grad()  # at the start of each epoch only
            for x, y in train_loader:
                nn.CrossEntropyLoss()(model(x), y).backward()
                opt.step()

    assert_flags(watched(model, opt, run), "zero_grad")


@pytest.mark.parametrize("step", [step_plain, step_reset_after, step_model_zero_grad_in_place])
def test_each_way_of_resetting_passes(standin, step):
    train_loader, valid_loader = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    w = watched_fit(model, opt, train_loader, step, eval_loader=valid_loader)
    assert_silent(w)
    assert len(w.steps) == EPOCHS * STEPS_PER_EPOCH and all(s["stale"] is False for s in w.steps)


# ------------------------------------------------------------------------------ accumulation
ACCUMULATE = 4


def accumulate(model, opt, train_loader, *, divide: bool):
    """Gradient accumulation: one step per ACCUMULATE micro-batches."""
    opt.zero_grad()
    for i, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(model(x), y)
        (loss / ACCUMULATE if divide else loss).backward()
        if (i + 1) % ACCUMULATE == 0:
            opt.step()
            opt.zero_grad()


def accumulate_summed(model, opt, train_loader, *, divide: bool):
    """The micro-batch losses summed first, then one backward()."""
    batches = list(train_loader)
    for i in range(0, len(batches), ACCUMULATE):
        opt.zero_grad()
        total = sum(nn.CrossEntropyLoss()(model(x), y) for x, y in batches[i : i + ACCUMULATE])
        (total / ACCUMULATE if divide else total).backward()
        opt.step()


def accumulate_summed_reduction(model, opt, train_loader, *, divide: bool):
    """reduction='sum' divided by the number of examples of the accumulated step."""
    batches = list(train_loader)
    for i in range(0, len(batches), ACCUMULATE):
        opt.zero_grad()
        group = batches[i : i + ACCUMULATE]
        n = sum(len(y) for _, y in group) if divide else len(group[0][1])
        for x, y in group:
            (F.cross_entropy(model(x), y, reduction="sum") / n).backward()
        opt.step()


@pytest.mark.parametrize("program", [accumulate, accumulate_summed, accumulate_summed_reduction])
def test_accumulation_not_divided_is_flagged_and_divided_passes(standin, program):
    loader = make_loader(standin[0], BATCH // ACCUMULATE, shuffle=True)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bad = watched(model, opt, lambda: program(model, opt, loader, divide=False))
    assert_flags(bad, "accumulation", within=1)
    assert "4x the mean gradient" in bad.found["accumulation"].evidence
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    good = watched(model, opt, lambda: program(model, opt, loader, divide=True))
    assert_silent(good)
    assert max(sum(s["weights"]) for s in good.steps) == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------------------ lr_collapse
WARMUP, BASE_LR = 20, 1e-3


def warmup_multiplying(model, opt, train_loader):
    """A warm-up that multiplies the *current* learning rate every step (the bug)."""
    step = 0
    for _ in range(EPOCHS):
        for x, y in train_loader:
            if step < WARMUP:
                for group in opt.param_groups:
                    group["lr"] = group["lr"] * (step + 1) / WARMUP
            step_plain(model, opt, x, y)
            step += 1


def warmup_from_base(model, opt, train_loader):
    step = 0
    for _ in range(EPOCHS):
        for x, y in train_loader:
            if step < WARMUP:
                for group in opt.param_groups:
                    group["lr"] = BASE_LR * (step + 1) / WARMUP
            step_plain(model, opt, x, y)
            step += 1


def scheduled(make_scheduler, per_batch: bool):
    def program(model, opt, train_loader):
        scheduler = make_scheduler(opt)
        for _ in range(EPOCHS * 2):
            for x, y in train_loader:
                step_plain(model, opt, x, y)
                if per_batch:
                    scheduler.step()
            if not per_batch:
                scheduler.step()

    return program


sched = torch.optim.lr_scheduler
COLLAPSING = {
    "warm-up multiplying the current lr": warmup_multiplying,
    "per-epoch StepLR stepped every batch": scheduled(
        lambda o: sched.StepLR(o, 1, gamma=0.1), True
    ),
    "MultiplicativeLR warm-up": scheduled(
        lambda o: sched.MultiplicativeLR(o, lambda s: (s + 1) / WARMUP if s < WARMUP else 1.0), True
    ),
}
HEALTHY = {
    "warm-up from the base lr": warmup_from_base,
    "StepLR stepped per epoch": scheduled(lambda o: sched.StepLR(o, 1, gamma=0.5), False),
    "LinearLR warm-up": scheduled(lambda o: sched.LinearLR(o, 0.01, total_iters=WARMUP), True),
}


@pytest.mark.parametrize("name", COLLAPSING)
def test_collapsing_learning_rate_is_flagged(standin, name):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    w = watched(model, opt, lambda: COLLAPSING[name](model, opt, train_loader))
    assert_flags(w, "lr_collapse")
    assert "lr_jump" not in w.found


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_schedules_pass(standin, name):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    assert_silent(watched(model, opt, lambda: HEALTHY[name](model, opt, train_loader)))


# ------------------------------------------------------------------------------ lr_jump
def first_session(standin, path):
    """Train 2 epochs with a learning rate decayed 10x per epoch; save a checkpoint."""
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    scheduler = sched.StepLR(opt, 1, gamma=0.1)
    with watch(model, opt, quiet=True) as w:
        for _ in range(EPOCHS):
            for x, y in train_loader:
                step_plain(model, opt, x, y)
            scheduler.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    torch.save({**state, "scheduler": scheduler.state_dict(), "epoch": EPOCHS}, path)
    assert_silent(w)
    return train_loader


def resume(train_loader, path, how: str):
    """A second session: rebuild, load the checkpoint, train one more epoch."""
    checkpoint = torch.load(path)
    model = new_model()
    model.load_state_dict(checkpoint["model"])
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    scheduler = sched.StepLR(opt, 1, gamma=0.1)
    if how != "model only":  # the bug: a fresh optimizer starts again at the base lr
        opt.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    if how == "fast-forward":  # the bug: the loaded scheduler already counted these epochs
        for _ in range(checkpoint["epoch"]):
            scheduler.step()
    with watch(model, opt, quiet=True) as w:
        for x, y in train_loader:
            step_plain(model, opt, x, y)
        scheduler.step()
    return w


@pytest.mark.parametrize("how", ["model only", "fast-forward"])
def test_learning_rate_jump_after_resuming_is_flagged(standin, tmp_path, how):
    train_loader = first_session(standin, tmp_path / "checkpoint.pt")
    w = resume(train_loader, tmp_path / "checkpoint.pt", how)
    assert w.resumed is not None and w.resumed["step"] == EPOCHS * STEPS_PER_EPOCH
    assert_flags(w, "lr_jump", within=2)  # two more steps tell a jump from a collapse
    assert "the run this one resumes" in w.found["lr_jump"].evidence


def test_a_correct_resume_passes(standin, tmp_path):
    train_loader = first_session(standin, tmp_path / "checkpoint.pt")
    w = resume(train_loader, tmp_path / "checkpoint.pt", "everything")
    assert w.resumed is not None
    assert_silent(w)


def test_a_jump_inside_one_run_is_flagged(standin):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    saved = opt.state_dict()  # an early snapshot, at lr 1e-3

    def run():
        for group in opt.param_groups:
            group["lr"] = 1e-5
        for epoch in range(EPOCHS):
            for x, y in train_loader:
                step_plain(model, opt, x, y)
            if epoch == 0:
                opt.load_state_dict(saved)  # "restore" the wrong snapshot

    assert_flags(watched(model, opt, run), "lr_jump", within=STEPS_PER_EPOCH + 2)


# ------------------------------------------------------------------------------ eval_loss
def eval_softmax_functional(model, loader):
    model.eval()
    with torch.no_grad():
        return [F.cross_entropy(F.softmax(model(x), dim=1), y).item() for x, y in loader]


def eval_softmax_module(model, loader):
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        return [loss_fn(torch.softmax(model(x), 1), y).item() for x, y in loader]


def eval_sigmoid(model, loader):
    model.eval()
    with torch.no_grad():
        return [F.cross_entropy(model(x).sigmoid(), y).item() for x, y in loader]


def eval_nll_without_log(model, loader):  # training uses log_softmax + nll_loss
    model.eval()
    with torch.no_grad():
        return [F.nll_loss(F.softmax(model(x), 1), y).item() for x, y in loader]


def step_nll(model, optimizer, x, y):
    optimizer.zero_grad()
    F.nll_loss(F.log_softmax(model(x), 1), y).backward()
    optimizer.step()


def eval_nll(model, loader):
    model.eval()
    with torch.inference_mode():
        return [nn.NLLLoss()(torch.log_softmax(model(x), 1), y).item() for x, y in loader]


@pytest.mark.parametrize(
    "step, evaluate_fn, bad",
    [
        (step_plain, eval_softmax_functional, True),
        (step_plain, eval_softmax_module, True),
        (step_plain, eval_sigmoid, True),
        (step_nll, eval_nll_without_log, True),
        (step_plain, evaluate, False),
        (step_nll, eval_nll, False),
    ],
)
def test_evaluation_loss_that_disagrees_with_training_is_flagged(standin, step, evaluate_fn, bad):
    train_loader, valid_loader = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    w = watched_fit(
        model, opt, train_loader, step, eval_loader=valid_loader, evaluate_fn=evaluate_fn
    )
    if bad:
        assert_flags(w, "eval_loss")
        assert "on the same batch evaluation reports" in w.found["eval_loss"].evidence
    else:
        assert_silent(w)


def test_an_evaluation_before_training_is_judged_once_training_starts(standin):
    train_loader, valid_loader = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        eval_softmax_functional(model, valid_loader)  # before the first step
        fit(model, opt, train_loader, step_plain, epochs=1)

    assert_flags(watched(model, opt, run), "eval_loss")
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run():
        return (evaluate(model, valid_loader), fit(model, opt, train_loader, step_plain))

    assert_silent(watched(model, opt, run))


# ------------------------------------------------------------------------------ eval_memory
def eval_keeping_losses(model, loader):
    model.eval()
    losses = [F.cross_entropy(model(x), y) for x, y in loader]  # autograd on, graphs kept
    return torch.stack(losses).mean().item()


def eval_summing_tensors(model, loader):
    model.eval()
    total = 0
    for x, y in loader:
        total = total + nn.CrossEntropyLoss(reduction="sum")(model(x), y)
    return total.item()


def eval_in_train_mode_keeping_losses(model, loader):  # neither eval() nor no_grad()
    return [F.cross_entropy(model(x), y) for x, y in loader]


def eval_items_only(model, loader):  # autograd on, but only numbers are kept: no growth
    model.eval()
    return [F.cross_entropy(model(x), y).item() for x, y in loader]


@pytest.mark.parametrize(
    "evaluate_fn, bad",
    [
        (eval_keeping_losses, True),
        (eval_summing_tensors, True),
        (eval_in_train_mode_keeping_losses, True),
        (eval_items_only, False),
        (evaluate, False),
    ],
)
def test_evaluation_that_keeps_graphs_is_flagged(standin, evaluate_fn, bad):
    train_loader, _ = fast_loaders(standin)
    valid_loader = make_loader(standin[1], 16, shuffle=False)  # 8 evaluation batches
    model = new_model("none")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    w = watched_fit(
        model, opt, train_loader, step_plain, eval_loader=valid_loader, evaluate_fn=evaluate_fn
    )
    if bad:
        assert_flags(w, "eval_memory", within=STEPS_PER_EPOCH + 1)
        assert "graph" in w.found["eval_memory"].evidence
    else:
        assert_silent(w)


def test_eval_memory_evidence_counts_megabytes(standin):
    valid_loader = make_loader(standin[1], 16, shuffle=False)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = watched(model, opt, lambda: eval_keeping_losses(model, valid_loader))
    assert "MB of saved activations" in w.found["eval_memory"].evidence


# ------------------------------------------------------------------------------ logits
class ReluHead(nn.Module):
    """The CNN with a ReLU on its logits."""

    def __init__(self, final: nn.Module):
        super().__init__()
        self.net, self.final = new_model(), final

    def forward(self, x):
        return self.final(self.net(x))


def step_relu_in_loop(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(F.relu(model(x)), y).backward()
    optimizer.step()


@pytest.mark.parametrize(
    "model_fn, step, name",
    [
        (lambda: ReluHead(nn.ReLU()), step_plain, "nonnegative_logits"),
        (lambda: ReluHead(nn.Softplus()), step_plain, "nonnegative_logits"),
        (new_model, step_relu_in_loop, "nonnegative_logits"),
        (lambda: ReluHead(nn.Softmax(dim=1)), step_plain, "softmax_output"),
        (new_model, step_plain, None),
        (lambda: ReluHead(nn.LogSoftmax(dim=1)), step_nll, None),
    ],
)
def test_non_negative_logits_and_softmax_before_the_loss_are_flagged(standin, model_fn, step, name):
    train_loader, _ = fast_loaders(standin)
    model = model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w = watched(model, opt, lambda: fit(model, opt, train_loader, step))
    if name:
        assert_flags(w, name, within=3)
    else:
        assert_silent(w)


# ------------------------------------------------------------------------------ model_modes
def eval_without_train_after(model, loader):
    model.eval()
    with torch.no_grad():
        return [F.cross_entropy(model(x), y).item() for x, y in loader]


def test_training_in_eval_mode_and_evaluating_in_train_mode_are_flagged(standin):
    train_loader, valid_loader = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def no_train_call():  # model.train() only once, before the first epoch
        model.train()
        for _ in range(EPOCHS):
            for x, y in train_loader:
                step_plain(model, opt, x, y)
            eval_without_train_after(model, valid_loader)

    w = watched(model, opt, no_train_call)
    assert_flags(w, "model_modes", within=STEPS_PER_EPOCH + 1)
    assert "eval mode" in w.found["model_modes"].evidence

    def no_eval_call(m, loader):
        with torch.no_grad():
            return [F.cross_entropy(m(x), y).item() for x, y in loader]

    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    w = watched_fit(
        model, opt, train_loader, step_plain, eval_loader=valid_loader, evaluate_fn=no_eval_call
    )
    assert_flags(w, "model_modes", within=STEPS_PER_EPOCH)
    assert "train mode" in w.found["model_modes"].evidence


# ------------------------------------------------------------------------------ gradients, optimizer
def step_reset_before_step(model, optimizer, x, y):
    F.cross_entropy(model(x), y).backward()
    optimizer.zero_grad()  # wrong place: the step finds no gradient
    optimizer.step()


def step_zeroed_in_place_before_step(model, optimizer, x, y):
    F.cross_entropy(model(x), y).backward()
    optimizer.zero_grad(set_to_none=False)
    optimizer.step()


def step_with_nan_input(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(torch.log(x - x.max())), y).backward()  # log of negative numbers
    optimizer.step()


@pytest.mark.parametrize(
    "step, words",
    [
        (step_reset_before_step, "no gradient"),
        (step_zeroed_in_place_before_step, "exactly 0"),
        (step_with_nan_input, "NaN"),
    ],
)
def test_missing_zero_and_nan_gradients_are_flagged(standin, step, words):
    train_loader, _ = fast_loaders(standin)
    model = new_model("none")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = watched(model, opt, lambda: fit(model, opt, train_loader, step, epochs=1))
    assert_flags(w, "gradients", within=0)
    assert words in w.found["gradients"].evidence


def test_optimizer_of_an_earlier_model_is_flagged(standin):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model = new_model()  # the model cell run again: the optimizer still holds the old one
    w = watched(model, opt, lambda: fit(model, opt, train_loader, step_plain))
    assert_flags(w, "optimizer_params", within=0)


# ------------------------------------------------------------------------------ splits
def svhn_like_datasets(standin, tmp_path, monkeypatch):
    """A torchvision ``SVHN`` object reading the stand-in images (its file check pointed at
    our file), as a learner loading SVHN would have it."""
    import hashlib

    import scipy.io
    from torchvision.datasets import SVHN

    train, valid = standin
    images = torch.cat([train.images, valid.images]).permute(2, 3, 1, 0).numpy()
    labels = torch.cat([train.labels, valid.labels]).numpy()[:, None]
    scipy.io.savemat(
        tmp_path / "train_32x32.mat", {"X": images, "y": np.where(labels == 0, 10, labels)}
    )
    md5 = hashlib.md5((tmp_path / "train_32x32.mat").read_bytes()).hexdigest()
    split_list = {**SVHN.split_list, "train": [SVHN.split_list["train"][0], "train_32x32.mat", md5]}
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return lambda transform: SVHN(str(tmp_path), split="train", transform=transform)


AUGMENT = transforms.Compose([transforms.RandomCrop(32, padding=2), transforms.ToTensor()])


def split_loaders(full, generator=None, sizes=(N_TRAIN, 128)):
    train_set, valid_set = random_split(
        full, list(sizes), **({"generator": generator} if generator else {})
    )
    return train_set, valid_set


def run_on(train_set, valid_set, *, evaluate_fn=evaluate, seed: bool = True):
    model = new_model(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader = DataLoader(train_set, BATCH, shuffle=True)
    valid_loader = DataLoader(valid_set, 64)

    loaders = {"train_loader": train_loader, "eval_loaders": {"valid": valid_loader}}
    return watched_fit(
        model, opt, train_loader, step_plain, eval_loader=valid_loader, evaluate_fn=evaluate_fn,
        epochs=1, watch_options=loaders,
    )  # fmt: skip


def test_unseeded_random_split_is_flagged_at_once(standin):
    full = ImageSet(
        torch.cat([s.images for s in standin]), torch.cat([s.labels for s in standin])
    ).to_dataset()
    torch.seed()  # a fresh process: torch's global generator starts from a random seed
    try:
        w = run_on(*split_loaders(full), seed=False)  # the learner never seeds
    finally:
        torch.manual_seed(0)
    assert_flags(w, "split_seed", within=0)
    assert "no seed re-creates it" in w.found["split_seed"].evidence


def test_a_split_drawn_anew_in_the_next_run_is_flagged(standin):
    full = ImageSet(
        torch.cat([s.images for s in standin]), torch.cat([s.labels for s in standin])
    ).to_dataset()
    for run in range(2):  # a learner who "seeds" with the clock, run twice
        torch.manual_seed(int(time.time() * 1000) % 2**31 + run)
        w = run_on(*split_loaders(full))
    torch.manual_seed(0)
    assert_flags(w, "split_seed", within=0)
    assert "split of an earlier run" in w.found["split_seed"].evidence
    stored = json.loads(watch_store.store_path().read_text())
    assert len(stored["splits"]) == 2 and len(stored["ends"]) == 2


@pytest.mark.parametrize("seeding", ["generator", "global"])
def test_seeded_splits_pass_in_two_runs(standin, seeding):
    full = ImageSet(
        torch.cat([s.images for s in standin]), torch.cat([s.labels for s in standin])
    ).to_dataset()
    for _ in range(2):
        if seeding == "global":
            torch.manual_seed(0)
        torch.seed() if seeding == "generator" else None  # unseeded process, explicit generator
        generator = torch.Generator().manual_seed(42) if seeding == "generator" else None
        w = run_on(*split_loaders(full, generator))
        assert_silent(w)
    torch.manual_seed(0)


def test_eval_transform_set_on_a_shared_svhn_object_is_flagged(standin, tmp_path, monkeypatch):
    svhn = svhn_like_datasets(standin, tmp_path, monkeypatch)
    full = svhn(AUGMENT)
    train_set, valid_set = split_loaders(full, torch.Generator().manual_seed(0))
    valid_set.dataset.transform = transforms.ToTensor()  # meant for validation only
    w = run_on(train_set, valid_set)
    assert_flags(w, "shared_transform", within=0)
    assert "replaced after it was built" in w.found["shared_transform"].evidence


def test_augmentation_set_on_a_shared_dataset_reaches_evaluation(standin):
    full = standin[0].to_dataset()
    train_set, valid_set = split_loaders(full, torch.Generator().manual_seed(0), (192, 64))
    train_set.dataset.transform = AUGMENT  # meant for training only
    assert_flags(run_on(train_set, valid_set), "shared_transform", within=0)


def test_transform_set_on_a_subset_is_flagged(standin):
    full = standin[0].to_dataset(AUGMENT)
    train_set, valid_set = split_loaders(full, torch.Generator().manual_seed(0), (192, 64))
    valid_set.transform = transforms.ToTensor()  # a Subset ignores it
    w = run_on(train_set, valid_set)
    assert_flags(w, "shared_transform", within=0)
    assert "set on a Subset" in w.found["shared_transform"].evidence


def test_eval_function_that_switches_the_shared_transform_is_flagged_live(standin):
    full = standin[0].to_dataset(AUGMENT)
    train_set, valid_set = split_loaders(full, torch.Generator().manual_seed(0), (192, 64))

    def evaluate_switching(model, loader):
        loader.dataset.dataset.transform = transforms.ToTensor()  # and never switched back
        return evaluate(model, loader)

    w = run_on(train_set, valid_set, evaluate_fn=evaluate_switching)
    assert "shared_transform" in w.found, str(w.report())


def test_one_dataset_object_per_split_passes(standin, tmp_path, monkeypatch):
    svhn = svhn_like_datasets(standin, tmp_path, monkeypatch)
    order = torch.randperm(N_TRAIN + 128, generator=torch.Generator().manual_seed(0)).tolist()
    train_set = Subset(svhn(AUGMENT), order[:N_TRAIN])
    valid_set = Subset(svhn(transforms.ToTensor()), order[N_TRAIN:])
    assert_silent(run_on(train_set, valid_set))


# ------------------------------------------------------------------------------ the watch itself
def test_the_watch_changes_nothing_in_the_run(standin):
    def losses(watching: bool):
        train_loader, valid_loader = fast_loaders(standin)
        model = new_model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        seen = []

        def step(m, o, x, y):
            o.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            o.step()
            seen.append(loss.item())

        def run():
            return fit(model, opt, train_loader, step, eval_loader=valid_loader)

        if watching:
            watched(model, opt, run)
        else:
            run()
        return seen, model.state_dict(), model._forward_hooks, opt._optimizer_step_pre_hooks

    plain, watched_run = losses(False), losses(True)
    assert plain[0] == watched_run[0]
    assert all(torch.equal(plain[1][k], watched_run[1][k]) for k in plain[1])
    assert not watched_run[2] and not watched_run[3]  # every hook removed
    assert F.cross_entropy.__module__ == "torch.nn.functional"  # the loss put back


def test_copies_of_the_model_are_not_watched_and_go_quiet_after_the_block(standin):
    import copy

    train_loader, valid_loader = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt, quiet=True) as w:
        fit(model, opt, train_loader, step_plain, epochs=1)
        twin = copy.deepcopy(model)  # carries the watch's hooks
        evaluate(twin, valid_loader)
    seen = dict(w.seen)
    assert w.ok and w.seen["eval_forwards"] == 0, str(w.report())
    twin(next(iter(valid_loader))[0])  # after the block: nothing is recorded
    assert dict(w.seen) == seen


def test_report_lists_every_invariant_and_prints_live(standin, capsys):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with watch(model, opt) as w:
        fit(model, opt, train_loader, step_no_reset, epochs=1)
    out = capsys.readouterr().out
    assert out.count("[FAIL] zero_grad") == 1  # reported once, as it happened
    assert "1 fault(s) found: zero_grad" in out
    report = w.report()
    assert report.names == [row.name for row in INVARIANTS]
    assert report["zero_grad"].failed and report["gradients"].passed
    assert report["split_seed"].status == "N/A"  # no loaders given
    assert "<table" in report._repr_html_()


def test_an_error_inside_the_watch_never_stops_training(standin, monkeypatch):
    train_loader, _ = fast_loaders(standin)
    model = new_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def broken(*args):
        raise RuntimeError("boom")

    for part in ("_before_step", "_watch_data", "_remember_end"):
        w = watch(model, opt, quiet=True)
        monkeypatch.setattr(w, part, broken)
        with pytest.warns(UserWarning, match="stopped after an error of its own"), w:
            fit(model, opt, train_loader, step_plain, epochs=1)
        assert "boom" in w.summary() and not model._forward_hooks


def test_bad_arguments_and_a_bad_store_file(standin, tmp_path, monkeypatch):
    model = new_model()
    with pytest.raises(TypeError, match="optimizer=Sequential is invalid"):
        watch(model, model)
    with pytest.raises(TypeError, match="model=str is invalid"):
        watch("model", torch.optim.SGD(model.parameters(), lr=0.1))
    path = watch_store.store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ends": {"x": {"lr": "__import__('os')", "step": 1, "time": "t"}}}))
    with pytest.warns(UserWarning, match="not a watch file"):
        assert watch_store.load() == {"ends": {}, "splits": {}}
    assert path.with_name("watch.json.bad").is_file() and not path.exists()
    path.write_text("x" * (watch_store.MAX_BYTES + 1))
    with pytest.warns(UserWarning, match="not a watch file"):
        watch_store.load()
