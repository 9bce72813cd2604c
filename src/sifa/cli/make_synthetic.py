"""``sifa make-synthetic``: the synthetic motion-order dataset."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """The ``make-synthetic`` command."""
    synthetic = commands.add_parser(
        "make-synthetic",
        help="write the synthetic motion-order dataset (mp4 files and list files)",
        description="Write a video classification task that only temporal order solves: "
        "classes come in pairs with the same two motions in opposite order. Writes "
        "OUT/videos/<class>/*.mp4, OUT/train.txt, OUT/val.txt and OUT/classes.txt; a complete "
        "folder made with the same settings is reused.",
    )
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--videos-per-class", type=int, default=100, help="training videos")
    synthetic.add_argument("--val-videos-per-class", type=int, default=25, help="validation videos")
    synthetic.add_argument("--size", type=int, default=64, help="frame height and width, even")
    synthetic.add_argument(
        "--frames", type=int, default=16, help="frames per clip, a multiple of 8"
    )
    synthetic.add_argument("--fps", type=int, default=8, help="frame rate written in the files")
    synthetic.add_argument("--pairs", type=int, default=4, help="class pairs, 1 to 4")
    synthetic.add_argument("--seed", type=int, default=0, help="the same seed, the same videos")
    synthetic.add_argument("--quiet", action="store_true", help="no progress bar")
    synthetic.set_defaults(run=_make_synthetic)


def _make_synthetic(args: argparse.Namespace) -> None:
    from sifa.data.synthetic import SyntheticConfig, make_synthetic_dataset

    config = SyntheticConfig(
        videos_per_class=args.videos_per_class,
        val_videos_per_class=args.val_videos_per_class,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        num_pairs=args.pairs,
        seed=args.seed,
    )
    summary = make_synthetic_dataset(args.out, config, progress=not args.quiet)
    state = "written" if summary["generated"] else "already complete, reused"
    print(
        f"{summary['root']}: {summary['num_train']} training and {summary['num_val']} validation "
        f"videos of {len(summary['class_names'])} classes ({state})\n"
        f"  lists: {summary['train_list']}, {summary['val_list']}; "
        f"class names: {summary['classes_file']}"
    )
