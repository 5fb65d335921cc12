/*
 * test_timer.c -- the timing wheel and the timer API: order of firing, never early and never
 * late, cancel and re-arm from callbacks, repeats, a million timers, level boundaries up to the
 * end of 64-bit time, far-future cascades, in-place re-arms and a clock that goes backwards.
 *
 * Wheel-level tests drive a bare struct sl__wheel; loop-level tests use a loop with a fake clock.
 * All randomness comes from a seeded xorshift generator, so every run is the same.
 */
#include <stdbool.h>
#include <stddef.h>

/* Slot arrays grow through this, so that tests can make the wheel run out of memory. */
static bool realloc_fails;
static void *test_realloc(void *p, size_t n);
#define SL__TIMER_REALLOC test_realloc

#include "../../../reactor/timer.c"

#include <check.h>
#include <stdlib.h>

/* ---- helpers ------------------------------------------------------------------------- */

/* Check's ck_assert*() records every passing assertion (a write to its log in fork mode), which
 * would dominate loops over millions of timers: hot paths use these, which call into Check only
 * when they fail. */
#define must(expr)                                                                                 \
    do {                                                                                           \
        if (!(expr))                                                                               \
            ck_abort_msg("assertion failed: %s", #expr);                                           \
    } while (0)
#define must_msg(expr, ...)                                                                        \
    do {                                                                                           \
        if (!(expr))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed != 0 ? seed : 0x9e3779b97f4a7c15u;
}

/* xorshift64* */
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

static uint64_t rng_below(uint64_t n)
{
    return rng_next() % n;
}

/* Log-uniform in [1, 2^bits]: as many tiny values as huge ones. */
static uint64_t rng_log(unsigned bits)
{
    unsigned b = (unsigned)rng_below(bits + 1);
    return 1 + (b == 0 ? 0 : rng_next() >> (64 - b));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A wheel-level timer and what happened to it. */
struct wt {
    sl_timer_t t;
    uint64_t fired_at;
    unsigned fired;
};

static void wt_init(struct wt *x)
{
    sl_timer_init(NULL, &x->t, NULL);
    x->fired = 0;
    x->fired_at = 0;
}

static struct wt *wt_of(sl_timer_t *t)
{
    return sl__container_of(t, struct wt, t);
}

/* Collect at `now` and check the batch: every entry expired, due (deadline <= now), in order
 * of (deadline, seq) and fired for the first time. Unlinks each one. Returns the count. */
static size_t wheel_fire(struct sl__wheel *w, uint64_t now, struct wt **out, size_t max_out)
{
    struct sl__queue batch;
    uint64_t last_deadline = 0, last_seq = 0;
    size_t n = 0;

    sl__queue_init(&batch);
    sl__wheel_collect(w, now, &batch);
    while (!sl__queue_empty(&batch)) {
        sl_timer_t *t = node_timer(batch.next);
        struct wt *x = wt_of(t);

        must(t->where == SL__TIMER_EXPIRED);
        sl__wheel_unlink(w, t);
        must(t->where == SL__TIMER_IDLE);
        must_msg(t->deadline <= now, "fired early: deadline %llu now %llu",
                 (unsigned long long)t->deadline, (unsigned long long)now);
        if (n > 0)
            must_msg(t->deadline > last_deadline ||
                         (t->deadline == last_deadline && t->seq > last_seq),
                     "batch out of order at %zu", n);
        must(x->fired == 0);
        last_deadline = t->deadline;
        last_seq = t->seq;
        x->fired++;
        x->fired_at = now;
        if (out != NULL && n < max_out)
            out[n] = x;
        n++;
    }
    return n;
}

/*
 * Arm n timers on a bare wheel at base + (log-uniform up to 2^span_bits, capped at the end of
 * time), then collect at times advancing by log-uniform steps of 1 .. 2^step_bits ms (every
 * eighth step lands exactly on the next deadline). After each collect, exactly the timers with
 * deadline <= now must have fired, each once, and those of this collect must have a deadline
 * after the previous collect's now: never early, never late.
 */
static void wheel_random_run(uint64_t base, size_t n, unsigned span_bits, unsigned step_bits,
                             uint64_t seed)
{
    struct sl__wheel *w = malloc(sizeof(*w));
    struct wt *ts = malloc(n * sizeof(*ts));
    uint64_t *sorted = malloc(n * sizeof(*sorted));
    uint64_t now = base, room = UINT64_MAX - base;
    size_t done = 0, fired = 0;

    ck_assert(w != NULL && ts != NULL && sorted != NULL);
    rng_seed(seed);
    sl__wheel_init(w, base);
    for (size_t i = 0; i < n; i++) {
        uint64_t span = i % 16 == 0 ? 0 : rng_log(span_bits);
        wt_init(&ts[i]);
        timer_arm(w, &ts[i].t, base + SL__MIN(span, room));
        sorted[i] = ts[i].t.deadline;
    }
    qsort(sorted, n, sizeof(*sorted), cmp_u64);

    while (done < n) {
        uint64_t step = rng_log(step_bits);
        if (rng_below(8) == 0 && sorted[done] > now)
            step = sorted[done] - now;
        now = sat_add(now, step);
        fired += wheel_fire(w, now, NULL, 0);
        /* not late: everything due by now has fired (and wheel_fire saw nothing early) */
        while (done < n && sorted[done] <= now)
            done++;
        must_msg(fired == done, "fired %zu, due %zu at %llu", fired, done, (unsigned long long)now);
    }
    for (size_t i = 0; i < n; i++)
        must(ts[i].fired == 1 && ts[i].fired_at >= ts[i].t.deadline);
    ck_assert(sl__wheel_empty(w));
    ck_assert_uint_eq(sl__wheel_next(w), UINT64_MAX);
    sl__wheel_free(w);
    free(sorted);
    free(ts);
    free(w);
}

static void *test_realloc(void *p, size_t n)
{
    return realloc_fails ? NULL : realloc(p, n);
}

/* ---- loop-level helpers ------------------------------------------------------------------ */

static uint64_t fake_clock(void *arg)
{
    return *(uint64_t *)arg;
}

static void loop_setup(sl_loop_t *loop, uint64_t *ns, uint64_t start_ms)
{
    int rc = sl_loop_init(loop);
    ck_assert_msg(rc == 0, "sl_loop_init: %s", sl_strerror(rc));
    *ns = start_ms * 1000000u;
    sl_loop_set_clock(loop, fake_clock, ns);
    ck_assert_uint_eq(sl_loop_now(loop), start_ms);
}

/* Move the fake clock to `ms` and run one non-blocking iteration. */
static void run_at(sl_loop_t *loop, uint64_t *ns, uint64_t ms)
{
    *ns = ms * 1000000u;
    must(sl_loop_run_once(loop, 0) >= 0);
    must(sl_loop_now(loop) == ms);
}

/* Loop-level timer with bookkeeping. */
struct lt {
    sl_timer_t t;
    struct lctx *ctx;
    int id;
    unsigned fired;
    uint64_t fired_at;
    uint64_t expect; /* the deadline it was armed with */
};

struct lctx {
    sl_loop_t *loop;
    struct lt *timers;
    uint64_t prev_now; /* now of the previous run: nothing due then may fire now */
    uint64_t last_deadline, last_seq;
    size_t in_batch;
    size_t nfired;
    int order[64];
    int norder;
    unsigned stop_after;
};

static void lt_init(struct lctx *c, struct lt *x, int id, sl_timer_cb cb)
{
    sl_timer_init(c->loop, &x->t, cb);
    x->ctx = c;
    x->id = id;
    x->fired = 0;
    x->fired_at = 0;
    x->t.data = x;
}

static void lt_start(struct lt *x, uint64_t timeout)
{
    must(sl_timer_start(&x->t, timeout, 0) == 0);
    x->expect = sl_timer_deadline(&x->t);
}

/* Record a firing; check it is not early, not late (the previous run did not see it due) and
 * in order within its batch. */
static void lt_record(sl_timer_t *t)
{
    struct lt *x = t->data;
    struct lctx *c = x->ctx;
    uint64_t now = sl_loop_now(c->loop);

    must_msg(t->deadline <= now, "early: deadline %llu now %llu", (unsigned long long)t->deadline,
             (unsigned long long)now);
    must_msg(t->deadline > c->prev_now, "late: deadline %llu, previous run at %llu",
             (unsigned long long)t->deadline, (unsigned long long)c->prev_now);
    if (c->in_batch > 0)
        must(t->deadline > c->last_deadline ||
             (t->deadline == c->last_deadline && t->seq > c->last_seq));
    c->last_deadline = t->deadline;
    c->last_seq = t->seq;
    c->in_batch++;
    x->fired++;
    x->fired_at = now;
    c->nfired++;
    if (c->norder < (int)SL__ARRAY_SIZE(c->order))
        c->order[c->norder++] = x->id;
}

/* One iteration at `ms`, with the bookkeeping lt_record() relies on. */
static void lrun_at(struct lctx *c, uint64_t *ns, uint64_t ms)
{
    c->in_batch = 0;
    run_at(c->loop, ns, ms);
    c->prev_now = ms;
}

/* ---- ordering -------------------------------------------------------------------------- */

/*
 * Timers for the same millisecond reach its level-0 slot by different routes: armed far ahead
 * (level 3, 2 or 1, then cascaded), armed close (level 0 directly), re-armed in place (a slot
 * position older than their sequence) or armed behind the wheel (the due list, in arming order,
 * not deadline order). The batch must still come out by deadline, then by arming order.
 */
START_TEST(wheel_order_deadline_then_seq)
{
    struct sl__wheel w;
    const uint64_t base = UINT64_C(1) << 30;
    const uint64_t d = ((base + 300000) & ~UINT64_C(63)) + 40; /* low group 40 */
    const uint64_t arm_at[] = {base, d - 200000, d - 3000, d - 500, d - 30, d - 5, d - 1};
    struct wt x[7], y[7], z[7], r, v1, v2; /* x: d, y: d + 1, z: d - 1 */
    struct wt *out[32], *expect[32];
    uint64_t levels = 0;
    size_t n, k;

    sl__wheel_init(&w, base);
    for (size_t i = 0; i < SL__ARRAY_SIZE(arm_at); i++) {
        if (arm_at[i] > w.last_run)
            ck_assert_uint_eq(wheel_fire(&w, arm_at[i] - 1, NULL, 0), 0);
        if (i == 3) {
            wt_init(&r);
            timer_arm(&w, &r.t, d - 10); /* the level-1 slot of d */
        }
        wt_init(&y[i]);
        wt_init(&x[i]);
        wt_init(&z[i]);
        /* interleave arming order across deadlines */
        timer_arm(&w, &y[i].t, d + 1);
        timer_arm(&w, &x[i].t, d);
        timer_arm(&w, &z[i].t, d - 1);
        ck_assert_int_ge(x[i].t.where, 0);
        levels |= UINT64_C(1) << (x[i].t.where / SL__WHEEL_SLOTS);
        if (i == 3) {
            /* in place: r keeps its place ahead of x[3] but is now armed after it */
            int32_t where = r.t.where;
            timer_arm(&w, &r.t, d);
            ck_assert_int_eq(r.t.where, where);
            ck_assert_int_eq(x[3].t.where, where);
        }
    }
    /* the deadline-d timers were linked at four different levels, level 0 among them */
    ck_assert_int_ge(__builtin_popcountll(levels), 4);
    ck_assert(levels & 1);
    ck_assert_uint_eq(wheel_fire(&w, d - 2, NULL, 0), 0);
    wt_init(&v1);
    wt_init(&v2);
    timer_arm(&w, &v1.t, d - 2); /* behind last_run (d - 1): due, out of deadline order */
    timer_arm(&w, &v2.t, d - 3);
    ck_assert_int_eq(v1.t.where, SL__TIMER_DUE);
    ck_assert_int_eq(v2.t.where, SL__TIMER_DUE);

    n = wheel_fire(&w, d, out, SL__ARRAY_SIZE(out));
    ck_assert_uint_eq(n, 2 + 7 + 8);
    expect[0] = &v2;
    expect[1] = &v1;
    k = 2;
    for (size_t i = 0; i < 7; i++)
        expect[k++] = &z[i];
    for (size_t i = 0; i < 7; i++) {
        expect[k++] = &x[i];
        if (i == 3)
            expect[k++] = &r;
    }
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(out[i] == expect[i], "position %zu", i);
    n = wheel_fire(&w, d + 1, out, SL__ARRAY_SIZE(out));
    ck_assert_uint_eq(n, 7);
    for (size_t i = 0; i < 7; i++)
        ck_assert_ptr_eq(out[i], &y[i]);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* The same through the public API: callbacks run by deadline, then by arming order, also when
 * one collect covers several deadlines and the arming happened across many iterations. */
START_TEST(timer_order_in_callbacks)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 1000000;
    struct lctx c = {.loop = &loop};
    struct lt ts[12];
    /* id: arm time offset, deadline offset */
    const uint64_t plan[12][2] = {
        {0, 5000},    {0, 4999},    {0, 5001},    {100, 5000},  {4000, 4999}, {4000, 5000},
        {4990, 5000}, {4990, 5001}, {4998, 5000}, {4998, 4999}, {4998, 5000}, {4998, 5001},
    };
    const int expect[12] = {1, 4, 9, 0, 3, 5, 6, 8, 10, 2, 7, 11};

    loop_setup(&loop, &ns, s);
    c.prev_now = s - 1;
    for (int i = 0; i < 12; i++) {
        if (s + plan[i][0] > sl_loop_now(&loop))
            lrun_at(&c, &ns, s + plan[i][0]);
        lt_init(&c, &ts[i], i, lt_record);
        lt_start(&ts[i], s + plan[i][1] - sl_loop_now(&loop));
    }
    ck_assert_int_eq(c.norder, 0);
    lrun_at(&c, &ns, s + 5001);
    ck_assert_int_eq(c.norder, 12);
    for (int i = 0; i < 12; i++)
        ck_assert_int_eq(c.order[i], expect[i]);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- never early, never late ------------------------------------------------------------- */

/* 10k timers with random deadlines from 0 ms to ~200 days, a fake clock stepping by 1 ms up to
 * ~4.6 hours: each fires at the first iteration whose now >= deadline. */
START_TEST(timer_never_fires_early_random)
{
    enum { N = 10000 };
    sl_loop_t loop;
    uint64_t ns, now;
    const uint64_t s = 123456789;
    struct lctx c = {.loop = &loop};
    struct lt *ts = malloc(N * sizeof(*ts));
    uint64_t *sorted = malloc(N * sizeof(*sorted));
    size_t done = 0;

    ck_assert(ts != NULL && sorted != NULL);
    rng_seed(42);
    loop_setup(&loop, &ns, s);
    c.prev_now = s - 1;
    for (int i = 0; i < N; i++) {
        uint64_t timeout = i % 2 ? rng_below(100000) : rng_log(34);
        lt_init(&c, &ts[i], i, lt_record);
        lt_start(&ts[i], i % 97 == 0 ? 0 : timeout);
        sorted[i] = ts[i].expect;
    }
    qsort(sorted, N, sizeof(*sorted), cmp_u64);
    ck_assert_uint_eq(loop.active, N);

    now = s;
    while (done < N) {
        int timeout = sl__timers_timeout(&loop);
        must(timeout >= 0);
        /* the poll timeout never overshoots the earliest deadline */
        must(now + (uint64_t)timeout <= (sorted[done] > now ? sorted[done] : now));
        now += rng_log(24);
        lrun_at(&c, &ns, now);
        while (done < N && sorted[done] <= now)
            done++;
        must_msg(c.nfired == done, "fired %zu, due %zu at %llu", c.nfired, done,
                 (unsigned long long)now);
    }
    for (int i = 0; i < N; i++)
        must(ts[i].fired == 1);
    ck_assert_int_eq(sl__timers_timeout(&loop), -1);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    free(sorted);
    free(ts);
}
END_TEST

/* The same property on a bare wheel, with more timers and a wider range (to ~35 years). */
START_TEST(wheel_never_fires_early_random)
{
    wheel_random_run(987654321, 50000, 40, 36, 7);
    wheel_random_run(0, 20000, 20, 12, 8);
}
END_TEST

/* ---- callbacks that stop and re-arm -------------------------------------------------------- */

static void cb_stop_others(sl_timer_t *t)
{
    struct lt *x = t->data;
    struct lctx *c = x->ctx;

    lt_record(t);
    sl_timer_stop(&c->timers[2].t); /* same deadline, later in this batch */
    sl_timer_stop(&c->timers[4].t); /* later deadline, same batch */
    sl_timer_stop(t);               /* itself, already idle: a no-op */
}

START_TEST(timer_cancel_inside_callback)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 5000;
    struct lt ts[6];
    struct lctx c = {.loop = &loop, .timers = ts};

    loop_setup(&loop, &ns, s);
    c.prev_now = s - 1;
    lt_init(&c, &ts[0], 0, lt_record);
    lt_init(&c, &ts[1], 1, cb_stop_others);
    for (int i = 2; i < 6; i++)
        lt_init(&c, &ts[i], i, lt_record);
    lt_start(&ts[0], 10);
    lt_start(&ts[1], 10);
    lt_start(&ts[2], 10);
    lt_start(&ts[3], 10);
    lt_start(&ts[4], 12);
    lt_start(&ts[5], 13);
    ck_assert_uint_eq(loop.active, 6);
    lrun_at(&c, &ns, s + 20);
    ck_assert_int_eq(c.norder, 4);
    ck_assert_int_eq(c.order[0], 0);
    ck_assert_int_eq(c.order[1], 1);
    ck_assert_int_eq(c.order[2], 3);
    ck_assert_int_eq(c.order[3], 5);
    ck_assert_uint_eq(ts[2].fired, 0);
    ck_assert_uint_eq(ts[4].fired, 0);
    ck_assert(!sl_timer_active(&ts[2].t));
    ck_assert(!sl_timer_active(&ts[4].t));
    ck_assert_uint_eq(loop.active, 0);
    lrun_at(&c, &ns, s + 100);
    ck_assert_int_eq(c.norder, 4);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static void cb_rearm(sl_timer_t *t)
{
    struct lt *x = t->data;
    struct lctx *c = x->ctx;

    x->fired++;
    c->order[c->norder++] = x->id;
    if (x->id == 0) {
        if (x->fired <= 2)
            ck_assert_int_eq(sl_timer_start(t, 0, 0), 0); /* itself, timeout 0 */
        if (x->fired == 1) {
            sl_timer_start(&c->timers[1].t, 0, 0); /* an idle one, timeout 0 */
            sl_timer_start(&c->timers[2].t, 5, 0); /* later in this batch: moves out of it */
        }
    }
}

/* A timer armed from a callback, even with timeout 0, fires in the next run, never in the
 * batch being run. Driven through sl__timers_run() directly to see each batch. */
START_TEST(timer_rearm_inside_callback)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 70000;
    struct lt ts[3];
    struct lctx c = {.loop = &loop, .timers = ts};

    loop_setup(&loop, &ns, s);
    for (int i = 0; i < 3; i++)
        lt_init(&c, &ts[i], i, cb_rearm);
    lt_start(&ts[0], 10);
    lt_start(&ts[2], 10);
    ns = (s + 10) * 1000000u;
    sl_loop_update_time(&loop);

    sl__timers_run(&loop); /* ts[0] fires, re-arms itself and ts[1] at +0, moves ts[2] */
    ck_assert_int_eq(c.norder, 1);
    ck_assert_int_eq(c.order[0], 0);
    ck_assert(sl_timer_active(&ts[0].t));
    ck_assert(sl_timer_active(&ts[1].t));
    ck_assert_uint_eq(sl_timer_deadline(&ts[2].t), s + 15);
    ck_assert_uint_eq(loop.active, 3);
    ck_assert_int_eq(sl__timers_timeout(&loop), 0);

    sl__timers_run(&loop); /* same now: the two armed at +0, in arming order */
    ck_assert_int_eq(c.norder, 3);
    ck_assert_int_eq(c.order[1], 0);
    ck_assert_int_eq(c.order[2], 1);
    ck_assert_uint_eq(loop.active, 2);

    sl__timers_run(&loop); /* ts[0] re-armed itself once more */
    ck_assert_int_eq(c.norder, 4);
    ck_assert_int_eq(c.order[3], 0);
    ck_assert(!sl_timer_active(&ts[0].t));
    ck_assert_uint_eq(loop.active, 1);

    sl__timers_run(&loop);
    ck_assert_int_eq(c.norder, 4);
    ck_assert_uint_eq(ts[2].fired, 0);
    ck_assert_int_eq(sl__timers_timeout(&loop), 5);

    ns = (s + 15) * 1000000u;
    sl_loop_update_time(&loop);
    sl__timers_run(&loop);
    ck_assert_int_eq(c.norder, 5);
    ck_assert_int_eq(c.order[4], 2);
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- repeating timers ---------------------------------------------------------------------- */

static void cb_repeat(sl_timer_t *t)
{
    struct lt *x = t->data;
    struct lctx *c = x->ctx;

    x->fired++;
    x->fired_at = sl_loop_now(c->loop);
    if (c->norder < (int)SL__ARRAY_SIZE(c->order))
        c->order[c->norder++] = (int)(x->fired_at % 1000);
    /* re-armed before the callback: still active, next deadline now + repeat */
    ck_assert(sl_timer_active(t));
    ck_assert_uint_eq(sl_timer_deadline(t), x->fired_at + t->repeat);
    if (x->fired == c->stop_after)
        sl_timer_stop(t);
}

START_TEST(timer_repeat)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 1000000; /* multiple of 1000, see cb_repeat */
    struct lt r;
    struct lctx c = {.loop = &loop, .stop_after = 8};

    loop_setup(&loop, &ns, s);
    lt_init(&c, &r, 0, cb_repeat);
    ck_assert_int_eq(sl_timer_again(&r.t), SL_EINVAL); /* no repeat interval yet */
    ck_assert_int_eq(sl_timer_start(&r.t, 10, 5), 0);
    ck_assert_uint_eq(loop.active, 1);
    for (uint64_t ms = s + 1; ms <= s + 30; ms++)
        run_at(&loop, &ns, ms);
    ck_assert_int_eq(c.norder, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(c.order[i], 10 + 5 * i);

    /* a jump over several periods fires once, then continues from now (libuv) */
    run_at(&loop, &ns, s + 47);
    ck_assert_uint_eq(r.fired, 6);
    ck_assert_uint_eq(sl_timer_deadline(&r.t), s + 52);
    run_at(&loop, &ns, s + 51);
    ck_assert_uint_eq(r.fired, 6);

    /* again: re-arm at now + repeat */
    ck_assert_int_eq(sl_timer_again(&r.t), 0);
    ck_assert_uint_eq(sl_timer_deadline(&r.t), s + 56);
    run_at(&loop, &ns, s + 55);
    ck_assert_uint_eq(r.fired, 6);
    run_at(&loop, &ns, s + 56);
    ck_assert_uint_eq(r.fired, 7);
    ck_assert_uint_eq(loop.active, 1);

    /* the 8th call stops it from inside its callback */
    run_at(&loop, &ns, s + 61);
    ck_assert_uint_eq(r.fired, 8);
    ck_assert(!sl_timer_active(&r.t));
    ck_assert_uint_eq(loop.active, 0);
    run_at(&loop, &ns, s + 1000);
    ck_assert_uint_eq(r.fired, 8);

    /* restart as a one-shot: repeat 0 means again() refuses */
    ck_assert_int_eq(sl_timer_start(&r.t, 3, 0), 0);
    ck_assert_int_eq(sl_timer_again(&r.t), SL_EINVAL);
    sl_timer_stop(&r.t);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- a million timers ------------------------------------------------------------------------ */

static void cb_count(sl_timer_t *t)
{
    struct lt *x = sl__container_of(t, struct lt, t);
    struct lctx *c = x->ctx;
    uint64_t now = sl_loop_now(c->loop);

    must(t->deadline <= now && t->deadline > c->prev_now);
    x->fired++;
    c->nfired++;
}

START_TEST(timer_million_mostly_stopped)
{
    enum { N = 1000000 };
    sl_loop_t loop;
    uint64_t ns, now;
    const uint64_t s = 40000000;
    struct lctx c = {.loop = &loop};
    struct lt *ts = malloc(N * sizeof(*ts));
    bool *stopped = calloc(N, sizeof(*stopped));
    size_t live = 0;

    ck_assert(ts != NULL && stopped != NULL);
    rng_seed(1000003);
    loop_setup(&loop, &ns, s);
    c.prev_now = s;
    for (int i = 0; i < N; i++) {
        sl_timer_init(&loop, &ts[i].t, cb_count);
        ts[i].ctx = &c;
        ts[i].fired = 0;
        must(sl_timer_start(&ts[i].t, 1 + rng_below(60000), 0) == 0);
    }
    ck_assert_uint_eq(loop.active, N);
    for (int i = 0; i < N; i++) {
        if (rng_below(100) < 95) {
            sl_timer_stop(&ts[i].t);
            stopped[i] = true;
        } else {
            live++;
        }
    }
    ck_assert_uint_eq(loop.active, live);
    ck_assert_uint_gt(live, N / 25);

    now = s;
    while (now <= s + 60000) {
        now += 1 + rng_below(1000);
        lrun_at(&c, &ns, now);
    }
    ck_assert_uint_eq(c.nfired, live);
    for (int i = 0; i < N; i++)
        must(ts[i].fired == (stopped[i] ? 0u : 1u));
    ck_assert_uint_eq(loop.active, 0);
    ck_assert(sl__wheel_empty(&loop.wheel));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    free(stopped);
    free(ts);
}
END_TEST

/* ---- level boundaries, up to the end of time --------------------------------------------------
 */

START_TEST(wheel_wraparound_level_boundaries)
{
    const uint64_t hour = 3600000;
    struct sl__wheel w;
    struct wt a, b, c, d;

    /* just below 2^36, 2^42 and the end of 64-bit time, with timers across the boundary and
     * steps from 1 ms to hours */
    wheel_random_run((UINT64_C(1) << 36) - 3000, 3000, 24, 22, 11);
    wheel_random_run((UINT64_C(1) << 42) - 3 * hour, 3000, 26, 25, 12);
    wheel_random_run(UINT64_MAX - 3 * hour, 3000, 24, 23, 13);
    wheel_random_run(UINT64_MAX - 70, 200, 7, 3, 14);
    /* huge jumps across the top levels */
    wheel_random_run(UINT64_C(1) << 59, 3000, 63, 62, 15);

    /* crossing 2^36: the timer sits at level 6 until the clock gets there */
    sl__wheel_init(&w, (UINT64_C(1) << 36) - 1);
    wt_init(&a);
    timer_arm(&w, &a.t, (UINT64_C(1) << 36) + 5);
    ck_assert_int_eq(a.t.where / SL__WHEEL_SLOTS, 6);
    ck_assert_uint_le(sl__wheel_next(&w), a.t.deadline);
    ck_assert_uint_eq(wheel_fire(&w, (UINT64_C(1) << 36) + 4, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, (UINT64_C(1) << 36) + 5, NULL, 0), 1);

    /* the top level: shifts of 66 bits must not wrap */
    sl__wheel_free(&w);
    sl__wheel_init(&w, 0);
    wt_init(&a);
    wt_init(&b);
    wt_init(&c);
    wt_init(&d);
    timer_arm(&w, &a.t, UINT64_MAX);
    timer_arm(&w, &b.t, UINT64_C(1) << 60);
    timer_arm(&w, &c.t, (UINT64_C(1) << 60) - 1);
    timer_arm(&w, &d.t, UINT64_MAX - 1);
    ck_assert_int_eq(a.t.where, 10 * SL__WHEEL_SLOTS + 15);
    ck_assert_int_eq(b.t.where, 10 * SL__WHEEL_SLOTS + 1);
    ck_assert_int_eq(c.t.where, 9 * SL__WHEEL_SLOTS + 63);
    ck_assert_uint_eq(sl__wheel_next(&w), UINT64_C(63) << 54);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_C(1) << 59, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, (UINT64_C(1) << 60) - 2, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, (UINT64_C(1) << 60) - 1, NULL, 0), 1);
    ck_assert_uint_eq(c.fired, 1);
    ck_assert_uint_eq(sl__wheel_next(&w), UINT64_C(1) << 60);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_C(1) << 60, NULL, 0), 1);
    ck_assert_uint_eq(b.fired, 1);
    ck_assert_uint_eq(sl__wheel_next(&w), UINT64_C(15) << 60);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_MAX - 2, NULL, 0), 0);
    ck_assert_uint_eq(sl__wheel_next(&w), UINT64_MAX - 1);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_MAX - 1, NULL, 0), 1);
    ck_assert_uint_eq(d.fired, 1);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_MAX, NULL, 0), 1);
    ck_assert_uint_eq(a.fired, 1);
    ck_assert(sl__wheel_empty(&w));
    /* at the end of time the wheel saturates instead of wrapping to 0 */
    ck_assert_uint_eq(w.last_run, UINT64_MAX);
    wt_init(&a);
    timer_arm(&w, &a.t, UINT64_MAX);
    ck_assert_uint_eq(wheel_fire(&w, UINT64_MAX, NULL, 0), 1);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* ---- far-future cascades ------------------------------------------------------------------- */

