/*
 * harness.h -- start and stop the loopback servers that sluice's integration tests talk to:
 * the fault-injecting faultserver (tests/integ/faultserver.c) and a throwaway nginx.
 *
 * The harness is independent of libsluice on purpose: a bug in the library must not be able to
 * hide itself by also breaking the servers that test it.
 *
 * Threads: none of these functions is thread-safe; call them from the test's main thread.
 * Children: every server is a child process that gets SIGTERM when the thread that started it
 * exits (PR_SET_PDEATHSIG), so a crashed or timed-out Check test cannot leave servers behind.
 * Still, every started server must be stopped: stopping reaps the child and, for nginx, removes
 * its temporary directory.
 */
#ifndef SLUICE_TESTS_INTEG_HARNESS_H
#define SLUICE_TESTS_INTEG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A running child server. Zero-initialise it; pid is 0 when nothing runs. */
struct harness_server {
    pid_t pid;
    int port;   /* the port from the child's "PORT <n>" line */
    int out_fd; /* read end of the child's stdout; kept open so late writes don't SIGPIPE it */
};

/*
 * Start argv[0] (an absolute path; argv is NULL-terminated) with its stdout on a pipe, and wait
 * at most 10 s for its first line, which must be "PORT <n>". On success fills `s` and returns
 * 0. On failure prints why to stderr, kills and reaps the child, and returns -1 with `s` zeroed.
 * The child keeps the caller's stderr.
 */
int harness_start(struct harness_server *s, const char *const argv[]);

/*
 * SIGTERM, wait at most 5 s, then SIGKILL and reap; `s` is zeroed. Safe on a zeroed or stopped
 * `s` (returns 0). Returns 0 when the server ended cleanly (exit status 0, or killed by our
 * SIGTERM), -1 otherwise (a crash, a sanitizer abort, SIGKILL needed), with a line on stderr;
 * tests assert on it so that a server-side bug fails the test that triggered it.
 */
int harness_stop(struct harness_server *s);

/*
 * Start the faultserver built next to the tests (FAULTSERVER_PATH, set by meson) on `host`
 * ("127.0.0.1" when NULL; "::1" for IPv6) and a free port. `silent` passes --silent
 * (accept, then never read or write). Returns 0 or -1 like harness_start().
 */
int harness_faultserver(struct harness_server *s, const char *host, bool silent);

/* The path harness_faultserver() runs. */
const char *harness_faultserver_path(void);

/* ---- nginx --------------------------------------------------------------------------- */

/* A file to generate in the docroot: `size` bytes of the deterministic pattern. */
struct harness_file {
    const char *name; /* relative path; may contain '/', must not contain ".." */
    uint64_t size;
};

struct harness_nginx_opts {
    const struct harness_file *files;
    size_t nfiles;
    bool ipv6;               /* also listen on [::1] (port6) */
    const char *server_conf; /* optional directives appended inside the server block */
};

/*
 * A running nginx. `dir` is its private temporary directory: nginx.conf, logs, pid file,
 * temp paths, and the docroot `dir`/www. `root` is that docroot.
 *
 * Locations: "/" serves the docroot (static files, Content-Length, sendfile, Range, keep-alive
 * for 100000 requests; gzip for .txt/.html/.json when the client sends Accept-Encoding: gzip,
 * then chunked). "/chunked/<name>" serves the same file with chunked transfer coding: nginx
 * never chunks a plain static file, so this location runs the file through sub_filter with a
 * pattern that cannot occur in generated content, which drops Content-Length (and ETag and
 * Last-Modified) and makes nginx chunk an HTTP/1.1 response.
 */
struct harness_nginx {
    struct harness_server srv; /* srv.port is the IPv4 port */
    int port6;                 /* IPv6 port when opts->ipv6, else 0 */
    char dir[256];
    char root[300];
};

/*
 * Create the temporary directory, generate the files, write nginx.conf, and run
 * /usr/sbin/nginx in the foreground (single process). Returns once 127.0.0.1:port accepts
 * connections (at most 10 s), or -1 after cleaning up everything, with a message on stderr.
 * A start that fails (say, a lost race for the free port) is retried up to 3 times.
 */
int harness_nginx_start(struct harness_nginx *n, const struct harness_nginx_opts *o);

/* Stop nginx (SIGTERM, bounded wait, SIGKILL) and remove its directory. Safe when stopped.
 * Returns 0 when nginx exited with status 0, else -1 (and prints its error log). */
int harness_nginx_stop(struct harness_nginx *n);

/* ---- deterministic content ------------------------------------------------------------- */

/* Byte i of every generated body and file: (i * 131 + 7) % 251. */
uint64_t harness_pattern_byte(uint64_t i);

/* Fill buf with bytes [offset, offset + len) of the pattern. */
void harness_pattern_fill(uint8_t *buf, uint64_t offset, size_t len);

/* Number of leading bytes of buf that match the pattern from `offset` (len when all do). */
size_t harness_pattern_check(const uint8_t *buf, uint64_t offset, size_t len);

/* A free TCP port on `host` ("127.0.0.1" or "::1"): bound, read back, closed. Racy by nature.
 * Returns the port or -1. */
int harness_free_port(const char *host);

#endif
