"""gRPC health service whose Watch streams end when shutdown begins.

grpcio-health-checking's servicer keeps every Watch stream open until the server cancels
it. During a graceful stop that means one watching client (gRPC client-side health
checking, a load balancer) holds the process for the whole --grace-seconds even when no
real work is left. Here Watch is our own: it sends each status change, and once shutdown
begins it sends NOT_SERVING and ends with OK. Check and set() are the library's.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

Status = health_pb2.HealthCheckResponse


class HealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": Status.SERVING}
        self._changed = asyncio.Condition()
        self._closing = False

    async def set(self, service: str, status: int) -> None:
        await super().set(service, status)
        async with self._changed:
            if not self._closing:
                self._statuses[service] = status
                self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        async with self._changed:
            self._closing = True
            self._statuses = {service: Status.NOT_SERVING for service in self._statuses}
            self._changed.notify_all()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        last = None
        while True:
            async with self._changed:  # not held while writing: a slow reader blocks nobody
                while (status := self._statuses.get(request.service, Status.SERVICE_UNKNOWN)) == last \
                        and not self._closing:
                    await self._changed.wait()
                closing = self._closing
            if status != last:
                await context.write(Status(status=status))
                last = status
            if closing:
                return
