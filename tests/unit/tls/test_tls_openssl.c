/*
 * test_tls_openssl.c -- the TLS transform against TLS servers run inside the
 * test process.
 *
 * Everything is made at run time: main() builds a small PKI with the OpenSSL
 * API (a root CA; leaves that are good, expired, not yet valid, for another
 * host, self-signed; a client CA and client certificate) into a mkdtemp
 * directory that is removed at exit. Each test starts its own server thread
 * on 127.0.0.1:0 using blocking OpenSSL, configured per test (certificate,
 * versions, client certificate required, behaviour after the handshake),
 * and optionally a proxy thread that forwards one byte at a time.
 *
 * The client side always runs on a real sl_loop_t: a small driver watches
 * the fd for sl__tls_wants() plus the test's own interest, calls the test's
 * step function on readiness, and steps again without waiting while
 * sl__tls_has_pending() is true. A step that blocked would stall the loop
 * and trip the per-run deadline, so the non-blocking contract is exercised
 * by every test.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The module's send() goes through this wrapper (h2o t/00unit style: the
 * file under test is included below with `send` renamed), so that a test
 * can make the socket look full at an exact moment. */
static int send_eagain;    /* fail this many sends with EAGAIN */
static int send_signaling; /* sends made without MSG_NOSIGNAL (must stay 0) */

static ssize_t test_send(int fd, const void *buf, size_t len, int flags)
{
    if ((flags & MSG_NOSIGNAL) == 0)
        send_signaling++;
    if (send_eagain > 0) {
        send_eagain--;
        errno = EAGAIN;
        return -1;
    }
    return send(fd, buf, len, flags);
}

#define send test_send
#include "../../../tls/tls_openssl.c"
#undef send

#include <check.h>

#include "../../cpuinfo.h"
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define MiB (1024u * 1024u)

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- counting OpenSSL's memory (for the idle-connection figure) ----------- */

/* Blocks allocated by OpenSSL while the allocating thread has `mem_counting`
 * set are tagged; the live total of tagged blocks is `mem_live`. Installed
 * by main() before OpenSSL allocates anything. */
static bool mem_hooked; /* CRYPTO_set_mem_functions() was accepted */
static _Thread_local bool mem_counting;
static long mem_live; /* atomic */
static long mem_big;  /* atomic: tagged allocations of a record buffer's size or more */

struct mem_head {
    size_t size;
    size_t tagged;
} __attribute__((aligned(16)));

static void *mem_malloc(size_t n, const char *file, int line)
{
    struct mem_head *h = malloc(sizeof(*h) + n);

    (void)file;
    (void)line;
    if (h == NULL)
        return NULL;
    h->size = n;
    h->tagged = mem_counting;
    if (h->tagged)
        __atomic_add_fetch(&mem_live, (long)n, __ATOMIC_RELAXED);
    if (h->tagged && n >= 16384)
        __atomic_add_fetch(&mem_big, 1, __ATOMIC_RELAXED);
    return h + 1;
}

static void mem_free(void *p, const char *file, int line)
{
    struct mem_head *h;

    (void)file;
    (void)line;
    if (p == NULL)
        return;
    h = (struct mem_head *)p - 1;
    if (h->tagged)
        __atomic_sub_fetch(&mem_live, (long)h->size, __ATOMIC_RELAXED);
    free(h);
}

static void *mem_realloc(void *p, size_t n, const char *file, int line)
{
    struct mem_head *h, *nh;

    if (p == NULL)
        return mem_malloc(n, file, line);
    h = (struct mem_head *)p - 1;
    size_t old = h->size;
    bool tagged = h->tagged;
    nh = realloc(h, sizeof(*nh) + n);
    if (nh == NULL)
        return NULL;
    nh->size = n;
    if (tagged)
        __atomic_add_fetch(&mem_live, (long)n - (long)old, __ATOMIC_RELAXED);
    return nh + 1;
}

/* ---- the PKI -------------------------------------------------------------- */

struct cred {
    X509 *cert;
    EVP_PKEY *key;
    char cert_path[PATH_MAX];
    char key_path[PATH_MAX];
};

static char pki_dir[64];
static struct cred ca, good, expired, future, wronghost, selfsigned, client_ca, client, stray_key;

/* The fixture is built outside any test: failures end the program. */
static void need(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "test fixture: %s failed\n", what);
        ERR_print_errors_fp(stderr);
        exit(2);
    }
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *e;

    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    need(e != NULL && X509_add_ext(x, e, -1) == 1, value);
    X509_EXTENSION_free(e);
}

static void write_pem(struct cred *c, const char *name, bool key_only)
{
    FILE *f;

    snprintf(c->key_path, sizeof(c->key_path), "%s/%s.key", pki_dir, name);
    f = fopen(c->key_path, "w");
    need(f != NULL && PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL) == 1, name);
    fclose(f);
    if (key_only)
        return;
    snprintf(c->cert_path, sizeof(c->cert_path), "%s/%s.pem", pki_dir, name);
    f = fopen(c->cert_path, "w");
    need(f != NULL && PEM_write_X509(f, c->cert) == 1, name);
    fclose(f);
}

/* A certificate for `cn` (with subjectAltName `san` if not NULL), valid from
 * now+not_before to now+not_after seconds, signed by `issuer` (NULL:
 * self-signed). P-256 keys: fast to make, also under valgrind. */
static void make_cred(struct cred *c, const char *name, const char *cn, const char *san,
                      const struct cred *issuer, long not_before, long not_after, bool is_ca,
                      const char *eku)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_NAME *subject;
    X509 *signer_cert;

    c->key = EVP_EC_gen("P-256");
    need(x != NULL && c->key != NULL, "key generation");
    need(X509_set_version(x, X509_VERSION_3) == 1, "version");
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    need(X509_gmtime_adj(X509_getm_notBefore(x), not_before) != NULL, "notBefore");
    need(X509_gmtime_adj(X509_getm_notAfter(x), not_after) != NULL, "notAfter");
    need(X509_set_pubkey(x, c->key) == 1, "pubkey");
    subject = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer->cert) : subject);
    signer_cert = issuer != NULL ? issuer->cert : x;
    add_ext(x, signer_cert, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    if (is_ca)
        add_ext(x, signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(x, signer_cert, NID_subject_key_identifier, "hash");
    if (issuer != NULL)
        add_ext(x, signer_cert, NID_authority_key_identifier, "keyid:always");
    if (san != NULL)
        add_ext(x, signer_cert, NID_subject_alt_name, san);
    if (eku != NULL)
        add_ext(x, signer_cert, NID_ext_key_usage, eku);
    need(X509_sign(x, issuer != NULL ? issuer->key : c->key, EVP_sha256()) > 0, "signing");
    c->cert = x;
    write_pem(c, name, false);
}

#define DAY (24L * 3600L)

static void pki_build(void)
{
    const char *local = "DNS:localhost,IP:127.0.0.1,IP:::1";
    char tmpl[] = "/tmp/sluice-tls-XXXXXX";

    need(mkdtemp(tmpl) != NULL, "mkdtemp");
    snprintf(pki_dir, sizeof(pki_dir), "%s", tmpl);
    make_cred(&ca, "ca", "sluice test root", NULL, NULL, -DAY, 30 * DAY, true, NULL);
    make_cred(&good, "good", "localhost", local, &ca, -DAY, 30 * DAY, false, "serverAuth");
    make_cred(&expired, "expired", "localhost", local, &ca, -30 * DAY, -DAY, false, "serverAuth");
    make_cred(&future, "future", "localhost", local, &ca, DAY, 30 * DAY, false, "serverAuth");
    make_cred(&wronghost, "wronghost", "other.example", "DNS:other.example", &ca, -DAY, 30 * DAY,
              false, "serverAuth");
    make_cred(&selfsigned, "selfsigned", "localhost", local, NULL, -DAY, 30 * DAY, false,
              "serverAuth");
    make_cred(&client_ca, "client-ca", "sluice test client root", NULL, NULL, -DAY, 30 * DAY, true,
              NULL);
    make_cred(&client, "client", "sluice client", NULL, &client_ca, -DAY, 30 * DAY, false,
              "clientAuth");
    stray_key.key = EVP_EC_gen("P-256");
    need(stray_key.key != NULL, "key generation");
    write_pem(&stray_key, "stray", true);
}

static void pki_remove_one(struct cred *c)
{
    if (c->cert_path[0] != '\0')
        unlink(c->cert_path);
    if (c->key_path[0] != '\0')
        unlink(c->key_path);
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
}

static void pki_remove(void)
{
    struct cred *all[] = {&ca,         &good,      &expired, &future,   &wronghost,
                          &selfsigned, &client_ca, &client,  &stray_key};

    for (size_t i = 0; i < SL__ARRAY_SIZE(all); i++)
        pki_remove_one(all[i]);
    rmdir(pki_dir);
}

/* ---- sockets -------------------------------------------------------------- */

static int listen_on(int family, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                     : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* A blocking connect on loopback (immediate), then non-blocking. */
static int connect_to(int family, uint16_t port, bool nonblock)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(port);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(port);
        len = sizeof(*a);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (nonblock)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static bool ipv6_loopback_works(void)
{
    uint16_t port;
    int fd = listen_on(AF_INET6, &port);

    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Wait up to `ms` for `fd` to be readable (or hung up). */
static bool wait_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, ms) > 0;
}

/* Read and discard until the peer closes (or 20 s of silence). */
static void drain_until_eof(int fd)
{
    char buf[4096];

    while (wait_readable(fd, 20000) && read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* Whether the peer's FIN arrived within `ms`: then everything it sent
 * before is in our socket (graceful_close half-closes after writing). */
static bool wait_peer_fin(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};

    return poll(&p, 1, ms) == 1 && (p.revents & POLLRDHUP) != 0;
}

/* Half-close, then read until the peer closes too, so that close() never
 * turns unread input into a reset that would destroy data in flight. */
static void graceful_close(int fd)
{
    shutdown(fd, SHUT_WR);
    drain_until_eof(fd);
    close(fd);
}

/* The byte at `off` of every test stream. */
static inline unsigned char pattern_at(uint64_t off)
{
    return (unsigned char)((off * 131u) ^ (off >> 11) ^ (off >> 19));
}

static unsigned char *pattern_new(size_t len)
{
    unsigned char *p = malloc(len);

    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_at(i);
    return p;
}

/* ---- the server ----------------------------------------------------------- */

enum srv_mode {
    SRV_HELLO,     /* write "hello", close_notify, close */
    SRV_TRUNCATE,  /* write "partial", close TCP without close_notify */
    SRV_ECHO,      /* echo until close_notify, KeyUpdate (update requested) every MiB */
    SRV_SILENT,    /* accept TCP, never speak TLS */
    SRV_HOLD,      /* handshake, wait for release, then read and hash until the end */
    SRV_RECORD,    /* write one record of RECORD_BYTES, then wait for the client's close */
    SRV_BULK,      /* write BULK_BYTES in full records, close_notify, close */
    SRV_RESET,     /* handshake, then reset the TCP connection */
    SRV_PLAIN,     /* answer in plain HTTP/1.1, no TLS */
    SRV_KEYUPDATE, /* KeyUpdate + "x"; on release KeyUpdate + "y" + KeyUpdate + "z"; read */
};

#define RECORD_BYTES 10000
#define BULK_BYTES (4 * 16384)

#define SRV_MAX_CONNS 4

struct srv_result {
    bool handshake_ok;
    bool resumed;
    bool sni_present;
    char sni[64];
    char alpn[32];
    char version[16];
    char cipher[64];         /* what the server chose */
    unsigned client_tls12;   /* TLS 1.2 ciphers the ClientHello offered */
    char client_first12[64]; /* ... the first of them */
    char peer_cn[64];
    char error[256];
    uint64_t received; /* ECHO, HOLD: plaintext bytes read */
    unsigned reads;    /* ... in this many SSL_read() calls (at most one record each) */
    bool clean_end;    /* ... ended by the client's close_notify */
    unsigned key_updates;
    unsigned char sha[32];
};

struct srv {
    /* configuration */
    enum srv_mode mode;
    const struct cred *cred;
    int min_version, max_version; /* 0: OpenSSL's */
    bool legacy;                  /* allow TLS 1.0/1.1 (security level 0) */
    const char *ciphers;          /* the TLS 1.2 suites it accepts; NULL: OpenSSL's */
    bool require_client_cert;
    int nconns;
    int family;
    /* state */
    int lfd;
    uint16_t port;
    int stop[2];    /* closing stop[1] ends the accept loop */
    int release[2]; /* HOLD: a byte (or EOF) releases the server */
    SSL_CTX *ctx;
    pthread_t thread;
    struct srv_result res[SRV_MAX_CONNS];
};

static int srv_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_protos, sizeof(alpn_protos) - 1,
                              in, inlen) == OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;
}

static void srv_error(struct srv_result *r)
{
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, r->error, sizeof(r->error));
    else
        snprintf(r->error, sizeof(r->error), "errno %d", errno);
    ERR_clear_error();
}

