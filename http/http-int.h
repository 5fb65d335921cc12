/*
 * http-int.h -- private structures of the HTTP layer: clients, requests,
 * connections and the pool, and the calls between client.c, conn.c,
 * pool.c and req_write.c.
 *
 * Ownership: the client owns its connections (pool.c lists every one of
 * them) and its DNS resolver; a request owns its headers, body copy, URL,
 * response head copy and timers. A busy connection points to the request it
 * serves (conn->req) and the request back to it (req->conn); either side
 * breaks the pair with sl__conn_detach() before it goes away.
 */
#ifndef SLUICE_HTTP_INT_H
#define SLUICE_HTTP_INT_H

#include "reactor-int.h"

#include "dns.h"
#include "resp_parse.h"
#include "tls-int.h"
#include "url.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <zlib.h>

struct conn;
struct origin;
struct sl__tls_ctx;

/* ---- transports: what a connection reads and writes through ----------- */

/*
 * A transport moves bytes between a connection and its socket. Plain TCP
 * reads and writes the fd; TLS (issue 4) will encrypt in between and may
 * need the opposite direction's readiness (want bits), or hold plaintext the
 * fd will never announce (has_pending).
 */
struct sl__transport_ops {
    const char *name;
    /* 0 with *n > 0; SL_EOF at end of stream; SL_EAGAIN; or an error. */
    int (*read)(struct conn *c, char *buf, size_t len, size_t *n);
    /* 0 with *n written (possibly short); SL_EAGAIN; or an error. */
    int (*writev)(struct conn *c, const struct iovec *iov, int iovcnt, size_t *n);
    /* Readiness the transport itself needs beyond the caller's (TLS). */
    unsigned (*wants)(const struct conn *c);
    bool (*has_pending)(const struct conn *c);
};

extern const struct sl__transport_ops sl__transport_tcp;
extern const struct sl__transport_ops sl__transport_tls;

/* flow.c: token buckets, backoff, Retry-After (pure functions of a clock). */
struct sl__bucket {
    double rate;     /* tokens per second; <= 0: unlimited */
    double burst;    /* capacity */
    double tokens;
    uint64_t stamp_ns;
};
void sl__bucket_init(struct sl__bucket *b, double rate_per_s, double burst, uint64_t now_ns);
/* Nanoseconds until one token is available (0: now). */
uint64_t sl__bucket_wait_ns(struct sl__bucket *b, uint64_t now_ns);
/* Take one token if there is one. */
bool sl__bucket_take(struct sl__bucket *b, uint64_t now_ns);
uint64_t sl__rand64(uint64_t *state);
/* Full-jitter backoff for retry number `attempt` (0 = first retry). */
uint64_t sl__backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t *rng);
/* Parse a Retry-After value (delay-seconds or IMF-fixdate) into a wait from
 * `now_unix_s`. Returns 0 or -1 (unparsable). */
int sl__retry_after_ms(const char *v, int64_t now_unix_s, uint64_t *out_ms);
bool sl__status_retryable(int status);
/* Adaptive per-host back-off (AIMD). `limit` 0: connections not limited by
 * it; `rate` 0: rate not limited by it. */
struct sl__aimd {
    unsigned limit;       /* connection allowance */
    unsigned conn_ceiling; /* the configured cap it recovers to (0: none) */
    unsigned acks;        /* successes towards the next step */
    double rate;          /* request-rate allowance, per second */
    double rate_ceiling;  /* the configured rate it recovers to (0: none) */
    double rate_top;      /* without one: the observed pace it recovers to */
    uint64_t epoch;       /* decreases so far */
};
void sl__aimd_init(struct sl__aimd *a, unsigned conn_ceiling, double rate_ceiling);
/* An overloaded answer to a request sent in `req_epoch`, with `inflight`
 * connections open to the host, which has been getting `observed_rate`
 * requests per second: halve (once per epoch). Returns whether it
 * changed anything. */
