/*
 * conn.c -- one HTTP/1.1 connection: resolve, connect, exchange, idle.
 *
 * States (conn_set_state is the only writer of conn->state):
 *
 *   RESOLVE --dns--> CONNECT --first attempt to connect--> BUSY (req bound)
 *                                                     \--> IDLE (no req: orphan)
 *   IDLE --sl__conn_exchange--> BUSY --response complete, reusable--> IDLE
 *   any --error, peer close, idle expiry, cancel--> CLOSED
 *
 * Connecting follows Happy Eyeballs (RFC 8305): addresses are interleaved by
 * family starting with the resolver's first choice, a new attempt starts
 * every 250 ms or as soon as one fails, the first to connect wins and the
 * others are closed.
 *
 * Re-entrancy: parser callbacks call into the request, whose user
 * callbacks may cancel or free it, or stop the client. The connection
 * therefore never completes a response from inside the parser: completion
 * is recorded and acted on after the parser returns, as the last thing the
 * read handler does; and a connection closed while its handler is on the
 * stack (`dispatching`) is freed when the handler unwinds.
 */
#include "http-int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HAPPY_EYEBALLS_DELAY_MS 250
#define EXPECT_CONTINUE_WAIT_MS 1000
#define RBUF_MIN (4 * 1024)   /* smallest own buffer for bytes a pause left */
#define RSCRATCH (256 * 1024) /* the client's shared read buffer */
#define READS_PER_EVENT 16u

static const char *const conn_state_names[] = {"RESOLVE", "CONNECT", "HANDSHAKE",
                                               "IDLE",    "BUSY",    "CLOSED"};

static void conn_set_state(struct conn *c, enum conn_state s)
{
    if (sl__trace_states())
        fprintf(stderr, "sluice: conn %p %s -> %s\n", (void *)c, conn_state_names[c->state],
                conn_state_names[s]);
    c->state = s;
}

/* ---- plain TCP transport ------------------------------------------------------ */

/* recv() and send() rather than read() and writev(): the socket calls skip
 * the VFS layer, which is a measurable share of a keep-alive request's
 * kernel time on loopback. MSG_NOSIGNAL makes a write to a reset connection
 * return SL_EPIPE instead of raising SIGPIPE in the application, as the TLS
 * transport already does. */
static int tcp_read(struct conn *c, char *buf, size_t len, size_t *n)
{
    ssize_t r = recv(c->fd, buf, len, 0);

    if (r > 0) {
        *n = (size_t)r;
        return 0;
    }
    if (r == 0)
        return SL_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK ? SL_EAGAIN : -errno;
}

static int tcp_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t r = iovcnt == 1 ? send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                            : sendmsg(c->fd, &msg, MSG_NOSIGNAL);

    if (r >= 0) {
        *n = (size_t)r;
        return 0;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? SL_EAGAIN : -errno;
}

static unsigned tcp_wants(const struct conn *c)
{
    (void)c;
    return 0;
}

static bool tcp_has_pending(const struct conn *c)
{
    (void)c;
    return false;
}

const struct sl__transport_ops sl__transport_tcp = {
    .name = "tcp",
    .read = tcp_read,
    .writev = tcp_writev,
    .wants = tcp_wants,
    .has_pending = tcp_has_pending,
};

/* ---- TLS transport: the tls/ transform over the same fd ---------------- */

static int tls_tp_read(struct conn *c, char *buf, size_t len, size_t *n)
{
    return sl__tls_read(c->tls, buf, len, n);
}

static int tls_tp_writev(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n)
{
    return sl__tls_writev(c->tls, iov, iovcnt, n);
}

static unsigned tls_tp_wants(const struct conn *c)
{
    return sl__tls_wants(c->tls);
}

static bool tls_tp_has_pending(const struct conn *c)
{
    return sl__tls_has_pending(c->tls);
}

const struct sl__transport_ops sl__transport_tls = {
    .name = "tls",
    .read = tls_tp_read,
    .writev = tls_tp_writev,
    .wants = tls_tp_wants,
    .has_pending = tls_tp_has_pending,
};

/* ---- lifetime ---------------------------------------------------------------- */

static void conn_io_cb(sl_io_t *io, unsigned events);
static void conn_handle(struct conn *c, unsigned events);
static void he_timer_cb(sl_timer_t *t);
static void idle_timer_cb(sl_timer_t *t);
static void conn_defer_cb(sl_defer_t *d);
static int parser_on_head(void *ctx, const struct sl__resp_head *h);
static int parser_on_body(void *ctx, const char *data, size_t len);
static int parser_on_complete(void *ctx, bool keep_alive);
static int parser_on_interim(void *ctx, const struct sl__resp_head *h);

