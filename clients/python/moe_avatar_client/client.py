"""`AvatarClient`: a small synchronous client for AvatarService.

* every call has a deadline (`timeout`, seconds), covering its retries;
* UNAVAILABLE is retried with exponential backoff plus random jitter (so many clients
  do not come back in lock-step); other errors are raised at once;
* a Generate / Interpolate stream that breaks with UNAVAILABLE after some textures
  arrived is resumed: the missing textures are requested again by seed (Generate
  without rerank asks for exactly the missing seeds; otherwise the same request is sent
  again and the textures already received are skipped, after checking they match);
* texture chunks are reassembled and their SHA-256 checked (`ChecksumError`);
* TLS (`tls_ca`), mutual TLS (`tls_cert` + `tls_key`) and bearer tokens (`token`).

    with AvatarClient("localhost:50051") as c:
        result = c.generate("pink hair, twin tails", count=4, seed=7)
        for tex in result.textures:
            open(f"{tex.seed}.png", "wb").write(tex.data)
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from moe_avatar_client.balancing import channel_args
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

FORMATS = {"png": pb.TEXTURE_FORMAT_PNG, "rgba": pb.TEXTURE_FORMAT_RGBA8, "webp": pb.TEXTURE_FORMAT_WEBP}
FILTERS = {"nearest": pb.RESIZE_FILTER_NEAREST, "bilinear": pb.RESIZE_FILTER_BILINEAR,
           "bicubic": pb.RESIZE_FILTER_BICUBIC, "lanczos": pb.RESIZE_FILTER_LANCZOS,
           "model": pb.RESIZE_FILTER_MODEL}  # the model's upscaler above native where it has one, else Lanczos
ROW_ORDERS = {"top-down": pb.ROW_ORDER_TOP_DOWN, "bottom-up": pb.ROW_ORDER_BOTTOM_UP}


class ChecksumError(RuntimeError):
    """A texture's bytes do not match the SHA-256 (or size) in its header."""


class ResumeError(RuntimeError):
    """A broken stream could not be resumed consistently (e.g. the model version changed)."""


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
    resumes: int = 0  # how many times a broken stream was resumed
    reading: pb.PromptReading | None = None  # what the model read from the prompt (models that say)


def reading_summary(reading: pb.PromptReading | None) -> str:
    """One line: the families the prompt states, with value and probability, then the open ones
    ("random"), e.g. `hair_color=pink (0.98), hairstyle=twin tails (0.95); random: bangs, eye_color`."""
    if reading is None or not reading.families:
        return "the model does not report what it read"
    stated = [f"{f.family}={f.value} ({f.value_probability:.2f})" for f in reading.families if f.stated]
    open_ = [f.family for f in reading.families if not f.stated]
    return (", ".join(stated) or "nothing stated") + ("; random: " + ", ".join(open_) if open_ else "")


def output_options(format: str = "png", size: int = 0, filter: str = "model",
                   row_order: str = "top-down") -> pb.OutputOptions:
    return pb.OutputOptions(format=FORMATS[format], size=size, filter=FILTERS[filter],
                            row_order=ROW_ORDERS[row_order])


