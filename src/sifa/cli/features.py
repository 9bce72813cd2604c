"""``sifa extract-features``: pooled last-stage features of videos."""

from __future__ import annotations

import argparse
import sys

from sifa.cli.common import CHECKPOINT_HELP, parse_switches
from sifa.data.annotations import FORMATS


def register(commands: argparse._SubParsersAction) -> None:
    """The ``extract-features`` command."""
    features = commands.add_parser(
        "extract-features",
        help="pooled last-stage features of videos, a file each (torchrun: several processes)",
        description="Write the pooled last-stage features of every video of SOURCE to OUT, "
        "one file per video named after its path relative to SOURCE, plus OUT/index.json. "
        "Clips are sampled and viewed as in testing (the checkpoint's config, or the defaults "
        "with --model); the feature map (views, C, T', H', W') of each head (SIFA-Net: main "
        "and dual; else features) is pooled over H',W' (--spatial), then T' (--temporal), "
        "then the views (--per video). Videos whose files are there are skipped (run it again "
        "to resume); unreadable videos are listed in the index and on stderr (exit status 1).",
    )
    features.add_argument(
        "source", help="a video file, a folder (every video under it) or an annotation file"
    )
    features.add_argument("out", help="output folder (created, or resumed)")
    weights = features.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    weights.add_argument(
        "--model", help="a registered model name (random weights, or --pretrained)"
    )
    features.add_argument(
        "--pretrained", metavar="FILE",
        help="with --model: ImageNet 2D ResNet or Swin weights to inflate",
    )  # fmt: skip
    features.add_argument(
        "--seed", type=int, default=0,
        help="with --model: seed of the random weights (the same in every process; default 0)",
    )  # fmt: skip
    features.add_argument("--frames", type=int, help="frames per clip (default: data.clip_len)")
    features.add_argument(
        "--size", type=int, help="test short side and crop size (default: the config's)"
    )
    features.add_argument("--clips", type=int, help="clips per video (default: data.test_clips)")
    features.add_argument(
        "--crops", type=int, choices=(1, 3), help="crops per clip (default: data.test_crops)"
    )
    features.add_argument(
        "--per", default="video", choices=("clip", "video"),
        help="video: average the views (default); clip: one row per view",
    )  # fmt: skip
    features.add_argument(
        "--spatial", default="avg", choices=("avg", "max", "keep"),
        help="pooling over H', W' (keep: the axes stay; default avg)",
    )  # fmt: skip
    features.add_argument(
        "--temporal", default="avg", choices=("avg", "max", "keep"),
        help="pooling over T', after --spatial (keep: the axis stays; default avg)",
    )  # fmt: skip
    features.add_argument(
        "--file-format", default="safetensors", choices=("safetensors", "npy"),
        help="safetensors: one file per video with every head and metadata (default); npy: a "
        "file per head",
    )  # fmt: skip
    features.add_argument(
        "--batch-size", type=int, default=1, help="videos per forward pass (default 1)"
    )
    features.add_argument(
        "--workers", type=int, default=0, help="decoding worker processes (default 0)"
    )
    features.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
        help="autocast precision (fp16: CUDA only); features are written as float32",
    )  # fmt: skip
    features.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where the model runs (auto: a GPU if there is one)",
    )  # fmt: skip
    features.add_argument(
        "--format", choices=FORMATS, help="SOURCE's annotation format (default: guessed)"
    )
    features.add_argument("--root", help="folder the annotation paths are relative to")
    features.add_argument(
        "--labels", help="class-names file, or the Something-Something labels JSON"
    )
    features.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord", "frames"),
        help="decoder (frames: folders of JPEG frames)",
    )  # fmt: skip
    features.add_argument("--quiet", action="store_true", help="no progress bar")
    features.add_argument(
        "switches", nargs="*", metavar="KEY=VALUE",
        help="with --model: model switches, e.g. base_width=16",
    )  # fmt: skip
    features.set_defaults(run=_extract_features)


def _extract_features(args: argparse.Namespace) -> int:
    from sifa.engine import distributed
    from sifa.engine.features import FeatureExtractor, extract_features, find_videos

    if args.switches and not args.model:
        raise ValueError(f"model switches ({args.switches[0]}) go with --model")
    group = distributed.setup(args.device)
    source = find_videos(args.source, format=args.format, root=args.root, labels=args.labels,
                         backend=args.backend)  # fmt: skip
    extractor = FeatureExtractor(
        args.checkpoint, model=args.model, switches=parse_switches(args.switches),
        pretrained=args.pretrained, seed=args.seed, frames=args.frames, size=args.size,
        clips=args.clips, crops=args.crops, spatial=args.spatial, temporal=args.temporal,
        per=args.per, device=group.device, precision=args.precision,
    )  # fmt: skip
    result = extract_features(
        extractor, source, args.out, file_format=args.file_format, batch_size=args.batch_size,
        num_workers=args.workers, group=group, progress=not args.quiet,
    )  # fmt: skip
    if group.is_main:
        for video in result.unreadable:
            print(f"unreadable: {video.path}: {video.reason}", file=sys.stderr)
        print(
            f"{result.num_videos} videos: {result.written} written, {result.skipped} already "
            f"there, {len(result.unreadable)} unreadable; index {result.index_path}"
        )
    return 1 if result.unreadable else 0
