/*
 * test_https.c -- end-to-end tests of sluice's HTTPS client against loopback TLS servers we
 * control. Only the public header <sluice.h> is used; OpenSSL is used by the test itself, to
 * make certificates and to play servers that nginx cannot play.
 *
 * Model: every test makes its own directory /tmp/sluice-https-XXXXXX (struct env) holding a
 * throwaway PKI generated with the OpenSSL API at test time (a CA; leaves that are good,
 * expired, not yet valid, for another host, self-signed; a client CA with a client certificate;
 * an unrelated CA with a "rogue" client certificate; a stray key), and, when the test needs it,
 * a single-process nginx with one TLS server block per certificate, each on its own port, plus
 * a plain HTTP server. harness_nginx_opts can append directives inside one server block only,
 * so this file writes its own nginx.conf and starts nginx with the harness's care: free ports,
 * pid, lock, logs and temp paths inside the directory, PR_SET_PDEATHSIG in the child, a bounded
 * stop, and a sweep of directories whose owning test process died on a failed assertion.
 *
 * What nginx will not do, threads of the test do with OpenSSL:
 *  - struct tserver: a TLS server that answers each connection according to a plan (cut a
 *    close-delimited body with or without close_notify, send KeyUpdates mid-body, refuse a
 *    handshake that lacks a client certificate, wait and report whether the client's close
 *    carried close_notify);
 *  - struct drip: a proxy in front of nginx that forwards one byte at a time with 1 ms pauses;
 *  - probe_version(): a blocking client that says which versions a server really speaks.
 * The cipher tests also run the sluice CLI (SLUICE_CLI_PATH) against nginx, since only this
 * suite has TLS servers: its exit status, stdout and stderr are checked as test_cli.c does.
 * The faultserver's --silent mode (accept, then never speak) gives a handshake that hangs.
 *
 * Every test builds a loop and clients (struct ctx), runs transfers (struct xfer) whose
 * callbacks record what they saw (bodies are checked against the harness pattern as they
 * stream), bounds every wait by wall time, and ends with ctx_finish(): free the requests and
 * clients, run the loop until idle, assert sl_loop_close() == 0; then the servers are stopped
 * and must have exited cleanly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sluice.h>

#include "harness.h"

#include <arpa/inet.h>
#include <check.h>

#include "../cpuinfo.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MiB (1024u * 1024u)
#define MAX_XFERS 64
#define MAX_CLIENTS 8
#define RUN_TIMEOUT_MS 20000 /* generous bound for transfers that should take milliseconds */
#define IDLE_TIMEOUT_MS 5000 /* bound for the loop to become idle after sl_client_free() */
#define NOT_BAD UINT64_MAX
#define DAY (24L * 3600L)
#define NGINX_BIN "/usr/sbin/nginx"
#define NGINX_START_MS 10000
#define STOP_TIMEOUT_MS 5000
#define SOCK_TIMEOUT_S 5 /* bound on every blocking call of the test's own servers */
#define CLI_BOUND_MS 10000

#ifndef SLUICE_CLI_PATH
#error "SLUICE_CLI_PATH must name the sluice binary (set by tests/integ/meson.build)"
#endif

/* > 0 while the test is inside a sluice call that must not run user callbacks. */
static unsigned g_in_api;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the PKI -------------------------------------------------------------------------- */

enum cred_id {
    CR_CA,           /* the test root, given as tls_cafile */
    CR_GOOD,         /* localhost, 127.0.0.1, ::1; signed by CR_CA */
    CR_EXPIRED,      /* the same names, notAfter yesterday */
    CR_FUTURE,       /* the same names, notBefore tomorrow */
    CR_WRONGHOST,    /* other.example only */
    CR_SELFSIGNED,   /* localhost, 127.0.0.1, ::1; signed by its own key */
    CR_CLIENT_CA,    /* the root that servers trust for client certificates */
    CR_CLIENT,       /* a client certificate signed by CR_CLIENT_CA */
    CR_OTHER_CA,     /* a CA that signed none of the servers' certificates */
    CR_ROGUE_CLIENT, /* a client certificate signed by CR_OTHER_CA */
    CR_STRAY,        /* a key alone, matching no certificate */
    CR_COUNT
};

struct cred {
    X509 *cert;
    EVP_PKEY *key;
    char cert_path[160];
    char key_path[160];
};

/* An OpenSSL call of the fixture failed: print OpenSSL's queue and fail the test. */
static void need(bool ok, const char *what)
{
    if (!ok)
        ERR_print_errors_fp(stderr);
    ck_assert_msg(ok, "test PKI: %s failed", what);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    need(ext != NULL && X509_add_ext(x, ext, -1) == 1, value);
    X509_EXTENSION_free(ext);
}

static void write_pem(struct cred *c, const char *dir, const char *name)
{
    FILE *f;
    snprintf(c->key_path, sizeof(c->key_path), "%s/%s.key", dir, name);
    f = fopen(c->key_path, "w");
    need(f != NULL && PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL) == 1, name);
    need(fclose(f) == 0, name);
    if (c->cert == NULL)
        return;
    snprintf(c->cert_path, sizeof(c->cert_path), "%s/%s.pem", dir, name);
    f = fopen(c->cert_path, "w");
    need(f != NULL && PEM_write_X509(f, c->cert) == 1, name);
    need(fclose(f) == 0, name);
}

/*
 * A certificate for `cn` (subjectAltName `san` unless NULL), valid from now + not_before to
 * now + not_after seconds (X509_gmtime_adj), signed by `issuer` (NULL: by its own key), with a
 * fresh P-256 key. Written as <dir>/<name>.pem and <name>.key.
 */
static void make_cred(struct cred *c, const char *dir, const char *name, const char *cn,
                      const char *san, const struct cred *issuer, long not_before, long not_after,
                      bool is_ca, const char *eku)
{
    static long serial = 1;
    X509 *x = X509_new();
    c->key = EVP_EC_gen("P-256");
    need(x != NULL && c->key != NULL, "key generation");
    need(X509_set_version(x, X509_VERSION_3) == 1, "version");
    need(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) == 1, "serial");
    need(X509_gmtime_adj(X509_getm_notBefore(x), not_before) != NULL, "notBefore");
    need(X509_gmtime_adj(X509_getm_notAfter(x), not_after) != NULL, "notAfter");
    need(X509_set_pubkey(x, c->key) == 1, "public key");
    X509_NAME *subject = X509_get_subject_name(x);
    need(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) == 1,
         "subject");
    need(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer->cert) : subject) ==
             1,
         "issuer");
    X509 *signer = issuer != NULL ? issuer->cert : x;
    add_ext(x, signer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    if (is_ca)
        add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    else
        add_ext(x, signer, NID_key_usage, "critical,digitalSignature");
    add_ext(x, signer, NID_subject_key_identifier, "hash");
    if (issuer != NULL)
        add_ext(x, signer, NID_authority_key_identifier, "keyid:always");
    if (san != NULL)
        add_ext(x, signer, NID_subject_alt_name, san);
    if (eku != NULL)
        add_ext(x, signer, NID_ext_key_usage, eku);
    need(X509_sign(x, issuer != NULL ? issuer->key : c->key, EVP_sha256()) > 0, "signing");
    c->cert = x;
    write_pem(c, dir, name);
}

static void pki_build(struct cred *cr, const char *dir)
{
    static const char local[] = "DNS:localhost,IP:127.0.0.1,IP:::1";
    make_cred(&cr[CR_CA], dir, "ca", "sluice https test root", NULL, NULL, -DAY, 30 * DAY, true,
              NULL);
    make_cred(&cr[CR_GOOD], dir, "good", "localhost", local, &cr[CR_CA], -DAY, 30 * DAY, false,
              "serverAuth");
    make_cred(&cr[CR_EXPIRED], dir, "expired", "localhost", local, &cr[CR_CA], -30 * DAY, -DAY,
              false, "serverAuth");
    make_cred(&cr[CR_FUTURE], dir, "future", "localhost", local, &cr[CR_CA], DAY, 30 * DAY, false,
              "serverAuth");
    make_cred(&cr[CR_WRONGHOST], dir, "wronghost", "other.example", "DNS:other.example", &cr[CR_CA],
              -DAY, 30 * DAY, false, "serverAuth");
    make_cred(&cr[CR_SELFSIGNED], dir, "selfsigned", "localhost", local, NULL, -DAY, 30 * DAY,
              false, "serverAuth");
    make_cred(&cr[CR_CLIENT_CA], dir, "clientca", "sluice https client root", NULL, NULL, -DAY,
              30 * DAY, true, NULL);
    make_cred(&cr[CR_CLIENT], dir, "client", "sluice client", NULL, &cr[CR_CLIENT_CA], -DAY,
              30 * DAY, false, "clientAuth");
    make_cred(&cr[CR_OTHER_CA], dir, "otherca", "an unrelated root", NULL, NULL, -DAY, 30 * DAY,
              true, NULL);
    make_cred(&cr[CR_ROGUE_CLIENT], dir, "rogue", "rogue client", NULL, &cr[CR_OTHER_CA], -DAY,
              30 * DAY, false, "clientAuth");
    cr[CR_STRAY].key = EVP_EC_gen("P-256");
    need(cr[CR_STRAY].key != NULL, "key generation");
    write_pem(&cr[CR_STRAY], dir, "stray");
}

/* ---- the test directory and nginx ------------------------------------------------------- */

enum srv {
    SRV_PLAIN,      /* plain HTTP */
    SRV_GOOD,       /* CR_GOOD, TLS 1.2 and 1.3; also [::1] when it can be bound */
    SRV_TLS12,      /* CR_GOOD, TLS 1.2 only */
    SRV_EXPIRED,    /* one server per bad certificate */
    SRV_FUTURE,     /* */
    SRV_WRONGHOST,  /* */
    SRV_SELFSIGNED, /* */
    SRV_MTLS,       /* CR_GOOD, requires a client certificate from CR_CLIENT_CA */
    SRV_LEGACY,     /* CR_GOOD, TLS 1.0 and 1.1 only at security level 0 (if nginx starts so) */
    SRV_COUNT
};

