"""A web build's view of the bridge, in headless Chromium: a page served from a second origin
makes a cross-origin fetch (with a CORS preflight, since it sends JSON) and runs an Edit session
over the WebSocket; a page from an origin not in --http-cors-origins is refused by the browser.

Skipped with the reason when chromium, chromedriver or selenium is missing (see
test_playground_browser.py, whose browser fixture this reuses)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path

from server_util import free_port, running_server
from test_playground_browser import browser  # noqa: F401  (the fixture)

PAGE = """<!doctype html><meta charset="utf-8"><title>game</title><script>
const bridge = "BRIDGE";
async function generate() {
  const response = await fetch(bridge + "/v1/generate", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({prompt: "cat ears", seed: "7"})});
  const lines = (await response.text()).trim().split("\\n").map(l => JSON.parse(l));
  return {status: response.status, requestId: response.headers.get("X-Request-Id"),
          events: lines.map(l => Object.keys(l)[0]), seed: lines.find(l => l.texture).texture.seed};
}
function edit() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(bridge.replace("http", "ws") + "/v1/edit");
    const frames = [];
    ws.onopen = () => {
      ws.send(JSON.stringify({sequence: "1", request: {prompt: "pink twin tails", seed: "1", count: 16,
                                                      output: {size: 1024}}}));
      ws.send(JSON.stringify({sequence: "2", request: {prompt: "silver bob", seed: "5"}}));
    };
    ws.onmessage = (m) => {
      const frame = JSON.parse(m.data);
      frames.push([frame.sequence || "0", Object.keys(frame).find(k => k !== "sequence"),
                   frame.response ? Object.keys(frame.response)[0] : ""]);
      if (frame.sequence === "2" && frame.response && frame.response.done) { ws.close(); resolve(frames); }
    };
    ws.onerror = () => reject("websocket error");
  });
}
</script>"""


@contextlib.contextmanager
def static_site(folder: Path):
    """A plain HTTP server for `folder` on its own loopback port: a second origin."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def test_a_page_on_another_origin_uses_the_bridge(browser, model_repo, tmp_path):  # noqa: F811
    allowed_dir, other_dir = tmp_path / "game", tmp_path / "other"
    allowed_dir.mkdir()
    other_dir.mkdir()
    with static_site(allowed_dir) as game, static_site(other_dir) as other, \
            running_server(model_repo, http_port=free_port(), http_cors_origins=game) as server:
        bridge = f"http://127.0.0.1:{server.server.http_port}"
        for folder in (allowed_dir, other_dir):
            (folder / "index.html").write_text(PAGE.replace("BRIDGE", bridge))
        browser.get(f"{game}/index.html")
        result = browser.execute_async_script("generate().then(arguments[0], e => arguments[0](String(e)))")
        assert result["status"] == 200 and result["seed"] == "7"
        assert result["requestId"]  # exposed to the page by Access-Control-Expose-Headers
        assert result["events"][0] == "started" and result["events"][-1] == "done"
        frames = browser.execute_async_script("edit().then(arguments[0], e => arguments[0](String(e)))")
        assert isinstance(frames, list), frames
        first = [f for f in frames if f[0] == "1"]
        assert first[-1][1] == "superseded" and ["1", "response", "done"] not in first
        assert frames[-1] == ["2", "response", "done"]

        browser.get(f"{other}/index.html")  # not in --http-cors-origins
        refused = browser.execute_async_script("generate().then(arguments[0], e => arguments[0](String(e)))")
        assert refused.startswith("TypeError: Failed to fetch"), refused
        ws_refused = browser.execute_async_script("edit().then(arguments[0], e => arguments[0](String(e)))")
        assert ws_refused == "websocket error"
