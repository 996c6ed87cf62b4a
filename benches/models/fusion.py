"""DeepConvNet inference with convolution + pooling fused (Sequential's inference pass) and
layer by layer (each layer's forward), batch 100.

    python benches/models/fusion.py [--dtype float32] [--threads N] [--rounds 30]

The measurement behind deepnet.backends.cpu.conv_pool_forward's choice of where to fuse:
the two passes alternate in this one process (each first every other round), so that both see the
same machine;
the answers are checked equal first.  Prints the medians in images/s and their ratio.
"""

import argparse
import statistics
import time

import numpy as np

import deepnet
from deepnet.nets import DeepConvNet


def main():
    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    if args.threads:
        deepnet.set_num_threads(args.threads)
    net = DeepConvNet(dtype=args.dtype, seed=0)
    x = np.random.default_rng(0).random((args.batch, 1, 28, 28), dtype=np.float32).astype(args.dtype)

    def layer_by_layer():
        h = x
        for layer in net.layers:
            h = layer.forward(h, False)
        return h

    def fused():
        return net.forward(x, False)

    if not np.array_equal(fused(), layer_by_layer()):
        raise SystemExit("fusion.py: the fused pass differs from the layer-by-layer one")
    times = {"fused": [], "layer by layer": []}
    passes = [("fused", fused), ("layer by layer", layer_by_layer)]
    for round_ in range(args.rounds):
        for name, run in passes if round_ % 2 else passes[::-1]:  # each goes first every other round
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    speed = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(f"{args.dtype}, batch {args.batch}, {deepnet.get_num_threads()} threads, medians of {args.rounds} rounds\n")
    print("| inference | img/s |")
    print("|---|---:|")
    for name, value in speed.items():
        print(f"| {name} | {value:.0f} |")
    print(f"\nfused / layer by layer: {speed['fused'] / speed['layer by layer']:.2f}x")


if __name__ == "__main__":
    main()
