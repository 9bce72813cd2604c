"""``sifa models`` and ``sifa flops``: the registered models and their cost."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from sifa.cli.common import parse_switches


def register(commands: argparse._SubParsersAction) -> None:
    """The ``models`` and ``flops`` commands."""
    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'sifa_*'")
    models.set_defaults(run=_models)

    flops = commands.add_parser(
        "flops", help="multiply-adds (GMACs) per view and parameters of a model"
    )
    flops.add_argument("model", help="a registered model name (see `sifa models`)")
    flops.add_argument("--frames", type=int, default=16, help="input frames per clip")
    flops.add_argument("--size", type=int, default=224, help="input height and width")
    flops.add_argument(
        "--frame-interval", type=int, default=1,
        help="step between sampled frames (labels the clip; the cost depends on --frames)",
    )  # fmt: skip
    flops.add_argument("--json", action="store_true", help="print JSON instead of text")
    flops.add_argument(
        "switches", nargs="*", metavar="KEY=VALUE", help="model switches, e.g. dual_head=false"
    )
    flops.set_defaults(run=_flops)


def _models(args: argparse.Namespace) -> None:
    from sifa.models import list_models, model_entry

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}")
    for name in names:
        print(f"{name:16s} {model_entry(name).note}")


def _flops(args: argparse.Namespace) -> None:
    from sifa.models.complexity import format_complexity, model_complexity

    switches = parse_switches(args.switches)
    if args.frame_interval < 1:
        raise ValueError(f"--frame-interval must be at least 1, got {args.frame_interval}")
    result = model_complexity(
        args.model, args.frames, args.size, frame_interval=args.frame_interval, **switches
    )
    if args.json:
        print(json.dumps(dict(model=args.model, switches=switches, **asdict(result)), indent=2))
    else:
        print(format_complexity(args.model, result, compare_with_paper=not switches))
