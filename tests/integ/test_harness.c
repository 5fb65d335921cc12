/*
 * test_harness.c -- tests of the test servers themselves: the faultserver's endpoints and
 * faults, and the nginx harness. The client side is plain blocking sockets with receive
 * timeouts and a deliberately small HTTP/1.1 response reader, never libsluice: these tests must
 * hold even when the library is broken.
 *
 * Every test starts its own server and stops it, asserting that it exited cleanly, so a
 * sanitizer report inside the faultserver fails the test that provoked it. If an assertion
 * fails first, the server still dies with the test process (PR_SET_PDEATHSIG).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ---- client helpers ---------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Blocking TCP connection with 10 s send/receive timeouts, so no test can hang on a read. */
static int tcp_connect(const char *host, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof(*s4);
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, host, &s6->sin6_addr), 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*s6);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ck_assert_msg(connect(fd, (struct sockaddr *)&ss, sl) == 0, "connect %s:%d: %s", host, port,
                  strerror(errno));
    return fd;
}

/* Close with RST: bulk tests would otherwise leave thousands of TIME_WAIT sockets. */
static void close_rst(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Buffered reader over a socket. */
struct rd {
    int fd;
    uint8_t *buf;
    size_t len, off, cap;
    int err; /* errno of the failed recv; 0 after EOF */
};

static void rd_init(struct rd *r, int fd)
{
    /* Allocated up front so that r->buf + r->off is never arithmetic on NULL. */
    *r = (struct rd){.fd = fd, .cap = 131072};
    r->buf = malloc(r->cap);
    ck_assert_ptr_nonnull(r->buf);
}

static void rd_free(struct rd *r)
{
    free(r->buf);
    r->buf = NULL;
}

static size_t rd_avail(const struct rd *r)
{
    return r->len - r->off;
}

/* Read more bytes: > 0 read, 0 EOF, -1 error (r->err). */
static ssize_t rd_more(struct rd *r)
{
    if (r->cap - r->len < 65536) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
        if (r->cap - r->len < 65536) {
            r->cap *= 2;
            r->buf = realloc(r->buf, r->cap);
            ck_assert_ptr_nonnull(r->buf);
        }
    }
    ssize_t n;
    do
        n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        r->err = errno;
        return -1;
    }
    r->err = 0;
    r->len += (size_t)n;
    return n;
}

static bool rd_need(struct rd *r, size_t n)
{
    while (rd_avail(r) < n)
        if (rd_more(r) <= 0)
            return false;
    return true;
}

/* Offset (from r->off) of delim, reading as needed; -1 at EOF or error. */
static long rd_find(struct rd *r, const char *delim)
{
    size_t dl = strlen(delim);
    for (;;) {
        const uint8_t *p = memmem(r->buf + r->off, rd_avail(r), delim, dl);
        if (p)
            return (long)(p - (r->buf + r->off));
        if (rd_more(r) <= 0)
            return -1;
    }
}

/* Everything until EOF or error. Returns the byte count; *err gets the errno or 0. */
static size_t rd_to_eof(struct rd *r, int *err)
{
    while (rd_more(r) > 0)
        ;
    *err = r->err;
    return rd_avail(r);
}

struct resp {
    int status;
    int ninterim;
    int interim[4];
    char *head; /* the final response's head, NUL-terminated */
    uint8_t *body;
    size_t body_len;
    bool chunked;
    size_t nchunks;
    size_t chunks[64];
    char trailer[256];
    bool complete; /* the framing ended as announced */
};

static void resp_free(struct resp *p)
{
    free(p->head);
    free(p->body);
    memset(p, 0, sizeof(*p));
}

/* Value of header `name` in p->head, copied into out; NULL when absent. */
static const char *resp_hdr(const struct resp *p, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *h = strstr(p->head, "\r\n"); h && h[2] != '\r'; h = strstr(h + 2, "\r\n")) {
        const char *line = h + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r");
            if (vl >= outlen)
                vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
    }
    return NULL;
}

static void body_add(struct resp *p, const uint8_t *s, size_t n)
{
    p->body = realloc(p->body, p->body_len + n + 1);
    ck_assert_ptr_nonnull(p->body);
    if (n > 0)
        memcpy(p->body + p->body_len, s, n);
    p->body_len += n;
    p->body[p->body_len] = 0;
}

/*
 * Read one response, skipping (and recording) 1xx interim responses. Returns 0 for a complete
 * response, -1 when the connection ended first; what arrived is in `p` either way.
 */
