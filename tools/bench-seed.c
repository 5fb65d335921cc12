/*
 * bench-seed.c -- "sequential vs thread pool vs async", reproduced with sluice's own means.
 *
 * Every request is GET /delay/50 on the faultserver (tests/integ/faultserver.c), which answers
 * after 50 ms and holds thousands of waiting connections, so wall time is set by how many
 * requests a client keeps in flight, and the floor is requests x 50 ms / in-flight. The server
 * is pinned to CPU 0, every client to CPU 1, and each row is a process of its own, so wait4()
 * gives its CPU time and peak RSS. Each figure is the median of --runs runs (default 3).
 *
 *   (a) sequential: one blocking keep-alive connection, one request after another (this
 *       program, re-executed as a worker; wall is measured inside it, around the requests);
 *   (b) threads: 20 threads with a blocking keep-alive connection each, taking request
 *       numbers from a shared atomic counter (a worker too, wall measured inside);
 *   (c) sluice: `sluice -s -Z --parallel-max P -i urls.txt`, the whole process;
 *   (d) peers, when installed: aiohttp (TCPConnector limit P) and `curl --parallel
 *       --parallel-max P --parallel-immediate URL...`, whole processes.
 *
 * Table 1 is 100 requests at 50 in flight; table 2 is 10,000 at 1000 in flight, where (a) is
 * skipped (500 s) and (b) runs once (25 s). The server's /stats counts what each run sent.
 * Table 0 is what a process costs before it waits on the network: each client, started
 * fresh, makes one GET of /delay/0; (a) here is this program's blocking client alone.
 * Output: one `bench=seed ...` line per run, then the tables and whether the targets hold.
 */
#include <sluice.h>

#include "bench-common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 9 /* at least START_RUNS */
#define DELAY_MS 50
#define POOL_THREADS 20

static int runs = 3;
static bool quick;
static char dir[256];
static int port;
static pid_t server_pid = -1;
static int server_out = -1;
static char self_path[512];
static char sluice_path[512];
static char server_path[512];
static char python_path[512];

/* The directory of this executable, for the CLI and the faultserver in the build tree. */
static void exe_dir(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    out[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(out, '/');
    if (slash != NULL)
        *slash = '\0';
}

/* 10,000 requests at 1000 in flight need well over 1024 descriptors on both ends. Children
 * (the server, the CLI, the peers) inherit the raised limit. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* ---- a blocking HTTP/1.1 client: rows (a) and (b), and /stats ---------------------- */

struct kconn {
    int fd; /* -1 when not connected */
    char buf[4096];
};

static int kc_connect(struct kconn *k)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;

    k->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (k->fd < 0)
        return -1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(k->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(k->fd);
        k->fd = -1;
        return -1;
    }
    return 0;
}

static void kc_close(struct kconn *k)
{
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
}

/*
 * One GET on the kept-alive connection, (re)connecting when there is none. Reads the whole
 * response: the head up to the blank line, then exactly Content-Length body bytes (the server
 * frames every /delay and /stats answer with it; a response without one counts as a failure).
 * The body, up to the buffer, is left NUL-terminated in k->buf. Closes the connection when the
 * server says `Connection: close` or anything goes wrong. Returns the status code or -1.
 */
