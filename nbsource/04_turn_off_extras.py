# %% [markdown]
# # 04 · Turn off the extras
#
# With `zero_grad` fixed (notebook 03), the network starts to learn, but slowly. The
# colleague's run still has two "bells and whistles" switched on: random **rotations** of
# the training images (data augmentation) and an exponential **learning-rate schedule**.
# The tutorial's *Debugging Strategy III*: start with a simple thing that works, and add
# the fancy stuff on top only once it does. So we turn both off and compare.
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
import time

import matplotlib.pyplot as plt
from torchvision import transforms

from nbhelpers.data import make_loader
from nbhelpers.experiment import RandomRotationBatch, compare_table, describe_config, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.notebook import record_stage, start
from nbhelpers.plots import plot_runs, plot_step_losses
from nbhelpers.selfcheck import check

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
print(f"augmentation: {fixed.augmentation!r}, schedule: {fixed.schedule!r} (gamma {fixed.gamma} per {fixed.schedule_step})")

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
# Three runs: everything on (after the `zero_grad` fix), only the augmentation off, and the
# simple baseline with both extras off. Each run is cached, so re-running this cell is
# instant. The curves show the loss and accuracy measured on the training batches as they
# were trained (rotated ones, where the rotation is on); the table's validation accuracy
# compares all three on the same unrotated images.

# %%
no_augmentation = dataclasses.replace(fixed, name="no-augmentation", augmentation="none")

runs = [run(cfg, data=bundle) for cfg in (fixed, no_augmentation, simple)]
names = ["rotation + schedule", "schedule only", "simple baseline"]

fig_runs = plot_runs(runs, split="running", names=names)
fig_runs.suptitle("Turning off the extras: training loss and accuracy per epoch")
fig_runs.tight_layout()
plt.show()
compare_table(runs, split="valid")

# %% [markdown]
# The training loss of every step tells the same story in more detail:

# %%
fig_steps = plot_step_losses(runs, names=names)
fig_steps.axes[0].set_title("Mini-batch training loss")
plt.show()

# %% [markdown]
# ## Is the augmentation worth its time?
# Rotating every training image costs time on every step. How much? We time just the data
# pipeline (no model), with and without the rotation, in two versions: the colleague's
# per-image PIL pipeline and the fast device-resident loader.

# %%
def seconds_per_epoch(loader, n_batches, repeats=3):
    """Time to draw `n_batches` batches, scaled to a whole epoch (seconds; best of `repeats`)."""
    next(iter(loader))  # warm-up: the first batch pays one-off costs
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _, (x, _) in zip(range(n_batches), loader):
            x.sum().item()  # wait until the batch really exists (matters on a GPU)
        best = min(best, time.perf_counter() - t0)
    return best / n_batches * len(loader)


n_batches = min(budget.profile_steps, len(make_loader(bundle.train, budget.batch_size, shuffle=True)))
rotate = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
timings = {
    "PIL, rotation": make_loader(bundle.train, budget.batch_size, shuffle=True, kind="pil", transform=rotate),
    "PIL, none": make_loader(bundle.train, budget.batch_size, shuffle=True, kind="pil"),
    "device, rotation": make_loader(
        bundle.train, budget.batch_size, shuffle=True, device=device, augment=RandomRotationBatch(180)
    ),
    "device, none": make_loader(bundle.train, budget.batch_size, shuffle=True, device=device),
}
timings = {name: seconds_per_epoch(loader, n_batches) for name, loader in timings.items()}

fig_time, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(timings), list(timings.values()), color=["C3", "C0", "C3", "C0"])
ax.set_xlabel("seconds per epoch, data loading only")
ax.set_title(f"Cost of the rotation ({len(bundle.train)} training images)")
ax.invert_yaxis()
ax.grid(axis="x", alpha=0.3)
plt.show()
for kind in ("PIL", "device"):
    saved = timings[f"{kind}, rotation"] - timings[f"{kind}, none"]
    print(f"{kind}: turning the rotation off saves {saved:.2f} s per epoch ({saved / timings[f'{kind}, rotation']:.0%} of data loading)")

wall = {name: r.timings.get("wall_s") for name, r in zip(names, runs)}
print("whole runs, as measured when each was trained (s):", {k: round(v, 1) for k, v in wall.items() if v is not None})

# %% [markdown]
# ## What did we learn?
# **Augmentation.** We are not short of data here, so the rotations are not needed, and they
# cost time on every step (the bar chart). Notebook 05 shows they are even harmful: rotating
# a digit by up to 180° turns a 6 into a 9.
#
# **Schedule.** `ExponentialLR` with `gamma = 1.001`, stepped after every batch, makes the
# learning rate *grow*:

# %%
steps = budget.epochs * len(make_loader(bundle.train, budget.batch_size, shuffle=True))
print(f"this budget: {steps} steps, learning rate x {fixed.gamma**steps:.2f} by the end")
print(f"the handover: 10 epochs of 287 steps, learning rate x {fixed.gamma**2870:.1f} by the end")

# %% [markdown]
# A schedule that raises the learning rate 17-fold is unusual (schedules normally *lower*
# it), and it makes every result depend on how long we train. Off it goes.
#
# **A clue.** If the three curves lie almost on top of each other, step by step (they do on
# the small budgets), the network's outputs hardly depend on the images yet: the
# mini-batch loss is set by which digits happen to be in the batch, so rotating the images
# or not changes nothing. The network has barely started to learn: something else still
# holds it back (notebook 06 finds out what). Where the run with the schedule does better
# (possible on the full budget), ask why a *growing* learning rate would help.
#
# From now on we start from the **simple baseline**: no augmentation, no schedule.

# %% tags=["solution"]
assert all(r.status == "complete" for r in runs)
assert all(len(r.history) == budget.epochs for r in runs)

# %% [markdown]
# ## Logbook

# %%
fixed_run, no_aug_run, simple_run = runs
book = Logbook()
book.add(
    "04 turn off extras",
    observation="After the zero_grad fix the run trains slowly; it still uses random rotations "
    "of 0-180 degrees and a learning rate that grows by a factor 1.001 every step.",
    hypothesis="Start simple: the extras are not needed to learn and cost time.",
    result=f"Simple baseline: valid accuracy {simple_run.final('valid_accuracy'):.1%} "
    f"(with both extras {fixed_run.final('valid_accuracy'):.1%}); the rotation costs "
    f"{timings['PIL, rotation'] - timings['PIL, none']:.1f} s per epoch in the PIL pipeline.",
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
)

# %% [markdown]
# ## Summary
# - **Debugging Strategy III:** start with a simple thing that works, then add fancy things
#   (augmentations, schedules) on top, one at a time, measuring each.
# - Turned off: the rotation augmentation (faster, and not needed) and the learning-rate
#   schedule.
# - Runs are now configurations: `dataclasses.replace` changes one switch, `run` trains or
#   loads from the cache, `plot_runs` compares.
#
# **Next:** 05 looks at the data itself (Debugging Strategy IV).
