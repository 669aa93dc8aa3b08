"""Words of the training caption grammar (``training.captions``): data only, no logic.

Why tables: a player's prompt is a few attribute phrases in some frame ("make me …",
"帮我画一个…的女孩", a tag list). The grammar composes frames from these phrases, so the
words a player might use for one value live in one place, and every word here names exactly
one attribute value (a word that could mean two values, or a value the renderer does not
draw, must not be added: captions must stay true of their render).

Conventions: English phrases are lower case; "{c}" is where a colour word goes. English
phrases carry their article ("a bob") where the phrase needs one after "with"; tag lists
drop it. Slots say where a phrase fits: ``np`` after "with"/"has" and in lists, ``adj``
before the subject noun or after "is", ``post`` after the subject noun ("a girl wearing
red"). Chinese slots: ``n`` noun phrase (after 有, before 的 or the subject), ``v`` verb
phrase (before 的, or after the subject).
"""

# ----------------------------------------------------------------------------- English
# Colour words per family and value, canonical first. "golden hair" is blonde but "golden
# eyes" are gold: a colour word only has a meaning next to its noun.
_EN_COLORS = {"black": ["black"], "brown": ["brown"], "white": ["white"], "red": ["red"], "orange": ["orange"],
              "pink": ["pink"], "purple": ["purple", "violet"], "blue": ["blue"], "green": ["green"],
              "yellow": ["yellow"]}
EN_COLORS = {
    "hair_color": {**_EN_COLORS, "black": ["black", "jet black"], "blonde": ["blonde", "blond", "golden", "yellow"],
                   "silver": ["silver", "grey", "gray", "silvery"], "white": ["white", "snow white"],
                   "red": ["red", "crimson"], "orange": ["orange", "ginger"], "pink": ["pink", "pastel pink"],
                   "aqua": ["aqua", "teal", "cyan", "turquoise"]},
    "eye_color": {**_EN_COLORS, "red": ["red", "crimson", "ruby"], "gold": ["gold", "golden", "amber"],
                  "aqua": ["aqua", "teal", "cyan", "turquoise"], "grey": ["grey", "gray"],
                  "green": ["green", "emerald"]},
    "collar_color": _EN_COLORS,
    "background": {"pink": ["pink"], "yellow": ["yellow"], "mint": ["mint", "mint green"],
                   "sky blue": ["sky blue", "light blue"], "lavender": ["lavender", "light purple"]},
}
EN_TWO_TONE = ["{a} and {b}", "{a} and {b} two-tone", "{a} and {b} split"]

# Hairstyles are either a modifier of "hair" ("long purple hair") or a noun of their own
# ("pink twin tails"); COUNTABLE nouns take "a".
EN_STYLE_MOD = {"short": ["short"], "long straight": ["long", "long straight", "straight long", "long sleek"]}
EN_STYLE_NOUN = {"bob": ["bob", "bob cut", "bob haircut"], "twin tails": ["twin tails", "twintails", "pigtails"],
                 "ponytail": ["ponytail", "pony tail", "high ponytail"],
                 "drills": ["drill curls", "drills", "ringlets", "drill hair"], "bun": ["bun", "hair bun", "odango"]}
EN_STYLE_COUNTABLE = {"bob", "ponytail", "bun"}
EN_STYLE_ADJ = {"short": ["short-haired"], "long straight": ["long-haired"], "twin tails": ["twin-tailed"],
                "ponytail": ["ponytailed"], "bob": ["bob-cut"]}
EN_BANGS = {"straight": ["straight bangs", "blunt bangs", "a blunt fringe"],
            "side-swept": ["side-swept bangs", "side bangs", "swept bangs"],
            "parted": ["parted bangs", "center-parted bangs", "a middle part"]}
EN_SHAPE_MOD = {"round": ["round", "big round", "wide round"], "sharp": ["sharp", "narrow", "sharp narrow"],
                "sleepy": ["sleepy", "droopy", "tired"]}
