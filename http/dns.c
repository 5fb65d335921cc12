/*
 * dns.c -- name resolution with a TTL cache, on the loop.
 *
 * Model. A resolver owns a hash table of entries keyed by the lower-cased host. An entry holds
 * either a cached answer (a shared sl__addrlist, or a negative status) or a query in flight with
 * its list of waiting lookups, never both: a query starts only once the cached answer is gone,
 * so concurrent lookups of one name join the one query. Cached entries also sit on an age list
 * (oldest first), from which expired entries are evicted lazily and the oldest ones once the
 * table holds DNS_CACHE_MAX_ENTRIES.
 *
 * c-ares runs on the loop: its sockets are watchers (ARES_OPT_SOCK_STATE_CB keeps a small
 * socket table current) and its timeouts one wheel timer, re-armed from ares_timeout() after
 * every call into c-ares. The system resolver runs getaddrinfo() on the loop's thread pool.
 *
 * Callbacks. c-ares callbacks and after_work callbacks never call the user: they file each
 * waiter, with its result, on the `done` list and start one deferred callback, which calls the
 * users outside any c-ares frame. So a user callback may do anything, free the resolver
 * included, and no callback ever runs inside sl__dns_resolve() (c-ares answers /etc/hosts
 * names from inside ares_getaddrinfo()).
 */
#include "dns.h"
#include "reactor-int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define DNS_HOST_MAX 255
#define DNS_CACHE_MAX_ENTRIES 4096
#define DNS_TABLE_MIN 16

enum lookup_state {
    LOOKUP_IDLE = 0,
    LOOKUP_WAITING, /* on its entry's waiters, for a query */
    LOOKUP_DONE,    /* on dns->done (or dns->running), result stored, callback not yet run */
};

/* The only place that assigns a lookup's state. */
static void lookup_set_state(sl__dns_lookup_t *l, enum lookup_state s)
{
    l->state = (uint8_t)s;
}

struct dns_query;

struct dns_entry {
    struct dns_entry *hash_next;
    struct sl__queue age_node;  /* on dns->age while cached */
    struct sl__queue waiters;   /* LOOKUP_WAITING lookups, in arrival order */
    struct dns_query *query;    /* in flight, or NULL */
    struct sl__addrlist *addrs; /* cached positive answer, or NULL */
    int neg_status;             /* cached negative answer (SL_EDNS), or 0 */
    uint64_t expires_ms;        /* loop clock, while cached */
    uint32_t hash;
    char host[];
};

/* One query in flight. For the system resolver it is also what outlives the resolver when
 * sl__dns_free() runs while a worker holds it: `dns` is then NULL and after_work frees it. */
struct dns_query {
    struct sl__dns *dns;
    struct dns_entry *entry;
    sl_work_t work;
    struct addrinfo *res; /* system: written by the worker */
    int gai_rc;
    int gai_errno;
    char host[];
};

/* A c-ares socket and its watcher; allocated so that the watcher never moves. */
struct dns_sock {
    sl_io_t io;
    struct sl__dns *dns;
};

struct sl__dns {
    sl_loop_t *loop;
    struct sl__dns_opts opts; /* `servers` is not kept */
    ares_channel channel;     /* NULL for the system resolver, and for c-ares until its
                               * first query (see dns_query_start()) */
    sl_timer_t timer;         /* c-ares timeouts */
    sl_defer_t defer;         /* runs the callbacks of `done` */
    struct dns_sock **socks;
    size_t nsocks, socks_cap;
    struct dns_entry **buckets;
    size_t nbuckets, nentries, max_entries;
    struct sl__queue age;     /* cached entries, oldest first */
    struct sl__queue done;    /* LOOKUP_DONE lookups waiting for the deferred callback */
    struct sl__queue running; /* the batch the deferred callback is calling back */
    bool *dispatch_freed;     /* set by sl__dns_free() called from a lookup callback */
    struct sl__dns_stats stats;
};

/* The system resolver's getaddrinfo(); a seam for tests (called on a worker). */
static int (*dns_getaddrinfo)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **) = getaddrinfo;

/* ---- errors --------------------------------------------------------------------------------- */

