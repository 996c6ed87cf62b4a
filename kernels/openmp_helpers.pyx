# OpenMP facts for the Python side; builds (single-threaded) without OpenMP too.

cdef extern from "deepnet_openmp.h":
    int DEEPNET_HAVE_OPENMP
    int omp_get_max_threads() nogil

cdef extern from "deepnet_half.h":
    int DEEPNET_HAVE_F16C

cdef extern from "deepnet_cpu.h":
    int dn_cpu_splits_512bit_fma()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(DEEPNET_HAVE_OPENMP)


def f16c_enabled():
    """True when float16 conversion uses the F16C instructions."""
    return bool(DEEPNET_HAVE_F16C)


def max_threads():
    """OpenMP's default thread count (honours OMP_NUM_THREADS and the CPU affinity)."""
    return omp_get_max_threads()


cdef extern from "deepnet_gather_gemm.h":
    int DN_VBYTES


def vector_bits():
    """Width of the convolutions' GEMM vectors, as built (256: AVX2, 512: AVX-512)."""
    return DN_VBYTES * 8


def splits_512bit_fmas():
    """True on a CPU that runs each 512-bit FMA as two 256-bit halves (AMD Zen 4; read
    with CPUID, src/deepnet_cpu.h), whatever the build's vector width."""
    return bool(dn_cpu_splits_512bit_fma())
