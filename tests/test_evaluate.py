"""Evaluation metrics on cases with known answers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_avatar.training import baselines
from moe_avatar.training.attributes import (
    ATTRIBUTES,
    FAMILIES,
    MULTI_VALUED,
    sample_attributes,
)
from moe_avatar.training.evaluate import evaluate_set, prompt_accuracy, prompt_baselines
from moe_avatar.training.judge import (
    Judge,
    augment,
    degrade,
    gaussian_blur,
    judge_report,
    render_set,
    to_input,
)
from moe_avatar.training.metrics import (
    diversity,
    fd_over_blocks,
    frechet_distance,
    r_candidates,
    r_precision,
    seed_pair_agreement,
)
from moe_avatar.training.prompt_sets import (
    PROMPT_DIR,
    Prompt,
    load_prompts,
    make_eval_prompts,
    realize,
)
from moe_avatar.training.reading import reading_scores, shuffle_segments
from moe_avatar.training.render import render_avatar
from moe_avatar.training.report import check_bar, format_table
from moe_avatar.training.scoring import (
    bootstrap_ci,
    excluded_correct,
    items_seen,
    score,
    stated_correct,
)

TRUTH: dict[str, dict] = {}  # image hash -> the attributes it was rendered from (the oracle judge's memory)


def _remember(img: np.ndarray, attrs: dict) -> np.ndarray:
    TRUTH[hashlib.sha1(img.tobytes()).hexdigest()] = attrs
    return img


def oracle_judge(images: np.ndarray) -> list[dict]:
    return [TRUTH[hashlib.sha1(img.tobytes()).hexdigest()] for img in images]


@pytest.fixture(autouse=True)
def _oracle_sees_baseline_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    def render(attrs: dict, size: int, rng: np.random.Generator) -> np.ndarray:
        return _remember(np.asarray(render_avatar(attrs, size, rng)), attrs)

    monkeypatch.setattr(baselines, "render", render)


class RenderSampler:
    """A "model" that renders real avatars: the true attributes of every image are known.

    faithful=True honours the prompt's stated attributes (a perfect model); False ignores
    the prompt; fixed=True always draws the same avatar (total mode collapse). The empty
    prompt reads as "nothing stated".
    """

    z_dim, resolution = 8, 64
    read = None

    def __init__(self, prompts: list[Prompt], faithful: bool = True, fixed: bool = False):
        self.prompts, self.faithful, self.fixed = prompts, faithful, fixed

    def encode_text(self, texts: list[str]) -> np.ndarray:
        index = {p.text: i for i, p in enumerate(self.prompts)}
        return np.array([[index.get(t, -1)] for t in texts], dtype=np.float32)

    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        out = []
        for t, seed in zip(text_emb[:, 0].astype(int), seeds):
            attrs = sample_attributes(np.random.default_rng(0 if self.fixed else seed))
            if self.faithful and t >= 0:
                attrs.update({f: (list(v) if f == MULTI_VALUED else v) for f, v in self.prompts[t].attributes.items()})
            attrs[MULTI_VALUED] = attrs[MULTI_VALUED][:2]
            out.append(_remember(np.asarray(render_avatar(attrs, 64, None)), attrs))
        return np.stack(out)

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 1), np.float32)


def _simple_prompts(n: int, seed: int = 5) -> list[Prompt]:
    """Prompts stating one single-valued family each (every combination renderable)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fam = ["hair_color", "hairstyle", "skin_tone", "collar_color", "background"][i % 5]
        out.append(Prompt(f"prompt {i}", "en" if i % 2 else "zh", {fam: ATTRIBUTES[fam][int(rng.integers(len(ATTRIBUTES[fam])))]},
                          styles=["tags"] if i % 3 else ["sentence"]))
    return out


# ----------------------------------------------------------------------------- scoring