EN_SHAPE_ADJ = {"round": ["round-eyed"], "sharp": ["sharp-eyed"], "sleepy": ["sleepy-eyed", "sleepy"]}

# Single-valued families without colour: value -> {slot: [phrases]}.
EN_FORMS = {
    "expression": {
        "smile": {"np": ["a smile", "a big smile", "a grin", "a happy smile"], "adj": ["smiling", "grinning", "happy"]},
        "neutral": {"np": ["a neutral expression", "a blank face", "a straight face", "a deadpan face", "a poker face"],
                    "adj": ["expressionless", "deadpan", "emotionless"]},
        "open mouth": {"np": ["an open mouth", "her mouth open", "mouth open"], "adj": ["open-mouthed"]},
        "wink": {"np": ["a wink"], "adj": ["winking"]},
        "closed-eye happy": {"np": ["a closed-eye smile", "happy closed eyes", "eyes closed in a smile"],
                             "post": ["smiling with her eyes closed", "smiling with closed eyes"]},
        "surprised": {"np": ["a surprised look", "a shocked face", "a surprised face"],
                      "adj": ["surprised", "shocked", "astonished"]}},
    "blush": {"yes": {"np": ["rosy cheeks", "a blush", "blush", "flushed cheeks"], "adj": ["blushing", "flustered"]},
              "no": {"np": ["no blush"], "post": ["not blushing", "without blush"]}},
    "skin_tone": {"fair": {"np": ["fair skin", "pale skin", "porcelain skin"], "adj": ["pale", "fair-skinned"]},
                  "light": {"np": ["light skin"], "adj": ["light-skinned"]},
                  "tan": {"np": ["tan skin", "tanned skin", "sun-kissed skin"], "adj": ["tanned", "tan"]},
                  "dark": {"np": ["dark skin", "brown skin", "dark brown skin"], "adj": ["dark-skinned"]}},
    "face_accessory": {"glasses": {"wear": ["glasses", "round glasses", "eyeglasses", "specs"], "adj": ["bespectacled"]},
                       "sunglasses": {"wear": ["sunglasses", "shades", "sunnies"]},
                       "mask": {"wear": ["a face mask", "a mask", "a surgical mask"]},
                       "none": {"np": ["no glasses", "no glasses or mask", "nothing on her face"],
                                "post": ["without glasses", "not wearing glasses"]}},
}
EN_HEAD = {"hat": ["a hat", "a cap", "a little hat", "a top hat"],
           "ribbon": ["a ribbon", "a hair bow", "a bow", "a hair ribbon", "a big bow"],
           "cat ears": ["cat ears", "kitty ears", "nekomimi", "neko ears"],
           "flower": ["a flower", "a hair flower", "a flower in her hair", "a flower hairpin"],
           "headphones": ["headphones", "a headset", "big headphones"]}
EN_NO_HEAD = {"np": ["no hat", "no accessories", "no head accessories", "nothing on her head", "no hat or bow"],
              "post": ["without a hat", "without accessories"]}
EN_COLOR_FORMS = {
    "hair_color": {"np": ["{c} hair"], "adj": ["{c}-haired", "{c} haired"]},
    "eye_color": {"np": ["{c} eyes"], "adj": ["{c}-eyed"]},
    "collar_color": {"wear": ["a {c} shirt", "a {c} top", "a {c} hoodie", "a {c} collar", "{c} clothes",
                              "a {c} outfit", "a {c} sweater"], "post": ["wearing {c}", "dressed in {c}"]},
}
EN_BG_NOUN = ["background", "background", "bg", "backdrop"]
EN_NO_BG = ["transparent background", "transparent bg", "no background", "clear background"]

