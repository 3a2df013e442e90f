-module(py_rel_demo).
-behaviour(application).
-export([start/2, stop/1]).

%% Calls Python (its own module in priv/python included), writes what it got to the file
%% named by PY_REL_DEMO_OUT, and stops the node.
start(_Type, _Args) ->
    Pid = spawn(fun() ->
        Result = {py:call(math, sqrt, [16]), py:call(rel_demo_py, hello, [])},
        ok = file:write_file(os:getenv("PY_REL_DEMO_OUT"), io_lib:format("~p.~n", [Result])),
        init:stop()
    end),
    {ok, Pid}.

stop(_State) ->
    ok.
