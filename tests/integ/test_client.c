/*
 * test_client.c -- end-to-end tests of sluice's HTTP/1.1 client against loopback servers we
 * control: the fault-injecting faultserver (tests/integ/faultserver.c) and a throwaway nginx,
 * both started per test through tests/integ/harness.h. Only the public header is used.
 *
 * Model: every test builds a loop and a client (struct ctx), starts the servers it needs, runs
 * transfers (struct xfer) and asserts on what the callbacks saw: the done status, a copy of the
 * result, the HTTP status, the body (checked against the deterministic pattern as it arrives,
 * so a 1 GiB body is never buffered) and the callback order. Every wait is bounded by a
 * wall-clock deadline (run_until), and every test ends with ctx_finish(): free the requests and
 * the client, run the loop until it is idle, assert sl_loop_close() == 0, and stop the servers
 * (a server that crashed fails the test that made it crash).
 *
 * Some cases need more than the faultserver offers, so the test builds them itself: a listener
 * whose accept queue is full (a connect that neither completes nor fails), a UDP socket that
 * never answers (a DNS lookup that hangs), and a tiny DNS responder on the test's own loop
 * (a name that resolves to both ::1 and 127.0.0.1, whatever /etc/hosts says).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sluice.h>

#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MiB (1024u * 1024u)
#define MAX_XFERS 160
#define RUN_TIMEOUT_MS 20000 /* generous bound for transfers that should take milliseconds */
#define IDLE_TIMEOUT_MS 5000 /* bound for the loop to become idle after sl_client_free() */
#define NOT_BAD UINT64_MAX

/* > 0 while the test is inside a sluice call that must not run user callbacks. */
static unsigned g_in_api;
/* Order in which on_done callbacks ran, across all requests of a test. */
static unsigned g_done_seq;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- test context: loop, client, servers -------------------------------------------- */

struct xfer;
struct dnsfake;

struct ctx {
    sl_loop_t loop;
    sl_client_t *client;
    struct harness_server fs, fs2; /* faultservers (pid 0 when not started) */
    char base[80];                 /* "http://127.0.0.1:<fs.port>" */
    char base2[80];                /* the same for fs2 */
    struct xfer *xfers[MAX_XFERS]; /* freed by ctx_finish() */
    size_t nxfers;
    struct dnsfake *dns; /* stopped by ctx_finish() */
};

static void base_url(char *out, size_t outlen, const char *host, int port)
{
    if (strchr(host, ':') != NULL)
        snprintf(out, outlen, "http://[%s]:%d", host, port);
    else
        snprintf(out, outlen, "http://%s:%d", host, port);
}

/* A loop and, unless `fs_host` is NULL, a faultserver on that address; no client yet. */
static void ctx_init_noclient(struct ctx *t, const char *fs_host)
{
    memset(t, 0, sizeof(*t));
    t->fs.out_fd = t->fs2.out_fd = -1;
    g_in_api = 0;
    g_done_seq = 0;
    ck_assert_int_eq(sl_loop_init(&t->loop), 0);
    if (fs_host != NULL) {
        ck_assert_int_eq(harness_faultserver(&t->fs, fs_host, false), 0);
        base_url(t->base, sizeof(t->base), fs_host, t->fs.port);
    }
}

/* `opts` NULL: defaults. */
static void ctx_client(struct ctx *t, const sl_client_opts_t *opts)
{
    ck_assert_ptr_null(t->client);
    ck_assert_int_eq(sl_client_new(&t->loop, opts, &t->client), 0);
    ck_assert_ptr_nonnull(t->client);
}

static void ctx_init(struct ctx *t, const sl_client_opts_t *opts, const char *fs_host)
{
    ctx_init_noclient(t, fs_host);
    ctx_client(t, opts);
}

static void ctx_second_faultserver(struct ctx *t)
{
    ck_assert_int_eq(harness_faultserver(&t->fs2, "127.0.0.1", false), 0);
    base_url(t->base2, sizeof(t->base2), "127.0.0.1", t->fs2.port);
}

/* Run the loop until cond(arg) holds or timeout_ms of wall time passed; returns cond(arg). */
static bool run_until(struct ctx *t, bool (*cond)(void *), void *arg, uint64_t timeout_ms)
{
    uint64_t end = mono_ms() + timeout_ms;
    while (!cond(arg)) {
        if (mono_ms() >= end)
            return false;
        int rc = sl_loop_run_once(&t->loop, 10);
        ck_assert_msg(rc >= 0, "sl_loop_run_once failed: %s", sl_err_name(rc));
    }
    return true;
}

static bool timer_fired(void *arg)
{
    return *(bool *)arg;
}

static void sleep_timer_cb(sl_timer_t *tm)
{
    *(bool *)tm->data = true;
}

/* Keep the loop running for `ms` milliseconds, measured by a loop timer. */
static void loop_sleep(struct ctx *t, uint64_t ms)
{
    sl_timer_t tm;
    bool fired = false;
    sl_timer_init(&t->loop, &tm, sleep_timer_cb);
    tm.data = &fired;
    ck_assert_int_eq(sl_timer_start(&tm, ms, 0), 0);
    ck_assert_msg(run_until(t, timer_fired, &fired, ms + 5000),
                  "a %" PRIu64 " ms timer never fired", ms);
}

static void xfer_free(struct xfer *x);
static void dnsfake_stop(struct dnsfake *d);

static bool loop_idle(void *arg)
{
    return !sl_loop_alive(arg);
}

/* Free every request and the client, run the loop until idle, close it, stop the servers. */
static void ctx_finish(struct ctx *t)
{
    for (size_t i = 0; i < t->nxfers; i++)
        xfer_free(t->xfers[i]);
    t->nxfers = 0;
    if (t->client != NULL) {
        g_in_api++;
        sl_client_free(t->client);
        g_in_api--;
        t->client = NULL;
    }
    if (t->dns != NULL)
        dnsfake_stop(t->dns);
    ck_assert_msg(run_until(t, loop_idle, &t->loop, IDLE_TIMEOUT_MS),
                  "the loop is still alive %d ms after sl_client_free()", IDLE_TIMEOUT_MS);
    /* Close callbacks may still be queued; an idle loop runs them without blocking. */
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(sl_loop_run_once(&t->loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&t->loop), 0);
    ck_assert_msg(harness_stop(&t->fs) == 0, "faultserver did not exit cleanly");
    ck_assert_msg(harness_stop(&t->fs2) == 0, "second faultserver did not exit cleanly");
}

/* ---- transfers ---------------------------------------------------------------------- */

struct xfer {
    struct ctx *t;
    sl_req_t *req; /* NULL once freed */
    char url[1200];

    /* knobs, set before start */
    bool check_pattern; /* the body must be the pattern from offset 0 */
    size_t keep_max;    /* keep the first keep_max body bytes in `body` */
    int (*data_hook)(struct xfer *x, const void *data, size_t len); /* after accounting */
    int (*head_hook)(struct xfer *x, const sl_resp_t *resp);
    void (*done_hook)(struct xfer *x);
    void *hook_arg;
    unsigned hook_arg_n;
    uint64_t up_total, up_off; /* streamed upload: pattern bytes to produce, produced */
    size_t up_piece;           /* at most this many per producer call */
    unsigned up_calls;

    /* what the callbacks saw */
    int heads, datas, dones;
    int err;
    unsigned order;       /* g_done_seq when on_done ran */
    bool done_inside_api; /* on_done ran inside a sluice call */
    bool data_bad_order;  /* on_data before on_head or after on_done */
    bool paused;          /* the test paused it (the pause test) */
    bool data_while_paused;
    int http_status; /* from on_head */
    uint64_t nbytes; /* body bytes given to on_data */
    uint64_t bad_at; /* first offset not matching the pattern, NOT_BAD if none */
    uint8_t *body;   /* first keep_max bytes, NUL-terminated */
    size_t body_len;
    sl_result_t res; /* copy taken in on_done; its string pointers are not used */
    char eff_url[1200], remote_ip[64], errmsg[512], detail[512];
    bool null_string; /* a result string or sl_req_errdetail() was NULL */
    uint64_t t_start, t_done; /* mono_ms */
    unsigned heads_in;        /* SL_TRACE_HEAD_IN seen */
    int head_in_status[8];
    char head_out[4096]; /* the last SL_TRACE_HEAD_OUT, NUL-terminated */
    char info[4096];     /* SL_TRACE_INFO lines, each ending in '\n' (truncated) */
    size_t info_len;
    unsigned infos;      /* SL_TRACE_INFO lines seen */
};

static int on_head(sl_req_t *req, const sl_resp_t *resp)
{
    struct xfer *x = sl_req_data(req);
    x->heads++;
    x->http_status = sl_resp_status(resp);
    if (x->head_hook != NULL)
        return x->head_hook(x, resp);
    return 0;
}

static int on_data(sl_req_t *req, const void *data, size_t len)
{
    struct xfer *x = sl_req_data(req);
    x->datas++;
    if (x->heads == 0 || x->dones > 0)
        x->data_bad_order = true;
    if (x->paused)
        x->data_while_paused = true;
    if (x->check_pattern && x->bad_at == NOT_BAD) {
        size_t ok = harness_pattern_check(data, x->nbytes, len);
        if (ok < len)
            x->bad_at = x->nbytes + ok;
    }
    if (x->body_len < x->keep_max) {
        size_t n = x->keep_max - x->body_len < len ? x->keep_max - x->body_len : len;
        memcpy(x->body + x->body_len, data, n);
        x->body_len += n;
        x->body[x->body_len] = '\0';
    }
    x->nbytes += len;
    if (x->data_hook != NULL)
        return x->data_hook(x, data, len);
    return 0;
}

static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s != NULL ? s : "");
}

static void on_done(sl_req_t *req, int status)
{
    struct xfer *x = sl_req_data(req);
    const sl_result_t *r = sl_req_result(req);
    x->dones++;
    x->err = status;
    x->order = ++g_done_seq;
    x->t_done = mono_ms();
    if (g_in_api > 0)
        x->done_inside_api = true;
    x->res = *r;
    /* Strings of a result are never NULL (sluice.h): "" when there is nothing to say. */
    if (r->effective_url == NULL || r->remote_ip == NULL || r->errmsg == NULL ||
        sl_req_errdetail(req) == NULL)
        x->null_string = true;
    copy_str(x->eff_url, sizeof(x->eff_url), r->effective_url);
    copy_str(x->remote_ip, sizeof(x->remote_ip), r->remote_ip);
    copy_str(x->errmsg, sizeof(x->errmsg), r->errmsg);
    copy_str(x->detail, sizeof(x->detail), sl_req_errdetail(req));
    if (x->done_hook != NULL)
        x->done_hook(x);
}

static void on_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len)
{
    struct xfer *x = sl_req_data(req);
    if (kind == SL_TRACE_HEAD_OUT) {
        size_t n = len < sizeof(x->head_out) - 1 ? len : sizeof(x->head_out) - 1;
        memcpy(x->head_out, data, n);
        x->head_out[n] = '\0';
    } else if (kind == SL_TRACE_INFO) {
        x->infos++;
        if (x->info_len + len + 2 < sizeof(x->info)) {
            memcpy(x->info + x->info_len, data, len);
            x->info_len += len;
            x->info[x->info_len++] = '\n';
            x->info[x->info_len] = '\0';
        }
    } else if (kind == SL_TRACE_HEAD_IN) {
        int st = 0;
        if (len > 12 && memcmp(data, "HTTP/", 5) == 0)
            st = atoi(data + 9);
        if (x->heads_in < 8)
            x->head_in_status[x->heads_in] = st;
        x->heads_in++;
    }
}

static int stream_body_cb(sl_req_t *req, void *buf, size_t cap, size_t *len)
{
    struct xfer *x = sl_req_data(req);
    uint64_t left = x->up_total - x->up_off;
    size_t n = cap;
    if (n > x->up_piece)
        n = x->up_piece;
    if (n > left)
        n = (size_t)left;
    harness_pattern_fill(buf, x->up_off, n);
    x->up_off += n;
    x->up_calls++;
    *len = n;
    return 0;
}

/* A request for `target`: a path on the context's faultserver, or a full URL. */
static struct xfer *xfer_new(struct ctx *t, const char *method, const char *target)
{
    struct xfer *x = calloc(1, sizeof(*x));
    const char *why = NULL;
    ck_assert_ptr_nonnull(x);
    ck_assert_uint_lt(t->nxfers, MAX_XFERS);
    t->xfers[t->nxfers++] = x;
    x->t = t;
    x->bad_at = NOT_BAD;
    x->up_piece = SIZE_MAX;
    if (target[0] == '/')
        snprintf(x->url, sizeof(x->url), "%s%s", t->base, target);
    else
        snprintf(x->url, sizeof(x->url), "%s", target);
    int rc = sl_req_new(t->client, method, x->url, &x->req, &why);
    ck_assert_msg(rc == 0, "sl_req_new(%s, %s) = %s (%s)", method, x->url, sl_err_name(rc),
                  why != NULL ? why : "");
    sl_req_set_data(x->req, x);
    sl_req_callbacks(x->req, on_head, on_data, on_done);
    sl_req_trace(x->req, on_trace);
    return x;
}

static void xfer_keep(struct xfer *x, size_t max)
{
    x->keep_max = max;
    x->body = realloc(x->body, max + 1);
    ck_assert_ptr_nonnull(x->body);
    x->body[0] = '\0';
}

static void xfer_start(struct xfer *x)
{
    x->t_start = mono_ms();
    g_in_api++;
    int rc = sl_req_start(x->req);
    g_in_api--;
    ck_assert_msg(rc == 0, "sl_req_start(%s) = %s", x->url, sl_err_name(rc));
    ck_assert_msg(x->dones == 0, "%s: on_done ran inside sl_req_start()", x->url);
}

static void xfer_cancel(struct xfer *x)
{
    g_in_api++;
    sl_req_cancel(x->req);
    g_in_api--;
}

static void xfer_free(struct xfer *x)
{
    if (x->req != NULL) {
        g_in_api++;
        sl_req_free(x->req);
        g_in_api--;
    }
    free(x->body);
    free(x);
}

struct xfer_set {
    struct xfer **xs;
    size_t n;
};

static bool set_done(void *arg)
{
    const struct xfer_set *s = arg;
    for (size_t i = 0; i < s->n; i++)
        if (s->xs[i]->dones == 0)
            return false;
    return true;
}

/* Run until every request of xs has finished; fail naming the first one that did not. */
static void wait_all(struct ctx *t, struct xfer **xs, size_t n, uint64_t timeout_ms)
{
    struct xfer_set s = {xs, n};
    if (run_until(t, set_done, &s, timeout_ms))
        return;
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(xs[i]->dones > 0, "%s: not done after %" PRIu64 " ms (%" PRIu64 " bytes)",
                      xs[i]->url, timeout_ms, xs[i]->nbytes);
}

static void wait_one(struct xfer *x, uint64_t timeout_ms)
{
    wait_all(x->t, &x, 1, timeout_ms);
}

static void run_one(struct xfer *x, uint64_t timeout_ms)
{
    xfer_start(x);
    wait_one(x, timeout_ms);
}

/* Start, wait, and return a request for `target` whose body is checked against the pattern. */
static struct xfer *fetch(struct ctx *t, const char *method, const char *target)
{
    struct xfer *x = xfer_new(t, method, target);
    x->check_pattern = true;
    run_one(x, RUN_TIMEOUT_MS);
    return x;
}

/* A request for an /echo-like text target whose body is kept (up to max bytes). */
static struct xfer *fetch_text(struct ctx *t, const char *method, const char *target, size_t max)
{
    struct xfer *x = xfer_new(t, method, target);
    xfer_keep(x, max);
    run_one(x, RUN_TIMEOUT_MS);
    return x;
}

/* ---- assertions ------------------------------------------------------------------------ */

static void assert_ok(const struct xfer *x, int http_status)
{
    ck_assert_msg(x->dones == 1, "%s: on_done ran %d times", x->url, x->dones);
    ck_assert_msg(x->err == 0, "%s: failed with %s: %s", x->url, sl_err_name(x->err), x->detail);
    ck_assert_msg(!x->null_string, "%s: a NULL result string or errdetail", x->url);
    ck_assert_str_eq(x->detail, "");
    ck_assert_int_eq(x->res.error, 0);
    ck_assert_msg(x->res.status == http_status, "%s: status %d, expected %d", x->url, x->res.status,
                  http_status);
    ck_assert_msg(x->heads == 1, "%s: on_head ran %d times", x->url, x->heads);
    ck_assert_int_eq(x->http_status, http_status);
    ck_assert_msg(!x->done_inside_api, "%s: on_done ran inside a sluice call", x->url);
    ck_assert_msg(!x->data_bad_order, "%s: on_data outside head..done", x->url);
    ck_assert_str_eq(x->errmsg, "");
}

