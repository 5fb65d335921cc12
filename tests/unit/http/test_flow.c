/*
 * test_flow.c -- token buckets, backoff and Retry-After, on made-up clocks.
 */
#include "../../../http/flow.c"

#include <check.h>
#include <math.h>

#define S 1000000000ull /* one second in ns */

START_TEST(bucket_burst_then_exact_rate)
{
    struct sl__bucket b;
    uint64_t t = 5 * S;
    unsigned taken = 0;

    sl__bucket_init(&b, 20.0, 5, t);
    /* The burst goes at once, exactly: 5 tokens, not 6. */
    while (sl__bucket_take(&b, t))
        taken++;
    ck_assert_uint_eq(taken, 5);
    /* Then exactly one token every 50 ms: never early. */
    uint64_t wait = sl__bucket_wait_ns(&b, t);
    ck_assert_uint_ge(wait, 50000000ull);
    ck_assert_uint_le(wait, 50000001ull);
    ck_assert(!sl__bucket_take(&b, t + wait - 2));
    ck_assert(sl__bucket_take(&b, t + wait));
}
END_TEST

/* Drain a bucket for 10 simulated seconds, taking a token as soon as one is
 * due: the count must be burst + rate * 10 (+-1 for the edges). */
START_TEST(bucket_rate_over_ten_seconds)
{
    const double rates[] = {1, 3.5, 20, 97, 1000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        struct sl__bucket b;
        uint64_t t = 0, end = 10 * S;
        unsigned taken = 0;
        sl__bucket_init(&b, rates[i], 2, t);
        while (t <= end) {
            if (sl__bucket_take(&b, t)) {
                taken++;
                continue;
            }
            t += sl__bucket_wait_ns(&b, t);
        }
        double want = 2 + rates[i] * 10;
        ck_assert_msg(fabs((double)taken - want) <= 1.0, "rate %.1f: %u tokens, want %.1f", rates[i],
                      taken, want);
    }
}
END_TEST

START_TEST(bucket_refill_capped_at_burst)
{
    struct sl__bucket b;
    unsigned taken = 0;

    sl__bucket_init(&b, 10, 3, 0);
    while (sl__bucket_take(&b, 0))
        taken++;
    ck_assert_uint_eq(taken, 3);
    /* An hour idle refills to the burst, not to 36000. */
    taken = 0;
    while (sl__bucket_take(&b, 3600 * S))
        taken++;
    ck_assert_uint_eq(taken, 3);
    /* A clock reading from the past never adds tokens. */
    ck_assert(!sl__bucket_take(&b, 1 * S));
}
END_TEST

START_TEST(bucket_unlimited)
{
    struct sl__bucket b;
    sl__bucket_init(&b, 0, 1, 0);
    for (int i = 0; i < 100000; i++)
        ck_assert(sl__bucket_take(&b, 0));
    ck_assert_uint_eq(sl__bucket_wait_ns(&b, 0), 0);
}
END_TEST

START_TEST(backoff_full_jitter_bounds)
{
    uint64_t rng = 42;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        uint64_t ceiling = 100ull << attempt;
        if (ceiling > 5000)
            ceiling = 5000;
        uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
        for (int i = 0; i < 4000; i++) {
            uint64_t d = sl__backoff_ms(attempt, 100, 5000, &rng);
            ck_assert_uint_le(d, ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += d;
        }
        /* Spread over the whole range, mean near the middle. */
        ck_assert_uint_le(lo, ceiling / 10);
        ck_assert_uint_ge(hi, ceiling * 9 / 10);
        double mean = (double)sum / 4000;
        ck_assert_msg(fabs(mean - (double)ceiling / 2) < (double)ceiling * 0.06,
                      "attempt %u: mean %.1f of [0, %llu]", attempt, mean,
                      (unsigned long long)ceiling);
    }
    /* Huge attempt numbers saturate at the cap instead of overflowing. */
    ck_assert_uint_le(sl__backoff_ms(200, 1000, 30000, &rng), 30000);
}
END_TEST

START_TEST(backoff_reproducible_with_seed)
{
    uint64_t a = 7, b = 7;
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(sl__backoff_ms((unsigned)i % 8, 250, 8000, &a),
                          sl__backoff_ms((unsigned)i % 8, 250, 8000, &b));
}
END_TEST

