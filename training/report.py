"""The eval's outputs beside eval.json: the bar checks, the printed table and the sample picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BAR = {"overall": 0.85, "family_min": 0.70, "r_precision_ratio": 0.8, "diversity": 0.7, "fd_ratio": 3.0}
NATURAL_BAR = {"overall": 0.90, "gap": 0.02, "all_stated": 0.75, "family_min": 0.80, "language_min": 0.88,
               "several_colours": 0.85, "negations": 0.90}
READING_BAR = {"natural": 0.97, "primary": 0.99, "detection": 0.95, "order": 0.97}
JUDGE_BAR = {"clean": 0.98, "blurred": 0.95}


def _natural_checks(r: dict[str, Any]) -> dict[str, bool] | None:
    """Prompt understanding on natural.jsonl, against the primary set (eval.jsonl)."""
    nat = next((s for name, s in r["prompt_sets"].items() if name.endswith("natural.jsonl")), None)
    if nat is None:
        return None
    a, b = nat["accuracy"], r["prompt_sets"][r["primary"]]["accuracy"]
    show = r.get("showcase")
    reading = {}
    if "reading" in nat:
        rn, rp = nat["reading"], r["prompt_sets"][r["primary"]]["reading"]
        reading = {"reading: natural >= 0.97": rn["accuracy"] >= READING_BAR["natural"],
                   "reading: primary set >= 0.99": rp["accuracy"] >= READING_BAR["primary"],
                   "reading: stated-vs-open >= 0.95": min(rn["stated_detection"], rp["stated_detection"]) >= READING_BAR["detection"],
                   "reading: order invariance >= 0.97": (rn["order_invariance"] or 0) >= READING_BAR["order"]}
    return {**reading,
        "natural: accuracy >= 0.90": a["overall"] >= NATURAL_BAR["overall"],
        "natural: within 0.02 of the primary set": a["overall"] >= b["overall"] - NATURAL_BAR["gap"],
        "natural: all stated right >= 0.75": a["all_stated_correct"] >= NATURAL_BAR["all_stated"],
        "natural: every family >= 0.80": min(a["per_family"].values()) >= NATURAL_BAR["family_min"],
        "natural: en and zh each >= 0.88": min(a["per_language"].values()) >= NATURAL_BAR["language_min"],
        "natural: several colours all bound >= 0.85":
            (a["colour_binding"]["several_all_right"] or 0) >= NATURAL_BAR["several_colours"],
        "natural: negations >= 0.90": (a["negations"]["accuracy"] or 0) >= NATURAL_BAR["negations"],
        **({"showcase: every prompt >= 14/16": show["passing"] == len(show["prompts"])} if show else {}),
    }


def check_bar(r: dict[str, Any]) -> dict[str, Any]:
    """The bundled model's bar on the primary set (exact scoring, FD over blocks), the prompt-
    understanding bar on natural.jsonl, and the judge's own bar; every check with its outcome."""
    primary = r["prompt_sets"][r["primary"]]
    acc = primary["accuracy"]
    rp = primary["r_precision"]
    checks = {
        "prompt accuracy >= 0.85": acc["overall"] >= BAR["overall"],
        "no family below 0.70": min(acc["per_family"].values()) >= BAR["family_min"],
        "R-precision >= 0.8 x ceiling": rp is not None and rp["ratio"] >= BAR["r_precision_ratio"],
        "diversity >= 0.7": r["diversity"]["overall"] >= BAR["diversity"],
        "CLIP FD (mean over blocks) <= 3 x floor": r["clip_fd"]["ratio"] <= BAR["fd_ratio"],
    }
    judge = r["judge"]
    judge_checks = {
        f"judge clean >= {JUDGE_BAR['clean']} per family": min(judge["clean"].values()) >= JUDGE_BAR["clean"],
        f"judge blurred {judge['blur_radius']} >= {JUDGE_BAR['blurred']} per family":
            min(judge["blurred"].values()) >= JUDGE_BAR["blurred"],
    }
    natural = _natural_checks(r)
    return {"checks": checks, "passed": all(checks.values()),
            "prompt_understanding": natural, "judge": judge_checks}


