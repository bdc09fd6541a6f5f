/*
 * inmem native recovery replay: one WAL segment's valid frames applied to the state dict, in C.
 *
 * Appended to inmem_native.c by native/build.py (same compilation unit, so the
 * frame check and CRC above are shared). Unlike the functions there, this one
 * uses the CPython C API: it builds the bytes keys, bytes values and
 * (version, value) tuples recovery stores, so that recovery does no Python
 * work per record. cffi cannot pass PyObject*, so engine/wal/fast.py calls it
 * through ctypes.PyDLL on this same library (the GIL is held throughout, and
 * a Python error set here is raised there).
 *
 * Contract (engine/wal/reader.py, SegmentScan.replay, is the Python
 * reference): starting at byte `pos` of the segment `buf`, for each frame in
 * order: check it (header checksum before the length is used, payload
 * checksum), check that its LSN is `expected` (then expected + 1, ...); a frame
 * with LSN < `skip_below` is only counted; otherwise decode its commit record
 * completely (every op inside the payload, op 1 put or 2 delete, ops ending
 * exactly at the payload's end), check its version is above the previous one,
 * and only then apply it: a put sets state[key] = (version, value), a delete
 * removes key if present; if the LSN is >= `want` (and `collect`), append to
 * `keys` the key (one-op record) or the list of (key, value-or-None) pairs.
 *
 * The first frame that fails ANY check is left untouched: the function stops
 * at its offset and returns, and the Python reference continues from there,
 * raising the exact FrameError the pure path raises. So this function never
 * composes an error message, and a damaged frame costs nothing extra here.
 *
 * Returns (stop, next_lsn, last_version, skipped, count, offsets) where
 * `offsets` is a bytes object of native uint32 frame offsets (array('I')); a `buf` that
 * is not bytes is left wholly to the reference (stop = pos),
 * or NULL with a Python exception set (MemoryError, a bad argument).
 */

#include <Python.h>

/*
 * The compact store entry: what recovery builds for each live key instead of a (version, value)
 * tuple and an int. A tuple of two plus the int it holds take ~96 bytes on the heap (a GC-tracked
 * tuple carries a 16-byte GC header); this object takes 32 (no GC header: it holds one bytes
 * object, so it can be in no reference cycle), and it is one allocation instead of two.
 *
 * It reads as the tuple it replaces: len 2, entry[0] the version (an int), entry[1] the value
 * bytes, unpacking, and ==, hash and repr as the tuple (version, value); pickling gives that
 * tuple. The engine only reads entries this way (SPEC.md keeps the tuple as the contract);
 * commits store them too, through make_entry below (the pure path stores tuples).
 */

typedef struct {
    PyObject_HEAD
    unsigned long long version;
    PyObject *value; /* bytes, owned */
} InmemEntry;

static PyTypeObject *inmem_entry_type = NULL; /* NULL: not created (or creation failed): tuples */

static PyObject *inmem_entry_as_tuple(PyObject *self)
{
    InmemEntry *e = (InmemEntry *)self;
    PyObject *ver = PyLong_FromUnsignedLongLong(e->version), *t;
    if (ver == NULL)
        return NULL;
    t = PyTuple_Pack(2, ver, e->value);
    Py_DECREF(ver);
    return t;
}

static PyObject *inmem_entry_tuple_of(PyObject *o)
{
    if (inmem_entry_type != NULL && Py_TYPE(o) == inmem_entry_type)
        return inmem_entry_as_tuple(o);
    Py_INCREF(o);
    return o;
}

static void inmem_entry_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(((InmemEntry *)self)->value);
    PyObject_Free(self);
    Py_DECREF(tp); /* instances of a heap type hold a reference to it */
}

static Py_ssize_t inmem_entry_len(PyObject *self)
{
    (void)self;
    return 2;
}

static PyObject *inmem_entry_item(PyObject *self, Py_ssize_t i)
{
    InmemEntry *e = (InmemEntry *)self;
    if (i == 0)
        return PyLong_FromUnsignedLongLong(e->version);
    if (i == 1) {
        Py_INCREF(e->value);
        return e->value;
    }
    PyErr_SetString(PyExc_IndexError, "entry index out of range");
    return NULL;
}

static PyObject *inmem_entry_richcompare(PyObject *a, PyObject *b, int op)
{
    PyObject *ta = inmem_entry_tuple_of(a), *tb = NULL, *r = NULL;
    if (ta != NULL && (tb = inmem_entry_tuple_of(b)) != NULL)
        r = PyObject_RichCompare(ta, tb, op);
    Py_XDECREF(ta);
    Py_XDECREF(tb);
    return r;
}

