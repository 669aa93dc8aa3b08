"""What the model reads from a prompt, apart from what it draws: the attribute prior's answer
per family (is it stated, which value), scored against the annotations, and whether it
survives shuffling the prompt's list segments. Needs a sampler with `read` (a checkpoint;
a bundle once it exports the prior's answer)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from moe_avatar.training.attributes import MULTI_VALUED
from moe_avatar.training.prompt_sets import Prompt
from moe_avatar.training.scoring import bootstrap_ci

Reading = dict[str, tuple[float, Any]]  # family -> (P(stated), the value it would pick if stated)
SEPARATORS = r"[,，、/+|;；]"


def shuffle_segments(text: str, rng: np.random.Generator) -> str | None:
    """The prompt with its separator-delimited segments in another order; None if it has one segment."""
    parts = [s.strip() for s in re.split(SEPARATORS, text) if s.strip()]
    if len(parts) < 2:
        return None
    order = rng.permutation(len(parts))
    while np.array_equal(order, np.arange(len(parts))):
        order = rng.permutation(len(parts))
    sep = "，" if re.search(r"[\u4e00-\u9fff]", text) else ", "
    return sep.join(parts[i] for i in order)


def _same(fam: str, a: Any, b: Any) -> bool:
    return sorted(a) == sorted(b) if fam == MULTI_VALUED else a == b


def reading_scores(read: Callable[[list[str]], list[Reading]], prompts: list[Prompt], seed: int = 0) -> dict[str, Any]:
    """Reading accuracy (stated families read as annotated), stated-vs-open detection (excluded
    families left out) and order invariance (stated families' picks equal after shuffling segments).
    Per family: accuracy, how often it is stated, and the share of those read as open (`missed`:
    the gate's error, as against a wrong value)."""
    readings = read([p.text for p in prompts])
    right, total, det_right, det_total = np.zeros(len(prompts)), np.zeros(len(prompts)), 0, 0
    per_family: dict[str, np.ndarray] = {}  # family -> [read right, stated, missed (read as open)]
    for i, (p, r) in enumerate(zip(prompts, readings)):
        for fam, (p_stated, value) in r.items():
            if fam in p.attributes:
                ok = _same(fam, value, p.attributes[fam])
                right[i] += ok
                total[i] += 1
                per_family.setdefault(fam, np.zeros(3))[:] += (ok, 1, p_stated <= 0.5)
            if fam not in p.excludes:
                det_right += (p_stated > 0.5) == (fam in p.attributes)
                det_total += 1
    rng = np.random.default_rng(seed)
    pairs = [(i, t) for i, p in enumerate(prompts) if (t := shuffle_segments(p.text, rng))]
    shuffled = read([t for _, t in pairs]) if pairs else []
    same = [_same(f, readings[i][f][1], s[f][1]) for (i, _), s in zip(pairs, shuffled) for f in prompts[i].attributes]
    return {"accuracy": float(right.sum() / max(total.sum(), 1)), "ci95": bootstrap_ci(right, total),
            "stated_detection": det_right / max(det_total, 1),
            "order_invariance": float(np.mean(same)) if same else None, "shuffled_prompts": len(pairs),
            "per_family": {f: {"accuracy": float(r / n), "stated": int(n), "missed": float(m / n)}
                           for f, (r, n, m) in per_family.items()}}
