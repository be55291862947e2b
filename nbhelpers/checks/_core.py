"""Shared pieces of the checks: the result types, state protection, copies and data access.

- :class:`CheckResult` (one check) and :class:`CheckReport` (a table of them), both printable
  as plain text and displayable as HTML in a notebook.
- :func:`preserved_rng` and :func:`preserved_loader_state`: run code that draws random numbers or
  iterates a loader, then put every random-number generator and the loader's epoch counter back.
- :func:`clone_training_objects`: deep copies of model, optimizer and scheduler that point at each
  other (the copied optimizer updates the copied model's parameters, never the learner's).
- :func:`guard_learner_state`: snapshot the learner's model and optimizer and restore them if a
  learner-supplied function touched them anyway.
- Data access that works on the learner's own objects: :func:`raw_images_labels` (the stored
  images and labels of a split, before any transform) and :func:`take_batches` /
  :func:`model_batch` (batches ``(x, y)`` as the model sees them).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CheckReport",
    "CheckResult",
    "clone_training_objects",
    "guard_learner_state",
    "model_batch",
    "preserved_loader_state",
    "preserved_rng",
    "raw_images_labels",
    "take_batches",
]

_STATUS = {True: "PASS", False: "FAIL", None: "N/A"}
_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "N/A": "#6e7781", "ERROR": "#9a6700"}


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
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

    @property
    def status(self) -> str:
        """``"PASS"``, ``"FAIL"``, ``"N/A"`` or ``"ERROR"``."""
        return "ERROR" if self.error else _STATUS[self.passed]

    @property
    def failed(self) -> bool:
        """True when the check found a fault."""
        return self.passed is False

    def __str__(self) -> str:
        line = f"[{self.status}] {self.name}: {self.evidence}"
        if self.hint:
            line += f"\n       hint: {self.hint}"
        return line

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = _COLOURS[self.status]
        parts = [
            f'<div style="margin:2px 0"><span style="background:{colour};color:white;'
            f'padding:1px 6px;border-radius:3px;font-weight:bold">{self.status}</span> '
            f"<b>{html.escape(self.name)}</b>: {html.escape(self.evidence)}"
        ]
        if self.hint:
            parts.append(f'<br><span style="color:#57606a">hint: {html.escape(self.hint)}</span>')
        if self.figure is not None:
            png = figure_png_base64(self.figure)
            if png:
                parts.append(f'<br><img src="data:image/png;base64,{png}" style="max-width:100%">')
        parts.append("</div>")
        return "".join(parts)


def figure_png_base64(figure: Any) -> str:
    """The matplotlib ``figure`` as a base64 PNG string ('' if it cannot be rendered)."""
    try:
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    except Exception:  # noqa: BLE001 - a broken figure must not hide the result
        return ""
    return base64.b64encode(buf.getvalue()).decode("ascii")


class CheckReport:
    """All results of :func:`nbhelpers.checks.run_all_checks`: a table, one row per check.

    ``print(report)`` gives plain text; in a notebook the report displays as a coloured table.
    ``report["lr_schedule"]`` returns one :class:`CheckResult` (its figure included);
    ``report.failed`` lists the checks that found a fault. The HTML view ends with the checks'
    figures in a collapsed "figures" section.
    """

    def __init__(self, results: Iterable[CheckResult]):
        self.results: list[CheckResult] = list(results)

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, key: int | str) -> CheckResult:
        if isinstance(key, int):
            return self.results[key]
        for result in self.results:
            if result.name == key:
                return result
        raise KeyError(f"no check named {key!r}; ran: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(r.name == name for r in self.results)

    @property
    def names(self) -> list[str]:
        """Names of the checks that ran, in order."""
        return [r.name for r in self.results]

    @property
    def failed(self) -> list[CheckResult]:
        """The results that found a fault (``passed is False``)."""
        return [r for r in self.results if r.passed is False]

    @property
    def ok(self) -> bool:
        """True when no check found a fault."""
        return not self.failed

    def summary(self) -> str:
        """One line: how many checks passed, failed, did not apply."""
        counts = {s: 0 for s in _COLOURS}
        for r in self.results:
            counts[r.status] += 1
        text = f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['N/A']} not applicable"
        return text + (f", {counts['ERROR']} could not run" if counts["ERROR"] else "")

    def to_frame(self):
        """A pandas DataFrame with columns ``check``, ``status``, ``evidence``, ``hint``."""
        import pandas as pd

        rows = [
            {"check": r.name, "status": r.status, "evidence": r.evidence, "hint": r.hint}
            for r in self.results
        ]
        return pd.DataFrame(rows, columns=["check", "status", "evidence", "hint"])

    def styled(self):
        """The table as a pandas Styler: status coloured, text left-aligned."""
        frame = self.to_frame()

        def colour(value: str) -> str:
            return f"color:white;background-color:{_COLOURS.get(value, '#6e7781')};font-weight:bold"

        style = frame.style
        apply = getattr(style, "map", None) or style.applymap  # pandas < 2.1: applymap
        styler = apply(colour, subset=["status"]).hide(axis="index")
        return styler.set_properties(**{"text-align": "left", "white-space": "pre-wrap"})

    def __str__(self) -> str:
        lines = [str(r) for r in self.results]
        return "\n".join(lines + [self.summary()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        try:
            table = self.styled().to_html()
        except Exception:  # noqa: BLE001 - jinja2 missing: fall back to the plain table
            table = self.to_frame().to_html(index=False)
        figures = "".join(
            f'<p><b>{html.escape(r.name)}</b><br><img src="data:image/png;base64,{png}" '
            'style="max-width:100%"></p>'
            for r in self.results
            if r.figure is not None and (png := figure_png_base64(r.figure))
        )
        if figures:
            figures = f"<details><summary>figures</summary>{figures}</details>"
        return table + f"<p>{html.escape(self.summary())}</p>" + figures


def not_applicable(name: str, why: str, hint: str = "") -> CheckResult:
    """A :class:`CheckResult` with ``passed=None`` (the check does not apply)."""
    return CheckResult(name, None, why, hint)


# ---------------------------------------------------------------------------------------------
# Protecting the learner's state
# ---------------------------------------------------------------------------------------------
@contextmanager
def preserved_rng():
    """Save Python's, NumPy's and torch's (CPU, CUDA, MPS) random states; restore them on exit."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    cpu_state = torch.get_rng_state()
    cuda_states = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = torch.cuda.get_rng_state_all()
    mps_state = None
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps_state = torch.mps.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)


