"""The HTTP face of `pdd-serve` (FastAPI): the page, POST /api/generate, GET /api/engine, GET /api/health.

Every error is `{"error": "<one line>"}` with a 4xx (the client's to fix) or 503 (retry later, with Retry-After) or 500
(ours; the wire gets one line, the log gets the exception's type and message). No stack trace ever leaves the server,
and the OpenAPI/docs pages are off: the page at / is the interface.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib.resources import files
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.serve.schema import MAX_BODY_BYTES, BadRequest, parse_generate_request
from pdd.runtime.serve.guard import AccessPolicy, RequestGuard
from pdd.runtime.serve.service import Clip, Service, Unavailable
from pdd.runtime.untrusted import printable

PAGE_FILE = "page.html"
BODY_TIMEOUT_S = 10.0  # a valid body is < 100 bytes: one that takes longer is a stalled or hostile client
STOP_POLL_S = 0.25  # how often a body read looks at the stopping flag: SIGTERM waits at most this on a silent client
# The page is one file with inline script and style; nothing is fetched from anywhere but this server.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' blob:; "
               "media-src 'self' blob:; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'")


@lru_cache(maxsize=1)
def page_html() -> str:
    return files("pdd.runtime.serve").joinpath(PAGE_FILE).read_text(encoding="utf-8")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": printable(message, 300)}, status_code=status, headers=headers)


def log_line(message: str) -> None:
    print(f"pdd-serve: {printable(message, 300)}", file=sys.stderr, flush=True)


class ClientGone(Exception):
    """The client hung up before its request or answer was complete: nobody to answer, nothing to count as an error."""


async def read_body(request: Request, stopping: threading.Event | None = None) -> bytes:
    """The request body, refused (413) as soon as it passes MAX_BODY_BYTES (a huge upload is never held in memory),
    and (408) when it is not complete within BODY_TIMEOUT_S or the server is stopping: a client that sends half a body
    and goes silent must hold neither a connection nor a shutdown. ClientGone when the client disconnects mid-body."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    body = bytearray()
    deadline = time.monotonic() + BODY_TIMEOUT_S
    while True:
        message = await _next_message(request, deadline, stopping)
        if message["type"] == "http.disconnect":
            raise ClientGone("the client disconnected before sending its whole request")
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", status=413)
        if not message.get("more_body", False):
            return bytes(body)


async def _next_message(request: Request, deadline: float, stopping: threading.Event | None) -> dict[str, Any]:
    """The next ASGI message of the request, waited for in short slices so a stopping server is noticed at once. One
    receive is awaited throughout (never cancelled and re-issued), so no chunk can be lost between slices."""
    pending = asyncio.ensure_future(request.receive())
    try:
        while True:
            left = deadline - time.monotonic()
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, min(left, STOP_POLL_S)))
            if done:
                return pending.result()
            if stopping is not None and stopping.is_set():
                raise BadRequest("the server is stopping; the request body did not arrive in time", status=408)
            if time.monotonic() >= deadline:
                raise BadRequest(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s", status=408)
    finally:
        pending.cancel()  # a no-op once it is done


async def wait_disconnect(request: Request) -> None:
    """Return when the client hangs up (the server's receive channel reports it once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer_or_hang_up(request: Request, future: "Future[Clip]") -> Clip:
    """The clip of `future`, or ClientGone when the client hangs up first; the job is then cancelled, so a queued job
    is never computed (the sampler skips cancelled futures) and a running one is answered to nobody."""
    answer = asyncio.ensure_future(asyncio.wrap_future(future))
    gone = asyncio.ensure_future(wait_disconnect(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if answer.done():
        return answer.result()
    answer.cancel()
    future.cancel()
    raise ClientGone("the client hung up before its clip was ready; its work was cancelled")


def create_app(service: Service, policy: AccessPolicy | None = None, stopping: threading.Event | None = None) -> FastAPI:
    """The app for one service; its lifespan starts the worker threads and, on shutdown, finishes every admitted job.

    `policy`: the hosts and origins served (default: loopback names only, no other origin); `stopping`: set when the
    server begins to stop, so requests still sending their body are answered at once instead of holding the shutdown.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)  # every admitted request is answered before this returns
            health = service.health()
            log_line(f"stopped after {health['requests_served']} clip(s) served, {health['failed']} failed")

    app = FastAPI(title="pdd-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, policy=policy or AccessPolicy())
    bad_requests = {"count": 0}
    _install_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    @app.get("/api/engine")
    async def engine() -> dict[str, Any]:
        return service.engine_summary()

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {**service.health(), "bad_requests": bad_requests["count"]}

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        try:
            clip_request = parse_generate_request(await read_body(request, stopping), service.choices)
            future = service.submit(clip_request)
        except ClientGone as exc:
            log_line(str(exc))
            return Response(status_code=400)  # nobody reads it; uvicorn drops it
        except BadRequest as exc:
            bad_requests["count"] += 1
            return error_response(exc.status, str(exc))
        except Unavailable as exc:
            return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        try:
            clip = await answer_or_hang_up(request, future)
        except ClientGone as exc:
            log_line(f"seed {clip_request.seed}: {exc}")
            return Response(status_code=400)
        except ConfigError as exc:  # settings this engine cannot run after all (checked again when its sampler opens)
            bad_requests["count"] += 1
            return error_response(400, str(exc))
        except PddError as exc:
            log_line(f"generation failed for seed {clip_request.seed}: {exc}")
            return error_response(500, f"generation failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - one line on the wire, the detail in our log
            log_line(f"internal error for seed {clip_request.seed}: {type(exc).__name__}: {exc}")
            return error_response(500, "internal error while generating; see the server log")
        return Response(clip.audio, media_type=clip.media_type, headers={**clip.headers, "Cache-Control": "no-store"})

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "malformed request")

    @app.exception_handler(Exception)
    async def any_error(_: Request, exc: Exception) -> JSONResponse:
        log_line(f"internal error: {type(exc).__name__}: {exc}")
        return error_response(500, "internal error; see the server log")
