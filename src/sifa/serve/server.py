"""Running the app: a socket bound first (so that port 0 gives a free port that can be
announced), then uvicorn on it until SIGTERM or Ctrl-C, which finish the requests in flight."""

from __future__ import annotations

import socket
from collections.abc import Callable

from sifa.engine.predict import Predictor
from sifa.serve.app import ServeSettings, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the connections of a listening socket
    # only when it names its protocol, and without it every answer waits ~40 ms for a delayed
    # ACK (Nagle's algorithm holds the body back until the headers are acknowledged).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    predictor: Predictor,
    sock: socket.socket,
    settings: ServeSettings | None = None,
    *,
    log_level: str = "info",
    on_stop: Callable[[dict], None] | None = None,
) -> None:
    """Serve ``predictor`` on ``sock`` until a signal stops the server (in the main thread:
    SIGTERM and SIGINT; uvicorn raises the signal again once it has shut down). Requests in
    flight are finished first, for up to the settings' ``timeout_s``. ``on_stop`` is given the
    health counts when the server has stopped."""
    import uvicorn

    settings = settings or ServeSettings()
    app = create_app(predictor, settings)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.timeout_s) + 1,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        if on_stop is not None:
            service = app.state.service
            on_stop({"answered": service.answered, "batches": service.batcher.calls,
                     "views": service.batcher.views})  # fmt: skip
