/*
 * test_async.c -- async handles: cross-thread wake-ups, coalescing, closing
 * from callbacks, reference counting and loop shutdown.
 *
 * The file under test is included so that its static helpers and the loop's
 * private fields are reachable (h2o t/00unit style).
 */
#include "../../../reactor/async.c"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#define NTHREADS 8

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void loop_init_ok(sl_loop_t *loop)
{
    ck_assert_int_eq(sl_loop_init(loop), 0);
}

/* A handle with a call counter; `data` of the handle points at it. */
struct counted {
    sl_async_t a;
    int calls;
    int closed;
};

static void counted_cb(sl_async_t *a)
{
    struct counted *c = a->data;
    c->calls++;
}

static void counted_close_cb(void *handle)
{
    struct counted *c = ((sl_async_t *)handle)->data;
    c->closed++;
}

static void counted_init(sl_loop_t *loop, struct counted *c, sl_async_cb cb)
{
    c->calls = 0;
    c->closed = 0;
    ck_assert_int_eq(sl_async_init(loop, &c->a, cb), 0);
    c->a.data = c;
}

/* ---- many threads, coalesced sends ------------------------------------------- */

#define SENDS_PER_THREAD 20000

static struct {
    sl_async_t a;
    uint64_t sent;      /* atomic: sends started */
    int finished;       /* atomic: threads done sending */
    uint64_t calls;     /* loop thread */
    uint64_t last_seen; /* loop thread: `sent` at the latest callback */
} many;

static void many_cb(sl_async_t *a)
{
    (void)a;
    many.calls++;
    many.last_seen = __atomic_load_n(&many.sent, __ATOMIC_SEQ_CST);
}