static void cb_exact(sl_timer_t *t)
{
    struct lt *x = t->data;
    struct lctx *c = x->ctx;

    must_msg(sl_loop_now(c->loop) == x->expect, "timer %d fired at %llu, deadline %llu", x->id,
             (unsigned long long)sl_loop_now(c->loop), (unsigned long long)x->expect);
    must(t->deadline == x->expect);
    x->fired++;
    c->nfired++;
}

/*
 * Timers days, years and 2^40 ms away, and a fake clock that moves in big and small steps but
 * never past the wake-up time the loop asks for: every timer must fire exactly at its deadline,
 * which needs both exact cascades and a poll timeout that never overshoots.
 */
START_TEST(timer_far_future_cascade_exact)
{
    const uint64_t day = 86400000;
    const uint64_t far[] = {
        1,
        63,
        64,
        65,
        4095,
        4097,
        262143,
        262145,
        day,
        day + 1,
        7 * day,
        365 * day,
        365 * day + 17,
        4 * 365 * day,
        10 * 365 * day + 3,
        UINT64_C(1) << 40,
        (UINT64_C(1) << 40) + 1,
        (UINT64_C(1) << 40) - 1,
        (UINT64_C(1) << 36) + 12345,
    };
    enum { NFAR = sizeof(far) / sizeof(far[0]), NRAND = 300 };
    sl_loop_t loop;
    uint64_t ns, now;
    const uint64_t s = 987654;
    struct lt ts[NFAR + NRAND];
    struct lctx c = {.loop = &loop};
    unsigned iterations = 0;

    rng_seed(2024);
    loop_setup(&loop, &ns, s);
    for (int i = 0; i < NFAR + NRAND; i++) {
        lt_init(&c, &ts[i], i, cb_exact);
        lt_start(&ts[i], i < NFAR ? far[i] : rng_log(41));
    }
    now = s;
    while (c.nfired < NFAR + NRAND) {
        int timeout = sl__timers_timeout(&loop);
        uint64_t step;

        must(timeout > 0);
        switch (rng_below(4)) {
        case 0:
            step = 1 + rng_below(1000);
            break;
        case 1:
            step = rng_log(31);
            break;
        default:
            step = (uint64_t)timeout; /* exactly to the wake-up time */
        }
        now += SL__MIN(step, (uint64_t)timeout);
        run_at(&loop, &ns, now);
        must(++iterations < 100000);
    }
    for (int i = 0; i < NFAR + NRAND; i++)
        ck_assert_uint_eq(ts[i].fired, 1);
    ck_assert_int_eq(sl__timers_timeout(&loop), -1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- re-arm in place ------------------------------------------------------------------------ */

START_TEST(wheel_rearm_same_slot)
{
    struct sl__wheel w;
    struct wt a, b, c;
    struct wt *out[4];
    uint32_t a_index;
    int32_t where;

    sl__wheel_init(&w, 0);
    wt_init(&a);
    wt_init(&b);
    wt_init(&c);
    timer_arm(&w, &a.t, 1000); /* level 1, slot 15: 960 .. 1023 */
    timer_arm(&w, &b.t, 1010);
    ck_assert_int_eq(a.t.where, 1 * SL__WHEEL_SLOTS + 15);
    ck_assert_int_eq(b.t.where, a.t.where);
    where = a.t.where;
    a_index = a.t.link.index;
    ck_assert_uint_eq(b.t.link.index, a_index + 1);

    /* same slot: deadline and sequence change, the entry stays where it is */
    timer_arm(&w, &a.t, 1010);
    ck_assert_int_eq(a.t.where, where);
    ck_assert_uint_eq(a.t.deadline, 1010);
    ck_assert_uint_eq(a.t.link.index, a_index);
    ck_assert_uint_gt(a.t.seq, b.t.seq);

    /* another slot: it moves */
    timer_arm(&w, &c.t, 1020);
    timer_arm(&w, &c.t, 2000);
    ck_assert_int_eq(c.t.where, 1 * SL__WHEEL_SLOTS + 31);

    ck_assert_uint_eq(wheel_fire(&w, 1009, NULL, 0), 0);
    /* b was armed before a's re-arm: b first */
    ck_assert_uint_eq(wheel_fire(&w, 1010, out, 4), 2);
    ck_assert_ptr_eq(out[0], &b);
    ck_assert_ptr_eq(out[1], &a);
    ck_assert_uint_eq(wheel_fire(&w, 1999, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 2000, out, 4), 1);
    ck_assert_ptr_eq(out[0], &c);

    /* on the due list, a re-arm behind last_run stays there too */
    wt_init(&a);
    timer_arm(&w, &a.t, 5);
    ck_assert_int_eq(a.t.where, SL__TIMER_DUE);
    timer_arm(&w, &a.t, 7);
    ck_assert_int_eq(a.t.where, SL__TIMER_DUE);
    ck_assert_uint_eq(a.t.deadline, 7);
    ck_assert_uint_eq(wheel_fire(&w, 2001, NULL, 0), 1);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* ---- 32-bit arming sequences -------------------------------------------------------------- */

/* The sequence counter runs out between arms: every list is renumbered from 1, keeping the
 * arming order of equal deadlines, including an in-place re-arm (slot position older than its
 * sequence) and the due list. */
START_TEST(wheel_seq_renumber)
{
    struct sl__wheel w;
    struct wt a, b, c, e, v1, v2;
    struct wt *out[8];

    sl__wheel_init(&w, 0);
    w.seq = UINT32_MAX - 5;
    ck_assert_uint_eq(wheel_fire(&w, 100, NULL, 0), 0); /* last_run 101 */
    wt_init(&a);
    wt_init(&b);
    wt_init(&c);
    wt_init(&e);
    wt_init(&v1);
    wt_init(&v2);
    timer_arm(&w, &a.t, 1000);
    timer_arm(&w, &b.t, 1000);
    timer_arm(&w, &v1.t, 50); /* behind last_run: the due list */
    timer_arm(&w, &c.t, 1010);
    timer_arm(&w, &a.t, 1000); /* in place, now after b */
    ck_assert_uint_eq(a.t.seq, UINT32_MAX);
    ck_assert_uint_lt(a.t.link.index, b.t.link.index);
    timer_arm(&w, &v2.t, 50); /* renumbers first */
    ck_assert_int_eq(v2.t.where, SL__TIMER_DUE);
    ck_assert_uint_eq(v1.t.seq, 1);
    ck_assert_uint_eq(v2.t.seq, 5);
    ck_assert_uint_lt(b.t.seq, a.t.seq);
    timer_arm(&w, &e.t, 1000);
    ck_assert_uint_eq(e.t.seq, 6);
    ck_assert_uint_eq(w.seq, 6);

    ck_assert_uint_eq(wheel_fire(&w, 1010, out, 8), 6);
    ck_assert_ptr_eq(out[0], &v1);
    ck_assert_ptr_eq(out[1], &v2);
    ck_assert_ptr_eq(out[2], &b);
    ck_assert_ptr_eq(out[3], &a);
    ck_assert_ptr_eq(out[4], &e);
    ck_assert_ptr_eq(out[5], &c);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* The same at random: many timers over few deadlines (ties everywhere), re-armed in place or
 * moved, across several renumberings, and fired in (deadline, arming order) as recorded apart
 * from the sequences. */
struct st {
    struct wt w;
    uint64_t armed; /* arming order, independent of the wheel's sequence */
};

START_TEST(wheel_seq_renumber_random)
{
    enum { N = 5000, ARMS = 40000 };
    struct sl__wheel w;
    struct st *ts = calloc(N, sizeof(*ts));
    struct wt **out = malloc(N * sizeof(*out));
    uint64_t armed = 0, now = 1000, last_deadline = 0, last_armed = 0;
    size_t live = 0, total = 0, renumbered = 0;

    ck_assert(ts != NULL && out != NULL);
    rng_seed(42);
    sl__wheel_init(&w, now);
    for (size_t i = 0; i < N; i++)
        wt_init(&ts[i].w);
    w.seq = UINT32_MAX - 1000;
    for (size_t k = 0; k < ARMS; k++) {
        struct st *x = &ts[rng_below(N)];
        uint32_t before = w.seq;

        if (x->w.t.where == SL__TIMER_IDLE)
            live++;
        timer_arm(&w, &x->w.t, now + 1 + rng_below(8) * 50); /* 8 deadlines */
        x->armed = ++armed;
        if (x->w.t.seq < before)
            renumbered++;
        if (k % 10000 == 9999) /* run the counter out again */
            w.seq = UINT32_MAX - (uint32_t)rng_below(3000);
    }
    ck_assert_uint_ge(renumbered, 4);
    for (uint64_t t = now + 1; t <= now + 1 + 7 * 50; t += 50) {
        size_t n = wheel_fire(&w, t, out, N);
        for (size_t i = 0; i < n; i++) {
            struct st *x = sl__container_of(out[i], struct st, w);
            if (total + i > 0)
                must(x->w.t.deadline > last_deadline ||
                     (x->w.t.deadline == last_deadline && x->armed > last_armed));
            last_deadline = x->w.t.deadline;
            last_armed = x->armed;
        }
        total += n;
    }
    ck_assert_uint_eq(total, live);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
    free(out);
    free(ts);
}
END_TEST

/* ---- slot arrays: holes, compaction, running out of memory ---------------------------------- */

/* Stops leave holes; a trailing stop trims them; a full array that is half holes is compacted
 * in order (each moved timer learns its index) instead of growing. */
START_TEST(wheel_slot_holes_and_compaction)
{
    enum { N = 64 };
    struct sl__wheel w;
    struct wt x[N], y;
    struct sl__slot *sl;
    struct wt *out[N + 1];
    size_t n;

    sl__wheel_init(&w, 0);
    for (int i = 0; i < N; i++) {
        wt_init(&x[i]);
        timer_arm(&w, &x[i].t, 1000 + (uint64_t)(i % 4)); /* all in level-1 slot 15 */
    }
    sl = &w.slots[1 * SL__WHEEL_SLOTS + 15];
    ck_assert_uint_eq(sl->len, N);
    ck_assert_uint_eq(sl->cap, N);
    /* stop the last two: the array shrinks back over them */
    sl__wheel_unlink(&w, &x[N - 1].t);
    sl__wheel_unlink(&w, &x[N - 2].t);
    ck_assert_uint_eq(sl->len, N - 2);
    timer_arm(&w, &x[N - 2].t, 1002);
    timer_arm(&w, &x[N - 1].t, 1003);
    ck_assert_uint_eq(sl->len, N);
    /* stop every other one from the front: holes, nothing moves */
    for (int i = 0; i < N; i += 2)
        sl__wheel_unlink(&w, &x[i].t);
    ck_assert_uint_eq(sl->len, N);
    ck_assert_uint_eq(sl->live, N / 2);
    ck_assert_uint_eq(x[5].t.link.index, 5);
    ck_assert(sl->timers[4] == NULL);
    /* the next arm finds the array full and half holes: compacted, not grown */
    wt_init(&y);
    timer_arm(&w, &y.t, 1001);
    ck_assert_uint_eq(sl->cap, N);
    ck_assert_uint_eq(sl->len, N / 2 + 1);
    for (int i = 1; i < N; i += 2) {
        ck_assert_uint_eq(x[i].t.link.index, (unsigned)i / 2);
        ck_assert_ptr_eq(sl->timers[i / 2], &x[i].t);
    }
    ck_assert_uint_eq(y.t.link.index, N / 2);
    /* order of arrival survives: by deadline, then arming */
    n = wheel_fire(&w, 1003, out, SL__ARRAY_SIZE(out));
    ck_assert_uint_eq(n, N / 2 + 1);
    for (size_t i = 1; i < n; i++)
        if (out[i] != &y && out[i - 1] != &y)
            ck_assert(out[i] > out[i - 1] || out[i]->t.deadline > out[i - 1]->t.deadline);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* Out of memory: slots cannot grow, so new timers go on the overflow list. They still fire
 * never early and never late, in (deadline, arming) order among the slotted timers of the same
 * deadline; they can be stopped, re-armed (back into a slot once memory is back) and survive a
 * renumbering. */
START_TEST(wheel_overflow_without_memory)
{
    enum { N = 40 };
    struct sl__wheel w;
    struct wt x[N], late;
    struct wt *out[N];
    size_t n;

    sl__wheel_init(&w, 0);
    for (int i = 0; i < N; i++)
        wt_init(&x[i]);
    wt_init(&late);
    /* the first 16 fill an array of 8 in each of two slots; the rest overflow */
    for (int i = 0; i < 16; i++)
        timer_arm(&w, &x[i].t, 500 + (uint64_t)(i % 2) * 100);
    realloc_fails = true;
    for (int i = 16; i < N; i++) {
        timer_arm(&w, &x[i].t, 500 + (uint64_t)(i % 2) * 100);
        ck_assert_int_eq(x[i].t.where, SL__TIMER_OVERFLOW);
    }
    ck_assert_int_ge(x[0].t.where, 0);
    timer_arm(&w, &late.t, 100000); /* an empty slot cannot get an array either */
    ck_assert_int_eq(late.t.where, SL__TIMER_OVERFLOW);
    ck_assert(!sl__wheel_empty(&w));
    ck_assert_uint_eq(sl__wheel_next(&w), 448); /* the level-1 slot of 500 starts at 448 */

    /* stop and re-arm overflow timers; a renumbering while they are there keeps the order */
    sl__wheel_unlink(&w, &x[17].t);
    sl__wheel_unlink(&w, &x[18].t);
    timer_arm(&w, &x[18].t, 500); /* now the last armed for 500 */
    ck_assert_int_eq(x[18].t.where, SL__TIMER_OVERFLOW);
    w.seq = UINT32_MAX;
    timer_arm(&w, &x[19].t, 600); /* renumbers, then re-arms x[19] */
    ck_assert_uint_lt(w.seq, 100);
    ck_assert_int_eq(x[19].t.where, SL__TIMER_OVERFLOW);

    ck_assert_uint_eq(wheel_fire(&w, 499, NULL, 0), 0);
    n = wheel_fire(&w, 500, out, N);
    ck_assert_uint_eq(n, N / 2);
    for (size_t i = 0, k = 0; i + 1 < n; i++, k += 2) {
        if (k == 18)
            k += 2;
        ck_assert_ptr_eq(out[i], &x[k]);
    }
    ck_assert_ptr_eq(out[n - 1], &x[18]);
    ck_assert_uint_eq(sl__wheel_next(&w), 576); /* the level-1 slot of 600 */

    /* memory is back: a re-arm leaves the overflow list for a slot */
    realloc_fails = false;
    timer_arm(&w, &x[21].t, 600);
    ck_assert_int_ge(x[21].t.where, 0);
    n = wheel_fire(&w, 600, out, N);
    ck_assert_uint_eq(n, N / 2 - 1);
    ck_assert_ptr_eq(out[0], &x[1]);
    ck_assert_ptr_eq(out[8], &x[23]);
    ck_assert_ptr_eq(out[n - 3], &x[39]);
    ck_assert_ptr_eq(out[n - 2], &x[19]);
    ck_assert_ptr_eq(out[n - 1], &x[21]);
    ck_assert_uint_eq(wheel_fire(&w, 99999, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 100000, NULL, 0), 1);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* Through the loop: without memory, timers still run in order and the loop closes cleanly. */
static void cb_order(sl_timer_t *t)
{
    lt_record(t);
}

START_TEST(timer_overflow_without_memory)
{
    sl_loop_t loop;
    uint64_t ns;
    struct lctx c = {.loop = &loop};
    struct lt x[6];

    loop_setup(&loop, &ns, 1000);
    realloc_fails = true;
    for (int i = 0; i < 6; i++) {
        lt_init(&c, &x[i], i, cb_order);
        lt_start(&x[i], 50 - (uint64_t)(i % 3) * 10);
    }
    ck_assert_int_eq(x[0].t.where, SL__TIMER_OVERFLOW);
    ck_assert_int_eq(sl_loop_run_once(&loop, 0), 6);
    lrun_at(&c, &ns, 1029);
    ck_assert_int_eq(c.norder, 0);
    lrun_at(&c, &ns, 1030);
    ck_assert_int_eq(c.norder, 2);
    lrun_at(&c, &ns, 1045);
    ck_assert_int_eq(c.norder, 4);
    ck_assert_int_eq(c.order[0], 2);
    ck_assert_int_eq(c.order[1], 5);
    ck_assert_int_eq(c.order[2], 1);
    ck_assert_int_eq(c.order[3], 4);
    sl_timer_stop(&x[3].t);
    lrun_at(&c, &ns, 1100);
    ck_assert_int_eq(c.norder, 5);
    ck_assert_int_eq(c.order[4], 0);
    realloc_fails = false;
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* Through the public API: a re-arm updates the deadline reported and used. */
START_TEST(timer_rearm_updates_deadline)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 64 * 1000;
    struct lt a;
    struct lctx c = {.loop = &loop};

    loop_setup(&loop, &ns, s);
    c.prev_now = s;
    lt_init(&c, &a, 0, lt_record);
    ck_assert_int_eq(sl_timer_start(&a.t, 1000, 0), 0);
    ck_assert_uint_eq(sl_timer_deadline(&a.t), s + 1000);
    ck_assert_int_eq(sl_timer_start(&a.t, 1010, 0), 0); /* same slot */
    ck_assert_uint_eq(sl_timer_deadline(&a.t), s + 1010);
    ck_assert_uint_eq(loop.active, 1);
    lrun_at(&c, &ns, s + 1009);
    ck_assert_uint_eq(a.fired, 0);
    ck_assert_int_eq(sl_timer_start(&a.t, 1, 0), 0); /* earlier, another slot */
    ck_assert_uint_eq(sl_timer_deadline(&a.t), s + 1010);
    lrun_at(&c, &ns, s + 1010);
    ck_assert_uint_eq(a.fired, 1);
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- sl__wheel_next, property test ------------------------------------------------------------
 */

START_TEST(wheel_next_never_after_earliest)
{
    enum { N = 200, OPS = 60000 };
    struct sl__wheel w;
    struct wt ts[N];
    bool armed[N] = {false};
    uint64_t now = UINT64_C(1) << 33;

    rng_seed(99);
    sl__wheel_init(&w, now);
    for (int i = 0; i < N; i++)
        wt_init(&ts[i]);
    for (int op = 0; op < OPS; op++) {
        unsigned r = (unsigned)rng_below(10);
        int i = (int)rng_below(N);
        uint64_t min = UINT64_MAX, next;
        bool any = false;

        if (r < 5) {
            /* arm or re-arm: ahead of the wheel, or sometimes behind it (due) */
            uint64_t d = rng_below(8) == 0 ? w.last_run - rng_log(10) : now + rng_log(40) - 1;
            timer_arm(&w, &ts[i].t, d);
            ts[i].fired = 0;
            armed[i] = true;
        } else if (r < 7) {
            sl__wheel_unlink(&w, &ts[i].t);
            armed[i] = false;
        } else {
            /* collect at a time ahead (small or huge step), at next - 1, or behind */
            switch (rng_below(4)) {
            case 0:
                now += rng_log(40);
                break;
            case 1:
                next = sl__wheel_next(&w);
                if (next != UINT64_MAX && next > 0)
                    now = SL__MAX(now, next - 1);
                break;
            case 2:
                now -= rng_log(12);
                break;
            default:
                now += rng_log(8);
            }
            for (int j = 0; j < N; j++)
                ts[j].fired = 0;
            wheel_fire(&w, now, NULL, 0);
            for (int j = 0; j < N; j++) {
                if (ts[j].fired)
                    armed[j] = false;
                /* nothing due is left behind */
                must(!armed[j] || ts[j].t.deadline > now);
            }
        }
        for (int j = 0; j < N; j++) {
            if (armed[j]) {
                min = SL__MIN(min, ts[j].t.deadline);
                any = true;
            }
        }
        next = sl__wheel_next(&w);
        must(sl__wheel_empty(&w) == !any);
        if (any)
            must_msg(next <= min, "op %d: next %llu after the earliest deadline %llu", op,
                     (unsigned long long)next, (unsigned long long)min);
        else
            must(next == UINT64_MAX);
    }
    for (int j = 0; j < N; j++)
        sl__wheel_unlink(&w, &ts[j].t);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

/* ---- a clock that goes backwards ------------------------------------------------------------- */

START_TEST(wheel_clock_backwards)
{
    struct sl__wheel w;
    struct wt a, b, c;

    sl__wheel_init(&w, 10000);
    wt_init(&a);
    wt_init(&b);
    wt_init(&c);
    timer_arm(&w, &a.t, 10050);
    ck_assert_uint_eq(wheel_fire(&w, 10010, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 5000, NULL, 0), 0); /* backwards: nothing */
    timer_arm(&w, &b.t, 5020); /* behind last_run, yet ahead of the clock */
    timer_arm(&w, &c.t, 4990); /* behind both */
    ck_assert_int_eq(b.t.where, SL__TIMER_DUE);
    ck_assert_uint_eq(sl__wheel_next(&w), 4990);
    ck_assert_uint_eq(wheel_fire(&w, 5010, NULL, 0), 1);
    ck_assert_uint_eq(c.fired, 1);
    ck_assert_uint_eq(b.fired, 0);
    ck_assert_uint_eq(sl__wheel_next(&w), 5020);
    ck_assert_uint_eq(wheel_fire(&w, 5019, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 5020, NULL, 0), 1);
    ck_assert_uint_eq(b.fired, 1);
    ck_assert_uint_eq(wheel_fire(&w, 9000, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 10049, NULL, 0), 0);
    ck_assert_uint_eq(wheel_fire(&w, 10050, NULL, 0), 1);
    ck_assert_uint_eq(a.fired, 1);
    ck_assert(sl__wheel_empty(&w));
    sl__wheel_free(&w);
}
END_TEST

START_TEST(timer_clock_backwards)
{
    sl_loop_t loop;
    uint64_t ns;
    const uint64_t s = 50000;
    struct lt a, b;
    struct lctx c = {.loop = &loop};

    loop_setup(&loop, &ns, s);
    lt_init(&c, &a, 0, lt_record);
    lt_init(&c, &b, 1, lt_record);
    lt_start(&a, 100);
    lrun_at(&c, &ns, s + 50);
    lrun_at(&c, &ns, s - 1000); /* the clock steps back */
    c.prev_now = 0;
    ck_assert_uint_eq(c.nfired, 0);
    lt_start(&b, 10); /* deadline s - 990: behind the wheel, ahead of the clock */
    ck_assert_int_eq(sl__timers_timeout(&loop), 10);
    run_at(&loop, &ns, s - 995);
    ck_assert_uint_eq(c.nfired, 0);
    run_at(&loop, &ns, s - 990);
    ck_assert_uint_eq(c.nfired, 1);
    ck_assert_uint_eq(b.fired, 1);
    run_at(&loop, &ns, s + 99);
    ck_assert_uint_eq(c.nfired, 1);
    run_at(&loop, &ns, s + 100);
    ck_assert_uint_eq(a.fired, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- bookkeeping ------------------------------------------------------------------------------
 */

START_TEST(timer_active_ref_unref)
{
    sl_loop_t loop;
    uint64_t ns;
    sl_timer_t t, u;

    loop_setup(&loop, &ns, 1000);
    sl_timer_init(&loop, &u, NULL);
    ck_assert_int_eq(sl_timer_start(&u, 5, 0), SL_EINVAL);
    ck_assert(!sl_timer_active(&u));
    sl_timer_init(&loop, &t, lt_record);
    sl_timer_stop(&t); /* idle: a no-op */
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(sl__timers_timeout(&loop), -1);
    ck_assert_int_eq(sl_timer_start(&t, 5, 0), 0);
    ck_assert(sl_timer_active(&t));
    ck_assert_int_eq(sl_timer_start(&t, 7, 0), 0); /* re-arm: counted once */
    ck_assert_uint_eq(loop.active, 1);
    ck_assert_int_eq(sl__timers_timeout(&loop), 7);
    sl_timer_unref(&t);
    sl_timer_unref(&t);
    ck_assert_uint_eq(loop.active, 0);
    ck_assert(!sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_close(&loop), SL_EBUSY); /* still armed */
    sl_timer_ref(&t);
    sl_timer_ref(&t);
    ck_assert_uint_eq(loop.active, 1);
    sl_timer_unref(&t);
    sl_timer_stop(&t);
    ck_assert_uint_eq(loop.active, 0);
    sl_timer_ref(&t); /* idle: nothing to count */
    ck_assert_uint_eq(loop.active, 0);
    ck_assert(sl__wheel_empty(&loop.wheel));
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static Suite *timer_suite(void)
{
    Suite *s = suite_create("timer");
    TCase *wheel = tcase_create("wheel");
    TCase *api = tcase_create("api");

    tcase_set_timeout(wheel, 120);
    tcase_set_timeout(api, 120);
    tcase_add_test(wheel, wheel_order_deadline_then_seq);
    tcase_add_test(wheel, wheel_never_fires_early_random);
    tcase_add_test(wheel, wheel_wraparound_level_boundaries);
    tcase_add_test(wheel, wheel_rearm_same_slot);
    tcase_add_test(wheel, wheel_next_never_after_earliest);
    tcase_add_test(wheel, wheel_clock_backwards);
    tcase_add_test(wheel, wheel_seq_renumber);
    tcase_add_test(wheel, wheel_seq_renumber_random);
    tcase_add_test(wheel, wheel_slot_holes_and_compaction);
    tcase_add_test(wheel, wheel_overflow_without_memory);
    tcase_add_test(api, timer_order_in_callbacks);
    tcase_add_test(api, timer_never_fires_early_random);
    tcase_add_test(api, timer_cancel_inside_callback);
    tcase_add_test(api, timer_rearm_inside_callback);
    tcase_add_test(api, timer_repeat);
    tcase_add_test(api, timer_million_mostly_stopped);
    tcase_add_test(api, timer_far_future_cascade_exact);
    tcase_add_test(api, timer_rearm_updates_deadline);
    tcase_add_test(api, timer_clock_backwards);
    tcase_add_test(api, timer_active_ref_unref);
    tcase_add_test(api, timer_overflow_without_memory);
    suite_add_tcase(s, wheel);
    suite_add_tcase(s, api);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(timer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
