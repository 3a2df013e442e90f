%% @private Idle port programs (priv/py_exec_port), kept for the next command, so that
%% starting a command costs one fork and exec (the command's), as a plain port does, and
%% not two.
%%
%% An idle port program waits for its start frame and has sent nothing, so handing its port
%% to the process that runs a command (port_connect/2) loses no message. That process owns
%% the port from then on, exactly as if it had opened it: when it dies, the port closes and
%% the command's process tree is killed (py_exec). A command that ended cleanly hands its
%% port back (py_exec:release/1): the port program kills what the command left running,
%% answers `Y', and is idle again. When none is idle the caller opens its own, which joins
%% the pool afterwards up to ?IDLE; past that, returned ones are closed.
-module(py_exec_pool).
-behaviour(gen_server).

-export([start_link/0, checkout/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Idle port programs kept: each is a sleeping OS process of a few hundred KB.
-define(IDLE, 4).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc A ready port program, now owned by (and linked to) the caller; `none' if there is
%% none ready or the pool is not running.
-spec checkout() -> {ok, port()} | none.
checkout() ->
    try
        gen_server:call(?MODULE, checkout)
    catch
        exit:_ -> none
    end.

-spec init([]) -> {ok, [port()]}.
init([]) ->
    {ok, [open() || _ <- lists:seq(1, ?IDLE)]}.

-spec handle_call(checkout, gen_server:from(), [port()]) -> {reply, {ok, port()} | none, [port()]}.
handle_call(checkout, {Caller, _}, [Port | Idle]) ->
    true = erlang:port_connect(Port, Caller),
    true = unlink(Port),
    {reply, {ok, Port}, Idle};
handle_call(checkout, _From, []) ->
    {reply, none, []}.

-spec handle_cast(term(), [port()]) -> {noreply, [port()]}.
handle_cast(_Msg, Idle) ->
    {noreply, Idle}.

-spec handle_info(term(), [port()]) -> {noreply, [port()]}.
handle_info({Port, {data, <<"Y">>}}, Idle) when length(Idle) < ?IDLE ->
    {noreply, [Port | Idle]};
handle_info({Port, {data, <<"Y">>}}, Idle) ->
    port_close(Port),
    {noreply, Idle};
handle_info({Port, {exit_status, _}}, Idle) ->
    %% An idle port program died (killed from outside): forget it.
    {noreply, lists:delete(Port, Idle)};
handle_info(_Other, Idle) ->
    {noreply, Idle}.

-spec open() -> port().
open() ->
    py_exec:open().
