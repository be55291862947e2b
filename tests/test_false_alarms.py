"""The false-alarm suite: correct training programs of many shapes, on the series' CNN and the
stand-in data. Every check (``run_all_checks`` on the program's objects before training) and
the watch (on the program's own loop) must stay silent on every one of them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, random_split
from torchvision import transforms

from nbhelpers import checks
from nbhelpers.data import ImageSet, make_loader
from nbhelpers.experiment import RandomRotationBatch
from nbhelpers.models import build_cnn
from nbhelpers.train import evaluate as package_evaluate
from nbhelpers.train import train as package_train
from nbhelpers.watch import watch

BATCH, EPOCHS, N_TRAIN, N_VALID = 32, 2, 256, 128
STEPS = N_TRAIN // BATCH * EPOCHS
sched = torch.optim.lr_scheduler


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def standin() -> tuple[ImageSet, ImageSet]:
    from nbhelpers.synthetic import generate

    x, y = generate(N_TRAIN + N_VALID, seed=0)
    pool = ImageSet(x, y, "train", "synthetic")
    return pool.subset(range(N_TRAIN), "train"), pool.subset(
        range(N_TRAIN, N_TRAIN + N_VALID), "valid"
    )


@dataclass
class Program:
    """A learner's correct program: its objects, and its loop as ``run(program)``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Any
    eval_loader: Any
    run: Callable[[Program], None]
    train_step: Callable
    evaluate_fn: Callable
    scheduler: Any = None
    scheduler_step: str = "batch"
    loss_fn: Callable = field(default_factory=nn.CrossEntropyLoss)


def cnn(norm: str = "batch", width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_cnn("relu", norm, width=width)


def loaders(standin, batch: int = BATCH):
    train, valid = standin
    return make_loader(train, batch, shuffle=True), make_loader(valid, 64, shuffle=False)


def step_reset_first(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_reset_after(model, optimizer, x, y):
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def evaluate(model, loader):
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            total += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    model.train()
    return total / n, correct / n


def loop(step_scheduler: str | None = None, *, eval_first: bool = False):
    """The usual loop: epochs of ``train_step``; the scheduler per batch or per epoch."""

    def run(p: Program) -> None:
        if eval_first:
            p.evaluate_fn(p.model, p.eval_loader)
        for _ in range(EPOCHS):
            p.model.train()
            for x, y in p.train_loader:
                p.train_step(p.model, p.optimizer, x, y)
                if step_scheduler == "batch":
                    p.scheduler.step()
            valid_loss, _ = p.evaluate_fn(p.model, p.eval_loader)
            if step_scheduler == "epoch":
                p.scheduler.step()
            elif step_scheduler == "plateau":
                p.scheduler.step(valid_loss)

    return run


def plain(standin, model=None, optimizer=None, step=step_reset_first, **kw) -> Program:
    model = model or cnn()
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader, eval_loader = loaders(standin)
    fields = {"run": loop(), "train_step": step, "evaluate_fn": evaluate} | kw
    return Program(model, optimizer, train_loader, eval_loader, **fields)


def with_schedule(standin, make, how: str, optimizer_fn=None, **kw) -> Program:
    model = cnn()
    opt = (optimizer_fn or (lambda ps: torch.optim.Adam(ps, lr=1e-3)))(model.parameters())
    return plain(standin, model, opt, scheduler=make(opt), run=loop(how), scheduler_step=how, **kw)


# ------------------------------------------------------------------------------ the programs
def adam_plain(standin):
    return plain(standin)


def sgd_momentum_reset_after(standin):
    model = cnn()
    return plain(
        standin, model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), step_reset_after
    )


def sgd_nesterov_weight_decay(standin):
    model = cnn()
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    return plain(standin, model, opt)


def adamw_cosine_per_batch(standin):
    return with_schedule(standin, lambda o: sched.CosineAnnealingLR(o, T_max=STEPS), "batch")


def sgd_steplr_per_epoch(standin):
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    return with_schedule(standin, lambda o: sched.StepLR(o, 1, gamma=0.5), "epoch", sgd)


def linear_warmup_then_cosine(standin):
    def make(o):
        warm = sched.LinearLR(o, start_factor=0.1, total_iters=4)
        return sched.SequentialLR(o, [warm, sched.CosineAnnealingLR(o, T_max=STEPS - 4)], [4])

    return with_schedule(standin, make, "batch")


def one_cycle(standin):
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9)  # noqa: E731
    return with_schedule(
        standin, lambda o: sched.OneCycleLR(o, 0.1, total_steps=STEPS), "batch", sgd
    )


