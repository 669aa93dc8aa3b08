"""The browser playground end to end: a real server with the HTTP bridge, Debian's headless
Chromium driven by Selenium (chromedriver). Types a Chinese prompt, presses Generate, waits
for the streamed textures to decode, checks them against gRPC's bytes, then provokes a
validation error. Screenshots go to tests/artifacts/ (git-ignored).

Needs `apt-get install -y chromium chromium-driver` (and a CJK font such as
fonts-wqy-microhei for a readable screenshot) plus `pip install selenium`; skipped with the
reason when any is missing. .ci/run installs them when it can.
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil

import grpc
import pytest
from server_util import free_port, running_server

from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
PROMPT = "粉色双马尾，猫耳"


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium test needs `chromium` and `chromedriver` on PATH "
                    "(Debian: apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, http_port=free_port()) as s:
        yield s


def wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def grpc_sha256s(server, seed: int, count: int) -> list[str]:
    with grpc.insecure_channel(server.target) as channel:
        data: dict[int, bytes] = {}
        request = pb.GenerateRequest(prompt=PROMPT, count=count, seed=seed, psi=0.7,  # the page's defaults
                                     output=pb.OutputOptions(size=256, filter=pb.RESIZE_FILTER_MODEL))
        for message in pb_grpc.AvatarServiceStub(channel).Generate(request, timeout=60):
            if message.HasField("chunk"):
                data[message.chunk.texture_index] = data.get(message.chunk.texture_index, b"") + message.chunk.data
    return [hashlib.sha256(data[i]).hexdigest() for i in sorted(data)]


def screenshot(driver, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def severe_console_messages(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_generate_in_the_playground(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.server.http_port}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    assert "tiny" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "prompt").send_keys(PROMPT)
    for field, value in (("count", "3"), ("seed", "7")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "generate").click()

    wait(browser, lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#grid img')];"
        "return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0);"))
    wait(browser, lambda d: "avatars in" in d.find_element(By.ID, "status").text)
    images = browser.find_elements(By.CSS_SELECTOR, "#grid img")
    assert len(images) == 3
    assert [browser.execute_script("return arguments[0].naturalWidth", i) for i in images] == [256] * 3  # the default size, through the upscaler
    assert [i.get_attribute("data-seed") for i in images] == ["7", "8", "9"]
    cells = browser.find_elements(By.CSS_SELECTOR, "#grid .cell")
    assert [c.get_attribute("data-verified") for c in cells] == ["true"] * 3  # SHA-256 checked in the page
    links = browser.find_elements(By.CSS_SELECTOR, "#grid a.download")
    assert [a.get_attribute("download") for a in links] == [f"粉色双马尾_猫耳_{s}.png" for s in (7, 8, 9)]
    # What the download buttons save is exactly what gRPC returns for the same request.
    in_page = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([...document.querySelectorAll('#grid a.download')].map(async a => {
          const bytes = await (await fetch(a.href)).arrayBuffer();
          const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
          return [...digest].map(b => b.toString(16).padStart(2, '0')).join('');
        })).then(done, e => done(String(e)));""")
    assert in_page == grpc_sha256s(server, seed=7, count=3)
    assert screenshot(browser, "playground.png").stat().st_size > 10_000
    assert severe_console_messages(browser) == []


def test_reading_chips_follow_the_prompt_as_typed(browser, server):
    """A chip per family: the stated ones with their value, the open ones as "random", the same
    reading EncodeText gives over gRPC."""
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.server.http_port}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "prompt").send_keys(PROMPT)
    with grpc.insecure_channel(server.target) as channel:
        reading = pb_grpc.AvatarServiceStub(channel).EncodeText(pb.EncodeTextRequest(prompt=PROMPT), timeout=30).reading
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#reading .chip")) == len(reading.families))
    chips = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#reading .chip")]
    stated = [f for f in reading.families if f.stated]
    assert chips[:len(stated)] == [f"{f.family.replace('_', ' ')}: {f.value} {round(100 * f.value_probability)} %"
                                   for f in stated]
    assert chips[len(stated):] == [f"{f.family.replace('_', ' ')}: random" for f in reading.families if not f.stated]
    screenshot(browser, "playground-reading.png")
    assert severe_console_messages(browser) == []


def test_validation_errors_are_shown_by_field(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.server.http_port}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("99")
    browser.find_element(By.ID, "generate").click()  # and the prompt is empty
    error = wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                 else None, timeout=30)
    assert "invalid argument" in error.text.lower()
    assert "prompt must not be empty" in error.text and "count must be 1..16 (got 99)" in error.text
    invalid = {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "[aria-invalid='true']")}
    assert invalid == {"prompt", "count"}
    assert browser.find_element(By.ID, "status").text == "failed"
    assert browser.find_elements(By.CSS_SELECTOR, "#grid img") == []
    screenshot(browser, "playground_error.png")
    # The page logs the 400 response itself as a console error; nothing else may be there.
    assert [m for m in severe_console_messages(browser) if "400 (Bad Request)" not in m] == []


def test_live_mode_regenerates_as_you_type_over_the_websocket(browser, server):
    """Typing with Live on sends each edit over one WebSocket Edit session; the grid ends up
    showing the newest prompt's avatar; the curl preview quotes ' for the shell."""
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.server.http_port}/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("1")
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("7")
    browser.find_element(By.ID, "live").click()
    browser.find_element(By.ID, "prompt").send_keys("pink twin tails, cat's ears")
    wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('#grid img'); return i && i.complete && i.naturalWidth > 0;"))
    wait(browser, lambda d: "avatars in" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.CSS_SELECTOR, "#grid img").get_attribute("alt") == \
        "avatar for “pink twin tails, cat's ears”, seed 7"
    assert browser.execute_script("return live.sequence") >= 1
    curl = browser.find_element(By.ID, "request-json").get_attribute("textContent")
    assert "cat'\\''s ears" in curl and curl.startswith("curl -N -H 'Content-Type: application/json' -d '{")
    # The model dropdown shows its whole label.
    assert browser.execute_script("const s = document.getElementById('model'); return s.scrollWidth <= s.clientWidth")
    screenshot(browser, "playground_live.png")
    assert severe_console_messages(browser) == []
