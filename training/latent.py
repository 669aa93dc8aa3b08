"""The latent layout: z's first dims say the attributes a caption leaves open.

(Since chibi-64 0.9.0 the cpu recipe uses G's attribute prior instead, at the end of this
file: G picks the values itself from T and z, and training hands it the true ones. The
layouts below remain for generators trained without it.)

Why: G(z, T) must draw what the caption states (from T) and *choose* everything else (from
z) with the data's frequencies. A GAN has to discover that split by itself, which a 2-core
budget does not allow. The procedural dataset knows every render's attributes and what
each caption states, so training can hand G a z that already encodes the open ones, and
G learns by plain reconstruction (fast, paired, no mode collapse by construction):

* dim k (one per single-valued family): the value's quantile bucket of N(0, 1). With K
  values of equal frequency, value v owns the z range whose normal CDF lies in
  [v/K, (v+1)/K). A stated family (or one hidden in the render) gets plain noise there,
  so G learns to ignore z where the caption speaks.
* the next dim: the set of head accessories (none, one, or a compatible pair), bucketed
  the same way by the sampler's probabilities *among the sets the caption allows*
  ("a ribbon" allows only sets with a ribbon, "no hat" only sets without one).
* the remaining dims: plain noise.

That is layout "buckets" (chibi-64 0.4.0). Layout "argmax" gives every value its own dim
instead: a family's value is the Gumbel-max over its dims (each N(0, 1) dim mapped to a
standard Gumbel, plus the log-probability of its value), so G decides by comparing dims
rather than by locating one scalar among up to 13 narrow buckets. It needs 81 dims.

Optionally (`jitter`), the dims after the layout's say the render's own randomness too: its
position, scale and colour-shade draws (training.render.sample_jitter; a uniform u becomes
the z value ndtri(u)). Then the caption and z together determine the render exactly, so
reconstruction has one right answer instead of the average of every placement and shade.
Measured on the cpu recipe's reconstruction stage it did not help (the stage underfits
rather than averages; chibi-64's MODEL_CARD), so the recipe leaves it off.

At serving time z ~ N(0, I) (a seed), so under either layout the open attributes come out
with exactly the data's frequencies, and truncation (psi < 1) pulls them toward the middle.
The server needs none of this: it only draws z. Training-only.
"""
from __future__ import annotations

import math

import torch

from moe_avatar.training.attributes import ATTRIBUTES, HEAD_COUNT_P, HEAD_ITEMS, HEAD_PAIRS, MULTI_VALUED, NEUTRAL_ATTRIBUTES, visible_families
from moe_avatar.training.labels import Targets
from moe_avatar.training.render import JITTER_DIMS

SINGLE_FAMILIES: list[str] = [f for f in ATTRIBUTES if f != MULTI_VALUED]
# Every head-accessory set the sampler can draw, and its probability.
HEAD_SETS: list[tuple[str, ...]] = [()] + [(h,) for h in HEAD_ITEMS] + [tuple(p) for p in HEAD_PAIRS]
HEAD_SET_P = torch.tensor([HEAD_COUNT_P[0]] + [HEAD_COUNT_P[1] / len(HEAD_ITEMS)] * len(HEAD_ITEMS)
                          + [HEAD_COUNT_P[2] / len(HEAD_PAIRS)] * len(HEAD_PAIRS))
_SET_ITEMS = torch.tensor([[1.0 if h in s else 0.0 for h in HEAD_ITEMS] for s in HEAD_SETS])  # [sets, items]
HEAD_DIM = len(SINGLE_FAMILIES)
CODED_DIMS = HEAD_DIM + 1  # z dims that carry attributes in layout "buckets"; the rest is noise
LAYOUTS = ("buckets", "argmax")
_EPS = 1e-6
# Layout "argmax": (family, first dim, number of values) per single-valued family, then the head sets.
_BLOCKS: list[tuple[str, int, int]] = []
for _f in SINGLE_FAMILIES:
    _BLOCKS.append((_f, sum(b[2] for b in _BLOCKS), len(ATTRIBUTES[_f])))
_HEAD_START = sum(b[2] for b in _BLOCKS)


def coded_dims(layout: str, jitter: bool = False) -> int:
    """How many leading z dims a layout uses (with the render's jitter draws after it, if asked)."""
    if layout not in LAYOUTS:
        raise ValueError(f"latent layout must be one of {LAYOUTS}, got {layout!r}")
    return (CODED_DIMS if layout == "buckets" else _HEAD_START + len(HEAD_SETS)) + (JITTER_DIMS if jitter else 0)


def check_z_dim(z_dim: int, layout: str, jitter: bool = False) -> None:
    """Raise if z has fewer dims than the layout (and the jitter draws) need."""
    need = coded_dims(layout, jitter)
    if z_dim < need:
        raise ValueError(f"z_dim {z_dim} is smaller than the {need} dims latent layout {layout!r}"
                         f"{' with jitter' if jitter else ''} needs")


