"""ONNX Runtime sessions and execution-provider selection.

ONNX Runtime quietly falls back to CPU when the CUDA provider cannot load (missing
CUDA/cuDNN, no GPU). `onnxruntime.get_available_providers()` lists CUDA whenever the
GPU wheel is installed, so it proves nothing: we create the session and check
`session.get_providers()`. `--device cuda` then fails at start; `--device auto` logs
one line naming the provider and the reason, and uses CPU.

The probe is quiet: without an NVIDIA driver (libcuda.so.1) or a GPU it does not ask ONNX
Runtime at all, and otherwise it silences ONNX Runtime's own log while it tries, so a CPU
machine with the GPU wheel installed does not print ORT's red "Failed to load library
libonnxruntime_providers_cuda.so" error and its warnings at every start.
"""

from __future__ import annotations

import ctypes
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


ORT_WARNING, ORT_ERROR, ORT_FATAL = 2, 3, 4  # ONNX Runtime log severities


def gpu_count() -> tuple[int, str]:
    """CUDA devices the NVIDIA driver reports, asked of the driver itself (no ONNX Runtime,
    nothing printed); with the reason when there are none."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver on this machine (libcuda.so.1 not found)"
    count = ctypes.c_int(0)
    if (error := driver.cuInit(0)) != 0:
        return 0, f"the NVIDIA driver found no usable GPU (cuInit error {error})"
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "the NVIDIA driver reports no GPU"
    return count.value, ""


def _cuda_reason(cuda: SessionFactory, probe_model: pathlib.Path) -> str:
    """Why CUDA cannot serve here ('' = it can), asking ONNX Runtime only where a GPU exists."""
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no {CUDA}"
    gpus, why = gpu_count()
    if not gpus:
        return why
    ort.set_default_logger_severity(ORT_FATAL)  # its load errors become our one line below
    try:
        cuda.create(probe_model)
        return ""
    except Exception as e:  # noqa: BLE001 - DeviceError, or ORT failing to load CUDA libraries
        return (f"{gpus} GPU(s), but ONNX Runtime cannot run {CUDA} ({e}); its CUDA / cuDNN libraries "
                "are missing or do not match this onnxruntime-gpu")
    finally:
        ort.set_default_logger_severity(ORT_ERROR)


def resolve_device(device: str, probe_model: pathlib.Path, cuda_device_id: int = 0,
                   intra_op_threads: int = 0, spinning: bool = False) -> SessionFactory:
    """Turn --device auto|cuda|cpu into a working SessionFactory by trying a real session;
    logs one line saying which provider serves and why."""
    cpu = SessionFactory("cpu", cuda_device_id, intra_op_threads, spinning)
    if device == "cpu":
        log.info("device=cpu: serving on %s (as asked)", CPU, extra={"provider": CPU, "device": "cpu"})
        return cpu
    cuda = SessionFactory("cuda", cuda_device_id, intra_op_threads, spinning)
    reason = _cuda_reason(cuda, probe_model)
    if not reason:
        log.info("device=%s: serving on %s (GPU %d)", device, CUDA, cuda_device_id,
                 extra={"provider": CUDA, "device": f"cuda:{cuda_device_id}"})
        return cuda
    if device == "cuda":
        raise DeviceError(f"--device cuda: {reason}. Install a CUDA-enabled onnxruntime-gpu matching "
                          "the driver / CUDA / cuDNN, or start with --device cpu.")
    log.warning("device=auto: serving on %s because %s", CPU, reason, extra={"provider": CPU, "device": "cpu"})
    return cpu


def device_description(factory: SessionFactory) -> str:
    """A human-readable device name for logs and ModelInfo."""
    if factory.device == "cuda":
        return f"cuda:{factory.cuda_device_id}"
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"
