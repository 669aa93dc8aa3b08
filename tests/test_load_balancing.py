"""Client-side load balancing, proven locally: three real server replicas on loopback
ports, one client channel with gRPC's `round_robin` policy over all three
(moe_avatar_client/balancing.py), per-replica request counters read from each replica's
Prometheus endpoint. A replica killed with SIGKILL or drained with SIGTERM costs no
failed call: the retry policy re-sends calls that reached no live replica, and client-side
health checking stops new calls to a replica that reports NOT_SERVING.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server_util import free_port, running_server, subprocess_server

from moe_avatar_client.balancing import balanced_target, channel_args
from moe_avatar_client.client import AvatarClient

OK_GENERATE = 'moe_avatar_requests_total{code="OK",method="Generate"}'


# --- target forms (no servers) ---------------------------------------------------------

def test_comma_separated_ip_literals_become_one_balanced_target():
    assert balanced_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert balanced_target("[::1]:1, [::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert balanced_target("dns:///avatar-grpc.games.svc.cluster.local:50051").startswith("dns:///")
    assert balanced_target("ipv4:10.0.0.1:1,10.0.0.2:1") == "ipv4:10.0.0.1:1,10.0.0.2:1"
    for single in ("localhost:50051", "10.0.0.1:50051", "ipv4:10.0.0.1:50051"):
        assert balanced_target(single) is None
        assert channel_args(single) == (single, [])  # a single server keeps gRPC's defaults


def test_cli_refuses_a_list_of_names(capsys):
    from moe_avatar_client import cli

    assert cli.main(["--target", "avatar-a:50051,avatar-b:50051", "health"]) == 2
    assert "dns:///NAME:PORT" in capsys.readouterr().err


def test_names_and_mixed_families_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="dns:///NAME:PORT"):
        balanced_target("avatar-a:50051,avatar-b:50051")
    with pytest.raises(ValueError, match="one family"):
        balanced_target("127.0.0.1:1,[::1]:2")
    with pytest.raises(ValueError, match="not host:port"):
        balanced_target("127.0.0.1,127.0.0.2")


def test_balanced_channel_gets_round_robin_retries_and_health_checks():
    target, options = channel_args("127.0.0.1:1,127.0.0.1:2")
    config = json.loads(dict(options)["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    retry = config["methodConfig"][0]["retryPolicy"]
    assert retry["retryableStatusCodes"] == ["UNAVAILABLE"] and retry["maxAttempts"] == 5
    mine = json.dumps({"loadBalancingConfig": [{"pick_first": {}}]})
    assert dict(channel_args(target, [("grpc.service_config", mine)])[1])["grpc.service_config"] == mine


# --- real replicas ------------------------------------------------------------------

def _ok_count(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    line = next((l for l in text.splitlines() if l.startswith(OK_GENERATE)), None)
    return float(line.split()[-1]) if line else 0.0


def _counts(metrics_ports: list[int], expected_total: float, alive: list[int]) -> list[float]:
    """Per-replica OK Generate counts once they add up (counters tick as a stream ends)."""
    deadline = time.monotonic() + 10
    while True:
        counts = [_ok_count(metrics_ports[i]) for i in alive]
        if sum(counts) >= expected_total or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


@contextlib.contextmanager
def _replicas(model_repo, n: int):
    metrics_ports = [free_port() for _ in range(n)]
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(subprocess_server(model_repo, "--metrics-port", str(m), "--grace-seconds", "5"))
                    for m in metrics_ports]
        yield replicas, metrics_ports


def _client(replicas) -> AvatarClient:
    # "IP:port,IP:port,IP:port" -> round_robin (AvatarClient goes through balancing.channel_args).
    # retries=0: the only retries are gRPC's own (the service config's retry policy).
    return AvatarClient(",".join(r.target for r in replicas), retries=0, timeout=30)


def test_round_robin_spreads_calls_and_a_killed_replica_costs_no_call(model_repo):
    with _replicas(model_repo, 3) as (replicas, metrics_ports), _client(replicas) as client:
        for seed in range(24):
            assert len(client.generate("cat ears", seed=seed).textures) == 1
        before = _counts(metrics_ports, 24, [0, 1, 2])
        assert sum(before) == 24 and min(before) >= 4, f"calls per replica: {before}"

        replicas[0].process.send_signal(signal.SIGKILL)
        replicas[0].process.wait(10)
        failures = []
        for seed in range(100, 124):  # the first calls may still be routed to the dead address
            try:
                client.generate("cat ears", seed=seed)
            except grpc.RpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")
        assert failures == []
        after = _counts(metrics_ports, sum(before[1:]) + 24, [1, 2])
        assert sum(after) - sum(before[1:]) == 24
        assert all(a > b for a, b in zip(after, before[1:])), (before, after)


def test_a_draining_replica_finishes_its_calls_and_gets_no_new_ones(model_repo):
    """SIGTERM (a rolling update) under concurrent load: not one call fails."""
    with _replicas(model_repo, 3) as (replicas, metrics_ports), _client(replicas) as client:
        client.health()  # connect
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(client.generate, "cat ears", seed=seed) for seed in range(100)]
            while sum(c.done() for c in calls) < 20:
                time.sleep(0.01)
            replicas[0].process.send_signal(signal.SIGTERM)
            results = [c.exception() for c in calls]
        assert [r for r in results if r is not None] == []
        assert replicas[0].process.wait(30) == 0
        assert sum(_counts(metrics_ports, 1, [1, 2])) > 0


def test_replica_reporting_not_serving_is_skipped(model_repo):
    """Client-side health checking: NOT_SERVING takes a replica out of rotation, SERVING
    brings it back (in-process replicas, so the test can flip their health)."""
    with running_server(model_repo) as a, running_server(model_repo) as b:
        count = lambda s: s.metrics.registry.get_sample_value(  # noqa: E731
            "moe_avatar_requests_total", {"method": "EncodeText", "code": "OK"}) or 0.0
        with AvatarClient(f"{a.target},{b.target}", retries=0, timeout=10) as client:
            for _ in range(10):
                client.encode_text("cat ears")
            assert count(a) > 0 and count(b) > 0
            a.call(a.server._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
            # Round robin alternates while both are in rotation, so 10 calls in a row on b
            # mean a is out (the health watch stream delivers the change asynchronously).
            streak, deadline = 0, time.monotonic() + 10
            while streak < 10:
                assert time.monotonic() < deadline, "the NOT_SERVING replica kept getting calls"
                a0 = count(a)
                client.encode_text("cat ears")
                streak = streak + 1 if count(a) == a0 else 0
            a.call(a.server._health.set("", health_pb2.HealthCheckResponse.SERVING))
            deadline = time.monotonic() + 5
            while count(a) == a0 and time.monotonic() < deadline:
                client.encode_text("cat ears")
            assert count(a) > a0
