"""Text-conditioned GAN: `moe-avatar-train gan --data DIR --clip RUN_DIR/checkpoint.pt --config NAME --out RUN_DIR`.

One loop: each step draws a batch, then `d_step` (DF-GAN hinge loss with the matching-aware
gradient penalty and, optionally, AC-GAN attribute heads on D) and `g_step` (adversarial,
CLIP and attribute-reader terms, mode seeking, the reconstruction L1 anchor and the
attribute prior's loss). The terms live in training/losses.py; the options and what each
one needs are `train_config.GanTrainConfig`.

G's attribute prior (model option `prior`, training.models.AttributePrior) turns T into
p(value | caption) for every family and the head-accessory set and picks the values with
z's first dims. The reconstruction L1 hands G each render's true values instead, so G learns
which pixels every value owns; with `adversarial: false` a stage trains by reconstruction
alone (no D: several times cheaper per step) and a later stage with `--init` sharpens it.
An EMA copy of G is what samples, checkpoints for export, and evaluation use.
`--init CKPT` starts from another GAN run's weights (G from its EMA copy; the next stage of a recipe).
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from moe_avatar.bundle import noise_from_seeds
from moe_avatar.training import runs
from moe_avatar.training.labels import AttributeHeads, Targets, attribute_loss, image_targets, read_embedding, select
from moe_avatar.training.latent import PROCEDURAL, attribute_indices, caption_pairs, code_table, open_log_frequencies
from moe_avatar.training.losses import (
    drawn_targets,
    hinge_d_loss,
    ma_gradient_penalty,
    mode_seeking,
    prior_loss,
    reconstruction_error,
    shifted,
)
from moe_avatar.training.models import (
    build_discriminator,
    build_generator,
    clip_from_checkpoint,
    count_params,
    encode_images,
    encode_texts,
    gan_checkpoint,
    load_config,
    read_clip_checkpoint,
)
from moe_avatar.training.text import CaptionBank, tokenize
from moe_avatar.training.train_config import ConfigError, GanTrainConfig, parse_section

# Fixed prompts for the sample grids (English and Chinese), one row each.
SAMPLE_PROMPTS = [
    "pink hair, twin tails, blue eyes",
    "a girl with silver hair and cat ears",
    "blonde ponytail, green eyes, smiling",
    "black bob, glasses, red ribbon",
    "粉色双马尾，蓝眼睛",
    "银发猫耳少女",
    "金色马尾，绿眼睛，微笑",
    "黑色短发，戴眼镜",
]
SAMPLE_SEEDS = [0, 1, 2, 3, 4, 5]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--clip", required=True, type=Path, help="CLIP checkpoint (RUN_DIR/checkpoint.pt)")
    p.add_argument("--config", default="gan-64", help="config name in training/configs or a JSON path")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--init", type=Path, help="start G (from its EMA weights) and D from this GAN checkpoint (fresh optimizers)")
    runs.add_run_arguments(p)


def read_config(args: argparse.Namespace) -> tuple[dict[str, Any], GanTrainConfig]:
    """The config with the command line's overrides, its train section checked before anything loads."""
    cfg = load_config(args.config, "gan")
    tc = parse_section(GanTrainConfig, {**cfg["train"], **runs.cli_overrides(args)}, f"config {cfg['name']}: train")
    tc.check_model(bool(cfg["model"].get("prior", False)))
    cfg["train"] = asdict(tc)  # resolved: config.json and the checkpoint record every option
    if cfg["model"].get("prior"):  # G's shape follows its schema, recorded so the checkpoint rebuilds it
        cfg["model"].setdefault("attributes", PROCEDURAL.to_json())
    return cfg, tc


@dataclass
class Stage:
    """Everything one GAN run trains with."""

    cfg: dict[str, Any]
    tc: GanTrainConfig
    d: runs.Dist
    device: torch.device
    clip: torch.nn.Module
    clip_heads: AttributeHeads | None
    g: torch.nn.Module
    disc: torch.nn.Module
    g_ema: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    bank: CaptionBank
    images: np.ndarray
    img_targets: Targets | None
    values: torch.Tensor | None  # each render's true values (training.latent.attribute_indices)
    pixel_weight: torch.Tensor | None
    caption_states: list[list[dict]] | None  # what each render's captions state