static const struct sl__resp_parser_cbs parser_cbs = {
    .on_head = parser_on_head,
    .on_body = parser_on_body,
    .on_complete = parser_on_complete,
    .on_interim = parser_on_interim,
};

struct conn *sl__conn_new(sl_client_t *cl, struct origin *o)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->client = cl;
    c->origin = o;
    c->state = CONN_RESOLVE;
    c->tp = &sl__transport_tcp;
    c->fd = -1;
    c->reusable = true;
    for (int i = 0; i < CONN_MAX_ATTEMPTS; i++)
        c->attempts[i].fd = -1;
    sl_timer_init(cl->loop, &c->he_timer, he_timer_cb);
    sl_timer_init(cl->loop, &c->idle_timer, idle_timer_cb);
    sl_defer_init(cl->loop, &c->defer, conn_defer_cb);
    sl__queue_init(&c->node);
    sl__queue_insert_tail(&cl->conns, &c->all_node);
    sl__resp_parser_init(&c->parser, &cl->limits, &parser_cbs, c);
    o->nconns++;
    cl->nconns++;
    return c;
}

static void attempt_close(struct attempt *a)
{
    if (a->fd < 0)
        return;
    sl_io_stop(&a->io);
    close(a->fd);
    a->fd = -1;
    a->conn->nattempts_live--;
}

static void conn_free_memory(struct conn *c)
{
    sl__resp_parser_free(&c->parser);
    free(c->rbuf);
    free(c->order);
    free(c);
}

void sl__conn_close(struct conn *c)
{
    sl_client_t *cl = c->client;
    struct origin *o = c->origin;

    bool was_idle = c->state == CONN_IDLE;

    if (c->state == CONN_CLOSED)
        return;
    conn_set_state(c, CONN_CLOSED);
    if (c->req != NULL) {
        c->req->conn = NULL;
        c->req = NULL;
    }
    if (c->dns_active) {
        sl__dns_cancel(&c->dns);
        c->dns_active = false;
    }
    for (int i = 0; i < CONN_MAX_ATTEMPTS; i++)
        attempt_close(&c->attempts[i]);
    if (c->addrs != NULL) {
        sl__addrlist_release(c->addrs);
        c->addrs = NULL;
    }
    if (c->tls != NULL) {
        /* close_notify, best effort and never waiting: only on a connection
         * in a clean state (an idle one); a failed one just goes. */
        if (was_idle)
            (void)sl__tls_shutdown(c->tls);
        sl__tls_free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        sl_io_stop(&c->io);
        close(c->fd);
        c->fd = -1;
    }
    sl_timer_stop(&c->he_timer);
    sl_timer_stop(&c->idle_timer);
    sl_defer_stop(&c->defer);
    if (sl__queue_linked(&c->node)) {
        sl__queue_remove(&c->node);
        cl->nidle--;
    }
    sl__queue_remove(&c->all_node);
    o->nconns--;
    cl->nconns--;
    if (c->dispatching)
        c->free_pending = true;
    else
        conn_free_memory(c);
    sl__pool_conn_gone(cl, o);
}

/* Enter a handler that may run user code; returns false if `c` is closed. */
static void conn_enter(struct conn *c)
{
    c->dispatching++;
}

/* Leave it; returns true if the connection is still usable. */
static bool conn_leave(struct conn *c)
{
    if (--c->dispatching == 0 && c->free_pending) {
        conn_free_memory(c);
        return false;
    }
    return c->state != CONN_CLOSED;
}

void sl__conn_bind(struct conn *c, sl_req_t *req)
{
    assert(c->req == NULL);
    c->req = req;
    req->conn = c;
}

void sl__conn_detach(struct conn *c, bool keep)
{
    sl_req_t *req = c->req;

    if (req != NULL) {
        req->conn = NULL;
        c->req = NULL;
    }
    if (keep && (c->state == CONN_RESOLVE || c->state == CONN_CONNECT)) {
        /* An orphan keeps connecting and the pool will use it, but it must
         * not hold a slot for ever if the peer never answers. */
        uint64_t guard = req != NULL && req->timeouts.connect_ms ? req->timeouts.connect_ms : 30000;
        sl_timer_start(&c->idle_timer, guard, 0);
        sl_timer_unref(&c->idle_timer);
        return;
    }
    if (!keep || !c->reusable) {
        sl__conn_close(c);
        return;
    }
    sl__pool_release(c);
}

/* ---- failure ------------------------------------------------------------------- */

static void conn_fail_connect(struct conn *c, int err, const char *detail)
{
    sl_req_t *req = c->req;
    char msg[512];

    snprintf(msg, sizeof(msg), "%.500s", detail);
    if (req != NULL) {
        req->conn = NULL;
        c->req = NULL;
    }
    sl__conn_close(c);
    if (req != NULL)
        sl__req_conn_failed(req, err, msg);
}

