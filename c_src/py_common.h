/* Shared declarations of the erlang_python NIF.
 *
 * Python.h comes first, as CPython requires. Every other file includes this header.
 */
#ifndef PY_COMMON_H
#define PY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#endif

/* CLOCK_MONOTONIC in nanoseconds: deadlines and intervals of the C side. */
static inline long long
monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Atoms used by more than one file, made once at load. Atoms are global in
 * the VM, so these terms are valid in every environment. */
typedef struct {
    ERL_NIF_TERM ok;
    ERL_NIF_TERM error;
    ERL_NIF_TERM true_;
    ERL_NIF_TERM false_;
    ERL_NIF_TERM none;
    ERL_NIF_TERM nil;
    ERL_NIF_TERM undefined;
    ERL_NIF_TERM nan;
    ERL_NIF_TERM infinity;
    ERL_NIF_TERM neg_infinity;
    ERL_NIF_TERM bytes;
    ERL_NIF_TERM timeout;
    ERL_NIF_TERM badarg;
    ERL_NIF_TERM py_result;
    ERL_NIF_TERM py_callback;
    ERL_NIF_TERM py_object;
    ERL_NIF_TERM not_started;
    ERL_NIF_TERM already_started;
    ERL_NIF_TERM closed;
    ERL_NIF_TERM call;
    ERL_NIF_TERM eval;
    ERL_NIF_TERM exec;
    ERL_NIF_TERM throw_;
    ERL_NIF_TERM exit_;
} py_atoms_t;

extern py_atoms_t ATOMS;

/* Builds {error, Reason} in env. */
static inline ERL_NIF_TERM
make_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, ATOMS.error, reason);
}

/* A binary term holding a copy of a C string. */
ERL_NIF_TERM make_binary(ErlNifEnv *env, const char *data, size_t size);

#endif
