/*
 * io_epoll.c -- the Linux backend: level-triggered epoll.
 *
 * The loop tells us, per fd, the interest it wants registered; we remember
 * what the kernel has in loop->fds[fd].kernel and translate the difference
 * into one epoll_ctl call. The remembered state can be stale when the user
 * closed an fd behind our back (closing removes it from the epoll set), so
 * MOD falls back to ADD on ENOENT and ADD to MOD on EEXIST, as libuv does.
 */
#include "reactor-int.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

static int epoll_backend_init(sl_loop_t *loop)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);

    if (fd < 0)
        return -errno;
    loop->backend_fd = fd;
    return 0;
}

static void epoll_backend_close(sl_loop_t *loop)
{
    if (loop->backend_fd >= 0)
        close(loop->backend_fd);
    loop->backend_fd = -1;
}

static int epoll_backend_update(sl_loop_t *loop, int fd, unsigned events)
{
    struct sl__fdinfo *fi = &loop->fds[fd];
    struct epoll_event ev = {.events = 0, .data.fd = fd};
    int op, rc;

    if (events & SL_EV_READ)
        ev.events |= EPOLLIN;
    if (events & SL_EV_WRITE)
        ev.events |= EPOLLOUT;

    if (events == 0) {
        /* EBADF/ENOENT: the fd was closed first, so it is gone already. */
        (void)epoll_ctl(loop->backend_fd, EPOLL_CTL_DEL, fd, &ev);
        fi->kernel = 0;
        return 0;
    }
    op = fi->kernel == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    rc = epoll_ctl(loop->backend_fd, op, fd, &ev);
    if (rc < 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
        rc = epoll_ctl(loop->backend_fd, EPOLL_CTL_MOD, fd, &ev);
    else if (rc < 0 && op == EPOLL_CTL_MOD && errno == ENOENT)
        rc = epoll_ctl(loop->backend_fd, EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0) {
        int err = errno;
        fi->kernel = 0;
        return -err;
    }
    fi->kernel = (uint8_t)events;
    return 0;
}

static int epoll_backend_poll(sl_loop_t *loop, int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(loop->backend_fd, evs, (int)SL__ARRAY_SIZE(evs), timeout_ms);

    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        unsigned e = 0;
        if (evs[i].events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP))
            e |= SL_EV_READ;
        if (evs[i].events & EPOLLOUT)
            e |= SL_EV_WRITE;
        if (evs[i].events & EPOLLHUP)
            e |= SL_EV_HUP;
        if (evs[i].events & EPOLLERR)
            e |= SL_EV_ERR;
        loop->events[i].fd = evs[i].data.fd;
        loop->events[i].events = e;
    }
    return n;
}

const struct sl__backend sl__backend_epoll = {
    .name = "epoll",
    .init = epoll_backend_init,
    .close = epoll_backend_close,
    .update = epoll_backend_update,
    .poll = epoll_backend_poll,
};
