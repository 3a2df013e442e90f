/* Worker threads: take requests from one queue and run them with the GIL.
 *
 * The threads are plain pthreads with large stacks (deep conversions recurse)
 * and never run on a BEAM scheduler. An idle worker spins briefly before it
 * sleeps, so that a caller making calls back to back does not pay a thread
 * wake-up on each; only one worker spins at a time, and only while requests
 * come back to back (docs/runtime.md, "Spinning").
 */
#include "py_worker.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "py_cancel.h"
#include "py_convert.h"
#include "py_error.h"
#include "py_interp.h"
#include "py_object.h"
#include "py_sandbox.h"
#include "py_stream.h"

/* Deep enough for CONV_MAX_DEPTH levels of conversion; AddressSanitizer's
 * frames are several times larger. */
#if defined(__SANITIZE_ADDRESS__)
#define WORKER_STACK_BYTES (512u * 1024u * 1024u)
#else
#define WORKER_STACK_BYTES (64u * 1024u * 1024u)
#endif
/* Longer than a caller's wake-up (30-50 us on a virtual machine): with a 10 us spin, a
 * caller that once slept through its answer woke after the spin had ended, slept through the
 * next answer too, and back-to-back calls stayed at 35-49 us instead of 2-7 for good. */
#define WORKER_SPIN_NS 50000L
/* A request that comes within this long of a worker going idle counts as back to back: a
 * caller that slept through its last answer needs a scheduler wake-up and its next submit
 * before it can make the next call, tens of microseconds, and must still count, or spinning
 * would never start again. */
#define BACK_TO_BACK_NS 100000L
/* Workers spin while any of the last 8 requests came back to back. */
#define SPIN_HISTORY_MASK 0xffu

static struct {
    ErlNifMutex *mutex;
    ErlNifCond *cond;
    request_t *head;
    request_t *tail;
    int idle;          /* workers sleeping on cond */
    int size;          /* workers serving the queue (started, not given up) */
    atomic_int busy;   /* workers running a request; dropped without the pool lock after each */
    int given_up;      /* threads given up on, still running their request */
    long given_up_total;
    atomic_int queued; /* requests in the queue, read without the lock by the spinner */
    atomic_int spinning;
    atomic_uint spin_history;   /* bit i: whether the i-th latest request came back to back */
    atomic_llong idle_since_ns; /* when a worker last went idle */
    int cpus;
} pool;

static _Thread_local thread_ctx_t *tls_ctx = NULL;
/* Python's sys.stdout or sys.stderr keeps a partial line of this thread's (_output.py). */
static _Thread_local bool tls_partial_output = false;

bool
worker_init_resources(ErlNifEnv *env)
{
    if (pool.mutex == NULL) {
        pool.mutex = enif_mutex_create("py_pool");
        pool.cond = enif_cond_create("py_pool");
        atomic_store(&pool.spin_history, ~0u);
        pool.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    }
    return request_init_resources(env) && pool.mutex != NULL && pool.cond != NULL;
}

/* ------------------------------------------------------------------------ */
/* The queue */

int
worker_pool_push(request_t *req)
{
    long long now = monotonic_ns();
    bool hot;

    enif_keep_resource(req);
    enif_mutex_lock(pool.mutex);
    req->next = NULL;
    if (pool.tail == NULL) {
        pool.head = req;
    } else {
        pool.tail->next = req;
    }
    pool.tail = req;
    /* Back to back, with nothing queued before it, a worker takes it within microseconds:
     * one spins, or is about to (a caller that took its result at once is often quicker to
     * call again than the worker is to finish its request and start spinning). */
    hot = atomic_fetch_add(&pool.queued, 1) == 0 && pool.cpus >= 2 &&
          (atomic_load(&pool.spinning) != 0 ||
           (atomic_load(&pool.spin_history) & SPIN_HISTORY_MASK) != 0);
    if (pool.idle > 0 || atomic_load(&pool.spinning) != 0) {
        /* A worker waited for work: would a spin have caught this one? */
        bool back_to_back = now - atomic_load(&pool.idle_since_ns) <= BACK_TO_BACK_NS;
        atomic_store(&pool.spin_history, (atomic_load(&pool.spin_history) << 1) | back_to_back);
    }
    /* A spinning worker will see it; otherwise wake a sleeper. */
    if (pool.idle > 0 && atomic_load(&pool.spinning) == 0) {
        enif_cond_signal(pool.cond);
    }
    enif_mutex_unlock(pool.mutex);
    return hot ? CALLER_SPIN_US : 0;
}

