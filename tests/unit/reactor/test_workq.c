/*
 * test_workq.c -- the thread pool: completion, cancellation, pool size,
 * draining by sl_loop_close() and failure to start threads.
 *
 * The file under test is included (h2o t/00unit style) so that the pool's
 * private struct is reachable, and so that pthread_create() can be replaced
 * by a wrapper that fails on demand.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

static int fail_create_at = -1; /* fail the Nth pthread_create from now; -1: never */
static int create_calls;
static int live_threads; /* atomic: threads started by the pool and not yet exited */

struct trampoline {
    void *(*fn)(void *);
    void *arg;
};

static void *trampoline_run(void *arg)
{
    struct trampoline t = *(struct trampoline *)arg;
    void *ret;

    free(arg);
    ret = t.fn(t.arg);
    __atomic_fetch_sub(&live_threads, 1, __ATOMIC_SEQ_CST);
    return ret;
}

/* Stands in for pthread_create() inside workq.c: counts calls and live
 * threads, and fails the call `fail_create_at` asks for. */
static int test_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                               void *arg)
{
    struct trampoline *t;
    int rc;

    create_calls++;
    if (fail_create_at == 0)
        return EAGAIN;
    if (fail_create_at > 0)
        fail_create_at--;
    t = malloc(sizeof(*t));
    if (t == NULL)
        return ENOMEM;
    t->fn = fn;
    t->arg = arg;
    __atomic_fetch_add(&live_threads, 1, __ATOMIC_SEQ_CST);
    rc = pthread_create(th, attr, trampoline_run, t);
    if (rc != 0) {
        __atomic_fetch_sub(&live_threads, 1, __ATOMIC_SEQ_CST);
        free(t);
    }
    return rc;
}

#define pthread_create test_pthread_create
#include "../../../reactor/workq.c"
#undef pthread_create

#include <check.h>
#include <signal.h>
#include <string.h>
#include <time.h>

/* ---- helpers --------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A gate that blocking jobs wait on. */
static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool open;
    int waiting; /* jobs that reached the gate */
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

static void gate_reset(void)
{
    pthread_mutex_lock(&gate.mutex);
    gate.open = false;
    gate.waiting = 0;
    pthread_mutex_unlock(&gate.mutex);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mutex);
    gate.open = true;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.mutex);
}

static void gate_wait_for_waiters(int n)
{
    pthread_mutex_lock(&gate.mutex);
    while (gate.waiting < n)
        pthread_cond_wait(&gate.cond, &gate.mutex);
    pthread_mutex_unlock(&gate.mutex);
}

static void *open_gate_after_100ms(void *arg)
{
    (void)arg;
    sleep_ms(100);
    gate_open();
    return NULL;
}

/* One job and what happened to it. */
struct job {
    sl_work_t req;
    int index;
    int work_ran;        /* atomic: set at the end of work_cb */
    pthread_t worker;    /* set by work_cb */
    int after_calls;     /* loop thread */
    int status;          /* as seen by after_work_cb */
    bool after_off_loop; /* after_work_cb ran on another thread */
    unsigned sleep;      /* ms to sleep in work_cb */
    bool blocks;         /* wait at the gate in work_cb */
    int order;           /* position among after_work calls */
};

static pthread_t loop_thread;
static bool in_api; /* inside sl_work_submit / sl_work_cancel */
static int after_inside_api;
static int after_seq;

static void test_reset(void)
{
    loop_thread = pthread_self();
    in_api = false;
    after_inside_api = 0;
    after_seq = 0;
    fail_create_at = -1;
    create_calls = 0;
    __atomic_store_n(&live_threads, 0, __ATOMIC_SEQ_CST);
    gate_reset();
    unsetenv("SLUICE_THREADPOOL_SIZE");
}

static void job_work(sl_work_t *req)
{
    struct job *j = sl__container_of(req, struct job, req);

    j->worker = pthread_self();
    if (j->blocks) {
        pthread_mutex_lock(&gate.mutex);
        gate.waiting++;
        pthread_cond_broadcast(&gate.cond);
        while (!gate.open)
            pthread_cond_wait(&gate.cond, &gate.mutex);
        pthread_mutex_unlock(&gate.mutex);
    }
    if (j->sleep)
        sleep_ms(j->sleep);
    __atomic_store_n(&j->work_ran, 1, __ATOMIC_RELEASE);
}

