/* Python exceptions as Erlang values: {error, {Type, Message, Traceback}}. */
#ifndef PY_ERROR_H
#define PY_ERROR_H

#include "py_common.h"

/* Takes the current Python exception (which must be set) and returns
 * {error, {Type, Message, Traceback}} built in env. Type is the class name as
 * an existing atom (every builtin exception's name exists: see
 * error_init_atoms) or else as a binary; Message is str(exc) and Traceback the
 * formatted traceback, both binaries. Never fails, never prints. GIL held. */
ERL_NIF_TERM error_from_python(ErlNifEnv *env);

/* Takes the current Python exception as a new reference to the exception object, normalised,
 * its traceback attached; NULL if none is set. GIL held. */
PyObject *error_take_exception(void);

/* Makes the atoms of every builtin exception class name. GIL held. */
void error_init_atoms(ErlNifEnv *env);

#endif
