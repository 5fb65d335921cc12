/*
 * bench-http.c -- sluice against its peers over loopback, in one run.
 *
 * It starts Debian's nginx pinned to CPU 0 (generated config and files in a
 * temporary directory) and runs every client pinned to CPU 1, so that client
 * CPU time can be compared and not only wall time. Each figure is the median
 * of --runs runs (default 3). Peers missing from the machine are reported as
 * skipped, never guessed.
 *
 *   A. keep-alive GETs of a 1 KiB file, 50 connections, --duration seconds:
 *      requests/s and client CPU-seconds per 100k requests, sluice (the
 *      library, in this process) beside `wrk -t1 -c50` and beside a floor:
 *      a bare epoll loop that sends a fixed request and counts the bytes
 *      of the answer, so that one sees how much of a client's CPU is the
 *      kernel's loopback TCP work and how much room the target leaves.
 *   B. 1000 URLs, 50 at a time: wall time and peak RSS of `sluice -Z
 *      --parallel-max 50` beside `curl --parallel --parallel-max 50` and
 *      aiohttp (limit 50).
 *   C. a 1 GiB download to /dev/null and to a file: MB/s and client CPU,
 *      sluice CLI beside curl, with two ceilings: iperf3 over loopback, and
 *      a bare recv() loop fetching the same file from the same nginx.
 *
 * Output: one machine-readable line per measurement (`bench=http ...`), then
 * a summary with the ratios and whether each target of issue 3 holds.
 *
 * Two modes exist for profiling one side at a time: `--serve` starts the
 * same nginx, prints its base URL and waits for a signal; `--url URL` runs
 * only the sluice client of A against URL (e.g. under `strace -c -f` or
 * callgrind), for --duration seconds or, with --requests N, N requests;
 * `--floor-url URL` does the same for the floor client.
 */
#include <sluice.h>

#include "bench-common.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdint.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 9

static int runs = 3;
static double duration = 10.0;
static bool quick;
static bool skip_big;
static char dir[256];
static int port;
static pid_t nginx_pid = -1;
static char sluice_path[512];
static uint64_t max_requests;  /* 0: run for `duration` */
static const char *only;       /* sections to run, e.g. "AC"; NULL: all */
static const char *client_url; /* --url: only sluice's client of A */
static const char *floor_url;  /* --floor-url: only the floor client of A */
static char self_path[512];    /* this program, to run the floor as a child */
static int exit_status;
static bool serve;
static volatile sig_atomic_t stop_serving;

static void on_signal(int sig)
{
    (void)sig;
    stop_serving = 1;
}

/* ---- nginx ------------------------------------------------------------------- */

