%% @private The supervisor of the long-running OS commands (py_port_worker), one
%% temporary child each: a command that ends is not restarted.
-module(py_port_worker_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Worker = #{id => py_port_worker, start => {py_port_worker, start_link, []},
               restart => temporary, shutdown => 5000},
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10}, [Worker]}}.
