"""Shared checks of the sandbox tests (test_sandbox_*.py); holds no test itself.

Every attempt at a blocked operation tries to run `touch FILE`, so a sandbox that let it
through leaves FILE behind (a forked child execs `touch` at once, so it never runs on as a copy
of the VM). `Witness` records, around each attempt: that FILE was not created, that the
process has no new child, that no signal disposition of the process changed (the SigCgt and
SigIgn lines of /proc/self/status: the VM's handlers), and that the VM still answers a call
from Python.
"""

from __future__ import annotations

import ctypes
import glob
import os
import struct
import tempfile

import pytest

TOUCH = "/usr/bin/touch" if os.path.exists("/usr/bin/touch") else "/bin/touch"

FIRST_LINE = "{op} is blocked in Erlang VM context."
SPAWN_LINES = (
    "fork()/exec() would corrupt the Erlang runtime.",
    "Use Erlang ports (open_port/2) for subprocess management.",
)


def spawn_message(op: str) -> str:
    """The spec's exact three-line message for a refused process operation."""
    return "\n".join((FIRST_LINE.format(op=op),) + SPAWN_LINES)


def signal_state() -> dict[str, str]:
    """The process's caught and ignored signal masks, as /proc/self/status shows them."""
    with open("/proc/self/status") as status:
        return {
            line.split(":")[0]: line.split(":")[1].strip()
            for line in status
            if line.startswith(("SigCgt:", "SigIgn:"))
        }


def children() -> set[int]:
    """The pids of this process's children, from every thread's /proc children list."""
    found: set[int] = set()
    for path in glob.glob("/proc/self/task/*/children"):
        try:
            with open(path) as listing:
                found.update(int(pid) for pid in listing.read().split())
        except OSError:
            pass
    return found


def vm_answers() -> bool:
    """True when the Erlang VM processes a call from Python: calling a name that nobody
    registered makes the VM look it up and answer with an error that names it. Outside the
    VM (no `erlang` module) there is nothing to ask, and this is True."""
    try:
        import erlang
    except ImportError:
        return True
    name = "sandbox_test_unregistered_ping"
    try:
        erlang.call(name)
    except Exception as error:  # the VM's answer: no function registered under that name
        return name in str(error)
    return False


class Witness:
    """What a test of a blocked path checks: see the module docstring."""

    def __init__(self, directory: str) -> None:
        self.file = os.path.join(directory, "touched")
        self.signals = signal_state()
        self.children = children()

    @property
    def argv(self) -> list[str]:
        return [TOUCH, self.file]

    @property
    def command(self) -> str:
        return f"{TOUCH} {self.file}"

    def check(self) -> None:
        assert not os.path.exists(self.file), "a child process ran `touch`"
        assert children() <= self.children, "a child process was created"
        assert signal_state() == self.signals, "a signal disposition of the VM changed"
        assert vm_answers(), "the Erlang VM did not answer"


@pytest.fixture
def witness():
    """A Witness whose checks run after the test, whatever the test did."""
    with tempfile.TemporaryDirectory(prefix="sandbox-") as directory:
        seen = Witness(directory)
        yield seen
        seen.check()


def exec_in_child(argv: list[str]) -> None:
    """What a forked child does if a fork ever gets through: become `touch` at once (never
    go on as a copy of the VM), or die without cleanup."""
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def _libc_mapping() -> tuple[str, int]:
    """libc's path and load address, from /proc/self/maps (its mapping at file offset 0)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "/libc.so" in fields[5] and int(fields[2], 16) == 0:
                return fields[5], int(fields[0].split("-")[0], 16)
    raise LookupError("libc is not mapped")


def _dynamic_symbols(path: str) -> dict[str, int]:
    """The defined dynamic symbols of a 64-bit little-endian ELF file and their values."""
    with open(path, "rb") as elf:
        data = elf.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise LookupError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    symbols: dict[str, int] = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 11:  # SHT_DYNSYM
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, _st_info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", data, at)
            if shndx == 0 or value == 0:
                continue
            end = data.index(b"\0", strtab + name_at)
            symbols.setdefault(data[strtab + name_at : end].decode(), value)
    return symbols


def raw_libc_function(name: str, restype, *argtypes):
    """A ctypes function for libc's `name`, made from an address computed from libc's ELF
    symbol table and its load address: no dlsym, hence no audit event. This is how native
    code (or ctypes with some effort) reaches libc without asking Python; only the seccomp
    filter stands in its way."""
    path, base = _libc_mapping()
    address = base + _dynamic_symbols(path)[name]
    return ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)(address)
