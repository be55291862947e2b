"""The watch: hooks on the learner's model, optimizer and loss, what they record, the report.

:class:`Watch` attaches, while its ``with`` block runs,

- a forward pre-hook and a forward hook on the model: train/eval mode and
  ``torch.is_grad_enabled()`` of every forward pass; on the output a gradient hook, which fires
  in ``backward()`` before any parameter gradient is added (so the watch sees whether ``.grad``
  still holds the previous step's gradient), and a token in the autograd graph, alive as long
  as the graph (so the watch sees graphs that evaluation keeps); in eval-mode forward passes
  with autograd on, the bytes autograd saves (``torch.autograd.graph.saved_tensors_hooks``);
- a step pre-hook and post-hook on the optimizer: the learning rate each step uses, the
  gradient norm it uses (``torch.nn.utils.get_total_norm``), how many micro-batch losses went
  into it and with what weight, and whether the step changed the model's parameters (their
  version counters);
- a wrapper around ``torch.nn.functional.cross_entropy`` and ``nll_loss`` (which
  ``nn.CrossEntropyLoss`` and ``nn.NLLLoss`` call too): what the loss is given, compared with
  the model's last output (the outputs themselves, their softmax, their log-softmax, another
  transform), a hook on the loss for the factor ``backward()`` gives it (``loss / k`` gives
  ``1 / k``), and, in evaluation, the loss recomputed on the same batch the way training
  computes it.

Everything is put back when the block ends, also on an error or an interrupt; an error inside
a hook stops the watch with a warning, never the learner's training.

Limits: the learning-rate invariants follow the first parameter group; a loss function bound by
name before the block (``from torch.nn.functional import cross_entropy``) bypasses the wrapper,
and then the loss-based invariants see nothing (they show as N/A); copies of the model
(``copy.deepcopy``, an averaged model) are not watched.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.checks.access import as_splits
from nbhelpers.checks.results import HINTS, CheckReport, CheckResult, fmt, not_applicable
from nbhelpers.checks.runner import run_all_checks
from nbhelpers.checks.splits import split_chain, stored_labels, transform_holder
from nbhelpers.checks.training import MODE_SENSITIVE, output_kind

from . import store
from .invariants import BY_NAME, INVARIANTS

#: The losses whose calls the watch sees, and how many training losses it samples for logits.
LOSSES, _SAMPLES = ("cross_entropy", "nll_loss"), 3
#: Graphs of earlier batches alive at once that count as memory growing; forward passes a
#: loss is looked for in.
_KEPT_GRAPHS, _RECENT = 3, 16
#: The checks of the data run when the block starts (those that need no training).
DATA_CHECKS = (
    "split_overlap", "split_sources", "split_seed", "shared_transform", "labels",
    "input_statistics", "image_layout", "augmentation", "eval_augmentation", "shuffle", "last_batch",
)  # fmt: skip
#: Hints that depend on the evidence (the gradient found zero or missing).
_ZERO_HINTS = ("exactly 0", "no gradient")


@dataclass(eq=False)
class _Forward:
    """One forward pass of the model."""

    training: bool
    grad: bool
    output: torch.Tensor | None = None
    ref: Any = None
    backwarded: bool = False
    token: Any = None
    saved_bytes: int = 0


class _Token:
    """Kept in an autograd graph's metadata: alive exactly as long as the graph."""


def _form(x: torch.Tensor, out: torch.Tensor) -> str:
    """What a loss was given, relative to the model's output ``out``: ``"outputs"``,
    ``"softmax"``, ``"log_softmax"`` or ``"transformed"``."""
    x = x.detach()
    if x.dtype == out.dtype and torch.equal(x, out):
        return "outputs"
    x, out = x.float(), out.float()
    for form, values in (
        ("outputs", out),
        ("softmax", out.softmax(-1)),
        ("log_softmax", out.log_softmax(-1)),
    ):
        if torch.allclose(x, values, rtol=1e-4, atol=1e-5):
            return form
    return "transformed"


def _apply(form: str, out: torch.Tensor) -> torch.Tensor | None:
    return {"outputs": out, "softmax": out.softmax(-1), "log_softmax": out.log_softmax(-1)}.get(
        form
    )


