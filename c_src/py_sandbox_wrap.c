/* Checking wrappers for builtins that raise no audit event (os._exit, os.close,
 * signal.alarm, _posixsubprocess.fork_exec...). The C function pointer (ml_meth) of each
 * builtin's PyMethodDef, one of CPython's static method tables, is swapped for a wrapper of
 * the same calling convention, flags unchanged; every function object made from that def,
 * by `import posix`, importlib.reload or a new sub-interpreter, reaches the wrapper, which
 * checks the call and runs the saved original when it is allowed. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>

#include "py_sandbox_int.h"

typedef PyObject *(*sbx_fast_fn)(PyObject *, PyObject *const *, Py_ssize_t);
typedef PyObject *(*sbx_fastkw_fn)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);

#define SBX_CONVENTION (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O | METH_FASTCALL)

#define SBX_MAX_ARGS 8

/* One call as the wrapper received it, whatever the calling convention. A guard may settle
 * an argument (sbx_settle_*): convert it once, check the result, and put the result in the
 * call, so that the original sees exactly the value that was checked; an __index__ or
 * __bool__ that answered differently the second time cannot slip past the check. */
typedef struct {
    PyObject *const *args; /* positional, then (FASTCALL) the keyword values */
    Py_ssize_t nargs;
    PyObject *kwnames; /* FASTCALL|KEYWORDS */
    PyObject *tuple;   /* VARARGS */
    PyObject *kwargs;  /* VARARGS|KEYWORDS */
    /* what settling allocated, released by sbx_call_release */
    PyObject *copy[SBX_MAX_ARGS];
    PyObject *owned[SBX_MAX_ARGS];
    int nowned;
    PyObject *own_tuple;
    PyObject *own_kwargs;
} sbx_call;

static void sbx_call_release(sbx_call *call)
{
    int i;

    for (i = 0; i < call->nowned; i++) {
        Py_DECREF(call->owned[i]);
    }
    Py_XDECREF(call->own_tuple);
    Py_XDECREF(call->own_kwargs);
}

/* Puts `value` (a new reference, stolen) in the call in place of the argument at position
 * `pos` or keyword `name`, which must be present. 0, or -1 with an exception set. */
static int sbx_replace_arg(sbx_call *call, Py_ssize_t pos, const char *name, PyObject *value)
{
    Py_ssize_t total = call->nargs;
    Py_ssize_t i;
    Py_ssize_t at = -1;

    if (call->nowned == SBX_MAX_ARGS) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "sandbox: too many arguments to check");
        return -1;
    }
    call->owned[call->nowned++] = value;
    if (call->tuple != NULL) {
        if (pos < call->nargs) {
            PyObject *tuple = PyTuple_New(call->nargs);
            if (tuple == NULL) {
                return -1;
            }
            for (i = 0; i < call->nargs; i++) {
                PyObject *item = i == pos ? value : call->args[i];
                Py_INCREF(item);
                PyTuple_SET_ITEM(tuple, i, item);
            }
            Py_XDECREF(call->own_tuple);
            call->own_tuple = call->tuple = tuple;
            call->args = ((PyTupleObject *)tuple)->ob_item;
            return 0;
        }
        if (call->own_kwargs == NULL) {
            call->own_kwargs = PyDict_Copy(call->kwargs);
            if (call->own_kwargs == NULL) {
                return -1;
            }
            call->kwargs = call->own_kwargs;
        }
        return PyDict_SetItemString(call->kwargs, name, value);
    }
    if (pos < call->nargs) {
        at = pos;
    }
    if (call->kwnames != NULL) {
        total += PyTuple_GET_SIZE(call->kwnames);
        for (i = 0; at < 0 && i < PyTuple_GET_SIZE(call->kwnames); i++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(call->kwnames, i), name) ==
                0) {
                at = call->nargs + i;
            }
        }
    }
    if (at < 0 || total > SBX_MAX_ARGS) {
        PyErr_SetString(PyExc_TypeError, "sandbox: cannot check this call's arguments");
        return -1;
    }
    if (call->args != call->copy) {
        for (i = 0; i < total; i++) {
            call->copy[i] = call->args[i];
        }
        call->args = call->copy;
    }
    call->copy[at] = value;
    return 0;
}

