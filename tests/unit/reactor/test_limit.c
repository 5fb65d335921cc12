/*
 * test_limit.c -- the counting limiter: never more than `max` holders, FIFO
 * grants, callbacks never inside the calls, cancel in every state.
 */
#include "../../../reactor/limit.c"

#include <check.h>

#define N 20

struct job {
    sl_limit_waiter_t w;
    int id;
    int granted;
    uint64_t granted_iter;
};

static sl_loop_t *g_loop;
static int g_order[N * 4];
static int g_norder;
static unsigned g_peak;
static bool g_in_api;

static void on_grant(sl_limit_waiter_t *w)
{
    struct job *j = sl__container_of(w, struct job, w);
    ck_assert_msg(!g_in_api, "a grant was delivered inside a limiter call");
    j->granted++;
    j->granted_iter = g_loop->iterations;
    g_order[g_norder++] = j->id;
    if (sl_limit_in_use(w->limit) > g_peak)
        g_peak = sl_limit_in_use(w->limit);
}

static void loop_setup(sl_loop_t *loop)
{
    ck_assert_int_eq(sl_loop_init(loop), 0);
    g_loop = loop;
    g_norder = 0;
    g_peak = 0;
}

START_TEST(limit_never_exceeded_fifo)
{
    sl_loop_t loop;
    sl_limit_t l;
    struct job jobs[N];

    loop_setup(&loop);
    sl_limit_init(&loop, &l, 3);
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].id = i;
        g_in_api = true;
        ck_assert_int_eq(sl_limit_acquire(&l, &jobs[i].w, on_grant), 0);
        g_in_api = false;
    }
    ck_assert_int_eq(g_norder, 0); /* nothing inside the calls */
    ck_assert_uint_eq(sl_limit_in_use(&l), 3);
    ck_assert_uint_eq(sl_limit_waiting(&l), N - 3);
    int released = 0;
    while (released < N) {
        sl_loop_run_once(&loop, 0);
        /* Release what was granted so far, one loop turn later. */
        while (released < g_norder) {
            g_in_api = true;
            sl_limit_release(&l);
            g_in_api = false;
            released++;
        }
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(g_order[i], i); /* FIFO */
        ck_assert_int_eq(jobs[i].granted, 1);
    }
    ck_assert_uint_eq(g_peak, 3);
    ck_assert_uint_eq(sl_limit_in_use(&l), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(limit_cancel_waiting_and_granted)
{
    sl_loop_t loop;
    sl_limit_t l;
    struct job a = {.id = 0}, b = {.id = 1}, c = {.id = 2}, d = {.id = 3};

    loop_setup(&loop);
    sl_limit_init(&loop, &l, 1);
    ck_assert_int_eq(sl_limit_acquire(&l, &a.w, on_grant), 0); /* granted, not delivered */
    ck_assert_int_eq(sl_limit_acquire(&l, &b.w, on_grant), 0); /* waiting */
    ck_assert_int_eq(sl_limit_acquire(&l, &c.w, on_grant), 0); /* waiting */
    ck_assert_int_eq(sl_limit_acquire(&l, &a.w, on_grant), SL_EINVAL); /* twice */
    sl_limit_cancel(&b.w); /* leaves the line */
    sl_limit_cancel(&a.w); /* gives its undelivered slot to c */
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(a.granted, 0);
    ck_assert_int_eq(b.granted, 0);
    ck_assert_int_eq(c.granted, 1);
    ck_assert_uint_eq(sl_limit_in_use(&l), 1);
    sl_limit_cancel(&c.w); /* delivered already: a no-op, it must release */
    ck_assert_uint_eq(sl_limit_in_use(&l), 1);
    sl_limit_release(&l);
    ck_assert_uint_eq(sl_limit_in_use(&l), 0);
    /* A cancelled waiter can acquire again. */
    ck_assert_int_eq(sl_limit_acquire(&l, &b.w, on_grant), 0);
    ck_assert_int_eq(sl_limit_acquire(&l, &d.w, on_grant), 0);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(b.granted, 1);
    ck_assert_int_eq(d.granted, 0);
    sl_limit_release(&l);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(d.granted, 1);
    sl_limit_release(&l);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(limit_raise_and_lower_max)
{
    sl_loop_t loop;
    sl_limit_t l;
    struct job jobs[6];

    loop_setup(&loop);
    sl_limit_init(&loop, &l, 0); /* closed gate */
    for (int i = 0; i < 6; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].id = i;
        sl_limit_acquire(&l, &jobs[i].w, on_grant);
    }
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(g_norder, 0);
    sl_limit_set_max(&l, 4);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(g_norder, 4);
    /* Lowering does not take slots back; releases below the new max grant
     * nothing until usage is under it. */
    sl_limit_set_max(&l, 1);
    sl_limit_release(&l);
    sl_limit_release(&l);
    sl_limit_release(&l);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(g_norder, 4);
    sl_limit_release(&l);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(g_norder, 5);
    sl_limit_release(&l);
    sl_loop_run_once(&loop, 0);
    ck_assert_int_eq(g_norder, 6);
    sl_limit_release(&l);
    ck_assert_uint_eq(sl_limit_in_use(&l), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static Suite *limit_suite(void)
{
    Suite *s = suite_create("limit");
    TCase *tc = tcase_create("limit");
    tcase_add_test(tc, limit_never_exceeded_fifo);
    tcase_add_test(tc, limit_cancel_waiting_and_granted);
    tcase_add_test(tc, limit_raise_and_lower_max);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(limit_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
