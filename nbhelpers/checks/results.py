"""What a check returns and how it shows: :class:`CheckResult` (one check), :class:`CheckReport`
(a table of them), and the small pieces every check uses to word its verdict.

Both result types display through :class:`nbhelpers.display.Report` (a coloured table in a
notebook); a result also prints as one line with its hint::

    [FAIL] zero_grad: gradient norm after 3 identical steps ... 0.41, 0.82, 1.23 (x3.00) ...
           hint: Call optimizer.zero_grad() before loss.backward() in every step.

:func:`verdict` is the one way a finding becomes a result (the problems found first, then the
evidence with its numbers, then the hint), and ``HINTS`` holds the one-line fix of every fault
by name, so the checks and the watch (:mod:`nbhelpers.watch`), which report the same faults,
word them the same way.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbhelpers.display import Report, figure_png_base64

_STATUS = {True: "PASS", False: "FAIL", None: "N/A"}
#: Added to the evidence when a learner's function changed the real objects (then put back).
TOUCHED_NOTE = (
    " Note: your function changed the real model or optimizer (it must use its `model` and "
    "`optimizer` arguments); they were put back."
)
_COLUMNS = ["check", "status", "evidence", "hint"]
#: The fix of each fault, by the name of the check or invariant that finds it (one sentence).
HINTS = {
    "zero_grad": (
        "Reset the gradients once per optimizer step: optimizer.zero_grad() before the step's "
        "first backward() or right after optimizer.step(); with gradient accumulation, once per "
        "accumulated step, not after every micro-batch."
    ),
    "model_modes": (
        "Call model.train() before each training epoch and model.eval() (with torch.no_grad()) "
        "for evaluation."
    ),
    "softmax_output": (
        "Give the loss raw logits (no Softmax before it): CrossEntropyLoss applies log-softmax "
        "itself (NLLLoss wants log_softmax outputs)."
    ),
    "nonnegative_logits": (
        "End the model with its last Linear layer: cross-entropy needs raw logits, which can be "
        "negative (no ReLU, Softmax or Sigmoid after it)."
    ),
    "gradients": "Look for log(0), division by zero, a too-large learning rate, or bad inputs.",
    "zero_gradient": (
        "Check that the loss depends on the model output (no .detach(), no argmax, no "
        "torch.no_grad()), that parameters require gradients, and that the gradients are not "
        "reset between backward() and optimizer.step()."
    ),
    "optimizer_params": (
        "Create the optimizer after the model: optimizer = Adam(model.parameters(), lr=...)."
    ),
    "eval_determinism": (
        "Evaluate in model.eval() mode under torch.no_grad(), without random transforms."
    ),
    "accumulation": (
        "Divide each micro-batch loss by the number of micro-batches before backward() "
        "((loss / accumulation_steps).backward()), so the step uses the mean gradient."
    ),
    "lr_collapse": (
        "Compute a warm-up from the base learning rate (lr = base_lr * (step + 1) / "
        "warmup_steps) instead of multiplying the current one; step per-epoch schedules once "
        "per epoch."
    ),
    "lr_jump": (
        "When resuming, load the optimizer's and the scheduler's state_dict from the checkpoint "
        "(and do not step the scheduler again for the epochs it has already counted)."
    ),
    "eval_loss": (
        "Compute the evaluation loss exactly as in training, on the raw logits "
        "(loss_fn(model(x), y)); apply softmax only where you need probabilities."
    ),
    "eval_memory": "Evaluate under torch.no_grad() and keep numbers, not tensors (loss.item()).",
    "split_seed": (
        "Draw the split with a seeded generator: random_split(data, sizes, "
        "generator=torch.Generator().manual_seed(0))."
    ),
    "shared_transform": (
        "Give each split its own dataset object with its own transform and take the split's "
        "indices from it: Subset(SVHN(..., transform=train_tf), train_idx), "
        "Subset(SVHN(..., transform=eval_tf), valid_idx)."
    ),
}


@dataclass(repr=False)
class CheckResult(Report):
    """The outcome of one check.

    Attributes:
        name: short identifier, e.g. ``"split_overlap"``.
        passed: True (nothing found), False (a fault found), None (not applicable, or the check
            could not run: then ``error`` says why).
        evidence: what was measured, in one sentence with the numbers.
        hint: what to do about it (one sentence).
        figure: an optional matplotlib Figure (a plot that shows the evidence).
        details: the raw numbers behind the evidence (for plots and tests).
        error: the exception text when the check itself failed to run.
    """

    name: str
    passed: bool | None
    evidence: str
    hint: str = ""
    figure: Any = None
    details: dict = field(default_factory=dict)
    error: str | None = None
    status_column = "status"

    @property
    def status(self) -> str:
        """``"PASS"``, ``"FAIL"``, ``"N/A"`` or ``"ERROR"``."""
        return "ERROR" if self.error else _STATUS[self.passed]

    @property
    def failed(self) -> bool:
        """True when the check found a fault."""
        return self.passed is False

    def row(self) -> dict[str, str]:
        """The result as one table row (``check``, ``status``, ``evidence``, ``hint``)."""
        return dict(zip(_COLUMNS, (self.name, self.status, self.evidence, self.hint), strict=True))

    def to_frame(self):
        """A one-row pandas DataFrame (see :meth:`row`)."""
        return CheckReport([self]).to_frame()

    def __str__(self) -> str:
        hint = f"\n       hint: {self.hint}" if self.hint else ""
        return f"[{self.status}] {self.name}: {self.evidence}{hint}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return super()._repr_html_() + _figures_html([self], collapsed=False)


class CheckReport(Report, list):
    """All results of :func:`nbhelpers.checks.run_all_checks`: a list of :class:`CheckResult`
    that shows as a table, one row per check.

    ``print(report)`` gives one line per check; in a notebook the report displays as a coloured
    table followed by the checks' figures in a collapsed "figures" section.
    ``report["lr_schedule"]`` returns one result by name (its figure included);
    ``report.failed`` lists the checks that found a fault.
    """

    status_column = "status"

    def __getitem__(self, key):
        """The result at position ``key`` or named ``key``. Raises KeyError for an unknown name."""
        if not isinstance(key, str):
            return list.__getitem__(self, key)
        found = [r for r in self if r.name == key]
        if not found:
            raise KeyError(f"no check named {key!r}; ran: {', '.join(self.names)}")
        return found[0]

    def __contains__(self, name: object) -> bool:
        """Whether a check named ``name`` ran (or the result ``name`` is in the report)."""
        return name in self.names or list.__contains__(self, name)

    @property
    def names(self) -> list[str]:
        """Names of the checks that ran, in order."""
        return [r.name for r in self]

    @property
    def failed(self) -> list[CheckResult]:
        """The results that found a fault (``passed is False``)."""
        return [r for r in self if r.failed]

    @property
    def ok(self) -> bool:
        """True when no check found a fault."""
        return not self.failed

    def summary(self) -> str:
        """One line: how many checks passed, failed, did not apply (and could not run)."""
        statuses = [r.status for r in self]
        text = ", ".join(
            f"{statuses.count(s)} {word}"
            for s, word in (("PASS", "passed"), ("FAIL", "failed"), ("N/A", "not applicable"))
        )
        return text + (f", {statuses.count('ERROR')} could not run" if "ERROR" in statuses else "")

    def to_frame(self):
        """A pandas DataFrame with columns ``check``, ``status``, ``evidence``, ``hint``."""
        import pandas as pd

        return pd.DataFrame([r.row() for r in self], columns=_COLUMNS)

    def __str__(self) -> str:
        return "\n".join([str(r) for r in self] + [self.summary()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return super()._repr_html_() + _figures_html(self, collapsed=True)


def _figures_html(results: Iterable[CheckResult], *, collapsed: bool) -> str:
    """The results' figures as inline PNGs (in a closed "figures" section if ``collapsed``)."""
    images = "".join(
        f'<p><b>{html.escape(r.name)}</b><br><img src="data:image/png;base64,{png}" '
        'style="max-width:100%"></p>'
        for r in results
        if r.figure is not None and (png := figure_png_base64(r.figure))
    )
    if images and collapsed:
        return f"<details><summary>figures</summary>{images}</details>"
    return images


def verdict(name: str, problems: list[str], evidence: str, hint: str, **extra: Any) -> CheckResult:
    """A failed result when ``problems`` lists any, else a passed one.

    The evidence of a failure reads ``"problem; problem. evidence"``; ``hint`` is kept only for
    a failure; ``extra`` (``figure``, ``details``) goes to the :class:`CheckResult`.
    """
    if problems:
        return CheckResult(name, False, "; ".join(problems) + ". " + evidence, hint, **extra)
    return CheckResult(name, True, evidence, **extra)


def not_applicable(name: str, why: str, hint: str = "") -> CheckResult:
    """A :class:`CheckResult` with ``passed=None`` (the check does not apply)."""
    return CheckResult(name, None, why, hint)


def fmt(value: float | None) -> str:
    """A compact number for evidence text: 3 significant digits, scientific when small/large."""
    if value is None or math.isnan(value := float(value)):
        return "nan"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2g}"
    return f"{value:.3g}"


def new_figure(width: float = 6.0, height: float = 3.0):
    """A matplotlib Figure and Axes not registered with pyplot (so nothing is shown twice)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)
