%% @private The Erlang side of priv/py_exec_port, the port program that runs one OS
%% command: starting it, its frames, and a whole run collected in the calling process.
%%
%% The port program exists because an Erlang port alone cannot close only a command's
%% stdin, keep its stderr apart, or kill what it started when the port closes
%% (docs/ports.md). Every function here runs in the process that owns the port; when that
%% process dies, the port closes and the program kills the command's whole process tree.
-module(py_exec).

-export([open/0, start/1, run/2, write/2, close_stdin/1, grant/3, signal/3, release/1, stop/1,
         decode/1]).
-export([program/0, command_spec/2]).

-export_type([spec/0, frame/0, run_result/0, start_error/0]).

%% How long stop/1 waits for the port program to have killed and reaped everything.
-define(STOP_WAIT, 5000).
%% Credit frames carry 32 bits.
-define(MAX_GRANT, 16#FFFFFFFF).

-type spec() :: #{
    args := [binary()],
    env => inherit | [{binary(), binary()}],
    cwd => binary(),
    stdin => pipe | null,
    stdout => pipe | null | inherit,
    stderr => pipe | null | inherit | stdout
}.
-type frame() ::
    {stdout, binary()} | {stderr, binary()} | {eof, stdout | stderr}
    | written | broken_pipe | {exit, integer()}.
