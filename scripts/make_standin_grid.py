"""Write images/standin_grid.png: 64 images of the synthetic stand-in with their labels.

Usage: python scripts/make_standin_grid.py [--seed 0] [--split train] [--out images/standin_grid.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nbhelpers.synthetic import load_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_grid(images, labels, ncols: int = 8, width_in: float = 6.0):
    """An ncols-wide grid figure of uint8 images (N, 3, 32, 32) with their labels as titles."""
    n = images.shape[0]
    nrows = -(-n // ncols)
    cell = width_in / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in, nrows * cell * 1.2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(str(int(labels[i])), fontsize=8, pad=2)
    fig.suptitle("The synthetic stand-in for SVHN (label above each image)", fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--out", type=Path, default=ROOT / "images" / "standin_grid.png")
    args = parser.parse_args()
    images, labels = load_synthetic(args.split, 64, seed=args.seed, cache=False)
    fig = make_grid(images, labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
