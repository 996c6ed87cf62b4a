"""The float16 <-> float32 conversions of src/deepnet_half.h against numpy's, bit for bit:
every half value, and floats around every rounding boundary.  The portable fallback (used
where the CPU has no F16C) is compiled here with F16C disabled; the compiled kernels' casts
(F16C where the build enabled it) run through deepnet.functional.cast."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import deepnet
from deepnet import functional as F

pytestmark = pytest.mark.kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROGRAM = r"""
#include <stdio.h>
#include "deepnet_half.h"
#if DEEPNET_HAVE_F16C
#error "this test must exercise the portable fallback"
#endif
int main(int argc, char **argv) {
    FILE *floats = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    for (unsigned h = 0; h < 65536; h++) {      /* every half -> float */
        float f = dn_half_to_float((uint16_t)h);
        fwrite(&f, sizeof f, 1, out);
    }
    float f;
    while (fread(&f, sizeof f, 1, floats) == 1) {  /* the given floats -> half */
        uint16_t h = dn_float_to_half(f);
        fwrite(&h, sizeof h, 1, out);
    }
    fclose(out);
    return 0;
}
"""


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build the fallback conversion")
    tmp = tmp_path_factory.mktemp("half")
    (tmp / "half.c").write_text(PROGRAM)
    subprocess.run(
        [compiler, "-O2", "-mno-f16c", f"-I{ROOT / 'src'}", str(tmp / "half.c"), "-o", str(tmp / "half")], check=True
    )

    def run(floats):
        (tmp / "in.bin").write_bytes(np.asarray(floats, dtype=np.float32).tobytes())
        subprocess.run([str(tmp / "half"), str(tmp / "in.bin"), str(tmp / "out.bin")], check=True)
        data = (tmp / "out.bin").read_bytes()
        return (np.frombuffer(data[: 65536 * 4], dtype=np.float32), np.frombuffer(data[65536 * 4 :], dtype=np.uint16))

    return run


def test_every_half_converts_to_the_same_float_as_numpy(fallback):
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    expected = halves.astype(np.float32)
    got, _ = fallback([])
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[finite].view(np.uint32), expected[finite].view(np.uint32))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got) & (got > 0), np.isposinf(expected))


def rounding_candidates():
    """Each representable half, the midpoints between neighbours (ties to even), and one ulp
    of float32 either side of them; plus overflow, underflow, subnormals, Inf and noise."""
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    exact = halves[np.isfinite(halves)].astype(np.float32)
    ordered = np.unique(exact)
    midpoints = ((ordered[:-1].astype(np.float64) + ordered[1:]) / 2).astype(np.float32)
    return np.concatenate(
        [
            exact,
            midpoints,
            np.nextafter(midpoints, np.float32(np.inf)),
            np.nextafter(midpoints, np.float32(-np.inf)),
            np.float32(
                [65504, 65519.99, 65520, 1e6, -1e6, 1e-8, -1e-8, 3e-8, 2.98e-8, 5.96e-8, np.inf, -np.inf, 0.0, -0.0]
            ),
            np.random.default_rng(0).standard_normal(100_000).astype(np.float32),
        ]
    )


def numpy_halves(floats):
    with np.errstate(over="ignore"):
        return floats.astype(np.float16).view(np.uint16)


def test_floats_round_to_the_same_half_as_numpy(fallback):
    candidates = rounding_candidates()
    _, got = fallback(candidates)
    np.testing.assert_array_equal(got, numpy_halves(candidates))
    nan_half = fallback(np.float32([np.nan]))[1].view(np.float16)
    assert np.isnan(nan_half).all()


@pytest.mark.skipif(not deepnet.kernels_compiled(), reason="compiled kernels not built")
def test_the_compiled_casts_equal_numpy_bit_for_bit():
    candidates = rounding_candidates()
    with deepnet.backend("cython"):
        halves = F.cast(candidates, np.float16)
        np.testing.assert_array_equal(halves.view(np.uint16), numpy_halves(candidates))
        every_half = np.arange(65536, dtype=np.uint16).view(np.float16)
        floats = F.cast(every_half, np.float32)
        finite = np.isfinite(every_half)
        np.testing.assert_array_equal(
            floats[finite].view(np.uint32), every_half[finite].astype(np.float32).view(np.uint32)
        )
        np.testing.assert_array_equal(np.isnan(floats), np.isnan(every_half))
        assert np.isnan(F.cast(np.float32([np.nan, -np.nan]), np.float16)).all()
