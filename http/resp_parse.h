/*
 * resp_parse.h -- HTTP/1.1 response parsing on llhttp (internal).
 *
 * One sl__resp_parser reads the responses of one connection, one at a time:
 * bytes go in with sl__resp_parser_feed(), events come out through three
 * callbacks (on_head, on_body, on_complete). The parser owns copies of the
 * status line and header fields; body bytes are passed through without
 * copying. It is the only place where llhttp errors (HPE_*) become SL_E*
 * codes.
 *
 * Nothing here is thread-safe: a parser is used by the thread of its loop.
 * Callbacks always run inside sl__resp_parser_feed() or
 * sl__resp_parser_finish(), never elsewhere, and must not call feed, finish,
 * reset or free on the parser that is calling them.
 */
#ifndef SLUICE_RESP_PARSE_H
#define SLUICE_RESP_PARSE_H

#include "sluice.h"

#include "llhttp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL__PARSE_DEFAULT_MAX_HEADER_BYTES (64u * 1024u)
#define SL__PARSE_DEFAULT_MAX_HEADER_FIELDS 100u

/* Returned by a callback to stop the parser after the current event, and by
 * sl__resp_parser_feed() to say that a callback did. */
#define SL__PARSE_PAUSE 1

/* Limits on what the parser stores. A zero field takes its default. */
struct sl__parse_limits {
    /* Raw bytes of the status line and every header line, including their
     * CRLFs and the empty line that ends the head (default 64 KiB). The same
     * bound applies, separately, to a chunked trailer section. */
    size_t max_header_bytes;
    /* Header field lines (default 100); separately, trailer field lines. */
    size_t max_header_fields;
};

/* A header field as received: `name` is never empty, `value` has no leading
 * or trailing whitespace. Both are also NUL-terminated. */
struct sl__header {
    const char *name;
    const char *value;
    size_t name_len, value_len;
};

/*
 * The head of a final (non-1xx) response. Owned by the parser: it and every
 * string it points to stay valid and unchanged from on_head until the next
 * sl__resp_parser_reset() or sl__resp_parser_free(). `trailers` is filled in
 * just before on_complete runs.
 */
struct sl__resp_head {
    int status;
    uint8_t http_major, http_minor;
    const char *reason; /* "" when the status line has none */
    struct sl__header *headers;
    size_t nheaders;
    struct sl__header *trailers; /* chunked trailers, after the body */
    size_t ntrailers;
    int64_t content_length; /* -1 if absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool close_delimited;   /* the body ends at EOF (sl__resp_parser_finish) */
    bool no_body;           /* HEAD, 1xx, 204, 304: no body whatever the headers say */
};

/*
 * Callbacks. `ctx` is the pointer given to sl__resp_parser_init(). Each
 * returns 0 to go on, SL__PARSE_PAUSE to stop the parser right after this
 * event (sl__resp_parser_feed() then returns SL__PARSE_PAUSE), or a negative
 * SL_E* code to fail the parse with that code.
 */
struct sl__resp_parser_cbs {
    /* The final (non-1xx) head is complete. 1xx interim responses (100,
     * 103...) are parsed and passed over without calling this; they are
     * counted in interim_count. 101 Switching Protocols is an SL_EPARSE
     * error: sluice never asks for an upgrade. */
    int (*on_head)(void *ctx, const struct sl__resp_head *head);
    /* Body bytes, de-chunked, in order, each byte exactly once. `data`
     * points into the buffer given to sl__resp_parser_feed(). Never called
     * with len 0. May be NULL (the body is discarded). */
    int (*on_body)(void *ctx, const char *data, size_t len);
    /* The message is complete. `keep_alive` says whether the connection can
     * carry another request (llhttp_should_keep_alive: false for
     * "Connection: close", HTTP/1.0 without keep-alive, and close-delimited
     * bodies). The parser stops at the end of the message anyway, so
     * SL__PARSE_PAUSE here means the same as 0. */
    int (*on_complete)(void *ctx, bool keep_alive);
    /* Optional: a 1xx interim head was parsed (valid during the call only;
     * it is passed over afterwards). Same return convention. */
    int (*on_interim)(void *ctx, const struct sl__resp_head *head);
};

/* Where the parser is in the current response (private). */
enum sl__resp_state {
    SL__RESP_IDLE,          /* before the status line of the (final) response */
    SL__RESP_HEAD,          /* in the status line or header fields */
    SL__RESP_HEAD_END,      /* llhttp stopped after the head, on_head not run yet */
    SL__RESP_BODY,          /* on_head has run; body or nothing until the end */
    SL__RESP_TRAILER_START, /* llhttp stopped after the last chunk's size line */
    SL__RESP_TRAILERS,      /* in the chunked trailer section */
    SL__RESP_MSG_END,       /* llhttp stopped at the end, on_complete not run yet */
    SL__RESP_DONE,          /* on_complete has run: reset for the next response */
    SL__RESP_ERROR,         /* failed; sticky until reset */
};

/* A growable list of header fields (private). `buf` holds "name\0value\0"
 * per field, after the reason phrase (with its NUL) for the head list.
 * Pointers in `fields` are only set once the section is complete, because
 * `buf` may move while it grows. */
