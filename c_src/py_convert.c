/* Term <-> object conversion; the table it implements is docs/type-conversion.md. */
#include "py_convert.h"

#include "py_object.h"

#include <math.h>
#include <string.h>

#include "py_erlang_module.h"

static atomic_long atom_limit = 10000;
static atomic_long atoms_created = 0;
static bool (*cancel_check)(void) = NULL;

void
conv_set_cancel_check(bool (*cancelled)(void))
{
    cancel_check = cancelled;
}

/* Every CONV_CANCEL_CHECK_EVERY items: false, with CallCancelled set, once the request
 * this conversion runs for was cancelled. A long conversion runs no bytecode, so the
 * exception the cancellation raises asynchronously would wait until it ends. */
static bool
still_wanted(size_t count)
{
    if (count % CONV_CANCEL_CHECK_EVERY != 0 || cancel_check == NULL || !cancel_check()) {
        return true;
    }
    PyErr_SetString(erlmod_exception("CallCancelled"),
                    "the py:call this conversion runs for timed out or its caller exited");
    return false;
}

void
conv_set_atom_limit(long limit)
{
    atomic_store(&atom_limit, limit);
}

long
conv_atoms_created(void)
{
    return atomic_load(&atoms_created);
}

/* ------------------------------------------------------------------------ */
/* Erlang -> Python */

static PyObject *to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth);

/* OTP 25's erl_nif reads and makes atoms in Latin-1 only: atoms beyond it
 * travel through the external term format (ATOM_UTF8_EXT). */
bool
conv_make_atom(ErlNifEnv *env, const char *utf8, size_t size, bool existing_only,
               ERL_NIF_TERM *out)
{
    unsigned char stack_buf[4 + 255 * 4];
    bool ascii = true;

    for (size_t i = 0; i < size && ascii; i++) {
        ascii = (unsigned char)utf8[i] < 128;
    }
    if (ascii) {
        if (existing_only) {
            return enif_make_existing_atom_len(env, utf8, size, out, ERL_NIF_LATIN1);
        }
        *out = enif_make_atom_len(env, utf8, size);
        return true;
    }
    if (size > 255 * 4) {
        return false;
    }
    stack_buf[0] = 131;
    stack_buf[1] = 118; /* ATOM_UTF8_EXT */
    stack_buf[2] = (unsigned char)(size >> 8);
    stack_buf[3] = (unsigned char)size;
    memcpy(stack_buf + 4, utf8, size);
    return enif_binary_to_term(env, stack_buf, size + 4, out,
                               existing_only ? ERL_NIF_BIN2TERM_SAFE : 0) != 0;
}

PyObject *
conv_atom_text(ErlNifEnv *env, ERL_NIF_TERM term)
{
    char latin1[256];
    ErlNifBinary etf;
    PyObject *text = NULL;

    if (enif_get_atom(env, term, latin1, sizeof(latin1), ERL_NIF_LATIN1) > 0) {
        return PyUnicode_DecodeLatin1(latin1, (Py_ssize_t)strlen(latin1), NULL);
    }
    if (!enif_term_to_binary(env, term, &etf)) {
        return PyErr_NoMemory();
    }
    if (etf.size >= 4 && etf.data[1] == 118) { /* ATOM_UTF8_EXT */
        size_t len = ((size_t)etf.data[2] << 8) | etf.data[3];
        text = PyUnicode_DecodeUTF8((const char *)etf.data + 4, (Py_ssize_t)len, NULL);
    } else if (etf.size >= 3 && etf.data[1] == 119) { /* SMALL_ATOM_UTF8_EXT */
        text = PyUnicode_DecodeUTF8((const char *)etf.data + 3, etf.data[2], NULL);
    } else {
        PyErr_SetString(PyExc_ValueError, "cannot read atom");
    }
    enif_release_binary(&etf);
    return text;
}

