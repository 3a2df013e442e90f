%% @private One worker of a pool in `mode => process' (docs/pools.md): the Erlang process that
%% owns a port to a Python of its own (priv/python/_erlang_impl/_process_worker.py, whose
%% header gives the frames). It runs one call at a time for its pool's manager
%% (py_pool_manager), and the calls nested in it: a callback of that call that calls py:call on
%% the same pool comes straight here, and the Python side serves it while it waits.
%%
%% Frames travel over a Unix stream socket the Python process connects to at its start, not
%% over the port: after sending a call, this process polls the socket for a while
%% (?SPIN_MICROSECONDS) before it sleeps, and a small call's answer is taken within
%% microseconds of its writing, with no scheduler wake-up (a port's data comes through the
%% VM's poll, and each wake-up costs tens of microseconds here: docs/pools.md, "Why a
%% socket"). The port stays for the process's life: its exit status, and its descriptors
%% 3 and 4, unused.
%%
%% A call's timeout or its caller's death cancels it: its Id goes to the cancel file and the
%% Python process gets SIGUSR1, which raises CallCancelled in that call; if the call is still
%% running `give_up_after' ms later, the whole process group is killed and this process exits,
%% and the manager starts a new worker. The Python process's death (a segfault, os._exit, a
%% limit) ends this process too, its caller answered `{error, {worker_exit, Reason}}'. However
%% this process ends, the Python process group is killed first (guarded/2).
-module(py_process_worker).

-export([start_link/3, init/4]).

-include("py_pool_slots.hrl").

-record(call, {alias :: reference(), caller :: pid(), monitor :: reference(),
               leader :: pid() | undefined, cancelled = false :: boolean()}).

%% How long this process polls the socket for the next frame after writing a call (or after
%% a frame came) before it sleeps until the VM's poll says the socket is readable.
-define(SPIN_MICROSECONDS, 50).
%% It polls only when Python's last frame came less than this long ago: then Python still
%% polls its side too (for 100 us after each frame, while frames come back to back:
%% _process_worker.py, SPIN_SECONDS), and an answer within microseconds is likely. A caller
%% whose scheduler slept between two calls comes back 30-60 us later; with a 50 us gate
%% whole blocks of back-to-back calls fell to the slow path (24 us instead of 14). Sparse
%% calls do not poll, and leave the cores to others (a Python woken from sleep needs one).
-define(POLL_GATE_MICROSECONDS, 150).
%% How often an idle worker looks whether its slot was claimed and no call came (check_claim/1).
-define(UNCLAIM_AFTER_MS, 1000).
%% How long writing one frame may wait for Python to read (send_frame/2).
-define(SEND_TIMEOUT_MS, 5000).
%% How long the socket goes unwatched after a call (arm_if_busy/1).
-define(ARM_AFTER_MS, 1).

-spec start_link(atom(), pid(), map()) -> pid().
start_link(Pool, Manager, Options) ->
    proc_lib:spawn_link(?MODULE, init, [Pool, Manager, Options, self()]).

%% Opens the port and waits for the worker's `ready'; tells the manager either way.
-spec init(atom(), pid(), map(), pid()) -> no_return().
init(Pool, Manager, Options, Manager) ->
    %% Its manager's end must kill the Python process group: one stuck in C never reads the
    %% socket.
    process_flag(trap_exit, true),
    CancelFile = cancel_file(),
    {Dir, Listen} = case listen() of
                        {ok, D, L} -> {D, L};
                        {error, Why} -> exit({start_failed, {socket, Why}})
                    end,
    Token = token(),
    Port = try open(Options, CancelFile, socket_path(Dir), Token)
           catch error:Why2 ->
                   _ = socket:close(Listen),
                   remove_socket_dir(Dir),
                   exit({start_failed, {open_port, Why2}})
           end,
    OsPid = case erlang:port_info(Port, os_pid) of
                {os_pid, P} -> P;
                undefined ->  % the port closed at once
                    _ = socket:close(Listen),
                    remove_socket_dir(Dir),
                    exit({start_failed, port_closed})
            end,
    S = #{pool => Pool, manager => Manager, port => Port, os_pid => OsPid, options => Options,
          calls => 0, stack => [], cancel_file => CancelFile, socket_dir => Dir,
          sock => undefined, buffer => <<>>, more => [], more_size => 0, select => undefined,
          pending => [], claim_seen => none, last_frame => 0},
    guarded(fun() -> start(S, Listen, Token) end, S).

