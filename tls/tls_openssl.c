/*
 * tls_openssl.c -- the TLS transform on OpenSSL 3.
 *
 * Model: one SSL object per connection, reading and writing the socket
 * through a small BIO of our own (recv, and send with MSG_NOSIGNAL so that
 * a reset peer is SL_EPIPE, not a SIGPIPE). Every operation is attempted
 * once; SSL_ERROR_WANT_READ/WRITE become SL_EAGAIN plus a want bit kept per
 * operation (handshake, read, write), and sl__tls_wants() is their union.
 * A failure is translated once, here, into an SL_E* code and a detail text,
 * and is sticky: later calls return it again.
 *
 * Writes never block inside OpenSSL: the BIO sends what the socket takes
 * and queues the rest of the ciphertext in `out`, and sl__tls_writev()
 * stops accepting plaintext while anything is queued. OpenSSL therefore
 * never holds a half-written record, so its "retry with the same buffer"
 * rule cannot be broken, and a message OpenSSL writes on its own (the
 * answer to a KeyUpdate, from inside SSL_read) cannot collide with a
 * blocked application record -- in OpenSSL 3.0 that collision is fatal
 * (SSL_R_BAD_LENGTH). The queue holds at most about one record (16 KiB)
 * plus such messages, and is freed as soon as it drains. Plaintext is fed
 * one record at a time, gathered from the iovec when its pieces are small.
 *
 * Cipher order: AEAD suites with forward secrecy first, AES-128-GCM first
 * among them (for TLS 1.2, the browsers' CBC tail after them), as browsers,
 * Go and BoringSSL offer them (a server that honours the
 * client's order, nginx's default, then picks it rather than AES-256-GCM);
 * ChaCha20-Poly1305 first on CPUs without AES instructions, asked once per
 * process (cpu_has_aes_gcm).
 *
 * Contexts: an OpenSSL SSL_CTX (trust store loaded, client certificate
 * read) costs far more CPU than a handshake, so it is shared. A process-wide
 * cache maps the options, plus the identity (device, inode, size, mtime) of
 * every file they name, to one refcounted SSL_CTX; a client created with
 * the same options gets the same one, and a changed file makes a new key.
 * Up to SHARED_IDLE_MAX unused ones are kept for the next client. The
 * cache is under a mutex; an SSL_CTX is thread-safe for SSL_new() and
 * verification, and everything mutable per client (the session cache,
 * counters) stays in struct sl__tls_ctx, which is never shared.
 *
 * Record buffers: read-ahead lets one recv() take a whole record (and the
 * start of the next) instead of two, header then body. A connection keeps
 * its two buffers while it is used, and frees them when the owner says it
 * is idle (sl__tls_idle: SSL_free_buffers). SSL_MODE_RELEASE_BUFFERS, which
 * frees a buffer as soon as it is empty, is not used: it allocated, filled
 * and freed both buffers for every small keep-alive exchange (~9% of the
 * instructions of such a request), and since OpenSSL 3.2 it cannot be
 * turned off for a connection whose record layer already exists.
 *
 * Sessions: the context keeps, per caller-chosen key, the newest session
 * OpenSSL reports through the new-session callback (TLS 1.2 at the end of
 * the handshake, TLS 1.3 whenever a NewSessionTicket is read), in a list
 * bounded to SL__TLS_SESSION_CACHE_MAX entries, most recently stored or
 * used first. OpenSSL's internal cache is off.
 */
#include "tls-int.h"

#include "reactor-int.h"
#include "tls-config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#if SL_HAVE_X86_CPUID
#include <cpuid.h>
#elif SL_HAVE_ARM64_HWCAP
#include <sys/auxv.h>
#endif

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

_Static_assert(SL__TLS_VERSION_1_2 == TLS1_2_VERSION, "wire version of TLS 1.2");
_Static_assert(SL__TLS_VERSION_1_3 == TLS1_3_VERSION, "wire version of TLS 1.3");

#define RECORD_MAX SSL3_RT_MAX_PLAIN_LENGTH /* plaintext of one record: 16 KiB */
/* Ciphertext queued for a full socket never needs more than a record and a
 * few handshake messages; a peer that makes us answer without reading
 * (KeyUpdate after KeyUpdate) is cut off at this bound. */
#define OUT_MAX (1024 * 1024)
/* Unused shared SSL_CTXs kept for the next client with the same options. */
#define SHARED_IDLE_MAX 4

/* One SSL_CTX, shared by every context made with the same options. */
struct shared_ctx {
    struct sl__queue node; /* shared_list, most recently used first; unlinked if uncached */
    SSL_CTX *ssl_ctx;
    X509_LOOKUP_METHOD *bundle_method; /* the system CA bundle, decoded on demand; or NULL */
    unsigned refs;                     /* struct sl__tls_ctx holding it; under shared_lock */
    bool has_client_cert;
    char *key; /* NULL: not cacheable (a named file could not be stat()ed) */
};

struct sess_entry {
    struct sl__queue node; /* ctx->sessions, most recently stored or used first */
    SSL_SESSION *sess;     /* one reference held by the cache */
    char key[];
};

struct sl__tls_ctx {
    struct shared_ctx *shared;
    SSL_CTX *ssl_ctx; /* shared->ssl_ctx */
    BIO_METHOD *bio_method;
    bool insecure;
    bool has_client_cert;
    bool session_cache;
    struct sl__queue sessions;
    unsigned nsessions;
    unsigned nconns; /* live sessions made from this context */
};

struct sl__tls {
    struct sl__tls_ctx *ctx;
    SSL *ssl;
    int fd;
    int error;     /* first fatal error; every later call returns it */
    int sys_errno; /* socket error seen by the BIO during the current call */
    bool bio_eof;  /* recv() returned 0 */
    bool handshake_done;
    bool shutdown_queued; /* close_notify written (maybe still queued in `out`) */
    bool cert_requested;  /* the server sent a CertificateRequest */
    bool result_pending;  /* a read returned bytes and kept SL_EOF or an error for later */
    unsigned hs_wants, read_wants, write_wants;
    char *out; /* ciphertext the socket did not take yet: out[out_off..out_len) */
    size_t out_off, out_len, out_cap;
    char *session_key;
    char alpn[32];
    /* The first certificate the verifier rejected (for the detail text). */
    int verify_depth;
    char verify_subject[160];
    char errdetail[320];
};

static const unsigned char alpn_protos[] = "\x08http/1.1";

/* ---- error text ------------------------------------------------------------ */

static void vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    if (len > 0)
        vsnprintf(buf, len, fmt, ap);
}

/* Write "<message>: <first queued OpenSSL error>" (or just the message when
 * the queue is empty) and clear the queue. */
static void openssl_detail(char *buf, size_t len, const char *fmt, ...)
{
    unsigned long e = ERR_peek_error();
    size_t used;
    va_list ap;

    if (len == 0)
        return;
    va_start(ap, fmt);
    vformat(buf, len, fmt, ap);
    va_end(ap);
    used = strlen(buf);
    if (e != 0 && used + 3 < len) {
        memcpy(buf + used, ": ", 3);
        ERR_error_string_n(e, buf + used + 2, len - used - 2);
    }
    ERR_clear_error();
}

/* Empty this thread's error queue before an SSL_* call, so that
 * SSL_get_error() judges that call alone. ERR_clear_error() walks all the
 * queue's slots even when it is empty, which is most of the time and was
 * about 5% of a keep-alive request; ERR_peek_error() is what SSL_get_error()
 * itself looks at, so "empty" means the same to both. */
static inline void err_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* ---- the socket BIO --------------------------------------------------------- */

/* One BIO type index for the process: indices are a small global resource
 * (BIO_get_new_index never gives them back), so contexts share it. */
