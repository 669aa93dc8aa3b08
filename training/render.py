"""Procedural chibi avatar renderer (Pillow only).

Everything is drawn on a supersampled canvas in *normalised* coordinates (0..1 across the
frame) through :class:`Pen`, which also applies the per-sample position/scale jitter. The
canvas is then box-filtered down with premultiplied alpha, so transparent edges have no
dark fringes, and finally composited over the background.

Layer order (back to front): back hair -> shoulders -> hanging hair (tails, drills) ->
head -> eyes, blush, mouth -> front hair (cap, bangs, side locks) -> face accessory ->
head accessories.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from moe_avatar.training.attributes import validate_attributes

RGB = tuple[int, int, int]

HAIR_RGB: dict[str, RGB] = {
    "black": (44, 40, 56), "brown": (128, 78, 46), "blonde": (248, 214, 108),
    "silver": (160, 172, 198), "white": (252, 250, 246), "red": (214, 40, 52),
    "orange": (248, 140, 38), "pink": (252, 146, 192), "purple": (144, 86, 208),
    "blue": (52, 96, 224), "aqua": (60, 212, 214), "green": (74, 178, 76),
}
EYE_RGB: dict[str, RGB] = {
    "brown": (140, 82, 40), "red": (224, 36, 48), "orange": (252, 138, 24),
    "gold": (242, 204, 36), "green": (46, 172, 66), "aqua": (34, 204, 204),
    "blue": (46, 98, 234), "purple": (152, 76, 214), "pink": (252, 108, 182),
    "grey": (128, 134, 146),
}
SKIN_RGB: dict[str, RGB] = {
    "fair": (255, 240, 230), "light": (252, 216, 186), "tan": (222, 166, 118),
    "dark": (146, 94, 62),
}
COLLAR_RGB: dict[str, RGB] = {
    "white": (246, 246, 250), "black": (46, 44, 56), "red": (222, 48, 58),
    "blue": (56, 102, 222), "green": (66, 170, 86), "yellow": (250, 210, 56),
    "pink": (250, 148, 190), "purple": (148, 92, 206),
}
BG_RGB: dict[str, RGB] = {
    "pink": (255, 204, 222), "yellow": (255, 238, 160), "mint": (184, 240, 212),
    "sky blue": (180, 220, 255), "lavender": (218, 200, 252),
}
LASH: RGB = (52, 32, 42)
MOUTH: RGB = (150, 44, 64)
TONGUE: RGB = (250, 128, 140)
BLUSH: RGB = (255, 102, 136)


# ----------------------------------------------------------------------------- colours
def shade(c: RGB, f: float) -> RGB:
    """Darker version of ``c`` (f < 1)."""
    return tuple(int(round(v * f)) for v in c)  # type: ignore[return-value]


def tint(c: RGB, f: float) -> RGB:
    """Mix ``c`` toward white by ``f``."""
    return tuple(int(round(v + (255 - v) * f)) for v in c)  # type: ignore[return-value]


def jitter_color(c: RGB, u: Sequence[float] | None, dh: float = 0.012,
                 dl: float = 0.035, ds: float = 0.08) -> RGB:
    """Small hue/lightness/saturation change that stays inside the colour's name.

    ``u``: three uniform draws in [0, 1) (hue, lightness, saturation); None = no change."""
    if u is None:
        return c
    h, l, s = colorsys.rgb_to_hls(*(v / 255 for v in c))
    h = (h + _lerp(-dh, dh, u[0])) % 1.0
    l = min(1.0, max(0.0, l + _lerp(-dl, dl, u[1])))
    s = min(1.0, max(0.0, s * (1 + _lerp(-ds, ds, u[2]))))
    return tuple(int(round(v * 255)) for v in colorsys.hls_to_rgb(h, l, s))  # type: ignore[return-value]


def _lerp(lo: float, hi: float, u: float) -> float:
    """``lo + (hi - lo) * u``: the same arithmetic as ``Generator.uniform(lo, hi)`` on a draw u."""
    return lo + (hi - lo) * u


# ----------------------------------------------------------------------------- jitter
# The renderer's randomness, as uniform draws in [0, 1) in the order it uses them: position
# x, y and scale, then hue/lightness/saturation of hair, eyes, skin and collar, then of each
# background colour (none for transparent, one for solid, two for two-tone). Keeping them as
# one vector lets training tell G exactly which variant of a render it must redraw.
JITTER_SLOTS: list[str] = ["x", "y", "scale"] + [f"{part}.{c}" for part in
                                                 ("hair", "eye", "skin", "collar", "bg1", "bg2") for c in "hls"]
JITTER_DIMS = len(JITTER_SLOTS)
_BG_SLOT = JITTER_SLOTS.index("bg1.h")  # where the background's draws start


def jitter_draws(background: str) -> int:
    """How many draws a render with this background uses."""
    return JITTER_DIMS - 3 * (2 - _background_colours(background))


def _three(jitter: Sequence[float] | None, start: int) -> Sequence[float] | None:
    """One colour's three draws, starting at ``start``."""
    return None if jitter is None else jitter[start:start + 3]