bool sl__aimd_decrease(struct sl__aimd *a, uint64_t req_epoch, unsigned inflight,
                       double observed_rate);
/* A success: returns true when the allowance grew. */
bool sl__aimd_increase(struct sl__aimd *a);
bool sl__error_retryable(int err);

/* ---- requests ------------------------------------------------------------ */

enum req_state {
    REQ_NEW,      /* created, not started */
    REQ_QUEUED,   /* waiting for a connection slot */
    REQ_CONNECT,  /* bound to a connection that is resolving/connecting */
    REQ_SEND,     /* writing the request */
    REQ_HEAD,     /* request written (or 100-continue wait), waiting for the head */
    REQ_BODY,     /* receiving the body */
    REQ_DONE      /* finished; on_done ran or will run */
};

struct req_header {
    char *name;
    char *value; /* NULL: suppress a default header */
};

enum body_kind { BODY_NONE, BODY_MEM, BODY_STREAM };

/* Longest error text kept for a request (sl__req_errmsg). */
#define SL__ERRMSG_MAX 256

/*
 * A request. Keep it at most 1032 bytes (a static assertion in client.c
 * checks): glibc then serves it from its per-thread cache, where a larger
 * block costs ~1000 more instructions per request to allocate, clear and
 * free. Hence the bools packed together and the rarely used parts (the
 * error text, the zlib stream) in blocks of their own.
 */
struct sl_req_s {
    sl_client_t *client;
    void *data;
    enum req_state state;
    enum body_kind body_kind;
    char *method;
    struct sl__url url;
    char *url_string; /* effective URL as text */

    struct req_header *headers;
    size_t nheaders, cap_headers;

    const char *body;    /* BODY_MEM */
    char *body_owned;    /* copy made by sl_req_body() */
    size_t body_len;
    int64_t stream_len;  /* BODY_STREAM: -1 = chunked */
    sl_body_cb body_cb;

    sl_head_cb on_head;
    sl_data_cb on_data;
    sl_done_cb on_done;
    sl_trace_cb on_trace;

    sl_timeouts_t timeouts;
    unsigned max_redirects;
    bool allow_downgrade;
    bool decode;
    bool buffer;
    uint64_t max_decoded;
    size_t buffer_max;
    size_t expect_min;

    /* running state */
    struct conn *conn;
    struct origin *origin;       /* set by sl__pool_acquire */
    uint64_t aimd_epoch;         /* the origin's back-off epoch when this attempt was sent */
    struct sl__queue wait_node;  /* client->waiting while REQ_QUEUED */
    struct sl__queue all_node;   /* client->requests while started */
    sl_timer_t total_timer;
    sl_timer_t phase_timer;      /* queue / connect / first byte / read idle */
    int phase_error;             /* the SL_ETIMEDOUT_* the phase timer reports */
    unsigned in_callback;        /* depth of user callbacks on the stack */
    sl_defer_t defer;            /* deferred start and done */
    bool paused;
    bool head_delivered;         /* on_head ran for the final response */
    bool redirecting;            /* draining a 3xx body before the next hop */
    bool force_fresh;            /* next hop must not reuse a connection */
    bool got_response_byte;      /* this hop received at least one byte */
    bool freed;                  /* sl_req_free() called; release when safe */
    bool done_pending;           /* on_done queued on the defer */
    bool start_pending;          /* sl_req_start() queued the start */
    bool stale_retried;          /* the one stale-connection retry was used */
    bool queue_timed;            /* time_queue_us is set */
    bool rate_waiting;           /* wait_node is in client->rate_waiting */
    bool resuming;               /* this attempt continues a delivered body (Range) */
    bool resume_complete;        /* ...and the server said nothing was missing (416) */
    bool group_ended;            /* the group counted its end */
    bool retry_discard;          /* a retryable status: drop its body, retry at its end */
    bool errmsg_lost;            /* no memory for the error text */
    char *resume_validator;      /* ETag or Last-Modified of the body being received */
    int64_t resume_total;        /* its full length, -1 if unknown */
    uint64_t resume_from;        /* where the body continues when `resuming` */
    sl_group_t *group;           /* the group it belongs to, or NULL */
    size_t group_index;          /* its slot there */
    sl_retry_t retry;
    sl_timer_t retry_timer;      /* the wait before the next attempt */
    unsigned attempts_retried;   /* retries made under sl_req_retry() */
    int redirect_status;
    uint64_t retry_wait_ms;      /* the wait chosen for it */
    char *location;              /* redirect target of the current hop */

