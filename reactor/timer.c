/*
 * timer.c -- timers on a hierarchical timing wheel (1 ms granules, h2o's timerwheel placement).
 *
 * 11 levels of 64 slots: a level-L slot spans 64^L ms (L0 1 ms, L1 64 ms, L2 4.1 s, L3 4.4 min,
 * L4 4.7 h, L5 12 days, L6 2.2 years, ..., L10 bits 60-63), so every 64-bit deadline is placed
 * exactly, never clamped. A deadline d >= last_run goes to the level of the highest 6-bit group
 * in which d and last_run differ, in the slot named by that group of d; a level-0 slot thus holds
 * one exact deadline. When the clock reaches the start of a coarser slot, the slot is cascaded:
 * its timers are re-linked relative to the new last_run and drop to finer levels, keeping their
 * exact deadline. So a timer fires at the first collect whose `now` has reached its deadline:
 * never early, and never late because of the wheel (lateness is the loop's: other callbacks and
 * the poll resolution). Deadlines already behind last_run wait on the `due` list for the next
 * collect. Batches are handed out by (deadline, arming sequence); the 32-bit sequence is
 * renumbered before it wraps.
 *
 * A slot is an array of timer pointers in order of arrival, owned by the wheel; each timer
 * keeps its index. Stopping a timer writes NULL into its entry and touches nothing else (with
 * an intrusive list it would write into its neighbours, cold cache lines once there are a
 * million timers), so its memory may be freed at once. Arrays are trimmed over trailing holes,
 * compacted when half holes, doubled otherwise; if an array cannot grow, the timer waits on an
 * overflow list that every collect scans. Arm, re-arm and stop are O(1) amortized and cannot
 * fail; a re-arm within the same slot only rewrites the deadline (Linux mod_timer).
 */
#include "reactor-int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define WHEEL_MASK (SL__WHEEL_SLOTS - 1u)

/* Slot arrays grow with this; the unit tests substitute one that fails. */
#ifndef SL__TIMER_REALLOC
#define SL__TIMER_REALLOC realloc
#endif

/* One cache line per timer on LP64: a million armed timers are 64 MB that arming and stopping
 * stream through, so every byte shows at that scale (bench-timers). */
_Static_assert(sizeof(void *) != 8 || sizeof(sl_timer_t) == 64, "sl_timer_t outgrew 64 bytes");

/* Shifts by 64 or more are undefined in C, and the top level's group ends at bit 66. */
static inline uint64_t shr64(uint64_t x, unsigned n)
{
    return n >= 64 ? 0 : x >> n;
}

static inline uint64_t shl64(uint64_t x, unsigned n)
{
    return n >= 64 ? 0 : x << n;
}

static inline uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

/* The 6-bit group of `t` that indexes level `lv` (at most bit 60 + 6: no overflow). */
static inline unsigned slot_index(uint64_t t, unsigned lv)
{
    return (unsigned)(t >> (SL__WHEEL_BITS * lv)) & WHEEL_MASK;
}

/* The first millisecond of slot `s` of level `lv`, in the block of `base`: the groups of `base`
 * above `lv`, then `s`, then zeros. */
static inline uint64_t slot_start(uint64_t base, unsigned lv, unsigned s)
{
    unsigned lo = SL__WHEEL_BITS * lv, hi = lo + SL__WHEEL_BITS;

    return shl64(shr64(base, hi), hi) | ((uint64_t)s << lo);
}

/* Where a timer with deadline `d` belongs now: a slot number (level * 64 + slot) or the due
 * list. */
static int32_t wheel_where(const struct sl__wheel *w, uint64_t d)
{
    uint64_t diff;
    unsigned lv;

    if (d < w->last_run)
        return SL__TIMER_DUE;
    diff = d ^ w->last_run;
    lv = diff == 0 ? 0 : (unsigned)(63 - __builtin_clzll(diff)) / SL__WHEEL_BITS;
    return (int32_t)(lv * SL__WHEEL_SLOTS + slot_index(d, lv));
}

static inline sl_timer_t *node_timer(const struct sl__queue *q)
{
    return sl__queue_data(q, sl_timer_t, link.node);
}