struct env {
    char dir[64];  /* /tmp/sluice-https-XXXXXX: PKI, nginx.conf, logs, temp paths, www */
    char root[96]; /* the docroot */
    struct cred cr[CR_COUNT];
    pid_t nginx; /* 0 when not running */
    int port[SRV_COUNT];
    int port6;   /* SRV_GOOD on [::1], 0 when ::1 cannot be bound */
    bool legacy; /* SRV_LEGACY runs */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0)
        fprintf(stderr, "test_https: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Whether pid runs (a zombie does not count). */
static bool pid_alive(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp == NULL || rp[1] != ' ' || (rp[2] != 'Z' && rp[2] != 'X');
}

/*
 * A failed assertion ends the forked test process at once: nginx and the threads die with it
 * (PR_SET_PDEATHSIG, process exit), but its directory stays. Each directory records its
 * owner's pid; remove those whose owner is gone.
 */
static void sweep_stale_dirs(void)
{
    DIR *d = opendir("/tmp");
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[300];
        int pid = 0;
        if (strncmp(de->d_name, "sluice-https-", 13) != 0)
            continue;
        snprintf(path, sizeof(path), "/tmp/%s/owner", de->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
        if (pid > 0 && !pid_alive(pid)) {
            snprintf(path, sizeof(path), "/tmp/%s", de->d_name);
            rm_tree(path);
        }
    }
    closedir(d);
}

/* The directory, its owner file, the docroot and the PKI. */
static void env_init(struct env *e)
{
    char path[160];
    memset(e, 0, sizeof(*e));
    sweep_stale_dirs();
    snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-https-XXXXXX");
    ck_assert_msg(mkdtemp(e->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof(path), "%s/owner", e->dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%d\n", (int)getpid());
    ck_assert_int_eq(fclose(f), 0);
    snprintf(e->root, sizeof(e->root), "%s/www", e->dir);
    snprintf(path, sizeof(path), "%s/tmp", e->dir);
    ck_assert_int_eq(mkdir(e->root, 0755), 0);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    pki_build(e->cr, e->dir);
}

/* Pattern files in the docroot. */
static void env_files(struct env *e, const struct harness_file *files, size_t n)
{
    enum { BUF = 1u << 20, PERIOD = 251 };
    uint8_t *buf = malloc(BUF + PERIOD);
    ck_assert_ptr_nonnull(buf);
    harness_pattern_fill(buf, 0, BUF + PERIOD);
    for (size_t i = 0; i < n; i++) {
        char path[300];
        snprintf(path, sizeof(path), "%s/%s", e->root, files[i].name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
        for (uint64_t off = 0; off < files[i].size;) {
            size_t k = files[i].size - off < BUF ? (size_t)(files[i].size - off) : BUF;
            ssize_t w = write(fd, buf + off % PERIOD, k);
            ck_assert_msg(w > 0, "writing %s: %s", path, strerror(errno));
            off += (uint64_t)w;
        }
        ck_assert_int_eq(close(fd), 0);
    }
    free(buf);
}

/* fork/exec with stdout on /dev/null, dying with the thread that started it. */
static pid_t spawn(const char *const argv[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull < 0 || dup2(devnull, STDOUT_FILENO) < 0)
        _exit(127);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
        _exit(127); /* the test is already gone: don't outlive it */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    close_range(3, ~0u, 0);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

/* Reap `pid` within timeout_ms: the wait status, or -1 if it still runs. */
static int reap(pid_t pid, unsigned timeout_ms)
{
    uint64_t end = mono_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return 0;
        if (mono_ms() >= end)
            return -1;
        sleep_ms(5);
    }
}

static int kill_and_reap(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = reap(pid, STOP_TIMEOUT_MS);
    if (st == -1) {
        fprintf(stderr, "test_https: pid %d ignored SIGTERM, sending SIGKILL\n", (int)pid);
        kill(pid, SIGKILL);
        st = reap(pid, STOP_TIMEOUT_MS);
    }
    return st;
}

/* An IP literal and a port as a socket address; -1 if `host` is not an IP literal. Safe on
 * any thread (no Check assertion). */
static int sockaddr_of(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*s6);
        return 0;
    }
    return -1;
}

/* A blocking TCP connection to host:port with SOCK_TIMEOUT_S on reads and writes, or -1.
 * Safe on any thread. */
static int tcp_connect(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    struct timeval tv = {.tv_sec = SOCK_TIMEOUT_S};
    if (sockaddr_of(host, port, &ss, &sl) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool port_answers(const char *host, int port)
{
    int fd = tcp_connect(host, port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static void dump_error_log(const struct env *e)
{
    char path[128], buf[4096];
    snprintf(path, sizeof(path), "%s/error.log", e->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "test_https: --- %s ---\n", path);
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, k, stderr);
    fclose(f);
}

static bool error_log_has(const struct env *e, const char *needle)
{
    char path[128], buf[16384];
    snprintf(path, sizeof(path), "%s/error.log", e->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t k = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[k] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Free ports for every server, all different. */
static void pick_ports(struct env *e)
{
    for (int i = 0; i < SRV_COUNT; i++) {
        bool dup;
        do {
            e->port[i] = harness_free_port("127.0.0.1");
            ck_assert_int_gt(e->port[i], 0);
            dup = false;
            for (int j = 0; j < i; j++)
                dup = dup || e->port[j] == e->port[i];
        } while (dup);
    }
    /* [::1]:port6 must not be a port another server uses on 127.0.0.1: "localhost" tries ::1
     * first, and would reach the good server instead of the one the test means. */
    for (int attempt = 0; attempt < 16; attempt++) {
        int p6 = harness_free_port("::1");
        bool dup = false;
        e->port6 = p6 > 0 ? p6 : 0;
        for (int j = 0; j < SRV_COUNT; j++)
            dup = dup || e->port[j] == e->port6;
        if (!dup)
            return;
    }
    ck_abort_msg("no port on ::1 distinct from the IPv4 ones");
}

/* One TLS server block: `c` on `port`, `extra` directives appended. */
static void conf_tls_server(FILE *f, const struct env *e, int port, enum cred_id c,
                            const char *extra)
{
    fprintf(f, "    server {\n        listen 127.0.0.1:%d ssl;\n", port);
    if (c == CR_GOOD && port == e->port[SRV_GOOD] && e->port6 > 0)
        fprintf(f, "        listen [::1]:%d ssl;\n", e->port6);
    fprintf(f,
            "        server_name localhost;\n"
            "        ssl_certificate %s;\n"
            "        ssl_certificate_key %s;\n"
            "        root %s;\n"
            "        add_header X-TLS-Protocol $ssl_protocol always;\n"
            "        add_header X-TLS-Cipher $ssl_cipher always;\n"
            "        add_header X-Session-Reused $ssl_session_reused always;\n"
            "        add_header X-Client-Verify $ssl_client_verify always;\n"
            "        location / { }\n"
            "%s"
            "    }\n",
            e->cr[c].cert_path, e->cr[c].key_path, e->root, extra);
}

static int write_conf(const struct env *e, bool legacy)
{
    char path[128], extra[1024];
    const char *d = e->dir;
    snprintf(path, sizeof(path), "%s/nginx.conf", d);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    if (geteuid() == 0)
        fprintf(f, "user root;\n");
    fprintf(f,
            "daemon off;\n"
            "master_process off;\n"
            "worker_processes 1;\n"
            "pid %s/nginx.pid;\n"
            "lock_file %s/nginx.lock;\n"
            "error_log %s/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    types { application/octet-stream bin; }\n"
            "    default_type application/octet-stream;\n"
            "    access_log off;\n"
            "    sendfile on;\n"
            "    tcp_nodelay on;\n"
            "    keepalive_requests 100000;\n"
            "    keepalive_timeout 75s;\n"
            "    client_body_temp_path %s/tmp/body;\n"
            "    proxy_temp_path %s/tmp/proxy;\n"
            "    fastcgi_temp_path %s/tmp/fastcgi;\n"
            "    uwsgi_temp_path %s/tmp/uwsgi;\n"
            "    scgi_temp_path %s/tmp/scgi;\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_session_cache shared:sluice:1m;\n"
            "    ssl_session_timeout 10m;\n"
            "    ssl_session_tickets on;\n"
            "    server {\n"
            "        listen 127.0.0.1:%d;\n"
            "        server_name localhost;\n"
            "        root %s;\n"
            "        location / { }\n"
            "    }\n",
            d, d, d, d, d, d, d, d, e->port[SRV_PLAIN], e->root);
    /* https -> http redirect, and nginx's chunked location (sub_filter drops Content-Length;
     * '@@' never occurs in generated content). */
    snprintf(extra, sizeof(extra),
             "        location = /to-http { return 302 http://127.0.0.1:%d/f1k.bin; }\n"
             "        location /chunked/ {\n"
             "            alias %s/;\n"
             "            sub_filter '@@sluice-no-match@@' 'x';\n"
             "            sub_filter_types *;\n"
             "        }\n",
             e->port[SRV_PLAIN], e->root);
    conf_tls_server(f, e, e->port[SRV_GOOD], CR_GOOD, extra);
    conf_tls_server(f, e, e->port[SRV_TLS12], CR_GOOD, "        ssl_protocols TLSv1.2;\n");
    conf_tls_server(f, e, e->port[SRV_EXPIRED], CR_EXPIRED, "");
    conf_tls_server(f, e, e->port[SRV_FUTURE], CR_FUTURE, "");
    conf_tls_server(f, e, e->port[SRV_WRONGHOST], CR_WRONGHOST, "");
    conf_tls_server(f, e, e->port[SRV_SELFSIGNED], CR_SELFSIGNED, "");
    snprintf(extra, sizeof(extra),
             "        ssl_verify_client on;\n"
             "        ssl_client_certificate %s;\n",
             e->cr[CR_CLIENT_CA].cert_path);
    conf_tls_server(f, e, e->port[SRV_MTLS], CR_GOOD, extra);
    if (legacy)
        conf_tls_server(f, e, e->port[SRV_LEGACY], CR_GOOD,
                        "        ssl_protocols TLSv1 TLSv1.1;\n"
                        "        ssl_ciphers DEFAULT:@SECLEVEL=0;\n");
    fprintf(f, "}\n");
    return fclose(f);
}

static bool all_ports_answer(const struct env *e, bool legacy)
{
    for (int i = 0; i < SRV_COUNT; i++)
        if ((i != SRV_LEGACY || legacy) && !port_answers("127.0.0.1", e->port[i]))
            return false;
    return e->port6 == 0 || port_answers("::1", e->port6);
}

/* One launch on fresh ports: 0 up, -1 lost a port race (retry), -2 nginx refused the config. */
static int nginx_launch(struct env *e, bool legacy)
{
    char conf[128], errlog[128];
    pick_ports(e);
    ck_assert_int_eq(write_conf(e, legacy), 0);
    snprintf(conf, sizeof(conf), "%s/nginx.conf", e->dir);
    snprintf(errlog, sizeof(errlog), "%s/error.log", e->dir);
    unlink(errlog);
    const char *argv[] = {NGINX_BIN, "-p", e->dir, "-c", conf, "-e", errlog, NULL};
    pid_t pid = spawn(argv);
    ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
    uint64_t end = mono_ms() + NGINX_START_MS;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            dump_error_log(e);
            return error_log_has(e, "Address already in use") ? -1 : -2;
        }
        if (all_ports_answer(e, legacy))
            break;
        if (mono_ms() >= end) {
            fprintf(stderr, "test_https: nginx did not answer within %d ms\n", NGINX_START_MS);
            kill_and_reap(pid);
            dump_error_log(e);
            return -1;
        }
        sleep_ms(10);
    }
    e->nginx = pid;
    return 0;
}

/*
 * Start nginx with every server block. An OpenSSL built without TLS 1.0/1.1 may make nginx
 * refuse the legacy block: then nginx starts without it and e->legacy says so.
 */
static void env_nginx(struct env *e)
{
    ck_assert_msg(access(NGINX_BIN, X_OK) == 0, "%s: %s", NGINX_BIN, strerror(errno));
    bool legacy = true;
    for (int attempt = 1; attempt <= 4; attempt++) {
        int r = nginx_launch(e, legacy);
        if (r == 0) {
            e->legacy = legacy;
            if (!legacy)
                fprintf(stderr, "test_https: nginx refused ssl_protocols TLSv1 TLSv1.1; the "
                                "TLS 1.0/1.1 server is not available\n");
            return;
        }
        if (r == -2 && legacy)
            legacy = false;
    }
    ck_abort_msg("nginx did not start (its error log is above)");
}

/* Stop nginx (it must exit with status 0), free the PKI, remove the directory. */
static void env_finish(struct env *e)
{
    int st = 0;
    bool clean = true;
    if (e->nginx > 0) {
        st = kill_and_reap(e->nginx);
        e->nginx = 0;
        clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!clean)
            dump_error_log(e);
    }
    for (int i = 0; i < CR_COUNT; i++) {
        X509_free(e->cr[i].cert);
        EVP_PKEY_free(e->cr[i].key);
    }
    rm_tree(e->dir);
    ck_assert_msg(clean, "nginx did not exit cleanly (wait status 0x%x)", (unsigned)st);
}

/* ---- loop, clients, transfers ------------------------------------------------------------ */

struct xfer;

struct ctx {
    sl_loop_t loop;
    sl_client_t *clients[MAX_CLIENTS]; /* freed by ctx_finish() unless NULL */
    size_t nclients;
    struct xfer *xfers[MAX_XFERS]; /* freed by ctx_finish() */
    size_t nxfers;
};

static void ctx_init(struct ctx *t)
{
    memset(t, 0, sizeof(*t));
    g_in_api = 0;
    ck_assert_int_eq(sl_loop_init(&t->loop), 0);
}

static sl_client_t *ctx_client(struct ctx *t, const sl_client_opts_t *o)
{
    sl_client_t *c = NULL;
    ck_assert_uint_lt(t->nclients, MAX_CLIENTS);
    ck_assert_int_eq(sl_client_new(&t->loop, o, &c), 0);
    ck_assert_ptr_nonnull(c);
    t->clients[t->nclients++] = c;
    return c;
}

/* Client options trusting `ca` (tls_cafile) and nothing else. */
static sl_client_opts_t opts_trusting(const struct env *e, enum cred_id ca)
{
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.tls_cafile = e->cr[ca].cert_path;
    return o;
}

/* Run the loop until cond(arg) holds or timeout_ms of wall time passed; returns cond(arg). */
static bool run_until(struct ctx *t, bool (*cond)(void *), void *arg, uint64_t timeout_ms)
{
    uint64_t end = mono_ms() + timeout_ms;
    while (!cond(arg)) {
        if (mono_ms() >= end)
            return false;
        int rc = sl_loop_run_once(&t->loop, 10);
        ck_assert_msg(rc >= 0, "sl_loop_run_once failed: %s", sl_err_name(rc));
    }
    return true;
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

static void sleep_timer_cb(sl_timer_t *tm)
{
    *(bool *)tm->data = true;
}

/* Keep the loop running for `ms` milliseconds, measured by a loop timer. */
static void loop_sleep(struct ctx *t, uint64_t ms)
{
    sl_timer_t tm;
    bool fired = false;
    sl_timer_init(&t->loop, &tm, sleep_timer_cb);
    tm.data = &fired;
    ck_assert_int_eq(sl_timer_start(&tm, ms, 0), 0);
    ck_assert_msg(run_until(t, flag_set, &fired, ms + 5000), "a %" PRIu64 " ms timer never fired",
                  ms);
}

static bool loop_idle(void *arg)
{
    return !sl_loop_alive(arg);
}

static void xfer_free(struct xfer *x);

/* Free one client now (its requests must be freed or done) and let its closes run. */
static void ctx_free_client(struct ctx *t, sl_client_t *c)
{
    for (size_t i = 0; i < t->nclients; i++) {
        if (t->clients[i] == c) {
            g_in_api++;
            sl_client_free(c);
            g_in_api--;
            t->clients[i] = NULL;
            return;
        }
    }
    ck_abort_msg("ctx_free_client: unknown client");
}

/* Free every request and client, run the loop until idle, close it. */
static void ctx_finish(struct ctx *t)
{
    for (size_t i = 0; i < t->nxfers; i++)
        xfer_free(t->xfers[i]);
    t->nxfers = 0;
    for (size_t i = 0; i < t->nclients; i++) {
        if (t->clients[i] != NULL) {
            g_in_api++;
            sl_client_free(t->clients[i]);
            g_in_api--;
            t->clients[i] = NULL;
        }
    }
    ck_assert_msg(run_until(t, loop_idle, &t->loop, IDLE_TIMEOUT_MS),
                  "the loop is still alive %d ms after sl_client_free()", IDLE_TIMEOUT_MS);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(sl_loop_run_once(&t->loop, 0), 0);
    ck_assert_int_eq(sl_loop_close(&t->loop), 0);
}

struct xfer {
    struct ctx *t;
    sl_req_t *req; /* NULL once freed */
    char url[512];

    /* knobs, set before start */
    bool check_pattern; /* the body must be the pattern from offset 0 */
    size_t keep_max;    /* keep the first keep_max body bytes in `body` */

    /* what the callbacks saw */
    int heads, datas, dones;
    int err;
    bool done_inside_api;
    bool data_bad_order;
    int http_status;
    uint64_t nbytes;
    uint64_t bad_at; /* first offset not matching the pattern, NOT_BAD if none */
    uint8_t *body;   /* first keep_max bytes, NUL-terminated */
    size_t body_len;
    sl_result_t res; /* copy taken in on_done; its string pointers are not used */
    char eff_url[512], remote_ip[64], errmsg[512], detail[512];
    uint64_t t_start, t_done; /* mono_ms */
    char trace[4096];         /* the SL_TRACE_INFO lines, each ending in '\n' */
    size_t trace_len;
};

static int on_head(sl_req_t *req, const sl_resp_t *resp)
{
    struct xfer *x = sl_req_data(req);
    x->heads++;
    x->http_status = sl_resp_status(resp);
    return 0;
}

static int on_data(sl_req_t *req, const void *data, size_t len)
{
    struct xfer *x = sl_req_data(req);
    x->datas++;
    if (x->heads == 0 || x->dones > 0)
        x->data_bad_order = true;
    if (x->check_pattern && x->bad_at == NOT_BAD) {
        size_t ok = harness_pattern_check(data, x->nbytes, len);
        if (ok < len)
            x->bad_at = x->nbytes + ok;
    }
    if (x->body_len < x->keep_max) {
        size_t n = x->keep_max - x->body_len < len ? x->keep_max - x->body_len : len;
        memcpy(x->body + x->body_len, data, n);
        x->body_len += n;
        x->body[x->body_len] = '\0';
    }
    x->nbytes += len;
    return 0;
}

static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s != NULL ? s : "");
}

static void on_done(sl_req_t *req, int status)
{
    struct xfer *x = sl_req_data(req);
    const sl_result_t *r = sl_req_result(req);
    x->dones++;
    x->err = status;
    x->t_done = mono_ms();
    if (g_in_api > 0)
        x->done_inside_api = true;
    x->res = *r;
    copy_str(x->eff_url, sizeof(x->eff_url), r->effective_url);
    copy_str(x->remote_ip, sizeof(x->remote_ip), r->remote_ip);
    copy_str(x->errmsg, sizeof(x->errmsg), r->errmsg);
    copy_str(x->detail, sizeof(x->detail), sl_req_errdetail(req));
}

static void on_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len)
{
    struct xfer *x = sl_req_data(req);
    if (kind != SL_TRACE_INFO)
        return;
    if (x->trace_len + len + 2 > sizeof(x->trace))
        return;
    memcpy(x->trace + x->trace_len, data, len);
    x->trace_len += len;
    x->trace[x->trace_len++] = '\n';
    x->trace[x->trace_len] = '\0';
}

static struct xfer *xfer_new(struct ctx *t, sl_client_t *c, const char *method, const char *url)
{
    struct xfer *x = calloc(1, sizeof(*x));
    const char *why = NULL;
    ck_assert_ptr_nonnull(x);
    ck_assert_uint_lt(t->nxfers, MAX_XFERS);
    t->xfers[t->nxfers++] = x;
    x->t = t;
    x->bad_at = NOT_BAD;
    snprintf(x->url, sizeof(x->url), "%s", url);
    int rc = sl_req_new(c, method, x->url, &x->req, &why);
    ck_assert_msg(rc == 0, "sl_req_new(%s, %s) = %s (%s)", method, x->url, sl_err_name(rc),
                  why != NULL ? why : "");
    sl_req_set_data(x->req, x);
    sl_req_callbacks(x->req, on_head, on_data, on_done);
    sl_req_trace(x->req, on_trace);
    return x;
}

static void xfer_keep(struct xfer *x, size_t max)
{
    x->keep_max = max;
    x->body = realloc(x->body, max + 1);
    ck_assert_ptr_nonnull(x->body);
    x->body[0] = '\0';
}

static void xfer_start(struct xfer *x)
{
    x->t_start = mono_ms();
    g_in_api++;
    int rc = sl_req_start(x->req);
    g_in_api--;
    ck_assert_msg(rc == 0, "sl_req_start(%s) = %s", x->url, sl_err_name(rc));
    ck_assert_msg(x->dones == 0, "%s: on_done ran inside sl_req_start()", x->url);
}

static void xfer_free(struct xfer *x)
{
    if (x->req != NULL) {
        g_in_api++;
        sl_req_free(x->req);
        g_in_api--;
    }
    free(x->body);
    free(x);
}

static bool xfer_done(void *arg)
{
    return ((struct xfer *)arg)->dones > 0;
}

static void run_one(struct xfer *x, uint64_t timeout_ms)
{
    xfer_start(x);
    ck_assert_msg(run_until(x->t, xfer_done, x, timeout_ms),
                  "%s: not done after %" PRIu64 " ms (%" PRIu64 " bytes)", x->url, timeout_ms,
                  x->nbytes);
}

/* GET `url`, body checked against the pattern, first 4 KiB kept. */
static struct xfer *fetch(struct ctx *t, sl_client_t *c, const char *url)
{
    struct xfer *x = xfer_new(t, c, "GET", url);
    x->check_pattern = true;
    xfer_keep(x, 4096);
    run_one(x, RUN_TIMEOUT_MS);
    return x;
}

/* GET `url` with timeouts, expecting a failure soon. */
static struct xfer *fetch_timeouts(struct ctx *t, sl_client_t *c, const char *url,
                                   const sl_timeouts_t *to)
{
    struct xfer *x = xfer_new(t, c, "GET", url);
    sl_req_timeouts(x->req, to);
    run_one(x, RUN_TIMEOUT_MS);
    return x;
}

/* A response header of the finished request, "" when absent. */
static const char *xfer_header(const struct xfer *x, const char *name)
{
    const sl_resp_t *r = sl_req_response(x->req);
    const char *v = r != NULL ? sl_resp_header(r, name) : NULL;
    return v != NULL ? v : "";
}

/* ---- assertions ------------------------------------------------------------------------ */

static void assert_ok(const struct xfer *x, int http_status)
{
    ck_assert_msg(x->dones == 1, "%s: on_done ran %d times", x->url, x->dones);
    ck_assert_msg(x->err == 0, "%s: failed with %s: %s", x->url, sl_err_name(x->err), x->detail);
    ck_assert_int_eq(x->res.error, 0);
    ck_assert_msg(x->res.status == http_status, "%s: status %d, expected %d", x->url, x->res.status,
                  http_status);
    ck_assert_msg(x->heads == 1, "%s: on_head ran %d times", x->url, x->heads);
    ck_assert_int_eq(x->http_status, http_status);
    ck_assert_msg(!x->done_inside_api, "%s: on_done ran inside a sluice call", x->url);
    ck_assert_msg(!x->data_bad_order, "%s: on_data outside head..done", x->url);
    ck_assert_str_eq(x->errmsg, "");
}

/* The request ended once with `code`, never inside a sluice call, with a detail text. */
static void assert_fail(const struct xfer *x, int code)
{
    ck_assert_msg(x->dones == 1, "%s: on_done ran %d times", x->url, x->dones);
    ck_assert_msg(x->err == code, "%s: ended with %s (%s), expected %s", x->url,
                  sl_err_name(x->err), x->detail, sl_err_name(code));
    ck_assert_msg(x->res.error == x->err, "%s: result.error %s != done status %s", x->url,
                  sl_err_name(x->res.error), sl_err_name(x->err));
    ck_assert_msg(!x->done_inside_api, "%s: on_done ran inside a sluice call", x->url);
    ck_assert_msg(!x->data_bad_order, "%s: on_data outside head..done", x->url);
    ck_assert_msg(x->detail[0] != '\0', "%s: %s without sl_req_errdetail()", x->url,
                  sl_err_name(code));
    ck_assert_msg(x->errmsg[0] != '\0', "%s: %s without result.errmsg", x->url, sl_err_name(code));
}

/* A handshake failure: no response, no body, TCP connected but no TLS time. */
static void assert_tls_fail(const struct xfer *x, int code)
{
    assert_fail(x, code);
    ck_assert_msg(x->heads == 0 && x->res.status == 0, "%s: a response arrived (status %d)", x->url,
                  x->res.status);
    ck_assert_msg(x->nbytes == 0, "%s: %" PRIu64 " body bytes", x->url, x->nbytes);
    ck_assert_msg(x->res.time_connect_us > 0, "%s: never connected", x->url);
    ck_assert_msg(x->res.time_tls_us == 0, "%s: time_tls_us %" PRIu64 " for a failed handshake",
                  x->url, x->res.time_tls_us);
}

static void assert_pattern_body(const struct xfer *x, uint64_t n)
{
    ck_assert_msg(x->bad_at == NOT_BAD, "%s: body differs from the pattern at offset %" PRIu64,
                  x->url, x->bad_at);
    ck_assert_msg(x->nbytes == n, "%s: on_data got %" PRIu64 " bytes, expected %" PRIu64, x->url,
                  x->nbytes, n);
    ck_assert_msg(x->res.bytes_down == n, "%s: bytes_down %" PRIu64 ", expected %" PRIu64, x->url,
                  x->res.bytes_down, n);
}

static void assert_elapsed(const struct xfer *x, uint64_t lo, uint64_t hi)
{
    uint64_t ms = x->t_done - x->t_start;
    ck_assert_msg(ms >= lo && ms < hi,
                  "%s: ended after %" PRIu64 " ms, expected [%" PRIu64 ", %" PRIu64 ")", x->url, ms,
                  lo, hi);
}

static void assert_trace_has(const struct xfer *x, const char *needle)
{
    ck_assert_msg(strstr(x->trace, needle) != NULL, "%s: no \"%s\" in the trace:\n%s", x->url,
                  needle, x->trace);
}

static void assert_trace_lacks(const struct xfer *x, const char *needle)
{
    ck_assert_msg(strstr(x->trace, needle) == NULL, "%s: \"%s\" in the trace:\n%s", x->url, needle,
                  x->trace);
}

/* The error detail names the problem (case-insensitive). */
static void assert_detail_has(const struct xfer *x, const char *needle)
{
    ck_assert_msg(strcasestr(x->detail, needle) != NULL, "%s: errdetail \"%s\" lacks \"%s\"",
                  x->url, x->detail, needle);
}

/* A new TLS connection: the handshake was timed, after the TCP connect, before the response. */
static void assert_new_tls(const struct xfer *x)
{
    ck_assert_msg(!x->res.reused, "%s: ran on a reused connection", x->url);
    ck_assert_msg(x->res.time_connect_us > 0, "%s: time_connect_us 0", x->url);
    ck_assert_msg(x->res.time_tls_us > 0 && x->res.time_tls_us >= x->res.time_connect_us,
                  "%s: time_tls_us %" PRIu64 ", time_connect_us %" PRIu64, x->url,
                  x->res.time_tls_us, x->res.time_connect_us);
    ck_assert_msg(x->res.time_first_byte_us >= x->res.time_tls_us,
                  "%s: time_first_byte_us %" PRIu64 " < time_tls_us %" PRIu64, x->url,
                  x->res.time_first_byte_us, x->res.time_tls_us);
    assert_trace_has(x, "ALPN http/1.1");
}

/* ---- a TLS server of our own (a thread) ------------------------------------------------- */

/* How a connection ends after its response. */
enum ts_end {
    TS_CLOSE_NOTIFY, /* SSL_shutdown(), then FIN */
    TS_FIN,          /* FIN without close_notify: what a truncation attack looks like */
    TS_WAIT_PEER,    /* keep it open; record how the client ends it */
};

/* How the client ended a TS_WAIT_PEER connection. */
enum peer_end { PEER_NONE, PEER_CLOSE_NOTIFY, PEER_EOF, PEER_TIMEOUT, PEER_ERROR };

static const char *peer_end_name(int p)
{
    static const char *const names[] = {"none", "close_notify", "EOF without close_notify",
                                        "timeout", "error"};
    return p >= 0 && p <= PEER_ERROR ? names[p] : "?";
}

struct ts_plan {
    const char *head; /* the response head, sent verbatim */
    uint64_t send;    /* pattern bytes sent after it */
    enum ts_end end;
    /* TLS 1.3: a KeyUpdate that asks for one back, before every this many body bytes after
     * the first (0: none) */
    uint64_t key_update_every;
};

#define TS_MAX_PLAN 8
#define TS_MAX_CONNS 16

/* Serves one connection at a time, in the order they are accepted. */
struct tserver {
    SSL_CTX *ctx;
    int lfd, port;
    int wake[2];
    pthread_t thread;
    /* connection i follows plan[min(i, nplan - 1)]; fixed before tserver_start() */
    struct ts_plan plan[TS_MAX_PLAN];
    unsigned nplan;
    /* observations, under mu */
    pthread_mutex_t mu;
    int conn_fd; /* the connection being served, -1 if none */
    bool stopping;
    unsigned accepted, handshakes, handshake_failures, requests;
    char fail_reason[256]; /* the first failed handshake's OpenSSL error */
    unsigned key_updates_sent, key_updates_received;
    int peer_end[TS_MAX_CONNS];     /* per accepted connection (TS_WAIT_PEER) */
    char version[TS_MAX_CONNS][16]; /* the protocol of each completed handshake */
};

/* Send FIN, then discard what the client still sends until it closes (bounded): closing with
 * unread data would send RST, and the client would see a reset instead of what we mean. */
static void fin_and_drain(int fd)
{
    char buf[4096];
    shutdown(fd, SHUT_WR);
    uint64_t end = mono_ms() + SOCK_TIMEOUT_S * 1000;
    while (mono_ms() < end) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
}

static bool ssl_write_all(SSL *ssl, const void *p, size_t len)
{
    size_t w;
    while (len > 0) {
        if (SSL_write_ex(ssl, p, len, &w) != 1)
            return false;
        p = (const char *)p + w;
        len -= w;
    }
    return true;
}

static int wait_peer_end(SSL *ssl)
{
    char buf[1024];
    for (;;) {
        errno = 0;
        int r = SSL_read(ssl, buf, sizeof(buf));
        if (r > 0)
            continue;
        int err = SSL_get_error(ssl, r);
        unsigned long e = ERR_peek_error();
        int saved = errno;
        ERR_clear_error();
        if (err == SSL_ERROR_ZERO_RETURN)
            return PEER_CLOSE_NOTIFY;
        if (err == SSL_ERROR_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return PEER_EOF;
        if (err == SSL_ERROR_SYSCALL && (saved == EAGAIN || saved == EWOULDBLOCK))
            return PEER_TIMEOUT;
        if (err == SSL_ERROR_SYSCALL && saved == 0)
            return PEER_EOF;
        return PEER_ERROR;
    }
}

static void tserver_serve(struct tserver *s, int fd, unsigned idx)
{
    struct timeval tv = {.tv_sec = SOCK_TIMEOUT_S};
    const struct ts_plan *p = &s->plan[idx < s->nplan ? idx : s->nplan - 1];
    char req[8192];
    size_t len = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(s->ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return;
    }
    ERR_clear_error();
    if (SSL_accept(ssl) != 1) {
        pthread_mutex_lock(&s->mu);
        if (s->handshake_failures++ == 0)
            ERR_error_string_n(ERR_peek_error(), s->fail_reason, sizeof(s->fail_reason));
        pthread_mutex_unlock(&s->mu);
        ERR_clear_error();
        fin_and_drain(fd);
        SSL_free(ssl);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->handshakes++;
    if (idx < TS_MAX_CONNS)
        snprintf(s->version[idx], sizeof(s->version[idx]), "%s", SSL_get_version(ssl));
    pthread_mutex_unlock(&s->mu);

    while (memmem(req, len, "\r\n\r\n", 4) == NULL) {
        int r = SSL_read(ssl, req + len, (int)(sizeof(req) - len));
        if (r <= 0) {
            ERR_clear_error();
            fin_and_drain(fd);
            SSL_free(ssl);
            return;
        }
        len += (size_t)r;
    }
    pthread_mutex_lock(&s->mu);
    s->requests++;
    pthread_mutex_unlock(&s->mu);

    uint8_t chunk[16384];
    bool ok = ssl_write_all(ssl, p->head, strlen(p->head));
    for (uint64_t off = 0; ok && off < p->send;) {
        size_t k = p->send - off < sizeof(chunk) ? (size_t)(p->send - off) : sizeof(chunk);
        harness_pattern_fill(chunk, off, k);
        if (p->key_update_every > 0 && off > 0 && off % p->key_update_every == 0) {
            ok = SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1;
            pthread_mutex_lock(&s->mu);
            s->key_updates_sent += ok;
            pthread_mutex_unlock(&s->mu);
        }
        ok = ok && ssl_write_all(ssl, chunk, k);
        off += k;
    }
    if (ok && p->end == TS_WAIT_PEER) {
        int pe = wait_peer_end(ssl);
        pthread_mutex_lock(&s->mu);
        if (idx < TS_MAX_CONNS)
            s->peer_end[idx] = pe;
        pthread_mutex_unlock(&s->mu);
    } else if (ok && p->end == TS_CLOSE_NOTIFY) {
        SSL_shutdown(ssl);
    }
    ERR_clear_error();
    fin_and_drain(fd);
    SSL_free(ssl);
}

/* Counts the KeyUpdate messages the client sends (OpenSSL handles them invisibly). */
static void ts_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                      SSL *ssl, void *arg)
{
    struct tserver *s = arg;
    (void)version;
    (void)ssl;
    if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
        ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE) {
        pthread_mutex_lock(&s->mu);
        s->key_updates_received++;
        pthread_mutex_unlock(&s->mu);
    }
}

static void *tserver_main(void *arg)
{
    struct tserver *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
                              {.fd = s->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents != 0)
            break;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->mu);
        unsigned idx = s->accepted++;
        bool stop = s->stopping;
        s->conn_fd = fd;
        pthread_mutex_unlock(&s->mu);
        if (!stop)
            tserver_serve(s, fd, idx);
        pthread_mutex_lock(&s->mu);
        s->conn_fd = -1;
        pthread_mutex_unlock(&s->mu);
        close(fd);
    }
    return NULL;
}

