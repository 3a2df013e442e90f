%% @private Starts the interpreter (once per OS process), then the supervisor.
-module(erlang_python_app).
-behaviour(application).

-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    case interpreter_options() of
        {ok, Options} ->
            case py_nif:start(Options) of
                Started when Started =:= ok; Started =:= already_started ->
                    %% SIGALRM's default action ends the VM, and Python code can
                    %% ask the kernel for one (signal.alarm, setitimer): let
                    %% erl_signal_server receive it instead.
                    ok = os:set_signal(sigalrm, handle),
                    start_steps([fun check_output_env/0, fun set_python_path/0,
                                 fun set_subprocess_mode/0, fun erlang_python_sup:start_link/0,
                                 fun install_output/0, fun install_logging/0,
                                 fun py_pool_sup:start_configured/0]);
                {error, Reason} ->
                    {error, {python_start_failed, Reason}}
            end;
        {error, _} = Error ->
            Error
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok.

%% Runs each step while they succeed; the supervisor's pid is the result.
-spec start_steps([fun(() -> ok | {ok, pid()} | {error, term()})]) ->
    {ok, pid()} | {error, term()}.
start_steps(Steps) ->
    start_steps(Steps, undefined).

start_steps([], Sup) ->
    {ok, Sup};
start_steps([Step | Rest], Sup) ->
    case Step() of
        ok -> start_steps(Rest, Sup);
        {ok, Pid} -> start_steps(Rest, Pid);
        {error, _} = Error -> stop_supervisor(Sup), Error
    end.

stop_supervisor(undefined) ->
    ok;
stop_supervisor(Sup) ->
    unlink(Sup),
    exit(Sup, shutdown).

%% The app envs `default_output' (logger | stdout) and `stderr' (group_leader | logger),
%% read by py_output.
-spec check_output_env() -> ok | {error, term()}.
check_output_env() ->
    case {application:get_env(erlang_python, default_output, logger),
          application:get_env(erlang_python, stderr, group_leader)} of
        {Default, _} when Default =/= logger, Default =/= stdout ->
            {error, {bad_env, default_output, Default}};
        {_, Stderr} when Stderr =/= group_leader, Stderr =/= logger ->
            {error, {bad_env, stderr, Stderr}};
        _ ->
            ok
    end.

%% Python's sys.stdout, sys.stderr and sys.stdin become Erlang's (docs/output.md).
-spec install_output() -> ok | {error, term()}.
install_output() ->
    case py:call('_erlang_impl._output', install, []) of
        {ok, none} -> ok;
        {error, Reason} -> {error, {output_install_failed, Reason}}
    end.

%% Python's logging into logger (app env `python_logging', default true; docs/output.md).
-spec install_logging() -> ok | {error, term()}.
install_logging() ->
    case application:get_env(erlang_python, python_logging, true) of
        true ->
            case py:call('_erlang_impl._logging', install, []) of
                {ok, none} ->
                    case py:sync_log_level() of
                        ok -> ok;
                        {error, Reason} -> {error, {logging_install_failed, Reason}}
                    end;
                {error, Reason} ->
                    {error, {logging_install_failed, Reason}}
            end;
        false ->
            _ = py:call('_erlang_impl._logging', uninstall, []),
            ok;
        Other ->
            {error, {bad_env, python_logging, Other}}
    end.

