"""Erlang's external term format, converted by the rules of docs/type-conversion.md.

A pool worker in ``mode => process`` (docs/pools.md) is a Python of its own, talking to the
VM over a port: it cannot use the NIF's converter (c_src/py_convert.c), which works on
terms of the VM's heap. This module is the same converter, written against the bytes of
``term_to_binary``. Both are held to one table by the same tests: the conversion suites
and PropEr properties run against both modes (test/py_pool_SUITE.erl). Where the NIF's
converter changes, this one must too.
"""

import math
import operator
import struct

from _erlang_impl._process_erlang import Atom, Fun, Pid, Port, Reference

VERSION = 131
MAX_DEPTH = 100000
# Most elements taken from an iterator that is not a list, tuple, dict or set (as
# CONV_MAX_ITER_ITEMS in c_src/py_convert.h).
MAX_ITER_ITEMS = 10000000

_NONE_ATOMS = frozenset(("none", "nil", "undefined"))
_FLOAT_ATOMS = {"nan": math.nan, "infinity": math.inf, "neg_infinity": -math.inf}
_float = struct.Struct(">d")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_i32 = struct.Struct(">i")


# ---------------------------------------------------------------------------
# Erlang -> Python
#
# Each decoder takes the bytes and a position and returns (value, next position): plain
# functions and local indexing, since this runs twice per call of a process pool.

_u16_at = _u16.unpack_from
_u32_at = _u32.unpack_from
_i32_at = _i32.unpack_from
_float_at = _float.unpack_from
# Atoms seen, by their encoded text: the same few (module names, ok, ...) come every call.
_atom_cache = {}


def decode(data):
    """The Python value of a term_to_binary result."""
    if not data or data[0] != VERSION:
        raise ValueError("not an external term")
    data = bytes(data)
    try:
        value, _ = _decode(data, 1, 0)
    except (IndexError, struct.error):
        raise ValueError("truncated external term") from None
    return value


def _atom_at(data, pos, tag):
    """(atom text as the converted value, next position)."""
    if tag == 119 or tag == 115:  # SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT
        size = data[pos]
        start = pos + 1
    else:  # ATOM_UTF8_EXT, ATOM_EXT
        size = _u16_at(data, pos)[0]
        start = pos + 2
    end = start + size
    key = (tag in (100, 115), data[start:end])
    value = _atom_cache.get(key)
    if value is None:
        text = key[1].decode("latin-1" if key[0] else "utf-8")
        value = _atom_to_py(text)
        if len(_atom_cache) < 4096:
            _atom_cache[key] = value
    return value, end


def _atom_to_py(text):
    if text == "true":
        return True
    if text == "false":
        return False
    if text in _NONE_ATOMS:
        return None
    if text in _FLOAT_ATOMS:
        return _FLOAT_ATOMS[text]
    return Atom(text)


def _binary_to_py(raw):
    # Valid UTF-8 becomes str; anything else bytes, so that no byte is lost or replaced.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _skip_atom(data, pos):
    tag = data[pos]
    if tag == 119 or tag == 115:
        return pos + 2 + data[pos + 1]
    if tag == 118 or tag == 100:
        return pos + 3 + _u16_at(data, pos + 1)[0]
    raise ValueError("an atom was expected")


def _opaque_end(data, pos, tag):
    """The end of a pid, port, reference or fun whose tag ends at pos."""
    if tag == 88:  # NEW_PID_EXT: node, id, serial, creation(4)
        return _skip_atom(data, pos) + 12
    if tag == 103:  # PID_EXT
        return _skip_atom(data, pos) + 9
    if tag == 89:  # NEW_PORT_EXT: node, id(4), creation(4)
        return _skip_atom(data, pos) + 8
    if tag == 120:  # V4_PORT_EXT: node, id(8), creation(4)
        return _skip_atom(data, pos) + 12
    if tag == 102:  # PORT_EXT
        return _skip_atom(data, pos) + 5
    if tag == 90:  # NEWER_REFERENCE_EXT: len(2), node, creation(4), ids(4*len)
        words = _u16_at(data, pos)[0]
        return _skip_atom(data, pos + 2) + 4 + 4 * words
    if tag == 114:  # NEW_REFERENCE_EXT
        words = _u16_at(data, pos)[0]
        return _skip_atom(data, pos + 2) + 1 + 4 * words
    if tag == 101:  # REFERENCE_EXT
        return _skip_atom(data, pos) + 5
    if tag == 112:  # NEW_FUN_EXT: its size counts itself
        return pos + _u32_at(data, pos)[0]
    if tag == 113:  # EXPORT_EXT: module, function, arity
        _, pos = _decode(data, pos, 0)
        _, pos = _decode(data, pos, 0)
        _, pos = _decode(data, pos, 0)
        return pos
    raise TypeError("cannot convert this Erlang term to Python")


