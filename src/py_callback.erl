%% @private Runs a function that Python called through erlang.call and hands
%% the result back to the waiting Python thread.
%%
%% While the function runs, the process dictionary names the waiting thread,
%% so that a py:call made by the function is routed to that thread (which
%% serves it while it waits) rather than to the pool, where it could wait
%% forever for a worker held by the very call that made it.
-module(py_callback).

-export([run/3, reply/2, waiter/0, error_reply/3]).

-define(WAITER_KEY, '$erlang_python_waiter').

-spec run(py_nif:waiter(), binary() | atom(), [term()]) -> ok.
run(Waiter, Name, Args) ->
    Reply =
        case py_function_registry:lookup(name_binary(Name)) of
            {ok, Target} -> invoke(Waiter, Target, Args);
            error -> {error, unknown_function}
        end,
    _ = py_nif:callback_reply(Waiter, Reply),
    ok.

%% @doc The reply for a call of the function registered as Name that no Python thread waits
%% on (erlang.async_call): `{ok, Result}' or what error_reply/3 makes.
-spec reply(binary() | atom(), [term()]) -> tuple().
reply(Name, Args) ->
    case py_function_registry:lookup(name_binary(Name)) of
        {ok, Target} ->
            try
                {ok, apply_target(Target, Args)}
            catch
                Class:Reason:Stack -> error_reply(Class, Reason, Stack)
            end;
        error ->
            {error, unknown_function}
    end.

%% @doc The Python thread that the running callback belongs to, if any.
-spec waiter() -> py_nif:waiter() | undefined.
waiter() ->
    get(?WAITER_KEY).

-spec invoke(py_nif:waiter(), py_function_registry:target(), [term()]) -> tuple().
invoke(Waiter, Target, Args) ->
    Previous = put(?WAITER_KEY, Waiter),
    try
        {ok, apply_target(Target, Args)}
    catch
        Class:Reason:Stack -> error_reply(Class, Reason, Stack)
    after
        restore(Previous)
    end.

-spec apply_target(py_function_registry:target(), [term()]) -> term().
apply_target({Module, Function}, Args) ->
    Module:Function(Args);
apply_target(Fun, Args) ->
    Fun(Args).

-spec restore(py_nif:waiter() | undefined) -> term().
restore(undefined) -> erase(?WAITER_KEY);
restore(Previous) -> put(?WAITER_KEY, Previous).

%% @doc The reply that raises erlang.ErlangException in Python.
-spec error_reply(error | throw | exit, term(), list()) -> tuple().
error_reply(Class, Reason, Stack) ->
    {error, Class, Reason, format(Reason), format(Stack)}.

%% Python sends a str as a binary, an erlang.Atom as an atom.
-spec name_binary(binary() | atom()) -> binary().
name_binary(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
name_binary(Name) -> Name.

-spec format(term()) -> binary().
format(Term) ->
    unicode:characters_to_binary(io_lib:format("~0tP", [Term, 50])).
