/* The sandbox's audit hook (PEP 578), added by sandbox_preinit() before initialisation: it
 * covers every interpreter of the process and cannot be removed. docs/security.md lists what
 * it refuses. It runs for every audited operation, so it rejects unrelated events at once. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "py_sandbox_int.h"

/* Whether a kill(2) target includes this process: itself, its group, every process, or one
 * of its threads (kill() of a thread id signals the whole process). */
static int sbx_pid_is_vm(long pid)
{
    return pid == 0 || pid == -1 || pid == -(long)getpgrp() ||
           (pid > 0 && sbx_is_own_proc_id(pid));
}

static const char *const sbx_exec_names[] = {
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", NULL,
};
static const char *const sbx_spawn_names[] = {
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    NULL,
};
static const char *const sbx_popen_names[] = {"popen", NULL};

/* One frame of the walk in sbx_os_caller: 1 to go on outwards, 0 to stop. */
static int sbx_frame_step(PyCodeObject *code, const char *const *names, const char **found)
{
    PyObject *filename = PyObject_GetAttrString((PyObject *)code, "co_filename");
    PyObject *name = NULL;
    const char *path = NULL;
    const char *base = NULL;
    const char *func = NULL;
    int go_on = 0;
    int i;

    if (filename == NULL || !PyUnicode_Check(filename)) {
        goto done;
    }
    path = PyUnicode_AsUTF8(filename);
    if (path == NULL) {
        goto done;
    }
    /* os is frozen since 3.11: its frames say "<frozen os>" */
    base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    if (strcmp(base, "subprocess.py") == 0 || strcmp(path, "<frozen subprocess>") == 0) {
        go_on = 1;
        goto done;
    }
    if (strcmp(base, "os.py") != 0 && strcmp(path, "<frozen os>") != 0) {
        goto done;
    }
    go_on = 1;
    name = PyObject_GetAttrString((PyObject *)code, "co_name");
    if (name == NULL || !PyUnicode_Check(name) || (func = PyUnicode_AsUTF8(name)) == NULL) {
        goto done;
    }
    for (i = 0; names[i] != NULL; i++) {
        if (strcmp(func, names[i]) == 0) {
            *found = names[i];
        }
    }
done:
    Py_XDECREF(filename);
    Py_XDECREF(name);
    PyErr_Clear();
    return go_on;
}

/* The public os function through which the current event was reached (os.execlp reaches the
 * os.exec event through execvp and _execvpe; os.spawnl reaches os.fork): the outermost of
 * the consecutive os.py frames at the top of the stack whose name is in `names`, with
 * subprocess.py frames skipped (os.popen reaches subprocess.Popen). Only names the report;
 * the decision to refuse does not depend on it. */
static const char *sbx_os_caller(const char *const *names)
{
    PyFrameObject *frame = PyEval_GetFrame();
    PyFrameObject *back = NULL;
    PyCodeObject *code = NULL;
    const char *found = NULL;
    int go_on;

    Py_XINCREF(frame);
    while (frame != NULL) {
        code = PyFrame_GetCode(frame);
        go_on = sbx_frame_step(code, names, &found);
        Py_DECREF(code);
        back = go_on ? PyFrame_GetBack(frame) : NULL;
        Py_DECREF(frame);
        frame = back;
    }
    return found;
}

static int sbx_refuse_os(const char *fallback, const char *const *names)
{
    char op[SBX_OP_MAX];
    const char *caller = names != NULL ? sbx_os_caller(names) : NULL;

    if (caller == NULL) {
        return sbx_refuse(fallback, SBX_SPAWN);
    }
    snprintf(op, sizeof(op), "os.%s", caller);
    return sbx_refuse(op, SBX_SPAWN);
}

static PyObject *sbx_event_arg(PyObject *args, Py_ssize_t i)
{
    if (args == NULL || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) <= i) {
        return NULL;
    }
    return PyTuple_GET_ITEM(args, i);
}

static int sbx_audit_os(const char *what, PyObject *args)
{
    PyObject *env = NULL;
    long target;
    long sig;

    if (strcmp(what, "fork") == 0) {
        return sbx_refuse_os("os.fork", sbx_spawn_names);
    }
    if (strcmp(what, "forkpty") == 0) {
        return sbx_refuse_os("os.forkpty", NULL);
    }
    if (strcmp(what, "system") == 0) {
        return sbx_refuse_os("os.system", NULL);
    }
    if (strcmp(what, "exec") == 0) {
        /* os.execv audits (path, argv, None); os.execve passes its env. */
        env = sbx_event_arg(args, 2);
        return sbx_refuse_os(env == NULL || env == Py_None ? "os.execv" : "os.execve",
                             sbx_exec_names);
    }
    if (strcmp(what, "posix_spawn") == 0) {
        return sbx_refuse_os("os.posix_spawn", NULL);
    }
    if (strcmp(what, "spawn") == 0) {
        return sbx_refuse_os("os.spawnv", sbx_spawn_names);
    }
    if (strcmp(what, "kill") == 0 || strcmp(what, "killpg") == 0) {
        /* CPython converted both to C ints before the event: these are exact ints */
        target = sbx_as_long(sbx_event_arg(args, 0), 1);
        sig = sbx_as_long(sbx_event_arg(args, 1), -1);
        if (sig == 0) {
            return 0;
        }
        if (what[4] == 'p') {
            if (target == 0 || target == (long)getpgrp()) {
                return sbx_refuse("os.killpg", SBX_SELF_SIGNAL);
            }
        } else if (sbx_pid_is_vm(target)) {
            return sbx_refuse("os.kill", SBX_SELF_SIGNAL);
        }
    }
    return 0;
}

