"""The upscaler's figures and side-by-side picture, on a bundle with `upscaler.onnx`.

    python -m moe_avatar.training.eval_upscaler --bundle models/chibi-64 [--judge data/chibi/judge.pt] [--json out.json]

* held-out renders (dataset seed `HELD_OUT_SEED`, which no training run uses): the 256 px
  render box-downsampled to 64 (premultiplied, as the renderer downsamples), then upscaled;
  PSNR against the render and alpha IoU, beside Lanczos;
* generated avatars (eval prompts, `make_eval_prompts`): edge contrast at 256 (mean absolute
  difference between neighbouring pixels, composited on grey) of the upscaler and of Lanczos
  against the renders of the prompts' own avatars; stray transparent pixels (alpha < 255) in
  images whose 64 px border is opaque, per 1,000 images; the judge's accuracy on the stated
  families for the 64 px output and for the upscaler's output box-downsampled to 64;
* `--reconstruction RUN_DIR` (a reconstruction-stage GAN run, e.g. gan_rec): G handed each
  eval prompt's own true values (and the prompt's text embedding) draws at 64; its upscaled
  and Lanczos-enlarged drawings against the 256 px render of those values: PSNR and alpha IoU
  (G does not know the render's jitter, so both are far below the held-out renders' figures);
* `--picture`: columns native 64 (nearest), Lanczos 256, upscaler 256 and the 256 render;
  rows of held-out renders, then of generated avatars (no render of their own).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from moe_avatar.training.upscaler import alpha_iou, lanczos, psnr

HELD_OUT_SEED = 424_242


def box_down(images: np.ndarray, factor: int) -> np.ndarray:
    """Premultiplied box downsample (training.render.downsample) of uint8 RGBA [N, H, W, 4]."""
    return np.stack([np.asarray(Image.fromarray(im, "RGBA").convert("RGBa").reduce(factor).convert("RGBA"))
                     for im in images])


def edge_contrast(images: np.ndarray) -> float:
    """Mean absolute difference between horizontal and vertical neighbours, RGB composited on grey, in levels."""
    a = images[..., 3:4].astype(np.float32) / 255
    rgb = images[..., :3].astype(np.float32) * a + 128 * (1 - a)
    return float((np.abs(np.diff(rgb, axis=1)).mean() + np.abs(np.diff(rgb, axis=2)).mean()) / 2)


def renders(attrs: list[dict], size: int, seed: int) -> np.ndarray:
    from moe_avatar.training.render import render_avatar, sample_jitter

    out = []
    for i, a in enumerate(attrs):
        out.append(np.asarray(render_avatar(a, size, jitter=sample_jitter(a, np.random.default_rng([seed, i])))))
    return np.stack(out)


def held_out(upscale, count: int, scale: int) -> tuple[dict[str, float], tuple]:
    from moe_avatar.training.attributes import sample_attributes

    attrs = [sample_attributes(np.random.default_rng([HELD_OUT_SEED, i])) for i in range(count)]
    hi = renders(attrs, 64 * scale, HELD_OUT_SEED)
    lo = box_down(hi, scale)
    up, lz = upscale(lo), lanczos(lo, scale)
    return ({"images": count, "psnr": psnr(up, hi), "psnr_lanczos": psnr(lz, hi),
             "alpha_iou": alpha_iou(up, hi), "alpha_iou_lanczos": alpha_iou(lz, hi)}, (lo, lz, up, hi))


def generated(sampler, upscale, judge, count: int, scale: int) -> tuple[dict, tuple]:
    from moe_avatar.training.judge import predict
    from moe_avatar.training.prompt_sets import make_eval_prompts
    from moe_avatar.training.samplers import batched, generate_many
    from moe_avatar.training.scoring import stated_correct

    prompts = make_eval_prompts(count)
    emb = batched(sampler.encode_text, [p.text for p, _ in prompts])
    native = generate_many(sampler, emb, list(range(count)), psi=0.7)
    up = np.concatenate([upscale(native[i:i + 64]) for i in range(0, count, 64)])
    lz = lanczos(native, scale)
    real = renders([a for _, a in prompts], 64 * scale, 0)
    ring = np.concatenate([native[:, :2].reshape(count, -1, 4), native[:, -2:].reshape(count, -1, 4),
                           native[:, :, :2].reshape(count, -1, 4), native[:, :, -2:].reshape(count, -1, 4)], 1)[..., 3]
    opaque = ring.mean(1) > 127
    out = {"images": count, "opaque_background_images": int(opaque.sum()),
           "edge_contrast": edge_contrast(up), "edge_contrast_lanczos": edge_contrast(lz),
           "edge_contrast_renders": edge_contrast(real),
           "stray_transparent_per_1000": 1000 * float((up[opaque][..., 3] < 255).any((1, 2)).sum()) / max(opaque.sum(), 1),
           "stray_transparent_pixels": int((up[opaque][..., 3] < 255).sum()),
           "stray_transparent_pixels_lanczos": int((lz[opaque][..., 3] < 255).sum())}
    if judge is not None:
        def accuracy(images: np.ndarray) -> float:
            hits = [v for (p, _), pred in zip(prompts, predict(judge, images))
                    for v in stated_correct(p.attributes, pred).values()]
            return float(np.mean(hits))

        out["judge_accuracy_64"] = accuracy(native)
        out["judge_accuracy_upscaled_down_64"] = accuracy(box_down(up, scale))
    return out, (native, lz, up, None)


def reconstruction(run_dir: Path, upscale, count: int, scale: int) -> dict[str, float]:
    """The reconstruction stage's drawings of each prompt's true values, upscaled vs Lanczos,
    against the renders of those values."""
    import torch

    from moe_avatar.bundle import noise_from_seeds
    from moe_avatar.training.latent import attribute_indices, indices_to_code
    from moe_avatar.training.prompt_sets import make_eval_prompts
    from moe_avatar.training.samplers import CheckpointSampler, batched

    cfg = json.loads((run_dir / "config.json").read_text())
    sampler = CheckpointSampler(Path(cfg["clip"]["checkpoint"]), run_dir / "checkpoint.pt")
    prompts = make_eval_prompts(count)
    emb = torch.from_numpy(batched(sampler.encode_text, [p.text for p, _ in prompts])).float()
    code = indices_to_code(attribute_indices([a for _, a in prompts]))
    with torch.no_grad():
        x = sampler.g(torch.from_numpy(noise_from_seeds(range(count), sampler.z_dim)), emb, code=code)
    native = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    up = np.concatenate([upscale(native[i:i + 64]) for i in range(0, count, 64)])
    lz, real = lanczos(native, scale), renders([a for _, a in prompts], 64 * scale, 0)
    return {"images": count, "psnr": psnr(up, real), "psnr_lanczos": psnr(lz, real),
            "alpha_iou": alpha_iou(up, real), "alpha_iou_lanczos": alpha_iou(lz, real)}


def picture(held: tuple, gen: tuple, path: Path, rows: tuple[int, int] = (3, 4)) -> None:
    """Columns native 64 (nearest), Lanczos 256, upscaler 256, the 256 render; rows: held-out
    renders (their render in the last column), then generated avatars (which have none: left
    empty); on a checkerboard."""
    def strip(cols: tuple, i: int) -> np.ndarray:
        native, lz, up, real = cols
        s = up.shape[1]
        big = native[i].repeat(s // native.shape[1], 0).repeat(s // native.shape[1], 1)
        return np.concatenate([big, lz[i], up[i], real[i] if real is not None else np.zeros_like(up[i])], 1)

    arr = np.concatenate([strip(held, i) for i in range(rows[0])] + [strip(gen, i) for i in range(rows[1])], 0)
    checker = ((np.indices(arr.shape[:2]) // 8).sum(0) % 2) * 40 + 200
    a = arr[..., 3:4].astype(np.float32) / 255
    rgb = arr[..., :3] * a + np.stack([checker] * 3, -1) * (1 - a)
    Image.fromarray(rgb.round().astype(np.uint8)).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    import torch

    from moe_avatar.training.judge import JUDGE_VERSION, Judge
    from moe_avatar.training.samplers import BundleSampler

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle with upscaler.onnx")
    p.add_argument("--judge", type=Path, help="cached judge (training.judge) for the accuracy figures")
    p.add_argument("--held-out", type=int, default=200, help="held-out renders (default %(default)s)")
    p.add_argument("--generated", type=int, default=1000, help="generated avatars (default %(default)s)")
    p.add_argument("--reconstruction", type=Path, help="a reconstruction-stage GAN run directory (gan_rec): "
                   "figures on its drawings of each prompt's true values")
    p.add_argument("--picture", type=Path, help="write the side-by-side picture here")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    sampler = BundleSampler(a.bundle)
    scale = sampler.bundle.upscaled_resolution // sampler.bundle.resolution
    session = ort.InferenceSession(str(sampler.bundle.path("upscaler")), providers=["CPUExecutionProvider"])

    def upscale(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": np.ascontiguousarray(images)})[0]

    judge = None
    if a.judge and a.judge.is_file():
        state = torch.load(a.judge, map_location="cpu", weights_only=False)
        if state.get("version") == JUDGE_VERSION:
            judge = Judge()
            judge.load_state_dict(state["judge"])
            judge.eval()
    figures: dict = {}
    figures["held_out_renders"], held_images = held_out(upscale, a.held_out, scale)
    figures["generated"], images = generated(sampler, upscale, judge, a.generated, scale)
    if a.reconstruction:
        figures["reconstruction_stage"] = reconstruction(a.reconstruction, upscale, a.held_out, scale)
    print(json.dumps(figures, indent=2))
    if a.picture:
        picture(held_images, images, a.picture)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
