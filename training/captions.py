"""English and Chinese captions for procedural avatars.

Each caption states a random subset of the *visible* attributes (one up to all of them) in
a random order, through many templates and synonyms, and records exactly what it states:
``{"text": str, "states": {family: value}}``. For ``head_accessory`` the stated value is a
list: the accessories mentioned (all of them are worn), or ``[]`` for "no head accessories".

A few template styles are held out from training (``HELDOUT_*``) and only reachable through
:func:`make_eval_caption`, so evaluation prompts are worded in ways the model never saw.
"""

from __future__ import annotations

import numpy as np

from moe_avatar.training.attributes import ATTRIBUTES, COLOR_FAMILIES, MULTI_VALUED, ZH_NAMES, visible_families

# ----------------------------------------------------------------------------- English
EN_SUBJECTS = ["girl", "chibi girl", "anime girl", "cute girl", "chibi avatar", "chibi character",
               "moe girl", "little girl", "avatar", "anime avatar", "cute chibi", "character", "game character",
               "game avatar", "profile picture"]
EN_PERSONS = ["girl", "anime girl", "cute girl", "moe girl", "little girl"]

EN_STYLE_WITH = {"short": ["short hair"], "long straight": ["long straight hair", "long sleek hair"],
                 "bob": ["a bob cut", "bob hair", "a bob haircut"],
                 "twin tails": ["twin tails", "twintails", "pigtails"], "ponytail": ["a ponytail", "a side ponytail"],
                 "drills": ["drill curls", "ringlet drills", "drill hair", "spiral curls"],
                 "bun": ["a hair bun", "a bun", "a top bun"]}
EN_STYLE_ADJ = {"short": "short-haired", "long straight": "long-haired", "bob": "bob-haired",
                "twin tails": "twin-tailed", "ponytail": "ponytailed", "drills": "drill-haired",
                "bun": "bun-haired"}
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
EN_EXPR_ADJ = {"smile": "smiling", "neutral": "expressionless", "open mouth": "open-mouthed",
               "wink": "winking", "closed-eye happy": "happily beaming", "surprised": "surprised"}
EN_SKIN = {"fair": ["fair skin", "pale skin"], "light": ["light skin"], "tan": ["tan skin", "tanned skin"],
           "dark": ["dark skin", "brown skin"]}
EN_FACE = {"glasses": ["glasses", "round glasses", "eyeglasses"], "sunglasses": ["sunglasses", "shades"],
           "mask": ["a face mask", "a mask"]}
EN_HEAD = {"hat": ["a hat", "a little top hat", "a tiny hat"], "ribbon": ["a ribbon", "a hair bow", "a bow"],
           "cat ears": ["cat ears", "kitty ears"], "flower": ["a flower in her hair", "a hair flower"],
           "headphones": ["headphones"]}
EN_COLLAR = ["a {c} collar", "a {c} top", "{c} clothes", "a {c} shirt"]
EN_KEY = {"hair_color": ["hair", "hair color"], "hairstyle": ["hairstyle", "hair style"], "bangs": ["bangs"],
          "eye_color": ["eyes", "eye color"], "eye_shape": ["eye shape"], "expression": ["expression"],
          "blush": ["blush"], "skin_tone": ["skin", "skin tone"], "face_accessory": ["face"],
          "head_accessory": ["accessories", "head"], "collar_color": ["collar", "outfit"],
          "background": ["background", "bg"]}
WEAR_FAMILIES = {"face_accessory", "head_accessory", "collar_color"}


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


def en_adjective(fam: str, v) -> str | None:
    """Adjective before the noun ("pink-haired girl"), where the family has one."""
    if fam == "hair_color":
        return f"{v}-haired"
    if fam == "hairstyle":
        return EN_STYLE_ADJ[v]
    if fam == "eye_color":
        return f"{v}-eyed"
    if fam == "expression":
        return EN_EXPR_ADJ[v]
    if fam == "blush":
        return "blushing" if v == "yes" else None
    if fam == "skin_tone":
        return f"{v}-skinned"
    return None


def en_tag(fam: str, v, rng) -> str:
    role, text = en_phrase(fam, v, rng)
    for art in ("a ", "an "):
        if text.startswith(art):
            text = text[len(art):]
    if role == "bg":
        text = (f"{v} background" if rng.random() < 0.7 else text)
    return text


def en_kv(fam: str, v, rng) -> str:
    if fam == MULTI_VALUED:
        v = ", ".join(v) if v else "none"
    return f"{_pick(rng, EN_KEY[fam])}: {v}"


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


