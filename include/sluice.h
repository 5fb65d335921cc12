/*
 * sluice.h -- the public API of libsluice, an asynchronous HTTP/1.1 client.
 *
 * This is the only header users include. Everything here is prefixed `sl_`
 * (types `sl_<noun>_t`, functions `sl_<noun>_<verb>`, macros `SL_`). Names
 * containing a double underscore (`sl__`) are private: they appear here only
 * because handles are embedded in caller memory and the compiler needs their
 * size. Do not touch them.
 *
 * Threading: every function must be called from the thread that runs the
 * loop, except where its comment says "any thread" (sl_async_send) or the
 * function runs on a worker (a sl_work_cb).
 *
 * Errors: functions return 0 or a negative SL_E* code. OS errors equal
 * -errno; sluice's own codes live in a reserved range below
 * SL__ERR_BASE. sl_strerror() and sl_err_name() describe any code.
 *
 * Memory: the library never aborts on allocation failure; it returns
 * SL_ENOMEM. Handles (sl_loop_t, sl_io_t, sl_timer_t, sl_defer_t,
 * sl_async_t, sl_work_t) live in caller memory; the library keeps pointers
 * to them while they are active and never frees them.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_VERSION_MAJOR 0
#define SL_VERSION_MINOR 1
#define SL_VERSION_PATCH 0
#define SL_VERSION_STRING "0.1.0"

/* The version of the library actually linked, as "MAJOR.MINOR.PATCH". */
const char *sl_version(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * One list generates the enum, sl_strerror() and sl_err_name().
 * SL__OS_ERRNO_MAP: codes whose value is -errno.
 * SL__OWN_ERRNO_MAP: sluice's own codes, numbered downwards from
 * SL__ERR_BASE so that they can never collide with an errno value.
 * New codes are appended at the end of their list: values are part of the ABI.
 */
#define SL__OS_ERRNO_MAP(XX)                                                                      \
    XX(EPERM, "operation not permitted")                                                           \
    XX(ENOENT, "no such file or directory")                                                        \
    XX(EINTR, "interrupted system call")                                                           \
    XX(EIO, "i/o error")                                                                           \
    XX(E2BIG, "argument list too long")                                                            \
    XX(EBADF, "bad file descriptor")                                                               \
    XX(EAGAIN, "resource temporarily unavailable")                                                 \
    XX(ENOMEM, "not enough memory")                                                                \
    XX(EACCES, "permission denied")                                                                \
    XX(EFAULT, "bad address")                                                                      \
    XX(EBUSY, "resource busy or locked")                                                           \
    XX(EEXIST, "already exists")                                                                   \
    XX(ENOTDIR, "not a directory")                                                                 \
    XX(EISDIR, "is a directory")                                                                   \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ENFILE, "file table overflow")                                                              \
    XX(EMFILE, "too many open files")                                                              \
    XX(EFBIG, "file too large")                                                                    \
    XX(ENOSPC, "no space left on device")                                                          \
    XX(ESPIPE, "invalid seek")                                                                     \
    XX(EROFS, "read-only file system")                                                             \
    XX(EPIPE, "broken pipe")                                                                       \
    XX(ERANGE, "result too large")                                                                 \
    XX(ENAMETOOLONG, "name too long")                                                              \
    XX(ENOSYS, "function not implemented")                                                         \
    XX(ENOTSUP, "operation not supported")                                                         \
    XX(EAFNOSUPPORT, "address family not supported")                                               \
    XX(EADDRINUSE, "address already in use")                                                       \
    XX(EADDRNOTAVAIL, "address not available")                                                     \
    XX(ENETDOWN, "network is down")                                                                \
    XX(ENETUNREACH, "network is unreachable")                                                      \
    XX(ECONNABORTED, "software caused connection abort")                                           \
    XX(ECONNRESET, "connection reset by peer")                                                     \
    XX(ENOBUFS, "no buffer space available")                                                       \
    XX(EISCONN, "socket is already connected")                                                     \
    XX(ENOTCONN, "socket is not connected")                                                        \
    XX(ETIMEDOUT, "connection timed out")                                                          \
    XX(ECONNREFUSED, "connection refused")                                                         \
    XX(EHOSTUNREACH, "host is unreachable")                                                        \
    XX(EALREADY, "operation already in progress")                                                  \
    XX(EINPROGRESS, "operation in progress")                                                       \
    XX(ECANCELED, "operation canceled")

#define SL__OWN_ERRNO_MAP(XX)                                                                     \
    XX(EOF, "end of file")                                                                         \
    XX(ECLOSING, "the loop or handle is closing")                                                  \
    XX(EBACKEND, "unknown or unavailable event backend")                                           \
    XX(EURL, "malformed URL")                                                                      \
    XX(EUNSUPPORTED_SCHEME, "unsupported URL scheme")                                              \
    XX(EDNS, "could not resolve host")                                                             \
    XX(EDNS_SERVER, "DNS server failure")                                                          \
    XX(ECONNECT, "could not connect to any address")                                               \
    XX(ETLS, "TLS error")                                                                          \
    XX(EPARSE, "malformed HTTP response")                                                          \
    XX(ETRUNCATED, "response ended before the body was complete")                                  \
    XX(EHEADER_TOO_BIG, "response headers exceed the configured limit")                            \
    XX(EBODY_TOO_BIG, "response body exceeds the configured limit")                                \
    XX(EBAD_HEADER, "invalid request header name or value")                                        \
    XX(ETOO_MANY_REDIRECTS, "too many redirects")                                                  \
    XX(EREDIRECT_REFUSED, "redirect refused by policy")                                            \
    XX(EHTTP_STATUS, "HTTP status indicates failure")                                              \
    XX(EDECODE, "content decoding failed")                                                         \
    XX(ETIMEDOUT_QUEUE, "timed out waiting for a connection slot")                                 \
    XX(ETIMEDOUT_CONNECT, "connect timed out")                                                     \
    XX(ETIMEDOUT_TLS, "TLS handshake timed out")                                                   \
    XX(ETIMEDOUT_FIRSTBYTE, "timed out waiting for the first response byte")                       \
    XX(ETIMEDOUT_READ, "read timed out (no data between bytes)")                                   \
    XX(ETIMEDOUT_TOTAL, "transfer exceeded its total time limit")                                 \
    XX(ETLS_UNKNOWN_CA, "TLS: certificate issuer unknown (not trusted)")                          \
    XX(ETLS_HOSTNAME, "TLS: certificate does not match the host name")                            \
    XX(ETLS_EXPIRED, "TLS: certificate has expired")                                              \
    XX(ETLS_NOT_YET_VALID, "TLS: certificate is not yet valid")                                   \
    XX(ETLS_SELF_SIGNED, "TLS: self-signed certificate")                                          \
    XX(ETLS_VERSION, "TLS: no protocol version in common")                                        \
    XX(ETLS_HANDSHAKE, "TLS handshake failed")                                                    \
    XX(ETLS_CLIENT_CERT, "TLS: client certificate or key unusable")                               \
    XX(ETIMEDOUT_GROUP, "the transfer group's deadline passed")                                   \
    XX(ERESUME, "cannot resume: the server's copy changed or ignored the range")

