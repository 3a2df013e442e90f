"""The paths around the reference hook are closed: each one is refused with a RuntimeError or
made harmless, as docs/security.md decides. Paths that could kill the VM if the sandbox
failed (os._exit, os.abort, kill of the VM, alarm, closing the VM's descriptors, exec through
cffi...) are tested in peer nodes by test/py_sandbox_SUITE.erl instead."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import faulthandler
import multiprocessing
import multiprocessing.util
import os
import posix
import pty
import resource
import signal
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

import _erlang_sandbox
import pytest
from test_sandbox_support import (  # noqa: F401
    exec_in_child,
    raw_libc_function,
    signal_state,
    spawn_message,
    vm_answers,
    witness,
)

BLOCKED = " is blocked in Erlang VM context."


def _touch(path: str) -> None:
    """A multiprocessing target: it would leave `path` behind if a child ever ran it."""
    with open(path, "w"):
        pass


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0]


# ---- _posixsubprocess and multiprocessing -------------------------------------------------


def test_posixsubprocess_fork_exec_direct_call_is_refused(witness):  # noqa: F811
    """_posixsubprocess.fork_exec is refused before it even reads its arguments."""
    import _posixsubprocess

    with pytest.raises(RuntimeError) as raised:
        _posixsubprocess.fork_exec()
    assert str(raised.value) == spawn_message("_posixsubprocess.fork_exec")


def test_posixsubprocess_fork_exec_with_real_arguments_is_refused(witness, monkeypatch):  # noqa: F811
    """With subprocess's own audit call silenced, subprocess reaches fork_exec (or, from
    3.13 on, os.posix_spawn) with real arguments for `touch FILE`: the wrapper refuses it."""
    monkeypatch.setattr(sys, "audit", lambda *args: None)
    with pytest.raises(RuntimeError) as raised:
        subprocess.run(witness.argv)
    assert str(raised.value) in {
        spawn_message("_posixsubprocess.fork_exec"),
        spawn_message("os.posix_spawn"),
    }


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_start_methods_are_refused(method, witness):  # noqa: F811
    """Process.start() is refused with every start method: fork reaches os.fork, spawn and
    forkserver reach _posixsubprocess.fork_exec (their helper processes)."""
    context = multiprocessing.get_context(method)
    process = context.Process(target=_touch, args=(witness.file,))
    with pytest.raises(RuntimeError) as raised:
        process.start()
    assert _first_line(raised.value) in {
        "os.fork" + BLOCKED,
        "_posixsubprocess.fork_exec" + BLOCKED,
    }


@pytest.mark.parametrize("method", [None, "fork", "spawn", "forkserver"])
def test_process_pool_executor_is_refused(method, witness):  # noqa: F811
    """ProcessPoolExecutor cannot start a worker process, whatever its context."""
    context = multiprocessing.get_context(method) if method else None
    with pytest.raises(RuntimeError) as raised:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
            executor.submit(_touch, witness.file).result(timeout=10)
    assert BLOCKED in _first_line(raised.value)


def test_multiprocessing_spawnv_passfds_is_refused(witness):  # noqa: F811
    """multiprocessing.util.spawnv_passfds goes through _posixsubprocess.fork_exec."""
    with pytest.raises(RuntimeError) as raised:
        multiprocessing.util.spawnv_passfds(witness.argv[0], witness.argv, ())
    assert str(raised.value) == spawn_message("_posixsubprocess.fork_exec")


# ---- pty and asyncio ----------------------------------------------------------------------


def test_pty_fork_is_refused(witness):  # noqa: F811
    """pty.fork() reaches os.forkpty, which is refused."""
    with pytest.raises(RuntimeError) as raised:
        pid, _fd = pty.fork()
        if pid == 0:
            exec_in_child(witness.argv)
    assert str(raised.value) == spawn_message("os.forkpty")


def test_pty_spawn_is_refused(witness):  # noqa: F811
    """pty.spawn() reaches os.forkpty, which is refused."""
    with pytest.raises(RuntimeError) as raised:
        pty.spawn(witness.argv)
    assert str(raised.value) == spawn_message("os.forkpty")


def _run_on_stdlib_loop(coro):
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_asyncio_create_subprocess_exec_is_refused(witness):  # noqa: F811
    """asyncio's subprocess transport is built on subprocess.Popen, which is refused."""

    async def main():
        process = await asyncio.create_subprocess_exec(*witness.argv)
        await process.wait()

    with pytest.raises(RuntimeError) as raised:
        _run_on_stdlib_loop(main())
    assert str(raised.value) == spawn_message("subprocess.Popen")


