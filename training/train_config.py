"""Typed `train` sections of the training configs (training/configs/*.json).

Each trainer reads its config's `train` object into a frozen dataclass before anything
loads: an unknown key (a typo such as `rec_wieght`), a missing one, a value of the wrong
type or a combination of options that cannot train is refused, every problem at once,
with its name. The same pattern as the server's `ServerConfig`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

PRECISIONS = ("fp32", "bf16", "amp")

T = TypeVar("T")


class ConfigError(ValueError):
    """A training config is unusable; the message names every bad key."""


def _type_ok(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(kind)) \
            and all(_type_ok(v, k) for v, k in zip(value, typing.get_args(kind)))
    return isinstance(value, kind)


def parse_section(cls: type[T], data: dict[str, Any], where: str) -> T:
    """`data` -> `cls(**data)`, refusing unknown, missing and mistyped keys by name (all at once)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = [f"unknown key {k!r}" for k in data if k not in fields]
    problems += [f"missing key {name!r}" for name, f in fields.items()
                 if name not in data and f.default is dataclasses.MISSING]
    problems += [f"{k!r} must be {getattr(hints[k], '__name__', hints[k])}, got {v!r}"
                 for k, v in data.items() if k in fields and not _type_ok(v, hints[k])]
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    values = {k: float(v) if hints[k] is float else v for k, v in values.items()}
    return cls(**values)  # type: ignore[call-arg]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The loop options every trainer shares; each trainer's config adds its own and their checks."""

    batch_size: int
    steps: int
    sample_every: int
    checkpoint_every: int
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 20

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("train: " + "; ".join(problems))

    def problems(self) -> list[str]:
        problems = [f"{key} must be at least 1" for key in ("batch_size", "steps", "sample_every", "checkpoint_every",
                                                            "log_every") if getattr(self, key) < 1]
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        return problems


@dataclass(frozen=True, kw_only=True)
class ClipTrainConfig(RunOptions):
    """CLIP pretraining (train_clip.py): AdamW with warm-up and cosine decay."""

    lr: float
    weight_decay: float
    warmup_steps: int
    attr_weight: float = 0.0  # attribute heads on both embeddings (needs a labelled dataset)
    stated_weight: float = 0.0  # a head on the text embedding: which families the caption states at all
    segment_shuffle: float = 0.0  # probability a caption's list segments come in a random order

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.warmup_steps < 0 or self.lr <= 0 or self.attr_weight < 0 or self.stated_weight < 0:
            problems.append("warmup_steps, attr_weight, stated_weight must be >= 0 and lr > 0")
        if self.stated_weight and not self.attr_weight:
            problems.append("stated_weight needs attr_weight > 0 (both read the captions' labels)")
        if not 0 <= self.segment_shuffle <= 1:
            problems.append("segment_shuffle must be a probability in [0, 1]")
        return problems


@dataclass(frozen=True, kw_only=True)
class GanTrainConfig(RunOptions):
    """The text-conditioned GAN (train_gan.py); every loss weight 0 means that term is off."""

    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    ema_decay: float
    adversarial: bool = True  # false: reconstruction alone, no D (a cheap first stage)
    clip_weight: float = 0.0  # G: -cos(CLIP image embedding, T)
    ma_gp_weight: float = 0.0  # D: matching-aware gradient penalty
    cls_weight: float = 0.0  # AC-GAN attribute heads on D's features
    clip_attr_weight: float = 0.0  # the CLIP run's frozen image attribute heads read G's images
    ms_weight: float = 0.0  # mode seeking: same caption, new noise -> a different image
    rec_weight: float = 0.0  # L1 of G redrawing each render from its true values
    rec_detail_weight: float = 0.0  # extra L1 weight on each render's own accessories and irises
    rec_region_weight: float = 0.0  # extra L1 weight wherever a head accessory could be
    rec_shift: int = 0  # score G against the render moved up to this many pixels
    prior_weight: float = 0.0  # trains G's attribute prior (model option prior)
    prior_open_from_data: bool = False  # fit the prior's draw for unstated families to the captions
    segment_shuffle: float = 0.0  # probability a caption's list segments come in a random order

    def problems(self) -> list[str]:
        problems = super().problems()
        weights = ("clip_weight", "ma_gp_weight", "cls_weight", "clip_attr_weight", "ms_weight", "rec_weight",
                   "rec_detail_weight", "rec_region_weight", "prior_weight")
        problems += [f"{k} must be >= 0" for k in weights if getattr(self, k) < 0]
        if self.rec_shift < 0:
            problems.append("rec_shift must be >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append("ema_decay must be in [0, 1)")
        if not 0 <= self.segment_shuffle <= 1:
            problems.append("segment_shuffle must be a probability in [0, 1]")
        for key in ("rec_detail_weight", "rec_region_weight", "rec_shift"):
            if getattr(self, key) and not self.rec_weight:
                problems.append(f"{key} weighs the reconstruction loss: it needs rec_weight > 0")
        if not self.adversarial and not self.rec_weight:
            problems.append("adversarial false needs rec_weight > 0 (otherwise nothing trains G)")
        return problems

    @property
    def labelled(self) -> bool:
        """Whether the run needs each render's true attributes (a procedural dataset)."""
        return bool(self.cls_weight or self.rec_weight or self.clip_attr_weight or self.prior_weight)

    def check_model(self, has_prior: bool) -> None:
        """The options that depend on the generator: the prior is trained by prior_weight, and
        reconstruction hands G each render's true values through it."""
        problems = []
        if has_prior and not self.prior_weight:
            problems.append("model option prior needs prior_weight > 0 (nothing else trains the prior)")
        for key in ("prior_weight", "prior_open_from_data", "rec_weight"):
            if getattr(self, key) and not has_prior:
                problems.append(f"{key} needs model option prior")
        if problems:
            raise ConfigError("train: " + "; ".join(problems))


@dataclass(frozen=True, kw_only=True)
class UpscalerTrainConfig(RunOptions):
    """The texture upscaler (train_upscaler.py): L1 on render pairs, inputs degraded like G's drawings."""

    lr: float
    pairs: int  # dataset rows rendered at both sizes and kept in memory
    crop: int  # side of the low-resolution training crop, in pixels
    blur: float = 0.0  # Gaussian blur sigma of the input, drawn in [0, blur] per image (input pixels)
    noise: float = 0.0  # Gaussian noise std on the input's colour, drawn in [0, noise] per image ([-1, 1] units)
    colour_shift: float = 0.0  # per-channel gain and offset of the input, drawn in [-x, x]
    alpha_holes: int = 0  # up to this many input pixels per image get a random alpha (G's stray holes)
    clean: float = 0.0  # fraction of inputs left as rendered (no degradation), so clean edges stay sharp
    held_out: int = 16  # rows after the training pairs whose PSNR is logged at every sample step

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.lr <= 0 or self.pairs < 1 or self.crop < 4 or self.held_out < 1:
            problems.append("lr must be > 0, pairs and held_out >= 1, crop >= 4")
        problems += [f"{k} must be >= 0" for k in ("blur", "noise", "colour_shift", "alpha_holes") if getattr(self, k) < 0]
        if not 0 <= self.clean <= 1:
            problems.append("clean must be a fraction in [0, 1]")
        return problems


# Each config kind's train section (training/configs/*.json "kind"); a test parses every shipped config with it.
TRAIN_CONFIGS: dict[str, type] = {"clip": ClipTrainConfig, "gan": GanTrainConfig, "upscaler": UpscalerTrainConfig}