struct sbx_patch;

enum sbx_verdict { SBX_ALLOW, SBX_DENIED, SBX_DONE };

/* Decides a call: SBX_ALLOW runs the original, SBX_DENIED has set an exception, SBX_DONE
 * has put the call's result in *result. */
typedef enum sbx_verdict (*sbx_guard)(struct sbx_patch *patch, PyObject *self,
                                      sbx_call *call, PyObject **result);

typedef struct sbx_patch {
    const char *module;
    const char *name;
    const char *op; /* the name users know it by, for messages */
    sbx_guard guard;
    enum sbx_kind kind;
    PyMethodDef *def;
    PyCFunction original;
    int flags;
} sbx_patch;

static PyObject *sbx_arg(const sbx_call *call, Py_ssize_t pos, const char *name)
{
    Py_ssize_t i;

    if (pos < call->nargs) {
        return call->args[pos];
    }
    if (call->kwnames != NULL) {
        for (i = 0; i < PyTuple_GET_SIZE(call->kwnames); i++) {
            if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(call->kwnames, i), name) ==
                0) {
                return call->args[call->nargs + i];
            }
        }
    }
    if (call->kwargs != NULL && PyDict_Check(call->kwargs)) {
        return PyDict_GetItemString(call->kwargs, name);
    }
    return NULL;
}

static PyObject *sbx_call_original(sbx_patch *patch, PyObject *self, const sbx_call *call)
{
    PyCFunction original = patch->original;

    switch (patch->flags & SBX_CONVENTION) {
    case METH_NOARGS:
        return original(self, NULL);
    case METH_O:
        return original(self, call->args[0]);
    case METH_VARARGS:
        return original(self, call->tuple);
    case METH_VARARGS | METH_KEYWORDS:
        return ((PyCFunctionWithKeywords)(void (*)(void))original)(self, call->tuple,
                                                                    call->kwargs);
    case METH_FASTCALL:
        return ((sbx_fast_fn)(void (*)(void))original)(self, call->args, call->nargs);
    default:
        return ((sbx_fastkw_fn)(void (*)(void))original)(self, call->args, call->nargs,
                                                          call->kwnames);
    }
}

/* Calls the original with new positional arguments. */
static PyObject *sbx_call_original_with(sbx_patch *patch, PyObject *self,
                                        PyObject *const *args, Py_ssize_t nargs)
{
    sbx_call call = {args, nargs, NULL, NULL, NULL, {NULL}, {NULL}, 0, NULL, NULL};
    PyObject *result = NULL;
    Py_ssize_t i;

    if (patch->flags & METH_VARARGS) {
        call.tuple = PyTuple_New(nargs);
        if (call.tuple == NULL) {
            return NULL;
        }
        for (i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(call.tuple, i, args[i]);
        }
    }
    result = sbx_call_original(patch, self, &call);
    Py_XDECREF(call.tuple);
    return result;
}

static enum sbx_verdict sbx_deny(sbx_patch *patch, PyObject *self, sbx_call *call,
                                 PyObject **result)
{
    sbx_refuse(patch->op, patch->kind);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_deny_signal_handler(sbx_patch *patch, PyObject *self,
                                                sbx_call *call, PyObject **result)
{
    sbx_refuse_signal_handler(patch->op);
    return SBX_DENIED;
}

/* faulthandler.enable would put its handlers over the VM's SIGSEGV, SIGABRT... ones. */
static enum sbx_verdict sbx_noop(sbx_patch *patch, PyObject *self, sbx_call *call,
                                 PyObject **result)
{
    Py_INCREF(Py_None);
    *result = Py_None;
    return SBX_DONE;
}

/* Settles an int argument: converts it once (__index__), stores the exact int in the call
 * and its value in *value; *value is LONG_MAX if it does not fit a long (the original then
 * refuses it too). 0 when settled, 1 when the argument is absent, -1 with an exception. */
static int sbx_settle_index(sbx_call *call, Py_ssize_t pos, const char *name, long *value)
{
    PyObject *arg = sbx_arg(call, pos, name);
    PyObject *index = NULL;

    if (arg == NULL) {
        return 1;
    }
    if (PyLong_CheckExact(arg)) {
        index = arg; /* converting it runs no Python code: nothing to settle */
        Py_INCREF(index);
    } else {
        Py_INCREF(arg); /* __index__ runs Python code */
        index = PyNumber_Index(arg);
        Py_DECREF(arg);
        if (index == NULL) {
            return -1;
        }
    }
    *value = PyLong_AsLong(index);
    if (*value == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            Py_DECREF(index);
            return -1;
        }
        PyErr_Clear();
        *value = LONG_MAX;
    }
    if (index == arg) {
        Py_DECREF(index);
        return 0;
    }
    return sbx_replace_arg(call, pos, name, index);
}

