#include "py_stream.h"

#include <string.h>

#include "py_cancel.h"
#include "py_convert.h"
#include "py_error.h"
#include "py_object.h"
#include "py_worker.h"

/* A pump gives its worker up after this many items or this long, whichever comes first,
 * and the stream queues its next pump behind the requests that came meanwhile. */
#define PUMP_BATCH_ITEMS 1024
#define PUMP_BATCH_NS 5000000LL
/* How long closing an iterator (a generator's `finally') may take before it is cancelled
 * like a timed-out call, and its worker given up if it runs on (docs/runtime.md). */
#define STREAM_CLOSE_TIMEOUT_MS 5000LL
/* The most credit a stream can have (active => N, summed). */
#define STREAM_MAX_ACTIVE 2147483647L

typedef struct stream {
    ErlNifMutex *mutex;
    /* The iterator, touched only with the GIL by the stream's one pump, or by whoever
     * holds the last reference (the destructor hands it to the releaser). */
    PyObject *iter;
    bool is_async;      /* an async iterator: its items are awaited (_erlang_impl._stream) */
    unsigned flags;     /* REQ_RETURN_OBJECT, REQ_DETAILED_ERRORS: how items and errors go */
    ErlNifPid consumer;
    /* The creator's group leader, where the iterator's output goes (docs/output.md): a
     * term of group_leader_env, 0 for none. */
    ErlNifEnv *group_leader_env;
    ERL_NIF_TERM group_leader;
    ErlNifMonitor monitor;
    bool monitored;
    /* Guarded by mutex. */
    long active;        /* items the consumer takes before `passive'; UNBOUNDED: no limit */
    bool pumping;       /* a pump is queued or runs */
    request_t *pump;    /* that pump (a reference kept) */
    bool cancelled;     /* py:stream_cancel or the consumer's death */
    bool ended;         /* done or error sent */
    bool closing;       /* the next pump closes the iterator instead */
    bool closed;        /* the iterator was closed and dropped (or given to the releaser) */
} stream_t;

/* What one pump carries from item to item. */
typedef struct {
    stream_t *stream;
    ErlNifEnv *msg_env;
    int items;
    long long started_ns;
} pump_t;

static ErlNifResourceType *stream_rtype = NULL;
static ERL_NIF_TERM atom_py_stream;
static ERL_NIF_TERM atom_data;
static ERL_NIF_TERM atom_done;
static ERL_NIF_TERM atom_passive;

static void stream_cancel(stream_t *stream);
static void close_iterator(stream_t *stream);

static void
stream_dtor(ErlNifEnv *env, void *res)
{
    stream_t *stream = res;

    if (stream->iter != NULL) {
        object_release_later(stream->iter);
    }
    if (stream->mutex != NULL) {
        enif_mutex_destroy(stream->mutex);
    }
    if (stream->group_leader_env != NULL) {
        enif_free_env(stream->group_leader_env);
    }
}

static void
stream_down(ErlNifEnv *env, void *res, ErlNifPid *pid, ErlNifMonitor *mon)
{
    stream_cancel(res);
}

bool
stream_init_resources(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = stream_dtor, .down = stream_down};

    stream_rtype = enif_open_resource_type_x(env, "py_stream", &init,
                                             ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    atom_py_stream = enif_make_atom(env, "py_stream");
    atom_data = enif_make_atom(env, "data");
    atom_done = enif_make_atom(env, "done");
    atom_passive = enif_make_atom(env, "passive");
    return stream_rtype != NULL;
}

/* Stream lock held: {py_stream, Ref, Body} to the consumer. Sent under the lock, so that
 * nothing is sent once stream_cancel has returned. */
static void
send_locked(stream_t *stream, ErlNifEnv *msg_env, ERL_NIF_TERM body)
{
    ERL_NIF_TERM msg = enif_make_tuple3(msg_env, atom_py_stream,
                                        enif_make_resource(msg_env, stream), body);

    (void)enif_send(NULL, &stream->consumer, msg_env, msg);
    enif_clear_env(msg_env);
}

