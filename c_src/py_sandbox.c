/* The sandbox: entry points, the facts recorded about the VM, refusals, the seccomp layer and
 * the `_erlang_sandbox` module. py_sandbox.h describes the three layers, docs/security.md the
 * policy; the audit hook is in py_sandbox_hook.c, the checking wrappers in py_sandbox_wrap.c.
 * Every decision lives in C, where Python code cannot rebind, reload or re-import it.
 * Thread safety: the state is written once, before any user code runs (preinit, postinit),
 * and only read afterwards; sbx_seccomp_state is atomic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
#include "py_sandbox_int.h"

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
    [SBX_CREDENTIALS] = "Credentials and the root directory belong to the whole Erlang VM; "
                        "changing them can cut it off from its files, ports and sockets.\n"
                        "Start the VM as the user it must run as; run commands as another "
                        "user through Erlang ports.",
    [SBX_MEMORY] = "It is the Erlang VM's own memory; writing it bypasses every other check.\n"
                   "Exchange data with Erlang through calls and messages.",
};

/* PY_SANDBOX_BENCH_BASELINE builds a NIF without the sandbox (only `_erlang_sandbox`, whose
 * is_sandboxed() is then False), for bench/sandbox.escript to measure what the sandbox
 * costs. It is a compile-time choice made in a copy of the tree; no shipped build has it,
 * and nothing at run time can select it. */
#ifdef PY_SANDBOX_BENCH_BASELINE
#define SBX_BASELINE 1
#else
#define SBX_BASELINE 0
#endif

static int sbx_preinit_done;
static int sbx_hook_added;
static int sbx_patched;
unsigned char *sbx_vm_fds;
int sbx_vm_fd_count;
struct rlimit sbx_vm_limits[RLIM_NLIMITS];
static atomic_int sbx_seccomp_state; /* 0: not tried, 1: installed, -1: unsupported */

/* ---- refusals ---------------------------------------------------------------------- */

static int sbx_refuse_with(PyObject *type, const char *op, enum sbx_kind kind)
{
    PyErr_Format(type, "%s is blocked in Erlang VM context.\n%s", op, sbx_reason[kind]);
    return -1;
}

int sbx_refuse(const char *op, enum sbx_kind kind)
{
    return sbx_refuse_with(PyExc_RuntimeError, op, kind);
}

/* _erlang_sandbox.SignalBlockedError of the current interpreter: a RuntimeError that is
 * also a ValueError, the error CPython itself raises for signal.signal off the main thread,
 * so libraries that catch that keep working. Plain RuntimeError if it cannot be found. */
int sbx_refuse_signal_handler(const char *op)
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

int sbx_is_own_proc_id(long id)
{
    char path[64];

    if (id == (long)getpid()) {
        return 1;
    }
    snprintf(path, sizeof(path), "/proc/self/task/%ld", id);
    return access(path, F_OK) == 0;
}

/* 1 if `path' (resolved as open(2) would, relative to dir_fd unless it is AT_FDCWD) names
 * the memory of this process. */
static int sbx_is_own_memory(int dir_fd, const char *path)
{
    char joined[PATH_MAX + 64];
    char resolved[PATH_MAX];
    const char *target = path;
    long id = 0, task = 0;
    int used = 0;

    if (path[0] != '/' && dir_fd != AT_FDCWD) {
        snprintf(joined, sizeof(joined), "/proc/self/fd/%d/%s", dir_fd, path);
        target = joined;
    }
    /* /proc/self, /proc/thread-self, /proc/self/fd/N and symlinks all resolve to the one
     * canonical name. A file that does not exist yet is no alias of anything. */
    if (realpath(target, resolved) == NULL) {
        return 0;
    }
    if (sscanf(resolved, "/proc/%ld/mem%n", &id, &used) == 1 && resolved[used] == '\0') {
        return sbx_is_own_proc_id(id);
    }
    used = 0;
    if (sscanf(resolved, "/proc/%ld/task/%ld/mem%n", &id, &task, &used) == 2 &&
        resolved[used] == '\0') {
        return sbx_is_own_proc_id(id);
    }
    return 0;
}

