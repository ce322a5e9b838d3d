"""A pool of forked processes with a per-task time limit: each task runs in its own process group, so a time-out also kills
whatever the task started (FluidSynth), and one task's failure is reported, never fatal (pdd-data corpus)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

TIMEOUT_PREFIX = "timed out"  # how a timed-out task's reason starts (pdd-data corpus remembers the limit it had)


def _child(conn: Connection, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.setpgrp()  # its own process group, so a time-out also kills the fluidsynth it started
    try:
        result: tuple[str, Any] = ("ok", func(*args))
    except BaseException as exc:  # noqa: BLE001 — any failure of one score is reported, never fatal
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = ("error", f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    try:
        conn.send(result)
    finally:
        conn.close()


def run_limited(
    tasks: list[tuple[str, Callable[..., Any], tuple[Any, ...]]],
    workers: int,
    time_limit: float,
    on_result: Callable[[str, str, Any], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run (key, func, args) tasks in at most `workers` forked processes; each gets `time_limit` seconds or is killed.

    `on_result(key, status, value)` is called in the parent with status "ok" (value = return value) or "error"
    (value = reason, including "timed out after N s"). Once `should_stop()` is true no task starts and running ones are
    killed (without a result).
    """
    ctx = multiprocessing.get_context("fork")
    pending = list(reversed(tasks))
    running: dict[Connection, tuple[str, Any, float]] = {}
    try:
        while pending or running:
            if should_stop():
                break
            while pending and len(running) < workers:
                key, func, args = pending.pop()
                parent_end, child_end = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(child_end, func, args), daemon=True)
                proc.start()
                child_end.close()
                running[parent_end] = (key, proc, time.monotonic())
            ready = wait(list(running), timeout=0.2)
            for conn in ready:
                key, proc, _ = running.pop(conn)
                try:
                    status, value = conn.recv()
                except (EOFError, OSError):
                    proc.join(5)
                    status, value = "error", f"worker died (exit code {proc.exitcode})"
                conn.close()
                proc.join(5)
                on_result(key, status, value)
            now = time.monotonic()
            for conn, (key, proc, started) in list(running.items()):
                if now - started > time_limit:
                    _kill_group(proc)
                    running.pop(conn)
                    conn.close()
                    on_result(key, "error", f"{TIMEOUT_PREFIX} after {time_limit:g} s")
    finally:
        for conn, (_, proc, _) in running.items():
            _kill_group(proc)
            conn.close()


def _kill_group(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.join(5)