def generators_in(obj: Any) -> list[torch.Generator]:
    """``torch.Generator`` attributes of ``obj`` (one level deep), e.g. an augmentation's."""
    try:
        values = list(vars(obj).values())
    except TypeError:
        return []
    return [v for v in values if isinstance(v, torch.Generator)]


def loader_generators(loader: Any) -> list[torch.Generator]:
    """Every ``torch.Generator`` a loader draws from: its own, its sampler's, and those of its
    augmentation / transform (and their nested transforms), each once."""
    owners = [
        loader,
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ]
    obj, seen = loader, set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        for name in ("augment", "transform"):
            t = getattr(obj, name, None)
            if t is not None:
                owners.append(t)
                owners.extend(getattr(t, "transforms", None) or [])
        obj = getattr(obj, "dataset", None)
    gens: list[torch.Generator] = []
    for owner in owners:
        if owner is None:
            continue
        for gen in generators_in(owner):
            if all(gen is not g for g in gens):
                gens.append(gen)
    return gens


@contextmanager
def preserved_generators(gens: list[torch.Generator]):
    """Save the states of ``gens``; restore them on exit."""
    states = [g.get_state() for g in gens]
    try:
        yield
    finally:
        for gen, state in zip(gens, states, strict=True):
            gen.set_state(state)


