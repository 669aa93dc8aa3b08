"""Limits and headers of the HTTP bridge that protect the process, not the API.

* **Slow connections.** aiohttp's keep-alive timer runs from a connection's opening and
  from each response until the next request head is complete, and closes the connection
  when it fires: that is the header timeout (`--http-header-timeout`), and the idle
  keep-alive timeout too. A body must arrive within `--http-body-timeout` (408; the rest
  of it is read for LINGER_SECONDS at most, then the connection is closed).
* **Connection cap.** At most `--http-max-connections` open connections, and never more
  than half the process's open-file limit, so a crowd of idle HTTP connections cannot
  take the file descriptors the gRPC port needs. Extra connections are closed as they
  are accepted; one log line per 10 s says so.
* **Host allow-list** (`--http-allowed-hosts`): when set, a request whose Host header is
  not listed is refused (403), which defeats DNS rebinding against a bridge on localhost.
* **Page headers.** Every response carries no version banner; every page (the playground
  and its files) carries the Content-Security-Policy, frame-ancestors 'none' included.
* **JSON nesting.** Request bodies nest at most MAX_JSON_DEPTH levels (a proto request
  needs 3), checked without recursion.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("moe_avatar.http")

MAX_JSON_DEPTH = 32
LINGER_SECONDS = 1.0  # aiohttp's lingering_time: an unread body is drained this long, then the connection closes
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self' blob:; style-src 'self'; "
            "frame-ancestors 'none'")
SERVER_NAME = "moe-avatar"
UNLISTED_PATHS = ("/healthz",)  # probes address pods by IP, not by an allowed name


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 15.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)  # empty: any Host

    def host_refusal(self, request: web.Request) -> str:
        """Why this request's Host is refused ('' = allowed)."""
        if not self.allowed_hosts or request.path in UNLISTED_PATHS:
            return ""
        host = (request.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host in self.allowed_hosts or name in self.allowed_hosts:
            return ""
        return f"Host {host[:100]!r} is not served here (--http-allowed-hosts)"


def parse_hosts(value: str) -> frozenset[str]:
    """'example.com, localhost:8080' -> the names as the Host header carries them, lower case."""
    return frozenset(h.strip().lower() for h in value.split(",") if h.strip())


def connection_cap(limit: int) -> int:
    """--http-max-connections, but at most half the open-file limit (the rest: gRPC, models, logs)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return limit if soft == resource.RLIM_INFINITY else max(1, min(limit, soft // 2))


def cap_connections(server: web.Server, cap: int) -> None:
    """Close connections past `cap` as they are accepted (wraps the server's bookkeeping hook,
    the one place aiohttp reports a new connection before it reads from it)."""
    original = server.connection_made
    last_logged = [0.0]

    @functools.wraps(original)
    def connection_made(handler, transport: asyncio.Transport) -> None:
        original(handler, transport)
        if len(server.connections) > cap:
            transport.close()
            if time.monotonic() - last_logged[0] >= 10:
                last_logged[0] = time.monotonic()
                log.warning("HTTP bridge at its connection cap (%d); closing new connections", cap,
                            extra={"http_max_connections": cap})

    server.connection_made = connection_made  # type: ignore[method-assign]


async def read_body(request: web.Request, timeout: float) -> bytes | None:
    """The request body, or None when it did not arrive in time (after the answer aiohttp
    reads what is left for LINGER_SECONDS at most, then closes the connection)."""
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        return None


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


async def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no version banner anywhere; the CSP on every page."""
    response.headers["Server"] = SERVER_NAME
    if not request.path.startswith("/v1/"):
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
