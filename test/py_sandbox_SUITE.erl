%% The sandbox, seen from Erlang: it is installed, the spec's errors come back as values, and
%% every operation that would kill or cripple the VM if the sandbox let it through is refused
%% or made harmless. Each of those runs in a peer node of its own (an OS process, started
%% with setsid so that a signal to its process group cannot reach this node), and each checks
%% that no child process was created (attempts run `touch FILE'; FILE must not exist and the
%% peer has no new child), that the peer VM still answers, and that none of its signal
%% dispositions changed (the SigCgt and SigIgn lines of its /proc/PID/status).
%% The Python-side tests are python_tests/test_sandbox_*.py (run by py_pytest_SUITE).
-module(py_sandbox_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(BLOCKED, " is blocked in Erlang VM context.").
%% libc's execv and vfork through ctypes pointers made from computed addresses (no dlsym,
%% no audit event): each must fail with EPERM. Needs ctypes, errno, raw_libc_function,
%% TOUCH and TOUCH_FILE.
-define(RAW_EXECV_AND_VFORK_FAIL,
        "execv = raw_libc_function('execv', ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)\n"
        "vfork = raw_libc_function('vfork', ctypes.c_int)\n"
        "exit_now = raw_libc_function('_exit', None, ctypes.c_int)\n"
        "argv = (ctypes.c_char_p * 3)(TOUCH.encode(), TOUCH_FILE.encode(), None)\n"
        "assert execv(TOUCH.encode(), argv) == -1\n"
        "assert ctypes.get_errno() == errno.EPERM\n"
        "pid = vfork()\n"
        "if pid == 0:\n"
        "    execv(TOUCH.encode(), argv)\n"
        "    exit_now(127)\n"
        "assert pid == -1 and ctypes.get_errno() == errno.EPERM, pid\n").
-define(SPAWN_LINES, "\nfork()/exec() would corrupt the Erlang runtime.\n"
                     "Use Erlang ports (open_port/2) for subprocess management.").

all() ->
    [{group, this_node}, {group, peers}].

groups() ->
    [{this_node, [], [is_sandboxed, spec_subprocess_example, spec_fork_example,
                      every_table_row_from_erlang, signal_handlers_unchanged]},
     {peers, [], [os__exit, posix__exit_after_reimport, os__exit_after_reload, os_abort,
                  kill_own_pid, kill_own_thread, kill_own_group, kill_every_process,
                  killpg_own_group, pthread_kill, alarm, setitimer, raise_signal,
                  faulthandler_exit_later, faulthandler_crash_helpers, close_vm_fds,
                  closerange_is_made_harmless, dup2_onto_vm_fds, fickle_fd_arguments, sys_exit_in_main_code,
                  sys_exit_in_threads, sys_exit_in_asyncio_task, kernel_layer_arms_itself,
                  raw_ctypes_exec_and_vfork,
                  cffi_exec_and_vfork,
                  foreign_call_without_a_library_is_filtered,
                  credentials_are_refused, own_memory_is_not_writable,
                  chdir_and_umask_are_pythons_own, recursion_limit_cannot_overflow_a_stack,
                  sandbox_survives_tampering_in_a_fresh_vm,
                  sandbox_survives_application_restart]}].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_group(_Group, Config) ->
    Config.

end_per_group(_Group, _Config) ->
    ok.

%%% This node

%% @doc The spec's check, from Erlang: is_sandboxed() is True.
is_sandboxed(_Config) ->
    ?assertEqual({ok, true},
                 py:eval(<<"__import__('_erlang_impl._sandbox', fromlist=['_']).is_sandboxed()">>)).

%% @doc The spec's subprocess.run example: RuntimeError, its exact three-line message.
spec_subprocess_example(_Config) ->
    {error, {'RuntimeError', Message, Traceback}} =
        py:exec(<<"import subprocess\nsubprocess.run(['ls'])">>),
    ?assertEqual(spawn_message("subprocess.Popen"), Message),
    ?assertNotEqual(nomatch, string:find(Traceback, "RuntimeError: subprocess.Popen is blocked")).

%% @doc The spec's os.fork example.
spec_fork_example(_Config) ->
    ?assertMatch({error, {'RuntimeError', _, _}}, py:exec(<<"import os\nos.fork()">>)),
    {error, {_, Message, _}} = py:exec(<<"import os\nos.fork()">>),
    ?assertEqual(spawn_message("os.fork"), Message).

%% @doc Every row of the spec's table, called through py:call from Erlang.
every_table_row_from_erlang(Config) ->
    File = touch_file(Config),
    Touch = list_to_binary(touch()),
    Argv = [Touch, File],
    Command = <<Touch/binary, " ", File/binary>>,
    Rows = [{"os.system", os, system, [Command]},
            {"os.popen", os, popen, [Command]},
            {"os.execv", os, execv, [Touch, Argv]},
            {"os.execl", os, execl, [Touch | Argv]},
            {"os.execvp", os, execvp, [<<"touch">>, Argv]},
            {"os.spawnv", os, spawnv, [0, Touch, Argv]},
            {"os.spawnlp", os, spawnlp, [0, <<"touch">> | Argv]},
            {"os.posix_spawn", os, posix_spawn, [Touch, Argv, #{}]},
            {"os.posix_spawnp", os, posix_spawnp, [<<"touch">>, Argv, #{}]},
            {"subprocess.Popen", subprocess, 'Popen', [Argv]},
            {"subprocess.Popen", subprocess, run, [Argv]},
            {"subprocess.Popen", subprocess, call, [Argv]},
            {"subprocess.Popen", subprocess, check_call, [Argv]},
            {"subprocess.Popen", subprocess, check_output, [Argv]},
            {"subprocess.Popen", subprocess, getoutput, [Command]},
            {"subprocess.Popen", subprocess, getstatusoutput, [Command]}],
    [?assertMatch({Op, {error, {'RuntimeError', Msg, _}}} when Msg =:= Expected,
                  {Op, py:call(M, F, A)})
     || {Op, M, F, A} <- Rows, Expected <- [spawn_message(Op)]],
    ?assertNot(filelib:is_file(File)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% @doc Refused signal changes leave this VM's dispositions as they were.
signal_handlers_unchanged(_Config) ->
    Before = signal_state(os:getpid()),
    Code = <<"import signal, faulthandler\n"
             "for attempt in (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),\n"
             "                lambda: signal.signal(signal.SIGCHLD, lambda *a: None),\n"
             "                lambda: signal.siginterrupt(signal.SIGUSR1, True),\n"
             "                lambda: faulthandler.register(signal.SIGUSR2)):\n"
             "    try:\n"
             "        attempt()\n"
             "    except RuntimeError:\n"
             "        pass\n"
             "    else:\n"
             "        raise AssertionError(attempt)\n"
             "faulthandler.enable()\n">>,
    ?assertEqual(ok, py:exec(Code)),
    ?assertEqual(Before, signal_state(os:getpid())).

%%% Peers: one fresh VM per case

%% @doc os._exit is refused.
os__exit(Config) ->
    refused(Config, "import os\nos._exit(3)", "os._exit").

%% @doc posix._exit from a fresh import, after sys.modules was emptied of os and posix, is
%% the same checked builtin.
posix__exit_after_reimport(Config) ->
    refused(Config,
            "import sys\n"
            "for name in ('os', 'posix', '_erlang_sandbox', '_erlang_impl._sandbox'):\n"
            "    sys.modules.pop(name, None)\n"
            "import posix\n"
            "posix._exit(3)",
            "os._exit").

%% @doc os._exit after importlib.reload(os) and rebinding the sandbox's globals.
os__exit_after_reload(Config) ->
    refused(Config,
            "import importlib, os\n"
            "from _erlang_impl import _sandbox\n"
            "for name in list(vars(_sandbox)):\n"
            "    if not name.startswith('__'):\n"
            "        setattr(_sandbox, name, None)\n"
            "importlib.reload(_sandbox)\n"
            "os = importlib.reload(os)\n"
            "os._exit(3)",
            "os._exit").

%% @doc os.abort is refused.
os_abort(Config) ->
    refused(Config, "import os\nos.abort()", "os.abort").

%% @doc os.kill of the VM's own pid is refused, SIGTERM and SIGKILL alike.
kill_own_pid(Config) ->
    refused(Config, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "os.kill"),
    refused(Config, "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", "os.kill").

%% @doc os.kill of one of the VM's threads (which signals the whole process) is refused.
kill_own_thread(Config) ->
    refused(Config,
            "import os, signal, threading\n"
            "os.kill(threading.get_native_id(), signal.SIGKILL)",
            "os.kill").

%% @doc os.kill of the VM's process group (pid 0 and -pgid) is refused.
kill_own_group(Config) ->
    refused(Config, "import os, signal\nos.kill(0, signal.SIGKILL)", "os.kill"),
    refused(Config, "import os, signal\nos.kill(-os.getpgrp(), signal.SIGKILL)", "os.kill").

%% @doc os.kill(-1, ...) (every process) is refused. The signal is SIGCONT, harmless to
%% every process of the machine should the sandbox ever let it through.
kill_every_process(Config) ->
    refused(Config, "import os, signal\nos.kill(-1, signal.SIGCONT)", "os.kill").

%% @doc os.killpg of the VM's own group is refused.
killpg_own_group(Config) ->
    refused(Config, "import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)", "os.killpg"),
    refused(Config, "import os, signal\nos.killpg(0, signal.SIGKILL)", "os.killpg").

%% @doc signal.pthread_kill with a signal (SIGKILL ends the whole process) is refused.
pthread_kill(Config) ->
    refused(Config,
            "import signal, threading\n"
            "signal.pthread_kill(threading.get_ident(), signal.SIGKILL)",
            "signal.pthread_kill").

%% @doc signal.alarm is refused; were it let through, SIGALRM would come within the wait.
alarm(Config) ->
    refused(Config, "import signal\nsignal.alarm(1)", "signal.alarm", 1500).

%% @doc signal.setitimer is refused, for each timer.
setitimer(Config) ->
    [refused(Config, "import signal\nsignal.setitimer(signal." ++ Timer ++ ", 0.05)",
             "signal.setitimer", 300)
     || Timer <- ["ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"]].

%% @doc signal.raise_signal is refused.
raise_signal(Config) ->
    refused(Config, "import signal\nsignal.raise_signal(signal.SIGTERM)", "signal.raise_signal"),
    refused(Config, "import signal\nsignal.raise_signal(signal.SIGKILL)", "signal.raise_signal").

%% @doc faulthandler.dump_traceback_later(exit=True) is refused; were it let through, it
%% would _exit() the VM within the wait.
faulthandler_exit_later(Config) ->
    refused(Config,
            "import faulthandler\nfaulthandler.dump_traceback_later(0.05, exit=True)",
            "faulthandler.dump_traceback_later(exit=True)", 500).

%% @doc faulthandler's crash helpers (_sigsegv, _sigabrt, _fatal_error...) are refused.
faulthandler_crash_helpers(Config) ->
    [refused(Config, "import faulthandler\nfaulthandler." ++ Helper ++ "()",
             "faulthandler." ++ Helper)
     || Helper <- ["_sigsegv", "_sigabrt", "_sigfpe", "_read_null", "_stack_overflow"]].

%% @doc os.close of every descriptor the VM had open before Python started is refused,
%% keyword or positional; the VM still answers, through all of them.
close_vm_fds(Config) ->
    harmless(Config,
             "import os, _erlang_sandbox\n"
             "vm_fds = _erlang_sandbox.status()['vm_fds']\n"
             "refused = []\n"
             "for fd in vm_fds:\n"
             "    for attempt in (lambda: os.close(fd), lambda: os.close(fd=fd)):\n"
             "        try:\n"
             "            attempt()\n"
             "        except RuntimeError as error:\n"
             "            refused.append(str(error).splitlines()[0])\n"
             "assert refused == [f'os.close({fd})" ?BLOCKED "' for fd in vm_fds for _ in (1, 2)]\n"
             "assert {0, 1, 2} <= set(vm_fds)\n"
             "for fd in vm_fds:\n"
             "    os.fstat(fd)\n").

%% @doc os.closerange over every descriptor is made harmless: it closes Python's own and
%% skips the VM's, which all stay open.
closerange_is_made_harmless(Config) ->
    harmless(Config,
             "import os, _erlang_sandbox\n"
             "vm_fds = _erlang_sandbox.status()['vm_fds']\n"
             "mine = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]\n"
             "os.closerange(0, 65536)\n"
             "for fd in vm_fds:\n"
             "    os.fstat(fd)\n"
             "for fd in mine:\n"
             "    try:\n"
             "        os.fstat(fd)\n"
             "    except OSError:\n"
             "        pass\n"
             "    else:\n"
             "        raise AssertionError(f'fd {fd} left open')\n").

%% @doc os.dup2 onto the VM's descriptors (stdin, stdout, stderr, the rest) is refused.
dup2_onto_vm_fds(Config) ->
    harmless(Config,
             "import os, _erlang_sandbox\n"
             "vm_fds = _erlang_sandbox.status()['vm_fds']\n"
             "fd = os.open(os.devnull, os.O_RDWR)\n"
             "refused = 0\n"
             "for target in vm_fds:\n"
             "    try:\n"
             "        os.dup2(fd, target)\n"
             "    except RuntimeError as error:\n"
             "        assert str(error).startswith(f'os.dup2 onto fd {target}" ?BLOCKED "')\n"
             "        refused += 1\n"
             "os.close(fd)\n"
             "assert refused == len(vm_fds)\n").

%% @doc Arguments whose __index__ answers a harmless fd when checked and a VM fd afterwards
%% reach the original as the value that was checked: os.close, os.dup2 and os.closerange
%% leave the VM's descriptors alone.
fickle_fd_arguments(Config) ->
    harmless(Config,
             "import os\n"
             "class Fickle:\n"
             "    def __init__(self, *answers):\n"
             "        self.answers = list(answers)\n"
             "    def __index__(self):\n"
             "        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]\n"
             "before = [os.fstat(fd) for fd in (0, 1, 2)]\n"
             "mine = os.open(os.devnull, os.O_RDONLY)\n"
             "os.close(Fickle(mine, 2))\n"
             "try:\n"
             "    os.fstat(mine)\n"
             "except OSError:\n"
             "    pass\n"
             "else:\n"
             "    raise AssertionError('the checked fd was not the one closed')\n"
             "mine = os.open(os.devnull, os.O_RDONLY)\n"
             "os.dup2(mine, Fickle(mine + 100, 1))\n"
             "os.close(mine + 100)\n"
             "os.closerange(Fickle(mine, 0), Fickle(mine + 1, 65536))\n"
             "after = [os.fstat(fd) for fd in (0, 1, 2)]\n"
             "assert [(s.st_dev, s.st_ino) for s in before] == "
             "[(s.st_dev, s.st_ino) for s in after]\n").

%% @doc sys.exit() in the code of a call is an error value; the VM goes on.
sys_exit_in_main_code(Config) ->
    in_peer(Config,
            fun(Peer, _File) ->
                    ?assertMatch({error, {'SystemExit', <<"3">>, _}},
                                 peer:call(Peer, py, exec, [<<"import sys\nsys.exit(3)">>])),
                    ?assertMatch({error, {'SystemExit', _, _}},
                                 peer:call(Peer, py, call, [sys, exit, [0]]))
            end).

%% @doc sys.exit() in threads (threading and bare _thread) ends only those threads.
sys_exit_in_threads(Config) ->
    harmless(Config,
             "import sys, threading, _thread\n"
             "threading.excepthook = lambda args: None\n"
             "t = threading.Thread(target=sys.exit, args=(3,))\n"
             "t.start()\n"
             "t.join()\n"
             "done = threading.Event()\n"
             "def bare():\n"
             "    try:\n"
             "        sys.exit(4)\n"
             "    finally:\n"
             "        done.set()\n"
             "_thread.start_new_thread(bare, ())\n"
             "assert done.wait(10)\n").

%% @doc sys.exit() in an asyncio task is an error value of the call that ran the loop.
sys_exit_in_asyncio_task(Config) ->
    in_peer(Config,
            fun(Peer, _File) ->
                    Code = <<"import asyncio, sys\n"
                             "async def task():\n"
                             "    sys.exit(5)\n"
                             "async def main():\n"
                             "    await asyncio.ensure_future(task())\n"
                             "loop = asyncio.SelectorEventLoop()\n"
                             "try:\n"
                             "    loop.run_until_complete(main())\n"
                             "finally:\n"
                             "    loop.close()\n">>,
                    ?assertMatch({error, {'SystemExit', <<"5">>, _}},
                                 peer:call(Peer, py, exec, [Code]))
            end).

%% @doc In a fresh VM the kernel layer is on standby: no thread is filtered, importing numpy
%% (a C extension) changes nothing. Loading a library by name through ctypes arms it, and
%% from then on every worker thread is filtered by its next audited operation.
kernel_layer_arms_itself(Config) ->
    in_peer(Config,
            fun(Peer, _File) ->
                    Status = <<"__import__('_erlang_sandbox').status()">>,
                    {ok, #{<<"kernel_layer">> := Layer}} = peer:call(Peer, py, eval, [Status]),
                    case Layer of
                        <<"unavailable">> ->
                            {skip, "no seccomp on this kernel"};
                        <<"standby">> ->
                            Filtered = <<"__import__('_erlang_sandbox').thread_filtered()">>,
                            ?assertEqual({ok, false}, peer:call(Peer, py, eval, [Filtered])),
                            ok = peer:call(Peer, py, exec, [<<"import numpy">>]),
                            ?assertMatch({ok, #{<<"kernel_layer">> := <<"standby">>}},
                                         peer:call(Peer, py, eval, [Status])),
                            ok = peer:call(Peer, py, exec,
                                           [<<"import ctypes\nctypes.CDLL('libc.so.6')">>]),
                            ?assertMatch({ok, #{<<"kernel_layer">> := <<"armed">>}},
                                         peer:call(Peer, py, eval, [Status])),
                            Check = <<"import os, _erlang_sandbox\n"
                                      "open(os.devnull).close()\n"
                                      "assert _erlang_sandbox.thread_filtered()\n">>,
                            Results = [peer:call(Peer, py, exec, [Check])
                                       || _ <- lists:seq(1, 32)],
                            ?assertEqual([ok], lists:usort(Results))
                    end
            end).

%% @doc libc's execv and vfork called through ctypes pointers computed from libc's symbol
%% table (no dlsym, no audit event) fail with EPERM: the seccomp filter. Were they let
%% through, execv would replace the VM with `touch' and vfork would share its stack.
raw_ctypes_exec_and_vfork(Config) ->
    harmless(Config,
             "import ctypes, errno, sys\n"
             "sys.path.insert(0, PYTHON_TESTS)\n"
             "from test_sandbox_support import raw_libc_function\n"
             "import _erlang_sandbox\n"
             "ctypes.CDLL('libc.so.6')  # loading a library by name arms the kernel layer\n"
             "assert _erlang_sandbox.thread_filtered()\n"
             ?RAW_EXECV_AND_VFORK_FAIL).

%% @doc A foreign call through ctypes, to an address computed without loading any library
%% by name (so nothing armed the kernel layer before), runs filtered: the call itself arms
%% it, on the calling thread first. execv and vfork fail with EPERM.
foreign_call_without_a_library_is_filtered(Config) ->
    harmless(Config,
             "import ctypes, errno, sys\n"
             "sys.path.insert(0, PYTHON_TESTS)\n"
             "from test_sandbox_support import raw_libc_function\n"
             "import _erlang_sandbox\n"
             "assert _erlang_sandbox.status()['kernel_layer'] == 'standby', _erlang_sandbox.status()\n"
             ?RAW_EXECV_AND_VFORK_FAIL
             "assert _erlang_sandbox.thread_filtered()\n").

%% @doc The VM's credentials and root: every os function that changes them is refused with
%% the message of its kind (as root, os.setuid(65534) took the VM down before).
credentials_are_refused(Config) ->
    harmless(Config,
             "import os\n"
             "uid, gid = os.getuid(), os.getgid()\n"
             "calls = [('setuid', (65534,)), ('setgid', (65534,)), ('seteuid', (65534,)),\n"
             "         ('setegid', (65534,)), ('setreuid', (65534, 65534)),\n"
             "         ('setregid', (65534, 65534)), ('setresuid', (65534, 65534, 65534)),\n"
             "         ('setresgid', (65534, 65534, 65534)), ('setgroups', ([],)),\n"
             "         ('initgroups', ('nobody', 65534)), ('chroot', ('/tmp',))]\n"
             "for name, args in calls:\n"
             "    try:\n"
             "        getattr(os, name)(*args)\n"
             "    except RuntimeError as e:\n"
             "        first, second = str(e).split('\\n')[:2]\n"
             "        assert first == 'os.%s is blocked in Erlang VM context.' % name, first\n"
             "        assert second.startswith('Credentials and the root directory'), second\n"
             "    else:\n"
             "        raise AssertionError(name + ' was allowed')\n"
             "assert (os.getuid(), os.getgid()) == (uid, gid)\n").

%% @doc The VM's memory cannot be opened for writing through any alias of /proc/self/mem:
%% /proc/<pid>/mem, /proc/thread-self/mem, a task's, a symlink, /proc/self/fd/N of a
%% read-only descriptor, a path relative to a dir_fd. Reading is allowed.
own_memory_is_not_writable(Config) ->
    harmless(Config,
             "import os, tempfile, threading\n"
             "tid = threading.get_native_id()\n"
             "link = os.path.join(tempfile.mkdtemp(), 'alias')\n"
             "os.symlink('/proc/self/mem', link)\n"
             "ro = open('/proc/self/mem', 'rb')\n"
             "paths = ['/proc/self/mem', '/proc/%d/mem' % os.getpid(), '/proc/thread-self/mem',\n"
             "         '/proc/self/task/%d/mem' % tid, '/proc/%d/mem' % tid, link,\n"
             "         '/proc/self/fd/%d' % ro.fileno(), '/proc/self/../self/mem']\n"
             "def refused(opener):\n"
             "    try:\n"
             "        opener()\n"
             "    except RuntimeError as e:\n"
             "        assert str(e).startswith('writing /proc/self/mem is blocked'), e\n"
             "        return True\n"
             "    return False\n"
             "for p in paths:\n"
             "    assert refused(lambda: open(p, 'r+b')), p\n"
             "    assert refused(lambda: open(p, 'wb', buffering=0)), p\n"
             "    assert refused(lambda: os.open(p, os.O_WRONLY)), p\n"
             "    assert refused(lambda: os.open(p, os.O_RDWR)), p\n"
             "proc = os.open('/proc/self', os.O_RDONLY)\n"
             "assert refused(lambda: os.open('mem', os.O_RDWR, dir_fd=proc))\n"
             "assert refused(lambda: open('mem', 'r+b', opener=lambda p, f: os.open(p, f, dir_fd=proc)))\n"
             "os.close(proc)\n"
             "ro.close()\n"
             "with open('/proc/self/mem', 'rb') as f:\n"
             "    assert f.readable()\n").

%% @doc os.chdir and os.umask change Python's own directory and mask: every Python thread
%% sees the change, the VM's threads do not (the VM's cwd, and the mode of files it creates).
chdir_and_umask_are_pythons_own(Config) ->
    in_peer(Config,
            fun(Peer, _File) ->
                    {ok, VmCwd} = peer:call(Peer, file, get_cwd, []),
                    ok = peer:call(Peer, py, exec,
                                   [<<"import os, threading\n"
                                      "os.chdir('/tmp')\n"
                                      "old_mask = os.umask(0o077)\n"
                                      "seen = []\n"
                                      "t = threading.Thread(target=lambda: seen.append(os.getcwd()))\n"
                                      "t.start(); t.join()\n">>]),
                    ?assertEqual({ok, VmCwd}, peer:call(Peer, file, get_cwd, [])),
                    ?assertEqual({ok, [<<"/tmp">>, <<"/tmp">>, <<"/tmp">>, <<"/tmp">>]},
                                 peer:call(Peer, py, eval,
                                           [<<"seen + [os.getcwd() for _ in range(3)]">>])),
                    Probe = filename:join(?config(priv_dir, Config),
                                          "umask-" ++ integer_to_list(erlang:unique_integer([positive]))),
                    ok = peer:call(Peer, file, write_file, [Probe, <<>>]),
                    {ok, Info} = file:read_file_info(Probe),
                    ?assertNotEqual(0, element(8, Info) band 8#044),
                    ?assertEqual({ok, <<"/tmp\n">>},
                                 peer:call(Peer, py, eval,
                                           [<<"str(__import__('erlang').run_shell('pwd'))">>]))
            end).

%% @doc A recursion limit raised far past what a thread's stack holds cannot turn deep data
%% into a SIGSEGV: repr, json and pickle of lists nested past the limit (twice the capped
%% limit, a million at most) end in RecursionError, on a worker, on a thread Python started,
%% and after threading.stack_size shrank the stacks. Slow under AddressSanitizer: a long
%% timeout.
recursion_limit_cannot_overflow_a_stack(Config) ->
    Code = "import sys, json, pickle, threading, warnings\n"
           "warnings.simplefilter('ignore')\n"
           "sys.setrecursionlimit(10**8)\n"
           "def nest(n):\n"
           "    x = []\n"
           "    for _ in range(n):\n"
           "        x = [x]\n"
           "    return x\n"
           "deep = nest(min(2 * sys.getrecursionlimit(), 10**6))\n"
           "def check(results):\n"
           "    for f in (repr, json.dumps, pickle.dumps):\n"
           "        try:\n"
           "            f(deep)\n"
           "            results.append('no RecursionError from ' + f.__name__)\n"
           "        except RecursionError:\n"
           "            pass\n"
           "def recurse(n):\n"
           "    return 0 if n == 0 else 1 + recurse(n - 1)\n"
           "problems = []\n"
           "check(problems)\n"
           "t = threading.Thread(target=check, args=(problems,))\n"
           "t.start(); t.join()\n"
           "threading.stack_size(4 * 1024 * 1024)\n"
           "sys.setrecursionlimit(10**8)\n"
           "def small_stack():\n"
           "    check(problems)\n"
           "    try:\n"
           "        recurse(300000)\n"
           "    except RecursionError:\n"
           "        pass\n"
           "t = threading.Thread(target=small_stack)\n"
           "t.start(); t.join()\n"
           "assert problems == [], problems\n",
    in_peer(Config,
            fun(Peer, File) ->
                    ?assertEqual(ok, peer:call(Peer, py, exec, [python(Code, File), 600000],
                                               660000))
            end).

%% @doc libc's execv and vfork reached through cffi (no audit event) fail with EPERM: the
%% seccomp filter of the Python threads. Were they let through, execv would replace the VM
%% with `touch' and vfork would share its stack: hence a peer.
cffi_exec_and_vfork(Config) ->
    case py:eval(<<"__import__('importlib.util').util.find_spec('cffi') is not None">>) of
        {ok, true} ->
            harmless(Config,
                     "import cffi, errno, _erlang_sandbox\n"
                     "ffi = cffi.FFI()  # imports _cffi_backend, which arms the kernel layer\n"
                     "assert _erlang_sandbox.thread_filtered()\n"
                     "ffi.cdef('int execv(const char *, char *const []); int vfork(void);"
                     " void _exit(int);')\n"
                     "lib = ffi.dlopen(None)\n"
                     "args = [ffi.new('char[]', a.encode()) for a in (TOUCH, TOUCH_FILE)]\n"
                     "argv = ffi.new('char *[]', args + [ffi.NULL])\n"
                     "assert lib.execv(TOUCH.encode(), argv) == -1\n"
                     "assert ffi.errno == errno.EPERM\n"
                     "pid = lib.vfork()\n"
                     "if pid == 0:\n"
                     "    lib.execv(TOUCH.encode(), argv)\n"
                     "    lib._exit(127)\n"
                     "assert pid == -1 and ffi.errno == errno.EPERM, pid\n");
        {ok, false} ->
            {skip, "cffi is not installed in the interpreter's environment"}
    end.

%% @doc In a fresh VM, every tampering attempt at once (globals, sys.modules, reload,
%% sys.audit silenced, a Python audit hook) leaves fork, exec and _exit refused.
sandbox_survives_tampering_in_a_fresh_vm(Config) ->
    harmless(Config,
             "import importlib, os, sys\n"
             "from _erlang_impl import _sandbox\n"
             "for name in list(vars(_sandbox)):\n"
             "    if not name.startswith('__'):\n"
             "        setattr(_sandbox, name, None)\n"
             "for name in ('os', 'posix', 'subprocess', '_posixsubprocess', '_erlang_sandbox'):\n"
             "    sys.modules.pop(name, None)\n"
             "sys.addaudithook(lambda event, args: None)\n"
             "sys.audit = lambda *args: None\n"
             "os = importlib.import_module('os')\n"
             "import posix, subprocess\n"
             "subprocess = importlib.reload(subprocess)\n"
             "refused = []\n"
             "for attempt in (lambda: posix.fork(), lambda: os.execv(TOUCH, [TOUCH, TOUCH_FILE]),\n"
             "                lambda: subprocess.run([TOUCH, TOUCH_FILE]),\n"
             "                lambda: os.system(TOUCH + ' ' + TOUCH_FILE),\n"
             "                lambda: posix._exit(0), lambda: os.abort()):\n"
             "    try:\n"
             "        attempt()\n"
             "    except RuntimeError as error:\n"
             "        refused.append(str(error).split(' ')[0])\n"
             "assert refused == ['os.fork', 'os.execv', refused[2], 'os.system', 'os._exit',\n"
             "                   'os.abort'], refused\n"
             "assert refused[2] in ('_posixsubprocess.fork_exec', 'os.posix_spawn'), refused\n"
             "assert importlib.import_module('_erlang_sandbox').is_sandboxed()\n").

%% @doc After application:stop/1 and a new start, the sandbox is still installed and still
%% refuses.
sandbox_survives_application_restart(Config) ->
    in_peer(Config,
            fun(Peer, File) ->
                    ok = peer:call(Peer, application, stop, [erlang_python]),
                    {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python]),
                    ?assertEqual({ok, true},
                                 peer:call(Peer, py, eval,
                                           [<<"__import__('_erlang_sandbox').is_sandboxed()">>])),
                    Code = python("import os\nos.system(TOUCH + ' ' + TOUCH_FILE)", File),
                    {error, {'RuntimeError', Message, _}} = peer:call(Peer, py, exec, [Code]),
                    ?assertEqual(spawn_message("os.system"), Message)
            end).

%%% Helpers

spawn_message(Op) ->
    unicode:characters_to_binary([Op, ?BLOCKED, ?SPAWN_LINES]).

touch() ->
    case filelib:is_file("/usr/bin/touch") of
        true -> "/usr/bin/touch";
        false -> "/bin/touch"
    end.

touch_file(Config) ->
    Dir = ?config(priv_dir, Config),
    Name = io_lib:format("touched-~b", [erlang:unique_integer([positive])]),
    unicode:characters_to_binary(filename:join(Dir, Name)).

%% Python code runs with TOUCH and TOUCH_FILE defined; it is expected to be refused with a
%% RuntimeError (or SignalBlockedError) whose first line names Op.
refused(Config, Code, Op) ->
    refused(Config, Code, Op, 0).

refused(Config, Code, Op, Wait) ->
    in_peer(Config,
            fun(Peer, File) ->
                    Result = peer:call(Peer, py, exec, [python(Code, File)]),
                    timer:sleep(Wait),
                    FirstLine = unicode:characters_to_binary([Op, ?BLOCKED]),
                    case Result of
                        {error, {_Type, Message, _}} ->
                            ?assertMatch([FirstLine, _, _],
                                         binary:split(Message, <<"\n">>, [global]));
                        Other ->
                            ct:fail({not_refused, Op, Other})
                    end
            end).

%% Python code that must run to its end (its own asserts check what it did).
harmless(Config, Code) ->
    in_peer(Config,
            fun(Peer, File) ->
                    ?assertEqual(ok, peer:call(Peer, py, exec, [python(Code, File)]))
            end).

python(Code, File) ->
    unicode:characters_to_binary(
      ["TOUCH = '", touch(), "'\nTOUCH_FILE = '", File, "'\nPYTHON_TESTS = '",
       python_tests(), "'\n", Code, "\n"]).

%% python_tests/ of the checkout: up from this suite's source, which rebar3 may have copied
%% under _build/test/lib/erlang_python/test.
python_tests() ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    python_tests(filename:dirname(filename:absname(Source))).

python_tests("/") ->
    ct:fail("no python_tests/ above this suite's source");
python_tests(Dir) ->
    Candidate = filename:join(Dir, "python_tests"),
    case filelib:is_file(filename:join(Candidate, "test_sandbox_support.py")) of
        true -> Candidate;
        false -> python_tests(filename:dirname(Dir))
    end.

%% Runs Check(Peer, File) in a fresh peer VM with erlang_python started, then checks that
%% the peer still answers, created no child and no FILE, and kept its signal dispositions.
in_peer(Config, Check) ->
    File = touch_file(Config),
    {Peer, OsPid} = start_peer(),
    try
        Signals = signal_state(OsPid),
        Children = children(OsPid),
        try
            Check(Peer, File)
        catch
            exit:{noproc, _} = Reason ->
                ct:fail({peer_vm_died, Reason})
        end,
        ?assertEqual({ok, 2}, peer:call(Peer, py, eval, [<<"1 + 1">>])),
        ?assertEqual(pong, peer:call(Peer, erlang, apply, [fun() -> pong end, []])),
        ?assertEqual(Signals, signal_state(OsPid)),
        ?assertEqual([], children(OsPid) -- Children),
        ?assertNot(filelib:is_file(File))
    after
        catch peer:stop(Peer)
    end.

start_peer() ->
    Paths = [Dir || Dir <- code:get_path(), string:find(Dir, "_build") =/= nomatch],
    Erl = os:find_executable("erl"),
    {ok, Peer, _} = peer:start_link(#{connection => standard_io,
                                      exec => {os:find_executable("setsid"), [Erl]},
                                      args => ["-pa" | Paths]}),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python]),
    {Peer, peer:call(Peer, os, getpid, [])}.

%% The SigCgt and SigIgn lines of a process's status: its caught and ignored signals.
signal_state(OsPid) ->
    {ok, Status} = file:read_file(["/proc/", OsPid, "/status"]),
    [Line || Line <- binary:split(Status, <<"\n">>, [global]),
             lists:member(binary:part(Line, 0, min(7, byte_size(Line))),
                          [<<"SigCgt:">>, <<"SigIgn:">>])].

children(OsPid) ->
    lists:usort(
      lists:append(
        [string:lexemes(binary_to_list(Text), " \n")
         || Path <- filelib:wildcard("/proc/" ++ OsPid ++ "/task/*/children"),
            {ok, Text} <- [file:read_file(Path)]])).
