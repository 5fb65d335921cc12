/*
 * test_resp_parse.c -- the response parser, driven by the fixtures in
 * tests/fixtures/responses (in the manner of llhttp test/response and curl
 * tests/data).
 *
 * A fixture is a raw response and the transcript of events that parsing
 * it must produce: head, header fields, body bytes, trailers, completion
 * (with keep-alive and the offset where the message ended), errors, and what
 * sl__resp_parser_finish() says at EOF. Every fixture is fed in one piece,
 * split in two at every byte offset, and one byte at a time, each with and
 * without a callback that pauses at every event; all of these must produce
 * exactly the expected transcript.
 *
 * Fixture format (NAME.txt). Before a line "---":
 *   # text                          a comment
 *   option: head-request            the request was HEAD (for every response)
 *   option: max-header-bytes N      limits (default: the library's)
 *   option: max-header-fields N
 *   expect: EVENT                   one line of the expected transcript
 * After it, the raw bytes: the lines are joined without their line ends and
 * the escapes \r \n \t \\ \xHH are decoded, so CRLFs are written out.
 * Transcript lines, strings quoted with the same escapes:
 *   head STATUS HTTP/M.N "REASON" cl=N chunked=B close=B nobody=B interim=N
 *   header "NAME" "VALUE"           each field, in order
 *   body LEN "BYTES"                all body bytes of the message
 *   trailer "NAME" "VALUE"
 *   complete keep-alive=B at=OFFSET the message ended at OFFSET of the raw
 *                                   bytes; parsing resumes there after reset
 *   error CODE "DETAIL"             sl__resp_parser_feed() failed
 *   eof OK started=B | eof CODE "DETAIL"   what sl__resp_parser_finish() said
 * CODE is sl_err_name() (EPARSE, ETRUNCATED...), DETAIL the errdetail.
 */
#include <stdlib.h>

/* Allocation failures are injected by counting realloc() calls. */
static void *test_realloc(void *ptr, size_t size);
#define realloc(ptr, size) test_realloc(ptr, size)
#include "../../../http/resp_parse.c"
#undef realloc

#include <check.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef SL_TEST_SRCDIR
#error "build with -DSL_TEST_SRCDIR=\"<repository root>\""
#endif
#define FIXTURE_DIR SL_TEST_SRCDIR "/tests/fixtures/responses"

/* ---- allocation failure injection ---------------------------------------- */

static long realloc_fail_at = -1; /* fail the n-th call from now (0-based), -1: never */

static void *test_realloc(void *ptr, size_t size)
{
    if (realloc_fail_at == 0) {
        realloc_fail_at = -1;
        return NULL;
    }
    if (realloc_fail_at > 0)
        realloc_fail_at--;
    return realloc(ptr, size);
}

/* ---- growable strings ----------------------------------------------------- */

struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *data, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        while (cap - b->len < n + 1)
            cap *= 2;
        b->s = realloc(b->s, cap);
        if (b->s == NULL)
            abort();
        b->cap = cap;
    }
    memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        abort();
    sb_add(b, tmp, (size_t)n);
}

/* Append `s` quoted, with \r \n \t \" \\ and \xHH escapes, as in fixtures. */
static void sb_quote(struct sbuf *b, const char *s, size_t n)
{
    sb_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            sb_add(b, "\\r", 2);
        else if (c == '\n')
            sb_add(b, "\\n", 2);
        else if (c == '\t')
            sb_add(b, "\\t", 2);
        else if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c < 0x20 || c > 0x7e)
            sb_printf(b, "\\x%02x", c);
        else
            sb_add(b, (const char *)&c, 1);
    }
    sb_add(b, "\"", 1);
}

/* ---- fixtures ------------------------------------------------------------- */

struct fixture {
    char name[128];
    char *raw;
    size_t rawlen;
    char *expect; /* transcript, one event per line */
    bool head_request;
    struct sl__parse_limits lim;
};

static struct fixture *fixtures;
static int nfixtures;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Raw bytes: the lines after "---" joined without their line ends, then
 * \r \n \t \\ \xHH unescaped. Returns false on a bad escape. */
