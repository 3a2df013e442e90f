/* A request's life: made by a caller's submit, queued, run by a Python thread, cancelled,
 * waiting on a callback, answered. Every field that changes is guarded by the one request
 * lock, and every change of state is made here (docs/design.md, decision 10).
 *
 * How an answer reaches its caller (docs/runtime.md, "Waiting for the answer"): the
 * caller first polls the request (py_nif:poll/1, no mailbox involved), then, if it
 * decides to sleep, arms it with a reference made just before its `receive' (py_nif:arm/2).
 * A result or callback that comes while the caller polls is kept in the request for the
 * next poll; one that comes while it is armed is sent as a message tagged with that
 * reference, and disarms it. So every message the caller waits for carries a reference
 * created in the function that waits, and the compiler's receive optimisation skips the
 * rest of its mailbox.
 *
 * Lock order: never take the GIL while holding the request lock; the request lock may be
 * taken while holding the GIL, and a waiter's mutex may be taken while holding it.
 */
#ifndef PY_REQUEST_H
#define PY_REQUEST_H

#include "py_common.h"

typedef enum {
    REQ_CALL,        /* {Module, Function, Args, Kwargs} */
    REQ_EVAL,        /* {Code, Locals} */
    REQ_EXEC,        /* Code */
    REQ_GETATTR,     /* {Target, Name}: an attribute of an object (docs/objects.md) */
    REQ_CALL_METHOD, /* {Target, Name, Args, Kwargs} */
    REQ_TO_TERM,     /* Target: the object converted */
    REQ_STREAM,      /* {Module, Function, Args, Kwargs, Active}: a stream (py_stream.h) */
    REQ_STREAM_PUMP, /* no payload: the next items of req->stream */
} request_kind_t;

/* How a request's answer is made and delivered, from the caller's options (py.erl). */
enum {
    REQ_RETURN_OBJECT = 1,    /* the result as a handle, not converted */
    REQ_DETAILED_ERRORS = 2,  /* errors as {Type, Message, Traceback, Info} (py_error.h) */
    REQ_DETACHED = 4,         /* nobody waits in py:call: its erlang.call goes to the
                                 dispatcher (py:async_call, py:cast, stream pumps) */
    REQ_DISCARD = 8,          /* nobody takes the result: an error is logged (py:cast) */
};
#define REQ_FLAGS_ALL 15u
typedef enum { REQ_QUEUED, REQ_RUNNING, REQ_DONE } request_state_t;

struct waiter;
struct thread_ctx;

typedef struct request {
    request_kind_t kind;
    unsigned flags;       /* REQ_RETURN_OBJECT... */
    ErlNifEnv *env;       /* owns the payload, and the result until it is taken or sent */
    ERL_NIF_TERM payload;
    ErlNifPid caller;
    /* The caller's group leader (a pid of env, 0: none), where Python's output for it goes
     * (docs/output.md). A term, not an ErlNifPid: it may be another node's (erpc, rpc, a
     * remote shell). Read by the thread running the request, which owns env meanwhile. */
    ERL_NIF_TERM group_leader;
    ErlNifMonitor monitor;
    bool monitored;
    /* Set (release) when the request holds something for the caller to take; poll reads
     * it without the lock, so a caller that spins takes no lock until there is. */
    atomic_bool ready;
    /* Guarded by the request lock. */
    request_state_t state;
    bool cancelled;
    bool armed;           /* the caller sleeps in `receive' on arm_ref */
    bool message_sent;    /* a message for the current arming was sent, not yet received */
    bool has_result;      /* result is kept in env for the caller's next poll */
    bool kept_large;      /* what is kept is too large for the poll to copy (sent on arm) */
    bool expired;         /* cancelled at its own deadline: the caller gets {error, timeout} */
    bool delivered;       /* its result was taken or sent: nothing more will come */
    ERL_NIF_TERM result;
    ErlNifEnv *arm_env;   /* owns arm_ref */
    ERL_NIF_TERM arm_ref;
    ErlNifEnv *callback_env; /* a kept callback, {py_callback, Waiter, Name, Args} */
    ERL_NIF_TERM callback;
    unsigned long thread_ident;   /* the Python thread running it, while RUNNING */
    struct thread_ctx *runner;    /* that thread's context, while RUNNING */
    struct waiter *waiter;        /* set while its thread waits in erlang.call */
    /* Set while its thread sleeps elsewhere (an event loop's wait): called, request lock
     * held, when req is cancelled, to wake it. It must only take locks of its own. */
    void (*interrupt)(void *arg);
    void *interrupt_arg;
    struct stream *stream;        /* a pump's stream (a reference kept) */
    /* A deadline of its own (py:async_call), watched by py_cancel.c while it runs or
     * waits: 0 for none. */
    long long deadline_ns;
    bool deadline_linked;         /* in the watch's deadline list (its lock) */
    struct request *deadline_prev, *deadline_next;
    struct request *next;         /* queue link */
    /* The cancellation watch (py_cancel.c), under the watch's lock. */
    bool watched;
    bool given_up;
    struct timespec cancelled_at;
    /* When CallCancelled was last raised in its thread (monotonic ns, 0: never), by the
     * watch or by erlang.call and conversions themselves (cancel_raised). Atomic: the
     * watch reads it again under the GIL, without its own lock. */
    atomic_llong raised_at_ns;
    struct request *watch_next;
} request_t;

