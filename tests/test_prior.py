"""The generator's attribute prior (training.models.AttributePrior, model option `prior`):
known answers for the pick, the teacher-forced code, and a small G that learns both routes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training import train_gan
from training.cli import main as train_main
from training.attributes import ATTRIBUTES, NEUTRAL_ATTRIBUTES, sample_attributes
from training.labels import caption_targets
from training.latent import CODE_BLOCKS, CODE_DIMS, HEAD_SET_P, HEAD_SETS, SINGLE_FAMILIES, attribute_indices, head_set_index, indices_to_code
from training.models import AttributePrior, build_generator, load_config, load_gan_checkpoint, noise_from_seeds


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small procedural dataset and a CLIP trained on it (what train_gan needs)."""
    root = tmp_path_factory.mktemp("prior")
    assert train_main(["synth", "--count", "32", "--size", "64", "--seed", "4", "--out", str(root / "ds"), "--workers", "1"]) == 0
    assert train_main(["clip", "--data", str(root / "ds"), "--config", "clip-test", "--out", str(root / "clip"), "--quiet"]) == 0
    return root / "ds", root / "clip" / "checkpoint.pt"


def _prior_config(path: Path, base: str, model: dict | None = None, train: dict | None = None) -> Path:
    cfg = load_config(base, "gan")
    cfg["model"].update({"prior": True, "z_dim": CODE_DIMS + 4, **(model or {})})
    cfg["train"].update({"prior_weight": 1.0, **(train or {})})
    path.write_text(json.dumps(cfg))
    return path


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    train_gan.add_arguments(p)
    return p.parse_args(argv)


def test_attribute_indices_and_code_round_trip() -> None:
    rng = np.random.default_rng(0)
    attrs = [sample_attributes(rng) for _ in range(300)]
    idx = attribute_indices(attrs)
    assert idx.shape == (300, len(CODE_BLOCKS)) and CODE_DIMS == sum(CODE_BLOCKS) == 81
    for b, fam in enumerate(SINGLE_FAMILIES):
        assert [ATTRIBUTES[fam][i] for i in idx[:, b].tolist()] == [a[fam] for a in attrs]
    assert torch.equal(idx[:, -1], head_set_index(attrs))
    code = indices_to_code(idx)
    assert code.shape == (300, CODE_DIMS)
    for b, part in enumerate(torch.split(code, CODE_BLOCKS, dim=1)):
        assert (part.sum(1) == 1).all() and torch.equal(part.argmax(1), idx[:, b])


def test_pick_follows_a_sure_prior_and_the_frequencies_of_an_open_one() -> None:
    prior = AttributePrior(8, CODE_BLOCKS)
    n = 6000
    z = torch.randn(n, 100, generator=torch.Generator().manual_seed(1))
    # Block 0 (hair colour) sure of value 5; block 1 (hairstyle) uniform; the head-set block
    # at the data's frequencies.
    logits = [torch.zeros(n, k) for k in CODE_BLOCKS]
    logits[0][:, 5] = 30.0
    logits[-1] = torch.log(HEAD_SET_P).expand(n, -1).clone()
    code = prior.pick(logits, z)
    parts = torch.split(code, CODE_BLOCKS, dim=1)
    assert all((p.sum(1) == 1).all() for p in parts), "exactly one value per block"
    assert (parts[0].argmax(1) == 5).all(), "a stated value wins whatever z says"
    freq = parts[1].mean(0)
    assert (freq - 1 / 7).abs().max() < 0.02, freq  # 6000 draws: sd ~ 0.0045
    assert (parts[-1].mean(0) - HEAD_SET_P).abs().max() < 0.02
    # Different z, different picks where the prior is open; the same z, the same pick.
    assert len(set(parts[1].argmax(1).tolist())) == 7
    assert torch.equal(prior.pick(logits, z), code)


def test_generator_with_a_prior_draws_from_the_code_not_from_z_first_dims() -> None:
    cfg = dict(load_config("gan-test", "gan")["model"], z_dim=CODE_DIMS + 4, prior=True)
    torch.manual_seed(0)
    g = build_generator(cfg, 8).eval()
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    code = indices_to_code(attribute_indices([NEUTRAL_ATTRIBUTES] * 3))
    z1, z2 = torch.randn(3, cfg["z_dim"]), torch.randn(3, cfg["z_dim"])
    z2[:, CODE_DIMS:] = z1[:, CODE_DIMS:]
    with torch.no_grad():
        # Handed a code, the first CODE_DIMS dims of z do not matter; the rest do.
        assert torch.equal(g(z1, text, code=code), g(z2, text, code=code))
        z3 = z1.clone()
        z3[:, CODE_DIMS:] += 1.0
        assert not torch.allclose(g(z1, text, code=code), g(z3, text, code=code))
        # Without one, G draws exactly what its prior picks from z.
        picked = g.prior.pick(g.prior_logits(text), z1)
        assert torch.equal(g(z1, text), g(z1, text, code=picked))
    with pytest.raises(ValueError, match="z_dim 16 is smaller than the 81"):
        build_generator(dict(cfg, z_dim=16), 8)
    plain = build_generator(dict(cfg, prior=False), 8)
    with pytest.raises(ValueError, match="attribute prior"):
        plain(z1[:1], text[:1], code=code[:1])