void sl__wheel_init(struct sl__wheel *w, uint64_t now_ms)
{
    memset(w, 0, sizeof(*w));
    w->last_run = now_ms;
    sl__queue_init(&w->due);
    sl__queue_init(&w->overflow);
}

/* A slot that still has timers (armed by a callback that ran during sl_loop_close) keeps its
 * array: stopping them later must not touch freed memory. */
void sl__wheel_free(struct sl__wheel *w)
{
    for (size_t i = 0; i < SL__ARRAY_SIZE(w->slots); i++) {
        struct sl__slot *sl = &w->slots[i];
        if (sl->live != 0)
            continue;
        free(sl->timers);
        sl->timers = NULL;
        sl->cap = 0;
        sl->len = 0;
    }
}

bool sl__wheel_empty(const struct sl__wheel *w)
{
    if (!sl__queue_empty(&w->due) || !sl__queue_empty(&w->overflow))
        return false;
    for (unsigned lv = 0; lv < SL__WHEEL_LEVELS; lv++)
        if (w->occupied[lv] != 0)
            return false;
    return true;
}

/*
 * Squeeze the holes out of a slot array, keeping the order of arrival; each timer that moves
 * learns its new index. Done only when at least half the entries are holes (or the array cannot
 * grow), so the timers touched here are paid for by the stops that made the holes.
 */
static void slot_compact(struct sl__slot *sl)
{
    uint32_t j = 0;

    for (uint32_t i = 0; i < sl->len; i++) {
        sl_timer_t *t = sl->timers[i];
        if (t == NULL)
            continue;
        if (i != j) {
            sl->timers[j] = t;
            t->link.index = j;
        }
        j++;
    }
    assert(j == sl->live);
    sl->len = j;
}

/* Make room for one more entry in a full slot array: compact it if half of it is holes, else
 * double it; if it cannot grow, compact whatever holes it has. False if there is no room. */
static bool slot_make_room(struct sl__slot *sl)
{
    sl_timer_t **bigger;
    uint32_t cap;

    if (sl->live <= sl->len / 2 && sl->len > 0) {
        slot_compact(sl);
        return true;
    }
    cap = sl->cap == 0 ? 8 : sl->cap * 2;
    bigger = cap > sl->cap ? SL__TIMER_REALLOC(sl->timers, (size_t)cap * sizeof(*bigger)) : NULL;
    if (bigger != NULL) {
        sl->timers = bigger;
        sl->cap = cap;
        return true;
    }
    if (sl->live < sl->len) {
        slot_compact(sl);
        return true;
    }
    return false;
}

/* Forget the entries of a slot whose timers have all been taken out (fired or cascaded). A big
 * array left by a burst is given back; ordinary ones are kept for the next round. */
static void slot_reset(struct sl__slot *sl)
{
    sl->len = 0;
    sl->live = 0;
    if (sl->cap > 4096) {
        free(sl->timers);
        sl->timers = NULL;
        sl->cap = 0;
    }
}

static inline void slot_append(struct sl__wheel *w, struct sl__slot *sl, sl_timer_t *t,
                               int32_t where)
{
    t->where = (int16_t)where;
    t->link.index = sl->len;
    sl->timers[sl->len++] = t;
    sl->live++;
    w->occupied[(unsigned)where / SL__WHEEL_SLOTS] |= UINT64_C(1)
                                                      << ((unsigned)where % SL__WHEEL_SLOTS);
}

/* wheel_link() into a full slot array; kept out of line so that the common path stays small. */
static __attribute__((noinline)) void wheel_link_full(struct sl__wheel *w, struct sl__slot *sl,
                                                      sl_timer_t *t, int32_t where)
{
    if (slot_make_room(sl)) {
        slot_append(w, sl, t, where);
        return;
    }
    t->where = SL__TIMER_OVERFLOW;
    sl__queue_insert_tail(&w->overflow, &t->link.node);
}