void
worker_spin_while_zero(atomic_int *value, long max_ns, bool yield)
{
    struct timespec start, now;

    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(value) == 0) {
        if (yield) {
            sched_yield();
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > max_ns) {
            return;
        }
    }
}

/* Spins for the next request, when that pays: requests came back to back lately, and the
 * machine has more than one core. One worker spins at a time, for at most WORKER_SPIN_NS,
 * without the GIL. (docs/runtime.md, "Spinning", tells what was tried to also stop when
 * the other cores are busy, and why it is not done.) */
static void
spin_for_work(void)
{
    long long start = monotonic_ns();
    int expected = 0;

    atomic_store(&pool.idle_since_ns, start);
    if (pool.cpus < 2 || (atomic_load(&pool.spin_history) & SPIN_HISTORY_MASK) == 0 ||
        !atomic_compare_exchange_strong(&pool.spinning, &expected, 1)) {
        return;
    }
    worker_spin_while_zero(&pool.queued, WORKER_SPIN_NS, false);
    atomic_store(&pool.spinning, 0);
}

static request_t *
pool_take(void)
{
    request_t *req;

    spin_for_work();
    enif_mutex_lock(pool.mutex);
    while (pool.head == NULL) {
        pool.idle++;
        enif_cond_wait(pool.cond, pool.mutex);
        pool.idle--;
    }
    req = pool.head;
    pool.head = req->next;
    if (pool.head == NULL) {
        pool.tail = NULL;
    }
    atomic_fetch_sub(&pool.queued, 1);
    atomic_fetch_add(&pool.busy, 1);
    /* More work and sleepers left: pass the wake-up on. */
    if (pool.head != NULL && pool.idle > 0) {
        enif_cond_signal(pool.cond);
    }
    enif_mutex_unlock(pool.mutex);
    req->next = NULL;
    return req;
}

/* ------------------------------------------------------------------------ */
/* Running a request (GIL held) */

/* Names of modules and functions given as atoms, as interned str: the same few come on
 * every call, and a str made afresh each time is decoded and hashed again for each lookup
 * (a sparse call, cache-cold, spent microseconds there). An atom term is the same value in
 * every environment and lives as long as the VM. Direct-mapped; used with the GIL held. */
#define NAME_CACHE_SIZE 256
static struct {
    ERL_NIF_TERM atom;
    PyObject *name;
} name_cache[NAME_CACHE_SIZE];

static PyObject *
atom_name(ErlNifEnv *env, ERL_NIF_TERM atom)
{
    size_t slot = (size_t)((atom >> 6) ^ (atom >> 14)) % NAME_CACHE_SIZE;
    PyObject *name;

    if (name_cache[slot].name != NULL && name_cache[slot].atom == atom) {
        return Py_NewRef(name_cache[slot].name);
    }
    name = conv_atom_text(env, atom);
    if (name == NULL) {
        return NULL;
    }
    PyUnicode_InternInPlace(&name);
    Py_XSETREF(name_cache[slot].name, Py_NewRef(name));
    name_cache[slot].atom = atom;
    return name;
}

/* A new reference to a plain str (not an erlang.Atom: CPython expects
 * exact str names) made from a binary or atom term, or NULL. */
static PyObject *
name_from_term(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary bin;

    if (enif_is_atom(env, term)) {
        return atom_name(env, term);
    }
    if (enif_inspect_binary(env, term, &bin)) {
        return PyUnicode_DecodeUTF8((const char *)bin.data, (Py_ssize_t)bin.size, NULL);
    }
    PyErr_SetString(PyExc_TypeError, "module and function names must be atoms or binaries");
    return NULL;
}

