"""What streamed textures may cost: a server-wide budget of bytes held, and fair turns
at the texture-encoding threads.

* **ByteBudget.** A texture's encoded bytes are held from the moment it is encoded until
  its last chunk has been written to the client. The service encodes lazily (the texture
  being written plus the next one), so a call holds at most two textures; the budget
  caps what all calls together hold (`--max-held-bytes`). Past it, new calls are refused
  with RESOURCE_EXHAUSTED; calls in flight finish, since refusing them would waste the
  work already done.
* **FairEncoder.** The encoding threads take clients in turn (round robin over the
  clients with work waiting), not first come first served, so a client with a hundred
  jobs queued delays another client's job by at most one job per client ahead of it.
  A client is a connection (the peer address with its port): calls multiplexed on one
  HTTP/2 connection share its turn. Jobs cannot be pre-empted, and a 1024 px lossless
  WebP takes about a second while a 64 px PNG takes milliseconds, so heavy jobs may use
  all threads but one, and a light job never waits behind heavy ones (not even its own
  client's).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moe_avatar.server.textures import OutputSpec
from moeavatar.v1 import avatar_pb2 as pb

# Who is asking, for fair turns: the connection of the RPC running in this task (set by
# service._rpc; read by the batchers and the encoder).
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("client", default="")

# Work of one texture ~ output pixels x a per-format factor; above HEAVY_COST it is heavy
# (measured on one core: PNG / WebP of 128 px <= 25 ms, of 256 px 25-175 ms; RGBA8 of 512 px ~12 ms).
FORMAT_COST = {pb.TEXTURE_FORMAT_RGBA8: 1}
COMPRESSED_COST = 8
HEAVY_COST = 128 * 128 * COMPRESSED_COST


def is_heavy(spec: OutputSpec, native_size: int) -> bool:
    """Whether encoding one texture to `spec` is slow enough to hold a thread for long."""
    side = spec.size or native_size
    return side * side * FORMAT_COST.get(spec.format, COMPRESSED_COST) > HEAVY_COST


class ByteBudget:
    """Bytes of encoded textures held by all streams of this server."""

    def __init__(self, limit: int, on_change: Callable[[int], None] = lambda held: None) -> None:
        self.limit = limit  # 0 = no limit
        self.held = 0
        self._on_change = on_change

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.held >= self.limit

    def hold(self, size: int) -> None:
        self.held += size
        self._on_change(self.held)

    def release(self, size: int) -> None:
        self.held -= size
        self._on_change(self.held)


@dataclass(eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple
    heavy: bool
    future: asyncio.Future
    client: str = field(default="")


class FairEncoder:
    """Runs blocking jobs on `workers` threads, taking the clients with waiting jobs in turn.

    The threads are its own: a job is handed over only when a thread is free, so it starts
    at once (concurrent.futures' pool may queue a job behind busy threads while one of its
    threads counts as idle, which held light jobs up for a whole heavy encode)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.heavy_slots = max(1, workers - 1)  # one thread stays free for light jobs
        self._handover: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"encode-{i}", daemon=True).start()
        self._waiting: collections.OrderedDict[str, collections.deque[_Job]] = collections.OrderedDict()
        self._running = 0
        self._running_heavy = 0

    @property
    def queued(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    async def run(self, client: str, heavy: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on an encoding thread when it is `client`'s turn; cancel-safe."""
        job = _Job(fn, args, heavy, asyncio.get_running_loop().create_future(), client)
        self._waiting.setdefault(client, collections.deque()).append(job)
        self._dispatch()
        try:
            return await job.future
        finally:
            waiting = self._waiting.get(client)
            if waiting is not None and job in waiting:  # cancelled before it ran
                waiting.remove(job)
                if not waiting:
                    del self._waiting[client]

    def shutdown(self) -> None:
        for _ in range(self.workers):
            self._handover.put(None)

    def _work(self) -> None:
        """One encoding thread: run what is handed over, report back on the job's loop."""
        while (item := self._handover.get()) is not None:
            job, loop = item
            try:
                outcome: tuple[Any, BaseException | None] = (job.fn(*job.args), None)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting coroutine
                outcome = (None, e)
            _call_soon(loop, self._finished, job, outcome)

    def _next(self) -> _Job | None:
        """The first client in turn with a job that may run now (its oldest, or while heavy jobs
        fill their threads its oldest light one); that client goes last."""
        heavy_full = self._running_heavy >= self.heavy_slots
        for client, waiting in self._waiting.items():
            job = next((j for j in waiting if not (j.heavy and heavy_full)), None)
            if job is None:
                continue
            waiting.remove(job)
            if waiting:
                self._waiting.move_to_end(client)
            else:
                del self._waiting[client]
            return job
        return None

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self.workers and (job := self._next()) is not None:
            if job.future.done():
                continue
            self._running += 1
            self._running_heavy += job.heavy
            self._handover.put((job, loop))

    def _finished(self, job: _Job, outcome: tuple[Any, BaseException | None]) -> None:
        self._running -= 1
        self._running_heavy -= job.heavy
        result, error = outcome
        if not job.future.done():
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        self._dispatch()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop closed while the job ran (shutdown): nobody waits for it
        pass
