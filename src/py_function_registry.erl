%% @private Erlang functions that Python may call by name. The table belongs to
%% this process, not to whoever registered a function, so registrations
%% survive their makers; lookups read the table directly.
-module(py_function_registry).
-behaviour(gen_server).

-export([start_link/0, register/2, unregister/1, lookup/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TABLE, py_functions).

-type target() :: fun(([term()]) -> term()) | {module(), atom()}.
-export_type([target/0]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec register(binary(), target()) -> ok.
register(Name, Target) ->
    gen_server:call(?MODULE, {register, Name, Target}).

-spec unregister(binary()) -> ok.
unregister(Name) ->
    gen_server:call(?MODULE, {unregister, Name}).

-spec lookup(binary()) -> {ok, target()} | error.
lookup(Name) ->
    try ets:lookup(?TABLE, Name) of
        [{_, Target}] -> {ok, Target};
        [] -> error
    catch
        error:badarg -> error
    end.

%% The table starts with the port helpers (run_shell, run, start_worker), which users may
%% replace like any registration.
-spec init([]) -> {ok, #{}}.
init([]) ->
    _ = ets:new(?TABLE, [named_table, protected, set, {read_concurrency, true}]),
    true = ets:insert(?TABLE, py_port_helpers:functions()),
    {ok, #{}}.

%% Anything else is logged and answered, never a crash: a crash would take the table, and
%% every registration, with it.
-spec handle_call(term(), gen_server:from(), State) -> {reply, ok | {error, unknown_call}, State}.
handle_call({register, Name, Target}, _From, State) ->
    true = ets:insert(?TABLE, {Name, Target}),
    {reply, ok, State};
handle_call({unregister, Name}, _From, State) ->
    true = ets:delete(?TABLE, Name),
    {reply, ok, State};
handle_call(Request, From, State) ->
    unexpected(call, Request, From),
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), State) -> {noreply, State}.
handle_cast(Msg, State) ->
    unexpected(cast, Msg, undefined),
    {noreply, State}.

-spec handle_info(term(), State) -> {noreply, State}.
handle_info(Msg, State) ->
    unexpected(info, Msg, undefined),
    {noreply, State}.

-spec unexpected(call | cast | info, term(), gen_server:from() | undefined) -> ok.
unexpected(Kind, Message, From) ->
    logger:warning("py_function_registry: unexpected ~p ~0tP from ~0tp, ignored",
                   [Kind, Message, 20, From], #{domain => [erlang_python]}).
