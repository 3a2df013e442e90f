#include "py_callback.h"

#include <string.h>

#include "py_cancel.h"
#include "py_convert.h"
#include "py_erlang_module.h"

struct waiter {
    ErlNifMutex *mutex;
    ErlNifCond *cond;
    ErlNifEnv *reply_env;
    ERL_NIF_TERM reply;
    ErlNifMonitor monitor;
    bool monitored;
    /* Guarded by mutex. */
    bool has_reply;
    bool cancelled;   /* the request it serves was cancelled */
    bool server_down; /* the process serving the callback died */
    bool closed;      /* Python stopped waiting */
    /* Bumped with every signal of cond, read without the mutex by a waiter
     * that spins before it sleeps. */
    atomic_int events;
    request_t *nested_head;
    request_t *nested_tail;
};

ErlNifResourceType *waiter_rtype = NULL;

static ERL_NIF_TERM atom_dispatcher;
static ERL_NIF_TERM atom_unknown_function;

static void
waiter_dtor(ErlNifEnv *env, void *obj)
{
    waiter_t *w = obj;
    if (w->reply_env != NULL) {
        enif_free_env(w->reply_env);
    }
    if (w->cond != NULL) {
        enif_cond_destroy(w->cond);
    }
    if (w->mutex != NULL) {
        enif_mutex_destroy(w->mutex);
    }
}

static void
waiter_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    waiter_t *w = obj;
    enif_mutex_lock(w->mutex);
    w->server_down = true;
    atomic_fetch_add(&w->events, 1);
    enif_cond_signal(w->cond);
    enif_mutex_unlock(w->mutex);
}

bool
callback_init_resources(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = waiter_dtor, .down = waiter_down};

    waiter_rtype = enif_open_resource_type_x(env, "py_waiter", &init, ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    atom_dispatcher = enif_make_atom(env, "py_callback_dispatcher");
    atom_unknown_function = enif_make_atom(env, "unknown_function");
    return waiter_rtype != NULL;
}

void
callback_waiter_cancel(waiter_t *w)
{
    enif_mutex_lock(w->mutex);
    w->cancelled = true;
    atomic_fetch_add(&w->events, 1);
    enif_cond_signal(w->cond);
    enif_mutex_unlock(w->mutex);
}

static waiter_t *
waiter_new(void)
{
    waiter_t *w = enif_alloc_resource(waiter_rtype, sizeof(waiter_t));
    if (w == NULL) {
        return NULL;
    }
    memset(w, 0, sizeof(*w));
    w->mutex = enif_mutex_create("py_waiter");
    w->cond = enif_cond_create("py_waiter");
    if (w->mutex == NULL || w->cond == NULL) {
        enif_release_resource(w);
        return NULL;
    }
    return w;
}

/* ------------------------------------------------------------------------ */
/* erlang.call */

/* Raises the Python exception that an {error, ...} reply stands for. */
static void
raise_reply_error(ErlNifEnv *env, const ERL_NIF_TERM *elems, int arity, PyObject *name)
{
    PyObject *kind = NULL, *reason = NULL, *formatted = NULL, *stack = NULL, *exc = NULL;

    if (arity == 2 && elems[1] == atom_unknown_function) {
        /* A plain str: the message reads 'f', not Atom('f'). */
        PyObject *text = PyUnicode_FromObject(name);
        exc = text == NULL ? NULL : PyObject_CallOneArg(erlmod_exception("UnknownFunction"), text);
        Py_XDECREF(text);
    } else if (arity == 5) {
        kind = conv_to_py(env, elems[1]);
        formatted = kind == NULL ? NULL : conv_to_py(env, elems[3]);
        stack = formatted == NULL ? NULL : conv_to_py(env, elems[4]);
        if (stack != NULL) {
            reason = conv_to_py(env, elems[2]);
            if (reason == NULL) {
                /* A reason Python cannot hold (an improper list): its text. */
                PyErr_Clear();
                reason = Py_NewRef(formatted);
            }
            exc = PyObject_CallFunctionObjArgs(erlmod_exception("ErlangException"), kind, reason,
                                               formatted, stack, NULL);
        }
    } else {
        PyErr_SetString(erlmod_exception("Error"), "malformed callback reply");
    }
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    Py_XDECREF(kind);
    Py_XDECREF(reason);
    Py_XDECREF(formatted);
    Py_XDECREF(stack);
    Py_XDECREF(exc);
}

