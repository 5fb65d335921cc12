/*
 * pool.c -- connections per origin, limits, and the queue of waiting
 * requests.
 *
 * An origin is (scheme, host, port). Each keeps its idle connections in a
 * LIFO list: the most recently used connection is the likeliest to still be
 * open at the server and to have a warm congestion window. A request gets,
 * in order of preference: an idle connection of its origin that still looks
 * alive; a new connection if the global limit (max_connections) and the
 * origin's limit (max_connections_per_host) allow; a new connection after
 * closing an idle connection of another origin, when only the global limit
 * is in the way; or a place at the tail of the client's FIFO of waiting
 * requests.
 *
 * When a slot frees up (a connection closes or goes idle), the waiting
 * requests are served in FIFO order, skipping those whose origin is still at
 * its own limit. That walk runs from a deferred callback, never from inside
 * the event that freed the slot, so connection and request handlers are
 * never re-entered.
 */
#include "http-int.h"

#include <stdlib.h>
#include <string.h>

struct origin *sl__pool_origin(sl_client_t *c, const struct sl__url *u)
{
    struct origin *o;
    char *key;

    /* Compared field by field: no string is built on the hot path. */
    for (o = c->origins; o != NULL; o = o->next)
        if (sl__url_same_origin(&o->url, u))
            return o;
    key = sl__url_origin(u);
    if (key == NULL)
        return NULL;
    o = calloc(1, sizeof(*o));
    if (o == NULL || sl__url_copy(&o->url, u) < 0) {
        free(o);
        free(key);
        return NULL;
    }
    o->key = key;
    sl__queue_init(&o->idle);
    sl__bucket_init(&o->bucket, c->opts.host_rate_per_s,
                    c->opts.host_rate_burst > 0 ? c->opts.host_rate_burst : 1,
                    sl_loop_now_ns(c->loop));
    sl__aimd_init(&o->aimd,
                  c->opts.max_connections_per_host > 0 ? c->opts.max_connections_per_host
                                                       : c->opts.max_connections,
                  c->opts.host_rate_per_s > 0 ? c->opts.host_rate_per_s : c->opts.rate_per_s);
    o->next = c->origins;
    c->origins = o;
    return o;
}

/* The origin's connection cap now: the configured one, or lower while it
 * is backing off. 0: none. */
static unsigned origin_cap(const sl_client_t *c, const struct origin *o)
{
    unsigned cap = c->opts.max_connections_per_host;
    if (o->aimd.limit > 0 && (cap == 0 || o->aimd.limit < cap))
        cap = o->aimd.limit;
    return cap;
}

static bool origin_has_room(const sl_client_t *c, const struct origin *o)
{
    unsigned cap = origin_cap(c, o);
    return cap == 0 || o->nconns < cap;
}

/* Close the least recently used idle connection of any origin but `keep`,
 * to make room under the global limit. Returns true if one was closed. */
static bool evict_idle(sl_client_t *c, const struct origin *keep)
{
    for (struct origin *o = c->origins; o != NULL; o = o->next) {
        if (o == keep || sl__queue_empty(&o->idle))
            continue;
        /* The tail of the LIFO list is the one idle the longest. */
        struct conn *victim = sl__queue_data(o->idle.prev, struct conn, node);
        sl__conn_close(victim);
        return true;
    }
    return false;
}

/* Try to give `req` a connection now. Returns 1 if it got one, 0 if it must
 * wait, or a negative error. */
static int try_acquire(sl_client_t *c, sl_req_t *req, struct origin *o)
{
    struct conn *conn;
    int rc;

    if (!req->force_fresh) {
        while (!sl__queue_empty(&o->idle)) {
            conn = sl__queue_data(o->idle.next, struct conn, node);
            if (sl__conn_alive(conn)) {
                sl__conn_bind(conn, req);
                sl__req_conn_ready(req);
                return 1;
            }
            sl__conn_close(conn);
        }
    }
    if (!origin_has_room(c, o))
        return 0;
    if (c->nconns >= c->opts.max_connections && !evict_idle(c, o))
        return 0;
    if (c->nconns >= c->opts.max_connections)
        return 0;
    conn = sl__conn_new(c, o);
    if (conn == NULL)
        return SL_ENOMEM;
    sl__conn_bind(conn, req);
    req->force_fresh = false;
    rc = sl__conn_start(conn);
    if (rc < 0) {
        sl__conn_detach(conn, false);
        return rc;
    }
    return 1;
}

int sl__pool_acquire(sl_client_t *c, sl_req_t *req)
{
    struct origin *o = sl__pool_origin(c, &req->url);
    int rc;

    if (o == NULL)
        return SL_ENOMEM;
    req->origin = o;
    /* Requests already waiting go first (FIFO), unless this one can use an
     * idle connection of its own origin. */
    if (!sl__queue_empty(&c->waiting) && sl__queue_empty(&o->idle)) {
        sl__queue_insert_tail(&c->waiting, &req->wait_node);
        sl__pool_dispatch(c);
        return 0;
    }
    rc = try_acquire(c, req, o);
    if (rc < 0)
        return rc;
    if (rc == 0)
        sl__queue_insert_tail(&c->waiting, &req->wait_node);
    return 0;
}

void sl__pool_remove_waiting(sl_req_t *req)
{
    sl__queue_remove(&req->wait_node);
}

