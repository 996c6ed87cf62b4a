"""``deepnet serve``'s HTTP API: good, bad, oversized, slow and concurrent requests."""

import base64
import http.client
import io
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import pytest

from app_support import Image, black_on_white, encode, mnist_test_digits, png_header_only
from deepnet.app import server as server_module
from deepnet.app.inference import DigitReader, load_for_inference
from deepnet.app.preprocess import mnist_input
from deepnet.app.server import MAX_BODY, DigitServer
from deepnet.layers import softmax
from support import BOOK_PARAMS

READ_TIMEOUT = 0.5  # the test server's: slow clients are cut off quickly


def start(reader, **options):
    server = DigitServer(reader, port=0, log_requests=False, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def network():
    return load_for_inference(BOOK_PARAMS)


@pytest.fixture(scope="module")
def served(network):
    server, thread = start(DigitReader(network), read_timeout=READ_TIMEOUT, connection_deadline=3)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def pictures():
    """Ten MNIST test digits as PNG pictures, and the original 28x28 images."""
    digits, _ = mnist_test_digits(10)
    return [encode(black_on_white(d)) for d in digits], digits


def request(server, method, path, body=None, headers=None):
    """(status, response headers, decoded JSON or raw bytes)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type") == "application/json":
        data = json.loads(data)
    return response.status, response, data


def raw_request(server, data, half_close=True):
    """Send bytes as they are; return the status line and the JSON body of the answer."""
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post_png(server, png, path="/predict"):
    return request(server, "POST", path, png, {"Content-Type": "image/png"})


# -- good requests ---------------------------------------------------------------------


def test_predict_answers_label_and_probabilities_of_the_preprocessed_picture(served, pictures, network):
    pngs, digits = pictures
    for png, digit in zip(pngs, digits):
        status, response, answer = post_png(served, png)
        assert status == 200 and response.getheader("Content-Type") == "application/json"
        assert set(answer) == {"label", "probabilities"}
        expected = softmax(network.predict(mnist_input(png)[None, None]).astype(np.float64))[0]
        assert np.allclose(answer["probabilities"], expected, rtol=1e-6, atol=1e-9)
        assert sum(answer["probabilities"]) == pytest.approx(1)
        # The same label as the network gives the original 28x28 MNIST image.
        assert answer["label"] == int(np.argmax(network.predict(digit[None, None])))


def test_predict_reads_jpeg_too(served, pictures, network):
    png, digit = pictures[0][0], pictures[1][0]
    jpeg = encode(Image.open(io.BytesIO(png)).convert("RGB"), "JPEG", quality=90)
    status, _, answer = request(served, "POST", "/predict", jpeg, {"Content-Type": "image/jpeg; charset=x"})
    assert status == 200 and answer["label"] == int(np.argmax(network.predict(digit[None, None])))


def test_inspect_adds_the_input_and_every_feature_map(served, pictures, network):
    png = pictures[0][0]
    status, _, answer = post_png(served, png, "/inspect")
    assert status == 200
    assert answer["label"] == post_png(served, png)[2]["label"]
    made = mnist_input(png)
    seen = np.frombuffer(base64.b64decode(answer["input"]), np.uint8).reshape(28, 28)
    assert np.array_equal(seen, np.round(made * 255).astype(np.uint8))

    # The maps of the book's network, layer by layer, computed here independently.
    x, expected = made[None, None], []
    for layer in network.layers[:9]:  # six convolutions (with ReLU) and three poolings
        x = layer.forward(x)
        expected.append(x[0])
    names = [layer["name"] for layer in answer["layers"]]
    assert names == [
        "Convolution 1",
        "Convolution 2",
        "Pooling 1",
        "Convolution 3",
        "Convolution 4",
        "Pooling 2",
        "Convolution 5",
        "Convolution 6",
        "Pooling 3",
    ]
    for layer, maps in zip(answer["layers"], expected):
        assert layer["shape"] == list(maps.shape)
        pixels = np.frombuffer(base64.b64decode(layer["pixels"]), np.uint8).reshape(maps.shape)
        low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
        scaled = 255 * (maps - low) / np.where(high > low, high - low, 1)
        assert np.abs(pixels - scaled).max() <= 0.5 + 1e-3


def test_filters_are_the_first_layers_weights_with_grey_at_zero(served, network):
    status, _, answer = request(served, "GET", "/filters")
    assert status == 200 and answer["shape"] == [16, 3, 3]
    pixels = np.frombuffer(base64.b64decode(answer["pixels"]), np.uint8).reshape(16, 3, 3)
    weights = network.params["W1"][:, 0]
    assert np.abs(pixels - (127.5 + 127.5 * weights / np.abs(weights).max())).max() <= 0.5 + 1e-3


@pytest.mark.parametrize(
    "path, name, content_type",
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/?from=bookmark", "index.html", "text/html; charset=utf-8"),
        ("/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "style.css", "text/css; charset=utf-8"),
    ],
)
def test_the_page_is_served_from_package_data(served, path, name, content_type):
    status, response, body = request(served, "GET", path)
    assert status == 200 and response.getheader("Content-Type") == content_type
    assert body == resources.files("deepnet.app").joinpath("static", name).read_bytes()
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    if name == "index.html":
        assert "default-src 'self'" in response.getheader("Content-Security-Policy")


def test_the_page_loads_nothing_from_elsewhere():
    for name in ("index.html", "app.js", "style.css"):
        text = resources.files("deepnet.app").joinpath("static", name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_head_answers_headers_only(served):
    status, response, body = request(served, "HEAD", "/")
    assert status == 200 and body == b"" and int(response.getheader("Content-Length")) > 0


# -- bad requests ----------------------------------------------------------------------

PNG = "image/png"
BAD_REQUESTS = [
    # (what, method, path, body, headers, status, words of the error)
    ("garbage bytes", "POST", "/predict", b"this is no image", {"Content-Type": PNG}, 400, "PNG or JPEG"),
    ("a GIF sent as PNG", "POST", "/predict", "gif", {"Content-Type": PNG}, 400, "PNG or JPEG"),
    ("a truncated PNG", "POST", "/predict", "truncated", {"Content-Type": PNG}, 400, "unreadable"),
    ("an empty body", "POST", "/predict", b"", {"Content-Type": PNG}, 400, "empty"),
    ("a blank canvas", "POST", "/predict", "blank", {"Content-Type": PNG}, 422, "blank"),
    (
        "a decompression bomb",
        "POST",
        "/predict",
        png_header_only(100_000, 100_000),
        {"Content-Type": PNG},
        413,
        "pixels",
    ),
    ("no Content-Type", "POST", "/predict", "png", {}, 415, "image/png or image/jpeg"),
    ("a wrong Content-Type", "POST", "/predict", "png", {"Content-Type": "text/plain"}, 415, "text/plain"),
    (
        "multipart form data",
        "POST",
        "/predict",
        "png",
        {"Content-Type": "multipart/form-data; boundary=x"},
        415,
        "multipart",
    ),
    ("GET on /predict", "GET", "/predict", None, {}, 405, "POST only"),
    ("PUT on /predict", "PUT", "/predict", "png", {"Content-Type": PNG}, 405, "POST only"),
    ("DELETE on /inspect", "DELETE", "/inspect", None, {}, 405, "POST only"),
    ("POST on the page", "POST", "/", "png", {"Content-Type": PNG}, 405, "GET only"),
    ("a wrong path", "GET", "/etc/passwd", None, {}, 404, "no such page"),
    ("a path that climbs", "GET", "/../../setup.py", None, {}, 404, "no such page"),
    ("a static file by its name", "GET", "/static/app.js", None, {}, 404, "no such page"),
    ("a path that is no URL", "GET", "//[bad", None, {}, 404, "no such page"),
    ("POST to a wrong path", "POST", "/predict/", "png", {"Content-Type": PNG}, 404, "no such page"),
    ("an unknown method", "BREW", "/predict", None, {}, 501, "Unsupported method"),
]


def body_for(name, pictures):
    png = pictures[0][0]
    return {
        "png": png,
        "truncated": png[: len(png) // 2],
        "blank": encode(Image.new("L", (280, 280), 255)),
        "gif": encode(Image.open(io.BytesIO(png)), "GIF"),
    }[name]


@pytest.mark.parametrize(
    "what, method, path, body, headers, status, words", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_json_error(served, pictures, what, method, path, body, headers, status, words):
    if isinstance(body, str):
        body = body_for(body, pictures)
    answered, response, answer = request(served, method, path, body, headers)
    assert answered == status
    assert response.getheader("Content-Type") == "application/json"
    assert set(answer) == {"error"} and words in answer["error"]
    if status == 405:
        assert response.getheader("Allow") in ("POST", "GET, HEAD")


@pytest.mark.parametrize(
    "head, status, words",
    [
        (b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\n\r\n", 411, "Content-Length"),
        (
            b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nabcd\r\n0\r\n\r\n",
            411,
            "Content-Length",
        ),
        (b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: -5\r\n\r\n", 400, "number"),
        (b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1e3\r\n\r\n", 400, "number"),
        (b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: \xb2\r\n\r\n", 400, "number"),
        (
            b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\nonly 19 bytes here.",
            400,
            "ended after 19 of 100 bytes",
        ),
        (b"GET\r\n\r\n", 400, "Bad request syntax"),
        (b"GET / HTTP/one\r\n\r\n", 400, "Bad request version"),
        (b"GET /" + b"a" * (65537 - 5), 414, "URI Too Long"),  # what http.server reads of a line, and no more
    ],
)
def test_malformed_http_gets_a_json_error(served, head, status, words):
    answered, answer = raw_request(served, head)
    assert answered == status and words.lower() in answer["error"].lower()


def test_an_oversized_body_is_refused_from_content_length_before_it_is_sent(served):
    head = (f"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n").encode()
    answered, answer = raw_request(served, head)  # no body follows
    assert answered == 413 and f"{MAX_BODY:,}" in answer["error"]


@pytest.mark.parametrize("size", [MAX_BODY + 1, 2 * MAX_BODY])
def test_a_client_sending_an_oversized_body_reads_the_413(served, size):
    status, _, answer = request(served, "POST", "/predict", bytes(size), {"Content-Type": PNG})
    assert status == 413 and f"{size:,} bytes" in answer["error"]


def test_a_body_of_exactly_the_cap_is_read(served):
    status, _, answer = request(served, "POST", "/predict", bytes(MAX_BODY), {"Content-Type": PNG})
    assert status == 400 and "PNG or JPEG" in answer["error"]  # read, then found not to be an image


# -- slow and concurrent clients, and staying up ---------------------------------------


def test_a_stalled_body_times_out_with_408_while_others_are_served(served, pictures):
    with socket.create_connection(served.server_address[:2], timeout=10) as stalled:
        stalled.sendall(b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nten bytes.")
        assert post_png(served, pictures[0][0])[0] == 200  # meanwhile
        started = time.monotonic()
        answer = b"".join(iter(lambda: stalled.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 408") and time.monotonic() - started < 5


def test_a_client_that_never_finishes_its_headers_is_cut_off(served):
    with socket.create_connection(served.server_address[:2], timeout=10) as slow:
        slow.sendall(b"POST /predict HTTP/1.1\r\n")
        started = time.monotonic()
        assert slow.recv(65536) == b""  # the server hung up
    assert time.monotonic() - started < 5


def test_a_client_trickling_bytes_is_cut_off_at_the_connection_deadline(network):
    server, thread = start(DigitReader(network), read_timeout=1, connection_deadline=0.5)
    try:
        with socket.create_connection(server.server_address[:2], timeout=0.1) as slow:
            started = time.monotonic()
            for _ in range(40):  # a byte every 0.1 s: well within the read timeout, for 4 s
                try:
                    slow.sendall(b"X")
                    if slow.recv(1) == b"":
                        break  # the server hung up
                except socket.timeout:
                    continue
                except OSError:
                    break  # hung up, and said so with a reset
            assert time.monotonic() - started < 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_concurrent_requests_each_get_their_own_answer(served, pictures):
    pngs = pictures[0]
    serial = [post_png(served, png)[2] for png in pngs]
    jobs = [i % len(pngs) for i in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: post_png(served, pngs[i], "/inspect" if i % 2 else "/predict"), jobs))
    for i, (status, _, answer) in zip(jobs, answers):
        assert status == 200
        assert answer["probabilities"] == serial[i]["probabilities"]  # bit for bit


def test_at_most_two_images_are_decoded_at_once(served, pictures, monkeypatch):
    from deepnet.app import preprocess

    decoding, most, lock = [0], [0], threading.Lock()
    real = preprocess.mnist_input

    def slow_mnist_input(data):
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        time.sleep(0.05)
        with lock:
            decoding[0] -= 1
        return real(data)

    monkeypatch.setattr(preprocess, "mnist_input", slow_mnist_input)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda png: post_png(served, png)[0], pictures[0] * 2))
    assert statuses == [200] * 20 and most[0] == server_module.WORK_SLOTS == 2


def test_an_unexpected_error_is_a_500_and_the_server_stays_up(pictures):
    class BrokenReader:
        def first_filters(self):
            return None

        def probabilities(self, inputs):
            raise RuntimeError("a bug in the reader")

    server, thread = start(BrokenReader())
    try:
        for _ in range(3):
            status, _, answer = post_png(server, pictures[0][0])
            assert status == 500 and answer == {"error": "internal error (see the server's log)"}
        status, _, answer = request(server, "GET", "/filters")
        assert status == 200 and answer == {"shape": [0, 0, 0], "pixels": ""}
        assert thread.is_alive()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_server_never_opens_files_on_a_requests_behalf(served, pictures, monkeypatch):
    opened = []
    real_open = open

    def spy(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    monkeypatch.setattr("io.open", spy)
    for method, path, body in [
        ("GET", "/", None),
        ("GET", "/app.js", None),
        ("GET", "/../setup.py", None),
        ("POST", "/inspect", pictures[0][0]),
    ]:
        request(served, method, path, body, {"Content-Type": PNG} if body else {})
    assert opened == []


def test_the_server_is_still_up_after_everything(served, pictures):
    assert post_png(served, pictures[0][0])[0] == 200


def test_it_listens_on_the_loopback_address_by_default(network):
    server = DigitServer(DigitReader(network), port=0, log_requests=False)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


# -- hardening round 3 (issue 32) ------------------------------------------------------


def strict_json(data):
    """JSON as RFC 8259 has it: NaN and Infinity are refused, as a browser's JSON.parse does."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(data, parse_constant=refuse)


def raw_answer(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) with the body left undecoded."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


class SlowReader:
    """A reader whose every pass takes ``seconds``; counts the passes running at once."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.started = threading.Event()
        self.running = self.most = 0
        self.lock = threading.Lock()

    def first_filters(self):
        return None

    def probabilities(self, inputs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.set()
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return np.full((len(inputs), 10), 0.1)

    def feature_maps(self, image):
        return []


def test_when_every_work_slot_is_busy_a_request_gets_503_and_pages_still_load(pictures, monkeypatch):
    monkeypatch.setattr(server_module, "WORK_SLOTS", 1, raising=False)
    monkeypatch.setattr(server_module, "WORK_WAIT", 0.2, raising=False)
    reader = SlowReader(2.0)
    server, thread = start(reader)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(post_png, server, pictures[0][0])
            assert reader.started.wait(10)
            started = time.monotonic()
            status, response, answer = post_png(server, pictures[0][1])
            assert status == 503 and time.monotonic() - started < 1.5
            assert response.getheader("Content-Type") == "application/json"
            assert "busy" in answer["error"] and response.getheader("Retry-After") == "1"
            for path in ("/", "/filters"):  # the page and the filters never wait for a slot
                started = time.monotonic()
                assert request(server, "GET", path)[0] == 200
                assert time.monotonic() - started < 0.5
            assert busy.result()[0] == 200
        assert reader.most == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_more_images_on_their_way_than_max_posts_get_503_before_their_body_is_read(pictures, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_POSTS", 1, raising=False)
    reader = SlowReader(2.0)
    server, thread = start(reader)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(post_png, server, pictures[0][0])
            assert reader.started.wait(10)
            started = time.monotonic()
            head = (f"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: {MAX_BODY}\r\n\r\n").encode()
            status, answer = raw_request(server, head)  # no body follows: refused without it
            assert status == 503 and "busy" in answer["error"]
            assert time.monotonic() - started < 1.5  # at once, not after WORK_WAIT
            assert busy.result()[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_requests_wait_for_a_free_slot_up_to_the_limit(pictures, monkeypatch):
    monkeypatch.setattr(server_module, "WORK_SLOTS", 1, raising=False)
    reader = SlowReader(0.05)
    server, thread = start(reader)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(lambda png: post_png(server, png)[0], pictures[0][:8]))
        assert statuses == [200] * 8 and reader.most == 1  # queued within WORK_WAIT, one pass at a time
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def nan_network(network, value):
    """A copy of the book's network whose last bias is ``value`` (NaN or inf): every score is."""
    import copy

    broken = copy.deepcopy(network)
    last_bias = [name for name in broken.params if name.startswith("b")][-1]
    broken.params[last_bias][...] = value
    return broken


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("path", ["/predict", "/inspect"])
def test_a_network_with_non_finite_outputs_gets_a_500_json_error_never_nan(network, pictures, value, path):
    server, thread = start(DigitReader(nan_network(network, value)))
    try:
        status, response, body = raw_answer(server, "POST", path, pictures[0][0], {"Content-Type": PNG})
        answer = strict_json(body)
        assert status == 500 and response.getheader("Content-Type") == "application/json"
        assert set(answer) == {"error"} and "not finite" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_server_never_sends_nan_even_from_a_reader_that_gives_it(pictures, capsys):
    class NaNReader(SlowReader):
        def probabilities(self, inputs):
            return np.full((len(inputs), 10), np.nan)

    server, thread = start(NaNReader(0))
    try:
        status, _, body = raw_answer(server, "POST", "/predict", pictures[0][0], {"Content-Type": PNG})
        assert status == 500 and "error" in strict_json(body)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# DNS rebinding: a page of a foreign name that resolves to 127.0.0.1 sends its name as Host.


def test_a_foreign_host_gets_421_on_every_route(served, pictures):
    port = served.server_address[1]
    for method, path, body in [
        ("GET", "/", None),
        ("GET", "/filters", None),
        ("HEAD", "/", None),
        ("POST", "/predict", pictures[0][0]),
        ("POST", "/inspect", pictures[0][0]),
    ]:
        headers = {"Host": f"evil.test:{port}", "Content-Type": PNG}
        status, response, body = raw_answer(served, method, path, body, headers)
        assert status == 421, (method, path)
        assert response.getheader("Content-Type") == "application/json"
        if method != "HEAD":
            answer = json.loads(body)
            assert "evil.test" in answer["error"] and f"127.0.0.1:{port}" in answer["error"]


@pytest.mark.parametrize(
    "host",
    [
        "evil.test",
        "127.0.0.1",
        "localhost:1",
        "127.0.0.1:{port}.evil.test",
        "127.0.0.2:{port}",
        "example.com:{port}",
        "",
    ],
)
def test_hosts_other_than_the_servers_address_get_421(served, host):
    port = served.server_address[1]
    status, _, answer = request(served, "GET", "/filters", headers={"Host": host.format(port=port)})
    assert status == 421 and "Host" in answer["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_the_loopback_names_of_the_server_are_accepted(served, pictures, host):
    port = served.server_address[1]
    headers = {"Host": host.format(port=port)}
    assert request(served, "GET", "/filters", headers=headers)[0] == 200
    origin = "http://" + host.format(port=port).lower()
    assert (
        request(served, "POST", "/predict", pictures[0][0], {**headers, "Content-Type": PNG, "Origin": origin})[0]
        == 200
    )


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.test:{port}",
        "http://evil.test",
        "null",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:1",
        "http://127.0.0.1",
        "http://127.0.0.1:{port}.evil.test",
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/inspect"])
def test_a_post_from_a_foreign_origin_gets_403(served, pictures, origin, path):
    port = served.server_address[1]
    status, response, answer = request(
        served, "POST", path, pictures[0][0], {"Content-Type": PNG, "Origin": origin.format(port=port)}
    )
    assert status == 403 and response.getheader("Content-Type") == "application/json"
    assert "Origin" in answer["error"] and f"http://127.0.0.1:{port}" in answer["error"]


def test_a_post_without_origin_from_a_program_is_answered(served, pictures):
    assert post_png(served, pictures[0][0])[0] == 200  # curl and http.client send no Origin


def test_the_hosts_accepted_follow_the_address_given():
    allowed = server_module.allowed_hosts
    assert allowed("127.0.0.1", "127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert allowed("localhost", "127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert allowed("::1", "::1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert allowed("192.168.1.5", "192.168.1.5", 8000) == {"192.168.1.5:8000"}
    assert allowed("box.lan", "192.168.1.5", 80) == {"box.lan:80", "box.lan", "192.168.1.5:80", "192.168.1.5"}


# Disconnects and errors of the connection are no bugs: nothing is logged for them.


def reset(connection):
    """Close with a reset (RST), as a browser tab closed mid-request does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    connection.close()


def test_a_client_that_hangs_up_before_its_answer_leaves_no_traceback(pictures, capsys):
    reader = SlowReader(0.5)
    server, thread = start(reader)
    try:
        png = pictures[0][0]
        client = socket.create_connection(server.server_address[:2], timeout=10)
        client.sendall(
            b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(png)}\r\n\r\n".encode()
            + png
        )
        assert reader.started.wait(10)
        reset(client)
        # ... and one that hangs up in the middle of its body
        client = socket.create_connection(server.server_address[:2], timeout=10)
        client.sendall(b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nten bytes.")
        time.sleep(0.1)
        reset(client)
        time.sleep(1)  # the answers are written to the closed connections
        assert post_png(server, png)[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


INTERNAL_NAMES = re.compile(r"\b(read_grayscale|digit_to_mnist|mnist_input|_grayscale)\b")


@pytest.mark.parametrize("body", ["blank", "truncated", "gif", b"no image"])
def test_image_errors_speak_of_the_image_not_of_functions(served, pictures, body):
    if isinstance(body, str):
        body = body_for(body, pictures)
    status, _, answer = post_png(served, body)
    assert status in (400, 422) and not INTERNAL_NAMES.search(answer["error"]), answer


def test_listening_on_every_address_accepts_its_ip_addresses_but_no_other_name():
    import types

    every = types.SimpleNamespace(
        allowed_hosts=server_module.allowed_hosts("0.0.0.0", "0.0.0.0", 8000),
        any_address=True,
        server_address=("0.0.0.0", 8000),
    )
    allowed = lambda host: DigitServer.host_allowed(every, host)  # noqa: E731
    assert allowed("192.168.1.5:8000") and allowed("[fe80::1]:8000") and allowed("0.0.0.0:8000")
    assert not allowed("192.168.1.5:8001") and not allowed("evil.test:8000") and not allowed("192.168.1.5")
