"""Attribute labels as training targets, and the linear heads that predict them.

Why: contrastive CLIP alone learns the easy families (background, skin) and barely
separates the hard ones (hairstyle, bangs, expression) at this scale, and a GAN conditioned
on such text embeddings cannot draw what the embedding does not carry. Since the
procedural dataset knows every attribute of every render and what every caption states,
we add small supervised heads (training-only, never exported):

* CLIP: text embedding -> the families the caption *states*; image embedding -> every
  family visible in the render. Both embeddings then carry the attributes linearly.
* GAN discriminator (AC-GAN style, trained on real images only): D's features -> every
  visible family; G is asked to make D read the caption's stated attributes.

Targets are one tensor per family: single-valued families hold the value index, or -1
when unknown (not stated / not visible); ``head_accessory`` holds a multi-hot row with -1
for the items a caption leaves open ("a ribbon" says nothing about cat ears, but
"no head accessories" says 0 for all of them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS, MULTI_VALUED, visible_families

Targets = dict[str, torch.Tensor]


def caption_targets(states: list[dict]) -> Targets:
    """What each caption states (unknown = -1)."""
    out: Targets = {}
    for f, values in ATTRIBUTES.items():
        if f == MULTI_VALUED:
            rows = []
            for s in states:
                if f not in s:
                    rows.append([-1.0] * len(HEAD_ITEMS))
                elif not s[f]:
                    rows.append([0.0] * len(HEAD_ITEMS))
                else:
                    rows.append([1.0 if h in s[f] else -1.0 for h in HEAD_ITEMS])
            out[f] = torch.tensor(rows, dtype=torch.float32).reshape(len(states), len(HEAD_ITEMS))
        else:
            out[f] = torch.tensor([values.index(s[f]) if f in s else -1 for s in states], dtype=torch.long)
    return out


def stated(caption: Targets) -> dict[str, torch.Tensor]:
    """Per family, [N] bool: does the caption state it (head accessories: says anything about them)."""
    return {f: (t >= 0).any(dim=1) if f == MULTI_VALUED else t >= 0 for f, t in caption.items()}


def mention_targets(caption: Targets) -> Targets:
    """What each caption *says* (the CLIP text heads' targets): as `caption_targets`, except
    that where a caption speaks about head accessories, the items it does not name are 0.

    Why: "a ribbon" leaves the render's other items open, so `caption_targets` marks them
    unknown; but then only "no head accessories" captions gave the text heads a negative,
    and they learned "some accessory is named -> all five" (chibi-64 0.8.0's CLIP scored all
    five items positive on 97 % of captions that name some, the named set exactly on none):
    T then did not carry *which* item was named, and no generator could draw it. Whether the
    text names an item is always known.
    """
    out = dict(caption)
    heads = caption[MULTI_VALUED]
    speaks = (heads >= 0).any(dim=1, keepdim=True)
    out[MULTI_VALUED] = torch.where(speaks & (heads < 0), torch.zeros_like(heads), heads)
    return out


def image_targets(attrs: list[dict]) -> Targets:
    """The full ground truth of each render; families hidden in the render are unknown."""
    out: Targets = {}
    vis = [visible_families(a) for a in attrs]
    for f, values in ATTRIBUTES.items():
        if f == MULTI_VALUED:
            rows = [[float(h in a[f]) if f in v else -1.0 for h in HEAD_ITEMS] for a, v in zip(attrs, vis)]
            out[f] = torch.tensor(rows, dtype=torch.float32).reshape(len(attrs), len(HEAD_ITEMS))
        else:
            out[f] = torch.tensor([values.index(a[f]) if f in v else -1 for a, v in zip(attrs, vis)], dtype=torch.long)
    return out


def select(targets: Targets, index: torch.Tensor) -> Targets:
    return {f: t[index] for f, t in targets.items()}


class AttributeHeads(nn.Module):
    """One linear classifier per family on a feature vector (multi-hot for head accessories)."""

    def __init__(self, dim: int):
        super().__init__()
        self.heads = nn.ModuleDict({
            f: nn.Linear(dim, len(HEAD_ITEMS) if f == MULTI_VALUED else len(v)) for f, v in ATTRIBUTES.items()
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f: head(x) for f, head in self.heads.items()}


def stated_loss(logits: torch.Tensor, caption: Targets) -> tuple[torch.Tensor, float]:
    """Binary cross-entropy of one logit per family [N, F] against whether each caption states
    that family (`stated`), and the accuracy.

    Why: the value heads only learn from the families a caption states, so nothing asks the
    text embedding to carry *whether* a family was stated. The generator's prior has to read
    that from the embedding (state it: draw it; leave it open: draw at random), and on prompts
    outside the caption grammar it missed stated families (blush, head accessories) most."""
    target = torch.stack(list(stated(caption).values()), dim=1).float().to(logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return loss, float(((logits > 0).float() == target).float().mean())


def read_embedding(heads: AttributeHeads, emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Heads on a unit CLIP embedding, scaled by sqrt(dim): logits of a useful size without
    large head weights. train_clip trains the CLIP heads this way and train_gan's frozen
    image heads must read the same way."""
    return heads(emb * emb.shape[-1] ** 0.5)


def attribute_loss(logits: dict[str, torch.Tensor], targets: Targets) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over the known targets of every family, and the accuracy on them."""
    total = logits[next(iter(logits))].new_zeros(())
    hits, known = 0.0, 0
    for f, lg in logits.items():
        t = targets[f].to(lg.device)
        if f == MULTI_VALUED:
            mask = t >= 0
            if mask.any():
                total = total + F.binary_cross_entropy_with_logits(lg[mask], t[mask])
                hits += float(((lg[mask] > 0).float() == t[mask]).sum())
                known += int(mask.sum())
        else:
            mask = t >= 0
            if mask.any():
                total = total + F.cross_entropy(lg[mask], t[mask])
                hits += float((lg[mask].argmax(1) == t[mask]).sum())
                known += int(mask.sum())
    return total / len(logits), hits / max(known, 1)
