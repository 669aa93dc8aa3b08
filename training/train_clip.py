"""CLIP pretraining on image-caption pairs: `moe-avatar-train clip --data DIR --config NAME --out RUN_DIR`.

open_clip's CLIP model, tokenizer and `ClipLoss` (symmetric InfoNCE, learned temperature).
One readable loop; config is data (training/configs/*.json).

With `attr_weight` > 0 and a labelled (procedural) dataset, linear attribute heads on both
embeddings add a supervised loss (training.labels): text -> stated attributes, image -> all
visible attributes; with `stated_weight` > 0 one more head on the text embedding learns which
families a caption states at all. The heads are training-only; the exported encoders are plain
CLIP.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moe_avatar.training import runs
from moe_avatar.training.attributes import ATTRIBUTES
from moe_avatar.training.labels import (
    AttributeHeads,
    Targets,
    attribute_loss,
    image_targets,
    mention_targets,
    read_embedding,
    select,
    stated_loss,
)
from moe_avatar.training.models import CheckpointError, build_clip, clip_checkpoint, count_params, encode_images, encode_texts, load_config
from moe_avatar.training.text import CaptionBank
from moe_avatar.training.train_config import ClipTrainConfig, parse_section


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset directory (metadata.jsonl + images)")
    p.add_argument("--config", default="clip-tiny", help="config name in training/configs, a JSON path, "
                   "or an open_clip model name (e.g. ViT-B-32) when fine-tuning with --init")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--init", type=Path, help="start from a full open_clip checkpoint file on disk (never downloads)")
    runs.add_run_arguments(p)


def resolve_config(name: str) -> dict[str, Any]:
    """Our JSON configs first; an open_clip built-in model name (for --init) second."""
    try:
        return load_config(name, "clip")
    except FileNotFoundError:
        import open_clip

        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise
        base = load_config("clip-tiny", "clip")
        return {"kind": "clip", "name": name, "description": f"open_clip {name}", "model": model_cfg, "train": base["train"]}


def load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights of a full open_clip checkpoint from disk; clear errors, no network."""
    if not path.is_file():
        raise CheckpointError(f"--init {path}: file not found (weights are never downloaded; pass a local open_clip checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"--init {path}: not a readable PyTorch checkpoint ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"--init {path}: no state dict inside")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or wrong:
        detail = "; ".join(filter(None, [
            f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})" if missing else "",
            f"{len(wrong)} shape mismatches (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs "
            f"{tuple(own[wrong[0]].shape)})" if wrong else "",
        ]))
        raise CheckpointError(f"--init {path}: does not match the {type(model).__name__} config: {detail}")
    model.load_state_dict({k: state[k] for k in own})


def lr_at(step: int, tc: ClipTrainConfig) -> float:
    """Linear warmup then cosine decay to 0."""
    warm, total, base = tc.warmup_steps, tc.steps, tc.lr
    if step < warm:
        return base * (step + 1) / warm
    return 0.5 * base * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def retrieval_accuracy(model, images: torch.Tensor, tokens: torch.Tensor) -> float:
    """Top-1 image->text accuracy within a batch (chance = 1 / batch)."""
    img = encode_images(model, (images + 1) / 2)
    txt = encode_texts(model, tokens)
    return float((img @ txt.T).argmax(dim=1).eq(torch.arange(len(img))).float().mean())


def read_config(args: argparse.Namespace) -> tuple[dict[str, Any], ClipTrainConfig]:
    """The config with the command line's overrides, its train section checked before anything loads."""
    cfg = resolve_config(args.config)
    tc = parse_section(ClipTrainConfig, {**cfg["train"], **runs.cli_overrides(args)}, f"config {cfg['name']}: train")
    cfg["train"] = asdict(tc)  # resolved: config.json and the checkpoint record every option
    return cfg, tc


@dataclass
class ClipRun:
    """Everything one CLIP run trains with."""

    tc: ClipTrainConfig
    device: torch.device
    d: runs.Dist
    model: torch.nn.Module
    heads: torch.nn.ModuleDict  # attribute heads on the text and image embeddings (training-only)
    opt: torch.optim.Optimizer
    loss_fn: Any
    bank: CaptionBank
    images: np.ndarray
    img_targets: Targets | None
    text_targets: Targets | None


def build_run(args: argparse.Namespace, cfg: dict[str, Any], tc: ClipTrainConfig, d: runs.Dist) -> ClipRun:
    from open_clip.loss import ClipLoss

    from moe_avatar.training.dataset import load_dataset

    device = runs.pick_device()
    model = build_clip(cfg["model"])
    if args.init is not None:
        load_init_weights(model, args.init)
        cfg["init"] = str(args.init)
    data = load_dataset(args.data, size=None, skip_bad=args.skip_bad, progress=d.main and not args.quiet, limit=args.limit)
    cfg["data"] = {"path": str(args.data), "images": len(data.files), "bad_rows": len(data.bad_rows),
                   "attributes": _attribute_vocabulary(args.data)}
    if tc.attr_weight and data.attributes is None:  # your own art: contrastive loss alone, said once
        if d.main:
            print(f"note: {args.data} has no ground-truth attributes, so attr_weight {tc.attr_weight} is off for this run")
        tc = replace(tc, attr_weight=0.0, stated_weight=0.0)
        cfg["train"].update(attr_weight=0.0, stated_weight=0.0)
    bank = CaptionBank([[c.text for c in caps] for caps in data.captions], cfg["model"]["text_cfg"]["context_length"],
                       progress=d.main and not args.quiet,
                       states=[[c.states for c in caps] for caps in data.captions] if tc.attr_weight else None)
    model.to(device)
    embed_dim = model.text_projection.shape[1]
    heads = torch.nn.ModuleDict({"text": AttributeHeads(embed_dim), "image": AttributeHeads(embed_dim)})
    if tc.stated_weight:
        heads["stated"] = torch.nn.Linear(embed_dim, len(ATTRIBUTES))
    heads.to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
                             {"params": list(heads.parameters()), "weight_decay": 0.0}],
                            lr=tc.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    runs.broadcast_parameters(model, d)
    runs.broadcast_parameters(heads, d)
    loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=d.rank, world_size=d.world)
    return ClipRun(tc, device, d, model, heads, opt, loss_fn, bank, data.images,
                   image_targets(data.attributes) if tc.attr_weight else None,
                   mention_targets(bank.targets) if tc.attr_weight else None)


