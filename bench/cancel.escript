#!/usr/bin/env escript
%%! -noshell
%% How long the pool takes to recover from calls whose code swallows every cancellation:
%% 10 such calls (`while True: try: time.sleep(5) except BaseException: pass`, in a C call
%% most of the time, where no interruption reaches it), each with a 100 ms timeout, made at
%% once in a pool of 8 workers with the default give_up_after (1000 ms); then small calls
%% until one returns. A VM of its own (the swallowing threads never end):
%% bench/run.escript runs it and puts its table into bench/RESULTS.md.
-mode(compile).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"import time\n"
                   "def swallow():\n"
                   "    while True:\n"
                   "        try:\n"
                   "            time.sleep(5)\n"
                   "        except BaseException:\n"
                   "            pass\n">>),
    Parent = self(),
    T0 = erlang:monotonic_time(),
    [spawn_link(fun() -> Parent ! {swallowed, py:call('__main__', swallow, [], #{}, 100)} end)
     || _ <- lists:seq(1, 10)],
    Results = [receive {swallowed, R} -> R end || _ <- lists:seq(1, 10)],
    Cancelled = ms(T0),
    {Attempts, Recovered} = first_answer(T0, 1),
    #{given_up := GivenUp, workers := Workers, give_up_after := After} = py:info(),
    Rows = [["10 swallowing calls, 100 ms timeout each, 8 workers, give_up_after "
             ++ integer_to_list(After) ++ " ms",
             fmt("~b of 10 timed out", [length([R || {error, timeout} = R <- Results])]),
             integer_to_list(round(Cancelled)), integer_to_list(round(Recovered)), integer_to_list(Attempts),
             fmt("~b given up, ~b workers", [GivenUp, Workers])]],
    Table = table(["Scenario", "results", "all timed out after ms",
                   "first small call answered after ms", "small calls tried", "pool after"],
                  Rows),
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Table)),
    halt(0).

%% Small calls with a 50 ms timeout until one returns; ms since T0 when it did.
first_answer(T0, N) ->
    case py:call(math, sqrt, [4], #{}, 50) of
        {ok, 2.0} -> {N, ms(T0)};
        {error, timeout} -> first_answer(T0, N + 1)
    end.

ms(T0) -> erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond) / 1000.

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

table(Head, Rows) ->
    Line = fun(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"] end,
    [Line(Head), Line(["---" || _ <- Head]), [Line(R) || R <- Rows]].
