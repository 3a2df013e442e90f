%% @private The manager of one named pool (py_pool). For `mode => process': starts its
%% workers (py_process_worker), queues the calls that found no idle worker and hands them
%% out, passes cancellations on, and replaces workers that exit (a crash, a kill,
%% max_calls). For a pool of nodes: watches which of its nodes are up, for py_pool to spread
%% calls over them.
%%
%% A process pool's workers each have a slot in an atomics array (py_pool_slots.hrl), and
%% the pids in an ETS table by slot: a caller claims an idle worker with a
%% compare-and-exchange and sends it the call itself, so that a small call does not wait on
%% this process (docs/pools.md). Only a call that finds every worker busy comes here; the
%% last element of the array counts those queued. This process claims idle workers for the
%% queue as callers do, and a worker that goes idle while the count is not zero keeps its
%% slot and comes for the first queued call (worker_free).
-module(py_pool_manager).
-behaviour(gen_server).

-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% How long after a failed start a worker is tried again.
-define(RESTART_DELAY_MS, 1000).
%% How often a node pool tries to connect to its nodes that are down.
-define(RECONNECT_MS, 1000).

-include("py_pool_slots.hrl").

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
    Slots = atomics:new(?QUEUED(Size), [{signed, false}]),
    [atomics:put(Slots, Slot, ?NO_WORKER) || Slot <- lists:seq(1, Size)],
    Table = ets:new(py_pool_workers, [set, protected, {read_concurrency, true}]),
    Pool = #{mode => process, manager => self(), slots => Slots, size => Size,
             workers => Table},
    S0 = #{name => Name, mode => process, options => Options, pool => Pool, slot_of => #{},
           busy => #{}, queue => queue:new()},
    S = lists:foldl(fun start_worker/2, S0, lists:seq(1, Size)),
    Workers = maps:keys(maps:get(slot_of, S)),
    case await_started(Workers, Timeout + 1000) of
        ok ->
            [ready(W, Slot, Pool) || {W, Slot} <- maps:to_list(maps:get(slot_of, S))],
            persistent_term:put({py_pool, Name}, Pool),
            {ok, S};
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
    %% Counted before a worker is looked for: a worker that goes idle meanwhile either is
    %% claimed here or sees the count and says so (py_process_worker, done/1).
    #{queue := Queue, pool := #{slots := Slots, size := Size}} = S,
    atomics:add(Slots, ?QUEUED(Size), 1),
    {noreply, hand_out(S#{queue := queue:in({Alias, Request}, Queue)})};
handle_info({py_pool_cancel, Alias}, #{mode := process, queue := Queue, busy := Busy} = S) ->
    case [W || {W, A} <- maps:to_list(Busy), A =:= Alias] of
        [Worker] ->
            Worker ! {py_pool_cancel, Alias},
            {noreply, S};
        [] ->
            Left = queue:filter(fun({A, _}) -> A =/= Alias end, Queue),
            #{pool := #{slots := Slots, size := Size}} = S,
            atomics:sub(Slots, ?QUEUED(Size), queue:len(Queue) - queue:len(Left)),
            {noreply, S#{queue := Left}}
    end;
handle_info({worker_free, Worker}, #{mode := process, slot_of := SlotOf} = S) ->
    %% A worker that went idle while calls were queued, its slot claimed for them.
    case maps:find(Worker, SlotOf) of
        {ok, Slot} -> {noreply, give(Worker, Slot, S)};
        error -> {noreply, S}
    end;
handle_info({worker_started, Worker}, #{mode := process, slot_of := SlotOf, pool := Pool} = S) ->
    case maps:find(Worker, SlotOf) of
        {ok, Slot} -> ready(Worker, Slot, Pool);
        error -> ok
    end,
    {noreply, hand_out(S)};
handle_info({'EXIT', Worker, Reason}, #{mode := process, slot_of := SlotOf, busy := Busy} = S)
  when is_map_key(Worker, SlotOf) ->
    %% The worker answered its callers itself before it exited; replace it (later, if it
    %% could not start: a Python that fails at once must not be restarted in a loop).
    #{pool := #{slots := Slots}} = S,
    Slot = maps:get(Worker, SlotOf),
    atomics:put(Slots, Slot, ?NO_WORKER),
    S1 = S#{slot_of := maps:remove(Worker, SlotOf), busy := maps:remove(Worker, Busy)},
    _ = case maps:find(Worker, Busy) of
            {ok, Alias} when Reason =/= normal ->
                %% In case it could not (it answers before it exits when it can): the
                %% caller's alias drops a second answer, or one for a call that is over.
                Alias ! {Alias, {error, {worker_exit, Reason}}};
            _ ->
                ok
        end,
    case Reason of
        {start_failed, _} ->
            erlang:send_after(?RESTART_DELAY_MS, self(), {start_worker, Slot}),
            {noreply, S1};
        _ ->
            {noreply, start_worker(Slot, S1)}
    end;
handle_info({start_worker, Slot}, #{mode := process} = S) ->
    {noreply, start_worker(Slot, S)};
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
terminate(Reason, #{mode := process, name := Name, slot_of := SlotOf}) ->
    _ = persistent_term:erase({py_pool, Name}),
    %% Each worker kills its Python process group on its manager's exit.
    [exit(W, Reason) || W <- maps:keys(SlotOf)],
    ok.

%% ---------------------------------------------------------------------------

%% Hands queued calls to the workers it can claim, as callers claim them (py_pool).
hand_out(#{queue := Queue, pool := Pool} = S) ->
    #{slots := Slots, size := Size, workers := Table} = Pool,
    case queue:is_empty(Queue) of
        true ->
            S;
        false ->
            case py_pool:claim(Slots, Size) of
                {ok, Slot} ->
                    [{Slot, Worker}] = ets:lookup(Table, Slot),
                    hand_out(give(Worker, Slot, S));
                none ->
                    S
            end
    end.

%% The first queued call whose caller lives, to Worker, whose slot is claimed already; the
%% slot is freed if none is left.
give(Worker, Slot, #{queue := Queue, busy := Busy, pool := Pool} = S) ->
    #{slots := Slots, size := Size} = Pool,
    case queue:out(Queue) of
        {empty, _} ->
            atomics:put(Slots, Slot, ?IDLE),
            S;
        {{value, {Alias, Request}}, Rest} ->
            atomics:sub(Slots, ?QUEUED(Size), 1),
            case py_pool:caller_gone(element(7, Request)) of
                true ->
                    give(Worker, Slot, S#{queue := Rest});
                false ->
                    Worker ! setelement(1, Request, run),
                    S#{queue := Rest, busy := Busy#{Worker => Alias}}
            end
    end.

%% A worker for Slot; if it cannot start, tried again later. Its slot is filled when it
%% says it started (ready/3).
start_worker(Slot, #{name := Name, options := Options, pool := Pool, slot_of := SlotOf} = S) ->
    #{slots := Slots, size := Size} = Pool,
    Worker = py_process_worker:start_link(Name, self(), Options#{slot => {Slots, Slot, Size}}),
    S#{slot_of := SlotOf#{Worker => Slot}}.

%% A worker that started, in its slot for callers to claim. Until then the table holds the
%% worker it replaces, if any: a caller that claimed that one as it died finds it dead and
%% tries again (py_pool), never a worker still starting.
ready(Worker, Slot, #{slots := Slots, workers := Table}) ->
    true = ets:insert(Table, {Slot, Worker}),
    atomics:put(Slots, Slot, ?IDLE).

publish_up(#{nodes := Nodes, up_key := Key}) ->
    Up = [N || N <- Nodes, N =:= node() orelse lists:member(N, nodes())],
    persistent_term:put(Key, Up).
