"""The held-out evaluation grammar, frozen: only :func:`make_eval_caption` uses it.

Why a module of its own: ``training/prompts/eval.jsonl`` is generated from these templates
(``training.evaluate.make_eval_prompts(520, seed=1234)``) and must stay byte-identical while
the training grammar (``training.captions``, ``training.caption_words``) grows. Nothing here
may change, not even a synonym or the order of random draws; the training grammar never
uses these frames ("Please make me an avatar: ... plus ...", "I want a little character
that has ...", "Chibi portrait -- a / b", "请帮我画一个角色，...", "我想要这样的头像：...；...",
"画个Q版小人儿，要...").
"""

from __future__ import annotations

import numpy as np

from moe_avatar.training.attributes import ZH_NAMES

# ----------------------------------------------------------------------------- English

EN_STYLE_WITH = {"short": ["short hair"], "long straight": ["long straight hair", "long sleek hair"],
                 "bob": ["a bob cut", "bob hair", "a bob haircut"],
                 "twin tails": ["twin tails", "twintails", "pigtails"], "ponytail": ["a ponytail", "a side ponytail"],
                 "drills": ["drill curls", "ringlet drills", "drill hair", "spiral curls"],
                 "bun": ["a hair bun", "a bun", "a top bun"]}
EN_STYLE_FUSED = {"short": ["short {c} hair"], "long straight": ["long straight {c} hair", "long {c} hair"],
                  "bob": ["a {c} bob", "{c} bob-cut hair"], "twin tails": ["{c} twin tails", "{c} twintails"],
                  "ponytail": ["a {c} ponytail", "{c} hair in a ponytail"],
                  "drills": ["{c} drill curls", "{c} ringlet drills"],
                  "bun": ["a {c} hair bun", "{c} hair in a bun"]}
EN_STYLE_IN = {"short": None, "long straight": None, "bob": "a bob", "twin tails": "twin tails",
               "ponytail": "a ponytail", "drills": "drill curls", "bun": "a bun"}
EN_BANGS = {"straight": ["straight bangs", "blunt bangs"], "side-swept": ["side-swept bangs", "swept bangs"],
            "parted": ["parted bangs", "center-parted bangs"]}
EN_EYE_SHAPE = {"round": ["round eyes", "big round eyes"], "sharp": ["sharp eyes", "sharp narrow eyes"],
                "sleepy": ["sleepy eyes", "droopy sleepy eyes"]}
EN_EYE_SHAPE_ADJ = {"round": "round", "sharp": "sharp", "sleepy": "sleepy"}
EN_EXPR_WITH = {"smile": ["a smile", "a gentle smile"], "neutral": ["a neutral expression", "a blank expression"],
                "open mouth": ["an open mouth", "her mouth open"], "wink": ["a wink", "a playful wink"],
                "closed-eye happy": ["a happy closed-eye smile", "eyes closed in a happy smile"],
                "surprised": ["a surprised look", "a surprised expression"]}
EN_SKIN = {"fair": ["fair skin", "pale skin"], "light": ["light skin"], "tan": ["tan skin", "tanned skin"],
           "dark": ["dark skin", "brown skin"]}
EN_FACE = {"glasses": ["glasses", "round glasses", "eyeglasses"], "sunglasses": ["sunglasses", "shades"],
           "mask": ["a face mask", "a mask"]}
EN_HEAD = {"hat": ["a hat", "a little top hat", "a tiny hat"], "ribbon": ["a ribbon", "a hair bow", "a bow"],
           "cat ears": ["cat ears", "kitty ears"], "flower": ["a flower in her hair", "a hair flower"],
           "headphones": ["headphones"]}
EN_COLLAR = ["a {c} collar", "a {c} top", "{c} clothes", "a {c} shirt"]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _join_en(items: list[str], rng: np.random.Generator) -> str:
    if len(items) <= 1:
        return "".join(items)
    last = ", and " if rng.random() < 0.3 and len(items) > 2 else " and "
    return ", ".join(items[:-1]) + last + items[-1]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _bg_en(v: str, rng) -> str:
    if v == "transparent":
        return _pick(rng, ["on a transparent background", "with a transparent background", "with no background"])
    two = " and " in v
    return _pick(rng, [f"on a {v} background", f"against a {v} background"]
                 + ([f"on a two-tone {v} background"] if two else [f"on a plain {v} background"]))


