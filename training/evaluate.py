"""Evaluation: `moe-avatar-train eval --bundle models/NAME | --checkpoint RUN_DIR --data DIR --out DIR`.

Runs every prompt set (default: eval.jsonl and natural.jsonl) through the model and the
judge with baselines beside each figure, then FD over every reference block, diversity,
seed-pair agreement and the showcase check; writes eval.json, samples.png and a table.
Definitions: training/EVALUATION.md. The same code evaluates a PyTorch checkpoint and an
exported ONNX bundle (what the server serves).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from moe_avatar.training.baselines import ceiling_renders, random_renders, shuffled
from moe_avatar.training.metrics import (
    diversity,
    fd_over_blocks,
    r_candidates,
    r_precision,
    seed_pair_agreement,
)
from moe_avatar.training.prompt_sets import PROMPT_DIR, Prompt, load_prompts
from moe_avatar.training.reading import reading_scores
from moe_avatar.training.report import check_bar, format_table
from moe_avatar.training.samplers import (
    BundleSampler,
    CheckpointSampler,
    Sampler,
    batched,
    generate_for_prompts,
    generate_many,
)
from moe_avatar.training.scoring import bootstrap_ci, score

JudgeFn = Callable[[np.ndarray], list[dict]]
DEFAULT_SETS = ("eval.jsonl", "natural.jsonl")
SHOWCASE_SEEDS = 16
SHOWCASE_PASS = 14


def judge_per_prompt(judge: JudgeFn, images: np.ndarray) -> list[list[dict]]:
    """Judge [P, S, H, W, 4] images into P lists of S attribute dicts."""
    flat = judge(images.reshape(-1, *images.shape[2:]))
    s = images.shape[1]
    return [flat[i * s:(i + 1) * s] for i in range(images.shape[0])]


def prompt_accuracy(sampler: Sampler, judge: JudgeFn, prompts: list[Prompt], seeds: list[int], rerank: int = 1,
                    psi: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Score the model's images of every prompt at every seed (see scoring.score)."""
    images = generate_for_prompts(sampler, [p.text for p in prompts], seeds, rerank, psi)
    return score(prompts, judge_per_prompt(judge, images))


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("overall", "overall_ci95", "all_stated_correct", "all_stated_ci95")}


def prompt_baselines(sampler: Sampler, judge: JudgeFn, prompts: list[Prompt], judged: list[list[dict]],
                     seeds: list[int], psi: float) -> dict[str, Any]:
    """The same scoring for random renders, the empty prompt, shuffled prompts and real renders."""
    n, s, size = len(prompts), len(seeds), sampler.resolution
    rand = random_renders(n * s, size).reshape(n, s, size, size, 4)
    empty_seeds = [900_000 + i for i in range(n * s)]
    empty = generate_many(sampler, np.repeat(sampler.encode_text([""]), n * s, 0), empty_seeds, psi)
    real, ok = ceiling_renders(prompts, s, size)
    real_judged = judge_per_prompt(judge, real.reshape(n, s, size, size, 4))
    kept = [i for i in range(n) if ok[i]]
    return {
        "chance_random_renders": _headline(score(prompts, judge_per_prompt(judge, rand))),
        "empty_prompt": _headline(score(prompts, judge_per_prompt(judge, empty.reshape(n, s, size, size, 4)))),
        "shuffled_prompts": _headline(score(prompts, shuffled(judged))),
        "real_render_ceiling": {**_headline(score([prompts[i] for i in kept], [real_judged[i] for i in kept])),
                                "prompts": len(kept)},
    }


def r_precision_set(sampler: Sampler, prompts: list[Prompt], psi: float) -> dict[str, Any] | None:
    """R-precision of the model's image per prompt (seed 1000 + i), of a real render of an
    avatar the prompt is true of (ceiling) and of random renders (chance); candidates adapt to
    the prompt count."""
    k = r_candidates(len(prompts))
    if k < 2:
        return None
    text = batched(sampler.encode_text, [p.text for p in prompts])
    gen = generate_many(sampler, text, [1000 + i for i in range(len(prompts))], psi)
    real, _ = ceiling_renders(prompts, 1, sampler.resolution)
    out: dict[str, Any] = {"candidates": k}
    for name, images in (("generated", gen), ("real_ceiling", real),
                         ("chance_random_renders", random_renders(len(prompts), sampler.resolution, seed=3))):
        hits = r_precision(batched(sampler.encode_image, images), text, np.random.default_rng(0), k)
        out[name] = {"value": float(hits.mean()), "ci95": bootstrap_ci(hits, np.ones(len(hits)))}
    out["ratio"] = out["generated"]["value"] / max(out["real_ceiling"]["value"], 1e-12)
    return out