/* The request ended with `code` (and only once, never inside a sluice call). */
static void assert_err(const struct xfer *x, int code)
{
    ck_assert_msg(x->dones == 1, "%s: on_done ran %d times", x->url, x->dones);
    ck_assert_msg(x->err == code, "%s: ended with %s (%s), expected %s", x->url,
                  sl_err_name(x->err), x->detail, sl_err_name(code));
    ck_assert_msg(x->res.error == x->err, "%s: result.error %s != done status %s", x->url,
                  sl_err_name(x->res.error), sl_err_name(x->err));
    ck_assert_msg(!x->done_inside_api, "%s: on_done ran inside a sluice call", x->url);
    ck_assert_msg(!x->data_bad_order, "%s: on_data outside head..done", x->url);
}

/* assert_err, plus a non-empty detail text. */
static void assert_fail(const struct xfer *x, int code)
{
    assert_err(x, code);
    ck_assert_msg(x->detail[0] != '\0', "%s: %s without sl_req_errdetail()", x->url,
                  sl_err_name(code));
}

static void assert_pattern_body(const struct xfer *x, uint64_t n)
{
    ck_assert_msg(x->bad_at == NOT_BAD, "%s: body differs from the pattern at offset %" PRIu64,
                  x->url, x->bad_at);
    ck_assert_msg(x->nbytes == n, "%s: on_data got %" PRIu64 " bytes, expected %" PRIu64, x->url,
                  x->nbytes, n);
    ck_assert_msg(x->res.bytes_down == n, "%s: bytes_down %" PRIu64 ", expected %" PRIu64, x->url,
                  x->res.bytes_down, n);
}

static void assert_elapsed(const struct xfer *x, uint64_t lo, uint64_t hi)
{
    uint64_t ms = x->t_done - x->t_start;
    ck_assert_msg(ms >= lo && ms < hi,
                  "%s: ended after %" PRIu64 " ms, expected [%" PRIu64 ", %" PRIu64 ")", x->url, ms,
                  lo, hi);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- the echoed request (the body of /echo) -------------------------------------------- */

struct echo {
    char line[256];   /* request line */
    const char *head; /* from the request line to the blank line, inclusive */
    size_t head_len;
    const uint8_t *body; /* what followed the head */
    size_t body_len;
};

static void echo_parse(const struct xfer *x, struct echo *e)
{
    ck_assert_msg(x->body != NULL, "%s: body not kept", x->url);
    const char *b = (const char *)x->body;
    const char *end = memmem(b, x->body_len, "\r\n\r\n", 4);
    ck_assert_msg(end != NULL, "%s: echo has no complete head: %.200s", x->url, b);
    e->head = b;
    e->head_len = (size_t)(end - b) + 4;
    e->body = x->body + e->head_len;
    e->body_len = x->body_len - e->head_len;
    size_t ll = strcspn(b, "\r");
    ck_assert_uint_lt(ll, sizeof(e->line));
    memcpy(e->line, b, ll);
    e->line[ll] = '\0';
}

/* Number of header lines named `name`; the value of the first goes to `out`. */
static int echo_header(const struct echo *e, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    int count = 0;
    const char *p = memchr(e->head, '\n', e->head_len);
    const char *end = e->head + e->head_len;
    if (out != NULL && outlen > 0)
        out[0] = '\0';
    while (p != NULL && ++p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL || eol == p)
            break;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            if (count++ == 0 && out != NULL) {
                const char *v = p + nl + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                snprintf(out, outlen, "%.*s", (int)(eol - v), v);
            }
        }
        p = memchr(p, '\n', (size_t)(end - p));
    }
    return count;
}

/* Offset of the header line named `name` in the echoed head, or -1. */
static long echo_header_pos(const struct echo *e, const char *name)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\r\n%s:", name);
    const char *p = memmem(e->head, e->head_len, pat, strlen(pat));
    return p != NULL ? (long)(p - e->head) : -1;
}

/* Decode a chunked body into out; returns the decoded length, or -1 if the framing is broken
 * or has no last chunk. */
static long dechunk(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t off = 0, o = 0;
    for (;;) {
        const uint8_t *eol = memmem(in + off, len - off, "\r\n", 2);
        if (eol == NULL)
            return -1;
        char *endp;
        unsigned long size = strtoul((const char *)in + off, &endp, 16);
        if ((const uint8_t *)endp == in + off)
            return -1;
        off = (size_t)(eol - in) + 2;
        if (size == 0)
            return len - off >= 2 && memcmp(in + off, "\r\n", 2) == 0 ? (long)o : -1;
        if (len - off < size + 2 || o + size > cap || memcmp(in + off + size, "\r\n", 2) != 0)
            return -1;
        memcpy(out + o, in + off, size);
        o += size;
        off += size + 2;
    }
}

/* ---- raw sockets: stats, a full accept queue, UDP ports ------------------------------------ */

static void sockaddr_of(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*s4);
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, host, &s6->sin6_addr), 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*s6);
    }
}

/*
 * GET /stats on the faultserver over a blocking socket of our own (not through sluice). The
 * counters include that connection: the connections the client under test opened are
 * `*conns - 1`. `*reqs` does not count /stats requests.
 */
static void fs_stats(int port, unsigned *conns, unsigned *reqs)
{
    static const char rq[] = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    struct sockaddr_storage ss;
    socklen_t sl;
    struct timeval tv = {.tv_sec = 5};
    char buf[1024];
    size_t len = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_of("127.0.0.1", port, &ss, &sl);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&ss, sl), 0);
    ck_assert_int_eq(write(fd, rq, sizeof(rq) - 1), (ssize_t)(sizeof(rq) - 1));
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        ck_assert_msg(n >= 0, "reading /stats: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    const char *b = strstr(buf, "\r\n\r\n");
    ck_assert_msg(b != NULL, "bad /stats response: %s", buf);
    ck_assert_int_eq(sscanf(b + 4, "connections=%u requests=%u", conns, reqs), 2);
    ck_assert_uint_ge(*conns, 1);
}

/* Connections the client under test has made to the faultserver on `port`. */
static unsigned fs_client_conns(int port)
{
    unsigned conns, reqs;
    fs_stats(port, &conns, &reqs);
    return conns - 1;
}

/*
 * A listener with backlog 0 whose accept queue we fill with connections of our own and never
 * accept: Linux then drops further SYNs (tcp_conn_request: "listen queue overflow"), so a
 * connect() to it neither completes nor fails for seconds. Fillers are connected one by one
 * until one of them stays pending for 100 ms, which proves the queue is full.
 */
struct blackhole {
    int lfd, port;
    int fds[16];
    int nfds;
};

/* Returns 0, or -1 when the kernel completed every filler (the premise does not hold). */
static int blackhole_open(struct blackhole *b, const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1;
    memset(b, 0, sizeof(*b));
    sockaddr_of(host, port, &ss, &sl);
    b->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(b->lfd, 0);
    setsockopt(b->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(b->lfd, (struct sockaddr *)&ss, sl) < 0) {
        close(b->lfd);
        b->lfd = -1;
        return -2;
    }
    ck_assert_int_eq(listen(b->lfd, 0), 0);
    ck_assert_int_eq(getsockname(b->lfd, (struct sockaddr *)&ss, &sl), 0);
    b->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    for (b->nfds = 0; b->nfds < 16;) {
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        b->fds[b->nfds++] = fd;
        int rc = connect(fd, (struct sockaddr *)&ss, sl);
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
    if (b->lfd >= 0)
        close(b->lfd);
    b->nfds = 0;
    b->lfd = -1;
}

/* A UDP port on 127.0.0.1 with nothing bound to it: queries get ICMP port unreachable. */
static int udp_closed_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sl), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* A bound UDP socket on 127.0.0.1 that is never read: queries vanish without an answer. */
static int udp_silent_socket(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sl), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A plain listener (backlog 128) that the test accepts from itself. */
static int tcp_listener(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sl), 0);
    ck_assert_int_eq(listen(fd, 128), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Accept every pending connection (kept open in fds); returns how many. */
static int accept_pending(int lfd, int *fds, int *nfds, int cap)
{
    int n = 0;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            break;
        ck_assert_int_lt(*nfds, cap);
        fds[(*nfds)++] = fd;
        n++;
    }
    return n;
}

/* ---- a DNS responder on the test's loop ------------------------------------------------------ */

/*
 * Answers A (127.0.0.1) and/or AAAA (::1) for one name and NXDOMAIN for every other name. It
 * runs on the loop under test through the public watcher API, so lookups by the client and
 * answers interleave in one thread.
 */
struct dnsfake {
    int fd, port;
    sl_io_t io;
    char name[64];
    bool a, aaaa;
    unsigned queries;
};

static void dnsfake_cb(sl_io_t *io, unsigned events)
{
    struct dnsfake *d = io->data;
    uint8_t q[512], r[640];
    (void)events;
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(d->fd, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        if (n < 17)
            continue;
        d->queries++;
        char name[256];
        size_t off = 12, nl = 0;
        bool bad = false;
        while (off < (size_t)n && q[off] != 0) {
            size_t l = q[off];
            if ((l & 0xc0) != 0 || off + 1 + l > (size_t)n || nl + l + 2 > sizeof(name)) {
                bad = true;
                break;
            }
            if (nl > 0)
                name[nl++] = '.';
            memcpy(name + nl, q + off + 1, l);
            nl += l;
            off += 1 + l;
        }
        if (bad || off + 5 > (size_t)n)
            continue;
        name[nl] = '\0';
        off += 1; /* the root label */
        unsigned qtype = (unsigned)q[off] << 8 | q[off + 1];
        off += 4; /* type, class */
        bool match = strcasecmp(name, d->name) == 0;
        memset(r, 0, 12);
        memcpy(r, q, 2);                          /* id */
        r[2] = (uint8_t)(0x80 | (q[2] & 0x01));   /* QR, RD copied */
        r[3] = (uint8_t)(0x80 | (match ? 0 : 3)); /* RA, NOERROR or NXDOMAIN */
        r[5] = 1;                                 /* one question */
        memcpy(r + 12, q + 12, off - 12);
        size_t rl = off;
        bool four = qtype == 1 && d->a, six = qtype == 28 && d->aaaa;
        if (match && (four || six)) {
            static const uint8_t lo6[16] = {[15] = 1};
            static const uint8_t lo4[4] = {127, 0, 0, 1};
            uint8_t rr[12] = {0xc0, 12, 0, (uint8_t)qtype,          0, 1, 0, 0,
                              0,    60, 0, (uint8_t)(four ? 4 : 16)};
            memcpy(r + rl, rr, sizeof(rr));
            rl += sizeof(rr);
            memcpy(r + rl, four ? lo4 : lo6, four ? 4 : 16);
            rl += four ? 4 : 16;
            r[7] = 1; /* one answer */
        }
        sendto(d->fd, r, rl, 0, (struct sockaddr *)&from, fl);
    }
}

static void dnsfake_start(struct ctx *t, struct dnsfake *d, const char *name, bool a, bool aaaa)
{
    memset(d, 0, sizeof(*d));
    d->fd = udp_silent_socket(&d->port);
    ck_assert_int_eq(fcntl(d->fd, F_SETFL, O_NONBLOCK), 0);
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->a = a;
    d->aaaa = aaaa;
    ck_assert_int_eq(sl_io_init(&t->loop, &d->io, d->fd, dnsfake_cb), 0);
    d->io.data = d;
    ck_assert_int_eq(sl_io_start(&d->io, SL_EV_READ), 0);
    t->dns = d;
}

static void dnsfake_stop(struct dnsfake *d)
{
    if (d->fd < 0)
        return;
    sl_io_stop(&d->io);
    close(d->fd);
    d->fd = -1;
}

/* ======================================================================================== */
/* 1. plain GETs                                                                             */
/* ======================================================================================== */

START_TEST(get_bytes_sizes)
{
    /* arrange: a faultserver; act: GET /bytes/N for four sizes, one after the other on one
     * client; assert: status, exact byte count, pattern content, head accessors, reuse. */
    static const uint64_t sizes[] = {0, 1, 1000, MiB};
    struct ctx t;
    char path[64], v[32];
    ctx_init(&t, NULL, "127.0.0.1");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t n = sizes[i];
        snprintf(path, sizeof(path), "/bytes/%" PRIu64, n);
        struct xfer *x = fetch(&t, "GET", path);
        assert_ok(x, 200);
        assert_pattern_body(x, n);
        ck_assert_uint_eq(x->res.bytes_wire, n);
        ck_assert_str_eq(x->eff_url, x->url);
        ck_assert_str_eq(x->remote_ip, "127.0.0.1");
        ck_assert_uint_eq(x->res.remote_port, (unsigned)t.fs.port);
        ck_assert_msg(x->res.reused == (i > 0), "%s: reused %d", x->url, x->res.reused);
        ck_assert_uint_eq(x->res.redirects, 0);
        ck_assert_uint_gt(x->res.bytes_up, 0);
        ck_assert_uint_ge(x->res.time_total_us, x->res.time_first_byte_us);
        ck_assert_uint_gt(x->res.time_first_byte_us, 0);

        const sl_resp_t *r = sl_req_response(x->req);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(sl_resp_status(r), 200);
        ck_assert_str_eq(sl_resp_reason(r), "OK");
        ck_assert_int_eq(sl_resp_version(r), 11);
        ck_assert_int_eq(sl_resp_content_length(r), (int64_t)n);
        snprintf(v, sizeof(v), "%" PRIu64, n);
        ck_assert_str_eq(sl_resp_header(r, "Content-Length"), v);
        ck_assert_str_eq(sl_resp_header(r, "content-LENGTH"), v);
        snprintf(v, sizeof(v), "\"b-%" PRIu64 "\"", n);
        ck_assert_str_eq(sl_resp_header(r, "ETag"), v);
        ck_assert_ptr_null(sl_resp_header(r, "X-Absent"));
        /* As sent: Content-Type, ETag, Last-Modified, Accept-Ranges, Content-Length. */
        ck_assert_uint_eq(sl_resp_header_count(r), 5);
        const char *name = NULL, *value = NULL;
        ck_assert_int_eq(sl_resp_header_at(r, 0, &name, &value), 0);
        ck_assert_str_eq(name, "Content-Type");
        ck_assert_str_eq(value, "application/octet-stream");
        ck_assert_int_eq(sl_resp_header_at(r, 4, &name, &value), 0);
        ck_assert_str_eq(name, "Content-Length");
        ck_assert_int_eq(sl_resp_header_at(r, 5, &name, &value), SL_EINVAL);
    }
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 2. keep-alive                                                                             */
/* ======================================================================================== */

static void chain_next(struct xfer *x)
{
    struct xfer *next = x->hook_arg;
    if (next != NULL)
        xfer_start(next);
}

START_TEST(keepalive_sequential_reuse)
{
    /* Five requests, each started from the previous one's on_done: one connection. */
    struct ctx t;
    struct xfer *xs[5];
    ctx_init(&t, NULL, "127.0.0.1");
    for (int i = 0; i < 5; i++) {
        xs[i] = xfer_new(&t, "GET", "/bytes/2000");
        xs[i]->check_pattern = true;
        xs[i]->done_hook = chain_next;
    }
    for (int i = 0; i < 4; i++)
        xs[i]->hook_arg = xs[i + 1];
    xfer_start(xs[0]);
    wait_all(&t, xs, 5, RUN_TIMEOUT_MS);
    for (int i = 0; i < 5; i++) {
        assert_ok(xs[i], 200);
        assert_pattern_body(xs[i], 2000);
        ck_assert_msg(xs[i]->res.reused == (i > 0), "request %d: reused %d", i, xs[i]->res.reused);
        ck_assert_uint_eq(xs[i]->order, (unsigned)i + 1);
    }
    /* The sixth request reuses the connection too and reads the server's counters. */
    struct xfer *st = fetch_text(&t, "GET", "/stats", 256);
    assert_ok(st, 200);
    ck_assert(st->res.reused);
    ck_assert_str_eq((char *)st->body, "connections=1 requests=5\n");
    ctx_finish(&t);
}
END_TEST

/* A keep-alive connection the server drops just as it is reused (the
 * request reaches a socket that answers with FIN and no byte): an idempotent
 * request is sent again once, on a fresh connection; a POST is not, and
 * fails; with retry_stale off, a GET fails too. */
