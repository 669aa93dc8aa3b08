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

from training import train_clip, train_gan
from training.cli import main as train_main
from training.models import (build_clip, build_encoder, build_generator, encode_images, encode_texts, load_clip_checkpoint,
                             load_config, load_gan_checkpoint)
from training.text import tokenize

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
    # gan-test has the cVAE path on for its first 2 steps (rec_steps) and off after.
    assert [("rec_l1" in r, "kl" in r) for r in _stats(gan_dir)] == [(True, True)] * 2 + [(False, False)] * 2
    assert all(r["rec_l1"] > 0 and r["kl"] >= 0 for r in _stats(gan_dir)[:2])
    samples = sorted((gan_dir / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000002.png", "step_000004.png"]
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


def test_cvae_path_learns_to_redraw_renders_and_z_carries_them() -> None:
    """E + G reconstruction (train_gan's rec_weight path) on 8 flat-colour images with no caption
    information: L1 falls, and the posterior means tell the images apart (z carries them)."""
    cfg = load_config("gan-test", "gan")["model"]
    torch.manual_seed(0)
    g, enc = build_generator(cfg, 8), build_encoder(cfg)
    imgs = torch.ones(8, 4, 64, 64)
    imgs[:, :3] = (torch.rand(8, 3) * 2 - 1)[:, :, None, None]
    text = torch.zeros(8, 8)  # the caption says nothing: everything must come through z
    opt = torch.optim.Adam(list(g.parameters()) + list(enc.parameters()), lr=3e-3)
    losses = []
    for _ in range(150):
        l1, kl = train_gan.cvae_losses(enc, g, imgs, text)
        opt.zero_grad()
        (l1 + 0.001 * kl).backward()
        opt.step()
        losses.append(l1.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    with torch.no_grad():
        mu, _ = enc(imgs)
    assert torch.cdist(mu, mu)[~torch.eye(8, dtype=torch.bool)].min() > 1e-3


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
           "-m", "training.cli", "clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(out),
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
