"""Python calls Erlang (docs/callbacks.md): the three call forms, conversion of arguments and
results, the exceptions, threads and ThreadPoolExecutor, erlang.send and erlang.self, and the
type stub priv/python/erlang.pyi against the real module.

The Erlang functions called here (all named pt_*) are registered by
test/py_test_functions.erl, which test/py_pytest_SUITE.erl runs before pytest.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

erlang = pytest.importorskip("erlang")


@pytest.fixture(scope="module", autouse=True)
def _registered():
    try:
        erlang.call("pt_ident", 1)
    except erlang.UnknownFunction:
        pytest.fail("pt_* functions are not registered: call py_test_functions:register_all()")


# The three forms


def test_three_forms_give_one_result():
    """erlang.call('f', ...), erlang.f(...) and `from erlang import f` are the same call."""
    from erlang import pt_add

    assert erlang.call("pt_add", 1, 2, 3) == 6
    assert erlang.pt_add(1, 2, 3) == 6
    assert pt_add(1, 2, 3) == 6


def test_attribute_is_a_function_object():
    """erlang.name is an erlang.Function that knows its name; the lookup happens per call."""
    f = erlang.pt_add
    assert isinstance(f, erlang.Function)
    assert f.name == "pt_add"
    assert repr(f) == "<erlang function pt_add>"
    assert erlang.never_registered_yet.name == "never_registered_yet"


def test_private_names_are_not_functions():
    """Names starting with _ are left to the module: AttributeError, not a Function."""
    with pytest.raises(AttributeError):
        erlang._private  # noqa: B018


def test_no_arguments_and_many_arguments():
    """Arguments arrive as one list, however many."""
    assert erlang.pt_add() == 0
    assert erlang.pt_add(*range(1000)) == sum(range(1000))


def test_name_must_be_a_str():
    """erlang.call needs a str (or erlang.Atom) name first."""
    with pytest.raises(TypeError):
        erlang.call()
    with pytest.raises(TypeError):
        erlang.call(42)
    assert erlang.call(erlang.Atom("pt_ident"), 5) == 5


# Conversion


@pytest.mark.parametrize(
    "value",
    [0, -(2**200), 2**200, 1.5, "text", "ünïcødé", [1, [2, [3]]], (1, ("a", 2.0)), {"k": [1]}],
)
def test_round_trip_through_erlang(value):
    """Values go to Erlang and back unchanged (core conversion table)."""
    assert erlang.pt_ident(value) == value
    assert type(erlang.pt_ident(value)) is type(value)


def test_none_and_bools():
    """None goes as `none` and comes back None; bools as true/false."""
    assert erlang.pt_ident(None) is None
    assert erlang.pt_ident(True) is True
    assert erlang.pt_type(True) == "atom"


def test_bytes_go_as_binaries():
    """bytes become a binary; a UTF-8 binary comes back as str, any other as bytes."""
    assert erlang.pt_type(b"raw") == "binary"
    assert erlang.pt_ident(b"raw") == "raw"
    assert erlang.pt_ident(b"\xff\x00") == b"\xff\x00"


def test_atom_round_trip():
    """An erlang.Atom is an atom in Erlang and comes back as an erlang.Atom; a str does not."""
    atom = erlang.Atom("hello_from_python")
    assert erlang.pt_type(atom) == "atom"
    assert erlang.pt_type("hello_from_python") == "binary"
    back = erlang.pt_ident(atom)
    assert type(back) is erlang.Atom
    assert back == "hello_from_python"
    assert repr(back) == "Atom('hello_from_python')"
    nested = erlang.pt_ident({"key": (atom, [atom])})
    assert type(nested["key"][0]) is erlang.Atom
    assert type(nested["key"][1][0]) is erlang.Atom


def test_pid_round_trip():
    """A pid from Erlang is an erlang.Pid that goes back as the same pid; equal and hashable."""
    pid = erlang.pt_self()
    assert isinstance(pid, erlang.Pid)
    assert erlang.pt_ident(pid) == pid
    assert hash(erlang.pt_ident(pid)) == hash(pid)
    assert erlang.pt_type(pid) == "pid"


# Errors


def test_unknown_function():
    """An unregistered name raises UnknownFunction (an erlang.Error and a LookupError) naming
    it, in each form."""
    from erlang import pt_not_registered

    for form in (
        lambda: erlang.call("pt_not_registered", 1),
        lambda: erlang.pt_not_registered(1),
        lambda: pt_not_registered(1),
    ):
        with pytest.raises(erlang.UnknownFunction, match="pt_not_registered") as info:
            form()
        assert info.value.name == "pt_not_registered"
        assert isinstance(info.value, erlang.Error)
        assert isinstance(info.value, LookupError)


@pytest.mark.parametrize("kind", ["error", "throw", "exit"])
def test_erlang_exception(kind):
    """error, throw and exit become ErlangException with kind, reason and the stacktrace."""
    reason = (erlang.Atom("bad"), "thing", 42)
    with pytest.raises(erlang.ErlangException) as info:
        erlang.call("pt_" + kind, reason)
    e = info.value
    assert type(e.kind) is erlang.Atom
    assert e.kind == kind
    assert e.reason == reason
    assert isinstance(e.stacktrace, str)
    assert "py_test_functions" in e.stacktrace
    assert str(e).startswith(kind + ": ")
    assert isinstance(e, erlang.Error)


def test_erlang_builtin_error_reason():
    """An error raised by the runtime (badarith) carries its reason atom."""
    with pytest.raises(erlang.ErlangException) as info:
        erlang.pt_add(1, "two")
    assert info.value.kind == "error"
    assert info.value.reason == "badarith"


def test_caught_exception_then_go_on():
    """After catching an ErlangException, later calls work."""
    for i in range(100):
        try:
            erlang.pt_error(erlang.Atom("oops"))
        except erlang.ErlangException:
            pass
        assert erlang.pt_ident(i) == i


def test_exception_hierarchy():
    """Error is the base of the module's exceptions; CallCancelled is a BaseException only, so
    that `except Exception` does not swallow it."""
    assert issubclass(erlang.Error, Exception)
    assert issubclass(erlang.ErlangException, erlang.Error)
    assert issubclass(erlang.UnknownFunction, erlang.Error)
    assert issubclass(erlang.CallCancelled, BaseException)
    assert not issubclass(erlang.CallCancelled, Exception)


# Reentrancy


def test_nested_python_call():
    """An Erlang fun called from here may py:call Python again (routed to this thread)."""
    assert erlang.pt_py_call("math", "sqrt", [16]) == 4.0
    assert erlang.pt_py_call("operator", "add", ["a", "b"]) == "ab"


def test_nested_five_levels():
    """Python -> Erlang -> Python ... nests."""
    assert erlang.pt_py_call("test_callbacks", "nest", [5]) == 5


def nest(level: int) -> int:
    if level == 0:
        return 0
    return erlang.pt_py_call("test_callbacks", "nest", [level - 1]) + 1


# Threads


def test_threads_8x1000():
    """8 threading.Thread x 1000 erlang.call each: every answer right."""
    errors: list = []
    right = [0] * 8

    def work(i: int) -> None:
        try:
            for j in range(1000):
                if erlang.pt_add(i, j) == i + j:
                    right[i] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert right == [1000] * 8


def test_thread_pool_executor():
    """erlang.call from ThreadPoolExecutor workers: 8 workers, 2000 calls, all right."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda j: erlang.pt_add(j, j), range(2000)))
    assert results == [2 * j for j in range(2000)]


