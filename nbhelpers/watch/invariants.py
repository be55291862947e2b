"""The invariants of correct training the watch checks, as one table.

Each :class:`Invariant` row has a name (the name of the fault, shared with the checks where it
is the same fault), ``step`` (a test of one optimizer step against the steps before it, or
None when the hooks report the fault themselves as it happens) and ``held`` (what was seen
when the fault did not occur, for the summary; None when nothing was watched that could show
it). :data:`INVARIANTS` lists them in the order of the summary table.

Thresholds (rules of thumb, explained where they are used): a learning rate "collapses" when
it stays below a thousandth of its peak for at least as long as it took to fall there (and 5
steps); it "jumps" when it changes 100-fold (two orders of magnitude) between two steps while
steady on both sides; a gradient counts micro-batches fully when each micro-batch loss enters
the gradient with weight about 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbhelpers.checks.results import fmt

if TYPE_CHECKING:
    from .core import Watch

#: lr_collapse: below this fraction of the peak; for at least this many steps.
COLLAPSE, MIN_STAYED = 1e-3, 5
#: lr_jump: the factor between two steps, and how steady the neighbours must be.
JUMP, STEADY = 100.0, 3.0


@dataclass(frozen=True)
class Invariant:
    """One row of the table.

    Attributes:
        name: the fault's name.
        step: ``step(watch, i) -> evidence | None`` for the step ``watch.steps[i]``, or None.
        held: ``held(watch) -> evidence | None`` when the fault was not found.
        unseen: why it shows as N/A when ``held`` gives None.
    """

    name: str
    step: Callable[[Watch, int], str | None] | None
    held: Callable[[Watch], str | None]
    unseen: str = "no optimizer step was watched"


def _zero_grad(w: Watch, i: int) -> str | None:
    s = w.steps[i]
    if not s["stale"] or i == 0:
        return None
    before = w.steps[i - 1]["grad_norm"]
    return (
        f"the gradient used by step {i} still held the gradient of step {i - 1}: .grad was not "
        f"reset after optimizer.step() (gradient norm {fmt(before)} at step {i - 1}, "
        f"{fmt(s['grad_norm'])} at step {i})"
    )


def _accumulation(w: Watch, i: int) -> str | None:
    weights = w.steps[i]["weights"]
    if len(weights) < 2 or sum(weights) < 1.5 or max(weights) > 1.05:
        return None
    return (
        f"step {i} summed {len(weights)} micro-batch losses ({w.steps[i]['examples']} examples) "
        f"without dividing them: its gradient is {sum(weights):.3g}x the mean gradient of "
        "those examples"
    )


def _gradients(w: Watch, i: int) -> str | None:
    norm = w.steps[i]["grad_norm"]
    if norm is None:
        return (
            f"step {i} found no gradient in the model (every .grad is None): were the gradients "
            "reset between backward() and optimizer.step()?"
        )
    if norm == 0.0:
        return f"the gradient at step {i} is exactly 0: the step changes nothing"
    if not math.isfinite(norm):
        return f"the gradient norm at step {i} is {norm}: NaN or inf values"
    return None


def _optimizer_params(w: Watch, i: int) -> str | None:
    s = w.steps[i]
    if s["changed"] is not False or not s["lr"] > 0 or not (s["grad_norm"] or 0) > 0:
        return None
    return (
        f"optimizer.step() at step {i} changed none of the model's parameters (learning rate "
        f"{fmt(s['lr'])}, gradient norm {fmt(s['grad_norm'])}): the optimizer updates other "
        "tensors"
    )


def _lr_collapse(w: Watch, i: int) -> str | None:
    state = w.state.setdefault("lr_collapse", {"peak": 0.0, "peak_at": 0, "below_at": None})
    lr = w.steps[i]["lr"]
    if lr > state["peak"]:
        state.update(peak=lr, peak_at=i, below_at=None)
    elif lr < COLLAPSE * state["peak"]:
        state["below_at"] = i if state["below_at"] is None else state["below_at"]
        at, stayed = state["below_at"], i - state["below_at"] + 1
        if stayed >= max(MIN_STAYED, at - state["peak_at"]):
            fell = w.steps[at]["lr"]
            return (
                f"the learning rate fell from {fmt(state['peak'])} (step {state['peak_at']}) to "
                f"{fmt(fell)} by step {at} (x{fmt(fell / state['peak'])}) and stayed below a "
                f"thousandth of its peak for {stayed} steps: the steps barely move the model"
            )
    else:
        state["below_at"] = None
    return None


def _steady(values: list[float], level: float) -> bool:
    return all(level / STEADY <= v <= level * STEADY for v in values)


def _lr_jump(w: Watch, i: int) -> str | None:
    """The change into step ``i - 2``, judged once two steps after it are known (all of them
    at the end of the run); the first step is compared with where a resumed run ended."""
    ends = range(i - 2, i + 1) if w.finished else (i - 2,)
    for j in (j for j in ends if j >= 0):
        if j == 0 and w.resumed is None:
            continue
        before = w.resumed["lr"] if j == 0 else w.steps[j - 1]["lr"]
        after = w.steps[j]["lr"]
        if before <= 0 or after <= 0 or max(before / after, after / before) < JUMP * (1 - 1e-9):
            continue
        context = [s["lr"] for s in w.steps[max(0, j - 3) : max(0, j - 1)]]
        if not (
            _steady(context, before) and _steady([s["lr"] for s in w.steps[j + 1 : j + 3]], after)
        ):
            continue
        where = (
            f"step {j - 1} and step {j}"
            if j
            else f"the end of the run this one resumes ({w.resumed['step']} steps, {w.resumed['time']}) and its first step"
        )
        return f"the learning rate jumped from {fmt(before)} to {fmt(after)} (x{fmt(after / before)}) between {where}"
    return None


def _steps_held(text: Callable[[Watch], str]) -> Callable[[Watch], str | None]:
    return lambda w: text(w) if w.steps else None


def _lr_range(w: Watch) -> str:
    lrs = [s["lr"] for s in w.steps]
    return f"learning rate {fmt(min(lrs))}..{fmt(max(lrs))} over {len(lrs)} steps"


def _norms(w: Watch) -> str | None:
    norms = [s["grad_norm"] for s in w.steps if s["grad_norm"] is not None]
    return (
        f"gradient norm {fmt(min(norms))}..{fmt(max(norms))} over {len(norms)} steps"
        if norms
        else None
    )


def _seen(key: str, text: str) -> Callable[[Watch], str | None]:
    return lambda w: text.format(**w.seen) if w.seen[key] else None


def _zero_grad_held(w: Watch) -> str | None:
    fresh = sum(s["stale"] is False for s in w.steps)
    return f"{fresh} steps, each from reset gradients" if fresh else None


def _accumulation_held(w: Watch) -> str | None:
    counted = [s for s in w.steps if s["weights"]]
    if not counted:
        return None
    most = max(len(s["weights"]) for s in counted)
    scale = max(sum(s["weights"]) for s in counted)
    return (
        f"{len(counted)} steps of {most if most > 1 else 'one'} micro-batch loss"
        f"{'es' if most > 1 else ''} at most; the largest weight of a step's losses together "
        f"is {scale:.3g} (1 = the mean gradient)"
    )


def _modes_held(w: Watch) -> str | None:
    if not w.seen["forwards"]:
        return None
    if not w.sensitive:
        return "no BatchNorm or Dropout: train and eval mode compute the same"
    return f"{w.seen['train_forwards']} training and {w.seen['eval_forwards']} evaluation forward passes, each in its mode"


def _from_check(name: str) -> Callable[[Watch], str | None]:
    return lambda w: w.data_results[name].evidence if name in w.data_results else None


_NO_LOSS = "no cross-entropy or NLL loss of a training step was seen"
_NO_LOADERS = "no loaders given (train_loader=, eval_loaders=)"

#: The table, in the order of the summary.
INVARIANTS: list[Invariant] = [
    Invariant("zero_grad", _zero_grad, _zero_grad_held),
    Invariant("accumulation", _accumulation, _accumulation_held),
    Invariant("gradients", _gradients, _norms),
    Invariant("optimizer_params", _optimizer_params, _steps_held(lambda w: "every step changed the model's parameters")),
    Invariant("lr_collapse", _lr_collapse, _steps_held(_lr_range)),
    Invariant("lr_jump", _lr_jump, _steps_held(_lr_range)),
    Invariant("model_modes", None, _modes_held, "no forward pass of the model was watched"),
    Invariant("softmax_output", None, _seen("train_losses", "the training loss got logits ({train_losses} losses)"), _NO_LOSS),
    Invariant("nonnegative_logits", None, _seen("train_losses", "negative logits seen ({train_losses} losses)"), _NO_LOSS),
    Invariant("eval_loss", None, _seen("eval_losses", "{eval_losses} evaluation losses computed as in training"), "no evaluation loss was computed"),
    Invariant("eval_memory", None, _seen("eval_forwards", "no graph kept across {eval_forwards} evaluation forward passes"), "no evaluation forward pass was watched"),
    Invariant("split_seed", None, _from_check("split_seed"), "no split in random order among the loaders given"),
    Invariant("shared_transform", None, _from_check("shared_transform"), _NO_LOADERS),
]  # fmt: skip

#: The invariants by name.
BY_NAME: dict[str, Invariant] = {row.name: row for row in INVARIANTS}
