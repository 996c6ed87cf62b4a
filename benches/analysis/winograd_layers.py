"""Winograd F(2x2,3x3) against the direct kernels, per DeepConvNet convolution, batch 100.

    python benches/analysis/winograd_layers.py [--dtype float32] [--threads N] [--rounds 15]

The measurement behind the Winograd rule in deepnet/_cpu.py (WINOGRAD_MIN_CHANNELS): each
layer's forward pass, and its backward pass (dx, dW, db in one kernel) with dx and dW each
by Winograd or direct, alternating round by round in this one process so that all see the
same machine; the table gives medians in ms and the passes the rule runs as Winograd.
"""

import argparse
import statistics
import time

import numpy as np

import deepnet
from deepnet.backends import cpu as _cpu
from deepnet.layers import Convolution, _pair
from deepnet.nets import DeepConvNet

# Which passes run as Winograd: (forward, dx, dW), set through the rule's thresholds.
VARIANTS = {
    "direct": (False, False, False),
    "Winograd": (True, True, True),
    "dx": (True, True, False),
    "dW": (True, False, True),
}


def set_rule(variant):
    """The rule's thresholds for a variant: every eligible layer (1 channel) or never."""
    for which, on in zip(("forward", "dx", "dW"), VARIANTS[variant]):
        _cpu.WINOGRAD_MIN_CHANNELS[which] = 1 if on else 10**9


def conv_layers_with_inputs(dtype, batch):
    """(layer, input) for each Convolution of DeepConvNet, its input of the layer's real shape."""
    net = DeepConvNet(dtype=dtype, seed=0)
    h = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32).astype(dtype)
    pairs = []
    for layer in net.layers:
        if isinstance(layer, Convolution):
            pairs.append((layer, h.copy()))
        h = layer.forward(h)
    return pairs


def time_layer(layer, x, rounds):
    """{variant: (forward ms, backward ms)} medians over rounds, the variants alternating."""
    times = {variant: ([], []) for variant in VARIANTS}
    rule = dict(_cpu.WINOGRAD_MIN_CHANNELS)
    try:
        for _ in range(rounds):
            for variant in VARIANTS:
                set_rule(variant)
                with deepnet.winograd("auto"):
                    start = time.perf_counter()
                    out = layer.forward(x)
                    middle = time.perf_counter()
                    layer.backward(np.ones_like(out))
                    end = time.perf_counter()
                times[variant][0].append(middle - start)
                times[variant][1].append(end - middle)
    finally:
        _cpu.WINOGRAD_MIN_CHANNELS.update(rule)
    return {variant: tuple(1e3 * statistics.median(t) for t in times[variant]) for variant in VARIANTS}


def describe(layer, x):
    FN, C = layer.W.shape[:2]
    return f"{C}->{FN} {x.shape[2]}x{x.shape[3]} pad {_pair(layer.pad)[0]}"


def main():
    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        deepnet.set_num_threads(args.threads)
    print(
        f"{args.dtype}, batch 100, {deepnet.get_num_threads()} threads, "
        f"vector width {deepnet.config()['vector width']}, medians of {args.rounds} rounds (ms)\n"
    )
    print(
        "| layer | fwd Winograd | fwd direct | bwd direct | bwd, dx Winograd | bwd, dW Winograd "
        "| bwd, both Winograd | Winograd under auto |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for layer, x in conv_layers_with_inputs(np.dtype(args.dtype), 100):
        t = time_layer(layer, x, args.rounds)
        with deepnet.winograd("auto"):
            picks = [
                which
                for which in ("forward", "dx", "dW")
                if _cpu.uses_winograd(layer.W.shape, _pair(layer.stride), _pair(layer.pad), which)
            ]
        print(
            f"| {describe(layer, x)} | {t['Winograd'][0]:.2f} | {t['direct'][0]:.2f} | {t['direct'][1]:.2f} "
            f"| {t['dx'][1]:.2f} | {t['dW'][1]:.2f} | {t['Winograd'][1]:.2f} | {' + '.join(picks) or 'direct'} |"
        )


if __name__ == "__main__":
    main()
