"""``deepnet serve``: a local page to draw digits on, and a small JSON API, on http.server.

Routes:

- ``GET /``, ``/app.js``, ``/style.css``: the page (package data, read once at start).
- ``GET /filters``: ``{"shape": [FN, FH, FW], "pixels": base64}``, the first convolution's
  filters (first input channel) as bytes, 128 = 0, scaled by the largest magnitude.
- ``POST /predict``, body = PNG or JPEG bytes (``Content-Type: image/png`` or
  ``image/jpeg``): ``{"label": int, "probabilities": [10 floats]}``.
- ``POST /inspect``, the same body: /predict's answer plus ``"input"`` (the 28x28 input,
  base64 bytes, 255 = 1.0) and ``"layers"``: ``[{"name", "shape": [C, H, W], "pixels"}]``,
  each feature map as bytes scaled to its own range (base64). The page uses this one.

Every error is a JSON ``{"error": message}``, with a 4xx status (501 for an unknown
method, 500 for a bug in deepnet, logged; the server goes on). Bodies are capped at
MAX_BODY bytes, checked from Content-Length before reading; images at
preprocess.MAX_PIXELS, checked from their header before decoding; and at most DECODERS
images are decoded at once, which bounds the memory a burst of requests can take.
Nothing on disk is read or written on a request's behalf. One request per connection
(HTTP/1.0), each connection cut after CONNECTION_DEADLINE seconds, so a slow client
cannot hold a thread.
"""
import base64
import json
import re
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np

from . import preprocess

__all__ = ["MAX_BODY", "DigitServer"]

MAX_BODY = 2 * 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg")
READ_TIMEOUT = 10  # seconds a socket read may wait
CONNECTION_DEADLINE = 30  # seconds a connection may last in all
LINGER = 2  # seconds spent dropping a refused body, so that its sender reads the answer
DECODERS = 2  # images decoded at once: a 16-megapixel one takes about 125 MB while it is
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """A request that gets a 4xx answer: ``status``, a message for the JSON body, and for
    405 the methods that ``allow``."""

    def __init__(self, status, message, allow=None):
        super().__init__(message)
        self.status = status
        self.allow = allow


