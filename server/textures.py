"""Turn generated RGBA arrays into texture bytes: resize, row order, PNG / raw / WebP,
then SHA-256 and chunking; and which filter a request gets on a model (`resolve_filter`).

Encoding is CPU work, so the service runs `encode` in a thread pool, off the event loop.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from moeavatar.v1 import avatar_pb2 as pb

from .png import encode_png

CHUNK_BYTES = 1 << 20  # 1 MiB: every message stays far below gRPC's 4 MB default limit

FILTERS = {
    pb.RESIZE_FILTER_NEAREST: Image.Resampling.NEAREST,
    pb.RESIZE_FILTER_BILINEAR: Image.Resampling.BILINEAR,
    pb.RESIZE_FILTER_BICUBIC: Image.Resampling.BICUBIC,
    pb.RESIZE_FILTER_LANCZOS: Image.Resampling.LANCZOS,
    # The image is already the upscaler's output (service.py); Lanczos takes it to the exact size.
    pb.RESIZE_FILTER_MODEL: Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class OutputSpec:
    """Validated output options (validation.py fills in the defaults)."""

    format: int = pb.TEXTURE_FORMAT_PNG
    size: int = 0  # 0 = native
    filter: int = pb.RESIZE_FILTER_UNSPECIFIED  # the model's default (resolve_filter)
    row_order: int = pb.ROW_ORDER_TOP_DOWN


@dataclass(frozen=True)
class EncodedTexture:
    data: bytes
    width: int
    height: int
    format: int
    row_order: int
    resize_filter: int  # RESIZE_FILTER_UNSPECIFIED when not resampled
    sha256: bytes


def resolve_filter(spec: OutputSpec, native: int, upscaled: int | None) -> OutputSpec:
    """The filter a request gets on a model of `native` px with an upscaler to `upscaled` px
    (None: none): MODEL for sizes above native where there is an upscaler (the default
    there), LANCZOS where MODEL or the default cannot apply; an explicit filter stays."""
    if spec.filter not in (pb.RESIZE_FILTER_UNSPECIFIED, pb.RESIZE_FILTER_MODEL):
        return spec
    use_model = bool(upscaled) and spec.size > native
    return replace(spec, filter=pb.RESIZE_FILTER_MODEL if use_model else pb.RESIZE_FILTER_LANCZOS)


def encode(image: np.ndarray, spec: OutputSpec) -> EncodedTexture:
    """uint8 [H, W, 4] top-down RGBA -> texture bytes as the client asked. With filter MODEL
    `image` is already the upscaler's output (resolve_filter; service.py)."""
    applied_filter = spec.filter if spec.filter == pb.RESIZE_FILTER_MODEL else pb.RESIZE_FILTER_UNSPECIFIED
    pixels = np.ascontiguousarray(image)
    if spec.size and spec.size != image.shape[0]:
        flt = spec.filter or pb.RESIZE_FILTER_LANCZOS  # unresolved default: Lanczos, as on a model without an upscaler
        pixels = np.asarray(Image.fromarray(pixels, mode="RGBA").resize((spec.size, spec.size), FILTERS[flt]))
        applied_filter = flt
    if spec.format == pb.TEXTURE_FORMAT_RGBA8:
        rows = pixels[::-1] if spec.row_order == pb.ROW_ORDER_BOTTOM_UP else pixels
        data = np.ascontiguousarray(rows).tobytes()
    elif spec.format == pb.TEXTURE_FORMAT_WEBP:
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="RGBA").save(buf, "WEBP", lossless=True, exact=True, quality=80)
        data = buf.getvalue()
    else:
        data = encode_png(pixels)  # server/png.py: one filter, zlib-ng level 1 run-length
    return EncodedTexture(data=data, width=pixels.shape[1], height=pixels.shape[0], format=spec.format,
                          row_order=spec.row_order, resize_filter=applied_filter,
                          sha256=hashlib.sha256(data).digest())


def chunks(index: int, data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.TextureChunk]:
    """Split texture bytes into TextureChunk messages (at least one, even when empty)."""
    offsets = range(0, max(len(data), 1), chunk_bytes)
    for offset in offsets:
        yield pb.TextureChunk(texture_index=index, offset=offset, data=data[offset:offset + chunk_bytes],
                              last=offset + chunk_bytes >= len(data))
