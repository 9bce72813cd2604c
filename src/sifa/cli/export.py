"""``sifa export``: a checkpoint as ONNX or a torch.export program."""

from __future__ import annotations

import argparse

from sifa.cli.common import CHECKPOINT_HELP


def register(commands: argparse._SubParsersAction) -> None:
    """The ``export`` command."""
    export = commands.add_parser(
        "export",
        help="a checkpoint as ONNX or a torch.export program, batch size left free",
        description="Export a training checkpoint for clips (batch, 3, FRAMES, SIZE, SIZE) with "
        "a free batch size. ONNX files use standard operators only (the SIFA operator becomes "
        "GridSample and matrix products) and run in onnxruntime; a torch.export program (.pt2) "
        "keeps the fused SIFA operator (load it after `import sifa`) unless --decompose. The "
        "file carries the class names and preprocessing as metadata, and is checked against "
        "the model on a random clip after writing.",
    )
    export.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    export.add_argument(
        "--format", required=True, choices=("onnx", "torch-export"),
        help="onnx (onnxruntime and others) or torch-export (a .pt2 program)",
    )  # fmt: skip
    export.add_argument("--frames", type=int, help="frames per clip (default: data.clip_len)")
    export.add_argument("--size", type=int, help="height and width (default: data.test_crop_size)")
    export.add_argument(
        "--out",
        help="output file (default: RUN/export/MODEL_FxS.onnx|pt2; ./export/ for a model folder)",
    )
    export.add_argument(
        "--decompose", action="store_true",
        help="torch-export: standard aten ops instead of the SIFA op (loads without sifa)",
    )  # fmt: skip
    export.add_argument(
        "--no-optimize", action="store_true", help="onnx: skip the exporter's graph optimisation"
    )
    export.add_argument(
        "--no-check", action="store_true", help="do not run the written file to compare"
    )
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> None:
    from sifa.deploy import export_checkpoint

    result = export_checkpoint(
        args.checkpoint,
        format=args.format,
        frames=args.frames,
        size=args.size,
        out=args.out,
        decompose=True if args.decompose else None,
        optimize=not args.no_optimize,
        check=not args.no_check,
    )
    megabytes = result.path.stat().st_size / 2**20
    shape = ", ".join(str(d) for d in result.input_shape)
    print(
        f"wrote {result.path} ({megabytes:.1f} MiB) in {result.seconds:.1f} s: "
        f"input 'clip' ({shape}) float32, output 'logits' (batch, classes)"
    )
    if result.max_abs_diff is None:
        print(result.check_note)
    else:
        runtime = "onnxruntime" if result.format == "onnx" else "torch.export.load"
        print(
            f"checked with {runtime} on a batch of {result.checked_batch}: largest logit "
            f"difference to PyTorch {result.max_abs_diff:.2g}"
        )