def test_reconstruction_and_prior_loss_teach_g_the_caption_and_the_open_choice() -> None:
    """Flat-colour "renders" whose only attribute is the hair colour (3 of the 12): half the
    captions state it (T = that colour's vector), half do not (T = a shared vector). G learns
    to draw the values it is handed; its prior learns p(colour | caption): sure where the
    caption states it, the data's three colours where it does not."""
    cfg = dict(load_config("gan-test", "gan")["model"], resolution=16, ch_mult=[2, 1, 1], ngf=8, cond_hidden=32,
               z_dim=CODE_DIMS + 4, prior=True)
    torch.manual_seed(0)
    colours = [0, 5, 11]
    g = build_generator(cfg, 8)
    palette = torch.rand(len(colours), 3) * 2 - 1
    attrs = [dict(NEUTRAL_ATTRIBUTES, hair_color=ATTRIBUTES["hair_color"][c]) for c in colours]
    values = attribute_indices(attrs)
    imgs = torch.ones(len(colours), 4, 16, 16)
    imgs[:, :3] = palette[:, :, None, None]
    said = caption_targets([{"hair_color": a["hair_color"]} for a in attrs])
    silent = caption_targets([{}] * len(attrs))
    text_said = torch.eye(8)[: len(colours)]
    text_silent = torch.eye(8)[[7, 7, 7]]
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    for _ in range(250):
        loss = torch.zeros(())
        for text, cap in ((text_said, said), (text_silent, silent)):
            loss = loss + train_gan.reconstruction_error(g, imgs, text, None, None, cap, values=values).mean()
            loss = loss + train_gan.prior_loss(g, text, values, cap)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, acc = train_gan.prior_loss(g, text_said, values, said)
    assert float(acc) == 1.0
    with torch.no_grad():
        def nearest(out: torch.Tensor) -> list[int]:
            return torch.cdist(out[:, :3].mean((2, 3)), palette).argmin(1).tolist()
        # Stated: any noise draws the caption's colour.
        z = torch.randn(30, cfg["z_dim"])
        for c in range(len(colours)):
            assert set(nearest(g(z, text_said[c].expand(30, -1)))) == {c}
        # Silent: z chooses among the three colours the data has, each about a third of the time.
        picks = nearest(g(torch.randn(300, cfg["z_dim"]), text_silent[:1].expand(300, -1)))
        assert all(60 < picks.count(c) < 140 for c in range(len(colours))), [picks.count(c) for c in range(3)]


@pytest.mark.parametrize("model, train, message", [
    ({}, {"prior_weight": 0.0}, "needs train.prior_weight > 0"),
    ({}, {"latent": "argmax"}, "train.latent codes z"),
    ({"prior": False}, {}, "train.prior_weight trains the attribute prior: it needs model option prior"),
])
def test_prior_options_are_checked_before_training(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                   model: dict, train: dict, message: str) -> None:
    data, clip = tiny_run
    cfg = _prior_config(tmp_path / "cfg.json", "gan-test-rec", model, train)
    with pytest.raises(ValueError, match=message):
        train_gan.run(_args(["--data", str(data), "--clip", str(clip), "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_both_stages_train_the_prior_and_the_exported_graph_matches(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """gan-test-rec then gan-test (--init), each with the prior: the stats report the prior's
    loss, the checkpoint rebuilds a G with a prior, and its ONNX graph (the exporter's own
    GeneratorGraph, run by ONNX Runtime) picks the same values and draws the same pixels."""
    import onnxruntime as ort

    from export.bundle import ExportOptions, export_bundle
    from export.graphs import GeneratorGraph

    data, clip = tiny_run
    base = ["--data", str(data), "--clip", str(clip), "--steps", "3", "--quiet"]
    rec, gan = tmp_path / "rec", tmp_path / "gan"
    assert train_gan.run(_args(base + ["--config", str(_prior_config(tmp_path / "rec.json", "gan-test-rec")), "--out", str(rec)])) == 0
    assert train_gan.run(_args(base + ["--config", str(_prior_config(tmp_path / "gan.json", "gan-test")), "--out", str(gan),
                                       "--init", str(rec / "checkpoint.pt")])) == 0
    for run in (rec, gan):
        rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
        assert all(r["prior_ce"] > 0 and 0 <= r["prior_acc_stated"] <= 1 for r in rows)
    g, _, raw = load_gan_checkpoint(gan / "checkpoint.pt")
    assert g.prior is not None
    z = torch.from_numpy(noise_from_seeds(list(range(6)), g.z_dim))
    text = torch.nn.functional.normalize(torch.randn(6, raw["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=1)
    psi = torch.tensor([1.0, 1.0, 0.7, 0.7, 0.0, 0.5])
    export_bundle(clip, gan / "checkpoint.pt", tmp_path / "bundle", ExportOptions(name="prior", version="0.0.1"),
                           log=lambda *_: None)  # checks its own parity too
    sess = ort.InferenceSession(str(tmp_path / "bundle" / "generator.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"z": z.numpy(), "text_embedding": text.numpy(), "psi": psi.numpy()})[0]
    with torch.no_grad():
        ref = GeneratorGraph(g)(z, text, psi).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
