"""Load test of ``deepnet serve``: N requests from T client threads against 127.0.0.1.

Starts ``python -m deepnet serve --port 0`` in a subprocess, POSTs drawings of MNIST test
digits (280x280 PNGs, as the page's pad sends them) to /predict, checks every answer, and
prints the latency percentiles and the server's memory (resident set) before and after:

    python benches/models/load_serve.py [--requests 2000] [--threads 8] [--path /predict] [--kernel-threads 1]

Bounded in count and in time (--max-seconds), it stops by itself, and it talks only to
the loopback address. Needs Pillow (the [app] extra).
"""

import argparse
import http.client
import io
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepnet.datasets import load_mnist

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "data" / "book" / "deep_convnet_params.pkl"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--kernel-threads", type=int, default=1, help="the server's --threads")
    parser.add_argument("--path", default="/predict", choices=("/predict", "/inspect"))
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    args = parser.parse_args(argv)

    pictures = drawings(20)
    with tempfile.TemporaryFile("w+") as log:
        server, port = start_server(args.params, args.kernel_threads, log)
        try:
            rss_start = memory(server.pid)
            expected = [post(port, args.path, png)[1] for png in pictures]  # also the warm-up
            rss_warm = memory(server.pid)
            latencies, errors, wall = load(port, args.path, pictures, expected, args)
            rss_end = memory(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)

    ms = np.array(latencies) * 1000
    print(
        f"deepnet serve load test: {len(ms)} requests to {args.path} from {args.threads} threads, "
        f"{HOST}, {len(pictures)} different 280x280 PNG drawings, server --threads {args.kernel_threads}"
    )
    print()
    print("| requests | errors | wall s | req/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(ms)} | {errors} | {wall:.2f} | {len(ms) / wall:.0f} | {np.percentile(ms, 50):.2f} | "
        f"{np.percentile(ms, 90):.2f} | {np.percentile(ms, 99):.2f} | {ms.max():.2f} |"
    )
    print()
    print("| server memory | RSS MB | peak RSS MB |")
    print("|:---|---:|---:|")
    for when, (rss, peak) in [
        ("started", rss_start),
        ("after 20 warm-up requests", rss_warm),
        ("after the load", rss_end),
    ]:
        print(f"| {when} | {rss:.1f} | {peak:.1f} |")
    return 1 if errors else 0


def drawings(count):
    """MNIST test digits drawn black on white at 10x, as the pad of the page sends them."""
    (_, _), (x, _) = load_mnist(normalize=True, flatten=False, root=REPO / "data" / "mnist")
    pictures = []
    for digit in x[:count, 0]:
        image = Image.fromarray(np.round(255 * (1 - digit)).astype(np.uint8)).resize((280, 280))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures


def start_server(params, kernel_threads, log):
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deepnet",
            "serve",
            "--params",
            params,
            "--host",
            HOST,
            "--port",
            "0",
            "--threads",
            str(kernel_threads),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    banner = server.stdout.readline()
    found = re.match(r"deepnet serve: http://127\.0\.0\.1:(\d+)/", banner)
    if not found:
        server.kill()
        log.seek(0)
        sys.exit(f"load_serve.py: the server did not start: {banner}{log.read()}")
    return server, int(found.group(1))


def post(port, path, png):
    """(seconds, label) of one request on a fresh connection (the server closes each)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("POST", path, png, {"Content-Type": "image/png"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
    return elapsed, int(re.search(rb'"label": (\d)', body).group(1))


def load(port, path, pictures, expected, args):
    """Latencies of args.requests requests shared by args.threads threads; errors; wall time."""
    latencies, errors, lock = [], [0], threading.Lock()
    next_request = iter(range(args.requests))
    deadline = time.monotonic() + args.max_seconds

    def client():
        while time.monotonic() < deadline:
            with lock:
                i = next(next_request, None)
            if i is None:
                return
            try:
                seconds, label = post(port, path, pictures[i % len(pictures)])
                ok = label == expected[i % len(pictures)]
            except (OSError, RuntimeError):
                seconds, ok = None, False
            with lock:
                if seconds is not None:
                    latencies.append(seconds)
                errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(args.threads)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - start


def memory(pid):
    """(resident, peak resident) MB of a process, from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {key: int(value.split()[0]) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(.+)$", status, re.M)}
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


if __name__ == "__main__":
    sys.exit(main())
