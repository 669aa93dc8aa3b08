"""Evaluation: `moe-avatar-train eval --bundle models/NAME | --checkpoint RUN_DIR --data DIR --out DIR`.

Metrics (see training/EVALUATION.md for definitions):
  prompt accuracy   an attribute judge (CNN trained on real renders) checks every stated attribute
  R-precision       true caption ranked first among 100 by CLIP cosine; generated vs real renders
  CLIP-space FD     Fréchet distance of CLIP image features, generated vs real, with a real-vs-real floor
  diversity         entropy of unstated attributes across seeds / the same for data samples
  rerank gain       prompt accuracy with CLIP rerank factor 4 vs 1
The same code evaluates a PyTorch checkpoint and an exported ONNX bundle (what the server serves).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from moe_avatar.training.attributes import (ATTRIBUTES, COLOR_FAMILIES, FAMILIES, HEAD_ITEMS, MULTI_VALUED, sample_attributes,
                                 visible_families)
from moe_avatar.server.bundle import GRAPH_FILES, clean_prompt, load_bundle, noise_from_seeds

PROMPT_DIR = Path(__file__).parent / "prompts"


# ----------------------------------------------------------------------------- prompt sets

@dataclass
class Prompt:
    text: str
    lang: str
    attributes: dict[str, Any]  # the attributes the text states (family -> value, list for head_accessory)


def load_prompts(path: Path) -> list[Prompt]:
    """JSONL with `text`, `lang` and `attributes` (stated) per line; a clear error for a bad line."""
    prompts = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            p = Prompt(str(row["text"]), str(row.get("lang", "")), dict(row.get("attributes", {})))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{i}: bad prompt line ({exc})") from exc
        for fam, v in p.attributes.items():
            if fam not in ATTRIBUTES:
                raise ValueError(f"{path}:{i}: unknown attribute family {fam!r}")
            values = v if fam == MULTI_VALUED else [v]
            if fam == MULTI_VALUED and not isinstance(v, list):
                raise ValueError(f"{path}:{i}: {fam} must be a list")
            bad = [x for x in values if x not in ATTRIBUTES[fam]]
            if bad:
                raise ValueError(f"{path}:{i}: unknown {fam} value {bad[0]!r}")
        prompts.append(p)
    return prompts


def make_eval_prompts(n: int, seed: int = 1234) -> list[tuple[Prompt, dict]]:
    """n prompts (half Chinese) from held-out templates, 1-5 stated visible attributes each.

    Returns (prompt, full attributes): the full set is a real avatar the prompt is true of,
    which gives the real-render ceiling for R-precision.
    """
    from moe_avatar.training.captions import make_eval_caption

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        attrs = sample_attributes(rng)
        fams = sorted(visible_families(attrs))
        k = int(rng.integers(1, 6))
        chosen = [fams[j] for j in rng.permutation(len(fams))[:k]]
        stated = {f: (list(attrs[f]) if f == MULTI_VALUED else attrs[f]) for f in chosen}
        lang = "en" if i % 2 == 0 else "zh"
        out.append((Prompt(make_eval_caption(stated, lang, rng), lang, stated), attrs))
    return out


# ----------------------------------------------------------------------------- the judge

class Judge(nn.Module):
    """Small CNN: RGBA 64 px -> one softmax head per family (multi-hot for head accessories).

    Kept cheap (about 35 MMAC per image) so it trains in minutes on 2 CPU cores; the heads
    read the flattened 4x4 map, so they know *where* a feature is (eyes vs hair vs collar).
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 128, 192)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 4
        for i, cout in enumerate(widths):
            layers += [nn.Conv2d(cin, cout, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten())
        feat = cin * 4 * 4
        self.heads = nn.ModuleDict({
            f: nn.Linear(feat, len(HEAD_ITEMS) if f == MULTI_VALUED else len(v)) for f, v in ATTRIBUTES.items()
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {f: head(h) for f, head in self.heads.items()}


def _to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != 64:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    return x


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


def predict(judge: Judge, images: np.ndarray, batch: int = 256) -> list[dict]:
    """Judge's attribute dicts for uint8 RGBA images [N, H, W, 4]."""
    judge.eval()
    out: list[dict] = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            logits = judge(_to_input(images[s:s + batch]))
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
    """Held-out accuracy per family, on the families visible in each render."""
    preds = predict(judge, images)
    acc = {}
    for f in FAMILIES:
        hits = [(sorted(p[f]) == sorted(a[f])) if f == MULTI_VALUED else p[f] == a[f]
                for p, a in zip(preds, attrs) if f in visible_families(a)]
        acc[f] = float(np.mean(hits)) if hits else float("nan")
    return acc


def train_judge(images: np.ndarray, attrs: list[dict], steps: int = 1200, batch: int = 64, seed: int = 0,
                progress: bool = True) -> Judge:
    """Supervised on real renders' ground truth (the judge is the only model that sees labels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    labels, masks = _targets(attrs)
    judge.train()
    for _ in tqdm(range(steps), desc="judge", disable=not progress):
        idx = rng.choice(len(images), size=batch, replace=False)
        x = _to_input(images[idx])
        if rng.random() < 0.5:  # generated images are a little noisy: so is the judge's training
            x = x + 0.03 * torch.randn_like(x)
        logits = judge(x)
        t = torch.from_numpy(idx)
        loss = 0.0
        for f, lg in logits.items():
            m = masks[f][t]
            if f == MULTI_VALUED:
                per = F.binary_cross_entropy_with_logits(lg, labels[f][t], reduction="none").mean(1)
            else:
                per = F.cross_entropy(lg, labels[f][t], reduction="none")
            loss = loss + (per * m).sum() / m.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return judge.eval()


def load_or_train_judge(data_dir: Path, cache: Path, progress: bool = True, log=print) -> tuple[Judge, dict[str, float]]:
    """The judge for a dataset, trained once and cached (with its held-out accuracy)."""
    from moe_avatar.training.dataset import load_dataset

    if cache.is_file():
        state = torch.load(cache, map_location="cpu", weights_only=False)
        judge = Judge()
        judge.load_state_dict(state["judge"])
        return judge.eval(), state["accuracy"]
    data = load_dataset(data_dir, size=64, progress=progress)
    if data.attributes is None:
        raise ValueError(f"{data_dir}: has no ground-truth attributes; the judge needs the synthetic dataset")
    n_val = min(3000, len(data.files) // 5)
    train_idx, val_idx = np.arange(n_val, len(data.files)), np.arange(n_val)
    t0 = time.time()
    judge = train_judge(data.images[train_idx], [data.attributes[i] for i in train_idx], progress=progress)
    acc = judge_accuracy(judge, data.images[val_idx], [data.attributes[i] for i in val_idx])
    log(f"judge trained in {time.time() - t0:.0f}s; held-out accuracy: " + ", ".join(f"{f} {a:.3f}" for f, a in acc.items()))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"judge": judge.state_dict(), "accuracy": acc, "data": str(data_dir), "held_out": n_val}, cache)
    return judge, acc


def stated_correct(stated: dict, predicted: dict) -> dict[str, bool]:
    """Per stated family: does the judged image show it? (head accessories: stated ⊆ seen; [] = none seen)."""
    out = {}
    for f, v in stated.items():
        if f == MULTI_VALUED:
            seen = set(predicted[f])
            out[f] = (not seen) if not v else set(v) <= seen
        else:
            out[f] = predicted[f] == v
    return out


# ----------------------------------------------------------------------------- samplers

class Sampler(Protocol):
    """What evaluation needs from a model, whether PyTorch checkpoint or ONNX bundle."""

    z_dim: int
    resolution: int

    def encode_text(self, prompts: list[str]) -> np.ndarray: ...
    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray: ...
    def encode_image(self, images: np.ndarray) -> np.ndarray: ...


class CheckpointSampler:
    def __init__(self, clip_ckpt: Path, gan_ckpt: Path):
        from moe_avatar.training.models import load_clip_checkpoint, load_gan_checkpoint

        self.clip, cfg = load_clip_checkpoint(clip_ckpt)
        self.g, _, _ = load_gan_checkpoint(gan_ckpt)
        self.context = cfg["model"]["text_cfg"]["context_length"]
        self.z_dim, self.resolution = self.g.z_dim, self.g.resolution

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        from moe_avatar.training.models import encode_texts
        from moe_avatar.training.text import tokenize

        return encode_texts(self.clip, tokenize(prompts, self.context)).numpy()

    @torch.no_grad()
    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        z = torch.from_numpy(noise_from_seeds(seeds, self.z_dim))
        x = self.g(z, torch.from_numpy(text_emb).float(), torch.full((len(seeds),), psi))
        return ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()

    @torch.no_grad()
    def encode_image(self, images: np.ndarray) -> np.ndarray:
        from moe_avatar.training.models import encode_images

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        return encode_images(self.clip, x).numpy()


class BundleSampler:
    """Exactly what the server runs: the bundle's tokenizer.json and ONNX graphs."""

    def __init__(self, bundle: Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = load_bundle(bundle)
        self.manifest = self.bundle.manifest
        self.sessions = {key: ort.InferenceSession(str(self.bundle.path(key)), providers=["CPUExecutionProvider"])
                         for key in GRAPH_FILES}
        self.tok = Tokenizer.from_file(str(self.bundle.path("tokenizer")))
        self.z_dim, self.resolution = self.bundle.z_dim, self.bundle.resolution

    def _run(self, key: str, *inputs: np.ndarray) -> np.ndarray:
        names = [i["name"] for i in self.bundle.io(key)["inputs"]]
        return self.sessions[key].run(None, dict(zip(names, inputs)))[0]

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        ids = np.array([e.ids for e in self.tok.encode_batch([clean_prompt(p) for p in prompts])], dtype=np.int64)
        return self._run("text_encoder", ids)

    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        return self._run("generator", noise_from_seeds(seeds, self.z_dim), text_emb.astype(np.float32),
                         np.full(len(seeds), psi, dtype=np.float32))

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        return self._run("image_encoder", np.ascontiguousarray(images))


def _batched(fn, items, batch: int = 256):
    return np.concatenate([fn(items[i:i + batch]) for i in range(0, len(items), batch)])


# ----------------------------------------------------------------------------- metrics

JudgeFn = Callable[[np.ndarray], list[dict]]


def prompt_accuracy(sampler: Sampler, judge: JudgeFn, prompts: list[Prompt], seeds: list[int], rerank: int = 1,
                    psi: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Fraction of stated attributes the judge sees, per family, overall and per language;
    and the colour families' checks on prompts stating one colour vs several (`colour_binding`).

    `judge` maps uint8 RGBA images to attribute dicts (normally `partial(predict, cnn)`).
    """
    per_family: dict[str, list[bool]] = {f: [] for f in FAMILIES}
    per_lang: dict[str, list[bool]] = {}
    all_ok: list[bool] = []
    # Colour checks split by how many colour families the prompt states: a gap between the two
    # is the text embedding binding a colour to the wrong family ("pink hair, blue eyes").
    colour: dict[str, list[bool]] = {"one": [], "several": []}
    for p in tqdm(prompts, desc=f"prompt accuracy (rerank {rerank})", disable=not progress):
        t = sampler.encode_text([p.text])
        cand_seeds = [s * rerank + j for s in seeds for j in range(rerank)]
        imgs = sampler.generate(np.repeat(t, len(cand_seeds), 0), cand_seeds, psi)
        if rerank > 1:
            scores = (sampler.encode_image(imgs) @ t[0]).reshape(len(seeds), rerank)
            imgs = imgs.reshape(len(seeds), rerank, *imgs.shape[1:])[np.arange(len(seeds)), scores.argmax(1)]
        for pred in judge(imgs):
            ok = stated_correct(p.attributes, pred)
            n_colours = sum(f in p.attributes for f in COLOR_FAMILIES)
            for f, hit in ok.items():
                per_family[f].append(hit)
                per_lang.setdefault(p.lang or "unknown", []).append(hit)
                if f in COLOR_FAMILIES:
                    colour["one" if n_colours == 1 else "several"].append(hit)
            all_ok.append(all(ok.values()))
    checks = [h for hits in per_family.values() for h in hits]
    return {"overall": float(np.mean(checks)), "all_stated_correct": float(np.mean(all_ok)),
            "per_family": {f: float(np.mean(h)) for f, h in per_family.items() if h},
            "per_language": {k: float(np.mean(v)) for k, v in per_lang.items()},
            "colour_binding": {k: (float(np.mean(v)) if v else None) for k, v in colour.items()},
            "checks": len(checks)}


def r_precision(image_emb: np.ndarray, text_emb: np.ndarray, rng: np.random.Generator, candidates: int = 100) -> float:
    """AttnGAN's R-precision: image i's true caption i ranked first among 1 + 99 mismatched."""
    n = len(image_emb)
    hits = []
    for i in range(n):
        others = rng.choice(np.delete(np.arange(n), i), size=candidates - 1, replace=False)
        cand = np.concatenate([[i], others])
        sims = text_emb[cand] @ image_emb[i]
        hits.append(sims.argmax() == 0)
    return float(np.mean(hits))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def sqrtm_psd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = sqrtm_psd(s1)
    cross = sqrtm_psd(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def _entropy(values: list) -> float:
    _, counts = np.unique(np.array([str(v) for v in values]), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def data_entropy(family: str, n: int, trials: int = 400, seed: int = 0) -> float:
    """Expected plug-in entropy of `n` samples of a family drawn from the data distribution."""
    rng = np.random.default_rng(seed)
    return float(np.mean([_entropy([sorted(a[family]) if family == MULTI_VALUED else a[family]
                                    for a in (sample_attributes(rng) for _ in range(n))]) for _ in range(trials)]))


def diversity(judged: list[list[dict]], stated: list[dict]) -> dict[str, Any]:
    """Unstated-attribute entropy across seeds, as a fraction of data samples' entropy at equal n.

    `judged[i]` holds the judge's attributes of prompt i's images (one per seed). Comparing
    against data samples of the same size removes the small-sample bias of plug-in entropy,
    so 1.0 means "as varied as the data", 0.0 means every seed gives the same value.
    """
    n = len(judged[0])
    ref = {f: data_entropy(f, n) for f in FAMILIES}
    per_family: dict[str, list[float]] = {f: [] for f in FAMILIES}
    for preds, st in zip(judged, stated):
        for f in FAMILIES:
            if f in st:
                continue
            per_family[f].append(_entropy([sorted(p[f]) if f == MULTI_VALUED else p[f] for p in preds]) / ref[f])
    fam = {f: float(np.mean(v)) for f, v in per_family.items() if v}
    return {"overall": float(np.mean(list(fam.values()))), "per_family": fam, "seeds": n}


# ----------------------------------------------------------------------------- picture

def prompt_grid(sampler: Sampler, prompts: list[str], seeds: list[int], path: Path, scale: int = 2, psi: float = 1.0) -> None:
    """Prompts x seeds picture (rows labelled by prompt index; prompts listed in eval.json)."""
    from PIL import Image, ImageDraw

    r = sampler.resolution * scale
    label_w = 28
    sheet = Image.new("RGB", (label_w + r * len(seeds), r * len(prompts)), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for row, text in enumerate(prompts):
        imgs = sampler.generate(np.repeat(sampler.encode_text([text]), len(seeds), 0), seeds, psi)
        draw.text((4, row * r + r // 2 - 6), f"{row + 1}", fill=(60, 60, 60))
        for col, img in enumerate(imgs):
            tile = Image.fromarray(img, "RGBA").resize((r, r), Image.NEAREST)
            bg = Image.new("RGBA", (r, r), (255, 255, 255, 255) if (row + col) % 2 else (236, 236, 240, 255))
            sheet.paste(Image.alpha_composite(bg, tile).convert("RGB"), (label_w + col * r, row * r))
    sheet.save(path)


# ----------------------------------------------------------------------------- the command

def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="exported model bundle directory (what the server serves)")
    src.add_argument("--checkpoint", type=Path, help="GAN run directory (uses its checkpoint.pt and the CLIP it names)")
    p.add_argument("--data", type=Path, required=True, help="synthetic dataset (real renders for the judge, FD and the ceiling)")
    p.add_argument("--out", type=Path, required=True, help="output directory for eval.json and the picture")
    p.add_argument("--prompts", type=Path, help=f"prompt JSONL (default: {PROMPT_DIR}/eval.jsonl)")
    p.add_argument("--judge", type=Path, help="judge cache (default: DATA/judge.pt)")
    p.add_argument("--seeds", type=int, default=4, help="seeds per prompt for prompt accuracy")
    p.add_argument("--fd-samples", type=int, default=5000, help="images per set for the CLIP-space FD")
    p.add_argument("--limit", type=int, help="use only the first N prompts (quick looks)")
    p.add_argument("--psi", type=float, default=1.0,
                   help="truncation for every generated image (1.0 = untruncated, the bar's setting; "
                        "the server's default is 0.7)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from moe_avatar.training.dataset import load_dataset

    progress = not args.quiet
    t_start = time.time()
    if args.bundle:
        sampler: Sampler = BundleSampler(args.bundle)
        source = {"bundle": "."}  # stored in this bundle's manifest, whose paths are relative to it
    else:
        cfg = json.loads((args.checkpoint / "config.json").read_text())
        sampler = CheckpointSampler(Path(cfg["clip"]["checkpoint"]), args.checkpoint / "checkpoint.pt")
        source = {"checkpoint": os.path.relpath(args.checkpoint)}
    args.out.mkdir(parents=True, exist_ok=True)
    judge, judge_acc = load_or_train_judge(args.data, args.judge or args.data / "judge.pt", progress)

    prompts_path = args.prompts or PROMPT_DIR / "eval.jsonl"
    prompts = load_prompts(prompts_path)[: args.limit]
    seeds = list(range(args.seeds))
    judge_fn = partial(predict, judge)
    psi = args.psi
    acc1 = prompt_accuracy(sampler, judge_fn, prompts, seeds, 1, psi, progress=progress)
    acc4 = prompt_accuracy(sampler, judge_fn, prompts, seeds, 4, psi, progress=progress)

    # R-precision on generated images (seed 0) and on real renders of the same prompts (ceiling).
    rng = np.random.default_rng(0)
    texts = [p.text for p in prompts]
    text_emb = _batched(sampler.encode_text, texts)
    gen = np.concatenate([sampler.generate(text_emb[i:i + 256], list(range(1000 + i, 1000 + i + len(text_emb[i:i + 256]))), psi)
                          for i in range(0, len(texts), 256)])
    rp_gen = r_precision(_batched(sampler.encode_image, gen), text_emb, np.random.default_rng(0))
    real_attrs = _real_attributes_for(prompts_path, prompts)
    rp_real = None
    if real_attrs is not None:
        from moe_avatar.training.render import render_avatar

        real = np.stack([np.asarray(render_avatar(a, sampler.resolution, np.random.default_rng([7, i]))) for i, a in enumerate(real_attrs)])
        rp_real = r_precision(_batched(sampler.encode_image, real), text_emb, np.random.default_rng(0))

    # Diversity: 40 prompts x 16 seeds, entropy of what each prompt leaves open.
    div_prompts = prompts[:40]
    judged = [judge_fn(sampler.generate(np.repeat(sampler.encode_text([p.text]), 16, 0), list(range(5000, 5016)), psi))
              for p in tqdm(div_prompts, desc="diversity", disable=not progress)]
    div = diversity(judged, [p.attributes for p in div_prompts])

    # CLIP-space FD: generated (from dataset captions) vs real renders, and real vs real.
    n = args.fd_samples
    data = load_dataset(args.data, size=sampler.resolution, progress=progress, limit=3 * n)
    if len(data.files) < 2 * n:
        raise ValueError(f"{args.data}: FD needs {2 * n} images, the dataset has {len(data.files)}")
    caps = [data.captions[i][int(rng.integers(len(data.captions[i])))].text for i in range(n)]
    cap_emb = _batched(sampler.encode_text, caps)
    fake = np.concatenate([sampler.generate(cap_emb[i:i + 256], list(range(20000 + i, 20000 + i + len(cap_emb[i:i + 256]))), psi)
                           for i in tqdm(range(0, n, 256), desc="FD samples", disable=not progress)])
    f_fake = _batched(sampler.encode_image, fake)
    f_real_a = _batched(sampler.encode_image, data.images[:n])
    f_real_b = _batched(sampler.encode_image, data.images[n:2 * n])
    fd_gen, fd_floor = frechet_distance(f_fake, f_real_a), frechet_distance(f_real_b, f_real_a)

    result = {
        "source": source,
        "prompts": {"file": os.path.relpath(prompts_path, args.bundle or "."), "count": len(prompts), "seeds": len(seeds)},
        "psi": psi,
        "judge_accuracy": judge_acc,
        "prompt_accuracy": acc1,
        "prompt_accuracy_rerank4": acc4,
        "rerank_gain": acc4["overall"] - acc1["overall"],
        "r_precision": {"generated": rp_gen, "real_ceiling": rp_real,
                        "ratio": (rp_gen / rp_real) if rp_real else None},
        "clip_fd": {"generated_vs_real": fd_gen, "real_vs_real_floor": fd_floor, "ratio": fd_gen / max(fd_floor, 1e-12),
                    "samples": n},
        "diversity": div,
        "seconds": round(time.time() - t_start, 1),
    }
    # The hand-written prompts (short, as people type them; the picture's rows) x 8 seeds.
    free = load_prompts(PROMPT_DIR / "freeform.jsonl")
    result["freeform_accuracy"] = prompt_accuracy(sampler, judge_fn, free, list(range(8)), 1, psi, progress=progress)
    result["bar"] = check_bar(result)
    (args.out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    picked = [p.text for p in free if p.lang == "en"][:6] + [p.text for p in free if p.lang == "zh"][:6]
    prompt_grid(sampler, picked, list(range(8)), args.out / "samples.png", psi=psi)
    (args.out / "samples.txt").write_text("".join(f"{i + 1}. {t}\n" for i, t in enumerate(picked)), encoding="utf-8")
    print(format_table(result))
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'samples.png'}")
    return 0


BAR = {"overall": 0.85, "family_min": 0.70, "r_precision_ratio": 0.8, "diversity": 0.7, "fd_ratio": 3.0}


def check_bar(r: dict[str, Any]) -> dict[str, Any]:
    """The bundled model's bar (issue: evaluation suite); every check with its value."""
    fam_min = min(r["prompt_accuracy"]["per_family"].values())
    checks = {
        "prompt_accuracy >= 0.85": r["prompt_accuracy"]["overall"] >= BAR["overall"],
        "no family below 0.70": fam_min >= BAR["family_min"],
        "R-precision >= 0.8 x ceiling": (r["r_precision"]["ratio"] or 0) >= BAR["r_precision_ratio"],
        "diversity >= 0.7": r["diversity"]["overall"] >= BAR["diversity"],
        "CLIP FD <= 3 x floor": r["clip_fd"]["ratio"] <= BAR["fd_ratio"],
    }
    return {"checks": checks, "passed": all(checks.values())}


def format_table(r: dict[str, Any]) -> str:
    pa, pa4 = r["prompt_accuracy"], r["prompt_accuracy_rerank4"]
    lines = [f"metric (psi {r.get('psi', 1.0):g})                value", "-" * 48,
             f"prompt accuracy (overall)       {pa['overall']:.3f}   rerank x4: {pa4['overall']:.3f}",
             *[f"  {lang:<30}{v:.3f}" for lang, v in pa["per_language"].items()],
             *[f"  {f:<30}{v:.3f}   (judge {r['judge_accuracy'].get(f, float('nan')):.3f})" for f, v in pa["per_family"].items()],
             f"all stated attributes right     {pa['all_stated_correct']:.3f}",
             *([f"colours: one / several stated   {cb['one']:.3f} / {cb['several']:.3f}"]
               if (cb := pa.get("colour_binding")) and None not in cb.values() else []),
             *([f"free-form prompts ({ff['checks']} checks)   {ff['overall']:.3f}   all stated {ff['all_stated_correct']:.3f}"]
               if (ff := r.get("freeform_accuracy")) else []),
             f"R-precision generated / real    {r['r_precision']['generated']:.3f} / {r['r_precision']['real_ceiling'] or float('nan'):.3f}",
             f"CLIP FD generated / floor       {r['clip_fd']['generated_vs_real']:.4f} / {r['clip_fd']['real_vs_real_floor']:.4f}"
             f"  (x{r['clip_fd']['ratio']:.2f})",
             f"diversity (unstated)            {r['diversity']['overall']:.3f}",
             "bar: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["bar"]["checks"].items())]
    return "\n".join(lines)


def _real_attributes_for(path: Path, prompts: list[Prompt]) -> list[dict] | None:
    """The full attributes stored beside generated eval prompts (`full_attributes`), if any."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(rows) < len(prompts) or any("full_attributes" not in r for r in rows[: len(prompts)]):
        return None
    return [r["full_attributes"] for r in rows[: len(prompts)]]
