# %% [markdown]
# # 05 · Data inspection: look at the data
#
# The training step is fixed (notebook 03) and the run is simpler (notebook 04). But can we trust its
# numbers? This notebook follows the tutorial's *Debugging Strategy IV*: **look at each
# module on its own**. The data pipeline can be debugged without a single training step:
# we just look at what it hands to the model, split by split, with and without the
# augmentation, and count what we see.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/05_data_inspection.ipynb)
#
# **You will**
# - look at the train, validation and test images side by side, with shuffling and the
#   random split turned off;
# - count the images any two splits have in common, by fingerprinting (hashing) every image;
# - look at what the training augmentation (and a vertical shift) does to the digits;
# - fix the data pipeline, and let automatic checks confirm the fix;
# - train with the fixed pipeline and compare what the two pipelines report for one model.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0

# %%
import dataclasses
import hashlib

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.transforms import functional as TF

from nbhelpers.checks import check_augmentation, find_transform, run_all_checks
from nbhelpers.data import show_grid
from nbhelpers.experiment import compare_table, describe_config, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.selfcheck import check, check_splits_disjoint
from nbhelpers.stats import above_chance, majority_share

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

# %% [markdown]
# ## The colleague's data pipeline
# Here is the data part of the colleague's notebook (the same code as in notebook 01),
# wrapped in a function. We added three **debugging switches**; their defaults give the
# pipeline exactly as it was handed over:
#
# - `shuffle=False`: the training loader keeps the stored order, so we see the same images
#   every time;
# - `split_randomly=False`: validation is the first half of the evaluation data and test the
#   second half, instead of a random half each;
# - `augment=False`: no random rotation, so we see the images as stored.
#
# `bundle.train` plays the role of `torchvision.datasets.SVHN(split="train")`:
# `to_dataset(transform)` turns it into the same kind of dataset, one PIL image per item.

# %%
BATCH_SIZE = budget.batch_size  # the colleague used 256


def handover_data(bundle, *, shuffle=True, split_randomly=True, augment=True):
    """The colleague's data pipeline; returns (datasets, loaders), dicts with keys
    "train", "valid", "test". The three switches are for debugging; defaults: as handed over."""
    rotation = [transforms.RandomRotation(180)] if augment else []
    train_transform = transforms.Compose([*rotation, transforms.ToTensor()])
    eval_transform = transforms.ToTensor()

    train_data = bundle.train.to_dataset(train_transform)
    eval_data = bundle.train.to_dataset(eval_transform)  # the "train" split, loaded again
    if split_randomly:
        valid_data, test_data = torch.utils.data.random_split(
            eval_data, [0.5, 0.5], generator=torch.Generator().manual_seed(SEED)
        )
    else:  # debugging: first half, second half
        half = len(eval_data) // 2
        valid_data = Subset(eval_data, range(half))
        test_data = Subset(eval_data, range(half, len(eval_data)))

    datasets = {"train": train_data, "valid": valid_data, "test": test_data}
    loaders = {
        "train": DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=shuffle),
        "valid": DataLoader(valid_data, batch_size=BATCH_SIZE),
        "test": DataLoader(test_data, batch_size=BATCH_SIZE),
    }
    return datasets, loaders


# %% [markdown]
# ## Look at the splits
# Turn shuffling, the random split and the augmentation off, and show the first images of
# each split, exactly as the loaders deliver them. Train, validation and test should hold
# *different* images. Do they?

# %%
datasets, loaders = handover_data(bundle, shuffle=False, split_randomly=False, augment=False)
first_batches = {name: next(iter(loader)) for name, loader in loaders.items()}
n_show = 8
half = len(datasets["valid"])

fig_splits, axes = plt.subplots(4, 1, figsize=(n_show + 0.4, 6.6))
for ax, (name, (x, y)) in zip(axes, first_batches.items()):
    show_grid(x, y, n=n_show, ncols=n_show, ax=ax, title=f"{name}: the first {n_show} images")
