/*
 * resp_parse.c -- HTTP/1.1 responses on llhttp, strictly.
 *
 * llhttp does the syntax. It must be built with LLHTTP_STRICT_MODE=1, and we
 * set no lenient flag. This file adds what a client needs on top of it, and it
 * is the one place where HPE_* codes become SL_E* codes.
 *
 * llhttp is made to stop (HPE_PAUSED) at three points of every response:
 * after the head, after the size line of the last chunk, and at the end of
 * the message. A stop gives the exact byte offset (llhttp_get_error_pos).
 * That has three uses:
 *   - limits count raw bytes exactly: the head, and separately the trailers;
 *   - on_head and on_complete run from feed_loop(), not from inside llhttp,
 *     so that a pause or an error there needs no llhttp state;
 *   - the caller learns where the message ended. The bytes after it are left
 *     unconsumed for the next response (pipelining, keep-alive).
 * Only on_body runs inside llhttp. Its pause is llhttp's own pause: the span
 * callback has received its bytes, and llhttp resumes right after them.
 *
 * llhttp hands over a field's name and value in pieces, and a piece can
 * span feeds. The pieces are appended to a growable arena, which
 * max_header_bytes bounds. Pointers are set once the section is complete.
 * To llhttp a 1xx response is a whole message: we skip it with
 * llhttp_reset() and carry on with the final response.
 */
#include "resp_parse.h"

#include "reactor-int.h"

#include <stdlib.h>
#include <string.h>

/* The piece of an sl__hdr_list that is being appended to. */
enum piece { PIECE_NONE, PIECE_REASON, PIECE_NAME, PIECE_VALUE };

static void parser_set_state(struct sl__resp_parser *p, enum sl__resp_state s)
{
    p->state = s; /* the only place that assigns p->state */
}

static int parser_fail(struct sl__resp_parser *p, int err, const char *detail)
{
    p->error = err;
    p->errdetail = detail;
    parser_set_state(p, SL__RESP_ERROR);
    return err;
}

/* llhttp stopped with `e` (neither HPE_OK nor HPE_PAUSED). Our own callbacks
 * fail through parser_fail() first and make llhttp return HPE_USER or
 * HPE_CB_*; everything else is llhttp's verdict on the input. */
static int parser_fail_llhttp(struct sl__resp_parser *p, llhttp_errno_t e)
{
    if (p->error != 0)
        return p->error;
    switch (e) {
    case HPE_INVALID_EOF_STATE:
        return parser_fail(p, SL_ETRUNCATED, llhttp_get_error_reason(&p->parser));
    default:
        return parser_fail(p, SL_EPARSE, llhttp_get_error_reason(&p->parser));
    }
}

/* Map a user callback's return value. */
static int parser_user_rc(struct sl__resp_parser *p, int rc, const char *detail)
{
    if (rc < 0)
        return parser_fail(p, rc, detail);
    if (rc > 0) {
        p->paused = true;
        return SL__PARSE_PAUSE;
    }
    return 0;
}

/* ---- header lists ------------------------------------------------------- */

static int list_reserve(struct sl__hdr_list *l, size_t more)
{
    size_t cap = l->cap != 0 ? l->cap : 256;
    char *buf;

    if (more <= l->cap - l->len)
        return 0;
    while (cap - l->len < more) {
        if (cap > SIZE_MAX / 2)
            return SL_ENOMEM;
        cap *= 2;
    }
    buf = realloc(l->buf, cap);
    if (buf == NULL)
        return SL_ENOMEM;
    l->buf = buf;
    l->cap = cap;
    return 0;
}

/* Runs for every piece of every header line: the common case (it fits)
 * stays inline, growing does not. */
