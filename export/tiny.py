"""A tiny untrained CLIP + GAN + upscaler pushed through the real exporter: the "dummy" bundle for tests.

Seconds to make, real ONNX graphs, real tokenizer, real manifest: tests of the server and
clients run against exactly the code path a trained model takes. A copy is committed as
tests/fixtures/models/tiny (a few hundred KB: a 1,026-token vocabulary, a small attribute
prior), so a serving install tests itself without torch; this module rebuilds it:

    python -m moe_avatar.export.tiny tests/fixtures/models/tiny
"""
from __future__ import annotations

from pathlib import Path

import torch

from moe_avatar.export.bundle import ExportOptions, export_bundle
from moe_avatar.training.models import (
    build_clip,
    build_discriminator,
    build_generator,
    clip_checkpoint,
    gan_checkpoint,
    load_config,
    upscaler_checkpoint,
)
from moe_avatar.training.upscaler import build_upscaler

TINY_ATTRIBUTES = {"hair_color": ["pink", "blue", "silver"], "hairstyle": ["twin tails", "bob"]}
TINY_VOCAB = 2 * 256 + 512 + 2  # bytes, bytes at a word's end, the first 512 BPE merges, SOT, EOT
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models" / "tiny"


def make_tiny_checkpoints(out_dir: Path, resolution: int = 64, seed: int = 0) -> tuple[Path, Path, Path]:
    """Untrained clip-test / gan-test / upscaler-test checkpoints in the real checkpoint format."""
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip_cfg = load_config("clip-test", "clip")
    clip_cfg["data"] = {"attributes": TINY_ATTRIBUTES}
    clip_cfg["model"]["text_cfg"]["vocab_size"] = TINY_VOCAB
    clip = build_clip(clip_cfg["model"])
    embed_dim = clip_cfg["model"]["embed_dim"]
    gan_cfg = load_config("gan-test", "gan")
    gan_cfg["model"]["resolution"] = resolution
    gan_cfg["model"]["ch_mult"] = [4] + [2] * (resolution.bit_length() - 4) + [1]
    gan_cfg["model"]["prior_hidden"] = 32
    g, d, g_ema = (build_generator(gan_cfg["model"], embed_dim), build_discriminator(gan_cfg["model"], embed_dim),
                   build_generator(gan_cfg["model"], embed_dim))
    g_ema.load_state_dict(g.state_dict())
    clip_path, gan_path = out_dir / "clip.pt", out_dir / "gan.pt"
    torch.save(clip_checkpoint(clip, clip_cfg, step=0), clip_path)
    torch.save(gan_checkpoint(g, d, g_ema, gan_cfg, embed_dim, step=0), gan_path)
    up_cfg = load_config("upscaler-test", "upscaler")
    up = build_upscaler(up_cfg["model"])
    torch.nn.init.normal_(up.net[-2].weight, std=0.05)  # not bilinear exactly: tests can tell its pixels apart
    up_path = out_dir / "upscaler.pt"
    torch.save(upscaler_checkpoint(up, up_cfg, step=0), up_path)
    return clip_path, gan_path, up_path


def make_tiny_bundle(out_dir: Path, name: str = "tiny", resolution: int = 64, fp16: bool = False,
                     checkpoints: Path | None = None) -> Path:
    """Write the bundle to `out_dir` (checkpoints go to `checkpoints`, default `out_dir`/../`name`-checkpoints)."""
    clip_path, gan_path, up_path = make_tiny_checkpoints(checkpoints or out_dir.parent / f"{name}-checkpoints", resolution)
    export_bundle(clip_path, gan_path, out_dir, ExportOptions(name=name, version="0.0.1", fp16=fp16, upscaler=up_path),
                  log=lambda *_: None)
    return out_dir


if __name__ == "__main__":
    import shutil
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else FIXTURE)
    shutil.rmtree(target, ignore_errors=True)
    # The checkpoints go to the git-ignored build/ folder, where `moe-avatar-export verify` finds them.
    print(make_tiny_bundle(target, checkpoints=FIXTURE.parents[3] / "build" / "tiny-checkpoints"))
