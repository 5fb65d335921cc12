/*
 * client.c -- the public HTTP API: clients, requests and their lifecycle.
 *
 * A request moves through one state machine (req_set_state is the only
 * writer): NEW -> QUEUED -> CONNECT -> SEND -> HEAD -> BODY -> DONE, going
 * back to QUEUED for each redirect hop or stale-connection retry. Two wheel
 * timers guard it: `total_timer` for the whole transfer, and `phase_timer`
 * for the phase it is in (queue wait, connect, first byte, read idle); each
 * reports its own SL_ETIMEDOUT_* code.
 *
 * Nothing user-visible happens inside a user's call: sl_req_start() queues
 * the start on the request's deferred callback, and every ending (success,
 * failure, cancel) queues on_done the same way. sl_req_free() detaches the
 * request from everything at once but releases its memory from the deferred
 * callback too, so code still on the stack (a parser, a connection
 * handler) never touches freed memory; such code checks req_gone() after
 * every user callback.
 */
#include "http-int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DECODE_CHUNK (32 * 1024)

static const char *const req_state_names[] = {"NEW",  "QUEUED", "CONNECT", "SEND",
                                              "HEAD", "BODY",   "DONE"};

static void req_set_state(sl_req_t *req, enum req_state s)
{
    if (sl__trace_states())
        fprintf(stderr, "sluice: req %p %s -> %s\n", (void *)req, req_state_names[req->state],
                req_state_names[s]);
    req->state = s;
}

bool sl__trace_states(void)
{
    static int on = -1;
    if (on < 0)
        on = getenv("SLUICE_TRACE") != NULL && getenv("SLUICE_TRACE")[0] != '\0';
    return on == 1;
}

static bool req_gone(const sl_req_t *req)
{
    return req->freed || req->state == REQ_DONE;
}

static uint64_t req_elapsed_us(const sl_req_t *req)
{
    return (sl_loop_now_ns(req->client->loop) - req->t0_ns) / 1000;
}

/* ---- client ----------------------------------------------------------------- */

void sl_client_opts_init(sl_client_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->max_connections = 100;
    o->max_connections_per_host = 0;
    o->idle_timeout_ms = 15000;
    o->retry_stale = true;
    o->resolver = SL_RESOLVER_ARES;
    o->dns_cache_max_ttl_s = 300;
    o->dns_cache_min_ttl_s = 0;
    o->dns_negative_ttl_s = 5;
    o->max_header_bytes = 64 * 1024;
    o->max_header_fields = 100;
}

static void client_reap_cb(sl_defer_t *d);
static void client_drain_cb(sl_defer_t *d);
static void rate_timer_cb(sl_timer_t *t);

int sl_client_new(sl_loop_t *loop, const sl_client_opts_t *opts, sl_client_t **out)
{
    return sl_client_new_ex(loop, opts, out, NULL, 0);
}

int sl_client_new_ex(sl_loop_t *loop, const sl_client_opts_t *opts, sl_client_t **out, char *errbuf,
                     size_t errlen)
{
    sl_client_t *c = calloc(1, sizeof(*c));
    struct sl__dns_opts dopts;
    char ua[64];
    int rc = SL_ENOMEM;

    *out = NULL;
    if (errlen > 0)
        errbuf[0] = '\0';
    if (c == NULL)
        return SL_ENOMEM;
    c->loop = loop;
    if (opts != NULL)
        c->opts = *opts;
    else
        sl_client_opts_init(&c->opts);
    if (c->opts.max_connections == 0)
        c->opts.max_connections = 100;
    snprintf(ua, sizeof(ua), "sluice/%s", SL_VERSION_STRING);
    c->user_agent = strdup(c->opts.user_agent != NULL ? c->opts.user_agent : ua);
    if (c->user_agent == NULL)
        goto fail;
    c->opts.user_agent = c->user_agent;
    if (c->opts.dns_servers != NULL) {
        c->dns_servers = strdup(c->opts.dns_servers);
        if (c->dns_servers == NULL)
            goto fail;
        c->opts.dns_servers = c->dns_servers;
    }
    {
        const char **src[SL__ARRAY_SIZE(c->tls_strings)] = {
            &c->opts.tls_cafile, &c->opts.tls_capath,  &c->opts.tls_cert,
            &c->opts.tls_key,    &c->opts.tls_ciphers, &c->opts.tls13_ciphers};
        for (size_t i = 0; i < SL__ARRAY_SIZE(src); i++) {
            if (*src[i] == NULL)
                continue;
            c->tls_strings[i] = strdup(*src[i]);
            if (c->tls_strings[i] == NULL)
                goto fail;
            *src[i] = c->tls_strings[i];
        }
    }
    /* The TLS context waits for the first https request (HTTP-only programs
     * never load a trust store), but a cipher list OpenSSL cannot use is a
     * mistake in the program or its command line: say so now. */
    rc = sl__tls_ciphers_check(c->opts.tls_ciphers, c->opts.tls13_ciphers, errbuf, errlen);
    if (rc < 0)
        goto fail;
    rc = SL_ENOMEM;
    c->limits.max_header_bytes = c->opts.max_header_bytes ? c->opts.max_header_bytes : 65536;
    c->limits.max_header_fields = c->opts.max_header_fields ? c->opts.max_header_fields : 100;
    sl__queue_init(&c->conns);
    sl__queue_init(&c->waiting);
    sl__queue_init(&c->requests);
    sl__pool_init(c);
    sl_defer_init(loop, &c->reaper, client_reap_cb);
    sl_defer_init(loop, &c->drain_defer, client_drain_cb);
    sl__queue_init(&c->rate_waiting);
    sl_timer_init(loop, &c->rate_timer, rate_timer_cb);
    sl__bucket_init(&c->bucket, c->opts.rate_per_s, c->opts.rate_burst > 0 ? c->opts.rate_burst : 1,
                    sl_loop_now_ns(loop));
    c->rng = sl_loop_now_ns(loop) ^ (uint64_t)(uintptr_t)c;

    sl__dns_opts_init(&dopts);
    dopts.kind = c->opts.resolver == SL_RESOLVER_SYSTEM ? SL__RESOLVER_SYSTEM : SL__RESOLVER_ARES;
    dopts.cache_max_ttl_s = c->opts.dns_cache_max_ttl_s;
    dopts.cache_min_ttl_s = c->opts.dns_cache_min_ttl_s;
    dopts.negative_ttl_s = c->opts.dns_negative_ttl_s;
    dopts.servers = c->dns_servers;
    rc = sl__dns_new(loop, &dopts, &c->dns);
    if (rc < 0)
        goto fail;
    *out = c;
    return 0;

fail:
    free(c->user_agent);
    free(c->dns_servers);
    for (size_t i = 0; i < SL__ARRAY_SIZE(c->tls_strings); i++)
        free(c->tls_strings[i]);
    free(c);
    return rc;
}

int sl_tls_ciphers_check(const char *list, int version, char *errbuf, size_t errlen)
{
    if (errlen > 0)
        errbuf[0] = '\0';
    if (version != 12 && version != 13)
        return SL_EINVAL;
    return sl__tls_ciphers_check(version == 12 ? list : NULL, version == 13 ? list : NULL, errbuf,
                                 errlen);
}

