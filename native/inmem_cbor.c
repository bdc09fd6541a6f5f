/*
 * inmem native value decoding: the common subset of CBOR (RFC 8949) that inmem.codec stores, decoded
 * straight from the bytes, as cbor2.loads decodes it.
 *
 * Appended to inmem_native.c by native/build.py, after inmem_replay.c (whose CBOR head reader,
 * inmem_cbor_head, it shares) and before inmem_encode.c (whose method table lists decode_value).
 * Uses the CPython API, like inmem_replay.c.
 *
 * Why: every read (kv.get, kv.scan, the run table, replays) decodes a stored value, and cbor2.loads
 * spends more time setting up its decoder (a BytesIO and a decoder object per call) than decoding a
 * ~100-byte agent-state dict. This decodes such a value in one pass over the buffer.
 *
 * Contract: decode_value(data) returns exactly what cbor2.loads(data) returns (same types, equal
 * values; maps with duplicate keys keep the last, as cbor2 does; bytes after the first item are
 * ignored, as cbor2 does) for the subset below, and NotImplemented for ANY other input, which the
 * caller (inmem.codec.decode_value) then hands to cbor2.loads unchanged. So cbor2 stays the reference
 * and decides every error: this function never rejects input, it only declines it. Taken:
 *
 *   major 0, 1   integers (negative ones down to -2**63; below: declined)
 *   major 2, 3   definite-length byte and text strings (text: valid UTF-8, else declined)
 *   major 4      definite-length arrays -> list
 *   major 5      definite-length maps -> dict, keys of the scalar kinds above, false/true/null or floats
 *                (an array or map as a key is declined: cbor2 turns those into tuple / FrozenDict)
 *   major 7      false, true, null; half, single and double floats (a NaN: declined)
 *
 * Declined: tags (datetimes, decimals, sets, big integers, shared values...), indefinite lengths,
 * undefined and other simple values, a break outside an indefinite item, reserved additional
 * information, truncated input, nesting deeper than INMEM_CBOR_MAX_DEPTH, input that is not exactly
 * bytes. tests/test_native_cbor.py checks the contract against cbor2 (hypothesis, and random bytes).
 */

#include <math.h>
#include <string.h>

#define INMEM_CBOR_MAX_DEPTH 200

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} inmem_cbor_in;

/* Result of one item: 0 decoded (*out is a new reference), 1 declined, -1 Python error set. */
static int inmem_cbor_item(inmem_cbor_in *in, PyObject **out, int depth, int as_key);

/* IEEE 754 half (binary16) to double; 1 (declined) for a NaN. */
static int inmem_cbor_half(uint16_t h, double *out)
{
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp((double)mant, -24);
    else if (exp != 31)
        v = ldexp((double)(mant + 1024), exp - 25);
    else if (mant == 0)
        v = HUGE_VAL;
    else
        return 1;
    *out = (h & 0x8000) ? -v : v;
    return 0;
}