static void srv_read_all(SSL *ssl, struct srv_result *r, bool echo)
{
    static const uint64_t ku_every = MiB;
    uint64_t next_ku = ku_every;
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    char buf[16384];
    size_t n, w;
    int rc;

    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    while ((rc = SSL_read_ex(ssl, buf, sizeof(buf), &n)) == 1) {
        EVP_DigestUpdate(sha, buf, n);
        r->received += n;
        r->reads++;
        if (echo) {
            if (SSL_write_ex(ssl, buf, n, &w) != 1)
                break;
            if (r->received >= next_ku) {
                SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
                r->key_updates++;
                next_ku += ku_every;
            }
        }
    }
    r->clean_end = SSL_get_error(ssl, rc) == SSL_ERROR_ZERO_RETURN;
    if (!r->clean_end)
        srv_error(r);
    EVP_DigestFinal_ex(sha, r->sha, NULL);
    EVP_MD_CTX_free(sha);
    ERR_clear_error();
}

static void srv_serve(struct srv *s, int fd, struct srv_result *r)
{
    const unsigned char *alpn;
    unsigned int alpn_len;
    const char *sni;
    X509 *peer;
    SSL *ssl;
    char c;

    if (s->mode == SRV_PLAIN) {
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        (void)!write(fd, resp, sizeof(resp) - 1);
        graceful_close(fd);
        return;
    }
    if (s->mode == SRV_SILENT) {
        drain_until_eof(fd); /* the ClientHello, then the client's close */
        close(fd);
        return;
    }
    ssl = SSL_new(s->ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
        srv_error(r);
        SSL_free(ssl);
        graceful_close(fd);
        return;
    }
    r->handshake_ok = true;
    r->resumed = SSL_session_reused(ssl) == 1;
    sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    r->sni_present = sni != NULL;
    snprintf(r->sni, sizeof(r->sni), "%s", sni != NULL ? sni : "");
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    snprintf(r->alpn, sizeof(r->alpn), "%.*s", (int)alpn_len, alpn != NULL ? (char *)alpn : "");
    snprintf(r->version, sizeof(r->version), "%s", SSL_get_version(ssl));
    snprintf(r->cipher, sizeof(r->cipher), "%s", SSL_get_cipher_name(ssl));
    {
        STACK_OF(SSL_CIPHER) *offered = SSL_get_client_ciphers(ssl);
        for (int i = 0; offered != NULL && i < sk_SSL_CIPHER_num(offered); i++) {
            const SSL_CIPHER *ci = sk_SSL_CIPHER_value(offered, i);
            if (SSL_CIPHER_get_kx_nid(ci) == NID_kx_any)
                continue; /* a TLS 1.3 suite */
            if (r->client_tls12++ == 0)
                snprintf(r->client_first12, sizeof(r->client_first12), "%s",
                         SSL_CIPHER_get_name(ci));
        }
    }
    peer = SSL_get1_peer_certificate(ssl);
    if (peer != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, r->peer_cn,
                                  sizeof(r->peer_cn));
        X509_free(peer);
    }

    switch (s->mode) {
    case SRV_HELLO:
        SSL_write(ssl, "hello", 5);
        SSL_shutdown(ssl);
        break;
    case SRV_TRUNCATE:
        SSL_write(ssl, "partial", 7);
        break;
    case SRV_ECHO:
        srv_read_all(ssl, r, true);
        SSL_shutdown(ssl);
        break;
    case SRV_HOLD:
        if (wait_readable(s->release[0], 20000))
            (void)!read(s->release[0], &c, 1);
        srv_read_all(ssl, r, false);
        break;
    case SRV_BULK: {
        unsigned char *bulk = pattern_new(BULK_BYTES);
        for (size_t off = 0; off < BULK_BYTES; off += 16384)
            SSL_write(ssl, bulk + off, 16384);
        free(bulk);
        SSL_shutdown(ssl);
        break;
    }
    case SRV_RECORD: {
        unsigned char *rec = pattern_new(RECORD_BYTES);
        SSL_write(ssl, rec, RECORD_BYTES);
        free(rec);
        drain_until_eof(fd);
        break;
    }
    case SRV_KEYUPDATE:
        SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
        SSL_write(ssl, "x", 1);
        if (wait_readable(s->release[0], 20000))
            (void)!read(s->release[0], &c, 1);
        SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
        SSL_write(ssl, "y", 1);
        SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
        SSL_write(ssl, "z", 1);
        srv_read_all(ssl, r, false);
        break;
    case SRV_RESET: {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        SSL_free(ssl);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd); /* RST */
        return;
    }
    case SRV_SILENT:
    case SRV_PLAIN:
        break;
    }
    ERR_clear_error();
    SSL_free(ssl);
    graceful_close(fd);
}

/* The servers write with SSL_write() on plain sockets, which raise SIGPIPE
 * when a client has gone. The signal goes to the writing thread: block it
 * there, and leave the default (fatal) action for the test thread, so that
 * a client write that raised SIGPIPE would kill the test. */
static void block_sigpipe(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *srv_thread(void *arg)
{
    struct srv *s = arg;

    block_sigpipe();
    for (int i = 0; i < s->nconns; i++) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
                              {.fd = s->stop[0], .events = POLLIN}};
        struct timeval tv = {.tv_sec = 20};
        int fd;

        if (poll(p, 2, 20000) <= 0 || (p[0].revents & POLLIN) == 0)
            break;
        fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        /* A broken client must not hang the server (and the test) forever. */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        srv_serve(s, fd, &s->res[i]);
    }
    OPENSSL_thread_stop();
    return NULL;
}