/* A listener on 127.0.0.1 and a free port. */
static int tcp_listener(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sl), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/*
 * Start the server with CR_GOOD, speaking TLS up to `max_version` (0: 1.3). With
 * `require_cert` the handshake fails unless the client presents a certificate from
 * CR_CLIENT_CA (SSL_VERIFY_FAIL_IF_NO_PEER_CERT: what nginx never does).
 */
static void tserver_start(struct tserver *s, const struct env *e, int max_version,
                          bool require_cert)
{
    s->ctx = SSL_CTX_new(TLS_server_method());
    need(s->ctx != NULL, "SSL_CTX_new");
    need(SSL_CTX_use_certificate_file(s->ctx, e->cr[CR_GOOD].cert_path, SSL_FILETYPE_PEM) == 1,
         "server certificate");
    need(SSL_CTX_use_PrivateKey_file(s->ctx, e->cr[CR_GOOD].key_path, SSL_FILETYPE_PEM) == 1,
         "server key");
    if (max_version != 0)
        need(SSL_CTX_set_max_proto_version(s->ctx, max_version) == 1, "max version");
    if (require_cert) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(e->cr[CR_CLIENT_CA].cert_path);
        need(names != NULL, "client CA names");
        SSL_CTX_set_client_CA_list(s->ctx, names);
        need(SSL_CTX_load_verify_locations(s->ctx, e->cr[CR_CLIENT_CA].cert_path, NULL) == 1,
             "client CA");
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_msg_callback(s->ctx, ts_msg_cb);
    SSL_CTX_set_msg_callback_arg(s->ctx, s);
    ck_assert_uint_gt(s->nplan, 0);
    pthread_mutex_init(&s->mu, NULL);
    s->conn_fd = -1;
    s->lfd = tcp_listener(&s->port);
    ck_assert_int_eq(pipe2(s->wake, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, tserver_main, s), 0);
}