%% The errno both as file:posix() names it and as its number (which Python's OSError takes).
-type start_error() :: {os_error, atom(), non_neg_integer(), binary(), binary()}.
-type run_result() :: #{returncode := integer(), stdout := binary(), stderr := binary()}.

%% @doc The path of the port program.
-spec program() -> file:filename().
program() ->
    filename:join(py_nif:priv_dir(), "py_exec_port").

%% @doc Opens the port program and starts the command; waits for it to have started.
%% A command that cannot start (no such program, a bad cwd) gives
%% `{os_error, Posix, Errno, Stage, Program}', and nothing is left running.
-spec start(spec()) -> {ok, port(), non_neg_integer()} | {error, start_error()}.
start(#{args := [Program | _]} = Spec) ->
    Port = case py_exec_pool:checkout() of
               {ok, Ready} -> Ready;
               none -> open()
           end,
    true = port_command(Port, start_frame(Spec)),
    receive
        {Port, {data, <<"P", OsPid:32>>}} ->
            {ok, Port, OsPid};
        {Port, {data, <<"F", Errno:32, Stage/binary>>}} ->
            release(Port),
            {error, {os_error, posix(Errno), Errno, Stage, Program}};
        {Port, {exit_status, Status}} ->
            true = unlink(Port),
            flush(Port),
            {error, {os_error, eio, 5,
                     <<"py_exec_port exited ", (integer_to_binary(Status))/binary>>, Program}}
    end.

%% @doc A new port program, owned by the caller, waiting for its start frame.
-spec open() -> port().
open() ->
    open_port({spawn_executable, program()}, [{packet, 4}, binary, nouse_stdio, exit_status]).

%% @doc Runs a command to its end: writes `input' (then closes stdin), collects stdout
%% and stderr, and returns them with the exit status. At `timeout' (ms) or past
%% `max_output' bytes of output the command and everything it started are killed first.
-spec run(spec(), #{input => binary(), timeout => timeout(), max_output => non_neg_integer()}) ->
    {ok, run_result()}
    | {error, start_error() | {timeout | output_limit, run_result()}}.
run(Spec, Options) ->
    Deadline = deadline(maps:get(timeout, Options, infinity)),
    MaxOutput = maps:get(max_output, Options, ?MAX_GRANT),
    case start(Spec) of
        {ok, Port, _OsPid} ->
            %% One byte more than allowed, so that going over shows.
            ok = grant(Port, stdout, MaxOutput + 1),
            ok = grant(Port, stderr, MaxOutput + 1),
            case Spec of
                #{stdin := pipe} ->
                    ok = write(Port, maps:get(input, Options, <<>>)),
                    ok = close_stdin(Port);
                _ ->
                    ok
            end,
            Pending = [stdout || maps:get(stdout, Spec, pipe) =:= pipe]
                ++ [stderr || maps:get(stderr, Spec, pipe) =:= pipe],
            Acc = #{out => [], err => [], size => 0, status => undefined, pending => Pending},
            collect(Port, Acc, Deadline, MaxOutput);
        {error, _} = Error ->
            Error
    end.

-spec collect(port(), map(), integer() | infinity, non_neg_integer()) ->
    {ok, run_result()} | {error, {timeout | output_limit, run_result()}}.
collect(Port, #{status := Status, pending := []} = Acc, _, _) when is_integer(Status) ->
    release(Port),
    {ok, result(Acc)};
collect(Port, Acc, Deadline, MaxOutput) ->
    receive
        {Port, {data, Data}} ->
            case decode(Data) of
                {Stream, Bin} when Stream =:= stdout; Stream =:= stderr ->
                    Key = case Stream of stdout -> out; stderr -> err end,
                    Size = maps:get(size, Acc) + byte_size(Bin),
                    Acc1 = Acc#{Key := [maps:get(Key, Acc), Bin], size := Size},
                    case Size > MaxOutput of
                        true ->
                            stop(Port),
                            {error, {output_limit, result(Acc1)}};
                        false ->
                            collect(Port, Acc1, Deadline, MaxOutput)
                    end;
                {eof, Stream} ->
                    collect(Port, Acc#{pending := lists:delete(Stream, maps:get(pending, Acc))},
                            Deadline, MaxOutput);
                {exit, Code} ->
                    collect(Port, Acc#{status := Code}, Deadline, MaxOutput);
                _WriteAck ->
                    collect(Port, Acc, Deadline, MaxOutput)
            end;
        {Port, {exit_status, _}} ->
            %% The port program itself died (killed from outside): what came is all there is.
            true = unlink(Port),
            flush(Port),
            Status = case maps:get(status, Acc) of undefined -> -9; S -> S end,
            {ok, result(Acc#{status := Status})}
    after remaining(Deadline) ->
        stop(Port),
        {error, {timeout, result(Acc)}}
    end.

-spec result(map()) -> run_result().
result(#{out := Out, err := Err, status := Status}) ->
    #{returncode => case Status of undefined -> -9; _ -> Status end,
      stdout => iolist_to_binary(Out), stderr => iolist_to_binary(Err)}.

%% @doc Queues bytes for the command's stdin; the port answers `written' (or
%% `broken_pipe') once the command has taken them all.
-spec write(port(), iodata()) -> ok.
write(Port, Data) ->
    true = port_command(Port, [$D | Data]),
    ok.

-spec close_stdin(port()) -> ok.
close_stdin(Port) ->
    true = port_command(Port, <<"E">>),
    ok.

%% @doc Lets the port program send `Bytes' more of a stream.
-spec grant(port(), stdout | stderr, non_neg_integer()) -> ok.
grant(_Port, _Stream, 0) ->
    ok;
grant(Port, Stream, Bytes) ->
    Tag = case Stream of stdout -> $O; stderr -> $R end,
    Now = min(Bytes, ?MAX_GRANT),
    true = port_command(Port, <<"C", Tag, Now:32>>),
    grant(Port, Stream, Bytes - Now).

%% @doc Sends a signal (a number) to the command, or to its whole process group.
-spec signal(port(), pos_integer(), boolean()) -> ok.
signal(Port, Signal, Group) ->
    true = port_command(Port, <<"K", Signal:32, (case Group of true -> 1; false -> 0 end)>>),
    ok.

%% @doc Done with a port program whose command is over: hands it back to py_exec_pool,
%% which it joins once it has killed whatever the command left running (it answers 'Y'),
%% or closes it when there is no pool. Returns at once; late frames are dropped.
-spec release(port()) -> ok.
release(Port) ->
    try
        case whereis(py_exec_pool) of
            undefined ->
                true = unlink(Port),
                port_close(Port);
            Pool ->
                %% Connected first, so that the answer goes to the pool.
                true = erlang:port_connect(Port, Pool),
                true = unlink(Port),
                port_command(Port, <<"N">>)
        end
    catch
        error:badarg -> ok  % the port program died meanwhile
    end,
    flush(Port).

%% @doc Kills the command and everything it started, and returns once the port program
%% has reaped them all (or after ?STOP_WAIT ms). Late frames are dropped.
-spec stop(port()) -> ok.
stop(Port) ->
    %% Unlinked, so that a caller that traps exits gets no 'EXIT' from the port's end.
    true = unlink(Port),
    try port_command(Port, <<"Z">>) of
        true ->
            receive
                {Port, {exit_status, _}} -> ok
            after ?STOP_WAIT ->
                catch port_close(Port)
            end
    catch
        error:badarg -> ok
    end,
    flush(Port).

%% Drops what the port sent that nobody will read, and its exit if the caller traps exits.
-spec flush(port()) -> ok.
flush(Port) ->
    receive
        {Port, _} -> flush(Port);
        {'EXIT', Port, _} -> flush(Port)
    after 0 ->
        ok
    end.

%% @doc A frame of the port program.
-spec decode(binary()) -> frame().
decode(<<"O", Bin/binary>>) -> {stdout, Bin};
decode(<<"R", Bin/binary>>) -> {stderr, Bin};
decode(<<"o">>) -> {eof, stdout};
decode(<<"r">>) -> {eof, stderr};
decode(<<"W">>) -> written;
decode(<<"w">>) -> broken_pipe;
decode(<<"X", 0, Code:32>>) -> {exit, Code};
decode(<<"X", 1, Signal:32>>) -> {exit, -Signal}.

%% @doc A spec from what a caller gave: a shell command (a binary, run by /bin/sh -c)
%% or an argv list, and options. `{error, {badarg, What}}' names what is wrong.
-spec command_spec(binary() | [binary()], map()) -> {ok, spec()} | {error, {badarg, term()}}.
command_spec(Command, Options) when is_binary(Command) ->
    command_spec([<<"/bin/sh">>, <<"-c">>, Command], Options);
command_spec([_ | _] = Args, Options) ->
    case lists:all(fun is_arg/1, Args) of
        true -> spec_options(maps:to_list(Options), #{args => Args});
        false -> {error, {badarg, {args, Args}}}
    end;
command_spec(Other, _Options) ->
    {error, {badarg, {args, Other}}}.

-spec spec_options([{atom(), term()}], spec()) -> {ok, spec()} | {error, {badarg, term()}}.
spec_options([], Spec) ->
    {ok, Spec};
spec_options([{cwd, Cwd} | Rest], Spec) when is_binary(Cwd) ->
    case is_arg(Cwd) of
        true -> spec_options(Rest, Spec#{cwd => Cwd});
        false -> {error, {badarg, {cwd, Cwd}}}
    end;
spec_options([{env, inherit} | Rest], Spec) ->
    spec_options(Rest, Spec#{env => inherit});
spec_options([{env, Env} | Rest], Spec) when is_list(Env) ->
    Valid = fun({K, V}) -> is_arg(K) andalso K =/= <<>> andalso binary:match(K, <<"=">>) =:= nomatch
                               andalso is_arg(V);
               (_) -> false
            end,
    case lists:all(Valid, Env) of
        true -> spec_options(Rest, Spec#{env => Env});
        false -> {error, {badarg, {env, Env}}}
    end;
spec_options([{Stream, Where} | Rest], Spec)
  when (Stream =:= stdin andalso (Where =:= pipe orelse Where =:= null));
       (Stream =:= stdout andalso (Where =:= pipe orelse Where =:= null orelse Where =:= inherit));
       (Stream =:= stderr andalso (Where =:= pipe orelse Where =:= null orelse Where =:= inherit
                                   orelse Where =:= stdout)) ->
    spec_options(Rest, Spec#{Stream => Where});
spec_options([{Key, Value} | _], _Spec) ->
    {error, {badarg, {Key, Value}}}.

%% An argument, a path, an environment entry: bytes with no NUL, which C could not pass.
-spec is_arg(term()) -> boolean().
is_arg(Arg) ->
    is_binary(Arg) andalso binary:match(Arg, <<0>>) =:= nomatch.

%% ---------------------------------------------------------------------------

-spec start_frame(spec()) -> iodata().
start_frame(#{args := Args} = Spec) ->
    Flags = stream_flags(Spec),
    EnvPart =
        case maps:get(env, Spec, inherit) of
            inherit -> <<16#FFFFFFFF:32>>;
            Env -> [<<(length(Env)):32>>, [[K, $=, V, 0] || {K, V} <- Env]]
        end,
    [$S, <<Flags:32, (length(Args)):32>>, [[A, 0] || A <- Args], EnvPart,
     maps:get(cwd, Spec, <<>>), 0].

%% The bits of py_exec_port.c's F_* flags.
-spec stream_flags(spec()) -> non_neg_integer().
stream_flags(Spec) ->
    In = case maps:get(stdin, Spec, pipe) of pipe -> 16#01; null -> 0 end,
    Out = case maps:get(stdout, Spec, pipe) of pipe -> 16#02; null -> 16#04; inherit -> 0 end,
    Err = case maps:get(stderr, Spec, pipe) of
              pipe -> 16#08; stdout -> 16#10; null -> 16#20; inherit -> 0
          end,
    In bor Out bor Err.

%% Errno values of Linux's asm-generic/errno-base.h, as file:posix() names them.
-spec posix(non_neg_integer()) -> atom().
posix(Errno) ->
    Names = #{1 => eperm, 2 => enoent, 5 => eio, 7 => e2big, 8 => enoexec, 12 => enomem,
              13 => eacces, 20 => enotdir, 21 => eisdir, 22 => einval, 26 => etxtbsy,
              36 => enametoolong, 40 => eloop},
    maps:get(Errno, Names, eio).

-spec deadline(timeout()) -> integer() | infinity.
deadline(infinity) -> infinity;
deadline(Timeout) -> erlang:monotonic_time(millisecond) + Timeout.

-spec remaining(integer() | infinity) -> timeout().
remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).