def test_head_accessories_are_scored_as_exact_sets_beside_the_lenient_reading() -> None:
    pred = {"head_accessory": ["cat ears", "headphones"], "hair_color": "pink"}
    assert stated_correct({"head_accessory": ["cat ears"]}, pred) == {"head_accessory": False}  # an extra item
    assert items_seen(["cat ears"], pred)
    assert stated_correct({"head_accessory": ["headphones", "cat ears"]}, pred) == {"head_accessory": True}
    assert stated_correct({"head_accessory": []}, pred) == {"head_accessory": False}
    assert stated_correct({"head_accessory": []}, {"head_accessory": []}) == {"head_accessory": True}
    assert stated_correct({"hair_color": "pink"}, pred) == {"hair_color": True}
    prompts = [Prompt("ears", "en", {"head_accessory": ["cat ears"]})]
    res = score(prompts, [[pred, {"head_accessory": ["cat ears"]}]])
    assert res["per_family"]["head_accessory"] == 0.5 and res["head_accessory_items_seen"] == 1.0


def test_a_stated_family_the_image_hides_is_wrong() -> None:
    wink = {"eye_shape": "wink", "eye_color": "blue", "face_accessory": "none", "expression": "smile"}
    shades = {**wink, "face_accessory": "sunglasses"}  # the judge still reads "wink" where it cannot see
    assert stated_correct({"eye_shape": "wink", "eye_color": "blue"}, wink) == {"eye_shape": True, "eye_color": True}
    assert stated_correct({"eye_shape": "wink", "eye_color": "blue"}, shades) == {"eye_shape": False, "eye_color": False}
    masked = {**wink, "face_accessory": "mask"}
    assert stated_correct({"expression": "smile"}, masked) == {"expression": False}
    assert stated_correct({"expression": "smile"}, wink) == {"expression": True}


def test_negations_are_right_only_when_the_excluded_value_is_not_drawn() -> None:
    glasses = {"face_accessory": "glasses", "head_accessory": ["ribbon"]}
    plain = {"face_accessory": "none", "head_accessory": ["flower"]}
    assert excluded_correct({"face_accessory": ["glasses"]}, glasses) == {"face_accessory": False}
    assert excluded_correct({"face_accessory": ["glasses"]}, plain) == {"face_accessory": True}
    assert excluded_correct({"head_accessory": ["hat", "ribbon"]}, glasses) == {"head_accessory": False}
    assert excluded_correct({"head_accessory": ["hat", "ribbon"]}, plain) == {"head_accessory": True}
    prompts = [Prompt("no glasses", "en", {}, {"face_accessory": ["glasses"]}, ["negation"]),
               Prompt("bare face, nothing on the head", "en", {"face_accessory": "none", "head_accessory": []})]
    res = score(prompts, [[glasses, plain], [plain, {"face_accessory": "none", "head_accessory": []}]])
    # negation checks: p0 F, T; p1 (face T, head F), (face T, head T): 4 of 6 right
    assert res["negations"]["checks"] == 6 and res["negations"]["accuracy"] == pytest.approx(4 / 6)
    assert res["all_stated_correct"] == pytest.approx(2 / 4)
    assert res["per_style"]["negation"]["accuracy"] == 0.5


def test_bootstrap_interval_brackets_the_figure_and_is_a_point_for_uniform_prompts() -> None:
    right, total = np.array([3, 1, 4, 0, 2]), np.full(5, 4)
    lo, hi = bootstrap_ci(right, total)
    assert lo < right.sum() / total.sum() < hi
    assert bootstrap_ci(np.full(8, 2), np.full(8, 4)) == [0.5, 0.5]


def test_prompt_accuracy_is_one_for_a_faithful_model_and_low_for_one_that_ignores_prompts() -> None:
    prompts = _simple_prompts(20)
    res = prompt_accuracy(RenderSampler(prompts), oracle_judge, prompts, seeds=[0, 1], progress=False)
    assert res["overall"] == 1.0 and res["all_stated_correct"] == 1.0
    assert set(res["per_language"]) == {"en", "zh"} and set(res["per_style"]) == {"tags", "sentence"}
    res_bad = prompt_accuracy(RenderSampler(prompts, faithful=False), oracle_judge, prompts, seeds=[0, 1, 2, 3],
                              progress=False)
    assert res_bad["overall"] < 0.5


