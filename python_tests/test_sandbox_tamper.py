"""Sandboxed code cannot switch the sandbox off: rebinding, code replacement, sys.modules
games, reloads, monkeypatching and `import posix` all leave every refusal in place. (Attempts
that would kill the VM if they worked, such as posix._exit, run in peer nodes in
test/py_sandbox_SUITE.erl.)"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import subprocess
import sys
import types

import _erlang_sandbox
import pytest
from test_sandbox_support import spawn_message, witness  # noqa: F401

from _erlang_impl import _sandbox

BLOCKED = " is blocked in Erlang VM context."
# Where subprocess is refused: its audit event, or, with sys.audit silenced, the builtin it
# reaches next.
SUBPROCESS = ("subprocess.Popen", "_posixsubprocess.fork_exec", "os.posix_spawn")
C_SAYS_SANDBOXED = _erlang_sandbox.is_sandboxed  # held before any test rebinds it
TOUCHY_MODULES = (
    "os",
    "posix",
    "subprocess",
    "_posixsubprocess",
    "signal",
    "_signal",
    "_erlang_sandbox",
    "_erlang_impl._sandbox",
)


@pytest.fixture
def restore_modules():
    """Puts sys.modules back as it was, whatever the test deleted or swapped, and the
    namespaces of the modules involved too (importlib.reload rebinds them in place: a reloaded
    os has a new os.environ, a _sandbox reloaded over a fake _erlang_sandbox keeps the fake's
    functions)."""
    saved = dict(sys.modules)
    namespaces = [
        (sys.modules[name], dict(vars(sys.modules[name])))
        for name in TOUCHY_MODULES
        if name in sys.modules
    ]
    yield
    for name in list(sys.modules):
        if name not in saved:
            del sys.modules[name]
    sys.modules.update(saved)
    for module, namespace in namespaces:
        vars(module).clear()
        vars(module).update(namespace)


def assert_still_sandboxed(w) -> None:
    """Fresh imports of everything involved still refuse, and the C module says so."""
    fresh_os = importlib.import_module("os")
    fresh_posix = importlib.import_module("posix")
    fresh_subprocess = importlib.import_module("subprocess")
    fresh_posixsubprocess = importlib.import_module("_posixsubprocess")
    fresh_signal = importlib.import_module("signal")
    attempts = [
        ("os.system", lambda: fresh_os.system(w.command)),
        ("os.system", lambda: fresh_posix.system(w.command)),
        ("os.execv", lambda: fresh_posix.execv(w.argv[0], w.argv)),
        ("os.posix_spawn", lambda: fresh_posix.posix_spawn(w.argv[0], w.argv, {})),
        (SUBPROCESS, lambda: fresh_subprocess.run(w.argv)),
        ("_posixsubprocess.fork_exec", lambda: fresh_posixsubprocess.fork_exec()),
        ("os.system", lambda: os.system(w.command)),
        (SUBPROCESS, lambda: subprocess.run(w.argv)),
    ]
    for op, attempt in attempts:
        with pytest.raises(RuntimeError) as raised:
            attempt()
        ops = op if isinstance(op, tuple) else (op,)
        assert str(raised.value) in [spawn_message(one) for one in ops]
    with pytest.raises(RuntimeError):
        fresh_signal.signal(fresh_signal.SIGUSR1, fresh_signal.SIG_IGN)
    assert C_SAYS_SANDBOXED() is True


def test_rebinding_sandbox_globals(witness, monkeypatch):  # noqa: F811
    """Rebinding every global of _erlang_impl._sandbox and of _erlang_sandbox changes
    nothing: no decision reads them."""
    for module in (_sandbox, _erlang_sandbox):
        for name in list(vars(module)):
            if not name.startswith("__"):
                monkeypatch.setattr(module, name, None)
    monkeypatch.setattr(_sandbox, "is_sandboxed", lambda: False)
    assert_still_sandboxed(witness)


def test_swapping_the_exception_class_falls_back_to_runtime_error(witness, monkeypatch):  # noqa: F811
    """Even the refusal's exception class cannot be swapped for one that is not a
    RuntimeError."""
    monkeypatch.setattr(_erlang_sandbox, "SignalBlockedError", ValueError)
    with pytest.raises(RuntimeError):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def test_replacing_code_defaults_and_closures(witness):  # noqa: F811
    """The hook is C: there is no Python function whose __code__, defaults or closure
    cells decide anything. Every Python function that came from _sandbox.py is given a
    permissive body anyway, and the C functions refuse a new __code__."""
    permissive = (lambda *args, **kwargs: None).__code__
    from_sandbox = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename.endswith("_sandbox.py")
    ]
    saved = [(f, f.__code__, f.__defaults__, f.__kwdefaults__) for f in from_sandbox]
    try:
        for function in from_sandbox:
            for cell in function.__closure__ or ():
                cell.cell_contents = None
            function.__defaults__ = None
            function.__kwdefaults__ = None
            function.__code__ = permissive.replace(co_freevars=function.__code__.co_freevars)
        for builtin in (_erlang_sandbox.is_sandboxed, os.system, os._exit, os.close):
            with pytest.raises((AttributeError, TypeError)):
                builtin.__code__ = permissive
        assert_still_sandboxed(witness)
    finally:
        for function, code, defaults, kwdefaults in saved:
            function.__code__ = code
            function.__defaults__ = defaults
            function.__kwdefaults__ = kwdefaults


def test_a_python_audit_hook_cannot_overrule_the_c_hook(witness):  # noqa: F811
    """Another audit hook, added later from Python, runs after the C hook: it cannot allow
    what the C hook refused, nor remove it."""
    seen = []
    sys.addaudithook(lambda event, args: seen.append(event) if event == "os.system" else None)
    assert_still_sandboxed(witness)
    assert "os.system" not in seen  # the C hook refused first


def test_deleting_sys_modules_entries_and_reimporting(witness, restore_modules):  # noqa: F811
    """Deleting os, posix, subprocess, signal, the sandbox modules... from sys.modules and
    importing them again gives modules whose functions still refuse."""
    for name in TOUCHY_MODULES:
        sys.modules.pop(name, None)
    assert_still_sandboxed(witness)
    assert importlib.import_module("_erlang_impl._sandbox").is_sandboxed() is True


def test_swapping_sys_modules_entries(witness, restore_modules):  # noqa: F811
    """A fake _erlang_sandbox in sys.modules makes a reloaded _sandbox lie, and changes
    nothing else; fake os and posix modules do not reach the real builtins either."""
    fake = types.ModuleType("_erlang_sandbox")
    fake.is_sandboxed = lambda: False
    fake.status = fake.thread_filtered = fake.arm_kernel_layer = lambda: None
    fake.SignalBlockedError = ValueError
    real = {name: sys.modules[name] for name in ("os", "posix")}
    sys.modules["_erlang_sandbox"] = fake
    sys.modules["os"] = types.ModuleType("os")
    sys.modules["posix"] = types.ModuleType("posix")
    try:
        importlib.reload(_sandbox)
        assert _sandbox.is_sandboxed() is False  # the lie, to itself only
        with pytest.raises(RuntimeError) as raised:
            subprocess.run(witness.argv)
        assert str(raised.value) == spawn_message("subprocess.Popen")
        with pytest.raises(RuntimeError):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    finally:
        sys.modules.update(real)  # pytest itself needs os to report a failure
    for name in ("os", "posix", "_erlang_sandbox"):
        del sys.modules[name]
    assert_still_sandboxed(witness)
    assert importlib.import_module("_erlang_sandbox").is_sandboxed() is True


@pytest.mark.parametrize("name", ["os", "subprocess", "signal", "_erlang_impl._sandbox"])
def test_importlib_reload(name, witness, restore_modules):  # noqa: F811
    """importlib.reload of os, subprocess, signal or the sandbox's Python face changes
    nothing."""
    importlib.reload(importlib.import_module(name))
    assert_still_sandboxed(witness)


def test_monkeypatching_os_and_subprocess(witness, monkeypatch):  # noqa: F811
    """Monkeypatching subprocess into other code paths (posix_spawn), silencing its audit
    call, or binding os functions again from posix changes nothing."""
    import posix

    monkeypatch.setattr(sys, "audit", lambda *args: None)
    monkeypatch.setattr(subprocess, "_USE_POSIX_SPAWN", True, raising=False)
    monkeypatch.setattr(subprocess, "_USE_VFORK", False, raising=False)
    with pytest.raises(RuntimeError) as raised:
        subprocess.run(witness.argv, close_fds=False)
    assert str(raised.value) in {
        spawn_message("os.posix_spawn"),
        spawn_message("_posixsubprocess.fork_exec"),
    }
    for name in ("fork", "system", "execv", "posix_spawn", "_exit"):
        monkeypatch.setattr(os, name, getattr(posix, name))
    assert_still_sandboxed(witness)


def test_import_posix_directly(witness):  # noqa: F811
    """`import posix` gives the same, still checked, builtins."""
    import posix

    assert posix.system is os.system
    attempts = [
        ("os.fork", posix.fork),
        ("os.forkpty", posix.forkpty),
        ("os.system", lambda: posix.system(witness.command)),
        ("os.execv", lambda: posix.execv(witness.argv[0], witness.argv)),
        ("os.execve", lambda: posix.execve(witness.argv[0], witness.argv, {})),
        ("os.posix_spawn", lambda: posix.posix_spawn(witness.argv[0], witness.argv, {})),
        ("os.posix_spawnp", lambda: posix.posix_spawnp("touch", ["touch", witness.file], {})),
    ]
    for op, attempt in attempts:
        with pytest.raises(RuntimeError) as raised:
            attempt()
        assert str(raised.value) == spawn_message(op)


def test_tampering_left_nothing_behind():
    """After the tests above (their fixtures restore what they changed), the sandbox's Python
    face is the real one again."""
    from _erlang_impl._sandbox import is_sandboxed

    assert is_sandboxed() is True
    assert sys.modules["_erlang_impl._sandbox"].is_sandboxed is C_SAYS_SANDBOXED