later = [datasets["train"][i] for i in range(half, half + n_show)]
show_grid(
    torch.stack([x for x, _ in later]),
    [y for _, y in later],
    ncols=n_show,
    ax=axes[3],
    title=f"train: images {half} to {half + n_show - 1}",
)
fig_splits.suptitle("Shuffle, random split and augmentation off: the first images of each split")
fig_splits.tight_layout()
plt.show()

# %% [markdown]
# The first validation images *are* the first training images, and the test images are
# training images from further down. Looking at a handful of images is a strong hint; to
# be sure, we count. A **hash** turns an image's pixels into a short fingerprint: identical
# pixels give identical fingerprints, so we can compare thousands of images in an instant.
# This time we count on the pipeline **as handed over**, with its random split.

# %%
def stored(dataset):
    """The images (uint8, (N, 3, 32, 32)) and labels (int64, (N,)) a dataset holds,
    before any transform; works for a `Subset` (and an ImageSet) too."""
    if hasattr(dataset, "images"):  # an ImageSet
        return dataset.images, dataset.labels
    if isinstance(dataset, Subset):
        images, labels = stored(dataset.dataset)
        indices = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return images[indices], labels[indices]
    return torch.as_tensor(dataset.data), torch.as_tensor(dataset.labels)


def image_hashes(images):
    """One fingerprint (SHA-1 of the pixel bytes) per image."""
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]


datasets, loaders = handover_data(bundle)  # as handed over
train_hashes = set(image_hashes(stored(datasets["train"])[0]))
to_compare = {
    "valid (handover)": datasets["valid"],
    "test (handover)": datasets["test"],
    "the data set's own test split": bundle.test.to_dataset(),
}
rows = []
for name, dataset in to_compare.items():
    hashes = image_hashes(stored(dataset)[0])
    shared = sum(h in train_hashes for h in hashes)
    rows.append({"split": name, "images": len(hashes), "also in train": shared, "share": f"{shared / len(hashes):.0%}"})
overlap = pd.DataFrame(rows)
overlap

# %% [markdown]
# **Bug 1: the same data for train, validation and test.** Every validation and test image
# of the colleague's pipeline is a training image: the "evaluation" data is the *train*
# split loaded a second time, then randomly halved. (The data set's own test split, for
# comparison, shares nothing with train.)
#
# ### Why it matters
# Validation and test accuracy should tell us how well the model does on images it has
# **never seen**. On training images they measure how well it *remembers*. To see how
# misleading that is, take a "model" that does nothing but remember: it predicts the label
# of the most similar training image (a 1-nearest-neighbour classifier on the raw pixels).
# No training needed.

# %%
def memoriser_accuracy(memory, images, labels, max_images=1000):
    """Accuracy of predicting, for each image, the label of the closest image in `memory`
    (an ImageSet) by pixel distance; uses at most `max_images` images."""
    memory_x = memory.images.flatten(1).to(device, torch.float32) / 255
    memory_y = memory.labels.to(device)
    images, labels = images[:max_images], labels[:max_images]
    correct = 0
    for x, y in zip(images.split(256), labels.split(256)):
        x = x.flatten(1).to(device, torch.float32) / 255
        nearest = torch.cdist(x, memory_x).argmin(dim=1)
        correct += (memory_y[nearest] == y.to(device)).sum().item()
    return correct / len(labels)


memoriser = {
    "valid (handover)": memoriser_accuracy(bundle.train, *stored(datasets["valid"])),
    "test (handover)": memoriser_accuracy(bundle.train, *stored(datasets["test"])),
    "valid (held out)": memoriser_accuracy(bundle.train, bundle.valid.images, bundle.valid.labels),
    "test (test split)": memoriser_accuracy(bundle.train, bundle.test.images, bundle.test.labels),
}
counts = torch.bincount(bundle.train.labels, minlength=10)
chance = (counts.max() / counts.sum()).item()  # always guessing the most frequent digit