static void srv_start(struct srv *s)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    ck_assert_ptr_nonnull(ctx);
    s->ctx = ctx;
    if (s->nconns == 0)
        s->nconns = 1;
    if (s->family == 0)
        s->family = AF_INET;
    if (s->cred != NULL) {
        ck_assert_int_eq(SSL_CTX_use_certificate(ctx, s->cred->cert), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, s->cred->key), 1);
    }
    if (s->legacy) {
        ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"), 1);
        SSL_CTX_set_security_level(ctx, 0);
    }
    if (s->ciphers != NULL)
        ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, s->ciphers), 1);
    if (s->min_version != 0)
        ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, s->min_version), 1);
    if (s->max_version != 0)
        ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, s->max_version), 1);
    SSL_CTX_set_alpn_select_cb(ctx, srv_alpn, NULL);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sluice", 6);
    if (s->require_client_cert) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), client_ca.cert);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    s->lfd = listen_on(s->family, &s->port);
    ck_assert_int_ge(s->lfd, 0);
    if (s->mode == SRV_HOLD) {
        /* A fixed receive buffer (no autotuning, which grows to 32 MiB on
         * loopback) so that a client fills the path with a few MiB. */
        int size = 128 * 1024;
        setsockopt(s->lfd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
    ck_assert_int_eq(pipe2(s->stop, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(s->release, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, srv_thread, s), 0);
}

static void srv_release(struct srv *s)
{
    ck_assert_int_eq(write(s->release[1], "x", 1), 1);
}

/* Stop accepting, wait for the thread (which finishes its connection
 * first), release everything. */
static void srv_join(struct srv *s)
{
    close(s->stop[1]);
    close(s->release[1]);
    pthread_join(s->thread, NULL);
    close(s->stop[0]);
    close(s->release[0]);
    close(s->lfd);
    SSL_CTX_free(s->ctx);
}

/* ---- a proxy that forwards one byte at a time -------------------------------- */

struct drip {
    int lfd;
    uint16_t port, target;
    unsigned long forwarded;
    pthread_t thread;
};

static void *drip_thread(void *arg)
{
    struct drip *d = arg;
    int c, s, fds[2];
    bool open[2] = {true, true};

    block_sigpipe();
    if (!wait_readable(d->lfd, 20000) || (c = accept(d->lfd, NULL, NULL)) < 0)
        return NULL;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    s = connect_to(AF_INET, d->target, false);
    if (s < 0) {
        close(c);
        return NULL;
    }
    fds[0] = c;
    fds[1] = s;
    while (open[0] || open[1]) {
        struct pollfd p[2] = {{.fd = open[0] ? c : -1, .events = POLLIN},
                              {.fd = open[1] ? s : -1, .events = POLLIN}};
        if (poll(p, 2, 20000) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            char b;
            if (p[i].revents == 0)
                continue;
            if (read(fds[i], &b, 1) == 1 && write(fds[1 - i], &b, 1) == 1) {
                d->forwarded++;
                usleep(50); /* so that each byte travels in a segment of its own */
            } else {
                shutdown(fds[1 - i], SHUT_WR);
                open[i] = false;
            }
        }
    }
    close(c);
    close(s);
    return NULL;
}

static void drip_start(struct drip *d, uint16_t target)
{
    d->target = target;
    d->lfd = listen_on(AF_INET, &d->port);
    ck_assert_int_ge(d->lfd, 0);
    ck_assert_int_eq(pthread_create(&d->thread, NULL, drip_thread, d), 0);
}

static void drip_join(struct drip *d)
{
    pthread_join(d->thread, NULL);
    close(d->lfd);
}

/* ---- the client driver on a real loop --------------------------------------- */

struct cli {
    sl_loop_t loop;
    sl_io_t io;
    sl_timer_t deadline;
    sl_defer_t again; /* step again at once: OpenSSL holds plaintext */
    struct sl__tls_ctx *ctx;
    struct sl__tls *t;
    int fd;
    bool io_ready;

    int (*step)(struct cli *c); /* SL_EAGAIN: wait; anything else ends the run */
    unsigned app_wants;         /* the test's own interest besides the TLS wants */
    int result;
    bool finished, timed_out;
    unsigned steps, eagains, pending_seen;
    uint64_t max_step_ns;

    /* reading */
    size_t read_chunk;       /* bytes asked per sl__tls_read() */
    unsigned reads_per_step; /* then yield to the loop */
    char small[256];         /* the first plaintext bytes */
    size_t nsmall;
    uint64_t rx_total;
    EVP_MD_CTX *rx_sha;
    bool rx_check_pattern; /* every byte must equal pattern_at(its offset) */

    /* writing: bytes tx_base[0..] are the stream from offset tx_base_off */
    const unsigned char *tx_base;
    uint64_t tx_base_off, tx_off, tx_len;
    uint32_t rng;
    EVP_MD_CTX *tx_sha;
    bool shutdown_when_sent;
    bool shutdown_done;
};

static void cli_finish(struct cli *c, int rc)
{
    c->result = rc;
    c->finished = true;
    if (c->io_ready)
        sl_io_stop(&c->io);
    sl_timer_stop(&c->deadline);
    sl_defer_stop(&c->again);
}

static void cli_step(struct cli *c)
{
    uint64_t t0;
    unsigned ev;
    int rc;

    if (c->finished)
        return;
    c->steps++;
    t0 = now_ns();
    rc = c->step(c);
    t0 = now_ns() - t0;
    if (t0 > c->max_step_ns)
        c->max_step_ns = t0;
    if (rc != SL_EAGAIN) {
        cli_finish(c, rc);
        return;
    }
    c->eagains++;
    ev = sl__tls_wants(c->t) | c->app_wants;
    if (sl__tls_has_pending(c->t)) {
        c->pending_seen++;
        sl_defer_start(&c->again);
    }
    /* Hot path: ck_assert() records a mark on every call, so only abort. */
    if (ev == 0 && !sl_defer_pending(&c->again))
        ck_abort_msg("SL_EAGAIN with nothing to wait for");
    if (sl_io_start(&c->io, ev) != 0)
        ck_abort_msg("sl_io_start failed");
}

static void cli_io_cb(sl_io_t *io, unsigned events)
{
    (void)events;
    cli_step(sl__container_of(io, struct cli, io));
}

static void cli_defer_cb(sl_defer_t *d)
{
    cli_step(sl__container_of(d, struct cli, again));
}

static void cli_deadline_cb(sl_timer_t *t)
{
    struct cli *c = sl__container_of(t, struct cli, deadline);

    c->timed_out = true;
    cli_finish(c, SL_ETIMEDOUT);
}

static void cli_init(struct cli *c, const struct sl__tls_ctx_opts *o)
{
    char err[256];
    int rc;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    ck_assert_int_eq(sl_loop_init(&c->loop), 0);
    sl_timer_init(&c->loop, &c->deadline, cli_deadline_cb);
    sl_defer_init(&c->loop, &c->again, cli_defer_cb);
    rc = sl__tls_ctx_new(o, &c->ctx, err, sizeof(err));
    ck_assert_msg(rc == 0, "sl__tls_ctx_new: %s: %s", sl_err_name(rc), err);
    c->read_chunk = sizeof(c->small);
    c->reads_per_step = 64;
}

/* Connect to `port` and create the TLS session; `host` is what the URL said. */
static void cli_connect(struct cli *c, int family, uint16_t port, const char *host,
                        const char *session_key)
{
    c->fd = connect_to(family, port, true);
    ck_assert_int_ge(c->fd, 0);
    ck_assert_int_eq(sl_io_init(&c->loop, &c->io, c->fd, cli_io_cb), 0);
    c->io_ready = true;
    ck_assert_int_eq(sl__tls_new(c->ctx, c->fd, host, session_key, &c->t), 0);
    c->nsmall = 0;
    c->rx_total = 0;
}

/* Run `step` on the loop until it returns something other than SL_EAGAIN,
 * or `ms` pass (SL_ETIMEDOUT). */
static int cli_run(struct cli *c, int (*step)(struct cli *), uint64_t ms)
{
    c->step = step;
    c->finished = false;
    c->timed_out = false;
    c->steps = c->eagains = 0;
    c->max_step_ns = 0;
    sl_timer_start(&c->deadline, ms, 0);
    sl_defer_start(&c->again); /* the first step runs from the loop, like the rest */
    ck_assert_int_eq(sl_loop_run(&c->loop), 0);
    ck_assert(c->finished);
    return c->result;
}

/* Free the session and close the socket (the server sees EOF). */
static void cli_disconnect(struct cli *c)
{
    if (c->io_ready) {
        sl_io_stop(&c->io);
        c->io_ready = false;
    }
    sl__tls_free(c->t);
    c->t = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void cli_close(struct cli *c)
{
    ck_assert_int_eq(send_signaling, 0);
    cli_disconnect(c);
    sl__tls_ctx_free(c->ctx);
    EVP_MD_CTX_free(c->rx_sha);
    EVP_MD_CTX_free(c->tx_sha);
    ck_assert_int_eq(sl_loop_close(&c->loop), 0);
}

/* ---- steps ------------------------------------------------------------------ */

static int step_handshake(struct cli *c)
{
    return sl__tls_handshake(c->t);
}

/* Read up to reads_per_step chunks, then yield to the loop (which must come
 * back at once if OpenSSL still holds plaintext). Returns SL_EAGAIN or the
 * end of the stream (SL_EOF, SL_ETRUNCATED, an error). */
static int read_some(struct cli *c)
{
    char buf[16384];
    size_t want = SL__MIN(c->read_chunk, sizeof(buf));

    for (unsigned i = 0; i < c->reads_per_step; i++) {
        size_t n = 0;
        int rc = sl__tls_read(c->t, buf, want, &n);
        if (rc != 0)
            return rc;
        if (n == 0)
            ck_abort_msg("sl__tls_read returned 0 with no bytes");
        if (c->nsmall < sizeof(c->small) - 1) {
            size_t k = SL__MIN(n, sizeof(c->small) - 1 - c->nsmall);
            memcpy(c->small + c->nsmall, buf, k);
            c->nsmall += k;
            c->small[c->nsmall] = '\0';
        }
        if (c->rx_check_pattern) {
            for (size_t j = 0; j < n; j++)
                if ((unsigned char)buf[j] != pattern_at(c->rx_total + j))
                    ck_abort_msg("byte %llu differs", (unsigned long long)(c->rx_total + j));
        }
        if (c->rx_sha != NULL)
            EVP_DigestUpdate(c->rx_sha, buf, n);
        c->rx_total += n;
    }
    return SL_EAGAIN;
}

static int step_read(struct cli *c)
{
    c->app_wants = SL_EV_READ;
    return read_some(c);
}

/* Offer the rest of the stream split into up to three pieces of random
 * sizes, so that a retry after SL_EAGAIN presents the same bytes split
 * differently; a fourth piece tops the offer up to 16 KiB, the least a
 * retry must offer. */
static int offer(struct cli *c, struct iovec *iov)
{
    static const size_t caps[] = {1, 7, 300, 5000, 16384, 40000, 200000};
    uint64_t left = c->tx_len - c->tx_off;
    const unsigned char *p = c->tx_base + (c->tx_off - c->tx_base_off);
    size_t offered = 0;
    int n = 0;

    while (left > 0 && n < 4) {
        size_t len;
        c->rng = c->rng * 1103515245u + 12345u;
        len = n < 3 ? caps[(c->rng >> 16) % SL__ARRAY_SIZE(caps)]
                    : (offered < RECORD_MAX ? RECORD_MAX - offered : 0);
        len = SL__MIN(left, (uint64_t)len);
        if (len == 0)
            break;
        iov[n].iov_base = (void *)p;
        iov[n].iov_len = len;
        p += len;
        left -= len;
        offered += len;
        n++;
    }
    return n;
}

/* Write as much of the stream as the socket takes. Returns SL_EAGAIN,
 * 0 once everything is accepted, or an error. */
static int write_some(struct cli *c)
{
    while (c->tx_off < c->tx_len) {
        struct iovec iov[4];
        int n = offer(c, iov);
        size_t w = 0;
        int rc = sl__tls_writev(c->t, iov, n, &w);
        if (rc == SL_EAGAIN)
            return rc;
        if (rc < 0)
            return rc;
        if (w == 0)
            ck_abort_msg("sl__tls_writev accepted nothing");
        if (c->tx_sha != NULL)
            EVP_DigestUpdate(c->tx_sha, c->tx_base + (c->tx_off - c->tx_base_off), w);
        c->tx_off += w;
    }
    return 0;
}

/* Echo: write the whole stream, then close_notify, while reading back
 * everything until the server's close_notify. */
static int step_echo(struct cli *c)
{
    int rc;

    c->app_wants = SL_EV_READ;
    rc = write_some(c);
    if (rc < 0 && rc != SL_EAGAIN)
        return rc;
    if (rc == 0 && c->shutdown_when_sent && !c->shutdown_done) {
        rc = sl__tls_shutdown(c->t);
        if (rc < 0 && rc != SL_EAGAIN)
            return rc;
        c->shutdown_done = rc == 0;
    }
    /* Like any owner (redis updateSSLEvent): our own interest in writing
     * joins the TLS wants, since a read may drain the queue we wait on. */
    c->app_wants = SL_EV_READ;
    if (c->tx_off < c->tx_len || (c->shutdown_when_sent && !c->shutdown_done))
        c->app_wants |= SL_EV_WRITE;
    rc = read_some(c);
    if (rc == SL_EOF)
        return 0;
    return rc;
}

/* Fill the socket: write until SL_EAGAIN (then stop: returns 0). */
static int step_fill(struct cli *c)
{
    int rc = write_some(c);

    if (rc == SL_EAGAIN)
        return 0;
    return rc == 0 ? SL_ENOSPC : rc; /* the whole stream fit: the test is void */
}

/* Write the rest of the stream, then close_notify; reading on the side. */
static int step_send_all(struct cli *c)
{
    int rc;

    c->app_wants = SL_EV_READ | SL_EV_WRITE; /* writing until done */
    rc = write_some(c);
    if (rc == 0) {
        rc = sl__tls_shutdown(c->t);
        if (rc == 0)
            return 0;
    }
    if (rc != SL_EAGAIN)
        return rc;
    return read_some(c);
}

static int step_shutdown(struct cli *c)
{
    c->app_wants = 0;
    return sl__tls_shutdown(c->t);
}

/* ---- helpers for the common shapes ------------------------------------------ */

static struct sl__tls_ctx_opts opts_trusting(const struct cred *anchor)
{
    struct sl__tls_ctx_opts o;

    sl__tls_ctx_opts_init(&o);
    o.cafile = anchor != NULL ? anchor->cert_path : NULL;
    return o;
}

/* Handshake with a HELLO server presenting `cred`; returns the handshake
 * result and, on success, reads to the end into c->small. */
struct outcome {
    int hs, rd;
    bool resumed;
    char data[256], version[16], alpn[32], cipher[64], detail[320];
    struct srv_result srv;
};

static struct outcome exchange(const struct sl__tls_ctx_opts *o, struct srv *s, const char *host)
{
    struct outcome out;
    struct cli c;

    memset(&out, 0, sizeof(out));
    srv_start(s);
    cli_init(&c, o);
    cli_connect(&c, s->family, s->port, host, NULL);
    out.hs = cli_run(&c, step_handshake, 10000);
    out.rd = 1;
    if (out.hs == 0) {
        out.rd = cli_run(&c, step_read, 10000);
        out.resumed = sl__tls_resumed(c.t);
        snprintf(out.version, sizeof(out.version), "%s", sl__tls_version(c.t));
        snprintf(out.cipher, sizeof(out.cipher), "%s", sl__tls_cipher(c.t));
        snprintf(out.alpn, sizeof(out.alpn), "%s", sl__tls_alpn(c.t));
        snprintf(out.data, sizeof(out.data), "%s", c.small);
    }
    snprintf(out.detail, sizeof(out.detail), "%s", sl__tls_errdetail(c.t));
    cli_disconnect(&c);
    srv_join(s);
    out.srv = s->res[0];
    cli_close(&c);
    return out;
}

static void expect_verify_failure(const struct cred *server_cert, int want, const char *text)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = server_cert};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == want, "handshake: %s (%s), want %s", sl_err_name(out.hs), out.detail,
                  sl_err_name(want));
    ck_assert_msg(strstr(out.detail, text) != NULL, "detail '%s' lacks '%s'", out.detail, text);
    ck_assert(!out.srv.handshake_ok);
}

/* ---- verification ------------------------------------------------------------ */

START_TEST(tls_good_cert_verifies)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert_str_eq(out.version, "TLSv1.3");
    ck_assert_str_eq(out.alpn, "http/1.1");
    ck_assert_str_eq(out.srv.alpn, "http/1.1");
    ck_assert(!out.resumed);
    ck_assert_str_eq(out.data, "hello");
    ck_assert_int_eq(out.rd, SL_EOF);
}
END_TEST

START_TEST(tls_unknown_ca)
{
    /* No cafile: only the system store, which does not know the test CA. */
    struct sl__tls_ctx_opts o = opts_trusting(NULL);
    struct srv s = {.cred = &good};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == SL_ETLS_UNKNOWN_CA, "handshake: %s (%s)", sl_err_name(out.hs),
                  out.detail);
    ck_assert_ptr_nonnull(strstr(out.detail, "unable to get local issuer certificate"));
}
END_TEST

START_TEST(tls_wrong_host)
{
    expect_verify_failure(&wronghost, SL_ETLS_HOSTNAME, "hostname mismatch");
}
END_TEST

START_TEST(tls_expired)
{
    expect_verify_failure(&expired, SL_ETLS_EXPIRED, "certificate has expired");
}
END_TEST

START_TEST(tls_not_yet_valid)
{
    expect_verify_failure(&future, SL_ETLS_NOT_YET_VALID, "not yet valid");
}
END_TEST

START_TEST(tls_self_signed)
{
    expect_verify_failure(&selfsigned, SL_ETLS_SELF_SIGNED, "self-signed certificate");
}
END_TEST

START_TEST(tls_cafile_replaces_system_store)
{
    /* OpenSSL's default paths honour SSL_CERT_FILE: make the test CA part
     * of the "system store" for this test only. */
    struct outcome out;
    struct srv s1 = {.cred = &good}, s2 = {.cred = &good};
    struct sl__tls_ctx_opts o = opts_trusting(NULL);

    ck_assert_int_eq(setenv("SSL_CERT_FILE", ca.cert_path, 1), 0);
    ck_assert_int_eq(setenv("SSL_CERT_DIR", pki_dir, 1), 0);
    out = exchange(&o, &s1, "localhost");
    ck_assert_msg(out.hs == 0, "system store: %s (%s)", sl_err_name(out.hs), out.detail);
    /* With a cafile of its own, the context no longer trusts the system. */
    o = opts_trusting(&client_ca);
    out = exchange(&o, &s2, "localhost");
    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    ck_assert_msg(out.hs == SL_ETLS_UNKNOWN_CA, "cafile: %s (%s)", sl_err_name(out.hs), out.detail);
}
END_TEST

/* Concatenate the certificates of `creds` into pki_dir/bundle.pem and return its path. */
static const char *write_bundle(const struct cred *const *creds, size_t n)
{
    static char path[PATH_MAX];
    FILE *out;

    snprintf(path, sizeof(path), "%s/bundle.pem", pki_dir);
    out = fopen(path, "w");
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(PEM_write_X509(out, creds[i]->cert), 1);
    ck_assert_int_eq(fclose(out), 0);
    return path;
}

