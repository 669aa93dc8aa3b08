"""Model micro-benchmark: each ONNX graph under ONNX Runtime vs the same weights in PyTorch eager.

    python benchmarks/bench_models.py --bundle models/chibi-64 [--batches 1 8 32 128] [--seconds 1.0] [--json out.json]

The PyTorch side of the text encoder, image encoder and generator needs their checkpoints:
--clip/--gan, or the manifest's `source` paths when they exist. The repository does not ship
them, so on a fresh clone those graphs get ONNX Runtime columns only (the table says so).
The upscaler's PyTorch module is rebuilt from the bundle's own ONNX weights (its config is in
the manifest), checked against ONNX Runtime, so its ratio is measured on any clone. Both
engines run in the same process, interleaved round by round, so machine noise hits both
alike; the table reports median ms per call, images/s and the ORT/PyTorch speed ratio.
It also reports the generator's FLOPs per image and its achieved GFLOP/s next to this
machine's fp32 matmul GFLOP/s, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_avatar.bundle import load_bundle, noise_from_seeds  # noqa: E402
from moe_avatar.export.graphs import GeneratorGraph, ImageEncoder, TextEncoder, UpscalerReference  # noqa: E402
from moe_avatar.training.models import load_clip_checkpoint, load_gan_checkpoint  # noqa: E402
from moe_avatar.training.upscaler import build_upscaler  # noqa: E402


def upscaler_from_onnx(bundle) -> torch.nn.Module:
    """The bundle's upscaler as a PyTorch module, from upscaler.onnx's own weights: initializers
    by name (float16-stored ones cast back), PReLU slopes (if any) by the order of the PRelu nodes (the
    exporter folds them under generated names, equal ones shared through Identity nodes)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle.path("upscaler")))
    inits = {i.name.removesuffix("__fp16"): numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    up = build_upscaler(bundle.manifest["training"]["upscaler"]["model"])
    state = up.state_dict()
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}  # shared slopes
    slopes = [n.input[1] for n in model.graph.node if n.op_type == "PRelu"]
    slopes = [alias.get(name, name) for name in slopes]
    prelus = [k for k in state if k.endswith(".weight") and state[k].ndim == 1]
    loaded = {k: torch.from_numpy(inits[f"up.{k}"]) for k in state if f"up.{k}" in inits}
    loaded.update({k: torch.from_numpy(inits[s].reshape(-1)) for k, s in zip(prelus, slopes)})
    up.load_state_dict(loaded)
    return UpscalerReference(up.eval()).eval()


def torch_modules(a, bundle) -> tuple[dict[str, torch.nn.Module], torch.nn.Module | None]:
    """PyTorch twins of the graphs that can be built here (module docstring); G for its FLOPs."""
    manifest, source = bundle.manifest, bundle.manifest.get("source") or {}
    clip_path = a.clip or (a.bundle / source["clip"] if source.get("clip") else None)
    gan_path = a.gan or (a.bundle / source["gan"] if source.get("gan") else None)
    modules: dict[str, torch.nn.Module] = {}
    g = None
    if clip_path and gan_path and clip_path.is_file() and gan_path.is_file():
        clip, _ = load_clip_checkpoint(clip_path)
        g, _, _ = load_gan_checkpoint(gan_path, manifest["training"].get("generator_weights", "ema"))
        modules = {"text_encoder": TextEncoder(clip).eval(), "generator": GeneratorGraph(g).eval(),
                   "image_encoder": ImageEncoder(clip).eval()}
    else:
        print("PyTorch columns of text_encoder, generator, image_encoder: skipped (no checkpoints; pass --clip and --gan)")
    if bundle.upscaled_resolution:
        modules["upscaler"] = upscaler_from_onnx(bundle)
    return modules, g


def matmul_gflops(seconds: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - t0) / 1e9


def time_pair(run_ort, run_torch, seconds: float, rounds: int = 5) -> tuple[float, float]:
    """Median seconds per call of each engine, interleaving the two `rounds` times."""
    run_ort(), run_torch()  # warm-up
    ort_t, torch_t = [], []
    for _ in range(rounds):
        for fn, out in ((run_ort, ort_t), (run_torch, torch_t)):
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds or calls == 0:
                fn()
                calls += 1
            out.append((time.perf_counter() - t0) / calls)
    return statistics.median(ort_t), statistics.median(torch_t)


def feeds_for(key: str, b: int, bundle, vocab: int) -> dict[str, np.ndarray]:
    """Inputs of batch `b` for graph `key`: token ids within the bundle's vocabulary (the last
    id is the end-of-text token), seeded noise, random images."""
    rng = np.random.default_rng(0)
    res, ctx = bundle.resolution, bundle.context_length
    if key == "text_encoder":
        ids = rng.integers(1, vocab - 2, size=(b, ctx)).astype(np.int64)
        ids[:, 20], ids[:, 21:] = vocab - 1, 0
        return {"input_ids": ids}
    if key == "generator":
        return {"z": noise_from_seeds(list(range(b)), bundle.z_dim),
                "text_embedding": rng.standard_normal((b, bundle.embed_dim)).astype(np.float32),
                "psi": np.ones(b, np.float32)}
    return {"image": rng.integers(0, 256, size=(b, res, res, 4)).astype(np.uint8)}