int sbx_refuse_own_memory_write(int dir_fd, PyObject *path, long flags)
{
    PyObject *bytes = NULL;
    int own;

    if ((flags & O_ACCMODE) == O_RDONLY || path == NULL || PyLong_Check(path)) {
        return 0;
    }
    if (!PyUnicode_FSConverter(path, &bytes)) {
        PyErr_Clear(); /* not a path: open itself refuses it */
        return 0;
    }
    own = sbx_is_own_memory(dir_fd, PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    return own ? sbx_refuse("writing /proc/self/mem", SBX_MEMORY) : 0;
}

int sbx_is_vm_fd(long fd)
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

/* An int argument, or `fallback` if it is not one (the original then raises TypeError). */
long sbx_as_long(PyObject *obj, long fallback)
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
        /* The VM's memory, from native code. (Not the credential calls: glibc's setuid
         * makes every thread of the process repeat the call and aborts the process when
         * one of them fails, as a filtered thread would.) */
        SBX_IF_NR(__NR_process_vm_writev, SBX_EPERM),
        SBX_IF_NR(__NR_ptrace, SBX_EPERM),
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

/* The kernel layer waits until Python code loads native code at run time (sbx_arm_kernel_
 * layer, called by the audit hook): until then no thread pays for the filter, whose cost is
 * that every system call of a filtered thread takes the kernel's slower entry path (about a
 * tenth more for a Python loop that opens and reads a small file). Once armed, every Python
 * thread puts itself under the filter at its next audit event, at sandbox_thread_init and at
 * sandbox_before_request; threads it starts inherit the filter. */
static atomic_int sbx_armed;
static _Thread_local int sbx_thread_filter; /* 0: not yet, 1: filtered, -1: cannot be */

static void sbx_filter_this_thread(void)
{
#ifdef SBX_HAVE_SECCOMP
    if (sbx_install_seccomp() == 0) {
        sbx_thread_filter = 1;
        atomic_store(&sbx_seccomp_state, 1);
        return;
    }
    if (errno == EINVAL || errno == ENOSYS || errno == EACCES) {
        atomic_store(&sbx_seccomp_state, -1);
    }
    sbx_thread_filter = -1;
#else
    atomic_store(&sbx_seccomp_state, -1);
    sbx_thread_filter = -1;
#endif
}

void sbx_filter_thread_if_armed(void)
{
    if (sbx_thread_filter == 0 && atomic_load_explicit(&sbx_armed, memory_order_acquire)) {
        sbx_filter_this_thread();
    }
}

void sbx_arm_kernel_layer(void)
{
    if (SBX_BASELINE) {
        return;
    }
    atomic_store_explicit(&sbx_armed, 1, memory_order_release);
    sbx_filter_thread_if_armed();
}

int sandbox_thread_init(void)
{
    sbx_filter_thread_if_armed();
    return 0;
}

int sandbox_before_request(void)
{
    sbx_filter_thread_if_armed();
    return 0;
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
    if (wrapped == NULL || fds == NULL || sbx_list_wrapped(wrapped) < 0) {
        goto done;
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
    status = Py_BuildValue(
        "{s:O,s:O,s:O,s:s,s:O,s:O}", "audit_hook", sbx_hook_added ? Py_True : Py_False,
        "wrapped", wrapped, "vm_fds", fds, "kernel_layer",
        state == -1 ? "unavailable" : (atomic_load(&sbx_armed) ? "armed" : "standby"),
        "seccomp_thread", prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2 ? Py_True : Py_False,
        "installed", sbx_hook_added && sbx_patched ? Py_True : Py_False);
done:
    Py_XDECREF(item);
    Py_XDECREF(wrapped);
    Py_XDECREF(fds);
    return status;
}

static PyObject *sbx_arm(PyObject *module, PyObject *unused)
{
    sbx_arm_kernel_layer();
    return PyBool_FromLong(prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2);
}

static PyMethodDef sbx_methods[] = {
    {"arm_kernel_layer", sbx_arm, METH_NOARGS,
     "Arms the seccomp layer now (it arms itself when native code is loaded); it cannot be "
     "disarmed. True when the calling thread is then filtered."},
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

    if (SBX_BASELINE) {
        return 0;
    }
    if (!sbx_hook_added) {
        PyErr_SetString(PyExc_RuntimeError,
                        "sandbox: sandbox_preinit() did not run before initialisation");
        return -1;
    }
    if (sbx_install_wrappers() < 0 || sbx_undo_faulthandler() < 0 ||
        sbx_set_thread_stacks() < 0 || sbx_wrap_foreign_calls() < 0) {
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
