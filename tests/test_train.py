"""Tests of nbhelpers.train: zero_grad, evaluation, schedules, hooks, interrupts, timings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nbhelpers.train import History, TrainOptions, evaluate, train


def _batches(n: int = 64, batch: int = 16, seed: int = 0, shape=(3, 4, 4)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _linear(seed: int = 0, features: int = 48) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 10))


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _fresh_grads(model: nn.Module, batches) -> list[torch.Tensor]:
    """Gradient of the summed mean-batch losses of ``batches`` at the model's current weights."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
    return _grads(model)


# --------------------------------------------------------------------------- zero_grad
def test_zero_grad_leaves_exactly_the_last_batch_gradient():
    batches = _batches()
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights stay, gradients compare
    train(model, opt, batches, epochs=1, progress=False, zero_grad=True)
    after = _grads(model)
    expected = _fresh_grads(model, batches[-1:])
    for got, want in zip(after, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_without_zero_grad_gradients_accumulate():
    batches = _batches()
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train(model, opt, batches, epochs=1, progress=False, zero_grad=False)
    after = _grads(model)
    accumulated = _fresh_grads(model, batches)  # sum over all 4 batches
    last_only = _fresh_grads(model, batches[-1:])
    for got, want, last in zip(after, accumulated, last_only, strict=True):
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, last)


def test_zero_grad_changes_the_trained_weights():
    batches = _batches()
    weights = []
    for zero_grad in (True, False):
        model = _linear()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train(model, opt, batches, epochs=2, progress=False, zero_grad=zero_grad)
        weights.append(model[1].weight.detach().clone())
    assert not torch.allclose(weights[0], weights[1])


# --------------------------------------------------------------------------- evaluate
def test_evaluate_is_independent_of_batch_size_and_sample_weighted():
    n = 26_032  # SVHN's test split; 26,032 = 26 * 1000 + 32, so the last batch is short
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 4, 4, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    model = _linear(features=48)

    def loader(batch):
        return ((x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch))

    big = evaluate(model, loader(1000))
    one = evaluate(model, loader(1))
    with torch.no_grad():
        logits = model(x).double()
        want_loss = nn.functional.cross_entropy(logits, y).item()
        want_acc = (logits.argmax(1) == y).double().mean().item()
    assert big["n"] == one["n"] == n
    assert big["loss"] == pytest.approx(want_loss, rel=1e-6)
    assert one["loss"] == pytest.approx(want_loss, rel=1e-6)
    assert big["accuracy"] == one["accuracy"] == pytest.approx(want_acc, abs=1e-12)
    # the naive mean of batch means differs: that is the bug this guards against
    with torch.no_grad():
        means = [nn.functional.cross_entropy(model(a), b).item() for a, b in loader(1000)]
    assert abs(sum(means) / len(means) - want_loss) > 1e-6


def test_evaluate_restores_mode_and_keeps_batchnorm_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 10))
    bn = model[1]
    before = bn.running_mean.clone()
    model.train()
    result = evaluate(model, _batches(32, 8))
    assert model.training and all(m.training for m in model)
    torch.testing.assert_close(bn.running_mean, before)  # eval mode: no statistics update
    assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])
    model.eval()
    evaluate(model, _batches(32, 8))
    assert not model.training


def test_evaluate_runs_without_gradients_and_rejects_empty_loader():
    seen = []
    model = _linear()
    model.register_forward_hook(lambda m, i, o: seen.append(torch.is_grad_enabled()))
    evaluate(model, _batches(16, 8))
    assert seen == [False, False]
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(model, [])


