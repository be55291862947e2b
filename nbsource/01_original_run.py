# %% [markdown]
# # 01 · The original run, as handed over
#
# A colleague trained a small CNN on SVHN, the Street View House Numbers: photos of
# single digits, 32×32 pixels, ten classes. It is slow and it does not learn, and now it
# is your problem. Before changing anything, we run their code **exactly as it was handed
# over** and write down what we see. Every later notebook fixes one thing; this one is the
# baseline we will measure them against.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/01_original_run.ipynb)
#
# **You will**
# - run the colleague's code unchanged: data, model, optimizer, training loop;
# - time it and estimate how long the full run takes on your machine;
# - plot its learning curves and compare them with chance level;
# - write your first impression into the logbook.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision import transforms
from tqdm.auto import tqdm

from nbhelpers.logbook import Logbook
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.plots import add_reference_lines, plot_learning_curves
from nbhelpers.stats import above_chance, label_entropy, majority_share

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

# %% [markdown]
# `start` picked the device, fixed all seeds, and loaded the data at the size of the
# **budget**: a few hundred images for tests, a few thousand on a CPU (`quick`), all of
# SVHN on a GPU (`full`). The colleague's code below is theirs; only the data sizes,
# batch size, epoch count and how often it evaluates come from the budget, so the same code
# runs everywhere.
#
# ## The colleague's code
#
# Read it if you like, but **do not fix anything yet**: first we want to see what it does.
#
# ### Data
# The images are turned into PIL images one by one (as `torchvision.datasets.SVHN` does),
# randomly rotated, and converted to tensors. The evaluation data are split in half into a
# validation and a test set.

# %%
train_transform = transforms.Compose([transforms.RandomRotation(180), transforms.ToTensor()])
eval_transform = transforms.ToTensor()

train_data = bundle.train.to_dataset(train_transform)
eval_data = bundle.train.to_dataset(eval_transform)
valid_data, test_data = torch.utils.data.random_split(
    eval_data, [0.5, 0.5], generator=torch.Generator().manual_seed(SEED)
)

BATCH_SIZE = budget.batch_size  # the colleague used 256
train_loader = torch.utils.data.DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=True)
valid_loader = torch.utils.data.DataLoader(valid_data, batch_size=BATCH_SIZE)
test_loader = torch.utils.data.DataLoader(test_data, batch_size=BATCH_SIZE)

print(f"train {len(train_data)}, valid {len(valid_data)}, test {len(test_data)} images")
print(f"{len(train_loader)} steps per epoch at batch size {BATCH_SIZE}")

# %% [markdown]
# ### Model
# Six 3×3 convolutions in three blocks, Tanh after each, max pooling after each block,
# then two linear layers. The output is one score (logit) per digit class.

# %%
torch.manual_seed(SEED)
model = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.Tanh(),
    nn.Conv2d(32, 32, 3, padding=1), nn.Tanh(),
    nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.Tanh(),
    nn.Conv2d(64, 64, 3, padding=1), nn.Tanh(),
    nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.Tanh(),
    nn.Conv2d(128, 128, 3, padding=1), nn.Tanh(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(128 * 4 * 4, 128), nn.Tanh(),
    nn.Linear(128, 10),
).to(device)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ### Optimizer and learning-rate schedule

# %%
EPOCHS = budget.epochs  # the colleague used 10
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=1.001)

# %% [markdown]
# ### Cockpit (left out for now)
# The colleague also watched the run with [Cockpit](https://github.com/f-dangel/cockpit), a
# debugger that tracks quantities such as the gradient norm and the step size during
# training. Their notebook had this around the backward pass:
#
# ```python
# from backpack import extend
# from cockpit import Cockpit, CockpitPlotter
# import cockpit.quantities as Q
# from cockpit.utils.schedules import linear
#
# model, loss_fn = extend(model), extend(loss_fn)
# every_step = linear(1)
# cockpit = Cockpit(model.parameters(), quantities=[
#     Q.Alpha(linear(10)), Q.Distance(every_step), Q.GradNorm(every_step),
#     Q.Loss(every_step), Q.UpdateSize(every_step),
# ])
# ...
# with cockpit(step, info={"batch_size": len(x), "individual_losses": losses,
#                          "loss": loss, "optimizer": optimizer}):
#     loss.backward(create_graph=cockpit.create_graph(step))
# ...
# cockpit.write("logfiles/run"); CockpitPlotter().plot("logfiles/run")
# ```
#
# We leave it out here: Cockpit computes extra quantities at every step, which makes
# training several times slower, and reading its instruments is a skill of its own. It gets
# its own notebook (06), where it will tell us a lot about this run.

