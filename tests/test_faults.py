"""Faults against a real server: crowds of clients that cancel mid-stream or run out of
deadline, client processes killed mid-stream, SIGTERM under load, broken bundles,
`--device cuda` without a GPU, and ONNX Runtime failing during a batch.

After each fault the server must be idle again (no call in flight, no queued or
announced batch slot, no leftover asyncio task) and serve the next request normally.
(Single cancel / deadline / full queue: tests/test_server_errors.py; SIGTERM with one
stream and a corrupt generator file: tests/test_server_process.py.)"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_util import REPO_ROOT, free_port, running_server, subprocess_server

from moe_avatar.bundle import BundleError
from moe_avatar.server.pipeline import ModelPipeline
from moe_avatar_client.client import AvatarClient, StreamAssembler
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

SERVICE = "moeavatar.v1.AvatarService"


@pytest.fixture(scope="module")
def server(model_repo):
    """Roomy limits: the crowd tests are about leaks, not about admission control."""
    with running_server(model_repo, max_inflight_per_client=0, max_queue=5000, max_wait_ms=20.0,
                        encode_workers=2) as s:
        yield s


# --- idle checks -----------------------------------------------------------------------

def idle_state(server) -> dict:
    """What must return to zero (or to its resting value) once every call has ended."""
    async def read() -> dict:
        batchers = [b for p in server.server.pipelines for b in p._batchers.values()]  # noqa: SLF001
        return {"in_flight": server.server.guard.in_flight,
                "queued": sum(b.queue_depth for b in batchers),
                "announced": sum(b._coming for b in batchers),  # noqa: SLF001 - tickets not given back
                "tasks": len(asyncio.all_tasks())}
    return server.call(read())


def wait_idle(server, resting_tasks: int, timeout: float = 30) -> dict:
    """`resting_tasks` was measured before the fault; it may include a task of the previous
    call still finishing, so fewer tasks now is fine, more is a leak."""
    deadline = time.monotonic() + timeout
    want = {"in_flight": 0, "queued": 0, "announced": 0, "tasks": resting_tasks}
    while (state := idle_state(server)) != want and not (
            state["tasks"] <= resting_tasks and {**state, "tasks": resting_tasks} == want):
        assert time.monotonic() < deadline, f"server did not return to idle: {state}, expected {want}"
        time.sleep(0.05)
    gauge = sum(s.value for m in server.metrics.queue_depth.collect() for s in m.samples)
    assert gauge == 0, "moe_avatar_queue_depth gauge is not back to 0"
    return state


def codes(server) -> dict[str, float]:
    return {s.labels["code"]: s.value for m in server.metrics.requests.collect() for s in m.samples
            if s.name.endswith("_total") and s.value}


def assert_serves_normally(target: str) -> None:
    with AvatarClient(target, retries=0, timeout=30) as client:
        result = client.generate("pink twin tails, cat ears", seed=11, count=3)
        assert [t.seed for t in result.textures] == [11, 12, 13]


# --- crowds that cancel or run out of time ----------------------------------------------

async def crowd(target: str, clients: int, seed: int) -> dict[str, int]:
    """`clients` concurrent Generate calls over a few connections: a third cancel after a
    random number of messages, a third have a deadline of a few ms to a few hundred ms,
    the rest read to the end. Returns outcome counts."""
    rng = random.Random(seed)
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, clients // 50))]
    outcomes: dict[str, int] = {}

    async def one(i: int) -> None:
        stub = pb_grpc.AvatarServiceStub(channels[i % len(channels)])
        kind = ("cancel", "deadline", "complete")[i % 3]
        request = pb.GenerateRequest(prompt=f"crowd {i % 7}", seed=i, count=rng.randint(1, 4),
                                     output=pb.OutputOptions(size=rng.choice([64, 128, 256])))
        timeout = rng.uniform(0.005, 0.3) if kind == "deadline" else 120
        stop_after = rng.randint(1, 12)  # a stream has 9..15 messages
        call = stub.Generate(request, timeout=timeout)
        assembler = StreamAssembler()
        try:
            async for message in call:
                assembler.feed(message)
                if kind == "cancel" and not assembler.done and (stop_after := stop_after - 1) == 0:
                    call.cancel()
                    break
            outcome = "cancelled" if call.cancelled() else "ok"
            if outcome == "ok":
                assert assembler.done and len(assembler.result.textures) == (request.count or 1)
        except grpc.aio.AioRpcError as e:
            outcome = e.code().name.lower()
        except asyncio.CancelledError:
            outcome = "cancelled"
        outcomes[f"{kind}:{outcome}"] = outcomes.get(f"{kind}:{outcome}", 0) + 1

    try:
        await asyncio.gather(*(one(i) for i in range(clients)))
    finally:
        for ch in channels:
            await ch.close()
    return outcomes


def run_crowd(server, clients: int) -> None:
    resting = idle_state(server)["tasks"]
    before = codes(server)
    outcomes = asyncio.run(crowd(server.target, clients, seed=clients))
    allowed = {"cancel:cancelled", "cancel:ok", "deadline:deadline_exceeded", "deadline:ok", "complete:ok"}
    assert set(outcomes) <= allowed, outcomes
    assert sum(outcomes.values()) == clients
    assert outcomes.get("cancel:cancelled", 0) > clients // 6 and outcomes.get("complete:ok", 0) == clients // 3
    wait_idle(server, resting)
    after = codes(server)
    assert not {"INTERNAL", "UNKNOWN"} & set(after), after
    ended_early = lambda c: c.get("CANCELLED", 0) + c.get("DEADLINE_EXCEEDED", 0)  # noqa: E731
    assert ended_early(after) > ended_early(before)  # the server saw (many of) them end early
    assert_serves_normally(server.target)


def test_crowd_cancels_and_deadlines_leak_nothing(server):
    run_crowd(server, 100)


def test_calls_ended_by_the_client_leave_without_waiting_for_the_garbage_collector(server):
    """A call cancelled (or past its deadline) while its handler waits at a `yield` is never
    resumed: its bookkeeping must not wait until Python's cycle collector finalizes the
    handler. With the collector off, the crowd must still leave the server idle."""
    import gc

    gc.collect()
    gc.disable()
    try:
        run_crowd(server, 100)
    finally:
        gc.enable()


@pytest.mark.slow
def test_crowd_cancels_and_deadlines_leak_nothing_1000(server):
    run_crowd(server, 1000)


# --- client processes killed mid-stream -------------------------------------------------

CLIENT_SCRIPT = """
import sys, time, grpc
from moeavatar.v1 import avatar_pb2 as pb, avatar_pb2_grpc as pb_grpc
target, streams = sys.argv[1], int(sys.argv[2])
stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(target))

