"""Load and soak test: many Generate calls at a fixed concurrency against a live server,
checking every answer, the server's memory and its queues.

    python benchmarks/soak.py --models models --requests 20000 --concurrency 64 --json soak.json
    python benchmarks/soak.py --target host:50051 --metrics-url http://host:9100/metrics --server-pid 1234

With `--models` the script starts `moe-avatar-server` as a subprocess (with a metrics
port); this process is the load generator (grpc.aio, closed loop: `--concurrency`
calls always in flight, spread over several connections). It checks that

* no call fails (any status other than OK is counted by code),
* every stream is complete (Started ... Done, the promised number of textures) and
  every texture's SHA-256 matches its header,
* the server's resident memory (VmRSS from /proc, sampled twice a second) grows less
  than `--max-growth` percent between the third and the last quarter of the calls (a leak
  grows at a steady rate; the first quarter is warm-up: allocator arenas and ONNX Runtime's
  buffers fill, on the tiny bundle from ≈ 134 to ≈ 200 MB over the first ≈ 15,000 calls,
  then flat — the first → last quarter figure is reported too, not judged),
* the server's queues are empty at the end (moe_avatar_queue_depth from /metrics).

Prints a table and writes JSON; exit code 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field

import grpc
from tqdm import tqdm

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "protos"), str(ROOT / "clients" / "python")]

from moe_avatar_client.client import ChecksumError, StreamAssembler  # noqa: E402
from moeavatar.v1 import avatar_pb2 as pb  # noqa: E402
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc  # noqa: E402

PROMPTS = ["pink twin tails, cat ears", "silver bob, blue eyes", "粉色双马尾，猫耳", "green ponytail, glasses",
           "black hair, red eyes, hoodie", "blonde curls, smile", "white hair, fox ears", "purple hime cut"]


@dataclass
class Report:
    requests: int
    concurrency: int
    completed: int = 0  # streams that ended with Done, every texture verified
    errors: dict[str, int] = field(default_factory=dict)  # status code -> count
    incomplete: int = 0  # OK status but missing Done / textures
    checksum_failures: int = 0
    duration_s: float = 0.0
    calls_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] | None = None  # start / first_quarter / third_quarter / last_quarter / max / end
    rss_growth_pct: float | None = None  # third -> last quarter: what is judged
    rss_warmup_growth_pct: float | None = None  # first -> last quarter: warm-up included, reported only
    queue_depth_end: float | None = None
    server_requests: dict[str, float] | None = None  # moe_avatar_requests_total by code
    date: str = ""
    commit: str = ""
    target: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


# --- the server under test -----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m moe_avatar.server.main` on a free port with a metrics port; stderr is kept."""

    def __init__(self, models: pathlib.Path, device: str, extra: list[str]) -> None:
        self.metrics_port = _free_port()
        cmd = [sys.executable, "-m", "moe_avatar.server.main", "--models", str(models), "--host", "127.0.0.1", "--port", "0",
               "--device", device, "--metrics-port", str(self.metrics_port), "--log-format", "json", *extra]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.log: collections.deque[str] = collections.deque(maxlen=200)  # the last lines, for errors
        self.port = self._wait_for_port()
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def _wait_for_port(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("server exited at start:\n" + "".join(self.log))
            self.log.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if str(entry.get("message", "")).startswith("serving on port"):
                return int(entry["port"])
        raise TimeoutError("server did not start:\n" + "".join(self.log))

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def rss_kb(pid: int) -> int | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples (calls finished so far, RSS kB) twice a second."""

    def __init__(self, pid: int, progress) -> None:
        super().__init__(daemon=True)
        self.pid, self.progress = pid, progress
        self.samples: list[tuple[int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            if (kb := rss_kb(self.pid)) is not None:
                self.samples.append((self.progress(), kb))
            if self._halt.wait(0.5):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()
        if (kb := rss_kb(self.pid)) is not None:
            self.samples.append((self.progress(), kb))


def read_metrics(url: str) -> tuple[float, dict[str, float]]:
    """(total moe_avatar_queue_depth over all graphs, moe_avatar_requests_total by code)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    depth, by_code = 0.0, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "moe_avatar_queue_depth":
                depth += sample.value
            elif sample.name == "moe_avatar_requests_total":
                code = sample.labels["code"]
                by_code[code] = by_code.get(code, 0) + sample.value
    return depth, by_code


# --- the load generator ----------------------------------------------------------------

def request_for(i: int, count: int, size: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=i, count=count,
                              output=pb.OutputOptions(size=size))


async def drive(target: str, report: Report, *, count: int, size: int, timeout: float, connections: int,
                bar: tqdm) -> list[float]:
    """Closed loop: `report.concurrency` workers take the next call number until all are done."""
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    stubs = [pb_grpc.AvatarServiceStub(ch) for ch in channels]
    latencies: list[float] = []
    next_call = 0

    async def worker(w: int) -> None:
        nonlocal next_call
        while next_call < report.requests:
            i, next_call = next_call, next_call + 1
            t0 = time.perf_counter()
            assembler = StreamAssembler()
            try:
                async for message in stubs[w % len(stubs)].Generate(request_for(i, count, size), timeout=timeout):
                    assembler.feed(message)
                if assembler.done and len(assembler.result.textures) == count == assembler.expected:
                    report.completed += 1
                    latencies.append(time.perf_counter() - t0)
                else:
                    report.incomplete += 1
            except grpc.aio.AioRpcError as e:
                report.errors[e.code().name] = report.errors.get(e.code().name, 0) + 1
            except ChecksumError:
                report.checksum_failures += 1
            bar.update(1)
            if report.errors or report.incomplete or report.checksum_failures:
                bar.set_postfix(errors=sum(report.errors.values()) + report.incomplete + report.checksum_failures)

    try:
        await asyncio.gather(*(worker(w) for w in range(report.concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    return latencies


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


def soak(target: str, requests: int, concurrency: int, *, server_pid: int | None, metrics_url: str | None,
         count: int = 1, size: int = 0, timeout: float = 120.0, max_growth: float = 3.0,
         quiet: bool = False) -> Report:
    report = Report(requests=requests, concurrency=concurrency, target=target, commit=_git_commit(),
                    date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    bar = tqdm(total=requests, unit="call", desc="soak", disable=quiet, file=sys.stderr, smoothing=0.05)
    sampler = RssSampler(server_pid, lambda: bar.n) if server_pid else None
    if sampler:
        sampler.start()
    t0 = time.perf_counter()
    try:
        latencies = asyncio.run(drive(target, report, count=count, size=size, timeout=timeout,
                                      connections=max(1, concurrency // 16), bar=bar))
    finally:
        report.duration_s = round(time.perf_counter() - t0, 2)
        bar.close()
        if sampler:
            sampler.stop()
    report.calls_per_s = round(requests / report.duration_s, 2) if report.duration_s else 0.0
    if latencies:
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
        report.latency_ms = {"p50": round(q[49] * 1000, 1), "p95": round(q[94] * 1000, 1),
                             "p99": round(q[98] * 1000, 1), "max": round(max(latencies) * 1000, 1)}
    if sampler and sampler.samples:
        kb = [k for _, k in sampler.samples]
        first = [k for n, k in sampler.samples if n < requests / 4] or kb[:1]
        third = [k for n, k in sampler.samples if requests / 2 <= n < 3 * requests / 4] or kb[-1:]
        last = [k for n, k in sampler.samples if n >= 3 * requests / 4] or kb[-1:]
        report.rss_mb = {"start": round(kb[0] / 1024, 1), "first_quarter": round(statistics.mean(first) / 1024, 1),
                         "third_quarter": round(statistics.mean(third) / 1024, 1),
                         "last_quarter": round(statistics.mean(last) / 1024, 1), "max": round(max(kb) / 1024, 1),
                         "end": round(kb[-1] / 1024, 1), "samples": len(kb)}
        report.rss_warmup_growth_pct = round(100 * (statistics.mean(last) / statistics.mean(first) - 1), 2)
        report.rss_growth_pct = round(100 * (statistics.mean(last) / statistics.mean(third) - 1), 2)
    if metrics_url:
        deadline = time.monotonic() + 10  # the gauge drops as the last streams end
        while True:
            report.queue_depth_end, report.server_requests = read_metrics(metrics_url)
            if report.queue_depth_end == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)

    if report.errors:
        report.failures.append(f"errors: {report.errors}")
    if report.incomplete:
        report.failures.append(f"{report.incomplete} incomplete streams")
    if report.checksum_failures:
        report.failures.append(f"{report.checksum_failures} checksum failures")
    if report.rss_growth_pct is not None and report.rss_growth_pct >= max_growth:
        report.failures.append(f"resident memory grew {report.rss_growth_pct}% (limit {max_growth}%)")
    if report.queue_depth_end:
        report.failures.append(f"queue depth {report.queue_depth_end} at the end")
    return report


def print_table(report: Report) -> None:
    rss = report.rss_mb or {}
    rows = [
        ("requests", report.requests), ("concurrency", report.concurrency), ("completed + verified", report.completed),
        ("errors", sum(report.errors.values())), ("incomplete streams", report.incomplete),
        ("checksum failures", report.checksum_failures), ("duration", f"{report.duration_s} s"),
        ("calls/s", report.calls_per_s),
        ("latency p50 / p95 / p99", " / ".join(f"{report.latency_ms.get(k, float('nan'))} ms"
                                               for k in ("p50", "p95", "p99"))),
        ("RSS first -> last quarter", f"{rss.get('first_quarter')} -> {rss.get('last_quarter')} MB "
                                      f"({report.rss_warmup_growth_pct}%, warm-up included)" if rss else "n/a"),
        ("RSS third -> last quarter", f"{rss.get('third_quarter')} -> {rss.get('last_quarter')} MB" if rss else "n/a"),
        ("RSS growth (judged)", f"{report.rss_growth_pct}%" if report.rss_growth_pct is not None else "n/a"),
        ("RSS max", f"{rss.get('max')} MB" if rss else "n/a"),
        ("queue depth at end", report.queue_depth_end if report.queue_depth_end is not None else "n/a"),
        ("result", "PASS" if report.passed else "FAIL: " + "; ".join(report.failures)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--models", type=pathlib.Path, help="start a server on this model repository")
    where.add_argument("--target", help="host:port of a running server")
    parser.add_argument("--metrics-url", help="with --target: its Prometheus /metrics URL")
    parser.add_argument("--server-pid", type=int, help="with --target on this machine: its pid, for RSS")
    parser.add_argument("--device", default="cpu", help="with --models: --device of the server (default cpu)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable), "
                        "e.g. --server-arg=--max-batch=16")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--count", type=int, default=1, help="avatars per call")
    parser.add_argument("--size", type=int, default=0, help="texture edge in px (0 = native)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline per call, seconds")
    parser.add_argument("--max-growth", type=float, default=3.0,
                        help="allowed RSS growth from the third to the last quarter of the calls, percent")
    parser.add_argument("--json", type=pathlib.Path, help="write the report here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    server = ServerProcess(args.models, args.device, args.server_arg) if args.models else None
    try:
        target = f"127.0.0.1:{server.port}" if server else args.target
        report = soak(target, args.requests, args.concurrency,
                      server_pid=server.process.pid if server else args.server_pid,
                      metrics_url=f"http://127.0.0.1:{server.metrics_port}/metrics" if server else args.metrics_url,
                      count=args.count, size=args.size, timeout=args.timeout, max_growth=args.max_growth,
                      quiet=args.quiet)
    finally:
        exit_code = server.stop() if server else 0
    if server and exit_code != 0:
        report.failures.append(f"server exited with {exit_code} after SIGTERM")
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "passed": report.passed}, indent=2, ensure_ascii=False))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