def test_exceptions_in_threads():
    """The exceptions are the same on a thread that serves no py:call."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        with pytest.raises(erlang.ErlangException) as info:
            pool.submit(erlang.pt_throw, erlang.Atom("from_thread")).result()
        assert info.value.kind == "throw"
        with pytest.raises(erlang.UnknownFunction):
            pool.submit(erlang.call, "pt_not_registered").result()


def test_gil_released_while_waiting():
    """Another thread runs Python while this one waits 300 ms in Erlang."""
    count = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=counter)
    t.start()
    try:
        before = count
        erlang.pt_sleep(300)
        during = count - before
    finally:
        stop.set()
        t.join()
    assert during > 1000


# erlang.self and erlang.send


def test_self_is_the_caller():
    """erlang.self() is the pid of the process that made this py:call (the one that runs the
    funs this thread calls), None on a thread that serves no call."""
    me = erlang.self()
    assert isinstance(me, erlang.Pid)
    assert erlang.pt_self() == me
    box = []
    t = threading.Thread(target=lambda: box.append(erlang.self()))
    t.start()
    t.join()
    assert box == [None]


def test_send_to_registered_name():
    """erlang.send to a registered name, as a str or an erlang.Atom."""
    erlang.send("py_test_mailbox", ("by_str", 1))
    erlang.send(erlang.Atom("py_test_mailbox"), (erlang.Atom("by_atom"), 2))
    assert erlang.pt_mailbox_take(2) == [("by_str", 1), ("by_atom", 2)]


def test_send_terms_to_pid():
    """erlang.send to a pid delivers tuples, atoms, nested pids and binaries unchanged."""
    mailbox = erlang.pt_mailbox_pid()
    me = erlang.self()
    term = (erlang.Atom("tagged"), [me, {"pid": mailbox}], b"\x00\xff", "text", 2**100)
    erlang.send(mailbox, term)
    erlang.send(mailbox, erlang.Atom("just_an_atom"))
    got = erlang.pt_mailbox_take(2)
    assert got == [term, "just_an_atom"]
    assert type(got[0][0]) is erlang.Atom
    assert type(got[1]) is erlang.Atom


def test_send_from_thread():
    """erlang.send works from threads that serve no call."""
    mailbox = erlang.pt_mailbox_pid()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: erlang.send(mailbox, ("n", i)), range(20)))
    assert sorted(erlang.pt_mailbox_take(20)) == [("n", i) for i in range(20)]


def test_send_bad_destination():
    """A bad destination raises: TypeError for a non-pid, erlang.Error for an unknown name."""
    with pytest.raises(TypeError):
        erlang.send(42, "x")
    with pytest.raises(TypeError):
        erlang.send(None, "x")
    with pytest.raises(erlang.Error, match="pt_nobody_here"):
        erlang.send("pt_nobody_here", "x")
    with pytest.raises(TypeError):
        erlang.send(erlang.pt_mailbox_pid())


# The type stub


def _stub_tree() -> ast.Module:
    for entry in sys.path:
        path = os.path.join(entry, "erlang.pyi")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return ast.parse(f.read(), path)
    pytest.fail("erlang.pyi is not on sys.path (it lives in priv/python)")


def test_stub_names_match_the_module():
    """priv/python/erlang.pyi declares exactly the module's public names, in __all__ too."""
    tree = _stub_tree()
    declared = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_")
    }
    # The port helpers and the event loop, re-exported from _erlang_impl.
    declared |= {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module in ("_erlang_impl._ports", "_erlang_impl._loop")
        for alias in node.names
    }
    (all_node,) = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    ]
    runtime = {name for name in dir(erlang) if not name.startswith("_")}
    assert declared == runtime
    assert set(ast.literal_eval(all_node.value)) == runtime


def test_stub_attributes_exist():
    """The attributes the stub gives the exception and Function classes exist at run time."""
    tree = _stub_tree()
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    samples = {
        "ErlangException": erlang.ErlangException(erlang.Atom("error"), 1, "1", "stack"),
        "UnknownFunction": erlang.UnknownFunction("f"),
        "Function": erlang.Function("f"),
    }
    for name, sample in samples.items():
        attributes = [
            node.target.id
            for node in classes[name].body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        ]
        assert attributes
        for attribute in attributes:
            assert hasattr(sample, attribute), (name, attribute)


def test_keyword_arguments_arrive_as_a_trailing_map():
    """erlang.f(1, opt=2) passes [1, #{<<"opt">> => 2}]; without keywords nothing is added;
    erlang.call itself takes none."""
    assert erlang.pt_args(1, opt=2) == [1, {"opt": 2}]
    assert erlang.pt_args(1) == [1]
    from erlang import pt_args

    assert pt_args(opt="x") == [{"opt": "x"}]
    with pytest.raises(TypeError):
        erlang.call("pt_args", 1, opt=2)