def en_phrase(fam: str, v, rng: np.random.Generator) -> tuple[str, str]:
    """(role, phrase) for one stated attribute; role is 'with', 'wear' or 'bg'."""
    if fam == "hair_color":
        return "with", f"{v} hair"
    if fam == "hairstyle":
        return "with", _pick(rng, EN_STYLE_WITH[v])
    if fam == "bangs":
        return "with", _pick(rng, EN_BANGS[v])
    if fam == "eye_color":
        return "with", f"{v} eyes"
    if fam == "eye_shape":
        return "with", _pick(rng, EN_EYE_SHAPE[v])
    if fam == "expression":
        return "with", _pick(rng, EN_EXPR_WITH[v])
    if fam == "blush":
        return "with", _pick(rng, ["rosy cheeks", "blushing cheeks", "a blush"] if v == "yes" else ["no blush"])
    if fam == "skin_tone":
        return "with", _pick(rng, EN_SKIN[v])
    if fam == "face_accessory":
        if v == "none":
            return "with", _pick(rng, ["no glasses or mask", "nothing on her face"])
        return "wear", _pick(rng, EN_FACE[v])
    if fam == "head_accessory":
        if not v:
            return "with", _pick(rng, ["no head accessories", "no hat or hair accessories"])
        return "wear", _join_en([_pick(rng, EN_HEAD[x]) for x in v], rng)
    if fam == "collar_color":
        return "wear", _pick(rng, EN_COLLAR).format(c=v)
    if fam == "background":
        return "bg", _bg_en(v, rng)
    raise KeyError(fam)


def en_tag(fam: str, v, rng) -> str:
    role, text = en_phrase(fam, v, rng)
    for art in ("a ", "an "):
        if text.startswith(art):
            text = text[len(art):]
    if role == "bg":
        text = (f"{v} background" if rng.random() < 0.7 else text)
    return text


def _fusions(states: dict, rng) -> tuple[bool, bool]:
    """Whether to say hair colour+style and eye colour+shape as one phrase ("pink twin tails")."""
    hair = {"hair_color", "hairstyle"} <= states.keys() and rng.random() < 0.6
    eyes = {"eye_color", "eye_shape"} <= states.keys() and rng.random() < 0.6
    return hair, eyes


def _fuse_en(states: dict, order: list[str], rng) -> list[tuple[str, str]]:
    """Turn the ordered families into (role, phrase), fusing hair colour+style and eye colour+shape."""
    out: list[tuple[str, str]] = []
    done: set[str] = set()
    fuse_hair, fuse_eyes = _fusions(states, rng)
    for fam in order:
        if fam in done:
            continue
        v = states[fam]
        if fam in ("hair_color", "hairstyle") and fuse_hair:
            c, s = states["hair_color"], states["hairstyle"]
            if EN_STYLE_IN[s] and rng.random() < 0.4:
                out.append(("with", f"{c} hair in {EN_STYLE_IN[s]}"))
            else:
                out.append(("with", _pick(rng, EN_STYLE_FUSED[s]).format(c=c)))
            done |= {"hair_color", "hairstyle"}
        elif fam in ("eye_color", "eye_shape") and fuse_eyes:
            out.append(("with", f"{EN_EYE_SHAPE_ADJ[states['eye_shape']]} {states['eye_color']} eyes"))
            done |= {"eye_color", "eye_shape"}
        else:
            out.append(en_phrase(fam, v, rng))
            done.add(fam)
    return out



