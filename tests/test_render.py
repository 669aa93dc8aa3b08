"""Renderer: sizes, determinism, every value visible, alpha edges."""

import numpy as np
import pytest
from PIL import Image

from moe_avatar.training.attributes import ATTRIBUTES, MULTI_VALUED, NEUTRAL_ATTRIBUTES, sample_attributes
from moe_avatar.training.render import JITTER_DIMS, downsample, jitter_draws, render_avatar, sample_jitter


def _neutral(**kw):
    a = dict(NEUTRAL_ATTRIBUTES)
    a.update(kw)
    return a


def _arr(img):
    return np.asarray(img).astype(np.int16)


@pytest.mark.parametrize("size", [64, 100, 256])
def test_size_and_mode(size):
    img = render_avatar(_neutral(), size)
    assert img.mode == "RGBA" and img.size == (size, size)


@pytest.mark.parametrize("size", [32, 513])
def test_rejects_bad_size(size):
    with pytest.raises(ValueError):
        render_avatar(_neutral(), size)


def test_rejects_unknown_value():
    with pytest.raises(ValueError):
        render_avatar(_neutral(hair_color="plaid"))
    with pytest.raises(ValueError):
        render_avatar(_neutral(head_accessory=["cat ears", "hat"]))  # conflicting pair


def test_canonical_and_jitter_determinism():
    a = _neutral()
    assert render_avatar(a).tobytes() == render_avatar(a).tobytes()
    j1 = render_avatar(a, rng=np.random.default_rng(7)).tobytes()
    j2 = render_avatar(a, rng=np.random.default_rng(7)).tobytes()
    j3 = render_avatar(a, rng=np.random.default_rng(8)).tobytes()
    assert j1 == j2 and j1 != j3 and j1 != render_avatar(a).tobytes()


@pytest.mark.parametrize("background", ["transparent", "mint", "pink and sky blue"])
def test_jitter_draws_reproduce_the_render(background):
    """A render is a function of its attributes and its jitter draws: redrawing from the
    recorded draws gives the same bytes as drawing them from the rng."""
    a = _neutral(background=background)
    draws = sample_jitter(a, np.random.default_rng(11))
    assert len(draws) == jitter_draws(background) <= JITTER_DIMS and all(0 <= u < 1 for u in draws)
    assert render_avatar(a, jitter=draws).tobytes() == render_avatar(a, rng=np.random.default_rng(11)).tobytes()
    # Each slot changes the picture (x, y, scale; hair, eye, skin, collar, background lightness).
    for slot in [0, 1, 2, 4, 7, 10, 13] + ([16] if background != "transparent" else []):
        moved = list(draws)
        moved[slot] = (moved[slot] + 0.5) % 1
        assert render_avatar(a, jitter=moved).tobytes() != render_avatar(a, jitter=draws).tobytes(), slot
    with pytest.raises(ValueError, match="jitter"):
        render_avatar(a, jitter=draws[:-1])


@pytest.mark.parametrize("family", list(ATTRIBUTES))
def test_every_value_renders_differently(family):
    """Changing only one family's value changes a visible number of pixels at 64 px."""
    values = ATTRIBUTES[family]
    renders = {}
    for v in values:
        val = ([] if v == "none" else [v]) if family == MULTI_VALUED else v
        renders[v] = _arr(render_avatar(_neutral(**{family: val}), 64))
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            changed = np.abs(renders[a] - renders[b]).max(axis=2) > 24
            assert changed.sum() >= 6, f"{family}: {a!r} vs {b!r} differ in only {changed.sum()} px"


def test_random_samples_render():
    rng = np.random.default_rng(0)
    for _ in range(40):
        img = render_avatar(sample_attributes(rng), 64, rng)
        assert img.size == (64, 64)


def test_transparent_alpha():
    a = _arr(render_avatar(_neutral(background="transparent"), 64))[..., 3]
    assert a[0, 0] == 0 and a[0, -1] == 0
    assert a[36, 32] == 255  # face centre
    partial = ((a > 0) & (a < 255)).sum()
    assert partial > 40, "silhouette edge should be anti-aliased"


def test_transparent_edge_has_no_dark_fringe():
    """Semi-transparent edge pixels keep the colour of the shape, not of the empty canvas."""
    white = _neutral(hair_color="white", hairstyle="short")
    px = _arr(render_avatar(white, 64))
    edge = (px[..., 3] > 0) & (px[..., 3] < 128)
    assert edge.any()
    # the hair outline of white hair is light grey; black-premultiplied fringes would be dark
    assert px[edge][:, :3].mean() > 120


def test_downsample_is_premultiplied():
    c = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    c.paste((255, 255, 255, 255), (0, 0, 5, 8))
    out = np.asarray(downsample(c, 4))
    assert out[0, 1, 3] == 64 and tuple(out[0, 1, :3]) == (255, 255, 255)


def test_solid_and_two_tone_backgrounds():
    solid = _arr(render_avatar(_neutral(background="mint"), 64))
    assert (solid[[0, 0], [0, -1], 3] == 255).all()
    assert np.abs(solid[0, 0] - solid[0, -1]).max() == 0
    two = _arr(render_avatar(_neutral(background="pink and sky blue"), 64))
    top_left, bottom_right = two[0, 0], two[63, 63]  # diagonal split: [y, x]
    assert top_left[3] == bottom_right[3] == 255
    assert np.abs(top_left[:3] - two[0, 40, :3]).max() == 0  # same (upper-left) triangle
    assert np.abs(top_left[:3] - bottom_right[:3]).max() > 30
