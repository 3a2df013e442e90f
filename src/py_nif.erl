%% @private The NIF's Erlang face. Every function here returns at once: Python
%% runs on threads the NIF owns and answers with messages (see py).
-module(py_nif).

-export([priv_dir/0]).
-export([start/1, submit/2, submit/3, submit/4, submit/5, poll/1, arm/2, disarm/1, cancel/1,
         demonitor/1]).
-export([callback_reply/2, submit_nested/3, submit_nested/4, submit_nested/5, info/0]).
-export([stream_active/2, stream_cancel/1]).
-export([loop_attach/1, loop_select/1, loop_ready/1, loop_timer/2, loop_post/5, loop_reply/3,
         loop_stop/1]).

-on_load(load/0).

-type kind() :: call | eval | exec | getattr | call_method | to_term | stream.
%% How the answer is made (c_src/py_request.h): 1 the result as a handle, 2 detailed errors,
%% 4 detached (callbacks to the dispatcher), 8 the result discarded (errors logged).
-type flags() :: 0..15.
-type request() :: reference().
-type waiter() :: reference().
-type callback() :: {py_callback, waiter(), binary() | atom(), [term()]}.
-type result() :: ok | {ok, term()} | {error, term()}.
-type loop() :: reference().
-export_type([kind/0, flags/0, request/0, waiter/0, callback/0, result/0, loop/0]).

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

%% @doc Queues a request. `SpinMicros': how long polling for the answer pays before the
%% caller sleeps (0 when no worker was awake to take it at once). How the answer is then
%% taken: c_src/py_request.h and docs/runtime.md, "Waiting for the answer".
-spec submit(kind(), term()) -> {ok, request(), non_neg_integer()} | {error, not_started}.
submit(_Kind, _Payload) ->
    erlang:nif_error(not_loaded).

%% @doc submit/2, with the group leader Python's output for this call goes to.
-spec submit(kind(), term(), pid()) -> {ok, request(), non_neg_integer()} | {error, not_started}.
submit(_Kind, _Payload, _GroupLeader) ->
    erlang:nif_error(not_loaded).

%% @doc submit/3, with flags (flags()).
-spec submit(kind(), term(), pid(), flags()) ->
    {ok, request(), non_neg_integer()} | {error, not_started}.
submit(_Kind, _Payload, _GroupLeader, _Flags) ->
    erlang:nif_error(not_loaded).

%% @doc submit/4, with a deadline of the request's own, in ms from now: past it the request
%% is cancelled and its caller gets `{error, timeout}' (py:async_call).
-spec submit(kind(), term(), pid(), flags(), non_neg_integer()) ->
    {ok, request(), non_neg_integer()} | {error, not_started}.
submit(_Kind, _Payload, _GroupLeader, _Flags, _TimeoutMs) ->
    erlang:nif_error(not_loaded).

