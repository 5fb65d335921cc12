/*
 * url.c -- parsing http(s) URLs and resolving references (RFC 3986).
 *
 * Two passes. split() cuts the input into views (pointer and length, no
 * copies) and validates every byte, so every error is found before anything
 * is allocated. build() assembles views into the single allocation of a
 * struct sl__url, normalising on the way: scheme and reg-name lower-cased,
 * percent-encoding in host and zone id decoded, IPv6 through inet_pton() and
 * inet_ntop(), dot segments removed from the path in place. Resolution
 * (§5.2.2) is then only a choice of views, each taken from the reference or
 * from the base; normalising is idempotent, so the base's components go
 * through build() again as they are.
 *
 * Control characters and spaces are refused, never stripped or encoded (a
 * Location header must not smuggle CR/LF into a request line); path and
 * query are otherwise passed through byte for byte.
 */
#include "url.h"

#include "reactor-int.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* A piece of the input, not NUL-terminated. ptr == NULL means "absent",
 * which differs from present and empty (a bare '?' is an empty query). */
struct view {
    const char *ptr;
    size_t len;
};

/* A URL or relative reference cut into views. */
struct parts {
    struct view scheme; /* absent for a relative reference */
    bool has_authority;
    struct view userinfo;
    struct view host;    /* without brackets, still percent-encoded */
    struct view zone_id; /* percent-encoded, without the "%25" */
    bool host_is_ipv6;
    bool port_explicit;
    uint16_t port;
    struct view path;
    struct view query;
};

static int url_error(const char **why, int code, const char *msg)
{
    if (why != NULL)
        *why = msg;
    return code;
}

static struct view view_of(const char *s)
{
    return (struct view){.ptr = s, .len = s != NULL ? strlen(s) : 0};
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_unreserved(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static bool is_sub_delim(unsigned char c)
{
    return c != '\0' && strchr("!$&'()*+,;=", c) != NULL;
}

static bool is_scheme_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
}

static char to_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Whether `p` (at least 3 bytes available) starts a well-formed %XX. */
static bool is_pct_triplet(const char *p, size_t avail)
{
    return avail >= 3 && p[0] == '%' && hex_value((unsigned char)p[1]) >= 0 &&
           hex_value((unsigned char)p[2]) >= 0;
}

/* The byte a %XX triplet stands for (the triplet was validated). */
static unsigned char pct_decode(const char *p)
{
    return (unsigned char)(hex_value((unsigned char)p[1]) * 16 + hex_value((unsigned char)p[2]));
}

static bool pct_well_formed(struct view v)
{
    for (size_t i = 0; i < v.len; i++)
        if (v.ptr[i] == '%' && !is_pct_triplet(v.ptr + i, v.len - i))
            return false;
    return true;
}

static bool view_eq_ci(struct view v, const char *s)
{
    size_t n = strlen(s);
    if (v.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (to_lower(v.ptr[i]) != s[i])
            return false;
    return true;
}

static const char *find_byte(const char *p, size_t n, char c)
{
    return n > 0 ? memchr(p, c, n) : NULL;
}

static uint16_t default_port(const char *scheme)
{
    return strcmp(scheme, "https") == 0 ? 443 : 80;
}

/* Each byte of `v` must be allowed by `ok`, or be a %XX triplet whose
 * decoded byte `ok` allows when `check_decoded` is set. Returns NULL or the
 * error phrase (`bad_char` for a refused character). */
static const char *check_chars(struct view v, bool (*ok)(unsigned char), bool check_decoded,
                               const char *bad_char)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.ptr[i];
        if (c == '%') {
            if (!is_pct_triplet(v.ptr + i, v.len - i))
                return "invalid percent-encoding";
            if (check_decoded && !ok(pct_decode(v.ptr + i)))
                return bad_char;
            i += 2;
        } else if (!ok(c)) {
            return bad_char;
        }
    }
    return NULL;
}

