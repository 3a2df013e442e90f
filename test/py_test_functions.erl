%% @doc The Erlang functions that the pytest suites of python_tests/ call through `erlang'
%% (Python cannot register Erlang functions itself). test/py_pytest_SUITE.erl calls
%% register_all/0 before it runs pytest. Every name starts with `pt_'.
-module(py_test_functions).

-export([register_all/0]).

-define(MAILBOX, py_test_mailbox).

%% @doc Registers every function, and starts the process registered as `py_test_mailbox'
%% (once), which keeps what Python sends it for `pt_mailbox_take'.
-spec register_all() -> ok.
register_all() ->
    ok = start_mailbox(),
    Functions = [
        %% Its one argument, unchanged: conversion round trips.
        {pt_ident, fun([X]) -> X end},
        {pt_add, fun lists:sum/1},
        %% Its arguments as it got them: keyword arguments arrive as a trailing map.
        {pt_args, fun(Args) -> Args end},
        %% The Erlang type of its argument, as an atom.
        {pt_type, fun([X]) -> type_of(X) end},
        {pt_error, fun([Reason]) -> error(Reason) end},
        {pt_throw, fun([Reason]) -> throw(Reason) end},
        {pt_exit, fun([Reason]) -> exit(Reason) end},
        {pt_sleep, fun([Ms]) -> timer:sleep(Ms), Ms end},
        %% A nested py:call: Python -> Erlang -> Python.
        {pt_py_call, fun([M, F, Args]) ->
            {ok, Value} = py:call(M, F, Args),
            Value
        end},
        {pt_self, fun([]) -> self() end},
        %% Event loop mailboxes (test_event_loop.py): Erlang sends each of Msgs to Pid, from a
        %% process of its own, Ms after the call returned.
        {pt_send_later, fun([Pid, Msgs, Ms]) ->
            _ = spawn(fun() -> timer:sleep(Ms), [Pid ! M || M <- Msgs] end),
            ok
        end},
        %% Whether a process is alive (a mailbox's, after it was closed).
        {pt_is_alive, fun([Pid]) -> is_process_alive(Pid) end},
        {pt_mailbox_pid, fun([]) -> whereis(?MAILBOX) end},
        %% The first N messages the mailbox got, oldest first (waits up to 5 s for them).
        {pt_mailbox_take, fun([N]) -> mailbox_take(N) end},
        %% Port helpers (test_ports.py): the spec's own run_shell replacing the built-in,
        %% and putting the built-in back.
        {pt_shell_override, fun([]) ->
            py:register_function(run_shell, fun([Cmd]) -> <<"custom: ", Cmd/binary>> end)
        end},
        {pt_shell_restore, fun([]) -> py:register_function(run_shell, py_port_helpers, run_shell) end},
        %% Bytes a worker process holds: its heap and the binaries it refers to.
        {pt_worker_memory, fun([Worker]) ->
            {memory, Heap} = process_info(Worker, memory),
            {binary, Bins} = process_info(Worker, binary),
            Heap + lists:sum([Size || {_, Size, _} <- Bins])
        end},
        %% The spec's pattern: Erlang opens a port and hands it to Python...
        {pt_open_port, fun([]) -> open_port({spawn, "cat"}, [binary]) end},
        %% ...which hands it back: still a live port, which this closes.
        {pt_port_back, fun([Port]) -> {is_port(Port), port_close(Port)} end}
    ],
    lists:foreach(fun({Name, Fun}) -> ok = py:register_function(Name, Fun) end, Functions).

-spec type_of(term()) -> atom().
type_of(X) when is_atom(X) -> atom;
type_of(X) when is_binary(X) -> binary;
type_of(X) when is_integer(X) -> integer;
type_of(X) when is_float(X) -> float;
type_of(X) when is_list(X) -> list;
type_of(X) when is_tuple(X) -> tuple;
type_of(X) when is_map(X) -> map;
type_of(X) when is_pid(X) -> pid;
type_of(X) when is_reference(X) -> reference;
type_of(X) when is_port(X) -> port;
type_of(X) when is_function(X) -> function.

-spec start_mailbox() -> ok.
start_mailbox() ->
    case whereis(?MAILBOX) of
        undefined ->
            %% Not linked: it outlives the CT process that starts it.
            Pid = spawn(fun() -> mailbox([]) end),
            true = register(?MAILBOX, Pid),
            ok;
        _ ->
            ok
    end.

-spec mailbox([term()]) -> no_return().
mailbox(Got) ->
    receive
        {'$take', From, Tag, N} when length(Got) >= N ->
            {Taken, Rest} = lists:split(N, lists:reverse(Got)),
            From ! {Tag, Taken},
            mailbox(lists:reverse(Rest));
        Message when not (is_tuple(Message) andalso tuple_size(Message) =:= 4
                          andalso element(1, Message) =:= '$take') ->
            mailbox([Message | Got])
    end.

-spec mailbox_take(non_neg_integer()) -> [term()].
mailbox_take(N) ->
    Tag = make_ref(),
    ?MAILBOX ! {'$take', self(), Tag, N},
    receive
        {Tag, Messages} -> Messages
    after 5000 ->
        error({mailbox_timeout, N})
    end.
