%% @private The function registry, the dispatcher of callbacks from Python threads that
%% run no py:call, the starter of event loop drivers (py_event_loop), the writer of Python's
%% output (py_output), the log of the pool's events, the port programs kept for reuse, the
%% supervisor of long-running OS commands (port helpers), and that of the named pools.
-module(erlang_python_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Children = [
        #{id => py_function_registry, start => {py_function_registry, start_link, []}},
        #{id => py_callback_dispatcher, start => {py_callback_dispatcher, start_link, []}},
        #{id => py_event_loop, start => {py_event_loop, start_link, []}},
        #{id => py_output, start => {py_output, start_link, []}},
        #{id => py_pool_events, start => {py_pool_events, start_link, []}},
        #{id => py_exec_pool, start => {py_exec_pool, start_link, []}},
        #{id => py_port_worker_sup, start => {py_port_worker_sup, start_link, []},
          type => supervisor},
        #{id => py_pool_sup, start => {py_pool_sup, start_link, []}, type => supervisor,
          shutdown => infinity}
    ],
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, Children}}.
