"""A small HTTP service around a run: FastAPI app plus uvicorn.

    POST /predict   multipart upload (field `file`: PNG/JPEG/TIFF/BMP/DICOM) ->
                    {"label": ..., "probabilities": {class: p}}
    GET  /health    liveness
    GET  /model     classes, preprocessing, TTA/calibration availability, run summary, limits
    GET  /openapi.json, /docs

Guards, each with a documented status and a JSON body {"detail": "<one line>"}:
- 413 when the body exceeds `Limits.max_upload_bytes` (checked on Content-Length up front and on
  the bytes actually received, so chunked uploads cannot get around it);
- 415 when the request is not multipart/form-data or the part's type is not an image/DICOM;
- 400 when the upload cannot be decoded (the decoder's reason, without server paths);
- 408 when an upload stalls: no body bytes for `read_timeout_s`;
- 422 for a missing `file` field or a malformed query parameter;
- 503 (Retry-After) when `max_concurrent` inferences run and `max_waiting` more already wait, or
  `max_connections` requests are already being read or answered;
- 500 "internal error" for anything unexpected: the traceback goes to the server log only.

Slow clients (slowloris): a connection must finish its request headers within
`read_timeout_s` of connecting or of its previous response, else it is closed; an idle keep-alive
connection is closed after `idle_timeout_s`. Connections still sending headers do not count
against `max_connections`, and past `4 * max_connections` of them the oldest is dropped, so
stalled sockets cannot lock out /health or /predict.

Bind to 127.0.0.1 (the default): the service has no authentication.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from medfit.data.decode import DICOM_SUFFIXES, DecodeError
from medfit.data.sources import LABEL_JOIN, NO_LABELS
from medfit.errors import MedfitError
from medfit.inference import Predictor
from medfit.inference.predictor import called_labels
from medfit.version import __version__

log = logging.getLogger("medfit.serve")

IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/tiff", "image/bmp", "image/x-ms-bmp", "application/dicom"}
)
# Browsers and curl send this for a .dcm (or anything they do not recognise); the decoder decides.
GENERIC_TYPES = frozenset({"application/octet-stream", ""})
DICOM_MAGIC_OFFSET = 128  # a DICOM file: 128-byte preamble, then "DICM"
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 1024 * 1024
    max_concurrent: int = 2  # inferences running at once (each uses all torch threads)
    max_waiting: int = 8  # requests queued behind them; more get 503
    # Requests being read or answered at once (uploads in progress included); beyond: 503.
    max_connections: int = 64
    read_timeout_s: float = 10.0  # to finish the request headers; then between body chunks
    idle_timeout_s: int = 5  # a keep-alive connection with no new request is closed

    def check(self) -> None:
        if self.read_timeout_s <= 0 or self.idle_timeout_s <= 0 or self.max_connections < 1:
            raise MedfitError(
                "serve limits: timeouts must be > 0 and connections >= 1 "
                f"(got read {self.read_timeout_s}, idle {self.idle_timeout_s}, "
                f"connections {self.max_connections})"
            )
        if self.max_upload_bytes < 1 or self.max_concurrent < 1 or self.max_waiting < 0:
            raise MedfitError(
                "serve limits: upload size and concurrent inferences must be >= 1, "
                f"waiting >= 0 (got {self})"
            )


class PredictResponse(BaseModel):
    label: str  # the class; multi-label runs: the labels called, joined by "|" ("(none)")
    probabilities: dict[str, float]
    labels: list[str] | None = None  # multi-label runs: the labels at or above their threshold


class ErrorResponse(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    status: str


class ModelResponse(BaseModel):
    classes: list[str]
    model_name: str
    preprocess: dict[str, Any]
    tta_views: list[str]
    temperature: float | list[float] | None
    summary: dict[str, Any]
    task: str = "single-label"
    thresholds: list[float] | None = None  # multi-label runs
    limits: dict[str, int]
    medfit_version: str


class Gate:
    """Admission control: at most `running` inferences at once and `waiting` queued; the rest
    are refused at once (503) so that a burst cannot pile up unbounded work and memory.

    Thread-based (the work runs in worker threads anyway), so it is not tied to an event loop.
    """

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = threading.BoundedSemaphore(running)
        self._lock = threading.Lock()
        self._admitted = 0
        self.capacity = running + waiting

    def admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.capacity:
                return False
            self._admitted += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._slots:
            return fn(*args)


class _TooLarge(Exception):
    pass


class _Stalled(Exception):
    pass


class RequestLimit:
    """ASGI middleware: 503 once `max_requests` requests are being read or answered.

    Counted here, after the headers, rather than by uvicorn's limit_concurrency, which counts
    open connections: sockets that never finish their headers would use up that budget.
    """

    def __init__(self, app: ASGIApp, max_requests: int) -> None:
        self.app, self.max_requests, self.active = app, max_requests, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            busy = JSONResponse(
                {"detail": f"server busy: {self.max_requests} requests open; retry shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await busy(scope, receive, send)
            return
        self.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, by header and by bytes received;
    408 when the next body chunk takes longer than `read_timeout` seconds."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = 10.0) -> None:
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        received, body_done = 0, False

        async def counted() -> Message:
            nonlocal received, body_done
            if body_done:  # afterwards only http.disconnect comes, whenever the client leaves
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise _Stalled from None
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > self.max_bytes:
                raise _TooLarge
            return message

        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if not started:
                await _too_large(self.max_bytes)(scope, receive, send)
        except _Stalled:
            if not started:
                detail = f"request body stalled: no data for {self.read_timeout:g} s"
                await JSONResponse({"detail": detail}, status_code=408)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "the upload is not a readable image, or calibration is unavailable"),
        (408, "the upload stalled (no data for the read timeout)"),
        (413, "request body too large"),
        (415, "not multipart/form-data, or the file is not an image/DICOM"),
        (422, "missing 'file' field or malformed query parameter"),
        (500, "internal error (details in the server log only)"),
        (503, "too many requests in flight; retry after the Retry-After seconds"),
    )
}
_UPLOAD_SCHEMA = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "PNG, JPEG, TIFF, BMP or DICOM (.dcm) image",
                    }
                },
            },
            "encoding": {"file": {"contentType": ", ".join(sorted(IMAGE_TYPES))}},
        }
    },
}


def create_app(predictor: Predictor, limits: Limits | None = None) -> FastAPI:
    """The service for one loaded model; `limits` bound upload size and concurrent work."""
    limits = limits or Limits()
    limits.check()
    app = FastAPI(
        title="medfit",
        version=__version__,
        description=f"Image classification with the medfit run {predictor.info.path.name}",
    )
    gate = Gate(limits.max_concurrent, limits.max_waiting)
    app.state.gate = gate
    app.add_middleware(
        BodyLimit, max_bytes=limits.max_upload_bytes, read_timeout=limits.read_timeout_s
    )
    app.add_middleware(RequestLimit, max_requests=limits.max_connections)  # outermost
    _add_error_handlers(app)

    @app.get("/health", response_model=HealthResponse)
    def health() -> HealthResponse:
        return HealthResponse(status="ok")

    @app.get("/model", response_model=ModelResponse)
    def model_info() -> ModelResponse:
        return ModelResponse(
            classes=predictor.classes,
            model_name=predictor.info.model_name,
            preprocess=predictor.preprocess.to_dict(),
            tta_views=list(predictor.info.tta_views),
            temperature=_temperature(predictor),
            summary=predictor.info.summary,
            task="multilabel" if predictor.multilabel else "single-label",
            thresholds=predictor.thresholds,
            limits=asdict(limits),
            medfit_version=__version__,
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={"requestBody": _UPLOAD_SCHEMA},
    )
    async def predict(
        request: Request, tta: bool = False, temperature_scaled: bool = False
    ) -> PredictResponse:
        """Classify one uploaded image. `tta` averages the flips the run was trained with;
        `temperature_scaled` applies the run's calibration (400 when it has none)."""
        upload = await _read_upload(request)
        if not gate.admit():
            raise HTTPException(503, "server busy; retry shortly", headers={"Retry-After": "1"})
        try:
            probs = await run_in_threadpool(
                gate.run, _classify, predictor, upload, tta, temperature_scaled
            )
        finally:
            gate.leave()
        label = called_labels(probs, predictor.classes, predictor.thresholds)
        return PredictResponse(
            label=label,
            probabilities={c: float(p) for c, p in zip(predictor.classes, probs, strict=True)},
            labels=[n for n in label.split(LABEL_JOIN) if n != NO_LABELS]
            if predictor.multilabel
            else None,
        )

    return app


