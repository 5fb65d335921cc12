/*
 * test_url.c -- http/url.c: parsing, normalisation, the strings derived from
 * a URL, and RFC 3986 reference resolution (every example of §5.4).
 *
 * Allocation failures are injected by renaming malloc() inside the code
 * under test only (<stdlib.h> is included first so that its declaration is
 * not renamed); everything after the #undef uses the real allocator.
 */
#include <stdlib.h>
static void *test_malloc(size_t n);
#define malloc(n) test_malloc(n)
#include "../../../http/url.c"
#undef malloc

#include <check.h>
#include <stdio.h>
#include <string.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* -1: never fail; otherwise the number of allocations that still succeed. */
static long malloc_budget = -1;

static void *test_malloc(size_t n)
{
    if (malloc_budget == 0)
        return NULL;
    if (malloc_budget > 0)
        malloc_budget--;
    return malloc(n);
}

static bool is_zeroed(const struct sl__url *u)
{
    return u->buf == NULL && u->scheme == NULL && u->userinfo == NULL && u->host == NULL &&
           u->zone_id == NULL && u->path == NULL && u->query == NULL && !u->host_is_ipv6 &&
           !u->host_is_ipv4 && u->port == 0 && !u->port_explicit;
}

/* ck_assert_str_eq refuses NULL; components may legitimately be NULL. */
#define assert_str_or_null(got, want, what, in)                                                    \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        ck_assert_msg(g_ == NULL ? w_ == NULL : w_ != NULL && strcmp(g_, w_) == 0,                 \
                      "%s: %s is \"%s\", expected \"%s\"", (in), (what), g_ ? g_ : "(null)",       \
                      w_ ? w_ : "(null)");                                                         \
    } while (0)

