"""The binary convolution (bit-packed XNOR-popcount, deepnet._kernels.binary) next to deepnet's float32
convolution of the same shape: 64 channels in and out, 3x3, pad 1, batch 100, at 7x7 and 14x14.

Each benchmark group, ``binary_conv[64ch 14x14]``, holds the float32 Convolution layer's
inference forward pass (``float32``), the BinaryConvolution layer's (``binary-layer``: packs the
input, the filters staying packed while its weights are unchanged, then the kernel) and the kernel alone on packed input for each popcount
path this CPU runs (``bits-avx2``...).  Values are checked in tests/test_binary*.py.

    pytest benches/micro/test_bench_binary.py --benchmark-only --benchmark-group-by=group

Run as a script it prints one-thread CPU times (time.process_time, best of --repeat runs of
--number calls), and with --model a trained binary model's weight sizes and its MNIST test
accuracy through the bit kernel and through the float path:

    PYTHONPATH=. python benches/micro/test_bench_binary.py [--model bnn.npz --data DIR]
"""

import argparse
import time

import numpy as np
import pytest

import deepnet
from deepnet.layers import BinaryConvolution, Convolution

BATCH = 100
SIZES = (7, 14)
CHANNELS = 64


def _layers(rng, size):
    x = rng.standard_normal((BATCH, CHANNELS, size, size)).astype(np.float32)
    W = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * np.sqrt(2 / (9 * CHANNELS))).astype(np.float32)
    b = (0.1 * rng.standard_normal(CHANNELS)).astype(np.float32)
    return x, Convolution(W, b, 1, 1).eval(), BinaryConvolution(W.copy(), b.copy(), 1, 1).eval()


def _kernels():
    if not deepnet.kernels_compiled():
        pytest.skip("deepnet's compiled kernels are not built")
    from deepnet._kernels import binary

    return binary


def _cases():
    return [(size, kind) for size in SIZES for kind in ("float32", "binary-layer", "bits")]


def _packed_call(binary, x, layer, impl, threads):
    """The kernel alone on packed input and filters: a call with no arguments."""
    packed, weights = binary.pack_images(x), binary.pack_conv_weights(layer.W)
    out = np.empty((BATCH, CHANNELS) + x.shape[2:], np.float32)
    N, C, H, W = x.shape
    args = (packed, C, H, W, weights, CHANNELS, 3, 3, 1, 1, 1, 1, layer.b, out, impl, threads)
    return lambda: binary.conv_bits(*args) or out


@pytest.mark.parametrize("size, kind", _cases(), ids=[f"{s}x{s}-{k}" for s, k in _cases()])
def test_binary_conv(benchmark, rng, size, kind):
    binary = _kernels()
    x, conv, bconv = _layers(rng, size)
    benchmark.group = f"binary_conv[{CHANNELS}ch {size}x{size}]"
    benchmark.extra_info.update(kind=kind, threads=deepnet.get_num_threads())
    if kind == "float32":
        out = benchmark(conv.forward, x)
    elif kind == "binary-layer":
        out = benchmark(bconv.forward, x)
    else:
        for impl in binary.implementations():
            _packed_call(binary, x, bconv, impl, deepnet.get_num_threads())()
        out = benchmark(_packed_call(binary, x, bconv, "auto", deepnet.get_num_threads()))
    assert out.shape == (BATCH, CHANNELS, size, size) and out.dtype == np.float32


def _best_cpu_seconds(function, number, repeat):
    """The least process CPU time of ``repeat`` runs of ``number`` calls, per call."""
    function()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            function()
        best = min(best, (time.process_time() - start) / number)
    return best


def speed_table(number, repeat):
    from deepnet._kernels import binary

    rng = np.random.default_rng(0)
    print(f"one thread, CPU seconds per call (time.process_time, best of {repeat} x {number}), batch {BATCH}")
    print(f"{'layer':<24}{'float32 conv':>14}{'binary layer':>14}{'speed-up':>10}  kernel alone per path")
    for size in SIZES:
        x, conv, bconv = _layers(rng, size)
        float_s = _best_cpu_seconds(lambda: conv.forward(x), number, repeat)
        bin_s = _best_cpu_seconds(lambda: bconv.forward(x), number, repeat)
        paths = {
            impl: _best_cpu_seconds(_packed_call(binary, x, bconv, impl, 1), number, repeat)
            for impl in binary.implementations()
        }
        path_text = ", ".join(f"{impl} {s * 1e3:.2f} ms" for impl, s in paths.items())
        name = f"{CHANNELS}->{CHANNELS} 3x3 {size}x{size}"
        print(f"{name:<24}{float_s * 1e3:>11.2f} ms{bin_s * 1e3:>11.2f} ms{float_s / bin_s:>9.1f}x  {path_text}")


def model_report(path, data):
    from deepnet._kernels import binary
    from deepnet.datasets import load_mnist
    from deepnet.models import load_model
    from deepnet.nn.binary import BinaryAffine, BinaryConvolution, bit_inference

    model = load_model(path)
    layers = [layer for _, layer in model.named_layers() if isinstance(layer, (BinaryConvolution, BinaryAffine))]
    weights = sum(layer.W.size for layer in layers)
    packed = sum(
        (binary.pack_conv_weights if isinstance(layer, BinaryConvolution) else binary.pack_affine_weights)(
            layer.W
        ).nbytes
        for layer in layers
    )
    print(
        f"binary weights: {weights} signs = {(weights + 7) // 8} bytes as bits "
        f"({packed} bytes in the kernel's padded layout) vs {4 * weights} bytes as float32"
    )
    (_, _), (x_test, t_test) = load_mnist(normalize=True, flatten=False, root=data)
    model.eval()
    bits = np.concatenate([model.predict(x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
    with bit_inference(False):
        floats = np.concatenate([model.predict(x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
    labels = bits.argmax(axis=1)
    print(f"test accuracy through the bit kernel: {np.mean(labels == t_test):.4f} ({len(t_test)} images)")
    print(
        f"float STE forward (bit_inference(False)): same predictions {np.array_equal(labels, floats.argmax(axis=1))}, "
        f"same output bits {np.array_equal(bits, floats)}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=5, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (the best is kept)")
    parser.add_argument("--model", help="a trained binary model file: report its sizes and test accuracy")
    parser.add_argument("--data", default="data/mnist", help="the MNIST directory (with --model)")
    args = parser.parse_args()
    deepnet.set_num_threads(1)
    if args.model:
        model_report(args.model, args.data)
    speed_table(args.number, args.repeat)


if __name__ == "__main__":
    main()