%% The app env `python_path': directories put at the front of sys.path, in order (the
%% first ends up first), each a path or {priv, App, SubDir}.
-spec set_python_path() -> ok | {error, term()}.
set_python_path() ->
    case application:get_env(erlang_python, python_path, []) of
        Entries when is_list(Entries) ->
            add_paths(lists:reverse(Entries));
        Other ->
            {error, {bad_env, python_path, Other}}
    end.

-spec add_paths([py:path_entry()]) -> ok | {error, term()}.
add_paths([]) ->
    ok;
add_paths([Entry | Rest]) ->
    case py:add_path(Entry) of
        ok -> add_paths(Rest);
        {error, Reason} -> {error, {bad_env, python_path, {Entry, Reason}}}
    end.

%% The app env `subprocess': `blocked' (the sandbox refuses it) or `ports' (the standard
%% subprocess module runs processes through the port helpers; docs/ports.md).
-spec set_subprocess_mode() -> ok | {error, term()}.
set_subprocess_mode() ->
    case application:get_env(erlang_python, subprocess, blocked) of
        Mode when Mode =:= blocked; Mode =:= ports ->
            case py:call('_erlang_impl.subprocess', '_set_mode', [Mode]) of
                {ok, _} -> ok;
                {error, Reason} -> {error, {subprocess_mode_failed, Reason}}
            end;
        Other ->
            {error, {bad_env, subprocess, Other}}
    end.

-spec interpreter_options() -> {ok, map()} | {error, term()}.
interpreter_options() ->
    Workers = application:get_env(erlang_python, workers, 8),
    AtomLimit = application:get_env(erlang_python, atom_limit, 10000),
    GiveUpAfter = application:get_env(erlang_python, give_up_after, 1000),
    MaxGivenUp = application:get_env(erlang_python, max_given_up, 64),
    PythonPath = filename:join(code:priv_dir(erlang_python), "python"),
    Base = #{python_path => unicode:characters_to_binary(PythonPath)},
    if
        not (is_integer(Workers) andalso Workers >= 1 andalso Workers =< 1024) ->
            {error, {bad_env, workers, Workers}};
        not (is_integer(AtomLimit) andalso AtomLimit >= 0) ->
            {error, {bad_env, atom_limit, AtomLimit}};
        not (is_integer(GiveUpAfter) andalso GiveUpAfter >= 0 andalso GiveUpAfter < 1 bsl 31) ->
            {error, {bad_env, give_up_after, GiveUpAfter}};
        not (is_integer(MaxGivenUp) andalso MaxGivenUp >= 0 andalso MaxGivenUp =< 4096) ->
            {error, {bad_env, max_given_up, MaxGivenUp}};
        true ->
            Options = Base#{workers => Workers, atom_limit => AtomLimit,
                            give_up_after => GiveUpAfter, max_given_up => MaxGivenUp},
            case python_executable() of
                undefined -> with_venv(Options, maps:get(default_python, py_nif:info()));
                {ok, Python} -> with_venv(Options#{python => Python}, Python);
                {error, _} = Error -> Error
            end
    end.

%% The app env `venv': the interpreter runs from that venv, made by Base when missing, its
%% requirements installed once (py_venv).
-spec with_venv(map(), binary()) -> {ok, map()} | {error, term()}.
with_venv(Options, Base) ->
    case application:get_env(erlang_python, venv, undefined) of
        undefined ->
            {ok, Options};
        Venv ->
            case py_venv:ensure(Venv, Base) of
                {ok, Python} -> {ok, Options#{python => Python}};
                {error, _} = Error -> Error
            end
    end.

%% The app env `python', else $ERLANG_PYTHON, else the NIF's build Python.
-spec python_executable() -> undefined | {ok, binary()} | {error, term()}.
python_executable() ->
    Configured =
        case application:get_env(erlang_python, python, undefined) of
            undefined ->
                case os:getenv("ERLANG_PYTHON") of
                    false -> undefined;
                    "" -> undefined;
                    Env -> Env
                end;
            Env ->
                Env
        end,
    case Configured of
        undefined ->
            undefined;
        Path when is_list(Path); is_binary(Path) ->
            Absolute = filename:absname(Path),
            case filelib:is_regular(Absolute) of
                true -> {ok, unicode:characters_to_binary(Absolute)};
                false -> {error, {python_not_found, Absolute}}
            end;
        Other ->
            {error, {bad_env, python, Other}}
    end.