START_TEST(tls_system_bundle_decoded_on_demand)
{
    /* The system bundle is indexed by subject and a certificate decoded when a chain asks
     * for it: the anchor must be found among other certificates (here after two CAs that
     * do not issue the server's), and not be made up when the bundle lacks it. */
    const struct cred *with_ca[] = {&client_ca, &selfsigned, &ca};
    const struct cred *without_ca[] = {&client_ca, &selfsigned};
    struct srv s1 = {.cred = &good}, s2 = {.cred = &good}, s3 = {.cred = &good};
    struct sl__tls_ctx_opts o = opts_trusting(NULL);
    struct outcome out;

    ck_assert_int_eq(setenv("SSL_CERT_DIR", pki_dir, 1), 0); /* not a hashed directory */
    ck_assert_int_eq(setenv("SSL_CERT_FILE", write_bundle(with_ca, 3), 1), 0);
    out = exchange(&o, &s1, "localhost");
    ck_assert_msg(out.hs == 0, "bundle with the CA: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert_int_eq(setenv("SSL_CERT_FILE", write_bundle(without_ca, 2), 1), 0);
    out = exchange(&o, &s2, "localhost");
    ck_assert_msg(out.hs == SL_ETLS_UNKNOWN_CA, "bundle without: %s (%s)", sl_err_name(out.hs),
                  out.detail);
    ck_assert_int_eq(setenv("SSL_CERT_FILE", "/nonexistent/bundle.pem", 1), 0);
    out = exchange(&o, &s3, "localhost");
    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    ck_assert_msg(out.hs == SL_ETLS_UNKNOWN_CA, "no bundle: %s (%s)", sl_err_name(out.hs),
                  out.detail);
}
END_TEST

START_TEST(tls_insecure_accepts_all)
{
    const struct cred *certs[] = {&good, &wronghost, &expired, &future, &selfsigned};

    for (size_t i = 0; i < SL__ARRAY_SIZE(certs); i++) {
        struct sl__tls_ctx_opts o = opts_trusting(NULL); /* would be UNKNOWN_CA */
        struct srv s = {.cred = certs[i]};
        o.insecure = true;
        struct outcome out = exchange(&o, &s, "localhost");
        ck_assert_msg(out.hs == 0, "cert %zu: %s (%s)", i, sl_err_name(out.hs), out.detail);
        ck_assert_str_eq(out.data, "hello");
        ck_assert_int_eq(out.rd, SL_EOF);
    }
}
END_TEST

START_TEST(tls_ip_literal_verifies_ip_san_without_sni)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};
    struct outcome out = exchange(&o, &s, "127.0.0.1");

    ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert(out.srv.handshake_ok);
    ck_assert(!out.srv.sni_present);
    ck_assert_str_eq(out.data, "hello");

    /* The IP is really checked: a certificate without it fails. */
    struct srv s2 = {.cred = &wronghost};
    out = exchange(&o, &s2, "127.0.0.1");
    ck_assert_msg(out.hs == SL_ETLS_HOSTNAME, "handshake: %s (%s)", sl_err_name(out.hs),
                  out.detail);
    ck_assert_ptr_nonnull(strstr(out.detail, "IP address mismatch"));
}
END_TEST

START_TEST(tls_ipv6_literal)
{
    if (!ipv6_loopback_works()) {
        fprintf(stderr, "tls_ipv6_literal: no IPv6 loopback, skipped\n");
        return;
    }
    const char *hosts[] = {"::1", "[::1]"};
    for (size_t i = 0; i < SL__ARRAY_SIZE(hosts); i++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {.cred = &good, .family = AF_INET6};
        struct outcome out = exchange(&o, &s, hosts[i]);
        ck_assert_msg(out.hs == 0, "%s: %s (%s)", hosts[i], sl_err_name(out.hs), out.detail);
        ck_assert(!out.srv.sni_present);
    }
}
END_TEST

START_TEST(tls_hostname_sends_sni)
{
    const char *hosts[] = {"localhost", "localhost."};

    for (size_t i = 0; i < SL__ARRAY_SIZE(hosts); i++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {.cred = &good};
        struct outcome out = exchange(&o, &s, hosts[i]);
        ck_assert_msg(out.hs == 0, "%s: %s (%s)", hosts[i], sl_err_name(out.hs), out.detail);
        ck_assert(out.srv.sni_present);
        ck_assert_str_eq(out.srv.sni, "localhost"); /* no trailing dot on the wire */
    }
}
END_TEST

/* ---- resumption ---------------------------------------------------------------- */

/* Run `n` sequential connections to one server (HELLO unless s->mode says
 * otherwise); keys[i] is the session key of connection i. read_to_end: read
 * until the server's end (close_notify, or SL_ETRUNCATED for TRUNCATE),
 * else only the first plaintext bytes, then free without close_notify. */
/* Stop (0) after the first read that returned data. */
static int step_read_once(struct cli *c)
{
    int rc;

    c->app_wants = SL_EV_READ;
    rc = read_some(c);
    return rc == SL_EAGAIN && c->nsmall > 0 ? 0 : rc;
}

static void resumption_run(struct srv *s, struct sl__tls_ctx_opts *o, const char *const *keys,
                           int n, bool read_to_end, bool *resumed, char (*version)[16])
{
    int end = s->mode == SRV_TRUNCATE ? SL_ETRUNCATED : SL_EOF;
    struct cli c;

    s->nconns = n;
    srv_start(s);
    cli_init(&c, o);
    for (int i = 0; i < n; i++) {
        cli_connect(&c, AF_INET, s->port, "localhost", keys[i]);
        int rc = cli_run(&c, step_handshake, 10000);
        ck_assert_msg(rc == 0, "conn %d: %s (%s)", i, sl_err_name(rc), sl__tls_errdetail(c.t));
        resumed[i] = sl__tls_resumed(c.t);
        snprintf(version[i], sizeof(version[i]), "%s", sl__tls_version(c.t));
        if (read_to_end) {
            ck_assert_int_eq(cli_run(&c, step_read, 10000), end);
        } else {
            c.reads_per_step = 1;
            c.read_chunk = 5;
            ck_assert_int_eq(cli_run(&c, step_read_once, 10000), 0);
            ck_assert_uint_eq(c.nsmall, 5);
        }
        cli_disconnect(&c);
    }
    srv_join(s);
    cli_close(&c);
}

START_TEST(tls_resume_tls13)
{
    const char *keys[] = {"localhost:443", "localhost:443", "other:443"};
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};
    bool resumed[3];
    char version[3][16];

    resumption_run(&s, &o, keys, 3, true, resumed, version);
    ck_assert_str_eq(version[0], "TLSv1.3");
    ck_assert(!resumed[0] && !s.res[0].resumed);
    ck_assert(resumed[1] && s.res[1].resumed);
    ck_assert(!resumed[2] && !s.res[2].resumed); /* another key, another slot */
}
END_TEST

START_TEST(tls_resume_tls12)
{
    const char *keys[] = {"localhost:443", "localhost:443"};
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .max_version = TLS1_2_VERSION};
    bool resumed[2];
    char version[2][16];

    resumption_run(&s, &o, keys, 2, true, resumed, version);
    ck_assert_str_eq(version[0], "TLSv1.2");
    ck_assert(!resumed[0]);
    ck_assert(resumed[1] && s.res[1].resumed);
}
END_TEST

START_TEST(tls_resume_after_unclean_close)
{
    /* Connections that end without close_notify -- freed by us in the middle
     * of the stream, or cut by the server (SL_ETRUNCATED) -- leave their
     * session resumable, with TLS 1.2 and 1.3 (OpenSSL alone would drop it).
     * Each later connection resumes the session of the one before. */
    const char *keys[] = {"k", "k", "k"};
    bool resumed[3];
    char version[3][16];

    for (int v = 0; v < 4; v++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {.cred = &good,
                        .mode = v < 2 ? SRV_HELLO : SRV_TRUNCATE,
                        .max_version = v % 2 == 0 ? TLS1_2_VERSION : 0};
        resumption_run(&s, &o, keys, 3, v >= 2, resumed, version);
        ck_assert_msg(resumed[1] && s.res[1].resumed && resumed[2] && s.res[2].resumed,
                      "%s, %s: session not resumed", version[0],
                      v < 2 ? "freed mid-stream" : "truncated");
    }
}
END_TEST

START_TEST(tls_fatal_error_forgets_session)
{
    /* A session from a good server; then, under the same key, a server whose
     * certificate has expired (a different server: it cannot resume, so it
     * shows its certificate). The failure must drop the session, or the
     * next connection would skip verification by resuming it. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv good_srv = {.cred = &good, .nconns = 2}, bad_srv = {.cred = &expired};
    struct cli c;

    srv_start(&good_srv);
    srv_start(&bad_srv);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, good_srv.port, "localhost", "k");
    ck_assert_int_eq(cli_run(&c, step_read, 10000), SL_EOF);
    cli_disconnect(&c);
    ck_assert_uint_eq(c.ctx->nsessions, 1);

    cli_connect(&c, AF_INET, bad_srv.port, "localhost", "k");
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), SL_ETLS_EXPIRED);
    cli_disconnect(&c);
    ck_assert_uint_eq(c.ctx->nsessions, 0);

    cli_connect(&c, AF_INET, good_srv.port, "localhost", "k");
    ck_assert_int_eq(cli_run(&c, step_read, 10000), SL_EOF);
    ck_assert(!sl__tls_resumed(c.t));
    cli_disconnect(&c);
    srv_join(&good_srv);
    srv_join(&bad_srv);
    cli_close(&c);
}
END_TEST

START_TEST(tls_session_cache_is_bounded)
{
    /* White box: the cache keeps the newest SL__TLS_SESSION_CACHE_MAX keys. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .max_version = TLS1_2_VERSION, .nconns = 1};
    struct cli c;
    SSL_SESSION *sess;
    char key[32];

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", "first");
    ck_assert_int_eq(cli_run(&c, step_read, 10000), SL_EOF);
    sess = SSL_get1_session(c.t->ssl);
    ck_assert_ptr_nonnull(sess);
    for (int i = 0; i < SL__TLS_SESSION_CACHE_MAX + 10; i++) {
        snprintf(key, sizeof(key), "host%d:443", i);
        free(c.t->session_key);
        c.t->session_key = strdup(key);
        new_session_cb(c.t->ssl, sess);
    }
    ck_assert_uint_eq(c.ctx->nsessions, SL__TLS_SESSION_CACHE_MAX);
    ck_assert_ptr_null(cache_find(c.ctx, "first"));
    ck_assert_ptr_null(cache_find(c.ctx, "host9:443"));
    ck_assert_ptr_nonnull(cache_find(c.ctx, "host10:443"));
    SSL_SESSION_free(sess);
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

START_TEST(tls_session_cache_off)
{
    const char *keys[] = {"k", "k"};
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};
    bool resumed[2];
    char version[2][16];

    o.session_cache = false;
    resumption_run(&s, &o, keys, 2, true, resumed, version);
    ck_assert(!resumed[0] && !resumed[1]);
}
END_TEST

/* ---- versions ------------------------------------------------------------------ */

START_TEST(tls_version_tls11_server)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {
        .cred = &good, .legacy = true, .min_version = TLS1_VERSION, .max_version = TLS1_1_VERSION};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == SL_ETLS_VERSION, "handshake: %s (%s); server: %s", sl_err_name(out.hs),
                  out.detail, out.srv.error);
}
END_TEST

START_TEST(tls_version_min13_against_tls12_server)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .max_version = TLS1_2_VERSION};

    o.min_version = SL__TLS_VERSION_1_3;
    struct outcome out = exchange(&o, &s, "localhost");
    ck_assert_msg(out.hs == SL_ETLS_VERSION, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
}
END_TEST

/* ---- client certificates ------------------------------------------------------- */

START_TEST(tls_client_cert_accepted)
{
    for (int v = 0; v < 2; v++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {
            .cred = &good, .require_client_cert = true, .max_version = v == 0 ? TLS1_2_VERSION : 0};
        o.cert = client.cert_path;
        o.key = client.key_path;
        struct outcome out = exchange(&o, &s, "localhost");
        ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
        ck_assert_str_eq(out.data, "hello");
        ck_assert_int_eq(out.rd, SL_EOF);
        ck_assert_str_eq(out.srv.peer_cn, "sluice client");
    }
}
END_TEST

/* Without a certificate, or with one the server does not trust. TLS 1.2
 * fails in the handshake; TLS 1.3 finishes the client's handshake before
 * the server judges the certificate, so the refusal comes from the first
 * read -- with the same code. */
static void expect_client_cert_refused(const char *cert, const char *key)
{
    for (int v = 0; v < 2; v++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {
            .cred = &good, .require_client_cert = true, .max_version = v == 0 ? TLS1_2_VERSION : 0};
        o.cert = cert;
        o.key = key;
        struct outcome out = exchange(&o, &s, "localhost");
        if (v == 0) {
            ck_assert_msg(out.hs == SL_ETLS_CLIENT_CERT, "TLS 1.2 handshake: %s (%s)",
                          sl_err_name(out.hs), out.detail);
        } else {
            ck_assert_msg(out.hs == 0, "TLS 1.3 handshake: %s (%s)", sl_err_name(out.hs),
                          out.detail);
            ck_assert_msg(out.rd == SL_ETLS_CLIENT_CERT, "TLS 1.3 read: %s (%s)",
                          sl_err_name(out.rd), out.detail);
        }
        ck_assert(!out.srv.handshake_ok);
    }
}

START_TEST(tls_client_cert_missing)
{
    expect_client_cert_refused(NULL, NULL);
}
END_TEST

START_TEST(tls_client_cert_untrusted)
{
    /* A certificate from the server CA, which the server does not accept
     * for clients. */
    expect_client_cert_refused(good.cert_path, good.key_path);
}
END_TEST

