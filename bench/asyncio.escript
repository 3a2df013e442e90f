#!/usr/bin/env escript
%%! -noshell
%% ErlangEventLoop against the standard library's asyncio loop on the same work (issue 9):
%% bench/asyncio_bench.py runs each measure on a fresh loop of each kind, alternating, 5
%% times, in the embedded interpreter. bench/run.escript runs this in a VM of its own and
%% puts its table into bench/RESULTS.md.
%%
%% Usage: escript bench/asyncio.escript [Out.md]
-mode(compile).

-define(RUNS, 5).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    Bench = unicode:characters_to_binary(filename:join(Root, "bench")),
    ok = py:exec(<<"import sys\nif '", Bench/binary, "' not in sys.path: sys.path.insert(0, '",
                   Bench/binary, "')\n">>),
    {ok, R} = py:call(asyncio_bench, run_all, [?RUNS], #{}, 600000),
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(report(R))),
    halt(0).

report(R) ->
    Rows = [row("timers fired per second (2000 sleeps of 1-20 ms at once)", higher,
                get(R, <<"timers">>)),
            row("sleep lateness µs, median (300 sleeps of 1-5 ms)", lower,
                [{K, [M * 1.0 || {M, _} <- V]} || {K, V} <- get(R, <<"lateness">>)]),
            row("sleep lateness µs, p99", lower,
                [{K, [P * 1.0 || {_, P} <- V]} || {K, V} <- get(R, <<"lateness">>)]),
            row("echo round trips per second (one connection, 64 bytes)", higher,
                get(R, <<"round_trips">>)),
            row("echo throughput MB/s (50 connections x 800 KB)", higher,
                get(R, <<"throughput">>)),
            row("CPU ms of the loop's thread over 1 s idle", lower,
                [{K, [V * 1000 || V <- Vs]} || {K, Vs} <- get(R, <<"idle">>)]),
            row("CPU ms of the whole VM over that second", lower,
                [{K, [V * 1000 || V <- Vs]} || {K, Vs} <- get(R, <<"idle_vm">>)])],
    NoLoop = [V * 1000 || V <- maps:get(<<"none">>, maps:get(<<"idle_vm">>, R))],
    ["Each figure: min / median / max of ", integer_to_list(?RUNS), " runs, each on a fresh "
     "loop, the two kinds alternating in one VM. The last column is the median of ours against "
     "the standard library's, turned so that above 1 means ours does better.\n\n",
     "| Measure | stdlib loop | ErlangEventLoop | ours ÷ stdlib (better > 1) |\n",
     "| --- | --- | --- | --- |\n",
     Rows,
     "\nBaseline of the last row: CPU ms of the whole VM over a second of plain `time.sleep(1)`, "
     "no loop at all: ", spread(NoLoop), " (each VM figure includes reading /proc twice).\n"].

get(R, Key) ->
    M = maps:get(Key, R),
    [{stdlib, maps:get(<<"stdlib">>, M)}, {erlang, maps:get(<<"erlang">>, M)}].

row(Label, Better, [{stdlib, Std}, {erlang, Ours}]) ->
    S = median(Std), O = median(Ours),
    Ratio = case Better of
                higher -> O / max(S, 1.0e-9);
                lower -> S / max(O, 1.0e-9)
            end,
    ["| ", Label, " | ", spread(Std), " | ", spread(Ours), " | ", fmt("~.2f", [Ratio]), " |\n"].

spread(Values) ->
    Sorted = lists:sort(Values),
    fmt("~s / ~s / ~s", [num(hd(Sorted)), num(median(Sorted)), num(lists:last(Sorted))]).

median(List) ->
    lists:nth(length(List) div 2 + 1, lists:sort(List)).

num(V) when V >= 100 -> integer_to_list(round(V));
num(V) when V >= 10 -> fmt("~.1f", [V * 1.0]);
num(V) -> fmt("~.2f", [V * 1.0]).

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).
