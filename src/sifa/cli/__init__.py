"""The ``sifa`` command: :func:`build_parser` gathers the commands, one module each (or a
family), every module registering its own options and handler; :func:`main` runs one."""

from __future__ import annotations

import argparse
import logging
import sys

from sifa.cli import (
    backends,
    benchmark,
    check_data,
    demo,
    evaluate,
    export,
    features,
    make_synthetic,
    models,
    predict,
    prepare,
    publish,
    serve,
    train,
    visualize,
)
from sifa.cli.common import Parser, one_line, parse_switches, sigterm_as_interrupt, stop_outcome

__all__ = ["build_parser", "main", "parse_switches"]

# In the order `sifa --help` lists them.
COMMANDS = (
    models,
    train,
    evaluate,
    predict,
    serve,
    features,
    demo,
    check_data,
    prepare,
    export,
    publish,
    visualize,
    make_synthetic,
    backends,
    benchmark,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sifa", description="Stand-Alone Inter-Frame Attention for video recognition."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    # KEY=VALUE switches may come before or after the options: argparse leaves the later ones
    # over, so collect them here.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a or "switches" not in args]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.switches = [*args.switches, *extra]
    from tqdm.contrib.logging import logging_redirect_tqdm

    from sifa.data.decoding import VideoError

    try:
        # Log lines go through tqdm, so that they do not land on a progress bar's line.
        with logging_redirect_tqdm(), sigterm_as_interrupt():
            return args.run(args) or 0
    except (ValueError, TypeError, VideoError, OSError) as error:
        print(f"sifa {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        # Ctrl-C or SIGTERM outside the places that handle them themselves (training saves,
        # prepare says how to resume, streaming prints its summary): loading, evaluating,
        # exporting.
        word, status = stop_outcome(stop)
        print(f"sifa {args.command}: {word}", file=sys.stderr)
        return status
    finally:
        # Under torchrun: leave the process group before exiting (a gloo group still open at
        # shutdown can abort the process after its work is done).
        if "torch.distributed" in sys.modules:
            from sifa.engine import distributed

            distributed.cleanup()
