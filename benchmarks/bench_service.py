"""End-to-end service benchmark: gRPC path vs the in-process pipeline, side by side in one run.

    python benchmarks/bench_service.py --models models [--calls 50] [--concurrency 1 32] [--json out.json]

For each concurrency: the in-process pipeline (prompt -> text encoder -> generator -> CLIP
score -> PNG bytes, no gRPC) in this process, then the same request through a real
`moe-avatar-server` subprocess with a grpc.aio load generator in this process. Reports
p50/p90/p99 latency and avatars/s for both, and the gRPC/in-process ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "pink twin tails, cat ears"


def _pct(lat: list[float], q: int) -> float:
    return statistics.quantiles(lat, n=100)[q - 1] * 1000 if len(lat) > 1 else lat[0] * 1000


async def _drive(one, calls: int, concurrency: int) -> dict[str, float]:
    """Closed loop: `concurrency` workers issue `calls` requests in all."""
    for i in range(5):
        await one(10_000 + i)  # warm-up
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def timed(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            await one(i)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(calls)))
    wall = time.perf_counter() - t0
    return {"p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99), "avatars_per_s": calls / wall}


async def in_process(models: Path, calls: int, concurrency: int, max_batch: int) -> dict[str, float]:
    from server import textures
    from server.bundle import find_bundles
    from server.metrics import Metrics
    from server.pipeline import ModelPipeline
    from server.runtime import resolve_device

    bundle = find_bundles(models)[0]
    runner = concurrent.futures.ThreadPoolExecutor(3)
    encoder = concurrent.futures.ThreadPoolExecutor(2)
    pipe = ModelPipeline(bundle, resolve_device("cpu", bundle.path("generator")), runner, Metrics(), max_batch=max_batch,
                         max_wait_s=0.005, max_queue=4096, text_cache_size=1024)
    pipe.start()
    loop = asyncio.get_running_loop()

    async def one(seed: int) -> None:
        avatars = await pipe.generate_avatars(PROMPT, seed, 1, 0.7)
        await loop.run_in_executor(encoder, textures.encode, avatars[0].image, textures.OutputSpec())

    try:
        return await _drive(one, calls, concurrency)
    finally:
        await pipe.stop()


async def through_grpc(target: str, calls: int, concurrency: int) -> dict[str, float]:
    from moeavatar.v1 import avatar_pb2 as pb
    from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AvatarServiceStub(channel)

        async def one(seed: int) -> None:
            async for _ in stub.Generate(pb.GenerateRequest(prompt=PROMPT, seed=seed), timeout=60):
                pass

        return await _drive(one, calls, concurrency)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--calls", type=int, default=200, help="requests per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "server.main", "--models", str(a.models), "--host", "127.0.0.1",
                               "--port", str(port), "--device", "cpu", "--max-batch", str(a.max_batch), "--log-level", "WARNING"],
                              cwd=ROOT)
    rows = []
    try:
        target = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=60)
        for c in a.concurrency:
            print(f"concurrency {c} ...", flush=True)
            local = asyncio.run(in_process(a.models, a.calls, c, a.max_batch))
            remote = asyncio.run(through_grpc(target, a.calls, c))
            rows.append({"concurrency": c, "in_process": local, "grpc": remote})
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n{'conc':>5} | {'in-process p50/p99 ms':>22} {'avatars/s':>10} | {'gRPC p50/p99 ms':>18} {'avatars/s':>10} | "
          f"{'p50 ratio':>9} {'thru ratio':>10}")
    for r in rows:
        lo, gr = r["in_process"], r["grpc"]
        print(f"{r['concurrency']:>5} | {lo['p50_ms']:>10.1f} / {lo['p99_ms']:>9.1f} {lo['avatars_per_s']:>10.1f} | "
              f"{gr['p50_ms']:>8.1f} / {gr['p99_ms']:>7.1f} {gr['avatars_per_s']:>10.1f} | "
              f"{gr['p50_ms'] / lo['p50_ms']:>8.2f}x {gr['avatars_per_s'] / lo['avatars_per_s']:>9.2f}x")
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