static void client_reap_cb(sl_defer_t *d)
{
    sl_client_t *c = sl__container_of(d, sl_client_t, reaper);

    if (c->nreqs > 0)
        return; /* the last sl_req_free() queues us again */
    sl__pool_free(c);
    sl__dns_free(c->dns);
    sl__tls_ctx_free(c->tls);
    free(c->rscratch);
    free(c->url_last);
    sl__url_free(&c->url_cached);
    free(c->user_agent);
    free(c->dns_servers);
    for (size_t i = 0; i < SL__ARRAY_SIZE(c->tls_strings); i++)
        free(c->tls_strings[i]);
    free(c);
}

static void req_finish(sl_req_t *req, int err);

/* The idle connections close from a deferred callback, after the starts
 * already queued (transfers begun just before the drain) have taken theirs:
 * closing them at once made each of those open a new connection. */
static void client_drain_cb(sl_defer_t *d)
{
    sl__pool_close_idle(sl__container_of(d, sl_client_t, drain_defer));
}

void sl_client_drain(sl_client_t *c)
{
    if (c->draining || c->closing)
        return;
    c->draining = true;
    sl_defer_start(&c->drain_defer);
}

void sl_client_free(sl_client_t *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    sl_defer_stop(&c->drain_defer);
    while (!sl__queue_empty(&c->requests)) {
        sl_req_t *req = sl__queue_data(c->requests.next, sl_req_t, all_node);
        sl__req_errmsg(req, "the client was closed");
        req_finish(req, SL_ECANCELED);
    }
    sl__pool_free(c);
    sl_timer_stop(&c->rate_timer);
    sl_defer_start(&c->reaper);
}

/* ---- requests: creation and options ---------------------------------------------- */

static void req_defer_cb(sl_defer_t *d);
static void total_timer_cb(sl_timer_t *t);
static void phase_timer_cb(sl_timer_t *t);
static void retry_timer_cb(sl_timer_t *t);

/* Parse `url` for a new request. A client that fetches one URL again and
 * again (polling, keep-alive benchmarks) copies the parsed form instead:
 * a copy is one allocation and a memcpy, a parse ~1.5k instructions. */
static int req_parse_url(sl_client_t *c, struct sl__url *u, const char *url, const char **why)
{
    int rc;

    if (c->url_last != NULL && strcmp(c->url_last, url) == 0) {
        if (c->url_cached.buf != NULL)
            return sl__url_copy(u, &c->url_cached);
        rc = sl__url_parse_ex(u, url, why);
        if (rc == 0 && sl__url_copy(&c->url_cached, u) < 0)
            memset(&c->url_cached, 0, sizeof(c->url_cached)); /* no cache, no harm */
        return rc;
    }
    rc = sl__url_parse_ex(u, url, why);
    if (rc == 0) {
        free(c->url_last);
        c->url_last = strdup(url); /* NULL if out of memory: no cache */
        sl__url_free(&c->url_cached);
        memset(&c->url_cached, 0, sizeof(c->url_cached));
    }
    return rc;
}

int sl_req_new(sl_client_t *c, const char *method, const char *url, sl_req_t **out,
               const char **why)
{
    sl_req_t *req;
    int rc;

    *out = NULL;
    if (c->closing)
        return SL_ECLOSING;
    if (!sl__http_token(method)) {
        if (why != NULL)
            *why = "the method is not an HTTP token";
        return SL_EINVAL;
    }
    req = calloc(1, sizeof(*req));
    if (req == NULL)
        return SL_ENOMEM;
    rc = req_parse_url(c, &req->url, url, why);
    if (rc < 0) {
        free(req);
        return rc;
    }
    req->method = strdup(method);
    if (req->method == NULL) {
        sl__url_free(&req->url);
        free(req->method);
        free(req->url_string);
        free(req);
        return SL_ENOMEM;
    }
    req->client = c;
    req->state = REQ_NEW;
    req->max_redirects = 0;
    req->expect_min = 1024 * 1024;
    req->result.effective_url = "";
    req->result.remote_ip = "";
    req->result.errmsg = "";
    sl__queue_init(&req->wait_node);
    sl__queue_init(&req->all_node);
    sl_timer_init(c->loop, &req->total_timer, total_timer_cb);
    sl_timer_init(c->loop, &req->phase_timer, phase_timer_cb);
    sl_timer_init(c->loop, &req->retry_timer, retry_timer_cb);
    sl_defer_init(c->loop, &req->defer, req_defer_cb);
    c->nreqs++;
    *out = req;
    return 0;
}

void sl_req_set_data(sl_req_t *req, void *data)
{
    req->data = data;
}

void *sl_req_data(const sl_req_t *req)
{
    return req->data;
}

int sl_req_header(sl_req_t *req, const char *name, const char *value)
{
    struct req_header *h;

    if (req->state != REQ_NEW)
        return SL_EINVAL;
    if (!sl__req_header_valid_name(name) || (value != NULL && !sl__req_header_valid_value(value)))
        return SL_EBAD_HEADER;
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0 ||
        (strcasecmp(name, "Host") == 0 && value == NULL))
        return SL_EBAD_HEADER; /* framing belongs to sluice; a request needs a Host */
    if (req->nheaders == req->cap_headers) {
        size_t cap = req->cap_headers ? req->cap_headers * 2 : 8;
        struct req_header *p = realloc(req->headers, cap * sizeof(*p));
        if (p == NULL)
            return SL_ENOMEM;
        req->headers = p;
        req->cap_headers = cap;
    }
    h = &req->headers[req->nheaders];
    h->name = strdup(name);
    h->value = value != NULL ? strdup(value) : NULL;
    if (h->name == NULL || (value != NULL && h->value == NULL)) {
        free(h->name);
        free(h->value);
        return SL_ENOMEM;
    }
    req->nheaders++;
    return 0;
}

int sl_req_body(sl_req_t *req, const void *data, size_t len)
{
    char *copy;

    if (req->state != REQ_NEW)
        return SL_EINVAL;
    copy = malloc(len ? len : 1);
    if (copy == NULL)
        return SL_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    free(req->body_owned);
    req->body_owned = copy;
    req->body = copy;
    req->body_len = len;
    req->body_kind = BODY_MEM;
    return 0;
}

int sl_req_body_ref(sl_req_t *req, const void *data, size_t len)
{
    if (req->state != REQ_NEW)
        return SL_EINVAL;
    free(req->body_owned);
    req->body_owned = NULL;
    req->body = data;
    req->body_len = len;
    req->body_kind = BODY_MEM;
    return 0;
}

int sl_req_body_stream(sl_req_t *req, int64_t length, sl_body_cb cb)
{
    if (req->state != REQ_NEW || cb == NULL || length < -1)
        return SL_EINVAL;
    free(req->body_owned);
    req->body_owned = NULL;
    req->body = NULL;
    req->body_kind = BODY_STREAM;
    req->stream_len = length;
    req->body_cb = cb;
    return 0;
}

void sl_req_timeouts(sl_req_t *req, const sl_timeouts_t *t)
{
    req->timeouts = *t;
}

