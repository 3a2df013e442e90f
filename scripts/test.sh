#!/usr/bin/env bash
# The checks of `make test`, run one after the other whatever fails, then added up by
# scripts/summarize.py, whose last line is `N passed, N failed`. Exits non-zero if anything
# failed. Expects `make deps build` to have run (the Makefile sees to it).
#
#   scripts/test.sh                  ct (with pytest inside it), elixir, release, xref,
#                                    dialyzer, ruff, edoc
#   scripts/test.sh ct               only some of them
#   scripts/test.sh ct asan          `make check-c`: also fails on a sanitizer report in ct's output
#
# Environment: PYTHON (the NIF's Python), VENV (its test venv, default .venv), RESULTS
# (where logs and the summary go, default _build/test/results), REBAR3, TREE (the source tree
# to test, default this one; `make check-c` points it at its sanitizer build), CT_PRELOAD (a
# library to LD_PRELOAD into the VM of `rebar3 ct` alone: libasan for `make check-c`).
set -uo pipefail
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

: "${PYTHON:=python3}"
: "${VENV:=.venv}"
VENV=$(cd "$VENV" && pwd)
cd "${TREE:-$SCRIPTS/..}" || exit 2
: "${RESULTS:=_build/test/results}"
: "${REBAR3:=rebar3}"
export PYTHON
export REBAR_COLOR=none
PYTEST_SUMMARY=_build/test/pytest-summary.txt   # written by test/pytest_runner.py
RUFF_DIRS=(priv/python python_tests bench test scripts)

steps=("$@")
((${#steps[@]})) || steps=(ct elixir release xref dialyzer ruff edoc)
mkdir -p "$RESULTS"
summary_args=()

banner() { printf '\n==== %s ====\n' "$*"; }

run_ct() {
    banner "rebar3 ct (ERLANG_PYTHON=$VENV/bin/python)"
    rm -f "$PYTEST_SUMMARY"
    env ${CT_PRELOAD:+LD_PRELOAD="$CT_PRELOAD"} ERLANG_PYTHON="$VENV/bin/python" \
        "$REBAR3" ct 2>&1 | tee "$RESULTS/ct.log"
    local rc=${PIPESTATUS[0]}
    summary_args+=(--ct-log "$RESULTS/ct.log" --ct-rc "$rc" --pytest "$PYTEST_SUMMARY")
    # Kept beside the CT log, so that a later run of another step cannot lose it.
    [[ -f $PYTEST_SUMMARY ]] && cp "$PYTEST_SUMMARY" "$RESULTS/"
}

run_check() {
    local name=$1 rc
    shift
    banner "$*"
    "$@"
    rc=$?
    summary_args+=(--check "$name=$rc")
}

run_ruff() {
    local dirs=() d rc=0
    for d in "${RUFF_DIRS[@]}"; do
        [[ -d $d ]] && dirs+=("$d")
    done
    banner "ruff check / ruff format --check: ${dirs[*]}"
    "$VENV/bin/ruff" check --no-cache "${dirs[@]}" || rc=1
    "$VENV/bin/ruff" format --no-cache --check "${dirs[@]}" || rc=1
    summary_args+=(--check "ruff=$rc")
}

# rebar3 edoc (the API reference in doc/, which the README links) must build without a
# warning: edoc reports bad tags and references as warnings and still exits 0.
run_edoc() {
    local rc=0
    banner "rebar3 edoc"
    "$REBAR3" edoc 2>&1 | tee "$RESULTS/edoc.log" || rc=1
    if grep -qiE 'warning|error' "$RESULTS/edoc.log"; then
        rc=1
    fi
    summary_args+=(--check "edoc=$rc")
}

# The Elixir examples of docs/elixir.md (test/elixir/*.exs), with Debian's elixir.
run_elixir() {
    local rc=0 script
    banner "elixir test/elixir/*.exs"
    if ! command -v elixir >/dev/null; then
        echo "elixir is not installed (make deps installs it)"
        rc=1
    else
        for script in test/elixir/*.exs; do
            ERLANG_PYTHON="$VENV/bin/python" elixir -pa _build/default/lib/erlang_python/ebin \
                "$script" || rc=1
        done
    fi
    summary_args+=(--check "elixir=$rc")
}

run_asan() {
    banner "sanitizer reports in the output of rebar3 ct"
    if grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$RESULTS/ct.log"; then
        summary_args+=(--check "asan=1")
    else
        echo "none"
        summary_args+=(--check "asan=0")
    fi
}

for step in "${steps[@]}"; do
    case $step in
        ct) run_ct ;;
        xref) run_check xref "$REBAR3" xref ;;
        dialyzer) run_check dialyzer "$REBAR3" dialyzer ;;
        ruff) run_ruff ;;
        edoc) run_edoc ;;
        elixir) run_elixir ;;
        release) run_check release env VENV="$VENV" REBAR3="$REBAR3" "$SCRIPTS/release_test.sh" ;;
        asan) run_asan ;;
        *) echo "test.sh: unknown step $step" >&2; exit 2 ;;
    esac
done

echo
"$VENV/bin/python" "$SCRIPTS/summarize.py" "${summary_args[@]}" | tee "$RESULTS/summary.txt"
exit "${PIPESTATUS[0]}"
