/*
 * test_cli.c -- end-to-end tests of the sluice command-line tool (tools/sluice.c) run as a child
 * process against the faultserver (tests/integ/faultserver.c), started per test through
 * tests/integ/harness.h. Nothing here links libsluice: the tool is a black box whose exit status,
 * standard output, standard error and files are compared with what curl would do and with the
 * table in docs/CLI.md.
 *
 * Model: main() makes one temporary directory (mkdtemp) and removes it after the run, whatever
 * the tests did. Each test (forked by Check) gets a fresh faultserver and a fresh working
 * directory inside it, `g_cwd`, where the tool runs and writes its files; its stdout and stderr
 * go to files next to that directory, so that listing `g_cwd` shows only what the tool left.
 * cli_run() forks and execs the tool, waits for it with a wall-clock bound (SIGKILL and a
 * failure when it is exceeded) and, while it waits, calls an optional hook: a tiny server that
 * hangs up without answering, or a watcher that records which part files existed mid-run.
 * Every run asserts that stderr holds no sanitizer report, so an ASan+UBSan build checks the
 * tool's error paths for leaks and undefined behaviour as a side effect.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <openssl/sha.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SLUICE_CLI_PATH
#error "SLUICE_CLI_PATH must name the sluice binary (set by tests/integ/meson.build)"
#endif

#define PART_SUFFIX ".sluice-part" /* tools/sluice.c writes FILE as FILE.sluice-part first */
#define RUN_BOUND_MS 10000         /* a run that should take milliseconds */
#define MAX_STRS 64

static char g_top[256];  /* the suite's temporary directory (main) */
static char g_test[300]; /* this test's directory: g_cwd, stdout, stderr */
static char g_cwd[320];  /* the tool's working directory */
static struct harness_server g_fs;
static char g_base[64]; /* "http://127.0.0.1:<port>" */
static char *g_strs[MAX_STRS];
static size_t g_nstrs;
static pid_t g_child; /* the running tool, for hooks that signal it */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* printf into a string freed by the fixture's teardown. */
static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    ck_assert_uint_lt(g_nstrs, MAX_STRS);
    g_strs[g_nstrs++] = s;
    return s;
}

/* The faultserver URL of `path`. */
static const char *url(const char *path)
{
    return fmt("%s%s", g_base, path);
}

/* A file of the working directory. */
static const char *cwd_file(const char *name)
{
    return fmt("%s/%s", g_cwd, name);
}

/* The whole file, NUL-terminated; NULL when it does not exist. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    size_t n = 0, cap = 0;

    *len = 0;
    if (fd < 0) {
        ck_assert_msg(errno == ENOENT, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 * 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        ck_assert_msg(r >= 0, "read %s: %s", path, strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Names in the working directory, sorted, one a line ("" when empty): the whole of what the
 * tool left behind, so an assertion on it catches stray part files of any name. */
static const char *cwd_listing(void)
{
    struct dirent **list;
    int n = scandir(g_cwd, &list, NULL, alphasort);
    size_t cap = 1;
    ck_assert_int_ge(n, 0);
    for (int i = 0; i < n; i++)
        cap += strlen(list[i]->d_name) + 1;
    char *s = calloc(1, cap);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i]->d_name, ".") != 0 && strcmp(list[i]->d_name, "..") != 0) {
            strcat(s, list[i]->d_name);
            strcat(s, "\n");
        }
        free(list[i]);
    }
    free(list);
    ck_assert_uint_lt(g_nstrs, MAX_STRS);
    g_strs[g_nstrs++] = s;
    return s;
}

/* ---- running the tool ----------------------------------------------------------------- */

struct cli {
    int status; /* exit status; -1 when a signal ended it */
    double secs;
    char *out, *err; /* NUL-terminated copies of stdout and stderr */
    size_t out_len, err_len;
};

/* Called about every 2 ms while the tool runs. */
typedef void (*cli_hook)(void *arg);

