# %% [markdown]
# # 03 · Code review: read the training loop
#
# The handover run does not learn. Before running more experiments, we try the cheapest
# debugging tool there is: **reading the code carefully** (the tutorial's *Debugging
# Strategy II*). It needs no GPU and no waiting: we read the colleague's training loop as we
# would review a pull request, then test what we suspect with a small experiment.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/03_code_review.ipynb)
#
# **You will**
# - review the colleague's training step line by line, without running it;
# - test what you find in a small experiment;
# - fix the step and check your fix;
# - train with the fix, and let an automatic check confirm it;
# - watch the colleague's own loop with a tool that checks it while it runs, then use that
#   tool on a loop of your own.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0

# %%
import itertools

import matplotlib.pyplot as plt
import torch
from torch import nn

from nbhelpers.data import make_loader
from nbhelpers.env import seed_everything
from nbhelpers.experiment import build_run, compare_table, handover_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.models import build_cnn
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.plots import add_reference_lines, plot_runs
from nbhelpers.selfcheck import check
from nbhelpers.stats import above_chance, label_entropy, majority_share
from nbhelpers.watch import watch

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

# %% [markdown]
# ## Read the code
# Here is the heart of the colleague's notebook: one training step, and the loop around it
# (data, model and optimizer are as in notebook 01). **Don't run anything yet.** Read it as
# you would review a colleague's pull request: what does each line do, and is anything
# missing?
#
# ```python
# for epoch in range(EPOCHS):
#     model.train()
#     for x, y in train_loader:
#         x, y = x.to(device), y.to(device)
#         logits = model(x)
#         loss = loss_fn(logits, y)
#         loss.backward()
#         optimizer.step()
#         scheduler.step()
# ```
#
# Compare it with the training loop of any PyTorch tutorial.

# %% [markdown] tags=["exercise"]
# ✍️ *What is missing? Write it here before you read on.*

# %% [markdown] tags=["solution"]
# **Found it:** there is no `optimizer.zero_grad()`. Nothing ever resets the gradients.

# %% [markdown]
# ## Why a missing `zero_grad` matters
# `loss.backward()` does not *store* the gradient in each parameter's `.grad`, it **adds**
# it to what is already there. That is on purpose: it lets you sum gradients over several
# backward passes. So every step must start with `optimizer.zero_grad()`. Without it, step
# $t$ uses
#
# $$\texttt{.grad} = g_1 + g_2 + \dots + g_t,$$
#
# the sum of *all* mini-batch gradients so far. That is **gradient accumulation** by
# accident: like training on a mini-batch that grows by one batch every step, with a
# learning rate that grows along with it. Worse, most of that sum comes from old gradients,
# computed at weights the model left long ago.
#
# Let's see it. The next cell runs a few steps of the handover model on the same batches,
# once with and once without `zero_grad`, and records the norm of the gradient that each
# `optimizer.step()` uses.

# %%
loss_fn = nn.CrossEntropyLoss()
demo_loader = make_loader(bundle.train, budget.batch_size, shuffle=True, device=device, seed=SEED)
demo_steps = min(30, 2 * len(demo_loader))