@dataclass
class Batch:
    """One step's images, captions and noise."""

    rows: torch.Tensor  # image indices
    choice: torch.Tensor  # caption indices (into the caption bank)
    real: torch.Tensor
    text: torch.Tensor
    z: torch.Tensor
    targets: Targets | None  # the images' true attributes


def clip_image_heads(ckpt: dict, embed_dim: int, path: Path) -> AttributeHeads:
    """The CLIP run's image attribute heads (training.labels) from its checkpoint dict `ckpt`
    (read from `path`), frozen: a fixed reader of every family in an image embedding, trained
    on real renders only, that G cannot co-adapt with."""
    if "attribute_heads" not in ckpt:
        raise ConfigError(f"clip_attr_weight needs a CLIP checkpoint trained with attr_weight > 0; {path} has no attribute heads")
    heads = AttributeHeads(embed_dim)
    heads.load_state_dict({k[len("image."):]: v for k, v in ckpt["attribute_heads"].items() if k.startswith("image.")})
    return heads.eval().requires_grad_(False)


def _load_clip(args, cfg: dict[str, Any], tc: GanTrainConfig, device: torch.device):
    clip_ckpt = read_clip_checkpoint(args.clip)
    clip, clip_cfg = clip_from_checkpoint(clip_ckpt)
    clip.to(device).requires_grad_(False)
    embed_dim = clip.text_projection.shape[1]
    heads = clip_image_heads(clip_ckpt, embed_dim, args.clip).to(device) if tc.clip_attr_weight else None
    cfg["clip"] = {"checkpoint": str(args.clip), "config": clip_cfg["name"], "embed_dim": embed_dim}
    return clip, heads, clip_cfg["model"]["text_cfg"]["context_length"]


def _pixel_weight(data, tc: GanTrainConfig, res: int, progress: bool) -> torch.Tensor | None:
    """One L1 weight map per render: 1 + w on its own accessories and irises + w_r where any accessory could be."""
    if not (tc.rec_detail_weight or tc.rec_region_weight):
        return None
    from moe_avatar.training.detail import OWN, REGION, load_or_make_detail_masks

    masks = load_or_make_detail_masks(data, res, progress=progress)
    weights = 1 + np.float32(tc.rec_detail_weight) * masks[:, OWN] + np.float32(tc.rec_region_weight) * masks[:, REGION]
    return torch.from_numpy(weights).to(torch.float16)  # small integers in practice: exact, half the memory


def build_stage(args: argparse.Namespace, cfg: dict[str, Any], tc: GanTrainConfig, d: runs.Dist) -> Stage:
    """Load the frozen CLIP and the dataset, build G, D, G's EMA copy and their optimizers."""
    from moe_avatar.training.dataset import load_dataset

    device = runs.pick_device()
    progress = d.main and not args.quiet
    clip, clip_heads, context = _load_clip(args, cfg, tc, device)
    res = cfg["model"]["resolution"]
    data = load_dataset(args.data, size=res, skip_bad=args.skip_bad, progress=progress, limit=args.limit)
    cfg["data"] = {"path": str(args.data), "images": len(data.files), "bad_rows": len(data.bad_rows)}
    if tc.labelled and data.attributes is None:
        raise ConfigError(f"config {cfg['name']}: cls_weight, rec_weight, clip_attr_weight and prior_weight need a "
                          f"labelled (procedural) dataset; {args.data} has no ground-truth attributes")
    states = [[c.states for c in caps] for caps in data.captions] if tc.labelled else None
    bank = CaptionBank([[c.text for c in caps] for caps in data.captions], context, progress=progress, states=states)
    embed_dim = clip.text_projection.shape[1]
    # channels_last: the same arithmetic in the layout oneDNN (and cuDNN) convolve fastest.
    g = build_generator(cfg["model"], embed_dim).to(device, memory_format=torch.channels_last)
    disc = build_discriminator(cfg["model"], embed_dim).to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(g.parameters(), lr=tc.lr_g, betas=tc.betas, fused=True)
    opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr_d, betas=tc.betas, fused=True)
    runs.broadcast_parameters(g, d)
    runs.broadcast_parameters(disc, d)
    return Stage(cfg, tc, d, device, clip, clip_heads, g, disc, copy.deepcopy(g).eval().requires_grad_(False),
                 opt_g, opt_d, bank, data.images, image_targets(data.attributes) if tc.labelled else None,
                 attribute_indices(data.attributes) if g.prior is not None else None,
                 _pixel_weight(data, tc, res, progress) if tc.rec_weight else None, states)