PyObject *
callback_reply_value(ErlNifEnv *env, ERL_NIF_TERM reply, PyObject *name)
{
    int arity = 0;
    const ERL_NIF_TERM *elems;

    if (!enif_get_tuple(env, reply, &arity, &elems) || arity < 2) {
        PyErr_SetString(erlmod_exception("Error"), "malformed callback reply");
        return NULL;
    }
    if (elems[0] == ATOMS.ok) {
        return conv_to_py(env, elems[1]);
    }
    raise_reply_error(env, elems, arity, name);
    return NULL;
}

static PyObject *
reply_to_python(waiter_t *w, PyObject *name)
{
    if (w->reply_env == NULL) {
        return PyErr_NoMemory(); /* callback_reply_nif could not keep the reply */
    }
    return callback_reply_value(w->reply_env, w->reply, name);
}

/* The name and the argument list of erlang.call(name, *args), built in msg_env. */
static bool
build_callback_terms(ErlNifEnv *msg_env, PyObject *args, ERL_NIF_TERM *name,
                     ERL_NIF_TERM *list)
{
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);

    if (!conv_to_term(msg_env, PyTuple_GET_ITEM(args, 0), name)) {
        return false;
    }
    *list = enif_make_list(msg_env, 0);
    for (Py_ssize_t i = nargs - 1; i >= 1; i--) {
        ERL_NIF_TERM item;
        if (!conv_to_term(msg_env, PyTuple_GET_ITEM(args, i), &item)) {
            return false;
        }
        *list = enif_make_list_cell(msg_env, item, *list);
    }
    return true;
}

/* How long a thread waiting in erlang.call spins before it sleeps: a fun
 * that answers at once does so sooner than a sleeping thread can be woken. */
#define WAIT_SPIN_NS 20000L

/* Waits, GIL released, for the reply; runs nested requests meanwhile. */
static void
wait_for_reply(thread_ctx_t *ctx, waiter_t *w)
{
    PyThreadState *tstate = PyEval_SaveThread();
    request_t *leftover;

    /* Yielding: the scheduler that runs the fun may need this core. */
    worker_spin_while_zero(&w->events, WAIT_SPIN_NS, true);

    enif_mutex_lock(w->mutex);
    for (;;) {
        if (w->has_reply || w->cancelled || w->server_down) {
            break;
        }
        if (w->nested_head != NULL) {
            request_t *nested = w->nested_head;
            w->nested_head = nested->next;
            if (w->nested_head == NULL) {
                w->nested_tail = NULL;
            }
            enif_mutex_unlock(w->mutex);
            PyEval_RestoreThread(tstate);
            worker_execute(ctx, nested);
            tstate = PyEval_SaveThread();
            enif_mutex_lock(w->mutex);
            continue;
        }
        enif_cond_wait(w->cond, w->mutex);
    }
    w->closed = true;
    leftover = w->nested_head;
    w->nested_head = w->nested_tail = NULL;
    enif_mutex_unlock(w->mutex);
    /* Requests routed here after we stopped serving them still get run. */
    while (leftover != NULL) {
        request_t *next = leftover->next;
        worker_pool_push(leftover);
        enif_release_resource(leftover);
        leftover = next;
    }
    PyEval_RestoreThread(tstate);
}

