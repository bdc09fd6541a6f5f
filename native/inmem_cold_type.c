/*
 * inmem native cold table, its Python side: the ColdTable type (engine/store.py's SortedMap holds one
 * while recovered records are cold) and the builtin that makes one (new_cold_table, listed in
 * inmem_encode.c's method table).
 *
 * Appended right after inmem_cold.c by native/build.py: the table itself, its layout and its
 * invariants are described there. Every method runs with the GIL held and runs no Python code
 * between its lookups, so each is atomic for other threads; the ones that answer for the whole map
 * (get, getitem, has, total) read the dict part first, then the table.
 */

static void inmem_cold_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    InmemCold *t = (InmemCold *)self;
    Py_XDECREF(t->mapref);
    inmem_cold_free_all(t);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* get(key) -> the map's entry for key (the dict part's, else a new one from the table), or None */
static PyObject *inmem_cold_get(PyObject *self, PyObject *key)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *found, *map = inmem_cold_dict(t);
    inmem_cold_rec *rec;
    if (map == NULL)
        return NULL;
    found = PyDict_GetItemWithError(map, key);
    if (found != NULL) {
        Py_INCREF(found);
        return found;
    }
    if (PyErr_Occurred())
        return NULL;
    rec = inmem_cold_lookup(t, key, NULL);
    if (rec == NULL)
        Py_RETURN_NONE;
    return inmem_cold_entry(rec);
}

/* getitem(key) -> as get, but KeyError if the map lacks key */
static PyObject *inmem_cold_getitem(PyObject *self, PyObject *key)
{
    PyObject *entry = inmem_cold_get(self, key);
    if (entry == Py_None) {
        Py_DECREF(entry);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return entry;
}

/* has(key) -> whether the map holds key */
static PyObject *inmem_cold_has(PyObject *self, PyObject *key)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *map = inmem_cold_dict(t);
    int in;
    if (map == NULL)
        return NULL;
    in = PyDict_Contains(map, key);
    if (in < 0)
        return NULL;
    return PyBool_FromLong(in || inmem_cold_lookup(t, key, NULL) != NULL);
}

/* total() -> keys in the map: the dict part's and the table's */
static PyObject *inmem_cold_total(PyObject *self, PyObject *unused)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *map = inmem_cold_dict(t);
    (void)unused;
    if (map == NULL)
        return NULL;
    return PyLong_FromSize_t((size_t)PyDict_Size(map) + t->live);
}

/* pop(key) -> the table's entry for key, taken out of the table; None if it is not there */
static PyObject *inmem_cold_pop(PyObject *self, PyObject *key)
{
    InmemCold *t = (InmemCold *)self;
    size_t slot;
    inmem_cold_rec *rec = inmem_cold_lookup(t, key, &slot);
    PyObject *entry;
    if (rec == NULL)
        Py_RETURN_NONE;
    entry = inmem_cold_entry(rec);
    if (entry == NULL)
        return NULL;
    inmem_cold_unslot(t, slot);
    return entry;
}

/* Drop bytes key `key` from the table if there; 1 if it was (no error possible). */
static int inmem_cold_drop(InmemCold *t, PyObject *key)
{
    size_t slot;
    if (inmem_cold_lookup(t, key, &slot) == NULL)
        return 0;
    inmem_cold_unslot(t, slot);
    return 1;
}

/* discard(key) -> whether the table held key (it does not any more) */
static PyObject *inmem_cold_discard(PyObject *self, PyObject *key)
{
    return PyBool_FromLong(inmem_cold_drop((InmemCold *)self, key));
}

/* For put_version: drop key from the table if there. */
static void inmem_cold_forget(PyObject *cold, PyObject *key)
{
    (void)inmem_cold_drop((InmemCold *)cold, key);
}

/* load(key, version, value): a bulk load's put (the Python replay's): the map's key set to
   (version, value), in the table (taken out of the dict part if there) */
static PyObject *inmem_cold_load(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    InmemCold *t = (InmemCold *)self;
    char *k, *v;
    Py_ssize_t klen, vlen;
    unsigned long long version;
    inmem_cold_op op;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "load(key: bytes, version: int, value: bytes)");
        return NULL;
    }
    if (inmem_cold_dict(t) == NULL || inmem_cold_flush(t) != 0)
        return NULL;
    version = PyLong_AsUnsignedLongLong(args[1]);
    if (version == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (version == 0) {
        PyErr_SetString(PyExc_ValueError, "load: version must be >= 1");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(args[0], &k, &klen) != 0 || PyBytes_AsStringAndSize(args[2], &v, &vlen) != 0)
        return NULL;
    if ((size_t)klen > 0xFFFFFFFFu || (size_t)vlen > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_OverflowError, "load: key or value over 4 GiB");
        return NULL;
    }
    op.key = (const uint8_t *)k;
    op.klen = (uint32_t)klen;
    op.value = (const uint8_t *)v;
    op.vlen = (uint32_t)vlen;
    op.version = version;
    op.put = 1;
    op.hash = inmem_cold_hash(t->seed, op.key, op.klen);
    if (inmem_cold_apply(t, &op) != 0)
        return NULL;
    Py_RETURN_NONE;
}

