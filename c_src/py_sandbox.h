/* The sandbox: what embedded Python may not do to the Erlang VM that hosts it.
 *
 * Three layers, all in C so that no Python code can switch them off:
 * - a PEP 578 audit hook added before initialisation (every interpreter of the process);
 * - checking wrappers swapped into the method tables of builtins that raise no audit event
 *   (os._exit, os.abort, os.close, signal.alarm, _posixsubprocess.fork_exec...);
 * - a seccomp-bpf filter on each thread that runs Python (fork/vfork/execve/clone of a
 *   process), for native code (ctypes, cffi, C extensions) that bypasses both.
 * docs/security.md describes what each layer covers and what none of them can stop.
 */
#ifndef PY_SANDBOX_H
#define PY_SANDBOX_H

/* On the interpreter thread, before Py_InitializeFromConfig, without the GIL: records the
 * VM's pid, process group and open file descriptors, adds the audit hook and registers the
 * built-in module `_erlang_sandbox`. Returns 0, or -1 (the NIF must then refuse to start). */
int sandbox_preinit(void);

/* With the GIL held, after initialisation and before any user code: installs the checking
 * wrappers and imports `_erlang_impl._sandbox`. Returns 0, or -1 with a Python exception
 * set. */
int sandbox_postinit(void);

/* At the start of every thread that will run Python (before it first takes the GIL):
 * installs the seccomp filter on the calling thread; threads it starts inherit it. Returns
 * 0 when the filter is installed or the kernel has no seccomp (the audit hook and wrappers
 * still apply; `_erlang_sandbox.status()` says so), -1 if installing it failed otherwise. */
int sandbox_thread_init(void);

#endif