PyObject *
callback_call(PyObject *module, PyObject *args)
{
    thread_ctx_t local_ctx = {0};
    thread_ctx_t *ctx = worker_thread_ctx();
    request_t *req;
    waiter_t *w = NULL;
    ErlNifEnv *msg_env = NULL;
    ERL_NIF_TERM name, list, waiter_term;
    ErlNifPid server;
    PyObject *result = NULL;
    bool own_ctx = false, cancelled = false, detached;

    if (PyTuple_GET_SIZE(args) < 1 || !PyUnicode_Check(PyTuple_GET_ITEM(args, 0))) {
        PyErr_SetString(PyExc_TypeError, "erlang.call(name, *args): name must be a str");
        return NULL;
    }
    if (ctx == NULL) {
        local_ctx.ident = PyThread_get_thread_ident();
        ctx = &local_ctx;
        worker_set_thread_ctx(ctx);
        own_ctx = true;
    }
    req = ctx->current;
    /* Nobody waits in py:call for a detached request (py:async_call, py:cast, a stream):
     * its callbacks go to the dispatcher too. */
    detached = req == NULL || (req->flags & REQ_DETACHED) != 0;
    if (detached && !enif_whereis_pid(NULL, atom_dispatcher, &server)) {
        PyErr_SetString(erlmod_exception("Error"),
                        "erlang.call needs the erlang_python application to be running");
        goto done;
    }
    w = waiter_new();
    msg_env = enif_alloc_env();
    if (w == NULL || msg_env == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!build_callback_terms(msg_env, args, &name, &list)) {
        goto done;
    }
    waiter_term = enif_make_resource(msg_env, w);
    if (!detached) {
        /* To the process whose call this runs for, which polls or sleeps for it. Its
         * death cancels the request, which wakes us. */
        ErlNifEnv *posted = msg_env;
        msg_env = NULL;
        if (request_post_callback(req, w, posted, waiter_term, name, list) == CALLBACK_CANCELLED) {
            cancel_raised(req);
            PyErr_SetString(erlmod_exception("CallCancelled"),
                            "the py:call this code runs for was cancelled");
            goto done;
        }
    } else {
        /* To the dispatcher, watched, since nothing else would wake us if it died. */
        ERL_NIF_TERM msg = enif_make_tuple5(msg_env, ATOMS.py_callback, ATOMS.undefined,
                                            waiter_term, name, list);
        if (req != NULL && !request_set_waiter(req, w)) {
            req = NULL; /* no request_end_callback: the waiter was never set */
            PyErr_SetString(erlmod_exception("CallCancelled"),
                            "the py:call this code runs for was cancelled");
            goto done;
        }
        w->monitored = enif_monitor_process(NULL, w, &server, &w->monitor) == 0;
        if (!w->monitored || !enif_send(NULL, &server, msg_env, msg)) {
            if (req != NULL) {
                (void)request_end_callback(req);
            }
            PyErr_SetString(erlmod_exception("Error"),
                            "the Erlang process that would run the callback is not alive");
            goto done;
        }
    }
    wait_for_reply(ctx, w);
    if (req != NULL) {
        /* From here on a cancellation interrupts this thread (the request has no
         * waiter); one that came before, even after the reply, must raise here, or the
         * code after the call would run on for a caller that is gone. */
        cancelled = request_end_callback(req);
    }
    if (cancelled) {
        cancel_raised(req);
        PyErr_SetString(erlmod_exception("CallCancelled"),
                        "the py:call this code runs for timed out or its caller exited");
    } else if (w->has_reply) {
        result = reply_to_python(w, PyTuple_GET_ITEM(args, 0));
    } else if (w->cancelled) {
        PyErr_SetString(erlmod_exception("CallCancelled"),
                        "the py:call this code runs for timed out or its caller exited");
    } else {
        PyErr_SetString(erlmod_exception("Error"),
                        "the Erlang process running the callback exited before replying");
    }
done:
    if (w != NULL) {
        if (w->monitored) {
            (void)enif_demonitor_process(NULL, w, &w->monitor);
        }
        enif_mutex_lock(w->mutex);
        w->closed = true;
        enif_mutex_unlock(w->mutex);
        enif_release_resource(w);
    }
    if (msg_env != NULL) {
        enif_free_env(msg_env);
    }
    if (own_ctx) {
        worker_set_thread_ctx(NULL);
    }
    return result;
}

/* ------------------------------------------------------------------------ */
/* erlang.send and erlang.self */

static bool
destination_pid(PyObject *dest, ErlNifPid *pid)
{
    ErlNifEnv *env = enif_alloc_env();
    ERL_NIF_TERM term, name;
    bool ok = false;

    if (env == NULL) {
        PyErr_NoMemory();
        return false;
    }
    if (erlmod_unwrap_term(env, dest, &term)) {
        ok = enif_get_local_pid(env, term, pid);
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "erlang.send: destination must be a local Pid");
        }
    } else if (PyUnicode_Check(dest)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(dest, &size);
        if (text != NULL) {
            ok = conv_make_atom(env, text, (size_t)size, true, &name) &&
                 enif_whereis_pid(NULL, name, pid);
            if (!ok) {
                PyErr_Format(erlmod_exception("Error"), "erlang.send: no process registered as %R",
                             dest);
            }
        }
    } else {
        PyErr_Format(PyExc_TypeError,
                     "erlang.send: destination must be a Pid or a registered name, not %.100s",
                     Py_TYPE(dest)->tp_name);
    }
    enif_free_env(env);
    return ok;
}

PyObject *
callback_send(PyObject *module, PyObject *args)
{
    PyObject *dest, *obj;
    ErlNifPid pid;
    ErlNifEnv *msg_env;
    ERL_NIF_TERM term;

    if (!PyArg_ParseTuple(args, "OO:send", &dest, &obj) || !destination_pid(dest, &pid)) {
        return NULL;
    }
    msg_env = enif_alloc_env();
    if (msg_env == NULL) {
        return PyErr_NoMemory();
    }
    if (!conv_to_term(msg_env, obj, &term)) {
        enif_free_env(msg_env);
        return NULL;
    }
    /* Like Erlang's !, a message to a process that has exited is dropped. */
    (void)enif_send(NULL, &pid, msg_env, term);
    enif_free_env(msg_env);
    Py_RETURN_NONE;
}

