#!/usr/bin/env escript
%%! -noshell
%% Objects, streams and asynchronous calls (issue 11), in a VM of its own; bench/run.escript
%% puts its tables into bench/RESULTS.md.
%%
%% - A method call on a handle (py:call_method) against a py:call of a module function doing
%%   the same work, in 5 interleaved blocks: the ratio of each block's medians.
%% - A stream's throughput in items/s (py:stream of range(N), every item received) against
%%   the same items returned as one list by py:call (list(range(N))), 5 alternating runs.
%% - py:async_call + py:await against py:call, interleaved.
%%
%% Usage: escript bench/objects.escript [Out.md]
-mode(compile).

-define(CALLS, 20000).
-define(BLOCKS, 5).
-define(ITEMS, 200000).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"
class BenchCounter:
    def echo(self, x):
        return x
bench_counter = BenchCounter()
def bench_echo(x):
    return x
">>),
    {ok, Handle} = py:eval(<<"bench_counter">>, #{}, #{return => object}),
    Calls = scale(?CALLS),
    Method = fun() -> {ok, 1} = py:call_method(Handle, echo, [1]) end,
    Function = fun() -> {ok, 1} = py:call('__main__', bench_echo, [1]) end,
    Async = fun() -> {ok, R} = py:async_call('__main__', bench_echo, [1]), {ok, 1} = py:await(R) end,
    _ = [{Method(), Function(), Async()} || _ <- lists:seq(1, 2000)],
    Blocks = [{median(measure(Calls div ?BLOCKS, Method)),
               median(measure(Calls div ?BLOCKS, Function)),
               median(measure(Calls div ?BLOCKS, Async))} || _ <- lists:seq(1, ?BLOCKS)],
    MethodRatios = [M / F || {M, F, _} <- Blocks],
    AsyncRatios = [A / F || {_, F, A} <- Blocks],
    Items = scale(?ITEMS),
    Throughput = [{stream_rate(Items), list_rate(Items)} || _ <- lists:seq(1, 5)],
    Streams = [S || {S, _} <- Throughput],
    Lists = [L || {_, L} <- Throughput],
    Report = [
        "Median µs of each of ", integer_to_list(?BLOCKS), " interleaved blocks of ",
        integer_to_list(Calls div ?BLOCKS), " calls (min / median / max over the blocks); the ratio\n"
        "is of each block's medians.\n\n",
        "| Call | median µs | ÷ py:call of a function |\n| --- | --- | --- |\n",
        "| `py:call('__main__', bench_echo, [1])` (baseline) | ", spread([F || {_, F, _} <- Blocks]),
        " | 1 |\n",
        "| `py:call_method(Handle, echo, [1])` | ", spread([M || {M, _, _} <- Blocks]), " | ",
        spread(MethodRatios), " |\n",
        "| `py:async_call` + `py:await` of the same function | ", spread([A || {_, _, A} <- Blocks]),
        " | ", spread(AsyncRatios), " |\n",
        "\nItems per second, ", integer_to_list(Items), " integers, min / median / max of 5 "
        "alternating runs.\n\n",
        "| How | items/s | ÷ one list |\n| --- | --- | --- |\n",
        "| `py:eval(<<\"list(range(n))\">>)`: one list (baseline) | ", rates(Lists), " | 1 |\n",
        "| `py:stream(builtins, range, [N])`, `active => true`, every item received | ",
        rates(Streams), " | ", fmt("~.3f", [median(Streams) / median(Lists)]), " |\n",
        "| the same, `active => 1000`, re-armed at each `passive` | ",
        rates([stream_rate(Items, 1000) || _ <- lists:seq(1, 3)]), " | |\n"
    ],
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Report)),
    halt(0).

scale(N) ->
    case os:getenv("BENCH_SCALE") of
        false -> N;
        S -> max(100, round(N * list_to_float(case lists:member($., S) of
                                                    true -> S;
                                                    false -> S ++ ".0"
                                                end)))
    end.

measure(N, F) ->
    [begin
         T0 = erlang:monotonic_time(),
         F(),
         erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1000
     end || _ <- lists:seq(1, N)].

stream_rate(Items) ->
    T0 = erlang:monotonic_time(),
    {ok, Ref} = py:stream(builtins, range, [Items]),
    Items = receive_items(Ref, 0),
    Items / seconds(T0).

stream_rate(Items, Active) ->
    T0 = erlang:monotonic_time(),
    {ok, Ref} = py:stream(builtins, range, [Items], #{}, #{active => Active}),
    Items = receive_items(Ref, 0, Active),
    Items / seconds(T0).

receive_items(Ref, N) ->
    receive
        {py_stream, Ref, {data, _}} -> receive_items(Ref, N + 1);
        {py_stream, Ref, done} -> N
    end.

receive_items(Ref, N, Active) ->
    receive
        {py_stream, Ref, {data, _}} -> receive_items(Ref, N + 1, Active);
        {py_stream, Ref, passive} -> ok = py:stream_active(Ref, Active), receive_items(Ref, N, Active);
        {py_stream, Ref, done} -> N
    end.

list_rate(Items) ->
    T0 = erlang:monotonic_time(),
    {ok, List} = py:eval(<<"list(range(n))">>, #{n => Items}),
    Items = length(List),
    Items / seconds(T0).

seconds(T0) ->
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond) / 1.0e6.

median(Samples) ->
    lists:nth(max(1, length(Samples) div 2 + length(Samples) rem 2), lists:sort(Samples)).

spread(Values) ->
    Sorted = lists:sort(Values),
    fmt("~.2f / ~.2f / ~.2f", [hd(Sorted), median(Sorted), lists:last(Sorted)]).

rates(Values) ->
    Sorted = lists:sort(Values),
    fmt("~s / ~s / ~s", [rate(hd(Sorted)), rate(median(Sorted)), rate(lists:last(Sorted))]).

rate(V) when V >= 1.0e6 -> fmt("~.2fM", [V / 1.0e6]);
rate(V) -> fmt("~wk", [round(V / 1000)]).

fmt(Format, Args) ->
    lists:flatten(io_lib:format(Format, Args)).