START_TEST(stale_connection_retry)
{
    struct ctx t;
    struct xfer *x;
    sl_client_opts_t o;

    ctx_init(&t, NULL, "127.0.0.1");
    x = fetch(&t, "GET", "/close-on-next");
    assert_ok(x, 200);
    x = fetch(&t, "GET", "/bytes/100");
    assert_ok(x, 200);
    assert_pattern_body(x, 100);
    ck_assert_uint_eq(x->res.retries, 1);
    ck_assert_msg(!x->res.reused, "the retry must run on a fresh connection");

    x = fetch(&t, "GET", "/close-on-next");
    assert_ok(x, 200);
    x = fetch(&t, "POST", "/echo");
    ck_assert_int_eq(x->err, SL_EOF); /* closed without a reply */
    ck_assert_uint_eq(x->res.retries, 0);
    ctx_finish(&t);

    sl_client_opts_init(&o);
    o.retry_stale = false;
    ctx_init(&t, &o, "127.0.0.1");
    x = fetch(&t, "GET", "/close-on-next");
    assert_ok(x, 200);
    x = fetch(&t, "GET", "/bytes/100");
    ck_assert_int_eq(x->err, SL_EOF);
    ck_assert_uint_eq(x->res.retries, 0);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 3. framing variants                                                                       */
/* ======================================================================================== */

START_TEST(framing_chunked_close_head_nobody_interim)
{
    struct ctx t;
    struct xfer *x;
    ctx_init(&t, NULL, "127.0.0.1");

    /* Chunked with a trailer; the connection stays usable afterwards. */
    x = fetch(&t, "GET", "/bytes/10000?chunked=1&chunk=1000&trailer=1");
    assert_ok(x, 200);
    assert_pattern_body(x, 10000);
    ck_assert_int_eq(sl_resp_content_length(sl_req_response(x->req)), -1);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "Transfer-Encoding"), "chunked");
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    assert_pattern_body(x, 10);
    ck_assert_msg(x->res.reused, "the connection was not reused after a chunked response");

    /* Close-delimited: complete at EOF, and the connection is not reused. */
    x = fetch(&t, "GET", "/bytes/50000?close=1");
    assert_ok(x, 200);
    assert_pattern_body(x, 50000);
    ck_assert_int_eq(sl_resp_content_length(sl_req_response(x->req)), -1);
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    ck_assert_msg(!x->res.reused, "a close-delimited connection was reused");

    /* HEAD: Content-Length describes the GET body, no body follows. */
    x = fetch(&t, "HEAD", "/bytes/1000");
    assert_ok(x, 200);
    assert_pattern_body(x, 0);
    ck_assert_int_eq(x->datas, 0);
    ck_assert_int_eq(sl_resp_content_length(sl_req_response(x->req)), 1000);
    x = fetch(&t, "GET", "/bytes/1000");
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    ck_assert_msg(x->res.reused, "the connection was not reused after HEAD");

    /* 204 and 304 have no body whatever their headers say. */
    x = fetch(&t, "GET", "/status/204");
    assert_ok(x, 204);
    assert_pattern_body(x, 0);
    x = fetch(&t, "GET", "/status/304");
    assert_ok(x, 304);
    assert_pattern_body(x, 0);
    x = fetch(&t, "GET", "/bytes/100");
    assert_ok(x, 200);
    assert_pattern_body(x, 100);
    ck_assert_msg(x->res.reused, "the connection was not reused after 204/304");

    /* 100 and 103 are skipped, and the final 200 is delivered once (their tracing is
     * checked in trace_interim_heads). */
    x = fetch_text(&t, "GET", "/interim", 64);
    assert_ok(x, 200);
    ck_assert_str_eq((char *)x->body, "final\n");
    ck_assert_uint_eq(x->res.bytes_down, 6);
    x = fetch(&t, "GET", "/bytes/100");
    assert_ok(x, 200);
    ck_assert_msg(x->res.reused, "the connection was not reused after interim responses");
    ctx_finish(&t);
}
END_TEST

START_TEST(trace_interim_heads)
{
    /* sluice.h: SL_TRACE_HEAD_IN is "a response head as received (1xx interim included)". */
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = fetch_text(&t, "GET", "/interim", 64);
    assert_ok(x, 200);
    ck_assert_msg(x->heads_in == 3, "%u heads traced for 100, 103, 200", x->heads_in);
    ck_assert_int_eq(x->head_in_status[0], 100);
    ck_assert_int_eq(x->head_in_status[1], 103);
    ck_assert_int_eq(x->head_in_status[2], 200);

    /* The 100 Continue that answers an Expect. */
    static uint8_t body[2 * 1024 * 1024];
    x = xfer_new(&t, "POST", "/echo");
    ck_assert_int_eq(sl_req_body_ref(x->req, body, sizeof(body)), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    ck_assert_msg(x->heads_in == 2, "%u heads traced for 100, 200", x->heads_in);
    ck_assert_int_eq(x->head_in_status[0], 100);
    ck_assert_int_eq(x->head_in_status[1], 200);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 4. broken responses                                                                       */
/* ======================================================================================== */

START_TEST(failures_report_their_codes)
{
    static const struct {
        const char *path;
        int code;
        int status;     /* result.status: 200 when the head was fine, 0 when it was not */
        uint64_t bytes; /* body bytes delivered */
    } cases[] = {
        {"/wrong-cl?cl=100&send=50", SL_ETRUNCATED, 200, 50},
        {"/truncated-chunked", SL_ETRUNCATED, 200, 3000},
        {"/reset-head", SL_ECONNRESET, 0, 0},
        {"/conflict-cl", SL_EPARSE, 0, 0},
        {"/cl-and-chunked", SL_EPARSE, 0, 0},
        {"/garbage", SL_EPARSE, 0, 0},
        {"/huge-headers?count=200&size=10", SL_EHEADER_TOO_BIG, 0, 0},
        {"/huge-headers?count=5&size=70000", SL_EHEADER_TOO_BIG, 0, 0},
    };
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct xfer *x = fetch(&t, "GET", cases[i].path);
        assert_fail(x, cases[i].code);
        ck_assert_msg(x->res.status == cases[i].status, "%s: result.status %d, expected %d", x->url,
                      x->res.status, cases[i].status);
        ck_assert_msg(x->bad_at == NOT_BAD, "%s: bad byte at %" PRIu64, x->url, x->bad_at);
        ck_assert_msg(x->nbytes == cases[i].bytes && x->res.bytes_down == cases[i].bytes,
                      "%s: %" PRIu64 " bytes delivered, bytes_down %" PRIu64 ", expected %" PRIu64,
                      x->url, x->nbytes, x->res.bytes_down, cases[i].bytes);
        ck_assert_str_ne(x->errmsg, "");
    }

    /* A reset mid-body: never success; bytes delivered before are a correct prefix. */
    struct xfer *x = fetch(&t, "GET", "/reset-body?after=1000&len=100000");
    ck_assert_msg(x->err == SL_ECONNRESET || x->err == SL_ETRUNCATED,
                  "%s: ended with %s, expected ECONNRESET or ETRUNCATED", x->url,
                  sl_err_name(x->err));
    assert_fail(x, x->err);
    ck_assert_uint_le(x->nbytes, 1000);
    ck_assert_uint_eq(x->bad_at, NOT_BAD);
    ctx_finish(&t);

    /* With room for 300 fields the 200-header response is fine. */
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_header_fields = 300;
    ctx_init(&t, &o, "127.0.0.1");
    x = fetch_text(&t, "GET", "/huge-headers?count=200&size=10", 64);
    assert_ok(x, 200);
    ck_assert_str_eq((char *)x->body, "ok\n");
    ck_assert_uint_eq(sl_resp_header_count(sl_req_response(x->req)), 202);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "X-H199"), "aaaaaaaaaa");
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 5. dripped response                                                                       */
/* ======================================================================================== */

START_TEST(drip_complete_and_correct)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = fetch(&t, "GET", "/drip?n=200&delay=1");
    assert_ok(x, 200);
    assert_pattern_body(x, 200);
    ck_assert_int_gt(x->datas, 1); /* delivered as it arrived, not all at the end */
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 6. timeouts                                                                               */
/* ======================================================================================== */

START_TEST(timeout_first_byte)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/stall-head");
    sl_req_timeouts(x->req, &(sl_timeouts_t){.first_byte_ms = 200, .total_ms = 10000});
    run_one(x, 5000);
    assert_fail(x, SL_ETIMEDOUT_FIRSTBYTE);
    assert_elapsed(x, 200, 1500);
    ck_assert_int_eq(x->res.status, 0);
    ck_assert_int_eq(x->heads, 0);
    ctx_finish(&t);
}
END_TEST

START_TEST(timeout_read)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/stall-body?after=100");
    x->check_pattern = true;
    sl_req_timeouts(x->req, &(sl_timeouts_t){.read_ms = 200, .total_ms = 10000});
    run_one(x, 5000);
    assert_fail(x, SL_ETIMEDOUT_READ);
    assert_elapsed(x, 200, 1500);
    ck_assert_int_eq(x->res.status, 200);
    ck_assert_int_eq(x->heads, 1);
    assert_pattern_body(x, 100);
    ctx_finish(&t);
}
END_TEST

START_TEST(timeout_total)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/delay/5000");
    sl_req_timeouts(x->req, &(sl_timeouts_t){.total_ms = 300, .first_byte_ms = 10000});
    run_one(x, 5000);
    assert_fail(x, SL_ETIMEDOUT_TOTAL);
    assert_elapsed(x, 300, 1500);
    ctx_finish(&t);
}
END_TEST

START_TEST(timeout_queue)
{
    struct ctx t;
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 1;
    ctx_init(&t, &o, "127.0.0.1");
    struct xfer *holder = xfer_new(&t, "GET", "/delay/2000");
    struct xfer *x = xfer_new(&t, "GET", "/bytes/10");
    sl_req_timeouts(x->req, &(sl_timeouts_t){.queue_ms = 100, .total_ms = 10000});
    xfer_start(holder);
    xfer_start(x);
    wait_one(x, 5000);
    assert_fail(x, SL_ETIMEDOUT_QUEUE);
    assert_elapsed(x, 100, 1500);
    ck_assert_int_eq(holder->dones, 0);
    wait_one(holder, 5000);
    assert_ok(holder, 200);
    assert_elapsed(holder, 2000, 3500);
    ctx_finish(&t);
}
END_TEST

START_TEST(timeout_connect)
{
    struct ctx t;
    struct blackhole bh;
    char url[64];
    ctx_init(&t, NULL, NULL);
    /* A connect that hangs needs a listener whose SYNs are dropped; see blackhole_open(). If
     * the kernel accepts every filler this environment cannot produce a hanging connect, and
     * the test says so rather than pretending. */
    int rc = blackhole_open(&bh, "127.0.0.1", 0);
    ck_assert_msg(rc == 0,
                  "the kernel completed %d connections to a backlog-0 listener that "
                  "never accepts: cannot make a connect hang here",
                  bh.nfds);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", bh.port);
    struct xfer *x = xfer_new(&t, "GET", url);
    sl_req_timeouts(x->req, &(sl_timeouts_t){.connect_ms = 200, .total_ms = 10000});
    run_one(x, 5000);
    assert_fail(x, SL_ETIMEDOUT_CONNECT);
    assert_elapsed(x, 200, 1500);
    ck_assert_int_eq(x->res.status, 0);
    ctx_finish(&t);
    blackhole_close(&bh);
}
END_TEST

/* ======================================================================================== */
/* 7. cancel and free                                                                        */
/* ======================================================================================== */

/* Cancel a running request and check on_done runs later, once, with SL_ECANCELED. */
static void cancel_and_check(struct xfer *x)
{
    ck_assert_msg(x->dones == 0, "%s: finished (%s) before the cancel", x->url,
                  sl_err_name(x->err));
    xfer_cancel(x);
    ck_assert_msg(x->dones == 0, "%s: on_done ran inside sl_req_cancel()", x->url);
    wait_one(x, 2000);
    assert_err(x, SL_ECANCELED);
    /* A second cancel on a finished request does nothing. */
    xfer_cancel(x);
    loop_sleep(x->t, 20);
    ck_assert_int_eq(x->dones, 1);
}

START_TEST(cancel_queued)
{
    struct ctx t;
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 1;
    ctx_init(&t, &o, "127.0.0.1");
    struct xfer *holder = xfer_new(&t, "GET", "/delay/500");
    struct xfer *x = xfer_new(&t, "GET", "/bytes/10");
    xfer_start(holder);
    xfer_start(x);
    loop_sleep(&t, 100);
    cancel_and_check(x);
    ck_assert_uint_eq(x->res.bytes_up, 0);
    wait_one(holder, 5000);
    assert_ok(holder, 200);
    /* The holder's connection was the only one: the cancelled request never opened any. */
    ck_assert_uint_eq(fs_client_conns(t.fs.port), 1);
    ctx_finish(&t);
}
END_TEST

START_TEST(cancel_resolving)
{
    struct ctx t;
    sl_client_opts_t o;
    char servers[64];
    int port;
    int silent = udp_silent_socket(&port);
    sl_client_opts_init(&o);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", port);
    o.dns_servers = servers;
    ctx_init(&t, &o, NULL);
    struct xfer *x = xfer_new(&t, "GET", "http://slow-dns.test:8080/");
    xfer_start(x);
    loop_sleep(&t, 100);
    cancel_and_check(x);
    ck_assert_str_eq(x->remote_ip, "");
    ctx_finish(&t);
    close(silent);
}
END_TEST

START_TEST(cancel_connecting)
{
    struct ctx t;
    struct blackhole bh;
    char url[64];
    ctx_init(&t, NULL, NULL);
    ck_assert_msg(blackhole_open(&bh, "127.0.0.1", 0) == 0,
                  "the kernel completed every connection to a full backlog-0 listener");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", bh.port);
    struct xfer *x = xfer_new(&t, "GET", url);
    xfer_start(x);
    loop_sleep(&t, 100);
    cancel_and_check(x);
    ck_assert_uint_eq(x->res.time_connect_us, 0);
    ctx_finish(&t);
    blackhole_close(&bh);
}
END_TEST

START_TEST(cancel_waiting_for_head)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/stall-head");
    xfer_start(x);
    loop_sleep(&t, 150);
    /* Partial figures before on_done: the request went out. */
    ck_assert_uint_gt(sl_req_result(x->req)->bytes_up, 0);
    cancel_and_check(x);
    ck_assert_int_eq(x->heads, 0);
    ctx_finish(&t);
}
END_TEST

static bool got_1000(void *arg)
{
    const struct xfer *x = arg;
    return x->nbytes >= 1000 || x->dones > 0;
}

START_TEST(cancel_mid_body)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/stall-body?after=1000");
    x->check_pattern = true;
    xfer_start(x);
    ck_assert(run_until(&t, got_1000, x, 5000));
    cancel_and_check(x);
    ck_assert_int_eq(x->heads, 1);
    ck_assert_uint_eq(x->nbytes, 1000);
    ck_assert_uint_eq(x->bad_at, NOT_BAD);
    /* The client still works after the cancel. */
    struct xfer *y = fetch(&t, "GET", "/bytes/1000");
    assert_ok(y, 200);
    assert_pattern_body(y, 1000);
    ctx_finish(&t);
}
END_TEST

static int free_in_data_hook(struct xfer *x, const void *data, size_t len)
{
    (void)data;
    (void)len;
    g_in_api++;
    sl_req_free(x->req);
    g_in_api--;
    x->req = NULL;
    return 0;
}

static int free_in_head_hook(struct xfer *x, const sl_resp_t *resp)
{
    (void)resp;
    g_in_api++;
    sl_req_free(x->req);
    g_in_api--;
    x->req = NULL;
    return 0;
}

static void free_in_done_hook(struct xfer *x)
{
    g_in_api++;
    sl_req_free(x->req);
    g_in_api--;
    x->req = NULL;
}

START_TEST(free_inside_callbacks)
{
    /* Run under ASan: sl_req_free() from inside on_data, on_head and on_done must not make the
     * library touch freed memory, and a freed request's on_done never runs. */
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *a = xfer_new(&t, "GET", "/bytes/4194304");
    a->check_pattern = true;
    a->data_hook = free_in_data_hook;
    struct xfer *b = xfer_new(&t, "GET", "/bytes/1000");
    b->head_hook = free_in_head_hook;
    struct xfer *c = xfer_new(&t, "GET", "/bytes/1000");
    c->done_hook = free_in_done_hook;
    xfer_start(a);
    xfer_start(b);
    xfer_start(c);
    wait_one(c, RUN_TIMEOUT_MS);
    loop_sleep(&t, 300);
    ck_assert_ptr_null(a->req);
    ck_assert_int_eq(a->datas, 1);
    ck_assert_int_eq(a->dones, 0);
    ck_assert_ptr_null(b->req);
    ck_assert_int_eq(b->heads, 1);
    ck_assert_int_eq(b->datas, 0);
    ck_assert_int_eq(b->dones, 0);
    ck_assert_ptr_null(c->req);
    ck_assert_int_eq(c->err, 0);
    ck_assert_int_eq(c->dones, 1);
    /* The client is still usable. */
    struct xfer *d = fetch(&t, "GET", "/bytes/100000");
    assert_ok(d, 200);
    assert_pattern_body(d, 100000);
    ctx_finish(&t);
}
END_TEST

