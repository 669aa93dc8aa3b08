"""Optional bearer-token authentication, shared by the gRPC port and the HTTP bridge.

Tokens come from `--auth-tokens-file` (one token per line; blank lines and lines
starting with `#` are ignored) and/or the environment variable `MOE_AVATAR_AUTH_TOKENS`
(comma-separated). Tokens are deliberately not a command-line flag: flags show up in
`ps` and in `--help` defaults. With no tokens configured, auth is off.

A client sends `authorization: Bearer <token>` (gRPC metadata or HTTP header). Every
configured token is compared with `hmac.compare_digest`, all of them every time, so the
time taken does not reveal which token (or how much of one) matched.

What stays open without a token, on purpose: the gRPC health service (load balancers
and Kubernetes probes carry no credentials, and health reveals only SERVING /
NOT_SERVING) and server reflection (it describes the public .proto, which is no
secret; grpcurl needs it to build requests). Every AvatarService RPC needs a token.

Tokens are never logged: a refused call is logged with its method and peer only.

    auth = authorizer(config)          # Callable[[str | None], bool]; always True when off
    auth("Bearer s3cret")              # -> True / False
"""

from __future__ import annotations

import hmac
import logging
import os
import pathlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

log = logging.getLogger("moe_avatar.auth")

TOKENS_ENV = "MOE_AVATAR_AUTH_TOKENS"
MESSAGE = "missing or invalid bearer token in the 'authorization' metadata"
# Services reachable without a token (see the module docstring for why).
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
MAX_HEADER_CHARS = 4096  # a longer authorization value is refused without comparing


class AuthConfigError(ValueError):
    """The token file or environment variable is unusable (names which, never a token)."""


def read_tokens_file(path: str | os.PathLike) -> list[str]:
    """Tokens from a file: one per line, `#` comments and blank lines ignored."""
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AuthConfigError(f"--auth-tokens-file {path}: cannot read: {e.__class__.__name__}") from e
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise AuthConfigError(f"--auth-tokens-file {path}: holds no tokens (one per line, # for comments)")
    return tokens


def tokens_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    raw = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
    return [t.strip() for t in raw.split(",") if t.strip()]


class TokenAuth:
    """Checks `authorization` values against a fixed set of tokens (constant time)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        for t in tokens:
            if any(c.isspace() for c in t) or not t.isprintable():
                raise AuthConfigError("a configured token contains whitespace or control characters")
        self._tokens = [t.encode("utf-8") for t in dict.fromkeys(tokens)]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, authorization: str | None) -> bool:
        """True when auth is off, or `authorization` is `Bearer <a configured token>`."""
        if not self._tokens:
            return True
        if not authorization or len(authorization) > MAX_HEADER_CHARS:
            return False
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = given.strip().encode("utf-8", "surrogatepass")
        ok = False
        for token in self._tokens:  # no early exit: time does not depend on which token matched
            ok |= hmac.compare_digest(candidate, token)
        return ok

    __call__ = check

    def __repr__(self) -> str:  # never print the tokens themselves
        return f"TokenAuth({len(self._tokens)} tokens)"


def token_auth(config, environ: Mapping[str, str] | None = None) -> TokenAuth:
    """The TokenAuth for a ServerConfig: file tokens plus environment tokens."""
    tokens = tokens_from_env(environ)
    path = getattr(config, "auth_tokens_file", "")
    if path:
        tokens = read_tokens_file(path) + tokens
    return TokenAuth(tokens)


def authorizer(config, environ: Mapping[str, str] | None = None) -> Callable[[str | None], bool]:
    """For transports (the HTTP bridge): a function of the `Authorization` header value
    that says whether the request may proceed. Always True when auth is off."""
    return token_auth(config, environ).check


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for k, v in details.invocation_metadata or ():
        if k == key:
            return v if isinstance(v, str) else None
    return None


def _service_of(method: str) -> str:
    return method.lstrip("/").split("/", 1)[0]


def _refusing_handler(handler: grpc.RpcMethodHandler, method: str,
                      on_refused: Callable[[str, grpc.StatusCode], None]) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call UNAUTHENTICATED
    without reading (or deserializing) anything the caller sent."""

    async def refuse(_request, context: grpc.aio.ServicerContext):
        on_refused(method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED)
        log.warning("refused %s: %s", method, MESSAGE, extra={"method": method, "peer": context.peer(),
                                                              "code": "UNAUTHENTICATED"})
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)

    async def refuse_stream(_request, context: grpc.aio.ServicerContext):
        await refuse(_request, context)
        yield  # pragma: no cover - makes this an async generator; abort raises first

    # raw bytes in, nothing out: skip (de)serialization entirely
    return handler_like(handler, refuse_stream if handler.response_streaming else refuse, None, None)


def handler_like(handler: grpc.RpcMethodHandler, behavior, request_deserializer,
                 response_serializer) -> grpc.RpcMethodHandler:
    """A method handler of the same streaming kind as `handler`, running `behavior`
    (interceptors that replace or wrap a method build their handler with this)."""
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(behavior, request_deserializer, response_serializer)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for every RPC without a valid bearer token, except OPEN_SERVICES."""

    def __init__(self, auth: TokenAuth,
                 on_refused: Callable[[str, grpc.StatusCode], None] | None = None) -> None:
        self.auth = auth
        self._on_refused = on_refused or (lambda method, code: None)  # e.g. count in metrics

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or _service_of(details.method) in OPEN_SERVICES:
            return handler
        if self.auth.check(_metadata_value(details, "authorization")):
            return handler
        return _refusing_handler(handler, details.method, self._on_refused)
