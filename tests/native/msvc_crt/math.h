/* Stand-in for the MSVC C runtime's <math.h>, for tests/native/run.sh's
   MSVC-mode syntax check of the kernels' C (no Windows SDK here). */
#define INFINITY __builtin_huge_valf()
#define NAN __builtin_nanf("")
double fabs(double);
double exp(double);
double log(double);
double log1p(double);