@dataclass(frozen=True)
class _Upload:
    data: bytes
    dicom: bool


async def _read_upload(request: Request) -> _Upload:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise HTTPException(415, f"send multipart/form-data with a 'file' field, not {kind!r}")
    async with request.form(max_files=1, max_fields=8) as form:  # closing removes spooled parts
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise HTTPException(422, "multipart field 'file' (the image) is missing")
        part_type = (part.content_type or "").split(";")[0].strip().lower()
        if part_type not in IMAGE_TYPES | GENERIC_TYPES:
            raise HTTPException(415, f"'file' must be an image or DICOM, not {part_type!r}")
        data = await part.read()
    declared = part_type == "application/dicom" or (
        Path(part.filename or "").suffix.lower() in DICOM_SUFFIXES
    )
    return _Upload(data, _is_dicom(data, declared))


def _is_dicom(data: bytes, declared: bool) -> bool:
    """Content first (the DICM marker, or another format's signature), the label second:
    clients mislabel files, and a PNG sent as application/dicom is still a PNG."""
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return True
    return declared and not data.startswith(IMAGE_SIGNATURES)


def _temperature(predictor: Predictor) -> float | list[float] | None:
    t = predictor.info.temperature
    return list(t) if isinstance(t, tuple) else t


def _classify(
    predictor: Predictor, upload: _Upload, tta: bool, temperature_scaled: bool
) -> np.ndarray:
    """Decode from a private temp file (the decoders read paths), then predict one image."""
    with tempfile.TemporaryDirectory(prefix="medfit-serve-") as folder:
        # The decoder picks DICOM by suffix; Pillow identifies every other format by content.
        path = Path(folder) / ("upload.dcm" if upload.dicom else "upload.img")
        path.write_bytes(upload.data)
        try:
            square = predictor.load_square(path)
        except DecodeError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise HTTPException(400, f"not a readable image: {reason}") from None
    try:
        temperature = predictor.temperature(temperature_scaled)
    except MedfitError:
        raise HTTPException(400, "temperature scaling is not available for this run") from None
    x = predictor.model_input(square[None])
    return predictor.probabilities(x, tta, temperature)[0]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is {"detail": "<one line>"}; nothing from a traceback reaches the client."""

    @app.exception_handler(StarletteHTTPException)  # also Starlette's own 404/405
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The server logs the traceback (Starlette re-raises after this response is sent).
        log.error("%s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    device: str = "auto",
    checkpoint: str = "best",
) -> None:
    """Load the run and serve it with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise MedfitError('serving needs uvicorn: pip install "medfit[serve]"') from None
    limits = limits or Limits()
    predictor = Predictor(run_dir, device=device, checkpoint=checkpoint)
    app = create_app(predictor, limits)
    if predictor.device.type == "cpu":
        share_cpu(limits.max_concurrent)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: the service has no authentication", host)
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options(limits))


