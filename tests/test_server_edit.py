"""Edit: the server answers the newest request and cancels stale ones."""

from __future__ import annotations

import queue

import grpc
import pytest

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc
from server_util import running_server

STOP = object()


@pytest.fixture(scope="module")
def stub(model_repo):
    with running_server(model_repo) as server:
        channel = grpc.insecure_channel(server.target)
        yield pb_grpc.AvatarServiceStub(channel)
        channel.close()


def requests_from(q: queue.Queue):
    while (item := q.get()) is not STOP:
        yield item


def test_edit_answers_the_newest_and_cancels_stale(stub):
    outgoing: queue.Queue = queue.Queue()
    responses = stub.Edit(requests_from(outgoing), timeout=60)
    # A heavy request (16 textures of 1024 px PNG) that the user immediately replaces.
    heavy = pb.GenerateRequest(prompt="pink twin tails", seed=1, count=16,
                               output=pb.OutputOptions(size=1024, format=pb.TEXTURE_FORMAT_PNG))
    outgoing.put(pb.EditRequest(sequence=1, request=heavy))
    received: list[pb.EditResponse] = []
    for r in responses:
        received.append(r)
        if r.WhichOneof("event") == "response" and r.response.WhichOneof("event") == "started":
            break
    outgoing.put(pb.EditRequest(sequence=2, request=pb.GenerateRequest(prompt="silver bob", seed=5)))
    outgoing.put(STOP)
    received.extend(responses)
    done = {r.sequence for r in received if r.WhichOneof("event") == "response"
            and r.response.WhichOneof("event") == "done"}
    assert done == {2}, "the stale request must be cancelled, the newest answered"
    textures = [r.response.texture for r in received if r.sequence == 2 and r.response.WhichOneof("event") == "texture"]
    assert [t.seed for t in textures] == [5]
    # after seq 2 arrived, nothing of seq 1 is sent any more
    first_new = next(i for i, r in enumerate(received) if r.sequence == 2)
    assert all(r.sequence == 2 for r in received[first_new:])


def test_edit_bad_request_is_answered_in_band(stub):
    edits = [pb.EditRequest(sequence=1, request=pb.GenerateRequest(prompt="", count=99)),
             pb.EditRequest(sequence=2, request=pb.GenerateRequest(prompt="ok now", seed=3))]
    outgoing: queue.Queue = queue.Queue()
    responses = stub.Edit(requests_from(outgoing), timeout=30)
    outgoing.put(edits[0])
    first = next(responses)
    assert first.sequence == 1 and first.WhichOneof("event") == "error"
    assert first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "request.prompt" in first.error.message and "request.count: must be 1..16" in first.error.message
    outgoing.put(edits[1])
    outgoing.put(STOP)
    rest = list(responses)
    assert rest[-1].sequence == 2 and rest[-1].response.WhichOneof("event") == "done"