START_TEST(client_free_cancels_everything)
{
    struct ctx t;
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 3;
    ctx_init(&t, &o, "127.0.0.1");
    struct xfer *xs[5] = {
        xfer_new(&t, "GET", "/stall-head"),
        xfer_new(&t, "GET", "/stall-body?after=500"),
        xfer_new(&t, "GET", "/delay/5000"),
        xfer_new(&t, "GET", "/bytes/100"), /* queued: no slot left */
        xfer_new(&t, "GET", "/bytes/200"), /* queued */
    };
    struct xfer *idle = xfer_new(&t, "GET", "/bytes/10"); /* never started */
    for (int i = 0; i < 5; i++)
        xfer_start(xs[i]);
    loop_sleep(&t, 200);
    ck_assert_uint_eq(xs[1]->nbytes, 500);
    for (int i = 0; i < 5; i++)
        ck_assert_msg(xs[i]->dones == 0, "%s finished early: %s", xs[i]->url,
                      sl_err_name(xs[i]->err));
    g_in_api++;
    sl_client_free(t.client);
    g_in_api--;
    t.client = NULL;
    for (int i = 0; i < 5; i++)
        ck_assert_msg(xs[i]->dones == 0, "%s: on_done inside sl_client_free()", xs[i]->url);
    wait_all(&t, xs, 5, 2000);
    for (int i = 0; i < 5; i++)
        assert_err(xs[i], SL_ECANCELED);
    ck_assert_int_eq(idle->dones, 0);
    ck_assert_int_eq(sl_req_start(idle->req), SL_ECLOSING);
    loop_sleep(&t, 20);
    ck_assert_int_eq(idle->dones, 0);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 8. redirects                                                                              */
/* ======================================================================================== */

START_TEST(redirect_chain_and_limits)
{
    struct ctx t;
    struct xfer *x;
    ctx_init(&t, NULL, "127.0.0.1");

    x = xfer_new(&t, "GET", "/redirect/3");
    xfer_keep(x, 64);
    sl_req_follow(x->req, 10, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.redirects, 3);
    ck_assert_msg(ends_with(x->eff_url, "/redirect/0"), "effective_url %s", x->eff_url);
    ck_assert_str_eq((char *)x->body, "done\n");
    ck_assert_uint_eq(x->res.bytes_down, 5);
    ck_assert_int_eq(x->heads, 1);

    x = xfer_new(&t, "GET", "/redirect/3");
    sl_req_follow(x->req, 2, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_ETOO_MANY_REDIRECTS);

    /* follow(0): the 302 itself is the response. */
    x = xfer_new(&t, "GET", "/redirect/3");
    xfer_keep(x, 64);
    sl_req_follow(x->req, 0, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 302);
    ck_assert_uint_eq(x->res.redirects, 0);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "Location"), "/redirect/2");
    ck_assert_str_eq((char *)x->body, "redirect\n");
    ck_assert_str_eq(x->eff_url, x->url);

    /* Not following is the default. */
    x = fetch_text(&t, "GET", "/redirect/1", 64);
    assert_ok(x, 302);

    /* A relative reference resolves against the request URL. */
    x = xfer_new(&t, "GET", "/redirect-to?url=echo");
    xfer_keep(x, 4096);
    sl_req_follow(x->req, 10, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    struct echo e;
    echo_parse(x, &e);
    ck_assert_str_eq(e.line, "GET /echo HTTP/1.1");
    ck_assert_msg(ends_with(x->eff_url, "/echo") && strstr(x->eff_url, "127.0.0.1") != NULL,
                  "effective_url %s", x->eff_url);
    ctx_finish(&t);
}
END_TEST

/* POST `body` to /redirect-to?url=/echo&status=S and return the echo of the last hop. */
static struct xfer *post_redirect(struct ctx *t, int status, const char *body)
{
    char path[128];
    snprintf(path, sizeof(path), "/redirect-to?url=/echo&status=%d", status);
    struct xfer *x = xfer_new(t, "POST", path);
    xfer_keep(x, 4096);
    ck_assert_int_eq(sl_req_body(x->req, body, strlen(body)), 0);
    sl_req_follow(x->req, 10, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.redirects, 1);
    return x;
}

START_TEST(redirect_methods_and_bodies)
{
    struct ctx t;
    struct echo e;
    char v[64];
    ctx_init(&t, NULL, "127.0.0.1");

    /* 303: GET, no body, no framing headers. 301/302 from POST: GET as well (RFC 9110
     * 15.4.2-3 allows it; every browser and curl do it). */
    static const int to_get[] = {303, 301, 302};
    for (size_t i = 0; i < 3; i++) {
        struct xfer *x = post_redirect(&t, to_get[i], "hello");
        echo_parse(x, &e);
        ck_assert_msg(strcmp(e.line, "GET /echo HTTP/1.1") == 0, "%d: echoed \"%s\"", to_get[i],
                      e.line);
        ck_assert_int_eq(echo_header(&e, "Content-Length", NULL, 0), 0);
        ck_assert_int_eq(echo_header(&e, "Transfer-Encoding", NULL, 0), 0);
        ck_assert_uint_eq(e.body_len, 0);
    }
    /* 307 and 308 keep the method and the body. */
    static const int keep[] = {307, 308};
    for (size_t i = 0; i < 2; i++) {
        struct xfer *x = post_redirect(&t, keep[i], "payload-307");
        echo_parse(x, &e);
        ck_assert_msg(strcmp(e.line, "POST /echo HTTP/1.1") == 0, "%d: echoed \"%s\"", keep[i],
                      e.line);
        ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
        ck_assert_str_eq(v, "11");
        ck_assert_uint_eq(e.body_len, 11);
        ck_assert_int_eq(memcmp(e.body, "payload-307", 11), 0);
    }
    ctx_finish(&t);
}
END_TEST

