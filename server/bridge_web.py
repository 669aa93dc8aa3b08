"""What browsers and web exports need from the HTTP bridge (server/http_bridge.py).

* CORS (`--http-cors-origins`): pages on the listed origins may call the bridge; preflights
  (OPTIONS with Access-Control-Request-Method) are answered here, before auth, since browsers
  send them without credentials. No origin is allowed unless listed; `*` only when given.
* The Edit stream as a WebSocket (GET /v1/edit): text frames of EditRequest in proto JSON in,
  text frames of EditResponse out, served by the very same `AvatarService.Edit` as gRPC, so the
  semantics are the same (newest wins, a replaced request ends with `superseded`). A frame that
  is not a valid EditRequest is answered in-band with an `error` event; the session goes on.
  Browsers cannot set headers on a WebSocket, so `?access_token=` stands in for Authorization,
  and the Origin is checked here (browsers do not apply CORS to WebSockets).
* 64-bit integers given as JSON numbers above 2^53 are refused: such a number may already have
  been rounded by a JavaScript double, and proto JSON's own form for them is a string.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from aiohttp import WSMsgType, web
from google.protobuf import descriptor as pb_descriptor

from moeavatar.v1 import avatar_pb2 as pb

ALLOWED_METHODS = "GET, POST"
ALLOWED_HEADERS = ("authorization", "content-type", "x-request-id", "x-timeout-seconds")
EXPOSED_HEADERS = "X-Request-Id"
PREFLIGHT_MAX_AGE = "600"
JS_SAFE_INTEGER = 2**53
INT64_TYPES = {pb_descriptor.FieldDescriptor.TYPE_INT64, pb_descriptor.FieldDescriptor.TYPE_UINT64,
               pb_descriptor.FieldDescriptor.TYPE_SINT64, pb_descriptor.FieldDescriptor.TYPE_FIXED64,
               pb_descriptor.FieldDescriptor.TYPE_SFIXED64}


@dataclass(frozen=True)
class CorsPolicy:
    """The origins (`scheme://host[:port]`, or `*`) whose pages may call the bridge."""

    origins: frozenset[str] = frozenset()

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin in self.origins)

    def headers(self, origin: str | None) -> dict[str, str]:
        """CORS headers for an actual (non-preflight) response; none for other origins."""
        if not self.allows(origin):
            return {}
        return {"Access-Control-Allow-Origin": "*" if "*" in self.origins else origin,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS, "Vary": "Origin"}

    def preflight_refusal(self, request: web.Request) -> str:
        """Why a preflight is refused, or "" to allow it."""
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            return f"origin {origin!r} is not allowed (server flag --http-cors-origins)"
        method = request.headers.get("Access-Control-Request-Method", "")
        if method not in ("GET", "POST"):
            return f"method {method!r} is not allowed (use GET or POST)"
        asked = request.headers.get("Access-Control-Request-Headers", "")
        extra = [h.strip() for h in asked.split(",") if h.strip() and h.strip().lower() not in ALLOWED_HEADERS]
        return f"header {extra[0]!r} is not allowed (allowed: {', '.join(ALLOWED_HEADERS)})" if extra else ""

    def preflight_headers(self, request: web.Request) -> dict[str, str]:
        return {**self.headers(request.headers.get("Origin")), "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS), "Access-Control-Max-Age": PREFLIGHT_MAX_AGE}

    def websocket_refusal(self, request: web.Request) -> str:
        """A page may open the WebSocket from the bridge's own origin or an allowed one."""
        origin = request.headers.get("Origin")
        if origin is None or origin == f"{request.scheme}://{request.host}" or self.allows(origin):
            return ""
        return f"origin {origin!r} is not allowed (server flag --http-cors-origins)"


def parse_origins(value: str) -> frozenset[str]:
    """`--http-cors-origins` -> the origin set; raises ValueError naming a bad entry."""
    origins = frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (not sep or scheme not in ("http", "https") or not rest or "/" in rest):
            raise ValueError(f"{origin!r} is not an origin: use scheme://host[:port] (no path) or *")
    if "*" in origins and len(origins) > 1:
        raise ValueError("* already allows every origin; give it alone")
    return origins


def large_json_integer(value, descriptor, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The proto field path of a 64-bit integer given as a JSON number above 2^53, if any."""
    if not isinstance(value, dict) or descriptor is None:
        return None
    for key, item in value.items():
        fd = next((f for f in descriptor.fields if key in (f.json_name, f.name)), None)
        if fd is None:
            continue
        items = item if isinstance(item, list) else [item]
        if fd.type in INT64_TYPES and any(isinstance(i, int) and not isinstance(i, bool) and abs(i) > JS_SAFE_INTEGER
                                          for i in items):
            return (*path, fd.name)
        if fd.message_type is not None:
            for i in items:
                if found := large_json_integer(i, fd.message_type, (*path, fd.name)):
                    return found
    return None


async def _edit_requests(ws: web.WebSocketResponse, send: Callable, parse) -> AsyncIterator[pb.EditRequest]:
    """The EditRequests of the socket's text frames; a bad frame is answered in-band and skipped."""
    async for frame in ws:
        if frame.type != WSMsgType.TEXT:
            if frame.type == WSMsgType.BINARY:
                await send(pb.EditResponse(error=pb.EditError(
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    message="frame: send EditRequest as a text frame of proto JSON")))
            continue
        try:
            yield parse(frame.data.encode("utf-8"), pb.EditRequest)
        except Exception as error:  # noqa: BLE001 - a BridgeError from parse_message
            await send(pb.EditResponse(sequence=_sequence_of(frame.data), error=pb.EditError(
                code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=getattr(error, "message", str(error)))))


def _sequence_of(text: str) -> int:
    """The frame's `sequence` when it can be read, so the client knows which request failed."""
    try:
        value = int(json.loads(text).get("sequence", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
    return value if 0 <= value < 2**64 else 0


async def serve_edit(request: web.Request, edit_rpc, context, parse, to_json: Callable,
                     max_frame_bytes: int, sockets: set[web.WebSocketResponse]) -> web.WebSocketResponse:
    """Runs one Edit session over a WebSocket until either side closes it (`sockets` holds it
    while open, so the bridge can close it when the server stops)."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_frame_bytes)
    await ws.prepare(request)
    sockets.add(ws)
    lock = asyncio.Lock()

    async def send(message: pb.EditResponse) -> None:
        async with lock:
            if not ws.closed:
                await ws.send_str(json.dumps(to_json(message), ensure_ascii=False, separators=(",", ":")))

    stream = edit_rpc(_edit_requests(ws, send, parse), context)
    try:
        async for message in stream:
            await send(message)
    except Exception as error:  # noqa: BLE001 - the service's status for the whole session
        if not hasattr(error, "to_json"):
            raise
        await send(pb.EditResponse(error=pb.EditError(code=error.code.value[0], message=error.message)))
    finally:
        sockets.discard(ws)
        await stream.aclose()
        await ws.close()
    return ws