# key: value lists ("hair: purple, long"); negations get their own keys ("glasses: no").
EN_KEYS = {"hair": ["hair"], "hair_color": ["hair color", "hair colour", "hair"], "hairstyle": ["hairstyle", "hair style"],
           "bangs": ["bangs", "fringe"], "eyes": ["eyes"], "eye_color": ["eye color", "eyes"], "eye_shape": ["eye shape"],
           "expression": ["expression", "face"], "blush": ["blush"], "skin_tone": ["skin", "skin tone"],
           "face_accessory": ["face", "face accessory"], "head_accessory": ["head", "accessories", "headwear"],
           "collar_color": ["shirt", "clothes", "top", "outfit"], "background": ["background", "bg"]}
EN_KV_VALUES = {
    "hairstyle": {"short": ["short"], "long straight": ["long", "long straight"], "bob": ["bob", "bob cut"],
                  "twin tails": ["twin tails", "twintails"], "ponytail": ["ponytail"], "drills": ["drills", "drill curls"],
                  "bun": ["bun", "odango"]},
    "bangs": {"straight": ["straight", "blunt"], "side-swept": ["side-swept", "side"], "parted": ["parted", "middle part"]},
    "eye_shape": {"round": ["round"], "sharp": ["sharp", "narrow"], "sleepy": ["sleepy", "droopy"]},
    "expression": {"smile": ["smile", "smiling", "happy"], "neutral": ["neutral", "blank", "deadpan"],
                   "open mouth": ["open mouth"], "wink": ["wink", "winking"],
                   "closed-eye happy": ["closed-eye smile", "happy closed eyes"], "surprised": ["surprised", "shocked"]},
    "blush": {"yes": ["yes"], "no": ["no", "none"]},
    "skin_tone": {"fair": ["fair", "pale"], "light": ["light"], "tan": ["tan", "tanned"], "dark": ["dark"]},
    "face_accessory": {"glasses": ["glasses"], "sunglasses": ["sunglasses", "shades"], "mask": ["mask", "face mask"],
                       "none": ["none"]},
}
EN_KV_NEGATIONS = {"face_accessory": ["glasses: no", "glasses: none", "face accessory: none"],
                   "head_accessory": ["hat: no", "accessories: none", "head: none"], "blush": ["blush: no", "blush: none"]}

EN_SUBJECTS = ["girl", "girl", "chibi girl", "anime girl", "character", "avatar", "chibi", "oc", "pfp", "kid",
               "chibi character", "game character", "anime character", "waifu", "lady", "profile pic"]
EN_SUBJECT_ADJ = ["cute", "little", "chibi", "kawaii", "tiny", "small"]
# Requests around a description; "please" only ever trails (the held-out set opens with it).
EN_REQUESTS = ["make me", "can you make me", "draw me", "draw", "generate", "i want", "i'd like", "give me",
               "create", "could you draw", "pls draw", "design", "i need", "can i get"]
EN_ENDINGS = [" please", " pls", " thanks", " thx", " plz", "!", "?"]
# Words outside the vocabulary that change nothing. None may name or imply a family
# ("catgirl", "witch", "elf", "vampire", a face emoji would all state something).
EN_DISTRACTORS = ["for my rpg", "for my game", "for my discord", "as an npc", "for my visual novel", "high quality",
                  "masterpiece", "kawaii", "fantasy", "lol", "in chibi style", "full body", "for twitch",
                  "for a dating sim", "game asset", "simple", "detailed", "anime style"]
EN_ROLES = ["pirate", "knight", "mage", "healer", "ninja", "idol", "student", "adventurer", "archer", "bard",
            "merchant", "villager", "shopkeeper", "gamer", "streamer", "boss"]
EMOJI = ["✨", "💖", "🎮", "⭐", "🔥", "💯", "🙏", "❤️", "💕", "⚔️"]
# List separators, with how often each is drawn (the plain comma dominates, as people type).
EN_SEPARATORS = [", "] * 10 + [" / ", " + ", " | ", "; ", ",", " - ", "\n", " , ", " "]
EN_TYPO_KEYS = "qwertyuiopasdfghjklzxcvbnm"

