#!/usr/bin/env escript
%%! -noshell
%% The port helpers against the raw open_port equivalent, measured in the same VM, in
%% interleaved blocks (a passing load weighs on both alike). bench/run.escript runs this and
%% puts its table into bench/RESULTS.md; alone: `escript bench/ports.escript [OUT.md]`.
%%
%% Helper rows are timed in Python (time.perf_counter_ns around each operation, inside one
%% py:call), so they include the erlang.call that reaches Erlang; raw rows are timed in
%% Erlang around the open_port and its messages. One Erlang-only row shows the port program's
%% own cost without Python.
-mode(compile).

-define(BLOCKS, 5).

-define(PY, <<"
import time
import erlang

def _times(op, n):
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t = clock()
        op()
        out.append(clock() - t)
    return out

def bench_run_shell(n):
    return _times(lambda: erlang.run_shell('true'), n)

def bench_run_true(n):
    return _times(lambda: erlang.run(['true']), n)

def bench_run_1mb(n):
    def op():
        assert len(erlang.run(['head', '-c', '1000000', '/dev/zero']).stdout) == 1000000
    return _times(op, n)

_worker = None

def bench_worker_lines(n):
    global _worker
    if _worker is None:
        _worker = erlang.start_worker(['cat'], detached=True)
    w = _worker
    def op():
        w.write(b'x\\n')
        w.readline()
    return _times(op, n)
">>).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    [code:add_patha(E) || E <- filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin"))],
    {ok, _} = application:ensure_all_started(erlang_python),
    ok = py:exec(?PY),
    Rows = [
        row("run_shell(\"true\")", "open_port({spawn, \"true\"})", scale(200),
            fun(N) -> py_times(bench_run_shell, N) end,
            fun() -> raw_run({spawn, "true"}, [stderr_to_stdout]) end),
        row("erlang.run([\"true\"])", "open_port({spawn_executable, \"/bin/true\"})", scale(200),
            fun(N) -> py_times(bench_run_true, N) end,
            fun() -> raw_run({spawn_executable, "/bin/true"}, []) end),
        row("py_exec:run of /bin/true, from Erlang", "open_port({spawn_executable, \"/bin/true\"})",
            scale(200),
            fun(N) -> erlang_times(N) end,
            fun() -> raw_run({spawn_executable, "/bin/true"}, []) end),
        row("erlang.run(head -c 1000000 /dev/zero)", "the same through open_port", scale(50),
            fun(N) -> py_times(bench_run_1mb, N) end,
            fun() -> raw_run({spawn_executable, "/usr/bin/head"},
                             [{args, ["-c", "1000000", "/dev/zero"]}]) end),
        line_row(scale(2000))
    ],
    Table = table(["Helper", "median µs", "Raw equivalent", "median µs", "helper ÷ raw",
                   "ratio per block (min / median / max)"], Rows),
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Table)),
    halt(0).


scale(N) ->
    case os:getenv("BENCH_SCALE") of
        false -> N;
        S -> max(1, round(N * list_to_float(case lists:member($., S) of true -> S; false -> S ++ ".0" end)))
    end.

%% Interleaved blocks of N helper operations and N raw ones; one warm-up block each first.
row(Label, RawLabel, N, Helper, Raw) ->
    _ = Helper(max(1, N div 10)),
    _ = [Raw() || _ <- lists:seq(1, max(1, N div 10))],
    Blocks = [{Helper(N), [Raw() || _ <- lists:seq(1, N)]} || _ <- lists:seq(1, ?BLOCKS)],
    summarise(Label, RawLabel, Blocks).

line_row(N) ->
    Port = open_port({spawn, "cat"}, [binary, {line, 1024}]),
    Raw = fun() ->
        T = erlang:monotonic_time(),
        true = port_command(Port, <<"x\n">>),
        receive {Port, {data, {eol, <<"x">>}}} -> ok end,
        us(erlang:monotonic_time() - T)
    end,
    Row = row("worker line round trip (write + readline)", "a line through a cat port", N,
              fun(K) -> py_times(bench_worker_lines, K) end, Raw),
    port_close(Port),
    Row.

summarise(Label, RawLabel, Blocks) ->
    Helper = median(lists:append([H || {H, _} <- Blocks])),
    Raw = median(lists:append([R || {_, R} <- Blocks])),
    Ratios = lists:sort([median(H) / median(R) || {H, R} <- Blocks]),
    [Label, us_str(Helper), RawLabel, us_str(Raw), fmt("~.2f", [Helper / Raw]),
     fmt("~.2f / ~.2f / ~.2f", [hd(Ratios), median(Ratios), lists:last(Ratios)])].

py_times(Function, N) ->
    {ok, Ns} = py:call('__main__', Function, [N], #{}, 600000),
    [X / 1000 || X <- Ns].

erlang_times(N) ->
    {ok, Spec} = py_exec:command_spec([<<"/bin/true">>], #{stdin => null}),
    [begin
         T = erlang:monotonic_time(),
         {ok, #{returncode := 0}} = py_exec:run(Spec, #{}),
         us(erlang:monotonic_time() - T)
     end || _ <- lists:seq(1, N)].

raw_run(What, Options) ->
    T = erlang:monotonic_time(),
    Port = open_port(What, [exit_status, binary | Options]),
    0 = wait_exit(Port),
    us(erlang:monotonic_time() - T).

wait_exit(Port) ->
    receive
        {Port, {data, _}} -> wait_exit(Port);
        {Port, {exit_status, S}} -> S
    end.

us(Native) -> erlang:convert_time_unit(Native, native, nanosecond) / 1000.

median(L) ->
    S = lists:sort(L),
    lists:nth(max(1, (length(S) + 1) div 2), S).

us_str(Us) when Us >= 100 -> integer_to_list(round(Us));
us_str(Us) -> fmt("~.1f", [Us]).

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

table(Head, Rows) ->
    Line = fun(Cells) -> ["| ", lists:join(" | ", Cells), " |\n"] end,
    [Line(Head), Line(["---" || _ <- Head]), [Line(R) || R <- Rows]].