def edits(i):  # an Edit session that never ends: in flight on the server for sure
    yield pb.EditRequest(sequence=1, request=pb.GenerateRequest(prompt="killed editor", seed=i))
    time.sleep(300)

calls = [stub.Generate(pb.GenerateRequest(prompt="killed client", seed=i, count=8,
                                          output=pb.OutputOptions(size=512)), timeout=300)
         if i % 2 else stub.Edit(edits(i), timeout=300) for i in range(streams)]
for call in calls:
    next(call)  # every call has started; now stop reading
print("ready", flush=True)
time.sleep(300)
"""


def kill_clients(server, processes: int, streams: int) -> None:
    resting = idle_state(server)["tasks"]
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, server.target, str(streams)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        for p in clients:
            assert p.stdout.readline().strip() == "ready"
        # Edit sessions stay in flight; Generate streams may have been written out already.
        assert idle_state(server)["in_flight"] >= processes * (streams // 2)
    finally:
        for p in clients:
            p.send_signal(signal.SIGKILL)  # no cancel, no goodbye: the connection just dies
            p.wait(30)
    wait_idle(server, resting)
    assert not {"INTERNAL", "UNKNOWN"} & set(codes(server))
    assert_serves_normally(server.target)


def test_killed_client_processes_leak_nothing(server):
    kill_clients(server, processes=3, streams=4)


@pytest.mark.slow
def test_killed_client_processes_leak_nothing_many(server):
    kill_clients(server, processes=20, streams=10)


# --- ONNX Runtime failing during a batch -----------------------------------------------

POISON_PSI = np.float32(1.2345)


class FailingSession:
    """Wraps a real generator session; a batch that contains the poison psi fails the way
    ONNX Runtime fails (its own exception type), as a broken kernel or driver would."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.batches: list[tuple[list[float], bool]] = []  # (psi values, failed)

    def get_inputs(self):
        return self._session.get_inputs()

    def run(self, output_names, feeds):
        psi = [float(v) for v in feeds["psi"]]
        failed = any(np.float32(v) == POISON_PSI for v in psi)
        self.batches.append((psi, failed))
        if failed:
            raise ort.capi.onnxruntime_pybind11_state.Fail("injected: [ONNXRuntimeError] : 1 : FAIL : kernel failed")
        return self._session.run(output_names, feeds)


