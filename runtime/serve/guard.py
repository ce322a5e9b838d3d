"""Who may talk to `pdd-serve`: only its own page and clients that name this server (docs/architecture.md, "Untrusted
files" applies to requests too).

A browser lets any web page send a "simple" cross-origin POST (text/plain, no preflight) and lets a DNS-rebinding page
talk to a loopback server under the attacker's host name. So every request passes three checks before any route runs:

- `Host` must name this server: a loopback name, the bound address, or a name given with `--allow-host` (a rebinding
  page always sends its own domain name). On a wildcard bind (0.0.0.0, ::) any IP literal is accepted as well.
- an `Origin` header, when present, must be this server's own origin (`http://<Host>`) or one given with
  `--allow-origin`; the server sends no CORS headers, so a foreign page cannot read an answer either.
- a POST must declare `Content-Type: application/json`, which a browser only sends cross-origin after a preflight that
  this server never approves.

Refusals are `{"error": "<one line>"}` with 403 (host, origin) or 415 (content type).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from pdd.runtime.errors import ConfigError
from pdd.runtime.untrusted import printable

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})
JSON_MEDIA_TYPE = "application/json"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def host_name(value: str) -> str:
    """The host part of a Host header or address, lower-cased, without port, brackets or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # name:port or v4:port (a bare v6 literal has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """Whether a bind address only listens on this machine (a name is resolved by the caller first)."""
    name = host_name(address)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalise_origin(origin: str) -> str:
    """An origin as a browser sends it: scheme://host[:port], lower-case, no trailing slash or path."""
    text = origin.strip().lower().rstrip("/")
    if "://" not in text or "/" in text.split("://", 1)[1]:
        raise ConfigError(f"--allow-origin {printable(origin, 80)!r} is not an origin like http://example.com:8080")
    return text


@dataclass(frozen=True)
class AccessPolicy:
    """The hosts and origins a server accepts. `wildcard`: bound to every address, so IP-literal hosts pass too."""

    hosts: frozenset[str] = LOOPBACK_NAMES
    origins: frozenset[str] = frozenset()
    wildcard: bool = False

    @classmethod
    def for_bind(cls, bound_host: str, allow_hosts: Iterable[str] = (), allow_origins: Iterable[str] = ()) -> "AccessPolicy":
        bound = host_name(bound_host)
        hosts = set(LOOPBACK_NAMES) | {host_name(h) for h in allow_hosts if h.strip()}
        if bound not in WILDCARD_ADDRESSES:
            hosts.add(bound)
        return cls(frozenset(hosts), frozenset(normalise_origin(o) for o in allow_origins), bound in WILDCARD_ADDRESSES)

    def host_problem(self, host: str | None) -> str | None:
        if not host:
            return "the request names no Host"
        name = host_name(host)
        if name in self.hosts or (self.wildcard and is_ip_literal(name)):
            return None
        return (f"Host {printable(host, 80)!r} is not this server's name; start pdd-serve with --allow-host "
                f"{printable(name, 80)} to serve it under that name")

    def origin_problem(self, origin: str | None, host: str) -> str | None:
        if origin is None:
            return None  # not a browser's cross-origin request (curl, scripts, same-origin GETs)
        text = origin.strip().lower().rstrip("/")
        if text == f"http://{host.strip().lower()}" or text in self.origins:
            return None
        return (f"requests from origin {printable(origin, 80)!r} are refused (only this server's own page may call the "
                "API); start pdd-serve with --allow-origin to permit it")


def content_type_problem(method: str, content_type: str | None) -> str | None:
    if method != "POST":
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == JSON_MEDIA_TYPE:
        return None
    shown = printable(content_type, 60) if content_type else "none"
    return f"POST bodies must be sent as Content-Type: {JSON_MEDIA_TYPE} (got {shown})"


class RequestGuard:
    """ASGI middleware applying an AccessPolicy to every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host")
        refusal = self.policy.host_problem(host)
        status = 403
        if refusal is None:
            refusal = self.policy.origin_problem(headers.get("origin"), host or "")
        if refusal is None:
            refusal, status = content_type_problem(scope["method"], headers.get("content-type")), 415
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await _refuse(send, status, refusal)


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers by lower-case name; a repeated header keeps its first value (latin-1, as HTTP carries it)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": printable(message, 300)}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["AccessPolicy", "RequestGuard", "content_type_problem", "host_name", "is_loopback", "LOOPBACK_NAMES"]