static PyObject *
atom_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    PyObject *text;
    PyObject *result;

    if (term == ATOMS.true_) {
        Py_RETURN_TRUE;
    }
    if (term == ATOMS.false_) {
        Py_RETURN_FALSE;
    }
    if (term == ATOMS.none || term == ATOMS.nil || term == ATOMS.undefined) {
        Py_RETURN_NONE;
    }
    if (term == ATOMS.nan) {
        return PyFloat_FromDouble(NAN);
    }
    if (term == ATOMS.infinity) {
        return PyFloat_FromDouble(INFINITY);
    }
    if (term == ATOMS.neg_infinity) {
        return PyFloat_FromDouble(-INFINITY);
    }
    text = conv_atom_text(env, term);
    if (text == NULL) {
        return NULL;
    }
    result = PyObject_CallOneArg(erlmod_atom_type(), text);
    Py_DECREF(text);
    return result;
}

/* A bignum: read the digits from the external term format, which is the only
 * public way erl_nif gives to them. */
static PyObject *
bignum_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary etf;
    PyObject *result = NULL;
    char *hex = NULL;
    const unsigned char *digits;
    size_t ndigits;
    int negative;

    if (!enif_term_to_binary(env, term, &etf)) {
        PyErr_SetString(PyExc_MemoryError, "cannot encode integer");
        return NULL;
    }
    if (etf.size >= 3 && etf.data[1] == 110) { /* SMALL_BIG_EXT */
        ndigits = etf.data[2];
        negative = etf.data[3];
        digits = etf.data + 4;
    } else if (etf.size >= 7 && etf.data[1] == 111) { /* LARGE_BIG_EXT */
        ndigits = ((size_t)etf.data[2] << 24) | ((size_t)etf.data[3] << 16) |
                  ((size_t)etf.data[4] << 8) | etf.data[5];
        negative = etf.data[6];
        digits = etf.data + 7;
    } else {
        PyErr_SetString(PyExc_ValueError, "unexpected integer encoding");
        goto done;
    }
    hex = enif_alloc(ndigits * 2 + 2);
    if (hex == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Digits are little-endian bytes; PyLong_FromString wants big-endian hex. */
    for (size_t i = 0; i < ndigits; i++) {
        static const char xdigits[] = "0123456789abcdef";
        unsigned char byte = digits[ndigits - 1 - i];
        hex[2 * i] = xdigits[byte >> 4];
        hex[2 * i + 1] = xdigits[byte & 15];
    }
    hex[2 * ndigits] = '\0';
    result = PyLong_FromString(hex, NULL, 16);
    if (result != NULL && negative) {
        PyObject *neg = PyNumber_Negative(result);
        Py_SETREF(result, neg);
    }
done:
    if (hex != NULL) {
        enif_free(hex);
    }
    enif_release_binary(&etf);
    return result;
}

static PyObject *
integer_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifSInt64 small;
    ErlNifUInt64 usmall;

    if (enif_get_int64(env, term, &small)) {
        return PyLong_FromLongLong((long long)small);
    }
    if (enif_get_uint64(env, term, &usmall)) {
        return PyLong_FromUnsignedLongLong((unsigned long long)usmall);
    }
    return bignum_to_py(env, term);
}

static PyObject *
binary_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    ErlNifBinary bin;
    PyObject *text;

    if (!enif_inspect_binary(env, term, &bin)) {
        PyErr_SetString(PyExc_TypeError,
                        "cannot convert a bitstring whose size is not a whole number of bytes");
        return NULL;
    }
    /* Valid UTF-8 becomes str; anything else becomes bytes, so no byte is
     * ever lost or replaced. */
    text = PyUnicode_DecodeUTF8((const char *)bin.data, (Py_ssize_t)bin.size, NULL);
    if (text != NULL) {
        return text;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        return NULL;
    }
    PyErr_Clear();
    return PyBytes_FromStringAndSize((const char *)bin.data, (Py_ssize_t)bin.size);
}