static inline int list_append(struct sl__hdr_list *l, const char *s, size_t n)
{
    if (n > l->cap - l->len) {
        int rc = list_reserve(l, n);
        if (rc < 0)
            return rc;
    }
    if (n > 0)
        memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

/* NUL-terminate the open piece. A value loses its trailing whitespace here
 * (llhttp passes it on; leading whitespace never reaches us). */
static int list_close_piece(struct sl__hdr_list *l)
{
    if (l->open == PIECE_NONE)
        return 0;
    if (l->open == PIECE_VALUE) {
        struct sl__header *f = &l->fields[l->nfields - 1];
        while (f->value_len > 0 && (l->buf[l->len - 1] == ' ' || l->buf[l->len - 1] == '\t')) {
            f->value_len--;
            l->len--;
        }
    }
    l->open = PIECE_NONE;
    if (l->len == l->cap) {
        int rc = list_reserve(l, 1);
        if (rc < 0)
            return rc;
    }
    l->buf[l->len++] = '\0';
    return 0;
}

static int list_add_field(struct sl__hdr_list *l)
{
    if (l->nfields == l->cap_fields) {
        size_t cap = l->cap_fields != 0 ? l->cap_fields * 2 : 16;
        struct sl__header *f;
        if (cap > SIZE_MAX / sizeof(*f))
            return SL_ENOMEM;
        f = realloc(l->fields, cap * sizeof(*f));
        if (f == NULL)
            return SL_ENOMEM;
        l->fields = f;
        l->cap_fields = cap;
    }
    l->fields[l->nfields++] = (struct sl__header){.name = NULL};
    l->open = PIECE_NAME;
    return 0;
}

/* Point every field into `buf`, whose fields start at offset `off`. */
static void list_fix(struct sl__hdr_list *l, size_t off)
{
    for (size_t i = 0; i < l->nfields; i++) {
        struct sl__header *f = &l->fields[i];
        f->name = l->buf + off;
        off += f->name_len + 1;
        f->value = l->buf + off;
        off += f->value_len + 1;
    }
}

static void list_clear(struct sl__hdr_list *l)
{
    l->len = 0;
    l->nfields = 0;
    l->open = PIECE_NONE;
}

static void list_free(struct sl__hdr_list *l)
{
    free(l->buf);
    free(l->fields);
    *l = (struct sl__hdr_list){.buf = NULL};
}

/* ---- section limits ----------------------------------------------------- */

/* The head and the trailer section are bounded in raw bytes, from their
 * first byte (leading empty lines included) to the end of their empty line.
 * `off` is an offset in the buffer of the feed in progress. */
static size_t sect_len(const struct sl__resp_parser *p, size_t off)
{
    return p->sect_bytes + (off - p->sect_start);
}

static bool in_trailers(const struct sl__resp_parser *p)
{
    return p->state == SL__RESP_TRAILERS || p->state == SL__RESP_TRAILER_START;
}

static int sect_check(struct sl__resp_parser *p, size_t off, bool trailers)
{
    if (sect_len(p, off) <= p->limits.max_header_bytes)
        return 0;
    return parser_fail(p, SL_EHEADER_TOO_BIG,
                       trailers ? "trailer section exceeds max_header_bytes"
                                : "response head exceeds max_header_bytes");
}

/* ---- llhttp callbacks --------------------------------------------------- */

/* Fail from inside an llhttp callback: llhttp then stops with HPE_USER (or
 * HPE_CB_* for callbacks without data) and feed_loop() returns p->error. */
static int cb_fail(struct sl__resp_parser *p, int err, const char *detail)
{
    parser_fail(p, err, detail);
    return HPE_USER;
}

static struct sl__resp_parser *from_llhttp(llhttp_t *h)
{
    return sl__container_of(h, struct sl__resp_parser, parser);
}

static struct sl__hdr_list *cur_list(struct sl__resp_parser *p)
{
    return in_trailers(p) ? &p->trls : &p->hdrs;
}

/* Check the bounded section up to the end of the span at `at`. */
static int span_begin(struct sl__resp_parser *p, const char *at, size_t n)
{
    return sect_check(p, (size_t)(at - p->chunk) + n, in_trailers(p));
}

static int cb_message_begin(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);

    list_clear(&p->hdrs);
    p->hdrs.open = PIECE_REASON;
    p->reason_len = 0;
    parser_set_state(p, SL__RESP_HEAD);
    return 0;
}

static int cb_status(llhttp_t *h, const char *at, size_t n)
{
    struct sl__resp_parser *p = from_llhttp(h);
    int rc;

    if (span_begin(p, at, n) < 0)
        return HPE_USER;
    rc = list_append(&p->hdrs, at, n);
    if (rc < 0)
        return cb_fail(p, rc, "out of memory storing the status line");
    p->reason_len += n;
    return 0;
}