static PyObject *
import_module(PyObject *name)
{
    /* Already imported (__main__ included): a dict lookup, not the import
     * machinery, which costs microseconds on every call. */
    PyObject *module = PyImport_GetModule(name);

    if (module != NULL || PyErr_Occurred()) {
        return module;
    }
    return PyImport_Import(name);
}

/* getattr along a dotted path: "JSONDecoder.decode". */
static PyObject *
lookup_attribute(PyObject *module, PyObject *dotted)
{
    PyObject *dot, *parts, *current;
    Py_ssize_t has_dot = PyUnicode_FindChar(dotted, '.', 0, PyUnicode_GET_LENGTH(dotted), 1);

    if (has_dot == -2) {
        return NULL;
    }
    if (has_dot == -1) {
        return PyObject_GetAttr(module, dotted); /* the usual case: no path to split */
    }
    dot = PyUnicode_FromString(".");
    parts = dot == NULL ? NULL : PyUnicode_Split(dotted, dot, -1);

    Py_XDECREF(dot);
    if (parts == NULL) {
        return NULL;
    }
    current = Py_NewRef(module);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts) && current != NULL; i++) {
        PyObject *next = PyObject_GetAttr(current, PyList_GET_ITEM(parts, i));
        Py_SETREF(current, next);
    }
    Py_DECREF(parts);
    return current;
}

/* A copy of dict whose keys are exact str: erlang.Atom keys (a str
 * subclass) become plain str, as CPython expects of keyword names and of
 * namespaces. TypeError for a key that is no str at all. */
static PyObject *
with_str_keys(PyObject *dict, const char *what)
{
    PyObject *copy = PyDict_New();
    PyObject *key, *value;
    Py_ssize_t pos = 0;

    while (copy != NULL && PyDict_Next(dict, &pos, &key, &value)) {
        PyObject *name;
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "%s keys must be atoms or binaries, not %.100s", what,
                         Py_TYPE(key)->tp_name);
            Py_CLEAR(copy);
            break;
        }
        name = PyUnicode_FromObject(key);
        if (name == NULL || PyDict_SetItem(copy, name, value) < 0) {
            Py_XDECREF(name);
            Py_CLEAR(copy);
            break;
        }
        Py_DECREF(name);
    }
    return copy;
}

/* A map term as a dict with exact str keys (with_str_keys), or NULL with
 * TypeError naming what it is when the term is not a map. */
static PyObject *
str_keyed_dict_from_term(ErlNifEnv *env, ERL_NIF_TERM term, const char *what,
                         const char *key_what)
{
    PyObject *dict = conv_to_py(env, term);
    PyObject *copy;

    if (dict == NULL) {
        return NULL;
    }
    if (!PyDict_Check(dict)) {
        Py_DECREF(dict);
        PyErr_Format(PyExc_TypeError, "%s must be a map", what);
        return NULL;
    }
    copy = with_str_keys(dict, key_what);
    Py_DECREF(dict);
    return copy;
}

/* An `async def' function's coroutine, run to completion on a new ErlangEventLoop
 * (_erlang_impl._loop.run_coroutine; docs/asyncio.md). */
static PyObject *
run_coroutine(PyObject *coro)
{
    static PyObject *runner = NULL; /* GIL held: set once */

    if (runner == NULL) {
        PyObject *module = PyImport_ImportModule("_erlang_impl._loop");
        runner = module == NULL ? NULL : PyObject_GetAttrString(module, "run_coroutine");
        Py_XDECREF(module);
        if (runner == NULL) {
            return NULL;
        }
    }
    return PyObject_CallOneArg(runner, coro);
}

static PyObject *call_with_terms(ErlNifEnv *env, PyObject *func, ERL_NIF_TERM args_term,
                                 ERL_NIF_TERM kwargs_term);

