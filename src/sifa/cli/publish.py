"""``sifa publish``: a trained run as a Hugging Face Hub model folder, pushed if asked."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """The ``publish`` command (its run folder is ``args.run_folder``: ``args.run`` is the
    handler every command sets)."""
    publish = commands.add_parser(
        "publish",
        help="a trained run as a Hugging Face Hub model folder (and push it)",
        description="Write a model folder: model.safetensors (the checkpoint's tensors "
        "unchanged), config.json (model, switches, class names, input settings, the run "
        "config), README.md (a model card with the evaluation of that checkpoint when the run "
        "has one) and the evaluation's confusion.png. Every --checkpoint and "
        "sifa.create_model(NAME, pretrained=...) takes the folder, or hf-hub:ORG/NAME once it "
        "is on the Hub. The folder is written whole, then moved into place.",
    )
    publish.add_argument(
        "run_folder", metavar="RUN", help="the training run folder (RUN/checkpoints/best|last)"
    )
    publish.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to write")
    publish.add_argument(
        "--checkpoint-name", choices=("best", "last"),
        help="which checkpoint of the run (default: best, else last)",
    )  # fmt: skip
    publish.add_argument(
        "--eval", metavar="FILE", dest="evaluation",
        help="a sifa eval report of that checkpoint for the card (default: the run's "
        "eval/eval_val.json where it evaluates that checkpoint)",
    )  # fmt: skip
    publish.add_argument(
        "--dataset", metavar="NAME",
        help="the evaluation's dataset as the card names it, e.g. a Hub dataset id (default: "
        "the name of the evaluated split's root folder)",
    )  # fmt: skip
    publish.add_argument(
        "--push", metavar="ORG/NAME", help="upload the folder to this Hub model repository"
    )
    publish.add_argument(
        "--private", action="store_true", help="with --push: create the repository private"
    )
    publish.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it is not empty"
    )
    publish.set_defaults(run=_publish)


def _publish(args: argparse.Namespace) -> None:
    from sifa.deploy.publish import publish_run

    result = publish_run(
        args.run_folder,
        args.out_dir,
        checkpoint_name=args.checkpoint_name,
        evaluation=args.evaluation,
        dataset=args.dataset,
        push=args.push,
        private=args.private,
        overwrite=args.overwrite,
    )
    evaluation = result.evaluation
    if evaluation is None:
        said = "no evaluation of it found: the card states no accuracy"
    else:
        report = evaluation.report
        said = (
            f"the card reports {evaluation.path}: top-1 {100 * report['top1']:.2f}%, top-5 "
            f"{100 * report['top5']:.2f}% ({evaluation.views})"
        )
    print(f"wrote {result.folder}/ ({', '.join(result.files)}) from {result.checkpoint}; {said}")
    if result.url:
        print(f"pushed to {result.url}")
