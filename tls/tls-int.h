/*
 * tls-int.h -- the TLS transform: a client-side TLS session on a connected,
 * non-blocking socket, seen as bytes in and out plus "wants read/write" bits.
 *
 * The module knows sockets and certificates, nothing of HTTP. It never
 * blocks and never polls: every call does what the socket allows right now
 * and returns SL_EAGAIN otherwise; sl__tls_wants() then says which readiness
 * the pending operation needs, and the owner watches the fd for the union of
 * that and its own interest (redis updateSSLEvent). Plaintext OpenSSL has
 * already decrypted is invisible to the fd: while sl__tls_has_pending() is
 * true the owner must read again without waiting for readiness.
 *
 * Threads: a context and every session made from it belong to one thread
 * (the loop thread); contexts on different threads may share OpenSSL state
 * underneath (see sl__tls_ctx_cache_flush). OpenSSL's per-thread error queue is cleared before each
 * OpenSSL call, so other users of OpenSSL in the process are not disturbed.
 *
 * Errors: the SL_E* codes of sluice.h. OpenSSL's codes and verify results
 * are translated here, once; the human detail (the X.509 verify text or the
 * first queued OpenSSL error) is kept for sl__tls_errdetail().
 */
#ifndef SLUICE_TLS_INT_H
#define SLUICE_TLS_INT_H

#include "sluice.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* Protocol versions as on the wire; equal to OpenSSL's TLS1_2_VERSION and
 * TLS1_3_VERSION (tls_openssl.c checks this at compile time). */
#define SL__TLS_VERSION_1_2 0x0303
#define SL__TLS_VERSION_1_3 0x0304

/* Most sessions the context remembers for resumption; the least recently
 * stored one is dropped first. */
#define SL__TLS_SESSION_CACHE_MAX 256

struct sl__tls_ctx_opts {
    /* Trust anchors. Both NULL: the system store only
     * (SSL_CTX_set_default_verify_paths). If either is set they are used
     * INSTEAD of the system store, as curl's --cacert/--capath do: a test
     * CA then does not also trust the whole public web, and a private PKI
     * stays private. */
    const char *cafile, *capath;
    bool insecure;   /* -k: no certificate or host name verification at all */
    int min_version; /* SL__TLS_VERSION_1_2 (default) or SL__TLS_VERSION_1_3 */
    /* Client certificate (PEM, may be followed by its chain) and private key
     * (PEM). `key` NULL: the key is read from the `cert` file (curl does the
     * same). Only read during sl__tls_ctx_new(). */
    const char *cert, *key;
    bool session_cache; /* default true */
    /* What the ClientHello offers, in order of preference: `ciphers` for
     * TLS 1.2 (OpenSSL's cipher-list syntax, SSL_CTX_set_cipher_list) and
     * `ciphersuites` for TLS 1.3 (suite names joined by ':',
     * SSL_CTX_set_ciphersuites). NULL: sluice's defaults, which are
     * sl__tls_default_ciphers(). Only read during sl__tls_ctx_new(). */
    const char *ciphers, *ciphersuites;
};

/* Fill `o` with the defaults: system trust store, verification on, TLS 1.2
 * minimum, no client certificate, session cache on, sluice's cipher order. */
void sl__tls_ctx_opts_init(struct sl__tls_ctx_opts *o);

/* sluice's default cipher order (static strings), the order browsers, Go
 * and BoringSSL use: AEAD suites with forward secrecy (ECDHE in TLS 1.2)
 * first, then for TLS 1.2 only the browsers' compatibility tail (ECDHE with
 * AES-CBC, then RSA key exchange); AES-128-GCM before AES-256-GCM (as safe,
 * cheaper), and ChaCha20-Poly1305 first instead when the CPU has no AES
 * instructions (AES-NI and PCLMULQDQ on x86, the AES and PMULL extensions
 * on arm64; anything else counts as none). Checked once per process. Any
 * thread. */
void sl__tls_default_ciphers(const char **ciphers, const char **ciphersuites);

/* Whether OpenSSL can use the cipher list `ciphers` (TLS 1.2) and the
 * suite list `ciphersuites` (TLS 1.3); either may be NULL (the default,
 * not checked). Returns 0, SL_ETLS (a list is empty or names nothing
 * OpenSSL can offer; the detail names the list and quotes it) or
 * SL_ENOMEM. sl__tls_ctx_new() fails the same way; this is for callers
 * that want the answer before they need a context (sl_client_new). The
 * detail goes to `errbuf` (if errlen > 0). Any thread. */
int sl__tls_ciphers_check(const char *ciphers, const char *ciphersuites, char *errbuf,
                          size_t errlen);

struct sl__tls_ctx;

