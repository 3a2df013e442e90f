"""The port helpers seen from sandboxed Python: erlang.run_shell, erlang.run,
erlang.start_worker and the subprocess layer over ports (docs/ports.md)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

import erlang
from _erlang_impl import _ports
from _erlang_impl import subprocess as port_subprocess


def processes_with(marker: str) -> list[int]:
    """Pids of the live processes whose command line contains marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def gone(marker: str, within: float = 5.0) -> bool:
    """True once no process with marker is left (killing is asynchronous for a closed port)."""
    deadline = time.monotonic() + within
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------
# run_shell


def test_run_shell_is_there_without_user_code():
    """`from erlang import run_shell` works as the spec's example, output as str."""
    from erlang import run_shell

    out = run_shell("ls -la /")
    assert isinstance(out, str)
    assert "bin" in out


def test_run_shell_merges_stderr_and_keeps_returncode():
    """stdout and stderr merged in order; the exit status is .returncode."""
    out = erlang.run_shell("echo one; echo two >&2; echo three; exit 7")
    assert out == "one\ntwo\nthree\n"
    assert out.returncode == 7


def test_run_shell_non_utf8_output_is_replaced():
    """Bytes that are not UTF-8 become U+FFFD; run() gives the bytes themselves."""
    out = erlang.run_shell("printf 'a\\377b'")
    assert out == "a\ufffdb"
    assert erlang.run(["printf", "a\\377b"]).stdout == b"a\xffb"


def test_run_shell_timeout_kills_the_whole_tree():
    """At the deadline the shell and its background job are killed: no sleep is left."""
    marker = "31.4159"
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        erlang.run_shell(f'sh -c "sleep {marker} & sleep {marker}"', timeout=0.5)
    assert time.monotonic() - start < 3
    assert isinstance(info.value, subprocess.TimeoutExpired)
    assert processes_with(marker) == []


def test_run_shell_output_is_bounded():
    """A command that prints forever is killed at max_output; what came first is kept."""
    marker = "51.93"
    with pytest.raises(erlang.OutputLimitExceeded) as info:
        erlang.run_shell(f"yes {marker}", max_output=100_000)
    assert info.value.limit == 100_000
    assert info.value.output.startswith(f"{marker}\n{marker}\n".encode())
    assert len(info.value.output) > 100_000
    assert processes_with(marker) == []


def test_run_shell_cwd_and_env():
    """cwd and env reach the shell; env replaces the environment."""
    out = erlang.run_shell("pwd; echo $FOO; echo ${HOME:-nohome}", cwd="/tmp", env={"FOO": "bar"})
    assert out == "/tmp\nbar\nnohome\n"


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: erlang.run_shell(42), TypeError),
        (lambda: erlang.run_shell("true", timeout="soon"), TypeError),
        (lambda: erlang.run_shell("true", timeout=-1), ValueError),
        (lambda: erlang.run_shell("true", max_output=-5), ValueError),
        (lambda: erlang.run_shell("true", env={"A=B": "x"}), ValueError),
        (lambda: erlang.run_shell("true", env=["A"]), TypeError),
        (lambda: erlang.run_shell("true\0false"), ValueError),
        (lambda: erlang.run_shell("true", cwd="/nonexistent/dir"), FileNotFoundError),
    ],
)
def test_run_shell_bad_input(call, error):
    """Bad arguments raise a clear error and start nothing."""
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------
# run


def test_run_keeps_stdout_and_stderr_apart():
    """run() returns a CompletedProcess, stdout and stderr apart, bytes."""
    result = erlang.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


def test_run_input_is_written_then_closed():
    """input= goes to stdin, then EOF: cat returns the same 100,000 bytes."""
    data = bytes(range(256)) * 400 + b"x" * 2400
    assert len(data) == 104_800
    assert erlang.run(["cat"], input=b"x" * 100_000).stdout == b"x" * 100_000
    assert erlang.run(["cat"], input=data).stdout == data


def test_run_arguments_reach_the_program_literally():
    """; $(...) quotes and spaces are not interpreted by any shell."""
    args = ["a;b", "$(touch /tmp/should-not-exist)", "'q'", '"dq"', "c d", "*", "`id`", ""]
    result = erlang.run(["printf", "%s|", *args])
    assert result.stdout == ("|".join(args) + "|").encode()
    assert not os.path.exists("/tmp/should-not-exist")


