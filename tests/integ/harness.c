/*
 * harness.c -- child-process servers for the integration tests (see harness.h).
 *
 * Every server is a fork/exec'd child. Between fork and exec the child asks for SIGTERM when its
 * parent thread dies, clears the signal mask and dispositions it may have inherited from the
 * test, and closes every descriptor but stdio: a client socket the test opened before starting a
 * second server must not be kept open by that server, or closing it would send no FIN.
 *
 * The faultserver reports its port on stdout ("PORT <n>"). nginx cannot, so for nginx the
 * harness picks a free port (bind to port 0, read it back, close; racy, hence the retries) and
 * polls with connect() until it answers. nginx runs with master_process off so that it is one
 * process: killing the pid we know kills the whole server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FAULTSERVER_PATH
#error "FAULTSERVER_PATH must be defined by the build (the faultserver executable's full path)"
#endif

#define NGINX_BIN "/usr/sbin/nginx"
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define PATTERN_PERIOD 251
#define FILE_BUF (1u << 20)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- pattern --------------------------------------------------------------------------- */

uint64_t harness_pattern_byte(uint64_t i)
{
    return (i % PATTERN_PERIOD * 131 + 7) % PATTERN_PERIOD;
}

void harness_pattern_fill(uint8_t *buf, uint64_t offset, size_t len)
{
    unsigned v = (unsigned)harness_pattern_byte(offset);
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)v;
        v += 131;
        if (v >= PATTERN_PERIOD)
            v -= PATTERN_PERIOD;
    }
}

size_t harness_pattern_check(const uint8_t *buf, uint64_t offset, size_t len)
{
    unsigned v = (unsigned)harness_pattern_byte(offset);
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != v)
            return i;
        v += 131;
        if (v >= PATTERN_PERIOD)
            v -= PATTERN_PERIOD;
    }
    return len;
}

/* ---- processes ------------------------------------------------------------------------- */

/*
 * fork/exec argv with stdout on `out_fd` (or /dev/null when -1). Returns the pid or -1.
 * Only async-signal-safe calls happen in the child before exec.
 */
static pid_t spawn(const char *const argv[], int out_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid > 0)
        return pid;

    if (out_fd < 0)
        out_fd = open("/dev/null", O_WRONLY);
    if (out_fd < 0 || dup2(out_fd, STDOUT_FILENO) < 0)
        _exit(127);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
        _exit(127); /* the parent is already gone: don't outlive it */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    /* Servers want many descriptors (10,000 connections); the limit is inherited. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    close_range(3, ~0u, 0);
    execv(argv[0], (char *const *)argv);
    static const char msg[] = "harness: exec failed\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
}

/* Reap `pid` within timeout_ms. Returns the wait status, or -1 if it is still running. */
static int reap(pid_t pid, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return 0; /* not our child any more: nothing to wait for */
        if (now_ms() >= end)
            return -1;
        sleep_ms(5);
    }
}

static int kill_and_reap(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    st = reap(pid, STOP_TIMEOUT_MS);
    if (st == -1) {
        fprintf(stderr, "harness: pid %d ignored SIGTERM for %d ms, sending SIGKILL\n", (int)pid,
                STOP_TIMEOUT_MS);
        kill(pid, SIGKILL);
        st = reap(pid, STOP_TIMEOUT_MS);
    }
    return st;
}

static void report_status(const char *what, pid_t pid, int st)
{
    if (st == -1)
        fprintf(stderr, "harness: %s (pid %d) could not be reaped\n", what, (int)pid);
    else if (WIFSIGNALED(st))
        fprintf(stderr, "harness: %s (pid %d) died of signal %d\n", what, (int)pid, WTERMSIG(st));
    else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
        fprintf(stderr, "harness: %s (pid %d) exited with status %d\n", what, (int)pid,
                WEXITSTATUS(st));
}

