%% Conversion between Erlang terms and Python objects: one case per row of
%% docs/type-conversion.md, a PropEr round-trip property, and large and deep
%% terms that convert without stalling schedulers.
-module(py_convert_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [integers, big_integers, floats, special_floats, booleans, none_atoms, atoms,
     atom_limit, utf8_binaries, invalid_utf8_binaries, bytes_tuple, python_bytes_types,
     bitstrings_refused, lists, improper_lists_refused, tuples, maps, unhashable_keys_refused,
     colliding_map_keys_refused, colliding_keys_refused, opaque_terms, sets_and_iterables, numpy_values, other_objects,
     lone_surrogates, exception_types, round_trip_property, ten_megabyte_binary,
     million_element_list, deep_nesting, too_deep_nesting, endless_iterator_is_bounded,
     huge_iterator_stops_at_the_timeout, list_cleared_during_conversion,
     dict_cleared_during_conversion].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"def echo(x):\n    return x\n"
                   "def type_name(x):\n    return type(x).__name__\n">>),
    Config.

end_per_suite(_Config) ->
    ok.

echo(Term) ->
    py:call('__main__', echo, [Term]).

type_name(Term) ->
    {ok, Name} = py:call('__main__', type_name, [Term]),
    Name.

%% @doc Integers become int and come back equal, at the 64-bit edges too.
integers(_Config) ->
    [?assertEqual({ok, N}, echo(N)) || N <- [0, 1, -1, 1 bsl 62, -(1 bsl 63), (1 bsl 64) - 1]],
    ?assertEqual(<<"int">>, type_name(42)).

