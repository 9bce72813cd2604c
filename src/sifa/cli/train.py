"""``sifa train``, with its ``--dry-run``."""

from __future__ import annotations

import argparse
import json
import os
import signal
from dataclasses import asdict


def register(commands: argparse._SubParsersAction) -> None:
    """The ``train`` command."""
    train = commands.add_parser(
        "train",
        help="train a model (torchrun for several processes)",
        description="Train with a YAML config merged onto the defaults; key=value arguments "
        "override it (e.g. optim.lr=0.01 data.batch_size=4). Ctrl-C or SIGTERM save a "
        "checkpoint and stop; --resume continues from it. --dry-run checks a recipe before "
        "hours are spent: it builds the run, times a few updates (loader and model alone and "
        "together), reports memory and estimates the epoch and run times, writing nothing.",
    )
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last"
    )
    train.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint")
    train.add_argument(
        "--dry-run", action="store_true",
        help="time a few updates and estimate the run, write nothing (one process, no torchrun; "
        "exit status 1 if the loss is not finite)",
    )  # fmt: skip
    train.add_argument(
        "--dry-run-updates", type=int, default=5, metavar="N",
        help="updates timed in each phase of --dry-run (default 5; rounded up to whole rounds "
        "of the loader's workers)",
    )  # fmt: skip
    train.add_argument("--json", action="store_true", help="--dry-run: print JSON, not a table")
    train.add_argument("switches", nargs="*", metavar="KEY=VALUE", help="config overrides")
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    from sifa.engine import load_config, train

    if args.json and not args.dry_run:
        raise ValueError("--json goes with --dry-run (training prints JSON lines already)")
    if args.dry_run and (args.resume or args.resume_from):
        raise ValueError("--dry-run times a fresh start and loads no checkpoint: drop --resume")
    config = load_config(args.config, args.switches)
    if args.dry_run:
        return _dry_run(config, args)
    result = train(config, resume=args.resume_from or args.resume)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one summary: rank 0's
    if result.interrupted:
        if main:
            print(f"stopped by {signal.Signals(result.interrupted).name}: resume with --resume")
        return 128 + result.interrupted
    best = f"{100 * result.best_top1:.2f}%" if result.best_top1 is not None else "n/a"
    if main:
        print(
            f"done: {result.updates} updates, best validation top-1 {best}, in {result.output_dir}"
        )
    return 0


def _dry_run(config, args: argparse.Namespace) -> int:
    from sifa.engine.dry_run import dry_run, format_dry_run

    report = dry_run(config, updates=args.dry_run_updates)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(format_dry_run(report))
    return 0 if report.loss_finite else 1