def _background_colours(name: str) -> int:
    return 0 if name == "transparent" else 2 if " and " in name else 1


def sample_jitter(attrs: dict, rng: np.random.Generator) -> list[float]:
    """The draws one render of ``attrs`` uses (module comment above JITTER_SLOTS)."""
    return [float(v) for v in rng.random(jitter_draws(attrs["background"]))]


def rotate(points: list[tuple[float, float]], cx: float, cy: float, deg: float):
    """Rotate normalised points around (cx, cy); positive = clockwise on screen."""
    a = math.radians(deg)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca) for x, y in points]


def ellipse_points(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24):
    """Points on an ellipse from angle a0 to a1 (degrees, Pillow convention: clockwise from 3 o'clock)."""
    out = []
    for i in range(n + 1):
        t = math.radians(a0 + (a1 - a0) * i / n)
        out.append((cx + rx * math.cos(t), cy + ry * math.sin(t)))
    return out


# ----------------------------------------------------------------------------- drawing
class Pen:
    """ImageDraw wrapper working in normalised coordinates with a jitter transform."""

    def __init__(self, img: Image.Image, ox: float = 0.0, oy: float = 0.0, sc: float = 1.0):
        self.img = img
        self.draw = ImageDraw.Draw(img)
        self.S = img.width
        self.ox, self.oy, self.sc = ox, oy, sc

    def on(self, img: Image.Image) -> Pen:
        return Pen(img, self.ox, self.oy, self.sc)

    def p(self, x: float, y: float) -> tuple[float, float]:
        return ((0.5 + (x - 0.5) * self.sc + self.ox) * self.S,
                (0.5 + (y - 0.5) * self.sc + self.oy) * self.S)

    def w(self, w: float) -> int:
        return max(1, int(round(w * self.sc * self.S)))

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        x0, y0 = self.p(cx - rx, cy - ry)
        x1, y1 = self.p(cx + rx, cy + ry)
        return [x0, y0, x1, y1]

    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0):
        self.draw.ellipse(self.box(cx, cy, rx, ry), fill=fill, outline=outline,
                          width=self.w(width) if outline else 0)

    def poly(self, pts, fill=None, outline=None, width=0.0):
        self.draw.polygon([self.p(x, y) for x, y in pts], fill=fill, outline=outline,
                          width=self.w(width) if outline else 0)

    def line(self, pts, fill, width):
        self.draw.line([self.p(x, y) for x, y in pts], fill=fill, width=self.w(width), joint="curve")

    def arc(self, cx, cy, rx, ry, a0, a1, fill, width):
        self.draw.arc(self.box(cx, cy, rx, ry), a0, a1, fill=fill, width=self.w(width))

    def chord(self, cx, cy, rx, ry, a0, a1, fill, outline=None, width=0.0):
        self.draw.chord(self.box(cx, cy, rx, ry), a0, a1, fill=fill, outline=outline,
                        width=self.w(width) if outline else 0)

    def rrect(self, x0, y0, x1, y1, r, fill, outline=None, width=0.0):
        a, b = self.p(x0, y0)
        c, d = self.p(x1, y1)
        self.draw.rounded_rectangle([a, b, c, d], radius=r * self.sc * self.S, fill=fill,
                                    outline=outline, width=self.w(width) if outline else 0)


# Geometry shared by several parts (normalised units).
HEAD_C, HEAD_RX, HEAD_RY = (0.5, 0.475), 0.33, 0.315
CAP_C, CAP_RX, CAP_RY = (0.5, 0.455), 0.356, 0.335
EYE_Y, EYE_DX = 0.585, 0.138
OUT_W = 0.013  # outline width


