"""Lossless PNG options by encode time against size, on the textures the server makes.

    python benchmarks/bench_png.py --models models [--avatars 32] [--repeats 3] [--sizes 0 256] [--json out.json]

Generates `--avatars` avatars with the bundle (the server's own pipeline, CPU) at each size
the way the server makes it (256 px: the bundle's upscaler where it has one, else Lanczos),
then encodes each with every option, checks the PNG decodes to the same pixels, and reports
CPU ms per avatar (one thread, `time.thread_time`) and mean KiB. Options: Pillow (which
tries five filters per row) at zlib levels 6 / 3 / 1 and level 1 with zlib's run-length
strategy (Z_RLE); a minimal writer with one filter for every row (numpy) through the
standard library's zlib; and the server's writer (`server/png.py`: the up filter, zlib-ng).
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_textures import _avatars  # noqa: E402

from moe_avatar.server.png import encode_png, png_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_filter_png(image: np.ndarray, filter_type: int, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """RGBA8 PNG with the same filter on every row (0 none, 1 sub, 2 up): no filter search."""
    h, w, _ = image.shape
    rows = image.reshape(h, w * 4)
    filtered = rows.copy()
    if filter_type == 1:
        filtered[:, 4:] = rows[:, 4:] - rows[:, :-4]
    elif filter_type == 2:
        filtered[1:] = rows[1:] - rows[:-1]
    raw = np.empty((h, w * 4 + 1), np.uint8)
    raw[:, 0], raw[:, 1:] = filter_type, filtered
    z = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return png_file(w, h, z.compress(raw.tobytes()) + z.flush())


def pillow_png(image: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buf, "PNG", **options)
    return buf.getvalue()


def options() -> dict[str, callable]:
    return {
        "pillow level 6": lambda im: pillow_png(im, compress_level=6),
        "pillow level 3": lambda im: pillow_png(im, compress_level=3),
        "pillow level 1": lambda im: pillow_png(im, compress_level=1),
        "pillow level 1 Z_RLE": lambda im: pillow_png(im, compress_level=1, compress_type=zlib.Z_RLE),
        "one filter: up, level 1": lambda im: one_filter_png(im, 2, 1),
        "one filter: up, level 1 Z_RLE": lambda im: one_filter_png(im, 2, 1, zlib.Z_RLE),
        "one filter: sub, level 1 Z_RLE": lambda im: one_filter_png(im, 1, 1, zlib.Z_RLE),
        "server: up, zlib-ng level 1 Z_RLE": encode_png,
    }


def measure(images: list[np.ndarray], encode, repeats: int) -> tuple[float, float]:
    """(median CPU ms per image, mean KiB), after checking the round trip is lossless."""
    for im in images[:4]:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode(im))).convert("RGBA")), im), "not lossless"
    cpu = []
    for _ in range(repeats):
        t0 = time.thread_time()
        data = [encode(im) for im in images]
        cpu.append((time.thread_time() - t0) / len(images))
    return statistics.median(cpu) * 1000, statistics.mean(len(d) for d in data) / 1024


def main(argv: list[str] | None = None) -> int:
    import asyncio

    from moe_avatar.server import textures

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / "models", help="model repository (its first bundle is used)")
    p.add_argument("--avatars", type=int, default=32, help="avatars to encode (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per option; the median is reported")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 256], help="texture sizes, 0 = native (default %(default)s)")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)

    bundle, native, upscaled = asyncio.run(_avatars(a.models, a.avatars))
    rows = []
    for size in a.sizes:
        spec = textures.resolve_filter(textures.OutputSpec(size=size), bundle.resolution, bundle.upscaled_resolution)
        source = upscaled if spec.filter == textures.pb.RESIZE_FILTER_MODEL else native
        images = [np.asarray(Image.fromarray(im, "RGBA").resize((size, size), Image.Resampling.LANCZOS))
                  if size and im.shape[0] != size else im for im in source]
        for name, encode in options().items():
            ms, kib = measure(images, encode, a.repeats)
            rows.append({"size": images[0].shape[0], "option": name, "cpu_ms": ms, "kib": kib})
            print(f"{rows[-1]['size']:>4} px  {name:<34} {ms:7.2f} CPU ms  {kib:7.1f} KiB", flush=True)
    print(f"\nbundle {bundle.name} {bundle.version}, {a.avatars} avatars x {a.repeats} repeats, one thread")
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "bundle": f"{bundle.name} {bundle.version}",
                                      "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