static int kc_get_once(struct kconn *k, const char *path)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    size_t len = 0, head_len = 0;
    long long body_len = -1;
    int status = -1;
    bool close_after = false;

    if (k->fd < 0 && kc_connect(k) < 0)
        return -1;
    if (send(k->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto fail;
    while (head_len == 0) {
        ssize_t r = recv(k->fd, k->buf + len, sizeof(k->buf) - 1 - len, 0);
        if (r <= 0)
            goto fail;
        len += (size_t)r;
        k->buf[len] = '\0';
        char *end = strstr(k->buf, "\r\n\r\n");
        if (end != NULL)
            head_len = (size_t)(end - k->buf) + 4;
        else if (len == sizeof(k->buf) - 1)
            goto fail; /* a head this large is not what the server sends */
    }
    if (sscanf(k->buf, "HTTP/1.%*d %d", &status) != 1)
        goto fail;
    for (char *line = strstr(k->buf, "\r\n") + 2; line < k->buf + head_len - 2;) {
        char *eol = strstr(line, "\r\n");
        *eol = '\0'; /* the head is parsed once; its bytes are not needed afterwards */
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            body_len = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "Connection:", 11) == 0 && strcasestr(line, "close") != NULL)
            close_after = true;
        line = eol + 2;
    }
    if (body_len < 0)
        goto fail;
    /* Keep the first bytes of the body at k->buf for /stats; drop the rest as it comes. */
    size_t have_body = len - head_len;
    memmove(k->buf, k->buf + head_len, have_body);
    size_t keep = have_body;
    while ((long long)have_body < body_len) {
        char sink[4096];
        ssize_t r = recv(k->fd, sink, sizeof(sink), 0);
        if (r <= 0)
            goto fail;
        size_t room = sizeof(k->buf) - 1 - keep, take = (size_t)r < room ? (size_t)r : room;
        memcpy(k->buf + keep, sink, take);
        keep += take;
        have_body += (size_t)r;
    }
    if ((long long)have_body != body_len)
        goto fail; /* we never pipeline, so extra bytes mean a confused exchange */
    k->buf[keep] = '\0';
    if (close_after)
        kc_close(k);
    return status;

fail:
    kc_close(k);
    return -1;
}

/* A kept-alive connection the server dropped while idle fails at once: retry such a GET once
 * on a fresh connection, as any HTTP client does (GET is idempotent). */
static int kc_get(struct kconn *k, const char *path)
{
    bool reused = k->fd >= 0;
    int status = kc_get_once(k, path);
    if (status < 0 && reused)
        status = kc_get_once(k, path);
    return status;
}

/* ---- workers: rows (a) and (b), run as `bench-seed --worker KIND N PORT` ------------- */

struct pool {
    atomic_int next;
    atomic_int ok, failed;
    int total;
};

static void *pool_thread(void *arg)
{
    struct pool *p = arg;
    struct kconn k = {.fd = -1};
    char path[64];
    int i;

    while ((i = atomic_fetch_add(&p->next, 1)) < p->total) {
        snprintf(path, sizeof(path), "/delay/%d?i=%d", DELAY_MS, i);
        if (kc_get(&k, path) == 200)
            atomic_fetch_add(&p->ok, 1);
        else
            atomic_fetch_add(&p->failed, 1);
    }
    kc_close(&k);
    return NULL;
}

/* Prints `wall_s=... ok=... failed=...` for the parent; wall covers the requests only (and,
 * for the pool, creating and joining its threads), not the process start. */
static int worker_main(const char *kind, int total)
{
    struct pool p = {.total = total};
    double t0 = bench_now_s();

    if (strcmp(kind, "sequential") == 0) {
        pool_thread(&p);
    } else if (strcmp(kind, "startup") == 0) { /* one GET that is answered at once */
        struct kconn k = {.fd = -1};
        atomic_fetch_add(kc_get(&k, "/delay/0") == 200 ? &p.ok : &p.failed, 1);
        kc_close(&k);
    } else if (strcmp(kind, "threads") == 0) {
        pthread_t tids[POOL_THREADS];
        int started = 0;
        for (int t = 0; t < POOL_THREADS; t++)
            if (pthread_create(&tids[t], NULL, pool_thread, &p) == 0)
                started++;
        for (int t = 0; t < started; t++)
            pthread_join(tids[t], NULL);
        if (started == 0)
            return 1;
    } else {
        return 2;
    }
    printf("wall_s=%.6f ok=%d failed=%d\n", bench_now_s() - t0, atomic_load(&p.ok),
           atomic_load(&p.failed));
    return atomic_load(&p.failed) == 0 ? 0 : 1;
}

/* ---- the faultserver ------------------------------------------------------------------- */