def gradient_norm(model):
    """Euclidean norm of all the gradients stored in the model's parameters (0 if none)."""
    squares = [(p.grad**2).sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(squares).sum().sqrt().item() if squares else 0.0


def gradient_norms(reset_gradients):
    """Norm of the gradient each optimizer step uses, for `demo_steps` steps of the handover."""
    seed_everything(SEED)
    model = build_cnn("tanh", "none").to(device)  # the handover model, as in notebook 01
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    norms = []
    for x, y in itertools.islice(itertools.cycle(demo_loader), demo_steps):
        if reset_gradients:
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        norms.append(gradient_norm(model))
        optimizer.step()
    return norms


with_reset = gradient_norms(reset_gradients=True)
without_reset = gradient_norms(reset_gradients=False)

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.plot(range(1, demo_steps + 1), without_reset, label="without zero_grad (handover)")
ax.plot(range(1, demo_steps + 1), with_reset, label="with zero_grad")
ax.set_xlabel("step")
ax.set_ylabel("norm of the gradient used by the step")
ax.set_title("Without zero_grad, gradients pile up")
ax.legend()
ax.grid(alpha=0.3)
plt.show()
print(f"after {demo_steps} steps: {without_reset[-1]:.2f} without vs {with_reset[-1]:.2f} with zero_grad")

# %% [markdown]
# With `zero_grad` each step uses a fresh mini-batch gradient, and its size stays about the
# same. Without it the sum keeps growing, step after step. (Adam divides each update by a
# running estimate of the gradient's size, which tames the growth of the *step*, but the
# direction is still dominated by stale gradients from long ago.)
#
# ## Fix the training step
# Below is the colleague's step as a function, `train_step(model, optimizer, x, y)`, so we
# can test it on its own. **Add the missing line** where it belongs, then run the cell and
# the check below it.

# %%
def train_step(model, optimizer, x, y):
    """One optimisation step on the batch (x, y); returns the loss (a float)."""
    # BEGIN SOLUTION
    optimizer.zero_grad()
    # END SOLUTION
    logits = model(x)
    loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item()


# %% [markdown]
# **Check:** two steps on the *same* batch with learning rate 0 (so the weights do not
# move) must each *use* the same gradient, not twice as much the second time. A hook on the
# optimizer (`register_step_pre_hook`, called just before every `optimizer.step()`) records
# the norm of the gradient each step uses, wherever your line resets it.

# %%
x, y = next(iter(demo_loader))
probe = build_cnn("tanh", "none").to(device)
probe_optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
used = []  # the gradient norm each optimizer.step() uses
probe_optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: used.append(gradient_norm(probe)))
train_step(probe, probe_optimizer, x, y)
train_step(probe, probe_optimizer, x, y)
first, second = used
print(f"gradient norm used by step 1: {first:.4f}, by step 2: {second:.4f}")

# %% tags=["exercise"]
check(
    first > 0 and abs(second - first) <= 1e-3 * first,
    "Every step starts from a fresh gradient.",
    "The step found no gradient at all: reset before loss.backward(), not between backward() "
    "and step()."
    if first == 0
    else f"Step 2 used {second / first:.1f}x the gradient of step 1: it added to what step 1 "
    "left behind. What has to happen before loss.backward()?",
)

# %% tags=["solution"]
assert first > 0 and abs(second - first) <= 1e-3 * first, (first, second)

# %% [markdown]
# ## Train with the fix
# Now a run with this one fix and **nothing else changed**: the same learning rate,
# schedule and rotations as the colleague's. `run()` trains with the loop from `nbhelpers`, which
# does exactly what your fixed `train_step` does (`zero_grad=True`) or reproduces the bug
# (`zero_grad=False`). Runs are cached: a second execution loads them from disk. As in
# notebook 02, we use the fast device-resident data loader and evaluate only once, at the end:
# for now the training loss measured *during* each epoch tells us enough.
#
# Two reference lines in the plot tell what "not learning" looks like. A model that ignores
# the image can still learn how often each digit occurs: its accuracy is at most **chance
# level** (always answering the most frequent digit, dotted), and its loss is at least the
# **label entropy** (the loss of predicting the digits' frequencies,
# $-\sum_c p_c \ln p_c$, dashed).
#
# {{time:train-fixed}}

# %%
# time: train-fixed
# the fast loader (02); evaluate valid and test once, after the last epoch
fast = dict(source=bundle.source, loader="tensor", eval_splits=("valid", "test"), eval_every=budget.epochs)
handover_cfg = handover_config(budget, name="handover-fast", **fast)
fixed_cfg = handover_config(budget, name="zero-grad-fixed", zero_grad=True, **fast)

handover = run(handover_cfg, data=bundle)
fixed = run(fixed_cfg, data=bundle)

# References: the loss (nats) of predicting the digits' frequencies, and the accuracy of
# always guessing the most frequent digit
entropy = label_entropy(bundle.train.labels)
chance = majority_share(bundle.train.labels)

fig_runs = plot_runs([handover, fixed], split="running", names=["handover", "with zero_grad"])
add_reference_lines(fig_runs, chance=chance, entropy=entropy)
fig_runs.suptitle("One line changed: optimizer.zero_grad() (training loss and accuracy per epoch)")
fig_runs.tight_layout()
plt.show()
compare_table([handover, fixed])

# %% [markdown]
# The tutorial's verdict on this fix: *"With this fix alone we can already (somewhat) train
# our network. Success!"* Does our run bear it out? Two numbers decide: is the test accuracy
# above chance by more than luck (an exact binomial test: how likely would a model that is
# right with the chance probability get this many test images right?), and is the training
# loss of the last epoch below the label entropy?

# %%
# both runs are measured on the same images (the colleague's test split)
test_labels = build_run(fixed_cfg, bundle, "cpu").eval_sets["test"].labels
test_chance = majority_share(test_labels)  # no answer that ignores the image scores more


