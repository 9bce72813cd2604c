"""``sifa backends``: the SIFA operator's backends and why one is unavailable."""

from __future__ import annotations

import argparse
import json


def register(commands: argparse._SubParsersAction) -> None:
    """The ``backends`` command."""
    backends = commands.add_parser(
        "backends",
        help="the SIFA operator's backends and why one is unavailable",
        description="List the operator's backends; builds the fused CPU kernel if it is not "
        "built yet, to find out whether it can run here.",
    )
    backends.add_argument("--json", action="store_true", help="print JSON instead of lines")
    backends.set_defaults(run=_backends)


def _backends(args: argparse.Namespace) -> None:
    from sifa.ops import backend_report

    rows = backend_report()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        print(f"{row['backend']:<10} {row['devices']:<5} {state}")
