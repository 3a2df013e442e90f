%% @doc Named pools (docs/pools.md): Python in OS processes of its own (`mode => process'),
%% or on other Erlang nodes (`nodes => [Node]'), behind the same calls as the VM's own pool,
%% `default': `py:call(M, F, Args, Kwargs, #{pool => Name})'.
%%
%% Each pool is a py_pool_manager under py_pool_sup. Callers find it in a persistent_term
%% (pools change rarely, calls often) and talk to it by message; a process pool's manager
%% hands each call to an idle worker (py_process_worker), which answers the caller directly.
-module(py_pool).

-include("py_request_flags.hrl").
-include("py_pool_slots.hrl").

-export([start_pool/2, stop_pool/1, pools/0, request/6, take_atom_budget/1]).
-export([init_atom_budget/1, lookup/1, check_options/1, claim/2, caller_gone/1]).

-define(KEY(Name), {?MODULE, Name}).
-define(ATOMS, {?MODULE, atom_budget}).
%% How much longer than the call's own timeout a call on another node waits for its answer
%% before it gives up on that node.
-define(NODE_SLACK_MS, 2000).

-type name() :: atom().
-type options() :: #{mode => process, size => pos_integer(), python => file:filename_all(),
                     python_path => [py:path_entry()], memory_limit => pos_integer() | infinity,
                     cpu_limit => pos_integer() | infinity, max_calls => pos_integer() | infinity,
                     start_timeout => pos_integer(), give_up_after => non_neg_integer(),
                     init => py:code(), nodes => [node()]}.
-export_type([name/0, options/0]).

%% @doc Starts a pool under the application's supervisor. Options (docs/pools.md):
%% `mode => process' (the default) with `size', `python' (an executable or a venv's
%% directory), `python_path', `memory_limit' (bytes), `cpu_limit' (seconds of CPU per
%% call), `max_calls' (per worker, then it is replaced), `init' (Python code each worker
%% runs in its `__main__' before its first call), `start_timeout' (ms),
%% `give_up_after' (ms a cancelled call may run on before its worker is killed); or
%% `nodes => [Node]' for a pool of other nodes running the application.
-spec start_pool(name(), options()) -> {ok, pid()} | {error, term()}.
start_pool(default, _Options) ->
    {error, {badarg, {name, default}}};
start_pool(Name, Options) when is_atom(Name), is_map(Options) ->
    case check_options(Options) of
        {ok, Checked} ->
            Spec = #{id => Name, start => {py_pool_manager, start_link, [Name, Checked]},
                     shutdown => 10000},
            case whereis(py_pool_sup) of
                undefined ->
                    {error, not_started};
                _ ->
                    case supervisor:start_child(py_pool_sup, Spec) of
                        {error, {already_started, Pid}} -> {error, {already_started, Pid}};
                        {error, already_present} ->
                            _ = supervisor:delete_child(py_pool_sup, Name),
                            start_pool(Name, Options);
                        {error, {Reason, _Child}} -> {error, Reason};
                        Started -> Started
                    end
            end;
        {error, _} = Error ->
            Error
    end;
start_pool(Name, Options) when is_atom(Name) ->
    {error, {badarg, {options, Options}}};
start_pool(Name, _Options) ->
    {error, {badarg, {name, Name}}}.

%% @doc Stops a pool: its workers are killed, with whatever they run; calls in flight get
%% `{error, {pool_down, Name}}'.
-spec stop_pool(name()) -> ok | {error, not_found}.
stop_pool(Name) when is_atom(Name), Name =/= default ->
    case catch supervisor:terminate_child(py_pool_sup, Name) of
        ok ->
            _ = supervisor:delete_child(py_pool_sup, Name),
            _ = persistent_term:erase(?KEY(Name)),
            ok;
        _ ->
            {error, not_found}
    end;
stop_pool(_Name) ->
    {error, not_found}.

%% @doc The pools running: `default' and those started.
-spec pools() -> [name()].
pools() ->
    Started = case whereis(py_pool_sup) of
                  undefined -> [];
                  _ -> [Id || {Id, Pid, _, _} <- supervisor:which_children(py_pool_sup),
                              is_pid(Pid)]
              end,
    [default | lists:sort(Started)].

%% @private What callers need of a pool.
-spec lookup(name()) -> {ok, map()} | error.
lookup(Name) ->
    case persistent_term:get(?KEY(Name), undefined) of
        undefined -> error;
        Pool -> {ok, Pool}
    end.

