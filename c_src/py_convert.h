/* Term <-> object conversion. Both directions run with the GIL held, on a
 * Python thread: never on a scheduler (docs/design.md, decision 1). */
#ifndef PY_CONVERT_H
#define PY_CONVERT_H

#include "py_common.h"

/* Deepest nesting either direction accepts; the worker threads' stacks are
 * sized for it (py_worker.c). */
#define CONV_MAX_DEPTH 100000

/* Most elements taken from an iterator that is not a list, tuple, dict or set:
 * a guard against endless or huge generators, whose items are converted one by
 * one as they come (about 16 bytes of Erlang heap each, plus the item). */
#define CONV_MAX_ITER_ITEMS 10000000

/* How often (in items) a long conversion asks whether its request was cancelled. */
#define CONV_CANCEL_CHECK_EVERY 65536

/* Erlang -> Python: a new reference, or NULL with a Python exception set. */
PyObject *conv_to_py(ErlNifEnv *env, ERL_NIF_TERM term);

/* Python -> Erlang: true with *out set, or false with a Python exception set. */
bool conv_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out);

/* Atoms from UTF-8 text (OTP 25's erl_nif has no UTF-8 atom API). With
 * existing_only, fails rather than create one. */
bool conv_make_atom(ErlNifEnv *env, const char *utf8, size_t size, bool existing_only,
                    ERL_NIF_TERM *out);

/* An atom's text as a str; NULL with a Python exception set. */
PyObject *conv_atom_text(ErlNifEnv *env, ERL_NIF_TERM term);

/* A long conversion stops with CallCancelled once this says the request it runs
 * for was cancelled (set by the worker pool; NULL: never). */
void conv_set_cancel_check(bool (*cancelled)(void));

/* Most atoms that conversion may create from erlang.Atom values, over the
 * VM's life. */
void conv_set_atom_limit(long limit);
long conv_atoms_created(void);

#endif