struct sl__hdr_list {
    char *buf;
    size_t len, cap;
    struct sl__header *fields;
    size_t nfields, cap_fields;
    int open; /* the piece being appended to (resp_parse.c) */
};

/* Caller memory; all fields are private except `interim_count`. The struct
 * must not move after sl__resp_parser_init() (llhttp keeps a pointer to
 * `settings`). */
struct sl__resp_parser {
    llhttp_t parser;
    llhttp_settings_t settings;
    struct sl__parse_limits limits;
    struct sl__resp_parser_cbs cbs;
    void *ctx;
    enum sl__resp_state state;
    struct sl__resp_head head;
    struct sl__hdr_list hdrs; /* reason phrase + header fields */
    struct sl__hdr_list trls; /* trailer fields */
    size_t reason_len;
    const char *chunk;      /* the buffer of the feed in progress */
    size_t sect_bytes;      /* bytes of the bounded section (head/trailers) in earlier feeds */
    size_t sect_start;      /* offset in `chunk` where that section's bytes begin */
    unsigned interim_count; /* 1xx responses passed over since the last reset */
    bool head_request;
    bool started;    /* a byte of this response has been fed */
    bool paused;     /* a callback asked to pause; cleared by resume */
    bool keep_alive; /* llhttp's verdict at the end of the message */
    int error;
    const char *errdetail;
};

/* Prepare `p` for the first response of a connection. `lim` may be NULL
 * (defaults) and is copied; `cbs` is copied. Never allocates, cannot fail. */
void sl__resp_parser_init(struct sl__resp_parser *p, const struct sl__parse_limits *lim,
                          const struct sl__resp_parser_cbs *cbs, void *ctx);

/* Prepare for the next response on the same connection (also clears an
 * error). `head_request`: the request was HEAD, so the response has no body
 * whatever its headers say. The previous head and its strings become
 * invalid; allocated memory is kept for reuse. */
void sl__resp_parser_reset(struct sl__resp_parser *p, bool head_request);

/*
 * Feed `len` bytes (`data` may be NULL if len is 0). Callbacks run inside.
 * `*consumed` is always set. Returns:
 *   0               all bytes consumed, or the message ended (on_complete has
 *                   run): then *consumed is where it ended and the bytes
 *                   after it belong to the next response (pipelining); they
 *                   are not consumed until sl__resp_parser_reset();
 *   SL__PARSE_PAUSE a callback paused: the bytes before *consumed were
 *                   handled; call sl__resp_parser_resume(), then feed the
 *                   rest -- even if there is none (len 0), since pending
 *                   events such as on_complete are delivered by that feed;
 *   SL_EPARSE       malformed or ambiguous input (bad syntax, conflicting or
 *                   duplicate Content-Length, Content-Length with chunked,
 *                   Content-Length above INT64_MAX, bad chunk size, 101,
 *                   a status below 100, a version other than 1.x...);
 *   SL_EHEADER_TOO_BIG  past max_header_bytes or max_header_fields;
 *   SL_ENOMEM, or the negative code a callback returned.
 * On an error *consumed means nothing. Errors are sticky: later calls
 * return the same code until reset. While paused nothing is consumed and
 * SL__PARSE_PAUSE is returned; after the message ended nothing is consumed
 * and 0 is returned.
 */
int sl__resp_parser_feed(struct sl__resp_parser *p, const char *data, size_t len, size_t *consumed);

/* Undo a pause so that the next feed goes on. Runs no callback. */
void sl__resp_parser_resume(struct sl__resp_parser *p);

/*
 * The peer closed the connection (all bytes received have been fed).
 * Returns 0 if that completes the message (a close-delimited body:
 * on_complete runs inside with keep_alive false), SL_ETRUNCATED if a
 * response was in progress (head incomplete, Content-Length not reached,
 * chunked without its last chunk or trailers, or only 1xx responses seen),
 * 0 with nothing happening if no byte of the response had arrived (for a
 * reused connection that is the "stale connection" case; see
 * sl__resp_parser_started()) or the message had already ended. Returns the
 * sticky error after a failure, and SL_EBUSY while paused (resume and feed
 * the remaining bytes first).
 */
int sl__resp_parser_finish(struct sl__resp_parser *p);

/* Whether any byte of the current response (1xx included) has been fed
 * since init or reset. */
bool sl__resp_parser_started(const struct sl__resp_parser *p);

/* Whether on_complete has run for the current response. */
bool sl__resp_parser_done(const struct sl__resp_parser *p);

/* Why the parse failed: llhttp's reason text for llhttp errors, sluice's
 * own text otherwise. A static string; NULL when there is no error. */
const char *sl__resp_parser_errdetail(const struct sl__resp_parser *p);

/* The value of the first header field of `h` named `name` (compared
 * case-insensitively), NUL-terminated; NULL if absent. */
const char *sl__resp_header(const struct sl__resp_head *h, const char *name);

/* Whether any `name` field of `h` has `token` (case-insensitively) as one
 * of its comma-separated elements, e.g. ("Connection", "close"). */
bool sl__resp_header_has_token(const struct sl__resp_head *h, const char *name, const char *token);

/* Release the memory of `p`. It may be initialised again afterwards. */
void sl__resp_parser_free(struct sl__resp_parser *p);

#endif /* SLUICE_RESP_PARSE_H */
