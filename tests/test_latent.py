"""The attribute-coded latent layout (training.latent): known answers, no model needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS, MULTI_VALUED, sample_attributes
from moe_avatar.training.labels import caption_targets, image_targets
from moe_avatar.training.render import JITTER_DIMS
from moe_avatar.training.latent import CODED_DIMS, HEAD_SETS, LAYOUTS, SINGLE_FAMILIES, coded_dims, decode_latents, encode_latents, head_set_index


def _renders(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [sample_attributes(rng) for _ in range(n)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unstated_attributes_round_trip_through_z_and_stated_ones_are_noise(layout: str) -> None:
    attrs = _renders(400)
    # Every caption states the hair colour and says "a ribbon"; nothing else.
    states = [{"hair_color": a["hair_color"], "head_accessory": ["ribbon"]} for a in attrs]
    for a in attrs:  # make the renders agree with their captions
        a[MULTI_VALUED] = ["ribbon"] + [h for h in a[MULTI_VALUED] if h in ("hat", "flower", "headphones")][:1]
    img, cap = image_targets(attrs), caption_targets(states)
    z = encode_latents(img, head_set_index(attrs), cap, z_dim=100, layout=layout, generator=torch.Generator().manual_seed(0))
    assert z.shape == (400, 100)
    # The coded dims still look like N(0, 1) draws (what a seed gives at serving time).
    assert abs(float(z[:, :coded_dims(layout)].mean())) < 0.05 and abs(float(z[:, :coded_dims(layout)].std()) - 1) < 0.05
    back = decode_latents(z, cap, layout)
    for fam in SINGLE_FAMILIES:
        if fam == "hair_color":
            assert (back[fam] == -1).all(), "a stated family is not read from z"
            continue
        visible = img[fam] >= 0
        assert torch.equal(back[fam][visible], img[fam][visible]), fam
    assert [HEAD_SETS[i] for i in back[MULTI_VALUED].tolist()] == [tuple(h for h in HEAD_ITEMS if h in a[MULTI_VALUED]) for a in attrs]
    # Where the caption speaks (hair colour), z is plain noise: the bucket of that dim is
    # independent of the true colour.
    agree = (decode_latents(z, caption_targets([{}] * 400), layout)["hair_color"] == img["hair_color"]).float().mean()
    assert agree < 0.2  # chance is 1/12


@pytest.mark.parametrize("layout", LAYOUTS)
def test_seeds_draw_open_attributes_with_the_data_frequencies(layout: str) -> None:
    z = torch.randn(60_000, 100, generator=torch.Generator().manual_seed(1))
    out = decode_latents(z, caption_targets([{}] * len(z)), layout)
    for fam in SINGLE_FAMILIES:
        freq = torch.bincount(out[fam], minlength=len(ATTRIBUTES[fam])).float() / len(z)
        assert torch.allclose(freq, torch.full_like(freq, 1 / len(ATTRIBUTES[fam])), atol=0.01), fam
    sets = [HEAD_SETS[i] for i in out[MULTI_VALUED].tolist()]
    assert abs(sum(len(s) == 0 for s in sets) / len(sets) - 0.30) < 0.01
    assert abs(sum(len(s) == 2 for s in sets) / len(sets) - 0.25) < 0.01
    # A caption that says "cat ears" only ever gets sets with cat ears.
    z2 = torch.randn(2000, 100, generator=torch.Generator().manual_seed(2))
    ears = decode_latents(z2, caption_targets([{MULTI_VALUED: ["cat ears"]}] * 2000), layout)[MULTI_VALUED]
    got = {HEAD_SETS[i] for i in ears.tolist()}
    assert all("cat ears" in s for s in got) and len(got) > 1
    assert coded_dims("buckets") == CODED_DIMS == len(SINGLE_FAMILIES) + 1
    assert coded_dims("argmax") == sum(len(ATTRIBUTES[f]) for f in SINGLE_FAMILIES) + len(HEAD_SETS)  # one dim per value


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jitter_draws_are_coded_after_the_layout(layout: str) -> None:
    """With the renders' jitter draws, the dims after the layout's carry them exactly
    (u = ndtr(z)); unused slots (NaN) and everything further stay noise; the layout's own
    dims are unchanged."""
    attrs = _renders(300, seed=3)
    img, cap = image_targets(attrs), caption_targets([{}] * 300)
    jitter = torch.rand(300, JITTER_DIMS, generator=torch.Generator().manual_seed(4))
    jitter[:100, 15:] = float("nan")  # e.g. transparent backgrounds draw no background shades
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    need = coded_dims(layout, jitter=True)
    z_dim = need + 8
    plain = encode_latents(img, head_set_index(attrs), cap, z_dim, layout, generator=gen())
    z = encode_latents(img, head_set_index(attrs), cap, z_dim, layout, generator=gen(), jitter=jitter)
    start = coded_dims(layout)
    assert need == start + JITTER_DIMS
    assert torch.equal(z[:, :start], plain[:, :start]) and torch.equal(z[:, need:], plain[:, need:])
    used = ~torch.isnan(jitter)
    assert torch.allclose(torch.special.ndtr(z[:, start:need])[used], jitter[used], atol=1e-5)
    assert torch.equal(z[:, start:need][~used], plain[:, start:need][~used])
    with pytest.raises(ValueError, match="with jitter"):
        encode_latents(img, head_set_index(attrs), cap, need - 1, layout, jitter=jitter)
