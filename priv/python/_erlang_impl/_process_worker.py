"""A pool worker in ``mode => process`` (docs/pools.md): Python in an OS process of its own,
serving one Erlang process (src/py_process_worker.erl) over a port.

Frames are 4-byte big-endian lengths followed by a term in the external term format, on a
Unix stream socket whose path ERLANG_PYTHON_SOCKET names (the Erlang side reads it directly
after a call, which a port's pipe does not allow: docs/pools.md, "Why a socket"). The port
that started this process keeps fds 3 and 4 (`nouse_stdio`, unused), so that fds 1 and 2
stay those of the VM. Erlang to Python:

    a call: "R", Detailed (0 | 1), Kind ("c"all | "e"val | "x"ec | "C"), then the call's
        Id and its caller's pid, each as a 16-bit size and its external term format without
        the version byte, then the payload's term_to_binary; for "C" (a call by atom names
        and no keyword arguments, the common case) the module's and function's names as
        16-bit sizes and UTF-8, then the arguments' term_to_binary. The header is read
        with slicing, not the term decoder, which took half a small call's time in Python
    {reply, Reply}      the answer to this worker's callback, a binary

(Payload and Reply are term_to_binary binaries of their own, decoded where their conversion
errors belong: in the call, and in erlang.call.)

and SIGUSR1 when a call timed out or its caller died: the VM first writes the call's Id (its
external term format) to the file ERLANG_PYTHON_CANCEL_FILE names, and CallCancelled is raised
only in that call, so that a signal handled late never cancels the next one.

Python to Erlang:

    {ready, OsPid, Version, Token}   Token: ERLANG_PYTHON_TOKEN, proof that this is the
                                     Python the port started
    {result, Id, Result}      Result: {ok, V} | ok | {error, {Type, Message, Traceback[, Info]}}
    {callback, Name, Args}    erlang.call; answered by {reply, Reply}
    {send, Dest, Term}        erlang.send
    {output, Stream, Text}    what sys.stdout and sys.stderr were given

A request that comes while this worker waits for a callback's reply is a nested call (the
Erlang function called py:call back on this pool): it runs on top of the waiting one.
"""

import ctypes
import importlib
import os
import select
import socket
import struct
import sys
import threading
import time
import traceback
import types

_u32 = struct.Struct(">I")
_u16 = struct.Struct(">H")
_KINDS = {ord("c"): "call", ord("e"): "eval", ord("x"): "exec", ord("C"): "named_call"}
# A call frame's tag, as main() compares it (erlang.Atom compares as its text).
_RUN = "run"
# The port's descriptors, unused: kept open, since the port would close at their end.
PORT_FDS = (3, 4)
# Deep enough for the converter's nesting, as the NIF's worker threads are.
STACK_BYTES = 1024 * 1024 * 1024
RECURSION_LIMIT = 350000


# After a frame, the next one is waited for by polling this long before sleeping in poll:
# a process woken from sleep costs tens of microseconds on a virtual machine, more than a
# small call's own work, and calls that come back to back come sooner (docs/pools.md). 100
# us, not 50: a caller whose scheduler slept between two calls comes back 30-60 us later.
SPIN_SECONDS = 0.0001
# Polling pays only while frames come back to back: the last wait was at most this long
# (a wake-up from select included), as the VM's workers judge it (c_src/py_worker.c).
BACK_TO_BACK_SECONDS = 0.0002