static Py_hash_t inmem_entry_hash(PyObject *self)
{
    PyObject *t = inmem_entry_as_tuple(self);
    Py_hash_t h;
    if (t == NULL)
        return -1;
    h = PyObject_Hash(t);
    Py_DECREF(t);
    return h;
}

static PyObject *inmem_entry_repr(PyObject *self)
{
    PyObject *t = inmem_entry_as_tuple(self), *r;
    if (t == NULL)
        return NULL;
    r = PyObject_Repr(t);
    Py_DECREF(t);
    return r;
}

static PyObject *inmem_entry_reduce(PyObject *self, PyObject *unused)
{
    PyObject *t = inmem_entry_as_tuple(self), *r;
    (void)unused;
    if (t == NULL)
        return NULL;
    r = Py_BuildValue("(O(N))", (PyObject *)&PyTuple_Type, t);
    return r;
}

static PyMethodDef inmem_entry_methods[] = {
    {"__reduce__", (PyCFunction)inmem_entry_reduce, METH_NOARGS, "Pickle as the tuple (version, value)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot inmem_entry_slots[] = {
    {Py_tp_dealloc, (void *)inmem_entry_dealloc},
    {Py_sq_length, (void *)inmem_entry_len},
    {Py_sq_item, (void *)inmem_entry_item},
    {Py_tp_richcompare, (void *)inmem_entry_richcompare},
    {Py_tp_hash, (void *)inmem_entry_hash},
    {Py_tp_repr, (void *)inmem_entry_repr},
    {Py_tp_methods, (void *)inmem_entry_methods},
    {Py_tp_doc, (void *)"A store entry (version, value) as recovery builds it: reads as that tuple."},
    {0, NULL},
};

static PyType_Spec inmem_entry_spec = {
    "inmem.Entry", sizeof(InmemEntry), 0, Py_TPFLAGS_DEFAULT, inmem_entry_slots,
};

/* The entry type (a new reference), created on first use; NULL with an exception if it cannot be. */
PyObject *inmem_py_entry_type(void)
{
    if (inmem_entry_type == NULL) {
        inmem_entry_type = (PyTypeObject *)PyType_FromSpec(&inmem_entry_spec);
        if (inmem_entry_type == NULL)
            return NULL;
    }
    Py_INCREF(inmem_entry_type);
    return (PyObject *)inmem_entry_type;
}

/* A new entry holding `value` (a new reference is taken); a tuple if the type is not created. */
static PyObject *inmem_entry_new(unsigned long long version, PyObject *value)
{
    InmemEntry *e;
    if (inmem_entry_type == NULL) {
        PyObject *ver = PyLong_FromUnsignedLongLong(version), *t;
        if (ver == NULL)
            return NULL;
        t = PyTuple_Pack(2, ver, value);
        Py_DECREF(ver);
        if (t != NULL)
            PyObject_GC_UnTrack(t);
        return t;
    }
    e = (InmemEntry *)PyObject_Malloc(sizeof(InmemEntry));
    if (e == NULL)
        return PyErr_NoMemory();
    PyObject_Init((PyObject *)e, inmem_entry_type);
    e->version = version;
    Py_INCREF(value);
    e->value = value;
    return (PyObject *)e;
}

/* make_entry(version, value) for the commit path (METH_FASTCALL, listed in inmem_encode.c's table):
   an entry for an int version in 0..2^64-1 and a bytes value; for anything else the tuple
   (version, value), exactly what the Python code would have stored. */
static PyObject *inmem_make_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long version;
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "make_entry(version, value) takes 2 arguments");
        return NULL;
    }
    if (PyLong_CheckExact(args[0]) && PyBytes_CheckExact(args[1])) {
        version = PyLong_AsUnsignedLongLong(args[0]);
        if (!(version == (unsigned long long)-1 && PyErr_Occurred()))
            return inmem_entry_new(version, args[1]);
        PyErr_Clear();
    }
    return PyTuple_Pack(2, args[0], args[1]);
}