#define SL__ERR_BASE (-30000)

enum sl__err_own_index {
#define SL__XX(code, _) SL__IDX_##code,
    SL__OWN_ERRNO_MAP(SL__XX)
#undef SL__XX
        SL__IDX_COUNT
};

typedef enum {
#define SL__XX(code, _) SL_##code = -(code),
    SL__OS_ERRNO_MAP(SL__XX)
#undef SL__XX
#define SL__XX(code, _) SL_##code = SL__ERR_BASE - SL__IDX_##code,
        SL__OWN_ERRNO_MAP(SL__XX)
#undef SL__XX
} sl_errno_t;

/* A static, human-readable description of `err`; never NULL. */
const char *sl_strerror(int err);
/* The symbolic name of `err` without the prefix ("EAGAIN", "ETLS");
 * "UNKNOWN" for codes sluice does not know. Never NULL. */
const char *sl_err_name(int err);
/* Translate an errno value (positive) into an SL_E* code. */
static inline int sl_translate_errno(int e)
{
    return e > 0 ? -e : e;
}

/* ------------------------------------------------------------------------ */
/* Private plumbing needed for embedded handles                             */
/* ------------------------------------------------------------------------ */

/* An intrusive circular doubly-linked list node (private). */
struct sl__queue {
    struct sl__queue *next;
    struct sl__queue *prev;
};

/* Timer wheel geometry (private): 11 levels of 64 slots of 1 ms granules
 * cover every 64-bit deadline, so no deadline is ever clamped. */
#define SL__WHEEL_BITS 6
#define SL__WHEEL_SLOTS (1u << SL__WHEEL_BITS)
#define SL__WHEEL_LEVELS 11

/* One wheel slot (private): its timers in order of arrival, NULL where one was stopped. */
struct sl__slot {
    struct sl_timer_s **timers;
    uint32_t len;  /* entries in use, holes included */
    uint32_t cap;  /* entries allocated */
    uint32_t live; /* non-NULL entries */
};

struct sl__wheel {
    uint64_t last_run;                   /* every slot before this ms has run */
    uint64_t occupied[SL__WHEEL_LEVELS]; /* bit s set: slot s has live timers */
    uint32_t seq;                        /* last arming sequence handed out */
    struct sl__queue due;                /* armed with a deadline already past */
    struct sl__queue overflow;           /* armed when a slot array could not grow */
    struct sl__slot slots[SL__WHEEL_LEVELS * SL__WHEEL_SLOTS]; /* by slot number */
};

typedef struct sl_loop_s sl_loop_t;
typedef struct sl_io_s sl_io_t;
typedef struct sl_timer_s sl_timer_t;
typedef struct sl_defer_s sl_defer_t;
typedef struct sl_async_s sl_async_t;
typedef struct sl_work_s sl_work_t;

/* A clock for tests: returns monotonic nanoseconds. */
typedef uint64_t (*sl_clock_fn)(void *arg);

struct sl__event {
    int fd;
    unsigned events;
};

/* Per-fd state of a loop (private). */
struct sl__fdinfo {
    sl_io_t *io;          /* the started watcher, or NULL */
    int32_t backend_index; /* poll: index in the pollfd array, -1 if none */
    uint8_t kernel;       /* interest the backend has registered */
    uint8_t dirty;        /* queued in loop->dirty */
    int16_t error;        /* registration failed at flush: errno, delivered as SL_EV_ERR */
};

/* Called when a closed handle may be freed, always from a later point of
 * the loop than the call that closed it. */
typedef void (*sl_close_cb)(void *handle);

/* A handle waiting on loop->closing_queue for its close callback (private). */
struct sl__closing {
    struct sl__queue node;
    sl_close_cb cb;
    void *handle;
};

#define SL__MAX_EVENTS 1024

/* ------------------------------------------------------------------------ */
/* The loop                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A single-threaded reactor: I/O readiness, timers, deferred callbacks and
 * completions of work offloaded to a thread pool. One iteration:
 *
 *   1. update the cached clock;           4. wait for I/O (epoll/poll/kqueue)
 *   2. run deferred callbacks;               with a timeout derived from 2-3;
 *   3. run expired timers;                 5. update the clock, dispatch I/O,
 *                                             run expired timers;
 *                                          6. run close callbacks.
 *
 * Interest changes made during an iteration are applied once, just before
 * step 4. The struct lives in caller memory; its fields are private except
 * `data`.
 */
struct sl_loop_s {
    void *data; /* user context, never touched by sluice */

    /* private */
    uint64_t now_ms;
    uint64_t now_ns;
    sl_clock_fn clock;
    void *clock_arg;
    unsigned active;     /* referenced active handles and requests */
    bool stop_flag;
    bool closing;
    const struct sl__backend *backend;
    int backend_fd;      /* epoll/kqueue descriptor, -1 for poll */
    void *backend_data;  /* poll: pollfd array and fd map */
    struct sl__fdinfo *fds; /* indexed by fd: watcher and kernel state */
    unsigned nfds;
    int *dirty;          /* fds whose interest changed this iteration */
    unsigned ndirty;
    unsigned nfd_errors; /* fds whose registration failed at flush */
    struct sl__queue closing_queue; /* handles waiting for their close cb */
    struct sl__queue defer_queue;
    struct sl__event *events; /* events of the batch being dispatched */
    int nevents;
    int dispatch_index;
    struct sl__wheel wheel;
    /* async wake-up: an eventfd (or the read end of a pipe) and its watcher */
    int async_fd;
    int async_wfd;
    struct sl_io_s *async_io;
    struct sl__queue async_handles;
    void *workq; /* lazily created thread pool (reactor/workq.c) */
    uint64_t iterations;
};

