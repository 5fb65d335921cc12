/*
 * bench-common.h -- what every benchmark program under tools/ needs: clocks,
 * CPU pinning, medians, loopback ports, pattern files and running a peer
 * as a measured child process.
 */
#ifndef SLUICE_BENCH_COMMON_H
#define SLUICE_BENCH_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>

/* Monotonic seconds; a struct timeval in seconds. */
double bench_now_s(void);
double bench_tv_s(struct timeval tv);
/* Pin the calling process to `cpu` (CPU 0 on a single-CPU machine). */
void bench_pin(int cpu);
/* Median of v[0..n) (n >= 1); v is left as it was. */
double bench_median(const double *v, int n);
/* Whether `prog` is on PATH. */
bool bench_have(const char *prog);
/* A loopback TCP port free right now, or -1; whether something listens on one. */
int bench_free_port(void);
bool bench_port_open(int port);
/* DIR/www/NAME holding `size` bytes of the test pattern (byte i = (i*131+7) % 251). */
int bench_write_pattern(const char *dir, const char *name, uint64_t size);

struct bench_child {
    int status;
    double wall, cpu, user; /* seconds; cpu = user + system */
    long maxrss_kb;
    char out[4096]; /* the last bytes of its stdout (when captured) */
};
/* Run argv pinned to CPU 1 with stdout (and stderr too if `with_err`)
 * captured in r->out (the last 4 KiB) or sent to `out_path`; stderr goes to
 * /dev/null otherwise. Returns its exit status, 128 if a signal ended it, or
 * -1 if it could not be run. */
int bench_run_child(char *const argv[], const char *out_path, bool with_err, struct bench_child *r);

#endif /* SLUICE_BENCH_COMMON_H */
