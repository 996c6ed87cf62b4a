"""The page of ``deepnet serve`` in a real browser: headless Chromium, driven by selenium,
draws a 1 and a 7 with pointer events and reads what the page shows; and a page of a
foreign name that resolves to 127.0.0.1 (DNS rebinding) reads nothing.

Needs the Debian packages chromium and chromium-driver (.ci/run installs them); skipped,
saying so, where they are missing. ``DEEPNET_SCREENSHOT=docs/serve.png pytest
tests/test_app_browser.py`` also saves the screenshot of the page with its 7.
"""

import base64
import json
import os
import re
import shutil
import threading

import numpy as np
import pytest

from app_support import Image  # noqa: F401 (skips this module without Pillow)
from deepnet.app.inference import DigitReader, load_for_inference
from deepnet.app.preprocess import mnist_input
from deepnet.app.server import DigitServer
from support import BOOK_PARAMS

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PAD = 280  # the drawing pad's size in CSS pixels (index.html, style.css)
FOREIGN_NAME = "evil.test"
NO_LABEL = "\u2013"


def find(*names):
    return next(filter(None, map(shutil.which, names)), None)


@pytest.fixture(scope="module")
def served():
    server = DigitServer(DigitReader(load_for_inference(BOOK_PARAMS)), port=0, log_requests=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser():
    chromium = find("chromium", "chromium-browser", "google-chrome")
    driver_path = find("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no Chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1000",
        "--force-device-scale-factor=1",
        # a foreign name that resolves to this machine, as after DNS rebinding
        f"--host-resolver-rules=MAP {FOREIGN_NAME} 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def draw(driver, pointer, *strokes):
    """Each stroke, a list of (x, y) on the pad, drawn as pointer down, moves, up."""
    pad = driver.find_element(By.ID, "pad")
    actions = ActionBuilder(driver, mouse=PointerInput(pointer, pointer), duration=10)
    for stroke in strokes:
        # move_to offsets are from the element's centre
        (x, y), rest = stroke[0], stroke[1:]
        actions.pointer_action.move_to(pad, x - PAD // 2, y - PAD // 2).pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(pad, x - PAD // 2, y - PAD // 2)
        actions.pointer_action.pointer_up()
    actions.perform()


def line(start, end, steps=15):
    return [
        (start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
        for i in range(steps + 1)
    ]


def shown_label(driver):
    """The page's answer once its last request came back."""

    def answered(driver):
        label = driver.find_element(By.ID, "label").text
        busy = driver.find_element(By.ID, "status").text
        return label if label not in ("", NO_LABEL) and not busy else False

    return WebDriverWait(driver, 15).until(answered)


def pad_png(driver):
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def test_the_page_reads_a_drawn_one_and_seven(served, browser, tmp_path):
    host, port = served.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    WebDriverWait(browser, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filters canvas")) == 16)

    draw(browser, interaction.POINTER_TOUCH, line((140, 40), (140, 240)))
    assert shown_label(browser) == "1"
    check_the_page_shows_what_predict_answers(browser, served)

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "label").text == NO_LABEL
    draw(browser, interaction.POINTER_PEN, line((70, 50), (210, 50)) + line((210, 50), (115, 245))[1:])
    assert shown_label(browser) == "7"
    check_the_page_shows_what_predict_answers(browser, served)

    # The input as the network sees it, and every feature map, drawn.
    maps = DigitReader(served.reader.network).feature_maps(mnist_input(pad_png(browser)))
    canvases = browser.find_elements(By.CSS_SELECTOR, "#feature-maps canvas")
    assert len(canvases) == sum(m.shape[0] for _, m in maps)
    lit = browser.execute_script("""
        const data = document.getElementById('input').getContext('2d').getImageData(0, 0, 28, 28).data;
        let sum = 0; for (let i = 0; i < data.length; i += 4) sum += data[i]; return sum / 255;""")
    assert lit == pytest.approx(mnist_input(pad_png(browser)).sum(), rel=0.01)

    screenshot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(screenshot))
    if os.environ.get("DEEPNET_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["DEEPNET_SCREENSHOT"])


def check_the_page_shows_what_predict_answers(browser, served):
    """POST /predict with the pad's own PNG: the page shows that label and those bars."""
    import http.client
    import json

    connection = http.client.HTTPConnection(*served.server_address[:2], timeout=10)
    connection.request("POST", "/predict", pad_png(browser), {"Content-Type": "image/png"})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    assert browser.find_element(By.ID, "label").text == str(answer["label"])
    shown = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#bars .percent")]
    assert shown == [f"{100 * p:.1f}%" for p in answer["probabilities"]]
    top = browser.find_elements(By.CSS_SELECTOR, "#bars li.top")
    assert len(top) == 1 and top[0].text.startswith(str(int(np.argmax(answer["probabilities"]))))


FETCH = """
const [url, options, done] = arguments;
fetch(url, options).then(async r => done([r.status, r.type, await r.text()]),
                         e => done([0, "error", String(e)]));
"""


def test_a_page_of_a_foreign_name_resolving_here_reads_nothing(browser, capsys):
    """DNS rebinding: a page at http://evil.test:PORT/, once evil.test resolves to
    127.0.0.1, is same-origin with the server. The server answers its name with 421, and
    a POST from its origin to the server's own address with 403."""
    server = DigitServer(DigitReader(load_for_inference(BOOK_PARAMS)), port=0, log_requests=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        own, foreign = f"http://127.0.0.1:{port}", f"http://{FOREIGN_NAME}:{port}"
        png = {"method": "POST", "body": "x", "headers": {"Content-Type": "image/png"}}

        browser.get(foreign + "/")
        assert f"expected Host 127.0.0.1:{port}" in browser.find_element(By.TAG_NAME, "body").text
        assert not browser.find_elements(By.ID, "pad")  # not the page
        for path, options in [("/filters", {}), ("/", {}), ("/predict", png), ("/inspect", png)]:
            status, _, text = browser.execute_async_script(FETCH, path, options)
            assert status == 421 and FOREIGN_NAME in json.loads(text)["error"], (path, status, text)
        # A POST to the server's own address: the browser hides the answer from this origin
        # (no-cors), and the server refuses it before reading the body.
        status, kind, _ = browser.execute_async_script(
            FETCH,
            own + "/predict",
            {"method": "POST", "mode": "no-cors", "body": "x", "headers": {"Content-Type": "text/plain"}},
        )
        assert (status, kind) == (0, "opaque")

        browser.get(own + "/")
        WebDriverWait(browser, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filters canvas")) == 16)
        status, _, text = browser.execute_async_script(FETCH, "/filters", {})
        assert status == 200 and json.loads(text)["shape"] == [16, 3, 3]
        status, _, text = browser.execute_async_script(FETCH, "/predict", png)
        assert status == 400 and "PNG or JPEG" in json.loads(text)["error"]  # answered: "x" is no image
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    log = capsys.readouterr().err
    statuses = []
    for request, status in re.findall(r'"(\w+ \S+) HTTP/1\.1" (\d+)', log):
        # Chromium asks again once after a 421 (RFC 9110: on another connection); and for a favicon
        if request != "GET /favicon.ico" and not (status == "421" and statuses[-1:] == [(request, status)]):
            statuses.append((request, status))
    # The page's stylesheet and script are fetched at once, by two connections: either may log first.
    assert sorted(statuses[7:9]) == [("GET /app.js", "200"), ("GET /style.css", "200")], log
    assert statuses[:7] + statuses[9:] == [
        ("GET /", "421"),
        ("GET /filters", "421"),
        ("GET /", "421"),
        ("POST /predict", "421"),
        ("POST /inspect", "421"),
        ("POST /predict", "403"),
        ("GET /", "200"),
        ("GET /filters", "200"),
        ("GET /filters", "200"),
        ("POST /predict", "400"),
    ], log


def test_a_busy_server_is_shown_and_asked_again(browser):
    """With every work slot taken, the page says the server is busy and asks again after
    Retry-After, until it is answered."""
    server = DigitServer(
        DigitReader(load_for_inference(BOOK_PARAMS)), port=0, log_requests=False, work_slots=1, work_wait=0.1
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get("http://127.0.0.1:{}/".format(server.server_address[1]))
        WebDriverWait(browser, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filters canvas")) == 16)
        assert server.work_slots.acquire(timeout=5)  # another request's work, for now
        draw(browser, interaction.POINTER_TOUCH, line((140, 40), (140, 240)))
        WebDriverWait(browser, 15).until(lambda d: "busy" in d.find_element(By.ID, "status").text)
        assert browser.find_element(By.ID, "label").text == NO_LABEL
        server.work_slots.release()
        assert shown_label(browser) == "1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
