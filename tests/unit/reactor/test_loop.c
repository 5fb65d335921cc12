/*
 * test_loop.c -- the loop itself: init/close, run/stop, the cached and the
 * injected clock, deferred callbacks and the closing phase.
 */
#include "../../../reactor/loop.c"

#include <check.h>
#include <sys/socket.h>
#include <unistd.h>

static void loop_setup(sl_loop_t *loop)
{
    int rc = sl_loop_init(loop);
    ck_assert_msg(rc == 0, "sl_loop_init: %s", sl_strerror(rc));
}

START_TEST(loop_init_close_empty)
{
    sl_loop_t loop;

    loop_setup(&loop);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_run(&loop), 0);          /* returns at once */
    ck_assert_int_eq(sl_loop_run_once(&loop, -1), 0); /* never blocks when idle */
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(loop_unknown_backend)
{
    sl_loop_t loop;

    setenv("SLUICE_BACKEND", "no-such-backend", 1);
    ck_assert_int_eq(sl_loop_init(&loop), SL_EBACKEND);
    setenv("SLUICE_BACKEND", "poll", 1);
    loop_setup(&loop);
    ck_assert_str_eq(sl_loop_backend(&loop), "poll");
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static uint64_t fake_clock(void *arg)
{
    return *(uint64_t *)arg;
}

START_TEST(loop_clock_cached_and_injected)
{
    sl_loop_t loop;
    uint64_t ns = 5000000000u; /* 5 s */

    loop_setup(&loop);
    uint64_t a = sl_loop_now_ns(&loop);
    ck_assert_uint_gt(a, 0);
    sl_loop_set_clock(&loop, fake_clock, &ns);
    ck_assert_uint_eq(sl_loop_now(&loop), 5000);
    ck_assert_uint_eq(sl_loop_now_ns(&loop), 5000000000u);
    ns += 1500000; /* +1.5 ms: cached value does not move until an update */
    ck_assert_uint_eq(sl_loop_now(&loop), 5000);
    sl_loop_run_once(&loop, 0);
    ck_assert_uint_eq(sl_loop_now(&loop), 5001);
    ck_assert_uint_eq(sl_loop_now_ns(&loop), 5001500000u);
    ns += 2000000;
    sl_loop_update_time(&loop);
    ck_assert_uint_eq(sl_loop_now(&loop), 5003);
    sl_loop_set_clock(&loop, NULL, NULL);
    ck_assert_uint_ge(sl_loop_now_ns(&loop), a);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- deferred callbacks ------------------------------------------------- */

struct dtest {
    sl_defer_t d[4];
    int order[16];
    int n;
    uint64_t iter_seen[4];
    sl_loop_t *loop;
};

static void defer_record(sl_defer_t *d)
{
    struct dtest *t = d->data;
    int idx = (int)(d - t->d);
    t->order[t->n++] = idx;
    t->iter_seen[idx] = t->loop->iterations;
}

static void defer_requeue_self(sl_defer_t *d)
{
    struct dtest *t = d->data;
    defer_record(d);
    if (t->n < 3)
        sl_defer_start(d); /* must run in the next iteration, not now */
}

static void defer_cancel_next(sl_defer_t *d)
{
    struct dtest *t = d->data;
    defer_record(d);
    sl_defer_stop(&t->d[1]); /* queued behind us in the same batch */
}

START_TEST(defer_runs_next_iteration_in_order)
{
    sl_loop_t loop;
    struct dtest t = {.loop = &loop};

    loop_setup(&loop);
    for (int i = 0; i < 3; i++) {
        sl_defer_init(&loop, &t.d[i], defer_record);
        t.d[i].data = &t;
    }
    sl_defer_start(&t.d[2]);
    sl_defer_start(&t.d[0]);
    sl_defer_start(&t.d[0]); /* idempotent */
    sl_defer_start(&t.d[1]);
    ck_assert_int_eq(t.n, 0); /* never inside the queuing call */
    ck_assert(sl_defer_pending(&t.d[0]));
    ck_assert(sl_loop_alive(&loop));
    sl_loop_run_once(&loop, -1); /* must not block: deferred work pending */
    ck_assert_int_eq(t.n, 3);
    ck_assert_int_eq(t.order[0], 2);
    ck_assert_int_eq(t.order[1], 0);
    ck_assert_int_eq(t.order[2], 1);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(defer_requeue_from_callback_runs_later)
{
    sl_loop_t loop;
    struct dtest t = {.loop = &loop};

    loop_setup(&loop);
    sl_defer_init(&loop, &t.d[0], defer_requeue_self);
    t.d[0].data = &t;
    sl_defer_start(&t.d[0]);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(t.n, 1);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(t.n, 2);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(t.n, 3);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(defer_stop_inside_batch)
{
    sl_loop_t loop;
    struct dtest t = {.loop = &loop};

    loop_setup(&loop);
    sl_defer_init(&loop, &t.d[0], defer_cancel_next);
    sl_defer_init(&loop, &t.d[1], defer_record);
    t.d[0].data = t.d[1].data = &t;
    sl_defer_start(&t.d[0]);
    sl_defer_start(&t.d[1]);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(t.n, 1);
    ck_assert(!sl_defer_pending(&t.d[1]));
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(close_busy_while_deferred)
{
    sl_loop_t loop;
    sl_defer_t d;

    loop_setup(&loop);
    sl_defer_init(&loop, &d, defer_record);
    sl_defer_start(&d);
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY);
    sl_defer_stop(&d);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- stop ----------------------------------------------------------------- */

struct stopper {
    sl_defer_t d;
    int runs;
};

static void stop_after_two(sl_defer_t *d)
{
    struct stopper *s = sl__container_of(d, struct stopper, d);
    s->runs++;
    if (s->runs == 2)
        sl_loop_stop(d->loop);
    if (s->runs < 5)
        sl_defer_start(d);
}

START_TEST(loop_stop_returns_after_iteration)
{
    sl_loop_t loop;
    struct stopper s = {0};

    loop_setup(&loop);
    sl_defer_init(&loop, &s.d, stop_after_two);
    sl_defer_start(&s.d);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(s.runs, 2);
    ck_assert(sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_run(&loop), 0); /* the stop flag was reset */
    ck_assert_int_eq(s.runs, 5);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- closing phase ------------------------------------------------------------ */

struct closer {
    sl_io_t io;
    int closed;
    uint64_t closed_iter;
    sl_loop_t *loop;
};

static void closer_io_cb(sl_io_t *io, unsigned ev)
{
    (void)io;
    (void)ev;
}

static void closer_close_cb(void *h)
{
    struct closer *c = sl__container_of((sl_io_t *)h, struct closer, io);
    c->closed++;
    c->closed_iter = c->loop->iterations;
}

START_TEST(close_cb_runs_in_closing_phase)
{
    sl_loop_t loop;
    struct closer c = {.loop = &loop};
    int sv[2];

    loop_setup(&loop);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    sl_io_init(&loop, &c.io, sv[0], closer_io_cb);
    sl_io_start(&c.io, SL_EV_READ);
    sl_io_close(&c.io, closer_close_cb);
    sl_io_close(&c.io, closer_close_cb); /* twice is harmless */
    ck_assert_int_eq(c.closed, 0);
    ck_assert(sl_loop_alive(&loop)); /* the pending close keeps it alive */
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(c.closed, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

static Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    tcase_add_test(tc, loop_init_close_empty);
    tcase_add_test(tc, loop_unknown_backend);
    tcase_add_test(tc, loop_clock_cached_and_injected);
    tcase_add_test(tc, defer_runs_next_iteration_in_order);
    tcase_add_test(tc, defer_requeue_from_callback_runs_later);
    tcase_add_test(tc, defer_stop_inside_batch);
    tcase_add_test(tc, close_busy_while_deferred);
    tcase_add_test(tc, loop_stop_returns_after_iteration);
    tcase_add_test(tc, close_cb_runs_in_closing_phase);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loop_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
