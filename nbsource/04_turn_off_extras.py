# %% [markdown]
# # 04 · Turn off the extras
#
# With `zero_grad` fixed (notebook 03), each step follows the current gradient. The
# colleague's run still has two "bells and whistles" switched on: random **rotations** of
# the training images (data augmentation) and an exponential **learning-rate schedule**.
# The tutorial's *Debugging Strategy III*: start with a simple thing that works, and add
# the fancy stuff on top only once it does. So we turn both off and compare.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/04_turn_off_extras.ipynb)
#
# **You will**
# - describe a run as a configuration and change it with a few switches;
# - turn off the augmentation and the learning-rate schedule;
# - compare runs side by side and measure the time saved;
# - decide which extras the simple baseline keeps.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0

# %%
import dataclasses
import statistics
import time

import matplotlib.pyplot as plt
import torch
from torchvision import transforms

from nbhelpers.data import make_loader
from nbhelpers.experiment import RandomRotationBatch, compare_table, describe_config, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.plots import add_reference_lines, plot_runs, plot_step_losses
from nbhelpers.profiling import time_raw_steps
from nbhelpers.selfcheck import check
from nbhelpers.stats import above_chance, label_entropy, majority_share

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

# %% [markdown]
# ## A run as a configuration
# From here on we stop copying training code around. A run is described by a
# **configuration**: one object with every switch that decides it (data, model, optimizer,
# schedule, augmentation, ...). `handover_config(budget)` is the colleague's run with all its
# faults; we switch on the fixes we have so far: `zero_grad` (notebook 03) and the fast data
# loader (notebook 02), and we evaluate on the validation and test sets once, at the end. This is the same run as the fixed one in notebook 03, so if you
# ran that notebook, it is loaded from the cache.

# %%
# as in 03: the fast loader (02); evaluate valid and test once, after the last epoch
fast = dict(source=bundle.source, loader="tensor", eval_splits=("valid", "test"), eval_every=budget.epochs)
fixed = handover_config(budget, name="zero-grad-fixed", zero_grad=True, **fast)
print(describe_config(fixed))
print(f"augmentation: {fixed.augmentation!r}, schedule: {fixed.schedule!r}")

# %% [markdown]
# `dataclasses.replace` makes a copy with some fields changed; everything else stays the
# same, so two runs differ in exactly what we changed.
#
# ## Your turn: the simple baseline
# Make `simple`, a copy of `fixed` with **no augmentation** and **no learning-rate
# schedule**. The valid values are listed in the configuration's docstring
# (`help(type(fixed))`): `augmentation` is `"none"` or `"rotate180"`, `schedule` is
# `"none"`, `"exponential"` or `"cosine"`.

# %%
simple = dataclasses.replace(
    fixed,
    name="simple-baseline",
    # BEGIN SOLUTION
    augmentation="none",
    schedule="none",
    # END SOLUTION
    # BEGIN EXERCISE
    # ... set the two switches here
    # END EXERCISE
)
print(describe_config(simple))

# %% tags=["exercise"]
check(simple.augmentation == "none", "Augmentation is off.", "Which field holds the rotation? Set it to 'none'.")
check(simple.schedule == "none", "The schedule is off.", "Which field holds the learning-rate schedule?")

# %% tags=["solution"]
assert simple.augmentation == "none" and simple.schedule == "none"
assert dataclasses.replace(simple, augmentation=fixed.augmentation, schedule=fixed.schedule, name=fixed.name) == fixed

# %% [markdown]
# ## Compare the runs
# Two runs: everything on (after the `zero_grad` fix) and the simple baseline with both
# extras off. Each run is cached, so re-running this cell is instant. The curves show the
# loss and accuracy measured on the training batches as they were trained (rotated ones,
# where the rotation is on); the table's validation accuracy compares both on the same
# unrotated images. The grey lines are what a model that ignores the image scores (as in
# notebook 03): chance level and the label entropy.
#
# {{time:train-baseline}}

# %%
# time: train-baseline
runs = [run(cfg, data=bundle) for cfg in (fixed, simple)]
names = ["rotation + schedule", "simple baseline"]
fixed_run, simple_run = runs

fig_runs = plot_runs(runs, split="running", names=names)
add_reference_lines(fig_runs, chance=majority_share(bundle.train.labels), entropy=label_entropy(bundle.train.labels))
fig_runs.suptitle("Turning off the extras: training loss and accuracy per epoch")
fig_runs.tight_layout()
plt.show()
compare_table(runs, split="valid")

