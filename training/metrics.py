"""Model-level metrics with known answers: R-precision, CLIP-space FD over reference blocks,
diversity of what prompts leave open, and seed-pair agreement (definitions in EVALUATION.md)."""
from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from moe_avatar.training.attributes import (
    FAMILIES,
    MULTI_VALUED,
    sample_attributes,
    visible_families,
)

R_CANDIDATES = 100


def r_candidates(n_prompts: int, wanted: int = R_CANDIDATES) -> int:
    """Candidate captions per R-precision query: 100 (AttnGAN) or every prompt when fewer."""
    return max(0, min(wanted, n_prompts))


def r_precision(image_emb: np.ndarray, text_emb: np.ndarray, rng: np.random.Generator,
                candidates: int = R_CANDIDATES) -> np.ndarray:
    """Per image i: is its caption i ranked first among itself and `candidates - 1` others?"""
    n = len(image_emb)
    if not 2 <= candidates <= n:
        raise ValueError(f"R-precision needs 2 <= candidates <= {n} prompts, got {candidates}")
    hits = np.zeros(n, bool)
    for i in range(n):
        others = rng.choice(np.delete(np.arange(n), i), size=candidates - 1, replace=False)
        sims = text_emb[np.concatenate([[i], others])] @ image_emb[i]
        hits[i] = sims.argmax() == 0
    return hits


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def sqrtm_psd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = sqrtm_psd(s1)
    cross = sqrtm_psd(r1 @ s2 @ r1)
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)))


def fd_over_blocks(fake: list[np.ndarray], real: list[np.ndarray]) -> dict[str, Any]:
    """FD of each generated block against its own real block, and the floor over every pair of
    real blocks; the ratio is mean generated / mean floor (one block can flatter a model)."""
    if len(real) < 2 or len(fake) != len(real):
        raise ValueError(f"FD over blocks needs >= 2 real blocks and one generated block each, "
                         f"got {len(real)} and {len(fake)}")
    gen = [frechet_distance(f, r) for f, r in zip(fake, real)]
    floor = [frechet_distance(real[i], real[j]) for i, j in combinations(range(len(real)), 2)]
    mean_floor = float(np.mean(floor))
    per_block = [g / max(mean_floor, 1e-12) for g in gen]
    return {"blocks": len(real), "samples_per_block": len(real[0]),
            "generated": gen, "generated_mean": float(np.mean(gen)), "generated_std": float(np.std(gen)),
            "floor": floor, "floor_mean": mean_floor, "floor_std": float(np.std(floor)),
            "ratio": float(np.mean(gen)) / max(mean_floor, 1e-12),
            "ratio_per_block": per_block, "ratio_std": float(np.std(per_block))}


def _value(attrs: dict, family: str) -> Any:
    return tuple(sorted(attrs[family])) if family == MULTI_VALUED else attrs[family]


def _entropy(values: list) -> float:
    _, counts = np.unique(np.array([str(v) for v in values]), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def data_entropy(family: str, n: int, trials: int = 400, seed: int = 0) -> float:
    """Expected plug-in entropy of `n` samples of a family drawn from the data distribution."""
    rng = np.random.default_rng(seed)
    return float(np.mean([_entropy([_value(sample_attributes(rng), family) for _ in range(n)])
                          for _ in range(trials)]))


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
            if f not in st:
                per_family[f].append(_entropy([_value(p, f) for p in preds]) / ref[f])
    fam = {f: float(np.mean(v)) for f, v in per_family.items() if v}
    return {"overall": float(np.mean(list(fam.values()))), "per_family": fam, "seeds": n}


def _pair_agreements(judged: list[list[dict]], stated: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Agreement of every seed pair of every prompt on the open families visible in both images
    (a judge's reading of hidden eyes is no feature), and whether the two seeds are adjacent."""
    agree, adjacent = [], []
    for preds, st in zip(judged, stated):
        open_fams = [f for f in FAMILIES if f not in st]
        vis = [visible_families(p) for p in preds]
        for i, j in combinations(range(len(preds)), 2):
            fams = [f for f in open_fams if f in vis[i] and f in vis[j]]
            if fams:
                agree.append(np.mean([_value(preds[i], f) == _value(preds[j], f) for f in fams]))
                adjacent.append(j == i + 1)
    return np.array(agree), np.array(adjacent, bool)


def _own_frequency_draws(judged: list[list[dict]], stated: list[dict], rng: np.random.Generator) -> list[list[dict]]:
    """Independent draws at the model's own frequencies: each family of each image drawn from the
    pool of that family's judged values wherever prompts leave it open."""
    pools = {f: [p[f] for preds, st in zip(judged, stated) if f not in st for p in preds] or
             [p[f] for preds in judged for p in preds] for f in FAMILIES}
    return [[{f: pools[f][int(rng.integers(len(pools[f])))] for f in FAMILIES} for _ in preds] for preds in judged]


def _reference(draw, runs: int) -> dict[str, float]:
    means, maxes, every = [], [], []
    for _ in range(runs):
        a, _ = _pair_agreements(*draw())
        means.append(a.mean())
        maxes.append(a.max())
        every.append(a)
    return {"mean": float(np.mean(means)), "max": float(np.mean(maxes)), "q99": float(np.quantile(np.concatenate(every), 0.99))}


def seed_pair_agreement(judged: list[list[dict]], stated: list[dict], seed: int = 0,
                        reference_runs: int = 20) -> dict[str, Any]:
    """Mean and max agreement on open families between the seeds of each prompt, against the
    same statistic for independent draws (same prompts, same number of seeds) from the data
    and at the model's own open-family frequencies.

    `judged[i][k]` is prompt i's image at its k-th seed (consecutive seeds, so pairs (k, k+1) are
    adjacent seeds). A reference max is the mean of `reference_runs` simulated maxima: the
    maximum over many pairs is large even for independent draws.
    """
    agree, adjacent = _pair_agreements(judged, stated)
    rng = np.random.default_rng(seed)
    data = _reference(lambda: ([[sample_attributes(rng) for _ in preds] for preds in judged], stated), reference_runs)
    own = _reference(lambda: (_own_frequency_draws(judged, stated, rng), stated), reference_runs)
    return {"pairs": len(agree), "mean": float(agree.mean()), "max": float(agree.max()),
            "adjacent_mean": float(agree[adjacent].mean()), "other_mean": float(agree[~adjacent].mean()),
            "above_data_q99": float((agree > data["q99"]).mean()), "data": data, "own_frequencies": own}
