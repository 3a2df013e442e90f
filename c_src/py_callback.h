/* Python -> Erlang: erlang.call, erlang.send, erlang.self, and the requests
 * that Erlang funs make while Python waits for them (docs/design.md, decision 2).
 *
 * A Python thread that calls Erlang sends {py_callback, Ref, Waiter, Name,
 * Args} to the process that owns its current request (or, on a thread that
 * serves none, to py_callback_dispatcher), releases the GIL and sleeps on the
 * waiter. It wakes for the reply, for a nested request routed to it (the fun
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

/* The request lock is held by the caller. Returns true if the callback has
 * no reply yet: its message to the request's caller is then still to be
 * received (or still to be sent: its thread registered the waiter first). */
bool callback_waiter_cancel(waiter_t *waiter);

/* erlang.call(name, *args), erlang.send(dest, term), erlang.self(). */
PyObject *callback_call(PyObject *module, PyObject *args);
PyObject *callback_send(PyObject *module, PyObject *args);
PyObject *callback_self(PyObject *module, PyObject *unused);

/* NIF bodies. */
ERL_NIF_TERM callback_reply_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM callback_submit_nested_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
