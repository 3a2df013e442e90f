%% Test helper: a fresh VM (an OS process of its own) for cases that need a new
%% interpreter (the interpreter lives as long as its OS process) or that could
%% take their VM down.
-module(py_test_peer).

-export([start/1, call/4, call/5, stop/1, os_pid/1]).

%% Options: start_app (default true), env: [{Key, Value}] for erlang_python.
-spec start(map()) -> {ok, pid(), pid()}.
start(Options) ->
    Paths = [Dir || Dir <- code:get_path(), string:find(Dir, "_build") =/= nomatch],
    {ok, Peer, _Node} = peer:start_link(#{connection => standard_io,
                                   args => ["-pa" | Paths]}),
    ok = peer:call(Peer, application, load, [erlang_python]),
    [ok = peer:call(Peer, application, set_env, [erlang_python, Key, Value])
     || {Key, Value} <- maps:get(env, Options, [])],
    case maps:get(start_app, Options, true) of
        true -> {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python]);
        false -> ok
    end,
    {ok, Peer, Peer}.

-spec call(pid(), module(), atom(), [term()]) -> term().
call(Peer, Module, Function, Args) ->
    call(Peer, Module, Function, Args, 30000).

-spec call(pid(), module(), atom(), [term()], timeout()) -> term().
call(Peer, Module, Function, Args, Timeout) ->
    peer:call(Peer, Module, Function, Args, Timeout).

-spec os_pid(pid()) -> string().
os_pid(Peer) ->
    peer:call(Peer, os, getpid, []).

-spec stop(pid()) -> ok.
stop(Peer) ->
    try peer:stop(Peer) catch _:_ -> ok end,
    ok.
