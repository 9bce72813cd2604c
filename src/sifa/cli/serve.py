"""``sifa serve``: an HTTP API and a web page around a trained model."""

from __future__ import annotations

import argparse
import sys

_SETTINGS_DEFAULTS = {
    "max_batch": 8,
    "max_wait_ms": 5.0,
    "max_queue": 16,
    "workers": 2,
    "max_upload_mb": 256.0,
    "max_pixels": 4096 * 4096,
    "timeout_s": 120.0,
}  # fmt: skip  (ServeSettings' defaults; the parser must not import FastAPI to list them)


def register(commands: argparse._SubParsersAction) -> None:
    """The ``serve`` command."""
    serve = commands.add_parser(
        "serve",
        help="an HTTP API and a web page that predict on uploaded videos",
        description="Serve a trained model over HTTP: POST /v1/predict (a video as multipart "
        "part 'video'; the JSON of `sifa predict --json`), /v1/annotate (the annotated mp4), "
        "/v1/offsets (the picture of `sifa visualize`), GET /v1/health and /v1/model; a web "
        "page at / and the OpenAPI page at /docs. Clips of concurrent requests are scored in "
        "shared batches. SIGTERM or Ctrl-C finish the requests in flight, then stop the server "
        "(exit status 143 or 130). Needs the serve extra: pip install 'sifa[serve]'.",
    )
    serve.add_argument(
        "checkpoint", help="a run folder, a .safetensors checkpoint, or a model folder"
    )
    serve.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface; the API has no authentication)",
    )  # fmt: skip
    serve.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed)")
    serve.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where the model runs (auto: a GPU if there is one)",
    )  # fmt: skip
    serve.add_argument(
        "--backend", default="pyav", choices=("pyav", "decord"), help="video decoder"
    )
    limits = serve.add_argument_group("batching and limits")
    limits.add_argument(
        "--max-batch", type=int, default=_SETTINGS_DEFAULTS["max_batch"],
        help="views scored in one model call, from one or several requests (1: no batching)",
    )  # fmt: skip
    limits.add_argument(
        "--max-wait-ms", type=float, default=_SETTINGS_DEFAULTS["max_wait_ms"],
        help="how long a batch waits for more views once the first has arrived",
    )  # fmt: skip
    limits.add_argument(
        "--max-queue", type=int, default=_SETTINGS_DEFAULTS["max_queue"],
        help="requests in progress at once; more are answered 503 with Retry-After",
    )  # fmt: skip
    limits.add_argument(
        "--workers", type=int, default=_SETTINGS_DEFAULTS["workers"],
        help="requests decoded at once",
    )  # fmt: skip
    limits.add_argument(
        "--max-upload-mb", type=float, default=_SETTINGS_DEFAULTS["max_upload_mb"],
        help="larger uploads are answered 413",
    )  # fmt: skip
    limits.add_argument(
        "--max-pixels", type=int, default=_SETTINGS_DEFAULTS["max_pixels"],
        help="videos with larger frames (width x height) are answered 422",
    )  # fmt: skip
    limits.add_argument(
        "--timeout-s", type=float, default=_SETTINGS_DEFAULTS["timeout_s"],
        help="a request that takes longer is answered 504",
    )  # fmt: skip
    serve.add_argument("--quiet", action="store_true", help="no line per request")
    serve.set_defaults(run=_serve)


def settings_of(args: argparse.Namespace):
    """The :class:`~sifa.serve.ServeSettings` of the command line."""
    from sifa.serve import ServeSettings

    settings = ServeSettings(**{name: getattr(args, name) for name in _SETTINGS_DEFAULTS})
    settings.check()
    return settings


def _serve(args: argparse.Namespace) -> None:
    try:
        from sifa.serve.server import bind, serve, url_of
    except ModuleNotFoundError as error:
        raise ValueError(f"sifa serve needs {error.name}: pip install 'sifa[serve]'") from None
    from sifa.engine.predict import Predictor

    settings = settings_of(args)
    predictor = Predictor(args.checkpoint, device=args.device, backend=args.backend)
    sock = bind(args.host, args.port)
    print(f"checkpoint {predictor.checkpoint}", file=sys.stderr)
    print(f"sifa serve: listening on {url_of(sock)} (the page at /, the API under /v1, "
          f"its documentation at /docs)", file=sys.stderr, flush=True)  # fmt: skip

    def stopped(counts: dict) -> None:
        print(
            f"sifa serve: stopped after {counts['answered']} requests ({counts['views']} views "
            f"in {counts['batches']} model calls)", file=sys.stderr, flush=True,
        )  # fmt: skip

    serve(predictor, sock, settings, log_level="warning" if args.quiet else "info",
          on_stop=stopped)  # fmt: skip
