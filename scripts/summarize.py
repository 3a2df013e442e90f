"""Adds up the results of `make test` and prints them; the last line is `N passed, N failed`.

Inputs, each optional:
  --ct-log FILE      the output of `rebar3 ct`; counts its test cases. Auto-skipped cases
                     (a crashed init_per_suite or init_per_group) count as failed; a run that
                     printed no result line, or exited non-zero with no failed case, counts as
                     one failure.
  --ct-rc N          the exit status of `rebar3 ct`.
  --pytest FILE      the summary written by test/pytest_runner.py (key=value lines); counts
                     each pytest test. Missing file: one failure (pytest never ran).
  --check NAME=RC    a check that passes or fails as a whole (xref, dialyzer, ruff): one
                     test, passed when RC is 0.

Exits 1 when anything failed or when nothing at all passed, else 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    name: str
    passed: int = 0
    failed: int = 0
    note: str = ""


def ct_result(log_path: str, rc: int | None) -> Result:
    result = Result("ct")
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = ANSI.sub("", f.read())
    except OSError as e:
        return Result("ct", failed=1, note=f"no output ({e.strerror})")
    # rebar3 prints either "All N tests passed." or
    # "Failed N tests. Skipped N (User, Auto) tests. Passed N tests." (parts may be absent).
    all_passed = re.findall(r"^All (\d+) tests passed\.", text, re.M)
    mixed = re.findall(r"^((?:Failed|Skipped|Passed) \d+.*tests\.)\s*$", text, re.M)
    if all_passed:
        result.passed = int(all_passed[-1])
    elif mixed:
        line = mixed[-1]
        counts = {k: int(n) for k, n in re.findall(r"(Failed|Passed) (\d+)", line)}
        result.passed = counts.get("Passed", 0)
        result.failed = counts.get("Failed", 0)
        skipped = re.search(r"Skipped (\d+) \((\d+), (\d+)\)", line)
        if skipped:
            user, auto = int(skipped.group(2)), int(skipped.group(3))
            result.failed += auto
            notes = [f"{user} skipped"] if user else []
            if auto:
                notes.append(f"{auto} auto-skipped, counted as failed")
            result.note = ", ".join(notes)
    else:
        result.failed = 1
        result.note = "rebar3 ct printed no result line (see its output above)"
        return result
    if rc and result.failed == 0:
        result.failed = 1
        result.note = f"rebar3 ct exited {rc} with no failed case (see its output above)"
    return result


def pytest_result(path: str) -> Result:
    result = Result("pytest")
    try:
        with open(path, encoding="utf-8") as f:
            fields = dict(line.strip().split("=", 1) for line in f if "=" in line)
    except OSError:
        return Result("pytest", failed=1, note=f"{path} missing: pytest did not run")
    counts = {k: int(v) for k, v in fields.items() if v.lstrip("-").isdigit()}
    result.passed = counts.get("passed", 0)
    result.failed = counts.get("failed", 0) + counts.get("errors", 0)
    status = counts.get("exitstatus", 1)
    notes = []
    if counts.get("skipped"):
        notes.append(f"{counts['skipped']} skipped")
    if counts.get("errors"):
        notes.append(f"{counts['errors']} errors")
    if status == 5 and fields.get("expected") == "no":
        notes.append("python_tests/ has no test files yet")
    elif status != 0 and result.failed == 0:
        result.failed = 1
        notes.append(f"pytest exited {status} with no failed test")
    result.note = ", ".join(notes)
    return result


def check_result(spec: str) -> Result:
    name, _, rc = spec.partition("=")
    ok = rc.strip() == "0"
    return Result(name, passed=int(ok), failed=int(not ok), note="" if ok else f"exit {rc}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct-log")
    parser.add_argument("--ct-rc", type=int)
    parser.add_argument("--pytest")
    parser.add_argument("--check", action="append", default=[])
    args = parser.parse_args(argv)

    results = []
    if args.ct_log:
        results.append(ct_result(args.ct_log, args.ct_rc))
    if args.pytest:
        results.append(pytest_result(args.pytest))
    results.extend(check_result(spec) for spec in args.check)

    print("==== summary ====")
    for r in results:
        status = "ok" if r.failed == 0 else "FAILED"
        note = f"  ({r.note})" if r.note else ""
        print(f"{r.name:<10} {status:<7} {r.passed} passed, {r.failed} failed{note}")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