/* Initialise a loop. The backend is the build's default unless the
 * environment variable SLUICE_BACKEND names another compiled-in one
 * ("epoll", "poll", "kqueue").
 * Returns 0, SL_ENOMEM, SL_EBACKEND (unknown SLUICE_BACKEND) or an OS error. */
int sl_loop_init(sl_loop_t *loop);

/* Close a loop that has no active handles left. Offloaded work still
 * pending is drained first: queued jobs are cancelled (their after_work
 * callback runs here with SL_ECANCELED), running jobs are waited for (their
 * after_work runs here with 0), and the worker threads are joined.
 * Returns 0, or SL_EBUSY (nothing is closed) while an I/O watcher, timer,
 * deferred callback or async handle is still active or a close callback is
 * pending: run the loop until they are done. */
int sl_loop_close(sl_loop_t *loop);

/* Run the loop until it has no active handles or requests left, or until
 * sl_loop_stop() is called from a callback. Returns 0, or a negative
 * SL_E* code if the backend failed. Must not be called re-entrantly. */
int sl_loop_run(sl_loop_t *loop);

/* Run one iteration, waiting for I/O at most `timeout_ms` milliseconds
 * (-1: until the next timer is due, or indefinitely if none). The wait is
 * shortened to 0 when deferred callbacks or close callbacks are pending.
 * Returns the number of active handles left (>= 0), or a negative SL_E*. */
int sl_loop_run_once(sl_loop_t *loop, int timeout_ms);

/* Make sl_loop_run() return after the current iteration. */
void sl_loop_stop(sl_loop_t *loop);

/* The cached monotonic clock, updated once per iteration (and by
 * sl_loop_update_time()). Milliseconds and nanoseconds from an arbitrary
 * origin; use the difference of two readings. */
uint64_t sl_loop_now(const sl_loop_t *loop);
uint64_t sl_loop_now_ns(const sl_loop_t *loop);
/* Refresh the cached clock now (e.g. after a long computation). */
void sl_loop_update_time(sl_loop_t *loop);

/* Replace the clock (tests): `fn(arg)` returns monotonic nanoseconds and is
 * read once per iteration. NULL restores the system monotonic clock.
 * The new clock must not go backwards relative to the old one. */
void sl_loop_set_clock(sl_loop_t *loop, sl_clock_fn fn, void *arg);

/* The name of the backend in use: "epoll", "poll" or "kqueue". */
const char *sl_loop_backend(const sl_loop_t *loop);

/* Whether the loop has active handles or requests (what keeps run going). */
bool sl_loop_alive(const sl_loop_t *loop);

/* ------------------------------------------------------------------------ */
/* I/O watchers                                                             */
/* ------------------------------------------------------------------------ */

#define SL_EV_READ 0x1u  /* readable (or EOF) */
#define SL_EV_WRITE 0x2u /* writable */
#define SL_EV_HUP 0x4u   /* peer hung up; delivered even if not asked for */
#define SL_EV_ERR 0x8u   /* error pending on the fd; delivered even if not asked for */

/* Readiness callback: `events` is the subset of SL_EV_READ|SL_EV_WRITE the
 * watcher asked for, plus SL_EV_HUP and SL_EV_ERR when the kernel reports
 * them (with HUP/ERR, READ is also set if it was asked for, so that a reader
 * reads and sees EOF or the error). Level-triggered: an unread fd is
 * reported again in the next iteration. */
typedef void (*sl_io_cb)(sl_io_t *io, unsigned events);

struct sl_io_s {
    void *data; /* user context */
    /* private */
    sl_loop_t *loop;
    sl_io_cb cb;
    int fd;
    unsigned events;  /* interest wanted by the user */
    unsigned flags;
    struct sl__closing closing;
};

/* Prepare `io` to watch `fd` (which the caller keeps owning and closes
 * itself, after sl_io_stop or sl_io_close). Does not start watching.
 * Returns 0 or SL_EINVAL (negative fd). */
int sl_io_init(sl_loop_t *loop, sl_io_t *io, int fd, sl_io_cb cb);

/* Watch for `events` (SL_EV_READ and/or SL_EV_WRITE), replacing any
 * previous interest; 0 is the same as sl_io_stop(). The change is applied
 * to the kernel once, just before the loop next waits, so it is cheap to
 * call repeatedly. Safe from any callback.
 * Returns 0, SL_ENOMEM, SL_EEXIST (another watcher has this fd),
 * SL_ECLOSING (io was closed) or SL_EINVAL. */
int sl_io_start(sl_io_t *io, unsigned events);

/* Stop watching. Pending events of the batch being dispatched are dropped:
 * after this returns the callback is not called again, and the caller may
 * close the fd immediately. Safe from any callback. */
void sl_io_stop(sl_io_t *io);

/* Stop watching and call `close_cb(io)` from a later point of the loop
 * (never inside this call). The memory of `io` must stay valid until then.
 * `close_cb` may be NULL. */
void sl_io_close(sl_io_t *io, sl_close_cb close_cb);

/* Whether `io` has a non-zero interest. */
bool sl_io_active(const sl_io_t *io);

/* An unreferenced active watcher does not keep sl_loop_run() going. */
void sl_io_unref(sl_io_t *io);
void sl_io_ref(sl_io_t *io);

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Timers live in a hierarchical timing wheel (1 ms granules, 11 levels of
 * 64 slots): arming, stopping and re-arming are O(1) (amortized), and none
 * of them can fail for lack of memory. A slot is a loop-owned array of
 * pointers to its timers, so a 64-byte sl_timer_t is all the caller
 * provides.
 *
 * Guarantees: a timer never fires before `sl_loop_now() >= deadline`, where
 * deadline = sl_loop_now() at arming + timeout. It fires in the first loop
 * iteration whose cached clock has reached the deadline; the wheel adds no
 * lateness of its own (timers far in the future are cascaded to finer levels
 * with their exact deadline), so the lateness bound is the loop's own:
 * the time the iteration spends in other callbacks plus the backend's wait
 * resolution (1 ms). Timers due in the same iteration fire in order of
 * deadline, then in order of arming. A timer armed from inside a timer
 * callback never fires in that same batch, even with timeout 0.
 */