static void tserver_stop(struct tserver *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    if (s->conn_fd >= 0)
        shutdown(s->conn_fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    ck_assert_int_eq(write(s->wake[1], "x", 1), 1);
    ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
    close(s->wake[0]);
    close(s->wake[1]);
    close(s->lfd);
    SSL_CTX_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
}

struct ts_wait {
    struct tserver *s;
    unsigned idx;
};

static bool ts_peer_ended(void *arg)
{
    struct ts_wait *w = arg;
    pthread_mutex_lock(&w->s->mu);
    bool ended = w->s->peer_end[w->idx] != PEER_NONE;
    pthread_mutex_unlock(&w->s->mu);
    return ended;
}

static void ts_counts(struct tserver *s, unsigned *accepted, unsigned *handshakes,
                      unsigned *failures, unsigned *requests)
{
    pthread_mutex_lock(&s->mu);
    *accepted = s->accepted;
    *handshakes = s->handshakes;
    *failures = s->handshake_failures;
    *requests = s->requests;
    pthread_mutex_unlock(&s->mu);
}

/* ---- a proxy that drips bytes (a thread) -------------------------------------------------- */

#define DRIP_MAX 8

struct drip_pair {
    int cfd, ufd;        /* client side, upstream side */
    bool c_open, u_open; /* reading that side can still give bytes */
};

struct drip {
    int lfd, port, upstream_port;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    uint64_t to_server, to_client; /* bytes forwarded */
    unsigned conns;
};

/* Forward at most one byte from `from` to `to`. Returns whether one moved. */
static bool drip_one(struct drip *d, int from, int to, bool *open, uint64_t *counter)
{
    char b;
    ssize_t n = recv(from, &b, 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return false;
    if (n == 1 && send(to, &b, 1, MSG_NOSIGNAL) == 1) {
        pthread_mutex_lock(&d->mu);
        (*counter)++;
        pthread_mutex_unlock(&d->mu);
        return true;
    }
    *open = false; /* EOF, an error, or the other side is gone */
    shutdown(to, SHUT_WR);
    return false;
}

static void *drip_main(void *arg)
{
    struct drip *d = arg;
    struct drip_pair pairs[DRIP_MAX];
    int n = 0;
    for (;;) {
        struct pollfd p[2 + 2 * DRIP_MAX];
        p[0] = (struct pollfd){.fd = d->wake[0], .events = POLLIN};
        p[1] = (struct pollfd){.fd = n < DRIP_MAX ? d->lfd : -1, .events = POLLIN};
        for (int i = 0; i < n; i++) {
            p[2 + 2 * i] =
                (struct pollfd){.fd = pairs[i].c_open ? pairs[i].cfd : -1, .events = POLLIN};
            p[3 + 2 * i] =
                (struct pollfd){.fd = pairs[i].u_open ? pairs[i].ufd : -1, .events = POLLIN};
        }
        if (poll(p, (nfds_t)(2 + 2 * n), 1000) < 0 && errno != EINTR)
            break;
        if (p[0].revents != 0)
            break;
        bool moved = false;
        for (int i = 0; i < n; i++) {
            struct drip_pair *q = &pairs[i];
            if (q->c_open && p[2 + 2 * i].revents != 0)
                moved |= drip_one(d, q->cfd, q->ufd, &q->c_open, &d->to_server);
            if (q->u_open && p[3 + 2 * i].revents != 0)
                moved |= drip_one(d, q->ufd, q->cfd, &q->u_open, &d->to_client);
        }
        for (int i = 0; i < n;) {
            if (!pairs[i].c_open && !pairs[i].u_open) {
                close(pairs[i].cfd);
                close(pairs[i].ufd);
                pairs[i] = pairs[--n];
            } else {
                i++;
            }
        }
        if (n < DRIP_MAX && (p[1].revents & POLLIN)) {
            int cfd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC);
            int ufd = cfd >= 0 ? tcp_connect("127.0.0.1", d->upstream_port) : -1;
            if (cfd >= 0 && ufd < 0)
                close(cfd);
            if (ufd >= 0) {
                pairs[n++] = (struct drip_pair){cfd, ufd, true, true};
                pthread_mutex_lock(&d->mu);
                d->conns++;
                pthread_mutex_unlock(&d->mu);
            }
        }
        if (moved)
            sleep_ms(1);
    }
    for (int i = 0; i < n; i++) {
        close(pairs[i].cfd);
        close(pairs[i].ufd);
    }
    return NULL;
}

static void drip_start(struct drip *d, int upstream_port)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    d->upstream_port = upstream_port;
    d->lfd = tcp_listener(&d->port);
    ck_assert_int_eq(pipe2(d->wake, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&d->thread, NULL, drip_main, d), 0);
}