class _Palette:
    def __init__(self, attrs: dict, jitter: Sequence[float] | None):
        self.hair = jitter_color(HAIR_RGB[attrs["hair_color"]], _three(jitter, 3))
        self.hair_out = shade(self.hair, 0.62) if attrs["hair_color"] != "white" else (170, 166, 176)
        self.hair_back = shade(self.hair, 0.86)
        self.hair_hi = tint(self.hair, 0.45)
        self.eye = jitter_color(EYE_RGB[attrs["eye_color"]], _three(jitter, 6))
        self.skin = jitter_color(SKIN_RGB[attrs["skin_tone"]], _three(jitter, 9), dl=0.02)
        self.skin_out = shade(self.skin, 0.72)
        self.collar = jitter_color(COLLAR_RGB[attrs["collar_color"]], _three(jitter, 12))
        dark_hair = attrs["hair_color"] in ("black", "brown", "blue", "purple", "green")
        warm_hair = attrs["hair_color"] in ("red", "pink", "orange")
        self.ribbon: RGB = (70, 122, 232) if warm_hair else (232, 52, 82)
        self.hat: RGB = (250, 236, 206) if dark_hair else (60, 52, 96)
        self.hat_band: RGB = (60, 52, 96) if dark_hair else (238, 84, 112)
        self.petal: RGB = (255, 250, 236) if warm_hair or attrs["hair_color"] == "purple" else (255, 130, 176)


# ----------------------------------------------------------------------------- hair
def smooth(points, iterations: int = 3):
    """Chaikin corner cutting: turns a coarse closed polygon into a soft curve."""
    pts = list(points)
    for _ in range(iterations):
        out = []
        for i, (x0, y0) in enumerate(pts):
            x1, y1 = pts[(i + 1) % len(pts)]
            out += [(0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1), (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1)]
        pts = out
    return pts


def _tail(pen: Pen, pts, pal: _Palette) -> None:
    pen.poly(smooth(pts), fill=pal.hair, outline=pal.hair_out, width=OUT_W)


def _mirror(pts):
    return [(1 - x, y) for x, y in pts]


TWIN_TAIL = [(0.22, 0.24), (0.1, 0.29), (0.03, 0.46), (0.03, 0.66), (0.07, 0.84), (0.12, 0.99),
             (0.15, 0.99), (0.16, 0.8), (0.17, 0.62), (0.2, 0.48), (0.25, 0.36)]
PONYTAIL = [(0.66, 0.12), (0.86, 0.1), (0.99, 0.26), (1.02, 0.5), (0.98, 0.74), (0.9, 0.98),
             (0.87, 0.98), (0.88, 0.74), (0.86, 0.56), (0.8, 0.4), (0.7, 0.3)]


def draw_back_hair(pen: Pen, attrs: dict, pal: _Palette) -> None:
    style = attrs["hairstyle"]
    cx, cy = CAP_C
    if style == "long straight":
        pen.rrect(0.115, 0.34, 0.885, 1.05, 0.08, fill=pal.hair_back, outline=pal.hair_out, width=OUT_W)
    elif style == "bob":
        pen.rrect(0.125, 0.36, 0.875, 0.83, 0.15, fill=pal.hair_back, outline=pal.hair_out, width=OUT_W)
    elif style == "ponytail":
        _tail(pen, PONYTAIL, pal)
        pen.ellipse(0.77, 0.19, 0.035, 0.035, fill=pal.ribbon, outline=shade(pal.ribbon, 0.6), width=OUT_W * 0.7)
    elif style == "bun":
        pen.ellipse(0.5, 0.115, 0.1, 0.09, fill=pal.hair, outline=pal.hair_out, width=OUT_W)
        pen.arc(0.5, 0.115, 0.055, 0.045, 200, 330, fill=pal.hair_out, width=OUT_W * 0.7)
        pen.arc(0.49, 0.10, 0.06, 0.05, 210, 290, fill=pal.hair_hi, width=OUT_W)
    pen.ellipse(cx, cy + 0.01, CAP_RX, CAP_RY, fill=pal.hair_back, outline=pal.hair_out, width=OUT_W)


