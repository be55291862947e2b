# %% [markdown]
# # 00 · What is wrong with this statement?
#
# Before we open the colleague's code, a warm-up question from the tutorial this series is
# built on. It is about *comparing* two ways of training a network, and every later
# notebook makes comparisons like it: "with this fix the run is better". Here you first
# answer the question on paper, then run the experiment behind it yourself: tune two
# training algorithms with random search, once for a long and once for a short training
# budget, and find out what the data really say.
#
# {{time}}
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers-series/debugging-a-training-run/blob/main/notebooks/00_what_is_wrong.ipynb)
#
# **You will**
# - say precisely what a comparison of two training algorithms shows, and what it does not;
# - write random search yourself, in a few lines, then use a library version that scales;
# - tune two algorithms by random search, for a long and for a short training budget;
# - re-run the best settings with several seeds and test whether a difference is significant;
# - write a conclusion that claims no more than the data show.

# %%
# SETUP

# %% tags=["parameters"]
BUDGET = None  # "tiny" (tests), "quick" (CPU), "colab" (GPU, minutes), "full" (GPU, the handover's sizes); None: colab on a GPU, quick on CPU
DATA_SOURCE = "auto"  # "svhn", "synthetic" (offline stand-in) or "auto"
DOWNLOAD = True  # allow downloading SVHN (about 240 MB) when DATA_SOURCE is "auto" or "svhn"
SEED = 0
WIDTH = None  # channels of the first conv layer; None: the budget's size for many-run notebooks (32 on "full", 8 on the CPU budgets)

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from nbhelpers.data import DataBundle
from nbhelpers.experiment import reference_fix_config, run
from nbhelpers.logbook import Logbook
from nbhelpers.notebook import Claim, record_stage, start
from nbhelpers.plots import finish_axes
from nbhelpers.records import default_runs_dir
from nbhelpers.search import TuningTarget, metric_at_epoch, sampler_seed, sqlite_url, trials_frame, tune_config
from nbhelpers.selfcheck import check
from nbhelpers.stats import compare, plot_curves, run_config_seeds, t_interval, values_at_epoch

ctx = start(BUDGET, DATA_SOURCE, DOWNLOAD, SEED)
device, budget, bundle = ctx.device, ctx.budget, ctx.bundle

# %% [markdown]
# ## The question
#
# Assume we have two update rules $\mathcal A$ and $\mathcal B$ which each have a set of
# hyperparameters $\mathcal H_{\mathcal A}$ and $\mathcal H_{\mathcal B}$. We consider the
# performance of both methods only on a single problem (e.g. a single neural network using a
# fixed dataset).
#
# Both methods are tuned using **random search with 20 tuning trials**, independently, with
# the search spaces $\Phi(\mathcal A)$ and $\Phi(\mathcal B)$. The settings that reached the
# best observed performance **after 100 epochs** are $\mathcal H_{\mathcal A}$ and
# $\mathcal H_{\mathcal B}$. The performance curves (higher is better) of
# $\mathcal A(\mathcal H_{\mathcal A})$ and $\mathcal B(\mathcal H_{\mathcal B})$ are shown
# in the figure.