/* put_version(map, fresh, limit, key, version, value): the commit path's store put
   (inmem.store.UnifiedStore.put_version, METH_FASTCALL): map[key] = make_entry(version, value)
   through the dict part of the store's SortedMap, and, if key was not in map, fresh.append(key)
   (SortedMap's fresh keys, sorted in when order is next needed) and, once fresh holds `limit` keys,
   map.sort_fresh(). The dict is updated first; if the append then fails (no memory) the key is
   taken out again, so the map never holds a key that is neither sorted nor fresh. */
static PyObject *inmem_put_version(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *entry;
    Py_ssize_t limit;
    int had, rc;
    if (nargs != 6 || !PyDict_Check(args[0]) || !PyList_Check(args[1]) || !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "put_version(map, fresh, limit, key, version, value)");
        return NULL;
    }
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    had = PyDict_Contains(args[0], args[3]);
    if (had < 0)
        return NULL;
    entry = inmem_make_entry(self, args + 4, 2);
    if (entry == NULL)
        return NULL;
    rc = PyDict_SetItem(args[0], args[3], entry);
    Py_DECREF(entry);
    if (rc != 0)
        return NULL;
    if (had)
        Py_RETURN_NONE;
    if (PyList_Append(args[1], args[3]) != 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyDict_DelItem(args[0], args[3]) != 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (PyList_Size(args[1]) >= limit)
        return PyObject_CallMethod(args[0], "sort_fresh", NULL);
    Py_RETURN_NONE;
}

PyObject *inmem_py_replay(PyObject *bufobj, Py_ssize_t pos, unsigned long long expected,
                          unsigned long long skip_below, unsigned long long last_version,
                          unsigned long long want, int collect, PyObject *state, PyObject *keys)
{
    char *data;
    Py_ssize_t size;
    const uint8_t *buf;
    size_t len, cap = 0, nofs = 0;
    uint32_t *ofs = NULL;
    unsigned long long skipped = 0, count = 0;
    PyObject *result = NULL, *ofs_bytes = NULL;

    if (!PyDict_Check(state) || !PyList_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "inmem_py_replay: state must be a dict and keys a list");
        return NULL;
    }
    /* bytes only (the limited API cffi compiles against has no buffer protocol before 3.11);
       anything else: stop at once and let the reference do it */
    if (!PyBytes_Check(bufobj))
        return Py_BuildValue("(nKKKKy#)", pos, expected, last_version, skipped, count, "", (Py_ssize_t)0);
    if (PyBytes_AsStringAndSize(bufobj, &data, &size) != 0)
        return NULL;
    buf = (const uint8_t *)data;
    len = (size_t)size;
    if (pos < 0 || (size_t)pos > len || len > 0xFFFFFFFFu)
        goto done; /* out of range, or offsets would not fit array('I'): the reference does it all */

    while ((size_t)pos < len) {
        uint64_t lsn, version;
        uint32_t rtype, n_ops, i;
        size_t pstart, end, p;
        int ok;

        if (inmem_check_frame(buf, len, (size_t)pos, &lsn, &rtype, &pstart, &end) != INMEM_OK)
            break;
        if (lsn != expected)
            break;
        if (lsn < skip_below) {
            skipped++;
        } else {
            /* validate the whole record before touching the state */
            if (end - pstart < 20)
                break;
            version = inmem_load64(buf + pstart);
            n_ops = inmem_load32(buf + pstart + 16);
            p = pstart + 20;
            ok = 1;
            for (i = 0; i < n_ops; i++) {
                uint8_t op;
                uint32_t klen;
                if (end - p < 5) { ok = 0; break; }
                op = buf[p];
                klen = inmem_load32(buf + p + 1);
                p += 5;
                if ((size_t)klen > end - p) { ok = 0; break; }
                p += klen;
                if (op == 1) {
                    uint32_t vlen;
                    if (end - p < 4) { ok = 0; break; }
                    vlen = inmem_load32(buf + p);
                    p += 4;
                    if ((size_t)vlen > end - p) { ok = 0; break; }
                    p += vlen;
                } else if (op != 2) {
                    ok = 0;
                    break;
                }
            }
            if (!ok || p != end || version <= last_version)
                break;
            /* apply */
            {
                PyObject *writes = NULL;
                int keep = collect && lsn >= want;
                if (keep && n_ops != 1) {
                    writes = PyList_New(0);
                    if (writes == NULL) goto fail;
                }
                p = pstart + 20;
                for (i = 0; i < n_ops; i++) {
                    uint8_t op = buf[p];
                    uint32_t klen = inmem_load32(buf + p + 1);
                    PyObject *key, *value = NULL;
                    int rc;
                    p += 5;
                    key = PyBytes_FromStringAndSize((const char *)buf + p, klen);
                    if (key == NULL) { Py_XDECREF(writes); goto fail; }
                    p += klen;
                    if (op == 1) {
                        uint32_t vlen = inmem_load32(buf + p);
                        PyObject *entry;
                        p += 4;
                        value = PyBytes_FromStringAndSize((const char *)buf + p, vlen);
                        p += vlen;
                        /* a compact entry (or an untracked tuple: no cycle is possible, and
                           a million tracked ones would make every collection walk them all) */
                        entry = value ? inmem_entry_new(version, value) : NULL;
                        rc = entry ? PyDict_SetItem(state, key, entry) : -1;
                        Py_XDECREF(entry);
                    } else {
                        rc = PyDict_DelItem(state, key);
                        if (rc != 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
                            PyErr_Clear();
                            rc = 0;
                        }
                    }
                    if (rc == 0 && keep) {
                        if (writes == NULL) {
                            rc = PyList_Append(keys, key);
                        } else {
                            PyObject *pair = PyTuple_Pack(2, key, value ? value : Py_None);
                            rc = pair ? PyList_Append(writes, pair) : -1;
                            Py_XDECREF(pair);
                        }
                    }
                    Py_DECREF(key);
                    Py_XDECREF(value);
                    if (rc != 0) { Py_XDECREF(writes); goto fail; }
                }
                if (writes != NULL) {
                    int rc = PyList_Append(keys, writes);
                    Py_DECREF(writes);
                    if (rc != 0)
                        goto fail;
                }
            }
            last_version = version;
            count++;
        }
        if (nofs == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint32_t *grown = (uint32_t *)PyMem_Realloc(ofs, ncap * sizeof(uint32_t));
            if (grown == NULL) { PyErr_NoMemory(); goto fail; }
            ofs = grown;
            cap = ncap;
        }
        ofs[nofs++] = (uint32_t)pos;
        expected++;
        pos = (Py_ssize_t)end;
    }

