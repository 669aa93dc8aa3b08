"""Attribute vocabulary of the procedural avatars, with Chinese names and a sampler.

This dict is the single source of truth: the renderer draws it, captions describe it,
the model manifest stores it and the evaluation checks generated avatars against it.

Every family is single-valued except ``head_accessory``, which is a *list* of 0-2 values
(``[]`` means "none"; the string "none" is only in the vocabulary so that prompts and
classifiers can name the empty case).
"""

from __future__ import annotations

import numpy as np

ATTRIBUTES: dict[str, list[str]] = {
    "hair_color": ["black", "brown", "blonde", "silver", "white", "red", "orange",
                   "pink", "purple", "blue", "aqua", "green"],
    "hairstyle": ["short", "long straight", "bob", "twin tails", "ponytail", "drills", "bun"],
    "bangs": ["straight", "side-swept", "parted"],
    "eye_color": ["brown", "red", "orange", "gold", "green", "aqua", "blue", "purple",
                  "pink", "grey"],
    "eye_shape": ["round", "sharp", "sleepy"],
    "expression": ["smile", "neutral", "open mouth", "wink", "closed-eye happy", "surprised"],
    "blush": ["yes", "no"],
    "skin_tone": ["fair", "light", "tan", "dark"],
    "face_accessory": ["glasses", "sunglasses", "mask", "none"],
    "head_accessory": ["hat", "ribbon", "cat ears", "flower", "headphones", "none"],
    "collar_color": ["white", "black", "red", "blue", "green", "yellow", "pink", "purple"],
    "background": ["transparent", "pink", "yellow", "mint", "sky blue", "lavender",
                   "pink and sky blue", "yellow and mint", "lavender and pink"],
}

FAMILIES: list[str] = list(ATTRIBUTES)
MULTI_VALUED = "head_accessory"
# The families whose values are colour words (a caption naming two must bind each to the right one).
COLOR_FAMILIES = ("hair_color", "eye_color", "collar_color")
MAX_HEAD_ACCESSORIES = 2
HEAD_ITEMS: list[str] = [v for v in ATTRIBUTES["head_accessory"] if v != "none"]

# Pairs that would occupy the same spot on the head, so they never appear together.
HEAD_CONFLICTS: set[frozenset[str]] = {
    frozenset({"cat ears", "hat"}),
    frozenset({"cat ears", "ribbon"}),
    frozenset({"headphones", "flower"}),
}
HEAD_PAIRS: list[tuple[str, str]] = [
    (a, b) for i, a in enumerate(HEAD_ITEMS) for b in HEAD_ITEMS[i + 1:]
    if frozenset({a, b}) not in HEAD_CONFLICTS
]
# Probability of 0, 1 and 2 head accessories.
HEAD_COUNT_P = (0.30, 0.45, 0.25)

_COLOURS_ZH = {
    "black": "黑色", "brown": "棕色", "blonde": "金色", "silver": "银色", "white": "白色",
    "red": "红色", "orange": "橙色", "pink": "粉色", "purple": "紫色", "blue": "蓝色",
    "aqua": "青色", "green": "绿色", "gold": "金色", "grey": "灰色", "yellow": "黄色",
}

ZH_NAMES: dict[str, dict[str, str]] = {
    "hair_color": {v: _COLOURS_ZH[v] for v in ATTRIBUTES["hair_color"]},
    "hairstyle": {"short": "短发", "long straight": "长直发", "bob": "波波头",
                  "twin tails": "双马尾", "ponytail": "单马尾", "drills": "螺旋卷",
                  "bun": "丸子头"},
    "bangs": {"straight": "齐刘海", "side-swept": "斜刘海", "parted": "中分刘海"},
    "eye_color": {v: _COLOURS_ZH[v] for v in ATTRIBUTES["eye_color"]},
    "eye_shape": {"round": "圆眼", "sharp": "锐利的眼睛", "sleepy": "困倦的眼睛"},
    "expression": {"smile": "微笑", "neutral": "面无表情", "open mouth": "张着嘴",
                   "wink": "眨眼", "closed-eye happy": "眯眼笑", "surprised": "惊讶"},
    "blush": {"yes": "脸红", "no": "不脸红"},
    "skin_tone": {"fair": "白皙", "light": "浅色", "tan": "小麦色", "dark": "深色"},
    "face_accessory": {"glasses": "眼镜", "sunglasses": "墨镜", "mask": "口罩", "none": "无"},
    "head_accessory": {"hat": "帽子", "ribbon": "蝴蝶结", "cat ears": "猫耳", "flower": "花",
                       "headphones": "耳机", "none": "无"},
    "collar_color": {v: _COLOURS_ZH[v] for v in ATTRIBUTES["collar_color"]},
    "background": {"transparent": "透明", "pink": "粉色", "yellow": "黄色", "mint": "薄荷绿",
                   "sky blue": "天蓝色", "lavender": "淡紫色",
                   "pink and sky blue": "粉色和天蓝色", "yellow and mint": "黄色和薄荷绿",
                   "lavender and pink": "淡紫色和粉色"},
}

