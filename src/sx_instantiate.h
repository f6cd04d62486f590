/* sx_instantiate.h -- every dtype for one instruction set.
 *
 * Included by row_kernels.h once per instruction set, with SX_ISA (a name)
 * and SX_TARGET (its function attribute) defined.  A new dtype is one more
 * block here; a new instruction set is one more include in row_kernels.h.
 * No include guard: it is meant to be included repeatedly.
 */

#define SX_DTYPE f32
#define SX_T float
#define SX_F64 0
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64

#define SX_DTYPE f64
#define SX_T double
#define SX_F64 1
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64

/* 16-bit storage formats, computed in float32 */
#define SX_DTYPE f16
#define SX_BF16 0
#include "half_convert_impl.h"
#undef SX_DTYPE
#undef SX_BF16

#define SX_DTYPE bf16
#define SX_BF16 1
#include "half_convert_impl.h"
#undef SX_DTYPE
#undef SX_BF16
