"""The HTTP bridge for web builds: CORS (--http-cors-origins), Content-Type enforcement, 64-bit
integers as JSON numbers, and the Edit stream over a WebSocket (GET /v1/edit), against a real
server. The browser side (a page on a second origin) is in test_bridge_browser.py."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from server_util import free_port, running_server
from test_http_bridge import request

from moe_avatar.server.bridge_web import parse_origins
from moe_avatar.server.config import ConfigError, ServerConfig

GAME = "http://game.example:8060"


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, http_port=free_port(), http_cors_origins=GAME) as s:
        yield s


def preflight(port: int, origin: str, method: str = "POST", headers: str = "content-type"):
    return request(port, "OPTIONS", "/v1/generate", headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})


def test_preflight_from_an_allowed_origin(server):
    status, headers, body = preflight(server.server.http_port, GAME, headers="content-type, authorization")
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == GAME
    assert set(headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert {"content-type", "authorization", "x-timeout-seconds"} <= set(headers["access-control-allow-headers"].split(", "))
    assert headers["vary"] == "Origin"


@pytest.mark.parametrize("origin, method, asked, why", [
    ("http://evil.example", "POST", "content-type", "origin 'http://evil.example' is not allowed"),
    (GAME, "DELETE", "content-type", "method 'DELETE' is not allowed"),
    (GAME, "POST", "x-secret", "header 'x-secret' is not allowed"),
])
def test_preflight_refusals_name_the_reason(server, origin, method, asked, why):
    status, headers, body = preflight(server.server.http_port, origin, method, asked)
    assert status == 403 and ("access-control-allow-origin" in headers) == (origin == GAME)
    assert why in json.loads(body)["message"]


def test_actual_responses_carry_cors_headers_for_allowed_origins_only(server):
    port = server.server.http_port
    status, headers, _ = request(port, "POST", "/v1/generate", {"prompt": "cat ears", "seed": "1"}, {"Origin": GAME})
    assert status == 200 and headers["access-control-allow-origin"] == GAME
    assert headers["access-control-expose-headers"] == "X-Request-Id"
    status, headers, _ = request(port, "GET", "/v1/models", headers={"Origin": "http://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = request(port, "POST", "/v1/generate", {"prompt": ""}, {"Origin": GAME})
    assert status == 400 and headers["access-control-allow-origin"] == GAME  # errors are readable too


def test_no_origin_is_allowed_by_default(model_repo):
    assert ServerConfig().http_cors_origins == ""
    with running_server(model_repo, http_port=free_port()) as s:
        assert preflight(s.server.http_port, GAME)[0] == 403
    assert parse_origins("*") == frozenset({"*"})
    with pytest.raises(ConfigError, match="--http-cors-origins"):
        ServerConfig(models=model_repo, http_cors_origins="game.example/path").validate()


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_endpoints_need_a_json_content_type(server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/v1/generate", "/v1/interpolate", "/v1/encode-text"):
        status, _, body = request(server.server.http_port, "POST", path, b'{"prompt": "cat ears"}', headers)
        error = json.loads(body)
        assert status == 415, path
        assert error["details"] == [{"field": "Content-Type",
                                     "description": f"must be application/json (got {content_type or 'none'!r})"}]
    status, _, _ = request(server.server.http_port, "POST", "/v1/encode-text", b'{"prompt": "cat ears"}',
                           {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


def test_a_64_bit_integer_above_2_53_as_a_json_number_is_refused(server):
    port = server.server.http_port
    status, _, body = request(port, "POST", "/v1/generate", {"prompt": "cat ears", "seed": 2**53 + 1})
    assert status == 400 and json.loads(body)["details"][0]["field"] == "seed"
    assert "must be a JSON string" in json.loads(body)["details"][0]["description"]
    status, _, body = request(port, "POST", "/v1/interpolate", {"start": {"prompt": "a", "seed": 2**60},
                                                                "end": {"prompt": "b", "seed": "1"}})
    assert status == 400 and json.loads(body)["details"][0]["field"] == "start.seed"
    assert request(port, "POST", "/v1/generate", {"prompt": "cat ears", "seed": 2**53})[0] == 200
    assert request(port, "POST", "/v1/generate", {"prompt": "cat ears", "seed": str(2**62)})[0] == 200


# --- the WebSocket Edit ---------------------------------------------------------------------------


def event_of(frame: dict) -> str:
    if "response" in frame:
        return "response." + next(iter(frame["response"]))
    return next(k for k in frame if k != "sequence")


async def edit_session(port: int, frames: list, *, until: str = "", headers: dict | None = None,
                       query: str = "") -> list[dict]:
    """Sends the frames (a str is sent as is, a dict as JSON; "WAIT" waits for the first answer) and
    collects answers until `until` (e.g. "5:response.done") arrives, then closes."""
    received: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"http://127.0.0.1:{port}/v1/edit{query}", headers=headers or {}) as ws:
        for frame in frames:
            if frame == "WAIT":
                received.append(json.loads((await ws.receive(timeout=30)).data))
            else:
                await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        while not any(f"{int(f.get('sequence', 0))}:{event_of(f)}" == until for f in received):
            message = await ws.receive(timeout=60)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            received.append(json.loads(message.data))
    return received


def events(received: list[dict], sequence: int) -> list[str]:
    return [event_of(f) for f in received if int(f.get("sequence", 0)) == sequence]


HEAVY = {"prompt": "pink twin tails", "seed": "1", "count": 16,
         "output": {"size": 1024, "format": "TEXTURE_FORMAT_PNG"}}


def test_websocket_edit_newest_wins_and_superseded_requests_end(server):
    frames = [{"sequence": "1", "request": HEAVY}, "WAIT", {"sequence": "2", "request": HEAVY},
              {"sequence": "3", "request": {"prompt": "silver bob", "seed": "5"}}]
    received = asyncio.run(edit_session(server.server.http_port, frames, until="3:response.done"))
    for sequence, by in ((1, "2"), (2, "3")):
        assert events(received, sequence)[-1] == "superseded", events(received, sequence)
        assert "response.done" not in events(received, sequence)
        (last,) = [f for f in received if f.get("sequence") == str(sequence) and "superseded" in f]
        assert last["superseded"] == {"bySequence": by}
    textures = [f["response"]["texture"] for f in received if f.get("sequence") == "3" and "texture" in f.get("response", {})]
    assert [t["seed"] for t in textures] == ["5"]  # uint64 in proto JSON: a string


def test_websocket_bad_frames_are_answered_in_band_and_the_session_goes_on(server):
    frames = ["not json", {"sequence": "4", "request": {"prompt": "", "count": 99}},
              {"sequence": "5", "request": {"prompt": "cat ears", "seed": "2"}, "extra": 1},
              {"sequence": "4", "request": {"prompt": "older", "seed": "2"}},
              {"sequence": "6", "request": {"prompt": "cat ears", "seed": "2"}}]
    received = asyncio.run(edit_session(server.server.http_port, frames, until="6:response.done"))
    # Frames refused by the bridge (bad JSON, unknown field) are answered at once, the service's
    # answers when it gets to them: compare without order.
    errors = sorted((f.get("sequence", "0"), f["error"]["code"], f["error"]["message"]) for f in received if "error" in f)
    assert all(code == 3 for _, code, _ in errors)
    assert errors[0][0] == "0" and "not valid JSON" in errors[0][2]
    assert errors[-1][0] == "5" and "extra" in errors[-1][2]
    refusal = "sequence: must be greater than the previous request's sequence 4 (got 4)"
    assert refusal in {e[2] for e in errors if e[0] == "4"}
    # Request 4 itself ends once: with its validation error, or superseded by 6 if 6 came first.
    own = [f for f in received if f.get("sequence") == "4" and f.get("error", {}).get("message") != refusal]
    assert len(own) == 1 and ("superseded" in own[0] or "request.prompt: must not be empty" in own[0]["error"]["message"])
    assert events(received, 6)[-1] == "response.done"
    # The server is healthy afterwards: a plain call works.
    assert request(server.server.http_port, "POST", "/v1/encode-text", {"prompt": "cat ears"})[0] == 200


def test_websocket_origin_check_and_token_in_the_query(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("ws-secret\n")
    with running_server(model_repo, http_port=free_port(), http_cors_origins=GAME,
                        auth_tokens_file=str(tokens)) as s:
        port = s.server.http_port
        frames = [{"sequence": "1", "request": {"prompt": "cat ears", "seed": "3"}}]
        received = asyncio.run(edit_session(port, frames, until="1:response.done", headers={"Origin": GAME},
                                            query="?access_token=ws-secret"))
        assert events(received, 1)[-1] == "response.done"
        for headers, query, status in (({"Origin": "http://evil.example"}, "?access_token=ws-secret", 403),
                                       ({"Origin": GAME}, "", 401), ({"Origin": GAME}, "?access_token=nope", 401)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as error:
                asyncio.run(edit_session(port, frames, headers=headers, query=query))
            assert error.value.status == status
        assert request(port, "GET", "/v1/edit", headers={"Authorization": "Bearer ws-secret"})[0] == 400


def test_stopping_the_server_closes_open_edit_websockets(model_repo):
    """An open Edit WebSocket does not hold the server's stop: the client is told the server
    is going away (close code 1001) and the stop completes."""
    import threading

    result: dict = {}
    opened = threading.Event()

    async def client(port: int) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/v1/edit") as ws:
            await ws.send_str(json.dumps({"sequence": "1", "request": {"prompt": "cat ears", "seed": "1"}}))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and "done" in json.loads(msg.data).get("response", {}):
                    opened.set()  # the session is idle and open: only the server can end it now
            result["close_code"] = ws.close_code

    port = free_port()
    with running_server(model_repo, http_port=port):
        thread = threading.Thread(target=lambda: asyncio.run(client(port)), daemon=True)
        thread.start()
        assert opened.wait(60)
    thread.join(60)
    assert result.get("close_code") == aiohttp.WSCloseCode.GOING_AWAY