_OPAQUE = {
    88: Pid,
    103: Pid,
    89: Port,
    120: Port,
    102: Port,
    90: Reference,
    114: Reference,
    101: Reference,
    112: Fun,
    113: Fun,
}


def _size_at(data, pos, small):
    """(a count of one byte, or of four for the large forms, next position)."""
    if small:
        return data[pos], pos + 1
    return _u32_at(data, pos)[0], pos + 4


def _decode_items(data, pos, count, depth):
    items = []
    for _ in range(count):
        item, pos = _decode(data, pos, depth + 1)
        items.append(item)
    return items, pos


def _decode(data, pos, depth):
    if depth > MAX_DEPTH:
        raise RecursionError(f"term nested deeper than {MAX_DEPTH} levels")
    tag = data[pos]
    pos += 1
    if tag == 97:  # SMALL_INTEGER_EXT
        return data[pos], pos + 1
    if tag == 119 or tag == 118 or tag == 100 or tag == 115:
        return _atom_at(data, pos, tag)
    if tag == 109:  # BINARY_EXT
        size = _u32_at(data, pos)[0]
        end = pos + 4 + size
        if end > len(data):
            raise ValueError("truncated external term")
        return _binary_to_py(data[pos + 4 : end]), end
    if tag == 104 or tag == 105:  # SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
        arity, pos = _size_at(data, pos, tag == 104)
        items, pos = _decode_items(data, pos, arity, depth)
        if arity == 2 and type(items[0]) is Atom:
            # {bytes, Binary} is how Erlang asks for a Python bytes object.
            if items[0] == "bytes":
                raw = items[1]
                if type(raw) is str:
                    return raw.encode("utf-8"), pos
                if type(raw) is bytes:
                    return raw, pos
            # A handle (docs/objects.md) holds an object of the VM's interpreter, not ours.
            elif items[0] == "$py_object" and type(items[1]) is Reference:
                raise ReferenceError(
                    "this Python object handle is not from this worker's interpreter: "
                    "handles live in the VM's pool only (docs/pools.md)"
                )
        return tuple(items), pos
    if tag == 98:  # INTEGER_EXT
        return _i32_at(data, pos)[0], pos + 4
    if tag == 70:  # NEW_FLOAT_EXT
        return _float_at(data, pos)[0], pos + 8
    if tag == 106:  # NIL_EXT
        return [], pos
    if tag == 108:  # LIST_EXT
        count, pos = _size_at(data, pos, False)
        items, pos = _decode_items(data, pos, count, depth)
        if data[pos] != 106:
            raise TypeError("cannot convert an improper list")
        return items, pos + 1
    if tag == 107:  # STRING_EXT: a list of small integers
        size = _u16_at(data, pos)[0]
        return list(data[pos + 2 : pos + 2 + size]), pos + 2 + size
    if tag == 116:  # MAP_EXT
        arity = _u32_at(data, pos)[0]
        pos += 4
        result = {}
        for _ in range(arity):
            key, pos = _decode(data, pos, depth + 1)
            result[key], pos = _decode(data, pos, depth + 1)
        if len(result) != arity:
            # Python merged keys Erlang keeps apart: foo and <<"foo">>, 1 and 1.0.
            raise ValueError(
                "map keys collide as Python dict keys (an atom and a binary of the same "
                "text, or equal numbers such as 1 and 1.0)"
            )
        return result, pos
    if tag == 110 or tag == 111:  # SMALL_BIG_EXT, LARGE_BIG_EXT
        size, pos = _size_at(data, pos, tag == 110)
        sign = data[pos]
        value = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
        return (-value if sign else value), pos + 1 + size
    if tag == 77:  # BIT_BINARY_EXT
        raise TypeError("cannot convert a bitstring whose size is not a whole number of bytes")
    if tag == 99:  # FLOAT_EXT (old text form)
        return float(data[pos : pos + 31].split(b"\0", 1)[0]), pos + 31
    if tag in _OPAQUE:
        end = _opaque_end(data, pos, tag)
        return _OPAQUE[tag]._of(data[pos - 1 : end]), end
    raise TypeError("cannot convert this Erlang term to Python")


