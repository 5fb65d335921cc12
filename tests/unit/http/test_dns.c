/*
 * test_dns.c -- the resolver and its cache: c-ares against a fake DNS server on 127.0.0.1,
 * TTLs on a fake loop clock, sharing of queries, cancellation, IP literals, /etc/hosts,
 * timeouts, freeing with work in flight, and the system resolver on the pool.
 *
 * The file under test is included so that its static helpers and private fields are
 * reachable (h2o t/00unit style).
 *
 * The fake server is a thread with a blocking poll() on its UDP socket and a wake-up pipe. It
 * answers A and AAAA queries for configured names (NXDOMAIN for unknown names), and can delay
 * or drop the answers of a name or fail them with an rcode; it counts queries per name and
 * type.
 */
#include "../../../http/dns.c"

#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- time ----------------------------------------------------------------------------------- */

static uint64_t real_ms(void)
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

/* A fake loop clock, in nanoseconds, that only moves when a test says so. */
static uint64_t fake_now_ns;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now_ns;
}

static void fake_clock_install(sl_loop_t *loop)
{
    struct timespec ts;

    /* Start at the real clock so that the loop's clock does not go backwards. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fake_now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    sl_loop_set_clock(loop, fake_clock, NULL);
}

static void fake_clock_advance(sl_loop_t *loop, uint64_t ms)
{
    fake_now_ns += ms * 1000000u;
    sl_loop_update_time(loop);
}

/* ---- the fake DNS server -------------------------------------------------------------------- */

#define T_A 1
#define T_AAAA 28
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3
#define FAKE_MAX_NAMES 32
#define FAKE_MAX_ADDRS 4
#define FAKE_MAX_PENDING 64

struct fake_name {
    char name[128];
    bool known; /* configured; unknown names only count queries */
    int n4, n6;
    struct in_addr v4[FAKE_MAX_ADDRS];
    struct in6_addr v6[FAKE_MAX_ADDRS];
    uint32_t ttl;
    unsigned delay_ms;
    bool drop;
    int rcode;
    unsigned queries_a, queries_aaaa;
};

struct fake_pending {
    uint64_t due_ms;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    size_t len;
    unsigned char buf[512];
};

static struct {
    int fd;
    uint16_t port;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mutex;
    struct fake_name names[FAKE_MAX_NAMES]; /* under mutex */
    int nnames;
    unsigned total;                                /* every query received */
    struct fake_pending pending[FAKE_MAX_PENDING]; /* server thread only */
    int npending;
    char servers[64];
} fake;

/* Find `name` (case-insensitive), adding an unknown entry if asked. Under the mutex. */
static struct fake_name *fake_find(const char *name, bool add)
{
    for (int i = 0; i < fake.nnames; i++)
        if (strcasecmp(fake.names[i].name, name) == 0)
            return &fake.names[i];
    if (!add || fake.nnames == FAKE_MAX_NAMES)
        return NULL;
    struct fake_name *n = &fake.names[fake.nnames++];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", name);
    return n;
}

/* Configure `name` with a comma-separated list of addresses (v4 and v6) and a TTL. */
static struct fake_name *fake_add(const char *name, const char *addrs, uint32_t ttl)
{
    char buf[256], *save = NULL;
    struct fake_name *n;

    pthread_mutex_lock(&fake.mutex);
    n = fake_find(name, true);
    ck_assert_ptr_nonnull(n);
    n->known = true;
    n->ttl = ttl;
    n->n4 = n->n6 = 0;
    snprintf(buf, sizeof(buf), "%s", addrs);
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (strchr(tok, ':') != NULL)
            ck_assert_int_eq(inet_pton(AF_INET6, tok, &n->v6[n->n6++]), 1);
        else
            ck_assert_int_eq(inet_pton(AF_INET, tok, &n->v4[n->n4++]), 1);
    }
    pthread_mutex_unlock(&fake.mutex);
    return n;
}

static void fake_set(const char *name, unsigned delay_ms, bool drop, int rcode)
{
    struct fake_name *n;

    pthread_mutex_lock(&fake.mutex);
    n = fake_find(name, true);
    n->known = true;
    n->delay_ms = delay_ms;
    n->drop = drop;
    n->rcode = rcode;
    pthread_mutex_unlock(&fake.mutex);
}

/* Queries received for `name` of type `qtype` (0: both). */
static unsigned fake_count(const char *name, int qtype)
{
    struct fake_name *n;
    unsigned c = 0;

    pthread_mutex_lock(&fake.mutex);
    n = fake_find(name, false);
    if (n != NULL)
        c = qtype == T_A      ? n->queries_a
            : qtype == T_AAAA ? n->queries_aaaa
                              : n->queries_a + n->queries_aaaa;
    pthread_mutex_unlock(&fake.mutex);
    return c;
}

static unsigned fake_total(void)
{
    unsigned c;

    pthread_mutex_lock(&fake.mutex);
    c = fake.total;
    pthread_mutex_unlock(&fake.mutex);
    return c;
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v & 0xffffu);
}

