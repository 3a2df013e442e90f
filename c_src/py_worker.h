/* The worker threads that run requests (py_request.h), and the queue they take them from.
 */
#ifndef PY_WORKER_H
#define PY_WORKER_H

#include "py_common.h"
#include "py_request.h"

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

bool worker_init_resources(ErlNifEnv *env);

/* Starts n worker threads on the running interpreter. */
bool worker_pool_start(int n, char *err, size_t errlen);
void worker_pool_stats(worker_stats_t *out);

/* How long a caller polls for the answer before it sleeps in `receive', when a worker is
 * awake to take its request at once (docs/runtime.md, "Spinning"). */
#define CALLER_SPIN_US 10

/* Queues req (taking a reference). Returns how long, in microseconds, its caller should
 * poll for the answer before it sleeps: CALLER_SPIN_US when requests come back to back and
 * none waits before it (a worker spins, or is about to), else 0 (waking a thread takes
 * longer than the poll would last). */
int worker_pool_push(request_t *req);

/* Giving up a worker (py_cancel.c): reserve a place (false at max_given_up threads given
 * up at once), then either start the replacement or cancel the reservation. */
bool worker_pool_reserve_replacement(int max_given_up);
void worker_pool_cancel_replacement(void);
void worker_pool_start_replacement(void);

/* Spins while *value is 0, for at most max_ns; with yield, gives the core
 * up on each turn (to a thread that may be the one to answer). For waits
 * that usually end sooner than a sleeping thread can be woken. */
void worker_spin_while_zero(atomic_int *value, long max_ns, bool yield);

/* This thread's context, or NULL on a thread that serves no request. */
thread_ctx_t *worker_thread_ctx(void);
void worker_set_thread_ctx(thread_ctx_t *ctx);

/* erlang._note_partial_output(): this thread's sys.stdout or sys.stderr holds a partial
 * line, to send when its current call ends. */
void worker_note_partial_output(void);

/* Runs req on this thread and hands its result to the caller (request_finish). GIL held.
 * Consumes the queue's reference to req. */
void worker_execute(thread_ctx_t *ctx, request_t *req);

#endif