def draw_hanging_hair(pen: Pen, attrs: dict, pal: _Palette) -> None:
    """Hair that hangs in front of the shoulders but behind the face."""
    style = attrs["hairstyle"]
    if style == "twin tails":
        for pts, tie_x in ((TWIN_TAIL, 0.2), (_mirror(TWIN_TAIL), 0.8)):
            _tail(pen, pts, pal)
            pen.ellipse(tie_x, 0.27, 0.034, 0.034, fill=pal.ribbon, outline=shade(pal.ribbon, 0.6), width=OUT_W * 0.7)
    elif style == "drills":
        for side in (-1, 1):
            x = 0.5 + side * 0.35
            # a ringlet drill: stacked, slanted, rounded segments narrowing downward
            top, tip, w0, w1, n = 0.36, 0.95, 0.085, 0.03, 5
            bounds = [top + (tip - top) * k / n for k in range(n + 1)]
            for k in reversed(range(n)):
                ya, yb = bounds[k], bounds[k + 1] + 0.03
                wa = w0 + (w1 - w0) * k / n
                wb = w0 + (w1 - w0) * (k + 1) / n
                seg = [(x - wa, ya), (x + wa, ya - 0.02 * side), (x + wb * 1.1, yb - 0.03 * side - 0.01),
                       (x, yb + 0.01), (x - wb * 1.1, yb + 0.03 * side - 0.01)]
                pen.poly(smooth(seg, 2), fill=pal.hair, outline=pal.hair_out, width=OUT_W)
                pen.line([(x - wa * 0.5, ya + 0.02), (x + wa * 0.2, ya + 0.035)], fill=pal.hair_hi, width=OUT_W * 1.2)


def _bangs_edge(bangs: str) -> list[tuple[float, float]]:
    """Lower edge of the fringe from the right face edge to the left one (zigzag strand tips)."""
    xs = np.linspace(0.835, 0.165, 15)
    pts = []
    for i, x in enumerate(xs):
        tip = i % 2 == 1
        if bangs == "straight":
            y = 0.435 + (0.045 if tip else 0.0)
            dx = 0.0
        elif bangs == "side-swept":
            y = 0.33 + 0.22 * (x - 0.165) / 0.67 + (0.05 if tip else 0.0)
            dx = 0.025 if tip else 0.0
        else:  # parted: forehead shows in an arch in the middle
            y = min(0.50, 0.27 + 0.78 * abs(x - 0.5)) + (0.04 if tip else 0.0)
            dx = (0.015 if x > 0.5 else -0.015) if tip else 0.0
        pts.append((x + dx, y))
    if bangs == "side-swept":  # hair comes down to the temple on the high side
        pts += [(0.2, 0.38), (0.17, 0.44)]
    return pts


def draw_front_hair(pen: Pen, attrs: dict, pal: _Palette) -> None:
    style = attrs["hairstyle"]
    cx, cy = CAP_C
    # side locks framing the face
    lock_end = {"short": 0.64, "bob": 0.80, "long straight": 0.97}.get(style, 0.72)
    lock_w = 0.085 if style == "bob" else 0.07
    for side in (-1, 1):
        x_out = 0.5 + side * 0.352
        x_in = 0.5 + side * (0.352 - lock_w)
        tip_x = x_out - side * lock_w * (0.05 if style == "bob" else 0.35)
        pts = [(x_out, 0.40), (x_in, 0.42), (x_in + side * 0.01, lock_end - 0.08),
               (tip_x - side * (0.02 if style == "bob" else 0.0), lock_end), (x_out + side * 0.008, lock_end - 0.10)]
        pen.poly(pts, fill=pal.hair, outline=pal.hair_out, width=OUT_W)
    # the cap: upper half of the hair ellipse closed by the fringe edge
    top = ellipse_points(cx, cy, CAP_RX, CAP_RY, 178, 362, n=36)
    edge = _bangs_edge(attrs["bangs"])
    pen.poly(top + edge, fill=pal.hair, outline=pal.hair_out, width=OUT_W)
    # strand lines inside the fringe
    for (x, y) in edge[1::4]:
        pen.line([(x * 0.9 + 0.05, y - 0.12), (x, y - 0.01)], fill=pal.hair_out, width=OUT_W * 0.6)
    # glossy "angel ring" highlight
    pen.arc(cx, cy + 0.02, CAP_RX * 0.72, CAP_RY * 0.62, 205, 250, fill=pal.hair_hi, width=0.022)
    pen.arc(cx, cy + 0.02, CAP_RX * 0.72, CAP_RY * 0.62, 262, 300, fill=pal.hair_hi, width=0.022)
    if style != "bun":  # little antenna strand (ahoge)
        pen.line([(0.52, 0.13), (0.54, 0.07), (0.6, 0.05)], fill=pal.hair_out, width=0.02)
        pen.line([(0.52, 0.13), (0.54, 0.075), (0.595, 0.055)], fill=pal.hair, width=0.01)