class _Input:
    """Frames from the socket, read a buffer at a time (a frame's length and body usually
    come in one read). The socket stays blocking for writes; reads do not wait
    (MSG_DONTWAIT) while they poll."""

    def __init__(self, sock):
        self.buffer = bytearray()
        self.sock = sock
        # Read into, not recv(1 MB), which allocates a megabyte on every read: a small
        # read took 14 us that way, 2.6 us into this buffer (measured alone). 64 KB: a
        # bigger frame takes several reads, and the worker's memory stays small.
        self.chunk = memoryview(bytearray(1 << 16))
        self.polling = True
        # Polled with poll(0), not with reads that fail: a failed read raises, 1.4 us a turn.
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def fill(self):
        started = time.perf_counter()
        if self.polling:
            deadline = started + SPIN_SECONDS
            while not self.poller.poll(0) and time.perf_counter() < deadline:
                pass
        while True:
            try:
                size = self.sock.recv_into(self.chunk, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.poller.poll()
                continue
            if not size:
                raise EOFError
            self.buffer += self.chunk[:size]
            self.polling = time.perf_counter() - started <= BACK_TO_BACK_SECONDS
            return

    def frame(self):
        while len(self.buffer) < 4:
            self.fill()
        size = _u32.unpack_from(self.buffer)[0]
        while len(self.buffer) < 4 + size:
            self.fill()
        body = bytes(self.buffer[4 : 4 + size])
        del self.buffer[: 4 + size]
        return body


class Worker:
    def __init__(self, etf, erlang, sock):
        self.etf = etf
        self.erlang = erlang
        self.write_lock = threading.Lock()
        self.runner_ident = threading.get_ident()
        self.sock = sock
        self.input = _Input(sock)
        self.cancel_file = os.environ.get("ERLANG_PYTHON_CANCEL_FILE", "")
        self.cancelled = set()  # Ids of the calls running here that were cancelled
        self.reading = False
        self.writing = False  # the runner writes a frame: an exception now would repeat it
        self.deferred = False  # a cancellation came while it read or wrote
        self.current = []  # (id, caller) of the calls running, innermost last

    # -- frames

    def write(self, term, may_raise=False):
        """may_raise: from the code of a call (output, erlang.send), where a cancellation
        that came during the write is raised once it is written."""
        self.write_encoded(self.etf.encode(term), may_raise)

    def read(self):
        """The next frame from the VM, a call as the tuple (run, Id, Kind, Payload,
        Detailed, Caller). Read by the thread that runs calls itself: a hand-off from a
        reader thread cost a thread wake-up on every call."""
        frame = self.input.frame()
        if frame[:1] != b"R":
            return self.etf.decode(frame)
        erlang = self.erlang
        id_end = 5 + _u16.unpack_from(frame, 3)[0]
        caller_end = id_end + 2 + _u16.unpack_from(frame, id_end)[0]
        return (
            _RUN,
            erlang.Reference._of(frame[5:id_end]),
            _KINDS[frame[2]],
            frame[caller_end:],
            frame[1] == 1,
            erlang.Pid._of(frame[id_end + 2 : caller_end]),
        )

    def cancel(self, signum, frame):
        """SIGUSR1, which the VM sends when a call running here timed out or its caller
        died, having written that call's Id to the cancel file: CallCancelled in that call.
        The handler runs on the main thread, which only waits. While the runner waits for a
        callback's reply it is only marked: an exception raised inside the reading of a frame
        could lose its bytes."""
        try:
            with open(self.cancel_file, "rb") as f:
                target = f.read()
            os.unlink(self.cancel_file)
        except OSError:
            return
        for request_id, _ in self.current:
            if request_id._etf == target[1:]:
                self.cancelled.add(request_id)
                break
        else:
            return
        if self.reading or self.writing:
            # Raised where the frame is whole: after the reply (callback) or the write.
            self.deferred = True
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.runner_ident), ctypes.py_object(self.erlang.CallCancelled)
            )

    # -- what erlang.* does

    def callback(self, name, args):
        erlang = self.erlang
        if threading.get_ident() != self.runner_ident:
            raise erlang.Error(
                "erlang.call from a thread Python started is not supported in a process pool"
            )
        Atom = erlang.Atom
        self.write((Atom("callback"), name, args))
        while True:
            self.reading = True
            try:
                frame = self.read()
            finally:
                self.reading = False
            if frame[0] == Atom("reply"):
                break
            self.serve(frame)  # a nested call
        if self.current_cancelled():
            raise self.call_cancelled()
        return self.reply_value(frame[1], name)

    def current_cancelled(self):
        return bool(self.current) and self.current[-1][0] in self.cancelled

    def call_cancelled(self):
        return self.erlang.CallCancelled(
            "the py:call this code runs for timed out or its caller exited"
        )

    def reply_value(self, reply, name):
        """What a callback's reply stands for. The VM sends {ok, Value} and the error's
        reason as binaries of their own: a value that cannot convert raises at the call, a
        reason that cannot is replaced by its text, as in the VM (c_src/py_callback.c)."""
        erlang = self.erlang
        if reply[0] == "ok":
            return self.etf.decode(reply[1])
        if len(reply) == 2:
            raise erlang.UnknownFunction(str(name))
        _, kind, reason, formatted, stack = reply
        try:
            reason = self.etf.decode(reason)
        except Exception:
            reason = formatted
        raise erlang.ErlangException(kind, reason, formatted, stack)

    def send(self, dest, term):
        self.write((self.erlang.Atom("send"), dest, term), may_raise=True)

    def caller(self):
        if threading.get_ident() != self.runner_ident or not self.current:
            return None
        return self.current[-1][1]

    # -- running requests

    def serve(self, frame):
        Atom = self.erlang.Atom
        _, request_id, kind, payload, detailed, caller = frame
        self.current.append((request_id, caller))
        try:
            with_value, result = self.run(kind, payload, detailed)
            head = _RESULT_HEAD + request_id._etf
            try:
                data = self.etf.encode_after(head + _OK_HEAD if with_value else head, result)
            except BaseException as exc:  # the result cannot be converted
                data = self.etf.encode((Atom("result"), request_id, self.error(exc, detailed)))
            self.write_encoded(data)
        finally:
            self.current.pop()
            self.cancelled.discard(request_id)

    def write_encoded(self, data, may_raise=False):
        """Writes a frame whole, with sendall: a CallCancelled injected meanwhile is raised
        only once sendall returns, the frame written (after an os.write it lost the count,
        and the frame was written twice). On the runner the cancellation handler defers
        while it writes (cancel); one injected just before is kept as deferred."""
        frame = _u32.pack(len(data)) + data
        runner = threading.get_ident() == self.runner_ident
        with self.write_lock:
            if runner:
                self.writing = True
            try:
                try:
                    self.sock.sendall(frame)
                except self.erlang.CallCancelled:
                    self.deferred = True
            finally:
                if runner:
                    self.writing = False
        if may_raise and runner and self.deferred and self.current_cancelled():
            self.deferred = False
            raise self.call_cancelled()

    def run(self, kind, payload, detailed):
        """(True, Value) for {ok, Value}, else (False, Result)."""
        try:
            if kind == "named_call":
                module_end = 2 + _u16.unpack_from(payload)[0]
                function_end = module_end + 2 + _u16.unpack_from(payload, module_end)[0]
                target = _lookup(
                    payload[2:module_end].decode(), payload[module_end + 2 : function_end].decode()
                )
                return True, _run_to_end(target(*self.etf.decode(payload[function_end:])))
            payload = self.etf.decode(payload)
            if kind == "call":
                module, function, args, kwargs = payload
                target = _lookup(_name(module), _name(function))
                if not isinstance(args, list):
                    raise TypeError("arguments must be a list")
                kwargs = _str_keys(kwargs, "keyword arguments", "keyword argument")
                return True, _run_to_end(target(*args, **kwargs))
            if kind == "eval":
                code, local_vars = payload
                return True, _run_source(code, local_vars, "eval")
            _run_source(payload, {}, "exec")
            return False, self.erlang.Atom("ok")
        except BaseException as exc:
            return False, self.error(exc, detailed)

    def error(self, exc, detailed):
        from _erlang_impl import _process_errors

        return (self.erlang.Atom("error"), _process_errors.describe(exc, detailed))