/* unload(key): a bulk load's delete: key out of the dict part and the table */
static PyObject *inmem_cold_unload(PyObject *self, PyObject *key)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *map = inmem_cold_dict(t);
    if (map == NULL || inmem_cold_flush(t) != 0)
        return NULL;
    if (PyDict_DelItem(map, key) != 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return NULL;
        PyErr_Clear();
    }
    return inmem_cold_discard(self, key);
}

/* drain(): every record of the table into the dict part, as entries; the table left empty. All or
   nothing: on failure (no memory) the keys put so far are taken out of the dict again. */
static PyObject *inmem_cold_drain(PyObject *self, PyObject *unused)
{
    InmemCold *t = (InmemCold *)self;
    PyObject **keys, *map = inmem_cold_dict(t);
    size_t r, n = 0;
    (void)unused;
    if (map == NULL || inmem_cold_flush(t) != 0)
        return NULL;
    if (t->live == 0)
        Py_RETURN_NONE;
    keys = malloc(t->live * sizeof(PyObject *));
    if (keys == NULL)
        return PyErr_NoMemory();
    for (r = 1; r < t->nrecs; r++) {
        const inmem_cold_rec *rec = &t->recs[r];
        PyObject *key, *entry;
        int rc;
        if (rec->version == 0)
            continue;
        key = PyBytes_FromStringAndSize((const char *)rec->key, rec->klen);
        entry = key != NULL ? inmem_cold_entry(rec) : NULL;
        rc = entry != NULL ? PyDict_SetItem(map, key, entry) : -1;
        Py_XDECREF(entry);
        if (rc != 0) {
            PyObject *type, *value, *tb;
            Py_XDECREF(key);
            PyErr_Fetch(&type, &value, &tb);
            while (n > 0) { /* the keys were in the table, so not in the dict: delete cannot fail */
                n--;
                if (PyDict_DelItem(map, keys[n]) != 0)
                    PyErr_Clear();
                Py_DECREF(keys[n]);
            }
            free(keys);
            PyErr_Restore(type, value, tb);
            return NULL;
        }
        keys[n++] = key;
    }
    while (n > 0)
        Py_DECREF(keys[--n]);
    free(keys);
    inmem_cold_free_all(t);
    Py_RETURN_NONE;
}

/* clear(): the table emptied (the dict part untouched) */
static PyObject *inmem_cold_clear(PyObject *self, PyObject *unused)
{
    InmemCold *t = (InmemCold *)self;
    (void)unused;
    t->npending = 0;
    inmem_cold_free_all(t);
    Py_RETURN_NONE;
}

/* items() -> [(key, entry)] of the table, in record order (tests, checks) */
static PyObject *inmem_cold_items(PyObject *self, PyObject *unused)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *out = PyList_New(0);
    size_t r;
    (void)unused;
    if (out == NULL)
        return NULL;
    for (r = 1; r < t->nrecs; r++) {
        const inmem_cold_rec *rec = &t->recs[r];
        PyObject *key, *entry, *pair;
        int rc;
        if (rec->version == 0)
            continue;
        key = PyBytes_FromStringAndSize((const char *)rec->key, rec->klen);
        entry = key != NULL ? inmem_cold_entry(rec) : NULL;
        pair = entry != NULL ? PyTuple_Pack(2, key, entry) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(entry);
        rc = pair != NULL ? PyList_Append(out, pair) : -1;
        Py_XDECREF(pair);
        if (rc != 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* key_heads(lead, width) -> set of key[1:1 + width] over the table's keys starting with byte lead */
static PyObject *inmem_cold_key_heads(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    InmemCold *t = (InmemCold *)self;
    PyObject *heads = NULL;
    Py_ssize_t width;
    long lead;
    size_t r;
    inmem_groups g;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "key_heads(lead: int, width: int)");
        return NULL;
    }
    lead = PyLong_AsLong(args[0]);
    width = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (lead < 0 || lead > 255 || width < 0) {
        PyErr_SetString(PyExc_ValueError, "key_heads: lead must be a byte and width >= 0");
        return NULL;
    }
    if (inmem_groups_init(&g, 1, width) != 0)
        goto done;
    for (r = 1; r < t->nrecs; r++) {
        const inmem_cold_rec *rec = &t->recs[r];
        if (rec->version != 0 && rec->klen >= 1 && rec->key[0] == (uint8_t)lead &&
            inmem_groups_find(&g, rec->key, (Py_ssize_t)rec->klen) < 0)
            goto done;
    }
    heads = PySet_New(g.order);
done:
    inmem_groups_free(&g);
    return heads;
}