def reduce_on_plateau(standin):
    return with_schedule(standin, lambda o: sched.ReduceLROnPlateau(o, patience=0), "plateau")


def manual_warmup(standin):
    p = plain(standin)
    base, warmup = 1e-3, 6

    def run(p: Program) -> None:
        step = 0
        for _ in range(EPOCHS):
            for x, y in p.train_loader:
                for group in p.optimizer.param_groups:
                    group["lr"] = base * min(1.0, (step + 1) / warmup)
                p.train_step(p.model, p.optimizer, x, y)
                step += 1
            p.evaluate_fn(p.model, p.eval_loader)

    p.run = run
    return p


def micro_batches(x, y, k: int = 4):
    return zip(x.chunk(k), y.chunk(k), strict=True)


def accumulation_divided(standin):
    def step(model, opt, x, y):
        opt.zero_grad()
        for xb, yb in micro_batches(x, y):
            (F.cross_entropy(model(xb), yb) / 4).backward()
        opt.step()

    return plain(standin, step=step)


def accumulation_sum_reduction(standin):
    def step(model, opt, x, y):
        opt.zero_grad()
        for xb, yb in micro_batches(x, y):
            (F.cross_entropy(model(xb), yb, reduction="sum") / len(y)).backward()
        opt.step()

    return plain(standin, step=step)


def accumulation_losses_summed(standin):
    def step(model, opt, x, y):
        opt.zero_grad()
        losses = [nn.CrossEntropyLoss()(model(xb), yb) for xb, yb in micro_batches(x, y)]
        (sum(losses) / len(losses)).backward()
        opt.step()

    return plain(standin, step=step)


def accumulation_over_loader_batches(standin):
    p = plain(standin)

    def run(p: Program) -> None:
        for _ in range(EPOCHS):
            p.optimizer.zero_grad()
            for i, (x, y) in enumerate(p.train_loader):
                (F.cross_entropy(p.model(x), y) / 2).backward()
                if i % 2 == 1:
                    p.optimizer.step()
                    p.optimizer.zero_grad()
            p.evaluate_fn(p.model, p.eval_loader)

    p.run = run
    return p


def group_norm(standin):
    return plain(standin, cnn("group"))


class DropoutCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = build_cnn("relu", "none", width=8)[:-3]  # up to the flatten
        self.head = nn.Sequential(
            nn.Linear(512, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10)
        )

    def forward(self, x):
        return self.head(self.features(x))


def dropout_model(standin):
    return plain(standin, DropoutCNN())


def inference_mode_eval(standin):
    def evaluate_fn(model, loader):
        model.eval()
        with torch.inference_mode():
            losses = [F.cross_entropy(model(x), y).item() for x, y in loader]
        return sum(losses) / len(losses), None

    return plain(standin, evaluate_fn=evaluate_fn)


def nll_with_log_softmax(standin):
    model = nn.Sequential(cnn(), nn.LogSoftmax(dim=1))

    def step(m, opt, x, y):
        opt.zero_grad()
        nn.NLLLoss()(m(x), y).backward()
        opt.step()

    def evaluate_fn(m, loader):
        m.eval()
        with torch.no_grad():
            return sum(F.nll_loss(m(x), y).item() for x, y in loader), None

    return plain(standin, model, step=step, evaluate_fn=evaluate_fn, loss_fn=nn.NLLLoss())