static pthread_once_t bio_type_once = PTHREAD_ONCE_INIT;
static int bio_type = -1;

static void bio_type_init(void)
{
    int i = BIO_get_new_index();

    if (i > 0)
        bio_type = i | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR;
}

/* Queue `len` bytes after those already in `out`. */
static bool out_append(struct sl__tls *t, const char *p, size_t len)
{
    size_t queued = t->out_len - t->out_off;

    if (queued + len > OUT_MAX) {
        t->sys_errno = ENOBUFS;
        return false;
    }
    if (t->out_off > 0) {
        memmove(t->out, t->out + t->out_off, queued);
        t->out_off = 0;
        t->out_len = queued;
    }
    if (queued + len > t->out_cap) {
        size_t cap = SL__MAX(queued + len, (size_t)RECORD_MAX + 1024);
        char *n = realloc(t->out, cap);
        if (n == NULL) {
            t->sys_errno = ENOMEM;
            return false;
        }
        t->out = n;
        t->out_cap = cap;
    }
    memcpy(t->out + t->out_len, p, len);
    t->out_len += len;
    return true;
}

/* OpenSSL's writes: straight to the socket while nothing is queued, the
 * rest (or everything, behind queued bytes) into `out`. Never asks OpenSSL
 * to retry; fails only on a socket error or when the queue is full. */
static int bio_write(BIO *b, const char *buf, int len)
{
    struct sl__tls *t = BIO_get_data(b);
    size_t sent = 0;
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (t->out_off == t->out_len) {
        do
            r = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
        while (r < 0 && errno == EINTR);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            t->sys_errno = errno;
            return -1;
        }
        sent = r > 0 ? (size_t)r : 0;
    }
    if (sent < (size_t)len && !out_append(t, buf + sent, (size_t)len - sent))
        return -1;
    return len;
}

/* Send queued ciphertext: 0 once the queue is empty (its memory is freed),
 * SL_EAGAIN while the socket is full, or the socket's error (sticky). */
