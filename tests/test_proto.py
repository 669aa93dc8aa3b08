"""The proto is the one contract: the checked-in generated code must match it."""

from __future__ import annotations

import subprocess
import sys

from server_util import REPO_ROOT

from moeavatar.v1 import avatar_pb2 as pb

GENERATED = ["avatar_pb2.py", "avatar_pb2.pyi", "avatar_pb2_grpc.py"]


def test_generated_code_is_not_stale(tmp_path):
    out = subprocess.run([sys.executable, "protos/codegen.py", "--out", str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in GENERATED:
        fresh = (tmp_path / "moeavatar" / "v1" / name).read_bytes()
        checked_in = (REPO_ROOT / "clients" / "python" / "moeavatar" / "v1" / name).read_bytes()
        assert fresh == checked_in, f"{name} is stale: run `python protos/codegen.py`"


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