static void *many_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < SENDS_PER_THREAD; i++) {
        __atomic_fetch_add(&many.sent, 1, __ATOMIC_SEQ_CST);
        sl_async_send(&many.a);
    }
    __atomic_fetch_add(&many.finished, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

START_TEST(async_coalesced_sends_from_threads)
{
    /* arrange: 8 threads each bump a counter then send, 20k times;
     * act: run the loop while they do, join them, run once more;
     * assert: at least one callback, never more than sends, and the last
     * callback saw every increment (the last send was not lost). */
    sl_loop_t loop;
    pthread_t th[NTHREADS];
    uint64_t deadline;

    memset(&many, 0, sizeof(many));
    loop_init_ok(&loop);
    ck_assert_int_eq(sl_async_init(&loop, &many.a, many_cb), 0);
    for (int i = 0; i < NTHREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, many_thread, NULL), 0);

    deadline = now_ms() + 30000;
    while (__atomic_load_n(&many.finished, __ATOMIC_SEQ_CST) < NTHREADS && now_ms() < deadline)
        ck_assert_int_ge(sl_loop_run_once(&loop, 100), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    /* Every send has returned, so a pending one has written its wake-up. */
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);

    ck_assert_uint_ge(many.calls, 1);
    ck_assert_uint_le(many.calls, (uint64_t)NTHREADS * SENDS_PER_THREAD);
    ck_assert_uint_eq(many.last_seen, (uint64_t)NTHREADS * SENDS_PER_THREAD);
    ck_assert_int_eq(many.a.pending, 0);

    /* Quiet now: no spurious delivery. */
    uint64_t calls = many.calls;
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_uint_eq(many.calls, calls);

    sl_async_close(&many.a, NULL);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- per-thread flags: the last send is never lost ------------------------------ */

static struct {
    sl_async_t a;
    int flag[NTHREADS]; /* atomic: set by thread i before its last send */
    bool all_seen;      /* loop thread */
    int calls;
} flags;

static void flags_cb(sl_async_t *a)
{
    (void)a;
    flags.calls++;
    for (int i = 0; i < NTHREADS; i++)
        if (!__atomic_load_n(&flags.flag[i], __ATOMIC_ACQUIRE))
            return;
    flags.all_seen = true;
}

static void *flags_thread(void *arg)
{
    int id = (int)(intptr_t)arg;

    /* Some noise first, so that sends from other threads coalesce with
     * ours and the callback runs while we are still busy. */
    for (int i = 0; i < 1000 * (id + 1); i++)
        sl_async_send(&flags.a);
    __atomic_store_n(&flags.flag[id], 1, __ATOMIC_RELEASE);
    sl_async_send(&flags.a);
    return NULL;
}

START_TEST(async_last_send_never_lost)
{
    /* arrange: 8 threads send, then set their flag and send once more;
     * act: run the loop until the callback has seen every flag (10 s max);
     * assert: it does, each flag being covered by a callback that ran after
     * it was set. */
    sl_loop_t loop;
    pthread_t th[NTHREADS];
    uint64_t deadline;

    memset(&flags, 0, sizeof(flags));
    loop_init_ok(&loop);
    ck_assert_int_eq(sl_async_init(&loop, &flags.a, flags_cb), 0);
    for (int i = 0; i < NTHREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, flags_thread, (void *)(intptr_t)i), 0);

    deadline = now_ms() + 10000;
    while (!flags.all_seen && now_ms() < deadline)
        ck_assert_int_ge(sl_loop_run_once(&loop, 100), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);

    ck_assert(flags.all_seen);
    ck_assert_int_ge(flags.calls, 1);

    sl_async_close(&flags.a, NULL);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- sends from the loop thread --------------------------------------------------- */

static void resend_cb(sl_async_t *a)
{
    struct counted *c = a->data;

    /* Re-arming from the callback: PENDING was cleared before we ran. */
    if (++c->calls < 3)
        sl_async_send(a);
}

START_TEST(async_send_from_loop_thread)
{
    /* arrange: one handle; act: send twice from the loop thread before
     * running, then from inside the callback; assert: two sends before a run
     * coalesce into one call, and each send from the callback gets a call in
     * a later iteration. */
    sl_loop_t loop;
    struct counted c;

    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    ck_assert_int_eq(sl_async_send(&c.a), 0);
    ck_assert_int_eq(sl_async_send(&c.a), 0);
    ck_assert_int_eq(c.calls, 0); /* never inside the send */
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.calls, 1);
    /* The descriptor was drained: with nothing sent the loop blocks. */
    uint64_t t0 = now_ms();
    ck_assert_int_ge(sl_loop_run_once(&loop, 100), 0);
    ck_assert_uint_ge(now_ms() - t0, 80);
    ck_assert_int_eq(c.calls, 1);

    c.a.cb = resend_cb;
    c.calls = 0;
    sl_async_send(&c.a);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.calls, 1);
    for (int i = 0; i < 10 && c.calls < 3; i++)
        ck_assert_int_ge(sl_loop_run_once(&loop, 1000), 0);
    ck_assert_int_eq(c.calls, 3);

    sl_async_close(&c.a, NULL);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- signal handlers ------------------------------------------------------------ */

static sl_async_t *signal_async;
static volatile sig_atomic_t signal_errno;

static void on_sigusr1(int sig)
{
    (void)sig;
    errno = 1234;
    sl_async_send(signal_async);
    signal_errno = errno; /* must be preserved */
}

