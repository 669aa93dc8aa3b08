"""Distributed training with PyTorch's own engine: `torchrun --standalone --nproc_per_node 2`
(gloo on CPU) for CLIP and for the GAN on the tiny `*-test` configs.

Checked from outside, through tests/dist_probe.py (which runs the unchanged trainer and
records what each rank did): both ranks ran every step; they drew different images; after
every checkpointed step their weights and optimizer states are bit-identical (gradients
are all-reduced, so the replicas never drift); only rank 0 wrote the run directory, and
what it wrote is that shared state.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra")

from dist_probe import digests  # noqa: E402  (tests/ is on sys.path)
from server_util import REPO_ROOT  # noqa: E402

from moe_avatar.training.cli import main as train_main  # noqa: E402

STEPS = 4  # clip-test / gan-test: checkpoint_every 2, log_every 1


def _torchrun(probe_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIST_PROBE_DIR": str(probe_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO_ROOT / "tests" / "dist_probe.py"), *args, "--steps", str(STEPS), "--quiet"]
    # Own session, so a timeout ends torchrun *and* its rank processes.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _probe(probe_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()]


def _check_run(run_dir: Path, probe_dir: Path, stdout: str, parts: set[str]) -> None:
    assert "2 process(es)" in stdout  # rank 0 reports the world size
    ranks = [_probe(probe_dir, r) for r in (0, 1)]
    batches = [[row["indices"] for row in rows if row["event"] == "batch"] for rows in ranks]
    assert [len(b) for b in batches] == [STEPS, STEPS]  # both ranks ran every step
    assert batches[0] != batches[1], "ranks drew the same images: data is not split"

    checkpoints = [{row["step"]: row["digests"] for row in rows if row["event"] == "checkpoint"} for rows in ranks]
    assert list(checkpoints[0]) == list(checkpoints[1]) == [2, 4]
    for step in (2, 4):
        assert parts <= set(checkpoints[0][step]), checkpoints[0][step].keys()
        assert checkpoints[0][step] == checkpoints[1][step], f"ranks diverged at step {step}"
    assert checkpoints[0][2] != checkpoints[0][4]  # and training did move the weights

    # Rank 0 alone wrote the run directory, and wrote the shared state.
    written = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert written["step"] == STEPS and len(written["rng"]) == 2
    assert digests(written) == checkpoints[0][STEPS]
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [row["step"] for row in stats] == list(range(1, STEPS + 1))  # one row per step, not two
    assert sorted(p.name for p in run_dir.glob("*.tmp")) == []


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "data"
    assert train_main(["synth", "--count", "64", "--size", "64", "--seed", "5", "--out", str(out),
                       "--workers", "1", "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_torchrun_gloo_clip_keeps_ranks_identical(data: Path, tmp_path: Path) -> None:
    run_dir, probe = tmp_path / "clip", tmp_path / "probe"
    probe.mkdir()
    proc = _torchrun(probe, "clip", "--data", str(data), "--config", "clip-test", "--out", str(run_dir))
    _check_run(run_dir, probe, proc.stdout, {"model", "optimizer"})


@pytest.mark.slow
def test_torchrun_gloo_gan_keeps_ranks_identical(data: Path, tmp_path: Path) -> None:
    clip_dir = tmp_path / "clip"  # the frozen CLIP the GAN needs: a quick single-process run
    assert train_main(["clip", "--data", str(data), "--config", "clip-test", "--out", str(clip_dir),
                       "--steps", "2", "--quiet"]) == 0
    run_dir, probe = tmp_path / "gan", tmp_path / "probe"
    probe.mkdir()
    proc = _torchrun(probe, "gan", "--data", str(data), "--clip", str(clip_dir / "checkpoint.pt"),
                     "--config", "gan-test", "--out", str(run_dir))
    _check_run(run_dir, probe, proc.stdout, {"g", "d", "g_ema", "opt_g", "opt_d"})
    assert sorted(p.name for p in (run_dir / "samples").iterdir())  # rank 0 drew the sample grids
