#!/usr/bin/env escript
%%! -noshell
%% erlang_python benchmarks: `make bench` runs this file (not part of `make test`).
%%
%% One run measures the baselines (a line echoed by `cat' through a raw port, an Erlang
%% process-to-process message round trip) and erlang_python's own figures, prints one table
%% with the ratios between them, and writes it to bench/RESULTS.md with the date and machine.
%%
%% Every figure is a round trip seen by its caller, timed with erlang:monotonic_time/0 around
%% each operation (or, for callbacks, with time.perf_counter_ns() around each erlang.call in
%% Python), after a warm-up. Medians and p99s are over all samples of a row.
%% The sandbox's cost, with against without it, comes from bench/sandbox.escript, which this
%% runs (it builds a second NIF without the sandbox and compares two peer VMs).
%%
%% The machine is often shared: the report gives the CPU that other processes used while the
%% latency figures were taken, and the port round trip, the message round trip and py:call
%% are measured in interleaved blocks so that a passing load weighs on all three alike.
%%
%% Environment:
%%   ERLANG_PYTHON    the interpreter to embed (the Makefile passes the test venv's python)
%%   BENCH_RESULTS    where to write the results (default: bench/RESULTS.md next to this file)
%%   BENCH_SCALE      multiplies every iteration count (default 1.0; 0.1 for a quick look)
-mode(compile).

-define(SQRT_CALLS, 20000).
-define(WARMUP, 3000).
-define(FILE_LOOP, 100000).

main(_Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(Ebin) || Ebin <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    case application:ensure_all_started(erlang_python) of
        {ok, _} -> ok;
        {error, Reason} -> fail("cannot start erlang_python: ~p (run `make build` first)", [Reason])
    end,
    Load0 = loadavg(),
    Started = erlang:monotonic_time(millisecond),
    ok = setup_python(),
    warm_up(),
    Rows = run_all(),
    Seconds = (erlang:monotonic_time(millisecond) - Started) / 1000,
    Load1 = loadavg(),
    Report = unicode:characters_to_binary(report(Root, Rows, Seconds, Load0, Load1)),
    ok = io:setopts(standard_io, [{encoding, unicode}]),
    io:put_chars(Report),
    Out = case os:getenv("BENCH_RESULTS") of
              false -> filename:join([Root, "bench", "RESULTS.md"]);
              "" -> filename:join([Root, "bench", "RESULTS.md"]);
              Path -> Path
          end,
    ok = file:write_file(Out, Report),
    io:format("~nwritten to ~ts~n", [Out]),
    halt(0).

fail(Format, Args) ->
    io:format(standard_error, "bench: " ++ Format ++ "~n", Args),
    halt(1).

scale(N) ->
    Scale = case os:getenv("BENCH_SCALE") of
                false -> 1.0;
                S -> list_to_float(case lists:member($., S) of true -> S; false -> S ++ ".0" end)
            end,
    max(1, round(N * Scale)).

%% ---------------------------------------------------------------------------
%% Python side of the benchmark, defined once in __main__.

-define(PY_SETUP, <<"
import erlang, time

def bench_echo(x):
    return x

def bench_callback_times(calls):
    # ns of each erlang.call of the identity fun within this one py:call
    call = erlang.call
    clock = time.perf_counter_ns
    times = []
    for i in range(calls):
        t = clock()
        call('bench_identity', i)
        times.append(clock() - t)
    return times

def bench_attr_times(calls):
    f = erlang.bench_identity
    clock = time.perf_counter_ns
    times = []
    for i in range(calls):
        t = clock()
        f(i)
        times.append(clock() - t)
    return times

def bench_send(pid, count):
    # ns for count erlang.send calls
    send = erlang.send
    t = time.perf_counter_ns()
    for i in range(count):
        send(pid, i)
    return time.perf_counter_ns() - t

def bench_nested(x):
    # Python -> Erlang fun -> py:call(math, sqrt) -> back
    return erlang.call('bench_nested', x)

def bench_python_loop(n):
    total = 0
    for i in range(n):
        total += i
    return total
">>).

%% The file loop, run in the VM and by a plain python3 of the same installation.
-define(PY_FILE_LOOP, <<"
import time

def bench_file_loop(path, count):
    # seconds to open and read a small file count times
    t = time.perf_counter()
    for _ in range(count):
        with open(path, 'rb') as f:
            f.read()
    return time.perf_counter() - t
">>).

setup_python() ->
    ok = py:exec(?PY_SETUP),
    ok = py:exec(?PY_FILE_LOOP),
    ok = py:register_function(bench_identity, fun([X]) -> X end),
    ok = py:register_function(bench_nested, fun([X]) -> {ok, V} = py:call(math, sqrt, [X]), V end),
    ok.

warm_up() ->
    Port = open_port({spawn, "cat"}, [binary, {line, 1024}]),
    _ = [port_rtt(Port) || _ <- lists:seq(1, ?WARMUP)],
    port_close(Port),
    _ = [{ok, 4.0} = py:call(math, sqrt, [16]) || _ <- lists:seq(1, ?WARMUP)],
    _ = [{ok, 3} = py:eval(<<"1+2">>) || _ <- lists:seq(1, ?WARMUP div 3)],
    {ok, _} = py:call('__main__', bench_callback_times, [100]),
    ok.

%% ---------------------------------------------------------------------------
%% The measurements: lists of latencies in µs, or maps of figures.

run_all() ->
    Busy0 = machine_busy_us(),
    Mine0 = vm_cpu_us(),
    T0 = erlang:monotonic_time(),
    N = scale(?SQRT_CALLS),
    {Port, Msg, Call1, Blocks} = measure_interleaved(N, 10),
    Call4 = measure_calls(4, N),
    Call16 = measure_calls(16, N),
    Paced = measure_paced(scale(2000)),
    Cpu = measure_cpu(N),
    Eval = measure(N, fun() -> {ok, 3} = py:eval(<<"1+2">>) end),
    Echo = measure_echo(scale(2000)),
    During = measure_during_c_call(),
    DuringPy = measure_during_python_loop(),
    Callbacks = measure_callbacks(scale(2000), 10),
    Attr = measure_attr_callbacks(scale(2000), 10),
    Send = measure_send(scale(100000)),
    Nested = measure(scale(10000), fun() -> {ok, 4.0} = py:call('__main__', bench_nested, [16]) end),
    %% CPU that other processes used while the figures above were taken, in cores.
    Foreign = max(0.0, (machine_busy_us() - Busy0 - (vm_cpu_us() - Mine0))
                       / us(erlang:monotonic_time() - T0)),
    FileLoop = measure_file_loop(scale(?FILE_LOOP)),
    SandboxCost = sandbox_cost(),
    PortsCost = ports_cost(),
    CancelRecovery = cancel_recovery(),
    SubmitCost = submit_cost(),
    LoadCost = load_cost(),
    AsyncioCost = asyncio_cost(),
    LoggingCost = sub_bench("logging.escript"),
    ObjectsCost = sub_bench("objects.escript"),
    PoolsCost = sub_bench("pools.escript"),
    #{port => Port, msg => Msg, call1 => Call1, blocks => Blocks, call4 => Call4, call16 => Call16, eval => Eval,
      paced => Paced, cpu => Cpu,
      echo => Echo, during => During, during_py => DuringPy, callbacks => Callbacks,
      attr => Attr, send => Send, nested => Nested, file_loop => FileLoop,
      sandbox_cost => SandboxCost, ports_cost => PortsCost,
      cancel_recovery => CancelRecovery, submit_cost => SubmitCost, load_cost => LoadCost,
      asyncio_cost => AsyncioCost, logging_cost => LoggingCost, objects_cost => ObjectsCost,
      pools_cost => PoolsCost,
      foreign => Foreign}.

%% Times F N times; a list of µs (floats).
measure(N, F) ->
    measure(N, F, []).

measure(0, _F, Acc) ->
    Acc;
measure(N, F, Acc) ->
    T0 = erlang:monotonic_time(),
    F(),
    T1 = erlang:monotonic_time(),
    measure(N - 1, F, [us(T1 - T0) | Acc]).

us(Native) ->
    erlang:convert_time_unit(Native, native, nanosecond) / 1000.

%% The two baselines and sequential py:calls, in Blocks rounds of N div Blocks each, taken
%% in turn so that a change in the machine's load affects all three alike. Returns
%% {PortSamples, MessageSamples, {CallSamples, CallsPerSecond}, [{PortMedian, CallMedian}]}, the
%% last per block.
measure_interleaved(N, Blocks) ->
    Port = open_port({spawn, "cat"}, [binary, {line, 1024}]),
    Echo = spawn_link(fun Loop() -> receive {From, M} -> From ! M, Loop() end end),
    PerBlock = max(1, N div Blocks),
    Rounds = [begin
                  P = measure(PerBlock, fun() -> port_rtt(Port) end),
                  M = measure(PerBlock, fun() -> msg_rtt(Echo) end),
                  T0 = erlang:monotonic_time(),
                  C = measure(PerBlock, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end),
                  {P, M, C, us(erlang:monotonic_time() - T0)}
              end || _ <- lists:seq(1, Blocks)],
    port_close(Port),
    unlink(Echo),
    exit(Echo, kill),
    CallWall = lists:sum([W || {_, _, _, W} <- Rounds]),
    {lists:append([P || {P, _, _, _} <- Rounds]), lists:append([M || {_, M, _, _} <- Rounds]),
     {lists:append([C || {_, _, C, _} <- Rounds]), PerBlock * Blocks / (CallWall / 1.0e6)},
     [{median(P), median(C)} || {P, _, C, _} <- Rounds]}.

port_rtt(Port) ->
    Port ! {self(), {command, <<"ping\n">>}},
    receive {Port, {data, {eol, <<"ping">>}}} -> ok end.

msg_rtt(Echo) ->
    Echo ! {self(), ping},
    receive ping -> ok end.

%% Procs processes each make Total div Procs calls, all started together.
%% Returns {Samples, CallsPerSecond}.
measure_calls(Procs, Total) ->
    PerProc = max(1, Total div Procs),
    Parent = self(),
    Go = make_ref(),
    Pids = [spawn_link(fun() ->
                           receive Go -> ok end,
                           S = measure(PerProc, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end),
                           Parent ! {self(), S}
                       end)
            || _ <- lists:seq(1, Procs)],
    T0 = erlang:monotonic_time(),
    _ = [P ! Go || P <- Pids],
    Samples = lists:append([receive {P, S} -> S end || P <- Pids]),
    Wall = us(erlang:monotonic_time() - T0) / 1.0e6,
    {Samples, PerProc * Procs / Wall}.

%% Calls 1 ms apart: longer than the worker's spin, so each call finds the workers (and,
%% likely, the schedulers) asleep and pays their wake-up.
measure_paced(N) ->
    measure_paced(N, []).

measure_paced(0, Acc) ->
    Acc;
measure_paced(N, Acc) ->
    receive after 1 -> ok end,
    [S] = measure(1, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end),
    measure_paced(N - 1, [S | Acc]).

%% CPU time of the whole VM (all threads: schedulers, workers, their spinning) per call,
%% back to back and 1 ms apart, from the threads' schedstat. (The idle VM is measured by
%% bench/load.escript from outside it: read from inside, the reading costs more than idling.)
measure_cpu(N) ->
    {BackToBack, Wall} = cpu_during(fun() -> [{ok, 4.0} = py:call(math, sqrt, [16]) || _ <- lists:seq(1, N)] end),
    {Paced, PacedWall} = cpu_during(fun() -> measure_paced(1000) end),
    #{per_call => {BackToBack / N, BackToBack / Wall, Wall / N},
      per_paced_call => {Paced / 1000, Paced / PacedWall, PacedWall / 1000}}.

%% {µs of CPU the VM used while F ran, µs of wall time}.
cpu_during(F) ->
    C0 = vm_cpu_us(),
    T0 = erlang:monotonic_time(),
    _ = F(),
    Wall = us(erlang:monotonic_time() - T0),
    {vm_cpu_us() - C0, Wall}.

%% Busy CPU time of the whole machine (user, nice, system, irq, softirq, steal), in µs.
machine_busy_us() ->
    {ok, Stat} = file:read_file("/proc/stat"),
    [Cpu | _] = string:split(Stat, "\n"),
    [_ | Fields] = string:lexemes(Cpu, " "),
    [User, Nice, System, _Idle, _Wait, Irq, SoftIrq, Steal | _] =
        [binary_to_integer(F) || F <- Fields],
    (User + Nice + System + Irq + SoftIrq + Steal) * 1000000 / clock_ticks().

clock_ticks() ->
    case string:to_integer(os:cmd("getconf CLK_TCK")) of
        {Hz, _} when is_integer(Hz), Hz > 0 -> Hz;
        _ -> 100
    end.

vm_cpu_us() ->
    %% Field 1 of /proc/<pid>/task/<tid>/schedstat: ns on a CPU, per thread.
    Tasks = filelib:wildcard("/proc/" ++ os:getpid() ++ "/task/*/schedstat"),
    lists:sum([case file:read_file(T) of
                   {ok, Stat} -> binary_to_integer(hd(string:lexemes(Stat, " "))) / 1000;
                   {error, _} -> 0
               end || T <- Tasks]).

%% A 100 KB binary through py:call of the identity function: as str (a binary converts to
%% str, UTF-8 decoded and encoded again) and as bytes ({bytes, B}).
measure_echo(N) ->
    Bin = binary:copy(<<"0123456789abcdef">>, 100 * 1024 div 16),
    Bytes = {bytes, Bin},
    Str = measure(N, fun() -> {ok, Bin} = py:call('__main__', bench_echo, [Bin]) end),
    Raw = measure(N, fun() -> {ok, Bin} = py:call('__main__', bench_echo, [Bytes]) end),
    #{str => Str, bytes => Raw}.

%% A long C-level call (sum(range(10**8)) never leaves C, so it holds the GIL throughout)
%% runs on one worker; 100 ms into it another process makes the small call.
measure_during_c_call() ->
    during(fun() -> py:eval(<<"sum(range(10**8))">>) end, 100, 1).

%% The same with a long pure-Python loop, which gives the GIL up every switch interval
%% (sys.getswitchinterval(), 5 ms by default): small calls get through while it runs.
measure_during_python_loop() ->
    during(fun() -> py:call('__main__', bench_python_loop, [30000000]) end, 100, scale(50)).

%% Returns #{long_ms, issued_ms, samples}: how long the long call took, when (after its
%% start) the first small call was issued, and the small calls' latencies.
during(Long, DelayMs, SmallCalls) ->
    Parent = self(),
    T0 = erlang:monotonic_time(),
    Runner = spawn_link(fun() ->
                            {ok, _} = Long(),
                            Parent ! {self(), done, erlang:monotonic_time()}
                        end),
    timer:sleep(DelayMs),
    Issued = us(erlang:monotonic_time() - T0) / 1000,
    Samples = measure_until(SmallCalls, Runner),
    TEnd = receive {Runner, done, T} -> T end,
    #{long_ms => us(TEnd - T0) / 1000, issued_ms => Issued, samples => Samples}.

%% Small calls until Count are made or the long call is over (after the first).
measure_until(Count, Runner) ->
    measure_until(Count, Runner, []).

measure_until(0, _Runner, Acc) ->
    Acc;
measure_until(Count, Runner, Acc) ->
    [S] = measure(1, fun() -> {ok, 4.0} = py:call(math, sqrt, [16]) end),
    receive
        {Runner, done, _} = Done -> self() ! Done, [S | Acc]
    after 0 ->
        measure_until(Count - 1, Runner, [S | Acc])
    end.

%% Calls py:calls, each making PerCall erlang.calls of the identity fun: the first
%% erlang.call of each py:call apart from the later ones (µs, timed in Python).
measure_callbacks(Calls, PerCall) ->
    callback_times(bench_callback_times, Calls, PerCall).

measure_attr_callbacks(Calls, PerCall) ->
    callback_times(bench_attr_times, Calls, PerCall).

callback_times(Function, Calls, PerCall) ->
    Lists = [begin {ok, Ns} = py:call('__main__', Function, [PerCall]), Ns end
             || _ <- lists:seq(1, Calls)],
    #{first => [F / 1000 || [F | _] <- Lists],
      later => [T / 1000 || [_ | Rest] <- Lists, T <- Rest]}.

%% erlang.send of a small integer Count times to the calling process: the µs per send as
%% Python sees it, and per message until the last one is received in Erlang.
measure_send(Count) ->
    T0 = erlang:monotonic_time(),
    {ok, Ns} = py:call('__main__', bench_send, [self(), Count]),
    ok = drain(0, Count),
    Total = us(erlang:monotonic_time() - T0),
    #{python_us => Ns / 1000 / Count, delivered_us => Total / Count, count => Count}.

drain(Count, Count) -> ok;
drain(I, Count) -> receive I -> drain(I + 1, Count) end.

%% With and without the sandbox: bench/sandbox.escript (the sandbox's own benchmark) builds a
%% NIF without it (-DPY_SANDBOX_BENCH_BASELINE) and alternates two peer VMs, one per build.
%% Its Markdown table goes into the report as it is.
sandbox_cost() ->
    sub_bench("sandbox.escript").

%% The port helpers against raw open_port: bench/ports.escript, in a VM of its own.
ports_cost() ->
    sub_bench("ports.escript").

%% The pool's recovery from swallowed cancellations: bench/cancel.escript, in a VM of its own
%% (the threads it gives up never end).
cancel_recovery() ->
    sub_bench("cancel.escript").

%% A 100 MiB payload and the other processes of the caller's scheduler: bench/submit.escript.
submit_cost() ->
    sub_bench("submit.escript").

%% The caller's mailbox, spinning and big payloads: bench/load.escript, in a VM of its own.
load_cost() ->
    sub_bench("load.escript").

%% ErlangEventLoop against the standard library's loop: bench/asyncio.escript.
asyncio_cost() ->
    sub_bench("asyncio.escript").

%% Runs bench/Script with an output file, and returns the Markdown it wrote.
sub_bench(Script) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Path = filename:join([Root, "bench", Script]),
    case filelib:is_regular(Path) of
        false ->
            {error, iolist_to_binary(["bench/", Script, " is not there"])};
        true ->
            Out = filename:join("/tmp", "erlang_python_bench_" ++ filename:rootname(Script) ++ "_"
                                ++ os:getpid() ++ ".md"),
            Escript = os:find_executable("escript"),
            Port = open_port({spawn_executable, Escript},
                             [{args, [Path, Out]}, {cd, Root}, binary, exit_status,
                              stderr_to_stdout]),
            Result = case collect_status(Port, <<>>) of
                         {0, _} ->
                             file:read_file(Out);
                         {Status, Log} ->
                             {error, iolist_to_binary(io_lib:format("bench/~ts exited with ~p:~n~ts",
                                                                    [Script, Status, Log]))}
                     end,
            _ = file:delete(Out),
            Result
    end.

collect_status(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect_status(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, Acc}
    end.

%% The file loop in the VM (under the sandbox) and in a plain python3 of the same
%% installation (sys.executable of the embedded interpreter). Best of 3 each.
measure_file_loop(Count) ->
    Dir = filename:join("/tmp", "erlang_python_bench_" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Data = unicode:characters_to_binary(filename:join(Dir, "data.txt")),
    Script = filename:join(Dir, "file_loop.py"),
    ok = file:write_file(Data, binary:copy(<<"erlang_python\n">>, 20)),
    ok = file:write_file(Script, [?PY_FILE_LOOP,
                                  "\nimport sys\nprint(bench_file_loop(sys.argv[1], int(sys.argv[2])))\n"]),
    {ok, Python} = py:executable(),
    Sandboxed = sandboxed(),
    InVm = [begin {ok, S} = py:call('__main__', bench_file_loop, [Data, Count]), S end
            || _ <- lists:seq(1, 3)],
    Plain = [plain_file_loop(Python, Script, Data, Count) || _ <- lists:seq(1, 3)],
    _ = file:delete(Data),
    _ = file:delete(Script),
    _ = file:del_dir(Dir),
    #{count => Count, in_vm => lists:min(InVm), plain => lists:min(Plain),
      sandboxed => Sandboxed, python => Python}.

plain_file_loop(Python, Script, Data, Count) ->
    Port = open_port({spawn_executable, Python},
                     [{args, [Script, Data, integer_to_list(Count)]}, binary, exit_status,
                      stderr_to_stdout]),
    Out = collect(Port, <<>>),
    try binary_to_float(string:trim(Out))
    catch error:badarg -> fail("plain python3 file loop failed: ~ts", [Out])
    end.

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, 0}} -> Acc;
        {Port, {exit_status, S}} -> fail("~p exited with ~p: ~ts", [Port, S, Acc])
    end.

sandboxed() ->
    case py:eval(<<"__import__('_erlang_impl._sandbox', fromlist=['x']).is_sandboxed()">>) of
        {ok, B} when is_boolean(B) -> B;
        _ -> unknown
    end.

%% ---------------------------------------------------------------------------
%% Statistics and the report.

stats(Samples) ->
    Sorted = lists:sort(Samples),
    N = length(Sorted),
    #{n => N, median => pct(Sorted, N, 0.5), p99 => pct(Sorted, N, 0.99)}.

pct(Sorted, N, P) ->
    lists:nth(max(1, min(N, ceil(P * N))), Sorted).

median(Samples) ->
    maps:get(median, stats(Samples)).

report(Root, R, Seconds, Load0, Load1) ->
    Port = stats(maps:get(port, R)),
    PortMed = maps:get(median, Port),
    {C1, Cps1} = maps:get(call1, R),
    {C4, Cps4} = maps:get(call4, R),
    {C16, Cps16} = maps:get(call16, R),
    Call = stats(C1),
    CallMed = maps:get(median, Call),
    #{str := EchoStr, bytes := EchoBytes} = maps:get(echo, R),
    #{first := CbFirst, later := CbLater} = maps:get(callbacks, R),
    #{later := AttrLater} = maps:get(attr, R),
    Send = maps:get(send, R),
    File = maps:get(file_loop, R),
    CbLaterMed = median(CbLater),
    CbFirstMed = median(CbFirst),
    NestedMed = median(maps:get(nested, R)),
    VsPort = fun(M) -> fmt("~.2f", [M / PortMed]) end,
    Lat = fun(Label, Compares, Samples, Extra) ->
              #{median := M, p99 := P99, n := N} = stats(Samples),
              [Label, Compares, us_str(M), us_str(P99), integer_to_list(N), Extra, VsPort(M)]
          end,
    Head = ["Measurement", "What it is", "median µs", "p99 µs", "samples", "calls/s",
            "÷ port"],
    Latency = [
        Lat("**port round trip** (baseline)",
            "a line to `cat` through open_port({spawn, \"cat\"}, [binary, {line, 1024}]) and back",
            maps:get(port, R), ""),
        Lat("**message round trip** (baseline)", "Erlang process to process and back",
            maps:get(msg, R), ""),
        Lat("py:call(math, sqrt, [16]), 1 process", "sequential calls", C1, rate(Cps1)),
        Lat("py:call(math, sqrt, [16]), 4 processes", "latency seen by each caller; calls/s of all",
            C4, rate(Cps4)),
        Lat("py:call(math, sqrt, [16]), 16 processes", "latency seen by each caller; calls/s of all",
            C16, rate(Cps16)),
        Lat("py:call(math, sqrt, [16]), 1 call per ms", "workers do not spin at this rate: each call wakes one",
            maps:get(paced, R), ""),
        Lat("py:eval(<<\"1+2\">>)", "the same source each time (compiled code is cached)", maps:get(eval, R), ""),
        Lat("100 KB binary echoed as str", "py:call of `def bench_echo(x): return x`; UTF-8 decode + encode",
            EchoStr, ""),
        Lat("100 KB {bytes, B} echoed as bytes", "the same, as bytes (memcpy both ways)", EchoBytes, ""),
        during_row("small py:call during sum(range(10**8))",
                   "C-level call holding the GIL on another worker", maps:get(during, R)),
        during_row("small py:call during a pure-Python loop",
                   "the loop gives the GIL up every 5 ms (switch interval)", maps:get(during_py, R)),
        Lat("erlang.call, first in a py:call", "identity fun; timed in Python", CbFirst, ""),
        Lat("erlang.call, later in the same py:call", "identity fun; timed in Python", CbLater, ""),
        Lat("erlang.bench_identity(x), later calls", "the attribute form of the same", AttrLater, ""),
        Lat("Erlang→Python→Erlang→Python", "py:call of a function whose erlang.call runs py:call(math, sqrt)",
            maps:get(nested, R), "")
    ],
    SendRows = [
        ["erlang.send(pid, i)", "per message, Python side (" ++ integer_to_list(maps:get(count, Send)) ++ " sends)",
         us_str(maps:get(python_us, Send)), "", "", rate(1.0e6 / maps:get(python_us, Send)), ""],
        ["erlang.send(pid, i), delivered", "per message, from py:call until the last is received",
         us_str(maps:get(delivered_us, Send)), "", "", rate(1.0e6 / maps:get(delivered_us, Send)), ""]
    ],
    CpuRow = fun(Label, What, {Us, Cores, WallUs}) ->
                     [Label, fmt("~ts; ~.2f cores busy, ~ts µs of wall time each", [What, Cores, us_str(WallUs)]),
                      us_str(Us), "", "", "", ""]
             end,
    #{per_call := CpuCall, per_paced_call := CpuPaced} = maps:get(cpu, R),
    CpuRows = [
        CpuRow("VM CPU µs per py:call, back to back", "all VM threads (/proc/<pid>/task/*/schedstat)", CpuCall),
        CpuRow("VM CPU µs per py:call, 1 call per ms", "includes the schedulers' busy wait after each wake-up (bench/load.escript has its baseline)", CpuPaced)
    ],
    Ratio = CallMed / PortMed,
    %% The block whose py:call median was lowest: the least disturbed of the ten.
    {QuietPort, QuietCall} = hd(lists:keysort(2, maps:get(blocks, R))),
    Targets = [
        ["median py:call ÷ median port round trip", ratio_str(Ratio),
         "≤ 1/4 (aim 1/10)", verdict(Ratio =< 0.25, Ratio =< 0.1)],
        ["the same in the quietest of the 10 interleaved blocks",
         fmt("~ts: py:call ~ts µs, port ~ts µs", [ratio_str(QuietCall / QuietPort), us_str(QuietCall),
                                                  us_str(QuietPort)]),
         "≤ 1/4 (aim 1/10)", verdict(QuietCall / QuietPort =< 0.25, QuietCall / QuietPort =< 0.1)],
        ["median erlang.call (later) ÷ median py:call", fmt("~.2f", [CbLaterMed / CallMed]), "≤ 2",
         verdict(CbLaterMed / CallMed =< 2, false)],
        ["median erlang.call (first) ÷ median py:call", fmt("~.2f", [CbFirstMed / CallMed]), "≤ 2",
         verdict(CbFirstMed / CallMed =< 2, false)],
        ["nested round trip ÷ median py:call", fmt("~.2f", [NestedMed / CallMed]), "(no target)", ""]
    ],
    #{in_vm := InVm, plain := Plain, count := FileCount, sandboxed := Sbx} = File,
    FileRows = [
        ["file loop in the VM (sandbox " ++ sandbox_str(Sbx) ++ ")",
         fmt("~.1f", [InVm * 1000]), us_str(InVm * 1.0e6 / FileCount), fmt("~.3f", [InVm / Plain])],
        ["file loop in plain python3 (no sandbox)", fmt("~.1f", [Plain * 1000]),
         us_str(Plain * 1.0e6 / FileCount), "1"]
    ],
    [
     "# erlang_python benchmark results\n\n",
     "Written by `make bench` (bench/run.escript). Each row is measured in the same run; ratios\n"
     "are against the baselines of this run. Latency is a round trip seen by the caller.\n\n",
     machine(Root, Seconds, Load0, Load1, maps:get(foreign, R)),
     "\n## Latency and throughput\n\n",
     table(Head, Latency ++ SendRows ++ CpuRows),
     "\nRows \"during\": one process runs the long call; 100 ms into it another makes small\n"
     "calls until it ends. The median/p99 columns there are the small calls' latencies; the\n"
     "\"What it is\" column gives the long call's own duration.\n",
     "\n## Targets (issue 2 section 10, issue 3 section 9)\n\n",
     table(["Ratio", "Measured", "Target", ""], Targets),
     "\n## Sandbox cost (issue 4 section 7)\n\n",
     "Target: the sandbox adds less than 5% to py:call latency and to a Python loop that opens\n"
     "and reads a file 100,000 times.\n\n",
     "**With against without the sandbox.** The sandbox cannot be switched off inside one VM:\n"
     "bench/sandbox.escript (run from here) builds a second NIF without it\n"
     "(`-DPY_SANDBOX_BENCH_BASELINE`) and alternates two peer VMs, one per build; its file loop\n"
     "is timed in the CPU time of the thread that runs it.\n\n",
     case maps:get(sandbox_cost, R) of
         {ok, SandboxTable} -> SandboxTable;
         {error, Why} -> ["(not measured: ", Why, ")\n"]
     end,
     "\n**Embedded against plain python3.** The same file loop (a 280-byte file, ",
     integer_to_list(FileCount), " times,\nwall-clock time, best of 3) in this VM, where it runs "
     "on a worker thread under the sandbox,\nand in a plain `", maps:get(python, File),
     "` of the same installation started from this\nescript. This compares embedding as a "
     "whole (sandbox, worker thread, the VM's threads\nsharing the CPUs), not the sandbox "
     "alone.\n\n",
     table(["Loop", "total ms", "µs per open+read", "÷ plain python3"], FileRows),
     "\n## Port helpers (issue 7 section 6)\n\n",
     "Target: within 10% of the raw `open_port` equivalent. bench/ports.escript (run from here,\n"
     "in a VM of its own) interleaves 5 blocks of each pair; helper rows are timed in Python\n"
     "around each call (the `erlang.call` to Erlang included), raw rows in Erlang. The last\n"
     "column is the ratio of each block's medians. docs/ports.md says where the time goes.\n\n",
     case maps:get(ports_cost, R) of
         {ok, PortsTable} -> PortsTable;
         {error, Why2} -> ["(not measured: ", Why2, ")\n"]
     end,
     "\n## Recovery from swallowed cancellations (issue 8 section 5)\n\n",
     "bench/cancel.escript, in a VM of its own: calls whose code swallows every\n"
     "`CallCancelled` (and sleeps in C, where no interruption reaches it) hold their workers\n"
     "until each is given up (`give_up_after`) and replaced; small calls with a 50 ms timeout\n"
     "are tried until one is answered. Times are from the moment the ten calls were made.\n"
     "Without the give-up, no small call would ever be answered. A pure-Python loop that\n"
     "swallows the exception usually ends within milliseconds instead: one of the repeated\n"
     "interruptions lands outside its `try`. docs/runtime.md, \"Cancellation\".\n\n",
     case maps:get(cancel_recovery, R) of
         {ok, CancelTable} -> CancelTable;
         {error, Why3} -> ["(not measured: ", Why3, ")\n"]
     end,
     "\n## A 100 MiB payload and the caller's scheduler (issue 8 section 5)\n\n",
     "bench/submit.escript, in a VM of its own: a probe pinned to the caller's scheduler times\n"
     "1 ms timers while the caller makes a py:call with a 100 MiB list, whose copy into the\n"
     "request runs on a dirty scheduler; the baseline sends the same list to an Erlang process\n"
     "(a message copy, on the scheduler). What lateness remains is the caller's own work on\n"
     "its 100 MiB heap (garbage collection).\n\n",
     case maps:get(submit_cost, R) of
         {ok, SubmitTable} -> SubmitTable;
         {error, Why4} -> ["(not measured: ", Why4, ")\n"]
     end,
     "\n## Under load: the caller's mailbox, spinning, big payloads (issue 13)\n\n",
     "bench/load.escript, in a VM of its own (and, for calls one ms apart, in 5 fresh VMs per\n"
     "scheduler setting). Each figure is min / median / max of the medians of 5 runs, with its\n"
     "baseline from the same runs. docs/runtime.md, \"Waiting for the answer\" and\n"
     "\"Spinning\", explains the policy these figures come from.\n\n",
     case maps:get(load_cost, R) of
         {ok, LoadTable} -> LoadTable;
         {error, Why5} -> ["(not measured: ", Why5, ")\n"]
     end,
     "\n## ErlangEventLoop against the standard library's loop (issue 9)\n\n",
     "bench/asyncio.escript, in a VM of its own, runs bench/asyncio_bench.py: the same asyncio\n"
     "work on `asyncio.new_event_loop()` and `erlang.new_event_loop()`. Targets: no slower on\n"
     "echo throughput, timer lateness no worse. docs/asyncio.md says how the loop is driven.\n\n",
     case maps:get(asyncio_cost, R) of
         {ok, AsyncioTable} -> AsyncioTable;
         {error, Why6} -> ["(not measured: ", Why6, ")\n"]
     end,
     "\n## A disabled logging.debug (issue 10)\n\n",
     "Target: what it costs in plain Python. bench/logging.escript, in a VM of its own, runs\n"
     "bench/logging_cost.py embedded and in a plain python3. docs/output.md, \"logging\".\n\n",
     case maps:get(logging_cost, R) of
         {ok, LoggingTable} -> LoggingTable;
         {error, Why7} -> ["(not measured: ", Why7, ")\n"]
     end,
     "\n## Objects, streams, asynchronous calls (issue 11)\n\n",
     "Target: a method call on a handle within 1.2x of a py:call of a module function.\n"
     "bench/objects.escript, in a VM of its own. docs/objects.md and docs/streams.md.\n\n",
     case maps:get(objects_cost, R) of
         {ok, ObjectsTable} -> ObjectsTable;
         {error, Why8} -> ["(not measured: ", Why8, ")\n"]
     end,
     "\n## Pools: other OS processes, other nodes (issue 12)\n\n",
     "bench/pools.escript, in a VM of its own (distributed, with one peer node). docs/pools.md\n"
     "says what each mode is for.\n\n",
     case maps:get(pools_cost, R) of
         {ok, PoolsTable} -> PoolsTable;
         {error, Why9} -> ["(not measured: ", Why9, ")\n"]
     end
    ].

