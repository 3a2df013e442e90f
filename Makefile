# erlang_python: build, test and CI entry points (see README.md, "Build and test").
#
#   make build         compile the Erlang app and the NIF (rebar3 compile)
#   make test          CT suites (pytest runs inside one of them), xref, dialyzer, ruff;
#                      the last line printed is `N passed, N failed`
#   make demo          a short tour of the API
#   make check-c       the CT suites against an AddressSanitizer build of the NIF
#   make test-matrix   CT + pytest against every Python 3.9-3.13 found under pyenv
#   make bench         bench/run.escript
#   make docs          the API reference (rebar3 edoc): doc/index.html
#   make clean         build output; `make distclean` also removes the venvs
#
#   PYTHON=/path/to/python3   the Python to build against (default: python3 on PATH); its
#                             venv .venv holds pytest, numpy, hypothesis and ruff.

PYTHON ?= python3
# Absolute, since rebar3's hook runs `make -C c_src` with PYTHON from the environment.
override PYTHON := $(if $(findstring /,$(PYTHON)),$(abspath $(PYTHON)),$(PYTHON))
VENV ?= .venv
override VENV := $(abspath $(VENV))
REBAR3 ?= rebar3
export PYTHON VENV REBAR3

# The embedded interpreter of tests, demo and bench is the venv's Python, so that its
# site-packages (pytest, numpy...) import.
RUN_ENV := ERLANG_PYTHON=$(VENV)/bin/python

.PHONY: all deps build test demo check-c test-matrix bench docs clean distclean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(REBAR3) compile

test: deps build
	@scripts/test.sh

demo: deps build
	@$(RUN_ENV) escript scripts/demo.escript

check-c: deps
	@scripts/check-c.sh

test-matrix: deps
	@scripts/test-matrix.sh

docs: build
	$(REBAR3) edoc

bench: deps build
	@if [ -f bench/run.escript ]; then \
	    $(RUN_ENV) escript bench/run.escript; \
	else \
	    echo "make bench: bench/run.escript does not exist yet; nothing to run"; \
	fi

clean:
	rm -rf _build priv/*.so .ruff_cache
	find . -name __pycache__ -type d -not -path './.venv*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv .venv-*
