%% @private The port helpers: Erlang functions registered when the application starts, that
%% sandboxed Python calls in place of subprocess (docs/ports.md).
%%
%% Python's faces of them (erlang.run_shell, erlang.run, erlang.start_worker, and the
%% subprocess layer) live in priv/python/_erlang_impl/_ports.py. They call these functions
%% by their registered names, so a user who registers a `run_shell' of their own replaces
%% the built-in one for Python too. What these return is tagged `'$erlang_python'', so the
%% faces can tell a built-in answer from a user's function's.
%%
%% Each runs in the process that serves the callback (the py:call caller, or a process of
%% py_callback_dispatcher's): a one-shot command's port belongs to that process and dies
%% with it; a worker belongs to py_port_worker_sup.
-module(py_port_helpers).

-export([functions/0, run_shell/1, run/1, start_worker/1, worker/1]).

%% Default bound of the output that run_shell and run collect.
-define(MAX_OUTPUT, 67108864).
-define(TAG, '$erlang_python').

-type reply() :: {?TAG, ok, term()} | {?TAG, error, term()}.

%% @doc The names and targets registered at start (py_function_registry).
-spec functions() -> [{binary(), {module(), atom()}}].
functions() ->
    [{<<"run_shell">>, {?MODULE, run_shell}},
     {<<"run">>, {?MODULE, run}},
     {<<"start_worker">>, {?MODULE, start_worker}},
     {<<"erlang_python.worker">>, {?MODULE, worker}}].

%% @doc run_shell(Cmd[, Options]): `/bin/sh -c Cmd', stderr into stdout, no stdin.
-spec run_shell([term()]) -> reply().
run_shell([Cmd]) ->
    run_shell([Cmd, #{}]);
run_shell([Cmd, Options]) when is_binary(Cmd), is_map(Options) ->
    with_options(Options, [timeout, max_output, cwd, env], fun(Opts) ->
        Spec = maps:merge(maps:with([cwd, env], Opts),
                          #{stdin => null, stdout => pipe, stderr => stdout}),
        with_spec(Cmd, Spec, fun(Full) ->
            run_reply(py_exec:run(Full, run_options(Opts)), fun shell_result/1)
        end)
    end);
run_shell(Args) ->
    {?TAG, error, {badarg, {args, Args}}}.

%% @doc run(Argv[, Options]): no shell; stdout and stderr apart; `input' to stdin.
-spec run([term()]) -> reply().
run([Argv]) ->
    run([Argv, #{}]);
run([Argv, Options]) when is_list(Argv), is_map(Options) ->
    with_options(Options, [timeout, max_output, cwd, env, input], fun(Opts) ->
        Stdin = case maps:is_key(input, Opts) of true -> pipe; false -> null end,
        Spec = maps:merge(maps:with([cwd, env], Opts),
                          #{stdin => Stdin, stdout => pipe, stderr => pipe}),
        with_spec(Argv, Spec, fun(Full) ->
            run_reply(py_exec:run(Full, run_options(Opts)), fun run_result/1)
        end)
    end);
run(Args) ->
    {?TAG, error, {badarg, {args, Args}}}.

%% @doc start_worker(ArgvOrCmd[, Options]): a long-running command under
%% py_port_worker_sup. Options: cwd, env, stdin, stdout, stderr (pipe | null | inherit |
%% stdout), owner (a pid whose death stops it, or none), max_output.
-spec start_worker([term()]) -> reply().
start_worker([Command]) ->
    start_worker([Command, #{}]);
start_worker([Command, Options]) when is_map(Options) ->
    Keys = [cwd, env, stdin, stdout, stderr, owner, max_output],
    with_options(Options, Keys, fun(Opts) ->
        Spec = maps:with([cwd, env, stdin, stdout, stderr], Opts),
        with_spec(Command, Spec, fun(Full) -> start_worker(Full, Opts) end)
    end);
start_worker(Args) ->
    {?TAG, error, {badarg, {args, Args}}}.

-spec start_worker(py_exec:spec(), map()) -> reply().
start_worker(Spec, Opts) ->
    Owner = maps:get(owner, Opts, undefined),
    case py_port_worker:start(Spec, Owner, maps:with([max_output], Opts)) of
        {ok, Worker} ->
            {ok, Info} = py_port_worker:call(Worker, info),
            {?TAG, ok, Info#{worker => Worker}};
        {error, Reason} ->
            {?TAG, error, Reason}
    end.

%% @doc erlang_python.worker(Worker, Op, ...): the operations of a worker handle.
-spec worker([term()]) -> reply().
worker([Worker, Op | Args]) when is_pid(Worker) ->
    case worker_request(Op, Args) of
        {ok, Request} -> worker_reply(py_port_worker:call(Worker, Request));
        error -> {?TAG, error, {badarg, {worker_op, [Op | Args]}}}
    end;
worker(Args) ->
    {?TAG, error, {badarg, {args, Args}}}.

-spec worker_request(term(), [term()]) -> {ok, py_port_worker:request()} | error.
worker_request(<<"read">>, [Stream, Max, Timeout]) when is_integer(Max), Max > 0 ->
    case {stream(Stream), milliseconds(Timeout)} of
        {{ok, S}, {ok, T}} -> {ok, {read, S, Max, T}};
        _ -> error
    end;
worker_request(<<"write">>, [Data]) when is_binary(Data) ->
    {ok, {write, Data}};
worker_request(<<"close_stdin">>, []) ->
    {ok, close_stdin};
worker_request(<<"wait">>, [Timeout]) ->
    timed(wait, Timeout);
worker_request(<<"communicate">>, [Input, Timeout]) when Input =:= none; is_binary(Input) ->
    case milliseconds(Timeout) of
        {ok, T} -> {ok, {communicate, Input, T}};
        error -> error
    end;
worker_request(<<"poll">>, []) ->
    {ok, poll};
worker_request(<<"signal">>, [Signal, Group]) when is_integer(Signal), Signal > 0, Signal < 65,
                                                  is_boolean(Group) ->
    {ok, {signal, Signal, Group}};
worker_request(<<"close">>, []) ->
    {ok, close};
worker_request(_, _) ->
    error.

-spec timed(wait, term()) -> {ok, py_port_worker:request()} | error.
timed(Op, Timeout) ->
    case milliseconds(Timeout) of
        {ok, T} -> {ok, {Op, T}};
        error -> error
    end.

-spec stream(term()) -> {ok, stdout | stderr} | error.
stream(<<"stdout">>) -> {ok, stdout};
stream(<<"stderr">>) -> {ok, stderr};
stream(_) -> error.

-spec worker_reply(term()) -> reply().
worker_reply(ok) -> {?TAG, ok, none};
worker_reply({ok, Data}) when is_binary(Data) -> {?TAG, ok, {bytes, Data}};
worker_reply({ok, Value}) -> {?TAG, ok, Value};
worker_reply({ok, Out, Err, Status}) -> {?TAG, ok, {{bytes, Out}, {bytes, Err}, Status}};
worker_reply(eof) -> {?TAG, ok, eof};
worker_reply(timeout) -> {?TAG, error, timeout};
worker_reply({error, Reason}) -> {?TAG, error, Reason}.

%% ---------------------------------------------------------------------------

-spec run_reply({ok, py_exec:run_result()} | {error, term()},
                fun((py_exec:run_result()) -> map())) -> reply().
run_reply({ok, Result}, Format) ->
    {?TAG, ok, Format(Result)};
run_reply({error, {Why, Partial}}, Format) when Why =:= timeout; Why =:= output_limit ->
    {?TAG, error, {Why, Format(Partial)}};
run_reply({error, Reason}, _Format) ->
    {?TAG, error, Reason}.

-spec shell_result(py_exec:run_result()) -> map().
shell_result(#{returncode := Code, stdout := Out}) ->
    #{returncode => Code, output => {bytes, Out}}.

-spec run_result(py_exec:run_result()) -> map().
run_result(#{returncode := Code, stdout := Out, stderr := Err}) ->
    #{returncode => Code, stdout => {bytes, Out}, stderr => {bytes, Err}}.

-spec run_options(map()) -> map().
run_options(Opts) ->
    maps:merge(#{max_output => ?MAX_OUTPUT}, maps:with([timeout, max_output, input], Opts)).

%% Python's keyword arguments arrive as a map with binary keys; None means "not given".
-spec with_options(map(), [atom()], fun((map()) -> reply())) -> reply().
with_options(Options, Allowed, Run) ->
    Parse = fun(_, _, {error, _} = Error) -> Error;
               (Key, Value, {ok, Acc}) -> option(Key, Value, Allowed, Acc)
            end,
    case maps:fold(Parse, {ok, #{}}, Options) of
        {ok, Opts} -> Run(Opts);
        {error, Reason} -> {?TAG, error, Reason}
    end.

-spec option(term(), term(), [atom()], map()) -> {ok, map()} | {error, term()}.
option(Key, Value, Allowed, Acc) ->
    Name = case Key of
               K when is_atom(K) -> K;
               K when is_binary(K) -> known_key(K);
               _ -> undefined
           end,
    case lists:member(Name, Allowed) of
        false -> {error, {badarg, {option, Key}}};
        true when Value =:= none -> {ok, Acc};
        true ->
            case option_value(Name, Value) of
                {ok, V} -> {ok, Acc#{Name => V}};
                error -> {error, {badarg, {Name, Value}}}
            end
    end.

-spec known_key(binary()) -> atom().
known_key(Key) ->
    Known = [timeout, max_output, cwd, env, input, stdin, stdout, stderr, owner],
    case [K || K <- Known, atom_to_binary(K) =:= Key] of
        [Name] -> Name;
        [] -> undefined
    end.

-spec option_value(atom(), term()) -> {ok, term()} | error.
option_value(timeout, T) -> milliseconds(T);
option_value(max_output, N) when is_integer(N), N >= 0 -> {ok, N};
option_value(cwd, Dir) when is_binary(Dir) -> {ok, Dir};
option_value(env, Env) when is_map(Env) ->
    Pairs = maps:to_list(Env),
    case lists:all(fun({K, V}) -> is_binary(K) andalso is_binary(V) end, Pairs) of
        true -> {ok, lists:sort(Pairs)};
        false -> error
    end;
option_value(input, Data) when is_binary(Data) -> {ok, Data};
option_value(owner, Pid) when is_pid(Pid) -> {ok, Pid};
option_value(Stream, Where) when Stream =:= stdin; Stream =:= stdout; Stream =:= stderr ->
    Allowed = [<<"pipe">>, <<"null">>, <<"inherit">>, <<"stdout">>],
    case lists:member(Where, Allowed) of
        true -> {ok, binary_to_existing_atom(Where)};
        false -> error
    end;
option_value(_, _) ->
    error.

%% Seconds (Python's unit) as milliseconds; None is no limit.
-spec milliseconds(term()) -> {ok, timeout()} | error.
milliseconds(none) -> {ok, infinity};
milliseconds(T) when is_number(T), T >= 0, T < 4294967 -> {ok, round(T * 1000)};
milliseconds(_) -> error.

%% The command's spec (a command line or an argv list, checked by py_exec), handed to Then.
-spec with_spec(term(), map(), fun((py_exec:spec()) -> reply())) -> reply().
with_spec(Command, Spec, Then) ->
    case py_exec:command_spec(Command, Spec) of
        {ok, Full} -> Then(Full);
        {error, Reason} -> {?TAG, error, Reason}
    end.
