"""asyncio subprocesses of ErlangEventLoop over Erlang ports (docs/asyncio.md).

Used when the application env ``subprocess`` is ``ports``: ``loop.subprocess_exec`` and
``subprocess_shell`` (hence ``asyncio.create_subprocess_exec``/``_shell``) start the process
with ``_erlang_impl.subprocess.Popen``, whose streams are a port worker's, not descriptors
the loop could watch. So each stream is served by a thread of its own that hands what it
reads to the loop (``call_soon_threadsafe``) or writes what the loop queued, and another
thread waits for the exit. The protocol side is the standard library's
(``asyncio.base_subprocess``), so ``asyncio.subprocess.Process`` works unchanged.
"""

from __future__ import annotations

import queue
import threading
from asyncio import base_subprocess, transports

from _erlang_impl import subprocess as port_subprocess

_READ_CHUNK = 65536
_HIGH_WATER = 64 * 1024
_LOW_WATER = 16 * 1024


def _soon(loop, callback, *args) -> bool:
    """call_soon_threadsafe, or False if the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
        return True
    except RuntimeError:
        return False


class _ReadPipe(transports.ReadTransport):
    """A process's stdout or stderr, read by a thread. Connected to its protocol at once."""

    def __init__(self, loop, stream, protocol):
        super().__init__()
        self._loop = loop
        self._stream = stream
        self._protocol = protocol
        self._closing = False
        self._reading = threading.Event()
        self._reading.set()
        protocol.connection_made(self)
        threading.Thread(target=self._pump, daemon=True, name="asyncio-port-read").start()

    def _pump(self):
        try:
            while True:
                self._reading.wait()
                data = self._stream.read1(_READ_CHUNK)
                if not data or not _soon(self._loop, self._data, data):
                    break
        except (OSError, ValueError):
            pass
        _soon(self._loop, self._eof)

    def _data(self, data):
        if not self._closing:
            self._protocol.data_received(data)

    def _eof(self):
        if not self._closing:
            self._closing = True
            self._protocol.eof_received()
            self._protocol.connection_lost(None)

    def pause_reading(self):
        self._reading.clear()

    def resume_reading(self):
        self._reading.set()

    def is_reading(self):
        return self._reading.is_set() and not self._closing

    def is_closing(self):
        return self._closing

    def close(self):
        if not self._closing:
            self._closing = True
            self._reading.set()
            self._loop.call_soon(self._protocol.connection_lost, None)

    def get_extra_info(self, name, default=None):
        return default


class _WritePipe(transports.WriteTransport):
    """A process's stdin, written by a thread from a queue. Connected to its protocol at
    once."""

    def __init__(self, loop, stream, protocol):
        super().__init__()
        self._loop = loop
        self._stream = stream
        self._protocol = protocol
        self._queue = queue.SimpleQueue()
        self._buffered = 0
        self._paused = False
        self._closing = False
        protocol.connection_made(self)
        threading.Thread(target=self._pump, daemon=True, name="asyncio-port-write").start()

    def _pump(self):
        try:
            while True:
                data = self._queue.get()
                if data is None:
                    break
                self._stream.write(data)
                if not _soon(self._loop, self._written, len(data)):
                    break
        except (OSError, ValueError) as exc:
            _soon(self._loop, self._failed, exc)
        finally:
            try:
                self._stream.close()
            except (OSError, ValueError):
                pass

    def _written(self, size):
        self._buffered -= size
        if self._paused and self._buffered <= _LOW_WATER:
            self._paused = False
            self._protocol.resume_writing()

    def _failed(self, exc):
        if not self._closing:
            self._closing = True
            self._protocol.connection_lost(exc)

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._closing or not data:
            return
        data = bytes(data)
        self._buffered += len(data)
        self._queue.put(data)
        if not self._paused and self._buffered > _HIGH_WATER:
            self._paused = True
            self._protocol.pause_writing()

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.close()

    def get_write_buffer_size(self):
        return self._buffered

    def get_write_buffer_limits(self):
        return (_LOW_WATER, _HIGH_WATER)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def is_closing(self):
        return self._closing

    def close(self):
        if not self._closing:
            self._closing = True
            self._queue.put(None)
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self):
        self.close()

    def get_extra_info(self, name, default=None):
        return default


class _PortSubprocessTransport(base_subprocess.BaseSubprocessTransport):
    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = port_subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr, bufsize=0, **kwargs
        )

    async def _connect_pipes(self, waiter):
        try:
            proc, loop = self._proc, self._loop
            # As connect_*_pipe would: _pipes holds the protocols, connected at once.
            if proc.stdin is not None:
                self._pipes[0] = base_subprocess.WriteSubprocessPipeProto(self, 0)
                _WritePipe(loop, proc.stdin, self._pipes[0])
            for fd, stream in ((1, proc.stdout), (2, proc.stderr)):
                if stream is not None:
                    self._pipes[fd] = base_subprocess.ReadSubprocessPipeProto(self, fd)
                    _ReadPipe(loop, stream, self._pipes[fd])
            loop.call_soon(self._protocol.connection_made, self)
            for callback, data in self._pending_calls:
                loop.call_soon(callback, *data)
            self._pending_calls = None
        except BaseException as exc:
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
            raise
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)


def _wait_for_exit(loop, transport, proc):
    returncode = proc.wait()
    _soon(loop, transport._process_exited, returncode)


async def start(loop, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs):
    """The transport of a process started through a port, once its pipes are connected."""
    waiter = loop.create_future()
    transport = _PortSubprocessTransport(
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=waiter,
        extra=extra,
        **kwargs,
    )
    threading.Thread(
        target=_wait_for_exit,
        args=(loop, transport, transport._proc),
        daemon=True,
        name="asyncio-port-wait",
    ).start()
    try:
        await waiter
    except BaseException:
        transport.close()
        await transport._wait()
        raise
    return transport