static void pool_dispatch_cb(sl_defer_t *d)
{
    sl_client_t *c = sl__container_of(d, sl_client_t, dispatcher);
    struct sl__queue *q = c->waiting.next;

    while (q != &c->waiting) {
        sl_req_t *req = sl__queue_data(q, sl_req_t, wait_node);
        struct sl__queue *next = q->next;
        struct origin *o = req->origin;
        int rc;

        /* Nothing can move: every slot is busy and no connection is idle. */
        if (c->nconns >= c->opts.max_connections && c->nidle == 0)
            break;
        if (sl__queue_empty(&o->idle) && !origin_has_room(c, o)) {
            q = next;
            continue;
        }
        sl__queue_remove(q);
        rc = try_acquire(c, req, o);
        if (rc < 0) {
            sl__req_fail(req, rc, "could not start a connection: %s", sl_strerror(rc));
        } else if (rc == 0) {
            /* Still no room: back in its place. */
            q = next;
            sl__queue_insert_tail(next, &req->wait_node);
            continue;
        }
        q = next;
    }
    /* Draining: an idle connection no waiting request took is of no use. */
    if (c->draining)
        sl__pool_close_idle(c);
}

void sl__pool_close_idle(sl_client_t *c)
{
    for (struct origin *o = c->origins; o != NULL; o = o->next)
        while (!sl__queue_empty(&o->idle))
            sl__conn_close(sl__queue_data(o->idle.next, struct conn, node));
}

void sl__pool_dispatch(sl_client_t *c)
{
    if (!sl__queue_empty(&c->waiting))
        sl_defer_start(&c->dispatcher);
}

/* The host's rate allowance changed: its bucket follows (the configured
 * rate when the back-off is over). */
static void origin_apply_rate(sl_client_t *c, struct origin *o)
{
    double rate = o->aimd.rate > 0 ? o->aimd.rate : c->opts.host_rate_per_s;
    uint64_t now = sl_loop_now_ns(c->loop);

    sl__bucket_wait_ns(&o->bucket, now); /* accrue at the old rate up to now */
    o->bucket.rate = rate;
    if (rate > 0 && o->bucket.tokens > 1)
        o->bucket.tokens = 1; /* no burst right after an overload */
}

void sl__pool_sending(sl_client_t *c, sl_req_t *req)
{
    struct origin *o = req->origin;
    uint64_t now = sl_loop_now_ns(c->loop);

    if (o == NULL)
        return;
    req->aimd_epoch = o->aimd.epoch;
    /* The pace of requests sent to this host: the rate the back-off halves
     * when no rate limit was set. */
    if (o->last_start_ns != 0) {
        double gap = (double)(now - o->last_start_ns);
        o->gap_ns = o->gap_ns > 0 ? (o->gap_ns * 7 + gap) / 8 : gap;
    }
    o->last_start_ns = now;
}

void sl__pool_overloaded(sl_client_t *c, sl_req_t *req)
{
    struct origin *o = req->origin;

    double observed = o != NULL && o->gap_ns > 0 ? 1e9 / o->gap_ns : 0;

    if (o == NULL || !sl__aimd_decrease(&o->aimd, req->aimd_epoch, o->nconns, observed))
        return;
    origin_apply_rate(c, o);
    /* Idle connections beyond the allowance go now; busy ones when they
     * finish (sl__pool_release). */
    while (o->nconns > o->aimd.limit && !sl__queue_empty(&o->idle))
        sl__conn_close(sl__queue_data(o->idle.prev, struct conn, node));
    if (o->aimd.rate > 0)
        sl__req_tracef(req, "Backing off %s: at most %u connections, %.2f requests/s", o->key,
                       o->aimd.limit, o->aimd.rate);
    else
        sl__req_tracef(req, "Backing off %s: at most %u connections", o->key, o->aimd.limit);
}

void sl__pool_succeeded(sl_client_t *c, sl_req_t *req)
{
    struct origin *o = req->origin;

    if (o == NULL || !sl__aimd_increase(&o->aimd))
        return;
    if (o->aimd.rate > 0 || o->bucket.rate != c->opts.host_rate_per_s)
        origin_apply_rate(c, o);
    sl__pool_dispatch(c); /* room for one more */
}

void sl__pool_release(struct conn *conn)
{
    sl_client_t *c = conn->client;
    unsigned cap = origin_cap(c, conn->origin);

    /* Draining, a connection still serves the requests waiting for one
     * (closing it would only make them open another). */
    if (c->closing || (c->draining && sl__queue_empty(&c->waiting)) || !conn->reusable ||
        (cap > 0 && conn->origin->nconns > cap)) {
        sl__conn_close(conn);
        return;
    }
    sl__conn_idle(conn);
    sl__pool_dispatch(c);
}

void sl__pool_conn_gone(sl_client_t *c, struct origin *o)
{
    (void)o;
    if (!c->closing)
        sl__pool_dispatch(c);
}

void sl__pool_init(sl_client_t *c)
{
    sl_defer_init(c->loop, &c->dispatcher, pool_dispatch_cb);
}

void sl__pool_free(sl_client_t *c)
{
    struct origin *o = c->origins;

    while (!sl__queue_empty(&c->conns))
        sl__conn_close(sl__queue_data(c->conns.next, struct conn, all_node));
    sl_defer_stop(&c->dispatcher);
    while (o != NULL) {
        struct origin *next = o->next;
        free(o->key);
        sl__url_free(&o->url);
        free(o);
        o = next;
    }
    c->origins = NULL;
}
