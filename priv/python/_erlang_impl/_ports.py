"""OS commands for sandboxed Python, run by Erlang ports: the faces of the port helpers.

The sandbox refuses fork and exec in the VM's process. These functions ask Erlang to run
the command instead, through the port program ``priv/py_exec_port`` (docs/ports.md):

- ``run_shell(cmd)``: ``/bin/sh -c cmd``, stdout and stderr merged, returns the output as
  a ``str`` with a ``returncode`` attribute;
- ``run(args)``: an argv list, no shell; returns a ``subprocess.CompletedProcess`` with
  ``stdout`` and ``stderr`` apart, as ``bytes``;
- ``start_worker(args_or_cmd)``: a long-running process behind a ``Worker`` handle.

Design. Each function calls the Erlang function registered under its own name
(``run_shell``, ``run``, ``start_worker``; py_port_helpers.erl), so a user who registers a
function of that name with ``py:register_function`` replaces the built-in one here too: its
answer is returned as it is. The built-ins answer ``('$erlang_python', 'ok' | 'error', X)``,
which is how an answer of theirs is told from a user's.

Deliberate limits. A command never inherits the VM's stdin (it reads ``/dev/null``, or a
pipe). When a command ends, or its worker is closed, whatever it left running in the
background is killed. Output beyond ``max_output`` bytes (64 MiB by default) kills the
command and raises ``OutputLimitExceeded``: a command that prints forever cannot grow the
VM's memory without bound.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Union

import erlang

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "CommandTimeout",
    "OutputLimitExceeded",
    "ShellOutput",
    "Worker",
    "run",
    "run_shell",
    "start_worker",
]

DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
_TAG = "$erlang_python"
_CHUNK = 65536

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class CommandTimeout(subprocess.TimeoutExpired, TimeoutError):
    """The command ran past its timeout; it and everything it started were killed.

    A ``subprocess.TimeoutExpired`` and a ``TimeoutError``; ``output`` and ``stderr`` hold
    what the command wrote before it was killed."""


class OutputLimitExceeded(erlang.Error):
    """The command wrote more than ``max_output`` bytes; it was killed.

    ``output`` (and ``stderr`` for run) hold the first bytes it wrote."""

    def __init__(self, cmd, limit: int, output: bytes, stderr: bytes | None = None):
        super().__init__(f"{cmd!r} wrote more than max_output={limit} bytes and was killed")
        self.cmd = cmd
        self.limit = limit
        self.output = output
        self.stderr = stderr


class ShellOutput(str):
    """What run_shell returns: the output as ``str``, and ``returncode``."""

    returncode: int

    def __new__(cls, text: str, returncode: int) -> ShellOutput:
        self = super().__new__(cls, text)
        self.returncode = returncode
        return self


# ---------------------------------------------------------------------------
# Calling the Erlang side


def _call(name: str, *args):
    """(True, value) or the raised error for a built-in's answer; (None, answer) else."""
    answer = erlang.call(name, *args)
    if type(answer) is tuple and len(answer) == 3 and answer[0] == _TAG:
        if answer[1] == "ok":
            return True, answer[2]
        raise _error(answer[2])
    return None, answer


def _error(reason) -> BaseException:
    """The Python exception for an error reason of py_port_helpers."""
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] in ("timeout", "output_limit"):
        return _PartialRun(str(reason[0]), reason[1])
    if isinstance(reason, tuple) and reason:
        kind = reason[0]
        if kind == "os_error":
            _, _, errno_, stage, program = reason
            filename = os.fsdecode(program) if stage == "exec" else None
            err = OSError(errno_, os.strerror(errno_), filename)
            if stage == "chdir":
                err.strerror = f"{err.strerror} (cwd)"
            return err
        if kind == "badarg":
            what, value = reason[1] if isinstance(reason[1], tuple) else (reason[1], None)
            return TypeError(f"bad {what}: {value!r}")
    if reason == "timeout":
        return TimeoutError("timed out")
    if reason == "closed":
        return ValueError("I/O operation on a closed worker")
    if reason == "epipe":
        return BrokenPipeError(32, "the command closed its stdin")
    if reason == "closed_stdin":
        return ValueError("write to a closed stdin")
    if reason == "output_limit":
        return OutputLimitExceeded("communicate", -1, b"")
    return erlang.Error(f"port helper failed: {reason!r}")