START_TEST(tls_ctx_errors)
{
    struct sl__tls_ctx_opts o;
    struct sl__tls_ctx *ctx = (void *)1;
    char err[256];
    int rc;

    /* A key that does not belong to the certificate. */
    o = opts_trusting(&ca);
    o.cert = client.cert_path;
    o.key = stray_key.key_path;
    rc = sl__tls_ctx_new(&o, &ctx, err, sizeof(err));
    ck_assert_msg(rc == SL_ETLS_CLIENT_CERT, "%s: %s", sl_err_name(rc), err);
    ck_assert_ptr_null(ctx);
    ck_assert_ptr_nonnull(strstr(err, "key values mismatch"));

    /* An encrypted key is refused without prompting. */
    {
        char path[PATH_MAX];
        FILE *f;
        snprintf(path, sizeof(path), "%s/encrypted.key", pki_dir);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(
            PEM_write_PrivateKey(f, client.key, EVP_aes_128_cbc(), NULL, 0, NULL, (void *)"secret"),
            1);
        fclose(f);
        o.key = path;
        rc = sl__tls_ctx_new(&o, &ctx, err, sizeof(err));
        unlink(path);
        ck_assert_int_eq(rc, SL_ETLS_CLIENT_CERT);
        ck_assert_ptr_nonnull(strstr(err, "encrypted"));
    }

    /* The certificate file alone holds no key. */
    o.key = NULL;
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS_CLIENT_CERT);
    /* Missing certificate file; a key without a certificate. */
    o.cert = "/nonexistent/cert.pem";
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS_CLIENT_CERT);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/cert.pem"));
    o.cert = NULL;
    o.key = client.key_path;
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS_CLIENT_CERT);

    /* Trust anchors that cannot be used. */
    o = opts_trusting(NULL);
    o.cafile = "/nonexistent/ca.pem";
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/ca.pem"));
    o.cafile = stray_key.key_path; /* a file without certificates */
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS);
    o.cafile = NULL;
    o.capath = "/nonexistent";
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS);
    o.capath = ca.cert_path; /* not a directory */
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_ETLS);

    /* Insecure mode does not even look at them (curl -k). */
    o.insecure = true;
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
    sl__tls_ctx_free(ctx);

    /* Versions below 1.2 are refused. */
    o = opts_trusting(&ca);
    o.min_version = TLS1_1_VERSION;
    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), SL_EINVAL);
    /* The defaults are usable (system store). */
    ck_assert_int_eq(sl__tls_ctx_new(NULL, &ctx, err, sizeof(err)), 0);
    sl__tls_ctx_free(ctx);
}
END_TEST

START_TEST(tls_new_rejects_bad_arguments)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct sl__tls_ctx *ctx;
    struct sl__tls *t = (void *)1;
    char err[256], longname[300];

    ck_assert_int_eq(sl__tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
    ck_assert_int_eq(sl__tls_new(ctx, 0, "", NULL, &t), SL_EINVAL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(sl__tls_new(ctx, 0, "[]", NULL, &t), SL_EINVAL);
    ck_assert_int_eq(sl__tls_new(ctx, -1, "localhost", NULL, &t), SL_EINVAL);
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert_int_eq(sl__tls_new(ctx, 0, longname, NULL, &t), SL_EINVAL);
    sl__tls_ctx_free(ctx);
}
END_TEST

/* ---- cipher order ------------------------------------------------------------------ */

/* What the defaults must negotiate first on this machine. */
static bool expect_aes_first(void)
{
    int hw = test_cpuinfo_has_aes();

    if (hw < 0) {
        fprintf(stderr, "test_tls: /proc/cpuinfo says nothing of AES; trusting cpuid\n");
        return cpu_has_aes_gcm();
    }
    return hw == 1;
}

/* The default lists as OpenSSL parses them: first AEAD and forward secret
 * (ECDHE, or a TLS 1.3 suite), AES-128-GCM, then AES-256-GCM, then ChaCha
 * with AES instructions; ChaCha first without; then, for old TLS 1.2
 * servers only, the compatibility tail browsers send. */
START_TEST(tls_default_cipher_lists)
{
    for (int hw = 0; hw < 2; hw++) {
        enum { AES128, AES256, CHACHA };
        const char *c12, *c13;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        int runs[2][3], n[2] = {0, 0};

        default_ciphers_for(hw == 1, &c12, &c13);
        ck_assert_ptr_nonnull(ctx);
        ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, c12), 1);
        ck_assert_int_eq(SSL_CTX_set_ciphersuites(ctx, c13), 1);
        STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
        static const char *const tail[] = {
            "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
            "ECDHE-RSA-AES256-SHA",   "AES128-GCM-SHA256",    "AES256-GCM-SHA384",
            "AES128-SHA",             "AES256-SHA"};
        ck_assert_int_eq(sk_SSL_CIPHER_num(sk), 3 + 6 + (int)SL__ARRAY_SIZE(tail));
        for (int i = 3 + 6; i < sk_SSL_CIPHER_num(sk); i++)
            ck_assert_str_eq(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i)), tail[i - 9]);
        for (int i = 0; i < 3 + 6; i++) {
            const SSL_CIPHER *ci = sk_SSL_CIPHER_value(sk, i);
            const char *name = SSL_CIPHER_get_name(ci);
            int kx = SSL_CIPHER_get_kx_nid(ci), auth = SSL_CIPHER_get_auth_nid(ci);
            int v = kx == NID_kx_any ? 1 : 0; /* 1: a TLS 1.3 suite */
            int c = SSL_CIPHER_get_cipher_nid(ci);
            int rank = c == NID_aes_128_gcm ? AES128 : c == NID_aes_256_gcm ? AES256 : CHACHA;

            ck_assert_msg(SSL_CIPHER_is_aead(ci), "%s is not AEAD", name);
            ck_assert_msg(v == 1 || kx == NID_kx_ecdhe, "%s: no ECDHE", name);
            ck_assert_msg(v == 1 || auth == NID_auth_ecdsa || auth == NID_auth_rsa, "%s", name);
            ck_assert_msg(rank != CHACHA || c == NID_chacha20_poly1305, "%s: which cipher?", name);
            /* The order of the runs of one cipher, each cipher in one run. */
            if (n[v] == 0 || runs[v][n[v] - 1] != rank) {
                ck_assert_msg(n[v] < 3, "%s: a cipher comes back", name);
                runs[v][n[v]++] = rank;
            }
        }
        for (int v = 0; v < 2; v++) {
            ck_assert_int_eq(n[v], 3);
            ck_assert_int_eq(runs[v][0], hw ? AES128 : CHACHA);
            ck_assert_int_eq(runs[v][1], hw ? AES256 : AES128);
            ck_assert_int_eq(runs[v][2], hw ? CHACHA : AES256);
        }
        /* Within a cipher, ECDSA before RSA (as BoringSSL lists them). */
        ck_assert_str_eq(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, 3)),
                         hw ? "ECDHE-ECDSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-CHACHA20-POLY1305");
        SSL_CTX_free(ctx);
    }
    /* The process's choice is the one its CPU calls for. */
    {
        const char *c12, *c13, *want12, *want13;
        sl__tls_default_ciphers(&c12, &c13);
        default_ciphers_for(expect_aes_first(), &want12, &want13);
        ck_assert_str_eq(c12, want12);
        ck_assert_str_eq(c13, want13);
    }
}
END_TEST

/* Against a server that honours the client's order (OpenSSL's default, and
 * nginx's), the defaults get AES-128-GCM (on a CPU with AES instructions),
 * in TLS 1.3 and in TLS 1.2. */
START_TEST(tls_default_negotiates_aes128_gcm)
{
    bool aes = expect_aes_first();

    for (int v = 0; v < 2; v++) {
        struct sl__tls_ctx_opts o = opts_trusting(&ca);
        struct srv s = {.cred = &good, .max_version = v == 0 ? TLS1_2_VERSION : 0};
        struct outcome out = exchange(&o, &s, "localhost");
        const char *want =
            v == 0 ? (aes ? "ECDHE-ECDSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-CHACHA20-POLY1305")
                   : (aes ? "TLS_AES_128_GCM_SHA256" : "TLS_CHACHA20_POLY1305_SHA256");

        ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
        ck_assert_str_eq(out.version, v == 0 ? "TLSv1.2" : "TLSv1.3");
        ck_assert_str_eq(out.cipher, want);
        ck_assert_str_eq(out.srv.cipher, want);
        ck_assert_uint_eq(out.srv.client_tls12, 6 + 8); /* AEAD ECDHE, then the browsers' tail */
    }
}
END_TEST

START_TEST(tls_tls13_ciphers_chosen)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};

    o.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    struct outcome out = exchange(&o, &s, "localhost");
    ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert_str_eq(out.version, "TLSv1.3");
    ck_assert_str_eq(out.cipher, "TLS_CHACHA20_POLY1305_SHA256");
    ck_assert_str_eq(out.srv.cipher, "TLS_CHACHA20_POLY1305_SHA256");
}
END_TEST

/* A TLS 1.2 server, and a list of one suite that is not the defaults'
 * first: the ClientHello offers that suite alone, and it is chosen. */
START_TEST(tls_tls12_ciphers_restricted)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .max_version = TLS1_2_VERSION};

    o.ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384";
    struct outcome out = exchange(&o, &s, "localhost");
    ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert_str_eq(out.version, "TLSv1.2");
    ck_assert_str_eq(out.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384");
    ck_assert_uint_eq(out.srv.client_tls12, 1);
    ck_assert_str_eq(out.srv.client_first12, "ECDHE-ECDSA-AES256-GCM-SHA384");
}
END_TEST

/* A TLS 1.2 server that knows only CBC suites (old, but curl reaches it)
 * still gets a connection from the default list: its compatibility tail. */
START_TEST(tls_tls12_cbc_only_server)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good,
                    .max_version = TLS1_2_VERSION,
                    .ciphers = "ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA"};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == 0, "handshake: %s (%s)", sl_err_name(out.hs), out.detail);
    ck_assert_str_eq(out.version, "TLSv1.2");
    ck_assert_str_eq(out.cipher, "ECDHE-ECDSA-AES128-SHA"); /* the client's order */
    ck_assert_str_eq(out.srv.client_first12,
                     expect_aes_first() ? "ECDHE-ECDSA-AES128-GCM-SHA256"
                                        : "ECDHE-ECDSA-CHACHA20-POLY1305");
}
END_TEST

/* Lists with nothing OpenSSL can use fail the context (and the check) with
 * SL_ETLS and a detail that names and quotes the list. */
START_TEST(tls_cipher_list_errors)
{
    static const struct {
        const char *ciphers, *suites, *detail;
    } bad[] = {
        {"FOO", NULL, "TLS 1.2 cipher list \"FOO\": no cipher OpenSSL can use: error:"},
        {"TLS_AES_128_GCM_SHA256", NULL, "TLS 1.2 cipher list \"TLS_AES_128_GCM_SHA256\""},
        {"", NULL, "TLS 1.2 cipher list \"\""},
        {NULL, "BOGUS:ALSO_BOGUS", "TLS 1.3 cipher suites \"BOGUS:ALSO_BOGUS\": no suite"},
        {NULL, "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS 1.3 cipher suites"},
        {NULL, "", "TLS 1.3 cipher suites \"\""},
        {"ECDHE-ECDSA-AES128-GCM-SHA256", "NOPE", "TLS 1.3 cipher suites \"NOPE\""},
    };
    struct sl__tls_ctx_opts o;
    struct sl__tls_ctx *ctx;
    char err[256], longlist[400];

    for (size_t i = 0; i < SL__ARRAY_SIZE(bad); i++) {
        o = opts_trusting(&ca);
        o.ciphers = bad[i].ciphers;
        o.ciphersuites = bad[i].suites;
        ctx = (void *)1;
        int rc = sl__tls_ctx_new(&o, &ctx, err, sizeof(err));
        ck_assert_msg(rc == SL_ETLS, "%zu: %s", i, sl_err_name(rc));
        ck_assert_ptr_null(ctx);
        ck_assert_msg(strstr(err, bad[i].detail) != NULL, "%zu: '%s'", i, err);
        rc = sl__tls_ciphers_check(bad[i].ciphers, bad[i].suites, err, sizeof(err));
        ck_assert_int_eq(rc, SL_ETLS);
        ck_assert_msg(strstr(err, bad[i].detail) != NULL, "%zu: check: '%s'", i, err);
        ck_assert_uint_eq(ERR_peek_error(), 0); /* the queue is left clean */
    }
    /* Unknown names next to a usable one are skipped (as curl relies on). */
    ck_assert_int_eq(sl__tls_ciphers_check("FOO:ECDHE-ECDSA-AES128-GCM-SHA256",
                                           "BAR:TLS_AES_128_GCM_SHA256", err, sizeof(err)),
                     0);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(sl__tls_ciphers_check(NULL, NULL, err, sizeof(err)), 0);
    /* A long list is cut in the detail, which stays within its buffer. */
    memset(longlist, 'X', sizeof(longlist) - 1);
    longlist[sizeof(longlist) - 1] = '\0';
    ck_assert_int_eq(sl__tls_ciphers_check(longlist, NULL, err, 200), SL_ETLS);
    ck_assert_uint_lt(strlen(err), 200);
    ck_assert_ptr_nonnull(strstr(err, "XXX...\""));
}
END_TEST

/* Contexts with different lists must not share an SSL_CTX: two at once, to
 * a server that honours the client's order, each get their own suite. The
 * key holds the lists in effect, so spelling out the defaults shares. */
