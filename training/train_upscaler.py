"""The texture upscaler: `moe-avatar-train upscale --data DIR --config upscaler-64 --out RUN_DIR`.

Pairs cost nothing: the renderer draws each dataset row's avatar (its attributes and jitter)
at the data's resolution and at `scale` times it. The low-resolution side is degraded the
way the generator's drawings differ from renders (softer: blur; noisier: noise; slightly
off colours; stray alpha holes), so the net learns to sharpen G's output, not only clean
renders. L1 on random crops; held-out PSNR against Lanczos at every sample step.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from moe_avatar.training.models import count_params, load_config, upscaler_checkpoint
from moe_avatar.training.runs import (
    RunDir,
    StepLog,
    add_run_arguments,
    autocast,
    cli_overrides,
    images_to_tensor,
    load_states,
    pick_device,
    rng_state,
    seed_everything,
)
from moe_avatar.training.train_config import UpscalerTrainConfig, parse_section
from moe_avatar.training.upscaler import Upscaler, UpscalerModelConfig, alpha_iou, lanczos, psnr, to_uint8

GRID_ROWS = 4  # held-out avatars in each sample grid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="procedural dataset directory (metadata.jsonl with attributes and jitter)")
    p.add_argument("--config", default="upscaler-64", help="config name in training/configs or a JSON path")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    add_run_arguments(p)


def read_config(args: argparse.Namespace) -> tuple[dict[str, Any], UpscalerTrainConfig]:
    """The config with the command line's overrides, its model and train sections checked before anything loads."""
    cfg = load_config(args.config, "upscaler")
    tc = parse_section(UpscalerTrainConfig, {**cfg["train"], **cli_overrides(args)}, f"config {cfg['name']}: train")
    cfg["model"] = asdict(parse_section(UpscalerModelConfig, cfg["model"], f"config {cfg['name']}: model"))
    cfg["train"] = asdict(tc)
    return cfg, tc


def _render_pair(job: tuple[dict, list[float] | None, int, int]) -> tuple[np.ndarray, np.ndarray]:
    from moe_avatar.training.render import render_avatar

    attrs, jitter, size, scale = job
    return (np.asarray(render_avatar(attrs, size, jitter=jitter)),
            np.asarray(render_avatar(attrs, size * scale, jitter=jitter)))