int harness_start(struct harness_server *s, const char *const argv[])
{
    int p[2];
    *s = (struct harness_server){.out_fd = -1};
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "harness: pipe: %s\n", strerror(errno));
        return -1;
    }
    pid_t pid = spawn(argv, p[1]);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -1;
    }

    /* Read the first line, "PORT <n>\n", within START_TIMEOUT_MS. */
    char line[128];
    size_t len = 0;
    uint64_t end = now_ms() + START_TIMEOUT_MS;
    const char *why = NULL;
    while (memchr(line, '\n', len) == NULL) {
        uint64_t now = now_ms();
        if (now >= end || len == sizeof(line) - 1) {
            why = len == sizeof(line) - 1 ? "first line too long" : "timed out";
            break;
        }
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int r = poll(&pfd, 1, (int)(end - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t n = read(p[0], line + len, sizeof(line) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            why = "exited before printing its port";
            break;
        }
        len += (size_t)n;
    }
    line[len] = '\0';
    int port = 0;
    char nl;
    if (why == NULL &&
        (sscanf(line, "PORT %d%c", &port, &nl) != 2 || nl != '\n' || port <= 0 || port > 65535))
        why = "bad first line";
    if (why != NULL) {
        fprintf(stderr, "harness: %s: %s (got \"%.*s\")\n", argv[0], why, (int)strcspn(line, "\n"),
                line);
        int st = kill_and_reap(pid);
        report_status(argv[0], pid, st);
        close(p[0]);
        return -1;
    }
    s->pid = pid;
    s->port = port;
    s->out_fd = p[0];
    return 0;
}

int harness_stop(struct harness_server *s)
{
    int rc = 0;
    if (s->pid > 0) {
        int st = kill_and_reap(s->pid);
        /* Exit 0 or death by our SIGTERM is clean; anything else (a sanitizer abort, a crash,
         * a non-zero exit, SIGKILL) fails. */
        bool clean = st != -1 && ((WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
                                  (WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM));
        if (!clean) {
            report_status("server", s->pid, st);
            rc = -1;
        }
    }
    if (s->out_fd >= 0)
        close(s->out_fd);
    *s = (struct harness_server){.out_fd = -1};
    return rc;
}

const char *harness_faultserver_path(void)
{
    return FAULTSERVER_PATH;
}

int harness_faultserver(struct harness_server *s, const char *host, bool silent)
{
    const char *argv[] = {FAULTSERVER_PATH, "--host", host ? host : "127.0.0.1",
                          silent ? "--silent" : NULL, NULL};
    return harness_start(s, argv);
}

/* ---- nginx ----------------------------------------------------------------------------- */

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*s6);
        return 0;
    }
    return -1;
}

int harness_free_port(const char *host)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_addr(host, 0, &ss, &sl) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&ss, sl) == 0 &&
        getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
    close(fd);
    return port;
}

static bool port_answers(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_addr(host, port, &ss, &sl) < 0)
        return false;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&ss, sl) == 0;
    close(fd);
    return ok;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0)
        fprintf(stderr, "harness: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Whether pid runs (a zombie does not count: PID 1 in a container may reap slowly). */
static bool pid_alive(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp == NULL || rp[1] != ' ' || (rp[2] != 'Z' && rp[2] != 'X');
}

/*
 * A Check test that fails an assertion leaves with _exit(), so nothing of ours runs: nginx dies
 * through PR_SET_PDEATHSIG, but its directory stays. Each directory records the pid of the
 * process that made it ("owner"); remove those whose owner is gone.
 */
static void sweep_stale_dirs(void)
{
    DIR *d = opendir("/tmp");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300];
        if (strncmp(e->d_name, "sluice-nginx-", 13) != 0)
            continue;
        snprintf(path, sizeof(path), "/tmp/%s/owner", e->d_name);
        FILE *f = fopen(path, "r");
        int pid = 0;
        if (f == NULL)
            continue; /* being created right now, or not ours */
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
        if (pid > 0 && !pid_alive(pid)) {
            snprintf(path, sizeof(path), "/tmp/%s", e->d_name);
            rm_tree(path);
        }
    }
    closedir(d);
}