/* Settles a flag argument the same way (__bool__ once, an exact bool in the call). */
static int sbx_settle_truth(sbx_call *call, Py_ssize_t pos, const char *name, int *value)
{
    PyObject *arg = sbx_arg(call, pos, name);
    PyObject *flag = NULL;
    int is_bool;

    if (arg == NULL) {
        *value = 0;
        return 1;
    }
    Py_INCREF(arg); /* __bool__ runs Python code */
    *value = PyObject_IsTrue(arg);
    is_bool = PyBool_Check(arg);
    Py_DECREF(arg);
    if (*value < 0) {
        return -1;
    }
    if (is_bool) {
        return 0;
    }
    flag = *value ? Py_True : Py_False;
    Py_INCREF(flag);
    return sbx_replace_arg(call, pos, name, flag);
}

static enum sbx_verdict sbx_guard_close(sbx_patch *patch, PyObject *self, sbx_call *call,
                                        PyObject **result)
{
    char op[SBX_OP_MAX];
    long fd = -1;
    int settled = sbx_settle_index(call, 0, "fd", &fd);

    if (settled < 0) {
        return SBX_DENIED;
    }
    if (settled > 0 || !sbx_is_vm_fd(fd)) {
        return SBX_ALLOW;
    }
    snprintf(op, sizeof(op), "os.close(%ld)", fd);
    sbx_refuse(op, SBX_FD);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_guard_dup2(sbx_patch *patch, PyObject *self, sbx_call *call,
                                       PyObject **result)
{
    char op[SBX_OP_MAX];
    long fd2 = -1;
    int settled = sbx_settle_index(call, 1, "fd2", &fd2);

    if (settled < 0) {
        return SBX_DENIED;
    }
    if (settled > 0 || !sbx_is_vm_fd(fd2)) {
        return SBX_ALLOW;
    }
    snprintf(op, sizeof(op), "os.dup2 onto fd %ld", fd2);
    sbx_refuse(op, SBX_FD);
    return SBX_DENIED;
}

/* os.closerange is made harmless: it closes the fds of the range that are not the VM's. */
static enum sbx_verdict sbx_guard_closerange(sbx_patch *patch, PyObject *self, sbx_call *call,
                                             PyObject **result)
{
    PyObject *bounds[2] = {NULL, NULL};
    PyObject *done = NULL;
    long low = -1;
    long high = -1;
    long start;
    long fd;
    int spared = 0;
    int settled;

    settled = sbx_settle_index(call, 0, "fd_low", &low);
    if (settled == 0) {
        settled = sbx_settle_index(call, 1, "fd_high", &high);
    }
    if (settled < 0) {
        return SBX_DENIED;
    }
    if (settled > 0 || call->nargs != 2 || low < 0 || high <= low || high > INT_MAX) {
        return SBX_ALLOW; /* absent, invalid, empty or too large: the original decides */
    }
    for (fd = low; fd < high && fd < sbx_vm_fd_count; fd++) {
        spared |= sbx_is_vm_fd(fd);
    }
    if (!spared) {
        return SBX_ALLOW;
    }
    start = low;
    for (fd = low; fd <= high; fd++) {
        /* the gaps between the VM's fds, and the rest of the range after the last one */
        if (fd < high && fd < sbx_vm_fd_count && !sbx_is_vm_fd(fd)) {
            continue;
        }
        if (fd >= sbx_vm_fd_count) {
            fd = high;
        }
        if (fd > start) {
            bounds[0] = PyLong_FromLong(start);
            bounds[1] = PyLong_FromLong(fd);
            done = bounds[0] && bounds[1] ? sbx_call_original_with(patch, self, bounds, 2)
                                          : NULL;
            Py_CLEAR(bounds[0]);
            Py_CLEAR(bounds[1]);
            if (done == NULL) {
                return SBX_DENIED;
            }
            Py_DECREF(done);
        }
        start = fd + 1;
    }
    Py_INCREF(Py_None);
    *result = Py_None;
    return SBX_DONE;
}

static enum sbx_verdict sbx_guard_pthread_kill(sbx_patch *patch, PyObject *self,
                                               sbx_call *call, PyObject **result)
{
    long signum = -1;
    int settled = sbx_settle_index(call, 1, "signalnum", &signum);

    if (settled < 0) {
        return SBX_DENIED;
    }
    if (settled > 0 || signum == 0) {
        return SBX_ALLOW;
    }
    sbx_refuse(patch->op, SBX_SELF_SIGNAL);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_guard_dump_later(sbx_patch *patch, PyObject *self,
                                             sbx_call *call, PyObject **result)
{
    int exit_flag = 0;

    if (sbx_settle_truth(call, 3, "exit", &exit_flag) < 0) {
        return SBX_DENIED;
    }
    if (!exit_flag) {
        return SBX_ALLOW;
    }
    sbx_refuse("faulthandler.dump_traceback_later(exit=True)", SBX_EXIT);
    return SBX_DENIED;
}

/* os.open(path, flags, mode, *, dir_fd): the audit event has no dir_fd, so a path relative
 * to one is checked here. */
static enum sbx_verdict sbx_guard_open(sbx_patch *patch, PyObject *self, sbx_call *call,
                                       PyObject **result)
{
    PyObject *dir_fd = sbx_arg(call, 3, "dir_fd");

    if (dir_fd == NULL || dir_fd == Py_None) {
        return SBX_ALLOW; /* the audit hook saw the whole path */
    }
    return sbx_refuse_own_memory_write((int)sbx_as_long(dir_fd, AT_FDCWD),
                                       sbx_arg(call, 0, "path"),
                                       sbx_as_long(sbx_arg(call, 1, "flags"), 0)) < 0
               ? SBX_DENIED
               : SBX_ALLOW;
}

/* ---- recursion and stacks ------------------------------------------------------------ */

/* Before 3.12 C code recurses under the same limit as Python code (Py_EnterRecursiveCall),
 * and Python calls themselves recurse in C: a limit raised past what a thread's stack holds
 * turns deep data (repr, json, pickle of nested lists) into a SIGSEGV of the whole VM. So
 * the limit is capped at what the smallest stack of a thread running Python holds, at
 * SBX_STACK_PER_LEVEL bytes a level: about twice the most measured (3.9, pickle and plain
 * Python recursion on a 64 MB stack). Python threads get SBX_PYTHON_THREAD_STACK bytes;
 * the workers have more. 3.12 and later bound C recursion on their own. */
#define SBX_STACK_PER_LEVEL 640
#if defined(__SANITIZE_ADDRESS__)
#define SBX_PYTHON_THREAD_STACK (256L * 1024 * 1024)
#else
#define SBX_PYTHON_THREAD_STACK (32L * 1024 * 1024)
#endif
#define SBX_CAPS_RECURSION (PY_VERSION_HEX < 0x030C0000)

/* The stack size Python threads get now (_thread.stack_size, 0 meaning the default). */
static long sbx_python_stack = SBX_PYTHON_THREAD_STACK;

static long sbx_default_thread_stack(void)
{
    struct rlimit limit;

    /* glibc's default for new threads: the soft stack limit, 8 MB when it is unlimited. */
    if (getrlimit(RLIMIT_STACK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        limit.rlim_cur > 0) {
        return (long)limit.rlim_cur;
    }
    return 8L * 1024 * 1024;
}

static long sbx_max_recursion(void)
{
    return sbx_python_stack / SBX_STACK_PER_LEVEL;
}

/* Says that a recursion limit was lowered to the cap; -1 if the warning raised. */
static int sbx_warn_capped(long asked, long max)
{
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "the recursion limit %ld was lowered to %ld: deeper recursion would "
                            "overflow a %ld-byte thread stack and crash the Erlang VM",
                            asked, max, sbx_python_stack);
}

/* Caps the current limit if it is above what the stacks hold; -1 if the warning raised. */
static int sbx_cap_current_limit(void)
{
    long max = sbx_max_recursion();
    int current = Py_GetRecursionLimit();

    if (!SBX_CAPS_RECURSION || current <= max) {
        return 0;
    }
    Py_SetRecursionLimit((int)max);
    return sbx_warn_capped(current, max);
}

static enum sbx_verdict sbx_guard_recursion_limit(sbx_patch *patch, PyObject *self,
                                                  sbx_call *call, PyObject **result)
{
    long limit = 0;
    long max = sbx_max_recursion();
    int settled;

    if (!SBX_CAPS_RECURSION) {
        return SBX_ALLOW;
    }
    settled = sbx_settle_index(call, 0, "new_limit", &limit);
    if (settled != 0) {
        return settled < 0 ? SBX_DENIED : SBX_ALLOW;
    }
    if (limit <= max) {
        return SBX_ALLOW;
    }
    if (sbx_warn_capped(limit, max) < 0) {
        return SBX_DENIED;
    }
    {
        PyObject *capped = PyLong_FromLong(max);
        if (capped == NULL || sbx_replace_arg(call, 0, "new_limit", capped) < 0) {
            return SBX_DENIED;
        }
    }
    return SBX_ALLOW;
}

/* _thread.stack_size(size): allowed; the stack size is recorded, and a recursion limit
 * that the new, smaller stacks cannot hold is lowered. */
static enum sbx_verdict sbx_guard_stack_size(sbx_patch *patch, PyObject *self, sbx_call *call,
                                             PyObject **result)
{
    long size = 0;
    int settled = sbx_settle_index(call, 0, "size", &size);

    if (settled != 0) {
        return settled < 0 ? SBX_DENIED : SBX_ALLOW; /* no argument: a query */
    }
    *result = sbx_call_original(patch, self, call);
    if (*result == NULL) {
        return SBX_DENIED;
    }
    sbx_python_stack = size == 0 ? sbx_default_thread_stack() : size;
    if (sbx_cap_current_limit() < 0) {
        Py_CLEAR(*result);
        return SBX_DENIED;
    }
    return SBX_DONE;
}

/* ---- foreign calls ------------------------------------------------------------------ */

/* A ctypes function pointer made from an address (CFUNCTYPE(...)(address)) raises no audit
 * event, neither when made nor when called: native code reached that way would run
 * unfiltered until something armed the kernel layer. So the call slot of _ctypes.CFuncPtr
 * arms it first (it filters the calling thread at once); a program that never calls
 * through ctypes pays nothing. Two places hold that slot's function: the type's tp_call,
 * and the `__call__' wrapper descriptor in its dict, from which every foreign function type
 * made later (CFUNCTYPE, a CDLL's functions) takes its own tp_call. Both are swapped. */
static ternaryfunc sbx_foreign_call_original;

static PyObject *sbx_foreign_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    sbx_arm_kernel_layer();
    return sbx_foreign_call_original(self, args, kwargs);
}

int sbx_wrap_foreign_calls(void)
{
    PyObject *module = PyImport_ImportModule("_ctypes");
    PyObject *type = module == NULL ? NULL : PyObject_GetAttrString(module, "CFuncPtr");
    int rc = -1;

    if (module == NULL) {
        /* A Python built without ctypes has no foreign calls to watch. */
        if (PyErr_ExceptionMatches(PyExc_ImportError)) {
            PyErr_Clear();
            rc = 0;
        }
        goto done;
    }
    if (type == NULL || !PyType_Check(type) || ((PyTypeObject *)type)->tp_call == NULL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "sandbox: _ctypes.CFuncPtr has no call slot");
        goto done;
    }
    if (((PyTypeObject *)type)->tp_call != sbx_foreign_call) {
        PyObject *call = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, "__call__");
        if (call == NULL || !PyObject_TypeCheck(call, &PyWrapperDescr_Type) ||
            ((PyWrapperDescrObject *)call)->d_wrapped !=
                (void *)((PyTypeObject *)type)->tp_call) {
            PyErr_SetString(PyExc_RuntimeError,
                            "sandbox: _ctypes.CFuncPtr.__call__ is not its call slot");
            goto done;
        }
        sbx_foreign_call_original = ((PyTypeObject *)type)->tp_call;
        ((PyWrapperDescrObject *)call)->d_wrapped = (void *)sbx_foreign_call;
        ((PyTypeObject *)type)->tp_call = sbx_foreign_call;
        PyType_Modified((PyTypeObject *)type);
    }
    rc = 0;