/* Build the answer to the query in `q` (`qlen` bytes) into `out`. Returns its length, 0 to
 * stay silent; sets *delay_ms. */
static size_t fake_answer(const unsigned char *q, size_t qlen, unsigned char *out,
                          unsigned *delay_ms)
{
    char name[256];
    size_t pos = 12, nlen = 0, len;
    unsigned qtype, ancount = 0;
    struct fake_name *n;
    int rcode = 0;

    *delay_ms = 0;
    if (qlen < 12 || ((q[4] << 8) | q[5]) != 1)
        return 0;
    while (pos < qlen && q[pos] != 0) { /* the question's labels, uncompressed */
        unsigned l = q[pos++];
        if (l > 63 || pos + l > qlen || nlen + l + 1 >= sizeof(name))
            return 0;
        if (nlen > 0)
            name[nlen++] = '.';
        memcpy(name + nlen, q + pos, l);
        nlen += l;
        pos += l;
    }
    name[nlen] = '\0';
    if (pos + 5 > qlen)
        return 0;
    pos++;
    qtype = (unsigned)(q[pos] << 8 | q[pos + 1]);
    pos += 4; /* end of the question */

    memcpy(out, q, pos);
    out[2] = (unsigned char)(0x80 | (q[2] & 0x79) | 0x04); /* QR, opcode, AA, RD */
    out[3] = 0x80;                                         /* RA */
    put16(out + 6, 0);
    put16(out + 8, 0);
    put16(out + 10, 0);
    len = pos;

    pthread_mutex_lock(&fake.mutex);
    fake.total++;
    n = fake_find(name, true);
    if (n == NULL) {
        pthread_mutex_unlock(&fake.mutex);
        return 0;
    }
    if (qtype == T_A)
        n->queries_a++;
    else if (qtype == T_AAAA)
        n->queries_aaaa++;
    if (!n->known) {
        rcode = RCODE_NXDOMAIN;
    } else if (n->drop) {
        pthread_mutex_unlock(&fake.mutex);
        return 0;
    } else if (n->rcode != 0) {
        rcode = n->rcode;
    } else {
        int count = qtype == T_A ? n->n4 : qtype == T_AAAA ? n->n6 : 0;
        for (int i = 0; i < count; i++) {
            unsigned char *rr = out + len;
            unsigned rdlen = qtype == T_A ? 4 : 16;

            put16(rr, 0xc00c); /* the question's name */
            put16(rr + 2, qtype);
            put16(rr + 4, 1); /* IN */
            put32(rr + 6, n->ttl);
            put16(rr + 10, rdlen);
            memcpy(rr + 12, qtype == T_A ? (const void *)&n->v4[i] : (const void *)&n->v6[i],
                   rdlen);
            len += 12 + rdlen;
            ancount++;
        }
    }
    *delay_ms = n->delay_ms;
    pthread_mutex_unlock(&fake.mutex);
    out[3] = (unsigned char)(out[3] | rcode);
    put16(out + 6, ancount);
    return len;
}

static void *fake_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = fake.fd, .events = POLLIN},
                              {.fd = fake.wake[0], .events = POLLIN}};
        uint64_t now = real_ms();
        int timeout = -1;

        for (int i = 0; i < fake.npending; i++) { /* send what is due */
            struct fake_pending *pd = &fake.pending[i];
            if (pd->due_ms <= now) {
                (void)sendto(fake.fd, pd->buf, pd->len, 0, (struct sockaddr *)&pd->peer,
                             pd->peerlen);
                fake.pending[i--] = fake.pending[--fake.npending];
            }
        }
        for (int i = 0; i < fake.npending; i++) {
            int t = (int)(fake.pending[i].due_ms - now);
            if (timeout < 0 || t < timeout)
                timeout = t;
        }
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            break;
        if (p[1].revents != 0)
            break;
        if (p[0].revents & POLLIN) {
            unsigned char q[512], out[512];
            struct fake_pending pd;
            unsigned delay;
            ssize_t n;

            pd.peerlen = sizeof(pd.peer);
            n = recvfrom(fake.fd, q, sizeof(q), 0, (struct sockaddr *)&pd.peer, &pd.peerlen);
            if (n <= 0)
                continue;
            pd.len = fake_answer(q, (size_t)n, out, &delay);
            if (pd.len == 0)
                continue;
            if (delay == 0 || fake.npending == FAKE_MAX_PENDING) {
                (void)sendto(fake.fd, out, pd.len, 0, (struct sockaddr *)&pd.peer, pd.peerlen);
                continue;
            }
            memcpy(pd.buf, out, pd.len);
            pd.due_ms = real_ms() + delay;
            fake.pending[fake.npending++] = pd;
        }
    }
    return NULL;
}

static void fake_start(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.mutex, NULL);
    fake.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fake.fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fake.fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fake.fd, (struct sockaddr *)&sin, &len), 0);
    fake.port = ntohs(sin.sin_port);
    snprintf(fake.servers, sizeof(fake.servers), "127.0.0.1:%u", (unsigned)fake.port);
    ck_assert_int_eq(pipe2(fake.wake, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&fake.thread, NULL, fake_thread, NULL), 0);
}

