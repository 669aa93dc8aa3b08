"""End-to-end service benchmark: gRPC path vs the in-process pipeline, batching on vs off,
side by side in one run (perf_analyzer-style: fixed concurrency, closed loop).

    python benchmarks/bench_service.py --models models [--calls 200] [--concurrency 1 4 16 64] [--json out.json]

Three servers are measured for each concurrency, in turn:
  in-process  the pipeline itself (prompt -> text encoder -> generator -> CLIP score ->
              PNG bytes) in this process, no gRPC: the cost of the work;
  gRPC        a real `moe-avatar-server` subprocess (micro-batching on, --max-batch 32),
              driven by a grpc.aio load generator in this process;
  gRPC nobatch  the same server with --max-batch 1 (micro-batching off).
Plus once: `offline`, the in-process pipeline with every request submitted at once
(the batched throughput ceiling the service is compared against).
Reports p50/p90/p99 latency, avatars/s and errors per cell, and the ratios. With
`--sizes 256`, the batched gRPC server is also measured at each of those texture sizes (PNG,
the server's default filter: the bundle's upscaler where it has one), and the per-avatar
cost relative to the native size is reported ("256px cost/native": native avatars/s over
256 px avatars/s). Two cells measured one after the other drift apart on a shared machine, so
the native and sized cells alternate `--size-rounds` times and the ratio pools them (time per
avatar summed over the rounds); each round's ratio is printed beside it.
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
    """Closed loop: `concurrency` workers issue `calls` requests in all; failures are counted."""
    for i in range(5):
        await one(10_000 + i)  # warm-up
    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)

    async def timed(i: int) -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            try:
                await one(i)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                errors += 1
                return
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(calls)))
    wall = time.perf_counter() - t0
    if not lat:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"), "avatars_per_s": 0.0, "errors": errors}
    return {"p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99),
            "avatars_per_s": len(lat) / wall, "errors": errors, "wall_s": wall, "ok": len(lat)}


async def in_process(models: Path, calls: int, concurrency: int, max_batch: int) -> dict[str, float]:
    from moe_avatar.bundle import find_bundles
    from moe_avatar.server import textures
    from moe_avatar.server.metrics import Metrics
    from moe_avatar.server.pipeline import ModelPipeline
    from moe_avatar.server.runtime import resolve_device

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


async def through_grpc(target: str, calls: int, concurrency: int, size: int = 0) -> dict[str, float]:
    from moeavatar.v1 import avatar_pb2 as pb
    from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AvatarServiceStub(channel)

        async def one(seed: int) -> None:
            request = pb.GenerateRequest(prompt=PROMPT, seed=seed, output=pb.OutputOptions(size=size))
            async for _ in stub.Generate(request, timeout=60):
                pass

        return await _drive(one, calls, concurrency)


def size_rounds(target: str, calls: int, concurrency: int, sizes: list[int], rounds: int) -> list[dict[str, dict]]:
    """Native and each size measured alternately, `rounds` times: [{"native": cell, "256": cell}, ...]."""
    out = []
    for _ in range(max(rounds, 1)):
        cells = {"native": asyncio.run(through_grpc(target, calls, concurrency))}
        cells.update({str(size): asyncio.run(through_grpc(target, calls, concurrency, size)) for size in sizes})
        out.append(cells)
    return out


def _per_avatar(rounds: list[dict[str, dict]], key: str) -> float:
    """Seconds per avatar pooled over the rounds (their wall time over the avatars they returned)."""
    return sum(x[key]["wall_s"] for x in rounds) / max(sum(x[key]["ok"] for x in rounds), 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(models: Path, max_batch: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moe_avatar.server.main", "--models", str(models), "--host", "127.0.0.1",
                               "--port", str(port), "--device", "cpu", "--max-batch", str(max_batch),
                               "--log-level", "WARNING", *extra], cwd=ROOT)
    return server, f"127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--calls", type=int, default=200, help="requests per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--server-arg", action="append", default=[], help="extra moe-avatar-server flag (repeatable)")
    p.add_argument("--sizes", type=int, nargs="*", default=[], help="also measure the batched gRPC server at these texture sizes (px)")
    p.add_argument("--size-rounds", type=int, default=3, help="native/sized cell pairs measured alternately (default %(default)s)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    servers = {"grpc": _start_server(a.models, a.max_batch, a.server_arg),
               "grpc_nobatch": _start_server(a.models, 1, a.server_arg)}
    rows = []
    try:
        for _, target in servers.values():
            grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=60)
        print("offline (all requests at once, in-process) ...", flush=True)
        offline = asyncio.run(in_process(a.models, a.calls, a.calls, a.max_batch))
        for c in a.concurrency:
            print(f"concurrency {c} ...", flush=True)
            row = {"concurrency": c, "in_process": asyncio.run(in_process(a.models, a.calls, c, a.max_batch))}
            for name, (_, target) in servers.items():
                row[name] = asyncio.run(through_grpc(target, a.calls, c))
            if a.sizes:
                row["size_rounds"] = size_rounds(servers["grpc"][1], a.calls, c, a.sizes, a.size_rounds)
                row.update({f"grpc_{size}px": row["size_rounds"][0][str(size)] for size in a.sizes})
            rows.append(row)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)

    print(f"\noffline batched in-process: {offline['avatars_per_s']:.1f} avatars/s ({a.calls} requests at once)\n")
    print(f"{'conc':>5} | {'in-process p50/p99 ms':>21} {'av/s':>7} | {'gRPC p50/p90/p99 ms':>22} {'av/s':>7} {'err':>4} | "
          f"{'no-batch p50/p99 ms':>19} {'av/s':>7} {'err':>4} | {'p50 gRPC/in-proc':>16} {'thru gRPC/offline':>17} "
          f"{'batch on/off':>12}")
    for r in rows:
        lo, gr, nb = r["in_process"], r["grpc"], r["grpc_nobatch"]
        r["ratios"] = {"p50_grpc_over_in_process": gr["p50_ms"] / lo["p50_ms"],
                       "throughput_grpc_over_offline": gr["avatars_per_s"] / offline["avatars_per_s"],
                       "throughput_batching_on_over_off": gr["avatars_per_s"] / max(nb["avatars_per_s"], 1e-9)}
        q = r["ratios"]
        print(f"{r['concurrency']:>5} | {lo['p50_ms']:>9.1f} / {lo['p99_ms']:>9.1f} {lo['avatars_per_s']:>7.1f} | "
              f"{gr['p50_ms']:>6.1f} / {gr['p90_ms']:>6.1f} / {gr['p99_ms']:>6.1f} {gr['avatars_per_s']:>7.1f} {gr['errors']:>4} | "
              f"{nb['p50_ms']:>8.1f} / {nb['p99_ms']:>8.1f} {nb['avatars_per_s']:>7.1f} {nb['errors']:>4} | "
              f"{q['p50_grpc_over_in_process']:>15.2f}x {q['throughput_grpc_over_offline']:>16.2f}x "
              f"{q['throughput_batching_on_over_off']:>11.2f}x")
        for size in a.sizes:
            cell, rounds = r[f"grpc_{size}px"], r["size_rounds"]
            q[f"cost_{size}px_over_native"] = _per_avatar(rounds, str(size)) / _per_avatar(rounds, "native")
            each = ", ".join(f"{x['native']['avatars_per_s'] / max(x[str(size)]['avatars_per_s'], 1e-9):.2f}" for x in rounds)
            print(f"{'':>5} | gRPC {size} px PNG: p50/p99 {cell['p50_ms']:.1f} / {cell['p99_ms']:.1f} ms, "
                  f"{cell['avatars_per_s']:.1f} av/s, {sum(x[str(size)]['errors'] for x in rounds)} err; {size}px cost/native "
                  f"{q[f'cost_{size}px_over_native']:.2f}x over {len(rounds)} rounds ({each})")
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "offline": offline, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