def test_evaluate_handles_sum_reduction_loss():
    model = _linear()
    batches = _batches(40, 16)
    mean = evaluate(model, batches)
    summed = evaluate(model, batches, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    assert summed["loss"] == pytest.approx(mean["loss"], rel=1e-6)


# --------------------------------------------------------------------------- schedules
def _lrs(scheduler_step: str, epochs: int = 2) -> list[float]:
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    history = train(
        model,
        opt,
        _batches(64, 16),
        epochs=epochs,
        scheduler=sched,
        scheduler_step=scheduler_step,
        progress=False,
    )
    return history.step_lrs


def test_scheduler_stepped_per_batch():
    assert _lrs("batch") == pytest.approx([0.5**k for k in range(8)])


def test_scheduler_stepped_per_epoch():
    assert _lrs("epoch") == pytest.approx([1.0] * 4 + [0.5] * 4)


def test_bad_arguments_raise_before_training():
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    with pytest.raises(ValueError, match="scheduler_step"):
        train(model, opt, _batches(), epochs=1, scheduler=sched, scheduler_step="step")
    with pytest.raises(ValueError, match="epochs"):
        train(model, opt, _batches(), epochs=-1)
    with pytest.raises(TypeError, match="eval_loaders"):
        train(model, opt, _batches(), epochs=1, eval_loaders=[_batches()])


# --------------------------------------------------------------------------- loop behaviour
def test_history_metrics_evaluation_schedule_and_max_steps():
    batches = _batches(64, 16)
    model = _linear()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = train(
        model,
        opt,
        batches,
        epochs=3,
        eval_loaders={"train": batches, "test": _batches(32, 16, seed=5)},
        eval_every=2,
        progress=False,
    )
    assert isinstance(history, History) and history.status == "complete"
    assert [row["epoch"] for row in history.epochs] == [1, 2, 3]
    assert "test_accuracy" not in history.epochs[0]  # epoch 1: not an evaluation epoch
    assert {"train_loss", "test_accuracy"} <= set(history.epochs[1])
    assert "test_loss" in history.epochs[2]  # the last epoch is always evaluated
    assert history.steps == 12 and len(history.step_losses) == 12
    assert history.epochs[0]["images"] == 64

    stopped = train(_linear(), opt, batches, epochs=5, max_steps=6, progress=False)
    assert stopped.steps == 6 and len(stopped.epochs) == 2 and stopped.epochs[-1]["steps"] == 2


def test_training_lowers_the_loss_on_learnable_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(128, 3, 4, 4, generator=gen)
    y = (x.flatten(1)[:, :10].argmax(1)).long()  # a linearly learnable rule
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    model = _linear()
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    history = train(model, opt, batches, epochs=15, eval_loaders={"train": batches}, progress=False)
    assert history.epochs[-1]["train_loss"] < 0.7 * history.epochs[0]["train_loss"]


def test_timings_are_complete_and_consistent():
    model = _linear()
    eval_loaders = {"valid": _batches(16, 8)}
    history = train(
        model, _sgd(model), _batches(), epochs=2, eval_loaders=eval_loaders, progress=False
    )
    t = history.timings
    for key in ("data_s", "compute_s", "eval_s", "diagnostics_s", "total_s", "images_per_s"):
        assert t[key] >= 0.0, key
    assert t["images"] == 128
    parts = t["data_s"] + t["compute_s"] + t["eval_s"] + t["diagnostics_s"]
    assert parts <= t["total_s"] * 1.01 + 1e-3
    assert t["images_per_s"] == pytest.approx(128 / (t["data_s"] + t["compute_s"]))


def _sgd(model=None):
    model = model or _linear()
    return torch.optim.SGD(model.parameters(), lr=0.1)


class _Recorder:
    def __init__(self):
        self.calls = []

    def on_train_begin(self, model, optimizer, loss_fn):
        self.calls.append("begin")

    def on_step_end(self, step, loss):
        assert isinstance(loss, float)
        self.calls.append(("step", step))

    def on_epoch_end(self, epoch, metrics):
        self.calls.append(("epoch", epoch, "running_loss" in metrics))

    def on_train_end(self, history):
        self.calls.append(("end", history.status))


def test_hook_protocol_call_order():
    hook = _Recorder()
    model = _linear()
    train(model, _sgd(model), _batches(32, 16), epochs=2, hooks=[hook], progress=False)
    assert hook.calls == [
        "begin",
        ("step", 0),
        ("step", 1),
        ("epoch", 1, True),
        ("step", 2),
        ("step", 3),
        ("epoch", 2, True),
        ("end", "complete"),
    ]


class _BackwardHook:
    """Does the backward pass itself, as Cockpit does inside its context."""

    def __init__(self):
        self.steps = []

    def backward(self, step, model, x, y, logits, loss, loss_fn):
        self.steps.append(step)
        loss.backward()
        return True


def test_backward_hook_replaces_the_loops_backward():
    batches = _batches()
    model = _linear()
    hook = _BackwardHook()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    history = train(model, opt, batches, epochs=1, hooks=[hook], progress=False)
    assert hook.steps == [0, 1, 2, 3]
    expected = _fresh_grads(model, batches[-1:])  # not doubled: the loop did not backward again
    torch.testing.assert_close(model[1].weight.grad, expected[0])
    assert history.timings["diagnostics_s"] > 0.0


class _StopAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, loss):
        if step == self.step:
            raise KeyboardInterrupt


def test_keyboard_interrupt_mid_epoch_returns_interrupted_history():
    end = _Recorder()
    model = _linear()
    history = train(
        model, _sgd(model), _batches(64, 16), epochs=3, hooks=[_StopAt(5), end], progress=False
    )
    assert history.status == "interrupted"
    assert history.steps == 6  # steps 0..5 done
    assert len(history.epochs) == 2 and history.epochs[-1].get("partial") is True
    assert history.epochs[-1]["steps"] == 2
    assert end.calls[-1] == ("end", "interrupted")
    assert len(history.step_losses) == 6


def test_same_seed_same_history_on_cpu():
    def once():
        model = _linear(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        h = train(model, opt, _batches(), epochs=2, eval_loaders={"t": _batches()}, progress=False)
        return h.step_losses, [row["t_loss"] for row in h.epochs]

    assert once() == once()


def test_options_as_an_object_or_by_name_and_unknown_names_refused():
    def once(**kwargs):
        model = _linear()
        return train(model, _sgd(model), _batches(), epochs=3, **kwargs)

    by_object = once(options=TrainOptions(max_steps=5, progress=False))
    by_name = once(max_steps=5, progress=False)
    assert by_object.steps == by_name.steps == 5
    assert by_object.step_losses == by_name.step_losses
    with pytest.raises(TypeError, match="max_step"):
        once(max_step=5)
    with pytest.raises(ValueError, match="max_steps=-1"):
        TrainOptions(max_steps=-1)