def test_asyncio_create_subprocess_shell_is_refused(witness):  # noqa: F811
    """create_subprocess_shell is refused the same way."""

    async def main():
        process = await asyncio.create_subprocess_shell(witness.command)
        await process.wait()

    with pytest.raises(RuntimeError) as raised:
        _run_on_stdlib_loop(main())
    assert str(raised.value) == spawn_message("subprocess.Popen")


# ---- os.register_at_fork ------------------------------------------------------------------


def test_register_at_fork_is_harmless(witness):  # noqa: F811
    """os.register_at_fork is allowed: its callbacks can never run, since nothing can fork."""
    ran = []
    os.register_at_fork(
        before=lambda: ran.append("before"),
        after_in_parent=lambda: ran.append("parent"),
        after_in_child=lambda: _touch(witness.file),
    )
    with pytest.raises(RuntimeError):
        pid = os.fork()
        if pid == 0:
            exec_in_child(witness.argv)
    with pytest.raises(RuntimeError):
        posix.forkpty()
    assert ran == []


# ---- ctypes and cffi ----------------------------------------------------------------------


CTYPES_REFUSED = [
    "fork",
    "vfork",
    "execve",
    "execv",
    "system",
    "posix_spawn",
    "posix_spawnp",
    "clone",
    "syscall",
    "_exit",
    "abort",
    "kill",
    "raise",
    "alarm",
    "signal",
    "sigaction",
    "close",
    "dup2",
    "__libc_fork",
]


@pytest.mark.parametrize("name", CTYPES_REFUSED)
def test_ctypes_lookup_of_libc_function_is_refused(name, witness):  # noqa: F811
    """Looking up libc's process, signal and exit functions through ctypes is refused (the
    ctypes.dlsym audit event), whichever way the lookup is written."""
    libc = ctypes.CDLL("libc.so.6")
    lookups = [
        lambda: getattr(libc, name),
        lambda: libc[name],
        lambda: getattr(ctypes.CDLL(None), name),
        lambda: ctypes.CFUNCTYPE(ctypes.c_int)((name, libc)),
    ]
    for lookup in lookups:
        with pytest.raises(RuntimeError) as raised:
            lookup()
        assert _first_line(raised.value) == f"ctypes access to {name}(){BLOCKED}"


def test_ctypes_cannot_clear_the_audit_hooks(witness):  # noqa: F811
    """The interpreter's own functions that would remove the hook or finalise Python are
    refused too."""
    for name in ("_PySys_ClearAuditHooks", "Py_FinalizeEx", "Py_Exit", "Py_FatalError"):
        with pytest.raises(RuntimeError) as raised:
            getattr(ctypes.pythonapi, name)
        assert _first_line(raised.value) == f"ctypes access to {name}(){BLOCKED}"


@pytest.fixture
def libc_cffi():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(
        """
        int fork(void);
        int system(const char *command);
        int posix_spawn(int *pid, const char *path, const void *file_actions,
                        const void *attrp, char *const argv[], char *const envp[]);
        int execv(const char *path, char *const argv[]);
        void _exit(int status);
        """
    )
    return ffi, ffi.dlopen(None)


def _argv(ffi, argv):
    items = [ffi.new("char[]", arg.encode()) for arg in argv]
    return items, ffi.new("char *[]", items + [ffi.NULL])


def _needs_seccomp():
    """The kernel layer is armed (loading cffi or a named library did it) and filters this
    thread."""
    if _erlang_sandbox.status()["kernel_layer"] == "unavailable":
        pytest.skip("no seccomp on this kernel")
    if not _erlang_sandbox.thread_filtered():
        pytest.fail("this Python thread runs without the sandbox's seccomp filter")


def _load_a_library():
    """Loading a library by name through ctypes is what arms the kernel layer."""
    return ctypes.CDLL("libc.so.6")


def test_cffi_system_is_made_harmless(libc_cffi, witness):  # noqa: F811
    """libc's system() through cffi (no audit event) fails: the seccomp filter refuses the
    clone of a new process, so system() reports that its shell could not run."""
    ffi, lib = libc_cffi
    _needs_seccomp()
    status = lib.system(witness.command.encode())
    assert status != 0


