# %% [markdown]
# # 06 · Cockpit: look inside the training run
#
# After notebooks 03 to 05 the gradients are reset every step, the augmentation is off and
# valid and test are held out. One part of the colleague's setup is still untouched: **Adam
# with learning rate 1e-5 and `ExponentialLR(gamma=1.001)`, stepped after every batch.**
# The colleague's notebook also ran **Cockpit** (Schneider, Dangel & Hennig, NeurIPS 2021), a
# debugger that shows what happens *inside* the training: step sizes, gradients, distances.
# We switch it back on with the colleague's instruments at the colleague's tracking intervals
# (the tutorial: it "uses the already set up quantities and tracking frequencies"), wire it
# into the colleague's loop, measure what it costs, learn to read the instruments on the run
# with the fixes so far, and ask them whether the optimizer settings are right. This is the
# tutorial's *Debugging Strategy V*. The tutorial reads Cockpit only now, after those fixes,
# for a reason we will see at the step size α.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/06_cockpit.ipynb)
#
# **You will**
# - wire Cockpit into the colleague's training loop, and measure what its tracking costs;
# - check *before* training which Cockpit instruments fit into memory and are valid for a model;
# - read five instruments: loss, gradient norm, distance and update size, the step size α, the learning rate;
# - diagnose the learning-rate schedule and the learning rate from them;
# - compare the instruments before and after a fix, side by side;
# - learn why Cockpit was switched off for the BatchNorm model, and what still works there.
#
# Where this notebook quotes the colleague's reference fix (Adam lr 2e-3, Cockpit switched
# off), the figures come from the course's public exercise and its solution notebook:
# Numerics of Machine Learning, exercise 11, University of Tübingen
# ([github.com/philipphennig/NumericsOfML](https://github.com/philipphennig/NumericsOfML)).

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0
TRAIN_LIVE = True  # False: read the two long Cockpit runs from the logs shipped with nbhelpers (this notebook's runs at the quick budget) instead of training them

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from scipy.stats import binomtest, mannwhitneyu
from torch import nn

from nbhelpers import cockpit_tools as ct  # also makes `import cockpit` work today
from nbhelpers.budget import HANDOVER
from nbhelpers.cockpit_tools.logs import shipped_log_info
from nbhelpers.env import seed_everything
from nbhelpers.experiment import RunConfig, build_run, describe_config, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.selfcheck import check

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle
print(f"Cockpit {ct.cockpit_version()}; tracked steps per run: {budget.cockpit_steps}")

# %% [markdown]
# ## The instruments of the handover
# Cockpit computes **quantities** during the backward pass and draws them as **instruments**.
# Some are almost free (the loss, the norm of the gradient); others need per-example
# gradients or curvature and cost real time and memory. The colleague tracked α every 10
# steps, and distance, gradient norm, loss and update size every step. In `nbhelpers` that
# set is the preset `"handover"`; the table lists it among the others.

# %%
display(Markdown(ct.preset_markdown(["basic", "cheap", "handover", "standard", "thorough", "full"])))
TUTORIAL_PRESET = "handover"  # the colleague's instruments and intervals
for spec in ct.preset_specs(TUTORIAL_PRESET):
    print(f"{spec.name:>10} every {spec.every:>2} step(s): {ct.QUANTITIES[spec.name].meaning}")

# %% [markdown]
# ## The run under study
# The colleague's run with the fixes of notebooks 03 to 05 (`zero_grad`, no rotations, valid
# and test held out) but the **original optimizer settings**: Adam with learning rate 1e-5
# and `ExponentialLR(gamma=1.001)` stepped after every batch. Cockpit makes every step
# slower, so we track the first `budget.cockpit_steps` steps of it.

# %%
current_cfg = handover_config(
    budget,
    name="cockpit-current",
    source=bundle.source,
    loader="tensor",  # the fast loader (notebook 02)
    zero_grad=True,  # notebook 03
    augmentation="none",  # notebooks 04 and 05
    eval_from_train=False,  # notebook 05: valid and test are held out
    eval_splits=("valid", "test"),
    eval_every=budget.epochs,  # evaluate once, at the end
    max_steps=budget.cockpit_steps,
)
print(describe_config(current_cfg))

# %% [markdown]
# ## Cockpit in the colleague's loop
# Here is the colleague's loop with Cockpit, as their notebook had it (with notebook 03's
# `zero_grad`). `ct.make_cockpit` extends the model and the loss with BackPACK and builds a
# `cockpit.Cockpit` of the preset's quantities (after a memory check, next section). Around
# the backward pass sits the one block Cockpit needs: the per-example losses (for α), the
# batch size, the loss and the optimizer go in through `info`. We run a few dozen steps
# twice, with Cockpit and without, and time every step.
#
# {{time:loop}}

