#include "py_request.h"

#include <string.h>

#include "py_callback.h"
#include "py_cancel.h"
#include "py_worker.h"

ErlNifResourceType *request_rtype = NULL;

static ErlNifMutex *request_mutex = NULL;

static ERL_NIF_TERM atom_pending;
static ERL_NIF_TERM atom_ready;
static ERL_NIF_TERM atom_armed;
static ERL_NIF_TERM atom_disarmed;
static ERL_NIF_TERM atom_sent;
static ERL_NIF_TERM atom_cancelled;
static ERL_NIF_TERM atom_getattr;
static ERL_NIF_TERM atom_call_method;
static ERL_NIF_TERM atom_to_term;
static ERL_NIF_TERM atom_stream;
static ERL_NIF_TERM atom_py_output;
static ERL_NIF_TERM atom_py_cast_failed;
static ERL_NIF_TERM atom_gone;

static void
request_dtor(ErlNifEnv *env, void *obj)
{
    request_t *req = obj;

    if (req->env != NULL) {
        enif_free_env(req->env);
    }
    if (req->arm_env != NULL) {
        enif_free_env(req->arm_env);
    }
    if (req->callback_env != NULL) {
        enif_free_env(req->callback_env);
    }
    if (req->stream != NULL) {
        enif_release_resource(req->stream);
    }
}

static void
request_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    /* The caller died: nobody wants the result, so stop the work. */
    (void)request_cancel(obj);
}

bool
request_init_resources(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = request_dtor, .down = request_down};

    request_rtype = enif_open_resource_type_x(env, "py_request", &init,
                                              ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (request_mutex == NULL) {
        request_mutex = enif_mutex_create("py_request");
    }
    atom_pending = enif_make_atom(env, "pending");
    atom_ready = enif_make_atom(env, "ready");
    atom_armed = enif_make_atom(env, "armed");
    atom_disarmed = enif_make_atom(env, "disarmed");
    atom_sent = enif_make_atom(env, "sent");
    atom_cancelled = enif_make_atom(env, "cancelled");
    atom_getattr = enif_make_atom(env, "getattr");
    atom_call_method = enif_make_atom(env, "call_method");
    atom_to_term = enif_make_atom(env, "to_term");
    atom_stream = enif_make_atom(env, "stream");
    atom_py_output = enif_make_atom(env, "py_output");
    atom_py_cast_failed = enif_make_atom(env, "py_cast_failed");
    atom_gone = enif_make_atom(env, "gone");
    return request_rtype != NULL && request_mutex != NULL;
}

void
request_lock(void)
{
    enif_mutex_lock(request_mutex);
}

void
request_unlock(void)
{
    enif_mutex_unlock(request_mutex);
}

