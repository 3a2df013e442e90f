%% The py API contract: call/eval/exec in every arity, names, code forms, the
%% shared __main__ namespace, interpreter information, and a defined error
%% for every kind of bad argument.
-module(py_api_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [call_with_atoms_and_binaries, call_dotted_module, call_dotted_function, call_kwargs,
     call_with_timeout, eval_expression, eval_locals, eval_locals_seen_by_comprehension,
     eval_statements_give_none, exec_defines_for_eval_and_call, code_as_string_and_iolist,
     code_with_unicode, version_executable_sys_path, bad_module_and_function_names,
     bad_args_and_kwargs, bad_code, bad_locals, bad_timeouts, register_function_bad_input,
     registry_survives_unexpected_messages, not_started_error].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc Module and function may be atoms or binaries.
call_with_atoms_and_binaries(_Config) ->
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16])),
    ?assertEqual({ok, 4.0}, py:call(<<"math">>, <<"sqrt">>, [16])),
    ?assertEqual({ok, 3}, py:call(builtins, len, [[1, 2, 3]])).

%% @doc Dotted module names import the submodule.
call_dotted_module(_Config) ->
    ?assertEqual({ok, <<"c">>}, py:call('os.path', basename, [<<"/a/b/c">>])),
    ?assertEqual({ok, <<"/a/b">>}, py:call(<<"os.path">>, dirname, [<<"/a/b/c">>])).

%% @doc A dotted function name walks attributes.
call_dotted_function(_Config) ->
    ?assertEqual({ok, <<"a/b">>}, py:call('os.path', 'sep.join', [[<<"a">>, <<"b">>]])),
    ?assertEqual({ok, 2024}, py:eval(<<"__import__('datetime').date(2024, 1, 2).year">>)).

