"""Write the Cockpit logs shipped with nbhelpers (nbhelpers/data_files/cockpit_logs/).

The two Cockpit runs of notebook 06, at the quick budget on the offline synthetic house
numbers, tracked with the colleague's set of instruments (preset ``"handover"``: Loss,
GradNorm, Distance, UpdateSize every step, Alpha every 10 steps) through
:class:`nbhelpers.cockpit_tools.CockpitHook`:

* ``handover``: the colleague's optimizer settings after the fixes of notebooks 03 to 05 --
  gradients zeroed every step, no augmentation, valid and test held out -- with the
  handover's Adam lr 1e-5 and ExponentialLR(gamma=1.001) stepped every batch still on;
* ``fixed``: the same, with Adam lr 1e-3 and no schedule (06's fix).

Both use the quick budget's batch of 16 and width 32, stop after the budget's
``cockpit_steps`` (500) steps, and are evaluated once at the end. Notebook 06 with
``TRAIN_LIVE = False`` reads these logs; with ``TRAIN_LIVE = True`` it trains the same
configurations. Each log is compact JSON (< 1 MB) next to a ``<name>.meta.json`` describing
the run (configuration, steps, batch size, final accuracies, timings, versions). Load them
with :func:`nbhelpers.cockpit_tools.load_shipped_log`.

Usage::

    python scripts/make_cockpit_logs.py                  # quick budget, as notebook 06 ships them
    python scripts/make_cockpit_logs.py --budget tiny --out /tmp/logs   # a quick try
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbhelpers import cockpit_tools, env, experiment  # noqa: E402
from nbhelpers.budget import resolve_budget  # noqa: E402

DEFAULT_OUT = REPO / "nbhelpers" / "data_files" / "cockpit_logs"
#: The preset of both runs: the colleague's instruments and intervals.
PRESET = "handover"


def notebook_configs(budget, source: str = "synthetic") -> dict:
    """Name -> the RunConfig notebook 06 trains with Cockpit (its ``current_cfg`` and
    ``fixed_cfg``), at ``budget`` (a Budget or its name)."""
    budget = resolve_budget(budget)
    current = experiment.handover_config(
        budget,
        name="cockpit-current",
        source=source,
        loader="tensor",
        zero_grad=True,
        augmentation="none",
        eval_from_train=False,
        eval_splits=("valid", "test"),
        eval_every=budget.epochs,
        max_steps=budget.cockpit_steps,
    )
    fixed = current.replace(name="cockpit-fixed", lr=1e-3, schedule="none")
    return {"handover": current, "fixed": fixed}


def _meta(name: str, budget, config, record, hook, seconds: float) -> dict:
    last = record.history[-1] if record.history else {}
    return {
        "name": name,
        "description": cockpit_tools.SHIPPED_LOGS[name],
        "made_with": "scripts/make_cockpit_logs.py",
        "budget": budget.name,
        "preset": PRESET,
        "tracked": [spec.label for spec in hook.report.accepted],
        "steps": len(record.step_lrs),
        "batch_size": config.batch_size,
        "config": config.to_dict(),
        "final": {k: v for k, v in last.items() if k.endswith(("_loss", "_accuracy")) or k == "lr"},
        "timings_s": {k: round(float(v), 2) for k, v in record.timings.items() if k.endswith("_s")},
        "wall_s": round(seconds, 1),
        "device": record.device,
        "versions": record.versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="quick", help="compute budget (default quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", choices=sorted(cockpit_tools.SHIPPED_LOGS), default=None)
    args = parser.parse_args(argv)

    budget = resolve_budget(args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    env.print_banner("cpu", "synthetic")
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, config in notebook_configs(budget).items():
            if args.only and name != args.only:
                continue
            hook = cockpit_tools.CockpitHook(PRESET)
            t0 = time.perf_counter()
            record = experiment.run(config, hooks=[hook], cache=False, runs_dir=runs_dir)
            seconds = time.perf_counter() - t0
            path = cockpit_tools.write_log(hook.cockpit, args.out / f"{name}.json", indent=None)
            meta = _meta(name, budget, config, record, hook, seconds)
            (args.out / f"{name}.meta.json").write_text(json.dumps(meta, indent=1, default=str))
            size = path.stat().st_size
            print(f"{name}: {meta['steps']} steps in {seconds:.0f} s, {path} ({size / 1e3:.0f} kB)")
            if size > 1_000_000:
                print(f"warning: {path} is over 1 MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
