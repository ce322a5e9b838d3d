"""`pdd-serve`: music over HTTP — a page with a Generate button and a JSON API that returns audio (no PyTorch).

A thin typer wrapper over `pdd.runtime.serve` (Service + create_app) run by uvicorn. The socket is bound here, before
the engine loads, so a busy port is one `error:` line, not a log of uvicorn internals.
"""

from __future__ import annotations

import os

# Same reason as pdd-run: one BLAS thread, so OpenBLAS doesn't spin against onnxruntime and scipy.fft. Before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.errors import ConfigError
from pdd.runtime.serve.guard import AccessPolicy, is_loopback

HELP = """Serve an engine over HTTP: a web page at / and a JSON API (loopback only; another --host needs --allow-remote).

  POST /api/generate  {"seed": 7, "steps": 8, "vocoder": "auto", "format": "wav"}  → the audio bytes, with X-Pdd-* headers
                      (seed, steps, mode, vocoder, engine name + manifest sha256, queue/sample/decode/encode ms)
  GET  /api/engine    what the engine offers (steps, vocoders, formats) and how it is served
  GET  /api/health    ready, queue depth, requests served

Same seed → the same bytes as `pdd-run --seed S -n 1` with the same options. Requests that arrive within --max-wait-ms
share a batch of up to --max-batch; the sampler and the vocoder run on separate threads, so one batch samples while
the previous one decodes. A full queue answers 503 with Retry-After; SIGTERM finishes the requests in flight, then exits.

Examples:

  pdd-serve                                      # the shipped engine on http://127.0.0.1:8000

  pdd-serve --engine engines/small-piano --port 9000 --max-batch 8 --max-wait-ms 30

  curl -s -X POST localhost:8000/api/generate -H 'Content-Type: application/json' -d '{"seed": 7}' -o seed7.wav

Only this server's own page and clients naming it may call the API: the Host must be a loopback name, the bound
address or an --allow-host name; a browser Origin must be the server's own or an --allow-origin; POSTs must be
Content-Type: application/json. No CORS headers are sent.
"""

MAX_PORT = 65535
# How long SIGTERM lets admitted requests finish generating. Clients still sending a body are answered at once (the app
# polls the stopping flag every STOP_POLL_S), so a silent half-body client never holds the shutdown.
GRACEFUL_SHUTDOWN_S = 60

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def serve(
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="Bundle folder (default: the one shipped with pdd)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (a non-loopback address such as 0.0.0.0 needs --allow-remote)."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port (0: any free port, printed at start)."),
    backend: str = typer.Option("auto", "--backend", help="auto | ort (onnxruntime) | trt (native TensorRT)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (where the ort backend runs)."),
    max_batch: int = typer.Option(4, "--max-batch", help="Most requests sharing one model call."),
    max_wait_ms: float = typer.Option(20.0, "--max-wait-ms", help="How long a batch waits to fill after its first request."),
    max_queue: int = typer.Option(32, "--max-queue", help="Most requests held at once; more get 503 + Retry-After."),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline", help="Sampler and vocoder on separate threads."),
    decoders: int = typer.Option(1, "--decoders", help="Vocoder threads with --pipeline (clips decode in parallel)."),
    exact: bool = typer.Option(
        True, "--exact/--no-exact",
        help="Batch only where it gives pdd-run's exact bytes (checked per batch size); --no-exact always batches."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Also answer requests naming this host (repeatable; "
                                         "loopback names and the bound address always pass)."),
    allow_origin: list[str] = typer.Option([], "--allow-origin", help="Also accept requests from this web origin, e.g. "
                                           "http://example.com:8080 (repeatable; default: only the server's own page)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Permit a --host that is not loopback (the API has "
                                      "no authentication: anyone who reaches the port can use it)."),
) -> None:
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"--port must be in [0, {MAX_PORT}], got {port}")
    started = time.perf_counter()
    uvicorn, create_app = _serve_imports()
    from pdd.runtime.serve.service import ServeOptions, Service

    options = ServeOptions(engine=engine, backend=backend, device=device, max_batch=max_batch, max_wait_ms=max_wait_ms,
                           max_queue=max_queue, pipeline=pipeline, decoders=decoders,
                           exact=exact)
    options.check()
    AccessPolicy.for_bind(host, allow_host, allow_origin)  # a malformed --allow-origin is refused before binding
    family, address = _resolve(host, port)
    _check_exposure(host, address[0], allow_remote)  # before binding: a refused address is never opened
    sock = _listen(host, family, address)
    bound_host, bound_port = sock.getsockname()[:2]
    if not is_loopback(bound_host):
        _warn_exposed(bound_host, bound_port)
    policy = AccessPolicy.for_bind(bound_host, [host, *allow_host], allow_origin)
    service = Service(options)
    summary = service.engine_summary()
    print(f"pdd-serve: {summary['name']} ({summary['manifest_sha256'][:12]}) on {summary['backend']}; "
          f"listening on http://{_url_host(bound_host)}:{bound_port} (ready in {time.perf_counter() - started:.2f} s)",
          file=sys.stderr, flush=True)
    stopping = threading.Event()
    config = uvicorn.Config(create_app(service, policy, stopping), log_level="warning", access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    _make_stoppable_server(uvicorn)(config, stopping).run(sockets=[sock])


def _check_exposure(host: str, address: str, allow_remote: bool) -> None:
    """A non-loopback bind exposes an unauthenticated API: refused without --allow-remote."""
    if is_loopback(address) or allow_remote:
        return
    raise ConfigError(f"--host {host} listens on {address}, reachable from other machines; pdd-serve has no "
                      "authentication, so pass --allow-remote to do this deliberately (or keep the default 127.0.0.1)")


def _warn_exposed(bound_host: str, bound_port: int) -> None:
    """Say exactly what a non-loopback bind exposes, once, before serving."""
    print(f"pdd-serve: warning: listening on {_url_host(bound_host)}:{bound_port}, reachable from the network without "
          "authentication: anyone who can reach this port can generate audio with this machine's CPU/GPU and read "
          "/api/engine and /api/health (the engine name, its manifest sha256 and the serving settings); requests must "
          "still name an allowed host (--allow-host) and come from no other web origin (--allow-origin)",
          file=sys.stderr, flush=True)


def _make_stoppable_server(uvicorn: Any) -> Any:
    class StoppableServer(uvicorn.Server):  # type: ignore[misc, name-defined]
        """uvicorn's server that also tells the app when SIGTERM/SIGINT arrives, so half-sent requests end at once."""

        def __init__(self, config: Any, stopping: threading.Event) -> None:
            super().__init__(config)
            self.stopping = stopping

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopping.set()
            super().handle_exit(sig, frame)

    return StoppableServer


def _serve_imports():  # type: ignore[no-untyped-def]
    try:
        import uvicorn

        from pdd.runtime.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(f"pdd-serve needs the [serve] extra ({exc.name} is missing): pip install 'pdd[serve]'") from None
    return uvicorn, create_app


def _resolve(host: str, port: int) -> tuple[int, Any]:
    """(family, socket address) that --host and --port name, or one error line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    return family, address


def _listen(host: str, family: int, address: Any) -> socket.socket:
    """A listening socket on the resolved address, or one error line (port taken, address not on this machine)."""
    port = address[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family in (socket.AF_INET, socket.AF_INET6):
        # Accepted sockets inherit it (Linux): uvicorn writes a response's headers and body in two sends, and with
        # Nagle on, the body waits for the client's delayed ACK: 48 ms per request instead of 5 on loopback (measured).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main() -> None:
    app(prog_name="pdd-serve")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
