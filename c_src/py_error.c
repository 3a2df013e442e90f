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

/* How deep Info nests through causes and exception groups: a chain longer than
 * this is cut, and a cycle made by hand (e.__context__ = e) ends here too. */
#define DETAIL_MAX_DEPTH 5

/* Adds key => value to info. key is always a literal here, so Info's keys are
 * a fixed set of atoms, none made from Python data. */
static void
info_put(ErlNifEnv *env, ERL_NIF_TERM *info, const char *key, ERL_NIF_TERM value)
{
    ERL_NIF_TERM updated;

    /* make_map_put replaces a key already there (a class with two of our bases
     * could give one twice), so it only fails on a non-map, never here. */
    if (enif_make_map_put(env, *info, enif_make_atom(env, key), value, &updated)) {
        *info = updated;
    }
}

/* obj converted as a result would be; where that raises, {py_object, TypeName,
 * Repr} as the converter gives for objects it has no rule for, so that one
 * odd attribute never costs the whole error. */
static ERL_NIF_TERM
detail_term(ErlNifEnv *env, PyObject *obj)
{
    ERL_NIF_TERM term;
    PyObject *repr;
    const char *type_name = Py_TYPE(obj)->tp_name;

    if (conv_to_term(env, obj, &term)) {
        return term;
    }
    PyErr_Clear();
    repr = PyObject_Repr(obj);
    if (repr == NULL || !PyUnicode_Check(repr) || !conv_to_term(env, repr, &term)) {
        PyErr_Clear();
        term = make_binary(env, "<repr failed>", 13);
    }
    Py_XDECREF(repr);
    return enif_make_tuple3(env, ATOMS.py_object, make_binary(env, type_name, strlen(type_name)),
                            term);
}

/* Puts exc.attr under key; a missing attribute is left out, and so is None
 * when skip_none. */
static void
info_put_attr(ErlNifEnv *env, ERL_NIF_TERM *info, PyObject *exc, const char *attr,
              const char *key, bool skip_none)
{
    PyObject *value = PyObject_GetAttrString(exc, attr);

    if (value == NULL) {
        PyErr_Clear();
        return;
    }
    if (value != Py_None || !skip_none) {
        info_put(env, info, key, detail_term(env, value));
    }
    Py_DECREF(value);
}

/* module.QualName of the class; tp_name when either attribute will not do (a
 * metaclass may make them anything). */
