%% Test helper: waiting for a condition that becomes true asynchronously (a process that
%% exits, a port program that kills its command, a worker that finishes), polling it every
%% 20 ms for up to 5 s, then giving its last answer.
-module(py_test_wait).

-export([until/1, until/2]).

-spec until(fun(() -> boolean())) -> boolean().
until(Check) ->
    until(Check, 250).

-spec until(fun(() -> boolean()), non_neg_integer()) -> boolean().
until(Check, 0) ->
    Check();
until(Check, Tries) ->
    case Check() of
        true -> true;
        false -> timer:sleep(20), until(Check, Tries - 1)
    end.
