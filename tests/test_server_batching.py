"""Concurrent requests share one generator run, and each still gets its own avatar."""

from __future__ import annotations

import concurrent.futures

import pytest
from server_util import running_server

from moe_avatar_client.client import AvatarClient


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


def _alone_and_together(server) -> tuple[list[bytes], list[bytes], tuple[float, float, float]]:
    """8 prompts one by one, then the same 8 at once; the generator's (runs, rows, single-row runs) for the latter."""
    prompts = [f"avatar {i}, pink hair" if i % 2 else f"avatar {i}, blue bob" for i in range(8)]
    with AvatarClient(server.target, timeout=30) as client:
        alone = [client.generate(p, seed=i).textures[0].data for i, p in enumerate(prompts)]
        before = batch_sizes(server, "generator")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda ip: client.generate(ip[1], seed=ip[0]).textures[0].data,
                                     enumerate(prompts)))
    runs, rows, single = (a - b for a, b in zip(batch_sizes(server, "generator"), before))
    return alone, together, (runs, rows, single)


def test_concurrent_requests_each_get_their_own_result(server):
    alone, together, (_, rows, _) = _alone_and_together(server)
    assert rows == 8
    assert together == alone  # whatever the batch mates, the output is the same


@pytest.mark.slow  # whether 8 threads' calls meet in one batch depends on the machine's scheduling
def test_concurrent_requests_are_batched(server):
    _, _, (runs, rows, single) = _alone_and_together(server)
    assert rows == 8
    assert runs < 8 and single < runs, f"not batched: {runs} generator runs for 8 requests"
