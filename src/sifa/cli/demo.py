"""``sifa demo``: SIFA-Net, C2D and TSM trained on the synthetic task."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """The ``demo`` command."""
    demo = commands.add_parser(
        "demo",
        help="train SIFA-Net, C2D and TSM on the synthetic motion-order task (CPU, minutes)",
        description="Write the synthetic motion-order dataset to OUT/data (unless it is "
        "there), train sifa_resnet18, c2d_resnet18 and tsm_resnet18 on it with the same recipe "
        "(configs/demo_synthetic.yaml) into OUT/<model>, score each run's checkpoint on the "
        "validation videos (the one `sifa eval --checkpoint OUT/<model>` picks: best, else "
        "last), and write a table (results.md, results.json), training curves and one "
        "confusion matrix per model to OUT. With --seeds N every model is trained with seeds "
        "0 .. N-1 (seed 0 in OUT/<model>, the others in OUT/<model>-seed<N>) and the table "
        "gives each score's mean, minimum and maximum.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, help="override the recipe's epochs")
    demo.add_argument(
        "--seeds", type=int, default=1, help="train every model with seeds 0 .. SEEDS-1"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars: a line per epoch")
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> None:
    from sifa.engine.demo import run_demo

    run_demo(args.out, epochs=args.epochs, progress=not args.quiet, seeds=args.seeds)