def init_from(s: Stage, path: Path) -> None:
    """Start from an earlier stage: G from its EMA weights, D from its weights; attribute
    heads that are missing or read another feature map (model.attr_res) start fresh."""
    init = torch.load(path, map_location="cpu", weights_only=False)
    s.g.load_state_dict(init["g_ema"])  # the averaged weights: what the earlier stage samples with
    own = s.disc.state_dict()
    d_init = {k: v for k, v in init["d"].items()
              if not (k.startswith("attributes.") and k in own and own[k].shape != v.shape)}
    missing, unexpected = s.disc.load_state_dict(d_init, strict=False)
    if unexpected or any(not k.startswith("attributes.") for k in missing):
        raise ValueError(f"--init {path}: discriminator does not match (missing {missing}, unexpected {unexpected})")
    s.cfg["init"] = str(path)


def fit_open_prior(s: Stage, run_dir: runs.RunDir) -> None:
    """What the prior draws for the families a caption leaves open, fitted to the data's
    captions (training.latent.open_log_frequencies): captions mention some values more than
    others, so where one is silent the rarely mentioned values are the common ones."""
    freq = open_log_frequencies(*caption_pairs(s.caption_states, s.values)).exp()
    for model in (s.g, s.g_ema):
        model.prior.marginal.copy_(freq)
    if s.d.main:
        table = {f: {v: round(x, 4) for v, x in row.items()} for f, row in code_table(freq).items()}
        (run_dir.path / "prior_open.json").write_text(json.dumps(table, indent=1) + "\n")


def next_batch(s: Stage, data_rng: np.random.Generator) -> Batch:
    idx = runs.sample_batch(len(s.images), s.tc.batch_size, data_rng)
    choice = s.bank.pick_indices(idx, data_rng)
    real = runs.images_to_tensor(s.images[idx]).to(s.device)
    z = torch.randn(len(idx), s.g.z_dim, device=s.device)
    with torch.no_grad():
        text = encode_texts(s.clip, s.bank.tokens_for(choice, s.tc.segment_shuffle, data_rng).to(s.device))
    rows = torch.from_numpy(idx)
    return Batch(rows, choice, real, text, z, select(s.img_targets, rows) if s.tc.labelled else None)


def d_step(s: Stage, b: Batch) -> dict[str, torch.Tensor]:
    """D: hinge loss on (real, T), (real, someone else's T), (fake, T), MA-GP, attribute heads."""
    tc = s.tc
    with runs.autocast(s.device, tc.precision):
        fake = s.g(b.z, b.text).detach()
        out_real, gp, feats_real = ma_gradient_penalty(s.disc, b.real, b.text)
        out_mis = s.disc(b.real[:-1], b.text[1:])
        out_fake = s.disc(fake, b.text)
        loss_d = hinge_d_loss(out_real, out_mis, out_fake) + tc.ma_gp_weight * gp
        row = {}
        if tc.cls_weight:  # how well D reads real renders
            cls_d, acc_real = attribute_loss(s.disc.classify(feats_real), b.targets)
            loss_d = loss_d + tc.cls_weight * cls_d
            row.update(cls_d=cls_d, attr_acc_real=acc_real)
    s.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    runs.average_gradients(s.disc, s.d)
    s.opt_d.step()
    return {"loss_d": loss_d, "d_real": out_real.mean(), "d_fake": out_fake.mean(), "d_mismatch": out_mis.mean(),
            "ma_gp": gp, **row}