def learns(record):
    """(test accuracy vs chance, last-epoch training loss, does it learn?) of one run."""
    vs_chance = above_chance(record.final("test_accuracy"), len(test_labels), test_chance)
    loss = record.final("running_loss")
    return vs_chance, loss, bool(vs_chance.above and loss < entropy - 0.05)


for label, record in [("handover", handover), ("with zero_grad", fixed)]:
    vs_chance, loss, ok = learns(record)
    print(f"{label:>15}: test {vs_chance.evidence}; last-epoch training loss {loss:.3f} vs label entropy {entropy:.3f}")
fixed_vs_chance, fixed_loss, fixed_learns = learns(fixed)
print(
    "With zero_grad the network learns something about the images: above chance, and below "
    "the loss of predicting only the digit frequencies."
    if fixed_learns
    else "With zero_grad alone the network has not yet learned anything about the images on "
    "this data and budget: it does no better than one that ignores them."
)

# %% [markdown]
# Compare the two loss curves: with `zero_grad` each step follows the current mini-batch
# gradient; without it, every step follows the ever-growing sum of all past gradients. The
# verdict above is computed from this run; on the tiny budget it is noise. The other faults
# of the handover are still there, and we will meet them one by one. (The "test" accuracy
# here is the colleague's; notebook 05 looks at where its images come from.)
#
# ## Let a tool confirm it
# Reading code finds bugs, but a test keeps them from coming back. `nbhelpers.checks` has
# automatic checks for common training bugs. `check_zero_grad` runs a step function three
# times on one batch (on a copy of the model, with learning rate 0) and watches whether the
# stored gradient grows. Here it is on the colleague's step and on yours:

# %%
from nbhelpers.checks import check_zero_grad


def handover_step(model, optimizer, x, y):
    """The colleague's step, unchanged."""
    logits = model(x)
    loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item()


model = build_cnn("tanh", "none").to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
print("The colleague's step (handover_step):")
display(check_zero_grad(model, optimizer, handover_step, x, y))
print("Your step (train_step):")
display(check_zero_grad(model, optimizer, train_step, x, y))

# %% tags=["solution"]
assert check_zero_grad(model, optimizer, handover_step, x, y).passed is False
assert check_zero_grad(model, optimizer, train_step, x, y).passed is True

# %% [markdown]
# ## Catch it live: watch the colleague's own loop
# `check_zero_grad` calls a step function it is given. Most bugs, though, live in the loop
# itself, in resume code or in evaluation code, which no check sees. `nbhelpers.watch`
# looks at the loop *while it runs*: one `with watch(model, optimizer):` line around the
# loop, nothing inside changes. It puts hooks on the model, the optimizer and the loss and
# checks, at every step, invariants of correct training: each step starts from reset
# gradients (the gradient hook of the model's output fires in `backward()` before anything
# is added to `.grad`, so the watch sees whether `.grad` still holds the last step's
# gradient), the learning rate neither collapses nor jumps, evaluation computes the loss as
# training does, and more. Each fault is reported once, by name, with its numbers and a hint.
#
# Here is the colleague's loop, exactly as we read it above, for its first steps:

# %%
model = build_cnn("tanh", "none").to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
watch_steps = min(10, len(demo_loader))

with watch(model, optimizer) as colleague_watch:
    model.train()
    for x, y in itertools.islice(demo_loader, watch_steps):
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
colleague_watch.report()

# %% [markdown]
# And the same loop with your `train_step`:

# %%
model = build_cnn("tanh", "none").to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
with watch(model, optimizer) as fixed_watch:
    model.train()
    for x, y in itertools.islice(demo_loader, watch_steps):
        train_step(model, optimizer, x, y)

# %% tags=["solution"]
assert "zero_grad" in colleague_watch.found and colleague_watch.found["zero_grad"].details["step"] == 1
assert fixed_watch.ok, fixed_watch.report()

# %% [markdown]
# ## Use it on your own code
# The watch is not limited to the handover's bug. Say you want a 4x larger batch than fits
# in memory, so you accumulate gradients over 4 mini-batches before each step. That is
# exactly what `backward()` adding to `.grad` is for, and the loop below resets the
# gradients once per step, as it should. Is it right?

# %%
MICRO_BATCHES = 4


def accumulating_epoch(model, optimizer, loader):
    """One optimizer step per MICRO_BATCHES mini-batches (gradient accumulation)."""
    model.train()
    optimizer.zero_grad()
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        loss.backward()
        if (i + 1) % MICRO_BATCHES == 0:
            optimizer.step()
            optimizer.zero_grad()