def test_colour_binding_splits_colour_checks_by_how_many_colours_the_prompt_states() -> None:
    one = [Prompt("pink hair", "en", {"hair_color": "pink"}), Prompt("bob", "en", {"hairstyle": "bob"})]
    several = [Prompt("pink hair, blue eyes", "en", {"hair_color": "pink", "eye_color": "blue"}),
               Prompt("红发，绿衣领", "zh", {"hair_color": "red", "collar_color": "green"})]
    good = RenderSampler(one + several)
    res = prompt_accuracy(good, oracle_judge, one + several, seeds=[0, 1], progress=False)
    assert res["colour_binding"] == {"one": 1.0, "several": 1.0, "several_all_right": 1.0}

    def swaps(images: np.ndarray) -> list[dict]:
        """Hair drawn in the eyes' colour when that is blue (a bag-of-words reader)."""
        return [{**a, "hair_color": "blue"} if a["eye_color"] == "blue" else a for a in oracle_judge(images)]

    res = prompt_accuracy(good, swaps, one + several, seeds=[0, 1], progress=False)
    assert res["colour_binding"]["one"] == 1.0 and res["colour_binding"]["several"] == 0.75
    assert res["colour_binding"]["several_all_right"] == 0.5
    assert prompt_accuracy(good, oracle_judge, one, seeds=[0], progress=False)["colour_binding"]["several"] is None


# ----------------------------------------------------------------------------- baselines and small files

def _chance(prompts: list[Prompt], draws: int = 20000) -> float:
    """Expected accuracy of avatars drawn as the data draws them (the analytic chance)."""
    rng = np.random.default_rng(99)
    sample = [sample_attributes(rng) for _ in range(draws)]
    return float(np.mean([np.mean([a[f] == v for a in sample]) for p in prompts for f, v in p.attributes.items()]))


def test_random_renders_score_near_chance_and_real_renders_at_the_ceiling() -> None:
    prompts = _simple_prompts(60, seed=8)
    sampler = RenderSampler(prompts)
    judged = [oracle_judge(sampler.generate(sampler.encode_text([p.text] * 4), [0, 1, 2, 3])) for p in prompts]
    res = prompt_baselines(sampler, oracle_judge, prompts, judged, [0, 1, 2, 3], 1.0)
    assert res["chance_random_renders"]["overall"] == pytest.approx(_chance(prompts), abs=0.06)
    assert res["real_render_ceiling"]["overall"] == 1.0 and res["real_render_ceiling"]["prompts"] == 60
    assert res["empty_prompt"]["overall"] == pytest.approx(_chance(prompts), abs=0.06)
    assert res["shuffled_prompts"]["overall"] < 0.5


def test_a_ten_prompt_file_runs_with_ten_r_precision_candidates(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": p.text, "lang": p.lang, "attributes": p.attributes}) + "\n"
                            for p in _simple_prompts(10)), encoding="utf-8")
    prompts = load_prompts(path)
    out = evaluate_set(RenderSampler(prompts), oracle_judge, path, [0, 1], 1.0, True, None, False, lambda m: None)
    assert out["prompts"] == 10 and out["accuracy"]["overall"] == 1.0
    assert out["r_precision"]["candidates"] == 10 and r_candidates(500) == 100 and r_candidates(1) == 1
    # The report reads a run on any file: the table and the bar come out with every key present.
    result = {"psi": 1.0, "primary": out["file"], "prompt_sets": {out["file"]: out},
              "judge": {"clean": {"hair_color": 1.0}, "blurred": {"hair_color": 0.97}, "blur_radius": 0.8},
              "diversity": {"overall": 0.9}, "clip_fd": fd_over_blocks([np.eye(3)] * 2, [np.eye(3) + 1, np.eye(3)]),
              "seed_pairs": seed_pair_agreement([[sample_attributes(np.random.default_rng(i)) for i in range(4)]], [{}])}
    result["bar"] = check_bar(result)
    assert result["bar"]["judge"] == {"judge clean >= 0.98 per family": True, "judge blurred 0.8 >= 0.95 per family": True}
    assert "10 candidates" in format_table(result)


def test_realize_gives_an_avatar_the_prompt_is_true_of() -> None:
    p = Prompt("no hat, cat ears, blue eyes", "en", {"head_accessory": ["cat ears"], "eye_color": "blue"},
               {"face_accessory": ["sunglasses"]})
    for i in range(30):
        a = realize(p, np.random.default_rng(i))
        assert a["head_accessory"] == ["cat ears"] and a["eye_color"] == "blue"
        assert a["face_accessory"] != "sunglasses" and a["expression"] != "closed-eye happy"  # eyes stay visible
    assert realize(Prompt("x", "en", {"head_accessory": ["cat ears", "hat"]}), np.random.default_rng(0)) is None


