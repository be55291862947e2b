# %% [markdown]
# # 02 · Speed up: where does the time go?
#
# One run of the colleague's notebook took about 25 minutes on a CPU and 10 minutes on a
# GPU (the times the course's public exercise reports: Numerics of Machine Learning,
# exercise 11 "Optimization for Deep Learning", University of Tübingen,
# [github.com/philipphennig/NumericsOfML](https://github.com/philipphennig/NumericsOfML),
# `exercises/11_Deep_Learning_Optimization`). Debugging means running the code again and
# again, so the first job is to make a run fast enough to iterate: the tutorial's
# *Debugging Strategy I*. We will not guess what is slow. We **measure** where the time
# goes, then change one thing at a time and measure again, here on your machine. At the end
# you put together a fast *debug configuration* for the next notebooks.
#
# Your machine may be busy with other programs (a browser, a video call) while you work, so
# every timing here is taken several times and reported as the median, with the spread
# from the fastest to the slowest round.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/02_speed_up.ipynb)
#
# {{time}}
#
# **You will**
# - profile a few training steps and split their time into data loading,
#   forward/backward/step, evaluation and diagnostics (Cockpit);
# - try each speed lever on its own and measure what it gains: fewer epochs, less
#   evaluation, Cockpit off or lighter, a larger batch, faster data loading, the GPU, the
#   memory layout, mixed precision, and the number of CPU threads;
# - see why a small network can run 10x slower when one other program keeps a core busy;
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
import statistics
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display
from torchvision import transforms

