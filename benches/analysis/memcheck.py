"""Run the convolution kernels on awkward geometries, for a memory checker to watch.

    valgrind -q --error-exitcode=9 --errors-for-leak-kinds=none \\
        $(python -c "import sys; print(sys.executable)") benches/analysis/memcheck.py

(the real interpreter, not a pyenv shim, or valgrind only watches the shim).  Valgrind
then reports any read or write out of bounds in the kernels (its reports from the
dynamic loader and Python's own start-up are not ours).  Odd sizes, strides, padding
as large as the kernel and larger (also wider than the output row), one pixel, 1xW images,
empty batches, no channels or no filters, filter counts around the GEMM tile's width
(16 columns in float32, 8 in float64), fused ReLU, both paths of dx, all three dtypes;
the results are checked against the reference.  The AddressSanitizer job of .ci/run runs it
too.
"""

import numpy as np

from deepnet import functional as F
from deepnet import reference as R

# (x shape, filters, kernel, stride, pad)
CASES = [
    ((2, 16, 28, 28), 16, (3, 3), (1, 1), (1, 1)),
    ((3, 9, 7, 5), 17, (3, 2), (1, 1), (0, 1)),
    ((2, 20, 6, 9), 33, (2, 3), (1, 1), (1, 2)),
    ((2, 20, 6, 9), 15, (2, 3), (1, 1), (2, 0)),
    ((2, 18, 9, 11), 24, (3, 3), (2, 1), (1, 1)),
    ((1, 3, 5, 4), 5, (7, 6), (3, 2), (3, 3)),
    ((1, 1, 1, 1), 1, (1, 1), (1, 1), (0, 0)),
    ((1, 2, 3, 3), 3, (1, 1), (1, 1), (2, 2)),  # pad 2 > kernel 1: windows of padding only
    ((2, 9, 4, 3), 9, (2, 2), (1, 1), (2, 2)),  # pad = kernel: col2im for dx
    ((2, 9, 1, 1), 4, (5, 5), (1, 1), (4, 2)),  # left padding wider than the output row
    ((3, 2, 1, 7), 5, (1, 3), (1, 2), (0, 3)),  # 1xW images
    ((0, 3, 5, 4), 16, (3, 3), (1, 1), (1, 1)),  # an empty batch
    ((2, 0, 5, 4), 3, (3, 2), (2, 1), (1, 0)),  # no channels: the bias
    ((2, 17, 5, 4), 0, (3, 3), (1, 1), (1, 1)),  # no filters
]
TOLERANCE = {np.float16: 1e-2, np.float32: 1e-4, np.float64: 1e-10}


def main():
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64):
        for shape, filters, kernel, stride, pad in CASES:
            x = rng.standard_normal(shape).astype(dtype)
            W = rng.standard_normal((filters, shape[1]) + kernel).astype(dtype)
            b = rng.standard_normal(filters).astype(dtype)
            y = F.conv2d(x, W, b, stride, pad, relu=True)
            dout = rng.standard_normal(y.shape).astype(dtype)
            grads = F.conv2d_backward(dout, x, W, stride, pad, relu_out=y)
            y_ref = np.maximum(R.conv_forward(x, W, b, stride, pad), 0)
            grads_ref = R.conv_backward(dout * (y_ref > 0), x, W, stride, pad)
            for got, expected in zip((y, *grads), (y_ref, *grads_ref)):
                scale = max(1.0, float(np.abs(expected.astype(np.float64)).max(initial=0)))
                error = np.abs(got.astype(np.float64) - expected).max(initial=0) / scale
                assert error <= TOLERANCE[dtype], (dtype, shape, kernel, stride, pad, error)
    print(f"{3 * len(CASES)} convolutions forward and backward, all equal to the reference")


if __name__ == "__main__":
    main()
