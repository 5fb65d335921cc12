/*
 * gather.c -- fetch many URLs at once as one transfer group, with the
 * public API only:
 *
 *   gather [--fail-fast] [--deadline MS] [--retry N] URL...
 *
 * Every URL becomes a request in one sl_group_t. By default the group
 * collects every result (asyncio's gather(..., return_exceptions=True));
 * with --fail-fast the first failure cancels the others (TaskGroup). A
 * deadline bounds the whole group. Retries (with backoff, Retry-After and
 * adaptive per-host back-off) happen inside each member. Bodies are
 * counted, not kept.
 *
 * Prints one line per URL, in the order given, then the group's outcome;
 * exits 0 only if the group succeeded.
 */
#include <sluice.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int on_data(sl_req_t *req, const void *data, size_t len)
{
    (void)req;
    (void)data;
    (void)len;
    return 0; /* the byte count is in the result */
}

static void on_group_done(sl_group_t *g, int err)
{
    for (size_t i = 0; i < sl_group_size(g); i++) {
        sl_req_t *req = sl_group_req(g, i);
        const sl_result_t *r = sl_req_result(req);
        if (r->error == 0)
            printf("%-50s %3d %10" PRIu64 " bytes %8.1f ms  retries %u\n", sl_req_url(req),
                   r->status, r->bytes_down, r->time_total_us / 1000.0, r->retries);
        else
            printf("%-50s %s: %s\n", sl_req_url(req), sl_err_name(r->error), r->errmsg);
    }
    size_t ok = 0, failed = 0;
    sl_group_counts(g, NULL, &ok, &failed);
    if (err == 0)
        printf("group: all %zu succeeded\n", ok);
    else
        printf("group: %s (%s); %zu succeeded, %zu failed\n", sl_err_name(err),
               sl_group_errdetail(g), ok, failed);
}

int main(int argc, char **argv)
{
    sl_loop_t loop;
    sl_client_t *client = NULL;
    sl_group_t *g = NULL;
    sl_client_opts_t opts;
    sl_group_mode_t mode = SL_GROUP_COLLECT;
    uint64_t deadline = 0;
    unsigned retries = 0;
    int i = 1, err;

    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--fail-fast") == 0)
            mode = SL_GROUP_FAIL_FAST;
        else if (strcmp(argv[i], "--deadline") == 0 && i + 1 < argc)
            deadline = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--retry") == 0 && i + 1 < argc)
            retries = (unsigned)strtoul(argv[++i], NULL, 10);
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: gather [--fail-fast] [--deadline MS] [--retry N] URL...\n");
        return 2;
    }
    if (sl_loop_init(&loop) < 0)
        return 1;
    sl_client_opts_init(&opts);
    opts.adaptive = retries > 0;
    if (sl_client_new(&loop, &opts, &client) < 0 || sl_group_new(&loop, mode, &g) < 0) {
        fprintf(stderr, "gather: out of memory\n");
        return 1;
    }
    for (; i < argc; i++) {
        sl_req_t *req;
        const char *why = NULL;
        int rc = sl_req_new(client, "GET", argv[i], &req, &why);
        if (rc < 0) {
            fprintf(stderr, "gather: %s: %s\n", argv[i], why != NULL ? why : sl_strerror(rc));
            continue;
        }
        sl_req_callbacks(req, NULL, on_data, NULL);
        sl_req_follow(req, 10, false);
        if (retries > 0)
            sl_req_retry(req, &(sl_retry_t){.max = retries, .delay_ms = 200});
        sl_group_add(g, req); /* the group owns the request from here */
    }
    sl_group_deadline(g, deadline);
    sl_group_start(g, on_group_done);
    sl_loop_run(&loop);

    err = sl_group_error(g);
    sl_group_free(g);
    sl_client_free(client);
    sl_loop_run(&loop);
    if (sl_loop_close(&loop) != 0)
        fprintf(stderr, "gather: the loop still had handles\n");
    return err == 0 ? 0 : 1;
}