START_TEST(retry_after_seconds_and_dates)
{
    uint64_t ms;
    /* 1994-11-06 08:49:37 UTC */
    const int64_t t = 784111777;

    ck_assert_int_eq(sl__retry_after_ms("120", t, &ms), 0);
    ck_assert_uint_eq(ms, 120000);
    ck_assert_int_eq(sl__retry_after_ms(" 0 ", t, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    ck_assert_int_eq(sl__retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", t, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    ck_assert_int_eq(sl__retry_after_ms("Sun, 06 Nov 1994 08:50:07 GMT", t, &ms), 0);
    ck_assert_uint_eq(ms, 30000);
    ck_assert_int_eq(sl__retry_after_ms("Mon, 07 Nov 1994 08:49:37 GMT", t, &ms), 0);
    ck_assert_uint_eq(ms, 86400000);
    /* A date in the past means "now". */
    ck_assert_int_eq(sl__retry_after_ms("Sat, 05 Nov 1994 08:49:37 GMT", t, &ms), 0);
    ck_assert_uint_eq(ms, 0);
    /* Leap years: 2024-03-01 is 60 days after 2024-01-01. */
    ck_assert_int_eq(sl__retry_after_ms("Fri, 01 Mar 2024 00:00:00 GMT", 1704067200, &ms), 0);
    ck_assert_uint_eq(ms, 60ull * 86400 * 1000);
    const char *bad[] = {"", "soon", "12s", "-5", "Sun, 06 Nov 1994 08:49:37",
                         "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
                         "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(sl__retry_after_ms(bad[i], t, &ms) < 0, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(retryable_tables)
{
    const int yes[] = {408, 429, 500, 502, 503, 504};
    const int no[] = {200, 301, 400, 401, 403, 404, 501, 505};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        ck_assert(sl__status_retryable(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        ck_assert(!sl__status_retryable(no[i]));
    ck_assert(sl__error_retryable(SL_ECONNREFUSED));
    ck_assert(sl__error_retryable(SL_ECONNRESET));
    ck_assert(sl__error_retryable(SL_ETRUNCATED));
    ck_assert(sl__error_retryable(SL_EOF));
    ck_assert(sl__error_retryable(SL_ETIMEDOUT_READ));
    /* Not worth another try: our own limits, bad input, the user's wish. */
    ck_assert(!sl__error_retryable(SL_ETIMEDOUT_TOTAL));
    ck_assert(!sl__error_retryable(SL_ETIMEDOUT_QUEUE));
    ck_assert(!sl__error_retryable(SL_ECANCELED));
    ck_assert(!sl__error_retryable(SL_EPARSE));
    ck_assert(!sl__error_retryable(SL_ETLS_HOSTNAME));
    ck_assert(!sl__error_retryable(SL_EDNS));
}
END_TEST

/* Overload halves the allowance from the connections open, once per epoch. */
START_TEST(aimd_decrease_once_per_epoch)
{
    struct sl__aimd a;

    sl__aimd_init(&a, 100, 0);
    ck_assert_uint_eq(a.limit, 0);
    /* 16 connections open when the first 503 arrives: 8. */
    ck_assert(sl__aimd_decrease(&a, 0, 16, 0));
    ck_assert_uint_eq(a.limit, 8);
    ck_assert_uint_eq(a.epoch, 1);
    /* The other 15 answers to requests sent before that change nothing. */
    for (int i = 0; i < 15; i++)
        ck_assert(!sl__aimd_decrease(&a, 0, 16, 0));
    ck_assert_uint_eq(a.limit, 8);
    /* A request sent under the new allowance: halves again, down to 1. */
    ck_assert(sl__aimd_decrease(&a, 1, 8, 0));
    ck_assert_uint_eq(a.limit, 4);
    ck_assert(sl__aimd_decrease(&a, 2, 4, 0));
    ck_assert(sl__aimd_decrease(&a, 3, 4, 0));
    ck_assert(sl__aimd_decrease(&a, 4, 4, 0));
    ck_assert_uint_eq(a.limit, 1);
    ck_assert(sl__aimd_decrease(&a, 5, 4, 0));
    ck_assert_uint_eq(a.limit, 1);
    /* No rate configured: no rate allowance either. */
    ck_assert(a.rate == 0);
    /* The configured cap bounds where halving starts. */
    sl__aimd_init(&a, 6, 0);
    ck_assert(sl__aimd_decrease(&a, 0, 50, 0));
    ck_assert_uint_eq(a.limit, 3);
}
END_TEST

/* Additive increase: one connection per window of `limit` successes, back to
 * the ceiling, after which the host is unlimited by it again. */
START_TEST(aimd_increase_by_windows)
{
    struct sl__aimd a;
    unsigned successes = 0;

    sl__aimd_init(&a, 8, 0);
    ck_assert(!sl__aimd_increase(&a)); /* not backing off: nothing to do */
    ck_assert(sl__aimd_decrease(&a, 0, 8, 0));
    ck_assert_uint_eq(a.limit, 4);
    while (a.limit != 0) {
        unsigned before = a.limit;
        bool grew = sl__aimd_increase(&a);
        successes++;
        ck_assert(grew == (a.limit != before));
        ck_assert_uint_le(a.limit, 8);
    }
    /* 4 + 5 + 6 + 7 successes to climb 4 -> 8. */
    ck_assert_uint_eq(successes, 4 + 5 + 6 + 7);
    /* A decrease resets the count towards the next step. */
    ck_assert(sl__aimd_decrease(&a, 1, 8, 0));
    ck_assert(!sl__aimd_increase(&a));
    ck_assert(sl__aimd_decrease(&a, 2, 8, 0));
    ck_assert_uint_eq(a.limit, 2);
    ck_assert_uint_eq(a.acks, 0);
}
END_TEST

/* With a rate limit in force, overload halves the rate as well; successes
 * give back a tenth of the configured rate per window. */
START_TEST(aimd_rate_halves_and_recovers)
{
    struct sl__aimd a;

    sl__aimd_init(&a, 4, 10.0);
    ck_assert(sl__aimd_decrease(&a, 0, 4, 0));
    ck_assert(fabs(a.rate - 5.0) < 1e-9);
    ck_assert(sl__aimd_decrease(&a, 1, 4, 0));
    ck_assert(fabs(a.rate - 2.5) < 1e-9);
    ck_assert_uint_eq(a.limit, 1);
    /* Never down to zero (zero means "not limited"). */
    for (uint64_t e = 2; e < 40; e++)
        ck_assert(sl__aimd_decrease(&a, e, 4, 0));
    ck_assert(a.rate >= 0.01);
    /* Recovery: rate goes up by 1.0 per window until 10, then unlimited. */
    sl__aimd_init(&a, 0, 10.0);
    ck_assert(sl__aimd_decrease(&a, 0, 2, 0));
    ck_assert_uint_eq(a.limit, 1);
    ck_assert(sl__aimd_increase(&a)); /* window of 1 */
    ck_assert(fabs(a.rate - 6.0) < 1e-9);
    unsigned steps = 1;
    while (a.rate != 0) {
        while (!sl__aimd_increase(&a))
            ;
        steps++;
        ck_assert(steps < 100);
    }
    ck_assert_uint_eq(steps, 5); /* 5 -> 6, 7, 8, 9, 10 (= ceiling: released) */
}
END_TEST

/* No rate limit set and one connection is still too many: a rate is
 * imposed at half the observed pace, and released once recovered. */
START_TEST(aimd_imposes_a_rate_below_one_connection)
{
    struct sl__aimd a;

    sl__aimd_init(&a, 0, 0);
    ck_assert(sl__aimd_decrease(&a, 0, 2, 40.0));
    ck_assert_uint_eq(a.limit, 1);
    ck_assert(a.rate == 0); /* still room to act on connections */
    ck_assert(sl__aimd_decrease(&a, 1, 1, 40.0));
    ck_assert(fabs(a.rate - 20.0) < 1e-9);
    ck_assert(sl__aimd_decrease(&a, 2, 1, 20.0));
    ck_assert(fabs(a.rate - 10.0) < 1e-9); /* halves from the current rate */
    /* Recovery: +4/s (a tenth of the observed 40) per window, then free. */
    unsigned steps = 0;
    while (a.rate != 0) {
        while (!sl__aimd_increase(&a))
            ;
        ck_assert(++steps < 100);
    }
    ck_assert(a.rate_top == 0);
    ck_assert_uint_ge(steps, 8);
    /* Without an observed pace, nothing is invented. */
    sl__aimd_init(&a, 0, 0);
    ck_assert(sl__aimd_decrease(&a, 0, 1, 0));
    ck_assert(sl__aimd_decrease(&a, 1, 1, 0));
    ck_assert(a.rate == 0);
}
END_TEST

static Suite *flow_suite(void)
{
    Suite *s = suite_create("flow");
    TCase *tc = tcase_create("flow");
    tcase_add_test(tc, bucket_burst_then_exact_rate);
    tcase_add_test(tc, bucket_rate_over_ten_seconds);
    tcase_add_test(tc, bucket_refill_capped_at_burst);
    tcase_add_test(tc, bucket_unlimited);
    tcase_add_test(tc, backoff_full_jitter_bounds);
    tcase_add_test(tc, backoff_reproducible_with_seed);
    tcase_add_test(tc, retry_after_seconds_and_dates);
    tcase_add_test(tc, retryable_tables);
    tcase_add_test(tc, aimd_decrease_once_per_epoch);
    tcase_add_test(tc, aimd_increase_by_windows);
    tcase_add_test(tc, aimd_rate_halves_and_recovers);
    tcase_add_test(tc, aimd_imposes_a_rate_below_one_connection);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(flow_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
