"""Write images/question_a_vs_b.png: the figure of the comparison question (notebook 00).

Two performance curves (higher is better) over 100 epochs, as in the tutorial's
question "What is wrong with this statement": A(H_A) rises faster early, B(H_B) ends
slightly better; the 80-epoch mark of the statement is drawn in, and an inset magnifies
epochs 60-100 where the curves cross.

The curves are plain synthetic curves, not measurements: exponential saturation
``p(t) = 0.1 + a * (1 - exp(-t / tau))`` starting at chance level (0.1 for 10 classes),
with A: a = 0.80, tau = 10 epochs; B: a = 0.82, tau = 24 epochs. They cross near
epoch 89, so A is ahead at epoch 80 and B at epoch 100.

Usage: python scripts/make_question_figure.py [--out images/question_a_vs_b.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANCE = 0.1  # accuracy of guessing among 10 classes
CURVES = {  # label: (amplitude a, time constant tau in epochs)
    r"$\mathcal{A}(\mathcal{H}_\mathcal{A})$": (0.80, 10.0),
    r"$\mathcal{B}(\mathcal{H}_\mathcal{B})$": (0.82, 24.0),
}
EPOCHS = 100
MARK = 80  # "should be preferred if trained for 80 epochs or less"


def performance(epochs: np.ndarray, amplitude: float, tau: float) -> np.ndarray:
    """Synthetic performance after each epoch: chance level rising to chance + amplitude."""
    return CHANCE + amplitude * (1.0 - np.exp(-epochs / tau))


def make_figure():
    """The question's figure as a matplotlib Figure."""
    epochs = np.arange(0, EPOCHS + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    zoom = ax.inset_axes([0.53, 0.1, 0.44, 0.42])  # the last 40 epochs, magnified
    for (label, (amplitude, tau)), color in zip(
        CURVES.items(), ("tab:blue", "tab:orange"), strict=True
    ):
        curve = performance(epochs, amplitude, tau)
        ax.plot(epochs, curve, color=color, lw=2, label=label)
        zoom.plot(epochs[60:], curve[60:], color=color, lw=2)
    for axes in (ax, zoom):
        axes.axvline(MARK, color="grey", ls="--", lw=1)
        axes.grid(alpha=0.3)
    ax.text(MARK - 1.5, 0.62, f"{MARK} epochs", rotation=90, ha="right", va="bottom", color="grey")
    zoom.set_xlim(60, EPOCHS)
    zoom.set_ylim(0.85, 0.92)
    zoom.set_title("zoom: epochs 60-100", fontsize=8)
    zoom.tick_params(labelsize=7)
    ax.set_xlim(0, EPOCHS)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("performance (e.g. test accuracy)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.1, 0.02), fontsize=12)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "images" / "question_a_vs_b.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig = make_figure()
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