# ----------------------------------------------------------------------------- Chinese
# Colour words: (full forms, one-character forms used in compounds such as 粉发, 蓝瞳).
ZH_COLORS = {"black": (["黑色"], ["黑"]), "brown": (["棕色", "茶色", "咖啡色"], ["棕", "茶"]),
             "white": (["白色"], ["白"]), "red": (["红色"], ["红"]), "orange": (["橙色", "橘色"], ["橙", "橘"]),
             "pink": (["粉色", "粉红色"], ["粉"]), "purple": (["紫色"], ["紫"]), "blue": (["蓝色"], ["蓝"]),
             "green": (["绿色"], ["绿"]), "yellow": (["黄色"], ["黄"]), "aqua": (["青色", "蓝绿色"], ["青"]),
             "gold": (["金色", "金黄色"], ["金"]), "grey": (["灰色"], ["灰"]),
             "silver": (["银色", "银白色", "灰色"], ["银", "灰"]), "blonde": (["金色", "金黄色", "黄色"], ["金", "黄"])}
ZH_HAIR_FUR = {"pink": "粉毛", "white": "白毛", "blonde": "黄毛", "red": "红毛", "blue": "蓝毛", "green": "绿毛",
               "silver": "银毛", "purple": "紫毛"}  # slang "X毛" (never for black or brown)
ZH_BG = {"pink": ["粉色", "粉红色"], "yellow": ["黄色"], "mint": ["薄荷绿", "薄荷色"], "sky blue": ["天蓝色", "浅蓝色"],
         "lavender": ["淡紫色", "浅紫色"]}
ZH_STYLE = {"short": ["短发", "短头发"], "long straight": ["长直发", "长发", "直长发"], "bob": ["波波头", "短波波头", "BOB头"],
            "twin tails": ["双马尾", "双马尾辫"], "ponytail": ["马尾", "单马尾", "马尾辫"],
            "drills": ["钻头卷", "螺旋卷", "螺旋卷发"], "bun": ["丸子头", "包子头"]}
ZH_STYLE_TIED = {"twin tails", "ponytail", "bun"}  # 扎着/扎成 fit these
ZH_STYLE_LENGTH = {"short": "短短的", "long straight": "长长的"}  # "长长的紫色头发"
ZH_BANGS = {"straight": ["齐刘海", "平刘海"], "side-swept": ["斜刘海", "偏分刘海"], "parted": ["中分", "中分刘海"]}
ZH_SHAPE = {"round": (["圆眼", "大圆眼", "圆圆的眼睛"], ["圆圆的", "圆溜溜的"]),
            "sharp": (["锐利的眼睛", "吊梢眼", "细长的眼睛"], ["锐利的", "细长的"]),
            "sleepy": (["困倦的眼睛", "睡眼", "半睁的眼睛"], ["困倦的", "半睁的"])}
