/* Python objects held from Erlang (docs/objects.md).
 *
 * A handle is the term {'$py_object', Resource}: the resource keeps one reference to the
 * object. When the VM's garbage collector drops the last copy of the term, the resource's
 * destructor runs on whatever thread collected it, often a scheduler, which must never
 * wait for the GIL (docs/design.md, decision 1): it only queues the object, and a thread
 * of our own, the releaser, takes the GIL and drops the references in batches.
 *
 * The tag makes a handle recognisable where its resource is not: sent to another node, or
 * kept (term_to_binary) past the life of this VM, the resource is a plain reference, and
 * converting the handle raises ReferenceError rather than passing Python a reference.
 */
#ifndef PY_OBJECT_H
#define PY_OBJECT_H

#include "py_common.h"

bool object_init_resources(ErlNifEnv *env);

/* Starts the releaser thread, once, on the running interpreter. */
bool object_start_releaser(char *err, size_t errlen);

/* A handle to obj (a new reference is kept), built in env. GIL held. */
ERL_NIF_TERM object_make_handle(ErlNifEnv *env, PyObject *obj);

/* Whether term has a handle's shape, {'$py_object', Ref}: a live handle or a stale one. */
bool object_is_handle(ErlNifEnv *env, ERL_NIF_TERM term);

/* The object of a handle (term must have a handle's shape): a new reference, or NULL with
 * ReferenceError set for a stale handle. GIL held. */
PyObject *object_from_handle(ErlNifEnv *env, ERL_NIF_TERM term);

/* Drops a reference without the GIL, from any thread: the releaser drops it soon. */
void object_release_later(PyObject *obj);

/* Objects queued for release and not yet released, and released since start (py:info). */
void object_release_stats(long *pending, long *released);

#endif
