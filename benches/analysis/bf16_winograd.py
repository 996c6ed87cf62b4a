"""Whether Winograd F(2x2, 3x3) pays for bfloat16 convolutions: its error and its GEMM time.

    python benches/analysis/bf16_winograd.py [--seed 0] [--threads 1] [--repeat 7]

deepnet's bfloat16 convolution multiplies bfloat16 windows by bfloat16 filters in
vdpbf16ps's dot products (deepnet.backends.bf16): the products are exact, the sums float32,
and the output's one rounding to bfloat16 is most of its error.  Winograd would feed the
dot products its transformed tiles V = B^T d B and filters U = G g G^T instead, and those
must be rounded to bfloat16 first: two more roundings, before a sum and an output
transform that cancel terms.  This script measures both sides of the trade:

- error: the RMS difference from the convolution of the same bfloat16 numbers in float64,
  over the RMS of that exact result (benches/analysis/winograd_error.py's metric), for
  DeepConvNet's 3x3 layers with 16+ channels (batch 2).  "direct" is deepnet's bfloat16
  convolution; "winograd" an emulation in NumPy: V from the input in float32, U from the
  filters in float64, both rounded to bfloat16, the channel sums in float64 (more exact than
  the kernel's float32 sums: a lower bound on its error), the output transform in float32,
  the result rounded to bfloat16.  deepnet's float32 Winograd is held to 2x its direct
  kernel's error (tests/test_winograd.py); the same bound is applied here.
- time: the dot GEMMs alone at batch 100 on this CPU's dot-product path: the direct
  convolution's (filters times pairs of taps, C*9 long) against Winograd's 16 GEMMs (U times
  V, C long), each on deepnet._kernels.bf16.dot_gemm, best of --repeat.  Winograd's
  transforms and roundings are not timed, so its column is a bound on what it could save.
"""

import argparse
import time

import numpy as np

import deepnet
from deepnet import functional as F
from deepnet._dtypes import require_bfloat16

# DeepConvNet's 3x3 layers with 16+ input channels: (channels, filters, size, pad).
LAYERS = [(16, 16, 28, 1), (16, 32, 14, 1), (32, 32, 14, 2), (32, 64, 7, 1), (64, 64, 8, 1)]

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def exact_convolution(x, W, pad):
    """The correlation of float64 copies of x and W (stride 1)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, H, Wd = x.shape
    OH, OW = H - 2, Wd - 2
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # N C OH OW 3 3
    return np.einsum("ncyxij,fcij->nfyx", windows, W.astype(np.float64))[:, :, :OH, :OW]


def winograd_bf16(x, W, pad):
    """F(2x2, 3x3) with V and U rounded to bfloat16 (see the module's docstring)."""
    bf16 = require_bfloat16()
    N, C, H, Wd = x.shape
    OH, OW = H + 2 * pad - 2, Wd + 2 * pad - 2
    TH, TW = -(-OH // 2), -(-OW // 2)
    padded = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), np.float32)
    padded[:, :, pad : pad + H, pad : pad + Wd] = x.astype(np.float32)
    tiles = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(2, 3))[:, :, ::2, ::2]  # N C TH TW 4 4
    b_t = B_T.astype(np.float32)
    V = np.einsum("ai,nctwij,bj->nctwab", b_t, tiles, b_t).astype(bf16).astype(np.float64)
    U = np.einsum("ai,fcij,bj->fcab", G, W.astype(np.float64), G).astype(bf16).astype(np.float64)
    M = np.einsum("nctwab,fcab->nftwab", V, U).astype(np.float32)
    a_t = A_T.astype(np.float32)
    Y = np.einsum("ia,nftwab,jb->nftwij", a_t, M, a_t)  # N F TH TW 2 2
    Y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, W.shape[0], 2 * TH, 2 * TW)[:, :, :OH, :OW]
    return Y.astype(bf16)


def relative_rms(result, exact):
    return float(np.sqrt(np.mean((result.astype(np.float64) - exact) ** 2)) / np.sqrt(np.mean(exact**2)))


def errors(rng):
    bf16 = require_bfloat16()
    rows = []
    for C, FN, size, pad in LAYERS:
        x = np.maximum(rng.standard_normal((2, C, size, size)), 0).astype(bf16)  # ReLU'd activations
        W = (rng.standard_normal((FN, C, 3, 3)) * np.sqrt(2 / (9 * C))).astype(bf16)
        exact = exact_convolution(x, W, pad)
        direct = relative_rms(F.conv2d(x, W, None, 1, pad), exact)
        winograd = relative_rms(winograd_bf16(x, W, pad), exact)
        rows.append((f"{C}->{FN} {size}x{size} pad {pad}", direct, winograd))
    return rows


def best_time(call, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_times(rng, threads, repeat, batch=100):
    from deepnet._kernels import bf16 as kernels

    def pairs(shape):  # bfloat16 pairs of normal-sized numbers
        return (rng.integers(0x3E00, 0x4000, shape + (2,), dtype=np.uint16)).view(np.uint32)[..., 0]

    rows = []
    for C, FN, size, pad in LAYERS:
        OH = size + 2 * pad - 2
        M, T = batch * OH * OH, batch * (-(-OH // 2)) ** 2
        filters, windows = pairs((FN, (9 * C + 1) // 2)), pairs(((9 * C + 1) // 2, M))
        out = np.zeros((FN, M), np.float32)
        direct = best_time(lambda: kernels.dot_gemm(filters, windows, out, threads), repeat)
        U, V = pairs((16, FN, C // 2)), pairs((16, C // 2, T))
        sums = np.zeros((16, FN, T), np.float32)
        winograd = best_time(lambda: [kernels.dot_gemm(U[i], V[i], sums[i], threads) for i in range(16)], repeat)
        rows.append((f"{C}->{FN} {size}x{size} pad {pad}", direct * 1e3, winograd * 1e3))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    if not deepnet.kernels_compiled():
        raise SystemExit("bf16_winograd.py: deepnet's compiled kernels are not built")
    from deepnet._kernels import bf16 as kernels

    rng = np.random.default_rng(args.seed)
    print("| layer | direct error | Winograd error | ratio |")
    print("|---|---:|---:|---:|")
    for name, direct, winograd in errors(rng):
        print(f"| {name} | {direct:.2e} | {winograd:.2e} | {winograd / direct:.2f}x |")
    print(f"\ndot GEMMs at batch 100 ({kernels.BEST} path, {args.threads} thread(s), best of {args.repeat}):\n")
    print("| layer | direct ms | Winograd's 16 GEMMs ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, direct, winograd in gemm_times(rng, args.threads, args.repeat):
        print(f"| {name} | {direct:.2f} | {winograd:.2f} | {direct / winograd:.2f}x |")


if __name__ == "__main__":
    main()
