"""`moe-avatar-server`: load every bundle in --models and serve AvatarService, health and
reflection over gRPC (grpc.aio), with Prometheus metrics on --metrics-port.

    moe-avatar-server --models models/ --port 50051 --device auto --metrics-port 9100

SIGTERM / SIGINT: health goes NOT_SERVING (load balancers stop sending) and new RPCs are
refused with UNAVAILABLE; after --drain-seconds the port closes and in-flight streams get
--grace-seconds to finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pathlib
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from moe_avatar.bundle import BundleError, find_bundles
from moe_avatar.server import auth, tls
from moe_avatar.server.bridge_web import CorsPolicy, parse_origins
from moe_avatar.server.config import ConfigError, ServerConfig, load_config
from moe_avatar.server.guard import RequestGuard
from moe_avatar.server.health import HealthServicer
from moe_avatar.server.http_bridge import HttpBridge
from moe_avatar.server.http_limits import HttpLimits, parse_hosts
from moe_avatar.server.logs import quiet_accept_errors, setup_logging
from moe_avatar.server.metrics import Metrics
from moe_avatar.server.pipeline import ModelPipeline
from moe_avatar.server.runtime import DeviceError, device_description, resolve_device
from moe_avatar.server.service import AvatarService, ModelRegistry
from moe_avatar.server.streaming import ByteBudget, FairEncoder
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

log = logging.getLogger("moe_avatar.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvatarService"].full_name


class AvatarServer:
    """Everything one running server owns. Tests start it in-process with port 0."""

    def __init__(self, config: ServerConfig, reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # only --workers shares a port; alone, a taken port is an error
        self.metrics = Metrics()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()  # Watch streams end at shutdown instead of holding it
        self._metrics_http = None
        self.pipelines: list[ModelPipeline] = []  # one per loaded bundle
        self._executors: list[concurrent.futures.Executor] = []
        self._encoder: FairEncoder | None = None  # the texture-encoding threads, clients in turn
        self._stopping: asyncio.Task | None = None
        self.service: AvatarService | None = None
        self.http: HttpBridge | None = None  # --http-port: the HTTP/JSON bridge and playground
        self.http_port = 0
        self.guard: RequestGuard | None = None  # per-client in-flight calls

    async def start(self) -> int:
        """Load models, bind the port, start serving; returns the bound port."""
        cfg = self.config
        quiet_accept_errors(asyncio.get_running_loop())
        token_auth = auth.token_auth(cfg)  # unusable token / certificate files fail before models load
        credentials = tls.server_credentials(cfg)
        bundles = find_bundles(cfg.models)
        factory = resolve_device(cfg.device, bundles[0].path("generator"), cfg.cuda_device_id, cfg.intra_op_threads,
                                 bool(cfg.ort_spinning))
        # One thread per graph: each batcher runs one batch at a time.
        onnx_pool = concurrent.futures.ThreadPoolExecutor(3 * len(bundles), thread_name_prefix="onnx")
        self._encoder = encoder = FairEncoder(cfg.encode_workers)
        self._executors = [onnx_pool]
        self.pipelines = [
            ModelPipeline(b, factory, onnx_pool, self.metrics, max_batch=cfg.max_batch,
                          max_wait_s=cfg.max_wait_ms / 1000, max_queue=cfg.max_queue,
                          text_cache_size=cfg.text_cache_size)
            for b in bundles]
        registry = ModelRegistry(self.pipelines, cfg.default_model)
        loop = asyncio.get_running_loop()
        for p in self.pipelines:  # before the port opens: a bundle that cannot run never serves
            await loop.run_in_executor(onnx_pool, p.warm_up)
        for p in self.pipelines:
            p.start()

        def refused(method: str, code: grpc.StatusCode) -> None:
            self.metrics.requests.labels(method, code.name).inc()

        self.guard = RequestGuard(cfg.max_inflight_per_client, refused)
        interceptors = [auth.AuthInterceptor(token_auth, refused)] if token_auth.enabled else []
        self._server = grpc.aio.server(interceptors=[*interceptors, self.guard], options=[
            ("grpc.so_reuseport", int(self.reuse_port)), ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_concurrent_streams", cfg.max_streams_per_connection)])
        self.service = AvatarService(registry, self.metrics, encoder, stall_seconds=cfg.stream_stall_seconds,
                                     budget=ByteBudget(cfg.max_held_bytes, self.metrics.held_bytes.set))
        pb_grpc.add_AvatarServiceServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        try:
            address = f"{cfg.host}:{cfg.port}"
            self.port = (self._server.add_secure_port(address, credentials) if credentials is not None
                         else self._server.add_insecure_port(address))
        except RuntimeError as e:  # grpc reports a taken port as RuntimeError
            raise OSError(f"--port: cannot bind {cfg.host}:{cfg.port} (in use?)") from e
        for name in ("", SERVICE_NAME):  # the library's default for "" is SERVING
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.http_port:  # same service object, auth and TLS as the gRPC port
            self.http = HttpBridge(self.service, host=cfg.host, port=cfg.http_port,
                                   is_serving=lambda: self._stopping is None, authorize=auth.authorizer(cfg),
                                   ssl_context=tls.ssl_context(cfg), max_body_bytes=cfg.max_message_bytes,
                                   reuse_port=self.reuse_port,
                                   cors=CorsPolicy(parse_origins(cfg.http_cors_origins)),
                                   limits=HttpLimits(cfg.http_header_timeout, cfg.http_body_timeout,
                                                     cfg.http_max_connections, parse_hosts(cfg.http_allowed_hosts)))
            self.http_port = await self.http.start()
            log.info("HTTP bridge and playground on port %d", self.http_port, extra={"http_port": self.http_port})
        if cfg.metrics_port:
            token = pathlib.Path(cfg.metrics_token_file).read_text().strip() if cfg.metrics_token_file else ""
            self._metrics_http = await self.metrics.serve(cfg.metrics_port, cfg.host, tls.ssl_context(cfg), token)
        log.info("serving on port %d", self.port, extra={
            "port": self.port, "provider": factory.provider, "device": device_description(factory),
            "models": [f"{b.name} {b.version}" for b in bundles], "default_model": registry.default_model,
            "metrics_port": cfg.metrics_port or None, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
            "auth": f"bearer ({len(token_auth)} tokens)" if token_auth.enabled else "off",
            "tls": "mutual" if cfg.tls_client_ca else "on" if credentials is not None else "off"})
        return self.port

    def stop(self, grace: float | None = None) -> asyncio.Task:
        """Graceful shutdown (idempotent): NOT_SERVING, refuse new RPCs, let streams finish."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace))
        return self._stopping

    async def _stop(self, grace: float | None) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        log.info("shutting down; in-flight requests get %.1fs", grace, extra={"grace_seconds": grace})
        if self.guard is not None:
            self.guard.draining = True  # from now on new calls get UNAVAILABLE, even before stop() below
        await self._health.enter_graceful_shutdown()
        if self.config.drain_seconds:
            # Drain first: a client picks a replica before its health watch reports NOT_SERVING,
            # so calls keep arriving for a moment. Until the port closes they get UNAVAILABLE
            # from the guard, which the client's retry policy sends to another replica; a call
            # that reached the transport just as stop() began would be cancelled instead.
            await asyncio.sleep(self.config.drain_seconds)
        stops = [self._server.stop(grace)] if self._server is not None else []
        if self.http is not None:
            stops.append(self.http.stop(grace))
        await asyncio.gather(*stops)
        for p in self.pipelines:
            await p.stop()
        for ex in self._executors:
            ex.shutdown(wait=False, cancel_futures=True)
        if self._encoder is not None:
            self._encoder.shutdown()
        if self._metrics_http is not None:
            await self._metrics_http.cleanup()
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


async def serve(config: ServerConfig, reuse_port: bool = False) -> None:
    server = AvatarServer(config, reuse_port)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.wait_for_termination()


def configured(argv: list[str] | None, prog: str) -> ServerConfig | None:
    """The config from flags and environment, with logging set up; None (after one line on
    stderr naming every bad flag) when it is invalid."""
    try:
        config = load_config(argv)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    setup_logging(config.log_format, config.log_level)
    return config


def main(argv: list[str] | None = None) -> int:
    config = configured(argv, "moe-avatar-server")
    if config is None:
        return 2
    if config.workers != "1":  # a supervisor of worker processes (server/workers.py)
        from moe_avatar.server.workers import supervise

        return supervise(config)
    return run_server(config)


def run_server(config: ServerConfig, reuse_port: bool = False, who: str = "") -> int:
    """Serve until stopped: 0, or 1 with one `cannot start:` line when the bundles, the device or the port refuse."""
    try:
        asyncio.run(serve(config, reuse_port=reuse_port))
    except (BundleError, DeviceError, OSError, ValueError) as e:
        log.error("%scannot start: %s", who, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