static int nginx_start(void)
{
    char path[512];
    FILE *f;

    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/www", dir);
    mkdir(path, 0755);
    if (bench_write_pattern(dir, "1k.bin", 1024) < 0 ||
        (!skip_big && bench_write_pattern(dir, "1g.bin", 1ull << 30) < 0))
        return -1;
    port = bench_free_port();
    snprintf(path, sizeof(path), "%s/nginx.conf", dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "%s"
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
            "error_log %s/error.log error;\nevents { worker_connections 4096; }\n"
            "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
            "  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n"
            "  client_body_temp_path %s/tmp;\n  proxy_temp_path %s/tmp;\n"
            "  fastcgi_temp_path %s/tmp;\n  uwsgi_temp_path %s/tmp;\n  scgi_temp_path %s/tmp;\n"
            "  server {\n    listen 127.0.0.1:%d backlog=4096;\n    root %s/www;\n  }\n}\n",
            geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir, dir, port, dir);
    fclose(f);
    snprintf(path, sizeof(path), "%s/tmp", dir);
    mkdir(path, 0755);
    nginx_pid = fork();
    if (nginx_pid == 0) {
        char conf[512];
        bench_pin(0);
        snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
        execl("/usr/sbin/nginx", "nginx", "-c", conf, "-p", dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        if (bench_port_open(port))
            return 0;
        usleep(50000);
    }
    return -1;
}

static void nginx_stop(void)
{
    char cmd[300];

    if (nginx_pid > 0) {
        kill(nginx_pid, SIGTERM);
        waitpid(nginx_pid, NULL, 0);
        nginx_pid = -1;
    }
    if (dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench-http: could not remove %s\n", dir);
    }
}

/* ---- child processes --------------------------------------------------------- */

/* ---- A: keep-alive requests/s, in process -------------------------------------- */

struct ka {
    sl_client_t *client;
    char url[128];
    uint64_t started, done, failed;
    double deadline;
    sl_loop_t *loop;
};

static void ka_start(struct ka *k);

static void ka_done(sl_req_t *req, int status)
{
    struct ka *k = sl_req_data(req);
    sl_req_free(req);
    if (status == 0)
        k->done++;
    else
        k->failed++;
    if ((k->done & 255) == 0)
        sl_loop_update_time(k->loop);
    if (max_requests > 0 ? k->started < max_requests
                         : (double)sl_loop_now_ns(k->loop) / 1e9 < k->deadline)
        ka_start(k);
}

static void ka_start(struct ka *k)
{
    sl_req_t *req;
    if (sl_req_new(k->client, "GET", k->url, &req, NULL) < 0)
        return;
    k->started++;
    sl_req_set_data(req, k);
    sl_req_callbacks(req, NULL, NULL, ka_done);
    sl_req_start(req);
}

/* One run of sluice's side of A, in this process, pinned to CPU 1. */
static void ka_run(const char *url, struct ka *k, double *wall, double *cpu)
{
    sl_loop_t loop;
    sl_client_opts_t o;
    struct rusage a, b;

    memset(k, 0, sizeof(*k));
    bench_pin(1);
    sl_loop_init(&loop);
    sl_client_opts_init(&o);
    o.max_connections = 50;
    sl_client_new(&loop, &o, &k->client);
    k->loop = &loop;
    snprintf(k->url, sizeof(k->url), "%s", url);
    getrusage(RUSAGE_SELF, &a);
    double t0 = bench_now_s();
    k->deadline = (double)sl_loop_now_ns(&loop) / 1e9 + duration;
    for (int i = 0; i < 50; i++)
        ka_start(k);
    sl_loop_run(&loop);
    *wall = bench_now_s() - t0;
    getrusage(RUSAGE_SELF, &b);
    sl_client_free(k->client);
    sl_loop_run(&loop);
    sl_loop_close(&loop);
    *cpu = bench_tv_s(b.ru_utime) - bench_tv_s(a.ru_utime) + bench_tv_s(b.ru_stime) -
           bench_tv_s(a.ru_stime);
}

/* wrk's side of A, one run; returns false if it did not run. */
static bool ka_wrk(const char *url, double *rps, double *cpu100k, double *req_total)
{
    char dur[32];
    snprintf(dur, sizeof(dur), "%ds", (int)(duration + 0.5));
    char *argv[] = {"wrk", "-t1", "-c50", "-d", dur, (char *)url, NULL};
    struct bench_child cr;
    bench_run_child(argv, NULL, false, &cr);
    char *p = strstr(cr.out, "Requests/sec:");
    char *q = strstr(cr.out, "requests in");
    if (p == NULL || q == NULL)
        return false;
    /* "  682361 requests in 10.00s, ..." */
    while (q > cr.out && q[-1] != '\n')
        q--;
    *req_total = strtod(q, NULL);
    *rps = strtod(p + 13, NULL);
    *cpu100k = cr.cpu / *req_total * 1e5;
    return *req_total > 0;
}

/* ---- A: the floor, a client that does nothing but move the bytes ------------------ */

/*
 * The least any client must do for a keep-alive GET over loopback: one
 * send() of a fixed request, then recv()s until a response of the known
 * length has arrived. No parsing, no allocation, no timers, so its CPU is
 * almost all the kernel's loopback TCP work, which every client pays too.
 * What sluice or wrk spend above it is what a client can still save.
 *
 * It counts bytes, so it relies on every response having the length of the
 * warm-up response. With one request in flight per connection, a longer
 * response shows as bytes past that length, and a shorter one as a
 * connection that never completes; both end the run with an error.
 */

#define FLOOR_CONNS 50

struct floor_conn {
    int fd;
    size_t got; /* bytes of the response in flight received so far */
    bool busy;  /* a request is in flight */
};

static char floor_buf[64 * 1024];

/* "http://HOST[:PORT][/PATH]": the address, the Host header value and the path. */
static int floor_parse_url(const char *url, struct sockaddr_storage *sa, socklen_t *salen,
                           char *authority, size_t alen, char *path, size_t plen)
{
    char host[256], serv[16] = "80";
    const char *p, *end, *colon = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    size_t n;

    if (strncmp(url, "http://", 7) != 0)
        return -1;
    p = url + 7;
    end = p + strcspn(p, "/?#");
    n = (size_t)(end - p);
    if (n == 0 || n >= alen)
        return -1;
    snprintf(authority, alen, "%.*s", (int)n, p);
    snprintf(path, plen, "%s", *end == '/' ? end : "/");
    if (*p == '[') { /* [v6 literal] */
        const char *rb = memchr(p, ']', n);
        if (rb == NULL)
            return -1;
        snprintf(host, sizeof(host), "%.*s", (int)(rb - p - 1), p + 1);
        if (rb + 1 < end && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(p, ':', n);
        snprintf(host, sizeof(host), "%.*s", (int)((colon != NULL ? colon : end) - p), p);
    }
    if (colon != NULL)
        snprintf(serv, sizeof(serv), "%.*s", (int)(end - colon - 1), colon + 1);
    if (getaddrinfo(host, serv, &hints, &ai) != 0)
        return -1;
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* The length of the response whose head is h[0..len) (ending in CRLF CRLF):
 * the head plus its Content-Length. It must be a 2xx that keeps the
 * connection open and is framed by Content-Length alone. */
static int floor_parse_head(const char *h, size_t len, size_t *total)
{
    const char *line = h, *end = h + len;
    unsigned long long clen = 0;
    bool have_clen = false;

    if (len < 12 || memcmp(h, "HTTP/1.1 2", 10) != 0) {
        fprintf(stderr, "bench-http: floor: the warm-up response is not HTTP/1.1 2xx: %.*s\n",
                (int)strcspn(h, "\r\n"), h);
        return -1;
    }
    line = (const char *)memchr(h, '\n', len) + 1; /* after the status line; h ends in CRLF */
    while (line < end && *line != '\r') {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        size_t nlen;
        if (colon == NULL) {
            fprintf(stderr, "bench-http: floor: header line without a colon: %.*s\n",
                    (int)(eol - line), line);
            return -1;
        }
        nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (nlen == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            char *stop;
            unsigned long long x;
            errno = 0;
            x = strtoull(v, &stop, 10);
            while (*stop == ' ' || *stop == '\t')
                stop++;
            if (errno != 0 || *v < '0' || *v > '9' || *stop != '\r' || (have_clen && x != clen)) {
                fprintf(stderr, "bench-http: floor: bad Content-Length: %.*s\n",
                        (int)(eol - line - 1), line);
                return -1;
            }
            clen = x;
            have_clen = true;
        } else if ((nlen == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) ||
                   (nlen == 10 && strncasecmp(line, "Connection", 10) == 0 &&
                    strncasecmp(v, "close", 5) == 0)) {
            fprintf(stderr,
                    "bench-http: floor: the response must be framed by Content-Length "
                    "on a kept-alive connection, not: %.*s\n",
                    (int)(eol - line - 1), line);
            return -1;
        }
        line = eol + 1;
    }
    if (!have_clen || clen > SIZE_MAX - len) {
        fprintf(stderr, "bench-http: floor: the warm-up response has no Content-Length\n");
        return -1;
    }
    *total = len + (size_t)clen;
    return 0;
}

/* One request and its whole response on `fd` (still blocking), learning
 * the response's length from its head. */
static int floor_warmup(int fd, const char *req, size_t reqlen, size_t *total)
{
    size_t have = 0, head = 0, got = 0;

    if (send(fd, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen) {
        fprintf(stderr, "bench-http: floor: warm-up: send: %s\n", strerror(errno));
        return -1;
    }
    for (;;) {
        ssize_t n = recv(fd, floor_buf + have, sizeof(floor_buf) - have, 0);
        if (n <= 0) {
            fprintf(stderr, "bench-http: floor: warm-up: %s\n",
                    n == 0 ? "the server closed the connection" : strerror(errno));
            return -1;
        }
        if (head == 0) {
            have += (size_t)n;
            const char *e = memmem(floor_buf, have, "\r\n\r\n", 4);
            if (e == NULL) {
                if (have == sizeof(floor_buf)) {
                    fprintf(stderr, "bench-http: floor: warm-up: head over 64 KiB\n");
                    return -1;
                }
                continue;
            }
            head = (size_t)(e - floor_buf) + 4;
            if (floor_parse_head(floor_buf, head, total) < 0)
                return -1;
            got = have;
            have = 0; /* the body is counted, not kept */
        } else {
            got += (size_t)n;
        }
        if (got >= *total)
            break;
    }
    if (got > *total) {
        fprintf(stderr, "bench-http: floor: warm-up: %zu bytes after the %zu-byte response\n",
                got - *total, *total);
        return -1;
    }
    return 0;
}

/* The request on `f`, whose socket buffer is empty (nothing is in flight on
 * it), so that all of so small a request always fits. */
static int floor_send(struct floor_conn *f, const char *req, size_t len)
{
    ssize_t n = send(f->fd, req, len, MSG_NOSIGNAL);
    if (n != (ssize_t)len) {
        fprintf(stderr, "bench-http: floor: send: %s\n",
                n < 0 ? strerror(errno) : "only part of the request fitted");
        return -1;
    }
    f->busy = true;
    return 0;
}

/* Runs the floor client against `url` for `duration` seconds (or
 * max_requests requests). Returns 0 with the requests completed, the
 * length of each response and the wall time, or -1 after saying why on
 * stderr. */
static int floor_run(const char *url, uint64_t *requests, size_t *resp_len, double *wall)
{
    struct floor_conn c[FLOOR_CONNS];
    struct epoll_event evs[FLOOR_CONNS];
    struct sockaddr_storage sa;
    socklen_t salen;
    char authority[256], path[1024], req[1400];
    uint64_t started = 0, done = 0;
    int inflight = 0, ep = -1, rc = -1, reqlen, one = 1;
    size_t total = 0;
    uint64_t next_check = 0;
    double t0 = bench_now_s(), deadline = t0 + duration, quiet_since = 0;
    bool stopping = false;

    for (int i = 0; i < FLOOR_CONNS; i++)
        c[i] = (struct floor_conn){.fd = -1};
    if (floor_parse_url(url, &sa, &salen, authority, sizeof(authority), path, sizeof(path)) < 0) {
        fprintf(stderr, "bench-http: floor: cannot use %s (http://HOST[:PORT]/PATH)\n", url);
        return -1;
    }
    reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, authority);
    if (reqlen >= (int)sizeof(req))
        return -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        fprintf(stderr, "bench-http: floor: epoll_create1: %s\n", strerror(errno));
        goto fail;
    }
    /* Connecting blocking is simpler and costs the same; the sockets are
     * made non-blocking once connected. */
    for (int i = 0; i < FLOOR_CONNS; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        c[i].fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c[i].fd < 0 || setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
            connect(c[i].fd, (struct sockaddr *)&sa, salen) < 0) {
            fprintf(stderr, "bench-http: floor: connect to %s: %s\n", url, strerror(errno));
            goto fail;
        }
        if (i == 0 && floor_warmup(c[0].fd, req, (size_t)reqlen, &total) < 0)
            goto fail;
        if (fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev) < 0) {
            fprintf(stderr, "bench-http: floor: %s\n", strerror(errno));
            goto fail;
        }
    }
    done = started = 1; /* the warm-up */
    for (int i = 0; i < FLOOR_CONNS && (max_requests == 0 || started < max_requests); i++) {
        if (floor_send(&c[i], req, (size_t)reqlen) < 0)
            goto fail;
        inflight++;
        started++;
    }
    while (inflight > 0) {
        int n = epoll_wait(ep, evs, FLOOR_CONNS, stopping ? 100 : 1000);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "bench-http: floor: epoll_wait: %s\n", strerror(errno));
            goto fail;
        }
        if (n > 0)
            quiet_since = 0;
        /* Reading the clock every 64 responses (about a millisecond) is
         * often enough and keeps it out of the cost of a request. */
        if (n <= 0 || done >= next_check || stopping) {
            double now = bench_now_s();
            next_check = done + 64;
            if (!stopping && now >= deadline)
                stopping = true;
            if (n == 0 && quiet_since == 0) {
                quiet_since = now;
            } else if (n == 0 && now - quiet_since > 2.0) {
                fprintf(stderr,
                        "bench-http: floor: %d connection(s) got no more bytes for 2 s: a "
                        "response shorter than the warm-up's %zu bytes, or a stalled server\n",
                        inflight, total);
                goto fail;
            }
        }
        for (int k = 0; k < n; k++) {
            struct floor_conn *f = &c[evs[k].data.u32];
            ssize_t r = recv(f->fd, floor_buf, sizeof(floor_buf), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0 || !f->busy) {
                fprintf(stderr, "bench-http: floor: %s\n",
                        r < 0    ? strerror(errno)
                        : r == 0 ? "the server closed a connection"
                                 : "bytes arrived with no request in flight");
                goto fail;
            }
            f->got += (size_t)r;
            if (f->got < total)
                continue;
            if (f->got > total) {
                fprintf(stderr,
                        "bench-http: floor: response %llu was longer than the warm-up's %zu "
                        "bytes (%zu so far): the server's responses vary in length\n",
                        (unsigned long long)done + 1, total, f->got);
                goto fail;
            }
            f->got = 0;
            f->busy = false;
            inflight--;
            done++;
            if (!stopping && (max_requests == 0 || started < max_requests)) {
                if (floor_send(f, req, (size_t)reqlen) < 0)
                    goto fail;
                inflight++;
                started++;
            }
        }
    }
    *wall = bench_now_s() - t0;
    *requests = done;
    *resp_len = total;
    rc = 0;
