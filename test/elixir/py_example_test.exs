# The examples of docs/elixir.md, as ExUnit tests: erlang_python used from Elixir.
# Run by `make test` (scripts/test.sh, step `elixir`):
#   ERLANG_PYTHON=.venv/bin/python elixir -pa _build/default/lib/erlang_python/ebin test/elixir/py_example_test.exs
ExUnit.start(seed: 0)

defmodule PyExampleTest do
  use ExUnit.Case

  setup_all do
    {:ok, _} = Application.ensure_all_started(:erlang_python)
    :ok
  end

  test "calling Python from Elixir" do
    assert {:ok, 4.0} = :py.call(:math, :sqrt, [16])
    assert {:ok, 3} = :py.eval("1 + 2")
    assert {:ok, "HELLO"} = :py.call(:builtins, :str, ["hello"]) |> upcase()
    assert :ok = :py.exec("def greet(name, punctuation='!'):\n    return 'hello ' + name + punctuation\n")
    assert {:ok, "hello José?"} = :py.call(:__main__, :greet, ["José"], %{punctuation: "?"})
  end

  test "Elixir structures convert as Erlang terms do" do
    # nil is None in Python; None comes back as :none.
    assert {:ok, true} = :py.eval("x is None", %{x: nil})
    assert {:ok, %{"a" => [1, 2.5, :none]}} = :py.eval("{'a': [1, 2.5, None]}")
    assert {:ok, {:ok, "atom and tuple"}} = :py.eval("(ok, 'atom and tuple')", %{ok: :ok})
  end

  test "an Elixir function called from Python" do
    :ok = :py.register_function(:ex_double, fn [x] -> x * 2 end)
    assert {:ok, 42} = :py.eval("__import__('erlang').ex_double(21)")
    :ok = :py.register_function(:ex_fail, fn [_] -> raise ArgumentError, "bad input" end)
    assert {:ok, "error"} = kind_of_failure()
  end

  test "errors are values" do
    assert {:error, {:ZeroDivisionError, "division by zero", traceback}} = :py.eval("1 / 0")
    assert traceback =~ "ZeroDivisionError"
    assert {:error, {:badarg, {:timeout, -1}}} = :py.eval("1", %{}, -1)
    assert {:error, :timeout} = :py.eval("__import__('time').sleep(1)", %{}, 50)
  end

  test "objects, streams, async calls" do
    {:ok, counter} = :py.call(:collections, :Counter, [], %{}, %{return: :object})
    assert :py.is_object(counter)
    assert {:ok, :none} = :py.call_method(counter, :update, [["a", "b", "a"]])
    assert {:ok, [{"a", 2}]} = :py.call_method(counter, :most_common, [1])

    {:ok, ref} = :py.stream(:builtins, :range, [3])
    items =
      for _ <- 1..3 do
        receive do
          {:py_stream, ^ref, {:data, item}} -> item
        end
      end
    assert items == [0, 1, 2]
    assert_receive {:py_stream, ^ref, :done}

    {:ok, call} = :py.async_call(:operator, :add, [1, 2])
    assert {:ok, 3} = :py.await(call)
  end

  defp upcase({:ok, s}), do: {:ok, String.upcase(s)}

  # Calls a Python function that calls the failing Elixir function, and returns the kind
  # of the erlang.ErlangException it raised.
  defp kind_of_failure do
    :py.exec("""
    import erlang
    def call_failing():
        try:
            erlang.ex_fail(1)
        except erlang.ErlangException as e:
            return str(e.kind)
    """)
    :py.call(:__main__, :call_failing, [])
  end
end
