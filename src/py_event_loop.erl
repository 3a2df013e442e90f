%% @private The Erlang side of ErlangEventLoop (docs/asyncio.md).
%%
%% Registered as `py_event_loop', this server starts one driver process per loop that Python
%% creates (erlang._LoopCore sends it `{py_loop_start, Loop}'). The driver watches the loop's
%% epoll set through enif_select, keeps the loop's timer as an Erlang timer, runs the loop's
%% asynchronous Erlang calls each in a process of its own, and starts the mailboxes whose
%% messages it hands to the loop. Everything it learns reaches the loop's Python thread through
%% the NIF (py_nif:loop_*), which wakes that thread. It ends when the loop is closed.
-module(py_event_loop).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-record(driver, {
    loop :: py_nif:loop(),
    timer = undefined :: reference() | undefined,
    %% Async calls running: monitor => {Id, Name}.
    calls = #{} :: #{reference() => {term(), term()}},
    %% Mailboxes: Id => forwarding process.
    mailboxes = #{} :: #{term() => pid()}
}).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec init([]) -> {ok, #{}}.
init([]) ->
    {ok, #{}}.

-spec handle_call(term(), gen_server:from(), State) -> {reply, {error, unknown_call}, State}.
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), State) -> {noreply, State}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), State) -> {noreply, State}.
handle_info({py_loop_start, Loop}, State) ->
    %% Not linked: a loop lives as long as Python keeps it open, whatever happens here; a
    %% driver that crashes is reported by proc_lib, and its loop raises erlang.Error.
    _ = proc_lib:spawn(fun() -> driver_start(Loop) end),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

%% ---------------------------------------------------------------------------
%% A loop's driver

-spec driver_start(py_nif:loop()) -> ok.
driver_start(Loop) ->
    case py_nif:loop_attach(Loop) of
        ok -> driver(#driver{loop = Loop});
        {error, closed} -> ok
    end.

-spec driver(#driver{}) -> ok.
driver(#driver{loop = Loop} = D) ->
    receive
        {py_loop_wait, {Arm, Timeout, Gen}} ->
            _ = Arm andalso py_nif:loop_select(Loop),
            driver(set_timer(D, Timeout, Gen));
        {select, Loop, undefined, ready_input} ->
            ok = py_nif:loop_ready(Loop),
            driver(D);
        {timeout, Timer, {py_loop_tick, Gen}} ->
            ok = py_nif:loop_timer(Loop, Gen),
            driver(case D#driver.timer of Timer -> D#driver{timer = undefined}; _ -> D end);
        {py_loop_msg, Msg} ->
            driver(handle_msg(Msg, D));
        {py_loop_request, {Seq, Request}} ->
            {Reply, D1} = handle_request(Request, D),
            _ = py_nif:loop_reply(Loop, Seq, Reply),
            driver(D1);
        {'DOWN', Monitor, process, _, Reason} ->
            driver(call_down(Monitor, Reason, D));
        {py_loop_close} ->
            stop(D);
        _Other ->
            driver(D)
    end.

%% One timer per loop, for its latest wait; a stale tick is ignored by the NIF (its Gen is
%% no longer the wait's).
-spec set_timer(#driver{}, infinity | non_neg_integer(), non_neg_integer()) -> #driver{}.
set_timer(#driver{timer = Old} = D, Timeout, Gen) ->
    _ = Old =/= undefined andalso erlang:cancel_timer(Old, [{async, true}, {info, false}]),
    New = case Timeout of
              infinity -> undefined;
              Ms -> erlang:start_timer(max(Ms, 0), self(), {py_loop_tick, Gen})
          end,
    D#driver{timer = New}.

-spec handle_msg(term(), #driver{}) -> #driver{}.
handle_msg({async_call, Id, Name, Args}, #driver{loop = Loop, calls = Calls} = D) when is_list(Args) ->
    {_, Monitor} = spawn_monitor(fun() ->
                                         Reply = py_callback:reply(Name, Args),
                                         _ = py_nif:loop_post(Loop, reply, Id, Name, Reply)
                                 end),
    D#driver{calls = Calls#{Monitor => {Id, Name}}};
handle_msg({mailbox_close, Id}, #driver{mailboxes = Boxes} = D) ->
    case maps:take(Id, Boxes) of
        {Pid, Rest} -> exit(Pid, kill), D#driver{mailboxes = Rest};
        error -> D
    end;
handle_msg(_Other, D) ->
    D.

-spec handle_request(term(), #driver{}) -> {term(), #driver{}}.
handle_request({mailbox, Id}, #driver{loop = Loop, mailboxes = Boxes} = D) ->
    Driver = self(),
    Pid = spawn(fun() -> mailbox(Loop, Id, monitor(process, Driver)) end),
    {Pid, D#driver{mailboxes = Boxes#{Id => Pid}}};
handle_request(_Other, D) ->
    {{error, unknown_request}, D}.

%% An async call's process ended: if it died before posting its reply, the loop gets the
%% exit as the call's exception.
-spec call_down(reference(), term(), #driver{}) -> #driver{}.
call_down(Monitor, Reason, #driver{loop = Loop, calls = Calls} = D) ->
    case maps:take(Monitor, Calls) of
        {{Id, Name}, Rest} ->
            _ = Reason =:= normal orelse
                py_nif:loop_post(Loop, reply, Id, Name, py_callback:error_reply(exit, Reason, [])),
            D#driver{calls = Rest};
        error ->
            D
    end.

-spec stop(#driver{}) -> ok.
stop(#driver{loop = Loop, timer = Timer, mailboxes = Boxes}) ->
    _ = Timer =/= undefined andalso erlang:cancel_timer(Timer, [{async, true}, {info, false}]),
    _ = [exit(Pid, kill) || Pid <- maps:values(Boxes)],
    py_nif:loop_stop(Loop).

%% A mailbox: every message sent to this process goes to the loop, for the Mailbox object Id.
%% It ends with its loop's driver, or when the loop is closed.
-spec mailbox(py_nif:loop(), term(), reference()) -> ok.
mailbox(Loop, Id, DriverMonitor) ->
    receive
        {'DOWN', DriverMonitor, process, _, _} ->
            ok;
        Msg ->
            case py_nif:loop_post(Loop, message, Id, undefined, Msg) of
                ok -> mailbox(Loop, Id, DriverMonitor);
                {error, _} -> ok
            end
    end.