from nbhelpers.cockpit_tools import CockpitHook
from nbhelpers.data import TensorLoader
from nbhelpers.experiment import RandomRotationBatch, handover_config
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import record_stage, start
from nbhelpers.profiling import (
    PHASES,
    Autocast,
    batch_size_sweep,
    compare_profiles,
    count_operations,
    plot_comparison,
    profile_training,
    repeat_profiles,
    time_raw_steps,
)
from nbhelpers.threads import busy_neighbour, choose_threads, cpu_limit, idle_cores, step_flops

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle
STEPS = budget.profile_steps  # training steps timed per measurement with Cockpit (Alpha: every 10th)
PLAIN_STEPS = max(3, STEPS // 2)  # ... and without Cockpit (every step costs the same)
EVAL_BATCHES = max(1, STEPS // 3)  # evaluation batches timed per split (scaled up to the split)
ROUNDS = 3  # every measurement is repeated; we keep the median round and show the spread
print(f"Each measurement times {STEPS} training steps with Cockpit, {PLAIN_STEPS} without "
      f"(after one warm-up step), {ROUNDS} times.")

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
    cockpit="handover",  # Cockpit preset: "handover" = the colleague's instruments, "basic", or None (off)
    epochs=budget.epochs,  # the colleague used 10
    channels_last=False,  # memory layout of images and weights (measure it: GPU and many CPUs)
    bf16=False,  # mixed precision with bfloat16 (GPUs, and CPUs with bfloat16 instructions)
    threads="auto",  # CPU threads: "auto" (nbhelpers' choice, see lever 7), a number, or None
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


# Cockpit warns about one thing in the colleague's code while we time it. Reading that code is
# the job of notebook 03, so here the warning stays quiet (it does not change any timing).
warnings.filterwarnings("ignore", message=r"Cockpit step \d+: .* tracked while the gradients")


def measure_once(label, steps=None, **levers):
    """Time `steps` training steps (and a part of the evaluation) of the handover with `levers`."""
    lv, model, optimizer, scheduler, train_loader, eval_loaders, hooks = make_setup(levers)
    steps = steps or (STEPS if lv["cockpit"] else PLAIN_STEPS)
    return profile_training(
        model, optimizer, train_loader, steps=steps, eval_loaders=eval_loaders,
        eval_every=lv["eval_every"], eval_max_batches=EVAL_BATCHES, hooks=hooks, scheduler=scheduler,
        zero_grad=False, epochs=lv["epochs"], label=label, threads=lv["threads"],
    )  # fmt: skip


def measure(label, steps=None, **levers):
    """`measure_once` ROUNDS times; keep the median round (with all rounds, for the spread)."""
    prof = repeat_profiles({label: lambda: measure_once(label, steps, **levers)}, ROUNDS)[label]
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
#
# {{time:profile}}

# %%
# time: profile
handover = measure("handover")
display(handover.table().round(2))
fig_handover = handover.plot()
plt.show()
for note in handover.notes:
    print("Note:", note)

# %% [markdown]
# The summary line gives the median of the rounds and, in brackets, the fastest and the
# slowest round. When they lie far apart, something else was using the machine meanwhile;
# the median is still a fair figure, but compare levers by more than their spread only.
#
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
# (the preset `"handover"`) need per-example gradients for Alpha every 10 steps; `"basic"`
# keeps only the loss, gradient norm, distance and update size, which cost little: the
# second line below says how little on your machine. Notebook 06 turns Cockpit back on when
# we want to read its instruments.

# %%
cockpit_off = measure("Cockpit off", cockpit=None)
cockpit_basic = measure("Cockpit basic", cockpit="basic")
print(f"Cockpit's net cost: {handover.time_per_epoch_s - cockpit_off.time_per_epoch_s:.1f} s per epoch")
print(f"'basic' costs {cockpit_basic.time_per_epoch_s / cockpit_off.time_per_epoch_s:.2f}x 'off' per epoch")

# %% [markdown]
# ## Lever 4: a larger batch
#
# First the model **in isolation**: forward, backward and optimizer step on one fixed batch
# that already sits on the device, so no data loading can slow it down. We try batch sizes
# by doubling. On a GPU we go on until the memory runs out (or half of it is used, to
# leave room for the data and evaluation).
#
# {{time:batch-sweep}}

# %%
# time: batch-sweep
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
# alike; and **bfloat16 mixed precision** (`torch.autocast`): convolutions and matrix
# products in 16 bits, weights and optimizer in 32 bits. GPUs and CPUs with bfloat16
# instructions (recent server and laptop chips) run it faster; other CPUs emulate it and
# run it slower. Whether a lever helps depends on the hardware, the library versions and
# the batch size, so we measure it here rather than trust a rule of thumb.

# %%
FAST = dict(loader="tensor", cockpit=None, eval_splits=("valid",))
if cuda:
    measure("handover on the CPU", steps=min(STEPS, 10), device="cpu")  # fewer steps: it is slow
fast = measure("fast pipeline", **FAST)
fast_cl = measure("fast + channels_last", **FAST, channels_last=True)
layout_gain = fast.time_per_epoch_s / fast_cl.time_per_epoch_s
print(f"channels_last: {layout_gain:.2f}x per epoch on {device} (spreads: {fast.spread:.0%}, {fast_cl.spread:.0%})")
if cuda and not torch.cuda.is_bf16_supported():
    print("This GPU has no fast bfloat16; skipping mixed precision.")
else:
    fast_bf16 = measure("fast + bf16", **FAST, bf16=True)
    bf16_gain = fast.time_per_epoch_s / fast_bf16.time_per_epoch_s
    verdict = "faster" if bf16_gain >= 1.05 else ("no faster" if bf16_gain > 0.95 else "slower")
    print(f"bf16 mixed precision: {bf16_gain:.2f}x per epoch on {device}, {verdict} here "
          f"(spreads: {fast.spread:.0%}, {fast_bf16.spread:.0%})")  # fmt: skip

# %% [markdown]
# You do not have to measure this for every run: `RunConfig(memory_format="auto")` (the
# default of `reference_fix_config`) times a few training steps in both layouts once per
# model and batch size, and trains in the faster one
# (`nbhelpers.profiling.fastest_memory_format`); `precision="auto"` does the same for
# float32 against bfloat16 (`fastest_precision`). The layout changes how the arithmetic is
# done, not what is computed: results differ only by rounding. bfloat16 keeps about three
# significant digits, so it changes results a little more: a lever to measure on
# accuracy too, not only on time.
#
# ## Lever 7: CPU threads, and a busy machine
#
# On a CPU, torch runs every operation of a step with a **team of threads**, by default one
# per core, and the team waits at the end of each operation until its last member is done.
# That is fast while the cores are free. But when another program keeps one core busy (a
# browser tab, a video call, a second notebook), one member of the team has to wait for the
# operating system to give it a core again, and the whole team waits with it. We measure
# the training step of two networks: notebook 00's small one (width 8, batch 32) and the
# colleague's, with one thread and with one per core, first as the machine is, then while a
# small program of ours burns one core (it stops after the measurement, and after two
# minutes at the latest).
#
# {{time:threads}}

# %%
# time: threads
CORES = cpu_limit()  # the cores this notebook may use; torch's default is one thread each
NETWORKS = {  # name -> (activation, norm, width, batch size, timed steps)
    "small (notebook 00)": ("relu", "batch", 8, 32, max(3, STEPS)),
    "colleague's": ("tanh", "none", 32, budget.batch_size, max(2, STEPS // 3)),
}


def step_rate(network, threads):
    """images/s of forward + backward + Adam step of `network`, median of ROUNDS timings."""
    activation, norm, width, batch, steps = NETWORKS[network]
    torch.manual_seed(SEED)
    model = build_cnn(activation, norm, width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = [
        time_raw_steps(model, optimizer, batch, steps=steps, device="cpu", threads=threads)["images_per_s"]
        for _ in range(ROUNDS)
    ]
    return statistics.median(rates)


if CORES < 2:
    print(f"This machine gives this notebook {CORES} core: there is no team to wait for, nothing to measure.")
else:
    quiet_idle = idle_cores(0.2)
    print(f"cores other programs leave idle right now: {quiet_idle if quiet_idle is None else round(quiet_idle, 1)} of {CORES}")
    rows = []
    for network in NETWORKS:
        for threads in (1, CORES):
            rows.append(dict(network=network, threads=threads, machine="as it is", **{"images/s": step_rate(network, threads)}))
    with busy_neighbour(cores=1, max_seconds=120):
        busy_idle = idle_cores(0.2)
        for threads in (1, CORES):
            rows.append(dict(network="small (notebook 00)", threads=threads, machine="one core busy", **{"images/s": step_rate("small (notebook 00)", threads)}))
    threads_table = pd.DataFrame(rows)
    display(threads_table.round(0))

# %% [markdown]
# Why a busy core hurts so much: count the operations of one training step of the small
# network, and compare the time each one takes with the time the team loses per operation
# while a core is busy.

# %%
if CORES >= 2:
    torch.manual_seed(SEED)
    small = build_cnn("relu", "batch", 8)
    small_opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    xb, yb = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def small_step():
        small_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(small(xb), yb).backward()
        small_opt.step()

    n_ops = count_operations(small_step)
    rate = {(r["machine"], r["threads"]): r["images/s"] for r in rows if r["network"].startswith("small")}
    per_op_ms = {key: 32 / value / n_ops * 1000 for key, value in rate.items()}
    one_ms, team_ms = per_op_ms[("one core busy", 1)], per_op_ms[("one core busy", CORES)]
    best = max(rate[("as it is", 1)], rate[("as it is", CORES)])
    collapse = best / rate[("one core busy", CORES)]
    print(f"One training step of the small network runs {n_ops} operations.")
    print(f"With one core busy, an operation takes {one_ms:.3f} ms on 1 thread and {team_ms:.3f} ms "
          f"on a team of {CORES}: at least {team_ms - one_ms:.3f} ms of it is the team waiting.")
    print(f"With one core busy, {CORES} threads reach {rate[('one core busy', CORES)] / best:.0%} of the "
          f"fastest step as the machine is ({collapse:.1f}x slower), 1 thread {rate[('one core busy', 1)] / best:.0%}.")
    print(f"Cores left idle during the busy measurement: {busy_idle if busy_idle is None else round(busy_idle, 1)} of {CORES}")
    if quiet_idle is not None and quiet_idle < CORES - 0.5:
        print("Note: other programs were already busy during 'as it is', so it is no quiet baseline.")

# %% [markdown]
# A team of threads should finish an operation sooner than one thread, not later: the extra
# time is waiting. The thread that lost its core waits for the operating system's next time
# slice, and the whole team waits with it at the end of the step's operations. A larger network has longer operations,
# so the same waiting weighs less (and more threads pay off more on a free machine). One
# thread has no team to wait for: on a busy machine it keeps its fair share, as the last
# line above shows.
#
# That is why nbhelpers chooses the thread count **per run** (`threads="auto"`, the default
# of `nbhelpers.train.train` and `RunConfig`): no more than your setting, no more than the
# cores the other programs leave idle (read from the operating system just before the run
# and again after every epoch), and fewer for a step too small to share. It puts your
# setting back afterwards. What it would choose now, and with a busy core:

# %%
if CORES >= 2:
    for network, (activation, norm, width, batch, _) in NETWORKS.items():
        flops = step_flops(build_cnn(activation, norm, width), batch)
        print(f"{network}: {flops / 1e9:.2f} GFLOP per step; threads chosen now: "
              f"{choose_threads(CORES, idle_cores(), flops)}, with one core busy: {choose_threads(CORES, busy_idle, flops)}")
print("Results on a CPU differ by rounding between thread counts (and training amplifies that):")
print("a run records the counts it used; RunConfig(threads=N) fixes the count for bit-identical reruns.")

# %% [markdown]
# ## All levers side by side
#
# Each row changes **one** thing against the handover (the "fast" rows are the exception:
# they combine the loader, evaluation and Cockpit levers). The speed-up is the handover's time divided by the row's time; *per run*
# also counts the epochs. "spread (%)" is how far the slowest and the fastest round lay apart
# (the black line at the end of each bar in the chart): a speed-up smaller than the spreads
# of the two rows it compares is not a measured gain.

# %%
table = compare_profiles(PROFILES, baseline="handover")
display(table[[*PHASES, "epoch (s)", "spread (%)", "speed-up per epoch"]].round(2))
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
#
# {{time:compare}}

# %%
# time: compare
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
    # cockpit="handover",
    # epochs=budget.epochs,
    # END EXERCISE
)
# the handover and your configuration in turns (handover, yours, handover, yours, ...), so
# that a change in the machine's load hits both alike; the speed-up is the median of the rounds
pair = repeat_profiles(
    {
        "handover (again)": lambda: measure_once("handover (again)"),
        "my debug configuration": lambda: measure_once("my debug configuration", **MY_LEVERS),
    },
    ROUNDS,
)
mine = PROFILES["my debug configuration"] = pair["my debug configuration"]
rounds = list(zip(pair["handover (again)"].rounds, mine.rounds))
speed_up_run = statistics.median(h.time_per_run_s / m.time_per_run_s for h, m in rounds)
speed_up_epoch = statistics.median(h.time_per_epoch_s / m.time_per_epoch_s for h, m in rounds)
print(mine.summary())
print(f"speed-up vs the handover: {speed_up_run:.1f}x per run, {speed_up_epoch:.1f}x per epoch (median of {len(rounds)} rounds)")

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
# (notebook 06 turns it on), the faster memory layout (`memory_format="auto"`, measured per
# model), nbhelpers' choice of CPU threads (`threads="auto"`, the default), and fewer epochs
# where a notebook only needs to see whether the loss falls. We keep the colleague's batch
# size: a different batch size changes what the optimizer does, and a debug run should
# behave like the real one. bfloat16 on a GPU can be added on top where it helped above:
# like the layout and the threads, it changes how the arithmetic is done, not what is
# computed (only up to rounding).

# %%
DEBUG_LEVERS = dict(loader="tensor", eval_splits=("valid",), cockpit=None, epochs=DEBUG_EPOCHS)
if MY_LEVERS == DEBUG_LEVERS:  # already measured above
    debug = dataclasses.replace(PROFILES.pop("my debug configuration"), label="debug configuration")
    PROFILES["debug configuration"] = debug
else:
    debug = measure("debug configuration", **DEBUG_LEVERS)
DEBUG_RUN_FIELDS = dict(
    loader="tensor", num_workers=0, eval_splits=("valid",), eval_every=1, epochs=DEBUG_EPOCHS,
    memory_format="auto", threads="auto",
)
print("RunConfig fields of the debug configuration:", DEBUG_RUN_FIELDS)

table = compare_profiles(PROFILES, baseline="handover")
columns = ["epoch (s)", "spread (%)", "images/s", "speed-up per epoch", "epochs", "run (s)", "speed-up per run"]
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
        f"({handover.images_per_s:,.0f} images/s, median of {ROUNDS} rounds); the largest phase "
        f"is {top} ({handover.epoch_s[top] / handover.time_per_epoch_s:.0%})."
        + (f" With one core busy, {CORES} CPU threads ran the small network {collapse:.1f}x slower." if CORES >= 2 else "")
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
# the logbook so far, compactly (notebook 07 exports all of it)
display(pd.DataFrame([dict(stage=e.stage, observation=e.observation, result=e.result) for e in book.entries()]))

# %% [markdown]
# ## Summary
# - **Measure before you optimise.** The profile shows where the time goes on *your*
#   machine; a lever only helps when it removes a large phase (Amdahl's law).
# - For debugging, the cheap levers are the big ones: fewer epochs, less evaluation,
#   Cockpit off or lighter. A fast data pipeline (the TensorLoader) and a GPU do the rest.
# - A larger batch is faster on a GPU, hardly on a CPU, and it changes the optimisation.
# - Looking at a module **in isolation** (here the model alone, in the batch-size sweep)
#   tells what the limit is without the rest of the pipeline.
# - On a CPU, a team of threads waits at the end of every operation: with one core busy, a
#   small network's step can become many times slower (lever 7 measured how much here).
#   nbhelpers chooses the thread count per run and gives up a busy core.
# - On a shared machine, time every lever several times and compare medians; compare two
#   setups in turns, so a busy moment hits both.
#
# **Next:** 03 reads the code carefully without running it (Debugging Strategy II) and
# finds why the network does not learn.
