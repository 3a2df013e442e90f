#include "py_cancel.h"

#include <pthread.h>
#include <time.h>

#include "py_erlang_module.h"

/* The watch list: cancelled requests that were running, linked through watch_next. Its own
 * lock, a plain pthread one for its timed wait; taken before the request lock, never after. */
static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    request_t *head;
    request_t *deadlines; /* requests with a deadline, linked through deadline_next */
    long long next_deadline_ns; /* the earliest the watch waits for (0: none) */
    cancel_options_t options;
} watch = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .options = {.give_up_after_ms = 1000, .max_given_up = 64},
};
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;

static void
watch_init(void)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&watch.cond, &attr);
    pthread_condattr_destroy(&attr);
}

void
cancel_configure(const cancel_options_t *opts)
{
    pthread_mutex_lock(&watch.mutex);
    watch.options = *opts;
    pthread_mutex_unlock(&watch.mutex);
}

void
cancel_options(cancel_options_t *out)
{
    pthread_mutex_lock(&watch.mutex);
    *out = watch.options;
    pthread_mutex_unlock(&watch.mutex);
}

static long
ms_between(const struct timespec *from, const struct timespec *to)
{
    return (to->tv_sec - from->tv_sec) * 1000L + (to->tv_nsec - from->tv_nsec) / 1000000L;
}

/* Whether CallCancelled was not raised in req's thread for CANCEL_REPEAT_MS (or ever). */
static bool
raise_is_due(request_t *req)
{
    long long raised = atomic_load(&req->raised_at_ns);

    return raised == 0 || monotonic_ns() - raised >= CANCEL_REPEAT_MS * 1000000LL;
}

void
cancel_raised(request_t *req)
{
    atomic_store(&req->raised_at_ns, monotonic_ns());
}

void
cancel_watch(request_t *req)
{
    pthread_once(&watch_once, watch_init);
    pthread_mutex_lock(&watch.mutex);
    if (!req->watched) {
        enif_keep_resource(req);
        req->watched = true;
        clock_gettime(CLOCK_MONOTONIC, &req->cancelled_at);
        req->watch_next = watch.head;
        watch.head = req;
        pthread_cond_signal(&watch.cond);
    }
    pthread_mutex_unlock(&watch.mutex);
}

void
cancel_at_deadline(request_t *req)
{
    pthread_once(&watch_once, watch_init);
    pthread_mutex_lock(&watch.mutex);
    if (!req->deadline_linked) {
        enif_keep_resource(req);
        req->deadline_linked = true;
        req->deadline_prev = NULL;
        req->deadline_next = watch.deadlines;
        if (watch.deadlines != NULL) {
            watch.deadlines->deadline_prev = req;
        }
        watch.deadlines = req;
        /* The watch need only wake for a deadline earlier than the one it waits for. */
        if (watch.next_deadline_ns == 0 || req->deadline_ns < watch.next_deadline_ns) {
            watch.next_deadline_ns = req->deadline_ns;
            pthread_cond_signal(&watch.cond);
        }
    }
    pthread_mutex_unlock(&watch.mutex);
}

/* Watch lock held. */
static void
unlink_deadline_locked(request_t *req)
{
    if (req->deadline_prev != NULL) {
        req->deadline_prev->deadline_next = req->deadline_next;
    } else {
        watch.deadlines = req->deadline_next;
    }
    if (req->deadline_next != NULL) {
        req->deadline_next->deadline_prev = req->deadline_prev;
    }
    req->deadline_prev = req->deadline_next = NULL;
    req->deadline_linked = false;
}

void
cancel_forget_deadline(request_t *req)
{
    bool linked;

    pthread_once(&watch_once, watch_init);
    pthread_mutex_lock(&watch.mutex);
    linked = req->deadline_linked;
    if (linked) {
        unlink_deadline_locked(req);
    }
    pthread_mutex_unlock(&watch.mutex);
    if (linked) {
        enif_release_resource(req);
    }
}

/* Watch lock held: moves the requests past their deadline into expired (their references
 * with them), and returns how many; *next_ns is the earliest deadline left (0: none). */
static int
take_expired_deadlines(request_t **expired, int max, long long *next_ns)
{
    long long now = monotonic_ns();
    int n = 0;

    *next_ns = 0;
    for (request_t *req = watch.deadlines, *next; req != NULL; req = next) {
        next = req->deadline_next;
        if (req->deadline_ns <= now && n < max) {
            unlink_deadline_locked(req);
            expired[n++] = req;
        } else if (*next_ns == 0 || req->deadline_ns < *next_ns) {
            *next_ns = req->deadline_ns;
        }
    }
    return n;
}

static void
timespec_at_ns(struct timespec *out, long long ns)
{
    out->tv_sec = ns / 1000000000LL;
    out->tv_nsec = ns % 1000000000LL;
}

/* What a request runs, for the log: {Module, Function} of a call, else eval or exec. The
 * payload was copied into req->env when the request was made and never changes. */
static ERL_NIF_TERM
request_summary(ErlNifEnv *env, request_t *req)
{
    int arity;
    const ERL_NIF_TERM *elems;

    if (req->kind == REQ_CALL && enif_get_tuple(req->env, req->payload, &arity, &elems) &&
        arity == 4) {
        return enif_make_tuple2(env, enif_make_copy(env, elems[0]), enif_make_copy(env, elems[1]));
    }
    return req->kind == REQ_EVAL ? ATOMS.eval : ATOMS.exec;
}