/* mkdir -p for the parent directories of root/name. */
static int make_parents(const char *root, const char *name)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s/%s", root, name) >= (int)sizeof(path))
        return -1;
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return 0;
}

/* Write `size` pattern bytes. A 1 MiB window of the (period 251) pattern serves any offset. */
static int write_pattern_file(const char *path, uint64_t size)
{
    static uint8_t *buf;
    if (buf == NULL) {
        buf = malloc(FILE_BUF + PATTERN_PERIOD);
        if (buf == NULL)
            return -1;
        harness_pattern_fill(buf, 0, FILE_BUF + PATTERN_PERIOD);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    uint64_t off = 0;
    while (off < size) {
        size_t k = size - off < FILE_BUF ? (size_t)(size - off) : FILE_BUF;
        ssize_t w = write(fd, buf + off % PATTERN_PERIOD, k);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (uint64_t)w;
    }
    return close(fd);
}

static int write_conf(const struct harness_nginx *n, const struct harness_nginx_opts *o)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/nginx.conf", n->dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    const char *d = n->dir;
    if (geteuid() == 0)
        fprintf(f, "user root;\n");
    fprintf(f,
            "daemon off;\n"
            "master_process off;\n"
            "worker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "lock_file %s/nginx.lock;\n"
            "error_log %s/error.log warn;\n"
            "events { worker_connections 16384; }\n"
            "http {\n"
            "    types {\n"
            "        text/html html htm;\n"
            "        text/plain txt;\n"
            "        text/css css;\n"
            "        application/json json;\n"
            "        application/javascript js;\n"
            "        application/octet-stream bin;\n"
            "    }\n"
            "    default_type application/octet-stream;\n"
            "    access_log off;\n"
            "    sendfile on;\n"
            "    tcp_nopush on;\n"
            "    tcp_nodelay on;\n"
            "    keepalive_requests 100000;\n"
            "    keepalive_timeout 75s;\n"
            "    gzip on;\n"
            "    gzip_min_length 0;\n"
            "    gzip_types text/plain text/css application/json application/javascript;\n"
            "    gzip_vary on;\n"
            "    client_body_temp_path %s/tmp/body;\n"
            "    proxy_temp_path %s/tmp/proxy;\n"
            "    fastcgi_temp_path %s/tmp/fastcgi;\n"
            "    uwsgi_temp_path %s/tmp/uwsgi;\n"
            "    scgi_temp_path %s/tmp/scgi;\n"
            "    server {\n"
            "        listen 127.0.0.1:%d;\n",
            d, d, d, d, d, d, d, d, n->srv.port);
    if (o->ipv6)
        fprintf(f, "        listen [::1]:%d;\n", n->port6);
    fprintf(f,
            "        server_name localhost;\n"
            "        root %s;\n"
            "        location / { }\n"
            "        # nginx never chunks a static file; sub_filter drops Content-Length, so the\n"
            "        # same file comes back chunked. '@@' never occurs in generated content.\n"
            "        location /chunked/ {\n"
            "            alias %s/;\n"
            "            sub_filter '@@sluice-no-match@@' 'x';\n"
            "            sub_filter_types *;\n"
            "            gzip off;\n"
            "        }\n"
            "%s%s"
            "    }\n"
            "}\n",
            n->root, n->root, o->server_conf ? o->server_conf : "", o->server_conf ? "\n" : "");
    return fclose(f);
}

static void dump_error_log(const struct harness_nginx *n)
{
    char path[512], buf[4096];
    snprintf(path, sizeof(path), "%s/error.log", n->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "harness: --- %s ---\n", path);
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, k, stderr);
    fclose(f);
}