%% @private A call of py on a pool other than `default'. Flags as py_nif:flags().
-spec request(name(), py_nif:kind(), term(), py:timeout_ms(), py_nif:flags(), map()) ->
    ok | {ok, term()} | {error, term()}.
request(Name, Kind, _Payload, _Timeout, _Flags, _Options)
  when Kind =/= call, Kind =/= eval, Kind =/= exec ->
    %% Objects live in one interpreter (docs/objects.md): a handle made in another OS
    %% process or node is not a resource here, nor there once it came back.
    {error, {unsupported, {Kind, Name}}};
request(_Name, _Kind, _Payload, _Timeout, Flags, _Options)
  when Flags band ?RETURN_OBJECT =/= 0 ->
    {error, {badarg, {option, {return, object}}}};
request(Name, Kind, Payload, Timeout, Flags, Options) ->
    case lookup(Name) of
        {ok, #{mode := process} = Pool} ->
            process_request(Name, Pool, Kind, Payload, Timeout, Flags);
        {ok, #{mode := nodes} = Pool} ->
            node_request(Name, Pool, Kind, Payload, Timeout, Options);
        error ->
            {error, {no_such_pool, Name}}
    end.

%% ---------------------------------------------------------------------------
%% Process pools

process_request(Name, Pool, Kind, Payload, Timeout, Flags) ->
    Detailed = Flags band ?DETAILED_ERRORS =/= 0,
    %% Inside a callback of this pool's worker, to that worker: it serves nested calls. Else
    %% to an idle worker claimed here, or to the manager's queue when all are busy.
    {To, Tag} = case get({py_pool_waiter, Name}) of
                    Worker when is_pid(Worker) -> {Worker, nested};
                    _ -> idle_worker(Pool)
                end,
    %% The answer comes to an alias of a monitor of the worker (or manager), which the
    %% answer itself removes (reply_demonitor): once the call is over the alias is gone, and
    %% a late answer is dropped, never left in the mailbox.
    Alias = erlang:monitor(process, To, [{alias, reply_demonitor}]),
    To ! {message_tag(Tag), Alias, Kind, Payload, Detailed, group_leader(), self()},
    receive
        {Alias, Result} ->
            Result;
        {'DOWN', Alias, process, _, noproc} when Tag =:= run ->
            %% A worker claimed as it died idle: the call never reached it. (Not a nested
            %% call's: its worker is the one that waits for it, and would be dead again.)
            process_request(Name, Pool, Kind, Payload, Timeout, Flags);
        {'DOWN', Alias, process, _, Reason} when Tag =/= py_pool_request ->
            %% A worker answers its calls before it exits; this is in case it could not.
            {error, {worker_exit, case Reason of
                                      {worker_exit, Why} -> Why;
                                      _ -> Reason
                                  end}};
        {'DOWN', Alias, process, _, _} ->
            {error, {pool_down, Name}}
    after Timeout ->
        To ! {py_pool_cancel, Alias},
        erlang:demonitor(Alias, [flush]),
        receive
            {Alias, Result} -> Result
        after 0 ->
            {error, timeout}
        end
    end.

message_tag(nested) -> run;
message_tag(Tag) -> Tag.

idle_worker(#{slots := Slots, size := Size, workers := Table, manager := Manager}) ->
    case claim(Slots, Size) of
        {ok, Slot} ->
            %% The table goes with its manager: a pool stopping now answers pool_down.
            case catch ets:lookup(Table, Slot) of
                [{Slot, Worker}] -> {Worker, run};
                _ -> {Manager, py_pool_request}
            end;
        none ->
            {Manager, py_pool_request}
    end.

%% @private Claims an idle worker's slot (py_pool_manager): the first idle one, so that
%% calls one after another keep going to a worker that is awake.
-spec claim(atomics:atomics_ref(), pos_integer()) -> {ok, pos_integer()} | none.
claim(Slots, Size) ->
    claim(Slots, 1, Size).

claim(_Slots, Slot, Size) when Slot > Size ->
    none;
claim(Slots, Slot, Size) ->
    case atomics:compare_exchange(Slots, Slot, ?IDLE, ?BUSY) of
        ok -> {ok, Slot};
        _ -> claim(Slots, Slot + 1, Size)
    end.

%% @private Whether the caller of a call that waited (in the manager's queue, or in a busy
%% worker) is gone: then nobody wants it run.
-spec caller_gone(pid()) -> boolean().
caller_gone(Caller) ->
    node(Caller) =:= node() andalso not is_process_alive(Caller).

%% ---------------------------------------------------------------------------
%% Node pools: each call on the next node that is up, through erpc.

node_request(Name, Pool, Kind, Payload, Timeout, Options) ->
    case pick_node(Pool) of
        {ok, Node} ->
            {Function, Args} = remote_call(Kind, Payload, Options),
            ErpcTimeout = case Timeout of
                              infinity -> infinity;
                              _ -> Timeout + ?NODE_SLACK_MS
                          end,
            try
                erpc:call(Node, py, Function, Args, ErpcTimeout)
            catch
                error:{erpc, noconnection} -> {error, {nodedown, Node}};
                error:{erpc, timeout} -> {error, timeout};
                error:{exception, undef, _} -> {error, {not_running_on, Node}};
                Class:Reason -> {error, {Class, Reason}}
            end;
        none ->
            {error, {no_nodes, Name}}
    end.

pick_node(#{up := Up, counter := Counter}) ->
    case persistent_term:get(Up, []) of
        [] ->
            none;
        Nodes ->
            Index = atomics:add_get(Counter, 1, 1),
            {ok, lists:nth(1 + Index rem length(Nodes), Nodes)}
    end.

remote_call(call, {M, F, A, K}, Options) -> {call, [M, F, A, K, Options]};
remote_call(eval, {Code, Locals}, Options) -> {eval, [Code, Locals, Options]};
remote_call(exec, Code, Options) -> {exec, [Code, Options]}.

%% ---------------------------------------------------------------------------
%% Options

%% @private
-spec check_options(map()) -> {ok, map()} | {error, term()}.
check_options(#{nodes := Nodes} = Options) ->
    case is_list(Nodes) andalso Nodes =/= [] andalso lists:all(fun is_atom/1, Nodes) of
        true ->
            case maps:keys(maps:without([nodes, mode], Options)) of
                [] -> {ok, #{mode => nodes, nodes => Nodes}};
                [Key | _] -> {error, {badarg, {option, {Key, maps:get(Key, Options)}}}}
            end;
        false ->
            {error, {badarg, {option, {nodes, Nodes}}}}
    end;
check_options(Options) ->
    Defaults = #{mode => process, size => erlang:system_info(schedulers_online),
                 python_path => [], memory_limit => infinity, cpu_limit => infinity,
                 max_calls => infinity, start_timeout => 10000, give_up_after => 1000},
    check(maps:to_list(Options), Defaults).

check([], Checked) ->
    case maps:is_key(python, Checked) of
        true -> {ok, Checked};
        false -> {ok, Checked#{python => default_python()}}
    end;
check([{Key, Value} | Rest], Checked) ->
    case check_option(Key, Value) of
        {ok, Clean} -> check(Rest, Checked#{Key => Clean});
        error -> {error, {badarg, {option, {Key, Value}}}}
    end.

check_option(mode, process) -> {ok, process};
check_option(size, N) when is_integer(N), N > 0, N =< 1024 -> {ok, N};
check_option(python, Path) when is_list(Path); is_binary(Path) -> python_executable(Path);
check_option(python_path, Dirs) when is_list(Dirs) ->
    Resolved = [py:resolve_path(Dir) || Dir <- Dirs],
    case [Dir || {ok, Dir} <- Resolved] of
        All when length(All) =:= length(Dirs) -> {ok, All};
        _ -> error
    end;
check_option(Limit, N) when Limit =:= memory_limit; Limit =:= cpu_limit; Limit =:= max_calls ->
    case N of
        infinity -> {ok, infinity};
        _ when is_integer(N), N > 0 -> {ok, N};
        _ -> error
    end;
check_option(init, Code) ->
    try unicode:characters_to_binary(Code) of
        Binary when is_binary(Binary) -> {ok, Binary};
        _ -> error
    catch
        error:_ -> error
    end;
check_option(start_timeout, N) when is_integer(N), N > 0 -> {ok, N};
check_option(give_up_after, N) when is_integer(N), N >= 0 -> {ok, N};
check_option(_, _) -> error.

%% An executable, or a venv's directory (its bin/python).
python_executable(Path) ->
    Name = unicode:characters_to_list(Path),
    Candidate = case filelib:is_dir(Name) of
                    true -> filename:join([Name, "bin", "python"]);
                    false -> Name
                end,
    case filelib:is_regular(Candidate) of
        true -> {ok, Candidate};
        false -> error
    end.

%% The VM's interpreter's executable: the same Python, venv included.
default_python() ->
    case py:executable() of
        {ok, Exe} when Exe =/= <<>> -> unicode:characters_to_list(Exe);
        _ -> os:find_executable("python3")
    end.

%% ---------------------------------------------------------------------------
%% Atoms made by workers' erlang.Atom values, against the application's atom_limit.

%% @private
-spec init_atom_budget(non_neg_integer()) -> ok.
init_atom_budget(Limit) ->
    case persistent_term:get(?ATOMS, undefined) of
        undefined -> persistent_term:put(?ATOMS, {atomics:new(1, []), Limit});
        _ -> ok
    end.

%% @private Whether N more atoms may be made (and then they are counted).
-spec take_atom_budget(non_neg_integer()) -> boolean().
take_atom_budget(N) ->
    case persistent_term:get(?ATOMS, undefined) of
        undefined ->
            false;
        {Counter, Limit} ->
            case atomics:add_get(Counter, 1, N) =< Limit of
                true -> true;
                false -> atomics:sub(Counter, 1, N), false
            end
    end.
