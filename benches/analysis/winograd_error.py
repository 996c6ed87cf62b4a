"""Why deepnet runs Winograd F(2x2, 3x3) and not F(4x4, 3x3): their float32 error.

    python benches/analysis/winograd_error.py [--seed 0]

F(m x m, 3x3) computes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
multiplies instead of 9 m^2: 2.25x fewer for m = 2, 4x fewer for m = 4.  Its transforms
are built here from interpolation points by Cook-Toom (A^T and G from the points, B^T
solved from the identity that makes the tile a correlation), and the whole convolution is
emulated in NumPy in float32 as the kernels compute it: the input transform and the
products in float32, each transform in two steps (columns, then rows), the filter
transform in float64 then rounded (as conv.winograd_filters does), the channel sum in
order by fused multiply-adds, the output transform in float32.  Its F(2x2) gives the
error of deepnet's F(2x2) kernel to within a few percent (benches/test_scripts.py).

Each error is the RMS difference from the convolution of the same float32 numbers in
float64, over the RMS of that exact result (tests/test_winograd.py's metric), for
DeepConvNet's five 3x3 layers with 16+ channels.  The table gives each error over the
direct kernel's (deepnet, Winograd "never").  The issue's bound is 2x: deepnet's own
F(2x2) kernel ("always") and its emulation here should sit near 1x; F(4x4) with any of
the point sets tried lands well above 2x, which is why the kernels stop at F(2x2).
"""

import argparse
from fractions import Fraction

import numpy as np

import deepnet
from deepnet import functional as F
from deepnet import reference as R

# DeepConvNet's 3x3 layers with 16+ channels: (input shape, filters, pad), as in
# tests/test_winograd.py's first five geometries.
GEOMETRIES = [
    ((3, 16, 28, 28), 16, 1),
    ((2, 16, 14, 14), 32, 1),
    ((2, 32, 14, 14), 32, 2),
    ((2, 32, 7, 7), 64, 1),
    ((2, 64, 8, 8), 64, 1),
]

INFINITY = None  # the point at infinity of Cook-Toom: the polynomial's leading coefficient
H = Fraction(1, 2)
POINT_SETS = {
    "F(2x2) 0,1,-1,inf": (0, 1, -1, INFINITY),
    "F(4x4) 0,1,-1,2,-2,inf (Lavin)": (0, 1, -1, 2, -2, INFINITY),
    "F(4x4) 0,1,-1,1/2,-2,inf": (0, 1, -1, H, -2, INFINITY),
    "F(4x4) 0,1,-1,2,-1/2,inf": (0, 1, -1, 2, -H, INFINITY),
    "F(4x4) 0,1,-1,1/2,-1/2,inf": (0, 1, -1, H, -H, INFINITY),
}


def cook_toom(points, r=3):
    """(A^T, G, B^T) of F(m, r), m = len(points) - r + 1, in float64: y = A^T [(G g) * (B^T d)]
    is the correlation y_i = sum_k g_k d_(i+k) of an (m + r - 1)-long input d."""
    n = len(points)
    m = n - r + 1
    finite = [Fraction(p) for p in points if p is not INFINITY]
    AT = np.zeros((m, n))
    G = np.zeros((n, r))
    for j, p in enumerate(points):
        if p is INFINITY:
            AT[m - 1, j] = 1
            G[j, r - 1] = 1
            continue
        p = Fraction(p)
        scale = np.prod([p - q for q in finite if q != p], dtype=object)
        AT[:, j] = [float(p**i) for i in range(m)]
        G[j] = [float(p**k / scale) for k in range(r)]
    # B^T from the identity sum_j AT[i, j] G[j, k] BT[j, c] = [c == i + k], linear in BT.
    equations = np.zeros((m * r * n, n * n))
    target = np.zeros(m * r * n)
    for i in range(m):
        for k in range(r):
            for c in range(n):
                row = (i * r + k) * n + c
                for j in range(n):
                    equations[row, j * n + c] = AT[i, j] * G[j, k]
                target[row] = float(c == i + k)
    BT, *_ = np.linalg.lstsq(equations, target, rcond=None)
    BT = BT.reshape(n, n)
    if not np.allclose(
        np.einsum("ij,jk,jl->ikl", AT, G, BT),
        np.array([[[float(c == i + k) for c in range(n)] for k in range(r)] for i in range(m)]),
    ):
        raise ValueError(f"cook_toom: no B^T makes points {points} a correlation")
    return AT, G, BT


