/* omp_shim.h -- the only place that touches the OpenMP runtime.
 *
 * The extension also builds without OpenMP (the build says so loudly); then
 * Cython's prange runs serially and these fall back to one thread.
 */
#ifndef SOFTMAX_EXT_OMP_SHIM_H
#define SOFTMAX_EXT_OMP_SHIM_H

#ifdef _OPENMP
#include <omp.h>
#define SX_OPENMP_ENABLED 1
static inline int sx_omp_max_threads(void) { return omp_get_max_threads(); }
#else
#define SX_OPENMP_ENABLED 0
static inline int sx_omp_max_threads(void) { return 1; }
#endif

#endif
