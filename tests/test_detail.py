"""Detail masks (training.detail) and the weighted reconstruction loss that uses them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from training import train_gan
from training.attributes import NEUTRAL_ATTRIBUTES
from training.cli import main as train_main
from training.dataset import load_dataset
from training.detail import detail_mask, load_or_make_detail_masks
from training.render import render_avatar, sample_jitter


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detail") / "ds"
    assert train_main(["synth", "--count", "24", "--size", "64", "--seed", "5", "--out", str(out), "--workers", "1"]) == 0
    return out


def test_the_mask_is_the_accessories_and_the_irises() -> None:
    jitter = sample_jitter(NEUTRAL_ATTRIBUTES, np.random.default_rng(0))
    bare = dict(NEUTRAL_ATTRIBUTES, head_accessory=[])
    eyes = detail_mask(bare, jitter, 64)
    assert 10 < eyes.sum() < 150  # two irises, a few dozen pixels at 64 px
    assert eyes[:20].sum() == 0 and eyes[45:].sum() == 0  # in the face, not the top of the head or the body
    ears = dict(bare, head_accessory=["cat ears"])
    with_ears = detail_mask(ears, jitter, 64)
    drawn = np.abs(np.asarray(render_avatar(ears, 64, jitter=jitter), np.int16)
                   - np.asarray(render_avatar(bare, 64, jitter=jitter), np.int16)).max(-1) > 6
    assert np.array_equal(with_ears, eyes | drawn)  # exactly the ears' pixels on top of the irises
    assert drawn.sum() > 100 and drawn[:20].sum() > 0.5 * drawn.sum()  # the ears sit on top of the head
    closed = dict(bare, expression="closed-eye happy")
    assert detail_mask(closed, jitter, 64).sum() == 0  # closed eyes show no iris colour


def test_masks_are_made_once_per_dataset_and_cached(tiny_data: Path) -> None:
    data = load_dataset(tiny_data, progress=False)
    masks = load_or_make_detail_masks(data, 64, progress=False)
    assert masks.shape == (24, 64, 64) and masks.dtype == bool
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


def test_rec_detail_weight_weighs_the_reconstruction_loss(tiny_data: Path, tmp_path: Path) -> None:
    """In a reconstruction-only stage the loss is the weighted L1, so it exceeds the plain L1
    that the stats report; without the option the two are equal."""
    assert train_main(["clip", "--data", str(tiny_data), "--config", "clip-test", "--out", str(tmp_path / "clip"), "--quiet"]) == 0
    clip = tmp_path / "clip" / "checkpoint.pt"
    cfg = json.loads(Path(train_gan.__file__).parent.joinpath("configs", "gan-test-rec.json").read_text())
    losses = {}
    for weight in (0.0, 10.0):
        cfg["train"].update(rec_detail_weight=weight, steps=2)
        path = tmp_path / f"rec-{weight}.json"
        path.write_text(json.dumps(cfg))
        out = tmp_path / f"rec-{weight}"
        assert train_gan.run(_args(["--data", str(tiny_data), "--clip", str(clip), "--config", str(path),
                                    "--out", str(out), "--quiet"])) == 0
        rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
        losses[weight] = [(r["loss_g"], r["rec_l1"] * cfg["train"]["rec_weight"]) for r in rows]
    assert all(abs(loss - plain) < 1e-4 for loss, plain in losses[0.0])
    assert all(loss > 1.05 * plain for loss, plain in losses[10.0])

    cfg["train"].update(rec_weight=0.0, adversarial=True, rec_detail_weight=10.0)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rec_detail_weight"):
        train_gan.run(_args(["--data", str(tiny_data), "--clip", str(clip), "--config", str(path),
                             "--out", str(tmp_path / "bad"), "--quiet"]))
