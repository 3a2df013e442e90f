#!/usr/bin/env escript
%% What the sandbox costs (issue: "less than 5% to py:call latency, and to a Python loop that
%% opens and reads a file 100,000 times").
%%
%%   escript bench/sandbox.escript [OUT.md]
%%
%% Run from the checkout after `rebar3 compile` (make bench does both), with ERLANG_PYTHON
%% naming the interpreter. It builds a baseline NIF without the sandbox in a copy of the tree
%% (_build/bench-baseline, c_src compiled with -DPY_SANDBOX_BENCH_BASELINE) and starts two
%% peer VMs, one per build. It then measures, in ROUNDS rounds that alternate the two VMs (so
%% that a load that comes and goes on the machine weighs on both alike):
%% - py:call(math, sqrt, [16.0]) round trips from one Erlang process, CALLS per round;
%% - a Python loop, run by py:call, that opens and reads a 4 KiB file, LOOPS times per round
%%   (100,000 in all), timed in CPU time of the thread that runs it (time.thread_time), which
%%   other load on the machine disturbs less than wall-clock time.
%% Prints a Markdown table (and writes it to OUT.md when given): latency median and p99 over
%% every call; the file loop as its fastest round scaled to 100,000 iterations (other load
%% only ever adds CPU time, through caches and shared cores, so the minimum is the estimate
%% that load disturbs least).
-mode(compile).

-define(ROUNDS, 20).
-define(CALLS, 1000).
-define(WARMUP, 2000).
-define(LOOPS, 5000).

main(Args) ->
    Root = filename:absname(filename:dirname(filename:dirname(escript:script_name()))),
    ok = file:set_cwd(Root),
    Baseline = build_baseline(Root),
    Sandboxed = filename:join(Root, "_build/default/lib/erlang_python/ebin"),
    DataFile = list_to_binary(filename:join(Root, "_build/bench-sandbox-data.bin")),
    ok = file:write_file(DataFile, crypto_free_bytes(4096)),
    Peers = [start(Sandboxed, true, DataFile), start(Baseline, false, DataFile)],
    try
        Rounds = [round(Peers, N) || N <- lists:seq(1, ?ROUNDS)],
        Table = table(Rounds),
        io:put_chars(Table),
        case Args of
            [Out | _] -> ok = file:write_file(Out, Table);
            [] -> ok
        end
    after
        [catch peer:stop(Peer) || Peer <- Peers]
    end.

%% One round: each VM in turn, the order swapped every other round; {Sandboxed, Baseline}.
round([Sandboxed, Baseline], N) ->
    Order = case N rem 2 of
                0 -> [Sandboxed, Baseline];
                1 -> [Baseline, Sandboxed]
            end,
    Results = maps:from_list([{Peer, measure(Peer)} || Peer <- Order]),
    {maps:get(Sandboxed, Results), maps:get(Baseline, Results)}.

measure(Peer) ->
    Latencies = peer:call(Peer, bench_sandbox_peer, call_latencies, [?CALLS], 600000),
    Seconds = peer:call(Peer, bench_sandbox_peer, file_loop, [?LOOPS], 600000),
    {Latencies, Seconds}.

crypto_free_bytes(N) ->
    list_to_binary([I rem 256 || I <- lists:seq(1, N)]).

%% A copy of the tree whose NIF is compiled with PY_SANDBOX_BENCH_BASELINE; returns its ebin.
build_baseline(Root) ->
    Tree = filename:join(Root, "_build/bench-baseline"),
    ok = filelib:ensure_dir(filename:join(Tree, "x")),
    [sh(["rm -rf '", Tree, "/", Item, "' && cp -a '", Item, "' '", Tree, "/'"])
     || Item <- ["rebar.config", "src", "c_src", "priv"], filelib:is_file(Item)],
    sh(["rm -f '", Tree, "'/priv/*.so"]),
    sh(["cd '", Tree, "' && CFLAGS=-DPY_SANDBOX_BENCH_BASELINE ",
        os:getenv("REBAR3", "rebar3"), " compile"]),
    filename:join(Tree, "_build/default/lib/erlang_python/ebin").

sh(Command) ->
    Flat = lists:flatten(Command),
    Marker = "__exit_status=",
    Output = os:cmd(Flat ++ " 2>&1; echo " ++ Marker ++ "$?"),
    case string:split(Output, Marker, trailing) of
        [_, "0\n"] -> ok;
        _ -> erlang:error({command_failed, Flat, Output})
    end.

%% A peer VM running the erlang_python of Ebin, warmed up.
start(Ebin, ExpectSandboxed, DataFile) ->
    {ok, Peer, _} = peer:start(#{connection => standard_io, args => ["-pa", Ebin]}),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python]),
    {ok, ExpectSandboxed} =
        peer:call(Peer, py, eval, [<<"__import__('_erlang_sandbox').is_sandboxed()">>]),
    {module, bench_sandbox_peer} = load_helper(Peer),
    ok = peer:call(Peer, bench_sandbox_peer, setup, [DataFile, ?WARMUP], 600000),
    Peer.

percentile(Sorted, P) ->
    lists:nth(max(1, round(P * length(Sorted))), Sorted).

%% The measuring code runs compiled inside the peer, next to py.
load_helper(Peer) ->
    Source =
        "-module(bench_sandbox_peer).\n"
        "-export([setup/2, call_latencies/1, file_loop/1]).\n"
        "setup(Path, Warmup) ->\n"
        "    Code = iolist_to_binary([\n"
        "        <<\"import time\\n\">>,\n"
        "        <<\"def _bench_file_loop(path, n):\\n\">>,\n"
        "        <<\"    t0 = time.thread_time()\\n\">>,\n"
        "        <<\"    for _ in range(n):\\n\">>,\n"
        "        <<\"        with open(path, 'rb') as f:\\n\">>,\n"
        "        <<\"            f.read()\\n\">>,\n"
        "        <<\"    return time.thread_time() - t0\\n\">>]),\n"
        "    ok = py:exec(Code),\n"
        "    persistent_term:put(bench_sandbox_path, Path),\n"
        "    {ok, _} = py:call('__main__', '_bench_file_loop', [Path, 1000]),\n"
        "    [{ok, 4.0} = py:call(math, sqrt, [16.0]) || _ <- lists:seq(1, Warmup)],\n"
        "    ok.\n"
        "call_latencies(N) ->\n"
        "    [begin\n"
        "         T0 = erlang:monotonic_time(nanosecond),\n"
        "         {ok, 4.0} = py:call(math, sqrt, [16.0]),\n"
        "         erlang:monotonic_time(nanosecond) - T0\n"
        "     end || _ <- lists:seq(1, N)].\n"
        "file_loop(N) ->\n"
        "    Path = persistent_term:get(bench_sandbox_path),\n"
        "    {ok, Seconds} = py:call('__main__', '_bench_file_loop', [Path, N], #{}, 600000),\n"
        "    Seconds.\n",
    {ok, Tokens, _} = erl_scan:string(Source),
    Forms = split_forms(Tokens, [], []),
    {ok, Module, Binary} = compile:forms([Form || {ok, Form} <- Forms], [binary]),
    peer:call(Peer, code, load_binary, [Module, "bench_sandbox_peer.erl", Binary]).

split_forms([], [], Acc) ->
    lists:reverse(Acc);
split_forms([{dot, _} = Dot | Rest], Current, Acc) ->
    split_forms(Rest, [], [erl_parse:parse_form(lists:reverse([Dot | Current])) | Acc]);
split_forms([Token | Rest], Current, Acc) ->
    split_forms(Rest, [Token | Current], Acc).

table(Rounds) ->
    Side = fun(I) ->
                   Latencies = lists:sort(lists:append([element(1, element(I, R)) || R <- Rounds])),
                   Files = lists:sort([element(2, element(I, R)) || R <- Rounds]),
                   #{median_us => percentile(Latencies, 0.5) / 1000,
                     p99_us => percentile(Latencies, 0.99) / 1000,
                     file_s => hd(Files) * 100000 / ?LOOPS}
           end,
    S = Side(1),
    B = Side(2),
    Row = fun(Label, Key, Unit, Format) ->
                  Overhead = 100 * (maps:get(Key, S) - maps:get(Key, B)) / maps:get(Key, B),
                  Sign = if Overhead >= 0 -> "+"; true -> "" end,
                  io_lib:format("| ~s | " ++ Format ++ " ~s | " ++ Format ++ " ~s | ~s~.1f% |~n",
                                [Label, maps:get(Key, B), Unit, maps:get(Key, S), Unit, Sign,
                                 Overhead])
          end,
    {{Y, Mo, D}, {H, Mi, _}} = calendar:universal_time(),
    [io_lib:format("### Sandbox cost (~4..0b-~2..0b-~2..0b ~2..0b:~2..0b UTC, ~s, "
                   "~b alternating rounds, load average ~s)~n~n",
                   [Y, Mo, D, H, Mi, machine(), length(Rounds), load()]),
     "| measure | without sandbox | with sandbox | overhead |\n",
     "|---|---|---|---|\n",
     Row(io_lib:format("py:call(math, sqrt, [16.0]) median (~b calls)", [?CALLS * length(Rounds)]),
         median_us, "us", "~.1f"),
     Row("py:call(math, sqrt, [16.0]) p99", p99_us, "us", "~.1f"),
     Row("open + read a 4 KiB file 100,000 times, in Python (CPU time, best round)", file_s,
         "s", "~.3f"),
     "\n"].

load() ->
    case file:read_file("/proc/loadavg") of
        {ok, Text} -> hd(string:lexemes(binary_to_list(Text), " "));
        _ -> "?"
    end.

machine() ->
    Cpu = case file:read_file("/proc/cpuinfo") of
              {ok, Info} ->
                  case re:run(Info, "model name\\s*:\\s*([^\\n]+)", [{capture, [1], list}]) of
                      {match, [Model]} -> Model;
                      nomatch -> "unknown CPU"
                  end;
              _ ->
                  "unknown CPU"
          end,
    io_lib:format("~s, ~b cores", [Cpu, erlang:system_info(logical_processors)]).
