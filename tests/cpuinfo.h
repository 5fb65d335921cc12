/*
 * cpuinfo.h -- what /proc/cpuinfo says of the CPU, for tests that must know
 * the answer independently of the code under test (which asks the CPU).
 */
#ifndef SLUICE_TESTS_CPUINFO_H
#define SLUICE_TESTS_CPUINFO_H

#include <stdio.h>
#include <string.h>

/* Whether /proc/cpuinfo lists AES and carry-less multiply instructions
 * (x86: aes, pclmulqdq; arm64: aes, pmull): 1, 0, or -1 if it cannot tell. */
static inline int test_cpuinfo_has_aes(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int found = -1;

    if (f == NULL)
        return -1;
    while (found < 0 && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "flags", 5) != 0 && strncmp(line, "Features", 8) != 0)
            continue;
        line[strcspn(line, "\n")] = ' ';
        found = strstr(line, " aes ") != NULL &&
                (strstr(line, " pclmulqdq ") != NULL || strstr(line, " pmull ") != NULL);
    }
    fclose(f);
    return found;
}

#endif /* SLUICE_TESTS_CPUINFO_H */
