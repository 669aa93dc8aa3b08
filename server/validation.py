"""Check requests before any work is queued.

A bad request fails with INVALID_ARGUMENT; the status message names every bad field
and its limit, and the rich status details carry a google.rpc.BadRequest with one
FieldViolation per field (grpcio-status), so clients can highlight the right UI control.
"""

from __future__ import annotations

import math
import secrets
import unicodedata
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from moe_avatar.server.textures import OutputSpec
from moeavatar.v1 import avatar_pb2 as pb

MAX_PROMPT_CHARS = 1000
MAX_PROMPT_BYTES = 3000  # UTF-8: 1000 CJK characters fit (3 bytes each), 750 four-byte emoji
MAX_COUNT = 16
MAX_RERANK = 8
MAX_CANDIDATES = 64
MIN_PSI, MAX_PSI, DEFAULT_PSI = 0.0, 2.0, 0.7
MIN_SIZE, MAX_SIZE = 16, 1024
MAX_SEED = 2**63 - 1
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 2, 64, 8
MAX_NAME_CHARS = 128
# Unicode categories that draw something: letters, marks, numbers, punctuation, symbols
# (not control Cc, format Cf such as zero-width space and BOM, separators Z*).
VISIBLE_CATEGORIES = frozenset("LMNPS")


class RequestError(Exception):
    """Ends one request with a gRPC status; the server goes on serving everyone else."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 violations: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []

    def to_status(self) -> grpc.Status:
        """A grpc.Status with google.rpc.BadRequest details when fields were wrong."""
        details = []
        if self.violations:
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations])
            detail = any_pb2.Any()
            detail.Pack(bad)
            details.append(detail)
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.message,
                                                      details=details))


class _Violations:
    """Collects every problem so the client hears about all bad fields at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def raise_if_any(self) -> None:
        if self.items:
            message = "; ".join(f"{f}: {d}" for f, d in self.items)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, message, self.items)


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    count: int
    seed: int
    psi: float
    rerank: int
    output: OutputSpec
    model: str
    model_version: str


@dataclass(frozen=True)
class InterpolateParams:
    start_prompt: str
    start_seed: int
    end_prompt: str
    end_seed: int
    frames: int
    psi: float
    output: OutputSpec
    model: str
    model_version: str


