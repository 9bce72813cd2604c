"""``sifa predict``, with ``--stream`` and ``--out-video``."""

from __future__ import annotations

import argparse
import json
import sys

from sifa.cli.common import CHECKPOINT_HELP, stop_outcome


def register(commands: argparse._SubParsersAction) -> None:
    """The ``predict`` command."""
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
    predict.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
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
