"""What keeps working under the sandbox: threads, files, sockets, logging, numpy, ordinary
ctypes, signalling other processes, and the allowed uses of the wrapped builtins."""

from __future__ import annotations

import ctypes
import faulthandler
import io
import logging
import os
import resource
import signal
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import _erlang_sandbox
import pytest
from test_sandbox_support import signal_state, vm_answers


@pytest.fixture(autouse=True)
def vm_unharmed():
    """Every test here leaves the VM's signal dispositions as they were, and the VM
    answering."""
    before = signal_state()
    yield
    assert signal_state() == before
    assert vm_answers()


def test_threads():
    """threading.Thread runs and joins."""
    results = []
    lock = threading.Lock()

    def work(n):
        with lock:
            results.append(sum(range(n)))

    threads = [threading.Thread(target=work, args=(1000 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(sum(range(1000 * i)) for i in range(8))


def test_thread_pool_executor():
    """ThreadPoolExecutor maps over its workers."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        assert list(executor.map(lambda x: x * x, range(100))) == [x * x for x in range(100)]


def test_files_and_tempfile():
    """Files read and write; tempfile's files and directories come and go."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "data.txt")
        with open(path, "w") as out:
            out.write("hello\n" * 1000)
        with open(path) as back:
            assert back.read() == "hello\n" * 1000
        with tempfile.NamedTemporaryFile(dir=directory) as named:
            named.write(b"bytes")
            named.flush()
            assert os.path.getsize(named.name) == 5
    assert not os.path.exists(directory)
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
        os.unlink(path)


def test_own_descriptors_close_dup2_and_closerange():
    """os.close, os.dup2 and os.closerange work on descriptors Python opened."""
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    assert not set(fds) & set(_erlang_sandbox.status()["vm_fds"])
    os.dup2(fds[0], fds[1])
    os.close(fd=fds[0])
    # closerange over a run of descriptors that are all ours: the ones just opened need not
    # be contiguous (the VM's and other tests' descriptors fill the holes), so they are
    # moved to a free run above everything else first.
    low = _free_run(3)
    for i, fd in enumerate(fds[1:]):
        os.dup2(fd, low + i)
        os.close(fd)
    os.closerange(low, low + 3)
    for fd in fds + [low, low + 1, low + 2]:
        with pytest.raises(OSError):
            os.fstat(fd)


def _free_run(n: int) -> int:
    """The first descriptor of n consecutive unused ones, above every open descriptor."""
    low = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    for fd in range(low, low + n):
        with pytest.raises(OSError):
            os.fstat(fd)
    return low


def test_loopback_sockets():
    """A TCP echo over 127.0.0.1 works, server in a thread."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo():
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(1024).upper())

    thread = threading.Thread(target=echo)
    thread.start()
    try:
        with socket.create_connection(server.getsockname(), timeout=10) as client:
            client.sendall(b"ping")
            assert client.recv(1024) == b"PING"
    finally:
        thread.join(10)
        server.close()


def test_logging():
    """logging writes to a stream and to a file."""
    stream = io.StringIO()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "log.txt")
        logger = logging.getLogger("sandbox-test")
        handlers = [logging.StreamHandler(stream), logging.FileHandler(path)]
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            logger.info("still logging")
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                handler.close()
        with open(path) as log:
            assert "still logging" in log.read()
    assert "still logging" in stream.getvalue()


def test_numpy_imports():
    """numpy, a C extension, imports and computes."""
    import numpy

    assert int(numpy.arange(10).sum()) == 45


def test_ctypes_ordinary_calls():
    """ctypes loads libc and calls ordinary functions."""
    libc = ctypes.CDLL("libc.so.6")
    assert libc.strlen(b"hello") == 5
    assert ctypes.CDLL(None).strlen(b"sandbox") == 7
    assert libc.getpid() == os.getpid()


def test_os_kill_signal_zero_and_other_processes():
    """os.kill(pid, 0) probes any process, this one included; signals to another process
    are allowed."""
    os.kill(os.getppid(), 0)
    os.kill(os.getpid(), 0)
    os.killpg(os.getpgrp(), 0)
    signal.pthread_kill(threading.get_ident(), 0)
    with pytest.raises(ProcessLookupError):
        os.kill(2**22 + 12345, signal.SIGTERM)


def test_getpid_and_environ():
    """os.getpid and os.environ reads work."""
    assert os.getpid() > 1
    assert os.getpid() == ctypes.CDLL(None).getpid()
    assert "PATH" in os.environ
    assert os.environ.get("PATH") == os.getenv("PATH")


def test_faulthandler_without_exit():
    """faulthandler's timed dump without exit=True is allowed, and so is dump_traceback."""
    with tempfile.TemporaryFile("w+") as out:
        faulthandler.dump_traceback(file=out)
        faulthandler.dump_traceback_later(3600, file=out)
        faulthandler.cancel_dump_traceback_later()
        out.seek(0)
        assert "test_faulthandler_without_exit" in out.read()


def test_raising_a_resource_limit():
    """Raising a soft limit up to its hard limit is allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
