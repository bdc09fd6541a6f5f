/*
 * inmem native commit-frame encoding: encode_put_frame and encode_commit_frame of
 * engine/wal/format.py in C, returning the frame as one bytes object.
 *
 * Appended after inmem_native.c and inmem_replay.c by native/build.py. The two
 * encoders are CPython functions (METH_FASTCALL) listed in inmem_py_methods();
 * engine/wal/fast.py turns each entry into a builtin function object once, at
 * install, so a call costs what a builtin call costs (no cffi or ctypes per
 * call). Byte-identical to the Python encoders (tests/test_native_encode.py):
 *
 *   frame   = hcrc u32 | length u32 | lsn u64 | pcrc u32 | type u8 = 1 | 3 zero bytes | payload
 *   payload = version u64 | ts_us i64 | count u32 | per op: op u8 | klen u32 | key [| vlen u32 | value]
 *
 * Anything the fast path does not handle exactly as struct.pack would — an int
 * out of range, a key or value that is not exactly bytes, writes that are not
 * a list of 2-tuples, a length over u32 — is handed to the Python reference
 * (set by inmem_py_set_fallbacks), so errors and odd inputs behave identically.
 */

static PyObject *inmem_py_put_fallback = NULL;
static PyObject *inmem_py_commit_fallback = NULL;

static inline void inmem_store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void inmem_store64(uint8_t *p, uint64_t v)
{
    inmem_store32(p, (uint32_t)v);
    inmem_store32(p + 4, (uint32_t)(v >> 32));
}

static PyObject *inmem_fallback(PyObject *fn, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *tuple, *result;
    Py_ssize_t i;
    if (fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "inmem native encoder: no Python fallback installed");
        return NULL;
    }
    tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(tuple, i, args[i]);
    }
    result = PyObject_CallObject(fn, tuple);
    Py_DECREF(tuple);
    return result;
}

/* lsn, version: u64; ts_us: i64. Return 0, or -1 (no error set) if any is out of range or not an int. */
static int inmem_frame_ints(PyObject *const *args, uint64_t *lsn, uint64_t *version, int64_t *ts_us)
{
    if (!PyLong_Check(args[0]) || !PyLong_Check(args[1]) || !PyLong_Check(args[2]))
        return -1;
    *lsn = PyLong_AsUnsignedLongLong(args[0]);
    if (PyErr_Occurred()) { PyErr_Clear(); return -1; }
    *version = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) { PyErr_Clear(); return -1; }
    *ts_us = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) { PyErr_Clear(); return -1; }
    return 0;
}

/* Fill the 24-byte header at out for a payload of `length` bytes at out + 24. */
static void inmem_frame_header(uint8_t *out, uint64_t lsn, size_t length)
{
    inmem_store32(out + 4, (uint32_t)length);
    inmem_store64(out + 8, lsn);
    inmem_store32(out + 16, inmem_mask(inmem_crc32c(out + 24, length, 0)));
    out[20] = 1; /* RECORD_COMMIT */
    out[21] = out[22] = out[23] = 0;
    inmem_store32(out, inmem_mask(inmem_crc32c(out + 4, 20, 0)));
}

static PyObject *inmem_encode_put_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t lsn, version;
    int64_t ts_us;
    Py_ssize_t klen, vlen;
    size_t plen;
    PyObject *result;
    uint8_t *out;
    (void)self;
    if (nargs != 5 || inmem_frame_ints(args, &lsn, &version, &ts_us) != 0 || !PyBytes_CheckExact(args[3])
        || !PyBytes_CheckExact(args[4]))
        return inmem_fallback(inmem_py_put_fallback, args, nargs);
    klen = PyBytes_Size(args[3]);
    vlen = PyBytes_Size(args[4]);
    if ((uint64_t)klen > 0xFFFFFFFFu || (uint64_t)vlen > 0xFFFFFFFFu)
        return inmem_fallback(inmem_py_put_fallback, args, nargs);
    plen = 25 + (size_t)klen + 4 + (size_t)vlen;
    if (plen > 0xFFFFFFFFu)
        return inmem_fallback(inmem_py_put_fallback, args, nargs);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(24 + plen));
    if (result == NULL)
        return NULL;
    out = (uint8_t *)PyBytes_AsString(result);
    {
        uint8_t *p = out + 24;
        inmem_store64(p, version);
        inmem_store64(p + 8, (uint64_t)ts_us);
        inmem_store32(p + 16, 1);
        p[20] = 1; /* OP_PUT */
        inmem_store32(p + 21, (uint32_t)klen);
        memcpy(p + 25, PyBytes_AsString(args[3]), (size_t)klen);
        p += 25 + klen;
        inmem_store32(p, (uint32_t)vlen);
        memcpy(p + 4, PyBytes_AsString(args[4]), (size_t)vlen);
    }
    inmem_frame_header(out, lsn, plen);
    return result;
}