fig_memo, ax = plt.subplots(figsize=(7, 3.6))
ax.bar([name.replace(" (", "\n(") for name in memoriser], list(memoriser.values()), color=["C3", "C3", "C0", "C0"])
ax.axhline(chance, color="0.4", linestyle="--", label=f"chance ({chance:.0%})")
for i, value in enumerate(memoriser.values()):
    ax.text(i, value + 0.02, f"{value:.0%}", ha="center")
ax.set_ylim(0, 1.12)
ax.set_ylabel("accuracy")
ax.set_xlabel("evaluated on")
ax.set_title("A model that only memorises the training images")
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# On the colleague's validation and test sets the memoriser is (almost) perfect; on
# images it has not seen it does far worse. Any model that memorises part of its training
# data gets the same undeserved bonus: with this pipeline, **validation and test numbers
# look better than they are**, and they cannot tell a model that generalises from one that
# memorises. Choosing hyperparameters on them would favour memorising.
#
# ## Add back the augmentation
# For debugging we turned the random rotation off. Now we turn it back on and look at what
# the model actually sees during training (still without shuffling).

# %%
datasets, loaders = handover_data(bundle, shuffle=False, split_randomly=False)  # rotation on
x, y = next(iter(loaders["train"]))
show_grid(x, y, n=16, ncols=8, title="What the model sees: the first training images, rotation on")
plt.show()

# %% [markdown]
# `RandomRotation(180)` turns every image by a random angle between −180° and +180°. Half
# of all training images are turned by more than 90°, closer to upside down than upright.
# For most objects that is harmless; for digits it is not. Look at 6s and 9s:

# %%
def first_of(imageset, digit, n):
    """The first `n` images of class `digit` (an ImageSet)."""
    return imageset.subset(torch.nonzero(imageset.labels == digit).flatten()[:n])


sixes, nines = first_of(bundle.train, 6, n_show), first_of(bundle.train, 9, n_show)
train_transform = datasets["train"].transform  # the colleague's: RandomRotation(180), ToTensor
sixes_augmented = torch.stack([x for x, _ in sixes.to_dataset(train_transform)])

rows_69 = [
    ("6s, as stored", sixes.images, sixes.labels),
    ("the same 6s, turned by 180°: still labelled 6", torch.rot90(sixes.images, 2, dims=(2, 3)), sixes.labels),
    ("9s, as stored", nines.images, nines.labels),
    ("the same 6s, as the training pipeline rotates them: still labelled 6", sixes_augmented, sixes.labels),
]
fig_69, axes = plt.subplots(len(rows_69), 1, figsize=(n_show + 0.4, 6.6))
for ax, (title, images, labels) in zip(axes, rows_69):
    show_grid(images, labels, ncols=n_show, ax=ax, title=title)
fig_69.suptitle("Rotation does not preserve the label: a 6 turned around is a 9")
fig_69.tight_layout()
plt.show()

# %% [markdown]
# **Bug 2: an inappropriate augmentation.** A 6 turned by 180° looks like a 9, yet the
# pipeline still labels it 6. Training then teaches the model that 9-like shapes are 6s
# (and, for turned 9s, that 6-like shapes are 9s): the augmentation makes the task harder,
# and contradicts itself. An augmentation must **preserve the label**. Small tilts (up to
# about 15°) would; rotations up to 180° do not.
#
# Another common augmentation is just as unsuitable here: **vertical shifts**. SVHN's
# label is the digit in the centre of the crop, and every test image has it there, with
# parts of the neighbouring digits of the house number often visible at the sides. Shift
# the crop up or down and the digit loses its top or bottom; would you still be sure of
# every label below?

# %%
examples = bundle.train.images[:n_show]
shift = 32 // 4  # a quarter of the image height, in pixels


def shifted(images, dy):
    """The images moved down by `dy` pixels (up if negative), empty rows filled black."""
    return torch.stack([TF.affine(img, angle=0.0, translate=[0, dy], scale=1.0, shear=[0.0]) for img in images])