def head_set_index(attrs: list[dict]) -> torch.Tensor:
    """Index into HEAD_SETS of each render's head accessories."""
    return torch.tensor([HEAD_SETS.index(tuple(h for h in HEAD_ITEMS if h in a[MULTI_VALUED])) for a in attrs])


def allowed_head_sets(known: torch.Tensor) -> torch.Tensor:
    """[B, sets] probabilities of the head sets compatible with what each caption says
    (`known`: [B, items] multi-hot, -1 for items the caption leaves open), renormalised."""
    ok = ((known[:, None, :] < 0) | (known[:, None, :] == _SET_ITEMS[None])).all(-1)
    p = HEAD_SET_P[None] * ok
    return p / p.sum(1, keepdim=True).clamp_min(_EPS)


def encode_latents(image_targets: Targets, head_sets: torch.Tensor, caption_targets: Targets,
                   z_dim: int, layout: str = "buckets", generator: torch.Generator | None = None,
                   jitter: torch.Tensor | None = None) -> torch.Tensor:
    """The z that says each render's unstated attributes (module docstring).

    `image_targets`: the renders' true values (training.labels.image_targets, -1 = hidden);
    `head_sets`: their HEAD_SETS indices; `caption_targets`: what each caption states;
    `jitter`: [B, JITTER_DIMS] the renders' jitter draws in [0, 1), NaN where unused, or None.
    """
    check_z_dim(z_dim, layout, jitter is not None)
    z = torch.randn(len(head_sets), z_dim, generator=generator)
    if jitter is not None:
        start, end = coded_dims(layout), coded_dims(layout, jitter=True)
        code = torch.special.ndtri(jitter.clamp(_EPS, 1 - _EPS))
        z[:, start:end] = torch.where(torch.isnan(jitter), z[:, start:end], code)
    if layout == "argmax":
        return _encode_argmax(z, image_targets, head_sets, caption_targets, generator)
    n = len(head_sets)
    u = torch.rand(n, CODED_DIMS, generator=generator)
    for k, fam in enumerate(SINGLE_FAMILIES):
        true, stated = image_targets[fam], caption_targets[fam]
        coded = (true >= 0) & (stated < 0)
        cdf = (true.clamp_min(0) + u[:, k]) / len(ATTRIBUTES[fam])
        z[:, k] = torch.where(coded, torch.special.ndtri(cdf.clamp(_EPS, 1 - _EPS)), z[:, k])
    p = allowed_head_sets(caption_targets[MULTI_VALUED])
    start = (p.cumsum(1) - p).gather(1, head_sets[:, None])[:, 0]
    width = p.gather(1, head_sets[:, None])[:, 0]
    z[:, HEAD_DIM] = torch.special.ndtri((start + u[:, HEAD_DIM] * width).clamp(_EPS, 1 - _EPS))
    return z


def decode_latents(z: torch.Tensor, caption_targets: Targets, layout: str = "buckets") -> dict[str, torch.Tensor]:
    """What z asks for where the caption is silent (the inverse of `encode_latents`):
    family -> value index per row, -1 where the caption states the family; for
    MULTI_VALUED the HEAD_SETS index among the sets the caption allows."""
    coded_dims(layout)
    if layout == "argmax":
        return _decode_argmax(z, caption_targets)
    cdf = torch.special.ndtr(z[:, :CODED_DIMS])
    out = {}
    for k, fam in enumerate(SINGLE_FAMILIES):
        v = (cdf[:, k] * len(ATTRIBUTES[fam])).long().clamp(max=len(ATTRIBUTES[fam]) - 1)
        out[fam] = torch.where(caption_targets[fam] < 0, v, torch.full_like(v, -1))
    p = allowed_head_sets(caption_targets[MULTI_VALUED])
    ends = p.cumsum(1)
    out[MULTI_VALUED] = (cdf[:, HEAD_DIM:HEAD_DIM + 1] >= ends).sum(1).clamp(max=len(HEAD_SETS) - 1)
    return out


# ----------------------------------------------------------------------------- layout "argmax"