static int cb_status_complete(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);
    int rc = list_close_piece(&p->hdrs);

    if (rc < 0)
        return cb_fail(p, rc, "out of memory storing the status line");
    return 0;
}

static int cb_header_field(llhttp_t *h, const char *at, size_t n)
{
    struct sl__resp_parser *p = from_llhttp(h);
    struct sl__hdr_list *l = cur_list(p);
    int rc = 0;

    if (span_begin(p, at, n) < 0)
        return HPE_USER;
    if (l->open != PIECE_NAME) {
        /* A new field (the pieces of one name arrive back to back). */
        if (l->nfields >= p->limits.max_header_fields) {
            return cb_fail(p, SL_EHEADER_TOO_BIG,
                           l == &p->trls ? "too many trailer fields (max_header_fields)"
                                         : "too many header fields (max_header_fields)");
        }
        rc = list_close_piece(l);
        if (rc == 0)
            rc = list_add_field(l);
    }
    if (rc == 0)
        rc = list_append(l, at, n);
    if (rc < 0)
        return cb_fail(p, rc, "out of memory storing header fields");
    l->fields[l->nfields - 1].name_len += n;
    return 0;
}

static int cb_header_field_complete(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);
    struct sl__hdr_list *l = cur_list(p);
    int rc;

    /* llhttp 8.1 accepts ": value" (an empty name); RFC 9110 does not. */
    if (l->open != PIECE_NAME || l->fields[l->nfields - 1].name_len == 0)
        return cb_fail(p, SL_EPARSE, "empty header field name");
    rc = list_close_piece(l);
    if (rc < 0)
        return cb_fail(p, rc, "out of memory storing header fields");
    l->open = PIECE_VALUE;
    return 0;
}

static int cb_header_value(llhttp_t *h, const char *at, size_t n)
{
    struct sl__resp_parser *p = from_llhttp(h);
    struct sl__hdr_list *l = cur_list(p);
    int rc;

    if (span_begin(p, at, n) < 0)
        return HPE_USER;
    if (l->open != PIECE_VALUE) /* llhttp always ends the name first */
        return cb_fail(p, SL_EPARSE, "header value without a name");
    /* An obs-fold continuation line arrives as one more piece of the same
     * value (llhttp 8.1 drops the CRLF and keeps the leading whitespace). */
    rc = list_append(l, at, n);
    if (rc < 0)
        return cb_fail(p, rc, "out of memory storing header fields");
    l->fields[l->nfields - 1].value_len += n;
    return 0;
}

static int cb_headers_complete(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);
    int status = h->status_code;

    /*
     * RFC 9112 6.3: a response to HEAD, and any 1xx, 204 or 304 response,
     * ends with its head whatever Content-Length or Transfer-Encoding say.
     * Returning 1 from this callback would tell llhttp so (it sets
     * F_SKIPBODY), but we return HPE_PAUSED to stop here, and the two cannot
     * be combined: after a pause llhttp resumes straight into its
     * after-headers step. So we set the very flag that return value sets.
     */
    if (p->head_request || status / 100 == 1 || status == 204 || status == 304)
        h->flags = (uint16_t)(h->flags | F_SKIPBODY);
    parser_set_state(p, SL__RESP_HEAD_END);
    return HPE_PAUSED;
}

static int cb_chunk_header(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);

    /* The last chunk: stop to learn where the trailer section starts. */
    if (h->content_length != 0)
        return 0;
    parser_set_state(p, SL__RESP_TRAILER_START);
    return HPE_PAUSED;
}

static int cb_body(llhttp_t *h, const char *at, size_t n)
{
    struct sl__resp_parser *p = from_llhttp(h);
    int rc;

    /* llhttp flushes an open span at the end of every execute, possibly
     * empty (finish() runs one with no bytes). */
    if (n == 0 || p->cbs.on_body == NULL)
        return 0;
    rc = parser_user_rc(p, p->cbs.on_body(p->ctx, at, n), "aborted by on_body");
    if (rc < 0)
        return HPE_USER;
    return rc == SL__PARSE_PAUSE ? HPE_PAUSED : 0;
}

