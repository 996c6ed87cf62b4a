/* The one fact about the CPU, beyond the build's vector width, that the Winograd rule
 * (deepnet/_cpu.py) depends on: whether a 512-bit FMA runs at half the rate of two 256-bit
 * ones.  AMD's Zen 4 (family 0x19, the only one of that family with AVX-512) splits each
 * 512-bit FMA into two 256-bit halves, one per cycle; the Intel Xeon cores measured here
 * run two a cycle.  Where the direct kernel's FMAs cost twice as much, Winograd's 2.25x
 * fewer pay from fewer channels.  Read with CPUID, so that the answer (and so the results'
 * bits) is the same at every run on the same CPU. */
#ifndef DEEPNET_CPU_H
#define DEEPNET_CPU_H

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#include <string.h>

static inline int dn_cpu_splits_512bit_fma(void)
{
    unsigned int eax, ebx, ecx, edx;
    char vendor[13];
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx))
        return 0;
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    vendor[12] = '\0';
    if (strcmp(vendor, "AuthenticAMD") != 0 || !__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    unsigned int family = (eax >> 8) & 0xF;
    if (family == 0xF)
        family += (eax >> 20) & 0xFF;   /* the extended family */
    if (family != 0x19 || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ebx >> 16) & 1;             /* AVX-512F: Zen 4, not Zen 3 */
}
#else
static inline int dn_cpu_splits_512bit_fma(void) { return 0; }
#endif

#endif /* DEEPNET_CPU_H */