def train_step(r: ClipRun, step: int, data_rng: np.random.Generator) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Contrastive loss plus the attribute heads' on one batch; returns the stats row and the batch."""
    tc = r.tc
    idx = runs.sample_batch(len(r.images), tc.batch_size, data_rng)
    choice = r.bank.pick_indices(idx, data_rng)
    tokens = r.bank.tokens_for(choice, tc.segment_shuffle, data_rng)
    imgs = runs.images_to_tensor(r.images[idx]).to(r.device)
    for group in r.opt.param_groups:
        group["lr"] = lr_at(step, tc)
    row: dict[str, Any] = {}
    with runs.autocast(r.device, tc.precision):
        img_f = encode_images(r.model, (imgs + 1) / 2)
        txt_f = encode_texts(r.model, tokens.to(r.device))
        loss = r.loss_fn(img_f.float(), txt_f.float(), r.model.logit_scale.exp())
        if tc.attr_weight:
            loss_t, row["attr_acc_text"] = attribute_loss(read_embedding(r.heads["text"], txt_f.float()),
                                                          select(r.text_targets, choice))
            loss_i, row["attr_acc_image"] = attribute_loss(read_embedding(r.heads["image"], img_f.float()),
                                                           select(r.img_targets, torch.from_numpy(idx)))
            loss = loss + tc.attr_weight * (loss_t + loss_i)
            if tc.stated_weight:
                loss_s, row["stated_acc_text"] = stated_loss(r.heads["stated"](txt_f.float() * txt_f.shape[-1] ** 0.5),
                                                             select(r.text_targets, choice))
                loss = loss + tc.stated_weight * loss_s
    r.opt.zero_grad(set_to_none=True)
    loss.backward()
    runs.average_gradients(r.model, r.d)
    runs.average_gradients(r.heads, r.d)  # the attribute heads are trained too: keep them identical across ranks
    r.opt.step()
    with torch.no_grad():
        r.model.logit_scale.clamp_(0, math.log(100))
    row.update(loss=loss, logit_scale=r.model.logit_scale.exp(), lr=lr_at(step, tc))
    return row, imgs, tokens


def run(args: argparse.Namespace) -> int:
    cfg, tc = read_config(args)
    d = runs.init_distributed()
    run_dir = runs.RunDir(args.out, d.main)
    runs.seed_everything(tc.seed)
    r = build_run(args, cfg, tc, d)
    data_rng = np.random.default_rng([tc.seed, d.rank])
    ckpt = run_dir.start(args.resume, data_rng, d.rank)
    step = 0 if ckpt is None else runs.load_states(ckpt, {"model": r.model, "attribute_heads": r.heads, "optimizer": r.opt})
    run_dir.write_config(cfg)
    if d.main:
        print(f"CLIP {cfg['name']}: {count_params(r.model) / 1e6:.2f} M parameters, {len(r.images)} images, "
              f"{len(r.bank.texts)} captions, device {r.device}, precision {tc.precision}, {d.world} process(es)")
    log = runs.StepLog(run_dir, "clip", tc.steps, step, tc.log_every, disable=not d.main or args.quiet)
    stop_at = min(tc.steps, args.stop_at or tc.steps)
    while step < stop_at:
        row, imgs, tokens = train_step(r, step, data_rng)
        step += 1
        if log.due(step) and (step % tc.sample_every == 0 or step == tc.steps):
            r.model.eval()
            row["batch_retrieval_top1"] = retrieval_accuracy(r.model, imgs[:64], tokens[:64].to(r.device))
            r.model.train()
        if (logged := log.step(step, len(imgs) * d.world, row)) is not None:
            log.bar.set_postfix(loss=f"{logged['loss']:.3f}", sps=logged["samples_per_s"])
        if step % tc.checkpoint_every == 0 or step == stop_at:
            rngs = runs.gather_rng_states(runs.rng_state(data_rng), d)
            run_dir.save_checkpoint(clip_checkpoint(r.model, cfg, step=step, optimizer=r.opt.state_dict(), rng=rngs,
                                                    attribute_heads=r.heads.state_dict()))
    log.close()
    runs.shutdown_distributed()
    return 0


def _attribute_vocabulary(data_dir: Path) -> dict[str, list[str]]:
    """The synthetic dataset's attribute vocabulary (dataset.json), for the model manifest."""
    import json

    meta = Path(data_dir) / "dataset.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("attributes", {})
    return {}