def _prompt(field: str, value: str, v: _Violations) -> str:
    text = value.strip()
    if not text:
        v.add(field, "must not be empty")
    elif not any(unicodedata.category(c)[0] in VISIBLE_CATEGORIES for c in text):
        v.add(field, "must contain at least one visible character (only control, format or "
                     "zero-width characters were sent)")
    elif len(text) > MAX_PROMPT_CHARS:
        v.add(field, f"must be at most {MAX_PROMPT_CHARS} characters (got {len(text)})")
    elif (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_PROMPT_BYTES:
        v.add(field, f"must be at most {MAX_PROMPT_BYTES} bytes of UTF-8 (got {size})")
    return text


def _seed(field: str, value: int, v: _Violations) -> int:
    if value > MAX_SEED:
        v.add(field, f"must be 0..{MAX_SEED} (2^63-1) (got {value})")
    return value


def _psi(field: str, has: bool, value: float, v: _Violations) -> float:
    if not has:
        return DEFAULT_PSI
    if not math.isfinite(value) or not MIN_PSI <= value <= MAX_PSI:
        v.add(field, f"must be {MIN_PSI:g}..{MAX_PSI:g} (got {value:g})")
    return float(value)


def _model(prefix: str, model: str, version: str, v: _Violations) -> None:
    for field, value in ((f"{prefix}model", model), (f"{prefix}model_version", version)):
        if len(value) > MAX_NAME_CHARS:
            v.add(field, f"must be at most {MAX_NAME_CHARS} characters")


def _output(field: str, opts: pb.OutputOptions, v: _Violations) -> OutputSpec:
    fmt = opts.format or pb.TEXTURE_FORMAT_PNG
    if fmt not in pb.TextureFormat.values():
        v.add(f"{field}.format", f"unknown value {fmt}; use PNG, RGBA8 or WEBP")
    size = opts.size
    if size != 0 and not MIN_SIZE <= size <= MAX_SIZE:
        v.add(f"{field}.size", f"must be 0 (native) or {MIN_SIZE}..{MAX_SIZE} (got {size})")
    flt = opts.filter  # UNSPECIFIED: the model's default, chosen once the model is known (textures.resolve_filter)
    if flt not in pb.ResizeFilter.values():
        v.add(f"{field}.filter", f"unknown value {flt}; use NEAREST, BILINEAR, BICUBIC, LANCZOS or MODEL")
    row = opts.row_order or pb.ROW_ORDER_TOP_DOWN
    if row not in pb.RowOrder.values():
        v.add(f"{field}.row_order", f"unknown value {row}; use TOP_DOWN or BOTTOM_UP")
    elif row == pb.ROW_ORDER_BOTTOM_UP and fmt != pb.TEXTURE_FORMAT_RGBA8:
        v.add(f"{field}.row_order", "BOTTOM_UP applies only to format RGBA8 (PNG and WebP are always top-down)")
    return OutputSpec(format=fmt, size=size, filter=flt, row_order=row)


def generate_params(req: pb.GenerateRequest, prefix: str = "") -> GenerateParams:
    v = _Violations()
    prompt = _prompt(f"{prefix}prompt", req.prompt, v)
    count = req.count or 1
    if not 1 <= count <= MAX_COUNT:
        v.add(f"{prefix}count", f"must be 1..{MAX_COUNT} (got {count})")
    rerank = req.rerank or 1
    if not 1 <= rerank <= MAX_RERANK:
        v.add(f"{prefix}rerank", f"must be 1..{MAX_RERANK} (got {rerank})")
    elif count * rerank > MAX_CANDIDATES and count <= MAX_COUNT:
        v.add(f"{prefix}rerank", f"count * rerank must be at most {MAX_CANDIDATES} (got {count} * {rerank})")
    seed = _seed(f"{prefix}seed", req.seed, v) if req.HasField("seed") else secrets.randbelow(2**31)
    last = seed + count * rerank - 1  # every candidate's seed must be one a client can send back
    if seed <= MAX_SEED < last and count <= MAX_COUNT and rerank <= MAX_RERANK:
        v.add(f"{prefix}seed", f"seed + count * rerank - 1 must be at most {MAX_SEED} (2^63-1) "
                               f"(got {seed} + {count} * {rerank} - 1)")
    psi = _psi(f"{prefix}psi", req.HasField("psi"), req.psi, v)
    output = _output(f"{prefix}output", req.output, v)
    _model(prefix, req.model, req.model_version, v)
    v.raise_if_any()
    return GenerateParams(prompt=prompt, count=count, seed=seed, psi=psi, rerank=rerank, output=output,
                          model=req.model, model_version=req.model_version)


def interpolate_params(req: pb.InterpolateRequest) -> InterpolateParams:
    v = _Violations()
    start_prompt = _prompt("start.prompt", req.start.prompt, v)
    end_prompt = _prompt("end.prompt", req.end.prompt, v)
    start_seed = _seed("start.seed", req.start.seed, v)
    end_seed = _seed("end.seed", req.end.seed, v)
    frames = req.frames or DEFAULT_FRAMES
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        v.add("frames", f"must be {MIN_FRAMES}..{MAX_FRAMES} (got {frames})")
    psi = _psi("psi", req.HasField("psi"), req.psi, v)
    output = _output("output", req.output, v)
    _model("", req.model, req.model_version, v)
    v.raise_if_any()
    return InterpolateParams(start_prompt=start_prompt, start_seed=start_seed, end_prompt=end_prompt,
                             end_seed=end_seed, frames=frames, psi=psi, output=output, model=req.model,
                             model_version=req.model_version)


def model_ref(req: pb.GetModelInfoRequest) -> None:
    """The name limits every RPC applies (a long name must not come back in an error)."""
    v = _Violations()
    _model("", req.model, req.model_version, v)
    v.raise_if_any()


def text_prompt(req: pb.EncodeTextRequest) -> str:
    v = _Violations()
    prompt = _prompt("prompt", req.prompt, v)
    _model("", req.model, req.model_version, v)
    v.raise_if_any()
    return prompt