done:
    ofs_bytes = PyBytes_FromStringAndSize((const char *)ofs, (Py_ssize_t)(nofs * sizeof(uint32_t)));
    if (ofs_bytes != NULL)
        result = Py_BuildValue("(nKKKKN)", pos, expected, last_version, skipped, count, ofs_bytes);
fail:
    PyMem_Free(ofs);
    return result;
}

/*
 * One snapshot chunk (engine/snapshot.py) into the state dict: the payload is the CBOR array
 * [keys: [bstr], versions: [uint], values: [bstr]], each of `count` items. Only that exact shape
 * (definite lengths, nothing after it) is taken here: the whole payload is checked first, then
 * state[key] = (version, value) for each entry, as compact entries as in inmem_py_replay.
 * Returns the int count inserted, or -1 (nothing touched, no error) for any other payload: the
 * caller then decodes it with cbor2 as before, which raises or accepts exactly as it always did.
 */

/* Read a CBOR item head at *p: major type and argument. 0 on success, -1 if malformed or indefinite. */
static int inmem_cbor_head(const uint8_t **p, const uint8_t *end, int *major, uint64_t *arg)
{
    const uint8_t *q = *p;
    uint8_t ai;
    if (q >= end)
        return -1;
    *major = q[0] >> 5;
    ai = q[0] & 0x1f;
    q++;
    if (ai < 24) {
        *arg = ai;
    } else if (ai == 24) {
        if (end - q < 1) return -1;
        *arg = q[0];
        q += 1;
    } else if (ai == 25) {
        if (end - q < 2) return -1;
        *arg = ((uint64_t)q[0] << 8) | q[1];
        q += 2;
    } else if (ai == 26) {
        if (end - q < 4) return -1;
        *arg = ((uint64_t)q[0] << 24) | ((uint64_t)q[1] << 16) | ((uint64_t)q[2] << 8) | q[3];
        q += 4;
    } else if (ai == 27) {
        if (end - q < 8) return -1;
        *arg = ((uint64_t)q[0] << 56) | ((uint64_t)q[1] << 48) | ((uint64_t)q[2] << 40) | ((uint64_t)q[3] << 32)
             | ((uint64_t)q[4] << 24) | ((uint64_t)q[5] << 16) | ((uint64_t)q[6] << 8) | q[7];
        q += 8;
    } else {
        return -1; /* reserved or indefinite length */
    }
    *p = q;
    return 0;
}

