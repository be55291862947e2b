# %% [markdown]
# # 02 · Speed up: where does the time go?
#
# One run of the colleague's notebook took about 25 minutes on a CPU and 10 minutes on a
# GPU. Debugging means running the code again and again, so the first job is to make a run
# fast enough to iterate: the tutorial's *Debugging Strategy I*. We will not guess what is
# slow. We **measure** where the time goes, then change one thing at a time and measure
# again, here on your machine. At the end you put together a fast *debug configuration*
# for the next notebooks.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/02_speed_up.ipynb)
#
# **You will**
# - profile a few training steps and split their time into data loading,
#   forward/backward/step, evaluation and diagnostics (Cockpit);
# - try each speed lever on its own and measure what it gains: fewer epochs, less
#   evaluation, Cockpit off or lighter, a larger batch, faster data loading, the GPU,
#   mixed precision;
# - see why a lever only helps when it attacks the slowest phase;
# - choose your debug configuration and check that it is several times faster.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0

# %%
import dataclasses
import os

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from torchvision import transforms

from nbhelpers.cockpit_tools import CockpitHook
from nbhelpers.data import TensorLoader
from nbhelpers.experiment import RandomRotationBatch, describe_config, handover_config
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import record_stage, start
from nbhelpers.profiling import (
    PHASES,
    Autocast,
    batch_size_sweep,
    compare_profiles,
    plot_comparison,
    profile_training,
)

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle
STEPS = budget.profile_steps  # training steps timed per measurement
EVAL_BATCHES = max(1, STEPS // 3)  # evaluation batches timed per split (scaled up to the split)
print(f"Each measurement times {STEPS} training steps (after one warm-up step).")

# %% [markdown]
# ## The handover, with its speed levers as switches
#
# Below is the colleague's setup from notebook 01 (same data pipeline, model, optimizer,
# schedule and evaluation), written as one function. Every argument that changes the
# *speed* is a switch in `HANDOVER`; its values are the colleague's. Nothing that changes
# *what* is learned is touched here (we fix the bugs from notebook 03 on).
#
# The evaluation data are the colleague's too: the train split again, plus its two halves
# as "valid" and "test". So every epoch evaluates **twice as many images as it trains on**.

# %%
HANDOVER = dict(
    device=str(device),  # where the model trains
    loader="pil",  # "pil": one PIL image + transforms per sample (the handover); "tensor": TensorLoader
    rotate=True,  # the handover's RandomRotation(180) augmentation
    num_workers=0,  # DataLoader worker processes ("pil" only)
    pin_memory=False,  # page-locked host memory, faster copies to a GPU ("pil" only)
    batch_size=budget.batch_size,  # the colleague used 256
    eval_splits=("train", "valid", "test"),  # evaluated ...
    eval_every=1,  # ... after every epoch (0: never)
    eval_batch_size=budget.batch_size,
    cockpit="cheap",  # Cockpit preset: "cheap" = the colleague's instruments, "basic", or None (off)
    epochs=budget.epochs,  # the colleague used 10
    channels_last=False,  # memory layout of images and weights (measure it: GPU and many CPUs)
    bf16=False,  # mixed precision with bfloat16 (a GPU lever)
)

half = len(bundle.train) // 2
perm = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(SEED))
EVAL_SETS = {  # the colleague's evaluation data: the train split, loaded again and halved
    "train": bundle.train,
    "valid": bundle.train.subset(perm[:half], "valid"),
    "test": bundle.train.subset(perm[half:], "test"),
}


