"""The ``erlang`` module of a pool worker in ``mode => process`` (docs/pools.md).

The same names as the embedded module (c_src/py_erlang_module.c): Atom, the opaque term
types, the exceptions, ``call``, ``send``, ``self`` and ``erlang.name(...)``. Calls and sends
travel as frames to the Erlang process that owns this worker's port
(_erlang_impl._process_worker), which runs them in the VM.
"""


class Atom(str):
    """An Erlang atom: a str that converts back to the same atom."""

    __slots__ = ()

    def __repr__(self):
        return "Atom(" + str.__repr__(self) + ")"


class _Opaque:
    """A pid, reference, port or fun: its external term format, which converts back to the
    identical term. Equal when they hold the same term; cannot be made from Python."""

    __slots__ = ("_etf",)

    def __init__(self, *args, **kwargs):
        raise TypeError(f"cannot create '{type(self).__name__}' instances")

    @classmethod
    def _of(cls, etf):
        """Made by the converter only, from a term's external format."""
        opaque = object.__new__(cls)
        opaque._etf = etf
        return opaque

    def __eq__(self, other):
        return type(self) is type(other) and self._etf == other._etf

    def __hash__(self):
        return hash((type(self).__name__, self._etf))

    def __repr__(self):
        return f"{type(self).__name__}(<{self._etf.hex()}>)"


class Pid(_Opaque):
    __slots__ = ()


class Reference(_Opaque):
    __slots__ = ()


class Port(_Opaque):
    __slots__ = ()


class Fun(_Opaque):
    __slots__ = ()


class Error(Exception):
    """Base class of the errors this module raises."""


class UnknownFunction(Error, LookupError):
    """erlang.call named a function that is not registered."""

    def __init__(self, name):
        super().__init__(
            f"no Erlang function is registered as {name!r} (see py:register_function/2)"
        )
        self.name = name


class ErlangException(Error):
    """The Erlang function raised an error, threw or exited."""

    def __init__(self, kind, reason, formatted_reason, stacktrace):
        super().__init__(f"{kind}: {formatted_reason}")
        self.kind = kind
        self.reason = reason
        self.formatted_reason = formatted_reason
        self.stacktrace = stacktrace


class CallCancelled(BaseException):
    """The py:call this code runs for timed out or its caller exited."""


class Function:
    """A registered Erlang function, as erlang.name or from erlang import name."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        if kwargs:
            args += (kwargs,)
        return call(self.name, *args)

    def __repr__(self):
        return f"<erlang function {self.name}>"


# Set by _process_worker: the connection to the VM.
_worker = None


def call(name, *args):
    """Calls the Erlang function registered as ``name`` in the VM and returns its result."""
    if not isinstance(name, str):
        raise TypeError("erlang.call(name, *args): name must be a str")
    return _worker.callback(name, list(args))


def send(dest, term):
    """Sends ``term`` to the Erlang process ``dest`` (a Pid or a registered name)."""
    if not isinstance(dest, (Pid, str)):
        raise TypeError(
            "erlang.send: destination must be a Pid or a registered name, not "
            f"{type(dest).__name__:.100}"
        )
    _worker.send(dest if isinstance(dest, Pid) else str.__str__(dest), term)


def self():
    """The pid of the process whose call this runs for."""
    return _worker.caller()


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    return Function(name)