static bool unescape_raw(const char *s, struct sbuf *out)
{
    for (; *s != '\0'; s++) {
        char c = *s;
        if (c == '\n')
            continue;
        if (c != '\\') {
            sb_add(out, &c, 1);
            continue;
        }
        s++;
        switch (*s) {
        case 'r':
            sb_add(out, "\r", 1);
            break;
        case 'n':
            sb_add(out, "\n", 1);
            break;
        case 't':
            sb_add(out, "\t", 1);
            break;
        case '\\':
            sb_add(out, "\\", 1);
            break;
        case 'x': {
            int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
            if (lo < 0)
                return false;
            c = (char)(hi * 16 + lo);
            sb_add(out, &c, 1);
            s += 2;
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

/* Fixtures are loaded by main(), outside any test: report and exit. */
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static char *slurp(const char *path)
{
    struct sbuf b = {0};
    char tmp[4096];
    size_t n;
    FILE *f = fopen(path, "rb");

    if (f == NULL)
        die("cannot open %s", path);
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        sb_add(&b, tmp, n);
    fclose(f);
    sb_add(&b, "", 0);
    return b.s;
}

static void load_fixture(const char *file, struct fixture *fx)
{
    char path[512];
    char *text, *line, *next;
    struct sbuf expect = {0}, raw = {0};

    snprintf(fx->name, sizeof(fx->name), "%s", file);
    snprintf(path, sizeof(path), "%s/%s", FIXTURE_DIR, file);
    text = slurp(path);
    for (line = text; line != NULL; line = next) {
        unsigned long v;
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (strcmp(line, "---") == 0) {
            if (!unescape_raw(next != NULL ? next : "", &raw))
                die("%s: bad escape", file);
            break;
        }
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (strncmp(line, "expect: ", 8) == 0) {
            sb_add(&expect, line + 8, strlen(line + 8));
            sb_add(&expect, "\n", 1);
        } else if (strcmp(line, "option: head-request") == 0) {
            fx->head_request = true;
        } else if (sscanf(line, "option: max-header-bytes %lu", &v) == 1) {
            fx->lim.max_header_bytes = v;
        } else if (sscanf(line, "option: max-header-fields %lu", &v) == 1) {
            fx->lim.max_header_fields = v;
        } else {
            die("%s: unknown line '%s'", file, line);
        }
    }
    if (line == NULL)
        die("%s: no '---' line", file);
    if (expect.len == 0)
        die("%s: no expectations", file);
    sb_add(&raw, "", 0);
    fx->raw = raw.s;
    fx->rawlen = raw.len;
    fx->expect = expect.s;
    free(text);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_fixtures(void)
{
    DIR *d = opendir(FIXTURE_DIR);
    struct dirent *e;
    char **names = NULL;
    int n = 0;

    if (d == NULL)
        die("cannot open %s", FIXTURE_DIR);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".txt") != 0)
            continue;
        names = realloc(names, (size_t)(n + 1) * sizeof(*names));
        if (names == NULL)
            abort();
        names[n] = malloc(len + 1);
        if (names[n] == NULL)
            abort();
        memcpy(names[n++], e->d_name, len + 1);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(*names), cmp_names);
    fixtures = calloc((size_t)n + 1, sizeof(*fixtures));
    if (fixtures == NULL)
        abort();
    for (int i = 0; i < n; i++) {
        load_fixture(names[i], &fixtures[i]);
        free(names[i]);
    }
    free(names);
    nfixtures = n;
}

static void free_fixtures(void)
{
    for (int i = 0; i < nfixtures; i++) {
        free(fixtures[i].raw);
        free(fixtures[i].expect);
    }
    free(fixtures);
}

/* ---- the recorder: callbacks that write the transcript -------------------- */

struct rec {
    struct sl__resp_parser p;
    struct sbuf log;
    struct sbuf body;
    bool got_head;
    bool pause_all;  /* pause in on_head and in every on_body */
    int head_rc;     /* returned by on_head (unless pause_all) */
    int body_rc;     /* returned by on_body (unless pause_all) */
    int complete_rc; /* returned by on_complete */
    bool completed;
    bool keep_alive;
    unsigned nbody_calls;
};

static void check_field(const struct sl__header *f)
{
    ck_assert_uint_gt(f->name_len, 0);
    ck_assert_uint_eq(strlen(f->name), f->name_len);
    ck_assert_uint_eq(strlen(f->value), f->value_len);
    if (f->value_len > 0) {
        ck_assert(f->value[0] != ' ' && f->value[0] != '\t');
        ck_assert(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
    }
}

static int rec_on_head(void *ctx, const struct sl__resp_head *h)
{
    struct rec *r = ctx;

    ck_assert(!r->got_head);
    r->got_head = true;
    sb_printf(&r->log, "head %d HTTP/%u.%u ", h->status, h->http_major, h->http_minor);
    sb_quote(&r->log, h->reason, strlen(h->reason));
    sb_printf(&r->log, " cl=%lld chunked=%d close=%d nobody=%d interim=%u\n",
              (long long)h->content_length, h->chunked, h->close_delimited, h->no_body,
              r->p.interim_count);
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct sl__header *f = &h->headers[i];
        check_field(f);
        sb_add(&r->log, "header ", 7);
        sb_quote(&r->log, f->name, f->name_len);
        sb_add(&r->log, " ", 1);
        sb_quote(&r->log, f->value, f->value_len);
        sb_add(&r->log, "\n", 1);
    }
    return r->pause_all ? SL__PARSE_PAUSE : r->head_rc;
}

static int rec_on_body(void *ctx, const char *data, size_t len)
{
    struct rec *r = ctx;

    ck_assert(r->got_head);
    ck_assert(!r->completed);
    ck_assert_uint_gt(len, 0);
    sb_add(&r->body, data, len);
    r->nbody_calls++;
    return r->pause_all ? SL__PARSE_PAUSE : r->body_rc;
}

static int rec_on_complete(void *ctx, bool keep_alive)
{
    struct rec *r = ctx;

    ck_assert(r->got_head);
    ck_assert(!r->completed);
    r->completed = true;
    r->keep_alive = keep_alive;
    return r->complete_rc;
}

static const struct sl__resp_parser_cbs rec_cbs = {
    .on_head = rec_on_head,
    .on_body = rec_on_body,
    .on_complete = rec_on_complete,
};

static void rec_init(struct rec *r, const struct sl__parse_limits *lim, bool head_request)
{
    memset(r, 0, sizeof(*r));
    sl__resp_parser_init(&r->p, lim, &rec_cbs, r);
    sl__resp_parser_reset(&r->p, head_request);
}

/* The body received so far, once a head was delivered. */
static void rec_log_body(struct rec *r)
{
    if (!r->got_head)
        return;
    sb_printf(&r->log, "body %zu ", r->body.len);
    sb_quote(&r->log, r->body.s != NULL ? r->body.s : "", r->body.len);
    sb_add(&r->log, "\n", 1);
}

/* The message ended at absolute offset `at`: log it, get ready for the next. */
static void rec_log_complete(struct rec *r, size_t at, bool head_request)
{
    const struct sl__resp_head *h = &r->p.head;

    ck_assert(r->completed);
    ck_assert(sl__resp_parser_done(&r->p));
    rec_log_body(r);
    for (size_t i = 0; i < h->ntrailers; i++) {
        const struct sl__header *f = &h->trailers[i];
        check_field(f);
        sb_add(&r->log, "trailer ", 8);
        sb_quote(&r->log, f->name, f->name_len);
        sb_add(&r->log, " ", 1);
        sb_quote(&r->log, f->value, f->value_len);
        sb_add(&r->log, "\n", 1);
    }
    sb_printf(&r->log, "complete keep-alive=%d at=%zu\n", r->keep_alive, at);
    sl__resp_parser_reset(&r->p, head_request);
    r->got_head = false;
    r->completed = false;
    r->body.len = 0;
}

static void rec_log_error(struct rec *r, const char *what, int rc)
{
    const char *detail = sl__resp_parser_errdetail(&r->p);

    ck_assert_ptr_nonnull(detail);
    rec_log_body(r);
    sb_printf(&r->log, "%s %s ", what, sl_err_name(rc));
    sb_quote(&r->log, detail, strlen(detail));
    sb_add(&r->log, "\n", 1);
}

/*
 * Parse fx->raw fed in pieces that end at cuts[0..ncuts) and at the end,
 * then signal EOF. Like a connection would, reset after each complete
 * message and feed the bytes after its end. Returns the transcript.
 */
static char *run_fixture(const struct fixture *fx, const size_t *cuts, size_t ncuts, bool pause_all)
{
    struct rec r;
    size_t pos = 0;
    unsigned rounds = 0;
    bool started;
    int rc;

    rec_init(&r, &fx->lim, fx->head_request);
    r.pause_all = pause_all;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : fx->rawlen;
        for (;;) {
            size_t n = 99999;
            ck_assert_uint_lt(++rounds, 1000000);
            rc = sl__resp_parser_feed(&r.p, fx->raw + pos, end - pos, &n);
            ck_assert_uint_le(n, end - pos);
            pos += n;
            if (rc < 0) {
                rec_log_error(&r, "error", rc);
                goto out;
            }
            if (rc == SL__PARSE_PAUSE) {
                ck_assert(pause_all);
                /* Paused: nothing moves until resumed. */
                ck_assert_int_eq(sl__resp_parser_feed(&r.p, fx->raw + pos, end - pos, &n),
                                 SL__PARSE_PAUSE);
                ck_assert_uint_eq(n, 0);
                ck_assert_int_eq(sl__resp_parser_finish(&r.p), SL_EBUSY);
                sl__resp_parser_resume(&r.p);
                continue; /* feed the rest, even if there is none */
            }
            ck_assert_int_eq(rc, 0);
            if (sl__resp_parser_done(&r.p)) {
                rec_log_complete(&r, pos, fx->head_request);
                continue;
            }
            ck_assert(!r.completed);
            ck_assert_uint_eq(pos, end);
            break;
        }
    }
    rc = sl__resp_parser_finish(&r.p);
    started = sl__resp_parser_started(&r.p);
    if (r.completed)
        rec_log_complete(&r, pos, fx->head_request);
    if (rc < 0) {
        rec_log_error(&r, "eof", rc);
    } else {
        ck_assert_int_eq(rc, 0);
        sb_printf(&r.log, "eof OK started=%d\n", started);
    }
out:
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    return r.log.s;
}

static void expect_transcript(const struct fixture *fx, char *got, const char *mode, size_t arg)
{
    ck_assert_msg(got != NULL && strcmp(got, fx->expect) == 0,
                  "%s (%s %zu):\n--- expected\n%s--- got\n%s", fx->name, mode, arg, fx->expect,
                  got != NULL ? got : "(nothing)\n");
    free(got);
}

START_TEST(fixture_events)
{
    const struct fixture *fx = &fixtures[_i];
    size_t *cuts = malloc((fx->rawlen + 1) * sizeof(*cuts));

    for (int pause = 0; pause <= 1; pause++) {
        expect_transcript(fx, run_fixture(fx, NULL, 0, pause), "one feed, pause", (size_t)pause);
        for (size_t k = 0; k <= fx->rawlen; k++)
            expect_transcript(fx, run_fixture(fx, &k, 1, pause),
                              pause ? "split+pause at" : "split at", k);
        for (size_t k = 1; k < fx->rawlen; k++)
            cuts[k - 1] = k;
        expect_transcript(fx, run_fixture(fx, cuts, fx->rawlen > 0 ? fx->rawlen - 1 : 0, pause),
                          "byte by byte, pause", (size_t)pause);
    }
    free(cuts);
}
END_TEST

START_TEST(fixtures_present)
{
    ck_assert_int_ge(nfixtures, 30);
}
END_TEST

/* ---- direct tests ----------------------------------------------------------- */

static const char resp_body[] = "HTTP/1.1 200 OK\r\n"
                                "Transfer-Encoding: chunked\r\n"
                                "\r\n"
                                "5\r\nhello\r\n"
                                "6\r\n world\r\n"
                                "0\r\n"
                                "\r\n"
                                "HTTP/1.1 204 No Content\r\n\r\n";
#define RESP_BODY_FIRST_END (sizeof(resp_body) - 1 - strlen("HTTP/1.1 204 No Content\r\n\r\n"))

START_TEST(pause_in_body_and_resume)
{
    struct rec r;
    size_t n, pos = 0, len = sizeof(resp_body) - 1;
    unsigned pauses = 0;
    int rc;

    rec_init(&r, NULL, false);
    r.body_rc = SL__PARSE_PAUSE;
    for (;;) {
        rc = sl__resp_parser_feed(&r.p, resp_body + pos, len - pos, &n);
        pos += n;
        if (rc != SL__PARSE_PAUSE)
            break;
        pauses++;
        /* Each pause comes right after the bytes of one on_body call. */
        ck_assert_uint_eq(r.nbody_calls, pauses);
        ck_assert(!r.completed);
        sl__resp_parser_resume(&r.p);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(pauses, 2);
    ck_assert(r.completed);
    ck_assert(r.keep_alive);
    ck_assert_uint_eq(pos, RESP_BODY_FIRST_END);
    ck_assert_uint_eq(r.body.len, 11);
    ck_assert(memcmp(r.body.s, "hello world", 11) == 0);
    /* Done: nothing more is consumed until reset. */
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp_body + pos, len - pos, &n), 0);
    ck_assert_uint_eq(n, 0);
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

START_TEST(pause_in_last_body_call_needs_empty_feed)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    struct rec r;
    size_t n;

    rec_init(&r, NULL, false);
    r.body_rc = SL__PARSE_PAUSE;
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), SL__PARSE_PAUSE);
    ck_assert_uint_eq(n, sizeof(resp) - 1);
    ck_assert(!r.completed);
    sl__resp_parser_resume(&r.p);
    r.body_rc = 0;
    /* All bytes are consumed, but on_complete is still pending. */
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert(r.completed);
    ck_assert_uint_eq(r.nbody_calls, 1);
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