# ----------------------------------------------------------------------------- face
def _open_eye(pen: Pen, ex: float, side: int, attrs: dict, pal: _Palette) -> None:
    shape = attrs["eye_shape"]
    surprised = attrs["expression"] == "surprised"
    skin = pal.skin
    rx, ry = 0.064, 0.08
    ey = EYE_Y
    pen.ellipse(ex, ey, rx, ry, fill=(255, 255, 255))
    irx, iry = (0.036, 0.05) if surprised else (0.054, 0.074)
    icy = ey + (0.0 if surprised else 0.004)
    pen.ellipse(ex, icy, irx, iry, fill=pal.eye)
    pen.chord(ex, icy, irx, iry, 185, 355, fill=shade(pal.eye, 0.62))
    pen.ellipse(ex, icy + iry * 0.55, irx * 0.6, iry * 0.28, fill=tint(pal.eye, 0.35))
    pen.ellipse(ex, icy + 0.006, irx * 0.42, iry * 0.46, fill=shade(pal.eye, 0.3))
    pen.ellipse(ex, icy, irx, iry, outline=shade(pal.eye, 0.45), width=0.007)
    # highlights, placed where the lid leaves the eye open
    hy = ey + (0.018 if shape == "sleepy" else -0.028)
    pen.ellipse(ex - 0.016, hy, 0.02, 0.02, fill=(255, 255, 255))
    pen.ellipse(ex + 0.02, ey + 0.035, 0.009, 0.009, fill=(255, 255, 255))
    outer, inner = ex + side * (rx + 0.008), ex - side * (rx + 0.004)
    if shape == "round":
        pen.arc(ex, ey + 0.004, rx + 0.004, ry + 0.004, 198, 342, fill=LASH, width=0.02)
        pen.line([(ex + side * (rx - 0.01), ey - 0.045), (outer + side * 0.012, ey - 0.062)], fill=LASH, width=0.016)
        pen.arc(ex, ey, rx * 0.7, ry, 65, 115, fill=shade(skin, 0.6), width=0.007)
    elif shape == "sharp":
        lid_in, lid_out = ey - 0.015, ey - 0.05
        pen.poly([(inner - side * 0.01, lid_in), (outer + side * 0.01, lid_out), (outer + side * 0.01, ey - 0.1),
                  (inner - side * 0.01, ey - 0.1)], fill=skin)
        low_in, low_out = ey + 0.052, ey + 0.04
        pen.poly([(inner - side * 0.01, low_in), (outer + side * 0.01, low_out), (outer + side * 0.01, ey + 0.1),
                  (inner - side * 0.01, ey + 0.1)], fill=skin)
        pen.line([(inner, lid_in), (ex, (lid_in + lid_out) / 2 - 0.004), (outer, lid_out),
                  (outer + side * 0.022, lid_out - 0.022)], fill=LASH, width=0.022)
        pen.line([(inner + side * 0.02, low_in), (outer - side * 0.004, low_out)], fill=shade(skin, 0.55), width=0.008)
    else:  # sleepy: heavy, flat upper lid covering the top half
        lid = ey - 0.004
        pen.poly([(inner - side * 0.01, lid), (outer + side * 0.01, lid + 0.006), (outer + side * 0.01, ey - 0.1),
                  (inner - side * 0.01, ey - 0.1)], fill=skin)
        pen.line([(inner, lid), (ex, lid - 0.006), (outer, lid + 0.006), (outer + side * 0.014, lid + 0.016)],
                 fill=LASH, width=0.02)
        pen.arc(ex, lid - 0.012, rx * 0.75, 0.018, 200, 340, fill=shade(skin, 0.7), width=0.006)
        pen.arc(ex, ey, rx * 0.7, ry, 65, 115, fill=shade(skin, 0.6), width=0.007)


def _closed_eye(pen: Pen, ex: float) -> None:
    pen.line([(ex - 0.058, EYE_Y + 0.018), (ex, EYE_Y - 0.024), (ex + 0.058, EYE_Y + 0.018)], fill=LASH, width=0.022)


