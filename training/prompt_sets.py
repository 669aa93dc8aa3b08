"""Prompt sets for evaluation (`training/prompts/*.jsonl`): the one reader, the held-out
generator and the rule that turns a prompt into a real avatar it is true of.

A line: ``{"text", "lang", "attributes"}`` and optionally ``"excludes"`` (family -> values
the prompt rules out: "no glasses"), ``"styles"`` (tags for the per-style breakdown),
``"full_attributes"`` (a complete avatar the prompt is true of) and ``"sources"`` (where a
showcase prompt appears). Anything else, or an unknown family or value, is an error naming
the file and line, so that a typo cannot silently drop a check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe_avatar.training.attributes import (
    ATTRIBUTES,
    HEAD_CONFLICTS,
    MAX_HEAD_ACCESSORIES,
    MULTI_VALUED,
    sample_attributes,
    validate_attributes,
    visible_families,
)

PROMPT_DIR = Path(__file__).parent / "prompts"
KEYS = {"text", "lang", "attributes", "excludes", "styles", "full_attributes", "sources"}


@dataclass
class Prompt:
    text: str
    lang: str
    attributes: dict[str, Any]  # what the text states (family -> value; a list for head_accessory)
    excludes: dict[str, list[str]] = field(default_factory=dict)  # what it rules out ("no glasses")
    styles: list[str] = field(default_factory=list)
    full: dict | None = None  # a complete avatar the prompt is true of, when the file gives one


def _check_values(fam: str, values: list, where: str) -> None:
    if fam not in ATTRIBUTES:
        raise ValueError(f"{where}: unknown attribute family {fam!r}")
    bad = [x for x in values if x not in ATTRIBUTES[fam]]
    if bad:
        raise ValueError(f"{where}: unknown {fam} value {bad[0]!r}")


def _parse(row: dict, where: str) -> Prompt:
    unknown = sorted(set(row) - KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(KEYS))})")
    attrs = dict(row.get("attributes", {}))
    for fam, v in attrs.items():
        if fam == MULTI_VALUED and not isinstance(v, list):
            raise ValueError(f"{where}: {fam} must be a list")
        _check_values(fam, v if fam == MULTI_VALUED else [v], where)
    excludes = dict(row.get("excludes", {}))
    for fam, v in excludes.items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"{where}: excludes.{fam} must be a non-empty list")
        _check_values(fam, v, where)
        stated = attrs.get(fam, [] if fam == MULTI_VALUED else None)
        if set(stated if fam == MULTI_VALUED else [stated]) & set(v):
            raise ValueError(f"{where}: {fam} states a value it excludes")
    styles = row.get("styles", [])
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise ValueError(f"{where}: styles must be a list of strings")
    full = row.get("full_attributes")
    if full is not None:
        try:
            validate_attributes(full)
        except ValueError as exc:
            raise ValueError(f"{where}: full_attributes: {exc}") from exc
    return Prompt(str(row["text"]), str(row.get("lang", "")), attrs, excludes, list(styles), full)


def load_prompts(path: Path) -> list[Prompt]:
    """Read and validate a prompt JSONL; a bad line is an error naming the file and line."""
    prompts = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            row = json.loads(line)
            prompts.append(_parse(row, where))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where}: bad prompt line ({exc!r})") from exc
    return prompts


def make_eval_prompts(n: int, seed: int = 1234) -> list[tuple[Prompt, dict]]:
    """n prompts (half Chinese) from held-out templates, 1-5 stated visible attributes each.

    Returns (prompt, full attributes): the full set is a real avatar the prompt is true of,
    which gives the real-render ceiling.
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
        out.append((Prompt(make_eval_caption(stated, lang, rng), lang, stated, full=attrs), attrs))
    return out


def _renderable(attrs: dict, p: Prompt) -> bool:
    heads = attrs[MULTI_VALUED]
    if len(heads) > MAX_HEAD_ACCESSORIES or (len(heads) == 2 and frozenset(heads) in HEAD_CONFLICTS):
        return False
    excluded = p.excludes.get(MULTI_VALUED, [])
    if any(h in excluded for h in heads):
        return False
    if any(attrs[f] in v for f, v in p.excludes.items() if f != MULTI_VALUED):
        return False
    return set(p.attributes) <= visible_families(attrs)


def realize(p: Prompt, rng: np.random.Generator, tries: int = 200) -> dict | None:
    """A complete avatar the prompt is true of (its `full` when given), for the real-render
    ceiling: the stated values, nothing excluded, every stated family visible; the rest drawn
    as the data draws them. None when no renderable avatar states it (e.g. clashing items)."""
    if p.full is not None:
        return p.full
    for _ in range(tries):
        attrs = sample_attributes(rng)
        attrs.update({f: (sorted(v, key=ATTRIBUTES[f].index) if f == MULTI_VALUED else v)
                      for f, v in p.attributes.items()})
        if _renderable(attrs, p):
            return attrs
    return None
