"""Concurrent requests share one generator run, and each still gets its own avatar."""

from __future__ import annotations

import concurrent.futures

import pytest

from moe_avatar_client.client import AvatarClient
from server_util import running_server


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, max_wait_ms=40.0, max_batch=4) as s:
        yield s


def batch_sizes(server, graph: str) -> tuple[float, float, float]:
    """(runs, rows, runs with exactly 1 row) observed for one graph."""
    runs = rows = single = 0.0
    for metric in server.metrics.batch_rows.collect():
        for s in metric.samples:
            if not s.labels["graph"].endswith(graph):
                continue
            if s.name.endswith("_count"):
                runs += s.value
            elif s.name.endswith("_sum"):
                rows += s.value
            elif s.name.endswith("_bucket") and s.labels["le"] == "1.0":
                single += s.value
    return runs, rows, single


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(server):
    prompts = [f"avatar {i}, pink hair" if i % 2 else f"avatar {i}, blue bob" for i in range(8)]
    with AvatarClient(server.target, timeout=30) as client:
        alone = [client.generate(p, seed=i).textures[0].data for i, p in enumerate(prompts)]
        before = batch_sizes(server, "generator")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda ip: client.generate(ip[1], seed=ip[0]).textures[0].data,
                                     enumerate(prompts)))
    runs, rows, single = (a - b for a, b in zip(batch_sizes(server, "generator"), before))
    assert rows == 8
    assert runs < 8 and single < runs, f"not batched: {runs} generator runs for 8 requests"
    assert together == alone  # batching changes nothing in the output