/* The C names that ctypes may not look up: after leading underscores and a `libc_` prefix
 * are dropped (so __libc_fork, _exit and __execve are caught too). */
static const struct {
    const char *name;
    enum sbx_kind kind;
} sbx_symbols[] = {
    {"fork", SBX_SPAWN},
    {"vfork", SBX_SPAWN},
    {"Fork", SBX_SPAWN},
    {"clone", SBX_SPAWN},
    {"clone2", SBX_SPAWN},
    {"clone3", SBX_SPAWN},
    {"execve", SBX_SPAWN},
    {"execv", SBX_SPAWN},
    {"execvp", SBX_SPAWN},
    {"execvpe", SBX_SPAWN},
    {"execl", SBX_SPAWN},
    {"execlp", SBX_SPAWN},
    {"execle", SBX_SPAWN},
    {"fexecve", SBX_SPAWN},
    {"execveat", SBX_SPAWN},
    {"system", SBX_SPAWN},
    {"popen", SBX_SPAWN},
    {"posix_spawn", SBX_SPAWN},
    {"posix_spawnp", SBX_SPAWN},
    {"forkpty", SBX_SPAWN},
    {"daemon", SBX_SPAWN},
    {"syscall", SBX_SPAWN},
    {"exit", SBX_EXIT},
    {"Exit", SBX_EXIT},
    {"exit_group", SBX_EXIT},
    {"quick_exit", SBX_EXIT},
    {"abort", SBX_EXIT},
    {"kill", SBX_SELF_SIGNAL},
    {"killpg", SBX_SELF_SIGNAL},
    {"raise", SBX_SELF_SIGNAL},
    {"tgkill", SBX_SELF_SIGNAL},
    {"tkill", SBX_SELF_SIGNAL},
    {"pthread_kill", SBX_SELF_SIGNAL},
    {"sigqueue", SBX_SELF_SIGNAL},
    {"alarm", SBX_SIGNAL},
    {"ualarm", SBX_SIGNAL},
    {"setitimer", SBX_SIGNAL},
    {"signal", SBX_SIGNAL},
    {"sigaction", SBX_SIGNAL},
    {"sysv_signal", SBX_SIGNAL},
    {"bsd_signal", SBX_SIGNAL},
    {"sigset", SBX_SIGNAL},
    {"PyOS_setsig", SBX_SIGNAL},
    {"close", SBX_FD},
    {"close_range", SBX_FD},
    {"closefrom", SBX_FD},
    {"dup2", SBX_FD},
    {"dup3", SBX_FD},
    {"Py_Exit", SBX_EXIT},
    {"Py_FatalError", SBX_EXIT},
    {"Py_Finalize", SBX_TAMPER},
    {"Py_FinalizeEx", SBX_TAMPER},
    {"Py_EndInterpreter", SBX_TAMPER},
    {"PySys_ClearAuditHooks", SBX_TAMPER},
};

static int sbx_audit_dlsym(PyObject *args)
{
    PyObject *name = sbx_event_arg(args, 1);
    const char *symbol = NULL;
    const char *bare = NULL;
    char op[SBX_OP_MAX];
    size_t i;

    if (name == NULL || !PyUnicode_Check(name)) {
        return 0;
    }
    symbol = PyUnicode_AsUTF8(name);
    if (symbol == NULL) {
        PyErr_Clear();
        return 0;
    }
    bare = symbol;
    while (*bare == '_') {
        bare++;
    }
    if (strncmp(bare, "libc_", 5) == 0) {
        bare += 5;
    }
    while (*bare == '_') {
        bare++;
    }
    for (i = 0; i < sizeof(sbx_symbols) / sizeof(sbx_symbols[0]); i++) {
        if (strcmp(bare, sbx_symbols[i].name) == 0) {
            snprintf(op, sizeof(op), "ctypes access to %.100s()", symbol);
            return sbx_refuse(op, sbx_symbols[i].kind);
        }
    }
    return 0;
}