def label_smoothing(standin):
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step(model, opt, x, y):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    def evaluate_fn(model, loader):
        model.eval()
        with torch.no_grad():
            return sum(loss_fn(model(x), y).item() for x, y in loader), None

    return plain(standin, step=step, evaluate_fn=evaluate_fn, loss_fn=loss_fn)


def gradient_clipping(standin):
    def step(model, opt, x, y):
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()

    model = cnn()
    return plain(standin, model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), step)


def parameter_groups(standin):
    model = cnn()
    head = [p for n, p in model.named_parameters() if n.startswith("fc")]
    body = [p for n, p in model.named_parameters() if not n.startswith("fc")]
    opt = torch.optim.Adam([{"params": body, "lr": 1e-3}, {"params": head, "lr": 3e-3}])
    return plain(standin, model, opt)


def probabilities_only_for_metrics(standin):
    def evaluate_fn(model, loader):
        model.eval()
        with torch.no_grad():
            out = [(model(x), y) for x, y in loader]
            loss = sum(F.cross_entropy(o, y).item() for o, y in out) / len(out)
            confidence = sum(o.softmax(1).max(1).values.mean().item() for o, _ in out) / len(out)
        return loss, confidence

    return plain(standin, evaluate_fn=evaluate_fn, run=loop(eval_first=True))


def averaged_model_evaluated(standin):
    """An exponential moving average of the weights (a copy of the model), evaluated too."""
    p = plain(standin)

    def run(p: Program) -> None:
        ema = torch.optim.swa_utils.AveragedModel(
            p.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)
        )
        for _ in range(EPOCHS):
            p.model.train()
            for x, y in p.train_loader:
                p.train_step(p.model, p.optimizer, x, y)
                ema.update_parameters(p.model)
            p.evaluate_fn(p.model, p.eval_loader)
            p.evaluate_fn(ema, p.eval_loader)

    p.run = run
    return p


def package_loop(standin):
    p = plain(standin, train_step=step_reset_first)

    def run(p: Program) -> None:
        package_train(
            p.model,
            p.optimizer,
            p.train_loader,
            epochs=EPOCHS,
            eval_loaders={"valid": p.eval_loader},
            progress=False,
        )

    p.run = run
    p.evaluate_fn = lambda m, loader: tuple(package_evaluate(m, loader).values())
    return p


def batch_augmentation_train_only(standin):
    train, valid = standin
    p = plain(standin)
    p.train_loader = make_loader(
        train, BATCH, shuffle=True, augment=RandomRotationBatch(10, seed=0)
    )
    p.eval_loader = make_loader(valid, 64, shuffle=False)
    return p


def resume_from_checkpoint(standin, tmp_path):
    p = with_schedule(standin, lambda o: sched.StepLR(o, 1, gamma=0.5), "epoch")
    path = tmp_path / "checkpoint.pt"

    def run(p: Program) -> None:
        loop("epoch")(p)
        torch.save(
            {
                "model": p.model.state_dict(),
                "optimizer": p.optimizer.state_dict(),
                "scheduler": p.scheduler.state_dict(),
            },
            path,
        )

    def resumed() -> None:
        state = torch.load(path)
        model = cnn()
        model.load_state_dict(state["model"])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt.load_state_dict(state["optimizer"])
        scheduler = sched.StepLR(opt, 1, gamma=0.5)
        scheduler.load_state_dict(state["scheduler"])
        again = Program(
            model,
            opt,
            p.train_loader,
            p.eval_loader,
            loop("epoch"),
            step_reset_first,
            evaluate,
            scheduler,
            "epoch",
        )
        with watch(model, opt, quiet=True) as w:
            again.run(again)
        assert w.resumed is not None and w.ok, str(w.report())

    p.run = run
    p.after = resumed
    return p


