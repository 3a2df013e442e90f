#!/usr/bin/env bash
# make test-matrix: the CT suites (pytest included) against every CPython 3.9-3.13 installed
# under pyenv's versions folder (the newest patch release of each minor version; none is
# named here). Each version gets its own venv (.venv-3.X, from python_tests/requirements.txt)
# and its own build tree (_build/matrix/3.X, a copy of the sources, so the main build and the
# other versions' builds are left alone and a second run rebuilds nothing).
# Prints a line per version, then `N passed, N failed` over all of them (also written to
# _build/matrix/summary.txt). MATRIX_EXCLUDE="3.11 ..." leaves out those minor versions
# (.ci/run leaves out the one `make test` has just tested).
set -uo pipefail
cd "$(dirname "$0")/.."

PYENV_VERSIONS="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")/versions"
results=()
total_passed=0
total_failed=0

record() {  # record VERSION PASSED FAILED NOTE
    results+=("$(printf '%-8s %-7s %s passed, %s failed%s' "$1" \
        "$([[ $3 == 0 ]] && echo ok || echo FAILED)" "$2" "$3" "${4:+  ($4)}")")
    total_passed=$((total_passed + $2))
    total_failed=$((total_failed + $3))
}

newest() {  # newest 3.X: the directory of the newest 3.X.Y under pyenv, or nothing
    local dir best=""
    for dir in "$PYENV_VERSIONS/$1".*; do
        [[ -x $dir/bin/python3 && ${dir##*/} =~ ^3\.[0-9]+\.[0-9]+$ ]] || continue
        best+="$dir"$'\n'
    done
    printf '%s' "$best" | sort -V | tail -n 1
}

run_version() {  # run_version 3.X DIR
    local minor=$1 python=$2/bin/python3 tree=_build/matrix/$1 venv=.venv-$1 version
    version=$("$python" -c 'import platform; print(platform.python_version())')
    printf '\n######## Python %s (%s) ########\n' "$version" "$python"
    if ! "$python" -c 'import sys, sysconfig; sys.exit(not sysconfig.get_config_var("Py_ENABLE_SHARED"))'; then
        record "$version" 0 1 "not a shared build (no libpython to embed)"
        return
    fi
    if ! PYTHON=$python VENV=$venv scripts/deps.sh || ! scripts/copy-tree.sh "$tree" ||
        ! (cd "$tree" && PYTHON=$python "${REBAR3:-rebar3}" compile); then
        record "$version" 0 1 "venv or build failed (see above)"
        return
    fi
    PYTHON=$python VENV=$venv TREE=$tree RESULTS=_build/test/results scripts/test.sh ct
    local last passed failed
    last=$(tail -n 1 "$tree/_build/test/results/summary.txt" 2>/dev/null)
    if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]}
        record "$version" "$passed" "$failed" ""
    else
        record "$version" 0 1 "no summary (see above)"
    fi
}

found=0
excluded=0
for minor in 3.9 3.10 3.11 3.12 3.13; do
    if [[ " ${MATRIX_EXCLUDE:-} " == *" $minor "* ]]; then
        echo "test-matrix: Python $minor left out (MATRIX_EXCLUDE)"
        excluded=$((excluded + 1))
        continue
    fi
    dir=$(newest "$minor")
    [[ -n $dir ]] || continue
    found=$((found + 1))
    run_version "$minor" "$dir"
done

printf '\n==== test matrix ====\n'
if ((found == 0 && excluded == 0)); then
    record none 0 1 "no Python 3.9-3.13 under $PYENV_VERSIONS"
fi
mkdir -p _build/matrix
{
    ((${#results[@]} == 0)) || printf '%s\n' "${results[@]}"
    echo "$total_passed passed, $total_failed failed"
} | tee _build/matrix/summary.txt
((total_failed == 0))