/* Stream lock held: queues a pump. */
static void
schedule_locked(stream_t *stream)
{
    request_t *pump = request_new_internal(REQ_STREAM_PUMP, REQ_DETACHED | stream->flags,
                                           &stream->consumer);

    if (pump == NULL) {
        return; /* out of memory: the stream waits for the next py:stream_active */
    }
    enif_keep_resource(stream);
    pump->stream = stream;
    if (stream->group_leader != 0) {
        pump->group_leader = enif_make_copy(pump->env, stream->group_leader);
    }
    stream->pumping = true;
    stream->pump = pump; /* request_new_internal's reference */
    if (stream->closing) {
        /* A `finally' that never ends must not keep its worker for good. */
        pump->deadline_ns = monotonic_ns() + STREAM_CLOSE_TIMEOUT_MS * 1000000LL;
        cancel_at_deadline(pump);
    }
    (void)worker_pool_push(pump);
}

/* Stream lock held, no pump: queues the pump that closes the iterator, unless it is closed
 * already or being closed. */
static void
schedule_close_locked(stream_t *stream)
{
    if (!stream->closing && !stream->closed) {
        stream->closing = true;
        schedule_locked(stream);
    }
}

ERL_NIF_TERM
stream_create(ErlNifEnv *env, request_t *req, PyObject *iterable, long active)
{
    PyAsyncMethods *async = Py_TYPE(iterable)->tp_as_async;
    bool is_async = async != NULL && async->am_aiter != NULL;
    PyObject *iter = is_async ? async->am_aiter(iterable) : PyObject_GetIter(iterable);
    stream_t *stream;
    ERL_NIF_TERM term;
    bool monitored;

    if (iter == NULL) {
        return 0;
    }
    stream = enif_alloc_resource(stream_rtype, sizeof(stream_t));
    if (stream == NULL) {
        Py_DECREF(iter);
        PyErr_NoMemory();
        return 0;
    }
    memset(stream, 0, sizeof(*stream));
    stream->mutex = enif_mutex_create("py_stream");
    if (stream->mutex == NULL) {
        Py_DECREF(iter);
        enif_release_resource(stream);
        PyErr_NoMemory();
        return 0;
    }
    stream->iter = iter;
    stream->is_async = is_async;
    stream->flags = req->flags & (REQ_RETURN_OBJECT | REQ_DETAILED_ERRORS);
    stream->consumer = req->caller;
    stream->active = active;
    if (req->group_leader != 0 && (stream->group_leader_env = enif_alloc_env()) != NULL) {
        stream->group_leader = enif_make_copy(stream->group_leader_env, req->group_leader);
    }
    /* The consumer's death closes the stream. One that is dead already: no pump is
     * queued, and the iterator is closed when the stream is dropped. */
    monitored = enif_monitor_process(NULL, stream, &stream->consumer, &stream->monitor) == 0;
    enif_mutex_lock(stream->mutex);
    stream->monitored = monitored;
    if (!monitored) {
        stream->cancelled = true;
    }
    enif_mutex_unlock(stream->mutex);
    term = enif_make_resource(env, stream);
    /* req keeps it for stream_started, which runs once its caller has Ref or never will. */
    req->stream = stream;
    return term;
}

void
stream_started(request_t *req, bool cancelled)
{
    stream_t *stream = req->stream;

    enif_mutex_lock(stream->mutex);
    if (cancelled) {
        /* py:stream timed out (or its caller died) as the stream was made: the caller never
         * gets Ref, and nothing may be sent to it. */
        stream->cancelled = true;
    }
    if (!stream->pumping) {
        if (stream->cancelled) {
            schedule_close_locked(stream);
        } else if (stream->active != 0) {
            /* (Had the caller given credit already, its stream_active would pump.) */
            schedule_locked(stream);
        }
    }
    enif_mutex_unlock(stream->mutex);
}

/* ------------------------------------------------------------------------ */
/* Pumps (GIL held) */

/* Whether the pump may take another item: the consumer wants one, and the batch is not
 * over. */
static bool
may_take(pump_t *pump)
{
    stream_t *stream = pump->stream;
    bool more;

    if (pump->items >= PUMP_BATCH_ITEMS ||
        (pump->items > 0 && monotonic_ns() - pump->started_ns > PUMP_BATCH_NS)) {
        return false;
    }
    enif_mutex_lock(stream->mutex);
    more = !stream->cancelled && stream->active != 0;
    enif_mutex_unlock(stream->mutex);
    return more;
}

/* Sends one item. 1: another may follow; 0: not now; -1: it could not be converted
 * (exception set). */
