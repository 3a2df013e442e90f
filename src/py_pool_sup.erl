%% @private The supervisor of the named pools (py_pool): one py_pool_manager each, started
%% by py:start_pool/2 or from the application env `pools' at boot.
-module(py_pool_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, start_configured/0]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    ok = py_pool:init_atom_budget(application:get_env(erlang_python, atom_limit, 10000)),
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, []}}.

%% @doc Starts the pools of the application env `pools': `#{Name => Options}' or
%% `[{Name, Options}]'.
-spec start_configured() -> ok | {error, term()}.
start_configured() ->
    Pools = case application:get_env(erlang_python, pools, []) of
                Map when is_map(Map) -> maps:to_list(Map);
                List -> List
            end,
    start_each(Pools).

start_each([]) ->
    ok;
start_each([{Name, Options} | Rest]) ->
    case py_pool:start_pool(Name, Options) of
        {ok, _} -> start_each(Rest);
        {error, Reason} -> {error, {pool_start_failed, Name, Reason}}
    end;
start_each([Bad | _]) ->
    {error, {bad_env, pools, Bad}}.