    /* upload state */
    char *head_buf;              /* serialised request head of this hop */
    size_t head_len, head_off;
    uint64_t body_off;           /* bytes of the body sent */
    char *chunk_buf;             /* BODY_STREAM staging */
    size_t chunk_len, chunk_off;
    bool body_eof;
    bool upload_done;
    bool expect_wait;            /* waiting for 100 Continue */
    bool upload_paused;

    /* response */
    bool zs_active;
    bool zs_ended;               /* a gzip member ended */
    bool zs_raw_tried;           /* raw deflate already tried (or not applicable) */
    z_stream *zs;                /* allocated by the first decode_start() */
    struct sl_resp_s *resp;      /* copy of the final head */
    char *buf;                   /* sl_req_buffer() storage */
    size_t buf_len, buf_cap;

    /* result */
    sl_result_t result;
    uint64_t t0_ns;
    char *errmsg;                /* SL__ERRMSG_MAX bytes, made by the first failure; or NULL */
    char remote_ip[INET6_ADDRSTRLEN];
};

/* A copy of a response head that outlives the parser. */
struct sl_resp_s {
    int status;
    int version;
    char *reason;
    struct sl__header *headers;
    size_t nheaders;
    int64_t content_length;
    char *arena;
};

/* ---- connections ----------------------------------------------------------- */

enum conn_state {
    CONN_RESOLVE,  /* waiting for DNS */
    CONN_CONNECT,  /* TCP connect attempts in flight (Happy Eyeballs) */
    CONN_HANDSHAKE, /* TLS handshake in progress */
    CONN_IDLE,     /* in the pool, waiting for a request */
    CONN_BUSY,     /* serving conn->req */
    CONN_CLOSED
};

#define CONN_MAX_ATTEMPTS 8

struct attempt {
    int fd;
    sl_io_t io;
    struct conn *conn;
    size_t addr_index;
};

struct conn {
    sl_client_t *client;
    struct origin *origin;
    enum conn_state state;
    const struct sl__transport_ops *tp;
    struct sl__tls *tls;         /* https: the TLS session over fd */
    bool unclean_eof;            /* TLS: the peer closed without close_notify */
    int fd;
    sl_io_t io;
    unsigned interest;
    struct sl_req_s *req;

    /* connect */
    sl__dns_lookup_t dns;
    bool dns_active;
    struct sl__addrlist *addrs;
    size_t *order;               /* interleaved address order (RFC 8305) */
    size_t norder, next_order;
    struct attempt attempts[CONN_MAX_ATTEMPTS];
    unsigned nattempts_live;
    sl_timer_t he_timer;         /* 250 ms stagger */
    int connect_error;

    /* exchange */
    struct sl__resp_parser parser;
    char *rbuf;                  /* unparsed bytes left by a pause: rbuf[rstart..rend) */
    size_t rcap, rstart, rend;   /* (reads go to the client's shared buffer) */
    unsigned requests;           /* requests served */
    bool reusable;
    sl_timer_t idle_timer;       /* idle: trim (TLS), then expiry; connect guard of an orphan */
    bool trim_pending;           /* idle_timer fires first to release TLS buffers */
    sl_defer_t defer;            /* first write of an exchange, resume after pause */
    unsigned kick_events;        /* what the deferred handler should do */
    unsigned dispatching;        /* handlers on the stack */
    bool free_pending;           /* closed while dispatching: free on unwind */
    bool msg_complete;           /* the parser reported the end of the response */
    bool msg_keep_alive;
    bool feed_pending;           /* the parser paused: feed it again, even 0 bytes */
    unsigned interim_seen;       /* 1xx count when the exchange started */
    uint64_t idle_since_ms;
    struct sl__queue node;       /* origin->idle while idle */
    struct sl__queue all_node;   /* client->conns */
    char peer_ip[INET6_ADDRSTRLEN];
    uint16_t peer_port;
    uint64_t t_dns_ns, t_connect_ns;
};

