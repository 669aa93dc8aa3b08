"""The 4x texture upscaler (training.upscaler, training.train_upscaler): known answers on
render pairs, the alpha rules, typed configs, checkpoints and an exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moe_avatar.training.attributes import sample_attributes
from moe_avatar.training.cli import main as train_main
from moe_avatar.training.models import CheckpointError, load_upscaler_checkpoint, upscaler_checkpoint
from moe_avatar.training.render import render_avatar, sample_jitter
from moe_avatar.training.runs import images_to_tensor
from moe_avatar.training.train_config import ConfigError, UpscalerTrainConfig, parse_section
from moe_avatar.training.upscaler import Upscaler, UpscalerModelConfig, alpha_iou, build_upscaler, lanczos, psnr, to_uint8


def render_pairs(n: int, seed: int, background: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n random avatars drawn at 64 and 256 px (same attributes, same jitter)."""
    rng = np.random.default_rng(seed)
    lo, hi = [], []
    for _ in range(n):
        attrs = sample_attributes(rng)
        if background:
            attrs["background"] = background
        jitter = sample_jitter(attrs, rng)
        lo.append(np.asarray(render_avatar(attrs, 64, jitter=jitter)))
        hi.append(np.asarray(render_avatar(attrs, 256, jitter=jitter)))
    return np.stack(lo), np.stack(hi)