# A plain avatar used as the base of contact sheets and tests.
NEUTRAL_ATTRIBUTES: dict = {
    "hair_color": "brown", "hairstyle": "short", "bangs": "straight", "eye_color": "blue",
    "eye_shape": "round", "expression": "smile", "blush": "yes", "skin_tone": "light",
    "face_accessory": "none", "head_accessory": [], "collar_color": "white",
    "background": "transparent",
}


def sample_head_accessories(rng: np.random.Generator) -> list[str]:
    """0, 1 or 2 non-conflicting accessories, in vocabulary order."""
    n = int(rng.choice(3, p=HEAD_COUNT_P))
    if n == 0:
        return []
    if n == 1:
        return [HEAD_ITEMS[int(rng.integers(len(HEAD_ITEMS)))]]
    return list(HEAD_PAIRS[int(rng.integers(len(HEAD_PAIRS)))])


def sample_attributes(rng: np.random.Generator) -> dict:
    """Draw every single-valued family uniformly and the head accessories as above."""
    attrs: dict = {}
    for fam, values in ATTRIBUTES.items():
        if fam == MULTI_VALUED:
            attrs[fam] = sample_head_accessories(rng)
        else:
            attrs[fam] = values[int(rng.integers(len(values)))]
    return attrs


def visible_families(attrs: dict) -> set[str]:
    """Families that can actually be seen in the render of ``attrs``.

    Sunglasses and closed happy eyes hide the eyes; a mask hides the mouth, so the
    mouth-only expressions (smile, neutral, open mouth) cannot be told apart under it.
    Captions only state visible families; evaluation should only score those.
    """
    fams = set(FAMILIES)
    face, expression = attrs.get("face_accessory"), attrs.get("expression")  # a judge's partial reading too
    if face == "sunglasses" or expression == "closed-eye happy":
        fams -= {"eye_color", "eye_shape"}
    if face == "mask" and expression in ("smile", "neutral", "open mouth"):
        fams.discard("expression")
    return fams


def validate_attributes(attrs: dict) -> None:
    """Raise ValueError when ``attrs`` is not a complete, valid attribute dict."""
    for fam, values in ATTRIBUTES.items():
        if fam not in attrs:
            raise ValueError(f"missing attribute family {fam!r}")
        v = attrs[fam]
        if fam == MULTI_VALUED:
            if not isinstance(v, list) or len(v) > MAX_HEAD_ACCESSORIES or len(set(v)) != len(v):
                raise ValueError(f"head_accessory must be a list of 0-2 distinct values, got {v!r}")
            for item in v:
                if item not in HEAD_ITEMS:
                    raise ValueError(f"unknown head_accessory {item!r}")
            if len(v) == 2 and frozenset(v) in HEAD_CONFLICTS:
                raise ValueError(f"head accessories {v!r} cannot be worn together")
        elif v not in values:
            raise ValueError(f"unknown {fam} value {v!r}")


def combination_count() -> int:
    """Number of distinct attribute combinations the sampler can produce."""
    n_head = 1 + len(HEAD_ITEMS) + len(HEAD_PAIRS)
    total = n_head
    for fam, values in ATTRIBUTES.items():
        if fam != MULTI_VALUED:
            total *= len(values)
    return total