START_TEST(async_send_from_signal_handler)
{
    /* arrange: a SIGUSR1 handler that sends; act: raise it, run once;
     * assert: the callback ran. */
    sl_loop_t loop;
    struct counted c;
    struct sigaction sa = {.sa_handler = on_sigusr1};

    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    signal_async = &c.a;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    signal_errno = 0;
    raise(SIGUSR1);
    ck_assert_int_eq(signal_errno, 1234);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_ge(sl_loop_run_once(&loop, 1000), 0);
    ck_assert_int_eq(c.calls, 1);
    signal(SIGUSR1, SIG_DFL);

    sl_async_close(&c.a, NULL);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- closing ----------------------------------------------------------------- */

static bool in_close_call;
static int close_cb_inside_call;

static void close_tracking_cb(void *handle)
{
    struct counted *c = ((sl_async_t *)handle)->data;

    if (in_close_call)
        close_cb_inside_call++;
    c->closed++;
}

static void close_tracked(sl_async_t *a)
{
    in_close_call = true;
    sl_async_close(a, close_tracking_cb);
    in_close_call = false;
}

static struct counted *victim; /* closed by closer_cb along with itself */

static void closer_cb(sl_async_t *a)
{
    struct counted *c = a->data;

    c->calls++;
    if (victim != NULL)
        close_tracked(&victim->a);
    close_tracked(a);
}

START_TEST(async_close_in_own_callback)
{
    /* arrange: three pending handles, the first closes the second and itself
     * from its callback; assert: the second never runs, the third does, and
     * the close callbacks run later, once each, not inside sl_async_close. */
    sl_loop_t loop;
    struct counted c1, c2, c3;

    in_close_call = false;
    close_cb_inside_call = 0;
    loop_init_ok(&loop);
    counted_init(&loop, &c1, closer_cb);
    counted_init(&loop, &c2, counted_cb);
    counted_init(&loop, &c3, counted_cb);
    victim = &c2;
    sl_async_send(&c1.a);
    sl_async_send(&c2.a);
    sl_async_send(&c3.a);

    ck_assert_int_ge(sl_loop_run_once(&loop, 1000), 0);
    ck_assert_int_eq(c1.calls, 1);
    ck_assert_int_eq(c2.calls, 0);
    ck_assert_int_eq(c3.calls, 1);
    /* Close callbacks run in the closing phase of the same iteration. */
    ck_assert_int_eq(c1.closed, 1);
    ck_assert_int_eq(c2.closed, 1);
    ck_assert_int_eq(close_cb_inside_call, 0);
    ck_assert(sl__queue_data(loop.async_handles.next, sl_async_t, node) == &c3.a);
    ck_assert(loop.async_handles.next->next == &loop.async_handles);

    /* The closed ones stay silent. */
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c1.calls, 1);
    ck_assert_int_eq(c1.closed, 1);

    close_tracked(&c3.a);
    ck_assert_int_eq(c3.closed, 0);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c3.closed, 1);
    ck_assert_int_eq(close_cb_inside_call, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(async_close_cb_runs_later)
{
    /* arrange: an idle handle with a pending send; act: close it outside any
     * callback; assert: the close callback has not run on return, runs once
     * in the next iteration, and the pending send is never delivered. */
    sl_loop_t loop;
    struct counted c;

    in_close_call = false;
    close_cb_inside_call = 0;
    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    sl_async_send(&c.a);
    close_tracked(&c.a);
    ck_assert_int_eq(c.closed, 0);
    ck_assert_uint_eq(loop.active, 1); /* only the pending close callback */
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_eq(close_cb_inside_call, 0);
    /* Closing twice does nothing. */
    sl_async_close(&c.a, counted_close_cb);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- references ---------------------------------------------------------------- */

START_TEST(async_unref_does_not_keep_loop_alive)
{
    /* arrange: an open async handle; assert: it keeps the loop alive until
     * unref'd, after which sl_loop_run returns at once; an unref'd handle
     * still gets its callbacks. */
    sl_loop_t loop;
    struct counted c;
    uint64_t t0;

    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    ck_assert(sl_loop_alive(&loop));
    sl_async_unref(&c.a);
    sl_async_unref(&c.a); /* idempotent */
    ck_assert(!sl_loop_alive(&loop));
    sl_async_ref(&c.a);
    ck_assert(sl_loop_alive(&loop));
    sl_async_ref(&c.a);
    ck_assert_uint_eq(loop.active, 1);
    sl_async_unref(&c.a);

    t0 = now_ms();
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_uint_lt(now_ms() - t0, 1000);

    sl_async_send(&c.a);
    ck_assert_int_eq(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.calls, 1);

    /* Closing an unref'd handle must not decrement the count again. */
    sl_async_close(&c.a, counted_close_cb);
    ck_assert_uint_eq(loop.active, 1); /* the pending close callback */
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(async_loop_close_busy_while_open)
{
    /* arrange: an open handle (referenced, then unreferenced); assert:
     * sl_loop_close returns SL_EBUSY until the handle is closed and its
     * close callback ran, then 0. */
    sl_loop_t loop;
    struct counted c;

    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY);
    sl_async_unref(&c.a);
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY);
    sl_async_close(&c.a, counted_close_cb);
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY); /* close callback pending */
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    ck_assert_int_eq(loop.async_fd, -1);
    ck_assert_ptr_null(loop.async_io);
}
END_TEST

