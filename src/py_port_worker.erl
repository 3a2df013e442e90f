%% @private A long-running OS command (erlang.start_worker, subprocess.Popen over ports):
%% the process that owns its port, buffers its output within a window, and answers reads,
%% writes and waits.
%%
%% It lives under py_port_worker_sup, so no port is ever owned by a caller that may crash.
%% The command (and everything it started) is killed when this process stops: on `close',
%% on a `$py_worker_close' message (Python's handle was garbage-collected), when its owner
%% dies, and when the application stops.
-module(py_port_worker).
-behaviour(gen_server).

-export([start/3, start_link/3, call/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export_type([request/0]).

%% Output buffered per stream before the command is made to wait (py_exec_port stops
%% reading its pipe, and the command blocks on a full pipe).
-define(WINDOW, 262144).
%% Bytes written to the command's stdin that it has not taken yet, up to which a write is
%% answered at once (as a pipe's buffer would take it); past that a write waits.
-define(WRITE_WINDOW, 65536).
%% Default bound of what `communicate' collects.
-define(MAX_OUTPUT, 67108864).

-type stream() :: stdout | stderr.
-type request() ::
    {read, stream(), pos_integer(), timeout()} | {write, binary()} | close_stdin
    | {wait, timeout()} | poll | {signal, pos_integer(), boolean()}
    | {communicate, binary() | none, timeout()}
    | info | close.

%% @doc Starts a worker owned by `Owner' (its death stops the worker; `undefined': none).
-spec start(py_exec:spec(), pid() | undefined, map()) -> {ok, pid()} | {error, term()}.
start(Spec, Owner, Options) ->
    case supervisor:start_child(py_port_worker_sup, [Spec, Owner, Options]) of
        {ok, Pid} -> {ok, Pid};
        {error, {shutdown, Reason}} -> {error, Reason};
        {error, _} = Error -> Error
    end.

-spec start_link(py_exec:spec(), pid() | undefined, map()) -> {ok, pid()} | {error, term()}.
start_link(Spec, Owner, Options) ->
    gen_server:start_link(?MODULE, [Spec, Owner, Options], []).

%% @doc A request to a worker; `{error, closed}' once it has stopped.
-spec call(pid(), request()) -> term().
call(Worker, Request) ->
    try
        gen_server:call(Worker, Request, infinity)
    catch
        exit:{Reason, _} when Reason =:= noproc; Reason =:= normal; Reason =:= shutdown ->
            {error, closed};
        exit:{{shutdown, _}, _} ->
            {error, closed}
    end.

-spec init([term()]) ->
    {ok, map()} | {stop, {shutdown, term()}}.
init([Spec, Owner, Options]) ->
    process_flag(trap_exit, true),
    case py_exec:start(Spec) of
        {ok, Port, OsPid} ->
            Monitor = case Owner of undefined -> undefined; _ -> monitor(process, Owner) end,
            Piped = fun(S) -> maps:get(S, Spec, pipe) =:= pipe end,
            State = #{
                port => Port, os_pid => OsPid, owner => Monitor,
                stdin => maps:get(stdin, Spec, pipe) =:= pipe,
                max_output => maps:get(max_output, Options, ?MAX_OUTPUT),
                status => undefined, writers => queue:new(), unwritten => 0, broken => false,
                waiters => [],
                collectors => [],
                stdout => stream_state(Piped(stdout)), stderr => stream_state(Piped(stderr))
            },
            {ok, grant(grant(State, stdout), stderr)};
        {error, Reason} ->
            {stop, {shutdown, Reason}}
    end.

%% A stream's state: what is buffered (a list of binaries, oldest first, and its size),
%% whether it ended, the credit given to the port program, and readers waiting.
-spec stream_state(boolean()) -> map().
stream_state(Piped) ->
    #{buf => [], size => 0, eof => not Piped, outstanding => 0, readers => queue:new()}.

-spec handle_call(request(), gen_server:from(), map()) ->
    {reply, term(), map()} | {noreply, map()} | {stop, normal, ok, map()}.
handle_call({read, Stream, Max, Timeout}, From, State) ->
    Reader = {From, Max, timer(Timeout, {read_timeout, Stream, From})},
    S = maps:get(Stream, State),
    serve_readers(Stream, State#{Stream := S#{readers := queue:in(Reader, maps:get(readers, S))}});
handle_call({write, _Data}, _From, #{stdin := false} = State) ->
    {reply, {error, closed_stdin}, State};
handle_call({write, _Data}, _From, #{broken := true} = State) ->
    {reply, {error, epipe}, State};
handle_call({write, Data}, From, #{port := Port, writers := Writers, unwritten := Unwritten} = State) ->
    ok = py_exec:write(Port, Data),
    Size = byte_size(Data),
    State1 = State#{unwritten := Unwritten + Size},
    case Unwritten + Size =< ?WRITE_WINDOW of
        true -> {reply, ok, State1#{writers := queue:in({none, Size}, Writers)}};
        false -> {noreply, State1#{writers := queue:in({From, Size}, Writers)}}
    end;
handle_call(close_stdin, _From, #{port := Port, stdin := true} = State) ->
    ok = py_exec:close_stdin(Port),
    {reply, ok, State#{stdin := false}};
handle_call(close_stdin, _From, State) ->
    {reply, ok, State};
handle_call({wait, _Timeout}, _From, #{status := Status} = State) when is_integer(Status) ->
    {reply, {ok, Status}, State};
handle_call({wait, Timeout}, From, #{waiters := Waiters} = State) ->
    Waiter = {From, timer(Timeout, {wait_timeout, From})},
    {noreply, State#{waiters := [Waiter | Waiters]}};
handle_call(poll, _From, #{status := Status} = State) ->
    {reply, {ok, Status}, State};
handle_call({signal, Signal, Group}, _From, #{port := Port} = State) ->
    ok = py_exec:signal(Port, Signal, Group),
    {reply, ok, State};
handle_call({communicate, Input, Timeout}, From, #{collectors := Collectors} = State) ->
    %% The input is queued, stdin closed, and output collected at the same time, so a
    %% command that writes while it reads cannot wait on us while we wait on it.
    State1 = case {Input, State} of
                 {none, _} -> State;
                 {_, #{stdin := false}} -> State;
                 {_, #{port := Port, writers := Writers, unwritten := Unwritten}} ->
                     ok = py_exec:write(Port, Input),
                     ok = py_exec:close_stdin(Port),
                     Size = byte_size(Input),
                     State#{writers := queue:in({none, Size}, Writers),
                            unwritten := Unwritten + Size, stdin := false}
             end,
    Collector = {From, timer(Timeout, {communicate_timeout, From})},
    serve_collectors(grant(grant(State1#{collectors := [Collector | Collectors]}, stdout), stderr));
handle_call(info, _From, #{os_pid := OsPid, port := Port, status := Status} = State) ->
    {reply, {ok, #{os_pid => OsPid, port => Port, returncode => Status}}, State};
handle_call(close, _From, State) ->
    {stop, normal, ok, State}.

-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), map()) -> {noreply, map()} | {stop, normal, map()}.
handle_info({Port, {data, Data}}, #{port := Port} = State) ->
    frame(py_exec:decode(Data), State);
handle_info({Port, {exit_status, _}}, #{port := Port} = State) ->
    %% The port program was killed from outside: the command went with it.
    State1 = ended(stderr, ended(stdout, State)),
    exited(case maps:get(status, State1) of undefined -> -9; S -> S end, State1);
handle_info({read_timeout, Stream, From}, State) ->
    S = maps:get(Stream, State),
    Readers = queue:filter(fun({F, _, _}) -> F =/= From end, maps:get(readers, S)),
    gen_server:reply(From, timeout),
    {noreply, State#{Stream := S#{readers := Readers}}};
handle_info({wait_timeout, From}, #{waiters := Waiters} = State) ->
    gen_server:reply(From, timeout),
    {noreply, State#{waiters := lists:keydelete(From, 1, Waiters)}};
handle_info({communicate_timeout, From}, #{collectors := Collectors} = State) ->
    %% What was collected stays buffered for the next read or communicate.
    gen_server:reply(From, timeout),
    {noreply, State#{collectors := lists:keydelete(From, 1, Collectors)}};
handle_info({'DOWN', Monitor, process, _, _}, #{owner := Monitor} = State) ->
    {stop, normal, State};
handle_info('$py_worker_close', State) ->
    {stop, normal, State};
handle_info({'EXIT', Port, _}, #{port := Port} = State) ->
    %% The port's end, after its exit_status: what is buffered can still be read.
    {noreply, State};
handle_info({'EXIT', _, Reason}, State) ->
    %% The supervisor is shutting down (the application stops).
    {stop, Reason, State};
handle_info(_Other, State) ->
    {noreply, State}.

-spec terminate(term(), map()) -> ok.
terminate(_Reason, #{port := Port}) ->
    py_exec:stop(Port).

%% ---------------------------------------------------------------------------

-spec frame(py_exec:frame(), map()) -> {noreply, map()}.
frame({Stream, Bin}, State) when Stream =:= stdout; Stream =:= stderr ->
    #{buf := Buf, size := Size, outstanding := Outstanding} = S = maps:get(Stream, State),
    S1 = S#{buf := [Bin | Buf], size := Size + byte_size(Bin),
            outstanding := Outstanding - byte_size(Bin)},
    serve(Stream, State#{Stream := S1});
frame({eof, Stream}, State) ->
    serve(Stream, ended(Stream, State));
frame(Ack, #{writers := Writers, unwritten := Unwritten} = State)
  when Ack =:= written; Ack =:= broken_pipe ->
    %% A write answered at once learns of a broken pipe at the next write, as with a pipe.
    {{value, {From, Size}}, Rest} = queue:out(Writers),
    _ = case From of
            none -> ok;
            _ when Ack =:= written -> gen_server:reply(From, ok);
            _ -> gen_server:reply(From, {error, epipe})
        end,
    {noreply, State#{writers := Rest, unwritten := Unwritten - Size,
                     broken := maps:get(broken, State) orelse Ack =:= broken_pipe}};
frame({exit, Status}, State) ->
    exited(Status, State).

-spec ended(stream(), map()) -> map().
ended(Stream, State) ->
    S = maps:get(Stream, State),
    State#{Stream := S#{eof := true}}.

-spec exited(integer(), map()) -> {noreply, map()}.
exited(Status, #{waiters := Waiters} = State) ->
    _ = [reply_cancel(From, Timer, {ok, Status}) || {From, Timer} <- Waiters],
    serve_collectors(State#{status := Status, waiters := []}).

-spec serve(stream(), map()) -> {noreply, map()}.
serve(Stream, State) ->
    {noreply, State1} = serve_readers(Stream, State),
    serve_collectors(State1).

%% Answers the readers of a stream, oldest first, while there is something to give them.
-spec serve_readers(stream(), map()) -> {noreply, map()}.
serve_readers(Stream, State) ->
    #{readers := Readers, size := Size, eof := Eof} = S = maps:get(Stream, State),
    case queue:out(Readers) of
        {{value, {From, Max, Timer}}, Rest} when Size > 0 ->
            {Data, S1} = take(Max, S),
            reply_cancel(From, Timer, {ok, Data}),
            serve_readers(Stream, grant(State#{Stream := S1#{readers := Rest}}, Stream));
        {{value, {From, _, Timer}}, Rest} when Eof ->
            reply_cancel(From, Timer, eof),
            serve_readers(Stream, State#{Stream := S#{readers := Rest}});
        _ ->
            {noreply, State}
    end.

%% Collectors (communicate) get everything once both streams ended and the command exited.
-spec serve_collectors(map()) -> {noreply, map()}.
serve_collectors(#{collectors := []} = State) ->
    {noreply, State};
serve_collectors(#{collectors := [_ | _] = Collectors, status := Status,
                   stdout := #{eof := true} = Out, stderr := #{eof := true} = Err} = State)
  when is_integer(Status) ->
    {OutData, Out1} = take(all, Out),
    {ErrData, Err1} = take(all, Err),
    %% One collector gets the output; any other one (another thread) finds it taken.
    [{From, Timer} | Others] = lists:reverse(Collectors),
    reply_cancel(From, Timer, {ok, OutData, ErrData, Status}),
    _ = [reply_cancel(F, T, {ok, <<>>, <<>>, Status}) || {F, T} <- Others],
    {noreply, State#{collectors := [], stdout := Out1, stderr := Err1}};
serve_collectors(#{max_output := Max, stdout := #{size := OutSize},
                   stderr := #{size := ErrSize}, collectors := Collectors} = State)
  when OutSize + ErrSize > Max ->
    _ = [reply_cancel(F, T, {error, output_limit}) || {F, T} <- Collectors],
    {noreply, State#{collectors := []}};
serve_collectors(State) ->
    {noreply, State}.

%% Up to Max bytes (or all) from the front of a stream's buffer.
-spec take(pos_integer() | all, map()) -> {binary(), map()}.
take(Max, #{buf := Buf, size := Size} = S) ->
    Data = iolist_to_binary(lists:reverse(Buf)),
    case Max =:= all orelse Size =< Max of
        true ->
            {Data, S#{buf := [], size := 0}};
        false ->
            <<Head:Max/binary, Tail/binary>> = Data,
            {Head, S#{buf := [Tail], size := Size - Max}}
    end.

%% Keeps the port program's credit for a stream topped up: what is buffered plus what may
%% still come stays within the window, or within max_output while someone communicates.
-spec grant(map(), stream()) -> map().
grant(#{port := Port, collectors := Collectors, max_output := Max} = State, Stream) ->
    #{size := Size, outstanding := Outstanding, eof := Eof} = S = maps:get(Stream, State),
    Window = case Collectors of [] -> ?WINDOW; _ -> Max + 1 end,
    case Window - Size - Outstanding of
        More when not Eof, More >= ?WINDOW div 2; not Eof, More > 0, Collectors =/= [] ->
            ok = py_exec:grant(Port, Stream, More),
            State#{Stream := S#{outstanding := Outstanding + More}};
        _ ->
            State
    end.

-spec timer(timeout(), term()) -> reference() | undefined.
timer(infinity, _Message) -> undefined;
timer(Timeout, Message) -> erlang:send_after(Timeout, self(), Message).

-spec reply_cancel(gen_server:from(), reference() | undefined, term()) -> ok.
reply_cancel(From, Timer, Reply) ->
    _ = case Timer of undefined -> ok; _ -> erlang:cancel_timer(Timer, [{async, true}]) end,
    gen_server:reply(From, Reply).