static int
emit(pump_t *pump, PyObject *item)
{
    stream_t *stream = pump->stream;
    ERL_NIF_TERM term;

    if ((stream->flags & REQ_RETURN_OBJECT) != 0) {
        term = object_make_handle(pump->msg_env, item);
        if (term == 0) {
            PyErr_NoMemory();
            return -1;
        }
    } else if (!conv_to_term(pump->msg_env, item, &term)) {
        enif_clear_env(pump->msg_env);
        return -1;
    }
    pump->items++;
    enif_mutex_lock(stream->mutex);
    if (stream->cancelled) {
        enif_mutex_unlock(stream->mutex);
        enif_clear_env(pump->msg_env);
        return 0;
    }
    send_locked(stream, pump->msg_env, enif_make_tuple2(pump->msg_env, atom_data, term));
    if (stream->active > 0 && --stream->active == 0) {
        send_locked(stream, pump->msg_env, atom_passive);
    }
    enif_mutex_unlock(stream->mutex);
    return may_take(pump) ? 1 : 0;
}

/* The end of the items: `done', or {error, Reason} for the exception set. */
static void
send_end(pump_t *pump, bool failed)
{
    stream_t *stream = pump->stream;
    ERL_NIF_TERM body;

    if (failed) {
        body = (stream->flags & REQ_DETAILED_ERRORS) != 0
                   ? error_from_python_detailed(pump->msg_env)
                   : error_from_python(pump->msg_env);
    } else {
        body = atom_done;
    }
    enif_mutex_lock(stream->mutex);
    if (!stream->cancelled) {
        send_locked(stream, pump->msg_env, body);
        stream->ended = true;
    }
    enif_mutex_unlock(stream->mutex);
}

/* emit, for the async pump: emit(item) -> whether to go on. */
static PyObject *
async_emit(PyObject *capsule, PyObject *item)
{
    pump_t *pump = PyCapsule_GetPointer(capsule, "erlang_python.pump");
    int more = pump == NULL ? -1 : emit(pump, item);

    if (more < 0) {
        return NULL;
    }
    return PyBool_FromLong(more);
}

static PyMethodDef async_emit_def = {"emit", async_emit, METH_O, NULL};

/* A function of _erlang_impl._stream, looked up once. GIL held. */
static PyObject *
stream_helper(const char *name)
{
    PyObject *module = PyImport_ImportModule("_erlang_impl._stream");
    PyObject *function = module == NULL ? NULL : PyObject_GetAttrString(module, name);

    Py_XDECREF(module);
    return function;
}

/* Takes items from an async iterator on an event loop of this pump's own: true when the
 * iterator is exhausted, false when the pump stopped, NULL-like -1 on an error. */
static int
pump_async(pump_t *pump)
{
    static PyObject *helper = NULL; /* GIL held: set once */
    PyObject *capsule, *emitter = NULL, *result = NULL;
    int exhausted = -1;

    if (helper == NULL && (helper = stream_helper("pump_async")) == NULL) {
        return -1;
    }
    capsule = PyCapsule_New(pump, "erlang_python.pump", NULL);
    emitter = capsule == NULL ? NULL : PyCFunction_New(&async_emit_def, capsule);
    result = emitter == NULL ? NULL
                             : PyObject_CallFunctionObjArgs(helper, pump->stream->iter, emitter,
                                                            NULL);
    if (result != NULL) {
        exhausted = PyObject_IsTrue(result);
    }
    Py_XDECREF(capsule);
    Py_XDECREF(emitter);
    Py_XDECREF(result);
    return exhausted;
}

void
stream_pump(request_t *req)
{
    pump_t pump = {.stream = req->stream, .started_ns = monotonic_ns()};
    stream_t *stream = req->stream;
    bool closing;

    enif_mutex_lock(stream->mutex);
    closing = stream->closing;
    enif_mutex_unlock(stream->mutex);
    if (closing) {
        /* Run as a request, so that a `finally' that hangs is cancelled at the close's
         * deadline, and its worker given up, as any call's would be. */
        if (stream->iter != NULL) {
            close_iterator(stream);
        }
        return;
    }
    if (stream->iter == NULL || !may_take(&pump)) {
        return;
    }
    pump.msg_env = enif_alloc_env();
    if (pump.msg_env == NULL) {
        return;
    }
    if (stream->is_async) {
        int exhausted = pump_async(&pump);
        if (exhausted != 0) {
            send_end(&pump, exhausted < 0);
        }
    } else {
        for (;;) {
            PyObject *item = PyIter_Next(stream->iter);
            int more;
            if (item == NULL) {
                send_end(&pump, PyErr_Occurred() != NULL);
                break;
            }
            more = emit(&pump, item);
            Py_DECREF(item);
            if (more < 0) {
                send_end(&pump, true);
            }
            if (more <= 0) {
                break;
            }
        }
    }
    PyErr_Clear();
    enif_free_env(pump.msg_env);
}