# %% [markdown]
# Does the simple baseline give anything up? Both runs are measured on the same validation
# images, so the difference of their accuracies can be compared with its statistical noise
# (the standard error of a difference of two proportions on this many images).

# %%
n_valid = len(bundle.valid)
acc_simple, acc_fixed = simple_run.final("valid_accuracy"), fixed_run.final("valid_accuracy")
noise = 2 * ((acc_simple * (1 - acc_simple) + acc_fixed * (1 - acc_fixed)) / n_valid) ** 0.5
no_worse = bool(acc_simple >= acc_fixed - noise)
simple_evidence = (
    f"valid accuracy {acc_simple:.1%} without the extras vs {acc_fixed:.1%} with them, on "
    f"{n_valid:,} images (2 standard errors of the difference: {noise:.1%})"
)
print(simple_evidence)
simple_vs_chance = above_chance(acc_simple, n_valid, majority_share(bundle.valid.labels))
print(
    "The simple baseline does no worse than the run with the extras."
    if no_worse
    else "The run with the extras does better than the simple baseline, by more than the noise: "
    "one of the two extras helped this run learn. Keep that in mind (notebook 06 looks into it)."
)
print(
    f"Simple baseline against chance: {simple_vs_chance.evidence}: "
    + ("above chance." if simple_vs_chance.above else "no better than ignoring the images.")
)

# %% [markdown]
# The training loss of every step tells the same story in more detail:

# %%
fig_steps = plot_step_losses(runs, names=names)
fig_steps.axes[0].set_title("Mini-batch training loss")
plt.show()

# %% [markdown]
# ## Is the augmentation worth its time?
# Rotating every training image costs time on every step. How much? The whole runs above
# were trained at different moments, under whatever else the machine was doing, so their
# times do not compare. Here we measure like with like, in one cell: the data pipeline alone
# (no model), with and without the rotation, in two versions (the colleague's per-image PIL
# pipeline and the fast device-resident loader), in interleaved rounds (A, B, C, D, A, B,
# ...) so that a change in the machine's load hits all of them alike, and keep the median of
# each. For scale, we also time the model's own training step (forward, backward, optimizer
# step on one resident batch).
#
# {{time:time-rotation}}

# %%
# time: time-rotation
ROUNDS = 5  # interleaved rounds; each setup's median is kept


def seconds_per_epoch(loader, n_batches):
    """Time to draw `n_batches` batches, scaled to a whole epoch (seconds, one measurement)."""
    t0 = time.perf_counter()
    for _, (x, _) in zip(range(n_batches), loader):
        x.sum().item()  # wait until the batch really exists (matters on a GPU)
    return (time.perf_counter() - t0) / n_batches * len(loader)


rotate = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
loaders = {
    "PIL, rotation": make_loader(bundle.train, budget.batch_size, shuffle=True, kind="pil", transform=rotate),
    "PIL, none": make_loader(bundle.train, budget.batch_size, shuffle=True, kind="pil"),
    "device, rotation": make_loader(
        bundle.train, budget.batch_size, shuffle=True, device=device, augment=RandomRotationBatch(180)
    ),
    "device, none": make_loader(bundle.train, budget.batch_size, shuffle=True, device=device),
}
n_batches = min(budget.profile_steps, len(loaders["device, none"]))
for loader in loaders.values():
    next(iter(loader))  # warm-up: the first batch pays one-off costs
rounds = {name: [] for name in loaders}
for _ in range(ROUNDS):
    for name, loader in loaders.items():
        rounds[name].append(seconds_per_epoch(loader, n_batches))
timings = {name: statistics.median(values) for name, values in rounds.items()}
model = build_cnn("tanh", "none", width=budget.width).to(device)
step = time_raw_steps(model, torch.optim.Adam(model.parameters(), lr=1e-5), budget.batch_size, device=device)
step_epoch_s = step["step_s"] * len(loaders["device, none"])  # the model's own work per epoch

fig_time, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(timings), list(timings.values()), color=["C3", "C0", "C3", "C0"])
for i, values in enumerate(rounds.values()):
    ax.plot(values, [i] * len(values), "k|", ms=10)