def render_pairs(data: Path, first: int, count: int, scale: int, skip_bad: bool, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows [first, first + count) of the dataset drawn at its size and at `scale` times it:
    (low uint8 [N, R, R, 4], high uint8 [N, sR, sR, 4])."""
    from moe_avatar.training.dataset import DatasetError, parallel_map, read_metadata

    rows, _ = read_metadata(data, skip_bad, first + count)
    rows = rows[first:first + count]
    if any(r.attributes is None for r in rows):
        raise DatasetError(f"{data}: the upscaler needs a procedural dataset (each row's attributes and jitter)")
    if len(rows) < count:
        raise DatasetError(f"{data}: {len(rows)} rows from row {first}, the config needs {count}")
    meta = data / "dataset.json"
    size = json.loads(meta.read_text()).get("size", 64) if meta.is_file() else 64
    pairs = parallel_map(_render_pair, [(r.attributes, r.jitter, size, scale) for r in rows],
                         f"render {count} pairs", progress, processes=2, chunksize=16)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (sigma [B], 0 = none) of [B, C, H, W], 5x5, reflect-padded."""
    b, c, h, w = x.shape
    t = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # [B, 5]
    k2 = (k[:, :, None] * k[:, None, :]).repeat_interleave(c, 0)[:, None]  # [B*C, 1, 5, 5]
    y = F.conv2d(F.pad(x.reshape(1, b * c, h, w), (2, 2, 2, 2), mode="reflect"), k2, groups=b * c)
    return y.reshape(b, c, h, w)


def degrade(x: torch.Tensor, tc: UpscalerTrainConfig) -> torch.Tensor:
    """Make clean renders [-1, 1] look like G's drawings (torch's RNG: resumes exactly)."""
    b, x_in = len(x), x
    u = lambda *shape: torch.rand(*shape, device=x.device)  # noqa: E731
    if tc.blur:
        x = _gaussian(x, u(b) * tc.blur)
    rgb, a = x[:, :3], x[:, 3:]
    if tc.colour_shift:
        rgb = rgb * (1 + (u(b, 3, 1, 1) * 2 - 1) * tc.colour_shift) + (u(b, 3, 1, 1) * 2 - 1) * tc.colour_shift
    if tc.noise:
        rgb = rgb + torch.randn_like(rgb) * u(b, 1, 1, 1) * tc.noise
    if tc.alpha_holes:
        holes = torch.rand_like(a) < u(b, 1, 1, 1) * tc.alpha_holes / a[0].numel()
        a = torch.where(holes, u(*a.shape) * 2 - 1, a)
    out = torch.cat([rgb, a], 1).clamp(-1, 1)
    if tc.clean:
        out = torch.where((u(b) < tc.clean)[:, None, None, None], x_in, out)
    return out


def random_crops(lo: np.ndarray, hi: np.ndarray, crop: int, scale: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random window of each low / high uint8 NHWC pair (aligned: high = scale x low), as tensors."""
    n, r = lo.shape[:2]
    ys, xs = rng.integers(0, r - crop + 1, n), rng.integers(0, r - crop + 1, n)
    lo_c = np.stack([lo[i, y:y + crop, x:x + crop] for i, (y, x) in enumerate(zip(ys, xs))])
    hi_c = np.stack([hi[i, y * scale:(y + crop) * scale, x * scale:(x + crop) * scale] for i, (y, x) in enumerate(zip(ys, xs))])
    return images_to_tensor(lo_c), images_to_tensor(hi_c)


@dataclass
class HeldOut:
    """Held-out pairs and the Lanczos baseline on them (computed once)."""

    lo: np.ndarray
    hi: np.ndarray
    lanczos: np.ndarray

    @torch.no_grad()
    def score(self, model: Upscaler) -> tuple[np.ndarray, dict[str, float]]:
        out = to_uint8(model(images_to_tensor(self.lo)))
        return out, {"psnr": psnr(out, self.hi), "psnr_lanczos": psnr(self.lanczos, self.hi),
                     "alpha_iou": alpha_iou(out, self.hi)}


def sample_grid(held: HeldOut, out: np.ndarray, path: Path) -> None:
    """Rows: held-out avatars; columns: input (nearest), Lanczos, upscaler, the render; on a checkerboard."""
    s = held.hi.shape[1]
    cols = [np.repeat(np.repeat(held.lo, s // held.lo.shape[1], 1), s // held.lo.shape[1], 2), held.lanczos, out, held.hi]
    arr = np.concatenate([np.concatenate([c[i] for c in cols], 1) for i in range(min(GRID_ROWS, len(out)))], 0)
    checker = ((np.indices(arr.shape[:2]) // 8).sum(0) % 2) * 40 + 200
    a = arr[..., 3:4].astype(np.float32) / 255
    rgb = arr[..., :3] * a + np.stack([checker] * 3, -1) * (1 - a)
    Image.fromarray(rgb.round().astype(np.uint8)).save(path)


def lr_at(step: int, tc: UpscalerTrainConfig) -> float:
    """Cosine decay to a tenth of `lr`."""
    return tc.lr * (0.55 + 0.45 * math.cos(math.pi * step / tc.steps))


def run(args: argparse.Namespace) -> int:
    cfg, tc = read_config(args)
    run_dir = RunDir(args.out)
    seed_everything(tc.seed)
    device = pick_device()
    mc = UpscalerModelConfig(**cfg["model"])
    progress = not args.quiet
    lo, hi = render_pairs(args.data, 0, tc.pairs + tc.held_out, mc.scale, args.skip_bad, progress)
    held = HeldOut(lo[tc.pairs:], hi[tc.pairs:], lanczos(lo[tc.pairs:], mc.scale))
    cfg["data"] = {"path": str(args.data), "pairs": tc.pairs, "held_out": tc.held_out, "resolution": lo.shape[1]}
    model = Upscaler(mc).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    data_rng = np.random.default_rng(tc.seed)
    ckpt = run_dir.start(args.resume, data_rng, 0)
    step = 0 if ckpt is None else load_states(ckpt, {"model": model, "optimizer": opt})
    run_dir.write_config(cfg)
    print(f"upscaler {cfg['name']}: {count_params(model) / 1e3:.1f} k parameters, {lo.shape[1]} -> "
          f"{hi.shape[1]} px, {tc.pairs} pairs, device {device}, precision {tc.precision}")
    log = StepLog(run_dir, "upscale", tc.steps, step, tc.log_every, disable=args.quiet)
    stop_at = min(tc.steps, args.stop_at or tc.steps)
    while step < stop_at:
        idx = data_rng.choice(tc.pairs, size=min(tc.batch_size, tc.pairs), replace=False)
        x, y = random_crops(lo[idx], hi[idx], min(tc.crop, lo.shape[1]), mc.scale, data_rng)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        with autocast(device, tc.precision):
            loss = F.l1_loss(model.raw(degrade(x.to(device), tc)).float(), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        row: dict[str, Any] = {"loss": loss, "lr": lr_at(step - 1, tc)}
        if step % tc.sample_every == 0 or step == stop_at:
            model.eval()
            out, figures = held.score(model.cpu())
            model.to(device).train()
            row.update(figures)
            sample_grid(held, out, run_dir.path / "samples" / f"step_{step:06d}.png")
        if (logged := log.step(step, len(idx), row)) is not None:
            log.bar.set_postfix(loss=f"{logged['loss']:.4f}", sps=logged["samples_per_s"])
        if step % tc.checkpoint_every == 0 or step == stop_at:
            run_dir.save_checkpoint(upscaler_checkpoint(model, cfg, step=step, optimizer=opt.state_dict(),
                                                        rng=[rng_state(data_rng)]))
    log.close()
    return 0
