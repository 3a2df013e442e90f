%% @doc Calling Python from Erlang, and Erlang functions for Python to call.
%%
%% Every call is a request to a Python worker thread; the caller waits for
%% the answer in a `receive' with a timeout, so no scheduler ever runs Python.
%% All functions return values, never raise, for any input:
%%
%% <ul>
%% <li>`{error, {Type, Message, Traceback}}': Python raised. `Type' is the
%%   exception class name, an atom for every builtin exception (and for any
%%   class whose name already exists as an atom), else a binary; `Message'
%%   is `str(exception)' and `Traceback' the formatted traceback, binaries.</li>
%% <li>`{error, timeout}': no answer within the timeout; the Python code was
%%   interrupted (at its next bytecode: a long C call finishes first).</li>
%% <li>`{error, {badarg, What}}': an argument of the wrong type.</li>
%% <li>`{error, not_started}': the erlang_python application is not running.</li>
%% </ul>
%%
%% Conversion of terms and objects follows docs/type-conversion.md.
-module(py).

-include("py_request_flags.hrl").

-export([call/3, call/4, call/5]).
-export([eval/1, eval/2, eval/3]).
-export([exec/1, exec/2]).
-export([getattr/2, getattr/3, call_method/3, call_method/4, call_method/5, to_term/1,
         to_term/2, is_object/1]).
-export([stream/3, stream/4, stream/5, stream_active/2, stream_cancel/1]).
-export([async_call/3, async_call/4, async_call/5, await/1, await/2, cast/3, cast/4]).
-export([start_pool/2, stop_pool/1, pools/0]).
-export([pool_async_run/7, resolve_path/1]).
-export([version/0, executable/0, sys_path/0, add_path/1, sync_log_level/0, info/0]).
-export([register_function/2, register_function/3, unregister_function/1]).

-define(DEFAULT_TIMEOUT, 30000).
%% The argument checks, as guards: the common, valid call is checked in its
%% clause's guard and builds nothing; check/1 names the bad argument otherwise.
-define(IS_NAME(Name), (is_atom(Name) orelse (is_binary(Name) andalso Name =/= <<>>))).
-define(IS_TIMEOUT(Timeout),
        (Timeout =:= infinity orelse (is_integer(Timeout) andalso Timeout >= 0))).
-define(IS_OBJECT(Term), (tuple_size(Term) =:= 2 andalso element(1, Term) =:= '$py_object'
                          andalso is_reference(element(2, Term)))).
-define(IS_ACTIVE(Active), (is_boolean(Active) orelse
                            (is_integer(Active) andalso Active > 0
                             andalso Active =< ?MAX_ACTIVE))).
-define(MAX_ACTIVE, 16#7FFFFFFF).
%% How long a caller polls for the answer after a callback before it sleeps in `receive'
%% (after a submit, the NIF says: CALLER_SPIN_US in c_src/py_worker.h).
-define(POLL_MICROSECONDS, 10).
%% How long a Python thread waiting in erlang.call spins before it sleeps (WAIT_SPIN_NS in
%% c_src/py_callback.c).
-define(THREAD_SPIN_MICROSECONDS, 20).
-define(CENTURY_MS, 3153600000000).
%% The longest wait `receive ... after' takes.
-define(MAX_AFTER, 16#FFFFFFFF).

-type name() :: atom() | binary().
-type code() :: iodata() | unicode:chardata().
-type timeout_ms() :: non_neg_integer() | infinity.
-type python_error() :: {Type :: atom() | binary(), Message :: binary(), Traceback :: binary()}
                      | {Type :: atom() | binary(), Message :: binary(), Traceback :: binary(),
                         Info :: #{atom() => term()}}.
-type error_reason() ::
    python_error() | timeout | not_started | {badarg, {atom(), term()}}.
%% A directory for `sys.path': a path, or `{priv, App, SubDir}', SubDir in App's priv
%% directory (what a release ships).
-type path_entry() :: file:filename_all() | {priv, atom(), file:filename_all()}.
%% A Python object held from Erlang (docs/objects.md).
-opaque object() :: {'$py_object', reference()}.
%% The options of a call (docs/objects.md, "Options"): a plain timeout is `#{timeout => T}'.
-type options() :: #{timeout => timeout_ms(), return => term | object,
                     errors => brief | detailed, pool => atom()}.
-type stream_options() :: #{timeout => timeout_ms(), return => term | object,
                            errors => brief | detailed, active => pos_integer() | boolean(),
                            pool => default}.
-type stream() :: reference().
-type async_ref() :: reference().
-export_type([name/0, code/0, timeout_ms/0, python_error/0, error_reason/0, path_entry/0,
              object/0, options/0, stream_options/0, stream/0, async_ref/0]).

%% @equiv call(Module, Function, Args, #{})
-spec call(name(), name(), [term()]) -> {ok, term()} | {error, error_reason()}.
call(Module, Function, Args) ->
    call(Module, Function, Args, #{}).

%% @equiv call(Module, Function, Args, Kwargs, 30000)
-spec call(name(), name(), [term()], map()) -> {ok, term()} | {error, error_reason()}.
call(Module, Function, Args, Kwargs) ->
    call(Module, Function, Args, Kwargs, ?DEFAULT_TIMEOUT).

%% @doc Calls `Module.Function(*Args, **Kwargs)' and returns its result.
%%
%% `Module' may be dotted (`` 'os.path' ''); `'__main__'' is the namespace that
%% {@link exec/1} and {@link eval/1} use. `Function' may be a dotted path of
%% attributes (`<<"path.join">>' in module `os'). Kwargs keys are atoms or binaries.
%% `Options' is a timeout in ms, or a map (docs/objects.md, "Options"): `timeout',
%% `return => object' for a handle to the result instead of a term, `errors => detailed'
%% for `{Type, Message, Traceback, Info}' errors (docs/errors.md).
-spec call(name(), name(), [term()], map(), timeout_ms() | options()) ->
    {ok, term()} | {error, error_reason()}.
call(Module, Function, Args, Kwargs, Timeout)
  when ?IS_NAME(Module), ?IS_NAME(Function), is_list(Args), is_map(Kwargs),
       ?IS_TIMEOUT(Timeout) ->
    request(call, {Module, Function, Args, Kwargs}, Timeout, 0);
call(Module, Function, Args, Kwargs, Options)
  when ?IS_NAME(Module), ?IS_NAME(Function), is_list(Args), is_map(Kwargs), is_map(Options) ->
    options_request(call, {Module, Function, Args, Kwargs}, Options);
call(Module, Function, Args, Kwargs, Options) ->
    check([{module, Module, fun is_name/1}, {function, Function, fun is_name/1},
           {args, Args, fun is_list/1}, {kwargs, Kwargs, fun is_map/1},
           {timeout, Options, fun is_options/1}]).

%% @equiv eval(Code, #{})
-spec eval(code()) -> {ok, term()} | {error, error_reason()}.
eval(Code) ->
    eval(Code, #{}).

%% @equiv eval(Code, Locals, 30000)
-spec eval(code(), map()) -> {ok, term()} | {error, error_reason()}.
eval(Code, Locals) ->
    eval(Code, Locals, ?DEFAULT_TIMEOUT).

%% @doc Evaluates a Python expression in `__main__''s namespace, with the
%% entries of `Locals' (keys atoms or binaries) added for this evaluation only.
%% `Options' as for {@link call/5}.
-spec eval(code(), map(), timeout_ms() | options()) -> {ok, term()} | {error, error_reason()}.
eval(Code, Locals, Options) when is_map(Locals) ->
    case {source(Code), options(Options)} of
        {{ok, Source}, {ok, Timeout, Flags, Extra}} ->
            dispatch(eval, {Source, Locals}, Timeout, Flags, Extra);
        {{error, _} = Error, _} -> Error;
        {_, Error} -> Error
    end;
