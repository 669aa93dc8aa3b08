"""Edit: the server answers the newest request and cancels stale ones."""

from __future__ import annotations

import queue

import grpc
import pytest
from server_util import running_server

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

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


def _events(received: list[pb.EditResponse], sequence: int) -> list[str]:
    """The event names one request got: response.<event>, error or superseded."""
    return [r.WhichOneof("event") if r.WhichOneof("event") != "response" else "response." + r.response.WhichOneof("event")
            for r in received if r.sequence == sequence]


TERMINAL = {"response.done", "error", "superseded"}


def test_every_superseded_request_gets_one_terminal_event(stub):
    """Three requests in a burst: the first two are replaced while working, and each ends with
    exactly one terminal event (superseded naming its replacement); the newest is answered."""
    heavy = pb.GenerateRequest(prompt="pink twin tails", seed=1, count=16,
                               output=pb.OutputOptions(size=1024, format=pb.TEXTURE_FORMAT_PNG))
    outgoing: queue.Queue = queue.Queue()
    responses = stub.Edit(requests_from(outgoing), timeout=60)
    outgoing.put(pb.EditRequest(sequence=10, request=heavy))
    received = [next(responses)]  # seq 10 is running
    outgoing.put(pb.EditRequest(sequence=11, request=heavy))
    outgoing.put(pb.EditRequest(sequence=12, request=pb.GenerateRequest(prompt="silver bob", seed=5)))
    outgoing.put(STOP)
    received.extend(responses)
    for sequence, by in ((10, 11), (11, 12)):
        events = _events(received, sequence)
        assert [e for e in events if e in TERMINAL] == ["superseded"], (sequence, events)
        assert events[-1] == "superseded"
        (last,) = [r for r in received if r.sequence == sequence and r.WhichOneof("event") == "superseded"]
        assert last.superseded.by_sequence == by
    assert [e for e in _events(received, 12) if e in TERMINAL] == ["response.done"]


def test_a_finished_request_is_not_superseded(stub):
    outgoing: queue.Queue = queue.Queue()
    responses = stub.Edit(requests_from(outgoing), timeout=30)
    outgoing.put(pb.EditRequest(sequence=1, request=pb.GenerateRequest(prompt="cat ears", seed=2)))
    received = []
    for r in responses:
        received.append(r)
        if r.response.WhichOneof("event") == "done":
            break
    outgoing.put(pb.EditRequest(sequence=2, request=pb.GenerateRequest(prompt="dog ears", seed=2)))
    outgoing.put(STOP)
    received.extend(responses)
    assert _events(received, 1)[-1] == "response.done" and "superseded" not in _events(received, 1)
    assert _events(received, 2)[-1] == "response.done"


def test_a_sequence_that_does_not_increase_is_refused_in_band(stub):
    outgoing: queue.Queue = queue.Queue()
    responses = stub.Edit(requests_from(outgoing), timeout=30)
    outgoing.put(pb.EditRequest(sequence=5, request=pb.GenerateRequest(prompt="pink twin tails", seed=1, count=4)))
    received = [next(responses)]
    outgoing.put(pb.EditRequest(sequence=5, request=pb.GenerateRequest(prompt="again", seed=1)))
    outgoing.put(pb.EditRequest(sequence=3, request=pb.GenerateRequest(prompt="older", seed=1)))
    outgoing.put(STOP)
    received.extend(responses)
    refusals = [r for r in received if r.WhichOneof("event") == "error"]
    assert [(r.sequence, r.error.code) for r in refusals] == [(5, 3), (3, 3)]
    assert refusals[1].error.message == ("sequence: must be greater than the previous request's sequence 5 "
                                         "(got 3)")
    # The request in progress was not replaced: it finishes with its four textures.
    done = [r for r in received if r.response.WhichOneof("event") == "done"]
    assert [(r.sequence, r.response.done.texture_count) for r in done] == [(5, 4)]
    assert "superseded" not in _events(received, 5)