static void drip_stop(struct drip *d)
{
    ck_assert_int_eq(write(d->wake[1], "x", 1), 1);
    ck_assert_int_eq(pthread_join(d->thread, NULL), 0);
    close(d->wake[0]);
    close(d->wake[1]);
    close(d->lfd);
    pthread_mutex_destroy(&d->mu);
}

/* ---- a blocking TLS client of our own ------------------------------------------------------ */

/*
 * Handshake with 127.0.0.1:port allowing versions [minv, maxv] at security level 0, without
 * verification. Returns the negotiated version (TLS1_VERSION...) or 0; says why on stderr.
 */
static int probe_version(int port, int minv, int maxv)
{
    int version = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    need(ctx != NULL, "SSL_CTX_new");
    SSL_CTX_set_security_level(ctx, 0);
    if (SSL_CTX_set_min_proto_version(ctx, minv) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, maxv) != 1 ||
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0") != 1) {
        fprintf(stderr, "test_https: probe: this OpenSSL cannot offer 0x%x..0x%x\n", (unsigned)minv,
                (unsigned)maxv);
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return 0;
    }
    int fd = tcp_connect("127.0.0.1", port);
    ck_assert_int_ge(fd, 0);
    SSL *ssl = SSL_new(ctx);
    need(ssl != NULL && SSL_set_fd(ssl, fd) == 1, "SSL_new");
    if (SSL_connect(ssl) == 1) {
        version = SSL_version(ssl);
        SSL_shutdown(ssl);
    } else {
        char why[256];
        ERR_error_string_n(ERR_peek_error(), why, sizeof(why));
        fprintf(stderr, "test_https: probe of port %d: %s\n", port, why);
    }
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return version;
}

/* ======================================================================================== */
/* 1. a good certificate                                                                    */
/* ======================================================================================== */

START_TEST(good_cert_by_name_and_ip)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);

    /* A name (SNI + DNS SAN), an IPv4 literal and an IPv6 literal (IP SANs, no SNI). */
    const struct {
        const char *host;
        int port;
        const char *ip; /* the expected remote_ip, NULL: either family */
    } via[] = {
        {"localhost", e.port[SRV_GOOD], NULL},
        {"127.0.0.1", e.port[SRV_GOOD], "127.0.0.1"},
        {"[::1]", e.port6, "::1"},
    };
    for (size_t i = 0; i < sizeof(via) / sizeof(via[0]); i++) {
        if (via[i].port == 0) {
            fprintf(stderr, "good_cert_by_name_and_ip: ::1 cannot be bound, [::1] skipped\n");
            continue;
        }
        snprintf(url, sizeof(url), "https://%s:%d/f1k.bin", via[i].host, via[i].port);
        struct xfer *x = fetch(&t, c, url);
        assert_ok(x, 200);
        assert_pattern_body(x, 1024);
        assert_new_tls(x);
        assert_trace_has(x, "TLSv1.3");
        assert_trace_lacks(x, "verification is disabled");
        ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), "TLSv1.3");
        if (via[i].ip != NULL)
            ck_assert_str_eq(x->remote_ip, via[i].ip);
        ck_assert_int_eq(x->res.remote_port, via[i].port);

        /* The same origin again: the TLS connection is kept alive and reused. */
        struct xfer *y = fetch(&t, c, url);
        assert_ok(y, 200);
        assert_pattern_body(y, 1024);
        ck_assert_msg(y->res.reused, "%s: second request not on the kept-alive connection", url);
        assert_trace_lacks(y, "ALPN");
        /* Like curl's appconnect: reached at once on a reused TLS connection. */
        ck_assert_msg(y->res.time_tls_us > 0 && y->res.time_tls_us == y->res.time_connect_us,
                      "%s: reused: time_tls_us %" PRIu64 ", time_connect_us %" PRIu64, url,
                      y->res.time_tls_us, y->res.time_connect_us);
    }
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 2. bad certificates                                                                      */
/* ======================================================================================== */

START_TEST(bad_certs_fail_with_their_codes)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o;
    sl_client_opts_init(&o); /* the system store, which does not know our CA */
    sl_client_t *system_store = ctx_client(&t, &o);
    o = opts_trusting(&e, CR_CA);
    sl_client_t *ours = ctx_client(&t, &o);
    o = opts_trusting(&e, CR_OTHER_CA);
    sl_client_t *other = ctx_client(&t, &o);

    const struct {
        sl_client_t *c;
        const char *host;
        enum srv srv;
        int code;
        const char *names; /* in the detail: OpenSSL's verify text */
    } cases[] = {
        {system_store, "localhost", SRV_GOOD, SL_ETLS_UNKNOWN_CA, "local issuer"},
        {ours, "localhost", SRV_WRONGHOST, SL_ETLS_HOSTNAME, "hostname mismatch"},
        {ours, "127.0.0.1", SRV_WRONGHOST, SL_ETLS_HOSTNAME, "IP address mismatch"},
        {ours, "localhost", SRV_EXPIRED, SL_ETLS_EXPIRED, "expired"},
        {ours, "localhost", SRV_FUTURE, SL_ETLS_NOT_YET_VALID, "not yet valid"},
        {ours, "localhost", SRV_SELFSIGNED, SL_ETLS_SELF_SIGNED, "self-signed"},
        {ours, "127.0.0.1", SRV_SELFSIGNED, SL_ETLS_SELF_SIGNED, "self-signed"},
        {other, "localhost", SRV_GOOD, SL_ETLS_UNKNOWN_CA, "local issuer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(url, sizeof(url), "https://%s:%d/", cases[i].host, e.port[cases[i].srv]);
        struct xfer *x = xfer_new(&t, cases[i].c, "GET", url);
        run_one(x, RUN_TIMEOUT_MS);
        assert_tls_fail(x, cases[i].code);
        assert_detail_has(x, cases[i].names);
        assert_trace_lacks(x, "verification is disabled");
    }

    /* The good server with our CA: the control that makes the failures above meaningful. */
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_GOOD]);
    struct xfer *x = fetch(&t, ours, url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

START_TEST(bad_certs_pass_when_insecure)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o;
    sl_client_opts_init(&o);
    o.tls_insecure = true;
    sl_client_t *insecure = ctx_client(&t, &o);
    /* -k does not even load CA options (curl does the same): an unrelated CA changes nothing. */
    o.tls_cafile = e.cr[CR_OTHER_CA].cert_path;
    sl_client_t *insecure_other = ctx_client(&t, &o);

    const struct {
        sl_client_t *c;
        const char *host;
        enum srv srv;
    } cases[] = {
        {insecure, "localhost", SRV_GOOD},       {insecure, "localhost", SRV_WRONGHOST},
        {insecure, "127.0.0.1", SRV_WRONGHOST},  {insecure, "localhost", SRV_EXPIRED},
        {insecure, "localhost", SRV_FUTURE},     {insecure, "localhost", SRV_SELFSIGNED},
        {insecure_other, "localhost", SRV_GOOD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(url, sizeof(url), "https://%s:%d/f1k.bin", cases[i].host, e.port[cases[i].srv]);
        struct xfer *x = fetch(&t, cases[i].c, url);
        assert_ok(x, 200);
        assert_pattern_body(x, 1024);
        assert_new_tls(x);
        assert_trace_has(x, "verification is disabled");
    }
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 3. session resumption                                                                    */
/* ======================================================================================== */

/*
 * Four requests, each on a new connection: host A, A again (resumed), host B (another origin:
 * a session is never offered across origins), B again (resumed). Between them the client's
 * connection is closed: by the idle timeout, or by "Connection: close". nginx says on its side
 * whether it resumed ($ssl_session_reused in X-Session-Reused: "r" or ".").
 */
static void resumption_round(struct ctx *t, sl_client_t *c, int port, const char *version,
                             bool connection_close)
{
    static const char *const hosts[] = {"127.0.0.1", "127.0.0.1", "localhost", "localhost"};
    char url[256];
    for (int i = 0; i < 4; i++) {
        snprintf(url, sizeof(url), "https://%s:%d/f1k.bin", hosts[i], port);
        struct xfer *x = xfer_new(t, c, "GET", url);
        x->check_pattern = true;
        if (connection_close)
            ck_assert_int_eq(sl_req_header(x->req, "Connection", "close"), 0);
        run_one(x, RUN_TIMEOUT_MS);
        assert_ok(x, 200);
        assert_pattern_body(x, 1024);
        assert_new_tls(x);
        assert_trace_has(x, version);
        ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), version);
        bool resumed = i % 2 == 1;
        if (resumed) {
            assert_trace_has(x, "session resumed");
            ck_assert_msg(strcmp(xfer_header(x, "X-Session-Reused"), "r") == 0,
                          "%s: the client says resumed, nginx says \"%s\"", url,
                          xfer_header(x, "X-Session-Reused"));
        } else {
            assert_trace_lacks(x, "session resumed");
            ck_assert_str_eq(xfer_header(x, "X-Session-Reused"), ".");
        }
        /* Without "Connection: close", let the idle timeout (100 ms) close the connection
         * (with close_notify); assert_new_tls() above checks that each request got a new one. */
        if (!connection_close)
            loop_sleep(t, 250);
    }
}