def _ci(v: float | None, ci: list[float] | None) -> str:
    if v is None:
        return "   -  "
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _set_lines(name: str, s: dict[str, Any]) -> list[str]:
    a, b = s["accuracy"], s["baselines"]
    cols = ("chance_random_renders", "empty_prompt", "shuffled_prompts", "real_render_ceiling")
    base = lambda key: "  ".join(f"{b[c][key]:.3f}" for c in cols)
    lines = [f"== {name}: {s['prompts']} prompts x {s['seeds']} seeds, {a['checks']} checks",
             f"{'':34}{'model [95% CI]':<24}chance empty  shuffl ceiling",
             f"{'accuracy (exact)':<34}{_ci(a['overall'], a['overall_ci95']):<24}{base('overall')}",
             f"{'all stated right':<34}{_ci(a['all_stated_correct'], a['all_stated_ci95']):<24}{base('all_stated_correct')}"]
    rp = s["r_precision"]
    if rp:
        lines.append(f"{'R-precision (' + str(rp['candidates']) + ' candidates)':<34}"
                     f"{_ci(rp['generated']['value'], rp['generated']['ci95']):<24}"
                     f"{rp['chance_random_renders']['value']:.3f}{'':16}{rp['real_ceiling']['value']:.3f}")
    if (rd := s.get("reading")):
        lines.append(f"{'reading (prior vs annotation)':<34}{_ci(rd['accuracy'], rd['ci95']):<24}"
                     f"stated-vs-open {rd['stated_detection']:.3f}, order invariance "
                     + ("-" if rd["order_invariance"] is None else f"{rd['order_invariance']:.3f}"))
        if rd.get("per_family"):  # eval.json files written before it have no breakdown
            lines.append("  reading per family (missed: read as open): " + ", ".join(
                f"{f} {v['accuracy']:.3f} ({v['missed']:.3f})"
                for f, v in sorted(rd["per_family"].items(), key=lambda x: x[1]["accuracy"])))
    if "rerank4" in s:
        lines.append(f"{'accuracy with CLIP rerank x4':<34}{s['rerank4']['overall']:.3f} (gain {s['rerank_gain']:+.3f})")
    lines += [f"  {k:<32}{v:.3f}" for k, v in a["per_language"].items()]
    lines += [f"  {f:<32}{v:.3f}" for f, v in a["per_family"].items()]
    if a["head_accessory_items_seen"] is not None:
        lines.append(f"  {'head accessory: items seen':<32}{a['head_accessory_items_seen']:.3f} (lenient; exact above)")
    cb = a["colour_binding"]
    lines.append("  colours right: one / several stated / several all right   "
                 + " / ".join("-" if cb[k] is None else f"{cb[k]:.3f}" for k in ("one", "several", "several_all_right")))
    if a["negations"]["checks"]:
        lines.append(f"  {'negations':<32}{_ci(a['negations']['accuracy'], a['negations']['ci95'])} "
                     f"({a['negations']['checks']} checks)")
    lines += [f"  style {k:<26}{v['accuracy']:.3f}  all stated {v['all_stated']:.3f}  ({v['prompts']} prompts)"
              for k, v in a["per_style"].items()]
    return lines


def format_table(r: dict[str, Any]) -> str:
    j = r["judge"]
    lines = [(f"psi {r['psi']:g}; judge held-out accuracy (min over families) clean {min(j['clean'].values()):.3f}, "
              f"blurred {j['blur_radius']} {min(j['blurred'].values()):.3f}")]
    for name, s in r["prompt_sets"].items():
        lines += _set_lines(name, s)
    fd, sp, dv = r["clip_fd"], r["seed_pairs"], r["diversity"]
    lines += ["== model",
              (f"CLIP FD over {fd['blocks']} blocks of {fd['samples_per_block']}: {fd['generated_mean']:.4f} ± "
               f"{fd['generated_std']:.4f} / floor {fd['floor_mean']:.4f} ± {fd['floor_std']:.4f} "
               f"(x{fd['ratio']:.2f}, blocks x{min(fd['ratio_per_block']):.2f}-x{max(fd['ratio_per_block']):.2f})"),
              f"diversity (unstated) {dv['overall']:.3f}",
              (f"seed pairs, open-family agreement: mean {sp['mean']:.3f} (adjacent {sp['adjacent_mean']:.3f}, "
               f"others {sp['other_mean']:.3f}), max {sp['max']:.3f}; data draws: mean {sp['data']['mean']:.3f}, "
               f"max {sp['data']['max']:.3f}; at the model's own frequencies: mean {sp['own_frequencies']['mean']:.3f}, "
               f"max {sp['own_frequencies']['max']:.3f}; pairs above the data's 99th percentile {sp['above_data_q99']:.3f}")]
    if (sh := r.get("showcase")):
        lines.append(f"== showcase: {sh['passing']}/{len(sh['prompts'])} prompts with every stated attribute right "
                     f"in >= {sh['pass_at']}/{sh['seeds']} seeds")
        lines += [f"  {row['passes']:>2}/{sh['seeds']}  {row['text']}"
                  + (f"   (wrong: {', '.join(f'{f} {n}' for f, n in row['fails'].items())})" if row["fails"] else "")
                  for row in sh["prompts"]]
    bar = r["bar"]
    for group in (bar["checks"], bar["judge"], bar["prompt_understanding"] or {}):
        lines.append("bar: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in group.items()))
    return "\n".join(lines)


def prompt_grid(sampler: Any, prompts: list[str], seeds: list[int], path: Path, scale: int = 2, psi: float = 1.0) -> None:
    """Prompts x seeds picture (rows labelled by prompt index; prompts listed in samples.txt)."""
    from PIL import Image, ImageDraw

    r = sampler.resolution * scale
    label_w = 28
    sheet = Image.new("RGB", (label_w + r * len(seeds), r * len(prompts)), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for row, text in enumerate(prompts):
        imgs = sampler.generate(np.repeat(sampler.encode_text([text]), len(seeds), 0), seeds, psi)
        draw.text((4, row * r + r // 2 - 6), f"{row + 1}", fill=(60, 60, 60))
        for col, img in enumerate(imgs):
            tile = Image.fromarray(img, "RGBA").resize((r, r), Image.NEAREST)
            bg = Image.new("RGBA", (r, r), (255, 255, 255, 255) if (row + col) % 2 else (236, 236, 240, 255))
            sheet.paste(Image.alpha_composite(bg, tile).convert("RGB"), (label_w + col * r, row * r))
    sheet.save(path)
