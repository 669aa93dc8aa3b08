"""Helpers that start a REAL moe-avatar server for tests: in-process (own event loop in a
thread, so the sync client can call it) or as a `python -m moe_avatar.server.main` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class InProcessServer:
    server: object  # server.main.AvatarServer
    loop: asyncio.AbstractEventLoop
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics(self):
        return self.server.metrics

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the server's loop (e.g. to read batcher state)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def running_server(models: pathlib.Path, **overrides) -> Iterator[InProcessServer]:
    """An AvatarServer on a free loopback port; overrides are ServerConfig fields."""
    from moe_avatar.server.config import ServerConfig
    from moe_avatar.server.main import AvatarServer

    settings = dict(models=models, host="127.0.0.1", port=0, device="cpu", log_format="text",
                    log_level="WARNING", grace_seconds=0.0, drain_seconds=0.0)
    settings.update(overrides)
    config = ServerConfig(**settings).validate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    server = AvatarServer(config)
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
        yield InProcessServer(server=server, loop=loop, port=port)
    finally:
        async def stop() -> None:
            await server.stop(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclasses.dataclass
class SubprocessServer:
    process: subprocess.Popen
    port: int
    log_lines: list[str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _read_port(process: subprocess.Popen, lines: list[str], timeout: float) -> int:
    """Wait for the JSON 'serving on port' log line; fail with the log if the server dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError("server exited early:\n" + "".join(lines))
            continue
        lines.append(line)
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message", "").startswith("serving on port"):
                return int(entry["port"])
    raise TimeoutError("server did not start:\n" + "".join(lines))


@contextlib.contextmanager
def subprocess_server(models: pathlib.Path, *args: str, timeout: float = 60) -> Iterator[SubprocessServer]:
    """`python -m moe_avatar.server.main --models DIR --port 0 ...` with JSON logs; SIGTERM at exit."""
    cmd = [sys.executable, "-m", "moe_avatar.server.main", "--models", str(models), "--host", "127.0.0.1", "--port", "0",
           "--device", "cpu", "--log-format", "json", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=env)
    lines: list[str] = []
    try:
        port = _read_port(process, lines, timeout)
        # Keep draining stderr so the server never blocks on a full pipe.
        drain = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
        drain.start()
        yield SubprocessServer(process=process, port=port, log_lines=lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