static int inmem_cbor_item(inmem_cbor_in *in, PyObject **out, int depth, int as_key)
{
    int major, info, rc;
    uint64_t arg;
    size_t avail;

    if (depth > INMEM_CBOR_MAX_DEPTH || in->p >= in->end)
        return 1;
    info = in->p[0] & 31; /* major 7 needs it: false/true/null, or which float */
    if (inmem_cbor_head(&in->p, in->end, &major, &arg) != 0) /* inmem_replay.c's head reader */
        return 1; /* reserved, indefinite length (or a break), truncated */
    avail = (size_t)(in->end - in->p);
    switch (major) {
    case 0:
        *out = PyLong_FromUnsignedLongLong((unsigned long long)arg);
        return *out ? 0 : -1;
    case 1:
        if (arg > (uint64_t)INT64_MAX)
            return 1;
        *out = PyLong_FromLongLong(-1 - (long long)arg);
        return *out ? 0 : -1;
    case 2:
        if (arg > avail)
            return 1;
        *out = PyBytes_FromStringAndSize((const char *)in->p, (Py_ssize_t)arg);
        if (*out == NULL)
            return -1;
        in->p += arg;
        return 0;
    case 3:
        if (arg > avail)
            return 1;
        *out = PyUnicode_DecodeUTF8((const char *)in->p, (Py_ssize_t)arg, "strict");
        if (*out == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return 1; /* cbor2 decides what invalid UTF-8 gives */
            }
            return -1;
        }
        in->p += arg;
        return 0;
    case 4: {
        PyObject *list;
        if (as_key || arg > avail) /* every item takes at least one byte */
            return 1;
        list = PyList_New((Py_ssize_t)arg);
        if (list == NULL)
            return -1;
        for (uint64_t i = 0; i < arg; i++) {
            PyObject *item;
            rc = inmem_cbor_item(in, &item, depth + 1, 0);
            if (rc != 0) {
                Py_DECREF(list);
                return rc;
            }
            PyList_SetItem(list, (Py_ssize_t)i, item); /* steals item; the list is new and sized */
        }
        *out = list;
        return 0;
    }
    case 5: {
        PyObject *dict;
        if (as_key || arg > avail / 2) /* every pair takes at least two bytes */
            return 1;
        dict = PyDict_New();
        if (dict == NULL)
            return -1;
        for (uint64_t i = 0; i < arg; i++) {
            PyObject *key, *value;
            rc = inmem_cbor_item(in, &key, depth + 1, 1);
            if (rc != 0) {
                Py_DECREF(dict);
                return rc;
            }
            rc = inmem_cbor_item(in, &value, depth + 1, 0);
            if (rc != 0) {
                Py_DECREF(key);
                Py_DECREF(dict);
                return rc;
            }
            rc = PyDict_SetItem(dict, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc != 0) {
                Py_DECREF(dict);
                return -1;
            }
        }
        *out = dict;
        return 0;
    }
    case 7: {
        double d;
        switch (info) {
        case 20:
            *out = Py_False;
            Py_INCREF(*out);
            return 0;
        case 21:
            *out = Py_True;
            Py_INCREF(*out);
            return 0;
        case 22:
            *out = Py_None;
            Py_INCREF(*out);
            return 0;
        case 25:
            if (inmem_cbor_half((uint16_t)arg, &d) != 0)
                return 1;
            break;
        case 26: {
            uint32_t bits = (uint32_t)arg;
            float f;
            if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0)
                return 1; /* NaN */
            memcpy(&f, &bits, sizeof f);
            d = (double)f;
            break;
        }
        case 27:
            if ((arg & 0x7ff0000000000000ull) == 0x7ff0000000000000ull && (arg & 0x000fffffffffffffull) != 0)
                return 1; /* NaN: cbor2 decides its bits */
            memcpy(&d, &arg, sizeof d);
            break;
        default:
            return 1; /* undefined, other simple values */
        }
        *out = PyFloat_FromDouble(d);
        return *out ? 0 : -1;
    }
    default:
        return 1; /* major 6: tags */
    }
}

/* decode_value(data) -> the value, or NotImplemented (declined: use cbor2.loads). METH_O. */
static PyObject *inmem_decode_value(PyObject *self, PyObject *data)
{
    char *buf;
    Py_ssize_t size;
    inmem_cbor_in in;
    PyObject *out = NULL;
    int rc;
    (void)self;
    if (!PyBytes_CheckExact(data) || PyBytes_AsStringAndSize(data, &buf, &size) != 0) {
        PyErr_Clear();
        Py_INCREF(Py_NotImplemented);
        return Py_NotImplemented;
    }
    in.p = (const uint8_t *)buf;
    in.end = in.p + size;
    rc = inmem_cbor_item(&in, &out, 0, 0);
    if (rc == 0)
        return out;
    if (rc < 0)
        return NULL;
    Py_INCREF(Py_NotImplemented);
    return Py_NotImplemented;
}

