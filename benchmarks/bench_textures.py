"""Per-avatar CPU cost of texture encoding and bytes on the wire, for deploy/CAPACITY.md.

    python benchmarks/bench_textures.py --models models [--avatars 32] [--repeats 5] [--json out.json]

Generates `--avatars` real avatars with the bundle (ONNX Runtime, CPU), then times
`server.textures.encode` (the function the service runs in its encode thread pool) per
avatar for PNG / WebP / raw RGBA8 at the native size and at 256 px the way the server makes
it (the bundle's upscaler where it has one, else Lanczos; the upscaler's own time is
bench_models.py's),
single-threaded, as CPU time of the encoding thread (`time.thread_time`, so a busy shared
machine inflates it far less than wall time; wall time is reported beside it). Then one
real Generate call per case through an in-process server gives the gRPC payload of a
one-avatar stream: every message's protobuf size plus the 5-byte gRPC frame header
(HTTP/2 and TLS framing add a little more); "overhead" is that minus the texture bytes.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

FORMATS = ("png", "webp", "rgba")


async def _avatars(models: Path, n: int):
    from moe_avatar.bundle import find_bundles
    from moe_avatar.server.metrics import Metrics
    from moe_avatar.server.pipeline import ModelPipeline
    from moe_avatar.server.runtime import resolve_device

    bundle = find_bundles(models)[0]
    pool = concurrent.futures.ThreadPoolExecutor(3)
    pipe = ModelPipeline(bundle, resolve_device("cpu", bundle.path("generator")), pool, Metrics(), max_batch=64,
                         max_wait_s=0.0, max_queue=1024, text_cache_size=16)
    pipe.start()
    try:
        avatars = await pipe.generate_avatars("pink twin tails, cat ears", 1, n, 0.7)
        images = np.stack([a.image for a in avatars])
        upscaled = await pipe.upscale(images) if bundle.upscaled_resolution else None
    finally:
        await pipe.stop()
    return bundle, images, upscaled


async def _wire_bytes(models: Path, fmt: str, size: int) -> tuple[int, int]:
    """(gRPC payload bytes of one Generate(count=1) stream, framing included; its texture bytes)."""
    import grpc

    from moe_avatar.server.config import ServerConfig
    from moe_avatar.server.main import AvatarServer
    from moe_avatar_client.client import output_options
    from moeavatar.v1 import avatar_pb2 as pb
    from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

    server = AvatarServer(ServerConfig(models=models, host="127.0.0.1", port=0, device="cpu", log_level="ERROR"))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AvatarServiceStub(channel)
            request = pb.GenerateRequest(prompt="pink twin tails, cat ears", seed=1, output=output_options(fmt, size))
            messages = [m async for m in stub.Generate(request, timeout=60)]
            texture = sum(m.texture.total_bytes for m in messages if m.WhichOneof("event") == "texture")
            return sum(m.ByteSize() + 5 for m in messages), texture
    finally:
        await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    from moe_avatar.server import textures
    from moeavatar.v1 import avatar_pb2 as pb

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--avatars", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 256], help="0 = native")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    bundle, native_images, upscaled = asyncio.run(_avatars(a.models, a.avatars))
    images = native_images
    native = native_images[0].shape[0]
    kinds = {"png": pb.TEXTURE_FORMAT_PNG, "webp": pb.TEXTURE_FORMAT_WEBP, "rgba": pb.TEXTURE_FORMAT_RGBA8}
    rows = []
    for size in a.sizes:
        for fmt in FORMATS:
            spec = textures.resolve_filter(textures.OutputSpec(format=kinds[fmt], size=size), native,
                                           bundle.upscaled_resolution)
            images = upscaled if spec.filter == pb.RESIZE_FILTER_MODEL else native_images
            textures.encode(images[0], spec)  # warm-up
            cpu, wall = [], []
            for _ in range(a.repeats):
                c0, t0 = time.thread_time(), time.perf_counter()
                encoded = [textures.encode(img, spec) for img in images]
                cpu.append((time.thread_time() - c0) / len(images))
                wall.append((time.perf_counter() - t0) / len(images))
            texture_bytes = statistics.mean(len(e.data) for e in encoded)
            wire, wire_texture = asyncio.run(_wire_bytes(a.models, fmt, size))
            px = size or native
            rows.append({"format": fmt, "size": px, "filter": pb.ResizeFilter.Name(spec.filter),
                         "encode_cpu_ms": statistics.median(cpu) * 1000,
                         "encode_wall_ms": statistics.median(wall) * 1000, "texture_bytes": texture_bytes,
                         "stream_bytes": wire, "stream_overhead_bytes": wire - wire_texture})
            print(f"{fmt:>5} {px:>4} px: {rows[-1]['encode_cpu_ms']:.3f} CPU ms/avatar, "
                  f"{texture_bytes / 1024:.1f} KiB texture", flush=True)

    print(f"\nbundle {bundle.name} {bundle.version}, {a.avatars} avatars x {a.repeats} repeats, one thread")
    print(f"{'format':>6} | {'px':>4} | {'encode CPU ms':>13} | {'wall ms':>8} | {'texture KiB (mean)':>18} | "
          f"{'stream overhead B':>17}")
    for r in rows:
        print(f"{r['format']:>6} | {r['size']:>4} | {r['encode_cpu_ms']:>13.3f} | {r['encode_wall_ms']:>8.3f} | "
              f"{r['texture_bytes'] / 1024:>18.1f} | {r['stream_overhead_bytes']:>17}")
    report = {"date": time.strftime("%Y-%m-%d"), "bundle": f"{bundle.name} {bundle.version}", "rows": rows}
    print(json.dumps(report))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