static void fake_stop(void)
{
    ck_assert_int_eq(write(fake.wake[1], "x", 1), 1);
    pthread_join(fake.thread, NULL);
    close(fake.wake[0]);
    close(fake.wake[1]);
    close(fake.fd);
    pthread_mutex_destroy(&fake.mutex);
}

/* ---- lookups that record their result ------------------------------------------------------- */

#define MAX_RESULT_ADDRS 8

struct res {
    sl__dns_lookup_t l;
    int calls;
    int status;
    size_t n;
    uint32_t ttl_s;
    uint64_t expires_ms;
    struct sockaddr_storage addrs[MAX_RESULT_ADDRS];
    /* optional action run by the callback */
    void (*then)(struct res *r);
    void *arg;
};

static bool in_resolve; /* set around sl__dns_resolve: no callback may run inside */
static int total_calls;

static void res_cb(sl__dns_lookup_t *l, int status, struct sl__addrlist *a)
{
    struct res *r = l->data;

    ck_assert(!in_resolve);
    ck_assert_ptr_eq(&r->l, l);
    r->calls++;
    total_calls++;
    r->status = status;
    r->n = 0;
    if (status == 0) {
        ck_assert_ptr_nonnull(a);
        ck_assert_uint_ge(a->n, 1);
        ck_assert_uint_ge(a->refs, 1);
        r->n = SL__MIN(a->n, (size_t)MAX_RESULT_ADDRS);
        memcpy(r->addrs, a->addrs, r->n * sizeof(a->addrs[0]));
        r->ttl_s = a->ttl_s;
        r->expires_ms = a->expires_ms;
    } else {
        ck_assert_ptr_null(a);
    }
    if (r->then != NULL)
        r->then(r);
}

static int resolve(struct sl__dns *d, struct res *r, const char *host, uint16_t port)
{
    int rc;

    r->l.data = r;
    in_resolve = true;
    rc = sl__dns_resolve(d, &r->l, host, port, res_cb);
    in_resolve = false;
    return rc;
}

static void resolve_ok(struct sl__dns *d, struct res *r, const char *host, uint16_t port)
{
    int calls = r->calls;

    ck_assert_int_eq(resolve(d, r, host, port), 0);
    ck_assert_int_eq(r->calls, calls); /* never inside the call */
}

/* Whether `r` holds `ip` (text) with `port`. */
static bool res_has(const struct res *r, const char *ip, uint16_t port)
{
    for (size_t i = 0; i < r->n; i++) {
        char buf[INET6_ADDRSTRLEN];
        const struct sockaddr_storage *ss = &r->addrs[i];

        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
            inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
            if (strcmp(buf, ip) == 0 && ntohs(sin->sin_port) == port)
                return true;
        } else if (ss->ss_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
            inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
            if (strcmp(buf, ip) == 0 && ntohs(sin6->sin6_port) == port)
                return true;
        }
    }
    return false;
}

/* Run the loop until `*counter >= target`, at most `max_ms` of real time. */
static void run_until(sl_loop_t *loop, const int *counter, int target, unsigned max_ms)
{
    uint64_t end = real_ms() + max_ms;

    while (*counter < target && real_ms() < end)
        ck_assert_int_ge(sl_loop_run_once(loop, 10), 0);
    ck_assert_int_ge(*counter, target);
}

/* Run the loop until nothing keeps it alive, at most `max_ms` of real time. */
static void run_idle(sl_loop_t *loop, unsigned max_ms)
{
    uint64_t end = real_ms() + max_ms;
    int active = 1;

    while (active > 0 && real_ms() < end) {
        active = sl_loop_run_once(loop, 10);
        ck_assert_int_ge(active, 0);
    }
    ck_assert_int_eq(active, 0);
}

/* Run the loop for `ms` of real time. */
static void run_for(sl_loop_t *loop, unsigned ms)
{
    uint64_t end = real_ms() + ms;

    while (real_ms() < end)
        ck_assert_int_ge(sl_loop_run_once(loop, 5), 0);
}

static struct sl__dns *dns_new_ok(sl_loop_t *loop, struct sl__dns_opts *o)
{
    struct sl__dns *d = NULL;

    o->servers = fake.servers;
    ck_assert_int_eq(sl__dns_new(loop, o, &d), 0);
    ck_assert_ptr_nonnull(d);
    return d;
}

static void stats_eq(struct sl__dns *d, uint64_t queries, uint64_t hits, uint64_t misses,
                     uint64_t negative_hits)
{
    struct sl__dns_stats st;

    sl__dns_stats(d, &st);
    ck_assert_uint_eq(st.queries, queries);
    ck_assert_uint_eq(st.hits, hits);
    ck_assert_uint_eq(st.misses, misses);
    ck_assert_uint_eq(st.negative_hits, negative_hits);
}

/* A getaddrinfo() that blocks its worker until the test lets it go. */
static atomic_int slow_started, slow_release, slow_calls;

