%% Lifecycle: the interpreter lives as long as the OS process; the application
%% can be stopped and started again; the VM exits cleanly with init:stop(),
%% even while Python is busy.
-module(py_lifecycle_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [stop_and_start_again, interpreter_state_survives_restart,
     registrations_end_with_application, init_stop_exits_cleanly,
     init_stop_exits_while_python_is_busy, bad_python_setting_fails_start].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc application:stop then ensure_all_started gives a working API again.
stop_and_start_again(_Config) ->
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)),
    ok = application:stop(erlang_python),
    {ok, _} = application:ensure_all_started(erlang_python),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ok = application:stop(erlang_python),
    {ok, _} = application:ensure_all_started(erlang_python),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)).

%% @doc Policy: one interpreter per OS process, so __main__ and imports survive a restart.
interpreter_state_survives_restart(_Config) ->
    ok = py:exec(<<"SURVIVOR = 42">>),
    ok = application:stop(erlang_python),
    {ok, _} = application:ensure_all_started(erlang_python),
    ?assertEqual({ok, 42}, py:eval(<<"SURVIVOR">>)).

%% @doc Registered functions belong to the application and end with it.
registrations_end_with_application(_Config) ->
    ok = py:register_function(lifecycle_probe, fun([]) -> pong end),
    ?assertEqual({ok, pong}, py:eval(<<"__import__('erlang').lifecycle_probe()">>)),
    ok = application:stop(erlang_python),
    {ok, _} = application:ensure_all_started(erlang_python),
    %% The class name is an atom if any loaded code made that atom, else a binary.
    {error, {Type, _, _}} = py:eval(<<"__import__('erlang').lifecycle_probe()">>),
    ?assert(lists:member(Type, [<<"UnknownFunction">>, binary_to_atom(<<"UnknownFunction">>)])).

%% @doc A VM running the application exits with status 0 on init:stop(), promptly.
init_stop_exits_cleanly(_Config) ->
    {Status, Elapsed} = run_vm("{ok, _} = application:ensure_all_started(erlang_python), "
                               "{ok, 2} = py:eval(<<\"1 + 1\">>), init:stop()."),
    ct:log("exit ~p after ~p ms", [Status, Elapsed]),
    ?assertEqual(0, Status),
    ?assert(Elapsed < 15000).

%% @doc Even with Python blocked in a long call, init:stop() ends the VM.
init_stop_exits_while_python_is_busy(_Config) ->
    {Status, _} = run_vm("{ok, _} = application:ensure_all_started(erlang_python), "
                         "spawn(fun() -> py:eval(<<\"__import__('time').sleep(100)\">>, #{}, infinity) end), "
                         "spawn(fun() -> py:eval(<<\"while True: pass\">>, #{}, infinity) end), "
                         "timer:sleep(300), init:stop()."),
    ?assertEqual(0, Status).

%% @doc A python setting that names no file fails the start with a clear reason.
bad_python_setting_fails_start(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{start_app => false,
                                          env => [{python, "/nonexistent/bin/python"}]}),
    try
        Result = py_test_peer:call(Peer, application, start, [erlang_python]),
        ct:log("start result: ~p", [Result]),
        ?assertMatch({error, {{python_not_found, "/nonexistent/bin/python"}, _}}, Result)
    after
        py_test_peer:stop(Peer)
    end.

%% ---------------------------------------------------------------------------

%% Runs Eval in a fresh `erl' with our code path; returns its exit status.
run_vm(Eval) ->
    Paths = lists:append([["-pa", Dir] || Dir <- code:get_path(),
                                          string:find(Dir, "_build") =/= nomatch]),
    Erl = os:find_executable("erl"),
    Start = erlang:monotonic_time(millisecond),
    Port = open_port({spawn_executable, "/usr/bin/timeout"},
                     [exit_status, {args, ["60", Erl, "-noshell" | Paths] ++ ["-eval", Eval]}]),
    Status = collect(Port),
    {Status, erlang:monotonic_time(millisecond) - Start}.

collect(Port) ->
    receive
        {Port, {data, Data}} -> ct:log("~ts", [Data]), collect(Port);
        {Port, {exit_status, Status}} -> Status
    end.
