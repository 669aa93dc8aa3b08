"""Prometheus metrics, served on their own HTTP port (--metrics-port).

Each server instance has its own registry, so several servers can live in one process
(tests) without clashing. The endpoint listens on --host like the other ports, speaks TLS
when the server does (--tls-cert), and needs a bearer token when --metrics-token-file is
set: counters such as UNAUTHENTICATED counts are not for everyone.
"""

from __future__ import annotations

import hmac
import ssl

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("moe_avatar_requests", "RPCs finished, by method and status code",
                                ["method", "code"], registry=r)
        self.request_seconds = Histogram("moe_avatar_request_seconds", "RPC latency, by method", ["method"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("moe_avatar_stage_seconds", "Time per pipeline stage", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("moe_avatar_batch_size", "Rows per ONNX Runtime run, by graph",
                                    ["graph"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("moe_avatar_batch_seconds", "ONNX Runtime run time, by graph",
                                       ["graph"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("moe_avatar_queue_depth", "Requests waiting for a batch, by graph",
                                 ["graph"], registry=r)
        self.texture_bytes = Counter("moe_avatar_texture_bytes", "Texture bytes sent, by format",
                                     ["format"], registry=r)
        self.text_cache = Counter("moe_avatar_text_cache", "Text-embedding cache lookups", ["result"],
                                  registry=r)
        self.held_bytes = Gauge("moe_avatar_held_texture_bytes", "Encoded texture bytes not yet written "
                                "to their clients, all streams (--max-held-bytes)", registry=r)

    def on_batch(self, graph: str, rows: int, seconds: float) -> None:
        self.batch_rows.labels(graph).observe(rows)
        self.batch_seconds.labels(graph).observe(seconds)

    def on_queue(self, graph: str, depth: int) -> None:
        self.queue_depth.labels(graph).set(depth)

    async def serve(self, port: int, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None,
                    token: str = "") -> web.AppRunner:
        """Start GET /metrics on the running event loop; `runner.cleanup()` stops it."""
        expected = f"Bearer {token}".encode() if token else b""

        async def metrics(request: web.Request) -> web.Response:
            given = request.headers.get("Authorization", "").encode()
            if expected and not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="metrics need the bearer token (--metrics-token-file)\n",
                                    headers={"WWW-Authenticate": "Bearer"})
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.on_response_prepare.append(_no_banner)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        bind = None if host.strip("[]") in ("::", "") else host.strip("[]")  # None: IPv4 and IPv6
        await web.TCPSite(runner, bind, port, ssl_context=ssl_context).start()
        return runner


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "moe-avatar"  # instead of aiohttp's version banner