static int read_resp(struct rd *r, struct resp *p, bool head_req)
{
    char v[64];
    memset(p, 0, sizeof(*p));
    for (;;) {
        long end = rd_find(r, "\r\n\r\n");
        if (end < 0)
            return -1;
        free(p->head);
        p->head = strndup((const char *)r->buf + r->off, (size_t)end + 4);
        r->off += (size_t)end + 4;
        ck_assert_msg(sscanf(p->head, "HTTP/1.%*d %d", &p->status) == 1, "bad status line: %s",
                      p->head);
        if (p->status >= 200 || p->status == 101)
            break;
        if (p->ninterim < 4)
            p->interim[p->ninterim] = p->status;
        p->ninterim++;
    }
    if (head_req || p->status == 204 || p->status == 304) {
        p->complete = true;
        return 0;
    }
    if (resp_hdr(p, "Transfer-Encoding", v, sizeof(v)) && strstr(v, "chunked")) {
        p->chunked = true;
        for (;;) {
            long ll = rd_find(r, "\r\n");
            if (ll < 0)
                return -1;
            size_t size = strtoul((const char *)r->buf + r->off, NULL, 16);
            r->off += (size_t)ll + 2;
            if (size == 0)
                break;
            if (p->nchunks < 64)
                p->chunks[p->nchunks] = size;
            p->nchunks++;
            if (!rd_need(r, size + 2)) {
                size_t k = rd_avail(r) < size ? rd_avail(r) : size;
                body_add(p, r->buf + r->off, k);
                r->off += k;
                return -1;
            }
            body_add(p, r->buf + r->off, size);
            ck_assert_msg(memcmp(r->buf + r->off + size, "\r\n", 2) == 0, "no CRLF after chunk");
            r->off += size + 2;
        }
        for (;;) { /* trailer section */
            long ll = rd_find(r, "\r\n");
            if (ll < 0)
                return -1;
            if (ll > 0 && strlen(p->trailer) + (size_t)ll + 3 < sizeof(p->trailer)) {
                strncat(p->trailer, (const char *)r->buf + r->off, (size_t)ll);
                strcat(p->trailer, "\n");
            }
            r->off += (size_t)ll + 2;
            if (ll == 0)
                break;
        }
        p->complete = true;
        return 0;
    }
    if (resp_hdr(p, "Content-Length", v, sizeof(v))) {
        size_t cl = strtoull(v, NULL, 10);
        bool ok = rd_need(r, cl);
        size_t k = rd_avail(r) < cl ? rd_avail(r) : cl;
        body_add(p, r->buf + r->off, k);
        r->off += k;
        p->complete = ok;
        return ok ? 0 : -1;
    }
    int err;
    rd_to_eof(r, &err); /* delimited by close */
    body_add(p, r->buf + r->off, rd_avail(r));
    r->off = r->len;
    p->complete = err == 0;
    return p->complete ? 0 : -1;
}

/* One request on a fresh connection: send `req`, read one response, close. */
static void fetch(const char *host, int port, const char *req, struct resp *p)
{
    int fd = tcp_connect(host, port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, req);
    ck_assert_msg(read_resp(&r, p, strncmp(req, "HEAD ", 5) == 0) == 0,
                  "incomplete response to %.40s (errno %d)", req, r.err);
    rd_free(&r);
    close(fd);
}

static void get(int port, const char *target, struct resp *p)
{
    char req[4096];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", target);
    fetch("127.0.0.1", port, req, p);
}

static void fs_start(struct harness_server *s)
{
    ck_assert_msg(harness_faultserver(s, NULL, false) == 0, "faultserver did not start");
}

static void fs_stop(struct harness_server *s)
{
    ck_assert_msg(harness_stop(s) == 0, "faultserver did not exit cleanly");
}

static void assert_pattern(const uint8_t *body, uint64_t offset, size_t len)
{
    size_t ok = harness_pattern_check(body, offset, len);
    ck_assert_msg(ok == len, "body differs from the pattern at byte %zu of %zu", ok, len);
}

static bool readable_within(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, ms) > 0;
}

/* Raise the soft descriptor limit for bulk tests; false if the hard limit is below `want`. */
static bool fd_limit_at_least(rlim_t want)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        return false;
    rl.rlim_cur = rl.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* ---- pattern ----------------------------------------------------------------------------- */