static int out_flush(struct sl__tls *t)
{
    while (t->out_off < t->out_len) {
        ssize_t r = send(t->fd, t->out + t->out_off, t->out_len - t->out_off, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return SL_EAGAIN;
        if (r < 0) {
            snprintf(t->errdetail, sizeof(t->errdetail), "%s", strerror(errno));
            t->error = sl_translate_errno(errno);
            return t->error;
        }
        t->out_off += (size_t)r;
    }
    free(t->out);
    t->out = NULL;
    t->out_off = t->out_len = t->out_cap = 0;
    return 0;
}

static unsigned out_wants(const struct sl__tls *t)
{
    return t->out_off < t->out_len ? SL_EV_WRITE : 0;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct sl__tls *t = BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    do
        r = recv(t->fd, buf, (size_t)len, 0);
    while (r < 0 && errno == EINTR);
    if (r > 0)
        return (int)r;
    if (r == 0) {
        /* OpenSSL asks BIO_eof() to tell a TCP close from an error. */
        t->bio_eof = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_read(b);
    else
        t->sys_errno = errno;
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct sl__tls *t = BIO_get_data(b);

    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the owner flushes `out`: OpenSSL must never wait */
    case BIO_CTRL_WPENDING:
        return (long)(t->out_len - t->out_off);
    case BIO_CTRL_EOF:
        return t->bio_eof;
    case BIO_C_GET_FD:
        if (ptr != NULL)
            *(int *)ptr = t->fd;
        return t->fd;
    default:
        return 0;
    }
}

static BIO_METHOD *bio_method_new(void)
{
    BIO_METHOD *m;

    if (pthread_once(&bio_type_once, bio_type_init) != 0 || bio_type < 0)
        return NULL;
    m = BIO_meth_new(bio_type, "sluice socket");
    if (m == NULL)
        return NULL;
    if (!BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ---- session cache ------------------------------------------------------------ */

static struct sess_entry *cache_find(struct sl__tls_ctx *ctx, const char *key)
{
    struct sl__queue *q;

    for (q = ctx->sessions.next; q != &ctx->sessions; q = q->next) {
        struct sess_entry *e = sl__queue_data(q, struct sess_entry, node);
        if (strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

static void cache_drop(struct sl__tls_ctx *ctx, struct sess_entry *e)
{
    sl__queue_remove(&e->node);
    SSL_SESSION_free(e->sess);
    free(e);
    ctx->nsessions--;
}

/* Whether OpenSSL would still offer `s`: not marked unusable by a fatal
 * error on a connection that used it, and within its lifetime. */
static bool session_usable(SSL_SESSION *s)
{
    long born = (long)SSL_SESSION_get_time(s);
    long life = (long)SSL_SESSION_get_timeout(s);

    return SSL_SESSION_is_resumable(s) && (long)time(NULL) < born + life;
}

/* OpenSSL reports a new session: a TLS 1.2 session at the end of the
 * handshake, or a TLS 1.3 ticket whenever one is read. The cache keeps a
 * copy, never an object a connection uses: OpenSSL marks a connection's
 * session unresumable when the connection ends without close_notify, even
 * when the end is only a TCP close (SL_ETRUNCATED), which TLS 1.1 and later
 * no longer require (RFC 5246 section 7.2.1, RFC 8446 section 6.1). Real
 * fatal errors drop the entry explicitly (op_failure). Returns 0: OpenSSL
 * keeps its own reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct sl__tls *t = SSL_get_app_data(ssl);
    struct sl__tls_ctx *ctx;
    struct sess_entry *e;
    SSL_SESSION *copy;
    size_t klen;

    if (t == NULL || t->session_key == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    copy = SSL_SESSION_dup(sess);
    if (copy == NULL)
        return 0; /* no resumption next time: not worth failing the connection */
    ctx = t->ctx;
    e = cache_find(ctx, t->session_key);
    if (e != NULL) {
        SSL_SESSION_free(e->sess);
        e->sess = copy;
        sl__queue_remove(&e->node);
        sl__queue_insert_head(&ctx->sessions, &e->node);
        return 0;
    }
    klen = strlen(t->session_key);
    e = malloc(sizeof(*e) + klen + 1);
    if (e == NULL) {
        SSL_SESSION_free(copy);
        return 0;
    }
    memcpy(e->key, t->session_key, klen + 1);
    e->sess = copy;
    sl__queue_insert_head(&ctx->sessions, &e->node);
    if (++ctx->nsessions > SL__TLS_SESSION_CACHE_MAX)
        cache_drop(ctx, sl__queue_data(ctx->sessions.prev, struct sess_entry, node));
    return 0;
}

/* ---- context ---------------------------------------------------------------- */

static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl;
    struct sl__tls *t;
    X509 *cert;

    if (ok)
        return ok;
    ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    t = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    if (t != NULL && t->verify_subject[0] == '\0') {
        t->verify_depth = X509_STORE_CTX_get_error_depth(store);
        cert = X509_STORE_CTX_get_current_cert(store);
        if (cert != NULL)
            X509_NAME_oneline(X509_get_subject_name(cert), t->verify_subject,
                              (int)sizeof(t->verify_subject));
    }
    return ok;
}

/* Called when the server asks for a client certificate, with or without one
 * configured: remembering it lets a later refusal be named precisely. */
static int cert_cb(SSL *ssl, void *arg)
{
    struct sl__tls *t = SSL_get_app_data(ssl);

    (void)arg;
    if (t != NULL)
        t->cert_requested = true;
    return 1;
}

/* An encrypted private key must never make OpenSSL prompt on the terminal:
 * refuse, and note that a passphrase was wanted (`u` points to a bool). */
static int no_password_cb(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (u != NULL)
        *(bool *)u = true;
    return -1;
}

void sl__tls_ctx_opts_init(struct sl__tls_ctx_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->min_version = SL__TLS_VERSION_1_2;
    o->session_cache = true;
}

/* ---- cipher order --------------------------------------------------------------- */

/*
 * TLS 1.2: ECDHE with an AEAD first (forward secrecy, no CBC), ECDSA before
 * RSA within each AEAD (the server has one kind of key, so that order
 * decides nothing); then, only for servers that offer nothing better, the
 * tail Chrome and Firefox still send: ECDHE with CBC, then RSA key exchange.
 * Without that tail a TLS 1.2 server that only knows CBC suites, which
 * curl reaches, would fail (no DHE, which browsers dropped). TLS 1.3 suites
 * are all AEAD with (EC)DHE already; only their order is ours.
 */
#define TLS12_AES_GCM                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define TLS12_CHACHA "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS12_COMPAT                                                                               \
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:"     \
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA"
#define TLS13_AES_GCM "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
#define TLS13_CHACHA "TLS_CHACHA20_POLY1305_SHA256"

/* The default lists for a CPU with (`aes_hw`) or without AES instructions. */
static void default_ciphers_for(bool aes_hw, const char **ciphers, const char **ciphersuites)
{
    *ciphers = aes_hw ? TLS12_AES_GCM ":" TLS12_CHACHA ":" TLS12_COMPAT
                      : TLS12_CHACHA ":" TLS12_AES_GCM ":" TLS12_COMPAT;
    *ciphersuites = aes_hw ? TLS13_AES_GCM ":" TLS13_CHACHA : TLS13_CHACHA ":" TLS13_AES_GCM;
}

/* AES-GCM is fast only with AES instructions and a carry-less multiply for
 * GHASH; without them OpenSSL's constant-time software AES is several times
 * slower than ChaCha20-Poly1305 (hence Go's and BoringSSL's rule). OpenSSL
 * knows (OPENSSL_ia32cap_P) but keeps it out of its API, so ask the CPU. */
static bool cpu_detect_aes_gcm(void)
{
#if SL_HAVE_X86_CPUID
    unsigned a, b, c, d;

    return __get_cpuid(1, &a, &b, &c, &d) == 1 && (c & bit_AES) != 0 && (c & bit_PCLMUL) != 0;
#elif SL_HAVE_ARM64_HWCAP
    unsigned long hw = getauxval(AT_HWCAP);

    return (hw & HWCAP_AES) != 0 && (hw & HWCAP_PMULL) != 0;
#else
    return false;
#endif
}

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static bool cpu_aes_gcm;

static void cpu_init(void)
{
    cpu_aes_gcm = cpu_detect_aes_gcm();
}

static bool cpu_has_aes_gcm(void)
{
    (void)pthread_once(&cpu_once, cpu_init);
    return cpu_aes_gcm;
}

void sl__tls_default_ciphers(const char **ciphers, const char **ciphersuites)
{
    default_ciphers_for(cpu_has_aes_gcm(), ciphers, ciphersuites);
}

/* A list in a detail: whole, or its start and "...". */
#define LIST_SHOWN 96

/* Set the lists that are not NULL on `ctx`. Returns 0 or SL_ETLS (detail in
 * `errbuf`). OpenSSL skips the names it does not know and fails only when
 * nothing is left, as curl relies on; an empty list is refused here, since
 * it can only be a mistake (OpenSSL would take "" for TLS 1.3 and offer no
 * TLS 1.3 at all). */
static int set_ciphers(SSL_CTX *ctx, const char *ciphers, const char *ciphersuites, char *errbuf,
                       size_t errlen)
{
    if (ciphers != NULL && (ciphers[0] == '\0' || SSL_CTX_set_cipher_list(ctx, ciphers) != 1)) {
        openssl_detail(errbuf, errlen, "TLS 1.2 cipher list \"%.*s%s\": no cipher OpenSSL can use",
                       LIST_SHOWN, ciphers, strlen(ciphers) > LIST_SHOWN ? "..." : "");
        return SL_ETLS;
    }
    if (ciphersuites != NULL &&
        (ciphersuites[0] == '\0' || SSL_CTX_set_ciphersuites(ctx, ciphersuites) != 1)) {
        openssl_detail(errbuf, errlen, "TLS 1.3 cipher suites \"%.*s%s\": no suite OpenSSL can use",
                       LIST_SHOWN, ciphersuites, strlen(ciphersuites) > LIST_SHOWN ? "..." : "");
        return SL_ETLS;
    }
    return 0;
}

int sl__tls_ciphers_check(const char *ciphers, const char *ciphersuites, char *errbuf,
                          size_t errlen)
{
    SSL_CTX *ctx;
    int rc;

    if (errlen > 0)
        errbuf[0] = '\0';
    if (ciphers == NULL && ciphersuites == NULL)
        return 0;
    /* Only a context parses cipher strings; this one lives for the check
     * (no trust store, no certificate: the cheap part of a real one). */
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        openssl_detail(errbuf, errlen, "creating a TLS context to check the cipher lists");
        return SL_ENOMEM;
    }
    rc = set_ciphers(ctx, ciphers, ciphersuites, errbuf, errlen);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/*
 * The system trust store, decoded on demand.
 *
 * SSL_CTX_set_default_verify_paths() decodes the whole CA bundle (Debian: 144
 * certificates in /etc/ssl/certs/ca-certificates.crt) into every new context.
 * In OpenSSL 3.0 d2i_X509() costs ~0.3 ms a certificate (its public-key
 * decoders): 45 ms before the first handshake on the 2-core test VM, for the
 * one or two roots that handshake needs. Reading the PEM text and each
 * certificate's subject name costs ~3 ms. So the bundle is read, on the first
 * lookup, into an index of (subject, DER bytes), and a certificate is decoded
 * and added to the store only when a chain asks for its subject.
 *
 * Same answers as the default paths: the lookups are, in order, this bundle,
 * the hashed directory, the store URI, from the same places (SSL_CERT_FILE,
 * SSL_CERT_DIR, SSL_CERT_URI, or OpenSSL's defaults). OpenSSL consults the
 * lookups only for a subject that has no certificate in the store yet and
 * stops at the first that finds one; names are compared with X509_NAME_cmp(),
 * as the store does, and every bundle certificate with that subject is added.
 * A bundle holding anything but plain CERTIFICATE blocks (CRLs, TRUSTED
 * CERTIFICATE with trust settings), or a certificate whose subject cannot be
 * found, is decoded whole, as before. The index belongs to the context's
 * store; lookups into it take `bundle_lock` (a shared SSL_CTX may serve
 * clients on several threads).
 */
struct bundle_entry {
    X509_NAME *subject;
    unsigned char *der;
    long len; /* 0 once decoded into the store */
};

struct bundle_index {
    struct bundle_entry *v;
    size_t n, cap;
};

/* One DER header at *p (at most `end`): returns the content length and moves *p to the
 * content, or -1. Only the definite lengths that DER allows. */
static long der_header(const unsigned char **p, const unsigned char *end, int *tag)
{
    const unsigned char *q = *p;
    long len = 0;

    if (end - q < 2)
        return -1;
    *tag = *q++;
    if (*q < 0x80) {
        len = *q++;
    } else {
        int nb = *q++ & 0x7f;
        if (nb == 0 || nb > 4 || end - q < nb)
            return -1;
        while (nb-- > 0)
            len = (len << 8) | *q++;
    }
    if (len > end - q)
        return -1;
    *p = q;
    return len;
}

/* The subject of the certificate `der`, or NULL: Certificate { tbsCertificate { [0] version
 * OPTIONAL, serialNumber, signature, issuer, validity, subject, ... } }. */
static X509_NAME *der_subject(const unsigned char *der, long der_len)
{
    const unsigned char *p = der, *end = der + der_len;
    long len;
    int tag;

    if (der_header(&p, end, &tag) < 0 || tag != 0x30) /* Certificate */
        return NULL;
    if ((len = der_header(&p, end, &tag)) < 0 || tag != 0x30) /* tbsCertificate */
        return NULL;
    end = p + len;
    /* Skip [0] version (absent in v1), serialNumber, signature, issuer, validity. */
    for (int field = 0; field < 5; field++) {
        if ((len = der_header(&p, end, &tag)) < 0)
            return NULL;
        if (field == 0 && tag != 0xa0)
            field++; /* v1: no version field */
        p += len;
    }
    const unsigned char *subject = p;
    if ((len = der_header(&p, end, &tag)) < 0 || tag != 0x30)
        return NULL;
    p += len;
    return d2i_X509_NAME(NULL, &subject, p - subject);
}

static void bundle_index_free(struct bundle_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < ix->n; i++) {
        X509_NAME_free(ix->v[i].subject);
        OPENSSL_free(ix->v[i].der);
    }
    free(ix->v);
    free(ix);
}

static char bundle_whole; /* its address marks a lookup that loaded the whole bundle */

static void bundle_lookup_free(X509_LOOKUP *lu)
{
    struct bundle_index *ix = X509_LOOKUP_get_method_data(lu);

    if (ix != (struct bundle_index *)&bundle_whole)
        bundle_index_free(ix);
    X509_LOOKUP_set_method_data(lu, NULL);
}

/* Decode entry `e` into the store. */
static void bundle_add(X509_STORE *store, struct bundle_entry *e)
{
    const unsigned char *p = e->der;
    X509 *x = d2i_X509(NULL, &p, e->len);

    if (x != NULL)
        X509_STORE_add_cert(store, x); /* a duplicate is no error */
    X509_free(x);
    OPENSSL_free(e->der);
    e->der = NULL;
    e->len = 0;
}

/* Read the bundle into an index; certificates without a usable subject go into the store at
 * once. Returns NULL (and leaves the whole file to X509_load_cert_crl_file()) on anything
 * but plain certificates. */
static struct bundle_index *bundle_read(X509_STORE *store, const char *file)
{
    struct bundle_index *ix = calloc(1, sizeof(*ix));
    BIO *bio = BIO_new_file(file, "r");
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len;

    if (ix == NULL || bio == NULL)
        goto fail;
    while (PEM_read_bio(bio, &name, &header, &der, &len) == 1) {
        bool plain = strcmp(name, PEM_STRING_X509) == 0 && header[0] == '\0';

        OPENSSL_free(name);
        OPENSSL_free(header);
        name = header = NULL;
        if (!plain)
            goto fail;
        if (ix->n == ix->cap) {
            size_t cap = ix->cap ? ix->cap * 2 : 64;
            struct bundle_entry *v = realloc(ix->v, cap * sizeof(*v));
            if (v == NULL)
                goto fail;
            ix->v = v;
            ix->cap = cap;
        }
        struct bundle_entry *e = &ix->v[ix->n++];
        *e = (struct bundle_entry){.subject = der_subject(der, len), .der = der, .len = len};
        der = NULL;
        if (e->subject == NULL)
            bundle_add(store, e);
    }
    /* The normal end of the file is PEM_R_NO_START_LINE; anything else is a broken block. */
    if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE)
        goto fail;
    BIO_free(bio);
    return ix;

fail:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(bio);
    bundle_index_free(ix);
    return NULL;
}

/* The index is per store, and a store may be shared by clients on several
 * threads (the SSL_CTX cache): reading and decoding it is serialised. */
static pthread_mutex_t bundle_lock = PTHREAD_MUTEX_INITIALIZER;

static int bundle_get_by_subject(X509_LOOKUP *lu, X509_LOOKUP_TYPE type, const X509_NAME *name,
                                 X509_OBJECT *ret)
{
    X509_STORE *store = X509_LOOKUP_get_store(lu);
    struct bundle_index *ix = X509_LOOKUP_get_method_data(lu);
    X509_OBJECT *obj;
    X509 *x = NULL;

    /* Whatever fails in here is no error of the verification that asked: leave the error
     * queue as it was. */
    ERR_set_mark();
    pthread_mutex_lock(&bundle_lock);
    ix = X509_LOOKUP_get_method_data(lu); /* another thread may have read it meanwhile */
    if (ix == NULL) {
        const char *file = secure_getenv(X509_get_default_cert_file_env()); /* as OpenSSL */

        if (file == NULL)
            file = X509_get_default_cert_file();
        ix = bundle_read(store, file);
        if (ix == NULL) {
            /* What X509_STORE_set_default_paths() does; a missing file is no error. */
            ix = (struct bundle_index *)&bundle_whole;
            X509_load_cert_crl_file(lu, file, X509_FILETYPE_PEM);
        }
        X509_LOOKUP_set_method_data(lu, ix);
    }
    if (type == X509_LU_X509 && ix != (struct bundle_index *)&bundle_whole) {
        for (size_t i = 0; i < ix->n; i++)
            if (ix->v[i].len > 0 && X509_NAME_cmp(ix->v[i].subject, name) == 0)
                bundle_add(store, &ix->v[i]);
    }
    pthread_mutex_unlock(&bundle_lock);
    ERR_pop_to_mark();
    if (type != X509_LU_X509 || !X509_STORE_lock(store))
        return 0;
    obj = X509_OBJECT_retrieve_by_subject(X509_STORE_get0_objects(store), X509_LU_X509, name);
    if (obj != NULL)
        x = X509_OBJECT_get0_X509(obj);
    X509_STORE_unlock(store);
    /* Like OpenSSL's own lookups, `ret` lends the store's certificate and the caller takes
     * a reference: set1 takes one, so give it back (the store keeps its own). */
    if (x == NULL || X509_OBJECT_set1_X509(ret, x) != 1)
        return 0;
    X509_free(x);
    return 1;
}

static int load_system_trust(struct shared_ctx *sh)
{
    X509_STORE *store = SSL_CTX_get_cert_store(sh->ssl_ctx);
    X509_LOOKUP *lu;

    sh->bundle_method = X509_LOOKUP_meth_new("sluice: system CA bundle, decoded on demand");
    if (sh->bundle_method == NULL ||
        X509_LOOKUP_meth_set_get_by_subject(sh->bundle_method, bundle_get_by_subject) != 1 ||
        X509_LOOKUP_meth_set_free(sh->bundle_method, bundle_lookup_free) != 1)
        return -1;
    if (X509_STORE_add_lookup(store, sh->bundle_method) == NULL)
        return -1;
    /* The directory and the store URI, as X509_STORE_set_default_paths() adds them. */
    lu = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (lu == NULL)
        return -1;
    X509_LOOKUP_add_dir(lu, NULL, X509_FILETYPE_DEFAULT);
    lu = X509_STORE_add_lookup(store, X509_LOOKUP_store());
    if (lu == NULL)
        return -1;
    X509_LOOKUP_add_store(lu, NULL);
    ERR_clear_error(); /* a missing directory or URI is no error, as with the default paths */
    return 0;
}

static int load_trust(struct shared_ctx *sh, const struct sl__tls_ctx_opts *o, char *errbuf,
                      size_t errlen)
{
    struct stat st;

    if (o->cafile == NULL && o->capath == NULL) {
        if (load_system_trust(sh) != 0) {
            openssl_detail(errbuf, errlen, "loading the system trust store");
            return SL_ETLS;
        }
        return 0;
    }
    /* OpenSSL only looks into a CA directory when verifying; check it now so
     * that a typo fails here instead of as "unknown CA" later. */
    if (o->capath != NULL) {
        if (stat(o->capath, &st) != 0) {
            snprintf(errbuf, errlen, "CA directory %s: %s", o->capath, strerror(errno));
            return SL_ETLS;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(errbuf, errlen, "CA directory %s: %s", o->capath, strerror(ENOTDIR));
            return SL_ETLS;
        }
    }
    if (SSL_CTX_load_verify_locations(sh->ssl_ctx, o->cafile, o->capath) != 1) {
        openssl_detail(errbuf, errlen, "CA file %s", o->cafile != NULL ? o->cafile : "(none)");
        return SL_ETLS;
    }
    return 0;
}

static int load_client_cert(struct shared_ctx *sh, const struct sl__tls_ctx_opts *o, char *errbuf,
                            size_t errlen)
{
    const char *key = o->key != NULL ? o->key : o->cert;
    bool wanted_passphrase = false;

    if (o->cert == NULL) {
        snprintf(errbuf, errlen, "client key %s given without a certificate", o->key);
        return SL_ETLS_CLIENT_CERT;
    }
    SSL_CTX_set_default_passwd_cb(sh->ssl_ctx, no_password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(sh->ssl_ctx, &wanted_passphrase);
    if (SSL_CTX_use_certificate_chain_file(sh->ssl_ctx, o->cert) != 1) {
        openssl_detail(errbuf, errlen, "client certificate %s", o->cert);
        return SL_ETLS_CLIENT_CERT;
    }
    /* OpenSSL 3 already refuses a key that does not match the certificate
     * here ("key values mismatch"); the explicit check covers key types
     * that land in another certificate slot. */
    if (SSL_CTX_use_PrivateKey_file(sh->ssl_ctx, key, SSL_FILETYPE_PEM) != 1) {
        openssl_detail(errbuf, errlen,
                       wanted_passphrase ? "client key %s is encrypted (passphrases are not "
                                           "supported)"
                                         : "client key %s",
                       key);
        SSL_CTX_set_default_passwd_cb_userdata(sh->ssl_ctx, NULL);
        return SL_ETLS_CLIENT_CERT;
    }
    SSL_CTX_set_default_passwd_cb_userdata(sh->ssl_ctx, NULL); /* `wanted_passphrase` dies here */
    if (SSL_CTX_check_private_key(sh->ssl_ctx) != 1) {
        openssl_detail(errbuf, errlen, "client key %s does not match certificate %s", key, o->cert);
        return SL_ETLS_CLIENT_CERT;
    }
    sh->has_client_cert = true;
    return 0;
}

/* ---- shared SSL_CTX ------------------------------------------------------------ */

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl__queue shared_list = {&shared_list, &shared_list}; /* under shared_lock */
static unsigned shared_idle;                                        /* entries with refs == 0 */

struct keybuf {
    char *p;
    size_t len, cap;
    bool failed; /* out of memory, or a named file cannot be stat()ed: do not cache */
};

static void key_printf(struct keybuf *k, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (k->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(k->p + k->len, k->cap - k->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            k->failed = true;
            return;
        }
        if ((size_t)n < k->cap - k->len) {
            k->len += (size_t)n;
            return;
        }
        size_t cap = SL__MAX(k->cap * 2, k->len + (size_t)n + 1);
        char *p = realloc(k->p, cap);
        if (p == NULL) {
            k->failed = true;
            return;
        }
        k->p = p;
        k->cap = cap;
    }
}

/* `path` and the identity of what it names now: a file replaced or edited
 * (a renewed client certificate, a CA bundle update) makes another key. A
 * `required` path that cannot be stat()ed makes the options uncacheable,
 * so that loading it fails with its own error. */
static void key_file(struct keybuf *k, const char *tag, const char *path, bool required)
{
    struct stat st;

    if (path == NULL) {
        key_printf(k, "%s=-;", tag);
        return;
    }
    if (stat(path, &st) != 0) {
        if (required)
            k->failed = true;
        key_printf(k, "%s=%zu:%s@missing;", tag, strlen(path), path);
        return;
    }
    key_printf(k, "%s=%zu:%s@%llu:%llu:%lld:%lld.%09ld;", tag, strlen(path), path,
               (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (long long)st.st_size,
               (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* The cache key of `o` (with `ciphers` and `ciphersuites`, the lists in
 * effect), or NULL if it must not be cached. Paths and lists carry their
 * length, so no choice of names can make two option sets look alike. */
static char *shared_key(const struct sl__tls_ctx_opts *o, int minv, const char *ciphers,
                        const char *ciphersuites)
{
    struct keybuf k = {0};

    key_printf(&k, "v=%d;insecure=%d;sessions=%d;", minv, (int)o->insecure, (int)o->session_cache);
    key_printf(&k, "ciphers=%zu:%s;suites=%zu:%s;", strlen(ciphers), ciphers, strlen(ciphersuites),
               ciphersuites);
    if (!o->insecure && o->cafile == NULL && o->capath == NULL) {
        /* The system store: where SSL_CTX_set_default_verify_paths() looks,
         * the environment included. */
        const char *f = getenv(X509_get_default_cert_file_env());
        const char *d = getenv(X509_get_default_cert_dir_env());
        key_file(&k, "sysfile", f != NULL ? f : X509_get_default_cert_file(), false);
        key_file(&k, "sysdir", d != NULL ? d : X509_get_default_cert_dir(), false);
    } else if (!o->insecure) {
        key_file(&k, "cafile", o->cafile, true);
        key_file(&k, "capath", o->capath, true);
    }
    key_file(&k, "cert", o->cert, true);
    key_file(&k, "key", o->key, true);
    if (k.failed) {
        free(k.p);
        return NULL;
    }
    return k.p;
}

static void shared_free(struct shared_ctx *sh)
{
    if (sh == NULL)
        return;
    SSL_CTX_free(sh->ssl_ctx);
    X509_LOOKUP_meth_free(sh->bundle_method); /* after the store, whose lookup uses it */
    free(sh->key);
    free(sh);
}

/* A new SSL_CTX for `o` with the lists in effect (refs 1, not in the cache). */
static int shared_build(const struct sl__tls_ctx_opts *o, int minv, const char *ciphers,
                        const char *ciphersuites, struct shared_ctx **out, char *errbuf,
                        size_t errlen)
{
    struct shared_ctx *sh;
    int rc = SL_ENOMEM;

    *out = NULL;
    sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return SL_ENOMEM;
    sl__queue_init(&sh->node);
    sh->refs = 1;
    ERR_clear_error();
    sh->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (sh->ssl_ctx == NULL) {
        openssl_detail(errbuf, errlen, "creating the TLS context");
        goto fail;
    }
    if (SSL_CTX_set_min_proto_version(sh->ssl_ctx, minv) != 1) {
        openssl_detail(errbuf, errlen, "setting the minimum TLS version");
        rc = SL_ETLS;
        goto fail;
    }
    rc = set_ciphers(sh->ssl_ctx, ciphers, ciphersuites, errbuf, errlen);
    if (rc < 0)
        goto fail;
    rc = SL_ENOMEM;
    SSL_CTX_set_options(sh->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* No RELEASE_BUFFERS (see the top of this file). These two only matter
     * if a write could block inside OpenSSL, which our BIO never lets
     * happen; they are kept as the documented safe settings. */
    SSL_CTX_set_mode(sh->ssl_ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read-ahead: one recv() fills the record buffer instead of two
     * (header, then body) per record. What it reads beyond the current
     * record is visible to SSL_has_pending(), so sl__tls_has_pending()
     * still tells the owner to come back. The buffer keeps OpenSSL's
     * default size, one record: before each record OpenSSL moves whatever
     * follows it to the front of the buffer (ssl3_read_n aligns the
     * payload), so a buffer of k records copies k(k-1)/2 of them for every
     * k. Measured on a 1 GiB download: 2 records no better, 16 worse. */
    SSL_CTX_set_read_ahead(sh->ssl_ctx, 1);
    /* Unlike nearly every OpenSSL call, this one returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(sh->ssl_ctx, alpn_protos, sizeof(alpn_protos) - 1) != 0) {
        openssl_detail(errbuf, errlen, "setting ALPN");
        goto fail;
    }
    SSL_CTX_set_cert_cb(sh->ssl_ctx, cert_cb, NULL);

    if (o->insecure) {
        /* Like curl -k: CA options are not even loaded, so a bad one is no error. */
        SSL_CTX_set_verify(sh->ssl_ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(sh->ssl_ctx, SSL_VERIFY_PEER, verify_cb);
        rc = load_trust(sh, o, errbuf, errlen);
        if (rc < 0)
            goto fail;
    }
    if (o->cert != NULL || o->key != NULL) {
        rc = load_client_cert(sh, o, errbuf, errlen);
        if (rc < 0)
            goto fail;
    }
    if (o->session_cache) {
        SSL_CTX_set_session_cache_mode(sh->ssl_ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(sh->ssl_ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(sh->ssl_ctx, SSL_SESS_CACHE_OFF);
    }
    ERR_clear_error();
    *out = sh;
    return 0;

fail:
    ERR_clear_error();
    shared_free(sh);
    return rc;
}

static struct shared_ctx *shared_find(const char *key)
{
    struct sl__queue *q;

    for (q = shared_list.next; q != &shared_list; q = q->next) {
        struct shared_ctx *sh = sl__queue_data(q, struct shared_ctx, node);
        if (strcmp(sh->key, key) == 0)
            return sh;
    }
    return NULL;
}

/* Take a reference on `sh` (in the cache, under shared_lock) and make it
 * the most recently used. */
static void shared_ref_locked(struct shared_ctx *sh)
{
    if (sh->refs++ == 0)
        shared_idle--;
    sl__queue_remove(&sh->node);
    sl__queue_insert_head(&shared_list, &sh->node);
}

/* The SSL_CTX for `o`: from the cache, or built (outside the lock, since
 * loading a trust store takes milliseconds) and then cached. */
static int shared_get(const struct sl__tls_ctx_opts *o, int minv, struct shared_ctx **out,
                      char *errbuf, size_t errlen)
{
    struct shared_ctx *sh, *other;
    const char *ciphers, *ciphersuites;
    char *key;
    int rc;

    sl__tls_default_ciphers(&ciphers, &ciphersuites);
    if (o->ciphers != NULL)
        ciphers = o->ciphers;
    if (o->ciphersuites != NULL)
        ciphersuites = o->ciphersuites;
    key = shared_key(o, minv, ciphers, ciphersuites);

    *out = NULL;
    if (key != NULL) {
        pthread_mutex_lock(&shared_lock);
        sh = shared_find(key);
        if (sh != NULL)
            shared_ref_locked(sh);
        pthread_mutex_unlock(&shared_lock);
        if (sh != NULL) {
            free(key);
            *out = sh;
            return 0;
        }
    }
    rc = shared_build(o, minv, ciphers, ciphersuites, &sh, errbuf, errlen);
    if (rc < 0) {
        free(key);
        return rc;
    }
    if (key == NULL) {
        *out = sh; /* uncacheable: private to this context */
        return 0;
    }
    sh->key = key;
    pthread_mutex_lock(&shared_lock);
    other = shared_find(key);
    if (other != NULL) {
        /* Another thread built the same one meanwhile: use theirs. */
        shared_ref_locked(other);
    } else {
        sl__queue_insert_head(&shared_list, &sh->node);
    }
    pthread_mutex_unlock(&shared_lock);
    if (other != NULL) {
        shared_free(sh);
        sh = other;
    }
    *out = sh;
    return 0;
}

/* Drop a reference. A cached SSL_CTX stays, unused, for the next client
 * with the same options; beyond SHARED_IDLE_MAX unused ones the least
 * recently used goes. */
static void shared_put(struct shared_ctx *sh)
{
    struct shared_ctx *victim = NULL;

    if (sh == NULL)
        return;
    if (sh->key == NULL) {
        shared_free(sh);
        return;
    }
    pthread_mutex_lock(&shared_lock);
    assert(sh->refs > 0);
    if (--sh->refs == 0) {
        sl__queue_remove(&sh->node); /* used until now: the last to go */
        sl__queue_insert_head(&shared_list, &sh->node);
    }
    if (sh->refs == 0 && ++shared_idle > SHARED_IDLE_MAX) {
        struct sl__queue *q;
        for (q = shared_list.prev; q != &shared_list; q = q->prev) {
            struct shared_ctx *e = sl__queue_data(q, struct shared_ctx, node);
            if (e->refs == 0) {
                victim = e;
                break;
            }
        }
        sl__queue_remove(&victim->node);
        shared_idle--;
    }
    pthread_mutex_unlock(&shared_lock);
    shared_free(victim);
}

void sl__tls_ctx_cache_flush(void)
{
    struct sl__queue gone, *q;

    sl__queue_init(&gone);
    pthread_mutex_lock(&shared_lock);
    for (q = shared_list.next; q != &shared_list;) {
        struct shared_ctx *e = sl__queue_data(q, struct shared_ctx, node);
        q = q->next;
        if (e->refs == 0) {
            sl__queue_remove(&e->node);
            sl__queue_insert_head(&gone, &e->node);
            shared_idle--;
        }
    }
    pthread_mutex_unlock(&shared_lock);
    while (!sl__queue_empty(&gone)) {
        struct shared_ctx *e = sl__queue_data(gone.next, struct shared_ctx, node);
        sl__queue_remove(&e->node);
        shared_free(e);
    }
}

/* ---- context ------------------------------------------------------------------- */

int sl__tls_ctx_new(const struct sl__tls_ctx_opts *o, struct sl__tls_ctx **out, char *errbuf,
                    size_t errlen)
{
    struct sl__tls_ctx_opts defaults;
    struct sl__tls_ctx *ctx;
    int minv, rc = SL_ENOMEM;

    *out = NULL;
    if (errlen > 0)
        errbuf[0] = '\0';
    if (o == NULL) {
        sl__tls_ctx_opts_init(&defaults);
        o = &defaults;
    }
    minv = o->min_version == 0 ? TLS1_2_VERSION : o->min_version;
    if (minv != TLS1_2_VERSION && minv != TLS1_3_VERSION) {
        snprintf(errbuf, errlen, "minimum TLS version 0x%04x: only 1.2 and 1.3 are allowed",
                 (unsigned)minv);
        return SL_EINVAL;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return SL_ENOMEM;
    sl__queue_init(&ctx->sessions);
    ctx->insecure = o->insecure;
    ctx->session_cache = o->session_cache;
    ctx->bio_method = bio_method_new();
    if (ctx->bio_method == NULL) {
        snprintf(errbuf, errlen, "creating the TLS context: no BIO method");
        goto fail;
    }
    rc = shared_get(o, minv, &ctx->shared, errbuf, errlen);
    if (rc < 0)
        goto fail;
    ctx->ssl_ctx = ctx->shared->ssl_ctx;
    ctx->has_client_cert = ctx->shared->has_client_cert;
    *out = ctx;
    return 0;

fail:
    sl__tls_ctx_free(ctx);
    return rc;
}

void sl__tls_ctx_free(struct sl__tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    /* Sessions call back into the context (new_session_cb). */
    assert(ctx->nconns == 0);
    while (!sl__queue_empty(&ctx->sessions))
        cache_drop(ctx, sl__queue_data(ctx->sessions.next, struct sess_entry, node));
    shared_put(ctx->shared);
    BIO_meth_free(ctx->bio_method);
    free(ctx);
}

/* ---- sessions ---------------------------------------------------------------- */

int sl__tls_new(struct sl__tls_ctx *ctx, int fd, const char *host, const char *session_key,
                struct sl__tls **out)
{
    unsigned char addr[sizeof(struct in6_addr)];
    char name[256];
    struct sl__tls *t;
    size_t len;
    bool is_ip;
    BIO *bio;

    *out = NULL;
    if (fd < 0 || host == NULL)
        return SL_EINVAL;
    len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++; /* "[::1]" as found in URLs */
        len -= 2;
    } else if (len > 1 && host[len - 1] == '.') {
        len--; /* "example.com.": SNI and certificates carry no final dot */
    }
    if (len == 0 || len >= sizeof(name))
        return SL_EINVAL;
    memcpy(name, host, len);
    name[len] = '\0';
    is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;

    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return SL_ENOMEM;
    t->ctx = ctx;
    t->fd = fd;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl_ctx);
    if (t->ssl == NULL)
        goto fail;
    SSL_set_app_data(t->ssl, t);
    bio = BIO_new(ctx->bio_method);
    if (bio == NULL)
        goto fail;
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio); /* the SSL owns the BIO from now on */
    SSL_set_connect_state(t->ssl);

    if (!is_ip && SSL_set_tlsext_host_name(t->ssl, name) != 1)
        goto fail;
    if (!ctx->insecure) {
        if (is_ip) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) != 1)
                goto fail;
        } else {
            SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(t->ssl, name) != 1)
                goto fail;
        }
    }
    if (session_key != NULL && ctx->session_cache) {
        struct sess_entry *e;

        t->session_key = strdup(session_key);
        if (t->session_key == NULL)
            goto fail;
        e = cache_find(ctx, session_key);
        if (e != NULL && !session_usable(e->sess)) {
            cache_drop(ctx, e);
        } else if (e != NULL) {
            /* The connection gets a copy too (see new_session_cb); a failure
             * only costs the resumption. */
            SSL_SESSION *copy = SSL_SESSION_dup(e->sess);
            if (copy != NULL) {
                (void)SSL_set_session(t->ssl, copy);
                SSL_SESSION_free(copy);
            }
            sl__queue_remove(&e->node);
            sl__queue_insert_head(&ctx->sessions, &e->node);
        }
    }
    ERR_clear_error();
    ctx->nconns++;
    *out = t;
    return 0;

fail:
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t->session_key);
    free(t);
    return SL_ENOMEM;
}

void sl__tls_free(struct sl__tls *t)
{
    if (t == NULL)
        return;
    /* SSL_free() marks the session of a connection that did not send
     * close_notify unresumable; the cache holds copies (new_session_cb). */
    SSL_free(t->ssl);
    ERR_clear_error();
    t->ctx->nconns--;
    free(t->out);
    free(t->session_key);
    free(t);
}

/* ---- translating failures ------------------------------------------------- */

static int map_verify_result(long v)
{
    switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return SL_ETLS_UNKNOWN_CA;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return SL_ETLS_HOSTNAME;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return SL_ETLS_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SL_ETLS_NOT_YET_VALID;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return SL_ETLS_SELF_SIGNED;
    default:
        return SL_ETLS_HANDSHAKE;
    }
}

static bool reason_is_version(int reason)
{
    switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
        return true;
    default:
        return false;
    }
}

/* An alert from the server that judges our certificate. Only meaningful
 * after it asked for one: then "bad certificate" cannot be about its own. */
static bool reason_is_client_cert(const struct sl__tls *t, int reason)
{
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
        return true;
    if (!t->cert_requested)
        return false;
    switch (reason) {
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        /* TLS 1.2 servers send this when a required certificate is missing
         * (OpenSSL maps its certificate_required to it below 1.3). */
        return !t->ctx->has_client_cert;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return true;
    default:
        return false;
    }
}

/* SSL_ERROR_SSL: name the failure from the first queued error. */
static int ssl_failure(struct sl__tls *t)
{
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    long v;

    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        (v = SSL_get_verify_result(t->ssl)) != X509_V_OK) {
        snprintf(t->errdetail, sizeof(t->errdetail), "certificate verify failed: %s (depth %d, %s)",
                 X509_verify_cert_error_string(v), t->verify_depth,
                 t->verify_subject[0] != '\0' ? t->verify_subject : "?");
        return map_verify_result(v);
    }
    if (reason == SSL_R_WRONG_VERSION_NUMBER && !t->handshake_done) {
        /* OpenSSL says this when the first bytes are not a TLS record at all
         * (a genuinely older server gets as far as its ServerHello and fails
         * with a protocol_version alert or SSL_R_UNSUPPORTED_PROTOCOL): the
         * port speaks something else, typically plain HTTP. */
        openssl_detail(t->errdetail, sizeof(t->errdetail),
                       "TLS (the server does not seem to speak TLS on this port)");
        return SL_ETLS_HANDSHAKE;
    }
    openssl_detail(t->errdetail, sizeof(t->errdetail), "TLS");
    if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
        return t->handshake_done ? SL_ETRUNCATED : SL_ETLS_HANDSHAKE;
    if (reason_is_version(reason))
        return SL_ETLS_VERSION;
    if (reason_is_client_cert(t, reason))
        return SL_ETLS_CLIENT_CERT;
    return t->handshake_done ? SL_ETLS : SL_ETLS_HANDSHAKE;
}

/* Translate the result `ret` of a failed SSL_* call. SL_EAGAIN stores the
 * readiness wanted in *wants; errors other than SL_EOF become sticky. */
static int op_failure(struct sl__tls *t, int ret, unsigned *wants)
{
    int err, rc;

    *wants = 0;
    err = SSL_get_error(t->ssl, ret);
    /* A write that failed on the socket after the peer's close_notify comes
     * back as ZERO_RETURN: the socket's error says more. */
    if (err == SSL_ERROR_ZERO_RETURN && t->sys_errno != 0)
        err = SSL_ERROR_SYSCALL;
    switch (err) {
    case SSL_ERROR_WANT_READ:
        *wants = SL_EV_READ;
        return SL_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        *wants = SL_EV_WRITE;
        return SL_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        if (t->handshake_done)
            return SL_EOF; /* close_notify: OpenSSL keeps answering this */
        snprintf(t->errdetail, sizeof(t->errdetail), "peer closed during the handshake");
        rc = SL_ETLS_HANDSHAKE;
        break;
    case SSL_ERROR_SYSCALL:
        if (t->sys_errno != 0) {
            snprintf(t->errdetail, sizeof(t->errdetail), "%s", strerror(t->sys_errno));
            rc = sl_translate_errno(t->sys_errno);
        } else if (ERR_peek_error() != 0) {
            rc = ssl_failure(t);
        } else {
            /* OpenSSL 1.1's way to report an EOF without close_notify;
             * OpenSSL 3 says SSL_R_UNEXPECTED_EOF_WHILE_READING instead. */
            snprintf(t->errdetail, sizeof(t->errdetail), "connection closed without close_notify");
            rc = t->handshake_done ? SL_ETRUNCATED : SL_ETLS_HANDSHAKE;
        }
        break;
    case SSL_ERROR_SSL:
        rc = ssl_failure(t);
        break;
    default:
        openssl_detail(t->errdetail, sizeof(t->errdetail), "unexpected SSL_get_error() result");
        rc = t->handshake_done ? SL_ETLS : SL_ETLS_HANDSHAKE;
        break;
    }
    ERR_clear_error();
    /* A fatal TLS error invalidates the session (RFC 5246 section 7.2.2): a
     * certificate that now fails verification must not be skipped by
     * resuming either. A TCP close without close_notify, or a socket error,
     * is no reason to (RFC 5246 section 7.2.1). */
    if (rc <= SL__ERR_BASE && rc != SL_ETRUNCATED && t->session_key != NULL) {
        struct sess_entry *e = cache_find(t->ctx, t->session_key);
        if (e != NULL)
            cache_drop(t->ctx, e);
    }
    t->error = rc;
    return rc;
}

/* ---- handshake, read, write ------------------------------------------------- */

int sl__tls_handshake(struct sl__tls *t)
{
    const unsigned char *p;
    unsigned int len;
    int ret, rc;

    if (t->error != 0)
        return t->error;
    if (t->handshake_done)
        return 0;
    /* Our previous flight may still be queued; OpenSSL goes on regardless
     * (it may have something to read). */
    rc = out_flush(t);
    if (rc < 0 && rc != SL_EAGAIN)
        return rc;
    err_clear();
    t->sys_errno = 0;
    ret = SSL_do_handshake(t->ssl);
    if (ret != 1)
        return op_failure(t, ret, &t->hs_wants);
    /* Complete for OpenSSL, even if our Finished is still queued: the next
     * read or write sends it first. */
    t->handshake_done = true;
    t->hs_wants = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    if (p != NULL && len < sizeof(t->alpn)) {
        memcpy(t->alpn, p, len);
        t->alpn[len] = '\0';
    }
    return 0;
}

bool sl__tls_resumed(const struct sl__tls *t)
{
    return t->handshake_done && SSL_session_reused(t->ssl) == 1;
}

const char *sl__tls_version(const struct sl__tls *t)
{
    return SSL_get_version(t->ssl);
}

const char *sl__tls_cipher(const struct sl__tls *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);

    return c != NULL ? c : "";
}

