"""The HTTP/JSON bridge (`--http-port`) against a real in-process server on the tiny bundle:
proto-JSON in, JSON lines / server-sent events out, the same bytes as gRPC, the same
validation with field details, the gRPC code -> HTTP status mapping, auth, body limits,
client cancellation and graceful shutdown. Plain `http.client`, so what is tested is what
any HTTP/1.1 client (GDScript, a browser, curl) sees on the wire."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json

import grpc
import pytest
from PIL import Image
from server_util import free_port, running_server

from moe_avatar.server.http_bridge import HttpBridge
from moe_avatar.server.service import AvatarService
from moe_avatar.server.validation import RequestError
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

PROMPT = "pink twin tails, cat ears"
ONE_KEY_EVENTS = {"started", "progress", "reading", "texture", "chunk", "done", "error"}


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, http_port=free_port()) as s:
        yield s


def request(port: int, method: str, path: str, body=None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}  # JSON bodies say so (else 415)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post(server, path: str, body, **headers) -> tuple[int, dict[str, str], bytes]:
    return request(server.server.http_port, "POST", path, body, {"Content-Type": "application/json", **headers})


def lines(data: bytes) -> list[dict]:
    events = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    for event in events:
        assert len(event) == 1 and set(event) <= ONE_KEY_EVENTS, event
    return events


def sse_events(data: bytes) -> list[tuple[str, dict]]:
    """[(event name or "message", JSON data)] from a text/event-stream body."""
    out = []
    for block in data.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def assemble(events: list[dict]) -> list[tuple[dict, bytes]]:
    """(header, bytes) per texture, checking offsets, sizes and SHA-256 like a client must."""
    out, header, buffer = [], None, b""
    for event in events:
        if "texture" in event:
            header, buffer = event["texture"], b""
        elif "chunk" in event:
            chunk = event["chunk"]
            assert chunk.get("textureIndex", 0) == header.get("index", 0)
            assert int(chunk.get("offset", "0")) == len(buffer)  # uint64: a string in proto JSON
            buffer += base64.b64decode(chunk["data"])
            if chunk.get("last"):
                assert len(buffer) == int(header["totalBytes"])
                assert hashlib.sha256(buffer).digest() == base64.b64decode(header["sha256"])
                out.append((header, buffer))
    return out


def grpc_textures(server, req: pb.GenerateRequest) -> list[bytes]:
    with grpc.insecure_channel(server.target) as channel:
        data: dict[int, bytes] = {}
        for message in pb_grpc.AvatarServiceStub(channel).Generate(req, timeout=60):
            if message.HasField("chunk"):
                data[message.chunk.texture_index] = data.get(message.chunk.texture_index, b"") + message.chunk.data
    return [data[i] for i in sorted(data)]


def error_of(status: int, body: bytes, expected_status: int, code: str) -> dict:
    assert status == expected_status, body
    error = json.loads(body)
    assert error["code"] == code, error
    assert error["message"]
    return error


def count(server, method: str, code: str) -> float:
    return server.metrics.registry.get_sample_value(
        "moe_avatar_requests_total", {"method": method, "code": code}) or 0.0


# --------------------------------------------------------------------------------------------
# Happy paths


def test_generate_streams_json_lines(server):
    status, headers, body = post(server, "/v1/generate", {"prompt": PROMPT, "count": 3, "seed": "7"},
                                 **{"X-Request-Id": "bridge-test-1"})
    assert status == 200, body
    assert headers["content-type"].startswith("application/x-ndjson")
    assert headers["x-request-id"] == "bridge-test-1"
    events = lines(body)
    started = events[0]["started"]
    assert started == {**started, "requestId": "bridge-test-1", "model": "tiny", "seed": "7", "textureCount": 3}
    stages = [e["progress"]["stage"] for e in events if "progress" in e]
    assert stages == ["STAGE_QUEUED", "STAGE_ENCODING_TEXT", "STAGE_GENERATING", "STAGE_SCORING",
                      "STAGE_ENCODING_TEXTURES"]
    assert events[-1]["done"]["textureCount"] == 3
    textures = assemble(events)
    assert [h["seed"] for h, _ in textures] == ["7", "8", "9"]
    for header, data in textures:
        assert header["format"] == "TEXTURE_FORMAT_PNG" and header["rowOrder"] == "ROW_ORDER_TOP_DOWN"
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (64, 64) == (header["width"], header["height"])


def test_bridge_and_grpc_give_the_same_bytes(server):
    body = {"prompt": "silver bob", "count": 2, "seed": "41", "psi": 0.5,
            "output": {"format": "TEXTURE_FORMAT_WEBP", "size": 32, "filter": "RESIZE_FILTER_NEAREST"}}
    status, _, data = post(server, "/v1/generate", body)
    assert status == 200, data
    via_http = [d for _, d in assemble(lines(data))]
    via_grpc = grpc_textures(server, pb.GenerateRequest(
        prompt="silver bob", count=2, seed=41, psi=0.5, output=pb.OutputOptions(
            format=pb.TEXTURE_FORMAT_WEBP, size=32, filter=pb.RESIZE_FILTER_NEAREST)))
    assert len(via_http) == 2 and via_http == via_grpc


def test_server_sent_events(server):
    status, headers, body = post(server, "/v1/generate", {"prompt": PROMPT, "count": 2, "seed": "7"},
                                 Accept="text/event-stream")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert {name for name, _ in events} == {"message"}
    textures = assemble([data for _, data in events])
    _, ndjson = post(server, "/v1/generate", {"prompt": PROMPT, "count": 2, "seed": "7"})[::2]
    assert [d for _, d in textures] == [d for _, d in assemble(lines(ndjson))]


def test_interpolate_and_encode_text(server):
    status, _, body = post(server, "/v1/interpolate", {
        "start": {"prompt": "pink twin tails", "seed": "1"}, "end": {"prompt": "silver bob", "seed": "2"},
        "frames": 3})
    assert status == 200, body
    textures = assemble(lines(body))
    assert [h.get("t", 0) for h, _ in textures] == [0, 0.5, 1]
    status, _, body = post(server, "/v1/encode-text", {"prompt": PROMPT})
    assert status == 200, body
    embedding = json.loads(body)["embedding"]
    assert len(embedding) == 32 and abs(sum(x * x for x in embedding) - 1) < 1e-4


def test_models(server):
    port = server.server.http_port
    status, _, body = request(port, "GET", "/v1/models")
    assert status == 200
    listing = json.loads(body)
    assert listing["defaultModel"] == "tiny"
    (model,) = listing["models"]
    assert (model["name"], model["resolution"], model["isDefault"]) == ("tiny", 64, True)
    status, _, body = request(port, "GET", f"/v1/models/tiny/{model['version']}")
    assert status == 200 and json.loads(body)["embedDim"] == 32
    error = error_of(*request(port, "GET", "/v1/models/tiny/9.9")[::2], 404, "NOT_FOUND")
    assert error["details"] == [{"field": "model_version", "description": "not loaded"}]


def test_healthz_and_playground_files(server):
    port = server.server.http_port
    status, _, body = request(port, "GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "SERVING"})
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b'src="/playground/app.js"' in body
    for name in ("app.js", "style.css", "favicon.svg"):
        assert request(port, "GET", f"/playground/{name}")[0] == 200, name


# --------------------------------------------------------------------------------------------
# Errors


BAD = [
    ({"prompt": PROMPT, "count": 17}, "count", "1..16"),
    ({"prompt": "   "}, "prompt", "must not be empty"),
    ({"prompt": PROMPT, "psi": 2.5}, "psi", "0..2"),
    ({"prompt": PROMPT, "seed": str(2**63)}, "seed", "2^63-1"),
    ({"prompt": PROMPT, "output": {"size": 8}}, "output.size", "16..1024"),
    ({"prompt": PROMPT, "output": {"rowOrder": "ROW_ORDER_BOTTOM_UP"}}, "output.row_order", "only to format RGBA8"),
    # Rejected by the proto JSON parser, reported the same way:
    ({"prompt": PROMPT, "colour": "pink"}, "colour", "unknown field (fields here: prompt, count"),
    ({"prompt": PROMPT, "count": "four"}, "count", "four"),
    ({"prompt": PROMPT, "count": -1}, "count", "out of range"),
    ({"prompt": PROMPT, "output": {"format": "JPEG"}}, "output.format", "use one of TEXTURE_FORMAT_UNSPECIFIED"),
    ({"prompt": PROMPT, "output": {"rowOrder": 7, "sizee": 3}}, "output.sizee", "unknown field"),
    ([PROMPT], "body", "must be a JSON object (a moeavatar.v1.GenerateRequest"),
]


@pytest.mark.parametrize("body, field, text", BAD, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD)])
def test_bad_input_is_400_with_field_details(server, body, field, text):
    error = error_of(*post(server, "/v1/generate", body)[::2], 400, "INVALID_ARGUMENT")
    assert field in error["message"] and text in error["message"], error
    assert [d["field"] for d in error["details"]] == [field]
    assert text in error["details"][0]["description"]
    assert error["requestId"]


def test_every_bad_field_is_reported_at_once(server):
    error = error_of(*post(server, "/v1/generate", {"prompt": "", "count": 99, "psi": -1})[::2],
                     400, "INVALID_ARGUMENT")
    assert {d["field"] for d in error["details"]} == {"prompt", "count", "psi"}


def test_invalid_json_and_invalid_utf8(server):
    error = error_of(*post(server, "/v1/generate", b'{"prompt": "cat ears",')[::2], 400, "INVALID_ARGUMENT")
    assert error["details"][0]["field"] == "body" and "not valid JSON" in error["message"]
    assert "line 1 column 23" in error["message"]
    error = error_of(*post(server, "/v1/generate", b'{"prompt": "\xff\xfe"}')[::2], 400, "INVALID_ARGUMENT")
    assert "not valid UTF-8" in error["message"] and "byte 12" in error["message"]


def test_oversized_body_is_413(server):
    limit = server.server.config.max_message_bytes
    body = json.dumps({"prompt": "x" * limit}).encode()
    error = error_of(*post(server, "/v1/generate", body)[::2], 413, "INVALID_ARGUMENT")
    assert f"at most {limit} bytes" in error["message"]
    # The same without a Content-Length (chunked upload): the limit is on what is read.
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=30)
    conn.request("POST", "/v1/generate", body=iter([body[:1000], body[1000:]]), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_unknown_model_is_404(server):
    error = error_of(*post(server, "/v1/generate", {"prompt": PROMPT, "model": "nope"})[::2], 404, "NOT_FOUND")
    assert "'nope' is not loaded" in error["message"]
    assert error["details"] == [{"field": "model", "description": "not loaded"}]


def test_unknown_route_and_wrong_method(server):
    port = server.server.http_port
    error_of(*request(port, "GET", "/v1/nothing")[::2], 404, "NOT_FOUND")
    status, headers, body = request(port, "GET", "/v1/generate")
    error_of(status, body, 405, "UNIMPLEMENTED")
    assert headers["allow"] == "POST"


def test_deadline_header(server):
    before = count(server, "Generate", "DEADLINE_EXCEEDED")
    error = error_of(*post(server, "/v1/generate", {"prompt": PROMPT}, **{"X-Timeout-Seconds": "1e-9"})[::2],
                     504, "DEADLINE_EXCEEDED")
    assert "X-Timeout-Seconds" in error["message"]
    assert count(server, "Generate", "DEADLINE_EXCEEDED") == before + 1  # counted once, by one side
    error = error_of(*post(server, "/v1/generate", {"prompt": PROMPT}, **{"X-Timeout-Seconds": "soon"})[::2],
                     400, "INVALID_ARGUMENT")
    assert error["details"][0]["field"] == "X-Timeout-Seconds"


def test_refusals_are_counted_like_grpc_ones(server):
    before = count(server, "Generate", "INVALID_ARGUMENT")
    post(server, "/v1/generate", b"not json")  # refused by the bridge's parser
    post(server, "/v1/generate", {"prompt": ""})  # refused by the service's validation
    assert count(server, "Generate", "INVALID_ARGUMENT") == before + 2


class _FailsAfterFirstTexture(AvatarService):
    """The real service, except that the model 'goes away' after the first texture: the only
    way to get a deterministic error after the HTTP status has been sent."""

    async def _stream_textures(self, avatars, spec, start):
        async for message in super()._stream_textures(avatars, spec, start):
            yield message
            if message.HasField("chunk") and message.chunk.last:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "model unloaded mid-stream")


def test_error_after_the_stream_started_is_a_final_line(server):
    real = server.server.service
    service = _FailsAfterFirstTexture(real.registry, real.metrics, real._encode_executor)
    bridge = HttpBridge(service, host="127.0.0.1", port=0)
    port = server.call(bridge.start())
    try:
        status, _, body = request(port, "POST", "/v1/generate", {"prompt": PROMPT, "count": 3, "seed": "1"})
        assert status == 200
        events = lines(body)
        assert len(assemble(events)) == 1 and "done" not in events[-1]
        assert events[-1]["error"]["code"] == "UNAVAILABLE"
        assert events[-1]["error"]["message"] == "model unloaded mid-stream"
        status, _, body = request(port, "POST", "/v1/generate", {"prompt": PROMPT}, {"Accept": "text/event-stream"})
        name, data = sse_events(body)[-1]
        assert (name, data["error"]["code"]) == ("error", "UNAVAILABLE")
    finally:
        server.call(bridge.stop(0))


def test_not_serving_is_503(server):
    real = server.server.service
    bridge = HttpBridge(real, host="127.0.0.1", port=0, is_serving=lambda: False)
    port = server.call(bridge.start())
    try:
        status, _, body = request(port, "GET", "/healthz")
        assert (status, json.loads(body)) == (503, {"status": "NOT_SERVING"})
        error_of(*request(port, "GET", "/v1/models")[::2], 503, "UNAVAILABLE")
    finally:
        server.call(bridge.stop(0))


def test_client_hanging_up_cancels_the_work(server):
    """Big raw textures fill the socket buffers; closing the connection must cancel the
    request on the server (counted as CANCELLED) and leave it serving others."""
    before = count(server, "Generate", "CANCELLED")
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=60)
    conn.request("POST", "/v1/generate", json.dumps({
        "prompt": PROMPT, "count": 4, "seed": "3",
        "output": {"format": "TEXTURE_FORMAT_RGBA8", "size": 1024, "filter": "RESIZE_FILTER_NEAREST"}}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert "started" in json.loads(response.readline())
    response.close()
    conn.close()

    async def cancelled() -> None:
        while count(server, "Generate", "CANCELLED") == before:
            await asyncio.sleep(0.05)

    server.call(asyncio.wait_for(cancelled(), 60), timeout=70)
    status, _, body = post(server, "/v1/generate", {"prompt": PROMPT, "seed": "3"})
    assert status == 200 and "done" in lines(body)[-1]


# --------------------------------------------------------------------------------------------
# Auth and shutdown (servers of their own)


def test_bearer_token_auth(model_repo, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# test token\nbridge-secret\n")
    with running_server(model_repo, http_port=free_port(), auth_tokens_file=str(tokens)) as s:
        port = s.server.http_port
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "bridge-secret"}):
            status, response_headers, body = request(port, "GET", "/v1/models", headers=headers)
            error_of(status, body, 401, "UNAUTHENTICATED")
            assert response_headers["www-authenticate"] == "Bearer"
            assert b"bridge-secret" not in body
        error_of(*request(port, "POST", "/v1/generate", {"prompt": PROMPT})[::2], 401, "UNAUTHENTICATED")
        assert request(port, "GET", "/v1/models", headers={"Authorization": "Bearer bridge-secret"})[0] == 200
        status, _, body = request(port, "POST", "/v1/generate", {"prompt": PROMPT, "seed": "1"},
                                  {"Authorization": "Bearer bridge-secret"})
        assert status == 200 and "done" in lines(body)[-1]
        # Probes and the playground page carry no credentials.
        assert request(port, "GET", "/healthz")[0] == 200
        assert request(port, "GET", "/")[0] == 200


def test_graceful_shutdown_lets_streams_finish(model_repo):
    """Stopping: health says NOT_SERVING and new calls get 503 while a stream in flight
    (held open: 16 MiB of raw texture cannot finish until this client reads) completes."""
    with running_server(model_repo, http_port=free_port()) as s:
        port = s.server.http_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/generate", json.dumps({
            "prompt": PROMPT, "count": 4, "seed": "5",
            "output": {"format": "TEXTURE_FORMAT_RGBA8", "size": 1024, "filter": "RESIZE_FILTER_NEAREST"}}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        first = json.loads(response.readline())
        assert "started" in first

        async def begin_stop():
            s.server.stop(60)
            await asyncio.sleep(0)

        s.call(begin_stop())
        status, _, body = request(port, "GET", "/healthz")
        assert (status, json.loads(body)) == (503, {"status": "NOT_SERVING"})
        error_of(*request(port, "POST", "/v1/generate", {"prompt": PROMPT})[::2], 503, "UNAVAILABLE")
        events = [first] + lines(response.read())
        conn.close()
        assert "done" in events[-1] and events[-1]["done"]["textureCount"] == 4
        assert [len(data) for _, data in assemble(events)] == [1024 * 1024 * 4] * 4


def test_tls_on_the_bridge(model_repo, tmp_path):
    """With --tls-cert/--tls-key the bridge serves HTTPS with the gRPC port's certificate."""
    import ssl

    from tls_util import make_certs

    certs = make_certs(tmp_path)
    with running_server(model_repo, http_port=free_port(), tls_cert=certs.server_cert,
                        tls_key=certs.server_key) as s:
        context = ssl.create_default_context(cafile=certs.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", s.server.http_port, timeout=60, context=context)
        conn.request("POST", "/v1/generate", json.dumps({"prompt": PROMPT, "seed": "1"}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and "done" in lines(response.read())[-1]
        conn.close()
        with pytest.raises((http.client.HTTPException, ConnectionError)):  # plain HTTP is not served
            request(s.server.http_port, "GET", "/healthz", timeout=10)