# {result, Id, Result} up to its Id: the external format's version, a 3-tuple, the atom.
_RESULT_HEAD = b"\x83\x68\x03\x77\x06result"
# {ok, up to its value.
_OK_HEAD = b"\x68\x02\x77\x02ok"


def _run_to_end(value):
    """As the VM's PyCoro_CheckExact: an `async def' function's coroutine runs to its end."""
    if type(value) is types.CoroutineType:
        import asyncio

        return asyncio.run(value)
    return value


def _name(value):
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError("module and function names must be atoms or binaries")


def _str_keys(mapping, what, key_what):
    """As the VM's with_str_keys (c_src/py_worker.c): plain str keys, TypeError otherwise."""
    if not isinstance(mapping, dict):
        raise TypeError(f"{what} must be a map")
    result = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(
                f"{key_what} keys must be atoms or binaries, not {type(key).__name__:.100}"
            )
        result[str.__str__(key)] = value
    return result


def _lookup(module_name, dotted):
    module = sys.modules.get(module_name)
    if module is None:
        module = importlib.import_module(module_name)
    target = module
    for part in dotted.split("."):
        target = getattr(target, part)
    return target


_code_cache = {}


def _run_source(code, local_vars, mode):
    if isinstance(code, str):
        code = code.encode("utf-8", "surrogatepass")
    if b"\0" in code:
        raise ValueError("source code cannot contain null bytes")
    key = (code, mode)
    compiled = _code_cache.get(key)
    if compiled is None:
        try:
            compiled = compile(code, "<py:" + mode + ">", mode)
        except SyntaxError:
            if mode != "eval":
                raise
            # Statements given to eval run as statements and give None.
            compiled = compile(code, "<py:eval>", "exec")
        if len(_code_cache) >= 512:
            _code_cache.clear()
        _code_cache[key] = compiled
    namespace = sys.modules["__main__"].__dict__
    local_vars = _str_keys(local_vars, "locals", "locals")
    if local_vars:
        namespace = dict(namespace)
        namespace.update(local_vars)
    return eval(compiled, namespace, namespace)


