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
method, 500 for a bug in deepnet, logged, or for a network whose output is not finite;
the server goes on). No answer holds NaN or infinity (JSON has neither).

Only this server's own names are answered: a ``Host`` other than the address it listens
on (and, on the loopback address, ``localhost``, ``127.0.0.1`` and ``[::1]``, with the
port) gets 421, so that a foreign name resolving to this machine (DNS rebinding) reads
nothing; a POST whose ``Origin`` is not one of those ``http://`` addresses gets 403.
Programs that send no Origin (curl) are answered.

Bodies are capped at MAX_BODY bytes, checked from Content-Length before reading; images
at preprocess.MAX_PIXELS, checked from their header before decoding. At most WORK_SLOTS
requests decode, preprocess and run the network at once; a request that finds them all
taken waits up to WORK_WAIT seconds for one, then gets 503 with Retry-After; and at
most MAX_POSTS images are received, waiting or worked on at once (503 at once for more,
before reading the body). So the memory a burst of requests takes is bounded (MAX_POSTS
bodies, WORK_SLOTS images' work), and the page and /filters (which take no slot) are
answered meanwhile. Nothing on disk is read or written on a request's behalf.
One request per connection (HTTP/1.0), each connection cut after CONNECTION_DEADLINE
seconds, so a slow client cannot hold a thread. A client that hangs up is no error: it
is not logged.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import re
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Mapping, NoReturn, Optional, Set, Tuple, cast

import numpy as np

from . import preprocess
from .inference import MAX_IMAGE_BYTES, NonFiniteOutput, image_error_message

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from .inference import DigitReader

# (status, body, content type) of an answer.
Answer = Tuple[int, bytes, str]

__all__ = ["MAX_BODY", "WORK_SLOTS", "WORK_WAIT", "MAX_POSTS", "DigitServer", "allowed_hosts"]

MAX_BODY = MAX_IMAGE_BYTES  # the same bound as deepnet predict's for a file
IMAGE_TYPES = ("image/png", "image/jpeg")
READ_TIMEOUT = 10  # seconds a socket read may wait
CONNECTION_DEADLINE = 30  # seconds a connection may last in all
LINGER = 2  # seconds spent dropping a refused body, so that its sender reads the answer
WORK_SLOTS = 2  # requests decoded, preprocessed and run at once: a 16-megapixel image takes
# about 125 MB while it is, so a burst of requests takes at most this many times that
WORK_WAIT = 5.0  # seconds a request waits for a free slot before it gets 503
MAX_POSTS = 8  # images received, waiting or worked on at once: at most this many bodies (MAX_BODY each) are held
RETRY_AFTER = 1  # seconds, the 503's Retry-After
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class RequestError(Exception):
    """A request that gets a 4xx answer: ``status``, a message for the JSON body, and for
    405 the methods that ``allow``."""

    def __init__(
        self, status: int, message: str, allow: Optional[str] = None, headers: Optional[Mapping[str, str]] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        if allow:
            self.headers["Allow"] = allow


class DigitServer(ThreadingHTTPServer):
    """Serves the page and the API for ``reader`` (an inference.DigitReader).

    ``port=0`` picks a free port (``server_address`` tells which). Call serve_forever(),
    and server_close() when done. ``work_slots``, ``work_wait`` and ``max_posts``:
    WORK_SLOTS, WORK_WAIT and MAX_POSTS unless given.
    """

    daemon_threads = True
    request_queue_size = 64  # socketserver's 5: a burst of more connections waits for 1 s SYN retries

    def __init__(
        self,
        reader: DigitReader,
        host: str = "127.0.0.1",
        port: int = 8000,
        log_requests: bool = True,
        read_timeout: float = READ_TIMEOUT,
        connection_deadline: float = CONNECTION_DEADLINE,
        work_slots: Optional[int] = None,
        work_wait: Optional[float] = None,
        max_posts: Optional[int] = None,
    ) -> None:
        self.reader = reader
        self.work_slot_count = WORK_SLOTS if work_slots is None else work_slots
        self.work_slots = threading.BoundedSemaphore(self.work_slot_count)
        self.work_wait = WORK_WAIT if work_wait is None else work_wait
        self.posts = threading.BoundedSemaphore(MAX_POSTS if max_posts is None else max_posts)
        self.log_requests = log_requests
        self.read_timeout = read_timeout
        self.connection_deadline = connection_deadline
        self.page = {route: (_package_file(name), content_type) for route, (name, content_type) in PAGE_FILES.items()}
        self.filters = _filters_json(reader.first_filters())
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        address, port = cast(Tuple[str, int], self.server_address[:2])  # an AF_INET(6) address
        self.url = f"http://{_bracketed(address)}:{port}"
        self.allowed_hosts = allowed_hosts(host, address, port)
        self.any_address = address in ("0.0.0.0", "::")  # every address of this machine
        if self.any_address:  # and this machine's own name, which no foreign page controls
            self.allowed_hosts |= allowed_hosts(socket.gethostname(), address, port)

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a Host header's value, or an Origin's after http://) names this server."""
        host = host.strip().lower()
        if host in self.allowed_hosts:
            return True
        # Listening on every address: any IP address of this machine, as the clients on the
        # network know it. An address is no name that a foreign page can rebind.
        name, _, port = host.rpartition(":")
        return (
            self.any_address
            and port == str(self.server_address[1])
            and _is_ip_address(name.removeprefix("[").removesuffix("]"))
        )

    @contextlib.contextmanager
    def post_slot(self) -> Iterator[None]:
        """Count one image being received, waiting or worked on; 503 at once if MAX_POSTS are."""
        if not self.posts.acquire(blocking=False):
            raise _busy("the server is busy: too many images are on their way in; try again in a moment")
        try:
            yield
        finally:
            self.posts.release()

    @contextlib.contextmanager
    def work_slot(self) -> Iterator[None]:
        """Hold one of the work slots, waiting up to work_wait seconds; 503 if none frees."""
        if not self.work_slots.acquire(timeout=self.work_wait):
            raise _busy(
                f"the server is busy reading other images (at most {self.work_slot_count} "
                f"at once); try again in a moment"
            )
        try:
            yield
        finally:
            self.work_slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only I/O failures get here (a client that hung up, a connection cut at its
        # deadline): _Handler answers everything else itself. A client that went away
        # is no news; other failures get one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"deepnet serve: connection from {client_address[0]}: {exc!r}", file=sys.stderr)


def _busy(message: str) -> RequestError:
    return RequestError(503, message, headers={"Retry-After": str(RETRY_AFTER)})


def allowed_hosts(host: str, address: str, port: int) -> Set[str]:
    """The Host values that name a server started with --host ``host`` and listening on
    ``address`` (an IP address) and ``port``: each as NAME:PORT (bare too for port 80), IPv6
    addresses in brackets, lower case; on the loopback address also its usual names."""
    names = {host, address}
    if _is_loopback(address):
        names.update(LOOPBACK_NAMES)
    hosts: Set[str] = set()
    for name in names:
        name = _bracketed(name.lower())
        hosts.add(f"{name}:{port}")
        if port == 80:
            hosts.add(name)
    return hosts


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "deepnet"
    default_request_version = "HTTP/1.0"  # answers to unparsable requests get a status line too
    disable_nagle_algorithm = True  # headers and body are two writes: send each at once
    server: DigitServer

    # -- connection lifetime ----------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # type: ignore[misc]  # per server, not a class constant
        self._body_read = False
        super().setup()
        self._deadline = threading.Timer(self.server.connection_deadline, self._hang_up)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _hang_up(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_HEAD(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_PUT(self) -> None:
        self._answer(self._not_allowed)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _get(self, path: str) -> Answer:
        if path in self.server.page:
            body, content_type = self.server.page[path]
            return 200, body, content_type
        if path == "/filters":
            return 200, self.server.filters, "application/json"
        return self._not_allowed(path)

    def _post(self, path: str) -> Answer:
        if path not in ("/predict", "/inspect"):
            return self._not_allowed(path)
        self._check_origin()
        with self.server.post_slot():
            return self._work(path, self._read_image())

    def _work(self, path: str, data: bytes) -> Answer:
        with self.server.work_slot():  # everything that takes memory or time per image
            image = preprocess.mnist_input(data)
            del data
            [probabilities] = self.server.reader.probabilities(image[None])
            answer = {"label": int(np.argmax(probabilities)), "probabilities": [float(p) for p in probabilities]}
            if path == "/inspect":
                answer["input"] = _base64(np.round(image * 255))
                answer["layers"] = [
                    {"name": name, "shape": list(maps.shape), "pixels": _base64(_per_map_range(maps))}
                    for name, maps in self.server.reader.feature_maps(image)
                ]
            return 200, _json(answer), "application/json"

    # -- who may ask --------------------------------------------------------------------

    def _check_host(self) -> None:
        """421 for a Host that is not this server's: a foreign name resolving here."""
        host = self.headers.get("Host")
        if host is None or self.server.host_allowed(host):
            return
        if self.server.any_address:
            port = self.server.server_address[1]
            raise RequestError(
                421,
                f"expected Host to be an IP address of this machine or its name with port "
                f"{port} (deepnet serve listens on every address), got Host {host!r}; "
                f"to use another name, give it with --host",
            )
        raise RequestError(
            421,
            f"expected Host {self.server.url.removeprefix('http://')} (the address "
            f"deepnet serve listens on), got Host {host!r}; open {self.server.url}/",
        )

    def _check_origin(self) -> None:
        """403 for a POST sent by a page of another origin (programs send no Origin)."""
        origin = self.headers.get("Origin")
        if origin is None:
            return
        scheme, _, host = origin.strip().lower().partition("://")
        if not (scheme == "http" and "/" not in host and self.server.host_allowed(host)):
            raise RequestError(
                403, f"expected a request from the page at {self.server.url}, got one from Origin {origin!r}"
            )

    def _not_allowed(self, path: str) -> NoReturn:
        if path in self.server.page or path == "/filters":
            raise RequestError(405, f"{self.command} is not allowed on {path} (GET only)", "GET, HEAD")
        if path in ("/predict", "/inspect"):
            raise RequestError(405, f"{self.command} is not allowed on {path} (POST only)", "POST")
        raise RequestError(404, f"no such page: {path}")

    # -- the request body -------------------------------------------------------------

    def _read_image(self) -> bytes:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            raise RequestError(415, f"expected Content-Type image/png or image/jpeg, got {content_type or 'none'!r}")
        header = self.headers.get("Content-Length")
        if header is None:
            raise RequestError(411, "a Content-Length header is required")
        if not re.fullmatch(r"\s*[0-9]+\s*", header):
            raise RequestError(400, f"Content-Length must be a number of bytes, got {header!r}")
        length = int(header)
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

    def _drop_unread_body(self) -> None:
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

    def _answer(self, route: Callable[[str], Answer]) -> None:
        """Run ``route(path)`` -> (status, body, content type) and send what it gives,
        or the JSON error that it raised; never lets an exception end the server."""
        headers: Dict[str, str] = {}
        try:
            self._check_host()
            status, body, content_type = route(self.path.split("?", 1)[0])  # the path is only a key
        except (ConnectionError, TimeoutError):  # the client hung up: nobody to answer
            self.close_connection = True
            return
        except Exception as exc:
            status, message = _error_status(exc)
            if isinstance(exc, NonFiniteOutput):
                print(f"deepnet serve: {message}", file=sys.stderr)
            elif status == 500:
                traceback.print_exc(file=sys.stderr)
            headers.update(getattr(exc, "headers", None) or {})
            body, content_type = _error_body(message), "application/json"
        try:
            self.send_response(status)
            headers.update(
                {"Content-Type": content_type, "Content-Length": str(len(body)), "X-Content-Type-Options": "nosniff"}
            )
            if content_type.startswith("text/html"):
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except ConnectionError:  # the client hung up before its answer: nothing to do
            self.close_connection = True
            return
        self._drop_unread_body()

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """http.server's own errors (bad request line, unknown method...) as JSON too."""
        self.close_connection = True
        self.send_response(code, message)
        body = _error_body(message or self.responses.get(code, ("error",))[0])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


def _package_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def _error_status(exc: BaseException) -> Tuple[int, str]:
    """(status, message) of the answer to a request that raised ``exc``."""
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, preprocess.ImageTooLarge):
        return 413, image_error_message(exc)
    if isinstance(exc, preprocess.BlankImage):
        return 422, image_error_message(exc)
    if isinstance(exc, preprocess.ImageError):
        return 400, image_error_message(exc)
    if isinstance(exc, NonFiniteOutput):
        return 500, str(exc)
    if isinstance(exc, MemoryError):
        return 503, "the server ran out of memory reading this image; try a smaller one"
    return 500, "internal error (see the server's log)"


def _json(value: Any) -> bytes:
    """JSON bytes; ValueError (an answer of 500) rather than NaN or Infinity, which are no JSON."""
    return json.dumps(value, allow_nan=False).encode()


def _error_body(message: str) -> bytes:
    return _json({"error": message})


def _base64(values: ArrayLike) -> str:
    return base64.b64encode(np.asarray(values, dtype=np.uint8).tobytes()).decode("ascii")


def _per_map_range(maps: NDArray[Any]) -> NDArray[Any]:
    """Each map of (C, H, W) scaled from its own minimum to maximum onto 0..255."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.round(255 * (maps - low) / np.where(span > 0, span, 1))


def _filters_json(filters: Optional[NDArray[Any]]) -> bytes:
    if filters is None:
        return _json({"shape": [0, 0, 0], "pixels": ""})
    first_channel = filters[:, 0].astype(np.float64)
    first_channel[~np.isfinite(first_channel)] = 0  # a broken weight shows as grey
    largest = np.abs(first_channel).max() or 1.0
    pixels = np.round(127.5 + 127.5 * first_channel / largest)
    return _json({"shape": list(first_channel.shape), "pixels": _base64(pixels)})