START_TEST(redirect_authorization_by_origin)
{
    struct ctx t;
    struct echo e;
    char path[256], v[128];
    ctx_init(&t, NULL, "127.0.0.1");

    /* Same origin: the Authorization header goes along. */
    struct xfer *x = xfer_new(&t, "GET", "/redirect-to?url=/echo");
    xfer_keep(x, 4096);
    ck_assert_int_eq(sl_req_header(x->req, "Authorization", "Bearer s3cret"), 0);
    sl_req_follow(x->req, 10, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Authorization", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "Bearer s3cret");

    /* 127.0.0.1:P -> localhost:P is another origin (the host differs): it is dropped. */
    snprintf(path, sizeof(path), "/redirect-to?url=http%%3A%%2F%%2Flocalhost%%3A%d%%2Fecho",
             t.fs.port);
    x = xfer_new(&t, "GET", path);
    xfer_keep(x, 4096);
    ck_assert_int_eq(sl_req_header(x->req, "Authorization", "Bearer s3cret"), 0);
    ck_assert_int_eq(sl_req_header(x->req, "X-Other", "kept"), 0);
    sl_req_follow(x->req, 10, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    snprintf(v, sizeof(v), "http://localhost:%d/echo", t.fs.port);
    ck_assert_str_eq(x->eff_url, v);
    echo_parse(x, &e);
    ck_assert_msg(echo_header(&e, "Authorization", NULL, 0) == 0,
                  "Authorization leaked to another origin:\n%.*s", (int)e.head_len, e.head);
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    snprintf(path, sizeof(path), "localhost:%d", t.fs.port);
    ck_assert_str_eq(v, path);
    ck_assert_int_eq(echo_header(&e, "X-Other", v, sizeof(v)), 1);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 9. what goes on the wire                                                                  */
/* ======================================================================================== */

START_TEST(request_head_defaults_and_order)
{
    struct ctx t;
    struct echo e;
    char v[256], want[64];
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/echo");
    xfer_keep(x, 8192);
    ck_assert_int_eq(sl_req_header(x->req, "X-First", "1"), 0);
    ck_assert_int_eq(sl_req_header(x->req, "X-Second", "two words"), 0);
    ck_assert_int_eq(sl_req_header(x->req, "X-Third", "3"), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_str_eq(e.line, "GET /echo HTTP/1.1");
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    snprintf(want, sizeof(want), "127.0.0.1:%d", t.fs.port);
    ck_assert_str_eq(v, want);
    ck_assert_int_eq(echo_header(&e, "User-Agent", v, sizeof(v)), 1);
    snprintf(want, sizeof(want), "sluice/%s", sl_version());
    ck_assert_str_eq(v, want);
    ck_assert_int_eq(echo_header(&e, "X-Second", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "two words");
    long p1 = echo_header_pos(&e, "X-First"), p2 = echo_header_pos(&e, "X-Second"),
         p3 = echo_header_pos(&e, "X-Third");
    ck_assert_msg(p1 > 0 && p1 < p2 && p2 < p3, "user headers out of order:\n%.*s", (int)e.head_len,
                  e.head);
    /* A GET without a body carries no framing headers. */
    ck_assert_int_eq(echo_header(&e, "Content-Length", NULL, 0), 0);
    ck_assert_int_eq(echo_header(&e, "Transfer-Encoding", NULL, 0), 0);
    ck_assert_uint_eq(e.body_len, 0);
    /* The trace shows the head exactly as sent. */
    ck_assert_int_eq(strncmp(x->head_out, e.head, e.head_len), 0);
    ck_assert_uint_ge(x->res.bytes_up, e.head_len);
    ctx_finish(&t);
}
END_TEST

START_TEST(request_header_validation)
{
    struct ctx t;
    struct echo e;
    char v[64];
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/echo");
    xfer_keep(x, 8192);
    ck_assert_int_eq(sl_req_header(x->req, "X-Inject", "a\r\nX-Injected: 1"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "X-Inject", "a\nb"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "X-Inject", "a\rb"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "X-Bad\r\nName", "v"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "Bad Name", "v"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "Bad:Name", "v"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "", "v"), SL_EBAD_HEADER);
    /* Host: a value replaces sluice's own (curl -H); removing it is refused. */
    ck_assert_int_eq(sl_req_header(x->req, "Host", NULL), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "Content-Length", "5"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "Transfer-Encoding", "chunked"), SL_EBAD_HEADER);
    ck_assert_int_eq(sl_req_header(x->req, "User-Agent", NULL), 0);
    ck_assert_int_eq(sl_req_header(x->req, "X-Fine", "ok"), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_msg(echo_header(&e, "User-Agent", NULL, 0) == 0, "User-Agent not suppressed:\n%.*s",
                  (int)e.head_len, e.head);
    ck_assert_int_eq(echo_header(&e, "X-Inject", NULL, 0), 0);
    ck_assert_int_eq(echo_header(&e, "X-Injected", NULL, 0), 0);
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    ck_assert_ptr_null(strstr(v, "evil"));
    ck_assert_int_eq(echo_header(&e, "X-Fine", v, sizeof(v)), 1);

    /* A user Host goes out instead of the derived one, exactly once. */
    x = xfer_new(&t, "GET", "/echo");
    xfer_keep(x, 8192);
    ck_assert_int_eq(sl_req_header(x->req, "host", "virtual.example"), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "virtual.example");

    /* A user value replaces the default User-Agent rather than adding a second one. */
    x = xfer_new(&t, "GET", "/echo");
    xfer_keep(x, 8192);
    ck_assert_int_eq(sl_req_header(x->req, "User-Agent", "tester/2"), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_msg(echo_header(&e, "User-Agent", v, sizeof(v)) == 1, "User-Agent lines:\n%.*s",
                  (int)e.head_len, e.head);
    ck_assert_str_eq(v, "tester/2");

    /* Bad methods. */
    sl_req_t *req = NULL;
    const char *why = NULL;
    ck_assert_int_eq(sl_req_new(t.client, "GE T", t.base, &req, &why), SL_EINVAL);
    ck_assert_ptr_null(req);
    ck_assert_int_eq(sl_req_new(t.client, "GET\r\n", t.base, &req, &why), SL_EINVAL);
    ck_assert_int_eq(sl_req_new(t.client, "", t.base, &req, &why), SL_EINVAL);
    ctx_finish(&t);
}
END_TEST

START_TEST(request_bodies)
{
    struct ctx t;
    struct echo e;
    char v[64];
    static uint8_t big[100 * 1024];
    ctx_init(&t, NULL, "127.0.0.1");

    /* sl_req_body copies: scribbling on the source after the call changes nothing. */
    char src[] = "name=value&x=1";
    struct xfer *x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, 8192);
    ck_assert_int_eq(sl_req_body(x->req, src, 14), 0);
    memset(src, 'Z', 14);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_str_eq(e.line, "POST /echo HTTP/1.1");
    ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "14");
    ck_assert_int_eq(echo_header(&e, "Transfer-Encoding", NULL, 0), 0);
    ck_assert_uint_eq(e.body_len, 14);
    ck_assert_int_eq(memcmp(e.body, "name=value&x=1", 14), 0);

    /* sl_req_body_ref: 100 KiB straight from our memory. */
    harness_pattern_fill(big, 0, sizeof(big));
    x = xfer_new(&t, "PUT", "/echo");
    xfer_keep(x, sizeof(big) + 8192);
    ck_assert_int_eq(sl_req_body_ref(x->req, big, sizeof(big)), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_str_eq(e.line, "PUT /echo HTTP/1.1");
    ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "102400");
    ck_assert_uint_eq(e.body_len, sizeof(big));
    ck_assert_uint_eq(harness_pattern_check(e.body, 0, e.body_len), sizeof(big));
    ck_assert_uint_ge(x->res.bytes_up, sizeof(big) + e.head_len);

    /* Streamed, known length: Content-Length, the producer's bytes in order. */
    x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, 16384);
    x->up_total = 5000;
    x->up_piece = 777;
    ck_assert_int_eq(sl_req_body_stream(x->req, 5000, stream_body_cb), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "5000");
    ck_assert_int_eq(echo_header(&e, "Transfer-Encoding", NULL, 0), 0);
    ck_assert_uint_eq(e.body_len, 5000);
    ck_assert_uint_eq(harness_pattern_check(e.body, 0, 5000), 5000);
    ck_assert_uint_ge(x->up_calls, 7);

    /* Streamed, unknown length: chunked framing on the wire. */
    x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, 32768);
    x->up_total = 5000;
    x->up_piece = 777;
    ck_assert_int_eq(sl_req_body_stream(x->req, -1, stream_body_cb), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Transfer-Encoding", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "chunked");
    ck_assert_int_eq(echo_header(&e, "Content-Length", NULL, 0), 0);
    uint8_t plain[8192];
    long n = dechunk(e.body, e.body_len, plain, sizeof(plain));
    ck_assert_msg(n == 5000, "chunked upload decodes to %ld bytes:\n%.*s", n,
                  (int)(e.body_len < 300 ? e.body_len : 300), (const char *)e.body);
    ck_assert_uint_eq(harness_pattern_check(plain, 0, 5000), 5000);
    ck_assert_msg(e.body_len >= 5 && memcmp(e.body + e.body_len - 5, "0\r\n\r\n", 5) == 0,
                  "the chunked upload does not end with the last chunk");

    /* POST without a body says so. */
    x = fetch_text(&t, "POST", "/echo", 8192);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "0");
    ck_assert_uint_eq(e.body_len, 0);

    /* Credentials in the URL become Basic authorization and never reach the Host header. */
    char url[128];
    snprintf(url, sizeof(url), "http://user:pass@127.0.0.1:%d/echo", t.fs.port);
    x = fetch_text(&t, "GET", url, 8192);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Authorization", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "Basic dXNlcjpwYXNz"); /* base64("user:pass") */
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    ck_assert_ptr_null(strchr(v, '@'));
    ck_assert_str_eq(e.line, "GET /echo HTTP/1.1");
    ctx_finish(&t);
}
END_TEST

START_TEST(request_expect_continue)
{
    struct ctx t;
    struct echo e;
    char v[64];
    size_t big_len = 2 * MiB;
    uint8_t *big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    harness_pattern_fill(big, 0, big_len);
    ctx_init(&t, NULL, "127.0.0.1");

    /* 2 MiB >= the 1 MiB default: Expect is sent, the server's 100 arrives, the upload goes
     * on at once (well before the 1 s fallback). */
    struct xfer *x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, big_len + 8192);
    ck_assert_int_eq(sl_req_body_ref(x->req, big, big_len), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Expect", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "100-continue");
    ck_assert_int_eq(echo_header(&e, "Content-Length", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "2097152");
    ck_assert_uint_eq(e.body_len, big_len);
    ck_assert_uint_eq(harness_pattern_check(e.body, 0, big_len), big_len);
    assert_elapsed(x, 0, 1000);

    /* Below the threshold: no Expect. */
    x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, big_len + 8192);
    ck_assert_int_eq(sl_req_body_ref(x->req, big, 512 * 1024), 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Expect", NULL, 0), 0);
    ck_assert_uint_eq(e.body_len, 512 * 1024);

    /* Threshold 0 = never. */
    x = xfer_new(&t, "POST", "/echo");
    xfer_keep(x, big_len + 8192);
    ck_assert_int_eq(sl_req_body_ref(x->req, big, big_len), 0);
    sl_req_expect_continue(x->req, 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    echo_parse(x, &e);
    ck_assert_int_eq(echo_header(&e, "Expect", NULL, 0), 0);
    ck_assert_uint_eq(e.body_len, big_len);
    ck_assert_uint_eq(harness_pattern_check(e.body, 0, big_len), big_len);
    ctx_finish(&t);
    free(big);
}
END_TEST

/* ======================================================================================== */
/* 10. content decoding and body limits                                                      */
/* ======================================================================================== */

/* Inflate a whole gzip (windowBits 31) or zlib (15) stream; returns the decoded length. */
static uint64_t inflate_pattern_check(const uint8_t *in, size_t len, int window_bits)
{
    z_stream zs = {0};
    uint8_t out[65536];
    uint64_t total = 0;
    int rc;
    ck_assert_int_eq(inflateInit2(&zs, window_bits), Z_OK);
    zs.next_in = (uint8_t *)in;
    zs.avail_in = (uInt)len;
    do {
        zs.next_out = out;
        zs.avail_out = sizeof(out);
        rc = inflate(&zs, Z_NO_FLUSH);
        ck_assert_msg(rc == Z_OK || rc == Z_STREAM_END, "inflate: %d", rc);
        size_t n = sizeof(out) - zs.avail_out;
        ck_assert_uint_eq(harness_pattern_check(out, total, n), n);
        total += n;
    } while (rc != Z_STREAM_END);
    inflateEnd(&zs);
    return total;
}

START_TEST(decode_gzip_deflate)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");
    static const char *const paths[] = {"/gzip?n=100000", "/deflate?n=100000"};
    static const char *const encodings[] = {"gzip", "deflate"};
    for (int i = 0; i < 2; i++) {
        struct xfer *x = xfer_new(&t, "GET", paths[i]);
        x->check_pattern = true;
        sl_req_decode(x->req, true, 0);
        run_one(x, RUN_TIMEOUT_MS);
        assert_ok(x, 200);
        assert_pattern_body(x, 100000);
        const sl_resp_t *r = sl_req_response(x->req);
        ck_assert_str_eq(sl_resp_header(r, "Content-Encoding"), encodings[i]);
        ck_assert_uint_eq(x->res.bytes_wire, (uint64_t)sl_resp_content_length(r));
        ck_assert_uint_lt(x->res.bytes_wire, 100000);
        ck_assert_msg(strcasestr(x->head_out, "\r\nAccept-Encoding:") != NULL &&
                          strstr(x->head_out, "gzip") != NULL,
                      "no Accept-Encoding: gzip in\n%s", x->head_out);

        /* Without decoding: the raw compressed bytes, which inflate to the pattern. */
        x = xfer_new(&t, "GET", paths[i]);
        xfer_keep(x, 200000);
        run_one(x, RUN_TIMEOUT_MS);
        assert_ok(x, 200);
        r = sl_req_response(x->req);
        ck_assert_uint_eq(x->nbytes, (uint64_t)sl_resp_content_length(r));
        ck_assert_uint_eq(x->res.bytes_down, x->nbytes);
        if (i == 0)
            ck_assert(x->body[0] == 0x1f && x->body[1] == 0x8b);
        ck_assert_uint_eq(inflate_pattern_check(x->body, x->body_len, i == 0 ? 31 : 15), 100000);
        ck_assert_msg(strcasestr(x->head_out, "\r\nAccept-Encoding:") == NULL,
                      "Accept-Encoding sent without sl_req_decode:\n%s", x->head_out);
    }
    ctx_finish(&t);
}
END_TEST

START_TEST(decode_bomb_and_buffer_limits)
{
    struct ctx t;
    ctx_init(&t, NULL, "127.0.0.1");

    /* 1 MiB of gzip that inflates to 1 GiB: stopped at 10 MiB, fast. */
    struct xfer *bomb = xfer_new(&t, "GET", "/gzip?bomb=1");
    sl_req_decode(bomb->req, true, 10 * MiB);
    run_one(bomb, RUN_TIMEOUT_MS);
    assert_fail(bomb, SL_EBODY_TOO_BIG);
    ck_assert_uint_le(bomb->nbytes, 10 * MiB);
    assert_elapsed(bomb, 0, 5000);

    /* sl_req_buffer(1000) and a 5000-byte body. */
    struct xfer *x = xfer_new(&t, "GET", "/bytes/5000");
    sl_req_callbacks(x->req, on_head, NULL, on_done);
    sl_req_buffer(x->req, 1000);
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_EBODY_TOO_BIG);
    ck_assert_int_eq(x->res.status, 200);

    /* sl_req_buffer(0): no limit, everything kept. */
    x = xfer_new(&t, "GET", "/bytes/300000");
    sl_req_callbacks(x->req, on_head, NULL, on_done);
    sl_req_buffer(x->req, 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    size_t len = 0;
    const void *data = sl_req_body_data(x->req, &len);
    ck_assert_uint_eq(len, 300000);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(harness_pattern_check(data, 0, len), 300000);
    ck_assert_uint_eq(x->res.bytes_down, 300000);

    /* Buffering and a data callback together: both see the whole body. */
    x = xfer_new(&t, "GET", "/bytes/70000");
    x->check_pattern = true;
    sl_req_buffer(x->req, 70000);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 70000);
    data = sl_req_body_data(x->req, &len);
    ck_assert_uint_eq(len, 70000);
    ck_assert_uint_eq(harness_pattern_check(data, 0, len), 70000);

    /* Last, as it is the least important: bytes_down is "body bytes delivered", so the bytes
     * that broke the limit and were never delivered do not count. */
    ck_assert_msg(bomb->res.bytes_down == bomb->nbytes,
                  "bomb: bytes_down %" PRIu64 " but %" PRIu64 " bytes delivered to on_data",
                  bomb->res.bytes_down, bomb->nbytes);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 11. pause and resume                                                                      */
/* ======================================================================================== */

struct pauser {
    sl_timer_t timer;
    struct xfer *x;
    unsigned pauses, resumes;
    uint64_t next_at;
};

static void pause_timer_cb(sl_timer_t *tm)
{
    struct pauser *p = tm->data;
    p->x->paused = false;
    p->resumes++;
    sl_req_resume(p->x->req);
}

static int pause_data_hook(struct xfer *x, const void *data, size_t len)
{
    struct pauser *p = x->hook_arg;
    (void)data;
    (void)len;
    if (p->pauses < 5 && x->nbytes >= p->next_at) {
        p->pauses++;
        p->next_at = x->nbytes + 700 * 1024;
        x->paused = true;
        sl_timer_start(&p->timer, 50, 0);
        return SL_PAUSE;
    }
    return 0;
}

START_TEST(pause_resume_from_on_data)
{
    struct ctx t;
    struct pauser p = {.next_at = 1};
    ctx_init(&t, NULL, "127.0.0.1");
    struct xfer *x = xfer_new(&t, "GET", "/bytes/4194304");
    x->check_pattern = true;
    x->data_hook = pause_data_hook;
    x->hook_arg = &p;
    p.x = x;
    sl_timer_init(&t.loop, &p.timer, pause_timer_cb);
    p.timer.data = &p;
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 4 * MiB);
    ck_assert_uint_eq(p.pauses, 5);
    ck_assert_uint_eq(p.resumes, 5);
    ck_assert_msg(!x->data_while_paused, "on_data ran while the transfer was paused");
    assert_elapsed(x, 250, RUN_TIMEOUT_MS);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 12. connection errors and bad URLs                                                        */
/* ======================================================================================== */

START_TEST(connect_refused)
{
    struct ctx t;
    char url[64];
    ctx_init(&t, NULL, NULL);
    int port = harness_free_port("127.0.0.1");
    ck_assert_int_gt(port, 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    struct xfer *x = xfer_new(&t, "GET", url);
    run_one(x, 5000);
    assert_fail(x, SL_ECONNREFUSED);
    ck_assert_int_eq(x->res.status, 0);
    assert_elapsed(x, 0, 1000);
    ctx_finish(&t);
}
END_TEST

START_TEST(dns_server_unreachable)
{
    struct ctx t;
    sl_client_opts_t o;
    char servers[64];

    /* The only DNS server is a UDP port with nothing on it: ICMP unreachable, fast failure. */
    sl_client_opts_init(&o);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", udp_closed_port());
    o.dns_servers = servers;
    ctx_init(&t, &o, NULL);
    struct xfer *x = xfer_new(&t, "GET", "http://no-such-host.invalid/");
    run_one(x, 15000);
    ck_assert_msg(x->err == SL_EDNS || x->err == SL_EDNS_SERVER,
                  "ended with %s (%s) after %" PRIu64 " ms, expected EDNS or EDNS_SERVER",
                  sl_err_name(x->err), x->detail, x->t_done - x->t_start);
    assert_fail(x, x->err);
    ck_assert_msg(strstr(x->detail, "no-such-host.invalid") != NULL,
                  "errdetail does not name the host: %s", x->detail);
    ck_assert_str_eq(x->remote_ip, "");
    ctx_finish(&t);
}
END_TEST

START_TEST(dns_nxdomain)
{
    /* A server that answers NXDOMAIN: exactly SL_EDNS. */
    struct ctx t;
    sl_client_opts_t o;
    char servers[64];
    struct dnsfake d;
    ctx_init_noclient(&t, NULL);
    dnsfake_start(&t, &d, "known.test", true, false);
    sl_client_opts_init(&o);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    o.dns_servers = servers;
    ctx_client(&t, &o);
    struct xfer *x = xfer_new(&t, "GET", "http://unknown.test:1/");
    run_one(x, 10000);
    assert_fail(x, SL_EDNS);
    ck_assert_msg(strstr(x->detail, "unknown.test") != NULL, "errdetail: %s", x->detail);
    ck_assert_uint_ge(d.queries, 1);
    ctx_finish(&t);
}
END_TEST

START_TEST(bad_urls)
{
    static const struct {
        const char *url;
        int code;
    } cases[] = {
        {"", SL_EURL},
        {"not a url", SL_EURL},
        {"http://", SL_EURL},
        {"http:///path", SL_EURL},
        {"http://host:99999/", SL_EURL},
        {"http://host:abc/", SL_EURL},
        {"http://[::1/", SL_EURL},
        {"//host/path", SL_EURL},
        {"ftp://127.0.0.1/file", SL_EUNSUPPORTED_SCHEME},
        {"gopher://127.0.0.1/", SL_EUNSUPPORTED_SCHEME},
    };
    struct ctx t;
    ctx_init(&t, NULL, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_req_t *req = (sl_req_t *)&t; /* must be reset to NULL */
        const char *why = NULL;
        int rc = sl_req_new(t.client, "GET", cases[i].url, &req, &why);
        ck_assert_msg(rc == cases[i].code, "\"%s\": %s, expected %s", cases[i].url, sl_err_name(rc),
                      sl_err_name(cases[i].code));
        ck_assert_ptr_null(req);
        ck_assert_msg(why != NULL && why[0] != '\0', "\"%s\": no reason given", cases[i].url);
    }
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 13. IPv6 and Happy Eyeballs                                                               */
/* ======================================================================================== */

START_TEST(ipv6_literal)
{
    struct ctx t;
    if (harness_free_port("::1") < 0) {
        fprintf(stderr, "ipv6_literal: ::1 is not available here, skipped\n");
        return;
    }
    ctx_init(&t, NULL, "::1");
    struct xfer *x = fetch(&t, "GET", "/bytes/1000");
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    ck_assert_str_eq(x->remote_ip, "::1");
    struct xfer *y = fetch_text(&t, "GET", "/echo", 4096);
    assert_ok(y, 200);
    struct echo e;
    char v[64], want[64];
    echo_parse(y, &e);
    ck_assert_int_eq(echo_header(&e, "Host", v, sizeof(v)), 1);
    snprintf(want, sizeof(want), "[::1]:%d", t.fs.port);
    ck_assert_str_eq(v, want);
    ctx_finish(&t);
}
END_TEST

START_TEST(happy_eyeballs_localhost)
{
    /* The server listens on 127.0.0.1 only. Whatever localhost resolves to here (/etc/hosts
     * may or may not list ::1), a refused ::1 must not delay the IPv4 connection. */
    struct ctx t;
    char url[64];
    ctx_init(&t, NULL, "127.0.0.1");
    snprintf(url, sizeof(url), "http://localhost:%d/bytes/1000", t.fs.port);
    struct xfer *x = fetch(&t, "GET", url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    ck_assert_str_eq(x->remote_ip, "127.0.0.1");
    assert_elapsed(x, 0, 250);
    ctx_finish(&t);
}
END_TEST

START_TEST(happy_eyeballs_v6_refused)
{
    /* A name with both ::1 and 127.0.0.1 (our own DNS server), a server on 127.0.0.1 only: ::1
     * is refused at once, IPv4 wins well under the 250 ms stagger. */
    struct ctx t;
    struct dnsfake d;
    sl_client_opts_t o;
    char servers[64], url[96];
    if (harness_free_port("::1") < 0) {
        fprintf(stderr, "happy_eyeballs_v6_refused: ::1 is not available here, skipped\n");
        return;
    }
    ctx_init_noclient(&t, "127.0.0.1");
    dnsfake_start(&t, &d, "dual.test", true, true);
    sl_client_opts_init(&o);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    o.dns_servers = servers;
    ctx_client(&t, &o);
    snprintf(url, sizeof(url), "http://dual.test:%d/bytes/1000", t.fs.port);
    struct xfer *x = fetch(&t, "GET", url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    ck_assert_str_eq(x->remote_ip, "127.0.0.1");
    ck_assert_uint_ge(d.queries, 2); /* A and AAAA */
    assert_elapsed(x, 0, 250);
    ctx_finish(&t);
}
END_TEST

START_TEST(happy_eyeballs_v6_blackholed)
{
    /* The same name, but [::1]:P swallows SYNs (a full accept queue): the first attempt, ::1
     * (RFC 8305 section 4 and RFC 6724 put ::1 before 127.0.0.1), hangs, and the IPv4 attempt
     * starts after the 250 ms stagger and wins. */
    struct ctx t;
    struct dnsfake d;
    struct blackhole bh;
    sl_client_opts_t o;
    char servers[64], url[96];
    if (harness_free_port("::1") < 0) {
        fprintf(stderr, "happy_eyeballs_v6_blackholed: ::1 is not available here, skipped\n");
        return;
    }
    ctx_init_noclient(&t, "127.0.0.1");
    int rc = blackhole_open(&bh, "::1", t.fs.port);
    if (rc == -2) {
        fprintf(stderr, "happy_eyeballs_v6_blackholed: [::1]:%d is taken, skipped\n", t.fs.port);
        ctx_finish(&t);
        return;
    }
    ck_assert_msg(rc == 0, "the kernel completed every connection to a full backlog-0 listener");
    dnsfake_start(&t, &d, "dual.test", true, true);
    sl_client_opts_init(&o);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    o.dns_servers = servers;
    ctx_client(&t, &o);
    snprintf(url, sizeof(url), "http://dual.test:%d/bytes/1000", t.fs.port);
    struct xfer *x = fetch(&t, "GET", url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    ck_assert_str_eq(x->remote_ip, "127.0.0.1");
    assert_elapsed(x, 250, 1500);
    ctx_finish(&t);
    blackhole_close(&bh);
}
END_TEST

/* ======================================================================================== */
/* 14. the connection pool                                                                   */
/* ======================================================================================== */

START_TEST(pool_per_host_limit)
{
    struct ctx t;
    struct xfer *xs[10];
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections_per_host = 2;
    ctx_init(&t, &o, "127.0.0.1");
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 10; i++) {
        xs[i] = xfer_new(&t, "GET", "/delay/100");
        xfer_start(xs[i]);
    }
    wait_all(&t, xs, 10, RUN_TIMEOUT_MS);
    uint64_t wall = mono_ms() - t0;
    for (int i = 0; i < 10; i++)
        assert_ok(xs[i], 200);
    unsigned conns = fs_client_conns(t.fs.port);
    ck_assert_msg(conns >= 1 && conns <= 2, "%u connections with a per-host limit of 2", conns);
    /* 10 x 100 ms over at most 2 connections: at least 5 rounds. */
    ck_assert_msg(wall >= 450, "10 requests of 100 ms took only %" PRIu64 " ms", wall);
    ctx_finish(&t);
}
END_TEST

START_TEST(pool_global_limit_two_origins)
{
    /* Two listeners of our own that never answer: nothing is ever released, so the number of
     * connections they accepted is exactly the number open at once. */
    struct ctx t;
    struct xfer *xs[10];
    int p1, p2, fds[32], nfds = 0;
    char url[64];
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 3;
    ctx_init(&t, &o, NULL);
    int l1 = tcp_listener(&p1), l2 = tcp_listener(&p2);
    for (int i = 0; i < 10; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/%d", i % 2 ? p2 : p1, i);
        xs[i] = xfer_new(&t, "GET", url);
        xfer_start(xs[i]);
    }
    loop_sleep(&t, 300);
    int n1 = accept_pending(l1, fds, &nfds, 32), n2 = accept_pending(l2, fds, &nfds, 32);
    ck_assert_msg(n1 + n2 == 3, "%d + %d connections with max_connections 3 (10 waiting)", n1, n2);
    loop_sleep(&t, 200);
    n1 += accept_pending(l1, fds, &nfds, 32);
    n2 += accept_pending(l2, fds, &nfds, 32);
    ck_assert_msg(n1 + n2 == 3, "%d + %d connections later", n1, n2);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(xs[i]->dones, 0);
    ctx_finish(&t);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    close(l1);
    close(l2);
}
END_TEST

START_TEST(pool_global_limit_two_faultservers)
{
    /* 6 + 6 requests of 200 ms on two servers through at most 3 connections: at least 4
     * rounds. (The servers' /stats count connections accepted over time, not at once: handing
     * a slot from one origin to the other legitimately opens a new one, so the sum is no
     * measure of the limit; pool_global_limit_two_origins measures that exactly.) */
    struct ctx t;
    struct xfer *xs[12];
    char url[96];
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 3;
    ctx_init(&t, &o, "127.0.0.1");
    ctx_second_faultserver(&t);
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 12; i++) {
        snprintf(url, sizeof(url), "%s/delay/200", i % 2 ? t.base2 : t.base);
        xs[i] = xfer_new(&t, "GET", url);
        xfer_start(xs[i]);
    }
    wait_all(&t, xs, 12, RUN_TIMEOUT_MS);
    uint64_t wall = mono_ms() - t0;
    for (int i = 0; i < 12; i++)
        assert_ok(xs[i], 200);
    ck_assert_msg(wall >= 780, "12 x 200 ms through 3 connections took %" PRIu64 " ms", wall);
    unsigned c1 = fs_client_conns(t.fs.port), c2 = fs_client_conns(t.fs2.port);
    ck_assert_uint_ge(c1, 1);
    ck_assert_uint_ge(c2, 1);
    ctx_finish(&t);
}
END_TEST

START_TEST(pool_idle_expiry)
{
    struct ctx t;
    struct xfer *x;
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.idle_timeout_ms = 200;
    ctx_init(&t, &o, "127.0.0.1");
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    ck_assert(!x->res.reused);
    loop_sleep(&t, 50);
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    ck_assert_msg(x->res.reused, "an idle connection younger than idle_timeout_ms was not reused");
    loop_sleep(&t, 400);
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    ck_assert_msg(!x->res.reused, "a connection idle past idle_timeout_ms was reused");
    ck_assert_uint_eq(fs_client_conns(t.fs.port), 2);
    ctx_finish(&t);
}
END_TEST

static void start_hook_arg(struct xfer *x)
{
    xfer_start(x->hook_arg);
}

START_TEST(pool_server_closed_idle)
{
    struct ctx t;
    struct xfer *x, *y;
    ctx_init(&t, NULL, "127.0.0.1");
    /* The server closes after answering, without saying so: after a moment the connection
     * must not be offered again. */
    x = fetch_text(&t, "GET", "/close-after", 64);
    assert_ok(x, 200);
    ck_assert_str_eq((char *)x->body, "ok\n");
    loop_sleep(&t, 100);
    y = fetch(&t, "GET", "/bytes/1000");
    assert_ok(y, 200);
    assert_pattern_body(y, 1000);
    ck_assert_msg(!y->res.reused, "a connection the server had closed was reused");

    /* Straight from on_done, before the FIN may have been seen: still a success (a fresh
     * connection, or a reused one that failed before any byte and was retried). */
    x = xfer_new(&t, "GET", "/close-after");
    y = xfer_new(&t, "GET", "/bytes/1000");
    y->check_pattern = true;
    x->done_hook = start_hook_arg;
    x->hook_arg = y;
    xfer_start(x);
    wait_one(x, RUN_TIMEOUT_MS);
    wait_one(y, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_ok(y, 200);
    assert_pattern_body(y, 1000);
    ctx_finish(&t);
}
END_TEST

/* sl_client_drain(): running transfers go on, nothing is pooled any more. */
START_TEST(pool_drain_pools_nothing)
{
    struct ctx t;
    struct xfer *x;

    ctx_init(&t, NULL, "127.0.0.1");
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    x = fetch(&t, "GET", "/bytes/10");
    ck_assert(x->res.reused);
    /* Drained while one runs: it completes, on the idle connection's
     * neighbour; afterwards every request needs a new connection. */
    struct xfer *slow = xfer_new(&t, "GET", "/delay/100");
    xfer_start(slow);
    loop_sleep(&t, 20);
    sl_client_drain(t.client);
    wait_one(slow, 5000);
    assert_ok(slow, 200);
    for (int i = 0; i < 2; i++) {
        x = fetch(&t, "GET", "/bytes/10");
        assert_ok(x, 200);
        ck_assert_msg(!x->res.reused, "a drained client reused a connection");
    }
    ctx_finish(&t);
}
END_TEST

/* A client drained just after starting a transfer (a CLI whose URL list ran out as it began
 * its last one) still gives that transfer the idle connection, and a connection finishing while
 * requests wait for one serves them: draining closes only what nothing is about to use. */
START_TEST(pool_drain_serves_what_was_started)
{
    struct ctx t;
    struct xfer *x;
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 1;

    ctx_init(&t, &o, "127.0.0.1");
    x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    struct xfer *last = xfer_new(&t, "GET", "/bytes/10");
    last->check_pattern = true;
    xfer_start(last);
    sl_client_drain(t.client);
    wait_one(last, 5000);
    assert_ok(last, 200);
    ck_assert_msg(last->res.reused, "drained just after its start: no idle connection left");
    ck_assert_uint_eq(fs_client_conns(t.fs.port), 1);
    ctx_finish(&t);

    /* One connection allowed: the second request waits for the first's and gets it. */
    ctx_init(&t, &o, "127.0.0.1");
    struct xfer *a = xfer_new(&t, "GET", "/delay/50"), *b = xfer_new(&t, "GET", "/bytes/10");
    b->check_pattern = true;
    xfer_start(a);
    xfer_start(b);
    sl_client_drain(t.client);
    struct xfer *both[] = {a, b};
    wait_all(&t, both, 2, 5000);
    assert_ok(a, 200);
    assert_ok(b, 200);
    ck_assert_msg(b->res.reused, "a waiting request did not get the connection that finished");
    ck_assert_uint_eq(fs_client_conns(t.fs.port), 1);
    ctx_finish(&t);
}
END_TEST

/* Established TCP connections of this process to `port` over IPv4 or IPv6 (its socket fds,
 * matched by inode against /proc/net/tcp and tcp6). */
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static unsigned my_conns_to(int port)
{
    unsigned long inodes[256];
    size_t n = 0;
    unsigned count = 0;
    char path[300], link[64], line[512];
    DIR *d = opendir("/proc/self/fd");

    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d)) != NULL && n < COUNT_OF(inodes);) {
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof(link) - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (sscanf(link, "socket:[%lu]", &inodes[n]) == 1)
            n++;
    }
    closedir(d);
    for (int v6 = 0; v6 < 2; v6++) {
        FILE *f = fopen(v6 ? "/proc/net/tcp6" : "/proc/net/tcp", "r");
        if (f == NULL)
            continue; /* no IPv6 */
        while (fgets(line, sizeof(line), f) != NULL) {
            unsigned rport, st;
            unsigned long inode;
            if (sscanf(line,
                       " %*d: %*[0-9A-Fa-f]:%*x %*[0-9A-Fa-f]:%x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
                       &rport, &st, &inode) != 3)
                continue;
            for (size_t i = 0; i < n; i++)
                if (inodes[i] == inode && rport == (unsigned)port && st == 1 /* ESTABLISHED */)
                    count++;
        }
        fclose(f);
    }
    return count;
}

/* A drained client whose requests wait behind a per-host cap keeps a finishing connection of
 * another origin only while a waiting request could take it: at the end nothing is open. */
START_TEST(pool_drain_leaves_nothing_open)
{
    struct ctx t;
    sl_client_opts_t o;
    char other[128];
    sl_client_opts_init(&o);
    o.max_connections_per_host = 1;

    ctx_init(&t, &o, "127.0.0.1");
    snprintf(other, sizeof(other), "http://localhost:%d/bytes/10", t.fs.port);
    struct xfer *x = fetch(&t, "GET", "/bytes/10");
    assert_ok(x, 200);
    ck_assert_uint_eq(my_conns_to(t.fs.port), 1); /* the counter sees a pooled one */
    struct xfer *a1 = xfer_new(&t, "GET", "/delay/200"), *a2 = xfer_new(&t, "GET", "/bytes/10");
    struct xfer *b1 = xfer_new(&t, "GET", other);
    xfer_start(a1);
    xfer_start(a2); /* waits for a1's connection (one per host) */
    xfer_start(b1); /* another origin: done while a2 still waits */
    sl_client_drain(t.client);
    struct xfer *all[] = {a1, a2, b1};
    wait_all(&t, all, 3, 5000);
    for (int i = 0; i < 3; i++)
        assert_ok(all[i], 200);
    loop_sleep(&t, 20);
    ck_assert_uint_eq(my_conns_to(t.fs.port), 0);
    ctx_finish(&t);
}
END_TEST

START_TEST(pool_100_concurrent)
{
    struct ctx t;
    struct xfer *xs[100];
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.max_connections = 10;
    ctx_init(&t, &o, "127.0.0.1");
    for (int i = 0; i < 100; i++) {
        xs[i] = xfer_new(&t, "GET", i % 2 ? "/bytes/20000" : "/delay/20");
        xs[i]->check_pattern = i % 2 == 1;
        xfer_start(xs[i]);
    }
    wait_all(&t, xs, 100, RUN_TIMEOUT_MS);
    for (int i = 0; i < 100; i++) {
        assert_ok(xs[i], 200);
        if (i % 2)
            assert_pattern_body(xs[i], 20000);
        else
            ck_assert_uint_eq(xs[i]->nbytes, 3); /* "ok\n" */
    }
    unsigned conns = fs_client_conns(t.fs.port);
    ck_assert_msg(conns >= 1 && conns <= 10, "%u connections with max_connections 10", conns);
    ctx_finish(&t);
}
END_TEST

/* ======================================================================================== */
/* 15. nginx                                                                                 */
/* ======================================================================================== */

static const char hello_text[] = "The quick brown fox jumps over the lazy dog.\n";

START_TEST(nginx_files_reuse_gzip)
{
    static const struct harness_file files[] = {
        {"f1k.bin", 1024},
        {"f1m.bin", MiB},
        {"f100m.bin", 100 * (uint64_t)MiB},
        {"pattern.txt", 200000},
    };
    struct harness_nginx n;
    struct harness_nginx_opts no = {.files = files, .nfiles = 4};
    struct ctx t;
    char url[256], path[512];
    ck_assert_int_eq(harness_nginx_start(&n, &no), 0);
    ctx_init(&t, NULL, NULL);
    snprintf(t.base, sizeof(t.base), "http://127.0.0.1:%d", n.srv.port);

    /* Our own text file next to the generated ones: 2000 lines of English. */
    snprintf(path, sizeof(path), "%s/hello.txt", n.root);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 2000; i++)
        fputs(hello_text, f);
    ck_assert_int_eq(fclose(f), 0);
    size_t hello_len = 2000 * (sizeof(hello_text) - 1);

    static const struct {
        const char *path;
        uint64_t size;
    } gets[] = {{"/f1k.bin", 1024}, {"/f1m.bin", MiB}, {"/f100m.bin", 100 * (uint64_t)MiB}};
    for (size_t i = 0; i < 3; i++) {
        struct xfer *x = fetch(&t, "GET", gets[i].path);
        assert_ok(x, 200);
        assert_pattern_body(x, gets[i].size);
        ck_assert_int_eq(sl_resp_content_length(sl_req_response(x->req)), (int64_t)gets[i].size);
        ck_assert_msg(x->res.reused == (i > 0), "%s: reused %d", x->url, x->res.reused);
    }
    /* nginx's chunked location. */
    struct xfer *x = fetch(&t, "GET", "/chunked/f1m.bin");
    assert_ok(x, 200);
    assert_pattern_body(x, MiB);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "Transfer-Encoding"), "chunked");
    ck_assert(x->res.reused);

    /* gzip, asked for and decoded: the original bytes. */
    x = xfer_new(&t, "GET", "/pattern.txt");
    x->check_pattern = true;
    sl_req_decode(x->req, true, 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 200000);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "Content-Encoding"), "gzip");

    x = xfer_new(&t, "GET", "/hello.txt");
    xfer_keep(x, hello_len + 1);
    sl_req_decode(x->req, true, 0);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    ck_assert_str_eq(sl_resp_header(sl_req_response(x->req), "Content-Encoding"), "gzip");
    ck_assert_uint_eq(x->body_len, hello_len);
    ck_assert_uint_eq(x->res.bytes_down, hello_len);
    ck_assert_uint_lt(x->res.bytes_wire, hello_len / 10); /* it did travel compressed */
    for (int i = 0; i < 2000; i++)
        ck_assert_int_eq(memcmp(x->body + (size_t)i * (sizeof(hello_text) - 1), hello_text,
                                sizeof(hello_text) - 1),
                         0);

    /* Without decoding no Accept-Encoding goes out, so nginx sends the file as is. */
    x = xfer_new(&t, "GET", "/hello.txt");
    xfer_keep(x, hello_len + 1);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    ck_assert_ptr_null(sl_resp_header(sl_req_response(x->req), "Content-Encoding"));
    ck_assert_uint_eq(x->body_len, hello_len);

    snprintf(url, sizeof(url), "%s/missing.bin", t.base);
    x = fetch_text(&t, "GET", url, 4096);
    assert_ok(x, 404);
    ctx_finish(&t);
    ck_assert_int_eq(harness_nginx_stop(&n), 0);
}
END_TEST

