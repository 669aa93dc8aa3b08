"""The generator's attribute prior (training.models.AttributePrior, model option `prior`):
known answers for the pick, the teacher-forced code, and a small G that learns both routes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_avatar.bundle import noise_from_seeds
from moe_avatar.training import losses, train_gan
from moe_avatar.training.attributes import ATTRIBUTES, HEAD_ITEMS, NEUTRAL_ATTRIBUTES, sample_attributes, visible_families
from moe_avatar.training.cli import main as train_main
from moe_avatar.training.labels import caption_targets
from moe_avatar.training.latent import (
    CODE_BLOCKS,
    CODE_DIMS,
    CODE_HIDERS,
    CODE_LOG_MARGINAL,
    HEAD_SET_P,
    SINGLE_FAMILIES,
    attribute_indices,
    code_to_attributes,
    head_set_index,
    indices_to_code,
    open_log_frequencies,
)
from moe_avatar.training.models import AttributePrior, build_generator, load_config, load_gan_checkpoint


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


def test_code_to_attributes_inverts_the_code() -> None:
    rng = np.random.default_rng(3)
    attrs = [sample_attributes(rng) for _ in range(200)]
    back = code_to_attributes(indices_to_code(attribute_indices(attrs)))
    for a, b in zip(attrs, back):
        assert {**a, "head_accessory": sorted(a["head_accessory"])} == {**b, "head_accessory": sorted(b["head_accessory"])}


def test_drawn_targets_ask_for_the_picked_value_of_the_stated_families() -> None:
    """G with a prior is judged on what it was handed: where the prior picked blue for a
    caption that says red, D's and CLIP's heads must read blue; unstated families stay unknown."""
    picked = [dict(NEUTRAL_ATTRIBUTES, hair_color="blue", eye_color="green", head_accessory=["cat ears"]),
              dict(NEUTRAL_ATTRIBUTES, hair_color="pink", face_accessory="sunglasses", eye_color="red")]
    caption = caption_targets([{"hair_color": "red", "head_accessory": ["ribbon"]}, {"eye_color": "red", "bangs": NEUTRAL_ATTRIBUTES["bangs"]}])
    t = losses.drawn_targets(indices_to_code(attribute_indices(picked)), caption)
    hair = ATTRIBUTES["hair_color"]
    assert t["hair_color"].tolist() == [hair.index("blue"), -1]
    assert t["eye_color"].tolist() == [-1, -1]  # row 1: stated, but the picked sunglasses hide the eyes
    assert t["bangs"].tolist() == [-1, ATTRIBUTES["bangs"].index(NEUTRAL_ATTRIBUTES["bangs"])]
    assert t["head_accessory"][0].tolist() == [float(h == "cat ears") for h in HEAD_ITEMS]
    assert (t["head_accessory"][1] == -1).all()


def test_pick_follows_a_sure_prior_and_the_frequencies_of_an_open_one() -> None:
    prior = AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL)
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


def test_prior_is_the_value_head_where_the_gate_says_stated_and_the_data_where_not() -> None:
    """p = s * softmax(v) + (1 - s) * the data's frequencies, block by block."""
    prior = AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL)
    last = prior.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[5] = 12.0                       # hair colour's value head: value 5
        gates = last.bias[CODE_DIMS:]
        gates[0], gates[1], gates[-1] = 20.0, -20.0, -20.0  # hair colour stated; hairstyle, head set not
        gates[3] = 0.0                            # eye colour: even odds
        p = [lg.exp() for lg in prior(torch.randn(4, 8))]
    assert torch.allclose(sum(x.sum(1) for x in p), torch.full((4,), float(len(CODE_BLOCKS))), atol=1e-5)
    assert (p[0][:, 5] > 0.99).all()
    assert torch.allclose(p[1], torch.full_like(p[1], 1 / 7), atol=1e-6)
    assert torch.allclose(p[-1], HEAD_SET_P.expand(4, -1), atol=1e-6)
    assert torch.allclose(p[3], torch.full_like(p[3], 1 / CODE_BLOCKS[3]), atol=1e-6)  # value head uniform too
    with pytest.raises(ValueError, match="log_marginal needs 81"):
        AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL[:-1])