/* ---- DNS and connect ---------------------------------------------------------- */

static void conn_connected(struct conn *c, struct attempt *win);

static void conn_build_order(struct conn *c)
{
    size_t n = c->addrs->n, i6 = 0, i4 = 0, k = 0;
    size_t *v6 = malloc(n * sizeof(size_t)), *v4 = malloc(n * sizeof(size_t));

    c->order = malloc(n * sizeof(size_t));
    if (c->order == NULL || v6 == NULL || v4 == NULL) {
        free(v6);
        free(v4);
        free(c->order);
        c->order = NULL;
        c->norder = 0;
        return;
    }
    size_t n6 = 0, n4 = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->addrs->addrs[i].ss_family == AF_INET6)
            v6[n6++] = i;
        else
            v4[n4++] = i;
    }
    /* Start with the family of the resolver's first answer, then alternate. */
    bool six = n > 0 && c->addrs->addrs[0].ss_family == AF_INET6;
    while (i6 < n6 || i4 < n4) {
        if (six && i6 < n6)
            c->order[k++] = v6[i6++];
        else if (!six && i4 < n4)
            c->order[k++] = v4[i4++];
        else if (i6 < n6)
            c->order[k++] = v6[i6++];
        else
            c->order[k++] = v4[i4++];
        six = !six;
    }
    free(v6);
    free(v4);
    c->norder = k;
    c->next_order = 0;
}

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void sa_to_text(const struct sockaddr_storage *ss, char *ip, size_t iplen, uint16_t *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(s4->sin_port);
    }
}

static void attempt_io_cb(sl_io_t *io, unsigned events);

/* Start the next address; returns false when none is left. Immediate
 * failures move on to the following address. */
static bool conn_start_attempt(struct conn *c)
{
    while (c->next_order < c->norder) {
        size_t idx = c->order[c->next_order++];
        const struct sockaddr_storage *ss = &c->addrs->addrs[idx];
        struct attempt *a = NULL;
        int fd, one = 1;

        for (int i = 0; i < CONN_MAX_ATTEMPTS; i++)
            if (c->attempts[i].fd < 0) {
                a = &c->attempts[i];
                break;
            }
        if (a == NULL)
            return true; /* all slots busy: the timer will try later */
        fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->connect_error = -errno;
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *)ss, sa_len(ss)) < 0 && errno != EINPROGRESS) {
            c->connect_error = -errno;
            close(fd);
            continue;
        }
        a->fd = fd;
        a->conn = c;
        a->addr_index = idx;
        c->nattempts_live++;
        sl_io_init(c->client->loop, &a->io, fd, attempt_io_cb);
        if (sl_io_start(&a->io, SL_EV_WRITE) < 0) {
            attempt_close(a);
            continue;
        }
        return true;
    }
    return false;
}

static void conn_connect_failed(struct conn *c)
{
    char msg[160];
    int err = c->connect_error ? c->connect_error : SL_ECONNECT;

    snprintf(msg, sizeof(msg), "could not connect to %s port %u: %s", c->origin->url.host,
             c->origin->url.port, sl_strerror(err));
    conn_fail_connect(c, err, msg);
}

static void attempt_io_cb(sl_io_t *io, unsigned events)
{
    struct attempt *a = sl__container_of(io, struct attempt, io);
    struct conn *c = a->conn;
    int err = 0;
    socklen_t len = sizeof(err);
    (void)events;

    /* Always asked: OpenBSD and NetBSD report a connect that failed with
     * a soft error (ICMP unreachable after retransmits) as plain writable. */
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        conn_connected(c, a);
        return;
    }
    c->connect_error = -err;
    attempt_close(a);
    /* A failure starts the next address at once (RFC 8305 §5). */
    if (!conn_start_attempt(c) && c->nattempts_live == 0)
        conn_connect_failed(c);
    else if (c->next_order < c->norder)
        sl_timer_start(&c->he_timer, HAPPY_EYEBALLS_DELAY_MS, 0);
}

static void he_timer_cb(sl_timer_t *t)
{
    struct conn *c = sl__container_of(t, struct conn, he_timer);

    if (c->state == CONN_CONNECT) {
        if (!conn_start_attempt(c) && c->nattempts_live == 0) {
            conn_connect_failed(c);
            return;
        }
        if (c->next_order < c->norder)
            sl_timer_start(&c->he_timer, HAPPY_EYEBALLS_DELAY_MS, 0);
    } else if (c->state == CONN_BUSY && c->req != NULL && c->req->expect_wait) {
        /* No 100 Continue in time: send the body anyway (RFC 9110 §10.1.1). */
        c->req->expect_wait = false;
        sl__conn_update_interest(c);
        c->kick_events |= SL_EV_WRITE;
        sl_defer_start(&c->defer);
    }
}