static void setup(void)
{
    /* Without fork (CK_FORK=no, valgrind) globals outlive a test: reset them. */
    total_calls = 0;
    in_resolve = false;
    dns_getaddrinfo = getaddrinfo;
    atomic_store(&slow_started, 0);
    atomic_store(&slow_release, 0);
    atomic_store(&slow_calls, 0);
    unsetenv("SLUICE_THREADPOOL_SIZE");
    fake_start();
}

static void teardown(void)
{
    fake_stop();
}

/* ---- tests ---------------------------------------------------------------------------------- */

START_TEST(dns_resolves_a_and_aaaa)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("www.example.test", "192.0.2.1,192.0.2.2,2001:db8::1", 60);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    resolve_ok(d, &r, "www.example.test", 8443);
    run_until(&loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.n, 3);
    ck_assert(res_has(&r, "192.0.2.1", 8443));
    ck_assert(res_has(&r, "192.0.2.2", 8443));
    ck_assert(res_has(&r, "2001:db8::1", 8443));
    ck_assert_uint_eq(r.ttl_s, 60);
    ck_assert_uint_eq(fake_count("www.example.test", T_A), 1);
    ck_assert_uint_eq(fake_count("www.example.test", T_AAAA), 1);
    stats_eq(d, 1, 0, 1, 0);

    /* Another port, from the cache: same addresses, the new port. */
    resolve_ok(d, &r, "WWW.Example.TEST", 80);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.n, 3);
    ck_assert(res_has(&r, "192.0.2.1", 80));
    ck_assert(res_has(&r, "2001:db8::1", 80));
    stats_eq(d, 1, 1, 1, 0);
    ck_assert_uint_eq(fake_count("www.example.test", 0), 2);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_ttl_respected)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};
    uint64_t t0;

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_clock_install(&loop);
    fake_add("ttl.example.test", "192.0.2.10,2001:db8::10", 30);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    t0 = sl_loop_now(&loop);
    resolve_ok(d, &r, "ttl.example.test", 443);
    run_until(&loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.ttl_s, 30);
    ck_assert_uint_eq(r.expires_ms, t0 + 30000);
    ck_assert_uint_eq(fake_count("ttl.example.test", T_A), 1);

    /* Within the TTL: a hit, no query, still called back later. */
    fake_clock_advance(&loop, 29999);
    resolve_ok(d, &r, "ttl.example.test", 443);
    ck_assert_int_eq(r.calls, 1);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert(res_has(&r, "192.0.2.10", 443));
    ck_assert_uint_eq(fake_count("ttl.example.test", 0), 2);
    stats_eq(d, 1, 1, 1, 0);

    /* Past the TTL: a new query. */
    fake_clock_advance(&loop, 1);
    resolve_ok(d, &r, "ttl.example.test", 443);
    run_until(&loop, &r.calls, 3, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(fake_count("ttl.example.test", T_A), 2);
    ck_assert_uint_eq(fake_count("ttl.example.test", T_AAAA), 2);
    stats_eq(d, 2, 1, 2, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* Resolve `name` at fake times: a hit until `hit_until_ms` after the first answer, a query
 * from `requery_at_ms` on. */
static void check_effective_ttl(sl_loop_t *loop, struct sl__dns *d, const char *name,
                                uint64_t hit_until_ms, uint64_t requery_at_ms)
{
    struct res r = {0};
    unsigned q0 = fake_count(name, T_A);
    uint64_t t0 = sl_loop_now(loop);

    resolve_ok(d, &r, name, 80);
    run_until(loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.expires_ms, t0 + requery_at_ms);
    ck_assert_uint_eq(fake_count(name, T_A), q0 + 1);

    fake_clock_advance(loop, hit_until_ms);
    resolve_ok(d, &r, name, 80);
    run_until(loop, &r.calls, 2, 5000);
    ck_assert_uint_eq(fake_count(name, T_A), q0 + 1);

    fake_clock_advance(loop, requery_at_ms - hit_until_ms);
    resolve_ok(d, &r, name, 80);
    run_until(loop, &r.calls, 3, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(fake_count(name, T_A), q0 + 2);
}

START_TEST(dns_ttl_capped_and_floored)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_clock_install(&loop);
    fake_add("long.example.test", "192.0.2.20", 3600);
    fake_add("short.example.test", "192.0.2.21", 1);
    sl__dns_opts_init(&o);
    o.cache_max_ttl_s = 10;
    o.cache_min_ttl_s = 4;
    d = dns_new_ok(&loop, &o);

    check_effective_ttl(&loop, d, "long.example.test", 9999, 10000); /* capped: 10 s */
    check_effective_ttl(&loop, d, "short.example.test", 3999, 4000); /* floored: 4 s */

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_max_ttl_zero_disables_cache)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("nocache.example.test", "192.0.2.30", 600);
    sl__dns_opts_init(&o);
    o.cache_max_ttl_s = 0;
    o.cache_min_ttl_s = 100; /* the cap wins */
    d = dns_new_ok(&loop, &o);

    for (int i = 1; i <= 3; i++) {
        resolve_ok(d, &r, "nocache.example.test", 80);
        run_until(&loop, &r.calls, i, 5000);
        ck_assert_int_eq(r.status, 0);
        ck_assert_uint_eq(fake_count("nocache.example.test", T_A), (unsigned)i);
    }
    /* Negative answers are not cached either. */
    for (int i = 1; i <= 2; i++) {
        resolve_ok(d, &r, "nx-nocache.example.test", 80);
        run_until(&loop, &r.calls, 3 + i, 5000);
        ck_assert_int_eq(r.status, SL_EDNS);
        ck_assert_uint_eq(fake_count("nx-nocache.example.test", T_A), (unsigned)i);
    }
    stats_eq(d, 5, 0, 5, 0);
    ck_assert_uint_eq(d->nentries, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_negative_cached)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_clock_install(&loop);
    fake_add("empty.example.test", "", 60); /* exists, no address: NOERROR, no answers */
    sl__dns_opts_init(&o);
    o.negative_ttl_s = 5;
    d = dns_new_ok(&loop, &o);

    /* NXDOMAIN */
    resolve_ok(d, &r, "nx.example.test", 80);
    run_until(&loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, SL_EDNS);
    ck_assert_uint_eq(fake_count("nx.example.test", T_A), 1);

    fake_clock_advance(&loop, 4999);
    resolve_ok(d, &r, "nx.example.test", 80);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, SL_EDNS);
    ck_assert_uint_eq(fake_count("nx.example.test", T_A), 1);
    stats_eq(d, 1, 0, 1, 1);

    fake_clock_advance(&loop, 1);
    resolve_ok(d, &r, "nx.example.test", 80);
    run_until(&loop, &r.calls, 3, 5000);
    ck_assert_int_eq(r.status, SL_EDNS);
    ck_assert_uint_eq(fake_count("nx.example.test", T_A), 2);
    stats_eq(d, 2, 0, 2, 1);

    /* A name without addresses is cached negatively too. */
    resolve_ok(d, &r, "empty.example.test", 80);
    run_until(&loop, &r.calls, 4, 5000);
    ck_assert_int_eq(r.status, SL_EDNS);
    resolve_ok(d, &r, "empty.example.test", 80);
    run_until(&loop, &r.calls, 5, 5000);
    ck_assert_int_eq(r.status, SL_EDNS);
    ck_assert_uint_eq(fake_count("empty.example.test", T_A), 1);
    stats_eq(d, 3, 0, 3, 2);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_negative_ttl_zero_not_cached)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    o.negative_ttl_s = 0;
    d = dns_new_ok(&loop, &o);
    for (int i = 1; i <= 2; i++) {
        resolve_ok(d, &r, "nx0.example.test", 80);
        run_until(&loop, &r.calls, i, 5000);
        ck_assert_int_eq(r.status, SL_EDNS);
        ck_assert_uint_eq(fake_count("nx0.example.test", T_A), (unsigned)i);
    }
    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_concurrent_lookups_share_one_query)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r[10];

    memset(r, 0, sizeof(r));
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("shared.example.test", "192.0.2.40,2001:db8::40", 60);
    fake_set("shared.example.test", 50, false, 0);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    for (int i = 0; i < 10; i++)
        resolve_ok(d, &r[i], "shared.example.test", i % 2 ? 443 : 80);
    run_until(&loop, &total_calls, 10, 5000);
    for (int i = 0; i < 10; i++) {
        uint16_t port = i % 2 ? 443 : 80;

        ck_assert_int_eq(r[i].calls, 1);
        ck_assert_int_eq(r[i].status, 0);
        ck_assert_uint_eq(r[i].n, 2);
        ck_assert(res_has(&r[i], "192.0.2.40", port));
        ck_assert(res_has(&r[i], "2001:db8::40", port));
    }
    ck_assert_uint_eq(fake_count("shared.example.test", T_A), 1);
    ck_assert_uint_eq(fake_count("shared.example.test", T_AAAA), 1);
    stats_eq(d, 1, 0, 10, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_cancel_before_answer)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r[3], lone = {0}, again = {0};

    memset(r, 0, sizeof(r));
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("cancel.example.test", "192.0.2.50", 60);
    fake_set("cancel.example.test", 100, false, 0);
    fake_add("orphan.example.test", "192.0.2.51", 60);
    fake_set("orphan.example.test", 100, false, 0);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    for (int i = 0; i < 3; i++)
        resolve_ok(d, &r[i], "cancel.example.test", 80);
    run_for(&loop, 20); /* the query is out, the answer is not */
    ck_assert_int_eq(total_calls, 0);
    sl__dns_cancel(&r[1].l);
    sl__dns_cancel(&r[1].l); /* twice is harmless */

    /* Nobody waits for this one any more: the query goes on and fills the cache. */
    resolve_ok(d, &lone, "orphan.example.test", 80);
    sl__dns_cancel(&lone.l);

    run_until(&loop, &total_calls, 2, 5000);
    run_idle(&loop, 5000);
    ck_assert_int_eq(r[0].calls, 1);
    ck_assert_int_eq(r[1].calls, 0);
    ck_assert_int_eq(r[2].calls, 1);
    ck_assert_int_eq(lone.calls, 0);
    ck_assert_int_eq(r[0].status, 0);
    ck_assert(res_has(&r[2], "192.0.2.50", 80));

    resolve_ok(d, &again, "orphan.example.test", 80);
    run_until(&loop, &again.calls, 1, 5000);
    ck_assert_int_eq(again.status, 0);
    ck_assert(res_has(&again, "192.0.2.51", 80));
    ck_assert_uint_eq(fake_count("orphan.example.test", T_A), 1);

    /* The cancelled lookup is reusable. */
    resolve_ok(d, &r[1], "cancel.example.test", 81);
    run_until(&loop, &r[1].calls, 1, 5000);
    ck_assert(res_has(&r[1], "192.0.2.50", 81));

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static void cancel_other(struct res *r)
{
    sl__dns_cancel(&((struct res *)r->arg)->l);
}