def make_setup(levers):
    """Model, optimizer, schedule, loaders and hooks of the handover with `levers` applied."""
    lv = {**HANDOVER, **levers}
    dev = torch.device(lv["device"])
    torch.manual_seed(SEED)
    model = build_cnn("tanh", "none").to(dev)  # the handover CNN of notebook 01
    if lv["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.001)
    if lv["bf16"]:
        model = Autocast(model, torch.bfloat16, dev.type)  # same parameters, bf16 arithmetic
    if lv["loader"] == "pil":
        steps = [transforms.RandomRotation(180)] if lv["rotate"] else []
        train_tf = transforms.Compose([*steps, transforms.ToTensor()])

        def loader(split, batch_size, shuffle, transform):
            return torch.utils.data.DataLoader(
                split.to_dataset(transform),
                batch_size=batch_size,
                shuffle=shuffle,
                num_workers=lv["num_workers"],
                pin_memory=lv["pin_memory"],
                persistent_workers=lv["num_workers"] > 0,
            )

        train_loader = loader(bundle.train, lv["batch_size"], True, train_tf)
        eval_loaders = {
            s: loader(EVAL_SETS[s], lv["eval_batch_size"], False, transforms.ToTensor())
            for s in lv["eval_splits"]
        }
    else:  # the whole split sits on the device; batches are gathered and scaled there
        rotate = RandomRotationBatch(180, seed=SEED) if lv["rotate"] else None
        train_loader = TensorLoader(
            bundle.train.images, bundle.train.labels, lv["batch_size"], device=dev,
            seed=SEED, augment=rotate, channels_last=lv["channels_last"],
        )  # fmt: skip
        eval_loaders = {
            s: TensorLoader(
                EVAL_SETS[s].images, EVAL_SETS[s].labels, lv["eval_batch_size"], shuffle=False,
                device=dev, channels_last=lv["channels_last"],
            )  # fmt: skip
            for s in lv["eval_splits"]
        }
    hooks = [CockpitHook(lv["cockpit"])] if lv["cockpit"] else []
    return lv, model, optimizer, scheduler, train_loader, eval_loaders, hooks


PROFILES = {}  # label -> TimingProfile, for the final comparison


def measure(label, steps=STEPS, **levers):
    """Time `steps` training steps (and a part of the evaluation) of the handover with `levers`."""
    lv, model, optimizer, scheduler, train_loader, eval_loaders, hooks = make_setup(levers)
    prof = profile_training(
        model, optimizer, train_loader, steps=steps, eval_loaders=eval_loaders,
        eval_every=lv["eval_every"], eval_max_batches=EVAL_BATCHES, hooks=hooks, scheduler=scheduler,
        zero_grad=False, epochs=lv["epochs"], label=label,
    )  # fmt: skip
    PROFILES[label] = prof
    print(prof.summary())
    return prof


# %% [markdown]
# ## Where does the time go?
#
# `profile_training` runs a few steps with the training loop of `nbhelpers.train` and
# times each **phase**. Evaluation is timed on a few batches per split and scaled up to the
# whole split. Then everything is projected to one epoch. On a GPU the profiler waits for
# the GPU at every phase boundary: GPU work runs asynchronously, and without waiting, its
# time would land in whichever phase happens to read a result first.

# %%
handover = measure("handover")
display(handover.table().round(2))
fig_handover = handover.plot()
plt.show()
for note in handover.notes:
    print("Note:", note)

# %% [markdown]
# Read the chart before going on: **which phase is the largest on your machine?** That is
# where a speed-up must come from. If a phase takes a share *p* of the time, removing it
# entirely makes the run at most 1 / (1 − *p*) times faster (Amdahl's law): a lever that
# attacks a 10% phase can never give more than 1.1×.
#
# Cockpit runs the backward pass inside its own context, so its "diagnostics" bar holds
# the backward pass too. Its real cost is the difference between Cockpit on and off,
# which we measure below. (With only a few timed steps, Cockpit's one-off set-up and its
# Alpha step, which runs every 10th step, weigh more than they would over a whole epoch.)
#
# ## Lever 1: fewer epochs (or steps)
#
# The time of a run is epochs × time per epoch. While debugging we do not need the final
# accuracy, only to see whether the loss falls; half the epochs, or even a few hundred
# steps (`max_steps` in `nbhelpers.train.train`), are enough for that.
# This lever needs no new measurement: `project` scales the handover's run time exactly.

# %%
DEBUG_EPOCHS = max(1, budget.epochs // 2)
fewer = f"fewer epochs ({DEBUG_EPOCHS} of {budget.epochs})"
PROFILES[fewer] = handover.project(fewer, epochs=DEBUG_EPOCHS)
print(f"handover: {budget.epochs} epochs x {handover.time_per_epoch_s:.1f} s = {handover.time_per_run_s:.0f} s")
print(f"debug:    {DEBUG_EPOCHS} epochs x {handover.time_per_epoch_s:.1f} s = {DEBUG_EPOCHS * handover.time_per_epoch_s:.0f} s")

# %% [markdown]
# ## Lever 2: evaluate less
#
# After every epoch the colleague evaluates the train split and both of its halves: twice
# as many images as one epoch trains on. For debugging, the validation split alone is
# enough, or none at all: the **mini-batch training loss** that the loop records at every
# step already tells whether training works.
#
# The profiler timed each split on its own, and evaluation does not change the training
# phases, so the handover's measurement already tells what these two options cost:

# %%
print({split: f"{s:.1f} s" for split, s in handover.eval_split_s.items()}, "per full evaluation")
for label, kwargs in [("evaluate valid only", dict(eval_splits=("valid",))), ("no evaluation", dict(eval_every=0))]:
    PROFILES[label] = handover.project(label, **kwargs)
    print(PROFILES[label].summary())
no_eval = PROFILES["no evaluation"]

# %% [markdown]
# ## Lever 3: Cockpit off, or tracking less
#
# Cockpit computes extra quantities during the backward pass. The colleague's instruments
# (the preset `"cheap"`) need per-example gradients for Alpha every 10 steps; `"basic"`
# keeps only the loss, gradient norm, distance and update size, which cost almost nothing.
# Notebook 06 turns Cockpit back on when we want to read its instruments.

# %%
cockpit_off = measure("Cockpit off", cockpit=None)
cockpit_basic = measure("Cockpit basic", cockpit="basic")
print(f"Cockpit's net cost: {handover.time_per_epoch_s - cockpit_off.time_per_epoch_s:.1f} s per epoch")

# %% [markdown]
# ## Lever 4: a larger batch
#
# First the model **in isolation**: forward, backward and optimizer step on one fixed batch
# that already sits on the device, so no data loading can slow it down. We try batch sizes
# by doubling. On a GPU we go on until the memory runs out (or half of it is used, to
# leave room for the data and evaluation).

# %%
cuda = device.type == "cuda"
sweep = batch_size_sweep(
    lambda: build_cnn("tanh", "none"),
    device=device,
    start=max(8, budget.batch_size // 4),
    max_batch_size=4096 if cuda else 2 * budget.batch_size,
    steps=max(1, STEPS // 3),
)
display(sweep.round(1))
ok = sweep[sweep["status"] == "ok"]
fig_sweep, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(ok["batch size"], ok["images/s"], "o-", label="forward + backward + step")
ax.axvline(budget.batch_size, color="0.5", linestyle="--", label=f"handover ({budget.batch_size})")
ax.set_xscale("log", base=2)
ax.set_xlabel("batch size")
ax.set_ylabel("images/s")
ax.set_title(f"Model alone: throughput by batch size on {device.type}")
ax.legend()
plt.show()
print(f"largest batch that ran: {sweep.attrs['largest_ok']}, fastest: {sweep.attrs['best']}")

# %% [markdown]
# **On a GPU** throughput usually grows with the batch: thousands of cores need many
# images to be busy, and fixed costs per step (launching kernels, the optimizer step over
# all 0.55 M weights) are shared by more images. **On a CPU** the few cores are already
# busy with small batches, so the curve usually flattens early (only the fixed costs per
# step are shared), and it can drop once the activations no longer fit into the caches.
# Compare with your curve: is the gain worth it? A larger batch is not free for the
# optimisation either: there are fewer steps per epoch, and the learning rate usually has
# to change with it.
#
# Now the fastest batch size in the whole pipeline (capped at half the training set):

# %%
big_batch = int(min(sweep.attrs["best"], len(bundle.train) // 2))
big = measure(f"batch size {big_batch}", batch_size=big_batch, eval_batch_size=big_batch)

# %% [markdown]
# ## Lever 5: faster data loading
#
# The colleague's pipeline builds a PIL image per sample, rotates it and converts it back
# to a tensor, in the training process, one image after the other. Two ways out:
#
# - **worker processes** (`num_workers`) prepare the next batches in parallel; on a GPU,
#   **pinned memory** makes the copy to the GPU faster. Workers need free CPU cores: on a
#   machine with two cores they compete with the training itself.
# - the **TensorLoader** (`nbhelpers.data`): the whole split sits on the device as one
#   uint8 tensor; a batch is a single indexing operation, and the rotation runs on the
#   whole batch at once (`RandomRotationBatch`, the same augmentation on the device).

# %%
workers = min(4, os.cpu_count() or 1)
print(f"{os.cpu_count()} CPU cores here; trying {workers} workers.")
with_workers = measure(f"{workers} workers" + (" + pinned" if cuda else ""), num_workers=workers, pin_memory=cuda)
tensor_loader = measure("TensorLoader", loader="tensor")

# %% [markdown]
# ## Lever 6: the GPU, the memory layout, and mixed precision
#
# A GPU does the convolutions of this model many times faster than a CPU. Two more levers
# speed up the arithmetic itself: the **channels_last** memory layout (each pixel's channels
# next to each other), which many convolution kernels prefer, on GPUs and on modern CPUs
# alike; and, on a GPU, **bfloat16 mixed precision** (`torch.autocast`): convolutions and
# matrix products in 16 bits, weights and optimizer in 32 bits. Whether a layout helps
# depends on the hardware and the library versions, so we measure it here rather than
# trust a rule of thumb.

# %%
FAST = dict(loader="tensor", cockpit=None, eval_splits=("valid",))
if cuda:
    measure("handover on the CPU", steps=min(STEPS, 10), device="cpu")  # fewer steps: it is slow
fast = measure("fast pipeline", **FAST)
fast_cl = measure("fast + channels_last", **FAST, channels_last=True)
print(f"channels_last: {fast.time_per_epoch_s / fast_cl.time_per_epoch_s:.2f}x per epoch on {device}")
if cuda and torch.cuda.is_bf16_supported():
    measure("fast + bf16", **FAST, bf16=True)
elif cuda:
    print("This GPU has no fast bfloat16; skipping mixed precision.")
else:
    print(
        "No GPU here, so mixed precision is skipped: on most CPUs bfloat16 arithmetic is slower "
        "than float32. In Colab: Runtime -> Change runtime type -> GPU."
    )

# %% [markdown]
# ## All levers side by side
#
# Each row changes **one** thing against the handover (the "fast" rows are the exception:
# they combine the loader, evaluation and Cockpit levers). The speed-up is the handover's time divided by the row's time; *per run*
# also counts the epochs.

# %%
table = compare_profiles(PROFILES, baseline="handover")
display(table[[*PHASES, "epoch (s)", "speed-up per epoch"]].round(2))
fig_levers = plot_comparison(table, per="epoch")
plt.show()

# %% [markdown]
# Compare with the handover's chart above: the levers that paid off are the ones that
# removed a large phase. On a CPU the model's own arithmetic is a big share: no pipeline
# lever touches it, only a faster way of doing the arithmetic (channels_last, where it
# helped) or a GPU. On a GPU the arithmetic is fast, so the data pipeline, evaluation and
# Cockpit are nearly all that is left.
#
# ## Exercise: your debug configuration
#
# Pick the levers for the runs you will do while debugging. Put them into `MY_LEVERS`
# (any keys of `HANDOVER`; what you leave out stays as the colleague had it). It should be
# at least **3× faster per run** than the handover, and at least 1.5× **per epoch** (so not
# only by cutting epochs), while it still trains the same model on the same data.

# %%
MY_LEVERS = dict(
    # BEGIN SOLUTION
    loader="tensor",
    eval_splits=("valid",),
    cockpit=None,
    epochs=DEBUG_EPOCHS,
    # END SOLUTION
    # BEGIN EXERCISE
    # loader="pil",  # uncomment the levers you want and change their values
    # eval_splits=("train", "valid", "test"),
    # cockpit="cheap",
    # epochs=budget.epochs,
    # END EXERCISE
)
mine = measure("my debug configuration", **MY_LEVERS)
speed_up_run = handover.time_per_run_s / mine.time_per_run_s
speed_up_epoch = handover.time_per_epoch_s / mine.time_per_epoch_s
print(f"speed-up vs the handover: {speed_up_run:.1f}x per run, {speed_up_epoch:.1f}x per epoch")

# %% tags=["exercise"]
from nbhelpers.selfcheck import check

check(
    speed_up_run >= 3 and speed_up_epoch >= 1.5,
    f"{speed_up_run:.1f}x faster per run and {speed_up_epoch:.1f}x per epoch. Well done!",
    "Look at the handover's chart: which phases are large on your machine? Choose levers that "
    "remove them (the table above shows what each one gained), and fewer epochs on top.",
)

# %% tags=["solution"]
assert speed_up_run >= 3, f"debug configuration only {speed_up_run:.1f}x faster per run"
assert speed_up_epoch >= 1.5, f"debug configuration only {speed_up_epoch:.1f}x faster per epoch"
assert no_eval.epoch_s["evaluation"] == 0.0 and cockpit_off.epoch_s["diagnostics"] == 0.0
assert PROFILES[fewer].time_per_run_s < handover.time_per_run_s

# %% [markdown]
# ## The debug configuration of this series
#
# From here on, runs use the **fast path**: the TensorLoader (already the default of
# `nbhelpers.experiment.RunConfig`), evaluation of the validation split, no Cockpit
# (notebook 06 turns it on), and fewer epochs where a notebook only needs to see whether
# the loss falls. We keep the colleague's batch size: a different batch size changes what
# the optimizer does, and a debug run should behave like the real one. `channels_last`
# (and bfloat16 on a GPU) can be added on top where they helped above: they change how
# the arithmetic is done, not what is computed (bfloat16 only up to rounding).

# %%
DEBUG_LEVERS = dict(loader="tensor", eval_splits=("valid",), cockpit=None, epochs=DEBUG_EPOCHS)
if MY_LEVERS == DEBUG_LEVERS:  # already measured above
    debug = dataclasses.replace(PROFILES.pop("my debug configuration"), label="debug configuration")
    PROFILES["debug configuration"] = debug
else:
    debug = measure("debug configuration", **DEBUG_LEVERS)
DEBUG_RUN_FIELDS = dict(loader="tensor", num_workers=0, eval_splits=("valid",), eval_every=1, epochs=DEBUG_EPOCHS)
print("RunConfig fields of the debug configuration:", DEBUG_RUN_FIELDS)
print("e.g. the handover with them:", describe_config(handover_config(budget, **DEBUG_RUN_FIELDS)))

table = compare_profiles(PROFILES, baseline="handover")
columns = ["epoch (s)", "images/s", "speed-up per epoch", "epochs", "run (s)", "speed-up per run"]
display(table[columns].round(2))
fig_runs = plot_comparison(table, per="run", title="Time per run by phase; (xN) = speed-up vs the handover")
plt.show()

# %% [markdown]
# ## Logbook
#
# The measured numbers go into the logbook, with the final chart. `key="02"` replaces the
# entry when you run this cell again.

# %%
debug_speed_up_run = handover.time_per_run_s / debug.time_per_run_s
debug_speed_up_epoch = handover.time_per_epoch_s / debug.time_per_epoch_s
top = max(handover.epoch_s, key=handover.epoch_s.get)
book = Logbook()
book.add(
    "02 speed-up",
    observation=(
        f"On {device.type}, one handover epoch takes about {handover.time_per_epoch_s:.1f} s "
        f"({handover.images_per_s:,.0f} images/s); the largest phase is {top} "
        f"({handover.epoch_s[top] / handover.time_per_epoch_s:.0%})."
    ),
    hypothesis="Evaluating the train split every epoch, Cockpit and the per-sample PIL pipeline "
    "cost time without helping debugging.",
    result=(
        f"Debug configuration ({DEBUG_RUN_FIELDS}): {debug.time_per_epoch_s:.1f} s per epoch, "
        f"{debug_speed_up_epoch:.1f}x faster per epoch and {debug_speed_up_run:.1f}x per run."
    ),
    notebook="02_speed_up.ipynb",
    figure=fig_levers,
    key="02",
)
record_stage(
    "02",
    "speed-up",
    test_accuracy=None,
    speed_up_per_epoch=round(debug_speed_up_epoch, 2),
    speed_up_per_run=round(debug_speed_up_run, 2),
    handover_epoch_s=round(handover.time_per_epoch_s, 3),
    debug_epoch_s=round(debug.time_per_epoch_s, 3),
    debug_run_fields=DEBUG_RUN_FIELDS,
)

# %% [markdown]
# ## Summary
# - **Measure before you optimise.** The profile shows where the time goes on *your*
#   machine; a lever only helps when it removes a large phase (Amdahl's law).
# - For debugging, the cheap levers are the big ones: fewer epochs, less evaluation,
#   Cockpit off or lighter. A fast data pipeline (the TensorLoader) and a GPU do the rest.
# - A larger batch is faster on a GPU, hardly on a CPU, and it changes the optimisation.
# - Looking at a module **in isolation** (here the model alone, in the batch-size sweep)
#   tells what the limit is without the rest of the pipeline.
#
# **Next:** 03 reads the code carefully without running it (Debugging Strategy II) and
# finds why the network does not learn.
