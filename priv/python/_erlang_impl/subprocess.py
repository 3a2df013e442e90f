"""A ``subprocess`` work-alike whose processes are Erlang ports (docs/ports.md).

``Popen`` and the functions around it (``run``, ``call``, ``check_call``, ``check_output``,
``getoutput``, ``getstatusoutput``) keep the standard library's semantics for the common
arguments (args, shell, cwd, env, stdin/stdout/stderr, input, capture_output,
text/encoding/errors/universal_newlines, timeout, check) but run each process through a
worker of the port helpers (``_erlang_impl._ports``), so that nothing forks inside the VM.
Exit codes are the program's own; ``-N`` means signal N killed it.

Off by default. With the application env ``{subprocess, ports}`` the application installs
this layer into the standard ``subprocess`` module when it starts, so that third-party
code that shells out (``ctypes.util.find_library``, ``platform.architecture``, ``uuid``)
works; with ``blocked`` (the default) the sandbox refuses ``subprocess`` as the spec says.
Importing this module directly always works.

Differences that cannot be helped, each refused with ``ValueError`` rather than ignored:
``preexec_fn``, ``pass_fds``, ``executable``, ``user``, ``group``, ``extra_groups``,
``umask`` and ``process_group`` have no port equivalent. ``stdin=None`` reads
``/dev/null``: the VM's stdin is never given away. A file or descriptor given as a stream
is served by a thread that copies between it and the port. ``start_new_session=True``
detaches the process from the calling Erlang process (see ``start_worker``).
"""

from __future__ import annotations

import io
import subprocess as _std
import threading

from _erlang_impl import _ports

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "CompletedProcess",
    "Popen",
    "SubprocessError",
    "TimeoutExpired",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "run",
]

PIPE = _std.PIPE
STDOUT = _std.STDOUT
DEVNULL = _std.DEVNULL
SubprocessError = _std.SubprocessError
CalledProcessError = _std.CalledProcessError
TimeoutExpired = _std.TimeoutExpired
CompletedProcess = _std.CompletedProcess

_UNSUPPORTED = {
    "preexec_fn": None,
    "pass_fds": (),
    "executable": None,
    "user": None,
    "group": None,
    "extra_groups": None,
    "umask": -1,
    "process_group": None,
}
_IGNORED = ("bufsize", "close_fds", "startupinfo", "creationflags", "restore_signals", "pipesize")


class _Reader(io.RawIOBase):
    """The raw stream of a worker's stdout or stderr."""

    def __init__(self, worker: _ports.Worker, stream: str):
        self._worker = worker
        self._stream = stream
        self.drained = False  # communicate took the rest: report end of stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.drained:
            return 0
        data = self._worker.read(len(b), stream=self._stream)
        b[: len(data)] = data
        return len(data)


class _Writer(io.RawIOBase):
    """The raw stream of a worker's stdin; closing it closes the process's stdin."""

    def __init__(self, worker: _ports.Worker):
        self._worker = worker
        self.detached = False  # communicate closes the process's stdin after its input

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self._worker.write(bytes(b))

    def close(self) -> None:
        if not self.closed:
            try:
                if not self._worker.closed and not self.detached:
                    self._worker.close_stdin()
            finally:
                super().close()


def _fileno(obj) -> int | None:
    if isinstance(obj, int) and obj >= 0:
        return obj
    fileno = getattr(obj, "fileno", None)
    return fileno() if fileno is not None else None


