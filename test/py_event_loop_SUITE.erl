%% Coroutines across the boundary (docs/asyncio.md): a py:call of an `async def' function
%% runs its coroutine on an ErlangEventLoop and returns its result, with the usual timeout
%% and caller-death semantics; each loop's driver process ends with its loop; a driver
%% that dies makes its loop raise rather than hang; the driver NIFs refuse bad arguments.
%% The loop's asyncio behaviour is python_tests/test_event_loop.py's.
-module(py_event_loop_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [call_of_async_def_returns_its_result, coroutine_errors_are_call_errors,
     timeout_cancels_the_coroutine_and_runs_finally, caller_death_cancels_the_coroutine,
     drivers_end_with_their_loops, killed_driver_makes_the_loop_raise,
     concurrent_coroutine_calls_overlap, driver_nifs_refuse_bad_arguments].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"import asyncio, erlang\n"
                   "async def coro_add(a, b):\n"
                   "    await asyncio.sleep(0.001)\n"
                   "    return a + b\n"
                   "async def coro_fail():\n"
                   "    await asyncio.sleep(0)\n"
                   "    raise ValueError('from a coroutine')\n"
                   "async def coro_sleep(seconds):\n"
                   "    await asyncio.sleep(seconds)\n"
                   "    return seconds\n"
                   "CLEANED = []\n"
                   "async def coro_slow(tag):\n"
                   "    try:\n"
                   "        await asyncio.sleep(30)\n"
                   "    finally:\n"
                   "        CLEANED.append(tag)\n">>),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc The example of the issue: py:call('__main__', coro_add, [2, 3]) gives {ok, 5}.
call_of_async_def_returns_its_result(_Config) ->
    ?assertEqual({ok, 5}, py:call('__main__', coro_add, [2, 3])),
    ?assertEqual({ok, <<"ab">>}, py:call('__main__', coro_add, [<<"a">>, <<"b">>])).

%% @doc An exception in the coroutine is the call's error, as for a plain function.
coroutine_errors_are_call_errors(_Config) ->
    ?assertMatch({error, {'ValueError', <<"from a coroutine">>, _}},
                 py:call('__main__', coro_fail, [])).

%% @doc A timeout cancels the coroutine: the call returns at its deadline, the coroutine's
%% finally block runs, and the worker is free again.
timeout_cancels_the_coroutine_and_runs_finally(_Config) ->
    Start = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, py:call('__main__', coro_slow, [<<"timeout">>], #{}, 200)),
    Elapsed = erlang:monotonic_time(millisecond) - Start,
    ?assert(Elapsed >= 200 andalso Elapsed < 1000),
    wait_until(fun() -> py:eval(<<"'timeout' in CLEANED">>) =:= {ok, true} end),
    wait_until(fun() -> maps:get(busy, py:info()) =:= 0 end),
    ?assertEqual(0, maps:get(given_up, py:info())).

%% @doc A caller that dies mid-call cancels its coroutine the same way.
caller_death_cancels_the_coroutine(_Config) ->
    {Pid, Monitor} = spawn_monitor(fun() -> py:call('__main__', coro_slow, [<<"death">>]) end),
    timer:sleep(100),
    exit(Pid, kill),
    receive {'DOWN', Monitor, process, Pid, killed} -> ok end,
    wait_until(fun() -> py:eval(<<"'death' in CLEANED">>) =:= {ok, true} end),
    wait_until(fun() -> maps:get(busy, py:info()) =:= 0 end).

%% @doc Each coroutine call runs on a loop of its own, whose driver process ends with it:
%% 50 calls leave no driver behind.
drivers_end_with_their_loops(_Config) ->
    Before = drivers(),
    [{ok, 3} = py:call('__main__', coro_add, [1, 2]) || _ <- lists:seq(1, 50)],
    wait_until(fun() -> drivers() =:= Before end).

%% @doc A driver killed from outside makes its loop raise erlang.Error at once, instead of
%% sleeping for good.
killed_driver_makes_the_loop_raise(_Config) ->
    Before = drivers(),
    Self = self(),
    spawn(fun() -> Self ! {result, py:call('__main__', coro_sleep, [30])} end),
    wait_until(fun() -> length(drivers() -- Before) =:= 1 end),
    [Driver] = drivers() -- Before,
    exit(Driver, kill),
    receive
        {result, Result} -> ?assertMatch({error, {'Error', _, _}}, Result)
    after 5000 -> ct:fail(loop_did_not_notice)
    end.

%% @doc Coroutine calls on different workers run at the same time.
concurrent_coroutine_calls_overlap(_Config) ->
    Self = self(),
    Start = erlang:monotonic_time(millisecond),
    [spawn(fun() -> Self ! {done, py:call('__main__', coro_sleep, [0.3])} end) || _ <- lists:seq(1, 4)],
    [receive {done, R} -> ?assertEqual({ok, 0.3}, R) end || _ <- lists:seq(1, 4)],
    ?assert(erlang:monotonic_time(millisecond) - Start < 1000).

%% @doc The driver's NIFs take a loop and nothing else.
driver_nifs_refuse_bad_arguments(_Config) ->
    ?assertError(badarg, py_nif:loop_attach(make_ref())),
    ?assertError(badarg, py_nif:loop_select(self())),
    ?assertError(badarg, py_nif:loop_ready(undefined)),
    ?assertError(badarg, py_nif:loop_timer(undefined, 1)),
    ?assertError(badarg, py_nif:loop_post(undefined, reply, 1, <<"f">>, {ok, 1})),
    ?assertError(badarg, py_nif:loop_reply(undefined, 1, ok)),
    ?assertError(badarg, py_nif:loop_stop(<<"loop">>)).

%% Internal

%% The running loop drivers: processes started by py_event_loop for a loop.
drivers() ->
    [P || P <- processes(),
          case proc_lib:initial_call(P) of
              {py_event_loop, _, _} -> true;
              _ -> false
          end].

wait_until(F) ->
    wait_until(F, 500).

wait_until(F, 0) ->
    ?assert(F());
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(10), wait_until(F, N - 1)
    end.
