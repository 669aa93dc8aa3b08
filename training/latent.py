"""The attribute code: how G's attribute prior names every value, and what it draws where a
caption is silent. Training-only; the server only draws z.

G(z, T) must draw what the caption states (from T) and *choose* everything else with the
data's frequencies. G's attribute prior (model option `prior`, training.models.AttributePrior)
turns T into p(value | caption) for every single-valued family and for the set of head
accessories, and picks each one by Gumbel-max with z's first dims: one dim per value, block
by block (`CODE_BLOCKS`). Reconstruction hands G the render's true values as the same
one-hot code (`attribute_indices`, `indices_to_code`), so G learns which pixels every value
owns by plain, paired L1. At serving time z ~ N(0, I) (a seed), so what a caption leaves open
comes out with the frequencies the prior holds for it (`open_log_frequencies` fits them to
the data's captions), and truncation (psi < 1) pulls z toward the middle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from moe_avatar.bundle import HEAD_SET_JOINER
from moe_avatar.training.attributes import (
    ATTRIBUTES,
    HEAD_COUNT_P,
    HEAD_ITEMS,
    HEAD_PAIRS,
    MULTI_VALUED,
    NEUTRAL_ATTRIBUTES,
    visible_families,
)


@dataclass(frozen=True)
class AttributeSchema:
    """What G's attribute prior picks: every single-valued family's values, then one block for
    the head-accessory set (every set the data can hold, with its frequency).

    A GAN's model config records its schema (`model.attributes`, written at the start of
    training and kept in the checkpoint), and G's shape is built from it, so editing the
    vocabulary in training/attributes.py changes new models only: an old checkpoint rebuilds
    the network it was trained as. The exporter writes the same vocabulary into the manifest."""

    families: dict[str, list[str]]  # single-valued family -> its values
    head_sets: list[tuple[str, ...]]  # every head-accessory set, () = none
    head_set_p: list[float]  # their frequencies in the data

    @classmethod
    def procedural(cls) -> AttributeSchema:
        """The procedural renderer's vocabulary (training.attributes) and head-set frequencies."""
        sets = [()] + [(h,) for h in HEAD_ITEMS] + [tuple(p) for p in HEAD_PAIRS]
        p = [HEAD_COUNT_P[0]] + [HEAD_COUNT_P[1] / len(HEAD_ITEMS)] * len(HEAD_ITEMS) \
            + [HEAD_COUNT_P[2] / len(HEAD_PAIRS)] * len(HEAD_PAIRS)
        return cls({f: list(v) for f, v in ATTRIBUTES.items() if f != MULTI_VALUED}, sets, p)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AttributeSchema:
        return cls({str(f): [str(v) for v in vs] for f, vs in d["families"].items()},
                   [tuple(s) for s in d["head_sets"]], [float(x) for x in d["head_set_p"]])

    def to_json(self) -> dict[str, Any]:
        return {"families": self.families, "head_sets": [list(s) for s in self.head_sets], "head_set_p": self.head_set_p}

    @property
    def blocks(self) -> list[int]:
        """Values per block: the single-valued families, then the head sets."""
        return [len(v) for v in self.families.values()] + [len(self.head_sets)]

    def log_marginal(self) -> torch.Tensor:
        """log p(value) per value, block by block: single-valued families uniform, head sets as given."""
        return torch.cat([torch.full((len(v),), -math.log(len(v))) for v in self.families.values()]
                         + [torch.log(torch.tensor(self.head_set_p))])

    def vocabulary(self) -> dict[str, list[str]]:
        """Family -> values as the manifest lists them (head accessories: every item, then "none")."""
        items = sorted({h for s in self.head_sets for h in s}, key=lambda h: HEAD_ITEMS.index(h) if h in HEAD_ITEMS else 99)
        return {**self.families, MULTI_VALUED: items + ["none"]}

    def reading_labels(self) -> dict[str, list[str]]:
        """Family -> a label per value of each block, as the bundle's reader graph answers
        (manifest field `reading`): a head set's items joined by " + ", the empty set "none"."""
        return {**self.families, MULTI_VALUED: [HEAD_SET_JOINER.join(s) or "none" for s in self.head_sets]}

    def hiders(self) -> list[tuple[int, int, torch.Tensor]]:
        """(value's index in the code, block it can hide, which values it hides as a mask over
        all values), read off training.attributes.visible_families: sunglasses and closed-eye
        happy hide both eye families, a mask hides the mouth-only expressions. Only the
        procedural renderer knows such rules; another vocabulary has none."""
        if self.families != PROCEDURAL_FAMILIES:
            return []
        starts = [sum(self.blocks[:b]) for b in range(len(self.blocks))]
        dims, out = sum(self.blocks), []
        for fam, start in zip(self.families, starts):
            for i, value in enumerate(self.families[fam]):
                for b, (other, other_start) in enumerate(zip(self.families, starts)):
                    mask = torch.tensor([float(other in visible_families({**NEUTRAL_ATTRIBUTES, other: m})
                                               and other not in visible_families({**NEUTRAL_ATTRIBUTES, other: m, fam: value}))
                                         for m in self.families[other]])
                    if other != fam and mask.any():
                        out.append((start + i, b, torch.nn.functional.pad(mask, (other_start, dims - other_start - len(mask)))))
        return out