static void cli_free(struct cli *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

/*
 * Run the tool with `args` (NULL-terminated, without argv[0]) in g_cwd, stdin /dev/null, and
 * wait at most bound_ms: past it the tool is killed and the test fails with its stderr. The
 * environment is inherited (SLUICE_BACKEND picks the event backend, ASAN_OPTIONS reach it).
 */
static void cli_run_hook(struct cli *r, unsigned bound_ms, cli_hook hook, void *arg,
                         const char *const args[])
{
    const char *outp = fmt("%s/stdout", g_test), *errp = fmt("%s/stderr", g_test);
    const char *argv[64];
    size_t n = 0;
    int ws = 0;

    argv[n++] = SLUICE_CLI_PATH;
    for (; args[n - 1] != NULL; n++) {
        ck_assert_uint_lt(n, 63);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;

    memset(r, 0, sizeof(*r));
    double start = mono_s();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The child: no Check calls, only async-signal-safe work until exec. */
        int in = open("/dev/null", O_RDONLY);
        int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* the test died: so does the tool */
        if (in < 0 || out < 0 || err < 0 || chdir(g_cwd) < 0 || dup2(in, 0) < 0 ||
            dup2(out, 1) < 0 || dup2(err, 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    g_child = pid;
    double deadline = start + bound_ms / 1000.0;
    for (;;) {
        pid_t w = waitpid(pid, &ws, WNOHANG);
        ck_assert_int_ge(w, 0);
        if (w == pid)
            break;
        if (mono_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            size_t len;
            char *e = slurp(errp, &len);
            ck_abort_msg("sluice ran over its %u ms bound and was killed; stderr:\n%s", bound_ms,
                         e ? e : "");
        }
        if (hook != NULL)
            hook(arg);
        struct timespec ts = {.tv_nsec = 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    g_child = 0;
    r->secs = mono_s() - start;
    r->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    r->out = slurp(outp, &r->out_len);
    r->err = slurp(errp, &r->err_len);
    ck_assert_ptr_nonnull(r->out);
    ck_assert_ptr_nonnull(r->err);
    ck_assert_msg(WIFEXITED(ws), "sluice was killed by signal %d; stderr:\n%s",
                  WIFSIGNALED(ws) ? WTERMSIG(ws) : 0, r->err);
    ck_assert_msg(r->status != 126 && r->status != 127, "could not exec %s (status %d)",
                  SLUICE_CLI_PATH, r->status);
    /* Under -Db_sanitize=address,undefined the tool reports here (and LeakSanitizer at exit). */
    ck_assert_msg(strstr(r->err, "ERROR: AddressSanitizer") == NULL &&
                      strstr(r->err, "ERROR: LeakSanitizer") == NULL &&
                      strstr(r->err, "runtime error:") == NULL,
                  "sanitizer report on sluice's stderr:\n%s", r->err);
}

#define CLI(r, ...)                                                                                \
    cli_run_hook((r), RUN_BOUND_MS, NULL, NULL, (const char *const[]){__VA_ARGS__, NULL})
#define CLI_HOOK(r, bound, hook, arg, ...)                                                         \
    cli_run_hook((r), (bound), (hook), (arg), (const char *const[]){__VA_ARGS__, NULL})

/* The exit status, with stderr in the message when it is not the one expected. */
#define assert_exit(r, code)                                                                       \
    ck_assert_msg((r)->status == (code), "sluice exited %d, expected %d; stderr:\n%s",             \
                  (r)->status, (code), (r)->err)

/* stderr names the URL's exit code the way docs/CLI.md shows: "sluice: (N) URL: ...". */
static void assert_err_line(const struct cli *r, int code, const char *u)
{
    const char *want = fmt("sluice: (%d) %s: ", code, u);
    ck_assert_msg(strstr(r->err, want) != NULL, "stderr lacks '%s':\n%s", want, r->err);
}

static void assert_pattern(const char *what, const char *buf, size_t len, size_t want)
{
    ck_assert_msg(len == want, "%s: %zu bytes, expected %zu", what, len, want);
    size_t ok = harness_pattern_check((const uint8_t *)buf, 0, len);
    ck_assert_msg(ok == len, "%s: byte %zu differs from the pattern", what, ok);
}

/* The file holds exactly the first `want` bytes of the pattern. */
static void assert_file_pattern(const char *path, size_t want)
{
    size_t len;
    char *b = slurp(path, &len);
    ck_assert_msg(b != NULL, "%s was not written", path);
    assert_pattern(path, b, len, want);
    free(b);
}

/* ---- fixtures ------------------------------------------------------------------------- */

static void setup(void)
{
    static unsigned seq;
    snprintf(g_test, sizeof(g_test), "%s/t%u-%d", g_top, seq++, (int)getpid());
    ck_assert_int_eq(mkdir(g_test, 0755), 0);
    snprintf(g_cwd, sizeof(g_cwd), "%s/w", g_test);
    ck_assert_int_eq(mkdir(g_cwd, 0755), 0);
    memset(&g_fs, 0, sizeof(g_fs));
    g_fs.out_fd = -1;
    ck_assert_int_eq(harness_faultserver(&g_fs, "127.0.0.1", false), 0);
    snprintf(g_base, sizeof(g_base), "http://127.0.0.1:%d", g_fs.port);
}

static void teardown(void)
{
    for (size_t i = 0; i < g_nstrs; i++)
        free(g_strs[i]);
    g_nstrs = 0;
    ck_assert_msg(harness_stop(&g_fs) == 0, "faultserver did not exit cleanly");
}

/* ---- small servers and watchers of our own -------------------------------------------- */

/* GET /stats on the faultserver over a blocking socket of our own: connections accepted
 * (this one included) and requests served so far (the /stats request itself not counted). */
static void fs_stats(unsigned *conns_out, unsigned *reqs_out)
{
    static const char rq[] = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)g_fs.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 5};
    char buf[1024];
    size_t len = 0;
    unsigned conns, reqs;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(write(fd, rq, sizeof(rq) - 1), (ssize_t)(sizeof(rq) - 1));
    for (ssize_t n; len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0;)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    const char *b = strstr(buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(sscanf(b + 4, "connections=%u requests=%u", &conns, &reqs), 2);
    *conns_out = conns;
    *reqs_out = reqs;
}

static unsigned fs_requests(void)
{
    unsigned conns, reqs;
    fs_stats(&conns, &reqs);
    return reqs;
}

/* A listener on 127.0.0.1 (non-blocking; backlog `backlog`). */
static int listener(int backlog, int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sl), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/*
 * A server that reads the whole request head and then closes with a FIN, not a byte of response
 * written, on a fresh connection: curl's "Empty reply from server" (52). The faultserver only
 * does this on a reused connection (/close-on-next), where the client's stale-connection retry
 * rightly hides it, so the test plays this server itself, from cli_run's wait loop.
 */
struct hangup {
    int lfd, port;
    unsigned served;
};

static void hangup_tick(void *arg)
{
    struct hangup *h = arg;
    int fd = accept4(h->lfd, NULL, NULL, SOCK_CLOEXEC);
    char buf[8192];
    size_t len = 0;
    struct timeval tv = {.tv_sec = 2};

    if (fd < 0)
        return;
    /* Read the head before closing: unread data would turn the FIN into a reset. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            break;
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    h->served++;
}

/*
 * A listener with backlog 0 whose accept queue is filled with connections of our own, never
 * accepted: Linux then drops further SYNs, so a connect to it hangs (test_client.c's
 * blackhole, which documents the premise). Returns 0, or -1 when the kernel completed every
 * filler and no connect can be made to hang here.
 */
struct blackhole {
    int lfd, port;
    int fds[16];
    int nfds;
};

static int blackhole_open(struct blackhole *b)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    memset(b, 0, sizeof(*b));
    b->lfd = listener(0, &b->port);
    sin.sin_port = htons((uint16_t)b->port);
    for (b->nfds = 0; b->nfds < 16;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        b->fds[b->nfds++] = fd;
        int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
        ck_assert_msg(rc == 0 || errno == EINPROGRESS, "filler connect: %s", strerror(errno));
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (rc < 0 && poll(&p, 1, 100) == 0)
            return 0; /* this SYN was dropped: the queue is full */
    }
    return -1;
}

static void blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < b->nfds; i++)
        close(b->fds[i]);
    close(b->lfd);
}

/* Records the largest number of part files seen in the working directory during a run, so a
 * test can show the files it expects to be removed did exist. */
struct partwatch {
    int max_parts;
    bool saw[8]; /* saw[i]: "f<i>.sluice-part" existed at some point */
};

static void partwatch_tick(void *arg)
{
    struct partwatch *w = arg;
    DIR *d = opendir(g_cwd);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name), sl = strlen(PART_SUFFIX);
        if (len > sl && strcmp(e->d_name + len - sl, PART_SUFFIX) == 0) {
            n++;
            if (e->d_name[0] == 'f' && e->d_name[1] >= '0' && e->d_name[1] <= '7' &&
                strcmp(e->d_name + 2, PART_SUFFIX) == 0)
                w->saw[e->d_name[1] - '0'] = true;
        }
    }
    closedir(d);
    if (n > w->max_parts)
        w->max_parts = n;
}

/* ======================================================================================== */
/* exit codes                                                                                */
/* ======================================================================================== */

START_TEST(exit_0_body_to_stdout)
{
    struct cli r;
    CLI(&r, url("/bytes/100000"));
    assert_exit(&r, 0);
    assert_pattern("stdout", r.out, r.out_len, 100000);
    ck_assert_str_eq(r.err, "");
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_3_malformed_url)
{
    struct cli r;
    CLI(&r, "http://[::1/");
    assert_exit(&r, 3);
    assert_err_line(&r, 3, "http://[::1/");
    ck_assert_str_eq(r.out, "");
    cli_free(&r);
    /* -s silences the message, the status stays. */
    CLI(&r, "-s", "http://[::1/");
    assert_exit(&r, 3);
    ck_assert_str_eq(r.err, "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_6_unresolvable_host)
{
    struct cli r;
    /* .invalid never resolves (RFC 6761), whatever the resolver configuration. The bound is
     * long enough for a resolver that times out rather than answering NXDOMAIN. */
    CLI_HOOK(&r, 30000, NULL, NULL, "http://no-such-host.sluice-test.invalid/");
    assert_exit(&r, 6);
    assert_err_line(&r, 6, "http://no-such-host.sluice-test.invalid/");
    ck_assert_str_eq(r.out, "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_7_connection_refused)
{
    struct cli r;
    int port = harness_free_port("127.0.0.1");
    ck_assert_int_gt(port, 0);
    const char *u = fmt("http://127.0.0.1:%d/", port);
    CLI(&r, u);
    assert_exit(&r, 7);
    assert_err_line(&r, 7, u);
    ck_assert_str_eq(r.out, "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_18_partial_body)
{
    struct cli r;
    /* /wrong-cl announces 100 bytes, sends 50 and closes. To stdout, curl keeps what came. */
    CLI(&r, url("/wrong-cl"));
    assert_exit(&r, 18);
    assert_err_line(&r, 18, url("/wrong-cl"));
    assert_pattern("stdout", r.out, r.out_len, 50);
    cli_free(&r);

    /* To a file: 50 bytes were written to the part file, which is then removed; nothing is
     * left under the final name or any other. */
    CLI(&r, "-o", "part.bin", url("/wrong-cl?cl=200000&send=150000"));
    assert_exit(&r, 18);
    ck_assert_str_eq(r.out, "");
    ck_assert(!exists(cwd_file("part.bin")));
    ck_assert(!exists(cwd_file("part.bin" PART_SUFFIX)));
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_22_fail_and_fail_with_body)
{
    struct cli r;
    CLI(&r, "-f", url("/status/404"));
    assert_exit(&r, 22);
    assert_err_line(&r, 22, url("/status/404"));
    ck_assert_msg(strstr(r.err, "returned error: 404") != NULL, "stderr: %s", r.err);
    ck_assert_str_eq(r.out, ""); /* -f writes nothing of the response */
    cli_free(&r);

    /* -f with -o: no file, no part file. */
    CLI(&r, "--fail", "-o", "nf.txt", url("/status/404"));
    assert_exit(&r, 22);
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);

    /* Without -f a 404 is a success. */
    CLI(&r, url("/status/404"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "status 404\n");
    cli_free(&r);

    /* --fail-with-body: the same 22, and the body is written (to stdout, and kept in a file). */
    CLI(&r, "--fail-with-body", url("/status/404"));
    assert_exit(&r, 22);
    ck_assert_str_eq(r.out, "status 404\n");
    assert_err_line(&r, 22, url("/status/404"));
    cli_free(&r);
    CLI(&r, "--fail-with-body", "-o", "fwb.txt", url("/status/500"));
    assert_exit(&r, 22);
    size_t len;
    char *b = slurp(cwd_file("fwb.txt"), &len);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b, "status 500\n");
    free(b);
    ck_assert_str_eq(cwd_listing(), "fwb.txt\n");
    cli_free(&r);

    /* A success is not affected by either. */
    CLI(&r, "-f", url("/bytes/10"));
    assert_exit(&r, 0);
    assert_pattern("stdout", r.out, r.out_len, 10);
    cli_free(&r);
}
END_TEST

START_TEST(exit_23_unwritable_output)
{
    struct cli r;
    CLI(&r, "-o", "no/such/dir/x.bin", url("/bytes/10"));
    assert_exit(&r, 23);
    assert_err_line(&r, 23, url("/bytes/10"));
    ck_assert_str_eq(r.out, "");
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);

    /* A directory we may not write into (root ignores permissions, so use a path under a
     * regular file instead: ENOTDIR for everyone). */
    int fd = open(cwd_file("plain"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    CLI(&r, "-o", "plain/x.bin", url("/bytes/10"));
    assert_exit(&r, 23);
    ck_assert_str_eq(cwd_listing(), "plain\n");
    cli_free(&r);

    /* -O on a URL whose path ends with '/' has no file name: 23 too. */
    CLI(&r, "-O", url("/dir/"));
    assert_exit(&r, 23);
    ck_assert_str_eq(cwd_listing(), "plain\n");
    cli_free(&r);
}
END_TEST

START_TEST(exit_28_max_time)
{
    struct cli r;
    CLI(&r, "-m", "0.5", url("/delay/5000"));
    assert_exit(&r, 28);
    assert_err_line(&r, 28, url("/delay/5000"));
    ck_assert_msg(r.secs >= 0.45 && r.secs < 2.5, "-m 0.5 took %.3f s", r.secs);
    cli_free(&r);

    /* The long spelling with '=', on a body that stalls mid-way, written to a file: the part
     * file goes too. */
    CLI(&r, "--max-time=0.4", "-o", "stall.bin", url("/stall-body?after=1000"));
    assert_exit(&r, 28);
    ck_assert_msg(r.secs >= 0.35 && r.secs < 2.5, "--max-time=0.4 took %.3f s", r.secs);
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);
}
END_TEST

START_TEST(exit_28_connect_timeout)
{
    struct cli r;
    struct blackhole bh;
    int rc = blackhole_open(&bh);
    ck_assert_msg(rc == 0,
                  "the kernel completed %d connections to a backlog-0 listener that never "
                  "accepts: cannot make a connect hang here",
                  bh.nfds);
    const char *u = fmt("http://127.0.0.1:%d/", bh.port);
    CLI(&r, "--connect-timeout", "0.3", u);
    blackhole_close(&bh);
    assert_exit(&r, 28);
    assert_err_line(&r, 28, u);
    ck_assert_msg(r.secs >= 0.25 && r.secs < 3.0, "--connect-timeout 0.3 took %.3f s", r.secs);
    cli_free(&r);
}
END_TEST

START_TEST(read_timeout_starts_at_first_byte)
{
    struct cli r;
    /* Silence after the first bytes is what --read-timeout limits. */
    CLI(&r, "--read-timeout", "0.3", "-o", "s.bin", url("/stall-body?after=100"));
    assert_exit(&r, 28);
    ck_assert_msg(r.secs >= 0.25 && r.secs < 2.5, "--read-timeout 0.3 took %.3f s", r.secs);
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);
    /* The first byte has its own limit. */
    CLI(&r, "--first-byte-timeout", "0.3", url("/delay/3000"));
    assert_exit(&r, 28);
    ck_assert_msg(r.secs >= 0.25 && r.secs < 2.5, "--first-byte-timeout 0.3 took %.3f s", r.secs);
    cli_free(&r);
    /* docs/CLI.md: --read-timeout "limit the silence between two received bytes. It starts
     * with the first byte: to limit the wait for the first one, use --first-byte-timeout."
     * So a slow first byte is not a read timeout. */
    CLI(&r, "--read-timeout", "0.3", url("/delay/800"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "ok\n");
    cli_free(&r);
}
END_TEST

START_TEST(exit_2_usage)
{
    struct cli r;
    /* Each exits 2 before anything is fetched: the faultserver sees no request. */
    CLI(&r, "--no-such-option", url("/bytes/1"));
    assert_exit(&r, 2);
    ck_assert_msg(strstr(r.err, "--no-such-option") != NULL, "stderr: %s", r.err);
    ck_assert_str_eq(r.out, "");
    cli_free(&r);
    CLI(&r, url("/bytes/1"), "-q");
    assert_exit(&r, 2);
    ck_assert_msg(strstr(r.err, "-q") != NULL, "stderr: %s", r.err);
    cli_free(&r);
    CLI(&r, "-m", "soon", url("/bytes/1"));
    assert_exit(&r, 2);
    cli_free(&r);
    CLI(&r, url("/bytes/1"), "-o"); /* a missing value */
    assert_exit(&r, 2);
    cli_free(&r);
    CLI(&r, "-s"); /* no URL */
    assert_exit(&r, 2);
    cli_free(&r);
    CLI(&r, "-f", "--fail-with-body", url("/bytes/1"));
    assert_exit(&r, 2);
    cli_free(&r);
    CLI(&r, "-I", "-d", "x", url("/bytes/1"));
    assert_exit(&r, 2);
    cli_free(&r);
    ck_assert_uint_eq(fs_requests(), 0);
    ck_assert_str_eq(cwd_listing(), "");
}
END_TEST

START_TEST(exit_47_too_many_redirects)
{
    struct cli r;
    /* /redirect/5 redirects 5 times, then says "done\n". */
    CLI(&r, "-L", "--max-redirs", "2", url("/redirect/5"));
    assert_exit(&r, 47);
    assert_err_line(&r, 47, url("/redirect/5"));
    ck_assert_str_eq(r.out, "");
    cli_free(&r);
    CLI(&r, "-L", "--max-redirs", "0", url("/redirect/1"));
    assert_exit(&r, 47);
    cli_free(&r);
    /* Exactly the limit is fine. */
    CLI(&r, "-L", "--max-redirs=5", "-w", "%{num_redirects} %{url_effective}\n",
        url("/redirect/5"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, fmt("done\n5 %s\n", url("/redirect/0")));
    cli_free(&r);
    /* Without -L the redirect itself is the answer. */
    CLI(&r, "-w", "%{http_code}", url("/redirect/5"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "redirect\n302");
    cli_free(&r);
}
END_TEST

START_TEST(exit_52_empty_reply)
{
    struct cli r;
    struct hangup h = {0};
    h.lfd = listener(16, &h.port);
    const char *u = fmt("http://127.0.0.1:%d/", h.port);
    CLI_HOOK(&r, RUN_BOUND_MS, hangup_tick, &h, u);
    close(h.lfd);
    ck_assert_uint_ge(h.served, 1);
    /* curl: "(52) Empty reply from server". The header of tools/sluice.c maps SL_EOF to 52. */
    assert_exit(&r, 52);
    assert_err_line(&r, 52, u);
    cli_free(&r);
}
END_TEST

/* ======================================================================================== */
/* output                                                                                    */
/* ======================================================================================== */

START_TEST(output_file_exact_bytes)
{
    struct cli r;
    CLI(&r, "-o", "a.bin", url("/bytes/300000"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "");
    ck_assert_str_eq(r.err, "");
    assert_file_pattern(cwd_file("a.bin"), 300000);
    ck_assert_str_eq(cwd_listing(), "a.bin\n");
    cli_free(&r);

    /* The n-th -o goes with the n-th URL; a URL without one goes to stdout. An existing file
     * is replaced, not appended to. */
    CLI(&r, url("/bytes/7"), "-o", "a.bin", "-o", "b.bin", url("/bytes/0"), url("/bytes/5"));
    assert_exit(&r, 0);
    assert_file_pattern(cwd_file("a.bin"), 7);
    assert_file_pattern(cwd_file("b.bin"), 0); /* an empty body still makes a file */
    assert_pattern("stdout", r.out, r.out_len, 5);
    ck_assert_str_eq(cwd_listing(), "a.bin\nb.bin\n");
    cli_free(&r);

    /* A chunked body and a close-delimited one, both to files. */
    CLI(&r, "-o", "c.bin", url("/bytes/70000?chunked=1"), "-o", "d.bin",
        url("/bytes/70001?close=1"));
    assert_exit(&r, 0);
    assert_file_pattern(cwd_file("c.bin"), 70000);
    assert_file_pattern(cwd_file("d.bin"), 70001);
    cli_free(&r);
}
END_TEST

START_TEST(output_remote_name)
{
    struct cli r;
    /* -O: the last path segment, the query excluded. */
    CLI(&r, "-O", url("/bytes/1000"), "-O", url("/bytes/2000?x=1"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "");
    assert_file_pattern(cwd_file("1000"), 1000);
    assert_file_pattern(cwd_file("2000"), 2000);
    ck_assert_str_eq(cwd_listing(), "1000\n2000\n");
    cli_free(&r);

    /* --remote-name with --output-dir. */
    ck_assert_int_eq(mkdir(cwd_file("sub"), 0755), 0);
    CLI(&r, "--output-dir", "sub", "--remote-name", url("/bytes/33"));
    assert_exit(&r, 0);
    assert_file_pattern(cwd_file("sub/33"), 33);
    ck_assert(!exists(cwd_file("33")));
    cli_free(&r);

    /* A failed -O download leaves nothing either. */
    CLI(&r, "-O", url("/wrong-cl"));
    assert_exit(&r, 18);
    ck_assert(!exists(cwd_file("wrong-cl")));
    ck_assert(!exists(cwd_file("wrong-cl" PART_SUFFIX)));
    cli_free(&r);
}
END_TEST

START_TEST(output_parallel_in_url_order)
{
    struct cli r;
    /* The first URLs finish last; stdout still shows them in URL order. In sequence these
     * would take at least 1.1 s; in parallel about 0.6 s. */
    CLI(&r, "-Z", url("/delay/600"), url("/bytes/5000"), url("/delay/500"), url("/status/200"),
        url("/bytes/3"));
    assert_exit(&r, 0);
    ck_assert_msg(r.secs < 1.0, "-Z took %.3f s: not parallel", r.secs);
    ck_assert_uint_eq(r.out_len, 3 + 5000 + 3 + 11 + 3);
    ck_assert_mem_eq(r.out, "ok\n", 3);
    assert_pattern("URL 1", r.out + 3, 5000, 5000);
    ck_assert_mem_eq(r.out + 5003, "ok\nstatus 200\n", 14);
    assert_pattern("URL 4", r.out + 5017, 3, 3);
    cli_free(&r);

    /* Later URLs that finish first wait in memory up to 256 KiB each and 1 MiB in all, then
     * in a temporary file: 2.1 MB behind a slow first URL still come out whole and in order. */
    CLI(&r, "-Z", url("/delay/300"), url("/bytes/600000"), url("/bytes/700000?chunked=1"),
        url("/bytes/800000"), url("/bytes/5"));
    assert_exit(&r, 0);
    ck_assert_uint_eq(r.out_len, 3 + 600000 + 700000 + 800000 + 5);
    ck_assert_mem_eq(r.out, "ok\n", 3);
    assert_pattern("URL 1", r.out + 3, 600000, 600000);
    assert_pattern("URL 2", r.out + 600003, 700000, 700000);
    assert_pattern("URL 3", r.out + 1300003, 800000, 800000);
    assert_pattern("URL 4", r.out + 2100003, 5, 5);
    cli_free(&r);

    /* --parallel with -w: each URL's write-out follows its own body, in URL order. */
    CLI(&r, "--parallel", "-w", "[%{urlnum} %{http_code}]", url("/delay/300"), url("/status/201"),
        url("/bytes/0"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "ok\n[0 200]status 201\n[1 201][2 200]");
    cli_free(&r);

    /* The exit status is the first failing URL's in command-line order, even when a later one
     * failed first. */
    int port = harness_free_port("127.0.0.1");
    CLI(&r, "-Z", "-s", url("/bytes/1"), fmt("%s?x", url("/delay/300")), url("/wrong-cl"),
        fmt("http://127.0.0.1:%d/", port));
    assert_exit(&r, 18);
    cli_free(&r);
}
END_TEST

START_TEST(output_write_out)
{
    struct cli r;
    CLI(&r, "-w", "%{http_code} %{size_download}\n", "-o", "/dev/null", url("/bytes/1234"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "200 1234\n");
    cli_free(&r);

    /* One line per URL, in URL order, failures included (000 without a response). */
    int port = harness_free_port("127.0.0.1");
    CLI(&r, "-s", "-w", "%{http_code} %{size_download} %{exitcode}\n", "-o", "/dev/null", "-o",
        "/dev/null", "-o", "/dev/null", url("/bytes/99"), url("/status/404"),
        fmt("http://127.0.0.1:%d/", port));
    assert_exit(&r, 7);
    ck_assert_str_eq(r.out, "200 99 0\n404 11 0\n000 0 7\n");
    cli_free(&r);

    /* %{onerror} keeps the rest for failures; %{stderr} sends it to stderr. */
    CLI(&r, "-s", "-w", "A%{onerror}B%{stderr}C%{exitcode}", "-o", "/dev/null", "-o", "/dev/null",
        url("/bytes/1"), fmt("http://127.0.0.1:%d/", port));
    assert_exit(&r, 7);
    ck_assert_str_eq(r.out, "AAB");
    ck_assert_str_eq(r.err, "C7");
    cli_free(&r);

    /* %% and an unknown variable (nothing, and one warning). */
    CLI(&r, "-w", "%%%{nope}|%{response_code}", "-o", "/dev/null", url("/status/204"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "%|204");
    ck_assert_msg(strstr(r.err, "nope") != NULL, "no warning: %s", r.err);
    cli_free(&r);
}
END_TEST

/* The JSON line of `report` whose "urlnum" is n, or fail. */
static const char *report_line(const char *report, unsigned n)
{
    const char *want = fmt("\"urlnum\":%u,", n);
    const char *p = report, *hit = NULL;
    while (*p) {
        const char *nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "the report does not end with a newline:\n%s", report);
        ck_assert_msg(p[0] == '{' && nl[-1] == '}', "not one JSON object a line:\n%s", report);
        const char *line = fmt("%.*s", (int)(nl - p), p);
        if (strstr(line, want) != NULL) {
            ck_assert_msg(hit == NULL, "two lines for urlnum %u:\n%s", n, report);
            hit = line;
        }
        p = nl + 1;
    }
    ck_assert_msg(hit != NULL, "no line for urlnum %u:\n%s", n, report);
    return hit;
}

static void assert_has(const char *line, const char *field)
{
    ck_assert_msg(strstr(line, field) != NULL, "'%s' not in %s", field, line);
}

START_TEST(output_json_report)
{
    struct cli r;
    size_t len;
    int port = harness_free_port("127.0.0.1");
    const char *refused = fmt("http://127.0.0.1:%d/", port);

    CLI(&r, "-s", "--json-report", "rep.json", "-o", "/dev/null", "-o", "/dev/null", "-o",
        "/dev/null", "-o", "/dev/null", url("/bytes/10"), url("/status/404"), refused,
        url("/wrong-cl"));
    assert_exit(&r, 7);
    ck_assert_str_eq(r.out, "");
    char *rep = slurp(cwd_file("rep.json"), &len);
    ck_assert_ptr_nonnull(rep);
    unsigned lines = 0;
    for (char *p = rep; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ck_assert_uint_eq(lines, 4);

    const char *l0 = report_line(rep, 0);
    assert_has(l0, fmt("\"url\":\"%s\"", url("/bytes/10")));
    assert_has(l0, "\"http_code\":200,");
    assert_has(l0, "\"exitcode\":0,");
    assert_has(l0, "\"size_download\":10,");
    assert_has(l0, "\"errormsg\":null");
    assert_has(l0, "\"error\":null}");

    const char *l1 = report_line(rep, 1);
    assert_has(l1, "\"http_code\":404,");
    assert_has(l1, "\"exitcode\":0,");
    assert_has(l1, "\"error\":null}");

    const char *l2 = report_line(rep, 2);
    assert_has(l2, fmt("\"url\":\"%s\"", refused));
    assert_has(l2, "\"http_code\":0,");
    assert_has(l2, "\"exitcode\":7,");
    assert_has(l2, "\"error\":\"ECONNREFUSED\"}");

    const char *l3 = report_line(rep, 3);
    assert_has(l3, "\"http_code\":200,");
    assert_has(l3, "\"exitcode\":18,");
    assert_has(l3, "\"error\":\"ETRUNCATED\"}");
    free(rep);
    cli_free(&r);

    /* -f: the 404 is a failure named EHTTP_STATUS; "-" puts the report on stdout in order. */
    CLI(&r, "-s", "-f", "--json-report", "-", "-Z", url("/delay/200"), url("/status/404"));
    assert_exit(&r, 22);
    const char *nl = strchr(r.out, '\n');
    ck_assert_ptr_nonnull(nl);
    ck_assert_msg(strncmp(r.out, "ok\n{", 4) == 0, "stdout:\n%s", r.out);
    l0 = report_line(r.out + 3, 0);
    assert_has(l0, "\"http_code\":200,");
    l1 = report_line(r.out + 3, 1);
    assert_has(l1, "\"http_code\":404,");
    assert_has(l1, "\"exitcode\":22,");
    assert_has(l1, "\"error\":\"EHTTP_STATUS\"}");
    ck_assert_msg(strstr(r.out, "\"urlnum\":0,") < strstr(r.out, "\"urlnum\":1,"),
                  "stdout not in URL order:\n%s", r.out);
    cli_free(&r);
}
END_TEST

START_TEST(output_head_and_include)
{
    static const char head10[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: application/octet-stream\r\n"
                                 "ETag: \"b-10\"\r\n"
                                 "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                                 "Accept-Ranges: bytes\r\n"
                                 "Content-Length: 10\r\n"
                                 "\r\n";
    struct cli r;

    /* -I: the head of a HEAD request, and no body. */
    CLI(&r, "-I", url("/bytes/10"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, head10);
    cli_free(&r);

    /* --head: the method really is HEAD (/echo would have a body for GET). */
    CLI(&r, "--head", "-w", "%{method} %{size_download}", url("/echo"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "HTTP/1.1 200 OK\r\n", 17) == 0, "stdout:\n%s", r.out);
    const char *end = strstr(r.out, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_str_eq(end + 4, "HEAD 0");
    cli_free(&r);

    /* --include (curl's -i; sluice's -i is --input-file): head, then the body. */
    CLI(&r, "--include", url("/bytes/10"));
    assert_exit(&r, 0);
    ck_assert_uint_eq(r.out_len, strlen(head10) + 10);
    ck_assert_mem_eq(r.out, head10, strlen(head10));
    assert_pattern("body", r.out + strlen(head10), 10, 10);
    cli_free(&r);

    /* --include -L: every head, the redirect's too. */
    CLI(&r, "--include", "-L", url("/redirect/1"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "HTTP/1.1 302 ", 13) == 0, "stdout:\n%s", r.out);
    ck_assert_ptr_nonnull(strstr(r.out, "\r\n\r\nHTTP/1.1 200 "));
    ck_assert_uint_ge(r.out_len, 5);
    ck_assert_str_eq(r.out + r.out_len - 5, "done\n");
    cli_free(&r);
}
END_TEST

/* ======================================================================================== */
/* requests                                                                                  */
/* ======================================================================================== */

START_TEST(request_post_data_and_headers)
{
    struct cli r;
    /* /echo answers with the request as received: head and body. */
    CLI(&r, "-X", "POST", "-d", "hello=world", url("/echo"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "POST /echo HTTP/1.1\r\n", 21) == 0, "stdout:\n%s", r.out);
    assert_has(r.out, "\r\nContent-Length: 11\r\n");
    assert_has(r.out, "\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    const char *body = strstr(r.out, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_str_eq(body + 4, "hello=world");
    cli_free(&r);

    /* -d alone means POST; repeated -d pieces are joined with '&'. */
    CLI(&r, "-d", "a=1", "--data", "b=2", url("/echo"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "POST /echo HTTP/1.1\r\n", 21) == 0, "stdout:\n%s", r.out);
    body = strstr(r.out, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_str_eq(body + 4, "a=1&b=2");
    cli_free(&r);

    /* -H adds headers (sent as given); "Name:" removes one sluice adds itself. */
    CLI(&r, "-H", "X-Sluice-Test: abc 123", "--header", "X-Second: two", "-H",
        "Accept:", url("/echo"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "GET /echo HTTP/1.1\r\n", 20) == 0, "stdout:\n%s", r.out);
    assert_has(r.out, "\r\nX-Sluice-Test: abc 123\r\n");
    assert_has(r.out, "\r\nX-Second: two\r\n");
    ck_assert_msg(strstr(r.out, "\r\nAccept:") == NULL, "Accept was not removed:\n%s", r.out);
    cli_free(&r);

    /* -X PUT with -d; the write-out sees the upload size. */
    CLI(&r, "-X", "PUT", "--data-binary", "xyz", "-w", "|%{method} %{size_upload}", url("/echo"));
    assert_exit(&r, 0);
    ck_assert_msg(strncmp(r.out, "PUT /echo HTTP/1.1\r\n", 20) == 0, "stdout:\n%s", r.out);
    body = strstr(r.out, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_str_eq(body + 4, "xyz|PUT 3");
    cli_free(&r);

    /* As curl does, a -H Host replaces the one sluice derives from the URL: sent once. */
    CLI(&r, "-H", "Host: other.example", url("/echo"));
    assert_exit(&r, 0);
    assert_has(r.out, "\r\nHost: other.example\r\n");
    ck_assert_ptr_eq(strstr(r.out, "\r\nHost:"), strstr(r.out, "\r\nHost: other.example\r\n"));
    ck_assert_ptr_null(strstr(strstr(r.out, "\r\nHost:") + 1, "\r\nHost:"));
    cli_free(&r);

    /* The library refuses the framing headers (docs/CLI.md): exit 43, nothing sent. */
    CLI(&r, "-H", "Content-Length: 5", url("/echo"));
    assert_exit(&r, 43);
    ck_assert_str_eq(r.out, "");
    ck_assert_uint_eq(fs_requests(), 5);
    cli_free(&r);
}
END_TEST

/* ======================================================================================== */
/* retries, --fail-early, --rate                                                             */
/* ======================================================================================== */

START_TEST(retry_flaky_succeeds)
{
    struct cli r;
    /* /flaky answers 503 to the first `fail` requests of its key, then 200 "ok\n". */
    CLI(&r, "--retry", "3", "--retry-delay", "0.05", "-w", "%{num_retries} %{http_code}\n",
        url("/flaky?key=K&fail=2"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "ok\n2 200\n");
    ck_assert_uint_eq(fs_requests(), 3);
    cli_free(&r);

    /* Too few retries: the last 503 is the answer (22 with -f), after 1 retry. */
    CLI(&r, "-f", "-s", "--retry", "1", "--retry-delay", "0.05", "-w", "%{num_retries}",
        url("/flaky?key=L&fail=3"));
    assert_exit(&r, 22);
    ck_assert_str_eq(r.out, "1");
    cli_free(&r);

    /* Without --retry the first 503 stands. */
    CLI(&r, "-w", "|%{num_retries} %{http_code}", url("/flaky?key=M&fail=1"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "flaky 503\n|0 503");
    cli_free(&r);
}
END_TEST

/* sha256 of a file, and of the first n bytes of the pattern, as hex. */
static const char *sha256_hex(const unsigned char *data, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return fmt("%s", hex);
}

static const char *sha256_file(const char *path)
{
    size_t len;
    char *b = slurp(path, &len);
    ck_assert_msg(b != NULL, "%s was not written", path);
    const char *h = sha256_hex((const unsigned char *)b, len);
    free(b);
    return h;
}

static const char *sha256_pattern(size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(b);
    harness_pattern_fill(b, 0, n);
    const char *h = sha256_hex(b, n);
    free(b);
    return h;
}

/* A download reset part-way resumes under --retry (Range + If-Range) and the file is whole. */
START_TEST(retry_resumes_a_cut_download)
{
    struct cli r;
    CLI(&r, "-sS", "--retry", "2", "--retry-delay", "0.05", "-o", "big.bin", "-w",
        "%{http_code} %{size_download} %{num_retries}\n",
        url("/bytes/3000000?reset-at=1000000&key=cr1"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "200 3000000 1\n");
    ck_assert_str_eq(sha256_file(cwd_file("big.bin")), sha256_pattern(3000000));
    ck_assert_str_eq(cwd_listing(), "big.bin\n");
    ck_assert_uint_eq(fs_requests(), 2);
    cli_free(&r);

    /* The server's copy changed in between: exit 33, nothing left behind. */
    CLI(&r, "-sS", "--retry", "2", "--retry-delay", "0.05", "-o", "chg.bin",
        url("/bytes/3000000?reset-at=1000000&key=cr2&etag-change=1"));
    assert_exit(&r, 33);
    ck_assert_msg(strstr(r.err, "cannot resume at byte 1000000") != NULL, "stderr: %s", r.err);
    ck_assert_str_eq(cwd_listing(), "big.bin\n");
    cli_free(&r);
}
END_TEST

/* -C -: a failed download keeps its part file, and the next run asks for the rest. */
START_TEST(continue_at_resumes_across_runs)
{
    struct cli r;
    CLI(&r, "-sS", "-C", "-", "-o", "f.bin", url("/bytes/2500000?reset-at=700000&key=ca1"));
    ck_assert_msg(r.status == 56 || r.status == 18, "exit %d: %s", r.status, r.err);
    ck_assert_str_eq(cwd_listing(), "f.bin" PART_SUFFIX "\n");
    assert_file_pattern(cwd_file("f.bin" PART_SUFFIX), 700000);
    ck_assert_msg(strstr(r.err, "-C -") != NULL, "stderr: %s", r.err);
    cli_free(&r);

    /* wget's spelling; the rest comes as 206 and is appended. */
    CLI(&r, "-sS", "--continue", "-o", "f.bin", "-w", "%{http_code} %{size_download}\n",
        url("/bytes/2500000?reset-at=700000&key=ca1"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "206 1800000\n");
    ck_assert_str_eq(cwd_listing(), "f.bin\n");
    ck_assert_str_eq(sha256_file(cwd_file("f.bin")), sha256_pattern(2500000));
    cli_free(&r);

    /* A part file that is already whole: the server says 416, the file is renamed. */
    char *whole;
    size_t len;
    whole = slurp(cwd_file("f.bin"), &len);
    ck_assert_ptr_nonnull(whole);
    FILE *f = fopen(cwd_file("g.bin" PART_SUFFIX), "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(whole, 1, len, f), len);
    fclose(f);
    free(whole);
    CLI(&r, "-sS", "-C", "-", "-o", "g.bin", "-w", "%{http_code}\n", url("/bytes/2500000"));
    assert_exit(&r, 0);
    ck_assert_str_eq(r.out, "416\n");
    ck_assert_str_eq(cwd_listing(), "f.bin\ng.bin\n");
    assert_file_pattern(cwd_file("g.bin"), 2500000);
    cli_free(&r);

    /* A server that ignores the range: exit 33, the part file kept as it was. */
    f = fopen(cwd_file("h.bin" PART_SUFFIX), "w");
    ck_assert_ptr_nonnull(f);
    fputs("hello", f);
    fclose(f);
    CLI(&r, "-sS", "-C", "-", "-o", "h.bin", url("/delay/1"));
    assert_exit(&r, 33);
    ck_assert_str_eq(cwd_listing(), "f.bin\ng.bin\nh.bin" PART_SUFFIX "\n");
    cli_free(&r);

    /* Only '-' is an offset sluice takes; --no-adaptive is a plain flag. */
    CLI(&r, "-C", "100", "-o", "x.bin", url("/bytes/10"));
    assert_exit(&r, 2);
    cli_free(&r);
    CLI(&r, "--retry", "1", "--no-adaptive", url("/bytes/10"));
    assert_exit(&r, 0);
    assert_pattern("stdout", r.out, r.out_len, 10);
    cli_free(&r);
}
END_TEST

START_TEST(fail_early_cancels_the_rest)
{
    struct cli r;
    int port = harness_free_port("127.0.0.1");

    /* The failing URL comes last: the slow ones before it are cancelled, and the status is
     * the failure's (7), not the cancelled ones'. */
    CLI(&r, "-Z", "--fail-early", "-o", "f0", url("/delay/3000"), "-o", "f1", url("/delay/3000"),
        "-o", "f2", url("/delay/3000"), "-o", "f3", fmt("http://127.0.0.1:%d/", port));
    assert_exit(&r, 7);
    ck_assert_msg(r.secs < 1.5, "--fail-early took %.3f s", r.secs);
    assert_err_line(&r, 7, fmt("http://127.0.0.1:%d/", port));
    ck_assert_str_eq(cwd_listing(), "");
    cli_free(&r);

    /* Downloads that are mid-body when another fails: their part files existed and are gone.
     * /drip sends its response (head included) a byte at a time, about one a millisecond, so
     * its body starts after some 0.2 s and lasts well over a minute; /stall-body?after=100
     * sends 100 body bytes then goes silent, which --read-timeout turns into a failure (28)
     * after 0.6 s. */
    struct partwatch w = {0};
    CLI_HOOK(&r, RUN_BOUND_MS, partwatch_tick, &w, "-Z", "--fail-early", "--read-timeout", "0.6",
             "-o", "f0", url("/drip?n=100000&delay=1"), "-o", "f1", url("/drip?n=100000&delay=1"),
             "-o", "f2", url("/drip?n=100000&delay=1"), "-o", "f3", url("/stall-body?after=100"));
    assert_exit(&r, 28);
    ck_assert_msg(r.secs < 2.0, "--fail-early took %.3f s", r.secs);
    ck_assert_msg(w.saw[0] && w.saw[1] && w.saw[2] && w.saw[3],
                  "the part files were never all seen (f0 %d f1 %d f2 %d f3 %d): the check "
                  "proves nothing",
                  w.saw[0], w.saw[1], w.saw[2], w.saw[3]);
    ck_assert_str_eq(cwd_listing(), "");
    /* Only the cause is reported, not the cancellations. */
    assert_err_line(&r, 28, url("/stall-body?after=100"));
    ck_assert_msg(strstr(r.err, "(42)") == NULL, "cancellations reported:\n%s", r.err);
    cli_free(&r);
}
END_TEST

START_TEST(rate_limit_with_burst)
{
    struct cli r;
    const char *args[40];
    size_t n = 0;

    args[n++] = "-Z";
    args[n++] = "--rate";
    args[n++] = "20/s";
    args[n++] = "--burst";
    args[n++] = "5";
    for (int i = 0; i < 30; i++)
        args[n++] = url("/bytes/1");
    args[n] = NULL;
    /* 5 start at once, the other 25 at 20 a second: 1.25 s. */
    cli_run_hook(&r, RUN_BOUND_MS, NULL, NULL, args);
    assert_exit(&r, 0);
    ck_assert_msg(r.secs >= 1.1 && r.secs <= 2.5, "30 URLs at 20/s, burst 5: %.3f s", r.secs);
    ck_assert_uint_eq(r.out_len, 30);
    for (size_t i = 0; i < 30; i++)
        ck_assert_int_eq((unsigned char)r.out[i], (int)harness_pattern_byte(0));
    ck_assert_uint_eq(fs_requests(), 30);
    cli_free(&r);
}
END_TEST

/* 2000 URLs, 500 at a time, each answered after 20 ms: exactly 500 connections, each reused,
 * also at the end of the list, when the tool lets connections close as they finish. (Closing
 * one that a transfer begun just before was about to take made that transfer open another:
 * 13 to 136 more here when strace slowed the tool down; test_client.c's drain cases catch
 * that deterministically.) */
START_TEST(parallel_connections_capped_and_reused)
{
    struct cli r;
    unsigned conns, reqs;
    FILE *f = fopen(cwd_file("urls.txt"), "w");

    const char *u = url("/delay/20");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 2000; i++)
        fprintf(f, "%s\n", u);
    ck_assert_int_eq(fclose(f), 0);
    CLI(&r, "-s", "-Z", "--parallel-max", "500", "-i", "urls.txt");
    assert_exit(&r, 0);
    fs_stats(&conns, &reqs);
    ck_assert_uint_eq(reqs, 2000);
    ck_assert_msg(conns == 500 + 1, "%u connections for 2000 URLs at 500 in flight", conns - 1);
    cli_free(&r);
}
END_TEST

/* Sends `sig` to the tool once the part file `name` exists (the download is mid-body). */
struct interrupter {
    const char *part;
    int sig;
    bool sent;
};

static void interrupter_tick(void *arg)
{
    struct interrupter *it = arg;
    if (!it->sent && g_child > 0 && exists(it->part)) {
        kill(g_child, it->sig);
        it->sent = true;
    }
}

START_TEST(interrupt_removes_part_files)
{
    static const int sigs[] = {SIGINT, SIGTERM};
    struct cli r;

    for (size_t i = 0; i < 2; i++) {
        struct interrupter it = {.part = cwd_file("big" PART_SUFFIX), .sig = sigs[i]};
        CLI_HOOK(&r, RUN_BOUND_MS, interrupter_tick, &it, "-Z", "-o", "big",
                 url("/drip?n=100000&delay=1"), "-o", "other", url("/stall-body?after=10"));
        ck_assert_msg(it.sent, "the part file never appeared");
        /* 128 + the signal, and no file left, partial or final. */
        assert_exit(&r, 128 + sigs[i]);
        ck_assert_msg(r.secs < 3.0, "the interrupted run took %.3f s", r.secs);
        ck_assert_str_eq(cwd_listing(), "");
        cli_free(&r);
    }
}
END_TEST

START_TEST(input_file_list)
{
    struct cli r;
    /* sluice's -i is --input-file (curl's -i, --include, is tested above): one URL a line,
     * blank lines and # comments skipped, spaces trimmed; its URLs and the command line's run
     * in command-line order. */
    FILE *f = fopen(cwd_file("urls.txt"), "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "# a comment\n\n  %s  \n%s\r\n", url("/bytes/3"), url("/status/202"));
    ck_assert_int_eq(fclose(f), 0);
    CLI(&r, url("/bytes/2"), "-i", "urls.txt", "-w", "<%{urlnum}>", "--input-file", "urls.txt");
    assert_exit(&r, 0);
    static const char want[] = "\x07\x8a<0>"                     /* /bytes/2 */
                               "\x07\x8a\x12<1>status 202\n<2>"  /* the list */
                               "\x07\x8a\x12<3>status 202\n<4>"; /* the list again */
    ck_assert_uint_eq(r.out_len, sizeof(want) - 1);
    ck_assert_mem_eq(r.out, want, sizeof(want) - 1);
    cli_free(&r);

    /* A list that cannot be read: 26. */
    CLI(&r, "-i", "missing.txt");
    assert_exit(&r, 26);
    cli_free(&r);
}
END_TEST

/* ======================================================================================== */

static Suite *cli_suite(void)
{
    Suite *s = suite_create("integ-cli");
    TCase *tc;

    tc = tcase_create("exit");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, exit_0_body_to_stdout);
    tcase_add_test(tc, exit_3_malformed_url);
    tcase_add_test(tc, exit_6_unresolvable_host);
    tcase_add_test(tc, exit_7_connection_refused);
    tcase_add_test(tc, exit_18_partial_body);
    tcase_add_test(tc, exit_22_fail_and_fail_with_body);
    tcase_add_test(tc, exit_23_unwritable_output);
    tcase_add_test(tc, parallel_connections_capped_and_reused);
    tcase_add_test(tc, exit_28_max_time);
    tcase_add_test(tc, exit_28_connect_timeout);
    tcase_add_test(tc, read_timeout_starts_at_first_byte);
    tcase_add_test(tc, exit_2_usage);
    tcase_add_test(tc, exit_47_too_many_redirects);
    tcase_add_test(tc, exit_52_empty_reply);
    suite_add_tcase(s, tc);

    tc = tcase_create("output");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, output_file_exact_bytes);
    tcase_add_test(tc, output_remote_name);
    tcase_add_test(tc, output_parallel_in_url_order);
    tcase_add_test(tc, output_write_out);
    tcase_add_test(tc, output_json_report);
    tcase_add_test(tc, output_head_and_include);
    tcase_add_test(tc, input_file_list);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, request_post_data_and_headers);
    suite_add_tcase(s, tc);

    tc = tcase_create("flow");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, retry_flaky_succeeds);
    tcase_add_test(tc, retry_resumes_a_cut_download);
    tcase_add_test(tc, continue_at_resumes_across_runs);
    tcase_add_test(tc, fail_early_cancels_the_rest);
    tcase_add_test(tc, rate_limit_with_burst);
    tcase_add_test(tc, interrupt_removes_part_files);
    suite_add_tcase(s, tc);
    return s;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_top, sizeof(g_top), "%s/sluice-cli-XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(g_top) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(cli_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (nftw(g_top, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "test_cli: could not remove %s: %s\n", g_top, strerror(errno));
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