START_TEST(pause_in_head)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
    struct rec r;
    size_t n, head_len = sizeof("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n") - 1;

    rec_init(&r, NULL, false);
    r.head_rc = SL__PARSE_PAUSE;
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), SL__PARSE_PAUSE);
    ck_assert_uint_eq(n, head_len);
    ck_assert(r.got_head);
    ck_assert_uint_eq(r.nbody_calls, 0);
    sl__resp_parser_resume(&r.p);
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp + head_len, sizeof(resp) - 1 - head_len, &n),
                     0);
    ck_assert_uint_eq(n, 2);
    ck_assert(r.completed);
    ck_assert_uint_eq(r.body.len, 2);
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

/* A close-delimited body whose head arrived, on_head paused, then EOF. */
START_TEST(pause_in_head_then_eof)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\n\r\n";
    struct rec r;
    size_t n;

    rec_init(&r, NULL, false);
    r.head_rc = SL__PARSE_PAUSE;
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), SL__PARSE_PAUSE);
    ck_assert_int_eq(sl__resp_parser_finish(&r.p), SL_EBUSY);
    sl__resp_parser_resume(&r.p);
    ck_assert_int_eq(sl__resp_parser_finish(&r.p), 0);
    ck_assert(r.completed);
    ck_assert(!r.keep_alive);
    ck_assert_uint_eq(r.body.len, 0);
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

