"""English and Chinese training captions for procedural avatars: a small compositional grammar.

Each caption states a random subset of the *visible* attributes and records exactly what it
states: ``{"text": str, "states": {family: value}}``. For ``head_accessory`` the stated value
is a list: the accessories named (all of them are worn), or ``[]`` for "no head accessories".

Why a grammar and not a list of templates: players do not write in our templates. They stack
modifiers in any order ("long purple hair", "purple long hair", "hair: purple, long"), use
的-clauses ("戴眼镜的紫色长发女孩"), verb frames (戴, 穿, 留, 扎; wearing, with, has), lists
with any separator, requests ("make me…", "帮我画一个…"), negations ("no glasses"), words
we do not know ("for my RPG", "pirate", emoji), typos and odd case. A text encoder that only
ever saw one phrasing per slot learns the phrasing, not the words. So a caption is built in
three steps: each stated family (or a fused group: hair colour + style + bangs, eye colour +
shape) becomes an *item*, a few phrasings keyed by grammatical slot (see
``training.caption_words``); a *frame* (list, description, sentences, key: value, request)
places the items; then distractors and noise are added at small rates. Several colours per
caption are common, and a colour word is always next to its noun, so the encoder must bind
each colour to hair, eyes, clothes or background.

The held-out evaluation wording lives in ``training.caption_heldout`` (frozen) and is never
used here.
"""

from __future__ import annotations

import re

import numpy as np

from moe_avatar.training import caption_words as W
from moe_avatar.training.attributes import ATTRIBUTES, COLOR_FAMILIES, MULTI_VALUED, visible_families
from moe_avatar.training.caption_heldout import HELDOUT_EN, HELDOUT_ZH, make_eval_caption

__all__ = ["HELDOUT_EN", "HELDOUT_ZH", "make_eval_caption", "choose_states", "compose", "make_captions",
           "shuffle_segments", "swap_colors", "swapped_caption"]

Item = dict  # grammatical slot -> phrase, for one family or a fused group of families