void sl_req_follow(sl_req_t *req, unsigned max, bool allow_downgrade)
{
    req->max_redirects = max;
    req->allow_downgrade = allow_downgrade;
}

void sl_req_decode(sl_req_t *req, bool on, uint64_t max_decoded)
{
    req->decode = on;
    req->max_decoded = max_decoded;
}

void sl_req_buffer(sl_req_t *req, size_t max_bytes)
{
    req->buffer = true;
    req->buffer_max = max_bytes;
}

void sl_req_expect_continue(sl_req_t *req, size_t min_bytes)
{
    req->expect_min = min_bytes;
}

void sl_req_retry(sl_req_t *req, const sl_retry_t *r)
{
    req->retry = *r;
    if (req->retry.delay_ms == 0)
        req->retry.delay_ms = 1000;
    if (req->retry.max_delay_ms == 0)
        req->retry.max_delay_ms = 30000;
}

void sl_req_callbacks(sl_req_t *req, sl_head_cb on_head, sl_data_cb on_data, sl_done_cb on_done)
{
    req->on_head = on_head;
    req->on_data = on_data;
    req->on_done = on_done;
}

void sl_req_trace(sl_req_t *req, sl_trace_cb cb)
{
    req->on_trace = cb;
}

void sl__req_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len)
{
    if (req->on_trace == NULL || req->freed)
        return;
    req->in_callback++;
    req->on_trace(req, kind, data, len);
    req->in_callback--;
}

void sl__req_tracef(sl_req_t *req, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    if (req->on_trace == NULL || req->freed)
        return;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sl__req_trace(req, SL_TRACE_INFO, line, SL__MIN((size_t)n, sizeof(line) - 1));
}

/* Rebuild a response head as text for tracing. */
static void trace_head_in(sl_req_t *req, const struct sl__resp_head *h)
{
    size_t need = 64 + strlen(h->reason), off;
    char *t;

    if (req->on_trace == NULL)
        return;
    for (size_t i = 0; i < h->nheaders; i++)
        need += h->headers[i].name_len + h->headers[i].value_len + 4;
    t = malloc(need);
    if (t == NULL)
        return;
    off = (size_t)snprintf(t, need, "HTTP/%u.%u %d %s\r\n", h->http_major, h->http_minor, h->status,
                           h->reason);
    for (size_t i = 0; i < h->nheaders; i++)
        off += (size_t)snprintf(t + off, need - off, "%s: %s\r\n", h->headers[i].name,
                                h->headers[i].value);
    off += (size_t)snprintf(t + off, need - off, "\r\n");
    sl__req_trace(req, SL_TRACE_HEAD_IN, t, off);
    free(t);
}

/* ---- timers ------------------------------------------------------------------------ */

static void req_phase(sl_req_t *req, uint64_t ms, int err)
{
    req->phase_error = err;
    if (ms > 0)
        sl_timer_start(&req->phase_timer, ms, 0);
    else
        sl_timer_stop(&req->phase_timer);
}

static void total_timer_cb(sl_timer_t *t)
{
    sl_req_t *req = sl__container_of(t, sl_req_t, total_timer);

    sl__req_fail(req, SL_ETIMEDOUT_TOTAL, "the transfer exceeded its total time limit of %llu ms",
                 (unsigned long long)req->timeouts.total_ms);
}