@pytest.fixture()
def failing_generator(model_repo):
    with running_server(model_repo, max_wait_ms=200.0, max_batch=4) as s:  # 13 requests: several batches
        pipeline = s.server.pipelines[0]
        batcher = pipeline._batchers["generator"]  # noqa: SLF001 - fault injection into the real pipeline
        session = FailingSession(pipeline._sessions["generator"])  # noqa: SLF001
        batcher._run = ModelPipeline._runner(session)  # noqa: SLF001
        yield s, session


def test_onnx_runtime_failure_fails_only_that_batch(failing_generator):
    server, session = failing_generator
    resting = idle_state(server)["tasks"]
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(pb.GenerateRequest(prompt="poison", seed=1, psi=float(POISON_PSI)), timeout=30,
                           metadata=(("x-request-id", "poison-0001"),)))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error; request id poison-0001"

    # Concurrent requests with distinct psi values; the failing session records which
    # psi values shared a batch, so we know exactly who must fail.
    psis = [round(0.3 + 0.01 * i, 2) for i in range(12)] + [float(POISON_PSI)]
    results: dict[float, str] = {}

    def call(psi: float) -> None:
        try:
            with AvatarClient(server.target, retries=0, timeout=60) as client:
                client.generate(f"batch mate {psi}", seed=3, psi=psi)
            results[psi] = "OK"
        except grpc.RpcError as e:
            results[psi] = e.code().name

    threads = [threading.Thread(target=call, args=(p,)) for p in psis]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    in_failed_batch = {np.float32(v) for psi_values, failed in session.batches if failed for v in psi_values}
    for psi, code in results.items():
        expected = "INTERNAL" if np.float32(psi) in in_failed_batch else "OK"
        assert code == expected, (psi, code, session.batches)
    assert results[float(POISON_PSI)] == "INTERNAL" and list(results.values()).count("OK") >= 1
    wait_idle(server, resting)
    assert_serves_normally(server.target)


# --- SIGTERM under load -----------------------------------------------------------------