during_row(Label, Compares, #{long_ms := Long, issued_ms := Issued, samples := Samples}) ->
    #{median := M, p99 := P99, n := N} = stats(Samples),
    [Label, fmt("~ts; it took ~b ms, first small call at ~b ms", [Compares, round(Long), round(Issued)]),
     us_str(M), us_str(P99), integer_to_list(N), "", ""].

ratio_str(R) when R < 1 -> fmt("~.3f (1/~.1f)", [R, 1 / R]);
ratio_str(R) -> fmt("~.2f", [R]).

verdict(true, true) -> "met (and the aim)";
verdict(true, false) -> "met";
verdict(false, _) -> "**not met**".

sandbox_str(true) -> "on";
sandbox_str(false) -> "off";
sandbox_str(unknown) -> "state unknown".

us_str(Us) when Us >= 100 -> integer_to_list(round(Us));
us_str(Us) when Us >= 10 -> fmt("~.1f", [Us]);
us_str(Us) -> fmt("~.2f", [Us]).

rate(PerSecond) -> integer_to_list(round(PerSecond)).

fmt(Format, Args) -> lists:flatten(io_lib:format(Format, Args)).

table(Head, Rows) ->
    Line = fun(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"] end,
    [Line(Head), Line(["---" || _ <- Head]) | [Line(R) || R <- Rows]].

machine(Root, Seconds, Load0, Load1, Foreign) ->
    {ok, Version} = py:version(),
    {ok, Exe} = py:executable(),
    Workers = application:get_env(erlang_python, workers, 8),
    Spin = spin_ns(Root),
    Noisy = Foreign > 0.1,
    [
     "| | |\n|---|---|\n",
     "| date | ", trim(os:cmd("date -u")), " |\n",
     "| machine | ", trim(os:cmd("nproc")), " CPUs, ", cpu_model(), ", ", mem_total(), " |\n",
     "| kernel | ", trim(os:cmd("uname -sr")), " |\n",
     "| Erlang/OTP | ", erlang:system_info(otp_release), " (erts ", erlang:system_info(version),
     "), ", integer_to_list(erlang:system_info(schedulers_online)), " schedulers |\n",
     "| Python | ", hd(string:split(Version, " ")), " (", Exe, ") |\n",
     "| erlang_python | ", integer_to_list(Workers), " workers, worker spin ", Spin, ", commit ",
     trim(os:cmd("git -C '" ++ Root ++ "' rev-parse --short HEAD 2>/dev/null")), " |\n",
     "| other load | ", fmt("~.2f of ~b cores busy with other processes while the latency "
                             "figures were taken; load average ~.2f before, ~.2f after",
                             [Foreign, erlang:system_info(logical_processors), Load0, Load1]),
     case Noisy of
         true -> " (**noisy**: treat the figures with care)";
         false -> " (quiet)"
     end, " |\n",
     "| run time | ", fmt("~b s", [round(Seconds)]), " |\n"
    ].

spin_ns(Root) ->
    case file:read_file(filename:join([Root, "c_src", "py_worker.c"])) of
        {ok, Src} ->
            case re:run(Src, "#define WORKER_SPIN_NS ([0-9]+)", [{capture, all_but_first, list}]) of
                {match, [Ns]} -> fmt("~.1f µs", [list_to_integer(Ns) / 1000]);
                nomatch -> "unknown"
            end;
        _ ->
            "unknown"
    end.

cpu_model() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, Info} ->
            case re:run(Info, "^model name\\s*:\\s*(.*)$", [multiline, {capture, all_but_first, list}]) of
                {match, [Model]} -> Model;
                nomatch -> "unknown CPU"
            end;
        _ ->
            "unknown CPU"
    end.

mem_total() ->
    case file:read_file("/proc/meminfo") of
        {ok, Info} ->
            case re:run(Info, "^MemTotal:\\s*([0-9]+) kB", [multiline, {capture, all_but_first, list}]) of
                {match, [Kb]} -> fmt("~.1f GiB RAM", [list_to_integer(Kb) / 1048576]);
                nomatch -> "unknown RAM"
            end;
        _ ->
            "unknown RAM"
    end.

loadavg() ->
    {ok, Bin} = file:read_file("/proc/loadavg"),
    [One | _] = string:split(Bin, " "),
    binary_to_float(One).

trim(S) -> string:trim(S).
