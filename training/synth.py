"""``moe-avatar-train synth``: render the procedural image-caption dataset.

Image ``i`` uses its own generator ``numpy.random.default_rng([seed, i])`` for attributes,
jitter and captions, so the output is byte-identical for a seed whatever the worker count.

Layout written to ``--out``::

    images/000000.png ...   RGBA PNGs
    metadata.jsonl          one row per image: file_name, captions {en, zh}, attributes
    dataset.json            count, size, seed, vocabulary, generator version
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from moe_avatar.training.attributes import (
    ATTRIBUTES,
    HEAD_CONFLICTS,
    MULTI_VALUED,
    NEUTRAL_ATTRIBUTES,
    ZH_NAMES,
    combination_count,
    sample_attributes,
)
from moe_avatar.training.captions import make_captions
from moe_avatar.training.render import render_avatar, sample_jitter

GENERATOR_VERSION = "procedural-chibi-1"


def png_bytes(img: Image.Image) -> bytes:
    """PNG with fixed options and no metadata chunks, so the bytes depend only on pixels."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def make_sample(seed: int, index: int, size: int) -> tuple[bytes, dict]:
    """PNG bytes and the metadata row of image ``index``."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng)
    jitter = sample_jitter(attrs, rng)
    img = render_avatar(attrs, size, jitter=jitter)
    captions = make_captions(attrs, rng)
    row = {"file_name": f"images/{index:06d}.png", "captions": captions, "attributes": attrs, "jitter": jitter}
    return png_bytes(img), row


def _work(job: tuple[int, int, int, str]) -> dict:
    seed, index, size, out = job
    data, row = make_sample(seed, index, size)
    with open(os.path.join(out, row["file_name"]), "wb") as f:
        f.write(data)
    return row


def synthesize(out: Path, count: int, size: int = 64, seed: int = 0, workers: int = 1,
               progress: bool = True, chunksize: int = 64) -> dict:
    """Write ``count`` samples to ``out``; returns the dataset.json dict."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i, size, str(out)) for i in range(count)]
    bar = tqdm(total=count, desc="synth", unit="img", disable=not progress)
    tmp = out / "metadata.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as meta:
        if workers <= 1:
            rows = map(_work, jobs)
            pool = None
        else:
            # spawn, not fork: forking a process that already runs threads (gRPC, ONNX Runtime,
            # torch; e.g. under pytest) can crash or hang the children.
            pool = get_context("spawn").Pool(workers)
            rows = pool.imap(_work, jobs, chunksize=chunksize)  # imap keeps index order
        try:
            for row in rows:
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
                bar.update(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    bar.close()
    tmp.replace(out / "metadata.jsonl")
    info = {
        "count": count, "size": size, "seed": seed, "generator_version": GENERATOR_VERSION,
        "attributes": ATTRIBUTES, "attributes_zh": ZH_NAMES, "multi_valued": [MULTI_VALUED],
        "head_accessory_conflicts": sorted(sorted(c) for c in HEAD_CONFLICTS),
        "combinations": combination_count(),
    }
    (out / "dataset.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return info


# ----------------------------------------------------------------------------- contact sheet
def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def contact_sheet(size: int = 64) -> Image.Image:
    """One row per family, one cell per value, everything else at the neutral avatar."""
    label_h = max(14, size // 10)
    cell_w = max(size, 104 if size < 128 else size) + 8
    left = 120 if size < 128 else 190
    font = _font(label_h - 3)
    rows = list(ATTRIBUTES.items())
    ncols = max(len(v) for v in ATTRIBUTES.values())
    sheet = Image.new("RGBA", (left + ncols * cell_w, len(rows) * (size + label_h + 8)), (236, 236, 242, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (fam, values) in enumerate(rows):
        y = r * (size + label_h + 8) + 4
        draw.text((6, y + size // 2 - label_h // 2), fam, fill=(40, 40, 60), font=font)
        for c, v in enumerate(values):
            attrs = dict(NEUTRAL_ATTRIBUTES)
            attrs[fam] = ([] if v == "none" else [v]) if fam == MULTI_VALUED else v
            x = left + c * cell_w
            sheet.alpha_composite(render_avatar(attrs, size), (x + (cell_w - size) // 2, y))
            tw = draw.textlength(v, font=font)
            draw.text((x + (cell_w - tw) / 2, y + size + 1), v, fill=(40, 40, 60), font=font)
    return sheet.convert("RGB")


# ----------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=0, help="number of images to render")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (64..512)")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: image i draws from (seed, i) (default %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes (default: all cores)")
    parser.add_argument("--preview", type=Path, help="also write a contact sheet PNG here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.count > 0 and args.out is None:
        print("synth: --out is required when --count > 0")
        return 2
    if args.preview:
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(args.size).save(args.preview, optimize=True)
        print(f"preview written to {args.preview}")
    if args.count > 0:
        t0 = time.perf_counter()
        synthesize(args.out, args.count, args.size, args.seed, args.workers, progress=not args.no_progress)
        dt = time.perf_counter() - t0
        print(f"{args.count} images in {dt:.1f} s ({args.count / dt:.0f} img/s) -> {args.out}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
