/* Compiled by tests/native/run.sh msvc as MSVC would see it: _MSC_VER
 * defined, neither __GNUC__ nor __clang__, <intrin.h> for CPUID. */
#if defined(__GNUC__) || defined(__clang__) || !defined(_MSC_VER)
#error "not compiling as MSVC: the check would test the wrong branch"
#endif
#include "row_kernels.h"

int msvc_probe(void)
{
    const int level = sx_select_isa(SX_ISA_LEVELS - 1);
    return level + sx_cpu_isa_level() + (int)sx_table_f32->row_max(0, 0, 0);
}