static PyObject *
list_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    unsigned len = 0;
    PyObject *list = NULL;
    ERL_NIF_TERM head, tail = term;

    if (!enif_get_list_length(env, term, &len)) {
        PyErr_SetString(PyExc_TypeError, "cannot convert an improper list");
        return NULL;
    }
    list = PyList_New((Py_ssize_t)len);
    if (list == NULL) {
        return NULL;
    }
    for (unsigned i = 0; i < len; i++) {
        PyObject *item;
        if (!enif_get_list_cell(env, tail, &head, &tail) || !still_wanted(i + 1)) {
            if (PyErr_Occurred()) {
                Py_DECREF(list);
                return NULL;
            }
            break;
        }
        item = to_py(env, head, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
tuple_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    int arity = 0;
    const ERL_NIF_TERM *elems;
    PyObject *tuple;
    ErlNifBinary bin;

    enif_get_tuple(env, term, &arity, &elems);
    /* A handle is its object (py_object.h). */
    if (arity == 2 && object_is_handle(env, term)) {
        return object_from_handle(env, term);
    }
    /* {bytes, Binary} is how Erlang asks for a Python bytes object. */
    if (arity == 2 && elems[0] == ATOMS.bytes && enif_inspect_binary(env, elems[1], &bin)) {
        return PyBytes_FromStringAndSize((const char *)bin.data, (Py_ssize_t)bin.size);
    }
    tuple = PyTuple_New(arity);
    if (tuple == NULL) {
        return NULL;
    }
    for (int i = 0; i < arity; i++) {
        PyObject *item = to_py(env, elems[i], depth + 1);
        if (item == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, item);
    }
    return tuple;
}

static PyObject *
map_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    ErlNifMapIterator iter;
    ERL_NIF_TERM key, value;
    PyObject *dict = PyDict_New();

    if (dict == NULL) {
        return NULL;
    }
    if (!enif_map_iterator_create(env, term, &iter, ERL_NIF_MAP_ITERATOR_FIRST)) {
        Py_DECREF(dict);
        PyErr_SetString(PyExc_TypeError, "cannot iterate map");
        return NULL;
    }
    size_t expected = 0;
    enif_get_map_size(env, term, &expected);
    while (enif_map_iterator_get_pair(env, &iter, &key, &value)) {
        PyObject *pykey = to_py(env, key, depth + 1);
        PyObject *pyvalue = pykey == NULL ? NULL : to_py(env, value, depth + 1);
        int status = pyvalue == NULL ? -1 : PyDict_SetItem(dict, pykey, pyvalue);
        Py_XDECREF(pykey);
        Py_XDECREF(pyvalue);
        if (status < 0) {
            enif_map_iterator_destroy(env, &iter);
            Py_DECREF(dict);
            return NULL;
        }
        enif_map_iterator_next(env, &iter);
    }
    enif_map_iterator_destroy(env, &iter);
    if ((size_t)PyDict_GET_SIZE(dict) != expected) {
        /* Python merged keys Erlang keeps apart: foo and <<"foo">>, 1 and 1.0. */
        Py_DECREF(dict);
        PyErr_SetString(PyExc_ValueError,
                        "map keys collide as Python dict keys (an atom and a binary of "
                        "the same text, or equal numbers such as 1 and 1.0)");
        return NULL;
    }
    return dict;
}