def evaluate_set(sampler: Sampler, judge: JudgeFn, path: Path, seeds: list[int], psi: float, rerank: bool,
                 limit: int | None, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Every figure for one prompt file: accuracy breakdown, baselines, R-precision (and rerank)."""
    prompts = load_prompts(path)[:limit]
    t0 = time.time()
    images = generate_for_prompts(sampler, [p.text for p in prompts], seeds, 1, psi)
    judged = judge_per_prompt(judge, images)
    out: dict[str, Any] = {"file": _display_path(path), "prompts": len(prompts), "seeds": len(seeds),
                           "accuracy": score(prompts, judged)}
    out["baselines"] = prompt_baselines(sampler, judge, prompts, judged, seeds, psi)
    out["r_precision"] = r_precision_set(sampler, prompts, psi)
    if sampler.read is not None:
        out["reading"] = reading_scores(sampler.read, prompts)
    if rerank:
        r4 = prompt_accuracy(sampler, judge, prompts, seeds, 4, psi, progress)
        out["rerank4"] = _headline(r4)
        out["rerank_gain"] = r4["overall"] - out["accuracy"]["overall"]
    log(f"{out['file']}: {len(prompts)} prompts x {len(seeds)} seeds in {time.time() - t0:.0f}s")
    return out


def fd_blocks(sampler: Sampler, data_dir: Path, block: int, psi: float, progress: bool) -> dict[str, Any]:
    """CLIP-space FD: every `block`-image block of the dataset against its own generated block
    (from its own captions), and the floor over every pair of real blocks."""
    from moe_avatar.training.dataset import load_dataset

    data = load_dataset(data_dir, size=sampler.resolution, progress=progress)
    n_blocks = len(data.files) // block
    if n_blocks < 2:
        raise ValueError(f"{data_dir}: FD needs at least 2 blocks of {block} images, the dataset has {len(data.files)}")
    rng = np.random.default_rng(0)
    fake, real = [], []
    for b in tqdm(range(n_blocks), desc="FD blocks", disable=not progress):
        idx = range(b * block, (b + 1) * block)
        caps = [data.captions[i][int(rng.integers(len(data.captions[i])))].text for i in idx]
        emb = batched(sampler.encode_text, caps)
        imgs = generate_many(sampler, emb, [20_000 + i for i in idx], psi)
        fake.append(batched(sampler.encode_image, imgs))
        real.append(batched(sampler.encode_image, data.images[b * block:(b + 1) * block]))
    return fd_over_blocks(fake, real)


def open_features(sampler: Sampler, judge: JudgeFn, prompts: list[Prompt], psi: float) -> dict[str, Any]:
    """Diversity and seed-pair agreement: 40 prompts x 16 consecutive seeds."""
    picked = prompts[:40]
    images = generate_for_prompts(sampler, [p.text for p in picked], list(range(5000, 5016)), 1, psi)
    judged = judge_per_prompt(judge, images)
    stated = [p.attributes for p in picked]
    return {"diversity": diversity(judged, stated), "seed_pairs": seed_pair_agreement(judged, stated)}


def showcase(sampler: Sampler, judge: JudgeFn, path: Path, psi: float) -> dict[str, Any]:
    """Per example prompt: in how many of 16 seeds every stated attribute is right, and which families failed."""
    prompts = load_prompts(path)
    judged = judge_per_prompt(judge, generate_for_prompts(sampler, [p.text for p in prompts],
                                                          list(range(SHOWCASE_SEEDS)), 1, psi))
    rows = []
    for p, preds in zip(prompts, judged):
        r = score([p], [preds])
        fails = {f: round(SHOWCASE_SEEDS * (1 - v)) for f, v in r["per_family"].items() if v < 1}
        rows.append({"text": p.text, "passes": round(r["all_stated_correct"] * SHOWCASE_SEEDS), "fails": fails})
    return {"file": _display_path(path), "seeds": SHOWCASE_SEEDS, "pass_at": SHOWCASE_PASS, "prompts": rows,
            "passing": sum(r["passes"] >= SHOWCASE_PASS for r in rows)}


def _display_path(path: Path) -> str:
    """A path relative to the repository when inside it (eval.json holds no absolute paths)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(repo))
    except ValueError:
        return Path(path).name


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="exported model bundle directory (what the server serves)")
    src.add_argument("--checkpoint", type=Path, help="GAN run directory (uses its checkpoint.pt and the CLIP it names)")
    p.add_argument("--data", type=Path, required=True, help="synthetic dataset (real renders for FD and its captions)")
    p.add_argument("--out", type=Path, required=True, help="output directory for eval.json and the picture")
    p.add_argument("--prompts", type=Path, nargs="+",
                   help=f"prompt JSONL files, the first one drives the bar (default: {', '.join(DEFAULT_SETS)} in {PROMPT_DIR})")
    p.add_argument("--showcase", type=Path, default=PROMPT_DIR / "showcase.jsonl",
                   help="example prompts for the 14-of-16-seeds check")
    p.add_argument("--judge", type=Path, help="judge cache (default: DATA/judge.pt; trained on first use)")
    p.add_argument("--seeds", type=int, default=4, help="seeds per prompt for prompt accuracy")
    p.add_argument("--fd-samples", type=int, default=5000, help="images per FD block (every whole block of the dataset is used)")
    p.add_argument("--limit", type=int, help="use only the first N prompts of each file (quick looks)")
    p.add_argument("--psi", type=float, default=1.0,
                   help="truncation for every generated image (1.0 = untruncated, the bar's setting; "
                        "the server's default is 0.7)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def make_sampler(args: argparse.Namespace) -> tuple[Sampler, dict[str, str]]:
    if args.bundle:
        return BundleSampler(args.bundle), {"bundle": _display_path(args.bundle)}
    cfg = json.loads((args.checkpoint / "config.json").read_text())
    return (CheckpointSampler(Path(cfg["clip"]["checkpoint"]), args.checkpoint / "checkpoint.pt"),
            {"checkpoint": _display_path(args.checkpoint)})


def picture_prompts(showcase: Path, limit: int = 12) -> list[str]:
    """The picture's rows: the showcase prompts a model card quotes (examples that are checked)."""
    rows = [json.loads(line) for line in showcase.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows if any(src.endswith("MODEL_CARD.md") for src in r.get("sources", []))][:limit]


def run(args: argparse.Namespace) -> int:
    from moe_avatar.training.judge import load_or_train_judge, predict
    from moe_avatar.training.report import prompt_grid

    progress, t_start = not args.quiet, time.time()
    log = partial(print, flush=True)
    sampler, source = make_sampler(args)
    args.out.mkdir(parents=True, exist_ok=True)
    cnn, judge_report = load_or_train_judge(args.judge or args.data / "judge.pt", progress=progress, log=log)
    judge = partial(predict, cnn)
    seeds, psi = list(range(args.seeds)), args.psi
    paths = args.prompts or [PROMPT_DIR / name for name in DEFAULT_SETS]
    sets = {_display_path(p): evaluate_set(sampler, judge, p, seeds, psi, i == 0, args.limit, progress, log)
            for i, p in enumerate(paths)}
    first = next(iter(sets.values()))
    result: dict[str, Any] = {"source": source, "psi": psi, "judge": judge_report, "prompt_sets": sets,
                              "primary": first["file"]}
    result.update(open_features(sampler, judge, load_prompts(paths[0])[:args.limit], psi))
    result["clip_fd"] = fd_blocks(sampler, args.data, args.fd_samples, psi, progress)
    result["showcase"] = showcase(sampler, judge, args.showcase, psi)
    result["seconds"] = round(time.time() - t_start, 1)
    result["bar"] = check_bar(result)
    (args.out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    picked = picture_prompts(args.showcase)
    prompt_grid(sampler, picked, list(range(8)), args.out / "samples.png", psi=psi)
    (args.out / "samples.txt").write_text("".join(f"{i + 1}. {t}\n" for i, t in enumerate(picked)), encoding="utf-8")
    print(format_table(result))
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'samples.png'}")
    return 0
