# OpenMP facts for the Python side; builds (single-threaded) without OpenMP too.

cdef extern from "deepnet_openmp.h":
    int DEEPNET_HAVE_OPENMP
    int omp_get_max_threads() nogil

cdef extern from "deepnet_isa.h":
    int DEEPNET_HAVE_F16C
    int dn_isa_select()
    const char* dn_isa_variant_name
    char* dn_isa_reason
    int dn_isa_vector_bytes
    int DN_ISA_DISPATCH

if dn_isa_select() != 0:  # as each kernel module does (dtypes.pxi)
    raise RuntimeError(f"deepnet: {dn_isa_reason.decode()}")

cdef extern from "deepnet_cpu.h":
    int dn_cpu_splits_512bit_fma()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(DEEPNET_HAVE_OPENMP)


def f16c_enabled():
    """True when float16 conversion uses the F16C instructions (in the chosen variant)."""
    return bool(DEEPNET_HAVE_F16C)


def max_threads():
    """OpenMP's default thread count (honours OMP_NUM_THREADS and the CPU affinity)."""
    return omp_get_max_threads()


def vector_bits():
    """Width of the convolutions' GEMM vectors in the chosen variant (128: SSE2 or NEON,
    256: AVX2, 512: AVX-512)."""
    return dn_isa_vector_bytes * 8


def dispatch_enabled():
    """True in a dispatch build (DEEPNET_MARCH=dispatch): the variant is chosen at import."""
    return bool(DN_ISA_DISPATCH)


def cpu_variant():
    """The kernels' instruction-set variant ('baseline', 'avx2', 'avx512'; a build without
    dispatch also 'avx', 'neon' or 'generic') and why it was chosen."""
    return dn_isa_variant_name.decode(), dn_isa_reason.decode()


def splits_512bit_fmas():
    """True on a CPU that runs each 512-bit FMA as two 256-bit halves (AMD Zen 4; read
    with CPUID, src/deepnet_cpu.h), whatever the build's vector width."""
    return bool(dn_cpu_splits_512bit_fma())