START_TEST(callback_errors_abort)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    struct {
        int head_rc, body_rc, complete_rc, want;
        const char *detail;
    } cases[] = {
        {SL_EHTTP_STATUS, 0, 0, SL_EHTTP_STATUS, "aborted by on_head"},
        {0, SL_ECANCELED, 0, SL_ECANCELED, "aborted by on_body"},
        {0, 0, SL_EBODY_TOO_BIG, SL_EBODY_TOO_BIG, "aborted by on_complete"},
    };

    for (size_t i = 0; i < SL__ARRAY_SIZE(cases); i++) {
        struct rec r;
        size_t n;
        rec_init(&r, NULL, false);
        r.head_rc = cases[i].head_rc;
        r.body_rc = cases[i].body_rc;
        r.complete_rc = cases[i].complete_rc;
        ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), cases[i].want);
        ck_assert_str_eq(sl__resp_parser_errdetail(&r.p), cases[i].detail);
        /* Sticky, for feed and finish alike. */
        ck_assert_int_eq(sl__resp_parser_feed(&r.p, "x", 1, &n), cases[i].want);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(sl__resp_parser_finish(&r.p), cases[i].want);
        if (cases[i].head_rc != 0)
            ck_assert_uint_eq(r.nbody_calls, 0);
        if (cases[i].body_rc != 0)
            ck_assert(!r.completed);
        /* reset clears the error: the parser can be used again. */
        sl__resp_parser_reset(&r.p, false);
        ck_assert_ptr_null(sl__resp_parser_errdetail(&r.p));
        r.head_rc = r.body_rc = r.complete_rc = 0;
        r.got_head = r.completed = false;
        ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), 0);
        ck_assert_uint_eq(n, sizeof(resp) - 1);
        ck_assert(r.completed);
        sl__resp_parser_free(&r.p);
        free(r.body.s);
        free(r.log.s);
    }
}
END_TEST