def dataset_objects(standin, train_tf, eval_tf, *, share: bool, seeded: str):
    """Datasets a learner builds with torchvision-style transforms, split at random."""
    full = ImageSet(torch.cat([s.images for s in standin]), torch.cat([s.labels for s in standin]))
    if seeded == "global":
        torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0) if seeded == "generator" else None
    if share:
        kw = {"generator": generator} if generator else {}
        return random_split(full.to_dataset(eval_tf), [N_TRAIN, N_VALID], **kw)
    order = torch.randperm(len(full), generator=generator).tolist()
    return Subset(full.to_dataset(train_tf), order[:N_TRAIN]), Subset(
        full.to_dataset(eval_tf), order[N_TRAIN:]
    )


def dataloader_program(standin, train_set, valid_set):
    p = plain(standin)
    p.train_loader = DataLoader(
        train_set, BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    p.eval_loader = DataLoader(valid_set, 64)
    p.datasets = {"train": train_set, "valid": valid_set}
    return p


def augmentation_train_only(standin):
    crop = transforms.Compose([transforms.RandomCrop(32, padding=2), transforms.ToTensor()])
    train_set, valid_set = dataset_objects(
        standin, crop, transforms.ToTensor(), share=False, seeded="generator"
    )
    return dataloader_program(standin, train_set, valid_set)


def seeded_random_split(standin):
    train_set, valid_set = dataset_objects(
        standin, None, transforms.ToTensor(), share=True, seeded="generator"
    )
    return dataloader_program(standin, train_set, valid_set)


def global_seed_random_split(standin):
    train_set, valid_set = dataset_objects(
        standin, None, transforms.ToTensor(), share=True, seeded="global"
    )
    return dataloader_program(standin, train_set, valid_set)


PROGRAMS = [
    adam_plain, sgd_momentum_reset_after, sgd_nesterov_weight_decay, adamw_cosine_per_batch,
    sgd_steplr_per_epoch, linear_warmup_then_cosine, one_cycle, reduce_on_plateau, manual_warmup,
    accumulation_divided, accumulation_sum_reduction, accumulation_losses_summed,
    accumulation_over_loader_batches, group_norm, dropout_model, inference_mode_eval,
    nll_with_log_softmax, label_smoothing, gradient_clipping, parameter_groups,
    probabilities_only_for_metrics, averaged_model_evaluated, package_loop, batch_augmentation_train_only,
    resume_from_checkpoint, augmentation_train_only, seeded_random_split, global_seed_random_split,
]  # fmt: skip


def check_inputs(p: Program) -> dict[str, Any]:
    """What ``run_all_checks`` is given: everything the program has."""
    per_epoch = len(p.train_loader)
    return {
        "model": p.model, "train_loader": p.train_loader, "eval_loaders": {"valid": p.eval_loader},
        "datasets": getattr(p, "datasets", None), "loss_fn": p.loss_fn, "optimizer": p.optimizer,
        "scheduler": p.scheduler, "train_step": p.train_step, "evaluate_fn": p.evaluate_fn,
        "planned_steps": per_epoch * EPOCHS, "steps_per_epoch": per_epoch,
        "scheduler_step": "batch" if p.scheduler_step == "batch" else "epoch",
        "show": False, "progress": False,
    }  # fmt: skip


def test_the_suite_has_at_least_twenty_programs():
    assert len(PROGRAMS) >= 20


@pytest.mark.parametrize("make", PROGRAMS, ids=lambda f: f.__name__)
def test_no_check_and_no_watch_alarm_on_a_correct_program(standin, make, tmp_path):
    p = make(standin, tmp_path) if make is resume_from_checkpoint else make(standin)
    report = checks.run_all_checks(**check_inputs(p))
    assert not report.failed and not any(r.error for r in report), str(report)
    datasets = getattr(p, "datasets", None)
    options = (
        {"train_loader": p.train_loader, "eval_loaders": {"valid": p.eval_loader}}
        if datasets
        else {}
    )
    with watch(p.model, p.optimizer, quiet=True, **options) as w:
        p.run(p)
    assert w.ok, str(w.report())
    assert len(w.steps) >= STEPS // 4 and all(math.isfinite(s["lr"]) for s in w.steps)
    if hasattr(p, "after"):
        p.after()