/* ---- origins and the pool -------------------------------------------------- */

struct origin {
    char *key;                   /* "scheme://host:port" */
    struct sl__url url;          /* scheme, host, port of the origin */
    unsigned nconns;             /* open or opening connections */
    struct sl__queue idle;       /* idle connections, most recent first (LIFO) */
    struct sl__bucket bucket;    /* per-origin rate limit */
    struct sl__aimd aimd;        /* adaptive back-off (opts.adaptive) */
    uint64_t last_start_ns;      /* the last request sent here (opts.adaptive) */
    double gap_ns;               /* moving average of the gaps between sends */
    struct origin *next;         /* client->origins list */
};

struct sl_client_s {
    sl_loop_t *loop;
    sl_client_opts_t opts;
    char *user_agent;
    char *dns_servers;
    struct sl__dns *dns;
    struct origin *origins;
    unsigned nconns;             /* all open or opening connections */
    unsigned nidle;              /* idle connections, all origins */
    struct sl__queue conns;      /* every connection */
    struct sl__queue waiting;    /* REQ_QUEUED requests, FIFO */
    struct sl__queue requests;   /* every started, unfinished request */
    struct sl__parse_limits limits;
    sl_defer_t dispatcher;       /* serves waiting requests (pool.c) */
    struct sl__bucket bucket;    /* global rate limit */
    struct sl__queue rate_waiting; /* requests waiting for a token, FIFO */
    sl_timer_t rate_timer;       /* wakes rate_waiting when a token is due */
    uint64_t rng;                /* backoff jitter */
    sl_defer_t reaper;           /* frees the client once closed and idle */
    sl_defer_t drain_defer;      /* sl_client_drain(): closes the idle connections */
    struct sl__tls_ctx *tls;     /* created on the first https request */
    char *tls_strings[6];        /* copies of the tls_* option strings */
    char tls_error[256];         /* why the TLS context could not be made */
    unsigned nreqs;              /* requests created and not yet freed */
    bool rate_dispatching;       /* rate_dispatch() is on the stack */
    bool rate_redo;              /* ...and was re-entered: walk again */
    char *rscratch;              /* every connection reads into this, then parses */
    bool rscratch_busy;          /* a feed is parsing rscratch right now */
    char *url_last;              /* the URL of the last sl_req_new(), as given */
    struct sl__url url_cached;   /* it, parsed, once it came twice in a row */
    bool draining;               /* sl_client_drain(): pool no idle connection */
    bool closing;
};

/* pool.c */
struct origin *sl__pool_origin(sl_client_t *c, const struct sl__url *u);
/* Give `req` a connection: an idle one, a new one, or queue it. */
int sl__pool_acquire(sl_client_t *c, sl_req_t *req);
/* A connection finished a request and may be reused. */
void sl__pool_release(struct conn *conn);
/* Close every idle connection of every origin (a drained client). */
void sl__pool_close_idle(sl_client_t *c);
/* Adaptive back-off: an answer to `req` said overloaded (429/503), or it
 * succeeded. */
void sl__pool_overloaded(sl_client_t *c, sl_req_t *req);
/* `req` is about to be sent: its back-off epoch, the host's pace. */
void sl__pool_sending(sl_client_t *c, sl_req_t *req);
void sl__pool_succeeded(sl_client_t *c, sl_req_t *req);
/* A connection closed: free its slot and serve waiting requests. */
void sl__pool_conn_gone(sl_client_t *c, struct origin *o);
/* Serve waiting requests while slots allow. */
void sl__pool_dispatch(sl_client_t *c);
void sl__pool_remove_waiting(sl_req_t *req);
void sl__pool_init(sl_client_t *c);
void sl__pool_free(sl_client_t *c);