static int cb_message_complete(llhttp_t *h)
{
    struct sl__resp_parser *p = from_llhttp(h);

    /* Read now: llhttp clears its flags right after this callback. */
    p->keep_alive = llhttp_should_keep_alive(h) != 0;
    parser_set_state(p, SL__RESP_MSG_END);
    return HPE_PAUSED;
}

/* ---- the stops ---------------------------------------------------------- */

/* llhttp stopped right after the head, at `off`. */
static int head_end(struct sl__resp_parser *p, size_t off)
{
    struct sl__resp_head *h = &p->head;
    llhttp_t *hp = &p->parser;
    int rc;

    if (sect_check(p, off, false) < 0)
        return p->error;
    rc = list_close_piece(&p->hdrs);
    if (rc < 0)
        return parser_fail(p, rc, "out of memory storing header fields");
    list_fix(&p->hdrs, p->reason_len + 1);

    h->status = hp->status_code;
    h->http_major = hp->http_major;
    h->http_minor = hp->http_minor;
    h->reason = p->hdrs.buf != NULL ? p->hdrs.buf : "";
    h->headers = p->hdrs.fields;
    h->nheaders = p->hdrs.nfields;
    h->trailers = NULL;
    h->ntrailers = 0;
    h->chunked = (hp->flags & F_CHUNKED) != 0;
    h->no_body = (hp->flags & F_SKIPBODY) != 0;
    h->close_delimited = llhttp_message_needs_eof(hp) != 0;
    h->content_length = -1;
    if (hp->flags & F_CONTENT_LENGTH) {
        /* llhttp only rejects values above UINT64_MAX. */
        if (hp->content_length > (uint64_t)INT64_MAX)
            return parser_fail(p, SL_EPARSE, "Content-Length too large");
        h->content_length = (int64_t)hp->content_length;
    }

    /* llhttp 8.1 also takes HTTP/0.9 and HTTP/2.0 status lines, and
     * "HTTP/1.1  200" (two spaces) as status 0. */
    if (h->http_major != 1)
        return parser_fail(p, SL_EPARSE, "unsupported HTTP version");
    if (h->status < 100)
        return parser_fail(p, SL_EPARSE, "invalid status code");
    if (h->status == 101)
        return parser_fail(p, SL_EPARSE, "unexpected 101 Switching Protocols");

    parser_set_state(p, SL__RESP_BODY);
    if (h->status < 200) {
        p->interim_count++;
        if (p->cbs.on_interim != NULL)
            return parser_user_rc(p, p->cbs.on_interim(p->ctx, h), "aborted by on_interim");
        return 0;
    }
    if (p->cbs.on_head == NULL)
        return 0;
    return parser_user_rc(p, p->cbs.on_head(p->ctx, h), "aborted by on_head");
}

/* llhttp stopped at the end of a message, at `off`. */
static int msg_end(struct sl__resp_parser *p, size_t off)
{
    struct sl__resp_head *h = &p->head;
    int rc;

    if (h->status < 200) {
        /* An interim response: the final one follows on the same bytes. */
        llhttp_reset(&p->parser);
        list_clear(&p->hdrs);
        p->sect_bytes = 0;
        p->sect_start = off;
        parser_set_state(p, SL__RESP_IDLE);
        return 0;
    }
    if (h->chunked && !h->no_body) {
        if (sect_check(p, off, true) < 0)
            return p->error;
        rc = list_close_piece(&p->trls);
        if (rc < 0)
            return parser_fail(p, rc, "out of memory storing trailer fields");
        list_fix(&p->trls, 0);
        h->trailers = p->trls.fields;
        h->ntrailers = p->trls.nfields;
    }
    parser_set_state(p, SL__RESP_DONE);
    if (p->cbs.on_complete == NULL)
        return 0;
    rc = p->cbs.on_complete(p->ctx, p->keep_alive);
    return rc < 0 ? parser_fail(p, rc, "aborted by on_complete") : 0;
}

