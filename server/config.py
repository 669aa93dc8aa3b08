"""Server settings: one dataclass, filled from command-line flags, then `MOE_AVATAR_*`
environment variables, then defaults; validated once at start so a bad setting fails
loudly before any model is loaded."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from dataclasses import dataclass

ENV_PREFIX = "MOE_AVATAR_"
DEVICES = ("auto", "cuda", "cpu")


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and the environment variable."""


@dataclass(frozen=True)
class ServerConfig:
    models: pathlib.Path = pathlib.Path("models")
    host: str = "[::]"  # every interface; 127.0.0.1 keeps gRPC, the bridge and metrics on this machine
    port: int = 50051
    device: str = "auto"  # auto | cuda | cpu
    cuda_device_id: int = 0
    metrics_port: int = 0  # 0 = no metrics HTTP endpoint
    http_port: int = 0  # HTTP/JSON bridge + playground (server/http_bridge.py), 0 = off
    http_cors_origins: str = ""  # origins whose pages may call the bridge, comma-separated; "*" = any; "" = none
    default_model: str = ""  # empty = first model name in sorted order
    max_batch: int = 32  # rows (avatars) per generator / encoder run
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    max_queue: int = 256  # requests waiting per graph before RESOURCE_EXHAUSTED
    intra_op_threads: int = 0  # ONNX Runtime threads per session, 0 = ORT default
    ort_spinning: int = 0  # 1 = ORT threads spin-wait between runs (lower latency on dedicated cores)
    encode_workers: int = 3  # threads that encode PNG / WebP; heavy textures use all but one
    text_cache_size: int = 4096  # prompts whose embeddings are kept (LRU)
    grace_seconds: float = 10.0  # shutdown: in-flight streams get this long to finish
    drain_seconds: float = 1.0  # shutdown: NOT_SERVING (new calls UNAVAILABLE) this long before the port closes
    log_format: str = "json"  # json | text
    log_level: str = "INFO"
    workers: str = "1"  # N worker processes on one port (SO_REUSEPORT), or "gpus": one per GPU
    # Security (server/auth.py, server/tls.py, server/guard.py; "Security" in server/README.md)
    auth_tokens_file: str = ""  # bearer tokens, one per line; also MOE_AVATAR_AUTH_TOKENS=a,b
    tls_cert: str = ""  # PEM certificate chain; with --tls-key enables TLS
    tls_key: str = ""  # PEM private key
    tls_client_ca: str = ""  # PEM CA: clients must present a certificate it signed (mTLS)
    max_message_bytes: int = 65536  # largest request message accepted
    max_streams_per_connection: int = 100  # concurrent HTTP/2 streams on one connection
    max_inflight_per_client: int = 128  # concurrent AvatarService RPCs per client address, 0 = no limit
    max_held_bytes: int = 256 * 2**20  # encoded texture bytes waiting for slow readers, all calls; 0 = no limit
    stream_stall_seconds: float = 30.0  # cut a stream whose client reads nothing this long, 0 = never
    http_header_timeout: float = 15.0  # bridge: a request head must arrive within this (also the idle keep-alive)
    http_body_timeout: float = 30.0  # bridge: a request's body must arrive within this
    http_max_connections: int = 1000  # bridge: open connections (at most half the fd limit); more are closed at once
    http_allowed_hosts: str = ""  # bridge: comma-separated Host header names accepted; empty = any
    metrics_token_file: str = ""  # /metrics needs `Authorization: Bearer <token from this file>`

    def validate(self) -> ServerConfig:
        def fail(name: str, why: str) -> None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} / {ENV_PREFIX}{name.upper()}: {why} (got {getattr(self, name)!r})")

        if not self.models.is_dir():
            fail("models", "must be an existing directory holding model bundles")
        if self.device not in DEVICES:
            fail("device", f"must be one of {', '.join(DEVICES)}")
        if not 0 <= self.port <= 65535:
            fail("port", "must be 0..65535 (0 = pick a free port)")
        if not 0 <= self.metrics_port <= 65535:
            fail("metrics_port", "must be 0..65535 (0 = disabled)")
        if not 0 <= self.http_port <= 65535:
            fail("http_port", "must be 0..65535 (0 = disabled)")
        if self.http_cors_origins:
            from moe_avatar.server.bridge_web import parse_origins

            try:
                parse_origins(self.http_cors_origins)
            except ValueError as e:
                fail("http_cors_origins", str(e))
        if not 1 <= self.max_batch <= 1024:
            fail("max_batch", "must be 1..1024")
        if not 0 <= self.max_wait_ms <= 10_000:
            fail("max_wait_ms", "must be 0..10000")
        if not 1 <= self.max_queue <= 100_000:
            fail("max_queue", "must be 1..100000")
        if not 0 <= self.intra_op_threads <= 256:
            fail("intra_op_threads", "must be 0..256")
        if self.ort_spinning not in (0, 1):
            fail("ort_spinning", "must be 0 or 1")
        if not 1 <= self.encode_workers <= 64:
            fail("encode_workers", "must be 1..64")
        if not 0 <= self.text_cache_size <= 1_000_000:
            fail("text_cache_size", "must be 0..1000000")
        if not 0 <= self.grace_seconds <= 3600:
            fail("grace_seconds", "must be 0..3600")
        if not 0 <= self.drain_seconds <= 300:
            fail("drain_seconds", "must be 0..300")
        if not (self.workers == "gpus" or (self.workers.isdigit() and 1 <= int(self.workers) <= 256)):
            fail("workers", "must be 1..256 or gpus (one worker per visible GPU)")
        if self.log_format not in ("json", "text"):
            fail("log_format", "must be json or text")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            fail("log_level", "must be DEBUG, INFO, WARNING or ERROR")
        for name in ("auth_tokens_file", "tls_cert", "tls_key", "tls_client_ca"):
            if getattr(self, name) and not pathlib.Path(getattr(self, name)).is_file():
                fail(name, "must be an existing file")
        if bool(self.tls_cert) != bool(self.tls_key):
            fail("tls_cert" if not self.tls_cert else "tls_key", "--tls-cert and --tls-key must be given together")
        if self.tls_client_ca and not self.tls_cert:
            fail("tls_client_ca", "mutual TLS needs --tls-cert and --tls-key too")
        if not 1024 <= self.max_message_bytes <= 64 * 2**20:
            fail("max_message_bytes", "must be 1024..67108864")
        if not 1 <= self.max_streams_per_connection <= 100_000:
            fail("max_streams_per_connection", "must be 1..100000")
        if not 0 <= self.max_inflight_per_client <= 1_000_000:
            fail("max_inflight_per_client", "must be 0..1000000 (0 = no limit)")
        if not 0 <= self.max_held_bytes <= 2**40:
            fail("max_held_bytes", "must be 0..2^40 (0 = no limit)")
        if not 0 <= self.stream_stall_seconds <= 3600:
            fail("stream_stall_seconds", "must be 0..3600 (0 = never cut)")
        for name in ("http_header_timeout", "http_body_timeout"):
            if not 0.1 <= getattr(self, name) <= 3600:
                fail(name, "must be 0.1..3600 seconds")
        if not 1 <= self.http_max_connections <= 1_000_000:
            fail("http_max_connections", "must be 1..1000000")
        if self.metrics_token_file and not pathlib.Path(self.metrics_token_file).is_file():
            fail("metrics_token_file", "must be an existing file")
        return self


