"""The ``sifa`` command."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import yaml


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
        args.run(args)
    except (ValueError, TypeError) as error:
        print(f"sifa {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