def adversarial_g_loss(s: Stage, b: Batch, row: dict) -> torch.Tensor:
    """G draws its prior's picks; D, the CLIP and the attribute readers judge the drawing.
    With mode seeking, the second half of the batch repeats the first half's captions."""
    tc, text, choice = s.tc, b.text, b.choice
    half = len(b.rows) // 2
    if tc.ms_weight:
        keep = torch.cat([torch.arange(half), torch.arange(half), torch.arange(2 * half, len(b.rows))])
        text, choice = text[keep], choice[keep]
    targets = select(s.bank.targets, choice) if tc.labelled else None
    code = None
    if s.g.prior is not None:  # ask the attribute readers for what the prior picked
        with torch.no_grad():
            code = s.g.prior.pick(s.g.prior_logits(text), b.z)
        targets = drawn_targets(code, targets)
    fake = s.g(b.z, text, code=code)
    feats_fake = s.disc.features(fake)
    img_emb = encode_images(s.clip, (fake + 1) / 2)
    row["clip_cos"] = (img_emb * text).sum(dim=1).mean()
    loss = -s.disc.judge(feats_fake, text).mean() - tc.clip_weight * row["clip_cos"]
    if tc.clip_attr_weight:  # the frozen CLIP image heads: a reader G cannot co-adapt with
        row["cls_clip"], row["attr_acc_clip"] = attribute_loss(read_embedding(s.clip_heads, img_emb), targets)
        loss = loss + tc.clip_attr_weight * row["cls_clip"]
    if tc.cls_weight:
        row["cls_g"], row["attr_acc_fake"] = attribute_loss(s.disc.classify(feats_fake), targets)
        loss = loss + tc.cls_weight * row["cls_g"]
    if tc.ms_weight:
        row["ms_ratio"] = mode_seeking(fake, b.z, half)
        loss = loss + tc.ms_weight / (row["ms_ratio"] + 1e-5)
    return loss


def reconstruction_loss(s: Stage, b: Batch, row: dict) -> torch.Tensor:
    """G redraws each render from its caption's T and its true values; the L1 weighted per pixel."""
    tc = s.tc
    err, pick = reconstruction_error(s.g, b.real, b.text, s.values[b.rows], tc.rec_shift)
    row["rec_l1"] = err.mean()
    if tc.rec_shift:
        row["rec_moved"] = (pick != 0).float().mean()
    if s.pixel_weight is None:
        return tc.rec_weight * row["rec_l1"]
    weight = s.pixel_weight[b.rows].to(s.device, err.dtype)[:, None]
    if tc.rec_shift:
        weight = shifted(weight, pick, tc.rec_shift)  # the weight map moves with its render
    return tc.rec_weight * (err * weight).mean()


def g_step(s: Stage, b: Batch, step: int) -> dict[str, torch.Tensor]:
    tc, row = s.tc, {}
    loss_g = torch.zeros((), device=s.device)
    with runs.autocast(s.device, tc.precision):
        if tc.adversarial:
            loss_g = loss_g + adversarial_g_loss(s, b, row)
        if tc.rec_weight:
            loss_g = loss_g + reconstruction_loss(s, b, row)
    if tc.prior_weight:  # the prior learns from the same batch's captions (its pick has no gradient)
        row["prior_loss"], row["prior_acc_stated"] = prior_loss(s.g, b.text, s.values[b.rows], select(s.bank.targets, b.choice))
        loss_g = loss_g + tc.prior_weight * row["prior_loss"]
    s.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    runs.average_gradients(s.g, s.d)
    s.opt_g.step()
    # Ramp the EMA decay up from 0 so early, near-random weights wash out quickly.
    ema_update(s.g_ema, s.g, min(tc.ema_decay, (1 + step) / (10 + step)))
    return {**row, "loss_g": loss_g}


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)


