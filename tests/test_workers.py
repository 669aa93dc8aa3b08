"""`--workers`: several server processes sharing one port (server/workers.py).

The process tests start the real `python -m moe_avatar.server.main --workers 2` on the tiny bundle and
check, from the per-request log lines (each carries the worker's pid), that connections
land on both workers; then that SIGTERM stops everything with exit code 0, and that a
crashed worker makes the supervisor stop the rest and exit non-zero.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from server_util import REPO_ROOT, free_port, subprocess_server

from moe_avatar.server.config import ConfigError, ServerConfig, load_config
from moe_avatar.server.workers import config_argv, plan_workers
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

# --- planning (no processes) -----------------------------------------------------------

def test_cpu_workers_split_the_cores_and_get_their_own_metrics_port(tiny_bundle):
    config = ServerConfig(models=tiny_bundle.parent, workers="2", metrics_port=9100).validate()
    specs = plan_workers(config, port=50555, cores=8, environ={})
    assert [s.index for s in specs] == [0, 1]
    assert [s.config.metrics_port for s in specs] == [9100, 9101]
    assert {s.config.port for s in specs} == {50555}
    assert {s.config.intra_op_threads for s in specs} == {4}  # 8 cores / 2 workers
    assert {s.config.workers for s in specs} == {"1"}  # a worker never supervises
    assert all(s.env == {} for s in specs)


def test_explicit_intra_op_threads_and_no_metrics_are_kept(tiny_bundle):
    config = ServerConfig(models=tiny_bundle.parent, workers="3", intra_op_threads=2).validate()
    specs = plan_workers(config, port=1, cores=2, environ={})
    assert [s.config.intra_op_threads for s in specs] == [2, 2, 2]
    assert [s.config.metrics_port for s in specs] == [0, 0, 0]
    # more workers than cores still gets one thread each, never zero
    assert {s.config.intra_op_threads for s in plan_workers(
        ServerConfig(models=tiny_bundle.parent, workers="3").validate(), 1, 2, {})} == {1}


def test_gpu_workers_get_one_visible_gpu_each(tiny_bundle):
    config = ServerConfig(models=tiny_bundle.parent, workers="gpus", device="auto").validate()
    specs = plan_workers(config, port=1, cores=16, environ={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert [s.env for s in specs] == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert {(s.config.device, s.config.cuda_device_id) for s in specs} == {("cuda", 0)}
    assert {s.config.intra_op_threads for s in specs} == {8}


def test_gpu_workers_without_gpu_or_on_cpu_fail_clearly(tiny_bundle):
    config = ServerConfig(models=tiny_bundle.parent, workers="gpus").validate()
    with pytest.raises(ConfigError, match="--workers gpus: no GPU found"):
        plan_workers(config, port=1, cores=2, environ={"CUDA_VISIBLE_DEVICES": ""})
    cpu = ServerConfig(models=tiny_bundle.parent, workers="gpus", device="cpu").validate()
    with pytest.raises(ConfigError, match="--device cpu"):
        plan_workers(cpu, port=1, cores=2, environ={"CUDA_VISIBLE_DEVICES": "0"})


@pytest.mark.parametrize("value", ["0", "-1", "two", "257", ""])
def test_bad_workers_value_names_the_flag_and_env(tiny_bundle, value):
    with pytest.raises(ConfigError, match=r"--workers / MOE_AVATAR_WORKERS: must be 1\.\.256 or gpus"):
        load_config(["--models", str(tiny_bundle.parent), "--workers", value], environ={})


def test_workers_read_from_the_environment(tiny_bundle):
    config = load_config(["--models", str(tiny_bundle.parent)], environ={"MOE_AVATAR_WORKERS": "gpus"})
    assert config.workers == "gpus"


def test_worker_flags_rebuild_the_config_exactly(tiny_bundle):
    config = ServerConfig(models=tiny_bundle.parent, port=1234, max_wait_ms=2.5, default_model="",
                          grace_seconds=0.0, log_format="text").validate()
    # env defaults must not leak into a worker: every field is passed as a flag
    assert load_config(config_argv(config), environ={"MOE_AVATAR_MAX_BATCH": "7"}) == config


# --- real processes ------------------------------------------------------------------

def _consecutive_free_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def _entries(lines: list[str]) -> list[dict]:
    out = []
    for line in list(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _wait_for(predicate, lines: list[str], what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate(_entries(lines))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n" + "".join(lines[-40:]))


def _serving_workers(entries: list[dict]) -> dict[int, int]:
    return {e["worker"]: e["pid"] for e in entries if e.get("message", "").startswith("serving on port")}


def _started_pids(lines: list[str]) -> dict[int, int]:
    started = _wait_for(lambda es: [e for e in es if e.get("message") == "started 2 workers"], lines, "start line")
    return {w["worker"]: w["pid"] for w in started[0]["workers"]}


def test_two_workers_share_the_port_and_stop_cleanly_on_sigterm(model_repo):
    metrics = _consecutive_free_ports(2)
    with subprocess_server(model_repo, "--workers", "2", "--metrics-port", str(metrics),
                           "--grace-seconds", "2") as srv:
        pids = _started_pids(srv.log_lines)
        assert srv.process.pid not in pids.values()
        serving = _wait_for(lambda es: (lambda w: w if len(w) == 2 else None)(_serving_workers(es)),
                            srv.log_lines, "both workers serving")
        assert serving == pids

        # Each channel with its own subchannel pool opens its own TCP connection; the kernel
        # spreads connections across the SO_REUSEPORT sockets.
        request_ids: list[str] = []
        served: set[int] = set()
        while len(served) < 2 and len(request_ids) < 64:
            for _ in range(8):
                with grpc.insecure_channel(srv.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    rid = f"workers-test-{len(request_ids)}"
                    stream = pb_grpc.AvatarServiceStub(ch).Generate(
                        pb.GenerateRequest(prompt="cat ears", seed=len(request_ids)),
                        metadata=[("x-request-id", rid)], timeout=30)
                    assert [m.WhichOneof("event") for m in stream][-1] == "done"
                    request_ids.append(rid)
            logged = _wait_for(lambda es: (lambda d: d if len(d) == len(request_ids) else None)(
                {e["request_id"]: e["pid"] for e in es if e.get("request_id") in request_ids}),
                srv.log_lines, "a log line per request")
            served = set(logged.values())
        assert served == set(pids.values()), f"requests served by {served}, workers are {pids}"

        # Per-worker metrics on --metrics-port + index add up to the requests made.
        counts = []
        for index in (0, 1):
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics + index}/metrics", timeout=10).read().decode()
            line = next((l for l in text.splitlines()
                         if l.startswith('moe_avatar_requests_total{code="OK",method="Generate"}')), None)
            counts.append(float(line.split()[-1]) if line else 0.0)
        assert sum(counts) == len(request_ids) and min(counts) > 0, counts

        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(30) == 0, "".join(srv.log_lines[-20:])
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # workers are gone (reaped by the supervisor)


def test_a_crashed_worker_stops_the_others_and_fails_the_supervisor(model_repo):
    with subprocess_server(model_repo, "--workers", "2", "--grace-seconds", "0") as srv:
        pids = _started_pids(srv.log_lines)
        _wait_for(lambda es: len(_serving_workers(es)) == 2, srv.log_lines, "both workers serving")
        os.kill(pids[1], signal.SIGKILL)
        assert srv.process.wait(30) == 1
        errors = _wait_for(lambda es: [e for e in es if e.get("level") == "ERROR"], srv.log_lines, "error line")
        assert "worker 1" in errors[0]["message"] and "on its own" in errors[0]["message"]
        assert errors[0]["returncode"] == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)


def test_taken_port_fails_before_starting_workers(model_repo):
    with socket.socket() as taken:  # a plain listener, no SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(model_repo), "--host", "127.0.0.1",
                               "--port", str(port), "--device", "cpu", "--workers", "2", "--log-format", "text"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"--port: cannot bind 127.0.0.1:{port}" in proc.stderr
    assert "started" not in proc.stderr  # no worker was started
