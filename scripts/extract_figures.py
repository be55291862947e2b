"""Write the image outputs of an executed notebook as PNG files, to look at them.

Usage::

    python scripts/extract_figures.py build/03_code_review.ipynb            # -> build/figures/03_code_review/
    python scripts/extract_figures.py build/03_code_review.ipynb --out /tmp/figs

Files are named ``<notebook>-cell<NN>-<k>.png`` (cell index in the notebook, k-th image of
that cell). Exits 1 if the notebook holds no images.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import nbformat


def extract(notebook: Path, out_dir: Path) -> list[Path]:
    """Write every ``image/png`` output of ``notebook`` into ``out_dir``; return the paths.

    Raises:
        FileNotFoundError: the notebook does not exist.
    """
    nb = nbformat.read(notebook, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        k = 0
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            path = out_dir / f"{notebook.stem}-cell{index:02d}-{k}.png"
            path.write_bytes(base64.b64decode(data["image/png"]))
            written.append(path)
            k += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="executed .ipynb files")
    parser.add_argument("--out", type=Path, default=None, help="default build/figures/<name>/")
    args = parser.parse_args(argv)
    total = 0
    for notebook in args.notebooks:
        out_dir = args.out or Path("build") / "figures" / notebook.stem
        paths = extract(notebook, out_dir)
        for path in paths:
            print(path)
        total += len(paths)
    if total == 0:
        print("No image outputs found (was the notebook executed?).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