ZH_FORMS = {
    "expression": {"smile": {"v": ["微笑", "笑着", "面带微笑", "在笑"], "n": ["笑脸"]},
                   "neutral": {"v": ["面无表情", "无表情"], "n": ["扑克脸", "冷淡的表情"]},
                   "open mouth": {"v": ["张嘴", "张着嘴", "嘴巴张开"]},
                   "wink": {"v": ["眨眼", "眨一只眼", "单眼wink", "wink"]},
                   "closed-eye happy": {"v": ["眯眼笑", "眯着眼睛笑", "笑眯眯", "闭眼笑"]},
                   "surprised": {"v": ["吃惊", "惊讶", "一脸惊讶", "震惊"], "n": ["惊讶的表情"]}},
    "blush": {"yes": {"v": ["脸红", "脸红红的", "脸颊泛红", "害羞脸红"], "n": ["腮红", "红晕"]},
              "no": {"v": ["不脸红", "没有脸红"], "n": ["没有腮红", "无腮红"]}},
    "skin_tone": {"fair": {"v": ["皮肤白皙", "肤白"], "n": ["白皙皮肤", "白皮肤", "白皙的皮肤"]},
                  "light": {"n": ["浅色皮肤", "浅肤色"]},
                  "tan": {"n": ["小麦色皮肤", "小麦色", "小麦肤色"]},
                  "dark": {"n": ["黑皮", "深色皮肤", "深肤色", "黝黑的皮肤"]}},
    "face_accessory": {"glasses": {"n": ["眼镜", "圆框眼镜"], "v": ["戴眼镜", "戴着眼镜", "戴副眼镜"]},
                       "sunglasses": {"n": ["墨镜", "太阳镜"], "v": ["戴墨镜", "戴着墨镜"]},
                       "mask": {"n": ["口罩"], "v": ["戴口罩", "戴着口罩"]},
                       "none": {"v": ["不戴眼镜", "没戴眼镜", "不戴眼镜和口罩"], "n": ["没有眼镜", "无眼镜"]}},
}
ZH_HEAD = {"hat": (["帽子", "小帽子", "礼帽"], ["戴帽子", "戴着帽子", "戴着小礼帽"]),
           "ribbon": (["蝴蝶结", "丝带"], ["系着蝴蝶结", "戴蝴蝶结", "扎着蝴蝶结"]),
           "cat ears": (["猫耳", "猫耳朵"], ["长着猫耳", "有猫耳"]),
           "flower": (["小花", "头花", "花朵发饰"], ["头戴小花", "头上别着小花", "戴着小花"]),
           "headphones": (["耳机", "头戴式耳机"], ["戴耳机", "戴着耳机"])}
ZH_NO_HEAD = {"v": ["不戴帽子", "没有头饰", "头上什么都没戴"], "n": ["无头饰", "没有帽子"]}
ZH_COLLAR = {"n": ["{c}衣服", "{c}上衣", "{c}衣领", "{c}领子", "{c}卫衣", "{c}T恤", "{s}衣服"],
             "v": ["穿{c}衣服", "穿着{c}上衣", "穿{s}衣服", "穿着{c}卫衣"]}
ZH_NO_BG = {"n": ["透明背景", "无背景", "透明底"], "v": ["背景透明", "不要背景"]}

ZH_KEYS = {"hair_color": ["发色"], "hairstyle": ["发型"], "bangs": ["刘海"], "eye_color": ["瞳色", "眼睛"],
           "eye_shape": ["眼型"], "expression": ["表情"], "blush": ["腮红", "脸红"], "skin_tone": ["肤色"],
           "face_accessory": ["配饰", "面部配饰"], "head_accessory": ["头饰"], "collar_color": ["衣服", "上衣"],
           "background": ["背景"]}
ZH_KV_NEGATIONS = {"face_accessory": ["眼镜：无", "眼镜：不戴", "面部配饰：无"],
                   "head_accessory": ["头饰：无", "帽子：不要", "头饰：没有"], "blush": ["腮红：无", "脸红：不要"]}
ZH_SUBJECTS = ["女孩", "女孩", "女生", "少女", "妹子", "萌妹", "Q版女孩", "小女孩", "角色", "人物", "头像", "立绘",
               "游戏角色", "二次元少女"]
ZH_REQUESTS = ["帮我画一个", "给我画一个", "我想要一个", "我要一个", "生成一个", "来一个", "画一个", "求一个",
               "做一个", "想要一个", "能不能画一个", "帮忙生成一个"]
ZH_ENDINGS = ["，谢谢", "！", "~", "，要可爱一点", "吧", "，拜托了", "。"]
ZH_DISTRACTORS = ["用在我的游戏里", "RPG用", "游戏头像", "可爱一点", "萌一点", "高清", "二次元风格", "做游戏用",
                  "日系", "好看一点", "当头像用"]
ZH_ROLES = ["海盗", "骑士", "法师", "学生", "偶像", "冒险者", "弓箭手", "商人", "村民", "主播"]
ZH_SEPARATORS = ["，"] * 6 + ["、"] * 3 + [" ", ",", "/", "+", "|", "", "\n"]
ZH_TYPOS = {"戴": "带", "眼睛": "眼晴", "的": "滴"}