class DigitServer(ThreadingHTTPServer):
    """Serves the page and the API for ``reader`` (an inference.DigitReader).

    ``port=0`` picks a free port (``server_address`` tells which). Call serve_forever(),
    and server_close() when done.
    """

    daemon_threads = True
    request_queue_size = 64  # socketserver's 5: a burst of more connections waits for 1 s SYN retries

    def __init__(self, reader, host="127.0.0.1", port=8000, log_requests=True,
                 read_timeout=READ_TIMEOUT, connection_deadline=CONNECTION_DEADLINE):
        self.reader = reader
        self.decoding = threading.BoundedSemaphore(DECODERS)
        self.log_requests = log_requests
        self.read_timeout = read_timeout
        self.connection_deadline = connection_deadline
        self.page = {route: (_package_file(name), content_type)
                     for route, (name, content_type) in PAGE_FILES.items()}
        self.filters = _filters_json(reader.first_filters())
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def handle_error(self, request, client_address):
        # Only I/O failures get here (a client that hung up, a connection cut at its
        # deadline): _Handler answers everything else itself.
        print(f"deepnet serve: connection from {client_address[0]}: {sys.exc_info()[1]!r}",
              file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    server_version = "deepnet"
    default_request_version = "HTTP/1.0"  # answers to unparsable requests get a status line too
    disable_nagle_algorithm = True  # headers and body are two writes: send each at once

    # -- connection lifetime ----------------------------------------------------------

    def setup(self):
        self.timeout = self.server.read_timeout
        self._body_read = False
        super().setup()
        self._deadline = threading.Timer(self.server.connection_deadline, self._hang_up)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self):
        self._deadline.cancel()
        super().finish()

    def _hang_up(self):
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes -----------------------------------------------------------------------

    def do_GET(self):
        self._answer(self._get)

    def do_HEAD(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def do_PUT(self):
        self._answer(self._not_allowed)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _get(self, path):
        if path in self.server.page:
            body, content_type = self.server.page[path]
            return 200, body, content_type
        if path == "/filters":
            return 200, self.server.filters, "application/json"
        return self._not_allowed(path)

    def _post(self, path):
        if path not in ("/predict", "/inspect"):
            return self._not_allowed(path)
        data = self._read_image()
        with self.server.decoding:
            image = preprocess.mnist_input(data)
        [probabilities] = self.server.reader.probabilities(image[None])
        answer = {"label": int(np.argmax(probabilities)),
                  "probabilities": [float(p) for p in probabilities]}
        if path == "/inspect":
            answer["input"] = _base64(np.round(image * 255))
            answer["layers"] = [{"name": name, "shape": list(maps.shape), "pixels": _base64(_per_map_range(maps))}
                                for name, maps in self.server.reader.feature_maps(image)]
        return 200, json.dumps(answer).encode(), "application/json"

    def _not_allowed(self, path):
        if path in self.server.page or path == "/filters":
            raise RequestError(405, f"{self.command} is not allowed on {path} (GET only)", "GET, HEAD")
        if path in ("/predict", "/inspect"):
            raise RequestError(405, f"{self.command} is not allowed on {path} (POST only)", "POST")
        raise RequestError(404, f"no such page: {path}")

    # -- the request body -------------------------------------------------------------

    def _read_image(self):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            raise RequestError(415, f"expected Content-Type image/png or image/jpeg, "
                                    f"got {content_type or 'none'!r}")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        if not re.fullmatch(r"\s*[0-9]+\s*", length):
            raise RequestError(400, f"Content-Length must be a number of bytes, got {length!r}")
        length = int(length)
        if length > MAX_BODY:
            raise RequestError(413, f"the body is {length:,} bytes, more than the {MAX_BODY:,} accepted")
        if length == 0:
            raise RequestError(400, "the body is empty: send the image's bytes")
        try:
            data = self.rfile.read(length)
        except socket.timeout:  # TimeoutError from Python 3.10 on
            raise RequestError(408, "the body did not arrive in time") from None
        self._body_read = True
        if len(data) < length:
            raise RequestError(400, f"the body ended after {len(data)} of {length} bytes")
        return data

    def _drop_unread_body(self):
        """Read and drop what the client still sends, for at most LINGER seconds: closing
        with its body unread would reset the connection before it reads the answer."""
        if self._body_read or not (self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding")):
            return
        try:
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete
            deadline = time.monotonic() + LINGER
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.rfile.read1(65536):
                    break
        except OSError:  # the client hung up, or took too long: nothing is owed to it
            pass

    # -- answers ----------------------------------------------------------------------

    def _answer(self, route):
        """Run ``route(path)`` -> (status, body, content type) and send what it gives,
        or the JSON error that it raised; never lets an exception end the server."""
        headers = {}
        try:
            status, body, content_type = route(self.path.split("?", 1)[0])  # the path is only a key
        except Exception as exc:
            status, message = _error_status(exc)
            if status == 500:
                traceback.print_exc(file=sys.stderr)
            if getattr(exc, "allow", None):
                headers["Allow"] = exc.allow
            body, content_type = _error_body(message), "application/json"
        self.send_response(status)
        headers.update({"Content-Type": content_type, "Content-Length": str(len(body)),
                        "X-Content-Type-Options": "nosniff"})
        if content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._drop_unread_body()

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method...) as JSON too."""
        self.close_connection = True
        self.send_response(code, message)
        body = _error_body(message or self.responses.get(code, ("error",))[0])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.log_requests:
            super().log_message(format, *args)


def _package_file(name):
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _error_status(exc):
    """(status, message) of the answer to a request that raised ``exc``."""
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, preprocess.ImageTooLarge):
        return 413, str(exc)
    if isinstance(exc, preprocess.BlankImage):
        return 422, str(exc)
    if isinstance(exc, preprocess.ImageError):
        return 400, str(exc)
    return 500, "internal error (see the server's log)"


def _error_body(message):
    return json.dumps({"error": message}).encode()


def _base64(values):
    return base64.b64encode(np.asarray(values, dtype=np.uint8).tobytes()).decode("ascii")


def _per_map_range(maps):
    """Each map of (C, H, W) scaled from its own minimum to maximum onto 0..255."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.round(255 * (maps - low) / np.where(span > 0, span, 1))


def _filters_json(filters):
    if filters is None:
        return json.dumps({"shape": [0, 0, 0], "pixels": ""}).encode()
    first_channel = filters[:, 0].astype(np.float64)
    largest = np.abs(first_channel).max() or 1.0
    pixels = np.round(127.5 + 127.5 * first_channel / largest)
    return json.dumps({"shape": list(first_channel.shape), "pixels": _base64(pixels)}).encode()
