#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%% A short tour of erlang_python: `make demo' (which builds first and sets ERLANG_PYTHON to the
%% test venv's Python), or `escript scripts/demo.escript' after `rebar3 compile'.
-mode(compile).

-spec main([string()]) -> no_return().
main(_Args) ->
    ok = io:setopts([{encoding, unicode}]),
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
    section("Calling Python"),
    show("py:call(math, sqrt, [16])", py:call(math, sqrt, [16])),
    show("py:call('os.path', join, [<<\"/tmp\">>, <<\"demo\">>])",
         py:call('os.path', join, [<<"/tmp">>, <<"demo">>])),
    show("py:call(json, dumps, [#{<<\"a\">> => [1,2,3]}], #{sort_keys => true})",
         py:call(json, dumps, [#{<<"a">> => [1, 2, 3]}], #{sort_keys => true})),
    ok = py:exec(<<"def describe(x):\n    return (type(x).__name__, x)\n">>),
    show("py:exec(<<\"def describe(x): ...\">>), then py:eval(<<\"describe(6 * 7)\">>)",
         py:eval(<<"describe(6 * 7)">>)),

    section("Conversion, both ways"),
    Values = [1 bsl 200, 2.5, hello, <<"héllo"/utf8>>, <<255, 0>>, {bytes, <<"raw">>},
              [1, {2, 3}], #{key => value}, self(), undefined],
    [show(io_lib:format("describe(~tp)", [V]), py:call('__main__', describe, [V]))
     || V <- Values],
    show("py:eval(<<\"(float('nan'), float('inf'), 2 ** 70)\">>)",
         py:eval(<<"(float('nan'), float('inf'), 2 ** 70)">>)),

    section("Errors are values"),
    show("py:eval(<<\"1/0\">>)", py:eval(<<"1/0">>)),
    show("py:call(no_such_module, f, [])", py:call(no_such_module, f, [])),
    show("py:exec(<<\"import sys; sys.exit(3)\">>)", py:exec(<<"import sys; sys.exit(3)">>)),
    show("py:call(math, sqrt, not_a_list)", py:call(math, sqrt, not_a_list)),
    Start = erlang:monotonic_time(millisecond),
    Timeout = py:eval(<<"while True: pass">>, #{}, 100),
    show(io_lib:format("py:eval(<<\"while True: pass\">>, #{}, 100)  (~b ms)",
                       [erlang:monotonic_time(millisecond) - Start]), Timeout),
    show("py:eval(<<\"1 + 1\">>)  (right after: the loop was interrupted)",
         py:eval(<<"1 + 1">>)),

    section("Python calling Erlang"),
    ok = py:register_function(erlang_time, fun([]) -> erlang:system_time(second) end),
    ok = py:register_function(double_via_python, fun([X]) ->
        {ok, Y} = py:call('__main__', describe, [X]), element(2, Y) * 2 end),
    show("py:eval(<<\"__import__('erlang').erlang_time() > 0\">>)",
         py:eval(<<"__import__('erlang').erlang_time() > 0">>)),
    show("py:eval(<<\"__import__('erlang').call('double_via_python', 21)\">>)  (nested)",
         py:eval(<<"__import__('erlang').call('double_via_python', 21)">>)),

    section("The sandbox"),
    show("py:exec(<<\"import subprocess; subprocess.run(['ls'])\">>)",
         py:exec(<<"import subprocess; subprocess.run(['ls'])">>)),
    show("py:eval(<<\"__import__('_erlang_impl._sandbox', fromlist=['x']).is_sandboxed()\">>)",
         py:eval(<<"__import__('_erlang_impl._sandbox', fromlist=['x']).is_sandboxed()">>)),

    section("The same job through the port helpers (registered at start; docs/ports.md)"),
    ok = py:exec(<<"from erlang import run_shell, run, start_worker\n">>),
    show("py:eval(<<\"str(run_shell('ls -d /usr /tmp; exit 3'))\">>)",
         py:eval(<<"str(run_shell('ls -d /usr /tmp; exit 3'))">>)),
    show("py:eval(<<\"run_shell('ls -d /usr /tmp; exit 3').returncode\">>)",
         py:eval(<<"run_shell('ls -d /usr /tmp; exit 3').returncode">>)),
    show("r = run(['sh', '-c', 'echo out; echo err >&2; exit 2']): "
         "(r.returncode, r.stdout, r.stderr)",
         py:eval(<<"(lambda r: (r.returncode, r.stdout, r.stderr))"
                   "(run(['sh', '-c', 'echo out; echo err >&2; exit 2']))">>)),
    show("py:eval(<<\"run(['printf', '%s|', 'a;b', '$(id)'], timeout=5).stdout\">>)  (no shell)",
         py:eval(<<"run(['printf', '%s|', 'a;b', '$(id)'], timeout=5).stdout">>)),
    show("py:eval(<<\"run_shell('sleep 10', timeout=0.2)\">>)",
         py:eval(<<"run_shell('sleep 10', timeout=0.2)">>)),
    ok = py:exec(<<"w = start_worker(['cat'], text=True)\nw.write('ping\\n')\n">>),
    show("w = start_worker(['cat'], text=True); w.write('ping\\n'); w.readline(timeout=5)",
         py:eval(<<"w.readline(timeout=5)">>)),
    show("w.close_stdin(); w.wait(timeout=5)",
         py:eval(<<"(w.close_stdin(), w.wait(timeout=5))[1]">>)),
    ok = py:exec(<<"w.close()">>),
    ok.

-spec section(string()) -> ok.
section(Title) ->
    io:format("== ~ts ==~n~n", [Title]).

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