fail:
    for (int i = 0; i < FLOOR_CONNS; i++)
        if (c[i].fd >= 0)
            close(c[i].fd);
    if (ep >= 0)
        close(ep);
    return rc;
}

/* The floor's side of A, one run. It runs as wrk does, a child process
 * (this program again, with --floor-url) through bench_run_child(): pinned
 * to CPU 1, its CPU time the whole process's from wait4(). wrk is the
 * denominator of both ratios the summary prints, so the floor is measured
 * exactly as wrk is: start-up, connects and teardown included, as wrk's are
 * (about 3 ms for either, some 0.1% of a 3 s run), and nothing left in this
 * process by sluice's runs can add to it. Returns false if it failed; its
 * complaint is on stderr. */
static bool ka_floor(const char *url, double *rps, double *cpu100k, double *req_total)
{
    char dur[32];
    struct bench_child cr;
    const char *p, *q;

    snprintf(dur, sizeof(dur), "%.3f", duration);
    char *argv[] = {self_path, "--floor-url", (char *)url, "--duration", dur, NULL};
    int rc = bench_run_child(argv, NULL, true, &cr);
    p = strstr(cr.out, " requests=");
    q = strstr(cr.out, " wall_s=");
    if (rc != 0 || p == NULL || q == NULL) {
        fprintf(stderr, "bench-http: the floor client failed (exit %d):\n%s", rc, cr.out);
        return false;
    }
    *req_total = strtod(p + 10, NULL);
    *rps = *req_total / strtod(q + 8, NULL);
    *cpu100k = cr.cpu / *req_total * 1e5;
    return *req_total > 0;
}

