%% Python objects held from Erlang (docs/objects.md): handles made with `return => object',
%% used as targets of getattr/call_method/to_term and passed back anywhere a term goes, freed
%% when the VM's garbage collector drops them, and refused clearly when they come from
%% another VM. Also the options map every call takes.
-module(py_objects_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [handle_from_call, handle_from_eval_and_exec_options, getattr_and_methods,
     methods_returning_objects, kwargs_and_options_on_methods, async_method,
     to_term_converts, handles_inside_terms, handle_identity_is_kept,
     handles_property, handles_freed_when_their_process_dies, handle_freed_once_dropped,
     handle_kept_as_binary_after_its_object_is_gone, handle_sent_to_another_vm,
     handle_of_unconvertible_object, plain_timeout_still_works, bad_options,
     bad_object_arguments, info_reports_releases].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"
import weakref as _weakref
class Counter:
    def __init__(self, start=0):
        self.value = start
    def add(self, n=1, *, times=1):
        self.value += n * times
        return self.value
    def child(self):
        return Counter(self.value * 10)
    async def later(self, n):
        return self.value + n
obj_live = _weakref.WeakSet()
class Blob:
    def __init__(self, size):
        self.data = bytes(size)
        obj_live.add(self)
def obj_counter(start=0):
    return Counter(start)
def obj_blob(size):
    return Blob(size)
def obj_identity(a, b):
    return a is b
def obj_echo(x):
    return x
def obj_values(x):
    if isinstance(x, Counter):
        return ('counter', x.value)
    if isinstance(x, list):
        return [obj_values(i) for i in x]
    if isinstance(x, tuple):
        return tuple(obj_values(i) for i in x)
    if isinstance(x, dict):
        return {k: obj_values(v) for k, v in x.items()}
    return x
">>),
    Config.

end_per_suite(_Config) ->
    ok.

counter(Start) ->
    {ok, Object} = py:call('__main__', obj_counter, [Start], #{}, #{return => object}),
    Object.

%% @doc `return => object' gives a handle: an opaque term that py:is_object/1 recognises.
handle_from_call(_Config) ->
    Object = counter(5),
    ?assert(py:is_object(Object)),
    ?assertNot(py:is_object(make_ref())),
    ?assertNot(py:is_object({py_object, <<"Counter">>, <<"...">>})),
    ?assertEqual({ok, 5}, py:getattr(Object, value)),
    %% The default stays a term.
    ?assertMatch({ok, {py_object, <<"Counter">>, _}}, py:call('__main__', obj_counter, [1])).

