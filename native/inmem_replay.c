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
 * removes key if present; if the LSN is >= `want` (and `collect`), add the
 * LSN under the head key[head_at:head_at + head_len] of each key it wrote
 * (once per distinct head: the history index groups records by run id).
 *
 * The first frame that fails ANY check is left untouched: the function stops
 * at its offset and returns, and the Python reference continues from there,
 * raising the exact FrameError the pure path raises. So this function never
 * composes an error message, and a damaged frame costs nothing extra here.
 *
 * Returns (stop, next_lsn, last_version, skipped, count, offsets, groups) where
 * `offsets` is a bytes object of native uint32 frame offsets (array('I')) and
 * `groups` {head: LSNs as packed native uint64 bytes} (empty unless collecting);
 * a `buf` that is not bytes is left wholly to the reference (stop = pos),
 * or NULL with a Python exception set (MemoryError, a bad argument).
 */

#include <Python.h>

/* the cold table (native/inmem_cold.c, later in this compilation unit) */
typedef struct InmemCold InmemCold;
static int inmem_is_cold(PyObject *o);
static int inmem_cold_backs(InmemCold *t, PyObject *map);
static int inmem_cold_queue(InmemCold *t, const uint8_t *k, uint32_t klen, const uint8_t *v, uint32_t vlen,
                            uint64_t version);
static int inmem_cold_flush(InmemCold *t);
static void inmem_cold_drop_pending(InmemCold *t);
static void inmem_cold_forget(PyObject *cold, PyObject *key);

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

/* put_version(map, fresh, limit, cold, key, version, value): the commit path's store put
   (inmem.store.UnifiedStore.put_version, METH_FASTCALL): map[key] = make_entry(version, value)
   through the dict part of the store's SortedMap, and, if key was not in map's dict part, the key
   taken out of the map's cold table `cold` (None: it has none; native/inmem_cold.c) after the dict is
   updated, fresh.append(key) (SortedMap's fresh keys, sorted in when order is next needed) and, once
   fresh holds `limit` keys, map.sort_fresh(). If the append fails (no memory) the key is taken out of
   the dict again (it is no longer in the cold table either: the put failed, as the Python path's
   would, but the key is gone too; only a MemoryError does this), so the map never holds a key that
   is neither sorted nor fresh. */
