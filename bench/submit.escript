#!/usr/bin/env escript
%%! -noshell
%% What a large payload costs the other processes of the caller's scheduler: the largest
%% lateness of 1 ms timers in a probe pinned to the caller's scheduler, while the caller
%% makes a py:call with a 100 MiB list (6,553,600 small integers), against the same list
%% sent to another Erlang process (a message copy, which does not yield either). The
%% py:call's copy runs on a dirty scheduler (docs/runtime.md). A VM of its own;
%% bench/run.escript puts its table into bench/RESULTS.md.
-mode(compile).

-define(ELEMENTS, 6553600).
-define(RUNS, 5).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"def count(xs):\n    return len(xs)\n">>),
    Call = fun(Big) -> {ok, ?ELEMENTS} = py:call('__main__', count, [Big], #{}, 120000) end,
    Send = fun(Big) ->
        Sink = spawn(fun() -> receive {From, L} -> From ! {got, length(L)} end end),
        Sink ! {self(), Big},
        receive {got, ?ELEMENTS} -> ok end
    end,
    Rows = [row("py:call with a 100 MiB list", Call),
            row("the same list sent to an Erlang process (baseline)", Send)],
    Table = table(["Operation, on the caller's scheduler",
                   "largest 1 ms timer lateness, ms (min / median / max of 5 runs)",
                   "operation took ms (median)"], Rows),
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Table)),
    halt(0).

row(Label, Op) ->
    Runs = [run(Op) || _ <- lists:seq(1, ?RUNS)],
    Lates = lists:sort([L || {L, _} <- Runs]),
    Took = lists:nth(3, lists:sort([T || {_, T} <- Runs])),
    [Label, fmt("~b / ~b / ~b", [hd(Lates), lists:nth(3, Lates), lists:last(Lates)]),
     integer_to_list(Took)].

%% The caller and the probe both on scheduler 1; the list is built before the probe starts.
run(Op) ->
    Self = self(),
    Caller = spawn_opt(fun() ->
        Big = lists:duplicate(?ELEMENTS, 1),
        erlang:garbage_collect(),
        Self ! {built, self()},
        receive go -> ok end,
        T0 = erlang:monotonic_time(millisecond),
        Op(Big),
        Self ! {done, erlang:monotonic_time(millisecond) - T0}
    end, [{scheduler, 1}]),
    receive {built, Caller} -> ok end,
    Probe = spawn_opt(fun() -> probe(0) end, [{scheduler, 1}]),
    timer:sleep(20),
    Caller ! go,
    Took = receive {done, T} -> T end,
    Probe ! {stop, self()},
    Late = receive {max_late, M} -> M end,
    {Late, Took}.

probe(Max) ->
    Start = erlang:monotonic_time(microsecond),
    receive
        {stop, From} -> From ! {max_late, Max}
    after 1 ->
        probe(max(Max, (erlang:monotonic_time(microsecond) - Start - 1000) div 1000))
    end.

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

table(Head, Rows) ->
    Line = fun(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"] end,
    [Line(Head), Line(["---" || _ <- Head]), [Line(R) || R <- Rows]].
