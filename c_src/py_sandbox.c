/* The sandbox (see py_sandbox.h for the three layers, docs/security.md for the policy).
 *
 * Every decision lives here, in C, where Python code cannot rebind, reload or re-import it:
 * - sbx_audit_hook: a PEP 578 hook added before initialisation. It applies to every
 *   interpreter of the process and CPython offers no way to remove it.
 * - sbx_patches: builtins that raise no audit event get a checking wrapper in the ml_meth of
 *   their PyMethodDef (flags unchanged). The defs are static tables of CPython, shared by
 *   every function object made from them, so `import posix`, importlib.reload and fresh
 *   sub-interpreters all reach the wrapper. Allowed calls go on to the saved original.
 * - sandbox_thread_init: a seccomp-bpf filter per Python thread for native code.
 * Thread safety: the state below is written once, before any user code runs (preinit,
 * postinit), and only read afterwards; sbx_seccomp_state is atomic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) &&                     \
    !defined(PY_SANDBOX_BENCH_BASELINE)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#define SBX_HAVE_SECCOMP 1
#endif

#include "py_sandbox.h"

#define SBX_OP_MAX 160

/* What a refusal says after "<op> is blocked in Erlang VM context.\n". */
enum sbx_kind {
    SBX_SPAWN,
    SBX_EXIT,
    SBX_SELF_SIGNAL,
    SBX_SIGNAL,
    SBX_FD,
    SBX_LIMIT,
    SBX_TAMPER,
};

static const char *const sbx_reason[] = {
    [SBX_SPAWN] = "fork()/exec() would corrupt the Erlang runtime.\n"
                  "Use Erlang ports (open_port/2) for subprocess management.",
    [SBX_EXIT] = "It would terminate the Erlang VM that hosts this interpreter.\n"
                 "Raise an exception instead; stop the VM from Erlang (init:stop/0).",
    [SBX_SELF_SIGNAL] = "Its target is the Erlang VM's own process, thread or process group.\n"
                        "Signal other processes only; stop the VM from Erlang (init:stop/0).",
    [SBX_SIGNAL] = "Signals, their handlers and the process timers belong to the Erlang VM.\n"
                   "Use threading.Timer or Erlang timers; handle signals in Erlang "
                   "(os:set_signal/2).",
    [SBX_FD] = "That file descriptor belongs to the Erlang VM (it was open before Python "
               "started).\n"
               "Close or replace only descriptors that your Python code opened.",
    [SBX_LIMIT] = "Resource limits apply to the whole Erlang VM; lowering one can kill it.\n"
                  "Set limits for the VM before it starts (ulimit, systemd), not from Python.",
    [SBX_TAMPER] = "It would remove the sandbox or finalise the interpreter under the VM.\n"
                   "The sandbox cannot be removed once installed.",
};

static int sbx_preinit_done;
static int sbx_hook_added;
static int sbx_patched;
static unsigned char *sbx_vm_fds; /* sbx_vm_fds[fd] is 1 for the VM's fds */
static int sbx_vm_fd_count;
static atomic_int sbx_seccomp_state;
static struct rlimit sbx_vm_limits[RLIM_NLIMITS]; /* as the VM had them at preinit */ /* 0: not tried, 1: installed, -1: unsupported */

/* ---- refusals ---------------------------------------------------------------------- */

static int sbx_refuse_with(PyObject *type, const char *op, enum sbx_kind kind)
{
    PyErr_Format(type, "%s is blocked in Erlang VM context.\n%s", op, sbx_reason[kind]);
    return -1;
}

static int sbx_refuse(const char *op, enum sbx_kind kind)
{
    return sbx_refuse_with(PyExc_RuntimeError, op, kind);
}

/* _erlang_sandbox.SignalBlockedError of the current interpreter: a RuntimeError that is
 * also a ValueError, the error CPython itself raises for signal.signal off the main thread,
 * so libraries that catch that keep working. Plain RuntimeError if it cannot be found. */
