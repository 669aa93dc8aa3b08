"""The attribute judge: the independent reader of generated images behind prompt accuracy.

Independent of what the generator learns from in three ways: its own architecture (a
space-to-depth stem and max-pooled conv + batch-norm + SiLU stages; D is a residual LeakyReLU
CNN with strided convolutions, the CLIP image tower a ViT), its own weights, and its own data: renders of a
dataset seed (`JUDGE_SEED`) that no training run uses, drawn by the eval itself. The
generator's images are softer than renders, so the judge trains on renders degraded by blur,
noise and colour jitter, and reports its accuracy on clean and on blurred held-out renders.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn
from tqdm import tqdm

from moe_avatar.training.attributes import (
    ATTRIBUTES,
    FAMILIES,
    HEAD_ITEMS,
    MULTI_VALUED,
    visible_families,
)

JUDGE_VERSION = 2
JUDGE_SEED = 917_000  # the dataset seed of the judge's renders (training presets use 0)
TEST_BLUR = 0.8  # the Gaussian blur radius of the degraded held-out check


class Judge(nn.Module):
    """RGBA 64 px -> one head per family (multi-hot for head accessories).

    A lossless space-to-depth stem (64 px RGBA -> 32 px x 16 channels, so no pixel of a small
    iris is averaged away), then 3x3 conv + BN + SiLU stages joined by 2x max-pooling down to
    4 px; the heads read the flattened 4x4 map, so they know *where* a feature is (eyes vs
    hair vs collar). About 30 MMAC per image: it trains in minutes on 2 CPU cores.
    """

    def __init__(self, widths: tuple[int, ...] = (48, 64, 96, 128, 160)):
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]
        cin = 16
        for i, cout in enumerate(widths):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True)]
            if 0 < i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.1))
        side = 32 // 2 ** (len(widths) - 2)
        self.heads = nn.ModuleDict({
            f: nn.Linear(cin * side * side, len(HEAD_ITEMS) if f == MULTI_VALUED else len(v))
            for f, v in ATTRIBUTES.items()
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {f: head(h) for f, head in self.heads.items()}


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 RGBA [N, H, W, 4] -> float [N, 4, 64, 64] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != 64:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel (sigma <= 0.05 leaves the images unchanged)."""
    if sigma <= 0.05:
        return x
    r = 3
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).repeat(x.shape[1], 1)  # [C, 7]
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=c)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The generator's softness, on real renders: blur (each quarter of the batch its own sigma
    in 0-1.3, one quarter in four left sharp), mild per-channel gain and offset, contrast and
    noise. Colour changes stay small so that a hue class (pink vs purple hair) keeps its label."""
    n = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)
    x = torch.cat([gaussian_blur(part, 1.3 * float(u(1)) * float(u(1) < 0.75)) for part in x.chunk(4)])
    rgb, alpha = x[:, :3], x[:, 3:]
    gain = 1 + 0.08 * (u(n, 3, 1, 1) - 0.5)
    offset = 0.06 * (u(n, 3, 1, 1) - 0.5)
    contrast = 1 + 0.15 * (u(n, 1, 1, 1) - 0.5)
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * contrast + mean
    rgb = rgb * gain + offset
    noise = 0.06 * u(n, 1, 1, 1) * torch.randn(rgb.shape, generator=gen)
    return torch.cat([rgb + noise, alpha], 1).clamp(-1, 1)


def degrade(images: np.ndarray, radius: float = TEST_BLUR) -> np.ndarray:
    """PIL Gaussian blur of radius `radius` on every channel: the held-out softness check."""
    return np.stack([np.asarray(Image.fromarray(im, "RGBA").filter(ImageFilter.GaussianBlur(radius))) for im in images])


def predict(judge: Judge, images: np.ndarray, batch: int = 256) -> list[dict]:
    """Judge's attribute dicts for uint8 RGBA images [N, H, W, 4]."""
    judge.eval()
    out: list[dict] = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            logits = judge(to_input(images[s:s + batch]))
            n = logits[FAMILIES[0]].shape[0]
            rows: list[dict] = [{} for _ in range(n)]
            for f, lg in logits.items():
                if f == MULTI_VALUED:
                    on = (lg > 0).numpy()
                    for i in range(n):
                        rows[i][f] = [HEAD_ITEMS[j] for j in np.nonzero(on[i])[0]]
                else:
                    idx = lg.argmax(1).numpy()
                    for i in range(n):
                        rows[i][f] = ATTRIBUTES[f][idx[i]]
            out.extend(rows)
    return out


def judge_accuracy(judge: Judge, images: np.ndarray, attrs: list[dict]) -> dict[str, float]:
    """Accuracy per family on the families visible in each render (head accessories: exact set)."""
    preds = predict(judge, images)
    acc = {}
    for f in FAMILIES:
        hits = [(sorted(p[f]) == sorted(a[f])) if f == MULTI_VALUED else p[f] == a[f]
                for p, a in zip(preds, attrs) if f in visible_families(a)]
        acc[f] = float(np.mean(hits)) if hits else float("nan")
    return acc


