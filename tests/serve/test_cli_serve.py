"""`pdd-serve` as a user runs it: bad options are one `error:` line (exit 2), and a real server on 127.0.0.1 answers,
then finishes the request in flight when it gets SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from pdd.runtime.cli_serve import app

runner = CliRunner()


def one_error_line(result: Any, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


@pytest.mark.parametrize("args,fragment", [
    (["--max-batch", "0"], "--max-batch must be in [1, 64]"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be in [0, "),
    (["--max-queue", "0"], "--max-queue must be in [1, "),
    (["--decoders", "0"], "--decoders must be in [1, 16]"),
    (["--port", "70000"], "--port must be in [0, 65535]"),
    (["--host", "no-such-host.invalid"], "does not resolve"),
    (["--engine", "/nonexistent/engine"], "does not exist"),
    (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
    (["--host", "0.0.0.0"], "pass --allow-remote"),
    (["--allow-origin", "http://example.com/page"], "is not an origin like"),
])
def test_bad_options_are_one_error_line(args: list[str], fragment: str, tiny_engine: Path) -> None:
    engine = [] if "--engine" in args else ["--engine", str(tiny_engine)]
    one_error_line(runner.invoke(app, [*engine, "--port", "0", *args]), fragment)


def test_a_busy_port_is_one_error_line(tiny_engine: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_error_line(runner.invoke(app, ["--engine", str(tiny_engine), "--port", str(port)]), "cannot listen on")


def test_help_shows_the_api() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "POST /api/generate" in result.output and "--max-batch" in result.output


@pytest.fixture
def server(tiny_engine: Path, free_port: int) -> Iterator[tuple[subprocess.Popen, int]]:
    """`pdd-serve` on the tiny engine in its own process; a batch waits 1.5 s to fill, so a lone request stays in flight."""
    command = [sys.executable, "-m", "pdd.runtime.cli_serve", "--engine", str(tiny_engine), "--port", str(free_port),
               "--max-batch", "2", "--max-wait-ms", "1500"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"listening on http://127.0.0.1:{free_port}" in line, line
        yield process, free_port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _post(port: int, body: dict[str, Any], result: dict[str, Any]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    result.update(status=response.status, body=response.read(), headers=dict(response.getheaders()))
    connection.close()


def test_sigterm_finishes_the_request_in_flight(server: tuple[subprocess.Popen, int]) -> None:
    process, port = server
    result: dict[str, Any] = {}
    client = threading.Thread(target=_post, args=(port, {"seed": 8}, result))
    client.start()
    time.sleep(0.5)  # the request is admitted and waits for a partner
    process.send_signal(signal.SIGTERM)
    client.join(60)
    assert result["status"] == 200 and result["body"][:4] == b"RIFF"
    assert int(result["headers"]["content-length"]) == len(result["body"])
    assert process.wait(30) in (0, -signal.SIGTERM)
    assert process.stderr is not None and "Traceback" not in process.stderr.read()
