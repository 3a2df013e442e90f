%% No call can take a worker away for good: a cancelled call is interrupted again and again
%% until it ends, and a worker that still runs one `give_up_after' ms after its cancellation
%% is given up and replaced (c_src/py_cancel.c). Code that swallows every CallCancelled, or
%% a long C call, would otherwise hold its worker forever. The cases that leave threads
%% running forever do so in a peer VM of their own, stopped at the end.
-module(py_cancel_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [info_reports_the_pool, swallowed_cancellations_lose_no_worker,
     rebinding_call_cancelled_changes_nothing, code_that_swallows_once_is_interrupted_again,
     long_c_call_is_given_up, given_up_is_logged, bound_on_given_up_threads,
     bad_env_values].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% Swallows every CallCancelled, and spends its time in a C call, where no exception can
%% reach it: a pure-Python loop is often ended by one of the repeated interruptions landing
%% outside its try block, which would make the count of given-up workers vary.
-define(SWALLOW, <<"import time\n"
                   "def swallow():\n"
                   "    while True:\n"
                   "        try:\n"
                   "            time.sleep(5)\n"
                   "        except BaseException:\n"
                   "            pass\n">>).

%% @doc py:info() reports the pool: workers, busy, queued, given up, the bound.
info_reports_the_pool(_Config) ->
    Info = py:info(),
    ?assertMatch(#{running := true, workers := 8, busy := _, queued := _, given_up := 0,
                   given_up_total := _, max_given_up := 64, give_up_after := 1000}, Info),
    ?assertEqual(8, maps:get(workers, Info)).

%% @doc Ten calls whose code swallows every cancellation, in a pool of two workers: each
%% times out, and later calls still run at once; py:info() shows ten workers given up.
swallowed_cancellations_lose_no_worker(_Config) ->
    with_peer(#{workers => 2, give_up_after => 200, max_given_up => 16}, fun(Peer) ->
        ok = call(Peer, py, exec, [?SWALLOW]),
        %% Each call's timeout leaves room for a worker to be given up and replaced before
        %% it, so that all ten run (and swallow) rather than time out in the queue.
        [?assertEqual({error, timeout}, call(Peer, py, call, ['__main__', swallow, [], #{}, 400]))
         || _ <- lists:seq(1, 10)],
        Start = erlang:monotonic_time(millisecond),
        ?assertEqual({ok, 2.0}, call(Peer, py, call, [math, sqrt, [4], #{}, 5000])),
        ct:log("after 10 swallowed cancellations the next call took ~b ms",
               [erlang:monotonic_time(millisecond) - Start]),
        ?assert(py_test_wait:until(fun() -> maps:get(given_up, call(Peer, py, info, [])) =:= 10 end)),
        ?assertMatch(#{given_up := 10, given_up_total := 10, workers := 2},
                     call(Peer, py, info, []))
    end).

%% @doc `erlang.CallCancelled = Exception' does not make `except Exception' catch the
%% cancellation: the runtime raises its own class. The call ends; nothing is given up.
rebinding_call_cancelled_changes_nothing(_Config) ->
    with_peer(#{workers => 2, give_up_after => 500}, fun(Peer) ->
        ok = call(Peer, py, exec, [<<"import erlang, time\n"
                                     "erlang.CallCancelled = Exception\n"
                                     "def sleepy():\n"
                                     "    while True:\n"
                                     "        try:\n"
                                     "            time.sleep(0.001)\n"
                                     "        except Exception:\n"
                                     "            pass\n">>]),
        ?assertEqual({error, timeout}, call(Peer, py, call, ['__main__', sleepy, [], #{}, 50])),
        ?assert(py_test_wait:until(fun() -> maps:get(busy, call(Peer, py, info, [])) =:= 0 end)),
        ?assertMatch(#{given_up_total := 0}, call(Peer, py, info, []))
    end).

%% @doc Code that catches the first CallCancelled and goes on is interrupted again, and
%% ends without its worker being given up.
code_that_swallows_once_is_interrupted_again(_Config) ->
    with_peer(#{workers => 2, give_up_after => 5000}, fun(Peer) ->
        ok = call(Peer, py, exec, [<<"def stubborn_once():\n"
                                     "    try:\n"
                                     "        while True:\n"
                                     "            pass\n"
                                     "    except BaseException:\n"
                                     "        pass\n"
                                     "    while True:\n"
                                     "        pass\n">>]),
        ?assertEqual({error, timeout},
                     call(Peer, py, call, ['__main__', stubborn_once, [], #{}, 50])),
        ?assert(py_test_wait:until(fun() -> maps:get(busy, call(Peer, py, info, [])) =:= 0 end)),
        ?assertMatch(#{given_up_total := 0}, call(Peer, py, info, []))
    end).

%% @doc A long C call (time.sleep(100)) cannot be interrupted: its worker is given up after
%% give_up_after, later calls run on the replacement, and the pool is whole again.
long_c_call_is_given_up(_Config) ->
    with_peer(#{workers => 1, give_up_after => 200}, fun(Peer) ->
        ?assertEqual({error, timeout}, call(Peer, py, call, [time, sleep, [100], #{}, 50])),
        ?assertEqual({ok, 3.0}, call(Peer, py, call, [math, sqrt, [9], #{}, 5000])),
        ?assertMatch(#{workers := 1, given_up := 1, given_up_total := 1},
                     call(Peer, py, info, []))
    end).

%% @doc Giving a worker up logs a warning through logger, naming the call.
given_up_is_logged(_Config) ->
    with_peer(#{workers => 1, give_up_after => 100}, fun(Peer) ->
        ok = call(Peer, py_test_log_handler, install, []),
        ?assertEqual({error, timeout}, call(Peer, py, call, [time, sleep, [100], #{}, 20])),
        Warnings = fun() -> [T || {warning, T} <- call(Peer, py_test_log_handler, taken, [])] end,
        ?assert(py_test_wait:until(fun() -> Warnings() =/= [] end)),
        [Text] = Warnings(),
        ct:log("~ts", [Text]),
        ?assertNotEqual(nomatch, string:find(Text, "given up")),
        ?assertNotEqual(nomatch, string:find(Text, "sleep"))
    end).

%% @doc At max_given_up threads given up at once, no more are replaced: the pool is then
%% busy, as it would be without this mechanism, and info says so.
bound_on_given_up_threads(_Config) ->
    with_peer(#{workers => 1, give_up_after => 100, max_given_up => 1}, fun(Peer) ->
        ?assertEqual({error, timeout}, call(Peer, py, call, [time, sleep, [100], #{}, 20])),
        ?assert(py_test_wait:until(fun() -> maps:get(given_up, call(Peer, py, info, [])) =:= 1 end)),
        ?assertEqual({error, timeout}, call(Peer, py, call, [time, sleep, [100], #{}, 20])),
        timer:sleep(400),
        ?assertMatch(#{given_up := 1, given_up_total := 1, busy := 1},
                     call(Peer, py, info, [])),
        ?assertEqual({error, timeout}, call(Peer, py, call, [math, sqrt, [9], #{}, 100]))
    end).

%% @doc Bad values of give_up_after and max_given_up stop the application from starting.
bad_env_values(_Config) ->
    [begin
         {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{Key, Value}]}),
         try
             ?assertMatch({error, {erlang_python, {{bad_env, Key, Value}, _}}},
                          call(Peer, application, ensure_all_started, [erlang_python]))
         after
             py_test_peer:stop(Peer)
         end
     end || {Key, Value} <- [{give_up_after, -1}, {give_up_after, soon},
                             {max_given_up, -2}, {max_given_up, lots}]].

%%% Helpers

with_peer(Env, Test) ->
    {ok, Peer, _} = py_test_peer:start(#{env => maps:to_list(Env)}),
    try
        Test(Peer)
    after
        py_test_peer:stop(Peer)
    end.

call(Peer, M, F, A) ->
    py_test_peer:call(Peer, M, F, A, 60000).