static void phase_timer_cb(sl_timer_t *t)
{
    sl_req_t *req = sl__container_of(t, sl_req_t, phase_timer);
    uint64_t ms = 0;
    const char *what = "";

    switch (req->phase_error) {
    case SL_ETIMEDOUT_QUEUE:
        ms = req->timeouts.queue_ms;
        what = "waiting for a connection slot";
        break;
    case SL_ETIMEDOUT_CONNECT:
        ms = req->timeouts.connect_ms;
        what = "connecting";
        break;
    case SL_ETIMEDOUT_FIRSTBYTE:
        ms = req->timeouts.first_byte_ms;
        what = "waiting for the first response byte";
        break;
    case SL_ETIMEDOUT_READ:
        ms = req->timeouts.read_ms;
        what = "waiting for more response data";
        break;
    case SL_ETIMEDOUT_TLS:
        ms = req->timeouts.tls_ms;
        what = "in the TLS handshake";
        break;
    }
    sl__req_fail(req, req->phase_error, "timed out after %llu ms %s", (unsigned long long)ms, what);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Forget the per-hop response state before a new hop or retry. */
static void req_reset_hop(sl_req_t *req)
{
    req->got_response_byte = false;
    req->redirecting = false;
    req->head_delivered = false;
    free(req->location);
    req->location = NULL;
    if (req->zs_active) {
        inflateEnd(req->zs);
        req->zs_active = false;
    }
    req->result.bytes_wire = 0;
}

static void req_acquire_now(sl_req_t *req);

/* Whether both buckets (global and origin) have a token; takes them if so.
 * `*wait_ns` gets the time until both could. */
static bool rate_take(sl_client_t *c, struct origin *o, uint64_t now, uint64_t *wait_ns)
{
    uint64_t wg = sl__bucket_wait_ns(&c->bucket, now);
    uint64_t wh = o != NULL ? sl__bucket_wait_ns(&o->bucket, now) : 0;

    *wait_ns = SL__MAX(wg, wh);
    if (*wait_ns > 0)
        return false;
    sl__bucket_take(&c->bucket, now);
    if (o != NULL)
        sl__bucket_take(&o->bucket, now);
    return true;
}

static void rate_arm(sl_client_t *c, uint64_t wait_ns)
{
    uint64_t ms = (wait_ns + 999999) / 1000000;
    uint64_t due = sl_loop_now(c->loop) + ms;

    if (!sl_timer_active(&c->rate_timer) || sl_timer_deadline(&c->rate_timer) > due)
        sl_timer_start(&c->rate_timer, ms, 0);
}

/* Serve the requests waiting for tokens, in order. A request whose origin
 * has no token yet does not hold up the others; one that lacks a global
 * token stops the walk (FIFO). */
static void rate_dispatch(sl_client_t *c)
{
    struct sl__queue *q;
    uint64_t now, soonest = UINT64_MAX;

    /* Serving a request can come back here in the same call chain (an idle
     * connection that fails at once: the stale retry re-acquires), and the
     * inner walk may serve the outer walk's `next`: the inner call only
     * asks the outer one to start over. */
    if (c->rate_dispatching) {
        c->rate_redo = true;
        return;
    }
    c->rate_dispatching = true;
again:
    c->rate_redo = false;
    q = c->rate_waiting.next;
    sl_loop_update_time(c->loop);
    now = sl_loop_now_ns(c->loop);
    while (q != &c->rate_waiting) {
        sl_req_t *req = sl__queue_data(q, sl_req_t, wait_node);
        struct sl__queue *next = q->next;
        uint64_t w;

        if (rate_take(c, req->origin, now, &w)) {
            sl__queue_remove(q);
            req->rate_waiting = false;
            req_acquire_now(req);
            if (c->rate_redo)
                goto again;
        } else {
            soonest = SL__MIN(soonest, w);
            if (sl__bucket_wait_ns(&c->bucket, now) > 0)
                break;
        }
        q = next;
    }
    c->rate_dispatching = false;
    if (!sl__queue_empty(&c->rate_waiting))
        rate_arm(c, soonest == UINT64_MAX ? 1000000 : soonest);
}

static void rate_timer_cb(sl_timer_t *t)
{
    sl_client_t *c = sl__container_of(t, sl_client_t, rate_timer);
    rate_dispatch(c);
}

static void req_acquire(sl_req_t *req)
{
    sl_client_t *c = req->client;
    uint64_t wait_ns;

    req_set_state(req, REQ_QUEUED);
    if (c->opts.rate_per_s > 0 || c->opts.host_rate_per_s > 0 || c->opts.adaptive) {
        req->origin = sl__pool_origin(c, &req->url);
        if (req->origin == NULL) {
            sl__req_fail(req, SL_ENOMEM, "out of memory");
            return;
        }
        /* Behind others already waiting, or without a token: wait in line. */
        if (!sl__queue_empty(&c->rate_waiting) ||
            !rate_take(c, req->origin, sl_loop_now_ns(c->loop), &wait_ns)) {
            sl__queue_insert_tail(&c->rate_waiting, &req->wait_node);
            req->rate_waiting = true;
            req_phase(req, req->timeouts.queue_ms, SL_ETIMEDOUT_QUEUE);
            rate_dispatch(c);
            return;
        }
    }
    req_acquire_now(req);
}

static void req_acquire_now(sl_req_t *req)
{
    int rc;

    rc = sl__pool_acquire(req->client, req);
    if (rc < 0) {
        const char *tls_why = req->client->tls_error;
        sl__req_fail(req, rc, "could not get a connection: %s%s%s", sl_strerror(rc),
                     tls_why[0] ? ": " : "", tls_why);
        return;
    }
    if (req->state == REQ_QUEUED && sl__queue_linked(&req->wait_node)) {
        req_phase(req, req->timeouts.queue_ms, SL_ETIMEDOUT_QUEUE);
    } else if (req->state == REQ_QUEUED && req->conn != NULL) {
        req_set_state(req, REQ_CONNECT);
        if (!req->queue_timed) {
            req->result.time_queue_us = req_elapsed_us(req);
            req->queue_timed = true;
        }
        req_phase(req, req->timeouts.connect_ms, SL_ETIMEDOUT_CONNECT);
    }
}

int sl_req_start(sl_req_t *req)
{
    if (req->state != REQ_NEW || req->freed || req->start_pending)
        return SL_EINVAL;
    if (req->client->closing)
        return SL_ECLOSING;
    sl_loop_update_time(req->client->loop);
    req->t0_ns = sl_loop_now_ns(req->client->loop);
    sl__queue_insert_tail(&req->client->requests, &req->all_node);
    if (req->timeouts.total_ms > 0)
        sl_timer_start(&req->total_timer, req->timeouts.total_ms, 0);
    req->start_pending = true;
    sl_defer_start(&req->defer);
    return 0;
}

static void req_destroy(sl_req_t *req)
{
    sl_client_t *c = req->client;

    sl__url_free(&req->url);
    free(req->url_string);
    free(req->method);
    for (size_t i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->headers);
    free(req->body_owned);
    free(req->head_buf);
    free(req->chunk_buf);
    free(req->location);
    free(req->buf);
    free(req->resume_validator);
    free(req->resp); /* one block (copy_head) */
    if (req->zs_active)
        inflateEnd(req->zs);
    free(req->zs);
    free(req->errmsg);
    free(req);
    if (--c->nreqs == 0 && c->closing)
        sl_defer_start(&c->reaper);
}

static void req_defer_cb(sl_defer_t *d)
{
    sl_req_t *req = sl__container_of(d, sl_req_t, defer);

    if (req->freed) {
        req_destroy(req);
        return;
    }
    if (req->start_pending) {
        req->start_pending = false;
        if (req->state == REQ_NEW)
            req_acquire(req);
        return;
    }
    if (req->done_pending) {
        req->done_pending = false;
        if (req->on_done != NULL) {
            req->in_callback++;
            req->on_done(req, req->result.error);
            req->in_callback--;
        }
        /* After the member's own callback (which may have freed it: then
         * it already left its group). */
        if (req->group != NULL)
            sl__group_req_ended(req, req->result.error);
    }
}

/* Let go of what the current attempt holds: its connection (one still
 * connecting stays useful to others; one in the middle of an exchange is in
 * an unknown state and is closed), its place in a queue, its phase timer. */
static void req_release_attempt(sl_req_t *req)
{
    if (req->conn != NULL) {
        struct conn *conn = req->conn;
        bool keep = conn->state == CONN_RESOLVE || conn->state == CONN_CONNECT;
        sl__conn_detach(conn, keep);
    }
    if (sl__queue_linked(&req->wait_node))
        sl__pool_remove_waiting(req);
    req->rate_waiting = false;
    sl_timer_stop(&req->phase_timer);
}

/* End the transfer: release everything it holds and queue on_done. */
static void req_finish(sl_req_t *req, int err)
{
    if (req->state == REQ_DONE)
        return;
    if (req->state == REQ_NEW && !req->start_pending)
        return;
    req->start_pending = false;
    sl_timer_stop(&req->total_timer);
    sl_timer_stop(&req->retry_timer);
    req_release_attempt(req);
    sl__queue_remove(&req->all_node);
    if (req->zs_active) {
        inflateEnd(req->zs);
        req->zs_active = false;
    }
    req_set_state(req, REQ_DONE);
    req->result.error = err;
    req->result.time_total_us = req_elapsed_us(req);
    if (err != 0 && (req->errmsg == NULL || req->errmsg[0] == '\0'))
        sl__req_errmsg(req, "%s", sl_strerror(err));
    req->result.errmsg = sl__req_errmsg_text(req);
    if (!req->freed) {
        req->done_pending = true;
        sl_defer_start(&req->defer);
    }
}

static void req_reset_hop(sl_req_t *req);

/* Whether another attempt is allowed now, and after how long. `hint_ms` is a
 * server's Retry-After (UINT64_MAX: none). */
static bool retry_allowed(sl_req_t *req, uint64_t hint_ms, uint64_t *wait_ms)
{
    const sl_retry_t *r = &req->retry;
    uint64_t w;

    if (r->max == 0 || req->attempts_retried >= r->max || req->freed || req->client->closing)
        return false;
    if (!r->all_methods && !sl__req_idempotent(req))
        return false;
    if (!sl__req_replayable(req))
        return false;
    if (req->head_delivered && req->resume_validator == NULL)
        return false; /* the user has (part of) a response that cannot be continued */
    if (hint_ms != UINT64_MAX)
        w = SL__MIN(hint_ms, r->max_delay_ms);
    else
        w = sl__backoff_ms(req->attempts_retried, r->delay_ms, r->max_delay_ms, &req->client->rng);
    if (r->max_time_ms > 0 && req_elapsed_us(req) / 1000 + w > r->max_time_ms)
        return false;
    if (req->timeouts.total_ms > 0 && req_elapsed_us(req) / 1000 + w >= req->timeouts.total_ms)
        return false;
    *wait_ms = w;
    return true;
}

static void retry_timer_cb(sl_timer_t *t)
{
    sl_req_t *req = sl__container_of(t, sl_req_t, retry_timer);

    if (!req_gone(req))
        req_acquire(req);
}

/* Drop this attempt (its connection, its response) and start the next one
 * after `wait_ms`. */
static void req_schedule_retry(sl_req_t *req, uint64_t wait_ms, const char *why)
{
    bool resume = req->head_delivered; /* retry_allowed() checked a validator */

    req_release_attempt(req);
    req_reset_hop(req);
    if (resume) {
        req->resuming = true;
        req->resume_from = req->result.bytes_down;
    }
    req->retry_discard = false;
    req->stale_retried = false;
    req->attempts_retried++;
    req->result.retries++;
    req_set_state(req, REQ_QUEUED);
    sl__req_tracef(req, "Retry %u of %u in %llu ms: %s%s", req->attempts_retried, req->retry.max,
                   (unsigned long long)wait_ms, why,
                   req->resuming ? " (the body will resume where it stopped)" : "");
    sl_timer_start(&req->retry_timer, wait_ms, 0);
}

_Static_assert(sizeof(struct sl_req_s) <= 1032,
               "struct sl_req_s outgrew glibc's per-thread cache (see http-int.h)");

/* The error text lives in its own block, made on the first failure: most
 * requests never fail, and without it struct sl_req_s fits glibc's
 * per-thread cache of small blocks (see http-int.h). */
static void req_verrmsg(sl_req_t *req, const char *fmt, va_list ap)
{
    if (req->errmsg == NULL && (req->errmsg = malloc(SL__ERRMSG_MAX)) == NULL) {
        req->errmsg_lost = true;
        return;
    }
    vsnprintf(req->errmsg, SL__ERRMSG_MAX, fmt, ap);
}

void sl__req_errmsg(sl_req_t *req, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    req_verrmsg(req, fmt, ap);
    va_end(ap);
}

/* What result.errmsg shows: the text, "" or, if there was no memory for
 * the text, a static one. */
const char *sl__req_errmsg_text(const sl_req_t *req)
{
    if (req->errmsg != NULL)
        return req->errmsg;
    return req->errmsg_lost ? "out of memory (the error's description was lost)" : "";
}

void sl__req_fail(sl_req_t *req, int err, const char *fmt, ...)
{
    va_list ap;
    uint64_t wait;

    if (req_gone(req))
        return;
    va_start(ap, fmt);
    req_verrmsg(req, fmt, ap);
    va_end(ap);
    if (sl__error_retryable(err) && retry_allowed(req, UINT64_MAX, &wait)) {
        req_schedule_retry(req, wait, sl__req_errmsg_text(req));
        if (req->errmsg != NULL)
            req->errmsg[0] = '\0';
        req->errmsg_lost = false;
        return;
    }
    req_finish(req, err);
}

void sl__req_abort(sl_req_t *req, int err, const char *fmt, ...)
{
    va_list ap;

    if (req_gone(req) || (req->state == REQ_NEW && !req->start_pending))
        return;
    va_start(ap, fmt);
    req_verrmsg(req, fmt, ap);
    va_end(ap);
    req_finish(req, err);
}

void sl_req_cancel(sl_req_t *req)
{
    if (req_gone(req) || (req->state == REQ_NEW && !req->start_pending))
        return;
    sl__req_errmsg(req, "the transfer was cancelled");
    req_finish(req, SL_ECANCELED);
}

void sl_req_free(sl_req_t *req)
{
    if (req == NULL || req->freed)
        return;
    req->freed = true; /* on_done will not run */
    if (req->state != REQ_DONE)
        req_finish(req, SL_ECANCELED);
    req->done_pending = false;
    sl__group_req_detach(req);
    sl_defer_start(&req->defer);
}

void sl_req_pause(sl_req_t *req)
{
    if (req_gone(req) || req->paused)
        return;
    req->paused = true;
    if (req->phase_error == SL_ETIMEDOUT_READ)
        sl_timer_stop(&req->phase_timer);
    if (req->conn != NULL)
        sl__conn_update_interest(req->conn);
}

void sl_req_resume(sl_req_t *req)
{
    if (req_gone(req))
        return;
    if (req->paused) {
        req->paused = false;
        if (req->phase_error == SL_ETIMEDOUT_READ && req->timeouts.read_ms > 0)
            sl_timer_start(&req->phase_timer, req->timeouts.read_ms, 0);
    }
    req->upload_paused = false;
    if (req->conn != NULL) {
        sl__conn_update_interest(req->conn);
        sl__conn_kick(req->conn);
    }
}

/* ---- events from the connection ------------------------------------------------- */

void sl__req_conn_ready(sl_req_t *req)
{
    struct conn *conn = req->conn;
    int rc;

    if (!req->queue_timed) {
        req->result.time_queue_us = req_elapsed_us(req);
        req->queue_timed = true;
    }
    if (conn->requests > 0) {
        /* Reused: nothing was resolved or connected for this hop. */
        req->result.time_dns_us = req->result.time_connect_us = req_elapsed_us(req);
        if (conn->tls != NULL)
            req->result.time_tls_us = req->result.time_connect_us; /* curl's appconnect */
    }
    rc = sl__req_write_head(req);
    if (rc < 0) {
        sl__req_fail(req, rc, "could not build the request: %s", sl_strerror(rc));
        return;
    }
    /* Sent under the origin's current back-off: an overloaded answer to it
     * says something about that allowance (sl__aimd_decrease). */
    if (req->client->opts.adaptive)
        sl__pool_sending(req->client, req);
    req_set_state(req, REQ_SEND);
    req_phase(req, 0, 0);
    if (req->on_trace != NULL) {
        if (conn->requests > 0)
            sl__req_tracef(req, "Re-using connection to %s port %u", conn->peer_ip,
                           conn->peer_port);
        sl__req_trace(req, SL_TRACE_HEAD_OUT, req->head_buf, req->head_len);
    }
    sl__conn_exchange(conn);
}

void sl__req_conn_failed(sl_req_t *req, int err, const char *detail)
{
    sl__req_fail(req, err, "%s", detail);
}

void sl__req_sent(sl_req_t *req)
{
    if (req->got_response_byte) {
        req_set_state(req, REQ_BODY);
        return;
    }
    req_set_state(req, REQ_HEAD);
    /* Without a first-byte limit, the read-idle limit covers the silence
     * before the first byte too. */
    if (req->timeouts.first_byte_ms == SL_TIMEOUT_NEVER)
        req_phase(req, 0, 0);
    else if (req->timeouts.first_byte_ms > 0)
        req_phase(req, req->timeouts.first_byte_ms, SL_ETIMEDOUT_FIRSTBYTE);
    else
        req_phase(req, req->timeouts.read_ms, SL_ETIMEDOUT_READ);
}

void sl__req_tls_start(sl_req_t *req)
{
    uint64_t ms = req->timeouts.tls_ms;

    /* The handshake counts towards connect_ms too: its own limit only
     * matters when it is the sooner of the two. */
    if (ms == 0)
        return;
    if (req->phase_error == SL_ETIMEDOUT_CONNECT && sl_timer_active(&req->phase_timer) &&
        sl_timer_deadline(&req->phase_timer) <= sl_loop_now(req->client->loop) + ms)
        return;
    req_phase(req, ms, SL_ETIMEDOUT_TLS);
}

void sl__req_first_byte(sl_req_t *req)
{
    req->got_response_byte = true;
    req->result.time_first_byte_us = req_elapsed_us(req);
    req_phase(req, req->timeouts.read_ms, SL_ETIMEDOUT_READ);
}

void sl__req_activity(sl_req_t *req)
{
    if (req->timeouts.read_ms > 0 && !req->paused)
        sl_timer_start(&req->phase_timer, req->timeouts.read_ms, 0);
}

bool sl__req_idempotent(const sl_req_t *req)
{
    static const char *const idem[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < SL__ARRAY_SIZE(idem); i++)
        if (strcmp(req->method, idem[i]) == 0)
            return true;
    return false;
}

bool sl__req_replayable(const sl_req_t *req)
{
    return req->body_kind != BODY_STREAM;
}

void sl__req_conn_error(sl_req_t *req, int err, const char *detail)
{
    if (req_gone(req))
        return;
    /* A reused connection the server had already closed: the request never
     * reached it, so an idempotent one is safe to send again, once. */
    if (req->result.reused && !req->got_response_byte && req->client->opts.retry_stale &&
        !req->stale_retried && sl__req_idempotent(req) && sl__req_replayable(req) &&
        (err == SL_ECONNRESET || err == SL_EPIPE || err == SL_EOF)) {
        req->stale_retried = true;
        req->result.retries++;
        sl__conn_detach(req->conn, false);
        req_reset_hop(req);
        req->force_fresh = true;
        req_acquire(req);
        return;
    }
    sl__req_fail(req, err, "%s", detail != NULL && detail[0] ? detail : sl_strerror(err));
}

/* ---- response head ---------------------------------------------------------------- */

static bool is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* The head as the user sees it: one allocation holding the struct, the
 * header array and the text (the parser's copy dies with the exchange). */
static int copy_head(sl_req_t *req, const struct sl__resp_head *h)
{
    size_t reason_len = strlen(h->reason) + 1, text = reason_len, off;
    size_t array = (h->nheaders ? h->nheaders : 1) * sizeof(struct sl__header);
    struct sl_resp_s *r;

    for (size_t i = 0; i < h->nheaders; i++)
        text += h->headers[i].name_len + h->headers[i].value_len + 2;
    r = malloc(sizeof(*r) + array + text);
    if (r == NULL)
        return SL_ENOMEM;
    r->headers = (struct sl__header *)(void *)(r + 1);
    r->arena = (char *)r->headers + array;
    r->status = h->status;
    r->version = h->http_major * 10 + h->http_minor;
    r->content_length = h->content_length;
    r->reason = r->arena;
    memcpy(r->arena, h->reason, reason_len);
    off = reason_len;
    for (size_t i = 0; i < h->nheaders; i++) {
        struct sl__header *d = &r->headers[i];
        const struct sl__header *s = &h->headers[i];
        d->name = r->arena + off;
        memcpy(r->arena + off, s->name, s->name_len + 1);
        off += s->name_len + 1;
        d->value = r->arena + off;
        memcpy(r->arena + off, s->value, s->value_len + 1);
        off += s->value_len + 1;
        d->name_len = s->name_len;
        d->value_len = s->value_len;
    }
    r->nheaders = h->nheaders;
    free(req->resp);
    req->resp = r;
    return 0;
}

static int decode_start(sl_req_t *req, const struct sl__resp_head *h)
{
    const char *enc = sl__resp_header(h, "Content-Encoding");
    int bits;

    if (!req->decode || enc == NULL || h->no_body)
        return 0;
    if (strcasecmp(enc, "gzip") == 0 || strcasecmp(enc, "x-gzip") == 0)
        bits = 15 + 16;
    else if (strcasecmp(enc, "deflate") == 0)
        bits = 15; /* zlib-wrapped; raw deflate is tried if that fails */
    else if (strcasecmp(enc, "identity") == 0)
        return 0;
    else
        return 0; /* unknown coding: deliver as is, like curl */
    if (req->zs == NULL && (req->zs = malloc(sizeof(*req->zs))) == NULL)
        return SL_ENOMEM;
    memset(req->zs, 0, sizeof(*req->zs));
    if (inflateInit2(req->zs, bits) != Z_OK)
        return SL_ENOMEM;
    req->zs_active = true;
    req->zs_raw_tried = bits != 15;
    req->zs_ended = false;
    return 0;
}

static int deliver(sl_req_t *req, const char *data, size_t len)
{
    int rc = 0;

    if (len == 0)
        return 0;
    if (req->decode && req->zs_active && req->max_decoded > 0 &&
        req->result.bytes_down + len > req->max_decoded) {
        sl__req_fail(req, SL_EBODY_TOO_BIG, "the decoded body exceeds %llu bytes",
                     (unsigned long long)req->max_decoded);
        return SL_EBODY_TOO_BIG;
    }
    if (req->buffer) {
        if (req->buffer_max > 0 && req->buf_len + len > req->buffer_max) {
            sl__req_fail(req, SL_EBODY_TOO_BIG, "the body exceeds the buffer limit of %zu bytes",
                         req->buffer_max);
            return SL_EBODY_TOO_BIG;
        }
        if (req->buf_len + len > req->buf_cap) {
            size_t cap = req->buf_cap ? req->buf_cap : 16384;
            while (cap < req->buf_len + len)
                cap *= 2;
            char *p = realloc(req->buf, cap);
            if (p == NULL) {
                sl__req_fail(req, SL_ENOMEM, "out of memory buffering the body");
                return SL_ENOMEM;
            }
            req->buf = p;
            req->buf_cap = cap;
        }
        memcpy(req->buf + req->buf_len, data, len);
        req->buf_len += len;
    }
    req->result.bytes_down += len; /* delivered: counted after every limit check */
    if (req->on_data != NULL) {
        req->in_callback++;
        rc = req->on_data(req, data, len);
        req->in_callback--;
        if (req_gone(req))
            return SL_ECANCELED;
        if (rc == SL_PAUSE) {
            sl_req_pause(req);
            rc = 0;
        } else if (rc < 0) {
            sl__req_fail(req, rc, "the data callback aborted the transfer: %s", sl_strerror(rc));
            return rc;
        }
    }
    return rc;
}

static int decode_feed(sl_req_t *req, const char *data, size_t len)
{
    char out[DECODE_CHUNK];

    req->zs->next_in = (Bytef *)(uintptr_t)data;
    req->zs->avail_in = (uInt)len;
    while (req->zs->avail_in > 0) {
        if (req->zs_ended) {
            /* Another gzip member follows (RFC 1952 allows several). */
            if (inflateReset(req->zs) != Z_OK)
                return SL_EDECODE;
            req->zs_ended = false;
        }
        req->zs->next_out = (Bytef *)out;
        req->zs->avail_out = sizeof(out);
        int zr = inflate(req->zs, Z_NO_FLUSH);
        if (zr == Z_DATA_ERROR && !req->zs_raw_tried && req->zs->total_out == 0) {
            /* "deflate" sent as raw deflate (common): start over raw. */
            req->zs_raw_tried = true;
            inflateEnd(req->zs);
            memset(req->zs, 0, sizeof(*req->zs));
            if (inflateInit2(req->zs, -15) != Z_OK)
                return SL_ENOMEM;
            req->zs->next_in = (Bytef *)(uintptr_t)data;
            req->zs->avail_in = (uInt)len;
            continue;
        }
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            sl__req_fail(req, SL_EDECODE, "decoding the %s body failed: %s",
                         sl_resp_header(req->resp, "Content-Encoding"),
                         req->zs->msg ? req->zs->msg : "corrupt data");
            return SL_EDECODE;
        }
        size_t produced = sizeof(out) - req->zs->avail_out;
        if (produced > 0) {
            int rc = deliver(req, out, produced);
            if (rc < 0)
                return rc;
        }
        if (zr == Z_STREAM_END)
            req->zs_ended = true;
        else if (zr == Z_BUF_ERROR && produced == 0)
            break;
    }
    return 0;
}

void sl__req_on_interim(sl_req_t *req, const struct sl__resp_head *h)
{
    if (!req_gone(req))
        trace_head_in(req, h);
}

/* Parse "bytes first-last/total" (total may be "*": -1). */
static int parse_content_range(const char *v, uint64_t *first, uint64_t *last, int64_t *total)
{
    char *end;

    if (strncasecmp(v, "bytes", 5) != 0)
        return -1;
    v += 5;
    while (*v == ' ')
        v++;
    if (*v < '0' || *v > '9')
        return -1;
    *first = strtoull(v, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return -1;
    *last = strtoull(end + 1, &end, 10);
    if (*end != '/' || *last < *first)
        return -1;
    if (end[1] == '*' && end[2] == '\0') {
        *total = -1;
        return 0;
    }
    if (end[1] < '0' || end[1] > '9')
        return -1;
    *total = (int64_t)strtoull(end + 1, &end, 10);
    return *end == '\0' && *total > (int64_t)*last ? 0 : -1;
}

/* The head of an attempt that continues a body: it must be the rest of the
 * same representation, from exactly where the body stopped. */
static int resume_head(sl_req_t *req, const struct sl__resp_head *h)
{
    const char *cr = sl__resp_header(h, "Content-Range");
    uint64_t first = 0, last = 0;
    int64_t total = -1;

    if (h->status == 416 && cr != NULL && sscanf(cr, "bytes */%" SCNd64, &total) == 1 &&
        total >= 0 && (uint64_t)total == req->resume_from &&
        (req->resume_total < 0 || total == req->resume_total)) {
        /* Every byte had arrived (a chunked body cut before its last
         * chunk): nothing is missing. Its error page is not data. */
        req->result.status = req->resp != NULL ? req->resp->status : 200;
        req->resume_complete = true;
        req->head_delivered = true;
        req_set_state(req, REQ_BODY);
        sl__req_tracef(req, "The body was already complete (%lld bytes)", (long long)total);
        return 0;
    }
    if (h->status != 206 || cr == NULL || parse_content_range(cr, &first, &last, &total) < 0 ||
        first != req->resume_from || (req->resume_total >= 0 && total != req->resume_total) ||
        (total >= 0 && last + 1 != (uint64_t)total)) {
        sl__req_fail(req, SL_ERESUME, "cannot resume at byte %llu: the server answered %d%s%s%s",
                     (unsigned long long)req->resume_from, h->status,
                     h->status == 200 ? " (its copy changed: If-Range did not match)" : "",
                     cr != NULL ? " with Content-Range " : "", cr != NULL ? cr : "");
        return SL_ERESUME;
    }
    req->result.status = req->resp != NULL ? req->resp->status : 200;
    req->result.resumes++;
    req->head_delivered = true;
    req_set_state(req, REQ_BODY);
    sl__req_tracef(req, "Resumed at byte %llu of %lld", (unsigned long long)first,
                   (long long)total);
    return 0;
}

/* Remember how the body just announced could be resumed, if it breaks. */
static void note_resumable(sl_req_t *req, const struct sl__resp_head *h)
{
    const char *etag = sl__resp_header(h, "ETag");
    const char *lm = sl__resp_header(h, "Last-Modified");
    const char *ar = sl__resp_header(h, "Accept-Ranges");
    const char *v = NULL;

    free(req->resume_validator);
    req->resume_validator = NULL;
    /* With decoding on, offsets of decoded bytes are not offsets of the
     * representation, and a Range answer may come encoded otherwise. */
    if (h->status != 200 || strcmp(req->method, "GET") != 0 || req->decode || h->no_body)
        return;
    if (ar != NULL && strcasecmp(ar, "none") == 0)
        return;
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, "Range") == 0 ||
            strcasecmp(req->headers[i].name, "If-Range") == 0)
            return; /* the user's own range request */
    /* If-Range takes a strong entity tag, or a date only when there is no
     * entity tag at all (RFC 9110 13.1.5). */
    if (etag != NULL && etag[0] == '"')
        v = etag;
    else if (etag == NULL && lm != NULL && lm[0] != '\0')
        v = lm;
    if (v == NULL)
        return;
    req->resume_validator = strdup(v); /* NULL if out of memory: not resumable */
    req->resume_total = h->content_length;
}

