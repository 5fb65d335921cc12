/*
 * group.c -- transfer groups: a set of requests (and of other groups) that
 * ends as one.
 *
 * A group counts its members that have not ended (`pending`). It ends when
 * it has been started, is not held open, and `pending` reaches zero; its
 * done callback then runs from the group's deferred callback, and only
 * after it does the parent (if any) hear that this member ended, so results
 * flow upwards in order.
 *
 * Failure: a member request fails when its result carries an error; a
 * member group fails when it ended with an error. In SL_GROUP_FAIL_FAST mode
 * the first failure aborts the group: every pending member is cancelled
 * (requests end with SL_ECANCELED, groups recursively), and the group
 * reports that first failure. sl_group_cancel() and the deadline abort the
 * group the same way in either mode, with SL_ECANCELED and
 * SL_ETIMEDOUT_GROUP. In every case the first cause wins.
 *
 * Ownership: a group owns the requests and groups added to it and frees
 * them in sl_group_free(). A member freed on its own (sl_req_free() or
 * sl_group_free()) leaves the group first: its slot stays, empty, and counts
 * as ended with SL_ECANCELED if it had not ended yet. The group's memory,
 * like a request's, is released from its deferred callback, so freeing it
 * inside its own callback is safe.
 */
#include "http-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct member {
    sl_req_t *req; /* one of req and group is set; both NULL once detached */
    sl_group_t *group;
    bool ended;
    int err;
};

struct sl_group_s {
    sl_loop_t *loop;
    sl_group_mode_t mode;
    void *data;
    sl_group_t *parent;
    size_t parent_index;
    struct member *members;
    size_t n, cap;
    size_t pending;       /* members that have not ended */
    size_t failed;        /* members that ended with an error */
    uint64_t deadline_ms; /* 0: none */
    sl_timer_t deadline;
    sl_defer_t defer; /* the done callback; the release after free */
    sl_group_cb on_done;
    int error;    /* the first cause, 0 while none */
    size_t cause; /* index of the member that failed first, or SIZE_MAX */
    char errmsg[256];
    bool started;
    bool held;     /* sl_group_hold(): do not end yet */
    bool aborting; /* members are being (or were) cancelled */
    bool done;     /* ended; on_done queued or run */
    bool done_pending;
    bool freed;
};

static void group_defer_cb(sl_defer_t *d);
static void group_deadline_cb(sl_timer_t *t);
static void group_member_ended(sl_group_t *g, size_t i, int err);

int sl_group_new(sl_loop_t *loop, sl_group_mode_t mode, sl_group_t **out)
{
    sl_group_t *g;

    *out = NULL;
    if (mode != SL_GROUP_COLLECT && mode != SL_GROUP_FAIL_FAST)
        return SL_EINVAL;
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return SL_ENOMEM;
    g->loop = loop;
    g->mode = mode;
    g->cause = SIZE_MAX;
    sl_timer_init(loop, &g->deadline, group_deadline_cb);
    sl_defer_init(loop, &g->defer, group_defer_cb);
    *out = g;
    return 0;
}

void sl_group_set_data(sl_group_t *g, void *data)
{
    g->data = data;
}

void *sl_group_data(const sl_group_t *g)
{
    return g->data;
}

/* The group ends if nothing keeps it going. */
static void group_maybe_done(sl_group_t *g)
{
    if (g->done || !g->started || g->held || g->pending > 0)
        return;
    g->done = true;
    sl_timer_stop(&g->deadline);
    if (g->error != 0 && g->errmsg[0] == '\0')
        snprintf(g->errmsg, sizeof(g->errmsg), "%s", sl_strerror(g->error));
    if (!g->freed) {
        g->done_pending = true;
        sl_defer_start(&g->defer);
    }
}

/* Cancel every pending member with `err`. */
static void group_abort(sl_group_t *g, int err, const char *why)
{
    if (g->aborting || g->done)
        return;
    g->aborting = true;
    if (g->error == 0) {
        g->error = err;
        snprintf(g->errmsg, sizeof(g->errmsg), "%s", why);
    }
    sl_timer_stop(&g->deadline);
    /* Cancelling only queues each member's end: none re-enters us here. */
    for (size_t i = 0; i < g->n; i++) {
        struct member *m = &g->members[i];
        if (m->ended)
            continue;
        if (m->req != NULL && m->req->state == REQ_NEW && !m->req->start_pending) {
            /* Never started: it ends here, without running. */
            sl_req_t *req = m->req;
            sl__req_errmsg(req, "%s", why);
            req->result.error = err;
            req->result.errmsg = sl__req_errmsg_text(req);
            sl__group_req_ended(req, err);
        } else if (m->req != NULL) {
            sl__req_abort(m->req, err, "%s", why);
        } else if (m->group != NULL) {
            sl_group_t *child = m->group;
            group_abort(child, err, why);
            child->started = true; /* it ends as soon as its members have */
            group_maybe_done(child);
        }
    }
}

