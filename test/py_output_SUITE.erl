%% Python's output goes where Erlang output goes (docs/output.md): sys.stdout and sys.stderr
%% of a call reach its caller's group leader, line by line, a partial line when the call
%% returns; output of a thread Python started goes to the logger; sys.stdin is at its end;
%% bad output envs fail the application's start.
-module(py_output_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [print_reaches_the_callers_group_leader, partial_line_comes_when_the_call_returns,
     stderr_goes_to_the_group_leader_too, lines_of_parallel_calls_stay_whole,
     large_output_arrives_whole, thread_output_goes_to_the_logger, stdin_is_at_its_end,
     write_refuses_bytes, bad_output_env_fails_the_start,
     logging_reaches_logger_with_metadata, logging_exc_info_carries_the_traceback,
     logging_follows_the_primary_level, logging_can_be_switched_off].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

%% @doc print() in a py:exec shows in the group leader of the process that called.
print_reaches_the_callers_group_leader(_Config) ->
    Text = with_group_leader(fun() -> ok = py:exec(<<"print('hello from python')">>) end),
    ?assertEqual(<<"hello from python\n">>, Text).

%% @doc A line without its newline is sent when the call ends, before its result.
partial_line_comes_when_the_call_returns(_Config) ->
    Text = with_group_leader(fun() ->
        {ok, none} = py:eval(<<"print('no newline', end='')">>)
    end),
    ?assertEqual(<<"no newline">>, Text).

%% @doc sys.stderr goes to the same group leader (the default of the `stderr' env).
stderr_goes_to_the_group_leader_too(_Config) ->
    Text = with_group_leader(fun() ->
        ok = py:exec(<<"import sys\nprint('to stderr', file=sys.stderr)">>)
    end),
    ?assertEqual(<<"to stderr\n">>, Text).

%% @doc 8 processes printing 200 lines each at once, through one group leader: every line
%% arrives whole.
lines_of_parallel_calls_stay_whole(_Config) ->
    Text = with_group_leader(fun() ->
        Self = self(),
        Leader = group_leader(),
        Pids = [spawn(fun() ->
                          group_leader(Leader, self()),
                          ok = py:exec(iolist_to_binary(
                                         ["for i in range(200): print('caller ", integer_to_list(N),
                                          " line', i, 'x' * 50)"])),
                          Self ! {done, self()}
                      end) || N <- lists:seq(1, 8)],
        [receive {done, P} -> ok end || P <- Pids]
    end),
    Lines = binary:split(Text, <<"\n">>, [global, trim]),
    ?assertEqual(1600, length(Lines)),
    [?assertMatch({match, _}, re:run(L, <<"^caller [1-8] line [0-9]+ x{50}$">>)) || L <- Lines].

%% @doc A megabyte printed at once arrives entire.
large_output_arrives_whole(_Config) ->
    Text = with_group_leader(fun() -> ok = py:exec(<<"print('y' * 1000000)">>) end),
    ?assertEqual(1000001, byte_size(Text)).

%% @doc A thread Python started has no caller: its output goes to the logger (the default of
%% `default_output'), as a notice per line.
thread_output_goes_to_the_logger(_Config) ->
    ok = logger:add_handler(py_output_test, ?MODULE, #{config => #{pid => self(), logging => false}}),
    try
        ok = py:exec(<<"import threading\n"
                       "t = threading.Thread(target=lambda: print('from a thread'))\n"
                       "t.start(); t.join()\n">>),
        receive
            {logged, notice, Msg} -> ?assertEqual("from a thread", Msg)
        after 5000 -> ct:fail(nothing_logged)
        end
    after
        logger:remove_handler(py_output_test)
    end.

%% @doc input() raises EOFError and sys.stdin reads nothing: the VM's stdin is the VM's.
stdin_is_at_its_end(_Config) ->
    ?assertMatch({error, {'EOFError', _, _}}, py:eval(<<"input()">>)),
    ?assertEqual({ok, <<>>}, py:eval(<<"__import__('sys').stdin.read()">>)),
    ?assertMatch({error, {'UnsupportedOperation', _, _}},
                 py:eval(<<"__import__('sys').stdout.fileno()">>)).

%% @doc sys.stdout is a text stream: bytes are a TypeError, as on a terminal.
write_refuses_bytes(_Config) ->
    ?assertMatch({error, {'TypeError', _, _}}, py:eval(<<"__import__('sys').stdout.write(b'x')">>)).

%% @doc default_output and stderr take only their documented values.
bad_output_env_fails_the_start(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{start_app => false, env => [{default_output, nowhere}]}),
    try
        ?assertMatch({error, {{bad_env, default_output, nowhere}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python])),
        ok = py_test_peer:call(Peer, application, set_env, [erlang_python, default_output, stdout]),
        ok = py_test_peer:call(Peer, application, set_env, [erlang_python, stderr, sideways]),
        ?assertMatch({error, {{bad_env, stderr, sideways}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python]))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc A Python log record is a logger event: level mapped, message formatted with its
%% arguments, the Python logger's name, file, line, function and thread in the metadata.
logging_reaches_logger_with_metadata(_Config) ->
    Events = with_log_handler(fun() ->
        ok = py:exec(<<"import logging\n"
                       "def log_it():\n"
                       "    logging.getLogger('app.db').warning('disk %s at %d%%', 'sda', 91)\n"
                       "    logging.getLogger('app.db').info('an info')\n"
                       "    logging.getLogger('app').critical('down')\n"
                       "log_it()\n">>)
    end, 2),
    %% The info record is below logger's default primary level (notice): dropped in Python.
    [{warning, Warning, Meta}, {critical, <<"down">>, _}] = Events,
    ?assertEqual(<<"disk sda at 91%">>, Warning),
    ?assertMatch(#{python_logger := <<"app.db">>, file := "<py:exec>", line := 3,
                   python_function := <<"log_it">>, python_thread := _}, Meta).

%% @doc exc_info: the formatted traceback follows the message, and is in the metadata.
logging_exc_info_carries_the_traceback(_Config) ->
    [{error, Message, Meta}] = with_log_handler(fun() ->
        ok = py:exec(<<"import logging\n"
                       "try:\n"
                       "    1 / 0\n"
                       "except ZeroDivisionError:\n"
                       "    logging.getLogger('calc').exception('it failed')\n">>)
    end, 1),
    ?assertMatch(<<"it failed\nTraceback (most recent call last):", _/binary>>, Message),
    ?assertNotEqual(nomatch, binary:match(Message, <<"ZeroDivisionError: division by zero">>)),
    ?assertMatch(#{python_traceback := <<"Traceback", _/binary>>}, Meta).

%% @doc Python's root level follows logger's primary level (py:sync_log_level/0): what
%% logger would drop, Python does not format: a record below it costs one level check.
logging_follows_the_primary_level(_Config) ->
    #{level := Primary} = logger:get_primary_config(),
    try
        ok = logger:set_primary_config(level, debug),
        ok = py:sync_log_level(),
        ?assertEqual({ok, 10}, py:eval(<<"__import__('logging').getLogger().level">>)),
        [{debug, <<"seen">>, _}] = with_log_handler(fun() ->
            ok = py:exec(<<"__import__('logging').getLogger('q').debug('seen')">>)
        end, 1),
        ok = logger:set_primary_config(level, error),
        ok = py:sync_log_level(),
        ok = py:exec(<<"import logging\n"
                       "class Loud:\n"
                       "    formatted = 0\n"
                       "    def __str__(self):\n"
                       "        Loud.formatted += 1\n"
                       "        return 'loud'\n"
                       "logging.getLogger('q').warning('%s', Loud())\n">>),
        ?assertEqual({ok, 0}, py:eval(<<"Loud.formatted">>))
    after
        ok = logger:set_primary_config(level, Primary),
        ok = py:sync_log_level()
    end.

%% @doc With {python_logging, false} the application puts no handler on Python's root
%% logger; a bad value fails the start.
logging_can_be_switched_off(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{env => [{python_logging, false}]}),
    try
        ?assertEqual({ok, 0}, py_test_peer:call(Peer, py, eval,
                                                [<<"len(__import__('logging').getLogger().handlers)">>])),
        ok = py_test_peer:call(Peer, application, stop, [erlang_python]),
        ok = py_test_peer:call(Peer, application, set_env, [erlang_python, python_logging, maybe]),
        ?assertMatch({error, {{bad_env, python_logging, maybe}, _}},
                     py_test_peer:call(Peer, application, start, [erlang_python]))
    after
        py_test_peer:stop(Peer)
    end.

%% Internal

%% Runs F with a logger handler that collects Python's log records; returns the first N as
%% {Level, Message, Metadata}.
with_log_handler(F, N) ->
    ok = logger:add_handler(py_logging_test, ?MODULE, #{config => #{pid => self(), logging => true}}),
    try
        F(),
        [receive {python_log, Level, Msg, Meta} -> {Level, Msg, Meta}
         after 5000 -> ct:fail({missing_log_event, I})
         end || I <- lists:seq(1, N)]
    after
        logger:remove_handler(py_logging_test)
    end.

%% Runs F in a process whose group leader collects what is written to it; returns the text,
%% once nothing more came for 200 ms.
with_group_leader(F) ->
    Self = self(),
    Leader = spawn(fun() -> collect(Self, []) end),
    {Pid, Monitor} = spawn_monitor(fun() -> group_leader(Leader, self()), F() end),
    receive {'DOWN', Monitor, process, Pid, Reason} -> normal = Reason end,
    Leader ! {take, Self},
    receive {taken, Text} -> Text after 5000 -> ct:fail(no_text) end.

collect(Owner, Acc) ->
    receive
        {io_request, From, ReplyAs, {put_chars, unicode, Chars}} ->
            From ! {io_reply, ReplyAs, ok},
            collect(Owner, [Chars | Acc]);
        {io_request, From, ReplyAs, _} ->
            From ! {io_reply, ReplyAs, {error, enotsup}},
            collect(Owner, Acc);
        {take, Owner} ->
            wait_quiet(Owner, Acc)
    end.

wait_quiet(Owner, Acc) ->
    receive
        {io_request, From, ReplyAs, {put_chars, unicode, Chars}} ->
            From ! {io_reply, ReplyAs, ok},
            wait_quiet(Owner, [Chars | Acc])
    after 200 ->
        Owner ! {taken, unicode:characters_to_binary(lists:reverse(Acc))}
    end.

%% A logger handler that sends each event of Python's logging, or of its stdout, to the test
%% process.
log(#{level := Level, msg := {"~ts", [Message]}, meta := #{python_logger := _} = Meta},
    #{config := #{pid := Pid, logging := true}}) ->
    Pid ! {python_log, Level, Message, Meta};
log(#{level := Level, msg := {Format, Args}, meta := #{python_stream := _}},
    #{config := #{pid := Pid}}) ->
    Pid ! {logged, Level, lists:flatten(io_lib:format(Format, Args))};
log(_Event, _Config) ->
    ok.
