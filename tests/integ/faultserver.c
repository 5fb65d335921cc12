/*
 * faultserver.c -- a fault-injecting HTTP/1.1 server for sluice's integration tests and the
 * backend of its benchmarks. It does not use libsluice: the server must not share bugs with the
 * code under test.
 *
 * Model: one thread, one level-triggered epoll set, one `struct conn` per accepted socket. A
 * connection runs a single state machine (`enum conn_state`, changed only in conn_set_state()):
 * read a request head, read its body, then either wait (delay timers), write a response, or do
 * something hostile (stall, reset, close early). Requests on one connection are served strictly
 * in order; pipelined requests wait in the input buffer until the response before them is done.
 *
 * Responses are produced by a generator (`struct resp`): a head kept in memory, then a body that
 * is either memory or the deterministic pattern (byte i = (i * 131 + 7) % 251), optionally framed
 * as chunks. The generator fills a shared scratch buffer; only bytes the socket refused are
 * copied into the connection (`pend`), so 10,000 idle connections cost little memory.
 *
 * Timers (delays, drip pauses, the drain of a closing connection) live in a binary min-heap of
 * connections keyed by a deadline in microseconds; a timer never fires early.
 * Closed connections are parked on a graveyard list and freed after the current batch of epoll
 * events, so a stale event for a connection closed earlier in the same batch is dropped safely.
 *
 * Cross-request state is global and deterministic: per-key hit counters (flaky_hit, one namespace
 * per endpoint) decide which hit of /flaky, /reset-once or a faulty /bytes misbehaves, and
 * /overload counts the slots held by connections waiting for their delay (struct conn's
 * holds_slot, released exactly once by overload_release()). A /bytes cut resets the connection
 * only after the peer has acknowledged every byte sent (ST_CUTWAIT): SO_LINGER 0 would otherwise
 * throw away whatever still sat in the send queue, and the cut would land short of its offset.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <linux/sockios.h> /* SIOCOUTQ */

#define HEAD_MAX (1u << 20)           /* a larger request head gets 431 */
#define INBUF_CAP (4u << 20)          /* stop reading pipelined input beyond this */
#define SCRATCH_SIZE (128u * 1024)    /* one generator fill, one send() */
#define FILLS_PER_TURN 16             /* then yield to other connections */
#define DRAIN_MS 2000                 /* how long a closing connection waits for the peer's FIN */
#define GEN_MAX ((uint64_t)256 << 20) /* cap on bodies that are built in memory */
#define LAST_MODIFIED "Mon, 01 Jan 2024 00:00:00 GMT"
#define BOMB_CHUNK (1u << 20)
#define BOMB_CHUNKS 1024u /* 1 GiB of zeros once inflated */
#define PATTERN_PERIOD 251

enum conn_state {
    ST_HEAD,    /* waiting for (the rest of) a request head */
    ST_BODY,    /* consuming the request body */
    ST_DELAY,   /* /delay, /overload: timer armed, nothing to write yet */
    ST_WRITE,   /* generating and sending a response (drip pauses use the timer) */
    ST_STALL,   /* never answer again; discard input, close on the peer's FIN */
    ST_DRAIN,   /* we sent FIN; discard input until the peer's FIN or DRAIN_MS */
    ST_CUTWAIT, /* a cut response is written; poll until the peer acked it all, then RST */
    ST_SILENT,  /* --silent: never read or write, close when the peer hangs up */
};

/* AFTER_CUT is AFTER_RST once every byte is acknowledged (ST_CUTWAIT); AFTER_RST may lose the
 * tail of the response in the send queue, which the endpoints using it do not care about. */
enum after { AFTER_KEEP, AFTER_CLOSE, AFTER_RST, AFTER_CUT, AFTER_STALL };

enum framing { FR_LENGTH, FR_CHUNKED, FR_CLOSE, FR_NONE };

enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_CRLF, CH_TRAILER, CH_DONE };

enum body_kind { BODY_NONE, BODY_MEM, BODY_PATTERN };

struct sbuf {
    char *p;
    size_t len, cap;
};

struct req {
    char *buf; /* private, NUL-split copy of the head; the fields below point into it */
    const char *method, *path, *query;
    const char *range, *if_range;
    int minor;
    bool is_head, expect_continue, te_chunked, has_cl;
    uint64_t content_length;
};

struct resp {
    struct sbuf head; /* status line, headers, blank line, and small bodies */
    size_t head_off;
    char frame[64]; /* chunk framing not yet copied out */
    size_t frame_len, frame_off;
    enum body_kind body;
    const uint8_t *mem;
    bool mem_owned;
    uint64_t pos;       /* offset of the next body byte in mem or in the pattern */
    uint64_t body_left; /* body bytes still to produce, framing excluded */
    bool chunked, trailer, no_terminator, finished;
    uint64_t chunk_size, chunk_left;
    enum after after;
    bool drip;
    unsigned drip_ms;
};

struct conn {
    int fd;
    enum conn_state state;
    uint32_t events; /* mask registered with epoll */
    bool eof, closed, want_out, drip_wait, close_conn;
    bool close_on_next; /* /close-on-next: drop the connection at the next request */
    bool holds_slot;    /* counted in ovl_inflight; only overload_release() clears it */
    char *in;           /* unread input is in[in_off, in_len) */
    size_t in_len, in_cap, in_off, head_scan;
    struct req req;
    bool body_chunked;
    uint64_t body_left;
    enum chunk_state ch;
    bool echo_on;
    struct sbuf echo;
    struct resp resp;
    char *pend; /* bytes of the last fill the socket did not take */
    size_t pend_len, pend_off, pend_cap;
    uint64_t deadline; /* microseconds, valid while heap_idx != SIZE_MAX */
    size_t heap_idx;
    struct conn *prev, *next;
};

struct flaky {
    char *key;
    uint64_t hits;
};

static int ep_fd = -1, listen_fd = -1, signal_fd = -1, spare_fd = -1;
static char listen_tag, signal_tag;
static bool opt_silent;
static uint64_t stat_conns, stat_reqs;
static uint64_t ovl_inflight, ovl_peak, ovl_rejected, ovl_served; /* /overload */
static uint8_t pattern[PATTERN_PERIOD + SCRATCH_SIZE];
static uint8_t scratch[SCRATCH_SIZE];
static struct conn *live, *graveyard;
static struct conn **heap;
static size_t heap_len, heap_cap;
static struct flaky *flakies;
static size_t nflakies;
static uint8_t *bomb_raw; /* raw deflate stream of 1 GiB of zeros, built on first use */
static size_t bomb_raw_len;
static uLong bomb_crc, bomb_adler;

static void conn_drive(struct conn *c);
static struct flaky *flaky_find(const char *ns, const char *key);

/* ---- small utilities ---------------------------------------------------------------- */

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("faultserver: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* A test server has no better answer to ENOMEM than to stop loudly. */
static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL)
        die("out of memory (%zu bytes)", n);
    return p;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sbuf_reserve(struct sbuf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    sbuf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("vsnprintf failed");
    sbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sbuf_free(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){0};
}

static void pattern_init(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)((i * 131 + 7) % PATTERN_PERIOD);
}

/* Byte i of the pattern equals byte i % 251, so any window is a slice of `pattern`. */
static void pattern_fill(uint8_t *dst, uint64_t off, size_t n)
{
    while (n > 0) {
        size_t k = n < SCRATCH_SIZE ? n : SCRATCH_SIZE;
        memcpy(dst, pattern + off % PATTERN_PERIOD, k);
        dst += k;
        off += k;
        n -= k;
    }
}

