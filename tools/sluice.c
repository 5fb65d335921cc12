/*
 * sluice.c -- the command-line tool: curl's option language on top of libsluice.
 *
 * It uses nothing but the public header. Every URL becomes one `struct xfer`,
 * created only when it starts (URL lists given with -i are read one line at a
 * time), so memory grows with the number of transfers in flight, not with the
 * number of URLs. All transfers run on one loop; without -Z only one is in
 * flight at a time.
 *
 * Standard output is shared and must show the bodies in URL order. The
 * transfers not yet released form a list in URL order, the "chain". Its head
 * writes straight to stdout; every other member appends to its own buffer:
 * memory up to OUT_MEM_EACH (and OUT_MEM_TOTAL over all members), then an
 * unlinked tmpfile(). When the head finishes, the next member's buffer is
 * flushed and it becomes the head. A finished member with nothing buffered
 * leaves the chain at once; finished members with data waiting are capped
 * (wait_max), so a slow first URL cannot pile up unbounded state or fds.
 *
 * A file output is written to NAME.sluice-part and renamed to NAME only when
 * the transfer succeeded; every failure path removes the part file. SIGINT and
 * SIGTERM reach the loop through an async handle, cancel every transfer (which
 * removes its part file) and make the tool exit 128 + the signal number.
 *
 * Exit status: 0 when every URL succeeded, else the status of the first
 * failing URL in command-line order. exit_for() holds the table (so does
 * docs/CLI.md).
 */
#include <sluice.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define PART_SUFFIX ".sluice-part"
#define OUT_MEM_EACH (256 * 1024)   /* a waiting transfer's stdout bytes kept in memory */
#define OUT_MEM_TOTAL (1024 * 1024) /* the same, over all waiting transfers */
#define PARALLEL_DEFAULT 50         /* curl's --parallel-max default */
#define PARALLEL_LIMIT 1000
#define MAX_REDIRS_DEFAULT 10 /* sluice's default (curl's is 50) */

/*
 * Exit statuses: curl's numbers wherever the meaning is the same.
 *
 *    0  success (every URL)
 *    1  SL_EUNSUPPORTED_SCHEME; SL_EREDIRECT_REFUSED (curl refuses a redirect
 *       to a disallowed protocol with 1)
 *    2  bad usage (unknown option, missing or bad value); the loop or client
 *       could not start; SL_ECLOSING, SL_EBACKEND
 *    3  SL_EURL: malformed URL
 *    6  SL_EDNS, SL_EDNS_SERVER: could not resolve host
 *    7  could not connect: SL_ECONNREFUSED, SL_ECONNECT, SL_EHOSTUNREACH,
 *       SL_ENETUNREACH, SL_ENETDOWN, SL_ETIMEDOUT (the kernel's connect
 *       timeout), SL_EADDRNOTAVAIL, SL_EADDRINUSE, SL_EAFNOSUPPORT,
 *       SL_EACCES, SL_EPERM, SL_EMFILE, SL_ENFILE, SL_ENOBUFS
 *    8  weird server reply: SL_EPARSE, SL_EHEADER_TOO_BIG
 *   18  SL_ETRUNCATED: partial body
 *   22  HTTP status >= 400 with -f/--fail or --fail-with-body (SL_EHTTP_STATUS)
 *   23  writing the output failed (file or stdout), or -O found no file name
 *   26  reading a local file failed (-T, -d @file, -i, -w @file, ...)
 *   27  SL_ENOMEM
 *   28  every SL_ETIMEDOUT_* (queue, connect, TLS, first byte, read, total, group)
 *   33  SL_ERESUME: a resumed download found the server's copy changed or the
 *       range ignored (curl's "range error")
 *   35  SL_ETLS, SL_ETLS_HANDSHAKE, SL_ETLS_VERSION: TLS handshake failed
 *   42  SL_ECANCELED: aborted
 *   43  SL_EBAD_HEADER, SL_EINVAL: the library refused an argument
 *   47  SL_ETOO_MANY_REDIRECTS
 *   52  SL_EOF: empty reply (the server closed without a byte of response)
 *   55  SL_EPIPE: failure sending
 *   56  SL_ECONNRESET, SL_ECONNABORTED and any other OS error: failure receiving
 *   58  SL_ETLS_CLIENT_CERT: the client certificate or key is unusable
 *   59  --ciphers or --tls13-ciphers holds no cipher OpenSSL can use (curl's
 *       "couldn't use specified cipher"; SL_ETLS from client creation)
 *   60  SL_ETLS_UNKNOWN_CA, SL_ETLS_HOSTNAME, SL_ETLS_EXPIRED,
 *       SL_ETLS_NOT_YET_VALID, SL_ETLS_SELF_SIGNED: the server's certificate
 *       failed verification
 *   61  SL_EDECODE: bad content encoding
 *   63  SL_EBODY_TOO_BIG
 *  130  interrupted by SIGINT, 143 by SIGTERM (128 + signal)
 */
enum {
    X_UNSUPPORTED = 1,
    X_USAGE = 2,
    X_URL = 3,
    X_DNS = 6,
    X_CONNECT = 7,
    X_WEIRD = 8,
    X_PARTIAL = 18,
    X_HTTP = 22,
    X_WRITE = 23,
    X_READ = 26,
    X_NOMEM = 27,
    X_TIMEOUT = 28,
    X_RANGE = 33,
    X_TLS = 35,
    X_TLS_CERT = 58,
    X_TLS_CIPHER = 59,
    X_TLS_VERIFY = 60,
    X_ABORTED = 42,
    X_BADARG = 43,
    X_REDIRS = 47,
    X_EMPTY = 52,
    X_SEND = 55,
    X_RECV = 56,
    X_DECODE = 61,
    X_TOO_BIG = 63,
};

static int exit_for(int err)
{
    switch (err) {
    case 0:
        return 0;
    case SL_EUNSUPPORTED_SCHEME:
    case SL_EREDIRECT_REFUSED:
        return X_UNSUPPORTED;
    case SL_ECLOSING:
    case SL_EBACKEND:
        return X_USAGE;
    case SL_EURL:
        return X_URL;
    case SL_EDNS:
    case SL_EDNS_SERVER:
        return X_DNS;
    case SL_ECONNREFUSED:
    case SL_ECONNECT:
    case SL_EHOSTUNREACH:
    case SL_ENETUNREACH:
    case SL_ENETDOWN:
    case SL_ETIMEDOUT:
    case SL_EADDRNOTAVAIL:
    case SL_EADDRINUSE:
    case SL_EAFNOSUPPORT:
    case SL_EACCES:
    case SL_EPERM:
    case SL_EMFILE:
    case SL_ENFILE:
    case SL_ENOBUFS:
        return X_CONNECT;
    case SL_EPARSE:
    case SL_EHEADER_TOO_BIG:
        return X_WEIRD;
    case SL_ETRUNCATED:
        return X_PARTIAL;
    case SL_EHTTP_STATUS:
        return X_HTTP;
    case SL_ENOMEM:
        return X_NOMEM;
    case SL_ETIMEDOUT_QUEUE:
    case SL_ETIMEDOUT_CONNECT:
    case SL_ETIMEDOUT_TLS:
    case SL_ETIMEDOUT_FIRSTBYTE:
    case SL_ETIMEDOUT_READ:
    case SL_ETIMEDOUT_TOTAL:
    case SL_ETIMEDOUT_GROUP:
        return X_TIMEOUT;
    case SL_ERESUME:
        return X_RANGE;
    case SL_ETLS:
    case SL_ETLS_HANDSHAKE:
    case SL_ETLS_VERSION:
        return X_TLS;
    case SL_ETLS_CLIENT_CERT:
        return X_TLS_CERT;
    case SL_ETLS_UNKNOWN_CA:
    case SL_ETLS_HOSTNAME:
    case SL_ETLS_EXPIRED:
    case SL_ETLS_NOT_YET_VALID:
    case SL_ETLS_SELF_SIGNED:
        return X_TLS_VERIFY;
    case SL_ECANCELED:
        return X_ABORTED;
    case SL_EBAD_HEADER:
    case SL_EINVAL:
        return X_BADARG;
    case SL_ETOO_MANY_REDIRECTS:
        return X_REDIRS;
    case SL_EOF:
        return X_EMPTY;
    case SL_EPIPE:
        return X_SEND;
    case SL_EDECODE:
        return X_DECODE;
    case SL_EBODY_TOO_BIG:
        return X_TOO_BIG;
    default:
        return X_RECV; /* SL_ECONNRESET, SL_ECONNABORTED, SL_EIO, ... */
    }
}

/* ---- growable strings --------------------------------------------------------------------- */

struct str {
    char *p;
    size_t len, cap;
};

