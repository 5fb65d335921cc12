/*
 * req_write.c -- turning a request into bytes on the wire.
 *
 * The head is serialised once per hop into one buffer. The body is never
 * copied when it lives in memory: sl__req_upload_iov() hands the socket
 * writer an iovec pointing at the head's remainder and the body's
 * remainder, so a large upload goes out with writev straight from the
 * caller's (or our one copy of its) memory. A streamed body is pulled from
 * the producer into a staging buffer, framed as chunks when its length is
 * unknown.
 *
 * Header names must be tokens and values may not contain CR, LF or NUL:
 * anything else could split the request (header injection), so it is
 * refused when the header is set, not when it is sent.
 */
#include "http-int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STREAM_CHUNK (64 * 1024)
#define CHUNK_PREFIX 18 /* "ffffffffffffffff\r\n" */

bool sl__http_token(const char *s)
{
    /* RFC 9110 tchar */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch != '\0' && strchr(extra, ch) != NULL)))
            return false;
    }
    return true;
}

bool sl__req_header_valid_name(const char *s)
{
    return sl__http_token(s);
}

bool sl__req_header_valid_value(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

/* A growable string for the head. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* Room for `n` more bytes and a NUL (the rare path, kept out of line). */
static __attribute__((noinline)) bool sb_grow(struct sbuf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 512;

    if (b->oom)
        return false;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

/* Append; the text is NUL-terminated by sb_end(). */
static inline void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && !sb_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_end(struct sbuf *b)
{
    if (!b->oom && (b->cap > b->len || sb_grow(b, 0)))
        b->p[b->len] = '\0';
}

/* Append `v` in decimal. */
static void sb_u64(struct sbuf *b, uint64_t v)
{
    char d[SL__U64_DEC_MAX], *end = d + sizeof(d);
    const char *first = sl__u64_dec(end, v);

    sb_add(b, first, (size_t)(end - first));
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_header(struct sbuf *b, const char *name, const char *value)
{
    sb_str(b, name);
    sb_add(b, ": ", 2);
    sb_str(b, value);
    sb_add(b, "\r\n", 2);
}

static const struct req_header *find_header(const sl_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return &req->headers[i];
    return NULL;
}

/* Percent-decode userinfo and base64 it for Basic authentication. */
static char *basic_credentials(const char *userinfo)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(userinfo), m = 0;
    unsigned char *raw = malloc(n + 1);
    char *out;

    if (raw == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (userinfo[i] == '%' && i + 2 < n && isxdigit((unsigned char)userinfo[i + 1]) &&
            isxdigit((unsigned char)userinfo[i + 2])) {
            char hex[3] = {userinfo[i + 1], userinfo[i + 2], 0};
            raw[m++] = (unsigned char)strtoul(hex, NULL, 16);
            i += 2;
        } else {
            raw[m++] = (unsigned char)userinfo[i];
        }
    }
    if (memchr(userinfo, ':', n) == NULL)
        raw[m++] = ':'; /* user without password */
    out = malloc((m + 2) / 3 * 4 + 1);
    if (out != NULL) {
        size_t o = 0;
        for (size_t i = 0; i < m; i += 3) {
            uint32_t v = (uint32_t)raw[i] << 16;
            if (i + 1 < m)
                v |= (uint32_t)raw[i + 1] << 8;
            if (i + 2 < m)
                v |= raw[i + 2];
            out[o++] = b64[(v >> 18) & 63];
            out[o++] = b64[(v >> 12) & 63];
            out[o++] = i + 1 < m ? b64[(v >> 6) & 63] : '=';
            out[o++] = i + 2 < m ? b64[v & 63] : '=';
        }
        out[o] = '\0';
    }
    free(raw);
    return out;
}

static bool method_wants_length(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

int sl__req_write_head(sl_req_t *req)
{
    struct sbuf b = {0};
    const struct sl__url *u = &req->url;
    const struct req_header *h;
    bool default_port = (u->port == 80 && strcmp(u->scheme, "http") == 0) ||
                        (u->port == 443 && strcmp(u->scheme, "https") == 0);

    /* Request line and Host, built in place (this runs for every request). */
    sb_str(&b, req->method);
    sb_add(&b, " ", 1);
    sb_str(&b, u->path);
    if (u->query != NULL) {
        sb_add(&b, "?", 1);
        sb_str(&b, u->query);
    }
    sb_add(&b, " HTTP/1.1\r\n", 11);
    if (find_header(req, "Host") == NULL) { /* a user's Host replaces ours (curl -H) */
        sb_add(&b, "Host: ", 6);
        if (u->host_is_ipv6)
            sb_add(&b, "[", 1);
        sb_str(&b, u->host);
        if (u->host_is_ipv6)
            sb_add(&b, "]", 1);
        if (!default_port) {
            sb_add(&b, ":", 1);
            sb_u64(&b, u->port);
        }
        sb_add(&b, "\r\n", 2);
    }

    if (find_header(req, "User-Agent") == NULL)
        sb_header(&b, "User-Agent", req->client->user_agent);
    if (find_header(req, "Accept") == NULL)
        sb_header(&b, "Accept", "*/*");
    if (req->decode && find_header(req, "Accept-Encoding") == NULL)
        sb_header(&b, "Accept-Encoding", "gzip, deflate");
    if (req->url.userinfo != NULL && find_header(req, "Authorization") == NULL) {
        char *cred = basic_credentials(req->url.userinfo);
        if (cred == NULL) {
            free(b.p);
            return SL_ENOMEM;
        }
        sb_str(&b, "Authorization: Basic ");
        sb_str(&b, cred);
        sb_add(&b, "\r\n", 2);
        free(cred);
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        h = &req->headers[i];
        if (h->value != NULL)
            sb_header(&b, h->name, h->value);
    }
    if (req->resuming) {
        /* Resuming a download that broke: the rest, only if it is still
         * the same representation (else the server sends all of it). */
        sb_add(&b, "Range: bytes=", 13);
        sb_u64(&b, req->resume_from);
        sb_add(&b, "-\r\n", 3);
        sb_header(&b, "If-Range", req->resume_validator);
    }

    req->expect_wait = false;
    switch (req->body_kind) {
    case BODY_NONE:
        if (method_wants_length(req->method))
            sb_header(&b, "Content-Length", "0");
        break;
    case BODY_MEM:
        sb_add(&b, "Content-Length: ", 16);
        sb_u64(&b, req->body_len);
        sb_add(&b, "\r\n", 2);
        if (req->expect_min > 0 && req->body_len >= req->expect_min)
            req->expect_wait = true;
        break;
    case BODY_STREAM:
        if (req->stream_len >= 0) {
            sb_add(&b, "Content-Length: ", 16);
            sb_u64(&b, (uint64_t)req->stream_len);
            sb_add(&b, "\r\n", 2);
            if (req->expect_min > 0 && (uint64_t)req->stream_len >= req->expect_min)
                req->expect_wait = true;
        } else {
            sb_header(&b, "Transfer-Encoding", "chunked");
        }
        break;
    }
    if (req->expect_wait)
        sb_header(&b, "Expect", "100-continue");
    sb_add(&b, "\r\n", 2);
    sb_end(&b);
    if (b.oom) {
        free(b.p);
        return SL_ENOMEM;
    }
    free(req->head_buf);
    req->head_buf = b.p;
    req->head_len = b.len;
    req->head_off = 0;
    req->body_off = 0;
    req->chunk_len = req->chunk_off = 0;
    req->body_eof = false;
    req->upload_done = false;
    req->upload_paused = false;
    return 0;
}

/* Pull the next piece of a streamed body into the staging buffer. */
static int stream_fill(sl_req_t *req)
{
    bool chunked = req->stream_len < 0;
    size_t cap = STREAM_CHUNK, got = 0;
    int rc;

    if (req->chunk_buf == NULL) {
        req->chunk_buf = malloc(CHUNK_PREFIX + STREAM_CHUNK + 2 + 5);
        if (req->chunk_buf == NULL)
            return SL_ENOMEM;
    }
    if (!chunked && (uint64_t)req->stream_len - req->body_off < cap)
        cap = (size_t)((uint64_t)req->stream_len - req->body_off);
    if (!chunked && cap == 0) {
        req->body_eof = true;
        return 0;
    }
    req->in_callback++;
    rc = req->body_cb(req, req->chunk_buf + CHUNK_PREFIX, cap, &got);
    req->in_callback--;
    if (rc == SL_PAUSE) {
        req->upload_paused = true;
        return 0;
    }
    if (rc < 0)
        return rc;
    if (got > cap)
        return SL_EINVAL;
    if (got == 0) {
        if (!chunked)
            return SL_EINVAL; /* the producer ended before Content-Length */
        memcpy(req->chunk_buf, "0\r\n\r\n", 5);
        req->chunk_off = 0;
        req->chunk_len = 5;
        req->body_eof = true;
        return 0;
    }
    if (chunked) {
        char pre[CHUNK_PREFIX + 1];
        int n = snprintf(pre, sizeof(pre), "%zx\r\n", got);
        size_t start = CHUNK_PREFIX - (size_t)n;
        memcpy(req->chunk_buf + start, pre, (size_t)n);
        memcpy(req->chunk_buf + CHUNK_PREFIX + got, "\r\n", 2);
        req->chunk_off = start;
        req->chunk_len = CHUNK_PREFIX + got + 2;
    } else {
        req->chunk_off = CHUNK_PREFIX;
        req->chunk_len = CHUNK_PREFIX + got;
    }
    req->body_off += got;
    return 0;
}

int sl__req_upload_iov(sl_req_t *req, struct iovec *iov, int max, int *err)
{
    int n = 0;

    *err = 0;
    if (req->upload_done || max < 2)
        return 0;
    if (req->head_off < req->head_len) {
        iov[n].iov_base = req->head_buf + req->head_off;
        iov[n].iov_len = req->head_len - req->head_off;
        n++;
    }
    if (req->expect_wait)
        return n;
    switch (req->body_kind) {
    case BODY_NONE:
        break;
    case BODY_MEM:
        if (req->body_off < req->body_len) {
            iov[n].iov_base = (void *)(req->body + req->body_off);
            iov[n].iov_len = req->body_len - (size_t)req->body_off;
            n++;
        }
        break;
    case BODY_STREAM:
        if (req->chunk_off >= req->chunk_len && !req->body_eof && !req->upload_paused) {
            int rc = stream_fill(req);
            if (rc < 0) {
                *err = rc;
                return 0;
            }
        }
        if (req->chunk_off < req->chunk_len) {
            iov[n].iov_base = req->chunk_buf + req->chunk_off;
            iov[n].iov_len = req->chunk_len - req->chunk_off;
            n++;
        }
        break;
    }
    if (n == 0 && req->head_off >= req->head_len) {
        bool body_done =
            req->body_kind == BODY_NONE ||
            (req->body_kind == BODY_MEM && req->body_off >= req->body_len) ||
            (req->body_kind == BODY_STREAM && req->body_eof && req->chunk_off >= req->chunk_len);
        if (body_done)
            req->upload_done = true;
    }
    return n;
}

void sl__req_upload_advance(sl_req_t *req, size_t n)
{
    size_t k;

    req->result.bytes_up += n;
    k = SL__MIN(n, req->head_len - req->head_off);
    req->head_off += k;
    n -= k;
    if (n == 0 || req->expect_wait)
        return;
    if (req->body_kind == BODY_MEM) {
        req->body_off += n;
    } else if (req->body_kind == BODY_STREAM) {
        req->chunk_off += n;
    }
}