/* Create a context from `o` (not kept: every string is read during the
 * call). Returns 0, SL_ETLS_CLIENT_CERT (cert/key missing, unreadable or
 * not matching each other), SL_ETLS (CA file or directory unusable, a cipher
 * list OpenSSL can use nothing of), SL_EINVAL
 * (min_version neither 1.2 nor 1.3) or SL_ENOMEM. On failure a
 * NUL-terminated detail is written to `errbuf` (if errlen > 0). */
int sl__tls_ctx_new(const struct sl__tls_ctx_opts *o, struct sl__tls_ctx **out, char *errbuf,
                    size_t errlen);

/* Contexts made from the same options (and the same files, unchanged on
 * disk) share one OpenSSL SSL_CTX, so the trust store is loaded once per
 * process, not once per client; the last few unused ones are kept for the
 * next client. Safe to call from any thread. This frees the unused ones
 * (tests, leak checkers). */
void sl__tls_ctx_cache_flush(void);

/* Free the context and its session cache. Every session made from it must
 * have been freed first (asserted). NULL is fine. */
void sl__tls_ctx_free(struct sl__tls_ctx *ctx);

struct sl__tls;

/*
 * A TLS client on the connected non-blocking socket `fd` (which the caller
 * keeps owning and closes after sl__tls_free) for `host`:
 *  - a name ("example.com", a trailing dot is dropped): sent as SNI and
 *    checked against the certificate's DNS names;
 *  - an IP literal ("127.0.0.1", "::1" or "[::1]"): no SNI (RFC 6066 forbids
 *    it) and checked against the certificate's IP addresses.
 * ALPN offers "http/1.1" only; renegotiation is refused. Writes never raise
 * SIGPIPE (the socket is written with MSG_NOSIGNAL).
 *
 * `session_key` (e.g. "host:port", copied; NULL: no resumption) names the
 * slot of the context's session cache: the newest session a server handed
 * out under this key is offered again by the next connection with the same
 * key. With TLS 1.3 the server's tickets arrive after the handshake, so a
 * connection only fills the cache once its owner has read from it.
 * Connections opened in parallel under one key offer the same session (TLS
 * 1.3 servers accept a ticket more than once unless they do 0-RTT replay
 * protection, which sluice does not use). A session survives its
 * connection ending without close_notify; one that saw a fatal TLS error is
 * dropped.
 *
 * Nothing is sent yet: call sl__tls_handshake(). Returns 0, SL_EINVAL (empty
 * host, negative fd) or SL_ENOMEM.
 */
int sl__tls_new(struct sl__tls_ctx *ctx, int fd, const char *host, const char *session_key,
                struct sl__tls **out);

/*
 * Drive the handshake. Returns 0 once it is complete (then again at once on
 * later calls); SL_EAGAIN (watch sl__tls_wants()); or an error:
 *   SL_ETLS_UNKNOWN_CA, SL_ETLS_HOSTNAME, SL_ETLS_EXPIRED,
 *   SL_ETLS_NOT_YET_VALID, SL_ETLS_SELF_SIGNED  the server's certificate
 *       failed verification (other verify failures: SL_ETLS_HANDSHAKE);
 *   SL_ETLS_VERSION      no protocol version in common;
 *   SL_ETLS_CLIENT_CERT  the server asked for a client certificate and
 *       refused ours (or our lack of one). With TLS 1.3 the client finishes
 *       its handshake before the server has judged the certificate: the
 *       refusal then arrives as this same code from the first sl__tls_read();
 *   SL_ETLS_HANDSHAKE    anything else the peer or OpenSSL objected to,
 *       including the peer closing the connection mid-handshake;
 *   -errno               the socket failed (SL_ECONNRESET...).
 * A failure is final: every later call returns the same code.
 */
int sl__tls_handshake(struct sl__tls *t);

/* After a completed handshake: whether the session was resumed; the protocol
 * ("TLSv1.3"), the cipher ("TLS_AES_256_GCM_SHA384") and the ALPN protocol
 * the server selected ("http/1.1", or "" if it selected none). The strings
 * are static or owned by `t`. */
bool sl__tls_resumed(const struct sl__tls *t);
const char *sl__tls_version(const struct sl__tls *t);
const char *sl__tls_cipher(const struct sl__tls *t);
const char *sl__tls_alpn(const struct sl__tls *t);

/*
 * Read plaintext into `buf`. Returns 0 with *n > 0; SL_EAGAIN (nothing
 * decrypted yet: watch sl__tls_wants(), which may include SL_EV_WRITE since
 * OpenSSL sometimes writes from inside a read: an alert, or the answer to a
 * KeyUpdate); SL_EOF after the peer's close_notify (again on every later
 * call: it is not an error, and sl__tls_shutdown() still works);
 * SL_ETRUNCATED when the peer closed the TCP connection without
 * close_notify (OpenSSL 3's "unexpected eof while reading": deliberately
 * kept an error, since a close-delimited body could have been cut; the HTTP
 * layer decides when it is harmless, e.g. after a complete Content-Length
 * body); SL_ETLS_CLIENT_CERT (see sl__tls_handshake); SL_ETLS (other
 * protocol errors, detail kept); -errno for socket errors (SL_ECONNRESET).
 * Runs the handshake first if it is not complete.
 */
