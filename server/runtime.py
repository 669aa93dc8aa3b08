"""ONNX Runtime sessions and execution-provider selection.

ONNX Runtime quietly falls back to CPU when the CUDA provider cannot load (missing
CUDA/cuDNN, no GPU). `onnxruntime.get_available_providers()` lists CUDA whenever the
GPU wheel is installed, so it proves nothing: we create the session and check
`session.get_providers()`. `--device cuda` then fails at start; `--device auto` logs
a warning naming the reason and uses CPU.
"""

from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass

import onnxruntime as ort

log = logging.getLogger("moe_avatar.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


@dataclass(frozen=True)
class SessionFactory:
    """Creates sessions on one device with shared options; `provider` is what runs."""

    device: str  # "cuda" or "cpu" after resolution
    cuda_device_id: int
    intra_op_threads: int
    spinning: bool = False

    @property
    def provider(self) -> str:
        return CUDA if self.device == "cuda" else CPU

    def options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = 1  # our graphs are sequential; batching gives parallelism
        # Spinning ORT threads burn the cores the event loop, the texture encoders and the
        # other graphs' sessions need between runs; measured in benchmarks/RESULTS.md.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.log_severity_level = 3  # ORT warnings are noisy; we log what matters ourselves
        return so

    def providers(self) -> list:
        if self.device == "cuda":
            return [(CUDA, {"device_id": self.cuda_device_id}), CPU]
        return [CPU]

    def create(self, path: pathlib.Path) -> ort.InferenceSession:
        session = ort.InferenceSession(str(path), self.options(), providers=self.providers())
        actual = session.get_providers()
        if actual[0] != self.provider:
            raise DeviceError(f"{path.name}: asked for {self.provider} but ONNX Runtime runs it on {actual[0]}")
        return session


def resolve_device(device: str, probe_model: pathlib.Path, cuda_device_id: int = 0,
                   intra_op_threads: int = 0, spinning: bool = False) -> SessionFactory:
    """Turn --device auto|cuda|cpu into a working SessionFactory by trying a real session."""
    if device == "cpu":
        return SessionFactory("cpu", cuda_device_id, intra_op_threads, spinning)
    cuda = SessionFactory("cuda", cuda_device_id, intra_op_threads, spinning)
    reason = ""
    if CUDA not in ort.get_available_providers():
        reason = f"this onnxruntime build ({ort.__version__}) has no {CUDA}"
    else:
        try:
            cuda.create(probe_model)
            return cuda
        except Exception as e:  # DeviceError, or ORT failing to load CUDA libraries
            reason = f"{CUDA} could not be used: {e}"
    if device == "cuda":
        raise DeviceError(f"--device cuda: {reason}. Install a CUDA-enabled onnxruntime-gpu matching "
                          "the driver / CUDA / cuDNN, or start with --device cpu.")
    log.warning("device=auto: %s; serving on CPU (%s)", reason, CPU, extra={"provider": CPU, "device": "cpu"})
    return SessionFactory("cpu", cuda_device_id, intra_op_threads, spinning)


def device_description(factory: SessionFactory) -> str:
    """A human-readable device name for logs and ModelInfo."""
    if factory.device == "cuda":
        return f"cuda:{factory.cuda_device_id}"
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"