START_TEST(tls_ctx_cache_keyed_by_ciphers)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca), chacha = o, spelled = o;
    struct srv s = {.cred = &good, .nconns = 2};
    const char *c12, *c13;
    struct cli a, b;
    struct sl__tls_ctx *same;
    char err[256];
    int rc;

    sl__tls_ctx_cache_flush();
    chacha.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    srv_start(&s);
    cli_init(&a, &o);
    cli_init(&b, &chacha);
    ck_assert_ptr_ne(a.ctx->ssl_ctx, b.ctx->ssl_ctx);
    sl__tls_default_ciphers(&c12, &c13);
    spelled.ciphers = c12;
    spelled.ciphersuites = c13;
    ck_assert_int_eq(sl__tls_ctx_new(&spelled, &same, err, sizeof(err)), 0);
    ck_assert_ptr_eq(same->ssl_ctx, a.ctx->ssl_ctx);
    sl__tls_ctx_free(same);

    cli_connect(&a, AF_INET, s.port, "localhost", NULL);
    rc = cli_run(&a, step_handshake, 10000);
    ck_assert_msg(rc == 0, "a: %s (%s)", sl_err_name(rc), sl__tls_errdetail(a.t));
    ck_assert_str_eq(sl__tls_cipher(a.t), expect_aes_first() ? "TLS_AES_128_GCM_SHA256"
                                                             : "TLS_CHACHA20_POLY1305_SHA256");
    ck_assert_int_eq(cli_run(&a, step_read, 10000), SL_EOF);
    cli_disconnect(&a);

    cli_connect(&b, AF_INET, s.port, "localhost", NULL);
    rc = cli_run(&b, step_handshake, 10000);
    ck_assert_msg(rc == 0, "b: %s (%s)", sl_err_name(rc), sl__tls_errdetail(b.t));
    ck_assert_str_eq(sl__tls_cipher(b.t), "TLS_CHACHA20_POLY1305_SHA256");
    ck_assert_int_eq(cli_run(&b, step_read, 10000), SL_EOF);
    cli_disconnect(&b);

    srv_join(&s);
    ck_assert_str_eq(s.res[1].cipher, "TLS_CHACHA20_POLY1305_SHA256");
    cli_close(&a);
    cli_close(&b);
    sl__tls_ctx_cache_flush();
}
END_TEST

/* ---- streaming ----------------------------------------------------------------- */

START_TEST(tls_stream_8mib_echo)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_ECHO};
    const size_t len = 8 * MiB;
    unsigned char tx_digest[32], rx_digest[32];
    unsigned char *data = pattern_new(len);
    struct cli c;
    int rc;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    c.tx_base = data;
    c.tx_len = len;
    c.rng = 1;
    c.shutdown_when_sent = true;
    /* Small reads: OpenSSL decrypts a whole record and keeps the rest. */
    c.read_chunk = 1000;
    c.reads_per_step = 8;
    c.rx_check_pattern = true;
    c.rx_sha = EVP_MD_CTX_new();
    c.tx_sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c.rx_sha, EVP_sha256(), NULL);
    EVP_DigestInit_ex(c.tx_sha, EVP_sha256(), NULL);

    rc = cli_run(&c, step_echo, 60000);
    ck_assert_msg(rc == 0, "echo: %s (%s) after %llu bytes back", sl_err_name(rc),
                  sl__tls_errdetail(c.t), (unsigned long long)c.rx_total);
    ck_assert_uint_eq(c.tx_off, len);
    ck_assert_uint_eq(c.rx_total, len);
    ck_assert_uint_gt(c.pending_seen, 0); /* the loop was told not to wait */
    EVP_DigestFinal_ex(c.tx_sha, tx_digest, NULL);
    EVP_DigestFinal_ex(c.rx_sha, rx_digest, NULL);
    ck_assert_mem_eq(tx_digest, rx_digest, 32);
    cli_disconnect(&c);
    srv_join(&s);
    ck_assert_uint_eq(s.res[0].received, len);
    ck_assert_mem_eq(s.res[0].sha, tx_digest, 32);
    ck_assert_uint_ge(s.res[0].key_updates, 7); /* answered inside our reads and writes */
    cli_close(&c);
    free(data);
}
END_TEST

START_TEST(tls_dripped_handshake)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good};
    struct drip d = {0};
    struct cli c;
    int rc;

    srv_start(&s);
    drip_start(&d, s.port);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, d.port, "localhost", NULL);
    rc = cli_run(&c, step_handshake, 20000);
    ck_assert_msg(rc == 0, "handshake: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
    /* Hundreds of partial records: each byte woke the loop and OpenSSL asked
     * for more, never waiting inside. */
    ck_assert_uint_gt(c.eagains, 100);
    ck_assert_uint_lt(c.max_step_ns, 200u * 1000000u);
    ck_assert_int_eq(cli_run(&c, step_read, 20000), SL_EOF);
    ck_assert_str_eq(c.small, "hello");
    cli_disconnect(&c);
    drip_join(&d);
    srv_join(&s);
    ck_assert_uint_gt(d.forwarded, 500);
    cli_close(&c);
}
END_TEST

START_TEST(tls_silent_server_waits_without_spinning)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.mode = SRV_SILENT};
    struct cli c;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 300), SL_ETIMEDOUT);
    ck_assert(c.timed_out);
    ck_assert_uint_eq(c.steps, 1); /* the ClientHello went out; no wake-up since */
    ck_assert_uint_eq(sl__tls_wants(c.t), SL_EV_READ);
    ck_assert_uint_lt(c.max_step_ns, 100u * 1000000u);
    ck_assert(!sl__tls_has_pending(c.t));
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

static int step_read_record(struct cli *c)
{
    int rc;

    c->app_wants = SL_EV_READ;
    rc = read_some(c);
    return rc == SL_EAGAIN && c->rx_total == RECORD_BYTES ? 0 : rc;
}

START_TEST(tls_has_pending_drives_the_loop)
{
    /* One record, then silence: after the first small read the rest of the
     * plaintext sits inside OpenSSL and the socket is empty, so only
     * sl__tls_has_pending() can tell the loop not to wait. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_RECORD};
    struct cli c;
    char buf[100];
    size_t n = 0;
    int rc;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    ck_assert(wait_readable(c.fd, 10000));
    do
        rc = sl__tls_read(c.t, buf, sizeof(buf), &n); /* tickets first, then data */
    while (rc == SL_EAGAIN && wait_readable(c.fd, 10000));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(n, sizeof(buf));
    ck_assert(sl__tls_has_pending(c.t));
    ck_assert(!wait_readable(c.fd, 50)); /* the fd says nothing */
    c.rx_total = n;
    c.rx_check_pattern = true;
    c.read_chunk = 100;
    c.reads_per_step = 1;
    rc = cli_run(&c, step_read_record, 2000);
    ck_assert_msg(rc == 0, "read: %s after %llu bytes", sl_err_name(rc),
                  (unsigned long long)c.rx_total);
    ck_assert_uint_ge(c.pending_seen, RECORD_BYTES / 100 - 2);
    ck_assert(!sl__tls_has_pending(c.t));
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

START_TEST(tls_reset_is_an_os_error_without_sigpipe)
{
    /* SIGPIPE keeps its default action in this thread: a write to the reset
     * socket without MSG_NOSIGNAL would kill the test. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_RESET, .nconns = 2};
    struct iovec iov = {.iov_base = "GET / HTTP/1.1\r\n\r\n", .iov_len = 18};
    struct cli c;
    size_t n = 0;
    int rc;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    ck_assert(wait_readable(c.fd, 10000)); /* tickets, then the reset */
    usleep(20000);
    /* Take the pending ECONNRESET off the socket (as a loop asking SO_ERROR
     * would): the next send() then fails with EPIPE, which is the case that
     * raises SIGPIPE. */
    int soerr = 0;
    socklen_t slen = sizeof(soerr);
    ck_assert_int_eq(getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &soerr, &slen), 0);
    ck_assert_int_eq(soerr, ECONNRESET);
    rc = sl__tls_writev(c.t, &iov, 1, &n);
    ck_assert_msg(rc == SL_EPIPE, "write: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
    ck_assert_int_eq(sl__tls_writev(c.t, &iov, 1, &n), rc); /* sticky */
    ck_assert_int_eq(sl__tls_shutdown(c.t), 0);             /* nothing to do after an error */
    cli_disconnect(&c);

    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    rc = cli_run(&c, step_read, 10000);
    ck_assert_msg(rc == SL_ECONNRESET, "read: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

START_TEST(tls_plaintext_server)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.mode = SRV_PLAIN};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_msg(out.hs == SL_ETLS_HANDSHAKE, "handshake: %s (%s)", sl_err_name(out.hs),
                  out.detail);
    ck_assert_ptr_nonnull(strstr(out.detail, "does not seem to speak TLS"));
    ck_assert_ptr_nonnull(strstr(out.detail, "wrong version number"));
}
END_TEST

START_TEST(tls_truncated_without_close_notify)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_TRUNCATE};
    struct outcome out = exchange(&o, &s, "localhost");

    ck_assert_int_eq(out.hs, 0);
    ck_assert_str_eq(out.data, "partial");
    ck_assert_msg(out.rd == SL_ETRUNCATED, "read: %s (%s)", sl_err_name(out.rd), out.detail);
    ck_assert_ptr_nonnull(strstr(out.detail, "unexpected eof"));
}
END_TEST

START_TEST(tls_close_notify_is_eof)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_HELLO};
    struct cli c;
    char buf[16];
    size_t n = 1;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_read, 10000), SL_EOF);
    ck_assert_str_eq(c.small, "hello");
    /* EOF is not an error: it stays EOF, and close_notify can still be sent. */
    ck_assert_int_eq(sl__tls_read(c.t, buf, sizeof(buf), &n), SL_EOF);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(sl__tls_shutdown(c.t), 0);
    ck_assert_str_eq(sl__tls_errdetail(c.t), "");
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

/* Handshake with a HOLD server, then fill the socket until a write blocks. */
static void fill_until_blocked(struct cli *c, struct srv *s, unsigned char *data, size_t len)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    int rc;

    s->cred = &good;
    s->mode = SRV_HOLD;
    srv_start(s);
    cli_init(c, &o);
    cli_connect(c, AF_INET, s->port, "localhost", NULL);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &(int){64 * 1024}, sizeof(int));
    ck_assert_int_eq(cli_run(c, step_handshake, 10000), 0);
    /* Take the session tickets now, or they would sit unread. */
    c->reads_per_step = 1;
    ck_assert_int_eq(cli_run(c, step_read, 200), SL_ETIMEDOUT);
    c->tx_base = data;
    c->tx_len = len;
    c->rng = 7;
    rc = cli_run(c, step_fill, 10000);
    ck_assert_msg(rc == 0, "fill: %s", sl_err_name(rc));
    /* The first EAGAIN is not the end: the peer acknowledges what it got
     * up to 40 ms later (delayed ACK), which frees socket space, and data
     * in flight may still open its window. Fill until two pauses longer
     * than that change nothing (neither accepted bytes nor the queue of
     * ciphertext): then the peer's buffer is full and stays full. */
    for (int round = 0, still = 0; round < 100 && still < 2; round++) {
        size_t before = c->tx_off, queued = c->t->out_len - c->t->out_off;
        usleep(60000);
        rc = cli_run(c, step_fill, 10000);
        ck_assert_msg(rc == 0, "fill: %s", sl_err_name(rc));
        still = c->tx_off == before && c->t->out_len - c->t->out_off == queued ? still + 1 : 0;
    }
    ck_assert_uint_gt(c->tx_off, 0);
    ck_assert_uint_lt(c->tx_off, len);
    ck_assert(sl__tls_wants(c->t) & SL_EV_WRITE);
    /* White box: the accepted bytes the socket did not take are queued,
     * about one record of them. */
    ck_assert_uint_gt(c->t->out_len - c->t->out_off, 0);
    ck_assert_uint_le(c->t->out_len - c->t->out_off, RECORD_MAX + 256);
}

