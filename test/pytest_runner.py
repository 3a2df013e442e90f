"""Runs pytest inside the embedded interpreter, for test/py_pytest_SUITE.erl.

`run(tests_dir, summary_path)` calls `pytest.main()` over tests_dir on the calling thread (a
NIF worker thread, never the main thread), prints pytest's usual report on the VM's own
standard output, writes the counts to summary_path as key=value lines for
scripts/summarize.py, and returns them as a dict.

The embedded interpreter shares its process with the Erlang VM, so pytest is run with:
- `--capture=sys`: the default fd capture would dup2() over the VM's stdout and stderr;
- `-p no:faulthandler`: faulthandler installs C signal handlers (SIGSEGV, SIGABRT...) over the
  VM's and the sanitizer's;
- `-p no:cacheprovider`: no .pytest_cache in a source tree that may be read-only;
- a Hypothesis profile with no example database (no .hypothesis directory) and no deadline
  (a loaded CI machine or an ASan build must not turn slowness into failures).
Nothing here forks: the sandbox forbids it, hence no pytest-xdist.
"""

from __future__ import annotations

import glob
import os
import sys

import pytest

HYPOTHESIS_PROFILE = "erlang_python"


class _Plugin:
    """Counts outcomes (a test that failed in its setup or teardown is an error, and so is a
    file that failed to collect; xfail counts as skipped, xpass as passed) and loads the
    Hypothesis profile (from pytest_configure, once pytest has imported Hypothesis's plugin:
    importing it earlier would keep pytest from rewriting its asserts)."""

    def __init__(self) -> None:
        self.counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}

    def pytest_configure(self, config: pytest.Config) -> None:
        try:
            from hypothesis import settings
        except ImportError:
            return
        settings.register_profile(HYPOTHESIS_PROFILE, database=None, deadline=None)
        settings.load_profile(HYPOTHESIS_PROFILE)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.counts["errors"] += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            outcome = report.outcome
        elif report.failed:
            outcome = "errors"
        elif report.skipped:
            outcome = "skipped"
        else:
            return
        self.counts[outcome] += 1


def _test_files(tests_dir: str) -> list[str]:
    found = []
    for pattern in ("test_*.py", "*_test.py"):
        found += glob.glob(os.path.join(tests_dir, "**", pattern), recursive=True)
    return found


def _open_fd(fd: int):
    return open(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


def run(tests_dir: str, summary_path: str, extra_args: list[str] | tuple = ()) -> dict:
    """Runs pytest over tests_dir; returns the counts and pytest's exit status.

    "expected" says whether tests_dir holds test files at all, so that pytest's exit status 5
    (no tests collected) fails the run unless there was nothing to collect.
    """
    counter = _Plugin()
    args = [
        tests_dir,
        f"--rootdir={os.path.dirname(os.path.abspath(tests_dir))}",
        "--capture=sys",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:faulthandler",
        "-ra",
        *extra_args,
    ]
    if not getattr(sys, "argv", None):
        sys.argv = ["pytest"]  # argparse and some plugins read sys.argv[0]
    # pytest reports on sys.stdout; point it at the VM's own stdout so that the report shows
    # in the terminal of `rebar3 ct` whatever the embedding did with sys.stdout.
    saved = sys.stdout, sys.stderr
    out, err = _open_fd(1), _open_fd(2)
    sys.stdout, sys.stderr = out, err
    try:
        status = int(pytest.main(args, plugins=[counter]))
    finally:
        sys.stdout, sys.stderr = saved
        out.close()
        err.close()

    result = dict(counter.counts)
    result["exitstatus"] = status
    result["expected"] = "yes" if _test_files(tests_dir) else "no"
    os.makedirs(os.path.dirname(summary_path), exist_ok=True)
    with open(summary_path, "w", encoding="utf-8") as f:
        f.writelines(f"{key}={value}\n" for key, value in result.items())
    return result
