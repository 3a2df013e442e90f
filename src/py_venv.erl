%% @private The application env `venv' (README, "A venv made for you"): a Python virtual
%% environment created when missing, its requirements installed once, and the interpreter
%% run from it.
%%
%% Everything runs through Erlang ports, before the interpreter starts (Python cannot
%% spawn processes: the sandbox refuses it). The venv is made by the Python the interpreter
%% would otherwise run as (the `python' env, ERLANG_PYTHON, or the NIF's build Python), so
%% it has the embedded interpreter's version. Its requirements are installed with its own
%% pip once: a stamp file in the venv keeps the MD5 of the requirements (the list, or the
%% file's content) and of its Python's version, and pip runs again only when that changes.
-module(py_venv).

-export([ensure/2]).

-define(STAMP, ".erlang_python_requirements").
%% Creating a venv and installing packages can take minutes on a slow network.
-define(STEP_TIMEOUT, 600000).

-type options() :: #{path := file:filename_all(),
                     requirements => [unicode:chardata()] | file:filename_all()}.
-export_type([options/0]).

%% @doc The venv's Python, once the venv exists with its requirements installed.
-spec ensure(term(), binary()) -> {ok, binary()} | {error, term()}.
ensure(#{path := Path} = Options, BasePython) when is_list(Path); is_binary(Path) ->
    Dir = filename:absname(unicode:characters_to_list(Path)),
    Python = filename:join([Dir, "bin", "python"]),
    case requirements(maps:get(requirements, Options, [])) of
        {ok, Requirements} ->
            case create(Dir, Python, BasePython) of
                ok -> install(Dir, Python, Requirements);
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end;
ensure(Other, _BasePython) ->
    {error, {bad_env, venv, Other}}.

%% {pip arguments, what the stamp hashes}.
-spec requirements(term()) -> {ok, {[string()], binary()}} | {error, term()}.
requirements([]) ->
    {ok, {[], <<>>}};
requirements(Specs) when is_list(Specs) ->
    case lists:all(fun is_spec/1, Specs) of
        true ->
            Strings = [unicode:characters_to_list(S) || S <- Specs],
            {ok, {Strings, term_to_binary(Strings)}};
        false ->
            %% A string is a list too: a file name.
            case io_lib:printable_unicode_list(Specs) of
                true -> requirements_file(Specs);
                false -> {error, {bad_env, venv, {requirements, Specs}}}
            end
    end;
requirements(File) when is_binary(File) ->
    requirements_file(File);
requirements(Other) ->
    {error, {bad_env, venv, {requirements, Other}}}.

is_spec(S) when is_binary(S) -> S =/= <<>>;
is_spec(S) when is_list(S) -> S =/= [] andalso io_lib:printable_unicode_list(S);
is_spec(_) -> false.

requirements_file(File) ->
    Name = filename:absname(unicode:characters_to_list(File)),
    case file:read_file(Name) of
        {ok, Content} -> {ok, {["-r", Name], Content}};
        {error, Reason} -> {error, {venv_requirements_unreadable, Name, Reason}}
    end.

-spec create(string(), string(), binary()) -> ok | {error, term()}.
create(Dir, Python, BasePython) ->
    case filelib:is_regular(Python) of
        true ->
            ok;
        false ->
            case run(binary_to_list(BasePython), ["-m", "venv", Dir]) of
                {0, _} -> ok;
                {Status, Output} -> {error, {venv_create_failed, Dir, Status, Output}}
            end
    end.

-spec install(string(), string(), {[string()], binary()}) -> {ok, binary()} | {error, term()}.
install(_Dir, Python, {[], _}) ->
    {ok, unicode:characters_to_binary(Python)};
install(Dir, Python, {Args, Hashed}) ->
    Stamp = filename:join(Dir, ?STAMP),
    {_, Version} = run(Python, ["-c", "import sys; print(sys.version)"]),
    Wanted = binary:encode_hex(erlang:md5([Hashed, Version])),
    case file:read_file(Stamp) of
        {ok, Wanted} ->
            {ok, unicode:characters_to_binary(Python)};
        _ ->
            Install = ["-m", "pip", "install", "--disable-pip-version-check", "-q" | Args],
            case run(Python, Install) of
                {0, _} ->
                    ok = file:write_file(Stamp, Wanted),
                    {ok, unicode:characters_to_binary(Python)};
                {Status, Output} ->
                    {error, {venv_install_failed, Dir, Status, Output}}
            end
    end.

%% Runs Exe with Args through a port: {exit status, output (stdout and stderr)}.
-spec run(string(), [string()]) -> {integer() | timeout, binary()}.
run(Exe, Args) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, exit_status, stderr_to_stdout, binary, hide]),
    collect(Port, [], erlang:monotonic_time(millisecond) + ?STEP_TIMEOUT).

collect(Port, Acc, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, Data}} -> collect(Port, [Data | Acc], Deadline);
        {Port, {exit_status, Status}} -> {Status, iolist_to_binary(lists:reverse(Acc))}
    after Left ->
        catch port_close(Port),
        {timeout, iolist_to_binary(lists:reverse(Acc))}
    end.
