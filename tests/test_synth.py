"""Synthesis command: determinism across runs and worker counts, layout, coverage."""

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from moe_avatar.training import synth
from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS, HEAD_PAIRS, MULTI_VALUED, sample_attributes, validate_attributes
from moe_avatar.training.dataset import load_dataset
from moe_avatar.training.render import JITTER_DIMS, jitter_draws, render_avatar


def assert_true_of(states: dict, attrs: dict) -> None:
    for fam, v in states.items():
        if fam == MULTI_VALUED:
            assert set(v) <= set(attrs[fam]) and (v or not attrs[fam])
        else:
            assert v == attrs[fam]


def _snapshot(root):
    files = sorted((root / "images").iterdir())
    return [f.read_bytes() for f in files], (root / "metadata.jsonl").read_bytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    out = {}
    for name, seed, workers in (("a", 3, 1), ("b", 3, 2), ("c", 4, 1)):
        synth.synthesize(base / name, 24, size=64, seed=seed, workers=workers, progress=False, chunksize=5)
        out[name] = base / name
    return out


def test_same_seed_same_bytes_any_worker_count(runs):
    assert _snapshot(runs["a"]) == _snapshot(runs["b"])


def test_different_seed_differs(runs):
    imgs_a, meta_a = _snapshot(runs["a"])
    imgs_c, meta_c = _snapshot(runs["c"])
    assert meta_a != meta_c and sum(x != y for x, y in zip(imgs_a, imgs_c)) >= 20


def test_layout_and_metadata(runs):
    root = runs["a"]
    info = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert info["count"] == 24 and info["size"] == 64 and info["seed"] == 3
    assert info["attributes"] == ATTRIBUTES and info["generator_version"] == synth.GENERATOR_VERSION
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["file_name"] for r in rows] == [f"images/{i:06d}.png" for i in range(24)]
    for r in rows:
        validate_attributes(r["attributes"])
        assert set(r["captions"]) == {"en", "zh"}
        for c in r["captions"]["en"] + r["captions"]["zh"]:
            assert_true_of(c["states"], r["attributes"])
    # the reader agrees with the writer
    data = load_dataset(root, progress=False)
    assert data.images.shape == (24, 64, 64, 4) and data.attributes == [r["attributes"] for r in rows]
    # each row's jitter draws, padded with NaN where a background uses fewer
    assert data.jitter.shape == (24, JITTER_DIMS)
    for r, j in zip(rows, data.jitter):
        n = jitter_draws(r["attributes"]["background"])
        assert np.array_equal(j[:n], np.float32(r["jitter"])) and np.isnan(j[n:]).all()


def test_png_matches_render(runs):
    """A stored PNG decodes to exactly what make_sample renders."""
    data, row = synth.make_sample(3, 5, 64)
    assert (runs["a"] / "images" / "000005.png").read_bytes() == data
    assert row["file_name"] == "images/000005.png"
    # the row says everything the render depends on: its attributes and its jitter draws
    assert synth.png_bytes(render_avatar(row["attributes"], 64, jitter=row["jitter"])) == data


def test_every_value_is_sampled_near_uniformly():
    rng = np.random.default_rng(0)
    n = 4000
    samples = [sample_attributes(rng) for _ in range(n)]
    for fam, values in ATTRIBUTES.items():
        if fam == MULTI_VALUED:
            continue
        counts = Counter(s[fam] for s in samples)
        assert set(counts) == set(values)
        expected = n / len(values)
        assert all(abs(c - expected) < 0.3 * expected for c in counts.values()), (fam, counts)
    heads = Counter(tuple(s[MULTI_VALUED]) for s in samples)
    assert heads[()] > 0 and all(heads[(h,)] > 100 for h in HEAD_ITEMS)
    assert all(heads[p] > 50 for p in HEAD_PAIRS)
    per_item = Counter(h for s in samples for h in s[MULTI_VALUED])
    assert min(per_item.values()) > 0.12 * n


def test_command_with_preview(tmp_path):
    p = argparse.ArgumentParser()
    synth.add_arguments(p)
    args = p.parse_args(["--count", "6", "--size", "64", "--out", str(tmp_path / "ds"), "--seed", "1",
                         "--workers", "1", "--preview", str(tmp_path / "sheet.png"), "--no-progress"])
    assert synth.run(args) == 0
    assert len(list((tmp_path / "ds" / "images").glob("*.png"))) == 6
    from PIL import Image
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.height >= 64 * len(ATTRIBUTES)