const char *sl__tls_alpn(const struct sl__tls *t)
{
    return t->alpn;
}

int sl__tls_read(struct sl__tls *t, char *buf, size_t len, size_t *n)
{
    size_t got = 0, m;
    int rc;

    *n = 0;
    t->result_pending = false;
    if (t->error != 0)
        return t->error;
    if (!t->handshake_done && (rc = sl__tls_handshake(t)) != 0)
        return rc;
    if (len == 0)
        return SL_EINVAL;
    /* Queued ciphertext goes first, whoever calls: an owner that only reads
     * still gets our KeyUpdate answers and close_notify out. */
    rc = out_flush(t);
    if (rc < 0 && rc != SL_EAGAIN)
        return rc;
    /* SSL_read_ex() returns one record at most: fill `buf` with the records
     * already read ahead and, while full records keep coming (a large body),
     * with what the socket has, until it would wait: one call then returns
     * many records, and the owner's per-read work (a callback, a write to
     * disk, a return to the loop) is paid per call, not per 16 KiB. After a
     * short record nothing more is asked of the socket (it would only say
     * EAGAIN to a small keep-alive exchange). A failure after some bytes is
     * left for the next call (it is sticky or SL_EOF, or simply SL_EAGAIN
     * again). */
    do {
        err_clear();
        t->sys_errno = 0;
        m = 0;
        if (SSL_read_ex(t->ssl, buf + got, len - got, &m) != 1) {
            unsigned wants;

            rc = op_failure(t, 0, &wants);
            if (got == 0) {
                t->read_wants = wants;
                return rc;
            }
            /* The bytes go first; sl__tls_has_pending() brings the owner
             * back at once for the end (SL_EOF, or the sticky error). */
            t->result_pending = rc != SL_EAGAIN;
            break;
        }
        got += m;
    } while (got < len && (SSL_has_pending(t->ssl) == 1 || m == RECORD_MAX));
    t->read_wants = 0;
    *n = got;
    return 0;
}