/* The one boundary where c-ares status codes become SL_E* codes. */
static int dns_ares_error(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
    case ARES_EBADNAME:
    case ARES_ENONAME:
        return SL_EDNS;
    case ARES_ETIMEOUT:
        return SL_ETIMEDOUT;
    case ARES_ENOMEM:
        return SL_ENOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return SL_ECANCELED;
    default: /* SERVFAIL, REFUSED, FORMERR, NOTIMP, bad response, connection refused... */
        return SL_EDNS_SERVER;
    }
}

/* The same for getaddrinfo(). */
static int dns_gai_error(int rc, int err)
{
    switch (rc) {
    case 0:
        return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return SL_EDNS;
    case EAI_MEMORY:
        return SL_ENOMEM;
    case EAI_SYSTEM:
        return err > 0 ? sl_translate_errno(err) : SL_EDNS_SERVER;
    default: /* EAI_AGAIN, EAI_FAIL */
        return SL_EDNS_SERVER;
    }
}

/* ---- address lists -------------------------------------------------------------------------- */

static struct sl__addrlist *addrlist_new(size_t n)
{
    struct sl__addrlist *a = calloc(1, sizeof(*a) + n * sizeof(a->addrs[0]));

    if (a == NULL)
        return NULL;
    a->refs = 1;
    return a;
}

struct sl__addrlist *sl__addrlist_retain(struct sl__addrlist *a)
{
    if (a != NULL)
        a->refs++;
    return a;
}

void sl__addrlist_release(struct sl__addrlist *a)
{
    if (a == NULL)
        return;
    assert(a->refs > 0);
    if (--a->refs == 0)
        free(a);
}

static void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t addrlist_port(const struct sl__addrlist *a)
{
    const struct sockaddr_storage *ss = &a->addrs[0];

    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A new reference to a list equal to `a` but carrying `port`: `a` itself when it already
 * does, else a copy. NULL when out of memory. */
static struct sl__addrlist *addrlist_with_port(struct sl__addrlist *a, uint16_t port)
{
    struct sl__addrlist *c;

    if (addrlist_port(a) == port)
        return sl__addrlist_retain(a);
    c = addrlist_new(a->n);
    if (c == NULL)
        return NULL;
    c->ttl_s = a->ttl_s;
    c->n = a->n;
    c->expires_ms = a->expires_ms;
    memcpy(c->addrs, a->addrs, a->n * sizeof(a->addrs[0]));
    for (size_t i = 0; i < c->n; i++)
        sockaddr_set_port(&c->addrs[i], port);
    return c;
}

/* Append `sa` to `a` (which has room) unless it is not an IP address or is already there:
 * resolvers repeat addresses (an /etc/hosts name on two lines, A records twice). */
static void addrlist_append(struct sl__addrlist *a, const struct sockaddr *sa, size_t len,
                            uint16_t port)
{
    struct sockaddr_storage ss;

    if ((sa->sa_family != AF_INET || len < sizeof(struct sockaddr_in)) &&
        (sa->sa_family != AF_INET6 || len < sizeof(struct sockaddr_in6)))
        return;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, sa,
           sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    sockaddr_set_port(&ss, port);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(&a->addrs[i], &ss, sizeof(ss)) == 0)
            return;
    a->addrs[a->n++] = ss;
}

/* Build the list of a c-ares answer: its TTL is the smallest of its records and CNAMEs. */
static int addrlist_from_ares(const struct ares_addrinfo *ai, uint16_t port,
                              struct sl__addrlist **out)
{
    const struct ares_addrinfo_node *node;
    const struct ares_addrinfo_cname *cn;
    struct sl__addrlist *a;
    uint32_t ttl = UINT32_MAX;
    size_t n = 0;

    for (node = ai->nodes; node != NULL; node = node->ai_next)
        n++;
    if (n == 0)
        return SL_EDNS;
    a = addrlist_new(n);
    if (a == NULL)
        return SL_ENOMEM;
    for (node = ai->nodes; node != NULL; node = node->ai_next) {
        size_t before = a->n;

        addrlist_append(a, node->ai_addr, node->ai_addrlen, port);
        if (a->n > before)
            ttl = SL__MIN(ttl, node->ai_ttl > 0 ? (uint32_t)node->ai_ttl : 0u);
    }
    for (cn = ai->cnames; cn != NULL; cn = cn->next)
        ttl = SL__MIN(ttl, cn->ttl > 0 ? (uint32_t)cn->ttl : 0u);
    if (a->n == 0) {
        free(a);
        return SL_EDNS;
    }
    a->ttl_s = ttl;
    *out = a;
    return 0;
}