static PyObject *inmem_encode_commit_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t lsn, version;
    int64_t ts_us;
    Py_ssize_t n, i;
    size_t plen = 20;
    PyObject *writes, *result;
    uint8_t *out, *p;
    (void)self;
    if (nargs != 4 || inmem_frame_ints(args, &lsn, &version, &ts_us) != 0 || !PyList_CheckExact(args[3]))
        return inmem_fallback(inmem_py_commit_fallback, args, nargs);
    writes = args[3];
    n = PyList_Size(writes);
    if ((uint64_t)n > 0xFFFFFFFFu)
        return inmem_fallback(inmem_py_commit_fallback, args, nargs);
    for (i = 0; i < n; i++) {
        PyObject *w = PyList_GetItem(writes, i), *k, *v;
        if (!PyTuple_CheckExact(w) || PyTuple_Size(w) != 2)
            return inmem_fallback(inmem_py_commit_fallback, args, nargs);
        k = PyTuple_GetItem(w, 0);
        v = PyTuple_GetItem(w, 1);
        if (!PyBytes_CheckExact(k) || (v != Py_None && !PyBytes_CheckExact(v))
            || (uint64_t)PyBytes_Size(k) > 0xFFFFFFFFu
            || (v != Py_None && (uint64_t)PyBytes_Size(v) > 0xFFFFFFFFu))
            return inmem_fallback(inmem_py_commit_fallback, args, nargs);
        plen += 5 + (size_t)PyBytes_Size(k) + (v == Py_None ? 0 : 4 + (size_t)PyBytes_Size(v));
    }
    if (plen > 0xFFFFFFFFu)
        return inmem_fallback(inmem_py_commit_fallback, args, nargs);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(24 + plen));
    if (result == NULL)
        return NULL;
    out = (uint8_t *)PyBytes_AsString(result);
    p = out + 24;
    inmem_store64(p, version);
    inmem_store64(p + 8, (uint64_t)ts_us);
    inmem_store32(p + 16, (uint32_t)n);
    p += 20;
    for (i = 0; i < n; i++) {
        PyObject *w = PyList_GetItem(writes, i);
        PyObject *k = PyTuple_GetItem(w, 0), *v = PyTuple_GetItem(w, 1);
        Py_ssize_t kl = PyBytes_Size(k);
        p[0] = v == Py_None ? 2 : 1; /* OP_DELETE : OP_PUT */
        inmem_store32(p + 1, (uint32_t)kl);
        memcpy(p + 5, PyBytes_AsString(k), (size_t)kl);
        p += 5 + kl;
        if (v != Py_None) {
            Py_ssize_t vl = PyBytes_Size(v);
            inmem_store32(p, (uint32_t)vl);
            memcpy(p + 4, PyBytes_AsString(v), (size_t)vl);
            p += 4 + vl;
        }
    }
    inmem_frame_header(out, lsn, plen);
    return result;
}

#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080 /* stable since 3.7; hidden by the limited-API headers cffi compiles with */
#endif

static PyMethodDef inmem_py_method_table[] = {
    {"encode_put_frame", (PyCFunction)(void (*)(void))inmem_encode_put_frame, METH_FASTCALL,
     "Native encode_put_frame(lsn, version, ts_us, key, value) -> bytes (byte-identical)."},
    {"encode_commit_frame", (PyCFunction)(void (*)(void))inmem_encode_commit_frame, METH_FASTCALL,
     "Native encode_commit_frame(lsn, version, ts_us, writes) -> bytes (byte-identical)."},
    {"load_snapshot_chunk", (PyCFunction)(void (*)(void))inmem_load_snapshot_chunk, METH_FASTCALL,
     "load_snapshot_chunk(payload, count, state) -> entries inserted, or -1: not the plain shape (use cbor2)."},
    {"make_entry", (PyCFunction)(void (*)(void))inmem_make_entry, METH_FASTCALL,
     "make_entry(version, value) -> a compact entry reading as (version, value) (or that tuple)."},
    {"key_heads", (PyCFunction)(void (*)(void))inmem_key_heads, METH_FASTCALL,
     "key_heads(map, lead, width) -> set of key[1:1 + width] over keys starting with byte lead, or None."},
    {"put_version", (PyCFunction)(void (*)(void))inmem_put_version, METH_FASTCALL,
     "put_version(map, fresh, limit, cold, key, version, value): map[key] = make_entry(version, value); fresh keys."},
    {"new_cold_table", (PyCFunction)(void (*)(void))inmem_new_cold_table, METH_FASTCALL,
     "new_cold_table(map, seed) -> an empty cold table backing the dict map (inmem.store)."},
    {"encode_value", (PyCFunction)(void (*)(void))inmem_encode_value, METH_FASTCALL,
     "encode_value(value, limit) -> cbor2.dumps(value) for plain values, or NotImplemented (use Python)."},
    {"decode_value", (PyCFunction)(void (*)(void))inmem_decode_value, METH_O,
     "decode_value(data) -> cbor2.loads(data) for inmem's common CBOR subset, or NotImplemented (use cbor2)."},
    {NULL, NULL, 0, NULL},
};

/* The method table (for PyCFunction_NewEx) and its length. */
void *inmem_py_methods(int *count)
{
    *count = (int)(sizeof(inmem_py_method_table) / sizeof(inmem_py_method_table[0])) - 1; /* less the sentinel */
    return inmem_py_method_table;
}

/* Install the Python reference encoders the native ones defer to (new references kept). */
void inmem_py_set_fallbacks(PyObject *put, PyObject *commit)
{
    Py_XINCREF(put);
    Py_XINCREF(commit);
    Py_XDECREF(inmem_py_put_fallback);
    Py_XDECREF(inmem_py_commit_fallback);
    inmem_py_put_fallback = put;
    inmem_py_commit_fallback = commit;
}