static PyObject *
run_call(ErlNifEnv *env, ERL_NIF_TERM payload)
{
    int arity;
    const ERL_NIF_TERM *elems;
    PyObject *modname = NULL, *funcname = NULL, *module = NULL, *func = NULL, *result = NULL;

    /* A stream's payload has a fifth element, its `active'. */
    if (!enif_get_tuple(env, payload, &arity, &elems) || arity < 4 || arity > 5) {
        PyErr_SetString(PyExc_TypeError, "bad call payload");
        goto done;
    }
    modname = name_from_term(env, elems[0]);
    funcname = modname == NULL ? NULL : name_from_term(env, elems[1]);
    module = funcname == NULL ? NULL : import_module(modname);
    func = module == NULL ? NULL : lookup_attribute(module, funcname);
    result = func == NULL ? NULL : call_with_terms(env, func, elems[2], elems[3]);
done:
    Py_XDECREF(modname);
    Py_XDECREF(funcname);
    Py_XDECREF(module);
    Py_XDECREF(func);
    return result;
}

/* A few arguments, straight into the tuple of the call (no list to copy); NULL with
 * nothing raised when the term is not a short proper list, for the general path. */
#define SHORT_ARGS 16
static PyObject *
short_args_tuple(ErlNifEnv *env, ERL_NIF_TERM list)
{
    unsigned length;
    ERL_NIF_TERM head;
    PyObject *args;

    if (!enif_get_list_length(env, list, &length) || length > SHORT_ARGS) {
        return NULL;
    }
    args = PyTuple_New((Py_ssize_t)length);
    for (unsigned i = 0; args != NULL && i < length; i++) {
        PyObject *item;
        (void)enif_get_list_cell(env, list, &head, &list);
        item = conv_to_py(env, head);
        if (item == NULL) {
            Py_CLEAR(args);
            break;
        }
        PyTuple_SET_ITEM(args, (Py_ssize_t)i, item);
    }
    return args;
}

/* func(*Args, **Kwargs), an `async def' function's coroutine run to its end. */
static PyObject *
call_with_terms(ErlNifEnv *env, PyObject *func, ERL_NIF_TERM args_term, ERL_NIF_TERM kwargs_term)
{
    PyObject *arglist = NULL, *args = NULL, *kwargs = NULL, *result = NULL;
    size_t kwargs_size;

    args = short_args_tuple(env, args_term);
    if (args == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (args == NULL) {
        arglist = conv_to_py(env, args_term);
        if (arglist == NULL) {
            goto done;
        }
        args = PyList_Check(arglist) ? PyList_AsTuple(arglist) : NULL;
        if (args == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "arguments must be a list");
            }
            goto done;
        }
    }
    /* No keyword arguments, the usual case: no dict to make (twice). */
    if (!(enif_get_map_size(env, kwargs_term, &kwargs_size) && kwargs_size == 0)) {
        kwargs = str_keyed_dict_from_term(env, kwargs_term, "keyword arguments",
                                          "keyword argument");
        if (kwargs == NULL) {
            goto done;
        }
    }
    result = PyObject_Call(func, args, kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0 ? kwargs
                                                                                 : NULL);
    if (result != NULL && PyCoro_CheckExact(result)) {
        Py_SETREF(result, run_coroutine(result));
    }
done:
    Py_XDECREF(arglist);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return result;
}

/* Source code as a NUL-terminated bytes object. */
static PyObject *
source_from_term(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary bin;

    if (!enif_inspect_binary(env, term, &bin)) {
        PyErr_SetString(PyExc_TypeError, "code must be a binary");
        return NULL;
    }
    if (memchr(bin.data, '\0', bin.size) != NULL) {
        PyErr_SetString(PyExc_ValueError, "source code cannot contain null bytes");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)bin.data, (Py_ssize_t)bin.size);
}

/* Compiled code by (source, mode): the same expression evaluated again
 * skips the compiler, which costs far more than the rest of a call. Cleared
 * whole when full; used only with the GIL held. */
#define CODE_CACHE_MAX 512
static PyObject *code_cache = NULL;