/* The bodies of sl__wheel_link() and sl__wheel_unlink(), inlined into the arming paths. */
static inline void wheel_link(struct sl__wheel *w, sl_timer_t *t)
{
    int32_t where = wheel_where(w, t->deadline);
    struct sl__slot *sl;

    assert(t->where == SL__TIMER_IDLE);
    if (where == SL__TIMER_DUE) {
        t->where = SL__TIMER_DUE;
        sl__queue_insert_tail(&w->due, &t->link.node);
        return;
    }
    sl = &w->slots[where];
    if (__builtin_expect(sl->len == sl->cap, 0)) {
        wheel_link_full(w, sl, t, where);
        return;
    }
    slot_append(w, sl, t, where);
}

/* A stopped timer leaves a hole (NULL) in its slot array and touches nothing else: no
 * neighbouring timer, and no other entry unless it was the last one, in which case the array
 * is trimmed back over trailing holes. */
static inline void wheel_unlink(struct sl__wheel *w, sl_timer_t *t)
{
    int32_t where = t->where;

    t->where = SL__TIMER_IDLE;
    if (where >= 0) {
        struct sl__slot *sl = &w->slots[where];
        uint32_t i = t->link.index;

        assert(sl->timers[i] == t);
        sl->timers[i] = NULL;
        if (--sl->live == 0) {
            unsigned lv = (unsigned)where / SL__WHEEL_SLOTS, s = (unsigned)where % SL__WHEEL_SLOTS;
            sl->len = 0;
            w->occupied[lv] &= ~(UINT64_C(1) << s);
        } else if (i + 1 == sl->len) {
            while (sl->timers[sl->len - 1] == NULL)
                sl->len--;
        }
    } else if (where != SL__TIMER_IDLE) {
        sl__queue_remove(&t->link.node);
    }
}

void sl__wheel_link(struct sl__wheel *w, sl_timer_t *t)
{
    wheel_link(w, t);
}

void sl__wheel_unlink(struct sl__wheel *w, sl_timer_t *t)
{
    wheel_unlink(w, t);
}

/*
 * The earliest occupied slot: its start, level and index; false if the wheel has none.
 * Occupied slots sit at or after last_run's own slot on each level (strictly after it on
 * levels >= 1 between collects, which rules out equal starts). Should two starts ever be equal,
 * the higher level wins, so that a coarse slot is cascaded into the level-0 slot of the same
 * millisecond before that one fires.
 */
static bool wheel_earliest(const struct sl__wheel *w, uint64_t *start, unsigned *level,
                           unsigned *slot)
{
    bool found = false;

    for (unsigned lv = 0; lv < SL__WHEEL_LEVELS; lv++) {
        uint64_t bits = w->occupied[lv], t;
        unsigned s;

        if (bits == 0)
            continue;
        assert((bits & ~(~UINT64_C(0) << slot_index(w->last_run, lv))) == 0);
        bits &= ~UINT64_C(0) << slot_index(w->last_run, lv);
        if (bits == 0)
            continue;
        s = (unsigned)__builtin_ctzll(bits);
        t = slot_start(w->last_run, lv, s);
        if (!found || t <= *start) {
            *start = t;
            *level = lv;
            *slot = s;
            found = true;
        }
    }
    return found;
}

/* Whether timer `a` fires before timer `b`: by deadline, then by arming order. */
static inline bool timer_before(const struct sl__queue *a, const struct sl__queue *b)
{
    const sl_timer_t *x = node_timer(a), *y = node_timer(b);

    return x->deadline < y->deadline || (x->deadline == y->deadline && x->seq < y->seq);
}

/* Merge two NULL-terminated lists chained through `next`. */
static struct sl__queue *batch_merge(struct sl__queue *a, struct sl__queue *b)
{
    struct sl__queue head, *tail = &head;

    while (a != NULL && b != NULL) {
        if (timer_before(b, a)) {
            tail->next = b;
            b = b->next;
        } else {
            tail->next = a;
            a = a->next;
        }
        tail = tail->next;
    }
    tail->next = a != NULL ? a : b;
    return head.next;
}

/*
 * Sort a batch by (deadline, seq): a bottom-up merge sort on the `next` chain (bins[i] holds a
 * sorted run of 2^i nodes, like a binary counter), then the `prev` links are rebuilt. O(n log n)
 * time, O(1) memory. Slots are visited in time order and cascades move whole slots in order (all
 * timers of one deadline share a slot at any time), so batches are usually sorted already; what
 * unsorts one is a re-arm in place (a new sequence, an old position in the slot), the overflow
 * list or a due list whose deadlines are not in arming order.
 */