static PyObject *
to_py(ErlNifEnv *env, ERL_NIF_TERM term, int depth)
{
    double number;

    if (depth > CONV_MAX_DEPTH) {
        PyErr_Format(PyExc_RecursionError, "term nested deeper than %d levels", CONV_MAX_DEPTH);
        return NULL;
    }
    switch (enif_term_type(env, term)) {
    case ERL_NIF_TERM_TYPE_ATOM:
        return atom_to_py(env, term);
    case ERL_NIF_TERM_TYPE_BITSTRING:
        return binary_to_py(env, term);
    case ERL_NIF_TERM_TYPE_FLOAT:
        enif_get_double(env, term, &number);
        return PyFloat_FromDouble(number);
    case ERL_NIF_TERM_TYPE_INTEGER:
        return integer_to_py(env, term);
    case ERL_NIF_TERM_TYPE_LIST:
        return list_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_MAP:
        return map_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_TUPLE:
        return tuple_to_py(env, term, depth);
    case ERL_NIF_TERM_TYPE_PID:
    case ERL_NIF_TERM_TYPE_PORT:
    case ERL_NIF_TERM_TYPE_REFERENCE:
    case ERL_NIF_TERM_TYPE_FUN:
        return erlmod_wrap_term(env, term);
    default:
        PyErr_SetString(PyExc_TypeError, "cannot convert this Erlang term to Python");
        return NULL;
    }
}

PyObject *
conv_to_py(ErlNifEnv *env, ERL_NIF_TERM term)
{
    return to_py(env, term, 0);
}

/* ------------------------------------------------------------------------ */
/* Python -> Erlang */

static bool to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out, int depth);

static bool
make_binary_term(ErlNifEnv *env, const char *data, size_t size, ERL_NIF_TERM *out)
{
    unsigned char *dest = enif_make_new_binary(env, size, out);
    if (dest == NULL) {
        PyErr_NoMemory();
        return false;
    }
    if (size > 0) {
        memcpy(dest, data, size);
    }
    return true;
}

ERL_NIF_TERM
make_binary(ErlNifEnv *env, const char *data, size_t size)
{
    ERL_NIF_TERM term;
    unsigned char *dest = enif_make_new_binary(env, size, &term);
    if (dest != NULL && size > 0) {
        memcpy(dest, data, size);
    }
    return term;
}

static bool
str_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    Py_ssize_t size = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &size);
    PyObject *encoded;
    bool ok;

    if (utf8 != NULL) {
        return make_binary_term(env, utf8, (size_t)size, out);
    }
    /* Lone surrogates have no UTF-8 form: keep their code units' bytes
     * rather than fail the whole result. */
    PyErr_Clear();
    encoded = PyUnicode_AsEncodedString(obj, "utf-8", "surrogatepass");
    if (encoded == NULL) {
        return false;
    }
    ok = make_binary_term(env, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded),
                          out);
    Py_DECREF(encoded);
    return ok;
}

static bool
atom_obj_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    Py_ssize_t size = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &size);

    if (utf8 == NULL) {
        return false;
    }
    if (PyUnicode_GET_LENGTH(obj) > 255) {
        PyErr_SetString(PyExc_ValueError, "an atom has at most 255 characters");
        return false;
    }
    if (conv_make_atom(env, utf8, (size_t)size, true, out)) {
        return true;
    }
    /* Creating an atom is permanent; atoms are never collected. */
    if (atomic_fetch_add(&atoms_created, 1) >= atomic_load(&atom_limit)) {
        atomic_fetch_sub(&atoms_created, 1);
        PyErr_Format(PyExc_OverflowError,
                     "atom limit reached: erlang.Atom(%R) would create a new atom "
                     "(limit %ld, set by the atom_limit application env)",
                     obj, atomic_load(&atom_limit));
        return false;
    }
    if (!conv_make_atom(env, utf8, (size_t)size, false, out)) {
        atomic_fetch_sub(&atoms_created, 1);
        PyErr_SetString(PyExc_ValueError, "cannot make an atom of this text");
        return false;
    }
    return true;
}

/* An int that does not fit 64 bits: write it in the external term format's
 * big-integer encoding and let the VM decode it. */
