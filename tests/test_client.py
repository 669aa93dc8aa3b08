"""The Python client and the `moe-avatar` CLI against a real server."""

from __future__ import annotations

import hashlib
import time

import grpc
import pytest
from PIL import Image
from server_util import free_port, running_server

from moe_avatar_client import cli
from moe_avatar_client.client import AvatarClient, ChecksumError, StreamAssembler
from moeavatar.v1 import avatar_pb2 as pb


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo) as s:
        yield s


def test_cli_generate_writes_pngs_named_by_seed(server, tmp_path, capsys):
    rc = cli.main(["--target", server.target, "generate", "pink twin tails, cat ears", "-n", "3", "--seed", "7",
                   "-o", str(tmp_path), "--size", "128", "--psi", "0.5", "--rerank", "2", "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("clip_score=" in line for line in lines)
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 3
    for f in files:
        assert 7 <= int(f.stem) < 13
        assert Image.open(f).size == (128, 128)


def test_cli_rgba_interpolate_info_health(server, tmp_path, capsys):
    assert cli.main(["--target", server.target, "generate", "blue bob", "--seed", "1", "--format", "rgba",
                     "--bottom-up", "-o", str(tmp_path), "-q"]) == 0
    assert (tmp_path / "1.rgba").stat().st_size == 256 * 256 * 4  # the default size, through the upscaler
    assert cli.main(["--target", server.target, "interpolate", "blue bob", "1", "silver bob", "2",
                     "--frames", "3", "-o", str(tmp_path / "morph"), "-q"]) == 0
    assert len(list((tmp_path / "morph").glob("frame-*.png"))) == 3
    capsys.readouterr()
    assert cli.main(["--target", server.target, "info"]) == 0
    info = capsys.readouterr().out
    assert "tiny 0.0.1" in info and "hair_color:" in info and "64px (upscaler to 256px)" in info
    assert cli.main(["--target", server.target, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_cli_reports_bad_input(server, capsys):
    assert cli.main(["--target", server.target, "generate", "x", "-n", "99", "-q"]) == 1
    assert "INVALID_ARGUMENT: count: must be 1..16" in capsys.readouterr().err


def test_token_is_sent_as_bearer_metadata(server):
    with AvatarClient(server.target, token="secret") as client:
        assert client.metadata == [("authorization", "Bearer secret")]
        assert client.generate("with token", seed=1).textures  # the server accepts (and ignores) it today


def test_unavailable_is_retried_with_backoff_then_raised():
    client = AvatarClient(f"127.0.0.1:{free_port()}", retries=2, backoff=0.1, timeout=2)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        client.generate("nobody listens", seed=1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start >= 0.3  # slept 0.1 + 0.2 between the three attempts
    client.close()


def test_retry_reaches_a_server_that_comes_up(model_repo):
    """UNAVAILABLE while the server starts, then success: the retry loop is what users rely on."""
    import threading

    port = free_port()
    holder: dict = {}

    def start_late() -> None:
        time.sleep(0.3)
        holder["ctx"] = running_server(model_repo, port=port)
        holder["server"] = holder["ctx"].__enter__()

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        with AvatarClient(f"127.0.0.1:{port}", retries=6, backoff=0.2, timeout=10) as client:
            assert client.generate("late server", seed=1).textures
    finally:
        thread.join()
        if "ctx" in holder:
            holder["ctx"].__exit__(None, None, None)


def _stream(data: bytes, sha: bytes) -> list[pb.GenerateResponse]:
    header = pb.TextureHeader(index=0, width=1, height=1, total_bytes=len(data), sha256=sha)
    return [pb.GenerateResponse(texture=header),
            pb.GenerateResponse(chunk=pb.TextureChunk(texture_index=0, offset=0, data=data[:2])),
            pb.GenerateResponse(chunk=pb.TextureChunk(texture_index=0, offset=2, data=data[2:], last=True))]


def test_assembler_verifies_checksums():
    data = b"abcdef"
    ok = StreamAssembler()
    for m in _stream(data, hashlib.sha256(data).digest()):
        ok.feed(m)
    assert ok.result.textures[0].data == data
    bad = StreamAssembler()
    with pytest.raises(ChecksumError, match="sha256"):
        for m in _stream(data, hashlib.sha256(b"other").digest()):
            bad.feed(m)
