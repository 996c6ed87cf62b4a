"""How far each kernel's result is from an exact (float64) computation, per dtype and backend.

    python benches/analysis/kernel_errors.py

For every kernel at DeepConvNet's conv2 and conv6 input shapes (which are also the inputs of
its first and last max-pool), the inputs are drawn once, rounded to the dtype under test,
and the kernel runs on both backends in that dtype.  The yardstick is the NumPy reference
run in float64 on the very same (rounded) values, so the error shown is the kernel's own
rounding, not the inputs' (and the NumPy reference in float64 shows 0 by construction).
The last column compares the compiled kernel with the NumPy reference in the same dtype.
Errors are relative to the largest magnitude of the exact result: max|result - exact| /
max|exact|.  For scale: float16 keeps about 3 decimal digits (eps 9.8e-4), float32 about 7
(eps 1.2e-7), float64 about 16 (eps 2.2e-16).
"""

import numpy as np

import deepnet
from deepnet import functional as F

BATCH = 100
CASES = {  # name: (input shape, weight shape, pad)
    "conv2": ((BATCH, 16, 28, 28), (16, 16, 3, 3), 1),
    "conv6": ((BATCH, 64, 8, 8), (64, 64, 3, 3), 1),
}
DTYPES = ("float16", "float32", "float64")
BACKENDS = ("cython", "numpy")


def kernels(x, W, b, pad, dout, col, pool_dout):
    """name -> a function computing that kernel's results (a tuple of arrays) on the given inputs."""
    kh, kw = W.shape[2:]

    def pool_backward():
        _, argmax = F.max_pool2d(x, 2, 2, 2, 0)
        return (F.max_pool2d_backward(pool_dout, argmax, x.shape, 2, 2, 2, 0),)

    return {
        "im2col": lambda: (F.im2col(x, kh, kw, 1, pad),),
        "col2im": lambda: (F.col2im(col, x.shape, kh, kw, 1, pad),),
        "conv_forward": lambda: (F.conv2d(x, W, b, 1, pad),),
        "conv_backward dx, dW, db": lambda: F.conv2d_backward(dout, x, W, 1, pad),
        "max_pool_forward": lambda: (F.max_pool2d(x, 2, 2, 2, 0)[0],),
        "max_pool_backward": pool_backward,
        "relu_forward": lambda: (F.relu(x),),
    }


def inputs(rng, layer, dtype):
    """The kernels' inputs for one layer, rounded to dtype."""
    x_shape, w_shape, pad = CASES[layer]
    N, C, H, W_ = x_shape
    out_hw = (H + 2 * pad - 2) * (W_ + 2 * pad - 2)
    arrays = {
        "x": rng.standard_normal(x_shape),
        "W": np.sqrt(2.0 / np.prod(w_shape[1:])) * rng.standard_normal(w_shape),
        "b": 0.1 * rng.standard_normal(w_shape[0]),
        "dout": rng.standard_normal((N, w_shape[0], H + 2 * pad - 2, W_ + 2 * pad - 2)),
        "col": rng.standard_normal((N * out_hw, C * 9)),
        "pool_dout": rng.standard_normal((N, C, H // 2, W_ // 2)),
    }
    return {name: value.astype(dtype) for name, value in arrays.items()}, pad


def relative_error(results, exact):
    """The largest of max|r - e| / max|e| over the arrays of one kernel's result."""
    worst = 0.0
    for result, expected in zip(results, exact):
        expected = expected.astype(np.float64)
        scale = np.abs(expected).max() or 1.0
        worst = max(worst, float(np.abs(result.astype(np.float64) - expected).max() / scale))
    return worst


def main():
    rng = np.random.default_rng(0)
    print(
        f"deepnet {deepnet.__version__}, {deepnet.get_num_threads()} threads; "
        "relative error max|result - exact| / max|exact|\n"
    )
    columns = [f"{b} vs exact" for b in BACKENDS] + ["cython vs numpy"]
    header = f"| {'kernel':<26} | {'layer':<5} | {'dtype':<7} | " + " | ".join(f"{c:>15}" for c in columns) + " |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for layer in CASES:
        for dtype in DTYPES:
            arrays, pad = inputs(rng, layer, dtype)
            exact_arrays = {name: value.astype(np.float64) for name, value in arrays.items()}
            with deepnet.backend("numpy"):
                exact = {name: run() for name, run in kernels(pad=pad, **exact_arrays).items()}
            results = {}
            for backend in BACKENDS:
                with deepnet.backend(backend):
                    for name, run in kernels(pad=pad, **arrays).items():
                        results.setdefault(name, []).append(run())
            for name, (compiled, reference) in results.items():
                errors = [
                    relative_error(compiled, exact[name]),
                    relative_error(reference, exact[name]),
                    relative_error(compiled, reference),
                ]  # the kernel against the reference, same dtype
                print(f"| {name:<26} | {layer:<5} | {dtype:<7} | " + " | ".join(f"{e:15.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