_FORM_WORDS = {
    "outputs": "the model's outputs",
    "softmax": "softmax(outputs)",
    "log_softmax": "log_softmax(outputs)",
    "transformed": "a transform of the outputs",
}


class Watch:
    """Watch the learner's own training loop: ``with watch(model, optimizer): <the loop>``.

    Nothing in the loop changes. While the block runs, every forward pass of ``model``, every
    ``optimizer.step()`` and every cross-entropy / NLL loss is looked at (see the module
    docstring for how), and the invariants of :data:`nbhelpers.watch.INVARIANTS` are tested
    step by step. A fault is reported once, by name, when it is first seen (``[FAIL] name:
    evidence`` and a hint); when the block ends one line sums up, and ``report()`` gives the
    table of every invariant. With the loaders, the checks of the data that need no training
    (:data:`DATA_CHECKS`: split overlap and seeds, a transform shared by train and evaluation,
    labels, inputs, augmentation, shuffling ...) run when the block starts, their rows join the
    report, and the splits' transforms are watched.

    Args:
        model: the model the loop trains (its parameters are what the optimizer must change).
        optimizer: the optimizer the loop steps.
        train_loader: the training loader (a DataLoader, or any loader with ``.dataset``).
        eval_loaders: ``{name: loader}`` of the evaluation splits.
        quiet: print nothing (the faults are still in ``found`` and ``report()``).
        remember: keep, in ``watch.json`` in the runs folder, where this run ended and its
            split fingerprints, and compare with what earlier runs kept (a resumed run, a
            split drawn anew).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``optimizer`` not a torch optimizer.

    Attributes:
        steps: one dict per optimizer step: ``step`` (0-based), ``lr`` (of the first parameter
            group), ``grad_norm`` (of the model's gradients the step used; None: no gradient),
            ``weights`` (per micro-batch loss, its weight in the gradient: 1.0 for
            ``loss.backward()``, ``1/k`` for ``(loss / k).backward()``), ``examples``,
            ``stale`` (whether ``.grad`` still held the previous step's gradient; None: unknown),
            ``changed`` (whether the step changed the model's parameters).
        found: ``{name: CheckResult}`` of the faults found, in the order found.
        seen: counts of what was watched (forward passes, losses, evaluation batches).
        resumed: where the run this one resumes ended (``lr``, ``step``, ``time``), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        train_loader: Any = None,
        eval_loaders: dict[str, Any] | None = None,
        quiet: bool = False,
        remember: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model={type(model).__name__} is invalid; valid: an nn.Module")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer={type(optimizer).__name__} is invalid; valid: a torch.optim.Optimizer"
            )
        self.model, self.optimizer, self.quiet, self.remember = model, optimizer, quiet, remember
        self.splits = ({"train": train_loader} if train_loader is not None else {}) | dict(
            eval_loaders or {}
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.sensitive = sorted(
            {type(m).__name__ for m in model.modules() if isinstance(m, MODE_SENSITIVE)}
        )
        self.steps: list[dict[str, Any]] = []
        self.found: dict[str, CheckResult] = {}
        self.seen: Counter = Counter(forwards=0)
        self.state: dict[str, Any] = {}
        self.data_results: dict[str, CheckResult] = {}
        self.resumed: dict[str, Any] | None = None
        self.finished = False
        self._handles: list[Any] = []
        self._restore: list[tuple[str, Any]] = []
        self._reset_step()
        self._pending: list[dict[str, Any]] = []
        self._after: list[tuple[torch.Tensor, Any, int]] = []
        self._check_stale, self._current = True, None
        self._recent: deque[_Forward] = deque(maxlen=_RECENT)
        self._graphs: list[_Forward] = []
        self._suspects: list[_Forward] = []
        self._kinds: dict[str, list[str]] = {}
        self._train_form: dict[str, str] = {}
        self._early_evals: list[tuple] = []
        self._transforms: dict[str, tuple[Any, Any]] = {}
        self._stopped: str | None = None
        self._attached, self._saving = False, None
        self._output_grad_hook = self._guarded(self._on_output_grad)
        self._loss_grad_hook = self._guarded(self._on_loss_grad)

    # ----------------------------------------------------------------------------- attach
    def __enter__(self) -> Watch:
        guard = self._guarded
        self._attached = True
        guard(self._start)()  # before the hooks: the checks' own forward passes are not the run's
        self._handles = [
            self.model.register_forward_pre_hook(guard(self._before_forward)),
            self.model.register_forward_hook(guard(self._after_forward), always_call=True),
            self.optimizer.register_step_pre_hook(guard(self._before_step)),
            self.optimizer.register_step_post_hook(guard(self._after_step)),
        ]
        for name in LOSSES:
            original = getattr(F, name)
            self._restore.append((name, original))
            setattr(F, name, self._wrap_loss(name, original))
        return self

    def _start(self) -> None:
        if self.remember:
            self.resumed = store.load()["ends"].get(store.weights_fingerprint(self.model))
        self._watch_data()

    def __exit__(self, *exc: Any) -> bool:
        self.finished = True
        try:
            self._guarded(self._finish)()
        finally:
            self._attached = False  # copies of the model made meanwhile keep the hooks: mute them
            for handle in self._handles:
                handle.remove()
            for name, original in reversed(self._restore):
                setattr(F, name, original)
            self._handles, self._restore = [], []
        if not self.quiet:
            print(self.summary())
        return False

    def _finish(self) -> None:
        self._judge_suspects()
        self._flush()
        self._judge_early_evals()
        self._remember_end()

    def _guarded(self, hook):
        """``hook`` that never raises into the learner's code: an error stops the watch."""

        @functools.wraps(hook)
        def guarded(*args, **kwargs):
            if self._stopped is not None or not self._attached:
                return None
            try:
                hook(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - the learner's training must go on
                self._stopped = f"{type(err).__name__}: {err}"
                warnings.warn(
                    f"The watch stopped after an error of its own ({self._stopped}); training goes on.",
                    stacklevel=2,
                )
            return None

        return guarded

    def _wrap_loss(self, name: str, original):
        on_loss = self._guarded(self._on_loss)

        @functools.wraps(original)
        def loss(input, target, *args, **kwargs):
            value = original(input, target, *args, **kwargs)
            on_loss(name, original, input, target, value, args, kwargs)
            return value

        return loss

    # ----------------------------------------------------------------------------- findings
    def event(
        self, name: str, evidence: str, hint: str | None = None, step: int | None = None
    ) -> None:
        """Report fault ``name`` (once): store it (``details["step"]``: the optimizer step it was
        found at, default the one in progress) and, unless quiet, print it now."""
        if name in self.found:
            return
        step = len(self.steps) + len(self._pending) if step is None else step
        result = CheckResult(
            name, False, evidence + ".", hint or HINTS[name], details={"step": step}
        )
        self.found[name] = result
        if not self.quiet:
            print(f"watch: {result}")

    def report(self) -> CheckReport:
        """Every invariant as one row: FAIL with the evidence, PASS with what was seen, or N/A
        when nothing watched could show it (e.g. no evaluation ran)."""
        rows = []
        for row in INVARIANTS:
            if row.name in self.found:
                rows.append(self.found[row.name])
            elif (held := row.held(self)) is not None:
                rows.append(CheckResult(row.name, True, held + "."))
            else:
                rows.append(not_applicable(row.name, row.unseen + "."))
        rows += [r for name, r in self.data_results.items() if name not in BY_NAME]
        return CheckReport(rows)

    @property
    def ok(self) -> bool:
        """True when no fault was found."""
        return not self.found

    def summary(self) -> str:
        """One line: what was watched and the faults found."""
        watched = f"watch: {len(self.steps)} steps, {self.seen['eval_forwards']} evaluation batches watched"
        if self._stopped:
            watched += f" (stopped early: {self._stopped})"
        if not self.found:
            return watched + "; no fault found."
        return (
            watched
            + f"; {len(self.found)} fault(s) found: {', '.join(self.found)} (report() shows the table)."
        )

    # ----------------------------------------------------------------------------- the data
    def _watch_data(self) -> None:
        """Run the checks of the data (:data:`DATA_CHECKS`) now, and remember the splits'
        transforms and seeds."""
        if not self.splits:
            return
        splits = as_splits(self.splits)
        evaluation = {k: v for k, v in splits.items() if k != "train"} or None
        report = run_all_checks(
            self.model, splits.get("train"), evaluation, optimizer=self.optimizer,
            only=DATA_CHECKS, show=False, progress=False,
        )  # fmt: skip
        for result in report:
            self.data_results[result.name] = result
            if result.failed:
                self.event(result.name, result.evidence.rstrip("."), result.hint, step=0)
        self._transforms = {
            k: (h, h.transform) for k, v in splits.items() if (h := transform_holder(v)) is not None
        }
        stored = store.load()["splits"] if self.remember else {}
        for name, info in self.data_results.get(
            "split_seed", CheckResult("", None, "")
        ).details.items():
            key = self._split_key(name, splits[name])
            earlier = stored.get(key)
            if earlier and earlier["fingerprint"] != info["fingerprint"]:
                self.event(
                    "split_seed",
                    f"{name} ({earlier['size']} examples) is not the {name} split of an earlier run "
                    f"({earlier['time']}): its indices differ (fingerprint {info['fingerprint']}, then "
                    f"{earlier['fingerprint']}), so images a saved model trained on can now be in {name}",
                )

    @staticmethod
    def _split_key(name: str, split: Any) -> str:
        chain = split_chain(split)
        labels = stored_labels(chain.root)
        digest = store.index_digest(labels) if labels is not None else ""
        return f"{type(chain.root).__name__}/{len(chain.root)}/{digest}/{name}/{len(chain.indices or [])}"

    def _transform_changes(self) -> None:
        train = self._transforms.get("train")
        for name, (holder, transform) in self._transforms.items():
            if holder.transform is transform:
                continue
            self._transforms[name] = (holder, holder.transform)
            if name != "train" and train is not None and holder is train[0]:
                self.event(
                    "shared_transform",
                    f"the transform that train and {name} share (one {type(holder).__name__}) changed "
                    f"during the run, by step {len(self.steps)}: from then on train is fed "
                    f"{type(holder.transform).__name__} too",
                )

    # ----------------------------------------------------------------------------- forward
    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if module is not self.model:  # a copy of the model carries the hooks too
            return
        fwd = self._current = _Forward(module.training, torch.is_grad_enabled())
        self.seen["forwards"] += 1
        self._graphs = [f for f in self._graphs if not f.backwarded and f.token() is not None]
        if len(self._graphs) >= _KEPT_GRAPHS:
            self._suspects = list(self._graphs)  # judged at the next step: used by a backward?
        kept = [f for f in self._graphs if not f.training]
        if len(kept) >= _KEPT_GRAPHS:
            mb = sum(f.saved_bytes for f in kept) / 2**20
            self.event(
                "eval_memory",
                f"evaluation keeps the autograd graph of every batch: {len(kept)} graphs of earlier "
                f"evaluation batches are alive, holding about {mb:.1f} MB of saved activations, and "
                "memory grows with each batch",
            )
        if fwd.grad and not fwd.training:
            self._saving = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
            self._saving.__enter__()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if self._current is not None and not (t.is_leaf and t.requires_grad):
            self._current.saved_bytes += t.numel() * t.element_size()
        return t

    def _after_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if module is not self.model:
            return
        if self._saving is not None:
            self._saving.__exit__(None, None, None)
            self._saving = None
        fwd, self._current = self._current, None
        if fwd is None or not torch.is_tensor(output):
            return
        fwd.output, fwd.ref = output.detach(), weakref.ref(output)
        self._recent.append(fwd)
        evaluation = not (fwd.grad and fwd.training)
        self.seen["eval_forwards" if evaluation else "train_forwards"] += 1
        if not fwd.grad and fwd.training and self.sensitive:
            self.event(
                "model_modes",
                f"an evaluation forward pass (autograd off) ran in train mode: {', '.join(self.sensitive)} "
                "then use the batch's statistics (BatchNorm even updates its running ones) and dropout stays on",
            )
        if output.requires_grad and output.grad_fn is not None:
            token = _Token()
            output.grad_fn.metadata["nbhelpers.watch"] = token
            fwd.token = weakref.ref(token)
            self._graphs.append(fwd)
            output.register_hook(functools.partial(self._output_grad_hook, fwd))

    def _on_output_grad(self, fwd: _Forward, grad: torch.Tensor) -> None:
        fwd.backwarded = True
        if self._check_stale:
            self._check_stale = False
            self._stale = any(
                p.grad is not None and p.grad is ref() and p.grad._version == v
                for p, ref, v in self._after
            )
        if not fwd.training and self.sensitive:
            self.event(
                "model_modes",
                f"step {len(self.steps) + len(self._pending)} trains on a forward pass made in eval mode: "
                f"{', '.join(self.sensitive)} then use running statistics and dropout is off",
            )

    # ----------------------------------------------------------------------------- losses
    def _source(self, x: Any) -> tuple[_Forward | None, str]:
        """The recent forward pass a loss input comes from, and how (:func:`_form`): the same
        tensor, equal values or their (log-)softmax, or another elementwise increasing function
        of them (a sigmoid, a temperature: the order of all values kept); ``(None, "")`` when
        it comes from none."""
        if not torch.is_tensor(x) or x.dim() != 2:
            return None, ""
        same = [f for f in reversed(self._recent) if f.output.shape == x.shape]
        for f in same:
            if f.ref() is x:
                return f, "outputs"
        for f in same:
            if (form := _form(x, f.output)) != "transformed":
                return f, form
        values = x.detach().float().flatten()
        for f in same:
            along = values[f.output.float().flatten().argsort()]  # x in the order of the outputs
            if bool((along[1:] >= along[:-1]).all()) and along[-1] > along[0]:
                return f, "transformed"
        return None, ""

    def _on_loss(self, name, original, input, target, value, args, kwargs) -> None:
        fwd, form = self._source(input)
        latest = self._recent[-1] if self._recent else None
        training = latest is not None and latest.training and latest.output.shape == input.shape
        if fwd is None and training and getattr(value, "requires_grad", False):
            fwd, form = latest, "transformed"  # e.g. a ReLU on the logits in the loop
        if fwd is None or not torch.is_tensor(value):
            return
        if value.requires_grad and fwd.training:
            self._training_loss(name, form, input, value, kwargs.get("reduction", "mean"))
            return
        self.seen["eval_losses"] += 1
        if len(self._early_evals) < 8:
            self._early_evals.append(
                (name, form, value.detach(), fwd.output, target, args, kwargs, original)
            )
        if name in self._train_form:
            self._judge_early_evals()

    def _training_loss(
        self, name: str, form: str, input: torch.Tensor, value, reduction: str
    ) -> None:
        self.seen["train_losses"] += 1
        self._train_form.setdefault(name, form)
        if value.dim() == 0 or reduction == "none":
            batch = input.shape[0]
            value.register_hook(functools.partial(self._loss_grad_hook, reduction, batch))
        kinds = self._kinds.setdefault(name, [])
        if len(kinds) >= _SAMPLES:
            return
        kinds.append(output_kind(input))
        if len(kinds) == _SAMPLES:
            self._judge_logits(name, kinds, input)

    def _judge_logits(self, name: str, kinds: list[str], input: torch.Tensor) -> None:
        wanted = "log-probabilities" if name == "nll_loss" else "logits"
        if name == "nll_loss" and any(k != wanted for k in kinds):
            self.event(
                "softmax_output", f"nll_loss gets {kinds[-1]} in training, not log-probabilities"
            )
        elif name == "cross_entropy" and all(k == "probabilities" for k in kinds):
            self.event(
                "softmax_output",
                f"cross_entropy gets probabilities in training (every row sums to 1, {_SAMPLES} batches): "
                "it applies log-softmax itself, so the gradients shrink",
            )
        elif name == "cross_entropy" and all(k in ("nonnegative", "probabilities") for k in kinds):
            zeros = float((input.detach() == 0).float().mean())
            self.event(
                "nonnegative_logits",
                f"no logit given to cross_entropy was negative in {_SAMPLES} training batches (smallest "
                f"{fmt(input.detach().min())}, {zeros:.0%} exactly 0): a ReLU (or another non-negative "
                "function) is applied to the logits",
            )

    def _on_loss_grad(self, reduction: str, batch: int, grad: torch.Tensor) -> None:
        self._weights.append(grad.detach().sum() * (batch if reduction == "sum" else 1))
        self._examples += batch

    def _judge_early_evals(self) -> None:
        """Compare the evaluation losses seen so far with the training loss on the same batch."""
        for name, form, value, out, target, args, kwargs, original in self._early_evals:
            wanted = self._train_form.get(name)
            if wanted is None and not self.finished:
                return
            wanted = wanted or (
                "log_softmax"
                if name == "nll_loss" and output_kind(out) != "log-probabilities"
                else "outputs"
            )
            inputs = _apply(wanted, out)
            if form == wanted or inputs is None:
                continue
            recomputed = original(inputs, target, *args, **kwargs).detach()
            if not torch.allclose(value.float(), recomputed.float(), rtol=1e-4, atol=1e-6):
                self.event(
                    "eval_loss",
                    f"evaluation gives {name} {_FORM_WORDS[form]}, training gives it {_FORM_WORDS[wanted]}: "
                    f"on the same batch evaluation reports {float(value.float().mean()):.4g}, the "
                    f"training loss function gives {float(recomputed.float().mean()):.4g}",
                )
        self._early_evals = []

    # ----------------------------------------------------------------------------- steps
    def _reset_step(self) -> None:
        self._weights: list[torch.Tensor] = []
        self._examples, self._stale = 0, None

    def _before_step(self, optimizer, args, kwargs) -> None:
        if optimizer is not self.optimizer:
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        self._judge_suspects()
        self._pending.append({
            "step": len(self.steps) + len(self._pending), "lr": float(optimizer.param_groups[0]["lr"]),
            "grad_norm": torch.nn.utils.get_total_norm(grads) if grads else None,
            "weights": self._weights, "examples": self._examples, "stale": self._stale,
            "changed": None, "versions": sum(p._version for p in self.params),
        })  # fmt: skip
        self._reset_step()

    def _judge_suspects(self) -> None:
        """Graphs alive together that no backward() used by now: kept by evaluation."""
        suspects, self._suspects = self._suspects, []
        if suspects and not any(f.backwarded for f in suspects):
            self.event(
                "eval_memory",
                f"{len(suspects)} forward passes in train mode with autograd on kept their graphs alive "
                "together and no backward() used them (evaluation without model.eval() and "
                "torch.no_grad() that keeps its losses?): memory grew with each of them",
            )

    def _after_step(self, optimizer, args, kwargs) -> None:
        if optimizer is not self.optimizer or not self._pending:
            return
        record = self._pending[-1]
        record["changed"] = sum(p._version for p in self.params) != record.pop("versions")
        self._after = [
            (p, weakref.ref(p.grad), p.grad._version) for p in self.params if p.grad is not None
        ]
        self._check_stale = True
        if (
            record["grad_norm"] is None
            or record["grad_norm"].device.type == "cpu"
            or len(self._pending) >= 10
        ):
            self._flush()

    def _flush(self) -> None:
        """Read the pending steps' numbers (one wait for the device) and test each step."""
        pending, self._pending = self._pending, []
        for record in pending:
            norm = record["grad_norm"]
            record["grad_norm"] = None if norm is None else float(norm)
            record["weights"] = [float(w) for w in record["weights"]]
            record.pop("versions", None)
            self.steps.append(record)
            for row in INVARIANTS:
                if row.step is not None and row.name not in self.found:
                    if (evidence := row.step(self, len(self.steps) - 1)) is not None:
                        hint = (
                            HINTS["zero_gradient"]
                            if any(z in evidence for z in _ZERO_HINTS)
                            else None
                        )
                        self.event(row.name, evidence, hint, step=len(self.steps) - 1)
        if self.finished and self.steps:
            last = len(self.steps) - 1
            if "lr_jump" not in self.found and (evidence := BY_NAME["lr_jump"].step(self, last)):
                self.event("lr_jump", evidence, step=last)
        self._transform_changes()

    # ----------------------------------------------------------------------------- between runs
    def _remember_end(self) -> None:
        if not self.remember:
            return
        data = store.load()
        if self.steps:
            lr = float(self.optimizer.param_groups[0]["lr"])
            data["ends"][store.weights_fingerprint(self.model)] = {
                "lr": lr,
                "step": len(self.steps),
                "time": store.now(),
            }
        splits = as_splits(self.splits) if self.splits else {}
        for name, info in self.data_results.get(
            "split_seed", CheckResult("", None, "")
        ).details.items():
            size = len(split_chain(splits[name]).indices or [])
            data["splits"][self._split_key(name, splits[name])] = {
                "fingerprint": info["fingerprint"],
                "size": size,
                "time": store.now(),
            }
        store.save(data)


#: ``with watch(model, optimizer): <the loop>`` (the class under its verb's name).
watch = Watch