def flops(module: torch.nn.Module, *inputs: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(*inputs)
    return float(fc.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory, e.g. models/chibi-64")
    p.add_argument("--clip", type=Path, help="CLIP checkpoint for the encoders' PyTorch columns (default: the manifest's source)")
    p.add_argument("--gan", type=Path, help="GAN checkpoint for the generator's PyTorch column (default: the manifest's source)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128], help="batch sizes (default %(default)s)")
    p.add_argument("--seconds", type=float, default=1.0, help="measuring time per engine per cell")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)

    bundle = load_bundle(a.bundle)
    keys = ["text_encoder", "generator", "image_encoder"] + (["upscaler"] if bundle.upscaled_resolution else [])
    sessions = {k: ort.InferenceSession(str(bundle.path(k)), ort.SessionOptions(), providers=["CPUExecutionProvider"])
                for k in keys}
    modules, g = torch_modules(a, bundle)
    vocab = Tokenizer.from_file(str(bundle.path("tokenizer"))).get_vocab_size()
    if "upscaler" in modules:  # the rebuilt module must be the graph's own weights
        x = feeds_for("upscaler", 2, bundle, vocab)["image"]
        with torch.no_grad():
            diff = np.abs(modules["upscaler"](torch.from_numpy(x)).numpy().astype(int) - sessions["upscaler"].run(None, {"image": x})[0])
        assert diff.max() <= 16, f"upscaler rebuilt from ONNX differs by {diff.max()} levels"
    gflops_machine = matmul_gflops(a.seconds)
    mflops = {}
    if g is not None:
        mflops["generator"] = flops(g, torch.zeros(1, bundle.z_dim), torch.zeros(1, bundle.embed_dim), torch.ones(1)) / 1e6
    if "upscaler" in modules:
        mflops["upscaler"] = flops(modules["upscaler"], torch.zeros(1, bundle.resolution, bundle.resolution, 4, dtype=torch.uint8)) / 1e6
    rows = []
    for key, b in tqdm([(k, b) for k in keys for b in a.batches], desc="benchmark"):
        feeds = feeds_for(key, b, bundle, vocab)
        tensors = [torch.from_numpy(v) for v in feeds.values()]
        sess, mod = sessions[key], modules.get(key)

        def run_torch() -> None:
            with torch.no_grad():
                mod(*tensors)

        if mod is None:
            t_ort, _ = time_pair(lambda: sess.run(None, feeds), lambda: None, a.seconds / 2)
            row = {"graph": key, "batch": b, "ort_ms": t_ort * 1e3, "ort_per_s": b / t_ort}
        else:
            t_ort, t_torch = time_pair(lambda: sess.run(None, feeds), run_torch, a.seconds)
            row = {"graph": key, "batch": b, "ort_ms": t_ort * 1e3, "torch_ms": t_torch * 1e3,
                   "ort_per_s": b / t_ort, "torch_per_s": b / t_torch, "speedup": t_torch / t_ort}
        if key in mflops:
            row["gflops"] = mflops[key] * 1e6 * b / t_ort / 1e9
        rows.append(row)
    report(rows, bundle, gflops_machine, mflops)
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "bundle": f"{bundle.name} {bundle.version}",
                                      "matmul_gflops": gflops_machine, "mflops_per_image": mflops,
                                      "generator_mflops_per_image": mflops.get("generator"), "rows": rows}, indent=2) + "\n")
    return 0


def report(rows: list[dict], bundle, gflops_machine: float, mflops: dict[str, float]) -> None:
    import onnxruntime as ort

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; fp32 matmul {gflops_machine:.0f} GFLOP/s; bundle {bundle.name} {bundle.version}")
    for key, m in mflops.items():
        print(f"{key}: {m:.1f} MFLOP per image")
    print(f"\n{'graph':<14}{'batch':>6}{'ORT ms':>10}{'torch ms':>10}{'ORT img/s':>11}{'torch img/s':>12}{'ORT/torch':>10}{'GFLOP/s':>9}")
    for r in rows:
        gf = f"{r['gflops']:9.1f}" if "gflops" in r else " " * 9
        torch_cols = (f"{r['torch_ms']:>10.2f}", f"{r['torch_per_s']:>12.0f}", f"{r['speedup']:>9.2f}x") if "torch_ms" in r \
            else (f"{'-':>10}", f"{'-':>12}", f"{'-':>10}")
        print(f"{r['graph']:<14}{r['batch']:>6}{r['ort_ms']:>10.2f}{torch_cols[0]}{r['ort_per_s']:>11.0f}{torch_cols[1]}{torch_cols[2]}{gf}")
    for key in mflops:
        best = max(r["gflops"] for r in rows if r["graph"] == key)
        print(f"{key} best {best:.1f} GFLOP/s = {100 * best / gflops_machine:.0f}% of measured matmul GFLOP/s")


if __name__ == "__main__":
    sys.exit(main())
