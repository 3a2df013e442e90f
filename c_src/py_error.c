/* Turning a raised Python exception into an Erlang error value.
 *
 * Nothing here may print or exit: PyErr_Print would call the SystemExit
 * handler and end the VM. */
#include "py_error.h"

#include <string.h>

#include "py_convert.h"

/* Takes the current exception as (type, value, traceback), normalised. */
static void
fetch_exception(PyObject **type, PyObject **value, PyObject **tb)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    *value = exc;
    *type = exc == NULL ? NULL : Py_NewRef(Py_TYPE(exc));
    *tb = exc == NULL ? NULL : PyException_GetTraceback(exc);
#else
    PyErr_Fetch(type, value, tb);
    PyErr_NormalizeException(type, value, tb);
    if (*value != NULL && *tb != NULL) {
        PyException_SetTraceback(*value, *tb);
    }
#endif
}

PyObject *
error_take_exception(void)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;

    fetch_exception(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static ERL_NIF_TERM
str_term(ErlNifEnv *env, PyObject *obj, const char *fallback)
{
    ERL_NIF_TERM term;
    PyObject *text = obj == NULL ? NULL : PyObject_Str(obj);

    if (text != NULL && conv_to_term(env, text, &term)) {
        Py_DECREF(text);
        return term;
    }
    Py_XDECREF(text);
    PyErr_Clear();
    return make_binary(env, fallback, strlen(fallback));
}

static ERL_NIF_TERM
type_term(ErlNifEnv *env, PyObject *type)
{
    const char *name = type == NULL ? "UnknownError" : ((PyTypeObject *)type)->tp_name;
    const char *dot = strrchr(name, '.');
    ERL_NIF_TERM atom;

    if (dot != NULL) {
        name = dot + 1;
    }
    if (conv_make_atom(env, name, strlen(name), true, &atom)) {
        return atom;
    }
    return make_binary(env, name, strlen(name));
}

static ERL_NIF_TERM
traceback_term(ErlNifEnv *env, PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *module = NULL, *lines = NULL, *joined = NULL, *empty = NULL;
    ERL_NIF_TERM term = 0;

    if (type == NULL || value == NULL) {
        return make_binary(env, "", 0);
    }
    module = PyImport_ImportModule("traceback");
    if (module != NULL) {
        lines = PyObject_CallMethod(module, "format_exception", "OOO", type, value,
                                    tb == NULL ? Py_None : tb);
    }
    if (lines != NULL) {
        empty = PyUnicode_FromString("");
        joined = empty == NULL ? NULL : PyUnicode_Join(empty, lines);
    }
    if (joined == NULL || !conv_to_term(env, joined, &term)) {
        PyErr_Clear();
        term = make_binary(env, "", 0);
    }
    Py_XDECREF(module);
    Py_XDECREF(lines);
    Py_XDECREF(joined);
    Py_XDECREF(empty);
    return term;
}

ERL_NIF_TERM
error_from_python(ErlNifEnv *env)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    ERL_NIF_TERM result;

    fetch_exception(&type, &value, &tb);
    result = enif_make_tuple3(env, type_term(env, type), str_term(env, value, "<unprintable>"),
                              traceback_term(env, type, value, tb));
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return make_error(env, result);
}

void
error_init_atoms(ErlNifEnv *env)
{
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *name, *value;
    Py_ssize_t pos = 0;

    if (builtins == NULL) {
        return;
    }
    while (PyDict_Next(builtins, &pos, &name, &value)) {
        const char *text;
        if (!PyType_Check(value) ||
            !PyType_IsSubtype((PyTypeObject *)value, (PyTypeObject *)PyExc_BaseException)) {
            continue;
        }
        text = PyUnicode_AsUTF8(name);
        if (text != NULL) {
            (void)enif_make_atom(env, text);
        }
    }
    PyErr_Clear();
}
