"""Rebuild the shipped organism pair from nothing, evaluate it, and optionally ship it.

    python experiments/train_organism.py --out /tmp/organism [--seed 0] [--force] [--ship]

Trains with the "full" preset (same as ``mechit organism train``), prints the evaluation
record of ``mechit organism eval --json`` for the new pair, and with ``--ship`` copies
``base/``, ``tuned/`` and ``organism.json`` into ``mechit/organism/weights/`` (replacing the
shipped pair only after the copy is complete).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from mechit.organism.evaluate import evaluate
from mechit.organism.train import TrainConfig, train
from mechit.organism.weights import weights_dir


def ship(run_dir: Path) -> Path:
    """Copy a finished run into the package's weights directory; return that directory."""
    target = weights_dir()
    staging = target.with_name("weights.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in ("base", "tuned"):
        shutil.copytree(run_dir / name, staging / name)
    shutil.copy2(run_dir / "organism.json", staging / "organism.json")
    old = target.with_name("weights.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="organism-run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--ship", action="store_true", help="copy the result into the package")
    args = parser.parse_args(argv)
    out = Path(args.out)
    summary = train(out, TrainConfig.preset("full", seed=args.seed), force=args.force)
    print(json.dumps(summary["final_loss"]), f"{summary['train_seconds']:.0f} s", flush=True)
    print(json.dumps(evaluate(out)))
    if args.ship:
        print(f"shipped to {ship(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