START_TEST(dns_cancel_inside_callback)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res a = {0}, b = {0}, c = {0}, slow = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("cb.example.test", "192.0.2.60", 60);
    fake_add("slow.example.test", "192.0.2.61", 60);
    fake_set("slow.example.test", 200, false, 0);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    /* a and b complete in the same batch; a cancels b, which was already answered. */
    a.then = cancel_other;
    a.arg = &b;
    resolve_ok(d, &a, "cb.example.test", 80);
    resolve_ok(d, &b, "cb.example.test", 80);
    /* c's callback cancels a lookup still waiting for its (slow) query. */
    c.then = cancel_other;
    c.arg = &slow;
    resolve_ok(d, &slow, "slow.example.test", 80);
    resolve_ok(d, &c, "cb.example.test", 80);

    run_until(&loop, &c.calls, 1, 5000);
    run_idle(&loop, 5000);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 0);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(slow.calls, 0);
    ck_assert_int_eq(total_calls, 2);

    /* Cache hits cancelled inside a callback of the same batch. */
    a.then = cancel_other;
    a.arg = &b;
    resolve_ok(d, &a, "cb.example.test", 80);
    resolve_ok(d, &b, "cb.example.test", 80);
    run_idle(&loop, 5000);
    ck_assert_int_eq(a.calls, 2);
    ck_assert_int_eq(b.calls, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_ip_literals)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res v4 = {0}, v6 = {0}, br = {0}, zone = {0}, badzone = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    resolve_ok(d, &v4, "127.0.0.1", 8080);
    resolve_ok(d, &v6, "::1", 8081);
    resolve_ok(d, &br, "[::1]", 8082);
    resolve_ok(d, &zone, "fe80::1%1", 8083);
    resolve_ok(d, &badzone, "fe80::1%no-such-interface0", 8084);
    ck_assert_int_eq(total_calls, 0);
    run_until(&loop, &total_calls, 5, 5000);

    ck_assert_int_eq(v4.status, 0);
    ck_assert_uint_eq(v4.n, 1);
    ck_assert(res_has(&v4, "127.0.0.1", 8080));
    ck_assert_int_eq(v6.status, 0);
    ck_assert(res_has(&v6, "::1", 8081));
    ck_assert(res_has(&br, "::1", 8082));
    ck_assert_int_eq(zone.status, 0);
    ck_assert(res_has(&zone, "fe80::1", 8083));
    ck_assert_uint_eq(((struct sockaddr_in6 *)&zone.addrs[0])->sin6_scope_id, 1);
    ck_assert_int_eq(badzone.status, SL_EDNS);
    ck_assert_uint_eq(fake_total(), 0);
    stats_eq(d, 0, 0, 0, 0);

    /* Bad arguments fail in the call. */
    ck_assert_int_eq(resolve(d, &v4, "", 80), SL_EINVAL);
    {
        char big[300];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(resolve(d, &v4, big, 80), SL_EINVAL);
    }
    run_idle(&loop, 5000);
    ck_assert_int_eq(v4.calls, 1);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_localhost_from_hosts_file)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    /* c-ares answers from /etc/hosts inside ares_getaddrinfo(); we still call back later. */
    resolve_ok(d, &r, "localhost", 8080);
    run_until(&loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, 0);
    ck_assert(res_has(&r, "127.0.0.1", 8080) || res_has(&r, "::1", 8080));
    resolve_ok(d, &r, "LocalHost", 8080);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, 0);
    run_idle(&loop, 5000);
    ck_assert_uint_eq(fake_total(), 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_timeout)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};
    uint64_t t0, elapsed;

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("drop.example.test", "192.0.2.70", 60);
    fake_set("drop.example.test", 0, true, 0);
    sl__dns_opts_init(&o);
    o.timeout_ms = 200;
    o.tries = 2;
    d = dns_new_ok(&loop, &o);

    t0 = real_ms();
    resolve_ok(d, &r, "drop.example.test", 80);
    run_until(&loop, &r.calls, 1, 3000);
    elapsed = real_ms() - t0;
    ck_assert_int_eq(r.status, SL_ETIMEDOUT);
    ck_assert_uint_ge(elapsed, 200);
    ck_assert_uint_le(elapsed, 1200); /* 200 ms, then 400 ms: c-ares doubles per round */
    ck_assert_uint_eq(fake_count("drop.example.test", T_A), 2);
    run_idle(&loop, 5000); /* no socket or timer left behind */

    /* A timeout is not cached. */
    fake_set("drop.example.test", 0, false, 0);
    resolve_ok(d, &r, "drop.example.test", 80);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_server_failure)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("fail.example.test", "192.0.2.80", 60);
    fake_set("fail.example.test", 0, false, RCODE_SERVFAIL);
    sl__dns_opts_init(&o);
    o.tries = 1;
    d = dns_new_ok(&loop, &o);

    resolve_ok(d, &r, "fail.example.test", 80);
    run_until(&loop, &r.calls, 1, 5000);
    ck_assert_int_eq(r.status, SL_EDNS_SERVER);
    resolve_ok(d, &r, "fail.example.test", 80); /* not cached */
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, SL_EDNS_SERVER);
    ck_assert_uint_eq(fake_count("fail.example.test", T_A), 2);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_flush_and_eviction)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r = {0}, r2 = {0}, r3 = {0};
    const char *names[] = {"e1.example.test", "e2.example.test", "e3.example.test"};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    for (int i = 0; i < 3; i++)
        fake_add(names[i], "192.0.2.90", 60);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    resolve_ok(d, &r, names[0], 80);
    run_until(&loop, &r.calls, 1, 5000);
    sl__dns_flush(d, "E1.example.test");
    resolve_ok(d, &r, names[0], 80);
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_uint_eq(fake_count(names[0], T_A), 2);
    sl__dns_flush(d, NULL);
    ck_assert_uint_eq(d->nentries, 0);

    /* Over the cap, the oldest entry goes. */
    d->max_entries = 2;
    for (int i = 0; i < 3; i++) {
        resolve_ok(d, &r, names[i], 80);
        run_until(&loop, &r.calls, 3 + i, 5000);
    }
    ck_assert_uint_eq(d->nentries, 2);
    resolve_ok(d, &r2, names[2], 80); /* still cached */
    resolve_ok(d, &r3, names[0], 80); /* evicted */
    run_until(&loop, &total_calls, 7, 5000);
    ck_assert_int_eq(r2.status, 0);
    ck_assert_int_eq(r3.status, 0);
    ck_assert_uint_eq(fake_count(names[2], T_A), 1);
    ck_assert_uint_eq(fake_count(names[0], T_A), 4);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_free_with_lookups_in_flight)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d;
    struct res r[4], hit = {0}, hit2 = {0}, hit3 = {0};

    memset(r, 0, sizeof(r));
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("cached.example.test", "192.0.2.100", 60);
    fake_add("inflight.example.test", "192.0.2.101,2001:db8::101", 60);
    fake_set("inflight.example.test", 300, false, 0);
    fake_set("nx-inflight.example.test", 300, false, RCODE_NXDOMAIN);
    sl__dns_opts_init(&o);
    d = dns_new_ok(&loop, &o);

    resolve_ok(d, &hit, "cached.example.test", 80);
    run_until(&loop, &hit.calls, 1, 5000);

    for (int i = 0; i < 3; i++)
        resolve_ok(d, &r[i], "inflight.example.test", 80);
    resolve_ok(d, &r[3], "nx-inflight.example.test", 80);
    run_for(&loop, 30); /* the queries are out */
    ck_assert_int_gt(fake_count("inflight.example.test", 0), 0);
    resolve_ok(d, &hit2, "cached.example.test", 80); /* hits waiting for their callback */
    resolve_ok(d, &hit3, "cached.example.test", 81);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    run_for(&loop, 400); /* the late answers go nowhere */
    ck_assert_int_eq(total_calls, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static struct sl__dns *free_target;

static void free_resolver(struct res *r)
{
    (void)r;
    sl__dns_free(free_target);
}

START_TEST(dns_free_inside_callback)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct res r[3];

    memset(r, 0, sizeof(r));
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_add("freecb.example.test", "192.0.2.110", 60);
    sl__dns_opts_init(&o);
    free_target = dns_new_ok(&loop, &o);

    r[0].then = free_resolver;
    for (int i = 0; i < 3; i++)
        resolve_ok(free_target, &r[i], "freecb.example.test", 80);
    run_until(&loop, &r[0].calls, 1, 5000);
    run_idle(&loop, 5000);
    ck_assert_int_eq(total_calls, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_system_resolver_localhost)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d = NULL;
    struct res r = {0};

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fake_clock_install(&loop);
    sl__dns_opts_init(&o);
    o.kind = SL__RESOLVER_SYSTEM;
    o.system_ttl_s = 60;
    ck_assert_int_eq(sl__dns_new(&loop, &o, &d), 0);

    resolve_ok(d, &r, "localhost", 8080);
    run_until(&loop, &r.calls, 1, 10000);
    ck_assert_int_eq(r.status, 0);
    ck_assert(res_has(&r, "127.0.0.1", 8080) || res_has(&r, "::1", 8080));
    ck_assert_uint_eq(r.ttl_s, 60);
    stats_eq(d, 1, 0, 1, 0);

    resolve_ok(d, &r, "localhost", 8080); /* cached */
    run_until(&loop, &r.calls, 2, 5000);
    ck_assert_int_eq(r.status, 0);
    stats_eq(d, 1, 1, 1, 0);

    fake_clock_advance(&loop, 60000); /* system_ttl_s later: asked again */
    resolve_ok(d, &r, "localhost", 8080);
    run_until(&loop, &r.calls, 3, 10000);
    ck_assert_int_eq(r.status, 0);
    stats_eq(d, 2, 1, 2, 0);

    sl__dns_free(d);
    run_idle(&loop, 5000);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static int slow_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res)
{
    uint64_t end = real_ms() + 10000;

    atomic_fetch_add(&slow_calls, 1);
    atomic_store(&slow_started, 1);
    while (!atomic_load(&slow_release) && real_ms() < end)
        sleep_ms(1);
    return getaddrinfo(node, service, hints, res);
}