# %%
# time: loop
LOOP_STEPS = min(60, budget.cockpit_steps)


def colleague_loop(preset, steps=LOOP_STEPS):
    """The colleague's training loop for `steps` steps, with Cockpit `preset` (None: off).
    Returns (cockpit or None, seconds of every step)."""
    parts = build_run(current_cfg, data=bundle)  # model, Adam lr 1e-5, ExponentialLR(1.001), loader
    model, optimizer, scheduler = parts.model, parts.optimizer, parts.scheduler
    loss_fn = nn.CrossEntropyLoss()
    cockpit = None
    if preset is not None:
        cockpit, _ = ct.make_cockpit(model, loss_fn, preset, batch_size=budget.batch_size)
    seconds, global_step = [], 0
    model.train()
    for x, y in parts.train_loader:
        t0 = time.perf_counter()
        optimizer.zero_grad()  # notebook 03
        logits = model(x)
        loss = loss_fn(logits, y)
        if cockpit is None:
            loss.backward()
        else:
            losses = F.cross_entropy(logits, y, reduction="none")  # per-example losses, for alpha
            with cockpit(
                global_step,
                info={"batch_size": len(y), "individual_losses": losses, "loss": loss, "optimizer": optimizer},
            ):
                loss.backward(create_graph=cockpit.create_graph(global_step))
        optimizer.step()
        scheduler.step()  # after every batch, as in the handover
        seconds.append(time.perf_counter() - t0)
        global_step += 1
        if global_step == steps:
            break
    return cockpit, seconds


plain_s = colleague_loop(None)[1]
loop_cockpit, cockpit_s = colleague_loop(TUTORIAL_PRESET)
print(f"Cockpit logged {len(loop_cockpit.get_output())} steps of the colleague's loop.")

# %% [markdown]
# ## Reduce the tracking frequency
# The tutorial's first strategy against Cockpit's cost. Not every step costs the same: α
# needs per-example gradients at the step where it starts (every 10th) and at the next one,
# where it ends; the other steps only add the cheap instruments. From the median time of
# each kind of step, relative to a plain step, follows what a step costs on average when α
# is tracked every k steps: (start + end + (k − 2) · other) / k.

# %%
def step_kinds(seconds, every=10):
    """Median seconds of alpha's start steps, end steps and the other steps (step 0 left out)."""
    kinds = {"start": [], "end": [], "other": []}
    for step, s in enumerate(seconds[1:], start=1):
        kinds["start" if step % every == 0 else "end" if step % every == 1 else "other"].append(s)
    return {kind: float(np.median(values)) for kind, values in kinds.items()}


plain_step = float(np.median(plain_s[1:]))
ratio = {kind: s / plain_step for kind, s in step_kinds(cockpit_s).items()}
intervals = np.array([2, 5, 10, 20, 50, 100, 200])
cost = (ratio["start"] + ratio["end"] + (intervals - 2) * ratio["other"]) / intervals
print(f"plain step {plain_step * 1e3:.0f} ms; with Cockpit, relative to it: "
      + ", ".join(f"{kind} {r:.2f}x" for kind, r in ratio.items()))

fig_cost, ax = plt.subplots(figsize=(7.5, 3.4))
ax.plot(intervals, cost, "o-", color="C0", lw=2, label="colleague's instruments, α every k steps")
ax.axhline(1, color="0.4", lw=1, ls="--", label="plain step")
for k, name in ((10, "handover"), (ct.preset_specs("cheap")[-1].every, "cheap")):
    ax.annotate(f"preset '{name}' (k={k})", (k, np.interp(k, intervals, cost)), xytext=(6, 10),
                textcoords="offset points", fontsize=9)
ax.set(xscale="log", xlabel="α tracked every k steps", ylabel="step time / plain step")
ax.set_title("What Cockpit costs per step, measured in the loop above", loc="left")
ax.set_ylim(bottom=0)
ax.legend(loc="lower left", frameon=False)
ax.grid(alpha=0.3)
plt.show()
cost_at = dict(zip(intervals.tolist(), cost.tolist(), strict=True))
print(f"alpha every 10 steps: {cost_at[10]:.2f}x a plain step; every 50: {cost_at[50]:.2f}x; "
      f"every 200: {cost_at[200]:.2f}x (the cheap instruments alone: {ratio['other']:.2f}x).")