START_TEST(pattern_matches_definition)
{
    uint8_t buf[1000];
    for (uint64_t i = 0; i < 1000; i++)
        ck_assert_uint_eq(harness_pattern_byte(i), (i * 131 + 7) % 251);
    ck_assert_uint_eq(harness_pattern_byte(UINT64_C(1) << 40),
                      (uint8_t)(((UINT64_C(1) << 40) % 251 * 131 + 7) % 251));
    harness_pattern_fill(buf, 12345, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        ck_assert_uint_eq(buf[i], harness_pattern_byte(12345 + i));
    ck_assert_uint_eq(harness_pattern_check(buf, 12345, sizeof(buf)), sizeof(buf));
    buf[700] ^= 1;
    ck_assert_uint_eq(harness_pattern_check(buf, 12345, sizeof(buf)), 700);
}
END_TEST

/* ---- faultserver: basics ----------------------------------------------------------------- */

START_TEST(fs_bytes_content_and_length)
{
    struct harness_server s;
    struct resp p;
    char v[64];
    fs_start(&s);

    get(s.port, "/bytes/100000", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert_str_eq(resp_hdr(&p, "Content-Length", v, sizeof(v)), "100000");
    ck_assert_str_eq(resp_hdr(&p, "ETag", v, sizeof(v)), "\"b-100000\"");
    ck_assert_ptr_nonnull(resp_hdr(&p, "Last-Modified", v, sizeof(v)));
    ck_assert_uint_eq(p.body_len, 100000);
    assert_pattern(p.body, 0, p.body_len);
    resp_free(&p);

    get(s.port, "/bytes/0", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_eq(p.body_len, 0);
    resp_free(&p);

    /* HEAD: the same headers, no body; the connection stays usable. */
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd,
             "HEAD /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, true), 0);
    ck_assert_str_eq(resp_hdr(&p, "Content-Length", v, sizeof(v)), "10");
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 3);
    assert_pattern(p.body, 0, 3);
    resp_free(&p);
    rd_free(&r);
    close(fd);

    get(s.port, "/no/such/thing", &p);
    ck_assert_int_eq(p.status, 404);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_keepalive_and_stats)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 10);
    resp_free(&p);
    send_str(fd, "GET /bytes/20 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 20);
    resp_free(&p);
    /* /stats does not count itself. */
    send_str(fd, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq((char *)p.body, "connections=1 requests=2\n");
    resp_free(&p);
    send_str(fd,
             "GET /stats/reset HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq((char *)p.body, "connections=0 requests=0\n");
    resp_free(&p);
    rd_free(&r);
    close(fd);

    /* HTTP/1.0 without keep-alive: the server closes after the response. */
    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /bytes/5 HTTP/1.0\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 5);
    resp_free(&p);
    int err;
    ck_assert_uint_eq(rd_to_eof(&r, &err), 0);
    ck_assert_int_eq(err, 0);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_pipelining_in_order)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    /* The slow one first: responses must still come back in request order. */
    send_str(fd, "GET /delay/30 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /bytes/7 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /status/418 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /redirect/0 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq((char *)p.body, "ok\n");
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 7);
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq((char *)p.body,
                     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 418);
    ck_assert_str_eq((char *)p.body, "status 418\n");
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq((char *)p.body, "done\n");
    resp_free(&p);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_echo_exact_bytes)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);

    static const char chunked[] = "PUT /echo?x=1 HTTP/1.1\r\nHost: x\r\nX-Odd:  spaced \r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nT: v\r\n\r\n";
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    /* Split the request at awkward places: the server must not care. */
    for (size_t i = 0; i < sizeof(chunked) - 1; i += 7) {
        size_t k = sizeof(chunked) - 1 - i < 7 ? sizeof(chunked) - 1 - i : 7;
        send_all(fd, chunked + i, k);
        usleep(200);
    }
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, sizeof(chunked) - 1);
    ck_assert_mem_eq(p.body, chunked, sizeof(chunked) - 1);
    resp_free(&p);

    /* A 1 MiB body with Content-Length, binary. */
    size_t n = 1 << 20;
    const char *h = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
    uint8_t *body = malloc(n);
    harness_pattern_fill(body, 99, n);
    send_str(fd, h);
    send_all(fd, body, n);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, strlen(h) + n);
    ck_assert_mem_eq(p.body, h, strlen(h));
    ck_assert_int_eq(memcmp(p.body + strlen(h), body, n), 0);
    resp_free(&p);
    free(body);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_expect_continue)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);

    static const char h[] =
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    send_str(fd, h);
    long end = rd_find(&r, "\r\n\r\n");
    ck_assert_int_eq(end, 21);
    ck_assert_mem_eq(r.buf + r.off, "HTTP/1.1 100 Continue", 21);
    r.off += 25;
    send_str(fd, "body");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 200);
    ck_assert_int_eq(p.ninterim, 0);
    ck_assert_uint_eq(p.body_len, sizeof(h) - 1 + 4);
    ck_assert_mem_eq(p.body, h, sizeof(h) - 1);
    resp_free(&p);

    /* expect=ignore: no 100, the server just waits for the body. */
    send_str(fd, "POST /echo?expect=ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 "Content-Length: 4\r\n\r\n");
    ck_assert(!readable_within(fd, 300));
    send_str(fd, "body");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 200);
    ck_assert_int_eq(p.ninterim, 0);
    resp_free(&p);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

/* ---- faultserver: time ------------------------------------------------------------------- */

