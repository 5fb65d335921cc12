/*
 * dns.h -- name resolution with a TTL cache, driven by the loop (internal).
 *
 * One `struct sl__dns` per client: a resolver (c-ares on the loop, or the
 * system getaddrinfo() on the thread pool) plus a cache keyed by the
 * lower-cased host name. Lookups are embedded in caller memory, complete
 * through a callback that never runs inside sl__dns_resolve(), and can be
 * cancelled in O(1) at any time before their callback ran. Concurrent
 * lookups of one name share one query.
 *
 * Threading: every function here is called on the loop thread.
 */
#ifndef SLUICE_HTTP_DNS_H
#define SLUICE_HTTP_DNS_H

#include "sluice.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * An immutable, reference-counted list of addresses: shared by the cache and
 * by every lookup it is delivered to. Never modified after creation, so a
 * holder may keep it (sl__addrlist_retain) after the cache dropped it.
 */
struct sl__addrlist {
    unsigned refs;
    uint32_t ttl_s;      /* TTL of the answer as received (minimum over its records and
                          * CNAMEs), or system_ttl_s for the system resolver; 0 for an IP
                          * literal */
    size_t n;            /* >= 1 */
    uint64_t expires_ms; /* loop clock (sl_loop_now) at which the cache stops serving it:
                          * received + clamped TTL; UINT64_MAX for an IP literal */
    struct sockaddr_storage addrs[]; /* in the resolver's order (c-ares sorts them by RFC 6724
                                      * like getaddrinfo); IPv6 and IPv4 when both exist; the
                                      * lookup's port in each */
};

/* Drop one reference; frees the list with the last one. NULL is ignored. */
void sl__addrlist_release(struct sl__addrlist *a);
/* Take one reference; returns `a`. */
struct sl__addrlist *sl__addrlist_retain(struct sl__addrlist *a);

enum sl__resolver_kind {
    SL__RESOLVER_ARES = 0,   /* c-ares on the loop: cancellable, real TTLs */
    SL__RESOLVER_SYSTEM = 1, /* getaddrinfo() on the loop's thread pool (nsswitch, mDNS...) */
};

struct sl__dns_opts {
    enum sl__resolver_kind kind;
    uint32_t cache_max_ttl_s; /* cap on every cached TTL; default 300; 0 disables caching
                               * entirely (positive and negative) */
    uint32_t cache_min_ttl_s; /* floor on positive TTLs; default 0; the cap wins if min > max */
    uint32_t negative_ttl_s;  /* "no such host" / "no addresses" answers are cached this long
                               * (still capped); default 5; 0 = not cached. Server failures
                               * and timeouts are never cached. */
    uint32_t system_ttl_s;    /* TTL assumed for getaddrinfo() results, which carry none;
                               * default 60; clamped like the others */
    const char *servers;      /* c-ares only: "ip:port,[ip6]:port,..." replacing the system's
                               * name servers (tests point it at a local fake server); NULL =
                               * /etc/resolv.conf. Copied by sl__dns_new(). */
    unsigned timeout_ms;      /* c-ares: first per-try timeout (c-ares doubles it on each
                               * round over the servers); default 2000; 0 = default */
    unsigned tries;           /* c-ares: tries over all servers; default 3; 0 = default */
};

/* Fill `o` with the defaults above. */
void sl__dns_opts_init(struct sl__dns_opts *o);

/* The resolver and its cache. Opaque. */
struct sl__dns;

/*
 * Create a resolver on `loop` with options `o` (NULL: the defaults; copied).
 * An idle resolver holds no active handle: the loop can exit while it exists,
 * but it must be freed with sl__dns_free() before sl_loop_close().
 * Returns 0 and sets *out, or SL_ENOMEM, SL_EINVAL (bad `servers` string or
 * option) or SL_EDNS_SERVER (c-ares could not set up the given `servers`).
 * Without `servers`, c-ares reads the system configuration at the first name
 * to resolve, not here; if it cannot, that lookup completes with
 * SL_EDNS_SERVER (not cached) and the next one tries again.
 */