START_TEST(nginx_1gib_streamed)
{
    /* 1 GiB, verified byte by byte as it streams; nothing is buffered. */
    static const struct harness_file files[] = {{"f1g.bin", 1024 * (uint64_t)MiB}};
    struct harness_nginx n;
    struct harness_nginx_opts no = {.files = files, .nfiles = 1};
    struct ctx t;
    ck_assert_int_eq(harness_nginx_start(&n, &no), 0);
    ctx_init(&t, NULL, NULL);
    snprintf(t.base, sizeof(t.base), "http://127.0.0.1:%d", n.srv.port);
    struct xfer *x = xfer_new(&t, "GET", "/f1g.bin");
    x->check_pattern = true;
    run_one(x, 240000);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024 * (uint64_t)MiB);
    ck_assert_uint_eq(x->res.bytes_wire, 1024 * (uint64_t)MiB);
    /* Neither the test nor the library held the body: the peak resident size stays far below
     * it (the bound leaves room for ASan's quarantine and shadow memory). */
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    ck_assert_msg(ru.ru_maxrss < 512 * 1024, "peak RSS %ld KiB for a streamed 1 GiB body",
                  ru.ru_maxrss);
    ctx_finish(&t);
    ck_assert_int_eq(harness_nginx_stop(&n), 0);
}
END_TEST

/* ======================================================================================== */


/* ======================================================================================== */
/* flow control: retries with backoff and Retry-After, rate limits                            */
/* ======================================================================================== */

static struct xfer *retry_fetch(struct ctx *t, const char *method, const char *target,
                                const sl_retry_t *r)
{
    struct xfer *x = xfer_new(t, method, target);
    xfer_keep(x, 256);
    sl_req_retry(x->req, r);
    run_one(x, 20000);
    return x;
}

START_TEST(retry_status_backoff_and_retry_after)
{
    struct ctx t;
    struct xfer *x;
    char target[256], date[64];
    sl_retry_t r = {.max = 3, .delay_ms = 50, .max_delay_ms = 3000};
    uint64_t t0;

    ctx_init(&t, NULL, "127.0.0.1");

    /* 503 twice, then 200: the 503 bodies never reach the user. */
    x = retry_fetch(&t, "GET", "/flaky?key=s1&fail=2", &r);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.retries, 2);
    ck_assert_int_eq(x->heads, 1);
    ck_assert_str_eq((char *)x->body, "ok\n");

    /* 429 with Retry-After in seconds: the wait is the server's, not ours. */
    t0 = mono_ms();
    x = retry_fetch(&t, "GET", "/flaky?key=s2&fail=1&status=429&retry-after=1", &r);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.retries, 1);
    ck_assert_uint_ge(mono_ms() - t0, 1000);
    ck_assert_uint_lt(mono_ms() - t0, 2500);

    /* Retry-After as an HTTP-date two seconds ahead (1 s resolution). */
    time_t when = time(NULL) + 2;
    strftime(date, sizeof(date), "%a,%%20%d%%20%b%%20%Y%%20%H:%M:%S%%20GMT", gmtime(&when));
    snprintf(target, sizeof(target), "/flaky?key=s3&fail=1&status=503&retry-after=%s", date);
    t0 = mono_ms();
    x = retry_fetch(&t, "GET", target, &r);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.retries, 1);
    ck_assert_uint_ge(mono_ms() - t0, 900);
    ck_assert_uint_lt(mono_ms() - t0, 3500);

    /* Retries used up: the last answer is delivered as it is. */
    sl_retry_t two = {.max = 2, .delay_ms = 10};
    x = retry_fetch(&t, "GET", "/flaky?key=s4&fail=5", &two);
    assert_ok(x, 503);
    ck_assert_uint_eq(x->res.retries, 2);

    /* POST is not idempotent: not retried unless asked. */
    x = retry_fetch(&t, "POST", "/flaky?key=s5&fail=1", &two);
    assert_ok(x, 503);
    ck_assert_uint_eq(x->res.retries, 0);
    sl_retry_t all = {.max = 2, .delay_ms = 10, .all_methods = true};
    x = retry_fetch(&t, "POST", "/flaky?key=s6&fail=1", &all);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.retries, 1);

    /* A status that is not worth a retry is not retried. */
    x = retry_fetch(&t, "GET", "/status/404", &r);
    assert_ok(x, 404);
    ck_assert_uint_eq(x->res.retries, 0);

    /* The budget: a 1 s Retry-After twice would pass max_time 1.5 s. */
    sl_retry_t budget = {.max = 5, .delay_ms = 10, .max_time_ms = 1500};
    t0 = mono_ms();
    x = retry_fetch(&t, "GET", "/flaky?key=s7&fail=9&retry-after=1", &budget);
    assert_ok(x, 503);
    ck_assert_uint_eq(x->res.retries, 1);
    ck_assert_uint_lt(mono_ms() - t0, 1500);
    ctx_finish(&t);
}
END_TEST