static PyObject *
compile_cached(PyObject *source, int start)
{
    PyObject *key = Py_BuildValue("(Oi)", source, start);
    PyObject *code = NULL;

    if (key == NULL) {
        return NULL;
    }
    if (code_cache == NULL && (code_cache = PyDict_New()) == NULL) {
        goto done;
    }
    code = PyDict_GetItemWithError(code_cache, key);
    if (code != NULL) {
        Py_INCREF(code);
        goto done;
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    code = Py_CompileString(PyBytes_AS_STRING(source),
                            start == Py_eval_input ? "<py:eval>" : "<py:exec>", start);
    if (code == NULL && start == Py_eval_input && PyErr_ExceptionMatches(PyExc_SyntaxError)) {
        /* Statements given to eval run as statements and give None. */
        PyErr_Clear();
        code = Py_CompileString(PyBytes_AS_STRING(source), "<py:eval>", Py_file_input);
    }
    if (code == NULL) {
        goto done;
    }
    if (PyDict_GET_SIZE(code_cache) >= CODE_CACHE_MAX) {
        PyDict_Clear(code_cache);
    }
    if (PyDict_SetItem(code_cache, key, code) < 0) {
        Py_CLEAR(code);
    }
done:
    Py_DECREF(key);
    return code;
}

static PyObject *
main_globals(void)
{
    PyObject *main = PyImport_AddModule("__main__"); /* borrowed */
    return main == NULL ? NULL : PyModule_GetDict(main); /* borrowed */
}

static PyObject *
run_source(ErlNifEnv *env, ERL_NIF_TERM code_term, ERL_NIF_TERM locals_term, int start)
{
    PyObject *source = NULL, *code = NULL, *namespace = NULL, *locals = NULL, *result = NULL;
    PyObject *globals = main_globals();

    source = globals == NULL ? NULL : source_from_term(env, code_term);
    if (source == NULL) {
        goto done;
    }
    code = compile_cached(source, start);
    if (code == NULL) {
        goto done;
    }
    if (locals_term != 0) {
        locals = str_keyed_dict_from_term(env, locals_term, "locals", "locals");
        if (locals == NULL) {
            goto done;
        }
    }
    if (locals != NULL && PyDict_GET_SIZE(locals) > 0) {
        /* One namespace, so that comprehensions and lambdas in the expression
         * see the locals too (a separate locals dict hides them). */
        namespace = PyDict_Copy(globals);
        if (namespace == NULL || PyDict_Update(namespace, locals) < 0) {
            goto done;
        }
        result = PyEval_EvalCode(code, namespace, namespace);
    } else {
        result = PyEval_EvalCode(code, globals, globals);
    }
done:
    Py_XDECREF(source);
    Py_XDECREF(code);
    Py_XDECREF(namespace);
    Py_XDECREF(locals);
    return result;
}

/* An object's attribute, or the result of calling its method: {Target, Name} or
 * {Target, Name, Args, Kwargs}. Target is any term: a handle gives its object. */
static PyObject *
run_on_object(ErlNifEnv *env, ERL_NIF_TERM payload, bool call)
{
    int arity;
    const ERL_NIF_TERM *elems;
    PyObject *target = NULL, *name = NULL, *attr = NULL, *result = NULL;

    if (!enif_get_tuple(env, payload, &arity, &elems) || arity != (call ? 4 : 2)) {
        PyErr_SetString(PyExc_TypeError, "bad object payload");
        return NULL;
    }
    target = conv_to_py(env, elems[0]);
    name = target == NULL ? NULL : name_from_term(env, elems[1]);
    attr = name == NULL ? NULL : PyObject_GetAttr(target, name);
    if (attr != NULL && call) {
        result = call_with_terms(env, attr, elems[2], elems[3]);
    } else {
        result = attr == NULL ? NULL : Py_NewRef(attr);
    }
    Py_XDECREF(target);
    Py_XDECREF(name);
    Py_XDECREF(attr);
    return result;
}

/* The exception set, as the request asked: {error, {Type, Message, Traceback}} or, with
 * REQ_DETAILED_ERRORS, {error, {Type, Message, Traceback, Info}}. */
static ERL_NIF_TERM
request_error(request_t *req)
{
    return (req->flags & REQ_DETAILED_ERRORS) != 0 ? error_from_python_detailed(req->env)
                                                    : error_from_python(req->env);
}

/* Runs the payload and returns {ok, V}, ok or {error, _} built in req->env. */
static ERL_NIF_TERM
run_payload(request_t *req)
{
    ErlNifEnv *env = req->env;
    PyObject *result = NULL;
    ERL_NIF_TERM term;
    int arity;
    const ERL_NIF_TERM *elems;
    long active;

    switch (req->kind) {
    case REQ_CALL:
        result = run_call(env, req->payload);
        break;
    case REQ_EVAL:
        if (enif_get_tuple(env, req->payload, &arity, &elems) && arity == 2) {
            result = run_source(env, elems[0], elems[1], Py_eval_input);
        } else {
            PyErr_SetString(PyExc_TypeError, "bad eval payload");
        }
        break;
    case REQ_EXEC:
        result = run_source(env, req->payload, 0, Py_file_input);
        break;
    case REQ_GETATTR:
        result = run_on_object(env, req->payload, false);
        break;
    case REQ_CALL_METHOD:
        result = run_on_object(env, req->payload, true);
        break;
    case REQ_TO_TERM:
        result = conv_to_py(env, req->payload);
        break;
    case REQ_STREAM:
        if (!enif_get_tuple(env, req->payload, &arity, &elems) || arity != 5 ||
            !enif_get_long(env, elems[4], &active)) {
            PyErr_SetString(PyExc_TypeError, "bad stream payload");
            return request_error(req);
        }
        result = run_call(env, req->payload);
        if (result == NULL) {
            return request_error(req);
        }
        term = stream_create(env, req, result, active);
        Py_DECREF(result);
        return term == 0 ? request_error(req) : enif_make_tuple2(env, ATOMS.ok, term);
    case REQ_STREAM_PUMP:
        stream_pump(req);
        return ATOMS.ok;
    }
    if (result == NULL) {
        return request_error(req);
    }
    if (req->kind == REQ_EXEC) {
        Py_DECREF(result);
        return ATOMS.ok;
    }
    if ((req->flags & REQ_RETURN_OBJECT) != 0 && req->kind != REQ_TO_TERM) {
        term = object_make_handle(env, result);
        Py_DECREF(result);
        if (term == 0) {
            PyErr_NoMemory();
            return request_error(req);
        }
        return enif_make_tuple2(env, ATOMS.ok, term);
    }
    if (!conv_to_term(env, result, &term)) {
        Py_DECREF(result);
        return request_error(req);
    }
    Py_DECREF(result);
    return enif_make_tuple2(env, ATOMS.ok, term);
}

void
worker_note_partial_output(void)
{
    tls_partial_output = true;
}

/* Sends the partial lines the call left in sys.stdout and sys.stderr to its caller's group
 * leader, before its result (docs/output.md). GIL held; whatever it raises is dropped. */
static void
flush_partial_output(void)
{
    static PyObject *flush = NULL; /* GIL held: set once */
    PyObject *type, *value, *tb, *done;

    tls_partial_output = false;
    PyErr_Fetch(&type, &value, &tb);
    if (flush == NULL) {
        PyObject *module = PyImport_ImportModule("_erlang_impl._output");
        flush = module == NULL ? NULL : PyObject_GetAttrString(module, "flush_thread");
        Py_XDECREF(module);
    }
    done = flush == NULL ? NULL : PyObject_CallNoArgs(flush);
    Py_XDECREF(done);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

void
worker_execute(thread_ctx_t *ctx, request_t *req)
{
    request_t *outer = ctx->current;
    ERL_NIF_TERM result;
    bool cancelled;

    if (!request_start(req, ctx)) {
        if (req->kind == REQ_STREAM_PUMP) {
            stream_pump_ended(req);
        }
        enif_release_resource(req);
        return;
    }
    ctx->current = req;
    result = run_payload(req);
    if (tls_partial_output) {
        flush_partial_output();
    }
    ctx->current = outer;
    /* The interpreter thread raises in RUNNING requests only while it holds the GIL, and
     * we hold it from here on: after request_finish no interrupt can be aimed at this
     * request, and one still pending from its cancellation is cleared here. */
    cancelled = request_finish(req, result);
    if (cancelled) {
        PyThreadState_SetAsyncExc(ctx->ident, NULL);
        PyErr_Clear();
    }
    if (req->kind == REQ_STREAM_PUMP) {
        stream_pump_ended(req);
    } else if (req->kind == REQ_STREAM && req->stream != NULL) {
        stream_started(req, cancelled);
    }
    enif_release_resource(req);
}

/* ------------------------------------------------------------------------ */
/* Worker threads */

thread_ctx_t *
worker_thread_ctx(void)
{
    return tls_ctx;
}

void
worker_set_thread_ctx(thread_ctx_t *ctx)
{
    tls_ctx = ctx;
}

static void *
worker_main(void *arg)
{
    thread_ctx_t ctx = {0};
    PyThreadState *tstate;

    (void)arg;
    pthread_setname_np(pthread_self(), "py_worker");
    interp_thread_started();
    tstate = PyThreadState_New(interp_main_state());
    PyEval_RestoreThread(tstate);
    ctx.ident = PyThread_get_thread_ident();
    ctx.worker = true;
    tls_ctx = &ctx;
    (void)PyEval_SaveThread();
    for (;;) {
        request_t *req = pool_take();
        (void)sandbox_before_request();
        PyEval_RestoreThread(tstate);
        worker_execute(&ctx, req);
        if (atomic_load(&ctx.given_up)) {
            break;
        }
        (void)PyEval_SaveThread();
        atomic_fetch_sub(&pool.busy, 1);
    }
    /* Given up on: a replacement serves the queue since; this thread ends with its
     * request. GIL held. */
    tls_ctx = NULL;
    PyThreadState_Clear(tstate);
    PyThreadState_DeleteCurrent();
    enif_mutex_lock(pool.mutex);
    atomic_fetch_sub(&pool.busy, 1);
    pool.given_up--;
    enif_mutex_unlock(pool.mutex);
    return NULL;
}

static bool
start_worker_thread(char *err, size_t errlen)
{
    pthread_attr_t attr;
    pthread_t tid;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, worker_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a worker thread: %s", strerror(rc));
        return false;
    }
    return true;
}

/* For conversions: whether the request this thread runs was cancelled. */
static bool
current_request_cancelled(void)
{
    thread_ctx_t *ctx = tls_ctx;
    bool cancelled = false;

    if (ctx != NULL && ctx->current != NULL) {
        request_lock();
        cancelled = ctx->current->cancelled;
        request_unlock();
        if (cancelled) {
            cancel_raised(ctx->current); /* the conversion raises it */
        }
    }
    return cancelled;
}

bool
worker_pool_start(int n, char *err, size_t errlen)
{
    conv_set_cancel_check(current_request_cancelled);
    for (int i = 0; i < n; i++) {
        if (!start_worker_thread(err, errlen)) {
            return false;
        }
        enif_mutex_lock(pool.mutex);
        pool.size++;
        enif_mutex_unlock(pool.mutex);
    }
    return true;
}

bool
worker_pool_reserve_replacement(int max_given_up)
{
    bool ok;

    enif_mutex_lock(pool.mutex);
    ok = pool.given_up < max_given_up;
    if (ok) {
        pool.given_up++;
    }
    enif_mutex_unlock(pool.mutex);
    return ok;
}

void
worker_pool_cancel_replacement(void)
{
    enif_mutex_lock(pool.mutex);
    pool.given_up--;
    enif_mutex_unlock(pool.mutex);
}

void
worker_pool_start_replacement(void)
{
    char err[128];

    enif_mutex_lock(pool.mutex);
    pool.given_up_total++;
    enif_mutex_unlock(pool.mutex);
    /* The given-up thread no longer counts among the workers; its replacement does. If
     * no thread can be started the pool is one smaller (and info says so). */
    if (!start_worker_thread(err, sizeof(err))) {
        enif_mutex_lock(pool.mutex);
        pool.size--;
        enif_mutex_unlock(pool.mutex);
    }
}

void
worker_pool_stats(worker_stats_t *out)
{
    enif_mutex_lock(pool.mutex);
    out->workers = pool.size;
    out->busy = atomic_load(&pool.busy) - pool.given_up;
    out->queued = atomic_load(&pool.queued);
    out->given_up = pool.given_up;
    out->given_up_total = pool.given_up_total;
    enif_mutex_unlock(pool.mutex);
}
