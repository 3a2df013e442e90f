%% Test helper: a group leader that hands what is written to it to its owner, as
%% `{printed, Binary}' messages, for suites that check where Python's output goes.
-module(py_test_leader).

-export([start/0, printed/1]).

%% @doc A new leader for the calling process to give a process it spawns.
-spec start() -> pid().
start() ->
    Owner = self(),
    spawn(fun() -> loop(Owner) end).

%% @doc All text printed until nothing more came for 500 ms (Acc first).
-spec printed(binary()) -> binary().
printed(Acc) ->
    receive {printed, Text} -> printed(<<Acc/binary, Text/binary>>)
    after 500 -> Acc
    end.

loop(Owner) ->
    receive
        {io_request, From, ReplyAs, {put_chars, unicode, Chars}} ->
            From ! {io_reply, ReplyAs, ok},
            Owner ! {printed, unicode:characters_to_binary(Chars)},
            loop(Owner);
        {io_request, From, ReplyAs, _} ->
            From ! {io_reply, ReplyAs, {error, enotsup}},
            loop(Owner)
    end.