/* conn.c */
struct conn *sl__conn_new(sl_client_t *c, struct origin *o);
/* Start resolving and connecting. The request bound with sl__conn_bind() is
 * told through sl__req_conn_ready() / sl__req_conn_failed(). */
int sl__conn_start(struct conn *conn);
void sl__conn_bind(struct conn *conn, sl_req_t *req);
/* Unbind the request; the connection closes unless `keep` and reusable. */
void sl__conn_detach(struct conn *conn, bool keep);
void sl__conn_close(struct conn *conn);
/* Whether an idle connection still looks usable (not closed by the peer). */
bool sl__conn_alive(struct conn *conn);
/* Begin the exchange for conn->req: write the request, read the response. */
void sl__conn_exchange(struct conn *conn);
/* Re-evaluate socket interest (pause/resume, upload resumed). */
void sl__conn_update_interest(struct conn *conn);
void sl__conn_idle(struct conn *conn);
/* Run the connection's handler soon (after resume, or an upload resumed). */
void sl__conn_kick(struct conn *conn);

/* client.c: events from the connection to its request */
void sl__req_conn_ready(sl_req_t *req);
void sl__req_conn_failed(sl_req_t *req, int err, const char *detail);
void sl__req_fail(sl_req_t *req, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set the request's error text (kept for result.errmsg). */
void sl__req_errmsg(sl_req_t *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text result.errmsg shows: the error text, "" or a note that it was lost. */
const char *sl__req_errmsg_text(const sl_req_t *req);
int sl__req_on_head(sl_req_t *req, const struct sl__resp_head *h);
/* A 1xx interim response passed by (traced only). */
void sl__req_on_interim(sl_req_t *req, const struct sl__resp_head *h);
int sl__req_on_body(sl_req_t *req, const char *data, size_t len);
/* The response is complete; `keep` = the connection can be reused. */
void sl__req_on_complete(sl_req_t *req, bool keep);
/* The connection broke during the exchange. */
void sl__req_conn_error(sl_req_t *req, int err, const char *detail);
void sl__req_first_byte(sl_req_t *req);
/* The whole request is on the wire: start waiting for the first byte. */
void sl__req_sent(sl_req_t *req);
/* The TCP connection is up and the TLS handshake starts (its timer). */
void sl__req_tls_start(sl_req_t *req);
/* Emit a trace record if tracing is on (printf-style for SL_TRACE_INFO). */
void sl__req_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len);
void sl__req_tracef(sl_req_t *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl__req_activity(sl_req_t *req);
bool sl__req_idempotent(const sl_req_t *req);
bool sl__req_replayable(const sl_req_t *req);

/* SLUICE_TRACE=1 prints every state change on stderr (read once). */
bool sl__trace_states(void);

/* End a running request with `err` now, without a retry (groups). */
void sl__req_abort(sl_req_t *req, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* group.c: a member request's end was reported (after its on_done), or it
 * is freed on its own. */
void sl__group_req_ended(sl_req_t *req, int err);
void sl__group_req_detach(sl_req_t *req);

/* req_write.c */
/* Serialise the request head for this hop into req->head_buf. */
int sl__req_write_head(sl_req_t *req);
/* Fill `iov` with what is left to send; returns the count (0 = nothing
 * available now). May call the body producer. */
int sl__req_upload_iov(sl_req_t *req, struct iovec *iov, int max, int *err);
/* Account `n` bytes written. */
void sl__req_upload_advance(sl_req_t *req, size_t n);
bool sl__req_header_valid_name(const char *s);
bool sl__req_header_valid_value(const char *s);
bool sl__http_token(const char *s);

#endif /* SLUICE_HTTP_INT_H */
