"""Read an avatar dataset folder into memory: the API training and evaluation use.

Two layouts are accepted, both with a ``metadata.jsonl`` next to the images:

* synthetic (``training.synth``): rows ``{"file_name", "captions": {"en": [...], "zh": [...]},
  "attributes": {...}, "jitter": [...]}`` where each caption is ``{"text", "states"}`` and
  ``jitter`` is the renderer's random draws (training.render.sample_jitter);
* a user's own folder in the Hugging Face ImageFolder convention: rows ``{"file_name", "text"}``
  where ``text`` is a string or a list of strings.

Images are converted to RGBA, centre-cropped to a square and resized to ``size``. The decoded
array is cached as ``cache_{size}.npy`` (+ ``cache_{size}.json`` holding the cache key: the
metadata file's size and mtime and the load options), so the second load skips decoding.
Edit ``metadata.jsonl`` (or delete the cache files) after changing images in place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from moe_avatar.training.render import JITTER_DIMS

SUPPORTED_MODES = {"RGBA", "RGB", "L", "LA", "P", "PA"}
PARALLEL_MIN = 4000  # below this, a process pool costs more than it saves


class DatasetError(ValueError):
    """Bad dataset content; the message names the metadata line and the file involved."""


@dataclass
class Caption:
    text: str
    lang: str  # "en", "zh", or "" when unknown (user data)
    states: dict = field(default_factory=dict)  # family -> value (list for head_accessory)


@dataclass
class AvatarData:
    root: Path
    files: list[str]
    images: np.ndarray  # uint8 [N, S, S, 4] RGBA
    captions: list[list[Caption]]
    attributes: list[dict] | None  # None when any row lacks ground truth (user data)
    bad_rows: list[str]
    # float32 [N, JITTER_DIMS]: each render's jitter draws, NaN in the slots it does not use;
    # None when any row lacks them (user data, or a dataset synthesised before they were kept)
    jitter: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class _Row:
    line: int
    file_name: str
    captions: list[Caption]
    attributes: dict | None
    jitter: list[float] | None = None


# ----------------------------------------------------------------------------- metadata
def _parse_captions(obj: dict) -> list[Caption]:
    if "captions" in obj:
        caps = obj["captions"]
        if not isinstance(caps, dict):
            raise ValueError("'captions' must be an object {lang: [captions]}")
        out = []
        for lang, items in caps.items():
            if not isinstance(items, list):
                raise ValueError(f"'captions.{lang}' must be a list")
            for item in items:
                if isinstance(item, str):
                    item = {"text": item}
                if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                    raise ValueError(f"caption in 'captions.{lang}' has no text")
                out.append(Caption(item["text"], lang, dict(item.get("states") or {})))
        return out
    if "text" not in obj:
        raise ValueError("missing field 'text' (or 'captions')")
    text = obj["text"]
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("'text' must be a string or a list of strings")
    return [Caption(t, "", {}) for t in texts]


def _parse_line(line: str, lineno: int) -> _Row:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("row is not a JSON object")
    name = obj.get("file_name")
    if not isinstance(name, str) or not name:
        raise ValueError("missing field 'file_name'")
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"{name}: file_name must be a path inside the dataset folder")
    caps = _parse_captions(obj)
    caps = [c for c in caps if c.text.strip()]
    if not caps:
        raise ValueError(f"{name}: empty caption")
    attrs = obj.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise ValueError(f"{name}: 'attributes' must be an object")
    jitter = obj.get("jitter")
    if jitter is not None and not (isinstance(jitter, list) and len(jitter) <= JITTER_DIMS
                                   and all(isinstance(u, (int, float)) and 0 <= u < 1 for u in jitter)):
        raise ValueError(f"{name}: 'jitter' must be a list of at most {JITTER_DIMS} numbers in [0, 1)")
    return _Row(lineno, name, caps, attrs, jitter)


def read_metadata(root: Path, skip_bad: bool, limit: int | None) -> tuple[list[_Row], list[str]]:
    """Parse metadata.jsonl; bad rows raise or are returned as messages."""
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise DatasetError(f"{meta}: not found")
    rows: list[_Row] = []
    bad: list[str] = []
    with open(meta, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                rows.append(_parse_line(line, lineno))
            except ValueError as e:
                _bad(bad, meta, lineno, str(e), skip_bad)
    return rows, bad


def _bad(bad: list[str], meta: Path, lineno: int, reason: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise DatasetError(f"{meta}:{lineno}: {reason}")
    bad.append(f"{meta.name}:{lineno}: {reason}")


# ----------------------------------------------------------------------------- images
def to_square_rgba(img: Image.Image, size: int | None) -> Image.Image:
    """RGBA, centre-cropped to a square, resized to ``size`` (None keeps the crop size)."""
    if img.mode not in SUPPORTED_MODES:
        raise ValueError(f"unsupported image mode {img.mode}")
    img = img.convert("RGBA")
    w, h = img.size
    s = min(w, h)
    if w != h:
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if size is not None and s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS if s > size else Image.Resampling.BICUBIC)
    return img


def _decode(job: tuple[str, int | None]) -> np.ndarray | str:
    """Decoded array, or an error message (returned, not raised, to cross process boundaries)."""
    path, size = job
    if not os.path.isfile(path):
        return f"{path}: file not found"
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(to_square_rgba(im, size))
    except ValueError as e:
        return f"{path}: {e}"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        return f"{path}: cannot read image ({type(e).__name__}: {e})"


def _target_size(root: Path, rows: list[_Row], size: int | None) -> int | None:
    if size is not None:
        return size
    info = root / "dataset.json"
    if info.is_file():
        try:
            return int(json.loads(info.read_text(encoding="utf-8"))["size"])
        except (ValueError, KeyError, TypeError):
            pass
    for r in rows:  # first readable image decides
        try:
            with Image.open(root / r.file_name) as im:
                return min(im.size)
        except Exception:  # noqa: BLE001 - an unreadable image is reported by the reader, not here
            continue
    return None


# ----------------------------------------------------------------------------- cache
def _cache_paths(root: Path, size: int) -> tuple[Path, Path]:
    return root / f"cache_{size}.npy", root / f"cache_{size}.json"


def _cache_key(root: Path, size: int, skip_bad: bool, limit: int | None) -> dict:
    st = (root / "metadata.jsonl").stat()
    return {"metadata_bytes": st.st_size, "metadata_mtime_ns": st.st_mtime_ns, "size": size,
            "skip_bad": skip_bad, "limit": limit}


def _load_cache(root: Path, size: int, key: dict) -> tuple[np.ndarray, list[str], list[str]] | None:
    arr_p, key_p = _cache_paths(root, size)
    try:
        saved = json.loads(key_p.read_text(encoding="utf-8"))
        if saved.get("key") != key:
            return None
        arr = np.load(arr_p)
        if arr.shape[0] != len(saved["files"]):
            return None
        return arr, saved["files"], saved["bad_rows"]
    except (OSError, ValueError, KeyError):
        return None


def write_atomically(path: Path, write: Callable) -> None:
    """`write(f)` into a file of this process's own, then rename it to `path`: the ranks of a
    distributed run may all build and save the same cache, and a reader never sees half a file."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _save_cache(root: Path, size: int, key: dict, arr: np.ndarray, files: list[str], bad: list[str]) -> None:
    arr_p, key_p = _cache_paths(root, size)
    meta = json.dumps({"key": key, "files": files, "bad_rows": bad}, ensure_ascii=False).encode("utf-8")
    try:
        write_atomically(arr_p, lambda f: np.save(f, arr))
        write_atomically(key_p, lambda f: f.write(meta))
    except OSError:
        pass  # read-only dataset folder: just no cache