START_TEST(session_resumption_tls13_and_tls12)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    o.idle_timeout_ms = 100;
    sl_client_t *c = ctx_client(&t, &o);
    resumption_round(&t, c, e.port[SRV_GOOD], "TLSv1.3", false);
    resumption_round(&t, c, e.port[SRV_TLS12], "TLSv1.2", false);
    /* The same, with the connection closed by "Connection: close" instead. */
    sl_client_t *c2 = ctx_client(&t, &o);
    resumption_round(&t, c2, e.port[SRV_GOOD], "TLSv1.3", true);
    resumption_round(&t, c2, e.port[SRV_TLS12], "TLSv1.2", true);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 4. protocol versions                                                                     */
/* ======================================================================================== */

START_TEST(version_refused)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *dflt = ctx_client(&t, &o);
    o.tls_min_version = 13;
    sl_client_t *min13 = ctx_client(&t, &o);

    /* Controls: each client works where a version is in common. */
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_GOOD]);
    struct xfer *x = fetch(&t, min13, url);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), "TLSv1.3");
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_TLS12]);
    x = fetch(&t, dflt, url);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), "TLSv1.2");

    /* A client that wants 1.3 against a server that speaks 1.2 only. */
    x = xfer_new(&t, min13, "GET", url);
    run_one(x, RUN_TIMEOUT_MS);
    assert_tls_fail(x, SL_ETLS_VERSION);
    assert_detail_has(x, "version");

    /* TLS 1.0/1.1 only: refused by the default client (minimum 1.2), if such a server can
     * exist here. The probe proves the server does speak 1.0 or 1.1, so that a failure is
     * about the version and nothing else. */
    int legacy = e.legacy ? probe_version(e.port[SRV_LEGACY], TLS1_VERSION, TLS1_1_VERSION) : 0;
    if (legacy == 0) {
        fprintf(stderr, "version_refused: no TLS 1.0/1.1 server possible here; that case is "
                        "skipped (the 1.3-vs-1.2 case above always runs)\n");
    } else {
        snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_LEGACY]);
        x = xfer_new(&t, dflt, "GET", url);
        run_one(x, RUN_TIMEOUT_MS);
        assert_tls_fail(x, SL_ETLS_VERSION);
        assert_detail_has(x, "version");
        x = xfer_new(&t, min13, "GET", url);
        run_one(x, RUN_TIMEOUT_MS);
        assert_tls_fail(x, SL_ETLS_VERSION);
    }
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 5. client certificates                                                                   */
/* ======================================================================================== */

/*
 * nginx with "ssl_verify_client on" never fails the handshake: its verify callback accepts
 * anything and it judges the certificate per request, answering a missing one with HTTP 400
 * "No required SSL certificate was sent" and a rejected one with HTTP 400 "The SSL
 * certificate error" (ngx_http_process_request). So against nginx the transfer *succeeds* with
 * status 400, whatever the TLS version. The handshake-level refusal is tested with our own
 * server below.
 */
START_TEST(client_cert_nginx)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_MTLS]);

    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    o.tls_cert = e.cr[CR_CLIENT].cert_path;
    o.tls_key = e.cr[CR_CLIENT].key_path;
    struct xfer *x = fetch(&t, ctx_client(&t, &o), url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ck_assert_str_eq(xfer_header(x, "X-Client-Verify"), "SUCCESS");

    o = opts_trusting(&e, CR_CA);
    x = xfer_new(&t, ctx_client(&t, &o), "GET", url);
    xfer_keep(x, 4096);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 400);
    ck_assert_str_eq(xfer_header(x, "X-Client-Verify"), "NONE");
    ck_assert_msg(strstr((const char *)x->body, "No required SSL certificate was sent") != NULL,
                  "%s: unexpected 400 body: %s", url, (const char *)x->body);

    o.tls_cert = e.cr[CR_ROGUE_CLIENT].cert_path;
    o.tls_key = e.cr[CR_ROGUE_CLIENT].key_path;
    x = xfer_new(&t, ctx_client(&t, &o), "GET", url);
    xfer_keep(x, 4096);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 400);
    ck_assert_msg(strncmp(xfer_header(x, "X-Client-Verify"), "FAILED", 6) == 0,
                  "X-Client-Verify: %s", xfer_header(x, "X-Client-Verify"));
    ck_assert_msg(strstr((const char *)x->body, "The SSL certificate error") != NULL,
                  "%s: unexpected 400 body: %s", url, (const char *)x->body);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/*
 * A server that refuses the handshake itself (SSL_VERIFY_FAIL_IF_NO_PEER_CERT). With TLS 1.2
 * the refusal is an alert inside the handshake; with TLS 1.3 the client's handshake is already
 * complete when the server judges its certificate, so the alert (certificate_required, or
 * unknown_ca for the rogue certificate) arrives at the first read of the response. Both must be
 * SL_ETLS_CLIENT_CERT.
 */
START_TEST(client_cert_refused_in_handshake)
{
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    ctx_init(&t);
    for (size_t v = 0; v < 2; v++) {
        struct tserver s = {.nplan = 1};
        s.plan[0] = (struct ts_plan){.head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                                     .send = 100,
                                     .end = TS_CLOSE_NOTIFY};
        tserver_start(&s, &e, versions[v], true);
        snprintf(url, sizeof(url), "https://localhost:%d/", s.port);
        const char *vname = versions[v] == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";

        sl_client_opts_t o = opts_trusting(&e, CR_CA);
        struct xfer *none = xfer_new(&t, ctx_client(&t, &o), "GET", url);
        run_one(none, RUN_TIMEOUT_MS);
        o.tls_cert = e.cr[CR_ROGUE_CLIENT].cert_path;
        o.tls_key = e.cr[CR_ROGUE_CLIENT].key_path;
        struct xfer *rogue = xfer_new(&t, ctx_client(&t, &o), "GET", url);
        run_one(rogue, RUN_TIMEOUT_MS);
        o.tls_cert = e.cr[CR_CLIENT].cert_path;
        o.tls_key = e.cr[CR_CLIENT].key_path;
        struct xfer *good = fetch(&t, ctx_client(&t, &o), url);

        unsigned acc, hs, fails, reqs;
        ts_counts(&s, &acc, &hs, &fails, &reqs);
        tserver_stop(&s);
        fprintf(stderr, "client_cert_refused_in_handshake %s: server said \"%s\"\n", vname,
                s.fail_reason);
        ck_assert_msg(fails == 2 && hs == 1 && reqs == 1,
                      "%s: server saw %u handshake failures, %u handshakes, %u requests", vname,
                      fails, hs, reqs);
        ck_assert_str_eq(s.version[2], vname);
        ck_assert_msg(none->err == SL_ETLS_CLIENT_CERT,
                      "%s without a certificate: %s (%s), expected ETLS_CLIENT_CERT", vname,
                      sl_err_name(none->err), none->detail);
        assert_fail(none, SL_ETLS_CLIENT_CERT);
        ck_assert_int_eq(none->heads, 0);
        ck_assert_msg(rogue->err == SL_ETLS_CLIENT_CERT,
                      "%s with a certificate from an unknown CA: %s (%s), expected "
                      "ETLS_CLIENT_CERT",
                      vname, sl_err_name(rogue->err), rogue->detail);
        assert_fail(rogue, SL_ETLS_CLIENT_CERT);
        assert_ok(good, 200);
        assert_pattern_body(good, 100);
    }
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

START_TEST(client_key_mismatch)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    o.tls_cert = e.cr[CR_CLIENT].cert_path;
    o.tls_key = e.cr[CR_STRAY].key_path;
    sl_client_t *c = ctx_client(&t, &o); /* the TLS context is made on the first https request */

    /* Plain HTTP never touches TLS: it works. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/f1k.bin", e.port[SRV_PLAIN]);
    struct xfer *x = fetch(&t, c, url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);

    /* Each https request fails before connecting, naming the key. */
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_MTLS]);
    for (int i = 0; i < 2; i++) {
        x = xfer_new(&t, c, "GET", url);
        run_one(x, RUN_TIMEOUT_MS);
        assert_fail(x, SL_ETLS_CLIENT_CERT);
        assert_detail_has(x, "key");
        ck_assert_int_eq(x->heads, 0);
        ck_assert_uint_eq(x->res.time_connect_us, 0);
    }

    /* A certificate file that does not exist: the same code. */
    o.tls_cert = "/nonexistent/sluice-client.pem";
    o.tls_key = NULL;
    x = xfer_new(&t, ctx_client(&t, &o), "GET", url);
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_ETLS_CLIENT_CERT);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 6. large downloads                                                                       */
/* ======================================================================================== */

START_TEST(large_download_and_reuse)
{
    static const struct harness_file files[] = {
        {"f1k.bin", 1024}, {"f1m.bin", MiB}, {"f100m.bin", 100 * (uint64_t)MiB}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 3);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);

    snprintf(url, sizeof(url), "https://localhost:%d/f100m.bin", e.port[SRV_GOOD]);
    struct xfer *x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, 120000);
    assert_ok(x, 200);
    assert_pattern_body(x, 100 * (uint64_t)MiB);
    ck_assert_uint_eq(x->res.bytes_wire, 100 * (uint64_t)MiB);
    assert_new_tls(x);

    /* Keep-alive over TLS: the next requests reuse the connection. */
    snprintf(url, sizeof(url), "https://localhost:%d/f1k.bin", e.port[SRV_GOOD]);
    x = fetch(&t, c, url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ck_assert_msg(x->res.reused, "%s: not reused after a 100 MiB body", url);

    snprintf(url, sizeof(url), "https://localhost:%d/chunked/f1m.bin", e.port[SRV_GOOD]);
    x = fetch(&t, c, url);
    assert_ok(x, 200);
    assert_pattern_body(x, MiB);
    ck_assert_str_eq(xfer_header(x, "Transfer-Encoding"), "chunked");
    ck_assert_msg(x->res.reused, "%s: not reused", url);

    /* Idle past the trim delay (100 ms: the record buffers are released),
     * well within the expiry: reused, with new buffers, for a body of many
     * records and then a small one. */
    for (int i = 0; i < 2; i++) {
        loop_sleep(&t, 250);
        snprintf(url, sizeof(url), "https://localhost:%d/%s", e.port[SRV_GOOD],
                 i == 0 ? "chunked/f1m.bin" : "f1k.bin");
        x = fetch(&t, c, url);
        assert_ok(x, 200);
        assert_pattern_body(x, i == 0 ? MiB : 1024);
        ck_assert_msg(x->res.reused, "%s: not reused after 250 ms idle", url);
    }
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

START_TEST(download_1gib)
{
    static const struct harness_file files[] = {{"f1g.bin", 1024 * (uint64_t)MiB}};
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/f1g.bin", e.port[SRV_GOOD]);
    struct xfer *x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, 240000);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024 * (uint64_t)MiB);
    ck_assert_uint_eq(x->res.bytes_wire, 1024 * (uint64_t)MiB);
    /* Streamed, never held: the peak RSS stays far below the body (room for ASan). */
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    ck_assert_msg(ru.ru_maxrss < 512 * 1024, "peak RSS %ld KiB for a streamed 1 GiB body",
                  ru.ru_maxrss);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 7. hostile handshakes                                                                    */
/* ======================================================================================== */

START_TEST(handshake_silent_server_timeouts)
{
    struct env e;
    struct ctx t;
    struct harness_server fs = {.out_fd = -1};
    char url[256];
    env_init(&e);
    ck_assert_int_eq(harness_faultserver(&fs, "127.0.0.1", true), 0); /* accept, never speak */
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/", fs.port);

    const struct {
        sl_timeouts_t to;
        int code;
        uint64_t lo;
    } cases[] = {
        {{.tls_ms = 300}, SL_ETIMEDOUT_TLS, 300},
        {{.connect_ms = 300}, SL_ETIMEDOUT_CONNECT, 300}, /* the handshake counts as connecting */
        {{.connect_ms = 5000, .tls_ms = 300}, SL_ETIMEDOUT_TLS, 300},
        {{.connect_ms = 300, .tls_ms = 5000}, SL_ETIMEDOUT_CONNECT, 300},
        {{.total_ms = 300}, SL_ETIMEDOUT_TOTAL, 300},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct xfer *x = fetch_timeouts(&t, c, url, &cases[i].to);
        assert_tls_fail(x, cases[i].code);
        assert_elapsed(x, cases[i].lo, 2000);
    }
    ctx_finish(&t);
    ck_assert_msg(harness_stop(&fs) == 0, "faultserver did not exit cleanly");
    env_finish(&e);
}
END_TEST

