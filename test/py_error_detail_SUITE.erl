%% Detailed errors: with `#{errors => detailed}' a Python exception is
%% {error, {Type, Message, Traceback, Info}}, Info a map whose keys are a fixed
%% list of atoms and whose values never make an atom from Python data
%% (docs/errors.md). Without the option the value is the 3-tuple it always was.
-module(py_error_detail_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(OPTS, #{errors => detailed}).

all() ->
    [key_error, file_not_found, rename_two_filenames, user_class_in_main, unconvertible_args,
     import_error, syntax_error, system_exit, stop_iteration, unicode_decode_error,
     explicit_cause, implicit_context, suppressed_context, nesting_limit, context_cycle,
     notes, exception_group, json_decode_error, no_new_atoms, without_option,
     errors_leave_interpreter_usable].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    Config.

end_per_suite(_Config) ->
    ok.

alive() ->
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% {error, {Type, Message, Traceback, Info}} of a detailed error, checking the
%% parts every one has.
detail({error, {Type, Message, Traceback, Info}}) ->
    ?assert(is_atom(Type) orelse is_binary(Type)),
    ?assert(is_binary(Message)),
    ?assert(is_binary(Traceback)),
    ?assert(is_map(Info)),
    ?assert(is_binary(maps:get(class, Info))),
    ?assert(is_list(maps:get(args, Info))),
    ?assertEqual([], [K || K <- maps:keys(Info), not is_atom(K)]),
    {Type, Message, Traceback, Info};
detail(Other) ->
    ct:fail({not_a_detailed_error, Other}).

%% True when the embedded Python is at least Major.Minor.
python_at_least(Major, Minor) ->
    {ok, [Ma, Mi]} = py:eval(<<"list(__import__('sys').version_info[:2])">>),
    {Ma, Mi} >= {Major, Minor}.

%% @doc KeyError: key is args[0], through py:call and py:eval.
key_error(_Config) ->
    {'KeyError', <<"'k'">>, Tb, Info} =
        detail(py:call(operator, getitem, [#{}, <<"k">>], #{}, ?OPTS)),
    %% operator.getitem is C: the traceback has no frame, only the last line.
    ?assertNotEqual(nomatch, string:find(Tb, <<"KeyError: 'k'">>)),
    ?assertEqual(#{class => <<"builtins.KeyError">>, args => [<<"k">>], key => <<"k">>}, Info),
    {'KeyError', _, _, #{key := 42}} = detail(py:eval(<<"{}[42]">>, #{}, ?OPTS)),
    {'KeyError', _, _, #{key := {1, 2}, args := [{1, 2}]}} =
        detail(py:eval(<<"d[k]">>, #{d => #{}, k => {1, 2}}, ?OPTS)),
    %% IndexError has nothing beyond class and args.
    {'IndexError', _, _, IndexInfo} = detail(py:eval(<<"[][3]">>, #{}, ?OPTS)),
    ?assertEqual([args, class], lists:sort(maps:keys(IndexInfo))),
    alive().

%% @doc Opening a missing file: errno, strerror, filename of the OSError.
file_not_found(_Config) ->
    Path = <<"/nonexistent/py_error_detail_SUITE/missing.txt">>,
    {ok, Enoent} = py:eval(<<"__import__('errno').ENOENT">>),
    {ok, Strerror} = py:eval(<<"__import__('os').strerror(__import__('errno').ENOENT)">>),
    {'FileNotFoundError', _, _, Info} = detail(py:call(builtins, open, [Path], #{}, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.FileNotFoundError">>, errno := Enoent,
                   strerror := Strerror, filename := Path, args := [Enoent, Strerror]},
                 Info),
    ?assertNot(maps:is_key(filename2, Info)),
    %% An OSError made by hand: errno is none, the rest left out.
    {'OSError', <<"plain">>, _, Plain} = detail(py:exec(<<"raise OSError('plain')">>, ?OPTS)),
    ?assertEqual(#{class => <<"builtins.OSError">>, args => [<<"plain">>], errno => none},
                 Plain),
    alive().

%% @doc os.rename names both files.
rename_two_filenames(_Config) ->
    From = <<"/nonexistent/py_error_detail_SUITE/a">>,
    To = <<"/nonexistent/py_error_detail_SUITE/b">>,
    {_, _, _, Info} = detail(py:call(os, rename, [From, To], #{}, ?OPTS)),
    ?assertMatch(#{filename := From, filename2 := To, errno := Errno} when is_integer(Errno),
                 Info),
    alive().

%% @doc A class defined by py:exec is __main__.MyError; its args convert as results do.
user_class_in_main(_Config) ->
    ok = py:exec(<<"class MyError(Exception):\n    pass\n">>),
    {Type, Message, _, Info} =
        detail(py:exec(<<"raise MyError(42, 'two', object())">>, ?OPTS)),
    ?assert(Type =:= 'MyError' orelse Type =:= <<"MyError">>),
    ?assertMatch(<<"(42, 'two', <object object at ", _/binary>>, Message),
    ?assertMatch(#{class := <<"__main__.MyError">>,
                   args := [42, <<"two">>, {py_object, <<"object">>, <<"<object object at ", _/binary>>}]},
                 Info),
    ?assertEqual([args, class], lists:sort(maps:keys(Info))),
    %% A nested class keeps its qualified name.
    ok = py:exec(<<"class Outer:\n    class Inner(ValueError):\n        pass\n">>),
    {_, _, _, #{class := <<"__main__.Outer.Inner">>}} =
        detail(py:exec(<<"raise Outer.Inner('x')">>, ?OPTS)),
    alive().

%% @doc An arg whose conversion raises is {py_object, TypeName, Repr}, and the
%% error is still built.
unconvertible_args(_Config) ->
    ok = py:exec(<<"class BadIter:\n"
                   "    def __iter__(self):\n"
                   "        raise RuntimeError('no iterating')\n"
                   "    def __repr__(self):\n"
                   "        return 'BadIter()'\n"
                   "class BadBoth:\n"
                   "    def __iter__(self):\n"
                   "        raise RuntimeError('no iterating')\n"
                   "    def __repr__(self):\n"
                   "        raise RuntimeError('no repr')\n">>),
    {'ValueError', _, _, Info} =
        detail(py:exec(<<"raise ValueError(1, BadIter(), BadBoth())">>, ?OPTS)),
    ?assertMatch(#{args := [1, {py_object, <<"BadIter">>, <<"BadIter()">>},
                            {py_object, <<"BadBoth">>, <<"<repr failed>">>}]},
                 Info),
    %% As a KeyError's key too.
    {'KeyError', _, _, #{key := {py_object, <<"BadIter">>, <<"BadIter()">>}}} =
        detail(py:exec(<<"raise KeyError(BadIter())">>, ?OPTS)),
    alive().

%% @doc ImportError and ModuleNotFoundError: name, and path when there is one.
import_error(_Config) ->
    {'ModuleNotFoundError', _, _, Missing} =
        detail(py:exec(<<"import no_such_module_py_error_detail">>, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.ModuleNotFoundError">>,
                   name := <<"no_such_module_py_error_detail">>},
                 Missing),
    ?assertNot(maps:is_key(path, Missing)),
    {'ImportError', _, _, FromImport} = detail(py:exec(<<"from json import nope">>, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.ImportError">>, name := <<"json">>, path := _},
                 FromImport),
    ?assertNotEqual(nomatch, string:find(maps:get(path, FromImport), <<"json">>)),
    alive().

%% @doc SyntaxError: filename, lineno, offset, text.
syntax_error(_Config) ->
    {'SyntaxError', _, _, Info} = detail(py:exec(<<"x = 1\ndef (:\n">>, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.SyntaxError">>, filename := <<"<py:exec>">>,
                   lineno := 2, offset := Offset, text := <<"def (:", _/binary>>}
                   when is_integer(Offset),
                 Info),
    {'IndentationError', _, _, #{lineno := 2}} =
        detail(py:exec(<<"if 1:\nx = 1">>, ?OPTS)),
    %% Raised by hand with no location: the None attributes are left out.
    {'SyntaxError', _, _, Bare} = detail(py:exec(<<"raise SyntaxError('bare')">>, ?OPTS)),
    ?assertEqual(#{class => <<"builtins.SyntaxError">>, args => [<<"bare">>]}, Bare),
    alive().

%% @doc SystemExit: code, whatever it is.
system_exit(_Config) ->
    {'SystemExit', <<"3">>, _, #{code := 3}} =
        detail(py:exec(<<"import sys\nsys.exit(3)">>, ?OPTS)),
    {'SystemExit', _, _, #{code := none}} = detail(py:exec(<<"raise SystemExit">>, ?OPTS)),
    {'SystemExit', _, _, #{code := <<"bye">>}} =
        detail(py:call(sys, exit, [<<"bye">>], #{}, ?OPTS)),
    alive().

%% @doc StopIteration: value.
stop_iteration(_Config) ->
    {'StopIteration', _, _, #{value := 5}} =
        detail(py:exec(<<"raise StopIteration(5)">>, ?OPTS)),
    {'StopIteration', _, _, #{value := none}} =
        detail(py:eval(<<"next(iter([]))">>, #{}, ?OPTS)),
    alive().

%% @doc UnicodeDecodeError and UnicodeEncodeError: encoding, start, end, reason.
unicode_decode_error(_Config) ->
    {'UnicodeDecodeError', _, _, Decode} =
        detail(py:eval(<<"b'ab\\xff'.decode('utf-8')">>, #{}, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.UnicodeDecodeError">>, encoding := <<"utf-8">>,
                   start := 2, 'end' := 3, reason := <<"invalid start byte">>},
                 Decode),
    {'UnicodeEncodeError', _, _, Encode} =
        detail(py:eval(<<"'a\\u00e9'.encode('ascii')">>, #{}, ?OPTS)),
    ?assertMatch(#{encoding := <<"ascii">>, start := 1, 'end' := 2, reason := _}, Encode),
    alive().

%% @doc raise ... from ...: cause is {Type, Message, Info} of __cause__.
explicit_cause(_Config) ->
    {'ValueError', <<"x">>, Tb, Info} =
        detail(py:exec(<<"raise ValueError('x') from KeyError('k')">>, ?OPTS)),
    ?assertMatch(#{class := <<"builtins.ValueError">>, args := [<<"x">>],
                   cause := {'KeyError', <<"'k'">>,
                             #{class := <<"builtins.KeyError">>, args := [<<"k">>],
                               key := <<"k">>}}},
                 Info),
    {_, _, CauseInfo} = maps:get(cause, Info),
    ?assertNot(maps:is_key(cause, CauseInfo)),
    ?assertNotEqual(nomatch, string:find(Tb, <<"direct cause">>)),
    alive().

%% @doc An exception raised while handling another: cause is that other (__context__).
implicit_context(_Config) ->
    Code = <<"try:\n"
             "    {}['inner']\n"
             "except KeyError:\n"
             "    raise RuntimeError('while handling')\n">>,
    {'RuntimeError', <<"while handling">>, _, Info} = detail(py:exec(Code, ?OPTS)),
    ?assertMatch(#{cause := {'KeyError', <<"'inner'">>, #{key := <<"inner">>}}}, Info),
    alive().

%% @doc raise ... from None: no cause.
suppressed_context(_Config) ->
    Code = <<"try:\n"
             "    {}['inner']\n"
             "except KeyError:\n"
             "    raise RuntimeError('clean') from None\n">>,
    {'RuntimeError', _, _, Info} = detail(py:exec(Code, ?OPTS)),
    ?assertNot(maps:is_key(cause, Info)),
    %% Nothing raised before: no cause either.
    {'ValueError', _, _, Plain} = detail(py:exec(<<"raise ValueError('alone')">>, ?OPTS)),
    ?assertNot(maps:is_key(cause, Plain)),
    alive().

%% @doc A chain of ten nests five levels and stops there.
nesting_limit(_Config) ->
    Code = <<"def chain(n):\n"
             "    if n == 0:\n"
             "        raise ValueError('0')\n"
             "    try:\n"
             "        chain(n - 1)\n"
             "    except ValueError as e:\n"
             "        raise ValueError(str(n)) from e\n"
             "chain(9)\n">>,
    {'ValueError', <<"9">>, _, Info} = detail(py:exec(Code, ?OPTS)),
    ?assertEqual([<<"8">>, <<"7">>, <<"6">>, <<"5">>, <<"4">>], causes(Info)),
    alive().

causes(#{cause := {_, Message, Info}}) -> [Message | causes(Info)];
causes(_) -> [].

%% @doc Two exceptions that are each other's context end at the nesting limit.
context_cycle(_Config) ->
    Code = <<"a = ValueError('a')\n"
             "b = KeyError('b')\n"
             "a.__context__ = b\n"
             "b.__context__ = a\n"
             "raise a\n">>,
    {'ValueError', <<"a">>, _, Info} = detail(py:exec(Code, ?OPTS)),
    ?assertEqual([<<"'b'">>, <<"a">>, <<"'b'">>, <<"a">>, <<"'b'">>], causes(Info)),
    alive().

%% @doc add_note (3.11+): notes, in order; a cause keeps its own.
notes(_Config) ->
    case python_at_least(3, 11) of
        false ->
            {skip, "add_note needs Python 3.11"};
        true ->
            Code = <<"e = ValueError('x')\n"
                     "e.add_note('first')\n"
                     "e.add_note('second')\n"
                     "c = KeyError('k')\n"
                     "c.add_note('of the cause')\n"
                     "raise e from c\n">>,
            {'ValueError', _, _, Info} = detail(py:exec(Code, ?OPTS)),
            ?assertMatch(#{notes := [<<"first">>, <<"second">>],
                           cause := {'KeyError', _, #{notes := [<<"of the cause">>]}}},
                         Info),
            {_, _, _, NoNotes} = detail(py:exec(<<"raise ValueError('y')">>, ?OPTS)),
            ?assertNot(maps:is_key(notes, NoNotes)),
            alive()
    end.

%% @doc ExceptionGroup (3.11+): exceptions, each {Type, Message, Info}, groups nested.
exception_group(_Config) ->
    case python_at_least(3, 11) of
        false ->
            {skip, "ExceptionGroup needs Python 3.11"};
        true ->
            Code = <<"raise ExceptionGroup('many', [ValueError('a'), KeyError('b'),\n"
                     "    ExceptionGroup('inner', [OSError(2, 'gone', 'f.txt')])])\n">>,
            {'ExceptionGroup', <<"many (3 sub-exceptions)">>, _, Info} =
                detail(py:exec(Code, ?OPTS)),
            ?assertMatch(
               #{class := <<"builtins.ExceptionGroup">>,
                 exceptions := [{'ValueError', <<"a">>, #{class := <<"builtins.ValueError">>}},
                                {'KeyError', <<"'b'">>, #{key := <<"b">>}},
                                {'ExceptionGroup', _,
                                 #{exceptions := [{'FileNotFoundError', _,
                                                   #{errno := 2, filename := <<"f.txt">>}}]}}]},
               Info),
            alive()
    end.

%% @doc json.JSONDecodeError is named by its module, where it is defined.
json_decode_error(_Config) ->
    {Type, _, _, Info} = detail(py:call(json, loads, [<<"{">>], #{}, ?OPTS)),
    ?assert(Type =:= 'JSONDecodeError' orelse Type =:= <<"JSONDecodeError">>),
    ?assertMatch(#{class := <<"json.decoder.JSONDecodeError">>, args := [_]}, Info),
    alive().

%% @doc A class with a never-seen name makes no atom: not as Type, not in Info,
%% not in a cause.
no_new_atoms(_Config) ->
    %% Once first, so that the atoms of the fixed keys exist.
    {_, _, _, _} = raise_unique(),
    Before = erlang:system_info(atom_count),
    Names = [raise_unique() || _ <- lists:seq(1, 20)],
    After = erlang:system_info(atom_count),
    ?assertEqual(Before, After),
    [begin
         ?assertEqual(Name, Type),
         ?assertEqual(<<"__main__.", Name/binary>>, Class),
         ?assertEqual({Name, <<"inner">>}, {CauseType, CauseMessage})
     end
     || {Name, Type, Class, {CauseType, CauseMessage}} <- Names],
    alive().

%% Raises a new class __main__.<unique name>, caused by another of the same
%% class; the name never becomes an atom here.
raise_unique() ->
    Name = iolist_to_binary(io_lib:format("Unique_~b_~b", [erlang:unique_integer([positive]),
                                                           rand:uniform(1 bsl 40)])),
    Code = <<"class ", Name/binary, "(Exception):\n"
             "    pass\n"
             "raise ", Name/binary, "('outer', 1) from ", Name/binary, "('inner')\n">>,
    {Type, <<"('outer', 1)">>, _, Info} = detail(py:exec(Code, ?OPTS)),
    #{class := Class, cause := {CauseType, CauseMessage, _}} = Info,
    {Name, Type, Class, {CauseType, CauseMessage}}.

%% @doc Without the option every entry point gives the 3-tuple, as before.
without_option(_Config) ->
    ?assertMatch({error, {'KeyError', <<"'k'">>, <<"KeyError: 'k'\n">>}},
                 py:call(operator, getitem, [#{}, <<"k">>])),
    ?assertMatch({error, {'KeyError', <<"'k'">>, <<"KeyError: 'k'\n">>}},
                 py:call(operator, getitem, [#{}, <<"k">>], #{})),
    ?assertMatch({error, {'ValueError', <<"x">>, <<"KeyError: 'k'\n\nThe above", _/binary>>}},
                 py:exec(<<"raise ValueError('x') from KeyError('k')">>)),
    ?assertMatch({error, {'ZeroDivisionError', _, _}}, py:eval(<<"1 / 0">>)),
    ?assertMatch({error, {'ZeroDivisionError', _, _}}, py:eval(<<"1 / 0">>, #{})),
    ?assertMatch({error, {'SyntaxError', _, _}}, py:eval(<<"1 +* 2">>)),
    ?assertMatch({error, {'FileNotFoundError', _, _}},
                 py:call(builtins, open, [<<"/nonexistent/x">>])),
    %% And with the option, the same call is the 4-tuple.
    ?assertMatch({error, {'ZeroDivisionError', _, _, #{}}},
                 py:eval(<<"1 / 0">>, #{}, ?OPTS)),
    alive().

%% @doc A thousand detailed errors with causes leave the interpreter as it was.
errors_leave_interpreter_usable(_Config) ->
    [{error, {_, _, _, #{cause := _}}} =
         py:exec(<<"raise ValueError('x') from KeyError('k')">>, ?OPTS)
     || _ <- lists:seq(1, 1000)],
    alive().