/* Build a head with `nfields` fields, padded to exactly `total` bytes. */
static char *make_head(size_t nfields, size_t total, size_t *len)
{
    struct sbuf b = {0};
    size_t pad;

    sb_add(&b, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", 36);
    for (size_t i = 2; i < nfields; i++)
        sb_printf(&b, "X-F%04zu: v\r\n", i);
    /* One last field holds the padding: "Pad: " + value + CRLF, then CRLF. */
    ck_assert_uint_ge(total, b.len + 5 + 1 + 2 + 2);
    pad = total - b.len - 5 - 2 - 2;
    sb_add(&b, "Pad: ", 5);
    for (size_t i = 0; i < pad; i++)
        sb_add(&b, "p", 1);
    sb_add(&b, "\r\n\r\n", 4);
    ck_assert_uint_eq(b.len, total);
    *len = b.len;
    return b.s;
}

static int parse_whole(const char *data, size_t len, bool bytewise, size_t *nheaders)
{
    struct rec r;
    size_t n, pos = 0;
    int rc = 0;

    rec_init(&r, NULL, false);
    while (pos < len && rc == 0 && !r.completed) {
        rc = sl__resp_parser_feed(&r.p, data + pos, bytewise ? 1 : len - pos, &n);
        pos += n;
    }
    if (rc == 0) {
        ck_assert(r.completed);
        *nheaders = r.p.head.nheaders;
    }
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
    return rc;
}

START_TEST(default_limits)
{
    size_t len, nh = 0;
    char *head;

    for (int bytewise = 0; bytewise <= 1; bytewise++) {
        /* 100 fields pass, 101 do not. */
        head = make_head(100, 2000, &len);
        ck_assert_int_eq(parse_whole(head, len, bytewise, &nh), 0);
        ck_assert_uint_eq(nh, 100);
        free(head);
        head = make_head(101, 2000, &len);
        ck_assert_int_eq(parse_whole(head, len, bytewise, &nh), SL_EHEADER_TOO_BIG);
        free(head);
        /* A head of exactly 64 KiB passes, one byte more does not. */
        head = make_head(3, 64 * 1024, &len);
        ck_assert_int_eq(parse_whole(head, len, bytewise, &nh), 0);
        ck_assert_uint_eq(nh, 3);
        free(head);
        head = make_head(3, 64 * 1024 + 1, &len);
        ck_assert_int_eq(parse_whole(head, len, bytewise, &nh), SL_EHEADER_TOO_BIG);
        free(head);
    }
}
END_TEST

/* Whitespace between header lines is not stored, but it is counted. */
START_TEST(limit_counts_unstored_bytes)
{
    struct sbuf b = {0};
    struct sl__parse_limits lim = {.max_header_bytes = 1000};
    struct rec r;
    size_t n;
    int rc;

    sb_add(&b, "HTTP/1.1 200 OK\r\nA:", 19);
    for (int i = 0; i < 2000; i++)
        sb_add(&b, " ", 1);
    rec_init(&r, &lim, false);
    rc = sl__resp_parser_feed(&r.p, b.s, b.len, &n);
    ck_assert_int_eq(rc, SL_EHEADER_TOO_BIG);
    ck_assert_str_eq(sl__resp_parser_errdetail(&r.p), "response head exceeds max_header_bytes");
    sl__resp_parser_free(&r.p);
    /* Fed in small pieces, the limit trips at the end of a feed. */
    rec_init(&r, &lim, false);
    rc = 0;
    for (size_t pos = 0; pos < b.len && rc == 0; pos += n)
        rc = sl__resp_parser_feed(&r.p, b.s + pos, SL__MIN(7, b.len - pos), &n);
    ck_assert_int_eq(rc, SL_EHEADER_TOO_BIG);
    sl__resp_parser_free(&r.p);
    free(b.s);
}
END_TEST

START_TEST(header_lookup)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "connection: Keep-Alive ,  Upgrade\r\n"
                               "X-Dup: one\r\n"
                               "x-dup: two\r\n"
                               "Connection: TE\r\n"
                               "X-Empty:\r\n"
                               "Content-Length: 0\r\n\r\n";
    struct rec r;
    size_t n;
    const struct sl__resp_head *h = &r.p.head;

    rec_init(&r, NULL, false);
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, resp, sizeof(resp) - 1, &n), 0);
    ck_assert(r.completed);
    ck_assert_str_eq(sl__resp_header(h, "content-type"), "text/plain");
    ck_assert_str_eq(sl__resp_header(h, "CONTENT-TYPE"), "text/plain");
    ck_assert_str_eq(sl__resp_header(h, "x-dup"), "one");
    ck_assert_str_eq(sl__resp_header(h, "X-Empty"), "");
    ck_assert_ptr_null(sl__resp_header(h, "X-Missing"));
    ck_assert_ptr_null(sl__resp_header(h, "Content-Typ"));
    ck_assert(sl__resp_header_has_token(h, "Connection", "keep-alive"));
    ck_assert(sl__resp_header_has_token(h, "connection", "upgrade"));
    ck_assert(sl__resp_header_has_token(h, "Connection", "te")); /* second field */
    ck_assert(!sl__resp_header_has_token(h, "Connection", "close"));
    ck_assert(!sl__resp_header_has_token(h, "Connection", "keep"));
    ck_assert(!sl__resp_header_has_token(h, "X-Empty", "x"));
    ck_assert(sl__resp_header_has_token(h, "X-Dup", "TWO"));
    sl__resp_parser_free(&r.p);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

