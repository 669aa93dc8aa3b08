"""GDScript against a live server: clients/godot/godot3_smoke/smoke.gd (a Godot 3 twin of the
Godot 4 addon's request logic) runs under Debian's headless `godot3-server`, talks to the HTTP
bridge, joins the streamed chunks, checks SHA-256, decodes the PNGs into Godot Images and
prints one line per texture. Skipped when godot3-server is not installed
(`apt-get install -y godot3-server`; .ci/run does it when it can)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import grpc
import pytest
from server_util import REPO_ROOT, free_port, running_server

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

GODOT = shutil.which("godot3-server")
PROJECT = REPO_ROOT / "clients" / "godot" / "godot3_smoke"
PROMPT = "粉色双马尾，猫耳"

pytestmark = pytest.mark.skipif(GODOT is None, reason="godot3-server is not installed "
                                "(Debian: apt-get install -y godot3-server)")


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, http_port=free_port()) as s:
        yield s


def run_smoke(server, home, **env: str) -> subprocess.CompletedProcess:
    # A GDScript error does not end the engine, so a timeout is what catches a broken script.
    environ = {**os.environ, "HOME": str(home), "MOE_AVATAR_HTTP_PORT": str(server.server.http_port), **env}
    return subprocess.run([GODOT, "--path", str(PROJECT), "-s", "smoke.gd"], env=environ, capture_output=True,
                          text=True, timeout=120)


def test_gdscript_generates_and_decodes(server, tmp_path):
    run = run_smoke(server, tmp_path, MOE_AVATAR_PROMPT=PROMPT, MOE_AVATAR_COUNT="2", MOE_AVATAR_SEED="7")
    assert run.returncode == 0 and "RESULT ok textures=2" in run.stdout, run.stdout + run.stderr
    textures = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in run.stdout.splitlines()
                if line.startswith("TEXTURE ")]
    assert [(t["index"], t["seed"], t["image"]) for t in textures] == [("0", "7", "64x64"), ("1", "8", "64x64")]
    # The same bytes the gRPC port gives for the same request (so the UTF-8 prompt arrived intact).
    with grpc.insecure_channel(server.target) as channel:
        data: dict[int, bytes] = {}
        for m in pb_grpc.AvatarServiceStub(channel).Generate(pb.GenerateRequest(prompt=PROMPT, count=2, seed=7),
                                                             timeout=60):
            if m.HasField("chunk"):
                data[m.chunk.texture_index] = data.get(m.chunk.texture_index, b"") + m.chunk.data
    assert [t["sha256"] for t in textures] == [hashlib.sha256(data[i]).hexdigest() for i in (0, 1)]


def test_gdscript_reports_the_bridge_error(server, tmp_path):
    run = run_smoke(server, tmp_path, MOE_AVATAR_COUNT="99")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "RESULT error http=400 code=INVALID_ARGUMENT fields=count message=count: must be 1..16 (got 99)" \
        in run.stdout
