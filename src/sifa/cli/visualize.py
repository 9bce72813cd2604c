"""``sifa visualize``: the points SIFA attends to and the motion saliency."""

from __future__ import annotations

import argparse

from sifa.cli.common import CHECKPOINT_HELP


def register(commands: argparse._SubParsersAction) -> None:
    """The ``visualize`` command."""
    visualize = commands.add_parser(
        "visualize",
        help="pictures of the points SIFA attends to and the motion saliency, per stage",
        description="For one clip of VIDEO (sampled and cropped as in evaluation), draw per "
        "SIFA stage: frame t with query points, frame t+1 with each query's k x k deformed "
        "sampling points (area ~ |attention weight|), and the motion saliency map. Writes "
        "OUT/STAGE.png, OUT/STAGE.gif with --gif, and OUT/points.json with every coordinate "
        "(input pixels of the network's input crop) and weight drawn.",
    )
    visualize.add_argument("video", help="a video file")
    visualize.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    visualize.add_argument("--out", required=True, help="output folder")
    visualize.add_argument(
        "--stage", action="append",
        help="a stage (e.g. layer3, layers.2) or SIFA block path; repeat for more (default: all)",
    )  # fmt: skip
    visualize.add_argument(
        "--points", type=int, default=4, help="query points: the most salient positions"
    )
    visualize.add_argument(
        "--query", type=_point, action="append", metavar="Y,X",
        help="a query point in input pixels instead of --points; repeat for more",
    )  # fmt: skip
    visualize.add_argument("--pair", type=int, default=0, help="frame pair drawn in the PNG")
    visualize.add_argument("--gif", action="store_true", help="also an animated GIF of all pairs")
    visualize.add_argument("--start", type=int, help="first frame of the clip (default: centre)")
    visualize.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord"), help="video decoder"
    )
    visualize.set_defaults(run=_visualize)


def _visualize(args: argparse.Namespace) -> None:
    from sifa.tools.visualize import visualize_video

    summary = visualize_video(
        args.video,
        args.checkpoint,
        args.out,
        stages=args.stage,
        points=args.points,
        queries=args.query,
        pair=args.pair,
        gif=args.gif,
        start=args.start,
        backend=args.backend,
    )
    top = ", ".join(f"{p['label']} {p['score']:.3f}" for p in summary["prediction"])
    print(f"{args.video}: {top}")
    for stage in summary["stages"]:
        t, h, w = stage["feature_size"]
        pairs = len(stage["pairs"])
        print(f"  {stage['stage']:<12} {stage['module']} ({t}x{h}x{w}): {pairs} pair(s)")
    print("wrote " + ", ".join(summary["files"]))


def _point(text: str) -> tuple[float, float]:
    try:
        y, x = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y,X in input pixels, got {text!r}") from None
    return y, x
