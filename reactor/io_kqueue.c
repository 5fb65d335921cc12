/*
 * io_kqueue.c -- the BSD/macOS backend: kqueue with one filter per
 * direction (EVFILT_READ, EVFILT_WRITE), compiled only where <sys/event.h>
 * exists. CI on Linux does not run it (see README).
 *
 * kqueue registers read and write interest as separate filters, so an update
 * adds or deletes each filter whose bit changed. EV_EOF on a read filter is
 * reported as SL_EV_READ|SL_EV_HUP, and EV_ERROR as SL_EV_ERR.
 */
#include "reactor-int.h"

#include <errno.h>
#include <sys/event.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

static int kqueue_backend_init(sl_loop_t *loop)
{
    int fd = kqueue();

    if (fd < 0)
        return -errno;
    loop->backend_fd = fd;
    return 0;
}

static void kqueue_backend_close(sl_loop_t *loop)
{
    if (loop->backend_fd >= 0)
        close(loop->backend_fd);
    loop->backend_fd = -1;
}

static int kqueue_backend_update(sl_loop_t *loop, int fd, unsigned events)
{
    struct sl__fdinfo *fi = &loop->fds[fd];
    struct kevent ch[2];
    int n = 0;
    unsigned old = fi->kernel;

    if ((old ^ events) & SL_EV_READ) {
        EV_SET(&ch[n], (uintptr_t)fd, EVFILT_READ, (events & SL_EV_READ) ? EV_ADD : EV_DELETE, 0, 0,
               NULL);
        n++;
    }
    if ((old ^ events) & SL_EV_WRITE) {
        EV_SET(&ch[n], (uintptr_t)fd, EVFILT_WRITE, (events & SL_EV_WRITE) ? EV_ADD : EV_DELETE, 0,
               0, NULL);
        n++;
    }
    if (n > 0 && kevent(loop->backend_fd, ch, n, NULL, 0, NULL) < 0) {
        int err = errno;
        if (events == 0 || err == ENOENT || err == EBADF) {
            fi->kernel = (uint8_t)events;
            return events == 0 ? 0 : -err;
        }
        return -err;
    }
    fi->kernel = (uint8_t)events;
    return 0;
}

static int kqueue_backend_poll(sl_loop_t *loop, int timeout_ms)
{
    struct kevent evs[256];
    struct timespec ts, *tsp = NULL;
    int n, out = 0;

    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    n = kevent(loop->backend_fd, NULL, 0, evs, (int)SL__ARRAY_SIZE(evs), tsp);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    /* One fd may come back twice (read and write filters): merge them so the
     * watcher gets one callback with both bits. */
    for (int i = 0; i < n; i++) {
        int fd = (int)evs[i].ident;
        unsigned e = 0;
        int j;
        if (evs[i].flags & EV_ERROR)
            e |= SL_EV_ERR;
        else if (evs[i].filter == EVFILT_READ)
            e |= SL_EV_READ;
        else if (evs[i].filter == EVFILT_WRITE)
            e |= SL_EV_WRITE;
        if (evs[i].flags & EV_EOF)
            e |= SL_EV_HUP;
        for (j = 0; j < out; j++)
            if (loop->events[j].fd == fd)
                break;
        if (j == out) {
            loop->events[out].fd = fd;
            loop->events[out].events = 0;
            out++;
        }
        loop->events[j].events |= e;
    }
    return out;
}

const struct sl__backend sl__backend_kqueue = {
    .name = "kqueue",
    .init = kqueue_backend_init,
    .close = kqueue_backend_close,
    .update = kqueue_backend_update,
    .poll = kqueue_backend_poll,
};
