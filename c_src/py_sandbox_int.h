/* Private to the sandbox's C files (py_sandbox.c, py_sandbox_hook.c, py_sandbox_wrap.c).
 * The NIF uses py_sandbox.h only. */
#ifndef PY_SANDBOX_INT_H
#define PY_SANDBOX_INT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sys/resource.h>

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
    SBX_CREDENTIALS,
    SBX_MEMORY,
};

/* Facts about the VM, recorded by sandbox_preinit() before Python starts, read-only after. */
extern unsigned char *sbx_vm_fds; /* sbx_vm_fds[fd] is 1 for the VM's fds */
extern int sbx_vm_fd_count;
extern struct rlimit sbx_vm_limits[RLIM_NLIMITS]; /* as the VM had them */

/* py_sandbox.c */
int sbx_refuse(const char *op, enum sbx_kind kind); /* sets RuntimeError, returns -1 */
int sbx_refuse_signal_handler(const char *op);       /* SignalBlockedError, returns -1 */
int sbx_is_vm_fd(long fd);
/* 1 if id is this process's pid or one of its thread ids (/proc/<tid> works too, though
 * /proc does not list it; kill() of a thread id signals the whole process). */
int sbx_is_own_proc_id(long id);
/* An open of `path' with `flags' (relative to dir_fd unless AT_FDCWD): -1 with the refusal
 * set if it would write this process's memory (/proc/<pid>/mem or a task's, under any
 * alias), else 0. */
int sbx_refuse_own_memory_write(int dir_fd, PyObject *path, long flags);
long sbx_as_long(PyObject *obj, long fallback);
void sbx_arm_kernel_layer(void);       /* from now on, every Python thread is filtered */
void sbx_filter_thread_if_armed(void); /* filters the calling thread if armed and not yet */

/* py_sandbox_hook.c */
int sbx_audit_hook(const char *event, PyObject *args, void *data);

/* py_sandbox_wrap.c */
int sbx_install_wrappers(void); /* 0, or -1 with an exception set */
/* Gives Python's threads stacks of SBX_PYTHON_THREAD_STACK bytes (_thread.stack_size), the
 * size the recursion limit's cap is computed from; 0, or -1 with an exception set. */
int sbx_set_thread_stacks(void);
/* Makes every ctypes foreign call arm the kernel layer first; 0, or -1 with an exception. */
int sbx_wrap_foreign_calls(void);
int sbx_list_wrapped(PyObject *list);

#endif
