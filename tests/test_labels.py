"""Attribute targets and heads (training.labels) and the recipe that uses them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS, sample_attributes, visible_families
from moe_avatar.training.cli import main as train_main
from moe_avatar.training.labels import AttributeHeads, attribute_loss, caption_targets, image_targets, mention_targets


def test_caption_targets_hold_only_what_the_caption_states() -> None:
    t = caption_targets([
        {"hair_color": "pink", "head_accessory": ["ribbon"]},
        {"expression": "wink", "head_accessory": []},
        {"background": "mint"},
    ])
    assert t["hair_color"].tolist() == [ATTRIBUTES["hair_color"].index("pink"), -1, -1]
    assert t["expression"].tolist() == [-1, ATTRIBUTES["expression"].index("wink"), -1]
    ribbon = HEAD_ITEMS.index("ribbon")
    # "a ribbon" says nothing about the other items; "no head accessories" says 0 for all.
    assert t["head_accessory"][0].tolist() == [1.0 if i == ribbon else -1.0 for i in range(len(HEAD_ITEMS))]
    assert t["head_accessory"][1].tolist() == [0.0] * len(HEAD_ITEMS)
    assert t["head_accessory"][2].tolist() == [-1.0] * len(HEAD_ITEMS)


def test_mention_targets_say_which_items_the_text_names() -> None:
    """The CLIP text heads' targets: where a caption speaks about head accessories, every item
    it does not name is 0 (so "a ribbon" is a negative for cat ears); the rest as caption_targets."""
    cap = caption_targets([
        {"hair_color": "pink", "head_accessory": ["ribbon"]},
        {"expression": "wink", "head_accessory": []},
        {"background": "mint"},
        {"head_accessory": ["cat ears", "flower"]},
    ])
    t = mention_targets(cap)
    ribbon, ears, flower = (HEAD_ITEMS.index(h) for h in ("ribbon", "cat ears", "flower"))
    assert t["head_accessory"][0].tolist() == [1.0 if i == ribbon else 0.0 for i in range(len(HEAD_ITEMS))]
    assert t["head_accessory"][1].tolist() == [0.0] * len(HEAD_ITEMS)
    assert t["head_accessory"][2].tolist() == [-1.0] * len(HEAD_ITEMS)  # silent about accessories: still unknown
    assert t["head_accessory"][3].tolist() == [1.0 if i in (ears, flower) else 0.0 for i in range(len(HEAD_ITEMS))]
    assert all(torch.equal(t[f], cap[f]) for f in ATTRIBUTES if f != "head_accessory")
    assert cap["head_accessory"][0, ears] == -1.0  # the input is not changed


def test_image_targets_are_the_ground_truth_of_visible_families() -> None:
    rng = np.random.default_rng(0)
    attrs = [sample_attributes(rng) for _ in range(200)]
    t = image_targets(attrs)
    for i, a in enumerate(attrs):
        vis = visible_families(a)
        for f, values in ATTRIBUTES.items():
            if f == "head_accessory":
                row = t[f][i].tolist()
                expect = [float(h in a[f]) for h in HEAD_ITEMS] if f in vis else [-1.0] * len(HEAD_ITEMS)
                assert row == expect
            else:
                assert t[f][i].item() == (values.index(a[f]) if f in vis else -1)
    assert any(len(visible_families(a)) < len(ATTRIBUTES) for a in attrs)  # some families really are hidden


def test_attribute_loss_ignores_unknown_targets_and_scores_accuracy() -> None:
    targets = caption_targets([{"hair_color": "pink"}, {"hair_color": "blue", "head_accessory": []}])
    logits = {f: torch.zeros(2, len(HEAD_ITEMS) if f == "head_accessory" else len(v)) for f, v in ATTRIBUTES.items()}
    logits["hair_color"][0, ATTRIBUTES["hair_color"].index("pink")] = 20.0
    logits["hair_color"][1, ATTRIBUTES["hair_color"].index("blue")] = 20.0
    logits["head_accessory"][1] = -20.0
    loss, acc = attribute_loss(logits, targets)
    assert acc == 1.0 and loss.item() < 1e-3
    # Garbage in the logits of families nobody stated changes nothing.
    logits["eye_color"] += torch.randn_like(logits["eye_color"]) * 50
    assert attribute_loss(logits, targets)[0].item() == loss.item()
    # A wrong answer on a known target costs and counts.
    logits["hair_color"][1] = 0.0
    logits["hair_color"][1, ATTRIBUTES["hair_color"].index("black")] = 20.0
    loss2, acc2 = attribute_loss(logits, targets)
    known = 2 + len(HEAD_ITEMS)  # two hair colours and every head item of "no head accessories"
    assert loss2.item() > 0.5 and acc2 == (known - 1) / known


def test_heads_learn_attributes_from_features() -> None:
    """A linear head fits labels carried linearly by the features (what CLIP's heads ask of the embedding)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    attrs = [sample_attributes(rng) for _ in range(256)]
    t = image_targets(attrs)
    feats = torch.cat([torch.nn.functional.one_hot(t[f].clamp(min=0), len(v)).float()
                       for f, v in ATTRIBUTES.items() if f != "head_accessory"] + [t["head_accessory"].clamp(min=0)], 1)
    heads = AttributeHeads(feats.shape[1])
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    _, acc0 = attribute_loss(heads(feats), t)
    for _ in range(150):
        loss, acc = attribute_loss(heads(feats), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc0 < 0.7 and attribute_loss(heads(feats), t)[1] > 0.99


def test_cpu_preset_trains_what_the_bundled_model_records() -> None:
    """`pipeline --preset cpu` must rebuild the bundled model: the model and train settings
    its clip and last gan stage run (their configs, as the preset passes them) are the ones
    models/chibi-64/manifest.json records (a preset that overrode a config's step count would
    no longer rebuild the bundle)."""
    import argparse
    from dataclasses import asdict

    from moe_avatar.training.models import load_config
    from moe_avatar.training.pipeline import PRESETS
    from moe_avatar.training.train_config import UpscalerTrainConfig, parse_section
    from moe_avatar.training.train_gan import read_config
    from moe_avatar.training.upscaler import UpscalerModelConfig

    recorded = json.loads((Path(__file__).resolve().parents[1] / "models" / "chibi-64" / "manifest.json").read_text())["training"]
    preset = PRESETS["cpu"]
    clip = load_config(preset["clip"]["config"])
    clip["train"]["steps"] = preset["clip"].get("steps") or clip["train"]["steps"]  # what the pipeline passes
    assert (clip["model"], clip["train"]) == (recorded["clip"]["model"], recorded["clip"]["train"])
    last = preset["gan"][-1]  # resolved as the trainer resolves it: every option, the attribute schema
    gan, _ = read_config(argparse.Namespace(config=last["config"], steps=last.get("steps")))
    gan = json.loads(json.dumps(gan))  # as the manifest stores it (tuples become lists)
    assert (gan["model"], gan["train"]) == (recorded["gan"]["model"], recorded["gan"]["train"])
    assert recorded["gan_step"] == gan["train"]["steps"]  # the checkpoint exported is the stage's last

    upscaler = load_config(preset["upscaler"]["config"])  # the bundle's upscaler.onnx, its sections resolved
    assert asdict(parse_section(UpscalerModelConfig, upscaler["model"], "model")) == recorded["upscaler"]["model"]
    assert asdict(parse_section(UpscalerTrainConfig, upscaler["train"], "train")) == recorded["upscaler"]["train"]


def test_pipeline_test_preset_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_main(["pipeline", "--preset", "test", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings) == ["synth", "clip", "gan_rec", "gan", "upscaler"]
    up_stats = [json.loads(line) for line in (out / "upscaler" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in up_stats] == [1, 2] and up_stats[-1]["psnr"] > 0
    # The cpu recipe's supervision is in the configs, from the first step: CLIP heads, then
    # reconstruction alone (no D), then AC-GAN with the reconstruction anchor from gan_rec's weights.
    clip_stats = [json.loads(line) for line in (out / "clip" / "stats.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["attr_acc_text"] <= 1.0 and 0.0 <= r["attr_acc_image"] <= 1.0 for r in clip_stats)
    gan_cfg = json.loads((out / "gan" / "config.json").read_text())
    assert gan_cfg["clip"]["checkpoint"] == str(out / "clip" / "checkpoint.pt")
    rec_stats = [json.loads(line) for line in (out / "gan_rec" / "stats.jsonl").read_text().splitlines()]
    assert rec_stats and all(r["rec_l1"] > 0 and "loss_d" not in r for r in rec_stats)
    # Both generator stages score G against the render moved to where G drew it (rec_shift).
    assert all(0.0 <= r["rec_moved"] <= 1.0 for r in rec_stats)
    assert gan_cfg["init"] == str(out / "gan_rec" / "checkpoint.pt")
    stats = [json.loads(line) for line in (out / "gan" / "stats.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["attr_acc_real"] <= 1.0 and np.isfinite(r["cls_g"]) and r["rec_l1"] > 0 and 0.0 <= r["rec_moved"] <= 1.0
               for r in stats)