static int addrlist_from_gai(const struct addrinfo *res, uint16_t port, uint32_t ttl,
                             struct sl__addrlist **out)
{
    const struct addrinfo *ai;
    struct sl__addrlist *a;
    size_t n = 0;

    for (ai = res; ai != NULL; ai = ai->ai_next)
        n++;
    if (n == 0)
        return SL_EDNS;
    a = addrlist_new(n);
    if (a == NULL)
        return SL_ENOMEM;
    for (ai = res; ai != NULL; ai = ai->ai_next)
        addrlist_append(a, ai->ai_addr, ai->ai_addrlen, port);
    if (a->n == 0) {
        free(a);
        return SL_EDNS;
    }
    a->ttl_s = ttl;
    *out = a;
    return 0;
}

/*
 * An IPv4 or IPv6 literal, the latter possibly in brackets and with a %zone (name or number).
 * Returns 0 (not a literal), 1 with *out set, SL_EDNS (unknown zone) or SL_ENOMEM.
 */
static int dns_literal(const char *host, uint16_t port, struct sl__addrlist **out)
{
    char buf[DNS_HOST_MAX + 1];
    size_t len = strlen(host);
    struct sockaddr_storage ss;
    struct sl__addrlist *a;
    char *zone;

    memset(&ss, 0, sizeof(ss));
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    memcpy(buf, host, len);
    buf[len] = '\0';

    zone = strchr(buf, '%');
    if (zone == NULL && inet_pton(AF_INET, buf, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        if (zone != NULL)
            *zone++ = '\0';
        if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
            return 0;
        ss.ss_family = AF_INET6;
        if (zone != NULL) {
            char *end;
            unsigned long idx = strtoul(zone, &end, 10);

            if (*zone == '\0' || *end != '\0' || idx > UINT32_MAX)
                idx = if_nametoindex(zone);
            if (idx == 0)
                return SL_EDNS;
            sin6->sin6_scope_id = (uint32_t)idx;
        }
    }

    a = addrlist_new(1);
    if (a == NULL)
        return SL_ENOMEM;
    sockaddr_set_port(&ss, port);
    a->addrs[0] = ss;
    a->n = 1;
    a->ttl_s = 0;
    a->expires_ms = UINT64_MAX; /* a literal never goes stale */
    *out = a;
    return 1;
}

/* ---- the cache ------------------------------------------------------------------------------ */

static uint32_t dns_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* The cache key: `host` with ASCII letters lower-cased (DNS names compare case-insensitively). */
static void dns_key(const char *host, size_t len, char *key)
{
    for (size_t i = 0; i < len; i++)
        key[i] = (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] - 'A' + 'a') : host[i];
    key[len] = '\0';
}

static bool entry_cached(const struct dns_entry *e)
{
    return e->addrs != NULL || e->neg_status != 0;
}

static struct dns_entry *cache_find(const struct sl__dns *d, const char *key, uint32_t h)
{
    struct dns_entry *e = d->buckets[h & (d->nbuckets - 1)];

    for (; e != NULL; e = e->hash_next)
        if (e->hash == h && strcmp(e->host, key) == 0)
            return e;
    return NULL;
}