bool
request_kind_from_term(ERL_NIF_TERM term, request_kind_t *kind)
{
    if (term == ATOMS.call) {
        *kind = REQ_CALL;
    } else if (term == ATOMS.eval) {
        *kind = REQ_EVAL;
    } else if (term == ATOMS.exec) {
        *kind = REQ_EXEC;
    } else if (term == atom_getattr) {
        *kind = REQ_GETATTR;
    } else if (term == atom_call_method) {
        *kind = REQ_CALL_METHOD;
    } else if (term == atom_to_term) {
        *kind = REQ_TO_TERM;
    } else if (term == atom_stream) {
        *kind = REQ_STREAM;
    } else {
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* The size of a term, bounded */

/* The walk of request_payload_is_large: a stack of the containers still to visit. */
typedef struct {
    ERL_NIF_TERM items[REQUEST_WALK_DEPTH];
    int top;
} walk_t;

/* Counts one element against the budget and keeps it to visit if it is a list, tuple or
 * map; false when the budget or the stack is spent (the payload is then large). */
static bool
walk_element(ErlNifEnv *env, walk_t *walk, long *budget, ERL_NIF_TERM term)
{
    ErlNifTermType type = enif_term_type(env, term);

    if (--*budget < 0) {
        return false;
    }
    if (type == ERL_NIF_TERM_TYPE_LIST || type == ERL_NIF_TERM_TYPE_TUPLE ||
        type == ERL_NIF_TERM_TYPE_MAP) {
        if (walk->top == REQUEST_WALK_DEPTH) {
            return false;
        }
        walk->items[walk->top++] = term;
    }
    return true;
}

bool
request_payload_is_large(ErlNifEnv *env, ERL_NIF_TERM payload)
{
    walk_t walk = {.top = 0};
    long budget = REQUEST_INLINE_NODES;

    if (!walk_element(env, &walk, &budget, payload)) {
        return true;
    }
    while (walk.top > 0) {
        ERL_NIF_TERM term = walk.items[--walk.top], head, tail, key, value;
        const ERL_NIF_TERM *elems;
        int arity;
        ErlNifMapIterator iter;
        bool fits = true;

        if (enif_get_tuple(env, term, &arity, &elems)) {
            for (int i = 0; i < arity && fits; i++) {
                fits = walk_element(env, &walk, &budget, elems[i]);
            }
        } else if (enif_is_map(env, term)) {
            if (!enif_map_iterator_create(env, term, &iter, ERL_NIF_MAP_ITERATOR_FIRST)) {
                return true;
            }
            while (fits && enif_map_iterator_get_pair(env, &iter, &key, &value)) {
                fits = walk_element(env, &walk, &budget, key) &&
                       walk_element(env, &walk, &budget, value);
                enif_map_iterator_next(env, &iter);
            }
            enif_map_iterator_destroy(env, &iter);
        } else {
            for (tail = term; fits && enif_get_list_cell(env, tail, &head, &tail);) {
                fits = walk_element(env, &walk, &budget, head);
            }
        }
        if (!fits) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Made, monitored, cancelled */

request_t *
request_new_internal(request_kind_t kind, unsigned flags, const ErlNifPid *caller)
{
    request_t *req = enif_alloc_resource(request_rtype, sizeof(request_t));

    if (req == NULL) {
        return NULL;
    }
    memset(req, 0, sizeof(*req));
    req->env = enif_alloc_env();
    if (req->env == NULL) {
        enif_release_resource(req);
        return NULL;
    }
    req->kind = kind;
    req->flags = flags;
    req->state = REQ_QUEUED;
    atomic_init(&req->ready, false);
    req->payload = ATOMS.undefined;
    req->caller = *caller;
    return req;
}

request_t *
request_new(ErlNifEnv *env, request_kind_t kind, ERL_NIF_TERM payload)
{
    ErlNifPid caller;
    request_t *req = request_new_internal(kind, 0, enif_self(env, &caller));

    if (req != NULL) {
        req->payload = enif_make_copy(req->env, payload);
    }
    return req;
}

bool
request_set_options(ErlNifEnv *env, request_t *req, int argc, const ERL_NIF_TERM argv[],
                    int first)
{
    unsigned flags = 0;

    if (argc > first) {
        if (!enif_is_pid(env, argv[first])) {
            return false;
        }
        req->group_leader = enif_make_copy(req->env, argv[first]);
    }
    if (argc > first + 1) {
        if (!enif_get_uint(env, argv[first + 1], &flags) || (flags & ~REQ_FLAGS_ALL) != 0) {
            return false;
        }
        req->flags = flags;
    }
    return true;
}

/* Monitors the request's caller, whose death then cancels it. Asked for only once a call
 * sleeps or Python calls back into its caller, so fast calls pay for no monitor. env is
 * the caller's, or NULL on a thread of our own. */
static void
monitor_caller(ErlNifEnv *env, request_t *req)
{
    ErlNifMonitor monitor;
    bool needed, drop = false;

    request_lock();
    needed = req->state != REQ_DONE && !req->cancelled && !req->monitored;
    request_unlock();
    /* Not under the lock: nothing that holds it may wait for the monitor. */
    if (!needed || enif_monitor_process(env, req, &req->caller, &monitor) != 0) {
        return;
    }
    request_lock();
    if (req->state == REQ_DONE || req->monitored) {
        drop = true;
    } else {
        req->monitor = monitor;
        req->monitored = true;
    }
    request_unlock();
    if (drop) {
        (void)enif_demonitor_process(env, req, &monitor);
    }
}

void
request_monitor_now(ErlNifEnv *env, request_t *req)
{
    monitor_caller(env, req);
}

/* Removes the caller's monitor, once it has its answer. Only the caller does it (env is
 * its own): a demonitor from a worker thread is a signal that would wake the caller's
 * scheduler once more, after the answer, and that doubled the CPU of a sparse call. */
static void
demonitor_caller(ErlNifEnv *env, request_t *req)
{
    ErlNifMonitor monitor;
    bool monitored;

    request_lock();
    monitored = req->monitored;
    req->monitored = false;
    monitor = req->monitor;
    request_unlock();
    if (monitored) {
        (void)enif_demonitor_process(env, req, &monitor);
    }
}

/* Drops a kept callback (its thread no longer waits for it). Request lock held; returns
 * the env to free once the lock is released. */
static ErlNifEnv *
drop_kept_callback_locked(request_t *req)
{
    ErlNifEnv *dropped = req->callback_env;

    req->callback_env = NULL;
    atomic_store_explicit(&req->ready, req->has_result, memory_order_release);
    return dropped;
}

/* Request lock held. Returns whether a message for the current arming was sent. */
static bool
cancel_locked(request_t *req, bool *watch, ErlNifEnv **dropped)
{
    bool sent = req->message_sent;

    *watch = false;
    if (req->state != REQ_DONE && !req->cancelled) {
        req->cancelled = true;
        if (req->waiter != NULL) {
            callback_waiter_cancel(req->waiter);
        }
        if (req->interrupt != NULL) {
            req->interrupt(req->interrupt_arg);
        }
        /* Watched until it ends, even when its thread waits in erlang.call now (the
         * cancellation wakes that): code that swallows CallCancelled gets it again, and
         * its worker is replaced if it runs on (py_cancel.h). */
        *watch = req->state == REQ_RUNNING;
    }
    req->armed = false;
    *dropped = drop_kept_callback_locked(req);
    return sent;
}

bool
request_cancel(request_t *req)
{
    ErlNifEnv *dropped;
    bool watch, sent;

    request_lock();
    sent = cancel_locked(req, &watch, &dropped);
    request_unlock();
    if (dropped != NULL) {
        enif_free_env(dropped);
    }
    if (watch) {
        cancel_watch(req);
    }
    return sent;
}

void
request_expire(request_t *req)
{
    ErlNifEnv *dropped = NULL, *msg_env = NULL;
    ERL_NIF_TERM msg = 0;
    bool watch = false;

    request_lock();
    if (req->state != REQ_DONE && !req->cancelled) {
        msg_env = req->armed ? enif_alloc_env() : NULL;
        if (msg_env != NULL) {
            msg = enif_make_tuple3(msg_env, ATOMS.py_result, enif_make_copy(msg_env, req->arm_ref),
                                   make_error(msg_env, ATOMS.timeout));
            req->message_sent = true;
            req->delivered = true;
        } else {
            /* Not armed (or no memory to tell it now): its next poll or arm says so. */
            req->expired = true;
            atomic_store_explicit(&req->ready, true, memory_order_release);
        }
        (void)cancel_locked(req, &watch, &dropped);
    }
    request_unlock();
    if (msg_env != NULL) {
        (void)enif_send(NULL, &req->caller, msg_env, msg);
        enif_free_env(msg_env);
    }
    if (dropped != NULL) {
        enif_free_env(dropped);
    }
    if (watch) {
        cancel_watch(req);
    }
}

/* ------------------------------------------------------------------------ */
/* Run */

bool
request_start(request_t *req, thread_ctx_t *ctx)
{
    bool run;

    request_lock();
    run = !req->cancelled;
    if (run) {
        req->state = REQ_RUNNING;
        req->thread_ident = ctx->ident;
        req->runner = ctx;
    } else {
        req->state = REQ_DONE;
    }
    request_unlock();
    /* Done without running: its deadline, if it has one, no longer matters (as at
     * request_finish). After the request lock: the watch's lock comes first. */
    if (!run && req->deadline_ns != 0) {
        cancel_forget_deadline(req);
    }
    return run;
}

/* A result nobody takes (py:cast): dropped, and an error sent to py_output to be logged,
 * {py_cast_failed, Payload, Reason}. */
static bool
discard_result(request_t *req, ERL_NIF_TERM result)
{
    const ERL_NIF_TERM *elems;
    int arity;
    ErlNifPid logger;
    bool cancelled;

    request_lock();
    req->state = REQ_DONE;
    req->runner = NULL;
    cancelled = req->cancelled;
    request_unlock();
    if (!cancelled && enif_get_tuple(req->env, result, &arity, &elems) && arity == 2 &&
        elems[0] == ATOMS.error && enif_whereis_pid(NULL, atom_py_output, &logger)) {
        ErlNifEnv *msg_env = enif_alloc_env();
        if (msg_env != NULL) {
            ERL_NIF_TERM msg = enif_make_tuple3(msg_env, atom_py_cast_failed,
                                                enif_make_copy(msg_env, req->payload),
                                                enif_make_copy(msg_env, elems[1]));
            (void)enif_send(NULL, &logger, msg_env, msg);
            enif_free_env(msg_env);
        }
    }
    return cancelled;
}

bool
request_finish(request_t *req, ERL_NIF_TERM result)
{
    ERL_NIF_TERM msg = 0;
    /* Walked here, by the thread that made it and before the lock: the caller's poll
     * only reads the answer (kept_large). */
    bool cancelled, large = request_payload_is_large(req->env, result);

    if (req->deadline_ns != 0) {
        cancel_forget_deadline(req);
    }
    if ((req->flags & REQ_DISCARD) != 0) {
        return discard_result(req, result);
    }
    request_lock();
    req->state = REQ_DONE;
    req->runner = NULL;
    cancelled = req->cancelled;
    if (!cancelled && req->armed) {
        req->armed = false;
        req->message_sent = true;
        req->delivered = true;
        msg = enif_make_tuple3(req->env, ATOMS.py_result, enif_make_copy(req->env, req->arm_ref),
                               result);
    } else if (!cancelled) {
        req->result = result;
        req->has_result = true;
        req->kept_large = large;
        atomic_store_explicit(&req->ready, true, memory_order_release);
    }
    request_unlock();
    /* Nothing touches req->env after DONE but the caller's poll of a kept result, and a
     * sent one is never kept: the send may consume the env. The caller's monitor is the
     * caller's to remove (demonitor_caller). */
    if (msg != 0) {
        (void)enif_send(NULL, &req->caller, req->env, msg);
    }
    return cancelled;
}

bool
request_set_interrupt(request_t *req, void (*interrupt)(void *arg), void *arg)
{
    bool set;

    request_lock();
    set = !req->cancelled;
    if (set) {
        req->interrupt = interrupt;
        req->interrupt_arg = arg;
    }
    request_unlock();
    return set;
}

void
request_clear_interrupt(request_t *req)
{
    request_lock();
    req->interrupt = NULL;
    req->interrupt_arg = NULL;
    request_unlock();
}

callback_post_t
request_post_callback(request_t *req, struct waiter *waiter, ErlNifEnv *msg_env,
                      ERL_NIF_TERM waiter_term, ERL_NIF_TERM name, ERL_NIF_TERM args)
{
    ERL_NIF_TERM msg = 0, kept = enif_make_tuple4(msg_env, ATOMS.py_callback, waiter_term, name,
                                                 args);
    bool cancelled, large = request_payload_is_large(msg_env, kept);

    /* The thread will wait for the caller: the caller's death must wake it. */
    monitor_caller(NULL, req);
    request_lock();
    cancelled = req->cancelled;
    if (!cancelled) {
        req->waiter = waiter;
        if (req->armed) {
            req->armed = false;
            req->message_sent = true;
            msg = enif_make_tuple5(msg_env, ATOMS.py_callback,
                                   enif_make_copy(msg_env, req->arm_ref), waiter_term, name, args);
        } else {
            req->callback_env = msg_env;
            req->callback = kept;
            req->kept_large = large;
            msg_env = NULL;
            atomic_store_explicit(&req->ready, true, memory_order_release);
        }
    }
    request_unlock();
    if (msg != 0) {
        (void)enif_send(NULL, &req->caller, msg_env, msg);
    }
    if (msg_env != NULL) {
        enif_free_env(msg_env);
    }
    return cancelled ? CALLBACK_CANCELLED : CALLBACK_POSTED;
}

bool
request_set_waiter(request_t *req, struct waiter *waiter)
{
    bool set;

    request_lock();
    set = !req->cancelled;
    if (set) {
        req->waiter = waiter;
    }
    request_unlock();
    return set;
}

bool
request_end_callback(request_t *req)
{
    bool cancelled;
    ErlNifEnv *dropped = NULL;

    request_lock();
    req->waiter = NULL;
    cancelled = req->cancelled;
    if (req->callback_env != NULL) {
        /* Woken before the caller took it (a dead dispatcher cannot be the case here,
         * but a cancellation can): it will never be run. */
        dropped = drop_kept_callback_locked(req);
    }
    request_unlock();
    if (dropped != NULL) {
        enif_free_env(dropped);
    }
    return cancelled;
}

/* ------------------------------------------------------------------------ */
/* The caller's side: poll, arm, disarm, cancel */

/* What the request keeps for its caller, taken out under the request lock; copied into
 * the caller's env once the lock is released (nothing else touches it then). */
typedef struct {
    ErlNifEnv *env;      /* the env the term lives in */
    ERL_NIF_TERM term;
    ErlNifEnv *free_env; /* to free after the copy (a kept callback's) */
} taken_t;

/* Request lock held: whether a result or callback is kept and too large for the poll to
 * copy on the caller's scheduler (more than REQUEST_INLINE_NODES elements); arm sends it
 * instead, which moves it without a copy. */
static bool
kept_is_large_locked(request_t *req)
{
    return req->kept_large && (req->has_result || req->callback_env != NULL);
}

/* Request lock held: takes the kept result or callback, if any. */
static bool
take_locked(request_t *req, taken_t *taken)
{
    if (req->has_result) {
        req->has_result = false;
        req->delivered = true;
        *taken = (taken_t){req->env, req->result, NULL};
    } else if (req->callback_env != NULL) {
        *taken = (taken_t){req->callback_env, req->callback, req->callback_env};
        req->callback_env = NULL;
    } else {
        return false;
    }
    atomic_store_explicit(&req->ready, false, memory_order_release);
    return true;
}

/* The taken term in the caller's env. A result is the answer: the monitor goes. */
static ERL_NIF_TERM
taken_term(ErlNifEnv *env, request_t *req, taken_t *taken)
{
    ERL_NIF_TERM term = enif_make_copy(env, taken->term);

    if (taken->free_env != NULL) {
        enif_free_env(taken->free_env);
    } else {
        demonitor_caller(env, req);
    }
    return term;
}

/* Request lock held: sends the kept result or callback to the caller (self) tagged with
 * ref, for a kept term too large to copy on the caller's scheduler. The send hands the
 * env's terms over without copying them. */
static void
send_kept_locked(ErlNifEnv *env, request_t *req, ERL_NIF_TERM ref, ErlNifEnv **send_env,
                 ERL_NIF_TERM *msg)
{
    taken_t taken = {NULL, 0, NULL};
    const ERL_NIF_TERM *elems;
    int arity;

    (void)take_locked(req, &taken);
    req->message_sent = true;
    if (taken.free_env == NULL) {
        *msg = enif_make_tuple3(taken.env, ATOMS.py_result, enif_make_copy(taken.env, ref),
                                taken.term);
    } else {
        (void)enif_get_tuple(taken.env, taken.term, &arity, &elems);
        *msg = enif_make_tuple5(taken.env, ATOMS.py_callback, enif_make_copy(taken.env, ref),
                                elems[1], elems[2], elems[3]);
    }
    *send_env = taken.env;
}

static bool
get_request(ErlNifEnv *env, ERL_NIF_TERM term, request_t **req)
{
    return enif_get_resource(env, term, request_rtype, (void **)req);
}

/* poll(Request) -> pending | ready | {py_callback, Waiter, Name, Args} | Result.
 * `ready': something large is kept; arm/2 sends it at once. */
ERL_NIF_TERM
request_poll_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_t *req;
    taken_t taken = {NULL, 0, NULL};
    bool took = false, large = false, expired;

    if (!get_request(env, argv[0], &req)) {
        return enif_make_badarg(env);
    }
    if (!atomic_load_explicit(&req->ready, memory_order_acquire)) {
        return atom_pending;
    }
    request_lock();
    large = kept_is_large_locked(req);
    if (!large) {
        took = take_locked(req, &taken);
    }
    expired = !took && req->expired;
    request_unlock();
    if (large) {
        return atom_ready;
    }
    if (expired) {
        return make_error(env, ATOMS.timeout);
    }
    return took ? taken_term(env, req, &taken) : atom_pending;
}

/* arm(Request, Ref) -> armed | {py_callback, Waiter, Name, Args} | Result.
 * `armed': what comes next is sent as {py_result, Ref, Result} or
 * {py_callback, Ref, Waiter, Name, Args}, once. */
ERL_NIF_TERM
request_arm_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_t *req;
    taken_t taken = {NULL, 0, NULL};
    ErlNifEnv *send_env = NULL;
    ERL_NIF_TERM msg = 0;
    ErlNifPid self;
    bool took = false, expired = false, gone = false;

    if (!get_request(env, argv[0], &req) || !enif_is_ref(env, argv[1])) {
        return enif_make_badarg(env);
    }
    /* The caller goes to sleep: from now on its death cancels the request. */
    monitor_caller(env, req);
    request_lock();
    req->message_sent = false;
    if (kept_is_large_locked(req)) {
        send_kept_locked(env, req, argv[1], &send_env, &msg);
    } else {
        took = take_locked(req, &taken);
    }
    if (!took && send_env == NULL) {
        /* Armed for nothing: expired at its own deadline, or its answer delivered or
         * cancelled before (py:await of a Ref awaited already). */
        expired = req->expired;
        gone = !expired && (req->delivered || req->cancelled);
    }
    if (!took && send_env == NULL && !req->cancelled) {
        if (req->arm_env == NULL) {
            req->arm_env = enif_alloc_env();
        } else {
            enif_clear_env(req->arm_env);
        }
        if (req->arm_env != NULL) {
            req->arm_ref = enif_make_copy(req->arm_env, argv[1]);
            req->armed = true;
        }
    }
    request_unlock();
    if (took) {
        return taken_term(env, req, &taken);
    }
    if (expired) {
        return make_error(env, ATOMS.timeout);
    }
    if (gone) {
        return atom_gone;
    }
    if (send_env != NULL) {
        (void)enif_send(env, enif_self(env, &self), send_env, msg);
        if (send_env != req->env) {
            enif_free_env(send_env);
        }
        return atom_armed;
    }
    if (req->arm_env == NULL) {
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    /* Cancelled (the caller's own cancel came first: not the case in py.erl) or armed:
     * either way nothing but the armed message can arrive. */
    return atom_armed;
}

/* disarm(Request) -> disarmed | sent. `sent': the message for the current arming is on its
 * way (or in the mailbox already). */
ERL_NIF_TERM
request_disarm_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_t *req;
    bool sent;

    if (!get_request(env, argv[0], &req)) {
        return enif_make_badarg(env);
    }
    request_lock();
    sent = req->message_sent;
    req->armed = false;
    request_unlock();
    return sent ? atom_sent : atom_disarmed;
}

/* cancel(Request) -> cancelled | sent | Result. `cancelled': nothing more comes for the
 * request; `sent': the message for the current arming is on its way; a result kept before
 * the cancellation is returned. */
ERL_NIF_TERM
request_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_t *req;
    taken_t taken = {NULL, 0, NULL};
    bool took, sent;

    if (!get_request(env, argv[0], &req)) {
        return enif_make_badarg(env);
    }
    request_lock();
    took = req->has_result && take_locked(req, &taken);
    request_unlock();
    if (took) {
        /* A kept result: the request is done, and nothing is armed or kept besides. */
        return taken_term(env, req, &taken);
    }
    sent = request_cancel(req);
    /* Cancelled: the caller's death no longer matters. */
    demonitor_caller(env, req);
    return sent ? atom_sent : atom_cancelled;
}

/* demonitor(Request) -> ok: the caller received the result message. */
ERL_NIF_TERM
request_demonitor_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_t *req;

    if (!get_request(env, argv[0], &req)) {
        return enif_make_badarg(env);
    }
    demonitor_caller(env, req);
    return ATOMS.ok;
}