/* Copy up to `cap` bytes of `iov` starting at byte `skip` into `dst`. */
static size_t iov_copy(const struct iovec *iov, int iovcnt, size_t skip, char *dst, size_t cap)
{
    size_t got = 0;

    for (int i = 0; i < iovcnt && got < cap; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        l = SL__MIN(l - skip, cap - got);
        memcpy(dst + got, (const char *)iov[i].iov_base + skip, l);
        got += l;
        skip = 0;
    }
    return got;
}

int sl__tls_writev(struct sl__tls *t, const struct iovec *iov, int iovcnt, size_t *n)
{
    char gather[RECORD_MAX];
    size_t total = 0, done = 0, skip = 0;
    int first = 0, rc;

    *n = 0;
    if (t->error != 0)
        return t->error;
    if (!t->handshake_done && (rc = sl__tls_handshake(t)) != 0)
        return rc;
    if (iovcnt < 0 || (iovcnt > 0 && iov == NULL))
        return SL_EINVAL;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    /* While ciphertext is queued nothing more is accepted; out_wants()
     * reports the SL_EV_WRITE this waits for. */
    t->write_wants = 0;
    rc = out_flush(t);
    if (rc < 0)
        return rc;

    /* (first, skip): the iovec piece holding byte `done`, and the offset in it. */
    while (done < total) {
        const char *p;
        size_t len, avail, w = 0;

        while (skip >= iov[first].iov_len) {
            skip -= iov[first].iov_len;
            first++;
        }
        avail = iov[first].iov_len - skip;
        if (avail >= RECORD_MAX || avail == total - done) {
            p = (const char *)iov[first].iov_base + skip;
            len = SL__MIN(avail, RECORD_MAX);
        } else {
            /* Small pieces (a request head, a chunk header) share a record. */
            len = iov_copy(iov, iovcnt, done, gather, sizeof(gather));
            p = gather;
        }
        err_clear();
        t->sys_errno = 0;
        if (SSL_write_ex(t->ssl, p, len, &w) != 1) {
            /* Not for want of socket space (the BIO never refuses); maybe
             * the rest of a post-handshake message must be read first.
             * OpenSSL took none of `p`, so the next call may offer anything. */
            rc = op_failure(t, 0, &t->write_wants);
            if (rc != SL_EAGAIN || done == 0)
                return rc;
            break;
        }
        done += w;
        skip += w;
        if (out_wants(t) != 0)
            break; /* the socket is full: accept no more than what is queued */
    }
    *n = done;
    return done > 0 || total == 0 ? 0 : SL_EAGAIN;
}