static ERL_NIF_TERM
class_term(ErlNifEnv *env, PyTypeObject *type)
{
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    PyObject *qualname = module == NULL ? NULL
                                        : PyObject_GetAttrString((PyObject *)type, "__qualname__");
    PyObject *name = NULL;
    ERL_NIF_TERM term;

    if (qualname != NULL && PyUnicode_Check(module) && PyUnicode_Check(qualname)) {
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    if (name == NULL || !conv_to_term(env, name, &term)) {
        PyErr_Clear();
        term = make_binary(env, type->tp_name, strlen(type->tp_name));
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(name);
    return term;
}

/* Each item of a tuple or list through detail_term; anything else as a whole. */
static ERL_NIF_TERM
items_term(ErlNifEnv *env, PyObject *seq)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    Py_ssize_t i;

    if (!PyTuple_Check(seq) && !PyList_Check(seq)) {
        return detail_term(env, seq);
    }
    /* Backwards, consing: a list may shrink under us if converting an item
     * runs Python code, so each index is checked again. */
    for (i = PySequence_Fast_GET_SIZE(seq) - 1; i >= 0; i--) {
        if (i < PySequence_Fast_GET_SIZE(seq)) {
            PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
            list = enif_make_list_cell(env, detail_term(env, item), list);
            Py_DECREF(item);
        }
    }
    return list;
}

/* True when obj is an instance of the builtin class named name, looked up at
 * run time: the NIF also builds against Pythons that lack the class and its
 * PyExc_ name (BaseExceptionGroup is 3.11's). */
static bool
is_builtin_instance(PyObject *obj, const char *name)
{
    PyObject *builtins = PyImport_ImportModule("builtins");
    PyObject *cls = builtins == NULL ? NULL : PyObject_GetAttrString(builtins, name);
    int is = cls != NULL && PyType_Check(cls) ? PyObject_IsInstance(obj, cls) : 0;

    Py_XDECREF(builtins);
    Py_XDECREF(cls);
    PyErr_Clear();
    return is == 1;
}

static ERL_NIF_TERM info_term(ErlNifEnv *env, PyObject *exc, int depth);

/* {Type, Message, Info} of a chained or grouped exception. */
static ERL_NIF_TERM
nested_term(ErlNifEnv *env, PyObject *exc, int depth)
{
    return enif_make_tuple3(env, type_term(env, (PyObject *)Py_TYPE(exc)),
                            str_term(env, exc, "<unprintable>"), info_term(env, exc, depth));
}

/* The exception __cause__ names, else the one __context__ names unless
 * suppressed (what the traceback would show as the one before); NULL if none. */
static PyObject *
previous_exception(PyObject *exc)
{
    PyObject *previous = PyException_GetCause(exc);
    PyObject *suppress;
    int suppressed;

    if (previous != NULL && previous != Py_None) {
        return previous;
    }
    Py_XDECREF(previous);
    suppress = PyObject_GetAttrString(exc, "__suppress_context__");
    suppressed = suppress == NULL ? 0 : PyObject_IsTrue(suppress);
    Py_XDECREF(suppress);
    PyErr_Clear();
    if (suppressed != 0) {
        return NULL;
    }
    previous = PyException_GetContext(exc);
    if (previous == Py_None) {
        Py_CLEAR(previous);
    }
    return previous;
}

/* The Info map of exc (see py_error.h); depth counts the exceptions above it. */
static ERL_NIF_TERM
info_term(ErlNifEnv *env, PyObject *exc, int depth)
{
    ERL_NIF_TERM info = enif_make_new_map(env);
    PyObject *args, *attr;

    if (exc == NULL) {
        return info;
    }
    info_put(env, &info, "class", class_term(env, Py_TYPE(exc)));
    args = PyObject_GetAttrString(exc, "args");
    if (args == NULL) {
        PyErr_Clear();
    } else {
        info_put(env, &info, "args", items_term(env, args));
    }

    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_OSError)) {
        info_put_attr(env, &info, exc, "errno", "errno", false);
        info_put_attr(env, &info, exc, "strerror", "strerror", true);
        info_put_attr(env, &info, exc, "filename", "filename", true);
        info_put_attr(env, &info, exc, "filename2", "filename2", true);
    }
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_KeyError) && args != NULL &&
        PyTuple_Check(args) && PyTuple_GET_SIZE(args) > 0) {
        info_put(env, &info, "key", detail_term(env, PyTuple_GET_ITEM(args, 0)));
    }
    Py_XDECREF(args);
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_ImportError)) {
        info_put_attr(env, &info, exc, "name", "name", true);
        info_put_attr(env, &info, exc, "path", "path", true);
    }
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_SyntaxError)) {
        info_put_attr(env, &info, exc, "filename", "filename", true);
        info_put_attr(env, &info, exc, "lineno", "lineno", true);
        info_put_attr(env, &info, exc, "offset", "offset", true);
        info_put_attr(env, &info, exc, "text", "text", true);
    }
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_SystemExit)) {
        info_put_attr(env, &info, exc, "code", "code", false);
    }
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_StopIteration)) {
        info_put_attr(env, &info, exc, "value", "value", false);
    }
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_UnicodeDecodeError) ||
        PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_UnicodeEncodeError)) {
        info_put_attr(env, &info, exc, "encoding", "encoding", false);
        info_put_attr(env, &info, exc, "start", "start", false);
        info_put_attr(env, &info, exc, "end", "end", false);
        info_put_attr(env, &info, exc, "reason", "reason", false);
    }

    /* add_note() is 3.11's; before, __notes__ is only there if code set it. */
    attr = PyObject_GetAttrString(exc, "__notes__");
    if (attr == NULL) {
        PyErr_Clear();
    } else {
        info_put(env, &info, "notes", items_term(env, attr));
        Py_DECREF(attr);
    }

    if (depth >= DETAIL_MAX_DEPTH) {
        return info;
    }
    attr = previous_exception(exc);
    if (attr != NULL) {
        if (PyExceptionInstance_Check(attr)) {
            info_put(env, &info, "cause", nested_term(env, attr, depth + 1));
        }
        Py_DECREF(attr);
    }
    if (is_builtin_instance(exc, "BaseExceptionGroup")) {
        attr = PyObject_GetAttrString(exc, "exceptions");
        if (attr != NULL && PyTuple_Check(attr)) {
            ERL_NIF_TERM list = enif_make_list(env, 0);
            Py_ssize_t i;
            for (i = PyTuple_GET_SIZE(attr) - 1; i >= 0; i--) {
                PyObject *sub = PyTuple_GET_ITEM(attr, i);
                if (PyExceptionInstance_Check(sub)) {
                    list = enif_make_list_cell(env, nested_term(env, sub, depth + 1), list);
                }
            }
            info_put(env, &info, "exceptions", list);
        }
        Py_XDECREF(attr);
        PyErr_Clear();
    }
    return info;
}

/* The current exception as {error, {Type, Message, Traceback}}, or with Info
 * appended when detailed: the one place both error values are built. */
static ERL_NIF_TERM
error_build(ErlNifEnv *env, bool detailed)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    ERL_NIF_TERM type_t, message, traceback, result;

    fetch_exception(&type, &value, &tb);
    type_t = type_term(env, type);
    message = str_term(env, value, "<unprintable>");
    traceback = traceback_term(env, type, value, tb);
    if (detailed) {
        /* value is NULL only when nothing was raised: Info is then #{}. */
        bool is_exception = value != NULL && PyExceptionInstance_Check(value);
        ERL_NIF_TERM info = info_term(env, is_exception ? value : NULL, 0);
        result = enif_make_tuple4(env, type_t, message, traceback, info);
    } else {
        result = enif_make_tuple3(env, type_t, message, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return make_error(env, result);
}

ERL_NIF_TERM
error_from_python(ErlNifEnv *env)
{
    return error_build(env, false);
}

ERL_NIF_TERM
error_from_python_detailed(ErlNifEnv *env)
{
    return error_build(env, true);
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
