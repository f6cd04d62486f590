/* Stand-in for the MSVC C runtime's <string.h> (see math.h beside it). */
typedef unsigned long long size_t;
void *memcpy(void *, const void *, size_t);
int memcmp(const void *, const void *, size_t);