/* llhttp returned HPE_PAUSED at `off` without a user callback asking. */
static int parser_stopped(struct sl__resp_parser *p, size_t off)
{
    switch (p->state) {
    case SL__RESP_HEAD_END:
        return head_end(p, off);
    case SL__RESP_TRAILER_START:
        p->sect_bytes = 0;
        p->sect_start = off;
        parser_set_state(p, SL__RESP_TRAILERS);
        return 0;
    case SL__RESP_MSG_END:
        return msg_end(p, off);
    default:
        assert(!"llhttp paused in an unexpected state");
        return parser_fail(p, SL_EPARSE, "internal parser error");
    }
}

/* Run llhttp over data[0..len) and handle its stops, until the bytes are
 * used up, a callback pauses, the message ends or something fails. */
static int feed_loop(struct sl__resp_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t off = 0;
    int rc = 0;

    p->chunk = data;
    p->sect_start = 0;
    for (;;) {
        llhttp_errno_t e;

        /* Our stops and on_body's pause leave llhttp paused. */
        if (llhttp_get_errno(&p->parser) == HPE_PAUSED)
            llhttp_resume(&p->parser);
        e = llhttp_execute(&p->parser, data + off, len - off);
        if (e == HPE_OK) {
            if (p->state == SL__RESP_IDLE || p->state == SL__RESP_HEAD ||
                p->state == SL__RESP_TRAILERS) {
                rc = sect_check(p, len, p->state == SL__RESP_TRAILERS);
                p->sect_bytes = sect_len(p, len);
            }
            if (rc == 0)
                off = len;
            break;
        }
        if (e != HPE_PAUSED) {
            rc = parser_fail_llhttp(p, e);
            break;
        }
        off = (size_t)(llhttp_get_error_pos(&p->parser) - data);
        if (p->paused) { /* on_body asked */
            rc = SL__PARSE_PAUSE;
            break;
        }
        rc = parser_stopped(p, off);
        if (rc != 0 || p->state == SL__RESP_DONE)
            break;
    }
    *consumed = off;
    return rc;
}

/* ---- API ---------------------------------------------------------------- */

void sl__resp_parser_init(struct sl__resp_parser *p, const struct sl__parse_limits *lim,
                          const struct sl__resp_parser_cbs *cbs, void *ctx)
{
    memset(p, 0, sizeof(*p));
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = cb_message_begin;
    p->settings.on_status = cb_status;
    p->settings.on_status_complete = cb_status_complete;
    p->settings.on_header_field = cb_header_field;
    p->settings.on_header_field_complete = cb_header_field_complete;
    p->settings.on_header_value = cb_header_value;
    /* No on_header_value_complete: a value is closed (NUL, trailing
     * whitespace trimmed) when the next field starts or the section ends,
     * which saves a callback per header line. */
    p->settings.on_headers_complete = cb_headers_complete;
    p->settings.on_chunk_header = cb_chunk_header;
    p->settings.on_body = cb_body;
    p->settings.on_message_complete = cb_message_complete;
    /* No llhttp_set_lenient_*(): every leniency stays off. */
    llhttp_init(&p->parser, HTTP_RESPONSE, &p->settings);

    if (lim != NULL)
        p->limits = *lim;
    if (p->limits.max_header_bytes == 0)
        p->limits.max_header_bytes = SL__PARSE_DEFAULT_MAX_HEADER_BYTES;
    if (p->limits.max_header_fields == 0)
        p->limits.max_header_fields = SL__PARSE_DEFAULT_MAX_HEADER_FIELDS;
    if (cbs != NULL)
        p->cbs = *cbs;
    p->ctx = ctx;
    sl__resp_parser_reset(p, false);
}

void sl__resp_parser_reset(struct sl__resp_parser *p, bool head_request)
{
    llhttp_reset(&p->parser);
    list_clear(&p->hdrs);
    list_clear(&p->trls);
    p->head = (struct sl__resp_head){.reason = "", .content_length = -1};
    p->reason_len = 0;
    p->chunk = NULL;
    p->sect_bytes = 0;
    p->sect_start = 0;
    p->interim_count = 0;
    p->head_request = head_request;
    p->started = false;
    p->paused = false;
    p->keep_alive = false;
    p->error = 0;
    p->errdetail = NULL;
    parser_set_state(p, SL__RESP_IDLE);
}