# ----------------------------------------------------------------------------- Chinese
ZH_STYLE = {"short": ["短发"], "long straight": ["长直发", "黑长直式的长直发"], "bob": ["波波头", "短波波头"],
            "twin tails": ["双马尾"], "ponytail": ["单马尾", "马尾辫"], "drills": ["螺旋卷", "螺旋卷发", "钻头卷"],
            "bun": ["丸子头", "包子头"]}
ZH_STYLE_VERB = {"short": "留着短发", "long straight": "留着长直发", "bob": "留着波波头", "twin tails": "扎着双马尾",
                 "ponytail": "扎着马尾辫", "drills": "留着螺旋卷发", "bun": "梳着丸子头"}
ZH_BANGS = {"straight": ["齐刘海", "平刘海"], "side-swept": ["斜刘海"], "parted": ["中分刘海", "中分"]}
ZH_EYE_SHAPE = {"round": ["圆圆的眼睛", "大圆眼"], "sharp": ["锐利的眼睛", "上挑的细长眼睛"],
                "sleepy": ["困倦的眼睛", "半睁的睡眼"]}
ZH_EYE_SHAPE_MOD = {"round": "圆圆的", "sharp": "锐利的", "sleepy": "困倦的"}
ZH_EXPR = {"smile": ["微笑着", "面带微笑"], "neutral": ["面无表情", "表情平静"], "open mouth": ["张着嘴", "嘴巴张开"],
           "wink": ["眨着一只眼", "俏皮地眨眼"], "closed-eye happy": ["眯眼笑", "开心地眯着眼笑"],
           "surprised": ["一脸惊讶", "惊讶的表情"]}
ZH_SKIN = {"fair": ["皮肤白皙", "白皙的皮肤"], "light": ["浅色皮肤"], "tan": ["小麦色皮肤", "小麦色的肌肤"],
           "dark": ["深色皮肤", "深色的肌肤"]}
ZH_FACE = {"glasses": ["戴着眼镜", "戴眼镜", "戴着圆框眼镜"], "sunglasses": ["戴着墨镜", "戴墨镜"],
           "mask": ["戴着口罩", "戴口罩"], "none": ["脸上没有配饰"]}
ZH_HEAD = {"hat": ["戴着帽子", "戴着小礼帽"], "ribbon": ["系着蝴蝶结", "头上有蝴蝶结"], "cat ears": ["有猫耳", "长着猫耳朵"],
           "flower": ["头上戴着花", "头戴小花"], "headphones": ["戴着耳机", "挂着耳机"]}
ZH_HEAD_NOUN = {"hat": "帽子", "ribbon": "蝴蝶结", "cat ears": "猫耳", "flower": "小花", "headphones": "耳机"}


def _zh_color(fam: str, v: str) -> str:
    return ZH_NAMES[fam][v]


def zh_phrase(fam: str, v, rng: np.random.Generator) -> str:
    """A Chinese phrase stating one attribute, usable in a list or before 的."""
    if fam == "hair_color":
        c = _zh_color(fam, v)
        return _pick(rng, [f"{c}头发", f"{c}的头发", f"{c[0]}发"])
    if fam == "hairstyle":
        return _pick(rng, ZH_STYLE[v] + [ZH_STYLE_VERB[v]])
    if fam == "bangs":
        return _pick(rng, ZH_BANGS[v])
    if fam == "eye_color":
        c = _zh_color(fam, v)
        return _pick(rng, [f"{c}眼睛", f"{c}的眼睛", f"{c[0]}眼睛", f"{c[0]}色瞳孔"])
    if fam == "eye_shape":
        return _pick(rng, ZH_EYE_SHAPE[v])
    if fam == "expression":
        return _pick(rng, ZH_EXPR[v])
    if fam == "blush":
        return _pick(rng, ["脸红红的", "带着腮红", "脸颊泛红"] if v == "yes" else ["没有腮红"])
    if fam == "skin_tone":
        return _pick(rng, ZH_SKIN[v])
    if fam == "face_accessory":
        return _pick(rng, ZH_FACE[v])
    if fam == "head_accessory":
        if not v:
            return _pick(rng, ["没有头饰", "头上没有配饰"])
        if len(v) == 2 and rng.random() < 0.5:
            return f"戴着{ZH_HEAD_NOUN[v[0]]}和{ZH_HEAD_NOUN[v[1]]}"
        return "，".join(_pick(rng, ZH_HEAD[x]) for x in v)
    if fam == "collar_color":
        c = _zh_color(fam, v)
        return _pick(rng, [f"{c}衣领", f"穿着{c}衣服", f"{c}上衣"])
    if fam == "background":
        if v == "transparent":
            return _pick(rng, ["透明背景", "没有背景"])
        c = ZH_NAMES[fam][v]
        if " and " in v:
            return _pick(rng, [f"{c}双色背景", f"{c}拼色背景"])
        return _pick(rng, [f"{c}背景", f"纯{c}背景"])
    raise KeyError(fam)