START_TEST(retry_connection_errors)
{
    struct ctx t;
    struct xfer *x;
    sl_retry_t r = {.max = 2, .delay_ms = 20, .max_delay_ms = 100};

    ctx_init(&t, NULL, "127.0.0.1");
    /* Refused every time: each attempt counted, the last error reported. */
    x = retry_fetch(&t, "GET", "http://127.0.0.1:1/", &r);
    ck_assert_int_eq(x->err, SL_ECONNREFUSED);
    ck_assert_uint_eq(x->res.retries, 2);
    /* Reset mid-head once, then fine. */
    x = retry_fetch(&t, "GET", "/reset-once?key=c1", &r);
    assert_ok(x, 200);
    ck_assert_uint_eq(x->res.retries, 1);
    /* A truncated body without a validator (no ETag, no Last-Modified)
     * cannot be resumed, and its head already reached the user: the error
     * stands. */
    x = retry_fetch(&t, "GET", "/wrong-cl?cl=100&send=50", &r);
    ck_assert_int_eq(x->err, SL_ETRUNCATED);
    ck_assert_uint_eq(x->res.retries, 0);
    ctx_finish(&t);
}
END_TEST

static void start_all(struct ctx *t, struct xfer **xs, size_t n, const char *fmt, int with_i)
{
    char target[128];
    for (size_t i = 0; i < n; i++) {
        if (with_i)
            snprintf(target, sizeof(target), fmt, (int)i);
        else
            snprintf(target, sizeof(target), "%s", fmt);
        xs[i] = xfer_new(t, "GET", target);
    }
    for (size_t i = 0; i < n; i++)
        xfer_start(xs[i]);
}

START_TEST(rate_limit_global_burst_and_rate)
{
    struct ctx t;
    struct xfer *xs[30];
    sl_client_opts_t o;

    sl_client_opts_init(&o);
    o.rate_per_s = 20;
    o.rate_burst = 5;
    ctx_init(&t, &o, "127.0.0.1");
    uint64_t t0 = mono_ms();
    start_all(&t, xs, 30, "/bytes/10?i=%d", 1);
    wait_all(&t, xs, 30, 10000);
    uint64_t ms = mono_ms() - t0;
    for (int i = 0; i < 30; i++)
        assert_ok(xs[i], 200);
    /* 5 at once, then 25 at 20/s: 1.25 s, within 5%. */
    ck_assert_msg(ms >= 1187 && ms <= 1313, "30 requests at 20/s burst 5 took %llu ms",
                  (unsigned long long)ms);
    ctx_finish(&t);
}
END_TEST

START_TEST(rate_limit_per_host)
{
    struct ctx t;
    struct xfer *xs[20];
    sl_client_opts_t o;
    char target[160];

    sl_client_opts_init(&o);
    o.host_rate_per_s = 10;
    o.host_rate_burst = 1;
    ctx_init(&t, &o, "127.0.0.1");
    ctx_second_faultserver(&t);
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 20; i++) {
        if (i % 2)
            snprintf(target, sizeof(target), "%s/bytes/10?i=%d", t.base2, i);
        else
            snprintf(target, sizeof(target), "/bytes/10?i=%d", i);
        xs[i] = xfer_new(&t, "GET", target);
    }
    for (int i = 0; i < 20; i++)
        xfer_start(xs[i]);
    wait_all(&t, xs, 20, 10000);
    uint64_t ms = mono_ms() - t0;
    for (int i = 0; i < 20; i++)
        assert_ok(xs[i], 200);
    /* Each host: 1 at once, then 9 at 10/s = 0.9 s; the hosts do not wait
     * for each other (it would take 1.9 s if they did). */
    ck_assert_msg(ms >= 855 && ms <= 1100, "10 + 10 requests at 10/s per host took %llu ms",
                  (unsigned long long)ms);
    ctx_finish(&t);
}
END_TEST


/* ---- groups ------------------------------------------------------------------------------ */

struct gstate {
    int dones;
    int err;
    unsigned order;   /* g_done_seq when the group's callback ran */
    bool inside_api;
    bool free_in_cb;  /* sl_group_free() from inside the callback */
};

static void on_group_done(sl_group_t *g, int err)
{
    struct gstate *st = sl_group_data(g);
    st->dones++;
    st->err = err;
    st->order = ++g_done_seq;
    if (g_in_api > 0)
        st->inside_api = true;
    ck_assert_int_eq(err, sl_group_error(g));
    ck_assert(sl_group_done(g));
    if (st->free_in_cb)
        sl_group_free(g);
}

static bool gstate_done(void *arg)
{
    return ((struct gstate *)arg)->dones > 0;
}

static void free_own_req(struct xfer *x)
{
    sl_req_free(x->req);
    x->req = NULL;
}

static sl_group_t *group_new(struct ctx *t, sl_group_mode_t mode, struct gstate *st)
{
    sl_group_t *g = NULL;
    memset(st, 0, sizeof(*st));
    ck_assert_int_eq(sl_group_new(&t->loop, mode, &g), 0);
    sl_group_set_data(g, st);
    return g;
}

/* The request of `x` now belongs to `g`: the test must not free it itself. */
static void group_take(sl_group_t *g, struct xfer *x)
{
    ck_assert_int_eq(sl_group_add(g, x->req), 0);
}

static void group_start_wait(struct ctx *t, sl_group_t *g, struct gstate *st, uint64_t ms)
{
    g_in_api++;
    ck_assert_int_eq(sl_group_start(g, on_group_done), 0);
    g_in_api--;
    ck_assert_int_eq(st->dones, 0);
    ck_assert_msg(run_until(t, gstate_done, st, ms), "the group did not end in %llu ms",
                  (unsigned long long)ms);
    ck_assert_int_eq(st->dones, 1);
    ck_assert(!st->inside_api);
}

/* The group freed the requests of its xfers: forget them so ctx_finish() does not. */
static void group_release(sl_group_t *g, struct xfer **xs, size_t n)
{
    sl_group_free(g);
    for (size_t i = 0; i < n; i++)
        xs[i]->req = NULL;
}

START_TEST(group_collect_all)
{
    struct ctx t;
    struct xfer *xs[5];
    struct gstate st;
    size_t running, ok, failed;

    ctx_init(&t, NULL, "127.0.0.1");
    sl_group_t *g = group_new(&t, SL_GROUP_COLLECT, &st);
    xs[0] = xfer_new(&t, "GET", "/bytes/1000");
    xs[1] = xfer_new(&t, "GET", "http://127.0.0.1:1/"); /* refused, at once */
    xs[2] = xfer_new(&t, "GET", "/delay/300");
    xs[3] = xfer_new(&t, "GET", "/status/404"); /* an answer: not a failure */
    xs[4] = xfer_new(&t, "GET", "/bytes/70000");
    for (int i = 0; i < 5; i++)
        group_take(g, xs[i]);
    ck_assert_uint_eq(sl_group_size(g), 5);
    ck_assert_ptr_eq(sl_group_req(g, 1), xs[1]->req);
    ck_assert_ptr_null(sl_group_child(g, 1));
    group_start_wait(&t, g, &st, 10000);

    /* Nothing was cancelled: every member ran to its own end. */
    assert_ok(xs[0], 200);
    assert_err(xs[1], SL_ECONNREFUSED);
    assert_ok(xs[2], 200);
    assert_ok(xs[3], 404);
    assert_ok(xs[4], 200);
    ck_assert_uint_eq(xs[4]->nbytes, 70000);
    /* The first failure is the group's; its callback came after every member's. */
    ck_assert_int_eq(st.err, SL_ECONNREFUSED);
    ck_assert_int_eq(sl_group_cause(g), 1);
    ck_assert_ptr_nonnull(strstr(sl_group_errdetail(g), "127.0.0.1:1"));
    for (int i = 0; i < 5; i++)
        ck_assert_uint_gt(st.order, xs[i]->order);
    sl_group_counts(g, &running, &ok, &failed);
    ck_assert_uint_eq(running, 0);
    ck_assert_uint_eq(ok, 4);
    ck_assert_uint_eq(failed, 1);
    /* Ended: nothing more can join. */
    struct xfer *late = xfer_new(&t, "GET", "/bytes/1");
    ck_assert_int_eq(sl_group_add(g, late->req), SL_EINVAL);
    group_release(g, xs, 5);

    /* All succeed: 0; an empty group ends at once with 0. */
    g = group_new(&t, SL_GROUP_COLLECT, &st);
    for (int i = 0; i < 3; i++) {
        xs[i] = xfer_new(&t, "GET", "/bytes/10");
        group_take(g, xs[i]);
    }
    group_start_wait(&t, g, &st, 10000);
    ck_assert_int_eq(st.err, 0);
    ck_assert_int_eq(sl_group_cause(g), -1);
    group_release(g, xs, 3);
    g = group_new(&t, SL_GROUP_FAIL_FAST, &st);
    group_start_wait(&t, g, &st, 1000);
    ck_assert_int_eq(st.err, 0);
    sl_group_free(g);
    ctx_finish(&t);
}
END_TEST

START_TEST(group_fail_fast_cancels_siblings)
{
    struct ctx t;
    struct xfer *xs[4];
    struct gstate st;

    ctx_init(&t, NULL, "127.0.0.1");
    sl_group_t *g = group_new(&t, SL_GROUP_FAIL_FAST, &st);
    xs[0] = xfer_new(&t, "GET", "/delay/5000");
    xs[1] = xfer_new(&t, "GET", "/stall-body");
    xs[2] = xfer_new(&t, "GET", "/stall-head");
    xs[3] = xfer_new(&t, "GET", "/delay/5000");
    /* The failure: a read timeout on the third, after 150 ms of silence. */
    sl_timeouts_t to = {.read_ms = 150};
    sl_req_timeouts(xs[2]->req, &to);
    for (int i = 0; i < 4; i++)
        group_take(g, xs[i]);
    uint64_t t0 = mono_ms();
    group_start_wait(&t, g, &st, 4000);
    ck_assert_uint_lt(mono_ms() - t0, 2000);
    assert_fail(xs[2], SL_ETIMEDOUT_READ);
    ck_assert_int_eq(st.err, SL_ETIMEDOUT_READ);
    ck_assert_int_eq(sl_group_cause(g), 2);
    for (int i = 0; i < 4; i++) {
        if (i == 2)
            continue;
        assert_fail(xs[i], SL_ECANCELED);
        ck_assert_ptr_nonnull(strstr(xs[i]->detail, "group"));
        ck_assert_uint_gt(st.order, xs[i]->order);
    }
    /* A cancelling group takes no new members. */
    group_release(g, xs, 4);

    /* Retries happen inside a member: only the final outcome counts. */
    g = group_new(&t, SL_GROUP_FAIL_FAST, &st);
    sl_retry_t r = {.max = 3, .delay_ms = 10};
    xs[0] = xfer_new(&t, "GET", "/flaky?key=g1&fail=2");
    sl_req_retry(xs[0]->req, &r);
    xs[1] = xfer_new(&t, "GET", "/delay/100");
    group_take(g, xs[0]);
    group_take(g, xs[1]);
    group_start_wait(&t, g, &st, 10000);
    ck_assert_int_eq(st.err, 0);
    assert_ok(xs[0], 200);
    ck_assert_uint_eq(xs[0]->res.retries, 2);
    assert_ok(xs[1], 200);
    group_release(g, xs, 2);
    ctx_finish(&t);
}
END_TEST

START_TEST(group_nested_cancel_and_deadline)
{
    struct ctx t;
    struct xfer *xs[6];
    struct gstate top, child, grandchild;

    ctx_init(&t, NULL, "127.0.0.1");

    /* A failure deep down travels up: the child (collect) ends with it, and
     * the fail-fast parent cancels the child's sibling. */
    sl_group_t *g = group_new(&t, SL_GROUP_FAIL_FAST, &top);
    sl_group_t *c = group_new(&t, SL_GROUP_COLLECT, &child);
    ck_assert_int_eq(sl_group_on_done(c, on_group_done), 0);
    xs[0] = xfer_new(&t, "GET", "http://127.0.0.1:1/");
    xs[1] = xfer_new(&t, "GET", "/delay/200");
    xs[2] = xfer_new(&t, "GET", "/delay/5000");
    group_take(c, xs[0]);
    group_take(c, xs[1]);
    ck_assert_int_eq(sl_group_add_group(g, c), 0);
    group_take(g, xs[2]);
    ck_assert_int_eq(sl_group_add_group(c, g), SL_EINVAL); /* a cycle */
    ck_assert_int_eq(sl_group_add_group(g, c), SL_EINVAL); /* already a member */
    ck_assert_int_eq(sl_group_start(c, on_group_done), SL_EINVAL); /* starts with its parent */
    group_start_wait(&t, g, &top, 4000);
    /* The collect child waited for its slow member, which was not cancelled
     * by the refusal next to it; the parent's other member was. */
    assert_fail(xs[0], SL_ECONNREFUSED);
    assert_ok(xs[1], 200);
    assert_fail(xs[2], SL_ECANCELED);
    ck_assert_int_eq(child.dones, 1);
    ck_assert_int_eq(child.err, SL_ECONNREFUSED);
    ck_assert_int_eq(top.err, SL_ECONNREFUSED);
    ck_assert_uint_lt(child.order, top.order);
    ck_assert_ptr_eq(sl_group_child(g, 0), c);
    ck_assert_int_eq(sl_group_cause(g), 0);
    sl_group_free(g); /* frees the child and every request */
    for (int i = 0; i < 3; i++)
        xs[i]->req = NULL;

    /* sl_group_cancel() reaches every level; members end with SL_ECANCELED. */
    g = group_new(&t, SL_GROUP_COLLECT, &top);
    c = group_new(&t, SL_GROUP_COLLECT, &child);
    sl_group_on_done(c, on_group_done);
    sl_group_t *gc = group_new(&t, SL_GROUP_COLLECT, &grandchild);
    sl_group_on_done(gc, on_group_done);
    xs[0] = xfer_new(&t, "GET", "/delay/5000");
    xs[1] = xfer_new(&t, "GET", "/stall-body");
    xs[2] = xfer_new(&t, "GET", "/delay/5000");
    group_take(gc, xs[0]);
    ck_assert_int_eq(sl_group_add_group(c, gc), 0);
    group_take(c, xs[1]);
    ck_assert_int_eq(sl_group_add_group(g, c), 0);
    group_take(g, xs[2]);
    ck_assert_int_eq(sl_group_start(g, on_group_done), 0);
    loop_sleep(&t, 100);
    ck_assert_int_eq(top.dones, 0);
    g_in_api++;
    sl_group_cancel(g);
    g_in_api--;
    ck_assert_int_eq(top.dones, 0); /* reported later, never inside the call */
    ck_assert(run_until(&t, gstate_done, &top, 2000));
    for (int i = 0; i < 3; i++)
        assert_err(xs[i], SL_ECANCELED);
    ck_assert_int_eq(top.err, SL_ECANCELED);
    ck_assert_int_eq(child.err, SL_ECANCELED);
    ck_assert_int_eq(grandchild.err, SL_ECANCELED);
    ck_assert_uint_lt(grandchild.order, child.order);
    ck_assert_uint_lt(child.order, top.order);
    group_release(g, xs, 3);

    /* A deadline bounds every member, nested ones too; those that finished
     * in time keep their success. */
    g = group_new(&t, SL_GROUP_COLLECT, &top);
    c = group_new(&t, SL_GROUP_FAIL_FAST, &child);
    sl_group_on_done(c, on_group_done);
    xs[0] = xfer_new(&t, "GET", "/bytes/100");
    xs[1] = xfer_new(&t, "GET", "/delay/5000");
    xs[2] = xfer_new(&t, "GET", "/stall-body");
    group_take(g, xs[0]);
    group_take(c, xs[1]);
    group_take(c, xs[2]);
    sl_group_add_group(g, c);
    sl_group_deadline(g, 300);
    uint64_t t0 = mono_ms();
    group_start_wait(&t, g, &top, 3000);
    uint64_t ms = mono_ms() - t0;
    ck_assert_msg(ms >= 290 && ms < 1000, "a 300 ms group deadline ended it after %llu ms",
                  (unsigned long long)ms);
    assert_ok(xs[0], 200);
    assert_fail(xs[1], SL_ETIMEDOUT_GROUP);
    assert_fail(xs[2], SL_ETIMEDOUT_GROUP);
    ck_assert_int_eq(top.err, SL_ETIMEDOUT_GROUP);
    ck_assert_int_eq(child.err, SL_ETIMEDOUT_GROUP);
    group_release(g, xs, 3);
    ctx_finish(&t);
}
END_TEST