/* Double the table. On failure the chains just get longer. */
static void cache_grow(struct sl__dns *d)
{
    size_t n = d->nbuckets * 2;
    struct dns_entry **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < d->nbuckets; i++) {
        struct dns_entry *e = d->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->hash_next;
            e->hash_next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

static struct dns_entry *entry_new(struct sl__dns *d, const char *key, size_t len, uint32_t h)
{
    struct dns_entry *e;
    size_t slot;

    if (d->nentries >= d->nbuckets)
        cache_grow(d);
    e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    sl__queue_init(&e->age_node);
    sl__queue_init(&e->waiters);
    memcpy(e->host, key, len + 1);
    e->hash = h;
    slot = h & (d->nbuckets - 1);
    e->hash_next = d->buckets[slot];
    d->buckets[slot] = e;
    d->nentries++;
    return e;
}

/* Unlink and free an entry that is neither cached nor busy. */
static void entry_free(struct sl__dns *d, struct dns_entry *e)
{
    struct dns_entry **pp = &d->buckets[e->hash & (d->nbuckets - 1)];

    assert(e->query == NULL && !entry_cached(e) && sl__queue_empty(&e->waiters));
    while (*pp != e)
        pp = &(*pp)->hash_next;
    *pp = e->hash_next;
    d->nentries--;
    free(e);
}

/* Forget a cached answer. A cached entry has no query, so this frees it. */
static void entry_drop(struct sl__dns *d, struct dns_entry *e)
{
    sl__addrlist_release(e->addrs);
    e->addrs = NULL;
    e->neg_status = 0;
    sl__queue_remove(&e->age_node);
    entry_free(d, e);
}

/* Make room before caching one more answer: expired entries at the old end of the age list
 * go first (an approximation: the list is in order of caching, not of expiry), then the
 * oldest while the table is over its cap. Busy entries are never on the age list. */
static void cache_evict(struct sl__dns *d)
{
    uint64_t now = sl_loop_now(d->loop);

    while (!sl__queue_empty(&d->age)) {
        struct dns_entry *e = sl__queue_data(d->age.next, struct dns_entry, age_node);

        if (d->nentries <= d->max_entries && e->expires_ms > now)
            break;
        entry_drop(d, e);
    }
}

/* The TTL the cache applies to a positive answer. */
static uint32_t dns_positive_ttl(const struct sl__dns *d, uint32_t ttl)
{
    ttl = SL__MAX(ttl, d->opts.cache_min_ttl_s);
    return SL__MIN(ttl, d->opts.cache_max_ttl_s); /* 0 when caching is off */
}

/* Cache the outcome of `e`'s query if it deserves it; returns whether `e` is now cached. */
static bool entry_store(struct sl__dns *d, struct dns_entry *e, int status, struct sl__addrlist *a)
{
    uint32_t ttl;

    if (status == 0)
        ttl = dns_positive_ttl(d, a->ttl_s);
    else if (status == SL_EDNS)
        ttl = SL__MIN(d->opts.negative_ttl_s, d->opts.cache_max_ttl_s);
    else
        return false; /* server failures, timeouts and ENOMEM are worth retrying */
    if (ttl == 0)
        return false;

    cache_evict(d); /* before `e` joins the age list, so that it is never the victim */
    e->expires_ms = sl_loop_now(d->loop) + (uint64_t)ttl * 1000u;
    if (status == 0)
        e->addrs = sl__addrlist_retain(a);
    else
        e->neg_status = status;
    sl__queue_insert_tail(&d->age, &e->age_node);
    return true;
}

/* ---- completion ----------------------------------------------------------------------------- */

/* File `l` for its callback, which the deferred callback will run. Takes `a`'s reference. */
static void lookup_finish(struct sl__dns *d, sl__dns_lookup_t *l, int status,
                          struct sl__addrlist *a)
{
    l->status = status;
    l->result = a;
    lookup_set_state(l, LOOKUP_DONE);
    sl__queue_insert_tail(&d->done, &l->node);
    sl_defer_start(&d->defer);
}

static uint16_t entry_first_port(const struct dns_entry *e)
{
    if (sl__queue_empty(&e->waiters))
        return 0;
    return sl__queue_data(e->waiters.next, sl__dns_lookup_t, node)->port;
}

/*
 * The query of `q->entry` ended with `status` and, when 0, the list `a` (whose reference this
 * takes). Every waiter gets the result with its own port; the list is shared between waiters
 * with the same port, and the cache keeps the variant of the last port delivered.
 */
static void dns_query_done(struct sl__dns *d, struct dns_query *q, int status,
                           struct sl__addrlist *a)
{
    struct dns_entry *e = q->entry;

    e->query = NULL;
    free(q);
    if (a != NULL)
        a->expires_ms = sl_loop_now(d->loop) + (uint64_t)dns_positive_ttl(d, a->ttl_s) * 1000u;

    while (!sl__queue_empty(&e->waiters)) {
        sl__dns_lookup_t *l = sl__queue_data(e->waiters.next, sl__dns_lookup_t, node);
        struct sl__addrlist *la;

        sl__queue_remove(&l->node);
        if (status != 0) {
            lookup_finish(d, l, status, NULL);
            continue;
        }
        la = addrlist_with_port(a, l->port);
        if (la == NULL) {
            lookup_finish(d, l, SL_ENOMEM, NULL);
            continue;
        }
        if (la != a) {
            sl__addrlist_release(a);
            a = sl__addrlist_retain(la);
        }
        lookup_finish(d, l, 0, la);
    }
    if (!entry_store(d, e, status, a))
        entry_free(d, e);
    sl__addrlist_release(a);
}

/* The deferred callback: call back every lookup filed so far. Lookups the callbacks finish
 * (a cache hit of a new resolve) wait for the next round, so a callback that resolves again
 * cannot keep us here. sl__dns_cancel() and sl__dns_free() reach the batch through
 * d->running. */
static void dns_defer_cb(sl_defer_t *df)
{
    struct sl__dns *d = sl__container_of(df, struct sl__dns, defer);
    bool freed = false;

    sl__queue_move(&d->done, &d->running);
    d->dispatch_freed = &freed;
    while (!sl__queue_empty(&d->running)) {
        sl__dns_lookup_t *l = sl__queue_data(d->running.next, sl__dns_lookup_t, node);
        struct sl__addrlist *a = l->result;

        sl__queue_remove(&l->node);
        l->result = NULL;
        lookup_set_state(l, LOOKUP_IDLE);
        l->cb(l, l->status, a);
        sl__addrlist_release(a);
        if (freed)
            return; /* `d` is gone */
    }
    d->dispatch_freed = NULL;
}

/* ---- c-ares on the loop --------------------------------------------------------------------- */

static pthread_once_t dns_ares_once = PTHREAD_ONCE_INIT;
static int dns_ares_init_status = ARES_ENOTINITIALIZED;

/* Process-wide and never undone: other users of c-ares in the process may rely on it. */
static void dns_ares_library_init(void)
{
    dns_ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* Re-arm the timeout timer from c-ares' next deadline; called after every call into c-ares.
 * The timer may fire a little before c-ares' own clock says a try timed out (both clocks are
 * read at different times); ares_process_fd() then does nothing and we re-arm for the rest. */
static void dns_timer_update(struct sl__dns *d)
{
    struct timeval tv, *next = ares_timeout(d->channel, NULL, &tv);
    uint64_t ms;

    if (next == NULL) {
        sl_timer_stop(&d->timer);
        return;
    }
    ms = next->tv_sec > 0 ? (uint64_t)next->tv_sec * 1000u : 0;
    if (next->tv_usec > 0)
        ms += ((uint64_t)next->tv_usec + 999u) / 1000u;
    sl_timer_start(&d->timer, ms, 0);
}

static void dns_timer_cb(sl_timer_t *t)
{
    struct sl__dns *d = sl__container_of(t, struct sl__dns, timer);

    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_timer_update(d);
}

static void dns_io_cb(sl_io_t *io, unsigned events)
{
    struct dns_sock *s = sl__container_of(io, struct dns_sock, io);
    struct sl__dns *d = s->dns;
    ares_socket_t fd = io->fd;

    /* c-ares may close the socket in there, and our state callback free `s` with it. */
    ares_process_fd(d->channel, (events & SL_EV_READ) ? fd : ARES_SOCKET_BAD,
                    (events & SL_EV_WRITE) ? fd : ARES_SOCKET_BAD);
    dns_timer_update(d);
}

/*
 * c-ares tells us what to watch on each of its sockets, and (0, 0) just before it closes one.
 * We cannot fail back to c-ares: if a watcher cannot be set up, the query still ends, by its
 * timeout.
 */
static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct sl__dns *d = data;
    unsigned events = (readable ? SL_EV_READ : 0u) | (writable ? SL_EV_WRITE : 0u);
    struct dns_sock *s = NULL;
    size_t i;

    for (i = 0; i < d->nsocks; i++) {
        if (d->socks[i]->io.fd == fd) {
            s = d->socks[i];
            break;
        }
    }
    if (events == 0) {
        if (s != NULL) {
            sl_io_stop(&s->io); /* c-ares closes the fd right after: no event may follow */
            d->socks[i] = d->socks[--d->nsocks];
            free(s);
        }
        return;
    }
    if (s == NULL) {
        if (d->nsocks == d->socks_cap) {
            size_t cap = d->socks_cap ? d->socks_cap * 2 : 4;
            struct dns_sock **socks = realloc(d->socks, cap * sizeof(*socks));

            if (socks == NULL)
                return;
            d->socks = socks;
            d->socks_cap = cap;
        }
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return;
        if (sl_io_init(d->loop, &s->io, fd, dns_io_cb) < 0) {
            free(s);
            return;
        }
        s->dns = d;
        d->socks[d->nsocks++] = s;
    }
    (void)sl_io_start(&s->io, events);
}

