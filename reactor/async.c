/*
 * async.c -- waking the loop from other threads (and from signal handlers).
 *
 * Model (libuv's uv_async_t): one wake-up descriptor per loop, created on
 * first use (an eventfd, else a non-blocking pipe), read by an internal
 * watcher that never keeps the loop alive. sl_async_send() sets the handle's
 * PENDING bit and writes only if the bit was clear, so a burst of sends costs
 * one write and one callback. On readiness the loop drains the descriptor,
 * then calls back each handle whose bit it clears.
 *
 * a->pending is the only field other threads touch: bit 0 is PENDING, the
 * bits above count senders inside sl_async_send(). Every change is an atomic
 * read-modify-write, so whatever a sender stored before sending is visible to
 * the callback that clears its bit, and sl_async_close() can wait for
 * in-flight senders before the owner may free the handle.
 */
#include "reactor-int.h"
#include "reactor-config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if SL_HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

#define ASYNC_PENDING 1 /* a send has not been delivered yet */
#define ASYNC_BUSY 2    /* one sender inside sl_async_send() */

/* ---- the wake-up descriptor ------------------------------------------------ */

#if !SL_HAVE_EVENTFD
static int async_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return sl_translate_errno(errno);
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0 ||
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) != 0) {
            int rc = sl_translate_errno(errno);
            close(fds[0]);
            close(fds[1]);
            return rc;
        }
    }
    return 0;
}
#endif

/* Write one wake-up. Async-signal-safe: one write(2), errno preserved. A
 * full pipe (EAGAIN) is fine: the reader has a wake-up pending already. */
static void async_wake(const sl_loop_t *loop)
{
    static const uint64_t one = 1;
    int saved_errno = errno;
    ssize_t n;

    /* An eventfd needs exactly 8 bytes; a pipe needs any byte. */
    do {
        n = write(loop->async_wfd, &one, loop->async_wfd == loop->async_fd ? sizeof(one) : 1);
    } while (n < 0 && errno == EINTR);
    errno = saved_errno;
}