class Popen:
    """``subprocess.Popen`` over an Erlang port (see the module's docstring)."""

    def __init__(
        self,
        args,
        bufsize=-1,
        executable=None,
        stdin=None,
        stdout=None,
        stderr=None,
        preexec_fn=None,
        close_fds=True,
        shell=False,
        cwd=None,
        env=None,
        universal_newlines=None,
        startupinfo=None,
        creationflags=0,
        restore_signals=True,
        start_new_session=False,
        pass_fds=(),
        *,
        encoding=None,
        errors=None,
        text=None,
        **more,
    ):
        given = dict(
            more,
            preexec_fn=preexec_fn,
            pass_fds=pass_fds,
            executable=executable,
        )
        for name, value in given.items():
            if name in _IGNORED:
                continue
            if name not in _UNSUPPORTED:
                raise TypeError(f"Popen() got an unexpected keyword argument {name!r}")
            if value != _UNSUPPORTED[name]:
                raise ValueError(
                    f"Popen({name}=...) is not supported by the port-backed subprocess layer"
                )
        self.args = args
        self.returncode = None
        self.text_mode = bool(text or universal_newlines or encoding or errors)
        self.universal_newlines = self.text_mode
        self.encoding = encoding or "utf-8"
        self.errors = errors or "strict"
        self.stdin = self.stdout = self.stderr = None
        self._pumps: list[threading.Thread] = []

        if shell:
            command = args if isinstance(args, (str, bytes)) else " ".join(map(str, args))
            argv = ["/bin/sh", "-c", command]
        elif isinstance(args, (str, bytes)):
            argv = [args]
        else:
            argv = list(args)
        where = {
            "stdin": self._where(stdin, "stdin"),
            "stdout": self._where(stdout, "stdout"),
            "stderr": ("stdout", None) if stderr == STDOUT else self._where(stderr, "stderr"),
        }
        self._worker = _ports.start_worker(
            argv,
            cwd=cwd,
            env=env,
            detached=bool(start_new_session),
            **{k: v[0] for k, v in where.items()},
        )
        self.pid = self._worker.pid
        self._files(where, bufsize)

    @staticmethod
    def _where(spec, name: str):
        """(where, descriptor to pump or None) for one stream argument."""
        if spec is None:
            return ("null" if name == "stdin" else "inherit", None)
        if spec == PIPE:
            return ("pipe", None)
        if spec == DEVNULL:
            return ("null", None)
        fd = _fileno(spec)
        if fd is None:
            raise ValueError(f"{name} must be PIPE, DEVNULL, STDOUT, None, a file or a descriptor")
        return ("pipe", fd)

    def _files(self, where: dict, bufsize: int) -> None:
        worker = self._worker
        stdin_where, stdin_fd = where["stdin"]
        if stdin_where == "pipe":
            raw = self._stdin_raw = _Writer(worker)
            if stdin_fd is not None:
                self._pump(self._copy_in, stdin_fd, raw)
            else:
                self.stdin = io.BufferedWriter(raw) if bufsize != 0 else raw
                if self.text_mode:
                    self.stdin = io.TextIOWrapper(
                        self.stdin,
                        self.encoding,
                        self.errors,
                        write_through=True,
                        line_buffering=bufsize == 1,
                    )
        self._raw = {}
        for name in ("stdout", "stderr"):
            spec = where[name]
            if spec[0] != "pipe":
                continue
            raw = self._raw[name] = _Reader(worker, name)
            if spec[1] is not None:
                self._pump(self._copy_out, raw, spec[1])
                continue
            stream = io.BufferedReader(raw)
            if self.text_mode:
                stream = io.TextIOWrapper(stream, self.encoding, self.errors)
            setattr(self, name, stream)

    def _pump(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._pumps.append(thread)

    @staticmethod
    def _copy_out(raw: _Reader, fd: int) -> None:
        import os

        buf = bytearray(65536)
        while True:
            n = raw.readinto(buf)
            if not n:
                return
            view = memoryview(buf)[:n]
            while view:
                view = view[os.write(fd, view) :]

    @staticmethod
    def _copy_in(fd: int, raw: _Writer) -> None:
        import os

        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                raw.write(data)
        except (BrokenPipeError, ValueError):
            pass
        finally:
            raw.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: returncode: {self.returncode} args: {self.args!r}>"

    # -- the process

    def poll(self):
        if self.returncode is None:
            self.returncode = self._worker.poll()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            try:
                self.returncode = self._worker.wait(timeout)
            except TimeoutError:
                raise TimeoutExpired(self.args, timeout) from None
        for thread in self._pumps:
            thread.join()
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            self._worker.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, input=None, timeout=None):
        # The input goes with the communicate request: the worker writes it while it
        # collects the output, so a command that fills its stdout before it has read all
        # of its stdin cannot deadlock with us.
        pending = None
        if self.stdin is not None and not self.stdin.closed:
            if input:
                if self.text_mode and isinstance(input, str):
                    input = input.encode(self.encoding, self.errors)
                self.stdin.flush()
                pending = bytes(input)
            if pending is not None:
                self._stdin_raw.detached = True
            self.stdin.close()
        elif input:
            raise ValueError("input given but stdin is not a pipe")
        if self.stdout is None and self.stderr is None and pending is None:
            self.wait(timeout)
            return (None, None)
        try:
            out, err, status = self._worker._op(
                "communicate", pending, _ports._seconds("timeout", timeout)
            )
        except TimeoutError:
            raise TimeoutExpired(self.args, timeout) from None
        except _ports.OutputLimitExceeded:
            self.kill()
            raise
        self.returncode = status
        result = []
        for name, data in (("stdout", out), ("stderr", err)):
            stream = getattr(self, name)
            if stream is None:
                result.append(None)
                continue
            self._raw[name].drained = True
            before = stream.read()
            stream.close()
            if self.text_mode:
                data = (
                    data.decode(self.encoding, self.errors)
                    .replace("\r\n", "\n")
                    .replace("\r", "\n")
                )
            result.append(before + data)
        self._worker.close()
        return tuple(result)

    # -- context manager. No __del__: the worker handle is shared with the stream objects
    # (os.popen keeps only those), and its own finaliser ends the process once the last of
    # them is gone.

    def __enter__(self):
        return self

    def __exit__(self, exc_type, value, traceback):
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        try:
            if self.stdin is not None:
                self.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            try:
                self.wait()
            finally:
                self._worker.close()


