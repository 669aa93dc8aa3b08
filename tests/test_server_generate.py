"""Generate / Interpolate / EncodeText / model info against a real in-process server
serving the tiny exported bundle."""

from __future__ import annotations

import hashlib
import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image
from server_util import running_server

from moe_avatar_client.client import AvatarClient, output_options
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

PROMPT = "pink twin tails, cat ears"


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with AvatarClient(server.target, timeout=30) as c:
        yield c


def rgba(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_generate_returns_count_textures_that_decode(client):
    result = client.generate(PROMPT, count=3, seed=11)
    assert (result.model, result.seed, len(result.textures)) == ("tiny", 11, 3)
    assert [t.seed for t in result.textures] == [11, 12, 13]
    assert [t.index for t in result.textures] == [0, 1, 2]
    for tex in result.textures:
        assert (tex.width, tex.height, tex.format) == (64, 64, pb.TEXTURE_FORMAT_PNG)
        assert tex.resize_filter == pb.RESIZE_FILTER_UNSPECIFIED
        assert rgba(tex.data).shape == (64, 64, 4)
        assert -1.0 <= tex.clip_score <= 1.0


def test_same_seed_same_bytes_different_seed_different_image(client):
    a = client.generate(PROMPT, count=2, seed=5).textures
    b = client.generate(PROMPT, count=2, seed=5).textures
    assert [t.data for t in a] == [t.data for t in b]
    assert not np.array_equal(rgba(a[0].data), rgba(a[1].data))  # seeds 5 and 6


def test_pixels_follow_the_bundle_seed_rule(client, model_repo):
    """A client that knows the seed -> z rule reproduces the server's pixels with ORT."""
    import onnxruntime as ort
    import tokenizers

    bundle = model_repo / "tiny"
    tok = tokenizers.Tokenizer.from_file(str(bundle / "tokenizer.json"))
    text = ort.InferenceSession(str(bundle / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    gen = ort.InferenceSession(str(bundle / "generator.onnx"), providers=["CPUExecutionProvider"])
    emb = text.run(None, {"input_ids": np.array([tok.encode(PROMPT).ids], dtype=np.int64)})[0]
    z_dim = json.loads((bundle / "manifest.json").read_text())["z_dim"]
    z = np.random.Generator(np.random.PCG64(42)).standard_normal(z_dim, dtype=np.float32)[None]
    expected = gen.run(None, {"z": z, "text_embedding": emb, "psi": np.array([0.5], np.float32)})[0][0]
    tex = client.generate(PROMPT, seed=42, psi=0.5, output=output_options("rgba")).textures[0]
    np.testing.assert_array_equal(np.frombuffer(tex.data, np.uint8).reshape(64, 64, 4), expected)


def test_png_rgba_webp_agree_and_bottom_up_is_the_flip(client):
    png = client.generate(PROMPT, seed=3, output=output_options("png")).textures[0]
    raw = client.generate(PROMPT, seed=3, output=output_options("rgba")).textures[0]
    webp = client.generate(PROMPT, seed=3, output=output_options("webp")).textures[0]
    flipped = client.generate(PROMPT, seed=3, output=output_options("rgba", row_order="bottom-up")).textures[0]
    top_down = np.frombuffer(raw.data, np.uint8).reshape(64, 64, 4)
    assert raw.format == pb.TEXTURE_FORMAT_RGBA8 and len(raw.data) == 64 * 64 * 4
    np.testing.assert_array_equal(rgba(png.data), top_down)
    np.testing.assert_array_equal(rgba(webp.data), top_down)
    assert flipped.row_order == pb.ROW_ORDER_BOTTOM_UP
    np.testing.assert_array_equal(np.frombuffer(flipped.data, np.uint8).reshape(64, 64, 4), top_down[::-1])


@pytest.mark.parametrize("fmt, size", [("png", 512), ("rgba", 512), ("rgba", 1024)])
def test_chunking_keeps_every_message_under_the_limit(server, fmt, size):
    stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(server.target))
    request = pb.GenerateRequest(prompt=PROMPT, seed=1, count=2, output=output_options(fmt, size, "nearest"))
    messages = list(stub.Generate(request, timeout=30))
    assert max(m.ByteSize() for m in messages) < (1 << 20) + 1024
    headers = [m.texture for m in messages if m.WhichOneof("event") == "texture"]
    assert [(h.width, h.height, h.resize_filter) for h in headers] == [(size, size, pb.RESIZE_FILTER_NEAREST)] * 2
    for h in headers:
        chunks = [m.chunk for m in messages if m.WhichOneof("event") == "chunk" and m.chunk.texture_index == h.index]
        data = b"".join(c.data for c in chunks)
        assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert len(data) == h.total_bytes and hashlib.sha256(data).digest() == h.sha256
        if fmt == "rgba":
            assert len(chunks) == max(1, size * size * 4 >> 20)
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[0] == "started" and kinds[-1] == "done"
    stages = [m.progress.stage for m in messages if m.WhichOneof("event") == "progress"]
    assert stages == [pb.STAGE_QUEUED, pb.STAGE_ENCODING_TEXT, pb.STAGE_GENERATING, pb.STAGE_SCORING,
                      pb.STAGE_ENCODING_TEXTURES]


def test_rerank_keeps_the_best_and_each_seed_reproduces(client):
    result = client.generate(PROMPT, count=2, seed=100, rerank=4)
    scores = [t.clip_score for t in result.textures]
    assert len(result.textures) == 2 and scores == sorted(scores, reverse=True)
    all_candidates = client.generate(PROMPT, count=8, seed=100).textures
    assert max(t.clip_score for t in all_candidates) == pytest.approx(scores[0])
    for tex in result.textures:
        assert 100 <= tex.seed < 108
        assert client.generate(PROMPT, seed=tex.seed).textures[0].data == tex.data


def test_unset_seed_is_picked_and_reported(client):
    result = client.generate(PROMPT, count=2)
    assert [t.seed for t in result.textures] == [result.seed, result.seed + 1]
    again = client.generate(PROMPT, count=2, seed=result.seed)
    assert [t.data for t in again.textures] == [t.data for t in result.textures]


def test_chinese_prompt(client):
    result = client.generate("粉色双马尾的女孩，猫耳", seed=1)
    assert rgba(result.textures[0].data).shape == (64, 64, 4)


def test_interpolate_endpoints_equal_generate(client):
    start, end = (PROMPT, 7), ("silver bob, sleepy", 99)
    frames = client.interpolate(start, end, frames=5, psi=0.8).textures
    assert [f.index for f in frames] == list(range(5))
    assert [f.t for f in frames] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert [f.seed for f in frames] == [7, None, None, None, 99]
    assert frames[0].data == client.generate(start[0], seed=start[1], psi=0.8).textures[0].data
    assert frames[-1].data == client.generate(end[0], seed=end[1], psi=0.8).textures[0].data
    assert len({f.data for f in frames}) == 5


def test_encode_text(client):
    emb = np.array(client.encode_text("blue bob"))
    assert emb.shape == (client.model_info().embed_dim,)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-4)


def test_model_info_and_list(client):
    info = client.model_info()
    assert (info.name, info.version, info.resolution, info.is_default) == ("tiny", "0.0.1", 64, True)
    assert info.execution_provider == "CPUExecutionProvider"
    assert list(info.attributes["hair_color"].values)
    assert json.loads(info.manifest_json)["name"] == "tiny"
    listing = client.list_models()
    assert listing.default_model == "tiny" and [m.name for m in listing.models] == ["tiny"]
    assert client.model_info("tiny", "0.0.1").version == "0.0.1"
