/*
 * reactor-demo.c -- one sluice loop doing three things at once, with the
 * public API only:
 *
 *   - 64 socketpairs play ping-pong (non-blocking I/O watchers), 20,000
 *     round trips in all;
 *   - a repeating timer ticks every 20 ms, showing the loop stays
 *     responsive;
 *   - 8 CPU-bound jobs (counting primes) run on the thread pool, and their
 *     results come back to the loop thread.
 *
 * The program exits when everything is done: the loop has no active
 * handles left, and sl_loop_close() confirms nothing leaked.
 */
#include <sluice.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PAIRS 64
#define ROUND_TRIPS 20000
#define JOBS 8

struct pair {
    sl_io_t a, b;
    int fd[2];
};

static struct pair pairs[PAIRS];
static long trips_done, trips_started;
static int ticks;
static sl_timer_t ticker;

struct job {
    sl_work_t req;
    unsigned limit;
    unsigned primes;
};

static void close_pair_if_done(struct pair *p)
{
    if (trips_done >= ROUND_TRIPS) {
        sl_io_stop(&p->a);
        sl_io_stop(&p->b);
    }
}

/* b echoes what it reads; a counts a round trip and sends the next ping. */
static void on_echo(sl_io_t *io, unsigned events)
{
    struct pair *p = io->data;
    char buf[64];
    ssize_t n;
    (void)events;

    n = read(p->fd[1], buf, sizeof(buf));
    if (n > 0 && write(p->fd[1], buf, (size_t)n) != n)
        perror("echo write");
}

static void on_pong(sl_io_t *io, unsigned events)
{
    struct pair *p = io->data;
    char buf[64];
    (void)events;

    if (read(p->fd[0], buf, sizeof(buf)) <= 0)
        return;
    trips_done++;
    if (trips_started < ROUND_TRIPS) {
        trips_started++;
        if (write(p->fd[0], "ping", 4) != 4)
            perror("ping write");
    }
    close_pair_if_done(p);
    if (trips_done >= ROUND_TRIPS)
        for (int i = 0; i < PAIRS; i++)
            close_pair_if_done(&pairs[i]);
}

static void on_tick(sl_timer_t *t)
{
    (void)t;
    ticks++;
}

static void count_primes(sl_work_t *req)
{
    struct job *j = req->data;
    unsigned count = 0;

    for (unsigned n = 2; n < j->limit; n++) {
        bool prime = true;
        for (unsigned d = 2; d * d <= n; d++) {
            if (n % d == 0) {
                prime = false;
                break;
            }
        }
        count += prime;
    }
    j->primes = count;
}

static int jobs_done;

static void after_count(sl_work_t *req, int status)
{
    struct job *j = req->data;

    jobs_done++;
    printf("  job: primes below %u = %u (status %s), on the loop thread\n", j->limit, j->primes,
           sl_err_name(status));
}

int main(void)
{
    sl_loop_t loop;
    struct job jobs[JOBS];
    int rc = sl_loop_init(&loop);

    if (rc < 0) {
        fprintf(stderr, "reactor-demo: loop: %s\n", sl_strerror(rc));
        return 1;
    }
    printf("sluice %s, event backend: %s\n", sl_version(), sl_loop_backend(&loop));
    uint64_t t0 = sl_loop_now_ns(&loop);

    for (int i = 0; i < PAIRS; i++) {
        struct pair *p = &pairs[i];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fd) < 0) {
            perror("socketpair");
            return 1;
        }
        sl_io_init(&loop, &p->a, p->fd[0], on_pong);
        sl_io_init(&loop, &p->b, p->fd[1], on_echo);
        p->a.data = p->b.data = p;
        if ((rc = sl_io_start(&p->a, SL_EV_READ)) < 0 || (rc = sl_io_start(&p->b, SL_EV_READ)) < 0) {
            fprintf(stderr, "reactor-demo: watch: %s\n", sl_strerror(rc));
            return 1;
        }
        trips_started++;
        if (write(p->fd[0], "ping", 4) != 4)
            perror("ping write");
    }

    sl_timer_init(&loop, &ticker, on_tick);
    sl_timer_start(&ticker, 20, 20);
    sl_timer_unref(&ticker); /* ticks do not keep the loop alive */

    for (int i = 0; i < JOBS; i++) {
        jobs[i].limit = 200000 + 50000 * (unsigned)i;
        jobs[i].req.data = &jobs[i];
        if ((rc = sl_work_submit(&loop, &jobs[i].req, count_primes, after_count)) < 0) {
            fprintf(stderr, "reactor-demo: submit: %s\n", sl_strerror(rc));
            return 1;
        }
    }

    rc = sl_loop_run(&loop);
    sl_loop_update_time(&loop);
    double ms = (double)(sl_loop_now_ns(&loop) - t0) / 1e6;
    sl_timer_stop(&ticker);
    printf("  %ld ping-pong round trips over %d socketpairs, %d pool jobs, %d timer ticks\n",
           trips_done, PAIRS, jobs_done, ticks);
    printf("  %.1f ms wall, %.0f round trips/s, while the pool computed\n", ms,
           (double)trips_done / (ms / 1e3));
    for (int i = 0; i < PAIRS; i++) {
        close(pairs[i].fd[0]);
        close(pairs[i].fd[1]);
    }
    int crc = sl_loop_close(&loop);
    printf("  sl_loop_run: %s, sl_loop_close: %s\n", sl_err_name(rc), sl_err_name(crc));
    return rc == 0 && crc == 0 && trips_done >= ROUND_TRIPS && jobs_done == JOBS ? 0 : 1;
}
