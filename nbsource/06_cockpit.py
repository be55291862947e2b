# %% [markdown]
# # 06 · Cockpit: look inside the training run
#
# After notebooks 03 to 05 the gradients are reset every step and the data are sound. One
# part of the colleague's setup is still untouched: **Adam with learning rate 1e-5 and an
# exponential schedule with γ = 1.001, stepped after every batch.** Notebook 04 switched the
# schedule off to get a simple baseline; here we switch it back on and ask a different tool.
# The colleague's notebook already ran **Cockpit** (Schneider, Dangel & Hennig, NeurIPS 2021),
# a debugger that shows what happens *inside* the training: step sizes, gradients, distances.
# We use the same instruments at the same tracking intervals (the tutorial: "uses the already
# set up quantities and tracking frequencies"), learn to read them, and let them point at two
# faults. This is the tutorial's *Debugging Strategy V*.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/06_cockpit.ipynb)
#
# **You will**
# - check *before* training which Cockpit instruments fit into memory and are valid for a model;
# - read five instruments: loss, gradient norm, distance and update size, the step size α, the learning rate;
# - diagnose the learning-rate schedule and the learning rate from the plots;
# - compare the instruments before and after the fix, side by side;
# - learn why Cockpit was switched off for the BatchNorm model, and what still works there.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0
TRAIN_LIVE = True  # False: show the Cockpit logs of two finished runs shipped with nbhelpers (instant)

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display
from torch import nn

from nbhelpers import cockpit_tools as ct  # also makes `import cockpit` work today
from nbhelpers.experiment import describe_config, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import record_stage, start
from nbhelpers.selfcheck import check

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle
print(f"Cockpit {ct.cockpit_version()}; tracked steps per run: {budget.cockpit_steps}")

# %% [markdown]
# ## The instruments of the handover
# Cockpit computes **quantities** during the backward pass and draws them as **instruments**.
# Some are almost free (the loss, the norm of the gradient); others need per-example
# gradients or curvature and cost real time and memory. The colleague tracked the cheap ones:
# α every 10 steps; distance, gradient norm, loss and update size every step. In `nbhelpers`
# that set is the preset `"cheap"`; the table lists it among the others.

# %%
display(Markdown(ct.preset_markdown(["basic", "cheap", "standard", "thorough", "full"])))
TUTORIAL_PRESET = "cheap"
for spec in ct.preset_specs(TUTORIAL_PRESET):
    print(f"{spec.name:>10} every {spec.every:>2} step(s): {ct.QUANTITIES[spec.name].meaning}")

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
HANDOVER_BATCH_SIZE = 256  # the colleague's batch size
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
# With `on_refusal="drop"` (the default of `CockpitHook`), refused quantities are left out
# with the same explanation and training goes on with the rest.
#
# ## Run the current code with Cockpit
# The run below is the colleague's, with the fixes of notebooks 03 to 05 (`zero_grad`, data
# from the right splits, no rotations), but the **original optimizer settings**: Adam with
# learning rate 1e-5 and `ExponentialLR(gamma=1.001)` stepped after every batch.
#
# A `CockpitHook` plugs Cockpit into the training loop of `nbhelpers`. At every step it does
# what the colleague's loop did (see `help(ct.CockpitHook)`):
#
# ```python
# losses = F.cross_entropy(logits, y, reduction="none")  # per-example losses, for alpha
# with cockpit(step, info={"batch_size": len(y), "individual_losses": losses,
#                          "loss": loss, "optimizer": optimizer}):
#     loss.backward(create_graph=cockpit.create_graph(step))
# ```
#
# and it refreshes a few instruments below the cell while the run trains.
#
# Cockpit makes every step slower, so we track `budget.cockpit_steps` steps. With
# `TRAIN_LIVE = False` (parameters cell) the notebook shows the logs of two finished
# runs shipped with `nbhelpers` instead, without training.

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


def cockpit_run(config, shipped, live=False):
    """Train `config` with the tutorial's Cockpit instruments, or (TRAIN_LIVE = False) load the
    log of the shipped run `shipped`. `live`: instruments to refresh while training.
    Returns (log, record); record is None for a shipped log."""
    if not TRAIN_LIVE:
        try:
            log = ct.load_shipped_log(shipped)
            print(f"Shipped log {shipped!r}: {ct.SHIPPED_LOGS[shipped]}; {len(log)} steps.")
            return log, None
        except FileNotFoundError as err:
            print(f"{err}\nTraining live instead.")
    hook = ct.CockpitHook(TUTORIAL_PRESET, live=live)
    record = run(config, data=bundle, hooks=[hook])
    return hook.log, record


