/*
 * workq.c -- offloading blocking work to a per-loop thread pool.
 *
 * Model (libuv's src/threadpool.c, one pool per loop, created by the first
 * sl_work_submit()): one mutex guards all shared state, i.e. the FIFO of
 * queued requests, the list of finished ones and the exit flag; a condvar
 * wakes idle workers. A worker pops a request, runs work_cb unlocked, appends
 * it to the done list and sends an internal async handle, whose callback (on
 * the loop thread) takes the whole list and calls each after_work_cb.
 *
 * The async handle never keeps the loop alive; each request does, from
 * submit until just before its after_work_cb. Cancelling moves a QUEUED
 * request to the done list with SL_ECANCELED; it is called back later.
 *
 *   IDLE -> QUEUED -> RUNNING -> DONE -> IDLE      (QUEUED -> CANCELLED -> IDLE)
 */
#include "reactor-int.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#define WORKQ_DEFAULT_THREADS 4
#define WORKQ_MAX_THREADS 128
#define WORKQ_STACK_SIZE (256u * 1024u)

/* req->state. IDLE must be 0: a zeroed request is idle. */
enum work_state {
    WORK_IDLE = 0,
    WORK_QUEUED,    /* on wq->queue */
    WORK_RUNNING,   /* owned by a worker, work_cb running */
    WORK_DONE,      /* on wq->done (or being called back), status 0 */
    WORK_CANCELLED, /* on wq->done (or being called back), SL_ECANCELED */
};

struct workq {
    sl_loop_t *loop;
    sl_async_t async; /* internal: tells the loop that `done` is non-empty */
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* signalled when `queue` grows or `exiting` is set */
    /* Under mutex. */
    struct sl__queue queue; /* QUEUED requests, oldest first */
    struct sl__queue done;  /* DONE and CANCELLED requests, in completion order */
    bool exiting;
    /* Loop thread only. */
    unsigned nthreads;
    pthread_t threads[];
};

/* Parse SLUICE_THREADPOOL_SIZE: a decimal number, clamped to 1..128; the
 * default when unset, empty or not a number. */
static unsigned workq_size(const char *s)
{
    char *end;
    long n;

    if (s == NULL || *s == '\0')
        return WORKQ_DEFAULT_THREADS;
    errno = 0;
    n = strtol(s, &end, 10);
    if (end == s || *end != '\0')
        return WORKQ_DEFAULT_THREADS;
    if (n < 1)
        return 1;
    if (n > WORKQ_MAX_THREADS)
        return WORKQ_MAX_THREADS; /* also covers ERANGE (LONG_MAX) */
    return (unsigned)n;
}

/* ---- workers -------------------------------------------------------------------- */

static void *workq_worker(void *arg)
{
    struct workq *wq = arg;

    pthread_mutex_lock(&wq->mutex);
    for (;;) {
        sl_work_t *req;
        sl_work_cb work_cb;

        while (sl__queue_empty(&wq->queue) && !wq->exiting)
            pthread_cond_wait(&wq->cond, &wq->mutex);
        if (wq->exiting)
            break; /* the queue was emptied (cancelled) before exiting was set */

        req = sl__queue_data(wq->queue.next, sl_work_t, node);
        sl__queue_remove(&req->node);
        req->state = WORK_RUNNING;
        work_cb = req->work_cb;
        pthread_mutex_unlock(&wq->mutex);

        work_cb(req);

        pthread_mutex_lock(&wq->mutex);
        req->state = WORK_DONE;
        req->status = 0;
        sl__queue_insert_tail(&wq->done, &req->node);
        pthread_mutex_unlock(&wq->mutex);
        /* From here on `req` belongs to the loop again. The pool outlives
         * this send: sl__workq_drain() joins us before freeing it. */
        sl_async_send(&wq->async);
        pthread_mutex_lock(&wq->mutex);
    }
    pthread_mutex_unlock(&wq->mutex);
    return NULL;
}