/* The head delivered to on_head stays put while trailers grow their own
 * arena; both stay valid until reset. */
START_TEST(head_stable_until_reset)
{
    struct sbuf b = {0};
    struct rec r;
    const char *ct;
    size_t n;

    sb_add(&b, "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nTransfer-Encoding: chunked\r\n\r\n", 66);
    sb_add(&b, "1\r\nx\r\n0\r\n", 9);
    for (int i = 0; i < 50; i++)
        sb_printf(&b, "T-%02d: %0200d\r\n", i, i);
    sb_add(&b, "\r\n", 2);
    rec_init(&r, NULL, false);
    r.head_rc = SL__PARSE_PAUSE;
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, b.s, b.len, &n), SL__PARSE_PAUSE);
    ct = sl__resp_header(&r.p.head, "Content-Type");
    ck_assert_str_eq(ct, "a/b");
    sl__resp_parser_resume(&r.p);
    ck_assert_int_eq(sl__resp_parser_feed(&r.p, b.s + n, b.len - n, &n), 0);
    ck_assert(r.completed);
    ck_assert_ptr_eq(sl__resp_header(&r.p.head, "Content-Type"), ct);
    ck_assert_str_eq(ct, "a/b");
    ck_assert_uint_eq(r.p.head.ntrailers, 50);
    ck_assert_str_eq(r.p.head.trailers[49].name, "T-49");
    ck_assert_uint_eq(r.p.head.trailers[49].value_len, 200);
    sl__resp_parser_free(&r.p);
    free(b.s);
    free(r.body.s);
    free(r.log.s);
}
END_TEST