model = build_cnn("relu", "batch", width=budget.sweep_width).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
accumulation_batches = 2 * MICRO_BATCHES
with watch(model, optimizer) as own_watch:
    accumulating_epoch(model, optimizer, itertools.islice(demo_loader, accumulation_batches))
own_watch.report()

# %% [markdown]
# The watch knows, from a hook on each loss, the factor `backward()` gave it: `1.0` for
# `loss.backward()`. Four micro-batch losses each counted fully make a gradient 4 times the
# mean gradient of the 4 mini-batches together: with SGD that is a learning rate 4 times too
# large (Adam hides much of it, but not the balance with weight decay or clipping). The fix
# is one division:

# %%
def accumulating_epoch(model, optimizer, loader):
    """One optimizer step per MICRO_BATCHES mini-batches, on the mean gradient."""
    model.train()
    optimizer.zero_grad()
    for i, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y)
        (loss / MICRO_BATCHES).backward()
        if (i + 1) % MICRO_BATCHES == 0:
            optimizer.step()
            optimizer.zero_grad()


model = build_cnn("relu", "batch", width=budget.sweep_width).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
with watch(model, optimizer) as own_fixed_watch:
    accumulating_epoch(model, optimizer, itertools.islice(demo_loader, accumulation_batches))

# %% tags=["solution"]
assert "accumulation" in own_watch.found and own_fixed_watch.ok, own_fixed_watch.report()

# %% [markdown]
# To watch your own run, put `with watch(model, optimizer, train_loader=train_loader,
# eval_loaders={"valid": valid_loader}):` around your loop: with the loaders it also checks
# how the splits were cut (a `random_split` without a seed, train and validation sharing one
# dataset object and so one transform). `report()` lists every invariant it checked.

# %% [markdown]
# ## Logbook

# %%
caught = colleague_watch.found.get("zero_grad")
watch_result = (
    f" The watch flagged zero_grad at step {caught.details['step']} of the colleague's loop"
    if caught
    else " The watch flagged nothing in the colleague's loop"
) + f" and {len(fixed_watch.found)} fault(s) in the fixed one."
book = Logbook()
book.add(
    "03 code review",
    observation="The training loop never calls optimizer.zero_grad(); the gradient norm used "
    f"by each step grows from {without_reset[0]:.2f} to {without_reset[-1]:.2f} in {demo_steps} steps.",
    hypothesis="Gradients accumulate over all steps (accidental gradient accumulation), so each "
    "step follows a stale, ever-growing sum instead of the current mini-batch gradient.",
    result=f"With zero_grad the training loss of the last epoch is {fixed_loss:.3f} "
    f"(handover: {handover.final('running_loss'):.3f}, label entropy {entropy:.3f}); test "
    f"{fixed_vs_chance.evidence}: "
    + ("it learns from the images." if fixed_learns else "not yet better than ignoring the images.")
    + watch_result,
    notebook="03_code_review.ipynb",
    figure=fig_runs,
    runs=[handover, fixed],
    key="03",
)
record_stage(
    "03",
    "zero_grad fixed",
    test_accuracy=fixed.final("test_accuracy"),
    test_split="colleague",
    run_time_s=fixed.timings.get("wall_s"),
    claims=[
        Claim(
            "with the zero_grad fix alone the network (somewhat) trains: test accuracy above "
            "chance, training loss below the label entropy",
            fixed_learns,
            f"test {fixed_vs_chance.evidence}; last-epoch training loss {fixed_loss:.3f} vs "
            f"label entropy {entropy:.3f} (handover: test {handover.final('test_accuracy'):.1%}, "
            f"loss {handover.final('running_loss'):.3f})",
        )
    ],
)
# the logbook so far, compactly
display(book.to_frame())

# %% [markdown]
# ## Summary
# - **Debugging Strategy II:** read the code carefully. It costs nothing and needs no run.
# - **Bug:** no `optimizer.zero_grad()`. `backward()` adds to `.grad`, so without a reset
#   every step uses the sum of all past gradients.
# - With this one line fixed, each step follows the current gradient; whether that is
#   enough to learn from the images on this budget is the claim recorded above, computed
#   from the run. An automatic check now guards the fix.
# - **The watch** (`with watch(model, optimizer):`) checks a loop while it runs: it caught the
#   missing reset at the colleague's second step, and an accumulation that forgot to divide.
#
# **Next:** 04 turns off the extras (augmentation, learning-rate schedule) to get a simple
# baseline that works.
