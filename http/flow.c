/*
 * flow.c -- the arithmetic of politeness: token buckets, retry backoff and
 * Retry-After.
 *
 * Everything here is a pure function of its inputs and a clock reading in
 * nanoseconds, so that the unit tests drive it with made-up times. The
 * client (client.c) owns the state and the timers.
 *
 * Token bucket: `rate` tokens per second accrue continuously up to `burst`;
 * a request takes one token. A bucket starts full, so the first `burst`
 * requests go at once and the rest at exactly `rate` per second.
 *
 * Backoff is "full jitter" (AWS architecture blog, 2015): the n-th retry
 * waits a uniformly random time in [0, min(cap, base * 2^n)], which spreads
 * retrying clients apart instead of synchronising them. A server's
 * Retry-After (seconds or an HTTP-date, RFC 9110 10.2.3) replaces the
 * random delay, still capped.
 */
#include "http-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void sl__bucket_init(struct sl__bucket *b, double rate_per_s, double burst, uint64_t now_ns)
{
    b->rate = rate_per_s;
    b->burst = burst < 1 ? 1 : burst;
    b->tokens = b->burst;
    b->stamp_ns = now_ns;
}

static void bucket_refill(struct sl__bucket *b, uint64_t now_ns)
{
    if (now_ns > b->stamp_ns) {
        b->tokens += (double)(now_ns - b->stamp_ns) * b->rate / 1e9;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->stamp_ns = now_ns > b->stamp_ns ? now_ns : b->stamp_ns;
}

/* Nanoseconds until a token is available (0: now). */
uint64_t sl__bucket_wait_ns(struct sl__bucket *b, uint64_t now_ns)
{
    if (b->rate <= 0)
        return 0;
    bucket_refill(b, now_ns);
    if (b->tokens >= 1.0)
        return 0;
    /* Round up so that the wake-up never comes before the token. */
    return (uint64_t)((1.0 - b->tokens) * 1e9 / b->rate) + 1;
}

bool sl__bucket_take(struct sl__bucket *b, uint64_t now_ns)
{
    if (b->rate <= 0)
        return true;
    bucket_refill(b, now_ns);
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/* A small, seedable generator (xorshift64*) so tests are reproducible. */
uint64_t sl__rand64(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t sl__backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t *rng)
{
    uint64_t ceiling = base_ms;

    for (unsigned i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling = ceiling > UINT64_MAX / 2 ? UINT64_MAX : ceiling * 2;
    if (cap_ms > 0 && ceiling > cap_ms)
        ceiling = cap_ms;
    if (ceiling == 0)
        return 0;
    return sl__rand64(rng) % (ceiling + 1);
}

static int month_index(const char *m)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(m, names + 3 * i, 3) == 0)
            return i;
    return -1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int sl__retry_after_ms(const char *v, int64_t now_unix_s, uint64_t *out_ms)
{
    const char *p = v;
    char mon[4] = {0};
    int day, year, hh, mm, ss, n = 0;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        /* delay-seconds */
        uint64_t s = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (s > UINT64_MAX / 10000)
                return -1;
            s = s * 10 + (uint64_t)(*p - '0');
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0')
            return -1;
        *out_ms = s * 1000;
        return 0;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (the obsolete formats
     * are not worth a retry decision). */
    if (sscanf(p, "%*3s, %2d %3s %4d %2d:%2d:%2d GMT%n", &day, mon, &year, &hh, &mm, &ss, &n) !=
            6 ||
        p[n] != '\0')
        return -1;
    int mi = month_index(mon);
    if (mi < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    int64_t t =
        days_from_civil(year, (unsigned)mi + 1, (unsigned)day) * 86400 + hh * 3600 + mm * 60 + ss;
    *out_ms = t > now_unix_s ? (uint64_t)(t - now_unix_s) * 1000 : 0;
    return 0;
}

bool sl__status_retryable(int status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

bool sl__error_retryable(int err)
{
    switch (err) {
    case SL_ECONNREFUSED:
    case SL_ECONNRESET:
    case SL_ECONNABORTED:
    case SL_EPIPE:
    case SL_ECONNECT:
    case SL_EHOSTUNREACH:
    case SL_ENETUNREACH:
    case SL_ENETDOWN:
    case SL_ETIMEDOUT:
    case SL_EDNS_SERVER:
    case SL_ETRUNCATED:
    case SL_EOF: /* an empty reply: the server closed, as when restarting */
    case SL_ETIMEDOUT_CONNECT:
    case SL_ETIMEDOUT_TLS:
    case SL_ETIMEDOUT_FIRSTBYTE:
    case SL_ETIMEDOUT_READ:
        return true;
    default:
        return false;
    }
}

/*
 * Adaptive back-off (AIMD, as TCP congestion control): an overloaded
 * answer (429, 503) halves the host's connection allowance and its request
 * rate, at most once per epoch -- answers to requests sent before the last
 * decrease say nothing about the new allowance. When no rate limit applies
 * and one connection is still too many, a rate is imposed: half the pace
 * the host was seeing (`observed_rate`). Every success counts
 * towards the next additive step: one more connection after `limit`
 * successes (one "window"), and a tenth of the configured rate. Once both
 * are back at their ceilings the host is no longer limited by this.
 */
void sl__aimd_init(struct sl__aimd *a, unsigned conn_ceiling, double rate_ceiling)
{
    memset(a, 0, sizeof(*a));
    a->conn_ceiling = conn_ceiling;
    a->rate_ceiling = rate_ceiling;
}

bool sl__aimd_decrease(struct sl__aimd *a, uint64_t req_epoch, unsigned inflight,
                       double observed_rate)
{
    unsigned cur;
    bool at_one = a->limit == 1;

    if (req_epoch != a->epoch)
        return false; /* sent before the last decrease */
    cur = a->limit ? a->limit : inflight;
    if (a->conn_ceiling > 0 && cur > a->conn_ceiling)
        cur = a->conn_ceiling;
    a->limit = cur / 2 > 0 ? cur / 2 : 1;
    a->acks = 0;
    if (a->rate == 0 && a->rate_ceiling == 0 && at_one && observed_rate > 0) {
        /* One connection is still too much and no rate limit was set:
         * impose one, from the pace the host has been seeing. */
        a->rate_top = observed_rate;
        a->rate = observed_rate;
    }
    if (a->rate > 0 || a->rate_ceiling > 0) {
        double r = a->rate > 0 ? a->rate : a->rate_ceiling;
        a->rate = r / 2 > 0.01 ? r / 2 : 0.01;
    }
    a->epoch++;
    return true;
}

bool sl__aimd_increase(struct sl__aimd *a)
{
    if (a->limit == 0 && a->rate == 0)
        return false;
    if (++a->acks < (a->limit ? a->limit : 1))
        return false;
    a->acks = 0;
    if (a->limit > 0) {
        a->limit++;
        if (a->conn_ceiling > 0 && a->limit >= a->conn_ceiling)
            a->limit = 0;
    }
    if (a->rate > 0) {
        double top = a->rate_ceiling > 0 ? a->rate_ceiling : a->rate_top;
        a->rate += top / 10;
        if (a->rate >= top) {
            a->rate = 0;
            a->rate_top = 0;
        }
    }
    return true;
}
