%% Timeouts interrupt: a timed-out call gets {error, timeout} at its deadline,
%% the Python code running for it is stopped, and callers that die mid-call
%% cost nothing: no worker thread is lost.
-module(py_timeout_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [infinite_loop_times_out_and_is_interrupted, interrupted_code_runs_finally,
     except_exception_does_not_swallow_cancel, queued_call_times_out_without_running,
     killed_callers_leave_system_healthy, late_result_never_reaches_mailbox,
     numpy_from_venv].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc while True: pass with a 100 ms timeout returns timeout at its deadline (not before;
%% well within a second after, however busy the machine); the next call works, and the loop
%% no longer runs.
infinite_loop_times_out_and_is_interrupted(_Config) ->
    Start = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, py:eval(<<"while True: pass">>, #{}, 100)),
    Elapsed = erlang:monotonic_time(millisecond) - Start,
    ct:log("timed out after ~p ms", [Elapsed]),
    ?assert(Elapsed >= 100),
    ?assert(Elapsed < 1000),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>, #{}, 1000)),
    %% The loop was stopped: all 8 workers can sleep at once again.
    wait_all_workers_free().

%% @doc Interrupted code unwinds normally: its finally blocks run.
interrupted_code_runs_finally(_Config) ->
    ok = py:exec(<<"FINALLY_RAN = False\n"
                   "def spin():\n"
                   "    global FINALLY_RAN\n"
                   "    try:\n"
                   "        while True:\n"
                   "            pass\n"
                   "    finally:\n"
                   "        FINALLY_RAN = True\n">>),
    ?assertEqual({error, timeout}, py:call('__main__', spin, [], #{}, 50)),
    wait_until(fun() -> py:eval(<<"FINALLY_RAN">>) =:= {ok, true} end).

%% @doc The interruption is a BaseException: `except Exception' does not catch it.
except_exception_does_not_swallow_cancel(_Config) ->
    ok = py:exec(<<"CAUGHT = 0\n"
                   "def stubborn():\n"
                   "    global CAUGHT\n"
                   "    while True:\n"
                   "        try:\n"
                   "            while True:\n"
                   "                pass\n"
                   "        except Exception:\n"
                   "            CAUGHT += 1\n">>),
    ?assertEqual({error, timeout}, py:call('__main__', stubborn, [], #{}, 50)),
    wait_all_workers_free(),
    ?assertEqual({ok, 0}, py:eval(<<"CAUGHT">>)).

%% @doc A call still queued at its deadline never runs.
queued_call_times_out_without_running(_Config) ->
    ok = py:exec(<<"QUEUED_RAN = False\n">>),
    Sleepers = [spawn_monitor(fun() -> py:call(time, sleep, [0.5]) end) || _ <- lists:seq(1, 8)],
    timer:sleep(50),
    ?assertEqual({error, timeout}, py:exec(<<"QUEUED_RAN = True">>, 100)),
    [receive {'DOWN', Ref, process, _, _} -> ok end || {_, Ref} <- Sleepers],
    timer:sleep(100),
    ?assertEqual({ok, false}, py:eval(<<"QUEUED_RAN">>)).

%% @doc 100 callers killed mid-call: then 1000 calls succeed and all 8 workers serve.
killed_callers_leave_system_healthy(_Config) ->
    Callers = [spawn(fun() -> py:eval(<<"while True: pass">>, #{}, infinity) end)
               || _ <- lists:seq(1, 100)],
    timer:sleep(200),
    [exit(Pid, kill) || Pid <- Callers],
    Results = [py:call(operator, add, [N, 1]) || N <- lists:seq(1, 1000)],
    ?assertEqual([{ok, N + 1} || N <- lists:seq(1, 1000)], Results),
    ?assertMatch(#{workers := 8}, py_nif:info()),
    wait_all_workers_free().

%% @doc After a timeout, the caller's mailbox receives nothing more.
late_result_never_reaches_mailbox(_Config) ->
    ?assertEqual({error, timeout}, py:call(time, sleep, [0.2], #{}, 10)),
    timer:sleep(400),
    {messages, Messages} = process_info(self(), messages),
    ?assertEqual([], [M || M <- Messages, element(1, M) =:= py_result]).

%% @doc C extensions from the configured venv load: numpy computes.
numpy_from_venv(_Config) ->
    case os:getenv("ERLANG_PYTHON") of
        false -> {skip, "ERLANG_PYTHON (the test venv) is not set"};
        _ -> ?assertEqual({ok, 45}, py:eval(<<"__import__('numpy').arange(10).sum()">>))
    end.

%% ---------------------------------------------------------------------------

%% Proves every worker is free: 8 parallel 0.3 s sleeps take well under 0.6 s.
wait_all_workers_free() ->
    wait_until(fun() ->
        Start = erlang:monotonic_time(millisecond),
        Monitors = [spawn_monitor(fun() -> {ok, none} = py:call(time, sleep, [0.3]) end)
                    || _ <- lists:seq(1, 8)],
        [receive {'DOWN', Ref, process, _, normal} -> ok end || {_, Ref} <- Monitors],
        erlang:monotonic_time(millisecond) - Start < 550
    end).

wait_until(Fun) ->
    wait_until(Fun, 20).

wait_until(Fun, 0) ->
    ?assert(Fun());
wait_until(Fun, N) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(100), wait_until(Fun, N - 1)
    end.