%% @doc call/4 passes keyword arguments, keys as atoms or binaries.
call_kwargs(_Config) ->
    ?assertEqual({ok, <<"[1,2]">>},
                 py:call(json, dumps, [[1, 2]], #{separators => {<<",">>, <<":">>}})),
    ?assertEqual({ok, <<"{\n \"a\": 1\n}">>},
                 py:call(json, dumps, [#{<<"a">> => 1}], #{<<"indent">> => 1})).

%% @doc call/5 takes a timeout in milliseconds or infinity.
call_with_timeout(_Config) ->
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16], #{}, 1000)),
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16], #{}, infinity)),
    ?assertEqual({error, timeout}, py:call(time, sleep, [1], #{}, 50)),
    %% Longer than `receive ... after' accepts (2^32 - 1 ms).
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16], #{}, 1 bsl 40)).

%% @doc eval/1 evaluates an expression in __main__.
eval_expression(_Config) ->
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>)),
    ?assertEqual({ok, [0, 1, 4]}, py:eval(<<"[x * x for x in range(3)]">>)).

%% @doc eval/2 adds locals for this evaluation only.
eval_locals(_Config) ->
    ?assertEqual({ok, 30}, py:eval(<<"a * b">>, #{a => 5, <<"b">> => 6})),
    ?assertMatch({error, {'NameError', _, _}}, py:eval(<<"a">>)).

%% @doc Locals are visible inside comprehensions and lambdas too.
eval_locals_seen_by_comprehension(_Config) ->
    ?assertEqual({ok, [2, 4, 6]}, py:eval(<<"[x * k for x in xs]">>, #{xs => [1, 2, 3], k => 2})),
    ?assertEqual({ok, 6}, py:eval(<<"sum(x * k for x in range(3))">>, #{k => 2})).

%% @doc Statements given to eval run, and give none.
eval_statements_give_none(_Config) ->
    ?assertEqual({ok, none}, py:eval(<<"for i in range(3): pass">>)),
    ?assertMatch({error, {'SyntaxError', _, _}}, py:eval(<<"1 +">>)).

%% @doc What exec defines is seen by later eval and call('__main__', ...).
exec_defines_for_eval_and_call(_Config) ->
    ok = py:exec(<<"def triple(x):\n    return 3 * x\nCOUNT = 7\n">>),
    ?assertEqual({ok, 21}, py:call('__main__', triple, [7])),
    ?assertEqual({ok, 21}, py:call(<<"__main__">>, <<"triple">>, [7])),
    ?assertEqual({ok, 7}, py:eval(<<"COUNT">>)),
    ok = py:exec(<<"COUNT += 1">>, 1000),
    ?assertEqual({ok, 8}, py:eval(<<"COUNT">>)).

%% @doc Code may be a binary, a string or an iolist.
code_as_string_and_iolist(_Config) ->
    ?assertEqual({ok, 3}, py:eval("1 + 2")),
    ?assertEqual({ok, 3}, py:eval([<<"1">>, " + ", [$2]])),
    ok = py:exec(["X_FROM_IOLIST", <<" = ">>, "5"]),
    ?assertEqual({ok, 5}, py:eval(<<"X_FROM_IOLIST">>)).

%% @doc Unicode code and results survive both ways.
code_with_unicode(_Config) ->
    ?assertEqual({ok, <<"héllo wörld"/utf8>>}, py:eval(<<"'héllo ' + 'wörld'"/utf8>>)),
    ?assertEqual({ok, 5}, py:eval("len('héllo')")),
    ?assertEqual({ok, 2}, py:eval(<<"len('日本')"/utf8>>)).

%% @doc version/0, executable/0 and sys_path/0 describe the interpreter.
version_executable_sys_path(_Config) ->
    {ok, Version} = py:version(),
    ?assertMatch(<<"3.", _/binary>>, Version),
    {ok, Executable} = py:executable(),
    ?assert(filelib:is_regular(Executable)),
    case os:getenv("ERLANG_PYTHON") of
        false -> ok;
        "" -> ok;
        Configured -> ?assertEqual(unicode:characters_to_binary(Configured), Executable)
    end,
    {ok, Path} = py:sys_path(),
    PrivPython = unicode:characters_to_binary(
                   filename:join(code:priv_dir(erlang_python), "python")),
    ?assert(lists:member(PrivPython, Path)).

%% @doc Names that are not atoms or binaries are refused before Python runs.
bad_module_and_function_names(_Config) ->
    ?assertEqual({error, {badarg, {module, 42}}}, py:call(42, f, [])),
    ?assertEqual({error, {badarg, {module, <<>>}}}, py:call(<<>>, f, [])),
    ?assertEqual({error, {badarg, {function, "sqrt"}}}, py:call(math, "sqrt", [])),
    ?assertMatch({error, {'ModuleNotFoundError', _, _}}, py:call(no_such_module_xyz, f, [])),
    ?assertMatch({error, {'AttributeError', _, _}}, py:call(math, no_such_function, [])).

%% @doc Args must be a list and kwargs a map; Python checks their types.
bad_args_and_kwargs(_Config) ->
    ?assertEqual({error, {badarg, {args, 16}}}, py:call(math, sqrt, 16)),
    ?assertEqual({error, {badarg, {kwargs, [a]}}}, py:call(math, sqrt, [16], [a])),
    ?assertMatch({error, {'TypeError', _, _}}, py:call(math, sqrt, [<<"x">>])),
    ?assertMatch({error, {'TypeError', _, _}}, py:call(math, sqrt, [1, 2])),
    ?assertMatch({error, {'TypeError', _, _}}, py:call(math, sqrt, [[1 | 2]])),
    ?assertMatch({error, {'TypeError', _, _}}, py:call(math, sqrt, [16], #{1 => 2})).

%% @doc Code must be text; null bytes are refused.
bad_code(_Config) ->
    ?assertEqual({error, {badarg, {code, 42}}}, py:eval(42)),
    ?assertEqual({error, {badarg, {code, [foo]}}}, py:exec([foo])),
    ?assertEqual({error, {badarg, {code, <<255>>}}}, py:exec(<<255>>)),
    ?assertMatch({error, {'ValueError', _, _}}, py:eval(<<"1", 0, "2">>)).

%% @doc Locals must be a map with str-convertible keys.
bad_locals(_Config) ->
    ?assertEqual({error, {badarg, {locals, [x]}}}, py:eval(<<"x">>, [x])),
    ?assertMatch({error, {'TypeError', _, _}}, py:eval(<<"x">>, #{1 => 2})).

%% @doc Timeouts are non-negative integers or infinity.
bad_timeouts(_Config) ->
    ?assertEqual({error, {badarg, {timeout, -1}}}, py:call(math, sqrt, [4], #{}, -1)),
    ?assertEqual({error, {badarg, {timeout, 1.5}}}, py:eval(<<"1">>, #{}, 1.5)),
    ?assertEqual({error, {badarg, {timeout, forever}}}, py:exec(<<"1">>, forever)),
    ?assertEqual({error, timeout}, py:eval(<<"__import__('time').sleep(1)">>, #{}, 0)).

%% @doc register_function/2,3 and unregister_function/1 check their arguments.
register_function_bad_input(_Config) ->
    ?assertEqual({error, {badarg, {name, 42}}}, py:register_function(42, fun(_) -> ok end)),
    ?assertMatch({error, {badarg, {function, _}}}, py:register_function(f, fun() -> ok end)),
    ?assertEqual({error, {badarg, {function, nope}}}, py:register_function(f, nope)),
    ?assertEqual({error, {badarg, {module, "m"}}}, py:register_function(f, "m", g)),
    ?assertEqual({error, {badarg, {name, "f"}}}, py:unregister_function("f")),
    ?assertEqual(ok, py:unregister_function(never_registered)).

%% @doc Without the application the API answers {error, not_started}.
not_started_error(_Config) ->
    %% The interpreter lives for the OS process, so this needs a fresh VM.
    {ok, Peer, _} = py_test_peer:start(#{start_app => false}),
    try
        ?assertEqual({error, not_started}, py_test_peer:call(Peer, py, eval, [<<"1">>]))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc The function registry answers an unexpected call with an error and ignores
%% unexpected casts and messages: it does not crash, and no registration is lost.
registry_survives_unexpected_messages(_Config) ->
    ok = py:register_function(survivor, fun([X]) -> X + 1 end),
    Registry = whereis(py_function_registry),
    ?assertEqual({error, unknown_call}, gen_server:call(py_function_registry, bogus)),
    ok = gen_server:cast(py_function_registry, bogus),
    py_function_registry ! bogus,
    ?assertEqual({error, unknown_call}, gen_server:call(py_function_registry, {bogus, 1, 2})),
    ?assertEqual(Registry, whereis(py_function_registry)),
    ?assertEqual({ok, 42}, py:eval(<<"__import__('erlang').survivor(41)">>)),
    ok = py:unregister_function(survivor).