START_TEST(dns_system_free_while_job_runs)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d = NULL;
    struct res running = {0}, queued = {0}, joined = {0};
    uint64_t end;

    /* One worker: the first job runs (and blocks), the second waits in the queue. */
    setenv("SLUICE_THREADPOOL_SIZE", "1", 1);
    dns_getaddrinfo = slow_getaddrinfo;
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    o.kind = SL__RESOLVER_SYSTEM;
    ck_assert_int_eq(sl__dns_new(&loop, &o, &d), 0);

    resolve_ok(d, &running, "localhost", 80);
    resolve_ok(d, &joined, "localhost", 80);
    resolve_ok(d, &queued, "localhost.localdomain", 80);
    end = real_ms() + 5000;
    while (!atomic_load(&slow_started) && real_ms() < end)
        sleep_ms(1);
    ck_assert(atomic_load(&slow_started));

    sl__dns_free(d); /* one job running, one queued */
    atomic_store(&slow_release, 1);
    run_idle(&loop, 10000);
    ck_assert_int_eq(total_calls, 0);
    ck_assert_int_eq(atomic_load(&slow_calls), 1); /* the queued job was cancelled */
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(dns_system_free_then_loop_close)
{
    /* sl_loop_close() itself waits for a detached job and runs its after_work. */
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d = NULL;
    struct res r = {0};
    uint64_t end;

    dns_getaddrinfo = slow_getaddrinfo;
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    o.kind = SL__RESOLVER_SYSTEM;
    ck_assert_int_eq(sl__dns_new(&loop, &o, &d), 0);
    resolve_ok(d, &r, "localhost", 80);
    end = real_ms() + 5000;
    while (!atomic_load(&slow_started) && real_ms() < end)
        sleep_ms(1);
    sl__dns_free(d);
    atomic_store(&slow_release, 1);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    ck_assert_int_eq(total_calls, 0);
}
END_TEST

