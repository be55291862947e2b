"""Regenerate every figure in images/ (run by `make images`).

- images/standin_grid.png: 64 images of the synthetic stand-in (scripts/make_standin_grid.py),
  shown in the README.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    (ROOT / "images").mkdir(exist_ok=True)
    print("running scripts/make_standin_grid.py")
    sys.argv = ["make_standin_grid.py"]
    runpy.run_path(str(ROOT / "scripts" / "make_standin_grid.py"), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