int sl__tls_read(struct sl__tls *t, char *buf, size_t len, size_t *n);

/*
 * Write plaintext gathered from `iov`. Returns 0 with *n > 0 bytes accepted
 * (possibly fewer than offered); SL_EAGAIN when nothing was accepted (watch
 * sl__tls_wants()); 0 with *n == 0 when nothing was offered; or an error as
 * for sl__tls_read (SL_EPIPE, SL_ECONNRESET...; SL_ENOBUFS if the peer
 * made us queue over 1 MiB of answers without reading).
 *
 * Accepted bytes are encrypted and either sent or queued in the session's
 * own buffer when the socket is full; from then on they are sluice's
 * business, and the buffer drains with any later read, write, handshake or
 * shutdown call (sl__tls_wants() includes SL_EV_WRITE while it holds
 * anything). At most about one record (16 KiB) is queued that way: while
 * the buffer is not empty, nothing more is accepted.
 *
 * Hence there is no retry rule for the caller: after SL_EAGAIN or a short
 * count it may offer any bytes, from any address, split in any way
 * (naturally, the ones that follow the accepted ones). OpenSSL's own rule --
 * a blocked SSL_write() must be repeated with the same buffer and length --
 * never comes into play, because OpenSSL never sees a blocked write: the
 * socket BIO queues what the kernel does not take (see tls_openssl.c).
 * Small leading pieces (a request head, a chunk header) are gathered into
 * one record.
 */
int sl__tls_writev(struct sl__tls *t, const struct iovec *iov, int iovcnt, size_t *n);

/* The readiness the pending operations need: the union of what the
 * handshake, the last read and the last write were waiting for when they
 * returned SL_EAGAIN (or a short count), plus SL_EV_WRITE while queued
 * ciphertext waits for the socket. A read may want SL_EV_WRITE (OpenSSL
 * wrote a KeyUpdate answer or an alert that the socket did not take) and a
 * write SL_EV_READ (rare: the rest of a post-handshake message must be read
 * first). 0 when nothing is pending. The owner watches the union of these
 * and its own interest (SL_EV_READ while it reads, SL_EV_WRITE while it
 * has plaintext to write: a read may drain the queue a write was waiting
 * on, and the fd says nothing more), and on any readiness retries its
 * pending read and its pending write (redis updateSSLEvent). Every call
 * first sends what is queued. */
unsigned sl__tls_wants(const struct sl__tls *t);

/* Plaintext already decrypted or read ahead inside OpenSSL, which the fd
 * will never announce (SSL_has_pending), or a result (SL_EOF, an error)
 * that a read returning bytes kept for the next call: read again without
 * waiting. */
bool sl__tls_has_pending(const struct sl__tls *t);

/* The owner parks the connection (a pooled keep-alive connection that has
 * not been used for a while): the record buffers (about 2 x 17 KiB) are
 * released now (SSL_free_buffers). The next read or write allocates them
 * again, and they are kept while the connection is used: allocating and
 * freeing them per record is expensive. An idle TLS connection costs the
 * SSL object and its session only. Never fails; records already buffered
 * keep their buffer. May be called again after a read on an idle
 * connection (a late session ticket). */
void sl__tls_idle(struct sl__tls *t);

/* Send close_notify: non-blocking, never waits for the peer's. The first
 * call writes the alert (queued behind anything still queued); later calls
 * only flush. Returns 0 once everything queued, the alert included, is in
 * the kernel (or when there is nothing to send: before the handshake
 * completed, after a fatal error, or in the middle of a post-handshake
 * message, when OpenSSL refuses); SL_EAGAIN while the socket is full
 * (sl__tls_wants() has SL_EV_WRITE: call again when writable, or give up --
 * it is best effort); or a socket error. Writing after it fails with
 * SL_ETLS. sl__tls_free() does not call it: shutting down politely is the
 * owner's choice (an idle pooled connection: yes; a failed one: no). */
int sl__tls_shutdown(struct sl__tls *t);

/* The detail of the last error: the X.509 verify text with depth and
 * subject, or the first queued OpenSSL error; "" if none. Owned by `t`. */
const char *sl__tls_errdetail(const struct sl__tls *t);

/* Free the session (OpenSSL's SSL object included). Does not close the fd.
 * NULL is fine. */
void sl__tls_free(struct sl__tls *t);

#endif /* SLUICE_TLS_INT_H */