def _seconds(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if value < 0 or value != value:
        raise ValueError(f"{name} must be >= 0")
    return value


def _path(name: str, value) -> bytes:
    try:
        path = os.fsencode(value)
    except TypeError:
        raise TypeError(
            f"{name} must be str, bytes or os.PathLike, not {type(value).__name__}"
        ) from None
    if b"\0" in path:
        raise ValueError(f"embedded null byte in {name}")
    return path


def _argv(args) -> list[bytes]:
    if isinstance(args, (str, bytes, os.PathLike)):
        raise TypeError("args must be a sequence of arguments (use run_shell for a command line)")
    try:
        argv = [_path("argument", a) for a in args]
    except TypeError as e:
        raise TypeError(f"args: {e}") from None
    if not argv:
        raise ValueError("args is empty")
    return argv


def _env(env: Mapping | None) -> dict | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    out = {}
    for key, value in env.items():
        k, v = _path("env key", key), _path("env value", value)
        if not k or b"=" in k:
            raise ValueError(f"illegal environment variable name {key!r}")
        out[k] = v
    return out


def _cwd(cwd) -> bytes | None:
    """The command's directory: the given one, else Python's working directory when it is
    not the VM's (os.chdir changes it for Python's threads alone; docs/runtime.md). None
    lets the command start in the VM's."""
    if cwd is not None:
        return _path("cwd", cwd)
    try:
        mine = os.getcwd()
        # The process's entry is its main thread's: the VM's directory.
        if mine != os.readlink(f"/proc/{os.getpid()}/cwd"):
            return os.fsencode(mine)
    except OSError:
        pass
    return None


def _options(**given) -> dict:
    return {k: v for k, v in given.items() if v is not None}


def _max_output(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_output must be an int")
    if value < 0:
        raise ValueError("max_output must be >= 0")
    return value


# ---------------------------------------------------------------------------
# One-shot commands


def run_shell(
    cmd: str,
    *,
    timeout: float | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    cwd: StrOrBytesPath | None = None,
    env: Mapping | None = None,
) -> ShellOutput:
    """Run ``cmd`` with ``/bin/sh -c`` and return its output, stdout and stderr merged.

    The result is a ``str`` (bytes that are not UTF-8 become U+FFFD; use ``run`` for the
    bytes themselves) whose ``returncode`` is the exit status, or ``-N`` if signal N killed
    the shell. Raises ``CommandTimeout`` at ``timeout`` seconds, ``OutputLimitExceeded``
    past ``max_output`` bytes; in both cases the command and everything it started were
    killed first."""
    if not isinstance(cmd, (str, bytes)):
        raise TypeError(f"cmd must be str or bytes, not {type(cmd).__name__}")
    line = _path("cmd", cmd)
    options = _options(
        timeout=_seconds("timeout", timeout),
        max_output=None if max_output == DEFAULT_MAX_OUTPUT else _max_output(max_output),
        cwd=_cwd(cwd),
        env=_env(env),
    )
    args = (line, options) if options else (line,)
    try:
        builtin, value = _call("run_shell", *args)
    except _PartialRun as partial:
        raise partial.exception(cmd, timeout, max_output, merged=True) from None
    if not builtin:
        return value
    return ShellOutput(value["output"].decode("utf-8", "replace"), value["returncode"])


def run(
    args: Sequence[StrOrBytesPath],
    *,
    input: bytes | None = None,
    cwd: StrOrBytesPath | None = None,
    env: Mapping | None = None,
    timeout: float | None = None,
    max_output: int | None = None,
) -> subprocess.CompletedProcess:
    """Run the program ``args[0]`` with ``args``, no shell, and wait for it.

    Returns a ``subprocess.CompletedProcess`` with ``returncode`` and ``stdout`` and
    ``stderr`` as ``bytes``, kept apart. ``input`` is written to its stdin, which is then
    closed; without it stdin is ``/dev/null``. A program not found raises
    ``FileNotFoundError``; ``CommandTimeout`` and ``OutputLimitExceeded`` as for run_shell."""
    argv = _argv(args)
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        raise TypeError(f"input must be bytes, not {type(input).__name__}")
    options = _options(
        input=None if input is None else bytes(input),
        cwd=_cwd(cwd),
        env=_env(env),
        timeout=_seconds("timeout", timeout),
        max_output=None if max_output is None else _max_output(max_output),
    )
    try:
        builtin, value = _call("run", argv, options)
    except _PartialRun as partial:
        raise partial.exception(list(args), timeout, max_output, merged=False) from None
    if not builtin:
        return value
    return subprocess.CompletedProcess(
        list(args), value["returncode"], value["stdout"], value["stderr"]
    )


class _PartialRun(Exception):
    """Internal: a timed-out or over-limit run, with what it wrote."""

    def __init__(self, why: str, partial: dict):
        self.why = why
        self.partial = partial

    def exception(self, cmd, timeout, limit, merged: bool) -> BaseException:
        out = self.partial["output" if merged else "stdout"]
        err = None if merged else self.partial["stderr"]
        if self.why == "timeout":
            return CommandTimeout(cmd, timeout, output=out, stderr=err)
        return OutputLimitExceeded(cmd, DEFAULT_MAX_OUTPUT if limit is None else limit, out, err)


# ---------------------------------------------------------------------------
# Long-running workers

_STREAMS = ("stdin", "stdout", "stderr")
_WHERE = ("pipe", "null", "inherit", "stdout")


def start_worker(
    args_or_cmd: str | Sequence[StrOrBytesPath],
    *,
    cwd: StrOrBytesPath | None = None,
    env: Mapping | None = None,
    stdin: str = "pipe",
    stdout: str = "pipe",
    stderr: str = "inherit",
    text: bool = False,
    encoding: str = "utf-8",
    errors: str = "strict",
    detached: bool = False,
) -> Worker:
    """Start a long-running process and return a ``Worker`` handle.

    ``args_or_cmd`` is a command line for ``/bin/sh -c`` (a ``str``) or an argv list. Each
    of ``stdin``, ``stdout``, ``stderr`` is ``"pipe"``, ``"null"`` or ``"inherit"`` (the
    VM's own stream; not for stdin), and stderr may be ``"stdout"``. With ``text`` the
    handle reads and writes ``str``. The process is killed when the handle is closed or
    garbage-collected, and when the Erlang process whose ``py:call`` started it exits,
    unless ``detached`` (then only the first two, and the application's stop, end it)."""
    if isinstance(args_or_cmd, (str, bytes)):
        command = _path("cmd", args_or_cmd)
    else:
        command = _argv(args_or_cmd)
    where = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    for name, value in where.items():
        if value not in _WHERE or (name == "stdin" and value not in ("pipe", "null")):
            raise ValueError(f"{name} must be one of {_WHERE}, not {value!r}")
        if name == "stdout" and value == "stdout":
            raise ValueError("stdout cannot go to stdout")
    owner = None if detached else erlang.self()
    options = _options(
        cwd=_cwd(cwd),
        env=_env(env),
        owner=owner,
        **where,
    )
    builtin, info = _call("start_worker", command, options)
    if not builtin:
        return info
    return Worker(info, where, text, encoding, errors)


class Worker:
    """A long-running OS process started by start_worker.

    ``pid`` is its OS pid, ``port`` the Erlang port that runs it, ``returncode`` None until
    it ends. Reads take ``timeout`` seconds (None waits) and raise ``TimeoutError``, keeping
    what had arrived; at end of stream they return what is left, then empty. A handle can be
    used from several threads, one operation of each kind at a time."""

    def __init__(self, info: dict, where: dict, text: bool, encoding: str, errors: str):
        self._worker = info["worker"]
        self.pid: int = info["os_pid"]
        self.port = info["port"]
        self.returncode: int | None = None
        self._where = where
        self._text = text
        self._encoding = encoding
        self._errors = errors
        self._buffers = {"stdout": bytearray(), "stderr": bytearray()}
        self._eof = {"stdout": False, "stderr": False}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"returncode={self.returncode}"
        return f"<erlang.Worker pid={self.pid} {state}>"

    # -- plumbing

    def _op(self, op: str, *args):
        if self._closed:
            raise ValueError("I/O operation on a closed worker")
        return _call("erlang_python.worker", self._worker, op, *args)[1]

    def _decode(self, data: bytes):
        return data.decode(self._encoding, self._errors) if self._text else data

    def _fill(self, stream: str, deadline: float | None) -> bool:
        """One more chunk into the stream's buffer; False at end of stream."""
        if self._eof[stream]:
            return False
        if self._where[stream] != "pipe":
            raise ValueError(f"{stream} is not a pipe (start_worker({stream}='pipe'))")
        remaining = None if deadline is None else max(0.0, deadline - _monotonic())
        chunk = self._op("read", stream, _CHUNK, remaining)
        if chunk == "eof":
            self._eof[stream] = True
            return False
        self._buffers[stream] += chunk
        return True

    # -- reading

    def read(self, n: int = -1, timeout: float | None = None, stream: str = "stdout"):
        """Up to ``n`` bytes (or all, to the end, if ``n`` < 0); waits for at least one."""
        deadline = _deadline(timeout)
        buf = self._buffers[stream]
        if n < 0:
            while self._fill(stream, deadline):
                pass
            n = len(buf)
        elif not buf:
            self._fill(stream, deadline)
        data = bytes(buf[:n])
        del buf[:n]
        return self._decode(data)

    def readline(self, timeout: float | None = None, stream: str = "stdout"):
        """One line, with its newline; the last one may have none; empty at the end."""
        deadline = _deadline(timeout)
        buf = self._buffers[stream]
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                return self._decode(line)
            start = len(buf)
            if not self._fill(stream, deadline):
                line = bytes(buf)
                buf.clear()
                return self._decode(line)

    def __iter__(self) -> Iterator:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    # -- writing

    def write(self, data) -> int:
        """Writes ``data`` to the process's stdin; returns once it has taken all of it."""
        if isinstance(data, str):
            data = data.encode(self._encoding, self._errors)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes or str, not {type(data).__name__}")
        data = bytes(data)
        self._op("write", data)
        return len(data)

    def close_stdin(self) -> None:
        """Closes the process's stdin: it reads end of file."""
        self._op("close_stdin")

    # -- the process

    def poll(self) -> int | None:
        if self.returncode is None and not self._closed:
            status = self._op("poll")
            self.returncode = None if status == "undefined" else status
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the process to end and returns its returncode; TimeoutError if not."""
        if self.returncode is None:
            self.returncode = self._op("wait", _seconds("timeout", timeout))
        return self.returncode

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Sends signal ``sig`` to the process, or to its whole process group."""
        if self.returncode is None or group:
            self._op("signal", int(sig), bool(group))

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        """Kills the process and its process group (SIGKILL)."""
        self.send_signal(9, group=True)

    def close(self) -> None:
        """Kills the process and everything it started, if still running; idempotent."""
        if not self._closed:
            try:
                self._op("close")
            finally:
                self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # No Erlang call here (a collector may run on any thread, inside any call): a
        # message to the worker's process, which then kills the command.
        if not getattr(self, "_closed", True):
            try:
                erlang.send(self._worker, erlang.Atom("$py_worker_close"))
            except Exception:
                pass


_monotonic = time.monotonic


def _deadline(timeout) -> float | None:
    seconds = _seconds("timeout", timeout)
    return None if seconds is None else _monotonic() + seconds
