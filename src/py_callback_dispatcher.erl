%% @private Receives the callbacks of Python threads that run no py:call (a
%% threading.Thread, say) and runs each in a process of its own, so that a
%% slow function holds up no other. If that process dies before it replies,
%% the Python thread gets the exit as an erlang.ErlangException.
-module(py_callback_dispatcher).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec init([]) -> {ok, #{reference() => py_nif:waiter()}}.
init([]) ->
    {ok, #{}}.

-spec handle_call(term(), gen_server:from(), State) -> {reply, {error, unknown_call}, State}.
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), State) -> {noreply, State}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), State) -> {noreply, State} when
    State :: #{reference() => py_nif:waiter()}.
handle_info({py_callback, undefined, Waiter, Name, Args}, Running) ->
    {_, Monitor} = spawn_monitor(py_callback, run, [Waiter, Name, Args]),
    {noreply, Running#{Monitor => Waiter}};
handle_info({'DOWN', Monitor, process, _, Reason}, Running) ->
    case maps:take(Monitor, Running) of
        {Waiter, Rest} when Reason =/= normal ->
            %% Ignored if the process replied before it died.
            _ = py_nif:callback_reply(Waiter, py_callback:error_reply(exit, Reason, [])),
            {noreply, Rest};
        {_, Rest} ->
            {noreply, Rest};
        error ->
            {noreply, Running}
    end;
handle_info(_Other, State) ->
    {noreply, State}.
