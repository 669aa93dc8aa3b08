"""MicroBatcher on its own: merging, splitting, max batch, queue limit, cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest

from moe_avatar.server.batcher import MicroBatcher, QueueFull


def run_batches(coro_fn, **kw):
    async def main():
        runs: list[int] = []

        def double(inputs):
            runs.append(len(inputs[0]))
            return [inputs[0] * 2]

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher("test", double, pool, **kw)
            batcher.start()
            try:
                return await coro_fn(batcher), runs
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_merges_splits_and_respects_max_batch():
    async def go(b):
        return await asyncio.gather(*(b.submit(np.full((i % 3 + 1, 2), i)) for i in range(10)))

    results, runs = run_batches(go, max_batch=4, max_wait_s=0.05, max_queue=100)
    for i, (out,) in enumerate(results):
        assert out.shape == (i % 3 + 1, 2) and (out == 2 * i).all()
    assert sum(runs) == sum(i % 3 + 1 for i in range(10))
    assert max(runs) <= 4 and len(runs) < 10


def test_queue_full_and_cancelled_requests_free_their_slot():
    async def go(b):
        b.expect()  # an announced request that never comes keeps `first` waiting
        first = asyncio.ensure_future(b.submit(np.ones((1, 1))))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(np.ones((1, 1)))
        first.cancel()
        await asyncio.sleep(0)
        assert b.queue_depth == 0
        b.unexpect()
        (out,) = await b.submit(np.full((1, 1), 3.0))
        return out

    out, runs = run_batches(go, max_batch=8, max_wait_s=0.2, max_queue=1)
    assert out[0, 0] == 6.0 and runs == [1]


def test_waits_only_for_announced_requests():
    async def go(b):
        # Nobody announced: the lone request runs at once. With max_wait 1,000 s a batcher that
        # waited anyway would hang here; the 60 s guard only turns that hang into a failure.
        await asyncio.wait_for(b.submit(np.ones((1, 1))), timeout=60)
        b.expect()
        b.expect()
        first = asyncio.ensure_future(b.submit(np.ones((1, 1)), expected=True))
        await asyncio.sleep(0.05)  # the batch is waiting for the second announced request
        assert not first.done()
        second = asyncio.ensure_future(b.submit(np.ones((1, 1)), expected=True))
        await asyncio.wait_for(asyncio.gather(first, second), timeout=60)

    _, runs = run_batches(go, max_batch=8, max_wait_s=1000.0, max_queue=10)
    assert runs == [1, 2]