class StreamAssembler:
    """Turns a GenerateResponse stream into a GenerateResult, checking every texture.

    Resuming (see AvatarClient): after `resume(shift)` the next stream's texture indices
    are moved up by `shift` (a re-request that starts at a later seed), textures already
    held are checked against the new header's SHA-256 and skipped, and a repeated
    Started must name the same model and version."""

    def __init__(self, on_progress: Callable[[pb.GenerateResponse], None] | None = None) -> None:
        self.result = GenerateResult()
        self._on_progress = on_progress
        self._header: pb.TextureHeader | None = None
        self._parts: list[bytes] = []
        self._shift = 0
        self._skipping: int | None = None  # index of a texture held already, being re-sent
        self.started = False
        self.expected = 0  # Started.texture_count
        self.done = False

    def resume(self, shift: int) -> None:
        """A new stream follows; a texture cut off mid-way is dropped."""
        self._header, self._parts, self._skipping, self._shift = None, [], None, shift
        self.result.resumes += 1

    def feed(self, message: pb.GenerateResponse) -> None:
        kind = message.WhichOneof("event")
        if kind == "started":
            s = message.started
            if not self.started:
                self.result.request_id, self.result.model, self.result.model_version = (
                    s.request_id, s.model, s.model_version)
                self.result.seed, self.result.psi = s.seed, s.psi
                self.started, self.expected = True, s.texture_count
            elif (s.model, s.model_version) != (self.result.model, self.result.model_version):
                raise ResumeError(f"resumed stream came from model {s.model} {s.model_version}, not "
                                  f"{self.result.model} {self.result.model_version}")
        elif kind == "texture":
            header = message.texture
            header.index += self._shift
            if header.index < len(self.result.textures):  # held already: must be the same bytes
                if hashlib.sha256(self.result.textures[header.index].data).digest() != header.sha256:
                    raise ResumeError(f"texture {header.index} differs from the one received before the "
                                      "stream broke")
                self._skipping = header.index
                return
            self._skipping = None
            self._header, self._parts = header, []
        elif kind == "chunk":
            message.chunk.texture_index += self._shift
            if message.chunk.texture_index == self._skipping:
                return
            self._add_chunk(message.chunk)
        elif kind == "reading":
            if self.result.reading is None:  # a resumed stream reads the same prompt again
                self.result.reading = message.reading
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


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class AvatarClient:
    def __init__(self, target: str = "localhost:50051", *, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, token: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.2, max_backoff: float = 5.0, jitter: float = 0.5,
                 options: list[tuple[str, object]] | None = None) -> None:
        """`tls_ca`: PEM file of the CA to trust (enables TLS; without it but with a client
        certificate, the system roots are trusted); `tls_cert` + `tls_key`: this client's PEM
        certificate and key for mutual TLS; `token`: sent as `authorization: Bearer <token>`.
        `timeout`: deadline of each call in seconds, retries included. Retry i sleeps
        min(max_backoff, backoff * 2**i) * (1 + U(0, jitter)) seconds.
        `target` may list replicas ("10.0.0.1:50051,10.0.0.2:50051") or be "dns:///NAME:PORT":
        calls are then spread with round_robin (moe_avatar_client/balancing.py)."""
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key must be given together (mutual TLS)")
        target, options = channel_args(target, options)
        if tls_ca or tls_cert:
            creds = grpc.ssl_channel_credentials(root_certificates=_read(tls_ca), private_key=_read(tls_key),
                                                 certificate_chain=_read(tls_cert))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.AvatarServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: list[tuple[str, str]] = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.jitter = jitter

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AvatarClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- retry helpers ------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (timeout or self.timeout)

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(0.001, deadline - time.monotonic())

    def _may_retry(self, error: grpc.RpcError, attempt: int, deadline: float) -> bool:
        """Only UNAVAILABLE (server down, restarting, connection lost) is worth retrying;
        sleeps the backoff with jitter when it is."""
        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
            return False
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (1 + random.uniform(0, self.jitter))
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True

    def _unary(self, method, request, timeout: float | None):
        deadline = self._deadline(timeout)
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self._remaining(deadline), metadata=self.metadata)
            except grpc.RpcError as e:
                if not self._may_retry(e, attempt, deadline):
                    raise

    def _collect(self, method, request, timeout: float | None, on_progress,
                 resume_request: Callable[[GenerateResult], tuple[object, int]]) -> GenerateResult:
        """Run a texture stream to its end. UNAVAILABLE before anything arrived: send the
        request again. After Started: send `resume_request(result so far)` -> (request,
        index shift) for what is missing."""
        deadline = self._deadline(timeout)
        assembler = StreamAssembler(on_progress)
        current = request
        for attempt in range(self.retries + 1):
            try:
                for message in method(current, timeout=self._remaining(deadline), metadata=self.metadata):
                    assembler.feed(message)
                return assembler.result
            except grpc.RpcError as e:
                if assembler.started and len(assembler.result.textures) >= assembler.expected:
                    return assembler.result  # every texture arrived; only Done was lost
                if not self._may_retry(e, attempt, deadline):
                    raise
                if assembler.started:
                    current, shift = resume_request(assembler.result)
                    assembler.resume(shift)
        raise AssertionError("unreachable")  # the loop returns or raises

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

        def resume(result: GenerateResult) -> tuple[pb.GenerateRequest, int]:
            """Same model version, base seed and psi as the broken stream. Without rerank,
            texture i is seed + i: ask for exactly the missing seeds. With rerank the best
            `count` of all candidates are needed again: same request, skip what we hold."""
            again = pb.GenerateRequest()
            again.CopyFrom(request)
            again.model, again.model_version, again.psi = result.model, result.model_version, result.psi
            held = len(result.textures)
            if max(rerank, 1) == 1:
                again.seed, again.count = result.seed + held, max(count, 1) - held
                return again, held
            again.seed = result.seed
            return again, 0

        return self._collect(self.stub.Generate, request, timeout, on_progress, resume)

    def interpolate(self, start: tuple[str, int], end: tuple[str, int], *, frames: int = 8,
                    psi: float | None = None, output: pb.OutputOptions | None = None, model: str = "",
                    model_version: str = "", timeout: float | None = None,
                    on_progress: Callable[[pb.GenerateResponse], None] | None = None) -> GenerateResult:
        request = pb.InterpolateRequest(
            start=pb.Endpoint(prompt=start[0], seed=start[1]), end=pb.Endpoint(prompt=end[0], seed=end[1]),
            frames=frames, output=output or pb.OutputOptions(), model=model, model_version=model_version)
        if psi is not None:
            request.psi = psi

        def resume(result: GenerateResult) -> tuple[pb.InterpolateRequest, int]:
            """Frames are deterministic: the same request again, skipping the frames held."""
            again = pb.InterpolateRequest()
            again.CopyFrom(request)
            again.model, again.model_version, again.psi = result.model, result.model_version, result.psi
            return again, 0

        return self._collect(self.stub.Interpolate, request, timeout, on_progress, resume)

    def encode_text(self, prompt: str, *, model: str = "", model_version: str = "",
                    timeout: float | None = None) -> list[float]:
        request = pb.EncodeTextRequest(prompt=prompt, model=model, model_version=model_version)
        return list(self._unary(self.stub.EncodeText, request, timeout).embedding)

    def read_prompt(self, prompt: str, *, model: str = "", model_version: str = "",
                    timeout: float | None = None) -> pb.PromptReading | None:
        """What the model reads from `prompt` (EncodeText's reading), or None for a model that does not say."""
        request = pb.EncodeTextRequest(prompt=prompt, model=model, model_version=model_version)
        response = self._unary(self.stub.EncodeText, request, timeout)
        return response.reading if response.HasField("reading") else None

    def model_info(self, model: str = "", model_version: str = "", timeout: float | None = None) -> pb.ModelInfo:
        return self._unary(self.stub.GetModelInfo, pb.GetModelInfoRequest(model=model, model_version=model_version),
                           timeout)

    def list_models(self, timeout: float | None = None) -> pb.ListModelsResponse:
        return self._unary(self.stub.ListModels, pb.ListModelsRequest(), timeout)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """"SERVING", "NOT_SERVING", ... for the whole server ("") or one service."""
        response = self._unary(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