int sl__resp_parser_feed(struct sl__resp_parser *p, const char *data, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (p->state == SL__RESP_ERROR)
        return p->error;
    if (p->paused)
        return SL__PARSE_PAUSE;
    if (p->state == SL__RESP_DONE)
        return 0;
    assert(data != NULL || len == 0);
    if (data == NULL)
        data = ""; /* llhttp must never see a NULL buffer: it restarts spans there */
    if (len > 0)
        p->started = true;
    return feed_loop(p, data, len, consumed);
}

void sl__resp_parser_resume(struct sl__resp_parser *p)
{
    p->paused = false;
}

int sl__resp_parser_finish(struct sl__resp_parser *p)
{
    llhttp_errno_t e;
    size_t n;
    int rc;

    if (p->state == SL__RESP_ERROR)
        return p->error;
    if (p->state == SL__RESP_DONE)
        return 0;
    if (p->paused)
        return SL_EBUSY;
    switch (p->state) {
    case SL__RESP_IDLE:
        if (!p->started)
            return 0;
        return parser_fail(p, SL_ETRUNCATED, "connection closed before the final response");
    case SL__RESP_HEAD:
        return parser_fail(p, SL_ETRUNCATED, "connection closed in the response head");
    case SL__RESP_TRAILERS:
        return parser_fail(p, SL_ETRUNCATED, "connection closed in the trailer section");
    case SL__RESP_BODY:
        break;
    default:
        assert(!"finish in a transient state");
        return parser_fail(p, SL_EPARSE, "internal parser error");
    }

    /* llhttp may still be stopped after the head (on_head paused): let it
     * reach its body state first, which ends a body-less message. */
    rc = feed_loop(p, "", 0, &n);
    if (rc < 0 || p->state == SL__RESP_DONE)
        return rc < 0 ? rc : 0;
    assert(p->state == SL__RESP_BODY);

    /* A close-delimited body ends here: llhttp calls on_message_complete
     * from llhttp_finish(), which returns the HPE_PAUSED we answer with. */
    e = llhttp_finish(&p->parser);
    if (e == HPE_PAUSED && p->state == SL__RESP_MSG_END)
        return msg_end(p, 0);
    if (e == HPE_OK)
        return parser_fail(p, SL_ETRUNCATED, "connection closed before the end of the response");
    return parser_fail_llhttp(p, e);
}

bool sl__resp_parser_started(const struct sl__resp_parser *p)
{
    return p->started;
}

bool sl__resp_parser_done(const struct sl__resp_parser *p)
{
    return p->state == SL__RESP_DONE;
}

const char *sl__resp_parser_errdetail(const struct sl__resp_parser *p)
{
    return p->error != 0 ? p->errdetail : NULL;
}

void sl__resp_parser_free(struct sl__resp_parser *p)
{
    list_free(&p->hdrs);
    list_free(&p->trls);
    p->head.headers = NULL;
    p->head.trailers = NULL;
}

/* ---- lookups ------------------------------------------------------------ */

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive in ASCII only, whatever the locale. */
static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

const char *sl__resp_header(const struct sl__resp_head *h, const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < h->nheaders; i++) {
        const struct sl__header *f = &h->headers[i];
        if (f->name_len == n && ascii_caseeq(f->name, name, n))
            return f->value;
    }
    return NULL;
}

bool sl__resp_header_has_token(const struct sl__resp_head *h, const char *name, const char *token)
{
    size_t n = strlen(name), tlen = strlen(token);

    for (size_t i = 0; i < h->nheaders; i++) {
        const struct sl__header *f = &h->headers[i];
        const char *s = f->value, *end = f->value + f->value_len;

        if (f->name_len != n || !ascii_caseeq(f->name, name, n))
            continue;
        while (s <= end) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            const char *a = s, *b = comma != NULL ? comma : end;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if ((size_t)(b - a) == tlen && ascii_caseeq(a, token, tlen))
                return true;
            if (comma == NULL)
                break;
            s = comma + 1;
        }
    }
    return false;
}
