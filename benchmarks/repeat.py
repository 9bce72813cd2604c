"""Same config, same seed, many runs at once: are they bit-equal?

Trains COPIES copies of a config (its seed unchanged), CONCURRENT of them at a time so that they
load the cores as other jobs would, each for UPDATES updates and saving a checkpoint after every
update, then compares every update's loss across the copies bit for bit and prints which copies
differ, from which update.

    python benchmarks/repeat.py configs/demo_synthetic.yaml --copies 32 --concurrent 4 \\
        --updates 12 data.train_size=32 data.test_short_side=32 data.test_crop_size=32
    python benchmarks/repeat.py my_run.yaml --threads 1 deterministic=true

KEY=VALUE overrides apply to every copy; ``--threads`` sets the torch threads of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path


def one_copy(config_path: str, overrides: list[str], out: str, updates: int) -> list[float]:
    """Train one copy in this (fresh) process; its losses, update by update."""
    from sifa.engine.config import load_config
    from sifa.engine.trainer import train

    fixed = [f"output_dir={out}", "progress=false", "log_every=1", "checkpoint_every=1",
             "eval_every=0"]  # fmt: skip
    train(load_config(config_path, [*overrides, *fixed]), stop_after_updates=updates)
    lines = (Path(out) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["type"] == "train"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for every copy")
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per copy")
    args, extra = parser.parse_known_args()  # KEY=VALUE may come after the options too
    if any("=" not in e or e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = [*args.overrides, *extra, f"threads={args.threads}"]
    with (
        tempfile.TemporaryDirectory() as scratch,
        ProcessPoolExecutor(args.concurrent, mp_context=get_context("spawn")) as pool,
    ):
        futures = [
            pool.submit(one_copy, args.config, overrides, f"{scratch}/{i}", args.updates)
            for i in range(args.copies)
        ]
        runs = [future.result() for future in futures]
    reference = runs[0]
    different = {}
    for index, losses in enumerate(runs[1:], start=1):
        first = next((u for u, (a, b) in enumerate(zip(losses, reference, strict=True)) if a != b),
                     None)  # fmt: skip
        if first is not None:
            different[index] = first
    equal = args.copies - len(different)
    print(f"{args.copies} copies, {args.concurrent} at a time, {args.threads} threads each, "
          f"{args.updates} updates: {equal} bit-equal to copy 0")  # fmt: skip
    for index, update in different.items():
        print(f"  copy {index} differs from update {update + 1}: loss {runs[index][update]!r} "
              f"vs {reference[update]!r}")  # fmt: skip
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
