%% @private The NIF's Erlang face. Every function here returns at once: Python
%% runs on threads the NIF owns and answers with messages (see py).
-module(py_nif).

-export([priv_dir/0]).
-export([start/1, submit/3, cancel/1, monitor/1, callback_reply/2, submit_nested/4, info/0]).

-on_load(load/0).

-type kind() :: call | eval | exec.
-type request() :: reference().
-type waiter() :: reference().
-export_type([kind/0, request/0, waiter/0]).

-spec load() -> ok | {error, term()}.
load() ->
    Path = filename:join(priv_dir(), "py_nif"),
    erlang:load_nif(Path, 0).

%% @doc The application's priv directory, also when it runs from a bare code path.
-spec priv_dir() -> file:filename().
priv_dir() ->
    case code:priv_dir(erlang_python) of
        {error, bad_name} ->
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

%% @doc Starts the interpreter and its worker threads, once per OS process.
-spec start(#{python => binary(), python_path => binary(), workers => pos_integer(),
              atom_limit => non_neg_integer(), give_up_after => non_neg_integer(),
              max_given_up => non_neg_integer()}) ->
    ok | already_started | {error, binary()}.
start(_Options) ->
    erlang:nif_error(not_loaded).

%% @doc Queues a request; the result arrives as `{py_result, Ref, Result}'.
-spec submit(kind(), reference(), term()) -> {ok, request()} | {error, not_started}.
submit(_Kind, _Ref, _Payload) ->
    erlang:nif_error(not_loaded).

%% @doc Cancels a request: interrupts it if it runs, drops it if it waits.
%% `callback_pending': a callback message for it is still to arrive.
-spec cancel(request()) -> ok | already_sent | callback_pending.
cancel(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Makes the caller's death cancel the request (callers ask only once a
%% call has not been answered at once, so fast calls set no monitor).
-spec monitor(request()) -> ok.
monitor(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Hands the result of a callback to the Python thread waiting for it.
-spec callback_reply(waiter(), term()) -> ok | {error, closed}.
callback_reply(_Waiter, _Reply) ->
    erlang:nif_error(not_loaded).

%% @doc Queues a request on the thread waiting on Waiter (a nested call).
-spec submit_nested(waiter(), kind(), reference(), term()) ->
    {ok, request()} | {error, closed}.
submit_nested(_Waiter, _Kind, _Ref, _Payload) ->
    erlang:nif_error(not_loaded).

%% @doc The interpreter and the pool: see py:info/0.
-spec info() -> #{atom() => term()}.
info() ->
    erlang:nif_error(not_loaded).