# ---------------------------------------------------------------------------
# The functions around Popen, with the standard library's semantics


def run(*popenargs, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = kwargs["stderr"] = PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process._worker.kill()
            process.wait()
            raise
        except BaseException:
            process._worker.kill()
            raise
        retcode = process.poll()
        if check and retcode:
            raise CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs, timeout=None, **kwargs):
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException:
            p._worker.kill()
            raise


def check_call(*popenargs, **kwargs):
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args", popenargs[0] if popenargs else None)
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs, timeout=None, **kwargs):
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be overridden.")
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd, *, encoding=None, errors=None):
    try:
        data = check_output(
            cmd, shell=True, text=True, stderr=STDOUT, encoding=encoding, errors=errors
        )
        exitcode = 0
    except CalledProcessError as ex:
        data = ex.output
        exitcode = ex.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd, *, encoding=None, errors=None):
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]


# ---------------------------------------------------------------------------
# Installing into the standard subprocess module

_REPLACED = ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput")
_originals = {name: getattr(_std, name) for name in _REPLACED}


def _set_mode(mode: str) -> str:
    """Called by the application at start with its env ``subprocess``: ``ports`` puts this
    layer into the standard module, ``blocked`` puts the originals back (which the sandbox
    refuses). Returns the mode."""
    if mode == "ports":
        source = globals()
    elif mode == "blocked":
        source = _originals
    else:
        raise ValueError(f"subprocess mode must be 'ports' or 'blocked', not {mode!r}")
    for name in _REPLACED:
        setattr(_std, name, source[name])
    return mode


def mode() -> str:
    """``ports`` if this layer is installed in the standard ``subprocess`` module."""
    return "ports" if _std.Popen is Popen else "blocked"