START_TEST(handshake_dripped)
{
    static const struct harness_file files[] = {{"f100.bin", 100}};
    struct env e;
    struct ctx t;
    struct drip d;
    char url[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    drip_start(&d, e.port[SRV_GOOD]);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/f100.bin", d.port);

    /* Every byte of the handshake and of the exchange arrives alone, 1 ms apart. */
    struct xfer *x = xfer_new(&t, ctx_client(&t, &o), "GET", url);
    x->check_pattern = true;
    sl_req_timeouts(x->req, &(sl_timeouts_t){.tls_ms = 15000, .read_ms = 5000});
    run_one(x, 30000);
    assert_ok(x, 200);
    assert_pattern_body(x, 100);
    assert_new_tls(x);
    pthread_mutex_lock(&d.mu);
    uint64_t down = d.to_client, up = d.to_server;
    pthread_mutex_unlock(&d.mu);
    uint64_t hs_ms = (x->res.time_tls_us - x->res.time_connect_us) / 1000;
    fprintf(stderr,
            "handshake_dripped: %" PRIu64 " bytes down, %" PRIu64 " up, handshake %" PRIu64 " ms\n",
            down, up, hs_ms);
    /* The server's flight alone (certificate included) is far over 500 bytes. */
    ck_assert_msg(hs_ms >= 500, "the handshake took %" PRIu64 " ms: was it dripped?", hs_ms);

    /* tls_ms bounds the whole handshake, not the pauses between bytes. */
    x = xfer_new(&t, ctx_client(&t, &o), "GET", url);
    sl_req_timeouts(x->req, &(sl_timeouts_t){.tls_ms = 300});
    run_one(x, RUN_TIMEOUT_MS);
    assert_tls_fail(x, SL_ETIMEDOUT_TLS);
    assert_elapsed(x, 300, 2000);
    ctx_finish(&t);
    drip_stop(&d);
    env_finish(&e);
}
END_TEST

/*
 * TLS 1.3 KeyUpdate in the middle of a 1 MiB body, three times, each asking for one back. The
 * client must keep decrypting with the new keys and answer: OpenSSL writes the answer from
 * inside SSL_read, so a read may need the socket writable.
 */
START_TEST(key_update_mid_body)
{
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    ctx_init(&t);
    struct tserver s = {.nplan = 1};
    s.plan[0] = (struct ts_plan){.head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n",
                                 .send = MiB,
                                 .end = TS_WAIT_PEER,
                                 .key_update_every = 256 * 1024};
    tserver_start(&s, &e, 0, false);
    snprintf(url, sizeof(url), "https://localhost:%d/", s.port);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    o.idle_timeout_ms = 200;
    struct xfer *x = fetch(&t, ctx_client(&t, &o), url);
    assert_ok(x, 200);
    assert_pattern_body(x, MiB);
    /* The server reads again only after the body: the answers are counted when the client
     * closes the idle connection. */
    struct ts_wait w = {&s, 0};
    ck_assert_msg(run_until(&t, ts_peer_ended, &w, 5000),
                  "the idle connection was not closed within 5 s (idle timeout 200 ms)");
    ctx_finish(&t);
    tserver_stop(&s);
    ck_assert_str_eq(s.version[0], "TLSv1.3");
    ck_assert_uint_eq(s.key_updates_sent, 3);
    ck_assert_msg(s.key_updates_received >= 1,
                  "the client never answered the server's KeyUpdate requests");
    ck_assert_msg(s.peer_end[0] == PEER_CLOSE_NOTIFY, "the client ended with %s",
                  peer_end_name(s.peer_end[0]));
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 8. truncation and close_notify                                                           */
/* ======================================================================================== */

START_TEST(truncation_without_close_notify)
{
    static const char close_delimited[] = "HTTP/1.1 200 OK\r\n\r\n";
    static const char with_length[] = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    ctx_init(&t);
    struct tserver s = {.nplan = 4};
    s.plan[0] = (struct ts_plan){.head = close_delimited, .send = 100000, .end = TS_FIN};
    s.plan[1] = (struct ts_plan){.head = close_delimited, .send = 100000, .end = TS_CLOSE_NOTIFY};
    s.plan[2] = (struct ts_plan){.head = with_length, .send = 50000, .end = TS_FIN};
    s.plan[3] = (struct ts_plan){.head = with_length, .send = 100000, .end = TS_FIN};
    tserver_start(&s, &e, 0, false);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);
    snprintf(url, sizeof(url), "https://localhost:%d/", s.port);

    /* A close-delimited body cut by a bare TCP close: it cannot be told from a complete one,
     * so it must not pass as one. */
    struct xfer *x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_ETRUNCATED);
    ck_assert_int_eq(x->res.status, 200);
    ck_assert_msg(x->bad_at == NOT_BAD, "body differs from the pattern at %" PRIu64, x->bad_at);
    ck_assert_uint_le(x->nbytes, 100000);

    /* The same body ended by close_notify: complete. */
    x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 100000);

    /* Content-Length framing: half the body, then a bare close: truncated. */
    x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_ETRUNCATED);
    ck_assert_uint_le(x->nbytes, 50000);

    /* Content-Length framing, the whole body, then a bare close: the body is known complete
     * by its length, so the missing close_notify is harmless. */
    x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 100000);

    ctx_finish(&t);
    unsigned acc, hs, fails, reqs;
    ts_counts(&s, &acc, &hs, &fails, &reqs);
    tserver_stop(&s);
    ck_assert_msg(hs == 4 && reqs == 4, "server: %u handshakes, %u requests", hs, reqs);
    env_finish(&e);
}
END_TEST

/* An idle connection the client closes (idle timeout, sl_client_free) ends with close_notify. */
START_TEST(close_notify_on_idle_close)
{
    struct env e;
    struct ctx t;
    char url[256];
    env_init(&e);
    ctx_init(&t);
    struct tserver s = {.nplan = 1};
    s.plan[0] = (struct ts_plan){.head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                                 .send = 1000,
                                 .end = TS_WAIT_PEER};
    tserver_start(&s, &e, 0, false);
    snprintf(url, sizeof(url), "https://localhost:%d/", s.port);

    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    o.idle_timeout_ms = 200;
    struct xfer *x = fetch(&t, ctx_client(&t, &o), url);
    assert_ok(x, 200);
    assert_pattern_body(x, 1000);
    struct ts_wait w = {&s, 0};
    ck_assert_msg(run_until(&t, ts_peer_ended, &w, 5000),
                  "the idle connection was not closed within 5 s (idle timeout 200 ms)");

    o.idle_timeout_ms = 60000;
    sl_client_t *c2 = ctx_client(&t, &o);
    x = fetch(&t, c2, url);
    assert_ok(x, 200);
    ck_assert(!x->res.reused);
    ctx_free_client(&t, c2);
    w.idx = 1;
    ck_assert_msg(run_until(&t, ts_peer_ended, &w, 5000),
                  "sl_client_free() did not close the idle connection within 5 s");

    ctx_finish(&t);
    tserver_stop(&s);
    ck_assert_msg(s.peer_end[0] == PEER_CLOSE_NOTIFY, "idle timeout: the client ended with %s",
                  peer_end_name(s.peer_end[0]));
    ck_assert_msg(s.peer_end[1] == PEER_CLOSE_NOTIFY, "sl_client_free: the client ended with %s",
                  peer_end_name(s.peer_end[1]));
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 9. redirects across schemes                                                              */
/* ======================================================================================== */

START_TEST(redirect_http_to_https)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    struct harness_server fs = {.out_fd = -1};
    char url[512], target[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ck_assert_int_eq(harness_faultserver(&fs, "127.0.0.1", false), 0);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);

    snprintf(target, sizeof(target), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_GOOD]);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redirect-to?url=%s", fs.port, target);
    struct xfer *x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    sl_req_follow(x->req, 5, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ck_assert_uint_eq(x->res.redirects, 1);
    ck_assert_str_eq(x->eff_url, target);
    ck_assert_int_eq(x->res.remote_port, e.port[SRV_GOOD]);
    assert_new_tls(x);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), "TLSv1.3");
    ctx_finish(&t);
    ck_assert_msg(harness_stop(&fs) == 0, "faultserver did not exit cleanly");
    env_finish(&e);
}
END_TEST

START_TEST(redirect_https_to_http)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url[256], target[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/to-http", e.port[SRV_GOOD]);
    snprintf(target, sizeof(target), "http://127.0.0.1:%d/f1k.bin", e.port[SRV_PLAIN]);

    /* A downgrade is refused by default... */
    struct xfer *x = xfer_new(&t, c, "GET", url);
    sl_req_follow(x->req, 5, false);
    run_one(x, RUN_TIMEOUT_MS);
    assert_fail(x, SL_EREDIRECT_REFUSED);
    ck_assert_int_eq(x->nbytes, 0);

    /* ...and followed when allowed. */
    x = xfer_new(&t, c, "GET", url);
    x->check_pattern = true;
    sl_req_follow(x->req, 5, true);
    run_one(x, RUN_TIMEOUT_MS);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ck_assert_uint_eq(x->res.redirects, 1);
    ck_assert_str_eq(x->eff_url, target);
    ck_assert_int_eq(x->res.remote_port, e.port[SRV_PLAIN]);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */
/* 10. the pool is keyed by scheme                                                          */
/* ======================================================================================== */

START_TEST(pool_keyed_by_scheme)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char tls_good[256], plain_good[256], plain_plain[256], tls_plain[256];
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *c = ctx_client(&t, &o);
    snprintf(tls_good, sizeof(tls_good), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_GOOD]);
    snprintf(plain_good, sizeof(plain_good), "http://127.0.0.1:%d/f1k.bin", e.port[SRV_GOOD]);
    snprintf(plain_plain, sizeof(plain_plain), "http://127.0.0.1:%d/f1k.bin", e.port[SRV_PLAIN]);
    snprintf(tls_plain, sizeof(tls_plain), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_PLAIN]);

    /* An idle TLS connection to host:port is in the pool... */
    struct xfer *x = fetch(&t, c, tls_good);
    assert_ok(x, 200);
    assert_new_tls(x);
    /* ...and an http request to the same host:port must not get it: it opens a cleartext
     * connection, to which nginx answers that plain HTTP went to an HTTPS port. */
    x = fetch(&t, c, plain_good);
    assert_ok(x, 400);
    ck_assert_msg(!x->res.reused, "http request reused the https connection");
    assert_trace_lacks(x, "TLS");
    ck_assert_msg(strstr((const char *)x->body, "plain HTTP request was sent to HTTPS port"),
                  "unexpected body: %s", (const char *)x->body);
    /* The TLS connection is still there for https. */
    x = fetch(&t, c, tls_good);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    ck_assert_msg(x->res.reused, "the idle https connection was not reused");

    /* The other way: an idle cleartext connection is in the pool... */
    x = fetch(&t, c, plain_plain);
    assert_ok(x, 200);
    assert_pattern_body(x, 1024);
    /* ...and https to that host:port must handshake, fail, and never speak cleartext: the
     * client must not take nginx's "400 Bad Request" to the ClientHello as a response. The
     * peer does not speak TLS at all; no version was negotiated, so the honest code is
     * SL_ETLS_HANDSHAKE. */
    x = xfer_new(&t, c, "GET", tls_plain);
    run_one(x, RUN_TIMEOUT_MS);
    ck_assert_msg(x->heads == 0 && x->res.status == 0 && x->nbytes == 0,
                  "%s: got a response (status %d) over cleartext", tls_plain, x->res.status);
    ck_assert_msg(!x->res.reused, "https request reused the cleartext connection");
    assert_tls_fail(x, SL_ETLS_HANDSHAKE);
    /* The cleartext connection is still there for http. */
    x = fetch(&t, c, plain_plain);
    assert_ok(x, 200);
    ck_assert_msg(x->res.reused, "the idle http connection was not reused");
    ck_assert_msg(x->res.time_tls_us == 0, "plain http: time_tls_us %" PRIu64, x->res.time_tls_us);
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* ======================================================================================== */

/* ======================================================================================== */
/* 11. cipher order, the cipher options and the CLI's cipher flags                          */
/* ======================================================================================== */

