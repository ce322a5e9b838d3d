"""Hostile and careless clients against a real `pdd-serve` process on 127.0.0.1: a client that sends half a body and
goes silent must not hold SIGTERM (bounded, no traceback); a client that hangs up mid-body is one log line, not an
internal error; clients that hang up while queued cost no computation; a non-loopback --host needs --allow-remote."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from pdd.runtime import cli_serve

SIGTERM_BOUND_S = 5.0


@pytest.fixture
def server(tiny_engine: Path, free_port: int) -> Iterator[tuple[subprocess.Popen, int]]:
    """`pdd-serve` on the tiny engine; a batch waits 2 s for partners, so queued requests stay queued a while."""
    command = [sys.executable, "-m", "pdd.runtime.cli_serve", "--engine", str(tiny_engine), "--port", str(free_port),
               "--max-batch", "4", "--max-wait-ms", "2000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening on" in line, line
        yield process, free_port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def half_body(port: int) -> socket.socket:
    """A connection that announced 200 bytes of JSON, sent 10, and went silent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{\"seed\": 1")
    return sock


def health(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/api/health")
    data = json.loads(connection.getresponse().read())
    connection.close()
    return data


def stop(process: subprocess.Popen) -> tuple[float, str]:
    """SIGTERM, then (seconds until exit, everything the server logged)."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    assert process.stderr is not None
    return time.perf_counter() - started, process.stderr.read()


def test_sigterm_does_not_wait_on_a_silent_half_body_client(server: tuple[subprocess.Popen, int]) -> None:
    process, port = server
    sockets = [half_body(port) for _ in range(3)]
    headers_only = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers_only.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0")  # half a header block, then silence
    sockets.append(headers_only)
    time.sleep(0.5)  # the server is reading their bodies
    seconds, log = stop(process)
    for sock in sockets:
        sock.close()
    assert seconds <= SIGTERM_BOUND_S, seconds
    assert "Traceback" not in log and "CancelledError" not in log, log


def test_a_client_hanging_up_mid_body_is_one_log_line(server: tuple[subprocess.Popen, int]) -> None:
    process, port = server
    half_body(port).close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and health(port)["bad_requests"] == 0 and health(port)["failed"] == 0:
        time.sleep(0.1)
        if process.poll() is not None:
            break
    state = health(port)
    assert state["failed"] == 0 and state["requests_served"] == 0
    _, log = stop(process)
    lines = [line for line in log.splitlines() if "disconnected" in line]
    assert len(lines) == 1 and lines[0].startswith("pdd-serve: "), log
    assert "Traceback" not in log and "internal error" not in log, log


def test_hung_up_clients_work_is_cancelled(server: tuple[subprocess.Popen, int]) -> None:
    process, port = server
    for seed in range(3):  # complete requests, then gone while their group still waits for partners
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        body = json.dumps({"seed": seed}).encode()
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.1)
        sock.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and health(port)["cancelled"] < 3:
        time.sleep(0.1)
    time.sleep(2.5)  # past the batch wait: a group would have been computed by now
    state = health(port)
    assert state["cancelled"] == 3 and state["requests_served"] == 0 and state["failed"] == 0, state
    _, log = stop(process)
    assert "Traceback" not in log and sum("hung up" in line for line in log.splitlines()) == 3, log


def test_a_non_loopback_host_needs_allow_remote(tiny_engine: Path) -> None:
    result = CliRunner().invoke(cli_serve.app, ["--engine", str(tiny_engine), "--host", "0.0.0.0", "--port", "0"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "--allow-remote" in lines[0] and "0.0.0.0" in lines[0]


def test_the_exposure_warning_says_what_is_exposed(capsys: pytest.CaptureFixture[str]) -> None:
    cli_serve._check_exposure("0.0.0.0", "0.0.0.0", allow_remote=True)  # permitted deliberately: no error
    cli_serve._warn_exposed("0.0.0.0", 8000)
    warning = capsys.readouterr().err
    assert "0.0.0.0:8000" in warning and "without authentication" in warning and "/api/engine" in warning
    cli_serve._check_exposure("localhost", "127.0.0.1", allow_remote=False)  # loopback needs nothing