static bool is_userinfo_char(unsigned char c)
{
    return is_unreserved(c) || is_sub_delim(c) || c == ':';
}

static bool is_reg_name_char(unsigned char c)
{
    return is_unreserved(c) || is_sub_delim(c);
}

static bool ipv6_parse(struct view v, struct in6_addr *addr)
{
    char tmp[INET6_ADDRSTRLEN];
    if (v.len == 0 || v.len >= sizeof(tmp))
        return false;
    memcpy(tmp, v.ptr, v.len);
    tmp[v.len] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
}

/* Exactly four decimal octets 0-255 without leading zeros (RFC 3986
 * IPv4address). Anything else is a reg-name, even "010.0.0.1" or "1.2.3",
 * which inet_aton() and getaddrinfo() would read as the numbers 8.0.0.1 and
 * 1.2.0.3: the resolver must not hand reg-names to an API that does that. */
static bool is_ipv4(const char *h)
{
    for (int part = 0; part < 4; part++) {
        if (part > 0 && *h++ != '.')
            return false;
        if (!is_digit((unsigned char)*h))
            return false;
        if (h[0] == '0' && is_digit((unsigned char)h[1]))
            return false;
        unsigned v = 0;
        while (is_digit((unsigned char)*h)) {
            v = v * 10 + (unsigned)(*h++ - '0');
            if (v > 255)
                return false;
        }
    }
    return *h == '\0';
}

/* authority = [ userinfo "@" ] host [ ":" port ], `a` holds `n` bytes. */
static int split_authority(const char *a, size_t n, struct parts *p, const char **why)
{
    const char *msg;
    struct view port = {NULL, 0};

    /* '@' is allowed neither in userinfo nor in host, so splitting at the last
     * one only decides which of the two gets blamed for an extra one. */
    for (size_t i = n; i > 0; i--) {
        if (a[i - 1] == '@') {
            p->userinfo = (struct view){a, i - 1};
            if ((msg = check_chars(p->userinfo, is_userinfo_char, false,
                                   "invalid character in userinfo")) != NULL)
                return url_error(why, SL_EURL, msg);
            a += i;
            n -= i;
            break;
        }
    }

    if (n > 0 && a[0] == '[') {
        const char *close = find_byte(a, n, ']');
        struct in6_addr addr;
        if (close == NULL)
            return url_error(why, SL_EURL, "invalid IPv6 literal");
        struct view inner = {a + 1, (size_t)(close - a) - 1};
        const char *pct = find_byte(inner.ptr, inner.len, '%');
        p->host = (struct view){inner.ptr, pct != NULL ? (size_t)(pct - inner.ptr) : inner.len};
        if (pct != NULL) {
            /* RFC 6874: the '%' separating the zone id is itself encoded. A
             * bare '%' ("fe80::1%eth0") is refused rather than guessed at. */
            size_t zlen = inner.len - p->host.len;
            if (zlen < 4 || memcmp(pct, "%25", 3) != 0)
                return url_error(why, SL_EURL, "invalid IPv6 zone id");
            p->zone_id = (struct view){pct + 3, zlen - 3};
            /* Only unreserved characters, even encoded, so that the decoded
             * zone id needs no re-encoding and decoding it again is a no-op. */
            if ((msg = check_chars(p->zone_id, is_unreserved, true, "invalid IPv6 zone id")) !=
                NULL)
                return url_error(why, SL_EURL, msg);
        }
        /* IPvFuture ("[v1.x]") is refused here too: nothing could connect to it. */
        if (!ipv6_parse(p->host, &addr))
            return url_error(why, SL_EURL, "invalid IPv6 literal");
        p->host_is_ipv6 = true;
        size_t rest = n - (size_t)(close - a) - 1;
        if (rest > 0) {
            if (close[1] != ':')
                return url_error(why, SL_EURL, "invalid IPv6 literal");
            port = (struct view){close + 2, rest - 1};
        }
    } else {
        const char *colon = find_byte(a, n, ':');
        p->host = (struct view){a, colon != NULL ? (size_t)(colon - a) : n};
        if (colon != NULL)
            port = (struct view){colon + 1, n - p->host.len - 1};
        if ((msg = check_chars(p->host, is_reg_name_char, true, "invalid character in host")) !=
            NULL)
            return url_error(why, SL_EURL, msg);
        if (p->host.len == 0)
            return url_error(why, SL_EURL, "empty host");
    }

    /* An empty port after ':' means the default one (RFC 3986 §3.2.3). */
    if (port.len > 0) {
        uint32_t v = 0;
        for (size_t i = 0; i < port.len; i++) {
            if (!is_digit((unsigned char)port.ptr[i]))
                return url_error(why, SL_EURL, "invalid port");
            if (v <= 65535) /* saturate: leading zeros are fine, overflow is not */
                v = v * 10 + (uint32_t)(port.ptr[i] - '0');
        }
        if (v == 0 || v > 65535)
            return url_error(why, SL_EURL, "port out of range");
        p->port = (uint16_t)v;
        p->port_explicit = true;
    }
    return 0;
}