def test_cffi_posix_spawn_is_made_harmless(libc_cffi, witness):  # noqa: F811
    """libc's posix_spawn() through cffi returns EPERM."""
    ffi, lib = libc_cffi
    _needs_seccomp()
    pid = ffi.new("int *")
    _keep, argv = _argv(ffi, witness.argv)
    rc = lib.posix_spawn(pid, witness.argv[0].encode(), ffi.NULL, ffi.NULL, argv, ffi.NULL)
    assert rc == errno.EPERM


def test_cffi_fork_is_made_harmless(libc_cffi, witness):  # noqa: F811
    """libc's fork() through cffi returns -1 with EPERM. Were it let through, the child
    would exec `touch` at once."""
    ffi, lib = libc_cffi
    _needs_seccomp()
    _keep, argv = _argv(ffi, witness.argv)
    pid = lib.fork()
    if pid == 0:
        lib.execv(witness.argv[0].encode(), argv)
        lib._exit(127)
    assert pid == -1
    assert ffi.errno == errno.EPERM


def _raw_argv(argv):
    array = (ctypes.c_char_p * (len(argv) + 1))(*[arg.encode() for arg in argv], None)
    return array


def test_raw_ctypes_fork_is_made_harmless(witness):  # noqa: F811
    """fork() called through a ctypes pointer computed from libc's symbol table (no dlsym,
    no audit event) fails with EPERM: the seccomp filter. Were it let through, the child
    would exec `touch` at once."""
    _load_a_library()
    _needs_seccomp()
    fork = raw_libc_function("fork", ctypes.c_int)
    execv = raw_libc_function("execv", ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    exit_now = raw_libc_function("_exit", None, ctypes.c_int)
    argv = _raw_argv(witness.argv)
    pid = fork()
    if pid == 0:
        execv(witness.argv[0].encode(), argv)
        exit_now(127)
    assert pid == -1
    assert ctypes.get_errno() == errno.EPERM


def test_raw_ctypes_system_and_posix_spawn_are_made_harmless(witness):  # noqa: F811
    """system() and posix_spawn() through raw ctypes pointers fail: seccomp refuses the clone
    of a new process."""
    _load_a_library()
    _needs_seccomp()
    system = raw_libc_function("system", ctypes.c_int, ctypes.c_char_p)
    assert system(witness.command.encode()) == 127 << 8
    posix_spawn = raw_libc_function(
        "posix_spawn",
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    pid = ctypes.c_int(0)
    argv = _raw_argv(witness.argv)
    rc = posix_spawn(ctypes.byref(pid), witness.argv[0].encode(), None, None, argv, None)
    assert rc == errno.EPERM


def test_threads_started_by_python_inherit_the_filter():
    """Once armed, the seccomp filter covers the threads that Python code starts."""
    _load_a_library()
    _needs_seccomp()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(_erlang_sandbox.thread_filtered()))
    thread.start()
    thread.join()
    assert seen == [True]


def test_kernel_layer_cannot_be_disarmed():
    """Arming is one way: arm_kernel_layer() again, reloads, rebinding change nothing."""
    _load_a_library()
    _needs_seccomp()
    assert _erlang_sandbox.arm_kernel_layer() is True
    assert _erlang_sandbox.status()["kernel_layer"] == "armed"


# ---- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attempt"),
    [
        ("signal.signal", lambda: signal.signal(signal.SIGUSR1, lambda *a: None)),
        ("signal.signal", lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)),
        ("signal.siginterrupt", lambda: signal.siginterrupt(signal.SIGUSR1, True)),
        ("signal.set_wakeup_fd", lambda: signal.set_wakeup_fd(1)),
    ],
    ids=["signal-handler", "signal-ignore", "siginterrupt", "set_wakeup_fd"],
)
def test_signal_handler_changes_are_refused(op, attempt, witness):  # noqa: F811
    """Changing a signal disposition is refused with SignalBlockedError, a RuntimeError that
    is also the ValueError CPython raises off the main thread."""
    with pytest.raises(RuntimeError) as raised:
        attempt()
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, _erlang_sandbox.SignalBlockedError)
    assert _first_line(raised.value) == op + BLOCKED


def test_faulthandler_enable_is_made_harmless(witness):  # noqa: F811
    """faulthandler.enable() does nothing: its handlers would replace the VM's."""
    assert faulthandler.enable() is None
    assert faulthandler.is_enabled() is False