static void group_member_ended(sl_group_t *g, size_t i, int err)
{
    struct member *m = &g->members[i];

    if (m->ended)
        return;
    m->ended = true;
    m->err = err;
    g->pending--;
    if (err != 0) {
        g->failed++;
        if (g->error == 0) {
            g->error = err;
            g->cause = i;
            if (m->req != NULL)
                snprintf(g->errmsg, sizeof(g->errmsg), "%s: %s", sl_req_url(m->req),
                         sl_req_errdetail(m->req));
            else if (m->group != NULL)
                snprintf(g->errmsg, sizeof(g->errmsg), "%s", m->group->errmsg);
        }
        if (g->mode == SL_GROUP_FAIL_FAST)
            group_abort(g, SL_ECANCELED, "cancelled: another transfer in its group failed");
    }
    group_maybe_done(g);
}

/* Called by client.c once a member request's done callback has run (or
 * would have: a freed request). */
void sl__group_req_ended(sl_req_t *req, int err)
{
    sl_group_t *g = req->group;

    if (g == NULL || req->group_ended)
        return;
    req->group_ended = true;
    group_member_ended(g, req->group_index, err);
}

/* A member request is being freed on its own: it leaves the group. */
void sl__group_req_detach(sl_req_t *req)
{
    sl_group_t *g = req->group;

    if (g == NULL)
        return;
    sl__group_req_ended(req, req->state == REQ_DONE ? req->result.error : SL_ECANCELED);
    g->members[req->group_index].req = NULL;
    req->group = NULL;
}

static int group_grow(sl_group_t *g)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        struct member *p = realloc(g->members, cap * sizeof(*p));
        if (p == NULL)
            return SL_ENOMEM;
        g->members = p;
        g->cap = cap;
    }
    return 0;
}

static void group_start_member(sl_group_t *g, size_t i);

int sl_group_add(sl_group_t *g, sl_req_t *req)
{
    int rc;

    if (g->done || g->freed || req->group != NULL || req->freed || req->state == REQ_DONE)
        return SL_EINVAL;
    if (g->aborting)
        return SL_ECANCELED;
    rc = group_grow(g);
    if (rc < 0)
        return rc;
    g->members[g->n] = (struct member){.req = req};
    req->group = g;
    req->group_index = g->n;
    req->group_ended = false;
    g->n++;
    g->pending++;
    if (g->started)
        group_start_member(g, g->n - 1);
    return 0;
}

int sl_group_add_group(sl_group_t *parent, sl_group_t *child)
{
    int rc;

    if (parent->done || parent->freed || child->parent != NULL || child == parent || child->freed ||
        child->done)
        return SL_EINVAL;
    for (sl_group_t *p = parent->parent; p != NULL; p = p->parent)
        if (p == child)
            return SL_EINVAL; /* a cycle */
    if (parent->aborting)
        return SL_ECANCELED;
    rc = group_grow(parent);
    if (rc < 0)
        return rc;
    parent->members[parent->n] = (struct member){.group = child};
    child->parent = parent;
    child->parent_index = parent->n;
    parent->n++;
    parent->pending++;
    if (parent->started)
        group_start_member(parent, parent->n - 1);
    return 0;
}

void sl_group_deadline(sl_group_t *g, uint64_t ms)
{
    g->deadline_ms = ms;
    if (g->started && !g->done && !g->aborting) {
        if (ms > 0)
            sl_timer_start(&g->deadline, ms, 0);
        else
            sl_timer_stop(&g->deadline);
    }
}

static void group_deadline_cb(sl_timer_t *t)
{
    sl_group_t *g = sl__container_of(t, sl_group_t, deadline);
    char why[96];

    snprintf(why, sizeof(why), "the group's deadline of %llu ms passed",
             (unsigned long long)g->deadline_ms);
    group_abort(g, SL_ETIMEDOUT_GROUP, why);
}

static int group_start(sl_group_t *g, sl_group_cb on_done);

static void group_start_member(sl_group_t *g, size_t i)
{
    struct member *m = &g->members[i];
    int rc = 0;

    if (m->req != NULL) {
        sl_req_t *req = m->req;
        if (req->state == REQ_NEW && !req->start_pending) {
            rc = sl_req_start(req);
            if (rc < 0) {
                sl__req_errmsg(req, "could not start: %s", sl_strerror(rc));
                req->result.error = rc;
                req->result.errmsg = sl__req_errmsg_text(req);
                sl__group_req_ended(req, rc);
            }
        }
    } else if (m->group != NULL && !m->group->started) {
        rc = group_start(m->group, m->group->on_done);
        if (rc < 0)
            group_member_ended(g, i, rc);
    }
}