#define assert_owned_str(expr, want, what, in)                                                     \
    do {                                                                                           \
        char *s_ = (expr);                                                                         \
        ck_assert_ptr_nonnull(s_);                                                                 \
        assert_str_or_null(s_, (want), (what), (in));                                              \
        free(s_);                                                                                  \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Valid URLs                                                               */
/* ------------------------------------------------------------------------ */

struct valid {
    const char *in;
    const char *scheme, *userinfo, *host, *zone_id;
    bool v6, v4;
    uint16_t port;
    bool port_explicit;
    const char *path, *query;
    const char *target, *host_header, *origin, *string;
};

static const struct valid valid_urls[] = {
    {"http://example.com", "http", NULL, "example.com", NULL, false, false, 80, false, "/", NULL,
     "/", "example.com", "http://example.com:80", "http://example.com/"},
    {"https://example.com/", "https", NULL, "example.com", NULL, false, false, 443, false, "/",
     NULL, "/", "example.com", "https://example.com:443", "https://example.com/"},
    {"HTTP://EXAMPLE.COM/Path/To?Q=V#Frag", "http", NULL, "example.com", NULL, false, false, 80,
     false, "/Path/To", "Q=V", "/Path/To?Q=V", "example.com", "http://example.com:80",
     "http://example.com/Path/To?Q=V"},
    {"HtTpS://Ex%41mple.COM:8443/a", "https", NULL, "example.com", NULL, false, false, 8443, true,
     "/a", NULL, "/a", "example.com:8443", "https://example.com:8443",
     "https://example.com:8443/a"},
    {"http://user:pw@host/", "http", "user:pw", "host", NULL, false, false, 80, false, "/", NULL,
     "/", "host", "http://host:80", "http://host/"},
    {"http://us%40er:p%3Aw;x=1@host:81/x", "http", "us%40er:p%3Aw;x=1", "host", NULL, false, false,
     81, true, "/x", NULL, "/x", "host:81", "http://host:81", "http://host:81/x"},
    {"http://@host/", "http", "", "host", NULL, false, false, 80, false, "/", NULL, "/", "host",
     "http://host:80", "http://host/"},
    {"http://:@host/", "http", ":", "host", NULL, false, false, 80, false, "/", NULL, "/", "host",
     "http://host:80", "http://host/"},
    {"http://127.0.0.1:8080/p", "http", NULL, "127.0.0.1", NULL, false, true, 8080, true, "/p",
     NULL, "/p", "127.0.0.1:8080", "http://127.0.0.1:8080", "http://127.0.0.1:8080/p"},
    {"http://0.0.0.0/", "http", NULL, "0.0.0.0", NULL, false, true, 80, false, "/", NULL, "/",
     "0.0.0.0", "http://0.0.0.0:80", "http://0.0.0.0/"},
    {"http://255.255.255.255/", "http", NULL, "255.255.255.255", NULL, false, true, 80, false, "/",
     NULL, "/", "255.255.255.255", "http://255.255.255.255:80", "http://255.255.255.255/"},
    {"http://%31.2.3.4/", "http", NULL, "1.2.3.4", NULL, false, true, 80, false, "/", NULL, "/",
     "1.2.3.4", "http://1.2.3.4:80", "http://1.2.3.4/"},
    /* not four dec-octets: reg-names */
    {"http://256.1.1.1/", "http", NULL, "256.1.1.1", NULL, false, false, 80, false, "/", NULL, "/",
     "256.1.1.1", "http://256.1.1.1:80", "http://256.1.1.1/"},
    {"http://1.2.3/", "http", NULL, "1.2.3", NULL, false, false, 80, false, "/", NULL, "/", "1.2.3",
     "http://1.2.3:80", "http://1.2.3/"},
    {"http://01.2.3.4/", "http", NULL, "01.2.3.4", NULL, false, false, 80, false, "/", NULL, "/",
     "01.2.3.4", "http://01.2.3.4:80", "http://01.2.3.4/"},
    {"http://1.2.3.4.5/", "http", NULL, "1.2.3.4.5", NULL, false, false, 80, false, "/", NULL, "/",
     "1.2.3.4.5", "http://1.2.3.4.5:80", "http://1.2.3.4.5/"},
    {"http://1.2.3.4./", "http", NULL, "1.2.3.4.", NULL, false, false, 80, false, "/", NULL, "/",
     "1.2.3.4.", "http://1.2.3.4.:80", "http://1.2.3.4./"},
    {"http://1.2.3.1000/", "http", NULL, "1.2.3.1000", NULL, false, false, 80, false, "/", NULL,
     "/", "1.2.3.1000", "http://1.2.3.1000:80", "http://1.2.3.1000/"},
    {"http://[::1]:8080/", "http", NULL, "::1", NULL, true, false, 8080, true, "/", NULL, "/",
     "[::1]:8080", "http://[::1]:8080", "http://[::1]:8080/"},
    {"http://[::1]:/", "http", NULL, "::1", NULL, true, false, 80, false, "/", NULL, "/", "[::1]",
     "http://[::1]:80", "http://[::1]/"},
    {"http://[fe80::1%25eth0]", "http", NULL, "fe80::1", "eth0", true, false, 80, false, "/", NULL,
     "/", "[fe80::1]", "http://[fe80::1%25eth0]:80", "http://[fe80::1%25eth0]/"},
    {"https://[FE80:0:0:0:0:0:0:1%25En%30]:444/x", "https", NULL, "fe80::1", "En0", true, false,
     444, true, "/x", NULL, "/x", "[fe80::1]:444", "https://[fe80::1%25En0]:444",
     "https://[fe80::1%25En0]:444/x"},
    {"http://[::FFFF:192.0.2.1]/", "http", NULL, "::ffff:192.0.2.1", NULL, true, false, 80, false,
     "/", NULL, "/", "[::ffff:192.0.2.1]", "http://[::ffff:192.0.2.1]:80",
     "http://[::ffff:192.0.2.1]/"},
    {"https://u@[2001:DB8:0::A]/", "https", "u", "2001:db8::a", NULL, true, false, 443, false, "/",
     NULL, "/", "[2001:db8::a]", "https://[2001:db8::a]:443", "https://[2001:db8::a]/"},
    /* explicit ports, default or not */
    {"http://h:80/", "http", NULL, "h", NULL, false, false, 80, true, "/", NULL, "/", "h",
     "http://h:80", "http://h/"},
    {"https://h:443/", "https", NULL, "h", NULL, false, false, 443, true, "/", NULL, "/", "h",
     "https://h:443", "https://h/"},
    {"http://h:443/", "http", NULL, "h", NULL, false, false, 443, true, "/", NULL, "/", "h:443",
     "http://h:443", "http://h:443/"},
    {"https://h:80/", "https", NULL, "h", NULL, false, false, 80, true, "/", NULL, "/", "h:80",
     "https://h:80", "https://h:80/"},
    {"http://h:/", "http", NULL, "h", NULL, false, false, 80, false, "/", NULL, "/", "h",
     "http://h:80", "http://h/"},
    {"http://h:0080", "http", NULL, "h", NULL, false, false, 80, true, "/", NULL, "/", "h",
     "http://h:80", "http://h/"},
    {"http://h:1", "http", NULL, "h", NULL, false, false, 1, true, "/", NULL, "/", "h:1",
     "http://h:1", "http://h:1/"},
    {"http://h:65535?q", "http", NULL, "h", NULL, false, false, 65535, true, "/", "q", "/?q",
     "h:65535", "http://h:65535", "http://h:65535/?q"},
    /* query and fragment */
    {"http://h?x", "http", NULL, "h", NULL, false, false, 80, false, "/", "x", "/?x", "h",
     "http://h:80", "http://h/?x"},
    {"http://h/?", "http", NULL, "h", NULL, false, false, 80, false, "/", "", "/?", "h",
     "http://h:80", "http://h/?"},
    {"http://h/p?a=1?b=2/c&d=%41", "http", NULL, "h", NULL, false, false, 80, false, "/p",
     "a=1?b=2/c&d=%41", "/p?a=1?b=2/c&d=%41", "h", "http://h:80", "http://h/p?a=1?b=2/c&d=%41"},
    {"http://h/p#frag?notquery", "http", NULL, "h", NULL, false, false, 80, false, "/p", NULL, "/p",
     "h", "http://h:80", "http://h/p"},
    {"http://h#f", "http", NULL, "h", NULL, false, false, 80, false, "/", NULL, "/", "h",
     "http://h:80", "http://h/"},
    {"http://h/p?q#", "http", NULL, "h", NULL, false, false, 80, false, "/p", "q", "/p?q", "h",
     "http://h:80", "http://h/p?q"},
    {"http://h/p#%zz", "http", NULL, "h", NULL, false, false, 80, false, "/p", NULL, "/p", "h",
     "http://h:80", "http://h/p"},
    /* paths: dot segments removed, everything else as given */
    {"http://h/a/./b/../c", "http", NULL, "h", NULL, false, false, 80, false, "/a/c", NULL, "/a/c",
     "h", "http://h:80", "http://h/a/c"},
    {"http://h/..", "http", NULL, "h", NULL, false, false, 80, false, "/", NULL, "/", "h",
     "http://h:80", "http://h/"},
    {"http://h/a/b/c/./../../g?x/../y", "http", NULL, "h", NULL, false, false, 80, false, "/a/g",
     "x/../y", "/a/g?x/../y", "h", "http://h:80", "http://h/a/g?x/../y"},
    {"http://h/a/%2e%2E/b", "http", NULL, "h", NULL, false, false, 80, false, "/a/%2e%2E/b", NULL,
     "/a/%2e%2E/b", "h", "http://h:80", "http://h/a/%2e%2E/b"},
    {"http://h//double//slash/", "http", NULL, "h", NULL, false, false, 80, false,
     "//double//slash/", NULL, "//double//slash/", "h", "http://h:80", "http://h//double//slash/"},
    {"http://h/caf\xc3\xa9?q=\xff", "http", NULL, "h", NULL, false, false, 80, false,
     "/caf\xc3\xa9", "q=\xff", "/caf\xc3\xa9?q=\xff", "h", "http://h:80",
     "http://h/caf\xc3\xa9?q=\xff"},
    {"http://h/a%20b%2F;p=1", "http", NULL, "h", NULL, false, false, 80, false, "/a%20b%2F;p=1",
     NULL, "/a%20b%2F;p=1", "h", "http://h:80", "http://h/a%20b%2F;p=1"},
    {"http://h/\"<>\\^`{|}[]", "http", NULL, "h", NULL, false, false, 80, false, "/\"<>\\^`{|}[]",
     NULL, "/\"<>\\^`{|}[]", "h", "http://h:80", "http://h/\"<>\\^`{|}[]"},
    {"http://h/:@!$&'()*+,;=", "http", NULL, "h", NULL, false, false, 80, false,
     "/:@!$&'()*+,;=", NULL, "/:@!$&'()*+,;=", "h", "http://h:80", "http://h/:@!$&'()*+,;="},
    /* reg-name characters */
    {"http://A-b.C_d~e!$&'()*+,;=/", "http", NULL, "a-b.c_d~e!$&'()*+,;=", NULL, false, false, 80,
     false, "/", NULL, "/", "a-b.c_d~e!$&'()*+,;=", "http://a-b.c_d~e!$&'()*+,;=:80",
     "http://a-b.c_d~e!$&'()*+,;=/"},
    {"http://xn--bcher-kva.example./", "http", NULL, "xn--bcher-kva.example.", NULL, false, false,
     80, false, "/", NULL, "/", "xn--bcher-kva.example.", "http://xn--bcher-kva.example.:80",
     "http://xn--bcher-kva.example./"},
};

START_TEST(url_parse_valid)
{
    const struct valid *v = &valid_urls[_i];
    struct sl__url u;
    const char *why = "untouched";

    memset(&u, 0xa5, sizeof(u));
    ck_assert_msg(sl__url_parse_ex(&u, v->in, &why) == 0, "%s: %s", v->in, why);
    ck_assert_str_eq(why, "untouched");
    assert_str_or_null(u.scheme, v->scheme, "scheme", v->in);
    assert_str_or_null(u.userinfo, v->userinfo, "userinfo", v->in);
    assert_str_or_null(u.host, v->host, "host", v->in);
    assert_str_or_null(u.zone_id, v->zone_id, "zone_id", v->in);
    ck_assert_msg(u.host_is_ipv6 == v->v6, "%s: host_is_ipv6", v->in);
    ck_assert_msg(u.host_is_ipv4 == v->v4, "%s: host_is_ipv4", v->in);
    ck_assert_uint_eq(u.port, v->port);
    ck_assert_msg(u.port_explicit == v->port_explicit, "%s: port_explicit", v->in);
    assert_str_or_null(u.path, v->path, "path", v->in);
    assert_str_or_null(u.query, v->query, "query", v->in);

    assert_owned_str(sl__url_target(&u), v->target, "target", v->in);
    assert_owned_str(sl__url_host_header(&u), v->host_header, "host header", v->in);
    assert_owned_str(sl__url_origin(&u), v->origin, "origin", v->in);
    assert_owned_str(sl__url_string(&u), v->string, "string", v->in);

    /* Every component lives in the one buffer. */
    const char *fields[] = {u.scheme, u.userinfo, u.host, u.zone_id, u.path, u.query};
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
        ck_assert(fields[i] == NULL ||
                  (fields[i] >= u.buf && fields[i] < u.buf + strlen(v->in) + 64));

    /* The normalised string parses back to itself, and to the same origin. */
    char *s = sl__url_string(&u);
    struct sl__url again;
    ck_assert_int_eq(sl__url_parse(&again, s), 0);
    assert_owned_str(sl__url_string(&again), s, "re-parsed string", v->in);
    ck_assert(sl__url_same_origin(&u, &again));
    free(s);

    /* parse_n with the exact length agrees, and ignores what follows. */
    struct sl__url n;
    size_t len = strlen(v->in);
    char *copy = malloc(len + 3);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, v->in, len);
    memcpy(copy + len, " \n", 3);
    ck_assert_int_eq(sl__url_parse_n(&n, copy, len, NULL), 0);
    assert_owned_str(sl__url_string(&n), v->string, "parse_n string", v->in);
    free(copy);

    sl__url_free(&n);
    sl__url_free(&again);
    sl__url_free(&u);
    ck_assert(is_zeroed(&u));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Invalid URLs                                                             */
/* ------------------------------------------------------------------------ */

struct invalid {
    const char *in;
    int code;
    const char *why;
};

static const struct invalid invalid_urls[] = {
    {"", SL_EURL, "missing scheme"},
    {"example.com/path", SL_EURL, "missing scheme"},
    {"//example.com/", SL_EURL, "missing scheme"},
    {"/just/a/path", SL_EURL, "missing scheme"},
    {"://h/", SL_EURL, "missing scheme"},
    {"1http://h/", SL_EURL, "missing scheme"},
    {"ht^tp://h/", SL_EURL, "missing scheme"},
    {"ftp://h/", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"FILE:///etc/passwd", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"httpx://h/", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"htt://h/", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"g:h", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"localhost:8080", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"http:h", SL_EURL, "missing authority"},
    {"http:/h/p", SL_EURL, "missing authority"},
    {"https:", SL_EURL, "missing authority"},
    {"http://", SL_EURL, "empty host"},
    {"http:///p", SL_EURL, "empty host"},
    {"http://?q", SL_EURL, "empty host"},
    {"http://:80/", SL_EURL, "empty host"},
    {"http://u@/", SL_EURL, "empty host"},
    {"http://u:p@:8080", SL_EURL, "empty host"},
    {"http://::1/", SL_EURL, "empty host"},
    {"http://h:abc/", SL_EURL, "invalid port"},
    {"http://h:-1/", SL_EURL, "invalid port"},
    {"http://h:+80/", SL_EURL, "invalid port"},
    {"http://h:8:8/", SL_EURL, "invalid port"},
    {"http://h:80a", SL_EURL, "invalid port"},
    {"http://h:0/", SL_EURL, "port out of range"},
    {"http://h:0000/", SL_EURL, "port out of range"},
    {"http://h:65536/", SL_EURL, "port out of range"},
    {"http://h:99999999999999999999999/", SL_EURL, "port out of range"},
    {"http://[::1]:0/", SL_EURL, "port out of range"},
    {"http://[::1/", SL_EURL, "invalid IPv6 literal"},
    {"http://[::1", SL_EURL, "invalid IPv6 literal"},
    {"http://[::g]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[1:2:3:4:5:6:7:8:9]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[1.2.3.4]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[v1.fe]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[::1]x/", SL_EURL, "invalid IPv6 literal"},
    {"http://[::1]]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[0000:0000:0000:0000:0000:0000:0000:0000:0]/", SL_EURL, "invalid IPv6 literal"},
    {"http://[::1]:x/", SL_EURL, "invalid port"},
    {"http://[fe80::1%eth0]/", SL_EURL, "invalid IPv6 zone id"},
    {"http://[fe80::1%25]/", SL_EURL, "invalid IPv6 zone id"},
    {"http://[fe80::1%]/", SL_EURL, "invalid IPv6 zone id"},
    {"http://[fe80::1%25eth%2F0]/", SL_EURL, "invalid IPv6 zone id"},
    {"http://[fe80::1%25eth:0]/", SL_EURL, "invalid IPv6 zone id"},
    {"http://[fe80::1%25eth%zz]/", SL_EURL, "invalid percent-encoding"},
    {"http://[fe80::g%25eth0]/", SL_EURL, "invalid IPv6 literal"},
    {"http://h^/", SL_EURL, "invalid character in host"},
    {"http://h[1]/", SL_EURL, "invalid character in host"},
    {"http://h]/", SL_EURL, "invalid character in host"},
    {"http://h\"/", SL_EURL, "invalid character in host"},
    {"http://h%2F/", SL_EURL, "invalid character in host"},
    {"http://h%00/", SL_EURL, "invalid character in host"},
    {"http://h%0d%0a/", SL_EURL, "invalid character in host"},
    {"http://h%3a80/", SL_EURL, "invalid character in host"},
    {"http://caf\xc3\xa9.example/", SL_EURL, "invalid character in host"},
    {"http://caf%C3%A9.example/", SL_EURL, "invalid character in host"},
    {"http://h%/", SL_EURL, "invalid percent-encoding"},
    {"http://h%2/", SL_EURL, "invalid percent-encoding"},
    {"http://h%g0/", SL_EURL, "invalid percent-encoding"},
    {"http://h\\@evil/", SL_EURL, "invalid character in userinfo"},
    {"http://a@b@c/", SL_EURL, "invalid character in userinfo"},
    {"http://u^@h/", SL_EURL, "invalid character in userinfo"},
    {"http://u[@h/", SL_EURL, "invalid character in userinfo"},
    {"http://u%zz@h/", SL_EURL, "invalid percent-encoding"},
    {"http://u%4@h/", SL_EURL, "invalid percent-encoding"},
    {"http://h/%", SL_EURL, "invalid percent-encoding"},
    {"http://h/%zz", SL_EURL, "invalid percent-encoding"},
    {"http://h/%4", SL_EURL, "invalid percent-encoding"},
    {"http://h/a%4?b", SL_EURL, "invalid percent-encoding"},
    {"http://h/?%4", SL_EURL, "invalid percent-encoding"},
    {"http://h/?a=%%41", SL_EURL, "invalid percent-encoding"},
    {"http://ho st/", SL_EURL, "control character or space in URL"},
    {"http://h/a b", SL_EURL, "control character or space in URL"},
    {"http://h/a\tb", SL_EURL, "control character or space in URL"},
    {"http://h/\r\nX-Injected: 1", SL_EURL, "control character or space in URL"},
    {"http://h/\n", SL_EURL, "control character or space in URL"},
    {"http://h/?q=\x7f", SL_EURL, "control character or space in URL"},
    {"http://h/?q=\x01", SL_EURL, "control character or space in URL"},
    {"http://h/#frag ment", SL_EURL, "control character or space in URL"},
    {" http://h/", SL_EURL, "control character or space in URL"},
    {"http://h/ ", SL_EURL, "control character or space in URL"},
    {"http://u\x1b@h/", SL_EURL, "control character or space in URL"},
    /* the control check comes first, even before the scheme */
    {"ftp://h/\r\n", SL_EURL, "control character or space in URL"},
};

START_TEST(url_parse_invalid)
{
    const struct invalid *v = &invalid_urls[_i];
    struct sl__url u;
    const char *why = NULL;

    memset(&u, 0xa5, sizeof(u));
    int rc = sl__url_parse_ex(&u, v->in, &why);
    ck_assert_msg(rc == v->code, "%s: got %d (%s), expected %d", v->in, rc, why ? why : "-",
                  v->code);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strcmp(why, v->why) == 0, "%s: why \"%s\", expected \"%s\"", v->in, why, v->why);
    ck_assert(is_zeroed(&u));
    ck_assert_int_eq(sl__url_parse(&u, v->in), v->code);
    ck_assert(is_zeroed(&u));
    sl__url_free(&u); /* safe on the zeroed result */
}
END_TEST