static void async_drain(sl_loop_t *loop)
{
    char buf[1024];
    ssize_t n;

    for (;;) {
        n = read(loop->async_fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN: drained (EOF or other errors cannot happen here) */
    }
}

/* Readiness of the wake-up descriptor. Handles are moved to a local list and
 * put back one at a time before their callback runs, so a callback may close
 * its own handle or any other (closing unlinks it from whichever list holds
 * it) and handles created by a callback wait for the next round. */
static void async_io_cb(sl_io_t *io, unsigned events)
{
    sl_loop_t *loop = io->loop;
    struct sl__queue batch;

    (void)events;
    async_drain(loop);

    sl__queue_init(&batch);
    sl__queue_move(&loop->async_handles, &batch);
    while (!sl__queue_empty(&batch)) {
        sl_async_t *a = sl__queue_data(batch.next, sl_async_t, node);

        sl__queue_remove(&a->node);
        sl__queue_insert_tail(&loop->async_handles, &a->node);
        /* Clear PENDING before the callback: a send that arrives while it
         * runs sets the bit again, writes, and gets a callback of its own. */
        if (!(__atomic_fetch_and(&a->pending, ~ASYNC_PENDING, __ATOMIC_ACQ_REL) & ASYNC_PENDING))
            continue;
        if (a->cb != NULL)
            a->cb(a);
    }
}

int sl__async_setup(sl_loop_t *loop)
{
    int fds[2];
    sl_io_t *io;
    int rc;

    if (loop->async_io != NULL)
        return 0;

#if SL_HAVE_EVENTFD
    fds[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fds[0] < 0)
        return sl_translate_errno(errno);
    fds[1] = fds[0];
#else
    rc = async_pipe(fds);
    if (rc < 0)
        return rc;
#endif

    io = malloc(sizeof(*io));
    if (io == NULL) {
        rc = SL_ENOMEM;
        goto fail_fds;
    }
    rc = sl_io_init(loop, io, fds[0], async_io_cb);
    if (rc < 0)
        goto fail_io;
    /* Before starting: an internal watcher is never counted in loop->active,
     * so the wake-up descriptor alone never keeps sl_loop_run() going. */
    io->flags |= SL__F_INTERNAL;
    rc = sl_io_start(io, SL_EV_READ);
    if (rc < 0)
        goto fail_io;

    loop->async_fd = fds[0];
    loop->async_wfd = fds[1];
    loop->async_io = io;
    return 0;

fail_io:
    free(io);
fail_fds:
    close(fds[0]);
    if (fds[1] != fds[0])
        close(fds[1]);
    return rc;
}

void sl__async_teardown(sl_loop_t *loop)
{
    if (loop->async_io == NULL)
        return;
    sl_io_stop(loop->async_io);
    free(loop->async_io);
    loop->async_io = NULL;
    close(loop->async_fd);
    if (loop->async_wfd != loop->async_fd)
        close(loop->async_wfd);
    loop->async_fd = -1;
    loop->async_wfd = -1;
}

bool sl__async_handles_active(const sl_loop_t *loop)
{
    for (const struct sl__queue *n = loop->async_handles.next; n != &loop->async_handles;
         n = n->next) {
        const sl_async_t *a = sl__queue_data(n, sl_async_t, node);
        if (!(a->flags & SL__F_INTERNAL))
            return true;
    }
    return false;
}

/* ---- handles ------------------------------------------------------------------ */

static bool async_counted(const sl_async_t *a)
{
    return !(a->flags & (SL__F_UNREF | SL__F_INTERNAL));
}

int sl_async_init(sl_loop_t *loop, sl_async_t *a, sl_async_cb cb)
{
    int rc = sl__async_setup(loop);

    if (rc < 0)
        return rc;
    memset(a, 0, sizeof(*a));
    a->loop = loop;
    a->cb = cb; /* NULL is allowed: the send then only wakes the loop */
    sl__queue_insert_tail(&loop->async_handles, &a->node);
    a->flags = SL__F_ACTIVE;
    sl__loop_active_inc(loop);
    return 0;
}

int sl_async_send(sl_async_t *a)
{
    /* Announce ourselves first, so that sl_async_close() waits until we no
     * longer read `a` or its loop. */
    __atomic_fetch_add(&a->pending, ASYNC_BUSY, __ATOMIC_ACQUIRE);
    if (!(__atomic_fetch_or(&a->pending, ASYNC_PENDING, __ATOMIC_ACQ_REL) & ASYNC_PENDING))
        async_wake(a->loop);
    __atomic_fetch_sub(&a->pending, ASYNC_BUSY, __ATOMIC_RELEASE);
    return 0;
}

void sl_async_close(sl_async_t *a, sl_close_cb close_cb)
{
    if (a->flags & SL__F_CLOSING)
        return;
    sl__queue_remove(&a->node);
    if (a->flags & SL__F_ACTIVE) {
        if (async_counted(a))
            sl__loop_active_dec(a->loop);
        a->flags &= ~SL__F_ACTIVE;
    }
    /* A send that started before this call may still be writing the
     * wake-up; the window is one write(2), so spinning is cheap. */
    while (__atomic_load_n(&a->pending, __ATOMIC_ACQUIRE) & ~ASYNC_PENDING)
        sched_yield();
    a->flags |= SL__F_CLOSING;
    sl__loop_closing_add(a->loop, &a->closing, a, close_cb);
}

void sl_async_unref(sl_async_t *a)
{
    if (a->flags & SL__F_UNREF)
        return;
    if ((a->flags & SL__F_ACTIVE) && async_counted(a))
        sl__loop_active_dec(a->loop);
    a->flags |= SL__F_UNREF;
}

void sl_async_ref(sl_async_t *a)
{
    if (!(a->flags & SL__F_UNREF))
        return;
    a->flags &= ~SL__F_UNREF;
    if ((a->flags & SL__F_ACTIVE) && async_counted(a))
        sl__loop_active_inc(a->loop);
}
