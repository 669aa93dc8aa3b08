"""Evaluation metrics on cases with known answers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from moe_avatar.training.attributes import ATTRIBUTES, FAMILIES, MULTI_VALUED, sample_attributes
from moe_avatar.training.evaluate import (PROMPT_DIR, Prompt, diversity, frechet_distance, load_prompts, make_eval_prompts,
                               prompt_accuracy, r_precision, stated_correct)
from moe_avatar.training.render import render_avatar


class RenderSampler:
    """A "model" that renders real avatars: the true attributes of every image are known.

    faithful=True honours the prompt's stated attributes (a perfect model); False ignores
    the prompt; fixed=True always draws the same avatar (total mode collapse).
    """

    z_dim, resolution = 8, 64

    def __init__(self, prompts: list[Prompt], faithful: bool = True, fixed: bool = False):
        self.prompts, self.faithful, self.fixed = prompts, faithful, fixed
        self.truth: dict[str, dict] = {}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        index = {p.text: i for i, p in enumerate(self.prompts)}
        return np.array([[index[t]] for t in texts], dtype=np.float32)

    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        out = []
        for t, seed in zip(text_emb[:, 0].astype(int), seeds):
            attrs = sample_attributes(np.random.default_rng(0 if self.fixed else seed))
            if self.faithful:
                attrs.update({f: (list(v) if f == MULTI_VALUED else v) for f, v in self.prompts[t].attributes.items()})
            if attrs[MULTI_VALUED] and len(attrs[MULTI_VALUED]) > 2:
                attrs[MULTI_VALUED] = attrs[MULTI_VALUED][:2]
            img = np.asarray(render_avatar(attrs, 64, None))
            self.truth[hashlib.sha1(img.tobytes()).hexdigest()] = attrs
            out.append(img)
        return np.stack(out)

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 1), np.float32)

    def oracle_judge(self, images: np.ndarray) -> list[dict]:
        return [self.truth[hashlib.sha1(img.tobytes()).hexdigest()] for img in images]


def _simple_prompts(n: int) -> list[Prompt]:
    """Prompts stating single-valued families only (every combination renderable)."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        fam = ["hair_color", "hairstyle", "skin_tone", "collar_color", "background"][i % 5]
        out.append(Prompt(f"prompt {i}", "en" if i % 2 else "zh", {fam: ATTRIBUTES[fam][int(rng.integers(len(ATTRIBUTES[fam])))]}))
    return out


def test_prompt_accuracy_is_one_for_a_faithful_model_and_low_for_one_that_ignores_prompts() -> None:
    prompts = _simple_prompts(20)
    good = RenderSampler(prompts, faithful=True)
    res = prompt_accuracy(good, good.oracle_judge, prompts, seeds=[0, 1], progress=False)
    assert res["overall"] == 1.0 and res["all_stated_correct"] == 1.0
    assert set(res["per_language"]) == {"en", "zh"}
    bad = RenderSampler(prompts, faithful=False)
    res_bad = prompt_accuracy(bad, bad.oracle_judge, prompts, seeds=[0, 1, 2, 3], progress=False)
    assert res_bad["overall"] < 0.5


def test_colour_binding_splits_colour_checks_by_how_many_colours_the_prompt_states() -> None:
    one = [Prompt("pink hair", "en", {"hair_color": "pink"}), Prompt("bob", "en", {"hairstyle": "bob"})]
    several = [Prompt("pink hair, blue eyes", "en", {"hair_color": "pink", "eye_color": "blue"}),
               Prompt("红发，绿衣领", "zh", {"hair_color": "red", "collar_color": "green"})]
    good = RenderSampler(one + several, faithful=True)
    res = prompt_accuracy(good, good.oracle_judge, one + several, seeds=[0, 1], progress=False)
    assert res["colour_binding"] == {"one": 1.0, "several": 1.0}

    class SwapsColours(RenderSampler):
        """Draws hair in the colour stated for the eyes when a prompt names both (a bag-of-words reader)."""

        def oracle_judge(self, images):
            out = []
            for attrs in super().oracle_judge(images):
                attrs = dict(attrs)
                if attrs["eye_color"] == "blue":
                    attrs["hair_color"] = "blue"
                out.append(attrs)
            return out

    bad = SwapsColours(one + several, faithful=True)
    res = prompt_accuracy(bad, bad.oracle_judge, one + several, seeds=[0, 1], progress=False)
    assert res["colour_binding"]["one"] == 1.0 and res["colour_binding"]["several"] == 0.75
    only_one = prompt_accuracy(good, good.oracle_judge, one, seeds=[0], progress=False)
    assert only_one["colour_binding"]["several"] is None


def test_diversity_is_zero_for_one_fixed_avatar_and_near_one_for_data_like_samples() -> None:
    prompts = _simple_prompts(10)
    seeds = list(range(16))
    for fixed, lo, hi in ((True, 0.0, 0.0), (False, 0.75, 1.25)):
        s = RenderSampler(prompts, fixed=fixed)
        judged = [s.oracle_judge(s.generate(s.encode_text([p.text] * 16), seeds)) for p in prompts]
        res = diversity(judged, [p.attributes for p in prompts])
        assert lo <= res["overall"] <= hi, (fixed, res)


def test_r_precision_perfect_and_shuffled() -> None:
    rng = np.random.default_rng(0)
    n, d = 300, 64
    text = rng.standard_normal((n, d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = text + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    assert r_precision(image, text, np.random.default_rng(1)) == 1.0
    shuffled = text[rng.permutation(n)]
    assert r_precision(image, shuffled, np.random.default_rng(1)) < 0.05  # chance is 1/100


def test_frechet_distance_zero_for_same_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 16))
    b = rng.standard_normal((4000, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    floor = frechet_distance(a, b)
    assert floor < 0.1
    assert frechet_distance(a, b + 1.0) == pytest.approx(16.0, rel=0.05)  # |mu1 - mu2|^2 = 16


def test_stated_correct_head_accessories() -> None:
    pred = {"head_accessory": ["cat ears", "headphones"], "hair_color": "pink"}
    assert stated_correct({"head_accessory": ["cat ears"]}, pred) == {"head_accessory": True}
    assert stated_correct({"head_accessory": ["hat"]}, pred) == {"head_accessory": False}
    assert stated_correct({"head_accessory": []}, pred) == {"head_accessory": False}
    assert stated_correct({"head_accessory": []}, {"head_accessory": []}) == {"head_accessory": True}
    assert stated_correct({"hair_color": "pink"}, pred) == {"hair_color": True}


def test_prompt_sets_in_repo() -> None:
    generated = load_prompts(PROMPT_DIR / "eval.jsonl")
    assert len(generated) >= 500
    assert sum(p.lang == "zh" for p in generated) == len(generated) // 2
    assert all(1 <= len(p.attributes) <= 5 for p in generated)
    free = load_prompts(PROMPT_DIR / "freeform.jsonl")
    assert len(free) >= 40 and {p.lang for p in free} == {"en", "zh"}
    # The committed set is what the generator makes (held-out templates, fixed seed).
    again = make_eval_prompts(len(generated), seed=1234)
    assert [p.text for p, _ in again] == [p.text for p in generated]


def test_bad_prompt_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "x", "lang": "en", "attributes": {"hair_color": "pink"}}) + "\n"
                    + json.dumps({"text": "y", "attributes": {"hair_color": "plaid"}}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: unknown hair_color value 'plaid'"):
        load_prompts(path)