PROCEDURAL_FAMILIES: dict[str, list[str]] = {f: list(v) for f, v in ATTRIBUTES.items() if f != MULTI_VALUED}
PROCEDURAL = AttributeSchema.procedural()

# The procedural schema's layout, which the training code reads (dataset targets, the prior's
# loss and its fitted open draw).
SINGLE_FAMILIES: list[str] = list(PROCEDURAL.families)
HEAD_SETS: list[tuple[str, ...]] = PROCEDURAL.head_sets
HEAD_SET_P = torch.tensor(PROCEDURAL.head_set_p)
_EPS = 1e-6
CODE_BLOCKS: list[int] = PROCEDURAL.blocks
CODE_DIMS = sum(CODE_BLOCKS)
CODE_FAMILIES: list[str] = SINGLE_FAMILIES + [MULTI_VALUED]  # the family each block picks (the last: the head set)
_CODE_STARTS: list[int] = [sum(CODE_BLOCKS[:b]) for b in range(len(CODE_BLOCKS))]  # each block's first value
# What the prior says where the caption is silent, until a stage fits it to the data's captions
# (train option prior_open_from_data, open_log_frequencies below).
CODE_LOG_MARGINAL: torch.Tensor = PROCEDURAL.log_marginal()
# Captions state only what the render shows, so where a caption states a family, the values of
# other families that would hide it do not occur: the prior's share for an unstated family
# leaves them out in proportion (training.models.AttributePrior).
CODE_HIDERS: list[tuple[int, int, torch.Tensor]] = PROCEDURAL.hiders()


def head_set_index(attrs: list[dict]) -> torch.Tensor:
    """Index into HEAD_SETS of each render's head accessories."""
    return torch.tensor([HEAD_SETS.index(tuple(h for h in HEAD_ITEMS if h in a[MULTI_VALUED])) for a in attrs])


def normal_to_gumbel(z: torch.Tensor) -> torch.Tensor:
    """N(0, 1) draws -> standard Gumbel draws (via the normal CDF, written with erf so that
    G's attribute prior, which picks with it, exports to ONNX)."""
    u = 0.5 * (1.0 + torch.erf(z * 0.7071067811865476))
    return -torch.log(-torch.log(u.clamp(_EPS, 1 - _EPS)))


def attribute_indices(attrs: list[dict]) -> torch.Tensor:
    """[N, len(CODE_BLOCKS)] each render's value index per single-valued family (hidden ones
    too: they exist, the render just does not show them) and its HEAD_SETS index."""
    fams = torch.tensor([[ATTRIBUTES[f].index(a[f]) for f in SINGLE_FAMILIES] for a in attrs], dtype=torch.long)
    return torch.cat([fams.reshape(len(attrs), len(SINGLE_FAMILIES)), head_set_index(attrs)[:, None]], dim=1)


def indices_to_code(indices: torch.Tensor) -> torch.Tensor:
    """[N, blocks] value indices -> [N, CODE_DIMS] one-hot per block (what G's prior picks)."""
    return torch.cat([torch.nn.functional.one_hot(indices[:, b], k) for b, k in enumerate(CODE_BLOCKS)], dim=1).float()