# ---------------------------------------------------------------------------
# Python -> Erlang


def encode(value):
    """term_to_binary of the term a Python value converts to."""
    out = bytearray((VERSION,))
    _encode(value, out, 0)
    return bytes(out)


def encode_after(head, value):
    """head (bytes of a term's encoding up to its last element) followed by value's
    encoding: the frame of a result, with no tuple of its own to build and walk."""
    out = bytearray(head)
    _encode(value, out, 0)
    return bytes(out)


_atom_bytes = {}


def encode_atom(text, out):
    raw = _atom_bytes.get(text)
    if raw is None:
        utf8 = text.encode("utf-8")
        if len(utf8) < 256:
            raw = b"\x77" + bytes((len(utf8),)) + utf8
        else:
            raw = b"\x76" + _u16.pack(len(utf8)) + utf8
        if len(_atom_bytes) < 4096:
            _atom_bytes[str(text)] = raw
    out += raw


def _encode_binary(raw, out):
    out += b"\x6d" + _u32.pack(len(raw))
    out += raw


# The largest integer the VM takes: 2^19-1 words of 64 bits (BIG_ARITY_MAX).
MAX_INT_BITS = ((1 << 19) - 1) * 64


class Raw:
    """A term encoded already, written as it is (_process_errors encodes details once)."""

    __slots__ = ("etf",)

    def __init__(self, etf):
        self.etf = etf


def _encode_int(value, out):
    if 0 <= value <= 255:
        out += b"\x61" + bytes((value,))
    elif -2147483648 <= value <= 2147483647:
        out += b"\x62" + _i32.pack(value)
    else:
        magnitude = -value if value < 0 else value
        if magnitude.bit_length() > MAX_INT_BITS:
            raise OverflowError("integer too large for Erlang")
        raw = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        sign = 1 if value < 0 else 0
        if len(raw) < 256:
            out += b"\x6e" + bytes((len(raw), sign))
        else:
            out += b"\x6f" + _u32.pack(len(raw)) + bytes((sign,))
        out += raw


def _encode_float(value, out):
    if math.isnan(value):
        encode_atom("nan", out)
    elif math.isinf(value):
        encode_atom("infinity" if value > 0 else "neg_infinity", out)
    else:
        out += b"\x46" + _float.pack(value)


def _encode_list(items, out, depth):
    # The length is known: items are written in place, not through a buffer of their own.
    if items:
        out += b"\x6c" + _u32.pack(len(items))
        for item in items:
            _encode(item, out, depth + 1)
    out += b"\x6a"


def _encode_iterable(value, out, depth):
    """Items converted one by one as they come, as the NIF does: an error of an item is
    raised before the iterator is asked for the next."""
    body = bytearray()
    count = 0
    for item in value:
        if count == MAX_ITER_ITEMS:
            raise OverflowError(
                f"iterable too long to convert (more than {MAX_ITER_ITEMS} items); return a "
                "list, or fewer items"
            )
        _encode(item, body, depth + 1)
        count += 1
    if count:
        out += b"\x6c" + _u32.pack(count)
        out += body
    out += b"\x6a"


def _encode_map(pairs, out, depth):
    out += b"\x74" + _u32.pack(len(pairs))
    seen = set()
    for key, item in pairs:
        key_bytes = bytearray()
        _encode(key, key_bytes, depth + 1)
        key_bytes = bytes(key_bytes)
        if key_bytes in seen:
            raise ValueError("two dict keys convert to the same Erlang term (e.g. 1 and True)")
        seen.add(key_bytes)
        out += key_bytes
        _encode(item, out, depth + 1)


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