def _natural_en(states: dict, order: list[str], rng) -> str:
    adjs: list[str] = []
    rest = []
    for fam in order:
        adj = en_adjective(fam, states[fam])
        if adj and len(adjs) < 2 and rng.random() < 0.35:
            adjs.append(adj)
        else:
            rest.append(fam)
    parts = _fuse_en(states, rest, rng)
    withs = [p for r, p in parts if r == "with"]
    wears = [p for r, p in parts if r == "wear"]
    bgs = [p for r, p in parts if r == "bg"]
    lead = _pick(rng, ["", "", "cute chibi avatar of ", "portrait of ", "chibi drawing of "])
    nouns = EN_PERSONS if lead else EN_SUBJECTS
    noun = " ".join(adjs + [_pick(rng, nouns)])
    text = f"{lead}{_article(noun)} {noun}"
    if withs:
        text += " with " + _join_en(withs, rng)
    if wears:
        text += (", wearing " if withs else " wearing ") + _join_en(wears, rng)
    if bgs:
        text += " " + bgs[0]
    return text


def _tags_en(states: dict, order: list[str], rng) -> str:
    tags = [en_tag(f, states[f], rng) for f in order]
    if rng.random() < 0.4:
        tags.insert(0 if rng.random() < 0.5 else len(tags), _pick(rng, ["chibi", "1girl", "cute", "moe", "chibi girl"]))
    return _pick(rng, [", ", ", ", "; "]).join(tags)


def _kv_en(states: dict, order: list[str], rng) -> str:
    body = _pick(rng, [", ", "; "]).join(en_kv(f, states[f], rng) for f in order)
    return _pick(rng, [f"{_pick(rng, EN_SUBJECTS)}, {body}", body, f"{_pick(rng, EN_SUBJECTS)} ({body})"])


def _sentences_en(states: dict, order: list[str], rng) -> str:
    parts = _fuse_en(states, order, rng)
    withs = [p for r, p in parts if r == "with"]
    wears = [p for r, p in parts if r == "wear"]
    bgs = [p for r, p in parts if r == "bg"]
    subj = _pick(rng, ["she", "the girl", "this chibi"])
    out = []
    if withs:
        out.append(f"{subj} has {_join_en(withs, rng)}.")
    if wears:
        out.append(f"{'she' if out else subj} is wearing {_join_en(wears, rng)}.")
    if bgs:
        out.append(f"drawn {bgs[0]}.")
    return " ".join(o[0].upper() + o[1:] for o in out)


def _request_en(states: dict, order: list[str], rng) -> str:
    """"draw a pink-haired girl with ..., please": a request around a description (what users type)."""
    body = _natural_en(states, order, rng)
    verb = _pick(rng, ["draw", "generate", "make", "give me", "can you draw", "design", "create"])
    return f"{verb} {body}{_pick(rng, ['', '.', ', please', ' for my game', '!'])}"


EN_TEMPLATES = [_natural_en, _natural_en, _natural_en, _tags_en, _tags_en, _kv_en, _sentences_en, _request_en]

# ----------------------------------------------------------------------------- Chinese
# Subjects include the words games use ("角色" character, "形象" figure): without them every 色 the
# captions ever showed was part of a colour word, and "角色" read as one (chibi-64 0.10.0's MODEL_CARD).
ZH_SUBJECTS = ["女孩", "少女", "Q版女孩", "萌妹", "小女孩", "萌版头像", "二次元女孩", "动漫少女", "Q版小人",
               "角色", "游戏角色", "人物", "虚拟形象", "头像"]
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
ZH_KEY = {"hair_color": "发色", "hairstyle": "发型", "bangs": "刘海", "eye_color": "瞳色", "eye_shape": "眼型",
          "expression": "表情", "blush": "腮红", "skin_tone": "肤色", "face_accessory": "面部配饰",
          "head_accessory": "头饰", "collar_color": "衣领", "background": "背景"}


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


def zh_kv(fam: str, v) -> str:
    if fam == MULTI_VALUED:
        val = "、".join(ZH_NAMES[fam][x] for x in v) if v else "无"
    else:
        val = ZH_NAMES[fam][v]
        if fam == "blush":
            val = "有" if v == "yes" else "无"
    return f"{ZH_KEY[fam]}：{val}"


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


def _lead_zh(states: dict, order: list[str], rng) -> str:
    """"粉色双马尾的女孩，蓝眼睛，戴眼镜" — first phrase modifies the noun, the rest follow."""
    parts = _fuse_zh(states, order, rng)
    head = f"{parts[0]}的{_pick(rng, ZH_SUBJECTS)}"
    return "，".join([head] + parts[1:])