START_TEST(url_parse_n_refuses_nul)
{
    static const char in[] = "http://h/a\0b";
    struct sl__url u;
    const char *why = NULL;

    ck_assert_int_eq(sl__url_parse_n(&u, in, sizeof(in) - 1, &why), SL_EURL);
    ck_assert_str_eq(why, "control character or space in URL");
    ck_assert(is_zeroed(&u));
    /* NUL in the host, and as the very first byte */
    ck_assert_int_eq(sl__url_parse_n(&u, "http://h\0st/", 12, NULL), SL_EURL);
    ck_assert_int_eq(sl__url_parse_n(&u, "\0http://h/", 10, NULL), SL_EURL);
    /* stopping before the NUL is fine */
    ck_assert_int_eq(sl__url_parse_n(&u, in, 10, NULL), 0);
    ck_assert_str_eq(u.path, "/a");
    sl__url_free(&u);
    /* a prefix of a valid URL can itself be invalid */
    ck_assert_int_eq(sl__url_parse_n(&u, "http://h/", 7, &why), SL_EURL);
    ck_assert_str_eq(why, "empty host");
    ck_assert_int_eq(sl__url_parse_n(&u, "http://h/", 0, &why), SL_EURL);
    ck_assert_str_eq(why, "missing scheme");
}
END_TEST

