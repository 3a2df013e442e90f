"""Python's ``logging`` into Erlang's ``logger`` (docs/output.md, "logging").

The application installs ``ErlangHandler`` on the root logger at start (app env
``python_logging``, default true) and sets the root logger's level to what ``logger``'s
primary level lets through, so that a record Erlang would drop is never even formatted: a
disabled ``logging.debug(...)`` costs what it costs in plain Python, one level check.

Each record becomes one ``logger`` event, sent as a message to ``py_output``, which logs it
without Python waiting: the level mapped (CRITICAL and above: critical, ERROR: error,
WARNING: warning, INFO: info, below: debug), the message formatted with its arguments and,
with ``exc_info``, followed by the formatted traceback. Metadata: ``python_logger`` (the
logger's name), ``file`` and ``line`` (logger's own keys), ``python_function``,
``python_thread`` (the thread's name) and, with ``exc_info``, ``python_traceback``. No
``domain``: OTP's default handler drops other domains than OTP's.
"""

from __future__ import annotations

import logging
import traceback

import erlang

_LEVELS = (
    (logging.CRITICAL, "critical"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
)
# logger's levels, most severe first, and the Python level that lets each through.
_PYTHON_LEVEL = {
    "emergency": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    # Records map to info below WARNING: a notice level drops them all.
    "notice": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "all": logging.NOTSET + 1,
    "none": logging.CRITICAL + 1,
}
_ATOMS = {name: erlang.Atom(name) for _, name in _LEVELS} | {"debug": erlang.Atom("debug")}
_LOG = erlang.Atom("log")


def erlang_level(levelno: int) -> str:
    """The logger level of a Python level number."""
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "debug"


class ErlangHandler(logging.Handler):
    """Sends each record to Erlang's logger (see the module's docstring)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            meta = {
                "python_logger": record.name,
                "file": record.pathname,
                "line": record.lineno,
                "function": record.funcName,
                "thread": record.threadName,
            }
            if record.exc_info:
                trace = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                message = f"{message}\n{trace}"
                meta["traceback"] = trace
            elif record.exc_text:
                message = f"{message}\n{record.exc_text}"
            if record.stack_info:
                message = f"{message}\n{record.stack_info}"
            erlang.send("py_output", (_LOG, _ATOMS[erlang_level(record.levelno)], message, meta))
        except Exception:
            self.handleError(record)


def install() -> None:
    """Puts one ErlangHandler on the root logger (the application then sets the root level
    with ``set_level``, through ``py:sync_log_level/0``)."""
    uninstall()
    logging.getLogger().addHandler(ErlangHandler())


def set_level(primary_level: str) -> None:
    """The root logger's level for logger's primary level (``py:sync_log_level/0``)."""
    if primary_level not in _PYTHON_LEVEL:
        raise ValueError(f"not a logger level: {primary_level!r}")
    logging.getLogger().setLevel(_PYTHON_LEVEL[primary_level])


def uninstall() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ErlangHandler):
            root.removeHandler(handler)
