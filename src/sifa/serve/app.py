"""The HTTP service of ``sifa serve``: a FastAPI app around a ``Predictor``.

API (under ``/v1``; the OpenAPI page is at ``/docs``):

- ``POST /v1/predict``: a video as the ``video`` part of a ``multipart/form-data`` body;
  ``topk`` and ``window_seconds`` as query parameters. Answers what ``sifa predict --json``
  prints for one video.
- ``POST /v1/annotate``: the same, answered with the video with the predictions drawn on it
  (H.264 mp4, as ``--out-video`` writes it); the prediction is in the ``X-Sifa-Prediction``
  header (JSON).
- ``POST /v1/offsets``: the offsets picture of ``sifa visualize`` (PNG) for the clip starting at
  ``frame``, at one SIFA ``stage``.
- ``GET /v1/health``, ``GET /v1/model``.

A request is admitted while fewer than ``max_queue`` are being received, decoded or scored;
beyond that it is answered 503 with ``Retry-After``. A body over ``max_upload_mb`` is answered
413, a video larger than ``max_pixels`` per frame 422, anything else that is not a readable
video 4xx, always as ``{"error": message}``. An upload is streamed into a private temporary
folder and its file removed when its request ends (the server never opens a path a request
names). A request that takes longer than ``timeout_s`` is answered 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.formparsers import MultiPartException, MultiPartParser

from sifa import __version__
from sifa.data.decoding import VideoError, open_video
from sifa.engine.predict import Predictor
from sifa.serve.batching import BatcherClosed, ClipBatcher

STATIC = Path(__file__).with_name("static")
MEGABYTE = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """The limits of the service (``sifa serve``'s options of the same names)."""

    max_batch: int = 8  # views scored in one model call, from one or several requests
    max_wait_ms: float = 5.0  # how long a batch waits for more views once one has arrived
    max_queue: int = 16  # requests in progress at once; beyond: 503
    workers: int = 2  # requests decoded at once (the model itself runs on one thread)
    max_upload_mb: float = 256.0  # larger bodies: 413
    max_pixels: int = 4096 * 4096  # larger frames: 422
    timeout_s: float = 120.0  # a longer request: 504

    def check(self) -> None:
        for name in ("max_batch", "max_queue", "workers", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")


class RequestError(HTTPException):
    """An answer with a 4xx or 5xx status and ``{"error": message}``."""


@dataclass
class Upload:
    path: Path  # in the service's private folder
    name: str  # what the client called it: only ever shown, never opened
    working: bool = False  # handed to a thread, which removes the file and ends the request


class Service:
    """What the app's routes share: the predictor, the batcher, the decoding threads, the
    upload folder and the counts."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        settings.check()
        self.predictor = predictor
        self.settings = settings
        self.batcher = ClipBatcher(
            predictor.score, max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000, more_coming=lambda: self.preparing > 0,
        )  # fmt: skip
        self.decoders = ThreadPoolExecutor(settings.workers, thread_name_prefix="sifa-decode")
        self.uploads = Path(tempfile.mkdtemp(prefix="sifa-serve-"))
        self.weights_sha256 = _sha256(predictor.checkpoint)
        self.sifa_stages = _warm_up(predictor)
        self._lock = threading.Lock()
        self.in_progress = 0
        self.preparing = 0  # requests decoding views that the batcher has not been sent yet
        self.answered = 0

    def close(self) -> None:
        """Finish what was admitted, then release the threads and the upload folder."""
        self.decoders.shutdown(wait=True)
        self.batcher.close()
        shutil.rmtree(self.uploads, ignore_errors=True)

    # -- admission -----------------------------------------------------------------------

    def admit(self) -> None:
        with self._lock:
            if self.in_progress >= self.settings.max_queue:
                raise RequestError(
                    503,
                    f"busy: {self.in_progress} requests in progress (--max-queue "
                    f"{self.settings.max_queue}); try again shortly",
                    headers={"Retry-After": "1"},
                )
            self.in_progress += 1

    def release(self) -> None:
        with self._lock:
            self.in_progress -= 1
            self.answered += 1

    # -- uploads -------------------------------------------------------------------------

    async def receive(self, request: Request) -> Upload:
        """The request's ``video`` part, streamed into a file of the upload folder."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise RequestError(
                415,
                f"send the video as multipart/form-data (a part named 'video'), not "
                f"{content_type or 'a body without a content type'}",
            )
        limit = int(self.settings.max_upload_mb * MEGABYTE)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), self.settings.max_upload_mb)
        parser = MultiPartParser(
            request.headers, _limited(request.stream(), limit, self.settings.max_upload_mb),
            max_files=1, max_fields=8,
        )  # fmt: skip
        try:
            form = await parser.parse()
        except MultiPartException as error:
            if isinstance(error, _TooLarge):
                raise RequestError(413, str(error)) from None
            raise RequestError(400, f"the multipart body cannot be read: {error}") from None
        try:
            video = form.get("video")
            if video is None or isinstance(video, str):
                raise RequestError(422, "no file in a part named 'video'")
            path = self.uploads / f"{uuid.uuid4().hex}.upload"
            try:
                with open(path, "xb") as target:
                    await asyncio.to_thread(shutil.copyfileobj, video.file, target, MEGABYTE)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return Upload(path, _shown_name(video.filename))
        finally:
            await form.close()

    # -- work ----------------------------------------------------------------------------

    async def run(self, upload: Upload, work: Callable[[Path], object]) -> object:
        """``work(path)`` on a decoding thread. When it ends, the upload is removed and the
        request no longer counts as in progress; after a time-out, too, only then (a thread
        cannot be stopped)."""

        def job() -> object:
            self._count_preparing(+1)
            try:
                _hold_for_test()
                self._check_frame_size(upload)
                return work(upload.path)
            finally:
                self._count_preparing(-1)
                upload.path.unlink(missing_ok=True)

        future = asyncio.get_running_loop().run_in_executor(self.decoders, job)
        upload.working = True
        future.add_done_callback(lambda _: self.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.settings.timeout_s)
        except TimeoutError:
            raise RequestError(
                504, f"the request took longer than {self.settings.timeout_s:g} s (--timeout-s)"
            ) from None
        except VideoError as error:
            raise RequestError(422, f"{upload.name}: {error.problem}") from None
        except ValueError as error:
            raise RequestError(422, str(error).replace(str(upload.path), upload.name)) from None
        except BatcherClosed as error:
            raise RequestError(503, str(error), headers={"Retry-After": "5"}) from None

    def _count_preparing(self, change: int) -> None:
        with self._lock:
            self.preparing += change

    def _score_groups(self, groups: list) -> list:
        """The batcher's scores; meanwhile this request is not preparing views."""
        self._count_preparing(-1)
        try:
            return self.batcher.score_groups(groups)
        finally:
            self._count_preparing(+1)

    def _check_frame_size(self, upload: Upload) -> None:
        with open_video(upload.path, self.predictor.backend) as reader:
            info = reader.info
        if info.width * info.height > self.settings.max_pixels:
            raise ValueError(
                f"{upload.name}: frames of {info.width}x{info.height} are larger than this "
                f"server accepts ({self.settings.max_pixels} pixels, --max-pixels)"
            )

    def predict(self, path: Path, name: str, topk: int, window_seconds: float | None) -> dict:
        return self.predictor.predict(
            path, topk=topk, window_seconds=window_seconds,
            score_groups=self._score_groups, name=name,
        )  # fmt: skip

    def annotate(
        self, path: Path, name: str, topk: int, window_seconds: float | None
    ) -> tuple[dict, Path]:
        out = path.with_suffix(".annotated.mp4")
        try:
            result = self.predictor.annotate(
                path, out, topk=topk, window_seconds=window_seconds,
                score_groups=self._score_groups, name=name,
            )  # fmt: skip
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return result, out

    def offsets(self, path: Path, name: str, frame: int | None, stage: str | None) -> bytes:
        from sifa.engine.metrics import save_png
        from sifa.tools.visualize import draw_pair, explain_clip, read_clip

        predictor = self.predictor
        clip, frames, indices = read_clip(path, predictor.config, start=frame)
        output, views = self.batcher.run_alone(
            lambda: explain_clip(predictor.model, clip.to(predictor.device),
                                 stages=[stage] if stage else None)
        )  # fmt: skip
        view = views[0]
        best = int(output.float().argmax(-1)[0])
        title = f"\n{name}, frames {indices[0]}-{indices[-1]}: {predictor.class_names[best]}"
        picture = path.with_suffix(".png")
        try:
            save_png(draw_pair(view, view.pairs[0], frames, title), picture)
            return picture.read_bytes()
        finally:
            picture.unlink(missing_ok=True)

    def model_info(self) -> dict:
        predictor = self.predictor
        data = predictor.config.data
        return {
            "name": predictor.config.model.name,
            "classes": list(predictor.class_names),
            "num_classes": len(predictor.class_names),
            "clip_len": data.clip_len,
            "frame_interval": data.frame_interval,
            "sampling": data.sampling,
            "test_clips": data.test_clips,
            "test_crops": data.test_crops,
            "test_crop_size": data.test_crop_size,
            "test_short_side": data.test_short_side,
            "weights": predictor.checkpoint.name,
            "weights_sha256": self.weights_sha256,
            "sifa_stages": self.sifa_stages,  # those with a frame pair at this clip length
            "device": str(predictor.device),
            "sifa_version": __version__,
            "limits": asdict(self.settings),
        }