/* Closes the iterator (a generator's `finally' runs) and drops it. GIL held. */
static void
close_iterator(stream_t *stream)
{
    static PyObject *close_async = NULL; /* GIL held: set once */
    PyObject *iter = stream->iter, *done = NULL;

    stream->iter = NULL;
    if (stream->is_async) {
        if (close_async == NULL) {
            close_async = stream_helper("close_async");
        }
        done = close_async == NULL ? NULL : PyObject_CallOneArg(close_async, iter);
    } else if (PyObject_HasAttrString(iter, "close")) {
        done = PyObject_CallMethod(iter, "close", NULL);
    }
    if (done == NULL && PyErr_Occurred()) {
        PyErr_WriteUnraisable(iter);
    }
    Py_XDECREF(done);
    Py_DECREF(iter);
}

void
stream_pump_ended(request_t *req)
{
    stream_t *stream = req->stream;
    request_t *pump;
    bool demonitor = false;

    enif_mutex_lock(stream->mutex);
    pump = stream->pump;
    stream->pump = NULL;
    stream->pumping = false;
    if (stream->closing) {
        /* The close ran, or was cancelled before it could: the releaser drops what is
         * left when the stream goes. */
        stream->closing = false;
        stream->closed = true;
        demonitor = stream->monitored;
        stream->monitored = false;
    } else if (stream->cancelled || stream->ended) {
        schedule_close_locked(stream);
    } else if (stream->active != 0) {
        /* The batch ended, or credit came while the pump ran out of it. */
        schedule_locked(stream);
    }
    enif_mutex_unlock(stream->mutex);
    if (pump != NULL) {
        enif_release_resource(pump);
    }
    if (demonitor) {
        (void)enif_demonitor_process(NULL, stream, &stream->monitor);
    }
}

/* ------------------------------------------------------------------------ */
/* The consumer's side */

static void
stream_cancel(stream_t *stream)
{
    request_t *running = NULL;

    enif_mutex_lock(stream->mutex);
    /* An ended stream is being closed already. */
    if (!stream->cancelled && !stream->ended && !stream->closing && !stream->closed) {
        stream->cancelled = true;
        if (stream->pumping) {
            running = stream->pump;
            enif_keep_resource(running);
        } else {
            schedule_close_locked(stream);
        }
    }
    enif_mutex_unlock(stream->mutex);
    if (running != NULL) {
        (void)request_cancel(running);
        enif_release_resource(running);
    }
}

static bool
get_stream(ErlNifEnv *env, ERL_NIF_TERM term, stream_t **stream)
{
    return enif_get_resource(env, term, stream_rtype, (void **)stream);
}

/* stream_active(Ref, N | true | false) -> ok | {error, closed} */
ERL_NIF_TERM
stream_active_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    stream_t *stream;
    long n = 0;
    bool closed;

    if (!get_stream(env, argv[0], &stream) ||
        !(argv[1] == ATOMS.true_ || argv[1] == ATOMS.false_ ||
          (enif_get_long(env, argv[1], &n) && n > 0 && n <= STREAM_MAX_ACTIVE))) {
        return enif_make_badarg(env);
    }
    enif_mutex_lock(stream->mutex);
    closed = stream->cancelled || stream->ended || stream->closed;
    if (!closed) {
        if (argv[1] == ATOMS.true_) {
            stream->active = STREAM_ACTIVE_UNBOUNDED;
        } else if (argv[1] == ATOMS.false_) {
            stream->active = 0;
        } else if (stream->active > 0) {
            stream->active = stream->active > STREAM_MAX_ACTIVE - n ? STREAM_MAX_ACTIVE
                                                                    : stream->active + n;
        } else {
            stream->active = n;
        }
        if (!stream->pumping && stream->active != 0) {
            schedule_locked(stream);
        }
    }
    enif_mutex_unlock(stream->mutex);
    return closed ? make_error(env, ATOMS.closed) : ATOMS.ok;
}

/* stream_cancel(Ref) -> ok */
ERL_NIF_TERM
stream_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    stream_t *stream;

    if (!get_stream(env, argv[0], &stream)) {
        return enif_make_badarg(env);
    }
    stream_cancel(stream);
    return ATOMS.ok;
}