current_log, current_record = cockpit_run(current_cfg, "handover", live=["loss", "distance", "alpha"])
current = ct.log_frame(current_log)  # one row per step, one column per quantity
CURRENT = "current code" if current_record is not None else "original handover, shipped log"
current.head()

# %% [markdown]
# ## The whole cockpit
# This is the view the colleague had (Cockpit's own dashboard, drawn so that it shows every
# time the cell runs). Top left: **step size** (α, distance, gradient norm); bottom:
# **hyperparameters** (the learning rate) and **performance** (mini-batch loss, accuracies).
# With the tutorial's set the *gradients* and *curvature* panels stay empty: it does not track
# those quantities. (Preset `"standard"` fills the gradients panel, as in the shipped logs
# shown with `TRAIN_LIVE = False`; `"thorough"` adds curvature.)

# %%
ct.plot_dashboard(current_log, title=f"Cockpit: {CURRENT} (Adam lr 1e-5, growing schedule)")

# %% [markdown]
# A dashboard is dense. Let us read its instruments one at a time.
#
# ### 1. Loss
# The mini-batch training loss of every step (dots) and a smoothed line. It is the first thing
# to look at and the least specific: it tells you *that* something is wrong, rarely *what*. Ten
# classes guessed at random give ln 10 ≈ 2.30. Does the line move away from it?

# %%
ct.plot_loss(current)

# %% [markdown]
# ### 2. Gradient norm
# The length ‖g‖ of the mini-batch gradient the optimizer used (all layers together). If it
# grows step after step, gradients pile up (the missing `zero_grad` of notebook 03 looks like
# that) or the run diverges; if it collapses to 0, the run is stuck. In the current code it
# stays small and changes only slowly: nothing piles up, nothing explodes. Keep its size in
# mind for the comparison after the fix. (The shipped log of the original handover, shown
# with `TRAIN_LIVE = False`, still lacks `zero_grad`: there it grows.)

# %%
ct.plot_grad_norm(current)

# %% [markdown]
# ### 3. Distance and update size
# **Distance**: how far the weights are from where they started (L2 norm of the difference).
# **Update size**: how far each single step moved them. Both are norms over all 550,570
# weights. Compare them with the size of the weights themselves (printed below): a run that
# learns soon moves its weights by a noticeable fraction of that. Tiny updates mean the
# optimizer barely moves.

# %%
display(ct.plot_distance(current))
initial_weights = torch.cat([p.detach().flatten() for p in build_cnn("tanh", "none").parameters()])
print(f"norm of the initial weights: {initial_weights.norm():.1f}")
print(f"median update size: {current['UpdateSize'].median():.2g}")
print(f"distance after the last step: {current['Distance'].iloc[-1]:.2g}")

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
# A single α is noisy; the **distribution** over many steps is what counts. (The Cockpit
# authors found that well-tuned runs often overshoot a little, α just above 0.) α needs
# per-example gradients, so it is tracked only every 10th step.

# %%
ct.plot_alpha(current)

# %% [markdown]
# ### 5. Learning rate
# Not a Cockpit quantity but part of its dashboard: the learning rate each step used, as the
# optimizer saw it. A schedule is code, and code can do something other than its author
# meant. This plot shows what it really does.

# %%
ct.plot_learning_rate(current)

# %% [markdown]
# In our short run the learning rate has only crept up. But `ExponentialLR` multiplies it by
# γ after **every** call of `scheduler.step()`, and the colleague calls it after every batch,
# for 10 epochs of SVHN. With γ > 1 nothing decays. Here is the colleague's schedule over their
# whole run (no training needed: we just step the scheduler), with what Cockpit recorded in our
# run at its start:

# %%
SVHN_TRAIN_IMAGES, HANDOVER_EPOCHS = 73_257, 10  # the colleague's run
handover_steps = HANDOVER_EPOCHS * math.ceil(SVHN_TRAIN_IMAGES / HANDOVER_BATCH_SIZE)

