/* The built-in `erlang` module.
 *
 * Opaque Erlang terms (pids, references, ports, funs) are C objects that keep
 * a copy of the term in an environment of their own, so they come back to
 * Erlang as the identical term. The pure-Python parts (Atom, the exceptions,
 * attribute access) are defined by ERLANG_MODULE_SOURCE below, run once in
 * the module's namespace when it is created.
 */
#include "py_erlang_module.h"

#include <string.h>

#include "py_callback.h"
#include "py_loop.h"

typedef struct {
    PyObject_HEAD
    ErlNifEnv *env;
    ERL_NIF_TERM term;
} TermObject;

enum { TERM_PID, TERM_REF, TERM_PORT, TERM_FUN, TERM_KINDS };

static PyObject *term_types[TERM_KINDS];
static PyObject *atom_type = NULL;
static PyObject *module_dict = NULL;
/* The module's exception classes, as created: the runtime raises these, whatever Python
 * code later binds to the names in the module (`erlang.CallCancelled = Exception` must not
 * turn a cancellation into something `except Exception` swallows). */
static const char *const exception_names[] = {"Error", "UnknownFunction", "ErlangException",
                                              "CallCancelled"};
#define EXCEPTIONS (sizeof(exception_names) / sizeof(exception_names[0]))
static PyObject *exceptions[EXCEPTIONS];

static const char ERLANG_MODULE_SOURCE[] =
    "class Atom(str):\n"
    "    \"\"\"An Erlang atom: a str that converts back to the same atom.\n"
    "\n"
    "    Making one does not create the atom; converting it to Erlang does, up to\n"
    "    the atom_limit application env, since atoms are never freed.\"\"\"\n"
    "    __slots__ = ()\n"
    "    def __repr__(self):\n"
    "        return 'Atom(' + str.__repr__(self) + ')'\n"
    "\n"
    "class Error(Exception):\n"
    "    \"\"\"Base class of the errors this module raises.\"\"\"\n"
    "\n"
    "class UnknownFunction(Error, LookupError):\n"
    "    \"\"\"erlang.call named a function that is not registered.\"\"\"\n"
    "    def __init__(self, name):\n"
    "        super().__init__('no Erlang function is registered as %r '\n"
    "                         '(see py:register_function/2)' % (name,))\n"
    "        self.name = name\n"
    "\n"
    "class ErlangException(Error):\n"
    "    \"\"\"The Erlang function raised an error, threw or exited.\n"
    "\n"
    "    kind is Atom('error'), Atom('throw') or Atom('exit'); reason is the\n"
    "    reason converted to Python (its text where it cannot be);\n"
    "    formatted_reason the reason as Erlang prints it; stacktrace the\n"
    "    Erlang stacktrace as text.\"\"\"\n"
    "    def __init__(self, kind, reason, formatted_reason, stacktrace):\n"
    "        super().__init__('%s: %s' % (kind, formatted_reason))\n"
    "        self.kind = kind\n"
    "        self.reason = reason\n"
    "        self.formatted_reason = formatted_reason\n"
    "        self.stacktrace = stacktrace\n"
    "\n"
    "class CallCancelled(BaseException):\n"
    "    \"\"\"The py:call this code runs for timed out or its caller exited.\n"
    "\n"
    "    A BaseException, so that `except Exception` does not swallow it.\"\"\"\n"
    "\n"
    "class Function:\n"
    "    \"\"\"A registered Erlang function, as erlang.name or from erlang import name.\"\"\"\n"
    "    __slots__ = ('name',)\n"
    "    def __init__(self, name):\n"
    "        self.name = name\n"
    "    def __call__(self, *args, **kwargs):\n"
    "        if kwargs:\n"
    "            args += (kwargs,)\n"
    "        return call(self.name, *args)\n"
    "    def __repr__(self):\n"
    "        return '<erlang function %s>' % (self.name,)\n"
    "\n"
    "_PORT_HELPERS = frozenset(('run_shell', 'start_worker', 'Worker',\n"
    "                           'CommandTimeout', 'OutputLimitExceeded'))\n"
    "_EVENT_LOOP = frozenset(('run', 'new_event_loop', 'ErlangEventLoop', 'async_call',\n"
    "                         'Mailbox'))\n"
    "\n"
    "def __getattr__(name):\n"
    "    if name.startswith('_'):\n"
    "        raise AttributeError(name)\n"
    "    if name in _PORT_HELPERS:\n"
    "        from _erlang_impl import _ports\n"
    "        return getattr(_ports, name)\n"
    "    if name in _EVENT_LOOP:\n"
    "        from _erlang_impl import _loop\n"
    "        return getattr(_loop, name)\n"
    "    return Function(name)\n"
    "\n"
    "def __dir__():\n"
    "    return sorted(set(globals()) | _PORT_HELPERS | _EVENT_LOOP)\n";

