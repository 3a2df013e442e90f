#!/usr/bin/env bash
# scripts/copy-tree.sh DEST: copies the sources that `rebar3 ct` needs into DEST, a separate
# build tree for `make check-c` and `make test-matrix`, so that their NIF builds never touch
# the main one. DEST/_build is kept between runs: only what changed is rebuilt (cp -a keeps
# modification times).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$1
mkdir -p "$dest"
for item in rebar.config src include c_src priv test python_tests; do
    rm -rf "${dest:?}/$item"
    if [[ -e $item ]]; then
        cp -a "$item" "$dest/"
    fi
done
# Built artefacts are rebuilt in the tree (the NIF against its Python, both under SANITIZE).
rm -f "$dest"/priv/*.so "$dest"/priv/py_exec_port