/* -1 when `limits`, a (soft, hard) pair, sets a limit below the one the VM had when Python
 * started: raising a limit, and setting it back afterwards, stay allowed. The audit event
 * carries the caller's object, which the original converts after the hook: only an exact
 * tuple or list of exact ints converts without running Python code that could answer
 * differently the second time, so anything else counts as lowering. */
static int sbx_lowers_limit(PyObject *resource, PyObject *limits)
{
    long which = sbx_as_long(resource, -1);
    PyObject *item = NULL;
    unsigned long long wanted;
    rlim_t initial;
    int i;

    if (which < 0 || which >= RLIM_NLIMITS || limits == NULL) {
        return 0; /* the original rejects it */
    }
    if (!PyTuple_CheckExact(limits) && !PyList_CheckExact(limits)) {
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(limits) != 2) {
        return 0; /* the original rejects it */
    }
    for (i = 0; i < 2; i++) {
        item = PySequence_Fast_GET_ITEM(limits, i);
        if (!PyLong_CheckExact(item)) {
            return -1;
        }
        wanted = PyLong_AsUnsignedLongLongMask(item);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        initial = i == 0 ? sbx_vm_limits[which].rlim_cur : sbx_vm_limits[which].rlim_max;
        if ((rlim_t)wanted != RLIM_INFINITY &&
            (initial == RLIM_INFINITY || (rlim_t)wanted < initial)) {
            return -1;
        }
    }
    return 0;
}

/* open(path, mode, flags): opening this process's memory for writing is refused (paths
 * relative to a dir_fd are checked by os.open's wrapper, which sees the dir_fd). */
static int sbx_audit_open(PyObject *args)
{
    return sbx_refuse_own_memory_write(AT_FDCWD, sbx_event_arg(args, 0),
                                       sbx_as_long(sbx_event_arg(args, 2), 0));
}

int sbx_audit_hook(const char *event, PyObject *args, void *data)
{
    PyObject *pid = NULL;
    (void)data;

    /* Once the kernel layer is armed, each Python thread filters itself here, at its next
     * audited operation: a thread-local load when it already is. */
    sbx_filter_thread_if_armed();
    /* Called for every audited operation of every interpreter: reject most at once. */
    switch (event[0]) {
    case 'o':
        if (event[1] == 's' && event[2] == '.') {
            return sbx_audit_os(event + 3, args);
        }
        if (event[1] == 'p' && strcmp(event, "open") == 0) {
            return sbx_audit_open(args);
        }
        return 0;
    case 's':
        if (strcmp(event, "subprocess.Popen") == 0) {
            return sbx_refuse_os("subprocess.Popen", sbx_popen_names);
        }
        if (strcmp(event, "signal.pthread_kill") == 0 &&
            sbx_as_long(sbx_event_arg(args, 1), 0) != 0) {
            return sbx_refuse("signal.pthread_kill", SBX_SELF_SIGNAL);
        }
        return 0;
    case 'c':
        if (strncmp(event, "ctypes.dlsym", 12) == 0) {
            return sbx_audit_dlsym(args);
        }
        /* _ctypes.call_function, the one foreign call with an audit event (the others
         * arm the layer through the call slot of CFuncPtr, py_sandbox_wrap.c). */
        if (strcmp(event, "ctypes.call_function") == 0) {
            sbx_arm_kernel_layer();
            return 0;
        }
        /* A library loaded by name is native code that can reach libc without asking
         * Python (ctypes' own dlopen(NULL) at import is not one). */
        if (strcmp(event, "ctypes.dlopen") == 0) {
            PyObject *name = sbx_event_arg(args, 0);
            if (name != NULL && name != Py_None) {
                sbx_arm_kernel_layer();
            }
        }
        return 0;
    case 'i':
        /* cffi calls C without audit events; Tcl (tkinter) has its own `exec`. */
        if (strcmp(event, "import") == 0) {
            PyObject *name = sbx_event_arg(args, 0);
            if (name != NULL && PyUnicode_Check(name) &&
                (PyUnicode_CompareWithASCIIString(name, "_cffi_backend") == 0 ||
                 PyUnicode_CompareWithASCIIString(name, "_tkinter") == 0)) {
                sbx_arm_kernel_layer();
            }
        }
        return 0;
    case 'r':
        if (strcmp(event, "resource.setrlimit") == 0 &&
            sbx_lowers_limit(sbx_event_arg(args, 0), sbx_event_arg(args, 1)) < 0) {
            return sbx_refuse("resource.setrlimit", SBX_LIMIT);
        }
        if (strcmp(event, "resource.prlimit") == 0) {
            pid = sbx_event_arg(args, 0);
            if ((sbx_as_long(pid, 1) == 0 || sbx_as_long(pid, 0) == (long)getpid()) &&
                sbx_lowers_limit(sbx_event_arg(args, 1), sbx_event_arg(args, 2)) < 0) {
                return sbx_refuse("resource.prlimit", SBX_LIMIT);
            }
        }
        return 0;
    default:
        return 0;
    }
}

