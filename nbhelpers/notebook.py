"""The first and last cells of every notebook: :func:`start` and :func:`record_stage`.

A notebook begins with::

    ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)   # device, budget, data, seeds, banner
    device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

and ends by recording its stage of the journey::

    record_stage("03", "zero_grad fixed", test_accuracy=record.final("test_accuracy"),
                 test_split="colleague", claims=[Claim("clearly above chance", holds, "41% vs 19%")])

Stage records are small JSON files, one per stage, in ``$NBHELPERS_STAGES_DIR`` (else
``<runs dir>/stages``, i.e. ``runs/stages``); ``scripts/run_series.py`` reads them with
:func:`read_stages` to print the journey table (stage -> test accuracy -> the tutorial's claims -> wall time).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nbhelpers import validate
from nbhelpers.budget import Budget, resolve_budget
from nbhelpers.data import DataBundle, load_data
from nbhelpers.env import banner, pick_device, seed_everything
from nbhelpers.files import atomic_path

_STAGE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

#: The context of the latest :func:`start` call (lets :func:`record_stage` add budget and data).
_current: NotebookContext | None = None


@dataclass(frozen=True)
class NotebookContext:
    """What :func:`start` set up.

    Attributes:
        device: the training device (``torch.device``).
        budget: the compute budget (:class:`nbhelpers.budget.Budget`).
        bundle: the train / valid / test splits (:class:`nbhelpers.data.DataBundle`); its
            ``source`` says what was actually loaded (``"svhn"`` or ``"synthetic"``).
        seed: the seed everything was seeded with.
    """

    device: torch.device
    budget: Budget
    bundle: DataBundle
    seed: int

    def __iter__(self):
        """Unpack as ``device, budget, bundle = ctx``."""
        return iter((self.device, self.budget, self.bundle))


def start(
    budget: str | Budget | None = None,
    data_source: str = "auto",
    download: bool = True,
    seed: int = 0,
    *,
    device: str | torch.device | None = None,
    data_dir: str | Path | None = None,
    verbose: bool = True,
) -> NotebookContext:
    """Set up a notebook: pick the device, resolve the budget, seed everything, load the data.

    Prints the version banner, the budget and a summary of the data (source, split sizes,
    class counts); the synthetic stand-in is announced loudly.

    Args:
        budget: ``"tiny"``, ``"quick"``, ``"colab"``, ``"full"``, a :class:`Budget` or ``None`` (colab on a
            GPU, quick elsewhere).
        data_source: ``"svhn"``, ``"synthetic"`` or ``"auto"``.
        download: allow downloading SVHN (about 240 MB): True or False, or one of the
            spellings a notebook parameter may arrive in from the command line (``"true"`` /
            ``"false"``, ``"yes"`` / ``"no"``, ``"1"`` / ``"0"``, ``"on"`` / ``"off"``).
        seed: seed of Python, NumPy, torch and of the data splits, in [0, 2**32 - 1].
        device: force a device (default: CUDA, then MPS, then CPU; see
            :func:`nbhelpers.env.pick_device`).
        data_dir: where data lives (default :func:`nbhelpers.env.default_data_dir`).
        verbose: print the banner, budget and data summary.

    Returns:
        A :class:`NotebookContext`; it also unpacks as ``device, budget, bundle``.

    Raises:
        ValueError: unknown budget, data source or device; ``download`` neither a bool nor one
            of those spellings; bad seed. All before any data is loaded.
        nbhelpers.svhn.SVHNUnavailable: ``data_source="svhn"`` and SVHN cannot be had.
    """
    global _current
    download = validate.boolean("download", download, spellings=True)
    dev = pick_device(None if device is None else str(device))
    chosen = resolve_budget(budget, dev)
    seed_everything(seed)
    bundle = load_data(
        data_source,
        data_dir=data_dir,
        n_train=chosen.n_train,
        n_valid=chosen.n_valid,
        n_test=chosen.n_test,
        download=download,
        seed=seed,
    )
    ctx = NotebookContext(dev, chosen, bundle, int(seed))
    _current = ctx
    if verbose:
        print(f"{banner(dev, bundle.source)}\n{chosen.describe()}\n{bundle.summary()}")
    return ctx


def default_stages_dir() -> Path:
    """``$NBHELPERS_STAGES_DIR`` if set, else ``<runs dir>/stages`` (``runs/stages``)."""
    env = os.environ.get("NBHELPERS_STAGES_DIR")
    if env:
        return Path(env).expanduser()
    from nbhelpers.records import default_runs_dir

    return default_runs_dir() / "stages"


@dataclass(frozen=True)
class Claim:
    """One claim of the tutorial at a stage, and whether this run's numbers support it.

    Attributes:
        text: the claim in a few words, e.g. ``"the test accuracy is clearly above chance"``.
        holds: True when this run's numbers support it (computed by the notebook, never typed).
        evidence: the numbers behind ``holds``, e.g. ``"41.2% vs chance 18.6% (p < 0.001)"``.

    Raises:
        ValueError: empty ``text`` or ``evidence``, or ``holds`` not a bool.
    """

    text: str
    holds: bool
    evidence: str

    def __post_init__(self) -> None:
        for name in ("text", "evidence"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise validate.invalid(name, value, "a non-empty string")
        if not isinstance(self.holds, bool):  # numpy bools too: bool(np.True_) first
            raise validate.invalid("holds", self.holds, "True or False (use bool(...))")

    def line(self) -> str:
        """``"holds: <text> (<evidence>)"`` or ``"does not hold: ..."``, for tables and printing."""
        return f"{'holds' if self.holds else 'does not hold'}: {self.text} ({self.evidence})"


#: Which test split a stage's accuracy comes from: the colleague's (made of training images,
#: a fault of the handover) or the real test split.
TEST_SPLITS = {
    "colleague": "the colleague's test split (training images)",
    "test": "the real test split",
}


def record_stage(
    stage: str,
    label: str,
    *,
    test_accuracy: float | None = None,
    run_time_s: float | None = None,
    test_split: str | None = None,
    claims: Sequence[Claim] = (),
    stages_dir: str | Path | None = None,
    **extra: Any,
) -> None:
    """Record the result of one stage of the journey (one notebook) as JSON.

    The file ``<stages dir>/stage-<stage>.json`` is written atomically (temporary file, then
    ``os.replace``) and overwritten when the notebook runs again. It holds ``stage``, ``label``,
    ``test_accuracy``, ``run_time_s``, the budget name, data source and device of the latest
    :func:`start`, a timestamp and ``extra``.

    Args:
        stage: the notebook number, e.g. ``"03"`` (letters, digits, ``_.-``).
        label: a few words, e.g. ``"zero_grad fixed"``.
        test_accuracy: fraction in [0, 1] on the test split, e.g. 0.932 (None: the stage has none).
        run_time_s: wall-clock seconds of the stage's training run, finite and >= 0 (None: not
            measured).
        test_split: which split ``test_accuracy`` is measured on, a key of :data:`TEST_SPLITS`
            (``"colleague"`` or ``"test"``); required with ``test_accuracy``.
        claims: the tutorial's claims at this stage, each with whether it holds (printed, and
            shown in ``make run``'s journey table).
        stages_dir: default :func:`default_stages_dir`.
        **extra: more JSON-serialisable facts (e.g. ``valid_accuracy=0.41``).

    Returns nothing (so a notebook cell ending with it shows no extra output); the file is
    :func:`stage_path` of ``stage``.

    Raises:
        ValueError: bad ``stage``, empty ``label``, accuracy outside [0, 1], an accuracy without
            a ``test_split`` or an unknown one, a claim that is not a :class:`Claim`, a negative or
            non-finite time, a NaN or infinite number in ``extra`` (JSON has none).
        TypeError: ``extra`` holds values JSON cannot encode (raised by ``json``, naming the
            type).
    """
    if not isinstance(stage, str) or not _STAGE_RE.match(stage):
        raise validate.invalid("stage", stage, "a short string of letters, digits, _.- like '03'")
    if not isinstance(label, str) or not label.strip():
        raise validate.invalid("label", label, "a non-empty string")
    if test_split is not None or test_accuracy is not None:
        validate.one_of("test_split", test_split, TEST_SPLITS)
    for item in claims:
        if not isinstance(item, Claim):
            raise validate.invalid("claims", item, "nbhelpers.notebook.Claim objects")
    entry: dict[str, Any] = {
        "stage": stage,
        "label": label,
        "test_accuracy": validate.number("test_accuracy", test_accuracy, 0, 1, allow_none=True),
        "run_time_s": validate.number("run_time_s", run_time_s, 0, allow_none=True),
        "test_split": test_split,
        "claims": [asdict(c) for c in claims],
        "budget": _current.budget.name if _current else None,
        "data_source": _current.bundle.source if _current else None,
        "device": str(_current.device) if _current else None,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    try:  # TypeError for extra values JSON cannot encode
        text = json.dumps(entry, indent=2, allow_nan=False)
    except ValueError as err:
        raise validate.invalid("extra", extra, "JSON values with finite numbers only") from err
    with atomic_path(stage_path(stage, stages_dir)) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    acc = "" if entry["test_accuracy"] is None else f", test accuracy {entry['test_accuracy']:.1%}"
    print(f"Stage {stage} recorded: {label}{acc}.")
    for item in claims:
        print(f"  {'✓' if item.holds else '✗'} {item.line()}")


def stage_path(stage: str, stages_dir: str | Path | None = None) -> Path:
    """The file of a stage record: ``<stages dir>/stage-<stage>.json``."""
    folder = Path(stages_dir).expanduser() if stages_dir is not None else default_stages_dir()
    return folder / f"stage-{stage}.json"


def read_stages(stages_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """All stage records of a directory, sorted by stage (empty list if there are none).

    Args:
        stages_dir: default :func:`default_stages_dir`.

    Raises:
        ValueError: a file is not valid JSON (names the file).
    """
    folder = Path(stages_dir).expanduser() if stages_dir is not None else default_stages_dir()
    records = []
    for path in sorted(folder.glob("stage-*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    return sorted(records, key=lambda r: str(r.get("stage", "")))
