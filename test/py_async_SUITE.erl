%% Asynchronous calls (py:async_call/await) and casts (py:cast): started at once, run in
%% parallel up to the pool's size, answered as py:call would, cancelled at their own
%% timeout or their caller's death.
-module(py_async_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [returns_what_call_would, four_sleeps_overlap, await_timeout_cancels,
     own_timeout_without_await, own_timeout_while_awaiting, awaited_twice, caller_death_cancels,
     callbacks_run_without_the_caller, options_apply, wait_ignores_the_mailbox,
     cast_runs, cast_error_is_logged, cast_outlives_its_caller, huge_timeouts, bad_arguments].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"
import time as _time, erlang as _erlang
as_state = {}
def as_sleep_flag(key, seconds):
    as_state[key] = 'started'
    try:
        _time.sleep(seconds)
        as_state[key] = 'finished'
    except BaseException:
        as_state[key] = 'cancelled'
        raise
def as_set(key, value):
    as_state[key] = value
def as_fail():
    raise KeyError('missing')
def as_callback(x):
    return _erlang.call('as_triple', x)
">>),
    ok = py:register_function(as_triple, fun([X]) -> 3 * X end),
    Config.

end_per_suite(_Config) ->
    ok.

state(Key) ->
    {ok, Value} = py:eval(<<"as_state.get(k)">>, #{k => Key}),
    Value.

%% @doc await/1 returns what py:call would have: results, errors.
returns_what_call_would(_Config) ->
    {ok, Ref} = py:async_call(operator, add, [1, 2]),
    ?assert(is_reference(Ref)),
    ?assertEqual({ok, 3}, py:await(Ref)),
    {ok, Failing} = py:async_call('__main__', as_fail, []),
    ?assertMatch({error, {'KeyError', _, _}}, py:await(Failing, 5000)),
    {ok, Missing} = py:async_call(no_such_module, f, [], #{}),
    ?assertMatch({error, {'ModuleNotFoundError', _, _}}, py:await(Missing)).

%% @doc Four 300 ms sleeps in flight at once take about 300 ms, not 1.2 s.
four_sleeps_overlap(_Config) ->
    Started = erlang:monotonic_time(millisecond),
    Refs = [begin {ok, R} = py:async_call(time, sleep, [0.3]), R end || _ <- lists:seq(1, 4)],
    [?assertEqual({ok, none}, py:await(R)) || R <- Refs],
    Took = erlang:monotonic_time(millisecond) - Started,
    ct:pal("four 300 ms sleeps: ~p ms", [Took]),
    ?assert(Took < 900).

%% @doc An await that times out cancels the call, as py:call's timeout does.
await_timeout_cancels(_Config) ->
    {ok, Ref} = py:async_call('__main__', as_sleep_flag, [<<"await_timeout">>, 5]),
    ?assertEqual({error, timeout}, py:await(Ref, 100)),
    ?assert(py_test_wait:until(fun() -> state(<<"await_timeout">>) =:= <<"cancelled">> end)).

%% @doc The call's own timeout runs from async_call, awaited or not.
own_timeout_without_await(_Config) ->
    {ok, Ref} = py:async_call('__main__', as_sleep_flag, [<<"own_timeout">>, 5], #{},
                              #{timeout => 100}),
    ?assert(py_test_wait:until(fun() -> state(<<"own_timeout">>) =:= <<"cancelled">> end)),
    ?assertEqual({error, timeout}, py:await(Ref)).

own_timeout_while_awaiting(_Config) ->
    {ok, Ref} = py:async_call(time, sleep, [5], #{}, 100),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, py:await(Ref, 5000)),
    ?assert(erlang:monotonic_time(millisecond) - Started < 2000).

awaited_twice(_Config) ->
    {ok, Ref} = py:async_call(operator, add, [1, 2]),
    ?assertEqual({ok, 3}, py:await(Ref)),
    ?assertEqual({error, already_awaited}, py:await(Ref)),
    {ok, Timed} = py:async_call(time, sleep, [1]),
    ?assertEqual({error, timeout}, py:await(Timed, 10)),
    ?assertEqual({error, already_awaited}, py:await(Timed, 10)).

%% @doc The caller's death cancels its async calls.
caller_death_cancels(_Config) ->
    Self = self(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        {ok, _} = py:async_call('__main__', as_sleep_flag, [<<"death">>, 5]),
        Self ! submitted,
        receive never -> ok end
    end),
    receive submitted -> ok end,
    ?assert(py_test_wait:until(fun() -> state(<<"death">>) =:= <<"started">> end)),
    exit(Pid, kill),
    receive {'DOWN', Monitor, process, Pid, _} -> ok end,
    ?assert(py_test_wait:until(fun() -> state(<<"death">>) =:= <<"cancelled">> end)).

%% @doc Callbacks of an async call run while its caller does something else (here: waits on
%% another call).
callbacks_run_without_the_caller(_Config) ->
    {ok, First} = py:async_call('__main__', as_callback, [2]),
    {ok, Second} = py:async_call('__main__', as_callback, [5]),
    ?assertEqual({ok, 15}, py:await(Second, 5000)),
    ?assertEqual({ok, 6}, py:await(First, 5000)).

options_apply(_Config) ->
    {ok, Ref} = py:async_call(collections, 'OrderedDict', [], #{}, #{return => object}),
    {ok, Object} = py:await(Ref),
    ?assert(py:is_object(Object)),
    {ok, Failing} = py:async_call('__main__', as_fail, [], #{}, #{errors => detailed}),
    ?assertMatch({error, {'KeyError', _, _, #{key := <<"missing">>}}}, py:await(Failing)).

%% @doc await's wait costs the same with 100,000 messages in the mailbox.
wait_ignores_the_mailbox(_Config) ->
    [self() ! {noise, N} || N <- lists:seq(1, 100000)],
    {ok, Ref} = py:async_call(time, sleep, [0.05]),
    Started = erlang:monotonic_time(microsecond),
    ?assertEqual({ok, none}, py:await(Ref)),
    Took = erlang:monotonic_time(microsecond) - Started,
    ct:pal("await with 100,000 messages queued: ~p us", [Took]),
    ?assert(Took < 1000000),
    flush_noise().

flush_noise() ->
    receive {noise, _} -> flush_noise() after 0 -> ok end.

%% @doc A cast runs and returns at once.
cast_runs(_Config) ->
    ?assertEqual(ok, py:cast('__main__', as_set, [<<"cast">>, 42])),
    ?assert(py_test_wait:until(fun() -> state(<<"cast">>) =:= 42 end)),
    ?assertEqual(ok, py:cast('__main__', as_set, [], #{key => <<"cast_kw">>, value => 1})),
    ?assert(py_test_wait:until(fun() -> state(<<"cast_kw">>) =:= 1 end)).

%% @doc A cast whose function raises is logged at level error.
cast_error_is_logged(_Config) ->
    ok = logger:add_handler(py_async_SUITE_handler, ?MODULE, #{config => #{pid => self()}}),
    try
        ok = py:cast('__main__', as_fail, []),
        receive
            {logged, error, Text} ->
                ?assertNotEqual(nomatch, string:find(Text, "py:cast of __main__.as_fail failed")),
                ?assertNotEqual(nomatch, string:find(Text, "KeyError"))
        after 5000 ->
            ct:fail(not_logged)
        end
    after
        logger:remove_handler(py_async_SUITE_handler)
    end.

log(#{level := Level, msg := {Format, Args}, meta := #{python_cast := _}},
    #{config := #{pid := Pid}}) ->
    Pid ! {logged, Level, lists:flatten(io_lib:format(Format, Args))};
log(_Event, _Config) ->
    ok.

%% @doc A cast is not tied to its caller: it runs on after the caller exits.
cast_outlives_its_caller(_Config) ->
    {Pid, Monitor} = spawn_monitor(fun() ->
        ok = py:cast('__main__', as_sleep_flag, [<<"cast_orphan">>, 0.2])
    end),
    receive {'DOWN', Monitor, process, Pid, normal} -> ok end,
    ?assert(py_test_wait:until(fun() -> state(<<"cast_orphan">>) =:= <<"finished">> end)).

%% @doc A timeout too long to be a deadline is none; a huge await timeout too.
huge_timeouts(_Config) ->
    {ok, Ref} = py:async_call(operator, add, [1, 2], #{}, 1 bsl 80),
    ?assertEqual({ok, 3}, py:await(Ref, 1 bsl 80)).

bad_arguments(_Config) ->
    ?assertEqual({error, {badarg, {module, 1}}}, py:async_call(1, f, [])),
    ?assertEqual({error, {badarg, {option, {timeout, x}}}},
                 py:async_call(m, f, [], #{}, #{timeout => x})),
    ?assertEqual({error, {badarg, {timeout, x}}}, py:async_call(m, f, [], #{}, x)),
    Ref = make_ref(),
    ?assertEqual({error, {badarg, {ref, Ref}}}, py:await(Ref)),
    ?assertEqual({error, {badarg, {ref, x}}}, py:await(x)),
    ?assertEqual({error, {badarg, {timeout, -1}}}, py:await(Ref, -1)),
    ?assertEqual({error, {badarg, {args, x}}}, py:cast(m, f, x)),
    ?assertEqual({error, {badarg, {kwargs, []}}}, py:cast(m, f, [], [])).
