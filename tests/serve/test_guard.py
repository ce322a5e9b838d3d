"""Only the server's own page may make `pdd-serve` work: requests naming another host (DNS rebinding), coming from
another web origin, or posting anything but JSON (a browser's preflight-free "simple" request) are refused before any
route runs, with one JSON error line; no CORS header ever goes out. Plus the body reader's limits: a stalled body times
out, a stopping server answers a half-sent body at once, and a client that hangs up is one log line."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from pdd.runtime.errors import ConfigError
from pdd.runtime.serve import app as serve_app
from pdd.runtime.serve.app import ClientGone, create_app, read_body
from pdd.runtime.serve.guard import AccessPolicy, host_name, is_loopback
from pdd.runtime.serve.schema import BadRequest

JSON = "application/json"
BODY = b'{"seed": 3}'

# (name, base host, extra headers, body content type or None, status, fragment of the error)
REFUSED: list[tuple[str, str, dict[str, str], str | None, int, str]] = [
    ("DNS rebinding: Host is the attacker's name", "evil.example:8000", {}, JSON, 403, "not this server's name"),
    ("rebinding with a loopback-looking name", "localhost.evil.example", {}, JSON, 403, "--allow-host"),
    ("cross-origin simple POST (text/plain)", "127.0.0.1:8000", {"origin": "http://evil.example"}, "text/plain", 403,
     "origin"),
    ("cross-origin JSON POST", "127.0.0.1:8000", {"origin": "http://evil.example"}, JSON, 403, "--allow-origin"),
    ("same host, other port is another origin", "127.0.0.1:8000", {"origin": "http://127.0.0.1:9999"}, JSON, 403,
     "origin"),
    ("opaque origin (sandboxed frame, file://)", "127.0.0.1:8000", {"origin": "null"}, JSON, 403, "origin"),
    ("https origin of the same host", "127.0.0.1:8000", {"origin": "https://127.0.0.1:8000"}, JSON, 403, "origin"),
    ("form POST without an Origin", "127.0.0.1:8000", {}, "application/x-www-form-urlencoded", 415, "application/json"),
    ("text/plain POST without an Origin", "127.0.0.1:8000", {}, "text/plain", 415, "application/json"),
    ("multipart POST", "127.0.0.1:8000", {}, "multipart/form-data; boundary=x", 415, "application/json"),
    ("POST without a content type", "127.0.0.1:8000", {}, None, 415, "got none"),
    ("JSON look-alike media type", "127.0.0.1:8000", {}, "application/jsonx", 415, "application/json"),
]


def _post(client: TestClient, host: str, headers: dict[str, str], content_type: str | None) -> Any:
    sent = {"host": host, **headers}
    if content_type is not None:
        sent["content-type"] = content_type
    return client.post("/api/generate", content=BODY, headers=sent)


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_foreign_requests_are_refused_before_any_work(make_service: Any, case: tuple) -> None:
    _, host, headers, content_type, status, fragment = case
    service = make_service()
    with TestClient(create_app(service), base_url="http://127.0.0.1:8000") as client:
        response = _post(client, host, headers, content_type)
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"] and "\n" not in response.json()["error"]
        assert not any(k.lower().startswith("access-control-") for k in response.headers)
        health = client.get("/api/health").json()
    assert health["requests_served"] == 0 and health["in_flight"] == 0


ACCEPTED: list[tuple[str, str, dict[str, str]]] = [
    ("curl on loopback (no Origin)", "127.0.0.1:8000", {}),
    ("the page itself (same origin)", "127.0.0.1:8000", {"origin": "http://127.0.0.1:8000"}),
    ("localhost, any case, trailing dot", "LocalHost.:8000", {}),
    ("IPv6 loopback", "[::1]:8000", {"origin": "http://[::1]:8000"}),
    ("JSON with a charset", "localhost:8000", {"content-type": "application/json; charset=utf-8"}),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_the_servers_own_clients_are_served(make_service: Any, case: tuple) -> None:
    _, host, headers = case
    with TestClient(create_app(make_service()), base_url="http://127.0.0.1:8000") as client:
        response = client.post("/api/generate", content=BODY, headers={"host": host, "content-type": JSON, **headers})
        assert response.status_code == 200, response.text
        assert not any(k.lower().startswith("access-control-") for k in response.headers)


def test_allow_host_and_allow_origin_permit_exactly_what_they_name(make_service: Any) -> None:
    policy = AccessPolicy.for_bind("127.0.0.1", ["music.lan"], ["http://studio.example:3000"])
    with TestClient(create_app(make_service(), policy), base_url="http://127.0.0.1:8000") as client:
        ok = _post(client, "music.lan:8000", {"origin": "http://studio.example:3000"}, JSON)
        assert ok.status_code == 200, ok.text
        assert _post(client, "music.lan:8000", {"origin": "http://studio.example:3001"}, JSON).status_code == 403
        assert _post(client, "other.lan:8000", {}, JSON).status_code == 403


def test_a_cors_preflight_is_never_approved(make_service: Any) -> None:
    with TestClient(create_app(make_service()), base_url="http://127.0.0.1:8000") as client:
        response = client.options("/api/generate", headers={
            "origin": "http://evil.example", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type"})
        assert response.status_code >= 400
        assert not any(k.lower().startswith("access-control-") for k in response.headers)


def test_a_wildcard_bind_accepts_ip_literals_but_not_names() -> None:
    policy = AccessPolicy.for_bind("0.0.0.0")
    assert policy.host_problem("192.168.1.20:8000") is None and policy.host_problem("[fe80::1]:8000") is None
    assert policy.host_problem("evil.example:8000") is not None
    assert AccessPolicy.for_bind("127.0.0.1").host_problem("192.168.1.20:8000") is not None


@pytest.mark.parametrize("value,name", [("LOCALHOST:80", "localhost"), ("[::1]:8000", "::1"), ("::1", "::1"),
                                        ("example.com.", "example.com"), ("10.0.0.1:1", "10.0.0.1")])
def test_host_names_are_normalised(value: str, name: str) -> None:
    assert host_name(value) == name


def test_loopback_addresses() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.8.9.1", "::1", "localhost"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.168.1.2", "example.com"))


def test_a_malformed_allow_origin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an origin"):
        AccessPolicy.for_bind("127.0.0.1", allow_origins=["http://example.com/path"])


# -- the body reader ---------------------------------------------------------------------------------------------------

def _request(messages: list[dict[str, Any]], stall: bool = True) -> Request:
    """A request whose receive channel yields `messages`, then (stall) never answers again, like a silent client."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"100")], "path": "/api/generate"}
    return Request(scope, receive)


def test_a_stalled_body_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_app, "BODY_TIMEOUT_S", 0.3)
    request = _request([{"type": "http.request", "body": b'{"se', "more_body": True}])
    with pytest.raises(BadRequest, match="did not arrive within") as caught:
        asyncio.run(asyncio.wait_for(read_body(request), 5))
    assert caught.value.status == 408


def test_a_stopping_server_answers_a_half_sent_body_at_once() -> None:
    import threading
    import time

    stopping = threading.Event()
    stopping.set()
    request = _request([{"type": "http.request", "body": b'{"se', "more_body": True}])
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="stopping"):
        asyncio.run(asyncio.wait_for(read_body(request, stopping), 5))
    assert time.perf_counter() - started < serve_app.STOP_POLL_S + 0.5


def test_a_client_hanging_up_mid_body_is_client_gone() -> None:
    request = _request([{"type": "http.request", "body": b'{"se', "more_body": True}], stall=False)
    with pytest.raises(ClientGone, match="disconnected"):
        asyncio.run(asyncio.wait_for(read_body(request), 5))
