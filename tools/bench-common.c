/*
 * bench-common.c -- see bench-common.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "bench-common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void bench_pin(int cpu)
{
    cpu_set_t set;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    CPU_ZERO(&set);
    CPU_SET(n > 1 ? cpu : 0, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    double small[64], *s = n <= 64 ? small : malloc((size_t)n * sizeof(*s)), m;

    if (s == NULL)
        return v[0];
    memcpy(s, v, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    if (s != small)
        free(s);
    return m;
}

bool bench_have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

int bench_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), p = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        p = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return p;
}

bool bench_port_open(int p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)p),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

int bench_write_pattern(const char *dir, const char *name, uint64_t size)
{
    char path[512];
    static char buf[1 << 20];
    int fd;

    snprintf(path, sizeof(path), "%s/www/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)((i * 131 + 7) % 251);
    while (size > 0) {
        size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf);
        if (write(fd, buf, n) != (ssize_t)n) {
            close(fd);
            return -1;
        }
        size -= n;
    }
    close(fd);
    return 0;
}

int bench_run_child(char *const argv[], const char *out_path, bool with_err, struct bench_child *r)
{
    int pfd[2];
    double t0 = bench_now_s();
    struct rusage ru;
    pid_t pid;
    size_t len = 0;

    memset(r, 0, sizeof(*r));
    if (pipe(pfd) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        bench_pin(1);
        int devnull = open("/dev/null", O_WRONLY);
        if (out_path != NULL) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(fd, 1);
        } else {
            dup2(pfd[1], 1);
        }
        dup2(with_err ? 1 : devnull, 2);
        close(pfd[0]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t n = read(pfd[0], r->out + len, sizeof(r->out) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof(r->out) - 1) {
            /* Keep the tail: slide the second half down. */
            size_t half = len / 2;
            memmove(r->out, r->out + half, len - half);
            len -= half;
        }
    }
    r->out[len] = '\0';
    close(pfd[0]);
    if (wait4(pid, &r->status, 0, &ru) < 0)
        return -1;
    r->wall = bench_now_s() - t0;
    r->user = bench_tv_s(ru.ru_utime);
    r->cpu = r->user + bench_tv_s(ru.ru_stime);
    r->maxrss_kb = ru.ru_maxrss;
    return WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128;
}
