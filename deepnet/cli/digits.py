"""``deepnet predict`` and ``deepnet serve``, the commands of deepnet.app: your own digits from files or a browser.

Pillow (the ``[app]`` extra) is imported only when a command runs.

``deepnet predict`` reads every file it can: each one it cannot (not an image, blank,
over MAX_IMAGE_BYTES, unreadable) gets a line on stderr naming it, the others their
results on stdout, and the exit code is then 1. Exit codes: 0 every file read; 1 some
file unreadable, or a network whose output is not finite, or another error of the
input; 2 a usage error (an option, a missing file, no Pillow).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
from typing import Any, List, Tuple, cast

import numpy as np

from .options import CommandError, existing_file, fail, positive_int

__all__ = ["add_predict", "add_serve", "run_predict", "run_serve"]

PREDICT_BATCH = 64  # images run through the network at once: bounds predict's memory


def add_predict(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet predict`` to the commands."""
    p = commands.add_parser("predict", help="read digits in your own PNG or JPEG files")
    p.add_argument(
        "--params",
        required=True,
        type=existing_file,
        metavar="FILE",
        help="the trained network: a saved model, an .npz from 'deepnet train' or the book's .pkl",
    )
    p.add_argument("--json", action="store_true", help='print a JSON list of {"file", "label", "probabilities"}')
    p.add_argument("images", nargs="+", type=existing_file, metavar="IMAGE")
    p.set_defaults(
        command=run_predict,
        memory_hint=f"not enough to run the network of --params on up to {PREDICT_BATCH} images at once; "
        f"close other programs or give fewer IMAGE files",
    )


def add_serve(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet serve`` to the commands."""
    p = commands.add_parser("serve", help="a local web page: draw a digit and watch the network read it")
    p.add_argument(
        "--params",
        required=True,
        type=existing_file,
        metavar="FILE",
        help="the trained network: a saved model, an .npz from 'deepnet train' or the book's .pkl",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default %(default)s; 0 picks a free one)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="threads for the kernels (default 1: the fastest for one image at a time)",
    )
    p.set_defaults(command=run_serve, memory_hint="not enough for the network of --params; close other programs")


def _port(text: str) -> int:
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def run_predict(args: argparse.Namespace) -> int:
    """Print the digits read in each readable file; report each other one on stderr.
    Returns the exit code: 1 if any file could not be read, else 0."""
    from ..app import inference

    _require_pillow()
    paths: List[str] = []
    inputs: List[np.ndarray[Any, Any]] = []
    unread = 0
    for path in args.images:
        try:
            inputs.append(_mnist_input_of_file(path))
            paths.append(path)
        except _FileError as exc:
            unread += 1
            fail(args, f"error: {path}: {exc}", 1)
    if not inputs:
        return 1
    reader = inference.DigitReader(inference.load_for_inference(args.params))
    results: List[Tuple[str, np.ndarray[Any, Any]]] = []
    for start in range(0, len(inputs), PREDICT_BATCH):
        batch = np.stack(inputs[start : start + PREDICT_BATCH])
        try:
            probabilities = reader.probabilities(batch)
        except inference.NonFiniteOutput as exc:
            if len(exc.rows) == len(batch) and not results:  # every output so far: the model is broken
                raise ValueError(f"--params {args.params}: {exc}") from None
            probabilities = exc.probabilities
        results.extend(zip(paths[start : start + PREDICT_BATCH], probabilities))
    finite: List[Tuple[str, np.ndarray[Any, Any]]] = []
    for path, p in results:
        if np.isfinite(p).all():
            finite.append((path, p))
        else:
            unread += 1
            fail(
                args,
                f"error: {path}: the network's output for this image is not finite; "
                f"the model in --params {args.params} is broken",
                1,
            )
    if args.json:
        print(
            json.dumps(
                [
                    {"file": path, "label": int(np.argmax(p)), "probabilities": [float(v) for v in p]}
                    for path, p in finite
                ],
                indent=2,
                allow_nan=False,
            )
        )
    else:
        for path, p in finite:
            top3 = np.argsort(p)[::-1][:3]
            print(f"{path}: " + ", ".join(f"{digit} {100 * p[digit]:.2f}%" for digit in top3))
    return 1 if unread else 0


class _FileError(Exception):
    """A file that predict cannot read as a digit: the message says why, in the user's words."""


def _mnist_input_of_file(path: str) -> np.ndarray[Any, Any]:
    """The MNIST input of the image in ``path``, or _FileError. The file's size is checked
    before it is read, and no more than the limit (MAX_IMAGE_BYTES, the server's) plus one
    byte is read, so a huge file costs nothing."""
    from ..app import preprocess
    from ..app.inference import MAX_IMAGE_BYTES, image_error_message

    too_large = "the file is {:,} bytes, more than the {:,} accepted for an image (the same limit as deepnet serve's)"
    try:
        size = os.stat(path).st_size
        if size > MAX_IMAGE_BYTES:
            raise _FileError(too_large.format(size, MAX_IMAGE_BYTES))
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise _FileError(f"cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_IMAGE_BYTES:  # it grew since
        raise _FileError(too_large.format(max(len(data), size), MAX_IMAGE_BYTES))
    if not data:
        raise _FileError("the file is empty: expected a PNG or JPEG image")
    try:
        return preprocess.mnist_input(data)
    except preprocess.ImageError as exc:
        raise _FileError(image_error_message(exc)) from None
    except MemoryError:
        raise _FileError("out of memory reading this image") from None


def run_serve(args: argparse.Namespace) -> None:
    """Serve the page and its API until Ctrl+C."""
    import deepnet

    from ..app.inference import DigitReader, load_for_inference
    from ..app.server import DigitServer

    _require_pillow()
    # Each request is one image: on one thread a pass takes 0.6 ms, on two 1.1 ms, and on a
    # busy machine far longer, since every parallel region waits for a descheduled thread.
    deepnet.set_num_threads(args.threads)
    reader = DigitReader(load_for_inference(args.params))
    try:
        server = DigitServer(reader, args.host, args.port)
    except OSError as exc:
        raise CommandError(_listen_error(exc, args.host, args.port)) from None
    host, port = cast(Tuple[str, int], server.server_address[:2])  # an AF_INET(6) address
    print(f"deepnet serve: http://{_url_host(host)}:{port}/ (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"deepnet serve: note: listening on {args.host}, reachable from other machines", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _require_pillow() -> None:
    from ..app.preprocess import require_pillow

    try:
        require_pillow()
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def _listen_error(exc: OSError, host: str, port: int) -> str:
    """What a failure to listen on host:port means, and which option to change."""
    if isinstance(exc, socket.gaierror):
        return f"--host {host}: no such address or name ({exc.strerror or exc}); the default is 127.0.0.1"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; choose another with --port (0 picks a free one)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose another with --host (default 127.0.0.1)"
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs administrator rights; choose one above 1023 with --port"
    return f"cannot listen on {host} port {port} ({exc.strerror or exc})"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