eval(_Code, Locals, Options) ->
    check([{locals, Locals, fun is_map/1}, {timeout, Options, fun is_options/1}]).

%% @equiv exec(Code, 30000)
-spec exec(code()) -> ok | {error, error_reason()}.
exec(Code) ->
    exec(Code, ?DEFAULT_TIMEOUT).

%% @doc Runs Python statements in `__main__''s namespace: what they define is
%% seen by later calls of {@link eval/1} and `call('__main__', ...)'. `Options' as for
%% {@link call/5} (`return' does not apply).
-spec exec(code(), timeout_ms() | options()) -> ok | {error, error_reason()}.
exec(Code, Options) ->
    case {source(Code), options(Options)} of
        {{ok, Source}, {ok, Timeout, Flags, Extra}} ->
            dispatch(exec, Source, Timeout, Flags, Extra);
        {{error, _} = Error, _} -> Error;
        {_, Error} -> Error
    end.

%% ---------------------------------------------------------------------------
%% Objects (docs/objects.md)

%% @equiv getattr(Object, Name, #{})
-spec getattr(object(), name()) -> {ok, term()} | {error, error_reason()}.
getattr(Object, Name) ->
    getattr(Object, Name, #{}).

%% @doc The attribute `Name' of the object, converted (or a handle, with
%% `return => object').
-spec getattr(object(), name(), timeout_ms() | options()) ->
    {ok, term()} | {error, error_reason()}.
getattr(Object, Name, Options) when ?IS_OBJECT(Object), ?IS_NAME(Name) ->
    options_request(getattr, {Object, Name}, Options);
getattr(Object, Name, Options) ->
    check([{object, Object, fun is_object/1}, {name, Name, fun is_name/1},
           {timeout, Options, fun is_options/1}]).

%% @equiv call_method(Object, Name, Args, #{}, #{})
-spec call_method(object(), name(), [term()]) -> {ok, term()} | {error, error_reason()}.
call_method(Object, Name, Args) ->
    call_method(Object, Name, Args, #{}, #{}).

%% @equiv call_method(Object, Name, Args, Kwargs, #{})
-spec call_method(object(), name(), [term()], map()) -> {ok, term()} | {error, error_reason()}.
call_method(Object, Name, Args, Kwargs) ->
    call_method(Object, Name, Args, Kwargs, #{}).

%% @doc Calls the method `Name' of the object with `Args' and `Kwargs'; `Options' as for
%% {@link call/5}.
-spec call_method(object(), name(), [term()], map(), timeout_ms() | options()) ->
    {ok, term()} | {error, error_reason()}.
call_method(Object, Name, Args, Kwargs, Options)
  when ?IS_OBJECT(Object), ?IS_NAME(Name), is_list(Args), is_map(Kwargs) ->
    options_request(call_method, {Object, Name, Args, Kwargs}, Options);
call_method(Object, Name, Args, Kwargs, Options) ->
    check([{object, Object, fun is_object/1}, {name, Name, fun is_name/1},
           {args, Args, fun is_list/1}, {kwargs, Kwargs, fun is_map/1},
           {timeout, Options, fun is_options/1}]).

%% @equiv to_term(Object, #{})
-spec to_term(object()) -> {ok, term()} | {error, error_reason()}.
to_term(Object) ->
    to_term(Object, #{}).

%% @doc The object converted to a term, by the rules of docs/type-conversion.md.
-spec to_term(object(), timeout_ms() | options()) -> {ok, term()} | {error, error_reason()}.
to_term(Object, Options) when ?IS_OBJECT(Object) ->
    case options(Options) of
        {ok, Timeout, Flags, Extra} ->
            dispatch(to_term, Object, Timeout, Flags band bnot ?RETURN_OBJECT, Extra);
        Error ->
            Error
    end;
to_term(Object, Options) ->
    check([{object, Object, fun is_object/1}, {timeout, Options, fun is_options/1}]).

%% @doc Whether `Term' is a handle to a Python object. A handle sent to another node, or
%% kept past the life of the VM that made it, still is one, but using it gives a
%% `ReferenceError' (docs/objects.md).
-spec is_object(term()) -> boolean().
is_object(Term) when ?IS_OBJECT(Term) -> true;
is_object(_) -> false.

%% A request with the flags and pool its options map gives.
-spec options_request(py_nif:kind(), tuple(), timeout_ms() | options()) ->
    {ok, term()} | {error, error_reason()}.
options_request(Kind, Payload, Options) ->
    case options(Options) of
        {ok, Timeout, Flags, Extra} -> dispatch(Kind, Payload, Timeout, Flags, Extra);
        Error -> Error
    end.

%% ---------------------------------------------------------------------------
%% Streams (docs/streams.md)

%% @equiv stream(Module, Function, Args, #{}, #{})
-spec stream(name(), name(), [term()]) -> {ok, stream()} | {error, error_reason()}.
stream(Module, Function, Args) ->
    stream(Module, Function, Args, #{}, #{}).

%% @equiv stream(Module, Function, Args, Kwargs, #{})
-spec stream(name(), name(), [term()], map()) -> {ok, stream()} | {error, error_reason()}.
stream(Module, Function, Args, Kwargs) ->
    stream(Module, Function, Args, Kwargs, #{}).

%% @doc Calls `Module.Function(*Args, **Kwargs)', which must return an iterable (a
%% generator, an iterator, a list, an async generator...), and sends its items to the
%% caller, one message each: `{py_stream, Ref, {data, Item}}', then `{py_stream, Ref, done}'
%% or `{py_stream, Ref, {error, Reason}}'. `active' (default `true') bounds the items sent
%% before the caller asks for more, as gen_tcp's `{active, N}' does: after N items comes
%% `{py_stream, Ref, passive}', and {@link stream_active/2} asks for more. The caller's
%% death, or {@link stream_cancel/1}, closes the iterator. `timeout' applies to the call
%% that makes the iterable; `return => object' sends items as handles.
-spec stream(name(), name(), [term()], map(), timeout_ms() | stream_options()) ->
    {ok, stream()} | {error, error_reason()}.
stream(Module, Function, Args, Kwargs, Options)
  when ?IS_NAME(Module), ?IS_NAME(Function), is_list(Args), is_map(Kwargs) ->
    case options(Options, true) of
        {ok, _, _, #{pool := Pool}} when Pool =/= default ->
            %% Its items are sent by the VM's workers to the caller (docs/streams.md).
            {error, {badarg, {option, {pool, Pool}}}};
        {ok, Timeout, Flags, Extra} ->
            Active = case maps:get(active, Extra, true) of
                         true -> -1;
                         false -> 0;
                         N -> N
                     end,
            request(stream, {Module, Function, Args, Kwargs, Active}, Timeout, Flags);
        Error ->
            Error
    end;
stream(Module, Function, Args, Kwargs, Options) ->
    check([{module, Module, fun is_name/1}, {function, Function, fun is_name/1},
           {args, Args, fun is_list/1}, {kwargs, Kwargs, fun is_map/1},
           {timeout, Options, fun is_options/1}]).

%% @doc Sets how many more items the stream may send: `N' more (added to those it may
%% still send), `true' for no limit, `false' for none until asked again. `{error, closed}'
%% once the stream has ended or was cancelled.
-spec stream_active(stream(), pos_integer() | boolean()) ->
    ok | {error, closed | {badarg, term()}}.
stream_active(Stream, Active) when is_reference(Stream), ?IS_ACTIVE(Active) ->
    try py_nif:stream_active(Stream, Active)
    catch error:badarg -> {error, {badarg, {stream, Stream}}}
    end;
stream_active(Stream, Active) ->
    check([{stream, Stream, fun is_reference/1}, {active, Active, fun is_active/1}]).

%% @doc Closes the stream: its iterator is closed on a worker (a generator's `finally'
%% runs), and no message for it is sent after this returns (those sent before stay in the
%% mailbox). `ok' also for a stream that has ended.
-spec stream_cancel(stream()) -> ok | {error, {badarg, term()}}.
stream_cancel(Stream) when is_reference(Stream) ->
    try py_nif:stream_cancel(Stream)
    catch error:badarg -> {error, {badarg, {stream, Stream}}}
    end;
stream_cancel(Stream) ->
    {error, {badarg, {stream, Stream}}}.

%% ---------------------------------------------------------------------------
%% Asynchronous calls

%% @equiv async_call(Module, Function, Args, #{}, #{})
-spec async_call(name(), name(), [term()]) -> {ok, async_ref()} | {error, error_reason()}.
async_call(Module, Function, Args) ->
    async_call(Module, Function, Args, #{}, #{}).

%% @equiv async_call(Module, Function, Args, Kwargs, #{})
-spec async_call(name(), name(), [term()], map()) ->
    {ok, async_ref()} | {error, error_reason()}.
async_call(Module, Function, Args, Kwargs) ->
    async_call(Module, Function, Args, Kwargs, #{}).

%% @doc Starts `Module.Function(*Args, **Kwargs)' and returns at once; {@link await/2}
%% returns what {@link call/5} would have. The call's `timeout' (default 30000 ms) counts
%% from now, awaited or not: past it the call is cancelled and its await gives
%% `{error, timeout}'. The caller's death cancels it. Its `erlang.call's are run by the
%% dispatcher (a process of their own each), not by the caller.
-spec async_call(name(), name(), [term()], map(), timeout_ms() | options()) ->
    {ok, async_ref()} | {error, error_reason()}.
async_call(Module, Function, Args, Kwargs, Options)
  when ?IS_NAME(Module), ?IS_NAME(Function), is_list(Args), is_map(Kwargs) ->
    case options(Options) of
        {ok, _, _, #{pool := Pool}} when Pool =/= default ->
            pool_async_call(Module, Function, Args, Kwargs, Options);
        {ok, Timeout, Flags, _} ->
            Payload = {Module, Function, Args, Kwargs},
            %% A timeout past a century is none (the NIF takes a 64-bit one).
            Submitted = case Timeout of
                            _ when Timeout =:= infinity; Timeout > ?CENTURY_MS ->
                                py_nif:submit(call, Payload, group_leader(), Flags bor ?DETACHED);
                            _ ->
                                py_nif:submit(call, Payload, group_leader(), Flags bor ?DETACHED,
                                              Timeout)
                        end,
            case Submitted of
                {ok, Request, _} -> {ok, Request};
                {error, not_started} = Error -> Error
            end;
        Error ->
            Error
    end;
async_call(Module, Function, Args, Kwargs, Options) ->
    check([{module, Module, fun is_name/1}, {function, Function, fun is_name/1},
           {args, Args, fun is_list/1}, {kwargs, Kwargs, fun is_map/1},
           {timeout, Options, fun is_options/1}]).

%% @equiv await(Ref, infinity)
-spec await(async_ref()) -> ok | {ok, term()} | {error, error_reason() | already_awaited}.
await(Ref) ->
    await(Ref, infinity).

%% @doc The result of an {@link async_call/5}, waiting for it at most `Timeout' ms. Past
%% that the call is cancelled and `{error, timeout}' returned, as by a {@link call/5} (the
%% call's own timeout applies too). A Ref awaited once gives `{error, already_awaited'}.
%% Like {@link call/5}, the wait costs the same whatever the caller's mailbox holds.
-spec await(async_ref(), timeout_ms()) ->
    ok | {ok, term()} | {error, error_reason() | already_awaited}.
await(Ref, Timeout) when is_reference(Ref), ?IS_TIMEOUT(Timeout) ->
    case erase({?MODULE, async, Ref}) of
        undefined -> await_request(Ref, Timeout);
        Pid -> await_process(Ref, Pid, Timeout)
    end;
await(Ref, Timeout) ->
    check([{ref, Ref, fun is_reference/1}, {timeout, Timeout, fun is_timeout/1}]).

await_request(Ref, Timeout) ->
    try sleep(Ref, deadline(Timeout)) of
        gone -> {error, already_awaited};
        Result -> Result
    catch
        error:badarg -> {error, {badarg, {ref, Ref}}}
    end.

%% An async call on a named pool runs in a process of its own, which makes the call and
%% sends the answer; Ref is its monitor.
-spec pool_async_call(name(), name(), [term()], map(), options()) -> {ok, async_ref()}.
pool_async_call(Module, Function, Args, Kwargs, Options) ->
    Caller = self(),
    Leader = group_leader(),
    {Pid, Ref} = spawn_monitor(?MODULE, pool_async_run,
                               [Caller, Leader, Module, Function, Args, Kwargs, Options]),
    put({?MODULE, async, Ref}, Pid),
    {ok, Ref}.

%% @private The process of pool_async_call/5: its exit reason carries the result.
-spec pool_async_run(pid(), pid(), name(), name(), [term()], map(), options()) -> no_return().
pool_async_run(Caller, Leader, Module, Function, Args, Kwargs, Options) ->
    true = group_leader(Leader, self()),
    Watch = erlang:monitor(process, Caller),
    Result = call(Module, Function, Args, Kwargs, Options),
    receive {'DOWN', Watch, process, _, _} -> exit(normal) after 0 -> ok end,
    exit({?MODULE, async_result, Result}).

await_process(Ref, Pid, Timeout) ->
    receive
        {'DOWN', Ref, process, Pid, {?MODULE, async_result, Result}} -> Result;
        {'DOWN', Ref, process, Pid, Reason} -> {error, {async_call_exited, Reason}}
    after min(Timeout, ?MAX_AFTER) ->
        erlang:demonitor(Ref, [flush]),
        exit(Pid, kill),
        {error, timeout}
    end.

%% @equiv cast(Module, Function, Args, #{})
-spec cast(name(), name(), [term()]) -> ok | {error, error_reason()}.
cast(Module, Function, Args) ->
    cast(Module, Function, Args, #{}).

%% @doc Runs `Module.Function(*Args, **Kwargs)' and discards its result; an exception it
%% raises is logged (logger, level error). Returns at once; the caller's death does not
%% stop it.
-spec cast(name(), name(), [term()], map()) -> ok | {error, error_reason()}.
cast(Module, Function, Args, Kwargs)
  when ?IS_NAME(Module), ?IS_NAME(Function), is_list(Args), is_map(Kwargs) ->
    case py_nif:submit(call, {Module, Function, Args, Kwargs}, group_leader(),
                       ?DETACHED bor ?DISCARD) of
        {ok, _, _} -> ok;
        {error, not_started} = Error -> Error
    end;
cast(Module, Function, Args, Kwargs) ->
    check([{module, Module, fun is_name/1}, {function, Function, fun is_name/1},
           {args, Args, fun is_list/1}, {kwargs, Kwargs, fun is_map/1}]).

%% ---------------------------------------------------------------------------
%% Pools (docs/pools.md)

%% @doc Starts a named pool: Python in OS processes of its own (`mode => process', the
%% default) or on other nodes (`nodes => [Node]'); calls reach it with `#{pool => Name}'.
%% See py_pool:start_pool/2 for the options.
-spec start_pool(atom(), py_pool:options()) -> {ok, pid()} | {error, term()}.
start_pool(Name, Options) ->
    py_pool:start_pool(Name, Options).

%% @doc Stops a named pool and its workers.
-spec stop_pool(atom()) -> ok | {error, not_found}.
stop_pool(Name) ->
    py_pool:stop_pool(Name).

%% @doc The pools: `default' (the VM's own) and the named ones running.
-spec pools() -> [atom()].
pools() ->
    py_pool:pools().

%% ---------------------------------------------------------------------------
%% Options

%% A timeout, or a map of options: the timeout, the request's flags, and the other options
%% (`active'). A bad entry gives {error, {badarg, {option, {Key, Value}}}}; anything else
%% than a map is taken for a timeout, as the argument was before it took options, and a bad
%% one gives {error, {badarg, {timeout, Value}}}.
-spec options(term()) ->
    {ok, timeout_ms(), py_nif:flags(), map()} | {error, {badarg, term()}}.
options(Options) ->
    options(Options, false).

%% Streams take `active' too.
-spec options(term(), boolean()) ->
    {ok, timeout_ms(), py_nif:flags(), map()} | {error, {badarg, term()}}.
options(Timeout, _) when ?IS_TIMEOUT(Timeout) ->
    {ok, Timeout, 0, #{}};
options(Options, Stream) when is_map(Options) ->
    options(maps:to_list(Options), ?DEFAULT_TIMEOUT, 0, #{stream => Stream, options => Options});
options(Options, _) ->
    {error, {badarg, {timeout, Options}}}.

options([], Timeout, Flags, Extra) ->
    {ok, Timeout, Flags, Extra};
options([{timeout, Timeout} | Rest], _, Flags, Extra) when ?IS_TIMEOUT(Timeout) ->
    options(Rest, Timeout, Flags, Extra);
options([{return, term} | Rest], Timeout, Flags, Extra) ->
    options(Rest, Timeout, Flags band bnot ?RETURN_OBJECT, Extra);
options([{return, object} | Rest], Timeout, Flags, Extra) ->
    options(Rest, Timeout, Flags bor ?RETURN_OBJECT, Extra);
options([{errors, brief} | Rest], Timeout, Flags, Extra) ->
    options(Rest, Timeout, Flags band bnot ?DETAILED_ERRORS, Extra);
options([{errors, detailed} | Rest], Timeout, Flags, Extra) ->
    options(Rest, Timeout, Flags bor ?DETAILED_ERRORS, Extra);
options([{active, Active} | Rest], Timeout, Flags, #{stream := true} = Extra)
  when ?IS_ACTIVE(Active) ->
    options(Rest, Timeout, Flags, Extra#{active => Active});
options([{pool, Pool} | Rest], Timeout, Flags, Extra) when is_atom(Pool) ->
    options(Rest, Timeout, Flags, Extra#{pool => Pool});
options([Option | _], _, _, _) ->
    {error, {badarg, {option, Option}}}.

-spec is_options(term()) -> boolean().
is_options(Options) ->
    ?IS_TIMEOUT(Options) orelse is_map(Options).

-spec is_active(term()) -> boolean().
is_active(Active) ->
    ?IS_ACTIVE(Active).

%% ---------------------------------------------------------------------------

%% @doc The embedded interpreter's `sys.version'.
-spec version() -> {ok, binary()} | {error, error_reason()}.
version() ->
    eval(<<"__import__('sys').version">>).

%% @doc The Python executable the interpreter runs as (`sys.executable'):
%% a venv's when one is configured.
-spec executable() -> {ok, binary()} | {error, error_reason()}.
executable() ->
    eval(<<"__import__('sys').executable">>).

%% @doc The interpreter's `sys.path'.
-spec sys_path() -> {ok, [binary()]} | {error, error_reason()}.
sys_path() ->
    eval(<<"list(__import__('sys').path)">>).

%% @doc Puts a directory at the front of the interpreter's `sys.path' (once: a directory
%% already there stays where it is), so that `import' finds the modules in it. The
%% application env `python_path' does the same at start for a list of them. Errors:
%% `{error, {not_a_directory, Path}}', `{error, {no_priv_dir, App}}' for an application the
%% code server does not know, `{error, {badarg, {path, Entry}}}' for anything else.
-spec add_path(path_entry()) ->
    ok | {error, {not_a_directory, binary()} | {no_priv_dir, atom()} | error_reason()}.
add_path(Entry) ->
    case resolve_path(Entry) of
        {ok, Dir} ->
            case eval(<<"(__import__('sys').path.insert(0, d) "
                        "if d not in __import__('sys').path else None)">>, #{d => Dir}) of
                {ok, none} -> ok;
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end.

%% @private The absolute directory of a path entry, which must exist (add_path/1, and the
%% `python_path' of a pool: py_pool).
-spec resolve_path(term()) -> {ok, binary()} | {error, term()}.
resolve_path({priv, App, SubDir} = Entry) when is_atom(App) ->
    case code:priv_dir(App) of
        {error, bad_name} -> {error, {no_priv_dir, App}};
        Priv -> directory(Entry, filename:join(Priv, SubDir))
    end;
resolve_path(Entry) when is_list(Entry); is_binary(Entry) ->
    directory(Entry, Entry);
resolve_path(Entry) ->
    {error, {badarg, {path, Entry}}}.

-spec directory(term(), file:filename_all()) -> {ok, binary()} | {error, term()}.
directory(Entry, Path) ->
    try unicode:characters_to_binary(filename:absname(Path)) of
        Dir when is_binary(Dir) ->
            case filelib:is_dir(Dir) of
                true -> {ok, Dir};
                false -> {error, {not_a_directory, Dir}}
            end;
        _ ->
            {error, {badarg, {path, Entry}}}
    catch
        error:_ -> {error, {badarg, {path, Entry}}}
    end.

%% @doc Sets Python's root logger to the level `logger''s primary level lets through, so
%% that records Erlang would drop are not even formatted. The application does it at start;
%% call it after changing the primary level (logger:set_primary_config/2).
-spec sync_log_level() -> ok | {error, error_reason()}.
sync_log_level() ->
    Level = maps:get(level, logger:get_primary_config(), notice),
    case call('_erlang_impl._logging', set_level, [Level]) of
        {ok, none} -> ok;
        {error, _} = Error -> Error
    end.

%% @doc The state of the worker pool, for operators:
%% <ul>
%% <li>`running': whether the interpreter runs;</li>
%% <li>`workers': threads serving calls; `busy': of those, running one;
%%   `queued': calls waiting for a worker;</li>
%% <li>`given_up': threads given up on because they still ran a cancelled call
%%   `give_up_after' ms after its cancellation (each was replaced, and ends
%%   when its call does), at most `max_given_up' at once; `given_up_total'
%%   since start;</li>
%% <li>`atoms_created' by erlang.Atom, `library' (libpython) and
%%   `default_python' (the NIF's build Python).</li>
%% </ul>
-spec info() -> #{running := boolean(), workers := non_neg_integer(),
                  busy := non_neg_integer(), queued := non_neg_integer(),
                  given_up := non_neg_integer(), given_up_total := non_neg_integer(),
                  max_given_up := non_neg_integer(), give_up_after := non_neg_integer(),
                  atoms_created := non_neg_integer(), library := binary(),
                  default_python := binary()}.
info() ->
    py_nif:info().

%% @doc Makes `Fun' callable from Python as `erlang.Name(...)',
%% `from erlang import Name' or `erlang.call("Name", ...)'. `Fun' receives
%% the Python arguments as one list. Replaces any earlier function of that
%% name. The registration belongs to the application: it outlives the
%% process that made it.
-spec register_function(name(), fun(([term()]) -> term())) -> ok | {error, {badarg, term()}}.
register_function(Name, Fun) ->
    case check([{name, Name, fun is_name/1}, {function, Fun, fun(F) -> is_function(F, 1) end}]) of
        ok -> py_function_registry:register(name_binary(Name), Fun);
        Error -> Error
    end.

%% @doc Like {@link register_function/2}, calling `Module:Function(Args)'.
-spec register_function(name(), module(), atom()) -> ok | {error, {badarg, term()}}.
register_function(Name, Module, Function) ->
    Checks = [{name, Name, fun is_name/1}, {module, Module, fun is_atom/1},
              {function, Function, fun is_atom/1}],
    case check(Checks) of
        ok -> py_function_registry:register(name_binary(Name), {Module, Function});
        Error -> Error
    end.

%% @doc Removes a registered function; `ok' also when there was none.
-spec unregister_function(name()) -> ok | {error, {badarg, term()}}.
unregister_function(Name) ->
    case check([{name, Name, fun is_name/1}]) of
        ok -> py_function_registry:unregister(name_binary(Name));
        Error -> Error
    end.

%% ---------------------------------------------------------------------------

-spec request(py_nif:kind(), term(), timeout_ms(), py_nif:flags()) ->
    ok | {ok, term()} | {error, error_reason()}.
request(Kind, Payload, Timeout, Flags) ->
    case submit(Kind, Payload, Flags) of
        {ok, Request, SpinMicros} -> wait(Request, deadline(Timeout), SpinMicros);
        {error, not_started} = Error -> Error
    end.

%% A request on the pool the options name: the VM's own (`default'), or a named one
%% (py_pool, docs/pools.md).
-spec dispatch(py_nif:kind(), term(), timeout_ms(), py_nif:flags(), map()) ->
    ok | {ok, term()} | {error, term()}.
dispatch(Kind, Payload, Timeout, Flags, #{pool := Pool} = Extra) when Pool =/= default ->
    py_pool:request(Pool, Kind, Payload, Timeout, Flags,
                    maps:remove(pool, maps:get(options, Extra, #{})));
dispatch(Kind, Payload, Timeout, Flags, _Extra) ->
    request(Kind, Payload, Timeout, Flags).

%% Inside a callback, to the Python thread that waits for it (see py_callback).
-spec submit(py_nif:kind(), term(), py_nif:flags()) ->
    {ok, py_nif:request(), non_neg_integer()} | {error, not_started}.
submit(Kind, Payload, Flags) ->
    case py_callback:waiter() of
        undefined ->
            py_nif:submit(Kind, Payload, group_leader(), Flags);
        Waiter ->
            case py_nif:submit_nested(Waiter, Kind, Payload, group_leader(), Flags) of
                {ok, _, _} = Submitted -> Submitted;
                {error, closed} -> py_nif:submit(Kind, Payload, group_leader(), Flags)
            end
    end.

%% Waiting for the answer (docs/runtime.md): a small call on an awake worker answers within
%% microseconds, sooner than a scheduler that went to sleep in `receive' can be woken, so
%% the caller polls the request for SpinMicros first (the NIF says whether that pays: 0
%% when no worker was awake to take the call). The mailbox is not looked at. The poll does
%% not yield between turns: a yield lets the idle scheduler steal the process, and the two
%% schedulers' threads then crowd out the Python thread on a small machine (callbacks in a
%% loop took 19 µs instead of 3). Ten microseconds is less than a short NIF may take.
-spec wait(py_nif:request(), integer() | infinity, non_neg_integer()) ->
    ok | {ok, term()} | {error, error_reason()}.
wait(Request, Deadline, 0) ->
    sleep(Request, Deadline);
wait(Request, Deadline, SpinMicros) ->
    Until = erlang:monotonic_time() + erlang:convert_time_unit(SpinMicros, microsecond, native),
    case spin(Request, Until) of
        pending -> sleep(Request, Deadline);
        ready -> sleep(Request, Deadline);
        {py_callback, Waiter, Name, Args} -> callback(Request, Deadline, Waiter, Name, Args);
        Result -> Result
    end.

-spec spin(py_nif:request(), integer()) -> pending | ready | py_nif:callback() | py_nif:result().
spin(Request, Until) ->
    case py_nif:poll(Request) of
        pending ->
            case erlang:monotonic_time() < Until of
                true ->
                    spin(Request, Until);
                false ->
                    pending
            end;
        Taken ->
            Taken
    end.

%% Sleeps in `receive' until the answer, a callback or the deadline. The reference is made
%% here, just before the `receive' that matches it (and the one after a timeout), so the
%% compiler's receive optimisation applies: the receive skips every message that was in
%% the mailbox before it, and the wait costs the same with 100,000 messages queued as with
%% none. Each arming sends at most one message; every round makes a new reference.
%% `gone': an async call's Ref awaited already (py_nif:arm/2).
-spec sleep(py_nif:request(), integer() | infinity) ->
    ok | {ok, term()} | {error, error_reason()} | gone.
sleep(Request, Deadline) ->
    Ref = make_ref(),
    case py_nif:arm(Request, Ref) of
        armed ->
            receive
                {py_result, Ref, Result} ->
                    ok = py_nif:demonitor(Request),
                    Result;
                {py_callback, Ref, Waiter, Name, Args} ->
                    callback(Request, Deadline, Waiter, Name, Args)
            after min(remaining(Deadline), ?MAX_AFTER) ->
                Expired = remaining(Deadline) =:= 0,
                %% At the deadline the request is cancelled; before it (a timeout longer
                %% than `receive' allows) only disarmed, to wait again.
                Outcome = case Expired of
                              true -> py_nif:cancel(Request);
                              false -> py_nif:disarm(Request)
                          end,
                case Outcome of
                    cancelled ->
                        {error, timeout};
                    disarmed ->
                        sleep(Request, Deadline);
                    sent ->
                        %% The armed message was sent before the cancellation or
                        %% disarming: it is in the mailbox or about to be.
                        receive
                            {py_result, Ref, Result} ->
                                ok = py_nif:demonitor(Request),
                                Result;
                            {py_callback, Ref, _, _, _} when Expired ->
                                %% Its thread was woken by the cancellation.
                                {error, timeout};
                            {py_callback, Ref, Waiter, Name, Args} ->
                                callback(Request, Deadline, Waiter, Name, Args)
                        end;
                    Result ->
                        Result
                end
            end;
        {py_callback, Waiter, Name, Args} ->
            callback(Request, Deadline, Waiter, Name, Args);
        Result ->
            Result
    end.

%% Runs a function Python called, while its thread waits, then waits on. That thread polls
%% for the reply for ?THREAD_SPIN_MICROSECONDS before it sleeps: if the function answered
%% within that, the thread is awake and its next callback or result comes at once.
-spec callback(py_nif:request(), integer() | infinity, py_nif:waiter(), binary() | atom(),
               [term()]) -> ok | {ok, term()} | {error, error_reason()}.
callback(Request, Deadline, Waiter, Name, Args) ->
    Started = erlang:monotonic_time(),
    ok = py_callback:run(Waiter, Name, Args),
    Took = erlang:convert_time_unit(erlang:monotonic_time() - Started, native, microsecond),
    SpinMicros = case Took < ?THREAD_SPIN_MICROSECONDS of
                     true -> ?POLL_MICROSECONDS;
                     false -> 0
                 end,
    wait(Request, Deadline, SpinMicros).

-spec deadline(timeout_ms()) -> integer() | infinity.
deadline(infinity) -> infinity;
deadline(Timeout) -> erlang:monotonic_time(millisecond) + Timeout.

-spec remaining(integer() | infinity) -> non_neg_integer() | infinity.
remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

-spec source(code()) -> {ok, binary()} | {error, {badarg, {code, term()}}}.
source(Code) ->
    try unicode:characters_to_binary(Code) of
        Binary when is_binary(Binary) -> {ok, Binary};
        _ -> {error, {badarg, {code, Code}}}
    catch
        error:_ -> {error, {badarg, {code, Code}}}
    end.

-spec check([{atom(), term(), fun((term()) -> boolean())}]) -> ok | {error, {badarg, term()}}.
check([]) ->
    ok;
check([{What, Value, Valid} | Rest]) ->
    case Valid(Value) of
        true -> check(Rest);
        false -> {error, {badarg, {What, Value}}}
    end.

-spec is_name(term()) -> boolean().
is_name(Name) ->
    ?IS_NAME(Name).

-spec is_timeout(term()) -> boolean().
is_timeout(Timeout) ->
    ?IS_TIMEOUT(Timeout).

-spec name_binary(name()) -> binary().
name_binary(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
name_binary(Name) -> Name.
