"""Micro-batching: concurrent requests are merged into one ONNX Runtime run.

Each request submits arrays whose first axis is its rows (e.g. 4 avatars). A single
worker task takes waiting requests, up to `max_batch` rows (a larger request runs
alone), concatenates them, runs the blocking graph in a thread (the event loop stays
responsive), and splits the outputs back. While one batch runs, new requests queue up
and form the next batch.

Waiting for company: the pipeline announces requests that will reach this graph soon
(`expect()`; e.g. still in the text encoder). The worker then waits up to `max_wait`
for them, but only while such requests exist, so a lone request never waits.

The queue is bounded (`QueueFull` -> RESOURCE_EXHAUSTED). A request cancelled while
waiting (client cancel, deadline) leaves the queue at once and frees its slot.

Fair turns: a batch is filled with the requests of the clients (connections) served least
recently first, each client's own requests in order, so one client with a long queue of
big requests cannot keep another client's request out of the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from moe_avatar.server.streaming import CLIENT

log = logging.getLogger("moe_avatar.batcher")

RunFn = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


class QueueFull(RuntimeError):
    """The batcher's queue holds `max_queue` requests already."""


@dataclass(eq=False)  # identity: `item in deque` must not compare arrays
class _Item:
    inputs: Sequence[np.ndarray]
    future: asyncio.Future
    client: str = ""
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.inputs[0].shape[0])


class MicroBatcher:
    def __init__(self, name: str, run: RunFn, executor: concurrent.futures.Executor, *, max_batch: int,
                 max_wait_s: float, max_queue: int,
                 on_batch: Callable[[str, int, float], None] = lambda name, rows, seconds: None,
                 on_queue: Callable[[str, int], None] = lambda name, depth: None) -> None:
        self.name = name
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._pending: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._coming = 0  # announced requests that have not submitted yet
        self._batches = 0
        self._served: dict[str, int] = {}  # client -> the batch that last included it

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def expect(self) -> None:
        """A request will submit here soon: a batch may wait (max_wait) for it."""
        self._coming += 1

    def unexpect(self) -> None:
        """An announced request will not come after all (cancelled, failed, cache hit)."""
        self._coming -= 1
        self._wakeup.set()

    async def submit(self, *inputs: np.ndarray, expected: bool = False) -> list[np.ndarray]:
        """Run the graph on `inputs` (batched with others); returns this request's outputs.
        `expected`: this request was announced with `expect()`."""
        if expected:
            self._coming -= 1
            self._wakeup.set()
        if len(self._pending) >= self._max_queue:
            raise QueueFull(f"{self.name} queue is full ({self._max_queue} requests waiting)")
        item = _Item(inputs, asyncio.get_running_loop().create_future(), CLIENT.get())
        self._pending.append(item)
        self._on_queue(self.name, len(self._pending))
        self._wakeup.set()
        try:
            return await item.future
        finally:
            if item in self._pending:  # cancelled while waiting: free the slot
                self._pending.remove(item)
                self._on_queue(self.name, len(self._pending))

    def _take_batch(self) -> list[_Item]:
        """Up to max_batch rows (a larger request runs alone), least recently served clients first."""
        live = [it for it in self._pending if not it.future.done()]  # done: cancelled between wakeups
        batch: list[_Item] = []
        rows = 0
        for item in sorted(live, key=lambda it: self._served.get(it.client, -1)):  # stable: in order
            if batch and rows + item.rows > self._max_batch:
                continue
            batch.append(item)
            rows += item.rows
            if rows >= self._max_batch:
                break
        self._pending = collections.deque(it for it in live if it not in batch)
        self._batches += 1
        waiting = {it.client for it in self._pending}
        self._served = {c: n for c, n in self._served.items() if c in waiting}  # idle clients: first again
        self._served.update((it.client, self._batches) for it in batch)
        self._on_queue(self.name, len(self._pending))
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Give announced requests a short window to join this batch.
            deadline = loop.time() + self._max_wait_s
            while (self._coming > 0 and sum(i.rows for i in self._pending) < self._max_batch
                   and loop.time() < deadline):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            inputs = [np.concatenate([it.inputs[k] for it in batch]) if len(batch) > 1 else batch[0].inputs[k]
                      for k in range(len(batch[0].inputs))]
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, inputs)
            except Exception as e:  # a graph failure fails the requests in this batch, not the server
                log.exception("batch on %s failed", self.name)
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            self._on_batch(self.name, sum(it.rows for it in batch), time.perf_counter() - start)
            offset = 0
            for it in batch:
                if not it.future.done():
                    it.future.set_result([out[offset:offset + it.rows] for out in outputs])
                offset += it.rows