static void batch_sort(struct sl__queue *batch)
{
    struct sl__queue *bins[64] = {NULL};
    struct sl__queue *list = batch->next, *prev;
    unsigned top = 0, i;

    batch->prev->next = NULL;
    while (list != NULL) {
        struct sl__queue *cur = list;
        list = list->next;
        cur->next = NULL;
        for (i = 0; bins[i] != NULL; i++) {
            cur = batch_merge(bins[i], cur);
            bins[i] = NULL;
        }
        bins[i] = cur;
        if (i >= top)
            top = i + 1;
    }
    for (i = 0; i < top; i++)
        if (bins[i] != NULL)
            list = batch_merge(bins[i], list);

    prev = batch;
    for (struct sl__queue *q = list; q != NULL; q = q->next) {
        q->prev = prev;
        prev->next = q;
        prev = q;
    }
    prev->next = batch;
    batch->prev = prev;
}

/* Move every timer of list `from` whose deadline is <= now to the tail of `to`. */
static void list_take_due(struct sl__queue *from, uint64_t now_ms, struct sl__queue *to)
{
    struct sl__queue *q, *next;

    for (q = from->next; q != from; q = next) {
        next = q->next;
        if (node_timer(q)->deadline <= now_ms) {
            sl__queue_remove(q);
            sl__queue_insert_tail(to, q);
        }
    }
}

void sl__wheel_collect(struct sl__wheel *w, uint64_t now_ms, struct sl__queue *expired)
{
    /* `limit` is now + 1, the value last_run takes on return (saturated at the end of time). */
    uint64_t limit = now_ms == UINT64_MAX ? now_ms : now_ms + 1;
    struct sl__queue batch, *q;
    const sl_timer_t *prev = NULL;
    bool sorted = true;

    sl__queue_init(&batch);

    /* Timers armed behind last_run. Normally last_run <= now + 1, so every one of them has a
     * deadline <= now. After the clock went backwards some may still be ahead of now: they
     * stay for a later call (they must not fire early), which costs a scan of the list. */
    if (w->last_run <= limit)
        sl__queue_move(&w->due, &batch);
    else
        list_take_due(&w->due, now_ms, &batch);
    /* Timers that found no room in their slot: empty unless memory ran out. */
    list_take_due(&w->overflow, now_ms, &batch);

    /* Visit slots in time order. Level-0 slots are fired up to now; a coarser slot is cascaded
     * once its start is <= now + 1, so that afterwards no coarse slot begins at last_run. A
     * clock that went backwards (now + 1 < last_run) stops this loop at once: every slot starts
     * at or after last_run. */
    for (;;) {
        uint64_t start;
        unsigned lv, s;
        struct sl__slot *sl;
        sl_timer_t **timers;
        uint32_t len;

        if (!wheel_earliest(w, &start, &lv, &s))
            break;
        if (lv == 0 ? start > now_ms : start > limit)
            break;
        w->last_run = start;
        sl = &w->slots[lv * SL__WHEEL_SLOTS + s];
        w->occupied[lv] &= ~(UINT64_C(1) << s);
        timers = sl->timers;
        len = sl->len;
        if (lv == 0) {
            for (uint32_t i = 0; i < len; i++) {
                sl_timer_t *t = timers[i];
                if (t != NULL) {
                    t->where = SL__TIMER_EXPIRED;
                    sl__queue_insert_tail(&batch, &t->link.node);
                }
            }
            slot_reset(sl);
            w->last_run = sat_add(start, 1);
        } else {
            /* Every deadline in the slot is >= its start (== last_run now) and differs from
             * it only below level lv, so each timer drops to a finer level: nothing is added
             * to this slot's array while it is walked, and it is reset afterwards. */
            for (uint32_t i = 0; i < len; i++) {
                sl_timer_t *t = timers[i];
                if (t != NULL) {
                    assert(t->deadline >= w->last_run);
                    t->where = SL__TIMER_IDLE;
                    wheel_link(w, t);
                    assert(t->where < 0 || (unsigned)t->where / SL__WHEEL_SLOTS < lv);
                }
            }
            slot_reset(sl);
        }
    }

    /*
     * Advance last_run to now + 1 so that a timer armed from now on with a deadline <= now goes
     * to the due list and can never join this batch. This moves no occupied slot behind
     * last_run: the loop above stopped at the earliest slot, which is either a level-0 slot
     * starting after now (>= now + 1), and then every coarser slot starts strictly later (an
     * equal start would have been chosen first), or a coarser slot starting after now + 1, and
     * then every slot starts at or after it. So each level-0 slot is still >= last_run and each
     * coarser slot still begins strictly after last_run, in the same block of the higher levels
     * (last_run lies between the old last_run and the slot start, which share those groups).
     */
    if (w->last_run < limit)
        w->last_run = limit;

    for (q = batch.next; q != &batch; q = q->next) {
        sl_timer_t *t = node_timer(q);
        t->where = SL__TIMER_EXPIRED;
        if (prev != NULL && timer_before(q, &prev->link.node))
            sorted = false;
        prev = t;
    }
    if (!sorted)
        batch_sort(&batch);
    sl__queue_move(&batch, expired);
}

