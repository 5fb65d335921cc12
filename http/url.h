/*
 * url.h -- absolute http(s) URLs and RFC 3986 reference resolution (private).
 *
 * A struct sl__url is a parsed, validated and normalised URL: every
 * component is a NUL-terminated string inside the single allocation `buf`,
 * owned by the struct and released by sl__url_free(). Components are never
 * NULL except where a field says so. Strings returned by the sl__url_*
 * formatting functions are malloc'ed and owned by the caller.
 *
 * Nothing here is thread-aware: a parsed URL is plain immutable data once
 * built, so any thread may read it; functions that write one need the caller
 * to own it.
 */
#ifndef SLUICE_HTTP_URL_H
#define SLUICE_HTTP_URL_H

#include "sluice.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest input accepted by the parsers (curl uses the same bound); longer
 * input fails with SL_EURL, "URL too long". */
#define SL__URL_MAX_LEN (8u * 1024u * 1024u)

struct sl__url {
    char *buf;            /* one allocation holding every component below */
    const char *scheme;   /* "http" or "https" (lower-cased) */
    const char *userinfo; /* NULL if absent, "" for "http://@h/"; kept as given */
    /* Lower-cased reg-name with percent-encoding decoded (only unreserved and
     * sub-delim characters can remain, so it needs no re-encoding), a dotted
     * IPv4 quad, or an IPv6 address without brackets in inet_ntop() form
     * ("[0:0::1]" becomes "::1") and without its zone id. */
    const char *host;
    /* The zone id of an IPv6 link-local literal, decoded: "[fe80::1%25eth0]"
     * gives host "fe80::1" and zone_id "eth0". NULL if absent. It is part of
     * the origin (two zones are two peers) but never of the Host header
     * (RFC 6874 §4: it has only local significance). */
    const char *zone_id;
    bool host_is_ipv6;
    bool host_is_ipv4; /* exactly four decimal octets 0-255, no leading zeros */
    uint16_t port;     /* the explicit port, or 80/443 by scheme */
    bool port_explicit;
    /* Starts with "/" ("/" when empty); dot segments removed (RFC 3986
     * §5.2.4); percent-encoding kept as given ("%2e" is not a dot). */
    const char *path;
    const char *query; /* without the '?'; NULL if absent, "" for a bare '?' */
    /* The fragment is dropped: it is never sent. */
};

/*
 * Parse the absolute URL `s` into `*u`, which is overwritten without being
 * freed first. On failure `*u` is zeroed (so sl__url_free() on it is safe)
 * and, if `why` is not NULL, `*why` points to a static English phrase naming
 * the problem ("missing scheme", "port out of range", ...); on success
 * `*why` is left alone.
 *
 * Accepted: "http" or "https" (any case) followed by "//", an authority with a
 * non-empty host and optional userinfo and port, then path, query and
 * fragment. ASCII controls, space and DEL anywhere (fragment included) are
 * refused; other bytes in path and query, including bytes >= 0x80, are kept
 * as given. Every '%' in the kept components must start a %XX triplet.
 *
 * Returns 0, SL_EURL, SL_EUNSUPPORTED_SCHEME (a well-formed scheme other than
 * http and https) or SL_ENOMEM.
 */
int sl__url_parse(struct sl__url *u, const char *s);
int sl__url_parse_ex(struct sl__url *u, const char *s, const char **why);
/* As sl__url_parse_ex(), for `len` bytes that need no terminating NUL (an
 * embedded NUL is refused as a control character). */
int sl__url_parse_n(struct sl__url *u, const char *s, size_t len, const char **why);

/*
 * Resolve the reference `ref` (absolute, scheme-relative "//h/p",
 * absolute-path "/p", relative-path "a/../b", "?q", "#f" or "") against
 * `base` with the algorithm of RFC 3986 §5.2.2-§5.2.4, into `*out`, which is
 * overwritten without being freed first and must not be `base`. The result
 * has to be an http(s) URL with a host.
 *
 * A reference whose scheme equals the base's and which has no authority
 * ("http:g") is read as relative: this is the backward-compatible reading
 * RFC 3986 §5.2.2 allows, and the one browsers use.
 *
 * Errors as sl__url_parse_ex(); `*out` is zeroed on failure. `base` is only
 * read.
 */
int sl__url_resolve(struct sl__url *out, const struct sl__url *base, const char *ref);
int sl__url_resolve_n(struct sl__url *out, const struct sl__url *base, const char *ref, size_t len,
                      const char **why);

/* Release the buffer of `u` and zero it. Safe on a zeroed struct and twice. */
void sl__url_free(struct sl__url *u);

/* Deep copy: `*dst` (overwritten without being freed) gets its own buffer.
 * Copying a zeroed struct gives a zeroed struct. Returns 0 or SL_ENOMEM
 * (`*dst` is then zeroed). */
int sl__url_copy(struct sl__url *dst, const struct sl__url *src);

/* The request target: path plus "?query" when there is a query.
 * Malloc'ed, owned by the caller; NULL on allocation failure. */
char *sl__url_target(const struct sl__url *u);

/* The Host header value: the host (IPv6 in brackets, without zone id) plus
 * ":port" when the port is not the scheme's default ("http://h:80/" gives
 * "h"). Malloc'ed; NULL on allocation failure. */
char *sl__url_host_header(const struct sl__url *u);

/* The connection pool key "scheme://host:port", always with the port and,
 * for IPv6, with brackets and the zone id ("http://[fe80::1%25eth0]:80").
 * Malloc'ed; NULL on allocation failure. */
char *sl__url_origin(const struct sl__url *u);

/* The whole normalised URL without userinfo and fragment, and without the
 * port when it is the scheme's default (for %{url_effective} and logs).
 * Parsing it again gives the same string. Malloc'ed; NULL on allocation
 * failure. */
char *sl__url_string(const struct sl__url *u);

/* Whether `a` and `b` have the same scheme, host, zone id and port (RFC 6454
 * origin). Userinfo, path and query do not matter. */
bool sl__url_same_origin(const struct sl__url *a, const struct sl__url *b);

#endif /* SLUICE_HTTP_URL_H */