int sl__dns_new(sl_loop_t *loop, const struct sl__dns_opts *o, struct sl__dns **out);

/*
 * Free the resolver. Every outstanding lookup is cancelled (its callback is
 * NOT called) and becomes idle again; in-flight c-ares queries are destroyed.
 * System-resolver jobs that a worker is running cannot be stopped: each one
 * is left behind as a small detached record that its after_work callback
 * frees on the loop thread (so run the loop until idle, or sl_loop_close(),
 * which waits for them). Jobs no worker has started are cancelled.
 * Safe from inside a lookup callback.
 */
void sl__dns_free(struct sl__dns *d);

typedef struct sl__dns_lookup sl__dns_lookup_t;

/*
 * Completion: `status` is 0 with `addrs` (borrowed for the call: retain it
 * to keep it), or, with `addrs` NULL: SL_EDNS (no such host, or no address),
 * SL_EDNS_SERVER (server failure, refused, malformed answer), SL_ETIMEDOUT
 * (no answer after every try) or SL_ENOMEM. Runs on the loop thread from a
 * deferred callback, never inside sl__dns_resolve(). The callback may
 * resolve again with the same `l`, cancel other lookups, or free the resolver.
 */
typedef void (*sl__dns_cb)(sl__dns_lookup_t *l, int status, struct sl__addrlist *addrs);

/* A lookup: caller memory, valid from sl__dns_resolve() until its callback
 * ran or it was cancelled. Only `data` is for the caller. */
struct sl__dns_lookup {
    void *data;
    /* private */
    struct sl__dns *dns;
    sl__dns_cb cb;
    struct sl__addrlist *result; /* DONE: the result to deliver (one reference) */
    struct sl__queue node;       /* WAITING: in its entry's waiters; DONE: in dns->done */
    int status;
    uint16_t port;
    uint8_t state; /* idle, waiting for a query, done (queued for its callback) */
};

/*
 * Resolve `host` (a name, or an IPv4/IPv6 literal, optionally in brackets and
 * with a %zone, which completes without any query) to addresses carrying
 * `port`. `host` is copied; it is case-insensitive. The callback never runs
 * inside this call (cache hits complete through a deferred callback). `l`
 * must not be pending (it needs no initialisation; after its callback ran,
 * or after sl__dns_cancel(), it may be used again, also from its callback).
 * An IP literal with an unknown %zone completes with SL_EDNS.
 * Returns 0, or SL_EINVAL (NULL argument, empty host, host longer than 255
 * bytes), SL_ENOMEM, or the error of sl_work_submit() for the system
 * resolver (SL_ECLOSING, an OS error); then the callback never runs.
 */
int sl__dns_resolve(struct sl__dns *d, sl__dns_lookup_t *l, const char *host, uint16_t port,
                    sl__dns_cb cb);

/*
 * Cancel `l` at any time before its callback ran (a no-op on a lookup whose
 * callback ran, that was cancelled, or that sl__dns_resolve() refused;
 * a lookup never passed to sl__dns_resolve() must be zeroed first):
 * the callback will never run and `l` may be reused or freed at once. O(1).
 * The shared query is not stopped, even when nobody else waits for it: its
 * answer still fills the cache, which is what a retry after a timeout wants,
 * and c-ares cannot cancel one query of a channel anyway.
 */
void sl__dns_cancel(sl__dns_lookup_t *l);

/* Counters: queries started (one per name resolved by c-ares or the system
 * resolver, however many packets that takes; a c-ares /etc/hosts answer
 * counts too), positive cache hits, lookups that had to wait for a query
 * (starting or joining one), and negative cache hits. IP literals count in
 * none of them. */
struct sl__dns_stats {
    uint64_t queries, hits, misses, negative_hits;
};
void sl__dns_stats(const struct sl__dns *d, struct sl__dns_stats *out);

/* Forget what the cache knows about `host` (NULL: every host), e.g. after a
 * connect failure to every cached address. Queries in flight are not
 * affected and cache their answer when it comes. */
void sl__dns_flush(struct sl__dns *d, const char *host);

#endif /* SLUICE_HTTP_DNS_H */