START_TEST(fs_delay_waits)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);
    double t0 = now_ms();
    get(s.port, "/delay/50", &p);
    double dt = now_ms() - t0;
    ck_assert_int_eq(p.status, 200);
    ck_assert_str_eq((char *)p.body, "ok\n");
    ck_assert_msg(dt >= 50.0, "answered after %.1f ms", dt);
    ck_assert_msg(dt < 1000.0, "answered after %.1f ms", dt);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_delay_1000_concurrent)
{
    enum { N = 1000 };
    static int fds[N];
    struct harness_server s;
    ck_assert(fd_limit_at_least(N + 64));
    fs_start(&s);
    double t0 = now_ms();
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect("127.0.0.1", s.port);
    for (int i = 0; i < N; i++)
        send_str(fds[i], "GET /delay/100 HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < N; i++) {
        struct rd r;
        struct resp p;
        rd_init(&r, fds[i]);
        ck_assert_int_eq(read_resp(&r, &p, false), 0);
        ck_assert_str_eq((char *)p.body, "ok\n");
        resp_free(&p);
        rd_free(&r);
    }
    double dt = now_ms() - t0;
    for (int i = 0; i < N; i++)
        close_rst(fds[i]);
    ck_assert_msg(dt >= 100.0 && dt < 2000.0, "1000 x /delay/100 took %.1f ms", dt);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_drip_one_byte_at_a_time)
{
    /* 79 head bytes ("HTTP/1.1 200 OK", Content-Type, Content-Length: 20) + 20 body bytes,
     * one per send() with 2 ms between them. */
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                               "Content-Length: 20\r\n\r\n";
    enum { TOTAL = sizeof(head) - 1 + 20 };
    struct harness_server s;
    struct resp p;
    uint8_t buf[TOTAL + 16];
    size_t total = 0;
    int reads = 0;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    send_str(fd, "GET /drip?n=20&delay=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    double t0 = now_ms();
    while (total < TOTAL) {
        ssize_t k = recv(fd, buf + total, sizeof(buf) - total, 0);
        ck_assert_int_gt(k, 0);
        total += (size_t)k;
        reads++;
    }
    double dt = now_ms() - t0;
    close(fd);
    ck_assert_uint_eq(total, TOTAL);
    ck_assert_mem_eq(buf, head, sizeof(head) - 1);
    assert_pattern(buf + sizeof(head) - 1, 0, 20);
    /* Reads may merge bytes when the test is descheduled, but not most of them. */
    ck_assert_msg(reads >= TOTAL / 3, "only %d reads for %d bytes", reads, (int)TOTAL);
    ck_assert_msg(dt >= 2.0 * (TOTAL - 2), "dripped %d bytes in %.1f ms", (int)TOTAL, dt);

    get(s.port, "/drip?n=20&delay=0", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_eq(p.body_len, 20);
    assert_pattern(p.body, 0, 20);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

/* ---- faultserver: faults ----------------------------------------------------------------- */

START_TEST(fs_reset_gives_econnreset)
{
    struct harness_server s;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /reset-head HTTP/1.1\r\nHost: x\r\n\r\n");
    int err;
    size_t n = rd_to_eof(&r, &err);
    ck_assert_int_eq(err, ECONNRESET);
    ck_assert_uint_le(n, 14); /* some of "HTTP/1.1 200 O" may arrive before the RST */
    rd_free(&r);
    close(fd);

    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /reset-body?after=5000&len=100000 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct resp p;
    ck_assert_int_eq(read_resp(&r, &p, false), -1);
    ck_assert_int_eq(p.status, 200);
    ck_assert_int_eq(r.err, ECONNRESET);
    ck_assert_uint_le(p.body_len, 5000);
    assert_pattern(p.body, 0, p.body_len);
    resp_free(&p);
    rd_free(&r);
    close(fd);

    /* reset-once: the first request with a key is reset, the next one answered. */
    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /reset-once?key=k1 HTTP/1.1\r\nHost: x\r\n\r\n");
    rd_to_eof(&r, &err);
    ck_assert_int_eq(err, ECONNRESET);
    rd_free(&r);
    close(fd);
    get(s.port, "/reset-once?key=k1", &p);
    ck_assert_int_eq(p.status, 200);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_short_bodies_close_early)
{
    struct harness_server s;
    struct resp p;
    char v[64];
    int err;
    fs_start(&s);

    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /wrong-cl?cl=100&send=50 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), -1);
    ck_assert_int_eq(r.err, 0); /* FIN, not RST */
    ck_assert_str_eq(resp_hdr(&p, "Content-Length", v, sizeof(v)), "100");
    ck_assert_uint_eq(p.body_len, 50);
    assert_pattern(p.body, 0, 50);
    resp_free(&p);
    rd_free(&r);
    close(fd);

    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /truncated-chunked?n=2500&chunk=1000 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), -1);
    ck_assert_int_eq(r.err, 0);
    ck_assert(p.chunked);
    ck_assert_uint_eq(p.nchunks, 3);
    ck_assert_uint_eq(p.body_len, 2500);
    resp_free(&p);
    rd_free(&r);
    close(fd);

    /* Close-delimited body. */
    get(s.port, "/bytes/3000?close=1", &p);
    ck_assert_ptr_null(resp_hdr(&p, "Content-Length", v, sizeof(v)));
    ck_assert_str_eq(resp_hdr(&p, "Connection", v, sizeof(v)), "close");
    ck_assert_uint_eq(p.body_len, 3000);
    assert_pattern(p.body, 0, 3000);
    resp_free(&p);

    /* /close-after: a normal keep-alive response, then FIN. */
    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /close-after HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_ptr_null(resp_hdr(&p, "Connection", v, sizeof(v)));
    resp_free(&p);
    ck_assert_uint_eq(rd_to_eof(&r, &err), 0);
    ck_assert_int_eq(err, 0);
    rd_free(&r);
    close(fd);

    fd = tcp_connect("127.0.0.1", s.port);
    rd_init(&r, fd);
    send_str(fd, "GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq(resp_hdr(&p, "Connection", v, sizeof(v)), "close");
    resp_free(&p);
    ck_assert_uint_eq(rd_to_eof(&r, &err), 0); /* the pipelined request is not answered */
    ck_assert_int_eq(err, 0);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_malformed_responses)
{
    struct harness_server s;
    int err;
    fs_start(&s);
    static const struct {
        const char *req;
        const char *must_contain;
    } cases[] = {
        {"GET /garbage HTTP/1.1\r\n\r\n", "this is not http\r\n\r\n"},
        {"GET /conflict-cl HTTP/1.1\r\n\r\n", "Content-Length: 10\r\nContent-Length: 20\r\n"},
        {"GET /cl-and-chunked HTTP/1.1\r\n\r\n",
         "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n"},
        {"GET /cl-and-chunked HTTP/1.1\r\n\r\n", "\r\n19\r\n"},
        {"GET /cl-and-chunked HTTP/1.1\r\n\r\n", "\r\n0\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fd = tcp_connect("127.0.0.1", s.port);
        struct rd r;
        rd_init(&r, fd);
        send_str(fd, cases[i].req);
        size_t n = rd_to_eof(&r, &err);
        ck_assert_int_eq(err, 0);
        ck_assert_msg(
            memmem(r.buf + r.off, n, cases[i].must_contain, strlen(cases[i].must_contain)) != NULL,
            "case %zu: %.*s", i, (int)n, (char *)r.buf + r.off);
        rd_free(&r);
        close(fd);
    }

    struct resp p;
    get(s.port, "/huge-headers?count=300&size=1000", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_gt(strlen(p.head), 300 * 1000);
    char v[2000];
    ck_assert_uint_eq(strlen(resp_hdr(&p, "X-H299", v, sizeof(v))), 1000);
    ck_assert_str_eq((char *)p.body, "ok\n");
    resp_free(&p);

    /* A request the server cannot parse gets 400 and a close. */
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /x HTTP/1.1\r\nBad Header: v\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 400);
    resp_free(&p);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_stalls)
{
    struct harness_server s;
    struct resp p;
    fs_start(&s);
    int fd = tcp_connect("127.0.0.1", s.port);
    send_str(fd, "GET /stall-head HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(!readable_within(fd, 300));
    close(fd);

    fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /stall-body?after=1234 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(rd_find(&r, "\r\n\r\n") >= 0, 1);
    usleep(100 * 1000);
    while (readable_within(fd, 0))
        ck_assert_int_gt(rd_more(&r), 0);
    const char *body = memmem(r.buf + r.off, rd_avail(&r), "\r\n\r\n", 4);
    size_t got = rd_avail(&r) - (size_t)((const uint8_t *)body + 4 - (r.buf + r.off));
    ck_assert_uint_eq(got, 1234);
    ck_assert(memmem(r.buf + r.off, rd_avail(&r), "Content-Length: 1000000\r\n", 25) != NULL);
    ck_assert(!readable_within(fd, 300));
    rd_free(&r);
    close(fd);

    /* The server is still fine for others. */
    get(s.port, "/bytes/1", &p);
    ck_assert_int_eq(p.status, 200);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_silent_never_answers)
{
    struct harness_server s;
    ck_assert_int_eq(harness_faultserver(&s, NULL, true), 0);
    int fd = tcp_connect("127.0.0.1", s.port);
    send_str(fd, "GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert(!readable_within(fd, 500)); /* neither data nor EOF */
    int fd2 = tcp_connect("127.0.0.1", s.port);
    ck_assert(!readable_within(fd2, 100));
    close(fd2);
    close(fd);
    fs_stop(&s);
}
END_TEST

/* ---- faultserver: HTTP features ---------------------------------------------------------- */

START_TEST(fs_ranges)
{
    struct harness_server s;
    struct resp p;
    char v[128], req[512];
    fs_start(&s);
    static const struct {
        const char *range, *if_range;
        int status;
        uint64_t start, len;
        const char *content_range;
    } cases[] = {
        {"bytes=10-19", NULL, 206, 10, 10, "bytes 10-19/1000"},
        {"bytes=990-", NULL, 206, 990, 10, "bytes 990-999/1000"},
        {"bytes=995-5000", NULL, 206, 995, 5, "bytes 995-999/1000"},
        {"bytes=-7", NULL, 206, 993, 7, "bytes 993-999/1000"},
        {"bytes=1000-", NULL, 416, 0, 0, "bytes */1000"},
        {"bytes=5-1", NULL, 200, 0, 1000, NULL},     /* invalid: ignored */
        {"bytes=0-1,5-6", NULL, 200, 0, 1000, NULL}, /* several ranges: ignored */
        {"bytes=10-19", "\"b-1000\"", 206, 10, 10, "bytes 10-19/1000"},
        {"bytes=10-19", "\"other\"", 200, 0, 1000, NULL},
        {"bytes=10-19", "Mon, 01 Jan 2024 00:00:00 GMT", 206, 10, 10, "bytes 10-19/1000"},
        {"bytes=10-19", "Tue, 02 Jan 2024 00:00:00 GMT", 200, 0, 1000, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = snprintf(req, sizeof(req), "GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nRange: %s\r\n",
                         cases[i].range);
        if (cases[i].if_range)
            n += snprintf(req + n, sizeof(req) - (size_t)n, "If-Range: %s\r\n", cases[i].if_range);
        snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
        fetch("127.0.0.1", s.port, req, &p);
        ck_assert_msg(p.status == cases[i].status, "case %zu: status %d", i, p.status);
        ck_assert_uint_eq(p.body_len, cases[i].len);
        assert_pattern(p.body, cases[i].start, p.body_len);
        if (cases[i].content_range)
            ck_assert_str_eq(resp_hdr(&p, "Content-Range", v, sizeof(v)), cases[i].content_range);
        else
            ck_assert_ptr_null(resp_hdr(&p, "Content-Range", v, sizeof(v)));
        resp_free(&p);
    }
    /* Ranges with chunked framing. */
    fetch("127.0.0.1", s.port,
          "GET /bytes/100000?chunked=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=50000-\r\n\r\n", &p);
    ck_assert_int_eq(p.status, 206);
    ck_assert(p.chunked);
    ck_assert_uint_eq(p.body_len, 50000);
    assert_pattern(p.body, 50000, 50000);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_chunked_framing)
{
    struct harness_server s;
    struct resp p;
    char v[64];
    fs_start(&s);
    get(s.port, "/bytes/10000?chunked=1&chunk=3000&trailer=1", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert(p.chunked);
    ck_assert_ptr_null(resp_hdr(&p, "Content-Length", v, sizeof(v)));
    ck_assert_uint_eq(p.nchunks, 4);
    ck_assert_uint_eq(p.chunks[0], 3000);
    ck_assert_uint_eq(p.chunks[1], 3000);
    ck_assert_uint_eq(p.chunks[2], 3000);
    ck_assert_uint_eq(p.chunks[3], 1000);
    ck_assert_str_eq(p.trailer, "X-Trailer: yes\n");
    ck_assert_uint_eq(p.body_len, 10000);
    assert_pattern(p.body, 0, 10000);
    resp_free(&p);

    /* Default chunk size, no trailer; then a keep-alive request on the same connection proves
     * the terminator was exact. */
    int fd = tcp_connect("127.0.0.1", s.port);
    struct rd r;
    rd_init(&r, fd);
    send_str(fd, "GET /bytes/10000?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /bytes/1?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.nchunks, 3);
    ck_assert_uint_eq(p.chunks[0], 4096);
    ck_assert_str_eq(p.trailer, "");
    resp_free(&p);
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_uint_eq(p.body_len, 1);
    resp_free(&p);
    ck_assert_uint_eq(rd_avail(&r), 0);
    rd_free(&r);
    close(fd);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_status_redirect_interim_flaky)
{
    struct harness_server s;
    struct resp p;
    char v[128];
    fs_start(&s);

    get(s.port, "/status/503?retry-after=Wed,%2021%20Oct%202015%2007:28:00%20GMT", &p);
    ck_assert_int_eq(p.status, 503);
    ck_assert_str_eq(resp_hdr(&p, "Retry-After", v, sizeof(v)), "Wed, 21 Oct 2015 07:28:00 GMT");
    ck_assert_str_eq((char *)p.body, "status 503\n");
    ck_assert(strncmp(p.head, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    resp_free(&p);

    get(s.port, "/status/204", &p);
    ck_assert_int_eq(p.status, 204);
    ck_assert_ptr_null(resp_hdr(&p, "Content-Length", v, sizeof(v)));
    resp_free(&p);

    get(s.port, "/status/301?location=/a%3Fb%3Dc", &p);
    ck_assert_str_eq(resp_hdr(&p, "Location", v, sizeof(v)), "/a?b=c");
    resp_free(&p);

    get(s.port, "/redirect/3", &p);
    ck_assert_int_eq(p.status, 302);
    ck_assert_str_eq(resp_hdr(&p, "Location", v, sizeof(v)), "/redirect/2");
    resp_free(&p);

    get(s.port, "/redirect-to?url=http%3A%2F%2F127.0.0.1%3A1%2Fx%3Fy%3D1&status=307", &p);
    ck_assert_int_eq(p.status, 307);
    ck_assert_str_eq(resp_hdr(&p, "Location", v, sizeof(v)), "http://127.0.0.1:1/x?y=1");
    resp_free(&p);

    get(s.port, "/interim", &p);
    ck_assert_int_eq(p.ninterim, 2);
    ck_assert_int_eq(p.interim[0], 100);
    ck_assert_int_eq(p.interim[1], 103);
    ck_assert_int_eq(p.status, 200);
    ck_assert_str_eq((char *)p.body, "final\n");
    resp_free(&p);

    for (int i = 0; i < 4; i++) {
        get(s.port, "/flaky?key=a&fail=2&status=429&retry-after=1", &p);
        if (i < 2) {
            ck_assert_int_eq(p.status, 429);
            ck_assert_str_eq(resp_hdr(&p, "Retry-After", v, sizeof(v)), "1");
        } else {
            ck_assert_int_eq(p.status, 200);
            ck_assert_str_eq((char *)p.body, "ok\n");
        }
        resp_free(&p);
    }
    get(s.port, "/flaky?key=b", &p); /* another key, default fail=1 status=503 */
    ck_assert_int_eq(p.status, 503);
    resp_free(&p);
    get(s.port, "/flaky?key=b", &p);
    ck_assert_int_eq(p.status, 200);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

/* Inflate `in` (gzip or zlib per windowBits); returns the output size, checks it against the
 * pattern, or counts zeros when zeros is set. */
static uint64_t inflate_all(const uint8_t *in, size_t len, int window_bits, bool zeros)
{
    static uint8_t out[1 << 20];
    z_stream zs = {0};
    ck_assert_int_eq(inflateInit2(&zs, window_bits), Z_OK);
    zs.next_in = (uint8_t *)in;
    zs.avail_in = (uInt)len;
    uint64_t total = 0;
    int rc;
    do {
        zs.next_out = out;
        zs.avail_out = sizeof(out);
        rc = inflate(&zs, Z_NO_FLUSH);
        ck_assert_msg(rc == Z_OK || rc == Z_STREAM_END, "inflate: %d", rc);
        size_t k = sizeof(out) - zs.avail_out;
        if (zeros) {
            /* No ck_assert per byte: each one is a message to the Check parent. */
            static const uint8_t zero[1 << 20];
            ck_assert_msg(memcmp(out, zero, k) == 0, "non-zero byte near offset %" PRIu64, total);
        } else {
            assert_pattern(out, total, k);
        }
        total += k;
    } while (rc != Z_STREAM_END);
    ck_assert_uint_eq(zs.avail_in, 0);
    inflateEnd(&zs);
    return total;
}

START_TEST(fs_compression)
{
    struct harness_server s;
    struct resp p;
    char v[64];
    fs_start(&s);
    get(s.port, "/gzip?n=200000", &p);
    ck_assert_str_eq(resp_hdr(&p, "Content-Encoding", v, sizeof(v)), "gzip");
    ck_assert_uint_lt(p.body_len, 20000);
    ck_assert_uint_eq(inflate_all(p.body, p.body_len, 31, false), 200000);
    resp_free(&p);

    get(s.port, "/deflate?n=12345", &p);
    ck_assert_str_eq(resp_hdr(&p, "Content-Encoding", v, sizeof(v)), "deflate");
    ck_assert_uint_eq(inflate_all(p.body, p.body_len, 15, false), 12345);
    resp_free(&p);

    get(s.port, "/gzip?bomb=1", &p);
    ck_assert_uint_lt(p.body_len, 2u << 20);
    ck_assert_uint_eq(inflate_all(p.body, p.body_len, 31, true), UINT64_C(1) << 30);
    resp_free(&p);

    get(s.port, "/deflate?bomb=1", &p);
    ck_assert_uint_lt(p.body_len, 2u << 20);
    /* Only the start: the full size was shown above; this checks the zlib wrapper's header. */
    z_stream zs = {0};
    static uint8_t out[1 << 16];
    ck_assert_int_eq(inflateInit(&zs), Z_OK);
    zs.next_in = p.body;
    zs.avail_in = (uInt)p.body_len;
    zs.next_out = out;
    zs.avail_out = sizeof(out);
    ck_assert_int_eq(inflate(&zs, Z_NO_FLUSH), Z_OK);
    ck_assert_uint_eq(zs.avail_out, 0);
    inflateEnd(&zs);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

/* ---- faultserver: scale and address families --------------------------------------------- */

START_TEST(fs_holds_10000_connections)
{
    enum { N = 10000 };
    static int fds[N];
    struct harness_server s;
    if (!fd_limit_at_least(N + 200)) {
        fprintf(stderr, "SKIP fs_holds_10000_connections: RLIMIT_NOFILE hard limit below %d\n",
                N + 200);
        return;
    }
    fs_start(&s);
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect("127.0.0.1", s.port);
    /* A sample of them, and a fresh one, still get answers. */
    for (int i = 0; i < N; i += 997) {
        struct rd r;
        struct resp p;
        rd_init(&r, fds[i]);
        send_str(fds[i], "GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n");
        ck_assert_int_eq(read_resp(&r, &p, false), 0);
        ck_assert_uint_eq(p.body_len, 10);
        resp_free(&p);
        rd_free(&r);
    }
    struct resp p;
    get(s.port, "/stats", &p);
    ck_assert_str_eq((char *)p.body, "connections=10001 requests=11\n");
    resp_free(&p);
    for (int i = 0; i < N; i++)
        close_rst(fds[i]);
    fs_stop(&s);
}
END_TEST

START_TEST(fs_ipv6_loopback)
{
    struct harness_server s;
    struct resp p;
    if (harness_free_port("::1") < 0) {
        fprintf(stderr, "SKIP fs_ipv6_loopback: cannot bind ::1 on this machine\n");
        return;
    }
    ck_assert_int_eq(harness_faultserver(&s, "::1", false), 0);
    fetch("::1", s.port, "GET /bytes/4321 HTTP/1.1\r\nHost: [::1]\r\n\r\n", &p);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_eq(p.body_len, 4321);
    assert_pattern(p.body, 0, 4321);
    resp_free(&p);
    fs_stop(&s);
}
END_TEST

START_TEST(harness_reports_bad_servers)
{
    struct harness_server s;
    const char *no_port[] = {"/bin/echo", "hello", NULL};
    ck_assert_int_eq(harness_start(&s, no_port), -1);
    ck_assert_int_eq(s.pid, 0);
    const char *missing[] = {"/nonexistent/server", NULL};
    ck_assert_int_eq(harness_start(&s, missing), -1);
    ck_assert_int_eq(harness_stop(&s), 0); /* stopping a stopped server is harmless */
}
END_TEST

START_TEST(fs_exits_cleanly_while_busy)
{
    /* SIGTERM with connections in every state: the server must still exit 0, and under ASan
     * free everything (a leak report makes harness_stop() fail). */
    static const char *const reqs[] = {
        "GET /delay/10000 HTTP/1.1\r\n\r\n",
        "GET /drip?n=1000&delay=50 HTTP/1.1\r\n\r\n",
        "GET /stall-head HTTP/1.1\r\n\r\n",
        "GET /stall-body HTTP/1.1\r\n\r\n",
        "GET /bytes/100000000 HTTP/1.1\r\n\r\n", /* blocked on a full socket buffer */
        "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nhalf",
        "GET /bytes/1 HTTP/1.1\r\nHost: x", /* half a head */
        "GET /gzip?bomb=1 HTTP/1.1\r\n\r\n",
        "GET /close HTTP/1.1\r\n\r\n", /* draining */
    };
    enum { NR = sizeof(reqs) / sizeof(reqs[0]) };
    int fds[NR + 1];
    struct harness_server s;
    fs_start(&s);
    for (int i = 0; i < NR; i++) {
        fds[i] = tcp_connect("127.0.0.1", s.port);
        send_str(fds[i], reqs[i]);
    }
    fds[NR] = tcp_connect("127.0.0.1", s.port); /* idle */
    usleep(200 * 1000);
    fs_stop(&s);
    for (int i = 0; i <= NR; i++)
        close(fds[i]);
}
END_TEST

START_TEST(fs_max_seconds_exits)
{
    struct harness_server s;
    const char *argv[] = {harness_faultserver_path(), "--max-seconds", "1", NULL};
    ck_assert_int_eq(harness_start(&s, argv), 0);
    double t0 = now_ms();
    int st;
    ck_assert_int_eq(waitpid(s.pid, &st, 0), s.pid);
    double dt = now_ms() - t0;
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_msg(dt > 500 && dt < 3000, "exited after %.0f ms", dt);
    s.pid = 0; /* reaped here */
    ck_assert_int_eq(harness_stop(&s), 0);
}
END_TEST

/* Whether pid is gone: no such process, or a zombie nobody reaps (PID 1 in a container). */
static bool process_gone(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

START_TEST(harness_children_die_with_parent)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        /* Start a server and vanish without stopping it. */
        struct harness_server s;
        close(p[0]);
        if (harness_faultserver(&s, NULL, false) != 0)
            _exit(1);
        ssize_t w = write(p[1], &s.pid, sizeof(s.pid));
        _exit(w == sizeof(s.pid) ? 0 : 1);
    }
    close(p[1]);
    pid_t srv = 0;
    ck_assert_int_eq(read(p[0], &srv, sizeof(srv)), sizeof(srv));
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(kid, &st, 0), kid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double t0 = now_ms();
    while (!process_gone(srv) && now_ms() - t0 < 5000)
        usleep(10 * 1000);
    ck_assert_msg(process_gone(srv), "server %d outlived its parent", (int)srv);
}
END_TEST

/* ---- nginx ------------------------------------------------------------------------------- */

START_TEST(nginx_serves_files)
{
    static const struct harness_file files[] = {
        {"a.bin", 1 << 20},
        {"t.txt", 10000},
        {"sub/dir/empty.bin", 0},
    };
    struct harness_nginx_opts o = {.files = files, .nfiles = 3, .ipv6 = true};
    struct harness_nginx n;
    struct resp p;
    char v[128], dir[sizeof(n.dir)];

    if (harness_free_port("::1") < 0) {
        fprintf(stderr, "nginx_serves_files: ::1 unavailable, IPv4 only\n");
        o.ipv6 = false;
    }
    ck_assert_int_eq(harness_nginx_start(&n, &o), 0);
    snprintf(dir, sizeof(dir), "%s", n.dir);
    ck_assert_int_eq(access(dir, F_OK), 0);

    /* Two requests on one keep-alive connection. */
    int fd = tcp_connect("127.0.0.1", n.srv.port);
    struct rd r;
    rd_init(&r, fd);
    for (int i = 0; i < 2; i++) {
        send_str(fd, "GET /a.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
        ck_assert_int_eq(read_resp(&r, &p, false), 0);
        ck_assert_int_eq(p.status, 200);
        ck_assert_str_eq(resp_hdr(&p, "Content-Length", v, sizeof(v)), "1048576");
        const char *conn = resp_hdr(&p, "Connection", v, sizeof(v));
        ck_assert(conn == NULL || strcasecmp(conn, "close") != 0);
        ck_assert_uint_eq(p.body_len, 1 << 20);
        assert_pattern(p.body, 0, p.body_len);
        resp_free(&p);
    }
    /* Range. */
    send_str(fd, "GET /a.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=1000-1999\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 206);
    ck_assert_uint_eq(p.body_len, 1000);
    assert_pattern(p.body, 1000, 1000);
    resp_free(&p);
    /* Chunked via /chunked/. */
    send_str(fd, "GET /chunked/a.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 200);
    ck_assert(p.chunked);
    ck_assert_uint_gt(p.nchunks, 1);
    ck_assert_uint_eq(p.body_len, 1 << 20);
    assert_pattern(p.body, 0, p.body_len);
    resp_free(&p);
    /* gzip for text when asked. */
    send_str(fd, "GET /t.txt HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_str_eq(resp_hdr(&p, "Content-Encoding", v, sizeof(v)), "gzip");
    ck_assert_uint_eq(inflate_all(p.body, p.body_len, 31, false), 10000);
    resp_free(&p);
    send_str(fd, "GET /sub/dir/empty.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    ck_assert_int_eq(read_resp(&r, &p, false), 0);
    ck_assert_int_eq(p.status, 200);
    ck_assert_uint_eq(p.body_len, 0);
    resp_free(&p);
    rd_free(&r);
    close(fd);

    if (o.ipv6) {
        ck_assert_int_gt(n.port6, 0);
        fetch("::1", n.port6, "GET /t.txt HTTP/1.1\r\nHost: localhost\r\n\r\n", &p);
        ck_assert_int_eq(p.status, 200);
        ck_assert_uint_eq(p.body_len, 10000);
        assert_pattern(p.body, 0, 10000);
        resp_free(&p);
    }

    int port = n.srv.port;
    ck_assert_int_eq(harness_nginx_stop(&n), 0);
    ck_assert_int_eq(access(dir, F_OK), -1);
    ck_assert_int_eq(errno, ENOENT);
    /* Nothing listens any more. */
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(probe, (struct sockaddr *)&sin, sizeof(sin)), -1);
    close(probe);
    ck_assert_int_eq(harness_nginx_stop(&n), 0); /* twice is harmless */
}
END_TEST

static Suite *harness_suite(void)
{
    Suite *s = suite_create("integ-harness");
    TCase *tc = tcase_create("pattern");
    tcase_add_test(tc, pattern_matches_definition);
    tcase_add_test(tc, harness_reports_bad_servers);
    tcase_add_test(tc, harness_children_die_with_parent);
    suite_add_tcase(s, tc);

    tc = tcase_create("faultserver");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fs_bytes_content_and_length);
    tcase_add_test(tc, fs_keepalive_and_stats);
    tcase_add_test(tc, fs_pipelining_in_order);
    tcase_add_test(tc, fs_echo_exact_bytes);
    tcase_add_test(tc, fs_expect_continue);
    tcase_add_test(tc, fs_delay_waits);
    tcase_add_test(tc, fs_delay_1000_concurrent);
    tcase_add_test(tc, fs_drip_one_byte_at_a_time);
    tcase_add_test(tc, fs_reset_gives_econnreset);
    tcase_add_test(tc, fs_short_bodies_close_early);
    tcase_add_test(tc, fs_malformed_responses);
    tcase_add_test(tc, fs_stalls);
    tcase_add_test(tc, fs_silent_never_answers);
    tcase_add_test(tc, fs_ranges);
    tcase_add_test(tc, fs_chunked_framing);
    tcase_add_test(tc, fs_status_redirect_interim_flaky);
    tcase_add_test(tc, fs_compression);
    tcase_add_test(tc, fs_holds_10000_connections);
    tcase_add_test(tc, fs_ipv6_loopback);
    tcase_add_test(tc, fs_exits_cleanly_while_busy);
    tcase_add_test(tc, fs_max_seconds_exits);
    suite_add_tcase(s, tc);

    tc = tcase_create("nginx");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, nginx_serves_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(harness_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