typedef void (*sl_timer_cb)(sl_timer_t *t);

struct sl_timer_s {
    /* private; the fields that arming and stopping touch come first, in 56 bytes */
    union {
        uint32_t index;        /* in a wheel slot: position in the slot's array */
        struct sl__queue node; /* on the due list, the overflow list or a batch being fired */
    } link;
    uint64_t deadline; /* ms, on the loop clock */
    sl_loop_t *loop;
    uint64_t repeat; /* ms, 0 = one-shot */
    sl_timer_cb cb;
    uint32_t seq;  /* arming order (the wheel renumbers armed timers before it wraps) */
    int16_t where; /* SL__TIMER_* or a slot number (level * 64 + slot) */
    uint16_t flags;
    void *data; /* user context */
};

/* Prepare a timer; it is inactive. Cannot fail. */
void sl_timer_init(sl_loop_t *loop, sl_timer_t *t, sl_timer_cb cb);

/* Arm (or re-arm) `t` to fire `timeout_ms` from sl_loop_now(), then every
 * `repeat_ms` if non-zero. Re-arming an active timer moves its deadline.
 * A repeating timer is re-armed *before* its callback runs, `repeat_ms` from
 * the loop's current time (as libuv does: a late loop does not cause a burst
 * of catch-up calls), so the callback may stop it, re-arm it or free its
 * memory.
 * O(1) amortized: it may grow the array of the wheel slot the timer goes to;
 * if that allocation fails, the timer goes on an overflow list that each
 * loop iteration scans instead, so arming never fails for lack of memory.
 * Once every 2^32 arms of a loop, the arm first renumbers the armed timers'
 * 32-bit arming sequences (O(n log n) for n armed timers).
 * Returns 0 or SL_EINVAL (no callback). */
int sl_timer_start(sl_timer_t *t, uint64_t timeout_ms, uint64_t repeat_ms);

/* Disarm. Safe on an inactive timer and from any callback. O(1). Nothing
 * refers to a stopped (or fired one-shot) timer: its memory may be freed at
 * once. */
void sl_timer_stop(sl_timer_t *t);

/* Re-arm a repeating timer `repeat` ms from now; SL_EINVAL if it has no
 * repeat interval. */
int sl_timer_again(sl_timer_t *t);

bool sl_timer_active(const sl_timer_t *t);
/* The absolute deadline in loop milliseconds (meaningful when active). */
uint64_t sl_timer_deadline(const sl_timer_t *t);
void sl_timer_unref(sl_timer_t *t);
void sl_timer_ref(sl_timer_t *t);

/* ------------------------------------------------------------------------ */
/* Deferred callbacks                                                       */
/* ------------------------------------------------------------------------ */

/* Runs at the start of the next loop iteration, never inside the call that
 * queued it. A deferred callback queued from inside a deferred callback runs
 * in the iteration after. While any is queued the loop does not block. */
typedef void (*sl_defer_cb)(sl_defer_t *d);

struct sl_defer_s {
    void *data;
    /* private */
    sl_loop_t *loop;
    sl_defer_cb cb;
    struct sl__queue node;
    bool queued;
};

void sl_defer_init(sl_loop_t *loop, sl_defer_t *d, sl_defer_cb cb);
/* Queue `d` once; queuing an already queued one does nothing. */
void sl_defer_start(sl_defer_t *d);
/* Unqueue; the callback will not run. Safe on an idle one. */
void sl_defer_stop(sl_defer_t *d);
bool sl_defer_pending(const sl_defer_t *d);

/* ------------------------------------------------------------------------ */
/* Async handles: waking the loop from any thread                           */
/* ------------------------------------------------------------------------ */

/* Runs on the loop thread after one or more sl_async_send() calls (sends
 * that arrive before the callback runs are coalesced into one call). */
typedef void (*sl_async_cb)(sl_async_t *a);

struct sl_async_s {
    void *data;
    /* private */
    sl_loop_t *loop;
    sl_async_cb cb;
    struct sl__queue node;
    struct sl__closing closing;
    int pending; /* atomic: a send has not been delivered yet */
    unsigned flags;
};

/* Register `a` on the loop (loop thread only). An async handle is active,
 * and keeps sl_loop_run() going, until sl_async_close() (or sl_async_unref()).
 * Returns 0, SL_ENOMEM or an OS error creating the wake-up descriptor. */
int sl_async_init(sl_loop_t *loop, sl_async_t *a, sl_async_cb cb);

/* Any thread, async-signal-safe: make `cb` run soon on the loop thread.
 * Returns 0. Must not be called after sl_async_close() has been called. */
int sl_async_send(sl_async_t *a);

/* Loop thread only. `close_cb(a)` runs from a later point of the loop. */
void sl_async_close(sl_async_t *a, sl_close_cb close_cb);
void sl_async_unref(sl_async_t *a);
void sl_async_ref(sl_async_t *a);

/* ------------------------------------------------------------------------ */
/* Counting limiter: the semaphore of the loop                              */
/* ------------------------------------------------------------------------ */

/*
 * At most `max` holders at once; further acquirers wait in FIFO order. A
 * grant is delivered through the waiter's callback, always from a later
 * point of the loop (never inside sl_limit_acquire or sl_limit_release).
 * Both structs live in caller memory. Loop thread only.
 */
typedef struct sl_limit_s sl_limit_t;
typedef struct sl_limit_waiter_s sl_limit_waiter_t;
/* The slot is yours: call sl_limit_release() when done with it. */
typedef void (*sl_limit_cb)(sl_limit_waiter_t *w);

struct sl_limit_s {
    void *data;
    /* private */
    sl_loop_t *loop;
    unsigned max;
    unsigned used;               /* granted slots, callbacks delivered or not */
    struct sl__queue waiters;
};

struct sl_limit_waiter_s {
    void *data;
    /* private */
    sl_limit_t *limit;
    sl_limit_cb cb;
    struct sl__queue node;
    sl_defer_t defer;            /* delivers the grant */
    int state;
};