START_TEST(dns_new_rejects_bad_servers)
{
    sl_loop_t loop;
    struct sl__dns_opts o;
    struct sl__dns *d = NULL;

    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__dns_opts_init(&o);
    o.servers = "not an address";
    ck_assert_int_eq(sl__dns_new(&loop, &o, &d), SL_EINVAL);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(sl__dns_new(&loop, NULL, &d), 0); /* the system configuration */
    sl__dns_free(d);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static Suite *dns_suite(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = tcase_create("dns");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, dns_resolves_a_and_aaaa);
    tcase_add_test(tc, dns_ttl_respected);
    tcase_add_test(tc, dns_ttl_capped_and_floored);
    tcase_add_test(tc, dns_max_ttl_zero_disables_cache);
    tcase_add_test(tc, dns_negative_cached);
    tcase_add_test(tc, dns_negative_ttl_zero_not_cached);
    tcase_add_test(tc, dns_concurrent_lookups_share_one_query);
    tcase_add_test(tc, dns_cancel_before_answer);
    tcase_add_test(tc, dns_cancel_inside_callback);
    tcase_add_test(tc, dns_ip_literals);
    tcase_add_test(tc, dns_localhost_from_hosts_file);
    tcase_add_test(tc, dns_timeout);
    tcase_add_test(tc, dns_server_failure);
    tcase_add_test(tc, dns_flush_and_eviction);
    tcase_add_test(tc, dns_free_with_lookups_in_flight);
    tcase_add_test(tc, dns_free_inside_callback);
    tcase_add_test(tc, dns_system_resolver_localhost);
    tcase_add_test(tc, dns_system_free_while_job_runs);
    tcase_add_test(tc, dns_system_free_then_loop_close);
    tcase_add_test(tc, dns_new_rejects_bad_servers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dns_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
