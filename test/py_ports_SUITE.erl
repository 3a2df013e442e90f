%% The port helpers from Erlang: registered at start, the spec's examples ("Recommended
%% Alternatives"), workers owned by a supervisor and killed with their owner, their
%% application and their VM, the subprocess layer switched on by the application env, and
%% defined errors for bad input. The Python-side behaviour is python_tests/test_ports.py.
-module(py_ports_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [builtins_registered_at_start, spec_run_command, spec_register_run_shell,
     spec_long_running_worker_via_port, spec_send_to_supervisor, worker_is_supervised,
     worker_dies_with_its_owner, detached_worker_outlives_its_caller,
     port_programs_are_reused, nothing_left_in_a_trapping_caller,
     bad_input_to_the_erlang_functions,
     subprocess_layer_off_by_default, subprocess_layer_on_with_ports,
     subprocess_env_is_checked, application_stop_kills_workers, vm_death_kills_commands].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%%% Registration and the spec's examples

%% @doc run_shell, run and start_worker are registered when the application starts.
builtins_registered_at_start(_Config) ->
    [?assertMatch({ok, {py_port_helpers, _}}, py_function_registry:lookup(Name))
     || Name <- [<<"run_shell">>, <<"run">>, <<"start_worker">>]],
    ?assertEqual({ok, <<"hi\n">>},
                 py:eval(<<"str(__import__('erlang').run_shell('echo hi'))">>)).

%% @doc The spec's run_command/collect_output, as written there, works beside the app.
spec_run_command(_Config) ->
    {0, Output} = run_command("ls -la"),
    ?assertNotEqual(nomatch, binary:match(Output, <<"..">>)).

run_command(Cmd) ->
    Port = open_port({spawn, Cmd}, [exit_status, binary, stderr_to_stdout]),
    collect_output(Port, []).

collect_output(Port, Acc) ->
    receive
        {Port, {data, Data}} ->
            collect_output(Port, [Data | Acc]);
        {Port, {exit_status, Status}} ->
            {Status, iolist_to_binary(lists:reverse(Acc))}
    after 30000 ->
        port_close(Port),
        {error, timeout}
    end.

%% @doc py:register_function(run_shell, ...) as in the spec replaces the built-in for
%% Python's `from erlang import run_shell'; putting the built-in back restores it.
spec_register_run_shell(_Config) ->
    ok = py:register_function(run_shell, fun([Cmd]) ->
        Port = open_port({spawn, binary_to_list(Cmd)}, [exit_status, binary, stderr_to_stdout]),
        collect_output(Port, [])
    end),
    try
        ok = py:exec(<<"from erlang import run_shell\nresult = run_shell('echo spec')\n">>),
        ?assertEqual({ok, {0, <<"spec\n">>}}, py:eval(<<"result">>))
    after
        ok = py:register_function(run_shell, py_port_helpers, run_shell)
    end,
    ?assertEqual({ok, 0}, py:eval(<<"__import__('erlang').run_shell('true').returncode">>)).

%% @doc The spec's long-running worker: a port opened by a registered Erlang function,
%% returned to Python and back to Erlang unchanged, owned by the py:call caller.
spec_long_running_worker_via_port(_Config) ->
    ok = py:register_function(start_worker_via_erlang, fun([]) ->
        open_port({spawn, "cat"}, [binary, {line, 1024}, use_stdio])
    end),
    ok = py:exec(<<"import erlang\n"
                   "def start_worker_via_erlang():\n"
                   "    return erlang.call('start_worker_via_erlang')\n">>),
    {ok, Port} = py:call('__main__', start_worker_via_erlang, []),
    ?assert(is_port(Port)),
    ?assertEqual({connected, self()}, erlang:port_info(Port, connected)),
    true = port_command(Port, <<"hello\n">>),
    receive {Port, {data, {eol, Line}}} -> ?assertEqual(<<"hello">>, Line)
    after 5000 -> ct:fail(no_echo)
    end,
    port_close(Port),
    ok = py:unregister_function(start_worker_via_erlang).

%% @doc The spec's erlang.send to a supervisor that starts a worker: the message arrives as
%% written, the supervisor runs the command through a port and answers.
spec_send_to_supervisor(_Config) ->
    Test = self(),
    Supervisor = spawn_link(fun() ->
        receive
            {spawn_worker, Args} ->
                Port = open_port({spawn_executable, "/bin/echo"},
                                 [{args, Args}, exit_status, binary]),
                Test ! {worker_output, collect_output(Port, [])}
        after 10000 ->
            Test ! {worker_output, timeout}
        end
    end),
    ok = py:exec(<<"import erlang\n"
                   "def ask(supervisor_pid, worker_args):\n"
                   "    erlang.send(supervisor_pid, (erlang.Atom('spawn_worker'), worker_args))\n">>),
    {ok, none} = py:call('__main__', ask, [Supervisor, [<<"from">>, <<"python">>]]),
    receive {worker_output, Output} -> ?assertEqual({0, <<"from python\n">>}, Output)
    after 10000 -> ct:fail(no_worker_output)
    end.

%%% Workers

%% @doc A worker is a child of py_port_worker_sup, owning its port; closing it ends both.
worker_is_supervised(_Config) ->
    ok = py:exec(<<"import erlang\nsupervised = erlang.start_worker(['cat'])\n">>),
    {ok, Worker} = py:eval(<<"supervised._worker">>),
    ?assert(lists:keymember(Worker, 2, supervisor:which_children(py_port_worker_sup))),
    {links, Links} = process_info(Worker, links),
    ?assertMatch([_], [P || P <- Links, is_port(P)]),
    {ok, none} = py:eval(<<"supervised.close()">>),
    ?assertNot(is_process_alive(Worker)).

%% @doc When the Erlang process whose py:call started a worker dies, the OS process dies.
worker_dies_with_its_owner(_Config) ->
    Marker = <<"61.803">>,
    Test = self(),
    Owner = spawn(fun() ->
        ok = py:exec(<<"import erlang\nowned = erlang.start_worker(['sleep', '", Marker/binary, "'])\n">>),
        {ok, Pid} = py:eval(<<"owned.pid">>),
        Test ! {os_pid, Pid},
        receive stop -> ok end
    end),
    OsPid = receive {os_pid, P} -> P after 10000 -> ct:fail(no_worker) end,
    ?assertEqual([OsPid], processes_with(Marker)),
    exit(Owner, kill),
    ?assert(gone(Marker)).

%% @doc detached=True: the worker outlives the py:call's process, until it is closed.
detached_worker_outlives_its_caller(_Config) ->
    Marker = <<"62.831">>,
    Caller = spawn(fun() ->
        ok = py:exec(<<"import erlang\ndetached = erlang.start_worker(['sleep', '", Marker/binary,
                            "'], detached=True)\n">>)
    end),
    MonitorRef = monitor(process, Caller),
    receive {'DOWN', MonitorRef, _, _, _} -> ok end,
    timer:sleep(200),
    ?assertMatch([_], processes_with(Marker)),
    {ok, none} = py:eval(<<"detached.close()">>),
    ?assertEqual([], processes_with(Marker)).

%% @doc Port programs are handed back and reused: 50 runs leave no more of this VM's port
%% programs than the pool keeps.
port_programs_are_reused(_Config) ->
    Before = length(own_port_programs()),
    {ok, 50} = py:eval(<<"sum(1 for _ in range(50) if __import__('erlang').run(['true']).returncode == 0)">>),
    ?assert(py_test_wait:until(fun() -> length(own_port_programs()) =< max(Before, 4) end),
            {Before, own_port_programs()}).

%% This VM's py_exec_port processes: children of its erl_child_setup, the VM's child.
own_port_programs() ->
    Vm = list_to_integer(os:getpid()),
    {ok, Entries} = file:list_dir("/proc"),
    Parents = maps:from_list([{list_to_integer(E), parent(list_to_integer(E))}
                              || E <- Entries, is_pid_dir(E)]),
    Setups = [Pid || {Pid, Parent} <- maps:to_list(Parents), Parent =:= Vm],
    [Pid || Pid <- processes_with(<<"py_exec_port">>),
            lists:member(maps:get(Pid, Parents, 0), Setups)].

parent(Pid) ->
    case file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/stat") of
        {ok, Stat} ->
            [_, After] = string:split(Stat, <<")">>, trailing),
            [_State, PPid | _] = string:lexemes(After, " "),
            binary_to_integer(PPid);
        _ ->
            0
    end.

%% @doc A caller that traps exits (a gen_server, say) is left no message by a run, a timeout,
%% an output limit or a start failure: the callbacks run in its process.
nothing_left_in_a_trapping_caller(_Config) ->
    Test = self(),
    Caller = spawn_link(fun() ->
        process_flag(trap_exit, true),
        Results = [py:eval(Code) || Code <- [
            <<"__import__('erlang').run(['true']).returncode">>,
            <<"__import__('erlang').run_shell('echo hi', timeout=5).returncode">>,
            <<"__import__('erlang').run_shell('sleep 5', timeout=0.1)">>,
            <<"__import__('erlang').run_shell('yes', max_output=10)">>,
            <<"__import__('erlang').run(['no-such-program-x'])">>]],
        timer:sleep(200),
        Test ! {done, Results, process_info(self(), messages)}
    end),
    receive
        {done, Results, {messages, Left}} ->
            ?assertMatch([{ok, 0}, {ok, 0}, {error, {<<"CommandTimeout">>, _, _}},
                          {error, {<<"OutputLimitExceeded">>, _, _}},
                          {error, {'FileNotFoundError', _, _}}], Results),
            ?assertEqual([], Left)
    after 30000 ->
        ct:fail(timeout)
    end,
    unlink(Caller).

%% @doc The registered functions answer bad input from erlang.call with a tagged badarg.
bad_input_to_the_erlang_functions(_Config) ->
    Bad = [{run_shell, [42]}, {run_shell, [<<"true">>, #{<<"timeout">> => -1}]},
           {run_shell, [<<"true">>, #{<<"no_such_option">> => 1}]},
           {run_shell, [<<"true">>, not_a_map]}, {run_shell, []},
           {run, [<<"true">>]}, {run, [[<<"true">>, 1]]}, {run, [[]]},
           {run, [[<<"tr", 0, "ue">>]]}, {run, [[<<"true">>], #{<<"env">> => #{<<"A=">> => <<>>}}]},
           {start_worker, [42]}, {start_worker, [<<"cat">>, #{<<"stdin">> => <<"file">>}]},
           {worker, [self()]}, {worker, [self(), <<"read">>, <<"stdout">>, 0, none]},
           {worker, [not_a_pid, <<"poll">>]}],
    [?assertMatch({'$erlang_python', error, {badarg, _}}, py_port_helpers:F(Args), {F, Args})
     || {F, Args} <- Bad],
    %% A worker that is gone answers closed.
    Dead = spawn(fun() -> ok end),
    timer:sleep(50),
    ?assertEqual({'$erlang_python', error, closed},
                 py_port_helpers:worker([Dead, <<"poll">>])).

%%% The subprocess layer

%% @doc Without the env, subprocess is refused with the spec's message, and the layer is off.
subprocess_layer_off_by_default(_Config) ->
    {error, {'RuntimeError', Message, _}} = py:exec(<<"import subprocess\nsubprocess.run(['ls'])">>),
    ?assertEqual(<<"subprocess.Popen is blocked in Erlang VM context.\n"
                   "fork()/exec() would corrupt the Erlang runtime.\n"
                   "Use Erlang ports (open_port/2) for subprocess management.">>, Message),
    ?assertEqual({ok, <<"blocked">>},
                 py:eval(<<"__import__('_erlang_impl.subprocess').subprocess.mode()">>)).

%% @doc With {subprocess, ports}, third-party code that shells out works, exit codes are the
%% program's own, and what the sandbox refuses outside subprocess is still refused.
subprocess_layer_on_with_ports(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{env => [{subprocess, ports}]}),
    try
        Eval = fun(Code) -> py_test_peer:call(Peer, py, eval, [Code]) end,
        ?assertEqual({ok, <<"ports">>},
                     Eval(<<"__import__('_erlang_impl.subprocess').subprocess.mode()">>)),
        ?assertEqual({ok, 3}, Eval(<<"__import__('subprocess').run(['sh', '-c', 'exit 3']).returncode">>)),
        {ok, Lib} = Eval(<<"__import__('ctypes.util').util.find_library('c')">>),
        ?assertMatch(<<"libc.so", _/binary>>, Lib),
        {ok, {Bits, _}} = Eval(<<"__import__('platform').architecture()">>),
        ?assertMatch(<<_:2/binary, "bit">>, Bits),
        ?assertEqual({ok, <<"x\n">>},
                     Eval(<<"__import__('subprocess').check_output('echo x', shell=True, text=True)">>)),
        {error, {'RuntimeError', Message, _}} = Eval(<<"__import__('os').system('true')">>),
        ?assertMatch(<<"os.system is blocked in Erlang VM context.", _/binary>>, Message),
        {error, {'RuntimeError', _, _}} = Eval(<<"__import__('os').fork()">>)
    after
        py_test_peer:stop(Peer)
    end.

%% @doc A bad value of the env stops the application from starting, with a clear reason.
subprocess_env_is_checked(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{subprocess, yes}]}),
    try
        ?assertMatch({error, {erlang_python, {{bad_env, subprocess, yes}, _}}},
                     py_test_peer:call(Peer, application, ensure_all_started, [erlang_python]))
    after
        py_test_peer:stop(Peer)
    end.

%%% Nothing left behind

%% @doc Stopping the application kills every worker's OS process, detached ones included.
application_stop_kills_workers(_Config) ->
    Marker = <<"63.245">>,
    {ok, Peer, _} = py_test_peer:start(#{}),
    try
        ok = py_test_peer:call(Peer, py, exec, [<<"import erlang\nws = [erlang.start_worker("
                                                       "['sleep', '", Marker/binary, "'], detached=True) "
                                                       "for _ in range(3)]\n">>]),
        ?assertMatch([_, _, _], processes_with(Marker)),
        ok = py_test_peer:call(Peer, application, stop, [erlang_python]),
        ?assert(gone(Marker))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc A VM killed outright (SIGKILL) takes its commands with it: each port program sees
%% its pipe close and kills its command's tree.
vm_death_kills_commands(_Config) ->
    Marker = <<"64.187">>,
    {ok, Peer, _} = py_test_peer:start(#{}),
    try
        OsPid = py_test_peer:os_pid(Peer),
        ok = py_test_peer:call(Peer, py, exec, [<<"import erlang\nw = erlang.start_worker("
                                                       "'sleep ", Marker/binary, " & sleep ", Marker/binary,
                                                       "', detached=True)\n">>]),
        py_test_wait:until(fun() -> length(processes_with(Marker)) >= 2 end),
        _ = os:cmd("kill -9 " ++ OsPid),
        ?assert(gone(Marker))
    after
        py_test_peer:stop(Peer)
    end.

%%% Helpers

%% Pids of the live (not zombie) processes whose command line contains Marker.
processes_with(Marker) ->
    {ok, Entries} = file:list_dir("/proc"),
    lists:sort([list_to_integer(E) || E <- Entries, is_pid_dir(E), has_marker(E, Marker)]).

is_pid_dir(Entry) ->
    lists:all(fun(C) -> C >= $0 andalso C =< $9 end, Entry).

has_marker(Pid, Marker) ->
    case {file:read_file("/proc/" ++ Pid ++ "/cmdline"), file:read_file("/proc/" ++ Pid ++ "/stat")} of
        {{ok, Cmdline}, {ok, Stat}} ->
            [_, After] = string:split(Stat, <<")">>, trailing),
            State = hd(string:lexemes(After, " ")),
            State =/= <<"Z">> andalso binary:match(Cmdline, Marker) =/= nomatch;
        _ ->
            false
    end.

%% True once no process has Marker (killing a closed port's command is asynchronous).
gone(Marker) ->
    py_test_wait:until(fun() -> processes_with(Marker) =:= [] end).