@pytest.fixture(scope="module")
def fitted() -> tuple[Upscaler, np.ndarray, np.ndarray, float]:
    """A tiny upscaler fitted to 3 pairs on 16 px crops; returns it, the pairs and its starting PSNR."""
    lo, hi = render_pairs(3, seed=0)
    torch.manual_seed(0)
    model = Upscaler(UpscalerModelConfig(features=12, body=1))
    x, y = images_to_tensor(lo), images_to_tensor(hi)
    with torch.no_grad():
        start = psnr(to_uint8(model(x)), hi)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        r, c = rng.integers(0, 48, 2)
        loss = F.l1_loss(model.raw(x[:, :, r:r + 16, c:c + 16]), y[:, :, 4 * r:4 * r + 64, 4 * c:4 * c + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), lo, hi, start


def test_fitted_upscaler_beats_lanczos_and_bilinear(fitted) -> None:
    model, lo, hi, start = fitted
    with torch.no_grad():
        out = to_uint8(model(images_to_tensor(lo)))
    assert out.shape == (3, 256, 256, 4) and out.dtype == np.uint8
    # An untrained net is bilinear exactly (zero last layer); fitting gains over it and over Lanczos.
    assert psnr(out, hi) > psnr(lanczos(lo, 4), hi) + 0.5
    assert psnr(out, hi) > start + 1.0
    assert alpha_iou(out, hi) > 0.99


def test_alpha_is_binary_where_the_render_is(fitted) -> None:
    """Held-out transparent-background renders: wherever the 256 render's alpha is 0 or 255 with
    no edge within 8 px, the output's alpha is exactly the same."""
    model = fitted[0]
    lo, hi = render_pairs(4, seed=11, background="transparent")
    with torch.no_grad():
        out = to_uint8(model(images_to_tensor(lo)))
    a = torch.from_numpy(hi[..., 3]).float()[:, None]
    flat = (F.max_pool2d(a, 17, 1, 8) == F.avg_pool2d(a, 17, 1, 8, count_include_pad=False))[:, 0].numpy()
    flat &= (hi[..., 3] == 0) | (hi[..., 3] == 255)
    assert flat.mean() > 0.5
    assert np.array_equal(out[..., 3][flat], hi[..., 3][flat])


def test_opaque_background_never_gets_holes(fitted) -> None:
    """The generator leaves stray low-alpha pixels; an opaque background comes out opaque everywhere."""
    model = fitted[0]
    lo, _ = render_pairs(2, seed=5, background="sky blue")
    holed = lo.copy()
    holed[0, 33:36, 0:3, 3] = 0  # a transparent strip at the border, as G draws them
    holed[1, 20, 40, 3] = 90
    with torch.no_grad():
        out = to_uint8(model(images_to_tensor(holed)))
    assert (out[..., 3] == 255).all()
    assert out[..., :3].min() >= 0 and out.shape == (2, 256, 256, 4)


def test_configs_refuse_unknown_keys() -> None:
    base = json.loads((Path(__file__).resolve().parents[1] / "training" / "configs" / "upscaler-test.json").read_text())
    parse_section(UpscalerTrainConfig, base["train"], "train")
    with pytest.raises(ConfigError, match="unknown key 'crops'"):
        parse_section(UpscalerTrainConfig, {**base["train"], "crops": 8}, "train")
    with pytest.raises(ConfigError, match="crop"):
        parse_section(UpscalerTrainConfig, {**base["train"], "crop": 2}, "train")
    with pytest.raises(ConfigError, match="unknown key 'featurez'"):
        build_upscaler({"scale": 4, "featurez": 8})


def test_checkpoint_carries_its_config(tmp_path: Path) -> None:
    model = build_upscaler({"features": 4, "body": 0})
    torch.save(upscaler_checkpoint(model, {"model": {"features": 4, "body": 0}}, step=3), tmp_path / "u.pt")
    loaded, cfg, ckpt = load_upscaler_checkpoint(tmp_path / "u.pt")
    assert ckpt["step"] == 3 and cfg["model"]["features"] == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    torch.save({"family": "moe-avatar/gan"}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="expected moe-avatar/upscaler"):
        load_upscaler_checkpoint(tmp_path / "g.pt")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("updata") / "ds"
    assert train_main(["synth", "--count", "12", "--size", "64", "--seed", "1", "--out", str(out), "--workers", "1"]) == 0
    return out


def test_resume_reproduces_the_uninterrupted_run(small_data: Path, tmp_path: Path) -> None:
    common = ["upscale", "--data", str(small_data), "--config", "upscaler-test", "--quiet"]
    assert train_main(common + ["--out", str(tmp_path / "a")]) == 0
    assert train_main(common + ["--out", str(tmp_path / "b"), "--stop-at", "2"]) == 0
    assert train_main(common + ["--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in "ab")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    def curve(d: str) -> list[dict]:
        rows = [json.loads(line) for line in (tmp_path / d / "stats.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]

    assert curve("a") == curve("b") and [r["step"] for r in curve("a")] == [1, 2, 3, 4]
    assert all(r["psnr"] > 0 and 0 <= r["alpha_iou"] <= 1 for r in curve("a") if "psnr" in r)
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["features"] == 8


# ----------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from moe_avatar.export.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("upexport") / "tiny")


def test_exported_upscaler_matches_pytorch_and_the_manifest(exported: Path) -> None:
    import onnxruntime as ort

    from moe_avatar.bundle import load_bundle
    from moe_avatar.export.graphs import UpscalerReference

    bundle = load_bundle(exported)
    assert bundle.manifest["upscaler"] == {"resolution": 256, "native_resolution": 64, "scale": 4}
    assert bundle.upscaled_resolution == 256 and bundle.io("upscaler")["outputs"][0]["shape"] == ["batch", 256, 256, 4]
    rows = [r for r in bundle.manifest["parity"]["rows"] if r["graph"] == "upscaler"]
    assert [r["batch"] for r in rows] == [1, 5] and all(r["ok"] for r in rows)
    model = load_upscaler_checkpoint(exported.parent / "tiny-checkpoints" / "upscaler.pt")[0]
    lo, _ = render_pairs(3, seed=2)
    with torch.no_grad():
        ref = UpscalerReference(model)(torch.from_numpy(lo)).numpy()
    out = ort.InferenceSession(str(bundle.path("upscaler")), providers=["CPUExecutionProvider"]).run(None, {"image": lo})[0]
    assert out.shape == (3, 256, 256, 4) and np.abs(ref.astype(int) - out.astype(int)).max() <= 1
    assert psnr(out, lanczos(lo, 4)) < 60  # its own pixels, not a resampling


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_kernel_is_torch_bilinear_enlargement(scale: int) -> None:
    from moe_avatar.export.graphs import bilinear_kernel

    x = torch.rand(2, 4, 9, 7) * 2 - 1
    via_conv = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), bilinear_kernel(scale, 4)), scale)
    direct = F.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=False)
    assert torch.allclose(via_conv, direct, atol=1e-6)


@pytest.mark.parametrize("activation", ["prelu", "leaky_relu"])
def test_export_graph_reproduces_the_training_module(activation: str) -> None:
    """UpscalerGraph (rearranged for ONNX Runtime) against the module as trained, on renders with
    opaque and transparent backgrounds and on noise, with weights far from the bilinear start."""
    from moe_avatar.export.graphs import UpscalerGraph, UpscalerReference

    torch.manual_seed(1)
    model = Upscaler(UpscalerModelConfig(features=8, body=2, activation=activation)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    images = np.concatenate([render_pairs(2, seed=3)[0], render_pairs(1, seed=4, background="transparent")[0],
                             np.random.default_rng(5).integers(0, 256, (2, 64, 64, 4), dtype=np.uint8)])
    with torch.no_grad():
        ref = UpscalerReference(model)(torch.from_numpy(images)).numpy().astype(int)
        out = UpscalerGraph(model)(torch.from_numpy(images)).numpy().astype(int)
    assert out.shape == ref.shape == (5, 256, 256, 4)
    assert np.abs(out - ref).max() <= 1 and (out != ref).mean() < 1e-4  # float rounding at .5 only
    assert len(np.unique(ref)) > 200  # the check saw real pictures, not a saturated image


def test_bundle_without_upscaler_stays_valid_and_a_half_one_is_refused(exported: Path, tmp_path: Path) -> None:
    import shutil

    from moe_avatar.bundle import BundleError, load_bundle
    from moe_avatar.export.bundle import ExportError, verify_bundle

    ckpts = exported.parent / "tiny-checkpoints"
    report = verify_bundle(exported, ckpts / "clip.pt", ckpts / "gan.pt", log=lambda *_: None, upscaler_ckpt=ckpts / "upscaler.pt")
    assert report is not None and report.ok and "upscaler" in {r["graph"] for r in report.rows}
    copy = tmp_path / "plain"
    shutil.copytree(exported, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    plain = {**manifest, "files": {k: v for k, v in manifest["files"].items() if k != "upscaler"}}
    plain.pop("upscaler")
    (copy / "manifest.json").write_text(json.dumps(plain))
    (copy / "upscaler.onnx").unlink()
    assert load_bundle(copy).upscaled_resolution is None
    (copy / "manifest.json").write_text(json.dumps({**plain, "upscaler": {"resolution": 100}}))
    with pytest.raises(BundleError, match="upscaler.resolution' must be a whole multiple.*needs files.upscaler"):
        load_bundle(copy)
    with pytest.raises(ExportError, match="upscaler"):
        verify_bundle(copy, log=lambda *_: None)


def test_eval_figures_known_answers() -> None:
    from moe_avatar.training.eval_upscaler import box_down, edge_contrast

    flat = np.full((1, 8, 8, 4), 200, np.uint8)
    flat[..., 3] = 255
    assert edge_contrast(flat) == 0.0
    stripes = flat.copy()
    stripes[:, :, ::2, :3] = 100  # every other column 100 levels darker: 100 across, 0 down
    assert edge_contrast(stripes) == pytest.approx(50.0)
    lo = box_down(np.repeat(np.repeat(stripes, 4, 1), 4, 2), 4)
    assert np.array_equal(lo, stripes)


def test_add_upscaler_leaves_every_other_file_as_it_is(exported: Path, tmp_path: Path) -> None:
    import shutil

    from moe_avatar.bundle import load_bundle
    from moe_avatar.export.cli import main as export_main

    copy = tmp_path / "plain"
    shutil.copytree(exported, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop("upscaler")
    manifest.pop("upscaler")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "upscaler.onnx").unlink()
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "manifest.json"}
    ckpt = exported.parent / "tiny-checkpoints" / "upscaler.pt"
    assert export_main(["add-upscaler", str(copy), "--upscaler", str(ckpt), "--version", "0.0.2"]) == 0
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name in before} == before
    bundle = load_bundle(copy)
    assert (bundle.version, bundle.upscaled_resolution) == ("0.0.2", 256)
    assert (copy / "upscaler.onnx").read_bytes() == (exported / "upscaler.onnx").read_bytes()
    assert [r["graph"] for r in bundle.manifest["parity"]["rows"]].count("upscaler") == 2
    assert export_main(["add-upscaler", str(copy), "--upscaler", str(ckpt), "--version", "0.0.3"]) == 1  # already has one


def test_add_upscaler_replace_swaps_it_and_keeps_the_old_one_on_failure(exported: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import moe_avatar.export.bundle as bundle_module
    from moe_avatar.bundle import load_bundle
    from moe_avatar.export.cli import main as export_main

    copy = tmp_path / "swap"
    shutil.copytree(exported, copy)
    old = (copy / "upscaler.onnx").read_bytes()
    torch.manual_seed(3)
    other = Upscaler(UpscalerModelConfig(features=6, body=1, activation="leaky_relu"))
    for p in other.parameters():
        p.data.normal_(0, 0.05)
    ckpt = tmp_path / "other.pt"
    torch.save(upscaler_checkpoint(other, {"kind": "upscaler", "name": "other", "model": other.cfg.__dict__, "train": {}}), ckpt)
    assert export_main(["add-upscaler", str(copy), "--upscaler", str(ckpt), "--version", "0.0.3", "--replace"]) == 0
    bundle = load_bundle(copy)
    assert bundle.version == "0.0.3" and (copy / "upscaler.onnx").read_bytes() != old
    assert bundle.manifest["training"]["upscaler"]["model"]["activation"] == "leaky_relu"
    assert [r["graph"] for r in bundle.manifest["parity"]["rows"]].count("upscaler") == 2
    swapped = (copy / "upscaler.onnx").read_bytes()

    def failing_parity(*_args):
        report = bundle_module.ParityReport()
        report.add("upscaler", 1, 99, 1)
        return report

    monkeypatch.setattr(bundle_module, "upscaler_parity", failing_parity)  # a new graph that fails its check
    assert export_main(["add-upscaler", str(copy), "--upscaler", str(ckpt), "--version", "9", "--replace"]) == 1
    assert (copy / "upscaler.onnx").read_bytes() == swapped and load_bundle(copy).version == "0.0.3"
