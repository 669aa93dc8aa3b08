"""Bad input, unknown models, deadlines, cancellation and a full queue each give the
right status code, and the server keeps serving everyone else."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from server_util import running_server

from moe_avatar_client.client import AvatarClient
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo) as s:
        yield s


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.target)
    yield pb_grpc.AvatarServiceStub(channel)
    channel.close()


def call_error(fn, request, timeout: float = 10) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(request, timeout=timeout)
        if not isinstance(result, pb.ModelInfo | pb.EncodeTextResponse | pb.ListModelsResponse):
            list(result)
    return info.value


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None, "rich status details missing"
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


OK = dict(prompt="pink twin tails", seed=1)
BAD_GENERATE = [
    ("prompt", dict(prompt="   "), "must not be empty"),
    ("prompt", dict(prompt="x" * 1001), "at most 1000 characters"),
    ("count", dict(count=17), "1..16"),
    ("rerank", dict(rerank=9), "1..8"),
    ("rerank", dict(count=16, rerank=5), "at most 64"),
    ("seed", dict(seed=2**63), "2^63-1"),
    ("psi", dict(psi=2.5), "0..2"),
    ("psi", dict(psi=float("nan")), "0..2"),
    ("output.size", dict(output=pb.OutputOptions(size=8)), "16..1024"),
    ("output.size", dict(output=pb.OutputOptions(size=4096)), "16..1024"),
    ("output.format", dict(output=pb.OutputOptions(format=42)), "unknown value 42"),
    ("output.filter", dict(output=pb.OutputOptions(size=32, filter=9)), "unknown value 9"),
    ("output.row_order", dict(output=pb.OutputOptions(row_order=pb.ROW_ORDER_BOTTOM_UP)), "only to format RGBA8"),
    ("model", dict(model="m" * 200), "at most 128"),
    ("prompt", dict(prompt="\0\0"), "visible character"),
    ("prompt", dict(prompt="\u200b\u200c\u200d\u2060"), "visible character"),  # zero-width
    ("prompt", dict(prompt="\x01\x07\x1b\x7f"), "visible character"),  # control characters
    ("prompt", dict(prompt="\ufeff"), "visible character"),  # a BOM alone
]


@pytest.mark.parametrize("field, change, limit", BAD_GENERATE, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_GENERATE)])
def test_bad_generate_field(stub, field, change, limit):
    error = call_error(stub.Generate, pb.GenerateRequest(**{**OK, **change}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details() and limit in error.details()
    assert limit in violations(error)[field]


def test_all_bad_fields_reported_at_once(stub):
    error = call_error(stub.Generate, pb.GenerateRequest(prompt="", count=99, psi=-1))
    assert set(violations(error)) == {"prompt", "count", "psi"}


@pytest.mark.parametrize("request_, field", [
    (pb.InterpolateRequest(start=pb.Endpoint(prompt="a"), end=pb.Endpoint(prompt="")), "end.prompt"),
    (pb.InterpolateRequest(start=pb.Endpoint(prompt="a"), end=pb.Endpoint(prompt="b"), frames=65), "frames"),
    (pb.InterpolateRequest(start=pb.Endpoint(prompt="a", seed=2**64 - 1), end=pb.Endpoint(prompt="b")),
     "start.seed"),
])
def test_bad_interpolate_field(stub, request_, field):
    error = call_error(stub.Interpolate, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(error)


def test_bad_encode_text(stub):
    error = call_error(stub.EncodeText, pb.EncodeTextRequest(prompt=""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt" in violations(error)


@pytest.mark.parametrize("model, version", [("nope", ""), ("../tiny", ""), ("/etc/passwd", ""), ("tiny", "9.9")])
def test_unknown_model_is_not_found(stub, model, version):
    for fn, request in [(stub.Generate, pb.GenerateRequest(**OK, model=model, model_version=version)),
                        (stub.GetModelInfo, pb.GetModelInfoRequest(model=model, model_version=version)),
                        (stub.EncodeText, pb.EncodeTextRequest(prompt="a", model=model, model_version=version))]:
        error = call_error(fn, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "not loaded" in error.details()


def test_server_keeps_serving_after_errors(server, stub):
    for _ in range(3):
        call_error(stub.Generate, pb.GenerateRequest(prompt=""))
    assert len(list(stub.Generate(pb.GenerateRequest(**OK), timeout=10))) > 3
    assert server.metrics.requests.labels("Generate", "INVALID_ARGUMENT")._value.get() >= 3


# --- deadlines, cancellation, queue limits: a server whose batches wait long ---------

@pytest.fixture(scope="module")
def slow_server(model_repo):
    """Batches wait 300 ms for company and only one request may wait per graph.

    A batch waits only for requests announced to the pipeline (`admit`), so the fixture
    holds one announced request open: every batch then waits its full 300 ms."""
    with running_server(model_repo, max_wait_ms=300.0, max_queue=1, max_batch=64) as s:
        pipeline = s.server.pipelines[0]

        async def admit():
            return pipeline.admit()

        async def close(ticket):
            ticket.close()

        ticket = s.call(admit())
        yield s
        s.call(close(ticket))


def queue_depth(server) -> float:
    return sum(s.value for m in server.metrics.queue_depth.collect() for s in m.samples)


def test_deadline_exceeded(slow_server):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(slow_server.target))
    error = call_error(stub.Generate, pb.GenerateRequest(prompt="deadline test", seed=1), timeout=0.1)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.4)  # the server noticed and freed the queue slot
    assert queue_depth(slow_server) == 0
    assert slow_server.metrics.requests.labels("Generate", "DEADLINE_EXCEEDED")._value.get() == 1


def test_cancelled_request_leaves_the_queue(slow_server):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(slow_server.target))
    call = stub.Generate(pb.GenerateRequest(prompt="cancel me", seed=1), timeout=10)
    next(call)  # Started: the request is in (or about to enter) the queue
    time.sleep(0.05)
    assert queue_depth(slow_server) == 1
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    time.sleep(0.1)
    assert queue_depth(slow_server) == 0
    # The slot is free again: a new request is accepted and completes.
    assert AvatarClient(slow_server.target).generate("after cancel", seed=2).textures


def test_queue_full_is_resource_exhausted(slow_server):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(slow_server.target))
    first = stub.Generate(pb.GenerateRequest(prompt="first in the queue", seed=1), timeout=10)
    next(first)
    time.sleep(0.05)  # `first` now waits 300 ms in the text-encoder queue (max_queue=1)
    error = call_error(stub.Generate, pb.GenerateRequest(prompt="second", seed=1))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in error.details()
    assert [m.WhichOneof("event") for m in first][-1] == "done"  # the first one is unaffected


@pytest.mark.parametrize("rpc, request_", [
    ("EncodeText", pb.EncodeTextRequest(prompt="\ufeff\u200b")),
    ("Interpolate", pb.InterpolateRequest(start=pb.Endpoint(prompt="\0"), end=pb.Endpoint(prompt="cat ears"))),
])
def test_invisible_prompt_is_refused_on_every_rpc(stub, rpc, request_):
    error = call_error(getattr(stub, rpc), request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "visible character" in error.details()


def test_get_model_info_applies_the_name_limits(stub):
    for field, request_ in (("model", pb.GetModelInfoRequest(model="m" * 20_000)),
                            ("model_version", pb.GetModelInfoRequest(model="tiny", model_version="9" * 5000))):
        error = call_error(stub.GetModelInfo, request_)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # not a broken status: the name is not echoed
        assert "at most 128" in violations(error)[field] and len(error.details()) < 200


def test_health_check_with_undecodable_bytes_is_invalid_argument(server):
    with grpc.insecure_channel(server.target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as info:
            check(b"\xff\xff\xff\xff", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid grpc.health.v1.HealthCheckRequest" in info.value.details()
        assert "Error" not in info.value.details()  # no Python class names
        assert check(b"", timeout=10) == b"\x08\x01"  # a valid empty request still says SERVING


def test_every_log_line_is_json_including_library_tracebacks():
    code = """if True:
        import asyncio, logging
        from moe_avatar.server.logs import setup_logging
        setup_logging("json", "INFO")
        loop = asyncio.new_event_loop()
        loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": ValueError("x")})
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        raise RuntimeError("uncaught")
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    entries = [json.loads(line) for line in out.stderr.splitlines()]  # fails on any non-JSON line
    assert [e["logger"] for e in entries] == ["asyncio", "aiohttp.server", "root"]
    assert "ValueError: x" in entries[0]["exception"]
    assert all("Traceback" in e["exception"] for e in entries[1:])
