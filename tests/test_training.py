"""Training: tiny configs, real losses, real checkpoints (seconds each)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

from moe_avatar.training import losses, train_clip, train_gan
from moe_avatar.training.attributes import ATTRIBUTES, NEUTRAL_ATTRIBUTES
from moe_avatar.training.cli import main as train_main
from moe_avatar.training.models import (
    build_clip,
    build_discriminator,
    encode_images,
    encode_texts,
    load_clip_checkpoint,
    load_config,
    load_gan_checkpoint,
)
from moe_avatar.training.text import tokenize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "ds"
    assert train_main(["synth", "--count", "48", "--size", "64", "--seed", "3", "--out", str(out), "--workers", "1"]) == 0
    return out


def _args(module, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def _toy_batch(n: int = 16):
    """n distinct flat-colour images, each with a caption naming its colour."""
    torch.manual_seed(0)
    colours = torch.rand(n, 3)
    imgs = torch.ones(n, 4, 32, 32)
    imgs[:, :3] = colours[:, :, None, None]
    caps = [f"colour {int(r * 9)} {int(g * 9)} {int(b * 9)} number {i}" for i, (r, g, b) in enumerate(colours.tolist())]
    return imgs, tokenize(caps, 32)


def test_clip_loss_falls_and_retrieval_beats_chance() -> None:
    torch.manual_seed(0)
    model = build_clip(load_config("clip-test")["model"])
    imgs, tokens = _toy_batch(16)
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = loss_fn(encode_images(model, imgs), encode_texts(model, tokens), model.logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        top1 = (encode_images(model, imgs) @ encode_texts(model, tokens).T).argmax(1).eq(torch.arange(16)).float().mean()
    assert top1 > 3 / 16  # chance is 1/16


def test_trimmed_text_encoding_equals_full_context() -> None:
    model = build_clip(load_config("clip-test")["model"]).eval()
    tokens = tokenize(["pink hair", "粉色双马尾的女孩，蓝眼睛", "x"], 32)
    with torch.no_grad():
        assert torch.allclose(encode_texts(model, tokens), encode_texts(model, tokens, trim=False), atol=1e-6)


def test_clip_and_gan_runs_write_checkpoints_samples_and_stats(tiny_data: Path, tmp_path: Path) -> None:
    clip_dir, gan_dir = tmp_path / "clip", tmp_path / "gan"
    assert train_clip.run(_args(train_clip, ["--data", str(tiny_data), "--config", "clip-test", "--out", str(clip_dir), "--quiet"])) == 0
    assert train_gan.run(_args(train_gan, ["--data", str(tiny_data), "--clip", str(clip_dir / "checkpoint.pt"),
                                           "--config", "gan-test", "--out", str(gan_dir), "--quiet"])) == 0
    for run_dir in (clip_dir, gan_dir):
        assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 4
        assert [r["step"] for r in _stats(run_dir)] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["clip_cos"]) for r in _stats(gan_dir))
    # gan-test trains with the adversarial terms, the reconstruction anchor and G's attribute prior.
    assert all(r["rec_l1"] > 0 and "attr_acc_fake" in r and "ms_ratio" in r and r["prior_loss"] > 0 for r in _stats(gan_dir))
    samples = sorted((gan_dir / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000002.png", "step_000004.png"]
    # The upscaler's figures on a reconstruction-stage run's drawings (eval_upscaler --reconstruction),
    # through the committed tiny bundle's real upscaler.
    import onnxruntime as ort

    from moe_avatar.training.eval_upscaler import reconstruction
    up = ort.InferenceSession(str(Path(__file__).parent / "fixtures/models/tiny/upscaler.onnx"), providers=["CPUExecutionProvider"])
    rec = reconstruction(gan_dir, lambda im: up.run(None, {"image": np.ascontiguousarray(im)})[0], 3, 4)
    assert rec["images"] == 3 and all(np.isfinite(rec[k]) and rec[k] > 0 for k in ("psnr", "psnr_lanczos"))
    assert 0 <= rec["alpha_iou"] <= 1 and 0 <= rec["alpha_iou_lanczos"] <= 1
    from PIL import Image

    grid = Image.open(samples[-1])
    assert grid.size == (6 * 64, 8 * 64)  # seeds x prompts at 64 px

    # The checkpoint alone rebuilds the networks; outputs are identical to the saved EMA weights.
    g, cfg, raw = load_gan_checkpoint(gan_dir / "checkpoint.pt")
    g2, _, _ = load_gan_checkpoint(gan_dir / "checkpoint.pt")
    z, t = torch.randn(3, g.z_dim), torch.randn(3, raw["embed_dim"])
    with torch.no_grad():
        out = g(z, t)
        assert out.shape == (3, 4, 64, 64) and out.min() >= -1 and out.max() <= 1
        assert torch.equal(out, g2(z, t))
    clip, _ = load_clip_checkpoint(clip_dir / "checkpoint.pt")
    assert sum(p.numel() for p in clip.parameters()) > 0

    # A fresh run (no --resume) into the same directory starts its own curve.
    assert train_gan.run(_args(train_gan, ["--data", str(tiny_data), "--clip", str(clip_dir / "checkpoint.pt"),
                                           "--config", "gan-test", "--out", str(gan_dir), "--steps", "2", "--quiet"])) == 0
    assert [r["step"] for r in _stats(gan_dir)] == [1, 2]


def test_alignment_moves_the_render_to_where_g_drew_it() -> None:
    """rec_shift: a render drawn one pixel right and one up of another (the renderer's position
    jitter) is found at that move, and the aligned error is far below the plain one; an
    unmoved drawing keeps the render where it is."""
    from moe_avatar.training.render import jitter_draws, render_avatar
    from moe_avatar.training.runs import images_to_tensor

    attrs = dict(NEUTRAL_ATTRIBUTES, background="mint")
    base = [0.5] * jitter_draws(attrs["background"])
    moved = list(base)
    step = 1 / (64 * 0.044)  # one pixel of the renderer's +-0.022 position jitter at 64 px
    moved[0], moved[1] = 0.5 + step, 0.5 - step
    real, fake = (images_to_tensor(np.stack([np.asarray(render_avatar(attrs, 64, jitter=j))])) for j in (base, moved))
    pick = losses.align_renders(fake, real, 2)
    assert losses.shift_offsets(2)[int(pick)] == (-1, 1)
    aligned = (fake - losses.shifted(real, pick, 2)).abs().mean()
    plain = (fake - real).abs().mean()
    assert aligned < 0.05 * plain  # measured: 0.0001 vs 0.074
    assert losses.shift_offsets(2)[int(losses.align_renders(real, real, 2))] == (0, 0)


def test_attribute_heads_read_the_configured_feature_map(tiny_data: Path, tmp_path: Path) -> None:
    """model.attr_res picks the D map the AC heads read (4x4 when unset); an --init checkpoint
    whose heads read another map loads its trunk and starts the heads fresh."""
    model = dict(load_config("gan-test", "gan")["model"])
    model.pop("attr_res")
    d4, d16 = build_discriminator(model, 8), build_discriminator(dict(model, attr_res=16), 8)
    img = torch.randn(2, 4, 64, 64)
    top, mid = d16.features(img)
    assert top.shape[-1] == 4 and mid.shape[-1] == 16 and d4.features(img)[1].shape[-1] == 4
    assert d16.attributes.heads["eye_color"].in_features == mid[0].numel()
    assert d16.classify((top, mid))["eye_color"].shape == (2, len(ATTRIBUTES["eye_color"]))
    with pytest.raises(ValueError, match="attr_res"):
        build_discriminator(dict(model, attr_res=12), 8)

    clip_dir = tmp_path / "clip"
    assert train_clip.run(_args(train_clip, ["--data", str(tiny_data), "--config", "clip-test", "--out", str(clip_dir), "--quiet"])) == 0
    base = ["--data", str(tiny_data), "--clip", str(clip_dir / "checkpoint.pt"), "--steps", "2", "--quiet"]
    cfg = load_config("gan-test", "gan")
    cfg["model"] = model  # heads on the 4x4 map
    (tmp_path / "gan-test-4.json").write_text(json.dumps(cfg))
    assert train_gan.run(_args(train_gan, base + ["--config", str(tmp_path / "gan-test-4.json"), "--out", str(tmp_path / "a")])) == 0
    assert train_gan.run(_args(train_gan, base + ["--config", "gan-test", "--out", str(tmp_path / "b"),
                                                  "--init", str(tmp_path / "a" / "checkpoint.pt")])) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["attr_res"] == 16


def test_frozen_clip_heads_check_the_caption_in_gs_images(tiny_data: Path, tmp_path: Path) -> None:
    """train.clip_attr_weight: the CLIP run's image attribute heads, frozen, read G's images;
    G pays cross-entropy for the stated attributes they cannot read. A CLIP trained without
    heads is refused, naming the option."""
    clip_dir = tmp_path / "clip"
    assert train_clip.run(_args(train_clip, ["--data", str(tiny_data), "--config", "clip-test", "--out", str(clip_dir), "--quiet"])) == 0
    ckpt = torch.load(clip_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    heads = train_gan.clip_image_heads(ckpt, ckpt["config"]["model"]["embed_dim"], clip_dir / "checkpoint.pt")
    assert not any(p.requires_grad for p in heads.parameters())
    assert torch.equal(heads.heads["eye_color"].weight, ckpt["attribute_heads"]["image.heads.eye_color.weight"])

    cfg = load_config("gan-test", "gan")
    cfg["train"]["clip_attr_weight"] = 1.0
    (tmp_path / "gan-ca.json").write_text(json.dumps(cfg))
    base = ["--data", str(tiny_data), "--config", str(tmp_path / "gan-ca.json"), "--steps", "2", "--quiet"]
    assert train_gan.run(_args(train_gan, base + ["--clip", str(clip_dir / "checkpoint.pt"), "--out", str(tmp_path / "g")])) == 0
    rows = _stats(tmp_path / "g")
    assert all(r["cls_clip"] > 0 and 0 <= r["attr_acc_clip"] <= 1 for r in rows)
    # The loss reaches G: the same run without it draws different weights.
    plain = load_config("gan-test", "gan")
    (tmp_path / "gan-plain.json").write_text(json.dumps(plain))
    assert train_gan.run(_args(train_gan, ["--data", str(tiny_data), "--config", str(tmp_path / "gan-plain.json"), "--steps", "2",
                                           "--quiet", "--clip", str(clip_dir / "checkpoint.pt"), "--out", str(tmp_path / "p")])) == 0
    assert rows[-1]["loss_g"] != _stats(tmp_path / "p")[-1]["loss_g"]

    del ckpt["attribute_heads"]
    torch.save(ckpt, tmp_path / "no-heads.pt")
    with pytest.raises(ValueError, match="clip_attr_weight"):
        train_gan.run(_args(train_gan, base + ["--clip", str(tmp_path / "no-heads.pt"), "--out", str(tmp_path / "x")]))


def test_resume_reproduces_the_same_losses(tiny_data: Path, tmp_path: Path) -> None:
    clip_dir = tmp_path / "clip"
    train_clip.run(_args(train_clip, ["--data", str(tiny_data), "--config", "clip-test", "--out", str(clip_dir), "--quiet"]))
    base = ["--data", str(tiny_data), "--clip", str(clip_dir / "checkpoint.pt"), "--config", "gan-test", "--quiet"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_gan.run(_args(train_gan, base + ["--out", str(straight), "--steps", "4"]))
    train_gan.run(_args(train_gan, base + ["--out", str(resumed), "--steps", "4", "--stop-at", "2"]))
    train_gan.run(_args(train_gan, base + ["--out", str(resumed), "--steps", "4", "--resume"]))
    keys = ("loss_d", "loss_g", "clip_cos", "ma_gp")
    assert [{k: r[k] for k in keys} for r in _stats(straight)] == [{k: r[k] for k in keys} for r in _stats(resumed)]

    c_straight, c_resumed = tmp_path / "c1", tmp_path / "c2"
    cbase = ["--data", str(tiny_data), "--config", "clip-test", "--quiet"]
    train_clip.run(_args(train_clip, cbase + ["--out", str(c_straight), "--steps", "4"]))
    train_clip.run(_args(train_clip, cbase + ["--out", str(c_resumed), "--steps", "4", "--stop-at", "2"]))
    train_clip.run(_args(train_clip, cbase + ["--out", str(c_resumed), "--steps", "4", "--resume"]))
    assert [r["loss"] for r in _stats(c_straight)] == [r["loss"] for r in _stats(c_resumed)]


def test_missing_init_fails_clearly_without_network(tiny_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    rc = train_main(["clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(tmp_path / "r"),
                     "--init", str(tmp_path / "ViT-B-32.pt"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--init" in err and "file not found" in err and "never downloaded" in err

    # A checkpoint for another architecture names the mismatch.
    other = build_clip(load_config("clip-tiny")["model"])
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.pt")
    rc = train_main(["clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(tmp_path / "r2"),
                     "--init", str(tmp_path / "other.pt"), "--quiet"])
    assert rc == 2 and "shape mismatch" in capsys.readouterr().err


def test_torchrun_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "moe_avatar.training.cli", "clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(out),
           "--steps", "2", "--batch-size", "8", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 2
    rows = _stats(out)
    assert rows[-1]["samples_per_s"] > 0


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_config_with_unknown_or_bad_keys_is_refused_with_every_name(tiny_data: Path, tmp_path: Path) -> None:
    """A typo (`rec_wieght`) would train without the option it meant: refused before anything
    loads, with every bad key named at once; so is a combination of options that cannot train."""
    cfg = load_config("gan-test", "gan")
    cfg["train"] = {**cfg["train"], "rec_wieght": 1.0, "steps": "4", "code_jitter": True}
    del cfg["train"]["lr_g"]
    (tmp_path / "typo.json").write_text(json.dumps(cfg))
    args = _args(train_gan, ["--data", str(tiny_data), "--clip", str(tmp_path / "none.pt"), "--config",
                             str(tmp_path / "typo.json"), "--out", str(tmp_path / "run"), "--quiet"])
    with pytest.raises(ValueError) as err:
        train_gan.run(args)
    for name in ("unknown key 'rec_wieght'", "unknown key 'code_jitter'", "missing key 'lr_g'", "'steps' must be int"):
        assert name in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory or the CLIP checkpoint is touched

    rec = load_config("gan-test-rec", "gan")
    rec["train"] = {**rec["train"], "rec_weight": 0.0}
    (tmp_path / "norec.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="rec_shift weighs the reconstruction loss.*adversarial false needs rec_weight"):
        train_gan.run(_args(train_gan, ["--data", str(tiny_data), "--clip", str(tmp_path / "none.pt"), "--config",
                                        str(tmp_path / "norec.json"), "--out", str(tmp_path / "run"), "--quiet"]))

    clip = load_config("clip-test", "clip")
    clip["train"]["swap_negative_weight"] = 1.0
    (tmp_path / "clip.json").write_text(json.dumps(clip))
    with pytest.raises(ValueError, match="unknown key 'swap_negative_weight'"):
        train_clip.run(_args(train_clip, ["--data", str(tiny_data), "--config", str(tmp_path / "clip.json"),
                                          "--out", str(tmp_path / "c"), "--quiet"]))


def test_every_shipped_config_parses() -> None:
    from moe_avatar.training.models import CONFIG_DIR
    from moe_avatar.training.train_config import TRAIN_CONFIGS, parse_section

    for path in sorted(CONFIG_DIR.glob("*.json")):
        cfg = load_config(path)
        assert cfg["kind"] in TRAIN_CONFIGS, f"{path.name}: no train config class for kind {cfg['kind']!r} in TRAIN_CONFIGS"
        tc = parse_section(TRAIN_CONFIGS[cfg["kind"]], cfg["train"], path.name)
        if cfg["kind"] == "gan":
            tc.check_model(bool(cfg["model"].get("prior", False)))


def test_segment_shuffle_reorders_a_captions_list_and_keeps_its_words() -> None:
    """train option segment_shuffle: a list caption comes back in other orders, same tokens."""
    from moe_avatar.training.text import CaptionBank

    bank = CaptionBank([["pink hair, cat ears, blue eyes"], ["银发猫耳少女"]], 32, progress=False)
    rng = np.random.default_rng(0)
    choice = torch.zeros(20, dtype=torch.long)
    shuffled = bank.tokens_for(choice, 1.0, rng)
    original = bank.tokens[0].long()
    assert any(not torch.equal(row, original) for row in shuffled)
    assert all(sorted(row.tolist()) == sorted(original.tolist()) for row in shuffled)
    assert torch.equal(bank.tokens_for(choice, 0.0, rng), original.expand(20, -1))
    # Nothing to shuffle: a caption with no separator comes back as it was.
    assert torch.equal(bank.tokens_for(torch.ones(5, dtype=torch.long), 1.0, rng), bank.tokens[1].long().expand(5, -1))