uint64_t sl__wheel_next(const struct sl__wheel *w)
{
    uint64_t next = UINT64_MAX, start;
    unsigned lv, s;

    if (wheel_earliest(w, &start, &lv, &s))
        next = start;
    /* The due list is short-lived (it holds what callbacks armed with a deadline already
     * past, until the next collect), so a scan is cheap; it gives the exact answer even when
     * the clock went backwards and some of it is not due yet. The overflow list is empty
     * unless memory ran out. */
    for (const struct sl__queue *q = w->due.next; q != &w->due; q = q->next)
        next = SL__MIN(next, node_timer(q)->deadline);
    for (const struct sl__queue *q = w->overflow.next; q != &w->overflow; q = q->next)
        next = SL__MIN(next, node_timer(q)->deadline);
    return next;
}

/*
 * Hand out arming sequences from 1 again once the 32-bit counter is spent (every 2^32 arms), so
 * that sequences never wrap: every armed timer is taken out of the wheel onto one list, sorted
 * by (deadline, seq), numbered 1, 2, ... in that order and linked again. Linking again puts each
 * timer back into the slot it came from (last_run has not moved), whose array already has room
 * for it, so nothing is allocated except, perhaps, for overflow timers retrying their slot.
 * A batch being fired is already sorted and is never compared again. O(n log n) for n armed
 * timers, once per 2^32 arms.
 */
static __attribute__((noinline)) void wheel_renumber(struct sl__wheel *w)
{
    struct sl__queue all;
    uint32_t seq = 0;

    sl__queue_init(&all);
    sl__queue_move(&w->due, &all);
    sl__queue_move(&w->overflow, &all);
    for (unsigned lv = 0; lv < SL__WHEEL_LEVELS; lv++) {
        for (unsigned s = 0; s < SL__WHEEL_SLOTS; s++) {
            struct sl__slot *sl = &w->slots[lv * SL__WHEEL_SLOTS + s];
            for (uint32_t i = 0; i < sl->len; i++)
                if (sl->timers[i] != NULL)
                    sl__queue_insert_tail(&all, &sl->timers[i]->link.node);
            sl->len = 0;
            sl->live = 0;
        }
        w->occupied[lv] = 0;
    }
    batch_sort(&all);
    while (!sl__queue_empty(&all)) {
        sl_timer_t *t = node_timer(all.next);
        sl__queue_remove(&t->link.node);
        assert(seq < UINT32_MAX);
        t->seq = ++seq;
        t->where = SL__TIMER_IDLE;
        wheel_link(w, t);
    }
    w->seq = seq;
}

/* ---- timers --------------------------------------------------------------------------- */

static bool timer_counted(const sl_timer_t *t)
{
    return !(t->flags & (SL__F_UNREF | SL__F_INTERNAL));
}

/* (Re-)arm `t` at `deadline` with a fresh arming sequence. A timer already in the slot where the
 * new deadline belongs stays linked where it is (Linux mod_timer): the collector sorts each
 * batch by deadline and sequence, so its position in the slot does not matter. */
