"""A tiny untrained CLIP + GAN pushed through the real exporter: the "dummy" bundle for tests.

Seconds to make, real ONNX graphs, real tokenizer, real manifest: tests of the server and
clients run against exactly the code path a trained model takes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from moe_avatar.export.bundle import ExportOptions, export_bundle
from moe_avatar.training.models import build_clip, build_discriminator, build_generator, clip_checkpoint, gan_checkpoint, load_config

TINY_ATTRIBUTES = {"hair_color": ["pink", "blue", "silver"], "hairstyle": ["twin tails", "bob"]}


def make_tiny_checkpoints(out_dir: Path, resolution: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Untrained clip-test / gan-test checkpoints in the real checkpoint format."""
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip_cfg = load_config("clip-test", "clip")
    clip_cfg["data"] = {"attributes": TINY_ATTRIBUTES}
    clip = build_clip(clip_cfg["model"])
    embed_dim = clip_cfg["model"]["embed_dim"]
    gan_cfg = load_config("gan-test", "gan")
    gan_cfg["model"]["resolution"] = resolution
    gan_cfg["model"]["ch_mult"] = [4] + [2] * (resolution.bit_length() - 4) + [1]
    g, d, g_ema = (build_generator(gan_cfg["model"], embed_dim), build_discriminator(gan_cfg["model"], embed_dim),
                   build_generator(gan_cfg["model"], embed_dim))
    g_ema.load_state_dict(g.state_dict())
    clip_path, gan_path = out_dir / "clip.pt", out_dir / "gan.pt"
    torch.save(clip_checkpoint(clip, clip_cfg, step=0), clip_path)
    torch.save(gan_checkpoint(g, d, g_ema, gan_cfg, embed_dim, step=0), gan_path)
    return clip_path, gan_path


def make_tiny_bundle(out_dir: Path, name: str = "tiny", resolution: int = 64, fp16: bool = False) -> Path:
    """Write the bundle to `out_dir` (checkpoints go to `out_dir`/../`name`-checkpoints)."""
    clip_path, gan_path = make_tiny_checkpoints(out_dir.parent / f"{name}-checkpoints", resolution)
    export_bundle(clip_path, gan_path, out_dir, ExportOptions(name=name, version="0.0.1", fp16=fp16), log=lambda *_: None)
    return out_dir


if __name__ == "__main__":
    import sys

    print(make_tiny_bundle(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-bundle")))
