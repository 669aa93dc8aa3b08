"""Captions: true of the render, exactly what `states` says (values, negations, colours bound to
their nouns), varied in frame, order and separator, with distractors and noise at their rates;
held-out templates stay held out; segment shuffling keeps what a caption states."""

import re
from collections import Counter

import numpy as np
import pytest

from moe_avatar.training import caption_words as W
from moe_avatar.training.attributes import ATTRIBUTES, COLOR_FAMILIES, FAMILIES, MULTI_VALUED, sample_attributes, visible_families
from moe_avatar.training.captions import (
    EN_FRAMES,
    RATES,
    ZH_FRAMES,
    choose_states,
    compose,
    make_captions,
    make_eval_caption,
    shuffle_segments,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
HELDOUT_PREFIXES = ("Please make me an avatar", "I want a little character", "Chibi portrait --",
                    "请帮我画一个角色", "我想要这样的头像", "画个Q版小人儿")
# The held-out frames' wording, which no training caption may contain (any case).
HELDOUT_MARKS = ("please make me an avatar", "i want a little character", "chibi portrait --", " plus ",
                 "that has ", "that wears ", "shown on", "请帮我画一个角色", "这样的头像", "画个q版小人", "；")


def _samples(n=300, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        attrs = sample_attributes(rng)
        yield attrs, make_captions(attrs, rng)


def _clean(n, seed, frames=None):
    """(lang, states, text) without noise or distractors, every frame."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        attrs = sample_attributes(rng)
        for lang, table in (("en", EN_FRAMES), ("zh", ZH_FRAMES)):
            frame = table[i % len(table)][1]
            states = choose_states(attrs, rng)
            yield lang, states, compose(states, lang, rng, noise=False, frame=frame)[0]


# ----------------------------------------------------------------------------- lexicon from the tables
def _strip(p: str) -> str:
    return re.sub(r"^(a|an) ", "", p)


def _en_forms(fam: str, v) -> list[str]:
    """Every way the English tables can say one value (the words a caption must contain)."""
    if fam == "background":
        if v == "transparent":
            return W.EN_NO_BG + ["transparent", "no background"]
        return [w for part in v.split(" and ") for w in W.EN_COLORS[fam][part]]
    if fam in W.EN_COLORS:
        return W.EN_COLORS[fam][v]
    if fam == "hairstyle":
        return (W.EN_STYLE_MOD.get(v, []) + W.EN_STYLE_NOUN.get(v, []) + W.EN_STYLE_ADJ.get(v, [])
                + W.EN_KV_VALUES[fam][v])
    if fam == "bangs":
        return [_strip(p) for p in W.EN_BANGS[v]] + W.EN_KV_VALUES[fam][v]
    if fam == "eye_shape":
        return W.EN_SHAPE_MOD[v] + W.EN_SHAPE_ADJ[v] + W.EN_KV_VALUES[fam][v]
    if fam == MULTI_VALUED:
        return [_strip(p) for p in W.EN_NO_HEAD["np"] + W.EN_NO_HEAD["post"]] + W.EN_KV_NEGATIONS[fam] + ["none"]
    forms = [_strip(p) for slot in W.EN_FORMS[fam][v].values() for p in slot] + W.EN_KV_VALUES[fam][v]
    return forms + (W.EN_KV_NEGATIONS.get(fam, []) if v in ("none", "no") else [])


def _zh_forms(fam: str, v) -> list[str]:
    if fam == "background":
        if v == "transparent":
            return W.ZH_NO_BG["n"] + W.ZH_NO_BG["v"] + ["透明"]
        return [w for part in v.split(" and ") for w in W.ZH_BG[part]]
    if fam in COLOR_FAMILIES:
        full, one = W.ZH_COLORS[v]
        return full + one + ([W.ZH_HAIR_FUR[v]] if fam == "hair_color" and v in W.ZH_HAIR_FUR else []) + \
            (["黑长直"] if (fam, v) == ("hair_color", "black") else [])
    if fam == "hairstyle":
        return W.ZH_STYLE[v] + (["黑长直"] if v == "long straight" else []) + \
            ([W.ZH_STYLE_LENGTH[v]] if v in W.ZH_STYLE_LENGTH else [])
    if fam == "bangs":
        return W.ZH_BANGS[v]
    if fam == "eye_shape":
        return W.ZH_SHAPE[v][0] + W.ZH_SHAPE[v][1]
    if fam == MULTI_VALUED:
        return W.ZH_NO_HEAD["n"] + W.ZH_NO_HEAD["v"] + W.ZH_KV_NEGATIONS[fam]
    forms = [p for slot in W.ZH_FORMS[fam][v].values() for p in slot]
    return forms + (W.ZH_KV_NEGATIONS.get(fam, []) if v in ("none", "no") else []) + (["有"] if fam == "blush" else [])


def _said(text: str, forms: list[str], lang: str) -> bool:
    text = text.lower()
    if lang == "en":
        return any(re.search(rf"(?<![a-z]){re.escape(f)}(?![a-z])", text) for f in forms)
    text = text.replace(":", "：")
    return any(f.lower() in text for f in forms)


def _says_value(text: str, fam: str, v, lang: str) -> bool:
    """The value's words are in the text (Chinese captions may say one family in English)."""
    if fam == MULTI_VALUED and v:
        return all(_says_item(text, x, lang) for x in v)
    ok = _said(text, _en_forms(fam, v), "en")
    return ok or (lang == "zh" and _said(text, _zh_forms(fam, v), "zh"))


def _says_item(text: str, item: str, lang: str) -> bool:
    forms = [_strip(p) for p in W.EN_HEAD[item]]
    return _said(text, forms, "en") or (lang == "zh" and _said(text, W.ZH_HEAD[item][0] + W.ZH_HEAD[item][1], "zh"))


# ----------------------------------------------------------------------------- truth and exactness
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


def test_every_stated_value_is_said():
    n = 0
    for lang, states, text in _clean(1500, seed=1):
        for fam, v in states.items():
            assert _says_value(text, fam, v, lang), f"{fam}={v!r} not said in {text!r}"
            n += 1
    assert n > 10000


def test_nothing_else_is_said():
    """A caption stating one family holds no word of any other family's values."""
    rng = np.random.default_rng(2)
    lexicon = {lang: {(f, str(v)): fn(f, v) for f in FAMILIES for v in (ATTRIBUTES[f] if f != MULTI_VALUED else [[]])}
               for lang, fn in (("en", _en_forms), ("zh", _zh_forms))}
    for lang in lexicon:
        for h in W.EN_HEAD:
            lexicon[lang][(MULTI_VALUED, h)] = [_strip(p) for p in W.EN_HEAD[h]] + \
                (W.ZH_HEAD[h][0] + W.ZH_HEAD[h][1] if lang == "zh" else [])
    for _ in range(3000):
        fam = FAMILIES[int(rng.integers(len(FAMILIES)))]
        values = ATTRIBUTES[fam] if fam != MULTI_VALUED else [[], *[[h] for h in W.EN_HEAD]]
        v = values[int(rng.integers(len(values)))]
        if fam == MULTI_VALUED and v == ["none"]:
            continue
        lang = "en" if rng.random() < 0.5 else "zh"
        text = compose({fam: v}, lang, rng, noise=False)[0].lower()
        own = [f for (g, key), forms in lexicon[lang].items() for f in forms
               if g == fam and (key == str(v) or (fam == MULTI_VALUED and key in v))]
        for f in sorted(own, key=len, reverse=True):
            text = text.replace(f.lower(), " ")
        for (g, key), forms in lexicon[lang].items():
            if g == fam:
                continue
            long_forms = [f for f in forms if len(f) >= (3 if lang == "en" else 2) and f not in ("yes", "none")]
            assert not _said(text, long_forms, lang), f"{fam}={v!r}: {text!r} says {g}={key}"


_EN_NOUNS = {"hair_color": r"hair|haired|" + "|".join(n for ns in W.EN_STYLE_NOUN.values() for n in ns),
             "eye_color": r"eyes|eyed", "collar_color": r"shirt|top|hoodie|collar|clothes|outfit|sweater",
             "background": r"background|bg|backdrop"}
_ZH_NOUNS = {"hair_color": "发|毛|" + "|".join(n for ns in W.ZH_STYLE.values() for n in ns), "eye_color": "眼|瞳",
             "collar_color": "衣|领|T恤", "background": "背景|底"}
_ZH_KEYS = {"hair_color": "头发|发色", "eye_color": "眼睛|瞳色", "collar_color": "衣服|上衣", "background": "背景"}


def _bound_en(text: str, fam: str, v: str) -> bool:
    syn = "|".join(re.escape(c) for c in sorted(W.EN_COLORS[fam][v], key=len, reverse=True))
    keys = "|".join(W.EN_KEYS[fam] + (["hair"] if fam == "hair_color" else ["eyes"] if fam == "eye_color" else []))
    for m in re.finditer(rf"\b(?=({syn})((?:[ -][a-z]+){{0,2}}?)[ -]({_EN_NOUNS[fam]})\b)", text):
        between = m.group(2).split()
        if not any(w in c for w in between for cs in W.EN_COLORS.values() for c in cs.values()):
            return True
    return bool(re.search(rf"\b({keys})\s*:\s*(?:[a-z]+(?: [a-z]+)?,? )?({syn})\b", text)
                or re.search(rf"\b(wearing|dressed in) ({syn})\b", text)
                or re.search(rf"background (is|should be) ({syn})\b", text))


def _bound_zh(text: str, fam: str, v: str) -> bool:
    full, one = W.ZH_COLORS[v] if fam != "background" else (W.ZH_BG[v], [])
    syn = "|".join(sorted(full + one + ([W.ZH_HAIR_FUR[v]] if fam == "hair_color" and v in W.ZH_HAIR_FUR else []),
                          key=len, reverse=True))
    if fam == "hair_color" and v == "black" and "黑长直" in text:
        return True
    return bool(re.search(rf"({syn})[^，、,/+| \n：:]{{0,3}}?({_ZH_NOUNS[fam]})", text)
                or re.search(rf"({_ZH_KEYS[fam]})(是|：|:|用)?({syn})", text))


def test_colours_are_bound_to_their_nouns():
    """Each stated colour sits next to its noun ("pink twin tails", "hair: purple, long",
    "蓝色的大圆眼", "背景是粉色"), so the text says which colour belongs to what."""
    several = 0
    for lang, states, text in _clean(1500, seed=3):
        colours = [f for f in (*COLOR_FAMILIES, "background") if f in states
                   and states[f] != "transparent" and " and " not in states[f]]
        several += len(colours) >= 2
        for fam in colours:
            ok = _bound_en(text.lower(), fam, states[fam]) or (lang == "zh" and _bound_zh(text, fam, states[fam]))
            assert ok, f"{fam}={states[fam]} is not bound in {text!r}"
    assert several > 3000 * 0.35  # several colours per caption are common


def test_negations_state_none_exactly():
    rng = np.random.default_rng(4)
    said = Counter()
    for _ in range(2000):
        attrs = sample_attributes(rng)
        states = choose_states(attrs, rng)
        for fam in ("face_accessory", MULTI_VALUED, "blush"):
            if states.get(fam, "x") in ("none", [], "no"):
                assert attrs[fam] in ("none", [], "no")  # only where true
                said[fam] += 1
    assert min(said.values()) > 50
    for lang in ("en", "zh"):
        for _ in range(200):
            text = compose({"face_accessory": "none", "head_accessory": [], "blush": "no"}, lang, rng, noise=False)[0]
            neg = r"\b(no|none|without|not|nothing)\b" if lang == "en" else r"[没无不]|\b(no|none|without|not|nothing)\b"
            assert len(re.findall(neg, text.lower())) >= 2 or ":" in text or "：" in text, text


def test_distractors_state_nothing():
    """No distractor, role, subject or request word names or implies a value."""
    extra = (W.EN_DISTRACTORS + W.EN_ROLES + W.EN_SUBJECTS + W.EN_SUBJECT_ADJ + W.EN_REQUESTS + W.EN_ENDINGS
             + W.ZH_DISTRACTORS + W.ZH_ROLES + W.ZH_SUBJECTS + W.ZH_REQUESTS + W.ZH_ENDINGS + W.EMOJI)
    text = " | ".join(extra).lower()
    for fam in FAMILIES:
        for v in (ATTRIBUTES[fam] if fam != MULTI_VALUED else []):
            forms = [f for f in _en_forms(fam, v) if len(f) >= 3 and f not in ("yes", "none")]
            assert not _said(text, forms, "en"), (fam, v)
            zh = [f for f in _zh_forms(fam, v) if len(f) >= 2]
            assert not any(f in text for f in zh), (fam, v, [f for f in zh if f in text])
    for h in W.EN_HEAD:
        assert not _said(text, [_strip(p) for p in W.EN_HEAD[h]], "en")
        assert not any(f in text for f in W.ZH_HEAD[h][0] if len(f) >= 2), h
    for w in ("cat", "ears", "glasses", "hat", "crown", "catgirl", "witch", "elf", "😎", "🐱", "🌸", "😊"):
        assert not re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text), w


# ----------------------------------------------------------------------------- variety and noise
def _noisy(n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
        attrs = sample_attributes(rng)
        lang = "en" if i % 2 == 0 else "zh"
        states = choose_states(attrs, rng)
        text, kinds = compose(states, lang, rng)
        yield lang, states, text, kinds


def test_noise_and_distractors_at_their_rates():
    counts = {"en": Counter(), "zh": Counter()}
    total = Counter()
    for lang, _, text, kinds in _noisy(8000, seed=5):
        total[lang] += 1
        counts[lang].update(kinds)
    for lang in ("en", "zh"):
        share = {k: counts[lang][k] / total[lang] for k in ("distractor", "spacing", "typo", "end_punct")}
        assert share["distractor"] == pytest.approx(RATES["distractor"], abs=0.03)
        assert share["spacing"] == pytest.approx(RATES["spacing"], abs=0.02)
        assert 0.01 < share["typo"] < 0.1 and 0.03 < share["end_punct"] < RATES["end_punct"] + 0.02
    assert counts["en"]["case"] / total["en"] == pytest.approx(RATES["case"], abs=0.03)


def test_separators_frames_and_requests_all_occur():
    en, zh = [], []
    for lang, _, text, _ in _noisy(8000, seed=6):
        (en if lang == "en" else zh).append(text)
    for sep in (", ", " / ", " + ", " | ", "; ", "\n"):
        assert sum(sep in t for t in en) > 20, repr(sep)
    for sep in ("，", "、", "/", "+", "|", "\n"):
        assert sum(sep in t for t in zh) > 20, repr(sep)
    assert sum(not re.search(r"[，、,/+|\s：:]", t) and len(t) > 6 for t in zh) > 20  # run together
    low = [t.lower() for t in en]
    for word in ("make me", "i want", "with", "wearing", " has ", "who ", ": ", "no ", "for my rpg"):
        assert sum(word in t for t in low) > 10, word
    for word in ("帮我画一个", "我想要", "的", "戴", "穿", "留着", "扎着", "有", "不戴", "没有"):
        assert sum(word in t for t in zh) > 10, word
    assert sum(any(e in t for e in W.EMOJI) for t in en + zh) > 50
    assert sum(bool(re.search(r"[a-z]{3}", t)) for t in zh) > 100  # English words among the Chinese


def test_modifiers_come_in_both_orders():
    rng = np.random.default_rng(7)
    states = {"hair_color": "purple", "hairstyle": "long straight"}
    en = [compose(states, "en", rng, noise=False)[0] for _ in range(600)]
    zh = [compose(states, "zh", rng, noise=False)[0] for _ in range(600)]
    c = "(purple|violet)"
    for pattern in (rf"long( straight| sleek)? {c} hair", rf"{c} (long|long straight|straight long|long sleek) hair",
                    rf"hair: {c},? long", rf"hair: long( straight)?,? {c}", rf"{c}-haired", r"long-haired"):
        assert any(re.search(pattern, t) for t in en), pattern
    for pattern in ("紫色长发", "长长的紫色头发", "紫发", "紫色的长", "头发是紫色的", "发色.紫色"):
        assert any(re.search(pattern, t) for t in zh), pattern
    de = [compose({"face_accessory": "glasses", **states}, "zh", rng, noise=False, frame="de")[0] for _ in range(300)]
    assert any(re.search("戴.?眼镜的紫色长(直)?发(的)?" + "(" + "|".join(W.ZH_SUBJECTS) + ")", t) for t in de)


def test_lengths_vary():
    counts = [len(c["states"]) for _, caps in _samples() for lang in ("en", "zh") for c in caps[lang]]
    assert min(counts) == 1 and max(counts) >= 9
    assert sum(1 for k in counts if k <= 3) > len(counts) * 0.25  # short prompts are common
    texts = {c["text"] for _, caps in _samples(100) for c in caps["en"]}
    assert len(texts) > 290  # almost no repeats


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


# ----------------------------------------------------------------------------- held out
def test_heldout_templates_not_in_training():
    for lang, _, text, _ in _noisy(6000, seed=2):
        assert not text.startswith(HELDOUT_PREFIXES)
        low = text.lower()
        assert not any(m in low for m in HELDOUT_MARKS), text
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


# ----------------------------------------------------------------------------- order invariance
def _segments(text: str) -> list[str]:
    parts = re.split(r"\s*[\n|;；/+,，、]\s*|\s+-\s+|(?<=[.!?。！？])\s+| +", text)
    return sorted(p.strip(" .!?。！？~～") for p in parts)


def test_shuffle_segments_examples():
    rng = np.random.default_rng(0)
    seen = {shuffle_segments("long purple hair, glasses, winking", rng) for _ in range(40)}
    assert "glasses, winking, long purple hair" in seen and len(seen) == 6
    for _ in range(20):
        out = shuffle_segments("hair: purple, long; eyes: blue; glasses: no", rng)
        assert sorted(out.split("; ")) == ["eyes: blue", "glasses: no", "hair: purple, long"]
        zh = shuffle_segments("戴眼镜、穿红衣服的紫色长发女孩，蓝眼睛，粉色背景。", rng)
        assert zh.endswith("。") and "戴眼镜、穿红衣服的紫色长发女孩" in zh and len(zh) == 25
    assert shuffle_segments("pink twin tails", rng) == "pink twin tails"
    assert shuffle_segments("粉发双马尾猫耳", rng) == "粉发双马尾猫耳"


def test_shuffle_segments_keeps_what_is_stated():
    """Shuffled captions are a permutation of the same segments and still say every stated
    value, with every colour still bound to its noun."""
    rng = np.random.default_rng(8)
    moved = 0
    for lang, states, text in _clean(1500, seed=9):
        out = shuffle_segments(text, rng)
        assert _segments(out) == _segments(text), (text, out)
        moved += out != text
        for fam, v in states.items():
            assert _says_value(out, fam, v, lang), (fam, v, out)
        for fam in (f for f in COLOR_FAMILIES if f in states):
            assert _bound_en(out.lower(), fam, states[fam]) or (lang == "zh" and _bound_zh(out, fam, states[fam])), out
    assert moved > 1500


def test_swapped_colors_trade_places_and_are_said():
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