static void timer_arm(struct sl__wheel *w, sl_timer_t *t, uint64_t deadline)
{
    if (__builtin_expect(w->seq == UINT32_MAX, 0))
        wheel_renumber(w);
    t->seq = ++w->seq;
    if (t->where != SL__TIMER_IDLE) {
        if (t->where != SL__TIMER_EXPIRED && wheel_where(w, deadline) == t->where) {
            t->deadline = deadline;
            return;
        }
        wheel_unlink(w, t);
    }
    t->deadline = deadline;
    wheel_link(w, t);
}

void sl_timer_init(sl_loop_t *loop, sl_timer_t *t, sl_timer_cb cb)
{
    memset(t, 0, sizeof(*t));
    t->loop = loop;
    t->cb = cb;
    t->where = SL__TIMER_IDLE;
}

int sl_timer_start(sl_timer_t *t, uint64_t timeout_ms, uint64_t repeat_ms)
{
    sl_loop_t *loop = t->loop;

    if (t->cb == NULL)
        return SL_EINVAL;
    t->repeat = repeat_ms;
    timer_arm(&loop->wheel, t, sat_add(loop->now_ms, timeout_ms));
    if (!(t->flags & SL__F_ACTIVE)) {
        t->flags |= SL__F_ACTIVE;
        if (timer_counted(t))
            sl__loop_active_inc(loop);
    }
    return 0;
}

void sl_timer_stop(sl_timer_t *t)
{
    if (!(t->flags & SL__F_ACTIVE))
        return;
    wheel_unlink(&t->loop->wheel, t);
    t->flags &= ~SL__F_ACTIVE;
    if (timer_counted(t))
        sl__loop_active_dec(t->loop);
}

int sl_timer_again(sl_timer_t *t)
{
    if (t->cb == NULL || t->repeat == 0)
        return SL_EINVAL;
    return sl_timer_start(t, t->repeat, t->repeat);
}

bool sl_timer_active(const sl_timer_t *t)
{
    return (t->flags & SL__F_ACTIVE) != 0;
}

uint64_t sl_timer_deadline(const sl_timer_t *t)
{
    return t->deadline;
}

void sl_timer_unref(sl_timer_t *t)
{
    if (t->flags & SL__F_UNREF)
        return;
    if ((t->flags & SL__F_ACTIVE) && timer_counted(t))
        sl__loop_active_dec(t->loop);
    t->flags |= SL__F_UNREF;
}

void sl_timer_ref(sl_timer_t *t)
{
    if (!(t->flags & SL__F_UNREF))
        return;
    t->flags &= ~SL__F_UNREF;
    if ((t->flags & SL__F_ACTIVE) && timer_counted(t))
        sl__loop_active_inc(t->loop);
}

/*
 * Fire what is due at loop->now_ms. The batch is taken whole first; a callback that stops a
 * timer still waiting in it removes it from the batch, so it does not fire. Each timer leaves
 * the batch before its callback runs (a repeating one already re-armed at now + repeat, as
 * libuv does), so the callback may stop, re-arm or free it, and it is not touched afterwards.
 * Timers armed by callbacks land at now + 1 or later, or on the due list: never in this batch.
 */
void sl__timers_run(sl_loop_t *loop)
{
    struct sl__queue batch;

    sl__queue_init(&batch);
    sl__wheel_collect(&loop->wheel, loop->now_ms, &batch);
    while (!sl__queue_empty(&batch)) {
        sl_timer_t *t = node_timer(batch.next);

        wheel_unlink(&loop->wheel, t);
        if (t->repeat != 0) {
            timer_arm(&loop->wheel, t, sat_add(loop->now_ms, t->repeat));
        } else {
            t->flags &= ~SL__F_ACTIVE;
            if (timer_counted(t))
                sl__loop_active_dec(loop);
        }
        t->cb(t);
    }
}

int sl__timers_timeout(const sl_loop_t *loop)
{
    uint64_t next;

    if (sl__wheel_empty(&loop->wheel))
        return -1;
    next = sl__wheel_next(&loop->wheel);
    if (next <= loop->now_ms)
        return 0;
    return next - loop->now_ms > INT_MAX ? INT_MAX : (int)(next - loop->now_ms);
}