def test_temperature_sharpens_a_stated_family_and_keeps_an_open_one_at_the_data() -> None:
    """prior_temperature t: p = sigmoid(g / t) * softmax(v / t) + (1 - sigmoid(g / t)) * data."""
    priors = {t: AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL, temperature=t) for t in (1.0, 0.5)}
    for prior in priors.values():
        prior.load_state_dict(priors[1.0].state_dict())
        last = prior.net[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[:2] = torch.tensor([1.0, 0.0])  # hair colour: black vs brown, e to 1 (and 10 others at 1)
            last.bias[CODE_DIMS] = 1.0                # its gate: sigmoid(1) = 0.73
            last.bias[CODE_BLOCKS[0]] = 3.0            # hairstyle's value head leans to its first value ...
            last.bias[CODE_DIMS + 1] = -8.0           # ... but the gate says it is not stated
    text = torch.randn(3, 8)
    with torch.no_grad():
        p1, p2 = ([lg.exp() for lg in priors[t](text)] for t in (1.0, 0.5))
    for t, p in ((1.0, p1), (0.5, p2)):
        s = torch.sigmoid(torch.tensor(1.0 / t))
        v = torch.softmax(torch.tensor([1.0, 0.0] + [0.0] * 10) / t, dim=0)
        assert torch.allclose(p[0][0], s * v + (1 - s) / 12, atol=1e-6)
    assert p2[0][0, 0] > p1[0][0, 0] + 0.1            # the best guess wins more often
    assert (p2[1] - 1 / 7).abs().max() < (p1[1] - 1 / 7).abs().max() < 3e-4  # an open family: closer to the data
    with pytest.raises(ValueError, match="temperature must be > 0"):
        AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL, temperature=0.0)
    cfg = dict(load_config("gan-test", "gan")["model"], z_dim=CODE_DIMS + 4, prior=True, prior_temperature=0.5)
    assert build_generator(cfg, 8).prior.temperature == 0.5
    with pytest.raises(ValueError, match="prior_temperature"):
        build_generator(dict(cfg, prior=False), 8)


def test_hiding_rules_are_read_off_the_renderer() -> None:
    """Sunglasses and closed-eye happy hide both eye families, a mask the mouth-only expressions;
    nothing else hides anything (training.attributes.visible_families)."""
    starts = np.cumsum([0] + CODE_BLOCKS[:-1])
    named = set()
    for i, block, which in CODE_HIDERS:
        b = int(np.searchsorted(starts, i, side="right")) - 1
        fam = SINGLE_FAMILIES[b]
        named.add((fam, ATTRIBUTES[fam][i - starts[b]], SINGLE_FAMILIES[block],
                   tuple(v for v, w in zip(ATTRIBUTES[SINGLE_FAMILIES[block]], which[starts[block]:].tolist()) if w)))
    eyes = [("eye_color", tuple(ATTRIBUTES["eye_color"])), ("eye_shape", tuple(ATTRIBUTES["eye_shape"]))]
    assert named == {(f, v, h, w) for f, v in (("face_accessory", "sunglasses"), ("expression", "closed-eye happy")) for h, w in eyes} | {
        ("face_accessory", "mask", "expression", ("smile", "neutral", "open mouth"))}


def test_a_stated_family_is_not_hidden_by_what_the_prior_picks_for_the_others() -> None:
    """A caption that states the eye colour (gate sure) gets no sunglasses and no closed-eye
    happy among the open families; one that states a smile gets no mask; a caption that
    states neither keeps the data's frequencies."""
    prior = AttributePrior(8, CODE_BLOCKS, CODE_LOG_MARGINAL, CODE_HIDERS)
    last = prior.net[-1]
    b = {f: i for i, f in enumerate(SINGLE_FAMILIES)}
    starts = np.cumsum([0] + CODE_BLOCKS[:-1])
    with torch.no_grad():
        for layer in (prior.net[0], prior.net[2]):  # hidden units 0..7 = the (one-hot) text
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[:8, :8] = torch.eye(8)
        last.weight.zero_()
        last.bias.zero_()
        gates = last.bias[CODE_DIMS:]
        gates.fill_(-20.0)
        text = torch.eye(8)[:3]
        last.weight[CODE_DIMS + b["eye_color"], 0] = 40.0          # text 0 states the eye colour
        last.weight[CODE_DIMS + b["expression"], 1] = 40.0         # text 1 states the expression: smile
        last.weight[starts[b["expression"]] + ATTRIBUTES["expression"].index("smile"), 1] = 30.0
        p = [lg.exp() for lg in prior(text)]
    face, expr = p[b["face_accessory"]], p[b["expression"]]
    sun, mask = ATTRIBUTES["face_accessory"].index("sunglasses"), ATTRIBUTES["face_accessory"].index("mask")
    happy = ATTRIBUTES["expression"].index("closed-eye happy")
    assert face[0, sun] < 1e-6 and expr[0, happy] < 1e-6
    assert torch.allclose(face[0, [i for i in range(4) if i != sun]], torch.full((3,), 1 / 3), atol=1e-5)
    assert face[1, mask] < 1e-6 and abs(float(face[1, sun]) - 1 / 3) < 1e-5 and expr[1, ATTRIBUTES["expression"].index("smile")] > 0.99
    assert torch.allclose(face[2], torch.full((4,), 0.25), atol=1e-6) and torch.allclose(expr[2], torch.full((6,), 1 / 6), atol=1e-6)


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
    to draw the values it is handed; its prior learns which captions state the colour (sure
    of it there) and leaves the others at the data's frequencies (all 12 colours, 1/12 each)."""
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
            loss = loss + losses.reconstruction_error(g, imgs, text, values)[0].mean()
            loss = loss + losses.prior_loss(g, text, values, cap)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, acc = losses.prior_loss(g, text_said, values, said)
    assert float(acc) == 1.0
    with torch.no_grad():
        def nearest(out: torch.Tensor) -> list[int]:
            return torch.cdist(out[:, :3].mean((2, 3)), palette).argmin(1).tolist()
        # Stated: any noise draws the caption's colour.
        z = torch.randn(30, cfg["z_dim"])
        for c in range(len(colours)):
            assert set(nearest(g(z, text_said[c].expand(30, -1)))) == {c}
        # Silent: the prior says the data's frequencies, and z picks every colour about as often.
        p = g.prior_logits(text_silent[:1])[0].exp()[0]
        assert (p - 1 / 12).abs().max() < 0.03, p
        z = torch.randn(1200, cfg["z_dim"])
        picks = g.prior.pick(g.prior_logits(text_silent[:1].expand(1200, -1)), z)[:, :12].argmax(1)
        counts = torch.bincount(picks, minlength=12)
        assert (counts > 50).all() and (counts < 150).all(), counts.tolist()
        # ... and G draws the pick (for the three colours it has seen).
        seen = torch.isin(picks, torch.tensor(colours))
        drawn = nearest(g(z[seen], text_silent[:1].expand(int(seen.sum()), -1)))
        assert [colours[d] for d in drawn] == picks[seen].tolist()