static void job_after(sl_work_t *req, int status)
{
    struct job *j = sl__container_of(req, struct job, req);

    if (in_api)
        after_inside_api++;
    if (!pthread_equal(pthread_self(), loop_thread))
        j->after_off_loop = true;
    j->after_calls++;
    j->status = status;
    j->order = after_seq++;
}

static int submit(sl_loop_t *loop, struct job *j)
{
    int rc;

    in_api = true;
    rc = sl_work_submit(loop, &j->req, job_work, job_after);
    in_api = false;
    return rc;
}

static int cancel(struct job *j)
{
    int rc;

    in_api = true;
    rc = sl_work_cancel(&j->req);
    in_api = false;
    return rc;
}

static struct job *jobs_new(int n)
{
    struct job *jobs = calloc((size_t)n, sizeof(*jobs));

    ck_assert_ptr_nonnull(jobs);
    for (int i = 0; i < n; i++)
        jobs[i].index = i;
    return jobs;
}

static void wait_work_ran(struct job *j)
{
    uint64_t deadline = now_ms() + 10000;

    while (!__atomic_load_n(&j->work_ran, __ATOMIC_ACQUIRE) && now_ms() < deadline)
        sleep_ms(1);
    ck_assert(__atomic_load_n(&j->work_ran, __ATOMIC_ACQUIRE));
}

/* ---- completion ------------------------------------------------------------------ */

#define MANY_JOBS 10000

