"""Per-layer time table of one DeepConvNet training step (forward + backward), batch 100.

    python benches/analysis/profile_layers.py [--dtype float32] [--threads N] [--reps 10] [--backend cython]

Each layer's forward and backward are timed separately over ``--reps`` steps; the table
shows the fastest repetition (the least disturbed by other processes) and each layer's
share, so it says where a training step's time goes.  Timed one by one, a Convolution and
the Pooling after it are two passes each way; the last row, ``net.gradient`` (what
training runs), fuses them, so it is faster than the sum of the rows.
"""

import argparse
import time

import numpy as np

import deepnet
from deepnet.layers import Dropout
from deepnet.nets import DeepConvNet


def profile(dtype, reps):
    net = DeepConvNet(dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 28, 28), dtype=np.float32).astype(dtype)
    t = rng.integers(0, 10, size=100)
    forward = [[] for _ in net.layers]
    backward = [[] for _ in net.layers]
    for _ in range(reps):
        h = x
        for i, layer in enumerate(net.layers):
            start = time.perf_counter()
            h = layer.forward(h, True) if isinstance(layer, Dropout) else layer.forward(h)
            forward[i].append(time.perf_counter() - start)
        net.last_layer.forward(h, t)
        grad = net.last_layer.backward(1)
        for i in reversed(range(len(net.layers))):
            start = time.perf_counter()
            # as in training (Sequential.backward(..., input_gradient=False)): no dx for the input
            grad = net.layers[i].backward(grad, input_gradient=False) if i == 0 else net.layers[i].backward(grad)
            backward[i].append(time.perf_counter() - start)
    fused = []
    for _ in range(reps):
        start = time.perf_counter()
        net.gradient(x, t)
        fused.append(time.perf_counter() - start)
    return net.layers, [min(f) * 1e3 for f in forward], [min(b) * 1e3 for b in backward], min(fused) * 1e3


def describe(layer):
    name = type(layer).__name__
    if name == "Convolution":
        FN, C, kh, kw = layer.W.shape
        return f"Convolution {C}->{FN} {kh}x{kw} pad {layer.pad}" + (" +ReLU" if layer.relu else "")
    return name


def main():
    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64", "bfloat16"))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--backend", default="cython", choices=("cython", "numpy"))
    args = parser.parse_args()
    deepnet.set_backend(args.backend)
    if args.threads:
        deepnet.set_num_threads(args.threads)
    if args.dtype == "bfloat16":
        from deepnet._dtypes import require_bfloat16

        dtype = require_bfloat16()
    else:
        dtype = np.dtype(args.dtype)
    layers, forward, backward, fused = profile(dtype, args.reps)
    total = sum(forward) + sum(backward)
    print(
        f"DeepConvNet training step, batch 100, {args.dtype}, backend {args.backend}, "
        f"{deepnet.get_num_threads()} threads, fastest of {args.reps}"
    )
    print(f"| {'layer':34s} | forward ms | backward ms | share |")
    print(f"|{'-' * 36}|-----------:|------------:|------:|")
    for layer, f, b in zip(layers, forward, backward):
        print(f"| {describe(layer):34s} | {f:10.2f} | {b:11.2f} | {100 * (f + b) / total:4.1f}% |")
    print(f"| {'total':34s} | {sum(forward):10.2f} | {sum(backward):11.2f} | {1e5 / total:.0f} img/s |")
    print(f"| {'net.gradient (pairs fused)':34s} | {'':>10s} | {'':>11s} | {1e5 / fused:.0f} img/s |")


if __name__ == "__main__":
    main()
