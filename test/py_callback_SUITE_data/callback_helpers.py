"""Python side of test/py_callback_SUITE.erl: each function drives one claim of the suite.

The suite registers the Erlang functions these call (see the suite for their names) and calls
these through py:call(callback_helpers, ...).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import erlang


def three_forms(name: str, *args):
    """The result of each call form: erlang.call, erlang.<name>, from erlang import <name>."""
    namespace: dict = {}
    exec(f"from erlang import {name} as imported", namespace)
    return [
        erlang.call(name, *args),
        getattr(erlang, name)(*args),
        namespace["imported"](*args),
    ]


def call(name: str, *args):
    return erlang.call(name, *args)


def unknown_in_each_form(name: str) -> list:
    """For each form, the exception class name, its .name and its message."""
    namespace: dict = {}
    exec(f"from erlang import {name} as imported", namespace)
    forms = [
        lambda: erlang.call(name),
        lambda: getattr(erlang, name)(),
        namespace["imported"],
    ]
    found: list = []
    for form in forms:
        try:
            form()
        except erlang.UnknownFunction as e:
            found.append((type(e).__name__, e.name, str(e), isinstance(e, LookupError)))
        else:
            found.append("no exception")
    return found


def catch_erlang_exception(name: str, *args):
    """Kind, reason and stacktrace of the exception the callback raised, then proof that
    Python went on: a second callback after the caught one."""
    try:
        erlang.call(name, *args)
    except erlang.ErlangException as e:
        assert isinstance(e, erlang.Error)
        return (e.kind, type(e.kind).__name__, e.reason, e.stacktrace, str(e))
    return "no exception"


def caught_then_go_on(failing: str, working: str, n: int) -> list:
    """n failing callbacks, each caught, each followed by a working one."""
    results = []
    for i in range(n):
        try:
            erlang.call(failing)
        except erlang.ErlangException:
            results.append(erlang.call(working, i))
    return results


COUNTER = 0


def no_replay(name: str, n: int) -> tuple:
    """A side effect before n callbacks: if the frame were replayed it would run again."""
    global COUNTER
    COUNTER = 0
    COUNTER += 1
    erlang.call("note_side_effect")
    total = 0
    for i in range(n):
        total += erlang.call(name, i)
    return (COUNTER, total)


def send(dest, term) -> None:
    erlang.send(dest, term)


def send_error(dest) -> tuple:
    """The class name and message that erlang.send(dest, ...) raises."""
    try:
        erlang.send(dest, "hello")
    except Exception as e:
        return (type(e).__name__, str(e), isinstance(e, (TypeError, erlang.Error)))
    return ("no exception", "", False)


def self_pid():
    return erlang.self()


def self_in_thread():
    """erlang.self() on a thread that serves no py:call."""
    box = []
    t = threading.Thread(target=lambda: box.append(erlang.self()))
    t.start()
    t.join()
    return box[0]


def double(x):
    return x * 2


def nest(level: int) -> int:
    """Python -> Erlang (nest_step) -> Python (nest) ... level times; returns the depth
    reached."""
    if level == 0:
        return 0
    return erlang.call("nest_step", level - 1) + 1


def nest_in_thread(level: int) -> int:
    """nest() from a threading.Thread (its callbacks go to the dispatcher)."""
    box = []
    t = threading.Thread(target=lambda: box.append(nest(level)))
    t.start()
    t.join()
    return box[0]


def threads(n_threads: int, n_calls: int) -> list:
    """n_threads threading.Thread each make n_calls erlang.call('mul', i, j); returns, per
    thread, the number of right answers (or the error)."""
    answers: list = [None] * n_threads

    def work(i: int) -> None:
        try:
            right = 0
            for j in range(n_calls):
                if erlang.call("mul", i, j) == i * j:
                    right += 1
            answers[i] = right
        except BaseException as e:
            answers[i] = repr(e)
            raise

    workers = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return answers


def thread_pool(n_workers: int, n_calls: int) -> int:
    """n_calls erlang.call('mul', ...) over a ThreadPoolExecutor; the number of right
    answers."""
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = list(pool.map(lambda j: erlang.call("mul", j, 3), range(n_calls)))
    return sum(1 for j, r in enumerate(results) if r == j * 3)


def gil_released(ms: int) -> tuple:
    """How far a counting thread gets while this thread waits ms in an Erlang fun, against how
    far it gets while this thread sleeps ms in time.sleep (which releases the GIL)."""
    count = 0
    stop = False

    def counter() -> None:
        nonlocal count
        while not stop:
            count += 1

    t = threading.Thread(target=counter)
    t.start()
    try:
        while count == 0:
            time.sleep(0.001)
        before = count
        time.sleep(ms / 1000)
        baseline = count - before
        before = count
        erlang.call("sleep", ms)
        during = count - before
    finally:
        stop = True
        t.join()
    return (during, baseline)


def late_callback(pid) -> None:
    """Waits until its py:call is cancelled (the interrupt arrives as CallCancelled), then
    makes a callback anyway and reports what it raised to pid."""
    try:
        while True:
            time.sleep(0.005)
    except erlang.CallCancelled:
        pass
    try:
        erlang.call("mul", 2, 3)
    except erlang.CallCancelled as e:
        erlang.send(pid, (erlang.Atom("cancelled"), str(e)))
    except BaseException as e:
        erlang.send(pid, (erlang.Atom("other"), repr(e)))
    else:
        erlang.send(pid, erlang.Atom("no_exception"))


def callback_when_caller_dies(pid, name: str) -> None:
    """Calls a fun that never returns in time; its caller is killed meanwhile. Reports what
    the waiting erlang.call raised, and how long it waited, to pid."""
    start = time.monotonic()
    try:
        erlang.call(name)
    except erlang.CallCancelled as e:
        outcome = (erlang.Atom("cancelled"), str(e))
    except BaseException as e:
        outcome = (erlang.Atom("other"), repr(e))
    else:
        outcome = (erlang.Atom("no_exception"), "")
    erlang.send(pid, outcome + (time.monotonic() - start,))


def in_thread(function: str, *args):
    """Runs function(*args) of this module on a threading.Thread, which serves no py:call:
    its callbacks go to the dispatcher. Returns the result; re-raises what it raised."""
    box: list = []

    def run() -> None:
        try:
            box.append((True, globals()[function](*args)))
        except BaseException as e:
            box.append((False, e))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value