def code_to_attributes(code: torch.Tensor) -> list[dict]:
    """[N, CODE_DIMS] one-hot picks -> attribute dicts (the inverse of indices_to_code)."""
    idx = torch.stack([part.argmax(1) for part in torch.split(code, CODE_BLOCKS, dim=1)], dim=1).tolist()
    return [{**{f: ATTRIBUTES[f][row[b]] for b, f in enumerate(SINGLE_FAMILIES)}, MULTI_VALUED: list(HEAD_SETS[row[-1]])}
            for row in idx]


def open_log_frequencies(stated: torch.Tensor, values: torch.Tensor, rounds: int = 50) -> torch.Tensor:
    """What G's attribute prior draws where a caption leaves a family open, fitted to the data:
    log p(value) for every value (CODE_DIMS) such that, over the (render, caption) pairs whose
    caption leaves a family open, the prior's open share (these frequencies less what the
    caption's stated values rule out, CODE_HIDERS; training.models.AttributePrior.mix with a
    sure gate) averages to how often each value occurs there.

    Why not the sampling frequencies (CODE_LOG_MARGINAL): captions state some values more
    often than others (a blush more often than no blush, an accessory more often than none),
    so where a caption is silent the rarely stated values are the common ones: on the cpu
    dataset no blush is 0.60 of the renders whose caption leaves blush open, no head accessory
    0.38 (0.30 of all renders). Drawing the sampling frequencies there put chibi-64 0.11.0's
    images further from the renders' (CLIP-space FD 0.0160 vs 0.0151 with these, same G).

    stated: bool [M, blocks] (does pair m's caption state the block); values: long [M, blocks]
    (its render's true value per block). Add-one counts, so a value that never occurs open in
    a small dataset keeps a little mass. Iterative proportional fitting: the hiding rules make
    each pair's share depend on the others' values, so `rounds` rescalings converge on it."""
    stated, values = stated.bool(), values.long()
    # Which values each pair's stated values rule out (a caption that names the eye colour: no sunglasses).
    allowed = torch.ones(len(values), CODE_DIMS, dtype=torch.float64)
    for value, block, hides in CODE_HIDERS:
        stated_hidden = stated[:, block] & hides[_CODE_STARTS[block] + values[:, block]].bool()
        allowed[stated_hidden, value] = 0.0
    freq = CODE_LOG_MARGINAL.exp().double()
    targets = []
    for b, k in enumerate(CODE_BLOCKS):
        counts = torch.bincount(values[~stated[:, b], b], minlength=k).double() + 1.0
        targets.append(counts / counts.sum())
    for _ in range(rounds):
        for b, k in enumerate(CODE_BLOCKS):
            rows = ~stated[:, b]
            if not rows.any():
                continue
            cols = slice(_CODE_STARTS[b], _CODE_STARTS[b] + k)
            share = freq[cols] * allowed[rows, cols]
            share = share / share.sum(dim=1, keepdim=True).clamp_min(1e-30)
            freq[cols] = freq[cols] * targets[b] / share.mean(dim=0).clamp_min(1e-30)
            freq[cols] = freq[cols] / freq[cols].sum()
    return freq.log().float()


def caption_pairs(caption_states: list[list[dict]], values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per (render, caption) pair, what open_log_frequencies reads: bool [pairs, blocks]
    (does the caption state each single-valued family, and, a head-accessory mention, the head
    set) from each render's captions' `states` (training.dataset.Caption), and the render's
    value indices [pairs, blocks] (attribute_indices) repeated for each of its captions."""
    stated = torch.tensor([[f in st for f in CODE_FAMILIES] for caps in caption_states for st in caps],
                          dtype=torch.bool).reshape(-1, len(CODE_BLOCKS))
    return stated, values.repeat_interleave(torch.tensor([len(caps) for caps in caption_states]), dim=0)


def code_table(p: torch.Tensor) -> dict[str, dict[str, float]]:
    """[CODE_DIMS] one number per value -> {family: {value: number}} (head sets named "a + b", "none")."""
    names = [ATTRIBUTES[f] for f in SINGLE_FAMILIES] + [[" + ".join(h) or "none" for h in HEAD_SETS]]
    return {f: {v: float(x) for v, x in zip(vs, block)} for f, vs, block in zip(CODE_FAMILIES, names, torch.split(p, CODE_BLOCKS))}