/*
 * Cut `s` into parts. With `base_scheme` NULL, `s` must be an absolute URL
 * with an authority. Otherwise it is a reference resolved against a base of
 * that scheme: it may lack a scheme, and it may lack the authority if it
 * lacks a scheme or has the base's one ("http:g", see url.h).
 */
static int split(const char *s, size_t len, const char *base_scheme, struct parts *p,
                 const char **why)
{
    size_t pos = 0, end;

    memset(p, 0, sizeof(*p));
    if (len > SL__URL_MAX_LEN)
        return url_error(why, SL_EURL, "URL too long");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return url_error(why, SL_EURL, "control character or space in URL");
    }

    /* A scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) then ':'. If the
     * first segment does not have that shape, the input is a relative path,
     * even when it contains ':' later ("1a:b", "./g:h"). */
    if (len > 0 && is_alpha((unsigned char)s[0])) {
        size_t i = 1;
        while (i < len && is_scheme_char((unsigned char)s[i]))
            i++;
        if (i < len && s[i] == ':') {
            p->scheme = (struct view){s, i};
            pos = i + 1;
        }
    }
    if (p->scheme.ptr == NULL && base_scheme == NULL)
        return url_error(why, SL_EURL, "missing scheme");
    if (p->scheme.ptr != NULL && !view_eq_ci(p->scheme, "http") && !view_eq_ci(p->scheme, "https"))
        return url_error(why, SL_EUNSUPPORTED_SCHEME, "unsupported scheme");

    if (len - pos >= 2 && s[pos] == '/' && s[pos + 1] == '/') {
        int rc;
        pos += 2;
        for (end = pos; end < len && s[end] != '/' && s[end] != '?' && s[end] != '#'; end++)
            ;
        if ((rc = split_authority(s + pos, end - pos, p, why)) != 0)
            return rc;
        p->has_authority = true;
        pos = end;
    } else if (p->scheme.ptr != NULL &&
               (base_scheme == NULL || !view_eq_ci(p->scheme, base_scheme))) {
        return url_error(why, SL_EURL, "missing authority");
    }

    for (end = pos; end < len && s[end] != '?' && s[end] != '#'; end++)
        ;
    p->path = (struct view){s + pos, end - pos};
    if (!pct_well_formed(p->path))
        return url_error(why, SL_EURL, "invalid percent-encoding");
    pos = end;

    if (pos < len && s[pos] == '?') {
        pos++;
        for (end = pos; end < len && s[end] != '#'; end++)
            ;
        p->query = (struct view){s + pos, end - pos};
        if (!pct_well_formed(p->query))
            return url_error(why, SL_EURL, "invalid percent-encoding");
    }
    /* The fragment (from '#' on) is dropped; only the control check saw it. */
    return 0;
}