static int group_start(sl_group_t *g, sl_group_cb on_done)
{
    if (g->started || g->freed)
        return SL_EINVAL;
    g->started = true;
    g->on_done = on_done;
    if (g->aborting) {
        group_maybe_done(g); /* cancelled before it started: nothing runs */
        return 0;
    }
    if (g->deadline_ms > 0)
        sl_timer_start(&g->deadline, g->deadline_ms, 0);
    /* Members added by a callback during this walk start in sl_group_add(). */
    for (size_t i = 0, n = g->n; i < n && !g->aborting; i++)
        group_start_member(g, i);
    group_maybe_done(g);
    return 0;
}

int sl_group_start(sl_group_t *g, sl_group_cb on_done)
{
    if (g->parent != NULL && !g->parent->started)
        return SL_EINVAL; /* a nested group starts with its parent */
    return group_start(g, on_done);
}

int sl_group_on_done(sl_group_t *g, sl_group_cb on_done)
{
    if (g->started)
        return SL_EINVAL;
    g->on_done = on_done;
    return 0;
}

void sl_group_hold(sl_group_t *g, bool hold)
{
    g->held = hold;
    if (!hold)
        group_maybe_done(g);
}

void sl_group_cancel(sl_group_t *g)
{
    group_abort(g, SL_ECANCELED, "the group was cancelled");
    group_maybe_done(g);
}

void sl_group_fail(sl_group_t *g, int err, const char *why)
{
    if (err >= 0 || g->done)
        return;
    if (g->error == 0) {
        g->error = err;
        snprintf(g->errmsg, sizeof(g->errmsg), "%s", why != NULL ? why : sl_strerror(err));
    }
    if (g->mode == SL_GROUP_FAIL_FAST)
        group_abort(g, SL_ECANCELED, "cancelled: another transfer in its group failed");
}

int sl_group_error(const sl_group_t *g)
{
    return g->error;
}

const char *sl_group_errdetail(const sl_group_t *g)
{
    return g->errmsg;
}

bool sl_group_done(const sl_group_t *g)
{
    return g->done;
}

size_t sl_group_size(const sl_group_t *g)
{
    return g->n;
}

sl_req_t *sl_group_req(const sl_group_t *g, size_t i)
{
    return i < g->n ? g->members[i].req : NULL;
}

sl_group_t *sl_group_child(const sl_group_t *g, size_t i)
{
    return i < g->n ? g->members[i].group : NULL;
}

long sl_group_cause(const sl_group_t *g)
{
    return g->cause == SIZE_MAX ? -1 : (long)g->cause;
}

void sl_group_counts(const sl_group_t *g, size_t *running, size_t *ok, size_t *failed)
{
    if (running != NULL)
        *running = g->pending;
    if (failed != NULL)
        *failed = g->failed;
    if (ok != NULL)
        *ok = g->n - g->pending - g->failed;
}

static void group_defer_cb(sl_defer_t *d)
{
    sl_group_t *g = sl__container_of(d, sl_group_t, defer);

    if (g->freed) {
        free(g->members);
        free(g);
        return;
    }
    if (!g->done_pending)
        return;
    g->done_pending = false;
    if (g->on_done != NULL)
        g->on_done(g, g->error);
    /* The parent hears of it after our own callback (which may free us). */
    if (!g->freed && g->parent != NULL)
        group_member_ended(g->parent, g->parent_index, g->error);
}

void sl_group_free(sl_group_t *g)
{
    if (g == NULL || g->freed)
        return;
    if (g->parent != NULL) {
        sl_group_t *p = g->parent;
        group_member_ended(p, g->parent_index, g->done ? g->error : SL_ECANCELED);
        p->members[g->parent_index].group = NULL;
        g->parent = NULL;
    }
    g->freed = true; /* our own done callback will not run */
    g->done_pending = false;
    sl_timer_stop(&g->deadline);
    for (size_t i = 0; i < g->n; i++) {
        struct member *m = &g->members[i];
        if (m->req != NULL) {
            m->req->group = NULL; /* no bookkeeping on a group being freed */
            sl_req_free(m->req);
        } else if (m->group != NULL) {
            m->group->parent = NULL;
            sl_group_free(m->group);
        }
        m->req = NULL;
        m->group = NULL;
    }
    sl_defer_start(&g->defer);
}
