#!/usr/bin/env bash
# Installs what building and testing erlang_python needs; `make deps` runs it before every
# other target, so it is idempotent and costs well under a second once everything is there.
#
#   1. Debian packages: Erlang/OTP, rebar3, Elixir (for the Elixir example test), a C
#      toolchain (apt-get only when one is missing).
#   2. $PYTHON's headers, libpython and venv module (python3-dev python3-venv when missing).
#   3. The test venv $VENV made from $PYTHON with python_tests/requirements.txt, rebuilt when
#      $PYTHON's version changes, reinstalled when the requirements change (a stamp file in
#      the venv records both).
#
# Environment: PYTHON (default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
REQUIREMENTS=python_tests/requirements.txt
DEBIAN_PACKAGES=(erlang-nox erlang-dev rebar3 erlang-common-test erlang-dialyzer erlang-proper erlang-proper-dev
                 elixir)

log() { printf 'deps: %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -n "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=no
apt_install() {
    if [[ $apt_updated == no ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=yes
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

system_packages() {
    if ! command -v dpkg-query >/dev/null; then
        log "not a Debian system: install Erlang/OTP 25+, rebar3, a C compiler and make yourself"
        return 0
    fi
    local missing=() pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        deb_installed "$pkg" || missing+=("$pkg")
    done
    command -v make >/dev/null || missing+=(make)
    if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then
        missing+=(build-essential)
    fi
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}

# Exit status 0 when $PYTHON has Python.h, a libpython to link and a working ensurepip.
python_ok() {
    "$PYTHON" - <<'EOF' 2>/dev/null
import os, sys, sysconfig
v = sysconfig.get_config_var
include = sysconfig.get_paths()["include"]
library = os.path.join(v("LIBDIR") or "", v("LDLIBRARY") or "")
import ensurepip, venv  # Debian ships ensurepip in python3-venv
sys.exit(not (os.path.exists(os.path.join(include, "Python.h")) and os.path.exists(library)))
EOF
}

python_packages() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
        log "PYTHON=$PYTHON is not a Python 3.9 or newer"
        return 1
    fi
    python_ok && return 0
    if command -v dpkg-query >/dev/null; then
        log "$PYTHON lacks headers, libpython or venv: installing python3-dev python3-venv"
        apt_install python3-dev python3-venv
        python_ok && return 0
    fi
    log "PYTHON=$PYTHON has no Python.h, shared libpython or venv module; install its dev package"
    return 1
}

venv() {
    local stamp="$VENV/.erlang_python-deps" want_python want_reqs
    want_python="python $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.base_prefix)')"
    want_reqs="requirements $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

    if [[ -f $stamp ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
        if [[ $(sed -n 1p "$stamp") != "$want_python" ]]; then
            log "$VENV was made by another Python: rebuilding it"
            rm -rf "$VENV"
        elif [[ $(sed -n 2p "$stamp") == "$want_reqs" ]]; then
            return 0
        fi
    else
        rm -rf "$VENV"
    fi
    if [[ ! -d $VENV ]]; then
        log "creating $VENV from $PYTHON ($want_python)"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing $REQUIREMENTS into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        --progress-bar off -r "$REQUIREMENTS"
    printf '%s\n%s\n' "$want_python" "$want_reqs" >"$stamp"
}

system_packages
python_packages
venv