static bool
bignum_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    PyObject *absolute = NULL;
    PyObject *hexobj = NULL;
    const char *hex;
    Py_ssize_t hexlen;
    unsigned char *etf = NULL;
    size_t ndigits, etf_size;
    bool ok = false;
    PyObject *zero = PyLong_FromLong(0);
    int negative = zero == NULL ? -1 : PyObject_RichCompareBool(obj, zero, Py_LT);

    Py_XDECREF(zero);

    if (negative < 0) {
        goto done;
    }
    absolute = PyNumber_Absolute(obj);
    hexobj = absolute == NULL ? NULL : PyNumber_ToBase(absolute, 16);
    if (hexobj == NULL) {
        goto done;
    }
    hex = PyUnicode_AsUTF8AndSize(hexobj, &hexlen);
    if (hex == NULL) {
        goto done;
    }
    hex += 2; /* "0x" */
    hexlen -= 2;
    ndigits = ((size_t)hexlen + 1) / 2;
    etf_size = 7 + ndigits;
    etf = enif_alloc(etf_size);
    if (etf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    etf[0] = 131;
    etf[1] = 111; /* LARGE_BIG_EXT */
    etf[2] = (unsigned char)(ndigits >> 24);
    etf[3] = (unsigned char)(ndigits >> 16);
    etf[4] = (unsigned char)(ndigits >> 8);
    etf[5] = (unsigned char)ndigits;
    etf[6] = (unsigned char)negative;
    for (size_t i = 0; i < ndigits; i++) {
        /* Byte i (little-endian) holds hex digits counted from the end. */
        Py_ssize_t lo = hexlen - 1 - (Py_ssize_t)(2 * i);
        Py_ssize_t hi = lo - 1;
        int lo_val = hex[lo] <= '9' ? hex[lo] - '0' : hex[lo] - 'a' + 10;
        int hi_val = hi < 0 ? 0 : (hex[hi] <= '9' ? hex[hi] - '0' : hex[hi] - 'a' + 10);
        etf[7 + i] = (unsigned char)((hi_val << 4) | lo_val);
    }
    if (enif_binary_to_term(env, etf, etf_size, out, 0) == 0) {
        PyErr_SetString(PyExc_OverflowError, "integer too large for Erlang");
        goto done;
    }
    ok = true;
done:
    if (etf != NULL) {
        enif_free(etf);
    }
    Py_XDECREF(absolute);
    Py_XDECREF(hexobj);
    return ok;
}

static bool
int_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);

    if (value == -1 && PyErr_Occurred()) {
        return false;
    }
    if (overflow == 0) {
        *out = enif_make_int64(env, (ErlNifSInt64)value);
        return true;
    }
    return bignum_to_term(env, obj, out);
}

static bool
float_to_term(ErlNifEnv *env, double value, ERL_NIF_TERM *out)
{
    /* Erlang floats have no nan or infinities: they travel as atoms, which
     * convert back to the same floats. */
    if (isnan(value)) {
        *out = ATOMS.nan;
    } else if (isinf(value)) {
        *out = value > 0 ? ATOMS.infinity : ATOMS.neg_infinity;
    } else {
        *out = enif_make_double(env, value);
    }
    return true;
}

static bool
sequence_to_list(ErlNifEnv *env, PyObject *seq, ERL_NIF_TERM *out, int depth)
{
    /* seq is a list or tuple (PySequence_Fast). */
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    ERL_NIF_TERM *items = enif_alloc(sizeof(ERL_NIF_TERM) * (len > 0 ? (size_t)len : 1));
    bool ok = true;

    if (items == NULL) {
        PyErr_NoMemory();
        return false;
    }
    for (Py_ssize_t i = 0; i < len && ok; i++) {
        PyObject *item;
        /* A list may shrink while we convert (a __repr__ can mutate it). */
        if (i >= PySequence_Fast_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion");
            ok = false;
            break;
        }
        if (!still_wanted((size_t)i + 1)) {
            ok = false;
            break;
        }
        /* Our own reference: converting it may run Python code (__index__, __iter__,
         * items(), __repr__) that removes it from the list, which would free it under us. */
        item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        ok = to_term(env, item, &items[i], depth + 1);
        Py_DECREF(item);
    }
    if (ok) {
        *out = PyTuple_Check(seq) ? enif_make_tuple_from_array(env, items, (unsigned)len)
                                  : enif_make_list_from_array(env, items, (unsigned)len);
    }
    enif_free(items);
    return ok;
}