START_TEST(url_long)
{
    /* 100 KiB of path and 100 KiB of query survive byte for byte. */
    size_t n = 100 * 1024;
    char *in = malloc(2 * n + 64), *want = malloc(2 * n + 64);
    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(want);
    char *p = in + sprintf(in, "http://h/");
    for (size_t i = 0; i < n; i++)
        *p++ = (char)('a' + i % 26);
    *p++ = '?';
    for (size_t i = 0; i < n; i++)
        *p++ = i % 100 == 99 ? '/' : 'q';
    strcpy(p, "#frag");

    struct sl__url u;
    ck_assert_int_eq(sl__url_parse(&u, in), 0);
    ck_assert_uint_eq(strlen(u.path), n + 1);
    ck_assert_uint_eq(strlen(u.query), n);
    ck_assert(memcmp(u.path, in + 8, n + 1) == 0);
    char *target = sl__url_target(&u);
    ck_assert_ptr_nonnull(target);
    ck_assert_uint_eq(strlen(target), 2 * n + 2);
    ck_assert(memcmp(target, in + 8, 2 * n + 2) == 0);
    free(target);
    char *s = sl__url_string(&u);
    ck_assert_ptr_nonnull(s);
    memcpy(want, in, 2 * n + 10);
    want[2 * n + 10] = '\0';
    ck_assert_str_eq(s, want);
    free(s);
    sl__url_free(&u);

    /* a long host is not limited here (DNS will refuse it) */
    memset(in, 'a', n);
    memcpy(in, "http://", 7);
    strcpy(in + n, "/x");
    ck_assert_int_eq(sl__url_parse(&u, in), 0);
    ck_assert_uint_eq(strlen(u.host), n - 7);
    sl__url_free(&u);

    free(in);
    free(want);
}
END_TEST

