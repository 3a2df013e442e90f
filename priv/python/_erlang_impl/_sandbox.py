"""The sandbox that keeps embedded Python from corrupting or killing the Erlang VM.

Python here shares its process with the Erlang VM. ``fork()`` would copy a VM whose scheduler
threads are missing in the child, ``exec()`` would replace it, and ``os._exit``, a signal sent
to the VM's own pid or a closed VM descriptor would end or cripple it. The sandbox refuses
those operations with a ``RuntimeError`` whose message has three lines, operation first::

    os.fork is blocked in Erlang VM context.
    fork()/exec() would corrupt the Erlang runtime.
    Use Erlang ports (open_port/2) for subprocess management.

Design. Nothing that decides lives in this file: everything is C in ``c_src/py_sandbox.c``,
installed by the NIF before any user code runs, where Python code cannot rebind, reload,
re-import or replace it.

1. A PEP 578 audit hook added with ``PySys_AddAuditHook`` *before* the interpreter is
   initialised. It covers every interpreter of the process, sub-interpreters included, and
   CPython has no API that removes it. It refuses os.fork, os.forkpty, os.system, every
   os.exec* and os.spawn*, os.posix_spawn, subprocess.Popen (hence run, call, check_call,
   check_output, getoutput, getstatusoutput, os.popen, asyncio subprocesses,
   multiprocessing's fork start method), os.kill / os.killpg / signal.pthread_kill aimed at
   the VM itself, ctypes look-ups of libc's process, signal and exit functions, and
   resource limits lowered on the VM. It names the os.py function that was called
   (``os.execlp``, ``os.spawnv``, ``os.popen``) by reading the calling frames.
2. Checking wrappers for builtins that raise no audit event. The C function pointer in the
   builtin's ``PyMethodDef`` is swapped for a wrapper that checks the call and then calls
   the saved original; every function object made from that definition, by ``import posix``,
   ``importlib.reload`` or a new sub-interpreter, goes through it. Wrapped: os._exit,
   os.abort, os.posix_spawn[p], os.close / os.dup2 (refused on descriptors the VM had open
   before Python started), os.closerange (made harmless: it skips them),
   _posixsubprocess.fork_exec, signal.alarm / setitimer / raise_signal / signal /
   siginterrupt / set_wakeup_fd / pthread_kill, faulthandler.register,
   dump_traceback_later(exit=True) and faulthandler's crash helpers, the credential calls
   (os.setuid and kin, os.chroot), os.open of the VM's memory relative to a dir_fd,
   sys.setrecursionlimit and _thread.stack_size (capped, below); faulthandler.enable is
   made a no-op (it would put its handlers over the VM's). A wrapper converts each argument
   it checks once (__index__, __bool__) and passes the converted value on, so an argument
   cannot answer one thing to the check and another to the original.
3. A seccomp-bpf filter on every thread that runs Python (and so on the threads they
   start): fork, vfork, execve, execveat and clone of a new process fail with EPERM, clone3
   with ENOSYS (glibc then makes threads with clone). It stops native code, ctypes or cffi,
   that reaches libc's fork or exec without asking Python. It is armed when Python code
   loads native code at run time (a library loaded by name through ctypes, cffi, tkinter,
   or the first foreign call through ctypes), since every system call of a filtered thread
   costs more; it cannot be disarmed.
4. Harmless by construction: Python's threads have a cwd and umask of their own
   (``os.chdir``, ``os.umask`` never move the VM's), and before 3.12 the recursion limit is
   capped at what the threads' stacks hold (``sys.setrecursionlimit``), so deep data ends in
   ``RecursionError``, not a crash.

Deliberate limits. An in-process sandbox protects the VM from mistakes and from ordinary
libraries; it is not a jail for hostile code. CPython's documentation says as much of audit
hooks, and ctypes can write any byte of the process's memory, the sandbox's included: code
that does that can do anything the VM can. Descriptors the VM opens after Python started
(new ports, sockets) cannot be told from Python's own. Run untrusted code in an OS process of
its own, through an Erlang port. docs/security.md has the full table.
"""

from __future__ import annotations

from _erlang_sandbox import (
    SignalBlockedError,
    arm_kernel_layer,
    is_sandboxed,
    status,
    thread_filtered,
)

__all__ = [
    "BLOCKED",
    "SignalBlockedError",
    "arm_kernel_layer",
    "is_sandboxed",
    "status",
    "thread_filtered",
]

# What the sandbox refuses, for documentation and introspection; the decisions themselves
# are made in C and do not read this table.
BLOCKED: dict[str, str] = {
    "os.fork": "audit hook",
    "os.forkpty": "audit hook",
    "os.system": "audit hook",
    "os.popen": "audit hook (subprocess.Popen)",
    "os.exec*": "audit hook",
    "os.spawn*": "audit hook (os.fork)",
    "os.posix_spawn": "wrapper, audit hook",
    "os.posix_spawnp": "wrapper, audit hook",
    "subprocess.Popen": "audit hook (run, call, check_call, check_output, getoutput...)",
    "_posixsubprocess.fork_exec": "wrapper",
    "os._exit": "wrapper",
    "os.abort": "wrapper",
    "os.kill": "audit hook, when aimed at the VM's process, group or threads",
    "os.killpg": "audit hook, when aimed at the VM's group",
    "signal.pthread_kill": "wrapper, audit hook (any non-zero signal)",
    "signal.alarm": "wrapper",
    "signal.setitimer": "wrapper",
    "signal.raise_signal": "wrapper",
    "signal.signal": "wrapper (SignalBlockedError)",
    "signal.siginterrupt": "wrapper (SignalBlockedError)",
    "signal.set_wakeup_fd": "wrapper (SignalBlockedError)",
    "faulthandler.register": "wrapper",
    "faulthandler.dump_traceback_later(exit=True)": "wrapper",
    "os.close": "wrapper, on the VM's descriptors",
    "os.dup2": "wrapper, onto the VM's descriptors",
    "resource.setrlimit": "audit hook, when lowering a limit",
    "ctypes access to fork, exec*, system, posix_spawn, kill, _exit...": "audit hook",
    "fork/vfork/execve/clone from native code": "seccomp filter (EPERM), once armed",
    "process_vm_writev, ptrace from native code": "seccomp filter (EPERM), once armed",
    "os.setuid": "wrapper",
    "os.setgid": "wrapper",
    "os.seteuid": "wrapper",
    "os.setegid": "wrapper",
    "os.setreuid": "wrapper",
    "os.setregid": "wrapper",
    "os.setresuid": "wrapper",
    "os.setresgid": "wrapper",
    "os.setgroups": "wrapper",
    "os.initgroups": "wrapper",
    "os.chroot": "wrapper",
    "writing /proc/self/mem (any alias)": "audit hook (open), os.open wrapper (dir_fd)",
}
