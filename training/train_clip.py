"""CLIP pretraining on image-caption pairs: `moe-avatar-train clip --data DIR --config NAME --out RUN_DIR`.

open_clip's CLIP model, tokenizer and `ClipLoss` (symmetric InfoNCE, learned temperature).
One readable loop; config is data (training/configs/*.json).

With `attr_weight` > 0 and a labelled (procedural) dataset, linear attribute heads on both
embeddings add a supervised loss (training.labels): text -> stated attributes, image -> all
visible attributes. The heads are training-only; the exported encoders are plain CLIP.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from moe_avatar.training.models import CheckpointError, build_clip, clip_checkpoint, count_params, encode_images, encode_texts, load_config
from moe_avatar.training.runs import (RunDir, add_run_arguments, apply_overrides, autocast, average_gradients, broadcast_parameters, gather_rng_states,
                           init_distributed, pick_device, rng_state, sample_batch, seed_everything, shutdown_distributed)
from moe_avatar.training.labels import AttributeHeads, attribute_loss, image_targets, mention_targets, read_embedding, select
from moe_avatar.training.text import CaptionBank


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset directory (metadata.jsonl + images)")
    p.add_argument("--config", default="clip-tiny", help="config name in training/configs, a JSON path, "
                   "or an open_clip model name (e.g. ViT-B-32) when fine-tuning with --init")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--init", type=Path, help="start from a full open_clip checkpoint file on disk (never downloads)")
    add_run_arguments(p)


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
            f"{len(wrong)} shape mismatches (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})" if wrong else "",
        ]))
        raise CheckpointError(f"--init {path}: does not match the {type(model).__name__} config: {detail}")
    model.load_state_dict({k: state[k] for k in own})


def lr_at(step: int, cfg: dict[str, Any]) -> float:
    """Linear warmup then cosine decay to 0."""
    warm, total, base = cfg["warmup_steps"], cfg["steps"], cfg["lr"]
    if step < warm:
        return base * (step + 1) / warm
    return 0.5 * base * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def retrieval_accuracy(model, images: torch.Tensor, tokens: torch.Tensor) -> float:
    """Top-1 image->text accuracy within a batch (chance = 1 / batch)."""
    img = encode_images(model, (images + 1) / 2)
    txt = encode_texts(model, tokens)
    return float((img @ txt.T).argmax(dim=1).eq(torch.arange(len(img))).float().mean())


def run(args: argparse.Namespace) -> int:
    from open_clip.loss import ClipLoss

    from moe_avatar.training.dataset import load_dataset
    from moe_avatar.training.runs import images_to_tensor

    d = init_distributed()
    device = pick_device()
    cfg = resolve_config(args.config)
    tcfg = cfg["train"]
    apply_overrides(tcfg, args)
    run_dir = RunDir(args.out, d.main)
    seed_everything(tcfg["seed"])

    model = build_clip(cfg["model"])
    if args.init is not None:
        load_init_weights(model, args.init)
        cfg["init"] = str(args.init)
    data = load_dataset(args.data, size=None, skip_bad=args.skip_bad, progress=d.main and not args.quiet, limit=args.limit)
    cfg["data"] = {"path": str(args.data), "images": len(data.files), "bad_rows": len(data.bad_rows),
                   "attributes": _attribute_vocabulary(args.data)}
    attr_weight = float(tcfg.get("attr_weight", 0.0)) if data.attributes is not None else 0.0
    bank = CaptionBank([[c.text for c in caps] for caps in data.captions], cfg["model"]["text_cfg"]["context_length"],
                       progress=d.main and not args.quiet,
                       states=[[c.states for c in caps] for caps in data.captions] if attr_weight else None)
    images = data.images
    img_targets = image_targets(data.attributes) if attr_weight else None
    text_targets = mention_targets(bank.targets) if attr_weight else None
    swap_weight = float(tcfg.get("swap_negative_weight", 0.0)) if data.attributes is not None else 0.0
    swap_tokens, swap_index = (swap_negatives(data.captions, cfg["model"]["text_cfg"]["context_length"], tcfg["seed"])
                               if swap_weight else (None, None))

    model.to(device)
    embed_dim = model.text_projection.shape[1]
    heads = torch.nn.ModuleDict({"text": AttributeHeads(embed_dim), "image": AttributeHeads(embed_dim)}).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0},
                             {"params": list(heads.parameters()), "weight_decay": 0.0}],
                            lr=tcfg["lr"], betas=(0.9, 0.98), eps=1e-6, fused=True)
    broadcast_parameters(model, d)
    broadcast_parameters(heads, d)
    loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=d.rank, world_size=d.world)
    data_rng = np.random.default_rng([tcfg["seed"], d.rank])

    step = 0
    ckpt = run_dir.start(args.resume, data_rng, d.rank)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if "attribute_heads" in ckpt:
            heads.load_state_dict(ckpt["attribute_heads"])
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
    run_dir.write_config(cfg)
    if d.main:
        print(f"CLIP {cfg['name']}: {count_params(model) / 1e6:.2f} M parameters, {len(images)} images, "
              f"{len(bank.texts)} captions, device {device}, precision {tcfg['precision']}, {d.world} process(es)")

    bar = tqdm(total=tcfg["steps"], initial=step, desc="clip", disable=not d.main or args.quiet)
    t_last, n_last = time.time(), 0
    stop_at = min(tcfg["steps"], args.stop_at or tcfg["steps"])
    while step < stop_at:
        idx = sample_batch(len(images), tcfg["batch_size"], data_rng)
        choice = bank.pick_indices(idx, data_rng)
        tokens = bank.tokens[choice].long()
        imgs = images_to_tensor(images[idx]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tcfg)
        with autocast(device, tcfg["precision"]):
            img_f = encode_images(model, (imgs + 1) / 2)
            txt_f = encode_texts(model, tokens.to(device))
            loss = loss_fn(img_f.float(), txt_f.float(), model.logit_scale.exp())
            attr_acc = None
            if attr_weight:
                loss_t, acc_t = attribute_loss(read_embedding(heads["text"], txt_f.float()), select(text_targets, choice))
                loss_i, acc_i = attribute_loss(read_embedding(heads["image"], img_f.float()), select(img_targets, torch.from_numpy(idx)))
                loss = loss + attr_weight * (loss_t + loss_i)
                attr_acc = (acc_t, acc_i)
            swap_acc = None
            if swap_weight:
                loss_s, swap_acc = swap_loss(model, img_f.float(), txt_f.float(), swap_tokens, swap_index[choice], device)
                loss = loss + swap_weight * loss_s
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model, d)
        average_gradients(heads, d)  # the attribute heads are trained too: keep them identical across ranks
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        n_last += len(idx) * d.world
        bar.update(1)
        if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
            now = time.time()
            row = {"step": step, "loss": round(loss.item(), 5), "logit_scale": round(model.logit_scale.exp().item(), 3),
                   "lr": lr_at(step - 1, tcfg), "samples_per_s": round(n_last / (now - t_last), 1)}
            if attr_acc is not None:
                row["attr_acc_text"], row["attr_acc_image"] = round(attr_acc[0], 4), round(attr_acc[1], 4)
            if swap_acc is not None:
                row["swap_acc"] = round(swap_acc, 4)
            t_last, n_last = now, 0
            if step % tcfg["sample_every"] == 0 or step == tcfg["steps"]:
                model.eval()
                row["batch_retrieval_top1"] = retrieval_accuracy(model, imgs[:64], tokens[:64].to(device))
                model.train()
            run_dir.log_stats(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sps=row["samples_per_s"])
        if step % tcfg["checkpoint_every"] == 0 or step == stop_at:
            rngs = gather_rng_states(rng_state(data_rng), d)
            run_dir.save_checkpoint(clip_checkpoint(model, cfg, step=step, optimizer=opt.state_dict(), rng=rngs,
                                                    attribute_heads=heads.state_dict()))
    bar.close()
    shutdown_distributed()
    return 0



def swap_negatives(captions: list[list], context_length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per caption, the tokens of the same statement with two colours swapped (config
    `swap_negative_weight`; training.captions.swap_colors says why): (tokens [M, C], index [N]
    into them, -1 where the caption states no two colours that can trade)."""
    from moe_avatar.training.captions import swapped_caption
    from moe_avatar.training.text import tokenize

    rng = np.random.default_rng([seed, 17])
    texts, index = [], []
    for caps in captions:
        for c in caps:
            t = swapped_caption(c.states, c.lang, rng) if c.states and c.lang in ("en", "zh") else None
            index.append(len(texts) if t is not None else -1)
            if t is not None:
                texts.append(t)
    tokens = tokenize(texts, context_length).to(torch.int32) if texts else torch.zeros(0, context_length, dtype=torch.int32)
    return tokens, torch.tensor(index, dtype=torch.int64)


def swap_loss(model: torch.nn.Module, img_f: torch.Tensor, txt_f: torch.Tensor, swap_tokens: torch.Tensor,
              index: torch.Tensor, device: str) -> tuple[torch.Tensor, float | None]:
    """Each image must be closer to its caption than to the colour-swapped caption:
    -log softmax([s·<i, t>, s·<i, t_swapped>])[0], over the batch rows that have one.
    Returns (loss, fraction of those rows already ranked right)."""
    has = index >= 0
    if not bool(has.any()):
        return img_f.sum() * 0.0, None
    neg_f = encode_texts(model, swap_tokens[index[has]].long().to(device)).float()
    rows = has.to(img_f.device)
    scale = model.logit_scale.exp()
    margin = scale * ((img_f[rows] * neg_f).sum(-1) - (img_f[rows] * txt_f[rows]).sum(-1))
    return torch.nn.functional.softplus(margin).mean(), float((margin < 0).float().mean())


def _attribute_vocabulary(data_dir: Path) -> dict[str, list[str]]:
    """The synthetic dataset's attribute vocabulary (dataset.json), for the model manifest."""
    import json

    meta = Path(data_dir) / "dataset.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("attributes", {})
    return {}
