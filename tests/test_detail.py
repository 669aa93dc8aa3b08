"""Detail masks (training.detail) and the weighted reconstruction loss that uses them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from moe_avatar.training import train_gan
from moe_avatar.training.attributes import HEAD_ITEMS, NEUTRAL_ATTRIBUTES
from moe_avatar.training.cli import main as train_main
from moe_avatar.training.dataset import load_dataset
from moe_avatar.training.detail import OWN, REGION, detail_mask, load_or_make_detail_masks
from moe_avatar.training.render import render_avatar, sample_jitter


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detail") / "ds"
    assert train_main(["synth", "--count", "24", "--size", "64", "--seed", "5", "--out", str(out), "--workers", "1"]) == 0
    return out


def _drawn(attrs: dict, jitter: list[float]) -> np.ndarray:
    """The pixels a render's head accessories cover: it against itself without them."""
    bare = dict(attrs, head_accessory=[])
    return np.abs(np.asarray(render_avatar(attrs, 64, jitter=jitter), np.int16)
                  - np.asarray(render_avatar(bare, 64, jitter=jitter), np.int16)).max(-1) > 6


def test_the_own_plane_is_the_accessories_and_the_irises() -> None:
    jitter = sample_jitter(NEUTRAL_ATTRIBUTES, np.random.default_rng(0))
    bare = dict(NEUTRAL_ATTRIBUTES, head_accessory=[])
    eyes = detail_mask(bare, jitter, 64)[OWN]
    assert 10 < eyes.sum() < 150  # two irises, a few dozen pixels at 64 px
    assert eyes[:20].sum() == 0 and eyes[45:].sum() == 0  # in the face, not the top of the head or the body
    ears = dict(bare, head_accessory=["cat ears"])
    drawn = _drawn(ears, jitter)
    assert np.array_equal(detail_mask(ears, jitter, 64)[OWN], eyes | drawn)  # the ears' pixels on top of the irises
    assert drawn.sum() > 100 and drawn[:20].sum() > 0.5 * drawn.sum()  # the ears sit on top of the head
    closed = dict(bare, expression="closed-eye happy")
    assert detail_mask(closed, jitter, 64)[OWN].sum() == 0  # closed eyes show no iris colour


def test_the_region_plane_is_where_any_accessory_would_be_worn_or_not() -> None:
    """The region is the same whether the render wears an accessory or not (so a spurious
    accessory costs as much as a missing one) and is the union of every item's pixels."""
    jitter = sample_jitter(NEUTRAL_ATTRIBUTES, np.random.default_rng(0))
    bare = dict(NEUTRAL_ATTRIBUTES, head_accessory=[])
    region = detail_mask(bare, jitter, 64)[REGION]
    items = [_drawn(dict(bare, head_accessory=[item]), jitter) for item in HEAD_ITEMS]
    assert np.array_equal(region, np.logical_or.reduce(items))
    for item, drawn in zip(HEAD_ITEMS, items):
        assert drawn.sum() > 20, item  # every item covers something of its own
    assert np.array_equal(detail_mask(dict(bare, head_accessory=["cat ears"]), jitter, 64)[REGION], region)
    assert region[45:].sum() == 0 and region.sum() < 0.5 * region.size  # the head, not the whole picture


def test_masks_are_made_once_per_dataset_and_cached(tiny_data: Path) -> None:
    data = load_dataset(tiny_data, progress=False)
    masks = load_or_make_detail_masks(data, 64, progress=False)
    assert masks.shape == (24, 2, 64, 64) and masks.dtype == bool
    i = next(k for k, a in enumerate(data.attributes) if a["head_accessory"])
    jitter = [float(u) for u in data.jitter[i][~np.isnan(data.jitter[i])]]
    assert np.array_equal(masks[i], detail_mask(data.attributes[i], jitter, 64))
    cache = tiny_data / "detail_64.npy"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    assert np.array_equal(load_or_make_detail_masks(data, 64, progress=False), masks)
    assert cache.stat().st_mtime_ns == stamp  # read, not rebuilt
    fewer = load_dataset(tiny_data, progress=False, limit=10)  # another file list: rebuilt, not reused
    assert np.array_equal(load_or_make_detail_masks(fewer, 64, progress=False), masks[:10])

    data.jitter = None  # a dataset synthesised before jitter was kept
    with pytest.raises(ValueError, match="jitter"):
        load_or_make_detail_masks(data, 64, progress=False)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    train_gan.add_arguments(p)
    return p.parse_args(argv)


def test_detail_and_region_weights_weigh_the_reconstruction_loss(tiny_data: Path, tmp_path: Path) -> None:
    """In a reconstruction-only stage the loss is the weighted L1 (plus the attribute prior's
    cross-entropy, taken out here), so it exceeds the plain L1
    that the stats report (more with the region weight added); without the options the two are equal."""
    assert train_main(["clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(tmp_path / "clip"), "--quiet"]) == 0
    clip = tmp_path / "clip" / "checkpoint.pt"
    cfg = json.loads(Path(train_gan.__file__).parent.joinpath("configs", "gan-test-rec.json").read_text())
    ratios = {}
    for weights in ((0.0, 0.0), (10.0, 0.0), (10.0, 3.0)):
        cfg["train"].update(rec_detail_weight=weights[0], rec_region_weight=weights[1], steps=2)
        path = tmp_path / f"rec-{weights}.json"
        path.write_text(json.dumps(cfg))
        out = tmp_path / f"rec-{weights}"
        assert train_gan.run(_args(["--data", str(tiny_data), "--clip", str(clip), "--config", str(path),
                                    "--out", str(out), "--quiet"])) == 0
        row = json.loads((out / "stats.jsonl").read_text().splitlines()[0])  # step 1: same start, same batch
        weighted = row["loss_g"] - cfg["train"].get("prior_weight", 0.0) * row.get("prior_loss", 0.0)  # G's prior trains too
        ratios[weights] = weighted / (row["rec_l1"] * cfg["train"]["rec_weight"])
    assert abs(ratios[0.0, 0.0] - 1) < 1e-4
    assert ratios[10.0, 0.0] > 1.05
    assert ratios[10.0, 3.0] > ratios[10.0, 0.0] + 0.02

    for name in ("rec_detail_weight", "rec_region_weight", "rec_shift"):
        cfg["train"].update(rec_weight=0.0, adversarial=True, rec_detail_weight=0.0, rec_region_weight=0.0, rec_shift=0)
        cfg["train"][name] = 3.0
        path.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=name):
            train_gan.run(_args(["--data", str(tiny_data), "--clip", str(clip), "--config", str(path),
                                 "--out", str(tmp_path / "bad"), "--quiet"]))