dummy = torch.zeros(1, requires_grad=True)
optimizer = torch.optim.Adam([dummy], lr=1e-5)
scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.001)  # as in the handover
lrs = []
for _ in range(handover_steps):
    lrs.append(scheduler.get_last_lr()[0])
    optimizer.step()
    scheduler.step()  # after every batch, as in the handover

fig_lr, ax = plt.subplots(figsize=(8, 3.6))
ax.plot(lrs, color="C2", lw=2, label="ExponentialLR(gamma=1.001) per batch, 10 epochs")
recorded = current["learning_rate"].dropna()
ax.plot(recorded.index, recorded.values, color="C3", lw=4, label="recorded by Cockpit in our run")
ax.axhline(1e-5, color="0.5", ls="--", lw=1, label="start value 1e-5")
for epoch in range(1, HANDOVER_EPOCHS):
    ax.axvline(epoch * handover_steps / HANDOVER_EPOCHS, color="0.85", lw=0.8, zorder=0)
ax.set(xlabel="step (batch); grey lines: epochs", ylabel="learning rate")
ax.set_title("The colleague's learning-rate schedule")
ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
ax.legend(loc="upper left")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Your diagnosis
# Read the plots above and fill in two things:
#
# 1. `growth_factor`: by what factor does the learning rate grow over the colleague's 10
#    epochs? (Read the start and end values off the schedule plot, or compute it.)
# 2. `step_size`: what does the α distribution say about the steps of the current run:
#    `"too small"`, `"about right"` or `"too large"`?

# %%
# BEGIN SOLUTION
growth_factor = 1.001**handover_steps  # the same as lrs[-1] / lrs[0], up to one step
step_size = "too small"
# END SOLUTION
# BEGIN EXERCISE
growth_factor = None  # a number
step_size = None  # "too small", "about right" or "too large"
# END EXERCISE

# %% tags=["exercise"]
schedule_growth = lrs[-1] / lrs[0]
alpha_median = current["Alpha"].median()
alpha_says = "too small" if alpha_median < -0.5 else "too large" if alpha_median > 0.5 else "about right"
check(
    isinstance(growth_factor, (int, float)) and abs(growth_factor - schedule_growth) < 0.1 * schedule_growth,
    f"Right: the learning rate ends about {schedule_growth:.1f} times higher than it starts.",
    "The schedule multiplies the learning rate by gamma = 1.001 after every batch. Divide the "
    "last value of the schedule plot by the first, or raise gamma to the number of batches in 10 epochs.",
    fail_msg=f"Not yet: growth_factor is {growth_factor!r}.",
)
check(
    str(step_size).strip().lower() == alpha_says,
    f"Right: the steps are {alpha_says} (median α = {alpha_median:+.2f}).",
    "Where does most of the α histogram lie: left of 0, around 0, or right of 0? "
    "Then reread what a negative and a positive α mean in section 4.",
    fail_msg=f"Not yet: step_size is {step_size!r}.",
)

# %% tags=["solution"]
schedule_growth = lrs[-1] / lrs[0]
alpha_median = current["Alpha"].median()
alpha_says = "too small" if alpha_median < -0.5 else "too large" if alpha_median > 0.5 else "about right"
assert abs(growth_factor - schedule_growth) < 0.1 * schedule_growth and 15 < growth_factor < 20
assert step_size == "too small"
if budget.name != "tiny":  # a dozen tracked steps at the tiny budget say little
    assert alpha_says == "too small", alpha_median

# %% [markdown] tags=["solution"]
# **Diagnosis.** (1) The schedule makes the learning rate **grow** about 17.6-fold over the 10
# epochs, from 1e-5 to about 1.8e-4: an "exponential decay" with γ > 1, stepped per batch.
# It only helps because it covers up the second fault. (2) α piles up well below 0 (close to
# −1): the steps stop long before the valley floor along their direction. Together with the
# tiny update sizes, that says: **the learning rate is too small**, at least at the start,
# before the schedule has raised it.

# %% [markdown]
# ## The fix
# Both faults, both fixes: **no schedule** (a simple, constant learning rate first, as in
# notebook 04), and a **100 times larger learning rate**, Adam with 1e-3. (The tutorial's
# reference fix uses 2e-3, for a model with BatchNorm; 1e-3 is a safe start for the Tanh
# network.) Same data, same number of tracked steps, same instruments.

