"""The sandbox is installed, covers every interpreter, and refuses every row of the spec's
table (docs/security.md) with RuntimeError and the spec's exact three-line message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import _erlang_sandbox
import pytest
from test_sandbox_support import exec_in_child, spawn_message, witness  # noqa: F401

from _erlang_impl import _sandbox


def test_is_sandboxed():
    """The spec's check is True, and it is the C module's answer."""
    from _erlang_impl._sandbox import is_sandboxed

    assert is_sandboxed() is True
    assert is_sandboxed is _erlang_sandbox.is_sandboxed
    assert type(is_sandboxed).__name__ == "builtin_function_or_method"


def test_status_reports_each_layer():
    """The audit hook and the wrappers are in place; the kernel layer is on standby until
    native code is loaded, armed after, or unavailable on this kernel."""
    status = _sandbox.status()
    assert status["audit_hook"] is True
    assert status["installed"] is True
    for op in ("os._exit", "os.abort", "os.close", "_posixsubprocess.fork_exec", "signal.alarm"):
        assert op in status["wrapped"]
    assert {0, 1, 2} <= set(status["vm_fds"])
    assert status["kernel_layer"] in {"standby", "armed", "unavailable"}
    if status["kernel_layer"] == "armed":
        assert status["seccomp_thread"] is True


def _fork(w):
    pid = os.fork()
    if pid == 0:
        exec_in_child(w.argv)


def _forkpty(w):
    pid, _fd = os.forkpty()
    if pid == 0:
        exec_in_child(w.argv)


ENV = dict(os.environ)

# (operation named in the message, attempt); each attempt runs `touch FILE` if let through.
ROWS = [
    ("os.fork", _fork),
    ("os.forkpty", _forkpty),
    ("os.system", lambda w: os.system(w.command)),
    ("os.popen", lambda w: os.popen(w.command).read()),
    ("os.execl", lambda w: os.execl(w.argv[0], *w.argv)),
    ("os.execle", lambda w: os.execle(w.argv[0], *w.argv, ENV)),
    ("os.execlp", lambda w: os.execlp("touch", "touch", w.file)),
    ("os.execlpe", lambda w: os.execlpe("touch", "touch", w.file, ENV)),
    ("os.execv", lambda w: os.execv(w.argv[0], w.argv)),
    ("os.execve", lambda w: os.execve(w.argv[0], w.argv, ENV)),
    ("os.execvp", lambda w: os.execvp("touch", ["touch", w.file])),
    ("os.execvpe", lambda w: os.execvpe("touch", ["touch", w.file], ENV)),
    ("os.spawnl", lambda w: os.spawnl(os.P_WAIT, w.argv[0], *w.argv)),
    ("os.spawnle", lambda w: os.spawnle(os.P_WAIT, w.argv[0], *w.argv, ENV)),
    ("os.spawnlp", lambda w: os.spawnlp(os.P_WAIT, "touch", "touch", w.file)),
    ("os.spawnlpe", lambda w: os.spawnlpe(os.P_WAIT, "touch", "touch", w.file, ENV)),
    ("os.spawnv", lambda w: os.spawnv(os.P_NOWAIT, w.argv[0], w.argv)),
    ("os.spawnve", lambda w: os.spawnve(os.P_WAIT, w.argv[0], w.argv, ENV)),
    ("os.spawnvp", lambda w: os.spawnvp(os.P_WAIT, "touch", ["touch", w.file])),
    ("os.spawnvpe", lambda w: os.spawnvpe(os.P_WAIT, "touch", ["touch", w.file], ENV)),
    ("os.posix_spawn", lambda w: os.posix_spawn(w.argv[0], w.argv, ENV)),
    ("os.posix_spawnp", lambda w: os.posix_spawnp("touch", ["touch", w.file], ENV)),
    ("subprocess.Popen", lambda w: subprocess.Popen(w.argv).wait()),
    ("subprocess.Popen", lambda w: subprocess.run(w.argv)),
    ("subprocess.Popen", lambda w: subprocess.call(w.argv)),
    ("subprocess.Popen", lambda w: subprocess.check_call(w.argv)),
    ("subprocess.Popen", lambda w: subprocess.check_output(w.argv)),
    ("subprocess.Popen", lambda w: subprocess.getoutput(w.command)),
    ("subprocess.Popen", lambda w: subprocess.getstatusoutput(w.command)),
]
ROW_IDS = [
    "fork", "forkpty", "system", "popen",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp",
    "Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput",
]  # fmt: skip


@pytest.mark.parametrize(("op", "attempt"), ROWS, ids=ROW_IDS)
def test_table_row_is_refused(op, attempt, witness):  # noqa: F811
    """Each row of the spec's table raises RuntimeError with the exact message, op first."""
    with pytest.raises(RuntimeError) as raised:
        attempt(witness)
    assert type(raised.value) is RuntimeError
    assert str(raised.value) == spawn_message(op)


def test_refused_in_threads_too(witness):  # noqa: F811
    """A thread started by Python code is refused the same way."""
    import threading

    errors = []

    def run():
        try:
            subprocess.run(witness.argv)
        except RuntimeError as error:
            errors.append(str(error))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == [spawn_message("subprocess.Popen")]


def _subinterpreters():
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            return __import__(name)
        except ImportError:
            pass
    return None


def test_subinterpreters_are_covered(witness):  # noqa: F811
    """A sub-interpreter created from Python is under the same hook and wrappers."""
    interpreters = _subinterpreters()
    if interpreters is None:
        pytest.skip("this Python has no sub-interpreter module")
    code = textwrap.dedent(
        f"""
        import os, posix, _posixsubprocess
        results = []
        for attempt in (lambda: os.system({witness.command!r}),
                        lambda: posix.posix_spawn({witness.argv[0]!r}, {witness.argv!r}, {{}}),
                        lambda: _posixsubprocess.fork_exec()):
            try:
                attempt()
            except RuntimeError as error:
                results.append(str(error).splitlines()[0])
        assert results == ["os.system is blocked in Erlang VM context.",
                           "os.posix_spawn is blocked in Erlang VM context.",
                           "_posixsubprocess.fork_exec is blocked in Erlang VM context."], results
        """
    )
    interp = interpreters.create()
    try:
        failure = interpreters.run_string(interp, code)
    finally:
        interpreters.destroy(interp)
    # 3.13's _interpreters returns the failure; older versions raise it.
    assert failure is None
    assert sys.modules["os"].system is os.system