/* Pop the last segment and its preceding '/' from the output b[0..out). */
static size_t pop_segment(const char *b, size_t out)
{
    while (out > 0 && b[out - 1] != '/')
        out--;
    return out > 0 ? out - 1 : 0;
}

/*
 * RFC 3986 §5.2.4, in place: the output never grows faster than the input is
 * consumed, so the write index `out` never passes the read index `in`. The
 * rules that replace a prefix of the input with "/" write that '/' over the
 * last byte of the prefix and skip the rest. Returns the new length.
 */
static size_t remove_dot_segments(char *b, size_t n)
{
    size_t in = 0, out = 0;

    while (in < n) {
        const char *p = b + in;
        size_t rest = n - in;
        if (rest >= 3 && memcmp(p, "../", 3) == 0) { /* A */
            in += 3;
        } else if (rest >= 2 && memcmp(p, "./", 2) == 0) {
            in += 2;
        } else if (rest >= 3 && memcmp(p, "/./", 3) == 0) { /* B */
            in += 2;
        } else if (rest == 2 && memcmp(p, "/.", 2) == 0) {
            b[in + 1] = '/';
            in += 1;
        } else if (rest >= 4 && memcmp(p, "/../", 4) == 0) { /* C */
            in += 3;
            out = pop_segment(b, out);
        } else if (rest == 3 && memcmp(p, "/..", 3) == 0) {
            b[in + 2] = '/';
            in += 2;
            out = pop_segment(b, out);
        } else if ((rest == 1 && p[0] == '.') || (rest == 2 && memcmp(p, "..", 2) == 0)) { /* D */
            in = n;
        } else { /* E: move "/segment" or "segment" */
            do
                b[out++] = b[in++];
            while (in < n && b[in] != '/');
        }
    }
    return out;
}

/* Copy `v` to `w`, decoding %XX and, if `lower`, lower-casing ASCII letters;
 * NUL-terminate. Returns the byte after the NUL. */
static char *put_decoded(char *w, struct view v, bool lower)
{
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c == '%') {
            c = (char)pct_decode(v.ptr + i);
            i += 2;
        }
        *w++ = lower ? to_lower(c) : c;
    }
    *w++ = '\0';
    return w;
}

static char *put_view(char *w, struct view v)
{
    if (v.len > 0)
        memcpy(w, v.ptr, v.len);
    w[v.len] = '\0';
    return w + v.len + 1;
}

/*
 * Assemble `t` (which has a scheme and an authority, validated by split() or
 * taken from a built URL) into `*u`. The path is `prefix` followed by
 * t->path, with dot segments removed.
 */
static int build(struct sl__url *u, const struct parts *t, struct view prefix, const char **why)
{
    size_t host_room = t->host.len + 1;
    if (t->host_is_ipv6 && host_room < INET6_ADDRSTRLEN)
        host_room = INET6_ADDRSTRLEN;
    /* +2 for the path: its NUL and the "/" an empty path becomes */
    size_t size = t->scheme.len + 1 + host_room + prefix.len + t->path.len + 2;
    if (t->userinfo.ptr != NULL)
        size += t->userinfo.len + 1;
    if (t->zone_id.ptr != NULL)
        size += t->zone_id.len + 1;
    if (t->query.ptr != NULL)
        size += t->query.len + 1;

    char *buf = malloc(size), *w = buf;
    if (buf == NULL)
        return url_error(why, SL_ENOMEM, "out of memory");
    struct sl__url r = {.buf = buf};

    r.scheme = w;
    w = put_decoded(w, t->scheme, true);
    if (t->userinfo.ptr != NULL) {
        r.userinfo = w;
        w = put_view(w, t->userinfo);
    }

    r.host = w;
    if (t->host_is_ipv6) {
        struct in6_addr addr;
        bool ok = ipv6_parse(t->host, &addr);
        assert(ok); /* split() checked it */
        (void)ok;
        if (inet_ntop(AF_INET6, &addr, w, INET6_ADDRSTRLEN) == NULL) {
            free(buf);
            return url_error(why, SL_EURL, "invalid IPv6 literal");
        }
        w += strlen(w) + 1;
        r.host_is_ipv6 = true;
    } else {
        w = put_decoded(w, t->host, true);
        r.host_is_ipv4 = is_ipv4(r.host);
    }
    if (t->zone_id.ptr != NULL) {
        r.zone_id = w;
        w = put_decoded(w, t->zone_id, false); /* interface names are case-sensitive */
    }

    r.port_explicit = t->port_explicit;
    r.port = t->port_explicit ? t->port : default_port(r.scheme);

    char *path = w;
    if (prefix.len > 0)
        memcpy(w, prefix.ptr, prefix.len);
    if (t->path.len > 0)
        memcpy(w + prefix.len, t->path.ptr, t->path.len);
    size_t n = remove_dot_segments(path, prefix.len + t->path.len);
    if (n == 0)
        path[n++] = '/';
    path[n] = '\0';
    assert(path[0] == '/'); /* path-abempty, or merged onto an absolute base path */
    r.path = path;
    w = path + n + 1;

    if (t->query.ptr != NULL) {
        r.query = w;
        w = put_view(w, t->query);
    }
    assert((size_t)(w - buf) <= size);
    *u = r;
    return 0;
}