extern ErlNifResourceType *request_rtype;

bool request_init_resources(ErlNifEnv *env);

void request_lock(void);
void request_unlock(void);

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
request_t *request_new(ErlNifEnv *env, request_kind_t kind, ERL_NIF_TERM payload);

/* A new request with no payload, for caller, made by a thread of ours (a stream's pump). */
request_t *request_new_internal(request_kind_t kind, unsigned flags, const ErlNifPid *caller);

/* The optional arguments of submit and submit_nested, from the first index on: the group
 * leader, then the flags. False for a bad one. */
bool request_set_options(ErlNifEnv *env, request_t *req, int argc, const ERL_NIF_TERM argv[],
                         int first);

/* A detached request's caller is monitored at once, since it may never poll or arm: its
 * death cancels the request (py:async_call). */
void request_monitor_now(ErlNifEnv *env, request_t *req);

/* req's own deadline passed (py_cancel.c): cancels it, and its caller gets
 * {error, timeout} (sent if armed, else on its next poll or arm). */
void request_expire(request_t *req);

/* Marks req cancelled and wakes or interrupts whatever runs it. Safe from any thread.
 * Returns whether a message for the caller's current arming was already sent. */
bool request_cancel(request_t *req);

/* A Python thread (ctx) takes req to run it: false if it was cancelled meanwhile, and
 * then it is done. */
bool request_start(request_t *req, struct thread_ctx *ctx);

/* req ran; result was built in req->env. Hands it to the caller (kept or sent), or drops
 * it if req was cancelled. Returns whether it was cancelled. */
bool request_finish(request_t *req, ERL_NIF_TERM result);

typedef enum {
    CALLBACK_POSTED,    /* kept for the caller's poll, or sent to it */
    CALLBACK_CANCELLED, /* req was cancelled: nobody will run it */
} callback_post_t;

/* The thread running req calls Erlang: registers waiter as the request's and hands
 * {Waiter, Name, Args} (terms of msg_env, which this takes over) to the caller. */
callback_post_t request_post_callback(request_t *req, struct waiter *waiter, ErlNifEnv *msg_env,
                                      ERL_NIF_TERM waiter_term, ERL_NIF_TERM name,
                                      ERL_NIF_TERM args);

/* The thread running req is about to sleep outside erlang.call: a cancellation calls
 * interrupt(arg) to wake it, until request_clear_interrupt. Returns false, and sets nothing,
 * if req is already cancelled. */
bool request_set_interrupt(request_t *req, void (*interrupt)(void *arg), void *arg);
void request_clear_interrupt(request_t *req);

/* The thread running a detached req (REQ_DETACHED) sends a callback to the dispatcher and
 * waits on waiter: a cancellation of req must wake it. False, and nothing set, if req is
 * cancelled already. */
bool request_set_waiter(request_t *req, struct waiter *waiter);

/* The callback's thread stopped waiting. Returns whether req was cancelled meanwhile. */
bool request_end_callback(request_t *req);

/* NIF bodies: poll(Request), arm(Request, Ref), disarm(Request), cancel(Request),
 * demonitor(Request). */
ERL_NIF_TERM request_poll_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM request_arm_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM request_disarm_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM request_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM request_demonitor_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
