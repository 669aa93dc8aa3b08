"""Model micro-benchmark: each ONNX graph under ONNX Runtime vs the same weights in PyTorch eager.

    python benchmarks/bench_models.py --bundle models/chibi-64 [--batches 1 8 32 128] [--seconds 1.0] [--json out.json]

The checkpoints are taken from the bundle manifest's `source` (or --clip/--gan). Both
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

from moe_avatar.server.bundle import load_bundle, noise_from_seeds  # noqa: E402
from moe_avatar.export.graphs import GeneratorGraph, ImageEncoder, TextEncoder  # noqa: E402
from moe_avatar.training.models import load_clip_checkpoint, load_gan_checkpoint  # noqa: E402


def matmul_gflops(seconds: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - t0) / 1e9


def generator_flops(g: torch.nn.Module, z_dim: int, embed_dim: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        g(torch.zeros(1, z_dim), torch.zeros(1, embed_dim), torch.ones(1))
    return float(fc.get_total_flops())


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


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--clip", type=Path)
    p.add_argument("--gan", type=Path)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--seconds", type=float, default=1.0, help="measuring time per engine per cell")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)

    bundle = load_bundle(a.bundle)
    manifest = bundle.manifest
    clip, _ = load_clip_checkpoint(a.clip or a.bundle / manifest["source"]["clip"])
    g, _, _ = load_gan_checkpoint(a.gan or a.bundle / manifest["source"]["gan"], manifest["training"].get("generator_weights", "ema"))
    res, z_dim, d, ctx = bundle.resolution, bundle.z_dim, bundle.embed_dim, bundle.context_length
    so = ort.SessionOptions()
    sessions = {k: ort.InferenceSession(str(bundle.path(k)), so, providers=["CPUExecutionProvider"])
                for k in ("text_encoder", "generator", "image_encoder")}
    modules = {"text_encoder": TextEncoder(clip).eval(), "generator": GeneratorGraph(g).eval(), "image_encoder": ImageEncoder(clip).eval()}

    gflops_machine = matmul_gflops(a.seconds)
    flops_per_image = generator_flops(g, z_dim, d)
    rows = []
    cells = [(k, b) for k in sessions for b in a.batches]
    for key, b in tqdm(cells, desc="benchmark"):
        rng = np.random.default_rng(0)
        if key == "text_encoder":
            vocab = clip.token_embedding.num_embeddings  # the last id is the end-of-text token
            feeds = {"input_ids": rng.integers(1, vocab - 2, size=(b, ctx)).astype(np.int64)}
            feeds["input_ids"][:, 20] = vocab - 1
            feeds["input_ids"][:, 21:] = 0
        elif key == "generator":
            feeds = {"z": noise_from_seeds(list(range(b)), z_dim),
                     "text_embedding": rng.standard_normal((b, d)).astype(np.float32),
                     "psi": np.ones(b, np.float32)}
        else:
            feeds = {"image": rng.integers(0, 256, size=(b, res, res, 4)).astype(np.uint8)}
        tensors = [torch.from_numpy(v) for v in feeds.values()]
        sess, mod = sessions[key], modules[key]

        def run_torch() -> None:
            with torch.no_grad():
                mod(*tensors)

        t_ort, t_torch = time_pair(lambda: sess.run(None, feeds), run_torch, a.seconds)
        row = {"graph": key, "batch": b, "ort_ms": t_ort * 1e3, "torch_ms": t_torch * 1e3,
               "ort_per_s": b / t_ort, "torch_per_s": b / t_torch, "speedup": t_torch / t_ort}
        if key == "generator":
            row["gflops"] = flops_per_image * b / t_ort / 1e9
        rows.append(row)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; fp32 matmul {gflops_machine:.0f} GFLOP/s")
    print(f"generator: {flops_per_image / 1e6:.1f} MFLOP per image ({res} px)\n")
    print(f"{'graph':<14}{'batch':>6}{'ORT ms':>10}{'torch ms':>10}{'ORT img/s':>11}{'torch img/s':>12}{'ORT/torch':>10}{'GFLOP/s':>9}")
    for r in rows:
        gf = f"{r['gflops']:9.1f}" if "gflops" in r else " " * 9
        print(f"{r['graph']:<14}{r['batch']:>6}{r['ort_ms']:>10.2f}{r['torch_ms']:>10.2f}{r['ort_per_s']:>11.0f}"
              f"{r['torch_per_s']:>12.0f}{r['speedup']:>9.2f}x{gf}")
    best = max(r["gflops"] for r in rows if "gflops" in r)
    print(f"\ngenerator best {best:.1f} GFLOP/s = {100 * best / gflops_machine:.0f}% of measured matmul GFLOP/s")
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "matmul_gflops": gflops_machine,
                                      "generator_mflops_per_image": flops_per_image / 1e6, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
