"""The same asyncio work on the standard library's loop and on ErlangEventLoop, in the
embedded interpreter (bench/asyncio.escript runs it and writes the table).

Each measure runs on a fresh loop of each kind, the kinds alternating, RUNS times; the
escript reports min / median / max of the runs and the ratio of the medians.

- timers: 2000 tasks sleeping random delays of 1-20 ms at once: timers fired per second;
- lateness: 300 sequential sleeps of random 1-5 ms: how late each woke (median and p99);
- echo round trips: one TCP connection on loopback, client and server in the loop, a 64-byte
  line there and back, sequentially: round trips per second;
- echo throughput: 50 connections, each streaming 200 x 4 KB through the echo server and
  reading it back: MB/s;
- idle: a loop waiting 1 s on a sleep: CPU seconds of the thread running it;
- idle VM: the CPU of all the VM's threads over that second, and over a second of plain
  time.sleep without any loop (the baseline; each figure includes reading /proc twice).
"""

from __future__ import annotations

import asyncio
import glob
import random
import statistics
import time

import erlang

KINDS = {"stdlib": asyncio.new_event_loop, "erlang": erlang.new_event_loop}


def _on(kind, main):
    loop = KINDS[kind]()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()


async def _timers():
    rng = random.Random(1)
    delays = [rng.uniform(0.001, 0.02) for _ in range(2000)]
    start = time.perf_counter()
    await asyncio.gather(*(asyncio.sleep(d) for d in delays))
    return len(delays) / (time.perf_counter() - start)


async def _lateness():
    rng = random.Random(2)
    late = []
    loop = asyncio.get_running_loop()
    for _ in range(300):
        delay = rng.uniform(0.001, 0.005)
        start = loop.time()
        await asyncio.sleep(delay)
        late.append((loop.time() - start - delay) * 1e6)
    late.sort()
    return statistics.median(late), late[int(len(late) * 0.99) - 1]


async def _echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _round_trips():
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = b"x" * 63 + b"\n"
    n = 3000
    start = time.perf_counter()
    for _ in range(n):
        writer.write(line)
        await reader.readexactly(len(line))
    rate = n / (time.perf_counter() - start)
    writer.close()
    server.close()
    await server.wait_closed()
    return rate


async def _throughput():
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    chunk = b"y" * 4096
    per_connection = 200

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send():
            for _ in range(per_connection):
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        await reader.readexactly(len(chunk) * per_connection)
        await sender
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(50)))
    elapsed = time.perf_counter() - start
    server.close()
    await server.wait_closed()
    return 50 * per_connection * len(chunk) / elapsed / 1e6


async def _idle():
    start = time.thread_time()
    await asyncio.sleep(1)
    return time.thread_time() - start


def _vm_cpu_seconds():
    total = 0
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as stat:
                total += int(stat.read().split()[0])
        except OSError:
            pass
    return total / 1e9


async def _idle_vm():
    start = _vm_cpu_seconds()
    await asyncio.sleep(1)
    return _vm_cpu_seconds() - start


def _idle_vm_without_loop():
    start = _vm_cpu_seconds()
    time.sleep(1)
    return _vm_cpu_seconds() - start


MEASURES = {
    "timers": _timers,
    "lateness": _lateness,
    "round_trips": _round_trips,
    "throughput": _throughput,
    "idle": _idle,
    "idle_vm": _idle_vm,
}


def run_all(runs: int) -> dict:
    """{measure: {kind: [value per run]}}; lateness values are (median, p99) pairs."""
    results = {name: {kind: [] for kind in KINDS} for name in MEASURES}
    results["idle_vm"]["none"] = []
    for _ in range(runs):
        for name, main in MEASURES.items():
            for kind in KINDS:
                results[name][kind].append(_on(kind, main))
        results["idle_vm"]["none"].append(_idle_vm_without_loop())
    return results
