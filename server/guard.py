"""Per-call guards in front of AvatarService (a grpc.aio server interceptor).

* **In-flight calls per client.** At most `--max-inflight-per-client` AvatarService calls
  may run at once from one client address (the peer's IP, not its port: one player
  opening many connections is still one client). One more is RESOURCE_EXHAUSTED naming
  the limit and the flag; the client should retry later with backoff.
* **Draining.** Once shutdown begins (`draining`), new calls get UNAVAILABLE, so clients
  retry elsewhere while the calls in flight finish.
* **Undecodable requests.** gRPC Python deserializes a request before the servicer runs
  and reports a protobuf DecodeError (corrupt wire format, invalid UTF-8 in a string)
  as UNKNOWN. Bytes that are not a valid request are the caller's fault, so the guard
  decodes them itself and answers INVALID_ARGUMENT.

Health and reflection are not counted: probes and long health Watch streams must not
use up a client's allowance (health requests are still decoded here, so garbage sent
to Health.Check is INVALID_ARGUMENT too).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from moe_avatar.server.auth import OPEN_SERVICES, handler_like
from moe_avatar.server.validation import RequestError

log = logging.getLogger("moe_avatar.guard")

OnRefused = Callable[[str, grpc.StatusCode], None]


def client_address(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7'; 'ipv6:[::1]:5000' -> 'ipv6:[::1]'; others unchanged."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def _decoder(deserialize: Callable[[bytes], Any] | None, type_name: str) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as e:  # noqa: BLE001 - any parse failure is the sender's fault
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {type_name} message") from e
    return decode


class _CallEnd:
    """Ends a streaming call's bookkeeping when gRPC says the call is over.

    A call the client cancels (or whose deadline passes) while its handler waits at a `yield`
    is never resumed: the handler's `finally` would run only when Python's cycle collector
    finalizes the generator, which in a large process can be minutes later, so the call
    would stay counted in flight and hold what it holds. gRPC's done callback leaves at once
    and closes the handler's generator, so every `finally` below it runs now."""

    def __init__(self, leave: Callable[[], None], messages) -> None:
        self._leave, self._messages, self._left = leave, messages, False

    def leave(self) -> None:
        if not self._left:
            self._left = True
            self._leave()

    def __call__(self, _context) -> None:
        if self._left:  # the handler's own `finally` ran: it is closed already
            return
        self.leave()
        with contextlib.suppress(RuntimeError):  # no running loop: the process is exiting
            asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(RuntimeError, StopAsyncIteration):  # still running: it ends by itself
            await self._messages.aclose()


class RequestGuard(grpc.aio.ServerInterceptor):
    def __init__(self, max_inflight_per_client: int, on_refused: OnRefused | None = None) -> None:
        self.max_inflight_per_client = max_inflight_per_client
        self._on_refused = on_refused or (lambda method, code: None)
        self._inflight: collections.Counter[str] = collections.Counter()
        self.draining = False  # set by AvatarServer.stop()

    @property
    def in_flight(self) -> int:
        """AvatarService calls running now (all clients): 0 when the server is idle."""
        return sum(self._inflight.values())

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        if details.method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return handler if handler.request_streaming else self._wrap(handler, details.method, count=False)
        return self._wrap(handler, details.method)

    # --- bookkeeping --------------------------------------------------------------

    async def _refuse(self, context: grpc.aio.ServicerContext, method: str, error: RequestError,
                      count: bool = True) -> None:
        if count:
            self._on_refused(method.rsplit("/", 1)[-1], error.code)
        log.warning("refused %s: %s", method, error.message,
                    extra={"method": method, "peer": context.peer(), "code": error.code.name})
        await context.abort(error.code, error.message)

    async def _enter(self, context: grpc.aio.ServicerContext, method: str) -> str:
        if self.draining:
            await self._refuse(context, method, RequestError(
                grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry (on another replica)"))
        # A call whose connection is already gone has no peer (""); it is still counted, under a
        # key of its own, so that its leave finds it ("" means "not counted" to _leave).
        client = client_address(context.peer() or "") or "unknown peer"
        limit = self.max_inflight_per_client
        if limit and self._inflight[client] >= limit:
            await self._refuse(context, method, RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent calls from this client: limit {limit} "
                f"(--max-inflight-per-client); retry with backoff"))
        self._inflight[client] += 1
        return client

    def _leave(self, client: str) -> None:
        if not client:  # a call that was not counted
            return
        self._inflight[client] -= 1
        if self._inflight[client] <= 0:
            del self._inflight[client]

    # --- wrapping -----------------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str, count: bool = True) -> grpc.RpcMethodHandler:
        """`count`: the call counts towards its client's in-flight limit and is refused while draining."""
        message_class = getattr(handler.request_deserializer, "__self__", None)  # e.g. GenerateRequest
        descriptor = getattr(message_class, "DESCRIPTOR", None)
        type_name = descriptor.full_name if descriptor is not None else method.rsplit("/", 1)[-1] + " request"
        decode = _decoder(handler.request_deserializer, type_name)
        behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary
                    or handler.stream_stream)

        async def prepare(request, context):
            """Enter (count the call), then decode a unary request; returns (client, request)."""
            client = await self._enter(context, method) if count else ""
            if handler.request_streaming:
                return client, request  # messages are decoded as the servicer reads them
            try:
                return client, decode(request)
            except RequestError as e:
                self._leave(client)
                await self._refuse(context, method, e, count)

        if inspect.isasyncgenfunction(behavior):
            async def call(request, context):
                client, request = await prepare(request, context)
                messages = behavior(request, context)
                ended = _CallEnd(lambda: self._leave(client), messages)
                context.add_done_callback(ended)
                if context.done():  # over before the callback was added (a deadline of a few ms)
                    ended(context)
                try:
                    async for message in messages:
                        yield message
                finally:
                    ended.leave()
        else:
            async def call(request, context):
                client, request = await prepare(request, context)
                try:
                    return await behavior(request, context)
                finally:
                    self._leave(client)

        # Unary requests arrive as raw bytes and are decoded in `prepare`; streamed ones
        # are decoded by gRPC with a deserializer that raises RequestError instead.
        return handler_like(handler, call, decode if handler.request_streaming else None, handler.response_serializer)
