"""ErlangEventLoop: an asyncio event loop driven by the Erlang VM (docs/asyncio.md).

The loop is the standard library's selector loop with a selector of its own: the descriptors
asyncio watches sit in an epoll set that the VM watches for the loop (``enif_select``), the
loop's timer is an Erlang timer, and the thread running the loop sleeps, GIL released, until
the loop's Erlang process (src/py_event_loop.erl) reports something. So asyncio libraries run
unchanged, an idle loop costs nothing, and Erlang can reach the loop: ``erlang.async_call``
awaits a registered Erlang function without blocking the loop, and a ``Mailbox`` is a pid
whose messages a coroutine awaits.

Entry points, on the ``erlang`` module: ``erlang.run(coro)``, ``erlang.new_event_loop()``,
``asyncio.Runner(loop_factory=erlang.new_event_loop)`` (3.11+), ``erlang.async_call`` and
``erlang.Mailbox``. A ``py:call`` of an ``async def`` function runs its coroutine with
``run_coroutine``.

Not supported, as the sandbox's spec says: signal handlers (``add_signal_handler`` and
``remove_signal_handler`` raise ``NotImplementedError``; handle signals in Erlang).
Subprocesses (``subprocess_exec``, ``subprocess_shell``) are refused with the sandbox's
message, or run through Erlang ports when the application env ``subprocess`` is ``ports``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import selectors

import erlang

__all__ = [
    "ErlangEventLoop",
    "Mailbox",
    "async_call",
    "new_event_loop",
    "run",
    "run_coroutine",
]

_SUBPROCESS_REFUSED = (
    "subprocess.Popen is blocked in Erlang VM context.\n"
    "fork()/exec() would corrupt the Erlang runtime.\n"
    "Use Erlang ports (open_port/2) for subprocess management."
)
_REPLY, _MESSAGE = 0, 1


class _ErlangSelector(selectors._BaseSelectorImpl):
    """A selector whose descriptors are in the loop core's epoll set, and whose ``select``
    sleeps in the core until the VM reports readiness, the Erlang timer fires or Erlang
    posts an event (kept in ``posted`` for the loop)."""

    def __init__(self):
        super().__init__()
        self._core = erlang._LoopCore()
        self.posted = []

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        try:
            self._core.register(key.fd, events)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        try:
            self._core.unregister(key.fd)
        except OSError:
            # Closed before it was unregistered: the kernel dropped it from the set.
            pass
        return key

    def modify(self, fileobj, events, data=None):
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
                raise ValueError(f"Invalid events: {events!r}")
            self._core.modify(key.fd, events)
        changed = key._replace(events=events, data=data)
        self._fd_to_key[key.fd] = changed
        return changed

    def select(self, timeout=None):
        fds, posted = self._core.wait(timeout)
        if posted:
            self.posted.extend(posted)
        ready = []
        for fd, mask in fds:
            key = self._fd_to_key.get(fd)
            if key is not None and mask & key.events:
                ready.append((key, mask & key.events))
        return ready

    def wakeup(self):
        self._core.wakeup()

    def close(self):
        self._core.close()
        super().close()


class ErlangEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose sleeping, timers and descriptor readiness come from the
    Erlang VM. Everything else is the standard library's selector loop."""

    def __init__(self):
        super().__init__(_ErlangSelector())
        self._erlang_ids = itertools.count(1)
        self._erlang_calls = {}
        self._mailboxes = {}

    # Waking up from another thread: straight to the sleeping thread, not through the
    # self-pipe and the VM's poller.
    def _write_to_self(self):
        selector = self._selector
        if selector is not None:
            selector.wakeup()

    def _process_events(self, event_list):
        super()._process_events(event_list)
        posted = self._selector.posted
        if posted:
            self._selector.posted = []
            for kind, ident, ok, value in posted:
                if kind == _REPLY:
                    future = self._erlang_calls.pop(ident, None)
                    if future is not None and not future.done():
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value)
                elif kind == _MESSAGE:
                    mailbox = self._mailboxes.get(ident)
                    if mailbox is not None:
                        mailbox._deliver(ok, value)

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        for mailbox in list(self._mailboxes.values()):
            mailbox.close()
        for future in self._erlang_calls.values():
            future.cancel()
        self._erlang_calls.clear()
        super().close()

    # Erlang

    async def _erlang_call(self, name, args):
        ident = next(self._erlang_ids)
        future = self.create_future()
        self._erlang_calls[ident] = future
        try:
            self._selector._core.send((erlang.Atom("async_call"), ident, name, list(args)))
            return await future
        finally:
            self._erlang_calls.pop(ident, None)

    # What the spec refuses

    def add_signal_handler(self, sig, callback, *args):
        raise NotImplementedError(
            "ErlangEventLoop does not handle signals: they belong to the Erlang VM; "
            "handle them in Erlang"
        )

    def remove_signal_handler(self, sig):
        raise NotImplementedError(
            "ErlangEventLoop does not handle signals: they belong to the Erlang VM; "
            "handle them in Erlang"
        )

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        from _erlang_impl import subprocess as port_subprocess

        if port_subprocess.mode() != "ports":
            raise RuntimeError(_SUBPROCESS_REFUSED)
        from _erlang_impl import _loop_subprocess

        return await _loop_subprocess.start(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
        )


