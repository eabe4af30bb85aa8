/* CPU feature detection. cpuid says what the CPU has; xgetbv says what the OS
 * saves on a context switch. AVX-512 code on an OS that does not save the
 * opmask and ZMM state would corrupt registers silently, so both must agree. */
#include "efps/core.h"

#include <cpuid.h>
#include <string.h>
#include <strings.h>

#define XCR0_SSE_AVX 0x06u /* XMM and YMM state */
#define XCR0_AVX512  0xe0u /* opmask, ZMM_Hi256, Hi16_ZMM state */

static uint64_t read_xcr0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static unsigned detect(void)
{
    unsigned eax, ebx, ecx, edx, f = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    const int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
    if (!osxsave || !avx)
        return 0;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & XCR0_SSE_AVX) != XCR0_SSE_AVX)
        return 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    if (ebx & (1u << 5))
        f |= EFPS_CPU_AVX2;
    if ((xcr0 & XCR0_AVX512) == XCR0_AVX512) {
        if (ebx & (1u << 16))
            f |= EFPS_CPU_AVX512F;
        if (ebx & (1u << 17))
            f |= EFPS_CPU_AVX512DQ;
        if (ebx & (1u << 30))
            f |= EFPS_CPU_AVX512BW;
        if (ebx & (1u << 31))
            f |= EFPS_CPU_AVX512VL;
    }
    return f;
}

unsigned efps_cpu_features(void)
{
    /* Racing first callers compute the same value; no lock needed. */
    static volatile int done;
    static volatile unsigned features;
    if (!done) {
        features = detect();
        done = 1;
    }
    return features;
}

efps_simd_t efps_cpu_best_simd(void)
{
    const unsigned need512 = EFPS_CPU_AVX2 | EFPS_CPU_AVX512F | EFPS_CPU_AVX512BW |
                             EFPS_CPU_AVX512VL | EFPS_CPU_AVX512DQ;
    unsigned f = efps_cpu_features();
    if ((f & need512) == need512)
        return EFPS_SIMD_AVX512;
    if (f & EFPS_CPU_AVX2)
        return EFPS_SIMD_AVX2;
    return EFPS_SIMD_SCALAR;
}

const char *efps_simd_name(efps_simd_t simd)
{
    switch (simd) {
    case EFPS_SIMD_SCALAR:
        return "scalar";
    case EFPS_SIMD_AVX2:
        return "avx2";
    case EFPS_SIMD_AVX512:
        return "avx512";
    }
    return "unknown";
}

efps_status_t efps_simd_parse(const char *text, efps_simd_t *simd_p)
{
    for (int s = EFPS_SIMD_SCALAR; s <= EFPS_SIMD_AVX512; s++) {
        if (text != NULL && strcasecmp(text, efps_simd_name((efps_simd_t)s)) == 0) {
            *simd_p = (efps_simd_t)s;
            return EFPS_OK;
        }
    }
    return EFPS_ERR_INVALID;
}