def _modifier_zh(states: dict, order: list[str], rng) -> str:
    """"一个有着粉色头发、蓝眼睛、戴眼镜的女孩"."""
    parts = _fuse_zh(states, order, rng)
    lead = _pick(rng, ["一个", "一位", "", "画一个"])
    return f"{lead}{_pick(rng, ['', '有着'])}{'、'.join(parts)}的{_pick(rng, ZH_SUBJECTS)}"


def _tags_zh(states: dict, order: list[str], rng) -> str:
    parts = _fuse_zh(states, order, rng)
    body = _pick(rng, ["，", "、", " "]).join(parts)
    return _pick(rng, [body, f"{_pick(rng, ZH_SUBJECTS)}：{body}", f"{_pick(rng, ZH_SUBJECTS)}，{body}"])


def _kv_zh(states: dict, order: list[str], rng) -> str:
    body = _pick(rng, ["；", "，"]).join(zh_kv(f, states[f]) for f in order)
    return _pick(rng, [body, f"{_pick(rng, ZH_SUBJECTS)}（{body}）"])


def _request_zh(states: dict, order: list[str], rng) -> str:
    """"帮我生成一个萌妹，粉色头发，蓝眼睛，谢谢": a request, then the attributes as a list."""
    parts = _fuse_zh(states, order, rng)
    verb = _pick(rng, ["帮我生成", "生成", "设计", "来", "给我画", "做"])
    sep = _pick(rng, ["，", "：", "。"])
    return f"{verb}{_pick(rng, ['一个', '一位', '个'])}{_pick(rng, ZH_SUBJECTS)}{sep}{'，'.join(parts)}" \
        f"{_pick(rng, ['', '。', '，谢谢', '，可爱一点', '！'])}"


ZH_TEMPLATES = [_lead_zh, _lead_zh, _modifier_zh, _modifier_zh, _tags_zh, _kv_zh, _request_zh]

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

# ----------------------------------------------------------------------------- API
def _is_none_value(fam: str, v) -> bool:
    return (fam == "blush" and v == "no") or (fam == "face_accessory" and v == "none") or \
        (fam == MULTI_VALUED and not v)


def choose_states(attrs: dict, rng: np.random.Generator) -> dict:
    """A random non-empty subset of the visible attributes, with values true of ``attrs``."""
    fams = sorted(visible_families(attrs))
    # half short (1-4 attributes), half anywhere from 1 to all
    hi = min(4, len(fams)) if rng.random() < 0.5 else len(fams)
    k = int(rng.integers(1, hi + 1))
    chosen = [fams[i] for i in rng.permutation(len(fams))[:k]]
    states = {}
    for fam in chosen:
        v = attrs[fam]
        if _is_none_value(fam, v) and rng.random() < 0.7:
            continue  # mention "no X" only now and then
        if fam == MULTI_VALUED and len(v) == 2 and rng.random() < 0.25:
            v = [v[int(rng.integers(2))]]  # mention one of the two
        states[fam] = list(v) if fam == MULTI_VALUED else v
    if not states:
        states["hair_color"] = attrs["hair_color"]
    return states


def _caption(attrs: dict, rng: np.random.Generator, templates) -> dict:
    states = choose_states(attrs, rng)
    order = [f for f in states]  # choose_states already shuffled
    text = _pick(rng, templates)(states, order, rng)
    return {"text": text, "states": states}


def make_captions(attrs: dict, rng: np.random.Generator, n_en: int = 3, n_zh: int = 3) -> dict:
    """``{"en": [caption, ...], "zh": [...]}`` with captions as ``{"text", "states"}``."""
    return {"en": [_caption(attrs, rng, EN_TEMPLATES) for _ in range(n_en)],
            "zh": [_caption(attrs, rng, ZH_TEMPLATES) for _ in range(n_zh)]}


def make_eval_caption(attrs_subset: dict, lang: str, rng: np.random.Generator) -> str:
    """Prompt stating exactly ``attrs_subset`` through a held-out template (lang "en" or "zh")."""
    if not attrs_subset:
        raise ValueError("attrs_subset must state at least one attribute")
    order = [list(attrs_subset)[i] for i in rng.permutation(len(attrs_subset))]
    templates = {"en": HELDOUT_EN, "zh": HELDOUT_ZH}[lang]
    return _pick(rng, templates)(attrs_subset, order, rng)


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
    """A training-template caption of :func:`swap_colors` (states), in ``lang``; None when nothing swaps."""
    new = swap_colors(states, rng)
    if new is None:
        return None
    order = [list(new)[i] for i in rng.permutation(len(new))]
    return _pick(rng, EN_TEMPLATES if lang == "en" else ZH_TEMPLATES)(new, order, rng)
