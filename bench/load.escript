#!/usr/bin/env escript
%%! -noshell
%% Under real load (issue 13): the caller's mailbox, spinning and its CPU, big payloads.
%% bench/run.escript runs this in a VM of its own and puts its tables into bench/RESULTS.md.
%%
%% Every figure is measured 5 times (5 runs in this VM; for the CPU of sparse calls, 5 VMs
%% of each scheduler setting) and shown as min / median / max of the runs' medians, next to
%% its baseline measured in the same runs:
%%   - mailbox: py:call, callbacks and timeouts from a process with 0, 1,000, 10,000 and
%%     100,000 unrelated messages queued; baseline gen_server:call from the same processes;
%%   - spinning: back-to-back py:call and erlang.call in a loop, against an Erlang message
%%     round trip; VM CPU per call at one call per ms against the same loop without the
%%     call (the VM's own cost of waking every ms); the idle VM before and after the
%%     application starts;
%%   - payloads: a 100 KB binary echoed as bytes and as str, against two copies of it in
%%     Erlang (binary:copy/1), the least any echo must do.
%%
%% Usage: escript bench/load.escript [Out.md]     (Out.md: where to write the tables)
%%        escript bench/load.escript --sparse-cpu Out.term   (one VM's sparse-call figures)
-mode(compile).

-define(RUNS, 5).
-define(BACKLOGS, [0, 1000, 10000, 100000]).
-define(NO_BUSY_WAIT, "+sbwt none +sbwtdcpu none +sbwtdio none").

main(["--sparse-cpu", Out]) ->
    start(),
    ok = file:write_file(Out, term_to_binary(sparse_cpu())),
    halt(0);
main(["--idle", Mode]) ->
    %% An idle VM for idle_cpu/1 to watch from outside: its OS pid on stdout, then nothing
    %% until stdin closes.
    Mode =/= "bare" andalso start(),
    %% "loop": an ErlangEventLoop waiting an hour on a thread Python started.
    ok = case Mode of
             "loop" -> py:exec(<<"import asyncio, erlang, threading\n"
                         "threading.Thread(target=lambda: erlang.run(asyncio.sleep(3600)),\n"
                         "                 daemon=True).start()\n">>);
             _ -> ok
         end,
    io:format("~s~n", [os:getpid()]),
    _ = io:get_line(""),
    halt(0);
main(Args) ->
    IdleBefore = idle_cpu("bare"),
    IdleAfter = idle_cpu("app"),
    IdleLoop = idle_cpu("loop"),
    start(),
    Mailbox = [mailbox_run() || _ <- lists:seq(1, ?RUNS)],
    Spin = [spin_run() || _ <- lists:seq(1, ?RUNS)],
    Payload = [payload_run() || _ <- lists:seq(1, ?RUNS)],
    Sparse = [{Flags, [sparse_cpu_vm(Flags) || _ <- lists:seq(1, ?RUNS)]}
              || Flags <- ["", ?NO_BUSY_WAIT]],
    Report = report(Mailbox, Spin, Payload, IdleBefore, IdleAfter, IdleLoop, Sparse),
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Report)),
    halt(0).

start() ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(<<"import erlang, time\n"
                   "def load_callbacks(n):\n"
                   "    for i in range(n):\n"
                   "        erlang.call('load_identity', i)\n"
                   "    return n\n"
                   "def load_callback_times(n):\n"
                   "    out = []\n"
                   "    for i in range(n):\n"
                   "        t = time.perf_counter_ns()\n"
                   "        erlang.call('load_identity', i)\n"
                   "        out.append((time.perf_counter_ns() - t) / 1000)\n"
                   "    return out\n"
                   "def load_echo(x):\n"
                   "    return x\n">>),
    ok = py:register_function(load_identity, fun([X]) -> X end),
    _ = [{ok, 4.0} = py:call(math, sqrt, [16]) || _ <- lists:seq(1, 3000)],
    ok.

%% ---------------------------------------------------------------------------
%% The mailbox: one run measures every backlog; each backlog in a process of its own.

mailbox_run() ->
    Server = echo_server(),
    Rows = [{Backlog, in_process_with_backlog(Backlog, fun() -> mailbox_figures(Server) end)}
            || Backlog <- ?BACKLOGS],
    exit(Server, kill),
    maps:from_list(Rows).