static void dns_ares_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_query *q = arg;
    struct sl__addrlist *a = NULL;
    int rc = dns_ares_error(status);

    (void)timeouts;
    if (status == ARES_EDESTRUCTION) {
        /* sl__dns_free() is destroying the channel: it disposes of the waiters. */
        q->entry->query = NULL;
        free(q);
        if (res != NULL)
            ares_freeaddrinfo(res);
        return;
    }
    if (rc == 0)
        rc = addrlist_from_ares(res, entry_first_port(q->entry), &a);
    if (res != NULL)
        ares_freeaddrinfo(res);
    dns_query_done(q->dns, q, rc, a);
}

static int dns_ares_setup(struct sl__dns *d, const struct sl__dns_opts *o)
{
    struct ares_options ao;
    int st;

    pthread_once(&dns_ares_once, dns_ares_library_init);
    if (dns_ares_init_status != ARES_SUCCESS)
        return dns_ares_init_status == ARES_ENOMEM ? SL_ENOMEM : SL_EDNS_SERVER;

    memset(&ao, 0, sizeof(ao));
    ao.timeout = o->timeout_ms == 0 ? 2000 : (int)SL__MIN(o->timeout_ms, (unsigned)INT_MAX);
    ao.tries = o->tries == 0 ? 3 : (int)SL__MIN(o->tries, (unsigned)INT_MAX);
    ao.sock_state_cb = dns_sock_state_cb;
    ao.sock_state_cb_data = d;
    /* /etc/hosts, then DNS, whatever nsswitch.conf says: an HTTP client honours /etc/hosts,
     * and c-ares' RFC 6761 "localhost" rule lives in these two lookups. */
    ao.lookups = (char *)"fb";
    st = ares_init_options(&d->channel, &ao,
                           ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB |
                               ARES_OPT_LOOKUPS);
    if (st != ARES_SUCCESS) {
        d->channel = NULL;
        return st == ARES_ENOMEM ? SL_ENOMEM : SL_EDNS_SERVER;
    }
    if (o->servers != NULL) {
        st = ares_set_servers_ports_csv(d->channel, o->servers);
        if (st != ARES_SUCCESS) {
            ares_destroy(d->channel);
            d->channel = NULL;
            return st == ARES_ENOMEM ? SL_ENOMEM : SL_EINVAL;
        }
    }
    return 0;
}

