%% @private Events of the worker pool that an operator should see: the NIF's cancellation
%% watch (c_src/py_cancel.c) sends `{py_worker_given_up, What, Ms}' when it gives a worker
%% up, and this logs a warning. py:info/0 has the counts.
-module(py_pool_events).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

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
handle_info({py_worker_given_up, What, Ms}, State) ->
    #{given_up := Now, max_given_up := Max} = py_nif:info(),
    logger:warning("erlang_python: a worker still ran ~tp ~b ms after its call was cancelled; "
                   "it was given up and replaced (~b of at most ~b given up now)",
                   [What, Ms, Now, Max], #{domain => [erlang_python]}),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.
