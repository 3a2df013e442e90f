%% Other nodes (docs/distribution.md): py:call works through erpc on a node that runs the
%% application, Erlang functions registered there are called back from its Python, and
%% pids and references cross nodes as they are. Two peer nodes (OS processes of their own,
%% with distribution): `client' calls, `server' runs Python. epmd, if this suite started it,
%% is stopped at the end.
-module(py_distribution_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [erpc_call_runs_python_on_the_other_node, python_calls_back_a_function_registered_there,
     pids_and_references_cross_nodes, python_errors_cross_as_values,
     node_pool_spreads_calls_and_survives_a_node_down].

init_per_suite(Config) ->
    EpmdWasRunning = epmd_running(),
    Paths = [Dir || Dir <- code:get_path(), string:find(Dir, "_build") =/= nomatch],
    Suffix = integer_to_list(erlang:unique_integer([positive])),
    {ok, Server, ServerNode} = peer:start(#{name => "py_dist_server_" ++ Suffix,
                                                 connection => standard_io,
                                                 args => ["-pa" | Paths]}),
    {ok, Client, _} = peer:start(#{name => "py_dist_client_" ++ Suffix,
                                        connection => standard_io, args => ["-pa" | Paths]}),
    {ok, _} = peer:call(Server, application, ensure_all_started, [erlang_python]),
    [{server, Server}, {server_node, ServerNode}, {client, Client},
     {epmd_was_running, EpmdWasRunning} | Config].

end_per_suite(Config) ->
    [catch peer:stop(?config(P, Config)) || P <- [client, server]],
    case ?config(epmd_was_running, Config) of
        true -> ok;
        false -> os:cmd("epmd -kill")
    end,
    ok.

%% @doc From the client node, erpc:call(Server, py, call, ...) runs Python on the server
%% (the erpc process there has the client's group leader, another node's pid, where the
%% call's Python output goes).
erpc_call_runs_python_on_the_other_node(Config) ->
    ?assertEqual({ok, 4.0}, on_client(Config, py, call, [math, sqrt, [16]])),
    {ok, ServerPid} = on_client(Config, py, eval, [<<"__import__('os').getpid()">>]),
    ?assertEqual(list_to_integer(peer:call(?config(server, Config), os, getpid, [])), ServerPid).

%% @doc A function registered on the server (by the client, through erpc) is what the
%% server's Python calls.
python_calls_back_a_function_registered_there(Config) ->
    ok = on_client(Config, py, register_function, [dist_sum, lists, sum]),
    ?assertEqual({ok, 6}, on_client(Config, py, eval, [<<"__import__('erlang').dist_sum(1, 2, 3)">>])).

%% @doc A pid and a reference from the client go through the server's Python and come back
%% the same; erlang.self() there is the erpc process on the server.
pids_and_references_cross_nodes(Config) ->
    Client = ?config(client, Config),
    {Pid, Ref, Back, Self} =
        peer:call(Client, erlang, apply,
                  [fun() ->
                       P = self(), R = make_ref(),
                       {ok, B} = erpc:call(?config(server_node, Config), py, eval,
                                           [<<"x">>, #{x => {P, R}}]),
                       {ok, S} = erpc:call(?config(server_node, Config), py, eval,
                                           [<<"__import__('erlang').self()">>]),
                       {P, R, B, S}
                   end, []]),
    ?assertEqual({Pid, Ref}, Back),
    ?assertEqual(?config(server_node, Config), node(Self)).

%% @doc A Python exception on the server is the client's {error, ...} value, not an exit.
python_errors_cross_as_values(Config) ->
    ?assertMatch({error, {'ZeroDivisionError', _, _}}, on_client(Config, py, eval, [<<"1 / 0">>])),
    ?assertEqual({error, {badarg, {timeout, -1}}}, on_client(Config, py, eval, [<<"1">>, #{}, -1])).

%% @doc A pool of nodes (docs/pools.md): the client's calls with `#{pool => Name}' are
%% spread over the servers, and a node that goes down fails its call in flight with {nodedown, Node} while the pool goes on
%% with the other.
node_pool_spreads_calls_and_survives_a_node_down(Config) ->
    Paths = [Dir || Dir <- code:get_path(), string:find(Dir, "_build") =/= nomatch],
    Suffix = integer_to_list(erlang:unique_integer([positive])),
    {ok, Second, SecondNode} = peer:start(#{name => "py_dist_second_" ++ Suffix,
                                            connection => standard_io, args => ["-pa" | Paths]}),
    try
        {ok, _} = peer:call(Second, application, ensure_all_started, [erlang_python]),
        Client = ?config(client, Config),
        First = ?config(server_node, Config),
        Nodes = [First, SecondNode],
        Result = peer:call(Client, erlang, apply, [fun() -> node_pool_client(Nodes) end, []],
                           60000),
        ?assertMatch({ok, _}, Result),
        {ok, #{pids := Pids, in_flight := InFlight}} = Result,
        ?assertEqual(2, length(lists:usort(Pids))),
        ?assertEqual(1, length([R || R <- InFlight, R =:= {error, {nodedown, SecondNode}}]))
    after
        catch peer:stop(Second)
    end.

%% Runs on the client node.
node_pool_client([First, Second] = Nodes) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    [true = net_kernel:connect_node(N) || N <- Nodes],
    {ok, _} = py:start_pool(remote, #{nodes => Nodes}),
    Pool = #{pool => remote},
    Pids = [begin
                {ok, P} = py:eval(<<"__import__('os').getpid()">>, #{}, Pool),
                P
            end || _ <- lists:seq(1, 4)],
    %% Objects stay in one interpreter: no handles from a pool of nodes.
    {error, {badarg, {option, {return, object}}}} =
        py:eval(<<"[1, 2]">>, #{}, Pool#{return => object}),
    %% Two long calls, one on each server; the second server goes down.
    Refs = [begin
                {ok, R} = py:async_call(time, sleep, [20], #{}, Pool#{timeout => 30000}),
                R
            end || _ <- [1, 2]],
    timer:sleep(300),
    Self = self(),
    spawn(fun() -> Self ! {halted, catch erpc:call(Second, erlang, halt, [], 1000)} end),
    receive {halted, _} -> ok end,
    InFlight = [py:await(R, 1000) || R <- Refs],
    %% The pool goes on with the first server.
    After = [py:eval(<<"__import__('os').getpid()">>, #{}, Pool) || _ <- lists:seq(1, 4)],
    [{ok, _}] = lists:usort([{ok, P} || {ok, P} <- After] ++ [E || {error, _} = E <- After]),
    _ = First,
    ok = py:stop_pool(remote),
    {ok, #{pids => Pids, in_flight => InFlight}}.

%% Internal

on_client(Config, M, F, A) ->
    Node = ?config(server_node, Config),
    peer:call(?config(client, Config), erpc, call, [Node, M, F, A]).

epmd_running() ->
    case os:cmd("epmd -names") of
        "epmd: up and running" ++ _ -> true;
        _ -> false
    end.