int sl__req_on_head(sl_req_t *req, const struct sl__resp_head *h)
{
    int rc;

    if (req_gone(req))
        return SL_ECANCELED;
    req->result.status = h->status;
    trace_head_in(req, h);
    if (req_gone(req))
        return SL_ECANCELED;
    if (req->client->opts.adaptive) {
        if (h->status == 429 || h->status == 503)
            sl__pool_overloaded(req->client, req);
        else if (h->status < 400)
            sl__pool_succeeded(req->client, req);
        if (req_gone(req))
            return SL_ECANCELED; /* a trace callback freed it */
    }
    if (req->retry.max > 0 && sl__status_retryable(h->status)) {
        const char *ra = sl__resp_header(h, "Retry-After");
        uint64_t hint = UINT64_MAX, wait;
        if (ra != NULL && sl__retry_after_ms(ra, (int64_t)time(NULL), &hint) < 0)
            hint = UINT64_MAX;
        if (retry_allowed(req, hint, &wait)) {
            /* Drain this answer; the next attempt starts at its end. */
            req->retry_discard = true;
            req->retry_wait_ms = wait;
            req->redirect_status = h->status;
            return 0;
        }
    }
    if (req->resuming)
        return resume_head(req, h);
    if (req->max_redirects > 0 && is_redirect(h->status)) {
        const char *loc = sl__resp_header(h, "Location");
        if (loc != NULL) {
            struct sl__url next;
            const char *why = NULL;
            if (req->result.redirects >= req->max_redirects) {
                sl__req_fail(req, SL_ETOO_MANY_REDIRECTS, "maximum (%u) redirects followed",
                             req->max_redirects);
                return SL_ETOO_MANY_REDIRECTS;
            }
            rc = sl__url_resolve_n(&next, &req->url, loc, strlen(loc), &why);
            if (rc < 0) {
                sl__req_fail(req, rc, "cannot follow the redirect to '%.100s': %s", loc,
                             why ? why : sl_strerror(rc));
                return rc;
            }
            if (strcmp(req->url.scheme, "https") == 0 && strcmp(next.scheme, "http") == 0 &&
                !req->allow_downgrade) {
                sl__url_free(&next);
                sl__req_fail(req, SL_EREDIRECT_REFUSED,
                             "refusing to follow a redirect from https to http ('%.100s')", loc);
                return SL_EREDIRECT_REFUSED;
            }
            if ((h->status == 307 || h->status == 308) && req->body_kind == BODY_STREAM) {
                sl__url_free(&next);
                sl__req_fail(req, SL_EREDIRECT_REFUSED,
                             "cannot follow a %d redirect: the streamed body cannot be sent again",
                             h->status);
                return SL_EREDIRECT_REFUSED;
            }
            free(req->location);
            req->location = sl__url_string(&next);
            sl__url_free(&next);
            if (req->location == NULL) {
                sl__req_fail(req, SL_ENOMEM, "out of memory");
                return SL_ENOMEM;
            }
            req->redirecting = true;
            req->redirect_status = h->status;
            sl__req_tracef(req, "Following redirect (%d) to %s", h->status, req->location);
            return 0; /* the 3xx body is drained and dropped */
        }
    }
    rc = copy_head(req, h);
    if (rc == 0)
        rc = decode_start(req, h);
    if (rc < 0) {
        sl__req_fail(req, rc, "out of memory");
        return rc;
    }
    if (req->retry.max > 0)
        note_resumable(req, h);
    req_set_state(req, REQ_BODY);
    req->head_delivered = true;
    if (req->on_head != NULL) {
        req->in_callback++;
        rc = req->on_head(req, req->resp);
        req->in_callback--;
        if (req_gone(req))
            return SL_ECANCELED;
        if (rc == SL_PAUSE) {
            sl_req_pause(req);
            return SL__PARSE_PAUSE;
        }
        if (rc < 0) {
            sl__req_fail(req, rc, "the head callback aborted the transfer: %s", sl_strerror(rc));
            return rc;
        }
    }
    return 0;
}