rows_shift = [
    ("as stored", examples),
    (f"shifted up by {shift} pixels", shifted(examples, -shift)),
    (f"shifted down by {shift} pixels", shifted(examples, shift)),
]
fig_shift, axes = plt.subplots(len(rows_shift), 1, figsize=(n_show + 0.4, 5.0))
for ax, (title, images) in zip(axes, rows_shift):
    show_grid(images, bundle.train.labels[:n_show], ncols=n_show, ax=ax, title=title)
fig_shift.suptitle("Vertical shifts cut digits off: labels become doubtful")
fig_shift.tight_layout()
plt.show()

# %% [markdown]
# And do we need augmentation at all? Augmentation makes up extra training data; it pays
# off when a model is short of data, i.e. when it does much better on the training images
# than on new ones. The tutorial's verdict for this run: *"Currently we don't seem to be
# limited by data, so we don't need augmented data."* We check that claim with the fixed
# run at the end of this notebook.
#
# ## Your turn: fix the pipeline
# `fixed_data` below starts as a copy of the colleague's pipeline. Fix **both** bugs:
#
# 1. validation and test images must be images the model never trains on: validation held
#    out from the train split, test from the test split (remember what `start` loaded: the
#    summary at the top of the notebook);
# 2. no rotation in the training transform.
#
# Keep the return value as it is: a dict of datasets and a dict of loaders.

# %%
def fixed_data(bundle):
    """The data pipeline with both bugs fixed; returns (datasets, loaders) like `handover_data`."""
    # BEGIN SOLUTION
    train_transform = transforms.ToTensor()  # no rotation: it does not preserve digit labels
    # END SOLUTION
    # BEGIN EXERCISE
    # TODO (bug 2): which transforms belong in training?
    train_transform = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
    # END EXERCISE
    eval_transform = transforms.ToTensor()

    train_data = bundle.train.to_dataset(train_transform)
    # BEGIN SOLUTION
    valid_data = bundle.valid.to_dataset(eval_transform)  # held out from the train split
    test_data = bundle.test.to_dataset(eval_transform)  # the test split
    # END SOLUTION
    # BEGIN EXERCISE
    # TODO (bug 1): where should validation and test images come from?
    eval_data = bundle.train.to_dataset(eval_transform)  # the "train" split, loaded again
    valid_data, test_data = torch.utils.data.random_split(
        eval_data, [0.5, 0.5], generator=torch.Generator().manual_seed(SEED)
    )
    # END EXERCISE

    datasets = {"train": train_data, "valid": valid_data, "test": test_data}
    loaders = {
        "train": DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=True),
        "valid": DataLoader(valid_data, batch_size=BATCH_SIZE),
        "test": DataLoader(test_data, batch_size=BATCH_SIZE),
    }
    return datasets, loaders


fixed_sets, fixed_loaders = fixed_data(bundle)
fixed_transform, _ = find_transform(fixed_sets["train"])
label_safe = check_augmentation(fixed_sets["train"], show=False)  # flags rotations, flips, large shifts
print({name: len(dataset) for name, dataset in fixed_sets.items()}, "| training transform:", fixed_transform)

# %% [markdown]
# **Check:** no image in two splits (compared by hash, as above), validation not taken from
# the test split, and no transform that can change a digit's label.

# %% tags=["exercise"]
splits_ok = check_splits_disjoint(
    {name: stored(dataset)[0] for name, dataset in fixed_sets.items()},
    hint="Validation and test still share images with train. Which of the bundle's splits "
    "has the model never trained on?",
)
valid_held_out = check_splits_disjoint(
    {"your validation set": stored(fixed_sets["valid"])[0], "the test split": bundle.test.images},
    hint="Validation data should be held out from the *train* split: the test split is for the "
    "final report only. Which split of the bundle was held out for validation?",
)
no_rotation = check(
    label_safe.passed,
    "No label-changing transform in training.",
    "Which transform turns a 6 into a 9? It has no place in the training transform.",
    fail_msg=f"The training transform can still change labels: {label_safe.evidence}",
)

# %% tags=["solution"]
assert check_splits_disjoint({name: stored(dataset)[0] for name, dataset in fixed_sets.items()})
assert label_safe.passed, label_safe