def render_set(count: int, seed: int = JUDGE_SEED, start: int = 0, progress: bool = False) -> tuple[np.ndarray, list[dict]]:
    """`count` jittered 64 px renders of dataset seed `seed` (as `synth` draws image i) and their attributes."""
    from moe_avatar.training.attributes import sample_attributes
    from moe_avatar.training.render import render_avatar, sample_jitter

    images, attrs = [], []
    for i in tqdm(range(start, start + count), desc="judge renders", disable=not progress):
        rng = np.random.default_rng([seed, i])
        a = sample_attributes(rng)
        images.append(np.asarray(render_avatar(a, 64, jitter=sample_jitter(a, rng))))
        attrs.append(a)
    return np.stack(images), attrs


def _targets(attrs: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Labels and visibility masks (families hidden in the render are not trained on)."""
    labels, masks = {}, {}
    vis = [visible_families(a) for a in attrs]
    for f, values in ATTRIBUTES.items():
        if f == MULTI_VALUED:
            labels[f] = torch.tensor([[float(h in a[f]) for h in HEAD_ITEMS] for a in attrs])
        else:
            labels[f] = torch.tensor([values.index(a[f]) for a in attrs])
        masks[f] = torch.tensor([f in v for v in vis], dtype=torch.float32)
    return labels, masks


def _loss(logits: dict[str, torch.Tensor], labels: dict, masks: dict, idx: torch.Tensor) -> torch.Tensor:
    loss = torch.zeros(())
    for f, lg in logits.items():
        m = masks[f][idx]
        if f == MULTI_VALUED:
            per = F.binary_cross_entropy_with_logits(lg, labels[f][idx], reduction="none").mean(1)
        else:
            per = F.cross_entropy(lg, labels[f][idx], reduction="none", label_smoothing=0.02)
        loss = loss + (per * m).sum() / m.sum().clamp(min=1)
    return loss


def train_judge(images: np.ndarray, attrs: list[dict], steps: int = 2000, batch: int = 64, seed: int = 0,
                progress: bool = True, log: Callable[[str], None] = print) -> Judge:
    """Supervised on renders' ground truth, every batch degraded by `augment`."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    labels, masks = _targets(attrs)
    judge.train()
    bar = tqdm(range(steps), desc="judge", disable=not progress, mininterval=5)
    for step in bar:
        idx = rng.choice(len(images), size=batch, replace=False)
        x = augment(to_input(images[idx]), gen)
        loss = _loss(judge(x), labels, masks, torch.from_numpy(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if not progress:
                log(f"judge step {step}/{steps} loss {loss.item():.3f}")
    return judge.eval()


def load_or_train_judge(cache: Path, train_count: int = 24000, held_out: int = 3000, steps: int = 2000,
                        progress: bool = True, log: Callable[[str], None] = print) -> tuple[Judge, dict]:
    """The judge, trained once on its own renders and cached with its held-out report
    (accuracy per family on clean renders and on renders blurred at radius `TEST_BLUR`)."""
    if cache.is_file():
        state = torch.load(cache, map_location="cpu", weights_only=False)
        if state.get("version") == JUDGE_VERSION:
            judge = Judge()
            judge.load_state_dict(state["judge"])
            return judge.eval(), state["report"]
        log(f"{cache}: judge version {state.get('version')} is not {JUDGE_VERSION}; retraining")
    t0 = time.time()
    val_x, val_a = render_set(held_out, start=0, progress=progress)
    train_x, train_a = render_set(train_count, start=held_out, progress=progress)
    log(f"judge: rendered {held_out + train_count} images of dataset seed {JUDGE_SEED} in {time.time() - t0:.0f}s")
    judge = train_judge(train_x, train_a, steps=steps, progress=progress, log=log)
    report = judge_report(judge, val_x, val_a)
    report.update({"seconds": round(time.time() - t0, 1), "train_images": train_count, "steps": steps})
    log(f"judge trained in {report['seconds']:.0f}s; held-out accuracy clean / blurred {TEST_BLUR}: "
        + ", ".join(f"{f} {report['clean'][f]:.3f}/{report['blurred'][f]:.3f}" for f in FAMILIES))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": JUDGE_VERSION, "judge": judge.state_dict(), "report": report}, cache)
    return judge, report


def judge_report(judge: Judge, images: np.ndarray, attrs: list[dict]) -> dict:
    """Held-out accuracy per family on clean renders and on the same renders blurred."""
    return {"dataset_seed": JUDGE_SEED, "held_out": len(images), "blur_radius": TEST_BLUR,
            "clean": judge_accuracy(judge, images, attrs),
            "blurred": judge_accuracy(judge, degrade(images), attrs)}
