"""Detail masks: the pixels of a render that its small attributes own, for a weighted
reconstruction loss (`rec_detail_weight` in a gan config; training.train_gan).

Why: plain L1 over the image spends G's effort where most pixels are (hair, face,
background). A head accessory covers about 7 % of the pixels of a render that wears one and
the irises about 1 %, so the cpu recipe's reconstruction stage drew no accessories at all
(judge recall <= 0.04 on its redraws): for a pixel an accessory covers in a fifth of the
renders, L1's best guess is "no accessory" until G reads the condition perfectly. Weighting
the pixels of the accessories a render *wears* (plane 0, `rec_detail_weight`) makes a
missing accessory cost more than a spurious one, so G draws them, but then draws faint
copies of several where it is unsure. Weighting the region where any accessory *could* be
(plane 1, `rec_region_weight`), on every render, makes a spurious one cost as much: alone it
leaves L1's best guess at "none", added to the first it makes the drawing conditional
(chibi-64's MODEL_CARD has the measurements).

Each mask is exact, from the renderer, with the render's own jitter draws: plane 0 is the
pixels that change when the render is drawn again without its head accessories and with
another eye colour; plane 1 the pixels any single head accessory would cover on it.
Computed once per dataset and resolution and cached next to the data
(``detail_{size}.npy``, packed bits, with its key in ``detail_{size}.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS
from moe_avatar.training.dataset import parallel_map, write_atomically
from moe_avatar.training.render import render_avatar

THRESHOLD = 6  # a channel must change by more than this (of 255) for the pixel to count
VERSION = 2  # bump when the mask's definition changes: old caches are rebuilt
OWN, REGION = 0, 1  # the planes of a detail mask


def detail_mask(attrs: dict, jitter: Sequence[float], size: int) -> np.ndarray:
    """bool [2, size, size]: the pixels this render's head accessories and iris colour own
    (plane OWN), and the pixels any single head accessory would cover on it (plane REGION)."""
    def draw(**override) -> np.ndarray:
        return np.asarray(render_avatar(dict(attrs, **override), size, jitter=jitter), np.int16)

    def differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(a - b).max(-1) > THRESHOLD

    worn = list(attrs["head_accessory"])
    base = draw()
    bare = draw(head_accessory=[]) if worn else base  # reuse a render rather than draw it again
    colours = ATTRIBUTES["eye_color"]
    far = colours[(colours.index(attrs["eye_color"]) + len(colours) // 2) % len(colours)]
    own = differ(base, draw(eye_color=far)) | differ(base, bare)
    region = np.zeros_like(own)
    for item in HEAD_ITEMS:
        region |= differ(base if worn == [item] else draw(head_accessory=[item]), bare)
    return np.stack([own, region])


def _one(job: tuple[dict, list[float], int]) -> np.ndarray:
    return np.packbits(detail_mask(*job))


def load_or_make_detail_masks(data, size: int, progress: bool = True) -> np.ndarray:
    """bool [N, 2, size, size] detail masks (planes OWN, REGION) of a labelled dataset (training.dataset.AvatarData)
    with its jitter draws, cached in the dataset folder."""
    if data.attributes is None or data.jitter is None:
        raise ValueError(f"detail masks need each render's attributes and jitter draws; {data.root} has none "
                         "(a user dataset, or one synthesised before jitter was kept: synthesise it again)")
    key = {"version": VERSION, "size": size, "threshold": THRESHOLD,
           "files": hashlib.sha1("\n".join(data.files).encode()).hexdigest()}
    arr_p, key_p = data.root / f"detail_{size}.npy", data.root / f"detail_{size}.json"
    packed = None
    try:
        if json.loads(key_p.read_text()) == key:
            packed = np.load(arr_p)
    except (OSError, ValueError):
        pass
    if packed is None:
        jobs = [(a, [float(u) for u in j[~np.isnan(j)]], size) for a, j in zip(data.attributes, data.jitter)]
        packed = np.stack(parallel_map(_one, jobs, "detail masks", progress, processes=os.cpu_count() or 1, chunksize=128))
        try:
            write_atomically(arr_p, lambda f: np.save(f, packed))
            write_atomically(key_p, lambda f: f.write(json.dumps(key).encode()))
        except OSError:
            pass  # read-only dataset folder: just no cache
    return np.unpackbits(packed, axis=1, count=2 * size * size).reshape(-1, 2, size, size).astype(bool)