# Test hook: SIFA_TEST_SERVE_HOLD=FIFO makes every request wait, once its upload is in, until
# something has been written to the named pipe FIFO and closed, so that a test can stop the
# server while a request is surely in flight.
HOLD_VARIABLE = "SIFA_TEST_SERVE_HOLD"


def _hold_for_test() -> None:
    fifo = os.environ.get(HOLD_VARIABLE)
    if fifo:
        with open(fifo, "rb") as pipe:
            pipe.read()


class _TooLarge(MultiPartException):
    pass


def _too_large(size: int, limit_mb: float) -> RequestError:
    return RequestError(
        413, f"the upload of {size / MEGABYTE:.1f} MB is larger than this server accepts "
        f"({limit_mb:g} MB, --max-upload-mb)",
    )  # fmt: skip


async def _limited(stream: AsyncIterator[bytes], limit: int, limit_mb: float):
    """``stream``, ended by :class:`_TooLarge` once more than ``limit`` bytes came (a body
    without a Content-Length, or one that says less than it sends)."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise _TooLarge(
                f"the upload is larger than this server accepts ({limit_mb:g} MB, --max-upload-mb)"
            )
        yield chunk


def _shown_name(filename: str | None) -> str:
    """The client's name for its file, as a plain base name (for messages and results)."""
    name = Path((filename or "").replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:200] or "upload"


