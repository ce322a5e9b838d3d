"""Fixtures for the pdd-serve tests: the shared tiny bundle (`tests.support.tiny_bundle`), services on it, and a free
loopback port."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("fastapi", reason="pdd-serve needs the [serve] extra: pip install 'pdd[serve]'")

from pdd.runtime.serve.service import ServeOptions, Service  # noqa: E402
from tests.support.tiny_bundle import build_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def cdp() -> Any:
    """tests/serve/cdp.py: the Chrome DevTools Protocol client the browser test drives chromium with."""
    return importlib.import_module("tests.serve.cdp")


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test bundle (4-step sampler, denoiser, a stand-in Griffin-Lim graph); read-only by convention."""
    return build_tiny_bundle(tmp_path_factory.mktemp("serve-engines") / "tiny")


@pytest.fixture
def make_service(tiny_engine: Path) -> Iterator[Callable[..., Service]]:
    """Services on the tiny engine (onnxruntime on the CPU); each is closed after the test."""
    made: list[Service] = []

    def make(**options: Any) -> Service:
        settings = {"engine": tiny_engine, "backend": "ort", "device": "cpu", **options}
        service = Service(ServeOptions(**settings))
        made.append(service)
        return service

    yield make
    for service in made:
        service.close(timeout=30)


@pytest.fixture
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
