/* The built-in `erlang` Python module: Atom, Pid, Reference, Port, Function,
 * the exceptions, call/send/self and attribute access to registered funs. */
#ifndef PY_ERLANG_MODULE_H
#define PY_ERLANG_MODULE_H

#include "py_common.h"

PyMODINIT_FUNC PyInit_erlang(void);

/* Borrowed references, valid once the module is initialised. */
PyObject *erlmod_atom_type(void);
PyObject *erlmod_exception(const char *name);

/* A Pid/Reference/Port/Function object holding a copy of term. */
PyObject *erlmod_wrap_term(ErlNifEnv *env, ERL_NIF_TERM term);

/* If obj is one of those objects, copies its term into env. */
bool erlmod_unwrap_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out);

#endif
