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

/* At the start of every thread that will run Python (before it first takes the GIL): puts
 * the calling thread under the seccomp filter if the kernel layer is armed (it arms itself
 * when Python code loads native code at run time; threads started later inherit the filter).
 * Returns 0. */
int sandbox_thread_init(void);

/* On a worker thread, before it runs each request: the same as sandbox_thread_init (an
 * atomic load when there is nothing to do), so that a worker started before the kernel layer
 * was armed is filtered before it runs more Python code. Returns 0. */
int sandbox_before_request(void);

#endif