/* Call after_work_cb for every request of `q` (taken off wq->done), on the
 * loop thread. Each request stops counting as active just before its
 * callback, which may therefore submit it again. */
static void workq_run_done(sl_loop_t *loop, struct sl__queue *q)
{
    while (!sl__queue_empty(q)) {
        sl_work_t *req = sl__queue_data(q->next, sl_work_t, node);
        int status = req->status; /* 0, or SL_ECANCELED */

        sl__queue_remove(&req->node);
        req->state = WORK_IDLE;
        sl__loop_active_dec(loop);
        req->after_work_cb(req, status);
    }
}

static void workq_async_cb(sl_async_t *a)
{
    struct workq *wq = sl__container_of(a, struct workq, async);
    struct sl__queue q;

    sl__queue_init(&q);
    pthread_mutex_lock(&wq->mutex);
    sl__queue_move(&wq->done, &q);
    pthread_mutex_unlock(&wq->mutex);
    workq_run_done(wq->loop, &q);
}

/* ---- pool lifetime --------------------------------------------------------------- */

/* Tell the first `n` workers to exit and join them. */
static void workq_join(struct workq *wq, unsigned n)
{
    pthread_mutex_lock(&wq->mutex);
    wq->exiting = true;
    pthread_cond_broadcast(&wq->cond);
    pthread_mutex_unlock(&wq->mutex);
    for (unsigned i = 0; i < n; i++)
        pthread_join(wq->threads[i], NULL);
}

static size_t workq_stack_size(void)
{
    size_t size = WORKQ_STACK_SIZE;
    long page = sysconf(_SC_PAGESIZE);

    /* PTHREAD_STACK_MIN may be a sysconf() call (glibc >= 2.34). */
    if (size < (size_t)PTHREAD_STACK_MIN)
        size = (size_t)PTHREAD_STACK_MIN;
    if (page > 0)
        size = (size + (size_t)page - 1) / (size_t)page * (size_t)page;
    return size;
}