void sl_limit_init(sl_loop_t *loop, sl_limit_t *l, unsigned max);
/* Ask for a slot. Returns 0 (cb will run once the slot is granted) or
 * SL_EINVAL (no callback, or `w` already waiting or granted). */
int sl_limit_acquire(sl_limit_t *l, sl_limit_waiter_t *w, sl_limit_cb cb);
/* Withdraw `w`: if it is waiting it leaves the line; if the slot was granted
 * but the callback has not run yet, the slot is given back. No-op
 * otherwise. The callback never runs afterwards. */
void sl_limit_cancel(sl_limit_waiter_t *w);
/* Give back a slot whose callback ran. The next waiter is granted. */
void sl_limit_release(sl_limit_t *l);
/* Change the limit; raising it grants waiting acquirers at once. */
void sl_limit_set_max(sl_limit_t *l, unsigned max);
unsigned sl_limit_in_use(const sl_limit_t *l);
unsigned sl_limit_waiting(const sl_limit_t *l);

/* ------------------------------------------------------------------------ */
/* Thread-pool offload                                                      */
/* ------------------------------------------------------------------------ */

/* `work_cb` runs on a pool thread and must not call sluice functions other
 * than sl_async_send(). `after_work_cb` runs on the loop thread with
 * status 0 after work_cb returned, or SL_ECANCELED if the job was cancelled
 * before a worker started it (work_cb then never ran). */
typedef void (*sl_work_cb)(sl_work_t *req);
typedef void (*sl_after_work_cb)(sl_work_t *req, int status);

struct sl_work_s {
    void *data;
    /* private */
    sl_loop_t *loop;
    sl_work_cb work_cb;
    sl_after_work_cb after_work_cb;
    struct sl__queue node;
    int state;
    int status;
};

/*
 * Queue `req` (zero-initialised before its first submit; it may be submitted
 * again once its after_work callback has run) on the loop's thread pool (created on first use with
 * SLUICE_THREADPOOL_SIZE threads, default 4, at most 128). The request is
 * active, and keeps the loop alive, until after_work_cb has run. `req` must
 * stay valid until then. after_work_cb never runs inside this call.
 * Returns 0, SL_EINVAL (no work_cb or after_work_cb, or req already
 * queued), SL_ECLOSING (the loop is closing), SL_ENOMEM or an OS error
 * starting the threads.
 */
int sl_work_submit(sl_loop_t *loop, sl_work_t *req, sl_work_cb work_cb,
                   sl_after_work_cb after_work_cb);

/* Cancel a job that no worker has started: returns 0 and after_work_cb
 * runs later (not inside this call) with SL_ECANCELED. Returns SL_EBUSY if a
 * worker has started or finished it (after_work_cb will run with 0), or
 * SL_EINVAL if `req` is not pending. Loop thread only. */
int sl_work_cancel(sl_work_t *req);


/* ======================================================================== */
/* HTTP/1.1 client                                                          */
/* ======================================================================== */

/*
 * A client (sl_client_t) owns a connection pool, a DNS cache and (with
 * HTTPS) a TLS context, and runs on one loop. A request (sl_req_t) is one
 * transfer: resolve -> connect -> send -> response head -> body -> done,
 * following redirects if asked. Both are opaque and library-allocated.
 *
 * Callbacks run on the loop thread and never inside the sluice call that
 * caused them (sl_req_start, sl_req_cancel, sl_client_free...). User context
 * goes in sl_req_set_data()/sl_req_data().
 *
 * Every string and header passed in is copied, except bodies given with
 * sl_req_body_ref() (zero-copy: the bytes must stay valid until done).
 */
typedef struct sl_client_s sl_client_t;
typedef struct sl_req_s sl_req_t;
typedef struct sl_resp_s sl_resp_t;

/* Returned by data callbacks to pause a transfer (a paused transfer stops
 * reading its socket until sl_req_resume()). */
#define SL_PAUSE 1

typedef enum {
    SL_RESOLVER_ARES = 0, /* c-ares on the loop: cancellable, TTL-aware (default) */
    SL_RESOLVER_SYSTEM    /* getaddrinfo on the thread pool (nsswitch set-ups) */
} sl_resolver_t;

typedef struct sl_client_opts_s {
    unsigned max_connections;          /* all origins together; default 100 */
    unsigned max_connections_per_host; /* per origin (scheme, host, port); 0 = unlimited */
    uint64_t idle_timeout_ms;          /* idle pooled connections close after; default 15000 */
    bool retry_stale;                  /* retry an idempotent request once on a fresh
                                          connection when a reused one fails before any
                                          response byte; default true */
    sl_resolver_t resolver;
    uint32_t dns_cache_max_ttl_s; /* cap on a record's TTL in the cache; 0 disables; default 300 */
    uint32_t dns_cache_min_ttl_s; /* floor; default 0 */
    uint32_t dns_negative_ttl_s;  /* failed lookups are cached this long; default 5 */
    const char *dns_servers;      /* "ip:port,..." instead of the system's; NULL = system */
    size_t max_header_bytes;      /* response head limit; default 65536 */
    size_t max_header_fields;     /* default 100 */
    const char *user_agent;       /* NULL: "sluice/VERSION" */
    /* Rate limits: token buckets of `rate` request starts per second, which
     * start full with `burst` tokens (the first `burst` requests go at once).
     * Global and per origin; 0 = no limit. Redirect hops and retries are
     * request starts too. Requests waiting for a token count as queued
     * (timeouts.queue_ms). */
    double rate_per_s;
    double rate_burst;            /* default: 1 */
    double host_rate_per_s;
    double host_rate_burst;       /* default: 1 */
    /* Adaptive per-host back-off (AIMD): a 429 or 503 answer halves that
     * origin's connection allowance (from the connections open to it) and
     * its rate (the configured one; without one, once a single connection
     * is still too many, half the pace it was seeing); each window of successes
     * adds a connection back and a tenth of the rate, up to the configured
     * limits. One decrease per round: answers to requests sent before the
     * last decrease do not count. Default off (the CLI turns it on with
     * --retry). */
    bool adaptive;
    /* HTTPS. The TLS context is created on the first https request. */
    const char *tls_cafile;       /* trust these CAs INSTEAD of the system store (curl --cacert) */
    const char *tls_capath;       /* a hashed CA directory, likewise (--capath) */
    bool tls_insecure;            /* no certificate or host verification (-k); -v says so */
    int tls_min_version;          /* 12 (TLS 1.2, default) or 13 */
    const char *tls_cert;         /* client certificate, PEM (--cert) */
    const char *tls_key;          /* its private key, PEM (--key); NULL: in tls_cert */
    /* What the client offers, in order of preference (servers that honour
     * the client's order, nginx's default, take the first they support).
     * NULL: sluice's order, AEAD suites with forward secrecy first and
     * AES-128-GCM first among them, as browsers, Go and BoringSSL offer them
     * (TLS 1.3: TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:
     * TLS_CHACHA20_POLY1305_SHA256; TLS 1.2: ECDHE-ECDSA/RSA with AES128-GCM,
     * then AES256-GCM, then CHACHA20-POLY1305, then the tail browsers keep
     * for old TLS 1.2 servers: ECDHE with AES-CBC, then RSA key exchange),
     * with ChaCha20-Poly1305 first instead on CPUs without AES instructions.
     * Like the other strings, copied by sl_client_new(), which checks them:
     * a list OpenSSL can use nothing of (or an empty one) fails it with
     * SL_ETLS. Names OpenSSL does not know are skipped, as in curl. */
    const char *tls_ciphers;   /* TLS 1.2, OpenSSL's cipher-list syntax (curl --ciphers):
                                  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256" */
    const char *tls13_ciphers; /* TLS 1.3 suite names joined by ':' (curl --tls13-ciphers):
                                  "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256" */
} sl_client_opts_t;

