"""``deepnet predict`` and ``deepnet serve``: added to the command line by cli.build_parser.

Pillow (the ``[app]`` extra) is imported only when a command runs.
"""
import argparse
import json

import numpy as np

from .. import cli

__all__ = ["add_predict", "add_serve", "run_predict", "run_serve"]


def add_predict(commands):
    p = commands.add_parser("predict", help="read digits in your own PNG or JPEG files")
    p.add_argument("--params", required=True, type=cli._existing_file, metavar="FILE",
                   help="the trained network: a saved model, an .npz from 'deepnet train' or the book's .pkl")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"file", "label", "probabilities"}')
    p.add_argument("images", nargs="+", type=cli._existing_file, metavar="IMAGE")
    p.set_defaults(command=run_predict)


def add_serve(commands):
    p = commands.add_parser("serve", help="a local web page: draw a digit and watch the network read it")
    p.add_argument("--params", required=True, type=cli._existing_file, metavar="FILE",
                   help="the trained network: a saved model, an .npz from 'deepnet train' or the book's .pkl")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default %(default)s; 0 picks a free one)")
    p.add_argument("--threads", type=cli._positive_int, default=1, metavar="N",
                   help="threads for the kernels (default 1: the fastest for one image at a time)")
    p.set_defaults(command=run_serve)


def _port(text):
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def run_predict(args):
    from . import preprocess
    from .inference import DigitReader, load_for_inference

    _require_pillow()
    inputs = []
    for path in args.images:
        with open(path, "rb") as f:
            data = f.read()
        try:
            inputs.append(preprocess.mnist_input(data))
        except preprocess.ImageError as exc:
            raise cli.CommandError(f"{path}: {exc}") from None
    reader = DigitReader(load_for_inference(args.params))
    probabilities = reader.probabilities(np.stack(inputs))
    if args.json:
        print(json.dumps([{"file": path, "label": int(np.argmax(p)), "probabilities": [float(v) for v in p]}
                          for path, p in zip(args.images, probabilities)], indent=2))
        return
    for path, p in zip(args.images, probabilities):
        top3 = np.argsort(p)[::-1][:3]
        print(f"{path}: " + ", ".join(f"{digit} {100 * p[digit]:.2f}%" for digit in top3))


def run_serve(args):
    import deepnet

    from .inference import DigitReader, load_for_inference
    from .server import DigitServer

    _require_pillow()
    # Each request is one image: on one thread a pass takes 0.6 ms, on two 1.1 ms, and on a
    # busy machine far longer, since every parallel region waits for a descheduled thread.
    deepnet.set_num_threads(args.threads)
    server = DigitServer(DigitReader(load_for_inference(args.params)), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"deepnet serve: http://{_url_host(host)}:{port}/ (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"deepnet serve: note: listening on {args.host}, reachable from other machines", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _require_pillow():
    from .preprocess import require_pillow

    try:
        require_pillow()
    except ImportError as exc:
        raise cli.CommandError(str(exc)) from None


def _url_host(host):
    return f"[{host}]" if ":" in host else host
