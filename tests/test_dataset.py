"""Dataset reader: synthetic layout, user ImageFolder, broken data, cache."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from moe_avatar.training import dataset as ds
from moe_avatar.training.dataset import DatasetError, load_dataset
from moe_avatar.training.synth import synthesize


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    synthesize(root, 10, size=64, seed=0, workers=1, progress=False)
    return root


def _write_meta(root, rows):
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")


def test_synthetic_layout(synthetic):
    d = load_dataset(synthetic, progress=False)
    assert d.images.shape == (10, 64, 64, 4) and d.images.dtype == np.uint8
    assert len(d.captions) == 10 and all(len(c) == 6 for c in d.captions)
    assert {c.lang for c in d.captions[0]} == {"en", "zh"}
    assert all(c.states for c in d.captions[0])
    assert d.attributes is not None and len(d.attributes) == 10 and d.bad_rows == []
    half = load_dataset(synthetic, size=32, progress=False, limit=4)
    assert half.images.shape == (4, 32, 32, 4)


def test_cache_is_used_and_invalidated(synthetic, monkeypatch):
    first = load_dataset(synthetic, size=48, progress=False)
    assert (synthetic / "cache_48.npy").exists()

    def boom(job):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(ds, "_decode", boom)
    again = load_dataset(synthetic, size=48, progress=False)
    assert np.array_equal(first.images, again.images) and first.files == again.files
    meta = synthetic / "metadata.jsonl"
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # metadata "changed"
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset(synthetic, size=48, progress=False)


@pytest.fixture()
def imagefolder(tmp_path):
    Image.new("RGB", (80, 60), (200, 30, 30)).save(tmp_path / "a.jpg", quality=95)
    stripes = Image.new("RGB", (90, 30), (0, 0, 255))
    stripes.paste((0, 255, 0), (30, 0, 60, 30))  # green middle third
    stripes.save(tmp_path / "b.png")
    Image.new("L", (40, 40), 128).save(tmp_path / "c.png")
    _write_meta(tmp_path, [{"file_name": "a.jpg", "text": "a red square"},
                           {"file_name": "b.png", "text": ["stripes", "蓝绿条纹"]},
                           {"file_name": "c.png", "text": "grey"}])
    return tmp_path


def test_user_imagefolder(imagefolder):
    d = load_dataset(imagefolder, size=32, progress=False)
    assert d.images.shape == (3, 32, 32, 4)
    assert (d.images[..., 3] == 255).all()  # RGB/L become opaque RGBA
    assert d.attributes is None
    assert [c.text for c in d.captions[1]] == ["stripes", "蓝绿条纹"]
    assert all(c.lang == "" and c.states == {} for c in d.captions[1])
    # centre crop of the 90x30 stripes keeps only the green middle third
    assert (d.images[1, :, :, 1] > 200).all() and (d.images[1, :, :, 2] < 60).all()
    assert abs(int(d.images[0, 16, 16, 0]) - 200) < 10


@pytest.mark.parametrize("row, reason", [
    ({"file_name": "missing.png", "text": "x"}, "file not found"),
    ({"file_name": "a.jpg", "text": "  "}, "empty caption"),
    ('{"file_name": "a.jpg", "text": ', "invalid JSON"),
    ({"text": "no file"}, "missing field 'file_name'"),
    ({"file_name": "a.jpg"}, "missing field 'text'"),
    ({"file_name": "a.jpg", "text": []}, "empty caption"),
    ({"file_name": "a.jpg", "text": "x", "jitter": [0.5, 1.5]}, "'jitter' must be a list of at most 21 numbers in [0, 1)"),
])
def test_broken_rows_name_file_and_line(imagefolder, row, reason):
    rows = [{"file_name": "a.jpg", "text": "ok"}, row]
    _write_meta(imagefolder, rows)
    with pytest.raises(DatasetError) as e:
        load_dataset(imagefolder, size=32, progress=False)
    msg = str(e.value)
    assert "metadata.jsonl:2:" in msg and reason in msg
    if reason == "file not found":
        assert str(imagefolder / "missing.png") in msg


def test_unreadable_and_unsupported_images(imagefolder):
    (imagefolder / "junk.png").write_bytes(b"not a png at all")
    Image.new("CMYK", (16, 16)).save(imagefolder / "cmyk.jpg")
    for name, reason in (("junk.png", "cannot read image"), ("cmyk.jpg", "unsupported image mode")):
        _write_meta(imagefolder, [{"file_name": name, "text": "x"}])
        with pytest.raises(DatasetError, match=reason) as e:
            load_dataset(imagefolder, size=32, progress=False)
        assert name in str(e.value) and ":1:" in str(e.value)


def test_skip_bad_counts_rows(imagefolder):
    _write_meta(imagefolder, [{"file_name": "a.jpg", "text": "ok"},
                              {"file_name": "missing.png", "text": "x"},
                              "{bad json",
                              {"file_name": "b.png", "text": ""},
                              {"file_name": "c.png", "text": "fine"}])
    d = load_dataset(imagefolder, size=32, skip_bad=True, progress=False)
    assert d.files == ["a.jpg", "c.png"] and d.images.shape[0] == 2
    assert len(d.bad_rows) == 3
    assert [r.split(":")[1] for r in d.bad_rows] == ["2", "3", "4"]
    assert all(r.startswith("metadata.jsonl:") for r in d.bad_rows)


def test_missing_metadata(tmp_path):
    with pytest.raises(DatasetError, match="metadata.jsonl"):
        load_dataset(tmp_path, progress=False)
