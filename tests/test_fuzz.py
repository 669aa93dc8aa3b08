"""Hostile input against a real server (hypothesis): every field of every request, and
raw bytes sent as a request. Only OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, NOT_FOUND or
UNAUTHENTICATED may come back (never UNKNOWN / INTERNAL), every OK stream is complete
with valid checksums, and a normal request still works afterwards.

The fast suite runs a few hundred derandomized examples; the `slow` variants run
>= 10,000 random ones (tests/RELIABILITY.md)."""

from __future__ import annotations

import string
import time

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from server_util import running_server

from moe_avatar_client.client import AvatarClient, StreamAssembler
from moeavatar.v1 import avatar_pb2 as pb

TOKEN = "fuzz-token-3c1d"
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED}
SERVICE = "/moeavatar.v1.AvatarService/"
CHEAP_PIXELS = 16 * 256 * 256  # streams costing more are cancelled after their first texture


def fuzz_settings(examples: int, fast: bool):
    return settings(max_examples=examples, deadline=None, derandomize=fast, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


FAST = lambda n: fuzz_settings(n, fast=True)  # noqa: E731
SLOW = lambda n: fuzz_settings(n, fast=False)  # noqa: E731


@pytest.fixture(scope="module")
def server(model_repo, tmp_path_factory):
    tokens = tmp_path_factory.mktemp("fuzz") / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    with running_server(model_repo, auth_tokens_file=str(tokens)) as s:
        yield s
        _assert_still_healthy(s)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def _assert_still_healthy(server) -> None:
    """After any amount of garbage: a normal request works, nothing failed internally,
    nothing is left in flight or queued."""
    with AvatarClient(server.target, token=TOKEN) as client:
        result = client.generate("pink twin tails, cat ears", seed=7, count=2)
        assert len(result.textures) == 2
    deadline = time.monotonic() + 10
    while server.server.guard.in_flight or _queued(server):
        assert time.monotonic() < deadline, "calls or queue slots leaked"
        time.sleep(0.05)
    codes = {s.labels["code"] for m in server.metrics.requests.collect() for s in m.samples if s.value}
    assert not codes & {"UNKNOWN", "INTERNAL"}, codes


def _queued(server) -> float:
    return sum(s.value for m in server.metrics.queue_depth.collect() for s in m.samples)


# --- strategies ----------------------------------------------------------------------

METADATA_CHARS = string.ascii_letters + string.digits + string.punctuation + " "


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value 7 times in 8: with a dozen fields a third of the requests get past
    validation and run the model, and every field is still hostile often."""
    return st.integers(0, 7).flatmap(lambda i: valid if i else hostile)


u32 = st.one_of(st.integers(0, 20), st.sampled_from([63, 64, 65, 1023, 1024, 1025, 2**31 - 1, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
u64 = st.one_of(st.integers(0, 1000), st.sampled_from([2**63 - 65, 2**63 - 1, 2**63, 2**64 - 1]),
                st.integers(0, 2**64 - 1))
enum = st.one_of(st.integers(0, 4), st.integers(-2**31, 2**31 - 1))
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)  # controls, CJK, emoji, no surrogates
prompt = mostly(
    st.text(alphabet=string.ascii_letters + " ,", min_size=1, max_size=30).filter(str.strip),
    st.one_of(
        any_text,
        st.sampled_from(["pink twin tails", "粉色双马尾，猫耳", "", "   ", "\x00", "\t\r\n\x0b", "&amp;lt;b&gt;",
                         "\u202e\u200b\ufeff", "😺" * 750, "😺" * 751, "猫" * 1000, "a\x00b", "\x7f" * 10]),
        st.builds(lambda c, n: c * n, st.characters(codec="utf-8"),
                  st.sampled_from([999, 1000, 1001, 2999, 3001, 70_000, 1 << 20])),  # up to 1 MiB+ prompts
    ))
count = mostly(st.integers(0, 4), u32)
rerank = mostly(st.integers(0, 2), u32)
frames = mostly(st.integers(0, 10), u32)
seed = mostly(st.one_of(st.none(), st.integers(0, 2**31)), u64)
psi = mostly(st.one_of(st.none(), st.floats(0, 2, width=32)),
             st.one_of(st.floats(width=32), st.sampled_from([-0.0, 2.0000002, float("nan"), float("inf")])))
model = mostly(st.sampled_from(["", "tiny"]),
               st.one_of(st.sampled_from(["../tiny", "tiny\x00", "/etc/passwd", "m" * 129]), any_text))
version = mostly(st.sampled_from(["", "0.0.1"]), st.one_of(st.sampled_from(["9.9", "../0.0.1", "v" * 129]), any_text))
authorization = mostly(st.just(f"Bearer {TOKEN}"),
                       st.one_of(st.none(), st.sampled_from([f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"]),
                                 st.text(alphabet=METADATA_CHARS, max_size=60)))
request_id = st.one_of(st.none(), st.text(alphabet=METADATA_CHARS, max_size=100))


@st.composite
def metadata(draw) -> tuple[tuple[str, str], ...]:
    pairs = []
    if (value := draw(authorization)) is not None:
        pairs.append(("authorization", value))
    if (rid := draw(request_id)) is not None:
        pairs.append(("x-request-id", rid))
    return tuple(pairs)


def output_options() -> st.SearchStrategy[pb.OutputOptions]:
    return st.builds(pb.OutputOptions, format=mostly(st.integers(0, 3), enum),
                     size=mostly(st.sampled_from([0, 16, 17, 64, 100]), u32), filter=mostly(st.integers(0, 4), enum),
                     row_order=mostly(st.sampled_from([0, 1]), enum))


@st.composite
def generate_requests(draw) -> pb.GenerateRequest:
    request = pb.GenerateRequest(prompt=draw(prompt), count=draw(count), rerank=draw(rerank),
                                 output=draw(output_options()), model=draw(model), model_version=draw(version))
    if (value := draw(seed)) is not None:
        request.seed = value
    if (value := draw(psi)) is not None:
        request.psi = value
    return request


@st.composite
def interpolate_requests(draw) -> pb.InterpolateRequest:
    request = pb.InterpolateRequest(
        start=pb.Endpoint(prompt=draw(prompt), seed=draw(seed) or 0),
        end=pb.Endpoint(prompt=draw(prompt), seed=draw(seed) or 0),
        frames=draw(frames), output=draw(output_options()), model=draw(model), model_version=draw(version))
    if (value := draw(psi)) is not None:
        request.psi = value
    return request


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def raw_bytes(draw, valid: st.SearchStrategy) -> bytes:
    """Random bytes, a valid request with bytes flipped / inserted / cut, or a valid
    request plus a string field holding invalid UTF-8 (e.g. an encoded lone surrogate)."""
    kind = draw(st.sampled_from(["random", "mutated", "bad_utf8"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    data = bytearray(draw(valid).SerializeToString())
    if kind == "bad_utf8":
        junk = draw(st.sampled_from([b"\xed\xa0\x80", b"\xff", b"\xc0\xaf", b"a\x80b", b"\xf4\x90\x80\x80"]))
        field = draw(st.sampled_from([1, 7, 8]))  # prompt / model / model_version (or start for Interpolate)
        return bytes(data) + _varint(field << 3 | 2) + _varint(len(junk)) + junk
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        if op == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[position:]
    return bytes(data)


# --- checks --------------------------------------------------------------------------

def _good(meta) -> bool:
    return dict(meta).get("authorization") == f"Bearer {TOKEN}"


def _check_code(code: grpc.StatusCode, details: str, meta) -> None:
    event(code.name)  # pytest --hypothesis-show-statistics shows how often each code came back
    assert code in ALLOWED, f"{code.name}: {details}"
    if _good(meta):
        assert code != grpc.StatusCode.UNAUTHENTICATED, details
    else:
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED), f"{code.name}: {details}"


def _cheap(request) -> bool:
    """Whether reading the whole stream is cheap enough for the fuzz loop."""
    if isinstance(request, pb.InterpolateRequest):
        n = request.frames or 8
    else:
        n = (request.count or 1) * max(request.rerank, 1)
    return n * max(request.output.size, 64) ** 2 <= CHEAP_PIXELS


def _read_stream(call, meta, cheap: bool, parse=lambda m: m) -> None:
    """Read a Generate-like stream: OK streams must be complete and checksummed (or,
    when expensive, correct up to their first texture, then cancelled)."""
    assembler = StreamAssembler()
    try:
        for raw in call:
            assembler.feed(parse(raw))
            if not cheap and assembler.result.textures:
                call.cancel()
                return
    except grpc.RpcError as e:
        _check_code(e.code(), e.details(), meta)
        return
    _check_code(grpc.StatusCode.OK, "", meta)
    assert assembler.done and len(assembler.result.textures) == assembler.expected


def _unary(fn, request, meta) -> None:
    try:
        fn(request, timeout=30, metadata=meta)
    except grpc.RpcError as e:
        _check_code(e.code(), e.details(), meta)
        return
    _check_code(grpc.StatusCode.OK, "", meta)


def check_generate(channel, request: pb.GenerateRequest, meta) -> None:
    call = channel.unary_stream(SERVICE + "Generate", pb.GenerateRequest.SerializeToString,
                                pb.GenerateResponse.FromString)(request, timeout=60, metadata=meta)
    _read_stream(call, meta, _cheap(request))


def check_interpolate(channel, request: pb.InterpolateRequest, meta) -> None:
    call = channel.unary_stream(SERVICE + "Interpolate", pb.InterpolateRequest.SerializeToString,
                                pb.GenerateResponse.FromString)(request, timeout=60, metadata=meta)
    _read_stream(call, meta, _cheap(request))


def check_edit(channel, edits: list[pb.EditRequest], meta) -> None:
    """In-band EditErrors obey the same rule as status codes."""
    call = channel.stream_stream(SERVICE + "Edit", pb.EditRequest.SerializeToString,
                                 pb.EditResponse.FromString)(iter(edits), timeout=60, metadata=meta)
    try:
        for response in call:
            if response.HasField("error"):
                _check_code(grpc.StatusCode(_code_by_value(response.error.code)), response.error.message, meta)
    except grpc.RpcError as e:
        _check_code(e.code(), e.details(), meta)
        return
    _check_code(grpc.StatusCode.OK, "", meta)


def _code_by_value(value: int):
    return next(c for c in grpc.StatusCode if c.value[0] == value).value


def check_raw(channel, method: str, data: bytes, meta) -> None:
    if method in ("Generate", "Interpolate"):
        call = channel.unary_stream(SERVICE + method)(data, timeout=60, metadata=meta)  # bytes in, bytes out
        _read_stream(call, meta, cheap=False, parse=pb.GenerateResponse.FromString)
    elif method == "Edit":
        try:
            list(channel.stream_stream(SERVICE + method)(iter([data, data]), timeout=60, metadata=meta))
        except grpc.RpcError as e:
            _check_code(e.code(), e.details(), meta)
    else:
        _unary(channel.unary_unary(SERVICE + method), data, meta)


edit_requests = st.lists(st.builds(pb.EditRequest, sequence=u64, request=generate_requests()), min_size=1,
                         max_size=3)
cheap_edit_requests = edit_requests.map(lambda edits: [e for e in edits if _cheap(e.request)] or edits[:1])
RAW_METHODS = {"Generate": generate_requests(), "Interpolate": interpolate_requests(),
               "EncodeText": st.builds(pb.EncodeTextRequest, prompt=prompt, model=model, model_version=version),
               "GetModelInfo": st.builds(pb.GetModelInfoRequest, model=model, model_version=version),
               "ListModels": st.just(pb.ListModelsRequest()),
               "Edit": edit_requests.map(lambda edits: edits[0])}


@st.composite
def raw_calls(draw) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(RAW_METHODS)))
    return method, draw(raw_bytes(RAW_METHODS[method]))


def check_unary_fields(channel, kind: str, request, meta) -> None:
    cls = {"EncodeText": (pb.EncodeTextRequest, pb.EncodeTextResponse),
           "GetModelInfo": (pb.GetModelInfoRequest, pb.ModelInfo)}[kind]
    _unary(channel.unary_unary(SERVICE + kind, cls[0].SerializeToString, cls[1].FromString), request, meta)


unary_requests = st.one_of(
    st.tuples(st.just("EncodeText"),
              st.builds(pb.EncodeTextRequest, prompt=prompt, model=model, model_version=version)),
    st.tuples(st.just("GetModelInfo"), st.builds(pb.GetModelInfoRequest, model=model, model_version=version)))


# --- fast: a few hundred derandomized examples --------------------------------------------

@FAST(120)
@given(request=generate_requests(), meta=metadata())
def test_generate_fields(channel, request, meta):
    check_generate(channel, request, meta)


@FAST(40)
@given(request=interpolate_requests(), meta=metadata())
def test_interpolate_fields(channel, request, meta):
    check_interpolate(channel, request, meta)


@FAST(30)
@given(edits=cheap_edit_requests, meta=metadata())
def test_edit_fields(channel, edits, meta):
    check_edit(channel, edits, meta)


@FAST(60)
@given(call=unary_requests, meta=metadata())
def test_unary_fields(channel, call, meta):
    check_unary_fields(channel, *call, meta)


@FAST(150)
@given(call=raw_calls(), meta=metadata())
def test_raw_bytes(channel, call, meta):
    check_raw(channel, *call, meta)


def test_lone_surrogates_cannot_be_sent_and_their_bytes_are_refused(channel):
    with pytest.raises(UnicodeEncodeError):
        pb.GenerateRequest(prompt="a\ud800b").SerializeToString()
    meta = (("authorization", f"Bearer {TOKEN}"),)
    data = pb.GenerateRequest(seed=1).SerializeToString() + b"\x0a\x05a\xed\xa0\x80b"  # prompt = "a" U+D800 "b"
    with pytest.raises(grpc.RpcError) as info:
        list(channel.unary_stream(SERVICE + "Generate")(data, timeout=10, metadata=meta))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid moeavatar.v1.GenerateRequest" in info.value.details()


def test_server_is_healthy_after_the_fuzzing(server):
    _assert_still_healthy(server)


# --- slow: >= 10,000 random examples in all -------------------------------------------------

@pytest.mark.slow
@SLOW(4000)
@given(request=generate_requests(), meta=metadata())
def test_generate_fields_long(channel, request, meta):
    check_generate(channel, request, meta)


@pytest.mark.slow
@SLOW(1000)
@given(request=interpolate_requests(), meta=metadata())
def test_interpolate_fields_long(channel, request, meta):
    check_interpolate(channel, request, meta)


@pytest.mark.slow
@SLOW(500)
@given(edits=cheap_edit_requests, meta=metadata())
def test_edit_fields_long(channel, edits, meta):
    check_edit(channel, edits, meta)


@pytest.mark.slow
@SLOW(1500)
@given(call=unary_requests, meta=metadata())
def test_unary_fields_long(channel, call, meta):
    check_unary_fields(channel, *call, meta)


@pytest.mark.slow
@SLOW(4000)
@given(call=raw_calls(), meta=metadata())
def test_raw_bytes_long(channel, call, meta):
    check_raw(channel, *call, meta)


@pytest.mark.slow
def test_server_is_healthy_after_the_long_fuzzing(server):
    _assert_still_healthy(server)
