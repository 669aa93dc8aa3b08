"""Captions: never false, both languages, varied length, held-out templates stay held out."""

import re

import numpy as np
import pytest

from moe_avatar.training.attributes import MULTI_VALUED, ZH_NAMES, sample_attributes, visible_families
from moe_avatar.training.captions import make_captions, make_eval_caption

CJK = re.compile(r"[\u4e00-\u9fff]")
HELDOUT_PREFIXES = ("Please make me an avatar", "I want a little character", "Chibi portrait --",
                    "请帮我画一个角色", "我想要这样的头像", "画个Q版小人儿")


def _samples(n=300, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        attrs = sample_attributes(rng)
        yield attrs, make_captions(attrs, rng)


def assert_true_of(states: dict, attrs: dict) -> None:
    visible = visible_families(attrs)
    assert states, "a caption must state something"
    for fam, v in states.items():
        assert fam in visible, f"{fam} is not visible in this image"
        if fam == MULTI_VALUED:
            assert set(v) <= set(attrs[fam])
            if not v:
                assert attrs[fam] == []
        else:
            assert v == attrs[fam], f"{fam}: caption says {v!r}, image has {attrs[fam]!r}"


def test_captions_are_true_and_bilingual():
    for attrs, caps in _samples():
        assert len(caps["en"]) == 3 and len(caps["zh"]) == 3
        for c in caps["en"]:
            assert c["text"].strip() and not CJK.search(c["text"])
            assert_true_of(c["states"], attrs)
        for c in caps["zh"]:
            assert CJK.search(c["text"])
            assert_true_of(c["states"], attrs)


def test_stated_values_appear_in_text():
    for attrs, caps in _samples(200, seed=1):
        for c in caps["en"]:
            if "hair_color" in c["states"]:
                assert attrs["hair_color"] in c["text"]
            if "face_accessory" in c["states"] and attrs["face_accessory"] == "sunglasses":
                assert "sunglasses" in c["text"] or "shades" in c["text"]
        for c in caps["zh"]:
            if "hair_color" in c["states"]:
                assert ZH_NAMES["hair_color"][attrs["hair_color"]][0] in c["text"]


def test_lengths_vary():
    counts = [len(c["states"]) for _, caps in _samples() for lang in ("en", "zh") for c in caps[lang]]
    assert min(counts) == 1 and max(counts) >= 9
    assert sum(1 for k in counts if k <= 3) > len(counts) * 0.25  # short prompts are common
    texts = {c["text"] for _, caps in _samples(100) for c in caps["en"]}
    assert len(texts) > 280  # almost no repeats


def test_hidden_attributes_never_stated():
    rng = np.random.default_rng(3)
    attrs = sample_attributes(rng)
    attrs.update(face_accessory="sunglasses")
    for _ in range(200):
        caps = make_captions(attrs, rng)
        for c in caps["en"] + caps["zh"]:
            assert "eye_color" not in c["states"] and "eye_shape" not in c["states"]


def test_deterministic_for_rng():
    attrs = sample_attributes(np.random.default_rng(5))
    a = make_captions(attrs, np.random.default_rng(9))
    b = make_captions(attrs, np.random.default_rng(9))
    assert a == b


def test_heldout_templates_not_in_training():
    for _, caps in _samples(300, seed=2):
        for c in caps["en"] + caps["zh"]:
            assert not c["text"].startswith(HELDOUT_PREFIXES)
    rng = np.random.default_rng(0)
    subset = {"hair_color": "pink", "hairstyle": "twin tails", "head_accessory": ["cat ears"]}
    for lang in ("en", "zh"):
        seen = set()
        for _ in range(40):
            text = make_eval_caption(subset, lang, rng)
            assert text.startswith(HELDOUT_PREFIXES)
            seen.add(text.split()[0] if lang == "en" else text[:4])
            if lang == "en":
                assert "pink" in text and ("cat" in text or "kitty" in text)
            else:
                assert "粉" in text and "猫耳" in text
        assert len(seen) == 3  # all held-out styles are used


def test_eval_caption_requires_attributes():
    with pytest.raises(ValueError):
        make_eval_caption({}, "en", np.random.default_rng(0))


def test_swapped_colors_trade_places_and_are_said():
    from moe_avatar.training.attributes import COLOR_FAMILIES
    from moe_avatar.training.captions import swap_colors, swapped_caption

    rng = np.random.default_rng(5)
    assert swap_colors({"hair_color": "pink", "eye_color": "blue", "hairstyle": "bob"}, rng) == \
        {"hair_color": "blue", "eye_color": "pink", "hairstyle": "bob"}
    assert swap_colors({"hair_color": "pink"}, rng) is None  # one colour: nothing to bind wrongly
    assert swap_colors({"hair_color": "blonde", "eye_color": "gold"}, rng) is None  # neither value exists in the other family
    assert swap_colors({"hair_color": "blue", "eye_color": "blue"}, rng) is None  # same colour: swapping changes nothing
    made = 0
    for _, caps in _samples(200, seed=2):
        for lang in ("en", "zh"):
            for c in caps[lang]:
                st = swap_colors(c["states"], np.random.default_rng(0))
                if st is None:
                    continue
                changed = [f for f in COLOR_FAMILIES if f in st and st[f] != c["states"][f]]
                assert len(changed) == 2 and st[changed[0]] == c["states"][changed[1]]
                assert {k: v for k, v in st.items() if k not in changed} == \
                    {k: v for k, v in c["states"].items() if k not in changed}
                text = swapped_caption(c["states"], lang, np.random.default_rng(0))
                assert text and bool(CJK.search(text)) == (lang == "zh")
                made += 1
    assert made > 100