# %% [markdown]
# ### Training
# After every epoch the colleague measured loss and accuracy on the train, validation and
# test sets. On a small budget we measure every `EVAL_EVERY` epochs (and after the last
# one), which saves time and changes nothing about the training. We also time everything.
#
# {{time:train-handover}}

# %%
# time: train-handover
@torch.no_grad()
def evaluate(model, loader):
    """Mean loss and accuracy of `model` on all batches of `loader`."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
    return total_loss / count, correct / count


EVAL_EVERY = budget.eval_every  # the colleague evaluated after every epoch
history = []
train_seconds = eval_seconds = 0.0
progress = tqdm(total=EPOCHS * len(train_loader), desc="training", unit="step")
for epoch in range(1, EPOCHS + 1):
    model.train()
    t0 = time.perf_counter()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.update()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    t1 = time.perf_counter()
    train_seconds += t1 - t0
    if epoch % EVAL_EVERY and epoch != EPOCHS:
        continue
    row = {"epoch": epoch, "lr": scheduler.get_last_lr()[0]}
    for name, loader in [("train", train_loader), ("valid", valid_loader), ("test", test_loader)]:
        row[f"{name}_loss"], row[f"{name}_accuracy"] = evaluate(model, loader)
    eval_seconds += time.perf_counter() - t1
    history.append(row)
    print(
        f"epoch {epoch}: train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.1%} | "
        f"valid acc {row['valid_accuracy']:.1%} | test acc {row['test_accuracy']:.1%}"
    )
progress.close()
total_seconds = train_seconds + eval_seconds
print(f"{total_seconds:.1f} s in total: {train_seconds:.1f} s training, {eval_seconds:.1f} s evaluating")

# %% [markdown]
# ## What did we get?
# Two reference lines tell what "not learning" looks like. A model that ignores the image
# can still learn how often each digit occurs:
# - **chance level** (dotted): the accuracy of always answering the most frequent digit;
# - **label entropy** (dashed): the loss of always predicting the digits' frequencies,
#   $-\sum_c p_c \ln p_c$ over the classes $c$ with frequencies $p_c$.
#
# A network that learns something about the images gets above the first and below the second.

# %%
chance = majority_share(bundle.train.labels)  # accuracy of always guessing the most frequent digit
entropy = label_entropy(bundle.train.labels)  # loss (nats) of predicting the digit frequencies

fig = plot_learning_curves({"name": "handover", "history": history}, title="The handover run")
add_reference_lines(fig, chance=chance, entropy=entropy)
fig.axes[1].set_ylim(0, 1)
plt.show()

final = history[-1]
test_labels = bundle.train.labels[torch.as_tensor(test_data.indices)]  # the colleague's test split
# no answer that ignores the image scores more on these labels than their most frequent digit
test_vs_chance = above_chance(final["test_accuracy"], len(test_labels), majority_share(test_labels))
learns = test_vs_chance.above or final["train_loss"] < entropy - 0.05
print(
    f"After {EPOCHS} epochs: test accuracy {test_vs_chance.evidence}; train loss "
    f"{final['train_loss']:.3f} vs label entropy {entropy:.3f}."
)
print(
    "The network learns something about the images."
    if learns
    else "The network has learned nothing about the images: no better than ignoring them."
)

# %% [markdown]
# ### How long would the real thing take?
# The colleague trained on all 73,257 SVHN training images for 10 epochs. Time scales with
# the number of images, so we can extrapolate from our measurement. The colleague's own
# times are not on the tutorial's slides; they come from the course's public exercise and
# its solution notebook (Numerics of Machine Learning, exercise 11 "Optimization for Deep
# Learning", University of Tübingen,
# [github.com/philipphennig/NumericsOfML](https://github.com/philipphennig/NumericsOfML),
# `exercises/11_Deep_Learning_Optimization`).

# %%
FULL_TRAIN, FULL_EVAL, FULL_EPOCHS = 73_257, 73_257 * 2, 10  # evaluation: train + the train split again
per_train_image = train_seconds / (EPOCHS * len(train_data))
per_eval_image = eval_seconds / (len(history) * (len(train_data) + len(eval_data)))
estimate = FULL_EPOCHS * (FULL_TRAIN * per_train_image + FULL_EVAL * per_eval_image)
print(f"Measured: {len(train_data) / (train_seconds / EPOCHS):.0f} training images/s on {device}.")
print(f"The full handover run would take about {estimate / 60:.0f} minutes here.")
print("The colleague reported about 10 minutes on a GPU and 25 minutes on a CPU (the course's")
print("public exercise: Numerics of ML, exercise 11, University of Tübingen, see the link below).")

# %% [markdown]
# ## Your first impression
#
# Look at the curves and the times. In one or two sentences each:
# 1. How long does one run take, and how long would the full run take?
# 2. Does the network learn? Compare the accuracies with chance level.
#
# There is no right or wrong here; this is the starting point of your logbook.

# %% [markdown] tags=["exercise"]
# ✍️ *Write your first impression into `observation` in the logbook cell at the end of
# this notebook.*

# %% [markdown] tags=["solution"]
# **A sample first impression** (the tutorial's, in the words of a debugger):
# - *The code takes a long time to run!* One full run takes minutes on a GPU and much
#   longer on a CPU, too slow to try many ideas.
# - *The network doesn't train at all!* The loss hardly moves and the accuracy stays near
#   chance level on every split.

# %% tags=["solution"]
assert history[-1]["epoch"] == EPOCHS and total_seconds > 0
if budget.name != "tiny":  # at the tiny budget the numbers are noise
    assert not learns, (test_vs_chance, final["train_loss"], entropy)

# %% [markdown]
# ## Logbook
# Write the observation down. `key="01"` makes re-running this cell replace the entry
# instead of adding a second one. Put your own words into `observation`.

# %%
observation = (
    # BEGIN SOLUTION
    f"One run of {EPOCHS} epochs on {len(train_data)} images took {total_seconds:.0f} s "
    f"(about {estimate / 60:.0f} min for the full run here). The network does not train: "
    f"test accuracy {final['test_accuracy']:.1%} after {EPOCHS} epochs, chance is "
    f"{test_vs_chance.chance:.1%}; train loss {final['train_loss']:.3f}, label entropy {entropy:.3f}."
    # END SOLUTION
    # BEGIN EXERCISE
    "Write your first impression here."
    # END EXERCISE
)
if observation == "Write your first impression here.":
    print("Note: the logbook gets the placeholder text. Write your own impression into "
          "`observation` and run this cell again: the entry is replaced, not added.")
book = Logbook()
book.add(
    "01 original run",
    observation=observation,
    hypothesis="Not yet: first make the runs faster (02), then read the code (03).",
    notebook="01_original_run.ipynb",
    figure=fig,
    key="01",
)
SLOW_S = 5 * 60  # a run that takes longer than this is too slow to try many ideas
record_stage(
    "01",
    "handover",
    test_accuracy=final["test_accuracy"],
    run_time_s=total_seconds,
    test_split="colleague",
    claims=[
        Claim(
            "the handover run does not learn (accuracy not above chance, loss not below the "
            "label entropy)",
            bool(not learns),
            f"test {test_vs_chance.evidence}; final train loss {final['train_loss']:.3f} vs "
            f"label entropy {entropy:.3f}",
        ),
        Claim(
            "the full handover run is slow (more than 5 minutes here)",
            bool(estimate > SLOW_S),
            f"estimated {estimate / 60:.1f} min for 10 epochs on 73,257 images on {device}, "
            f"from {total_seconds:.0f} s measured for {EPOCHS} epochs on {len(train_data):,}",
        ),
    ],
)
# the logbook so far, compactly
display(book.to_frame())

# %% [markdown]
# ## Summary
# - The handover run is **slow**, and the network learns nothing about the images: compare
#   its accuracy with chance level and its loss with the label entropy (the claims printed
#   above, computed from this run).
# - We did not change a line; the numbers above are our baseline.
#
# **Next:** 02 makes the runs fast enough to debug comfortably (Debugging Strategy I),
# and 03 reads the code carefully, without running it (Debugging Strategy II).