static void bench_keepalive(void)
{
    /* Per turn; w_ok and f_ok say whether wrk and the floor ran in it. */
    double rps[MAX_RUNS], cpu100k[MAX_RUNS], wrps[MAX_RUNS], wcpu100k[MAX_RUNS];
    double frps[MAX_RUNS], fcpu100k[MAX_RUNS];
    bool w_ok[MAX_RUNS] = {false}, f_ok[MAX_RUNS] = {false};
    bool with_wrk = bench_have("wrk"), floor_failed = false;
    char url[128];

    /* sluice, wrk and the floor take turns, so that a change in the
     * machine's load (it is shared) weighs on all of them alike. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/1k.bin", port);
    for (int r = 0; r < runs; r++) {
        struct ka k;
        double wall, cpu, req_total;
        ka_run(url, &k, &wall, &cpu);
        rps[r] = (double)k.done / wall;
        cpu100k[r] = cpu / (double)k.done * 1e5;
        printf("bench=http test=keepalive impl=sluice run=%d requests=%llu failed=%llu "
               "wall_s=%.3f cpu_s=%.3f rps=%.0f cpu_s_per_100k=%.3f\n",
               r, (unsigned long long)k.done, (unsigned long long)k.failed, wall, cpu, rps[r],
               cpu100k[r]);
        fflush(stdout);
        if (with_wrk && ka_wrk(url, &wrps[r], &wcpu100k[r], &req_total)) {
            w_ok[r] = true;
            printf("bench=http test=keepalive impl=wrk run=%d requests=%.0f cpu_s=%.3f rps=%.0f "
                   "cpu_s_per_100k=%.3f\n",
                   r, req_total, wcpu100k[r] * req_total / 1e5, wrps[r], wcpu100k[r]);
            fflush(stdout);
        }
        if (floor_failed)
            continue;
        if (!ka_floor(url, &frps[r], &fcpu100k[r], &req_total)) {
            /* Every later turn would fail the same way. */
            floor_failed = true;
            exit_status = 1;
            printf("bench=http test=keepalive impl=floor run=%d (failed)\n", r);
            continue;
        }
        f_ok[r] = true;
        printf("bench=http test=keepalive impl=floor run=%d requests=%.0f cpu_s=%.3f rps=%.0f "
               "cpu_s_per_100k=%.3f\n",
               r, req_total, fcpu100k[r] * req_total / 1e5, frps[r], fcpu100k[r]);
        fflush(stdout);
    }

    /* The figures of the turns each side ran, and the per-turn comparisons:
     * ratios, and differences in microseconds per request (CPU-s per 100k
     * times 10). */
    double w_rps[MAX_RUNS], w_cpu[MAX_RUNS], f_rps[MAX_RUNS], f_cpu[MAX_RUNS];
    double s_w[MAX_RUNS], f_w[MAX_RUNS], room[MAX_RUNS], s_f[MAX_RUNS];
    int wn = 0, fn = 0, fwn = 0;
    for (int r = 0; r < runs; r++) {
        if (w_ok[r]) {
            w_rps[wn] = wrps[r];
            w_cpu[wn] = wcpu100k[r];
            s_w[wn++] = cpu100k[r] / wcpu100k[r];
        }
        if (f_ok[r]) {
            f_rps[fn] = frps[r];
            f_cpu[fn] = fcpu100k[r];
            s_f[fn++] = 10 * (cpu100k[r] - fcpu100k[r]);
        }
        if (w_ok[r] && f_ok[r]) {
            f_w[fwn] = fcpu100k[r] / wcpu100k[r];
            room[fwn++] = 10 * (0.8 * wcpu100k[r] - fcpu100k[r]);
        }
    }
    double s_rps = bench_median(rps, runs), s_cpu = bench_median(cpu100k, runs);
    printf("\nA. keep-alive GET 1 KiB, 50 connections, %.0f s (median of %d)\n", duration, runs);
    printf("   %-8s %12s %22s\n", "client", "requests/s", "CPU-s per 100k req");
    printf("   %-8s %12.0f %22.3f\n", "sluice", s_rps, s_cpu);
    if (wn > 0)
        printf("   %-8s %12.0f %22.3f\n", "wrk", bench_median(w_rps, wn), bench_median(w_cpu, wn));
    else
        printf("   wrk: %s, skipped\n", with_wrk ? "failed" : "not installed");
    if (fn > 0)
        printf("   %-8s %12.0f %22.3f   (send, then count bytes: no parsing)\n", "floor",
               bench_median(f_rps, fn), bench_median(f_cpu, fn));
    if (floor_failed)
        printf("   floor: FAILED in run %d (its reason is on stderr)\n", fn);
    if (wn > 0) {
        double w = bench_median(w_cpu, wn);
        printf("   sluice CPU per request = %.2fx wrk's (target <= 0.80): %s\n", s_cpu / w,
               s_cpu / w <= 0.8 ? "MET" : "NOT MET");
        printf("   (median of the per-turn ratios, each sluice run beside the wrk run after it: "
               "%.2fx)\n",
               bench_median(s_w, wn));
    }
    if (fwn > 0) {
        double rm = bench_median(room, fwn);
        printf("   floor CPU per request = %.2fx wrk's (median of the per-turn ratios)\n",
               bench_median(f_w, fwn));
        printf("   us per request above the floor (per-turn medians): 0.8 x wrk - floor = %.2f%s; "
               "sluice - floor = %.2f\n",
               rm, rm < 0 ? " (target below the floor)" : "", bench_median(s_f, fn));
    } else if (fn > 0) {
        printf("   sluice is %.2f us per request above the floor (median per turn)\n",
               bench_median(s_f, fn));
    }
    printf("\n");
}