/* Walk `count` items of major type `want` (2: bstr, 0: uint) from *p; -1 if any is not. */
static int inmem_cbor_array(const uint8_t **p, const uint8_t *end, uint64_t count, int want)
{
    int major;
    uint64_t arg, i;
    if (inmem_cbor_head(p, end, &major, &arg) != 0 || major != 4 || arg != count)
        return -1;
    for (i = 0; i < count; i++) {
        if (inmem_cbor_head(p, end, &major, &arg) != 0 || major != want)
            return -1;
        if (want == 2) {
            if (arg > (uint64_t)(end - *p))
                return -1;
            *p += arg;
        }
    }
    return 0;
}

static PyObject *inmem_load_snapshot_chunk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const uint8_t *buf, *end, *p, *kp, *vp, *ip;
    Py_ssize_t size, count;
    uint64_t i, arg;
    int major;
    PyObject *state;
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyLong_Check(args[1]) || !PyDict_Check(args[2]))
        return PyLong_FromLong(-1);
    count = PyLong_AsSsize_t(args[1]);
    if (count < 0) {
        PyErr_Clear();
        return PyLong_FromLong(-1);
    }
    state = args[2];
    buf = (const uint8_t *)PyBytes_AsString(args[0]);
    size = PyBytes_Size(args[0]);
    end = buf + size;
    p = buf;
    if (inmem_cbor_head(&p, end, &major, &arg) != 0 || major != 4 || arg != 3)
        return PyLong_FromLong(-1);
    kp = p;
    if (inmem_cbor_array(&p, end, (uint64_t)count, 2) != 0)
        return PyLong_FromLong(-1);
    ip = p;
    if (inmem_cbor_array(&p, end, (uint64_t)count, 0) != 0)
        return PyLong_FromLong(-1);
    vp = p;
    if (inmem_cbor_array(&p, end, (uint64_t)count, 2) != 0 || p != end)
        return PyLong_FromLong(-1);
    /* checked: now insert, walking the three arrays side by side */
    inmem_cbor_head(&kp, end, &major, &arg);
    inmem_cbor_head(&ip, end, &major, &arg);
    inmem_cbor_head(&vp, end, &major, &arg);
    for (i = 0; i < (uint64_t)count; i++) {
        uint64_t klen, version, vlen;
        PyObject *key, *value, *entry;
        int rc;
        inmem_cbor_head(&kp, end, &major, &klen);
        inmem_cbor_head(&ip, end, &major, &version);
        inmem_cbor_head(&vp, end, &major, &vlen);
        key = PyBytes_FromStringAndSize((const char *)kp, (Py_ssize_t)klen);
        value = PyBytes_FromStringAndSize((const char *)vp, (Py_ssize_t)vlen);
        kp += klen;
        vp += vlen;
        entry = value ? inmem_entry_new(version, value) : NULL;
        rc = (key && entry) ? PyDict_SetItem(state, key, entry) : -1;
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(entry);
        if (rc != 0)
            return NULL;
    }
    return PyLong_FromSsize_t(count);
}

/*
 * The history collector's grouping (engine/history/collect.py, HistoryCollector.replayed): for each
 * item of `keys` (the i-th holds LSN first_lsn + i), the run ids it touched (bytes 1..16 of each key)
 * get that LSN appended: {run id: [lsn, ...]}. A bytes item is one key; a list item is a commit's
 * writes [(key, value), ...], whose run ids are taken as a set, in the order Python's
 * {key[1:17] for key, _ in writes} iterates. Returns the new dict, or None (nothing else done) if an
 * item is neither, so the caller runs the Python loop instead. A small cache of recent run ids saves
 * building a 16-byte object per key.
 */

#define INMEM_RID_CACHE 256

static PyObject *inmem_rid_of(PyObject *key)
{
    Py_ssize_t n = PyBytes_Size(key);
    const char *s = PyBytes_AsString(key);
    Py_ssize_t end = n < 17 ? n : 17;
    if (end <= 1)
        return PyBytes_FromStringAndSize("", 0);
    return PyBytes_FromStringAndSize(s + 1, end - 1);
}

