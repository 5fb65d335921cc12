/*
 * limit.c -- a counting limiter (a semaphore for callbacks on one loop).
 *
 * `used` counts granted slots, including grants whose callback has not run
 * yet, so the limit is never exceeded between a grant and its delivery.
 * Grants are handed out in FIFO order and delivered through each waiter's
 * own deferred callback: sl_limit_acquire() and sl_limit_release() never
 * call user code, and a waiter cancelled before delivery gives its slot
 * straight to the next one in line.
 */
#include "reactor-int.h"

#include <string.h>

enum { W_IDLE = 0, W_WAITING, W_GRANTED, W_DELIVERED };

static void limit_deliver(sl_defer_t *d)
{
    sl_limit_waiter_t *w = sl__container_of(d, sl_limit_waiter_t, defer);

    w->state = W_DELIVERED;
    w->cb(w); /* may release, re-acquire or free `w` */
}

/* Grant slots to waiters while there is room. */
static void limit_grant(sl_limit_t *l)
{
    while (l->used < l->max && !sl__queue_empty(&l->waiters)) {
        sl_limit_waiter_t *w = sl__queue_data(l->waiters.next, sl_limit_waiter_t, node);
        sl__queue_remove(&w->node);
        w->state = W_GRANTED;
        l->used++;
        sl_defer_start(&w->defer);
    }
}

void sl_limit_init(sl_loop_t *loop, sl_limit_t *l, unsigned max)
{
    memset(l, 0, sizeof(*l));
    l->loop = loop;
    l->max = max;
    sl__queue_init(&l->waiters);
}

int sl_limit_acquire(sl_limit_t *l, sl_limit_waiter_t *w, sl_limit_cb cb)
{
    if (cb == NULL || (w->limit != NULL && (w->state == W_WAITING || w->state == W_GRANTED)))
        return SL_EINVAL;
    w->limit = l;
    w->cb = cb;
    w->state = W_WAITING;
    sl_defer_init(l->loop, &w->defer, limit_deliver);
    sl__queue_init(&w->node);
    sl__queue_insert_tail(&l->waiters, &w->node);
    limit_grant(l);
    return 0;
}

void sl_limit_cancel(sl_limit_waiter_t *w)
{
    sl_limit_t *l = w->limit;

    if (l == NULL)
        return;
    if (w->state == W_WAITING) {
        sl__queue_remove(&w->node);
    } else if (w->state == W_GRANTED) {
        sl_defer_stop(&w->defer);
        l->used--;
        limit_grant(l);
    } else {
        return;
    }
    w->state = W_IDLE;
}

void sl_limit_release(sl_limit_t *l)
{
    assert(l->used > 0);
    if (l->used > 0)
        l->used--;
    limit_grant(l);
}

void sl_limit_set_max(sl_limit_t *l, unsigned max)
{
    l->max = max;
    limit_grant(l);
}

unsigned sl_limit_in_use(const sl_limit_t *l)
{
    return l->used;
}

unsigned sl_limit_waiting(const sl_limit_t *l)
{
    unsigned n = 0;
    for (const struct sl__queue *q = l->waiters.next; q != &l->waiters; q = q->next)
        n++;
    return n;
}