/* ---- the system resolver on the pool -------------------------------------------------------- */

static void dns_sys_work(sl_work_t *w)
{
    struct dns_query *q = sl__container_of(w, struct dns_query, work);
    struct addrinfo hints;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM; /* one result per address, not one per socket type */
    errno = 0;
    q->gai_rc = dns_getaddrinfo(q->host, NULL, &hints, &q->res);
    q->gai_errno = errno;
}

static void dns_sys_after_work(sl_work_t *w, int status)
{
    struct dns_query *q = sl__container_of(w, struct dns_query, work);
    struct sl__addrlist *a = NULL;
    int rc;

    if (q->dns == NULL) { /* detached by sl__dns_free() */
        if (q->res != NULL)
            freeaddrinfo(q->res);
        free(q);
        return;
    }
    rc = status < 0 ? status : dns_gai_error(q->gai_rc, q->gai_errno);
    if (rc == 0)
        rc = addrlist_from_gai(q->res, entry_first_port(q->entry), q->dns->opts.system_ttl_s, &a);
    if (q->res != NULL)
        freeaddrinfo(q->res);
    dns_query_done(q->dns, q, rc, a);
}

/* Start the query of `e`, which has its first waiter. c-ares may finish it (and free `e`)
 * before this returns; on failure `e` is untouched. */
