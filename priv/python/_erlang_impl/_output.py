"""sys.stdout, sys.stderr and sys.stdin of the embedded interpreter (docs/output.md).

Python's output goes where Erlang output goes: what code running for a ``py:call``,
``py:eval`` or ``py:exec`` writes reaches the group leader of the calling Erlang process, as
``io:put_chars`` would (so ``rebar3 shell``, remote shells, ``ct`` logs and releases see
it); what a thread Python started writes, or code running for no call, goes to the
application env ``default_output`` (``logger`` or ``stdout``). Each thread's text is
line-buffered: complete lines go at once, a partial line when the call ends (or on
``flush``). The text travels as a message to the registered process ``py_output``
(src/py_output.erl), which writes it without waiting for the group leader.

``sys.stdin`` is always at its end: ``input()`` raises ``EOFError``; the VM's own stdin is
never read. Writes of C code to descriptors 1 and 2 are the OS's and go to the VM's stdout
and stderr as before.
"""

from __future__ import annotations

import io
import sys
import threading

import erlang

_UNDEFINED = erlang.Atom("undefined")


class ErlangOutput(io.TextIOBase):
    """A text stream whose lines go to Erlang (see the module's docstring)."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name
        self._atom = erlang.Atom(name)
        self._local = threading.local()

    @property
    def name(self):
        return f"<erlang {self._name}>"

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation(f"sys.{self._name} of erlang_python has no descriptor")

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        pending = getattr(self._local, "pending", "") + text
        cut = pending.rfind("\n") + 1
        if cut:
            self._send(pending[:cut])
            pending = pending[cut:]
        self._local.pending = pending
        if pending:
            erlang._note_partial_output()
        return len(text)

    def flush(self):
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self._send(pending)

    def _send(self, text):
        try:
            target = erlang._output_target()
            erlang.send("py_output", (self._atom, _UNDEFINED if target is None else target, text))
        except erlang.Error:
            # py_output is not running (the application is stopping): the VM's own stream.
            stream = sys.__stdout__ if self._name == "stdout" else sys.__stderr__
            if stream is not None:
                stream.write(text)
                stream.flush()


class ErlangInput(io.TextIOBase):
    """A stdin at its end: the VM's stdin belongs to the VM."""

    @property
    def name(self):
        return "<erlang stdin>"

    def readable(self):
        return True

    def read(self, size=-1):
        return ""

    def readline(self, size=-1):
        return ""

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation("sys.stdin of erlang_python has no descriptor")


def install() -> None:
    """Puts the Erlang streams in sys (the application calls it at start)."""
    if not isinstance(sys.stdout, ErlangOutput):
        sys.stdout = ErlangOutput("stdout")
    if not isinstance(sys.stderr, ErlangOutput):
        sys.stderr = ErlangOutput("stderr")
    if not isinstance(sys.stdin, ErlangInput):
        sys.stdin = ErlangInput()


def flush_thread() -> None:
    """Sends this thread's partial lines (the runtime calls it when a call ends)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, ErlangOutput):
            stream.flush()