def _warm_up(predictor: Predictor) -> list[str]:
    """One model call on a blank clip before the first request (loading the operator's
    kernels and the first call's allocations take seconds that no request should wait), which
    also finds the SIFA stages that have a frame pair to draw at the model's clip length.
    Returns those stages."""
    import torch

    from sifa.tools.visualize import explain_clip, sifa_stages

    data = predictor.config.data
    size = data.test_crop_size
    blank = torch.zeros(1, 3, data.clip_len, size, size, device=predictor.device)
    if not sifa_stages(predictor.model):
        predictor.score(blank)
        return []
    with torch.no_grad():
        _, views = explain_clip(predictor.model, blank)
    return [view.stage for view in views]


def _without_windows(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "windows"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MEGABYTE), b""):
            digest.update(block)
    return digest.hexdigest()


# The upload part of the POST routes, for the OpenAPI page (the body is parsed by the routes
# themselves, to stream and limit it).
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {"video": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app of ``sifa serve`` around ``predictor`` (see the module's docstring).
    Its threads start now and stop when the app's lifespan ends."""
    service = Service(predictor, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="sifa serve",
        version=__version__,
        summary="Video recognition with a SIFA model: upload a video, get its classes.",
        lifespan=lifespan,
    )
    app.state.service = service
    _add_error_answers(app)
    _add_api(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _add_error_answers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in error.errors()
        ]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)


def _add_api(app: FastAPI, service: Service) -> None:
    topk_query = Query(5, ge=1, le=1000, description="classes listed per video and window")
    window_query = Query(
        None, gt=0, description="score consecutive windows of this length, one clip each"
    )

    @contextlib.asynccontextmanager
    async def admitted(request: Request):
        service.admit()
        upload = None
        try:
            upload = await service.receive(request)
            yield upload
        finally:
            if upload is None or not upload.working:
                service.release()

    @app.get("/v1/health")
    async def health() -> dict:
        """Whether the server is up, and how busy."""
        return {
            "status": "ok",
            "in_progress": service.in_progress,
            "max_queue": service.settings.max_queue,
            "answered": service.answered,
            "batches": service.batcher.calls,
            "views": service.batcher.views,
        }

    @app.get("/v1/model")
    async def model() -> dict:
        """The model: name, classes, clip sampling and test views, the weights' sha256."""
        return service.model_info()

    @app.post("/v1/predict", openapi_extra=UPLOAD_BODY)
    async def predict(
        request: Request,
        topk: int = topk_query,
        window_seconds: float | None = window_query,
    ) -> dict:
        """The top-k classes of the uploaded video (``sifa predict --json``'s entry)."""
        async with admitted(request) as upload:
            return await service.run(
                upload, lambda path: service.predict(path, upload.name, topk, window_seconds)
            )

    @app.post(
        "/v1/annotate",
        openapi_extra=UPLOAD_BODY,
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}}},
    )
    async def annotate(
        request: Request,
        topk: int = topk_query,
        window_seconds: float | None = window_query,
    ) -> FileResponse:
        """The uploaded video with its predictions drawn on every frame (H.264 mp4); the
        prediction in the ``X-Sifa-Prediction`` header."""
        async with admitted(request) as upload:
            result, out = await service.run(
                upload, lambda path: service.annotate(path, upload.name, topk, window_seconds)
            )
        return FileResponse(
            out,
            media_type="video/mp4",
            # The whole video's top-k (the windows' would make a long header); ASCII, as
            # json.dumps escapes the rest.
            headers={"X-Sifa-Prediction": json.dumps(_without_windows(result))},
            background=BackgroundTask(out.unlink, missing_ok=True),
        )

    @app.post(
        "/v1/offsets",
        openapi_extra=UPLOAD_BODY,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def offsets(
        request: Request,
        frame: int | None = Query(
            None, ge=0, description="first frame of the clip (default: the centre clip)"
        ),
        stage: str | None = Query(None, description="SIFA stage (default: the first)"),
    ) -> Response:
        """Where one SIFA stage looks: the offsets picture of ``sifa visualize`` (PNG)."""
        async with admitted(request) as upload:
            picture = await service.run(
                upload, lambda path: service.offsets(path, upload.name, frame, stage)
            )
        return Response(picture, media_type="image/png")