# Rates of the noise and extras (per caption), exported for the tests and DATASET.md.
RATES = {"typo": 0.04, "case": 0.2, "spacing": 0.08, "end_punct": 0.12, "distractor": 0.2, "zh_mixed": 0.05,
         "zh_variant": 0.08, "colourful": 0.3}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _coin(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _bare(phrase: str, rng, p: float = 0.8) -> str:
    """Drop a leading article, as tag lists do ("a ponytail" -> "ponytail"), most of the time."""
    for art in ("a ", "an "):
        if phrase.startswith(art) and _coin(rng, p):
            return phrase[len(art):]
    return phrase


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def _join_en(parts: list[str], rng) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    last = _pick(rng, [" and ", " and ", " and ", ", and ", " & "])
    return ", ".join(parts[:-1]) + last + parts[-1]


# ----------------------------------------------------------------------------- English items
def _en_color(fam: str, v: str, rng) -> str:
    return _pick(rng, W.EN_COLORS[fam][v])


def _en_style_np(s: str, rng, color: str | None = None) -> str:
    """A hair noun phrase for style ``s``, with the colour in either order where English allows it."""
    if s in W.EN_STYLE_MOD:
        mod = _pick(rng, W.EN_STYLE_MOD[s])
        if color is None:
            return f"{mod} hair"
        return _pick(rng, [f"{mod} {color} hair", f"{color} {mod} hair"])
    noun = _pick(rng, W.EN_STYLE_NOUN[s])
    art = "a " if s in W.EN_STYLE_COUNTABLE and noun != "odango" else ""
    if color is None:
        return _pick(rng, [f"{art}{noun}", f"hair in {art}{noun}"]) if s != "bob" else f"{art}{noun}"
    return _pick(rng, [f"{art}{color} {noun}", f"{color} hair in {art}{noun}", f"{color} hair with {art}{noun}"])


def _en_hair(st: dict, rng) -> list[Item]:
    """Hair colour, style and bangs: fused into one noun phrase ("long purple hair with blunt
    bangs") or said apart ("purple-haired", "twin tails")."""
    c, s, b = st.get("hair_color"), st.get("hairstyle"), st.get("bangs")
    items: list[Item] = []
    if c and s and _coin(rng, 0.7):
        items.append({"np": _en_style_np(s, rng, _en_color("hair_color", c, rng))})
    else:
        if c:
            cw = _en_color("hair_color", c, rng)
            items.append({slot: _pick(rng, forms).format(c=cw) for slot, forms in W.EN_COLOR_FORMS["hair_color"].items()})
        if s:
            items.append({"np": _en_style_np(s, rng), **({"adj": _pick(rng, W.EN_STYLE_ADJ[s])} if s in W.EN_STYLE_ADJ else {})})
    if b:
        bangs = _pick(rng, W.EN_BANGS[b])
        if items and "np" in items[-1] and _coin(rng, 0.35):
            joiner = "and" if " with " in items[-1]["np"] else _pick(rng, ["with", "and"])
            items[-1] = {"np": f"{items[-1]['np']} {joiner} {bangs}"}
        else:
            items.append({"np": bangs})
    return items


def _en_eyes(st: dict, rng) -> list[Item]:
    """Eye colour and shape: "sleepy blue eyes", "blue sleepy eyes", "blue-eyed", "round eyes"."""
    c, s = st.get("eye_color"), st.get("eye_shape")
    cw = _en_color("eye_color", c, rng) if c else None
    if c and s and _coin(rng, 0.7):
        mod = _pick(rng, W.EN_SHAPE_MOD[s])
        return [{"np": _pick(rng, [f"{mod} {cw} eyes", f"{cw} {mod} eyes"])}]
    items = []
    if c:
        items.append({slot: _pick(rng, forms).format(c=cw) for slot, forms in W.EN_COLOR_FORMS["eye_color"].items()})
    if s:
        items.append({"np": f"{_pick(rng, W.EN_SHAPE_MOD[s])} eyes", "adj": _pick(rng, W.EN_SHAPE_ADJ[s])})
    return items


def _en_head(v: list, rng) -> list[Item]:
    if not v:
        return [{slot: _pick(rng, forms) for slot, forms in W.EN_NO_HEAD.items()}]
    names = [_pick(rng, W.EN_HEAD[x]) for x in v]
    if len(names) == 2 and _coin(rng, 0.5):
        return [{"wear": _join_en(names, rng)}]
    return [{"wear": n} for n in names]


def _en_background(v: str, rng) -> Item:
    """Background item: a tag ("pink bg"), a phrase after the subject ("on a pink background")
    and a predicate ("the background is pink")."""
    if v == "transparent":
        tag = _pick(rng, W.EN_NO_BG)
        return {"bg": tag, "pp": _pick(rng, [f"with {_article(tag)} {tag}", f"on {_article(tag)} {tag}"])
                if not tag.startswith("no") else "with no background", "pred": "transparent"}
    if " and " in v:
        a, b = v.split(" and ")
        c = _pick(rng, W.EN_TWO_TONE).format(a=_en_color("background", a, rng), b=_en_color("background", b, rng))
    else:
        c = _en_color("background", v, rng)
    noun = _pick(rng, W.EN_BG_NOUN)
    pp = _pick(rng, ["on a", "against a", "on a plain"] if " and " not in v else ["on a", "against a"])
    return {"bg": f"{c} {noun}", "pp": f"{pp} {c} {noun}", "pred": c}


def _en_single(fam: str, v, rng) -> list[Item]:
    if fam == MULTI_VALUED:
        return _en_head(v, rng)
    if fam == "background":
        return [_en_background(v, rng)]
    if fam == "collar_color":
        cw = _en_color(fam, v, rng)
        return [{slot: _pick(rng, forms).format(c=cw) for slot, forms in W.EN_COLOR_FORMS[fam].items()}]
    return [{slot: _pick(rng, forms) for slot, forms in W.EN_FORMS[fam][v].items()}]


_GROUPS = {"hair_color": "hair", "hairstyle": "hair", "bangs": "hair", "eye_color": "eyes", "eye_shape": "eyes"}


def _items(states: dict, order: list[str], rng, single, groups: dict) -> list[Item]:
    """Items in ``order``; a group (hair, eyes) comes where its first family does."""
    out: list[Item] = []
    done: set[str] = set()
    for fam in order:
        group = _GROUPS.get(fam)
        if group in done or fam in done:
            continue
        made = groups[group]({f: states[f] for f in states if _GROUPS.get(f) == group}, rng) if group \
            else single(fam, states[fam], rng)
        out += [{**it, "of": group or fam} for it in made]
        done.add(group or fam)
    return out


def _en_items(states: dict, order: list[str], rng) -> list[Item]:
    return _items(states, order, rng, _en_single, {"hair": _en_hair, "eyes": _en_eyes})


# ----------------------------------------------------------------------------- English frames
def _en_tag(item: Item, rng) -> str:
    slots = [s for s in ("np", "wear", "adj", "post", "bg") if s in item]
    return _bare(item[_pick(rng, slots)], rng)


def _en_subject(rng, role: bool = False, adjs: tuple = ()) -> str:
    """"cute purple-haired pirate girl": size/cuteness, then attribute adjectives, then the noun."""
    words = [_pick(rng, W.EN_SUBJECT_ADJ)] if _coin(rng, 0.3) else []
    words += adjs
    if role:
        return " ".join(words + [_pick(rng, W.EN_ROLES)] + (["girl"] if _coin(rng, 0.5) else []))
    return " ".join(words + [_pick(rng, W.EN_SUBJECTS)])


def _en_list(items: list[Item], rng, subject: bool = True) -> str:
    """"long purple hair, glasses, winking" with any separator; maybe a subject word."""
    tags = [_en_tag(it, rng) for it in items]
    if subject and _coin(rng, 0.3):
        tags.insert(0 if _coin(rng, 0.7) else len(tags), _en_subject(rng))
    return _pick(rng, W.EN_SEPARATORS).join(tags)


def _en_described(items: list[Item], rng, role: bool = False) -> str:
    """"a cute purple-haired girl with blue eyes wearing glasses, smiling, on a pink background"."""
    adjs, withs, wears, posts, bgs, tail = [], [], [], [], [], []
    for it in items:
        if "adj" in it and len(adjs) < 2 and _coin(rng, 0.35):
            adjs.append(it["adj"])
        elif "bg" in it:
            (bgs if _coin(rng, 0.7) else tail).append(it)
        elif (withs or wears) and _coin(rng, 0.2):
            tail.append(it)
        elif "wear" in it:
            wears.append(it["wear"])
        elif "np" in it:
            withs.append(it["np"])
        else:
            posts.append(it.get("post") or _en_tag(it, rng))
    noun = _en_subject(rng, role, tuple(adjs))
    text = f"{_article(noun)} {noun}"
    rel = _coin(rng, 0.25)
    if withs:
        text += (" who has " if rel else " with ") + _join_en(withs, rng)
    if wears:
        verb = _pick(rng, [" wears ", " is wearing "]) if rel else " wearing "
        verb = (" and" if withs else " who") + verb if rel else verb
        text += ("," if withs and _coin(rng, 0.5) else "") + verb + _join_en(wears, rng)
    if posts:
        text += ", " + _join_en(posts, rng)
    if bgs:
        text += _pick(rng, [" ", ", "]) + bgs[0]["pp"]
    if tail:
        sep = _pick(rng, W.EN_SEPARATORS[:10])
        text += sep + sep.join(_en_tag(it, rng) for it in tail)
    return text


def _en_sentences(items: list[Item], rng) -> str:
    """"She has pink hair and blue eyes. She's wearing glasses. The background is pink."."""
    has, wears, adjs = [], [], []
    for it in items:
        if "bg" in it:
            continue
        if "adj" in it and _coin(rng, 0.4):
            adjs.append(it["adj"])
        elif "np" in it:
            has.append(it["np"])
        else:
            wears.append(it["wear"])
    subj = _pick(rng, ["she", "the girl", "my character", "the character"])
    out = []
    if has:
        out.append(f"{subj} has {_join_en(has, rng)}")
    if wears:
        out.append(f"{'she' if out else subj}{_pick(rng, [' is wearing ', ' wears ', chr(39) + 's wearing '])}"
                   f"{_join_en(wears, rng)}")
    if adjs:
        out.append(f"{'she' if out else subj} is {_join_en(adjs, rng)}")
    for it in items:
        if "bg" in it:
            out.append(_pick(rng, [f"the background is {it['pred']}", f"background should be {it['pred']}", it["bg"]]))
    return _pick(rng, [". ", ". ", "! "]).join(o[0].upper() + o[1:] for o in out) + _pick(rng, [".", "", "!"])


def _en_kv(states: dict, order: list[str], rng) -> str:
    """"hair: purple, long | eyes: blue | glasses: no"; hair and eye values may share a key."""
    pairs, inner = [], False
    done: set[str] = set()
    for fam in order:
        if fam in done:
            continue
        group = _GROUPS.get(fam)
        both = [f for f in order if _GROUPS.get(f) == group and f != "bangs" and f not in done] if group else []
        if len(both) == 2 and fam != "bangs" and _coin(rng, 0.6):
            vals = [_en_kv_value(f, states[f], rng) for f in both]
            if _coin(rng, 0.5):
                vals.reverse()
            joiner = _pick(rng, [", ", " "])
            inner |= joiner == ", "
            pairs.append(f"{'hair' if group == 'hair' else 'eyes'}: {joiner.join(vals)}")
            done |= set(both)
            continue
        v = states[fam]
        if fam in W.EN_KV_NEGATIONS and v in ("none", "no", []) and _coin(rng, 0.6):
            pairs.append(_pick(rng, W.EN_KV_NEGATIONS[fam]))
        else:
            pairs.append(f"{_pick(rng, W.EN_KEYS[fam])}: {_en_kv_value(fam, v, rng)}")
        done.add(fam)
    seps = ["; ", " | ", "\n", " / "] if inner else [sep for sep in W.EN_SEPARATORS if sep != " "]
    return _pick(rng, seps).join(pairs)


def _en_kv_value(fam: str, v, rng) -> str:
    if fam == "background":
        return _en_background(v, rng)["pred"]
    if fam == MULTI_VALUED:
        return _pick(rng, [" & ", " and "]).join(_bare(_pick(rng, W.EN_HEAD[x]), rng, 1.0) for x in v) or "none"
    if fam in W.EN_COLORS:
        return _en_color(fam, v, rng)
    return _pick(rng, W.EN_KV_VALUES[fam][v])


def _en_request(items: list[Item], rng) -> str:
    """"make me a girl with …", "can i get a character: pink hair, glasses pls"."""
    req = _pick(rng, W.EN_REQUESTS)
    if _coin(rng, 0.6):
        body = _en_described(items, rng, role=_coin(rng, 0.15))
    else:
        noun = _en_subject(rng)
        body = f"{_article(noun)} {noun}{_pick(rng, [': ', ' - ', ', '])}{_en_list(items, rng, subject=False)}"
    return f"{req} {body}{_pick(rng, W.EN_ENDINGS) if _coin(rng, 0.4) else ''}"


# ----------------------------------------------------------------------------- Chinese items
def _zh_color(v: str, rng, short: bool = False) -> str:
    full, one = W.ZH_COLORS[v]
    return _pick(rng, one if short else full)


def _zh_hair(st: dict, rng) -> list[Item]:
    """"紫色长发", "粉毛双马尾", "长长的紫色头发", "黑长直", "扎着双马尾", "头发是紫色的"."""
    c, s, b = st.get("hair_color"), st.get("hairstyle"), st.get("bangs")
    items: list[Item] = []
    if c and s and _coin(rng, 0.7):
        items.append(_zh_hair_fused(c, s, rng))
    else:
        if c:
            full, one = _zh_color(c, rng), _zh_color(c, rng, short=True)
            nouns = [f"{full}头发", f"{full}的头发", f"{one}发"] + ([W.ZH_HAIR_FUR[c]] if c in W.ZH_HAIR_FUR else [])
            items.append({"n": _pick(rng, nouns), "v": _pick(rng, [f"头发是{full}的", f"留着{one}发"])})
        if s:
            style = _pick(rng, W.ZH_STYLE[s])
            verb = "扎着" if s in W.ZH_STYLE_TIED else "留着"
            items.append({"n": style, "v": f"{verb}{style}"})
    if b:
        bangs = _pick(rng, W.ZH_BANGS[b])
        items.append({"n": bangs, "v": f"留着{bangs}"})
    return items


def _zh_hair_fused(c: str, s: str, rng) -> Item:
    if c == "black" and s == "long straight" and _coin(rng, 0.5):
        return {"n": "黑长直", "v": "一头黑长直"}
    full, style = _zh_color(c, rng), _pick(rng, W.ZH_STYLE[s])
    nouns = [f"{full}{style}", f"{full}的{style}"]
    if s in W.ZH_STYLE_LENGTH:
        nouns.append(f"{W.ZH_STYLE_LENGTH[s]}{full}头发")
    else:
        nouns.append(f"{_pick(rng, [_zh_color(c, rng, short=True) + '发', W.ZH_HAIR_FUR.get(c, full)])}{style}")
    verbs = [f"留着{full}{style}", f"有一头{full}{style}"]
    if s in W.ZH_STYLE_TIED:
        verbs += [f"扎着{full}{style}", f"{full}头发扎成{style}"]
    return {"n": _pick(rng, nouns), "v": _pick(rng, verbs)}


def _zh_eyes(st: dict, rng) -> list[Item]:
    """"蓝眼睛", "蓝瞳", "圆圆的蓝眼睛", "蓝色的大圆眼", "眼睛是蓝色的"."""
    c, s = st.get("eye_color"), st.get("eye_shape")
    if c and s and _coin(rng, 0.7):
        full = _zh_color(c, rng)
        shape_nouns, mods = W.ZH_SHAPE[s]
        plain = [n for n in shape_nouns if "的" not in n]  # "蓝色的大圆眼", never "蓝色的细长的眼睛"
        return [{"n": _pick(rng, [f"{_pick(rng, mods)}{full}眼睛", f"{full}的{_pick(rng, plain)}"])}]
    items = []
    if c:
        full, one = _zh_color(c, rng), _zh_color(c, rng, short=True)
        items.append({"n": _pick(rng, [f"{full}眼睛", f"{full}的眼睛", f"{one}眼", f"{one}瞳", f"{full}瞳孔", f"{one}眼睛"]),
                      "v": f"眼睛是{full}的"})
    if s:
        items.append({"n": _pick(rng, W.ZH_SHAPE[s][0])})
    return items


def _zh_head(v: list, rng) -> list[Item]:
    if not v:
        return [{slot: _pick(rng, forms) for slot, forms in W.ZH_NO_HEAD.items()}]
    if len(v) == 2 and _coin(rng, 0.5):
        a, b = (_pick(rng, W.ZH_HEAD[x][0]) for x in v)
        return [{"n": f"{a}和{b}", "v": f"{_pick(rng, ['戴着', '有'])}{a}和{b}"}]
    return [{"n": _pick(rng, W.ZH_HEAD[x][0]), "v": _pick(rng, W.ZH_HEAD[x][1])} for x in v]


def _zh_background(v: str, rng) -> Item:
    if v == "transparent":
        return {slot: _pick(rng, forms) for slot, forms in W.ZH_NO_BG.items()}
    if " and " in v:
        a, b = (_pick(rng, W.ZH_BG[x]) for x in v.split(" and "))
        c = _pick(rng, [f"{a}和{b}", f"{a}{b}双色", f"{a}配{b}"])
        return {"n": _pick(rng, [f"{c}背景", f"{c}的背景"]), "v": f"背景是{c}"}
    c = _pick(rng, W.ZH_BG[v])
    return {"n": _pick(rng, [f"{c}背景", f"{c}底", f"纯{c}背景", f"{c}的背景"]),
            "v": _pick(rng, [f"背景是{c}", f"背景{c}", f"背景用{c}的"])}


def _zh_single(fam: str, v, rng) -> list[Item]:
    if fam == MULTI_VALUED:
        return _zh_head(v, rng)
    if fam == "background":
        return [_zh_background(v, rng)]
    if fam == "collar_color":
        full, one = _zh_color(v, rng), _zh_color(v, rng, short=True)
        return [{slot: _pick(rng, forms).format(c=full, s=one) for slot, forms in W.ZH_COLLAR.items()}]
    return [{slot: _pick(rng, forms) for slot, forms in W.ZH_FORMS[fam][v].items()}]


def _zh_items(states: dict, order: list[str], rng) -> list[Item]:
    return _items(states, order, rng, _zh_single, {"hair": _zh_hair, "eyes": _zh_eyes})


# ----------------------------------------------------------------------------- Chinese frames
def _zh_tag(item: Item, rng) -> str:
    return item[_pick(rng, [s for s in ("n", "v") if s in item])]


def _zh_list(items: list[Item], rng, extra: list[str] = (), subject: bool = True) -> str:
    """"粉色双马尾，猫耳，蓝眼睛" with any separator (or none); maybe "女孩：" in front."""
    sep = _pick(rng, W.ZH_SEPARATORS)
    if sep == "" and len(items) > 3:
        sep = "，"  # run-together tags ("粉发双马尾猫耳") only for a few nouns
    tags = [it["n"] if sep == "" and "n" in it else _zh_tag(it, rng) for it in items]
    if extra:  # an English phrase among the Chinese ones ("粉色双马尾，cat ears")
        sep = _pick(rng, ["，", "、", ","])
        for e in extra:
            tags.insert(int(rng.integers(len(tags) + 1)), e)
    body = sep.join(tags)
    if subject and _coin(rng, 0.2):
        return f"{_pick(rng, W.ZH_SUBJECTS)}{_pick(rng, ['：', '，', ':'])}{body}"
    return body


_ZH_NEG = ("没", "无", "不")
_ZH_PRENOMINAL = {"hair", "eyes", "head_accessory", "skin_tone", "expression"}


def _zh_de(items: list[Item], rng) -> str:
    """"一个戴眼镜的紫色长发女孩，蓝眼睛": verb phrases + 的, then a noun modifier, then the
    subject; the rest follows as a list. Backgrounds never modify the girl."""
    verbs, nouns, tail = [], [], []
    for it in items:
        r = rng.random()
        if it["of"] == "background":
            tail.append(it)
        elif "v" in it and len(verbs) < 2 and r < 0.45:
            verbs.append(it["v"])
        elif "n" in it and it["of"] in _ZH_PRENOMINAL and len(nouns) < (2 if r < 0.6 else 1):
            nouns.append(it["n"])
        else:
            tail.append(it)
    if not (verbs or nouns):
        it = tail.pop(0)
        verbs.append(it.get("v") or f"有{it['n']}")
    head = "、".join(verbs)
    head += "" if not verbs or head.endswith("的") else "的"
    if nouns:
        mods = "、".join(nouns)
        head += mods + ("" if mods.endswith("的") else "的" if len(nouns) > 1 or _coin(rng, 0.4) else "")
    text = f"{_pick(rng, ['一个', '一位', '', ''])}{head}{_pick(rng, W.ZH_SUBJECTS)}"
    if tail:
        sep = _pick(rng, ["，", "，", " ", ","])
        text += sep + sep.join(_zh_tag(it, rng) for it in tail)
    return text


def _zh_sentence(items: list[Item], rng) -> str:
    """"她有粉色头发和蓝眼睛，戴着眼镜，背景是粉色"."""
    has, rest = [], []
    for it in items:
        if "n" in it and it["of"] != "background" and not it["n"].startswith(_ZH_NEG) and _coin(rng, 0.6):
            has.append(it["n"])
        else:
            rest.append(it.get("v") or it["n"])
    subj = _pick(rng, ["她", "这个女孩", "角色", "我的角色", "女孩"])
    parts = []
    if has:
        parts.append(f"{subj}{_pick(rng, ['有', '有着'])}{'和'.join(has) if len(has) <= 2 else '、'.join(has)}")
    parts += rest
    if not has:
        parts[0] = subj + parts[0]
    return "，".join(parts) + _pick(rng, ["", "。"])


def _zh_kv(states: dict, order: list[str], rng) -> str:
    """"发色：紫色，发型：长发，眼镜：无"."""
    colon = _pick(rng, ["：", ":", "："])
    pairs = []
    for fam in order:
        v = states[fam]
        if fam in W.ZH_KV_NEGATIONS and v in ("none", "no", []):
            pairs.append(_pick(rng, W.ZH_KV_NEGATIONS[fam]).replace("：", colon))
        else:
            pairs.append(f"{_pick(rng, W.ZH_KEYS[fam])}{colon}{_zh_kv_value(fam, v, rng)}")
    return _pick(rng, ["，", " ", "|", "\n", "，"]).join(pairs)


def _zh_kv_value(fam: str, v, rng) -> str:
    if fam == MULTI_VALUED:
        return "、".join(_pick(rng, W.ZH_HEAD[x][0]) for x in v)
    if fam == "background":
        return "透明" if v == "transparent" else "和".join(_pick(rng, W.ZH_BG[x]) for x in v.split(" and "))
    if fam in COLOR_FAMILIES:
        return _zh_color(v, rng)
    if fam == "blush":
        return "有"
    if fam in ("hairstyle", "bangs"):
        return _pick(rng, (W.ZH_STYLE if fam == "hairstyle" else W.ZH_BANGS)[v])
    if fam == "eye_shape":
        return _pick(rng, W.ZH_SHAPE[v][0])
    return _zh_tag(_zh_single(fam, v, rng)[0], rng)


def _zh_request(items: list[Item], rng) -> str:
    """"帮我画一个戴眼镜的紫色长发女孩", "我想要一个女孩：粉发，蓝眼睛，谢谢"."""
    req = _pick(rng, W.ZH_REQUESTS)
    if _coin(rng, 0.5):
        body = _zh_de(items, rng)
        for lead in ("一个", "一位", "个"):
            body = body[len(lead):] if body.startswith(lead) else body
    else:
        body = f"{_pick(rng, W.ZH_SUBJECTS)}{_pick(rng, ['，', '：'])}{_zh_list(items, rng, subject=False)}"
    ending = _pick(rng, W.ZH_ENDINGS) if _coin(rng, 0.4) else ""
    if req == "能不能画一个":
        ending = _pick(rng, ["吗", "吗？", "？"])
    return req + body + ending


# ----------------------------------------------------------------------------- extras and noise
def _extras(text: str, rng, ways: list) -> str:
    """A word outside the vocabulary ("for my rpg", "pirate", an emoji) that states nothing:
    one of `ways` (cumulative probability, how), drawn with one uniform."""
    r = rng.random()
    return next(way for limit, way in ways if r < limit)(text, rng)


_EXTRAS_EN = [
    (0.5, lambda t, rng: f"{t}{_pick(rng, [' ', ', '])}{_pick(rng, W.EN_DISTRACTORS)}"),
    (0.7, lambda t, rng: f"{_pick(rng, W.EN_DISTRACTORS)}{_pick(rng, [', ', ' '])}{t}"),
    (0.85, lambda t, rng: f"{t} {_pick(rng, W.EMOJI)}"),
    (1.0, lambda t, rng: f"{t}, {_pick(rng, W.EN_ROLES)}" if _coin(rng, 0.5) else f"{_pick(rng, W.EN_ROLES)}, {t}"),
]
_EXTRAS_ZH = [
    (0.5, lambda t, rng: f"{t}{_pick(rng, ['，', ' ', '，'])}{_pick(rng, W.ZH_DISTRACTORS)}"),
    (0.7, lambda t, rng: f"{_pick(rng, W.ZH_ROLES)}{_pick(rng, ['，', ' '])}{t}"),
    (1.0, lambda t, rng: f"{t}{_pick(rng, W.EMOJI)}"),
]


def _typo(text: str, rng) -> str:
    """One slip of the fingers in one word: swap, drop, double or a neighbouring letter."""
    words = [m for m in re.finditer(r"[a-z]{4,}", text)]
    if not words:
        return text
    m = _pick(rng, words)
    w, i = m.group(), int(rng.integers(1, len(m.group()) - 1))
    kind = int(rng.integers(4))
    w = [w[:i] + w[i + 1] + w[i] + w[i + 2:], w[:i] + w[i + 1:], w[:i] + w[i] + w[i:],
         w[:i] + _pick(rng, W.EN_TYPO_KEYS) + w[i + 1:]][kind]
    return text[:m.start()] + w + text[m.end():]


def _case(text: str, rng) -> str:
    r = rng.random()
    if r < 0.55:
        return text[:1].upper() + text[1:]
    if r < 0.8:
        return re.sub(r"\b[a-z]", lambda m: m.group().upper(), text)
    if r < 0.9:
        words = list(re.finditer(r"[a-z]{3,}", text))
        if words:
            m = _pick(rng, words)
            return text[:m.start()] + m.group().upper() + text[m.end():]
        return text
    return text.upper()


def _noise_en(text: str, rng) -> tuple[str, tuple[str, ...]]:
    """Typos, letter case and punctuation at small rates (RATES); returns what was applied."""
    kinds = []
    if _coin(rng, RATES["typo"]):
        text, kinds = _typo(text, rng), kinds + ["typo"]
    if _coin(rng, RATES["case"]):
        text, kinds = _case(text, rng), kinds + ["case"]
    if _coin(rng, RATES["spacing"]):
        text = text.replace(", ", ",") if _coin(rng, 0.7) else text.replace(" ", "  ", 1)
        kinds.append("spacing")
    if _coin(rng, RATES["end_punct"]) and text[-1:].isalnum():
        text, kinds = text + _pick(rng, ["!", ".", "~", "!!", "...", " :)", " <3"]), kinds + ["end_punct"]
    return text, tuple(kinds)


def _noise_zh(text: str, rng) -> tuple[str, tuple[str, ...]]:
    """Common variants (带 for 戴, 眼晴), half-width commas, stray spaces and end punctuation."""
    kinds = []
    if _coin(rng, RATES["zh_variant"]):
        a = _pick(rng, [k for k in W.ZH_TYPOS if k in text] or [""])
        if a:
            text, kinds = text.replace(a, W.ZH_TYPOS[a], -1 if a == "戴" else 1), kinds + ["typo"]
    if _coin(rng, RATES["spacing"]):
        text = text.replace("，", "," if _coin(rng, 0.6) else "， ")
        kinds.append("spacing")
    if _coin(rng, RATES["end_punct"]) and text[-1:] not in "。！~吗吧":
        text, kinds = text + _pick(rng, ["。", "！", "~", "～", "!!", "..."]), kinds + ["end_punct"]
    return text, tuple(kinds)


# ----------------------------------------------------------------------------- captions
EN_FRAMES = ((0.34, "list"), (0.30, "described"), (0.08, "sentences"), (0.08, "kv"), (0.20, "request"))
ZH_FRAMES = ((0.30, "list"), (0.30, "de"), (0.10, "sentence"), (0.08, "kv"), (0.22, "request"))


def _frame(frames, rng) -> str:
    r, acc = rng.random(), 0.0
    for p, name in frames:
        acc += p
        if r < acc:
            return name
    return frames[-1][1]


def _compose_en(states: dict, order: list[str], rng, frame: str) -> str:
    if frame == "kv":
        return _en_kv(states, order, rng)
    items = _en_items(states, order, rng)
    fn = {"list": _en_list, "described": _en_described, "sentences": _en_sentences, "request": _en_request}[frame]
    return fn(items, rng)


def _compose_zh(states: dict, order: list[str], rng, frame: str) -> str:
    if frame == "kv":
        return _zh_kv(states, order, rng)
    extra: list[str] = []
    if frame == "list" and len(order) > 1 and _coin(rng, RATES["zh_mixed"] / 0.3):
        fam = order.pop(int(rng.integers(len(order))))  # said in English among the Chinese
        extra = [_en_tag(it, rng) for it in _en_items({fam: states[fam]}, [fam], rng)]
    items = _zh_items(states, order, rng)
    if frame == "list":
        return _zh_list(items, rng, extra)
    return {"de": _zh_de, "sentence": _zh_sentence, "request": _zh_request}[frame](items, rng)


def compose(states: dict, lang: str, rng: np.random.Generator, noise: bool = True,
            frame: str | None = None) -> tuple[str, tuple[str, ...]]:
    """A caption stating exactly ``states`` in ``lang``: (text, noise kinds applied).

    ``frame`` forces one frame (EN_FRAMES / ZH_FRAMES names); ``noise=False`` leaves out
    distractors and noise (the tests read the clean words that way)."""
    order = [list(states)[i] for i in rng.permutation(len(states))]
    frame = frame or _frame(EN_FRAMES if lang == "en" else ZH_FRAMES, rng)
    text = (_compose_en if lang == "en" else _compose_zh)(states, order, rng, frame)
    if not noise:
        return text, ()
    kinds: tuple[str, ...] = ()
    if _coin(rng, RATES["distractor"]):
        text, kinds = _extras(text, rng, _EXTRAS_EN if lang == "en" else _EXTRAS_ZH), ("distractor",)
    text, more = (_noise_en if lang == "en" else _noise_zh)(text, rng)
    return text, kinds + more


def _is_none_value(fam: str, v) -> bool:
    return (fam == "blush" and v == "no") or (fam == "face_accessory" and v == "none") or \
        (fam == MULTI_VALUED and not v)


def choose_states(attrs: dict, rng: np.random.Generator) -> dict:
    """A random non-empty subset of the visible attributes, with values true of ``attrs``.

    Half the time 1-4 families, else anywhere up to all; in a share of captions (RATES
    "colourful") every visible colour family is added, so captions with several colours,
    which only binding tells apart, are common."""
    fams = sorted(visible_families(attrs))
    hi = min(4, len(fams)) if rng.random() < 0.5 else len(fams)
    k = int(rng.integers(1, hi + 1))
    chosen = [fams[i] for i in rng.permutation(len(fams))[:k]]
    if _coin(rng, RATES["colourful"]):
        chosen += [f for f in (*COLOR_FAMILIES, "background") if f in fams and f not in chosen]
    states = {}
    for fam in chosen:
        v = attrs[fam]
        if _is_none_value(fam, v) and rng.random() < 0.6:
            continue  # say "no X" now and then, not every time it is true
        if fam == MULTI_VALUED and len(v) == 2 and rng.random() < 0.25:
            v = [v[int(rng.integers(2))]]  # name one of the two
        states[fam] = list(v) if fam == MULTI_VALUED else v
    if not states:
        states["hair_color"] = attrs["hair_color"]
    return states


def make_captions(attrs: dict, rng: np.random.Generator, n_en: int = 3, n_zh: int = 3) -> dict:
    """``{"en": [caption, ...], "zh": [...]}`` with captions as ``{"text", "states"}``."""
    out: dict = {"en": [], "zh": []}
    for lang, n in (("en", n_en), ("zh", n_zh)):
        for _ in range(n):
            states = choose_states(attrs, rng)
            out[lang].append({"text": compose(states, lang, rng)[0], "states": states})
    return out


# ----------------------------------------------------------------------------- order invariance
# Separators from strongest to weakest: a caption is split at the strongest one it has, so
# the commas inside "hair: purple, long; eyes: blue" or the 、 inside a 的-clause stay put.
_SENTENCE = r"(?<=[.!?。！？])\s+"
_SPLITS = [r"\n", r"\s*\|\s*", r"\s*[;；]\s*", _SENTENCE, r"\s*/\s*", r"\s*\+\s*", r"\s+-\s+",
           r"\s*[,，]\s*", r"(?<=[\u4e00-\u9fff]) +(?=[\u4e00-\u9fff])", r"、"]
_END = re.compile(r"[\s.!?。！？~～]+$")


def shuffle_segments(text: str, rng: np.random.Generator) -> str:
    """The caption with its separator-delimited segments in a random order (both languages).

    Why: a list states the same whatever its order ("glasses, pink hair" = "pink hair,
    glasses"), and an encoder trained on one order per frame learns order as a cue. Only the
    strongest separator present is split on, so no segment loses the key or noun it belongs
    to; end punctuation stays at the end. Text without a separator comes back unchanged."""
    end = _END.search(text)
    tail = end.group() if end else ""
    body = text[:len(text) - len(tail)]
    for pattern in _SPLITS:
        m = re.search(pattern, body)
        if m is None:
            continue
        parts = [p for p in re.split(pattern, body) if p.strip()]
        if len(parts) < 2:
            return text
        joiner = m.group()
        if pattern == _SENTENCE:  # sentences: each loses its full stop, the joiner restores it
            parts, joiner = [_END.sub("", p) for p in parts], ". "
        order = rng.permutation(len(parts))
        return joiner.join(parts[i] for i in order) + tail
    return text


# ----------------------------------------------------------------------------- binding negatives
def swap_colors(states: dict, rng: np.random.Generator) -> dict | None:
    """The same statement with two stated colours trading places ("pink hair, blue eyes" ->
    "blue hair, pink eyes"), or None when no two stated colours can trade (each value must
    exist in the other family).

    Why: a small CLIP text tower reads captions as a bag of words; chibi-64 0.11.0's CLIP read
    "pink hair, blue eyes" as blue hair (its text heads: one stated colour 0.99 right, two or
    more 0.76). A caption with the colours swapped is the one negative that only binding tells
    apart (NegCLIP: Yuksekgonul et al., "When and why vision-language models behave like
    bags-of-words", ICLR 2023).
    """
    fams = [f for f in COLOR_FAMILIES if f in states]
    pairs = [(a, b) for i, a in enumerate(fams) for b in fams[i + 1:]
             if states[a] != states[b] and states[a] in ATTRIBUTES[b] and states[b] in ATTRIBUTES[a]]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    out = dict(states)
    out[a], out[b] = states[b], states[a]
    return out


def swapped_caption(states: dict, lang: str, rng: np.random.Generator) -> str | None:
    """A training caption of :func:`swap_colors` (states), in ``lang``; None when nothing swaps."""
    new = swap_colors(states, rng)
    if new is None:
        return None
    return compose(new, lang, rng)[0]
