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

/* Like error_from_python, with a fourth element: {error, {Type, Message, Traceback, Info}}.
 * Info is a map with atom keys from a fixed list, never atoms made from Python data:
 * class (<<"module.QualName">>), args, notes, the attributes of the exception's kind
 * (errno, strerror, filename, filename2, key, name, path, lineno, offset, text, code,
 * value, encoding, start, end, reason), cause ({Type, Message, Info} of __cause__, or
 * of an unsuppressed __context__) and exceptions (an ExceptionGroup's, each as {Type,
 * Message, Info}); causes and groups nest at most 5 levels. Only the keys that apply
 * are present; docs/errors.md has the table. Values convert as results do, and one that
 * cannot becomes {py_object, TypeName, Repr}. Never fails, never prints. GIL held. */
ERL_NIF_TERM error_from_python_detailed(ErlNifEnv *env);

/* Takes the current Python exception as a new reference to the exception object, normalised,
 * its traceback attached; NULL if none is set. GIL held. */
PyObject *error_take_exception(void);

/* Makes the atoms of every builtin exception class name. GIL held. */
void error_init_atoms(ErlNifEnv *env);

#endif
