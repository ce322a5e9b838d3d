"""The HTTP face of `pdd-serve` (FastAPI): the page, POST /api/generate, GET /api/engine, GET /api/health.

Every error is `{"error": "<one line>"}` with a 4xx (the client's to fix) or 503 (retry later, with Retry-After) or 500
(ours; the wire gets one line, the log gets the exception's type and message). No stack trace ever leaves the server,
and the OpenAPI/docs pages are off: the page at / is the interface.
"""

from __future__ import annotations

import asyncio
import sys
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
from pdd.runtime.serve.service import Service, Unavailable
from pdd.runtime.untrusted import printable

PAGE_FILE = "page.html"
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


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes MAX_BODY_BYTES: a huge upload is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    return bytes(body)


def create_app(service: Service) -> FastAPI:
    """The app for one service; its lifespan starts the worker threads and, on shutdown, finishes every admitted job."""

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
            clip_request = parse_generate_request(await read_body(request), service.choices)
            future = service.submit(clip_request)
        except BadRequest as exc:
            bad_requests["count"] += 1
            return error_response(exc.status, str(exc))
        except Unavailable as exc:
            return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        try:
            clip = await asyncio.wrap_future(future)
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