def parallel_map(fn: Callable, jobs: list, desc: str, progress: bool, processes: int, chunksize: int) -> list:
    """[fn(job) for job in jobs], in order, with a progress bar; in a pool of `processes` when
    there are enough jobs for one to pay (PARALLEL_MIN). `fn` must be a module-level function."""
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress)
    results = []
    if len(jobs) >= PARALLEL_MIN and processes > 1:
        with get_context("spawn").Pool(processes) as pool:  # no fork of a threaded process
            for res in pool.imap(fn, jobs, chunksize=chunksize):
                results.append(res)
                bar.update(1)
    else:
        for job in jobs:
            results.append(fn(job))
            bar.update(1)
    bar.close()
    return results


# ----------------------------------------------------------------------------- API
def load_dataset(root, size: int | None = None, skip_bad: bool = False, progress: bool = True,
                 limit: int | None = None) -> AvatarData:
    """Load images, captions and (for synthetic data) ground-truth attributes.

    ``size``: output side in pixels (default: dataset.json's size, else the first image's).
    ``skip_bad``: skip broken rows and list them in ``bad_rows`` instead of raising DatasetError.
    ``limit``: read only the first ``limit`` valid metadata rows.
    """
    root = Path(root)
    rows, bad = read_metadata(root, skip_bad, limit)
    size = _target_size(root, rows, size)
    meta = root / "metadata.jsonl"
    cached = None
    if size is not None:
        key = _cache_key(root, size, skip_bad, limit)
        cached = _load_cache(root, size, key)
    if cached is not None:
        images, files, bad = cached
        by_name = {r.file_name: r for r in rows}
        kept = [by_name[f] for f in files]
    else:
        jobs = [(str(root / r.file_name), size) for r in rows]
        results: list[np.ndarray | str] = parallel_map(_decode, jobs, f"load {root.name}", progress,
                                                       processes=min(4, os.cpu_count() or 1), chunksize=256)
        kept, arrays = [], []
        for r, res in zip(rows, results):
            if isinstance(res, str):
                _bad(bad, meta, r.line, res, skip_bad)
            else:
                kept.append(r)
                arrays.append(res)
        s = size or 0
        images = np.stack(arrays) if arrays else np.zeros((0, s, s, 4), np.uint8)
        files = [r.file_name for r in kept]
        bad.sort(key=lambda m: int(m.split(":")[1]))
        if size is not None and kept:
            _save_cache(root, size, key, images, files, bad)
    attrs = [r.attributes for r in kept]
    jitter = None
    if kept and all(r.jitter is not None for r in kept):
        jitter = np.full((len(kept), JITTER_DIMS), np.nan, np.float32)
        for i, r in enumerate(kept):
            jitter[i, :len(r.jitter)] = r.jitter
    return AvatarData(root=root, files=files, images=images, captions=[r.captions for r in kept],
                      attributes=attrs if kept and all(a is not None for a in attrs) else None,
                      bad_rows=bad, jitter=jitter)