%% @doc What the request holds for its caller: nothing yet (`pending'), something too
%% large to copy here (`ready': arm/2 sends it), a callback to run, or the result.
-spec poll(request()) -> pending | ready | callback() | result().
poll(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Like poll/1; `armed' when nothing is there yet: the next result or callback is
%% then sent as `{py_result, Ref, Result}' or `{py_callback, Ref, Waiter, Name, Args}',
%% once. Also makes the caller's death cancel the request.
%% `gone': the request's answer was delivered or it was cancelled already.
-spec arm(request(), reference()) -> armed | gone | callback() | result().
arm(_Request, _Ref) ->
    erlang:nif_error(not_loaded).

%% @doc Undoes arm/2: `sent' when its message was sent already.
-spec disarm(request()) -> disarmed | sent.
disarm(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Cancels an armed request: interrupts it if it runs, drops it if it waits.
%% `sent': the armed message was sent already (a result to return, or a callback nobody
%% waits for any more); a result kept before the cancellation is returned.
-spec cancel(request()) -> cancelled | sent | result().
cancel(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Removes the monitor arm/2 set: for a caller that received its result message
%% (results taken by poll/1, arm/2 or cancel/1 remove it themselves).
-spec demonitor(request()) -> ok.
demonitor(_Request) ->
    erlang:nif_error(not_loaded).

%% @doc Hands the result of a callback to the Python thread waiting for it.
-spec callback_reply(waiter(), term()) -> ok | {error, closed}.
callback_reply(_Waiter, _Reply) ->
    erlang:nif_error(not_loaded).

%% @doc Queues a request on the thread waiting on Waiter (a nested call).
-spec submit_nested(waiter(), kind(), term()) ->
    {ok, request(), non_neg_integer()} | {error, closed}.
submit_nested(_Waiter, _Kind, _Payload) ->
    erlang:nif_error(not_loaded).

%% @doc submit_nested/3, with the group leader Python's output for this call goes to.
-spec submit_nested(waiter(), kind(), term(), pid()) ->
    {ok, request(), non_neg_integer()} | {error, closed}.
submit_nested(_Waiter, _Kind, _Payload, _GroupLeader) ->
    erlang:nif_error(not_loaded).

%% @doc submit_nested/4, with flags (flags(); detaching ones are refused).
-spec submit_nested(waiter(), kind(), term(), pid(), flags()) ->
    {ok, request(), non_neg_integer()} | {error, closed}.
submit_nested(_Waiter, _Kind, _Payload, _GroupLeader, _Flags) ->
    erlang:nif_error(not_loaded).

%% @doc A stream's credit (c_src/py_stream.h): N more items, `true' for no limit, `false'
%% for none.
-spec stream_active(reference(), pos_integer() | boolean()) -> ok | {error, closed}.
stream_active(_Stream, _Active) ->
    erlang:nif_error(not_loaded).

%% @doc Closes a stream: no message is sent for it after this returns.
-spec stream_cancel(reference()) -> ok.
stream_cancel(_Stream) ->
    erlang:nif_error(not_loaded).

%% @doc The interpreter and the pool: see py:info/0.
-spec info() -> #{atom() => term()}.
info() ->
    erlang:nif_error(not_loaded).

%% The C side of an ErlangEventLoop (c_src/py_loop.h), for its driver, py_event_loop.

%% @doc The calling process drives the loop from now on (it is monitored).
-spec loop_attach(loop()) -> ok | {error, closed}.
loop_attach(_Loop) ->
    erlang:nif_error(not_loaded).

%% @doc Sends `{select, Loop, undefined, ready_input}' once the loop's epoll set has
%% something ready.
-spec loop_select(loop()) -> ok | {error, closed | select_failed}.
loop_select(_Loop) ->
    erlang:nif_error(not_loaded).

%% @doc The select fired: wakes the loop's thread.
-spec loop_ready(loop()) -> ok.
loop_ready(_Loop) ->
    erlang:nif_error(not_loaded).

%% @doc The timer of the loop's wait `Gen' fired: wakes the loop's thread if it still waits.
-spec loop_timer(loop(), non_neg_integer()) -> ok.
loop_timer(_Loop, _Gen) ->
    erlang:nif_error(not_loaded).

%% @doc An event for the loop's thread: an async call's reply or a mailbox's message.
-spec loop_post(loop(), reply | message, term(), term(), term()) -> ok | {error, closed | enomem}.
loop_post(_Loop, _Kind, _Id, _Name, _Value) ->
    erlang:nif_error(not_loaded).

%% @doc The answer to the loop thread's request `Seq'.
-spec loop_reply(loop(), non_neg_integer(), term()) -> ok | {error, enomem}.
loop_reply(_Loop, _Seq, _Reply) ->
    erlang:nif_error(not_loaded).

%% @doc Stops watching the loop's epoll set and closes it.
-spec loop_stop(loop()) -> ok.
loop_stop(_Loop) ->
    erlang:nif_error(not_loaded).