unsigned sl__tls_wants(const struct sl__tls *t)
{
    return t->hs_wants | t->read_wants | t->write_wants | out_wants(t);
}

bool sl__tls_has_pending(const struct sl__tls *t)
{
    if (t->result_pending)
        return true;
    return t->error == 0 && SSL_has_pending(t->ssl) == 1;
}

void sl__tls_idle(struct sl__tls *t)
{
    if (t->error == 0)
        (void)SSL_free_buffers(t->ssl); /* refuses while records are buffered: fine */
}

int sl__tls_shutdown(struct sl__tls *t)
{
    int ret;

    if (t->error != 0 || !t->handshake_done)
        return 0;
    if (!t->shutdown_queued) {
        /* In the middle of reading a post-handshake message OpenSSL refuses
         * ("shutdown while in init"): skip, it is best effort. */
        if (SSL_in_init(t->ssl))
            return 0;
        /* Writes the alert (into `out` if the socket is full). Never reads:
         * the peer's close_notify is not waited for, and calling
         * SSL_shutdown() again would start reading for it. */
        ERR_clear_error();
        t->sys_errno = 0;
        ret = SSL_shutdown(t->ssl);
        if (ret < 0)
            return op_failure(t, ret, &t->write_wants);
        t->shutdown_queued = true;
    }
    return out_flush(t);
}

const char *sl__tls_errdetail(const struct sl__tls *t)
{
    return t->errdetail;
}
