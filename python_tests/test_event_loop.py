"""ErlangEventLoop (docs/asyncio.md).

Behaviour parity: every test taking ``loop_factory`` is written once and runs on the standard
library's loop and on ErlangEventLoop, as uvloop proves its parity; the figures they check
are coarse bounds, the same for both. Then what only our loop does: the spec's refusals,
subprocesses through ports, erlang.async_call, mailboxes, erlang.run and its entry points,
the idle loop's CPU and its scale.

The Erlang functions called here (pt_*) are registered by test/py_test_functions.erl.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import threading
import time

import pytest

erlang = pytest.importorskip("erlang")

FACTORIES = {"stdlib": asyncio.new_event_loop, "erlang": lambda: erlang.new_event_loop()}


@pytest.fixture(params=sorted(FACTORIES))
def loop_factory(request):
    return FACTORIES[request.param]


def run(loop_factory, main, *args):
    """main(*args) to completion on a new loop from loop_factory, then the loop closed, as
    asyncio.run does (tasks left cancelled)."""
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main(*args))
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# ---------------------------------------------------------------------------
# Parity with the standard library's loop


def test_sleep_waits_as_long_as_asked(loop_factory):
    async def main():
        start = time.monotonic()
        await asyncio.sleep(0.05)
        return time.monotonic() - start

    assert 0.05 <= run(loop_factory, main) < 0.5


def test_gather_runs_sleeps_together(loop_factory):
    async def main():
        start = time.monotonic()
        results = await asyncio.gather(*(asyncio.sleep(0.2, result=i) for i in range(8)))
        return results, time.monotonic() - start

    results, elapsed = run(loop_factory, main)
    assert results == list(range(8))
    assert elapsed < 0.6


def test_wait_for_times_out_and_passes_results(loop_factory):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.05)
        return await asyncio.wait_for(asyncio.sleep(0.01, result="done"), 1)

    assert run(loop_factory, main) == "done"


def test_cancelled_task_runs_its_finally(loop_factory):
    events = []

    async def worker():
        try:
            events.append("started")
            await asyncio.sleep(10)
        finally:
            events.append("finally")

    async def main():
        task = asyncio.create_task(worker())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(loop_factory, main) is True
    assert events == ["started", "finally"]


def test_call_soon_threadsafe_wakes_a_sleeping_loop(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def other_thread():
            time.sleep(0.05)
            loop.call_soon_threadsafe(future.set_result, 42)

        threading.Thread(target=other_thread).start()
        start = time.monotonic()
        result = await future
        return result, time.monotonic() - start

    result, elapsed = run(loop_factory, main)
    assert result == 42
    assert elapsed < 1.0


def test_run_in_executor_overlaps_blocking_calls(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        results = await asyncio.gather(
            *(loop.run_in_executor(None, time.sleep, 0.2) for _ in range(4))
        )
        return results, time.monotonic() - start

    results, elapsed = run(loop_factory, main)
    assert results == [None] * 4
    assert elapsed < 0.8


def test_queue_passes_items_in_order(loop_factory):
    async def main():
        queue = asyncio.Queue(maxsize=3)
        received = []

        async def producer():
            for i in range(50):
                await queue.put(i)
            await queue.put(None)

        async def consumer():
            while (item := await queue.get()) is not None:
                received.append(item)

        await asyncio.gather(producer(), consumer())
        return received

    assert run(loop_factory, main) == list(range(50))


async def _echo_handler(reader, writer):
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


def test_tcp_server_and_client_on_loopback(loop_factory):
    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for i in range(100):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            answers.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return answers

    assert run(loop_factory, main) == [b"line %d\n" % i for i in range(100)]


def test_tcp_large_transfer(loop_factory):
    """4 MB each way through one connection: flow control and partial writes."""
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        async def handler(reader, writer):
            data = await reader.readexactly(len(payload))
            writer.write(data)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        back = await reader.readexactly(len(payload))
        writer.close()
        server.close()
        await server.wait_closed()
        return back

    assert run(loop_factory, main) == payload


def test_udp_datagrams_round_trip(loop_factory):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.received = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.received.put_nowait(data)

    async def main():
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        address = server.get_extra_info("sockname")
        client, protocol = await loop.create_datagram_endpoint(Client, remote_addr=address)
        answers = []
        for word in (b"one", b"two", b"three"):
            client.sendto(word)
            answers.append(await asyncio.wait_for(protocol.received.get(), 2))
        client.close()
        server.close()
        return answers

    assert run(loop_factory, main) == [b"ONE", b"TWO", b"THREE"]


def test_unix_socket_server_and_client(loop_factory):
    async def main(path):
        server = await asyncio.start_unix_server(_echo_handler, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"over a unix socket\n")
        answer = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return answer

    with tempfile.TemporaryDirectory() as tmp:
        assert run(loop_factory, main, os.path.join(tmp, "echo.sock")) == b"over a unix socket\n"


def test_exceptions_reach_the_task_and_the_handler(loop_factory):
    seen = []

    async def failing():
        raise ValueError("in a task")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
        with pytest.raises(ValueError, match="in a task"):
            await asyncio.create_task(failing())
        loop.call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.01)

    run(loop_factory, main)
    assert len(seen) == 1 and isinstance(seen[0], ZeroDivisionError)


def test_close_with_tasks_pending(loop_factory):
    loop = loop_factory()
    try:
        task = loop.create_task(asyncio.sleep(10))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not task.done()
    finally:
        loop.close()
    assert loop.is_closed()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        loop.run_until_complete(coro)
    coro.close()
    # The pending task is dropped with the loop (asyncio logs "Task was destroyed...").
    task._log_destroy_pending = False


def test_thousand_sequential_1ms_sleeps(loop_factory):
    async def main():
        start = time.monotonic()
        for _ in range(1000):
            await asyncio.sleep(0.001)
        return time.monotonic() - start

    assert run(loop_factory, main) < 1.5


def test_thousand_concurrent_connections(loop_factory):
    async def main():
        server = await asyncio.start_server(_echo_handler, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]

        async def client(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return reader, writer

        connections = []
        for start in range(0, 1000, 100):
            connections += await asyncio.gather(*(client(i) for i in range(start, start + 100)))

        async def exchange(i, reader, writer):
            writer.write(b"%d\n" % i)
            await writer.drain()
            return await reader.readline()

        answers = await asyncio.gather(*(exchange(i, r, w) for i, (r, w) in enumerate(connections)))
        for _, writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
        return answers

    assert run(loop_factory, main) == [b"%d\n" % i for i in range(1000)]


# ---------------------------------------------------------------------------
# What ErlangEventLoop alone does


def _erlang_run(main, *args):
    return run(FACTORIES["erlang"], main, *args)


def test_it_is_an_abstract_event_loop():
    loop = erlang.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(loop, erlang.ErlangEventLoop)
    finally:
        loop.close()


def test_signal_handlers_are_not_implemented():
    loop = erlang.new_event_loop()
    try:
        with pytest.raises(NotImplementedError):
            loop.add_signal_handler(2, lambda: None)
        with pytest.raises(NotImplementedError):
            loop.remove_signal_handler(2)
    finally:
        loop.close()


def _port_mode(mode):
    from _erlang_impl import subprocess as port_subprocess

    return port_subprocess._set_mode(mode)


def test_subprocess_is_refused_with_the_sandboxes_message():
    import subprocess

    from _erlang_impl import subprocess as port_subprocess

    assert port_subprocess.mode() == "blocked"
    with pytest.raises(RuntimeError) as popen:
        subprocess.Popen(["true"])

    async def main():
        with pytest.raises(RuntimeError) as exec_refused:
            await asyncio.create_subprocess_exec("true")
        with pytest.raises(RuntimeError) as shell_refused:
            await asyncio.create_subprocess_shell("true")
        return str(exec_refused.value), str(shell_refused.value)

    assert _erlang_run(main) == (str(popen.value), str(popen.value))
    assert str(popen.value).startswith("subprocess.Popen is blocked in Erlang VM context.\n")


def test_subprocess_runs_through_ports_when_the_env_says_so():
    async def main():
        cat = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await cat.communicate(b"through a port\n" * 10000)
        shell = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2; exit 3",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        shell_out, shell_err = await shell.communicate()
        sleeper = await asyncio.create_subprocess_exec("sleep", "10")
        sleeper.kill()
        killed = await asyncio.wait_for(sleeper.wait(), 5)
        return out, cat.returncode, shell_out, shell_err, shell.returncode, killed

    _port_mode("ports")
    try:
        out, rc, shell_out, shell_err, shell_rc, killed = _erlang_run(main)
    finally:
        _port_mode("blocked")
    assert out == b"through a port\n" * 10000 and rc == 0
    assert (shell_out, shell_err, shell_rc) == (b"out\n", b"err\n", 3)
    assert killed == -9


def test_two_async_calls_overlap():
    async def main():
        start = time.monotonic()
        results = await asyncio.gather(
            erlang.async_call("pt_sleep", 200), erlang.async_call("pt_sleep", 200)
        )
        return results, time.monotonic() - start

    results, elapsed = _erlang_run(main)
    assert results == [200, 200]
    assert 0.2 <= elapsed < 0.35


def test_async_call_results_and_errors():
    async def main():
        assert await erlang.async_call("pt_add", 1, 2, 3) == 6
        value = {"a": [1, 2.5, b"x", None]}
        assert await erlang.async_call("pt_ident", value) == erlang.call("pt_ident", value)
        with pytest.raises(erlang.UnknownFunction):
            await erlang.async_call("pt_no_such_function")
        with pytest.raises(erlang.ErlangException) as raised:
            await erlang.async_call("pt_error", erlang.Atom("boom"))
        assert raised.value.kind == "error" and raised.value.reason == "boom"
        with pytest.raises(erlang.ErlangException) as exited:
            await erlang.async_call("pt_exit", erlang.Atom("gone"))
        assert exited.value.kind == "exit"
        with pytest.raises(TypeError):
            await erlang.async_call(42)
        # The loop goes on while a call runs.
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await erlang.async_call("pt_sleep", 100)
        task.cancel()
        return ticks

    assert _erlang_run(main) >= 5


def test_async_call_on_the_stdlib_loop_uses_the_executor():
    async def main():
        return await asyncio.gather(
            erlang.async_call("pt_sleep", 100), erlang.async_call("pt_add", 1, 2)
        )

    assert asyncio.run(main()) == [100, 3]


def test_cancelled_async_call_drops_its_result():
    async def main():
        task = asyncio.create_task(erlang.async_call("pt_sleep", 100))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.15)  # the reply comes and is dropped
        return await erlang.async_call("pt_add", 2, 2)

    assert _erlang_run(main) == 4


def test_mailbox_receives_what_erlang_sends():
    async def main():
        mailbox = erlang.Mailbox()
        assert isinstance(mailbox.pid, erlang.Pid)
        erlang.call("pt_send_later", mailbox.pid, [1, "two", (erlang.Atom("three"), 3.0)], 20)
        received = [await mailbox.receive(timeout=2) for _ in range(3)]
        with pytest.raises(TimeoutError):
            await mailbox.receive(timeout=0.05)
        erlang.send(mailbox.pid, "from python")
        received.append(await mailbox.receive(timeout=2))
        pid = mailbox.pid
        mailbox.close()
        with pytest.raises(RuntimeError):
            await mailbox.receive()
        await asyncio.sleep(0.05)
        return received, erlang.call("pt_is_alive", pid)

    received, alive = _erlang_run(main)
    assert received == [1, "two", ("three", 3.0), "from python"]
    assert alive is False


def test_mailbox_async_for_and_waiting_receivers():
    async def main():
        mailbox = erlang.Mailbox()
        waiting = asyncio.create_task(mailbox.receive())
        await asyncio.sleep(0.01)
        erlang.call("pt_send_later", mailbox.pid, ["a", "b", "c"], 0)
        first = await asyncio.wait_for(waiting, 2)
        rest = []
        async for message in mailbox:
            rest.append(message)
            if len(rest) == 2:
                mailbox.close()
        return first, rest

    assert _erlang_run(main) == ("a", ["b", "c"])


def test_mailbox_needs_an_erlang_loop():
    async def main():
        erlang.Mailbox()

    with pytest.raises(RuntimeError, match="ErlangEventLoop"):
        asyncio.run(main())


def test_mailboxes_end_with_their_loop():
    async def main():
        return erlang.Mailbox().pid

    pid = _erlang_run(main)
    time.sleep(0.05)
    assert erlang.call("pt_is_alive", pid) is False


def test_erlang_run_dispatches_on_its_argument():
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert erlang.run(main(21)) == 42
    assert erlang.run(["/bin/echo", "argv"]).stdout == b"argv\n"
    coro = main(1)
    with pytest.raises(TypeError):
        erlang.run(coro, 2)
    coro.close()


def test_erlang_run_cleans_up_like_asyncio_run():
    events = []

    async def background():
        try:
            await asyncio.sleep(10)
        finally:
            events.append("background finally")

    async def main():
        asyncio.create_task(background())
        await asyncio.sleep(0.01)
        return "main done"

    assert erlang.run(main()) == "main done"
    assert events == ["background finally"]

    async def nested():
        return erlang.run(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="running event loop"):
        erlang.run(nested())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_asyncio_runner_with_our_factory():
    with asyncio.Runner(loop_factory=erlang.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), erlang.ErlangEventLoop)
        assert runner.run(asyncio.sleep(0.01, result="ok")) == "ok"
        assert runner.run(erlang.async_call("pt_add", 20, 22)) == 42


def test_idle_loop_costs_no_cpu():
    """The thread running an idle loop sleeps: a second of it costs the thread (which also
    starts and ends the wait) under 10 ms of CPU."""

    async def main():
        start = time.thread_time()
        await asyncio.sleep(1)
        return time.thread_time() - start

    assert _erlang_run(main) < 0.01


def test_closed_core_refuses_use():
    core = erlang._LoopCore()
    core.close()
    with pytest.raises(RuntimeError):
        core.wait(0)
    with pytest.raises(RuntimeError):
        core.register(0, 1)


def test_core_rejects_bad_descriptors():
    core = erlang._LoopCore()
    try:
        with pytest.raises(ValueError):
            core.register(-1, 1)
        r, w = socket.socketpair()
        with pytest.raises(OSError):
            core.unregister(r.fileno())  # never registered
        core.register(r.fileno(), 1)
        with pytest.raises(OSError):
            core.register(r.fileno(), 1)  # twice
        w.send(b"x")
        assert core.wait(1.0)[0] == [(r.fileno(), 1)]
        r.close()
        w.close()
        with pytest.raises(TypeError):
            core.wait("soon")
    finally:
        core.close()


def test_loop_on_a_thread_python_started():
    """A threading.Thread (no py:call behind it) runs a loop too, Erlang calls included."""
    results = []

    async def main():
        await asyncio.sleep(0.01)
        return await erlang.async_call("pt_add", 1, 1)

    thread = threading.Thread(target=lambda: results.append(erlang.run(main())))
    thread.start()
    thread.join(10)
    assert results == [2]


def test_many_timers_at_once_all_fire(loop_factory):
    """2000 sleeps of random 1-20 ms at once, five times: every one fires (a wait whose
    deadline passed while it got ready to sleep once slept for good)."""
    import random

    rng = random.Random(3)

    async def main():
        for _ in range(5):
            await asyncio.gather(*(asyncio.sleep(rng.uniform(0.001, 0.02)) for _ in range(2000)))
        return True

    done = []
    thread = threading.Thread(target=lambda: done.append(run(loop_factory, main)), daemon=True)
    thread.start()
    thread.join(20)
    assert done == [True]


def test_core_wait_with_tiny_timeouts_returns():
    """A wait whose deadline passes before it sleeps returns at once, every time."""
    core = erlang._LoopCore()
    finished = []

    def waits():
        for _ in range(5000):
            core.wait(1e-7)
        finished.append(True)

    try:
        thread = threading.Thread(target=waits, daemon=True)
        thread.start()
        thread.join(10)
        assert finished == [True]
    finally:
        if finished:
            core.close()