/* One launch on fresh ports. 0: up, -1: failed (retryable). */
static int nginx_launch(struct harness_nginx *n, const struct harness_nginx_opts *o)
{
    char conf[512], errlog[512];
    n->srv = (struct harness_server){.out_fd = -1};
    n->srv.port = harness_free_port("127.0.0.1");
    n->port6 = o->ipv6 ? harness_free_port("::1") : 0;
    if (n->srv.port <= 0 || n->port6 < 0) {
        fprintf(stderr, "harness: no free port\n");
        return -1;
    }
    if (write_conf(n, o) < 0) {
        fprintf(stderr, "harness: writing nginx.conf: %s\n", strerror(errno));
        return -1;
    }
    snprintf(conf, sizeof(conf), "%s/nginx.conf", n->dir);
    snprintf(errlog, sizeof(errlog), "%s/error.log", n->dir);
    const char *argv[] = {NGINX_BIN, "-p", n->dir, "-c", conf, "-e", errlog, NULL};
    pid_t pid = spawn(argv, -1);
    if (pid < 0)
        return -1;
    uint64_t end = now_ms() + START_TIMEOUT_MS;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            report_status("nginx", pid, st);
            dump_error_log(n);
            return -1;
        }
        if (port_answers("127.0.0.1", n->srv.port) && (!o->ipv6 || port_answers("::1", n->port6)))
            break;
        if (now_ms() >= end) {
            fprintf(stderr, "harness: nginx did not answer within %d ms\n", START_TIMEOUT_MS);
            kill_and_reap(pid);
            dump_error_log(n);
            return -1;
        }
        sleep_ms(10);
    }
    n->srv.pid = pid;
    return 0;
}

int harness_nginx_start(struct harness_nginx *n, const struct harness_nginx_opts *o)
{
    memset(n, 0, sizeof(*n));
    n->srv.out_fd = -1;
    if (access(NGINX_BIN, X_OK) < 0) {
        fprintf(stderr, "harness: %s: %s\n", NGINX_BIN, strerror(errno));
        return -1;
    }
    sweep_stale_dirs();
    snprintf(n->dir, sizeof(n->dir), "/tmp/sluice-nginx-XXXXXX");
    if (mkdtemp(n->dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
        n->dir[0] = '\0';
        return -1;
    }
    snprintf(n->root, sizeof(n->root), "%s/www", n->dir);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s/owner", n->dir);
    FILE *f = fopen(tmp, "w");
    bool written = f != NULL && fprintf(f, "%d\n", (int)getpid()) > 0;
    if (f != NULL && fclose(f) != 0)
        written = false;
    if (!written) {
        fprintf(stderr, "harness: writing %s failed\n", tmp);
        goto fail;
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp", n->dir);
    if (mkdir(n->root, 0755) < 0 || mkdir(tmp, 0755) < 0) {
        fprintf(stderr, "harness: mkdir in %s: %s\n", n->dir, strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < o->nfiles; i++) {
        const char *name = o->files[i].name;
        char path[1024];
        if (name[0] == '/' || strstr(name, "..") != NULL) {
            fprintf(stderr, "harness: bad docroot file name \"%s\"\n", name);
            goto fail;
        }
        snprintf(path, sizeof(path), "%s/%s", n->root, name);
        if (make_parents(n->root, name) < 0 || write_pattern_file(path, o->files[i].size) < 0) {
            fprintf(stderr, "harness: writing %s: %s\n", path, strerror(errno));
            goto fail;
        }
    }
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (nginx_launch(n, o) == 0)
            return 0;
        fprintf(stderr, "harness: nginx start attempt %d failed\n", attempt);
    }
fail:
    rm_tree(n->dir);
    memset(n, 0, sizeof(*n));
    n->srv.out_fd = -1;
    return -1;
}

int harness_nginx_stop(struct harness_nginx *n)
{
    int rc = 0;
    if (n->srv.pid > 0) {
        int st = kill_and_reap(n->srv.pid);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            report_status("nginx", n->srv.pid, st);
            dump_error_log(n);
            rc = -1;
        }
    }
    rm_tree(n->dir);
    memset(n, 0, sizeof(*n));
    n->srv.out_fd = -1;
    return rc;
}