int sl__req_on_body(sl_req_t *req, const char *data, size_t len)
{
    int rc;

    if (req_gone(req))
        return SL_ECANCELED;
    req->result.bytes_wire += len;
    if (req->redirecting || req->retry_discard || req->resume_complete)
        return 0;
    if (req->zs_active)
        rc = decode_feed(req, data, len);
    else
        rc = deliver(req, data, len);
    if (rc < 0)
        return rc;
    return req->paused ? SL__PARSE_PAUSE : 0;
}

/* Switch the request to the redirect target and start the next hop. */
static void req_next_hop(sl_req_t *req)
{
    struct sl__url next;
    const char *why = NULL;
    bool cross_origin;
    int rc = sl__url_parse_ex(&next, req->location, &why);

    if (rc < 0) {
        sl__req_fail(req, rc, "bad redirect target: %s", why ? why : sl_strerror(rc));
        return;
    }
    cross_origin = !sl__url_same_origin(&req->url, &next);
    sl__url_free(&req->url);
    req->url = next;
    free(req->url_string);
    req->url_string = req->location;
    req->location = NULL;
    req->result.effective_url = req->url_string;
    req->result.redirects++;

    /* 303 always becomes GET (but HEAD stays HEAD); 301/302 turn a POST
     * into a GET, as browsers and curl do; 307/308 keep method and body. */
    int st = req->redirect_status;
    if ((st == 303 && strcmp(req->method, "HEAD") != 0) ||
        ((st == 301 || st == 302) && strcmp(req->method, "POST") == 0)) {
        char *get = strdup("GET");
        if (get == NULL) {
            sl__req_fail(req, SL_ENOMEM, "out of memory");
            return;
        }
        free(req->method);
        req->method = get;
        req->body_kind = BODY_NONE;
        req->body_len = 0;
    }
    if (cross_origin) {
        /* Credentials and cookies belong to the origin that got them. */
        size_t k = 0;
        for (size_t i = 0; i < req->nheaders; i++) {
            const char *n = req->headers[i].name;
            if (strcasecmp(n, "Authorization") == 0 || strcasecmp(n, "Cookie") == 0 ||
                strcasecmp(n, "Proxy-Authorization") == 0) {
                free(req->headers[i].name);
                free(req->headers[i].value);
                continue;
            }
            req->headers[k++] = req->headers[i];
        }
        req->nheaders = k;
    }
    req_reset_hop(req);
    req->stale_retried = false;
    req_acquire(req);
}