/*
 * encode_value(value) -> cbor2.dumps(value) for the plain values inmem.codec stores most, or NotImplemented.
 *
 * Contract: for a value built only of exact None, bool, int (-2**63 .. 2**64-1), float (not NaN),
 * str (encodable as UTF-8), bytes, list and dict (keys of the scalar kinds), nested at most
 * INMEM_CBOR_ENCODE_MAX_DEPTH containers deep and encoding to at most `limit` bytes, return the
 * bytes cbor2.dumps(value) returns (default options: minimal heads, definite lengths, dict items in
 * iteration order, floats as doubles but infinities as halves). For anything else (subclasses,
 * tuples, sets, tagged types, NaN, bigger ints, lone surrogates, deeper or larger values) return
 * NotImplemented, and inmem.codec.encode_value checks and encodes it in Python, raising its errors.
 * Everything taken is a plain value, so what inmem.codec promises of plain values (they decode
 * back) holds unchanged.
 *
 * Two passes: the first checks and sizes the value, the second writes into a bytes object of
 * exactly that size. Only C API calls that run no Python code happen in between (exact types
 * only), so the value cannot change between the passes (the GIL is held throughout).
 */

/* Exported by every CPython 3 (full API since 3.3); the limited-API headers cffi compiles with
   declare it only from 3.10 on. */
PyAPI_FUNC(const char *) PyUnicode_AsUTF8AndSize(PyObject *unicode, Py_ssize_t *size);

#define INMEM_CBOR_ENCODE_MAX_DEPTH 100 /* below inmem.codec.MAX_DEPTH (128): declining early is always safe */

static size_t inmem_cbor_head_size(uint64_t arg)
{
    return arg < 24 ? 1 : arg <= 0xff ? 2 : arg <= 0xffff ? 3 : arg <= 0xffffffffull ? 5 : 9;
}

static uint8_t *inmem_cbor_put_head(uint8_t *p, int major, uint64_t arg)
{
    uint8_t m = (uint8_t)(major << 5);
    int n;
    if (arg < 24) {
        *p++ = m | (uint8_t)arg;
        return p;
    }
    n = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffffull ? 4 : 8;
    *p++ = m | (uint8_t)(n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27);
    for (int i = n - 1; i >= 0; i--)
        *p++ = (uint8_t)(arg >> (8 * i));
    return p;
}

/* An int's CBOR major type (0 or 1) and argument; 1 (declined) out of range. */
static int inmem_cbor_int(PyObject *o, int *major, uint64_t *arg)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        if (v >= 0) {
            *major = 0;
            *arg = (uint64_t)v;
        } else {
            *major = 1;
            *arg = (uint64_t)(-1 - v);
        }
        return 0;
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        *major = 0;
        *arg = u;
        return 0;
    }
    return 1; /* below -2**63 */
}

/* Pass 1: add the encoded size of `o` to *size; 0 ok, 1 declined. */
static int inmem_cbor_size(PyObject *o, size_t *size, int depth, size_t limit)
{
    if (*size > limit)
        return 1;
    if (o == Py_None || o == Py_True || o == Py_False) {
        *size += 1;
        return 0;
    }
    if (PyUnicode_CheckExact(o)) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(o, &n) == NULL) {
            PyErr_Clear(); /* a lone surrogate: cbor2 and the Python path decide */
            return 1;
        }
        *size += inmem_cbor_head_size((uint64_t)n) + (size_t)n;
        return 0;
    }
    if (PyLong_CheckExact(o)) {
        int major;
        uint64_t arg;
        if (inmem_cbor_int(o, &major, &arg) != 0)
            return 1;
        *size += inmem_cbor_head_size(arg);
        return 0;
    }
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AsDouble(o);
        if (d != d)
            return 1; /* NaN */
        *size += (d == HUGE_VAL || d == -HUGE_VAL) ? 3 : 9;
        return 0;
    }
    if (PyBytes_CheckExact(o)) {
        Py_ssize_t n = PyBytes_Size(o);
        *size += inmem_cbor_head_size((uint64_t)n) + (size_t)n;
        return 0;
    }
    if (depth >= INMEM_CBOR_ENCODE_MAX_DEPTH)
        return 1;
    if (PyList_CheckExact(o)) {
        Py_ssize_t n = PyList_Size(o);
        *size += inmem_cbor_head_size((uint64_t)n);
        for (Py_ssize_t i = 0; i < n; i++)
            if (inmem_cbor_size(PyList_GetItem(o, i), size, depth + 1, limit) != 0)
                return 1;
        return 0;
    }
    if (PyDict_CheckExact(o)) {
        Py_ssize_t pos = 0, n = PyDict_Size(o);
        PyObject *k, *v;
        *size += inmem_cbor_head_size((uint64_t)n);
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (inmem_cbor_size(k, size, depth + 1, limit) != 0 || inmem_cbor_size(v, size, depth + 1, limit) != 0)
                return 1;
        }
        return 0;
    }
    return 1;
}