/* Fill `o` with the defaults above. */
void sl_client_opts_init(sl_client_opts_t *o);

/* Say that no new transfer will be started (a CLI whose URL list ran out):
 * the transfers running go on, retries and redirects included, but
 * connections close as soon as they go idle instead of being pooled
 * (unless requests are waiting for one), and idle ones close at the next
 * loop iteration, after the transfers started before this call have taken
 * theirs, so their teardown overlaps the last answers instead of following
 * them. */
void sl_client_drain(sl_client_t *c);

/* Create a client on `loop` (NULL opts: defaults). The strings of `opts`
 * are copied; the caller keeps its own. Returns 0, SL_ENOMEM, SL_ETLS
 * (tls_ciphers or tls13_ciphers holds nothing OpenSSL can use), or an error
 * from the DNS library (SL_EDNS_SERVER, only with dns_servers: the system's
 * configuration is read at the first lookup). Other TLS options are only
 * read at the first https request, whose failure reports them. Loop
 * thread only. */
int sl_client_new(sl_loop_t *loop, const sl_client_opts_t *opts, sl_client_t **out);

/* sl_client_new(), and when it fails, a NUL-terminated detail in `errbuf`
 * (if errlen > 0; "" when there is nothing to add to the code), e.g. which
 * cipher list OpenSSL refused, quoted, with OpenSSL's reason. */
int sl_client_new_ex(sl_loop_t *loop, const sl_client_opts_t *opts, sl_client_t **out, char *errbuf,
                     size_t errlen);

/* Whether OpenSSL can use the cipher list `list` as sl_client_new() would:
 * `version` 12 for tls_ciphers (TLS 1.2), 13 for tls13_ciphers. Returns 0
 * (NULL, the default, is fine), SL_ETLS (nothing usable; a detail as above
 * goes to `errbuf` if errlen > 0), SL_EINVAL (another version) or SL_ENOMEM.
 * For a caller that must say which of its own settings is wrong (the CLI
 * names the flag). Any thread. */
int sl_tls_ciphers_check(const char *list, int version, char *errbuf, size_t errlen);

/* Stop the client: every transfer still running is cancelled (its done
 * callback runs later, with SL_ECANCELED), connections are closed, and the
 * memory is released once nothing refers to it any more. Run the loop until
 * it is idle before sl_loop_close(). Safe inside callbacks. */
void sl_client_free(sl_client_t *c);

/* Response-head callback: the final (non-1xx) response of the last hop has
 * arrived. Return 0 to go on, SL_PAUSE to pause, or a negative SL_E* code to
 * abort the transfer with that code. */
typedef int (*sl_head_cb)(sl_req_t *req, const sl_resp_t *resp);
/* Body bytes, decoded if decoding is on, in order, exactly once. `data` is
 * valid during the call. Same return convention as sl_head_cb. */
typedef int (*sl_data_cb)(sl_req_t *req, const void *data, size_t len);
/* The transfer ended: `status` is 0 on success or an SL_E* code. Details in
 * sl_req_result(). The request stays valid until sl_req_free(). */
typedef void (*sl_done_cb)(sl_req_t *req, int status);
/* Upload producer: fill at most `cap` bytes of `buf`, set *len (0 = end of
 * body) and return 0; or return SL_PAUSE (call sl_req_resume() when more
 * data is ready) or a negative SL_E* to abort. */
typedef int (*sl_body_cb)(sl_req_t *req, void *buf, size_t cap, size_t *len);

/* Create a request. `method` is any token ("GET", "POST", "PROPFIND"...);
 * `url` an http or https URL (fragment dropped). Returns 0, SL_EURL or
 * SL_EUNSUPPORTED_SCHEME (then `*why`, if `why` is not NULL, points to a
 * static text naming the problem), SL_EINVAL (method not a token) or
 * SL_ENOMEM. */
int sl_req_new(sl_client_t *c, const char *method, const char *url, sl_req_t **out,
               const char **why);

/* Release a request. If it is still running it is cancelled first and its
 * done callback will NOT run. Safe anywhere, including its own callbacks. */
void sl_req_free(sl_req_t *req);

void sl_req_set_data(sl_req_t *req, void *data);
void *sl_req_data(const sl_req_t *req);

/* Add a request header (copied). A name or value containing CR, LF or NUL,
 * or a name that is not an HTTP token, is refused with SL_EBAD_HEADER. A
 * NULL value suppresses a header sluice would add itself (User-Agent,
 * Accept, Accept-Encoding). A Host header replaces the one sluice derives
 * from the URL (as curl -H does). Content-Length and Transfer-Encoding are
 * refused (SL_EBAD_HEADER): sluice owns framing. Before sl_req_start()
 * only. */
int sl_req_header(sl_req_t *req, const char *name, const char *value);

