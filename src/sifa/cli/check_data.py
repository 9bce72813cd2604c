"""``sifa check-data``: the unreadable videos of a dataset."""

from __future__ import annotations

import argparse

from sifa.data.annotations import FORMATS


def register(commands: argparse._SubParsersAction) -> None:
    """The ``check-data`` command."""
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
    check.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord", "frames"),
        help="decoder (frames: folders of JPEG frames)",
    )  # fmt: skip
    check.add_argument("--workers", type=int, default=4, help="parallel decoding threads")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(run=_check_data)


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
