"""`--workers N|gpus`: several server processes on one host, sharing one port.

Why processes: one Python process runs one event loop and, on CPU, one ONNX Runtime
thread pool that does not scale past a few cores; on a multi-GPU host, one process per GPU
keeps each CUDA context simple. We do what the official gRPC Python multiprocessing
example does:

* the parent reserves the port with a socket that has SO_REUSEPORT set (it never listens,
  so the kernel never hands it a connection; it only keeps the port ours, and tells us the
  port when --port is 0);
* each worker is a fresh interpreter (`python -m moe_avatar.server.worker_process`, never a fork of a process
  that has created gRPC objects) running one ordinary `AvatarServer` bound to the same
  port with `grpc.so_reuseport=1`; the kernel spreads *connections* (not calls) across
  the workers. A client that keeps one channel stays on one worker.

Per worker: `--intra-op-threads` defaults to cores / N; with `--workers gpus` worker i gets
`CUDA_VISIBLE_DEVICES=<i-th GPU>` and `--device cuda --cuda-device-id 0`; its Prometheus
metrics are on `--metrics-port + i` (one registry per process; no multiprocess registry to
keep consistent). Every log line of a worker carries `worker` and `pid`.

The parent supervises: SIGTERM/SIGINT are forwarded to every worker (each drains for
--drain-seconds, then gives streams in flight --grace-seconds); it exits 0 when all workers
stopped cleanly after a signal, and 1 (after stopping the others) as soon as a worker dies
on its own, which is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from moe_avatar.server.config import ConfigError, ServerConfig

log = logging.getLogger("moe_avatar.workers")

KILL_MARGIN_S = 15.0  # after SIGTERM a worker gets --drain-seconds + --grace-seconds plus this, then SIGKILL


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process gets: its own config and environment overrides."""

    index: int
    config: ServerConfig
    env: dict[str, str] = field(default_factory=dict)


def usable_cores() -> int:
    """Cores this process may run on (respects taskset / cpusets, unlike os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus(environ: dict[str, str]) -> list[str]:
    """GPU ids for `--workers gpus`: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan_workers(config: ServerConfig, port: int, cores: int, environ: dict[str, str]) -> list[WorkerSpec]:
    """One WorkerSpec per worker process; `port` is the concrete (reserved) port."""
    if config.workers == "gpus":
        if config.device == "cpu":
            raise ConfigError("--workers gpus needs --device cuda or auto (got --device cpu); "
                              "use --workers N for CPU workers")
        gpus = visible_gpus(environ)
        if not gpus:
            raise ConfigError("--workers gpus: no GPU found (CUDA_VISIBLE_DEVICES is empty and nvidia-smi "
                              "lists none); use --workers N for CPU workers")
        count = len(gpus)
    else:
        gpus, count = [], int(config.workers)
    threads = config.intra_op_threads or max(1, cores // count)
    specs = []
    for i in range(count):
        changes: dict[str, object] = dict(port=port, workers="1", intra_op_threads=threads,
                                          metrics_port=config.metrics_port + i if config.metrics_port else 0)
        env: dict[str, str] = {}
        if gpus:
            # The worker sees exactly one GPU, as device 0; "cuda" so a broken GPU fails loudly.
            changes.update(device="cuda", cuda_device_id=0)
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        specs.append(WorkerSpec(i, dataclasses.replace(config, **changes), env))
    if config.metrics_port and config.metrics_port + count - 1 > 65535:
        raise ConfigError(f"--metrics-port {config.metrics_port} + {count} workers runs past 65535")
    return specs


def config_argv(config: ServerConfig) -> list[str]:
    """The flags that rebuild `config` exactly (every field, so no env default leaks in)."""
    argv = []
    for f in dataclasses.fields(ServerConfig):
        argv += ["--" + f.name.replace("_", "-"), str(getattr(config, f.name))]
    return argv


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold host:port with SO_REUSEPORT (bound, not listening) so workers can share it."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((bare, port))
        except OSError as e:
            raise OSError(f"--port: cannot bind {host}:{port} ({e.strerror or e})") from e
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux), so no orphans."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Starts the workers, forwards signals, and decides the exit code."""

    def __init__(self, specs: list[WorkerSpec], stop_seconds: float) -> None:
        self.specs = specs
        self.stop_seconds = stop_seconds  # --drain-seconds + --grace-seconds: how long a worker may take to stop
        self.procs: dict[int, subprocess.Popen] = {}
        self.stopping_since: float | None = None

    def start(self) -> None:
        for spec in self.specs:
            cmd = [sys.executable, "-m", "moe_avatar.server.worker_process", "--worker-index", str(spec.index), "--",
                   *config_argv(spec.config)]
            env = {**os.environ, **spec.env}
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self.procs[spec.index] = subprocess.Popen(cmd, env=env, preexec_fn=preexec)
        log.info("started %d workers", len(self.procs), extra={
            "workers": [{"worker": i, "pid": p.pid, "metrics_port": self.specs[i].config.metrics_port or None,
                         "intra_op_threads": self.specs[i].config.intra_op_threads,
                         **self.specs[i].env} for i, p in self.procs.items()]})

    def signal_all(self, sig: int) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    def on_signal(self, signum: int, _frame) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.procs))
        self.signal_all(signal.SIGTERM)

    def wait(self) -> int:
        """Block until every worker has exited; the supervisor's exit code."""
        failed = False
        running = dict(self.procs)
        while running:
            for i, p in list(running.items()):
                rc = p.poll()
                if rc is None:
                    continue
                del running[i]
                clean = self.stopping_since is not None and rc in (0, -signal.SIGTERM, -signal.SIGINT)
                if clean:
                    continue
                failed = True
                why = "after the stop signal" if self.stopping_since is not None else "on its own"
                log.error("worker %d (pid %d) exited %s with code %s; stopping the others", i, p.pid, why, rc,
                          extra={"worker": i, "worker_pid": p.pid, "returncode": rc})
                if self.stopping_since is None:
                    self.stopping_since = time.monotonic()
                    self.signal_all(signal.SIGTERM)
            if (running and self.stopping_since is not None
                    and time.monotonic() - self.stopping_since > self.stop_seconds + KILL_MARGIN_S):
                log.error("workers %s still running %.0fs after SIGTERM; killing them",
                          sorted(running), self.stop_seconds + KILL_MARGIN_S)
                for p in running.values():
                    p.kill()
                failed = True
                self.stopping_since = float("inf")  # log once; the next poll reaps them
            time.sleep(0.05)
        return 1 if failed else 0


def supervise(config: ServerConfig) -> int:
    """Run `--workers` server processes on one port until SIGTERM/SIGINT; the exit code."""
    try:
        with reserve_port(config.host, config.port) as port:
            specs = plan_workers(config, port, usable_cores(), dict(os.environ))
            sup = Supervisor(specs, config.drain_seconds + config.grace_seconds)
            # Handlers first: a signal during start-up still reaches every started worker.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, sup.on_signal)
            log.info("supervising %d workers on port %d", len(specs), port,
                     extra={"port": port, "workers": len(specs), "supervisor_pid": os.getpid()})
            sup.start()
            if sup.stopping_since is not None:  # a signal arrived while starting
                sup.signal_all(signal.SIGTERM)
            code = sup.wait()
    except (ConfigError, OSError) as e:
        log.error("cannot start workers: %s", e)
        return 1
    log.info("all workers stopped", extra={"exit_code": code})
    return code
