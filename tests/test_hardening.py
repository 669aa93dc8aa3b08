"""Hardening: a server that is never half-ready (bundle checks, warm-up), validation gaps,
bounded memory per call, fairness between clients, and the HTTP bridge's timeouts and
headers. Heavy measurements are `slow`; their figures are in tests/RELIABILITY.md."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import sys
import time

import grpc
import pytest

from moe_avatar.server.bundle import BundleError, sha256_file
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc
from server_util import REPO_ROOT, running_server

# --- bundles: checked against their graphs, warmed up, refused in one line ----------------


def _broken(model_repo: pathlib.Path, tmp_path: pathlib.Path, how: str) -> pathlib.Path:
    """A copy of the tiny bundle with one thing wrong that still parses."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    d = repo / "tiny"
    manifest = json.loads((d / "manifest.json").read_text())
    if how in ("z_dim", "context_length", "resolution", "embed_dim"):
        manifest[how] += 13
    elif how == "attributes":
        manifest["attributes"] = "hair_color"
    elif how == "invalid onnx":
        (d / "generator.onnx").write_bytes(b"not an onnx graph")
        manifest["files"]["generator"]["sha256"] = sha256_file(d / "generator.onnx")
    elif how == "tokenizer":
        (d / "tokenizer.json").write_text('{"vocab": {"a": 1}}')
        manifest["files"]["tokenizer"]["sha256"] = sha256_file(d / "tokenizer.json")
    elif how == "manifest list":
        manifest = []
    (d / "manifest.json").write_text(json.dumps(manifest))
    return repo


BROKEN = [  # how, the file and the field the one line must name
    ("z_dim", "generator.onnx", "z_dim"),
    ("context_length", "text_encoder.onnx", "context_length"),
    ("resolution", "generator.onnx", "resolution"),
    ("embed_dim", "text_encoder.onnx", "embed_dim"),
    ("attributes", "manifest.json", "attributes"),
    ("invalid onnx", "generator.onnx", "files.generator"),
    ("tokenizer", "tokenizer.json", "files.tokenizer"),
    ("manifest list", "manifest.json", "JSON object"),
]


@pytest.mark.parametrize("how, file, field", BROKEN)
def test_broken_bundle_is_refused_naming_file_and_field(model_repo, tmp_path, how, file, field):
    repo = _broken(model_repo, tmp_path, how)
    with pytest.raises(BundleError) as info:
        with running_server(repo):
            pass
    assert file in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("how", ["invalid onnx", "tokenizer", "z_dim"])
def test_broken_bundle_exits_1_with_one_cannot_start_line(model_repo, tmp_path, how):
    repo = _broken(model_repo, tmp_path, how)
    out = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(repo), "--host",
                          "127.0.0.1", "--port", "0", "--device", "cpu", "--log-format", "json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert all(json.loads(line) for line in lines)  # no traceback: every line is a JSON log entry
    refusals = [json.loads(line)["message"] for line in lines if "cannot start:" in line]
    assert len(refusals) == 1 and "Traceback" not in out.stderr, out.stderr


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_no_manifest_under_models_holds_an_absolute_path():
    manifests = sorted((REPO_ROOT / "models").glob("*/manifest.json"))
    assert manifests
    for path in manifests:
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith(("/", "~"))
                    or (len(s) > 2 and s[1] == ":" and s[2] in "\\/")]
        assert not absolute, f"{path}: absolute paths {absolute}"


# --- memory per call: lazy encoding, a byte budget, stalled streams cut ------------------

MIB = 2**20
TEXTURE_1024 = 1024 * 1024 * 4  # one RGBA8 texture at 1024 px


def _morph(frames: int = 64) -> pb.InterpolateRequest:
    return pb.InterpolateRequest(start=pb.Endpoint(prompt="pink twin tails", seed=1),
                                 end=pb.Endpoint(prompt="silver bob", seed=2), frames=frames,
                                 output=pb.OutputOptions(size=1024, format=pb.TEXTURE_FORMAT_RGBA8))


def _wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _steady(read, settle: float = 1.0, timeout: float = 60.0):
    """The value of read() once it has not changed for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if (value := read()) != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= settle:
            return value
    raise AssertionError("never settled")


@contextlib.contextmanager
def _unread_streams(target: str, count: int, request):
    """`count` streams, each on its own connection, read up to their first message only."""
    channels = [grpc.insecure_channel(target) for _ in range(count)]
    streams = [pb_grpc.AvatarServiceStub(c).Interpolate(request, timeout=300) for c in channels]
    try:
        for s in streams:
            assert next(s).HasField("started")
        yield streams
    finally:
        for s in streams:
            s.cancel()
        for c in channels:
            c.close()


def test_unread_streams_hold_at_most_two_textures_each(model_repo):
    with running_server(model_repo, max_held_bytes=0, stream_stall_seconds=0) as s:
        budget = s.server.service.budget
        with _unread_streams(s.target, 4, _morph()):
            held = _steady(lambda: budget.held)
            assert 4 * TEXTURE_1024 <= held <= 4 * 2 * TEXTURE_1024  # was all 64 frames: 64 x 4 MiB per call
            assert _metric(s, "moe_avatar_held_texture_bytes") == held
        _wait_for(lambda: budget.held == 0 and s.server.guard.in_flight == 0, what="streams released")


def test_byte_budget_refuses_new_calls_until_slow_readers_release(model_repo):
    with running_server(model_repo, max_held_bytes=2 * TEXTURE_1024, stream_stall_seconds=0) as s:
        with grpc.insecure_channel(s.target) as channel:
            stub = pb_grpc.AvatarServiceStub(channel)
            with _unread_streams(s.target, 2, _morph()):
                _wait_for(lambda: s.server.service.budget.exhausted, what="budget full")
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.Generate(pb.GenerateRequest(prompt="cat ears", seed=1), timeout=30))
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--max-held-bytes" in info.value.details()
            _wait_for(lambda: s.server.service.budget.held == 0, what="budget released")
            kinds = [m.WhichOneof("event") for m in stub.Generate(pb.GenerateRequest(prompt="cat ears", seed=1),
                                                                   timeout=30)]
            assert kinds[-1] == "done"


def test_stalled_stream_is_cut_with_a_clear_status(model_repo):
    with running_server(model_repo, stream_stall_seconds=1.0) as s:
        with _unread_streams(s.target, 1, _morph()) as (stream,):
            _wait_for(lambda: s.server.guard.in_flight == 0, what="stream cut")
            assert s.server.service.budget.held == 0
            assert _metric(s, "moe_avatar_requests_total", method="Interpolate", code="DEADLINE_EXCEEDED") == 1
            with pytest.raises(grpc.RpcError) as info:
                for _ in stream:  # what the transport had buffered, then the status
                    pass
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with grpc.insecure_channel(s.target) as channel:  # everyone else is still served
            kinds = [m.WhichOneof("event") for m in pb_grpc.AvatarServiceStub(channel).Interpolate(
                _morph(frames=2), timeout=60)]
            assert kinds[-1] == "done"


def _metric(server, name: str, **labels) -> float:
    value = server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