/* ---- B: 1000 URLs, 50 at a time ------------------------------------------------- */

static void bench_many(void)
{
    enum { N = 1000 };
    char list[512], url[128];
    double sw[MAX_RUNS], cw[MAX_RUNS], aw[MAX_RUNS];
    long srss[MAX_RUNS], crss[MAX_RUNS], arss[MAX_RUNS];
    int cn = 0, an = 0, sn = 0;
    FILE *f;

    snprintf(list, sizeof(list), "%s/urls.txt", dir);
    f = fopen(list, "w");
    for (int i = 0; i < N; i++)
        fprintf(f, "http://127.0.0.1:%d/1k.bin?i=%d\n", port, i);
    fclose(f);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/1k.bin?i=", port);

    for (int r = 0; r < runs; r++) {
        char *argv[] = {sluice_path, "-s", "-Z", "--parallel-max", "50", "-i", list, NULL};
        struct bench_child cr;
        int rc = bench_run_child(argv, "/dev/null", false, &cr);
        if (rc != 0) {
            printf("bench=http test=1000urls impl=sluice run=%d exit=%d (failed)\n", r, rc);
            continue;
        }
        sw[sn] = cr.wall;
        srss[sn] = cr.maxrss_kb;
        printf("bench=http test=1000urls impl=sluice run=%d wall_s=%.3f cpu_s=%.3f maxrss_kb=%ld\n",
               r, cr.wall, cr.cpu, cr.maxrss_kb);
        sn++;
    }
    if (bench_have("curl")) {
        char **argv = calloc(N + 8, sizeof(char *));
        static char urls[N][160];
        int a = 0;
        argv[a++] = "curl";
        argv[a++] = "-s";
        argv[a++] = "--parallel";
        argv[a++] = "--parallel-max";
        argv[a++] = "50";
        for (int i = 0; i < N; i++) {
            snprintf(urls[i], sizeof(urls[i]), "%s%d", url, i);
            argv[a++] = urls[i];
        }
        for (int r = 0; r < runs; r++) {
            struct bench_child cr;
            if (bench_run_child(argv, "/dev/null", false, &cr) != 0)
                continue;
            cw[cn] = cr.wall;
            crss[cn] = cr.maxrss_kb;
            printf("bench=http test=1000urls impl=curl run=%d wall_s=%.3f cpu_s=%.3f "
                   "maxrss_kb=%ld\n",
                   r, cr.wall, cr.cpu, cr.maxrss_kb);
            cn++;
        }
        free(argv);
    }
    /* The Python that has aiohttp: `python3` on PATH, else Debian's (whose
     * python3-aiohttp a pyenv or venv python3 on PATH does not see). */
    const char *python = NULL;
    if (system("python3 -c 'import aiohttp' >/dev/null 2>&1") == 0)
        python = "python3";
    else if (system("/usr/bin/python3 -c 'import aiohttp' >/dev/null 2>&1") == 0)
        python = "/usr/bin/python3";
    if (python != NULL) {
        char script[1024];
        snprintf(script, sizeof(script),
                 "import asyncio, aiohttp\n"
                 "async def main():\n"
                 "    sem = asyncio.Semaphore(50)\n"
                 "    conn = aiohttp.TCPConnector(limit=50)\n"
                 "    async with aiohttp.ClientSession(connector=conn) as s:\n"
                 "        async def get(i):\n"
                 "            async with sem:\n"
                 "                async with s.get('%s%%d' %% i) as r:\n"
                 "                    await r.read()\n"
                 "        await asyncio.gather(*(get(i) for i in range(%d)))\n"
                 "asyncio.run(main())\n",
                 url, N);
        char *argv[] = {(char *)python, "-c", script, NULL};
        for (int r = 0; r < runs; r++) {
            struct bench_child cr;
            if (bench_run_child(argv, "/dev/null", false, &cr) != 0)
                continue;
            aw[an] = cr.wall;
            arss[an] = cr.maxrss_kb;
            printf("bench=http test=1000urls impl=aiohttp run=%d wall_s=%.3f cpu_s=%.3f "
                   "maxrss_kb=%ld\n",
                   r, cr.wall, cr.cpu, cr.maxrss_kb);
            an++;
        }
    }
    printf("\nB. 1000 URLs, 50 at a time (median of %d; wall time of the whole process)\n", runs);
    printf("   %-8s %10s %14s\n", "client", "wall ms", "peak RSS MiB");
    double s_wall = 0, s_rss = 0;
    if (sn > 0) {
        double rs[MAX_RUNS];
        for (int i = 0; i < sn; i++)
            rs[i] = (double)srss[i];
        s_wall = bench_median(sw, sn);
        s_rss = bench_median(rs, sn) / 1024;
        printf("   %-8s %10.1f %14.2f\n", "sluice", s_wall * 1e3, s_rss);
    } else {
        printf("   sluice: failed\n");
    }
    double c_wall = 0;
    if (cn > 0) {
        double rs[MAX_RUNS];
        for (int i = 0; i < cn; i++)
            rs[i] = (double)crss[i];
        c_wall = bench_median(cw, cn);
        printf("   %-8s %10.1f %14.2f\n", "curl", c_wall * 1e3, bench_median(rs, cn) / 1024);
    }
    if (an > 0) {
        double rs[MAX_RUNS];
        for (int i = 0; i < an; i++)
            rs[i] = (double)arss[i];
        printf("   %-8s %10.1f %14.2f\n", "aiohttp", bench_median(aw, an) * 1e3,
               bench_median(rs, an) / 1024);
    }
    if (cn > 0 && sn > 0)
        printf("   sluice wall = %.2fx curl's (target <= 0.50): %s\n", s_wall / c_wall,
               s_wall / c_wall <= 0.5 ? "MET" : "NOT MET");
    if (sn > 0)
        printf("   sluice peak RSS %.2f MiB (target <= 6 MiB): %s\n", s_rss,
               s_rss <= 6.0 ? "MET" : "NOT MET");
    printf("\n");
}