# %% [markdown]
# ## Let a tool confirm it
# Looking found both bugs; automatic checks keep them from coming back. `nbhelpers.checks`
# has checks for the data: `split_overlap` hashes the images of every split,
# `augmentation` inspects the training transforms for ones that change a digit's label,
# `eval_augmentation` looks for random transforms on the evaluation splits, and
# `input_statistics` and `labels` check value ranges and classes. Here they are on the
# colleague's pipeline and on yours.

# %%
DATA_CHECKS = ["split_overlap", "labels", "input_statistics", "augmentation", "eval_augmentation"]


def data_checks(datasets, loaders):
    """Run the data checks of `nbhelpers.checks` on one pipeline; returns a CheckReport."""
    return run_all_checks(
        train_loader=loaders["train"],
        eval_loaders={"valid": loaders["valid"], "test": loaders["test"]},
        datasets=datasets,
        only=DATA_CHECKS,
        show=False,
        progress=False,
    )


handover_report = data_checks(*handover_data(bundle))
fixed_report = data_checks(fixed_sets, fixed_loaders)
pd.DataFrame(
    {
        "colleague's pipeline": {r.name: r.status for r in handover_report},
        "your pipeline": {r.name: r.status for r in fixed_report},
    }
).rename_axis("check")

# %% [markdown]
# The evidence and hints for the colleague's pipeline:

# %%
handover_report

# %% [markdown]
# The augmentation check knows vertical shifts too. Here it is on a `RandomAffine` that
# shifts images up or down by up to 30% of their height:

# %%
check_augmentation(bundle.train.to_dataset(transforms.RandomAffine(degrees=0, translate=(0, 0.3))), show=False)

# %% tags=["solution"]
assert {"split_overlap", "augmentation"} <= {r.name for r in handover_report.failed}
assert fixed_report.ok, fixed_report

# %% [markdown]
# `eval_augmentation`, `input_statistics` and `labels` pass on both pipelines: the
# colleague evaluated without random transforms, scaled the images to [0, 1] and kept the
# labels 0..9. They guard against other common bugs.
#
# ## Train with honest evaluation
# The training runs of the earlier notebooks used the colleague's evaluation data. We take
# notebook 04's simple baseline (`zero_grad` fixed, no augmentation, no schedule, evaluated
# once after the last epoch on the colleague's validation and test sets; loaded from the
# cache if you ran notebook 04) and a copy that evaluates on the held-out validation set,
# the real test split and the whole training set, like your fixed pipeline.
#
# {{time:train-data-fixed}}

# %%
# time: train-data-fixed
# as in 04: the fast loader (02); evaluate once, after the last epoch
fast = dict(source=bundle.source, loader="tensor", eval_splits=("valid", "test"), eval_every=budget.epochs)
zero_grad_fixed = handover_config(budget, name="zero-grad-fixed", zero_grad=True, **fast)
simple = dataclasses.replace(zero_grad_fixed, name="simple-baseline", augmentation="none", schedule="none")  # notebook 04
data_fixed = dataclasses.replace(
    simple, name="data-fixed", eval_from_train=False, eval_splits=("train", "valid", "test")
)
print("before:", describe_config(simple))
print("after: ", describe_config(data_fixed))

before = run(simple, data=bundle)
after = run(data_fixed, data=bundle)
steps_differ = max(abs(a - b) for a, b in zip(before.step_losses, after.step_losses))
print(f"largest difference between the two runs' training losses: {steps_differ:.2g}")

# %% [markdown]
# Both runs train the same model in the same way: same training images, same seed, same
# steps (the training losses above agree). Only what we *measure* it on differs. Here is
# that one model, measured on every set (the dashed line is chance level again: always
# guessing the most frequent digit):