%% @doc eval and exec take the same options map; exec has no result to return.
handle_from_eval_and_exec_options(_Config) ->
    {ok, Dict} = py:eval(<<"{'a': 1}">>, #{}, #{return => object}),
    ?assert(py:is_object(Dict)),
    ?assertEqual({ok, 1}, py:call_method(Dict, get, [a])),
    ?assertEqual(ok, py:exec(<<"obj_x = 1">>, #{timeout => 5000, errors => detailed})),
    ?assertEqual(ok, py:exec(<<"obj_y = 2">>, #{return => object})).

%% @doc getattr/2 and call_method/3 act on the object itself: state persists between calls.
getattr_and_methods(_Config) ->
    Object = counter(0),
    ?assertEqual({ok, 1}, py:call_method(Object, add, [])),
    ?assertEqual({ok, 4}, py:call_method(Object, add, [3])),
    ?assertEqual({ok, 4}, py:getattr(Object, <<"value">>)),
    ?assertMatch({error, {'AttributeError', _, _}}, py:getattr(Object, missing)),
    ?assertMatch({error, {'TypeError', _, _}}, py:call_method(Object, add, [1, 2, 3])).

%% @doc Methods and attributes can return handles too.
methods_returning_objects(_Config) ->
    Object = counter(2),
    {ok, Child} = py:call_method(Object, child, [], #{}, #{return => object}),
    ?assert(py:is_object(Child)),
    ?assertEqual({ok, 20}, py:getattr(Child, value)),
    {ok, Bound} = py:getattr(Object, add, #{return => object}),
    ?assertEqual({ok, 3}, py:call_method(Bound, '__call__', [1])),
    ?assertEqual({ok, 3}, py:getattr(Object, value)).

%% @doc Keyword arguments, and the whole options map, on a method call.
kwargs_and_options_on_methods(_Config) ->
    Object = counter(0),
    ?assertEqual({ok, 6}, py:call_method(Object, add, [2], #{times => 3})),
    ?assertEqual({ok, 8}, py:call_method(Object, add, [], #{<<"times">> => 2}, 1000)),
    ?assertMatch({error, {'TypeError', _, _, #{class := <<"builtins.TypeError">>}}},
                 py:call_method(Object, add, [], #{bad => 1}, #{errors => detailed})).

%% @doc An `async def' method runs to its end like an `async def' function.
async_method(_Config) ->
    ?assertEqual({ok, 12}, py:call_method(counter(10), later, [2])).

%% @doc to_term/1 converts the object by the usual rules.
to_term_converts(_Config) ->
    {ok, List} = py:eval(<<"[1, (2, 'x')]">>, #{}, #{return => object}),
    ?assertEqual({ok, [1, {2, <<"x">>}]}, py:to_term(List)),
    %% return => object means nothing to to_term.
    ?assertEqual({ok, [1, {2, <<"x">>}]}, py:to_term(List, #{return => object})),
    ?assertMatch({ok, {py_object, <<"Counter">>, _}}, py:to_term(counter(1))).

%% @doc A handle passed in args, kwargs, eval locals, lists, tuples and maps arrives as its
%% object.
handles_inside_terms(_Config) ->
    A = counter(1),
    B = counter(2),
    ?assertEqual({ok, {<<"counter">>, 1}}, py:call('__main__', obj_values, [A])),
    ?assertEqual({ok, [{<<"counter">>, 1}, #{k => {<<"counter">>, 2}}]},
                 py:call('__main__', obj_values, [[A, #{k => B}]])),
    ?assertEqual({ok, 3}, py:eval(<<"a.value + d['b'].value">>, #{a => A, d => #{b => B}})),
    ?assertEqual({ok, {<<"counter">>, 2}}, py:call('__main__', obj_values, [], #{x => B})).

%% @doc The same handle is the same object (`is'), each time it is passed.
handle_identity_is_kept(_Config) ->
    A = counter(1),
    ?assertEqual({ok, true}, py:call('__main__', obj_identity, [A, A])),
    ?assertEqual({ok, false}, py:call('__main__', obj_identity, [A, counter(1)])),
    {ok, Again} = py:call('__main__', obj_echo, [A], #{}, #{return => object}),
    ?assertEqual({ok, true}, py:call('__main__', obj_identity, [A, Again])).

%% @doc PropEr: any term with handles anywhere inside arrives with each handle as its object,
%% and everything else as the usual conversion (as args, as a kwarg, as an eval local).
handles_property(_Config) ->
    Handles = [{N, counter(N)} || N <- lists:seq(1, 5)],
    Property = ?FORALL(Term, term_with_handles(Handles),
                       begin
                           {Sent, Expected} = Term,
                           Want = {ok, Expected},
                           Want =:= py:call('__main__', obj_values, [Sent])
                               andalso Want =:= py:call('__main__', obj_values, [], #{x => Sent})
                               andalso Want =:= py:eval(<<"obj_values(t)">>, #{t => Sent})
                       end),
    ?assert(proper:quickcheck(Property, [{numtests, 300}, {to_file, user}])).

%% A term to send and what Python's obj_values makes of it.
term_with_handles(Handles) ->
    ?SIZED(Size, term_with_handles(Size, Handles)).

term_with_handles(0, Handles) ->
    oneof([?LET(N, integer(), {N, N}),
           ?LET(B, utf8(), {B, B}),
           ?LET(A, oneof([ok, error, foo]), {A, A}),
           ?LET({N, H}, oneof(Handles), {H, {<<"counter">>, N}})]);
term_with_handles(Size, Handles) ->
    Smaller = term_with_handles(Size div 3, Handles),
    frequency([{3, term_with_handles(0, Handles)},
               {1, ?LET(Items, list(Smaller), {[S || {S, _} <- Items], [E || {_, E} <- Items]})},
               {1, ?LET(Items, list(Smaller),
                        {list_to_tuple([S || {S, _} <- Items]),
                         list_to_tuple([E || {_, E} <- Items])})},
               {1, ?LET(Items, list({integer(), Smaller}),
                        begin
                            Map = maps:from_list(Items),
                            {maps:map(fun(_, {S, _}) -> S end, Map),
                             maps:map(fun(_, {_, E}) -> E end, Map)}
                        end)}]).

live_blobs() ->
    {ok, N} = py:eval(<<"len(obj_live)">>),
    N.

%% @doc 2,000 handles to 100 KB objects, made by a process that then dies, are freed within
%% seconds: the VM's collector drops the handles, and the releaser thread the objects.
handles_freed_when_their_process_dies(_Config) ->
    Before = live_blobs(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        Handles = [begin
                       {ok, H} = py:call('__main__', obj_blob, [100000], #{},
                                         #{return => object}),
                       H
                   end || _ <- lists:seq(1, 2000)],
        exit({made, length(Handles)})
    end),
    receive {'DOWN', Monitor, process, Pid, Reason} -> ?assertEqual({made, 2000}, Reason) end,
    ?assert(py_test_wait:until(fun() -> live_blobs() =< Before end)).

%% @doc A handle a living process stops referring to is freed at its next garbage collection.
handle_freed_once_dropped(_Config) ->
    Before = live_blobs(),
    Self = self(),
    Pid = spawn(fun() ->
        {ok, _} = py:call('__main__', obj_blob, [10], #{}, #{return => object}),
        Self ! made,
        receive stop -> ok end
    end),
    receive made -> ok end,
    true = erlang:garbage_collect(Pid),
    ?assert(py_test_wait:until(fun() -> live_blobs() =< Before end)),
    Pid ! stop.

%% @doc A handle kept as a binary (term_to_binary) works while its object lives, and gives
%% ReferenceError, never a crash, once it is gone.
handle_kept_as_binary_after_its_object_is_gone(_Config) ->
    Object = counter(7),
    Kept = term_to_binary(Object),
    ?assertEqual({ok, 7}, py:getattr(binary_to_term(Kept), value)),
    {Pid, Monitor} = spawn_monitor(fun() ->
        {ok, H} = py:call('__main__', obj_blob, [10], #{}, #{return => object}),
        exit({kept, term_to_binary(H)})
    end),
    Dead = receive {'DOWN', Monitor, process, Pid, {kept, Bin}} -> Bin end,
    ?assert(py_test_wait:until(fun() ->
        case py:getattr(binary_to_term(Dead), data) of
            {error, {'ReferenceError', _, _}} -> true;
            {ok, _} -> false
        end
    end)),
    Stale = binary_to_term(Dead),
    ?assert(py:is_object(Stale)),
    {error, {'ReferenceError', Message, _}} = py:call('__main__', obj_echo, [[1, Stale]]),
    ?assertNotEqual(nomatch, string:find(Message, <<"not from this VM">>)),
    ?assertMatch({error, {'ReferenceError', _, _}}, py:call_method(Stale, x, [])),
    ?assertMatch({error, {'ReferenceError', _, _}}, py:to_term(Stale)).

%% @doc A handle sent to another VM (a peer, through the external term format) is refused
%% there with ReferenceError; it still works here.
handle_sent_to_another_vm(_Config) ->
    Object = counter(3),
    {ok, Peer, _} = py_test_peer:start(#{}),
    try
        ?assertMatch({error, {'ReferenceError', _, _}},
                     py_test_peer:call(Peer, py, getattr, [Object, value])),
        ?assertMatch({error, {'ReferenceError', _, _}},
                     py_test_peer:call(Peer, py, eval, [<<"o">>, #{o => Object}])),
        ?assertEqual(true, py_test_peer:call(Peer, py, is_object, [Object]))
    after
        py_test_peer:stop(Peer)
    end,
    ?assertEqual({ok, 3}, py:getattr(Object, value)).

%% @doc Objects with no Erlang form (a lock, a generator) are held as they are.
handle_of_unconvertible_object(_Config) ->
    {ok, Lock} = py:eval(<<"__import__('threading').Lock()">>, #{}, #{return => object}),
    ?assertEqual({ok, true}, py:call_method(Lock, acquire, [])),
    ?assertEqual({ok, true}, py:call_method(Lock, locked, [])),
    ?assertEqual({ok, none}, py:call_method(Lock, release, [])),
    {ok, Gen} = py:eval(<<"(i * i for i in range(4))">>, #{}, #{return => object}),
    ?assertEqual({ok, 0}, py:call(builtins, next, [Gen])),
    ?assertEqual({ok, [1, 4, 9]}, py:to_term(Gen)).

%% @doc A plain timeout is still accepted where the options map goes.
plain_timeout_still_works(_Config) ->
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, 1000)),
    ?assertEqual({ok, 3}, py:eval(<<"1 + 2">>, #{}, infinity)),
    ?assertEqual(ok, py:exec(<<"pass">>, 1000)),
    ?assertEqual({error, timeout},
                 py:call(time, sleep, [1], #{}, #{timeout => 50})).

%% @doc A bad option, or a bad options argument, is named in the error.
bad_options(_Config) ->
    ?assertEqual({error, {badarg, {option, {return, objects}}}},
                 py:call(operator, add, [1, 2], #{}, #{return => objects})),
    ?assertEqual({error, {badarg, {option, {timeout, -1}}}},
                 py:eval(<<"1">>, #{}, #{timeout => -1})),
    ?assertEqual({error, {badarg, {option, {colour, red}}}},
                 py:exec(<<"pass">>, #{colour => red})),
    ?assertEqual({error, {badarg, {timeout, soon}}}, py:exec(<<"pass">>, soon)),
    ?assertEqual({error, {badarg, {timeout, [timeout]}}},
                 py:call(operator, add, [1, 2], #{}, [timeout])),
    %% `active' is a stream's option only.
    ?assertEqual({error, {badarg, {option, {active, 3}}}},
                 py:call(operator, add, [1, 2], #{}, #{active => 3})).

%% @doc Object functions given something that is not a handle say which argument is bad.
bad_object_arguments(_Config) ->
    Object = counter(0),
    ?assertEqual({error, {badarg, {object, 42}}}, py:getattr(42, value)),
    ?assertEqual({error, {badarg, {name, 42}}}, py:getattr(Object, 42)),
    ?assertEqual({error, {badarg, {object, make_ref}}}, py:call_method(make_ref, add, [])),
    ?assertEqual({error, {badarg, {args, x}}}, py:call_method(Object, add, x)),
    ?assertEqual({error, {badarg, {kwargs, []}}}, py:call_method(Object, add, [], [])),
    ?assertEqual({error, {badarg, {object, {'$py_object', 1}}}}, py:to_term({'$py_object', 1})),
    ?assertEqual({error, {badarg, {timeout, x}}}, py:to_term(Object, x)).

%% @doc py:info/0 counts the objects the releaser dropped.
info_reports_releases(_Config) ->
    #{objects_released := Before} = py:info(),
    {Pid, Monitor} = spawn_monitor(fun() -> counter(1) end),
    receive {'DOWN', Monitor, process, Pid, _} -> ok end,
    ?assert(py_test_wait:until(fun() ->
        #{objects_released := After, objects_releasing := Pending} = py:info(),
        After > Before andalso Pending =:= 0
    end)).
