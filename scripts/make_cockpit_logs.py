"""Write the Cockpit logs shipped with nbhelpers (nbhelpers/data_files/cockpit_logs/).

Two short runs of the handover CNN (Tanh) on the offline synthetic house numbers,
tracked with :class:`nbhelpers.cockpit_tools.CockpitHook`:

* ``handover``: the colleague's settings -- Adam lr 1e-5, ExponentialLR(gamma=1.001)
  stepped every batch, gradients never zeroed, rotation augmentation, evaluation
  on the train split;
* ``fixed``: zero_grad every step, Adam lr 1e-3, no schedule, no augmentation,
  evaluation on the held-out splits.

Each log is compact JSON (< 1 MB) next to a ``<name>.meta.json`` describing the
run. Load them with :func:`nbhelpers.cockpit_tools.load_shipped_log`.

Usage::

    python scripts/make_cockpit_logs.py                 # 240 steps, batch 64, preset "standard"
    python scripts/make_cockpit_logs.py --steps 40 --out /tmp/logs   # a quick try
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

DEFAULT_OUT = REPO / "nbhelpers" / "data_files" / "cockpit_logs"


def _configs(steps: int, batch_size: int, n_train: int, seed: int):
    common = dict(
        source="synthetic",
        n_train=n_train,
        n_valid=1000,
        n_test=1000,
        batch_size=batch_size,
        epochs=max(1, -(-steps * batch_size // n_train)),
        max_steps=steps,
        loader="tensor",
        eval_batch_size=500,
        seed=seed,
        data_seed=seed,
        device="cpu",
    )
    handover = experiment.handover_config("quick", name="cockpit-handover", **common)
    fixed = experiment.handover_config(
        "quick",
        name="cockpit-fixed",
        zero_grad=True,
        lr=1e-3,
        schedule="none",
        augmentation="none",
        eval_from_train=False,
        **common,
    )
    return {"handover": handover, "fixed": fixed}


def _meta(name: str, config, record, hook, preset: str, seconds: float) -> dict:
    last = record.history[-1] if record.history else {}
    return {
        "name": name,
        "description": cockpit_tools.SHIPPED_LOGS[name],
        "made_with": "scripts/make_cockpit_logs.py",
        "preset": preset,
        "tracked": [spec.label for spec in hook.report.accepted],
        "steps": int(record.timings.get("images", 0) // config.batch_size),
        "config": config.to_dict(),
        "final": {k: v for k, v in last.items() if k.endswith(("_loss", "_accuracy")) or k == "lr"},
        "timings_s": {k: round(float(v), 2) for k, v in record.timings.items() if k.endswith("_s")},
        "wall_s": round(seconds, 1),
        "device": record.device,
        "versions": record.versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=6400, help="synthetic training images")
    parser.add_argument("--preset", default="standard", help="Cockpit preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", choices=sorted(cockpit_tools.SHIPPED_LOGS), default=None)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    env.print_banner("cpu", "synthetic")
    configs = _configs(args.steps, args.batch_size, args.n_train, args.seed)
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, config in configs.items():
            if args.only and name != args.only:
                continue
            hook = cockpit_tools.CockpitHook(args.preset)
            t0 = time.perf_counter()
            record = experiment.run(config, hooks=[hook], cache=False, runs_dir=runs_dir)
            seconds = time.perf_counter() - t0
            path = cockpit_tools.write_log(hook.cockpit, args.out / f"{name}.json", indent=None)
            meta = _meta(name, config, record, hook, args.preset, seconds)
            (args.out / f"{name}.meta.json").write_text(json.dumps(meta, indent=1, default=str))
            size = path.stat().st_size
            print(f"{name}: {meta['steps']} steps in {seconds:.0f} s, {path} ({size / 1e3:.0f} kB)")
            if size > 1_000_000:
                print(f"warning: {path} is over 1 MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
