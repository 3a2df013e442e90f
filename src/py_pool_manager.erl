%% @private The manager of one named pool (py_pool). For `mode => process': starts its
%% workers (py_process_worker), hands each call to an idle one or queues it, passes
%% cancellations on, and replaces workers that exit (a crash, a kill, max_calls). For a pool
%% of nodes: watches which of its nodes are up, for py_pool to spread calls over them.
-module(py_pool_manager).
-behaviour(gen_server).

-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% How long after a failed start a worker is tried again.
-define(RESTART_DELAY_MS, 1000).
%% How often a node pool tries to connect to its nodes that are down.
-define(RECONNECT_MS, 1000).

-spec start_link(atom(), map()) -> {ok, pid()} | {error, term()}.
start_link(Name, Options) ->
    gen_server:start_link(?MODULE, {Name, Options}, []).

init({Name, #{mode := nodes, nodes := Nodes}}) ->
    ok = net_kernel:monitor_nodes(true),
    Up = {py_pool, {up, Name}},
    State = #{name => Name, mode => nodes, nodes => Nodes, up_key => Up},
    publish_up(State),
    persistent_term:put({py_pool, Name}, #{mode => nodes, up => Up,
                                           counter => atomics:new(1, [])}),
    erlang:send_after(?RECONNECT_MS, self(), reconnect),
    {ok, State};
init({Name, #{size := Size, start_timeout := Timeout} = Options}) ->
    process_flag(trap_exit, true),
    Workers = [py_process_worker:start_link(Name, self(), Options) || _ <- lists:seq(1, Size)],
    case await_started(Workers, Timeout + 1000) of
        ok ->
            persistent_term:put({py_pool, Name}, #{mode => process, manager => self()}),
            {ok, #{name => Name, mode => process, options => Options, idle => Workers,
                   busy => #{}, queue => queue:new(), cancelled => #{}}};
        {error, Reason} ->
            %% `shutdown', not `kill': a worker kills its Python process group on its way out.
            [exit(W, shutdown) || W <- Workers],
            {stop, {worker_start_failed, Reason}}
    end.

await_started([], _Timeout) ->
    ok;
await_started(Workers, Timeout) ->
    receive
        {worker_started, W} -> await_started(lists:delete(W, Workers), Timeout);
        {'EXIT', W, Reason} when is_pid(W) ->
            case lists:member(W, Workers) of
                true -> {error, start_reason(Reason)};
                false -> await_started(Workers, Timeout)
            end
    after Timeout ->
        {error, start_timeout}
    end.

start_reason({start_failed, Reason}) -> Reason;
start_reason(Reason) -> Reason.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% A process pool.
handle_info({py_pool_request, Alias, _, _, _, _, _} = Request, #{mode := process} = S) ->
    {noreply, dispatch(Alias, Request, S)};
handle_info({py_pool_cancel, Alias}, #{mode := process, queue := Queue, busy := Busy} = S) ->
    case [W || {W, A} <- maps:to_list(Busy), A =:= Alias] of
        [Worker] ->
            Worker ! {py_pool_cancel, Alias},
            {noreply, S};
        [] ->
            {noreply, S#{queue := queue:filter(fun({A, _}) -> A =/= Alias end, Queue)}}
    end;
handle_info({worker_idle, Worker}, #{mode := process} = S) ->
    {noreply, next(Worker, S#{busy := maps:remove(Worker, maps:get(busy, S))})};
handle_info({worker_started, Worker}, #{mode := process} = S) ->
    {noreply, next(Worker, S)};
handle_info({'EXIT', Worker, Reason}, #{mode := process, idle := Idle, busy := Busy} = S) ->
    %% The worker answered its callers itself before it exited; replace it (later, if it
    %% could not start: a Python that fails at once must not be restarted in a loop).
    S1 = S#{idle := lists:delete(Worker, Idle), busy := maps:remove(Worker, Busy)},
    _ = case maps:find(Worker, Busy) of
            {ok, Alias} when Reason =/= normal ->
                %% In case it could not (it answers before it exits when it can): the
                %% caller's alias drops a second answer.
                Alias ! {Alias, {error, {worker_exit, Reason}}};
            _ ->
                ok
        end,
    case Reason of
        {start_failed, _} ->
            erlang:send_after(?RESTART_DELAY_MS, self(), start_worker),
            {noreply, S1};
        _ ->
            {noreply, start_worker(S1)}
    end;
handle_info(start_worker, #{mode := process} = S) ->
    {noreply, start_worker(S)};
%% A node pool.
handle_info({Event, _Node}, #{mode := nodes} = S) when Event =:= nodeup; Event =:= nodedown ->
    publish_up(S),
    {noreply, S};
handle_info(reconnect, #{mode := nodes, nodes := Nodes} = S) ->
    [net_kernel:connect_node(N) || N <- Nodes, not lists:member(N, nodes()), N =/= node()],
    publish_up(S),
    erlang:send_after(?RECONNECT_MS, self(), reconnect),
    {noreply, S};
handle_info(_Other, S) ->
    {noreply, S}.

terminate(_Reason, #{mode := nodes, up_key := Up, name := Name}) ->
    _ = persistent_term:erase(Up),
    _ = persistent_term:erase({py_pool, Name}),
    ok;
terminate(Reason, #{mode := process, name := Name, idle := Idle, busy := Busy}) ->
    _ = persistent_term:erase({py_pool, Name}),
    %% Each worker kills its Python process group on its manager's exit.
    [exit(W, Reason) || W <- Idle ++ maps:keys(Busy)],
    ok.

%% ---------------------------------------------------------------------------

dispatch(Alias, Request, S) ->
    Caller = element(7, Request),
    case node(Caller) =:= node() andalso not is_process_alive(Caller) of
        true -> S;  % its caller died while it waited: nobody wants it
        false -> hand_out(Alias, Request, S)
    end.

hand_out(Alias, Request, #{idle := [Worker | Idle], busy := Busy} = S) ->
    Worker ! setelement(1, Request, run),
    S#{idle := Idle, busy := Busy#{Worker => Alias}};
hand_out(Alias, Request, #{idle := [], queue := Queue} = S) ->
    S#{queue := queue:in({Alias, Request}, Queue)}.

next(Worker, #{queue := Queue, idle := Idle} = S) ->
    case queue:out(Queue) of
        {{value, {Alias, Request}}, Rest} ->
            dispatch(Alias, Request, S#{queue := Rest, idle := [Worker | Idle]});
        {empty, _} ->
            S#{idle := [Worker | Idle]}
    end.

%% A replacement; if it cannot start, tried again later.
start_worker(#{name := Name, options := Options} = S) ->
    _ = py_process_worker:start_link(Name, self(), Options),
    S.

publish_up(#{nodes := Nodes, up_key := Key}) ->
    Up = [N || N <- Nodes, N =:= node() orelse lists:member(N, nodes())],
    persistent_term:put(Key, Up).
