#!/usr/bin/env bash
# erlang_python as a dependency and in a release (README, "As a dependency and in a
# release"): builds test/release_demo, a throwaway application whose rebar.config depends on
# erlang_python (a _checkouts link to this tree), assembles its release with `rebar3 release`,
# starts it, and checks what its start wrote: a py:call, and a call of its own Python module,
# shipped in its priv/python and put on sys.path by the python_path env of its sys.config.
# Leaves nothing behind: its temporary directory, and epmd if the release started it.
#
# Environment: VENV (the Python to run, its bin/python; default .venv), REBAR3.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${VENV:=$ROOT/.venv}"
: "${REBAR3:=rebar3}"
WORK=$(mktemp -d /tmp/erlang_python_release.XXXXXX)
epmd_was_running=no
epmd -names >/dev/null 2>&1 && epmd_was_running=yes

cleanup() {
    rm -rf "$WORK"
    [[ $epmd_was_running == no ]] && epmd -kill >/dev/null 2>&1
    return 0
}
trap cleanup EXIT

cp -r "$ROOT/test/release_demo" "$WORK/demo"
mkdir -p "$WORK/demo/_checkouts"
ln -s "$ROOT" "$WORK/demo/_checkouts/erlang_python"
cd "$WORK/demo" || exit 1

echo "rebar3 release in $WORK/demo"
if ! "$REBAR3" release > "$WORK/release.log" 2>&1; then
    cat "$WORK/release.log"
    echo "FAILED: rebar3 release"
    exit 1
fi
OUT="$WORK/result.txt"
PY_REL_DEMO_OUT="$OUT" ERLANG_PYTHON="$VENV/bin/python" \
    timeout 120 _build/default/rel/py_rel_demo/bin/py_rel_demo foreground > "$WORK/run.log" 2>&1
rc=$?
expected='{{ok,4.0},{ok,<<"hello from priv">>}}.'
if [[ $rc -ne 0 || ! -f $OUT || $(cat "$OUT") != "$expected" ]]; then
    cat "$WORK/run.log"
    echo "FAILED: the release exited with $rc and wrote: $(cat "$OUT" 2>/dev/null)"
    exit 1
fi
echo "the release called Python: $(cat "$OUT")"