void sl__req_on_complete(sl_req_t *req, bool keep)
{
    if (req_gone(req))
        return;
    if (req->conn != NULL)
        sl__conn_detach(req->conn, keep);
    if (req->retry_discard) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP %d", req->redirect_status);
        req_schedule_retry(req, req->retry_wait_ms, why);
        return;
    }
    if (req->redirecting) {
        req_next_hop(req);
        return;
    }
    if (req->zs_active && !req->zs_ended && req->result.bytes_wire > 0) {
        sl__req_fail(req, SL_EDECODE, "the compressed body ended before its end marker");
        return;
    }
    req_finish(req, 0);
}

/* ---- results and responses ------------------------------------------------------ */

/* The URL as text is only built when asked for (it is not needed to run
 * the transfer). Returns "" if out of memory. */
static const char *req_url_string(const sl_req_t *creq)
{
    sl_req_t *req = (sl_req_t *)creq; /* a cache fill, not a visible change */

    if (req->url_string == NULL)
        req->url_string = sl__url_string(&req->url);
    req->result.effective_url = req->url_string != NULL ? req->url_string : "";
    return req->result.effective_url;
}

const sl_result_t *sl_req_result(const sl_req_t *req)
{
    req_url_string(req);
    return &req->result;
}

const sl_resp_t *sl_req_response(const sl_req_t *req)
{
    return req->resp;
}

const void *sl_req_body_data(const sl_req_t *req, size_t *len)
{
    if (len != NULL)
        *len = req->buf_len;
    return req->buf;
}

const char *sl_req_errdetail(const sl_req_t *req)
{
    return sl__req_errmsg_text(req);
}

const char *sl_req_method(const sl_req_t *req)
{
    return req->method;
}

const char *sl_req_url(const sl_req_t *req)
{
    return req_url_string(req);
}

int sl_resp_status(const sl_resp_t *r)
{
    return r->status;
}

const char *sl_resp_reason(const sl_resp_t *r)
{
    return r->reason;
}

int sl_resp_version(const sl_resp_t *r)
{
    return r->version;
}

size_t sl_resp_header_count(const sl_resp_t *r)
{
    return r->nheaders;
}

int sl_resp_header_at(const sl_resp_t *r, size_t i, const char **name, const char **value)
{
    if (i >= r->nheaders)
        return SL_EINVAL;
    *name = r->headers[i].name;
    *value = r->headers[i].value;
    return 0;
}

const char *sl_resp_header(const sl_resp_t *r, const char *name)
{
    if (r == NULL)
        return NULL;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int64_t sl_resp_content_length(const sl_resp_t *r)
{
    return r->content_length;
}