/* Whether /proc/cpuinfo lists AES and carry-less multiply instructions (x86: aes, pclmulqdq;
 * arm64: aes, pmull), which is when sluice offers AES-GCM first. Asserts it can tell. */
static bool cpu_has_aes(void)
{
    int found = test_cpuinfo_has_aes();
    ck_assert_msg(found >= 0, "/proc/cpuinfo has no flags line");
    return found == 1;
}

/* Two clients with different TLS 1.3 lists, alive together, each get their own suite from
 * nginx (which honours the client's order): so they do not share one SSL_CTX. The list is
 * copied at sl_client_new(): the caller's buffer is wiped right after. */
START_TEST(cipher_options_negotiate)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct ctx t;
    char url12[256], url13[256], list[64];
    const bool aes = cpu_has_aes();
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    ctx_init(&t);
    snprintf(url13, sizeof(url13), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_GOOD]);
    snprintf(url12, sizeof(url12), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_TLS12]);

    sl_client_opts_t o = opts_trusting(&e, CR_CA);
    sl_client_t *dflt = ctx_client(&t, &o);
    snprintf(list, sizeof(list), "TLS_CHACHA20_POLY1305_SHA256");
    o.tls13_ciphers = list;
    sl_client_t *chacha = ctx_client(&t, &o);
    memset(list, 'X', sizeof(list) - 1);
    o = opts_trusting(&e, CR_CA);
    o.tls_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384";
    sl_client_t *one12 = ctx_client(&t, &o);

    struct xfer *x = fetch(&t, dflt, url13);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Cipher"),
                     aes ? "TLS_AES_128_GCM_SHA256" : "TLS_CHACHA20_POLY1305_SHA256");
    x = fetch(&t, chacha, url13);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Cipher"), "TLS_CHACHA20_POLY1305_SHA256");
    assert_trace_has(x, "TLSv1.3, TLS_CHACHA20_POLY1305_SHA256");
    x = fetch(&t, dflt, url12);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Cipher"),
                     aes ? "ECDHE-ECDSA-AES128-GCM-SHA256" : "ECDHE-ECDSA-CHACHA20-POLY1305");
    x = fetch(&t, one12, url12);
    assert_ok(x, 200);
    ck_assert_str_eq(xfer_header(x, "X-TLS-Protocol"), "TLSv1.2");
    ck_assert_str_eq(xfer_header(x, "X-TLS-Cipher"), "ECDHE-ECDSA-AES256-GCM-SHA384");
    ctx_finish(&t);
    env_finish(&e);
}
END_TEST

/* A list OpenSSL can use nothing of fails sl_client_new() with SL_ETLS, and the detail
 * quotes it; sl_tls_ciphers_check() says the same about one list. */
START_TEST(cipher_options_refused_at_client_new)
{
    struct ctx t;
    char err[512];
    sl_client_opts_t o;
    sl_client_t *c;
    ctx_init(&t);

    sl_client_opts_init(&o);
    o.tls_ciphers = "FOO:BAR";
    c = (void *)1;
    ck_assert_int_eq(sl_client_new_ex(&t.loop, &o, &c, err, sizeof(err)), SL_ETLS);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "TLS 1.2 cipher list \"FOO:BAR\"") != NULL &&
                      strstr(err, "no cipher match") != NULL,
                  "detail: %s", err);
    ck_assert_int_eq(sl_client_new(&t.loop, &o, &c), SL_ETLS);
    ck_assert_ptr_null(c);

    sl_client_opts_init(&o);
    o.tls13_ciphers = "TLS_AES_128_GCM_SHA384";
    ck_assert_int_eq(sl_client_new_ex(&t.loop, &o, &c, err, sizeof(err)), SL_ETLS);
    ck_assert_msg(strstr(err, "TLS 1.3 cipher suites \"TLS_AES_128_GCM_SHA384\"") != NULL,
                  "detail: %s", err);
    o.tls13_ciphers = "";
    ck_assert_int_eq(sl_client_new_ex(&t.loop, &o, &c, err, sizeof(err)), SL_ETLS);

    /* Usable lists: the client is made and the buffer says nothing. */
    o.tls_ciphers = "FOO:ECDHE-RSA-AES128-GCM-SHA256";
    o.tls13_ciphers = "TLS_AES_128_GCM_SHA256";
    snprintf(err, sizeof(err), "stale");
    ck_assert_int_eq(sl_client_new_ex(&t.loop, &o, &c, err, sizeof(err)), 0);
    ck_assert_str_eq(err, "");
    t.clients[t.nclients++] = c;

    ck_assert_int_eq(sl_tls_ciphers_check("BOGUS", 13, err, sizeof(err)), SL_ETLS);
    ck_assert_ptr_nonnull(strstr(err, "\"BOGUS\""));
    /* A TLS 1.3 name is no TLS 1.2 cipher, and the reverse. */
    ck_assert_int_eq(sl_tls_ciphers_check("TLS_AES_128_GCM_SHA256", 12, err, sizeof(err)), SL_ETLS);
    ck_assert_int_eq(sl_tls_ciphers_check("ECDHE-RSA-AES128-GCM-SHA256", 13, err, sizeof(err)),
                     SL_ETLS);
    ck_assert_int_eq(sl_tls_ciphers_check("ECDHE-RSA-AES128-GCM-SHA256", 12, err, sizeof(err)), 0);
    ck_assert_int_eq(sl_tls_ciphers_check(NULL, 13, err, sizeof(err)), 0);
    ck_assert_int_eq(sl_tls_ciphers_check("TLS_AES_128_GCM_SHA256", 11, err, sizeof(err)),
                     SL_EINVAL);
    ctx_finish(&t);
}
END_TEST

struct cli_out {
    int status; /* exit status; 128 + signal if killed */
    char out[8192], err[4096];
};

static void slurp_into(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f != NULL) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

/* Run the sluice CLI with `args` (NULL-terminated), stdout and stderr captured in files of the
 * test directory, bounded by CLI_BOUND_MS. */
static void cli_exec(const struct env *e, const char *const *args, struct cli_out *r)
{
    const char *argv[32];
    char out_path[128], err_path[128];
    size_t n = 0;
    argv[n++] = SLUICE_CLI_PATH;
    for (; *args != NULL; args++) {
        ck_assert_uint_lt(n, sizeof(argv) / sizeof(argv[0]) - 1);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    snprintf(out_path, sizeof(out_path), "%s/cli.out", e->dir);
    snprintf(err_path, sizeof(err_path), "%s/cli.err", e->dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int er = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || er < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(er, STDERR_FILENO) < 0)
            _exit(127);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close_range(3, ~0u, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = reap(pid, CLI_BOUND_MS);
    if (st == -1) {
        kill(pid, SIGKILL);
        reap(pid, STOP_TIMEOUT_MS);
        ck_abort_msg("sluice ran over %d ms", CLI_BOUND_MS);
    }
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    slurp_into(out_path, r->out, sizeof(r->out));
    slurp_into(err_path, r->err, sizeof(r->err));
    /* Under -Db_sanitize=address,undefined the tool reports here (and LeakSanitizer at exit). */
    ck_assert_msg(strstr(r->err, "ERROR: AddressSanitizer") == NULL &&
                      strstr(r->err, "ERROR: LeakSanitizer") == NULL &&
                      strstr(r->err, "runtime error:") == NULL,
                  "sanitizer report from sluice:\n%s", r->err);
}

/* curl's --ciphers and --tls13-ciphers: what nginx negotiates with them, and exit 59 with a
 * message naming the flag and the list when OpenSSL can use nothing of it. */
START_TEST(cli_cipher_flags)
{
    static const struct harness_file files[] = {{"f1k.bin", 1024}};
    struct env e;
    struct cli_out r;
    char url12[256], url13[256];
    const bool aes = cpu_has_aes();
    env_init(&e);
    env_files(&e, files, 1);
    env_nginx(&e);
    snprintf(url13, sizeof(url13), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_GOOD]);
    snprintf(url12, sizeof(url12), "https://127.0.0.1:%d/f1k.bin", e.port[SRV_TLS12]);
    const char *ca = e.cr[CR_CA].cert_path;

    cli_exec(&e, (const char *[]){"-sS", "-I", "--cacert", ca, url13, NULL}, &r);
    ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
    ck_assert_msg(strstr(r.out, aes ? "X-TLS-Cipher: TLS_AES_128_GCM_SHA256\r\n"
                                    : "X-TLS-Cipher: TLS_CHACHA20_POLY1305_SHA256\r\n") != NULL,
                  "head:\n%s", r.out);

    cli_exec(&e,
             (const char *[]){"-sS", "-I", "--cacert", ca, "--tls13-ciphers",
                              "TLS_CHACHA20_POLY1305_SHA256", url13, NULL},
             &r);
    ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
    ck_assert_msg(strstr(r.out, "X-TLS-Cipher: TLS_CHACHA20_POLY1305_SHA256\r\n") != NULL,
                  "head:\n%s", r.out);

    cli_exec(&e,
             (const char *[]){"-sS", "-I", "--cacert", ca, "--ciphers",
                              "ECDHE-ECDSA-CHACHA20-POLY1305", url12, NULL},
             &r);
    ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
    ck_assert_msg(strstr(r.out, "X-TLS-Cipher: ECDHE-ECDSA-CHACHA20-POLY1305\r\n") != NULL,
                  "head:\n%s", r.out);

    /* Unusable lists: exit 59 before anything is fetched, the flag and the list named. */
    cli_exec(&e, (const char *[]){"--cacert", ca, "--ciphers", "FOO:BAR", url12, NULL}, &r);
    ck_assert_int_eq(r.status, 59);
    ck_assert_str_eq(r.out, "");
    ck_assert_msg(strstr(r.err, "sluice: (59) option --ciphers: ") == r.err &&
                      strstr(r.err, "\"FOO:BAR\"") != NULL,
                  "stderr: %s", r.err);
    cli_exec(&e,
             (const char *[]){"--cacert", ca, "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256",
                              "--tls13-ciphers", "TLS_AES_128_GCM_SHA257", url13, NULL},
             &r);
    ck_assert_int_eq(r.status, 59);
    ck_assert_msg(strstr(r.err, "sluice: (59) option --tls13-ciphers: ") == r.err &&
                      strstr(r.err, "\"TLS_AES_128_GCM_SHA257\"") != NULL,
                  "stderr: %s", r.err);
    /* -s silences it, as it does every error message; the status stays. */
    cli_exec(&e, (const char *[]){"-s", "--tls13-ciphers", "", url13, NULL}, &r);
    ck_assert_int_eq(r.status, 59);
    ck_assert_str_eq(r.err, "");
    env_finish(&e);
}
END_TEST

static Suite *https_suite(void)
{
    Suite *s = suite_create("integ-https");
    TCase *tc;

    tc = tcase_create("verify");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, good_cert_by_name_and_ip);
    tcase_add_test(tc, bad_certs_fail_with_their_codes);
    tcase_add_test(tc, bad_certs_pass_when_insecure);
    suite_add_tcase(s, tc);

    tc = tcase_create("resume");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, session_resumption_tls13_and_tls12);
    suite_add_tcase(s, tc);

    tc = tcase_create("version");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, version_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("client-cert");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, client_cert_nginx);
    tcase_add_test(tc, client_cert_refused_in_handshake);
    tcase_add_test(tc, client_key_mismatch);
    suite_add_tcase(s, tc);

    tc = tcase_create("download");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, large_download_and_reuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("download-1gib");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, download_1gib);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, handshake_silent_server_timeouts);
    tcase_add_test(tc, handshake_dripped);
    tcase_add_test(tc, key_update_mid_body);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, truncation_without_close_notify);
    tcase_add_test(tc, close_notify_on_idle_close);
    suite_add_tcase(s, tc);

    tc = tcase_create("redirects");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, redirect_http_to_https);
    tcase_add_test(tc, redirect_https_to_http);
    suite_add_tcase(s, tc);

    tc = tcase_create("scheme");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, pool_keyed_by_scheme);
    suite_add_tcase(s, tc);

    tc = tcase_create("ciphers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, cipher_options_negotiate);
    tcase_add_test(tc, cipher_options_refused_at_client_new);
    tcase_add_test(tc, cli_cipher_flags);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(https_suite());
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