# %%
measured = {
    "colleague's valid\n(training images)": before.final("valid_accuracy"),
    "colleague's test\n(training images)": before.final("test_accuracy"),
    "all training\nimages": after.final("train_accuracy"),
    "held-out valid": after.final("valid_accuracy"),
    "real test split": after.final("test_accuracy"),
}
fig_runs, ax = plt.subplots(figsize=(9.5, 3.8))
ax.bar(list(measured), list(measured.values()), color=["C3", "C3", "C3", "C0", "C0"])
ax.tick_params(axis="x", labelsize=9)
ax.axhline(chance, color="0.4", linestyle="--", label=f"chance ({chance:.1%})")
for i, value in enumerate(measured.values()):
    ax.text(i, value + 0.02, f"{value:.1%}", ha="center")
ax.set_ylim(0, max(1.0, max(measured.values()) + 0.1))
ax.set_ylabel("accuracy")
ax.set_title("One trained model, measured on five sets")
ax.legend(loc="upper right")
plt.show()
compare_table([before, after])

# %% [markdown]
# The colleague's "validation" and "test" sets are the two halves of the training set, so
# their accuracies, weighted by size, add up to the accuracy on the whole training set,
# *exactly*:

# %%
sizes = before.extra["split_sizes"]
combined = (
    sizes["valid"] * before.final("valid_accuracy") + sizes["test"] * before.final("test_accuracy")
) / (sizes["valid"] + sizes["test"])
print(f"colleague's valid and test, combined: {combined:.2%}")
print(f"accuracy on all training images:      {after.final('train_accuracy'):.2%}")
print(f"accuracy on the real test split:      {after.final('test_accuracy'):.2%}")

# %% tags=["solution"]
assert after.status == "complete" and len(after.history) >= 1
assert steps_differ == 0 and abs(combined - after.final("train_accuracy")) < 1e-6
assert after.extra["split_sizes"]["test"] == len(bundle.test)

# %% [markdown]
# How far apart the colleague's numbers and the real test split are depends on how much the
# model has memorised; the memoriser above shows how large the difference can get. Either
# way, the colleague's numbers could never have warned us. From now on, validation and test
# measure what they should.
#
# The same numbers check the tutorial's claim about augmentation: *"Currently we don't seem
# to be limited by data, so we don't need augmented data."* More (or augmented) data helps a
# model that fits its training images much better than new ones: it memorises. It cannot
# help a model that does not even fit its training images: that model is held back by its
# training, and more images only make fitting harder (the usual bias/variance reading of a
# learning curve). So first: does the model fit its own training images better than
# chance? Only then does the train-test gap tell us anything; a model that predicts the
# same digit for every image has a gap of zero by construction.

# %%
test_vs_chance = above_chance(after.final("test_accuracy"), len(bundle.test), majority_share(bundle.test.labels))
n_train, n_test = sizes["valid"] + sizes["test"], len(bundle.test)
train_vs_chance = above_chance(after.final("train_accuracy"), n_train, majority_share(bundle.train.labels))
gap = after.final("train_accuracy") - after.final("test_accuracy")
gap_noise = 2 * sum(
    a * (1 - a) / n for a, n in [(after.final("train_accuracy"), n_train), (after.final("test_accuracy"), n_test)]
) ** 0.5
GAP_LIMIT = 0.05  # a train-test gap below 5 points: not limited by data
print(f"training images: {train_vs_chance.evidence}")
print(f"real test split: {test_vs_chance.evidence}")
print(f"train minus test accuracy: {gap:+.1%} (2 standard errors: {gap_noise:.1%})")
if not train_vs_chance.above:
    print(
        "The model does not fit even its own training images better than chance: it is held "
        "back by its training, not by data, so more (augmented) images cannot help yet. (The "
        "train-test gap is no evidence here: a model that guesses one digit has none.)"
    )
elif gap < GAP_LIMIT:
    print(
        f"The model is above chance and does about as well on new images as on its training "
        f"images (gap {gap:+.1%} < {GAP_LIMIT:.0%}): it is not limited by data, so made-up "
        "extra data would not help; what holds it back is its training (notebook 06)."
    )
else:
    print(
        f"The model does {gap:+.1%} better on its training images than on new ones: it "
        "memorises, and more (or augmented) data could help."
    )