def sigterm_under_load(model_repo, streams: int) -> None:
    with subprocess_server(model_repo, "--grace-seconds", "300", "--max-inflight-per-client", "0",
                           timeout=300) as s:
        channel = grpc.insecure_channel(s.target)
        stub = pb_grpc.AvatarServiceStub(channel)
        calls = [stub.Generate(pb.GenerateRequest(prompt=f"load {i}", seed=i, count=4,
                                                  output=pb.OutputOptions(size=256)), timeout=120)
                 for i in range(streams)]
        firsts = [next(c) for c in calls]  # every stream is in flight
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE),
                                                          timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        s.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # New calls: UNAVAILABLE (from the guard while draining, then from the closed port).
        # A call that reaches gRPC in the very instant it stops may be CANCELLED by gRPC
        # itself, so this one waits a moment to test the steady state.
        time.sleep(0.5)
        late = grpc.insecure_channel(s.target)
        with pytest.raises(grpc.RpcError) as info:
            list(pb_grpc.AvatarServiceStub(late).Generate(pb.GenerateRequest(prompt="too late", seed=1), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        late.close()
        for first, call in zip(firsts, calls):
            assembler = StreamAssembler()
            assembler.feed(first)
            for message in call:
                assembler.feed(message)
            assert assembler.done and len(assembler.result.textures) == 4
        # The Watch stream ends by itself (server/health.py) instead of holding the server
        # for the whole 300 s grace period; so the process exits once the streams are done.
        assert all(m.status == health_pb2.HealthCheckResponse.NOT_SERVING for m in watch)
        channel.close()
        assert s.process.wait(120) == 0
    log = [json.loads(line) for line in s.log_lines if line.startswith("{")]
    ok = [e for e in log if e.get("method") == "Generate" and e.get("code") == "OK"]
    assert len(ok) == streams and any(e["message"] == "stopped" for e in log)


def test_draining_server_refuses_new_calls_with_unavailable(server):
    """Between SIGTERM and gRPC's own stop, new calls are refused, not served or cancelled."""
    async def drain(on: bool) -> None:
        server.server.guard.draining = on

    server.call(drain(True))
    try:
        with AvatarClient(server.target, retries=0) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.list_models()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in info.value.details()
            assert client.health() == "SERVING"  # health is the server's to set, not the guard's
    finally:
        server.call(drain(False))


def test_drain_period_refuses_new_calls_before_the_port_closes(model_repo):
    """--drain-seconds: after shutdown begins, health says NOT_SERVING and the port stays open
    answering new calls with UNAVAILABLE (the guard's "shutting down", which clients retry
    on another replica) instead of closing at once, where a call arriving in that instant can
    be CANCELLED by gRPC itself (a rare failure of the rolling-update test before the drain)."""
    with running_server(model_repo, drain_seconds=2.0) as s:
        channel = grpc.insecure_channel(s.target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        async def stop() -> None:
            await s.server.stop(0)

        stopping = asyncio.run_coroutine_threadsafe(stop(), s.loop)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        details = []
        while time.monotonic() - started < 1.0:  # well inside the drain: each call on a new connection
            late = grpc.insecure_channel(s.target)
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.AvatarServiceStub(late).ListModels(pb.ListModelsRequest(), timeout=5)
            details.append((info.value.code(), info.value.details()))
            late.close()
        assert len(details) >= 3 and all(code == grpc.StatusCode.UNAVAILABLE and "shutting down" in text
                                          for code, text in details), details
        stopping.result(30)
        assert time.monotonic() - started >= 2.0  # the port closed only after the drain
        channel.close()


def test_sigterm_under_load(model_repo):
    sigterm_under_load(model_repo, streams=8)


@pytest.mark.slow
def test_sigterm_under_load_64(model_repo):
    sigterm_under_load(model_repo, streams=64)


# --- broken bundles and impossible devices ----------------------------------------------

def broken_copy(model_repo, tmp_path, how: str):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    manifest_path = repo / "tiny" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["files"]["image_encoder"]
    if how == "wrong hash":
        entry["sha256"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
    elif how == "missing file":
        (repo / "tiny" / entry["path"]).unlink()
    elif how == "corrupt file":  # same length, one byte changed
        path = repo / "tiny" / entry["path"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return repo, entry["path"]


@pytest.mark.parametrize("how, says", [("wrong hash", "does not match the manifest"),
                                       ("missing file", "is missing (listed as files.image_encoder)"),
                                       ("corrupt file", "is corrupt or replaced")])
def test_broken_bundle_is_refused_naming_the_file(model_repo, tmp_path, how, says):
    repo, name = broken_copy(model_repo, tmp_path, how)
    with pytest.raises(BundleError) as info:
        with running_server(repo):
            pass
    assert f"tiny: {name} " in str(info.value) and says in str(info.value)


def test_device_cuda_without_gpu_stops_the_process(model_repo):
    process = subprocess.Popen([sys.executable, "-m", "moe_avatar.server.main", "--models", str(model_repo), "--port", "0",
                                "--device", "cuda", "--log-format", "text"], cwd=REPO_ROOT, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    try:
        log = ""
        for line in process.stderr:  # ends when the process exits
            log += line
            if "serving on port" in line:
                pytest.skip("CUDA works on this machine, so --device cuda rightly starts")
        assert process.wait(60) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "cannot start: --device cuda:" in log and "start with --device cpu" in log


# --- client-side resilience: a replica killed mid-stream ---------------------------------

class Replacement:
    """Kills the server process after the first complete texture and starts a new one on
    the same port (in a thread, so the client meanwhile sees UNAVAILABLE and backs off)."""

    def __init__(self, model_repo, victim, port: int) -> None:
        self.model_repo, self.victim, self.port = model_repo, victim, port
        self.context = None
        self.thread: threading.Thread | None = None
        self.textures_before_kill = 0

    def on_progress(self, message: pb.GenerateResponse) -> None:
        if message.WhichOneof("event") == "chunk" and message.chunk.last:
            self.textures_before_kill += 1
            if self.thread is None:
                self.victim.process.send_signal(signal.SIGKILL)
                self.victim.process.wait(30)
                self.thread = threading.Thread(target=self._start)
                self.thread.start()

    def _start(self) -> None:
        self.context = subprocess_server(self.model_repo, "--port", str(self.port), timeout=300)
        self.server = self.context.__enter__()

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(300)
        if self.context is not None:
            self.context.__exit__(None, None, None)


def resumed_generate(model_repo, **kwargs):
    """Generate with the server killed after the first texture; returns (result, the
    same request answered by the new server without any fault)."""
    port = free_port()
    with subprocess_server(model_repo, "--port", str(port), timeout=300) as first:
        replacement = Replacement(model_repo, first, port)
        try:
            with AvatarClient(f"127.0.0.1:{port}", retries=40, backoff=0.2, max_backoff=2.0, timeout=600) as client:
                result = client.generate("resume me", on_progress=replacement.on_progress, **kwargs)
                reference = client.generate("resume me", **kwargs)
        finally:
            replacement.close()
    assert replacement.textures_before_kill >= 1 and result.resumes >= 1
    return result, reference


def test_client_resumes_a_broken_stream_by_seed(model_repo):
    result, reference = resumed_generate(model_repo, count=6, seed=100, output=pb.OutputOptions(size=256))
    assert [t.seed for t in result.textures] == list(range(100, 106))
    assert [t.index for t in result.textures] == list(range(6))
    assert [t.data for t in result.textures] == [t.data for t in reference.textures]  # bit-identical avatars


@pytest.mark.slow
def test_client_resumes_a_broken_reranked_stream(model_repo):
    result, reference = resumed_generate(model_repo, count=4, rerank=2, seed=500, output=pb.OutputOptions(size=256))
    assert [(t.seed, t.data) for t in result.textures] == [(t.seed, t.data) for t in reference.textures]


def test_a_call_without_a_peer_leaves_like_any_other():
    """gRPC reports no peer ("") for a call whose connection is already gone. Such a call is
    counted in flight like any other and must leave the count when it ends; under the key that
    means "not counted" it stayed in flight forever (the crowd tests' rare `in_flight: 1`)."""
    from moe_avatar.server.guard import RequestGuard

    class GoneConnection:
        def peer(self) -> str:
            return ""

    guard = RequestGuard(max_inflight_per_client=4)
    client = asyncio.run(guard._enter(GoneConnection(), "/moeavatar.v1.AvatarService/Generate"))  # noqa: SLF001
    assert guard.in_flight == 1
    guard._leave(client)  # noqa: SLF001
    assert guard.in_flight == 0