START_TEST(null_callbacks)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    struct sl__resp_parser p;
    size_t n;

    sl__resp_parser_init(&p, NULL, NULL, NULL);
    ck_assert(!sl__resp_parser_started(&p));
    ck_assert_int_eq(sl__resp_parser_finish(&p), 0); /* nothing arrived */
    ck_assert_int_eq(sl__resp_parser_feed(&p, resp, sizeof(resp) - 1, &n), 0);
    ck_assert_uint_eq(n, sizeof(resp) - 1);
    ck_assert(sl__resp_parser_done(&p));
    ck_assert(sl__resp_parser_started(&p));
    ck_assert_ptr_null(sl__resp_parser_errdetail(&p));
    ck_assert_int_eq(p.head.status, 200);
    sl__resp_parser_free(&p);
    sl__resp_parser_free(&p); /* twice is harmless */
}
END_TEST

/* Fail each allocation in turn: the parse fails cleanly with SL_ENOMEM,
 * or succeeds once the failure point is past the last allocation. */
START_TEST(allocation_failures)
{
    struct sbuf b = {0};
    bool succeeded = false;

    sb_add(&b, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", 45);
    for (int i = 0; i < 40; i++)
        sb_printf(&b, "X-%02d: %0100d\r\n", i, i);
    sb_add(&b, "\r\n1\r\nx\r\n0\r\n", 11);
    for (int i = 0; i < 20; i++)
        sb_printf(&b, "T-%02d: %0100d\r\n", i, i);
    sb_add(&b, "\r\n", 2);
    for (long k = 0; k < 100 && !succeeded; k++) {
        struct rec r;
        size_t n;
        int rc;
        rec_init(&r, NULL, false);
        realloc_fail_at = k;
        rc = sl__resp_parser_feed(&r.p, b.s, b.len, &n);
        if (realloc_fail_at == -1) { /* the k-th allocation failed */
            ck_assert_int_eq(rc, SL_ENOMEM);
            ck_assert_ptr_nonnull(sl__resp_parser_errdetail(&r.p));
        } else {
            ck_assert_int_eq(rc, 0);
            ck_assert(r.completed);
            ck_assert_uint_eq(r.p.head.nheaders, 41);
            ck_assert_uint_eq(r.p.head.ntrailers, 20);
            succeeded = true;
        }
        realloc_fail_at = -1;
        sl__resp_parser_free(&r.p);
        free(r.body.s);
        free(r.log.s);
    }
    ck_assert(succeeded);
    free(b.s);
}
END_TEST

/* llhttp.c holds two parsers and #if LLHTTP_STRICT_MODE picks one: the
 * library must be built with -DLLHTTP_STRICT_MODE=1. A CR that is not
 * followed by LF at the end of the head is an error in strict mode only. */
START_TEST(llhttp_built_strict)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\n\rX";
    struct sl__resp_parser p;
    size_t n;
    int rc;

    sl__resp_parser_init(&p, NULL, NULL, NULL);
    rc = sl__resp_parser_feed(&p, resp, sizeof(resp) - 1, &n);
    ck_assert_msg(rc == SL_EPARSE && llhttp_get_errno(&p.parser) == HPE_STRICT,
                  "llhttp was not compiled with -DLLHTTP_STRICT_MODE=1 (rc %d)", rc);
    ck_assert_str_eq(sl__resp_parser_errdetail(&p), "Expected LF after headers");
    sl__resp_parser_free(&p);
}
END_TEST

static Suite *resp_parse_suite(void)
{
    Suite *s = suite_create("resp_parse");
    TCase *tc = tcase_create("fixtures");

    tcase_add_test(tc, fixtures_present);
    tcase_add_loop_test(tc, fixture_events, 0, nfixtures);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, llhttp_built_strict);
    tcase_add_test(tc, pause_in_body_and_resume);
    tcase_add_test(tc, pause_in_last_body_call_needs_empty_feed);
    tcase_add_test(tc, pause_in_head);
    tcase_add_test(tc, pause_in_head_then_eof);
    tcase_add_test(tc, callback_errors_abort);
    tcase_add_test(tc, default_limits);
    tcase_add_test(tc, limit_counts_unstored_bytes);
    tcase_add_test(tc, header_lookup);
    tcase_add_test(tc, head_stable_until_reset);
    tcase_add_test(tc, null_callbacks);
    tcase_add_test(tc, allocation_failures);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    load_fixtures();
    sr = srunner_create(resp_parse_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    free_fixtures();
    return failed == 0 ? 0 : 1;
}