# %% [markdown]
# A few dozen steps on a shared machine give a rough curve; `benchmarks/bench_cockpit.py`
# measures it carefully (Cockpit and plain steps in turns, several rounds). The preset
# `"cheap"`, the default of `nbhelpers`, tracks α at the interval where that benchmark
# measured at most 1.25x a plain step. We keep the colleague's interval here: it gives
# ten times more α values to read.

# %% [markdown]
# ## Before training: will it fit?
# The expensive quantities need memory per example of the batch: per-example gradients hold
# one copy of all 550,570 weights *per image*. Cockpit's own `"full"` configuration adds the
# exact Hessian diagonal, which behind a Tanh layer builds a dense table of size
# batch × V × V (V: the layer's outputs per image). Find out by trying and the kernel dies
# after minutes. `ct.guard` answers in milliseconds from the layer shapes alone.
#
# First the colleague's set on the handover CNN at the handover's batch size of 256:

# %%
HANDOVER_BATCH_SIZE = HANDOVER["batch_size"]  # the colleague's batch size, 256
handover_cnn = build_cnn("tanh", "none")  # the handover model (6 conv layers, Tanh)
ct.guard(handover_cnn, HANDOVER_BATCH_SIZE, TUTORIAL_PRESET, device=device)

# %% [markdown]
# All fine. Now ask for *everything*, as `make_cockpit(..., on_refusal="raise")` would before
# building a Cockpit. The guard refuses, and says why and what to do instead. (We catch the
# error to read its message; in your own code it stops you before the first step.)

# %%
try:
    ct.make_cockpit(
        build_cnn("tanh", "none"),
        nn.CrossEntropyLoss(),
        "full",  # Cockpit's own configuration: every quantity at every step
        batch_size=HANDOVER_BATCH_SIZE,
        on_refusal="raise",
    )
except ct.CockpitGuardError as err:
    print(f"{type(err).__name__}:\n{err}")

# %% [markdown]
# With `on_refusal="drop"` (the default), refused quantities are left out with the same
# explanation and training goes on with the rest.
#
# ## The whole run, with the helpers
# The loop above is all Cockpit needs. For the long runs we let `nbhelpers` write it:
# `ct.CockpitHook` plugs exactly that `with cockpit(...)` block into the training loop of
# `nbhelpers.train` (see `help(ct.CockpitHook)`) and refreshes a few instruments below the
# cell while the run trains.
#
# With `TRAIN_LIVE = False` (parameters cell) the notebook reads the logs of the same two
# runs, trained at the quick budget and shipped with `nbhelpers`, instead of training them.
#
# {{time:train-current}}

# %%
# time: train-current
def cockpit_run(config, shipped, live=False):
    """Train `config` with the colleague's Cockpit instruments, or (TRAIN_LIVE = False) load
    the shipped log `shipped` of the same run at the quick budget. `live`: instruments to
    refresh while training. Returns (log, test accuracy, record, config of the run); record
    is None for a shipped log."""
    if not TRAIN_LIVE:
        try:
            log, info = ct.load_shipped_log(shipped), shipped_log_info(shipped)
        except FileNotFoundError as err:
            print(f"{err}\nTraining live instead.")
        else:
            ignore = {"name", "device", "source"}
            same = {k: v for k, v in info["config"].items() if k not in ignore} == {
                k: v for k, v in config.to_dict().items() if k not in ignore
            }
            print(f"Shipped log {shipped!r}: {info['description']}.\n{info['steps']} steps, "
                  f"batch {info['batch_size']}, budget {info['budget']}; "
                  + ("the same configuration as this notebook's." if same else
                     f"this notebook runs budget {budget.name}, so its configuration differs."))
            return log, info["final"].get("test_accuracy"), None, RunConfig.from_dict(info["config"])
    hook = ct.CockpitHook(TUTORIAL_PRESET, live=live)
    record = run(config, data=bundle, hooks=[hook])
    return hook.log, record.final("test_accuracy"), record, config


current_log, current_accuracy, current_record, current_run_cfg = cockpit_run(
    current_cfg, "handover", live=["loss", "distance", "alpha"]
)
current = ct.log_frame(current_log)  # one row per step, one column per quantity
CURRENT = "current code" if current_record is not None else "current code, shipped log"
current.head()

