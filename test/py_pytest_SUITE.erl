%% @doc The pytest suites of python_tests/ pass inside the embedded interpreter.
%%
%% Boots erlang_python (the interpreter is the one named by ERLANG_PYTHON, the test venv under
%% `make test', where pytest is installed), puts python_tests/ and test/ on sys.path and runs
%% test/pytest_runner.py, which calls pytest.main() on a worker thread, prints pytest's report
%% on the VM's stdout and writes its counts to _build/test/pytest-summary.txt for
%% scripts/summarize.py. Extra pytest arguments: the environment variable PYTEST_ADDOPTS.
-module(py_pytest_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([pytest/0, pytest/1]).

%% pytest.main() over every suite, numpy and Hypothesis included, can take minutes.
-define(PYTEST_TIMEOUT, 600000).

-spec suite() -> [tuple()].
suite() ->
    [{timetrap, {seconds, ?PYTEST_TIMEOUT div 1000 + 60}}].

-spec all() -> [atom()].
all() ->
    [pytest].

-spec init_per_suite(list()) -> list().
init_per_suite(Config) ->
    Root = project_root(),
    {ok, Started} = application:ensure_all_started(erlang_python),
    ok = py_test_functions:register_all(),
    Paths = [filename:join(Root, "python_tests"), filename:join(Root, "test")],
    ok = py:exec([<<"import sys\n">>,
                  [[<<"if ">>, Lit, <<" not in sys.path: sys.path.insert(0, ">>, Lit, <<")\n">>]
                   || Lit <- [py_str(P) || P <- Paths]]]),
    [{root, Root}, {started, Started} | Config].

-spec end_per_suite(list()) -> ok.
end_per_suite(Config) ->
    lists:foreach(fun application:stop/1, lists:reverse(?config(started, Config))).

-spec pytest() -> [tuple()].
pytest() ->
    [{doc, "Every pytest test in python_tests/ passes inside the embedded interpreter; "
           "pytest collecting nothing fails unless python_tests/ has no test file."}].

-spec pytest(list()) -> ok | {skip, string()}.
pytest(Config) ->
    Root = ?config(root, Config),
    TestsDir = filename:join(Root, "python_tests"),
    Summary = filename:join([Root, "_build", "test", "pytest-summary.txt"]),
    case py:eval(<<"__import__('importlib.util').util.find_spec('pytest') is not None">>) of
        {ok, true} -> ok;
        Other -> ct:fail({pytest_not_importable, Other,
                          "run through `make test`, or set ERLANG_PYTHON to a Python with pytest"})
    end,
    Args = [unicode:characters_to_binary(TestsDir), unicode:characters_to_binary(Summary)],
    case py:call(pytest_runner, run, Args, #{}, ?PYTEST_TIMEOUT) of
        {ok, #{<<"exitstatus">> := 0} = Counts} ->
            ct:comment("~ts", [format_counts(Counts)]);
        {ok, #{<<"exitstatus">> := 5, <<"expected">> := <<"no">>}} ->
            {skip, "python_tests/ has no test files"};
        {ok, #{<<"exitstatus">> := Status} = Counts} ->
            ct:fail({pytest_failed, Status, format_counts(Counts)});
        {error, Reason} ->
            ct:fail({pytest_crashed, Reason})
    end.

%% Internal

%% The checkout holding python_tests/: up from this module's source, which rebar3 may have
%% copied under _build/test/lib/erlang_python/test.
-spec project_root() -> file:filename().
project_root() ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    project_root(filename:dirname(filename:absname(Source))).

-spec project_root(file:filename()) -> file:filename().
project_root("/") ->
    ct:fail("no python_tests/ and rebar.config above this suite's source");
project_root(Dir) ->
    case filelib:is_dir(filename:join(Dir, "python_tests"))
         andalso filelib:is_regular(filename:join(Dir, "rebar.config")) of
        true -> Dir;
        false -> project_root(filename:dirname(Dir))
    end.

%% A Python string literal of a path.
-spec py_str(file:filename()) -> binary().
py_str(Path) ->
    Escaped = string:replace(string:replace(Path, "\\", "\\\\", all), "'", "\\'", all),
    unicode:characters_to_binary(["'", Escaped, "'"]).

-spec format_counts(map()) -> string().
format_counts(Counts) ->
    lists:flatten(io_lib:format("pytest: ~p passed, ~p failed, ~p errors, ~p skipped",
                                [maps:get(K, Counts, 0)
                                 || K <- [<<"passed">>, <<"failed">>, <<"errors">>,
                                          <<"skipped">>]])).