static PyObject *inmem_put_version(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *entry;
    Py_ssize_t limit;
    int had, rc;
    if (nargs != 7 || !PyDict_Check(args[0]) || !PyList_Check(args[1]) || !PyLong_CheckExact(args[2]) ||
        !(args[3] == Py_None || inmem_is_cold(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "put_version(map, fresh, limit, cold, key, version, value)");
        return NULL;
    }
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    had = PyDict_Contains(args[0], args[4]);
    if (had < 0)
        return NULL;
    entry = inmem_make_entry(self, args + 5, 2);
    if (entry == NULL)
        return NULL;
    rc = PyDict_SetItem(args[0], args[4], entry);
    Py_DECREF(entry);
    if (rc != 0)
        return NULL;
    if (had)
        Py_RETURN_NONE;
    if (args[3] != Py_None)
        inmem_cold_forget(args[3], args[4]);
    if (PyList_Append(args[1], args[4]) != 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyDict_DelItem(args[0], args[4]) != 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (PyList_Size(args[1]) >= limit)
        return PyObject_CallMethod(args[0], "sort_fresh", NULL);
    Py_RETURN_NONE;
}

/*
 * Grouping of record LSNs by key head (for the history index: the run id, key[1:17]), done while
 * replaying so that no per-record list or int object is built: each distinct head (a bytes object)
 * gets a slot, each slot a growable array of uint64 LSNs; a small direct-mapped cache of recent
 * heads saves a bytes object and a dict lookup per key. A record's LSN is added to a slot once
 * however many of its keys share the head (LSNs rise, so "last added == this LSN" detects it).
 */

#define INMEM_HEAD_CACHE 256

typedef struct {
    uint64_t *v;
    size_t n, cap;
} inmem_lsns;

typedef struct {
    Py_ssize_t at, len;  /* head = key[at:at + len], clipped as Python slicing does */
    PyObject *index;     /* head -> slot (int) */
    PyObject *order;     /* heads, in first-seen order; slot i is order[i] */
    inmem_lsns *bufs;    /* slot -> its LSNs */
    size_t nbufs, capbufs;
    PyObject *cache_head[INMEM_HEAD_CACHE]; /* owned */
    Py_ssize_t cache_slot[INMEM_HEAD_CACHE];
} inmem_groups;

static int inmem_groups_init(inmem_groups *g, Py_ssize_t at, Py_ssize_t len)
{
    memset(g, 0, sizeof(*g));
    g->at = at;
    g->len = len;
    g->index = PyDict_New();
    g->order = PyList_New(0);
    return g->index != NULL && g->order != NULL ? 0 : -1;
}

static void inmem_groups_free(inmem_groups *g)
{
    size_t b;
    int i;
    for (i = 0; i < INMEM_HEAD_CACHE; i++)
        Py_XDECREF(g->cache_head[i]);
    for (b = 0; b < g->nbufs; b++)
        PyMem_Free(g->bufs[b].v);
    PyMem_Free(g->bufs);
    Py_XDECREF(g->index);
    Py_XDECREF(g->order);
    memset(g, 0, sizeof(*g));
}

/* Make room for one more element in the array *items of *cap elements of `size` bytes, holding n
   (doubling, `first` elements at first); 0, or -1 with MemoryError set (the array unchanged). */
static int inmem_reserve(void **items, size_t *cap, size_t n, size_t size, size_t first)
{
    size_t ncap;
    void *grown;
    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : first;
    grown = PyMem_Realloc(*items, ncap * size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = grown;
    *cap = ncap;
    return 0;
}

/* the slot of `head` (created on first sight), or -1 with an exception set */
static Py_ssize_t inmem_groups_slot(inmem_groups *g, PyObject *head)
{
    PyObject *found = PyDict_GetItemWithError(g->index, head), *num;
    if (found != NULL)
        return PyLong_AsSsize_t(found);
    if (PyErr_Occurred())
        return -1;
    if (inmem_reserve((void **)&g->bufs, &g->capbufs, g->nbufs, sizeof(inmem_lsns), 16) != 0)
        return -1;
    num = PyLong_FromSize_t(g->nbufs);
    if (num == NULL)
        return -1;
    if (PyDict_SetItem(g->index, head, num) != 0 || PyList_Append(g->order, head) != 0) {
        Py_DECREF(num);
        return -1;
    }
    Py_DECREF(num);
    g->bufs[g->nbufs].v = NULL;
    g->bufs[g->nbufs].n = g->bufs[g->nbufs].cap = 0;
    return (Py_ssize_t)g->nbufs++;
}

/* the slot of the head of the key k[0:klen] (created on first sight; recent heads from the cache), or -1
   with an exception set */
static Py_ssize_t inmem_groups_find(inmem_groups *g, const uint8_t *k, Py_ssize_t klen)
{
    Py_ssize_t start = g->at < klen ? g->at : klen;
    Py_ssize_t hlen = klen - start < g->len ? klen - start : g->len;
    const uint8_t *h = k + start;
    unsigned c = hlen > 0 ? (unsigned)(h[hlen - 1] ^ (h[(hlen - 1) / 2] << 1) ^ (unsigned)hlen) % INMEM_HEAD_CACHE : 0;
    PyObject *cached = g->cache_head[c], *head;
    Py_ssize_t slot;
    if (cached != NULL && PyBytes_Size(cached) == hlen && memcmp(PyBytes_AsString(cached), h, (size_t)hlen) == 0)
        return g->cache_slot[c];
    head = PyBytes_FromStringAndSize((const char *)h, hlen);
    slot = head ? inmem_groups_slot(g, head) : -1;
    if (slot < 0) {
        Py_XDECREF(head);
        return -1;
    }
    Py_XDECREF(g->cache_head[c]);
    g->cache_head[c] = head; /* owns the reference */
    g->cache_slot[c] = slot;
    return slot;
}

/* add `lsn` under the head of the key k[0:klen]; 0, or -1 with an exception set */
static int inmem_groups_add(inmem_groups *g, const uint8_t *k, Py_ssize_t klen, uint64_t lsn)
{
    Py_ssize_t slot = inmem_groups_find(g, k, klen);
    inmem_lsns *l;
    if (slot < 0)
        return -1;
    l = &g->bufs[slot];
    if (l->n > 0 && l->v[l->n - 1] == lsn)
        return 0; /* another key of this record with the same head */
    if (inmem_reserve((void **)&l->v, &l->cap, l->n, sizeof(uint64_t), 64) != 0)
        return -1;
    l->v[l->n++] = lsn;
    return 0;
}

/* {head: LSNs packed as native uint64 bytes}, in first-seen order; NULL with an exception set */
static PyObject *inmem_groups_result(inmem_groups *g)
{
    PyObject *out = PyDict_New();
    size_t b;
    if (out == NULL)
        return NULL;
    for (b = 0; b < g->nbufs; b++) {
        PyObject *packed = PyBytes_FromStringAndSize((const char *)g->bufs[b].v,
                                                     (Py_ssize_t)(g->bufs[b].n * sizeof(uint64_t)));
        int rc = packed ? PyDict_SetItem(out, PyList_GetItem(g->order, (Py_ssize_t)b), packed) : -1;
        Py_XDECREF(packed);
        if (rc != 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

PyObject *inmem_py_replay(PyObject *bufobj, Py_ssize_t pos, unsigned long long expected,
                          unsigned long long skip_below, unsigned long long last_version,
                          unsigned long long want, int collect, PyObject *state, Py_ssize_t head_at,
                          Py_ssize_t head_len, PyObject *cold_obj)
{
    char *data;
    Py_ssize_t size;
    const uint8_t *buf;
    size_t len, cap = 0, nofs = 0;
    uint32_t *ofs = NULL;
    unsigned long long skipped = 0, count = 0;
    PyObject *result = NULL, *ofs_bytes = NULL, *groups_out = NULL;
    inmem_groups groups;
    InmemCold *cold = NULL;

    if (!PyDict_Check(state) || head_at < 0 || head_len < 0) {
        PyErr_SetString(PyExc_TypeError, "inmem_py_replay: state must be a dict and the head bounds >= 0");
        return NULL;
    }
    if (cold_obj != NULL && cold_obj != Py_None) {
        if (!inmem_is_cold(cold_obj) || !inmem_cold_backs((InmemCold *)cold_obj, state)) {
            PyErr_SetString(PyExc_TypeError, "inmem_py_replay: cold must be None or the cold table of state");
            return NULL;
        }
        cold = (InmemCold *)cold_obj;
    }
    /* bytes only (the limited API cffi compiles against has no buffer protocol before 3.11);
       anything else: stop at once and let the reference do it */
    if (!PyBytes_Check(bufobj))
        return Py_BuildValue("(nKKKKy#N)", pos, expected, last_version, skipped, count, "", (Py_ssize_t)0,
                             PyDict_New());
    if (PyBytes_AsStringAndSize(bufobj, &data, &size) != 0)
        return NULL;
    if (inmem_groups_init(&groups, head_at, head_len) != 0) {
        inmem_groups_free(&groups);
        return NULL;
    }
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
                int keep = collect && lsn >= want;
                p = pstart + 20;
                for (i = 0; i < n_ops; i++) {
                    uint8_t op = buf[p];
                    uint32_t klen = inmem_load32(buf + p + 1);
                    PyObject *key, *value = NULL;
                    int rc;
                    p += 5;
                    if (cold != NULL) { /* into the cold table: no Python object per write */
                        const uint8_t *k = buf + p;
                        if (keep && inmem_groups_add(&groups, k, (Py_ssize_t)klen, lsn) != 0)
                            goto fail;
                        p += klen;
                        if (op == 1) {
                            uint32_t vlen = inmem_load32(buf + p);
                            rc = inmem_cold_queue(cold, k, klen, buf + p + 4, vlen, version);
                            p += 4 + (size_t)vlen;
                        } else {
                            rc = inmem_cold_queue(cold, k, klen, NULL, 0, version);
                        }
                        if (rc != 0)
                            goto fail;
                        continue;
                    }
                    key = PyBytes_FromStringAndSize((const char *)buf + p, klen);
                    if (key == NULL) goto fail;
                    if (keep && inmem_groups_add(&groups, buf + p, (Py_ssize_t)klen, lsn) != 0) {
                        Py_DECREF(key);
                        goto fail;
                    }
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
                    Py_DECREF(key);
                    Py_XDECREF(value);
                    if (rc != 0)
                        goto fail;
                }
            }
            last_version = version;
            count++;
        }
        if (inmem_reserve((void **)&ofs, &cap, nofs, sizeof(uint32_t), 4096) != 0)
            goto fail;
        ofs[nofs++] = (uint32_t)pos;
        expected++;
        pos = (Py_ssize_t)end;
    }

done:
    if (cold != NULL && inmem_cold_flush(cold) != 0)
        goto fail;
    ofs_bytes = PyBytes_FromStringAndSize((const char *)ofs, (Py_ssize_t)(nofs * sizeof(uint32_t)));
    groups_out = ofs_bytes != NULL ? inmem_groups_result(&groups) : NULL;
    if (groups_out != NULL)
        result = Py_BuildValue("(nKKKKNN)", pos, expected, last_version, skipped, count, ofs_bytes, groups_out);
    else
        Py_XDECREF(ofs_bytes);
fail:
    if (result == NULL && cold != NULL)
        inmem_cold_drop_pending(cold); /* they point into buf */
    PyMem_Free(ofs);
    inmem_groups_free(&groups);
    return result;
}

/*
 * One snapshot chunk (engine/snapshot.py) into the state dict: the payload is the CBOR array
 * [keys: [bstr], versions: [uint], values: [bstr]], each of `count` items. Only that exact shape
 * (definite lengths, nothing after it, every version >= 1, every key and value under 4 GiB) is
 * taken here: the whole payload is checked first, then state[key] = (version, value) for each
 * entry, as compact entries as in inmem_py_replay, or, given `cold` (the cold table of state,
 * native/inmem_cold.c), each entry into the table with no Python object made.
 * Returns the int count inserted, or -1 (nothing touched, no error) for any other payload: the
 * caller then decodes it with cbor2, whose checks raise or accept exactly as on the pure path.
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
        if (want == 0 && arg == 0)
            return -1; /* version 0: no commit wrote it (the reference refuses it) */
        if (want == 2) {
            if (arg > (uint64_t)(end - *p) || arg > 0xFFFFFFFFu)
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
    InmemCold *cold = NULL;
    (void)self;
    if (nargs < 3 || nargs > 4 || !PyBytes_CheckExact(args[0]) || !PyLong_Check(args[1]) || !PyDict_Check(args[2]))
        return PyLong_FromLong(-1);
    if (nargs == 4 && args[3] != Py_None) {
        if (!inmem_is_cold(args[3]) || !inmem_cold_backs((InmemCold *)args[3], args[2])) {
            PyErr_SetString(PyExc_TypeError, "load_snapshot_chunk: cold must be None or the cold table of state");
            return NULL;
        }
        cold = (InmemCold *)args[3];
    }
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
        if (cold != NULL) {
            rc = inmem_cold_queue(cold, kp, (uint32_t)klen, vp, (uint32_t)vlen, version);
            kp += klen;
            vp += vlen;
            if (rc != 0)
                return NULL;
            continue;
        }
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
    if (cold != NULL && inmem_cold_flush(cold) != 0)
        return NULL;
    return PyLong_FromSsize_t(count);
}

/*
 * The run table's question at open, without the sorted key index (engine/store.py,
 * SortedMap.key_heads while the index is deferred): the set of distinct key[1:1 + width] over the
 * dict's keys whose first byte is `lead`, in one walk of the dict (PyDict_Next: its entries in
 * insertion order), through the replay grouping's head table (inmem_groups_find: its cache of
 * recent heads saves building a bytes object per key). Returns a set, or None (nothing else done)
 * for arguments of another shape or a key that is not bytes, so the caller builds the index and
 * bisects instead.
 */

static PyObject *inmem_key_heads(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *key, *value, *heads = NULL;
    Py_ssize_t pos = 0, width;
    long lead;
    inmem_groups g;
    (void)self;
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyLong_Check(args[1]) || !PyLong_Check(args[2]))
        Py_RETURN_NONE;
    lead = PyLong_AsLong(args[1]);
    width = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (lead < 0 || lead > 255 || width < 0)
        Py_RETURN_NONE;
    if (inmem_groups_init(&g, 1, width) != 0)
        goto done;
    while (PyDict_Next(args[0], &pos, &key, &value)) {
        const uint8_t *k;
        if (!PyBytes_CheckExact(key)) {
            inmem_groups_free(&g);
            Py_RETURN_NONE;
        }
        k = (const uint8_t *)PyBytes_AsString(key);
        if (PyBytes_Size(key) >= 1 && k[0] == (uint8_t)lead && inmem_groups_find(&g, k, PyBytes_Size(key)) < 0)
            goto done;
    }
    heads = PySet_New(g.order); /* the distinct heads */
done:
    inmem_groups_free(&g);
    return heads;
}