/* Request body from memory, copied. Sets Content-Length. */
int sl_req_body(sl_req_t *req, const void *data, size_t len);
/* Request body from memory, not copied: must stay valid until done. Large
 * bodies are written straight from this memory with writev. */
int sl_req_body_ref(sl_req_t *req, const void *data, size_t len);
/* Streamed request body: `length` bytes (Content-Length), or -1 for
 * unknown (chunked). A streamed body cannot be replayed, so 307/308
 * redirects and stale-connection retries are not followed for it. */
int sl_req_body_stream(sl_req_t *req, int64_t length, sl_body_cb cb);

/* first_byte_ms = SL_TIMEOUT_NEVER: no limit on the wait for the first
 * response byte, and read_ms does not cover it either. */
#define SL_TIMEOUT_NEVER UINT64_MAX
typedef struct sl_timeouts_s {
    uint64_t queue_ms;      /* waiting for a connection slot */
    uint64_t connect_ms;    /* DNS + TCP connect (+ TLS handshake) of a new connection */
    uint64_t first_byte_ms; /* from the request sent to the first response byte */
    uint64_t read_ms;       /* between two received bytes (and before the first
                               one when first_byte_ms is 0, like aiohttp's sock_read) */
    uint64_t total_ms;      /* the whole transfer, redirects included */
    uint64_t tls_ms;        /* the TLS handshake (also bounded by connect_ms) */
} sl_timeouts_t;            /* 0 = no limit. Each reports its own SL_ETIMEDOUT_* code. */
void sl_req_timeouts(sl_req_t *req, const sl_timeouts_t *t);

/* Follow up to `max` redirects (0: do not follow; curl's default with -L
 * is 50, sluice's 10). https -> http hops are refused with
 * SL_EREDIRECT_REFUSED unless `allow_downgrade`. */
void sl_req_follow(sl_req_t *req, unsigned max, bool allow_downgrade);

/* Ask for gzip/deflate (Accept-Encoding) and decode; a decoded body over
 * `max_decoded` bytes (0: no limit) fails with SL_EBODY_TOO_BIG. */
void sl_req_decode(sl_req_t *req, bool on, uint64_t max_decoded);

/* Keep the body in memory (sl_req_body_data()), failing with
 * SL_EBODY_TOO_BIG past `max_bytes`. Without it, bodies only go to the data
 * callback (or nowhere). */
void sl_req_buffer(sl_req_t *req, size_t max_bytes);

/* Send "Expect: 100-continue" for bodies of at least `min_bytes` (default
 * 1 MiB; 0 = never) and wait up to 1 s for the server's go-ahead. */
void sl_req_expect_continue(sl_req_t *req, size_t min_bytes);

void sl_req_callbacks(sl_req_t *req, sl_head_cb on_head, sl_data_cb on_data, sl_done_cb on_done);

/*
 * Retries. A transfer is tried again, after a wait, when it fails with a
 * connection error (refused, reset, unreachable, DNS server failure), a
 * truncated response or a connect/TLS/first-byte/read timeout, or when the
 * response status is 408, 429, 500, 502, 503 or 504 (that response's body is
 * dropped, on_head does not see it; when the retries are used up, the last
 * response is delivered as usual). Only idempotent methods are retried
 * unless `all_methods`; a streamed body is never replayed. The wait is
 * random in [0, min(max_delay, delay * 2^n)] ("full jitter"), or the
 * server's Retry-After (seconds or HTTP-date) capped at max_delay. A GET
 * whose response head was already delivered (a download that broke
 * part-way) is resumed, not restarted: the next attempt asks for the rest
 * with Range, validated with If-Range against the response's strong ETag
 * (its Last-Modified if it has no ETag; a weak one means no resume), and
 * the body goes on where it stopped (on_head does
 * not run again; sl_result_t.resumes counts these). Without a validator, or
 * with decoding on, such a transfer is not retried; if the server's copy
 * changed (or it ignores the range) the transfer fails with SL_ERESUME.
 * No retry
 * starts once `max_time_ms` has passed since sl_req_start() (nor would the
 * total timeout allow it). Every retry is counted in sl_result_t.retries.
 */
typedef struct sl_retry_s {
    unsigned max;          /* retries after the first attempt; 0 = none (default) */
    uint64_t delay_ms;     /* base of the backoff; 0 means 1000 */
    uint64_t max_delay_ms; /* cap on one wait, Retry-After included; 0 means 30000 */
    uint64_t max_time_ms;  /* budget for starting retries; 0 = none */
    bool all_methods;      /* retry non-idempotent methods (POST...) too */
} sl_retry_t;
void sl_req_retry(sl_req_t *req, const sl_retry_t *r);

typedef enum {
    SL_TRACE_INFO = 0,   /* a line of text: "Connected to 127.0.0.1 port 80" */
    SL_TRACE_HEAD_OUT,   /* the request head as sent */
    SL_TRACE_HEAD_IN     /* a response head as received (1xx interim included) */
} sl_trace_kind_t;
/* Debug callback (curl's CURLOPT_DEBUGFUNCTION): `data` is valid during the
 * call and not NUL-terminated. */
typedef void (*sl_trace_cb)(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len);
void sl_req_trace(sl_req_t *req, sl_trace_cb cb);

/* Start the transfer. Returns 0 (on_done will run, later) or SL_EINVAL
 * (already started), SL_ECLOSING (client closing). */
int sl_req_start(sl_req_t *req);

/* Pause: stop reading the response (and sending a streamed body) until
 * resume. Timeouts keep running except read_ms. */
void sl_req_pause(sl_req_t *req);
void sl_req_resume(sl_req_t *req);

/* Cancel a running transfer in any state; its resources are released at
 * once and on_done runs later with SL_ECANCELED. No-op if not running. */
void sl_req_cancel(sl_req_t *req);