START_TEST(tls_shutdown_never_blocks)
{
    const size_t len = 8 * MiB;
    unsigned char *data = pattern_new(len);
    unsigned char digest[32];
    struct srv s = {0};
    struct cli c;
    uint64_t t0;
    int rc;

    fill_until_blocked(&c, &s, data, len);
    /* The peer reads nothing: the close_notify cannot go out. */
    t0 = now_ns();
    rc = sl__tls_shutdown(c.t);
    ck_assert_msg(rc == SL_EAGAIN, "shutdown: %s", sl_err_name(rc));
    ck_assert_uint_eq(sl__tls_wants(c.t) & SL_EV_WRITE, SL_EV_WRITE);
    ck_assert_int_eq(sl__tls_shutdown(c.t), SL_EAGAIN);
    ck_assert_uint_lt(now_ns() - t0, 50u * 1000000u);

    /* Once the peer reads, further calls flush: every accepted byte, then
     * the close_notify, which ends the server's reading cleanly. */
    srv_release(&s);
    rc = cli_run(&c, step_shutdown, 20000);
    ck_assert_msg(rc == 0, "shutdown: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
    ck_assert_uint_eq(sl__tls_wants(c.t) & SL_EV_WRITE, 0);
    ck_assert_ptr_null(c.t->out); /* the queue's memory is gone */
    shutdown(c.fd, SHUT_WR);
    srv_join(&s);
    ck_assert_uint_eq(s.res[0].received, c.tx_off);
    EVP_Digest(data, c.tx_off, digest, NULL, EVP_sha256(), NULL);
    ck_assert_mem_eq(s.res[0].sha, digest, 32);
    ck_assert(s.res[0].clean_end);
    cli_disconnect(&c);
    cli_close(&c);
    free(data);
}
END_TEST

/* Read only (the server sends nothing) until the queue has drained. */
static int step_read_until_drained(struct cli *c)
{
    int rc;

    c->app_wants = SL_EV_READ;
    rc = read_some(c);
    if (rc == SL_EAGAIN && (sl__tls_wants(c->t) & SL_EV_WRITE) == 0)
        return 0;
    return rc;
}

START_TEST(tls_read_flushes_the_queue)
{
    /* An owner that stops writing but keeps reading still gets the queued
     * ciphertext out: every call flushes, and the wants say when. */
    const size_t len = 8 * MiB;
    unsigned char *data = pattern_new(len);
    unsigned char digest[32];
    struct srv s = {0};
    struct cli c;
    int rc;

    fill_until_blocked(&c, &s, data, len);
    srv_release(&s);
    rc = cli_run(&c, step_read_until_drained, 20000);
    ck_assert_msg(rc == 0, "read: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
    ck_assert_ptr_null(c.t->out);
    shutdown(c.fd, SHUT_WR);
    srv_join(&s);
    ck_assert_uint_eq(s.res[0].received, c.tx_off);
    EVP_Digest(data, c.tx_off, digest, NULL, EVP_sha256(), NULL);
    ck_assert_mem_eq(s.res[0].sha, digest, 32);
    cli_disconnect(&c);
    cli_close(&c);
    free(data);
}
END_TEST

START_TEST(tls_write_after_eagain_offers_anything)
{
    /* After SL_EAGAIN nothing was accepted, so the caller may offer other
     * bytes, from another address, split otherwise: the server receives
     * exactly the accepted bytes, in order. */
    const size_t len = 8 * MiB;
    unsigned char *data = pattern_new(len);
    unsigned char digest[32];
    struct srv s = {0};
    struct cli c;
    unsigned char *moved, other[100];
    struct iovec iov = {.iov_base = other, .iov_len = sizeof(other)};
    size_t n = 99, rest, extra = 0;
    int rc;

    fill_until_blocked(&c, &s, data, len);
    c.tx_sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c.tx_sha, EVP_sha256(), NULL);
    EVP_DigestUpdate(c.tx_sha, data, c.tx_off);

    memset(other, '!', sizeof(other));
    /* The peer may still free room (a late ACK, a window reopened by
     * its kernel): then `other` is simply written and becomes part of
     * the stream; fill again and retry until the write meets a full
     * socket, which is the case under test. */
    for (int tries = 0;; tries++) {
        n = 99;
        rc = sl__tls_writev(c.t, &iov, 1, &n);
        if (rc == SL_EAGAIN)
            break;
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_gt(n, 0);
        ck_assert_msg(tries < 20, "the socket never stayed full");
        EVP_DigestUpdate(c.tx_sha, other, n);
        extra += n;
        ck_assert_int_eq(cli_run(&c, step_fill, 10000), 0);
    }
    ck_assert_uint_eq(n, 0);

    rest = len - c.tx_off;
    moved = malloc(rest);
    ck_assert_ptr_nonnull(moved);
    memcpy(moved, data + c.tx_off, rest);
    memset(data + c.tx_off, 0, rest); /* the old bytes are gone */
    c.tx_base = moved;
    c.tx_base_off = c.tx_off;
    c.rng = 12345;
    srv_release(&s);
    rc = cli_run(&c, step_send_all, 60000);
    if (rc != 0) {
        srv_join(&s);
        ck_abort_msg("send: %s (%s) at %llu; server: %s after %llu", sl_err_name(rc),
                     sl__tls_errdetail(c.t), (unsigned long long)c.tx_off, s.res[0].error,
                     (unsigned long long)s.res[0].received);
    }
    ck_assert_uint_eq(c.tx_off, len);
    ck_assert_ptr_null(c.t->out);
    EVP_DigestFinal_ex(c.tx_sha, digest, NULL);
    shutdown(c.fd, SHUT_WR);
    srv_join(&s); /* the server reads to the end before we close */
    ck_assert_uint_eq(s.res[0].received, len + extra);
    ck_assert_mem_eq(s.res[0].sha, digest, 32);
    ck_assert(s.res[0].clean_end);
    cli_close(&c);
    free(moved);
    free(data);
}
END_TEST

START_TEST(tls_writev_gathers_small_pieces)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_HOLD};
    unsigned char digest[32];
    char pieces[5][8] = {"GET ", "/ ", "HTTP/1.1", "\r\n", ""};
    struct iovec iov[5];
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    struct cli c;
    size_t n = 0, total = 0;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    EVP_DigestInit_ex(sha, EVP_sha256(), NULL);
    for (int i = 0; i < 5; i++) {
        iov[i].iov_base = pieces[i];
        iov[i].iov_len = strlen(pieces[i]); /* the last one is empty */
        EVP_DigestUpdate(sha, pieces[i], iov[i].iov_len);
        total += iov[i].iov_len;
    }
    EVP_DigestFinal_ex(sha, digest, NULL);
    EVP_MD_CTX_free(sha);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    ck_assert_int_eq(sl__tls_writev(c.t, iov, 5, &n), 0);
    ck_assert_uint_eq(n, total);
    ck_assert_int_eq(sl__tls_writev(c.t, iov, 0, &n), 0); /* nothing to write */
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(sl__tls_shutdown(c.t), 0);
    ck_assert_uint_eq(sl__tls_wants(c.t), 0);
    srv_release(&s);
    shutdown(c.fd, SHUT_WR);
    srv_join(&s);
    ck_assert_uint_eq(s.res[0].received, total);
    ck_assert_mem_eq(s.res[0].sha, digest, 32);
    ck_assert_uint_eq(s.res[0].reads, 1); /* one record, not four */
    /* Writing after close_notify is an error. */
    ck_assert_int_ne(sl__tls_writev(c.t, iov, 1, &n), 0);
    cli_close(&c);
}
END_TEST

/* Read until `want` plaintext bytes have arrived (into c->small). */
static void read_exactly(struct cli *c, size_t want)
{
    while (c->nsmall < want) {
        char buf[64];
        size_t n = 0;
        int rc = sl__tls_read(c->t, buf, SL__MIN(sizeof(buf), want - c->nsmall), &n);
        if (rc == SL_EAGAIN) {
            ck_assert(wait_readable(c->fd, 10000));
            continue;
        }
        ck_assert_msg(rc == 0, "read: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c->t));
        memcpy(c->small + c->nsmall, buf, n);
        c->nsmall += n;
        c->small[c->nsmall] = '\0';
    }
}

START_TEST(tls_key_updates_while_a_write_is_blocked)
{
    /* OpenSSL answers a peer's KeyUpdate from inside SSL_read(). In OpenSSL
     * 3.0, if an application record were still half-written inside OpenSSL
     * at that moment, the answer would fail the connection with
     * SSL_R_BAD_LENGTH (seen in the 8 MiB echo about one run in 50 before
     * the BIO queued ciphertext itself). Here the socket is made to look
     * full during a write, then KeyUpdates are read: they must be answered
     * behind the queued record, and the stream must stay intact. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_KEYUPDATE};
    const size_t big = 3 * RECORD_MAX;
    unsigned char *data = pattern_new(big + 1), digest[32];
    struct iovec iov;
    struct cli c;
    size_t n = 0, sent = 0;
    int rc;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    read_exactly(&c, 1); /* the first KeyUpdate, then "x" */
    ck_assert_str_eq(c.small, "x");
    iov.iov_base = data;
    iov.iov_len = 1;
    ck_assert_int_eq(sl__tls_writev(c.t, &iov, 1, &n), 0); /* carries the answer */
    ck_assert_uint_eq(n, 1);
    sent = 1;

    send_eagain = 1; /* the next record finds the socket full */
    iov.iov_base = data + sent;
    iov.iov_len = big;
    ck_assert_int_eq(sl__tls_writev(c.t, &iov, 1, &n), 0);
    ck_assert_uint_eq(n, RECORD_MAX); /* accepted, queued, and no more */
    sent += n;
    ck_assert_uint_eq(sl__tls_wants(c.t) & SL_EV_WRITE, SL_EV_WRITE);

    srv_release(&s);
    send_eagain = 1000000; /* nothing leaves while the KeyUpdates are read */
    read_exactly(&c, 3);
    send_eagain = 0;
    ck_assert_str_eq(c.small, "xyz");

    iov.iov_base = data + sent;
    iov.iov_len = big + 1 - sent;
    while (iov.iov_len > 0) {
        rc = sl__tls_writev(c.t, &iov, 1, &n);
        if (rc == SL_EAGAIN)
            continue;
        ck_assert_msg(rc == 0, "write: %s (%s)", sl_err_name(rc), sl__tls_errdetail(c.t));
        iov.iov_base = (char *)iov.iov_base + n;
        iov.iov_len -= n;
    }
    while ((rc = sl__tls_shutdown(c.t)) == SL_EAGAIN)
        ;
    ck_assert_int_eq(rc, 0);
    shutdown(c.fd, SHUT_WR);
    srv_join(&s);
    EVP_Digest(data, big + 1, digest, NULL, EVP_sha256(), NULL);
    ck_assert_uint_eq(s.res[0].received, big + 1);
    ck_assert_mem_eq(s.res[0].sha, digest, 32);
    ck_assert(s.res[0].clean_end);
    cli_disconnect(&c);
    cli_close(&c);
    free(data);
}
END_TEST

/* Contexts with the same options share one SSL_CTX (white box: the
 * pointers); each keeps its own session cache. */
START_TEST(tls_ctx_shared_by_identical_options)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca), o2;
    struct sl__tls_ctx *a, *b, *x;
    char err[256], path[PATH_MAX], cmd[2 * PATH_MAX + 16];
    SSL_CTX *kept;

    sl__tls_ctx_cache_flush();
    ck_assert_int_eq(sl__tls_ctx_new(&o, &a, err, sizeof(err)), 0);
    ck_assert_int_eq(sl__tls_ctx_new(&o, &b, err, sizeof(err)), 0);
    ck_assert_ptr_eq(a->ssl_ctx, b->ssl_ctx);
    ck_assert_ptr_ne(&a->sessions, &b->sessions);
    ck_assert_uint_eq(a->shared->refs, 2);

    /* Any option that OpenSSL sees makes another one. */
    for (int i = 0; i < 6; i++) {
        o2 = o;
        if (i == 0)
            o2.min_version = SL__TLS_VERSION_1_3;
        else if (i == 1)
            o2.insecure = true;
        else if (i == 2)
            o2.session_cache = false;
        else if (i == 3)
            o2.ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384";
        else if (i == 4)
            o2.ciphersuites = "TLS_AES_256_GCM_SHA384";
        else
            o2.cafile = good.cert_path;
        ck_assert_int_eq(sl__tls_ctx_new(&o2, &x, err, sizeof(err)), 0);
        ck_assert_msg(x->ssl_ctx != a->ssl_ctx, "variant %d shares the context", i);
        sl__tls_ctx_free(x);
    }

    /* The last user gone, it stays for the next client with those options
     * (the extra reference keeps its address from being reused). */
    kept = a->ssl_ctx;
    SSL_CTX_up_ref(kept);
    sl__tls_ctx_free(a);
    sl__tls_ctx_free(b);
    ck_assert_int_eq(sl__tls_ctx_new(&o, &a, err, sizeof(err)), 0);
    ck_assert_ptr_eq(a->ssl_ctx, kept);
    sl__tls_ctx_free(a);
    /* ... until the cache is flushed. */
    sl__tls_ctx_cache_flush();
    ck_assert_int_eq(sl__tls_ctx_new(&o, &a, err, sizeof(err)), 0);
    ck_assert_ptr_ne(a->ssl_ctx, kept);
    sl__tls_ctx_free(a);
    SSL_CTX_free(kept);

    /* A CA file changed on disk (a bundle update) is loaded again. */
    snprintf(path, sizeof(path), "%s/ca-copy.pem", pki_dir);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", ca.cert_path, path);
    ck_assert_int_eq(system(cmd), 0);
    o2 = o;
    o2.cafile = path;
    ck_assert_int_eq(sl__tls_ctx_new(&o2, &a, err, sizeof(err)), 0);
    ck_assert_int_eq(
        utimensat(AT_FDCWD, path, (struct timespec[]){{.tv_sec = 1}, {.tv_sec = 1}}, 0), 0);
    ck_assert_int_eq(sl__tls_ctx_new(&o2, &b, err, sizeof(err)), 0);
    ck_assert_ptr_ne(a->ssl_ctx, b->ssl_ctx);
    sl__tls_ctx_free(a);
    sl__tls_ctx_free(b);
    unlink(path);
    sl__tls_ctx_cache_flush();
}
END_TEST

