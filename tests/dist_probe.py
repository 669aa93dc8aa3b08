"""torchrun entry used by tests/test_distributed.py: runs `moe-avatar-train ARGS` unchanged,
and records, per rank, what the test needs to see from outside:

* at every checkpoint (every rank calls RunDir.save_checkpoint; only rank 0 writes the
  file), a SHA-256 per checkpoint part (weights, optimizer state) of this rank's state;
* the image indices this rank drew for its batches (to show the ranks saw different data).

Written to $DIST_PROBE_DIR/rank<R>.jsonl. The observed functions still run as they are.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from moe_avatar.training import runs
from moe_avatar.training.cli import main

SKIP = {"rng", "config", "family", "step", "embed_dim"}  # not parameters, or per-rank by design


def _record(row: dict) -> None:
    out = Path(os.environ["DIST_PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def _digest(value, h) -> None:
    """Feed every tensor under `value` (nested dicts / lists) into h, in a fixed order."""
    if isinstance(value, torch.Tensor):
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(str(key).encode())
            _digest(value[key], h)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest(item, h)
    else:
        h.update(repr(value).encode())


def digests(ckpt: dict) -> dict[str, str]:
    out = {}
    for key in sorted(set(ckpt) - SKIP):
        h = hashlib.sha256()
        _digest(ckpt[key], h)
        out[key] = h.hexdigest()
    return out


_save = runs.RunDir.save_checkpoint


def save_checkpoint(self, ckpt):
    _record({"event": "checkpoint", "step": ckpt["step"], "digests": digests(ckpt)})
    _save(self, ckpt)


def _observed(sample_batch):
    def wrapper(n, batch_size, rng):
        idx = sample_batch(n, batch_size, rng)
        _record({"event": "batch", "indices": [int(i) for i in idx]})
        return idx
    return wrapper


if __name__ == "__main__":  # importing this module (for `digests`) changes nothing
    runs.RunDir.save_checkpoint = save_checkpoint
    runs.sample_batch = _observed(runs.sample_batch)  # both trainers call runs.sample_batch
    sys.exit(main(sys.argv[1:]))