# %% [markdown]
# ## The whole cockpit
# This is the view the colleague had (Cockpit's own dashboard). Top left: **step size** (α,
# distance, gradient norm); bottom: **hyperparameters** (the learning rate) and
# **performance** (mini-batch loss, accuracies). Cockpit's full dashboard also has columns
# for gradient noise and curvature; the colleague's set tracks none of their quantities, so
# they are left out here, and the line under the title names the preset that would fill
# them. (`ct.plot_dashboard(log, only_tracked=False)` draws Cockpit's whole layout, each
# empty panel saying why it is empty.)

# %%
ct.plot_dashboard(current_log, title=f"Cockpit: {CURRENT} (Adam lr 1e-5, ExponentialLR per batch)")

# %% [markdown]
# A dashboard is dense. Let us read its instruments one at a time.
#
# ### 1. Loss
# The mini-batch training loss of every step (dots) and a smoothed line. It is the first thing
# to look at and the least specific: it tells you *that* something is wrong, rarely *what*. Ten
# classes guessed at random give ln 10 ≈ 2.30. Does the line move away from it?

# %%
display(ct.plot_loss(current))


def quarters(column):
    """Mean of the first and of the last quarter of the tracked steps."""
    q = max(1, len(column) // 4)
    return float(column.iloc[:q].mean()), float(column.iloc[-q:].mean())


first_loss, last_loss = quarters(current["Loss"])
print(f"mean mini-batch loss: first quarter {first_loss:.3f}, last quarter {last_loss:.3f} "
      f"(ln 10 = {math.log(10):.3f}); test accuracy at the end: {current_accuracy:.1%}")

# %% [markdown]
# ### 2. Gradient norm
# The length ‖g‖ of the mini-batch gradient the optimizer used (all layers together). If it
# grows by orders of magnitude, gradients pile up or the run diverges; if it collapses to 0,
# the run is stuck. Here is what it does in our run:

# %%
display(ct.plot_grad_norm(current))
first_g, last_g = quarters(current["GradNorm"])
growth_g = last_g / first_g
verdict_g = (
    "grows by more than 10x: look for gradients that pile up or a run that diverges"
    if growth_g > 10 else "collapses towards 0: the run may be stuck" if growth_g < 0.1
    else "stays within a factor of 10: nothing piles up, nothing explodes, nothing is stuck"
)
print(f"mean gradient norm: first quarter {first_g:.3g}, last quarter {last_g:.3g} "
      f"(x{growth_g:.2f}); it {verdict_g}.")

# %% [markdown]
# ### 3. Distance and update size
# **Distance**: how far the weights are from where they started (L2 norm of the difference).
# **Update size**: how far each single step moved them. Both are norms over all 550,570
# weights. Compare them with the size of the weights themselves: a run that learns soon moves
# its weights by a noticeable fraction of that. Tiny updates mean the optimizer barely moves.

# %%
display(ct.plot_distance(current))
seed_everything(current_run_cfg.seed)  # the run's initial weights, made as the run made them
start_model = build_cnn(current_run_cfg.activation, current_run_cfg.norm, current_run_cfg.width, init=current_run_cfg.init)
initial_norm = float(torch.cat([p.detach().flatten() for p in start_model.parameters()]).norm())


def movement(frame):
    """Median update size, distance at the end, and that distance relative to the initial weights."""
    distance = float(frame["Distance"].dropna().iloc[-1])
    return float(frame["UpdateSize"].median()), distance, distance / initial_norm


current_update, current_distance, current_moved = movement(current)
print(f"norm of the initial weights: {initial_norm:.1f}")
print(f"median update size: {current_update:.2g} ({current_update / initial_norm:.1e} of the weights' norm per step)")
print(f"distance after {len(current)} steps: {current_distance:.2g} = {current_moved:.1%} of the weights' norm")

# %% [markdown]
# ### 4. Step size α
# Was the step too short, about right, or too long? Cockpit answers with a trick from line
# searches (Mahsereci & Hennig, "Probabilistic Line Searches for Stochastic Optimization",
# 2017). Look at the loss only along the line the step took. From the loss and its slope at
# the start and at the end of the step, Cockpit fits a parabola (taking the noise of the
# mini-batch into account) and measures where the step landed on it:
#
# - **α ≈ −1**: the loss along the step hardly changed: the step was **far too short**;
# - **α < 0**: the step stopped *before* the valley floor: **understepping**, it could be longer;
# - **α ≈ 0**: the step landed right at the bottom of the parabola;
# - **α > 0**: it jumped *over* the bottom to the other side: **overshooting**; α ≈ +1 means
#   it landed as high on the other side as it started.
#
# (When the loss along the step still curves downhill where the step ended, there is no
# bottom yet; Cockpit logs that as −1 too.)
#
# α compares the gradient the optimizer used with this batch's per-example gradients. Without
# `zero_grad` (notebook 03) the optimizer uses the *sum* of all gradients so far, and α no
# longer says anything about the learning rate (`nbhelpers` warns when it sees that). This is
# why the tutorial reads Cockpit after the fixes of notebooks 03 to 05.
#
# A single α is noisy; the **distribution** over many steps is what counts. (The Cockpit
# authors found that well-tuned runs often overshoot a little, α just above 0.) The title
# gives the median; the mean (Cockpit's dashboard shows it as μ) is pulled by a few far-off
# steps, so we read the median. α needs per-example gradients, so it is tracked only every
# 10th step.

# %%
display(ct.plot_alpha(current))


def alpha_reading(frame):
    """Median alpha, share of steps below 0 and share at or below -1 (far too short, or no
    valley floor along the step)."""
    alpha = frame["Alpha"].dropna()
    return float(alpha.median()), float((alpha < 0).mean()), float((alpha <= -1 + 1e-9).mean()), len(alpha)


current_alpha, current_below, current_at_minus1, n_alpha = alpha_reading(current)
print(f"{n_alpha} tracked steps: median alpha {current_alpha:+.2f}; {current_below:.0%} below 0; "
      f"{current_at_minus1:.0%} at or below -1 (far too short, or the loss still fell where the step ended).")

# %% [markdown]
# ### 5. Learning rate
# Not a Cockpit quantity but part of its dashboard: the learning rate each step used, as the
# optimizer saw it. A schedule is code, and code can do something other than its author
# meant. This plot shows what it really does.

# %%
display(ct.plot_learning_rate(current))

# %% [markdown]
# Cockpit saw only the first steps of the run. The run itself is 2,860 steps long (10 epochs
# of the colleague's 286 batches). Here is its schedule over all of them: the run's own
# optimizer and `ExponentialLR`, built from the same configuration and stepped once per
# batch as the run steps them (no training needed), with what Cockpit recorded on top.

# %%
parts = build_run(current_cfg, data=bundle)  # the run's own optimizer and schedule, untrained
lrs = []
for _ in range(HANDOVER["steps"]):
    lrs.append(parts.optimizer.param_groups[0]["lr"])
    parts.optimizer.step()  # no gradients yet: changes nothing
    parts.scheduler.step()  # after every batch, as in the handover
recorded = current["learning_rate"].dropna()
agree = max(abs(recorded.values / np.array(lrs)[recorded.index.values] - 1))
print(f"Cockpit's recorded learning rates match this schedule to a relative {agree:.1e}.")

fig_lr, ax = plt.subplots(figsize=(8, 3.6))
ax.plot(lrs, color="C2", lw=2, label=f"the run's schedule, {len(lrs):,} steps")
ax.plot(recorded.index, recorded.values, color="C3", lw=4, label="recorded by Cockpit")
ax.axhline(lrs[0], color="0.5", ls="--", lw=1, label=f"start value {lrs[0]:g}")
epoch_steps = HANDOVER["steps"] // HANDOVER["epochs"]
for epoch in range(1, HANDOVER["epochs"]):
    ax.axvline(epoch * epoch_steps, color="0.85", lw=0.8, zorder=0)
ax.set(xlabel="step (batch); grey lines: epochs", ylabel="learning rate")
ax.set_title("The colleague's learning-rate schedule")
ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
ax.legend(loc="upper left", frameon=False)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Your diagnosis
# Read the plots above and fill in two things:
#
# 1. `growth_factor`: by what factor does the learning rate grow over the run's 2,860 steps?
#    (Read the start and end values off the schedule plot, or compute it.)
# 2. `step_size`: what does the α distribution say about the steps of the current run:
#    `"too small"`, `"about right"` or `"too large"`? (Median below −0.1: too small; above
#    +0.5: too large; in between: about right.)

# %%
# BEGIN SOLUTION
growth_factor = lrs[-1] / lrs[0]  # or gamma ** steps: 1.001 ** 2859
step_size = "too small"
# END SOLUTION
# BEGIN EXERCISE
growth_factor = None  # a number
step_size = None  # "too small", "about right" or "too large"
# END EXERCISE

# %%
schedule_growth = lrs[-1] / lrs[0]
alpha_says = "too small" if current_alpha < -0.1 else "too large" if current_alpha > 0.5 else "about right"

# %% tags=["exercise"]
check(
    isinstance(growth_factor, (int, float)) and abs(growth_factor - schedule_growth) < 0.1 * schedule_growth,
    f"Right: the learning rate ends about {schedule_growth:.1f} times higher than it starts.",
    "The schedule multiplies the learning rate by gamma = 1.001 after every batch. Divide the "
    "last value of the schedule plot by the first, or raise gamma to the number of steps.",
    fail_msg=f"Not yet: growth_factor is {growth_factor!r}.",
)
check(
    str(step_size).strip().lower() == alpha_says,
    f"Right: the steps are {alpha_says} (median α = {current_alpha:+.2f}).",
    "Where does most of the α histogram lie: left of 0, around 0, or right of 0? "
    "Then reread what a negative and a positive α mean in section 4.",
    fail_msg=f"Not yet: step_size is {step_size!r}.",
)

# %% tags=["solution"]
assert abs(growth_factor - schedule_growth) < 0.1 * schedule_growth and 15 < growth_factor < 20
if budget.name != "tiny" or not TRAIN_LIVE:  # a dozen tracked steps at the tiny budget say little
    assert step_size == alpha_says, current_alpha
print(
    f"Diagnosis. (1) The schedule makes the learning rate grow {schedule_growth:.1f}-fold over "
    f"the {len(lrs):,} steps, from {lrs[0]:.1e} to {lrs[-1]:.1e}: an 'exponential decay' with "
    f"gamma > 1, stepped per batch. (2) The steps are {alpha_says}: median alpha "
    f"{current_alpha:+.2f}, {current_below:.0%} of the tracked steps below 0, {current_at_minus1:.0%} "
    f"at or below -1; the weights moved {current_moved:.1%} of their norm in {len(current)} steps, "
    f"at a median {current_update:.1e} per step."
)

# %% [markdown]
# ## The fix
# Both findings, both fixes: **no schedule** (a simple, constant learning rate first, as in
# notebook 04), and a **100 times larger learning rate**, Adam with 1e-3. (The tutorial's
# reference fix uses 2e-3, for a model with BatchNorm; 1e-3 is a safe start for the Tanh
# network.) Same data, same number of tracked steps, same instruments.
#
# {{time:train-fixed}}

# %%
# time: train-fixed
fixed_cfg = current_cfg.replace(name="cockpit-fixed", lr=1e-3, schedule="none")
print(describe_config(fixed_cfg))
fixed_log, fixed_accuracy, fixed_record, _ = cockpit_run(fixed_cfg, "fixed")
fixed = ct.log_frame(fixed_log)

# %%
ct.plot_dashboard(fixed_log, title="Cockpit: after the fix (Adam lr 1e-3, no schedule)")

# %% [markdown]
# ### Side by side
# The same five instruments for both runs; each row shares its y-axis, so heights compare
# directly (distance, update size and learning rate on a log scale).

# %%
names = ["loss", "grad_norm", "distance", "alpha", "learning_rate"]
runs = {CURRENT: current, "after the fix": fixed}
fig_side, axes = plt.subplots(
    len(names), 2, figsize=(11, 3.1 * len(names)), sharey="row", layout="constrained"
)
for col, (label, frame) in enumerate(zip(["BEFORE", "AFTER"], runs.values(), strict=True)):
    for row, name in enumerate(names):
        ax = axes[row, col]
        ct.INSTRUMENTS[name](frame, ax=ax)
        ax.set_title(f"{label}: {ax.get_title(loc='left')}", loc="left", fontsize=9.5, fontweight="bold")
for row in (names.index("distance"), names.index("learning_rate")):
    axes[row, 0].set_yscale("log")  # shared with the right column
fig_side.suptitle(f"Cockpit before ({CURRENT}) and after the fix", fontweight="bold")
plt.show()


def readings(frame, accuracy):
    """The key readings of one run's instruments, as text."""
    lr, (first, last) = frame["learning_rate"].dropna(), quarters(frame["Loss"])
    median_alpha, below, at_minus1, _ = alpha_reading(frame)
    update, distance, moved = movement(frame)
    return {
        "learning rate, first -> last step": f"{lr.iloc[0]:.3g} -> {lr.iloc[-1]:.3g}",
        "median alpha (share below 0, at or below -1)": f"{median_alpha:+.2f} ({below:.0%}, {at_minus1:.0%})",
        "median update size": f"{update:.2g}",
        "distance from init at the end (of the weights' norm)": f"{distance:.2g} ({moved:.1%})",
        "mini-batch loss, first -> last quarter of the steps": f"{first:.3f} -> {last:.3f}",
        "test accuracy at the end": "n/a" if accuracy is None else f"{accuracy:.1%}",
    }


display(pd.DataFrame({label: readings(frame, acc) for (label, frame), acc in
                      zip(runs.items(), (current_accuracy, fixed_accuracy), strict=True)}))

# %%
fixed_alpha, fixed_below, fixed_at_minus1, _ = alpha_reading(fixed)
fixed_update, fixed_distance, fixed_moved = movement(fixed)
fixed_says = "too small" if fixed_alpha < -0.1 else "too large" if fixed_alpha > 0.5 else "about right"
print(
    f"After the fix the learning rate is constant; the median update is "
    f"{fixed_update / current_update:.0f}x larger and the weights end {fixed_distance / current_distance:.0f}x "
    f"further from their start ({fixed_moved:.0%} of their norm instead of {current_moved:.1%}); "
    f"median alpha moves from {current_alpha:+.2f} to {fixed_alpha:+.2f} (steps {fixed_says}; "
    f"at or below -1: {current_at_minus1:.0%} -> {fixed_at_minus1:.0%} of the steps); the mini-batch loss of "
    f"the last quarter is {quarters(fixed['Loss'])[1]:.3f} instead of {last_loss:.3f}."
)
first_gf, last_gf = quarters(fixed["GradNorm"])
print(f"The gradient norm grows x{last_gf / first_gf:.1f} while the loss falls (before the fix: "
      f"x{growth_g:.1f}); with zero_grad in place that is the network learning, not gradients piling up.")

# %% tags=["solution"]
assert fixed["learning_rate"].nunique() == 1 and current["learning_rate"].is_monotonic_increasing
assert fixed_update > 10 * current_update and fixed_distance > 5 * current_distance
if budget.name != "tiny" or not TRAIN_LIVE:
    assert fixed_alpha > current_alpha

# %% [markdown]
# ## The claims, computed
# Three statements of the tutorial, each checked on the numbers above: the schedule grows;
# the learning rate is too small (α left of 0 on the run with the fixes of 03 to 05, and
# weights that hardly move); and the fix learns within the same steps. At the tiny budget the
# runs are a dozen steps and the verdicts noise.

# %%
alpha_n = int(current["Alpha"].notna().sum())
alpha_p = binomtest(round(current_below * alpha_n), alpha_n, 0.5, alternative="greater").pvalue if alpha_n else 1.0
def p_text(p):
    """A p-value as text (tiny ones as an upper bound)."""
    return "p < 1e-12" if p < 1e-12 else f"p = {p:.2g}"


alphas = current["Alpha"].dropna(), fixed["Alpha"].dropna()
shift_p = mannwhitneyu(*alphas, alternative="less").pvalue if min(map(len, alphas)) > 1 else 1.0
n_test = current_run_cfg.n_test or len(bundle.test)  # the test images of the runs read above
accuracies = (current_accuracy, fixed_accuracy)
fix_p = (
    binomtest(round(fixed_accuracy * n_test), n_test, current_accuracy, alternative="greater").pvalue
    if None not in accuracies else 1.0
)
claims = [
    Claim(
        "the learning-rate schedule grows instead of decaying (~17x over 10 epochs)",
        bool(np.all(np.diff(lrs) > 0) and schedule_growth > 10 and agree < 1e-6),
        f"lr {lrs[0]:.2e} -> {lrs[-1]:.2e} over {len(lrs):,} steps (x{schedule_growth:.1f}); Cockpit's "
        f"record of the first {len(recorded)} steps matches to {agree:.0e}",
    ),
    Claim(
        "the learning rate is too small (alpha < 0, weights hardly move)",
        bool(current_alpha < -0.1 and shift_p < 0.01 and current_moved < 0.1 < fixed_moved),
        f"median alpha {current_alpha:+.2f} ({current_below:.0%} of {alpha_n} tracked steps below 0, sign "
        f"test {p_text(alpha_p)}; {current_at_minus1:.0%} at or below -1) vs {fixed_alpha:+.2f} after the "
        f"fix (Mann-Whitney {p_text(shift_p)}); distance after {len(current)} steps {current_moved:.1%} of the "
        f"weights' norm (after the fix {fixed_moved:.0%})",
    ),
    Claim(
        "the fix (no schedule, Adam lr 1e-3) learns within the same steps",
        bool(None not in accuracies and fix_p < 1e-3),
        "test accuracy after the same steps: "
        + ("n/a" if None in accuracies else
           f"{fixed_accuracy:.1%} vs {current_accuracy:.1%} before the fix, binomial test {p_text(fix_p)}"),
    ),
]
for claim in claims:
    print(f"{'holds' if claim.holds else 'does NOT hold'}: {claim.text} -- {claim.evidence}")

# %% tags=["solution"]
if budget.name != "tiny":
    assert all(claim.holds for claim in claims), claims

# %% [markdown]
# ## Why the reference fix switched Cockpit off
# The tutorial's reference fix adds **BatchNorm** after every convolution, and turns Cockpit
# off. BatchNorm normalises each feature with the mean and variance *of the whole batch*, so
# the loss of one image depends on every other image in the batch: a per-example gradient
# does not exist. BackPACK, which computes Cockpit's per-example quantities, would still hand
# back numbers, just not meaningful ones. The guard knows this:

# %%
reference_cnn = build_cnn("relu", "batch")  # the tutorial's reference fix
ct.guard(reference_cnn, budget.batch_size, TUTORIAL_PRESET, device=device)

# %%
still_valid = ct.quantities_for(reference_cnn, TUTORIAL_PRESET)
print("Valid with BatchNorm:", ", ".join(spec.label for spec in still_valid))
display(Markdown(ct.BATCHNORM_NOTE))

# %% [markdown]
# So on a BatchNorm model you keep loss, gradient norm, distance and update size (preset
# `"basic"`, still enough to spot a growing schedule or tiny updates). If you need α or the
# gradient tests, use **GroupNorm**, which normalises each image on its own:

# %%
groupnorm_cnn = build_cnn("relu", "group")
ct.guard(groupnorm_cnn, budget.batch_size, "standard", device=device)

# %% [markdown]
# ## Logbook

# %%
trained = fixed_record is not None
book = Logbook()
book.add(
    "06 Cockpit diagnostics",
    observation=f"Cockpit (the colleague's instruments) on the code with the fixes of 03-05 (Adam lr "
    f"1e-5, ExponentialLR(1.001) per batch): the learning rate rises in every step (x{schedule_growth:.1f} "
    f"over {len(lrs):,} steps); median alpha {current_alpha:+.2f} ({current_below:.0%} of the steps below 0); "
    f"the weights moved {current_moved:.1%} of their norm in {len(current)} steps. Alpha every 10 steps "
    f"costs {cost_at[10]:.2f}x a plain step, every 50: {cost_at[50]:.2f}x.",
    hypothesis="The schedule grows instead of decaying, and the learning rate is too small: "
    "the steps stop before the minimum along their direction.",
    result=f"No schedule, Adam lr 1e-3: median alpha {fixed_alpha:+.2f}, updates "
    f"{fixed_update / current_update:.0f}x larger"
    + ("" if fixed_accuracy is None else f"; test accuracy {fixed_accuracy:.1%} vs {current_accuracy:.1%}")
    + f" after {len(fixed)} steps" + ("." if trained else " (shipped logs)."),
    notebook="06_cockpit.ipynb",
    figure=fig_side,
    runs=[r for r in (current_record, fixed_record) if r is not None],
    key="06",
)
record_stage(
    "06",
    "cockpit fixes",
    test_accuracy=fixed_accuracy,
    test_split="test",
    run_time_s=fixed_record.timings.get("wall_s") if trained else None,
    claims=claims,
    steps=int(len(fixed)),
    median_alpha_before=round(float(current_alpha), 3),
    median_alpha_after=round(float(fixed_alpha), 3),
    note=None if trained else "TRAIN_LIVE = False: read from the shipped Cockpit logs (quick budget), no run trained",
)
display(Logbook().to_frame())

# %% [markdown]
# ## Summary
# - **Debugging Strategy V:** look inside the run with Cockpit, using the instruments the run
#   already tracks, once the gradients are reset and the data are sound. Check first
#   (`ct.guard`) what fits into memory and is valid for the model.
# - **Cockpit in your loop** is one `with cockpit(step, info=...)` block around
#   `loss.backward()`. Its cost comes from the per-example quantities: **track them less
#   often** (the curve above) and it is almost free.
# - **Reading the instruments:** loss (*that* something is wrong), gradient norm (piling up?
#   stuck?), distance and update size (does the optimizer move?), α (too short: < 0, too long:
#   > 0; read its median), learning rate (what the schedule really does).
# - **Found** (the numbers are in the claims above): the learning-rate schedule grows, and the
#   learning rate is too small. **Fixed:** no schedule, Adam with lr 1e-3.
# - **BatchNorm** has no per-example gradients: α and the gradient tests are not available
#   there; loss, gradient norm, distance and update size are. GroupNorm keeps all of them.
#
# **Next:** 07 tunes what is left: activation, normalisation and learning rate, over several
# seeds.