done:
    Py_XDECREF(type);
    Py_XDECREF(module);
    return rc;
}

int sbx_set_thread_stacks(void)
{
    PyObject *thread = PyImport_ImportModule("_thread");
    PyObject *previous = thread == NULL
                             ? NULL
                             : PyObject_CallMethod(thread, "stack_size", "l",
                                                   (long)SBX_PYTHON_THREAD_STACK);

    Py_XDECREF(thread);
    if (previous == NULL) {
        return -1;
    }
    Py_DECREF(previous);
    return 0;
}

static sbx_patch sbx_patches[] = {
    {"posix", "_exit", "os._exit", sbx_deny, SBX_EXIT},
    {"posix", "abort", "os.abort", sbx_deny, SBX_EXIT},
    {"posix", "posix_spawn", "os.posix_spawn", sbx_deny, SBX_SPAWN},
    {"posix", "posix_spawnp", "os.posix_spawnp", sbx_deny, SBX_SPAWN},
    {"posix", "close", "os.close", sbx_guard_close, SBX_FD},
    {"posix", "closerange", "os.closerange", sbx_guard_closerange, SBX_FD},
    {"posix", "dup2", "os.dup2", sbx_guard_dup2, SBX_FD},
    {"_posixsubprocess", "fork_exec", "_posixsubprocess.fork_exec", sbx_deny, SBX_SPAWN},
    {"_signal", "alarm", "signal.alarm", sbx_deny, SBX_SIGNAL},
    {"_signal", "setitimer", "signal.setitimer", sbx_deny, SBX_SIGNAL},
    {"_signal", "raise_signal", "signal.raise_signal", sbx_deny, SBX_SIGNAL},
    {"_signal", "signal", "signal.signal", sbx_deny_signal_handler, SBX_SIGNAL},
    {"_signal", "siginterrupt", "signal.siginterrupt", sbx_deny_signal_handler, SBX_SIGNAL},
    {"_signal", "set_wakeup_fd", "signal.set_wakeup_fd", sbx_deny_signal_handler, SBX_SIGNAL},
    {"_signal", "pthread_kill", "signal.pthread_kill", sbx_guard_pthread_kill, SBX_SELF_SIGNAL},
    {"faulthandler", "enable", "faulthandler.enable", sbx_noop, SBX_SIGNAL},
    {"faulthandler", "register", "faulthandler.register", sbx_deny, SBX_SIGNAL},
    {"faulthandler", "dump_traceback_later", "faulthandler.dump_traceback_later",
     sbx_guard_dump_later, SBX_EXIT},
    {"faulthandler", "_sigsegv", "faulthandler._sigsegv", sbx_deny, SBX_EXIT},
    {"faulthandler", "_sigabrt", "faulthandler._sigabrt", sbx_deny, SBX_EXIT},
    {"faulthandler", "_sigfpe", "faulthandler._sigfpe", sbx_deny, SBX_EXIT},
    {"faulthandler", "_fatal_error", "faulthandler._fatal_error", sbx_deny, SBX_EXIT},
    {"faulthandler", "_fatal_error_c_thread", "faulthandler._fatal_error_c_thread", sbx_deny,
     SBX_EXIT},
    {"faulthandler", "_read_null", "faulthandler._read_null", sbx_deny, SBX_EXIT},
    {"faulthandler", "_stack_overflow", "faulthandler._stack_overflow", sbx_deny, SBX_EXIT},
    {"posix", "setuid", "os.setuid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setgid", "os.setgid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "seteuid", "os.seteuid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setegid", "os.setegid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setreuid", "os.setreuid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setregid", "os.setregid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setresuid", "os.setresuid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setresgid", "os.setresgid", sbx_deny, SBX_CREDENTIALS},
    {"posix", "setgroups", "os.setgroups", sbx_deny, SBX_CREDENTIALS},
    {"posix", "initgroups", "os.initgroups", sbx_deny, SBX_CREDENTIALS},
    {"posix", "chroot", "os.chroot", sbx_deny, SBX_CREDENTIALS},
    {"posix", "open", "os.open", sbx_guard_open, SBX_MEMORY},
    {"sys", "setrecursionlimit", "sys.setrecursionlimit", sbx_guard_recursion_limit, SBX_LIMIT},
    {"_thread", "stack_size", "_thread.stack_size", sbx_guard_stack_size, SBX_LIMIT},
};

#define SBX_NPATCHES ((int)(sizeof(sbx_patches) / sizeof(sbx_patches[0])))

static PyObject *sbx_enter(int i, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames, PyObject *tuple, PyObject *kwargs)
{
    sbx_patch *patch = &sbx_patches[i];
    sbx_call call = {args, nargs, kwnames, tuple, kwargs, {NULL}, {NULL}, 0, NULL, NULL};
    PyObject *result = NULL;

    if (tuple != NULL) {
        call.args = ((PyTupleObject *)tuple)->ob_item;
        call.nargs = PyTuple_GET_SIZE(tuple);
    }
    switch (patch->guard(patch, self, &call, &result)) {
    case SBX_ALLOW:
        result = sbx_call_original(patch, self, &call);
        break;
    case SBX_DONE:
        break;
    default:
        result = NULL;
        break;
    }
    sbx_call_release(&call);
    return result;
}

/* Each patched def gets the wrapper of its calling convention from its own slot: a wrapper
 * receives only the module object, so the slot number is what tells it which def it is. */
#define SBX_WRAPPERS(i)                                                                      \
    static PyObject *sbx_w##i##_noargs(PyObject *self, PyObject *unused)                     \
    {                                                                                        \
        (void)unused;                                                                        \
        return sbx_enter(i, self, NULL, 0, NULL, NULL, NULL);                                \
    }                                                                                        \
    static PyObject *sbx_w##i##_o(PyObject *self, PyObject *arg)                             \
    {                                                                                        \
        return sbx_enter(i, self, &arg, 1, NULL, NULL, NULL);                                \
    }                                                                                        \
    static PyObject *sbx_w##i##_varargs(PyObject *self, PyObject *args, PyObject *kwargs)    \
    {                                                                                        \
        return sbx_enter(i, self, NULL, 0, NULL, args, kwargs);                              \
    }                                                                                        \
    static PyObject *sbx_w##i##_fast(PyObject *self, PyObject *const *args, Py_ssize_t n)    \
    {                                                                                        \
        return sbx_enter(i, self, args, n, NULL, NULL, NULL);                                \
    }                                                                                        \
    static PyObject *sbx_w##i##_fastkw(PyObject *self, PyObject *const *args, Py_ssize_t n,  \
                                       PyObject *kwnames)                                    \
    {                                                                                        \
        return sbx_enter(i, self, args, n, kwnames, NULL, NULL);                             \
    }