def test_run_missing_program():
    """A program not found raises FileNotFoundError naming it, and leaves nothing behind."""
    with pytest.raises(FileNotFoundError) as info:
        erlang.run(["no-such-program-here"])
    assert info.value.filename == "no-such-program-here"
    with pytest.raises(FileNotFoundError):
        erlang.run(["/no/such/path"])


def test_run_not_executable(tmp_path):
    """A file that is not executable raises PermissionError."""
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError):
        erlang.run([str(script)])


@pytest.mark.parametrize(
    "args, kwargs, error",
    [
        ("ls", {}, TypeError),
        ([], {}, ValueError),
        ([1, 2], {}, TypeError),
        (["cat"], {"input": "text"}, TypeError),
        (["true"], {"timeout": object()}, TypeError),
        (None, {}, TypeError),
    ],
)
def test_run_bad_arguments(args, kwargs, error):
    """A bad argument type raises TypeError (or ValueError for an empty argv)."""
    with pytest.raises(error):
        erlang.run(args, **kwargs)


def test_run_timeout_keeps_partial_output():
    """CommandTimeout carries what the command wrote before it was killed."""
    with pytest.raises(erlang.CommandTimeout) as info:
        erlang.run(["sh", "-c", "echo early; echo late >&2; sleep 30"], timeout=0.5)
    assert info.value.output == b"early\n"
    assert info.value.stderr == b"late\n"


def test_run_exit_codes_are_the_programs_own():
    """Exit codes survive the VM ignoring SIGCHLD; a signal death is -N."""
    for code in (0, 1, 3, 127, 255):
        assert erlang.run(["sh", "-c", f"exit {code}"]).returncode == code
    assert erlang.run(["sh", "-c", "kill -TERM $$"]).returncode == -15


def test_run_big_output():
    """Megabytes of output arrive whole."""
    result = erlang.run(["head", "-c", "3000000", "/dev/zero"])
    assert result.stdout == b"\0" * 3_000_000


def test_background_leftovers_are_killed_when_run_returns():
    """A background job the command left running is killed once run() returns."""
    marker = "27.1828"
    erlang.run(["sh", "-c", f"sleep {marker} >/dev/null 2>&1 &"])
    assert gone(marker)


def test_user_registration_replaces_the_builtin():
    """A user's run_shell (the spec's own example) is what Python calls."""
    erlang.call("pt_shell_override")
    try:
        from erlang import run_shell

        assert run_shell("echo hi") == "custom: echo hi"
    finally:
        erlang.call("pt_shell_restore")
    assert erlang.run_shell("echo hi") == "hi\n"


# ---------------------------------------------------------------------------
# start_worker


def test_worker_line_round_trip():
    """write, readline, close_stdin, wait: a cat worker echoes lines."""
    with erlang.start_worker(["cat"]) as w:
        assert isinstance(w.pid, int) and w.pid > 0
        assert w.returncode is None
        w.write(b"hello\n")
        assert w.readline(timeout=5) == b"hello\n"
        w.write("text too\n")
        assert w.readline(timeout=5) == b"text too\n"
        w.close_stdin()
        assert w.wait(timeout=5) == 0
        assert w.returncode == 0
        assert w.readline() == b""


def test_worker_text_mode_and_iteration():
    """text=True gives str; iteration yields lines until the end."""
    with erlang.start_worker("for i in 1 2 3; do echo line$i; done", text=True) as w:
        assert list(w) == ["line1\n", "line2\n", "line3\n"]
        assert w.wait(timeout=5) == 0


def test_worker_read_n_and_timeouts():
    """read(n) gives at most n bytes; a read with nothing to give times out, keeping data."""
    with erlang.start_worker(["cat"]) as w:
        with pytest.raises(TimeoutError):
            w.readline(timeout=0.1)
        w.write(b"abcdef")
        assert w.read(2, timeout=5) == b"ab"
        with pytest.raises(TimeoutError):
            w.readline(timeout=0.2)
        w.write(b"gh\n")
        assert w.readline(timeout=5) == b"cdefgh\n"
        with pytest.raises(TimeoutError):
            w.wait(timeout=0.1)


