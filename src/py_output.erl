%% @private Writes Python's sys.stdout and sys.stderr where Erlang output goes
%% (docs/output.md): text that Python code wrote for a call goes to the group leader of the
%% calling process, as io:put_chars would; text written for no call (a thread Python
%% started) goes to the application env `default_output': `logger' (default) or `stdout'.
%% With the env `stderr' at `logger', sys.stderr goes to the logger whatever the caller.
%% Records of Python's logging come here too, `{log, Level, Message, Metadata}', and are
%% logged (_erlang_impl._logging), as are the errors of py:cast (`{py_cast_failed, ...}',
%% from c_src/py_request.c).
%%
%% Python sends `{Stream, GroupLeader | undefined, Text}': the group leader of the caller,
%% which py:call passed with the request (a caller that has exited by now still gets it).
%% Requests to group leaders are sent without waiting for their replies, so that a slow or
%% dead group leader holds up nothing.
-module(py_output).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec init([]) -> {ok, #{default := logger | stdout, stderr := group_leader | logger}}.
init([]) ->
    {ok, #{default => application:get_env(erlang_python, default_output, logger),
           stderr => application:get_env(erlang_python, stderr, group_leader)}}.

-spec handle_call(term(), gen_server:from(), State) -> {reply, {error, unknown_call}, State}.
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), State) -> {noreply, State}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), State) -> {noreply, State} when State :: map().
handle_info({Stream, Leader, Text}, State) when (Stream =:= stdout orelse Stream =:= stderr),
                                                (is_pid(Leader) orelse Leader =:= undefined),
                                                is_binary(Text) ->
    write(target(Stream, Leader, State), Stream, Text),
    {noreply, State};
handle_info({log, Level, Message, Meta}, State) when is_atom(Level), is_binary(Message),
                                                   is_map(Meta) ->
    %% A record of Python's logging (_erlang_impl._logging).
    logger:log(Level, "~ts", [Message], log_metadata(Meta)),
    {noreply, State};
handle_info({py_cast_failed, {Module, Function, _Args, _Kwargs}, Reason}, State) ->
    %% A py:cast whose function raised: nobody else will see it.
    logger:log(error, "py:cast of ~ts.~ts failed: ~tp", [name(Module), name(Function), Reason],
               #{python_cast => {Module, Function}}),
    {noreply, State};
handle_info(_Other, State) ->
    %% io_reply messages of the group leaders, among others.
    {noreply, State}.

-spec name(atom() | binary()) -> binary().
name(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
name(Name) -> Name.

-spec target(stdout | stderr, pid() | undefined, map()) -> {io, pid()} | logger | nowhere.
target(stderr, _Leader, #{stderr := logger}) ->
    logger;
target(_Stream, Leader, _State) when is_pid(Leader) ->
    {io, Leader};
target(_Stream, undefined, #{default := logger}) ->
    logger;
target(_Stream, undefined, #{default := stdout}) ->
    case whereis(user) of
        User when is_pid(User) -> {io, User};
        _ -> nowhere
    end.

-spec write({io, pid()} | logger | nowhere, stdout | stderr, binary()) -> ok.
write(nowhere, _Stream, _Text) ->
    ok;
write({io, Leader}, _Stream, Text) ->
    Leader ! {io_request, self(), make_ref(), {put_chars, unicode, Text}},
    ok;
write(logger, Stream, Text) ->
    Level = case Stream of stdout -> notice; stderr -> warning end,
    Line = string:trim(Text, trailing, "\n"),
    %% No `domain': OTP's default handler drops events of domains other than OTP's own.
    logger:log(Level, "~ts", [Line], #{python_stream => Stream}).

%% The metadata of a Python log record, with logger's own keys where they exist.
-spec log_metadata(map()) -> logger:metadata().
log_metadata(Meta) ->
    Known = [{<<"python_logger">>, python_logger}, {<<"file">>, file}, {<<"line">>, line},
             {<<"function">>, python_function}, {<<"thread">>, python_thread},
             {<<"traceback">>, python_traceback}],
    maps:from_list([{Key, log_value(Key, maps:get(Name, Meta))} || {Name, Key} <- Known,
                                                                   maps:is_key(Name, Meta)]).

log_value(file, Path) when is_binary(Path) -> unicode:characters_to_list(Path);
log_value(_Key, Value) -> Value.