/* ---- C: 1 GiB --------------------------------------------------------------------- */

/* CPU seconds nginx has used so far (its single worker is the process
 * itself: master_process off), from /proc; -1 if unknown. */
static double nginx_cpu_s(void)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)nginx_pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* fields after "(comm)": state is field 3 */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double bench_big_one(const char *impl, const char *dest, double *cpu_out)
{
    double mbs[MAX_RUNS], cpu[MAX_RUNS];
    int n = 0;
    char url[128], out[512];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/1g.bin", port);
    snprintf(out, sizeof(out), "%s/%s", dir, "download.bin");
    for (int r = 0; r < runs; r++) {
        struct bench_child cr;
        const char *target = strcmp(dest, "file") == 0 ? out : "/dev/null";
        char *argv_s[] = {sluice_path, "-s", "-o", (char *)target, url, NULL};
        char *argv_c[] = {"curl", "-s", "-o", (char *)target, url, NULL};
        double srv0 = nginx_cpu_s();
        int rc =
            bench_run_child(strcmp(impl, "sluice") == 0 ? argv_s : argv_c, "/dev/null", false, &cr);
        double srv = nginx_cpu_s() - srv0;
        unlink(out);
        if (rc != 0)
            continue;
        mbs[n] = (double)(1ull << 30) / 1e6 / cr.wall;
        cpu[n] = cr.cpu;
        /* server_cpu_s close to wall_s: nginx's one worker was the limit. */
        printf("bench=http test=1gib dest=%s impl=%s run=%d wall_s=%.3f cpu_s=%.3f MBps=%.0f "
               "server_cpu_s=%.2f\n",
               dest, impl, r, cr.wall, cr.cpu, mbs[n], srv);
        fflush(stdout);
        n++;
    }
    if (n == 0)
        return 0;
    *cpu_out = bench_median(cpu, n);
    return bench_median(mbs, n);
}

