"""Protocol edges over gRPC: a seed range that would leave 0..2^63-1 is refused up front."""

from __future__ import annotations

import grpc
import pytest
from server_util import running_server

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

MAX_SEED = 2**63 - 1


@pytest.fixture(scope="module")
def stub(model_repo):
    with running_server(model_repo) as server, grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.AvatarServiceStub(channel)


def test_seed_plus_candidates_past_2_63_is_invalid(stub):
    request = pb.GenerateRequest(prompt="pink twin tails", seed=MAX_SEED - 5, count=2, rerank=4)  # last: +7
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(request, timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == (f"seed: seed + count * rerank - 1 must be at most {MAX_SEED} (2^63-1) "
                                     f"(got {MAX_SEED - 5} + 2 * 4 - 1)")


def test_the_last_seed_of_the_range_is_served_and_reproducible(stub):
    """count 2 at seed 2^63-2 reports seeds 2^63-2 and 2^63-1, and each one reproduces alone."""
    def textures(request):
        return [m.texture for m in stub.Generate(request, timeout=30) if m.HasField("texture")]

    pair = textures(pb.GenerateRequest(prompt="silver bob", seed=MAX_SEED - 1, count=2))
    assert [t.seed for t in pair] == [MAX_SEED - 1, MAX_SEED]
    alone = textures(pb.GenerateRequest(prompt="silver bob", seed=MAX_SEED, count=1))
    assert alone[0].sha256 == pair[1].sha256
