/* The C side of ErlangEventLoop (priv/python/_erlang_impl/_loop.py; docs/asyncio.md).
 *
 * Each loop has an epoll set of its own holding the descriptors asyncio watches. The VM
 * watches that one descriptor (enif_select) for the loop's Erlang process, its driver
 * (src/py_event_loop.erl), which also keeps the loop's timer as an Erlang timer and runs its
 * asynchronous Erlang calls and mailboxes. The Python thread running the loop looks at the set
 * without blocking; when nothing is ready it asks the driver to watch and to time, and sleeps
 * on a condition variable, GIL released, until the driver reports readiness or the timer, an
 * Erlang event comes (an async call's reply, a mailbox message), the loop is closed, or the
 * py:call the thread runs for is cancelled.
 *
 * Erlang timers fire on the VM's millisecond ticks, up to a millisecond after their time; the
 * last LOOP_PRECISE_MS before a deadline are waited on the condition variable's own clock, so
 * that asyncio.sleep(0.001) takes a millisecond, not two.
 */
#ifndef PY_LOOP_H
#define PY_LOOP_H

#include "py_common.h"

#define LOOP_PRECISE_MS 2

bool loop_init_resources(ErlNifEnv *env);

/* Adds the type erlang._LoopCore to the erlang module. */
int loop_add_to_module(PyObject *module);

/* NIF bodies, called by the loop's driver (py_event_loop.erl). */
ERL_NIF_TERM loop_attach_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_select_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_ready_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_timer_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_post_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_reply_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM loop_stop_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