%% @doc ±2^200 and larger survive both ways exactly.
big_integers(_Config) ->
    Big = 1 bsl 200,
    ?assertEqual({ok, Big}, echo(Big)),
    ?assertEqual({ok, -Big}, echo(-Big)),
    ?assertEqual({ok, Big + 12345}, py:eval(<<"2 ** 200 + 12345">>)),
    ?assertEqual({ok, -(Big - 1)}, py:eval(<<"-(2 ** 200 - 1)">>)),
    ?assertEqual({ok, 3 bsl 199}, py:eval(<<"x * 3 // 2">>, #{x => Big})),
    Huge = 7 bsl 5000,
    ?assertEqual({ok, Huge}, echo(Huge)).

%% @doc Floats become float and come back equal.
floats(_Config) ->
    [?assertEqual({ok, F}, echo(F)) || F <- [0.0, 1.5, -2.25, 1.0e300, 5.0e-324]],
    ?assertEqual(<<"float">>, type_name(1.5)).

%% @doc nan, inf and -inf travel as the atoms nan, infinity and neg_infinity.
special_floats(_Config) ->
    ?assertEqual({ok, {nan, infinity, neg_infinity}},
                 py:eval(<<"(float('nan'), float('inf'), -float('inf'))">>)),
    ?assertEqual({ok, [true, true, true]},
                 py:eval(<<"[__import__('math').isnan(a), b > 1e308, c < -1e308]">>,
                         #{a => nan, b => infinity, c => neg_infinity})),
    ?assertEqual({ok, <<"float">>}, {ok, type_name(infinity)}).

%% @doc true and false are bools.
booleans(_Config) ->
    ?assertEqual({ok, {true, false}}, echo({true, false})),
    ?assertEqual(<<"bool">>, type_name(true)).

%% @doc none, nil and undefined become None, which comes back as none.
none_atoms(_Config) ->
    ?assertEqual({ok, [none, none, none]}, echo([none, nil, undefined])),
    ?assertEqual(<<"NoneType">>, type_name(undefined)).

%% @doc Other atoms become erlang.Atom, a str subclass, and come back as atoms.
atoms(_Config) ->
    ?assertEqual({ok, hello}, echo(hello)),
    ?assertEqual({ok, 'with space'}, echo('with space')),
    ?assertEqual({ok, 'héllo'}, echo('héllo')),
    ?assertEqual({ok, '日本'}, echo('日本')),
    ?assertEqual(<<"Atom">>, type_name(hello)),
    ?assertEqual({ok, true}, py:eval(<<"isinstance(a, str) and a == 'hello'">>, #{a => hello})),
    ?assertEqual({ok, <<"hello!">>}, py:eval(<<"a + '!'">>, #{a => hello})),
    ?assertEqual({ok, existing_atom_from_python},
                 py:eval(<<"__import__('erlang').Atom('existing_atom_from_python')">>)).

%% @doc New atoms come only from erlang.Atom, and only up to the limit.
atom_limit(_Config) ->
    #{atoms_created := Before} = py_nif:info(),
    {ok, Name} = py:eval(<<"__import__('erlang').Atom('fresh_atom_' + str(__import__('os').getpid()) + '_x')">>),
    ?assert(is_atom(Name)),
    #{atoms_created := After} = py_nif:info(),
    ?assertEqual(Before + 1, After),
    %% Plain strings never become atoms.
    ?assertEqual({ok, <<"never_an_atom_xyz">>}, py:eval(<<"'never_an_atom_xyz'">>)),
    %% Past the limit: a fresh VM with a limit of 2.
    {ok, Peer, _} = py_test_peer:start(#{env => [{atom_limit, 2}]}),
    try
        Make = fun(N) -> py_test_peer:call(Peer, py, eval,
                                           [iolist_to_binary(["__import__('erlang').Atom('capped_", integer_to_list(N), "')"])]) end,
        ?assertMatch({ok, _}, Make(1)),
        ?assertMatch({ok, _}, Make(2)),
        ?assertMatch({error, {'OverflowError', _, _}}, Make(3)),
        %% Existing atoms are still fine.
        ?assertEqual({ok, ok}, py_test_peer:call(Peer, py, eval, [<<"__import__('erlang').Atom('ok')">>]))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc A binary of valid UTF-8 becomes str and comes back identical.
utf8_binaries(_Config) ->
    ?assertEqual({ok, <<"héllo"/utf8>>}, echo(<<"héllo"/utf8>>)),
    ?assertEqual({ok, <<>>}, echo(<<>>)),
    ?assertEqual(<<"str">>, type_name(<<"abc">>)).

%% @doc A binary that is not UTF-8 becomes bytes, byte for byte, never an error.
invalid_utf8_binaries(_Config) ->
    Bad = <<255, 0, 128, "abc">>,
    ?assertEqual(<<"bytes">>, type_name(Bad)),
    ?assertEqual({ok, Bad}, echo(Bad)),
    ?assertEqual({ok, 6}, py:call(builtins, len, [Bad])).

%% @doc {bytes, B} becomes bytes even when B is valid UTF-8.
bytes_tuple(_Config) ->
    ?assertEqual(<<"bytes">>, type_name({bytes, <<"abc">>})),
    ?assertEqual({ok, <<"abc">>}, echo({bytes, <<"abc">>})),
    ?assertEqual({ok, <<"abc">>}, py:call(builtins, bytes, [{bytes, <<"abc">>}])).

%% @doc bytes, bytearray and memoryview come back as binaries.
python_bytes_types(_Config) ->
    ?assertEqual({ok, [<<1, 2>>, <<3>>, <<"xy">>]},
                 py:eval(<<"[b'\\x01\\x02', bytearray(b'\\x03'), memoryview(b'xy')]">>)).

%% @doc A bitstring that is not whole bytes is refused with TypeError.
bitstrings_refused(_Config) ->
    ?assertMatch({error, {'TypeError', _, _}}, echo(<<1:3>>)).

%% @doc Proper lists become lists.
lists(_Config) ->
    ?assertEqual({ok, [1, [2, [3]], []]}, echo([1, [2, [3]], []])),
    ?assertEqual(<<"list">>, type_name([])),
    ?assertEqual({ok, "abc"}, echo("abc")).

%% @doc Improper lists are refused with a clear TypeError.
improper_lists_refused(_Config) ->
    {error, {'TypeError', Message, _}} = echo([1 | 2]),
    ?assertNotEqual(nomatch, string:find(Message, <<"improper list">>)).

%% @doc Tuples become tuples.
tuples(_Config) ->
    ?assertEqual({ok, {}}, echo({})),
    ?assertEqual({ok, {1, {2, 3}, <<"x">>}}, echo({1, {2, 3}, <<"x">>})),
    ?assertEqual(<<"tuple">>, type_name({1})).

%% @doc Maps become dicts, keys of any hashable kind kept.
maps(_Config) ->
    Map = #{<<"a">> => 1, 2 => <<"two">>, {3, 4} => [5], atom_key => #{}},
    ?assertEqual({ok, Map}, echo(Map)),
    ?assertEqual(<<"dict">>, type_name(#{})),
    ?assertEqual({ok, 1}, py:eval(<<"m[(3, 4)][0] - 4">>, #{m => Map})).

%% @doc Keys Python cannot hash (lists, maps) give TypeError.
unhashable_keys_refused(_Config) ->
    ?assertMatch({error, {'TypeError', _, _}}, echo(#{[1] => 2})),
    ?assertMatch({error, {'TypeError', _, _}}, echo(#{#{} => 2})).

%% @doc Erlang keys that are one key in Python give ValueError, never a lost entry.
colliding_map_keys_refused(_Config) ->
    ?assertMatch({error, {'ValueError', _, _}}, echo(#{foo => 1, <<"foo">> => 2})),
    ?assertMatch({error, {'ValueError', _, _}}, echo(#{1 => a, 1.0 => b})),
    ?assertEqual({ok, #{foo => 1, <<"bar">> => 2}}, echo(#{foo => 1, <<"bar">> => 2})).

%% @doc Python keys that convert to the same term give ValueError.
colliding_keys_refused(_Config) ->
    ?assertMatch({error, {'ValueError', _, _}},
                 py:eval(<<"{'a': 1, __import__('erlang').Atom('b'): 2, b'a': 3}">>)).

%% @doc Pids, refs, ports and funs come back identical, and are hashable and equal in Python.
opaque_terms(_Config) ->
    Port = hd(erlang:ports()),
    Fun = fun(X) -> X + 1 end,
    Terms = [self(), make_ref(), Port, Fun],
    ?assertEqual({ok, Terms}, echo(Terms)),
    [?assertEqual({ok, T}, echo(T)) || T <- Terms],
    ?assertEqual([<<"Pid">>, <<"Reference">>, <<"Port">>, <<"Fun">>], [type_name(T) || T <- Terms]),
    Self = self(),
    ?assertEqual({ok, {true, true, 1, false}},
                 py:eval(<<"(a == b, hash(a) == hash(b), len({a, b}), a == c)">>,
                         #{a => Self, b => Self, c => make_ref()})),
    {ok, Back} = echo(Fun),
    ?assertEqual(2, Back(1)).

%% @doc Sets become lists; iterators, generators and ranges are consumed into lists.
sets_and_iterables(_Config) ->
    {ok, Set} = py:eval(<<"{1, 2, 3}">>),
    ?assertEqual([1, 2, 3], lists:sort(Set)),
    ?assertEqual({ok, [0, 1, 2]}, py:eval(<<"range(3)">>)),
    ?assertEqual({ok, [0, 2, 4]}, py:eval(<<"(x * 2 for x in range(3))">>)),
    ?assertEqual({ok, [3, 2, 1]}, py:eval(<<"reversed([1, 2, 3])">>)),
    ?assertEqual({ok, #{<<"a">> => 1}}, py:eval(<<"__import__('types').MappingProxyType({'a': 1})">>)).

%% @doc numpy scalars and arrays convert through the number and sequence protocols.
numpy_values(_Config) ->
    case py:eval(<<"__import__('numpy').__version__">>) of
        {ok, _} ->
            ?assertEqual({ok, 45}, py:eval(<<"__import__('numpy').arange(10).sum()">>)),
            ?assertEqual({ok, [[0, 1], [2, 3]]},
                         py:eval(<<"__import__('numpy').arange(4).reshape(2, 2)">>)),
            ?assertEqual({ok, 0.5}, py:eval(<<"__import__('numpy').float32(0.5)">>));
        {error, _} ->
            {skip, "numpy is not installed in the configured Python"}
    end.

%% @doc Other objects become {py_object, TypeName, Repr}, never a crash.
other_objects(_Config) ->
    ok = py:exec(<<"class Thing:\n    def __repr__(self):\n        return '<thing>'\n"
                   "class BadRepr:\n    def __repr__(self):\n        raise ValueError('no')\n">>),
    ?assertEqual({ok, {py_object, <<"Thing">>, <<"<thing>">>}}, py:eval(<<"Thing()">>)),
    ?assertMatch({ok, {py_object, <<"BadRepr">>, _}}, py:eval(<<"BadRepr()">>)),
    ?assertMatch({ok, {py_object, <<"builtin_function_or_method">>, _}}, py:eval(<<"len">>)).

%% @doc A str with lone surrogates still converts (to its surrogatepass bytes).
lone_surrogates(_Config) ->
    ?assertEqual({ok, <<16#ED, 16#B2, 16#80>>}, py:eval(<<"'\\udc80'">>)).

%% @doc Exception class names are atoms for builtins, binaries for new names.
exception_types(_Config) ->
    ?assertMatch({error, {'KeyError', _, _}}, py:eval(<<"{}['x']">>)),
    ok = py:exec(<<"class NoSuchAtomErrorXyz123(Exception):\n    pass\n">>),
    ?assertMatch({error, {<<"NoSuchAtomErrorXyz123">>, _, _}},
                 py:eval(<<"exec('raise NoSuchAtomErrorXyz123(1)')">>)).

%% @doc Random terms survive Erlang -> Python -> Erlang unchanged (PropEr).
round_trip_property(_Config) ->
    Property = ?FORALL(Term, term_gen(), echo(Term) =:= {ok, Term}),
    ?assert(proper:quickcheck(Property, [{numtests, 500}, {to_file, user}])).

term_gen() ->
    ?SIZED(Size, term_gen(Size)).

term_gen(0) ->
    leaf_gen();
term_gen(Size) ->
    Smaller = term_gen(Size div 4),
    frequency([{4, leaf_gen()},
               {1, list(Smaller)},
               {1, ?LET(L, list(Smaller), list_to_tuple(L))},
               {1, ?LET(Pairs, list({key_gen(), Smaller}), maps:from_list(Pairs))}]).


leaf_gen() ->
    oneof([integer(), ?LET(N, integer(), N * (1 bsl 100)), float(), binary(), utf8(),
           atom_gen(), self(), exactly(make_ref())]).

%% No atoms: foo and <<"foo">> are one key in Python (see colliding_map_keys_refused).
key_gen() ->
    oneof([integer(), binary(), ?LET({A, B}, {integer(), binary()}, {A, B})]).

%% Atoms that convert to themselves (true, none, nan and the like do not).
atom_gen() ->
    oneof([foo, bar, ok, error, 'hello world', 'ünïcode', '']).

%% @doc A 10 MB binary converts both ways without stalling schedulers.
ten_megabyte_binary(_Config) ->
    Binary = crypto_free_bytes(10 * 1024 * 1024),
    {MaxLate, Result} = with_latency_probe(fun() -> echo(Binary) end),
    ?assertEqual({ok, Binary}, Result),
    {ok, 10485760} = py:call(builtins, len, [Binary]),
    ct:log("max timer lateness ~p ms", [MaxLate]),
    ?assert(MaxLate < 100).

%% @doc A 1,000,000-element list converts both ways without stalling schedulers.
million_element_list(_Config) ->
    List = lists:seq(1, 1000000),
    {MaxLate, Result} = with_latency_probe(fun() -> echo(List) end),
    ?assertEqual({ok, List}, Result),
    ?assertEqual({ok, 1000000}, py:call(builtins, len, [List])),
    ct:log("max timer lateness ~p ms", [MaxLate]),
    ?assert(MaxLate < 100).

%% @doc A list nested 10,000 deep converts both ways.
deep_nesting(_Config) ->
    Deep = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 10000)),
    ?assertEqual({ok, Deep}, echo(Deep)),
    DeepTuple = lists:foldl(fun(_, Acc) -> {Acc} end, {}, lists:seq(1, 10000)),
    ?assertEqual({ok, DeepTuple}, echo(DeepTuple)).

%% @doc Nesting past the limit is a RecursionError, not a crash.
too_deep_nesting(_Config) ->
    Deeper = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 100001)),
    ?assertMatch({error, {'RecursionError', _, _}}, echo(Deeper)),
    ?assertMatch({error, {'RecursionError', _, _}},
                 py:eval(<<"__import__('functools').reduce(lambda a, _: [a], range(100001), [])">>)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% ---------------------------------------------------------------------------

crypto_free_bytes(N) ->
    rand:seed(exsss, {1, 2, 3}),
    << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, N) >>.

%% Runs Fun while a process sleeps 1 ms at a time and records how late it wakes. Both are
%% pinned to scheduler 1: a probe on another scheduler would not see Fun hold its own (with
%% two schedulers, the other one serves the probe). The probe starts once Fun's process
%% holds its data (copying the closure into it is the spawn's work, not Fun's).
with_latency_probe(Fun) ->
    Parent = self(),
    Runner = spawn_opt(fun() ->
        Parent ! {ready, self()},
        receive go -> Parent ! {result, self(), Fun()} end
    end, [link, {scheduler, 1}]),
    receive {ready, Runner} -> ok end,
    Probe = spawn_opt(fun() -> probe_loop(Parent, 0) end, [link, {scheduler, 1}]),
    Runner ! go,
    Result = receive {result, Runner, R} -> R end,
    Probe ! {stop, self()},
    receive {max_late, Probe, Max} -> {Max, Result} end.

probe_loop(Parent, Max) ->
    Start = erlang:monotonic_time(millisecond),
    receive
        {stop, From} -> From ! {max_late, self(), Max}
    after 1 ->
        Late = erlang:monotonic_time(millisecond) - Start - 1,
        probe_loop(Parent, max(Max, Late))
    end.

%% The VM's resident memory, in MB.
rss_mb() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, After] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(After, " \t\n"),
    binary_to_integer(Kb) div 1024.

%% @doc A result that is an endless iterator (itertools.count()) ends in OverflowError at
%% the iterator limit, converted item by item: memory stays bounded (under 1 GB more).
endless_iterator_is_bounded(_Config) ->
    Before = rss_mb(),
    Peak = spawn_rss_watch(),
    ?assertMatch({error, {'OverflowError', _, _}},
                 py:eval(<<"__import__('itertools').count()">>, #{}, 60000)),
    Max = stop_rss_watch(Peak),
    ct:log("RSS ~b MB before, peak ~b MB", [Before, Max]),
    ?assert(Max - Before < 1024).

%% @doc A huge generator past the caller's timeout: {error, timeout} at the deadline, and
%% the conversion notices the cancellation and stops, freeing its worker.
huge_iterator_stops_at_the_timeout(_Config) ->
    Start = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout},
                 py:eval(<<"(i for i in range(10**10))">>, #{}, 300)),
    ?assert(erlang:monotonic_time(millisecond) - Start < 2000),
    ?assert(py_test_wait:until(fun() -> maps:get(busy, py:info()) =:= 0 end)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% @doc An element whose conversion empties the list it is in: no item is freed under
%% the converter; the conversion fails cleanly and the VM goes on.
list_cleared_during_conversion(_Config) ->
    ok = py:exec(<<"class ClearsList:\n"
                   "    def __index__(self):\n"
                   "        victim.clear()\n"
                   "        return 7\n"
                   "victim = [ClearsList(), object(), [1, 2, 3]]\n">>),
    ?assertMatch({error, {'RuntimeError', <<"list changed size during conversion">>, _}},
                 py:eval(<<"victim">>)),
    ok = py:exec(<<"victim = [ClearsList()]\n">>),
    ?assertEqual({ok, [7]}, py:eval(<<"victim">>)),
    ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>)).

%% @doc The same with a dict whose value's conversion empties it: converted from a
%% snapshot of its pairs, each held.
dict_cleared_during_conversion(_Config) ->
    ok = py:exec(<<"class ClearsDict:\n"
                   "    def __index__(self):\n"
                   "        victim_d.clear()\n"
                   "        return 8\n"
                   "victim_d = {'a': ClearsDict(), 'b': [object()], 'c': 'text'}\n">>),
    {ok, Map} = py:eval(<<"victim_d">>),
    ?assertMatch(#{<<"a">> := 8, <<"c">> := <<"text">>}, Map),
    ?assertEqual({ok, #{}}, py:eval(<<"victim_d">>)).

spawn_rss_watch() ->
    Parent = self(),
    spawn_link(fun() -> rss_watch(Parent, 0) end).

rss_watch(Parent, Max) ->
    receive
        {stop, From} -> From ! {peak, max(Max, rss_mb())}
    after 20 ->
        rss_watch(Parent, max(Max, rss_mb()))
    end.

stop_rss_watch(Watch) ->
    Watch ! {stop, self()},
    receive {peak, Max} -> Max end.