/* Pass 2: write `o` (checked by pass 1) at p; returns the end. */
static uint8_t *inmem_cbor_write(PyObject *o, uint8_t *p)
{
    if (o == Py_None) {
        *p++ = 0xf6;
        return p;
    }
    if (o == Py_True || o == Py_False) {
        *p++ = o == Py_True ? 0xf5 : 0xf4;
        return p;
    }
    if (PyUnicode_CheckExact(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n); /* cached by pass 1: cannot fail now */
        p = inmem_cbor_put_head(p, 3, (uint64_t)n);
        memcpy(p, s, (size_t)n);
        return p + n;
    }
    if (PyLong_CheckExact(o)) {
        int major;
        uint64_t arg;
        inmem_cbor_int(o, &major, &arg);
        return inmem_cbor_put_head(p, major, arg);
    }
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AsDouble(o);
        uint64_t bits;
        if (d == HUGE_VAL || d == -HUGE_VAL) {
            *p++ = 0xf9;
            *p++ = d > 0 ? 0x7c : 0xfc;
            *p++ = 0x00;
            return p;
        }
        memcpy(&bits, &d, sizeof bits);
        *p++ = 0xfb;
        for (int i = 7; i >= 0; i--)
            *p++ = (uint8_t)(bits >> (8 * i));
        return p;
    }
    if (PyBytes_CheckExact(o)) {
        Py_ssize_t n = PyBytes_Size(o);
        p = inmem_cbor_put_head(p, 2, (uint64_t)n);
        memcpy(p, PyBytes_AsString(o), (size_t)n);
        return p + n;
    }
    if (PyList_CheckExact(o)) {
        Py_ssize_t n = PyList_Size(o);
        p = inmem_cbor_put_head(p, 4, (uint64_t)n);
        for (Py_ssize_t i = 0; i < n; i++)
            p = inmem_cbor_write(PyList_GetItem(o, i), p);
        return p;
    }
    {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        p = inmem_cbor_put_head(p, 5, (uint64_t)PyDict_Size(o));
        while (PyDict_Next(o, &pos, &k, &v)) {
            p = inmem_cbor_write(k, p);
            p = inmem_cbor_write(v, p);
        }
        return p;
    }
}

/* encode_value(value, limit) -> bytes, or NotImplemented (declined). METH_FASTCALL. */
static PyObject *inmem_encode_value(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    size_t size = 0, limit;
    PyObject *out;
    uint8_t *end;
    (void)self;
    if (nargs != 2 || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode_value(value, limit)");
        return NULL;
    }
    limit = (size_t)PyLong_AsSize_t(args[1]);
    if (limit == (size_t)-1 && PyErr_Occurred())
        return NULL;
    if (inmem_cbor_size(args[0], &size, 0, limit) != 0 || size > limit) {
        Py_INCREF(Py_NotImplemented);
        return Py_NotImplemented;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL)
        return NULL;
    end = inmem_cbor_write(args[0], (uint8_t *)PyBytes_AsString(out));
    if ((size_t)(end - (uint8_t *)PyBytes_AsString(out)) != size) { /* cannot happen: the passes agree */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "inmem encode_value: size mismatch");
        return NULL;
    }
    return out;
}
