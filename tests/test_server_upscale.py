"""The bundle's upscaler in the server: sizes above native go through it (RESIZE_FILTER_MODEL,
the default there), then to the exact size; other filters stay selectable. Runs on the
committed tiny bundle, whose tiny upscaler went through the real exporter (no torch here)."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from server_util import running_server

from moe_avatar.server import textures
from moe_avatar_client.client import AvatarClient, output_options
from moeavatar.v1 import avatar_pb2 as pb

PROMPT = "pink twin tails, cat ears"


@pytest.fixture(scope="module")
def client(model_repo):
    with running_server(model_repo) as s, AvatarClient(s.target, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def native(client) -> np.ndarray:
    """The generator's own 64 px drawings of seeds 5 and 6."""
    result = client.generate(PROMPT, count=2, seed=5, output=output_options("rgba"))
    return np.stack([np.frombuffer(t.data, np.uint8).reshape(64, 64, 4) for t in result.textures])


def upscaled(bundle_dir, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle_dir / "upscaler.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


def pixels(client, size: int, flt: str, fmt: str = "rgba") -> tuple[list[int], np.ndarray]:
    result = client.generate(PROMPT, count=2, seed=5, output=output_options(fmt, size, flt))
    if fmt == "rgba":
        arrays = [np.frombuffer(t.data, np.uint8).reshape(t.height, t.width, 4) for t in result.textures]
    else:
        arrays = [np.asarray(Image.open(io.BytesIO(t.data)).convert("RGBA")) for t in result.textures]
    return [t.resize_filter for t in result.textures], np.stack(arrays)


def test_model_info_reports_native_and_upscaled_size(client):
    info = client.list_models().models[0]
    assert (info.resolution, info.upscaled_resolution) == (64, 256)
    assert json.loads(info.manifest_json)["upscaler"]["resolution"] == 256


def test_sizes_above_native_go_through_the_upscaler_by_default(client, native, tiny_bundle):
    expected = upscaled(tiny_bundle, native)
    filters, got = pixels(client, 256, "model")
    assert filters == [pb.RESIZE_FILTER_MODEL] * 2 and np.array_equal(got, expected)
    request = pb.OutputOptions(format=pb.TEXTURE_FORMAT_PNG, size=256)  # filter left out: the model's default
    result = client.generate(PROMPT, count=2, seed=5, output=request)
    assert [t.resize_filter for t in result.textures] == [pb.RESIZE_FILTER_MODEL] * 2
    png = np.stack([np.asarray(Image.open(io.BytesIO(t.data)).convert("RGBA")) for t in result.textures])
    assert np.array_equal(png, expected)  # lossless


def test_other_sizes_are_resampled_from_the_upscaler_output(client, native, tiny_bundle):
    filters, got = pixels(client, 200, "model")
    up = upscaled(tiny_bundle, native)
    expected = np.stack([np.asarray(Image.fromarray(im, "RGBA").resize((200, 200), Image.Resampling.LANCZOS)) for im in up])
    assert filters == [pb.RESIZE_FILTER_MODEL] * 2 and np.array_equal(got, expected)
    filters, got = pixels(client, 48, "model")  # below native: no upscaler
    assert filters == [pb.RESIZE_FILTER_LANCZOS] * 2 and got.shape == (2, 48, 48, 4)


def test_an_explicit_filter_is_honoured(client, native, tiny_bundle):
    filters, got = pixels(client, 256, "lanczos")
    expected = np.stack([np.asarray(Image.fromarray(im, "RGBA").resize((256, 256), Image.Resampling.LANCZOS)) for im in native])
    assert filters == [pb.RESIZE_FILTER_LANCZOS] * 2 and np.array_equal(got, expected)
    assert not np.array_equal(got, upscaled(tiny_bundle, native))
    filters, got = pixels(client, 256, "nearest")
    assert filters == [pb.RESIZE_FILTER_NEAREST] * 2 and np.array_equal(got, native.repeat(4, 1).repeat(4, 2))


def test_resolve_filter_without_an_upscaler_is_lanczos():
    spec = textures.OutputSpec(size=256)
    assert textures.resolve_filter(spec, 64, None).filter == pb.RESIZE_FILTER_LANCZOS
    assert textures.resolve_filter(spec, 64, 256).filter == pb.RESIZE_FILTER_MODEL
    model = textures.OutputSpec(size=256, filter=pb.RESIZE_FILTER_MODEL)
    assert textures.resolve_filter(model, 64, None).filter == pb.RESIZE_FILTER_LANCZOS
    assert textures.resolve_filter(textures.OutputSpec(size=64), 64, 256).filter == pb.RESIZE_FILTER_LANCZOS
    bicubic = textures.OutputSpec(size=256, filter=pb.RESIZE_FILTER_BICUBIC)
    assert textures.resolve_filter(bicubic, 64, 256) == bicubic