static bool token_in_list(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return true;
    }
    return false;
}

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* ---- query strings ------------------------------------------------------------------- */

/*
 * Copy the URL-decoded value of query parameter `name` into out. "%XX" is decoded and, as in
 * forms, '+' means a space (send %2B for a literal plus). A parameter without '=' has the
 * value "". Returns false when the parameter is absent or its value does not fit.
 */
static bool q_get(const struct conn *c, const char *name, char *out, size_t outlen)
{
    const char *q = c->req.query;
    size_t nl = strlen(name);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - q) == nl && memcmp(q, name, nl) == 0) {
            size_t o = 0;
            for (const char *v = eq ? eq + 1 : end; v < end; v++) {
                int ch = (unsigned char)*v;
                if (ch == '%' && end - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                    ch = hexval(v[1]) * 16 + hexval(v[2]);
                    v += 2;
                } else if (ch == '+') {
                    ch = ' ';
                }
                if (o + 1 >= outlen)
                    return false;
                out[o++] = (char)ch;
            }
            out[o] = '\0';
            return true;
        }
        q = amp ? amp + 1 : NULL;
    }
    return false;
}

static uint64_t q_u64(const struct conn *c, const char *name, uint64_t def)
{
    char v[32];
    uint64_t n;
    if (q_get(c, name, v, sizeof(v)) && parse_u64(v, strlen(v), &n))
        return n;
    return def;
}

static bool q_bool(const struct conn *c, const char *name)
{
    char v[16];
    if (!q_get(c, name, v, sizeof(v)))
        return false;
    return v[0] == '\0' || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 ||
           strcasecmp(v, "yes") == 0;
}

/* ---- timers: a min-heap of connections ------------------------------------------------ */

static void heap_swap(size_t a, size_t b)
{
    struct conn *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_idx = a;
    heap[b]->heap_idx = b;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->deadline <= heap[i]->deadline)
            break;
        heap_swap(i, p);
        i = p;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && heap[l]->deadline < heap[m]->deadline)
            m = l;
        if (r < heap_len && heap[r]->deadline < heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

static void timer_clear(struct conn *c)
{
    size_t i = c->heap_idx;
    if (i == SIZE_MAX)
        return;
    c->heap_idx = SIZE_MAX;
    heap_len--;
    if (i == heap_len)
        return;
    heap[i] = heap[heap_len];
    heap[i]->heap_idx = i;
    heap_up(i);
    heap_down(heap[i]->heap_idx);
}

static void timer_set(struct conn *c, uint64_t ms)
{
    timer_clear(c);
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = xrealloc(heap, heap_cap * sizeof(*heap));
    }
    /* Microsecond deadlines, and the loop rounds its epoll timeout up: never early. */
    c->deadline = now_us() + (ms > UINT64_MAX / 2000 ? UINT64_MAX / 2 : ms * 1000);
    c->heap_idx = heap_len;
    heap[heap_len++] = c;
    heap_up(c->heap_idx);
}

/* ---- connections -------------------------------------------------------------------- */

static void conn_set_state(struct conn *c, enum conn_state s)
{
    c->state = s;
}