static double iperf_ceiling(void)
{
    pid_t srv;
    double v = 0;

    if (!bench_have("iperf3"))
        return 0;
    int p = bench_free_port();
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", p);
    srv = fork();
    if (srv == 0) {
        bench_pin(0);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        /* Not "-1" (one-off): the bench_port_open() probe below would be taken
         * as that one client, and the real client would find no server. */
        execlp("iperf3", "iperf3", "-s", "-B", "127.0.0.1", "-p", ps, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 50 && !bench_port_open(p); i++)
        usleep(50000);
    char *argv[] = {"iperf3", "-c", "127.0.0.1", "-p", ps, "-n", "1G", "-f", "m", NULL};
    struct bench_child cr;
    bench_run_child(argv, NULL, false, &cr);
    /* "... 1.00 GBytes  23456 Mbits/sec  receiver" */
    char *rcv = strstr(cr.out, "receiver");
    if (rcv != NULL) {
        char *m = rcv;
        while (m > cr.out && strncmp(m, "Mbits/sec", 9) != 0)
            m--;
        char *num = m;
        while (num > cr.out && num[-1] == ' ')
            num--;
        while (num > cr.out && (num[-1] == '.' || (num[-1] >= '0' && num[-1] <= '9')))
            num--;
        v = strtod(num, NULL) / 8.0; /* MB/s */
    }
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    return v;
}

/* The same download by a minimal client: one blocking recv() loop into a
 * 256 KiB buffer, no parsing, no output, in a child pinned to CPU 1. A
 * reference point, not a ceiling: a blocking reader processes the socket's
 * backlog in its own context, so it can be slower than an epoll client. */
static double reader_ceiling(double *cpu_out)
{
    double mbs[MAX_RUNS], cpu[MAX_RUNS];
    int n = 0;

    for (int r = 0; r < runs; r++) {
        struct rusage ru;
        int status;
        double t0 = bench_now_s();
        pid_t pid = fork();
        if (pid == 0) {
            static char buf[256 * 1024];
            char req[128];
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_port = htons((uint16_t)port),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            uint64_t total = 0;
            ssize_t k;
            bench_pin(1);
            if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                _exit(1);
            int len = snprintf(req, sizeof(req),
                               "GET /1g.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Connection: close\r\n\r\n");
            if (write(fd, req, (size_t)len) != len)
                _exit(1);
            while ((k = recv(fd, buf, sizeof(buf), 0)) > 0)
                total += (uint64_t)k;
            _exit(total > (1ull << 30) ? 0 : 1);
        }
        if (pid < 0 || wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            continue;
        double wall = bench_now_s() - t0;
        mbs[n] = (double)(1ull << 30) / 1e6 / wall;
        cpu[n] = bench_tv_s(ru.ru_utime) + bench_tv_s(ru.ru_stime);
        printf("bench=http test=1gib dest=none impl=recv-loop run=%d wall_s=%.3f cpu_s=%.3f "
               "MBps=%.0f\n",
               r, wall, cpu[n], mbs[n]);
        fflush(stdout);
        n++;
    }
    if (n == 0)
        return 0;
    *cpu_out = bench_median(cpu, n);
    return bench_median(mbs, n);
}

static void bench_big(void)
{
    double s_cpu = 0, c_cpu = 0, sf_cpu = 0, cf_cpu = 0, r_cpu = 0;
    double ceiling = iperf_ceiling();
    double reader = reader_ceiling(&r_cpu);
    double s_null = bench_big_one("sluice", "null", &s_cpu);
    double c_null = bench_have("curl") ? bench_big_one("curl", "null", &c_cpu) : 0;
    double s_file = bench_big_one("sluice", "file", &sf_cpu);
    double c_file = bench_have("curl") ? bench_big_one("curl", "file", &cf_cpu) : 0;

    printf("\nC. 1 GiB download (median of %d)\n", runs);
    printf("   %-22s %10s %10s\n", "client", "MB/s", "CPU s");
    printf("   %-22s %10.0f %10.3f\n", "sluice -> /dev/null", s_null, s_cpu);
    printf("   %-22s %10.0f %10.3f\n", "curl   -> /dev/null", c_null, c_cpu);
    printf("   %-22s %10.0f %10.3f\n", "sluice -> file", s_file, sf_cpu);
    printf("   %-22s %10.0f %10.3f\n", "curl   -> file", c_file, cf_cpu);
    if (reader > 0)
        printf("   %-22s %10.0f %10.3f\n", "recv() loop -> nothing", reader, r_cpu);
    if (ceiling > 0)
        printf("   %-22s %10.0f\n", "iperf3 ceiling", ceiling);
    if (c_null > 0)
        printf("   /dev/null: sluice = %.2fx curl (target >= 1.3): %s\n", s_null / c_null,
               s_null / c_null >= 1.3 ? "MET" : "NOT MET");
    if (ceiling > 0)
        printf("   /dev/null: sluice = %.0f%% of the ceiling (target >= 80%%): %s\n",
               100 * s_null / ceiling, s_null / ceiling >= 0.8 ? "MET" : "NOT MET");
    if (reader > 0 && c_null > 0)
        printf("   (the minimal recv() loop is %.2fx curl; sluice is %.2fx the loop)\n",
               reader / c_null, s_null / reader);
    if (c_file > 0)
        printf("   file: sluice = %.2fx curl (target >= 1.5): %s\n", s_file / c_file,
               s_file / c_file >= 1.5 ? "MET" : "NOT MET");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            duration = 2;
            runs = 1;
            skip_big = true;
        } else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
            duration = atof(argv[++i]);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
            if (runs < 1 || runs > MAX_RUNS)
                runs = 3;
        } else if (strcmp(argv[i], "--no-1g") == 0) {
            skip_big = true;
        } else if (strcmp(argv[i], "--sluice") == 0 && i + 1 < argc) {
            snprintf(sluice_path, sizeof(sluice_path), "%s", argv[++i]);
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--serve") == 0) {
            serve = true;
        } else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
            client_url = argv[++i];
        } else if (strcmp(argv[i], "--floor-url") == 0 && i + 1 < argc) {
            floor_url = argv[++i];
        } else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc) {
            max_requests = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr,
                    "usage: bench-http [--quick] [--duration S] [--runs N] [--no-1g] "
                    "[--sluice PATH] [--only A|B|C]\n"
                    "       bench-http --serve [--no-1g]       (nginx only, until a signal)\n"
                    "       bench-http --url URL [--duration S | --requests N]\n"
                    "                                          (sluice's client of A only)\n"
                    "       bench-http --floor-url URL [--duration S | --requests N]\n"
                    "                                          (the floor client of A only)\n");
            return 2;
        }
    }
    if (only != NULL && strchr(only, 'C') == NULL)
        skip_big = true; /* no need for the 1 GiB file */
    if (client_url != NULL) {
        struct ka k;
        double wall, cpu;
        ka_run(client_url, &k, &wall, &cpu);
        printf("bench=http test=keepalive impl=sluice requests=%llu failed=%llu wall_s=%.3f "
               "cpu_s=%.3f rps=%.0f cpu_s_per_100k=%.3f\n",
               (unsigned long long)k.done, (unsigned long long)k.failed, wall, cpu,
               (double)k.done / wall, k.done ? cpu / (double)k.done * 1e5 : 0.0);
        return k.failed == 0 ? 0 : 1;
    }
    if (floor_url != NULL) {
        /* Also how section A runs it, as a child: see ka_floor(). */
        uint64_t n = 0;
        size_t len = 0;
        double wall = 0;
        struct rusage ru;
        bench_pin(1);
        if (floor_run(floor_url, &n, &len, &wall) < 0)
            return 1;
        getrusage(RUSAGE_SELF, &ru);
        double cpu = bench_tv_s(ru.ru_utime) + bench_tv_s(ru.ru_stime);
        printf("bench=http test=keepalive impl=floor requests=%llu wall_s=%.3f cpu_s=%.3f "
               "rps=%.0f cpu_s_per_100k=%.3f response_bytes=%zu\n",
               (unsigned long long)n, wall, cpu, (double)n / wall, cpu / (double)n * 1e5, len);
        return 0;
    }
    ssize_t self_len = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
    if (self_len <= 0) {
        fprintf(stderr, "bench-http: cannot find this program: %s\n", strerror(errno));
        return 1;
    }
    self_path[self_len] = '\0';
    if (sluice_path[0] == '\0') {
        /* The CLI next to this program in the build tree. */
        char *slash = strrchr(self_path, '/');
        snprintf(sluice_path, sizeof(sluice_path), "%.*s/sluice",
                 slash != NULL ? (int)(slash - self_path) : 1, slash != NULL ? self_path : ".");
    }
    signal(SIGPIPE, SIG_IGN);
    if (access("/usr/sbin/nginx", X_OK) != 0) {
        fprintf(stderr, "bench-http: nginx is not installed (scripts/deps.sh bench)\n");
        return 1;
    }
    if (nginx_start() < 0) {
        fprintf(stderr, "bench-http: could not start nginx in %s\n", dir);
        nginx_stop();
        return 1;
    }
    printf("bench-http: nginx on 127.0.0.1:%d pinned to CPU 0, clients on CPU 1; %d run(s)\n\n",
           port, runs);
    if (serve) {
        printf("bench-http: serving http://127.0.0.1:%d/ (1k.bin%s); stop with a signal\n", port,
               skip_big ? "" : ", 1g.bin");
        fflush(stdout);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        while (!stop_serving)
            pause();
        nginx_stop();
        return 0;
    }
    if (only == NULL || strchr(only, 'A') != NULL)
        bench_keepalive();
    if (only == NULL || strchr(only, 'B') != NULL)
        bench_many();
    if (!skip_big && (only == NULL || strchr(only, 'C') != NULL))
        bench_big();
    nginx_stop();
    return exit_status;
}