/* Tells py_pool_events, which logs a warning, that a worker was given up. */
static void
report_given_up(request_t *req, long ms)
{
    ErlNifEnv *env = enif_alloc_env();
    ErlNifPid events;

    if (env == NULL) {
        return;
    }
    if (enif_whereis_pid(NULL, enif_make_atom(env, "py_pool_events"), &events)) {
        ERL_NIF_TERM msg = enif_make_tuple3(env, enif_make_atom(env, "py_worker_given_up"),
                                            request_summary(env, req), enif_make_long(env, ms));
        (void)enif_send(NULL, &events, env, msg);
    }
    enif_free_env(env);
}

/* Gives req's worker up if a replacement may be started: the worker exits once req ends. */
static void
give_up(request_t *req, long ms, int max_given_up)
{
    bool marked = false;

    if (!worker_pool_reserve_replacement(max_given_up)) {
        return; /* at the bound: tried again on the next round */
    }
    request_lock();
    if (req->state == REQ_RUNNING && req->runner != NULL && req->runner->worker) {
        atomic_store(&req->runner->given_up, true);
        marked = true;
    }
    request_unlock();
    req->given_up = true; /* never tried again: given up, or nothing to give up */
    if (!marked) {
        worker_pool_cancel_replacement(); /* it ended meanwhile, or runs on no worker */
        return;
    }
    worker_pool_start_replacement();
    report_given_up(req, ms);
}

/* One round over the watch list (its lock held): drops the requests that ended, gives up
 * the workers of those past the limit, and collects those due for another CallCancelled
 * (with a reference each) into due. Returns how many. */
static int
round_over_watch(request_t **due, int max_due)
{
    struct timespec now;
    int n = 0;

    clock_gettime(CLOCK_MONOTONIC, &now);
    for (request_t **link = &watch.head; *link != NULL;) {
        request_t *req = *link;
        bool running, waiting;

        request_lock();
        running = req->state == REQ_RUNNING;
        waiting = req->waiter != NULL;
        request_unlock();
        if (!running) {
            *link = req->watch_next;
            req->watch_next = NULL;
            enif_release_resource(req);
            continue;
        }
        if (!req->given_up && ms_between(&req->cancelled_at, &now) >= watch.options.give_up_after_ms) {
            give_up(req, ms_between(&req->cancelled_at, &now), watch.options.max_given_up);
        }
        /* A thread waiting in erlang.call was woken by the cancellation itself. */
        if (!waiting && n < max_due && raise_is_due(req)) {
            enif_keep_resource(req);
            due[n++] = req;
        }
        link = &req->watch_next;
    }
    return n;
}

void
cancel_serve(PyThreadState *tstate)
{
    enum { MAX_DUE = 64 };
    request_t *due[MAX_DUE];

    pthread_once(&watch_once, watch_init);
    for (;;) {
        int n;
        long long next_deadline_ns;
        struct timespec until;

        pthread_mutex_lock(&watch.mutex);
        while (watch.head == NULL && watch.deadlines == NULL) {
            pthread_cond_wait(&watch.cond, &watch.mutex);
        }
        n = take_expired_deadlines(due, MAX_DUE, &next_deadline_ns);
        watch.next_deadline_ns = n > 0 ? 0 : next_deadline_ns;
        if (n > 0) {
            /* Cancelled without the watch lock: a running one is watched (cancel_watch). */
            pthread_mutex_unlock(&watch.mutex);
            for (int i = 0; i < n; i++) {
                request_expire(due[i]);
                enif_release_resource(due[i]);
            }
            continue;
        }
        n = watch.head == NULL ? 0 : round_over_watch(due, MAX_DUE);
        if (n == 0) {
            long long wake_ns = watch.head == NULL ? next_deadline_ns
                                                   : monotonic_ns() + CANCEL_REPEAT_MS * 1000000LL;
            if (next_deadline_ns != 0 && next_deadline_ns < wake_ns) {
                wake_ns = next_deadline_ns;
            }
            timespec_at_ns(&until, wake_ns);
            (void)pthread_cond_timedwait(&watch.cond, &watch.mutex, &until);
            pthread_mutex_unlock(&watch.mutex);
            continue;
        }
        pthread_mutex_unlock(&watch.mutex);

        PyEval_RestoreThread(tstate);
        for (int i = 0; i < n; i++) {
            request_t *req = due[i];
            request_lock();
            /* RUNNING changes only on a thread holding the GIL, which we now hold: the
             * exception cannot land in the next request of that thread. */
            /* Due still: its thread may have raised it itself since the round (it held
             * the GIL we waited for). */
            if (req->state == REQ_RUNNING && req->waiter == NULL && raise_is_due(req)) {
                PyThreadState_SetAsyncExc(req->thread_ident, erlmod_exception("CallCancelled"));
                atomic_store(&req->raised_at_ns, monotonic_ns());
            }
            request_unlock();
        }
        tstate = PyEval_SaveThread();
        for (int i = 0; i < n; i++) {
            enif_release_resource(due[i]);
        }
    }
}
