%% @private One worker of a pool in `mode => process' (docs/pools.md): the Erlang process that
%% owns a port to a Python of its own (priv/python/_erlang_impl/_process_worker.py, whose
%% header gives the frames). It runs one call at a time for its pool's manager
%% (py_pool_manager), and the calls nested in it: a callback of that call that calls py:call on
%% the same pool comes straight here, and the Python side serves it while it waits.
%%
%% A call's timeout or its caller's death cancels it: the Python side gets `{cancel, Id}' and
%% raises CallCancelled; if the call is still running `give_up_after' ms later, the whole
%% process group is killed and this process exits, and the manager starts a new worker. The
%% Python process's death (a segfault, os._exit, a limit) ends this process too, its caller
%% answered `{error, {worker_exit, Reason}}'.
-module(py_process_worker).

-export([start_link/3, init/4]).

-record(call, {alias :: reference(), caller :: pid(), monitor :: reference(),
               leader :: pid() | undefined, cancelled = false :: boolean()}).

-spec start_link(atom(), pid(), map()) -> pid().
start_link(Pool, Manager, Options) ->
    proc_lib:spawn_link(?MODULE, init, [Pool, Manager, Options, self()]).

%% Opens the port and waits for the worker's `ready'; tells the manager either way.
-spec init(atom(), pid(), map(), pid()) -> no_return().
init(Pool, Manager, Options, Manager) ->
    %% Its manager's end must kill the Python process group: one stuck in C never reads the
    %% port's end.
    process_flag(trap_exit, true),
    StartTimeout = maps:get(start_timeout, Options),
    Port = open(Options),
    receive
        {Port, {data, Frame}} ->
            case decode(Frame) of
                {ready, OsPid, _Version} ->
                    ok = run_init(Port, OsPid, Options),
                    Manager ! {worker_started, self()},
                    loop(#{pool => Pool, manager => Manager, port => Port, os_pid => OsPid,
                           options => Options, calls => 0, stack => [], runners => #{}});
                Other ->
                    exit({start_failed, {unexpected, Other}})
            end;
        {Port, {exit_status, Status}} ->
            exit({start_failed, exit_reason(Status)})
    after StartTimeout ->
        exit({start_failed, start_timeout})
    end.

%% The pool's `init' code, run in __main__ before the worker takes calls: what every worker
%% of the pool, and every replacement, must have defined.
run_init(Port, OsPid, #{init := Code, start_timeout := Timeout}) ->
    Id = make_ref(),
    true = port_command(Port, term_to_binary({run, Id, exec, term_to_binary(Code), true, self()})),
    receive
        {Port, {data, Frame}} ->
            case binary_to_term(Frame) of
                {result, Id, ok} ->
                    ok;
                {result, Id, {error, Reason}} ->
                    _ = os:cmd("kill -KILL -" ++ integer_to_list(OsPid)),
                    exit({start_failed, {init_failed, fix_error_reason(Reason)}});
                Other ->
                    exit({start_failed, {unexpected, Other}})
            end;
        {Port, {exit_status, Status}} ->
            exit({start_failed, exit_reason(Status)})
    after Timeout ->
        _ = os:cmd("kill -KILL -" ++ integer_to_list(OsPid)),
        exit({start_failed, start_timeout})
    end;
run_init(_Port, _OsPid, _Options) ->
    ok.

fix_error_reason(Reason) ->
    {error, Fixed} = fix_error({error, Reason}),
    Fixed.

open(Options) ->
    Python = maps:get(python, Options),

    PythonPath = lists:join(":", [filename:join(py_nif:priv_dir(), "python")
                                  | maps:get(python_path, Options)]),
    Env = [{"PYTHONPATH", unicode:characters_to_list(PythonPath)},
           {"PYTHONDONTWRITEBYTECODE", "1"},
           {"ERLANG_PYTHON_MEMORY_LIMIT", limit(maps:get(memory_limit, Options))},
           {"ERLANG_PYTHON_CPU_LIMIT", limit(maps:get(cpu_limit, Options))}],
    open_port({spawn_executable, Python},
              [{args, ["-u", "-c", "from _erlang_impl import _process_worker as w; w.start()"]},
               {env, Env}, {packet, 4}, binary, nouse_stdio,
               exit_status]).

limit(infinity) -> false;
limit(N) -> integer_to_list(N).

%% ---------------------------------------------------------------------------

loop(#{port := Port} = S) ->
    receive
        {Port, {data, Frame}} ->
            loop(frame(decode(Frame), S));
        {run, Alias, Kind, Payload, Detailed, Leader, Caller} ->
            loop(run(Alias, Kind, Payload, Detailed, Leader, Caller, S));
        {py_pool_cancel, Alias} ->
            loop(cancel(Alias, S));
        {'EXIT', Manager, Reason} when Manager =:= map_get(manager, S) ->
            stop(Reason, S);
        {'EXIT', _, _} ->
            loop(S);
        {'DOWN', Monitor, process, _, _} ->
            loop(down(Monitor, S));
        {kill, Alias} ->
            loop(kill(Alias, S));
        {Port, {exit_status, Status}} ->
            Reason = exit_reason(Status),
            reply_all(maps:get(stack, S), {error, {worker_exit, Reason}}),
            exit({worker_exit, Reason})
    end.

run(Alias, Kind, Payload, Detailed, Leader, Caller, #{port := Port, stack := Stack} = S) ->
    Frame = term_to_binary({run, Alias, Kind, term_to_binary(Payload), Detailed, Caller}),
    true = port_command(Port, Frame),
    Call = #call{alias = Alias, caller = Caller, monitor = erlang:monitor(process, Caller),
                 leader = Leader},
    S#{stack := [Call | Stack]}.

frame({result, Alias, Result}, #{stack := [#call{alias = Alias} = Call | Rest]} = S) ->
    ok = reply(Call, fix_error(Result)),
    true = erlang:demonitor(Call#call.monitor, [flush]),
    done(S#{stack := Rest});
frame({callback, Name, Args}, S) ->
    callback(Name, Args, S);
frame({send, Dest, Term}, S) ->
    _ = (catch erlang:send(Dest, Term)),
    S;
frame({output, Stream, Text}, #{stack := Stack} = S) ->
    Leader = case Stack of
                 [#call{leader = L} | _] -> L;
                 [] -> undefined
             end,
    _ = (catch py_output ! {Stream, Leader, Text}),
    S;
frame({atom_limit}, #{stack := Stack}) ->
    Error = {error, {'OverflowError', <<"atom limit reached: an erlang.Atom would create a new "
                                         "atom (limit set by the atom_limit application env)">>,
                     <<>>}},
    reply_all(Stack, Error),
    exit({worker_exit, atom_limit});
frame(Other, _S) ->
    exit({bad_frame, Other}).

%% The outermost call ended: this worker is free again, or done after max_calls.
done(#{stack := [_ | _]} = S) ->
    S;
done(#{calls := Calls, options := #{max_calls := Max}}) when Calls + 1 >= Max ->
    exit(normal);
done(#{calls := Calls, manager := Manager} = S) ->
    Manager ! {worker_idle, self()},
    S#{calls := Calls + 1}.

reply(#call{alias = Alias, cancelled = false}, Result) ->
    Alias ! {Alias, Result},
    ok;
reply(#call{}, _Result) ->
    ok.

%% Errors come with the class name as a binary: an atom where that atom exists, as the NIF
%% makes them (c_src/py_error.c), in causes and exception groups too.
fix_error({error, {Type, Message, Traceback}}) ->
    {error, {type(Type), Message, Traceback}};
fix_error({error, {Type, Message, Traceback, Info}}) ->
    {error, {type(Type), Message, Traceback, fix_info(Info)}};
fix_error(Result) ->
    Result.

fix_info(#{} = Info) ->
    maps:map(fun(cause, {T, M, I}) -> {type(T), M, fix_info(I)};
                (exceptions, List) when is_list(List) ->
                     [{type(T), M, fix_info(I)} || {T, M, I} <- List];
                (_, V) -> V
             end, Info).

type(Name) when is_binary(Name) ->
    try binary_to_existing_atom(Name, utf8)
    catch error:badarg -> Name
    end.

%% A callback runs in a process of its own, where a py:call on this pool comes back here.
callback(Name, Args, #{pool := Pool, runners := Runners} = S) ->
    Worker = self(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        put({py_pool_waiter, Pool}, Worker),
        Worker ! {callback_reply, self(), py_callback:reply(Name, Args)}
    end),
    wait_callback(Pid, Monitor, S#{runners := Runners#{Monitor => Pid}}).

%% The callback's reply, while serving what may come meanwhile: nested calls, cancellation.
wait_callback(Pid, Monitor, #{port := Port} = S) ->
    receive
        {callback_reply, Pid, Reply} ->
            erlang:demonitor(Monitor, [flush]),
            send_reply(Reply, S),
            S#{runners := maps:remove(Monitor, maps:get(runners, S))};
        {'DOWN', Monitor, process, Pid, Reason} ->
            send_reply(py_callback:error_reply(exit, Reason, []), S),
            S#{runners := maps:remove(Monitor, maps:get(runners, S))};
        {Port, {data, Frame}} ->
            %% A nested call's result (or output) while the callback runs.
            wait_callback(Pid, Monitor, frame(decode(Frame), S));
        {run, Alias, Kind, Payload, Detailed, Leader, Caller} ->
            wait_callback(Pid, Monitor, run(Alias, Kind, Payload, Detailed, Leader, Caller, S));
        {py_pool_cancel, Alias} ->
            wait_callback(Pid, Monitor, cancel(Alias, S));
        {'EXIT', Manager, Reason} when Manager =:= map_get(manager, S) ->
            stop(Reason, S);
        {'DOWN', Other, process, _, _} ->
            wait_callback(Pid, Monitor, down(Other, S));
        {kill, Alias} ->
            wait_callback(Pid, Monitor, kill(Alias, S));
        {Port, {exit_status, _}} = Exit ->
            self() ! Exit,
            S
    end.

send_reply(Reply, #{port := Port}) ->
    true = port_command(Port, term_to_binary({reply, term_to_binary(Reply)})).

%% The caller timed out (or died): CallCancelled in Python, and a kill if it runs on.
cancel(Alias, #{stack := Stack, port := Port, options := Options} = S) ->
    case lists:keyfind(Alias, #call.alias, Stack) of
        #call{cancelled = false} = Call ->
            _ = Port,
            _ = os:cmd("kill -USR1 " ++ integer_to_list(maps:get(os_pid, S)) ++ " 2>/dev/null"),
            erlang:send_after(maps:get(give_up_after, Options), self(), {kill, Alias}),
            S#{stack := lists:keyreplace(Alias, #call.alias, Stack, Call#call{cancelled = true})};
        _ ->
            S
    end.

down(Monitor, #{stack := Stack} = S) ->
    case lists:keyfind(Monitor, #call.monitor, Stack) of
        #call{alias = Alias} -> cancel(Alias, S);
        false -> S
    end.

kill(Alias, #{stack := Stack} = S) ->
    case lists:keymember(Alias, #call.alias, Stack) of
        true ->
            reply_all(Stack, {error, {worker_exit, killed}}),
            stop({worker_exit, killed}, S);
        false ->
            S
    end.

%% Kills the Python process group (what it started goes too) and exits; calls still waiting
%% get {pool_down, Reason} (a killed worker answered its own already).
-spec stop(term(), map()) -> no_return().
stop(Reason, #{os_pid := OsPid, port := Port, stack := Stack}) ->
    _ = os:cmd("kill -KILL -" ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    _ = (catch port_close(Port)),
    case Reason of
        {worker_exit, killed} -> ok;
        _ -> reply_all(Stack, {error, {pool_down, Reason}})
    end,
    exit(Reason).

reply_all(Calls, Result) ->
    lists:foreach(fun(Call) -> ok = reply(Call, Result) end, Calls).

decode(Frame) ->
    try binary_to_term(Frame, [safe])
    catch
        error:badarg ->
            %% A new atom, made by an erlang.Atom of the worker: counted against atom_limit,
            %% as the NIF counts its own. Past it the frame cannot be read, and the worker
            %% is replaced, its callers answered with the error the NIF would raise.
            case py_pool:take_atom_budget() of
                true -> binary_to_term(Frame);
                false -> {atom_limit}
            end
    end.

exit_reason(Status) when Status > 128 -> {signal, Status - 128};
exit_reason(Status) -> {exit_status, Status}.