static int sbx_refuse_signal_handler(const char *op)
{
    PyObject *module = PyImport_ImportModule("_erlang_sandbox");
    PyObject *type = NULL;
    int rc;

    if (module != NULL) {
        type = PyObject_GetAttrString(module, "SignalBlockedError");
    }
    PyErr_Clear();
    if (type != NULL && PyExceptionClass_Check(type) &&
        PyObject_IsSubclass(type, PyExc_RuntimeError) == 1) {
        rc = sbx_refuse_with(type, op, SBX_SIGNAL);
    } else {
        PyErr_Clear();
        rc = sbx_refuse(op, SBX_SIGNAL);
    }
    Py_XDECREF(type);
    Py_XDECREF(module);
    return rc;
}

/* ---- facts about the VM ------------------------------------------------------------ */

static int sbx_is_vm_fd(long fd)
{
    return fd >= 0 && fd < sbx_vm_fd_count && sbx_vm_fds[fd];
}

static int sbx_record_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int max = -1;
    int own = -1;
    int fd;

    if (dir == NULL) {
        /* No /proc: probe the low fds instead. */
        sbx_vm_fds = calloc(1024, 1);
        if (sbx_vm_fds == NULL) {
            return -1;
        }
        sbx_vm_fd_count = 1024;
        for (fd = 0; fd < 1024; fd++) {
            sbx_vm_fds[fd] = fcntl(fd, F_GETFD) != -1;
        }
        return 0;
    }
    own = dirfd(dir);
    while ((entry = readdir(dir)) != NULL) {
        fd = atoi(entry->d_name);
        if (entry->d_name[0] != '.' && fd != own && fd > max) {
            max = fd;
        }
    }
    sbx_vm_fd_count = max + 1;
    sbx_vm_fds = calloc(sbx_vm_fd_count > 0 ? sbx_vm_fd_count : 1, 1);
    if (sbx_vm_fds == NULL) {
        closedir(dir);
        return -1;
    }
    rewinddir(dir);
    while ((entry = readdir(dir)) != NULL) {
        fd = atoi(entry->d_name);
        if (entry->d_name[0] != '.' && fd != own && fd < sbx_vm_fd_count) {
            sbx_vm_fds[fd] = 1;
        }
    }
    closedir(dir);
    return 0;
}

/* Whether a kill(2) target includes this process: itself, its group, every process, or one
 * of its threads (kill() of a thread id signals the whole process). */
static int sbx_pid_is_vm(long pid)
{
    char path[64];

    if (pid == 0 || pid == -1 || pid == (long)getpid() || pid == -(long)getpgrp()) {
        return 1;
    }
    if (pid > 0) {
        snprintf(path, sizeof(path), "/proc/self/task/%ld", pid);
        return access(path, F_OK) == 0;
    }
    return 0;
}

/* An int argument, or `fallback` if it is not one (the original then raises TypeError). */
static long sbx_as_long(PyObject *obj, long fallback)
{
    long value;

    if (obj == NULL || !PyLong_Check(obj)) {
        return fallback;
    }
    value = PyLong_AsLong(obj);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return fallback;
    }
    return value;
}

/* ---- the audit hook ---------------------------------------------------------------- */

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
        target = sbx_as_long(sbx_event_arg(args, 0), 1);
        sig = sbx_as_long(sbx_event_arg(args, 1), 0);
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

/* -1 when a limit of `limits` (a (soft, hard) pair) is below the one the VM had when
 * Python started: raising a limit, and setting it back afterwards, stay allowed. */