def uvicorn_options(limits: Limits) -> dict[str, Any]:
    """uvicorn settings that enforce `limits` on connections (the app enforces the rest)."""
    return {
        "http": header_timeout_protocol(limits.read_timeout_s, 4 * limits.max_connections),
        "timeout_keep_alive": limits.idle_timeout_s,
        "limit_concurrency": None,  # RequestLimit counts requests, not half-open connections
    }


def header_timeout_protocol(timeout: float, max_pending: int) -> type[Any]:
    """uvicorn's h11 protocol, closing connections that do not finish their request headers
    within `timeout` s (of connecting, or of their previous response); beyond `max_pending` such
    connections the oldest is closed. uvicorn itself waits for headers forever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    pending: dict[Any, asyncio.TimerHandle] = {}  # awaiting headers, oldest first

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request line and headers arrived
                self._headers_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_headers()

        def _await_headers(self) -> None:
            self._headers_done()
            while len(pending) >= max_pending:
                next(iter(pending))._drop()
            pending[self] = self.loop.call_later(timeout, self._drop)

        def _headers_done(self) -> None:
            timer = pending.pop(self, None)
            if timer is not None:
                timer.cancel()

        def _drop(self) -> None:
            self._headers_done()
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def share_cpu(concurrent: int) -> None:
    """Give each of the `concurrent` inferences its share of the cores.

    With the default (every inference using all cores), concurrent requests oversubscribe the
    CPU and torch's OpenMP workers spin against each other: measured on 2 busy cores, one
    tf_efficientnet_lite0 224 px call ran at 2.5 img/s with 2 threads vs 26 img/s with 1.
    """
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, concurrent)))
