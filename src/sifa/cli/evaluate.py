"""``sifa eval``: multi-view evaluation of a checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sifa.cli.common import CHECKPOINT_HELP


def register(commands: argparse._SubParsersAction) -> None:
    """The ``eval`` command."""
    evaluate = commands.add_parser(
        "eval",
        help="multi-view evaluation of a checkpoint",
        description="Score data.<split> with data.test_clips x data.test_crops views per "
        "video (softmaxes averaged); print top-1, top-5 and mean class accuracy and the "
        "checkpoint file used; write the report (JSON), the confusion matrix (PNG) and the "
        "scores (NPZ). A video that cannot be read is left out of the metrics and listed in "
        "the report (with data.on_error=raise it stops the evaluation).",
    )
    evaluate.add_argument("config", help="YAML config giving the data and the test views")
    evaluate.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    evaluate.add_argument(
        "--split", default="val", choices=("val", "train"),
        help="the config's dataset to score: data.val (default) or data.train",
    )  # fmt: skip
    evaluate.add_argument(
        "--out", help="output folder (default: RUN/eval; ./eval for a model folder or Hub id)"
    )
    evaluate.add_argument("switches", nargs="*", metavar="KEY=VALUE", help="config overrides")
    evaluate.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> None:
    from sifa.engine import evaluate_checkpoint, load_config
    from sifa.engine.checkpoint import default_output_folder, resolve_checkpoint

    config = load_config(args.config, args.switches)
    checkpoint = resolve_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else default_output_folder(checkpoint) / "eval"
    report = evaluate_checkpoint(checkpoint, config, out, split=args.split)
    if int(os.environ.get("RANK", "0")) == 0:
        split = report["split"]
        excluded = report["num_unreadable"]
        unreadable = (
            f", {excluded} unreadable excluded (listed in eval_{split}.json)" if excluded else ""
        )
        print(
            f"{split}: {report['num_videos']} videos scored{unreadable}, {report['views']} views "
            f"each: top-1 {100 * report['top1']:.2f}%, top-5 {100 * report['top5']:.2f}%, "
            f"mean class accuracy {100 * report['mean_class_accuracy']:.2f}%\n"
            f"checkpoint {report['checkpoint']}\n"
            f"report, confusion matrix and scores in {out}/"
        )