@torch.no_grad()
def sample_grid(g, clip, z_dim: int, context: int, path: Path) -> None:
    """Prompts x seeds picture (composited on a checkerboard so alpha is visible)."""
    text = encode_texts(clip, tokenize(SAMPLE_PROMPTS, context))
    z = torch.from_numpy(noise_from_seeds(SAMPLE_SEEDS, z_dim))
    grid = torch.stack([g(z, t.expand(len(z), -1)) for t in text])  # [P, S, 4, R, R]
    p, s, _, r, _ = grid.shape
    arr = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 3, 1, 4, 2).reshape(p * r, s * r, 4).numpy()
    checker = ((np.indices((p * r, s * r)) // 8).sum(0) % 2) * 40 + 200
    bg = np.stack([checker] * 3, -1).astype(np.float32)
    a = arr[..., 3:4].astype(np.float32) / 255
    rgb = arr[..., :3] * a + bg * (1 - a)
    Image.fromarray(rgb.round().astype(np.uint8)).save(path)


def _checkpoint(s: Stage, step: int, data_rng: np.random.Generator) -> dict[str, Any]:
    rngs = runs.gather_rng_states(runs.rng_state(data_rng), s.d)
    return gan_checkpoint(s.g, s.disc, s.g_ema, s.cfg, s.clip.text_projection.shape[1], step=step,
                          opt_g=s.opt_g.state_dict(), opt_d=s.opt_d.state_dict(), rng=rngs)


def run(args: argparse.Namespace) -> int:
    cfg, tc = read_config(args)
    d = runs.init_distributed()
    run_dir = runs.RunDir(args.out, d.main)
    runs.seed_everything(tc.seed + d.rank)
    s = build_stage(args, cfg, tc, d)
    if args.init is not None:
        init_from(s, args.init)
    s.g_ema.load_state_dict(s.g.state_dict())
    data_rng = np.random.default_rng([tc.seed, d.rank])
    ckpt = run_dir.start(args.resume, data_rng, d.rank)
    step = 0 if ckpt is None else runs.load_states(ckpt, {"g": s.g, "d": s.disc, "g_ema": s.g_ema,
                                                     "opt_g": s.opt_g, "opt_d": s.opt_d})
    if tc.prior_open_from_data and ckpt is None:  # after --init; a resumed checkpoint already holds the fit
        fit_open_prior(s, run_dir)
    run_dir.write_config(cfg)
    if d.main:
        print(f"GAN {cfg['name']}: G {count_params(s.g) / 1e6:.2f} M, D {count_params(s.disc) / 1e6:.2f} M parameters, "
              f"{cfg['model']['resolution']} px, {len(s.images)} images, device {s.device}, "
              f"precision {tc.precision}, {d.world} process(es)")
    log = runs.StepLog(run_dir, "gan", tc.steps, step, tc.log_every, disable=not d.main or args.quiet)
    stop_at = min(tc.steps, args.stop_at or tc.steps)
    context = s.bank.tokens.shape[1]
    while step < stop_at:
        b = next_batch(s, data_rng)
        row = d_step(s, b) if tc.adversarial else {}
        row.update(g_step(s, b, step))
        step += 1
        if (logged := log.step(step, len(b.rows) * d.world, row)) is not None:
            log.bar.set_postfix(g=f"{logged['loss_g']:.3f}", sps=logged["samples_per_s"])
        if d.main and (step % tc.sample_every == 0 or step == tc.steps):
            sample_grid(s.g_ema, s.clip, s.g.z_dim, context, run_dir.path / "samples" / f"step_{step:06d}.png")
        if step % tc.checkpoint_every == 0 or step == stop_at:
            run_dir.save_checkpoint(_checkpoint(s, step, data_rng))
    log.close()
    runs.shutdown_distributed()
    return 0