static void conn_on_resolved(sl__dns_lookup_t *l, int status, struct sl__addrlist *addrs)
{
    struct conn *c = sl__container_of(l, struct conn, dns);
    char msg[160];

    c->dns_active = false;
    c->t_dns_ns = sl_loop_now_ns(c->client->loop);
    if (c->req != NULL)
        c->req->result.time_dns_us = (c->t_dns_ns - c->req->t0_ns) / 1000;
    if (status < 0) {
        /* A DNS timeout is a resolution failure, not a TCP one. */
        if (status == SL_ETIMEDOUT)
            status = SL_EDNS_SERVER;
        snprintf(msg, sizeof(msg), "could not resolve host '%s': %s", c->origin->url.host,
                 sl_strerror(status));
        conn_fail_connect(c, status, msg);
        return;
    }
    c->addrs = sl__addrlist_retain(addrs);
    conn_build_order(c);
    if (c->norder == 0) {
        conn_fail_connect(c, c->order == NULL ? SL_ENOMEM : SL_EDNS, "no address to connect to");
        return;
    }
    conn_set_state(c, CONN_CONNECT);
    if (!conn_start_attempt(c)) {
        conn_connect_failed(c);
        return;
    }
    if (c->next_order < c->norder)
        sl_timer_start(&c->he_timer, HAPPY_EYEBALLS_DELAY_MS, 0);
}

/* The client's TLS context, made on first use: HTTP-only users never load
 * a trust store. */
static int client_tls_ctx(sl_client_t *cl)
{
    const sl_client_opts_t *o = &cl->opts;
    struct sl__tls_ctx_opts to;
    char err[256] = "";
    int rc;

    sl__tls_ctx_opts_init(&to);
    to.cafile = o->tls_cafile;
    to.capath = o->tls_capath;
    to.insecure = o->tls_insecure;
    to.min_version = o->tls_min_version == 13 ? SL__TLS_VERSION_1_3 : SL__TLS_VERSION_1_2;
    to.cert = o->tls_cert;
    to.key = o->tls_key;
    to.ciphers = o->tls_ciphers;
    to.ciphersuites = o->tls13_ciphers;
    rc = sl__tls_ctx_new(&to, &cl->tls, err, sizeof(err));
    if (rc < 0) {
        snprintf(cl->tls_error, sizeof(cl->tls_error), "%s", err);
        cl->tls = NULL;
    }
    return rc;
}

int sl__conn_start(struct conn *c)
{
    int rc;

    if (strcmp(c->origin->url.scheme, "https") == 0 && c->client->tls == NULL) {
        rc = client_tls_ctx(c->client);
        if (rc < 0)
            return rc;
    }
    rc = sl__dns_resolve(c->client->dns, &c->dns, c->origin->url.host, c->origin->url.port,
                         conn_on_resolved);
    if (rc < 0)
        return rc;
    c->dns_active = true;
    return 0;
}

/* The connection is ready for requests: hand it to its request or the pool. */
static void conn_ready(struct conn *c)
{
    sl_req_t *req = c->req;

    if (req != NULL) {
        conn_set_state(c, CONN_BUSY);
        sl__req_conn_ready(req);
    } else {
        conn_set_state(c, CONN_IDLE);
        sl__pool_release(c);
    }
}

/* Drive the TLS handshake; on completion the connection becomes ready. */
static void conn_handshake(struct conn *c)
{
    sl_req_t *req = c->req;
    int rc = sl__tls_handshake(c->tls);
    char msg[400];

    if (rc == SL_EAGAIN) {
        unsigned want = sl__tls_wants(c->tls);
        c->interest = want ? want : SL_EV_READ;
        sl_io_start(&c->io, c->interest);
        return;
    }
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "TLS handshake with %s port %u failed: %s%s%s",
                 c->origin->url.host, c->origin->url.port, sl_strerror(rc),
                 sl__tls_errdetail(c->tls)[0] ? ": " : "", sl__tls_errdetail(c->tls));
        conn_fail_connect(c, rc, msg);
        return;
    }
    if (req != NULL) {
        /* A fresh reading: the handshake may have run inside this callback. */
        sl_loop_update_time(c->client->loop);
        req->result.time_tls_us = (sl_loop_now_ns(c->client->loop) - req->t0_ns) / 1000;
        sl__req_tracef(req, "TLS %s, %s, ALPN %s%s", sl__tls_version(c->tls),
                       sl__tls_cipher(c->tls), sl__tls_alpn(c->tls)[0] ? sl__tls_alpn(c->tls) : "-",
                       sl__tls_resumed(c->tls) ? ", session resumed" : "");
        if (c->client->opts.tls_insecure)
            sl__req_tracef(req, "WARNING: certificate verification is disabled (--insecure)");
    }
    c->tp = &sl__transport_tls;
    conn_ready(c);
}

