"""Throughput of `moe-avatar-server --workers N` vs one process, side by side in one run.

    python benchmarks/bench_workers.py --models models [--workers 1 2] [--calls 200] [--concurrency 16]
                                       [--rounds 2] [--device cpu] [--json out.json]
    # a GPU host's capacity curve (deploy/CAPACITY.md): one replica, several concurrencies
    python benchmarks/bench_workers.py --device cuda --workers 1 --concurrency 1 8 32 128 --calls 2000

One real server subprocess per worker count, all started first and kept running; the
measurements then alternate between them round by round (so a slow patch of a shared
machine hits every configuration alike). The grpc.aio load generator in this process
opens `--channels` connections (each with its own subchannel pool, so each is its own TCP
connection: SO_REUSEPORT spreads connections, not calls, across workers) and keeps
`--concurrency` Generate calls (1 avatar, 64 px PNG) in flight. ONNX Runtime threads are
each server's default (one process: ORT's own default; N workers: cores / N each).
`--workers gpus` works too (one worker per GPU).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "pink twin tails, cat ears"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m moe_avatar.server.main --workers N` on a free port; ready once every worker serves."""

    def __init__(self, models: Path, workers: str, device: str) -> None:
        self.workers, self.port = workers, _free_port()
        self.expected = int(workers) if workers.isdigit() else None  # "gpus": from the supervisor's log
        cmd = [sys.executable, "-m", "moe_avatar.server.main", "--models", str(models), "--host", "127.0.0.1",
               "--port", str(self.port), "--device", device, "--workers", workers, "--log-level", "INFO"]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self._serving: set[int] = set()
        self._ready = threading.Event()
        threading.Thread(target=self._read_logs, daemon=True).start()

    def _read_logs(self) -> None:
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("message", "")
            if message.startswith("started ") and isinstance(entry.get("workers"), list):
                self.expected = len(entry["workers"])
            if message.startswith("serving on port"):
                self._serving.add(entry.get("pid", 0))
            if self.expected and len(self._serving) == self.expected:
                self._ready.set()
            elif entry.get("level") == "ERROR":
                print(f"server --workers {self.workers}: {entry.get('message')}", file=sys.stderr)

    def wait_ready(self, timeout: float = 600) -> None:
        if not self._ready.wait(timeout):
            raise RuntimeError(f"--workers {self.workers}: not ready after {timeout}s (exit {self.process.poll()})")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


async def measure(target: str, calls: int, concurrency: int, channels: int) -> dict[str, float]:
    from moeavatar.v1 import avatar_pb2 as pb
    from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

    chans = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    stubs = [pb_grpc.AvatarServiceStub(c) for c in chans]
    try:
        async def one(i: int) -> float:
            t0 = time.perf_counter()
            async for _ in stubs[i % channels].Generate(pb.GenerateRequest(prompt=PROMPT, seed=i), timeout=120):
                pass
            return time.perf_counter() - t0

        await asyncio.gather(*(one(10_000 + i) for i in range(2 * channels)))  # connect + warm up every channel
        sem = asyncio.Semaphore(concurrency)

        async def limited(i: int) -> float:
            async with sem:
                return await one(i)

        t0 = time.perf_counter()
        lat = sorted(await asyncio.gather(*(limited(i) for i in range(calls))))
        wall = time.perf_counter() - t0
    finally:
        for c in chans:
            await c.close()
    q = statistics.quantiles(lat, n=100)
    return {"avatars_per_s": calls / wall, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--workers", nargs="+", default=["1", "2"], help="worker counts to compare (or gpus)")
    p.add_argument("--calls", type=int, default=200, help="requests per configuration per round")
    p.add_argument("--concurrency", type=int, nargs="+", default=[16], help="calls in flight (several = a curve)")
    p.add_argument("--channels", type=int, default=8, help="client connections (spread over workers by the kernel)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    servers = [Server(a.models, n, a.device) for n in a.workers]
    cells = [(s, c) for c in a.concurrency for s in servers]
    results: dict[tuple[str, int], list[dict[str, float]]] = {(s.workers, c): [] for s, c in cells}
    try:
        for s in servers:
            s.wait_ready()
        for r in range(a.rounds):
            for s, c in cells:
                print(f"round {r + 1}/{a.rounds}: --workers {s.workers}, concurrency {c}, {a.calls} calls ...", flush=True)
                results[s.workers, c].append(asyncio.run(measure(f"127.0.0.1:{s.port}", a.calls, c, a.channels)))
    finally:
        codes = [s.stop() for s in servers]
    if any(codes):
        print(f"warning: server exit codes {codes}", file=sys.stderr)

    rows = []
    print(f"\n{os.cpu_count()} cores, device {a.device}, {a.channels} connections, {a.calls} calls x {a.rounds} rounds "
          "(medians over rounds)")
    print(f"{'workers':>7} | {'conc':>4} | {'avatars/s':>9} | {'per round':>20} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'vs first':>8}")
    for c in a.concurrency:
        base = statistics.median(x["avatars_per_s"] for x in results[a.workers[0], c])
        for n in a.workers:
            rounds = results[n, c]
            thr = statistics.median(x["avatars_per_s"] for x in rounds)
            row = {"workers": n, "concurrency": c, "avatars_per_s": thr, "rounds": rounds, "speedup": thr / base,
                   "p50_ms": statistics.median(x["p50_ms"] for x in rounds),
                   "p99_ms": statistics.median(x["p99_ms"] for x in rounds)}
            rows.append(row)
            per_round = " ".join(f"{x['avatars_per_s']:.1f}" for x in rounds)
            print(f"{n:>7} | {c:>4} | {thr:>9.1f} | {per_round:>20} | {row['p50_ms']:>7.1f} | {row['p99_ms']:>7.1f} | "
                  f"{row['speedup']:>7.2f}x")
    report = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "device": a.device, "models": str(a.models),
              "calls": a.calls, "concurrency": a.concurrency, "channels": a.channels, "rounds": a.rounds, "rows": rows}
    print(json.dumps(report))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