def winograd_conv(x, W, b, pad, AT, G, BT, dtype=np.float32):
    """The convolution (stride 1, 3x3) by F(m x m, 3x3) in dtype (float32: as the kernels
    compute it; float64: to check the transforms against the reference)."""
    m, n = AT.shape
    N, C, height, width = x.shape
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    padded = np.zeros((N, C, tiles_h * m + 2, tiles_w * m + 2), dtype=dtype)
    padded[:, :, pad : pad + height, pad : pad + width] = x
    tiles = np.lib.stride_tricks.sliding_window_view(padded, (n, n), axis=(2, 3))[:, :, ::m, ::m]
    BT_, AT_ = BT.astype(dtype), AT.astype(dtype)
    # Each transform in two steps, columns then rows, each rounded to dtype, as the kernels do.
    V = np.einsum("nctujk,lk->nctujl", np.einsum("ij,nctujk->nctuik", BT_, tiles), BT_)
    U = np.einsum("ij,fcjk,lk->fcil", G, W.astype(np.float64), G).astype(dtype)
    M = np.zeros((N, W.shape[0], tiles_h, tiles_w, n, n), dtype=dtype)
    for c in range(C):  # in order, each step one fused multiply-add: the float32 product is
        # exact in float64, and rounding its sum to float32 rounds once (to within double rounding)
        M = (M.astype(np.float64) + U[None, :, c, None, None].astype(np.float64) * V[:, None, c]).astype(dtype)
    Y = np.einsum("nftujk,lk->nftujl", np.einsum("ij,nftujk->nftuik", AT_, M), AT_)
    y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, W.shape[0], tiles_h * m, tiles_w * m)
    return y[:, :, :out_h, :out_w] + b.astype(dtype)[None, :, None, None]


def layer_and_exact(rng, x_shape, filters, pad):
    """Random float32 input, filters and bias of a layer, and their convolution in float64."""
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    W = (rng.standard_normal((filters, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    exact = R.conv_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), (1, 1), (pad, pad))
    return x, W, b, exact


def error_against_exact(got, exact):
    return float(np.sqrt(np.mean((got.astype(np.float64) - exact) ** 2) / np.mean(exact**2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    transforms = {name: cook_toom(points) for name, points in POINT_SETS.items()}
    rows = {"deepnet direct (never)": [], "deepnet F(2x2) (always)": [], **{name: [] for name in transforms}}
    for x_shape, filters, pad in GEOMETRIES:
        x, W, b, exact = layer_and_exact(rng, x_shape, filters, pad)
        errors = {}
        with deepnet.backend("cython"):
            for mode, name in (("never", "deepnet direct (never)"), ("always", "deepnet F(2x2) (always)")):
                with deepnet.winograd(mode):
                    errors[name] = error_against_exact(F.conv2d(x, W, b, 1, pad), exact)
        for name, (AT, G, BT) in transforms.items():
            errors[name] = error_against_exact(winograd_conv(x, W, b, pad, AT, G, BT), exact)
        for name in rows:
            rows[name].append(errors[name] / errors["deepnet direct (never)"])
        print(
            f"{x_shape[1]}->{filters} {x_shape[2]}x{x_shape[3]} pad {pad}: direct error {errors['deepnet direct (never)']:.2e}"
        )
    print()
    print(
        "| float32 error / the direct kernel's | "
        + " | ".join(f"{s[1]}->{f} {s[2]}x{s[3]}" for s, f, _ in GEOMETRIES)
        + " |"
    )
    print("|---|" + "---:|" * len(GEOMETRIES))
    for name, ratios in rows.items():
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