%% Runs F (which never returns: it loops until it exits); whatever way it ends, the Python
%% process group goes first, and calls still on the stack are answered.
-spec guarded(fun(() -> no_return()), map()) -> no_return().
guarded(F, #{os_pid := OsPid, port := Port, cancel_file := CancelFile, socket_dir := Dir}) ->
    try
        F()
    catch
        Class:Reason:Stack ->
            _ = os:cmd("kill -KILL -" ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
            _ = (catch port_close(Port)),
            _ = file:delete(CancelFile),
            remove_socket_dir(Dir),
            Stacked = case get(stack) of undefined -> []; L -> L end,
            reply_all(Stacked, {error, {worker_exit, exit_reason_of(Class, Reason)}}),
            erlang:raise(Class, Reason, Stack)
    end.

exit_reason_of(exit, {worker_exit, Reason}) -> Reason;
exit_reason_of(exit, Reason) -> Reason;
exit_reason_of(Class, Reason) -> {Class, Reason}.

%% The Python process connects to the socket and says `ready' with the token it was given
%% (the directory is the VM user's own, mode 0700: the token only makes sure the connection
%% is the Python this port started); then the pool's init code runs, and the worker is
%% ready for calls.
start(#{port := Port, os_pid := OsPid, manager := Manager, socket_dir := Dir,
        options := Options} = S, Listen, Token) ->
    Deadline = erlang:monotonic_time(millisecond) + maps:get(start_timeout, Options),
    Sock = accept(Listen, Port, Manager, Deadline),
    _ = socket:close(Listen),
    remove_socket_dir(Dir),
    case startup_frame(S#{sock := Sock}, Deadline) of
        {{ready, OsPid, _Version, Token}, S1} ->
            S2 = run_init(S1, Deadline),
            Manager ! {worker_started, self()},
            erlang:send_after(?UNCLAIM_AFTER_MS, self(), check_claim),
            loop(arm(frames(S2)));
        {Other, _} ->
            exit({start_failed, {unexpected, Other}})
    end.

%% A private directory (mode 0700) for the socket, removed once the worker connected.
listen() ->
    Name = "erlang_python." ++ os:getpid() ++ "."
           ++ integer_to_list(erlang:unique_integer([positive])),
    %% A socket's path has room for 107 bytes: a long TMPDIR gives way to /tmp.
    Dir = case filename:join(temp_dir(), Name) of
              D when length(D) + 2 =< 100 -> D;
              _ -> filename:join("/tmp", Name)
          end,
    case file:make_dir(Dir) of
        ok -> listen(Dir);
        {error, Reason} -> {error, Reason}
    end.

listen(Dir) ->
    Result = case file:change_mode(Dir, 8#700) of
                 ok -> bind(socket:open(local, stream, default), socket_path(Dir));
                 {error, _} = Error -> Error
             end,
    case Result of
        {ok, Listen} ->
            {ok, Dir, Listen};
        {error, Reason} ->
            remove_socket_dir(Dir),
            {error, Reason}
    end.

bind({ok, Listen}, Path) ->
    case socket:bind(Listen, #{family => local, path => Path}) of
        ok ->
            ok = socket:listen(Listen),
            {ok, Listen};
        {error, Reason} ->
            _ = socket:close(Listen),
            {error, Reason}
    end;
bind({error, Reason}, _Path) ->
    {error, Reason}.

socket_path(Dir) ->
    filename:join(Dir, "s").

remove_socket_dir(Dir) ->
    _ = file:delete(socket_path(Dir)),
    _ = file:del_dir(Dir),
    ok.

token() ->
    binary:encode_hex(rand:bytes(16)).

accept(Listen, Port, Manager, Deadline) ->
    case socket:accept(Listen, nowait) of
        {ok, Sock} ->
            Sock;
        {select, {select_info, _, Handle}} ->
            receive
                {'$socket', Listen, select, Handle} ->
                    accept(Listen, Port, Manager, Deadline);
                {Port, {exit_status, Status}} ->
                    exit({start_failed, exit_reason(Status)});
                {'EXIT', Manager, Reason} ->
                    exit(Reason)
            after max(0, Deadline - erlang:monotonic_time(millisecond)) ->
                exit({start_failed, start_timeout})
            end;
        {error, Reason} ->
            exit({start_failed, {accept, Reason}})
    end.

%% The next frame while the worker starts (before it serves calls).
startup_frame(S, Deadline) ->
    case take_frame(S) of
        {Frame, S1} ->
            {Frame, S1};
        none ->
            #{sock := Sock, port := Port} = S,
            Timeout = max(0, Deadline - erlang:monotonic_time(millisecond)),
            case socket:recv(Sock, 0, Timeout) of
                {ok, Data} ->
                    startup_frame(received(Data, S), Deadline);
                {error, timeout} ->
                    exit({start_failed, start_timeout});
                {error, _} ->
                    receive
                        {Port, {exit_status, Status}} -> exit({start_failed, exit_reason(Status)})
                    after 1000 ->
                        exit({start_failed, socket_closed})
                    end
            end
    end.

%% Where the Id of a call to cancel is written before SIGUSR1 (_process_worker.py).
cancel_file() ->
    filename:join(temp_dir(), "erlang_python_cancel." ++ os:getpid() ++ "."
                       ++ integer_to_list(erlang:unique_integer([positive]))).

temp_dir() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        D -> D
    end.

%% The pool's `init' code, run in __main__ before the worker takes calls: what every worker
%% of the pool, and every replacement, must have defined.
run_init(#{options := #{init := Code}} = S, Deadline) ->
    Id = make_ref(),
    send_frame(call_frame(Id, exec, Code, true, self()), S),
    init_result(S, Id, Deadline);
run_init(S, _Deadline) ->
    S.

init_result(S, Id, Deadline) ->
    case startup_frame(S, Deadline) of
        {{result, Id, ok}, S1} ->
            S1;
        {{result, Id, {error, Reason}}, _} ->
            exit({start_failed, {init_failed, fix_error_reason(Reason)}});
        {{output, Stream, Text}, S1} ->
            %% What init prints goes where output of no call goes.
            _ = (catch py_output ! {Stream, undefined, Text}),
            init_result(S1, Id, Deadline);
        {{send, _, _} = Send, S1} ->
            %% From a thread init started: sent as at any other time.
            init_result(frame(Send, S1), Id, Deadline);
        {Other, _} ->
            exit({start_failed, {unexpected, Other}})
    end.

fix_error_reason(Reason) ->
    {error, Fixed} = fix_error({error, Reason}),
    Fixed.

open(Options, CancelFile, SocketPath, Token) ->
    Python = maps:get(python, Options),
    PythonPath = lists:join(":", [filename:join(py_nif:priv_dir(), "python")
                                  | maps:get(python_path, Options)]),
    %% LD_PRELOAD is the VM's (libasan under `make check-c'), not meant for the Pythons it
    %% starts: a sanitizer runtime in a worker turns its crashes into reports, and its
    %% shadow memory defeats memory_limit.
    Env = [{"LD_PRELOAD", false},
           {"PYTHONPATH", unicode:characters_to_list(PythonPath)},
           {"PYTHONDONTWRITEBYTECODE", "1"},
           {"ERLANG_PYTHON_CANCEL_FILE", CancelFile},
           {"ERLANG_PYTHON_SOCKET", SocketPath},
           {"ERLANG_PYTHON_TOKEN", binary_to_list(Token)},
           {"ERLANG_PYTHON_MEMORY_LIMIT", limit(maps:get(memory_limit, Options))},
           {"ERLANG_PYTHON_CPU_LIMIT", limit(maps:get(cpu_limit, Options))}],
    open_port({spawn_executable, Python},
              [{args, ["-u", "-c", "from _erlang_impl import _process_worker as w; w.start()"]},
               {env, Env}, {packet, 4}, binary, nouse_stdio, exit_status]).

limit(infinity) -> false;
limit(N) -> integer_to_list(N).

%% ---------------------------------------------------------------------------

loop(#{port := Port, sock := Sock} = S) ->
    Handle = select_handle(S),
    receive
        {'$socket', Sock, select, Handle} ->
            %% Polled on when a frame came (a callback's, whose reply is answered soon).
            loop(arm_if_busy(spin(readable(S))));
        {run, _, _, _, _, _, _} = Run when map_get(stack, S) =/= [] ->
            %% A call for a busy worker, from a caller whose claim of this worker's slot
            %% was freed (check_claim/1) before it sent: run after the current one, the
            %% slot kept claimed meanwhile. Its caller's cancellation comes here too.
            loop(S#{pending := map_get(pending, S) ++ [Run]});
        {run, Alias, Kind, Payload, Detailed, Leader, Caller} ->
            S1 = run(Alias, Kind, Payload, Detailed, Leader, Caller, disarm(S)),
            loop(arm_if_busy(spin(S1)));
        check_claim ->
            erlang:send_after(?UNCLAIM_AFTER_MS, self(), check_claim),
            loop(check_claim(S));
        {py_pool_cancel, Alias} ->
            loop(cancel(Alias, S));
        {'EXIT', Manager, Reason} when Manager =:= map_get(manager, S) ->
            pool_down(Reason, S);
        {'EXIT', _, _} ->
            loop(S);
        {'DOWN', Monitor, process, _, _} ->
            loop(down(Monitor, S));
        {kill, Alias} ->
            loop(kill(Alias, S));
        {Port, {exit_status, Status}} ->
            exit({worker_exit, exit_reason(Status)});
        {'$socket', Sock, select, _Stale} ->
            %% Of a select withdrawn (disarm/1) after it fired.
            loop(S)
    after idle_timeout(S) ->
        loop(arm(S))
    end.

%% A call that answered leaves the socket unwatched for a millisecond: the next call of a
%% caller calling back to back comes sooner, and would pay for watching and unwatching it
%% (two epoll_ctl calls). Output of Python's threads between calls waits that long.
arm_if_busy(#{stack := []} = S) ->
    S;
arm_if_busy(S) ->
    arm(S).

idle_timeout(#{select := undefined}) -> ?ARM_AFTER_MS;
idle_timeout(_S) -> infinity.

%% A caller claims a worker's slot, then sends it the call (py_pool): one killed in
%% between leaves the slot busy and the worker idle for good. Every ?UNCLAIM_AFTER_MS an
%% idle worker looks at its slot; claimed at two looks in a row with no call between, it is
%% freed (a call that still comes goes to `pending', above).
check_claim(#{stack := [], calls := Calls, claim_seen := Calls,
              options := #{slot := {Slots, Slot, _}}} = S) ->
    case atomics:compare_exchange(Slots, Slot, ?BUSY, ?IDLE) of
        ok -> idle(S#{claim_seen := none});
        _ -> S#{claim_seen := none}
    end;
check_claim(#{stack := [], calls := Calls, options := #{slot := {Slots, Slot, _}}} = S) ->
    case atomics:get(Slots, Slot) of
        ?BUSY -> S#{claim_seen := Calls};
        _ -> S#{claim_seen := none}
    end;
check_claim(S) ->
    S#{claim_seen := none}.

run(Alias, Kind, Payload, Detailed, Leader, Caller, #{stack := Stack} = S) ->
    send_frame(call_frame(Alias, Kind, Payload, Detailed, Caller), S),
    Call = #call{alias = Alias, caller = Caller, monitor = erlang:monitor(process, Caller),
                 leader = Leader},
    set_stack([Call | Stack], S).

%% ---------------------------------------------------------------------------
%% The socket. The VM's poll is asked to tell when it is readable (arm/1: a `select'
%% message comes) only while this process waits in `receive'; after writing, it is read
%% directly for a while instead (spin/1).

%% Python reads whenever it waits for a frame; one that does not take a frame for
%% ?SEND_TIMEOUT_MS (running C code while a nested call's reply waits) has its worker
%% replaced rather than blocking this process, which must still take kills and cancels.
send_frame(Frame, #{sock := Sock}) ->
    case socket:send(Sock, [<<(iolist_size(Frame)):32>>, Frame], ?SEND_TIMEOUT_MS) of
        ok -> ok;
        {error, {timeout, _}} -> exit({worker_exit, send_timeout});
        {error, timeout} -> exit({worker_exit, send_timeout});
        {error, Reason} -> exit({worker_exit, {socket, Reason}})
    end.

%% A call, as _process_worker.py reads it: a header of bytes, not a term, then the payload;
%% a call by atom names without keyword arguments has the names in the header too.
call_frame(Alias, Kind, Payload, Detailed, Caller) ->
    <<131, Id/binary>> = term_to_binary(Alias),
    <<131, From/binary>> = term_to_binary(Caller),
    DetailedByte = case Detailed of true -> 1; false -> 0 end,
    {KindByte, Body} = call_body(Kind, Payload),
    [<<"R", DetailedByte, KindByte, (byte_size(Id)):16>>, Id, <<(byte_size(From)):16>>, From,
     Body].

call_body(call, {Module, Function, Args, Kwargs}) when is_atom(Module), is_atom(Function),
                                                       is_list(Args), Kwargs =:= #{} ->
    M = atom_to_binary(Module, utf8),
    F = atom_to_binary(Function, utf8),
    {$C, [<<(byte_size(M)):16>>, M, <<(byte_size(F)):16>>, F, term_to_binary(Args)]};
call_body(call, {Module, Function, Args, Kwargs}) ->
    %% Names by their text, as the NIF reads them: `true' names a module "true" there too,
    %% not Python's True.
    {$c, term_to_binary({name_text(Module), name_text(Function), Args, Kwargs})};
call_body(call, Payload) -> {$c, term_to_binary(Payload)};
call_body(eval, Payload) -> {$e, term_to_binary(Payload)};
call_body(exec, Payload) -> {$x, term_to_binary(Payload)}.

name_text(Atom) when is_atom(Atom) -> atom_to_binary(Atom, utf8);
name_text(Other) -> Other.

%% Reads the socket until the call in progress has answered, or for ?SPIN_MICROSECONDS
%% (from the last frame: a callback or output means more may come soon).
spin(#{last_frame := Last} = S) ->
    case erlang:monotonic_time(microsecond) - Last < ?POLL_GATE_MICROSECONDS of
        true -> spin(S, spin_until());
        false -> S
    end.

spin(#{stack := []} = S, _Until) ->
    S;
spin(#{sock := Sock} = S, Until) ->
    case socket:recv(Sock, 0, 0) of
        {ok, Data} ->
            spin(frames(received(Data, S)), spin_until());
        {error, timeout} ->
            case erlang:monotonic_time(microsecond) < Until of
                true -> spin(S, Until);
                false -> S
            end;
        {error, _Closed} ->
            closed(S)
    end.

spin_until() ->
    erlang:monotonic_time(microsecond) + ?SPIN_MICROSECONDS.

%% The VM's poll said the socket is readable.
readable(#{sock := Sock} = S) ->
    case socket:recv(Sock, 0, 0) of
        {ok, Data} -> frames(received(Data, S#{select := undefined}));
        {error, timeout} -> S#{select := undefined};
        {error, _Closed} -> closed(S#{select := undefined})
    end.

%% Asks for a `select' message when the socket is readable; reads what is there already.
arm(#{select := undefined, sock := Sock} = S) ->
    case socket:recv(Sock, 0, nowait) of
        {ok, Data} ->
            arm(frames(received(Data, S)));
        {select, Info} ->
            S#{select := Info};
        {error, _Closed} ->
            closed(S)
    end;
arm(S) ->
    S.

%% Withdraws the request for a `select' message, and drops the message if it came.
disarm(#{select := undefined} = S) ->
    S;
disarm(#{select := Info, sock := Sock} = S) ->
    Handle = select_handle(S),
    _ = socket:cancel(Sock, Info),
    receive
        {'$socket', Sock, select, Handle} -> ok
    after 0 ->
        ok
    end,
    S#{select := undefined}.

%% The reference of the `select' message asked for (arm/1), or none.
select_handle(#{select := {select_info, _, Handle}}) -> Handle;
select_handle(#{select := undefined}) -> undefined.

%% Python closed its end: it is exiting (its exit status follows), or its code closed the
%% socket; either way this worker is done.
-spec closed(map()) -> no_return().
closed(#{port := Port}) ->
    receive
        {Port, {exit_status, Status}} -> exit({worker_exit, exit_reason(Status)})
    after 1000 ->
        exit({worker_exit, socket_closed})
    end.

%% Data read from the socket. The pieces of a frame not whole yet are kept in a list and
%% joined once it is (appending each to the buffer copied a large frame again at each read:
%% 0.5 s for 4 MB).
received(Data, #{buffer := Buffer, more := More, more_size := MoreSize} = S) ->
    Size = MoreSize + byte_size(Data),
    case byte_size(Buffer) + Size >= wanted(Buffer) of
        true ->
            Joined = iolist_to_binary([Buffer | lists:reverse(More, [Data])]),
            S#{buffer := Joined, more := [], more_size := 0};
        false ->
            S#{more := [Data | More], more_size := Size}
    end.

%% How long the buffer must be for its first frame to be whole (or its length known).
wanted(<<Size:32, _/binary>>) -> 4 + Size;
wanted(_) -> 4.

%% Handles each whole frame of the buffer, in order.
frames(S) ->
    case take_frame(S) of
        {Frame, S1} -> frames(frame(Frame, S1));
        none -> S
    end.

take_frame(#{buffer := <<Size:32, Frame:Size/binary, Rest/binary>>} = S) ->
    {decode(Frame), S#{buffer := Rest, last_frame := erlang:monotonic_time(microsecond)}};
take_frame(_S) ->
    none.

%% The calls running, innermost first: in the state, and in the process dictionary for
%% guarded/2, which answers them however this process ends.
set_stack(Stack, S) ->
    _ = put(stack, Stack),
    S#{stack := Stack}.

frame({result, Alias, Result}, #{stack := [#call{alias = Alias} = Call | Rest]} = S) ->
    ok = reply(Call, fix_error(Result)),
    true = erlang:demonitor(Call#call.monitor, [flush]),
    done(set_stack(Rest, S));
frame({result, _Alias, _Result}, S) ->
    %% A second answer to a call that answered (a cancellation landed as it wrote).
    S;
frame({callback, Name, Args}, S) ->
    callback(Name, Args, S);
frame({send, Dest, Term}, S) ->
    %% As the VM's erlang.send: a local pid, or a registered name that exists; never an atom
    %% made from Python's text. To anything else the message is dropped.
    _ = case Dest of
            Pid when is_pid(Pid), node(Pid) =:= node() -> Pid ! Term;
            Name when is_binary(Name) ->
                try binary_to_existing_atom(Name, utf8) of
                    Atom -> catch Atom ! Term
                catch
                    error:_ -> ok
                end;
            _ -> ok
        end,
    S;
frame({output, Stream, Text}, #{stack := Stack} = S) ->
    Leader = case Stack of
                 [#call{leader = L} | _] -> L;
                 [] -> undefined
             end,
    _ = (catch py_output ! {Stream, Leader, Text}),
    S;
frame({atom_limit}, #{stack := Stack} = S) ->
    Error = {error, {'OverflowError', <<"atom limit reached: an erlang.Atom would create a new "
                                         "atom (limit set by the atom_limit application env)">>,
                     <<"OverflowError: atom limit reached\n">>}},
    reply_all(Stack, Error),
    _ = set_stack([], S),
    exit({worker_exit, atom_limit});
frame(Other, _S) ->
    exit({bad_frame, Other}).

%% The outermost call ended: this worker is free again, or done after max_calls.
done(#{stack := [_ | _]} = S) ->
    S;
done(#{calls := Calls} = S) ->
    next_call(S#{calls := Calls + 1}).

next_call(#{pending := [Run | Pending]} = S) ->
    %% A stray call waited for the one that ended (loop/1): its turn, the slot still claimed.
    {run, Alias, Kind, Payload, Detailed, Leader, Caller} = Run,
    S1 = S#{pending := Pending},
    case py_pool:caller_gone(Caller) of
        true -> next_call(S1);
        false -> run(Alias, Kind, Payload, Detailed, Leader, Caller, disarm(S1))
    end;
next_call(#{calls := Calls, options := #{max_calls := Max}}) when Calls >= Max ->
    %% Recycled (the manager starts a new worker); calls waiting here went first, above.
    exit(normal);
next_call(S) ->
    idle(S).

%% Idle for callers to claim (py_pool). When calls wait in the manager's queue (it counts
%% them before it looks for a worker: one of the two sees the other), the worker takes its
%% slot back and goes to the manager for the first of them, so that queued calls are served
%% in order, not after whichever caller claims next.
idle(#{manager := Manager, options := #{slot := {Slots, Slot, Size}}} = S) ->
    ok = atomics:put(Slots, Slot, ?IDLE),
    case atomics:get(Slots, ?QUEUED(Size)) of
        0 ->
            S;
        _ ->
            _ = case atomics:compare_exchange(Slots, Slot, ?IDLE, ?BUSY) of
                    ok -> Manager ! {worker_free, self()};
                    _ -> ok  % claimed meanwhile: its next done/1 looks again
                end,
            S
    end.

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
    catch error:_ -> Name  % no such atom, or too long for one
    end;
type(Other) ->
    Other.

%% A callback runs in a process of its own, where a py:call on this pool comes back here.
callback(Name, Args, #{pool := Pool} = S) ->
    Worker = self(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        put({py_pool_waiter, Pool}, Worker),
        Worker ! {callback_reply, self(), reply_frame(py_callback:reply(Name, Args))}
    end),
    wait_callback(Pid, Monitor, S).

%% The callback's reply, while serving what may come meanwhile: nested calls, cancellation.
%% Frames that came after the callback's are handled first.
wait_callback(Pid, Monitor, S) ->
    case take_frame(S) of
        {Frame, S1} ->
            %% A nested call's result (or output) while the callback runs.
            wait_callback(Pid, Monitor, frame(Frame, S1));
        none ->
            wait_callback_receive(Pid, Monitor, arm(S))
    end.

wait_callback_receive(Pid, Monitor, #{port := Port, sock := Sock} = S) ->
    Handle = select_handle(S),
    receive
        {callback_reply, Pid, Reply} ->
            %% Returns to the frame loop that met the callback, which polls on for what
            %% comes next (in its tail: callbacks back to back must not deepen the stack).
            erlang:demonitor(Monitor, [flush]),
            S1 = disarm(S),
            send_reply(Reply, S1),
            S1;
        {'DOWN', Monitor, process, Pid, Reason} ->
            S1 = disarm(S),
            send_reply(reply_frame(py_callback:error_reply(exit, Reason, [])), S1),
            S1;
        {'$socket', Sock, select, Handle} ->
            wait_callback(Pid, Monitor, readable(S));
        {run, Alias, Kind, Payload, Detailed, Leader, Caller} ->
            S1 = run(Alias, Kind, Payload, Detailed, Leader, Caller, disarm(S)),
            wait_callback(Pid, Monitor, spin(S1));
        {py_pool_cancel, Alias} ->
            wait_callback_receive(Pid, Monitor, cancel(Alias, S));
        {'EXIT', Manager, Reason} when Manager =:= map_get(manager, S) ->
            pool_down(Reason, S);
        {'DOWN', Other, process, _, _} ->
            wait_callback_receive(Pid, Monitor, down(Other, S));
        {kill, Alias} ->
            wait_callback_receive(Pid, Monitor, kill(Alias, S));
        {Port, {exit_status, _}} = Exit ->
            self() ! Exit,
            S;
        {'$socket', Sock, select, _Stale} ->
            wait_callback_receive(Pid, Monitor, S)
    end.

send_reply(Reply, S) ->
    send_frame(term_to_binary({reply, Reply}), S).

%% The value, and an error's reason, as binaries of their own: Python decodes each where its
%% conversion errors belong (_process_worker.py, reply_value).
reply_frame({ok, Value}) -> {ok, term_to_binary(Value)};
reply_frame({error, Class, Reason, Formatted, Stack}) ->
    {error, Class, term_to_binary(Reason), Formatted, Stack};
reply_frame(Other) -> Other.

%% The caller timed out (or died): CallCancelled in Python, and a kill if it runs on.
cancel(Alias, #{stack := Stack, options := Options, pending := Pending} = S) ->
    case lists:keyfind(Alias, #call.alias, Stack) of
        false when Pending =/= [] ->
            %% Still waiting here (loop/1): it never runs.
            S#{pending := [Run || Run <- Pending, element(2, Run) =/= Alias]};
        #call{cancelled = false} = Call ->
            ok = file:write_file(maps:get(cancel_file, S), term_to_binary(Alias)),
            _ = os:cmd("kill -USR1 " ++ integer_to_list(maps:get(os_pid, S)) ++ " 2>/dev/null"),
            erlang:send_after(maps:get(give_up_after, Options), self(), {kill, Alias}),
            Cancelled = Call#call{cancelled = true},
            set_stack(lists:keyreplace(Alias, #call.alias, Stack, Cancelled), S);
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
            stop({worker_exit, killed}, set_stack([], S));
        false ->
            S
    end.

%% Exits; guarded/2 kills the Python process group (what it started goes too) and answers
%% the calls still waiting.
-spec stop(term(), map()) -> no_return().
stop(Reason, _S) ->
    exit(Reason).

%% The pool stopped: its calls in flight say so, as calls waiting in its queue do (py_pool).
-spec pool_down(term(), map()) -> no_return().
pool_down(Reason, #{stack := Stack, pool := Pool} = S) ->
    reply_all(Stack, {error, {pool_down, Pool}}),
    _ = set_stack([], S),
    exit(Reason).

reply_all(Calls, Result) ->
    lists:foreach(fun(Call) -> ok = reply(Call, Result) end, Calls).

decode(Frame) ->
    try binary_to_term(Frame, [safe])
    catch
        error:badarg ->
            %% New atoms, made by erlang.Atom values of the worker: each counted against
            %% atom_limit, as the NIF counts its own, before any is made. Past it the frame
            %% is not read, and the worker is replaced, its callers answered with the error
            %% the NIF would raise.
            New = try new_atoms(Frame)
                  catch throw:bad_term -> exit({worker_exit, bad_frame})
                  end,
            case py_pool:take_atom_budget(New) of
                true -> binary_to_term(Frame);
                false -> {atom_limit}
            end
    end.

%% How many distinct atoms of an external term do not exist yet (the tags the worker's
%% encoder writes: _erlang_impl/_etf.py).
new_atoms(<<131, Term/binary>>) ->
    {<<>>, New} = walk(Term, #{}),
    map_size(New);
new_atoms(_) ->
    throw(bad_term).

walk(<<97, _, R/binary>>, A) -> {R, A};
walk(<<98, _:32, R/binary>>, A) -> {R, A};
walk(<<70, _:64, R/binary>>, A) -> {R, A};
walk(<<Tag, Len:16, Name:Len/binary, R/binary>>, A) when Tag =:= 118; Tag =:= 100 ->
    {R, atom(Name, Tag, A)};
walk(<<Tag, Len, Name:Len/binary, R/binary>>, A) when Tag =:= 119; Tag =:= 115 ->
    {R, atom(Name, Tag, A)};
walk(<<109, Len:32, _:Len/binary, R/binary>>, A) -> {R, A};
walk(<<104, N, R/binary>>, A) -> walk_n(N, R, A);
walk(<<105, N:32, R/binary>>, A) -> walk_n(N, R, A);
walk(<<106, R/binary>>, A) -> {R, A};
walk(<<107, Len:16, _:Len/binary, R/binary>>, A) -> {R, A};
walk(<<108, N:32, R/binary>>, A) -> walk_n(N + 1, R, A);
walk(<<116, N:32, R/binary>>, A) -> walk_n(2 * N, R, A);
walk(<<110, N, _, _:N/binary, R/binary>>, A) -> {R, A};
walk(<<111, N:32, _, _:N/binary, R/binary>>, A) -> {R, A};
walk(<<Tag, R/binary>>, A) when Tag =:= 88; Tag =:= 89; Tag =:= 120 ->
    %% A pid or port: its node, then fixed fields.
    {<<Fixed/binary>>, A1} = walk(R, A),
    Skip = case Tag of 88 -> 12; 89 -> 8; 120 -> 12 end,
    <<_:Skip/binary, R2/binary>> = Fixed,
    {R2, A1};
walk(<<90, Words:16, R/binary>>, A) ->
    {Fixed, A1} = walk(R, A),
    Skip = 4 + 4 * Words,
    <<_:Skip/binary, R2/binary>> = Fixed,
    {R2, A1};
walk(<<112, Size:32, R/binary>>, A) ->
    Skip = Size - 4,
    <<_:Skip/binary, R2/binary>> = R,
    {R2, A};
walk(<<113, R/binary>>, A) -> walk_n(3, R, A);
walk(_, _) -> throw(bad_term).

walk_n(0, R, A) -> {R, A};
walk_n(N, R, A) ->
    {R1, A1} = walk(R, A),
    walk_n(N - 1, R1, A1).

atom(Name, Tag, A) ->
    Encoding = case Tag of _ when Tag =:= 100; Tag =:= 115 -> latin1; _ -> utf8 end,
    try binary_to_existing_atom(Name, Encoding) of
        _ -> A
    catch
        error:_ -> A#{Name => true}
    end.

exit_reason(Status) when Status > 128 -> {signal, Status - 128};
exit_reason(Status) -> {exit_status, Status}.
