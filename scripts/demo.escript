#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%% A short tour of erlang_python: `make demo' (which builds first and sets ERLANG_PYTHON to the
%% test venv's Python), or `escript scripts/demo.escript' after `rebar3 compile'.
-mode(compile).

-spec main([string()]) -> no_return().
main(_Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Ebin = filename:join([Root, "_build", "default", "lib", "erlang_python", "ebin"]),
    true = code:add_patha(Ebin),
    case application:ensure_all_started(erlang_python) of
        {ok, _} ->
            io:format("erlang_python started (ERLANG_PYTHON=~ts)~n~n",
                      [os:getenv("ERLANG_PYTHON", "unset: the build's Python")]),
            demo(),
            ok = application:stop(erlang_python),
            halt(0);
        {error, Reason} ->
            io:format(standard_error, "cannot start erlang_python: ~tp~n", [Reason]),
            halt(1)
    end.

-spec demo() -> ok.
demo() ->
    show("py:call(math, sqrt, [16])", py:call(math, sqrt, [16])),
    show("py:eval(<<\"1+2\">>)", py:eval(<<"1+2">>)),
    show("py:call(json, dumps, [#{<<\"a\">> => [1,2,3]}])",
         py:call(json, dumps, [#{<<"a">> => [1, 2, 3]}])),
    show("py:eval(<<\"1/0\">>)", py:eval(<<"1/0">>)).

-spec show(string(), term()) -> ok.
show(Call, {error, {Type, Message, Traceback}}) when is_binary(Message) ->
    io:format("~ts~n  -> {error, ~ts: ~ts}~n", [Call, text(Type), Message]),
    [io:format("     | ~ts~n", [Line])
     || is_binary(Traceback), Line <- string:split(string:trim(Traceback), "\n", all)],
    io:nl();
show(Call, Result) ->
    io:format("~ts~n  -> ~tp~n~n", [Call, Result]).

-spec text(term()) -> unicode:chardata().
text(Atom) when is_atom(Atom) -> atom_to_binary(Atom);
text(Bin) when is_binary(Bin) -> Bin;
text(Other) -> io_lib:format("~tp", [Other]).
