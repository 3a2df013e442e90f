/* Requests and the worker threads that run them.
 *
 * A request is a resource shared by the Erlang caller (which holds its term),
 * the queue and the thread that runs it. Its mutable fields are guarded by
 * the request lock. Lock order: never take the GIL while holding the request
 * lock; the request lock may be taken while holding the GIL.
 */
#ifndef PY_WORKER_H
#define PY_WORKER_H

#include "py_common.h"

typedef enum { REQ_CALL, REQ_EVAL, REQ_EXEC } request_kind_t;
typedef enum { REQ_QUEUED, REQ_RUNNING, REQ_DONE } request_state_t;

struct waiter;
struct thread_ctx;

typedef struct request {
    request_kind_t kind;
    ErlNifEnv *env;       /* owns ref and payload until the result is sent */
    ERL_NIF_TERM ref;     /* the caller's tag for the reply */
    ERL_NIF_TERM payload;
    ErlNifPid caller;
    ErlNifMonitor monitor;
    bool monitored;
    /* Guarded by the request lock. */
    request_state_t state;
    bool cancelled;
    bool sent;
    unsigned long thread_ident;   /* the Python thread running it, while RUNNING */
    struct thread_ctx *runner;    /* that thread's context, while RUNNING */
    struct waiter *waiter;        /* set while its thread waits in erlang.call */
    struct request *next;         /* queue link */
    /* The cancellation watch (py_cancel.c), under the watch's lock. */
    bool watched;
    bool given_up;
    struct timespec cancelled_at;
    struct timespec raised_at;
    struct request *watch_next;
} request_t;

/* What a Python thread is doing for Erlang. Worker threads have one for
 * life; other Python threads get one while they wait in erlang.call. */
typedef struct thread_ctx {
    unsigned long ident;
    request_t *current; /* the request this thread runs, innermost first */
    bool worker;        /* a pool worker (not a thread Python started) */
    atomic_bool given_up; /* replaced in the pool: exit once the current request ends */
} thread_ctx_t;

typedef struct {
    int workers;        /* threads serving the queue */
    int busy;           /* of those, running a request */
    int queued;         /* requests waiting for a worker */
    int given_up;       /* threads given up on that still run their cancelled request */
    long given_up_total;
} worker_stats_t;

extern ErlNifResourceType *request_rtype;

bool worker_init_resources(ErlNifEnv *env);

/* Starts n worker threads on the running interpreter. */
bool worker_pool_start(int n, char *err, size_t errlen);
void worker_pool_stats(worker_stats_t *out);

/* Giving up a worker (py_cancel.c): reserve a place (false at max_given_up threads given
 * up at once), then either start the replacement or cancel the reservation. */
bool worker_pool_reserve_replacement(int max_given_up);
void worker_pool_cancel_replacement(void);
void worker_pool_start_replacement(void);

/* Spins while *value is 0, for at most max_ns; with yield, gives the core
 * up on each turn (to a thread that may be the one to answer). For waits
 * that usually end sooner than a sleeping thread can be woken. */
void worker_spin_while_zero(atomic_int *value, long max_ns, bool yield);

/* call, eval or exec; false for any other term. */
bool request_kind_from_term(ERL_NIF_TERM term, request_kind_t *kind);

/* Terms of more elements than this (lists, tuples and maps counted whole) are copied into a
 * request on a dirty scheduler, not the caller's: a 100 MB term would hold a scheduler for
 * tens of milliseconds. The walk that counts them stops at the bound, so it costs a small
 * term a few microseconds at most. */
#define REQUEST_INLINE_NODES 20000
#define REQUEST_WALK_DEPTH 256

/* Whether copying payload would take long enough to move off the caller's scheduler: more
 * than REQUEST_INLINE_NODES elements, or nesting deeper than the walk follows. */
bool request_payload_is_large(ErlNifEnv *env, ERL_NIF_TERM payload);

/* A new request for the process of env. Returns NULL on allocation failure.
 * The caller owns one reference. */
request_t *request_new(ErlNifEnv *env, request_kind_t kind, ERL_NIF_TERM ref,
                       ERL_NIF_TERM payload);

/* Monitors the request's caller, whose death then cancels it. The caller
 * asks for it (py_nif:monitor/1) only once its call has not been answered
 * within a few microseconds, so fast calls pay for no monitor. env is the
 * caller's. */
void request_monitor_caller(ErlNifEnv *env, request_t *req);
void worker_pool_push(request_t *req);

typedef enum {
    CANCEL_OK,               /* nothing more will come for the request */
    CANCEL_ALREADY_SENT,     /* its result was sent before */
    CANCEL_CALLBACK_PENDING, /* a callback message is on its way to the caller */
} cancel_result_t;

/* Marks req cancelled and wakes or interrupts whatever runs it. Safe from
 * any thread. */
cancel_result_t request_cancel(request_t *req);

void request_lock(void);
void request_unlock(void);

/* This thread's context, or NULL on a thread that serves no request. */
thread_ctx_t *worker_thread_ctx(void);
void worker_set_thread_ctx(thread_ctx_t *ctx);

/* Runs req on this thread and sends its result. GIL held. Consumes the
 * caller's reference to req. */
void worker_execute(thread_ctx_t *ctx, request_t *req);

#endif