/* Any other iterable (a generator, a set, an iterator): its items converted one by one as
 * they come, never materialised as a Python list first, at most CONV_MAX_ITER_ITEMS of
 * them, stopping if the request is cancelled. An endless generator so ends in an
 * OverflowError (or the caller's timeout) with its memory bounded. */
static bool
iterable_to_list(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out, int depth)
{
    PyObject *iter = PyObject_GetIter(obj);
    ERL_NIF_TERM *items = NULL;
    size_t count = 0, capacity = 0;
    bool ok = iter != NULL;

    while (ok) {
        PyObject *item = PyIter_Next(iter);
        if (item == NULL) {
            ok = !PyErr_Occurred();
            break;
        }
        if (count == CONV_MAX_ITER_ITEMS) {
            Py_DECREF(item);
            PyErr_Format(PyExc_OverflowError,
                         "iterable too long to convert (more than %d items); return a list, "
                         "or fewer items",
                         CONV_MAX_ITER_ITEMS);
            ok = false;
            break;
        }
        if (count == capacity) {
            size_t grown = capacity == 0 ? 64 : capacity * 2;
            ERL_NIF_TERM *bigger = enif_realloc(items, grown * sizeof(ERL_NIF_TERM));
            if (bigger == NULL) {
                Py_DECREF(item);
                PyErr_NoMemory();
                ok = false;
                break;
            }
            items = bigger;
            capacity = grown;
        }
        ok = to_term(env, item, &items[count], depth + 1) && still_wanted(count + 1);
        Py_DECREF(item);
        count++;
    }
    if (ok) {
        *out = enif_make_list_from_array(env, items, (unsigned)count);
    }
    if (items != NULL) {
        enif_free(items);
    }
    Py_XDECREF(iter);
    return ok;
}

static bool
dict_to_map(ErlNifEnv *env, PyObject *dict, ERL_NIF_TERM *out, int depth)
{
    /* A snapshot of the pairs, each held: converting a key or value may run Python code
     * that changes the dict. */
    PyObject *pairs = PyDict_Items(dict);
    Py_ssize_t i = 0;
    Py_ssize_t len = pairs == NULL ? 0 : PyList_GET_SIZE(pairs);
    ERL_NIF_TERM *keys = enif_alloc(sizeof(ERL_NIF_TERM) * (len > 0 ? (size_t)len : 1));
    ERL_NIF_TERM *values = enif_alloc(sizeof(ERL_NIF_TERM) * (len > 0 ? (size_t)len : 1));
    bool ok = pairs != NULL && keys != NULL && values != NULL;

    if (!ok && pairs != NULL) {
        PyErr_NoMemory();
    }
    for (; ok && i < len; i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        ok = still_wanted((size_t)i + 1) &&
             to_term(env, PyTuple_GET_ITEM(pair, 0), &keys[i], depth + 1) &&
             to_term(env, PyTuple_GET_ITEM(pair, 1), &values[i], depth + 1);
    }
    Py_XDECREF(pairs);
    if (ok && !enif_make_map_from_arrays(env, keys, values, (size_t)i, out)) {
        PyErr_SetString(PyExc_ValueError,
                        "two dict keys convert to the same Erlang term (e.g. 1 and True)");
        ok = false;
    }
    if (keys != NULL) {
        enif_free(keys);
    }
    if (values != NULL) {
        enif_free(values);
    }
    return ok;
}