static void str_add(struct str *s, const char *d, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (p == NULL)
            return; /* the text comes out truncated rather than not at all */
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, d, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void str_adds(struct str *s, const char *d)
{
    str_add(s, d, strlen(d));
}

static void str_addf(struct str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_addf(struct str *s, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        str_add(s, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* The length of the valid UTF-8 sequence at `p` (1..4), or 0 if it is not. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n;
    uint32_t cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff)
        return 0;
    return n;
}

/* `v` as a JSON string (null for NULL). Bytes that are not UTF-8 (servers
 * send Latin-1 headers) become U+FFFD so that the output always parses. */
static void str_json(struct str *s, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;

    if (v == NULL) {
        str_adds(s, "null");
        return;
    }
    str_add(s, "\"", 1);
    while (*p) {
        size_t n;
        switch (*p) {
        case '"':
            str_adds(s, "\\\"");
            break;
        case '\\':
            str_adds(s, "\\\\");
            break;
        case '\n':
            str_adds(s, "\\n");
            break;
        case '\r':
            str_adds(s, "\\r");
            break;
        case '\t':
            str_adds(s, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                str_addf(s, "\\u%04x", *p);
            } else if ((n = utf8_len(p)) == 0) {
                str_adds(s, "\\ufffd");
            } else {
                str_add(s, (const char *)p, n);
                p += n;
                continue;
            }
        }
        p++;
    }
    str_add(s, "\"", 1);
}

/* ---- options ------------------------------------------------------------------------------ */

struct header {
    char *name;
    char *value; /* NULL: suppress a header sluice adds itself ("Name:") */
};

struct source {
    const char *arg; /* a URL, or the name of a -i list */
    FILE *list;      /* -i: opened while parsing, closed at its end */
    bool is_list;
};

struct options {
    struct source *src;
    size_t nsrc;
    const char **outs; /* -o NAME, or NULL for -O; the n-th goes with the n-th URL */
    size_t nouts;
    const char *output_dir;
    bool parallel;
    unsigned parallel_max;
    unsigned parallel_host;
    bool tls_insecure;
    const char *tls_cafile, *tls_capath, *tls_cert, *tls_key;
    const char *tls_ciphers, *tls13_ciphers; /* --ciphers, --tls13-ciphers */
    int tls_min;
    const char *method; /* -X */
    struct header *headers;
    size_t nheaders;
    const char *user_agent;
    char *data; /* -d and friends, joined; --json pieces concatenated */
    size_t data_len;
    bool has_data;
    bool json;
    const char *upload; /* -T */
    bool location;
    unsigned max_redirs;
    bool compressed;
    sl_retry_t retry;       /* --retry and friends */
    double rate, burst;     /* --rate N/s, --burst B */
    double host_rate;       /* --rate-per-host N/s */
    bool fail_early;
    bool no_adaptive;       /* --no-adaptive */
    bool resume;            /* -C - / --continue: go on from a kept part file */
    bool fail;
    bool fail_with_body;
    bool head;
    bool include;
    sl_timeouts_t timeouts;
    bool silent;
    bool show_error;
    bool verbose;
    char *writeout;
    const char *json_report;
    bool help;
    bool version;
};

/* ---- transfers ---------------------------------------------------------------------------- */

struct xfer {
    struct xfer *prev, *next; /* the chain, in URL order */
    uint64_t num;             /* position among all URLs, from 0 (curl's urlnum) */
    char *url;                /* as requested (http:// added if it had no scheme) */
    char *path;               /* output file; NULL: standard output */
    char *part;               /* path + PART_SUFFIX while that file exists */
    int fd;                   /* the output file once opened, else -1 */
    sl_req_t *req;
    /* standard-output bytes waiting for the transfers before this one */
    char *buf;
    size_t len, cap;
    FILE *spill;
    uint64_t resume_from; /* -C -: bytes already in the part file, asked for the rest */
    bool append;          /* the part file is continued, not rewritten */
    bool complete;        /* -C -: the server says the part file is the whole thing (416) */
    /* -T */
    int up_fd;
    bool up_own_fd;
    bool up_poll; /* not a regular file: wait for readability before reading */
    int64_t up_len;
    uint64_t up_bytes;
    sl_io_t *up_io;
    /* outcome: the first failure wins */
    int err;       /* SL_E* code, 0 while all is well */
    int exit_code; /* set together with err */
    char *errmsg;
    bool done;
};

static struct {
    struct options o;
    sl_loop_t loop;
    sl_client_t *client;
    sl_async_t sig_async;
    const char *method;
    bool head_only;    /* -I or -X HEAD: the response head instead of the body */
    bool show_headers; /* -I or --include */
    bool show_errors;
    unsigned max_inflight;
    unsigned inflight;
    size_t src_pos;
    char *line;
    size_t line_cap;
    uint64_t next_num;
    struct xfer *head, *tail; /* the chain */
    size_t waiting;           /* finished chain members with output waiting */
    size_t wait_max;
    size_t out_mem;
    int stdout_err; /* SL_E* code of the first failed stdout write */
    FILE *report;
    bool report_stdout;
    bool failed;
    uint64_t fail_num;
    int fail_code;
    int interrupted; /* the signal that stopped us, or 0 */
    bool stopping;   /* --fail-early: a transfer failed, start nothing more */
    sl_group_t *group; /* every transfer; fail-fast with --fail-early */
} app;

static volatile sig_atomic_t got_signal;

static void record_failure(uint64_t num, int code)
{
    if (app.stopping)
        return; /* after --fail-early fired: the cancellations are not the cause */
    if (!app.failed || num < app.fail_num) {
        app.failed = true;
        app.fail_num = num;
        app.fail_code = code;
    }
    if (app.o.fail_early && !app.stopping) {
        /* curl's --fail-early: the first failure ends the run. The group
         * (fail-fast) cancels the others (their part files are removed) and
         * nothing new starts. A failure the library saw has done so
         * already; this covers the CLI's own (--fail-with-body, output). */
        char why[64];
        app.stopping = true;
        snprintf(why, sizeof(why), "transfer %llu failed", (unsigned long long)num);
        sl_group_fail(app.group, SL_ECANCELED, why);
    }
}

/* Remember why `x` failed, unless it already failed. Returns -1. */
static int xfer_fail(struct xfer *x, int exit_code, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int xfer_fail(struct xfer *x, int exit_code, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (x->err != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    x->err = err != 0 ? err : SL_EIO;
    x->exit_code = exit_code;
    free(x->errmsg);
    x->errmsg = strdup(msg);
    return -1;
}

/* ---- standard output, in URL order -------------------------------------------------------- */

static int stdout_write(const void *data, size_t len)
{
    const char *p = data;

    if (app.stdout_err != 0)
        return app.stdout_err;
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* stdout was left non-blocking by whoever gave it to us. */
            struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};
            poll(&pfd, 1, -1);
            continue;
        }
        if (n < 0) {
            app.stdout_err = sl_translate_errno(errno);
            return app.stdout_err;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Keep bytes for later: memory while the caps allow, then a tmpfile. */
static int buffer_add(struct xfer *x, const char *data, size_t len)
{
    if (x->spill == NULL && x->len + len <= OUT_MEM_EACH) {
        /* Small first: a thousand transfers in flight each hold a buffer. */
        size_t cap = x->cap ? x->cap : 256;
        while (cap < x->len + len)
            cap *= 2;
        if (cap > OUT_MEM_EACH)
            cap = OUT_MEM_EACH;
        if (cap == x->cap) {
            memcpy(x->buf + x->len, data, len);
            x->len += len;
            return 0;
        }
        if (app.out_mem - x->cap + cap <= OUT_MEM_TOTAL) {
            char *p = realloc(x->buf, cap);
            if (p != NULL) {
                app.out_mem += cap - x->cap;
                x->buf = p;
                x->cap = cap;
                memcpy(x->buf + x->len, data, len);
                x->len += len;
                return 0;
            }
        }
    }
    if (x->spill == NULL) {
        x->spill = tmpfile();
        if (x->spill == NULL)
            return sl_translate_errno(errno);
        if (x->len > 0 && fwrite(x->buf, 1, x->len, x->spill) != x->len)
            return SL_EIO;
        free(x->buf);
        app.out_mem -= x->cap;
        x->buf = NULL;
        x->len = x->cap = 0;
    }
    if (fwrite(data, 1, len, x->spill) != len)
        return sl_translate_errno(errno ? errno : EIO);
    return 0;
}

/* Bytes for standard output on behalf of `x`: written now if `x` heads the
 * chain, else kept until the transfers before it are done. */
static int stream_write(struct xfer *x, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (x == app.head)
        return stdout_write(data, len);
    return buffer_add(x, data, len);
}

/* Write out what `x` kept while it waited, and forget it. */
static int stream_flush(struct xfer *x)
{
    int rc = 0;

    if (x->spill != NULL) {
        char tmp[16384];
        size_t n;
        if (fflush(x->spill) != 0 || fseek(x->spill, 0, SEEK_SET) != 0)
            rc = SL_EIO;
        while (rc == 0 && !app.interrupted && (n = fread(tmp, 1, sizeof(tmp), x->spill)) > 0)
            rc = stdout_write(tmp, n);
        if (rc == 0 && ferror(x->spill))
            rc = SL_EIO;
        fclose(x->spill);
        x->spill = NULL;
    } else if (x->len > 0 && !app.interrupted) {
        rc = stdout_write(x->buf, x->len);
    }
    free(x->buf);
    app.out_mem -= x->cap;
    x->buf = NULL;
    x->len = x->cap = 0;
    return rc;
}

static void chain_append(struct xfer *x)
{
    x->prev = app.tail;
    x->next = NULL;
    if (app.tail != NULL)
        app.tail->next = x;
    else
        app.head = x;
    app.tail = x;
}

static void chain_unlink(struct xfer *x)
{
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        app.head = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    else
        app.tail = x->prev;
    x->prev = x->next = NULL;
}

static void close_free(void *handle)
{
    free(handle);
}

static void xfer_free(struct xfer *x)
{
    if (x->spill != NULL)
        fclose(x->spill);
    free(x->buf);
    app.out_mem -= x->cap;
    if (x->fd >= 0)
        close(x->fd);
    if (x->part != NULL) {
        unlink(x->part);
        free(x->part);
    }
    if (x->up_io != NULL)
        sl_io_close(x->up_io, close_free);
    if (x->up_own_fd)
        close(x->up_fd);
    sl_req_free(x->req);
    free(x->url);
    free(x->path);
    free(x->errmsg);
    free(x);
}

static void print_error(const struct xfer *x)
{
    if (app.show_errors && !app.interrupted && !(app.stopping && x->exit_code == X_ABORTED))
        fprintf(stderr, "sluice: (%d) %s: %s\n", x->exit_code, x->url, x->errmsg ? x->errmsg : "");
}

/* Standard output failed while `x` was waiting to flush. */
static void stdout_failed(struct xfer *x, int rc)
{
    if (x->done) {
        if (x->err != 0)
            return;
        xfer_fail(x, X_WRITE, rc, "failed writing to standard output: %s", sl_strerror(rc));
        print_error(x);
        record_failure(x->num, x->exit_code);
    } else {
        xfer_fail(x, X_WRITE, rc, "failed writing to standard output: %s", sl_strerror(rc));
        sl_req_cancel(x->req); /* on_done reports the write error */
    }
}

/* Release finished transfers at the head of the chain; each next one gets
 * its waiting bytes flushed and becomes the head. */
static void chain_advance(void)
{
    while (app.head != NULL && app.head->done) {
        struct xfer *x = app.head;
        chain_unlink(x);
        xfer_free(x);
        x = app.head;
        if (x == NULL)
            break;
        if (x->done)
            app.waiting--;
        int rc = stream_flush(x);
        if (rc < 0)
            stdout_failed(x, rc);
    }
}

/* ---- output files ------------------------------------------------------------------------- */

static int out_open(struct xfer *x)
{
    struct stat st;
    size_t n = strlen(x->path);

    /* /dev/null, a fifo, a tty: written in place, there is nothing to rename. */
    if (stat(x->path, &st) == 0 && !S_ISREG(st.st_mode)) {
        x->fd = open(x->path, O_WRONLY | O_CLOEXEC);
        if (x->fd < 0)
            return xfer_fail(x, X_WRITE, sl_translate_errno(errno), "cannot open '%s': %s", x->path,
                             strerror(errno));
        return 0;
    }
    x->part = malloc(n + sizeof(PART_SUFFIX));
    if (x->part == NULL)
        return xfer_fail(x, X_NOMEM, SL_ENOMEM, "out of memory");
    memcpy(x->part, x->path, n);
    memcpy(x->part + n, PART_SUFFIX, sizeof(PART_SUFFIX));
    x->fd = open(x->part, O_WRONLY | O_CREAT | O_CLOEXEC | (x->append ? O_APPEND : O_TRUNC), 0666);
    if (x->fd < 0) {
        int e = errno;
        free(x->part);
        x->part = NULL;
        return xfer_fail(x, X_WRITE, sl_translate_errno(e), "cannot create '%s%s': %s", x->path,
                         PART_SUFFIX, strerror(e));
    }
    return 0;
}

static int file_write(struct xfer *x, const char *data, size_t len)
{
    if (x->fd < 0 && out_open(x) < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(x->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return xfer_fail(x, X_WRITE, sl_translate_errno(errno), "failed writing to '%s': %s",
                             x->part ? x->part : x->path, strerror(errno));
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The transfer succeeded: the part file becomes the real one. */
static int out_commit(struct xfer *x)
{
    if (x->fd < 0 && out_open(x) < 0) /* an empty body still makes a file */
        return -1;
    int rc = close(x->fd);
    x->fd = -1;
    if (rc < 0)
        return xfer_fail(x, X_WRITE, sl_translate_errno(errno), "failed writing to '%s': %s",
                         x->part ? x->part : x->path, strerror(errno));
    if (x->part != NULL) {
        if (rename(x->part, x->path) < 0)
            return xfer_fail(x, X_WRITE, sl_translate_errno(errno),
                             "cannot rename '%s' to '%s': %s", x->part, x->path, strerror(errno));
        free(x->part);
        x->part = NULL;
    }
    return 0;
}

static void out_abort(struct xfer *x)
{
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    if (x->part != NULL) {
        /* With -C - the bytes received are kept for the next run (still
         * never under the final name). */
        if (!app.o.resume)
            unlink(x->part);
        else if (!app.o.silent || app.o.show_error)
            fprintf(stderr, "sluice: partial data kept in '%s': run again with -C - to resume\n",
                    x->part);
        free(x->part);
        x->part = NULL;
    }
}

/* -C -: a part file left by an earlier run is continued: ask for the rest. */
static int resume_prepare(struct xfer *x)
{
    struct stat st;
    char *part, range[48];
    size_t n = strlen(x->path);

    if (!app.o.resume || app.head_only)
        return 0;
    part = malloc(n + sizeof(PART_SUFFIX));
    if (part == NULL)
        return xfer_fail(x, X_NOMEM, SL_ENOMEM, "out of memory");
    memcpy(part, x->path, n);
    memcpy(part + n, PART_SUFFIX, sizeof(PART_SUFFIX));
    if (stat(part, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        x->resume_from = (uint64_t)st.st_size;
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-", x->resume_from);
        if (sl_req_header(x->req, "Range", range) < 0) {
            free(part);
            return xfer_fail(x, X_NOMEM, SL_ENOMEM, "out of memory");
        }
    }
    free(part);
    return 0;
}

/* -C -: the answer to a range request decides what happens to the part file. */
static int resume_head(struct xfer *x, const sl_resp_t *resp, int status)
{
    const char *cr = sl_resp_header(resp, "Content-Range");
    unsigned long long first = 0, total = 0;

    if (status == 206 && cr != NULL && sscanf(cr, "bytes %llu-", &first) == 1 &&
        first == x->resume_from) {
        x->append = true;
        return 0;
    }
    if (status == 416 && cr != NULL && sscanf(cr, "bytes */%llu", &total) == 1 &&
        total == x->resume_from) {
        x->append = true;
        x->complete = true; /* nothing is missing: its error page is not data */
        return 0;
    }
    if (status >= 300 && status != 416)
        return 0; /* an error or a redirect: handled as usual, the part file kept */
    xfer_fail(x, X_RANGE, SL_ERESUME,
              "cannot resume at byte %" PRIu64 ": the server answered %d%s%s", x->resume_from,
              status, cr != NULL ? " with Content-Range " : " (ignoring the range)",
              cr != NULL ? cr : "");
    return SL_ERESUME;
}

/* Response bytes (head or body) for the transfer's output. */
static int emit(struct xfer *x, const char *data, size_t len)
{
    int rc;

    if (x->err != 0)
        return -1;
    if (x->path != NULL)
        return file_write(x, data, len);
    rc = stream_write(x, data, len);
    if (rc < 0)
        return xfer_fail(x, X_WRITE, rc, "failed writing to standard output: %s", sl_strerror(rc));
    return 0;
}

/* ---- --write-out and --json-report -------------------------------------------------------- */

struct outcome {
    const struct xfer *x;
    const sl_req_t *req;    /* NULL if the request could not be created */
    const sl_result_t *res; /* never NULL */
    const sl_resp_t *resp;  /* NULL without a response */
};

enum var {
    V_CONTENT_TYPE,
    V_ERRORMSG,
    V_EXITCODE,
    V_FILENAME_EFFECTIVE,
    V_HTTP_CODE,
    V_HTTP_VERSION,
    V_METHOD,
    V_NUM_HEADERS,
    V_NUM_REDIRECTS,
    V_NUM_RETRIES,
    V_REMOTE_IP,
    V_REMOTE_PORT,
    V_RESPONSE_CODE,
    V_SCHEME,
    V_SIZE_DOWNLOAD,
    V_SIZE_HEADER,
    V_SIZE_UPLOAD,
    V_TIME_APPCONNECT,
    V_TIME_CONNECT,
    V_TIME_NAMELOOKUP,
    V_TIME_PRETRANSFER,
    V_TIME_QUEUE,
    V_TIME_STARTTRANSFER,
    V_TIME_TOTAL,
    V_URL,
    V_URL_EFFECTIVE,
    V_URLNUM,
    V_COUNT
};

static const char *const var_names[V_COUNT] = {
    "content_type",    "errormsg",
    "exitcode",        "filename_effective",
    "http_code",       "http_version",
    "method",          "num_headers",
    "num_redirects",   "num_retries",
    "remote_ip",
    "remote_port",     "response_code",
    "scheme",          "size_download",
    "size_header",     "size_upload",
    "time_appconnect", "time_connect",
    "time_namelookup", "time_pretransfer",
    "time_queue",      "time_starttransfer",
    "time_total",      "url",
    "url_effective",   "urlnum",
};

static int var_find(const char *name, size_t n)
{
    for (int i = 0; i < V_COUNT; i++)
        if (strlen(var_names[i]) == n && memcmp(var_names[i], name, n) == 0)
            return i;
    return -1;
}

static void add_text(struct str *s, const char *v, bool json)
{
    if (json)
        str_json(s, v);
    else
        str_adds(s, v != NULL ? v : "");
}

static void add_seconds(struct str *s, uint64_t us)
{
    str_addf(s, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
}

static uint64_t header_bytes(const sl_resp_t *resp)
{
    uint64_t n = strlen("HTTP/1.1 000 \r\n\r\n") + strlen(sl_resp_reason(resp));
    size_t count = sl_resp_header_count(resp);

    for (size_t i = 0; i < count; i++) {
        const char *name, *value;
        if (sl_resp_header_at(resp, i, &name, &value) == 0)
            n += strlen(name) + strlen(value) + 4;
    }
    return n;
}

static void var_add(struct str *s, enum var v, const struct outcome *oc, bool json)
{
    const struct xfer *x = oc->x;
    const sl_result_t *res = oc->res;
    char tmp[32];

    switch (v) {
    case V_CONTENT_TYPE:
        add_text(s, oc->resp ? sl_resp_header(oc->resp, "Content-Type") : NULL, json);
        break;
    case V_ERRORMSG:
        add_text(s, x->err != 0 ? x->errmsg : NULL, json);
        break;
    case V_EXITCODE:
        str_addf(s, "%d", x->exit_code);
        break;
    case V_FILENAME_EFFECTIVE:
        add_text(s, x->path, json);
        break;
    case V_HTTP_CODE:
    case V_RESPONSE_CODE:
        str_addf(s, json ? "%d" : "%03d", res->status);
        break;
    case V_HTTP_VERSION:
        add_text(s, oc->resp == NULL ? "0" : sl_resp_version(oc->resp) == 10 ? "1.0" : "1.1", json);
        break;
    case V_METHOD:
        add_text(s, oc->req ? sl_req_method(oc->req) : app.method, json);
        break;
    case V_NUM_HEADERS:
        str_addf(s, "%zu", oc->resp ? sl_resp_header_count(oc->resp) : 0);
        break;
    case V_NUM_REDIRECTS:
        str_addf(s, "%u", res->redirects);
        break;
    case V_NUM_RETRIES:
        str_addf(s, "%u", res->retries);
        break;
    case V_REMOTE_IP:
        add_text(s, res->remote_ip, json);
        break;
    case V_REMOTE_PORT:
        str_addf(s, "%u", (unsigned)res->remote_port);
        break;
    case V_SCHEME: {
        const char *u = res->effective_url, *colon = strchr(u, ':');
        size_t n = colon != NULL && (size_t)(colon - u) < sizeof(tmp) ? (size_t)(colon - u) : 0;
        memcpy(tmp, u, n);
        tmp[n] = '\0';
        add_text(s, n > 0 ? tmp : NULL, json);
        break;
    }
    case V_SIZE_DOWNLOAD:
        str_addf(s, "%" PRIu64, res->bytes_down);
        break;
    case V_SIZE_HEADER:
        str_addf(s, "%" PRIu64, oc->resp ? header_bytes(oc->resp) : 0);
        break;
    case V_SIZE_UPLOAD: {
        /* Body bytes, as curl counts them: nothing if no request went out. */
        uint64_t n = 0;
        if (res->bytes_up > 0)
            n = app.o.upload != NULL ? x->up_bytes : app.o.has_data ? app.o.data_len : 0;
        str_addf(s, "%" PRIu64, n);
        break;
    }
    case V_TIME_APPCONNECT:
        add_seconds(s, res->time_tls_us);
        break;
    case V_TIME_CONNECT:
        add_seconds(s, res->time_connect_us);
        break;
    case V_TIME_NAMELOOKUP:
        add_seconds(s, res->time_dns_us);
        break;
    case V_TIME_PRETRANSFER:
        add_seconds(s, res->time_tls_us > res->time_connect_us ? res->time_tls_us
                                                               : res->time_connect_us);
        break;
    case V_TIME_QUEUE:
        add_seconds(s, res->time_queue_us);
        break;
    case V_TIME_STARTTRANSFER:
        add_seconds(s, res->time_first_byte_us);
        break;
    case V_TIME_TOTAL:
        add_seconds(s, res->time_total_us);
        break;
    case V_URL:
        add_text(s, x->url, json);
        break;
    case V_URL_EFFECTIVE:
        add_text(s, res->effective_url, json);
        break;
    case V_URLNUM:
        str_addf(s, "%" PRIu64, x->num);
        break;
    case V_COUNT:
        break;
    }
}

/* Every variable as one JSON object; the report adds the error name. */
static void add_json(struct str *s, const struct outcome *oc, bool report)
{
    str_add(s, "{", 1);
    for (int i = 0; i < V_COUNT; i++) {
        str_addf(s, "%s\"%s\":", i ? "," : "", var_names[i]);
        var_add(s, (enum var)i, oc, true);
    }
    if (report) {
        str_adds(s, ",\"error\":");
        str_json(s, oc->x->err != 0 ? sl_err_name(oc->x->err) : NULL);
    }
    str_add(s, "}", 1);
}

/* %{header{name}}: every value of the header, joined with ", " as curl does. */
static void add_header_value(struct str *s, const sl_resp_t *resp, const char *name, size_t n)
{
    size_t count = resp ? sl_resp_header_count(resp) : 0;
    bool first = true;

    for (size_t i = 0; i < count; i++) {
        const char *hn, *hv;
        if (sl_resp_header_at(resp, i, &hn, &hv) == 0 && strlen(hn) == n &&
            strncasecmp(hn, name, n) == 0) {
            if (!first)
                str_adds(s, ", ");
            str_adds(s, hv);
            first = false;
        }
    }
}

/* %{header_json}: {"name": ["value", ...]}, names in lower case like curl. */
static void add_header_json(struct str *s, const sl_resp_t *resp)
{
    size_t count = resp ? sl_resp_header_count(resp) : 0;
    bool first = true;

    str_add(s, "{", 1);
    for (size_t i = 0; i < count; i++) {
        const char *name, *value, *other;
        bool seen = false;
        if (sl_resp_header_at(resp, i, &name, &value) != 0)
            continue;
        for (size_t j = 0; j < i && !seen; j++)
            seen = sl_resp_header_at(resp, j, &other, &value) == 0 && strcasecmp(other, name) == 0;
        if (seen)
            continue;
        char *lower = strdup(name);
        if (lower == NULL)
            continue;
        for (char *p = lower; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        str_adds(s, first ? "" : ",");
        str_json(s, lower);
        free(lower);
        str_adds(s, ":[");
        for (size_t j = i, k = 0; j < count; j++)
            if (sl_resp_header_at(resp, j, &other, &value) == 0 && strcasecmp(other, name) == 0) {
                str_adds(s, k++ ? "," : "");
                str_json(s, value);
            }
        str_add(s, "]", 1);
        first = false;
    }
    str_add(s, "}", 1);
}

/* Find the variable at `p` (just after "%{"). Returns the index of the
 * character after the closing brace, 0 if there is none; sets name/len, and
 * hdr/hlen for %{header{NAME}}. */
static size_t var_parse(const char *p, const char **hdr, size_t *hlen, size_t *len)
{
    const char *end;

    *hdr = NULL;
    if (strncmp(p, "header{", 7) == 0) {
        end = strchr(p + 7, '}');
        if (end == NULL || end[1] != '}')
            return 0;
        *hdr = p + 7;
        *hlen = (size_t)(end - *hdr);
        *len = 6;
        return (size_t)(end - p) + 2;
    }
    end = strchr(p, '}');
    if (end == NULL)
        return 0;
    *len = (size_t)(end - p);
    return *len + 1;
}

static bool var_special(const char *name, size_t n)
{
    static const char *const special[] = {"json", "header_json", "stdout", "stderr", "onerror"};
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
        if (strlen(special[i]) == n && memcmp(special[i], name, n) == 0)
            return true;
    return false;
}

/* Warn once, at start-up, about variables the format uses that we lack. */
static void writeout_check(const char *fmt)
{
    for (const char *p = fmt; (p = strstr(p, "%{")) != NULL;) {
        const char *hdr;
        size_t hlen, n, skip = var_parse(p + 2, &hdr, &hlen, &n);
        if (skip == 0)
            break;
        if (hdr == NULL && var_find(p + 2, n) < 0 && !var_special(p + 2, n) && !app.o.silent)
            fprintf(stderr, "sluice: warning: unknown --write-out variable: '%.*s'\n", (int)n,
                    p + 2);
        p += 2 + skip;
    }
}

static void sink_flush(struct xfer *x, struct str *s, bool to_stderr)
{
    if (s->len == 0)
        return;
    if (to_stderr)
        fwrite(s->p, 1, s->len, stderr);
    else
        stream_write(x, s->p, s->len); /* a failure here was already reported for the body */
    s->len = 0;
}

static void writeout(struct xfer *x, const struct outcome *oc)
{
    struct str s = {0};
    bool to_stderr = false;
    const char *p = app.o.writeout;

    while (*p) {
        if (p[0] == '%' && p[1] == '%') {
            str_add(&s, "%", 1);
            p += 2;
        } else if (p[0] == '%' && p[1] == '{') {
            const char *hdr, *name = p + 2;
            size_t hlen = 0, n, skip = var_parse(name, &hdr, &hlen, &n);
            int v;
            if (skip == 0) {
                str_adds(&s, p);
                break;
            }
            p = name + skip;
            if (hdr != NULL) {
                add_header_value(&s, oc->resp, hdr, hlen);
            } else if ((v = var_find(name, n)) >= 0) {
                var_add(&s, (enum var)v, oc, false);
            } else if (n == 4 && memcmp(name, "json", 4) == 0) {
                add_json(&s, oc, false);
            } else if (n == 11 && memcmp(name, "header_json", 11) == 0) {
                add_header_json(&s, oc->resp);
            } else if (n == 6 &&
                       (memcmp(name, "stdout", 6) == 0 || memcmp(name, "stderr", 6) == 0)) {
                sink_flush(x, &s, to_stderr);
                to_stderr = name[3] == 'e';
            } else if (n == 7 && memcmp(name, "onerror", 7) == 0) {
                if (x->err == 0)
                    break;
            } /* unknown: nothing, as curl (warned at start-up) */
        } else if (p[0] == '\\' && p[1] != '\0') {
            char c = p[1] == 'n' ? '\n' : p[1] == 'r' ? '\r' : p[1] == 't' ? '\t' : p[1];
            if (c == p[1] && c != '\\')
                str_add(&s, "\\", 1); /* not an escape we know: kept as is */
            str_add(&s, &c, 1);
            p += 2;
        } else {
            str_add(&s, p, 1);
            p++;
        }
    }
    sink_flush(x, &s, to_stderr);
    free(s.p);
}

static void report_line(struct xfer *x, const struct outcome *oc)
{
    struct str s = {0};

    add_json(&s, oc, true);
    str_add(&s, "\n", 1);
    if (app.report_stdout)
        stream_write(x, s.p, s.len);
    else if (s.p != NULL) {
        fwrite(s.p, 1, s.len, app.report);
        fflush(app.report);
    }
    free(s.p);
}

/* ---- callbacks ---------------------------------------------------------------------------- */

static void trace_print(sl_trace_kind_t kind, const char *data, size_t len)
{
    const char *prefix = kind == SL_TRACE_INFO ? "* " : kind == SL_TRACE_HEAD_OUT ? "> " : "< ";
    size_t start = 0;

    /* One prefixed line per line of the text, CR dropped, as curl -v. */
    for (size_t i = 0; i <= len; i++) {
        if (i == len ? i > start : data[i] == '\n') {
            size_t end = i;
            if (end > start && data[end - 1] == '\r')
                end--;
            fprintf(stderr, "%s%.*s\n", prefix, (int)(end - start), data + start);
            start = i + 1;
        }
    }
}

/* The status of a head as traced ("HTTP/1.1 404 Not Found\r\n..."). */
static int head_status(const char *data, size_t len)
{
    const char *sp = memchr(data, ' ', len);
    int status = 0;

    if (sp == NULL)
        return 0;
    for (sp++; sp < data + len && *sp >= '0' && *sp <= '9'; sp++)
        status = status * 10 + (*sp - '0');
    return status;
}

static void on_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len)
{
    struct xfer *x = sl_req_data(req);

    if (app.o.verbose)
        trace_print(kind, data, len);
    /* -I and --include show every head as received: redirects followed
     * with -L and interim 1xx included, like curl. A head that --fail
     * rejects is not shown. */
    if (kind == SL_TRACE_HEAD_IN && app.show_headers &&
        !(app.o.fail && head_status(data, len) >= 400))
        emit(x, data, len); /* a failure makes on_head/on_data abort */
}

static int on_head(sl_req_t *req, const sl_resp_t *resp)
{
    struct xfer *x = sl_req_data(req);
    int status = sl_resp_status(resp);

    if (x->err != 0)
        return x->err;
    if (x->resume_from > 0 && x->path != NULL) {
        int rc = resume_head(x, resp, status);
        if (rc < 0 || x->complete)
            return rc;
    }
    /* curl -L --max-redirs 0 fails on a redirect; the library's 0 means
     * "do not follow", so the CLI applies that rule itself. */
    if (app.o.location && app.o.max_redirs == 0 &&
        (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) &&
        sl_resp_header(resp, "Location") != NULL) {
        xfer_fail(x, X_REDIRS, SL_ETOO_MANY_REDIRECTS, "maximum (0) redirects followed");
        return SL_ETOO_MANY_REDIRECTS;
    }
    if (app.o.fail && status >= 400) {
        xfer_fail(x, X_HTTP, SL_EHTTP_STATUS, "The requested URL returned error: %d", status);
        return SL_EHTTP_STATUS;
    }
    return 0;
}

static int on_data(sl_req_t *req, const void *data, size_t len)
{
    struct xfer *x = sl_req_data(req);

    if (app.head_only || x->complete)
        return x->err != 0 ? x->err : 0;
    return emit(x, data, len) < 0 ? x->err : 0;
}

static void on_upload_ready(sl_io_t *io, unsigned events)
{
    struct xfer *x = io->data;

    (void)events;
    sl_io_stop(io);
    if (x->req != NULL)
        sl_req_resume(x->req);
}

/* Watch a pipe or tty for input; 0 if the caller may return SL_PAUSE. */
static int upload_wait(struct xfer *x)
{
    if (x->up_io == NULL) {
        x->up_io = malloc(sizeof(*x->up_io));
        if (x->up_io == NULL)
            return -1;
        if (sl_io_init(&app.loop, x->up_io, x->up_fd, on_upload_ready) < 0) {
            free(x->up_io);
            x->up_io = NULL;
            return -1;
        }
        x->up_io->data = x;
    }
    return sl_io_start(x->up_io, SL_EV_READ) == 0 ? 0 : -1;
}

/* -T producer. A regular file is read directly; a pipe or tty is read only
 * when it has data, so that waiting for stdin does not block the loop. */
static int on_upload(sl_req_t *req, void *buf, size_t cap, size_t *len)
{
    struct xfer *x = sl_req_data(req);
    ssize_t n;

    *len = 0;
    if (x->up_poll) {
        struct pollfd pfd = {.fd = x->up_fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) == 0 && upload_wait(x) == 0)
            return SL_PAUSE;
    }
    do
        n = read(x->up_fd, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && upload_wait(x) == 0)
        return SL_PAUSE;
    if (n < 0) {
        xfer_fail(x, X_READ, sl_translate_errno(errno), "failed reading '%s': %s", app.o.upload,
                  strerror(errno));
        return x->err;
    }
    if (n == 0 && x->up_len >= 0 && x->up_bytes < (uint64_t)x->up_len) {
        xfer_fail(x, X_READ, SL_EIO, "'%s' ended after %" PRIu64 " of its %" PRId64 " bytes",
                  app.o.upload, x->up_bytes, x->up_len);
        return x->err;
    }
    *len = (size_t)n;
    x->up_bytes += (uint64_t)n;
    return 0;
}

static void pump(void);

/* The transfer is over (or never started): settle its output, report it,
 * and let the chain move on. Its request is released here. */
static void xfer_finish(struct xfer *x, int status)
{
    static const sl_result_t no_result = {.effective_url = "", .remote_ip = "", .errmsg = ""};
    sl_result_t fallback = no_result;
    struct outcome oc = {.x = x, .req = x->req, .res = &fallback};

    fallback.effective_url = x->url;
    if (x->req != NULL) {
        oc.res = sl_req_result(x->req);
        oc.resp = sl_req_response(x->req);
    }
    if (status != 0 && x->err == 0) {
        const char *detail = x->req ? sl_req_errdetail(x->req) : "";
        xfer_fail(x, exit_for(status), status, "%s", *detail ? detail : sl_strerror(status));
    }
    if (x->err == 0 && app.o.fail_with_body && oc.res->status >= 400)
        xfer_fail(x, X_HTTP, SL_EHTTP_STATUS, "The requested URL returned error: %d",
                  oc.res->status);
    if (app.interrupted) {
        x->err = SL_ECANCELED;
        x->exit_code = 128 + app.interrupted;
    }

    if (x->path != NULL) {
        bool keep = x->err == 0 || (x->err == SL_EHTTP_STATUS && app.o.fail_with_body);
        if (!keep || out_commit(x) < 0)
            out_abort(x);
    }
    if (!app.interrupted) {
        if (x->err != 0)
            print_error(x);
        if (app.o.writeout != NULL)
            writeout(x, &oc);
        if (app.o.json_report != NULL)
            report_line(x, &oc);
        if (x->err != 0)
            record_failure(x->num, x->exit_code);
    }

    if (x->up_io != NULL) {
        sl_io_close(x->up_io, close_free);
        x->up_io = NULL;
    }
    if (x->up_own_fd) {
        close(x->up_fd);
        x->up_own_fd = false;
    }
    sl_req_free(x->req);
    x->req = NULL;
    x->done = true;
    if (x == app.head) {
        chain_advance();
    } else if (x->len == 0 && x->spill == NULL) {
        chain_unlink(x);
        xfer_free(x);
    } else {
        app.waiting++;
    }
}

static void on_done(sl_req_t *req, int status)
{
    struct xfer *x = sl_req_data(req);

    app.inflight--;
    xfer_finish(x, status);
    pump();
}

/* ---- starting transfers ------------------------------------------------------------------- */

/* A URL without a scheme gets "http://", as curl guesses. "host:8080/x"
 * has no scheme either: what follows the colon is a port. */
static char *url_dup(const char *s)
{
    const char *p = s;
    char *u;

    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) {
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
               *p == '+' || *p == '-' || *p == '.')
            p++;
        if (*p == ':' && !(p[1] >= '0' && p[1] <= '9'))
            return strdup(s);
    }
    u = malloc(strlen(s) + sizeof("http://"));
    if (u != NULL) {
        memcpy(u, "http://", 7);
        strcpy(u + 7, s);
    }
    return u;
}

/* Where the path of a URL starts, and where it ends (before ? or #). */
static const char *url_path(const char *url, const char **end)
{
    const char *p = strstr(url, "://");

    p = p != NULL ? p + 3 : url;
    p += strcspn(p, "/?#");
    *end = p + strcspn(p, "?#");
    return p;
}

/* The next URL in command-line order: returns false at the end, else true
 * with *url malloc'd (NULL if out of memory). */
static bool next_url(char **url)
{
    while (app.src_pos < app.o.nsrc) {
        struct source *s = &app.o.src[app.src_pos];
        if (!s->is_list) {
            app.src_pos++;
            *url = url_dup(s->arg);
            return true;
        }
        errno = 0;
        ssize_t n = s->list != NULL ? getline(&app.line, &app.line_cap, s->list) : -1;
        if (n < 0) {
            if (s->list != NULL && ferror(s->list)) {
                fprintf(stderr, "sluice: (%d) cannot read the URL list '%s': %s\n", X_READ, s->arg,
                        strerror(errno ? errno : EIO));
                record_failure(app.next_num, X_READ);
            }
            if (s->list != NULL && s->list != stdin)
                fclose(s->list);
            s->list = NULL;
            app.src_pos++;
            continue;
        }
        char *b = app.line, *e = app.line + n;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *e = '\0';
        if (b == e || *b == '#')
            continue;
        *url = url_dup(b);
        return true;
    }
    free(app.line);
    app.line = NULL;
    app.line_cap = 0;
    return false;
}

static char *path_join(const char *dir, const char *name, size_t n)
{
    size_t d = dir != NULL && name[0] != '/' ? strlen(dir) : 0;
    char *p = malloc(d + 1 + n + 1);

    if (p == NULL)
        return NULL;
    if (d > 0) {
        memcpy(p, dir, d);
        if (dir[d - 1] != '/')
            p[d++] = '/';
    }
    memcpy(p + d, name, n);
    p[d + n] = '\0';
    return p;
}

/* -o NAME or -O for this URL (the n-th of each goes with the n-th URL). */
static int output_path(struct xfer *x)
{
    const char *name, *end;

    if (x->num >= app.o.nouts)
        return 0;
    name = app.o.outs[x->num];
    if (name != NULL && strcmp(name, "-") == 0)
        return 0;
    if (name == NULL) {
        const char *path = url_path(x->url, &end), *seg = end;
        while (seg > path && seg[-1] != '/')
            seg--;
        if (seg == end || (end - seg == 1 && *seg == '.') ||
            (end - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            return xfer_fail(x, X_WRITE, SL_EINVAL,
                             "-O: the URL has no file name (its path ends with '/')");
        x->path = path_join(app.o.output_dir, seg, (size_t)(end - seg));
    } else {
        x->path = path_join(app.o.output_dir, name, strlen(name));
    }
    if (x->path == NULL)
        return xfer_fail(x, X_NOMEM, SL_ENOMEM, "out of memory");
    return 0;
}

/* -T FILE: open it for this transfer, and append its name to a URL whose
 * path is empty or ends with '/', as curl does. */
static int upload_open(struct xfer *x)
{
    const char *file = app.o.upload, *end, *path = url_path(x->url, &end);
    struct stat st;

    if (strcmp(file, "-") == 0) {
        x->up_fd = STDIN_FILENO;
    } else {
        x->up_fd = open(file, O_RDONLY | O_CLOEXEC);
        if (x->up_fd < 0)
            return xfer_fail(x, X_READ, sl_translate_errno(errno), "cannot open '%s': %s", file,
                             strerror(errno));
        x->up_own_fd = true;
    }
    if (fstat(x->up_fd, &st) == 0 && S_ISREG(st.st_mode)) {
        x->up_len = st.st_size;
    } else {
        x->up_len = -1;
        x->up_poll = true;
    }
    if (*end == '\0' && (path == end || end[-1] == '/') && strcmp(file, "-") != 0) {
        const char *base = strrchr(file, '/');
        base = base != NULL ? base + 1 : file;
        size_t n = strlen(x->url);
        char *u = malloc(n + 1 + strlen(base) + 1);
        if (u == NULL)
            return xfer_fail(x, X_NOMEM, SL_ENOMEM, "out of memory");
        sprintf(u, "%s%s%s", x->url, path == end ? "/" : "", base);
        free(x->url);
        x->url = u;
    }
    return 0;
}

static bool user_header(const char *name)
{
    for (size_t i = 0; i < app.o.nheaders; i++)
        if (strcasecmp(app.o.headers[i].name, name) == 0)
            return true;
    return false;
}

static int req_add_header(struct xfer *x, const char *name, const char *value)
{
    int rc = sl_req_header(x->req, name, value);

    if (rc < 0)
        return xfer_fail(x, exit_for(rc), rc, "cannot send the header '%s': %s", name,
                         rc == SL_EBAD_HEADER
                             ? "sluice sets Host, Content-Length and Transfer-Encoding itself, "
                               "and names and values must be valid"
                             : sl_strerror(rc));
    return 0;
}

static int xfer_setup(struct xfer *x)
{
    const char *why = NULL;
    int rc;

    if (output_path(x) < 0 || (app.o.upload != NULL && upload_open(x) < 0))
        return -1;
    rc = sl_req_new(app.client, app.method, x->url, &x->req, &why);
    if (rc == SL_EUNSUPPORTED_SCHEME)
        return xfer_fail(x, exit_for(rc), rc, "protocol \"%.*s\" is not supported",
                         (int)strcspn(x->url, ":"), x->url);
    if (rc < 0)
        return xfer_fail(x, exit_for(rc), rc, "%s%s%s",
                         rc == SL_EURL ? "malformed URL" : sl_strerror(rc), why ? ": " : "",
                         why ? why : "");
    sl_req_set_data(x->req, x);
    for (size_t i = 0; i < app.o.nheaders; i++)
        if (req_add_header(x, app.o.headers[i].name, app.o.headers[i].value) < 0)
            return -1;
    if (x->path != NULL && resume_prepare(x) < 0)
        return -1;
    if (app.o.user_agent != NULL && !user_header("User-Agent") &&
        req_add_header(x, "User-Agent", *app.o.user_agent ? app.o.user_agent : NULL) < 0)
        return -1;
    if (app.o.has_data) {
        if (!user_header("Content-Type") &&
            req_add_header(x, "Content-Type",
                           app.o.json ? "application/json" : "application/x-www-form-urlencoded") <
                0)
            return -1;
        if (app.o.json && !user_header("Accept") &&
            req_add_header(x, "Accept", "application/json") < 0)
            return -1;
        rc = sl_req_body_ref(x->req, app.o.data, app.o.data_len);
    } else if (app.o.upload != NULL) {
        rc = sl_req_body_stream(x->req, x->up_len, on_upload);
    }
    if (rc < 0)
        return xfer_fail(x, exit_for(rc), rc, "cannot set the request body: %s", sl_strerror(rc));
    sl_req_timeouts(x->req, &app.o.timeouts);
    if (app.o.retry.max > 0)
        sl_req_retry(x->req, &app.o.retry);
    if (app.o.location)
        sl_req_follow(x->req, app.o.max_redirs, false);
    if (app.o.compressed)
        sl_req_decode(x->req, true, 0);
    sl_req_callbacks(x->req, on_head, on_data, on_done);
    if (app.o.verbose || app.show_headers)
        sl_req_trace(x->req, on_trace);
    rc = sl_group_add(app.group, x->req); /* the group is running: this starts it */
    if (rc < 0)
        return xfer_fail(x, exit_for(rc), rc, "cannot start the transfer: %s", sl_strerror(rc));
    return 0;
}

static void xfer_begin(char *url)
{
    struct xfer *x;

    if (url == NULL || (x = calloc(1, sizeof(*x))) == NULL) {
        fprintf(stderr, "sluice: (%d) out of memory\n", X_NOMEM);
        record_failure(app.next_num++, X_NOMEM);
        free(url);
        return;
    }
    x->num = app.next_num++;
    x->url = url;
    x->fd = -1;
    x->up_fd = -1;
    chain_append(x);
    if (xfer_setup(x) < 0)
        xfer_finish(x, 0);
    else
        app.inflight++;
}

/* Start transfers while there is room: in flight below the limit, and not
 * too many finished ones holding output behind a slow earlier one. */
static void pump(void)
{
    char *url;

    while (!app.interrupted && !app.stopping && app.inflight < app.max_inflight &&
           app.waiting < app.wait_max && next_url(&url))
        xfer_begin(url);
    /* The list ran out: connections close as they finish, not all at exit. */
    if (app.src_pos >= app.o.nsrc)
        sl_client_drain(app.client);
}

/* ---- signals ------------------------------------------------------------------------------ */

static void on_signal(int sig)
{
    if (got_signal == 0)
        got_signal = sig;
    sl_async_send(&app.sig_async);
}

static void on_signal_async(sl_async_t *a)
{
    (void)a;
    if (app.interrupted || got_signal == 0)
        return;
    app.interrupted = got_signal;
    for (struct xfer *x = app.head; x != NULL; x = x->next)
        if (!x->done && x->req != NULL)
            sl_req_cancel(x->req); /* on_done removes the part file */
}

static void signals_set(void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- command line ------------------------------------------------------------------------- */

enum opt_id {
    OPT_URL,
    OPT_INPUT,
    OPT_OUTPUT,
    OPT_REMOTE_NAME,
    OPT_OUTPUT_DIR,
    OPT_PARALLEL,
    OPT_PARALLEL_MAX,
    OPT_PARALLEL_HOST,
    OPT_REQUEST,
    OPT_HEADER,
    OPT_USER_AGENT,
    OPT_DATA,
    OPT_DATA_BINARY,
    OPT_DATA_RAW,
    OPT_DATA_URLENCODE,
    OPT_JSON,
    OPT_UPLOAD,
    OPT_LOCATION,
    OPT_MAX_REDIRS,
    OPT_COMPRESSED,
    OPT_FAIL,
    OPT_FAIL_WITH_BODY,
    OPT_HEAD,
    OPT_INCLUDE,
    OPT_MAX_TIME,
    OPT_CONNECT_TIMEOUT,
    OPT_READ_TIMEOUT,
    OPT_FIRST_BYTE_TIMEOUT,
    OPT_QUEUE_TIMEOUT,
    OPT_SILENT,
    OPT_SHOW_ERROR,
    OPT_VERBOSE,
    OPT_WRITE_OUT,
    OPT_JSON_REPORT,
    OPT_NO_PROGRESS,
    OPT_HELP,
    OPT_VERSION,
    OPT_RETRY,
    OPT_RETRY_DELAY,
    OPT_RETRY_MAX_DELAY,
    OPT_RETRY_MAX_TIME,
    OPT_RETRY_ALL_METHODS,
    OPT_RATE,
    OPT_BURST,
    OPT_RATE_PER_HOST,
    OPT_FAIL_EARLY,
    OPT_NO_ADAPTIVE,
    OPT_CONTINUE_AT,
    OPT_CONTINUE,
    OPT_INSECURE,
    OPT_CACERT,
    OPT_CAPATH,
    OPT_CERT,
    OPT_KEY,
    OPT_TLSV12,
    OPT_TLSV13,
    OPT_CIPHERS,
    OPT_TLS13_CIPHERS,
};

struct optdef {
    const char *name; /* long name, without "--" */
    char letter;      /* short name, or 0 */
    bool value;       /* takes a value */
    enum opt_id id;
};

static const struct optdef optdefs[] = {
    {"url", 0, true, OPT_URL},
    {"input-file", 'i', true, OPT_INPUT},
    {"output", 'o', true, OPT_OUTPUT},
    {"remote-name", 'O', false, OPT_REMOTE_NAME},
    {"output-dir", 0, true, OPT_OUTPUT_DIR},
    {"parallel", 'Z', false, OPT_PARALLEL},
    {"parallel-max", 0, true, OPT_PARALLEL_MAX},
    {"parallel-host", 0, true, OPT_PARALLEL_HOST},
    {"request", 'X', true, OPT_REQUEST},
    {"header", 'H', true, OPT_HEADER},
    {"user-agent", 'A', true, OPT_USER_AGENT},
    {"data", 'd', true, OPT_DATA},
    {"data-ascii", 0, true, OPT_DATA},
    {"data-binary", 0, true, OPT_DATA_BINARY},
    {"data-raw", 0, true, OPT_DATA_RAW},
    {"data-urlencode", 0, true, OPT_DATA_URLENCODE},
    {"json", 0, true, OPT_JSON},
    {"upload-file", 'T', true, OPT_UPLOAD},
    {"location", 'L', false, OPT_LOCATION},
    {"max-redirs", 0, true, OPT_MAX_REDIRS},
    {"compressed", 0, false, OPT_COMPRESSED},
    {"fail", 'f', false, OPT_FAIL},
    {"fail-with-body", 0, false, OPT_FAIL_WITH_BODY},
    {"head", 'I', false, OPT_HEAD},
    {"include", 0, false, OPT_INCLUDE},
    {"max-time", 'm', true, OPT_MAX_TIME},
    {"timeout", 0, true, OPT_MAX_TIME},
    {"connect-timeout", 0, true, OPT_CONNECT_TIMEOUT},
    {"read-timeout", 0, true, OPT_READ_TIMEOUT},
    {"first-byte-timeout", 0, true, OPT_FIRST_BYTE_TIMEOUT},
    {"queue-timeout", 0, true, OPT_QUEUE_TIMEOUT},
    {"silent", 's', false, OPT_SILENT},
    {"show-error", 'S', false, OPT_SHOW_ERROR},
    {"verbose", 'v', false, OPT_VERBOSE},
    {"write-out", 'w', true, OPT_WRITE_OUT},
    {"json-report", 0, true, OPT_JSON_REPORT},
    {"no-progress-meter", 0, false, OPT_NO_PROGRESS},
    {"help", 'h', false, OPT_HELP},
    {"version", 'V', false, OPT_VERSION},
    {"retry", 0, true, OPT_RETRY},
    {"retry-delay", 0, true, OPT_RETRY_DELAY},
    {"retry-max-delay", 0, true, OPT_RETRY_MAX_DELAY},
    {"retry-max-time", 0, true, OPT_RETRY_MAX_TIME},
    {"retry-all-methods", 0, false, OPT_RETRY_ALL_METHODS},
    {"rate", 0, true, OPT_RATE},
    {"burst", 0, true, OPT_BURST},
    {"rate-per-host", 0, true, OPT_RATE_PER_HOST},
    {"fail-early", 0, false, OPT_FAIL_EARLY},
    {"no-adaptive", 0, false, OPT_NO_ADAPTIVE},
    {"continue-at", 'C', true, OPT_CONTINUE_AT},
    {"continue", 0, false, OPT_CONTINUE}, /* wget's -c, long form only (curl's -c differs) */
    {"insecure", 'k', false, OPT_INSECURE},
    {"cacert", 0, true, OPT_CACERT},
    {"capath", 0, true, OPT_CAPATH},
    {"cert", 'E', true, OPT_CERT},
    {"key", 0, true, OPT_KEY},
    {"tlsv1.2", 0, false, OPT_TLSV12},
    {"tlsv1.3", 0, false, OPT_TLSV13},
    {"ciphers", 0, true, OPT_CIPHERS},
    {"tls13-ciphers", 0, true, OPT_TLS13_CIPHERS},
};

#define NOPTS (sizeof(optdefs) / sizeof(optdefs[0]))

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("sluice: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nsluice: try 'sluice --help' for more information\n", stderr);
    return X_USAGE;
}

static void usage(FILE *out)
{
    fputs("Usage: sluice [options] URL...\n"
          "Fetch URLs over HTTP/1.1, like curl. Options may come before or after the URLs.\n"
          "\n"
          "Input and output:\n"
          "  URL                      a URL (http:// is assumed without a scheme)\n"
          "      --url URL            the same, as an option\n"
          "  -i, --input-file FILE    read URLs from FILE, one a line ('-': stdin);\n"
          "                           blank lines and lines starting with # are skipped\n"
          "  -o, --output FILE        write the next URL's body to FILE ('-': stdout)\n"
          "  -O, --remote-name        the same, named after the URL's last path segment\n"
          "      --output-dir DIR     put -o/-O files (relative names) in DIR\n"
          "      --include            write the response head(s) before the body\n"
          "  -C, --continue-at -      keep the part file of a failed download, and continue\n"
          "                           a kept one with Range (also wget's --continue)\n"
          "  -I, --head               HEAD request; write the response head(s)\n"
          "\n"
          "Request:\n"
          "  -X, --request METHOD     use METHOD\n"
          "  -H, --header 'N: v'      add a header; 'N:' removes one sluice adds, 'N;' sends\n"
          "                           it empty; @FILE reads headers from FILE, one a line\n"
          "  -A, --user-agent UA      User-Agent ('' removes it)\n"
          "  -d, --data DATA          POST DATA (form-encoded); repeated: joined with '&';\n"
          "                           @FILE reads FILE without CR/LF ('@-': stdin)\n"
          "      --data-ascii DATA    same as -d\n"
          "      --data-binary DATA   like -d, but @FILE is sent exactly\n"
          "      --data-raw DATA      like -d, no @FILE\n"
          "      --data-urlencode D   like -d, URL-encoding [name=]content or [name]@file\n"
          "      --json DATA          POST JSON (Content-Type and Accept: application/json)\n"
          "  -T, --upload-file FILE   PUT FILE, streamed ('-': stdin, chunked)\n"
          "  -L, --location           follow redirects\n"
          "      --max-redirs N       at most N redirects with -L (default 10; -1: no limit)\n"
          "      --compressed         ask for gzip/deflate and decode the body\n"
          "\n"
          "Transfers:\n"
          "  -Z, --parallel [N]       run transfers in parallel (N: as --parallel-max N);\n"
          "                           bodies on stdout still come out in URL order\n"
          "      --parallel-max N     at most N transfers at once with -Z (default 50)\n"
          "      --parallel-host N    at most N connections per host (default: no limit)\n"
          "  -m, --max-time SECONDS   limit each whole transfer (fractions allowed)\n"
          "      --timeout SECONDS    same as --max-time\n"
          "      --connect-timeout S  limit DNS + connect\n"
          "      --first-byte-timeout S  limit the wait for the response's first byte\n"
          "      --read-timeout S     limit the silence between two received bytes\n"
          "      --queue-timeout S    limit the wait for a free connection slot\n"
          "  -f, --fail               HTTP status >= 400: no output, exit 22\n"
          "      --fail-with-body     HTTP status >= 400: keep the output, exit 22\n"
          "\n"
          "Reporting:\n"
          "  -s, --silent             no error messages\n"
          "  -S, --show-error         error messages even with -s\n"
          "  -v, --verbose            show connection info (*), request (>) and response (<)\n"
          "                           heads on stderr\n"
          "  -w, --write-out FORMAT   print FORMAT after each transfer (curl's %{variables};\n"
          "                           @FILE reads the format from FILE)\n"
          "      --json-report FILE   one JSON object per URL to FILE ('-': stdout)\n"
          "      --retry N            retry failed transfers N times (backoff, Retry-After)\n"
          "      --retry-delay S      first backoff (1 s); --retry-max-delay S caps a wait (30 s)\n"
          "      --retry-max-time S   start no retry after S seconds\n"
          "      --retry-all-methods  also retry non-idempotent methods\n"
          "      --rate N/s|N/m|N/h   at most N request starts per second/minute/hour\n"
          "      --rate-per-host R    the same, per host; --burst B lets B go at once\n"
          "      --fail-early         the first failure cancels the rest\n"
          "      --no-adaptive        with --retry: do not slow down for a host that answers\n"
          "                           429/503 (halving its connections and rate, AIMD)\n"
          "  -k, --insecure           HTTPS without certificate verification\n"
          "      --cacert FILE        trust the CAs in FILE (instead of the system store)\n"
          "      --capath DIR         trust the CAs in hashed directory DIR\n"
          "  -E, --cert FILE          client certificate (PEM); --key FILE its key\n"
          "      --tlsv1.2, --tlsv1.3 minimum TLS version (1.2 by default)\n"
          "      --ciphers LIST       TLS 1.2 ciphers to offer, in order (OpenSSL's syntax)\n"
          "      --tls13-ciphers LIST TLS 1.3 cipher suites to offer, in order\n"
          "  -h, --help               this help\n"
          "  -V, --version            version and features\n"
          "\n"
          "Exit status: 0 if every URL succeeded, else curl's code for the first failing URL\n"
          "in command-line order (see docs/CLI.md).\n",
          out);
}

static int version(void)
{
    sl_loop_t loop;
    const char *backend = "unavailable";
    int rc = sl_loop_init(&loop);

    if (rc == 0)
        backend = sl_loop_backend(&loop);
    printf("sluice %s (libsluice %s; event backend %s)\n", SL_VERSION_STRING, sl_version(),
           backend);
    printf("Protocols: http https\n");
    printf("Features: AsyncDNS libz SSL parallel ordered-output json-report\n");
    if (rc == 0)
        sl_loop_close(&loop);
    return 0;
}

/* The whole of FILE ('-': stdin). Returns 0 or an errno value. */
static int read_file(const char *name, char **out, size_t *len)
{
    FILE *f = strcmp(name, "-") == 0 ? stdin : fopen(name, "rb");
    char *buf = NULL, *p;
    size_t n = 0, cap = 0, got;
    int e = 0;

    if (f == NULL)
        return errno;
    do {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            p = realloc(buf, cap);
            if (p == NULL) {
                e = ENOMEM;
                break;
            }
            buf = p;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    if (e == 0 && ferror(f))
        e = errno ? errno : EIO;
    if (f != stdin)
        fclose(f);
    if (e != 0) {
        free(buf);
        return e;
    }
    if (buf == NULL && (buf = malloc(1)) == NULL)
        return ENOMEM;
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static int data_add(const char *piece, size_t n, bool join)
{
    struct options *o = &app.o;
    bool sep = join && o->has_data;
    char *p = realloc(o->data, o->data_len + sep + n + 1);

    if (p == NULL) {
        fprintf(stderr, "sluice: out of memory\n");
        return X_NOMEM;
    }
    o->data = p;
    if (sep)
        o->data[o->data_len++] = '&';
    memcpy(o->data + o->data_len, piece, n);
    o->data_len += n;
    o->data[o->data_len] = '\0';
    o->has_data = true;
    return 0;
}

/* Append `s` (n bytes) percent-encoded as curl_easy_escape does. */
static void url_encode(struct str *s, const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            str_add(s, (const char *)&c, 1);
        else
            str_addf(s, "%%%02X", c);
    }
}

static int opt_data(const struct optdef *d, const char *opt, const char *val)
{
    char *content = NULL;
    size_t n = 0;
    int e, rc;

    if (d->id == OPT_DATA_URLENCODE) {
        /* [name]=content, [name]@file, or plain content (curl's rules). */
        const char *sep = strchr(val, '=');
        size_t nlen = 0;
        struct str s = {0};
        if (sep == NULL)
            sep = strchr(val, '@');
        const char *src = sep != NULL ? sep + 1 : val;
        if (sep != NULL)
            nlen = (size_t)(sep - val);
        if (sep != NULL && *sep == '@') {
            if ((e = read_file(src, &content, &n)) != 0) {
                fprintf(stderr, "sluice: option %s: cannot read '%s': %s\n", opt, src, strerror(e));
                return X_READ;
            }
        }
        if (nlen > 0) {
            str_add(&s, val, nlen);
            str_add(&s, "=", 1);
        }
        url_encode(&s, content != NULL ? content : src, content != NULL ? n : strlen(src));
        free(content);
        rc = data_add(s.p != NULL ? s.p : "", s.len, true);
        free(s.p);
        return rc;
    }
    if (val[0] == '@' && d->id != OPT_DATA_RAW) {
        if ((e = read_file(val + 1, &content, &n)) != 0) {
            fprintf(stderr, "sluice: option %s: cannot read '%s': %s\n", opt, val + 1, strerror(e));
            return X_READ;
        }
        if (d->id == OPT_DATA) { /* -d @file drops CR and LF, like curl */
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (content[i] != '\r' && content[i] != '\n')
                    content[k++] = content[i];
            n = k;
        }
        rc = data_add(content, n, d->id != OPT_JSON);
        free(content);
    } else {
        rc = data_add(val, strlen(val), d->id != OPT_JSON);
    }
    if (d->id == OPT_JSON)
        app.o.json = true;
    return rc;
}

/* "Name: value" (empty value: remove), "Name;" (send empty). */
static int header_add(const char *opt, const char *h)
{
    struct options *o = &app.o;
    const char *colon = strchr(h, ':'), *semi = strchr(h, ';'), *v;
    size_t nlen;
    struct header *hs;

    if (colon != NULL && (semi == NULL || colon < semi)) {
        nlen = (size_t)(colon - h);
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
    } else if (semi != NULL && semi[1 + strspn(semi + 1, " \t")] == '\0') {
        nlen = (size_t)(semi - h);
        v = "";
    } else {
        return usage_error("option %s: '%s' is not 'Name: value'", opt, h);
    }
    if (nlen == 0)
        return usage_error("option %s: '%s' has no header name", opt, h);
    hs = realloc(o->headers, (o->nheaders + 1) * sizeof(*hs));
    if (hs == NULL)
        return X_NOMEM;
    o->headers = hs;
    struct header *nh = &o->headers[o->nheaders];
    size_t vlen = strlen(v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    nh->name = strndup(h, nlen);
    nh->value =
        colon != NULL && (semi == NULL || colon < semi) && vlen == 0 ? NULL : strndup(v, vlen);
    if (nh->name == NULL || (vlen > 0 && nh->value == NULL)) {
        free(nh->name);
        free(nh->value);
        return X_NOMEM;
    }
    o->nheaders++;
    return 0;
}

static int opt_header(const char *opt, const char *val)
{
    char *text, *line, *save = NULL;
    size_t n;
    int e, rc = 0;

    if (val[0] != '@')
        return header_add(opt, val);
    if ((e = read_file(val + 1, &text, &n)) != 0) {
        fprintf(stderr, "sluice: option %s: cannot read '%s': %s\n", opt, val + 1, strerror(e));
        return X_READ;
    }
    for (line = strtok_r(text, "\r\n", &save); line != NULL && rc == 0;
         line = strtok_r(NULL, "\r\n", &save))
        if (*line != '\0')
            rc = header_add(opt, line);
    free(text);
    return rc;
}

static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return false;
    return true;
}

static bool parse_long(const char *s, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 10);
    return *s != '\0' && *end == '\0' && errno == 0;
}

static int opt_uint(const char *opt, const char *val, long min, long max, unsigned *out)
{
    long v;

    if (!parse_long(val, &v) || v < min || v > max)
        return usage_error("option %s: expected a number from %ld to %ld, got '%s'", opt, min, max,
                           val);
    *out = (unsigned)v;
    return 0;
}

/* Seconds, fractions allowed, to milliseconds (rounded up, so that 0.0001
 * still means a limit). */
static int opt_seconds(const char *opt, const char *val, uint64_t *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(val, &end);
    if (*val == '\0' || *end != '\0' || errno != 0 || !(v >= 0) || v > 1e9)
        return usage_error("option %s: expected a number of seconds, got '%s'", opt, val);
    double m = v * 1000.0;
    *ms = (uint64_t)m;
    if ((double)*ms < m)
        (*ms)++;
    return 0;
}

static bool positive_int(const char *s)
{
    long v;
    return s != NULL && *s >= '0' && *s <= '9' && parse_long(s, &v) && v > 0;
}

/* Apply one option. `argv`/`i` let -Z/--parallel take a following count. */
static int opt_apply(const struct optdef *d, const char *opt, const char *val, char **argv,
                     int argc, int *i, bool can_peek)
{
    struct options *o = &app.o;
    void *p;
    long lv;

    switch (d->id) {
    case OPT_URL:
    case OPT_INPUT:
        p = realloc(o->src, (o->nsrc + 1) * sizeof(*o->src));
        if (p == NULL)
            return X_NOMEM;
        o->src = p;
        o->src[o->nsrc] = (struct source){.arg = val, .is_list = d->id == OPT_INPUT};
        if (d->id == OPT_INPUT) {
            FILE *f = strcmp(val, "-") == 0 ? stdin : fopen(val, "r");
            if (f == NULL) {
                fprintf(stderr, "sluice: option %s: cannot open '%s': %s\n", opt, val,
                        strerror(errno));
                return X_READ;
            }
            o->src[o->nsrc].list = f;
        }
        o->nsrc++;
        return 0;
    case OPT_OUTPUT:
    case OPT_REMOTE_NAME:
        p = realloc(o->outs, (o->nouts + 1) * sizeof(*o->outs));
        if (p == NULL)
            return X_NOMEM;
        o->outs = p;
        o->outs[o->nouts++] = d->id == OPT_OUTPUT ? val : NULL;
        return 0;
    case OPT_OUTPUT_DIR:
        o->output_dir = val;
        return 0;
    case OPT_PARALLEL:
        o->parallel = true;
        if (val != NULL)
            return opt_uint(opt, val, 1, PARALLEL_LIMIT, &o->parallel_max);
        /* sluice's shorthand: -Z N / --parallel N, when N is a count. */
        if (can_peek && *i + 1 < argc && positive_int(argv[*i + 1])) {
            (*i)++;
            return opt_uint(opt, argv[*i], 1, PARALLEL_LIMIT, &o->parallel_max);
        }
        return 0;
    case OPT_PARALLEL_MAX:
        return opt_uint(opt, val, 1, PARALLEL_LIMIT, &o->parallel_max);
    case OPT_PARALLEL_HOST:
        return opt_uint(opt, val, 0, 65535, &o->parallel_host);
    case OPT_REQUEST:
        if (!is_token(val))
            return usage_error("option %s: '%s' is not a valid HTTP method", opt, val);
        o->method = val;
        return 0;
    case OPT_HEADER:
        return opt_header(opt, val);
    case OPT_USER_AGENT:
        o->user_agent = val;
        return 0;
    case OPT_DATA:
    case OPT_DATA_BINARY:
    case OPT_DATA_RAW:
    case OPT_DATA_URLENCODE:
    case OPT_JSON:
        return opt_data(d, opt, val);
    case OPT_UPLOAD:
        o->upload = val;
        return 0;
    case OPT_LOCATION:
        o->location = true;
        return 0;
    case OPT_MAX_REDIRS:
        if (!parse_long(val, &lv) || lv < -1)
            return usage_error("option %s: expected a number (-1: no limit), got '%s'", opt, val);
        o->max_redirs = lv < 0 || lv > UINT_MAX ? UINT_MAX : (unsigned)lv;
        return 0;
    case OPT_COMPRESSED:
        o->compressed = true;
        return 0;
    case OPT_FAIL:
        o->fail = true;
        return 0;
    case OPT_FAIL_WITH_BODY:
        o->fail_with_body = true;
        return 0;
    case OPT_HEAD:
        o->head = true;
        return 0;
    case OPT_INCLUDE:
        o->include = true;
        return 0;
    case OPT_MAX_TIME:
        return opt_seconds(opt, val, &o->timeouts.total_ms);
    case OPT_CONNECT_TIMEOUT:
        return opt_seconds(opt, val, &o->timeouts.connect_ms);
    case OPT_READ_TIMEOUT:
        return opt_seconds(opt, val, &o->timeouts.read_ms);
    case OPT_FIRST_BYTE_TIMEOUT:
        return opt_seconds(opt, val, &o->timeouts.first_byte_ms);
    case OPT_QUEUE_TIMEOUT:
        return opt_seconds(opt, val, &o->timeouts.queue_ms);
    case OPT_SILENT:
        o->silent = true;
        return 0;
    case OPT_SHOW_ERROR:
        o->show_error = true;
        return 0;
    case OPT_VERBOSE:
        o->verbose = true;
        return 0;
    case OPT_WRITE_OUT: {
        char *fmt;
        size_t n;
        int e;
        if (val[0] == '@') {
            if ((e = read_file(val + 1, &fmt, &n)) != 0) {
                fprintf(stderr, "sluice: option %s: cannot read '%s': %s\n", opt, val + 1,
                        strerror(e));
                return X_READ;
            }
        } else if ((fmt = strdup(val)) == NULL) {
            return X_NOMEM;
        }
        free(o->writeout);
        o->writeout = fmt;
        return 0;
    }
    case OPT_JSON_REPORT:
        o->json_report = val;
        return 0;
    case OPT_NO_PROGRESS:
        return 0; /* sluice never draws a progress meter */
    case OPT_HELP:
        o->help = true;
        return 0;
    case OPT_VERSION:
        o->version = true;
        return 0;
    case OPT_RETRY: {
        char *end;
        unsigned long n = strtoul(val, &end, 10);
        if (*val == '\0' || *end != '\0' || n > 1000000)
            return usage_error("option %s: expected a number of retries, got '%s'", opt, val);
        o->retry.max = (unsigned)n;
        return 0;
    }
    case OPT_RETRY_DELAY:
        return opt_seconds(opt, val, &o->retry.delay_ms);
    case OPT_RETRY_MAX_DELAY:
        return opt_seconds(opt, val, &o->retry.max_delay_ms);
    case OPT_RETRY_MAX_TIME:
        return opt_seconds(opt, val, &o->retry.max_time_ms);
    case OPT_RETRY_ALL_METHODS:
        o->retry.all_methods = true;
        return 0;
    case OPT_RATE:
    case OPT_RATE_PER_HOST: {
        /* curl's syntax: N/s, N/m, N/h (N alone: per hour, as curl) */
        char *end;
        double n = strtod(val, &end), per = 3600;
        if (end == val || n <= 0)
            return usage_error("option %s: expected N/s, N/m or N/h, got '%s'", opt, val);
        if (strcmp(end, "/s") == 0)
            per = 1;
        else if (strcmp(end, "/m") == 0)
            per = 60;
        else if (strcmp(end, "/h") == 0 || *end == '\0')
            per = 3600;
        else
            return usage_error("option %s: expected N/s, N/m or N/h, got '%s'", opt, val);
        if (d->id == OPT_RATE)
            o->rate = n / per;
        else
            o->host_rate = n / per;
        return 0;
    }
    case OPT_BURST: {
        char *end;
        double n = strtod(val, &end);
        if (end == val || *end != '\0' || n < 1)
            return usage_error("option %s: expected a number >= 1, got '%s'", opt, val);
        o->burst = n;
        return 0;
    }
    case OPT_FAIL_EARLY:
        o->fail_early = true;
        return 0;
    case OPT_NO_ADAPTIVE:
        o->no_adaptive = true;
        return 0;
    case OPT_CONTINUE_AT:
        if (strcmp(val, "-") != 0)
            return usage_error("option %s: only '-' is supported (continue from the part file a "
                               "failed -C - run kept), got '%s'",
                               opt, val);
        o->resume = true;
        return 0;
    case OPT_CONTINUE:
        o->resume = true;
        return 0;
    case OPT_INSECURE:
        o->tls_insecure = true;
        return 0;
    case OPT_CACERT:
        o->tls_cafile = val;
        return 0;
    case OPT_CAPATH:
        o->tls_capath = val;
        return 0;
    case OPT_CERT:
        o->tls_cert = val;
        return 0;
    case OPT_KEY:
        o->tls_key = val;
        return 0;
    case OPT_TLSV12: /* curl: "at least TLS 1.2" */
        o->tls_min = 12;
        return 0;
    case OPT_TLSV13:
        o->tls_min = 13;
        return 0;
    case OPT_CIPHERS:
        o->tls_ciphers = val;
        return 0;
    case OPT_TLS13_CIPHERS:
        o->tls13_ciphers = val;
        return 0;
    }
    return 0;
}

static const struct optdef *find_long(const char *name, size_t n)
{
    for (size_t k = 0; k < NOPTS; k++)
        if (strlen(optdefs[k].name) == n && memcmp(optdefs[k].name, name, n) == 0)
            return &optdefs[k];
    return NULL;
}

static const struct optdef *find_short(char c)
{
    for (size_t k = 0; k < NOPTS; k++)
        if (optdefs[k].letter == c)
            return &optdefs[k];
    return NULL;
}

/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv)
{
    struct options *o = &app.o;
    bool options_done = false;
    int rc;

    o->parallel_max = PARALLEL_DEFAULT;
    o->max_redirs = MAX_REDIRS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            static const struct optdef url_def = {"url", 0, true, OPT_URL};
            if ((rc = opt_apply(&url_def, "URL", a, argv, argc, &i, false)) != 0)
                return rc;
        } else if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t n = eq != NULL ? (size_t)(eq - name) : strlen(name);
            char opt[64];
            const struct optdef *d;
            const char *val = NULL;
            if (*name == '\0') {
                options_done = true;
                continue;
            }
            snprintf(opt, sizeof(opt), "--%.*s", (int)n, name);
            d = find_long(name, n);
            if (d == NULL)
                return usage_error("option %s: is unknown", opt);
            if (d->value) {
                if (eq != NULL)
                    val = eq + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else
                    return usage_error("option %s: requires a value", opt);
            } else if (eq != NULL && d->id == OPT_PARALLEL) {
                val = eq + 1;
            } else if (eq != NULL) {
                return usage_error("option %s: does not take a value", opt);
            }
            if ((rc = opt_apply(d, opt, val, argv, argc, &i, eq == NULL)) != 0)
                return rc;
        } else {
            /* A bundle of short options: -sSfL, -ofile, -o file, -XPOST. */
            for (const char *p = a + 1; *p; p++) {
                char opt[3] = {'-', *p, '\0'};
                const struct optdef *d = find_short(*p);
                const char *val = NULL;
                if (d == NULL)
                    return usage_error("option %s: is unknown", opt);
                if (d->value) {
                    if (p[1] != '\0')
                        val = p + 1;
                    else if (i + 1 < argc)
                        val = argv[++i];
                    else
                        return usage_error("option %s: requires a value", opt);
                }
                if ((rc = opt_apply(d, opt, val, argv, argc, &i, p[1] == '\0')) != 0)
                    return rc;
                if (d->value)
                    break;
            }
        }
    }
    if (o->help) {
        usage(stdout);
        return 0;
    }
    if (o->version)
        return version();
    if (o->fail && o->fail_with_body)
        return usage_error("--fail and --fail-with-body cannot be used together");
    if ((o->head ? 1 : 0) + (o->has_data ? 1 : 0) + (o->upload != NULL ? 1 : 0) > 1)
        return usage_error("you can only select one HTTP request method (-I, -d/--json, -T)");
    if (o->nsrc == 0)
        return usage_error("no URL specified");
    return -1;
}

static void options_free(void)
{
    struct options *o = &app.o;

    for (size_t i = 0; i < o->nsrc; i++)
        if (o->src[i].list != NULL && o->src[i].list != stdin)
            fclose(o->src[i].list);
    free(o->src);
    free(o->outs);
    for (size_t i = 0; i < o->nheaders; i++) {
        free(o->headers[i].name);
        free(o->headers[i].value);
    }
    free(o->headers);
    free(o->data);
    free(o->writeout);
    free(app.line);
}

/* Finished transfers may hold stdout bytes (and a tmpfile each) while an
 * earlier one runs: keep them within the descriptors we have. */
static size_t wait_limit(void)
{
    struct rlimit rl;
    size_t nofile = 1024, reserve = 3 * (size_t)app.max_inflight + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 8192) {
            rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        nofile = (size_t)rl.rlim_cur;
    }
    if (nofile < reserve + 16)
        return 16;
    return nofile - reserve > 4096 ? 4096 : nofile - reserve;
}

/* The client refused a cipher list (`detail` says which and why): curl's
 * exit 59, and a message naming the flag, found by asking about each list
 * alone. */
static int cipher_error(const struct options *o, const char *detail)
{
    char why[512];
    const char *flag = "--tls13-ciphers";

    if (o->tls_ciphers != NULL && sl_tls_ciphers_check(o->tls_ciphers, 12, why, sizeof(why)) < 0)
        flag = "--ciphers";
    else if (o->tls13_ciphers == NULL ||
             sl_tls_ciphers_check(o->tls13_ciphers, 13, why, sizeof(why)) == 0)
        snprintf(why, sizeof(why), "%s", detail); /* cannot happen: say what the client said */
    if (app.show_errors)
        fprintf(stderr, "sluice: (%d) option %s: %s\n", X_TLS_CIPHER, flag, why);
    return X_TLS_CIPHER;
}

static int run(void)
{
    struct options *o = &app.o;
    sl_client_opts_t copts;
    char detail[512];
    int rc;

    app.method = o->method != NULL ? o->method
                 : o->head         ? "HEAD"
                 : o->upload       ? "PUT"
                 : o->has_data     ? "POST"
                                   : "GET";
    app.head_only = o->head || strcmp(app.method, "HEAD") == 0;
    app.show_headers = app.head_only || o->include;
    app.show_errors = !o->silent || o->show_error;
    app.max_inflight = o->parallel ? o->parallel_max : 1;
    app.wait_max = wait_limit();
    if (o->writeout != NULL)
        writeout_check(o->writeout);
    if (o->json_report != NULL) {
        if (strcmp(o->json_report, "-") == 0) {
            app.report_stdout = true;
        } else if ((app.report = fopen(o->json_report, "w")) == NULL) {
            fprintf(stderr, "sluice: option --json-report: cannot create '%s': %s\n",
                    o->json_report, strerror(errno));
            return X_WRITE;
        }
    }

    rc = sl_loop_init(&app.loop);
    if (rc < 0) {
        fprintf(stderr, "sluice: cannot start the event loop: %s\n", sl_strerror(rc));
        return X_USAGE;
    }
    sl_client_opts_init(&copts);
    copts.max_connections = o->parallel_max;
    copts.max_connections_per_host = o->parallel_host;
    copts.tls_insecure = o->tls_insecure;
    copts.tls_cafile = o->tls_cafile;
    copts.tls_capath = o->tls_capath;
    copts.tls_cert = o->tls_cert;
    copts.tls_key = o->tls_key;
    copts.tls_min_version = o->tls_min;
    copts.tls_ciphers = o->tls_ciphers;
    copts.tls13_ciphers = o->tls13_ciphers;
    copts.rate_per_s = o->rate;
    copts.rate_burst = o->burst;
    copts.host_rate_per_s = o->host_rate;
    copts.host_rate_burst = o->burst;
    copts.adaptive = o->retry.max > 0 && !o->no_adaptive;
    /* --read-timeout starts with the first byte; the wait for it has its own
     * option (the library's read_ms alone would cover it too). */
    if (o->timeouts.read_ms > 0 && o->timeouts.first_byte_ms == 0)
        o->timeouts.first_byte_ms = SL_TIMEOUT_NEVER;
    rc = sl_client_new_ex(&app.loop, &copts, &app.client, detail, sizeof(detail));
    if (rc == SL_ETLS) {
        sl_loop_close(&app.loop);
        return cipher_error(o, detail);
    }
    if (rc == 0)
        rc = sl_group_new(&app.loop, o->fail_early ? SL_GROUP_FAIL_FAST : SL_GROUP_COLLECT,
                          &app.group);
    if (rc == 0) {
        /* Held open: transfers join as slots free up; the run ends with
         * the loop, not with the group. */
        sl_group_hold(app.group, true);
        rc = sl_group_start(app.group, NULL);
    }
    if (rc == 0)
        rc = sl_async_init(&app.loop, &app.sig_async, on_signal_async);
    if (rc < 0) {
        fprintf(stderr, "sluice: cannot start the HTTP client: %s\n", sl_strerror(rc));
        if (app.client != NULL)
            sl_client_free(app.client);
        sl_group_free(app.group);
        sl_loop_run(&app.loop);
        sl_loop_close(&app.loop);
        return X_USAGE;
    }
    sl_async_unref(&app.sig_async);
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a write error (23), not a kill */
    signals_set(on_signal);

    pump();
    rc = sl_loop_run(&app.loop);
    if (rc < 0)
        fprintf(stderr, "sluice: the event loop failed: %s\n", sl_strerror(rc));

    signals_set(SIG_DFL);
    while (app.head != NULL) { /* only after an interruption or a loop failure */
        struct xfer *x = app.head;
        chain_unlink(x);
        out_abort(x);
        xfer_free(x);
    }
    sl_group_free(app.group); /* empty by now: each request left it when freed */
    sl_client_free(app.client);
    sl_async_close(&app.sig_async, NULL);
    sl_loop_run(&app.loop);
    sl_loop_close(&app.loop);
    if (app.report != NULL)
        fclose(app.report);
    if (got_signal != 0)
        return 128 + got_signal;
    if (rc < 0)
        return X_USAGE;
    return app.failed ? app.fail_code : 0;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);

    if (rc < 0)
        rc = run();
    options_free();
    return rc;
}
