/*
 * loop.c -- the event loop: iteration, I/O watchers, deferred callbacks and
 * the closing phase.
 *
 * Model (libuv's, trimmed): a loop owns a table indexed by fd. A started
 * watcher sits in its fd's slot; a change of interest marks the fd dirty and
 * the backend is told once per iteration, just before the wait, what each
 * dirty fd should now be registered for (so toggling write interest on and
 * off within an iteration costs nothing). Registration and deregistration
 * are applied at once instead: a bad fd is reported by sl_io_start() itself,
 * and after sl_io_stop() the caller may close the fd and reuse its number.
 *
 * Events are dispatched from loop->events. Before each callback the fd's
 * current watcher is looked up again, so a watcher stopped by an earlier
 * callback of the same batch is skipped; sl__loop_invalidate_fd() also
 * erases the remaining events of an fd whose watcher went away, which covers
 * an fd closed and reused by a new watcher within the same batch.
 *
 * Nothing is freed by the loop: handles live in caller memory, and close
 * callbacks (which let the owner free them) run in the closing phase at the
 * end of an iteration, after every other callback of that iteration.
 */
#include "reactor-int.h"

#include <assert.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- clock ---------------------------------------------------------------- */

void sl__loop_update_time(sl_loop_t *loop)
{
    uint64_t ns;

    if (loop->clock != NULL) {
        ns = loop->clock(loop->clock_arg);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    loop->now_ns = ns;
    loop->now_ms = ns / 1000000u;
}

uint64_t sl_loop_now(const sl_loop_t *loop)
{
    return loop->now_ms;
}

uint64_t sl_loop_now_ns(const sl_loop_t *loop)
{
    return loop->now_ns;
}

void sl_loop_update_time(sl_loop_t *loop)
{
    sl__loop_update_time(loop);
}

void sl_loop_set_clock(sl_loop_t *loop, sl_clock_fn fn, void *arg)
{
    loop->clock = fn;
    loop->clock_arg = arg;
    sl__loop_update_time(loop);
    /* An empty wheel can follow the new clock wherever it starts; a
     * non-empty one keeps its deadlines and treats a backwards step as
     * "nothing is due yet". */
    if (sl__wheel_empty(&loop->wheel))
        loop->wheel.last_run = loop->now_ms;
}

/* ---- init / close ------------------------------------------------------------ */

static const struct sl__backend *backend_lookup(const char *name)
{
    for (size_t i = 0; sl__backends[i] != NULL; i++)
        if (strcmp(sl__backends[i]->name, name) == 0)
            return sl__backends[i];
    return NULL;
}

int sl_loop_init(sl_loop_t *loop)
{
    const char *want = getenv("SLUICE_BACKEND");
    int rc;

    memset(loop, 0, sizeof(*loop));
    loop->backend_fd = -1;
    loop->async_fd = -1;
    loop->async_wfd = -1;
    sl__queue_init(&loop->closing_queue);
    sl__queue_init(&loop->defer_queue);
    sl__queue_init(&loop->async_handles);

    loop->backend = sl__backends[0];
    if (want != NULL && want[0] != '\0') {
        loop->backend = backend_lookup(want);
        if (loop->backend == NULL)
            return SL_EBACKEND;
    }

    loop->events = malloc(sizeof(*loop->events) * SL__MAX_EVENTS);
    if (loop->events == NULL)
        return SL_ENOMEM;
    rc = loop->backend->init(loop);
    if (rc < 0)
        goto fail;
    sl__loop_update_time(loop);
    sl__wheel_init(&loop->wheel, loop->now_ms);
    return 0;

fail:
    free(loop->events);
    loop->events = NULL;
    return rc;
}

static bool loop_has_user_watchers(const sl_loop_t *loop)
{
    for (unsigned fd = 0; fd < loop->nfds; fd++) {
        const sl_io_t *io = loop->fds[fd].io;
        if (io != NULL && !(io->flags & SL__F_INTERNAL))
            return true;
    }
    return false;
}

int sl_loop_close(sl_loop_t *loop)
{
    if (loop_has_user_watchers(loop) || !sl__wheel_empty(&loop->wheel) ||
        !sl__queue_empty(&loop->defer_queue) || !sl__queue_empty(&loop->closing_queue) ||
        sl__async_handles_active(loop))
        return SL_EBUSY;

    loop->closing = true;
    sl__workq_drain(loop);
    sl__async_teardown(loop);
    loop->backend->close(loop);
    free(loop->fds);
    free(loop->dirty);
    free(loop->events);
    sl__wheel_free(&loop->wheel);
    loop->fds = NULL;
    loop->dirty = NULL;
    loop->events = NULL;
    loop->nfds = 0;
    loop->ndirty = 0;
    return 0;
}

const char *sl_loop_backend(const sl_loop_t *loop)
{
    return loop->backend->name;
}

bool sl_loop_alive(const sl_loop_t *loop)
{
    return loop->active > 0;
}

void sl_loop_stop(sl_loop_t *loop)
{
    loop->stop_flag = true;
}

void sl__loop_active_inc(sl_loop_t *loop)
{
    loop->active++;
}

void sl__loop_active_dec(sl_loop_t *loop)
{
    assert(loop->active > 0);
    loop->active--;
}

/* ---- fd table ------------------------------------------------------------------ */

/* Grow the fd table (and the dirty list, which can never hold more entries
 * than the table) so that `fd` has a slot. Only sl_io_start() allocates, so
 * stopping and closing never fail. */
static int fds_reserve(sl_loop_t *loop, int fd)
{
    unsigned n = loop->nfds ? loop->nfds : 64;
    struct sl__fdinfo *fds;
    int *dirty;

    if ((unsigned)fd < loop->nfds)
        return 0;
    while (n <= (unsigned)fd) {
        if (n > UINT_MAX / 2)
            return SL_ENOMEM;
        n *= 2;
    }
    fds = realloc(loop->fds, n * sizeof(*fds));
    if (fds == NULL)
        return SL_ENOMEM;
    loop->fds = fds;
    dirty = realloc(loop->dirty, n * sizeof(*dirty));
    if (dirty == NULL)
        return SL_ENOMEM; /* the larger fd table is kept; nfds is not raised */
    loop->dirty = dirty;
    for (unsigned i = loop->nfds; i < n; i++)
        loop->fds[i] = (struct sl__fdinfo){.io = NULL, .backend_index = -1};
    loop->nfds = n;
    return 0;
}

static void fd_mark_dirty(sl_loop_t *loop, int fd)
{
    struct sl__fdinfo *fi = &loop->fds[fd];

    if (!fi->dirty) {
        fi->dirty = 1;
        loop->dirty[loop->ndirty++] = fd;
    }
}

/* Tell the backend about every fd whose interest changed. A failure is
 * remembered on the fd and reported to its watcher as SL_EV_ERR. */
static void fds_flush(sl_loop_t *loop)
{
    for (unsigned i = 0; i < loop->ndirty; i++) {
        int fd = loop->dirty[i];
        struct sl__fdinfo *fi = &loop->fds[fd];
        unsigned want = fi->io != NULL ? fi->io->events : 0;
        int rc;

        fi->dirty = 0;
        if (want == fi->kernel)
            continue;
        rc = loop->backend->update(loop, fd, want);
        if (rc < 0 && fi->io != NULL && fi->error == 0) {
            fi->error = (int16_t)-rc;
            loop->nfd_errors++;
        }
    }
    loop->ndirty = 0;
}

void sl__loop_invalidate_fd(sl_loop_t *loop, int fd)
{
    for (int i = loop->dispatch_index + 1; i < loop->nevents; i++)
        if (loop->events[i].fd == fd)
            loop->events[i].fd = -1;
}

/* ---- I/O watchers ------------------------------------------------------------- */

int sl_io_init(sl_loop_t *loop, sl_io_t *io, int fd, sl_io_cb cb)
{
    if (fd < 0 || cb == NULL)
        return SL_EINVAL;
    memset(io, 0, sizeof(*io));
    io->loop = loop;
    io->fd = fd;
    io->cb = cb;
    return 0;
}

static bool io_counted(const sl_io_t *io)
{
    return !(io->flags & (SL__F_UNREF | SL__F_INTERNAL));
}

int sl_io_start(sl_io_t *io, unsigned events)
{
    sl_loop_t *loop = io->loop;
    struct sl__fdinfo *fi;
    int rc;

    if (io->flags & SL__F_CLOSING)
        return SL_ECLOSING;
    events &= SL_EV_READ | SL_EV_WRITE;
    if (events == 0) {
        sl_io_stop(io);
        return 0;
    }
    rc = fds_reserve(loop, io->fd);
    if (rc < 0)
        return rc;
    fi = &loop->fds[io->fd];
    if (fi->io != NULL && fi->io != io)
        return SL_EEXIST;

    if (fi->kernel == 0) {
        /* First registration: apply now so that a bad fd fails here; only
         * changes of interest of a registered fd are batched. */
        rc = loop->backend->update(loop, io->fd, events);
        if (rc < 0)
            return rc;
    } else if (events != fi->kernel) {
        fd_mark_dirty(loop, io->fd);
    }
    fi->io = io;
    io->events = events;
    if (!(io->flags & SL__F_ACTIVE)) {
        io->flags |= SL__F_ACTIVE;
        if (io_counted(io))
            sl__loop_active_inc(loop);
    }
    return 0;
}

void sl_io_stop(sl_io_t *io)
{
    sl_loop_t *loop = io->loop;

    if (!(io->flags & SL__F_ACTIVE))
        return;
    io->flags &= ~SL__F_ACTIVE;
    io->events = 0;
    if (io_counted(io))
        sl__loop_active_dec(loop);
    if ((unsigned)io->fd < loop->nfds && loop->fds[io->fd].io == io) {
        struct sl__fdinfo *fi = &loop->fds[io->fd];
        fi->io = NULL;
        /* Deregister now rather than at the next flush: the caller may close
         * the fd as soon as we return, and a new fd with the same number
         * would otherwise inherit a registration it never got (closing an
         * fd removes it from epoll only when no duplicate is left). */
        if (fi->kernel != 0)
            (void)loop->backend->update(loop, io->fd, 0);
        sl__loop_invalidate_fd(loop, io->fd);
    }
}

void sl__io_move(sl_io_t *from, sl_io_t *to)
{
    sl_loop_t *loop = from->loop;
    struct sl__fdinfo *fi;

    if (!(from->flags & SL__F_ACTIVE))
        return;
    assert(to->loop == loop && to->fd == from->fd && !(to->flags & SL__F_ACTIVE));
    fi = &loop->fds[from->fd];
    assert(fi->io == from);
    fi->io = to;
    to->events = from->events;
    /* Counted in loop->active exactly as `from` was. */
    to->flags = (to->flags & ~SL__F_UNREF) | SL__F_ACTIVE | (from->flags & SL__F_UNREF);
    from->flags &= ~(SL__F_ACTIVE | SL__F_UNREF);
    from->events = 0;
    /* As after a stop: the rest of this batch was meant for `from`. */
    sl__loop_invalidate_fd(loop, from->fd);
}

void sl_io_close(sl_io_t *io, sl_close_cb close_cb)
{
    if (io->flags & SL__F_CLOSING)
        return;
    sl_io_stop(io);
    io->flags |= SL__F_CLOSING;
    sl__loop_closing_add(io->loop, &io->closing, io, close_cb);
}

bool sl_io_active(const sl_io_t *io)
{
    return (io->flags & SL__F_ACTIVE) != 0;
}

void sl_io_unref(sl_io_t *io)
{
    if (io->flags & SL__F_UNREF)
        return;
    if ((io->flags & SL__F_ACTIVE) && io_counted(io))
        sl__loop_active_dec(io->loop);
    io->flags |= SL__F_UNREF;
}

void sl_io_ref(sl_io_t *io)
{
    if (!(io->flags & SL__F_UNREF))
        return;
    io->flags &= ~SL__F_UNREF;
    if ((io->flags & SL__F_ACTIVE) && io_counted(io))
        sl__loop_active_inc(io->loop);
}

/* Deliver the events of the last wait. `ev.events` holds what the kernel
 * reported; the watcher sees what it asked for, plus HUP/ERR, and with
 * HUP/ERR also its own interest so that its read or write meets the EOF or
 * the error. */
static void loop_dispatch(sl_loop_t *loop, int n)
{
    loop->nevents = n;
    for (loop->dispatch_index = 0; loop->dispatch_index < n; loop->dispatch_index++) {
        struct sl__event ev = loop->events[loop->dispatch_index];
        sl_io_t *io;
        unsigned mask;

        if (ev.fd < 0 || (unsigned)ev.fd >= loop->nfds)
            continue;
        io = loop->fds[ev.fd].io;
        if (io == NULL)
            continue;
        mask = ev.events & (io->events | SL_EV_HUP | SL_EV_ERR);
        if (mask & (SL_EV_HUP | SL_EV_ERR))
            mask |= io->events;
        if (mask != 0)
            io->cb(io, mask);
    }
    loop->nevents = 0;
    loop->dispatch_index = 0;
}

/* Registrations that failed at flush time: tell their watchers. */
static int loop_collect_errors(sl_loop_t *loop, int n)
{
    for (unsigned fd = 0; loop->nfd_errors > 0 && fd < loop->nfds && n < SL__MAX_EVENTS; fd++) {
        struct sl__fdinfo *fi = &loop->fds[fd];
        if (fi->error != 0) {
            fi->error = 0;
            loop->nfd_errors--;
            if (fi->io == NULL)
                continue;
            loop->events[n].fd = (int)fd;
            loop->events[n].events = SL_EV_ERR;
            n++;
        }
    }
    return n;
}

/* ---- deferred callbacks --------------------------------------------------------- */

void sl_defer_init(sl_loop_t *loop, sl_defer_t *d, sl_defer_cb cb)
{
    memset(d, 0, sizeof(*d));
    d->loop = loop;
    d->cb = cb;
    sl__queue_init(&d->node);
}

void sl_defer_start(sl_defer_t *d)
{
    if (d->queued)
        return;
    d->queued = true;
    sl__queue_insert_tail(&d->loop->defer_queue, &d->node);
    sl__loop_active_inc(d->loop);
}

void sl_defer_stop(sl_defer_t *d)
{
    if (!d->queued)
        return;
    d->queued = false;
    sl__queue_remove(&d->node);
    sl__loop_active_dec(d->loop);
}

bool sl_defer_pending(const sl_defer_t *d)
{
    return d->queued;
}

/* Run what was queued before this point; what the callbacks queue now runs
 * in the next iteration. */
static void loop_run_deferred(sl_loop_t *loop)
{
    struct sl__queue batch;

    sl__queue_init(&batch);
    sl__queue_move(&loop->defer_queue, &batch);
    while (!sl__queue_empty(&batch)) {
        sl_defer_t *d = sl__queue_data(batch.next, sl_defer_t, node);
        sl__queue_remove(&d->node);
        d->queued = false;
        sl__loop_active_dec(loop);
        d->cb(d);
    }
}

/* ---- closing ------------------------------------------------------------------ */

void sl__loop_closing_add(sl_loop_t *loop, struct sl__closing *c, void *handle, sl_close_cb cb)
{
    c->cb = cb;
    c->handle = handle;
    sl__queue_insert_tail(&loop->closing_queue, &c->node);
    sl__loop_active_inc(loop);
}

static void loop_run_closing(sl_loop_t *loop)
{
    struct sl__queue batch;

    sl__queue_init(&batch);
    sl__queue_move(&loop->closing_queue, &batch);
    while (!sl__queue_empty(&batch)) {
        struct sl__closing *c = sl__queue_data(batch.next, struct sl__closing, node);
        sl__queue_remove(&c->node);
        sl__loop_active_dec(loop);
        if (c->cb != NULL)
            c->cb(c->handle); /* may free the handle, and so `c` */
    }
}

/* ---- iteration ------------------------------------------------------------------ */

static int loop_poll_timeout(const sl_loop_t *loop, int timeout_ms)
{
    int t;

    if (timeout_ms == 0 || loop->stop_flag || loop->active == 0 ||
        !sl__queue_empty(&loop->defer_queue) || !sl__queue_empty(&loop->closing_queue))
        return 0;
    t = sl__timers_timeout(loop);
    if (timeout_ms < 0)
        return t;
    if (t < 0)
        return timeout_ms;
    return SL__MIN(t, timeout_ms);
}

static int loop_iterate(sl_loop_t *loop, int timeout_ms)
{
    int n;

    sl__loop_update_time(loop);
    loop_run_deferred(loop);
    sl__timers_run(loop);

    fds_flush(loop);
    n = loop->backend->poll(loop, loop_poll_timeout(loop, timeout_ms));
    if (n < 0)
        return n;
    n = loop_collect_errors(loop, n);
    sl__loop_update_time(loop);
    loop_dispatch(loop, n);
    sl__timers_run(loop);
    loop_run_closing(loop);
    loop->iterations++;
    return 0;
}

int sl_loop_run(sl_loop_t *loop)
{
    int rc = 0;

    while (!loop->stop_flag && loop->active > 0) {
        rc = loop_iterate(loop, -1);
        if (rc < 0)
            break;
    }
    loop->stop_flag = false;
    return rc;
}

int sl_loop_run_once(sl_loop_t *loop, int timeout_ms)
{
    int rc = loop_iterate(loop, timeout_ms);

    loop->stop_flag = false;
    if (rc < 0)
        return rc;
    return loop->active > INT_MAX ? INT_MAX : (int)loop->active;
}