/* ------------------------------------------------------------------------ */
/* Opaque term objects */

static void
term_dealloc(PyObject *self)
{
    TermObject *obj = (TermObject *)self;
    PyTypeObject *type = Py_TYPE(self);

    if (obj->env != NULL) {
        enif_free_env(obj->env);
    }
    type->tp_free(self);
    Py_DECREF(type);
}

static Py_hash_t
term_hash(PyObject *self)
{
    TermObject *obj = (TermObject *)self;
    Py_hash_t hash = (Py_hash_t)enif_hash(ERL_NIF_PHASH2, obj->term, 0);
    return hash == -1 ? -2 : hash;
}

static PyObject *
term_richcompare(PyObject *self, PyObject *other, int op)
{
    int cmp;

    if (Py_TYPE(self) != Py_TYPE(other) || (op != Py_EQ && op != Py_NE)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    cmp = enif_compare(((TermObject *)self)->term, ((TermObject *)other)->term);
    return PyBool_FromLong(op == Py_EQ ? cmp == 0 : cmp != 0);
}

static const char *
short_type_name(PyTypeObject *type)
{
    const char *dot = strrchr(type->tp_name, '.');
    return dot == NULL ? type->tp_name : dot + 1;
}

static PyObject *
term_repr(PyObject *self)
{
    char buf[256];
    enif_snprintf(buf, sizeof(buf), "%T", ((TermObject *)self)->term);
    return PyUnicode_FromFormat("%s(%s)", short_type_name(Py_TYPE(self)), buf);
}

static PyObject *
term_new_refused(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyErr_Format(PyExc_TypeError, "erlang.%s objects come only from Erlang", short_type_name(type));
    return NULL;
}

static PyType_Slot term_slots[] = {
    {Py_tp_dealloc, term_dealloc},
    {Py_tp_hash, term_hash},
    {Py_tp_richcompare, term_richcompare},
    {Py_tp_repr, term_repr},
    {Py_tp_new, term_new_refused},
    {0, NULL},
};

static const char *term_type_names[TERM_KINDS] = {
    "erlang.Pid", "erlang.Reference", "erlang.Port", "erlang.Fun"};
static const char *term_type_short[TERM_KINDS] = {"Pid", "Reference", "Port", "Fun"};

PyObject *
erlmod_wrap_term(ErlNifEnv *env, ERL_NIF_TERM term)
{
    int kind;
    TermObject *obj;

    switch (enif_term_type(env, term)) {
    case ERL_NIF_TERM_TYPE_PID:
        kind = TERM_PID;
        break;
    case ERL_NIF_TERM_TYPE_REFERENCE:
        kind = TERM_REF;
        break;
    case ERL_NIF_TERM_TYPE_PORT:
        kind = TERM_PORT;
        break;
    default:
        kind = TERM_FUN;
        break;
    }
    obj = PyObject_New(TermObject, (PyTypeObject *)term_types[kind]);
    if (obj == NULL) {
        return NULL;
    }
    obj->env = enif_alloc_env();
    if (obj->env == NULL) {
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    obj->term = enif_make_copy(obj->env, term);
    return (PyObject *)obj;
}

bool
erlmod_unwrap_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    for (int i = 0; i < TERM_KINDS; i++) {
        if (term_types[i] != NULL && Py_TYPE(obj) == (PyTypeObject *)term_types[i]) {
            *out = enif_make_copy(env, ((TermObject *)obj)->term);
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* The module */

PyObject *
erlmod_atom_type(void)
{
    return atom_type;
}

PyObject *
erlmod_exception(const char *name)
{
    for (size_t i = 0; i < EXCEPTIONS; i++) {
        if (exceptions[i] != NULL && strcmp(exception_names[i], name) == 0) {
            return exceptions[i];
        }
    }
    return PyExc_RuntimeError;
}

PyDoc_STRVAR(call_doc, "call(name, *args)\n--\n\n"
                       "Call the Erlang function registered as name with args and return\n"
                       "its result. Raises UnknownFunction, ErlangException or CallCancelled.");
PyDoc_STRVAR(send_doc, "send(dest, term)\n--\n\n"
                       "Send term to dest, a Pid or a registered name. Like Erlang's !, a\n"
                       "message to a process that has exited is dropped.");
PyDoc_STRVAR(self_doc, "self()\n--\n\n"
                       "The Pid of the Erlang process whose py:call this code runs for, or\n"
                       "None on a thread that runs none.");

static PyObject *
note_partial_output(PyObject *module, PyObject *unused)
{
    worker_note_partial_output();
    Py_RETURN_NONE;
}

static PyMethodDef erlang_methods[] = {
    {"call", callback_call, METH_VARARGS, call_doc},
    {"send", callback_send, METH_VARARGS, send_doc},
    {"self", callback_self, METH_NOARGS, self_doc},
    {"_output_target", callback_output_target, METH_NOARGS,
     "Private: the group leader this thread's output goes to, or None."},
    {"_note_partial_output", note_partial_output, METH_NOARGS,
     "Private: this thread's output holds a partial line (_erlang_impl._output)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef erlang_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "erlang",
    .m_doc = "Calls and messages from Python to the Erlang VM that embeds it.",
    .m_size = -1,
    .m_methods = erlang_methods,
};

PyMODINIT_FUNC
PyInit_erlang(void)
{
    PyObject *module = NULL, *result = NULL;

    if (module_dict != NULL) {
        PyErr_SetString(PyExc_ImportError,
                        "the erlang module exists only in the main interpreter");
        return NULL;
    }
    module = PyModule_Create(&erlang_module_def);
    if (module == NULL) {
        return NULL;
    }
    for (int i = 0; i < TERM_KINDS; i++) {
        PyType_Spec spec = {
            .name = term_type_names[i],
            .basicsize = sizeof(TermObject),
            .flags = Py_TPFLAGS_DEFAULT,
            .slots = term_slots,
        };
        term_types[i] = PyType_FromSpec(&spec);
        if (term_types[i] == NULL ||
            PyModule_AddObject(module, term_type_short[i], Py_NewRef(term_types[i])) < 0) {
            goto fail;
        }
    }
    if (loop_add_to_module(module) < 0) {
        goto fail;
    }
    result = PyRun_String(ERLANG_MODULE_SOURCE, Py_file_input, PyModule_GetDict(module),
                          PyModule_GetDict(module));
    if (result == NULL) {
        goto fail;
    }
    Py_DECREF(result);
    atom_type = PyDict_GetItemString(PyModule_GetDict(module), "Atom");
    if (atom_type == NULL) {
        goto fail;
    }
    Py_INCREF(atom_type);
    for (size_t i = 0; i < EXCEPTIONS; i++) {
        exceptions[i] = PyDict_GetItemString(PyModule_GetDict(module), exception_names[i]);
        if (exceptions[i] == NULL) {
            goto fail;
        }
        Py_INCREF(exceptions[i]);
    }
    module_dict = Py_NewRef(PyModule_GetDict(module));
    return module;
fail:
    Py_XDECREF(module);
    return NULL;
}