START_TEST(workq_10k_jobs_complete_once_on_loop_thread)
{
    /* arrange: 10k jobs on the default pool; act: run the loop; assert: each
     * after_work ran exactly once, with status 0, on the loop thread, after
     * its work ran on a pool thread, and never inside sl_work_submit. */
    sl_loop_t loop;
    struct job *jobs = jobs_new(MANY_JOBS);

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    for (int i = 0; i < MANY_JOBS; i++)
        ck_assert_int_eq(submit(&loop, &jobs[i]), 0);
    ck_assert_uint_eq(loop.active, MANY_JOBS);
    ck_assert_int_eq(sl_loop_run(&loop), 0);

    for (int i = 0; i < MANY_JOBS; i++) {
        ck_assert_int_eq(jobs[i].after_calls, 1);
        ck_assert_int_eq(jobs[i].status, 0);
        ck_assert(!jobs[i].after_off_loop);
        ck_assert_int_eq(jobs[i].work_ran, 1);
        ck_assert(!pthread_equal(jobs[i].worker, loop_thread));
    }
    ck_assert_int_eq(after_inside_api, 0);
    ck_assert_uint_eq(loop.active, 0);
    free(jobs);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(workq_run_returns_when_work_done)
{
    /* arrange: slow jobs and no handles; act: sl_loop_run; assert: it does
     * not return before every after_work ran (requests keep the loop alive),
     * and does return then. */
    sl_loop_t loop;
    struct job *jobs = jobs_new(40);
    uint64_t t0;

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    t0 = now_ms();
    for (int i = 0; i < 40; i++) {
        jobs[i].sleep = 5;
        ck_assert_int_eq(submit(&loop, &jobs[i]), 0);
    }
    ck_assert(sl_loop_alive(&loop));
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_uint_ge(now_ms() - t0, 40); /* 40 x 5 ms on 4 threads */
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(jobs[i].after_calls, 1);
    ck_assert(!sl_loop_alive(&loop));
    /* The pool's internal async handle does not keep the loop alive. */
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    free(jobs);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static int chain_left;

static void chain_after(sl_work_t *req, int status)
{
    ck_assert_int_eq(status, 0);
    /* The request is idle again inside its own callback. */
    if (--chain_left > 0)
        ck_assert_int_eq(sl_work_submit(req->loop, req, job_work, chain_after), 0);
}

START_TEST(workq_submit_validation_and_resubmit)
{
    /* assert: missing callbacks and a request already queued give
     * SL_EINVAL; a request may be submitted again from its own after_work. */
    sl_loop_t loop;
    struct job *jobs = jobs_new(2);

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(sl_work_submit(&loop, &jobs[0].req, NULL, job_after), SL_EINVAL);
    ck_assert_int_eq(sl_work_submit(&loop, &jobs[0].req, job_work, NULL), SL_EINVAL);
    ck_assert_ptr_null(loop.workq);

    jobs[0].blocks = true;
    ck_assert_int_eq(submit(&loop, &jobs[0]), 0);
    ck_assert_int_eq(submit(&loop, &jobs[0]), SL_EINVAL); /* queued or running */
    gate_wait_for_waiters(1);
    ck_assert_int_eq(submit(&loop, &jobs[0]), SL_EINVAL); /* running */
    gate_open();
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(jobs[0].after_calls, 1);
    ck_assert_uint_eq(loop.active, 0);

    chain_left = 10;
    ck_assert_int_eq(sl_work_submit(&loop, &jobs[1].req, job_work, chain_after), 0);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(chain_left, 0);
    free(jobs);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- cancellation ------------------------------------------------------------------ */

START_TEST(workq_cancel_queued_jobs)
{
    /* arrange: a pool of one thread blocked on a job, 100 jobs queued behind
     * it; act: cancel every other one; assert: cancelling returns 0 without
     * calling back, the cancelled jobs later get SL_ECANCELED and their work
     * never ran, the others complete with 0, cancelling a running job or a
     * cancelled one again fails. */
    sl_loop_t loop;
    struct job blocker = {.blocks = true};
    struct job *jobs = jobs_new(100);

    test_reset();
    setenv("SLUICE_THREADPOOL_SIZE", "1", 1);
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(submit(&loop, &blocker), 0);
    gate_wait_for_waiters(1);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(submit(&loop, &jobs[i]), 0);

    for (int i = 0; i < 100; i += 2)
        ck_assert_int_eq(cancel(&jobs[i]), 0);
    ck_assert_int_eq(cancel(&blocker), SL_EBUSY);  /* running */
    ck_assert_int_eq(cancel(&jobs[0]), SL_EINVAL); /* already cancelled */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(jobs[i].after_calls, 0); /* never inside the call */
    ck_assert_uint_eq(loop.active, 101);          /* cancelled ones still count */

    gate_open();
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(blocker.after_calls, 1);
    ck_assert_int_eq(blocker.status, 0);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(jobs[i].after_calls, 1);
        ck_assert(!jobs[i].after_off_loop);
        if (i % 2 == 0) {
            ck_assert_int_eq(jobs[i].status, SL_ECANCELED);
            ck_assert_int_eq(jobs[i].work_ran, 0);
        } else {
            ck_assert_int_eq(jobs[i].status, 0);
            ck_assert_int_eq(jobs[i].work_ran, 1);
        }
    }
    ck_assert_int_eq(after_inside_api, 0);
    ck_assert_uint_eq(((struct workq *)loop.workq)->nthreads, 1);
    free(jobs);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(workq_cancel_started_is_busy)
{
    /* assert: a job whose work is running, or has finished while its
     * after_work has not run yet, cannot be cancelled (SL_EBUSY) and still
     * completes with status 0. */
    sl_loop_t loop;
    struct job running = {.blocks = true}, done = {0};

    test_reset();
    setenv("SLUICE_THREADPOOL_SIZE", "2", 1);
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(submit(&loop, &done), 0);
    wait_work_ran(&done);
    ck_assert_int_eq(submit(&loop, &running), 0);
    gate_wait_for_waiters(1);

    ck_assert_int_eq(cancel(&running), SL_EBUSY);
    ck_assert_int_eq(cancel(&done), SL_EBUSY);
    ck_assert_int_eq(done.after_calls, 0);
    gate_open();
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(running.after_calls, 1);
    ck_assert_int_eq(running.status, 0);
    ck_assert_int_eq(done.after_calls, 1);
    ck_assert_int_eq(done.status, 0);
    ck_assert_int_eq(after_inside_api, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

START_TEST(workq_cancel_idle_or_finished_is_einval)
{
    /* assert: a request never submitted, or whose after_work already ran,
     * is not pending: SL_EINVAL, and no callback. */
    sl_loop_t loop;
    struct job never = {0}, finished = {0};

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(cancel(&never), SL_EINVAL); /* no pool yet */
    ck_assert_int_eq(submit(&loop, &finished), 0);
    ck_assert_int_eq(cancel(&never), SL_EINVAL); /* pool, never submitted */
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(finished.after_calls, 1);
    ck_assert_int_eq(cancel(&finished), SL_EINVAL);
    ck_assert_int_eq(sl_loop_run_once(&loop, 0), 0);
    ck_assert_int_eq(finished.after_calls, 1);
    ck_assert_int_eq(never.after_calls, 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- sl_loop_close with work pending ------------------------------------------------ */

static sl_loop_t *closing_loop;
static struct job extra;
static int extra_rc;
static int extra_tries;

static void job_after_submit_again(sl_work_t *req, int status)
{
    job_after(req, status);
    extra_tries++;
    extra_rc = sl_work_submit(closing_loop, &extra.req, job_work, job_after);
}

START_TEST(workq_close_drains_pending_work)
{
    /* arrange: a pool of one thread; one job finished but not delivered, one
     * blocked, 20 queued behind it; a helper thread opens the gate at
     * +100 ms; act: sl_loop_close without running the loop; assert: it
     * returns 0 after the blocked job finished; every after_work ran exactly
     * once on this thread, in completion order: the finished job, the
     * cancelled ones (SL_ECANCELED, work never ran), then the blocked job
     * (status 0); a submit from those callbacks gets SL_ECLOSING. */
    sl_loop_t loop;
    struct job finished = {0}, blocker = {.blocks = true};
    struct job *jobs = jobs_new(20);
    pthread_t helper;
    uint64_t t0;

    test_reset();
    setenv("SLUICE_THREADPOOL_SIZE", "1", 1);
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    closing_loop = &loop;
    extra_rc = 0;
    extra_tries = 0;
    memset(&extra, 0, sizeof(extra));

    ck_assert_int_eq(sl_work_submit(&loop, &finished.req, job_work, job_after_submit_again), 0);
    wait_work_ran(&finished);
    ck_assert_int_eq(submit(&loop, &blocker), 0);
    gate_wait_for_waiters(1);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(submit(&loop, &jobs[i]), 0);
    t0 = now_ms();
    ck_assert_int_eq(pthread_create(&helper, NULL, open_gate_after_100ms, NULL), 0);

    ck_assert_int_eq(sl_loop_close(&loop), 0);
    ck_assert_uint_ge(now_ms() - t0, 95); /* it waited for the running job */
    pthread_join(helper, NULL);

    ck_assert_int_eq(finished.after_calls, 1);
    ck_assert_int_eq(finished.status, 0);
    ck_assert_int_eq(finished.order, 0);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(jobs[i].after_calls, 1);
        ck_assert_int_eq(jobs[i].status, SL_ECANCELED);
        ck_assert_int_eq(jobs[i].work_ran, 0);
        ck_assert(!jobs[i].after_off_loop);
        ck_assert_int_eq(jobs[i].order, 1 + i);
    }
    ck_assert_int_eq(blocker.after_calls, 1);
    ck_assert_int_eq(blocker.status, 0);
    ck_assert_int_eq(blocker.work_ran, 1);
    ck_assert_int_eq(blocker.order, 21);

    ck_assert_int_eq(extra_tries, 1);
    ck_assert_int_eq(extra_rc, SL_ECLOSING);
    ck_assert_int_eq(extra.after_calls, 0);
    ck_assert_ptr_null(loop.workq);
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(__atomic_load_n(&live_threads, __ATOMIC_SEQ_CST), 0); /* joined */
    free(jobs);
}
END_TEST

START_TEST(workq_submit_during_close_is_eclosing)
{
    /* arrange: one job submitted, the loop never run; act: sl_loop_close;
     * assert: its after_work runs inside the close with status 0 (or
     * SL_ECANCELED if no worker had picked it up yet), and sl_work_submit
     * from it returns SL_ECLOSING. */
    sl_loop_t loop;
    struct job j = {0};

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    closing_loop = &loop;
    extra_rc = 0;
    extra_tries = 0;
    memset(&extra, 0, sizeof(extra));
    ck_assert_int_eq(sl_work_submit(&loop, &j.req, job_work, job_after_submit_again), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    ck_assert_int_eq(j.after_calls, 1);
    ck_assert(j.status == 0 || j.status == SL_ECANCELED);
    ck_assert_int_eq(extra_tries, 1);
    ck_assert_int_eq(extra_rc, SL_ECLOSING);
    ck_assert_int_eq(extra.after_calls, 0);
}
END_TEST

/* ---- pool size --------------------------------------------------------------------- */

static struct {
    pthread_mutex_t mutex;
    pthread_t ids[256];
    int n;
} seen = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static void record_thread_work(sl_work_t *req)
{
    pthread_t self = pthread_self();
    bool found = false;

    pthread_mutex_lock(&seen.mutex);
    for (int i = 0; i < seen.n && !found; i++)
        found = pthread_equal(seen.ids[i], self);
    if (!found && seen.n < (int)SL__ARRAY_SIZE(seen.ids))
        seen.ids[seen.n++] = self;
    pthread_mutex_unlock(&seen.mutex);
    job_work(req);
}

static int distinct_workers(const char *size, int njobs)
{
    sl_loop_t loop;
    struct job *jobs = jobs_new(njobs);
    int n;

    pthread_mutex_lock(&seen.mutex);
    seen.n = 0;
    pthread_mutex_unlock(&seen.mutex);
    if (size != NULL)
        setenv("SLUICE_THREADPOOL_SIZE", size, 1);
    else
        unsetenv("SLUICE_THREADPOOL_SIZE");
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    for (int i = 0; i < njobs; i++) {
        jobs[i].sleep = 2;
        ck_assert_int_eq(sl_work_submit(&loop, &jobs[i].req, record_thread_work, job_after), 0);
    }
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    for (int i = 0; i < njobs; i++)
        ck_assert_int_eq(jobs[i].after_calls, 1);
    free(jobs);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
    pthread_mutex_lock(&seen.mutex);
    n = seen.n;
    pthread_mutex_unlock(&seen.mutex);
    return n;
}

START_TEST(workq_threadpool_size_env)
{
    /* arrange: SLUICE_THREADPOOL_SIZE=1, 3, then unset; act: run 48 jobs of
     * 2 ms; assert: no more distinct worker threads than the size (4 by
     * default). */
    int n;

    test_reset();
    n = distinct_workers("1", 48);
    ck_assert_int_eq(n, 1);
    n = distinct_workers("3", 48);
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, 3);
    n = distinct_workers(NULL, 48);
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, 4);
    unsetenv("SLUICE_THREADPOOL_SIZE");
}
END_TEST

START_TEST(workq_size_parsing)
{
    /* The pool size is clamped to 1..128; junk means the default. */
    ck_assert_uint_eq(workq_size(NULL), 4);
    ck_assert_uint_eq(workq_size(""), 4);
    ck_assert_uint_eq(workq_size("abc"), 4);
    ck_assert_uint_eq(workq_size("4x"), 4);
    ck_assert_uint_eq(workq_size("0"), 1);
    ck_assert_uint_eq(workq_size("-5"), 1);
    ck_assert_uint_eq(workq_size("1"), 1);
    ck_assert_uint_eq(workq_size("16"), 16);
    ck_assert_uint_eq(workq_size("128"), 128);
    ck_assert_uint_eq(workq_size("129"), 128);
    ck_assert_uint_eq(workq_size("99999999999999999999999"), 128);
    ck_assert_uint_ge(workq_stack_size(), (size_t)PTHREAD_STACK_MIN);

    /* A size seen through a real pool. */
    sl_loop_t loop;
    struct job j = {0};

    test_reset();
    setenv("SLUICE_THREADPOOL_SIZE", "1000", 1);
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(submit(&loop, &j), 0);
    ck_assert_uint_eq(((struct workq *)loop.workq)->nthreads, 128);
    ck_assert_int_eq(create_calls, 128);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    unsetenv("SLUICE_THREADPOOL_SIZE");
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- worker environment ---------------------------------------------------------- */

static int worker_sigint_blocked = -1;
static int worker_sigterm_blocked = -1;

static void signals_work(sl_work_t *req)
{
    sigset_t set;

    (void)req;
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    worker_sigint_blocked = sigismember(&set, SIGINT);
    worker_sigterm_blocked = sigismember(&set, SIGTERM);
}

START_TEST(workq_workers_block_signals)
{
    /* assert: workers block every signal, and the submitting thread's mask
     * is restored. */
    sl_loop_t loop;
    struct job j = {0};
    sigset_t set;

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    ck_assert_int_eq(sl_work_submit(&loop, &j.req, signals_work, job_after), 0);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(worker_sigint_blocked, 1);
    ck_assert_int_eq(worker_sigterm_blocked, 1);
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    ck_assert_int_eq(sigismember(&set, SIGINT), 0);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

/* ---- failing to start threads ---------------------------------------------------- */

static void check_create_failure(int fail_at)
{
    sl_loop_t loop;
    struct job j = {0};

    test_reset();
    setenv("SLUICE_THREADPOOL_SIZE", "4", 1);
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    fail_create_at = fail_at;
    ck_assert_int_eq(submit(&loop, &j), SL_EAGAIN);
    ck_assert_int_eq(create_calls, fail_at + 1);
    ck_assert_int_eq(__atomic_load_n(&live_threads, __ATOMIC_SEQ_CST), 0); /* joined */
    /* Nothing half-created: no pool, no internal handle, nothing counted. */
    ck_assert_ptr_null(loop.workq);
    ck_assert(sl__queue_empty(&loop.async_handles));
    ck_assert_uint_eq(loop.active, 0);
    ck_assert_int_eq(j.req.state, WORK_IDLE);
    ck_assert_int_eq(j.after_calls, 0);

    /* The next submit builds the pool and works. */
    fail_create_at = -1;
    ck_assert_int_eq(submit(&loop, &j), 0);
    ck_assert_int_eq(sl_loop_run(&loop), 0);
    ck_assert_int_eq(j.after_calls, 1);
    ck_assert_int_eq(j.status, 0);
    unsetenv("SLUICE_THREADPOOL_SIZE");
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}

START_TEST(workq_thread_create_failure_first)
{
    check_create_failure(0);
}
END_TEST

START_TEST(workq_thread_create_failure_third)
{
    check_create_failure(2);
}
END_TEST

START_TEST(workq_loop_close_without_pool)
{
    /* A loop that never submitted work has no pool to drain. */
    sl_loop_t loop;

    test_reset();
    ck_assert_int_eq(sl_loop_init(&loop), 0);
    sl__workq_drain(&loop);
    ck_assert_ptr_null(loop.workq);
    ck_assert_int_eq(sl_loop_close(&loop), 0);
}
END_TEST

static Suite *workq_suite(void)
{
    Suite *s = suite_create("workq");
    TCase *tc = tcase_create("workq");

    tcase_add_test(tc, workq_10k_jobs_complete_once_on_loop_thread);
    tcase_add_test(tc, workq_run_returns_when_work_done);
    tcase_add_test(tc, workq_submit_validation_and_resubmit);
    tcase_add_test(tc, workq_cancel_queued_jobs);
    tcase_add_test(tc, workq_cancel_started_is_busy);
    tcase_add_test(tc, workq_cancel_idle_or_finished_is_einval);
    tcase_add_test(tc, workq_close_drains_pending_work);
    tcase_add_test(tc, workq_submit_during_close_is_eclosing);
    tcase_add_test(tc, workq_threadpool_size_env);
    tcase_add_test(tc, workq_size_parsing);
    tcase_add_test(tc, workq_workers_block_signals);
    tcase_add_test(tc, workq_thread_create_failure_first);
    tcase_add_test(tc, workq_thread_create_failure_third);
    tcase_add_test(tc, workq_loop_close_without_pool);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(workq_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