def draw_face(pen: Pen, attrs: dict, pal: _Palette) -> None:
    expr = attrs["expression"]
    for side in (-1, 1):
        ex = 0.5 + side * EYE_DX
        if expr == "closed-eye happy" or (expr == "wink" and side == 1):
            _closed_eye(pen, ex)
        else:
            _open_eye(pen, ex, side, attrs, pal)
    if attrs["blush"] == "yes":
        layer = Image.new("RGBA", pen.img.size, (0, 0, 0, 0))
        lp = pen.on(layer)
        for side in (-1, 1):
            lp.ellipse(0.5 + side * 0.2, 0.68, 0.058, 0.03, fill=BLUSH + (150,))
        # blur only the cheeks' bounding box: blurring the whole canvas costs 3 ms
        r = max(1, pen.S // 90)
        x0, y0, x1, y1 = layer.getbbox()
        x0, y0 = max(0, x0 - 2 * r), max(0, y0 - 2 * r)
        x1, y1 = min(pen.S, x1 + 2 * r), min(pen.S, y1 + 2 * r)
        soft = layer.crop((x0, y0, x1, y1)).filter(ImageFilter.BoxBlur(r))
        pen.img.alpha_composite(soft, (x0, y0))
        for side in (-1, 1):  # little hatch marks
            for k in (-1, 0, 1):
                x = 0.5 + side * 0.2 + k * 0.022
                pen.line([(x + 0.008, 0.668), (x - 0.006, 0.69)], fill=shade(BLUSH, 0.8), width=0.006)
    pen.ellipse(0.5, 0.668, 0.006, 0.004, fill=shade(pal.skin, 0.72))
    my = 0.728
    if expr == "smile":
        pen.arc(0.5, my - 0.028, 0.046, 0.036, 25, 155, fill=MOUTH, width=0.016)
    elif expr == "neutral":
        pen.line([(0.475, my), (0.525, my)], fill=MOUTH, width=0.014)
    elif expr == "open mouth":
        pen.ellipse(0.5, my + 0.01, 0.032, 0.042, fill=MOUTH)
        pen.chord(0.5, my + 0.01, 0.032, 0.042, 20, 160, fill=TONGUE)
    elif expr == "wink":
        pen.arc(0.476, my - 0.006, 0.024, 0.022, 0, 180, fill=MOUTH, width=0.014)
        pen.arc(0.524, my - 0.006, 0.024, 0.022, 0, 180, fill=MOUTH, width=0.014)
    elif expr == "closed-eye happy":
        pen.chord(0.5, my - 0.014, 0.058, 0.05, 0, 180, fill=MOUTH)
        pen.chord(0.5, my + 0.014, 0.034, 0.022, 0, 180, fill=TONGUE)
    elif expr == "surprised":
        pen.ellipse(0.5, my + 0.006, 0.02, 0.022, fill=MOUTH)


# ----------------------------------------------------------------------------- body
def draw_body(pen: Pen, pal: _Palette) -> None:
    pen.rrect(0.455, 0.72, 0.545, 0.86, 0.02, fill=shade(pal.skin, 0.9))
    pen.ellipse(0.5, 1.12, 0.31, 0.31, fill=pal.collar, outline=shade(pal.collar, 0.7), width=OUT_W)
    collar = tint(pal.collar, 0.4) if pal.collar[0] + pal.collar[1] + pal.collar[2] < 600 else shade(pal.collar, 0.93)
    for side in (-1, 1):
        pen.chord(0.5 + side * 0.062, 0.835, 0.072, 0.05, -20 if side == 1 else 20, 180 if side == 1 else 200,
                  fill=collar, outline=shade(pal.collar, 0.6), width=OUT_W * 0.8)


# ----------------------------------------------------------------------------- accessories
def draw_face_accessory(pen: Pen, acc: str, pal: _Palette) -> None:
    if acc == "glasses":
        frame = (92, 52, 70)
        layer = Image.new("RGBA", pen.img.size, (0, 0, 0, 0))
        lp = pen.on(layer)
        for side in (-1, 1):
            lp.ellipse(0.5 + side * EYE_DX, EYE_Y, 0.088, 0.078, fill=(200, 230, 255, 60))
        pen.img.alpha_composite(layer)
        for side in (-1, 1):
            ex = 0.5 + side * EYE_DX
            pen.ellipse(ex, EYE_Y, 0.088, 0.078, outline=frame, width=0.016)
            pen.line([(ex + side * 0.086, EYE_Y - 0.015), (0.5 + side * 0.33, EYE_Y - 0.03)], fill=frame, width=0.014)
        pen.arc(0.5, EYE_Y + 0.005, 0.05, 0.03, 200, 340, fill=frame, width=0.014)
    elif acc == "sunglasses":
        for side in (-1, 1):
            ex = 0.5 + side * EYE_DX
            pts = [(ex - 0.09, EYE_Y - 0.055), (ex + 0.09, EYE_Y - 0.055), (ex + 0.082, EYE_Y + 0.03),
                   (ex + 0.04, EYE_Y + 0.07), (ex - 0.04, EYE_Y + 0.07), (ex - 0.082, EYE_Y + 0.03)]
            pen.poly(pts, fill=(28, 28, 38), outline=(10, 10, 16), width=0.012)
            pen.line([(ex - 0.05, EYE_Y + 0.03), (ex - 0.015, EYE_Y - 0.03)], fill=(120, 124, 150), width=0.014)
            pen.line([(ex + side * 0.088, EYE_Y - 0.05), (0.5 + side * 0.33, EYE_Y - 0.06)], fill=(20, 20, 28), width=0.016)
        pen.line([(0.5 - 0.05, EYE_Y - 0.045), (0.5 + 0.05, EYE_Y - 0.045)], fill=(20, 20, 28), width=0.02)
    elif acc == "mask":
        edge = (168, 174, 192)
        for side in (-1, 1):
            pen.line([(0.5 + side * 0.17, 0.675), (0.5 + side * 0.3, 0.61)], fill=edge, width=0.01)
        pen.chord(0.5, 0.655, 0.185, 0.135, 0, 180, fill=(250, 251, 255), outline=edge, width=0.01)
        for y in (0.695, 0.73):
            pen.arc(0.5, y - 0.02, 0.12, 0.03, 20, 160, fill=(205, 210, 226), width=0.008)


def draw_head_accessories(pen: Pen, items: list[str], pal: _Palette, back: bool) -> None:
    """``back`` draws the parts behind the hair cap (cat ears), otherwise the rest."""
    for item in items:
        if item == "cat ears" and back:
            for side in (-1, 1):
                outer = [(0.5 + side * 0.15, 0.16), (0.5 + side * 0.31, 0.015), (0.5 + side * 0.345, 0.3)]
                inner = [(0.5 + side * 0.19, 0.16), (0.5 + side * 0.3, 0.06), (0.5 + side * 0.32, 0.24)]
                pen.poly(outer, fill=pal.hair, outline=pal.hair_out, width=OUT_W * 1.2)
                pen.poly(inner, fill=(255, 160, 190))
        elif back:
            continue
        elif item == "hat":
            cx, cy, a = 0.33, 0.185, -18
            crown = rotate([(cx - 0.1, cy), (cx - 0.09, cy - 0.17), (cx + 0.09, cy - 0.17), (cx + 0.1, cy)], cx, cy, a)
            band = rotate([(cx - 0.103, cy - 0.005), (cx - 0.1, cy - 0.06), (cx + 0.1, cy - 0.06), (cx + 0.103, cy - 0.005)], cx, cy, a)
            brim = rotate(ellipse_points(cx, cy, 0.19, 0.048, 0, 360, n=28), cx, cy, a)
            out = shade(pal.hat, 0.55) if pal.hat[0] > 150 else (24, 20, 40)
            pen.poly(brim, fill=pal.hat, outline=out, width=OUT_W)
            pen.poly(crown, fill=pal.hat, outline=out, width=OUT_W)
            pen.poly(band, fill=pal.hat_band, outline=out, width=OUT_W * 0.7)
        elif item == "ribbon":
            cx, cy = 0.71, 0.16
            out = shade(pal.ribbon, 0.55)
            for side in (-1, 1):
                tail = rotate([(cx, cy), (cx + side * 0.04, cy + 0.1), (cx + side * 0.075, cy + 0.09)], cx, cy, 15)
                pen.poly(tail, fill=pal.ribbon, outline=out, width=OUT_W * 0.8)
            for side in (-1, 1):
                loop = rotate([(cx, cy), (cx + side * 0.11, cy - 0.07), (cx + side * 0.125, cy + 0.0),
                               (cx + side * 0.1, cy + 0.06)], cx, cy, 15)
                pen.poly(loop, fill=pal.ribbon, outline=out, width=OUT_W)
            pen.ellipse(cx, cy, 0.028, 0.028, fill=tint(pal.ribbon, 0.15), outline=out, width=OUT_W * 0.8)
        elif item == "flower":
            cx, cy = 0.8, 0.34
            out = shade(pal.petal, 0.62)
            for k in range(5):
                t = math.radians(-90 + 72 * k)
                pen.ellipse(cx + 0.05 * math.cos(t), cy + 0.05 * math.sin(t), 0.042, 0.042,
                            fill=pal.petal, outline=out, width=OUT_W * 0.8)
            pen.ellipse(cx, cy, 0.03, 0.03, fill=(255, 206, 60), outline=(210, 140, 30), width=OUT_W * 0.7)
        elif item == "headphones":
            band, out, accent = (244, 244, 250), (60, 58, 80), (252, 110, 160)
            pen.arc(0.5, 0.43, 0.35, 0.35, 188, 352, fill=out, width=0.05)
            pen.arc(0.5, 0.43, 0.338, 0.338, 190, 350, fill=band, width=0.026)
            for side in (-1, 1):
                x = 0.5 + side * 0.345
                pen.rrect(x - 0.05, 0.39, x + 0.05, 0.56, 0.04, fill=band, outline=out, width=OUT_W)
                pen.ellipse(x + side * 0.004, 0.475, 0.03, 0.055, fill=accent, outline=shade(accent, 0.6), width=OUT_W * 0.7)


# ----------------------------------------------------------------------------- background
def make_background(name: str, size: int, jitter: Sequence[float] | None) -> Image.Image:
    """Solid or diagonal two-tone background; transparent is alpha 0 everywhere.

    ``jitter``: the background's colour draws (3 per colour) or None."""
    if name == "transparent":
        return Image.new("RGBA", (size, size), (0, 0, 0, 0))
    if " and " not in name:
        return Image.new("RGBA", (size, size), jitter_color(BG_RGB[name], _three(jitter, 0)) + (255,))
    a, b = (np.array(jitter_color(BG_RGB[n], _three(jitter, 3 * i)), np.float32)
            for i, n in enumerate(name.split(" and ")))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    t = np.clip((xx + yy - size) / 1.5 + 0.5, 0, 1)[..., None]  # anti-aliased diagonal
    rgb = a * (1 - t) + b * t
    arr = np.concatenate([rgb, np.full((size, size, 1), 255, np.float32)], axis=2)
    return Image.fromarray(np.round(arr).astype(np.uint8), "RGBA")


def downsample(img: Image.Image, factor: int) -> Image.Image:
    """Box-filter with premultiplied alpha so edges carry no colour of transparent pixels."""
    return img.convert("RGBa").reduce(factor).convert("RGBA")


# ----------------------------------------------------------------------------- entry point
def supersample_factor(size: int) -> int:
    return 4 if size <= 128 else 2


def render_avatar(attrs: dict, size: int = 64, rng: np.random.Generator | None = None,
                  jitter: Sequence[float] | None = None) -> Image.Image:
    """Render ``attrs`` as an RGBA ``size``x``size`` image.

    ``jitter`` (from `sample_jitter`) adds small position/scale offsets and colour changes
    within each named colour; ``rng`` draws it; neither gives the canonical avatar.
    """
    if not 64 <= size <= 512:
        raise ValueError(f"size must be in 64..512, got {size}")
    validate_attributes(attrs)
    ss = supersample_factor(size)
    canvas = Image.new("RGBA", (size * ss, size * ss), (0, 0, 0, 0))
    if rng is not None:
        jitter = sample_jitter(attrs, rng)
    if jitter is None:
        ox = oy = 0.0
        sc = 1.0
    else:
        if len(jitter) != jitter_draws(attrs["background"]):
            raise ValueError(f"jitter: a {attrs['background']!r} background needs "
                             f"{jitter_draws(attrs['background'])} draws, got {len(jitter)}")
        ox, oy, sc = _lerp(-0.022, 0.022, jitter[0]), _lerp(-0.022, 0.022, jitter[1]), _lerp(0.95, 1.02, jitter[2])
    pen = Pen(canvas, ox, oy, sc)
    pal = _Palette(attrs, jitter)
    heads = attrs["head_accessory"]
    draw_back_hair(pen, attrs, pal)
    draw_head_accessories(pen, heads, pal, back=True)
    draw_body(pen, pal)
    draw_hanging_hair(pen, attrs, pal)
    pen.ellipse(*HEAD_C, HEAD_RX, HEAD_RY, fill=pal.skin, outline=pal.skin_out, width=OUT_W * 0.8)
    draw_face(pen, attrs, pal)
    draw_front_hair(pen, attrs, pal)
    draw_face_accessory(pen, attrs["face_accessory"], pal)
    draw_head_accessories(pen, heads, pal, back=False)
    avatar = downsample(canvas, ss)
    bg = make_background(attrs["background"], size, None if jitter is None else jitter[_BG_SLOT:])
    bg.alpha_composite(avatar)
    return bg
