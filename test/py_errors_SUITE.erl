%% Errors are values: every way Python code can fail gives a defined
%% {error, _} to the caller, and the VM and the interpreter go on serving.
-module(py_errors_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [exception_shape, syntax_errors, system_exit, system_exit_in_function,
     keyboard_interrupt, base_exception_subclass, unprintable_exception, recursion_error,
     memory_error, error_during_result_conversion, errors_leave_interpreter_usable].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

alive() ->
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% @doc An exception is {error, {Type, Message, Traceback}}: atom, binary, binary.
exception_shape(_Config) ->
    {error, {Type, Message, Traceback}} = py:eval(<<"int('x')">>),
    ?assertEqual('ValueError', Type),
    ?assertEqual(<<"invalid literal for int() with base 10: 'x'">>, Message),
    ?assertMatch(<<"Traceback (most recent call last):\n", _/binary>>, Traceback),
    ?assertNotEqual(nomatch, string:find(Traceback, <<"ValueError: invalid literal">>)).

%% @doc Syntax errors in exec and eval name the line.
syntax_errors(_Config) ->
    {error, {'SyntaxError', Message, _}} = py:exec(<<"x = 1\ndef (:\n">>),
    ?assertNotEqual(nomatch, string:find(Message, <<"line 2">>)),
    ?assertMatch({error, {'SyntaxError', _, _}}, py:eval(<<"1 +* 2">>)),
    ?assertMatch({error, {'IndentationError', _, _}}, py:exec(<<"if 1:\nx = 1">>)),
    alive().

%% @doc sys.exit() is an error value, never the end of the VM.
system_exit(_Config) ->
    ?assertMatch({error, {'SystemExit', <<"3">>, _}}, py:exec(<<"import sys\nsys.exit(3)">>)),
    ?assertMatch({error, {'SystemExit', <<>>, _}}, py:exec(<<"import sys\nsys.exit()">>)),
    ?assertMatch({error, {'SystemExit', <<"bye">>, _}}, py:eval(<<"exit('bye')">>)),
    ?assertMatch({error, {'SystemExit', _, _}}, py:eval(<<"quit()">>)),
    alive().

%% @doc sys.exit() inside a called function is an error value too.
system_exit_in_function(_Config) ->
    ?assertMatch({error, {'SystemExit', <<"0">>, _}}, py:call(sys, exit, [0])),
    alive().

%% @doc KeyboardInterrupt raised by user code is an error value.
keyboard_interrupt(_Config) ->
    ?assertMatch({error, {'KeyboardInterrupt', _, _}}, py:exec(<<"raise KeyboardInterrupt">>)),
    alive().

%% @doc Exceptions outside Exception (GeneratorExit, custom BaseException) too.
base_exception_subclass(_Config) ->
    ?assertMatch({error, {'GeneratorExit', _, _}}, py:exec(<<"raise GeneratorExit">>)),
    ok = py:exec(<<"class Odd(BaseException):\n    pass\n">>),
    ?assertMatch({error, {_, <<"x">>, _}}, py:exec(<<"raise Odd('x')">>)),
    alive().

%% @doc An exception whose str() fails still gives a message.
unprintable_exception(_Config) ->
    ok = py:exec(<<"class Unprintable(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n">>),
    ?assertMatch({error, {_, <<"<unprintable>">>, _}}, py:exec(<<"raise Unprintable()">>)),
    alive().

%% @doc Runaway recursion is a RecursionError.
recursion_error(_Config) ->
    ok = py:exec(<<"def runaway(n):\n    return runaway(n + 1)\n">>),
    ?assertMatch({error, {'RecursionError', _, _}}, py:call('__main__', runaway, [0])),
    alive().

%% @doc An impossible allocation is a MemoryError.
memory_error(_Config) ->
    ?assertMatch({error, {'MemoryError', _, _}}, py:eval(<<"bytearray(2 ** 62)">>)),
    alive().

%% @doc An exception raised while converting the result is an error value.
error_during_result_conversion(_Config) ->
    ok = py:exec(<<"def failing_gen():\n    yield 1\n    raise ValueError('mid-way')\n">>),
    ?assertMatch({error, {'ValueError', <<"mid-way">>, _}}, py:eval(<<"failing_gen()">>)),
    alive().

%% @doc A thousand failing calls leave the interpreter as it was.
errors_leave_interpreter_usable(_Config) ->
    [{error, _} = py:eval(<<"1 / 0">>) || _ <- lists:seq(1, 1000)],
    alive().