START_TEST(url_too_long)
{
    size_t n = SL__URL_MAX_LEN + 1;
    char *in = malloc(n + 1);
    const char *why = NULL;
    struct sl__url u, base;

    ck_assert_ptr_nonnull(in);
    memset(in, 'a', n);
    memcpy(in, "http://h/", 9);
    in[n] = '\0';
    ck_assert_int_eq(sl__url_parse_ex(&u, in, &why), SL_EURL);
    ck_assert_str_eq(why, "URL too long");
    in[n - 1] = '\0'; /* exactly the limit is fine */
    ck_assert_int_eq(sl__url_parse(&u, in), 0);
    sl__url_free(&u);

    ck_assert_int_eq(sl__url_parse(&base, "http://a/"), 0);
    memset(in, 'b', n);
    ck_assert_int_eq(sl__url_resolve_n(&u, &base, in, n, &why), SL_EURL);
    ck_assert_str_eq(why, "URL too long");
    sl__url_free(&base);
    free(in);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

START_TEST(url_free_zeroed_is_safe)
{
    struct sl__url u = {0};
    sl__url_free(&u);
    sl__url_free(&u);
    ck_assert(is_zeroed(&u));

    ck_assert_int_eq(sl__url_parse(&u, "http://h/"), 0);
    sl__url_free(&u);
    ck_assert(is_zeroed(&u));
    sl__url_free(&u); /* twice */
}
END_TEST

START_TEST(url_copy)
{
    struct sl__url src, dst;

    ck_assert_int_eq(sl__url_parse(&src, "https://u:p@[fe80::1%25eth0]:8443/a/b?c=d#e"), 0);
    memset(&dst, 0xa5, sizeof(dst));
    ck_assert_int_eq(sl__url_copy(&dst, &src), 0);
    ck_assert_ptr_ne(dst.buf, src.buf);
    sl__url_free(&src); /* the copy owns its own memory */
    ck_assert_str_eq(dst.scheme, "https");
    ck_assert_str_eq(dst.userinfo, "u:p");
    ck_assert_str_eq(dst.host, "fe80::1");
    ck_assert_str_eq(dst.zone_id, "eth0");
    ck_assert(dst.host_is_ipv6);
    ck_assert(!dst.host_is_ipv4);
    ck_assert_uint_eq(dst.port, 8443);
    ck_assert(dst.port_explicit);
    ck_assert_str_eq(dst.path, "/a/b");
    ck_assert_str_eq(dst.query, "c=d");
    assert_owned_str(sl__url_string(&dst), "https://[fe80::1%25eth0]:8443/a/b?c=d", "string",
                     "copy");

    /* copy of a copy, with NULL components */
    struct sl__url dst2;
    ck_assert_int_eq(sl__url_parse(&src, "http://h"), 0);
    ck_assert_int_eq(sl__url_copy(&dst2, &src), 0);
    ck_assert_ptr_null(dst2.userinfo);
    ck_assert_ptr_null(dst2.zone_id);
    ck_assert_ptr_null(dst2.query);
    ck_assert_str_eq(dst2.path, "/");
    ck_assert(sl__url_same_origin(&dst2, &src));
    sl__url_free(&src);
    sl__url_free(&dst2);
    sl__url_free(&dst);

    /* copying a zeroed struct gives a zeroed struct */
    struct sl__url zero = {0};
    memset(&dst, 0xa5, sizeof(dst));
    ck_assert_int_eq(sl__url_copy(&dst, &zero), 0);
    ck_assert(is_zeroed(&dst));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Origins                                                                  */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *a, *b;
    bool same;
} origin_pairs[] = {
    {"http://h/a", "HTTP://H:80/b?x#y", true},
    {"http://u:p@h/", "http://h/", true},
    {"https://h/", "https://h:443/", true},
    {"http://h/", "https://h/", false},
    {"http://h/", "http://h:8080/", false},
    {"https://h:80/", "http://h:80/", false},
    {"http://h/", "http://g/", false},
    {"http://h./", "http://h/", false},
    {"http://[::1]/", "http://[0:0::1]:80/", true},
    {"http://[::1]/", "http://[::2]/", false},
    {"http://[fe80::1%25eth0]/", "http://[FE80::1%25eth0]:80/x", true},
    {"http://[fe80::1%25eth0]/", "http://[fe80::1%25eth1]/", false},
    {"http://[fe80::1%25eth0]/", "http://[fe80::1]/", false},
    {"http://[fe80::1%25eth0]/", "http://[fe80::1%25ETH0]/", false},
    {"http://127.0.0.1/", "http://%31%32%37.0.0.1/", true},
    {"http://ex%41mple.com/", "http://EXAMPLE.com/", true},
};

START_TEST(url_same_origin)
{
    struct sl__url a, b;

    ck_assert_int_eq(sl__url_parse(&a, origin_pairs[_i].a), 0);
    ck_assert_int_eq(sl__url_parse(&b, origin_pairs[_i].b), 0);
    ck_assert_msg(sl__url_same_origin(&a, &b) == origin_pairs[_i].same, "%s vs %s",
                  origin_pairs[_i].a, origin_pairs[_i].b);
    ck_assert(sl__url_same_origin(&b, &a) == origin_pairs[_i].same);
    ck_assert(sl__url_same_origin(&a, &a));
    /* same origin exactly when the pool keys are equal */
    char *oa = sl__url_origin(&a), *ob = sl__url_origin(&b);
    ck_assert_ptr_nonnull(oa);
    ck_assert_ptr_nonnull(ob);
    ck_assert((strcmp(oa, ob) == 0) == origin_pairs[_i].same);
    free(oa);
    free(ob);
    sl__url_free(&a);
    sl__url_free(&b);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* remove_dot_segments and resolution                                       */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *in, *out;
} dot_cases[] = {
    {"/a/b/c/./../../g", "/a/g"}, /* RFC 3986 §5.2.4 */
    {"mid/content=5/../6", "mid/6"},
    {"", ""},
    {"/", "/"},
    {".", ""},
    {"..", ""},
    {"./", ""},
    {"../", ""},
    {"../../a", "a"},
    {"/.", "/"},
    {"/..", "/"},
    {"/./", "/"},
    {"/../", "/"},
    {"/a/.", "/a/"},
    {"/a/..", "/"},
    {"/a/b/..", "/a/"},
    {"/a/../../b", "/b"},
    {"/a//..", "/a/"},
    {"/a/.b/..c/...", "/a/.b/..c/..."},
    {"/a/%2e/b", "/a/%2e/b"},
    {"//x/../y", "//y"},
    {"/a/./././b", "/a/b"},
};

START_TEST(url_remove_dot_segments)
{
    char buf[64];
    size_t n = strlen(dot_cases[_i].in);

    memcpy(buf, dot_cases[_i].in, n);
    n = remove_dot_segments(buf, n);
    buf[n] = '\0';
    ck_assert_msg(strcmp(buf, dot_cases[_i].out) == 0, "\"%s\" -> \"%s\", expected \"%s\"",
                  dot_cases[_i].in, buf, dot_cases[_i].out);
}
END_TEST

/* RFC 3986 §5.4. Results have "/" for an empty path ("//g" gives
 * "http://g/") and no fragment. */
#define RFC_BASE "http://a/b/c/d;p?q"

static const struct {
    const char *ref;
    int code;
    const char *want; /* sl__url_string() of the result, or the `why` on error */
} rfc_cases[] = {
    /* §5.4.1 normal examples */
    {"g:h", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"g", 0, "http://a/b/c/g"},
    {"./g", 0, "http://a/b/c/g"},
    {"g/", 0, "http://a/b/c/g/"},
    {"/g", 0, "http://a/g"},
    {"//g", 0, "http://g/"},
    {"?y", 0, "http://a/b/c/d;p?y"},
    {"g?y", 0, "http://a/b/c/g?y"},
    {"#s", 0, "http://a/b/c/d;p?q"},
    {"g#s", 0, "http://a/b/c/g"},
    {"g?y#s", 0, "http://a/b/c/g?y"},
    {";x", 0, "http://a/b/c/;x"},
    {"g;x", 0, "http://a/b/c/g;x"},
    {"g;x?y#s", 0, "http://a/b/c/g;x?y"},
    {"", 0, "http://a/b/c/d;p?q"},
    {".", 0, "http://a/b/c/"},
    {"./", 0, "http://a/b/c/"},
    {"..", 0, "http://a/b/"},
    {"../", 0, "http://a/b/"},
    {"../g", 0, "http://a/b/g"},
    {"../..", 0, "http://a/"},
    {"../../", 0, "http://a/"},
    {"../../g", 0, "http://a/g"},
    /* §5.4.2 abnormal examples */
    {"../../../g", 0, "http://a/g"},
    {"../../../../g", 0, "http://a/g"},
    {"/./g", 0, "http://a/g"},
    {"/../g", 0, "http://a/g"},
    {"g.", 0, "http://a/b/c/g."},
    {".g", 0, "http://a/b/c/.g"},
    {"g..", 0, "http://a/b/c/g.."},
    {"..g", 0, "http://a/b/c/..g"},
    {"./../g", 0, "http://a/b/g"},
    {"./g/.", 0, "http://a/b/c/g/"},
    {"g/./h", 0, "http://a/b/c/g/h"},
    {"g/../h", 0, "http://a/b/c/h"},
    {"g;x=1/./y", 0, "http://a/b/c/g;x=1/y"},
    {"g;x=1/../y", 0, "http://a/b/c/y"},
    {"g?y/./x", 0, "http://a/b/c/g?y/./x"},
    {"g?y/../x", 0, "http://a/b/c/g?y/../x"},
    {"g#s/./x", 0, "http://a/b/c/g"},
    {"g#s/../x", 0, "http://a/b/c/g"},
    /* "http:g": the backward-compatible reading, not the strict "http:g" */
    {"http:g", 0, "http://a/b/c/g"},
    /* beyond the RFC */
    {"HTTP:g", 0, "http://a/b/c/g"},
    {"http:", 0, "http://a/b/c/d;p?q"},
    {"http:?z", 0, "http://a/b/c/d;p?z"},
    {"http:/g", 0, "http://a/g"},
    {"https:g", SL_EURL, "missing authority"},
    {"https://B/x/../y?z#f", 0, "https://b/y?z"},
    {"HTTP://other:8080", 0, "http://other:8080/"},
    {"//[::1]:81/p/./q", 0, "http://[::1]:81/p/q"},
    {"//u@g:80", 0, "http://g/"},
    {"?", 0, "http://a/b/c/d;p?"},
    {"#", 0, "http://a/b/c/d;p?q"},
    {"1a:b", 0, "http://a/b/c/1a:b"},
    {"./g:h", 0, "http://a/b/c/g:h"},
    {"\\evil", 0, "http://a/b/c/\\evil"},
    {"g/%2e%2e/h", 0, "http://a/b/c/g/%2e%2e/h"},
    {"../../../../../../../../../../../etc", 0, "http://a/etc"},
    {"ftp://g/", SL_EUNSUPPORTED_SCHEME, "unsupported scheme"},
    {"//", SL_EURL, "empty host"},
    {"///g", SL_EURL, "empty host"},
    {"//g:99999/", SL_EURL, "port out of range"},
    {"g h", SL_EURL, "control character or space in URL"},
    {"/g\r\nX: y", SL_EURL, "control character or space in URL"},
    {"g%zz", SL_EURL, "invalid percent-encoding"},
    {"?%", SL_EURL, "invalid percent-encoding"},
    {"//[::1", SL_EURL, "invalid IPv6 literal"},
};

START_TEST(url_resolve_rfc3986)
{
    struct sl__url base, out;
    const char *why = NULL;

    ck_assert_int_eq(sl__url_parse(&base, RFC_BASE), 0);
    memset(&out, 0xa5, sizeof(out));
    const char *ref = rfc_cases[_i].ref;
    int rc = sl__url_resolve_n(&out, &base, ref, strlen(ref), &why);
    ck_assert_msg(rc == rfc_cases[_i].code, "\"%s\": got %d (%s), expected %d", ref, rc,
                  why ? why : "-", rfc_cases[_i].code);
    if (rc == 0) {
        assert_owned_str(sl__url_string(&out), rfc_cases[_i].want, "resolved", ref);
    } else {
        ck_assert(is_zeroed(&out));
        ck_assert_str_eq(why, rfc_cases[_i].want);
    }
    /* the convenience form agrees */
    struct sl__url out2;
    ck_assert_int_eq(sl__url_resolve(&out2, &base, ref), rc);
    if (rc == 0)
        ck_assert_str_eq(out2.path, out.path);
    sl__url_free(&out2);
    sl__url_free(&out);
    /* the base is untouched */
    assert_owned_str(sl__url_string(&base), RFC_BASE, "base", ref);
    sl__url_free(&base);
}
END_TEST

START_TEST(url_resolve_keeps_base_authority)
{
    struct sl__url base, out;

    ck_assert_int_eq(sl__url_parse(&base, "http://u:p@Ex%41mple:8080/dir/file?x"), 0);
    ck_assert_int_eq(sl__url_resolve(&out, &base, "other?y"), 0);
    ck_assert_str_eq(out.scheme, "http");
    ck_assert_str_eq(out.userinfo, "u:p");
    ck_assert_str_eq(out.host, "example");
    ck_assert_uint_eq(out.port, 8080);
    ck_assert(out.port_explicit);
    ck_assert_str_eq(out.path, "/dir/other");
    ck_assert_str_eq(out.query, "y");
    ck_assert(sl__url_same_origin(&base, &out));
    sl__url_free(&out);

    /* a new authority brings its own (absent) userinfo and default port */
    ck_assert_int_eq(sl__url_resolve(&out, &base, "//other/p"), 0);
    ck_assert_ptr_null(out.userinfo);
    ck_assert_uint_eq(out.port, 80);
    ck_assert(!out.port_explicit);
    ck_assert(!sl__url_same_origin(&base, &out));
    sl__url_free(&out);
    sl__url_free(&base);

    /* IPv6 base with a zone id: host and zone id are carried over */
    ck_assert_int_eq(sl__url_parse(&base, "https://[fe80::1%25eth0]:81/a/b"), 0);
    ck_assert_int_eq(sl__url_resolve(&out, &base, "c?d"), 0);
    ck_assert(out.host_is_ipv6);
    ck_assert_str_eq(out.host, "fe80::1");
    ck_assert_str_eq(out.zone_id, "eth0");
    assert_owned_str(sl__url_string(&out), "https://[fe80::1%25eth0]:81/a/c?d", "string", "c?d");
    assert_owned_str(sl__url_host_header(&out), "[fe80::1]:81", "host header", "c?d");
    sl__url_free(&out);
    /* a query-only reference keeps the base path, and the base had no query */
    ck_assert_int_eq(sl__url_resolve(&out, &base, ""), 0);
    ck_assert_ptr_null(out.query);
    ck_assert_str_eq(out.path, "/a/b");
    sl__url_free(&out);
    sl__url_free(&base);

    /* IPv4 base: the flag is recomputed, not lost */
    ck_assert_int_eq(sl__url_parse(&base, "http://10.0.0.1/x/"), 0);
    ck_assert_int_eq(sl__url_resolve(&out, &base, "y"), 0);
    ck_assert(out.host_is_ipv4);
    ck_assert_str_eq(out.path, "/x/y");
    sl__url_free(&out);

    /* embedded NUL in a reference with explicit length */
    const char *why = NULL;
    ck_assert_int_eq(sl__url_resolve_n(&out, &base, "a\0b", 3, &why), SL_EURL);
    ck_assert_str_eq(why, "control character or space in URL");
    ck_assert_int_eq(sl__url_resolve_n(&out, &base, "a\0b", 1, NULL), 0);
    ck_assert_str_eq(out.path, "/x/a");
    sl__url_free(&out);
    sl__url_free(&base);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Allocation failures                                                      */
/* ------------------------------------------------------------------------ */

START_TEST(url_enomem)
{
    struct sl__url u, base, out;
    const char *why = NULL;
    long k;

    malloc_budget = 0;
    ck_assert_int_eq(sl__url_parse_ex(&u, "http://h/", &why), SL_ENOMEM);
    ck_assert_str_eq(why, "out of memory");
    ck_assert(is_zeroed(&u));
    malloc_budget = -1;

    ck_assert_int_eq(sl__url_parse(&base, "http://h/a/b?c"), 0);
    malloc_budget = 0;
    ck_assert_int_eq(sl__url_resolve_n(&out, &base, "../d", 4, &why), SL_ENOMEM);
    ck_assert_str_eq(why, "out of memory");
    ck_assert(is_zeroed(&out));
    memset(&out, 0xa5, sizeof(out));
    ck_assert_int_eq(sl__url_copy(&out, &base), SL_ENOMEM);
    ck_assert(is_zeroed(&out));
    ck_assert_ptr_null(sl__url_target(&base));
    ck_assert_ptr_null(sl__url_host_header(&base));
    ck_assert_ptr_null(sl__url_origin(&base));
    ck_assert_ptr_null(sl__url_string(&base));
    malloc_budget = -1;

    /* every operation allocates at most once: one more success is enough */
    for (k = 0; k < 3; k++) {
        malloc_budget = k;
        int rc = sl__url_resolve(&out, &base, "//x/y");
        malloc_budget = -1;
        ck_assert_int_eq(rc, k == 0 ? SL_ENOMEM : 0);
        sl__url_free(&out);
    }
    sl__url_free(&base);
}
END_TEST

static Suite *url_suite(void)
{
    Suite *s = suite_create("url");
    TCase *tc = tcase_create("parse");
    tcase_add_loop_test(tc, url_parse_valid, 0, (int)ARRAY_SIZE(valid_urls));
    tcase_add_loop_test(tc, url_parse_invalid, 0, (int)ARRAY_SIZE(invalid_urls));
    tcase_add_test(tc, url_parse_n_refuses_nul);
    tcase_add_test(tc, url_long);
    tcase_add_test(tc, url_too_long);
    suite_add_tcase(s, tc);

    tc = tcase_create("object");
    tcase_add_test(tc, url_free_zeroed_is_safe);
    tcase_add_test(tc, url_copy);
    tcase_add_loop_test(tc, url_same_origin, 0, (int)ARRAY_SIZE(origin_pairs));
    tcase_add_test(tc, url_enomem);
    suite_add_tcase(s, tc);

    tc = tcase_create("resolve");
    tcase_add_loop_test(tc, url_remove_dot_segments, 0, (int)ARRAY_SIZE(dot_cases));
    tcase_add_loop_test(tc, url_resolve_rfc3986, 0, (int)ARRAY_SIZE(rfc_cases));
    tcase_add_test(tc, url_resolve_keeps_base_authority);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(url_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