# %%
fixed_cfg = current_cfg.replace(name="cockpit-fixed", lr=1e-3, schedule="none")
print(describe_config(fixed_cfg))
fixed_log, fixed_record = cockpit_run(fixed_cfg, "fixed")
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
        title = f"{label}: {ax.get_title(loc='left')}"
        ax.set_title(title, loc="left", fontsize=9.5, fontweight="bold")
for row in (names.index("distance"), names.index("learning_rate")):
    axes[row, 0].set_yscale("log")  # shared with the right column
fig_side.suptitle(f"Cockpit before ({CURRENT}) and after the fix", fontweight="bold")
plt.show()


def readings(frame):
    """The key readings of one run's instruments, as text."""
    lr, loss = frame["learning_rate"], frame["Loss"]
    quarter = max(1, len(frame) // 4)
    return {
        "learning rate, first -> last step": f"{lr.iloc[0]:.3g} -> {lr.iloc[-1]:.3g}",
        "median alpha": f"{frame['Alpha'].median():+.2f}",
        "median update size": f"{frame['UpdateSize'].median():.2g}",
        "distance from init at the end": f"{frame['Distance'].iloc[-1]:.2g}",
        "mini-batch loss, first -> last quarter of the steps": (
            f"{loss.iloc[:quarter].mean():.3f} -> {loss.iloc[-quarter:].mean():.3f}"
        ),
    }


pd.DataFrame({label: readings(frame) for label, frame in runs.items()})

# %% [markdown]
# Read it row by row: the learning rate is constant now; the updates are tens of times
# larger and the weights travel much further from their start; α moves from about −1 up to
# around 0 (at the longer budgets a little above: slight overshooting, as in well-tuned runs);
# and the loss falls within the same number of steps. The gradient norm grows as the network
# starts to learn: that is normal here, not gradients piling up.

# %% tags=["solution"]
assert fixed["learning_rate"].nunique() == 1 and current["learning_rate"].is_monotonic_increasing
assert fixed["UpdateSize"].median() > 10 * current["UpdateSize"].median()
assert fixed["Distance"].iloc[-1] > 5 * current["Distance"].iloc[-1]
assert fixed["Alpha"].median() > current["Alpha"].median()

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
current_alpha, fixed_alpha = current["Alpha"].median(), fixed["Alpha"].median()
update_ratio = fixed["UpdateSize"].median() / current["UpdateSize"].median()
trained = fixed_record is not None
fixed_accuracy = fixed_record.final("test_accuracy") if trained else None
book = Logbook()
book.add(
    "06 Cockpit diagnostics",
    observation=f"Cockpit on the current code (Adam lr 1e-5, ExponentialLR(1.001) per batch): the "
    f"learning rate rises in every step ({lrs[-1] / lrs[0]:.1f}x over the handover's 10 epochs); "
    f"median alpha {current_alpha:+.2f}; update sizes around {current['UpdateSize'].median():.1e}.",
    hypothesis="The schedule grows instead of decaying, and the learning rate is far too small: "
    "every step stops long before the minimum along its direction.",
    result=f"No schedule, Adam lr 1e-3: median alpha {fixed_alpha:+.2f}, updates {update_ratio:.0f}x larger, "
    "loss falls within the same steps"
    + (f"; test accuracy {fixed_accuracy:.1%} after {budget.cockpit_steps} steps." if trained else "."),
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
    steps=int(len(fixed)),
    median_alpha_before=round(float(current_alpha), 3),
    median_alpha_after=round(float(fixed_alpha), 3),
    note=None if trained else "TRAIN_LIVE = False: shipped Cockpit logs shown, no run trained",
)

# %% [markdown]
# ## Summary
# - **Debugging Strategy V:** look inside the run with Cockpit, using the instruments the run
#   already tracks. Check first (`ct.guard`) what fits into memory and is valid for the model.
# - **Reading the instruments:** loss (*that* something is wrong), gradient norm (piling up?
#   stuck?), distance and update size (does the optimizer move?), α (too short: < 0, too long:
#   > 0), learning rate (what the schedule really does).
# - **Found:** the learning-rate schedule *grows* (≈17.6x over 10 epochs), and the learning
#   rate is too small (α ≈ −1, tiny updates). **Fixed:** no schedule, Adam with lr 1e-3.
# - **BatchNorm** has no per-example gradients: α and the gradient tests are not available
#   there; loss, gradient norm, distance and update size are. GroupNorm keeps all of them.
#
# **Next:** 07 tunes what is left: activation, normalisation and learning rate, over several
# seeds.
