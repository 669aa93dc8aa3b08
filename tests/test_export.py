"""Export: a tiny untrained checkpoint through the real exporter, then checks on the bundle."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_avatar.bundle import clean_prompt, noise_from_seeds, sha256_file
from moe_avatar.export.bundle import ExportError, ExportOptions, export_bundle, verify_bundle, write_triton_repository
from moe_avatar.export.cli import main as export_main
from moe_avatar.export.tiny import make_tiny_bundle, make_tiny_checkpoints
from moe_avatar.export.tokenizer import build_tokenizer
from moe_avatar.training.models import CheckpointError, load_clip_checkpoint, load_gan_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle exported afresh by the real exporter, its checkpoints beside it."""
    return make_tiny_bundle(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def checkpoints(exported: Path) -> tuple[Path, Path]:
    src = exported.parent / "tiny-checkpoints"
    return src / "clip.pt", src / "gan.pt"


def test_committed_fixture_is_what_the_exporter_writes(exported: Path, tiny_bundle: Path) -> None:
    """tests/fixtures/models/tiny (which the server and client tests run on, without torch)
    is byte for byte the exporter's output; rebuild it with `python -m moe_avatar.export.tiny`."""
    for name in ("text_encoder.onnx", "image_encoder.onnx", "generator.onnx", "upscaler.onnx", "tokenizer.json"):
        assert (exported / name).read_bytes() == (tiny_bundle / name).read_bytes(), f"{name} is stale"
    fresh, committed = (json.loads((d / "manifest.json").read_text()) for d in (exported, tiny_bundle))
    for m in (fresh, committed):
        for key in ("created", "source", "exporter", "parity"):  # parity: float error sizes vary by CPU
            m.pop(key)
    assert fresh == committed


def test_bundle_files_and_manifest_complete(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert set(manifest["files"]) == {"text_encoder", "image_encoder", "generator", "upscaler", "reader", "tokenizer"}
    for entry in manifest["files"].values():
        path = tiny_bundle / entry["path"]
        assert sha256_file(path) == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
    for key in ("resolution", "embed_dim", "z_dim", "context_length", "opset", "attributes", "training", "exporter"):
        assert manifest[key], key
    assert manifest["files"]["generator"]["outputs"][0]["shape"] == ["batch", 64, 64, 4]
    assert all(row["ok"] for row in manifest["parity"]["rows"])
    assert {row["batch"] for row in manifest["parity"]["rows"]} == {1, 5}
    assert {row["graph"] for row in manifest["parity"]["rows"]} >= {"generator", "reader", "upscaler"}
    # The reader's labels: one list per block of the generator's prior, head sets last ("none" = nothing).
    reading = manifest["reading"]
    outputs = {o["name"]: o["shape"] for o in manifest["files"]["reader"]["outputs"]}
    assert outputs == {"stated": ["batch", len(reading)], "values": ["batch", sum(map(len, reading.values()))]}
    assert list(reading)[-1] == "head_accessory" and "none" in reading["head_accessory"]


def test_onnx_matches_pytorch_and_batch_is_dynamic(exported: Path, checkpoints) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from moe_avatar.export.graphs import GeneratorGraph, TextEncoder

    clip, _ = load_clip_checkpoint(checkpoints[0])
    g, _, _ = load_gan_checkpoint(checkpoints[1])
    tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    text_s = ort.InferenceSession(str(exported / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    gen_s = ort.InferenceSession(str(exported / "generator.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 7):
        ids = np.array([e.ids for e in tok.encode_batch([f"prompt {i} 粉色头发" for i in range(batch)])], dtype=np.int64)
        emb = text_s.run(None, {"input_ids": ids})[0]
        with torch.no_grad():
            ref = TextEncoder(clip)(torch.from_numpy(ids)).numpy()
        assert emb.shape == (batch, 32)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        assert np.abs(emb - ref).max() < 1e-4
        z = noise_from_seeds(list(range(batch)), g.z_dim)
        psi = np.ones(batch, dtype=np.float32)
        img = gen_s.run(None, {"z": z, "text_embedding": emb, "psi": psi})[0]
        with torch.no_grad():
            ref_img = GeneratorGraph(g)(torch.from_numpy(z), torch.from_numpy(emb), torch.from_numpy(psi)).numpy()
        assert img.dtype == np.uint8 and img.shape == (batch, 64, 64, 4)
        assert np.abs(img.astype(int) - ref_img.astype(int)).max() <= 1


def test_reader_graph_is_the_generators_own_prior(exported: Path, checkpoints) -> None:
    """reader.onnx answers what G's attribute prior computes (gate and value softmax at its
    temperature) for any batch; decoded, a family's value is the prior's top value."""
    import onnxruntime as ort

    from moe_avatar.bundle import decode_reading, load_bundle

    g, _, _ = load_gan_checkpoint(checkpoints[1])
    session = ort.InferenceSession(str(exported / "reader.onnx"), providers=["CPUExecutionProvider"])
    labels = load_bundle(exported).reading
    for batch in (1, 3, 7):
        emb = torch.nn.functional.normalize(torch.randn(batch, g.embed_dim, generator=torch.Generator().manual_seed(batch)), dim=1)
        stated, values = session.run(None, {"text_embedding": emb.numpy()})
        with torch.no_grad():
            logits, gates = g.prior.parts(emb * g.embed_dim ** 0.5)
        t = g.prior.temperature
        np.testing.assert_allclose(stated, torch.sigmoid(gates / t).numpy(), atol=1e-5)
        for i in range(batch):
            read = decode_reading(labels, stated[i], values[i])
            assert [r.value for r in read] == [labels[f][int(v[i].argmax())] for f, v in zip(labels, logits)]


def test_truncation_zero_gives_one_image_per_text(tiny_bundle: Path) -> None:
    import onnxruntime as ort

    gen_s = ort.InferenceSession(str(tiny_bundle / "generator.onnx"), providers=["CPUExecutionProvider"])
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    z = noise_from_seeds([1, 2], manifest["z_dim"])
    t = np.tile(np.eye(1, manifest["embed_dim"], dtype=np.float32), (2, 1))
    out0 = gen_s.run(None, {"z": z, "text_embedding": t, "psi": np.zeros(2, np.float32)})[0]
    out1 = gen_s.run(None, {"z": z, "text_embedding": t, "psi": np.ones(2, np.float32)})[0]
    assert np.array_equal(out0[0], out0[1])
    assert not np.array_equal(out1[0], out1[1])


def _corpus() -> list[str]:
    rng = np.random.default_rng(0)
    words = ["pink", "hair", "Twin", "TAILS", "girl's", "cat-ears", "蓝眼睛", "粉色", "双马尾", "戴眼镜", "🐱", "✨", "ｶﾜｲｲ",
             "ＡＢＣ", "，", "。", "！", "“quoted”", "don't", "&amp;", "&lt;3", "ﬁne", "café", "123", "\t", "\n", "  ", "x\u00a0y",
             "银发", "猫耳", "headphones", "(bow)", "#ff00aa", "日本語", "한국어", "Ünïcödé"]
    prompts = ["", " ", "\n\t", "🐱🐱🐱", "&amp;&amp;", "a " * 60, "粉色" * 40, "pink twin tails " * 10]
    while len(prompts) < 220:
        k = int(rng.integers(1, 12))
        prompts.append(" ".join(str(rng.choice(words)) for _ in range(k)))
    return prompts


def test_tokenizer_matches_open_clip_on_corpus() -> None:
    import open_clip

    prompts = _corpus()
    assert len(prompts) >= 200
    for context in (32, 128):
        tok = build_tokenizer(context)
        ours = np.array([e.ids for e in tok.encode_batch([clean_prompt(p) for p in prompts])])
        ref = open_clip.tokenize(prompts, context_length=context).numpy()
        mismatched = [prompts[i] for i in np.nonzero((ours != ref).any(axis=1))[0]]
        assert not mismatched, f"context {context}: {mismatched[:5]}"
        # Over-long prompts are cut to the context with the end token kept last.
        assert ours[prompts.index("粉色" * 40)][-1] == 49407


def test_verify_detects_tampered_and_missing_files(exported: Path, tmp_path: Path, checkpoints) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(exported, copy)
    report = verify_bundle(copy, *checkpoints, log=lambda *_: None)
    assert report is not None and report.ok
    with open(copy / "generator.onnx", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"tampered")
    with pytest.raises(ExportError, match="generator.onnx is corrupt"):
        verify_bundle(copy, log=lambda *_: None)
    (copy / "generator.onnx").unlink()
    with pytest.raises(ExportError, match="generator.onnx is missing"):
        verify_bundle(copy, log=lambda *_: None)
    assert export_main(["verify", str(copy)]) == 1


def test_wrong_model_family_fails_clearly(checkpoints, tmp_path: Path) -> None:
    clip_ckpt, gan_ckpt = checkpoints
    with pytest.raises(CheckpointError, match="expected moe-avatar/clip"):
        export_bundle(gan_ckpt, gan_ckpt, tmp_path / "x", ExportOptions(name="x"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign"):
        export_bundle(clip_ckpt, foreign, tmp_path / "y", ExportOptions(name="y"))
    with pytest.raises(CheckpointError, match="not found"):
        export_bundle(tmp_path / "nope.pt", gan_ckpt, tmp_path / "z", ExportOptions(name="z"))


def test_fp16_weights_halve_size_within_documented_bounds(tmp_path: Path) -> None:
    clip_ckpt, gan_ckpt, _ = make_tiny_checkpoints(tmp_path / "ckpt")
    m32 = export_bundle(clip_ckpt, gan_ckpt, tmp_path / "fp32", ExportOptions(name="a"), log=lambda *_: None)
    m16 = export_bundle(clip_ckpt, gan_ckpt, tmp_path / "fp16", ExportOptions(name="a", fp16=True), log=lambda *_: None)
    assert m16["precision"] == "fp16"
    assert m16["files"]["text_encoder"]["bytes"] < 0.6 * m32["files"]["text_encoder"]["bytes"]
    assert all(row["ok"] for row in m16["parity"]["rows"])
    # The generator's attribute prior ends in an argmax: its weights stay float32 (graphs.KEEP_FP32).
    import onnx

    inits = {i.name: i.data_type for i in onnx.load(str(tmp_path / "fp16" / "generator.onnx")).graph.initializer}
    assert inits["g.prior.net.0.weight"] == onnx.TensorProto.FLOAT
    assert any(name.endswith("__fp16") and dtype == onnx.TensorProto.FLOAT16 for name, dtype in inits.items())


def test_triton_repository_layout(tiny_bundle: Path, tmp_path: Path) -> None:
    write_triton_repository(tiny_bundle, tmp_path / "triton")
    for key in ("text_encoder", "image_encoder", "generator"):
        model_dir = tmp_path / "triton" / f"tiny_{key}"
        assert (model_dir / "1" / "model.onnx").stat().st_size > 0
        config = (model_dir / "config.pbtxt").read_text()
        assert f'name: "tiny_{key}"' in config
        assert 'platform: "onnxruntime_onnx"' in config and "dynamic_batching" in config
    gen = (tmp_path / "triton" / "tiny_generator" / "config.pbtxt").read_text()
    assert "dims: [ 64, 64, 4 ]" in gen and "TYPE_UINT8" in gen and 'name: "psi"' in gen


def test_simplified_export_keeps_parity(tmp_path: Path) -> None:
    clip_ckpt, gan_ckpt, _ = make_tiny_checkpoints(tmp_path / "ckpt")
    m = export_bundle(clip_ckpt, gan_ckpt, tmp_path / "slim", ExportOptions(name="s", simplify=True), log=lambda *_: None)
    assert m["simplified"] is True
    assert all(row["ok"] for row in m["parity"]["rows"])


def test_add_reader_rebuilds_the_exporters_reader_from_the_generator_graph(tiny_bundle: Path, tmp_path: Path) -> None:
    """A bundle exported without reader.onnx gets the same reader from its generator's own
    prior weights: the same labels and the same answers as the exporter's; other files untouched."""
    import onnxruntime as ort

    from moe_avatar.export.cli import main as export_main

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["reading"], manifest["files"]["reader"]
    (copy / "reader.onnx").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert export_main(["add-reader", str(copy), "--version", "0.0.2"]) == 0
    added = json.loads((copy / "manifest.json").read_text())
    original = json.loads((tiny_bundle / "manifest.json").read_text())
    assert added["reading"] == original["reading"] and added["version"] == "0.0.2"
    assert {k: v["sha256"] for k, v in added["files"].items() if k != "reader"} == \
        {k: v["sha256"] for k, v in original["files"].items() if k != "reader"}
    emb = np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    runs = [ort.InferenceSession(str(d / "reader.onnx"), providers=["CPUExecutionProvider"]).run(None, {"text_embedding": emb})
            for d in (copy, tiny_bundle)]
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert export_main(["add-reader", str(copy), "--version", "0.0.3"]) == 1  # already has one