@contextmanager
def preserved_loader_state(loader: Any):
    """Iterate ``loader`` freely inside; afterwards its epoch counter and generators are as before.

    Covers an integer ``epoch`` attribute (e.g. :class:`nbhelpers.data.TensorLoader`, whose shuffle
    order depends on it) and every ``torch.Generator`` of the loader, its sampler and its
    augmentation (:func:`loader_generators`).
    """
    epoch = getattr(loader, "epoch", None)
    try:
        with preserved_generators(loader_generators(loader)):
            yield
    finally:
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            try:
                loader.epoch = epoch
            except AttributeError:
                pass


def clone_training_objects(model=None, optimizer=None, scheduler=None):
    """Deep copies of ``(model, optimizer, scheduler)`` wired to each other.

    One ``copy.deepcopy`` call copies all three, so the copied optimizer holds the copied
    model's parameters and the copied scheduler drives the copied optimizer. Stepping the copies
    never changes the originals. (An optimizer's ``__getstate__`` drops the step wrapper an LR
    scheduler installs, so the copy's ``step`` is the plain method.)

    Args:
        model, optimizer, scheduler: any of them may be None.

    Returns:
        ``(model_copy, optimizer_copy, scheduler_copy)`` (None where the input was None).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``optimizer`` not a ``torch.optim.Optimizer``.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}."
        )
    if scheduler is not None and optimizer is None:
        optimizer = getattr(scheduler, "optimizer", None)
    return copy.deepcopy((model, optimizer, scheduler))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without any."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def guard_learner_state(model: nn.Module | None, optimizer: torch.optim.Optimizer | None = None):
    """Snapshot the learner's model and optimizer; restore them if the body changed them.

    Learner-supplied functions (``train_step``, ``evaluate_fn``) are called with copies, but a
    function that uses a global ``model`` or ``optimizer`` instead of its arguments would touch
    the real ones. Yields a dict; ``touched`` is True afterwards when that happened (the state
    has then been put back).
    """
    info = {"touched": False}
    if model is None:
        yield info
        return
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    training = model.training
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        yield info
    finally:
        now = model.state_dict()
        changed = any(not torch.equal(now[k], v) for k, v in params.items())
        changed = changed or any(
            (g is None) != (p.grad is None) or (g is not None and not torch.equal(g, p.grad))
            for g, p in zip(grads, model.parameters(), strict=True)
        )
        if changed or model.training != training:
            info["touched"] = True
            with torch.no_grad():
                model.load_state_dict(params)
                for g, p in zip(grads, model.parameters(), strict=True):
                    p.grad = g
            model.train(training)
            if optimizer is not None and opt_state is not None:
                optimizer.load_state_dict(opt_state)


TOUCHED_NOTE = (
    " Note: your function changed the real model or optimizer (it must use its `model` and "
    "`optimizer` arguments); they were put back."
)


# ---------------------------------------------------------------------------------------------
# Data access
# ---------------------------------------------------------------------------------------------
def _to_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, np.integer)):
        return torch.as_tensor(value)
    return None


def _pil_to_tensor(img: Any) -> torch.Tensor | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return None
    if isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return None


def _item_x(x: Any) -> torch.Tensor | None:
    t = _to_tensor(x)
    return t if t is not None else _pil_to_tensor(x)


def raw_images_labels(
    obj: Any, max_items: int | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None, str]:
    """The stored images and labels of one split, before any transform.

    Understands, in this order: an ``(images, labels)`` pair of tensors/arrays; objects with
    ``images`` and ``labels`` tensors (:class:`nbhelpers.data.ImageSet`, ``TensorLoader``);
    ``torch.utils.data.Subset`` (its parent's items at ``indices``); ``TensorDataset``;
    datasets with ``data`` and ``labels``/``targets`` arrays (``torchvision.datasets.SVHN``,
    CIFAR, MNIST, ``SVHNLikeDataset``); a ``DataLoader`` (its dataset). Anything else that can be
    indexed (a Dataset) or iterated (batches ``(x, y)``) is read item by item, up to
    ``max_items`` items, *through* its transform.

    Args:
        obj: the split.
        max_items: read at most this many items from datasets that have to be read one by one.

    Returns:
        ``(images, labels, how)``: images a CPU tensor (N, ...) in the stored dtype (uint8 for
        image datasets), labels a CPU tensor (N,), ``how`` a few words on where they came from
        (``"stored"`` or ``"read through the transform"``). Either tensor may be None when the
        object does not provide it.
    """
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = _to_tensor(obj[0]), _to_tensor(obj[1])
        if x is not None and y is not None and x.ndim >= 2:
            return x.cpu(), y.cpu(), "stored"
    imgs, labs = getattr(obj, "images", None), getattr(obj, "labels", None)
    if isinstance(imgs, torch.Tensor) and isinstance(labs, torch.Tensor):
        return imgs.detach().cpu(), labs.detach().cpu(), "stored"
    if isinstance(obj, torch.utils.data.Subset):
        x, y, how = raw_images_labels(obj.dataset, None)
        if x is not None and how == "stored":
            idx = torch.as_tensor(list(obj.indices), dtype=torch.long)
            return x[idx], (y[idx] if y is not None else None), how
        return _read_items(obj, max_items)
    if isinstance(obj, torch.utils.data.TensorDataset) and len(obj.tensors) >= 2:
        return obj.tensors[0].detach().cpu(), obj.tensors[1].detach().cpu(), "stored"
    data = _to_tensor(getattr(obj, "data", None))
    labels = getattr(obj, "labels", None)
    labels = _to_tensor(labels if labels is not None else getattr(obj, "targets", None))
    if data is not None and data.ndim >= 3:
        return data.cpu(), (labels.cpu() if labels is not None else None), "stored"
    if isinstance(obj, torch.utils.data.DataLoader):
        return raw_images_labels(obj.dataset, max_items)
    return _read_items(obj, max_items)


def _read_items(obj: Any, max_items: int | None):
    xs, ys = [], []
    how = "read through the transform"
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        n = len(obj) if max_items is None else min(len(obj), max_items)
        for i in range(n):
            item = obj[i]
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            xs.append(_item_x(x))
            ys.append(y)
        if n < len(obj):
            how += f" (first {n} of {len(obj)})"
        if ys and isinstance(ys[0], torch.Tensor) and ys[0].ndim == 1:  # a list of batches
            return torch.cat([x.cpu() for x in xs]), torch.cat([y.cpu() for y in ys]), how
        return _stack(xs), _stack_labels(ys), how
    if isinstance(obj, Iterable):
        x, y = take_examples(obj, max_items or 10_000)
        return x, y, how
    raise TypeError(
        f"cannot read images from a {type(obj).__name__}; pass an ImageSet, a Dataset, a "
        "DataLoader, a TensorLoader or an (images, labels) pair."
    )


def _stack(xs: list) -> torch.Tensor | None:
    if not xs or any(x is None for x in xs):
        return None
    return torch.stack([x.cpu() for x in xs])


def _stack_labels(ys: list) -> torch.Tensor | None:
    if not ys or any(y is None for y in ys):
        return None
    return torch.as_tensor([int(y) for y in ys])


def _batch_xy(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        keys = list(batch)
        batch = (batch[keys[0]], batch[keys[1]])
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"a loader must yield (x, y) pairs, got a {type(batch).__name__}; "
            "wrap it so that each batch is (inputs, labels)."
        )
    return batch[0], batch[1]


def take_batches(loader: Iterable, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n_batches`` batches ``(x, y)`` of a fresh pass over ``loader``.

    Random-number generators and the loader's epoch counter are restored afterwards
    (:func:`preserved_rng`, :func:`preserved_loader_state`), so the learner's next epoch is the
    one it would have been.

    Raises:
        TypeError: the loader does not yield ``(x, y)`` pairs.
    """
    out = []
    with preserved_rng(), preserved_loader_state(loader):
        for batch in loader:
            out.append(_batch_xy(batch))
            if len(out) >= n_batches:
                break
    return out


def take_examples(loader: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At least ``min(n, len)`` examples ``(x, y)`` from the first batches of ``loader`` (CPU)."""
    xs, ys, count = [], [], 0
    with preserved_rng(), preserved_loader_state(loader):
        for batch in loader:
            x, y = _batch_xy(batch)
            x, y = torch.as_tensor(x).detach().cpu(), torch.as_tensor(y).detach().cpu()
            xs.append(x)
            ys.append(y)
            count += int(x.shape[0])
            if count >= n:
                break
    if not xs:
        raise ValueError("the loader yielded no batches.")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def model_batch(source: Any, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples ``(x, y)`` as the model sees them, from a loader, a dataset or a pair.

    Args:
        source: an iterable of ``(x, y)`` batches, a map-style dataset of ``(x, y)`` items, an
            ``(x, y)`` pair of tensors, or an :class:`~nbhelpers.data.ImageSet` (uint8 images
            scaled to [0, 1], as its ``to_dataset()`` would give them).
        n: number of examples wanted (fewer if the source is smaller).

    Returns:
        ``x`` float (n, C, H, W), ``y`` int64 (n,) on the CPU.

    Raises:
        TypeError: ``source`` gives no ``(x, y)`` pairs.
    """
    if isinstance(source, (tuple, list)) and len(source) == 2:
        if isinstance(source[0], torch.Tensor):
            return source[0][:n], torch.as_tensor(source[1])[:n]
    imgs, labs = getattr(source, "images", None), getattr(source, "labels", None)
    if (
        isinstance(imgs, torch.Tensor)
        and isinstance(labs, torch.Tensor)
        and not isinstance(source, Iterable)
    ):
        x = imgs[:n].detach().cpu()
        return (x.float() / 255.0 if x.dtype == torch.uint8 else x), labs[:n].detach().cpu()
    if isinstance(source, torch.utils.data.Dataset) and hasattr(source, "__len__"):
        if not isinstance(source, torch.utils.data.IterableDataset):
            with preserved_rng():
                items = [source[i] for i in range(min(n, len(source)))]
            xs = [_item_x(it[0]) for it in items]
            x = torch.stack(xs)
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            return x, torch.as_tensor([int(it[1]) for it in items])
    return take_examples(source, n)


def limited(loader: Iterable, n_batches: int, max_batch_size: int | None = None) -> _Limited:
    """A view of ``loader`` that stops after ``n_batches`` batches (has ``len``).

    With ``max_batch_size``, each batch ``(x, y, ...)`` is cut to its first that many examples.
    """
    return _Limited(loader, n_batches, max_batch_size)


class _Limited:
    def __init__(self, loader: Iterable, n_batches: int, max_batch_size: int | None = None):
        self.loader, self.n_batches, self.max_batch_size = loader, n_batches, max_batch_size
        try:
            self._len = min(len(loader), n_batches)  # type: ignore[arg-type]
        except TypeError:
            self._len = n_batches

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n_batches:
                break
            if self.max_batch_size and isinstance(batch, (tuple, list)):
                batch = type(batch)(b[: self.max_batch_size] for b in batch)
            yield batch


def as_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """Images as uint8 for hashing: uint8 stays; float in [0, 1] is scaled by 255 and rounded."""
    if x.dtype == torch.uint8:
        return x
    xf = x.float()
    if xf.numel() and float(xf.min()) >= 0.0 and float(xf.max()) <= 1.0:
        return (xf * 255.0).round().to(torch.uint8)
    return x


def fmt(value: float) -> str:
    """A compact number for evidence text: 3 significant digits, scientific when small/large."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    v = float(value)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.2g}"
    return f"{v:.3g}"


def call_quietly(fn: Callable, *args, **kwargs):
    """Call ``fn`` with warnings silenced (used where a copy is stepped out of the usual order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def new_figure(width: float = 6.0, height: float = 3.0):
    """A matplotlib Figure and Axes not registered with pyplot (so nothing is shown twice)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)