class Mailbox:
    """A process of the Erlang VM whose messages a coroutine awaits.

    ``Mailbox()`` in a coroutine running on an ErlangEventLoop starts the process; ``pid``
    is its ``erlang.Pid``, to hand to Erlang. ``await mailbox.receive(timeout=None)`` returns
    the next message, in order, or raises ``TimeoutError`` after ``timeout`` seconds. The
    process ends with ``close()`` or when the loop closes; messages sent after are dropped.
    ``async for message in mailbox`` receives until the mailbox is closed."""

    def __init__(self, loop=None):
        loop = asyncio.get_running_loop() if loop is None else loop
        if not isinstance(loop, ErlangEventLoop):
            raise RuntimeError(
                "erlang.Mailbox needs an ErlangEventLoop (erlang.run, erlang.new_event_loop)"
            )
        self._loop = loop
        self._id = next(loop._erlang_ids)
        self._messages = collections.deque()
        self._waiters = collections.deque()
        self._closed = False
        self.pid = loop._selector._core.request((erlang.Atom("mailbox"), self._id))
        loop._mailboxes[self._id] = self

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self._messages)} queued"
        return f"<erlang.Mailbox {self.pid!r} {state}>"

    def _deliver(self, ok, value):
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if ok:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(value)
                return
        self._messages.append((ok, value))

    async def receive(self, timeout=None):
        """The next message; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        if self._messages:
            ok, value = self._messages.popleft()
            if ok:
                return value
            raise value
        if self._closed:
            raise RuntimeError("the mailbox is closed")
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            if timeout is None:
                return await waiter
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message within {timeout} s") from None
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.receive()
        except RuntimeError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def close(self):
        """Ends the process; waiting receives raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        self._loop._mailboxes.pop(self._id, None)
        if not self._loop.is_closed():
            try:
                self._loop._selector._core.send((erlang.Atom("mailbox_close"), self._id))
            except RuntimeError:
                pass
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the mailbox is closed"))


def new_event_loop() -> ErlangEventLoop:
    """A new ErlangEventLoop (also a ``loop_factory`` for ``asyncio.Runner``)."""
    return ErlangEventLoop()


async def async_call(name, *args):
    """Awaits the Erlang function registered as ``name`` (``py:register_function``), run in
    an Erlang process of its own: the loop runs on meanwhile. Raises what ``erlang.call``
    raises. On a loop other than ErlangEventLoop the call runs in the loop's default
    executor. Cancelling the await does not stop the Erlang function; its result is dropped.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"erlang.async_call(name, *args): name must be a str, not {type(name).__name__}"
        )
    loop = asyncio.get_running_loop()
    if isinstance(loop, ErlangEventLoop):
        return await loop._erlang_call(name, args)
    return await loop.run_in_executor(None, functools.partial(erlang.call, name, *args))


def _cancel_all_tasks(loop):
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during erlang.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


def run_coroutine(coro, *, debug=None):
    """Runs coro to completion on a new ErlangEventLoop and returns its result, as
    ``asyncio.run`` does on the standard loop: tasks left are cancelled (their ``finally``
    blocks run), async generators and the default executor are shut down, the loop closed.
    If the ``py:call`` this runs for is cancelled, the coroutine is interrupted with
    ``erlang.CallCancelled`` or, failing that, cancelled."""
    if asyncio._get_running_loop() is not None:
        if asyncio.iscoroutine(coro):
            coro.close()  # never to run: no "never awaited" warning
        raise RuntimeError("erlang.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(coro):
        raise ValueError(f"a coroutine was expected, got {coro!r}")
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run(main, *args, **kwargs):
    """``erlang.run(coro)`` runs a coroutine on a new ErlangEventLoop (run_coroutine);
    ``erlang.run(argv, ...)`` runs a program through an Erlang port (docs/ports.md)."""
    if asyncio.iscoroutine(main):
        if args:
            raise TypeError("erlang.run(coro, *, debug=None) takes no other positional argument")
        return run_coroutine(main, **kwargs)
    from _erlang_impl import _ports

    return _ports.run(main, *args, **kwargs)