static int dns_query_start(struct sl__dns *d, struct dns_entry *e)
{
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    size_t len = strlen(e->host);
    struct dns_query *q = calloc(1, sizeof(*q) + len + 1);
    int rc;

    if (q == NULL)
        return SL_ENOMEM;
    q->dns = d;
    q->entry = e;
    memcpy(q->host, e->host, len + 1);
    e->query = q;

    if (d->opts.kind == SL__RESOLVER_SYSTEM) {
        rc = sl_work_submit(d->loop, &q->work, dns_sys_work, dns_sys_after_work);
        if (rc < 0) {
            e->query = NULL;
            free(q);
            return rc;
        }
        d->stats.queries++;
        return 0;
    }

    /* The channel of the system configuration is made here, by the first name that needs it:
     * a client that only ever sees IP literals (a benchmark, a CLI run against 127.0.0.1)
     * never pays the ~0.1 ms of reading resolv.conf and setting c-ares up. If that fails,
     * this query fails as a server failure would (not cached), and the next one tries again. */
    if (d->channel == NULL) {
        rc = dns_ares_setup(d, &d->opts);
        if (rc < 0) {
            dns_query_done(d, q, rc == SL_ENOMEM ? rc : SL_EDNS_SERVER, NULL);
            return 0;
        }
    }
    /* Sorted (no ARES_AI_NOSORT): RFC 6724 order, as getaddrinfo() gives it. */
    d->stats.queries++;
    ares_getaddrinfo(d->channel, q->host, NULL, &hints, dns_ares_cb, q);
    dns_timer_update(d);
    return 0;
}

/* ---- API ------------------------------------------------------------------------------------ */

void sl__dns_opts_init(struct sl__dns_opts *o)
{
    *o = (struct sl__dns_opts){
        .kind = SL__RESOLVER_ARES,
        .cache_max_ttl_s = 300,
        .cache_min_ttl_s = 0,
        .negative_ttl_s = 5,
        .system_ttl_s = 60,
        .servers = NULL,
        .timeout_ms = 2000,
        .tries = 3,
    };
}

int sl__dns_new(sl_loop_t *loop, const struct sl__dns_opts *o, struct sl__dns **out)
{
    struct sl__dns_opts defaults;
    struct sl__dns *d;
    int rc;

    if (loop == NULL || out == NULL)
        return SL_EINVAL;
    if (o == NULL) {
        sl__dns_opts_init(&defaults);
        o = &defaults;
    }
    if (o->kind != SL__RESOLVER_ARES && o->kind != SL__RESOLVER_SYSTEM)
        return SL_EINVAL;

    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return SL_ENOMEM;
    d->loop = loop;
    d->opts = *o;
    d->opts.servers = NULL;
    d->max_entries = DNS_CACHE_MAX_ENTRIES;
    sl__queue_init(&d->age);
    sl__queue_init(&d->done);
    sl__queue_init(&d->running);
    sl_timer_init(loop, &d->timer, dns_timer_cb);
    sl_defer_init(loop, &d->defer, dns_defer_cb);
    d->nbuckets = DNS_TABLE_MIN;
    d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
    rc = SL_ENOMEM;
    if (d->buckets == NULL)
        goto fail;
    /* A channel with explicit servers is made now, so that a bad `servers` string fails
     * here; the system configuration is read by the first query (dns_query_start()). */
    if (o->kind == SL__RESOLVER_ARES && o->servers != NULL) {
        rc = dns_ares_setup(d, o);
        if (rc < 0)
            goto fail;
    }
    *out = d;
    return 0;

fail:
    free(d->buckets);
    free(d);
    return rc;
}

/* Make every lookup of `q` idle without calling it back. */
static void lookups_forget(struct sl__queue *q)
{
    while (!sl__queue_empty(q)) {
        sl__dns_lookup_t *l = sl__queue_data(q->next, sl__dns_lookup_t, node);

        sl__queue_remove(&l->node);
        sl__addrlist_release(l->result);
        l->result = NULL;
        lookup_set_state(l, LOOKUP_IDLE);
    }
}

