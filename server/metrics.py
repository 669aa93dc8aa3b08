"""Prometheus metrics, served on their own HTTP port (--metrics-port).

Each server instance has its own registry, so several servers can live in one process
(tests) without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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

    def on_batch(self, graph: str, rows: int, seconds: float) -> None:
        self.batch_rows.labels(graph).observe(rows)
        self.batch_seconds.labels(graph).observe(seconds)

    def on_queue(self, graph: str, depth: int) -> None:
        self.queue_depth.labels(graph).set(depth)

    def serve(self, port: int, host: str = "0.0.0.0"):
        """Start the /metrics HTTP endpoint in a daemon thread; returns the HTTP server."""
        http_server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return http_server
