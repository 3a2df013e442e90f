"""Exceptions as Erlang error values in a pool worker of ``mode => process``, by the rules
of c_src/py_error.c (docs/errors.md): {Type, Message, Traceback}, or with detailed errors
{Type, Message, Traceback, Info}. Type is sent as the class's name (a str); the Erlang side
makes it an atom where that atom exists (src/py_process_worker.erl), as the NIF does.
"""

import builtins
import traceback

from _erlang_impl import _etf
from _erlang_impl._process_erlang import Atom

_OWN_FILES = ("_process_worker.py", "_etf.py")
# How deep Info nests through causes and exception groups (DETAIL_MAX_DEPTH).
MAX_DEPTH = 5


def describe(exc, detailed):
    tb = exc.__traceback__
    # The first frames are this worker's own: the NIF's tracebacks start in user code.
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith(_OWN_FILES):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    message = _message(exc)
    if detailed:
        return (_type(exc), message, text, _info(exc, 0))
    return (_type(exc), message, text)


def _type(exc):
    """The class's name after its last dot, as the NIF takes it from tp_name."""
    return _etf.type_name(type(exc)).rsplit(".", 1)[-1]


def _message(exc):
    try:
        return str(exc)
    except Exception:
        return "<unprintable>"


def _detail(value):
    """value as a result would convert (once: a generator is consumed by it), or
    {py_object, Type, Repr} where that fails."""
    try:
        return _etf.Raw(_etf.encode(value)[1:])
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = "<repr failed>"
        return (Atom("py_object"), _etf.type_name(type(value)), text)


def _put_attr(info, exc, name, skip_none):
    try:
        value = getattr(exc, name)
    except Exception:
        return
    if value is None and skip_none:
        return
    info[Atom(name)] = _detail(value)


def _previous(exc):
    if exc.__cause__ is not None:
        return exc.__cause__
    if exc.__suppress_context__:
        return None
    return exc.__context__


def _info(exc, depth):
    info = {Atom("class"): f"{type(exc).__module__}.{type(exc).__qualname__}"}
    args = getattr(exc, "args", None)
    if isinstance(args, tuple):
        info[Atom("args")] = [_detail(a) for a in args]
    if isinstance(exc, OSError):
        _put_attr(info, exc, "errno", False)
        for name in ("strerror", "filename", "filename2"):
            _put_attr(info, exc, name, True)
    if isinstance(exc, KeyError) and isinstance(args, tuple) and args:
        info[Atom("key")] = _detail(args[0])
    if isinstance(exc, ImportError):
        _put_attr(info, exc, "name", True)
        _put_attr(info, exc, "path", True)
    if isinstance(exc, SyntaxError):
        for name in ("filename", "lineno", "offset", "text"):
            _put_attr(info, exc, name, True)
    if isinstance(exc, SystemExit):
        _put_attr(info, exc, "code", False)
    if isinstance(exc, StopIteration):
        _put_attr(info, exc, "value", False)
    if isinstance(exc, (UnicodeDecodeError, UnicodeEncodeError)):
        for name in ("encoding", "start", "end", "reason"):
            _put_attr(info, exc, name, False)
    notes = getattr(exc, "__notes__", None)
    if notes is not None:
        if isinstance(notes, (list, tuple)):
            info[Atom("notes")] = [_detail(n) for n in notes]
        else:
            info[Atom("notes")] = _detail(notes)
    if depth >= MAX_DEPTH:
        return info
    previous = _previous(exc)
    if isinstance(previous, BaseException):
        info[Atom("cause")] = _nested(previous, depth + 1)
    group = getattr(builtins, "BaseExceptionGroup", None)  # 3.11+
    if group is not None and isinstance(exc, group):
        info[Atom("exceptions")] = [
            _nested(sub, depth + 1) for sub in exc.exceptions if isinstance(sub, BaseException)
        ]
    return info


def _nested(exc, depth):
    return (_type(exc), _message(exc), _info(exc, depth))