#define SBX_SLOTS(X)                                                                         \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)  \
        X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28)      \
        X(29) X(30) X(31) X(32) X(33) X(34) X(35) X(36) X(37) X(38)

SBX_SLOTS(SBX_WRAPPERS)

typedef struct {
    PyCFunction noargs;
    PyCFunction o;
    PyCFunctionWithKeywords varargs; /* also right for METH_VARARGS alone */
    sbx_fast_fn fast;
    sbx_fastkw_fn fastkw;
} sbx_wrapper_set;

#define SBX_WRAPPER_SET(i)                                                                   \
    {sbx_w##i##_noargs, sbx_w##i##_o, sbx_w##i##_varargs, sbx_w##i##_fast, sbx_w##i##_fastkw},

static const sbx_wrapper_set sbx_wrappers[] = {SBX_SLOTS(SBX_WRAPPER_SET)};

_Static_assert(sizeof(sbx_wrappers) / sizeof(sbx_wrappers[0]) == SBX_NPATCHES,
               "one slot of wrappers per entry of sbx_patches");

static PyCFunction sbx_wrapper_for(int i, int flags)
{
    const sbx_wrapper_set *set = &sbx_wrappers[i];

    switch (flags & SBX_CONVENTION) {
    case METH_NOARGS:
        return set->noargs;
    case METH_O:
        return set->o;
    case METH_VARARGS:
    case METH_VARARGS | METH_KEYWORDS:
        /* A METH_VARARGS function is called with two arguments; the wrapper reads the
         * third only when the original takes it, which is the CPython convention too. */
        return (PyCFunction)(void (*)(void))set->varargs;
    case METH_FASTCALL:
        return (PyCFunction)(void (*)(void))set->fast;
    case METH_FASTCALL | METH_KEYWORDS:
        return (PyCFunction)(void (*)(void))set->fastkw;
    default:
        return NULL;
    }
}

static int sbx_install_patch(int i)
{
    sbx_patch *patch = &sbx_patches[i];
    PyObject *module = NULL;
    PyObject *func = NULL;
    PyMethodDef *def = NULL;
    PyCFunction wrapper = NULL;
    int rc = -1;

    if (patch->def != NULL) {
        return 0; /* already installed */
    }
    module = PyImport_ImportModule(patch->module);
    if (module == NULL) {
        goto done;
    }
    func = PyObject_GetAttrString(module, patch->name);
    if (func == NULL) {
        /* Not in this build or version (faulthandler's test helpers come and go). */
        PyErr_Clear();
        rc = 0;
        goto done;
    }
    if (!PyCFunction_Check(func)) {
        PyErr_Format(PyExc_RuntimeError, "sandbox: %s.%s is not a builtin function",
                     patch->module, patch->name);
        goto done;
    }
    def = ((PyCFunctionObject *)func)->m_ml;
    wrapper = sbx_wrapper_for(i, def->ml_flags);
    if (wrapper == NULL) {
        PyErr_Format(PyExc_RuntimeError, "sandbox: %s.%s has unknown method flags %#x",
                     patch->module, patch->name, (unsigned)def->ml_flags);
        goto done;
    }
    patch->original = def->ml_meth;
    patch->flags = def->ml_flags;
    patch->def = def;
    def->ml_meth = wrapper;
    rc = 0;
done:
    Py_XDECREF(func);
    Py_XDECREF(module);
    return rc;
}


int sbx_install_wrappers(void)
{
    int i;

    for (i = 0; i < SBX_NPATCHES; i++) {
        if (sbx_install_patch(i) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Appends the name of every installed wrapper to `list`; 0, or -1 with an exception set. */
int sbx_list_wrapped(PyObject *list)
{
    PyObject *name = NULL;
    int i;

    for (i = 0; i < SBX_NPATCHES; i++) {
        if (sbx_patches[i].def == NULL) {
            continue;
        }
        name = PyUnicode_FromString(sbx_patches[i].op);
        if (name == NULL || PyList_Append(list, name) < 0) {
            Py_XDECREF(name);
            return -1;
        }
        Py_DECREF(name);
    }
    return 0;
}
