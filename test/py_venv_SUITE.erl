%% A venv made for you (README, "A venv made for you"): the application env `venv' creates
%% the venv when missing, through ports, installs its requirements once (a real package
%% from the package index), runs the interpreter from it, and fails the start with a clear
%% error when it cannot. Each case starts a fresh VM: the interpreter runs from the venv it
%% started with, for the life of its OS process.
-module(py_venv_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/file.hrl").

-compile([export_all, nowarn_export_all]).

-define(PACKAGE, "six==1.16.0").

all() ->
    [venv_is_made_and_used, requirements_are_installed_once, requirements_file_works,
     failed_install_fails_the_start, bad_venv_env_fails_the_start].

init_per_suite(Config) ->
    [{venv, filename:join(?config(priv_dir, Config), "venv")} | Config].

end_per_suite(_Config) ->
    ok.

%% @doc A missing venv is created, its requirement installed, and the interpreter runs in it.
venv_is_made_and_used(Config) ->
    Venv = ?config(venv, Config),
    ?assertNot(filelib:is_dir(Venv)),
    with_app(#{path => Venv, requirements => [?PACKAGE]}, fun(Peer) ->
        ?assertEqual({ok, {<<"1.16.0">>, unicode:characters_to_binary(Venv)}},
                     py_test_peer:call(Peer, py, eval,
                                       [<<"(__import__('six').__version__, __import__('sys').prefix)">>])),
        ?assertEqual({ok, unicode:characters_to_binary(filename:join([Venv, "bin", "python"]))},
                     py_test_peer:call(Peer, py, executable, []))
    end).

%% @doc The same env again: pip does not run (the stamp is left as it was).
requirements_are_installed_once(Config) ->
    Venv = ?config(venv, Config),
    Stamp = filename:join(Venv, ".erlang_python_requirements"),
    {ok, Before} = file:read_file_info(Stamp),
    timer:sleep(1100), % file times have a resolution of a second
    with_app(#{path => Venv, requirements => [?PACKAGE]}, fun(Peer) ->
        ?assertMatch({ok, _}, py_test_peer:call(Peer, py, eval, [<<"__import__('six')">>]))
    end),
    {ok, After} = file:read_file_info(Stamp),
    ?assertEqual(Before#file_info.mtime, After#file_info.mtime).

%% @doc Requirements may be a file, as for pip -r.
requirements_file_works(Config) ->
    File = filename:join(?config(priv_dir, Config), "requirements.txt"),
    ok = file:write_file(File, <<?PACKAGE, "\n">>),
    with_app(#{path => ?config(venv, Config), requirements => File}, fun(Peer) ->
        ?assertEqual({ok, <<"1.16.0">>},
                     py_test_peer:call(Peer, py, eval, [<<"__import__('six').__version__">>]))
    end).

%% @doc A requirement pip cannot install fails application:start, with pip's output.
failed_install_fails_the_start(Config) ->
    Venv = ?config(venv, Config),
    Env = #{path => Venv, requirements => ["erlang-python-no-such-package-xyz==0.0.1"]},
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{venv, Env}]}),
    try
        Result = py_test_peer:call(Peer, application, start, [erlang_python], 600000),
        ?assertMatch({error, {{venv_install_failed, _, 1, _}, _}}, Result),
        {error, {{venv_install_failed, _, _, Output}, _}} = Result,
        ?assertNotEqual(nomatch, binary:match(Output, <<"erlang-python-no-such-package-xyz">>))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc Env values of the wrong shape are named in the error.
bad_venv_env_fails_the_start(Config) ->
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{venv, "not a map"}]}),
    try
        ?assertMatch({error, {{bad_env, venv, "not a map"}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python])),
        ok = py_test_peer:call(Peer, application, set_env,
                               [erlang_python, venv, #{path => ?config(venv, Config), requirements => [foo]}]),
        ?assertMatch({error, {{bad_env, venv, {requirements, [foo]}}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python])),
        Missing = filename:join(?config(priv_dir, Config), "missing.txt"),
        ok = py_test_peer:call(Peer, application, set_env,
                               [erlang_python, venv, #{path => ?config(venv, Config), requirements => Missing}]),
        ?assertMatch({error, {{venv_requirements_unreadable, _, enoent}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python]))
    after
        py_test_peer:stop(Peer)
    end.

%% Internal

with_app(Venv, F) ->
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{venv, Venv}]}),
    try
        {ok, _} = py_test_peer:call(Peer, application, ensure_all_started, [erlang_python], 600000),
        F(Peer)
    after
        py_test_peer:stop(Peer)
    end.
