#!/usr/bin/env escript
%%! -noshell
%% A disabled logging.debug in the embedded interpreter against plain python3 (issue 10):
%% bench/logging_cost.py, 5 alternating runs of each. bench/run.escript runs this in a VM of
%% its own and puts its table into bench/RESULTS.md.
%%
%% Usage: escript bench/logging.escript [Out.md]
-mode(compile).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    Bench = unicode:characters_to_binary(filename:join(Root, "bench")),
    ok = py:exec(<<"import sys\nif '", Bench/binary, "' not in sys.path: sys.path.insert(0, '",
                   Bench/binary, "')\n">>),
    {ok, Python} = py:executable(),
    Script = filename:join([Root, "bench", "logging_cost.py"]),
    Runs = [{embedded(), plain(Python, Script)} || _ <- lists:seq(1, 5)],
    InVm = [V || {V, _} <- Runs],
    Plain = [P || {_, P} <- Runs],
    Report = ["Best of 5 x 200,000 calls of `log.debug(\"value %s\", 42)` below the root level, ns "
              "per call; min / median / max of 5 alternating runs.\n\n",
              "| Where | ns per disabled debug | ÷ plain python3 |\n| --- | --- | --- |\n",
              "| embedded (erlang_python's handler on the root logger) | ", spread(InVm), " | ",
              io_lib:format("~.2f", [median(InVm) / median(Plain)]), " |\n",
              "| plain `", Python, "` (baseline) | ", spread(Plain), " | 1 |\n"],
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Report)),
    halt(0).

embedded() ->
    {ok, Ns} = py:call(logging_cost, measure, []),
    Ns.

plain(Python, Script) ->
    Port = open_port({spawn_executable, Python}, [{args, [Script]}, binary, exit_status]),
    Out = collect(Port, <<>>),
    binary_to_float(string:trim(Out)).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, 0}} -> Acc
    end.

spread(Values) ->
    Sorted = lists:sort(Values),
    io_lib:format("~b / ~b / ~b", [round(hd(Sorted)), round(median(Sorted)), round(lists:last(Sorted))]).

median(List) ->
    lists:nth(length(List) div 2 + 1, lists:sort(List)).