static int server_start(void)
{
    int pfd[2];
    char line[64];
    size_t len = 0;

    if (pipe(pfd) < 0)
        return -1;
    server_pid = fork();
    if (server_pid < 0)
        return -1;
    if (server_pid == 0) {
        bench_pin(0);
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed benchmark */
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(server_path, "faultserver", "--host", "127.0.0.1", "--port", "0", "--max-seconds",
              "900", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    server_out = pfd[0]; /* stays open: a late write must not SIGPIPE the server */
    while (len < sizeof(line) - 1 && memchr(line, '\n', len) == NULL) {
        struct pollfd p = {.fd = server_out, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            return -1;
        ssize_t n = read(server_out, line + len, sizeof(line) - 1 - len);
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
    line[len] = '\0';
    return sscanf(line, "PORT %d", &port) == 1 ? 0 : -1;
}

static void server_stop(void)
{
    char cmd[300];

    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
    if (server_out >= 0)
        close(server_out);
    if (dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench-seed: could not remove %s\n", dir);
    }
}

/* Zero the server's counters before a run; each /stats call is a fresh connection. */
static void stats_reset(void)
{
    struct kconn k = {.fd = -1};
    kc_get(&k, "/stats/reset");
    kc_close(&k);
}

/* Connections and requests since the reset, this query's own connection left out. */
static void stats_read(long *conns, long *reqs)
{
    struct kconn k = {.fd = -1};
    *conns = *reqs = -1;
    if (kc_get(&k, "/stats") == 200 &&
        sscanf(k.buf, "connections=%ld requests=%ld", conns, reqs) == 2)
        (*conns)--;
    kc_close(&k);
}

/* ---- child processes --------------------------------------------------------- */

/* ---- the rows ---------------------------------------------------------------------------- */

enum { ROW_SEQ, ROW_THREADS, ROW_SLUICE, ROW_AIOHTTP, ROW_CURL, NROWS };

static const char *const row_names[NROWS] = {"sequential", "threads", "sluice", "aiohttp", "curl"};

struct row {
    char label[48];
    char skipped[160]; /* why there is no figure, or empty */
    int n;             /* successful runs */
    double wall[MAX_RUNS], cpu[MAX_RUNS], rss_kb[MAX_RUNS], conns[MAX_RUNS];
};

struct table {
    int total, inflight;
    char test[32];
    char list[512]; /* urls.txt for the CLI */
    char base[128]; /* URL prefix; the request number follows */
    struct row rows[NROWS];
};

/* One run of one row: run the child, check it, record it, print the machine-readable line. */
static void measure(struct table *t, int row, int run, char *const argv[], bool worker)
{
    struct bench_child cr;
    struct row *w = &t->rows[row];
    long conns, reqs;
    double wall;

    stats_reset();
    int rc = bench_run_child(argv, worker ? NULL : "/dev/null", false, &cr);
    stats_read(&conns, &reqs);
    wall = cr.wall;
    if (worker && rc == 0) {
        char *p = strstr(cr.out, "wall_s=");
        if (p == NULL)
            rc = 1;
        else
            wall = strtod(p + 7, NULL);
    }
    /* Every row must have sent every request, whatever its exit status says. */
    if (rc == 0 && reqs != t->total)
        rc = 1;
    printf("bench=seed test=%s impl=%s run=%d exit=%d wall_s=%.4f proc_wall_s=%.4f cpu_s=%.4f "
           "maxrss_kb=%ld server_conns=%ld server_reqs=%ld\n",
           t->test, row_names[row], run, rc, wall, cr.wall, cr.cpu, cr.maxrss_kb, conns, reqs);
    fflush(stdout);
    if (rc != 0)
        return;
    w->wall[w->n] = wall;
    w->cpu[w->n] = cr.cpu;
    w->rss_kb[w->n] = (double)cr.maxrss_kb;
    w->conns[w->n] = (double)conns;
    w->n++;
}

static void run_worker_row(struct table *t, int row, const char *kind, int nruns)
{
    char total[16], ports[16];
    snprintf(total, sizeof(total), "%d", t->total);
    snprintf(ports, sizeof(ports), "%d", port);
    char *argv[] = {self_path, "--worker", (char *)kind, total, ports, NULL};
    for (int r = 0; r < nruns; r++)
        measure(t, row, r, argv, true);
}

static void run_sluice(struct table *t)
{
    char par[16];
    snprintf(par, sizeof(par), "%d", t->inflight);
    char *argv[] = {sluice_path, "-s", "-Z", "--parallel-max", par, "-i", t->list, NULL};
    if (access(sluice_path, X_OK) != 0) {
        snprintf(t->rows[ROW_SLUICE].skipped, sizeof(t->rows[0].skipped),
                 "no sluice CLI next to bench-seed (--sluice PATH)");
        return;
    }
    for (int r = 0; r < runs; r++)
        measure(t, ROW_SLUICE, r, argv, false);
}

static void run_aiohttp(struct table *t)
{
    char script[1024];
    if (python_path[0] == '\0') {
        snprintf(t->rows[ROW_AIOHTTP].skipped, sizeof(t->rows[0].skipped), "aiohttp not installed");
        return;
    }
    /* The semaphore keeps 10,000 coroutines from all queueing inside the connector. */
    snprintf(script, sizeof(script),
             "import asyncio, aiohttp\n"
             "async def main():\n"
             "    sem = asyncio.Semaphore(%d)\n"
             "    conn = aiohttp.TCPConnector(limit=%d)\n"
             "    async with aiohttp.ClientSession(connector=conn) as s:\n"
             "        async def get(i):\n"
             "            async with sem:\n"
             "                async with s.get('%s%%d' %% i) as r:\n"
             "                    await r.read()\n"
             "                    assert r.status == 200\n"
             "        await asyncio.gather(*(get(i) for i in range(%d)))\n"
             "asyncio.run(main())\n",
             t->inflight, t->inflight, t->base, t->total);
    char *argv[] = {python_path, "-c", script, NULL};
    for (int r = 0; r < runs; r++)
        measure(t, ROW_AIOHTTP, r, argv, false);
}

static void run_curl(struct table *t)
{
    char par[16];
    char **argv;
    char *urls;
    size_t ulen = sizeof(t->base) + 16;
    int a = 0;

    if (!bench_have("curl")) {
        snprintf(t->rows[ROW_CURL].skipped, sizeof(t->rows[0].skipped), "curl not installed");
        return;
    }
    argv = calloc((size_t)t->total + 8, sizeof(char *));
    urls = malloc((size_t)t->total * ulen);
    if (argv == NULL || urls == NULL) {
        snprintf(t->rows[ROW_CURL].skipped, sizeof(t->rows[0].skipped), "out of memory");
        free(argv);
        free(urls);
        return;
    }
    snprintf(par, sizeof(par), "%d", t->inflight);
    argv[a++] = "curl";
    argv[a++] = "-s";
    argv[a++] = "--parallel";
    argv[a++] = "--parallel-max";
    argv[a++] = par;
    argv[a++] = "--parallel-immediate";
    for (int i = 0; i < t->total; i++) {
        snprintf(urls + (size_t)i * ulen, ulen, "%s%d", t->base, i);
        argv[a++] = urls + (size_t)i * ulen;
    }
    for (int r = 0; r < runs; r++)
        measure(t, ROW_CURL, r, argv, false);
    free(argv);
    free(urls);
}

/* ---- start-up: one GET /delay/0, whole process --------------------------------------- */

#define START_RUNS 9

struct startup {
    const char *label;
    int n;
    double wall[START_RUNS], rss_kb[START_RUNS];
};

static struct startup starts[NROWS];

/* What a process costs before it can wait on the network: each client, started fresh, makes
 * one GET of /delay/0 (answered at once), START_RUNS times; median wall and peak RSS. (a)
 * is this program's blocking client, re-executed as a worker and timed from outside here. */
static void run_startup(void)
{
    char url[128], ports[16], script[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/delay/0", port);
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(script, sizeof(script),
             "import asyncio, aiohttp\n"
             "async def main():\n"
             "    async with aiohttp.ClientSession() as s:\n"
             "        async with s.get('%s') as r:\n"
             "            await r.read()\n"
             "asyncio.run(main())\n",
             url);
    char *seq[] = {self_path, "--worker", "startup", "1", ports, NULL};
    char *sl[] = {sluice_path, "-s", url, NULL};
    char *py[] = {python_path, "-c", script, NULL};
    char *cu[] = {"curl", "-s", url, NULL};
    struct {
        int row;
        char **argv;
        bool present;
    } c[] = {{ROW_SEQ, seq, true},
             {ROW_SLUICE, sl, access(sluice_path, X_OK) == 0},
             {ROW_AIOHTTP, py, python_path[0] != '\0'},
             {ROW_CURL, cu, bench_have("curl")}};

    starts[ROW_SEQ].label = "(a) this program's C client";
    starts[ROW_SLUICE].label = "(c) sluice";
    starts[ROW_AIOHTTP].label = "(d) aiohttp";
    starts[ROW_CURL].label = "(d) curl";
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct startup *st = &starts[c[i].row];
        for (int r = 0; c[i].present && r < START_RUNS; r++) {
            struct bench_child cr;
            if (bench_run_child(c[i].argv, "/dev/null", false, &cr) != 0)
                continue;
            printf("bench=seed test=startup impl=%s run=%d proc_wall_s=%.4f maxrss_kb=%ld\n",
                   row_names[c[i].row], r, cr.wall, cr.maxrss_kb);
            st->wall[st->n] = cr.wall;
            st->rss_kb[st->n] = (double)cr.maxrss_kb;
            st->n++;
        }
    }
    fflush(stdout);
}

static void print_startup(void)
{
    printf("\n0. start-up: one GET /delay/0 in a fresh process (median of %d)\n", START_RUNS);
    printf("   %-28s %9s %9s\n", "client", "wall ms", "RSS MiB");
    for (int i = 0; i < NROWS; i++) {
        const struct startup *st = &starts[i];
        if (st->label == NULL)
            continue;
        if (st->n == 0) {
            printf("   %-28s not installed or failed\n", st->label);
            continue;
        }
        printf("   %-28s %9.2f %9.2f\n", st->label, bench_median(st->wall, st->n) * 1e3,
               bench_median(st->rss_kb, st->n) / 1024);
    }
}

/* ---- the table ----------------------------------------------------------------------- */

/* `seq_per_req` is (a)'s wall per request from table 1 (0 when unknown): table 2 has no (a)
 * row, so its speed-ups are against that estimate. */
static void print_table(const struct table *t, const char *title, double seq_per_req)
{
    double floor_s = (double)t->total * DELAY_MS / 1e3 / t->inflight;
    double seq_wall = 0, min_rss = 0, min_peer_rss = 0;
    const struct row *s = &t->rows[ROW_SLUICE];
    bool estimated = false;

    if (t->rows[ROW_SEQ].n > 0) {
        seq_wall = bench_median(t->rows[ROW_SEQ].wall, t->rows[ROW_SEQ].n);
    } else if (seq_per_req > 0) {
        seq_wall = seq_per_req * t->total;
        estimated = true;
    }
    printf("\n%s\n", title);
    printf("   floor: %d x %d ms / %d in flight = %.0f ms\n", t->total, DELAY_MS, t->inflight,
           floor_s * 1e3);
    printf("   %-28s %9s %9s %8s %9s %7s %8s %9s\n", "client", "wall ms", "req/s", "CPU ms",
           "RSS MiB", "conns", "x floor", "speed-up");
    for (int i = 0; i < NROWS; i++) {
        const struct row *w = &t->rows[i];
        if (w->n == 0) {
            printf("   %-28s %s\n", w->label, w->skipped[0] ? w->skipped : "failed (see above)");
            continue;
        }
        double wall = bench_median(w->wall, w->n), rss = bench_median(w->rss_kb, w->n) / 1024;
        char up[16] = "-";
        if (seq_wall > 0)
            snprintf(up, sizeof(up), "%s%.1fx", estimated ? "~" : "", seq_wall / wall);
        printf("   %-28s %9.1f %9.0f %8.1f %9.2f %7.0f %8.2f %9s\n", w->label, wall * 1e3,
               t->total / wall, bench_median(w->cpu, w->n) * 1e3, rss, bench_median(w->conns, w->n),
               wall / floor_s, up);
        if (i != ROW_SLUICE && (min_rss == 0 || rss < min_rss))
            min_rss = rss;
        if ((i == ROW_AIOHTTP || i == ROW_CURL) && (min_peer_rss == 0 || rss < min_peer_rss))
            min_peer_rss = rss;
        /* A client that ran fewer connections than asked (curl caps --parallel-max at 300)
         * has a floor of its own; say how close it came to that one. */
        double conns = bench_median(w->conns, w->n);
        if (i >= ROW_SLUICE && conns > 0 && conns < t->inflight)
            printf("   %-28s ran %.0f connections, not %d: its own floor is %.0f ms, %.2fx\n", "",
                   conns, t->inflight, t->total * DELAY_MS / conns,
                   wall * 1e3 / (t->total * DELAY_MS / conns));
    }
    printf("   (a) and (b): wall inside the worker process; the others: the whole process.\n");
    printf("   conns: connections the server accepted in a run. speed-up: over (a)%s.\n",
           estimated ? ", ~ = over (a)'s per-request time in the 100-request table" : "");
    if (s->n > 0) {
        double wall = bench_median(s->wall, s->n), rss = bench_median(s->rss_kb, s->n) / 1024;
        printf("   sluice wall = %.3fx the floor (target <= 1.10): %s\n", wall / floor_s,
               wall / floor_s <= 1.10 ? "MET" : "NOT MET");
        if (min_rss > 0)
            printf("   sluice peak RSS %.2f MiB, lowest of the others %.2f MiB (target: the "
                   "lowest): %s\n",
                   rss, min_rss, rss < min_rss ? "MET" : "NOT MET");
        if (min_peer_rss > 0)
            printf("   (for reference: lowest of the (d) peers %.2f MiB, sluice %s)\n",
                   min_peer_rss, rss < min_peer_rss ? "below it" : "not below it");
    } else {
        printf("   sluice: no successful run, targets NOT MET\n");
    }
}

static void table_init(struct table *t, int total, int inflight)
{
    FILE *f;

    memset(t, 0, sizeof(*t));
    t->total = total;
    t->inflight = inflight;
    snprintf(t->test, sizeof(t->test), "%dx%d", total, inflight);
    snprintf(t->base, sizeof(t->base), "http://127.0.0.1:%d/delay/%d?i=", port, DELAY_MS);
    snprintf(t->list, sizeof(t->list), "%s/urls-%d.txt", dir, total);
    f = fopen(t->list, "w");
    if (f != NULL) {
        for (int i = 0; i < total; i++)
            fprintf(f, "%s%d\n", t->base, i);
        fclose(f);
    }
    snprintf(t->rows[ROW_SEQ].label, sizeof(t->rows[0].label), "(a) sequential, keep-alive");
    snprintf(t->rows[ROW_THREADS].label, sizeof(t->rows[0].label), "(b) %d threads, keep-alive",
             POOL_THREADS);
    snprintf(t->rows[ROW_SLUICE].label, sizeof(t->rows[0].label), "(c) sluice -Z %d", inflight);
    snprintf(t->rows[ROW_AIOHTTP].label, sizeof(t->rows[0].label), "(d) aiohttp limit %d",
             inflight);
    snprintf(t->rows[ROW_CURL].label, sizeof(t->rows[0].label), "(d) curl --parallel-max %d",
             inflight);
}

/* The Python that has aiohttp: `python3` on PATH, else Debian's, whose python3-aiohttp
 * (scripts/deps.sh bench) a pyenv or venv python3 on PATH does not see. The real executable
 * is run, not a shim script, so its start-up is not inflated. */
static void find_python(void)
{
    const char *cands[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]) && python_path[0] == '\0'; i++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "%s -c 'import sys, aiohttp; print(sys.executable)' 2>/dev/null",
                 cands[i]);
        FILE *p = popen(cmd, "r");
        if (p == NULL)
            continue;
        if (fgets(python_path, sizeof(python_path), p) == NULL)
            python_path[0] = '\0';
        python_path[strcspn(python_path, "\n")] = '\0';
        pclose(p);
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench-seed [--quick] [--runs N] [--sluice PATH] [--faultserver PATH]\n"
            "  100 GETs of the faultserver's /delay/%d, 50 in flight, then 10,000 at 1000:\n"
            "  (a) sequential, (b) %d threads (blocking C clients in this program), (c) the\n"
            "  sluice CLI, (d) aiohttp and curl --parallel when installed. Prints one\n"
            "  `bench=seed ...` line per run, then tables with wall time, CPU, peak RSS,\n"
            "  the ratio to the floor (requests x %d ms / in flight) and the targets,\n"
            "  after a table of start-up costs (one GET /delay/0 in a fresh process).\n"
            "  --quick        the 100-request table only, one run\n"
            "  --runs N       runs per row, median reported (1-%d, default 3)\n"
            "  --sluice PATH  the CLI to measure (default: next to this program)\n"
            "  --faultserver PATH  (default: ../tests/integ/faultserver from here)\n",
            DELAY_MS, POOL_THREADS, DELAY_MS, MAX_RUNS);
}

int main(int argc, char **argv)
{
    static struct table t1, t2;
    char here[400];

    if (argc == 5 && strcmp(argv[1], "--worker") == 0) {
        port = atoi(argv[4]);
        signal(SIGPIPE, SIG_IGN);
        return worker_main(argv[2], atoi(argv[3]));
    }
    exe_dir(here, sizeof(here));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            runs = 1;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
            if (runs < 1 || runs > MAX_RUNS)
                runs = 3;
        } else if (strcmp(argv[i], "--sluice") == 0 && i + 1 < argc) {
            snprintf(sluice_path, sizeof(sluice_path), "%s", argv[++i]);
        } else if (strcmp(argv[i], "--faultserver") == 0 && i + 1 < argc) {
            snprintf(server_path, sizeof(server_path), "%s", argv[++i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    /* The CLI and the faultserver as the build tree lays them out: build/tools/sluice and
     * build/tests/integ/faultserver (not built with -Dtests=false). */
    if (sluice_path[0] == '\0')
        snprintf(sluice_path, sizeof(sluice_path), "%s/sluice", here);
    if (server_path[0] == '\0')
        snprintf(server_path, sizeof(server_path), "%s/../tests/integ/faultserver", here);
    {
        /* Workers re-execute this file by its real name. */
        ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
        self_path[n > 0 ? n : 0] = '\0';
    }
    signal(SIGPIPE, SIG_IGN);
    rlim_t nofile = raise_nofile();
    if (access(server_path, X_OK) != 0) {
        fprintf(stderr,
                "bench-seed: no faultserver at %s (build with -Dtests=true, or pass "
                "--faultserver PATH)\n",
                server_path);
        return 1;
    }
    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-seed-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
        fprintf(stderr, "bench-seed: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    if (server_start() < 0) {
        fprintf(stderr, "bench-seed: could not start %s\n", server_path);
        server_stop();
        return 1;
    }
    find_python();
    printf("bench-seed: libsluice %s; faultserver on 127.0.0.1:%d pinned to CPU 0, clients on "
           "CPU 1; GET /delay/%d; %d run(s); RLIMIT_NOFILE %llu\n",
           sl_version(), port, DELAY_MS, runs, (unsigned long long)nofile);
    /* Other work on the machine shows up as noise in every row: say how busy it was. */
    double load[1] = {0};
    getloadavg(load, 1);
    printf("bench-seed: aiohttp: %s; load average %.2f at start (%ld CPUs)\n\n",
           python_path[0] ? python_path : "not installed", load[0], sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);

    table_init(&t1, 100, 50);
    run_worker_row(&t1, ROW_SEQ, "sequential", runs);
    run_worker_row(&t1, ROW_THREADS, "threads", runs);
    run_sluice(&t1);
    run_aiohttp(&t1);
    run_curl(&t1);
    run_startup();
    double seq_per_req = t1.rows[ROW_SEQ].n > 0
                             ? bench_median(t1.rows[ROW_SEQ].wall, t1.rows[ROW_SEQ].n) / t1.total
                             : 0;

    if (!quick) {
        table_init(&t2, 10000, 1000);
        snprintf(t2.rows[ROW_SEQ].skipped, sizeof(t2.rows[0].skipped),
                 "skipped: 10000 x %d ms one after another would take %.0f s", DELAY_MS,
                 10000.0 * DELAY_MS / 1e3);
        printf("bench=seed test=%s impl=sequential skipped=1\n", t2.test);
        /* 500 rounds of the server's 50 ms timer: 25 s a run, and little to vary, so once. */
        run_worker_row(&t2, ROW_THREADS, "threads", 1);
        run_sluice(&t2);
        run_aiohttp(&t2);
        run_curl(&t2);
    }

    char title[128];
    snprintf(title, sizeof(title), "1. %d requests, %d in flight, GET /delay/%d (median of %d)",
             t1.total, t1.inflight, DELAY_MS, runs);
    print_startup();
    print_table(&t1, title, 0);
    if (!quick) {
        snprintf(title, sizeof(title),
                 "2. %d requests, %d in flight, GET /delay/%d (median of %d; (b) 1 run)", t2.total,
                 t2.inflight, DELAY_MS, runs);
        print_table(&t2, title, seq_per_req);
    }
    server_stop();
    return 0;
}