static int sbx_lowers_limit(PyObject *resource, PyObject *limits)
{
    long which = sbx_as_long(resource, -1);
    unsigned long long wanted;
    rlim_t initial;
    int i;

    if (which < 0 || which >= RLIM_NLIMITS || limits == NULL || !PyTuple_Check(limits) ||
        PyTuple_GET_SIZE(limits) != 2) {
        return 0; /* the original rejects it */
    }
    for (i = 0; i < 2; i++) {
        PyObject *item = PyTuple_GET_ITEM(limits, i);
        if (!PyLong_Check(item)) {
            return 0;
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

static int sbx_audit_hook(const char *event, PyObject *args, void *data)
{
    PyObject *pid = NULL;
    (void)data;

    /* Called for every audited operation of every interpreter: reject most at once. */
    switch (event[0]) {
    case 'o':
        if (event[1] == 's' && event[2] == '.') {
            return sbx_audit_os(event + 3, args);
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

/* ---- checking wrappers in builtin method tables ------------------------------------ */

typedef PyObject *(*sbx_fast_fn)(PyObject *, PyObject *const *, Py_ssize_t);
typedef PyObject *(*sbx_fastkw_fn)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);

#define SBX_CONVENTION (METH_VARARGS | METH_KEYWORDS | METH_NOARGS | METH_O | METH_FASTCALL)

/* One call as the wrapper received it, whatever the calling convention. */
typedef struct {
    PyObject *const *args; /* positional, then (FASTCALL) the keyword values */
    Py_ssize_t nargs;
    PyObject *kwnames; /* FASTCALL|KEYWORDS */
    PyObject *tuple;   /* VARARGS */
    PyObject *kwargs;  /* VARARGS|KEYWORDS */
} sbx_call;

struct sbx_patch;

enum sbx_verdict { SBX_ALLOW, SBX_DENIED, SBX_DONE };

/* Decides a call: SBX_ALLOW runs the original, SBX_DENIED has set an exception, SBX_DONE
 * has put the call's result in *result. */
typedef enum sbx_verdict (*sbx_guard)(struct sbx_patch *patch, PyObject *self,
                                      const sbx_call *call, PyObject **result);

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
    sbx_call call = {args, nargs, NULL, NULL, NULL};
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

static enum sbx_verdict sbx_deny(sbx_patch *patch, PyObject *self, const sbx_call *call,
                                 PyObject **result)
{
    sbx_refuse(patch->op, patch->kind);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_deny_signal_handler(sbx_patch *patch, PyObject *self,
                                                const sbx_call *call, PyObject **result)
{
    sbx_refuse_signal_handler(patch->op);
    return SBX_DENIED;
}

/* faulthandler.enable would put its handlers over the VM's SIGSEGV, SIGABRT... ones. */
static enum sbx_verdict sbx_noop(sbx_patch *patch, PyObject *self, const sbx_call *call,
                                 PyObject **result)
{
    Py_INCREF(Py_None);
    *result = Py_None;
    return SBX_DONE;
}

static enum sbx_verdict sbx_guard_close(sbx_patch *patch, PyObject *self,
                                        const sbx_call *call, PyObject **result)
{
    char op[SBX_OP_MAX];
    long fd = sbx_as_long(sbx_arg(call, 0, "fd"), -1);

    if (!sbx_is_vm_fd(fd)) {
        return SBX_ALLOW;
    }
    snprintf(op, sizeof(op), "os.close(%ld)", fd);
    sbx_refuse(op, SBX_FD);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_guard_dup2(sbx_patch *patch, PyObject *self,
                                       const sbx_call *call, PyObject **result)
{
    char op[SBX_OP_MAX];
    long fd2 = sbx_as_long(sbx_arg(call, 1, "fd2"), -1);

    if (!sbx_is_vm_fd(fd2)) {
        return SBX_ALLOW;
    }
    snprintf(op, sizeof(op), "os.dup2 onto fd %ld", fd2);
    sbx_refuse(op, SBX_FD);
    return SBX_DENIED;
}

/* os.closerange is made harmless: it closes the fds of the range that are not the VM's. */
static enum sbx_verdict sbx_guard_closerange(sbx_patch *patch, PyObject *self,
                                             const sbx_call *call, PyObject **result)
{
    PyObject *bounds[2] = {NULL, NULL};
    PyObject *done = NULL;
    long low = sbx_as_long(sbx_arg(call, 0, "fd_low"), -1);
    long high = sbx_as_long(sbx_arg(call, 1, "fd_high"), -1);
    long start;
    long fd;
    int spared = 0;

    if (call->nargs != 2 || low < 0 || high <= low || high > INT_MAX) {
        return SBX_ALLOW; /* invalid, empty or too large: the original decides */
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
                                               const sbx_call *call, PyObject **result)
{
    if (sbx_as_long(sbx_arg(call, 1, "signalnum"), 0) == 0) {
        return SBX_ALLOW;
    }
    sbx_refuse(patch->op, SBX_SELF_SIGNAL);
    return SBX_DENIED;
}

static enum sbx_verdict sbx_guard_dump_later(sbx_patch *patch, PyObject *self,
                                             const sbx_call *call, PyObject **result)
{
    PyObject *exit_flag = sbx_arg(call, 3, "exit");
    int truth = exit_flag != NULL ? PyObject_IsTrue(exit_flag) : 0;

    if (truth < 0) {
        return SBX_DENIED;
    }
    if (!truth) {
        return SBX_ALLOW;
    }
    sbx_refuse("faulthandler.dump_traceback_later(exit=True)", SBX_EXIT);
    return SBX_DENIED;
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
};

#define SBX_NPATCHES ((int)(sizeof(sbx_patches) / sizeof(sbx_patches[0])))

static PyObject *sbx_enter(int i, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames, PyObject *tuple, PyObject *kwargs)
{
    sbx_patch *patch = &sbx_patches[i];
    sbx_call call = {args, nargs, kwnames, tuple, kwargs};
    PyObject *result = NULL;

    if (tuple != NULL) {
        call.args = ((PyTupleObject *)tuple)->ob_item;
        call.nargs = PyTuple_GET_SIZE(tuple);
    }
    switch (patch->guard(patch, self, &call, &result)) {
    case SBX_ALLOW:
        return sbx_call_original(patch, self, &call);
    case SBX_DONE:
        return result;
    default:
        return NULL;
    }
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
        X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24)

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

/* ---- the seccomp layer ------------------------------------------------------------- */

#ifdef SBX_HAVE_SECCOMP
#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#else
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif

#define SBX_LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
#define SBX_RETURN(value) BPF_STMT(BPF_RET | BPF_K, (value))
#define SBX_IF_NR(nr, action) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), SBX_RETURN(action)
#define SBX_EPERM (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define SBX_ENOSYS (SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA))

static int sbx_install_seccomp(void)
{
    /* clone's flags are its first argument on x86-64 and arm64; the low 32 bits hold
     * CLONE_THREAD. clone3 passes them in memory a filter cannot read: ENOSYS makes glibc
     * fall back to clone for threads. */
    struct sock_filter filter[] = {
        SBX_LOAD(arch),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0),
        SBX_RETURN(SBX_EPERM),
        SBX_LOAD(nr),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1), /* x32 ABI */
        SBX_RETURN(SBX_EPERM),
        SBX_IF_NR(__NR_fork, SBX_EPERM),
        SBX_IF_NR(__NR_vfork, SBX_EPERM),
#endif
        SBX_IF_NR(__NR_execve, SBX_EPERM),
        SBX_IF_NR(__NR_execveat, SBX_EPERM),
        SBX_IF_NR(__NR_clone3, SBX_ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
        SBX_LOAD(args[0]),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
        SBX_RETURN(SBX_EPERM),
        SBX_RETURN(SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {
        (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        filter,
    };

    if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2) {
        return 0; /* inherited from the thread that started this one */
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        return -1;
    }
    /* SPEC_ALLOW: without it the kernel may also turn on Spectre mitigations for the
     * thread (IBPB on every switch to it, STIBP), which made each py:call ~20% slower here
     * for no gain: the filter is there to stop process creation, not speculation. Kernels
     * before 4.17 do not know the flag. */
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                &program) == 0) {
        return 0;
    }
    if (errno != EINVAL) {
        return -1;
    }
    return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
}
#endif

int sandbox_thread_init(void)
{
#ifdef SBX_HAVE_SECCOMP
    if (sbx_install_seccomp() == 0) {
        atomic_store(&sbx_seccomp_state, 1);
        return 0;
    }
    if (errno == EINVAL || errno == ENOSYS || errno == EACCES) {
        atomic_store(&sbx_seccomp_state, -1);
        return 0;
    }
    return -1;
#else
    atomic_store(&sbx_seccomp_state, -1);
    return 0;
#endif
}

/* ---- the _erlang_sandbox module ---------------------------------------------------- */

static PyObject *sbx_is_sandboxed(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(sbx_hook_added && sbx_patched);
}

static PyObject *sbx_thread_filtered(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2);
}

static PyObject *sbx_status(PyObject *module, PyObject *unused)
{
    PyObject *status = NULL;
    PyObject *wrapped = NULL;
    PyObject *fds = NULL;
    PyObject *item = NULL;
    int state = atomic_load(&sbx_seccomp_state);
    int i;

    wrapped = PyList_New(0);
    fds = PyList_New(0);
    if (wrapped == NULL || fds == NULL) {
        goto done;
    }
    for (i = 0; i < SBX_NPATCHES; i++) {
        if (sbx_patches[i].def == NULL) {
            continue;
        }
        item = PyUnicode_FromString(sbx_patches[i].op);
        if (item == NULL || PyList_Append(wrapped, item) < 0) {
            goto done;
        }
        Py_CLEAR(item);
    }
    for (i = 0; i < sbx_vm_fd_count; i++) {
        if (!sbx_vm_fds[i]) {
            continue;
        }
        item = PyLong_FromLong(i);
        if (item == NULL || PyList_Append(fds, item) < 0) {
            goto done;
        }
        Py_CLEAR(item);
    }
    status = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O}", "audit_hook",
                           sbx_hook_added ? Py_True : Py_False, "wrapped", wrapped, "vm_fds",
                           fds, "seccomp_available",
                           state == 1 ? Py_True : (state == -1 ? Py_False : Py_None),
                           "seccomp_thread",
                           prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2 ? Py_True : Py_False,
                           "installed", sbx_hook_added && sbx_patched ? Py_True : Py_False);
done:
    Py_XDECREF(item);
    Py_XDECREF(wrapped);
    Py_XDECREF(fds);
    return status;
}

static PyMethodDef sbx_methods[] = {
    {"is_sandboxed", sbx_is_sandboxed, METH_NOARGS,
     "True when the C audit hook and the checking wrappers are installed."},
    {"thread_filtered", sbx_thread_filtered, METH_NOARGS,
     "True when the calling thread runs under the sandbox's seccomp filter."},
    {"status", sbx_status, METH_NOARGS,
     "A dict describing each layer of the sandbox, for diagnostics."},
    {NULL, NULL, 0, NULL},
};

static int sbx_module_exec(PyObject *module)
{
    PyObject *bases = NULL;
    PyObject *error = NULL;
    int rc = -1;

    bases = PyTuple_Pack(2, PyExc_RuntimeError, PyExc_ValueError);
    if (bases == NULL) {
        goto done;
    }
    error = PyErr_NewExceptionWithDoc(
        "_erlang_sandbox.SignalBlockedError",
        "Refusal of a signal-handler change. A RuntimeError like every refusal of the sandbox,"
        " and a ValueError like CPython's own refusal of signal.signal off the main thread.",
        bases, NULL);
    if (error == NULL) {
        goto done;
    }
    if (PyModule_AddObject(module, "SignalBlockedError", error) < 0) {
        goto done;
    }
    error = NULL;
    rc = 0;
done:
    Py_XDECREF(error);
    Py_XDECREF(bases);
    return rc;
}

/* No Python state is shared between interpreters: the C state is read-only once user code
 * runs, so isolated sub-interpreters (3.12+) may import the module too. */
static PyModuleDef_Slot sbx_slots[] = {
    {Py_mod_exec, (void *)sbx_module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef sbx_module = {
    PyModuleDef_HEAD_INIT,
    "_erlang_sandbox",
    "C side of the erlang_python sandbox; see _erlang_impl._sandbox.",
    0,
    sbx_methods,
    sbx_slots,
    NULL,
    NULL,
    NULL,
};

static PyObject *sbx_module_init(void)
{
    return PyModuleDef_Init(&sbx_module);
}

/* ---- entry points ------------------------------------------------------------------ */

/* PY_SANDBOX_BENCH_BASELINE builds a NIF without the sandbox (only `_erlang_sandbox`, whose
 * is_sandboxed() is then False), for bench/sandbox.escript to measure what the sandbox
 * costs. It is a compile-time choice made in a copy of the tree; no shipped build has it,
 * and nothing at run time can select it. */
#ifdef PY_SANDBOX_BENCH_BASELINE
#define SBX_BASELINE 1
#else
#define SBX_BASELINE 0
#endif

int sandbox_preinit(void)
{
    if (sbx_preinit_done) {
        return 0;
    }
    if (SBX_BASELINE) {
        sbx_preinit_done = 1;
        return PyImport_AppendInittab("_erlang_sandbox", sbx_module_init) < 0 ? -1 : 0;
    }
    if (sbx_record_fds() < 0) {
        return -1;
    }
    for (int which = 0; which < RLIM_NLIMITS; which++) {
        if (getrlimit(which, &sbx_vm_limits[which]) != 0) {
            sbx_vm_limits[which].rlim_cur = 0;
            sbx_vm_limits[which].rlim_max = 0;
        }
    }
    if (PyImport_AppendInittab("_erlang_sandbox", sbx_module_init) < 0) {
        return -1;
    }
    if (PySys_AddAuditHook(sbx_audit_hook, NULL) < 0) {
        return -1;
    }
    sbx_hook_added = 1;
    sbx_preinit_done = 1;
    return 0;
}

/* Python's -X faulthandler / PYTHONFAULTHANDLER put handlers over the VM's at
 * initialisation; disable() restores the previous ones. */
static int sbx_undo_faulthandler(void)
{
    PyObject *module = PyImport_ImportModule("faulthandler");
    PyObject *enabled = NULL;
    PyObject *done = NULL;
    int rc = -1;

    if (module == NULL) {
        goto out;
    }
    enabled = PyObject_CallMethod(module, "is_enabled", NULL);
    if (enabled == NULL) {
        goto out;
    }
    if (enabled == Py_True) {
        done = PyObject_CallMethod(module, "disable", NULL);
        if (done == NULL) {
            goto out;
        }
    }
    rc = 0;
out:
    Py_XDECREF(done);
    Py_XDECREF(enabled);
    Py_XDECREF(module);
    return rc;
}

int sandbox_postinit(void)
{
    PyObject *face = NULL;
    int i;

    if (SBX_BASELINE) {
        return 0;
    }
    if (!sbx_hook_added) {
        PyErr_SetString(PyExc_RuntimeError,
                        "sandbox: sandbox_preinit() did not run before initialisation");
        return -1;
    }
    for (i = 0; i < SBX_NPATCHES; i++) {
        if (sbx_install_patch(i) < 0) {
            return -1;
        }
    }
    if (sbx_undo_faulthandler() < 0) {
        return -1;
    }
    sbx_patched = 1;
    face = PyImport_ImportModule("_erlang_impl._sandbox");
    if (face == NULL) {
        return -1;
    }
    Py_DECREF(face);
    return 0;
}
