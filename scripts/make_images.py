"""Regenerate every figure in images/ (run by `make images`).

- images/standin_grid.png: 64 images of the offline stand-in (scripts/make_standin_grid.py)
- images/cockpit_dashboard_handover.png: the Cockpit dashboard of the shipped handover log
  (made by scripts/make_cockpit_logs.py)
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"


def cockpit_dashboard(name: str = "handover") -> Path:
    """Draw the dashboard of a shipped Cockpit log to images/cockpit_dashboard_<name>.png."""
    import matplotlib

    matplotlib.use("Agg")
    from nbhelpers.cockpit_plots import plot_dashboard
    from nbhelpers.cockpit_tools import load_shipped_log

    fig = plot_dashboard(load_shipped_log(name), title=f"Cockpit: the {name} run (shipped log)")
    path = IMAGES / f"cockpit_dashboard_{name}.png"
    fig.savefig(path, dpi=60)
    return path


def main() -> int:
    IMAGES.mkdir(exist_ok=True)
    print("running scripts/make_standin_grid.py")
    sys.argv = ["make_standin_grid.py"]
    runpy.run_path(str(ROOT / "scripts" / "make_standin_grid.py"), run_name="__main__")
    print(f"wrote {cockpit_dashboard('handover')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