def _gumbel_to_normal(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Perturbed value p ~ Gumbel(logp) -> the N(0, 1) z that produces it."""
    return torch.special.ndtri(torch.exp(-torch.exp(-(p - logp))).clamp(_EPS, 1 - _EPS))


def normal_to_gumbel(z: torch.Tensor) -> torch.Tensor:
    """N(0, 1) draws -> standard Gumbel draws (via the normal CDF, written with erf so that
    G's attribute prior, which picks with it, exports to ONNX)."""
    u = 0.5 * (1.0 + torch.erf(z * 0.7071067811865476))
    return -torch.log(-torch.log(u.clamp(_EPS, 1 - _EPS)))


def _argmax_code(logp: torch.Tensor, allowed: torch.Tensor, value: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """z for one block: Gumbel(logp) perturbations conditioned on argmax over `allowed` = value
    (the maximum ~ Gumbel(logsumexp), the others truncated below it)."""
    n, k = logp.shape
    u0 = torch.rand(n, generator=generator).clamp(_EPS, 1 - _EPS)
    top = torch.logsumexp(logp.masked_fill(~allowed, -1e9), dim=1) - torch.log(-torch.log(u0))
    free = logp - torch.log(-torch.log(torch.rand(n, k, generator=generator).clamp(_EPS, 1 - _EPS)))
    below = -torch.log(torch.exp(-top)[:, None] + torch.exp(-free))
    p = torch.where(torch.arange(k)[None] == value[:, None], top[:, None].expand(n, k), below)
    return _gumbel_to_normal(p, logp)


def _head_logp(n: int) -> torch.Tensor:
    return torch.log(HEAD_SET_P)[None].expand(n, -1)


def _encode_argmax(z: torch.Tensor, image_targets: Targets, head_sets: torch.Tensor, caption_targets: Targets,
                   generator: torch.Generator | None) -> torch.Tensor:
    n = len(z)
    for fam, start, k in _BLOCKS:
        true, stated = image_targets[fam], caption_targets[fam]
        coded = (true >= 0) & (stated < 0)
        logp = torch.full((n, k), -math.log(k))
        code = _argmax_code(logp, torch.ones(n, k, dtype=torch.bool), true.clamp_min(0), generator)
        z[:, start:start + k] = torch.where(coded[:, None], code, z[:, start:start + k])
    allowed = allowed_head_sets(caption_targets[MULTI_VALUED]) > 0
    end = _HEAD_START + len(HEAD_SETS)
    code = _argmax_code(_head_logp(n), allowed, head_sets, generator)
    z[:, _HEAD_START:end] = torch.where(allowed, code, z[:, _HEAD_START:end])
    return z


def _decode_argmax(z: torch.Tensor, caption_targets: Targets) -> dict[str, torch.Tensor]:
    gumbel = normal_to_gumbel(z[:, :coded_dims("argmax")])
    out = {}
    for fam, start, k in _BLOCKS:
        v = gumbel[:, start:start + k].argmax(1)
        out[fam] = torch.where(caption_targets[fam] < 0, v, torch.full_like(v, -1))
    allowed = allowed_head_sets(caption_targets[MULTI_VALUED]) > 0
    scores = gumbel[:, _HEAD_START:] + _head_logp(len(z))
    out[MULTI_VALUED] = scores.masked_fill(~allowed, -1e9).argmax(1)
    return out


# ----------------------------------------------------------------------------- the attribute prior
# Model option `prior` (training.models.AttributePrior) replaces both layouts above: G itself
# turns T into p(value | caption) for every family and the head-accessory set, and picks each
# one by Gumbel-max with z's first dims (one dim per value, as in layout "argmax"). Training
# then hands G the render's true values instead (`attribute_indices`): no z code to invert,
# and nothing for G to unlearn when z and the caption disagree at serving time.
CODE_BLOCKS: list[int] = [k for _, _, k in _BLOCKS] + [len(HEAD_SETS)]  # values per block, families then head sets
CODE_DIMS = sum(CODE_BLOCKS)
CODE_FAMILIES: list[str] = SINGLE_FAMILIES + [MULTI_VALUED]  # the family each block picks (the last: the head set)
_CODE_STARTS: list[int] = [start for _, start, _ in _BLOCKS] + [_HEAD_START]  # each block's first value in the code
# log of the data's frequency of every value, block by block (training.attributes.sample_attributes:
# single-valued families uniform, head sets HEAD_SET_P): what the prior says where the caption is silent,
# until a stage fits it to the data's captions (train option prior_open_from_data, open_log_frequencies below).
CODE_LOG_MARGINAL: torch.Tensor = torch.cat([torch.full((k,), -math.log(k)) for _, _, k in _BLOCKS] + [torch.log(HEAD_SET_P)])


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


def _hiders() -> list[tuple[int, int, torch.Tensor]]:
    """(value's index in the code, block it can hide, which values it hides as a mask over all
    CODE_DIMS values),
    read off training.attributes.visible_families: sunglasses and closed-eye happy hide both
    eye families, a mask hides the mouth-only expressions."""
    out = []
    for fam, start, k in _BLOCKS:
        for i, value in enumerate(ATTRIBUTES[fam]):
            for b, (other, _, _) in enumerate(_BLOCKS):
                if other == fam:
                    continue
                mask = torch.tensor([float(other in visible_families({**NEUTRAL_ATTRIBUTES, other: m})
                                           and other not in visible_families({**NEUTRAL_ATTRIBUTES, other: m, fam: value}))
                                     for m in ATTRIBUTES[other]])
                if mask.any():
                    other_start = _BLOCKS[b][1]
                    out.append((start + i, b, torch.nn.functional.pad(mask, (other_start, CODE_DIMS - other_start - len(mask)))))
    return out


# Captions state only what the render shows, so where a caption states a family, the values of
# other families that would hide it do not occur: the prior's share for an unstated family
# leaves them out in proportion (training.models.AttributePrior).
CODE_HIDERS: list[tuple[int, int, torch.Tensor]] = _hiders()


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
