"""Type stub of `erlang`, the module that the erlang_python NIF builds into the embedded
interpreter (c_src/py_erlang_module.c); it exists only inside the Erlang VM.

Point an editor or mypy at this folder (mypy: `mypy_path = priv/python`, or MYPYPATH).
See docs/callbacks.md, docs/type-conversion.md, docs/ports.md and docs/asyncio.md.
"""

from typing import Any, NoReturn, final

# The event loop (docs/asyncio.md), defined in _erlang_impl._loop. erlang.run(coro) runs a
# coroutine; erlang.run(argv, ...) is the port helper _erlang_impl._ports.run.
from _erlang_impl._loop import ErlangEventLoop as ErlangEventLoop
from _erlang_impl._loop import Mailbox as Mailbox
from _erlang_impl._loop import async_call as async_call
from _erlang_impl._loop import new_event_loop as new_event_loop
from _erlang_impl._loop import run as run

# The port helpers (docs/ports.md), defined in _erlang_impl._ports and reached through this
# module's __getattr__.
from _erlang_impl._ports import CommandTimeout as CommandTimeout
from _erlang_impl._ports import OutputLimitExceeded as OutputLimitExceeded
from _erlang_impl._ports import Worker as Worker
from _erlang_impl._ports import run_shell as run_shell
from _erlang_impl._ports import start_worker as start_worker

__all__ = [
    "Atom",
    "CallCancelled",
    "CommandTimeout",
    "OutputLimitExceeded",
    "Worker",
    "Error",
    "ErlangEventLoop",
    "ErlangException",
    "Fun",
    "Function",
    "Mailbox",
    "Pid",
    "Port",
    "Reference",
    "UnknownFunction",
    "async_call",
    "call",
    "new_event_loop",
    "run",
    "run_shell",
    "self",
    "send",
    "start_worker",
]

class Atom(str):
    """An Erlang atom: a str that converts back to the same atom.

    Making one does not create the atom; converting it to Erlang does, up to the atom_limit
    application env, since atoms are never freed.
    """

    __slots__ = ()

# Opaque Erlang terms: they compare equal and hash alike when they hold the same term, and go
# back to Erlang as the identical term. Only Erlang makes them (calling the class raises
# TypeError).

@final
class Pid:
    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Reference:
    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Port:
    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Fun:
    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Error(Exception):
    """Base class of the errors this module raises."""

class UnknownFunction(Error, LookupError):
    """erlang.call named a function that is not registered."""

    name: str
    def __init__(self, name: str) -> None: ...

class ErlangException(Error):
    """The Erlang function raised an error, threw or exited.

    str(exception) is "kind: formatted reason".
    """

    kind: Atom
    """Atom('error'), Atom('throw') or Atom('exit')."""
    reason: Any
    """The reason converted to Python; its text where it cannot be converted."""
    formatted_reason: str
    """The reason as Erlang prints it (~p)."""
    stacktrace: str
    """The Erlang stacktrace, as text."""
    def __init__(self, kind: Atom, reason: Any, formatted_reason: str, stacktrace: str) -> None: ...

class CallCancelled(BaseException):
    """The py:call this code runs for timed out or its caller exited.

    A BaseException, so that `except Exception` does not swallow it.
    """

class Function:
    """A registered Erlang function, as erlang.name or `from erlang import name`.

    Looked up by name at each call: UnknownFunction if nothing is registered then. Keyword
    arguments, if any, reach the Erlang function as a map appended to its arguments.
    """

    __slots__ = ("name",)
    name: str
    def __init__(self, name: str) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def call(name: str, /, *args: Any) -> Any:
    """Call the Erlang function registered as name with args and return its result.

    Raises UnknownFunction, ErlangException or CallCancelled.
    """

def send(dest: Pid | str, term: Any, /) -> None:
    """Send term to dest, a Pid or a registered name. Like Erlang's !, a message to a process
    that has exited is dropped. TypeError for a destination of another type, Error for a name
    that no process is registered under."""

def self() -> Pid | None:
    """The Pid of the Erlang process whose py:call this code runs for, or None on a thread that
    runs none."""

def __getattr__(name: str) -> Function:
    """erlang.name and `from erlang import name`: the registered Erlang function name."""
