%% Named pools (docs/pools.md), `mode => process': Python in OS processes of its own, behind
%% the same calls as the VM's pool. Conversions, errors, timeouts and callbacks are the VM's
%% (the conversion property of py_convert_SUITE and a table of rows run against both), crashes
%% and limits end a worker, never the VM, and nothing is left running.
-module(py_pool_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [calls_eval_exec, default_pool_is_the_vm, round_trip_property_in_a_process,
     conversions_match_the_vm, arguments_match_the_vm, atoms_are_counted,
     threads_and_unknown_names, errors_match_the_vm, call_errors_match_the_vm, detailed_errors,
     timeout_interrupts, queued_calls, queued_call_times_out, stop_pool_answers_calls,
     abandoned_claim_is_released, abandoned_claim_with_a_chatty_worker, late_call_waits_its_turn,
     nested_call_after_its_worker_died, callbacks_back_to_back, large_payloads,
     stuck_call_is_killed, callbacks_reach_this_vm, send_and_self, nested_call_on_one_worker,
     output_goes_to_the_caller, subprocess_works_natively, crash_gives_worker_exit,
     memory_limit, cpu_limit, max_calls_recycles, calls_run_in_parallel,
     other_pool_unaffected_by_a_long_c_call, async_call_on_a_pool, unsupported_options,
     start_errors, stop_pool_leaves_nothing, pools_from_the_application_env,
     python_path_and_init, python_as_a_venv_directory].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:register_function(pool_double, fun([X]) -> 2 * X end),
    ok = py:register_function(pool_nested, fun([X]) ->
        {ok, V} = py:call(operator, mul, [X, 10], #{}, #{pool => pool_one}),
        V
    end),
    Setup = <<"
def echo(x):
    return x
def type_name(x):
    return type(x).__name__
">>,
    ok = py:exec(Setup),
    %% Each worker has a __main__ of its own: what all need goes in `init'.
    {ok, _} = py:start_pool(pool_two, #{size => 2, init => Setup}),
    {ok, _} = py:start_pool(pool_one, #{size => 1, give_up_after => 300, init => Setup}),
    Config.

end_per_suite(_Config) ->
    _ = py:stop_pool(pool_two),
    _ = py:stop_pool(pool_one),
    ok.

two(Kind, Args) ->
    apply(py, Kind, Args ++ [#{pool => pool_two}]).

worker_pid(Pool) ->
    {ok, Pid} = py:eval(<<"__import__('os').getpid()">>, #{}, #{pool => Pool}),
    Pid.

%% @doc call, eval and exec run in the pool's own processes.
calls_eval_exec(_Config) ->
    ?assertEqual({ok, 4.0}, py:call(math, sqrt, [16], #{}, #{pool => pool_two})),
    ?assertEqual(ok, py:exec(<<"pool_x = 41">>, #{pool => pool_two, timeout => 5000})),
    Pid = worker_pid(pool_two),
    ?assertNotEqual(list_to_integer(os:getpid()), Pid),
    ?assert(lists:member(pool_two, py:pools())),
    ?assertEqual({error, {no_such_pool, nope}}, py:call(math, sqrt, [4], #{}, #{pool => nope})).

%% @doc `pool => default' is the VM's own pool.
default_pool_is_the_vm(_Config) ->
    ?assertEqual({ok, list_to_integer(os:getpid())},
                 py:eval(<<"__import__('os').getpid()">>, #{}, #{pool => default})),
    ?assertEqual(default, hd(py:pools())).

%% @doc py_convert_SUITE's round-trip property, through a worker process.
round_trip_property_in_a_process(_Config) ->
    Property = ?FORALL(Term, py_convert_SUITE:term_gen(),
                       py:call('__main__', echo, [Term], #{}, #{pool => pool_two})
                       =:= {ok, Term}),
    ?assert(proper:quickcheck(Property, [{numtests, 300}, {to_file, user}])).

%% @doc Each row of docs/type-conversion.md gives the same in both modes: the value back,
%% the Python type, and what a Python expression converts to.
conversions_match_the_vm(_Config) ->
    Terms = [0, -1, 1 bsl 64, -(1 bsl 200), 1.5, nan, infinity, neg_infinity, true, false,
             none, nil, undefined, ok, 'Ünïcode', <<"text">>, <<255, 0>>, {bytes, <<"b">>},
             "abc", [], [1, [2]], {}, {1, <<"a">>}, #{a => 1, <<"b">> => [2]}, self(),
             make_ref(), hd(erlang:ports()), fun lists:sum/1, fun() -> ok end,
             #{1 => one, 2.5 => two}, {bytes, foo}, {bytes, <<255>>}],
    [begin
         VmEcho = py:call('__main__', echo, [T]),
         VmType = py:call('__main__', type_name, [T]),
         ?assertEqual({T, VmEcho}, {T, two(call, ['__main__', echo, [T], #{}])}),
         ?assertEqual({T, VmType}, {T, two(call, ['__main__', type_name, [T], #{}])})
     end || T <- Terms],
    Refused = [<<1:3>>, [1 | 2], #{[1] => 1}, #{a => 1, <<"a">> => 2}],
    [?assertMatch({{error, {Type, _, _}}, {error, {Type, _, _}}},
                  {py:call('__main__', echo, [T]), two(call, ['__main__', echo, [T], #{}])})
     || T <- Refused],
    Expressions = [<<"None">>, <<"(True, False)">>, <<"2 ** 100">>, <<"float('nan')">>,
                   <<"'é'">>, <<"b'\\xff'">>, <<"bytearray(b'ab')">>, <<"memoryview(b'mv')">>,
                   <<"[1, (2, 3)]">>, <<"{'a': [1]}">>, <<"sorted({3, 1, 2})">>,
                   <<"range(3)">>, <<"iter([1, 2])">>, <<"(i for i in range(2))">>,
                   <<"__import__('erlang').Atom('ok')">>, <<"'\\udc80'">>,
                   <<"__import__('collections').OrderedDict(a=1)">>,
                   <<"__import__('decimal').Decimal('1.5')">>, <<"{1: 'a', True: 'b'}">>,
                   <<"{'a': 1, b'a': 2}">>, <<"'x' * 70000">>,
                   <<"type('I', (int,), {'__int__': lambda s: 7})(3)">>,
                   <<"type('L', (list,), {'__iter__': lambda s: iter([9])})([1, 2])">>,
                   <<"__import__('datetime').date(2020, 1, 2)">>,
                   <<"[1 << 40000000]">>, <<"2 ** 70000">>],
    [?assertEqual({E, norm(py:eval(E))}, {E, norm(two(eval, [E, #{}]))}) || E <- Expressions],
    ?assertMatch({ok, {py_object, <<"object">>, _}}, two(eval, [<<"object()">>, #{}])),
    %% A handle holds an object of the VM's interpreter, not of a worker's.
    {ok, Handle} = py:eval(<<"object()">>, #{}, #{return => object}),
    ?assertMatch({error, {'ReferenceError', _, _}}, two(call, ['__main__', echo, [Handle], #{}])).

%% Errors compared by class and message (tracebacks name different files).
norm({error, {Type, Message, _}}) -> {error, Type, Message};
norm(Other) -> Other.

%% @doc Keyword arguments and locals keep the VM's rules: keys atoms or binaries.
arguments_match_the_vm(_Config) ->
    ?assertEqual(norm(py:call('__main__', echo, [], #{1 => 2})),
                 norm(two(call, ['__main__', echo, [], #{1 => 2}]))),
    ?assertEqual(norm(py:eval(<<"1">>, #{1 => 2})), norm(two(eval, [<<"1">>, #{1 => 2}]))),
    ?assertEqual(norm(py:call('__main__', echo, [], #{x => 5})),
                 norm(two(call, ['__main__', echo, [], #{x => 5}]))).

%% @doc erlang.Atom values make atoms only within atom_limit, counted one by one: a result
%% with more new atoms than the budget is refused before any is made.
atoms_are_counted(_Config) ->
    Before = erlang:system_info(atom_count),
    ?assertMatch({error, {'OverflowError', _, _}},
                 py:eval(<<"[__import__('erlang').Atom('pool_new_atom_%d' % i) "
                           "for i in range(20000)]">>, #{}, #{pool => pool_one})),
    ?assert(erlang:system_info(atom_count) - Before < 100),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})),
    ?assertEqual({ok, [ok, error]},
                 py:eval(<<"[__import__('erlang').Atom(n) for n in ('ok', 'error')]">>, #{},
                         #{pool => pool_one})).

%% @doc erlang.call from a thread the worker's Python started is refused (only the thread
%% that runs calls talks to the VM); erlang.send to a name nobody has makes no atom.
threads_and_unknown_names(_Config) ->
    {ok, Text} = two(eval, [<<"__import__('concurrent.futures').futures.ThreadPoolExecutor(1)"
                              ".submit(lambda: repr(__import__('erlang').self())).result()">>,
                            #{}]),
    ?assertEqual(<<"None">>, Text),
    ?assertMatch({error, {<<"Error">>, _, _}},
                 norm_type(two(eval, [<<"__import__('concurrent.futures').futures"
                                        ".ThreadPoolExecutor(1).submit(lambda: __import__('erlang')"
                                        ".call('pool_double', 1)).result()">>, #{}]))),
    Before = erlang:system_info(atom_count),
    ?assertEqual({ok, none}, two(eval, [<<"__import__('erlang').send('nobody_registered_xyz', 1)">>,
                                        #{}])),
    ?assertEqual(Before, erlang:system_info(atom_count)).

norm_type({error, {Type, M, T}}) when is_atom(Type) -> {error, {atom_to_binary(Type), M, T}};
norm_type(Other) -> Other.

%% @doc Exceptions are the same values: builtin class names as atoms, others as binaries.
errors_match_the_vm(_Config) ->
    Cases = [<<"{}['x']">>, <<"1/0">>, <<"int('x')">>, <<"undefined_name">>,
             <<"__import__('no_such_module')">>, <<"exec('raise SystemExit(3)')">>],
    [?assertEqual({E, norm(py:eval(E))}, {E, norm(two(eval, [E, #{}]))}) || E <- Cases],
    {error, {'ZeroDivisionError', _, Traceback}} = two(eval, [<<"1/0">>, #{}]),
    ?assertNotEqual(nomatch, string:find(Traceback, <<"<py:eval>">>)),
    ?assertEqual(nomatch, string:find(Traceback, <<"_process_worker">>)).

%% @doc Calls by name (sent with the names in the frame's header) fail as in the VM, where
%% an atom names a module by its text, `true' and `none' included.
call_errors_match_the_vm(_Config) ->
    Cases = [{true, x, []}, {none, x, []}, {math, false, []}, {no_such_module_x, f, []},
             {math, no_such_function, []}, {math, sqrt, [<<"x">>]}, {math, sqrt, [1, 2]},
             {<<"math">>, <<"sqrt">>, [4]}, {'os.path', join, [<<"a">>, <<"b">>]}],
    [?assertEqual({C, norm(py:call(M, F, A, K))}, {C, norm(two(call, [M, F, A, K]))})
     || {M, F, A} = C0 <- Cases, K <- [#{}, #{unused => 1}], C <- [{C0, K}]].

%% @doc More calls than workers: the rest wait in the manager's queue, none is lost, and
%% the pool takes direct calls again afterwards.
queued_calls(_Config) ->
    Started = erlang:monotonic_time(millisecond),
    Refs = [begin
                {ok, R} = py:async_call(time, sleep, [0.2], #{}, #{pool => pool_two}),
                R
            end || _ <- lists:seq(1, 6)],
    [?assertEqual({ok, none}, py:await(R)) || R <- Refs],
    ?assert(erlang:monotonic_time(millisecond) - Started >= 580),
    [?assertEqual({ok, 4.0}, py:call(math, sqrt, [16], #{}, #{pool => pool_two}))
     || _ <- lists:seq(1, 100)].

%% @doc A call that times out while queued leaves the queue; the pool goes on.
queued_call_times_out(_Config) ->
    {ok, Busy} = py:async_call(time, sleep, [0.5], #{}, #{pool => pool_one}),
    timer:sleep(50),
    ?assertEqual({error, timeout},
                 py:call(operator, add, [1, 2], #{}, #{pool => pool_one, timeout => 100})),
    ?assertEqual({ok, none}, py:await(Busy)),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})).

%% @doc A caller that claimed a worker and died before sending its call (killed between the
%% two) does not keep the worker: the worker frees its slot within two of its once-a-second
%% looks, and the calls that queued meanwhile run.
abandoned_claim_is_released(_Config) ->
    abandoned_claim(pool_one).

%% @doc The same while Python's own thread sends the VM a message every 100 ms (its frames
%% must not keep the worker from looking at its slot).
abandoned_claim_with_a_chatty_worker(_Config) ->
    Init = <<"import erlang, threading, time\n"
             "def chatter():\n"
             "    while True:\n"
             "        erlang.send('no_such_registered_name', 1)\n"
             "        time.sleep(0.1)\n"
             "threading.Thread(target=chatter, daemon=True).start()\n">>,
    {ok, _} = py:start_pool(pool_chatty, #{size => 1, init => Init}),
    try
        abandoned_claim(pool_chatty)
    after
        py:stop_pool(pool_chatty)
    end.

abandoned_claim(Pool) ->
    {ok, #{slots := Slots, size := 1}} = py_pool:lookup(Pool),
    ?assertEqual({ok, 1}, py_pool:claim(Slots, 1)),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => Pool, timeout => 10000})),
    Waited = erlang:monotonic_time(millisecond) - Started,
    ct:pal("the call waited ~p ms for the abandoned claim", [Waited]),
    ?assert(Waited >= 500 andalso Waited < 5000),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => Pool})).

%% @doc A call that reaches a worker busy with another (its caller's claim was freed as
%% abandoned before it sent) waits there for its turn and can be cancelled while it waits.
late_call_waits_its_turn(_Config) ->
    {ok, _} = py:start_pool(pool_late, #{size => 1}),
    try
        {ok, #{workers := Table}} = py_pool:lookup(pool_late),
        [{1, Worker}] = ets:lookup(Table, 1),
        {ok, Long} = py:async_call(time, sleep, [0.5], #{}, #{pool => pool_late}),
        timer:sleep(100),
        Late = fun(Code) ->
            Alias = erlang:monitor(process, Worker, [{alias, reply_demonitor}]),
            Worker ! {run, Alias, exec, Code, false, group_leader(), self()},
            Alias
        end,
        Cancelled = Late(<<"import builtins\nbuiltins.late_ran = True">>),
        Waiting = Late(<<"x = 1">>),
        Worker ! {py_pool_cancel, Cancelled},
        ?assertEqual({ok, none}, py:await(Long)),
        receive {Waiting, Answer} -> ?assertEqual(ok, Answer) after 5000 -> ct:fail(no_answer) end,
        ?assertEqual({ok, false}, py:eval(<<"getattr(__import__('builtins'), 'late_ran', False)">>,
                                          #{}, #{pool => pool_late})),
        receive {Cancelled, _} = Unexpected -> ct:fail({answered, Unexpected}) after 0 -> ok end
    after
        py:stop_pool(pool_late)
    end.

%% @doc A callback that outlives its call's worker (killed after the call timed out) and
%% then calls the pool gets an error at once, not a retry loop on the dead worker.
nested_call_after_its_worker_died(_Config) ->
    Self = self(),
    ok = py:register_function(pool_sleepy_nested, fun([]) ->
        timer:sleep(800),
        Self ! {nested, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})},
        0
    end),
    ?assertEqual({error, timeout},
                 py:eval(<<"__import__('erlang').call('pool_sleepy_nested')">>, #{},
                         #{pool => pool_one, timeout => 100})),
    receive
        {nested, Answer} -> ?assertMatch({error, {worker_exit, _}}, Answer)
    after 5000 ->
        ct:fail(nested_call_never_answered)
    end,
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})).

%% @doc Many callbacks one after the other in one call keep the worker process's stack
%% flat (each was handled inside the last, deeper and deeper).
callbacks_back_to_back(_Config) ->
    ok = py:register_function(pool_worker_stack, fun([]) ->
        {stack_size, Words} = process_info(get({py_pool_waiter, pool_two}), stack_size),
        Words
    end),
    {ok, Deepest} = py:eval(<<"max(__import__('erlang').call('pool_worker_stack') "
                              "for _ in range(3000))">>, #{}, #{pool => pool_two}),
    ct:pal("the worker's stack through 3000 callbacks: at most ~p words", [Deepest]),
    ?assert(Deepest < 1000).

%% @doc Large values both ways, whole: a frame comes in many reads of the socket, joined once
%% (appending each read to the last copied it again: 16 MB took seconds, not milliseconds).
large_payloads(_Config) ->
    Bytes = crypto:strong_rand_bytes(16 * 1024 * 1024),
    {Micros, Echoed} = timer:tc(py, call, [builtins, bytes, [{bytes, Bytes}], #{},
                                           #{pool => pool_two}]),
    ?assertEqual({ok, Bytes}, Echoed),
    ct:pal("16 MB echoed through a process pool in ~p ms", [Micros div 1000]),
    ?assert(Micros < 3000000),
    List = lists:seq(1, 300000),
    ?assertEqual({ok, List}, py:call(builtins, list, [List], #{}, #{pool => pool_two})).

%% @doc Stopping a pool answers its calls in flight `{error, {pool_down, Name}}'.
stop_pool_answers_calls(_Config) ->
    {ok, _} = py:start_pool(pool_stopped, #{size => 1}),
    Self = self(),
    spawn(fun() -> Self ! {answer, py:call(time, sleep, [30], #{}, #{pool => pool_stopped})} end),
    timer:sleep(200),
    ok = py:stop_pool(pool_stopped),
    receive
        {answer, Answer} -> ?assertEqual({error, {pool_down, pool_stopped}}, Answer)
    after 5000 ->
        ct:fail(no_answer)
    end.

detailed_errors(_Config) ->
    {error, {'FileNotFoundError', _, _, Info}} =
        py:call(builtins, open, [<<"/no/such/file">>], #{},
                #{pool => pool_two, errors => detailed}),
    ?assertMatch(#{class := <<"builtins.FileNotFoundError">>, errno := 2,
                   filename := <<"/no/such/file">>}, Info),
    {error, {'ValueError', _, _, #{cause := {'KeyError', _, #{key := <<"k">>}}}}} =
        py:exec(<<"raise ValueError('x') from KeyError('k')">>,
                #{pool => pool_two, errors => detailed}).

%% @doc A timeout interrupts the call (CallCancelled at its next bytecode), and the worker
%% serves the next call.
timeout_interrupts(_Config) ->
    Pid = worker_pid(pool_one),
    ?assertEqual({error, timeout},
                 py:eval(<<"exec('import time\\nwhile True: time.sleep(0.01)')">>, #{},
                         #{pool => pool_one, timeout => 100})),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})),
    ?assertEqual(Pid, worker_pid(pool_one)).

%% @doc A call that ignores the cancellation (a long C call) is ended by killing its worker
%% `give_up_after' ms later; a new worker serves the next call.
stuck_call_is_killed(_Config) ->
    Pid = worker_pid(pool_one),
    Started = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout},
                 py:call(time, sleep, [30], #{}, #{pool => pool_one, timeout => 100})),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})),
    ?assert(erlang:monotonic_time(millisecond) - Started < 5000),
    ?assertNotEqual(Pid, worker_pid(pool_one)),
    ?assert(py_test_wait:until(fun() -> not is_running(Pid) end)).

is_running(OsPid) ->
    filelib:is_dir("/proc/" ++ integer_to_list(OsPid)).

%% @doc erlang.call and erlang.name(...) in the worker run functions registered in this VM.
callbacks_reach_this_vm(_Config) ->
    ?assertEqual({ok, 42}, two(eval, [<<"__import__('erlang').call('pool_double', 21)">>, #{}])),
    ?assertEqual({ok, 8}, two(eval, [<<"__import__('erlang').pool_double(4)">>, #{}])),
    ?assertMatch({error, {'UnknownFunction', _, _}},
                 two(eval, [<<"__import__('erlang').call('no_such_fun')">>, #{}])),
    ok = py:register_function(pool_fail, fun(_) -> error(oops) end),
    ?assertMatch({error, {'ErlangException', _, _}},
                 two(eval, [<<"__import__('erlang').pool_fail()">>, #{}])).

%% @doc erlang.send reaches this VM's processes; erlang.self() is the caller.
send_and_self(_Config) ->
    ?assertEqual({ok, self()}, two(eval, [<<"__import__('erlang').self()">>, #{}])),
    {ok, none} = two(eval, [<<"__import__('erlang').send(p, ('hello', 1))">>, #{p => self()}]),
    receive {<<"hello">>, 1} -> ok after 5000 -> ct:fail(no_message) end.

%% @doc A callback that calls the same pool back is served by the worker that waits for it,
%% even in a pool of one.
nested_call_on_one_worker(_Config) ->
    ?assertEqual({ok, 70},
                 py:eval(<<"__import__('erlang').pool_nested(7)">>, #{}, #{pool => pool_one})).

%% @doc print() in a worker goes to the caller's group leader.
output_goes_to_the_caller(_Config) ->
    Leader = py_test_leader:start(),
    {Pid, Monitor} = spawn_monitor(fun() ->
        group_leader(Leader, self()),
        {ok, none} = py:eval(<<"print('from a process')">>, #{}, #{pool => pool_two})
    end),
    receive {'DOWN', Monitor, process, Pid, Reason} -> ?assertEqual(normal, Reason) end,
    ?assertEqual(<<"from a process\n">>, py_test_leader:printed(<<>>)),
    exit(Leader, kill).

%% @doc No sandbox in a worker process: subprocess works, with its exit codes.
subprocess_works_natively(_Config) ->
    ?assertEqual({ok, 3}, two(eval, [<<"__import__('subprocess').run(['sh', '-c', 'exit 3'])"
                                       ".returncode">>, #{}])),
    ?assertEqual({ok, <<"hi\n">>},
                 two(eval, [<<"__import__('subprocess').check_output(['echo', 'hi'])">>, #{}])).

%% @doc A worker that dies (os._exit, abort, a segfault) gives its caller
%% {error, {worker_exit, Reason}}; the pool goes on with a new worker.
crash_gives_worker_exit(_Config) ->
    ?assertEqual({error, {worker_exit, {exit_status, 3}}},
                 py:call(os, '_exit', [3], #{}, #{pool => pool_one})),
    ?assertEqual({error, {worker_exit, {signal, 6}}},
                 py:call(os, abort, [], #{}, #{pool => pool_one})),
    ?assertEqual({error, {worker_exit, {signal, 11}}},
                 py:eval(<<"__import__('ctypes').string_at(0)">>, #{}, #{pool => pool_one})),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2], #{}, #{pool => pool_one})).

%% @doc `memory_limit' (bytes of address space): a worker asking for more gets MemoryError.
memory_limit(_Config) ->
    {ok, _} = py:start_pool(pool_memory, #{size => 1, memory_limit => 1 bsl 30}),
    try
        ?assertMatch({error, {'MemoryError', _, _}},
                     py:eval(<<"len(bytearray(4 * 2 ** 30))">>, #{}, #{pool => pool_memory})),
        ?assertEqual({ok, 1000}, py:eval(<<"len(bytearray(1000))">>, #{}, #{pool => pool_memory}))
    after
        py:stop_pool(pool_memory)
    end.

%% @doc `cpu_limit' (seconds of CPU per call): a call past it ends its worker.
cpu_limit(_Config) ->
    {ok, _} = py:start_pool(pool_cpu, #{size => 1, cpu_limit => 1}),
    try
        {error, {worker_exit, {signal, _}}} =
            py:eval(<<"exec('while True: pass')">>, #{}, #{pool => pool_cpu, timeout => 20000}),
        ?assertEqual({ok, 2}, py:eval(<<"1 + 1">>, #{}, #{pool => pool_cpu}))
    after
        py:stop_pool(pool_cpu)
    end.

%% @doc `max_calls': a worker is replaced after that many calls.
max_calls_recycles(_Config) ->
    {ok, _} = py:start_pool(pool_recycle, #{size => 1, max_calls => 3}),
    try
        Pids = [worker_pid(pool_recycle) || _ <- lists:seq(1, 6)],
        ?assertEqual(2, length(lists:usort(Pids)))
    after
        py:stop_pool(pool_recycle)
    end.

%% @doc Calls on a pool of two run at once: two 0.5 s sleeps take about 0.5 s.
calls_run_in_parallel(_Config) ->
    Started = erlang:monotonic_time(millisecond),
    Refs = [begin
                {ok, R} = py:async_call(time, sleep, [0.5], #{}, #{pool => pool_two}),
                R
            end || _ <- [1, 2]],
    [?assertEqual({ok, none}, py:await(R)) || R <- Refs],
    ?assert(erlang:monotonic_time(millisecond) - Started < 900).

%% @doc A long C call holding one process's GIL does not hold another pool's calls, nor the
%% VM's.
other_pool_unaffected_by_a_long_c_call(_Config) ->
    {ok, Long} = py:async_call(builtins, eval, [<<"sum(range(10 ** 8))">>], #{},
                               #{pool => pool_one, timeout => 60000}),
    timer:sleep(100),
    {Micros, {ok, 4.0}} = timer:tc(py, call, [math, sqrt, [16], #{}, #{pool => pool_two}]),
    {VmMicros, {ok, 4.0}} = timer:tc(py, call, [math, sqrt, [16]]),
    ct:pal("small calls during a long C call elsewhere: pool ~p us, VM ~p us",
           [Micros, VmMicros]),
    ?assert(Micros < 200000),
    ?assert(VmMicros < 200000),
    ?assertMatch({ok, _}, py:await(Long)).

async_call_on_a_pool(_Config) ->
    {ok, Ref} = py:async_call(operator, add, [1, 2], #{}, #{pool => pool_two}),
    ?assertEqual({ok, 3}, py:await(Ref)),
    ?assertEqual({error, {badarg, {ref, Ref}}}, py:await(Ref)).

%% @doc What needs the VM's interpreter says so.
unsupported_options(_Config) ->
    ?assertEqual({error, {badarg, {option, {return, object}}}},
                 py:call(math, sqrt, [4], #{}, #{pool => pool_two, return => object})),
    ?assertEqual({error, {badarg, {option, {pool, pool_two}}}},
                 py:stream(builtins, range, [3], #{}, #{pool => pool_two})),
    ?assertEqual({error, {unsupported, {call_method, pool_two}}},
                 py:call_method(element(2, py:eval(<<"[]">>, #{}, #{return => object})),
                                append, [1], #{}, #{pool => pool_two})),
    ?assertEqual({error, {badarg, {option, {pool, "x"}}}},
                 py:call(math, sqrt, [4], #{}, #{pool => "x"})).

%% @doc Bad options and Pythons that cannot start are errors, and leave nothing running.
start_errors(_Config) ->
    ?assertEqual({error, {badarg, {option, {size, 0}}}}, py:start_pool(p_bad, #{size => 0})),
    ?assertEqual({error, {badarg, {option, {python, "/no/such/python"}}}},
                 py:start_pool(p_bad, #{python => "/no/such/python"})),
    ?assertEqual({error, {badarg, {option, {colour, red}}}},
                 py:start_pool(p_bad, #{colour => red})),
    ?assertEqual({error, {badarg, {name, default}}}, py:start_pool(default, #{})),
    ?assertEqual({error, {badarg, {name, "p"}}}, py:start_pool("p", #{})),
    ?assertMatch({error, {worker_start_failed, _}},
                 py:start_pool(p_bad, #{python => "/bin/false", size => 1})),
    ?assertMatch({error, {already_started, _}}, py:start_pool(pool_two, #{})),
    ?assertEqual({error, not_found}, py:stop_pool(no_such_pool)),
    ?assertNot(lists:member(p_bad, py:pools())).

%% @doc Stopping a pool kills its workers, and whatever they started.
stop_pool_leaves_nothing(_Config) ->
    {ok, _} = py:start_pool(pool_stop, #{size => 2}),
    Pids = lists:usort([worker_pid(pool_stop) || _ <- lists:seq(1, 6)]),
    {ok, Child} = py:eval(<<"__import__('subprocess').Popen(['sleep', '60']).pid">>, #{},
                          #{pool => pool_stop}),
    {ok, _} = py:async_call(time, sleep, [60], #{}, #{pool => pool_stop}),
    timer:sleep(100),
    ok = py:stop_pool(pool_stop),
    ?assert(py_test_wait:until(fun() -> not lists:any(fun is_running/1, [Child | Pids]) end)),
    ?assertEqual({error, {no_such_pool, pool_stop}},
                 py:call(math, sqrt, [4], #{}, #{pool => pool_stop})),
    %% Each worker's socket directory went once its Python connected.
    ?assertEqual([], filelib:wildcard("/tmp/erlang_python." ++ os:getpid() ++ ".*")).

%% @doc The application env `pools' starts pools at boot (in a VM of its own).
pools_from_the_application_env(_Config) ->
    {ok, Peer, _} = py_test_peer:start(#{env => [{pools, #{boot_pool => #{size => 1}}}]}),
    try
        ?assertEqual([default, boot_pool], py_test_peer:call(Peer, py, pools, [])),
        ?assertEqual({ok, 4.0}, py_test_peer:call(Peer, py, call,
                                                  [math, sqrt, [16], #{}, #{pool => boot_pool}]))
    after
        py_test_peer:stop(Peer)
    end.

%% @doc `python_path' puts directories on the workers' sys.path; `init' runs in every worker,
%% replacements included.
python_path_and_init(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "pool_modules"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    ok = file:write_file(filename:join(Dir, "pool_helper.py"), <<"def triple(x):\n    return 3 * x\n">>),
    {ok, _} = py:start_pool(pool_paths, #{size => 2, python_path => [Dir],
                                          init => <<"from pool_helper import triple\n"
                                                     "print('init ran')\n">>}),
    try
        [?assertEqual({ok, 21}, py:eval(<<"triple(7)">>, #{}, #{pool => pool_paths}))
         || _ <- lists:seq(1, 4)],
        {error, {worker_exit, _}} = py:call(os, '_exit', [1], #{}, #{pool => pool_paths}),
        [?assertEqual({ok, 21}, py:eval(<<"triple(7)">>, #{}, #{pool => pool_paths}))
         || _ <- lists:seq(1, 4)]
    after
        py:stop_pool(pool_paths)
    end,
    ?assertMatch({error, {worker_start_failed, {init_failed, {'NameError', _, _, _}}}},
                 py:start_pool(pool_bad_init, #{size => 1, init => <<"undefined_name">>})),
    ?assertEqual({error, {badarg, {option, {python_path, ["/no/such/dir"]}}}},
                 py:start_pool(pool_bad_path, #{python_path => ["/no/such/dir"]})).

%% @doc `python' may name a venv's directory: its bin/python runs the workers.
python_as_a_venv_directory(Config) ->
    Venv = filename:join(?config(priv_dir, Config), "pool_venv"),
    {ok, Python} = py:executable(),
    "" = os:cmd(binary_to_list(Python) ++ " -m venv --without-pip " ++ Venv),
    {ok, _} = py:start_pool(pool_venv, #{size => 1, python => Venv}),
    try
        {ok, Prefix} = py:eval(<<"__import__('sys').prefix">>, #{}, #{pool => pool_venv}),
        ?assertEqual(filename:absname(Venv), binary_to_list(Prefix))
    after
        py:stop_pool(pool_venv)
    end.