@pytest.mark.parametrize("model, train, message", [
    ({}, {"prior_weight": 0.0}, "needs prior_weight > 0"),
    ({}, {"latent": "argmax"}, "unknown key 'latent'"),
    ({"prior": False}, {}, "prior_weight needs model option prior"),
    ({"prior": False}, {"prior_weight": 0.0, "prior_open_from_data": True}, "prior_open_from_data needs model option prior"),
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

    from moe_avatar.export.bundle import ExportOptions, export_bundle
    from moe_avatar.export.graphs import GeneratorGraph

    data, clip = tiny_run
    base = ["--data", str(data), "--clip", str(clip), "--steps", "3", "--quiet"]
    rec, gan = tmp_path / "rec", tmp_path / "gan"
    assert train_gan.run(_args(base + ["--config", str(_prior_config(tmp_path / "rec.json", "gan-test-rec")), "--out", str(rec)])) == 0
    assert train_gan.run(_args(base + ["--config", str(_prior_config(tmp_path / "gan.json", "gan-test")), "--out", str(gan),
                                       "--init", str(rec / "checkpoint.pt")])) == 0
    for run in (rec, gan):
        rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
        assert all(r["prior_loss"] > 0 and 0 <= r["prior_acc_stated"] <= 1 for r in rows)
    g, _, raw = load_gan_checkpoint(gan / "checkpoint.pt")
    assert g.prior is not None
    # gan-test fits the open draws to the data's captions (as gan-64 does); gan-test-rec keeps the sampling frequencies.
    from moe_avatar.training.dataset import load_dataset
    from moe_avatar.training.latent import caption_pairs

    ds = load_dataset(data, progress=False)
    fitted = open_log_frequencies(*caption_pairs([[c.states for c in caps] for caps in ds.captions], attribute_indices(ds.attributes))).exp()
    assert torch.allclose(g.prior.marginal, fitted) and not torch.allclose(fitted, CODE_LOG_MARGINAL.exp(), atol=1e-3)
    assert torch.allclose(load_gan_checkpoint(rec / "checkpoint.pt")[0].prior.marginal, CODE_LOG_MARGINAL.exp())
    written = json.loads((gan / "prior_open.json").read_text())
    assert abs(written["blush"]["no"] - float(torch.split(fitted, CODE_BLOCKS)[SINGLE_FAMILIES.index("blush")][1])) < 1e-4
    z = torch.from_numpy(noise_from_seeds(list(range(6)), g.z_dim))
    text = torch.nn.functional.normalize(torch.randn(6, raw["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=1)
    psi = torch.tensor([1.0, 1.0, 0.7, 0.7, 0.0, 0.5])
    export_bundle(clip, gan / "checkpoint.pt", tmp_path / "bundle", ExportOptions(name="prior", version="0.0.1"),
                           log=lambda *_: None)  # checks its own parity too
    from moe_avatar.training.latent import PROCEDURAL

    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["attributes"] == PROCEDURAL.vocabulary()
    sess = ort.InferenceSession(str(tmp_path / "bundle" / "generator.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"z": z.numpy(), "text_embedding": text.numpy(), "psi": psi.numpy()})[0]
    with torch.no_grad():
        ref = GeneratorGraph(g)(z, text, psi).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_open_frequencies_follow_what_captions_leave_unsaid() -> None:
    """Captions that mention a blush only when there is one: where a caption is silent about
    it there is none, and the fitted open draw says so; a family no caption mentions keeps
    the renders' own frequencies."""
    rng = np.random.default_rng(0)
    attrs = [sample_attributes(rng) for _ in range(2000)]
    values = attribute_indices(attrs)
    blush = SINGLE_FAMILIES.index("blush")
    stated = torch.zeros(len(attrs), len(CODE_BLOCKS), dtype=torch.bool)
    stated[:, blush] = torch.tensor([a["blush"] == "yes" for a in attrs])
    freq = torch.split(open_log_frequencies(stated, values).exp(), CODE_BLOCKS)
    assert freq[blush][ATTRIBUTES["blush"].index("no")] > 0.99
    hair = SINGLE_FAMILIES.index("hair_color")
    seen = torch.bincount(values[:, hair], minlength=CODE_BLOCKS[hair]).double() + 1
    assert torch.allclose(freq[hair].double(), seen / seen.sum(), atol=1e-6)


def test_open_frequencies_make_the_priors_open_draw_match_the_data() -> None:
    """The defining property: with the gate sure of what each caption states and the fitted
    frequencies, AttributePrior.mix's open share averages, family by family, to how often
    each value occurs where captions leave the family open, although a caption that names
    the eye colour rules sunglasses out (the hiding rules). The sampling frequencies miss it."""
    rng = np.random.default_rng(1)
    attrs = [sample_attributes(rng) for _ in range(3000)]
    values = attribute_indices(attrs)
    # Captions state each visible family with a chance that depends on its value (sunglasses and no blush less often).
    names = SINGLE_FAMILIES + ["head_accessory"]
    stated = torch.zeros(len(attrs), len(CODE_BLOCKS), dtype=torch.bool)
    for i, a in enumerate(attrs):
        visible = visible_families(a)
        for b, f in enumerate(names):
            p = 0.15 if a.get(f) in ("sunglasses", "no") else 0.5
            stated[i, b] = (f == "head_accessory" or f in visible) and rng.random() < p
    fitted = open_log_frequencies(stated, values)
    gates = torch.where(stated, 30.0, -30.0)
    logits = [30.0 * torch.nn.functional.one_hot(values[:, b], k).float() for b, k in enumerate(CODE_BLOCKS)]
    errors = {}
    for name, marginal in (("fitted", fitted), ("sampling", CODE_LOG_MARGINAL)):
        prior = AttributePrior(8, CODE_BLOCKS, marginal, CODE_HIDERS)
        with torch.no_grad():
            p = [lp.exp() for lp in prior.mix(logits, gates)]
        worst = 0.0
        for b, k in enumerate(CODE_BLOCKS):
            rows = ~stated[:, b]
            counts = torch.bincount(values[rows, b], minlength=k).double() + 1
            worst = max(worst, float((p[b][rows].double().mean(0) - counts / counts.sum()).abs().max()))
        errors[name] = worst
    assert errors["fitted"] < 2e-3, errors
    assert errors["sampling"] > 0.05, errors


def test_the_schema_travels_with_the_checkpoint_and_builds_g(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """G's shape comes from the attribute schema its config records, not from the vocabulary
    in training/attributes.py today: a checkpoint trained on a smaller schema rebuilds alone,
    and the exporter writes that schema's vocabulary into the manifest."""
    from moe_avatar.training.latent import PROCEDURAL, AttributeSchema

    data, clip = tiny_run
    small = AttributeSchema({**PROCEDURAL.families, "hair_color": ["pink", "blue"]}, PROCEDURAL.head_sets,
                            PROCEDURAL.head_set_p)
    assert small.blocks[0] == 2 and small.hiders() == []  # the renderer's hiding rules are for its own vocabulary
    cfg = load_config("gan-test-rec", "gan")
    cfg["model"]["attributes"] = small.to_json()
    (tmp_path / "small.json").write_text(json.dumps(cfg))
    g = build_generator(cfg["model"], 32)
    assert g.prior.blocks == small.blocks and g.prior.marginal.shape == (sum(small.blocks),)

    assert train_gan.run(_args(["--data", str(data), "--clip", str(clip), "--config", "gan-test-rec", "--steps", "1",
                                "--out", str(tmp_path / "run"), "--quiet"])) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["attributes"]
    assert AttributeSchema.from_json(recorded) == PROCEDURAL
    g2, _, _ = load_gan_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert g2.prior.blocks == PROCEDURAL.blocks