/* nbytes() -> bytes the table holds: arena chunks, record array, slots */
static PyObject *inmem_cold_nbytes(PyObject *self, PyObject *unused)
{
    InmemCold *t = (InmemCold *)self;
    (void)unused;
    return PyLong_FromSize_t(t->arena_bytes + t->caprecs * sizeof(inmem_cold_rec) +
                             (t->slots != NULL ? (t->mask + 1) * sizeof(inmem_cold_slot) : 0));
}

static Py_ssize_t inmem_cold_len(PyObject *self)
{
    return (Py_ssize_t)((InmemCold *)self)->live;
}

static int inmem_cold_contains(PyObject *self, PyObject *key)
{
    return inmem_cold_lookup((InmemCold *)self, key, NULL) != NULL;
}

static PyMethodDef inmem_cold_methods[] = {
    {"get", (PyCFunction)inmem_cold_get, METH_O, "get(key) -> the map's entry (dict part, else table) or None."},
    {"getitem", (PyCFunction)inmem_cold_getitem, METH_O, "getitem(key) -> as get; KeyError if absent."},
    {"has", (PyCFunction)inmem_cold_has, METH_O, "has(key) -> whether the map (dict part or table) holds key."},
    {"total", (PyCFunction)inmem_cold_total, METH_NOARGS, "total() -> keys in the dict part and the table."},
    {"pop", (PyCFunction)inmem_cold_pop, METH_O, "pop(key) -> the table's entry, taken out, or None."},
    {"discard", (PyCFunction)inmem_cold_discard, METH_O, "discard(key) -> whether the table held key."},
    {"load", (PyCFunction)(void (*)(void))inmem_cold_load, METH_FASTCALL,
     "load(key, version, value): a bulk load's put (into the table, out of the dict part)."},
    {"unload", (PyCFunction)inmem_cold_unload, METH_O, "unload(key): a bulk load's delete (dict part and table)."},
    {"drain", (PyCFunction)inmem_cold_drain, METH_NOARGS, "drain(): every record into the dict part (all or nothing)."},
    {"clear", (PyCFunction)inmem_cold_clear, METH_NOARGS, "clear(): empty the table."},
    {"items", (PyCFunction)inmem_cold_items, METH_NOARGS, "items() -> [(key, entry)] of the table."},
    {"key_heads", (PyCFunction)(void (*)(void))inmem_cold_key_heads, METH_FASTCALL,
     "key_heads(lead, width) -> set of key[1:1 + width] of the table's keys starting with byte lead."},
    {"nbytes", (PyCFunction)inmem_cold_nbytes, METH_NOARGS, "nbytes() -> bytes held (arena, records, slots)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot inmem_cold_slots[] = {
    {Py_tp_dealloc, (void *)inmem_cold_dealloc},
    {Py_sq_length, (void *)inmem_cold_len},
    {Py_sq_contains, (void *)inmem_cold_contains},
    {Py_tp_methods, (void *)inmem_cold_methods},
    {Py_tp_doc, (void *)"The records recovery replayed and nothing has touched since, for one dict (inmem.store)."},
    {0, NULL},
};

static PyType_Spec inmem_cold_spec = {
    "inmem.ColdTable", sizeof(InmemCold), 0, Py_TPFLAGS_DEFAULT, inmem_cold_slots,
};

static int inmem_is_cold(PyObject *o)
{
    return inmem_cold_type != NULL && Py_TYPE(o) == inmem_cold_type;
}

/* Whether cold table `t` backs the dict `map` (the replay writes into a table only for its own map). */
static int inmem_cold_backs(InmemCold *t, PyObject *map)
{
    return t->mapref != NULL && PyWeakref_GetObject(t->mapref) == map;
}

/* new_cold_table(map, seed[, slack]) -> an empty cold table backing the dict `map`, hashing with `seed`,
   compacting once its garbage exceeds its live bytes plus `slack` bytes (default INMEM_COLD_SLACK) */
static PyObject *inmem_new_cold_table(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    InmemCold *t;
    unsigned long long seed;
    size_t slack = INMEM_COLD_SLACK;
    (void)self;
    if (nargs < 2 || nargs > 3 || !PyDict_Check(args[0]) || !PyLong_Check(args[1]) ||
        (nargs == 3 && !PyLong_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "new_cold_table(map: dict, seed: int, slack: int = 16 MiB)");
        return NULL;
    }
    seed = PyLong_AsUnsignedLongLongMask(args[1]);
    if (seed == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (nargs == 3) {
        slack = PyLong_AsSize_t(args[2]);
        if (slack == (size_t)-1 && PyErr_Occurred())
            return NULL;
    }
    if (inmem_cold_type == NULL) {
        inmem_cold_type = (PyTypeObject *)PyType_FromSpec(&inmem_cold_spec);
        if (inmem_cold_type == NULL)
            return NULL;
    }
    t = (InmemCold *)PyType_GenericAlloc(inmem_cold_type, 0);
    if (t == NULL)
        return NULL;
    t->mapref = PyWeakref_NewRef(args[0], NULL);
    if (t->mapref == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    t->seed = (uint64_t)seed;
    t->slack = slack;
    return (PyObject *)t;
}