ax.set_xlabel("seconds per epoch, data loading only")
ax.set_title(f"Cost of the rotation ({len(bundle.train)} images; bar: median of {ROUNDS} rounds, |: each round)")
ax.invert_yaxis()
ax.grid(axis="x", alpha=0.3)
plt.show()
cost = {}
for kind in ("PIL", "device"):
    with_rotation, without = rounds[f"{kind}, rotation"], rounds[f"{kind}, none"]
    cost[kind] = timings[f"{kind}, rotation"] - timings[f"{kind}, none"]
    slower = sum(a > b for a, b in zip(with_rotation, without))
    print(
        f"{kind}: the rotation costs {cost[kind]:.2f} s per epoch (median of {ROUNDS} rounds; slower "
        f"in {slower} of {ROUNDS} rounds), {cost[kind] / (timings[f'{kind}, rotation'] + step_epoch_s):.0%} "
        f"of an epoch's data loading and training steps ({step_epoch_s:.1f} s of steps per epoch)"
    )
# the runs above use the device loader: is it slower with the rotation in every round?
rotation_slower = all(a > b for a, b in zip(rounds["device, rotation"], rounds["device, none"]))
rotation_evidence = (
    f"device loader: {cost['device']:+.2f} s per epoch with the rotation (median of {ROUNDS} "
    f"interleaved rounds, slower in {sum(a > b for a, b in zip(rounds['device, rotation'], rounds['device, none']))} "
    f"of {ROUNDS}), {cost['device'] / (timings['device, rotation'] + step_epoch_s):.1%} of an epoch; "
    f"PIL pipeline: {cost['PIL']:+.2f} s"
)

# %% [markdown]
# ## What did we learn?
# **Augmentation.** The rotation costs time on every step (the bar chart; how much of a
# whole epoch is printed above, measured here). Is it needed at all? Notebook 05 looks at
# what the rotation does to the images.
#
# **Schedule.** `ExponentialLR` with `gamma = 1.001`, stepped after every batch, changes the
# learning rate at every one of the run's steps, so every result depends on how long we
# train, and any change we try interacts with it. A simple baseline keeps the learning rate
# constant: off it goes. (What this schedule does to the run, notebook 06 reads off the
# run's own instruments.)
#
# **A clue.** Read the two verdicts printed under the comparison of the runs. A network at
# chance level and at the label entropy (the grey lines) has learned nothing about the
# images, whatever its extras, and if an extra made the difference, that tells us where to
# look next. Notebook 06 reads the run's instruments to find out.
#
# From now on we start from the **simple baseline**: no augmentation, no schedule.

# %% tags=["solution"]
assert all(r.status == "complete" for r in runs)
assert all(len(r.history) == budget.epochs for r in runs)

# %% [markdown]
# ## Logbook

# %%
book = Logbook()
book.add(
    "04 turn off extras",
    observation="After the zero_grad fix the run still uses random rotations of 0-180 degrees "
    "and an exponential learning-rate schedule (gamma 1.001 per step).",
    hypothesis="Start simple: the extras are not needed to learn and cost time.",
    result=f"Simple baseline: {simple_evidence}. The rotation costs {cost['device']:.2f} s per "
    f"epoch in the device loader and {cost['PIL']:.2f} s in the PIL pipeline (medians of "
    f"{ROUNDS} interleaved rounds).",
    notebook="04_turn_off_extras.ipynb",
    figure=fig_runs,
    runs=runs,
    key="04",
)
record_stage(
    "04",
    "extras off",
    test_accuracy=simple_run.final("test_accuracy"),
    test_split="colleague",
    run_time_s=simple_run.timings.get("wall_s"),
    claims=[
        # The tutorial's claim of this stage. How well the simple baseline learns is no claim
        # of the tutorial: it is printed above and kept in the logbook, for notebook 06.
        Claim("training is faster without the augmentation", rotation_slower, rotation_evidence),
    ],
)
# the logbook so far, compactly
display(book.to_frame())

# %% [markdown]
# ## Summary
# - **Debugging Strategy III:** start with a simple thing that works, then add fancy things
#   (augmentations, schedules) on top, one at a time, measuring each.
# - Turned off: the rotation augmentation and the learning-rate schedule; what each costs
#   or gives is measured above and recorded as the stage's claims.
# - Runs are now configurations: `dataclasses.replace` changes one switch, `run` trains or
#   loads from the cache, `plot_runs` compares.
#
# **Next:** 05 looks at the data itself (Debugging Strategy IV).