static int inmem_runs_append(PyObject *runs, PyObject *rid, PyObject *lsn, PyObject **list_out)
{
    PyObject *list = PyDict_GetItemWithError(runs, rid);
    if (list == NULL) {
        if (PyErr_Occurred())
            return -1;
        list = PyList_New(0);
        if (list == NULL)
            return -1;
        if (PyDict_SetItem(runs, rid, list) != 0) {
            Py_DECREF(list);
            return -1;
        }
        Py_DECREF(list); /* the dict holds it */
    }
    if (list_out != NULL)
        *list_out = list;
    return PyList_Append(list, lsn);
}

static PyObject *inmem_group_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *keys, *runs = NULL, *cache_rid[INMEM_RID_CACHE], *cache_list[INMEM_RID_CACHE];
    Py_ssize_t n, i;
    unsigned long long lsn;
    (void)self;
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyLong_Check(args[1]))
        Py_RETURN_NONE;
    keys = args[0];
    lsn = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    n = PyList_Size(keys);
    for (i = 0; i < n; i++) { /* check every item's shape first: the fallback must start from nothing */
        PyObject *item = PyList_GetItem(keys, i);
        if (!PyBytes_CheckExact(item)) {
            Py_ssize_t j, m;
            if (!PyList_CheckExact(item))
                Py_RETURN_NONE;
            m = PyList_Size(item);
            for (j = 0; j < m; j++) {
                PyObject *w = PyList_GetItem(item, j);
                if (!PyTuple_CheckExact(w) || PyTuple_Size(w) != 2 || !PyBytes_CheckExact(PyTuple_GetItem(w, 0)))
                    Py_RETURN_NONE;
            }
        }
    }
    memset(cache_rid, 0, sizeof(cache_rid));
    memset(cache_list, 0, sizeof(cache_list));
    runs = PyDict_New();
    if (runs == NULL)
        return NULL;
    for (i = 0; i < n; i++, lsn++) {
        PyObject *item = PyList_GetItem(keys, i);
        PyObject *pylsn = PyLong_FromUnsignedLongLong(lsn);
        int rc = 0;
        if (pylsn == NULL)
            goto fail;
        if (PyBytes_CheckExact(item)) {
            Py_ssize_t klen = PyBytes_Size(item);
            const uint8_t *k = (const uint8_t *)PyBytes_AsString(item);
            Py_ssize_t rlen = klen < 17 ? (klen > 1 ? klen - 1 : 0) : 16;
            unsigned slot = rlen == 16 ? (unsigned)(k[9] ^ (k[13] << 1) ^ k[16]) % INMEM_RID_CACHE : 0;
            PyObject *crid = cache_rid[slot];
            if (crid != NULL && PyBytes_Size(crid) == rlen
                && memcmp(PyBytes_AsString(crid), k + (rlen ? 1 : 0), (size_t)rlen) == 0) {
                rc = PyList_Append(cache_list[slot], pylsn);
            } else {
                PyObject *rid = inmem_rid_of(item), *list = NULL;
                rc = rid ? inmem_runs_append(runs, rid, pylsn, &list) : -1;
                if (rc == 0) {
                    Py_XDECREF(cache_rid[slot]);
                    cache_rid[slot] = rid; /* owns the reference; the list is owned by `runs` */
                    cache_list[slot] = list;
                } else {
                    Py_XDECREF(rid);
                }
            }
        } else {
            PyObject *set = PySet_New(NULL), *it, *rid;
            Py_ssize_t j, m = PyList_Size(item);
            rc = set ? 0 : -1;
            for (j = 0; rc == 0 && j < m; j++) {
                PyObject *r = inmem_rid_of(PyTuple_GetItem(PyList_GetItem(item, j), 0));
                rc = r ? PySet_Add(set, r) : -1;
                Py_XDECREF(r);
            }
            it = rc == 0 ? PyObject_GetIter(set) : NULL;
            if (rc == 0 && it == NULL)
                rc = -1;
            while (rc == 0 && (rid = PyIter_Next(it)) != NULL) {
                rc = inmem_runs_append(runs, rid, pylsn, NULL);
                Py_DECREF(rid);
            }
            if (rc == 0 && PyErr_Occurred())
                rc = -1;
            Py_XDECREF(it);
            Py_XDECREF(set);
        }
        Py_DECREF(pylsn);
        if (rc != 0)
            goto fail;
    }
    for (i = 0; i < INMEM_RID_CACHE; i++)
        Py_XDECREF(cache_rid[i]);
    return runs;
fail:
    for (i = 0; i < INMEM_RID_CACHE; i++)
        Py_XDECREF(cache_rid[i]);
    Py_XDECREF(runs);
    return NULL;
}
