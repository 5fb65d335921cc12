/*
 * bench-tls.c -- sluice over HTTPS against its peers over loopback, in one run.
 *
 * Like bench-http: Debian's nginx runs pinned to CPU 0 (generated config,
 * files and certificates in a temporary directory) and every client pinned
 * to CPU 1, so that client CPU time can be compared and not only wall time.
 * Each figure is the median of --runs runs (default 3); the peers take turns
 * within each run, so that a change in the load of a shared machine falls on
 * all of them. Peers missing from the machine are reported as skipped, never
 * guessed. nginx's own CPU time is reported beside each run: a server that
 * is not saturated while the client is not either means the machine, not
 * the programs, set the pace.
 *
 * Certificates: a CA and a leaf for localhost and 127.0.0.1, made here with
 * the OpenSSL API, EC P-256 by default (RSA-2048 with --rsa). nginx offers
 * TLS 1.2 and 1.3 (only 1.2 with --tls12). sluice verifies the chain and the
 * address against that CA (tls_cafile, --cacert); wrk verifies nothing, and
 * s_time is given the CA but ignores the verification result and never
 * checks the host.
 *
 *   A. HTTPS keep-alive GETs of a 1 KiB file, 50 connections, --duration
 *      seconds: requests/s and client CPU per request, sluice (the library,
 *      in this process) beside `wrk -t1 -c50`.
 *   B. TLS handshakes, one after another, --hs-time seconds each, one GET of
 *      1 KiB per connection ("Connection: close"): client CPU per full and
 *      per resumed handshake, sluice beside `openssl s_time -new` and
 *      `-reuse` (-www, same file). sluice's full handshakes are measured
 *      twice: with a new client each time (TLS context and CA load
 *      included) and with one client against a second nginx server that
 *      refuses resumption (the handshake alone). Then the memory of an idle
 *      pooled connection: RSS growth over 200 of them, TLS beside plain TCP,
 *      each measured in a fresh process (`--mem-child`, internal).
 *   C. a 1 GiB HTTPS download to /dev/null: MB/s and client CPU, sluice CLI
 *      beside curl, with `openssl speed` of the negotiated cipher (one core,
 *      16 KiB blocks) as the crypto ceiling.
 *
 * --only ABC picks the parts (for profiling one of them); --quick is one
 * short run without the 1 GiB file.
 *
 * Output: one machine-readable line per measurement (`bench=tls ...`), then
 * a summary with the ratios and whether each target of issue 4 holds.
 */
#include <sluice.h>

#include "bench-common.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define MAX_RUNS 9
#define MEM_CONNS 200

static int runs = 3;
static double duration = 5.0;
static int hs_time = 3;
static bool quick;
static bool skip_big;
static bool use_rsa;
static const char *only = "ABC"; /* the parts to run (--only) */
static bool tls12; /* nginx offers TLS 1.2 only (1.22's default lacks 1.3, so it is explicit) */
static char dir[256];
static char cafile[300];
static int port;       /* HTTPS, sessions resumable */
static int port_nores; /* HTTPS, the server refuses every resumption */
static int port_http;  /* plain HTTP, for the memory comparison */
static pid_t nginx_pid = -1;
static char sluice_path[512];
static char self_path[512];

