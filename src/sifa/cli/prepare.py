"""``sifa prepare``: a training-ready copy of a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sifa.cli.common import stop_outcome
from sifa.data.annotations import FORMATS


def register(commands: argparse._SubParsersAction) -> None:
    """The ``prepare`` command."""
    prepare = commands.add_parser(
        "prepare",
        help="a training-ready copy of a dataset: videos re-encoded small, or frame folders",
        description="Re-encode every video of a dataset to H.264 mp4 with a short side of "
        "--short-side pixels and a keyframe every --keyframe-interval frames (no B-frames, "
        "audio dropped), or cut it into JPEG frame folders (--frames), in parallel; write the "
        "annotation files of the copy and print its dataset entry for a config. Sources that "
        "cannot be read are left out and listed in OUT/prepare_report.json; exit status 1 if "
        "there is any. Every output appears whole or not at all: run it again to resume (done "
        "outputs are skipped, leftovers of a killed run removed, unreadable sources retried).",
    )
    prepare.add_argument(
        "source", nargs="?", metavar="SRC",
        help="the dataset's folder: of class folders (format folder), or the root the "
        "annotation paths are relative to (not with --config)",
    )  # fmt: skip
    prepare.add_argument("out", metavar="OUT", help="output folder (created, or resumed)")
    prepare.add_argument(
        "--config",
        help="a training config instead of SRC: prepare its data.train and data.val into "
        "OUT/train and OUT/val",
    )
    prepare.add_argument(
        "--format", choices=[f for f in FORMATS if f != "frame_list"],
        help="the dataset format (default: folder without --annotations, else guessed from "
        "the annotation file: .csv Kinetics, .json Something-Something, else a video list)",
    )  # fmt: skip
    prepare.add_argument(
        "--annotations", metavar="FILE",
        help="the video list, Kinetics CSV or Something-Something annotation JSON",
    )  # fmt: skip
    prepare.add_argument(
        "--labels", metavar="FILE",
        help="class-names file (one per line), or the Something-Something labels JSON",
    )  # fmt: skip
    prepare.add_argument(
        "--short-side", type=int, default=320,
        help="short side of the copy in pixels (default 320); a smaller video keeps its size "
        "(never upscaled)",
    )  # fmt: skip
    prepare.add_argument(
        "--fps", type=float, help="frame rate of the copy (default: the source's; only lowers)"
    )
    prepare.add_argument(
        "--crf", type=int, default=23,
        help="H.264 quality: 0 lossless ... 51 worst (default 23; +6 about halves the size)",
    )  # fmt: skip
    prepare.add_argument(
        "--keyframe-interval", type=int, default=16,
        help="frames between keyframes (default 16): a clip decodes at most this many frames "
        "it does not use",
    )  # fmt: skip
    prepare.add_argument(
        "--preset", default="veryfast",
        help="x264 preset, ultrafast ... veryslow: encoding time against file size (default "
        "veryfast)",
    )  # fmt: skip
    prepare.add_argument(
        "--frames", action="store_true",
        help="JPEG frame folders (img_00001.jpg ...) and a frame_list file instead of mp4",
    )  # fmt: skip
    prepare.add_argument(
        "--jpeg-quality", type=int, default=90, help="JPEG quality with --frames (1-95, default 90)"
    )
    prepare.add_argument(
        "--workers", type=int,
        help="parallel processes, one decoding thread each (default: one per core; 0: none)",
    )  # fmt: skip
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(run=_prepare)


def _prepare_sources(args: argparse.Namespace) -> dict:
    """The datasets to prepare, by name (``None``: straight into OUT)."""
    from sifa.data.annotations import DatasetSpec
    from sifa.data.check import guess_spec

    if args.config:
        from sifa.engine.config import dataset_spec, load_config

        options = {"SRC": args.source, "--format": args.format,
                   "--annotations": args.annotations, "--labels": args.labels}  # fmt: skip
        given = [option for option, value in options.items() if value]
        if given:
            raise ValueError(f"--config takes the datasets from the config: drop {given[0]}")
        config = load_config(args.config)
        splits = [split for split in ("train", "val") if config.data[split] is not None]
        if not splits:
            raise ValueError(f"{args.config}: the config has no data.train or data.val")
        return {split: dataset_spec(config, split) for split in splits}
    if not args.source:
        raise ValueError("give the dataset's folder SRC, or a training config with --config")
    if args.annotations:
        if not Path(args.annotations).is_file():
            raise ValueError(f"annotation file not found: {args.annotations}")
        spec = guess_spec(
            args.annotations, format=args.format, root=args.source, labels=args.labels
        )
    elif args.format not in (None, "folder"):
        raise ValueError(f"--format {args.format} needs its annotation file: --annotations FILE")
    else:
        spec = DatasetSpec("folder", args.source)
    return {None: spec}


def _prepare(args: argparse.Namespace) -> int:
    from sifa.data.prepare import PrepareSettings, dataset_yaml, prepare_dataset
    from sifa.files import replace_atomically

    settings = PrepareSettings(
        short_side=args.short_side, fps=args.fps, crf=args.crf,
        keyframe_interval=args.keyframe_interval, preset=args.preset, frames=args.frames,
        jpeg_quality=args.jpeg_quality,
    )  # fmt: skip
    sources = _prepare_sources(args)
    out = Path(args.out)
    prepared, unreadable = {}, 0
    for name, spec in sources.items():
        try:
            result = prepare_dataset(
                spec, out / name if name else out, settings, workers=args.workers,
                progress=not args.no_progress, description=name or "preparing",
            )  # fmt: skip
        except KeyboardInterrupt as stop:
            word, status = stop_outcome(stop)
            print(f"{word}: the same command resumes where this run stopped", file=sys.stderr)
            return status
        prepared[name] = result.spec
        unreadable += len(result.unreadable)
        print(f"{name}: {result.summary()}" if name else result.summary())
        for source, reason in result.unreadable[:5]:
            print(f"  {source}: {reason}")
        if len(result.unreadable) > 5:
            print(f"  ... and {len(result.unreadable) - 5} more in {result.report}")
    if None in prepared:
        text = dataset_yaml(prepared[None])
        print(f"\nThe dataset entry (data.train or val) of the copy, in {out / 'dataset.yaml'}:")
    else:
        text = dataset_yaml(prepared)
        replace_atomically(out / "dataset.yaml", lambda path: path.write_text(text))
        print(f"\nThe data section of the copy, in {out / 'dataset.yaml'}:")
    print(text, end="")
    return 1 if unreadable else 0
