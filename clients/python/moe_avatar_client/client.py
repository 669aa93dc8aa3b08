"""`AvatarClient`: a small synchronous client for AvatarService.

* every call has a deadline (`timeout`, seconds);
* UNAVAILABLE is retried with exponential backoff, and only before any response of a
  stream arrived (so nothing is delivered twice); other errors are raised at once;
* texture chunks are reassembled and their SHA-256 checked (`ChecksumError`).

    with AvatarClient("localhost:50051") as c:
        result = c.generate("pink twin tails, cat ears", count=4, seed=7)
        for tex in result.textures:
            open(f"{tex.seed}.png", "wb").write(tex.data)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

FORMATS = {"png": pb.TEXTURE_FORMAT_PNG, "rgba": pb.TEXTURE_FORMAT_RGBA8, "webp": pb.TEXTURE_FORMAT_WEBP}
FILTERS = {"nearest": pb.RESIZE_FILTER_NEAREST, "bilinear": pb.RESIZE_FILTER_BILINEAR,
           "bicubic": pb.RESIZE_FILTER_BICUBIC, "lanczos": pb.RESIZE_FILTER_LANCZOS}
ROW_ORDERS = {"top-down": pb.ROW_ORDER_TOP_DOWN, "bottom-up": pb.ROW_ORDER_BOTTOM_UP}


class ChecksumError(RuntimeError):
    """A texture's bytes do not match the SHA-256 (or size) in its header."""


@dataclass
class Texture:
    index: int
    width: int
    height: int
    format: int  # pb.TextureFormat
    row_order: int  # pb.RowOrder
    seed: int | None
    clip_score: float
    resize_filter: int
    t: float
    data: bytes


@dataclass
class GenerateResult:
    request_id: str = ""
    model: str = ""
    model_version: str = ""
    seed: int = 0
    psi: float = 0.0
    textures: list[Texture] = field(default_factory=list)
    server_seconds: float = 0.0


def output_options(format: str = "png", size: int = 0, filter: str = "lanczos",
                   row_order: str = "top-down") -> pb.OutputOptions:
    return pb.OutputOptions(format=FORMATS[format], size=size, filter=FILTERS[filter],
                            row_order=ROW_ORDERS[row_order])


class StreamAssembler:
    """Turns a GenerateResponse stream into a GenerateResult, checking every texture."""

    def __init__(self, on_progress: Callable[[pb.GenerateResponse], None] | None = None) -> None:
        self.result = GenerateResult()
        self._on_progress = on_progress
        self._header: pb.TextureHeader | None = None
        self._parts: list[bytes] = []
        self.done = False

    def feed(self, message: pb.GenerateResponse) -> None:
        kind = message.WhichOneof("event")
        if kind == "started":
            s = message.started
            self.result.request_id, self.result.model, self.result.model_version = (
                s.request_id, s.model, s.model_version)
            self.result.seed, self.result.psi = s.seed, s.psi
        elif kind == "texture":
            self._header, self._parts = message.texture, []
        elif kind == "chunk":
            self._add_chunk(message.chunk)
        elif kind == "done":
            self.result.server_seconds = message.done.elapsed_seconds
            self.done = True
        if self._on_progress is not None:
            self._on_progress(message)

    def _add_chunk(self, chunk: pb.TextureChunk) -> None:
        h = self._header
        if h is None or chunk.texture_index != h.index:
            raise ChecksumError(f"chunk for texture {chunk.texture_index} without its header")
        if chunk.offset != sum(len(p) for p in self._parts):
            raise ChecksumError(f"texture {h.index}: chunk at offset {chunk.offset} out of order")
        self._parts.append(chunk.data)
        if not chunk.last:
            return
        data = b"".join(self._parts)
        if len(data) != h.total_bytes:
            raise ChecksumError(f"texture {h.index}: got {len(data)} bytes, header says {h.total_bytes}")
        if hashlib.sha256(data).digest() != h.sha256:
            raise ChecksumError(f"texture {h.index}: sha256 of the received bytes does not match the header")
        self.result.textures.append(Texture(
            index=h.index, width=h.width, height=h.height, format=h.format, row_order=h.row_order,
            seed=h.seed if h.HasField("seed") else None, clip_score=h.clip_score, resize_filter=h.resize_filter,
            t=h.t, data=data))
        self._header = None


class AvatarClient:
    def __init__(self, target: str = "localhost:50051", *, tls_ca: str | None = None, token: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.2,
                 options: list[tuple[str, object]] | None = None) -> None:
        """`tls_ca`: PEM file of the CA to trust (enables TLS); `token`: sent as
        `authorization: Bearer <token>` on every call."""
        if tls_ca:
            with open(tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.AvatarServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: list[tuple[str, str]] = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "AvatarClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- retry helpers ------------------------------------------------------------

    def _unary(self, method, request, timeout: float | None):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)

    def _stream(self, method, request, timeout: float | None) -> Iterator:
        """Yields stream messages; retries UNAVAILABLE only while nothing was received."""
        for attempt in range(self.retries + 1):
            received = False
            try:
                for message in method(request, timeout=timeout or self.timeout, metadata=self.metadata):
                    received = True
                    yield message
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or received or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)

    # --- API ----------------------------------------------------------------------

    def generate(self, prompt: str, *, count: int = 1, seed: int | None = None, psi: float | None = None,
                 rerank: int = 1, output: pb.OutputOptions | None = None, model: str = "", model_version: str = "",
                 timeout: float | None = None,
                 on_progress: Callable[[pb.GenerateResponse], None] | None = None) -> GenerateResult:
        request = pb.GenerateRequest(prompt=prompt, count=count, rerank=rerank, output=output or pb.OutputOptions(),
                                     model=model, model_version=model_version)
        if seed is not None:
            request.seed = seed
        if psi is not None:
            request.psi = psi
        return self._assemble(self._stream(self.stub.Generate, request, timeout), on_progress)

    def interpolate(self, start: tuple[str, int], end: tuple[str, int], *, frames: int = 8,
                    psi: float | None = None, output: pb.OutputOptions | None = None, model: str = "",
                    model_version: str = "", timeout: float | None = None,
                    on_progress: Callable[[pb.GenerateResponse], None] | None = None) -> GenerateResult:
        request = pb.InterpolateRequest(
            start=pb.Endpoint(prompt=start[0], seed=start[1]), end=pb.Endpoint(prompt=end[0], seed=end[1]),
            frames=frames, output=output or pb.OutputOptions(), model=model, model_version=model_version)
        if psi is not None:
            request.psi = psi
        return self._assemble(self._stream(self.stub.Interpolate, request, timeout), on_progress)

    @staticmethod
    def _assemble(stream: Iterator[pb.GenerateResponse], on_progress) -> GenerateResult:
        assembler = StreamAssembler(on_progress)
        for message in stream:
            assembler.feed(message)
        return assembler.result

    def encode_text(self, prompt: str, *, model: str = "", model_version: str = "",
                    timeout: float | None = None) -> list[float]:
        request = pb.EncodeTextRequest(prompt=prompt, model=model, model_version=model_version)
        return list(self._unary(self.stub.EncodeText, request, timeout).embedding)

    def model_info(self, model: str = "", model_version: str = "", timeout: float | None = None) -> pb.ModelInfo:
        return self._unary(self.stub.GetModelInfo, pb.GetModelInfoRequest(model=model, model_version=model_version),
                           timeout)

    def list_models(self, timeout: float | None = None) -> pb.ListModelsResponse:
        return self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """"SERVING", "NOT_SERVING", ... for the whole server ("") or one service."""
        response = self._unary(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