/* The 1-minute load average: how busy the machine was besides us. */
static double loadavg(void)
{
    double v = -1;
    FILE *f = fopen("/proc/loadavg", "r");

    if (f != NULL) {
        if (fscanf(f, "%lf", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* The smallest value. Contention from other programs only ever adds CPU
 * time, so on a shared machine the best run is a useful second opinion. */
static double best(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

/* ---- certificates -------------------------------------------------------------- */

static EVP_PKEY *gen_key(void)
{
    return use_rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return -1;
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/* A certificate for `key` named `cn`, signed by `issuer`/`issuer_key`, or
 * self-signed as a CA when `issuer` is NULL. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       long serial)
{
    X509 *x = X509_new();
    X509_NAME *name;
    bool ca = issuer == NULL;

    if (x == NULL)
        return NULL;
    name = X509_get_subject_name(x);
    if (X509_set_version(x, X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600) == NULL ||
        X509_set_pubkey(x, key) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, ca ? name : X509_get_subject_name(issuer)) != 1)
        goto fail;
    if (add_ext(x, ca ? x : issuer, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, ca ? x : issuer, NID_authority_key_identifier, "keyid:always") < 0)
        goto fail;
    if (ca) {
        if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
            add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0)
            goto fail;
    } else {
        if (add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            add_ext(x, issuer, NID_key_usage,
                    use_rsa ? "critical,digitalSignature,keyEncipherment"
                            : "critical,digitalSignature") < 0 ||
            add_ext(x, issuer, NID_ext_key_usage, "serverAuth") < 0 ||
            add_ext(x, issuer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") < 0)
            goto fail;
    }
    if (X509_sign(x, ca ? key : issuer_key, EVP_sha256()) <= 0)
        goto fail;
    return x;
fail:
    X509_free(x);
    return NULL;
}

static int write_pem(const char *name, X509 *cert, EVP_PKEY *key)
{
    char path[512];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    ok = cert != NULL ? PEM_write_X509(f, cert)
                      : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

/* ca.pem (the trust anchor given to every client), leaf.pem and leaf.key
 * (nginx's certificate and key). */
static int make_certs(void)
{
    EVP_PKEY *ca_key = gen_key(), *leaf_key = gen_key();
    X509 *ca = NULL, *leaf = NULL;
    int rc = -1;

    if (ca_key == NULL || leaf_key == NULL)
        goto fail;
    ca = make_cert("sluice bench CA", ca_key, NULL, NULL, 1);
    if (ca == NULL)
        goto fail;
    leaf = make_cert("localhost", leaf_key, ca, ca_key, 2);
    if (leaf == NULL)
        goto fail;
    if (write_pem("ca.pem", ca, NULL) < 0 || write_pem("leaf.pem", leaf, NULL) < 0 ||
        write_pem("leaf.key", NULL, leaf_key) < 0)
        goto fail;
    snprintf(cafile, sizeof(cafile), "%s/ca.pem", dir);
    rc = 0;
fail:
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(ca_key);
    return rc;
}

/* ---- nginx ------------------------------------------------------------------- */

static int nginx_start(void)
{
    char path[512];
    FILE *f;

    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-tls-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/www", dir);
    mkdir(path, 0755);
    if (make_certs() < 0) {
        fprintf(stderr, "bench-tls: could not generate the certificates\n");
        return -1;
    }
    if (bench_write_pattern(dir, "1k.bin", 1024) < 0 ||
        (!skip_big && strchr(only, 'C') != NULL &&
         bench_write_pattern(dir, "1g.bin", 1ull << 30) < 0))
        return -1;
    port = bench_free_port();
    do
        port_nores = bench_free_port();
    while (port_nores == port);
    do
        port_http = bench_free_port();
    while (port_http == port || port_http == port_nores);
    snprintf(path, sizeof(path), "%s/nginx.conf", dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    /* The second HTTPS server keeps no sessions and issues no tickets, so
     * one client connecting to it again and again makes full handshakes
     * without paying for a new client (TLS context, CA load) each time. */
    fprintf(f,
            "%s"
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
            "error_log %s/error.log error;\nevents { worker_connections 4096; }\n"
            "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
            "  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n"
            "  client_body_temp_path %s/tmp;\n  proxy_temp_path %s/tmp;\n"
            "  fastcgi_temp_path %s/tmp;\n  uwsgi_temp_path %s/tmp;\n  scgi_temp_path %s/tmp;\n"
            "  ssl_protocols %s;\n"
            "  ssl_certificate %s/leaf.pem;\n  ssl_certificate_key %s/leaf.key;\n"
            "  server {\n    listen 127.0.0.1:%d ssl backlog=4096;\n    root %s/www;\n"
            "    ssl_session_cache shared:SSL:10m;\n    ssl_session_tickets on;\n  }\n"
            "  server {\n    listen 127.0.0.1:%d ssl backlog=4096;\n    root %s/www;\n"
            "    ssl_session_cache off;\n    ssl_session_tickets off;\n  }\n"
            "  server {\n    listen 127.0.0.1:%d backlog=4096;\n    root %s/www;\n  }\n}\n",
            geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir, dir,
            tls12 ? "TLSv1.2" : "TLSv1.2 TLSv1.3", dir, dir, port, dir, port_nores, dir, port_http,
            dir);
    fclose(f);
    snprintf(path, sizeof(path), "%s/tmp", dir);
    mkdir(path, 0755);
    nginx_pid = fork();
    if (nginx_pid == 0) {
        char conf[512];
        bench_pin(0);
        snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
        execl("/usr/sbin/nginx", "nginx", "-c", conf, "-p", dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        if (bench_port_open(port) && bench_port_open(port_nores) && bench_port_open(port_http))
            return 0;
        usleep(50000);
    }
    return -1;
}

static void nginx_stop(void)
{
    char cmd[300];

    if (nginx_pid > 0) {
        kill(nginx_pid, SIGTERM);
        waitpid(nginx_pid, NULL, 0);
        nginx_pid = -1;
    }
    if (dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench-tls: could not remove %s\n", dir);
    }
}

/* CPU seconds (user + system) nginx has used so far: with master_process
 * off, its one process is the worker. It tells whether the server, not the
 * client, bounded a measurement. */
static double nginx_cpu(void)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    const char *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)nginx_pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15, counted after the ")" that ends the command name. */
    p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- child processes --------------------------------------------------------- */

/* ---- A: keep-alive requests/s, in process -------------------------------------- */

struct ka {
    sl_client_t *client;
    char url[128];
    uint64_t done, failed;
    int first_error;
    double deadline;
    sl_loop_t *loop;
};

static void ka_start(struct ka *k);

static void ka_done(sl_req_t *req, int status)
{
    struct ka *k = sl_req_data(req);
    sl_req_free(req);
    if (status == 0) {
        k->done++;
    } else {
        k->failed++;
        if (k->first_error == 0)
            k->first_error = status;
    }
    if ((k->done & 255) == 0)
        sl_loop_update_time(k->loop);
    if ((double)sl_loop_now_ns(k->loop) / 1e9 < k->deadline && k->failed < 1000)
        ka_start(k);
}

static void ka_start(struct ka *k)
{
    sl_req_t *req;
    if (sl_req_new(k->client, "GET", k->url, &req, NULL) < 0)
        return;
    sl_req_set_data(req, k);
    sl_req_callbacks(req, NULL, NULL, ka_done);
    sl_req_start(req);
}

/* One run of sluice: fills the requests/s and the CPU microseconds per request. */
static int ka_sluice(const char *url, int r, double *rps, double *cpu_us, double *busy)
{
    sl_loop_t loop;
    sl_client_opts_t o;
    struct ka k = {0};
    struct rusage a, b;

    sl_loop_init(&loop);
    sl_client_opts_init(&o);
    o.max_connections = 50;
    o.tls_cafile = cafile;
    sl_client_new(&loop, &o, &k.client);
    k.loop = &loop;
    snprintf(k.url, sizeof(k.url), "%s", url);
    getrusage(RUSAGE_SELF, &a);
    double t0 = bench_now_s(), srv0 = nginx_cpu();
    k.deadline = (double)sl_loop_now_ns(&loop) / 1e9 + duration;
    for (int i = 0; i < 50; i++)
        ka_start(&k);
    sl_loop_run(&loop);
    double wall = bench_now_s() - t0, srv = nginx_cpu() - srv0;
    getrusage(RUSAGE_SELF, &b);
    sl_client_free(k.client);
    sl_loop_run(&loop);
    sl_loop_close(&loop);
    double cpu = bench_tv_s(b.ru_utime) - bench_tv_s(a.ru_utime) + bench_tv_s(b.ru_stime) -
                 bench_tv_s(a.ru_stime);
    *rps = (double)k.done / wall;
    *busy = srv / wall;
    *cpu_us = k.done > 0 ? cpu / (double)k.done * 1e6 : 0;
    printf("bench=tls test=keepalive impl=sluice run=%d requests=%llu failed=%llu "
           "wall_s=%.3f cpu_s=%.3f server_cpu_s=%.2f rps=%.0f cpu_us_per_req=%.2f%s%s\n",
           r, (unsigned long long)k.done, (unsigned long long)k.failed, wall, cpu, srv, *rps,
           *cpu_us, k.failed ? " first_error=" : "", k.failed ? sl_err_name(k.first_error) : "");
    fflush(stdout);
    return k.done > 0 ? 0 : -1;
}

static int ka_wrk(const char *url, int r, double *rps, double *cpu_us, double *busy)
{
    char dur[32];
    struct bench_child cr;
    double req_total;

    snprintf(dur, sizeof(dur), "%ds", (int)(duration + 0.5));
    char *argv[] = {"wrk", "-t1", "-c50", "-d", dur, (char *)url, NULL};
    double srv = nginx_cpu();
    bench_run_child(argv, NULL, false, &cr);
    srv = nginx_cpu() - srv;
    char *p = strstr(cr.out, "Requests/sec:");
    char *q = strstr(cr.out, "requests in");
    if (p == NULL || q == NULL)
        return -1;
    /* "  682361 requests in 10.00s, ..." */
    while (q > cr.out && q[-1] != '\n')
        q--;
    req_total = strtod(q, NULL);
    if (req_total <= 0)
        return -1;
    *rps = strtod(p + 13, NULL);
    *cpu_us = cr.cpu / req_total * 1e6;
    *busy = srv / cr.wall;
    printf("bench=tls test=keepalive impl=wrk run=%d requests=%.0f wall_s=%.3f cpu_s=%.3f "
           "server_cpu_s=%.2f rps=%.0f cpu_us_per_req=%.2f\n",
           r, req_total, cr.wall, cr.cpu, srv, *rps, *cpu_us);
    fflush(stdout);
    return 0;
}

static void bench_keepalive(void)
{
    double rps[MAX_RUNS], cpu_us[MAX_RUNS], busy[MAX_RUNS];
    double wrps[MAX_RUNS], wcpu_us[MAX_RUNS], wbusy[MAX_RUNS];
    int sn = 0, wn = 0;
    bool wrk = bench_have("wrk");
    char url[128];

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/1k.bin", port);
    /* The peers take turns run by run, so that a change in the load of the
     * machine (it may be shared) falls on both rather than on one. */
    for (int r = 0; r < runs; r++) {
        if (ka_sluice(url, r, &rps[sn], &cpu_us[sn], &busy[sn]) == 0)
            sn++;
        if (wrk && ka_wrk(url, r, &wrps[wn], &wcpu_us[wn], &wbusy[wn]) == 0)
            wn++;
    }
    printf("\nA. HTTPS keep-alive GET 1 KiB, 50 connections, %.0f s (median of %d)\n", duration,
           runs);
    printf("   %-8s %12s %20s %10s %12s\n", "client", "requests/s", "CPU us per request", "(best)",
           "nginx busy");
    double s_rps = sn > 0 ? bench_median(rps, sn) : 0,
           s_cpu = sn > 0 ? bench_median(cpu_us, sn) : 0;
    double s_best = sn > 0 ? best(cpu_us, sn) : 0;
    if (sn > 0)
        printf("   %-8s %12.0f %20.2f %10.2f %11.0f%%\n", "sluice", s_rps, s_cpu, s_best,
               100 * bench_median(busy, sn));
    else
        printf("   sluice: failed\n");
    if (wn > 0) {
        double w_rps = bench_median(wrps, wn), w_cpu = bench_median(wcpu_us, wn),
               w_best = best(wcpu_us, wn);
        printf("   %-8s %12.0f %20.2f %10.2f %11.0f%%   (does not verify the certificate)\n", "wrk",
               w_rps, w_cpu, w_best, 100 * bench_median(wbusy, wn));
        if (sn > 0)
            printf("   sluice CPU per request = %.2fx wrk's (best runs: %.2fx) (target <= 1.00): "
                   "%s\n",
                   s_cpu / w_cpu, s_best / w_best, s_cpu / w_cpu <= 1.0 ? "MET" : "NOT MET");
    } else {
        printf("   wrk: %s, skipped\n", wrk ? "failed" : "not installed");
    }
    printf("\n");
}

/* ---- B: handshakes, in process and s_time ---------------------------------------- */

/* Sequential requests, each on a new connection ("Connection: close"), until
 * the deadline. With `fresh`, every request gets a new client, so nothing
 * (session, TLS context) carries over from the previous one. */
struct hs {
    sl_loop_t *loop;
    sl_client_t *client;
    sl_client_opts_t opts;
    char url[128];
    bool fresh;
    uint64_t done, failed, handshakes, resumed;
    int first_error;
    double deadline;
};

static void hs_start(struct hs *h);

/* The TLS line of the trace: "TLS TLSv1.3, <cipher>, ALPN ...[, session resumed]". */
static void hs_trace(sl_req_t *req, sl_trace_kind_t kind, const char *data, size_t len)
{
    struct hs *h = sl_req_data(req);

    if (kind != SL_TRACE_INFO || len < 4 || memcmp(data, "TLS ", 4) != 0)
        return;
    h->handshakes++;
    if (memmem(data, len, "session resumed", 15) != NULL)
        h->resumed++;
}

static void hs_done(sl_req_t *req, int status)
{
    struct hs *h = sl_req_data(req);

    sl_req_free(req);
    if (status == 0) {
        h->done++;
    } else {
        h->failed++;
        if (h->first_error == 0)
            h->first_error = status;
    }
    if (h->fresh) {
        sl_client_free(h->client);
        h->client = NULL;
    }
    sl_loop_update_time(h->loop);
    if ((double)sl_loop_now_ns(h->loop) / 1e9 < h->deadline && h->failed < 100)
        hs_start(h);
}

static void hs_start(struct hs *h)
{
    sl_req_t *req;

    if (h->client == NULL && sl_client_new(h->loop, &h->opts, &h->client) < 0)
        return;
    if (sl_req_new(h->client, "GET", h->url, &req, NULL) < 0)
        return;
    sl_req_set_data(req, h);
    sl_req_header(req, "Connection", "close");
    sl_req_trace(req, hs_trace);
    sl_req_callbacks(req, NULL, NULL, hs_done);
    sl_req_start(req);
}

struct hs_stat {
    double cpu_us[MAX_RUNS], user_us[MAX_RUNS], rate[MAX_RUNS];
    int n;
    uint64_t handshakes, resumed; /* over all runs */
};

/* One run of sluice against port `p`; appends to `st`. */
static void hs_sluice(const char *impl, int p, bool fresh, int r, struct hs_stat *st)
{
    sl_loop_t loop;
    struct hs h = {.loop = &loop, .fresh = fresh};
    struct rusage a, b;

    sl_loop_init(&loop);
    sl_client_opts_init(&h.opts);
    h.opts.tls_cafile = cafile;
    snprintf(h.url, sizeof(h.url), "https://127.0.0.1:%d/1k.bin", p);
    getrusage(RUSAGE_SELF, &a);
    double t0 = bench_now_s(), srv0 = nginx_cpu();
    h.deadline = (double)sl_loop_now_ns(&loop) / 1e9 + hs_time;
    hs_start(&h);
    sl_loop_run(&loop);
    double wall = bench_now_s() - t0, srv = nginx_cpu() - srv0;
    getrusage(RUSAGE_SELF, &b);
    if (h.client != NULL)
        sl_client_free(h.client);
    sl_loop_run(&loop);
    sl_loop_close(&loop);
    double user = bench_tv_s(b.ru_utime) - bench_tv_s(a.ru_utime);
    double cpu = user + bench_tv_s(b.ru_stime) - bench_tv_s(a.ru_stime);
    printf("bench=tls test=handshake impl=%s run=%d requests=%llu failed=%llu "
           "handshakes=%llu resumed=%llu wall_s=%.3f cpu_s=%.3f user_s=%.3f "
           "server_cpu_s=%.2f per_s=%.0f cpu_us_per_hs=%.1f%s%s\n",
           impl, r, (unsigned long long)h.done, (unsigned long long)h.failed,
           (unsigned long long)h.handshakes, (unsigned long long)h.resumed, wall, cpu, user, srv,
           (double)h.handshakes / wall, h.handshakes ? cpu / (double)h.handshakes * 1e6 : 0,
           h.failed ? " first_error=" : "", h.failed ? sl_err_name(h.first_error) : "");
    fflush(stdout);
    if (h.handshakes == 0)
        return;
    st->cpu_us[st->n] = cpu / (double)h.handshakes * 1e6;
    st->user_us[st->n] = user / (double)h.handshakes * 1e6;
    st->rate[st->n] = (double)h.handshakes / wall;
    st->handshakes += h.handshakes;
    st->resumed += h.resumed;
    st->n++;
}

/* One run of `openssl s_time -new|-reuse -www /1k.bin`: the same GET on
 * every connection, which nginx answers (HTTP/1.0) and closes. It prints one
 * character per connection ('r' resumed, '*' full) and then
 * "N connections in T s; R connections/user sec, ..." where T is the user
 * CPU time of its timed loop only (times()); the figure compared is the
 * process's user + system time from wait4(), like sluice's. Appends to `st`. */
static void hs_stime(const char *mode, int r, struct hs_stat *st)
{
    char hostport[64], secs[16], out[512];
    struct bench_child cr;
    unsigned long nconn = 0, resumed = 0, full = 0;
    double utime = 0, per_user_s = 0;
    char *line = NULL;
    size_t cap = 0;
    FILE *f;

    snprintf(hostport, sizeof(hostport), "127.0.0.1:%d", port);
    snprintf(secs, sizeof(secs), "%d", hs_time);
    snprintf(out, sizeof(out), "%s/s_time.out", dir);
    char *argv[] = {"openssl", "s_time", "-connect", hostport,  (char *)mode, "-time",
                    secs,      "-www",   "/1k.bin",  "-CAfile", cafile,       NULL};
    double srv = nginx_cpu();
    if (bench_run_child(argv, out, false, &cr) != 0) {
        printf("bench=tls test=handshake impl=s_time%s run=%d (failed)\n", mode, r);
        return;
    }
    srv = nginx_cpu() - srv;
    f = fopen(out, "r");
    if (f == NULL)
        return;
    /* The progress characters form a line of their own; the summary follows. */
    while (getline(&line, &cap, f) > 0) {
        size_t len = strcspn(line, "\n");
        if (len > 0 && strspn(line, "r*t3") == len) {
            for (size_t i = 0; i < len; i++) {
                if (line[i] == 'r')
                    resumed++;
                else
                    full++;
            }
        } else if (strstr(line, "connections/user sec") != NULL) {
            sscanf(line, "%lu connections in %lfs; %lf", &nconn, &utime, &per_user_s);
        }
    }
    free(line);
    fclose(f);
    if (nconn == 0)
        return;
    printf("bench=tls test=handshake impl=s_time%s run=%d connections=%lu resumed=%lu "
           "full=%lu wall_s=%.3f cpu_s=%.3f user_s=%.3f server_cpu_s=%.2f "
           "conn_per_user_s=%.1f cpu_us_per_hs=%.1f\n",
           mode, r, nconn, resumed, full, cr.wall, cr.cpu, cr.user, srv, per_user_s,
           cr.cpu / (double)nconn * 1e6);
    fflush(stdout);
    st->cpu_us[st->n] = cr.cpu / (double)nconn * 1e6;
    /* The user time s_time reports itself (its loop only). */
    st->user_us[st->n] = per_user_s > 0 ? 1e6 / per_user_s : 0;
    st->rate[st->n] = (double)nconn / cr.wall;
    st->handshakes += nconn;
    st->resumed += resumed;
    st->n++;
}

static long rss_kb(void)
{
    long size = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = 0;
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

struct mem {
    sl_loop_t *loop;
    sl_client_t *client;
    unsigned pending, done, failed, reused;
    int first_error;
};

static void mem_done(sl_req_t *req, int status)
{
    struct mem *m = sl_req_data(req);

    if (status == 0)
        m->done++;
    else if (m->failed++ == 0)
        m->first_error = status;
    if (sl_req_result(req)->reused)
        m->reused++;
    sl_req_free(req);
    m->pending--;
}

static void mem_get(struct mem *m, const char *url, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        sl_req_t *req;
        if (sl_req_new(m->client, "GET", url, &req, NULL) < 0)
            return;
        sl_req_set_data(req, m);
        sl_req_callbacks(req, NULL, NULL, mem_done);
        if (sl_req_start(req) == 0)
            m->pending++;
    }
}

static void mem_idle_cb(sl_timer_t *t)
{
    (void)t;
}

/* Runs in its own process (`bench-tls --mem-child SCHEME PORT CAFILE`), so
 * that the heap holds no memory freed by earlier measurements for the
 * connections to reuse. Prints one `key=value` line. */
static int mem_child(const char *scheme, int p, const char *ca)
{
    sl_loop_t loop;
    sl_client_opts_t o;
    sl_timer_t idle;
    struct mem m = {.loop = &loop};
    char url[160];
    long before, after;
    size_t heap_before, heap_after;

    snprintf(url, sizeof(url), "%s://127.0.0.1:%d/1k.bin", scheme, p);
    if (sl_loop_init(&loop) < 0)
        return 1;
    sl_client_opts_init(&o);
    o.max_connections = MEM_CONNS;
    o.idle_timeout_ms = 60000;
    o.tls_cafile = ca;
    if (sl_client_new(&loop, &o, &m.client) < 0)
        return 1;
    /* One request first: the TLS context, the CA store and every first-use
     * allocation exist before the baseline; its connection stays pooled. */
    mem_get(&m, url, 1);
    sl_loop_run(&loop);
    before = rss_kb();
    heap_before = mallinfo2().uordblks;
    m.reused = m.done = 0;
    mem_get(&m, url, MEM_CONNS);
    sl_loop_run(&loop);
    /* Let them sit idle a moment (late tickets, released buffers). */
    sl_timer_init(&loop, &idle, mem_idle_cb);
    sl_timer_start(&idle, 300, 0);
    sl_loop_run(&loop);
    after = rss_kb();
    heap_after = mallinfo2().uordblks;
    printf("requests=%u failed=%u new_conns=%u rss_before_kb=%ld rss_after_kb=%ld "
           "heap_growth_kb=%.1f%s%s\n",
           m.done, m.failed, m.done - m.reused, before, after,
           ((double)heap_after - (double)heap_before) / 1024, m.failed ? " first_error=" : "",
           m.failed ? sl_err_name(m.first_error) : "");
    sl_client_free(m.client);
    sl_loop_run(&loop);
    sl_loop_close(&loop);
    return 0;
}

/* Median RSS growth per new idle connection, KiB; the malloc'd bytes still
 * in use per connection go to *heap (RSS also holds the allocator's slack
 * and the freed handshake memory it has not returned). */
static double mem_per_conn(const char *scheme, int p, double *heap)
{
    double kb[MAX_RUNS], heap_kb[MAX_RUNS];
    int n = 0;
    char ps[16];

    snprintf(ps, sizeof(ps), "%d", p);
    for (int r = 0; r < runs; r++) {
        char *argv[] = {self_path, "--mem-child", (char *)scheme, ps, cafile, NULL};
        struct bench_child cr;
        unsigned done = 0, failed = 0, fresh = 0;
        long before = 0, after = 0;
        double hkb = 0;

        if (bench_run_child(argv, NULL, false, &cr) != 0 ||
            sscanf(cr.out,
                   "requests=%u failed=%u new_conns=%u rss_before_kb=%ld rss_after_kb=%ld "
                   "heap_growth_kb=%lf",
                   &done, &failed, &fresh, &before, &after, &hkb) != 6 ||
            fresh == 0) {
            printf("bench=tls test=idle_conn_mem scheme=%s run=%d (failed) %s", scheme, r, cr.out);
            continue;
        }
        kb[n] = (double)(after - before) / fresh;
        heap_kb[n] = hkb / fresh;
        printf("bench=tls test=idle_conn_mem scheme=%s run=%d new_conns=%u failed=%u "
               "rss_growth_kb=%ld kb_per_conn=%.1f heap_kb_per_conn=%.1f\n",
               scheme, r, fresh, failed, after - before, kb[n], heap_kb[n]);
        fflush(stdout);
        n++;
    }
    if (n == 0)
        return -1;
    *heap = bench_median(heap_kb, n);
    return bench_median(kb, n);
}

static void bench_handshake(void)
{
    struct hs_stat s_new = {0}, s_one = {0}, s_res = {0}, t_new = {0}, t_res = {0};
    bool stime = bench_have("openssl");

    for (int r = 0; r < runs; r++) {
        hs_sluice("sluice-new-client", port, true, r, &s_new);
        if (stime)
            hs_stime("-new", r, &t_new);
        hs_sluice("sluice-no-resume", port_nores, false, r, &s_one);
        hs_sluice("sluice-resume", port, false, r, &s_res);
        if (stime)
            hs_stime("-reuse", r, &t_res);
    }
    double tls_heap = 0, tcp_heap = 0;
    double tls_kb = mem_per_conn("https", port, &tls_heap);
    double tcp_kb = mem_per_conn("http", port_http, &tcp_heap);

    printf("\nB. TLS handshakes, one GET of 1 KiB per connection, %d s each (median of %d)\n",
           hs_time, runs);
    printf("   %-34s %8s %14s %8s %8s %10s\n", "client", "per s", "CPU us per hs", "(best)",
           "user us", "resumed");
    struct {
        const char *name;
        struct hs_stat *st;
    } rows[] = {
        {"sluice, new client each (full)", &s_new},
        {"sluice, one client, no resumption", &s_one},
        {"s_time -new (full)", stime ? &t_new : NULL},
        {"sluice, one client (resumed)", &s_res},
        {"s_time -reuse (resumed)", stime ? &t_res : NULL},
    };
    double cpu[5] = {0}, cpu_best[5] = {0};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct hs_stat *st = rows[i].st;
        if (st == NULL || st->n == 0) {
            printf("   %-34s %s\n", rows[i].name, st == NULL ? "not installed, skipped" : "failed");
            continue;
        }
        cpu[i] = bench_median(st->cpu_us, st->n);
        cpu_best[i] = best(st->cpu_us, st->n);
        printf("   %-34s %8.0f %14.1f %8.1f %8.1f %6llu/%llu\n", rows[i].name,
               bench_median(st->rate, st->n), cpu[i], cpu_best[i], bench_median(st->user_us, st->n),
               (unsigned long long)st->resumed, (unsigned long long)st->handshakes);
    }
    printf("   CPU = user + system of the whole client per handshake (s_time: from wait4, so\n"
           "   with its start-up); \"user us\" for s_time is its own connections/user sec.\n");
    if (cpu[0] > 0 && cpu[2] > 0) {
        printf("   full: sluice (new client each) = %.2fx s_time -new (best runs: %.2fx) "
               "(target <= 1.00): %s\n",
               cpu[0] / cpu[2], cpu_best[0] / cpu_best[2], cpu[0] <= cpu[2] ? "MET" : "NOT MET");
        if (cpu[1] > 0)
            printf("   full: sluice (one client) = %.2fx s_time -new (best runs: %.2fx) "
                   "(the handshake alone)\n",
                   cpu[1] / cpu[2], cpu_best[1] / cpu_best[2]);
    }
    if (cpu[3] > 0 && cpu[4] > 0)
        printf("   resumed: sluice = %.2fx s_time -reuse (best runs: %.2fx) (target <= 1.00): %s\n",
               cpu[3] / cpu[4], cpu_best[3] / cpu_best[4], cpu[3] <= cpu[4] ? "MET" : "NOT MET");
    printf("   idle pooled connection, KiB each (%d opened by one client, median of %d):\n"
           "   %-34s %10s %14s\n",
           MEM_CONNS, runs, "", "RSS growth", "malloc in use");
    printf("   %-34s %10.1f %14.1f\n", "TLS (HTTPS)", tls_kb, tls_heap);
    printf("   %-34s %10.1f %14.1f\n", "plain TCP (HTTP)", tcp_kb, tcp_heap);
    printf("\n");
}

/* ---- C: 1 GiB over HTTPS ------------------------------------------------------------ */

struct big_stat {
    double mbs[MAX_RUNS], cpu[MAX_RUNS], srv[MAX_RUNS];
    int n;
};

/* One download by `impl` ("sluice" or "curl"); appends to `st`. */
static void bench_big_one(const char *impl, int r, struct big_stat *st)
{
    char url[128];
    struct bench_child cr;

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/1g.bin", port);
    char *argv_s[] = {sluice_path, "-s", "--cacert", cafile, "-o", "/dev/null", url, NULL};
    char *argv_c[] = {"curl", "-s", "--cacert", cafile, "-o", "/dev/null", url, NULL};
    double srv = nginx_cpu();
    int rc =
        bench_run_child(strcmp(impl, "sluice") == 0 ? argv_s : argv_c, "/dev/null", false, &cr);
    srv = nginx_cpu() - srv;
    if (rc != 0) {
        printf("bench=tls test=1gib impl=%s run=%d exit=%d (failed)\n", impl, r, rc);
        return;
    }
    st->mbs[st->n] = (double)(1ull << 30) / 1e6 / cr.wall;
    st->cpu[st->n] = cr.cpu;
    st->srv[st->n] = srv;
    printf("bench=tls test=1gib dest=null impl=%s run=%d wall_s=%.3f cpu_s=%.3f "
           "server_cpu_s=%.2f MBps=%.0f\n",
           impl, r, cr.wall, cr.cpu, srv, st->mbs[st->n]);
    fflush(stdout);
    st->n++;
}

/* The protocol and cipher a client negotiated, from its -v output: sluice's
 * "* TLS TLSv1.3, TLS_AES_256_GCM_SHA384, ALPN ..." or curl's
 * "* SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384". */
static void negotiated(const char *impl, char *out, size_t outlen)
{
    char url[128];
    struct bench_child cr;
    const char *p;
    size_t n;

    snprintf(out, outlen, "?");
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/1k.bin", port);
    char *argv_s[] = {sluice_path, "-v", "--cacert", cafile, "-o", "/dev/null", url, NULL};
    char *argv_c[] = {"curl", "-v", "--cacert", cafile, "-o", "/dev/null", url, NULL};
    bool sl = strcmp(impl, "sluice") == 0;
    if (bench_run_child(sl ? argv_s : argv_c, NULL, true, &cr) != 0)
        return;
    p = strstr(cr.out, sl ? "TLS TLSv" : "SSL connection using ");
    if (p == NULL)
        return;
    p += sl ? 4 : 21;
    n = strcspn(p, "\r\n");
    snprintf(out, outlen, "%.*s", (int)n, p);
    /* Keep "version, cipher" (sluice) or "version / cipher" (curl). */
    if (sl) {
        char *comma = strchr(out, ',');
        if (comma != NULL && (comma = strchr(comma + 1, ',')) != NULL)
            *comma = '\0';
    }
}

/* Single-core AES-GCM (or ChaCha20-Poly1305) speed on 16 KiB blocks, MB/s,
 * from `openssl speed -mr` ("+F:n:NAME:bytes_per_second"). */
static double crypto_ceiling(const char *cipher, const char **evp_name)
{
    struct bench_child cr;
    const char *name = "aes-128-gcm";
    const char *p;

    if (strstr(cipher, "AES_256_GCM") != NULL || strstr(cipher, "AES256-GCM") != NULL)
        name = "aes-256-gcm";
    else if (strstr(cipher, "CHACHA20") != NULL)
        name = "chacha20-poly1305";
    *evp_name = name;
    char *argv[] = {"openssl", "speed", "-mr",  "-seconds",   "1",
                    "-bytes",  "16384", "-evp", (char *)name, NULL};
    if (bench_run_child(argv, NULL, false, &cr) != 0)
        return 0;
    p = strstr(cr.out, "+F:");
    if (p == NULL || (p = strchr(p + 3, ':')) == NULL || (p = strchr(p + 1, ':')) == NULL)
        return 0;
    return strtod(p + 1, NULL) / 1e6;
}

static void bench_big(void)
{
    struct big_stat s = {0}, c = {0};
    char s_tls[128], c_tls[128];
    const char *evp_name = "";

    if (access(sluice_path, X_OK) != 0) {
        printf("\nC. 1 GiB HTTPS download: the sluice CLI is not at %s (--sluice PATH), "
               "skipped\n",
               sluice_path);
        return;
    }
    negotiated("sluice", s_tls, sizeof(s_tls));
    bool curl = bench_have("curl");
    if (curl)
        negotiated("curl", c_tls, sizeof(c_tls));
    double ceiling = bench_have("openssl") ? crypto_ceiling(s_tls, &evp_name) : 0;
    for (int r = 0; r < runs; r++) {
        bench_big_one("sluice", r, &s);
        if (curl)
            bench_big_one("curl", r, &c);
    }
    double s_mbs = s.n > 0 ? bench_median(s.mbs, s.n) : 0,
           s_cpu = s.n > 0 ? bench_median(s.cpu, s.n) : 0;
    double c_mbs = c.n > 0 ? bench_median(c.mbs, c.n) : 0,
           c_cpu = c.n > 0 ? bench_median(c.cpu, c.n) : 0;
    double s_srv = s.n > 0 ? bench_median(s.srv, s.n) : 0,
           c_srv = c.n > 0 ? bench_median(c.srv, c.n) : 0;

    printf("\nC. 1 GiB HTTPS download to /dev/null (median of %d)\n", runs);
    printf("   negotiated: sluice %s; curl %s\n", s_tls, curl ? c_tls : "-");
    double s_best = s.n > 0 ? best(s.cpu, s.n) : 0, c_best = c.n > 0 ? best(c.cpu, c.n) : 0;
    printf("   %-26s %10s %10s %8s %14s\n", "client", "MB/s", "CPU s", "(best)", "nginx CPU s");
    printf("   %-26s %10.0f %10.3f %8.3f %14.2f\n", "sluice", s_mbs, s_cpu, s_best, s_srv);
    if (curl)
        printf("   %-26s %10.0f %10.3f %8.3f %14.2f\n", "curl", c_mbs, c_cpu, c_best, c_srv);
    else
        printf("   curl: not installed, skipped\n");
    if (ceiling > 0)
        printf("   %-26s %10.0f   (openssl speed -evp %s, 16 KiB, one core)\n", "crypto ceiling",
               ceiling, evp_name);
    /* nginx encrypts every byte on its one core: 1 GiB over its CPU time is
     * the fastest it could serve, whatever the client. */
    double srv = s_srv > 0 && c_srv > 0 ? (s_srv + c_srv) / 2 : s_srv;
    double srv_ceiling = srv > 0 ? (double)(1ull << 30) / 1e6 / srv : 0;
    if (srv > 0)
        printf("   %-26s %10.0f   (1 GiB / nginx CPU s)\n", "server ceiling", srv_ceiling);
    /* Each download is 1 GiB, so the medians above are nginx CPU-s per GiB;
     * a client that reads differently (window, read sizes) can change them. */
    if (s_srv > 0 && c_srv > 0)
        printf("   nginx CPU s per GiB served (median): %.2f for sluice, %.2f for curl "
               "(sluice's = %.2fx curl's)\n",
               s_srv, c_srv, s_srv / c_srv);
    if (srv_ceiling > 0 && c_mbs > 0) {
        double need = 1.2 * c_mbs / srv_ceiling;
        /* The ceiling averages both clients' nginx cost; beside it, the
         * fraction of the ceiling nginx would have serving curl alone. */
        printf("   curl reached %.0f%% of the server ceiling", 100 * c_mbs / srv_ceiling);
        if (c_srv > 0)
            printf(" (%.0f%% of the %.0f MB/s nginx could serve at curl's own cost)",
                   100 * c_mbs * c_srv / ((double)(1ull << 30) / 1e6),
                   (double)(1ull << 30) / 1e6 / c_srv);
        printf("\n");
        printf("   1.2x curl = %.0f MB/s: the target needs %.0f%% of what nginx can serve%s\n",
               1.2 * c_mbs, 100 * need, need > 1 ? ", more than it can: out of reach here" : "");
    }
    if (c_mbs > 0 && s_mbs > 0) {
        printf("   sluice MB/s = %.2fx curl's (target >= 1.20): %s\n", s_mbs / c_mbs,
               s_mbs / c_mbs >= 1.2 ? "MET" : "NOT MET");
        printf("   sluice CPU = %.2fx curl's for the same bytes (best runs: %.2fx) "
               "(target <= 0.80): %s\n",
               s_cpu / c_cpu, s_best / c_best, s_cpu / c_cpu <= 0.8 ? "MET" : "NOT MET");
    }
    if (ceiling > 0 && s_mbs > 0)
        printf("   sluice = %.0f%% of the crypto ceiling\n", 100 * s_mbs / ceiling);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--mem-child") == 0)
        return mem_child(argv[2], atoi(argv[3]), argv[4]);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            duration = 2;
            hs_time = 1;
            runs = 1;
            skip_big = true;
        } else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
            duration = atof(argv[++i]);
        } else if (strcmp(argv[i], "--hs-time") == 0 && i + 1 < argc) {
            hs_time = atoi(argv[++i]);
            if (hs_time < 1)
                hs_time = 1;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
            if (runs < 1 || runs > MAX_RUNS)
                runs = 3;
        } else if (strcmp(argv[i], "--no-1g") == 0) {
            skip_big = true;
        } else if (strcmp(argv[i], "--rsa") == 0) {
            use_rsa = true;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--tls12") == 0) {
            tls12 = true;
        } else if (strcmp(argv[i], "--sluice") == 0 && i + 1 < argc) {
            snprintf(sluice_path, sizeof(sluice_path), "%s", argv[++i]);
        } else {
            fprintf(stderr, "usage: bench-tls [--quick] [--duration S] [--hs-time S] [--runs N] "
                            "[--no-1g] [--only ABC] [--rsa] [--tls12] [--sluice PATH]\n");
            return 2;
        }
    }
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
    if (n > 0)
        self_path[n] = '\0';
    if (sluice_path[0] == '\0' && n > 0) {
        /* The CLI next to this program in the build tree. */
        char *slash;
        snprintf(sluice_path, sizeof(sluice_path), "%s", self_path);
        slash = strrchr(sluice_path, '/');
        if (slash != NULL)
            snprintf(slash + 1, sizeof(sluice_path) - (size_t)(slash + 1 - sluice_path), "sluice");
    }
    signal(SIGPIPE, SIG_IGN);
    if (access("/usr/sbin/nginx", X_OK) != 0) {
        fprintf(stderr, "bench-tls: nginx is not installed (scripts/deps.sh bench)\n");
        return 1;
    }
    if (nginx_start() < 0) {
        fprintf(stderr, "bench-tls: could not start nginx in %s\n", dir);
        nginx_stop();
        return 1;
    }
    bench_pin(1);
    double t0 = bench_now_s();
    printf("bench-tls: load average %.2f at the start\n", loadavg());
    printf("bench-tls: nginx on 127.0.0.1:%d (HTTPS), :%d (HTTPS, no resumption), :%d (HTTP) "
           "pinned to CPU 0, clients on CPU 1; %d run(s)\n",
           port, port_nores, port_http, runs);
    printf("bench-tls: %s offered, certificates %s, CA %s; sluice verifies them, wrk does not, "
           "s_time ignores the result\n\n",
           tls12 ? "TLS 1.2" : "TLS 1.2 and 1.3", use_rsa ? "RSA-2048" : "EC P-256", cafile);
    fflush(stdout);
    if (strchr(only, 'A') != NULL)
        bench_keepalive();
    if (strchr(only, 'B') != NULL)
        bench_handshake();
    if (strchr(only, 'C') != NULL && !skip_big)
        bench_big();
    nginx_stop();
    printf("\nbench-tls: %.0f s in all; load average %.2f at the end (%ld CPUs)\n",
           bench_now_s() - t0, loadavg(), sysconf(_SC_NPROCESSORS_ONLN));
    return 0;
}