int sl__url_parse_n(struct sl__url *u, const char *s, size_t len, const char **why)
{
    struct parts p;
    int rc;

    memset(u, 0, sizeof(*u));
    if ((rc = split(s, len, NULL, &p, why)) != 0)
        return rc;
    return build(u, &p, (struct view){NULL, 0}, why);
}

int sl__url_parse_ex(struct sl__url *u, const char *s, const char **why)
{
    return sl__url_parse_n(u, s, strlen(s), why);
}

int sl__url_parse(struct sl__url *u, const char *s)
{
    return sl__url_parse_n(u, s, strlen(s), NULL);
}

int sl__url_resolve_n(struct sl__url *out, const struct sl__url *base, const char *ref, size_t len,
                      const char **why)
{
    struct parts r, t;
    struct view prefix = {NULL, 0};
    int rc;

    assert(out != base && base->buf != NULL);
    memset(out, 0, sizeof(*out));
    if ((rc = split(ref, len, base->scheme, &r, why)) != 0)
        return rc;

    /* §5.2.2. A reference with a scheme but no authority got past split()
     * only with the base's scheme, and is then read as relative. */
    t = r;
    t.scheme = view_of(base->scheme);
    if (r.scheme.ptr != NULL && r.has_authority)
        t.scheme = r.scheme;
    if (!r.has_authority) {
        t.has_authority = true;
        t.userinfo = view_of(base->userinfo);
        t.host = view_of(base->host);
        t.zone_id = view_of(base->zone_id);
        t.host_is_ipv6 = base->host_is_ipv6;
        t.port = base->port;
        t.port_explicit = base->port_explicit;
        if (r.path.len == 0) {
            t.path = view_of(base->path);
            if (r.query.ptr == NULL)
                t.query = view_of(base->query);
        } else if (r.path.ptr[0] != '/') {
            /* §5.2.3 merge: the base path always starts with '/', so it has
             * a last '/' to cut after. */
            const char *slash = strrchr(base->path, '/');
            prefix = (struct view){base->path, (size_t)(slash - base->path) + 1};
        }
    }
    return build(out, &t, prefix, why);
}

int sl__url_resolve(struct sl__url *out, const struct sl__url *base, const char *ref)
{
    return sl__url_resolve_n(out, base, ref, strlen(ref), NULL);
}

void sl__url_free(struct sl__url *u)
{
    free(u->buf);
    memset(u, 0, sizeof(*u));
}

/* Where `p`, a component inside src->buf, lands in a copy at `buf`. */
static const char *rebase(const char *p, const struct sl__url *src, char *buf)
{
    return p != NULL ? buf + (p - src->buf) : NULL;
}