typedef struct sl_result_s {
    int error;               /* 0 or SL_E* */
    int status;              /* final HTTP status; 0 if no response */
    uint64_t bytes_down;     /* body bytes delivered (decoded) */
    uint64_t bytes_wire;     /* body bytes received on the wire, last hop */
    uint64_t bytes_up;       /* request bytes sent, all hops (heads and bodies) */
    bool reused;             /* the last hop ran on a reused connection */
    unsigned redirects;
    unsigned retries;
    /* Microseconds since sl_req_start(), like curl's time_*; 0 if not reached.
     * The last hop's DNS/connect/TLS are measured from the hop's start. */
    uint64_t time_queue_us, time_dns_us, time_connect_us, time_tls_us, time_first_byte_us,
        time_total_us;
    const char *effective_url; /* the last URL requested */
    const char *remote_ip;     /* "" if never connected */
    uint16_t remote_port;
    const char *errmsg;        /* human message naming the cause; "" on success */
    unsigned resumes;          /* retries that continued the body with Range */
} sl_result_t;

/* Valid after on_done (partial figures before). Owned by the request. */
const sl_result_t *sl_req_result(const sl_req_t *req);
/* The final response head, or NULL if none arrived. Owned by the request. */
const sl_resp_t *sl_req_response(const sl_req_t *req);
/* The body kept by sl_req_buffer(). */
const void *sl_req_body_data(const sl_req_t *req, size_t *len);
/* Human message naming the cause of the failure ("" if none). */
const char *sl_req_errdetail(const sl_req_t *req);
const char *sl_req_method(const sl_req_t *req);
const char *sl_req_url(const sl_req_t *req);

int sl_resp_status(const sl_resp_t *r);
const char *sl_resp_reason(const sl_resp_t *r);
/* 10 for HTTP/1.0, 11 for HTTP/1.1. */
int sl_resp_version(const sl_resp_t *r);
size_t sl_resp_header_count(const sl_resp_t *r);
/* The i-th header as received; returns 0 or SL_EINVAL (out of range). */
int sl_resp_header_at(const sl_resp_t *r, size_t i, const char **name, const char **value);
/* First header named `name` (case-insensitive), or NULL. */
const char *sl_resp_header(const sl_resp_t *r, const char *name);
/* Content-Length of the response, or -1. */
int64_t sl_resp_content_length(const sl_resp_t *r);

/*
 * Groups: a set of transfers, and of other groups, that ends as one -- the
 * gather() and TaskGroup of sluice.
 *
 * A group owns what is added to it (sl_group_free() frees its requests and
 * nested groups). sl_group_start() starts every member that is not running
 * yet; members added later start when added. The group ends once every
 * member has ended (and it is not held open with sl_group_hold()); then its
 * done callback runs, after the members' own done callbacks, with
 *   SL_GROUP_COLLECT:   0 if every member succeeded, else the first
 *                       failure's code; nothing is cancelled, every result
 *                       is in its member (gather(..., return_exceptions=True));
 *   SL_GROUP_FAIL_FAST: the first failure cancels every other member (they
 *                       end with SL_ECANCELED) and the group reports that
 *                       failure (asyncio.TaskGroup).
 * A member request fails when it ends with an error; a nested group when it
 * ends with one. sl_group_cancel() (SL_ECANCELED) and the deadline
 * (SL_ETIMEDOUT_GROUP) stop every member in either mode, nested groups too.
 * Retries happen inside a member: only its final outcome counts.
 * Loop thread only; every call is safe inside any callback.
 */
typedef struct sl_group_s sl_group_t;
typedef enum { SL_GROUP_COLLECT = 0, SL_GROUP_FAIL_FAST = 1 } sl_group_mode_t;
/* `err` is sl_group_error(). The group stays valid until sl_group_free(). */
typedef void (*sl_group_cb)(sl_group_t *g, int err);

/* Returns 0, SL_EINVAL (unknown mode) or SL_ENOMEM. */
int sl_group_new(sl_loop_t *loop, sl_group_mode_t mode, sl_group_t **out);
/* Free the group, its requests and nested groups; running ones are cancelled
 * and no done callback runs for them or the group. If the group is itself a
 * member, it leaves its parent (counting there as cancelled if it had not
 * ended). Safe in callbacks. */
void sl_group_free(sl_group_t *g);
void sl_group_set_data(sl_group_t *g, void *data);
void *sl_group_data(const sl_group_t *g);

/* Add a request (new or running; not ended) or a group. The group takes
 * ownership. Returns 0, SL_EINVAL (ended group, member of another group, a
 * cycle, an ended request), SL_ECANCELED (the group is being cancelled:
 * not added), SL_ENOMEM. A request freed with sl_req_free() leaves the
 * group, counting as cancelled if it had not ended. */
int sl_group_add(sl_group_t *g, sl_req_t *req);
int sl_group_add_group(sl_group_t *parent, sl_group_t *child);

/* Bound the whole group: `ms` after sl_group_start() (or after this call,
 * if the group is already running) every member still running is stopped
 * with SL_ETIMEDOUT_GROUP. 0 = none. */
void sl_group_deadline(sl_group_t *g, uint64_t ms);
/* Start the group (a nested group starts with its parent: set its callback
 * with sl_group_on_done()). An empty group ends at once (successfully).
 * Returns 0 or SL_EINVAL (already started). */
int sl_group_start(sl_group_t *g, sl_group_cb on_done);
int sl_group_on_done(sl_group_t *g, sl_group_cb on_done);
/* While held, the group does not end even when no member is running: for
 * members added over time (a producer). Release with `false`. */
void sl_group_hold(sl_group_t *g, bool hold);
/* Cancel every member; the group ends with SL_ECANCELED (unless it had
 * already failed). */
void sl_group_cancel(sl_group_t *g);
/* Record a failure found outside the transfers (say, a file write): the
 * group will report `err` (< 0) unless it failed before; in fail-fast mode
 * the members are cancelled. */
void sl_group_fail(sl_group_t *g, int err, const char *why);

/* The first failure (0 if none yet), and a message naming it. */
int sl_group_error(const sl_group_t *g);
const char *sl_group_errdetail(const sl_group_t *g);
bool sl_group_done(const sl_group_t *g);
/* Members in the order added. A slot holds a request or a group (or
 * neither, once that member was freed on its own). */
size_t sl_group_size(const sl_group_t *g);
sl_req_t *sl_group_req(const sl_group_t *g, size_t i);
sl_group_t *sl_group_child(const sl_group_t *g, size_t i);
/* Index of the member whose failure decided the group, or -1. */
long sl_group_cause(const sl_group_t *g);
/* Members still running, ended successfully, ended with an error. */
void sl_group_counts(const sl_group_t *g, size_t *running, size_t *ok, size_t *failed);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_H */
