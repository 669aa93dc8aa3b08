"""The latent layout: z's first dims say the attributes a caption leaves open.

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

At serving time z ~ N(0, I) (a seed), so the open attributes come out with exactly the
data's frequencies, and truncation (psi < 1) pulls them toward the middle buckets. The
server needs none of this: it only draws z. Training-only.
"""
from __future__ import annotations

import numpy as np
import torch

from training.attributes import ATTRIBUTES, HEAD_COUNT_P, HEAD_ITEMS, HEAD_PAIRS, MULTI_VALUED
from training.labels import Targets

SINGLE_FAMILIES: list[str] = [f for f in ATTRIBUTES if f != MULTI_VALUED]
# Every head-accessory set the sampler can draw, and its probability.
HEAD_SETS: list[tuple[str, ...]] = [()] + [(h,) for h in HEAD_ITEMS] + [tuple(p) for p in HEAD_PAIRS]
HEAD_SET_P = torch.tensor([HEAD_COUNT_P[0]] + [HEAD_COUNT_P[1] / len(HEAD_ITEMS)] * len(HEAD_ITEMS)
                          + [HEAD_COUNT_P[2] / len(HEAD_PAIRS)] * len(HEAD_PAIRS))
_SET_ITEMS = torch.tensor([[1.0 if h in s else 0.0 for h in HEAD_ITEMS] for s in HEAD_SETS])  # [sets, items]
HEAD_DIM = len(SINGLE_FAMILIES)
CODED_DIMS = HEAD_DIM + 1  # z dims that carry attributes; the rest is noise
_EPS = 1e-6


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
                   z_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The z that says each render's unstated attributes (module docstring).

    `image_targets`: the renders' true values (training.labels.image_targets, -1 = hidden);
    `head_sets`: their HEAD_SETS indices; `caption_targets`: what each caption states.
    """
    n = len(head_sets)
    if z_dim < CODED_DIMS:
        raise ValueError(f"z_dim {z_dim} is smaller than the {CODED_DIMS} dims the attribute layout needs")
    z = torch.randn(n, z_dim, generator=generator)
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


def decode_latents(z: torch.Tensor, caption_targets: Targets) -> dict[str, torch.Tensor]:
    """What z asks for where the caption is silent (the inverse of `encode_latents`):
    family -> value index per row, -1 where the caption states the family; for
    MULTI_VALUED the HEAD_SETS index among the sets the caption allows."""
    cdf = torch.special.ndtr(z[:, :CODED_DIMS])
    out = {}
    for k, fam in enumerate(SINGLE_FAMILIES):
        v = (cdf[:, k] * len(ATTRIBUTES[fam])).long().clamp(max=len(ATTRIBUTES[fam]) - 1)
        out[fam] = torch.where(caption_targets[fam] < 0, v, torch.full_like(v, -1))
    p = allowed_head_sets(caption_targets[MULTI_VALUED])
    ends = p.cumsum(1)
    out[MULTI_VALUED] = (cdf[:, HEAD_DIM:HEAD_DIM + 1] >= ends).sum(1).clamp(max=len(HEAD_SETS) - 1)
    return out