static void conn_connected(struct conn *c, struct attempt *win)
{
    sl_req_t *req = c->req;

    c->fd = win->fd;
    /* The attempt's registration (write interest) becomes the connection's. */
    sl_io_init(c->client->loop, &c->io, c->fd, conn_io_cb);
    sl__io_move(&win->io, &c->io);
    c->interest = SL_EV_WRITE;
    win->fd = -1;
    c->nattempts_live--;
    for (int i = 0; i < CONN_MAX_ATTEMPTS; i++)
        attempt_close(&c->attempts[i]);
    sl_timer_stop(&c->he_timer);
    sa_to_text(&c->addrs->addrs[win->addr_index], c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
    sl__addrlist_release(c->addrs);
    c->addrs = NULL;
    c->t_connect_ns = sl_loop_now_ns(c->client->loop);
    if (req != NULL) {
        req->result.time_connect_us = (c->t_connect_ns - req->t0_ns) / 1000;
        sl__req_tracef(req, "Connected to %s (%s) port %u", c->origin->url.host, c->peer_ip,
                       c->peer_port);
    }
    if (strcmp(c->origin->url.scheme, "https") == 0) {
        /* The session cache is per origin: resumption never crosses hosts. */
        int rc = sl__tls_new(c->client->tls, c->fd, c->origin->url.host, c->origin->key, &c->tls);
        if (rc < 0) {
            conn_fail_connect(c, rc, "could not start TLS");
            return;
        }
        conn_set_state(c, CONN_HANDSHAKE);
        if (req != NULL)
            sl__req_tls_start(req);
        conn_handshake(c);
        return;
    }
    conn_ready(c);
}

/* ---- idle ------------------------------------------------------------------------ */

/* A pooled TLS connection keeps OpenSSL's record buffers this long, so that
 * back-to-back keep-alive requests reuse them; then the idle timer's first
 * stage releases them (sl__tls_idle) and its second stage is the expiry. */
#define IDLE_TRIM_MS 100

void sl__conn_idle(struct conn *c)
{
    uint64_t expiry = c->client->opts.idle_timeout_ms;

    conn_set_state(c, CONN_IDLE);
    c->req = NULL;
    c->idle_since_ms = sl_loop_now(c->client->loop);
    if (c->rbuf != NULL && c->rbuf != c->client->rscratch && c->rstart == c->rend) {
        /* Its own buffer only ever held what a pause left: not needed idle.
         * (During a feed rbuf is the shared buffer: conn_read restores.) */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    if (c->rstart == c->rend)
        c->rstart = c->rend = 0;
    /* No trim when the expiry comes first: closing frees everything. */
    c->trim_pending = c->tls != NULL && (expiry == 0 || expiry > IDLE_TRIM_MS);
    sl__queue_insert_head(&c->origin->idle, &c->node);
    c->client->nidle++;
    /* Watch for the peer closing an idle connection. */
    c->interest = SL_EV_READ;
    sl_io_start(&c->io, SL_EV_READ);
    sl_io_unref(&c->io);
    if (c->trim_pending || expiry > 0) {
        sl_timer_start(&c->idle_timer, c->trim_pending ? IDLE_TRIM_MS : expiry, 0);
        sl_timer_unref(&c->idle_timer);
    } else {
        sl_timer_stop(&c->idle_timer); /* an orphan's connect guard, now pooled */
    }
}

static void idle_timer_cb(sl_timer_t *t)
{
    struct conn *c = sl__container_of(t, struct conn, idle_timer);
    uint64_t expiry = c->client->opts.idle_timeout_ms;

    if (c->state == CONN_BUSY || c->req != NULL)
        return;
    if (c->trim_pending) {
        c->trim_pending = false;
        sl__tls_idle(c->tls); /* OpenSSL's record buffers */
        if (expiry > 0) {
            uint64_t idle = sl_loop_now(c->client->loop) - c->idle_since_ms;
            sl_timer_start(&c->idle_timer, idle < expiry ? expiry - idle : 0, 0);
            sl_timer_unref(&c->idle_timer);
        }
        return;
    }
    sl__conn_close(c); /* idle expiry, or an orphan that never connected */
}

bool sl__conn_alive(struct conn *c)
{
    char b;
    ssize_t r;

    if (c->state != CONN_IDLE || c->fd < 0)
        return false;
    /* A peer's close is seen by the idle watcher at the next wait; a
     * connection idle for less than a second is taken as alive without a
     * system call (the stale-connection retry covers the race). */
    if (sl_loop_now(c->client->loop) - c->idle_since_ms < 1000)
        return true;
    if (c->tls != NULL) {
        size_t n = 0;
        return c->tp->read(c, &b, 1, &n) == SL_EAGAIN;
    }
    r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* ---- the exchange --------------------------------------------------------------- */

void sl__conn_update_interest(struct conn *c)
{
    sl_req_t *req = c->req;
    unsigned want = 0;

    if (c->state != CONN_BUSY || req == NULL)
        return;
    if (!req->paused)
        want |= SL_EV_READ;
    if (!req->upload_done && !req->expect_wait && !req->upload_paused)
        want |= SL_EV_WRITE;
    want |= c->tp->wants(c);
    if (want != c->interest) {
        c->interest = want;
        if (want == 0)
            sl_io_stop(&c->io);
        else
            sl_io_start(&c->io, want);
    }
}

void sl__conn_exchange(struct conn *c)
{
    sl_req_t *req = c->req;

    sl_timer_stop(&c->idle_timer);
    c->trim_pending = false;
    if (sl__queue_linked(&c->node)) {
        sl__queue_remove(&c->node);
        c->client->nidle--;
    }
    if (c->state != CONN_BUSY)
        conn_set_state(c, CONN_BUSY);
    sl_io_ref(&c->io);
    sl__resp_parser_reset(&c->parser, strcmp(req->method, "HEAD") == 0);
    c->msg_complete = false;
    c->feed_pending = false;
    c->interim_seen = c->parser.interim_count;
    req->result.reused = c->requests > 0;
    memcpy(req->remote_ip, c->peer_ip, sizeof(req->remote_ip));
    req->result.remote_ip = req->remote_ip;
    req->result.remote_port = c->peer_port;
    c->requests++;
    /* Write what we can right away, without waiting a loop turn: the socket
     * is almost always writable, and a request that leaves early starts the
     * server's clock early. This is never reached from inside a user's call
     * (requests start from deferred callbacks), so running the handler here
     * re-enters nothing. Reading waits for the socket to say there is
     * something. */
    c->interest = ~0u;
    conn_enter(c);
    conn_handle(c, SL_EV_WRITE);
    if (conn_leave(c))
        sl__conn_update_interest(c);
}

/* Write as much of the request as the socket takes. Returns false if the
 * connection went away. */
static bool conn_write(struct conn *c)
{
    sl_req_t *req = c->req;

    while (req != NULL && !req->upload_done) {
        struct iovec iov[4];
        int err = 0;
        int n = sl__req_upload_iov(req, iov, 4, &err);
        size_t w = 0;
        int rc;

        if (err < 0) {
            sl__req_fail(req, err, "request body producer failed: %s", sl_strerror(err));
            return false;
        }
        if (n == 0) {
            if (req->upload_done) {
                if (req->state == REQ_SEND)
                    sl__req_sent(req);
            } else if (req->expect_wait && req->head_off >= req->head_len &&
                       !sl_timer_active(&c->he_timer)) {
                sl_timer_start(&c->he_timer, EXPECT_CONTINUE_WAIT_MS, 0);
            }
            break;
        }
        rc = c->tp->writev(c, iov, n, &w);
        if (rc == SL_EAGAIN)
            break;
        if (rc < 0) {
            sl__req_conn_error(req, rc, "sending the request failed");
            return false;
        }
        sl__req_upload_advance(req, w);
    }
    return true;
}

static int parser_on_head(void *ctx, const struct sl__resp_head *h)
{
    struct conn *c = ctx;

    if (c->req == NULL)
        return SL_ECANCELED;
    if (c->req->expect_wait) {
        /* A final answer instead of 100 Continue: the body is never sent,
         * so the connection cannot carry another request. */
        c->req->expect_wait = false;
        c->req->upload_done = true;
        c->reusable = false;
    }
    return sl__req_on_head(c->req, h);
}

static int parser_on_interim(void *ctx, const struct sl__resp_head *h)
{
    struct conn *c = ctx;

    if (c->req == NULL)
        return SL_ECANCELED;
    sl__req_on_interim(c->req, h);
    return c->req == NULL || c->state == CONN_CLOSED ? SL_ECANCELED : 0;
}

static int parser_on_body(void *ctx, const char *data, size_t len)
{
    struct conn *c = ctx;

    if (c->req == NULL)
        return SL_ECANCELED;
    return sl__req_on_body(c->req, data, len);
}

static int parser_on_complete(void *ctx, bool keep_alive)
{
    struct conn *c = ctx;

    c->msg_complete = true;
    c->msg_keep_alive = keep_alive;
    return SL__PARSE_PAUSE;
}

/* The response ended: hand the connection back and tell the request. This
 * is the last thing a handler does with `c`. */
static void conn_complete(struct conn *c)
{
    sl_req_t *req = c->req;
    bool keep = c->msg_keep_alive && c->reusable && req->upload_done && c->rstart == c->rend;

    if (!keep)
        c->reusable = false;
    sl__req_on_complete(req, keep);
}

/* Feed buffered bytes to the parser. Returns false if the handler must stop
 * (connection closed, request gone, paused, or message complete). */
static bool conn_feed(struct conn *c)
{
    /* After a pause the parser needs one more feed, even of zero bytes:
     * the end of the message may be pending inside it. */
    while (c->rstart < c->rend || c->feed_pending) {
        sl_req_t *req = c->req;
        size_t used = 0;
        int rc = sl__resp_parser_feed(&c->parser, c->rbuf + c->rstart, c->rend - c->rstart, &used);

        c->feed_pending = false;
        if (c->state == CONN_CLOSED || c->req != req || req == NULL)
            return false;
        c->rstart += used;
        if (c->rstart == c->rend)
            c->rstart = c->rend = 0;
        if (req->expect_wait && c->parser.interim_count != c->interim_seen) {
            req->expect_wait = false; /* 100 Continue: send the body now */
            sl_timer_stop(&c->he_timer);
            if (!conn_write(c))
                return false;
        }
        if (rc < 0) {
            sl__req_conn_error(req, rc, sl__resp_parser_errdetail(&c->parser));
            return false;
        }
        if (c->msg_complete) {
            conn_complete(c);
            return false;
        }
        if (rc == SL__PARSE_PAUSE) {
            sl__resp_parser_resume(&c->parser);
            c->feed_pending = true;
            if (req->paused)
                return false;
        }
    }
    return true;
}

static void conn_on_eof(struct conn *c)
{
    sl_req_t *req = c->req;
    bool started = sl__resp_parser_started(&c->parser);
    int rc;

    c->reusable = false;
    if (!started && !req->got_response_byte) {
        /* curl's "empty reply from server" (52): a close, not a reset. */
        sl__req_conn_error(req, SL_EOF,
                           "connection closed by the server before any "
                           "response byte (empty reply)");
        return;
    }
    if (c->unclean_eof && c->parser.head.close_delimited && !c->msg_complete) {
        /* Without close_notify the end of a close-delimited body cannot be
         * told from a cut (a truncation attack): never report success. */
        sl__req_conn_error(req, SL_ETRUNCATED,
                           "the TLS connection closed without close_notify in the middle of "
                           "a body delimited by the connection's end");
        return;
    }
    rc = sl__resp_parser_finish(&c->parser);
    if (c->state == CONN_CLOSED || c->req != req)
        return;
    if (rc < 0) {
        sl__req_conn_error(req, rc,
                           rc == SL_ETRUNCATED
                               ? "connection closed before the response was complete"
                               : sl__resp_parser_errdetail(&c->parser));
        return;
    }
    if (c->msg_complete)
        conn_complete(c);
    else
        sl__req_conn_error(req, SL_ETRUNCATED,
                           "connection closed before the response was complete");
}

/* Keep what the parser left unread (a pause, or bytes after the message)
 * in the connection's own buffer; the shared one is reused by the next
 * read of any connection. */
static bool conn_keep_rest(struct conn *c, const char *rest, size_t len)
{
    if (len > c->rcap) {
        size_t cap = len > RBUF_MIN ? len : RBUF_MIN;
        char *p = malloc(cap);
        if (p == NULL)
            return false;
        free(c->rbuf);
        c->rbuf = p;
        c->rcap = cap;
    }
    memmove(c->rbuf, rest, len);
    c->rstart = 0;
    c->rend = len;
    return true;
}

/*
 * Reads go into one buffer per client (RSCRATCH bytes) and are parsed from
 * there: a connection owns read memory only while a paused transfer leaves
 * bytes unparsed, so a thousand connections do not hold a thousand
 * buffers, and every read may move a large block. Nothing can read into
 * the shared buffer while it is being parsed: user callbacks that resume or
 * start transfers only queue deferred work.
 */
static void conn_read(struct conn *c)
{
    sl_client_t *cl = c->client;

    if (cl->rscratch == NULL && (cl->rscratch = malloc(RSCRATCH)) == NULL) {
        sl__req_conn_error(c->req, SL_ENOMEM, "out of memory");
        return;
    }
    if (cl->rscratch_busy) {
        /* Inside another feed on the shared buffer (over TLS a redirect
         * may start the next exchange on this connection from within the
         * feed, and the handler then reads): read from the loop instead. */
        sl__conn_kick(c);
        return;
    }
    for (unsigned i = 0; i < READS_PER_EVENT; i++) {
        sl_req_t *req = c->req;
        char *own = c->rbuf;
        size_t own_cap = c->rcap, n = 0;
        int rc;

        if (req == NULL || req->paused || c->rstart < c->rend)
            return; /* bytes a pause left behind go first (conn_feed) */
        rc = c->tp->read(c, cl->rscratch, RSCRATCH, &n);
        if (rc == SL_EAGAIN)
            return;
        if (rc == SL_EOF || (rc == SL_ETRUNCATED && c->tls != NULL)) {
            c->unclean_eof = rc == SL_ETRUNCATED;
            conn_on_eof(c);
            return;
        }
        if (rc < 0) {
            sl__req_conn_error(req, rc, "receiving the response failed");
            return;
        }
        if (!req->got_response_byte)
            sl__req_first_byte(req);
        sl__req_activity(req);
        /* Parse in place: the connection's buffer points at the shared one
         * for the duration of the feed (the connection's memory is freed
         * only when its handler unwinds, after this). */
        c->rbuf = cl->rscratch;
        c->rcap = RSCRATCH;
        c->rstart = 0;
        c->rend = n;
        cl->rscratch_busy = true;
        bool go_on = conn_feed(c);
        cl->rscratch_busy = false;
        size_t left = c->rend - c->rstart;
        const char *rest = c->rbuf + c->rstart;
        c->rbuf = own;
        c->rcap = own_cap;
        c->rstart = c->rend = 0;
        if (left == 0 && own != NULL) {
            /* Its own buffer was empty before this read (see above) and
             * nothing is left over: let it go (sl__conn_idle, which may
             * have run during the feed, could not). */
            free(own);
            c->rbuf = NULL;
            c->rcap = 0;
        }
        if (left > 0 && !conn_keep_rest(c, rest, left)) {
            if (c->state != CONN_CLOSED && c->req != NULL)
                sl__req_conn_error(c->req, SL_ENOMEM, "out of memory");
            return;
        }
        if (!go_on)
            return;
        if (i + 1 == READS_PER_EVENT && c->tp->has_pending(c)) {
            /* Plaintext waits inside OpenSSL and the fd will not say so:
             * come back before the loop blocks. */
            sl__conn_kick(c);
            return;
        }
        if (n < RSCRATCH / 2 && !c->tp->has_pending(c))
            return; /* drained the socket for now */
    }
}

/* An idle connection became readable. For plain TCP that can only be the
 * peer closing (or sending garbage): close. Over TLS it may also be a
 * session ticket or a KeyUpdate, which a read consumes without data. */
static void conn_idle_readable(struct conn *c)
{
    char b[64];
    size_t n = 0;

    if (c->tls != NULL && c->tp->read(c, b, sizeof(b), &n) == SL_EAGAIN) {
        if (!c->trim_pending)
            sl__tls_idle(c->tls); /* already trimmed: the read took buffers again */
        return;
    }
    sl__conn_close(c);
}

static void conn_handle(struct conn *c, unsigned events)
{
    if (c->state == CONN_IDLE) {
        conn_idle_readable(c);
        return;
    }
    if (c->state == CONN_HANDSHAKE) {
        conn_handshake(c);
        return;
    }
    /* TLS may need either direction for either operation: retry both. */
    if (c->tls != NULL && events != 0)
        events |= SL_EV_READ | SL_EV_WRITE;
    if (c->state != CONN_BUSY || c->req == NULL)
        return;
    if ((events & SL_EV_WRITE) || c->interest == ~0u) {
        if (!conn_write(c) || c->state != CONN_BUSY || c->req == NULL)
            return;
    }
    if ((events & (SL_EV_READ | SL_EV_HUP | SL_EV_ERR)) || c->rstart < c->rend) {
        if ((c->rstart < c->rend || c->feed_pending) && !c->req->paused && !conn_feed(c))
            return;
        if (c->state != CONN_BUSY || c->req == NULL)
            return;
        conn_read(c);
    }
}

static void conn_io_cb(sl_io_t *io, unsigned events)
{
    struct conn *c = sl__container_of(io, struct conn, io);

    conn_enter(c);
    conn_handle(c, events);
    if (conn_leave(c))
        sl__conn_update_interest(c);
}

/* Deferred work: the first write of an exchange, resuming after a pause
 * (buffered bytes are fed without waiting for the socket), an upload that
 * the producer resumed. */
static void conn_defer_cb(sl_defer_t *d)
{
    struct conn *c = sl__container_of(d, struct conn, defer);
    unsigned events = c->kick_events;

    c->kick_events = 0;
    conn_enter(c);
    conn_handle(c, events);
    if (conn_leave(c))
        sl__conn_update_interest(c);
}

void sl__conn_kick(struct conn *c)
{
    if (c->state == CONN_BUSY) {
        /* Resumed: feed what is buffered, read, and send what is pending. */
        c->kick_events |= SL_EV_READ | SL_EV_WRITE;
        sl_defer_start(&c->defer);
    }
}
