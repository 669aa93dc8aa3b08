"""What every training run shares: run directory, stats log, checkpoints, RNG state, DDP.

A run directory holds `config.json` (the resolved config), `stats.jsonl` (one JSON line per
logged step), `checkpoint.pt` (latest; carries its config, so it rebuilds alone) and
`samples/` (pictures). Under `torchrun` every rank trains and rank 0 writes.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm


@dataclass
class Dist:
    """Process group facts; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU, fp16 AMP on CUDA ("amp"), or nothing ("fp32")."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "amp":
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"precision must be fp32, bf16 or amp, got {precision!r}")


def add_run_arguments(p) -> None:
    """The flags every trainer shares (config overrides, data limits, resume, output)."""
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (per process)")
    p.add_argument("--precision", choices=["fp32", "bf16", "amp"], help="override train.precision")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--stop-at", type=int, help="stop after this step (checkpointed) as if interrupted; --resume continues")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad dataset rows instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_overrides(args) -> dict[str, Any]:
    """The train options the command line overrides (--steps, --batch-size, --precision)."""
    return {k: getattr(args, k) for k in ("steps", "batch_size", "precision") if getattr(args, k, None) is not None}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(data_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "data": data_rng.bit_generator.state}


def restore_rng_state(state: dict[str, Any], data_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_rng.bit_generator.state = state["data"]


class RunDir:
    """The run directory; only the main rank writes to it."""

    def __init__(self, path: Path, main: bool = True):
        self.path = Path(path)
        self.main = main
        if main:
            (self.path / "samples").mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_config(self, config: dict[str, Any]) -> None:
        if self.main:
            (self.path / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    def log_stats(self, row: dict[str, Any]) -> None:
        if self.main:
            with open(self.path / "stats.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_stats(self, step: int) -> None:
        """Drop stats rows after `step`, so a resumed curve has no duplicates (0: an empty curve)."""
        path = self.path / "stats.jsonl"
        if self.main and path.exists():
            rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            path.write_text("".join(r + "\n" for r in rows))

    def start(self, resume: bool, data_rng: np.random.Generator, rank: int) -> dict[str, Any] | None:
        """The checkpoint to continue from (`resume` and one exists: this rank's RNG state is
        restored and later stats rows dropped), or None for a fresh start, whose stats begin
        empty: a rerun into the same directory never appends to an earlier run's curve."""
        if not (resume and self.checkpoint.exists()):
            self.truncate_stats(0)
            return None
        ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        restore_rng_state(ckpt["rng"][rank], data_rng)
        self.truncate_stats(ckpt["step"])
        return ckpt

    def save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        if self.main:
            tmp = self.checkpoint.with_suffix(".tmp")
            torch.save(ckpt, tmp)
            tmp.replace(self.checkpoint)  # atomic: a crash never leaves half a checkpoint


def sample_batch(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Random image indices for one step.

    Drawn afresh each step from the run's data RNG (seeded per rank), so a checkpoint that
    saves the RNG state resumes on exactly the batches the uninterrupted run would see.
    """
    return rng.choice(n, size=min(batch_size, n), replace=False)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 4] -> float [N, 4, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def gather_rng_states(state: dict[str, Any], d: Dist) -> list[dict[str, Any]]:
    """Every rank's RNG state (index = rank), so a resumed multi-process run draws the same batches."""
    if d.world == 1:
        return [state]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, state)
    return out


def average_gradients(module: torch.nn.Module, d: Dist) -> None:
    """All-reduce gradients across ranks (mean).

    Used instead of DistributedDataParallel because the GAN's gradient penalty needs a
    double backward, which DDP does not support; one mechanism for both trainers.
    """
    if d.world == 1:
        return
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            # This rank's batch did not reach p (e.g. an attribute head whose family no
            # caption here states): it contributes zero, and every rank runs the same
            # all-reduces in the same order (a skipped one would hang or abort gloo).
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(d.world)


def broadcast_parameters(module: torch.nn.Module, d: Dist) -> None:
    """Start every rank from rank 0's weights."""
    if d.world == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def load_states(ckpt: dict[str, Any], parts: dict[str, Any]) -> int:
    """Load each named module's or optimizer's state from a checkpoint dict (the keys the
    trainer saved them under); returns the checkpoint's step. Shared by every trainer's --resume."""
    for key, part in parts.items():
        if key in ckpt:
            part.load_state_dict(ckpt[key])
    return int(ckpt["step"])


class StepLog:
    """The progress bar and the stats row every `log_every` steps (with samples/s), for every trainer."""

    def __init__(self, run_dir: RunDir, desc: str, total: int, initial: int, log_every: int, disable: bool):
        self.run_dir, self.total, self.log_every = run_dir, total, log_every
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=disable)
        self.t_last, self.n_last = time.time(), 0

    def due(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.total

    def step(self, step: int, samples: int, row: dict[str, Any]) -> dict[str, Any] | None:
        """Count one step; on a logging step write `row` (tensors read here, the one host sync)."""
        self.n_last += samples
        self.bar.update(1)
        if not self.due(step):
            return None
        now = time.time()
        out = {"step": step, **{k: round(float(torch.as_tensor(v).detach()), 7 if k == "lr" else 5) for k, v in row.items()},
               "samples_per_s": round(self.n_last / (now - self.t_last), 1)}
        self.t_last, self.n_last = now, 0
        self.run_dir.log_stats(out)
        return out

    def close(self) -> None:
        self.bar.close()