static void list_remove(struct conn **head, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(struct conn **head, struct conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void req_reset(struct conn *c)
{
    free(c->req.buf);
    c->req = (struct req){0};
    c->body_chunked = false;
    c->body_left = 0;
    c->ch = CH_SIZE;
    c->echo_on = false;
    sbuf_free(&c->echo);
}

static void resp_reset(struct conn *c)
{
    struct resp *r = &c->resp;
    if (r->mem_owned)
        free((void *)r->mem);
    struct sbuf head = r->head;
    head.len = 0;
    if (head.cap > 65536)
        sbuf_free(&head);
    *r = (struct resp){.head = head};
    c->drip_wait = false;
}

/* Give back the /overload slot `c` holds, if any. The flag makes a second call a no-op, so the
 * timer path and every close path can all call this without counting a request twice. */
static void overload_release(struct conn *c)
{
    if (!c->holds_slot)
        return;
    c->holds_slot = false;
    ovl_inflight--;
}

/* Close now. The memory is freed after the current event batch (see the file comment). */
static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    overload_release(c);
    timer_clear(c);
    close(c->fd);
    c->fd = -1;
    c->closed = true;
    list_remove(&live, c);
    list_push(&graveyard, c);
}

/* Close with RST instead of FIN: SO_LINGER with a zero timeout discards unsent data. */
static void conn_reset(struct conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    conn_close(c);
}

static void conn_free(struct conn *c)
{
    req_reset(c);
    resp_reset(c);
    sbuf_free(&c->resp.head);
    free(c->in);
    free(c->pend);
    free(c);
}

static void conn_update(struct conn *c)
{
    if (c->closed)
        return;
    uint32_t ev = 0;
    switch (c->state) {
    case ST_SILENT:
        ev = EPOLLRDHUP;
        break;
    case ST_HEAD:
    case ST_BODY:
    case ST_STALL:
    case ST_DRAIN:
        ev = c->eof ? 0 : EPOLLIN;
        break;
    case ST_DELAY:
    case ST_WRITE:
    case ST_CUTWAIT:
        /* Keep reading so a hang-up is noticed, but bound what pipelining can buffer. */
        ev = !c->eof && c->in_len - c->in_off < INBUF_CAP ? EPOLLIN : 0;
        break;
    }
    if (c->pend_len > c->pend_off || c->want_out)
        ev |= EPOLLOUT;
    if (ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep_fd, EPOLL_CTL_MOD, c->fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = ev;
}

/* Write what the socket refused last time. 1: nothing left, 0: blocked, -1: dead peer. */
static int pend_write(struct conn *c)
{
    while (c->pend_off < c->pend_len) {
        ssize_t w = send(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->pend_off += (size_t)w;
    }
    c->pend_off = c->pend_len = 0;
    return 1;
}

static void pend_add(struct conn *c, const void *p, size_t n)
{
    if (c->pend_off == c->pend_len)
        c->pend_off = c->pend_len = 0;
    if (c->pend_cap - c->pend_len < n) {
        c->pend_cap = c->pend_len + n;
        c->pend = xrealloc(c->pend, c->pend_cap);
    }
    memcpy(c->pend + c->pend_len, p, n);
    c->pend_len += n;
}

/* ---- response generation ------------------------------------------------------------- */

static const char *reason_phrase(int code)
{
    static const struct {
        int code;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {102, "Processing"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {418, "I'm a teapot"},
        {421, "Misdirected Request"},
        {425, "Too Early"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].code == code)
            return reasons[i].reason;
    return "Unknown";
}

/* Append a status line. Anything already in the head (interim responses) goes out first. */
static void resp_start(struct conn *c, int status)
{
    sbuf_addf(&c->resp.head, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
}

__attribute__((format(printf, 2, 3))) static void resp_header(struct conn *c, const char *fmt, ...)
{
    struct sbuf *b = &c->resp.head;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("vsnprintf failed");
    sbuf_reserve(b, (size_t)n + 2);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    sbuf_add(b, "\r\n", 2);
}

/*
 * Finish the head: framing header, connection header, blank line. Switches the connection to
 * ST_WRITE. The body setters below must be called after this.
 */
static void resp_end(struct conn *c, enum framing f, uint64_t length)
{
    if (f == FR_LENGTH)
        resp_header(c, "Content-Length: %" PRIu64, length);
    else if (f == FR_CHUNKED)
        resp_header(c, "Transfer-Encoding: chunked");
    else if (f == FR_CLOSE)
        c->close_conn = true;
    if (c->close_conn)
        resp_header(c, "Connection: close");
    else if (c->req.minor == 0)
        resp_header(c, "Connection: keep-alive");
    sbuf_add(&c->resp.head, "\r\n", 2);
    c->resp.after = c->close_conn ? AFTER_CLOSE : AFTER_KEEP;
    conn_set_state(c, ST_WRITE);
}

/* A body kept in the head buffer. HEAD requests get none. */
static void resp_body_text(struct conn *c, const void *p, size_t n)
{
    if (!c->req.is_head)
        sbuf_add(&c->resp.head, p, n);
}

static void resp_body(struct conn *c, enum body_kind kind, const uint8_t *mem, bool owned,
                      uint64_t pos, uint64_t len)
{
    struct resp *r = &c->resp;
    if (c->req.is_head) {
        if (owned)
            free((void *)mem);
        return;
    }
    r->body = kind;
    r->mem = mem;
    r->mem_owned = owned;
    r->pos = pos;
    r->body_left = len;
}

static void resp_chunked(struct conn *c, uint64_t chunk_size, bool trailer, bool terminator)
{
    if (c->req.is_head)
        return;
    c->resp.chunked = true;
    c->resp.chunk_size = chunk_size ? chunk_size : 1;
    c->resp.trailer = trailer;
    c->resp.no_terminator = !terminator;
}

static void resp_text(struct conn *c, int status, const char *text)
{
    size_t n = strlen(text);
    resp_start(c, status);
    resp_header(c, "Content-Type: text/plain");
    resp_end(c, FR_LENGTH, n);
    resp_body_text(c, text, n);
}

static void resp_set_frame(struct resp *r, const char *s)
{
    size_t n = strlen(s);
    memcpy(r->frame, s, n);
    r->frame_len = n;
    r->frame_off = 0;
}

static bool resp_done(const struct resp *r)
{
    return r->finished && r->head_off == r->head.len && r->frame_off == r->frame_len;
}

/* Produce up to max bytes of the response into dst. */
static size_t resp_fill(struct resp *r, uint8_t *dst, size_t max)
{
    size_t n = 0;
    while (n < max) {
        size_t room = max - n;
        if (r->head_off < r->head.len) {
            size_t k = r->head.len - r->head_off;
            k = k < room ? k : room;
            memcpy(dst + n, r->head.p + r->head_off, k);
            r->head_off += k;
            n += k;
            continue;
        }
        if (r->frame_off < r->frame_len) {
            size_t k = r->frame_len - r->frame_off;
            k = k < room ? k : room;
            memcpy(dst + n, r->frame + r->frame_off, k);
            r->frame_off += k;
            n += k;
            continue;
        }
        if (r->finished)
            break;
        uint64_t avail = r->body_left;
        if (r->chunked) {
            if (r->chunk_left == 0) {
                if (r->body_left > 0) {
                    char line[32];
                    r->chunk_left = r->body_left < r->chunk_size ? r->body_left : r->chunk_size;
                    snprintf(line, sizeof(line), "%" PRIx64 "\r\n", r->chunk_left);
                    resp_set_frame(r, line);
                } else {
                    if (!r->no_terminator)
                        resp_set_frame(r, r->trailer ? "0\r\nX-Trailer: yes\r\n\r\n" : "0\r\n\r\n");
                    r->finished = true;
                }
                continue;
            }
            avail = r->chunk_left;
        } else if (r->body_left == 0) {
            r->finished = true;
            continue;
        }
        size_t k = avail < room ? (size_t)avail : room;
        if (r->body == BODY_MEM)
            memcpy(dst + n, r->mem + r->pos, k);
        else
            pattern_fill(dst + n, r->pos, k);
        r->pos += k;
        r->body_left -= k;
        n += k;
        if (r->chunked) {
            r->chunk_left -= k;
            if (r->chunk_left == 0)
                resp_set_frame(r, "\r\n");
        }
    }
    return n;
}

/*
 * Send as much of the response as the socket takes. 1: all sent, 0: blocked, yielding or
 * pausing between drip bytes, -1: the peer is gone.
 */
static int conn_flush(struct conn *c)
{
    struct resp *r = &c->resp;
    c->want_out = false;
    for (int turn = 0; turn < FILLS_PER_TURN; turn++) {
        int rc = pend_write(c);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return 0;
        if (c->drip_wait)
            return 0;
        if (resp_done(r))
            return 1;
        size_t n = resp_fill(r, scratch, r->drip ? 1 : SCRATCH_SIZE);
        size_t off = 0;
        while (off < n) {
            ssize_t w = send(c->fd, scratch + off, n - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    return -1;
                pend_add(c, scratch + off, n - off);
                return 0;
            }
            off += (size_t)w;
        }
        if (r->drip && !resp_done(r)) {
            c->drip_wait = true;
            timer_set(c, r->drip_ms);
            return 0;
        }
    }
    c->want_out = true; /* yield; EPOLLOUT brings us back */
    return 0;
}

/* ---- endpoints ----------------------------------------------------------------------- */

/* Match "<prefix><decimal>" exactly. */
static bool path_num(const char *path, const char *prefix, uint64_t *n)
{
    size_t pl = strlen(prefix);
    return strncmp(path, prefix, pl) == 0 && parse_u64(path + pl, strlen(path + pl), n);
}

/*
 * Parse a Range header against a body of n bytes into [*start, *end).
 * 1: a satisfiable single range, 0: ignore the header (syntax we don't serve, several ranges),
 * -1: unsatisfiable (416).
 */
static int parse_range(const char *h, uint64_t n, uint64_t *start, uint64_t *end)
{
    if (strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    h += 6;
    while (*h == ' ')
        h++;
    const char *dash = strchr(h, '-');
    if (dash == NULL)
        return 0;
    const char *last = dash + 1;
    size_t last_len = strcspn(last, " \t");
    uint64_t a, b;
    if (dash == h) { /* suffix: the last b bytes */
        if (!parse_u64(last, last_len, &b))
            return 0;
        if (b == 0 || n == 0)
            return -1;
        *start = b >= n ? 0 : n - b;
        *end = n;
        return 1;
    }
    if (!parse_u64(h, (size_t)(dash - h), &a))
        return 0;
    if (last_len == 0) {
        b = UINT64_MAX - 1;
    } else {
        if (!parse_u64(last, last_len, &b))
            return 0;
        if (b < a)
            return 0;
    }
    if (a >= n)
        return -1;
    *start = a;
    *end = b >= n - 1 ? n : b + 1;
    return 1;
}

/*
 * /bytes/N: N bytes of the pattern with an ETag, a Last-Modified and single-range support
 * (Range, checked against If-Range). The fault parameters turn it into a download that breaks:
 * every non-HEAD request counts one hit of key= in namespace "b:", and each of the first
 * `times` hits (default 1) is cut. A cut sends the normal head, then the body only up to
 * absolute offset reset-at=K, or up to S + reset-every=M where S is the first offset served,
 * whichever comes first; then RST. A cut point outside (S, end of what is served) is ignored,
 * so a resumed request from S >= K is served whole. etag-change=1 makes the validators change
 * at every hit (the ETag carries the hit number, Last-Modified moves one second per hit), so an
 * If-Range from an earlier hit never matches and the answer is 200 with the whole body.
 */
static void ep_bytes(struct conn *c, uint64_t n)
{
    char etag[64], lastmod[64], key[256];
    uint64_t start = 0, end = n, hit = 0, version = 0;
    uint64_t reset_at = q_u64(c, "reset-at", UINT64_MAX), every = q_u64(c, "reset-every", 0);
    bool etag_change = q_bool(c, "etag-change");
    bool may_cut = reset_at != UINT64_MAX || every > 0;
    int status = 200;

    if (may_cut || etag_change) {
        if (!q_get(c, "key", key, sizeof(key)))
            key[0] = '\0';
        struct flaky *f = flaky_find("b:", key);
        /* HEAD only looks: it neither uses up a cut nor changes the validators. */
        hit = c->req.is_head ? (f->hits > 0 ? f->hits - 1 : 0) : f->hits++;
        may_cut = may_cut && !c->req.is_head && hit < q_u64(c, "times", 1);
    }
    if (etag_change) {
        time_t t = (time_t)(1704067200 + (hit > 1000000000 ? 1000000000 : hit));
        struct tm tm;
        version = hit + 1;
        snprintf(etag, sizeof(etag), "\"b-%" PRIu64 "-v%" PRIu64 "\"", n, version);
        gmtime_r(&t, &tm);
        strftime(lastmod, sizeof(lastmod), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    } else {
        snprintf(etag, sizeof(etag), "\"b-%" PRIu64 "\"", n);
        snprintf(lastmod, sizeof(lastmod), "%s", LAST_MODIFIED);
    }
    if (c->req.range) {
        bool use = c->req.if_range == NULL || strcmp(c->req.if_range, etag) == 0 ||
                   strcmp(c->req.if_range, lastmod) == 0;
        int rc = use ? parse_range(c->req.range, n, &start, &end) : 0;
        if (rc < 0) {
            resp_start(c, 416);
            resp_header(c, "Content-Range: bytes */%" PRIu64, n);
            resp_end(c, FR_LENGTH, 0);
            return;
        }
        if (rc > 0)
            status = 206;
    }
    uint64_t cut = UINT64_MAX;
    if (may_cut) {
        if (reset_at > start)
            cut = reset_at;
        if (every > 0 && every <= UINT64_MAX - start && start + every < cut)
            cut = start + every;
    }
    bool cutting = cut > start && cut < end;
    bool chunked = q_bool(c, "chunked");
    bool close_delim = !chunked && q_bool(c, "close");
    resp_start(c, status);
    resp_header(c, "Content-Type: application/octet-stream");
    resp_header(c, "ETag: %s", etag);
    resp_header(c, "Last-Modified: %s", lastmod);
    resp_header(c, "Accept-Ranges: bytes");
    if (status == 206)
        resp_header(c, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start, end - 1, n);
    resp_end(c, chunked ? FR_CHUNKED : close_delim ? FR_CLOSE : FR_LENGTH, end - start);
    resp_body(c, BODY_PATTERN, NULL, false, start, (cutting ? cut : end) - start);
    if (chunked)
        resp_chunked(c, q_u64(c, "chunk", 4096), q_bool(c, "trailer"), !cutting);
    if (cutting)
        c->resp.after = AFTER_CUT;
}

static void ep_status(struct conn *c, uint64_t code, const char *body_prefix)
{
    char v[8192], body[64];
    if (code < 100 || code > 999) {
        c->close_conn = true;
        resp_text(c, 400, "bad status\n");
        return;
    }
    resp_start(c, (int)code);
    if (q_get(c, "retry-after", v, sizeof(v)))
        resp_header(c, "Retry-After: %s", v);
    if (q_get(c, "location", v, sizeof(v)))
        resp_header(c, "Location: %s", v);
    if (code < 200 || code == 204 || code == 304) {
        if (code < 200) { /* an interim response alone: no framing, no Connection header */
            sbuf_add(&c->resp.head, "\r\n", 2);
            c->resp.after = AFTER_KEEP;
            conn_set_state(c, ST_WRITE);
        } else {
            resp_end(c, FR_NONE, 0);
        }
        return;
    }
    snprintf(body, sizeof(body), "%s %" PRIu64 "\n", body_prefix, code);
    resp_header(c, "Content-Type: text/plain");
    resp_end(c, FR_LENGTH, strlen(body));
    resp_body_text(c, body, strlen(body));
}

static void ep_redirect(struct conn *c, int status, const char *location)
{
    static const char body[] = "redirect\n";
    resp_start(c, status);
    resp_header(c, "Location: %s", location);
    resp_header(c, "Content-Type: text/plain");
    resp_end(c, FR_LENGTH, sizeof(body) - 1);
    resp_body_text(c, body, sizeof(body) - 1);
}

/* The counter of `key` in namespace `ns`, created at zero on first use. */
static struct flaky *flaky_find(const char *ns, const char *key)
{
    size_t nl = strlen(ns);
    for (size_t i = 0; i < nflakies; i++) {
        if (strncmp(flakies[i].key, ns, nl) == 0 && strcmp(flakies[i].key + nl, key) == 0)
            return &flakies[i];
    }
    flakies = xrealloc(flakies, (nflakies + 1) * sizeof(*flakies));
    flakies[nflakies].key = xrealloc(NULL, nl + strlen(key) + 1);
    strcpy(flakies[nflakies].key, ns);
    strcat(flakies[nflakies].key, key);
    flakies[nflakies].hits = 0;
    return &flakies[nflakies++];
}

/* Number of earlier requests that used this key (then counts this one). */
static uint64_t flaky_hit(const char *ns, const char *key)
{
    return flaky_find(ns, key)->hits++;
}

/*
 * /overload: admit the request if fewer than max= requests hold a slot, else answer 503 at once
 * (with Retry-After: retry-after= verbatim, when given). An admitted request holds its slot
 * until its delay= ms end (then 200 "ok\n") or its connection closes, whichever comes first.
 */
static void ep_overload(struct conn *c)
{
    static const char busy[] = "overloaded\n";
    char v[256];
    if (ovl_inflight >= q_u64(c, "max", UINT64_MAX)) {
        ovl_rejected++;
        resp_start(c, 503);
        if (q_get(c, "retry-after", v, sizeof(v)))
            resp_header(c, "Retry-After: %s", v);
        resp_header(c, "Content-Type: text/plain");
        resp_end(c, FR_LENGTH, sizeof(busy) - 1);
        resp_body_text(c, busy, sizeof(busy) - 1);
        return;
    }
    c->holds_slot = true;
    ovl_inflight++;
    if (ovl_inflight > ovl_peak)
        ovl_peak = ovl_inflight;
    conn_set_state(c, ST_DELAY);
    timer_set(c, q_u64(c, "delay", 0));
}

static void ep_reset_head(struct conn *c)
{
    sbuf_add(&c->resp.head, "HTTP/1.1 200 O", 14);
    c->resp.after = AFTER_RST;
    conn_set_state(c, ST_WRITE);
}

/*
 * A raw deflate stream of BOMB_CHUNKS x 1 MiB of zeros, built without ever holding 1 GiB: one
 * chunk is compressed and ended with Z_FULL_FLUSH (byte-aligned, no back-references across the
 * boundary), so the same bytes repeated form a valid stream; an empty final block closes it.
 * The gzip and zlib checksums are combined arithmetically.
 */
static void bomb_build(void)
{
    uint8_t *zeros = calloc(1, BOMB_CHUNK), *out = xrealloc(NULL, 64 * 1024);
    z_stream zs = {0};
    if (zeros == NULL || deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        die("bomb: deflateInit2 failed");
    zs.next_in = zeros;
    zs.avail_in = BOMB_CHUNK;
    zs.next_out = out;
    zs.avail_out = 64 * 1024;
    if (deflate(&zs, Z_FULL_FLUSH) != Z_OK || zs.avail_in != 0 || zs.avail_out == 0)
        die("bomb: deflate failed");
    size_t blen = 64 * 1024 - zs.avail_out;
    deflateEnd(&zs);
    bomb_raw_len = blen * BOMB_CHUNKS + 2;
    bomb_raw = xrealloc(NULL, bomb_raw_len);
    for (size_t i = 0; i < BOMB_CHUNKS; i++)
        memcpy(bomb_raw + i * blen, out, blen);
    bomb_raw[bomb_raw_len - 2] = 0x03; /* final, fixed-Huffman block holding only end-of-block */
    bomb_raw[bomb_raw_len - 1] = 0x00;
    uLong c1 = crc32(crc32(0, NULL, 0), zeros, BOMB_CHUNK);
    uLong a1 = adler32(adler32(0, NULL, 0), zeros, BOMB_CHUNK);
    bomb_crc = c1;
    bomb_adler = a1;
    for (size_t i = 1; i < BOMB_CHUNKS; i++) {
        bomb_crc = crc32_combine(bomb_crc, c1, BOMB_CHUNK);
        bomb_adler = adler32_combine(bomb_adler, a1, BOMB_CHUNK);
    }
    free(zeros);
    free(out);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void ep_compressed(struct conn *c, bool gzip)
{
    uint8_t *out;
    size_t len;
    if (q_bool(c, "bomb")) {
        if (bomb_raw == NULL)
            bomb_build();
        /* Wrap the raw stream: gzip header + trailer (CRC-32, size mod 2^32) or zlib's. */
        size_t hl = gzip ? 10 : 2, tl = gzip ? 8 : 4;
        len = hl + bomb_raw_len + tl;
        out = xrealloc(NULL, len);
        if (gzip) {
            static const uint8_t gz[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
            memcpy(out, gz, 10);
        } else {
            out[0] = 0x78;
            out[1] = 0xda;
        }
        memcpy(out + hl, bomb_raw, bomb_raw_len);
        uint8_t *t = out + hl + bomb_raw_len;
        if (gzip) {
            put_le32(t, (uint32_t)bomb_crc);
            put_le32(t + 4, (uint32_t)((uint64_t)BOMB_CHUNK * BOMB_CHUNKS));
        } else {
            t[0] = (uint8_t)(bomb_adler >> 24);
            t[1] = (uint8_t)(bomb_adler >> 16);
            t[2] = (uint8_t)(bomb_adler >> 8);
            t[3] = (uint8_t)bomb_adler;
        }
    } else {
        uint64_t n = q_u64(c, "n", 1024);
        if (n > GEN_MAX) {
            c->close_conn = true;
            resp_text(c, 400, "n too large\n");
            return;
        }
        z_stream zs = {0};
        if (deflateInit2(&zs, 6, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            die("deflateInit2 failed");
        size_t cap = (size_t)deflateBound(&zs, (uLong)n) + 64;
        out = xrealloc(NULL, cap);
        zs.next_out = out;
        zs.avail_out = (uInt)cap;
        uint64_t off = 0;
        int rc;
        do {
            size_t k = n - off < SCRATCH_SIZE ? (size_t)(n - off) : SCRATCH_SIZE;
            zs.next_in = pattern + off % PATTERN_PERIOD;
            zs.avail_in = (uInt)k;
            off += k;
            rc = deflate(&zs, off == n ? Z_FINISH : Z_NO_FLUSH);
        } while (off < n);
        if (rc != Z_STREAM_END)
            die("deflate failed: %d", rc);
        len = cap - zs.avail_out;
        deflateEnd(&zs);
    }
    resp_start(c, 200);
    resp_header(c, "Content-Type: application/octet-stream");
    resp_header(c, "Content-Encoding: %s", gzip ? "gzip" : "deflate");
    resp_header(c, "Vary: Accept-Encoding");
    resp_end(c, FR_LENGTH, len);
    resp_body(c, BODY_MEM, out, true, 0, len);
}

static void ep_huge_headers(struct conn *c)
{
    uint64_t count = q_u64(c, "count", 100), size = q_u64(c, "size", 100);
    if (count > GEN_MAX || size > GEN_MAX || count * size > GEN_MAX) {
        c->close_conn = true;
        resp_text(c, 400, "too large\n");
        return;
    }
    resp_start(c, 200);
    sbuf_reserve(&c->resp.head, (size_t)(count * (size + 16)));
    for (uint64_t i = 0; i < count; i++) {
        struct sbuf *b = &c->resp.head;
        sbuf_addf(b, "X-H%" PRIu64 ": ", i);
        sbuf_reserve(b, (size_t)size + 2);
        memset(b->p + b->len, 'a', (size_t)size);
        b->len += (size_t)size;
        sbuf_add(b, "\r\n", 2);
    }
    resp_header(c, "Content-Type: text/plain");
    resp_end(c, FR_LENGTH, 3);
    resp_body_text(c, "ok\n", 3);
}

/* Build the response for the parsed request, or arm a timer, or decide to stall. */
static void dispatch(struct conn *c)
{
    const char *p = c->req.path;
    char v[8192];
    uint64_t n;

    if (c->close_on_next) {
        /* A keep-alive connection the server dropped just as the client
         * reused it: FIN without a byte of response (the client's
         * stale-connection case). Not counted as a request. */
        shutdown(c->fd, SHUT_WR);
        c->in_off = c->in_len = 0;
        conn_set_state(c, ST_DRAIN);
        timer_set(c, DRAIN_MS);
        return;
    }
    if (path_num(p, "/bytes/", &n)) {
        ep_bytes(c, n);
    } else if (path_num(p, "/delay/", &n)) {
        conn_set_state(c, ST_DELAY);
        timer_set(c, n);
    } else if (strcmp(p, "/stall-head") == 0) {
        conn_set_state(c, ST_STALL);
    } else if (strcmp(p, "/stall-body") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_end(c, FR_LENGTH, 1000000);
        n = q_u64(c, "after", 100);
        resp_body(c, BODY_PATTERN, NULL, false, 0, n < 1000000 ? n : 1000000);
        c->resp.after = AFTER_STALL;
    } else if (strcmp(p, "/reset-head") == 0) {
        ep_reset_head(c);
    } else if (strcmp(p, "/reset-body") == 0) {
        uint64_t len = q_u64(c, "len", 100000);
        n = q_u64(c, "after", 1000);
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_end(c, FR_LENGTH, len);
        resp_body(c, BODY_PATTERN, NULL, false, 0, n < len ? n : len);
        c->resp.after = AFTER_RST;
    } else if (strcmp(p, "/truncated-chunked") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_end(c, FR_CHUNKED, 0);
        resp_body(c, BODY_PATTERN, NULL, false, 0, q_u64(c, "n", 3000));
        resp_chunked(c, q_u64(c, "chunk", 1000), false, false);
        c->resp.after = AFTER_CLOSE;
    } else if (strcmp(p, "/wrong-cl") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_end(c, FR_LENGTH, q_u64(c, "cl", 100));
        resp_body(c, BODY_PATTERN, NULL, false, 0, q_u64(c, "send", 50));
        c->resp.after = AFTER_CLOSE;
    } else if (strcmp(p, "/conflict-cl") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_header(c, "Content-Length: 10");
        resp_end(c, FR_LENGTH, 20);
        resp_body(c, BODY_PATTERN, NULL, false, 0, 10);
        c->resp.after = AFTER_CLOSE;
    } else if (strcmp(p, "/cl-and-chunked") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_header(c, "Content-Length: 100");
        resp_end(c, FR_CHUNKED, 0);
        resp_body(c, BODY_PATTERN, NULL, false, 0, 50);
        resp_chunked(c, 25, false, true);
        c->resp.after = AFTER_CLOSE;
    } else if (strcmp(p, "/drip") == 0) {
        n = q_u64(c, "n", 100);
        resp_start(c, 200);
        resp_header(c, "Content-Type: application/octet-stream");
        resp_end(c, FR_LENGTH, n);
        resp_body(c, BODY_PATTERN, NULL, false, 0, n);
        c->resp.drip = true;
        c->resp.drip_ms = (unsigned)q_u64(c, "delay", 1);
    } else if (strcmp(p, "/huge-headers") == 0) {
        ep_huge_headers(c);
    } else if (strcmp(p, "/garbage") == 0) {
        sbuf_add(&c->resp.head, "this is not http\r\n\r\n", 20);
        c->resp.after = AFTER_CLOSE;
        conn_set_state(c, ST_WRITE);
    } else if (path_num(p, "/status/", &n)) {
        ep_status(c, n, "status");
    } else if (path_num(p, "/redirect/", &n)) {
        if (n == 0) {
            resp_text(c, 200, "done\n");
        } else {
            snprintf(v, sizeof(v), "/redirect/%" PRIu64, n - 1);
            ep_redirect(c, 302, v);
        }
    } else if (strcmp(p, "/redirect-to") == 0) {
        n = q_u64(c, "status", 302);
        if (!q_get(c, "url", v, sizeof(v)) || n < 100 || n > 999) {
            c->close_conn = true;
            resp_text(c, 400, "need url\n");
        } else {
            ep_redirect(c, (int)n, v);
        }
    } else if (strcmp(p, "/echo") == 0) {
        resp_start(c, 200);
        resp_header(c, "Content-Type: text/plain");
        resp_end(c, FR_LENGTH, c->echo.len);
        resp_body(c, BODY_MEM, (const uint8_t *)c->echo.p, true, 0, c->echo.len);
        c->echo = (struct sbuf){0};
    } else if (strcmp(p, "/interim") == 0) {
        static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n"
                                      "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n";
        sbuf_add(&c->resp.head, interim, sizeof(interim) - 1);
        resp_text(c, 200, "final\n");
    } else if (strcmp(p, "/gzip") == 0 || strcmp(p, "/deflate") == 0) {
        ep_compressed(c, p[1] == 'g');
    } else if (strcmp(p, "/flaky") == 0) {
        if (!q_get(c, "key", v, sizeof(v)))
            v[0] = '\0';
        if (flaky_hit("f:", v) < q_u64(c, "fail", 1))
            ep_status(c, q_u64(c, "status", 503), "flaky");
        else
            resp_text(c, 200, "ok\n");
    } else if (strcmp(p, "/reset-once") == 0) {
        if (!q_get(c, "key", v, sizeof(v)))
            v[0] = '\0';
        if (flaky_hit("r:", v) == 0)
            ep_reset_head(c);
        else
            resp_text(c, 200, "ok\n");
    } else if (strcmp(p, "/overload") == 0) {
        ep_overload(c);
    } else if (strcmp(p, "/overload/stats") == 0) {
        snprintf(v, sizeof(v), "peak=%" PRIu64 " rejected=%" PRIu64 " served=%" PRIu64 "\n",
                 ovl_peak, ovl_rejected, ovl_served);
        resp_text(c, 200, v);
        return; /* observing /overload is not a request to count */
    } else if (strcmp(p, "/overload/reset") == 0) {
        /* The slots in use stay counted: those requests are still waiting. */
        ovl_peak = ovl_rejected = ovl_served = 0;
        resp_text(c, 200, "reset\n");
        return;
    } else if (strcmp(p, "/close-after") == 0) {
        resp_text(c, 200, "ok\n");
        c->resp.after = AFTER_CLOSE;
    } else if (strcmp(p, "/close-on-next") == 0) {
        resp_text(c, 200, "ok\n");
        c->close_on_next = true;
    } else if (strcmp(p, "/close") == 0) {
        c->close_conn = true;
        resp_text(c, 200, "ok\n");
    } else if (strcmp(p, "/stats") == 0) {
        snprintf(v, sizeof(v), "connections=%" PRIu64 " requests=%" PRIu64 "\n", stat_conns,
                 stat_reqs);
        resp_text(c, 200, v);
    } else if (strcmp(p, "/stats/reset") == 0) {
        stat_conns = stat_reqs = 0;
        resp_text(c, 200, "reset\n");
        return; /* this request is not counted either */
    } else {
        resp_text(c, 404, "not found\n");
    }
    /* Counted after the response is built, so /stats does not count itself. */
    stat_reqs++;
}

/* ---- request parsing ----------------------------------------------------------------- */

static void respond_error(struct conn *c, int status)
{
    char body[64];
    snprintf(body, sizeof(body), "error %d\n", status);
    c->close_conn = true;
    c->req.is_head = false;
    c->req.minor = 1;
    resp_reset(c);
    resp_text(c, status, body);
}

/* Take n input bytes as consumed; /echo keeps a copy of them. */
static void in_consume(struct conn *c, size_t n)
{
    if (n == 0)
        return;
    if (c->echo_on)
        sbuf_add(&c->echo, c->in + c->in_off, n);
    c->in_off += n;
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
}

/* 1: head parsed (state ST_BODY), 0: need more input, -1: 400, -2: 431. */
static int parse_head(struct conn *c)
{
    /* Empty lines before a request line are ignored (RFC 9112, section 2.2). */
    while (c->in_len - c->in_off >= 2 && c->in[c->in_off] == '\r' && c->in[c->in_off + 1] == '\n')
        in_consume(c, 2);
    size_t avail = c->in_len - c->in_off;
    if (avail == 0)
        return 0;
    const char *start = c->in + c->in_off;
    size_t from = c->head_scan > 3 ? c->head_scan - 3 : 0;
    if (from > avail)
        from = 0;
    const char *end = memmem(start + from, avail - from, "\r\n\r\n", 4);
    if (end == NULL) {
        c->head_scan = avail;
        return avail > HEAD_MAX ? -2 : 0;
    }
    c->head_scan = 0;
    size_t head_len = (size_t)(end - start) + 4;
    if (head_len > HEAD_MAX)
        return -2;

    struct req *q = &c->req;
    q->buf = xrealloc(NULL, head_len + 1);
    memcpy(q->buf, start, head_len);
    q->buf[head_len] = '\0';
    q->minor = 1;
    /* Keep the raw head for /echo; the path is known only after parsing, so copy whenever the
     * request line mentions it and drop the copy below if it was not the path. */
    const char *rl_end = memchr(start, '\n', head_len);
    if (memmem(start, (size_t)(rl_end - start), "/echo", 5))
        sbuf_add(&c->echo, start, head_len);
    c->in_off += head_len;
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;

    /* Request line: method SP target SP HTTP/1.x */
    char *line = q->buf, *eol = strstr(line, "\r\n");
    if (eol == NULL) /* a NUL byte in the head */
        return -1;
    *eol = '\0';
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == line)
        return -1;
    *sp1 = *sp2 = '\0';
    q->method = line;
    char *target = sp1 + 1, *version = sp2 + 1;
    if (strncmp(version, "HTTP/1.", 7) != 0 || (version[7] != '0' && version[7] != '1') ||
        version[8] != '\0')
        return -1;
    q->minor = version[7] - '0';
    q->is_head = strcmp(q->method, "HEAD") == 0;
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        char *slash = strchr(strstr(target, "://") + 3, '/');
        target = slash ? slash : (char *)"/";
    }
    if (target[0] != '/' && strcmp(target, "*") != 0)
        return -1;
    char *qm = strchr(target, '?');
    if (qm) {
        *qm = '\0';
        q->query = qm + 1;
    }
    q->path = target;

    bool keep_alive = false, close_tok = false, has_te = false;
    for (char *h = eol + 2; *h != '\r';) {
        char *hend = strstr(h, "\r\n");
        if (hend == NULL)
            return -1;
        *hend = '\0';
        char *colon = strchr(h, ':');
        if (colon == NULL || colon == h)
            return -1;
        for (char *t = h; t < colon; t++)
            if (*t == ' ' || *t == '\t')
                return -1;
        *colon = '\0';
        char *val = colon + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        char *vend = val + strlen(val);
        while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
            *--vend = '\0';
        if (strcasecmp(h, "Content-Length") == 0) {
            uint64_t v;
            if (!parse_u64(val, strlen(val), &v) || (q->has_cl && v != q->content_length))
                return -1;
            q->has_cl = true;
            q->content_length = v;
        } else if (strcasecmp(h, "Transfer-Encoding") == 0) {
            has_te = true;
            q->te_chunked = token_in_list(val, "chunked");
            if (!q->te_chunked)
                return -1;
        } else if (strcasecmp(h, "Connection") == 0) {
            keep_alive = keep_alive || token_in_list(val, "keep-alive");
            close_tok = close_tok || token_in_list(val, "close");
        } else if (strcasecmp(h, "Expect") == 0) {
            q->expect_continue = strcasecmp(val, "100-continue") == 0;
        } else if (strcasecmp(h, "Range") == 0) {
            q->range = val;
        } else if (strcasecmp(h, "If-Range") == 0) {
            q->if_range = val;
        }
        h = hend + 2;
    }
    c->close_conn = q->minor == 0 ? !keep_alive : close_tok;
    if (has_te && q->has_cl)
        c->close_conn = true; /* RFC 9112 6.1: answer, then close */
    c->body_chunked = q->te_chunked;
    c->body_left = q->te_chunked ? 0 : q->content_length;
    c->ch = CH_SIZE;
    c->echo_on = strcmp(q->path, "/echo") == 0;
    if (!c->echo_on)
        sbuf_free(&c->echo);

    bool has_body = q->te_chunked || q->content_length > 0;
    char v[16];
    bool ignore = q_get(c, "expect", v, sizeof(v)) && strcmp(v, "ignore") == 0;
    if (q->expect_continue && has_body && !ignore)
        pend_add(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    conn_set_state(c, ST_BODY);
    return 1;
}

/* Find CRLF in the unread input, at most max bytes in. Returns the line length or -1. */
static long find_line(const struct conn *c, size_t max)
{
    size_t avail = c->in_len - c->in_off;
    if (avail == 0)
        return -1;
    const char *s = c->in + c->in_off;
    const char *e = memmem(s, avail < max ? avail : max, "\r\n", 2);
    return e ? (long)(e - s) : -1;
}

/* 1: body complete, 0: need more input, -1: malformed. */
static int read_body(struct conn *c)
{
    if (!c->body_chunked) {
        size_t avail = c->in_len - c->in_off;
        size_t k = c->body_left < avail ? (size_t)c->body_left : avail;
        in_consume(c, k);
        c->body_left -= k;
        return c->body_left == 0;
    }
    for (;;) {
        size_t avail = c->in_len - c->in_off;
        long ll;
        switch (c->ch) {
        case CH_SIZE: {
            ll = find_line(c, 4096);
            if (ll < 0)
                return avail >= 4096 ? -1 : 0;
            const char *s = c->in + c->in_off;
            uint64_t size = 0;
            long i = 0;
            for (; i < ll && hexval((unsigned char)s[i]) >= 0; i++) {
                if (size >> 58)
                    return -1;
                size = size * 16 + (uint64_t)hexval((unsigned char)s[i]);
            }
            if (i == 0 || (i < ll && s[i] != ';' && s[i] != ' ' && s[i] != '\t'))
                return -1;
            in_consume(c, (size_t)ll + 2);
            c->body_left = size;
            c->ch = size ? CH_DATA : CH_TRAILER;
            break;
        }
        case CH_DATA: {
            size_t k = c->body_left < avail ? (size_t)c->body_left : avail;
            in_consume(c, k);
            c->body_left -= k;
            if (c->body_left > 0)
                return 0;
            c->ch = CH_DATA_CRLF;
            break;
        }
        case CH_DATA_CRLF:
            if (avail < 2)
                return 0;
            if (c->in[c->in_off] != '\r' || c->in[c->in_off + 1] != '\n')
                return -1;
            in_consume(c, 2);
            c->ch = CH_SIZE;
            break;
        case CH_TRAILER:
            ll = find_line(c, 65536);
            if (ll < 0)
                return avail >= 65536 ? -1 : 0;
            in_consume(c, (size_t)ll + 2);
            if (ll == 0) {
                c->ch = CH_DONE;
                return 1;
            }
            break;
        case CH_DONE:
            return 1;
        }
    }
}

/* ---- the connection state machine ----------------------------------------------------- */

/*
 * ST_CUTWAIT: reset once the peer has acknowledged every byte sent. SO_LINGER 0 discards the
 * send queue, so resetting as soon as send() took the bytes would deliver fewer than the cut
 * promises whenever the client reads slower than we write. Polled every millisecond; a peer
 * that neither reads nor hangs up keeps the connection here, as ST_STALL would.
 */
static void cut_check(struct conn *c)
{
    int unacked = 0;
    if (ioctl(c->fd, SIOCOUTQ, &unacked) < 0 || unacked == 0)
        conn_reset(c);
    else
        timer_set(c, 1);
}

static void conn_after_response(struct conn *c)
{
    enum after a = c->resp.after;
    resp_reset(c);
    req_reset(c);
    if (a == AFTER_KEEP && c->close_conn)
        a = AFTER_CLOSE;
    switch (a) {
    case AFTER_KEEP:
        conn_set_state(c, ST_HEAD);
        break;
    case AFTER_CLOSE:
        /* FIN, then wait for the peer's: closing with unread input would send RST instead. */
        shutdown(c->fd, SHUT_WR);
        c->in_off = c->in_len = 0;
        if (c->eof) {
            conn_close(c);
            return;
        }
        conn_set_state(c, ST_DRAIN);
        timer_set(c, DRAIN_MS);
        break;
    case AFTER_RST:
        conn_reset(c);
        break;
    case AFTER_CUT:
        conn_set_state(c, ST_CUTWAIT);
        cut_check(c);
        break;
    case AFTER_STALL:
        conn_set_state(c, ST_STALL);
        if (c->eof)
            conn_close(c);
        break;
    }
}

static void conn_drive(struct conn *c)
{
    int rc;
    while (!c->closed) {
        switch (c->state) {
        case ST_HEAD:
            rc = parse_head(c);
            if (rc == 0) {
                if (c->eof)
                    conn_close(c);
                else
                    conn_update(c);
                return;
            }
            if (rc < 0)
                respond_error(c, rc == -2 ? 431 : 400);
            break;
        case ST_BODY:
            if (c->pend_len > c->pend_off && pend_write(c) < 0) {
                conn_close(c);
                return;
            }
            rc = read_body(c);
            if (rc < 0) {
                respond_error(c, 400);
                break;
            }
            if (rc == 0) {
                if (c->eof)
                    conn_close(c);
                else
                    conn_update(c);
                return;
            }
            dispatch(c);
            break;
        case ST_WRITE:
            rc = conn_flush(c);
            if (rc < 0) {
                conn_close(c);
                return;
            }
            if (rc == 0) {
                conn_update(c);
                return;
            }
            conn_after_response(c);
            break;
        case ST_STALL:
            c->in_off = c->in_len = 0;
            if (c->eof)
                conn_close(c);
            else
                conn_update(c);
            return;
        case ST_DELAY:
            if (c->eof && c->holds_slot) {
                /* The client hung up on an /overload request: free the slot now rather than
                 * at the end of the delay. A half-close looks the same and is treated alike. */
                conn_close(c);
                return;
            }
            conn_update(c);
            return;
        case ST_CUTWAIT:
        case ST_DRAIN:
        case ST_SILENT:
            conn_update(c);
            return;
        }
    }
}

static void conn_on_timer(struct conn *c)
{
    switch (c->state) {
    case ST_DELAY:
        if (c->holds_slot) {
            overload_release(c);
            ovl_served++;
        }
        resp_text(c, 200, "ok\n");
        conn_drive(c);
        break;
    case ST_CUTWAIT:
        cut_check(c);
        break;
    case ST_WRITE:
        c->drip_wait = false;
        conn_drive(c);
        break;
    case ST_DRAIN:
        conn_close(c);
        break;
    default:
        break;
    }
}

/* Read what is there. Returns false if the connection was closed. */
static bool conn_read(struct conn *c)
{
    if (c->state == ST_STALL || c->state == ST_DRAIN) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return false;
        }
        return true;
    }
    if (c->eof)
        return true;
    if (c->in_off > 0 && c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_cap - c->in_len < 16384) {
        if (c->in_off > 0) {
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
            if (c->in_cap - c->in_len < 16384)
                c->in_cap = c->in_len + 16384;
            c->in = xrealloc(c->in, c->in_cap);
        }
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n > 0) {
        c->in_len += (size_t)n;
    } else if (n == 0) {
        c->eof = true;
    } else if (errno != EAGAIN && errno != EINTR) {
        conn_close(c);
        return false;
    }
    return true;
}

static void conn_on_event(struct conn *c, uint32_t ev)
{
    if (c->closed)
        return; /* stale: closed earlier in this batch */
    if (c->state == ST_SILENT) {
        conn_close(c); /* only hang-ups and errors are registered */
        return;
    }
    if ((ev & (EPOLLHUP | EPOLLERR)) && c->state != ST_DRAIN) {
        /* Both directions are gone (RST, or FIN after our own shutdown): nothing more can be
         * sent, and a level-triggered HUP would otherwise spin while a timer runs. */
        conn_close(c);
        return;
    }
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !conn_read(c))
        return;
    conn_drive(c);
}

static void accept_all(void)
{
    for (int i = 0; i < 1024; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
                /* Out of descriptors: accept and drop one so the backlog does not spin us. */
                close(spare_fd);
                fd = accept(listen_fd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                fprintf(stderr, "faultserver: out of file descriptors, dropped a connection\n");
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        if (c == NULL)
            die("out of memory");
        c->fd = fd;
        c->heap_idx = SIZE_MAX;
        c->state = opt_silent ? ST_SILENT : ST_HEAD;
        c->events = opt_silent ? EPOLLRDHUP : EPOLLIN;
        struct epoll_event e = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, fd, &e) < 0)
            die("epoll_ctl add: %s", strerror(errno));
        list_push(&live, c);
        stat_conns++;
    }
}

/* ---- setup and main loop ------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: faultserver [--host ADDR] [--port N] [--max-seconds S] [--silent]\n");
    exit(2);
}

static int listen_on(const char *host, unsigned port)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    char h[INET6_ADDRSTRLEN + 2];
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    snprintf(h, sizeof(h), "%s", host);
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        memmove(h, h + 1, strlen(h));
        h[strlen(h) - 1] = '\0';
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*s6);
    } else {
        die("not a numeric address: %s", host);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
        die("bind %s port %u: %s", host, port, strerror(errno));
    if (listen(fd, 4096) < 0)
        die("listen: %s", strerror(errno));
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        die("getsockname: %s", strerror(errno));
    printf("PORT %u\n", ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    unsigned long port = 0, max_seconds = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--silent") == 0) {
            opt_silent = true;
        } else if (i + 1 < argc && strcmp(a, "--host") == 0) {
            host = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--port") == 0) {
            port = strtoul(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(a, "--max-seconds") == 0) {
            max_seconds = strtoul(argv[++i], NULL, 10);
        } else {
            usage();
        }
    }
    if (port > 65535)
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "faultserver: setrlimit: %s\n", strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    pattern_init();

    ep_fd = epoll_create1(EPOLL_CLOEXEC);
    signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (ep_fd < 0 || signal_fd < 0)
        die("epoll/signalfd: %s", strerror(errno));
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &signal_tag};
    epoll_ctl(ep_fd, EPOLL_CTL_ADD, signal_fd, &e);
    listen_fd = listen_on(host, (unsigned)port);
    e = (struct epoll_event){.events = EPOLLIN, .data.ptr = &listen_tag};
    epoll_ctl(ep_fd, EPOLL_CTL_ADD, listen_fd, &e);

    uint64_t end = now_us() + (uint64_t)max_seconds * 1000000u;
    bool stop = false;
    static struct epoll_event evs[1024];
    while (!stop) {
        uint64_t now = now_us();
        if (now >= end)
            break;
        uint64_t wake = heap_len > 0 && heap[0]->deadline < end ? heap[0]->deadline : end;
        uint64_t wait_ms = wake > now ? (wake - now + 999) / 1000 : 0;
        int n = epoll_wait(ep_fd, evs, 1024, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_tag)
                accept_all();
            else if (p == &signal_tag)
                stop = true;
            else
                conn_on_event(p, evs[i].events);
        }
        now = now_us();
        while (heap_len > 0 && heap[0]->deadline <= now) {
            struct conn *c = heap[0];
            timer_clear(c);
            conn_on_timer(c);
        }
        while (graveyard) {
            struct conn *c = graveyard;
            list_remove(&graveyard, c);
            conn_free(c);
        }
    }

    /* Free everything so leak checkers see a clean exit. */
    while (live)
        conn_close(live);
    while (graveyard) {
        struct conn *c = graveyard;
        list_remove(&graveyard, c);
        conn_free(c);
    }
    for (size_t i = 0; i < nflakies; i++)
        free(flakies[i].key);
    free(flakies);
    free(heap);
    free(bomb_raw);
    close(listen_fd);
    close(signal_fd);
    close(ep_fd);
    if (spare_fd >= 0)
        close(spare_fd);
    return 0;
}