mailbox_figures(Server) ->
    Call = median(times(2000, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end)),
    Callback = median(times(200, fun() -> {ok, 10} = py:call('__main__', load_callbacks, [10]) end)) / 10,
    Timeout = median(times(20, fun() -> {error, timeout} = py:eval(<<"time.sleep(0.05)">>, #{}, 2) end)),
    GenCall = median(times(2000, fun() -> pong = gen_server:call(Server, ping) end)),
    #{call => Call, callback => Callback, timeout => Timeout, gen_call => GenCall}.

echo_server() ->
    spawn(fun Loop() ->
              receive
                  {'$gen_call', From, ping} -> gen_server:reply(From, pong), Loop()
              end
          end).

in_process_with_backlog(Backlog, F) ->
    Self = self(),
    {Pid, Mon} = spawn_monitor(fun() ->
                                   [self() ! {junk, I} || I <- lists:seq(1, Backlog)],
                                   Self ! {self(), F()}
                               end),
    receive
        {Pid, Result} -> erlang:demonitor(Mon, [flush]), Result;
        {'DOWN', Mon, _, _, Reason} -> error({backlog_run_failed, Reason})
    end.

%% ---------------------------------------------------------------------------
%% Spinning: latency back to back, callbacks in a loop.

spin_run() ->
    Echo = spawn(fun Loop() -> receive {From, M} -> From ! M, Loop() end end),
    Msg = median(times(20000, fun() -> Echo ! {self(), ping}, receive ping -> ok end end)),
    exit(Echo, kill),
    Call = median(times(20000, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end)),
    {ok, CallbackTimes} = py:call('__main__', load_callback_times, [2000]),
    #{msg => Msg, call => Call, callback => median(CallbackTimes)}.

%% One VM's figures for calls one ms apart: VM CPU per iteration of a loop that sleeps 1 ms
%% and calls, and of the same loop without the call, in alternating blocks; the CPU of the
%% NIF's Python threads per call; the calls' latency.
sparse_cpu() ->
    Cat = open_port({spawn, "cat"}, [binary, {line, 1024}]),
    Blocks = [{sparse_block(sleep), sparse_block(call), sparse_block({port, Cat})}
              || _ <- lists:seq(1, 5)],
    port_close(Cat),
    Sleep = median([S || {{S, _, _}, _, _} <- Blocks]),
    Call = median([C || {_, {C, _, _}, _} <- Blocks]),
    Port = median([C || {_, _, {C, _, _}} <- Blocks]),
    Python = median([P || {_, {_, P, _}, _} <- Blocks]),
    Latency = median(lists:append([L || {_, {_, _, L}, _} <- Blocks])),
    PortLatency = median(lists:append([L || {_, _, {_, _, L}} <- Blocks])),
    #{sleep => Sleep, call => Call, port => Port, python => Python, latency => Latency,
      port_latency => PortLatency}.

sparse_block(Kind) ->
    N = 200,
    Vm0 = vm_cpu_us(),
    Py0 = python_cpu_us(),
    Latencies = sparse_loop(Kind, N, []),
    {(vm_cpu_us() - Vm0) / N, (python_cpu_us() - Py0) / N, Latencies}.

sparse_loop(_Kind, 0, Acc) ->
    Acc;
sparse_loop(sleep, N, Acc) ->
    receive after 1 -> ok end,
    sparse_loop(sleep, N - 1, Acc);
sparse_loop(call, N, Acc) ->
    receive after 1 -> ok end,
    T0 = erlang:monotonic_time(),
    {ok, 4.0} = py:call(math, sqrt, [16]),
    sparse_loop(call, N - 1, [us(erlang:monotonic_time() - T0) | Acc]);
sparse_loop({port, Cat}, N, Acc) ->
    receive after 1 -> ok end,
    T0 = erlang:monotonic_time(),
    true = port_command(Cat, <<"ping\n">>),
    receive {Cat, {data, {eol, <<"ping">>}}} -> ok end,
    sparse_loop({port, Cat}, N - 1, [us(erlang:monotonic_time() - T0) | Acc]).

%% Runs this script with --sparse-cpu in a fresh VM with Flags, and reads its figures.
sparse_cpu_vm(Flags) ->
    Out = filename:join("/tmp", "erlang_python_bench_sparse_" ++ os:getpid() ++ ".term"),
    Escript = os:find_executable("escript"),
    Port = open_port({spawn_executable, Escript},
                     [{args, [escript:script_name(), "--sparse-cpu", Out]},
                      {env, [{"ERL_FLAGS", Flags}]}, binary, exit_status, stderr_to_stdout]),
    0 = wait_exit(Port),
    {ok, Bin} = file:read_file(Out),
    ok = file:delete(Out),
    binary_to_term(Bin).

wait_exit(Port) ->
    receive
        {Port, {data, Data}} -> io:put_chars(standard_error, Data), wait_exit(Port);
        {Port, {exit_status, Status}} -> Status
    end.

%% CPU per second of wall time of an idle VM of its own (Mode "bare": nothing started;
%% "app": the application started and warmed up; "loop": that and an idle event loop), over 1 s windows after 1 s to settle: 5
%% windows. It is read from this VM, so that the reading's own cost (a few ms for the files
%% of /proc) is not counted: read from inside, it was most of what an idle VM uses.
idle_cpu(Mode) ->
    Escript = os:find_executable("escript"),
    Port = open_port({spawn_executable, Escript},
                     [{args, [escript:script_name(), "--idle", Mode]}, {line, 256}, binary]),
    OsPid = receive {Port, {data, {eol, Line}}} -> binary_to_list(Line) end,
    timer:sleep(1000),
    Windows = [begin
                   Vm0 = vm_cpu_us(OsPid), Py0 = python_cpu_us(OsPid),
                   timer:sleep(1000),
                   {vm_cpu_us(OsPid) - Vm0, python_cpu_us(OsPid) - Py0}
               end || _ <- lists:seq(1, ?RUNS)],
    port_close(Port),
    Windows.

%% ---------------------------------------------------------------------------
%% Payloads

payload_run() ->
    Bin = binary:copy(<<"0123456789abcdef">>, 100 * 1024 div 16),
    Copy = median(times(2000, fun() -> _ = binary:copy(binary:copy(Bin)) end)),
    Bytes = median(times(2000, fun() -> {ok, <<_/binary>>} = py:call('__main__', load_echo, [{bytes, Bin}]) end)),
    Str = median(times(2000, fun() -> {ok, <<_/binary>>} = py:call('__main__', load_echo, [Bin]) end)),
    #{copy => Copy, bytes => Bytes, str => Str}.

%% ---------------------------------------------------------------------------
%% The report

report(Mailbox, Spin, Payload, IdleBefore, IdleAfter, IdleLoop, Sparse) ->
    Spread = fun(Values) -> spread(Values) end,
    MailboxRows =
        lists:append(
          [[["py:call(math, sqrt, [16])", int(B), Spread(pick(Mailbox, B, call)),
             ratio(pick(Mailbox, B, call), pick(Mailbox, 0, call))],
            ["erlang.call in a py:call (per callback, 10 per call)", int(B),
             Spread(pick(Mailbox, B, callback)),
             ratio(pick(Mailbox, B, callback), pick(Mailbox, 0, callback))],
            ["py:eval that times out (2 ms timeout)", int(B), Spread(pick(Mailbox, B, timeout)),
             ratio(pick(Mailbox, B, timeout), pick(Mailbox, 0, timeout))],
            ["gen_server:call to an echo server (baseline)", int(B),
             Spread(pick(Mailbox, B, gen_call)),
             ratio(pick(Mailbox, B, gen_call), pick(Mailbox, 0, gen_call))]]
           || B <- ?BACKLOGS]),
    SpinRows =
        [["Erlang message round trip (baseline)", Spread([maps:get(msg, R) || R <- Spin])],
         ["py:call(math, sqrt, [16]), back to back", Spread([maps:get(call, R) || R <- Spin])],
         ["erlang.call in a loop, timed in Python", Spread([maps:get(callback, R) || R <- Spin])]],
    SparseRows =
        lists:append(
          [[[flags_label(Flags), "loop of 1 ms sleeps, no call (baseline)",
             Spread([maps:get(sleep, R) || R <- Runs])],
            [flags_label(Flags), "the same loop with a py:call after each sleep",
             Spread([maps:get(call, R) || R <- Runs])],
            [flags_label(Flags), "the difference: VM CPU per sparse call",
             Spread([maps:get(call, R) - maps:get(sleep, R) || R <- Runs])],
            [flags_label(Flags), "of which the NIF's Python threads",
             Spread([maps:get(python, R) || R <- Runs])],
            [flags_label(Flags), "latency of the sparse call (µs)",
             Spread([maps:get(latency, R) || R <- Runs])],
            [flags_label(Flags), "baseline: VM CPU per line through a `cat` port instead "
             "(`cat`'s own CPU not counted)",
             Spread([maps:get(port, R) - maps:get(sleep, R) || R <- Runs])],
            [flags_label(Flags), "baseline: latency of that port round trip (µs)",
             Spread([maps:get(port_latency, R) || R <- Runs])]]
           || {Flags, Runs} <- Sparse]),
    IdleRows =
        [["nothing started (baseline)", Spread([V || {V, _} <- IdleBefore]),
          Spread([P || {_, P} <- IdleBefore])],
         ["the application started, idle", Spread([V || {V, _} <- IdleAfter]),
          Spread([P || {_, P} <- IdleAfter])],
         ["the same with an ErlangEventLoop idle on a Python thread (`erlang.run(asyncio.sleep(3600))`)",
          Spread([V || {V, _} <- IdleLoop]), Spread([P || {_, P} <- IdleLoop])]],
    PayloadRows =
        [["binary:copy/1 twice in Erlang (baseline: two copies)", Spread(pick(Payload, copy))],
         ["py:call echo of {bytes, B}: bytes in Python", Spread(pick(Payload, bytes))],
         ["py:call echo of B: str in Python (UTF-8 decode and encode)", Spread(pick(Payload, str))]],
    ["### The caller's mailbox\n\n"
     "Median latency in µs from a process with N unrelated messages queued, min / median / max "
     "of ", int(?RUNS), " runs; ÷ 0 is the median against the same row with none queued.\n\n",
     table(["Operation", "queued", "µs", "÷ 0 queued"], MailboxRows),
     "\n### Spinning\n\n"
     "Back to back, median µs, min / median / max of ", int(?RUNS), " runs:\n\n",
     table(["Operation", "µs"], SpinRows),
     "\nOne call per ms: VM CPU µs per iteration (all threads, from their schedstat), "
     "each figure the median of 5 alternating blocks of 200 iterations in one VM; "
     "min / median / max of ", int(?RUNS), " VMs per scheduler setting.\n\n",
     table(["Schedulers", "Loop", "µs"], SparseRows),
     "\nIdle VM: CPU µs per second of a VM of its own, read from outside it (1 s windows, "
     "after 1 s to settle), min / median / max of ", int(?RUNS), " windows; 0.2% of a core "
     "is 2000 µs/s.\n\n",
     table(["VM", "all threads", "the NIF's Python threads"], IdleRows),
     "\n### 100 KB payloads\n\n"
     "Median µs of 2000 echoes through `py:call` of `def load_echo(x): return x`, "
     "min / median / max of ", int(?RUNS), " runs.\n\n",
     table(["Operation", "µs"], PayloadRows)].

flags_label("") -> "default (+sbwt medium)";
flags_label(Flags) -> "`" ++ Flags ++ "`".

pick(Runs, Backlog, Key) ->
    [maps:get(Key, maps:get(Backlog, R)) || R <- Runs].

pick(Runs, Key) ->
    [maps:get(Key, R) || R <- Runs].

spread(Values) ->
    Sorted = lists:sort(Values),
    fmt("~s / ~s / ~s", [num(hd(Sorted)), num(median(Sorted)), num(lists:last(Sorted))]).

ratio(Values, Baselines) ->
    fmt("~.2f", [median(Values) / max(median(Baselines), 1.0e-9)]).

num(V) when V >= 100 -> integer_to_list(round(V));
num(V) when V >= 10 -> fmt("~.1f", [V * 1.0]);
num(V) -> fmt("~.2f", [V * 1.0]).

int(N) -> integer_to_list(N).

%% ---------------------------------------------------------------------------

times(N, F) ->
    [begin T0 = erlang:monotonic_time(), F(), us(erlang:monotonic_time() - T0) end
     || _ <- lists:seq(1, N)].

us(Native) ->
    erlang:convert_time_unit(Native, native, nanosecond) / 1000.

median(List) ->
    lists:nth(length(List) div 2 + 1, lists:sort(List)).

vm_cpu_us() -> vm_cpu_us(os:getpid()).

vm_cpu_us(OsPid) ->
    lists:sum([cpu_us(T) || T <- tasks(OsPid)]).

python_cpu_us() -> python_cpu_us(os:getpid()).

python_cpu_us(OsPid) ->
    lists:sum([cpu_us(T) || T <- tasks(OsPid), is_python_thread(T)]).

tasks(OsPid) ->
    filelib:wildcard("/proc/" ++ OsPid ++ "/task/*").

is_python_thread(Task) ->
    case file:read_file(filename:join(Task, "comm")) of
        {ok, <<"py_", _/binary>>} -> true;
        _ -> false
    end.

cpu_us(Task) ->
    case file:read_file(filename:join(Task, "schedstat")) of
        {ok, Stat} -> binary_to_integer(hd(string:lexemes(Stat, " "))) / 1000;
        {error, _} -> 0
    end.

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

table(Head, Rows) ->
    Line = fun(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"] end,
    [Line(Head), Line(["---" || _ <- Head]), [Line(R) || R <- Rows]].