static int workq_create(sl_loop_t *loop)
{
    unsigned n = workq_size(getenv("SLUICE_THREADPOOL_SIZE"));
    sigset_t all, old;
    pthread_attr_t attr;
    struct workq *wq;
    unsigned started = 0;
    int rc;

    wq = calloc(1, sizeof(*wq) + n * sizeof(wq->threads[0]));
    if (wq == NULL)
        return SL_ENOMEM;
    wq->loop = loop;
    wq->nthreads = n;
    sl__queue_init(&wq->queue);
    sl__queue_init(&wq->done);

    rc = -pthread_mutex_init(&wq->mutex, NULL);
    if (rc < 0)
        goto fail_free;
    rc = -pthread_cond_init(&wq->cond, NULL);
    if (rc < 0)
        goto fail_mutex;
    rc = sl_async_init(loop, &wq->async, workq_async_cb);
    if (rc < 0)
        goto fail_cond;
    /* Internal: pending requests keep the loop alive, not this handle, and
     * sl_loop_close() does not wait for it to be closed. */
    sl_async_unref(&wq->async);
    wq->async.flags |= SL__F_INTERNAL;

    rc = -pthread_attr_init(&attr);
    if (rc < 0)
        goto fail_async;
    /* A failure leaves the default stack size, which is merely larger. */
    (void)pthread_attr_setstacksize(&attr, workq_stack_size());

    /* Workers inherit the creator's signal mask: block everything so that
     * process signals are delivered to threads that expect them. */
    sigfillset(&all);
    rc = -pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc < 0)
        goto fail_attr;
    for (; started < n; started++) {
        rc = -pthread_create(&wq->threads[started], &attr, workq_worker, wq);
        if (rc < 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        goto fail_threads;
    pthread_attr_destroy(&attr);

    loop->workq = wq;
    return 0;

fail_threads:
    workq_join(wq, started);
fail_attr:
    pthread_attr_destroy(&attr);
fail_async:
    /* Never sent, not counted: unlinking is all a close would do. */
    sl__queue_remove(&wq->async.node);
fail_cond:
    pthread_cond_destroy(&wq->cond);
fail_mutex:
    pthread_mutex_destroy(&wq->mutex);
fail_free:
    free(wq);
    return rc;
}

void sl__workq_drain(sl_loop_t *loop)
{
    struct workq *wq = loop->workq;
    struct sl__queue q;

    if (wq == NULL)
        return;

    /* Cancel what no worker has started; running jobs finish before the
     * workers see `exiting` and are joined. */
    pthread_mutex_lock(&wq->mutex);
    while (!sl__queue_empty(&wq->queue)) {
        sl_work_t *req = sl__queue_data(wq->queue.next, sl_work_t, node);
        sl__queue_remove(&req->node);
        req->state = WORK_CANCELLED;
        req->status = SL_ECANCELED;
        sl__queue_insert_tail(&wq->done, &req->node);
    }
    pthread_mutex_unlock(&wq->mutex);
    workq_join(wq, wq->nthreads);

    /* The workers are gone: the done list is ours without the lock. The
     * callbacks see loop->closing, so sl_work_submit() refuses new work. */
    sl__queue_init(&q);
    sl__queue_move(&wq->done, &q);
    workq_run_done(loop, &q);

    /* The loop is going away: no close callback, just unlink the handle
     * (it is internal and unreferenced, so it was never counted). */
    sl__queue_remove(&wq->async.node);
    pthread_cond_destroy(&wq->cond);
    pthread_mutex_destroy(&wq->mutex);
    free(wq);
    loop->workq = NULL;
}

/* ---- requests ------------------------------------------------------------------- */

int sl_work_submit(sl_loop_t *loop, sl_work_t *req, sl_work_cb work_cb,
                   sl_after_work_cb after_work_cb)
{
    struct workq *wq;
    int rc;

    if (work_cb == NULL || after_work_cb == NULL)
        return SL_EINVAL;
    if (loop->closing)
        return SL_ECLOSING;
    if (loop->workq == NULL) {
        rc = workq_create(loop);
        if (rc < 0)
            return rc;
    }
    wq = loop->workq;

    pthread_mutex_lock(&wq->mutex);
    if (req->state != WORK_IDLE) {
        /* Queued, running, or waiting for its after_work_cb. */
        pthread_mutex_unlock(&wq->mutex);
        return SL_EINVAL;
    }
    req->loop = loop;
    req->work_cb = work_cb;
    req->after_work_cb = after_work_cb;
    req->status = 0;
    req->state = WORK_QUEUED;
    sl__queue_insert_tail(&wq->queue, &req->node);
    pthread_cond_signal(&wq->cond);
    pthread_mutex_unlock(&wq->mutex);

    sl__loop_active_inc(loop);
    return 0;
}

int sl_work_cancel(sl_work_t *req)
{
    struct workq *wq;
    int rc;

    /* req->loop is written by the loop thread only; a request never
     * submitted (zeroed) has none. */
    if (req->loop == NULL || req->loop->workq == NULL)
        return SL_EINVAL;
    wq = req->loop->workq;

    pthread_mutex_lock(&wq->mutex);
    switch (req->state) {
    case WORK_QUEUED:
        sl__queue_remove(&req->node);
        req->state = WORK_CANCELLED;
        req->status = SL_ECANCELED;
        sl__queue_insert_tail(&wq->done, &req->node);
        rc = 0;
        break;
    case WORK_RUNNING:
    case WORK_DONE:
        rc = SL_EBUSY; /* after_work_cb will run with 0 */
        break;
    default:
        rc = SL_EINVAL; /* idle, or already cancelled */
        break;
    }
    pthread_mutex_unlock(&wq->mutex);

    /* The callback runs from the loop, never inside this call. */
    if (rc == 0)
        sl_async_send(&wq->async);
    return rc;
}