def _env_default(field: dataclasses.Field, environ: dict[str, str]):
    raw = environ.get(ENV_PREFIX + field.name.upper())
    if raw is None:
        return field.default
    kind = type(field.default)
    try:
        return kind(raw)
    except ValueError as e:
        raise ConfigError(f"{ENV_PREFIX}{field.name.upper()}={raw!r}: not a valid {kind.__name__}") from e


def build_parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """Flags mirror the dataclass fields; env vars provide the defaults."""
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(
        prog="moe-avatar-server",
        description="Serve moe-avatar model bundles over gRPC. Every flag may also be set "
        f"with an environment variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}MAX_BATCH=16).",
    )
    helps = {
        "models": "model repository: every sub-directory with a manifest.json is loaded",
        "host": "address gRPC, the HTTP bridge and metrics listen on: [::] = every interface (reachable "
                "from other machines), 127.0.0.1 = this machine only",
        "device": "auto (CUDA if it really works, else CPU, logged), cuda (fail if unusable), cpu",
        "port": "gRPC port (0 = any free port, logged at start)",
        "cuda_device_id": "which GPU CUDA runs on (with --device auto or cuda)",
        "max_batch": "most rows one graph run (micro-batch) takes",
        "intra_op_threads": "ONNX Runtime threads per session (0 = ONNX Runtime's default: one per core)",
        "ort_spinning": "1 = ONNX Runtime's threads spin between runs (lower latency, busy cores); 0 = they sleep",
        "encode_workers": "threads that encode textures (PNG, WebP, resize)",
        "text_cache_size": "text embeddings kept (LRU) for prompts sent again",
        "log_format": "json (one object per line) or text",
        "log_level": "DEBUG, INFO, WARNING or ERROR",
        "metrics_port": "Prometheus /metrics HTTP port (0 = disabled)",
        "http_port": "HTTP/1.1 JSON bridge and browser playground for clients without gRPC (0 = disabled)",
        "http_cors_origins": "comma-separated origins (scheme://host[:port]) whose web pages may call the HTTP "
                             "bridge and open its WebSocket, e.g. https://game.example.com; * allows any origin; "
                             "empty = none (same-origin pages such as the playground always work)",
        "default_model": "model used when a request leaves `model` empty",
        "max_wait_ms": "how long a micro-batch waits for more requests",
        "max_queue": "requests waiting per graph before RESOURCE_EXHAUSTED",
        "grace_seconds": "on SIGTERM/SIGINT, how long in-flight streams may finish",
        "drain_seconds": "on SIGTERM/SIGINT, how long health reports NOT_SERVING (and new calls get UNAVAILABLE, "
                         "which clients retry elsewhere) before the port stops taking calls, so health-checking "
                         "clients and load balancers drop this replica first",
        "workers": "worker processes sharing the port (SO_REUSEPORT); `gpus` = one per GPU via "
                   "CUDA_VISIBLE_DEVICES; metrics of worker i on --metrics-port + i",
        "auth_tokens_file": "file of bearer tokens, one per line (# comments); also "
                            "MOE_AVATAR_AUTH_TOKENS=tok1,tok2. Empty and unset = no auth",
        "tls_cert": "PEM certificate chain; with --tls-key serves TLS",
        "tls_key": "PEM private key for --tls-cert",
        "tls_client_ca": "PEM CA bundle; clients must present a certificate it signed (mutual TLS)",
        "max_message_bytes": "largest request message accepted (RESOURCE_EXHAUSTED above)",
        "max_streams_per_connection": "concurrent streams per HTTP/2 connection",
        "max_inflight_per_client": "concurrent AvatarService calls per client address (0 = no limit)",
        "max_held_bytes": "encoded texture bytes all streams together may hold while clients read slowly; "
                          "past it new calls get RESOURCE_EXHAUSTED (0 = no limit)",
        "stream_stall_seconds": "cut a stream whose client has read nothing for this long (0 = never)",
        "http_header_timeout": "HTTP bridge: seconds a connection has to deliver a complete request head after "
                               "opening or after its previous response; an idle keep-alive connection closes then too",
        "http_body_timeout": "HTTP bridge: seconds for a request's body to arrive (408 after)",
        "http_max_connections": "HTTP bridge: open connections at most (and at most half the open-file limit); "
                                "more are closed at once, so the gRPC port keeps file descriptors",
        "http_allowed_hosts": "HTTP bridge: comma-separated Host names (with or without :port) it answers; "
                              "empty = any (set it when the bridge is reachable from browsers)",
        "metrics_token_file": "file holding a bearer token that /metrics requires (empty = metrics open)",
    }
    for field in dataclasses.fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        parser.add_argument(flag, type=kind, default=_env_default(field, environ), dest=field.name,
                            help=f"{helps.get(field.name, '')} (default: %(default)s)".strip())
    return parser


def load_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> ServerConfig:
    args = build_parser(environ).parse_args(argv)
    return ServerConfig(**vars(args)).validate()
