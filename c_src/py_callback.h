/* Python -> Erlang: erlang.call, erlang.send, erlang.self, and the requests
 * that Erlang funs make while Python waits for them (docs/design.md, decision 2).
 *
 * A Python thread that calls Erlang hands {Waiter, Name, Args} to the process
 * that owns its current request (request_post_callback: kept for its poll, or sent
 * if it sleeps) or, on a thread that serves none, sends {py_callback, undefined,
 * Waiter, Name, Args} to py_callback_dispatcher; then it releases the GIL and
 * waits on the waiter. It wakes for the reply, for a nested request routed to it (the fun
 * called py:call), for the cancellation of its request, or for the death of
 * the process serving the callback.
 */
#ifndef PY_CALLBACK_H
#define PY_CALLBACK_H

#include "py_common.h"
#include "py_worker.h"

typedef struct waiter waiter_t;

extern ErlNifResourceType *waiter_rtype;

bool callback_init_resources(ErlNifEnv *env);

/* Wakes the thread waiting on waiter: its request was cancelled. The request lock is held
 * by the caller. */
void callback_waiter_cancel(waiter_t *waiter);

/* What a callback's reply term ({ok, Value} or {error, ...}, as py_callback:run/3 makes it)
 * stands for in Python: a new reference to Value, or NULL with the exception (UnknownFunction
 * naming name, ErlangException) set. GIL held. */
PyObject *callback_reply_value(ErlNifEnv *env, ERL_NIF_TERM reply, PyObject *name);

/* erlang.call(name, *args), erlang.send(dest, term), erlang.self(). */
PyObject *callback_call(PyObject *module, PyObject *args);
PyObject *callback_send(PyObject *module, PyObject *args);
PyObject *callback_self(PyObject *module, PyObject *unused);
/* erlang._output_target(): the group leader of the caller whose call this thread runs, or
 * None (docs/output.md). */
PyObject *callback_output_target(PyObject *module, PyObject *unused);

/* NIF bodies. */
ERL_NIF_TERM callback_reply_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM callback_submit_nested_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