void sl__dns_free(struct sl__dns *d)
{
    if (d == NULL)
        return;
    if (d->dispatch_freed != NULL)
        *d->dispatch_freed = true;

    /* Each in-flight c-ares query is called back with ARES_EDESTRUCTION (and unlinks itself
     * from its entry); each socket gets its (0, 0) state callback, which stops its watcher. */
    if (d->channel != NULL)
        ares_destroy(d->channel);
    d->channel = NULL;
    sl_timer_stop(&d->timer);
    sl_defer_stop(&d->defer);
    for (size_t i = 0; i < d->nsocks; i++) {
        sl_io_stop(&d->socks[i]->io);
        free(d->socks[i]);
    }
    free(d->socks);

    for (size_t i = 0; i < d->nbuckets; i++) {
        struct dns_entry *e = d->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->hash_next;
            if (e->query != NULL) {
                /* A system job: a queued one is cancelled, a running one finishes; either
                 * way its after_work sees the detached query and frees it. */
                e->query->dns = NULL;
                e->query->entry = NULL;
                (void)sl_work_cancel(&e->query->work);
            }
            lookups_forget(&e->waiters);
            sl__addrlist_release(e->addrs);
            free(e);
        }
    }
    lookups_forget(&d->done);
    lookups_forget(&d->running);
    free(d->buckets);
    free(d);
}

int sl__dns_resolve(struct sl__dns *d, sl__dns_lookup_t *l, const char *host, uint16_t port,
                    sl__dns_cb cb)
{
    char key[DNS_HOST_MAX + 1];
    struct sl__addrlist *a = NULL;
    struct dns_entry *e;
    size_t len;
    uint32_t h;
    int rc;

    if (d == NULL || l == NULL || host == NULL || cb == NULL)
        return SL_EINVAL;
    l->dns = d;
    l->cb = cb;
    l->result = NULL;
    l->status = 0;
    l->port = port;
    lookup_set_state(l, LOOKUP_IDLE);
    sl__queue_init(&l->node);
    len = strlen(host);
    if (len == 0 || len > DNS_HOST_MAX)
        return SL_EINVAL;

    rc = dns_literal(host, port, &a);
    if (rc == SL_ENOMEM)
        return rc;
    if (rc != 0) {
        lookup_finish(d, l, rc < 0 ? rc : 0, a);
        return 0;
    }

    dns_key(host, len, key);
    h = dns_hash(key, len);
    e = cache_find(d, key, h);

    if (e != NULL && entry_cached(e)) {
        if (sl_loop_now(d->loop) < e->expires_ms) {
            if (e->addrs == NULL) {
                d->stats.negative_hits++;
                lookup_finish(d, l, e->neg_status, NULL);
                return 0;
            }
            a = addrlist_with_port(e->addrs, port);
            if (a == NULL)
                return SL_ENOMEM;
            if (a != e->addrs) { /* the cache follows the last port asked for */
                sl__addrlist_release(e->addrs);
                e->addrs = sl__addrlist_retain(a);
            }
            d->stats.hits++;
            lookup_finish(d, l, 0, a);
            return 0;
        }
        entry_drop(d, e); /* expired */
        e = NULL;
    }

    if (e == NULL) {
        e = entry_new(d, key, len, h);
        if (e == NULL)
            return SL_ENOMEM;
    }
    lookup_set_state(l, LOOKUP_WAITING);
    sl__queue_insert_tail(&e->waiters, &l->node);
    if (e->query == NULL) {
        rc = dns_query_start(d, e); /* may complete (and free `e`) before returning */
        if (rc < 0) {
            sl__queue_remove(&l->node);
            lookup_set_state(l, LOOKUP_IDLE);
            entry_free(d, e);
            return rc;
        }
    }
    d->stats.misses++;
    return 0;
}

void sl__dns_cancel(sl__dns_lookup_t *l)
{
    if (l == NULL || l->state == LOOKUP_IDLE)
        return;
    /* A waiter leaves its entry's list (the query goes on, see dns.h); a finished lookup
     * leaves dns->done or the batch being called back. */
    sl__queue_remove(&l->node);
    sl__addrlist_release(l->result);
    l->result = NULL;
    lookup_set_state(l, LOOKUP_IDLE);
}

void sl__dns_stats(const struct sl__dns *d, struct sl__dns_stats *out)
{
    *out = d->stats;
}

void sl__dns_flush(struct sl__dns *d, const char *host)
{
    char key[DNS_HOST_MAX + 1];
    struct dns_entry *e;
    size_t len;

    if (host == NULL) {
        while (!sl__queue_empty(&d->age))
            entry_drop(d, sl__queue_data(d->age.next, struct dns_entry, age_node));
        return;
    }
    len = strlen(host);
    if (len == 0 || len > DNS_HOST_MAX)
        return;
    dns_key(host, len, key);
    e = cache_find(d, key, dns_hash(key, len));
    if (e != NULL && entry_cached(e))
        entry_drop(d, e);
}
