"""Prompt scoring: which of a prompt's claims a judged image satisfies, and the aggregates.

Every check is exact. A stated family the image hides (eye colour under sunglasses the prompt
did not ask for, a wink behind closed-eye happy eyes) is wrong: the player cannot see it. A
stated head-accessory set is right only when the judged set equals
it (extra items the prompt did not ask for are wrong; `[]` means nothing on the head); a
stated "none" face accessory only when none is drawn. An excluded value ("no glasses",
`excludes`) is right only when it is not drawn (head accessories: none of the listed items).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from moe_avatar.training.attributes import COLOR_FAMILIES, FAMILIES, MULTI_VALUED, visible_families
from moe_avatar.training.prompt_sets import Prompt

BOOTSTRAP = 1000


def stated_correct(stated: dict, predicted: dict) -> dict[str, bool]:
    """Per stated family: does the judged image show exactly the stated value (or set)? A
    family the image hides is not shown, so it is wrong whatever the judge reads there."""
    shown = visible_families(predicted)
    return {f: f in shown and ((sorted(predicted[f]) == sorted(v)) if f == MULTI_VALUED else predicted[f] == v)
            for f, v in stated.items()}


def excluded_correct(excludes: dict[str, list[str]], predicted: dict) -> dict[str, bool]:
    """Per excluded family: is none of the ruled-out values drawn?"""
    out = {}
    for f, values in excludes.items():
        drawn = set(predicted[f]) if f == MULTI_VALUED else {predicted[f]}
        out[f] = not (drawn & set(values))
    return out


def items_seen(stated: list[str], predicted: dict) -> bool:
    """The lenient head-accessory reading: the stated items are among those seen ([] = none seen)."""
    seen = set(predicted[MULTI_VALUED])
    return set(stated) <= seen if stated else not seen


def is_negation(fam: str, value: Any) -> bool:
    """A stated "nothing here": face accessory "none" or an empty head-accessory list."""
    return (fam == MULTI_VALUED and value == []) or (fam != MULTI_VALUED and value == "none")


def bootstrap_ci(num: np.ndarray, den: np.ndarray, seed: int = 0, n: int = BOOTSTRAP,
                 level: float = 0.95) -> list[float] | None:
    """Percentile interval of sum(num)/sum(den) over prompts resampled with replacement."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    if len(num) == 0 or den.sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(num), size=(n, len(num)))
    d = den[idx].sum(1)
    stats = num[idx].sum(1)[d > 0] / d[d > 0]
    a = (1 - level) / 2
    return [float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))]


class _Tally:
    """Right/total counts per prompt, so that any figure gets a bootstrap interval over prompts."""

    def __init__(self, n_prompts: int):
        self.right = np.zeros(n_prompts)
        self.total = np.zeros(n_prompts)

    def add(self, i: int, hit: bool) -> None:
        self.right[i] += hit
        self.total[i] += 1

    def figure(self) -> float | None:
        return float(self.right.sum() / self.total.sum()) if self.total.sum() else None

    def ci(self) -> list[float] | None:
        return bootstrap_ci(self.right, self.total)


def score(prompts: list[Prompt], judged: list[list[dict]]) -> dict[str, Any]:
    """Aggregate the checks of `judged[i]` (judge's dicts, one per seed) against prompt i.

    overall: all checks (stated and excluded); all_stated_correct: images with every check
    right; per family (stated checks), language and style; negations (excluded values and a
    stated "none"); colour binding (colour families' checks on prompts stating one colour vs
    several, and the images of several-colour prompts with every colour right); head
    accessories exact vs "stated items seen". Intervals: 95 % bootstrap over prompts.
    """
    n = len(prompts)
    overall, every = _Tally(n), _Tally(n)
    fam = {f: _Tally(n) for f in FAMILIES}
    lang: dict[str, _Tally] = {}
    style: dict[str, tuple[_Tally, _Tally]] = {}
    neg, seen = _Tally(n), _Tally(n)
    colour = {"one": _Tally(n), "several": _Tally(n), "several_all_right": _Tally(n)}
    for i, (p, preds) in enumerate(zip(prompts, judged)):
        n_colours = sum(f in p.attributes for f in COLOR_FAMILIES)
        for pred in preds:
            ok = stated_correct(p.attributes, pred)
            ex = excluded_correct(p.excludes, pred)
            for f, hit in ok.items():
                fam[f].add(i, hit)
                if is_negation(f, p.attributes[f]):
                    neg.add(i, hit)
                if f in COLOR_FAMILIES:
                    colour["one" if n_colours == 1 else "several"].add(i, hit)
            for hit in ex.values():
                neg.add(i, hit)
            if n_colours > 1:
                colour["several_all_right"].add(i, all(ok[f] for f in COLOR_FAMILIES if f in ok))
            if MULTI_VALUED in p.attributes:
                seen.add(i, items_seen(p.attributes[MULTI_VALUED], pred))
            hits = [*ok.values(), *ex.values()]
            all_ok = all(hits)
            for hit in hits:
                overall.add(i, hit)
                lang.setdefault(p.lang or "unknown", _Tally(n)).add(i, hit)
            every.add(i, all_ok)
            for s in p.styles:
                acc, all_s = style.setdefault(s, (_Tally(n), _Tally(n)))
                for hit in hits:
                    acc.add(i, hit)
                all_s.add(i, all_ok)
    return {
        "overall": overall.figure(), "overall_ci95": overall.ci(),
        "all_stated_correct": every.figure(), "all_stated_ci95": every.ci(),
        "per_family": {f: t.figure() for f, t in fam.items() if t.total.sum()},
        "head_accessory_items_seen": seen.figure(),
        "per_language": {k: t.figure() for k, t in sorted(lang.items())},
        "per_style": {s: {"accuracy": a.figure(), "all_stated": b.figure(), "prompts": int((b.total > 0).sum())}
                      for s, (a, b) in sorted(style.items())},
        "negations": {"accuracy": neg.figure(), "ci95": neg.ci(), "checks": int(neg.total.sum())},
        "colour_binding": {k: t.figure() for k, t in colour.items()},
        "checks": int(overall.total.sum()), "prompts": n, "images": int(every.total.sum()),
    }
