"""The 4x texture upscaler: RGBA at the generator's resolution -> RGBA at `scale` times it.

A compact all-convolutional net in the manner of Real-ESRGAN's SRVGG "compact" model and
waifu2x's small CNNs: every convolution runs at the low resolution, one pixel shuffle makes
the high-resolution image, and the net predicts only a residual over a bilinear enlargement,
so an untrained or uncertain net degrades to plain bilinear instead of to noise.

The alpha channel is kept clean by two rules after the net (`clean_alpha`), both facts of
the procedural data rather than learned guesses:
* a background is either opaque everywhere or transparent: an input whose border ring is
  mostly opaque comes out fully opaque (no stray holes, whatever the generator drew);
* alpha within `ALPHA_SNAP` of 0 or 1 snaps there, so flat regions are exactly binary and
  only real edges keep fractional alpha.

Values are RGBA in [-1, 1], NCHW, as everywhere in training; the exported graph
(moe_avatar.export.graphs.UpscalerGraph) takes and returns uint8 NHWC.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from moe_avatar.training.train_config import ConfigError, parse_section

ALPHA_SNAP = 4 / 255  # alpha closer than this to 0 or 1 (in [0, 1]) is set to it
BORDER = 2  # width in pixels of the ring that decides whether a background is opaque
ACTIVATIONS = {"prelu": lambda f: nn.PReLU(f), "leaky_relu": lambda f: nn.LeakyReLU(0.1)}


@dataclass(frozen=True)
class UpscalerModelConfig:
    """The `model` section of an upscaler config."""

    scale: int = 4
    features: int = 24
    body: int = 5  # 3x3 convolutions between the first and the last
    channels: int = 4
    activation: str = "prelu"  # or "leaky_relu", which ONNX Runtime fuses into the convolution before it

    def __post_init__(self) -> None:
        problems = [f"{k} must be at least 1" for k in ("scale", "features", "channels") if getattr(self, k) < 1]
        if self.body < 0:
            problems.append("body must be >= 0")
        if self.channels != 4:
            problems.append("channels must be 4 (RGBA)")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {', '.join(sorted(ACTIVATIONS))}, got {self.activation!r}")
        if problems:
            raise ConfigError("model: " + "; ".join(problems))


class Upscaler(nn.Module):
    """RGBA [-1, 1] [B, 4, R, R] -> RGBA [-1, 1] [B, 4, sR, sR]; `raw` is the net alone (training
    on crops), `forward` adds the alpha rules (whole images)."""

    def __init__(self, cfg: UpscalerModelConfig):
        super().__init__()
        self.cfg, s, f = cfg, cfg.scale, cfg.features
        act = ACTIVATIONS[cfg.activation]
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, f, 3, 1, 1), act(f)]
        for _ in range(cfg.body):
            layers += [nn.Conv2d(f, f, 3, 1, 1), act(f)]
        layers += [nn.Conv2d(f, cfg.channels * s * s, 3, 1, 1), nn.PixelShuffle(s)]
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-2].weight)  # start as bilinear exactly
        nn.init.zeros_(self.net[-2].bias)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=float(self.cfg.scale), mode="bilinear", align_corners=False)
        return (base + self.net(x)).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clean_alpha(self.raw(x), x)


def opaque_background(x: torch.Tensor) -> torch.Tensor:
    """[B] bool: the input's border ring is mostly opaque (alpha > 0.5 on average)."""
    a = (x[:, 3] + 1.0) * 0.5
    ring = torch.cat([a[:, :BORDER].flatten(1), a[:, -BORDER:].flatten(1),
                      a[:, :, :BORDER].flatten(1), a[:, :, -BORDER:].flatten(1)], dim=1)
    return ring.mean(dim=1) > 0.5


def alpha_rules(a: torch.Tensor, opaque: torch.Tensor, full: float = 1.0) -> torch.Tensor:
    """The alpha rules (module docstring) on alpha `a` [B, C, H, W] in [0, full]: near 0 or `full`
    snaps to it, and an image whose input background is opaque (`opaque` [B]) is opaque
    everywhere. `full` lets the exported graph apply them to 0..255 values."""
    snap = ALPHA_SNAP * full
    a = torch.where(a < snap, torch.zeros_like(a), a)
    a = torch.where(a > full - snap, torch.full_like(a, full), a)
    return torch.where(opaque[:, None, None, None], torch.full_like(a, full), a)


def clean_alpha(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The alpha rules on the upscaled `y` of input `x`."""
    a = alpha_rules((y[:, 3:4] + 1.0) * 0.5, opaque_background(x))
    return torch.cat([y[:, :3], a * 2.0 - 1.0], dim=1)


def build_upscaler(model_cfg: dict[str, Any]) -> Upscaler:
    return Upscaler(parse_section(UpscalerModelConfig, model_cfg, "model"))


# ----------------------------------------------------------------------------- figures

def to_uint8(x: torch.Tensor) -> np.ndarray:
    """RGBA [-1, 1] NCHW -> uint8 NHWC, rounded as the exported graph rounds."""
    return torch.round((x.detach().cpu().float() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def lanczos(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 [N, R, R, 4] -> [N, sR, sR, 4] with PIL's Lanczos, as the server resamples."""
    size = images.shape[1] * scale
    return np.stack([np.asarray(Image.fromarray(im, "RGBA").resize((size, size), Image.Resampling.LANCZOS))
                     for im in images])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over every RGBA value of two uint8 image stacks (one figure for the stack)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def alpha_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the opaque (alpha >= 128) masks of two uint8 RGBA image stacks."""
    ma, mb = a[..., 3] >= 128, b[..., 3] >= 128
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))
