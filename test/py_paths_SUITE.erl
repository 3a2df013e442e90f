%% The user's own Python code (README, "Your own Python code"): py:add_path/1 at run time
%% and the application env `python_path' at start put directories at the front of sys.path,
%% each a path or {priv, App, SubDir}; bad entries are clear errors.
-module(py_paths_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [add_path_makes_modules_importable, add_path_puts_each_directory_once,
     add_path_of_a_priv_directory, add_path_refuses_bad_entries,
     python_path_env_is_applied_at_start, bad_python_path_env_fails_the_start].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc A module in a directory added with py:add_path/1 imports.
add_path_makes_modules_importable(Config) ->
    Dir = module_dir(Config, "importable", "paths_mod_a", <<"def answer():\n    return 42\n">>),
    ?assertMatch({error, {'ModuleNotFoundError', _, _}}, py:call(paths_mod_a, answer, [])),
    ?assertEqual(ok, py:add_path(Dir)),
    ?assertEqual({ok, 42}, py:call(paths_mod_a, answer, [])),
    {ok, [First | _]} = py:sys_path(),
    ?assertEqual(unicode:characters_to_binary(Dir), First).

%% @doc Adding a directory again leaves sys.path as it is; a binary works as a string does.
add_path_puts_each_directory_once(Config) ->
    Dir = module_dir(Config, "once", "paths_mod_b", <<"X = 1\n">>),
    ok = py:add_path(Dir),
    {ok, Before} = py:sys_path(),
    ?assertEqual(ok, py:add_path(unicode:characters_to_binary(Dir))),
    ?assertEqual({ok, Before}, py:sys_path()).

%% @doc {priv, App, SubDir} names a directory in an application's priv dir.
add_path_of_a_priv_directory(_Config) ->
    ?assertEqual(ok, py:add_path({priv, erlang_python, "python"})),
    Expected = unicode:characters_to_binary(filename:join(code:priv_dir(erlang_python), "python")),
    {ok, Path} = py:sys_path(),
    ?assert(lists:member(Expected, Path)).

%% @doc Each bad entry has its own error, and changes nothing.
add_path_refuses_bad_entries(Config) ->
    {ok, Before} = py:sys_path(),
    Missing = filename:join(?config(priv_dir, Config), "no_such_dir"),
    ?assertEqual({error, {not_a_directory, unicode:characters_to_binary(Missing)}},
                 py:add_path(Missing)),
    File = filename:join(?config(priv_dir, Config), "a_file"),
    ok = file:write_file(File, <<>>),
    ?assertMatch({error, {not_a_directory, _}}, py:add_path(File)),
    ?assertEqual({error, {no_priv_dir, no_such_app}}, py:add_path({priv, no_such_app, "py"})),
    ?assertEqual({error, {badarg, {path, 42}}}, py:add_path(42)),
    ?assertEqual({error, {badarg, {path, {priv, "app", "x"}}}}, py:add_path({priv, "app", "x"})),
    ?assertEqual({error, {badarg, {path, [{not_a, path}]}}}, py:add_path([{not_a, path}])),
    ?assertEqual({ok, Before}, py:sys_path()).

%% @doc In a fresh VM, the env's directories come first in sys.path, in their order, and
%% their modules import.
python_path_env_is_applied_at_start(Config) ->
    DirA = module_dir(Config, "env_a", "paths_env_a", <<"def which():\n    return 'a'\n">>),
    DirB = module_dir(Config, "env_b", "paths_env_b", <<"def which():\n    return 'b'\n">>),
    {ok, Peer, _} = py_test_peer:start(#{env => [{python_path, [DirA, DirB, {priv, erlang_python, "python"}]}]}),
    try
        {ok, [First, Second | _]} = py_test_peer:call(Peer, py, sys_path, []),
        ?assertEqual([unicode:characters_to_binary(DirA), unicode:characters_to_binary(DirB)],
                     [First, Second]),
        ?assertEqual({ok, <<"b">>}, py_test_peer:call(Peer, py, call, [paths_env_b, which, []]))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc A python_path env that names no directory makes application:start fail, naming it.
bad_python_path_env_fails_the_start(Config) ->
    Missing = filename:join(?config(priv_dir, Config), "missing"),
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{python_path, [Missing]}]}),
    try
        Result = py_test_peer:call(Peer, application, start, [erlang_python]),
        ?assertMatch({error, {{bad_env, python_path, {Missing, {not_a_directory, _}}}, _}}, Result),
        ok = py_test_peer:call(Peer, application, set_env, [erlang_python, python_path, not_a_list]),
        ?assertMatch({error, {{bad_env, python_path, not_a_list}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python]))
    after
        py_test_peer:stop(Peer)
    end.

%% Internal

module_dir(Config, Name, Module, Source) ->
    Dir = filename:join(?config(priv_dir, Config), Name),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    ok = file:write_file(filename:join(Dir, Module ++ ".py"), Source),
    Dir.