/* ---- waking a blocked loop ------------------------------------------------------- */

static void *send_after_50ms(void *arg)
{
    sleep_ms(50);
    sl_async_send(arg);
    return NULL;
}

START_TEST(async_send_wakes_blocked_loop)
{
    /* arrange: a thread sends at +50 ms; act: run once with a 10 s timeout;
     * assert: it returns after the send, long before the timeout, with the
     * callback run. */
    sl_loop_t loop;
    struct counted c;
    pthread_t th;
    uint64_t t0, elapsed;

    loop_init_ok(&loop);
    counted_init(&loop, &c, counted_cb);
    t0 = now_ms(); /* before the thread starts its 50 ms */
    ck_assert_int_eq(pthread_create(&th, NULL, send_after_50ms, &c.a), 0);
    ck_assert_int_ge(sl_loop_run_once(&loop, 10000), 0);
    elapsed = now_ms() - t0;
    pthread_join(th, NULL);

    ck_assert_int_eq(c.calls, 1);
    ck_assert_uint_ge(elapsed, 45);
    ck_assert_uint_lt(elapsed, 2000);

    sl_async_close(&c.a, NULL);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- plumbing ------------------------------------------------------------------- */

START_TEST(async_setup_shared_and_internal)
{
    /* assert: the wake-up descriptor is created once per loop, its watcher
     * is internal (it neither counts as active nor blocks sl_loop_close),
     * and a NULL callback is allowed. */
    sl_loop_t loop;
    sl_async_t a, b;
    int fd;

    loop_init_ok(&loop);
    ck_assert_int_eq(loop.async_fd, -1);
    ck_assert_int_eq(sl__async_setup(&loop), 0);
    fd = loop.async_fd;
    ck_assert_int_ge(fd, 0);
    ck_assert_ptr_nonnull(loop.async_io);
    ck_assert(loop.async_io->flags & SL__F_INTERNAL);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl__async_setup(&loop), 0);
    ck_assert_int_eq(loop.async_fd, fd);
    if (SL_HAVE_EVENTFD)
        ck_assert_int_eq(loop.async_wfd, fd);
    else
        ck_assert_int_ne(loop.async_wfd, fd);

    ck_assert_int_eq(sl_async_init(&loop, &a, NULL), 0);
    ck_assert_int_eq(sl_async_init(&loop, &b, NULL), 0);
    ck_assert_int_eq(loop.async_fd, fd);
    ck_assert_uint_eq(loop.active, 2);
    ck_assert(sl__async_handles_active(&loop));
    sl_async_send(&a);
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(a.pending, 0);
    sl_async_close(&a, NULL);
    sl_async_close(&b, NULL);
    ck_assert(!sl__async_handles_active(&loop));
    ck_assert_int_ge(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(async_loop_close_without_async)
{
    /* A loop that never used async handles closes without a descriptor. */
    sl_loop_t loop;

    loop_init_ok(&loop);
    ck_assert_ptr_null(loop.async_io);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static Suite *async_suite(void)
{
    Suite *s = suite_create("async");
    TCase *tc = tcase_create("async");

    tcase_add_test(tc, async_coalesced_sends_from_threads);
    tcase_add_test(tc, async_last_send_never_lost);
    tcase_add_test(tc, async_send_from_loop_thread);
    tcase_add_test(tc, async_send_from_signal_handler);
    tcase_add_test(tc, async_close_in_own_callback);
    tcase_add_test(tc, async_close_cb_runs_later);
    tcase_add_test(tc, async_unref_does_not_keep_loop_alive);
    tcase_add_test(tc, async_loop_close_busy_while_open);
    tcase_add_test(tc, async_send_wakes_blocked_loop);
    tcase_add_test(tc, async_setup_shared_and_internal);
    tcase_add_test(tc, async_loop_close_without_async);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(async_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
