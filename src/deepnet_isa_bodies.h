/* The ISA-dependent kernels, in the order they use each other: included once per variant
 * by src/deepnet_isa.h, with DN_V naming the variant's functions (no include guard). */
#include "deepnet_half.h"
#include "deepnet_transpose.h"
#include "deepnet_gather_gemm.h"
#include "deepnet_winograd.h"
#include "deepnet_pool.h"