PyObject *
callback_self(PyObject *module, PyObject *unused)
{
    thread_ctx_t *ctx = worker_thread_ctx();
    ErlNifEnv *env;
    PyObject *pid;

    if (ctx == NULL || ctx->current == NULL) {
        Py_RETURN_NONE;
    }
    env = enif_alloc_env();
    if (env == NULL) {
        return PyErr_NoMemory();
    }
    pid = erlmod_wrap_term(env, enif_make_pid(env, &ctx->current->caller));
    enif_free_env(env);
    return pid;
}

PyObject *
callback_output_target(PyObject *module, PyObject *unused)
{
    thread_ctx_t *ctx = worker_thread_ctx();
    ErlNifEnv *env;
    PyObject *pid;

    if (ctx == NULL || ctx->current == NULL || ctx->current->group_leader == 0) {
        Py_RETURN_NONE;
    }
    env = enif_alloc_env();
    if (env == NULL) {
        return PyErr_NoMemory();
    }
    pid = erlmod_wrap_term(env, enif_make_copy(env, ctx->current->group_leader));
    enif_free_env(env);
    return pid;
}

/* ------------------------------------------------------------------------ */
/* NIFs */

/* callback_reply(Waiter, Reply) -> ok | {error, closed} */
ERL_NIF_TERM
callback_reply_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    waiter_t *w;
    ErlNifEnv *reply_env;
    ERL_NIF_TERM result = ATOMS.ok;

    if (!enif_get_resource(env, argv[0], waiter_rtype, (void **)&w)) {
        return enif_make_badarg(env);
    }
    /* Made before the lock. Without it the waiter is still woken, with no reply env:
     * erlang.call then raises MemoryError rather than wait for ever. */
    reply_env = enif_alloc_env();
    enif_mutex_lock(w->mutex);
    if (w->closed || w->has_reply) {
        result = make_error(env, ATOMS.closed);
    } else {
        w->reply_env = reply_env;
        w->reply = reply_env == NULL ? 0 : enif_make_copy(reply_env, argv[1]);
        reply_env = NULL;
        w->has_reply = true;
        atomic_fetch_add(&w->events, 1);
        enif_cond_signal(w->cond);
    }
    enif_mutex_unlock(w->mutex);
    if (reply_env != NULL) {
        enif_free_env(reply_env);
    }
    return result;
}

static ERL_NIF_TERM submit_nested_copy_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* submit_nested(Waiter, Kind, Payload) -> {ok, Request, SpinMicros} | {error, closed}.
 * Runs the request on the thread that waits on Waiter, which is blocked
 * until the calling fun returns: the pool may have no thread to spare. A large
 * payload is copied on a dirty scheduler, as submit's is. */
ERL_NIF_TERM
callback_submit_nested_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    if (request_payload_is_large(env, argv[2])) {
        return enif_schedule_nif(env, "submit_nested", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 submit_nested_copy_nif, argc, argv);
    }
    return submit_nested_copy_nif(env, argc, argv);
}

static ERL_NIF_TERM
submit_nested_copy_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    waiter_t *w;
    request_t *req;
    request_kind_t kind;
    ERL_NIF_TERM term;

    if (!enif_get_resource(env, argv[0], waiter_rtype, (void **)&w)) {
        return enif_make_badarg(env);
    }
    if (!request_kind_from_term(argv[1], &kind)) {
        return enif_make_badarg(env);
    }
    req = request_new(env, kind, argv[2]);
    if (req == NULL) {
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    /* Flags that detach a request do not apply here: the fun that makes it waits. */
    if (!request_set_options(env, req, argc, argv, 3) ||
        (req->flags & (REQ_DETACHED | REQ_DISCARD)) != 0) {
        enif_release_resource(req);
        return enif_make_badarg(env);
    }
    term = enif_make_resource(env, req);
    enif_mutex_lock(w->mutex);
    if (w->closed || w->has_reply || w->cancelled || w->server_down) {
        enif_mutex_unlock(w->mutex);
        enif_release_resource(req);
        return make_error(env, ATOMS.closed);
    }
    req->next = NULL;
    if (w->nested_tail == NULL) {
        w->nested_head = req;
    } else {
        w->nested_tail->next = req;
    }
    w->nested_tail = req;
    atomic_fetch_add(&w->events, 1);
    enif_cond_signal(w->cond);
    enif_mutex_unlock(w->mutex);
    /* The queue's reference is the one request_new returned. Its thread is awake (it
     * waits for the fun that makes this call) or wakes within microseconds: spin. */
    return enif_make_tuple3(env, ATOMS.ok, term, enif_make_int(env, CALLER_SPIN_US));
}
