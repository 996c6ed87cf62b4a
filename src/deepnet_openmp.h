/* OpenMP queries that still compile (as a single-threaded build) without OpenMP. */
#ifndef DEEPNET_OPENMP_H
#define DEEPNET_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
#define DEEPNET_HAVE_OPENMP 1
#else
#define DEEPNET_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

#endif /* DEEPNET_OPENMP_H */