def test_faulthandler_register_is_refused(witness):  # noqa: F811
    """faulthandler.register() would install a handler for any signal: refused."""
    with pytest.raises(RuntimeError) as raised:
        faulthandler.register(signal.SIGUSR1)
    assert _first_line(raised.value) == "faulthandler.register" + BLOCKED


@pytest.mark.parametrize("style", ["keyword", "positional"])
def test_faulthandler_dump_traceback_later_exit_is_refused(style, witness):  # noqa: F811
    """dump_traceback_later(exit=True) would _exit() the VM when it fires: refused. (Were it
    let through, the hour-long timer is cancelled before it fires.)"""
    try:
        with pytest.raises(RuntimeError) as raised:
            if style == "keyword":
                faulthandler.dump_traceback_later(3600, exit=True)
            else:
                faulthandler.dump_traceback_later(3600, False, sys.__stderr__, True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert _first_line(raised.value) == "faulthandler.dump_traceback_later(exit=True)" + BLOCKED


def test_lowering_a_resource_limit_is_refused(witness):  # noqa: F811
    """A resource limit lowered from Python would apply to the whole VM: refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with pytest.raises(RuntimeError) as raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _first_line(raised.value) == "resource.setrlimit" + BLOCKED


# ---- arguments that change their mind ----------------------------------------------------


class Fickle:
    """An argument whose __index__ and __bool__ answer differently each time: the wrapper
    must check the very value the original then uses."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def _next(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def __index__(self):
        return self._next()

    def __bool__(self):
        return bool(self._next())


def test_fickle_exit_flag_is_checked_once(witness):  # noqa: F811
    """dump_traceback_later(exit=x) where x is false when first asked and true afterwards:
    the wrapper passes on the value it checked, so no exit is armed (the hour-long timer is
    cancelled either way); x true when first asked is refused."""
    try:
        faulthandler.dump_traceback_later(3600, file=sys.__stderr__, exit=Fickle(False, True))
        with pytest.raises(RuntimeError):
            faulthandler.dump_traceback_later(3600, file=sys.__stderr__, exit=Fickle(True, False))
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_fickle_signal_number_is_checked_once(witness):  # noqa: F811
    """pthread_kill(tid, x) where x is 0 when checked and SIGUSR1 afterwards sends nothing."""
    signal.pthread_kill(threading.get_ident(), Fickle(0, int(signal.SIGUSR1)))
    with pytest.raises(RuntimeError):
        signal.pthread_kill(threading.get_ident(), Fickle(int(signal.SIGUSR1), 0))


def test_resource_limits_as_list_or_other_sequence(witness):  # noqa: F811
    """Lowering a limit given as a list is refused too; limits given as anything but a tuple
    or list of ints cannot be checked safely and are refused; a list that raises is fine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    class Limits:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            if i > 1:
                raise IndexError(i)
            return (soft, hard)[i]

    try:
        with pytest.raises(RuntimeError):
            resource.setrlimit(resource.RLIMIT_NOFILE, [soft - 1, hard])
        with pytest.raises(RuntimeError):
            resource.setrlimit(resource.RLIMIT_NOFILE, Limits())
        resource.setrlimit(resource.RLIMIT_NOFILE, [hard, hard])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---- sys.exit -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sys_exit_in_a_thread_ends_only_the_thread(witness):  # noqa: F811
    """sys.exit() in a thread ends that thread, silently, as in any Python: with threading
    and with a bare _thread."""
    import _thread

    after = []
    done = threading.Event()

    def run():
        sys.exit(3)
        after.append("not reached")

    def run_bare():
        try:
            sys.exit(3)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    _thread.start_new_thread(run_bare, ())
    assert done.wait(10)
    assert after == []
    assert vm_answers()


def test_sys_exit_in_an_asyncio_task_is_an_exception(witness):  # noqa: F811
    """sys.exit() in an asyncio task comes out of the loop as SystemExit, an exception the
    caller can catch (py:call turns it into an error value)."""

    async def task():
        sys.exit(4)

    loop = asyncio.SelectorEventLoop()
    try:
        future = loop.create_task(task())
        with pytest.raises(SystemExit) as raised:
            loop.run_until_complete(future)
        assert future.done() and isinstance(future.exception(), SystemExit)
    finally:
        loop.close()
    assert raised.value.code == 4
    assert signal_state() == witness.signals