class _Output:
    """sys.stdout and sys.stderr: what is written goes to the caller's group leader, as a
    frame to the Erlang side."""

    def __init__(self, worker, stream):
        self.worker = worker
        self.stream = worker.erlang.Atom(stream)
        self.encoding = "utf-8"
        self.errors = "surrogatepass"

    def write(self, text):
        if text:
            self.worker.write(
                (self.worker.erlang.Atom("output"), self.stream, str(text)), may_raise=True
            )
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True


def _set_limits():
    import resource

    memory = os.environ.get("ERLANG_PYTHON_MEMORY_LIMIT")
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))


def _cpu_limit():
    seconds = os.environ.get("ERLANG_PYTHON_CPU_LIMIT")
    return int(seconds) if seconds else None


def main():
    from _erlang_impl import _etf, _process_erlang

    # One process group, killed whole by the pool. The VM starts port programs as session
    # leaders already (then setpgrp is refused, and not needed).
    if os.getpgrp() != os.getpid():
        os.setpgrp()
    _set_limits()
    # Programs the worker starts must not hold the VM's pipes open (the socket is not
    # inheritable already).
    for fd in PORT_FDS:
        os.set_inheritable(fd, False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Read once, and kept from the programs the worker's code starts.
    sock.connect(os.environ.pop("ERLANG_PYTHON_SOCKET"))
    token = os.environ.pop("ERLANG_PYTHON_TOKEN")
    sys.modules["erlang"] = _process_erlang
    worker = Worker(_etf, _process_erlang, sock)
    _process_erlang._worker = worker
    sys.stdout = _Output(worker, "stdout")
    sys.stderr = _Output(worker, "stderr")
    _cancel_handler.append(worker.cancel)
    Atom = _process_erlang.Atom
    worker.write((Atom("ready"), os.getpid(), sys.version, token))
    cpu_limit = _cpu_limit()
    while True:
        try:
            frame = worker.read()
        except EOFError:
            os._exit(0)  # the VM closed the port
        except BaseException:  # a CallCancelled that came once its call had answered
            continue
        if frame[0] != Atom("run"):
            continue
        if cpu_limit is not None:
            import resource

            used = resource.getrusage(resource.RUSAGE_SELF)
            spent = int(used.ru_utime + used.ru_stime) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (spent + cpu_limit, resource.RLIM_INFINITY))
        try:
            worker.serve(frame)
        except BaseException:  # a CallCancelled that came late: the call has answered
            pass


# The worker's cancel, once it exists (SIGUSR1 can come before).
_cancel_handler = []


def _on_sigusr1(signum, frame):
    for cancel in _cancel_handler:
        cancel(signum, frame)


def start():
    import signal

    # Started from the sandboxed interpreter's environment: the VM's port programs begin
    # with no sys.path entry for the current directory, like the embedded interpreter.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    signal.signal(signal.SIGUSR1, _on_sigusr1)
    sys.setrecursionlimit(RECURSION_LIMIT)
    threading.stack_size(STACK_BYTES)
    runner = threading.Thread(target=_run_main, name="erlang_python_worker")
    runner.start()
    # The main thread only waits, so that SIGUSR1's handler runs at once.
    while runner.is_alive():
        runner.join(3600)


def _run_main():
    try:
        main()
    except BaseException:
        traceback.print_exc(file=sys.__stderr__)
        os._exit(70)


if __name__ == "__main__":
    start()