def type_name(cls):
    """What the NIF reads in tp_name: a class made in Python gives its __name__, a static
    (C) type its module too, but for builtins (datetime.date, int)."""
    if cls.__flags__ & _HEAPTYPE or cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _object_term(value, out):
    """Anything else: {py_object, TypeName, Repr}; a failing __repr__ gives <repr failed>."""
    try:
        text = repr(value)
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else None
    except Exception:
        raw = None
    out += b"\x68\x03"
    encode_atom("py_object", out)
    _encode_binary(type_name(type(value)).encode("utf-8"), out)
    _encode_binary(b"<repr failed>" if raw is None else raw, out)


def _encode_str(value, out, depth):
    _encode_binary(value.encode("utf-8", "surrogatepass"), out)


def _encode_atom_value(value, out, depth):
    if len(value) > 255:
        raise ValueError("an atom has at most 255 characters")
    encode_atom(value, out)


def _encode_tuple(value, out, depth):
    arity = len(value)
    if arity < 256:
        out += b"\x68" + bytes((arity,))
    else:
        out += b"\x69" + _u32.pack(arity)
    for item in value:
        _encode(item, out, depth + 1)


_NONE = b"\x77\x04none"
_TRUE = b"\x77\x04true"
_FALSE = b"\x77\x05false"

# The exact types, found in one lookup; subclasses take the isinstance chain below.
_BY_TYPE = {
    int: lambda value, out, depth: _encode_int(value, out),
    float: lambda value, out, depth: _encode_float(value, out),
    str: _encode_str,
    Atom: _encode_atom_value,
    bytes: lambda value, out, depth: _encode_binary(value, out),
    # A snapshot: a list changed while its items convert (an __index__ that clears it)
    # must not give a frame whose length is wrong.
    list: lambda value, out, depth: _encode_list(list(value), out, depth),
    tuple: _encode_tuple,
    dict: lambda value, out, depth: _encode_map(list(value.items()), out, depth),
    Raw: lambda value, out, depth: out.extend(value.etf),
}


def _encode(value, out, depth):
    if depth > MAX_DEPTH:
        raise RecursionError(f"object nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out += _NONE
        return
    if value is True:
        out += _TRUE
        return
    if value is False:
        out += _FALSE
        return
    encoder = _BY_TYPE.get(type(value))
    if encoder is not None:
        encoder(value, out, depth)
    # Subclasses: their stored value, as the NIF reads it, whatever they override.
    elif isinstance(value, int):
        _encode_int(int.__int__(value), out)
    elif isinstance(value, float):
        _encode_float(float.__float__(value), out)
    elif isinstance(value, str):
        if isinstance(value, Atom):
            _encode_atom_value(str.__str__(value), out, depth)
        else:
            _encode_str(str.__str__(value), out, depth)
    elif isinstance(value, (bytes, bytearray)):
        _encode_binary(bytes(value), out)
    elif isinstance(value, list):
        _encode_list(list(list.__iter__(value)), out, depth)
    elif isinstance(value, tuple):
        _encode_tuple(tuple(tuple.__iter__(value)), out, depth)
    elif isinstance(value, dict):
        _encode_map(list(dict.items(value)), out, depth)
    elif isinstance(value, (Pid, Port, Reference, Fun)):
        out += value._etf
    elif isinstance(value, memoryview):
        if not value.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        _encode_binary(value.tobytes(), out)
    elif isinstance(value, (set, frozenset)):
        _encode_iterable(value, out, depth)
    else:
        _encode_other(value, out, depth)


def _encode_other(value, out, depth):
    """The protocols, in the NIF's order (c_src/py_convert.c, to_term)."""
    cls = type(value)
    # numpy scalars and other number types.
    if getattr(cls, "__index__", None) is not None:
        try:
            _encode_int(operator.index(value), out)
            return
        except TypeError:
            pass  # numpy arrays have __index__, but only size-1 ones are integers
    if getattr(cls, "__getitem__", None) is not None and hasattr(value, "items"):
        # As PyDict_Update: through keys() (AttributeError without it).
        _encode_map([(key, value[key]) for key in value.keys()], out, depth)
        return
    if getattr(cls, "__iter__", None) is not None or (
        getattr(cls, "__getitem__", None) is not None and not isinstance(value, dict)
    ):
        _encode_iterable(iter(value), out, depth)
        return
    if getattr(cls, "__float__", None) is not None:
        _encode_float(float(value), out)
        return
    _object_term(value, out)