def test_reading_scores_the_priors_answer_and_its_order_invariance() -> None:
    prompts = [Prompt("pink hair, cat ears", "en", {"hair_color": "pink", "head_accessory": ["cat ears"]}),
               Prompt("粉发，不戴眼镜", "zh", {"hair_color": "pink"}, {"face_accessory": ["glasses"]})]

    def reader(texts: list[str]) -> list[dict]:
        """Reads colour words in any order; takes the first segment's colour as the hair colour only
        when it says pink (an order-sensitive reader for the other case)."""
        out = []
        for t in texts:
            first = t.replace("，", ",").split(",")[0]
            out.append({"hair_color": (0.9, "pink" if "pink" in first or "粉" in first else "blue"),
                        "head_accessory": (0.8 if "cat" in t else 0.1, ["cat ears"] if "cat" in t else []),
                        "face_accessory": (0.7, "none"), "eye_color": (0.2, "red")})
        return out

    res = reading_scores(reader, prompts)
    assert res["accuracy"] == 1.0 and res["shuffled_prompts"] == 2
    # detection: p0 hair T, head T, face (0.7 but open) F, eyes T; p1 hair T, head T, eyes T (face excluded)
    assert res["stated_detection"] == pytest.approx(6 / 7)
    assert res["order_invariance"] == pytest.approx(1 / 3)  # only p0's cat ears survive the shuffle
    assert res["per_family"] == {"hair_color": {"accuracy": 1.0, "stated": 2, "missed": 0.0},
                                 "head_accessory": {"accuracy": 1.0, "stated": 1, "missed": 0.0}}
    assert shuffle_segments("one segment", np.random.default_rng(0)) is None
    assert sorted(shuffle_segments("a, b / c", np.random.default_rng(0)).split(", ")) == ["a", "b", "c"]


# ----------------------------------------------------------------------------- model-level metrics

def test_diversity_is_zero_for_one_fixed_avatar_and_near_one_for_data_like_samples() -> None:
    prompts = _simple_prompts(10)
    seeds = list(range(16))
    for fixed, lo, hi in ((True, 0.0, 0.0), (False, 0.75, 1.25)):
        s = RenderSampler(prompts, fixed=fixed)
        judged = [oracle_judge(s.generate(s.encode_text([p.text] * 16), seeds)) for p in prompts]
        res = diversity(judged, [p.attributes for p in prompts])
        assert lo <= res["overall"] <= hi, (fixed, res)


def test_seed_pairs_of_independent_draws_agree_as_the_data_does_and_a_collapsed_model_fully() -> None:
    rng = np.random.default_rng(3)
    stated = [{"hair_color": "pink"}, {}, {"eye_color": "blue", "bangs": "parted"}] * 10
    judged = [[sample_attributes(rng) for _ in range(16)] for _ in stated]
    res = seed_pair_agreement(judged, stated, reference_runs=5)
    assert res["mean"] == pytest.approx(res["data"]["mean"], abs=0.01)
    assert res["mean"] == pytest.approx(res["own_frequencies"]["mean"], abs=0.01)
    assert res["adjacent_mean"] == pytest.approx(res["other_mean"], abs=0.03)
    assert res["above_data_q99"] < 0.03
    same = sample_attributes(rng)
    collapsed = seed_pair_agreement([[same] * 16 for _ in stated], stated, reference_runs=2)
    assert collapsed["mean"] == 1.0 and collapsed["above_data_q99"] == 1.0
    assert collapsed["own_frequencies"]["mean"] == 1.0  # its own frequencies explain it: one value each