def test_worker_stderr_apart():
    """stderr='pipe' reads stderr as its own stream."""
    with erlang.start_worker(
        ["sh", "-c", "echo out; echo err >&2"], stderr="pipe", stdin="null"
    ) as w:
        assert w.read(stream="stderr", timeout=5) == b"err\n"
        assert w.read(timeout=5) == b"out\n"


def test_worker_kill_and_close():
    """kill() ends the worker with -9; close() is idempotent; a closed worker refuses."""
    marker = "41.421"
    w = erlang.start_worker(f"sleep {marker}")
    w.kill()
    assert w.wait(timeout=5) == -9
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(ValueError):
        w.write(b"x")
    assert gone(marker)


def test_worker_close_kills_the_process_tree():
    """close() kills the command and what it started in the background."""
    marker = "42.718"
    w = erlang.start_worker(f"sleep {marker} & sleep {marker}; echo never")
    deadline = time.monotonic() + 5
    # The shell (whose command line has the marker too) and its two sleeps.
    while len(processes_with(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(processes_with(marker)) == 3
    w.close()
    assert processes_with(marker) == []


def test_worker_garbage_collected_kills_the_process():
    """Dropping the last reference to the handle kills the OS process."""
    marker = "43.1415"
    w = erlang.start_worker(["sleep", marker])
    pid = w.pid
    assert processes_with(marker) == [pid]
    del w
    assert gone(marker)


def test_worker_missing_program():
    """start_worker of a program that does not exist raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        erlang.start_worker(["no-such-worker-program"])


@pytest.mark.parametrize(
    "kwargs",
    [{"stdin": "inherit"}, {"stdout": "stdout"}, {"stderr": "file"}, {"stdin": 3}],
)
def test_worker_bad_stream_options(kwargs):
    """Stream options outside pipe/null/inherit/stdout are refused."""
    with pytest.raises(ValueError):
        erlang.start_worker(["true"], **kwargs)


def test_worker_write_after_exit_is_broken_pipe():
    """Writing to a worker that exited without reading raises BrokenPipeError."""
    with erlang.start_worker(["true"]) as w:
        w.wait(timeout=5)
        with pytest.raises(BrokenPipeError):
            for _ in range(10):
                w.write(b"x" * 100_000)


def test_ten_workers_ten_thousand_lines_each():
    """10 workers at once, 10,000 lines each, read from 10 threads: nothing lost, order kept."""
    results = {}

    def consume(n):
        with erlang.start_worker(["seq", "-f", f"w{n}-%g", "10000"]) as w:
            results[n] = [line.rstrip(b"\n") for line in w]
            w.wait(timeout=30)

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for n in range(10):
        assert results[n] == [f"w{n}-{i}".encode() for i in range(1, 10001)]


def test_a_slow_reader_holds_memory_bounded():
    """A worker that prints far more than anyone reads waits on its pipe (flow control)."""
    with erlang.start_worker(["yes"]) as w:
        time.sleep(0.5)
        info = erlang.call("pt_worker_memory", w._worker)
        assert info < 4 * 1024 * 1024, info
        assert w.read(4, timeout=5) == b"y\ny\n"


# ---------------------------------------------------------------------------
# The subprocess layer


def test_layer_run_capture_and_check():
    """run with capture_output, text, check, input and timeout behave as the stdlib's."""
    sp = port_subprocess
    r = sp.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in", capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"in", b"err\n")
    r = sp.run("echo $((6*7))", shell=True, stdout=sp.PIPE, text=True)
    assert r.stdout == "42\n"
    with pytest.raises(sp.CalledProcessError) as info:
        sp.run(["false"], check=True)
    assert info.value.returncode == 1
    with pytest.raises(sp.TimeoutExpired):
        sp.run(["sleep", "10"], timeout=0.3)


def test_layer_helpers():
    """call, check_call, check_output, getoutput, getstatusoutput."""
    sp = port_subprocess
    assert sp.call(["sh", "-c", "exit 4"]) == 4
    assert sp.check_call(["true"]) == 0
    with pytest.raises(sp.CalledProcessError):
        sp.check_call(["false"])
    assert sp.check_output(["echo", "hi"]) == b"hi\n"
    assert sp.check_output("echo a; echo b >&2", shell=True, stderr=sp.STDOUT, text=True) == (
        "a\nb\n"
    )
    assert sp.getoutput("echo x; exit 2") == "x"
    assert sp.getstatusoutput("echo y; exit 2") == (2, "y")


def test_layer_popen_pipes():
    """Popen with pipes: write stdin, read stdout line by line, poll, wait, context manager."""
    sp = port_subprocess
    with sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE) as p:
        assert p.poll() is None
        p.stdin.write(b"one\ntwo\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"one\n"
        p.stdin.close()
        assert p.stdout.read() == b"two\n"
        assert p.wait(timeout=5) == 0
    assert p.returncode == 0


def test_layer_communicate_big_input_does_not_deadlock():
    """communicate(input) of 3 MB to cat: the output is read while the input is written."""
    sp = port_subprocess
    data = os.urandom(3_000_000)
    with sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE, stderr=sp.PIPE) as p:
        out, err = p.communicate(data, timeout=60)
    assert (out, err, p.returncode) == (data, b"", 0)
    r = sp.run(["cat"], input="text\r\nline", capture_output=True, text=True)
    assert r.stdout == "text\nline"


def test_worker_writes_are_pipelined():
    """Many writes before any read: all arrive, in order."""
    with erlang.start_worker(["cat"]) as w:
        for i in range(500):
            w.write(f"{i}\n".encode())
        lines = [w.readline(timeout=5) for _ in range(500)]
    assert lines == [f"{i}\n".encode() for i in range(500)]


def test_layer_popen_communicate_and_kill():
    """communicate with a timeout that expires, then kill; terminate gives -15."""
    sp = port_subprocess
    p = sp.Popen(["sleep", "10"], stdout=sp.PIPE)
    with pytest.raises(sp.TimeoutExpired):
        p.communicate(timeout=0.2)
    p.kill()
    p.communicate()
    assert p.returncode == -9
    p = sp.Popen(["sleep", "10"])
    p.terminate()
    assert p.wait(timeout=5) == -15


def test_layer_popen_stdout_to_a_file(tmp_path):
    """A file object as stdout receives the output."""
    sp = port_subprocess
    target = tmp_path / "out.txt"
    with open(target, "wb") as f:
        assert sp.call(["echo", "to file"], stdout=f) == 0
    assert target.read_bytes() == b"to file\n"


def test_layer_refuses_what_ports_cannot_do():
    """preexec_fn, pass_fds, user... raise ValueError rather than being ignored."""
    sp = port_subprocess
    with pytest.raises(ValueError):
        sp.Popen(["true"], preexec_fn=lambda: None)
    with pytest.raises(ValueError):
        sp.Popen(["true"], pass_fds=(3,))
    with pytest.raises(TypeError):
        sp.Popen(["true"], no_such_argument=1)


def test_layer_is_off_by_default():
    """With the default env, the stdlib subprocess is still refused with the spec's message."""
    assert port_subprocess.mode() == "blocked"
    with pytest.raises(RuntimeError) as info:
        subprocess.run(["true"])
    assert str(info.value).startswith("subprocess.Popen is blocked in Erlang VM context.")


def test_port_round_trips_unchanged():
    """The spec's pattern: a port returned from Erlang to Python comes back the same."""
    port = erlang.call("pt_open_port")
    assert type(port).__name__ == "Port"
    assert erlang.call("pt_port_back", port) == (True, True)


def test_module_has_a_public_face():
    """The helpers are importable from erlang and from _erlang_impl._ports (erlang.run is
    _erlang_impl._loop.run, which runs a coroutine or hands an argv to _ports.run)."""
    from _erlang_impl import _loop
    from erlang import CommandTimeout, OutputLimitExceeded, Worker, run, start_worker

    assert run is _loop.run and start_worker is _ports.start_worker
    assert issubclass(CommandTimeout, TimeoutError)
    assert issubclass(OutputLimitExceeded, erlang.Error)
    assert Worker is _ports.Worker