def _fuse_zh(states: dict, order: list[str], rng) -> list[str]:
    out, done = [], set()
    fuse_hair, fuse_eyes = _fusions(states, rng)
    for fam in order:
        if fam in done:
            continue
        if fam in ("hair_color", "hairstyle") and fuse_hair:
            c = ZH_NAMES["hair_color"][states["hair_color"]]
            out.append(f"{_pick(rng, [c, c[0]])}{_pick(rng, ZH_STYLE[states['hairstyle']])}")
            done |= {"hair_color", "hairstyle"}
        elif fam in ("eye_color", "eye_shape") and fuse_eyes:
            c = ZH_NAMES["eye_color"][states["eye_color"]]
            out.append(f"{ZH_EYE_SHAPE_MOD[states['eye_shape']]}{c}眼睛")
            done |= {"eye_color", "eye_shape"}
        else:
            out.append(zh_phrase(fam, states[fam], rng))
            done.add(fam)
    return out



# ----------------------------------------------------------------------------- held out
def _heldout_en_request(states, order, rng) -> str:
    parts = [f"a {states['background']} background" if r == "bg" and states["background"] != "transparent"
             else ("a transparent background" if r == "bg" else p) for r, p in _fuse_en(states, order, rng)]
    return f"Please make me an avatar: {' plus '.join(parts)}."


def _heldout_en_has(states, order, rng) -> str:
    parts = _fuse_en(states, order, rng)
    has = [p for r, p in parts if r == "with"]
    wears = [p for r, p in parts if r == "wear"]
    bgs = [p for r, p in parts if r == "bg"]
    bits = []
    if has:
        bits.append("that has " + " and ".join(has))
    if wears:
        bits.append("that wears " + " and ".join(wears))
    if bgs:
        bits.append("shown " + bgs[0])
    return "I want a little character " + ", ".join(bits)


def _heldout_en_slash(states, order, rng) -> str:
    return "Chibi portrait -- " + " / ".join(en_tag(f, states[f], rng) for f in order)


def _heldout_zh_request(states, order, rng) -> str:
    return f"请帮我画一个角色，{'，'.join(_fuse_zh(states, order, rng))}。"


def _heldout_zh_want(states, order, rng) -> str:
    return f"我想要这样的头像：{'；'.join(_fuse_zh(states, order, rng))}"


def _heldout_zh_small(states, order, rng) -> str:
    return f"画个Q版小人儿，要{'、'.join(_fuse_zh(states, order, rng))}"


HELDOUT_EN = [_heldout_en_request, _heldout_en_has, _heldout_en_slash]
HELDOUT_ZH = [_heldout_zh_request, _heldout_zh_want, _heldout_zh_small]


def make_eval_caption(attrs_subset: dict, lang: str, rng: np.random.Generator) -> str:
    """Prompt stating exactly ``attrs_subset`` through a held-out template (lang "en" or "zh")."""
    if not attrs_subset:
        raise ValueError("attrs_subset must state at least one attribute")
    order = [list(attrs_subset)[i] for i in rng.permutation(len(attrs_subset))]
    templates = {"en": HELDOUT_EN, "zh": HELDOUT_ZH}[lang]
    return _pick(rng, templates)(attrs_subset, order, rng)