not_data_limited = bool(not train_vs_chance.above or gap < GAP_LIMIT)  # underfits, or generalises
data_limit_evidence = (
    f"training images: {train_vs_chance.evidence}: the model does not fit them, so more images cannot help yet"
    if not train_vs_chance.above
    else f"train minus test accuracy {gap:+.1%} (2 standard errors {gap_noise:.1%}, limit {GAP_LIMIT:.0%}); "
    f"real test split: {test_vs_chance.evidence}"
)

# ## Logbook

# %%
shared_valid, n_valid = overlap.loc[0, "also in train"], overlap.loc[0, "images"]
book = Logbook()
book.add(
    "05 data inspection",
    observation=f"With shuffle and random split off, the first validation images are the first "
    f"training images; hashing shows {shared_valid} of {n_valid} validation "
    f"images are training images (test likewise). RandomRotation(180) turns 6s into 9-like "
    "images that keep the label 6.",
    hypothesis="The evaluation data is the train split loaded again, so validation and test "
    "measure memory, not generalisation; the rotation teaches contradicting labels (6/9).",
    result=f"A pure memoriser scores {memoriser['test (handover)']:.0%} on the colleague's test "
    f"set and {memoriser['test (test split)']:.0%} on the real one. "
    f"Fixed pipeline (test split, held-out validation, no rotation): the checks pass; real "
    f"test split: {test_vs_chance.evidence}; train minus test accuracy {gap:+.1%}.",
    notebook="05_data_inspection.ipynb",
    figure=fig_memo,
    runs=[before, after],
    key="05",
)
shared = {row["split"]: (row["also in train"], row["images"]) for _, row in overlap.iterrows()}
all_shared = all(k == n for name, (k, n) in shared.items() if "handover" in name)
none_shared = shared["the data set's own test split"][0] == 0
memo_colleague, memo_real = memoriser["test (handover)"], memoriser["test (test split)"]
memo_noise = 2 * (memo_colleague * (1 - memo_colleague) / 1000 + memo_real * (1 - memo_real) / 1000) ** 0.5
rotation_check = next(r for r in handover_report if r.name == "augmentation")
record_stage(
    "05",
    "data fixed",
    test_accuracy=after.final("test_accuracy"),
    test_split="test",
    run_time_s=after.timings.get("wall_s"),
    claims=[
        Claim(
            "same data for train/valid/test: every image of the colleague's validation and test "
            "sets is a training image",
            bool(all_shared and none_shared),
            "; ".join(f"{name}: {k} of {n} in train" for name, (k, n) in shared.items()),
        ),
        Claim(
            "the colleague's test set rewards memorising: a pure memoriser scores much higher on "
            "it than on the real test split",
            bool(memo_colleague - memo_real > memo_noise),
            f"1-nearest-neighbour memoriser: {memo_colleague:.1%} on the colleague's test set vs "
            f"{memo_real:.1%} on the real one (2 standard errors: {memo_noise:.1%})",
        ),
        Claim(
            "rotations up to 180 degrees are an inappropriate augmentation (they can change a "
            "digit's label)",
            rotation_check.passed is False,
            rotation_check.evidence,
        ),
        Claim(
            "we are not limited by data, so we do not need augmented data",
            not_data_limited,
            data_limit_evidence,
        ),
    ],
)
# the logbook so far, compactly
display(book.to_frame())

# %% [markdown]
# ## Summary
# - **Debugging Strategy IV:** look at each module on its own. Debugging the data pipeline
#   needs no training run: turn off shuffling and the random split, look at every split,
#   then add the augmentation back and look again.
# - **Bug: the same data for train, validation and test.** The evaluation data was the
#   train split loaded again. Such numbers measure memory, not generalisation.
# - **Bug: inappropriate augmentation.** Rotations up to 180° turn a 6 into a 9 and keep
#   its label; vertical shifts cut digits off. Whether the model is short of data at all, the
#   train-test gap above says (computed, and only for a model above chance).
# - Fingerprints (hashes) count shared images; `nbhelpers.checks` now guards both bugs.
#
# **Next:** 06 reads the run's instruments with Cockpit and finds what is still wrong with
# the learning rate.
