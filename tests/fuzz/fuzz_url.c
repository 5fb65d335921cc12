/*
 * fuzz_url.c -- libFuzzer target for http/url.c.
 *
 * Arbitrary bytes are parsed as an absolute URL and resolved as a reference
 * against two bases. Every accepted result must satisfy invariants that the
 * rest of the client relies on: the derived strings contain no control
 * character or space (nothing can be injected into a request line or a
 * header), the request target starts with '/', and the normalised string
 * parses back to the same URL (normalisation is idempotent).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ireactor -Ihttp \
 *       tests/fuzz/fuzz_url.c -o fuzz_url && ./fuzz_url -max_total_time=60
 */
#include "../../http/url.c"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Like assert(), but also with NDEBUG. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_clean(const char *s)
{
    CHECK(s != NULL);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        CHECK(*p > 0x20 && *p != 0x7f);
}

static void check_url(const struct sl__url *u)
{
    char *target = sl__url_target(u), *host = sl__url_host_header(u);
    char *origin = sl__url_origin(u), *str = sl__url_string(u);
    struct sl__url again, copy;

    check_clean(target);
    check_clean(host);
    check_clean(origin);
    check_clean(str);
    CHECK(target[0] == '/');
    CHECK(strchr(host, '%') == NULL && strchr(host, '/') == NULL && strchr(host, '@') == NULL);
    CHECK(strcmp(u->scheme, "http") == 0 || strcmp(u->scheme, "https") == 0);
    CHECK(u->port != 0);
    CHECK(u->host[0] != '\0');

    CHECK(sl__url_parse(&again, str) == 0);
    char *str2 = sl__url_string(&again);
    CHECK(str2 != NULL && strcmp(str, str2) == 0);
    CHECK(sl__url_same_origin(u, &again));
    CHECK(strcmp(u->path, again.path) == 0);
    CHECK(u->host_is_ipv4 == again.host_is_ipv4 && u->host_is_ipv6 == again.host_is_ipv6);
    free(str2);

    CHECK(sl__url_copy(&copy, u) == 0);
    CHECK(sl__url_same_origin(u, &copy) && strcmp(u->path, copy.path) == 0);
    /* an absolute URL resolves to itself (userinfo aside) */
    struct sl__url self;
    CHECK(sl__url_resolve(&self, &copy, str) == 0);
    str2 = sl__url_string(&self);
    CHECK(str2 != NULL && strcmp(str, str2) == 0);
    free(str2);

    sl__url_free(&self);
    sl__url_free(&copy);
    sl__url_free(&again);
    free(target);
    free(host);
    free(origin);
    free(str);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const bases[] = {"http://a/b/c/d;p?q", "https://u@[fe80::1%25eth0]:8443/x/"};
    const char *s = (const char *)data;
    const char *why = NULL;
    struct sl__url u, base, out;

    int rc = sl__url_parse_n(&u, s, size, &why);
    if (rc == 0) {
        check_url(&u);
        sl__url_free(&u);
    } else {
        CHECK(why != NULL);
        CHECK(rc == SL_EURL || rc == SL_EUNSUPPORTED_SCHEME);
    }

    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        CHECK(sl__url_parse(&base, bases[i]) == 0);
        why = NULL;
        rc = sl__url_resolve_n(&out, &base, s, size, &why);
        if (rc == 0) {
            check_url(&out);
            sl__url_free(&out);
        } else {
            CHECK(why != NULL);
            CHECK(rc == SL_EURL || rc == SL_EUNSUPPORTED_SCHEME);
        }
        sl__url_free(&base);
    }
    return 0;
}
