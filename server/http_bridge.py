"""HTTP/1.1 + JSON bridge for clients without HTTP/2 (GDScript, browsers, curl).

It runs in the server process, on its own port (`--http-port`), on the same asyncio loop
as grpc.aio, and calls the very same `AvatarService` methods the gRPC server calls: one
implementation of validation, limits, batching, metrics and request logs. A small stand-in
for the gRPC servicer context (`_BridgeContext`) carries the HTTP request's metadata in and
the gRPC status (code, message, BadRequest field violations) out.

    POST /v1/generate        GenerateRequest (proto JSON) -> JSON lines of GenerateResponse
    POST /v1/interpolate     InterpolateRequest           -> JSON lines of GenerateResponse
    POST /v1/encode-text     EncodeTextRequest            -> EncodeTextResponse
    GET  /v1/edit            WebSocket: EditRequest text frames in, EditResponse text frames out
    GET  /v1/models          ListModelsResponse
    GET  /v1/models/{name}[/{version}]   ModelInfo
    GET  /healthz            200 {"status": "SERVING"} / 503 {"status": "NOT_SERVING"}, no auth
    GET  /                   the browser playground (server/playground/)

Streams are `application/x-ndjson` (one JSON object per line, each with one key: started,
progress, reading, texture, chunk, done, or error), or server-sent events with
`Accept: text/event-stream`. Bytes fields (texture data, sha256) are base64, uint64 fields
are strings, enums are names: protobuf's JSON mapping. Errors before the stream starts are
an HTTP status with a JSON body {"code", "message", "details": [{"field", "description"}],
"requestId"}; errors after it started are a final `{"error": {...}}` line (SSE: `event: error`).
POST bodies must be `Content-Type: application/json` (415 otherwise). Pages on other origins
may call the bridge when `--http-cors-origins` lists them; CORS and the WebSocket Edit are in
server/bridge_web.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import WSCloseCode, web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from moe_avatar.server.bridge_web import CorsPolicy, large_json_integer, serve_edit
from moe_avatar.server.http_limits import (
    LINGER_SECONDS,
    MAX_JSON_DEPTH,
    PAGE_CSP,
    HttpLimits,
    cap_connections,
    connection_cap,
    page_headers,
    read_body,
    too_deep,
)
from moe_avatar.server.service import REQUEST_ID_KEY, AvatarService
from moeavatar.v1 import avatar_pb2 as pb

log = logging.getLogger("moe_avatar.http")

PLAYGROUND_DIR = pathlib.Path(__file__).resolve().parent / "playground"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_TIMEOUT_SECONDS = 3600.0
TIMEOUT_HEADER = "X-Timeout-Seconds"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

# gRPC code -> HTTP status, as grpc-gateway maps them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

Authorize = Callable[[str | None], bool]
# Per-request storage key (typed keys exist from aiohttp 3.12 on; plain strings before).
REQUEST_ID = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"


def allow_all(_authorization: str | None) -> bool:
    """The default `authorize`: the bridge is as open as the gRPC port."""
    return True


@dataclass(eq=False)  # exceptions stay hashable
class BridgeError(Exception):
    """One failed request, as the bridge reports it: a gRPC code plus field violations."""

    code: grpc.StatusCode
    message: str
    violations: list[tuple[str, str]] = field(default_factory=list)
    request_id: str = ""
    http_status: int | None = None  # None: from HTTP_STATUS[code]
    counted: bool = False  # True when AvatarService already logged it and counted it in the metrics

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return self.http_status or HTTP_STATUS.get(self.code, 500)

    def to_json(self) -> dict:
        body: dict = {"code": self.code.name, "message": self.message}
        if self.violations:
            body["details"] = [{"field": f, "description": d} for f, d in self.violations]
        if self.request_id:
            body["requestId"] = self.request_id
        return body

    @classmethod
    def from_grpc_status(cls, code: grpc.StatusCode, message: str, trailing_metadata, request_id: str) -> BridgeError:
        """Read the google.rpc.BadRequest violations back out of grpc-status-details-bin."""
        violations = []
        for key, value in trailing_metadata or ():
            if key != "grpc-status-details-bin":
                continue
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    violations += [(v.field, v.description) for v in bad.field_violations]
        return cls(code, message, violations, request_id, counted=True)


class _BridgeContext:
    """The part of grpc.aio.ServicerContext that AvatarService uses, for one HTTP request."""

    def __init__(self, metadata: list[tuple[str, str]], timeout: float | None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.request_id = ""
        self.started = False  # the service's handler ran (and so logs and counts the request)
        self.peer_name = "http"

    def invocation_metadata(self):
        return self._metadata

    async def send_initial_metadata(self, metadata) -> None:
        self.started = True
        for key, value in metadata:
            if key == REQUEST_ID_KEY:
                self.request_id = value

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self.peer_name  # set by HttpBridge._context: the connection, for fair turns

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise BridgeError.from_grpc_status(code, details, trailing_metadata, self.request_id)


def _proto_field_path(message_type: type[Message], json_path: list[str]) -> str:
    """["output", "rowOrder"] -> "output.row_order": the names validation.py reports."""
    names, descriptor = [], message_type.DESCRIPTOR
    for part in json_path:
        fd = None if descriptor is None else next(
            (f for f in descriptor.fields if part in (f.json_name, f.name)), None)
        names.append(fd.name if fd else part)
        descriptor = fd.message_type if fd is not None else None
    return ".".join(names)


def parse_message(body: bytes, message_type: type[Message]) -> Message:
    """Strict proto JSON: invalid UTF-8, invalid JSON and unknown fields are INVALID_ARGUMENT."""
    def bad(description: str, what: str = "body") -> BridgeError:
        return BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {description}", [(what, description)])

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.strip():
        text = "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise bad(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if too_deep(value):
        raise bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
    name = message_type.DESCRIPTOR.full_name
    if not isinstance(value, dict):
        raise bad(f"must be a JSON object (a {name} in proto JSON), got {type(value).__name__}")
    if path := large_json_integer(value, message_type.DESCRIPTOR):
        raise bad("a 64-bit integer above 2^53 must be a JSON string (a JavaScript number has already lost "
                  "precision there), e.g. \"seed\": \"9007199254740993\"", ".".join(path))
    try:
        return json_format.ParseDict(value, message_type())
    except json_format.ParseError as e:
        path, rest = [], str(e)
        while m := re.match(r"Failed to parse (\w+) field: (.*)", rest, re.S):
            path.append(m[1])
            rest = m[2]
        if m := re.search(r'has no field named "([^"]+)"', rest):
            path.append(m[1])
            available = [f.json_name for f in _message_at(message_type, path[:-1]).fields]
            rest = f"unknown field (fields here: {', '.join(available)})"
        if m := re.search(r"Invalid enum value (\S+) for enum type ([\w.]+)", rest):
            enum = pb.DESCRIPTOR.pool.FindEnumTypeByName(m[2])
            rest = f"unknown value {m[1]}; use one of {', '.join(v.name for v in enum.values)}"
        rest = re.sub(r" at [\w.]+\.*$", "", rest.strip())  # protobuf's own path: we report `field`
        description = re.sub(r"\s+", " ", rest).strip().rstrip(".") or "cannot be parsed"
        raise bad(description, _proto_field_path(message_type, path) if path else "body") from None


def _message_at(message_type: type[Message], json_path: list[str]):
    descriptor = message_type.DESCRIPTOR
    for part in json_path:
        fd = next((f for f in descriptor.fields if part in (f.json_name, f.name)), None)
        if fd is None or fd.message_type is None:
            break
        descriptor = fd.message_type
    return descriptor


def to_json(message: Message) -> dict:
    return json_format.MessageToDict(message)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _error_response(error: BridgeError, **headers: str) -> web.Response:
    extra = {"X-Request-Id": error.request_id} if error.request_id else {}
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        extra["WWW-Authenticate"] = "Bearer"
    return web.Response(status=error.status, text=_dumps(error.to_json()), content_type="application/json",
                        headers={**extra, **headers})


class HttpBridge:
    """The HTTP server: start() binds, stop(grace) lets in-flight streams finish."""

    def __init__(self, service: AvatarService, *, host: str, port: int,
                 is_serving: Callable[[], bool] = lambda: True, authorize: Authorize = allow_all,
                 ssl_context: ssl.SSLContext | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 playground_dir: pathlib.Path | None = PLAYGROUND_DIR, reuse_port: bool = False,
                 cors: CorsPolicy = CorsPolicy(), limits: HttpLimits = HttpLimits()) -> None:
        self._service = service
        self._host = None if host.strip("[]") in ("::", "") else host.strip("[]")  # None: IPv4 and IPv6
        self._port = port
        self._is_serving = is_serving
        self._authorize = authorize
        self._ssl = ssl_context
        self._max_body = max_body_bytes
        self._playground = playground_dir
        self._reuse_port = reuse_port  # --workers: every worker process serves the same HTTP port
        self._cors = cors  # --http-cors-origins
        self._limits = limits  # timeouts, connection cap, allowed hosts (server/http_limits.py)
        self._runner: web.AppRunner | None = None
        self._in_flight: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()  # open Edit WebSockets, closed first on stop
        self._closing = False
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._errors_and_auth])
        # Route names are the RPC names, for the metrics and logs of requests the bridge refuses itself.
        app.router.add_post("/v1/generate", self._generate, name="Generate")
        app.router.add_post("/v1/interpolate", self._interpolate, name="Interpolate")
        app.router.add_post("/v1/encode-text", self._encode_text, name="EncodeText")
        app.router.add_get("/v1/models", self._list_models, name="ListModels")
        app.router.add_get("/v1/edit", self._edit, name="Edit")
        app.on_response_prepare.append(self._add_cors_headers)
        app.on_response_prepare.append(page_headers)
        app.router.add_get("/v1/models/{model}", self._model_info, name="GetModelInfo")
        app.router.add_get("/v1/models/{model}/{version}", self._model_info, name="GetModelInfo.version")
        app.router.add_get("/healthz", self._healthz)
        if self._playground is not None and (self._playground / "index.html").is_file():
            app.router.add_get("/", self._index)
            app.router.add_static("/playground/", self._playground)
        return app

    async def start(self) -> int:
        # handler_cancellation: a client that hangs up cancels its request, so the work is dropped.
        self._runner = web.AppRunner(self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=0,
                                     keepalive_timeout=self._limits.header_timeout, lingering_time=LINGER_SECONDS)
        await self._runner.setup()
        cap_connections(self._runner.server, connection_cap(self._limits.max_connections))
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl,
                           reuse_port=self._reuse_port or None)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise OSError(f"--http-port: cannot bind {self._host or '*'}:{self._port} ({e.strerror})") from e
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self, grace: float) -> None:
        """Refuse new API calls (503), give streams in flight `grace` seconds, then close."""
        self._closing = True
        if self._runner is None:
            return
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        # An open WebSocket keeps its handler alive until the peer leaves; tell every peer we go.
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        await self._runner.cleanup()  # closes the port and idle connections, cancels what is left

    # --- middleware --------------------------------------------------------------

    @web.middleware
    async def _errors_and_auth(self, request: web.Request, handler):
        """JSON errors for /v1 (also aiohttp's own 404/405/413), auth, 503 while stopping."""
        if why := self._limits.host_refusal(request):
            return _error_response(BridgeError(grpc.StatusCode.PERMISSION_DENIED, why, http_status=403))
        api = request.path.startswith("/v1/")
        if not api:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request)  # before auth: browsers send preflights without credentials
        task = asyncio.current_task()
        self._in_flight.add(task)
        given = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID] = given if 0 < len(given) <= 64 else uuid.uuid4().hex[:16]
        try:
            if self._closing or not self._is_serving():
                raise BridgeError(grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry another replica")
            if not self._authorize(self._authorization(request)):
                raise BridgeError(grpc.StatusCode.UNAUTHENTICATED,
                                  "missing or invalid bearer token (header Authorization: Bearer <token>)")
            return await handler(request)
        except BridgeError as e:
            return self._refused(request, e)
        except web.HTTPRequestEntityTooLarge:
            return self._refused(request, BridgeError(
                grpc.StatusCode.INVALID_ARGUMENT, f"body: must be at most {self._max_body} bytes",
                [("body", f"must be at most {self._max_body} bytes")], http_status=413))
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(
                e.status, grpc.StatusCode.INVALID_ARGUMENT)
            return _error_response(BridgeError(code, f"{request.method} {request.path}: {e.reason}",
                                               http_status=e.status), **{k: v for k, v in e.headers.items()
                                                                         if k == "Allow"})
        finally:
            self._in_flight.discard(task)

    def _refused(self, request: web.Request, error: BridgeError) -> web.Response:
        """The error response; requests refused before reaching AvatarService (bad JSON, auth,
        body size) are logged and counted like the ones it refuses."""
        error.request_id = error.request_id or request.get(REQUEST_ID, "")
        route = request.match_info.route.name
        if not error.counted and route:
            method = route.split(".", 1)[0]
            self._service.metrics.requests.labels(method, error.code.name).inc()
            level = logging.WARNING if error.code == grpc.StatusCode.UNAUTHENTICATED else logging.INFO
            log.log(level, "%s %s (HTTP bridge)", method, error.code.name, extra={
                "request_id": error.request_id, "method": method, "code": error.code.name,
                "http_status": error.status, "peer": request.remote})
        return _error_response(error)

    # --- web pages on other origins (server/bridge_web.py) ------------------------

    def _preflight(self, request: web.Request) -> web.Response:
        if why := self._cors.preflight_refusal(request):
            return _error_response(BridgeError(grpc.StatusCode.PERMISSION_DENIED, f"CORS preflight: {why}",
                                               http_status=403))
        return web.Response(status=204, headers=self._cors.preflight_headers(request))

    async def _add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/v1/"):
            response.headers.update(self._cors.headers(request.headers.get("Origin")))

    @staticmethod
    def _authorization(request: web.Request) -> str | None:
        """The Authorization header; for the WebSocket also `?access_token=` (browsers cannot set headers there)."""
        if (header := request.headers.get("Authorization")) is not None or request.path != "/v1/edit":
            return header
        token = request.query.get("access_token")
        return f"Bearer {token}" if token else None

    # --- plumbing ----------------------------------------------------------------

    def _context(self, request: web.Request) -> _BridgeContext:
        metadata = [(REQUEST_ID_KEY, request[REQUEST_ID])]
        if authorization := self._authorization(request):
            metadata.append(("authorization", authorization))
        timeout = None
        if (raw := request.headers.get(TIMEOUT_HEADER)) is not None:
            try:
                timeout = float(raw)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
                why = f"must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:g}] (got {raw!r})"
                raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"{TIMEOUT_HEADER}: {why}", [(TIMEOUT_HEADER, why)])
        context = _BridgeContext(metadata, timeout)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        context.peer_name = f"http:{peer[0]}:{peer[1]}" if peer else "http"
        return context

    async def _body(self, request: web.Request, message_type: type[Message]) -> Message:
        if request.content_type != "application/json":
            why = f"must be application/json (got {request.headers.get('Content-Type', 'none')!r})"
            raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"Content-Type: {why}", [("Content-Type", why)],
                              http_status=415)
        if (body := await read_body(request, self._limits.body_timeout)) is None:
            why = f"did not arrive within {self._limits.body_timeout:g} s (--http-body-timeout)"
            raise BridgeError(grpc.StatusCode.DEADLINE_EXCEEDED, f"body: {why}", [("body", why)], http_status=408)
        return parse_message(body, message_type)

    @staticmethod
    async def _next(stream: AsyncIterator[Message], context: _BridgeContext) -> Message | None:
        """The next message, or None at the end; a passed deadline is DEADLINE_EXCEEDED."""
        remaining = context.time_remaining()
        try:  # asyncio.timeout, not wait_for: the stream runs in this task, where a stall cut finds it
            if remaining is not None and remaining <= 0:
                raise asyncio.TimeoutError
            async with asyncio.timeout(remaining):
                return await stream.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise BridgeError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded ({TIMEOUT_HEADER})", [],
                              context.request_id, counted=context.started) from None

    async def _stream(self, request: web.Request, message_type: type[Message], rpc) -> web.StreamResponse:
        """Run a server-streaming RPC; the HTTP status is decided by its first message."""
        context = self._context(request)
        stream = rpc(await self._body(request, message_type), context)
        sse = SSE in request.headers.get("Accept", "")
        try:
            message = await self._next(stream, context)  # validation and model lookup happen here
            response = web.StreamResponse(status=200, headers={
                "Content-Type": f"{SSE}; charset=utf-8" if sse else f"{NDJSON}; charset=utf-8",
                "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": context.request_id})
            await response.prepare(request)
            try:
                while message is not None:
                    await response.write(self._frame(to_json(message), sse))
                    message = await self._next(stream, context)
            except BridgeError as e:
                await response.write(self._frame({"error": e.to_json()}, sse, event="error"))
            await response.write_eof()
            return response
        finally:
            await stream.aclose()

    @staticmethod
    def _frame(value: dict, sse: bool, event: str = "") -> bytes:
        text = _dumps(value)
        if sse:
            return ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()
        return (text + "\n").encode()

    async def _unary(self, request: web.Request, rpc, message: Message) -> web.Response:
        context = self._context(request)
        try:
            result = await asyncio.wait_for(rpc(message, context), context.time_remaining())
        except asyncio.TimeoutError:
            raise BridgeError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded ({TIMEOUT_HEADER})", [],
                              context.request_id, counted=context.started) from None
        return web.Response(text=_dumps(to_json(result)), content_type="application/json",
                            headers={"X-Request-Id": context.request_id})

    # --- endpoints ---------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, pb.GenerateRequest, self._service.Generate)

    async def _interpolate(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, pb.InterpolateRequest, self._service.Interpolate)

    async def _encode_text(self, request: web.Request) -> web.Response:
        return await self._unary(request, self._service.EncodeText, await self._body(request, pb.EncodeTextRequest))

    async def _list_models(self, request: web.Request) -> web.Response:
        return await self._unary(request, self._service.ListModels, pb.ListModelsRequest())

    async def _model_info(self, request: web.Request) -> web.Response:
        message = pb.GetModelInfoRequest(model=request.match_info["model"],
                                         model_version=request.match_info.get("version", ""))
        return await self._unary(request, self._service.GetModelInfo, message)

    async def _edit(self, request: web.Request) -> web.StreamResponse:
        if why := self._cors.websocket_refusal(request):
            raise BridgeError(grpc.StatusCode.PERMISSION_DENIED, f"WebSocket: {why}", http_status=403)
        if not web.WebSocketResponse().can_prepare(request).ok:
            why = "must be a WebSocket upgrade (GET with Upgrade: websocket)"
            raise BridgeError(grpc.StatusCode.INVALID_ARGUMENT, f"/v1/edit: {why}", [("Upgrade", why)])
        return await serve_edit(request, self._service.Edit, self._context(request), parse_message, to_json,
                                self._max_body, self._sockets)

    async def _healthz(self, request: web.Request) -> web.Response:
        serving = self._is_serving() and not self._closing
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(self._playground / "index.html", headers={
            # The playground loads only its own files; images come from blob: URLs it makes.
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