# %%
def question_figure(epochs=100, mark=80):
    """The question's figure: two made-up performance curves (an illustration, not data).

    p(t) = 0.1 + a (1 - exp(-t / tau)), from chance level (0.1 for 10 classes):
    A: a = 0.80, tau = 10 epochs; B: a = 0.82, tau = 24 epochs. They cross near epoch 89.
    """
    t = np.arange(0, epochs + 1)
    curves = {
        r"$\mathcal{A}(\mathcal{H}_\mathcal{A})$": 0.1 + 0.80 * (1 - np.exp(-t / 10)),
        r"$\mathcal{B}(\mathcal{H}_\mathcal{B})$": 0.1 + 0.82 * (1 - np.exp(-t / 24)),
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    zoom = ax.inset_axes([0.53, 0.1, 0.44, 0.42])  # the last 40 epochs, magnified
    for (label, curve), color in zip(curves.items(), ("tab:blue", "tab:orange"), strict=True):
        ax.plot(t, curve, color=color, lw=2, label=label)
        zoom.plot(t[60:], curve[60:], color=color, lw=2)
    for axes in (ax, zoom):
        axes.axvline(mark, color="grey", ls="--", lw=1)
        axes.grid(alpha=0.3)
    ax.text(mark - 1.5, 0.62, f"{mark} epochs", rotation=90, ha="right", va="bottom", color="grey")
    zoom.set(xlim=(60, epochs), ylim=(0.85, 0.92))
    zoom.set_title("zoom: epochs 60-100", fontsize=8)
    zoom.tick_params(labelsize=7)
    ax.set(xlim=(0, epochs), ylim=(0, 1), xlabel="epoch", ylabel="performance (e.g. test accuracy)")
    ax.set_title("The question's figure (an illustration, not a measurement)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.1, 0.02), fontsize=12)
    fig.tight_layout()
    return fig


question_figure()
plt.show()

# %% [markdown]
# **What is wrong with the following statement?**
#
# > "On this problem, although $\mathcal B$ provides a slightly better final performance,
# > $\mathcal A$ offers faster training, and should be preferred if trained for 80 epochs or
# > less."
#
# ## Your answer
# Take five minutes. There is more than one thing wrong; try to find at least three. Write
# them in the box below (or double-click this cell and write here) **before** you read on.

# %%
try:
    import ipywidgets as widgets

    answer_box = widgets.Textarea(
        placeholder="What is wrong with the statement? One point per line.",
        layout=widgets.Layout(width="100%", height="140px"),
    )
    display(answer_box)
except ImportError:  # no widgets here: write into the markdown cell above instead
    answer_box = None
    print("Write your answer into the markdown cell above (double-click it).")

# %% [markdown] tags=["exercise"]
# Written your answer? Then compare it with the discussion points (click to open):
#
# <details>
# <summary><b>Reveal the discussion points</b></summary>
#
# 1. **Tuned for 100 epochs says nothing about 80.** $\mathcal H_{\mathcal A}$ and
#    $\mathcal H_{\mathcal B}$ are the settings that were best *after 100 epochs*. You cannot
#    conclude which algorithm to prefer for 80 epochs from them: $\mathcal B$ tuned for the
#    best performance *at 80 epochs* could well beat $\mathcal A$ there.
# 2. **Schedules are built for the end of training.** This is most visible with a
#    learning-rate schedule: it is designed to give the best result at the *last* epoch
#    (e.g. the learning rate decays to its smallest value at epoch 100). At epoch 80 such a
#    run is mid-schedule, not finished. Trained for 80 epochs, its schedule would end at 80.
# 3. **A single run.** Each curve is one training run, one seed. Are the differences
#    significant? Near epoch 90 the curves are about 0.01 apart; the seed-to-seed spread of
#    a run is often larger than that. Rerun with several seeds and test.
# 4. **"$\mathcal A$" and "$\mathcal B$" are imprecise.** What was compared is each update
#    rule *together with* its search space and the tuning protocol:
#    $\mathcal A(\Phi(\mathcal A), \mathcal H_{\mathcal A})$ would be more precise. With other
#    search spaces the result could change, and $\mathcal A$ and $\mathcal B$ could even be
#    the same update rule (say, Adam with two different search spaces).
# 5. **Vague words.** "On this problem" (which network, which data, which split?),
#    "performance" (test accuracy? training loss?), "faster training" (fewer epochs or less
#    wall-clock time? an epoch of one method may cost more than one of the other),
#    "slightly better" (by how much, and is it more than noise?).
#
# Also worth saying: 20 random-search trials are themselves a random draw; a second search
# could pick different settings.
#
# </details>

# %% [markdown] tags=["solution"]
# **Discussion points** (after the tutorial; non-exhaustive):
#
# 1. **Tuned for 100 epochs says nothing about 80.** $\mathcal H_{\mathcal A}$ and
#    $\mathcal H_{\mathcal B}$ are the settings that were best *after 100 epochs*. You cannot
#    conclude which algorithm to prefer for 80 epochs from them: $\mathcal B$ tuned for the
#    best performance *at 80 epochs* could well beat $\mathcal A$ there.
# 2. **Schedules are built for the end of training.** This is most visible with a
#    learning-rate schedule: it is designed to give the best result at the *last* epoch
#    (e.g. the learning rate decays to its smallest value at epoch 100). At epoch 80 such a
#    run is mid-schedule, not finished. Trained for 80 epochs, its schedule would end at 80.
# 3. **A single run.** Each curve is one training run, one seed. Are the differences
#    significant? Near epoch 90 the curves are about 0.01 apart; the seed-to-seed spread of
#    a run is often larger than that. Rerun with several seeds and test.
# 4. **"$\mathcal A$" and "$\mathcal B$" are imprecise.** What was compared is each update
#    rule *together with* its search space and the tuning protocol:
#    $\mathcal A(\Phi(\mathcal A), \mathcal H_{\mathcal A})$ would be more precise. With other
#    search spaces the result could change, and $\mathcal A$ and $\mathcal B$ could even be
#    the same update rule (say, Adam with two different search spaces).
# 5. **Vague words.** "On this problem" (which network, which data, which split?),
#    "performance" (test accuracy? training loss?), "faster training" (fewer epochs or less
#    wall-clock time? an epoch of one method may cost more than one of the other),
#    "slightly better" (by how much, and is it more than noise?).
#
# Also worth saying: 20 random-search trials are themselves a random draw; a second search
# could pick different settings.

# %% [markdown]
# %% [markdown]
# ## Try it: two training algorithms, two budgets
#
# Points 1-3 can be checked with an experiment, so let us run one, small enough for a
# laptop. The network is the colleague's CNN with the fixes this series will find (a peek
# ahead: which fixes, and why, is what notebooks 03-07 are about).
#
# - $\mathcal A$: **Adam with a constant learning rate**.
# - $\mathcal B$: **Adam with a cosine schedule**: the learning rate falls smoothly from its
#   start value to zero at the *end of the run*.
#
# Both are Adam: $\mathcal A$ and $\mathcal B$ are the same update rule with a different
# schedule (point 4 in action). Each is tuned by **random search** over the learning rate,
# on a log scale, for the best **validation** accuracy; we report **test** accuracy. The two
# searches are independent: each draws its own learning rates (its own random seed), as in
# the question.
#
# The budgets keep the question's proportions: the "100 epochs" become `LONG` epochs and
# the "80 epochs" `SHORT` = 80% of them. On the full budget (a GPU) each run is the
# colleague's network at full size on all of SVHN, with 20 trials per search, as in the
# question. On the CPU budgets that would take far too long, so each run is a smaller
# version: a narrower network (`WIDTH` channels in the first layer instead of 32, the same
# layout), the budget's sizes for many-run experiments (its `sweep_*` fields), and fewer
# trials. All runs go through the run cache, so executing the notebook again replays them,
# and an interrupted search continues where it stopped.

# %%
WIDTH = WIDTH or budget.sweep_width  # the sizes of many-run experiments come with the budget
N_TRAIN = budget.sweep_n_train or len(bundle.train)
BATCH_SIZE = budget.sweep_batch_size
N_TRIALS = budget.n_trials  # the question uses 20
LONG = budget.sweep_epochs - budget.sweep_epochs % 5 if budget.sweep_epochs >= 5 else budget.sweep_epochs  # "100 epochs"
SHORT = min(LONG - 1, max(1, round(0.8 * LONG)))  # "80 epochs": 80% of LONG (at least 1, less than LONG)
SEEDS = list(range(SEED, SEED + budget.n_seeds))  # the re-runs of each best setting
SEARCH_SEED = {"A": SEED, "B": SEED + 1}  # independent searches: each draws its own learning rates
SPACE = {"lr": ("log", 1e-4, 1e-2)}  # the search space: learning rate on a log scale
STORAGE = sqlite_url(default_runs_dir() / "optuna.db")  # searches survive a kernel restart

data = DataBundle(bundle.train.subset(range(N_TRAIN), "train"), bundle.valid, bundle.test, bundle.source)
common = dict(
    source=data.source, n_train=N_TRAIN, width=WIDTH, batch_size=BATCH_SIZE, epochs=LONG, eval_every=1,
    seed=SEED, data_seed=SEED, eval_splits=("valid", "test"),
)  # fmt: skip
A = reference_fix_config(budget, name="A-constant", **common)
B = reference_fix_config(budget, name="B-cosine", schedule="cosine", **common)
print(f"long budget: {LONG} epochs, short budget: {SHORT} epoch(s) ({SHORT / LONG:.0%} of the long one); "
      f"{N_TRIALS} trials per search; seeds {SEEDS}")  # fmt: skip
print(f"network width {WIDTH}; {N_TRAIN} training images, batch size {BATCH_SIZE}")

# %% [markdown]
# ## Step 1: random search, by hand
# Random search fits in a few lines: draw a setting at random from the search space, train
# with it, measure, keep the best. Here is $\mathcal A$'s search for the long budget. The
# learning rate is drawn uniformly on a log scale (every decade equally likely), and the
# best setting is the one with the highest validation accuracy **after the last epoch**.
#
# {{time:search-by-hand}}

# %%
# time: search-by-hand
rng = np.random.RandomState(sampler_seed(SEARCH_SEED["A"]))  # the search's own random numbers
low, high = SPACE["lr"][1], SPACE["lr"][2]
my_trials = []
for trial in range(N_TRIALS):
    lr = math.exp(rng.uniform(math.log(low), math.log(high)))  # uniform on a log scale
    record = run(A.replace(lr=lr), data=data, progress=False)  # one training run
    my_trials.append((lr, metric_at_epoch(record, "valid_accuracy", LONG)))
    print(f"trial {trial}: lr {lr:.2g} -> validation accuracy {my_trials[-1][1]:.1%}")
my_best_lr, my_best_valid = max(my_trials, key=lambda t: t[1])
print(f"best: lr {my_best_lr:.2g} ({my_best_valid:.1%})")

# %% [markdown]
# That is all random search is. The package's `tune_config` does the same with
# [Optuna](https://optuna.org)'s `RandomSampler`, and adds what a loop by hand lacks when
# it grows: the trials live in a database (`runs/optuna.db`), so a search survives a
# kernel restart and continues where it stopped; the space can hold many parameters
# (floats, integers, choices); other samplers (e.g. Bayesian ones) are one argument away;
# and several machines can share one study. Given the same seed it draws exactly the same
# learning rates as our loop, so its runs come from the cache:
#
# {{time:search-optuna}}

# %%
# time: search-optuna
def tune(config, target, algorithm):
    """Random search over SPACE for `target`, stored in STORAGE (resumes if interrupted)."""
    size = f"w{config.width}-n{config.n_train}-bs{config.batch_size}-{config.epochs}ep"
    name = f"00-{config.name}-{budget.name}-{bundle.source}-{size}-for-epoch{target.epoch}-seed{SEARCH_SEED[algorithm]}"
    return tune_config(
        config, SPACE, target, study_name=name, n_trials=N_TRIALS, storage=STORAGE,
        seed=SEARCH_SEED[algorithm], data=data, progress=False,
    )  # fmt: skip


LONG_TARGET = TuningTarget("valid_accuracy", epoch=LONG)
study_A_long = tune(A, LONG_TARGET, "A")
same = [round(t.params["lr"], 12) for t in study_A_long.trials[:N_TRIALS]] == [round(lr, 12) for lr, _ in my_trials]
print(f"Optuna drew the same learning rates as the loop: {same}; best lr {study_A_long.best_params['lr']:.2g}")
study_B_long = tune(B, LONG_TARGET, "B")
lr_A_long, lr_B_long = study_A_long.best_params["lr"], study_B_long.best_params["lr"]
print(f"tuned for epoch {LONG}: A lr = {lr_A_long:.2g}, B lr = {lr_B_long:.2g}")

# %% tags=["solution"]
assert same, "the hand-written search and Optuna's should draw the same learning rates"

# %% [markdown]
# ## Step 2: the best settings, with several seeds
# Each search trial was a single run with one seed. To see how much of a difference is
# seed noise, we re-run each best setting with `budget.n_seeds` seeds (the run with the
# search's seed comes from the cache) and draw the mean with a 95% confidence band.
#
# {{time:seeds-long}}

# %%
# time: seeds-long
METRICS = ["valid_accuracy", "test_accuracy"]
curves_A_long = run_config_seeds(A.replace(lr=lr_A_long), SEEDS, metric=METRICS, data=data)
curves_B_long = run_config_seeds(B.replace(lr=lr_B_long), SEEDS, metric=METRICS, data=data)

fig_long = plot_curves(
    {f"A (lr {lr_A_long:.2g})": curves_A_long, f"B (lr {lr_B_long:.2g})": curves_B_long},
    "test_accuracy",
    mark_epoch=SHORT,
    ylabel="test accuracy",
    title=f"Both tuned for epoch {LONG}: mean over {len(SEEDS)} seeds",
)
plt.show()

end_A, end_B = (values_at_epoch(c, LONG, "test_accuracy").mean() for c in (curves_A_long, curves_B_long))
premise = bool(end_B > end_A)  # the statement assumes "B provides a slightly better final performance"
print(f"after the last epoch: A {end_A:.1%}, B {end_B:.1%} (means of {len(SEEDS)} seeds): "
      + ("B is ahead, as the statement assumes." if premise else
         "B is NOT ahead here, so the statement's premise does not hold on this run."))  # fmt: skip

# %% [markdown]
# This is the statement's situation, measured (the line above says whether its premise,
# B ahead at the end, holds here). Which one is ahead at the short budget (dashed line)?
# Would you now say "A should be preferred for short runs"? Look at the width of the bands
# before you answer.
#
# ## Step 3: tune for the short budget
# Point 1 says: to compare at the short budget, **tune for the short budget**.
#
# For $\mathcal A$ this is free. With a constant learning rate, a run stopped after `SHORT`
# epochs is exactly the first `SHORT` epochs of a longer run, so we can reuse the runs of
# the first search and just read the validation accuracy at epoch `SHORT` (same seed, same
# draws: the cache serves every run).
#
# For $\mathcal B$ it is not free, and this is your part: the cosine schedule ends where the
# run ends. Set up $\mathcal B$'s search for the best model after `SHORT` epochs: how long
# should each run be, and at which epoch do we measure? (Its search keeps $\mathcal B$'s
# seed, so it tries the same candidate learning rates as before: if the best one changes,
# the budget changed it, not the draws.)
#
# {{time:search-short}}

# %%
# time: search-short
study_A_short = tune(A, TuningTarget("valid_accuracy", epoch=SHORT), "A")  # the cache serves every run

# BEGIN SOLUTION
B_short = B.replace(name="B-cosine-short", epochs=SHORT)  # the schedule now ends at the short budget
SHORT_TARGET = TuningTarget("valid_accuracy", epoch=SHORT)  # and we measure there
# END SOLUTION
# BEGIN EXERCISE
B_short = B  # ... how long should each run of B be, if we want the best model after SHORT epochs?
SHORT_TARGET = TuningTarget("valid_accuracy", epoch=LONG)  # ... and at which epoch do we measure?
# END EXERCISE
study_B_short = tune(B_short, SHORT_TARGET, "B")
lr_A_short, lr_B_short = study_A_short.best_params["lr"], study_B_short.best_params["lr"]
print(f"tuned for epoch {SHORT}: A lr = {lr_A_short:.2g}, B lr = {lr_B_short:.2g} (B runs {B_short.epochs} epochs)")

# %% tags=["exercise"]
check(
    SHORT_TARGET.epoch == SHORT,
    f"The search measures after epoch {SHORT}.",
    "We want the best model after SHORT epochs: at which epoch should the search read the validation accuracy?",
)
check(
    B_short.epochs == SHORT,
    f"B's runs stop after {SHORT} epoch(s), so the cosine schedule ends there.",
    "A cosine schedule reaches zero at the end of the run. Where should that end be? (`B.replace(epochs=...)`)",
)

# %% tags=["solution"]
assert SHORT_TARGET.epoch == SHORT and B_short.epochs == SHORT
assert len(trials_frame(study_B_short).query("state == 'COMPLETE'")) >= N_TRIALS

# %% [markdown]
# The trials of all four searches, one dot per trial (the circled one is each search's
# best). Do A and B try different learning rates (independent searches)? Does the best
# learning rate depend on the budget it was tuned for?

# %%
def plot_searches(studies, ax, title):
    """Validation accuracy of every complete trial against its learning rate (log axis)."""
    for (label, study), color in zip(studies.items(), ("tab:blue", "tab:orange"), strict=False):
        trials = trials_frame(study).query("state == 'COMPLETE'")
        ax.scatter(trials["lr"], trials["value"], color=color, alpha=0.8, label=label)
        best = study.best_trial
        ax.scatter([best.params["lr"]], [best.value], s=160, facecolors="none", edgecolors=color, linewidths=2)
    ax.set_xscale("log")
    ax.set_xlim(SPACE["lr"][1] / 1.5, SPACE["lr"][2] * 1.5)  # the whole search space
    ax.set(xlabel="learning rate (log scale)", ylabel="validation accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(title="circled: best trial")


fig_search, (ax_long, ax_short) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
plot_searches({"A: constant": study_A_long, "B: cosine": study_B_long}, ax_long, f"Tuned for epoch {LONG}")
plot_searches({"A: constant": study_A_short, "B: cosine": study_B_short}, ax_short, f"Tuned for epoch {SHORT}")
fig_search.suptitle(f"Random search, {N_TRIALS} trials each")
fig_search.tight_layout()
plt.show()

# %% [markdown]
# ## Step 4: compare at the short budget, tuned for it
# Again several seeds for each best setting. For $\mathcal A$ a run of `SHORT` epochs is the
# first `SHORT` epochs of a long run (constant learning rate), so we read the long runs at
# epoch `SHORT`; $\mathcal B$ trains runs of `SHORT` epochs, its schedule ending there.
#
# {{time:seeds-short}}

# %%
# time: seeds-short
curves_A_short = run_config_seeds(A.replace(lr=lr_A_short), SEEDS, metric=METRICS, data=data)
curves_B_short = run_config_seeds(B_short.replace(lr=lr_B_short), SEEDS, metric=METRICS, data=data)

at = {  # per-seed test accuracy: (tuned for, measured at) -> (A values, B values)
    (LONG, LONG): (values_at_epoch(curves_A_long, LONG, "test_accuracy"), values_at_epoch(curves_B_long, LONG, "test_accuracy")),
    (LONG, SHORT): (values_at_epoch(curves_A_long, SHORT, "test_accuracy"), values_at_epoch(curves_B_long, SHORT, "test_accuracy")),
    (SHORT, SHORT): (values_at_epoch(curves_A_short, SHORT, "test_accuracy"), values_at_epoch(curves_B_short, SHORT, "test_accuracy")),
}

# %% [markdown]
# **Two tests of "is the difference more than seed noise?"** Both start from the
# assumption that A and B perform the same, and the p-value is how often seed noise alone
# would give a difference at least as large as ours: small p, unlikely to be noise.
#
# - **Welch's t-test** (`scipy.stats.ttest_ind(a, b, equal_var=False)`) compares the
#   difference of the means with its standard error estimated from each group's own spread,
#   without assuming the spreads are equal. It assumes roughly normal values per seed, and
#   gives the 95% confidence interval of the difference.
# - **A permutation test** (`scipy.stats.permutation_test`) shuffles the "A"/"B" labels of
#   the per-seed values in every possible way and counts how often the shuffled difference
#   is as large as the real one. It assumes nothing about the distribution, but with few
#   seeds there are few shuffles: with 3 seeds each it cannot go below p = 0.1.
#
# We call a difference "shown" only when both are below 0.05.

# %%
comparisons = {
    key: compare(a, b, names=("A", "B"), label=f"test accuracy at epoch {key[1]} (tuned for epoch {key[0]})", seed=SEED)
    for key, (a, b) in at.items()
}


def plot_short_budget(ax):
    """Test accuracy at epoch SHORT per seed (dots), mean (diamond) and 95% CI (bar), A and B,
    tuned for LONG vs tuned for SHORT."""
    groups = [(LONG, f"tuned for epoch {LONG}"), (SHORT, f"tuned for epoch {SHORT}")]
    for offset, (name, color) in zip((-0.12, 0.12), (("A", "tab:blue"), ("B", "tab:orange")), strict=True):
        for x, (tuned, _) in enumerate(groups):
            values = at[(tuned, SHORT)][0 if name == "A" else 1]
            low, high = t_interval(values)
            mean = values.mean()
            ax.errorbar(x + offset, mean, yerr=[[mean - low], [high - mean]], color=color, capsize=5, lw=2)
            ax.scatter([x + offset], [mean], marker="D", s=60, color=color, zorder=3, label=name if x == 0 else None)
            ax.scatter(np.full(len(values), x + offset + 0.04), values, color="black", s=12, zorder=3,
                       label="single seeds" if (x, name) == (0, "A") else None)  # fmt: skip
    ax.set_xticks(range(len(groups)), [label for _, label in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_title(f"At the short budget ({SHORT} epoch(s)), {len(SEEDS)} seeds")
    ax.legend(title="diamond: mean, bar: 95% CI")
    finish_axes(ax, f"test accuracy at epoch {SHORT}", xlabel="", unit_interval=True)  # a wide CI stays within [0, 1]


fig_short, ax = plt.subplots(figsize=(7, 4.2))
plot_short_budget(ax)
fig_short.tight_layout()
plt.show()

# %% [markdown]
# ## What did we observe?
# The table and the sentences below are computed from *your* runs, so they describe what
# happened here, whatever that was. "A - B" is the difference of the mean test accuracies
# with its 95% confidence interval (Welch).

# %%
def ahead(comparison):
    return "A" if comparison.difference > 0 else ("B" if comparison.difference < 0 else "neither")


table = pd.DataFrame(
    [
        {
            "tuned for epoch": tuned,
            "measured at epoch": measured,
            "mean A": c.mean_a,
            "mean B": c.mean_b,
            "A - B": c.difference,
            "95% CI of A - B": f"{c.ci_low:+.3f} to {c.ci_high:+.3f}",
            "Welch p": c.p_value,
            "permutation p": c.p_permutation,
            "ahead": ahead(c),
            "significant": c.significant,
        }
        for (tuned, measured), c in comparisons.items()
    ]
)
display(table.style.format({"mean A": "{:.1%}", "mean B": "{:.1%}", "A - B": "{:+.1%}", "Welch p": "{:.2g}", "permutation p": "{:.2g}"}))

statement_view, tuned_view = comparisons[(LONG, SHORT)], comparisons[(SHORT, SHORT)]
ranking_changed = ahead(statement_view) != ahead(tuned_view) and "neither" not in (ahead(statement_view), ahead(tuned_view))
lr_moved = {name: not math.isclose(lr_long, lr_short) for name, lr_long, lr_short in (("A", lr_A_long, lr_A_short), ("B", lr_B_long, lr_B_short))}


def who_was_ahead(c):
    if ahead(c) == "neither":
        return "A and B were **tied** (equal means)."
    return f"**{ahead(c)}** was ahead by {abs(c.difference):.1%} (difference of the means)."


if "neither" in (ahead(statement_view), ahead(tuned_view)):
    change = "cannot be called changed or unchanged (a tie)"
else:
    change = "**changed**" if ranking_changed else "**did not change**"
lines = [
    f"- The statement's premise, B ahead after the long budget ({LONG} epochs), "
    + ("**holds** here. " if premise else "**does not hold** here. ")
    + comparisons[(LONG, LONG)].verdict,
    f"- At the short budget ({SHORT} epoch(s)), with the settings tuned for epoch {LONG}, "
    f"{who_was_ahead(statement_view)} {statement_view.verdict}",
    f"- At the short budget, tuned for it, {who_was_ahead(tuned_view)} {tuned_view.verdict}",
    f"- So the ranking at the short budget {change} when we tuned for the short budget."
    + ("" if statement_view.significant or tuned_view.significant else " Neither ranking is significant, though: with these seeds, both could be seed noise."),
    "- Tuning for the short budget " + ", ".join(
        f"{'moved' if lr_moved[n] else 'kept'} {n}'s best learning rate ({lr_long:.2g} → {lr_short:.2g})"
        for n, lr_long, lr_short in (("A", lr_A_long, lr_A_short), ("B", lr_B_long, lr_B_short))
    ) + ".",
]
display(Markdown("\n".join(lines)))

# %% [markdown]
# If $\mathcal B$ did *worse* when tuned for the short budget, that is worth a thought too: a
# schedule that decays to zero helps a run that is close to converged, and costs progress
# in a run that is still far from it. Only tuning for the budget reveals which case you are
# in.
#
# **How to read this honestly.** With 2-3 seeds the permutation test cannot go below
# p = 0.33 (2 seeds each) or p = 0.1 (3 each), so at the small budgets "no difference shown"
# is the expected verdict, and it is the right one: it does *not* mean A and B are equal.
# Whether the ranking changed in your run also depends on the seeds; the full budget (all
# of SVHN, 20 trials, 5 seeds, on a GPU) gives the tests more to work with. What holds in
# every case is the point of the question: **a comparison made at one budget, with settings
# tuned for another, answers a question nobody asked.**
#
# ## Your turn: a better statement
# Rewrite the colleague's statement so that it says exactly what your experiment showed:
# which algorithms (with their search spaces), which problem, which budget, which metric,
# how many seeds, and whether the difference is significant.

# %% [markdown] tags=["exercise"]
# ✍️ *Your statement:*

# %% [markdown] tags=["solution"]
# For example (fill in your numbers from the table):
#
# > "On our CNN for house-number digits (width and data as above), Adam with a cosine
# > schedule and Adam with a constant learning rate, each with the learning rate tuned by a
# > random search of N trials over [1e-4, 1e-2] (log scale) for validation accuracy after
# > the last epoch, reached a mean test accuracy of x% and y% after LONG epochs (n seeds,
# > 95% CI of the difference from ... to ...); the difference is / is not significant
# > (Welch p = ...). Tuned for SHORT epochs instead, ... . We did not test other networks,
# > data sets or budgets."
#
# It is longer, and that is the point: every part of it is something the experiment
# actually measured.

# %% tags=["solution"]
assert all(len(values) == len(SEEDS) for pair in at.values() for values in pair)
assert all(0.0 <= c.p_value <= 1.0 and 0.0 <= c.p_permutation <= 1.0 for c in comparisons.values())
assert all(c.verdict for c in comparisons.values())

# %% [markdown]
# ## Logbook

# %%
book = Logbook()
your_answer = answer_box.value.strip() if answer_box is not None else ""
if your_answer:  # what you wrote in the box above
    book.add("00 what is wrong", observation="My answer to the question:\n" + your_answer, notebook="00_what_is_wrong.ipynb", key="00-answer")
book.add(
    "00 what is wrong",
    observation=f"Statement: A (constant lr) trains faster than B (cosine), so prefer A for short runs; "
    f"but both were tuned for epoch {LONG}.",
    hypothesis=f"Tuned for epoch {SHORT}, B's schedule ends at the short budget, and the ranking there may change.",
    result=f"After epoch {LONG}, B ahead: {premise}. At epoch {SHORT}: tuned for epoch {LONG}, {ahead(statement_view)} was ahead "
    f"({statement_view.difference:+.1%} A - B); tuned for epoch {SHORT}, {ahead(tuned_view)} was ahead "
    f"({tuned_view.difference:+.1%}); significant: {statement_view.significant} / {tuned_view.significant} "
    f"({len(SEEDS)} seeds, {N_TRIALS} trials per search, width {WIDTH}, {budget.name} budget, {bundle.source} data).",
    notebook="00_what_is_wrong.ipynb",
    figure=fig_short,
    key="00",
)
claims = [
    Claim(
        "B provides a slightly better final performance (the statement's premise)",
        holds=premise,
        evidence=f"test accuracy after epoch {LONG}: A {end_A:.1%}, B {end_B:.1%} ({len(SEEDS)} seeds); A - B "
        f"95% CI {comparisons[(LONG, LONG)].ci_low:+.1%} to {comparisons[(LONG, LONG)].ci_high:+.1%}",
    ),
    Claim(
        "tuned for the short budget, the search picks other settings than tuned for the long one",
        holds=bool(lr_moved["A"] or lr_moved["B"]),
        evidence=f"best lr tuned for epoch {LONG} / {SHORT}: A {lr_A_long:.2g} / {lr_A_short:.2g}, "
        f"B {lr_B_long:.2g} / {lr_B_short:.2g} ({N_TRIALS} trials per search)",
    ),
    Claim(
        "the statement's short-budget advantage of A is not shown beyond seed noise",
        holds=bool(not (statement_view.significant and statement_view.difference > 0)),
        evidence=f"epoch {SHORT}, tuned for epoch {LONG}: A - B {statement_view.difference:+.1%} "
        f"(95% CI {statement_view.ci_low:+.1%} to {statement_view.ci_high:+.1%}), Welch p = {statement_view.p_value:.2g}, "
        f"permutation p = {statement_view.p_permutation:.2g}, {len(SEEDS)} seeds",
    ),
]
record_stage(
    "00",
    "comparison question",
    test_accuracy=None,
    claims=claims,
    long_budget_ahead=ahead(comparisons[(LONG, LONG)]),
    short_budget_ahead_tuned_long=ahead(statement_view),
    short_budget_ahead_tuned_short=ahead(tuned_view),
    ranking_changed=bool(ranking_changed),
    significant=[bool(c.significant) for c in comparisons.values()],
)
display(Logbook().to_frame())

# %% [markdown]
# ## Summary
# - Random search is a loop: draw a setting, train, measure, keep the best. A library adds
#   storage, resuming and scale, not magic.
# - A comparison of training algorithms is a comparison of *algorithm + search space +
#   tuning protocol + budget*: $\mathcal A(\Phi, \mathcal H)$, not $\mathcal A$.
# - Settings tuned for one budget say nothing about another; schedules especially are built
#   for the end of the run. To compare at a budget, tune for it.
# - One run is one draw: re-run with several seeds, show confidence intervals, and test
#   whether a difference is more than seed noise. "Not significant" is a fine, honest result.
# - Say what you measured: which metric, which split, which budget, how many seeds.
#
# **Next:** 01 runs the colleague's code as it was handed over.