def test_r_precision_perfect_and_shuffled() -> None:
    rng = np.random.default_rng(0)
    n, d = 300, 64
    text = rng.standard_normal((n, d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = text + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    assert r_precision(image, text, np.random.default_rng(1)).mean() == 1.0
    shuffled = text[rng.permutation(n)]
    assert r_precision(image, shuffled, np.random.default_rng(1)).mean() < 0.05  # chance is 1/100
    with pytest.raises(ValueError, match="candidates"):
        r_precision(image[:10], text[:10], np.random.default_rng(1), candidates=100)


def test_frechet_distance_zero_for_same_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 16))
    b = rng.standard_normal((4000, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.1
    assert frechet_distance(a, b + 1.0) == pytest.approx(16.0, rel=0.05)  # |mu1 - mu2|^2 = 16


def test_fd_over_blocks_identical_sets_have_zero_spread_and_the_ratio_uses_the_means() -> None:
    rng = np.random.default_rng(1)
    block = rng.standard_normal((2000, 8))
    res = fd_over_blocks([block + 1.0] * 4, [block] * 4)
    assert res["blocks"] == 4 and len(res["floor"]) == 6
    assert res["generated_std"] == pytest.approx(0.0, abs=1e-9) and res["floor_std"] == pytest.approx(0.0, abs=1e-9)
    assert res["generated_mean"] == pytest.approx(8.0, rel=1e-6)
    real = [rng.standard_normal((2000, 8)) for _ in range(4)]
    res = fd_over_blocks([r + 0.5 for r in real], real)
    assert res["floor_std"] > 0
    assert res["ratio"] == pytest.approx(np.mean(res["generated"]) / np.mean(res["floor"]))
    with pytest.raises(ValueError, match="2 real blocks"):
        fd_over_blocks([block], [block])


# ----------------------------------------------------------------------------- the judge

def test_the_judges_training_blur_is_the_held_out_blur_and_augmentation_keeps_labels_readable() -> None:
    images, attrs = render_set(6, seed=123)
    x = to_input(images)
    blurred = to_input(degrade(images, 0.8))
    assert (gaussian_blur(x, 0.8) - blurred).abs().mean() < 0.25 * (x - blurred).abs().mean()
    assert torch.equal(gaussian_blur(x, 0.0), x)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    assert (y[:, :3] - x[:, :3]).abs().mean() < 0.1  # a mild degradation, not a different avatar
    report = judge_report(Judge(), images, attrs)
    assert set(report["clean"]) == set(FAMILIES) == set(report["blurred"]) and report["blur_radius"] == 0.8


# ----------------------------------------------------------------------------- prompt files

def test_prompt_sets_in_repo() -> None:
    generated = load_prompts(PROMPT_DIR / "eval.jsonl")
    assert len(generated) >= 500
    assert sum(p.lang == "zh" for p in generated) == len(generated) // 2
    assert all(1 <= len(p.attributes) <= 5 and p.full is not None for p in generated)
    again = make_eval_prompts(len(generated), seed=1234)
    assert [p.text for p, _ in again] == [p.text for p in generated]
    natural = load_prompts(PROMPT_DIR / "natural.jsonl")
    assert sum(p.lang == "en" for p in natural) >= 200 and sum(p.lang == "zh" for p in natural) >= 200
    assert any(p.excludes for p in natural) and all(p.styles for p in natural)
    free = load_prompts(PROMPT_DIR / "freeform.jsonl")
    assert len(free) >= 40 and {p.lang for p in free} == {"en", "zh"}


def test_showcase_lists_every_example_where_it_appears() -> None:
    """Each showcase prompt is quoted verbatim in the files its `sources` name."""
    root = PROMPT_DIR.parent.parent
    rows = [json.loads(line) for line in (PROMPT_DIR / "showcase.jsonl").read_text(encoding="utf-8").splitlines()]
    load_prompts(PROMPT_DIR / "showcase.jsonl")
    assert len(rows) >= 10
    for row in rows:
        for src in row["sources"]:
            assert row["text"] in (root / src).read_text(encoding="utf-8"), (row["text"], src)


def test_bad_prompt_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    good = json.dumps({"text": "x", "lang": "en", "attributes": {"hair_color": "pink"}})
    for bad, message in (({"text": "y", "attributes": {"hair_color": "plaid"}}, r"p.jsonl:2: unknown hair_color value 'plaid'"),
                         ({"text": "y", "excludes": {"face_accessory": ["monocle"]}},
                          r"p.jsonl:2: unknown face_accessory value 'monocle'"),
                         ({"text": "y", "excludes": {"hat": ["hat"]}}, r"p.jsonl:2: unknown attribute family 'hat'"),
                         ({"text": "y", "exclude": {}}, r"p.jsonl:2: unknown key 'exclude'"),
                         ({"text": "y", "styles": "tags"}, r"p.jsonl:2: styles must be a list")):
        path.write_text(good + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=message):
            load_prompts(path)
