/*
 * io_poll.c -- the portable backend: poll(2) over a dense pollfd array.
 *
 * Each registered fd owns one entry of the array; loop->fds[fd].backend_index
 * finds it, and removal moves the last entry into the hole so the array stays
 * dense. Scanning the results starts at a rotating offset so that, when more
 * fds are ready than one batch holds, no fd is starved.
 */
#include "reactor-int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

struct poll_state {
    struct pollfd *pfds;
    unsigned n;
    unsigned cap;
    unsigned rotate;
};

static int poll_backend_init(sl_loop_t *loop)
{
    struct poll_state *ps = calloc(1, sizeof(*ps));

    if (ps == NULL)
        return SL_ENOMEM;
    loop->backend_data = ps;
    return 0;
}

static void poll_backend_close(sl_loop_t *loop)
{
    struct poll_state *ps = loop->backend_data;

    if (ps != NULL) {
        free(ps->pfds);
        free(ps);
    }
    loop->backend_data = NULL;
}

static short poll_mask(unsigned events)
{
    short m = 0;

    if (events & SL_EV_READ)
        m |= POLLIN;
    if (events & SL_EV_WRITE)
        m |= POLLOUT;
    return m;
}

static int poll_backend_update(sl_loop_t *loop, int fd, unsigned events)
{
    struct poll_state *ps = loop->backend_data;
    struct sl__fdinfo *fi = &loop->fds[fd];
    int32_t idx = fi->backend_index;

    if (events == 0) {
        if (idx >= 0) {
            unsigned last = ps->n - 1;
            if ((unsigned)idx != last) {
                ps->pfds[idx] = ps->pfds[last];
                loop->fds[ps->pfds[idx].fd].backend_index = idx;
            }
            ps->n--;
            fi->backend_index = -1;
        }
        fi->kernel = 0;
        return 0;
    }
    if (idx < 0) {
        if (ps->n == ps->cap) {
            unsigned cap = ps->cap ? ps->cap * 2 : 64;
            struct pollfd *p = realloc(ps->pfds, cap * sizeof(*p));
            if (p == NULL)
                return SL_ENOMEM;
            ps->pfds = p;
            ps->cap = cap;
        }
        idx = (int32_t)ps->n++;
        ps->pfds[idx].fd = fd;
        fi->backend_index = idx;
    }
    ps->pfds[idx].events = poll_mask(events);
    ps->pfds[idx].revents = 0;
    fi->kernel = (uint8_t)events;
    return 0;
}

static int poll_backend_poll(sl_loop_t *loop, int timeout_ms)
{
    struct poll_state *ps = loop->backend_data;
    int rc = poll(ps->pfds, ps->n, timeout_ms);
    int n = 0;

    if (rc < 0)
        return errno == EINTR ? 0 : -errno;
    if (rc == 0 || ps->n == 0)
        return 0;
    ps->rotate = (ps->rotate + 1) % ps->n;
    for (unsigned k = 0; k < ps->n && n < SL__MAX_EVENTS; k++) {
        const struct pollfd *p = &ps->pfds[(ps->rotate + k) % ps->n];
        unsigned e = 0;
        if (p->revents == 0)
            continue;
        if (p->revents & (POLLIN | POLLPRI))
            e |= SL_EV_READ;
        if (p->revents & POLLOUT)
            e |= SL_EV_WRITE;
        if (p->revents & POLLHUP)
            e |= SL_EV_HUP;
        if (p->revents & (POLLERR | POLLNVAL))
            e |= SL_EV_ERR;
        loop->events[n].fd = p->fd;
        loop->events[n].events = e;
        n++;
    }
    return n;
}

const struct sl__backend sl__backend_poll = {
    .name = "poll",
    .init = poll_backend_init,
    .close = poll_backend_close,
    .update = poll_backend_update,
    .poll = poll_backend_poll,
};
