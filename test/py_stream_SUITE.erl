%% Streams (docs/streams.md): the items of a Python iterable sent one message each, in
%% order, with gen_tcp-style flow control, closed by py:stream_cancel or the consumer's
%% death, and holding no worker while the consumer does not want items.
-module(py_stream_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [items_in_order, any_iterable, hundred_thousand_items, empty_stream, active_n,
     active_false_then_more, active_true_after_passive, slow_consumer_memory_is_flat,
     cancel_runs_finally, cancel_while_producing, consumer_death_closes,
     parked_streams_hold_no_worker, error_in_the_middle, not_iterable, call_errors,
     items_as_objects, detailed_stream_errors, async_generator, async_generator_cancel,
     callbacks_from_a_generator, output_goes_to_the_consumer, closed_stream_refuses_credit,
     timed_out_stream_sends_nothing, hanging_finally_loses_no_worker, bad_arguments].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"
import asyncio as _asyncio, time as _time, erlang as _erlang
st_state = {}
def st_count(n):
    for i in range(n):
        yield i
def st_endless(key):
    st_state[key] = 0
    try:
        while True:
            st_state[key] += 1
            yield st_state[key]
    finally:
        st_state[key + '_closed'] = True
def st_slow(key, delay):
    try:
        while True:
            _time.sleep(delay)
            yield 1
    finally:
        st_state[key + '_closed'] = True
def st_failing(n):
    for i in range(n):
        yield i
    raise ValueError('broken at %d' % n)
def st_objects():
    yield object()
    yield [1, 2]
async def st_async(n, key):
    try:
        for i in range(n):
            await _asyncio.sleep(0)
            yield i
    finally:
        st_state[key + '_closed'] = True
async def st_async_slow(key):
    try:
        while True:
            await _asyncio.sleep(0.01)
            yield 1
    finally:
        st_state[key + '_closed'] = True
def st_callbacks(n):
    for i in range(n):
        yield _erlang.call('st_double', i)
def st_late(key):
    try:
        _time.sleep(0.3)
    except BaseException:
        pass
    return st_endless(key)
def st_stubborn():
    try:
        while True:
            yield 1
    finally:
        _time.sleep(8)
def st_printing():
    print('from the generator')
    yield 1
">>),
    ok = py:register_function(st_double, fun([X]) -> 2 * X end),
    Config.

end_per_suite(_Config) ->
    ok.

%% Collects a stream's messages up to its end: {Items, End}.
collect(Ref) ->
    collect(Ref, [], 5000).

collect(Ref, Acc, Timeout) ->
    receive
        {py_stream, Ref, {data, Item}} -> collect(Ref, [Item | Acc], Timeout);
        {py_stream, Ref, passive} -> {lists:reverse(Acc), passive};
        {py_stream, Ref, done} -> {lists:reverse(Acc), done};
        {py_stream, Ref, {error, Reason}} -> {lists:reverse(Acc), {error, Reason}}
    after Timeout ->
        {lists:reverse(Acc), timeout}
    end.

state(Key) ->
    {ok, Value} = py:eval(<<"st_state.get(k)">>, #{k => Key}),
    Value.

closed(Key) ->
    py_test_wait:until(fun() -> state(<<Key/binary, "_closed">>) =:= true end).

%% @doc Items come in order, then `done'.
items_in_order(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [5]),
    ?assert(is_reference(Ref)),
    ?assertEqual({[0, 1, 2, 3, 4], done}, collect(Ref)).

%% @doc Any iterable the function returns streams: lists, dicts, ranges, iterators.
any_iterable(_Config) ->
    {ok, R1} = py:stream(builtins, list, [[a, b]]),
    ?assertEqual({[a, b], done}, collect(R1)),
    {ok, R2} = py:stream(builtins, range, [3]),
    ?assertEqual({[0, 1, 2], done}, collect(R2)),
    {ok, R3} = py:stream(builtins, iter, [#{k => 1}]),
    ?assertEqual({[k], done}, collect(R3)),
    {ok, R4} = py:stream(itertools, islice, [[1, 2, 3, 4], 2]),
    ?assertEqual({[1, 2], done}, collect(R4)).

%% @doc 100,000 items arrive, all of them, in order.
hundred_thousand_items(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [100000]),
    {Items, End} = collect(Ref, [], 30000),
    ?assertEqual(done, End),
    ?assertEqual(lists:seq(0, 99999), Items).

empty_stream(_Config) ->
    {ok, Ref} = py:stream(builtins, list, [[]]),
    ?assertEqual({[], done}, collect(Ref)).

%% @doc `active => N': N items, then `passive'; stream_active asks for more.
active_n(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [7], #{}, #{active => 3}),
    ?assertEqual({[0, 1, 2], passive}, collect(Ref)),
    ?assertEqual({[], timeout}, collect(Ref, [], 100)),
    ok = py:stream_active(Ref, 3),
    ?assertEqual({[3, 4, 5], passive}, collect(Ref)),
    ok = py:stream_active(Ref, 10),
    ?assertEqual({[6], done}, collect(Ref)).

%% @doc `active => false' sends nothing until asked; credit adds up.
active_false_then_more(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [10], #{}, #{active => false}),
    ?assertEqual({[], timeout}, collect(Ref, [], 100)),
    ok = py:stream_active(Ref, 2),
    ok = py:stream_active(Ref, 2),
    ?assertEqual({[0, 1, 2, 3], passive}, collect(Ref)),
    ok = py:stream_cancel(Ref).

%% @doc `true' lifts the bound.
active_true_after_passive(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [6], #{}, #{active => 2}),
    ?assertEqual({[0, 1], passive}, collect(Ref)),
    ok = py:stream_active(Ref, true),
    ?assertEqual({[2, 3, 4, 5], done}, collect(Ref)).

%% @doc A slow consumer of an endless generator: the generator runs at most the credit
%% ahead of it, so memory stays flat, whatever the number of items.
slow_consumer_memory_is_flat(_Config) ->
    Key = <<"slow_consumer">>,
    {ok, Ref} = py:stream('__main__', st_endless, [Key], #{}, #{active => 10}),
    Rounds = 200,
    lists:foreach(fun(_) ->
                      {Items, passive} = collect(Ref),
                      10 = length(Items),
                      ok = py:stream_active(Ref, 10)
                  end, lists:seq(1, Rounds)),
    %% 2,000 taken; the generator has produced at most the next credit on top.
    ?assert(state(Key) =< Rounds * 10 + 10),
    {message_queue_len, Queued} = process_info(self(), message_queue_len),
    ?assert(Queued =< 11),
    ok = py:stream_cancel(Ref),
    ?assert(closed(Key)).

%% @doc stream_cancel closes the generator: its `finally' runs; no message comes after.
cancel_runs_finally(_Config) ->
    Key = <<"cancel_parked">>,
    {ok, Ref} = py:stream('__main__', st_endless, [Key], #{}, #{active => 5}),
    ?assertMatch({[1, 2, 3, 4, 5], passive}, collect(Ref)),
    ok = py:stream_cancel(Ref),
    ?assert(closed(Key)),
    ok = py:stream_cancel(Ref),
    ?assertEqual({[], timeout}, collect(Ref, [], 100)).

%% @doc Cancelled while it produces (active => true on an endless generator): it stops,
%% its finally runs, and nothing comes after stream_cancel returns.
cancel_while_producing(_Config) ->
    Key = <<"cancel_running">>,
    {ok, Ref} = py:stream('__main__', st_endless, [Key]),
    receive {py_stream, Ref, {data, _}} -> ok end,
    ok = py:stream_cancel(Ref),
    flush(Ref),
    ?assert(closed(Key)),
    ?assertEqual({[], timeout}, collect(Ref, [], 100)),
    ?assert(py_test_wait:until(fun() -> maps:get(busy, py:info()) =:= 0 end)).

flush(Ref) ->
    receive {py_stream, Ref, _} -> flush(Ref) after 0 -> ok end.

%% @doc The consumer's death closes the stream, parked or producing, and frees the worker.
consumer_death_closes(_Config) ->
    lists:foreach(
      fun({Key, Function, Args, Options}) ->
              Self = self(),
              {Pid, Monitor} = spawn_monitor(fun() ->
                  {ok, Ref} = py:stream('__main__', Function, Args, #{}, Options),
                  receive {py_stream, Ref, {data, _}} -> Self ! started end,
                  exit(done)
              end),
              receive started -> ok end,
              receive {'DOWN', Monitor, process, Pid, _} -> ok end,
              ?assert(closed(Key))
      end,
      [{<<"death_parked">>, st_endless, [<<"death_parked">>], #{active => 1}},
       {<<"death_running">>, st_endless, [<<"death_running">>], #{}},
       {<<"death_sleeping">>, st_slow, [<<"death_sleeping">>, 0.05], #{}}]),
    ?assert(py_test_wait:until(fun() -> maps:get(busy, py:info()) =:= 0 end)).

%% @doc Streams waiting for their consumer hold no worker: more parked streams than
%% workers, and calls still run.
parked_streams_hold_no_worker(_Config) ->
    #{workers := Workers} = py:info(),
    Refs = [begin
                {ok, Ref} = py:stream('__main__', st_count, [100], #{}, #{active => 1}),
                {[0], passive} = collect(Ref),
                Ref
            end || _ <- lists:seq(1, Workers * 2)],
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, 2000)),
    %% The worker that answered counts itself idle just after its answer went out.
    ?assert(py_test_wait:until(fun() -> maps:get(busy, py:info()) =:= 0 end)),
    [ok = py:stream_cancel(Ref) || Ref <- Refs].

%% @doc An exception in the middle ends the stream with {error, Reason}, after the items
%% before it.
error_in_the_middle(_Config) ->
    {ok, Ref} = py:stream('__main__', st_failing, [3]),
    {Items, {error, {'ValueError', Message, Traceback}}} = collect(Ref),
    ?assertEqual([0, 1, 2], Items),
    ?assertEqual(<<"broken at 3">>, Message),
    ?assertNotEqual(nomatch, string:find(Traceback, <<"st_failing">>)),
    ?assertEqual({error, closed}, py:stream_active(Ref, 1)).

%% @doc A result that is not iterable is an error of py:stream itself.
not_iterable(_Config) ->
    ?assertMatch({error, {'TypeError', _, _}}, py:stream(operator, add, [1, 2])).

call_errors(_Config) ->
    ?assertMatch({error, {'ModuleNotFoundError', _, _}}, py:stream(no_such_module, f, [])),
    ?assertEqual({error, timeout}, py:stream(time, sleep, [1], #{}, #{timeout => 50})).

%% @doc `return => object' sends handles.
items_as_objects(_Config) ->
    {ok, Ref} = py:stream('__main__', st_objects, [], #{}, #{return => object}),
    {[First, Second], done} = collect(Ref),
    ?assert(py:is_object(First)),
    ?assertEqual({ok, [1, 2]}, py:to_term(Second)).

detailed_stream_errors(_Config) ->
    {ok, Ref} = py:stream('__main__', st_failing, [1], #{}, #{errors => detailed}),
    ?assertMatch({[0], {error, {'ValueError', _, _, #{class := <<"builtins.ValueError">>}}}},
                 collect(Ref)).

%% @doc Async generators stream too, each item awaited on an event loop.
async_generator(_Config) ->
    {ok, Ref} = py:stream('__main__', st_async, [5, <<"async_full">>], #{}, #{active => 2}),
    ?assertEqual({[0, 1], passive}, collect(Ref)),
    ok = py:stream_active(Ref, true),
    ?assertEqual({[2, 3, 4], done}, collect(Ref)),
    ?assert(closed(<<"async_full">>)).

async_generator_cancel(_Config) ->
    Key = <<"async_cancel">>,
    {ok, Ref} = py:stream('__main__', st_async_slow, [Key]),
    receive {py_stream, Ref, {data, 1}} -> ok end,
    ok = py:stream_cancel(Ref),
    ?assert(closed(Key)),
    {ok, Parked} = py:stream('__main__', st_async_slow, [<<"async_parked">>], #{},
                             #{active => 1}),
    ?assertEqual({[1], passive}, collect(Parked)),
    ok = py:stream_cancel(Parked),
    ?assert(closed(<<"async_parked">>)).

%% @doc A generator may call Erlang: its callbacks run though the consumer only receives.
callbacks_from_a_generator(_Config) ->
    {ok, Ref} = py:stream('__main__', st_callbacks, [4]),
    ?assertEqual({[0, 2, 4, 6], done}, collect(Ref)).

%% @doc What the generator prints goes to the stream creator's group leader.
output_goes_to_the_consumer(_Config) ->
    Leader = py_test_leader:start(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        group_leader(Leader, self()),
        {ok, Ref} = py:stream('__main__', st_printing, []),
        {[1], done} = collect(Ref)
    end),
    receive {'DOWN', Monitor, process, Pid, Reason} -> ?assertEqual(normal, Reason) end,
    receive
        {printed, Text} -> ?assertEqual(<<"from the generator\n">>, Text)
    after 5000 ->
        ct:fail(nothing_printed)
    end,
    exit(Leader, kill).

closed_stream_refuses_credit(_Config) ->
    {ok, Ref} = py:stream('__main__', st_count, [1]),
    ?assertEqual({[0], done}, collect(Ref)),
    ?assertEqual({error, closed}, py:stream_active(Ref, 1)),
    ?assertEqual(ok, py:stream_cancel(Ref)).

%% @doc A py:stream that timed out as its function returned: the caller never got Ref, and
%% no item is ever sent to it.
timed_out_stream_sends_nothing(_Config) ->
    Key = <<"timed_out">>,
    ?assertEqual({error, timeout}, py:stream('__main__', st_late, [Key], #{}, #{timeout => 50})),
    receive
        {py_stream, _, _} = Message -> ct:fail({unexpected, Message})
    after 600 ->
        ok
    end,
    ?assertEqual(none, state(Key)),
    ?assert(py_test_wait:until(fun() -> maps:get(busy, py:info()) =:= 0 end)).

%% @doc A generator whose `finally' hangs when it is closed: the close is a request with a
%% deadline (5 s), cancelled there, and its worker given up a second later and replaced.
hanging_finally_loses_no_worker(_Config) ->
    #{given_up_total := Before, workers := Workers} = py:info(),
    {ok, Ref} = py:stream('__main__', st_stubborn, [], #{}, #{active => 1}),
    ?assertEqual({[1], passive}, collect(Ref)),
    ok = py:stream_cancel(Ref),
    ?assert(py_test_wait:until(fun() -> maps:get(given_up_total, py:info()) > Before end, 500)),
    ?assertEqual(Workers, maps:get(workers, py:info())),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, 1000)).

bad_arguments(_Config) ->
    ?assertEqual({error, {badarg, {module, 1}}}, py:stream(1, f, [])),
    ?assertEqual({error, {badarg, {args, x}}}, py:stream(m, f, x)),
    ?assertEqual({error, {badarg, {option, {active, 0}}}},
                 py:stream(builtins, list, [[]], #{}, #{active => 0})),
    ?assertEqual({error, {badarg, {option, {active, once}}}},
                 py:stream(builtins, list, [[]], #{}, #{active => once})),
    Ref = make_ref(),
    ?assertEqual({error, {badarg, {stream, Ref}}}, py:stream_active(Ref, 1)),
    ?assertEqual({error, {badarg, {active, -1}}}, py:stream_active(Ref, -1)),
    ?assertEqual({error, {badarg, {stream, Ref}}}, py:stream_cancel(Ref)),
    ?assertEqual({error, {badarg, {stream, x}}}, py:stream_cancel(x)).
