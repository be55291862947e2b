"""Every correct answer to the exercises of notebooks 03, 04 and 05 passes their self-checks.

The learner notebook's cells run in this process, top to bottom, up to and including the
exercise's self-check cell, with the exercise cell replaced by an answer (tiny budget, the
offline stand-in; no training run is reached, so each case takes seconds). The self-check
functions are wrapped to record every verdict. A wrong answer must fail at least one check.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = 'BUDGET = "tiny"\nDATA_SOURCE = "synthetic"\nDOWNLOAD = False\nSEED = 0\n'
CHECKS = ("check", "check_splits_disjoint", "check_loss_falls", "check_close")


def _learner(stage: str):
    (path,) = sorted((ROOT / "notebooks").glob(f"{stage}_*.ipynb"))
    return nbformat.read(path, as_version=4)


def verdicts(stage: str, starts_with: str, answer: str, monkeypatch, tmp_path) -> list[bool]:
    """Run notebook ``stage``'s code cells with the cell that starts with ``starts_with``
    replaced by ``answer``, up to the first self-check cell after it; the verdicts of the
    self-checks of that cell, in order."""
    matplotlib.use("Agg")
    for var in ("RUNS", "LOGBOOK", "STAGES"):
        monkeypatch.setenv(f"NBHELPERS_{var}_DIR", str(tmp_path / var.lower()))
    cells = [c for c in _learner(stage).cells if c.cell_type == "code"]
    (index,) = [i for i, c in enumerate(cells) if c.source.startswith(starts_with)]
    namespace: dict = {"display": lambda *args, **kwargs: None}
    found: list[bool] = []
    for i, cell in enumerate(cells):
        tags = cell.metadata.get("tags", [])
        source = PARAMETERS if "parameters" in tags else answer if i == index else cell.source
        if "pip install" in source or "google.colab" in source:  # the setup cell: nothing to do
            continue
        exec(compile(source, f"<{stage} cell {i}>", "exec"), namespace)
        for name in CHECKS:  # wrap the self-checks once they are imported
            original = namespace.get(name)
            if callable(original) and not getattr(original, "_recording", False):
                namespace[name] = _recording(original, found)
        if i > index and "exercise" in tags:
            return found
    raise AssertionError(f"no self-check cell after the exercise of {stage}")


def _recording(check, found):
    def wrapper(*args, **kwargs):
        outcome = check(*args, **kwargs)
        found.append(bool(outcome))
        return outcome

    wrapper._recording = True
    return wrapper


STEP = "def train_step(model, optimizer, x, y):\n"
BODY = "    logits = model(x)\n    loss = loss_fn(logits, y)\n    loss.backward()\n    optimizer.step()\n"
STEP_ANSWERS = {
    "zero_grad at the start": STEP
    + "    optimizer.zero_grad()\n"
    + BODY
    + "    return loss.item()\n",
    "zero_grad after step": STEP + BODY + "    optimizer.zero_grad()\n    return loss.item()\n",
    "model.zero_grad()": STEP + "    model.zero_grad()\n" + BODY + "    return loss.item()\n",
    "set_to_none=False": STEP
    + "    optimizer.zero_grad(set_to_none=False)\n"
    + BODY
    + "    return loss.item()\n",
    "wrong: no reset": STEP + BODY + "    return loss.item()\n",
}


@pytest.mark.parametrize("answer", STEP_ANSWERS)
def test_03_every_correct_train_step_passes(answer, monkeypatch, tmp_path):
    found = verdicts("03", STEP, STEP_ANSWERS[answer], monkeypatch, tmp_path)
    assert found, "the self-check did not run"
    assert all(found) is not answer.startswith("wrong"), found


SIMPLE = "simple = dataclasses.replace("
SIMPLE_ANSWERS = {
    "both in one call": 'simple = dataclasses.replace(fixed, name="simple-baseline", '
    'augmentation="none", schedule="none")\n',
    "two calls, other order": 'simple = dataclasses.replace(fixed, schedule="none")\n'
    'simple = dataclasses.replace(simple, augmentation="none", name="simple-baseline")\n',
    "a dict of changes": 'simple = dataclasses.replace(fixed, **{"augmentation": "none", '
    '"schedule": "none"}, name="simple-baseline")\n',
    "wrong: schedule kept": 'simple = dataclasses.replace(fixed, augmentation="none")\n',
}


@pytest.mark.parametrize("answer", SIMPLE_ANSWERS)
def test_04_every_correct_simple_baseline_passes(answer, monkeypatch, tmp_path):
    found = verdicts("04", SIMPLE, SIMPLE_ANSWERS[answer], monkeypatch, tmp_path)
    assert len(found) == 2, found
    assert all(found) is not answer.startswith("wrong"), found


PIPELINE = "def fixed_data(bundle):"
_LOADERS = """
    datasets = {"train": train_data, "valid": valid_data, "test": test_data}
    loaders = {
        "train": DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=True),
        "valid": DataLoader(valid_data, batch_size=BATCH_SIZE),
        "test": DataLoader(test_data, batch_size=BATCH_SIZE),
    }
    return datasets, loaders


fixed_sets, fixed_loaders = fixed_data(bundle)
fixed_transform, _ = find_transform(fixed_sets["train"])
label_safe = check_augmentation(fixed_sets["train"], show=False)
"""
PIPELINE_ANSWERS = {
    "to-tensor only": PIPELINE
    + """
    train_data = bundle.train.to_dataset(transforms.ToTensor())
    valid_data = bundle.valid.to_dataset(transforms.ToTensor())
    test_data = bundle.test.to_dataset(transforms.ToTensor())
"""
    + _LOADERS,
    "a Compose of ToTensor, one shared eval transform": PIPELINE
    + """
    train_transform = transforms.Compose([transforms.ToTensor()])
    eval_transform = transforms.ToTensor()
    train_data = bundle.train.to_dataset(train_transform)
    valid_data, test_data = (bundle.valid.to_dataset(eval_transform), bundle.test.to_dataset(eval_transform))
"""
    + _LOADERS,
    "wrong: the colleague's pipeline": PIPELINE
    + """
    rotate = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
    train_data = bundle.train.to_dataset(rotate)
    eval_data = bundle.train.to_dataset(transforms.ToTensor())
    valid_data, test_data = torch.utils.data.random_split(
        eval_data, [0.5, 0.5], generator=torch.Generator().manual_seed(SEED)
    )
"""
    + _LOADERS,
}


@pytest.mark.parametrize("answer", PIPELINE_ANSWERS)
def test_05_every_correct_pipeline_passes(answer, monkeypatch, tmp_path):
    found = verdicts("05", PIPELINE, PIPELINE_ANSWERS[answer], monkeypatch, tmp_path)
    assert len(found) == 3, found
    assert all(found) is not answer.startswith("wrong"), found