int sl__url_copy(struct sl__url *dst, const struct sl__url *src)
{
    const char *fields[] = {src->scheme,  src->userinfo, src->host,
                            src->zone_id, src->path,     src->query};
    size_t size = 0;

    assert(dst != src);
    memset(dst, 0, sizeof(*dst));
    if (src->buf == NULL)
        return 0;
    /* The struct does not record the buffer size: it ends after the
     * component that ends last. */
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i] != NULL) {
            size_t end = (size_t)(fields[i] - src->buf) + strlen(fields[i]) + 1;
            if (end > size)
                size = end;
        }
    }
    char *buf = malloc(size);
    if (buf == NULL)
        return SL_ENOMEM;
    memcpy(buf, src->buf, size);
    *dst = *src;
    dst->buf = buf;
    dst->scheme = rebase(src->scheme, src, buf);
    dst->userinfo = rebase(src->userinfo, src, buf);
    dst->host = rebase(src->host, src, buf);
    dst->zone_id = rebase(src->zone_id, src, buf);
    dst->path = rebase(src->path, src, buf);
    dst->query = rebase(src->query, src, buf);
    return 0;
}

/* Concatenate the `n` strings of `parts` (NULL ones count as "") into a new
 * block. This runs for every request (the effective URL): snprintf took
 * ~6k instructions for it. */
static char *concat_alloc(const char *const *parts, size_t n)
{
    size_t len[12], total = 0;
    char *s, *p;

    assert(n <= SL__ARRAY_SIZE(len));
    for (size_t i = 0; i < n; i++) {
        len[i] = parts[i] != NULL ? strlen(parts[i]) : 0;
        total += len[i];
    }
    s = malloc(total + 1);
    if (s == NULL)
        return NULL;
    p = s;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, parts[i] != NULL ? parts[i] : "", len[i]);
        p += len[i];
    }
    *p = '\0';
    return s;
}

/* "[scheme://]host[:port][path[?query]]" with IPv6 in brackets. The port is
 * written when `always_port` or when it is not the scheme's default. */
static char *format_url(const struct sl__url *u, bool with_scheme, bool with_zone, bool always_port,
                        bool with_target)
{
    char port[1 + SL__U64_DEC_MAX + 1], *d = port + sizeof(port);
    bool v6 = u->host_is_ipv6, zone = with_zone && u->zone_id != NULL;
    bool query = with_target && u->query != NULL;

    assert(u->buf != NULL);
    *--d = '\0';
    if (always_port || u->port != default_port(u->scheme)) {
        d = sl__u64_dec(d, u->port);
        *--d = ':';
    }
    const char *parts[] = {with_scheme ? u->scheme : NULL,
                           with_scheme ? "://" : NULL,
                           v6 ? "[" : NULL,
                           u->host,
                           zone ? "%25" : NULL,
                           zone ? u->zone_id : NULL,
                           v6 ? "]" : NULL,
                           d,
                           with_target ? u->path : NULL,
                           query ? "?" : NULL,
                           query ? u->query : NULL};
    return concat_alloc(parts, SL__ARRAY_SIZE(parts));
}

char *sl__url_target(const struct sl__url *u)
{
    const char *parts[] = {u->path, u->query != NULL ? "?" : NULL, u->query};

    assert(u->buf != NULL);
    return concat_alloc(parts, SL__ARRAY_SIZE(parts));
}

char *sl__url_host_header(const struct sl__url *u)
{
    return format_url(u, false, false, false, false);
}

char *sl__url_origin(const struct sl__url *u)
{
    return format_url(u, true, true, true, false);
}

char *sl__url_string(const struct sl__url *u)
{
    return format_url(u, true, true, false, true);
}

static bool str_eq_or_null(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

bool sl__url_same_origin(const struct sl__url *a, const struct sl__url *b)
{
    return strcmp(a->scheme, b->scheme) == 0 && strcmp(a->host, b->host) == 0 &&
           str_eq_or_null(a->zone_id, b->zone_id) && a->port == b->port;
}
