"""gRPC health service whose Watch streams end when shutdown begins.

grpcio-health-checking's servicer keeps every Watch stream open until the server cancels
it. During a graceful stop that means one watching client (gRPC client-side health
checking, a load balancer) holds the process for the whole --grace-seconds even when
no real work is left. Here a Watch stream, once shutdown begins, sends NOT_SERVING (again,
if it had already; clients only care about the latest status) and ends with OK.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2


class HealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watching, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            closing.cancel()
            await asyncio.gather(watching, closing, return_exceptions=True)
        if watching.done() and not watching.cancelled() and watching.exception() is not None:
            raise watching.exception()
        if self._closing.is_set():
            await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING))

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._closing.set()