START_TEST(group_membership_and_freeing)
{
    struct ctx t;
    struct xfer *xs[4];
    struct gstate st, st2;

    ctx_init(&t, NULL, "127.0.0.1");
    /* A member freed on its own leaves the group, counted as cancelled;
     * members may join a running group; the callback may free the group. */
    sl_group_t *g = group_new(&t, SL_GROUP_COLLECT, &st);
    xs[0] = xfer_new(&t, "GET", "/delay/5000");
    xs[1] = xfer_new(&t, "GET", "/bytes/10");
    group_take(g, xs[0]);
    group_take(g, xs[1]);
    sl_group_hold(g, true);
    ck_assert_int_eq(sl_group_start(g, on_group_done), 0);
    loop_sleep(&t, 100);
    ck_assert_int_eq(st.dones, 0);
    sl_req_free(xs[0]->req); /* the user's own free: it leaves the group */
    xs[0]->req = NULL;
    ck_assert_ptr_null(sl_group_req(g, 0));
    xs[2] = xfer_new(&t, "GET", "/bytes/20");
    xs[3] = xfer_new(&t, "GET", "/bytes/30");
    xfer_start(xs[3]); /* already running when it joins */
    group_take(g, xs[2]);
    group_take(g, xs[3]);
    loop_sleep(&t, 200);
    ck_assert_int_eq(st.dones, 0); /* held open */
    st.free_in_cb = true;
    sl_group_hold(g, false);
    ck_assert(run_until(&t, gstate_done, &st, 5000));
    ck_assert_int_eq(st.err, SL_ECANCELED); /* the member freed while running */
    ck_assert_int_eq(xs[0]->dones, 0);
    assert_ok(xs[1], 200);
    assert_ok(xs[2], 200);
    assert_ok(xs[3], 200);
    for (int i = 1; i < 4; i++)
        xs[i]->req = NULL; /* freed with the group, in its callback */

    /* Freeing a running group: no callback for it or its members. */
    g = group_new(&t, SL_GROUP_FAIL_FAST, &st);
    sl_group_t *c = group_new(&t, SL_GROUP_COLLECT, &st2);
    xs[0] = xfer_new(&t, "GET", "/delay/5000");
    xs[1] = xfer_new(&t, "GET", "/delay/5000");
    group_take(g, xs[0]);
    group_take(c, xs[1]);
    sl_group_add_group(g, c);
    ck_assert_int_eq(sl_group_start(g, on_group_done), 0);
    loop_sleep(&t, 100);
    group_release(g, xs, 2);
    loop_sleep(&t, 100);
    ck_assert_int_eq(xs[0]->dones, 0);
    ck_assert_int_eq(xs[1]->dones, 0);
    ck_assert_int_eq(st.dones, 0);
    ck_assert_int_eq(st2.dones, 0);

    /* A member's own callback may free the member: the group still counts
     * it with its real outcome. */
    g = group_new(&t, SL_GROUP_COLLECT, &st);
    xs[0] = xfer_new(&t, "GET", "/bytes/10");
    xs[0]->done_hook = free_own_req;
    group_take(g, xs[0]);
    group_start_wait(&t, g, &st, 5000);
    ck_assert_int_eq(st.err, 0);
    size_t ok = 0;
    sl_group_counts(g, NULL, &ok, NULL);
    ck_assert_uint_eq(ok, 1);
    sl_group_free(g);
    ctx_finish(&t);
}
END_TEST

/* ---- retries on the loop's clock ------------------------------------------------------- */

struct fakeclock {
    uint64_t ns;
};

static uint64_t fake_now(void *arg)
{
    return ((struct fakeclock *)arg)->ns;
}

struct needle {
    struct xfer *x;
    char text[64];
};

static bool info_has(void *arg)
{
    struct needle *n = arg;
    return n->x->dones > 0 || strstr(n->x->info, n->text) != NULL;
}

/* The backoff runs on the loop's clock: with a fake one, every wait is
 * exactly what the trace announced, never shorter, and within the
 * full-jitter bound of its attempt. */
START_TEST(retry_backoff_sequence_on_fake_clock)
{
    struct ctx t;
    struct fakeclock fc;
    struct needle n;
    sl_retry_t r = {.max = 5, .delay_ms = 100, .max_delay_ms = 300};
    const uint64_t bound[5] = {100, 200, 300, 300, 300};
    uint64_t total = 0;

    ctx_init(&t, NULL, "127.0.0.1");
    sl_loop_update_time(&t.loop);
    fc.ns = sl_loop_now_ns(&t.loop) + 1000000;
    sl_loop_set_clock(&t.loop, fake_now, &fc);
    struct xfer *x = xfer_new(&t, "GET", "http://127.0.0.1:1/"); /* refused at once */
    sl_req_retry(x->req, &r);
    xfer_start(x);
    n.x = x;
    for (unsigned k = 1; k <= 5; k++) {
        unsigned long long wait = 0;
        snprintf(n.text, sizeof(n.text), "Retry %u of 5 in ", k);
        ck_assert_msg(run_until(&t, info_has, &n, 3000), "no '%s' line", n.text);
        ck_assert_int_eq(x->dones, 0);
        ck_assert_int_eq(sscanf(strstr(x->info, n.text) + strlen(n.text), "%llu", &wait), 1);
        ck_assert_msg(wait <= bound[k - 1], "retry %u waits %llu ms, bound %llu", k, wait,
                      (unsigned long long)bound[k - 1]);
        total += wait;
        if (wait > 0) {
            /* One millisecond short: nothing happens, however long we wait. */
            char next[64];
            snprintf(next, sizeof(next), "Retry %u of 5 in ", k + 1);
            fc.ns += (wait - 1) * 1000000;
            for (int i = 0; i < 20; i++)
                sl_loop_run_once(&t.loop, 5);
            ck_assert_msg(strstr(x->info, next) == NULL && x->dones == 0,
                          "attempt %u started before its %llu ms wait", k + 1, wait);
            fc.ns += 1000000;
        }
    }
    /* The fifth wait elapses; the sixth attempt fails and is the last. */
    wait_one(x, 3000);
    assert_fail(x, SL_ECONNREFUSED);
    ck_assert_uint_eq(x->res.retries, 5);
    /* The whole transfer took exactly the waits on the loop's clock. */
    ck_assert_uint_ge(x->res.time_total_us / 1000, total);
    ck_assert_uint_le(x->res.time_total_us / 1000, total + 5);
    sl_loop_set_clock(&t.loop, NULL, NULL);
    ctx_finish(&t);
}
END_TEST

/* ---- resuming broken downloads ------------------------------------------------------- */

static struct xfer *pattern_fetch_retry(struct ctx *t, const char *target, const sl_retry_t *r)
{
    struct xfer *x = xfer_new(t, "GET", target);
    x->check_pattern = true;
    sl_req_retry(x->req, r);
    run_one(x, 20000);
    return x;
}

START_TEST(resume_after_reset_mid_body)
{
    struct ctx t;
    struct xfer *x;
    sl_retry_t r = {.max = 3, .delay_ms = 10, .max_delay_ms = 50};

    ctx_init(&t, NULL, "127.0.0.1");
    /* 4 MiB, cut after 1 MiB: the second attempt asks for the rest, and the
     * body the user sees is the whole pattern, every byte once, in order. */
    x = pattern_fetch_retry(&t, "/bytes/4194304?reset-at=1048576&key=r1", &r);
    assert_ok(x, 200);
    assert_pattern_body(x, 4194304);
    ck_assert_uint_eq(x->res.retries, 1);
    ck_assert_uint_eq(x->res.resumes, 1);
    ck_assert_int_eq(x->heads, 1);
    ck_assert_ptr_nonnull(strstr(x->head_out, "Range: bytes=1048576-\r\n"));
    ck_assert_ptr_nonnull(strstr(x->head_out, "If-Range: \"b-4194304\"\r\n"));

    /* Cut twice (two keys' worth of cuts through times=2), chunked framing. */
    x = pattern_fetch_retry(&t, "/bytes/3000000?reset-at=1000000&key=r2&times=2&chunked=1", &r);
    assert_ok(x, 200);
    assert_pattern_body(x, 3000000);
    ck_assert_uint_ge(x->res.resumes, 1);

    /* The server's copy changed (If-Range does not match: 200 again): the
     * transfer fails with SL_ERESUME, not a spliced file. */
    x = pattern_fetch_retry(&t, "/bytes/2000000?reset-at=500000&key=r3&etag-change=1", &r);
    assert_fail(x, SL_ERESUME);
    ck_assert_uint_eq(x->nbytes, 500000);
    ck_assert_ptr_nonnull(strstr(x->detail, "500000"));

    /* Without retries, a cut is a cut. */
    x = xfer_new(&t, "GET", "/bytes/2000000?reset-at=500000&key=r4");
    run_one(x, 20000);
    ck_assert_msg(x->err == SL_ECONNRESET || x->err == SL_ETRUNCATED, "ended with %s",
                  sl_err_name(x->err));
    ck_assert_uint_eq(x->nbytes, 500000);
    ck_assert_uint_eq(x->res.resumes, 0);
    ctx_finish(&t);
}
END_TEST

/* ---- adaptive back-off ----------------------------------------------------------------- */

static void overload_stats(struct ctx *t, unsigned *peak, unsigned *rejected, unsigned *served)
{
    struct xfer *x = fetch_text(t, "GET", "/overload/stats", 256);
    assert_ok(x, 200);
    ck_assert_msg(sscanf((char *)x->body, "peak=%u rejected=%u served=%u", peak, rejected,
                         served) == 3,
                  "bad stats: %s", (char *)x->body);
}

/* 60 requests, 16 connections allowed, a server that takes 4 at a time and
 * sends 503 to the rest. With back-off the client finds the server's pace
 * and gets far fewer refusals than without. */
static unsigned overload_run(bool adaptive, unsigned *peak_out, bool *saw_backoff)
{
    struct ctx t;
    struct xfer *xs[60];
    sl_client_opts_t o;
    sl_retry_t r = {.max = 60, .delay_ms = 20, .max_delay_ms = 200};
    unsigned peak, rejected, served;

    sl_client_opts_init(&o);
    o.max_connections_per_host = 16;
    o.adaptive = adaptive;
    ctx_init(&t, &o, "127.0.0.1");
    for (int i = 0; i < 60; i++) {
        xs[i] = xfer_new(&t, "GET", "/overload?max=4&delay=60");
        sl_req_retry(xs[i]->req, &r);
    }
    for (int i = 0; i < 60; i++)
        xfer_start(xs[i]);
    wait_all(&t, xs, 60, 30000);
    *saw_backoff = false;
    for (int i = 0; i < 60; i++) {
        assert_ok(xs[i], 200);
        if (strstr(xs[i]->info, "Backing off") != NULL)
            *saw_backoff = true;
    }
    overload_stats(&t, &peak, &rejected, &served);
    ck_assert_uint_eq(served, 60);
    ck_assert_uint_le(peak, 4);
    *peak_out = peak;
    ctx_finish(&t);
    return rejected;
}

START_TEST(adaptive_backoff_on_503)
{
    unsigned peak_plain, peak_adaptive;
    bool backoff_plain, backoff_adaptive;
    unsigned plain = overload_run(false, &peak_plain, &backoff_plain);
    unsigned adaptive = overload_run(true, &peak_adaptive, &backoff_adaptive);

    ck_assert(!backoff_plain);
    ck_assert(backoff_adaptive);
    ck_assert_msg(adaptive * 2 < plain,
                  "503s with back-off: %u, without: %u (expected under half)", adaptive, plain);
    /* Both still used the server's full capacity at some point. */
    ck_assert_uint_eq(peak_plain, 4);
    ck_assert_uint_eq(peak_adaptive, 4);
}
END_TEST

/* One connection and still 503: with no rate limit configured, the back-off
 * imposes one from the pace it saw, and the requests space out. */
START_TEST(adaptive_backoff_imposes_a_rate)
{
    struct ctx t;
    struct xfer *xs[6];
    sl_client_opts_t o;
    sl_retry_t r = {.max = 10, .delay_ms = 1, .max_delay_ms = 5};
    bool rate_line = false;

    sl_client_opts_init(&o);
    o.max_connections_per_host = 1;
    o.adaptive = true;
    ctx_init(&t, &o, "127.0.0.1");
    for (int i = 0; i < 6; i++) {
        xs[i] = xfer_new(&t, "GET", "/flaky?key=a1&fail=4");
        sl_req_retry(xs[i]->req, &r);
    }
    for (int i = 0; i < 6; i++)
        xfer_start(xs[i]);
    wait_all(&t, xs, 6, 20000);
    for (int i = 0; i < 6; i++) {
        assert_ok(xs[i], 200);
        if (strstr(xs[i]->info, "requests/s") != NULL)
            rate_line = true;
    }
    ck_assert_msg(rate_line, "no rate was imposed; trace of the first: %s", xs[0]->info);
    ctx_finish(&t);
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("integ-client");
    TCase *tc;

    tc = tcase_create("basic");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, get_bytes_sizes);
    tcase_add_test(tc, keepalive_sequential_reuse);
    tcase_add_test(tc, stale_connection_retry);
    tcase_add_test(tc, framing_chunked_close_head_nobody_interim);
    tcase_add_test(tc, failures_report_their_codes);
    tcase_add_test(tc, drip_complete_and_correct);
    suite_add_tcase(s, tc);

    tc = tcase_create("timeouts");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, timeout_first_byte);
    tcase_add_test(tc, timeout_read);
    tcase_add_test(tc, timeout_total);
    tcase_add_test(tc, timeout_queue);
    tcase_add_test(tc, timeout_connect);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, cancel_queued);
    tcase_add_test(tc, cancel_resolving);
    tcase_add_test(tc, cancel_connecting);
    tcase_add_test(tc, cancel_waiting_for_head);
    tcase_add_test(tc, cancel_mid_body);
    tcase_add_test(tc, free_inside_callbacks);
    tcase_add_test(tc, client_free_cancels_everything);
    suite_add_tcase(s, tc);

    tc = tcase_create("redirects");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, redirect_chain_and_limits);
    tcase_add_test(tc, redirect_methods_and_bodies);
    tcase_add_test(tc, redirect_authorization_by_origin);
    suite_add_tcase(s, tc);

    tc = tcase_create("requests");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, request_head_defaults_and_order);
    tcase_add_test(tc, request_header_validation);
    tcase_add_test(tc, request_bodies);
    tcase_add_test(tc, request_expect_continue);
    tcase_add_test(tc, trace_interim_heads);
    suite_add_tcase(s, tc);

    tc = tcase_create("decoding");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, decode_gzip_deflate);
    tcase_add_test(tc, decode_bomb_and_buffer_limits);
    tcase_add_test(tc, pause_resume_from_on_data);
    suite_add_tcase(s, tc);

    tc = tcase_create("connect");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, connect_refused);
    tcase_add_test(tc, dns_server_unreachable);
    tcase_add_test(tc, dns_nxdomain);
    tcase_add_test(tc, bad_urls);
    tcase_add_test(tc, ipv6_literal);
    tcase_add_test(tc, happy_eyeballs_localhost);
    tcase_add_test(tc, happy_eyeballs_v6_refused);
    tcase_add_test(tc, happy_eyeballs_v6_blackholed);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_per_host_limit);
    tcase_add_test(tc, pool_global_limit_two_origins);
    tcase_add_test(tc, pool_global_limit_two_faultservers);
    tcase_add_test(tc, pool_idle_expiry);
    tcase_add_test(tc, pool_server_closed_idle);
    tcase_add_test(tc, pool_100_concurrent);
    tcase_add_test(tc, pool_drain_pools_nothing);
    tcase_add_test(tc, pool_drain_serves_what_was_started);
    tcase_add_test(tc, pool_drain_leaves_nothing_open);
    suite_add_tcase(s, tc);

    tc = tcase_create("flow");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, retry_status_backoff_and_retry_after);
    tcase_add_test(tc, retry_connection_errors);
    tcase_add_test(tc, rate_limit_global_burst_and_rate);
    tcase_add_test(tc, rate_limit_per_host);
    tcase_add_test(tc, retry_backoff_sequence_on_fake_clock);
    tcase_add_test(tc, resume_after_reset_mid_body);
    tcase_add_test(tc, adaptive_backoff_on_503);
    tcase_add_test(tc, adaptive_backoff_imposes_a_rate);
    suite_add_tcase(s, tc);

    tc = tcase_create("groups");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, group_collect_all);
    tcase_add_test(tc, group_fail_fast_cancels_siblings);
    tcase_add_test(tc, group_nested_cancel_and_deadline);
    tcase_add_test(tc, group_membership_and_freeing);
    suite_add_tcase(s, tc);

    tc = tcase_create("nginx");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, nginx_files_reuse_gzip);
    suite_add_tcase(s, tc);

    tc = tcase_create("nginx-1gib");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, nginx_1gib_streamed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
