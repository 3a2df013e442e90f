#!/usr/bin/env escript
%%! -noshell
%% Pools (issue 12), in a VM of its own; bench/run.escript puts its tables into
%% bench/RESULTS.md. All figures of one run:
%%
%% - a small call's latency per pool mode (the VM's, `mode => process', a pool of one other
%%   node) against a line through a `cat' port, in interleaved blocks;
%% - small calls on one pool while sum(range(10**8)) runs on another (and, for comparison,
%%   on the VM's pool while the same runs there);
%% - two CPU-bound calls at once on a process pool of two, against one alone;
%% - what a worker costs to start and keep (RSS), against the other design docs/pools.md
%%   weighs: a peer VM running this application, called with peer:call.
%%
%% Usage: escript bench/pools.escript [Out.md]
-mode(compile).

-define(CALLS, 10000).
-define(BLOCKS, 5).

main(Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    Paths = filelib:wildcard(filename:join(Root, "_build/default/lib/*/ebin")),
    [code:add_patha(E) || E <- Paths],
    {ok, _} = application:ensure_all_started(erlang_python),
    EpmdWasRunning = string:find(os:cmd("epmd -names"), "up and running") =/= nomatch,
    EpmdWasRunning orelse os:cmd("epmd -daemon"),
    timer:sleep(200),
    {ok, _} = net_kernel:start([list_to_atom("bench_pools_" ++ os:getpid()), shortnames]),
    Setup = <<"def bench_work(n):\n    return sum(i * i for i in range(n))\n">>,
    {ok, _} = py:start_pool(bench_proc, #{size => 2, init => Setup}),
    {ok, _} = py:start_pool(bench_long, #{size => 1, init => Setup}),
    {ok, NodePeer, PeerNode} = peer:start(#{name => "bench_pools_node_" ++ os:getpid(),
                                            connection => standard_io,
                                            args => ["-pa" | Paths]}),
    true = net_kernel:connect_node(PeerNode),
    {ok, _} = peer:call(NodePeer, application, ensure_all_started, [erlang_python]),
    {ok, _} = py:start_pool(bench_nodes, #{nodes => [PeerNode]}),
    ok = py:exec(Setup),
    Calls = scale(?CALLS),
    Latency = latency(Calls),
    During = during(),
    Parallel = parallel(),
    Costs = costs(Paths),
    peer:stop(NodePeer),
    ok = py:stop_pool(bench_nodes),
    ok = py:stop_pool(bench_proc),
    ok = py:stop_pool(bench_long),
    EpmdWasRunning orelse os:cmd("epmd -kill"),
    Report = [Latency, "\n", During, "\n", Parallel, "\n", Costs],
    Out = case Args of [Path] -> Path; [] -> "/dev/stdout" end,
    ok = file:write_file(Out, unicode:characters_to_binary(Report)),
    halt(0).

scale(N) ->
    case os:getenv("BENCH_SCALE") of
        false -> N;
        S -> max(100, round(N * list_to_float(case lists:member($., S) of
                                                    true -> S;
                                                    false -> S ++ ".0"
                                                end)))
    end.

%% ---------------------------------------------------------------------------

latency(Calls) ->
    Port = open_port({spawn, "cat"}, [binary, {line, 1024}]),
    Sqrt = fun(Pool) -> fun() -> {ok, 4.0} = py:call(math, sqrt, [16], #{}, #{pool => Pool}) end end,
    Rows = [{"a line through a `cat` port (baseline)", fun() -> port_rtt(Port) end},
            {"`default`: the VM's pool", Sqrt(default)},
            {"`mode => process`", Sqrt(bench_proc)},
            {"`nodes => [Node]`: one other node (erpc)", Sqrt(bench_nodes)}],
    [_ = measure(2000, F) || {_, F} <- Rows],
    PerBlock = max(1, Calls div ?BLOCKS),
    Blocks = [[median(measure(PerBlock, F)) || {_, F} <- Rows] || _ <- lists:seq(1, ?BLOCKS)],
    port_close(Port),
    Ports = [hd(B) || B <- Blocks],
    Table = [begin
                 Medians = [lists:nth(I, B) || B <- Blocks],
                 Ratios = [M / P || {M, P} <- lists:zip(Medians, Ports)],
                 ["| ", Label, " | ", spread(Medians), " | ", spread(Ratios), " |\n"]
             end || {I, {Label, _}} <- lists:zip(lists:seq(1, length(Rows)), Rows)],
    ["Small call (`py:call(math, sqrt, [16], #{}, #{pool => P})`): median µs of each of ",
     integer_to_list(?BLOCKS), " interleaved blocks of ", integer_to_list(PerBlock),
     " (min / median / max over the blocks); the ratio is of each block's medians. Target for "
     "`process`: at most 2x the port.\n\n",
     "| Pool | median µs | ÷ port |\n| --- | --- | --- |\n", Table].

port_rtt(Port) ->
    Port ! {self(), {command, <<"ping\n">>}},
    receive {Port, {data, {eol, <<"ping">>}}} -> ok end.

%% Small calls on one pool (and on the VM's) while a long C call runs elsewhere, against the
%% same calls with nothing else running (the baseline rows, measured first).
during() ->
    Long = <<"sum(range(10 ** 8))">>,
    Quiet = #{bench_proc => quiet(bench_proc), default => quiet(default)},
    Rows = [{"`process` pool B, long call on process pool A", bench_long, bench_proc},
            {"the VM's pool, long call on process pool A", bench_long, default},
            {"the VM's pool, long call on the VM's pool (one GIL)", default, default}],
    Base = [["| ", Label, " | - | ", us(median(Small)), " | ", us(lists:max(Small)), " | ",
             integer_to_list(length(Small)), " | 1 |\n"]
            || {Label, Small} <- [{"`process` pool B, nothing else running (baseline)",
                                   maps:get(bench_proc, Quiet)},
                                  {"the VM's pool, nothing else running (baseline)",
                                   maps:get(default, Quiet)}]],
    Table = [begin
                 {LongMs, Small} = during(Long, LongPool, SmallPool),
                 Ratio = median(Small) / median(maps:get(SmallPool, Quiet)),
                 ["| ", Label, " | ", integer_to_list(round(LongMs)), " | ", us(median(Small)), " | ",
                  us(lists:max(Small)), " | ", integer_to_list(length(Small)), " | ",
                  io_lib:format("~.2f", [Ratio]), " |\n"]
             end || {Label, LongPool, SmallPool} <- Rows],
    ["Small calls made every 2 ms while `sum(range(10**8))` runs (target: unaffected), against "
     "the same calls for 1.2 s with nothing else running.\n\n",
     "| Small calls on | long call ms | median µs | max µs | calls | ÷ baseline |\n"
     "| --- | --- | --- | --- | --- | --- |\n", Base, Table].

quiet(Pool) ->
    Self = self(),
    _ = spawn_link(fun() -> timer:sleep(1200), Self ! {long_done, erlang:monotonic_time()} end),
    Small = small_until_done(Pool, []),
    receive {long_done, _} -> Small end.

during(Long, LongPool, SmallPool) ->
    Self = self(),
    T0 = erlang:monotonic_time(),
    Runner = spawn_link(fun() ->
        {ok, _} = py:eval(Long, #{}, #{pool => LongPool, timeout => 60000}),
        Self ! {long_done, erlang:monotonic_time()}
    end),
    timer:sleep(100),
    Small = small_until_done(SmallPool, []),
    receive {long_done, T1} ->
        unlink(Runner),
        {erlang:convert_time_unit(T1 - T0, native, microsecond) / 1000, Small}
    end.

small_until_done(Pool, Acc) ->
    receive
        {long_done, _} = Done -> self() ! Done, Acc
    after 2 ->
        [S] = measure(1, fun() -> {ok, 4.0} = py:call(math, sqrt, [16], #{}, #{pool => Pool}) end),
        small_until_done(Pool, [S | Acc])
    end.

%% Two CPU-bound calls at once on a pool of two, against one alone.
parallel() ->
    N = 3000000,
    Work = fun(Pool) ->
               {ok, R} = py:async_call('__main__', bench_work, [N], #{},
                                       #{pool => Pool, timeout => 60000}),
               R
           end,
    Time = fun(Pool, Count) ->
               element(1, timer:tc(fun() ->
                   Refs = [Work(Pool) || _ <- lists:seq(1, Count)],
                   [{ok, _} = py:await(R) || R <- Refs]
               end)) / 1000
           end,
    Alone = [Time(bench_proc, 1) || _ <- lists:seq(1, 3)],
    Two = [Time(bench_proc, 2) || _ <- lists:seq(1, 3)],
    InVm = [Time(default, 2) || _ <- lists:seq(1, 3)],
    ["Two CPU-bound calls (`sum(i * i for i in range(3 * 10 ** 6))`) at once against one alone, "
     "ms, min / median / max of 3 (target for the pool of two: at most 1.5x one, on this "
     "two-core machine).\n\n",
     "| Run | ms | ÷ one alone |\n| --- | --- | --- |\n",
     "| one call alone, `process` pool (baseline) | ", spread(Alone), " | 1 |\n",
     "| two at once, `process` pool of two | ", spread(Two), " | ",
     fmt("~.2f", [median(Two) / median(Alone)]), " |\n",
     "| two at once, the VM's pool (one GIL) | ", spread(InVm), " | ",
     fmt("~.2f", [median(InVm) / median(Alone)]), " |\n"].

%% Start time and memory of a worker, against a peer VM running the application.
costs(Paths) ->
    Starts = [begin
                  Name = list_to_atom("bench_start_" ++ integer_to_list(I)),
                  {Us, {ok, _}} = timer:tc(py, start_pool, [Name, #{size => 1}]),
                  {ok, OsPid} = py:eval(<<"__import__('os').getpid()">>, #{}, #{pool => Name}),
                  Rss = rss_kb(OsPid),
                  ok = py:stop_pool(Name),
                  {Us / 1000, Rss}
              end || I <- lists:seq(1, 3)],
    Peers = [begin
                 T0 = erlang:monotonic_time(),
                 {ok, Peer, _} = peer:start(#{connection => standard_io, args => ["-pa" | Paths]}),
                 {ok, _} = peer:call(Peer, application, ensure_all_started, [erlang_python]),
                 {ok, 4.0} = peer:call(Peer, py, call, [math, sqrt, [16]]),
                 Ms = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond)
                      / 1000,
                 OsPid = list_to_integer(peer:call(Peer, os, getpid, [])),
                 Rss = rss_kb(OsPid),
                 Call = fun() -> {ok, 4.0} = peer:call(Peer, py, call, [math, sqrt, [16]]) end,
                 _ = measure(500, Call),
                 Latency = median(measure(2000, Call)),
                 peer:stop(Peer),
                 {Ms, Rss, Latency}
             end || _ <- lists:seq(1, 3)],
    ["What a worker costs, min / median / max of 3: `mode => process` (a Python of its own, "
     "started and answering its first call), against a peer VM running this application "
     "(`peer`, `connection => standard_io`), the other design docs/pools.md weighs.\n\n",
     "| Worker | start ms | RSS MB | small call µs |\n| --- | --- | --- | --- |\n",
     "| `mode => process` | ", spread([S || {S, _} <- Starts]), " | ",
     spread([R / 1024 || {_, R} <- Starts]), " | (above) |\n",
     "| peer VM + application, `peer:call(Peer, py, call, ...)` | ",
     spread([S || {S, _, _} <- Peers]), " | ", spread([R / 1024 || {_, R, _} <- Peers]), " | ",
     spread([L || {_, _, L} <- Peers]), " |\n"].

rss_kb(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kb).

%% ---------------------------------------------------------------------------

measure(N, F) ->
    [begin
         T0 = erlang:monotonic_time(),
         F(),
         erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1000
     end || _ <- lists:seq(1, N)].

median(Samples) ->
    lists:nth(max(1, length(Samples) div 2 + length(Samples) rem 2), lists:sort(Samples)).

spread(Values) ->
    Sorted = lists:sort(Values),
    fmt("~.2f / ~.2f / ~.2f", [hd(Sorted), median(Sorted), lists:last(Sorted)]).

us(V) -> fmt("~.1f", [V]).

fmt(Format, Args) ->
    lists:flatten(io_lib:format(Format, Args)).
