%% Test helper: a logger handler that keeps each event's level and formatted text, for
%% suites that check what the application logs (py_cancel_SUITE). It runs in peers, which
%% reach the test only through peer:call: events wait in a table until taken.
-module(py_test_log_handler).

-export([install/0, taken/0, log/2]).

-define(TABLE, py_test_log_events).

-spec install() -> ok.
install() ->
    Self = self(),
    %% The table's owner outlives the peer:call that installs it.
    spawn(fun() ->
        _ = ets:new(?TABLE, [named_table, public, duplicate_bag]),
        Self ! ready,
        receive stop -> ok end
    end),
    receive ready -> ok end,
    logger:add_handler(?MODULE, ?MODULE, #{}).

%% @doc The events logged so far, as {Level, Text}.
-spec taken() -> [{logger:level(), string()}].
taken() ->
    [{Level, Text} || {_, Level, Text} <- ets:tab2list(?TABLE)].

-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(#{level := Level} = Event, _Config) ->
    Text = logger_formatter:format(Event, #{single_line => true, template => [msg]}),
    true = ets:insert(?TABLE, {erlang:unique_integer([monotonic]), Level,
                               unicode:characters_to_list(Text)}),
    ok.
