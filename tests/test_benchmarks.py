"""Smoke runs of every benchmark on the tiny bundle, so the scripts keep working.

No timing is asserted (speed is measured by the benchmarks themselves, on a quiet
machine); these check that each script runs end to end, reports every cell and counts
no errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_bench_models_reports_every_graph_and_batch(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the PyTorch columns need the train extra")
    from moe_avatar.export.tiny import make_tiny_checkpoints

    clip, gan, _ = make_tiny_checkpoints(tmp_path / "checkpoints")  # the fixture's own weights (same seed)
    out = tmp_path / "models.json"
    proc = _run("bench_models.py", "--bundle", str(tiny_bundle), "--clip", str(clip), "--gan", str(gan),
                "--batches", "1", "4", "--seconds", "0.05", "--json", str(out))
    result = json.loads(out.read_text())
    cells = {(r["graph"], r["batch"]) for r in result["rows"]}
    assert cells == {(g, b) for g in ("text_encoder", "generator", "image_encoder", "upscaler") for b in (1, 4)}
    assert all(r["ort_ms"] > 0 and r["torch_ms"] > 0 for r in result["rows"])
    assert result["matmul_gflops"] > 0 and result["generator_mflops_per_image"] > 0
    assert result["mflops_per_image"]["upscaler"] > 0
    assert "% of measured matmul" in proc.stdout


def test_bench_models_runs_without_checkpoints(tiny_bundle: Path, tmp_path: Path) -> None:
    """A fresh clone has no checkpoints: ORT columns for every graph, PyTorch for the upscaler
    (rebuilt from the bundle's own ONNX weights), and the script says what it skipped."""
    pytest.importorskip("torch", reason="the PyTorch columns need the train extra")
    import shutil

    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"] = {}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "models.json"
    proc = _run("bench_models.py", "--bundle", str(bundle), "--batches", "2", "--seconds", "0.05", "--json", str(out))
    rows = {r["graph"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"text_encoder", "generator", "image_encoder", "upscaler"}
    assert "torch_ms" not in rows["generator"] and rows["upscaler"]["torch_ms"] > 0
    assert "skipped (no checkpoints; pass --clip and --gan)" in proc.stdout


def test_bench_service_compares_grpc_in_process_and_no_batching(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "service.json"
    _run("bench_service.py", "--models", str(model_repo), "--calls", "6", "--concurrency", "1", "3", "--sizes", "256",
         "--size-rounds", "2", "--json", str(out))
    result = json.loads(out.read_text())
    assert [r["concurrency"] for r in result["rows"]] == [1, 3]
    for row in result["rows"]:
        for cell in ("in_process", "grpc", "grpc_nobatch"):
            assert row[cell]["errors"] == 0 and row[cell]["avatars_per_s"] > 0, (cell, row[cell])
        assert set(row["ratios"]) == {"p50_grpc_over_in_process", "throughput_grpc_over_offline",
                                      "throughput_batching_on_over_off", "cost_256px_over_native"}
        assert row["grpc_256px"]["errors"] == 0 and row["grpc_256px"]["avatars_per_s"] > 0
        assert len(row["size_rounds"]) == 2 and all(r["256"]["ok"] == 6 and r["native"]["ok"] == 6 for r in row["size_rounds"])
    assert result["offline"]["errors"] == 0


def test_bench_textures_runs(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "textures.json"
    _run("bench_textures.py", "--models", str(model_repo), "--avatars", "2", "--repeats", "1", "--json", str(out))
    assert json.loads(out.read_text())


@pytest.mark.slow
def test_bench_workers_runs(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    _run("bench_workers.py", "--models", str(model_repo), "--workers", "1", "2", "--calls", "8",
         "--concurrency", "2", "--rounds", "1", "--json", str(out))
    assert json.loads(out.read_text())
