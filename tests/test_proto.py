"""The proto is the one contract: the checked-in generated code must match it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from server_util import REPO_ROOT

from moeavatar.v1 import avatar_pb2 as pb

GENERATED = ["avatar_pb2.py", "avatar_pb2.pyi", "avatar_pb2_grpc.py"]
CSHARP = REPO_ROOT / "clients" / "unity" / "Runtime" / "Generated"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
    """`python protos/codegen.py --out DIR`: everything generated from the proto, written afresh."""
    out = tmp_path_factory.mktemp("codegen")
    run = subprocess.run([sys.executable, "protos/codegen.py", "--out", str(out)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 2), run.stderr  # 2: no protoc of the pinned version for Avatar.cs
    return out, run


def test_generated_code_is_not_stale(fresh):
    out, _ = fresh
    for name in GENERATED:
        regenerated = (out / "python" / "moeavatar" / "v1" / name).read_bytes()
        checked_in = (REPO_ROOT / "clients" / "python" / "moeavatar" / "v1" / name).read_bytes()
        assert regenerated == checked_in, f"{name} is stale: run `python protos/codegen.py`"


def test_generated_csharp_client_stub_is_not_stale(fresh):
    out, _ = fresh
    assert (out / "csharp" / "AvatarGrpc.cs").read_bytes() == (CSHARP / "AvatarGrpc.cs").read_bytes(), \
        "clients/unity/Runtime/Generated/AvatarGrpc.cs is stale: run `python protos/codegen.py`"


def test_generated_csharp_messages_are_not_stale(fresh):
    out, run = fresh
    if run.returncode == 2:
        pytest.skip(f"Avatar.cs not regenerated: {run.stderr.strip()}")
    assert (out / "csharp" / "Avatar.cs").read_bytes() == (CSHARP / "Avatar.cs").read_bytes(), \
        "clients/unity/Runtime/Generated/Avatar.cs is stale: run `python protos/codegen.py`"


def test_a_proto_change_makes_the_csharp_stale(tmp_path):
    """The staleness check can fail: a renamed RPC changes the generated stub."""
    import importlib.util

    from google.protobuf import descriptor_pb2

    spec = importlib.util.spec_from_file_location("csharp_grpc", REPO_ROOT / "protos" / "csharp_grpc.py")
    csharp_grpc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(csharp_grpc)

    file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file)
    name, source = csharp_grpc.generate(file)
    assert name == "AvatarGrpc.cs"
    file.service[0].method[2].name = "LiveEdit"
    _, renamed = csharp_grpc.generate(file)
    assert '"LiveEdit"' in renamed and renamed != source
    # Without source info the doc comments are missing, so compare the code lines only.
    code = [line for line in source.splitlines() if not line.strip().startswith("///")]
    committed = [line for line in (CSHARP / "AvatarGrpc.cs").read_text().splitlines()
                 if not line.strip().startswith("///")]
    assert code == committed


def test_generated_imports_use_the_package_name():
    grpc_code = (REPO_ROOT / "clients" / "python" / "moeavatar" / "v1" / "avatar_pb2_grpc.py").read_text()
    assert "from moeavatar.v1 import avatar_pb2" in grpc_code


def test_contract_shape():
    service = pb.DESCRIPTOR.services_by_name["AvatarService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {"Generate": (False, True), "Interpolate": (False, True), "Edit": (True, True),
                       "EncodeText": (False, False), "GetModelInfo": (False, False), "ListModels": (False, False)}
    request = pb.GenerateRequest()
    assert not request.HasField("seed") and not request.HasField("psi")  # proto3 optional: unset is visible
    request.seed = 0
    assert request.HasField("seed")
