#!/usr/bin/env bash
# make check-c: the CT suites (pytest included) against an AddressSanitizer build of the NIF.
#
# The NIF is built with SANITIZE=address in a copy of the tree (_build/check-c), so the main
# build is untouched. beam.smp itself is not instrumented, so the ASan runtime must be the
# first library in the process: `rebar3 ct` runs with LD_PRELOAD=libasan (the CT suites run
# inside rebar3's own VM). Leak detection is off: neither the VM nor CPython frees everything
# at exit, so LeakSanitizer would drown the NIF's leaks in theirs. Any "ERROR: AddressSanitizer"
# report in the output fails the run, even one that did not stop the VM.
#
# Environment: PYTHON, VENV (from the Makefile), CC (default cc).
set -euo pipefail
cd "$(dirname "$0")/.."

TREE=_build/check-c
LIBASAN=$("${CC:-cc}" -print-file-name=libasan.so)
if [[ ! -e $LIBASAN ]]; then
    echo "check-c: ${CC:-cc} has no libasan.so (Debian: apt-get install libasan8)" >&2
    exit 2
fi
LIBASAN=$(readlink -f "$LIBASAN")

# Read by c_src/Makefile, in rebar3 compile and in rebar3 ct's hook. Use-after-scope checks
# are off: they give the recursive converters frames 4.5 times as large (to_py: 864 bytes
# instead of 192), and the conversion depth limit (100000 levels) then overflows the worker
# threads' 64 MB stacks. Heap, global and stack-buffer checks stay on.
export SANITIZE=address
export CFLAGS=-fno-sanitize-address-use-after-scope

scripts/copy-tree.sh "$TREE"
# c_src/Makefile does not rebuild when CFLAGS change: start its objects afresh when they do.
if [[ $(cat "$TREE/.cflags" 2>/dev/null) != "$SANITIZE $CFLAGS" ]]; then
    rm -rf "$TREE/_build/c_src"
    echo "$SANITIZE $CFLAGS" >"$TREE/.cflags"
fi
# halt_on_error=1 (the default) stops the VM at the first report; abort_on_error=0 exits
# instead of dumping core; allocator_may_return_null=1 lets an impossible malloc() return NULL
# as glibc's does (CPython turns it into MemoryError, which the suites test) instead of
# being reported as an error.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1
echo "==== check-c: NIF built with SANITIZE=address in $TREE, run with LD_PRELOAD=$LIBASAN ===="
(cd "$TREE" && "${REBAR3:-rebar3}" compile)
if ! readelf -d "$TREE/priv/py_nif.so" | grep -q 'NEEDED.*libasan'; then
    echo "check-c: $TREE/priv/py_nif.so is not linked with libasan" >&2
    exit 2
fi

TREE=$TREE RESULTS=_build/test/results CT_PRELOAD=$LIBASAN scripts/test.sh ct asan