/* The cache holds at most SHARED_IDLE_MAX unused contexts. */
START_TEST(tls_ctx_cache_is_bounded)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct sl__tls_ctx *x;
    char err[256];
    unsigned n = 0;

    sl__tls_ctx_cache_flush();
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 2; i++) {
            for (int sc = 0; sc < 2; sc++) {
                o.min_version = v ? SL__TLS_VERSION_1_3 : SL__TLS_VERSION_1_2;
                o.insecure = i;
                o.session_cache = sc;
                ck_assert_int_eq(sl__tls_ctx_new(&o, &x, err, sizeof(err)), 0);
                sl__tls_ctx_free(x);
            }
        }
    }
    pthread_mutex_lock(&shared_lock);
    for (struct sl__queue *q = shared_list.next; q != &shared_list; q = q->next)
        n++;
    ck_assert_uint_eq(shared_idle, n);
    pthread_mutex_unlock(&shared_lock);
    ck_assert_uint_eq(n, SHARED_IDLE_MAX);
    sl__tls_ctx_cache_flush();
}
END_TEST

struct ctx_churn {
    int min_version;
    int failures;
};

static void *ctx_churn_thread(void *arg)
{
    struct ctx_churn *cc = arg;
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct sl__tls_ctx *x[3];
    char err[256];

    o.min_version = cc->min_version;
    for (int i = 0; i < 200; i++) {
        for (int k = 0; k < 3; k++)
            if (sl__tls_ctx_new(&o, &x[k], err, sizeof(err)) != 0)
                cc->failures++, x[k] = NULL;
        if (i % 50 == 0)
            sl__tls_ctx_cache_flush();
        for (int k = 0; k < 3; k++)
            sl__tls_ctx_free(x[k]);
    }
    return NULL;
}

/* Clients on different loops (threads) create and free contexts with the
 * same and with different options at once (run under ASan/TSan to mean
 * much). */
START_TEST(tls_ctx_cache_threads)
{
    pthread_t th[4];
    struct ctx_churn cc[4];

    for (int i = 0; i < 4; i++) {
        cc[i] = (struct ctx_churn){.min_version = i % 2 ? SL__TLS_VERSION_1_3 : 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, ctx_churn_thread, &cc[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(cc[i].failures, 0);
    }
    pthread_mutex_lock(&shared_lock);
    for (struct sl__queue *q = shared_list.next; q != &shared_list; q = q->next)
        ck_assert_uint_eq(sl__queue_data(q, struct shared_ctx, node)->refs, 0);
    pthread_mutex_unlock(&shared_lock);
    sl__tls_ctx_cache_flush();
}
END_TEST

/* "hello" and close_notify arrive together, and read-ahead takes both in
 * one recv(): the bytes come first, sl__tls_has_pending() brings the owner
 * back although the fd may say nothing more, and the next read is SL_EOF. */
START_TEST(tls_read_keeps_eof_behind_bytes)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_HELLO};
    struct cli c;
    char buf[64];
    size_t n = 0;
    int rc;

    o.min_version = SL__TLS_VERSION_1_3;
    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    ck_assert(wait_peer_fin(c.fd, 10000)); /* all the server sends is in our socket */
    do
        rc = sl__tls_read(c.t, buf, sizeof(buf), &n); /* tickets, hello, close_notify */
    while (rc == SL_EAGAIN && wait_readable(c.fd, 10000));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(buf, "hello", 5);
    ck_assert(sl__tls_has_pending(c.t));
    ck_assert_int_eq(sl__tls_read(c.t, buf, sizeof(buf), &n), SL_EOF);
    ck_assert(!sl__tls_has_pending(c.t));
    ck_assert_int_eq(sl__tls_read(c.t, buf, sizeof(buf), &n), SL_EOF);
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

/* A read fills the caller's buffer with several records, not one record
 * per call: once full records come, it goes on reading the socket. */
START_TEST(tls_read_takes_several_records)
{
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_BULK};
    struct cli c;
    static char buf[4 * RECORD_MAX];
    size_t n = 0, max = 0;
    int rc;

    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    ck_assert(wait_peer_fin(c.fd, 10000));
    for (;;) {
        rc = sl__tls_read(c.t, buf, sizeof(buf), &n);
        if (rc == SL_EAGAIN && wait_readable(c.fd, 2000))
            continue;
        if (rc != 0)
            break;
        ck_assert_uint_le(c.rx_total + n, BULK_BYTES);
        for (size_t j = 0; j < n; j++)
            if ((unsigned char)buf[j] != pattern_at(c.rx_total + j))
                ck_abort_msg("byte %llu differs", (unsigned long long)(c.rx_total + j));
        c.rx_total += n;
        max = SL__MAX(max, n);
    }
    ck_assert_int_eq(rc, SL_EOF);
    ck_assert_uint_eq(c.rx_total, BULK_BYTES);
    /* Everything was in the socket (the peer's FIN came): all four records
     * in the first call (read-ahead alone gave one and a part). */
    ck_assert_uint_eq(max, BULK_BYTES);
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

/* Ping-pong: write the next `tx_len - tx_off` bytes, then read until as
 * many came back (SRV_ECHO). */
static int step_ping(struct cli *c)
{
    int rc = write_some(c);

    if (rc < 0 && rc != SL_EAGAIN)
        return rc;
    c->app_wants = SL_EV_READ | (c->tx_off < c->tx_len ? SL_EV_WRITE : 0);
    rc = read_some(c);
    if (rc == SL_EAGAIN && c->tx_off == c->tx_len && c->rx_total == c->tx_len)
        return 0;
    return rc;
}

START_TEST(tls_record_buffers_kept_while_in_use)
{
    /* Small exchanges on a connection in use reuse OpenSSL's two record
     * buffers; freeing and allocating them per record was ~15% of the
     * instructions of a keep-alive request. sl__tls_idle() then frees them. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_ECHO};
    unsigned char *data = pattern_new(64 * 200);
    struct cli c;
    long big_before, live_busy, live_idle;
    int rc;

    if (!mem_hooked) {
        free(data);
        return;
    }
    srv_start(&s);
    cli_init(&c, &o);
    cli_connect(&c, AF_INET, s.port, "localhost", NULL);
    c.tx_base = data;
    c.rng = 1;
    c.rx_check_pattern = true;
    mem_counting = true; /* the buffers are made during the handshake */
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    for (int i = 0; i < 200; i++) {
        if (i == 2)
            big_before = __atomic_load_n(&mem_big, __ATOMIC_RELAXED);
        c.tx_len += 64;
        rc = cli_run(&c, step_ping, 10000);
        ck_assert_msg(rc == 0, "exchange %d: %s", i, sl_err_name(rc));
    }
    live_busy = __atomic_load_n(&mem_live, __ATOMIC_RELAXED);
    /* Exchanges 2..199 allocated no record buffer (before: two each). */
    ck_assert_int_eq(__atomic_load_n(&mem_big, __ATOMIC_RELAXED) - big_before, 0);
    sl__tls_idle(c.t);
    live_idle = __atomic_load_n(&mem_live, __ATOMIC_RELAXED);
    mem_counting = false;
    ck_assert_int_ge(live_busy - live_idle, 2 * 16384); /* both buffers released */
    ck_assert_uint_eq(c.rx_total, 64 * 200);
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
    free(data);
}
END_TEST

START_TEST(tls_idle_connection_memory)
{
    /* What one idle connection costs once the handshake is done and the
     * tickets are read: OpenSSL's allocations made on this thread for it,
     * plus our struct. sl__tls_idle() frees the record buffers. */
    struct sl__tls_ctx_opts o = opts_trusting(&ca);
    struct srv s = {.cred = &good, .mode = SRV_HOLD};
    struct cli c;
    long before, idle;

    if (!mem_hooked)
        return;
    o.session_cache = false; /* count the connection, not the shared cache */
    srv_start(&s);
    cli_init(&c, &o);
    c.fd = connect_to(AF_INET, s.port, true);
    ck_assert_int_ge(c.fd, 0);
    ck_assert_int_eq(sl_io_init(&c.loop, &c.io, c.fd, cli_io_cb), 0);
    c.io_ready = true;
    before = __atomic_load_n(&mem_live, __ATOMIC_RELAXED);
    mem_counting = true;
    ck_assert_int_eq(sl__tls_new(c.ctx, c.fd, "localhost", NULL, &c.t), 0);
    ck_assert_int_eq(cli_run(&c, step_handshake, 10000), 0);
    c.reads_per_step = 1;
    ck_assert_int_eq(cli_run(&c, step_read, 200), SL_ETIMEDOUT);
    sl__tls_idle(c.t); /* what a pooled connection gets */
    mem_counting = false;
    idle = __atomic_load_n(&mem_live, __ATOMIC_RELAXED) - before + (long)sizeof(struct sl__tls);
    fprintf(stderr, "tls_idle_connection_memory: %ld bytes per idle TLS 1.3 connection\n", idle);
    ck_assert_int_gt(idle, 1000);
    ck_assert_int_lt(idle, 48 * 1024);
    srv_release(&s);
    cli_disconnect(&c);
    srv_join(&s);
    cli_close(&c);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls_openssl");
    TCase *tc = tcase_create("verify");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tls_good_cert_verifies);
    tcase_add_test(tc, tls_unknown_ca);
    tcase_add_test(tc, tls_wrong_host);
    tcase_add_test(tc, tls_expired);
    tcase_add_test(tc, tls_not_yet_valid);
    tcase_add_test(tc, tls_self_signed);
    tcase_add_test(tc, tls_cafile_replaces_system_store);
    tcase_add_test(tc, tls_system_bundle_decoded_on_demand);
    tcase_add_test(tc, tls_insecure_accepts_all);
    tcase_add_test(tc, tls_ip_literal_verifies_ip_san_without_sni);
    tcase_add_test(tc, tls_ipv6_literal);
    tcase_add_test(tc, tls_hostname_sends_sni);
    suite_add_tcase(s, tc);

    tc = tcase_create("sessions");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tls_resume_tls13);
    tcase_add_test(tc, tls_resume_tls12);
    tcase_add_test(tc, tls_resume_after_unclean_close);
    tcase_add_test(tc, tls_fatal_error_forgets_session);
    tcase_add_test(tc, tls_session_cache_is_bounded);
    tcase_add_test(tc, tls_session_cache_off);
    tcase_add_test(tc, tls_version_tls11_server);
    tcase_add_test(tc, tls_version_min13_against_tls12_server);
    tcase_add_test(tc, tls_client_cert_accepted);
    tcase_add_test(tc, tls_client_cert_missing);
    tcase_add_test(tc, tls_client_cert_untrusted);
    tcase_add_test(tc, tls_ctx_errors);
    tcase_add_test(tc, tls_ctx_shared_by_identical_options);
    tcase_add_test(tc, tls_ctx_cache_is_bounded);
    tcase_add_test(tc, tls_ctx_cache_threads);
    tcase_add_test(tc, tls_new_rejects_bad_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("ciphers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tls_default_cipher_lists);
    tcase_add_test(tc, tls_default_negotiates_aes128_gcm);
    tcase_add_test(tc, tls_tls13_ciphers_chosen);
    tcase_add_test(tc, tls_tls12_ciphers_restricted);
    tcase_add_test(tc, tls_tls12_cbc_only_server);
    tcase_add_test(tc, tls_cipher_list_errors);
    tcase_add_test(tc, tls_ctx_cache_keyed_by_ciphers);
    suite_add_tcase(s, tc);

    tc = tcase_create("io");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tls_stream_8mib_echo);
    tcase_add_test(tc, tls_dripped_handshake);
    tcase_add_test(tc, tls_silent_server_waits_without_spinning);
    tcase_add_test(tc, tls_has_pending_drives_the_loop);
    tcase_add_test(tc, tls_reset_is_an_os_error_without_sigpipe);
    tcase_add_test(tc, tls_plaintext_server);
    tcase_add_test(tc, tls_truncated_without_close_notify);
    tcase_add_test(tc, tls_close_notify_is_eof);
    tcase_add_test(tc, tls_read_keeps_eof_behind_bytes);
    tcase_add_test(tc, tls_read_takes_several_records);
    tcase_add_test(tc, tls_shutdown_never_blocks);
    tcase_add_test(tc, tls_write_after_eagain_offers_anything);
    tcase_add_test(tc, tls_read_flushes_the_queue);
    tcase_add_test(tc, tls_writev_gathers_small_pieces);
    tcase_add_test(tc, tls_key_updates_while_a_write_is_blocked);
    tcase_add_test(tc, tls_idle_connection_memory);
    tcase_add_test(tc, tls_record_buffers_kept_while_in_use);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* Before OpenSSL allocates anything. */
    mem_hooked = CRYPTO_set_mem_functions(mem_malloc, mem_realloc, mem_free) == 1;
    if (!mem_hooked)
        fprintf(stderr, "CRYPTO_set_mem_functions refused: memory is not counted\n");
    pki_build();
    sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    pki_remove();
    return failed == 0 ? 0 : 1;
}
