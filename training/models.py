"""The networks: a CLIP (open_clip's classes) and a DF-GAN-style text-conditioned GAN.

Configs are JSON files in `training/configs/` (the open_clip way); `build_clip` and
`build_generator` / `build_discriminator` are the one factory for each network. A checkpoint
stores its config, so `load_clip_checkpoint` / `load_gan_checkpoint` rebuild the network
from the checkpoint file alone.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from moe_avatar.training.labels import AttributeHeads
from moe_avatar.training.latent import PROCEDURAL, AttributeSchema, normal_to_gumbel

CONFIG_DIR = Path(__file__).parent / "configs"

# CLIP's own normalisation constants (open_clip.constants.OPENAI_DATASET_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Transparent pixels are composited onto this grey before the CLIP image tower sees them.
COMPOSITE_BACKGROUND = 0.5


def load_config(name_or_path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read a model config by name (`clip-tiny`) or path; check its kind."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise FileNotFoundError(f"config {name_or_path!r} not found (known: {', '.join(known)})")
    cfg = json.loads(path.read_text())
    if kind is not None and cfg.get("kind") != kind:
        raise ValueError(f"config {path} is a {cfg.get('kind')!r} config, expected {kind!r}")
    cfg.setdefault("name", path.stem)
    return cfg


# ----------------------------------------------------------------------------- CLIP

def build_clip(model_cfg: dict[str, Any]) -> nn.Module:
    """An open_clip CLIP from the `model` section of a clip config."""
    from open_clip.model import CLIP

    return CLIP(
        embed_dim=model_cfg["embed_dim"],
        vision_cfg=dict(model_cfg["vision_cfg"]),
        text_cfg=dict(model_cfg["text_cfg"]),
    )


def clip_image_input(rgba: torch.Tensor, image_size: int) -> torch.Tensor:
    """RGBA floats in [0, 1], NCHW -> the normalised RGB tensor the CLIP image tower expects.

    Compositing, resizing and normalisation live here once; training, evaluation and the
    exported image encoder all call this, so they cannot disagree.
    """
    rgb, alpha = rgba[:, :3], rgba[:, 3:4]
    rgb = rgb * alpha + COMPOSITE_BACKGROUND * (1.0 - alpha)
    if rgb.shape[-1] != image_size or rgb.shape[-2] != image_size:
        rgb = F.interpolate(rgb, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb - mean) / std


def encode_images(clip: nn.Module, rgba_01: torch.Tensor) -> torch.Tensor:
    """L2-normalised CLIP image embeddings of RGBA images in [0, 1] (NCHW)."""
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return F.normalize(clip.encode_image(clip_image_input(rgba_01, size)), dim=-1)


def encode_texts(clip: nn.Module, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
    """L2-normalised CLIP text embeddings of token ids [B, context].

    With `trim`, the padding columns after the longest caption's end token are cut before
    the transformer runs. The text tower is causal and pools at the end token, so the
    result is the same as the full-context computation (which the ONNX export uses), at a
    fraction of the cost for short captions.
    """
    if not trim:
        return F.normalize(clip.encode_text(tokens), dim=-1)
    length = int(tokens.argmax(dim=-1).max()) + 1  # the end token has the largest id
    tokens = tokens[:, :length]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return F.normalize(x @ clip.text_projection, dim=-1)


# ----------------------------------------------------------------------------- GAN

class Affine(nn.Module):
    """Per-channel scale and shift predicted from the condition (DF-GAN's affine)."""

    def __init__(self, cond_dim: int, hidden: int, channels: int):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        # Start as the identity: gamma = 1, beta = 0.
        nn.init.zeros_(self.gamma[2].weight)
        nn.init.ones_(self.gamma[2].bias)
        nn.init.zeros_(self.beta[2].weight)
        nn.init.zeros_(self.beta[2].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * self.gamma(cond)[:, :, None, None] + self.beta(cond)[:, :, None, None]


class FusionBlock(nn.Module):
    """Two (affine -> LeakyReLU) fusions around a 3x3 conv: text steers every channel."""

    def __init__(self, cond_dim: int, hidden: int, in_ch: int, out_ch: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, hidden, in_ch)
        self.affine1 = Affine(cond_dim, hidden, in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.affine0(x, cond), 0.2)
        x = F.leaky_relu(self.affine1(x, cond), 0.2)
        return self.conv(x)


class GBlock(nn.Module):
    """Upsample x2, two fusion blocks, learned residual shortcut."""

    def __init__(self, cond_dim: int, hidden: int, in_ch: int, out_ch: int):
        super().__init__()
        self.fuse1 = FusionBlock(cond_dim, hidden, in_ch, out_ch)
        self.fuse2 = FusionBlock(cond_dim, hidden, out_ch, out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.shortcut(x) + self.fuse2(self.fuse1(x, cond), cond)


def _channel_plan(base: int, resolution: int, ch_mult: list[int]) -> list[int]:
    """Channel widths from 4x4 up to `resolution` (one entry per resolution)."""
    n_levels = int(math.log2(resolution)) - 1
    if len(ch_mult) != n_levels:
        raise ValueError(f"ch_mult needs {n_levels} entries for {resolution} px (4x4 .. {resolution}), got {len(ch_mult)}")
    return [base * m for m in ch_mult]


class AttributePrior(nn.Module):
    """T -> log p(value | caption) for each block of values (training.latent.AttributeSchema.blocks), and
    the pick: Gumbel-max of those log-probabilities with z's first dims as the noise.

    Why: with a plain [z, T] condition, G has to learn on its own to take a family from T
    where the caption states it and from z where it does not, and a chibi-64 trained that
    way drew the head accessory a caption named in a quarter of its images. Here that
    decision is explicit: a stated value has probability ~1 whatever z says, an open family
    keeps the data's frequencies (each z dim N(0, 1) -> a standard Gumbel), and G's blocks
    see a one-hot of the picked values. Its pick has no gradient.

    Per block it says two things: whether the caption states the family (a gate s) and, if
    so, which value (v); p = s * v + (1 - s) * the data's frequencies, where the frequencies
    leave out, in proportion to how sure the prior is that the caption states a family, the
    values that would hide it (`hiders`, training.latent.AttributeSchema.hiders: a caption that names
    the eye colour never comes with sunglasses in the data). "The data's frequencies" start as
    the renders' sampling frequencies (`log_marginal`); a training stage can fit them to how
    often each value occurs where captions leave its family open (train option
    prior_open_from_data, training.latent.open_log_frequencies; buffer `marginal`, saved and
    exported with the weights). Trained on exactly
    those two questions (train_gan's prior_loss: the gate on "does the caption state it",
    v only on captions that do). Why not one softmax trained on the renders' true values:
    on captions worded unlike the training templates that softmax hedged toward the data's
    frequencies (hair colour right 0.58 on the held-out prompts where the same T's
    stated-only readout says 0.74), and it memorised unstated values of training renders
    (its distance to the data's frequencies on unstated families 0.23 vs 0.09;
    chibi-64 0.10.0's MODEL_CARD).

    `temperature` (model option `prior_temperature`, default 1) divides both answers' logits
    before they mix: below 1 the prior goes with its best guess more often where it thinks a
    family is stated, and keeps the data's frequencies more exactly where it thinks none is.
    Unlike truncation (psi), it leaves the open families' variety alone. Training is not
    affected (prior_loss reads the raw logits, `parts`); the gan stage draws what serving draws.
    """

    def __init__(self, embed_dim: int, blocks: list[int], log_marginal: torch.Tensor,
                 hiders: list[tuple[int, int, torch.Tensor]] = (), hidden: int = 512, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"prior temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.blocks = list(blocks)
        # Per rule: the block it hides, a one-hot of the hiding value and the values it hides (both
        # over all values; buffers, so they move with the module, derived so not saved).
        n = sum(blocks)
        self.hider_blocks = [b for _, b, _ in hiders]
        self.register_buffer("hider_value", F.one_hot(torch.tensor([i for i, _, _ in hiders], dtype=torch.long), n).float(),
                             persistent=False)
        self.register_buffer("hider_hides", torch.stack([m.float() for _, _, m in hiders]) if hiders else torch.zeros(0, n),
                             persistent=False)
        if log_marginal.shape != (sum(blocks),):
            raise ValueError(f"log_marginal needs {sum(blocks)} entries (one per value), got {tuple(log_marginal.shape)}")
        # exp in float64, then rounded: float32 exp differs in the last bit between CPUs' vector units
        self.register_buffer("marginal", log_marginal.double().exp().float())
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, sum(blocks) + len(blocks)))

    def parts(self, text_scaled: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(value logits per block, gate logits [B, blocks]) for T already scaled by sqrt(embed_dim)."""
        out = self.net(text_scaled)
        return list(torch.split(out[:, :sum(self.blocks)], self.blocks, dim=1)), out[:, sum(self.blocks):]

    def forward(self, text_scaled: torch.Tensor) -> list[torch.Tensor]:
        """log p(value | caption) per block."""
        return self.mix(*self.parts(text_scaled))

    def mix(self, values: list[torch.Tensor], gates: torch.Tensor) -> list[torch.Tensor]:
        """log p per block from `parts`: s * v + (1 - s) * the data's frequencies less the hiders."""
        stated = torch.sigmoid(gates / self.temperature)
        probs = [F.softmax(v / self.temperature, dim=1) for v in values]
        all_probs = torch.cat(probs, dim=1)
        keep = torch.ones_like(stated[:, :1]) * self.marginal  # [B, all values]
        for h, block in enumerate(self.hider_blocks):  # P(the caption states a value this rule's value would hide)
            hidden = stated[:, block] * (all_probs * self.hider_hides[h]).sum(dim=1)
            keep = keep * (1 - hidden[:, None] * self.hider_value[h])
        marginals = [m / m.sum(dim=1, keepdim=True) for m in torch.split(keep, self.blocks, dim=1)]
        return [torch.log((stated[:, b:b + 1] * p + (1 - stated[:, b:b + 1]) * m).clamp_min(1e-12))
                for b, (p, m) in enumerate(zip(probs, marginals))]

    def pick(self, logits: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """One-hot [B, sum(blocks)] of argmax(log p + Gumbel(z)) per block."""
        gumbel = torch.split(normal_to_gumbel(z[:, :sum(self.blocks)]), self.blocks, dim=1)
        parts = []
        for lg, g in zip(logits, gumbel):
            score = F.log_softmax(lg, dim=1) + g
            parts.append((score == score.amax(dim=1, keepdim=True)).to(z.dtype))
        return torch.cat(parts, dim=1)


class Generator(nn.Module):
    """G(z, T, psi) -> RGBA in [-1, 1]. Truncation: z_eff = psi * z (toward G(0, T)).

    The condition is [z, T * sqrt(embed_dim)]: T is a unit vector, so the scale gives its
    entries the same size as z's (N(0, 1)) and the text is not a whisper next to the noise.
    Both feed the 4x4 start and every block's affines. With `prior` (model option `prior`),
    z's first CODE_DIMS dims are replaced by the AttributePrior's one-hot
    pick (or by `code`, the true values, when training reconstructs a render).
    """

    def __init__(self, resolution: int, z_dim: int, embed_dim: int, ngf: int, ch_mult: list[int],
                 channels: int = 4, cond_hidden: int = 128, prior: bool = False, prior_temperature: float = 1.0,
                 prior_hidden: int = 512, schema: AttributeSchema = PROCEDURAL):
        super().__init__()
        self.resolution, self.z_dim, self.embed_dim = resolution, z_dim, embed_dim
        self.prior = None
        if prior_temperature != 1.0 and not prior:
            raise ValueError("model option prior_temperature is for a generator with an attribute prior (model option prior)")
        if prior:
            if z_dim < sum(schema.blocks):
                raise ValueError(f"z_dim {z_dim} is smaller than the {sum(schema.blocks)} dims the attribute prior picks with")
            self.prior = AttributePrior(embed_dim, schema.blocks, schema.log_marginal(), schema.hiders(),
                                        hidden=prior_hidden, temperature=prior_temperature)
        chans = _channel_plan(ngf, resolution, ch_mult)
        cond_dim = z_dim + embed_dim
        self.fc = nn.Linear(cond_dim, chans[0] * 4 * 4)
        self.blocks = nn.ModuleList(GBlock(cond_dim, cond_hidden, chans[i], chans[i + 1]) for i in range(len(chans) - 1))
        self.to_rgba = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(chans[-1], channels, 3, 1, 1))

    def forward(self, z: torch.Tensor, text: torch.Tensor, psi: torch.Tensor | None = None,
                code: torch.Tensor | None = None) -> torch.Tensor:
        if psi is not None:
            z = z * psi.view(-1, 1)
        if self.prior is not None:
            if code is None:
                code = self.prior.pick(self.prior_logits(text), z)
            z = torch.cat([code.to(z.dtype), z[:, code.shape[1]:]], dim=1)
        elif code is not None:
            raise ValueError("code is for a generator with an attribute prior (model option prior)")
        cond = torch.cat([z, text * self.embed_dim ** 0.5], dim=1)
        x = self.fc(cond).view(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x, cond)
        return torch.tanh(self.to_rgba(x))

    def prior_logits(self, text: torch.Tensor) -> list[torch.Tensor]:
        """The attribute prior's logits per block for unit text embeddings."""
        return self.prior(text * self.embed_dim ** 0.5)


class DBlock(nn.Module):
    """Residual downsampling block (DF-GAN's D_Block)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gamma * self.res(x)


Features = tuple[torch.Tensor, torch.Tensor]  # (4x4 map the judge reads, map the attribute heads read)


class Discriminator(nn.Module):
    """Target-aware conditional D: image features at 4x4 joined with the tiled text embedding,
    plus attribute heads on the trunk's `attr_res` x `attr_res` map.

    Why not the 4x4 map for the heads too: eye colour, eye shape and expression are a few
    pixels each. With ndf 16, heads on the 4x4 map read them on real renders at 0.28 / 0.57 /
    0.38 after 1,200 adversarial steps, so G got almost no signal for them; heads on the
    16x16 map read 0.76 / 0.93 / 0.64 after the same steps (chibi-64 0.5.0's MODEL_CARD, commit 7faece8).
    """

    def __init__(self, resolution: int, embed_dim: int, ndf: int, ch_mult: list[int], channels: int = 4,
                 attr_res: int = 4):
        super().__init__()
        chans = list(reversed(_channel_plan(ndf, resolution, ch_mult)))
        sizes = [resolution >> i for i in range(len(chans))]  # the trunk's map sides, stem first
        if attr_res not in sizes:
            raise ValueError(f"attr_res must be one of D's feature sizes (4 .. {resolution}, powers of 2), got {attr_res}")
        self.attr_level = sizes.index(attr_res)  # 0: the stem's map, k: after block k
        self.stem = nn.Conv2d(channels, chans[0], 3, 1, 1)
        self.blocks = nn.Sequential(*[DBlock(chans[i], chans[i + 1]) for i in range(len(chans) - 1)])
        top = chans[-1]
        self.logits = nn.Sequential(
            nn.Conv2d(top + embed_dim, ndf * 2, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )
        # AC-GAN heads (training.labels): read every attribute family from the attr_res map.
        self.attributes = AttributeHeads(chans[self.attr_level] * attr_res * attr_res)

    def features(self, img: torch.Tensor) -> Features:
        maps = [self.stem(img)]
        for block in self.blocks:
            maps.append(block(maps[-1]))
        return maps[-1], maps[self.attr_level]

    def judge(self, feats: Features, text: torch.Tensor) -> torch.Tensor:
        top = feats[0]
        t = text[:, :, None, None].expand(-1, -1, top.shape[2], top.shape[3])
        return self.logits(torch.cat([top, t], dim=1)).view(-1)

    def forward(self, img: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(img), text)

    def classify(self, feats: Features) -> dict[str, torch.Tensor]:
        return self.attributes(feats[1].flatten(1))


def build_generator(model_cfg: dict[str, Any], embed_dim: int) -> Generator:
    m = model_cfg
    return Generator(m["resolution"], m["z_dim"], embed_dim, m["ngf"], m["ch_mult"], m.get("channels", 4),
                     m.get("cond_hidden", 128), bool(m.get("prior", False)), float(m.get("prior_temperature", 1.0)),
                     int(m.get("prior_hidden", 512)), model_schema(m))


def model_schema(model_cfg: dict[str, Any]) -> AttributeSchema:
    """The attribute schema a GAN model config records (`attributes`); configs and checkpoints
    from before it was recorded were trained on the procedural one."""
    return AttributeSchema.from_json(model_cfg["attributes"]) if "attributes" in model_cfg else PROCEDURAL


def build_discriminator(model_cfg: dict[str, Any], embed_dim: int) -> Discriminator:
    m = model_cfg
    return Discriminator(m["resolution"], embed_dim, m["ndf"], m["ch_mult"], m.get("channels", 4), m.get("attr_res", 4))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- checkpoints

CLIP_FAMILY = "moe-avatar/clip"
GAN_FAMILY = "moe-avatar/gan"
UPSCALER_FAMILY = "moe-avatar/upscaler"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or of the wrong model family."""


def _read_checkpoint(path: str | Path, family: str) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is "unreadable"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    found = ckpt.get("family") if isinstance(ckpt, dict) else None
    if found != family:
        raise CheckpointError(f"{path}: is a {found or 'foreign'!s} checkpoint, expected {family}")
    return ckpt


def read_clip_checkpoint(path: str | Path) -> dict[str, Any]:
    """A CLIP checkpoint's dict (its family checked), for callers that need more of it than
    the model (train_gan's frozen attribute heads): read the file once."""
    return _read_checkpoint(path, CLIP_FAMILY)


def clip_from_checkpoint(ckpt: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the CLIP from a checkpoint dict; returns (model in eval mode, config)."""
    model = build_clip(ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["config"]


def load_clip_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the CLIP from its checkpoint alone; returns (model in eval mode, config)."""
    return clip_from_checkpoint(read_clip_checkpoint(path))


def load_gan_checkpoint(path: str | Path, weights: str = "ema") -> tuple[Generator, dict[str, Any], dict[str, Any]]:
    """Rebuild the generator from its checkpoint alone; returns (G, gan config, checkpoint).

    `weights` is "ema" (the EMA copy, the default for sampling and export) or "raw" (the
    trained weights themselves).
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt = _read_checkpoint(path, GAN_FAMILY)
    g = build_generator(ckpt["config"]["model"], ckpt["embed_dim"])
    g.load_state_dict(ckpt["g_ema" if weights == "ema" else "g"])
    return g.eval(), ckpt["config"], ckpt


def clip_checkpoint(model: nn.Module, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The dict saved as a CLIP checkpoint: enough to rebuild the network with no other file."""
    return {"family": CLIP_FAMILY, "config": config, "model": model.state_dict(), **extra}


def gan_checkpoint(g: nn.Module, d: nn.Module, g_ema: nn.Module, config: dict[str, Any], embed_dim: int,
                   **extra: Any) -> dict[str, Any]:
    """The dict saved as a GAN checkpoint; `g_ema` is what sampling and export use."""
    return {"family": GAN_FAMILY, "config": config, "embed_dim": embed_dim, "g": g.state_dict(),
            "d": d.state_dict(), "g_ema": g_ema.state_dict(), **extra}


def upscaler_checkpoint(model: nn.Module, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The dict saved as an upscaler checkpoint (training.upscaler): enough to rebuild the network alone."""
    return {"family": UPSCALER_FAMILY, "config": config, "model": model.state_dict(), **extra}


def load_upscaler_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild the upscaler from its checkpoint alone; returns (model in eval mode, config, checkpoint)."""
    from moe_avatar.training.train_config import ConfigError
    from moe_avatar.training.upscaler import build_upscaler

    ckpt = _read_checkpoint(path, UPSCALER_FAMILY)
    try:
        model = build_upscaler(ckpt["config"]["model"])
        model.load_state_dict(ckpt["model"])
    except (ConfigError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the upscaler checkpoint does not rebuild: {exc}") from exc
    return model.eval(), ckpt["config"], ckpt