/* Anything else: {py_object, TypeName, Repr}. Never fails on a bad __repr__. */
static bool
object_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    const char *type_name = Py_TYPE(obj)->tp_name;
    PyObject *repr = PyObject_Repr(obj);
    ERL_NIF_TERM repr_term;

    if (repr == NULL) {
        PyErr_Clear();
        repr_term = make_binary(env, "<repr failed>", 13);
    } else if (!str_to_term(env, repr, &repr_term)) {
        PyErr_Clear();
        repr_term = make_binary(env, "<repr failed>", 13);
    }
    Py_XDECREF(repr);
    *out = enif_make_tuple3(env, ATOMS.py_object, make_binary(env, type_name, strlen(type_name)),
                            repr_term);
    return true;
}

static bool
to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out, int depth)
{
    if (depth > CONV_MAX_DEPTH) {
        PyErr_Format(PyExc_RecursionError, "object nested deeper than %d levels",
                     CONV_MAX_DEPTH);
        return false;
    }
    if (obj == Py_None) {
        *out = ATOMS.none;
        return true;
    }
    if (obj == Py_True) {
        *out = ATOMS.true_;
        return true;
    }
    if (obj == Py_False) {
        *out = ATOMS.false_;
        return true;
    }
    if (PyLong_Check(obj)) {
        return int_to_term(env, obj, out);
    }
    if (PyFloat_Check(obj)) {
        return float_to_term(env, PyFloat_AS_DOUBLE(obj), out);
    }
    if (PyUnicode_Check(obj)) {
        if (PyObject_TypeCheck(obj, (PyTypeObject *)erlmod_atom_type())) {
            return atom_obj_to_term(env, obj, out);
        }
        return str_to_term(env, obj, out);
    }
    if (PyBytes_Check(obj)) {
        return make_binary_term(env, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj), out);
    }
    if (PyByteArray_Check(obj)) {
        return make_binary_term(env, PyByteArray_AS_STRING(obj),
                                (size_t)PyByteArray_GET_SIZE(obj), out);
    }
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        return sequence_to_list(env, obj, out, depth);
    }
    if (PyDict_Check(obj)) {
        return dict_to_map(env, obj, out, depth);
    }
    if (erlmod_unwrap_term(env, obj, out)) {
        return true;
    }
    if (PyMemoryView_Check(obj)) {
        Py_buffer view;
        bool ok;
        if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) {
            return false;
        }
        ok = make_binary_term(env, view.buf, (size_t)view.len, out);
        PyBuffer_Release(&view);
        return ok;
    }
    if (PyAnySet_Check(obj)) {
        return iterable_to_list(env, obj, out, depth);
    }
    /* numpy scalars and other number types, through the protocols. */
    if (PyIndex_Check(obj)) {
        PyObject *index = PyNumber_Index(obj);
        if (index != NULL) {
            bool ok = int_to_term(env, index, out);
            Py_DECREF(index);
            return ok;
        }
        /* numpy arrays have __index__ but only size-1 ones are integers. */
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            return false;
        }
        PyErr_Clear();
    }
    if (PyMapping_Check(obj) && PyObject_HasAttrString(obj, "items")) {
        PyObject *dict = PyDict_New();
        bool ok = dict != NULL && PyDict_Update(dict, obj) == 0 &&
                  dict_to_map(env, dict, out, depth);
        Py_XDECREF(dict);
        return ok;
    }
    if (Py_TYPE(obj)->tp_iter != NULL || PySequence_Check(obj)) {
        return iterable_to_list(env, obj, out, depth);
    }
    if (Py_TYPE(obj)->tp_as_number != NULL && Py_TYPE(obj)->tp_as_number->nb_float != NULL) {
        double value = PyFloat_AsDouble(obj);
        if (value == -1.0 && PyErr_Occurred()) {
            return false;
        }
        return float_to_term(env, value, out);
    }
    return object_to_term(env, obj, out);
}

bool
conv_to_term(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    return to_term(env, obj, out, 0);
}
