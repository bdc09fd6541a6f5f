/*
 * inmem native cold table: the records recovery replays, kept in C until something needs them as
 * Python objects (engine/store.py, "Cold table").
 *
 * Appended after inmem_replay.c (and followed by inmem_cold_type.c) by native/build.py (same compilation unit: it builds the compact
 * entries defined there and reuses the head grouping for key_heads); inmem_replay.c's replay and
 * put_version call the functions below through the prototypes at its top.
 *
 * Why: building a million-entry Python dict at open costs ~0.3 s here (a million bytes keys,
 * entries and values, and an insert into a table that outgrows the caches: each insert a cache
 * and TLB miss). This table holds the same records as plain bytes: an arena of key and value
 * copies, a record array, and an open-addressing hash table of 8-byte slots into it (linear
 * probing, at most half full, deletion by backward shift so there are no tombstones). The replay
 * queues each write and prefetches its slot INMEM_COLD_BATCH writes ahead, so the slot misses
 * overlap instead of following one another.
 *
 * Layout, all owned by the table (never shared, never handed out):
 *
 *   slot    = tag u32 (the hash's high 32 bits) | idx u32 (a record index; 0 = empty slot)
 *   record  = key pointer (into the arena: klen key bytes, then vlen value bytes) | hash u64 |
 *             version u64 (0 = dead: deleted or moved out) | klen u32 | vlen u32      (32 bytes)
 *   arena   = chunks of at least INMEM_COLD_CHUNK bytes; a rewrite of a key copies it anew, the old
 *             copy becomes garbage; once garbage (those copies and the dead records) exceeds the live
 *             bytes (records counted) plus a slack of 16 MiB, the table is compacted: live records
 *             copied into one new chunk and a new record array, in record order, and re-slotted.
 *
 * The hash is seeded per table (a seed the caller draws from os.urandom), a 64-bit multiply-xor
 * over 8-byte words with murmur3's finalizer: not a keyed PRF like CPython's SipHash, so a caller
 * who learned the seed could force collisions (probe chains get long: slower, never wrong).
 *
 * Python's view (a ColdTable object, inmem_cold_type.c): the table backs one dict (held by a weak
 * reference: the dict's SortedMap holds the table, so a strong one would make a reference cycle
 * that only the cyclic collector could free), the dict
 * part of a SortedMap, and the two hold disjoint keys; "the map" is their union. Point reads that
 * answer for the map (get, getitem, has, total) look in the dict first, then the table, in one C
 * call (the GIL held throughout, no Python code run), so a lock-free reader never sees a key in
 * neither while a writer moves it from the table to the dict (the writer puts into the dict
 * first, then discards from the table). Methods taking a key find nothing in the table for a key
 * that is not bytes. Not thread-safe for mutation by itself: the database's commit lock orders
 * writers, as for the rest of the store.
 */

#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080 /* stable since 3.7; hidden by the limited-API headers cffi compiles with */
#endif

#define INMEM_COLD_CHUNK ((size_t)4 << 20)
#define INMEM_COLD_SLACK ((size_t)16 << 20)
#define INMEM_COLD_BATCH 16
#define INMEM_COLD_MAX_RECS ((size_t)0xFFFFFFF0u)

typedef struct {
    uint8_t *key;
    uint64_t hash;
    uint64_t version;
    uint32_t klen, vlen;
} inmem_cold_rec;

typedef struct {
    uint32_t tag, idx;
} inmem_cold_slot;

typedef struct {
    uint8_t *base;
    size_t size;
} inmem_cold_chunk;

typedef struct {
    const uint8_t *key, *value;
    uint64_t hash, version;
    uint32_t klen, vlen;
    int put;
} inmem_cold_op;

struct InmemCold {
    PyObject_HEAD
    PyObject *mapref;         /* a weak reference to the dict this table backs (owned): no cycle */
    uint64_t seed;
    inmem_cold_slot *slots;   /* mask + 1 slots, or NULL */
    size_t mask;
    inmem_cold_rec *recs;     /* recs[0] unused: idx 0 marks an empty slot */
    size_t nrecs, caprecs;
    size_t live;              /* keys in the table */
    inmem_cold_chunk *chunks;
    size_t nchunks, capchunks;
    uint8_t *cursor;          /* the next free byte of the last chunk */
    size_t chunk_left;        /* free bytes from there */
    size_t arena_bytes;       /* bytes of all chunks */
    size_t used_bytes;        /* bytes handed out from them (live and garbage) */
    size_t live_bytes;        /* bytes of the live records' keys and values */
    size_t slack;             /* garbage allowed beyond the live bytes before a compaction */
    inmem_cold_op pending[INMEM_COLD_BATCH]; /* the replay's queued writes, oldest at `head` */
    int npending, head;
};

static PyTypeObject *inmem_cold_type = NULL;

/* The table's big blocks (chunks, records, slots) come straight from the OS, zeroed, and go straight
   back: through malloc, glibc raises its mmap threshold after the first big free and serves the next
   blocks from the heap, which a drained table would then leave resident (W9 measured it). */
#if defined(_WIN32)
static void *inmem_cold_map(size_t n)
{
    return calloc(1, n ? n : 1);
}

static void inmem_cold_unmap(void *p, size_t n)
{
    (void)n;
    free(p);
}
#else
#include <sys/mman.h>
static void *inmem_cold_map(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void inmem_cold_unmap(void *p, size_t n)
{
    if (p != NULL)
        munmap(p, n ? n : 1);
}
#endif

static uint64_t inmem_cold_hash(uint64_t seed, const uint8_t *p, size_t n)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL), t = 0;
    while (n >= 8) {
        h = (h ^ inmem_load64(p)) * 0x9FB21C651E98DF25ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        n--;
        t = (t << 8) | p[n];
    }
    h ^= t;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return h;
}

static void inmem_cold_free_all(InmemCold *t)
{
    size_t i;
    for (i = 0; i < t->nchunks; i++)
        inmem_cold_unmap(t->chunks[i].base, t->chunks[i].size);
    free(t->chunks);
    inmem_cold_unmap(t->recs, t->caprecs * sizeof(inmem_cold_rec));
    if (t->slots != NULL)
        inmem_cold_unmap(t->slots, (t->mask + 1) * sizeof(inmem_cold_slot));
    t->chunks = NULL;
    t->cursor = NULL;
    t->recs = NULL;
    t->slots = NULL;
    t->nchunks = t->capchunks = t->nrecs = t->caprecs = t->live = t->mask = 0;
    t->chunk_left = t->arena_bytes = t->used_bytes = t->live_bytes = 0;
}

/* Where key k (hash h) is, or the empty slot where it would go. Needs slots != NULL. */
static size_t inmem_cold_find(InmemCold *t, const uint8_t *k, uint32_t klen, uint64_t h, int *found)
{
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = (size_t)h & t->mask;
    for (;;) {
        inmem_cold_slot s = t->slots[i];
        if (s.idx == 0) {
            *found = 0;
            return i;
        }
        if (s.tag == tag) {
            const inmem_cold_rec *r = &t->recs[s.idx];
            if (r->klen == klen && memcmp(r->key, k, klen) == 0) {
                *found = 1;
                return i;
            }
        }
        i = (i + 1) & t->mask;
    }
}

/* Slot every live record into a fresh table of `cap` slots (a power of two > 2 * live), reading the
   records in order and prefetching the slots a batch ahead. -1 (nothing changed) if out of memory. */
static int inmem_cold_reslot(InmemCold *t, size_t cap)
{
    inmem_cold_slot *slots = inmem_cold_map(cap * sizeof(inmem_cold_slot));
    size_t mask = cap - 1, r, ahead;
    if (slots == NULL)
        return -1;
    for (r = 1, ahead = 1; r < t->nrecs; r++) {
        const inmem_cold_rec *rec = &t->recs[r];
        size_t i;
        for (; ahead < t->nrecs && ahead < r + INMEM_COLD_BATCH; ahead++)
            __builtin_prefetch(&slots[(size_t)t->recs[ahead].hash & mask], 1);
        if (rec->version == 0)
            continue;
        i = (size_t)rec->hash & mask;
        while (slots[i].idx != 0)
            i = (i + 1) & mask;
        slots[i].tag = (uint32_t)(rec->hash >> 32);
        slots[i].idx = (uint32_t)r;
    }
    if (t->slots != NULL)
        inmem_cold_unmap(t->slots, (t->mask + 1) * sizeof(inmem_cold_slot));
    t->slots = slots;
    t->mask = mask;
    return 0;
}

/* Copy the live records into new chunks and a new record array (dead ones dropped), then re-slot.
   -1 (nothing changed) if out of memory. */
static int inmem_cold_compact(InmemCold *t)
{
    size_t bytes = t->live_bytes ? t->live_bytes : 1, n = 1, r, cap = 1024, old_n = t->nrecs;
    size_t old_caprecs = t->caprecs, old_mask = t->mask;
    uint8_t *chunk = inmem_cold_map(bytes), *p;
    inmem_cold_chunk *chunks = malloc(sizeof(inmem_cold_chunk));
    inmem_cold_rec *recs = inmem_cold_map((t->live + 1) * sizeof(inmem_cold_rec)), *old_recs = t->recs;
    inmem_cold_slot *old_slots = t->slots;
    if (chunk == NULL || chunks == NULL || recs == NULL) {
        inmem_cold_unmap(chunk, bytes);
        free(chunks);
        inmem_cold_unmap(recs, (t->live + 1) * sizeof(inmem_cold_rec));
        return -1;
    }
    for (p = chunk, r = 1; r < t->nrecs; r++) {
        inmem_cold_rec rec = t->recs[r];
        if (rec.version == 0)
            continue;
        memcpy(p, rec.key, (size_t)rec.klen + rec.vlen);
        rec.key = p;
        p += (size_t)rec.klen + rec.vlen;
        recs[n++] = rec;
    }
    while (cap < 2 * (t->live + 1))
        cap <<= 1;
    t->recs = recs;
    t->nrecs = n;
    t->slots = NULL; /* reslot builds a new slot array; the old one is unmapped below */
    if (inmem_cold_reslot(t, cap) != 0) {
        t->recs = old_recs;
        t->nrecs = old_n;
        t->slots = old_slots;
        t->mask = old_mask;
        inmem_cold_unmap(chunk, bytes);
        free(chunks);
        inmem_cold_unmap(recs, (t->live + 1) * sizeof(inmem_cold_rec));
        return -1;
    }
    inmem_cold_unmap(old_slots, (old_mask + 1) * sizeof(inmem_cold_slot));
    inmem_cold_unmap(old_recs, old_caprecs * sizeof(inmem_cold_rec));
    for (r = 0; r < t->nchunks; r++)
        inmem_cold_unmap(t->chunks[r].base, t->chunks[r].size);
    free(t->chunks);
    chunks[0].base = chunk;
    chunks[0].size = bytes;
    t->chunks = chunks;
    t->nchunks = t->capchunks = 1;
    t->caprecs = t->live + 1;
    t->cursor = NULL;
    t->chunk_left = 0;
    t->arena_bytes = t->used_bytes = bytes;
    return 0;
}

/* After a removal: free everything once the table is empty, compact once garbage outweighs the live
   bytes (and the slack). A failed compaction only leaves the garbage where it is. */
static void inmem_cold_tidy(InmemCold *t)
{
    if (t->live == 0) {
        if (t->nrecs > 0 || t->nchunks > 0)
            inmem_cold_free_all(t);
        return;
    }
    /* a dead record's slot in the record array counts too: keys put and deleted over and over would
       otherwise grow the array without bound while making little garbage in the arena */
    if (t->used_bytes - t->live_bytes + (t->nrecs - 1 - t->live) * sizeof(inmem_cold_rec) >
            t->live_bytes + t->live * sizeof(inmem_cold_rec) + t->slack)
        (void)inmem_cold_compact(t); /* sets no exception: a failure keeps the garbage, nothing else */
}

/* Take the record out of slot i: its slot emptied by backward shift, the record marked dead, then the
   table tidied (so slot indices are stale afterwards). */
static void inmem_cold_unslot(InmemCold *t, size_t i)
{
    inmem_cold_rec *rec = &t->recs[t->slots[i].idx];
    size_t j = i;
    t->live_bytes -= (size_t)rec->klen + rec->vlen;
    rec->version = 0;
    t->live--;
    for (;;) {
        size_t home;
        j = (j + 1) & t->mask;
        if (t->slots[j].idx == 0)
            break;
        home = (size_t)t->recs[t->slots[j].idx].hash & t->mask;
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) { /* home not in (i, j]: it may move to i */
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].idx = 0;
    t->slots[i].tag = 0;
    inmem_cold_tidy(t);
}

/* Arena space for n bytes, or NULL (MemoryError set). */
static uint8_t *inmem_cold_space(InmemCold *t, size_t n)
{
    uint8_t *p;
    if (n > t->chunk_left || t->cursor == NULL) {
        size_t size = n > INMEM_COLD_CHUNK ? n : INMEM_COLD_CHUNK;
        if (t->nchunks == t->capchunks) {
            size_t cap = t->capchunks ? t->capchunks * 2 : 16;
            inmem_cold_chunk *chunks = realloc(t->chunks, cap * sizeof(inmem_cold_chunk));
            if (chunks == NULL)
                goto nomem;
            t->chunks = chunks;
            t->capchunks = cap;
        }
        p = inmem_cold_map(size);
        if (p == NULL)
            goto nomem;
        t->chunks[t->nchunks].base = p;
        t->chunks[t->nchunks].size = size;
        t->nchunks++;
        t->cursor = p;
        t->chunk_left = size;
        t->arena_bytes += size;
    }
    p = t->cursor;
    t->cursor += n;
    t->chunk_left -= n;
    t->used_bytes += n;
    return p;
nomem:
    PyErr_NoMemory();
    return NULL;
}

/* Put key k = value v at `version` (h: the key's hash), copying both into the arena. 0, or -1 with
   MemoryError set (the table unchanged but for arena space). */
static int inmem_cold_set(InmemCold *t, const uint8_t *k, uint32_t klen, const uint8_t *v, uint32_t vlen,
                          uint64_t version, uint64_t h)
{
    size_t i;
    int found;
    uint8_t *copy;
    if (t->slots == NULL || (t->live + 1) * 2 > t->mask + 1) {
        size_t cap = t->slots == NULL ? 1024 : (t->mask + 1) * 2;
        if (inmem_cold_reslot(t, cap) != 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    i = inmem_cold_find(t, k, klen, h, &found);
    if (!found) {
        if (t->nrecs >= INMEM_COLD_MAX_RECS) { /* record indices are u32: drop the dead records first */
            if (inmem_cold_compact(t) != 0 || t->nrecs >= INMEM_COLD_MAX_RECS) {
                PyErr_SetString(PyExc_MemoryError, "cold table: too many records");
                return -1;
            }
            i = inmem_cold_find(t, k, klen, h, &found);
        }
        if (t->nrecs >= t->caprecs) {
            size_t cap = t->caprecs >= 512 ? t->caprecs * 2 : 1024;
            inmem_cold_rec *recs = inmem_cold_map(cap * sizeof(inmem_cold_rec));
            if (recs == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            if (t->recs != NULL)
                memcpy(recs, t->recs, t->nrecs * sizeof(inmem_cold_rec));
            inmem_cold_unmap(t->recs, t->caprecs * sizeof(inmem_cold_rec));
            t->recs = recs;
            t->caprecs = cap;
        }
        if (t->nrecs == 0)
            t->nrecs = 1; /* record 0 is never used */
    }
    copy = inmem_cold_space(t, (size_t)klen + vlen);
    if (copy == NULL)
        return -1;
    memcpy(copy, k, klen);
    memcpy(copy + klen, v, vlen);
    if (found) {
        inmem_cold_rec *rec = &t->recs[t->slots[i].idx];
        t->live_bytes -= (size_t)rec->klen + rec->vlen;
        rec->key = copy;
        rec->vlen = vlen;
        rec->version = version;
        t->live_bytes += (size_t)klen + vlen;
        inmem_cold_tidy(t); /* the old copy is garbage now */
        return 0;
    } else {
        inmem_cold_rec *rec = &t->recs[t->nrecs];
        rec->key = copy;
        rec->hash = h;
        rec->version = version;
        rec->klen = klen;
        rec->vlen = vlen;
        t->slots[i].tag = (uint32_t)(h >> 32);
        t->slots[i].idx = (uint32_t)t->nrecs;
        t->nrecs++;
        t->live++;
    }
    t->live_bytes += (size_t)klen + vlen;
    return 0;
}

/* Remove key k if the table holds it; 1 if it did. */
static int inmem_cold_remove(InmemCold *t, const uint8_t *k, uint32_t klen, uint64_t h)
{
    size_t i;
    int found;
    if (t->live == 0)
        return 0;
    i = inmem_cold_find(t, k, klen, h, &found);
    if (!found)
        return 0;
    inmem_cold_unslot(t, i);
    return 1;
}

/* The record of bytes key `key`, or NULL (not bytes, or not in the table). */
static inmem_cold_rec *inmem_cold_lookup(InmemCold *t, PyObject *key, size_t *slot)
{
    char *k;
    Py_ssize_t klen;
    size_t i;
    int found;
    if (t->live == 0 || !PyBytes_Check(key))
        return NULL;
    if (PyBytes_AsStringAndSize(key, &k, &klen) != 0) {
        PyErr_Clear();
        return NULL;
    }
    if ((size_t)klen > 0xFFFFFFFFu)
        return NULL;
    i = inmem_cold_find(t, (const uint8_t *)k, (uint32_t)klen,
                        inmem_cold_hash(t->seed, (const uint8_t *)k, (size_t)klen), &found);
    if (!found)
        return NULL;
    if (slot != NULL)
        *slot = i;
    return &t->recs[t->slots[i].idx];
}

/* A new entry (version, value) for a record. */
static PyObject *inmem_cold_entry(const inmem_cold_rec *rec)
{
    PyObject *value = PyBytes_FromStringAndSize((const char *)rec->key + rec->klen, rec->vlen), *entry;
    if (value == NULL)
        return NULL;
    entry = inmem_entry_new(rec->version, value);
    Py_DECREF(value);
    return entry;
}

/* ---- the replay's writes: queued, their slots prefetched a batch ahead ---------------------------- */

/* The dict this table backs (a borrowed reference), or NULL with RuntimeError set if it is gone. */
static PyObject *inmem_cold_dict(InmemCold *t)
{
    PyObject *map = t->mapref != NULL ? PyWeakref_GetObject(t->mapref) : NULL;
    if (map == NULL || map == Py_None) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "cold table: its map is gone");
        return NULL;
    }
    return map;
}

/* Apply one queued write: out of the dict part first (a snapshot's key the WAL rewrites or deletes),
   then into or out of the table. */
static int inmem_cold_apply(InmemCold *t, const inmem_cold_op *op)
{
    PyObject *map = inmem_cold_dict(t);
    if (map == NULL)
        return -1;
    if (PyDict_Size(map) > 0) {
        PyObject *key = PyBytes_FromStringAndSize((const char *)op->key, op->klen);
        if (key == NULL)
            return -1;
        if (PyDict_DelItem(map, key) != 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                Py_DECREF(key);
                return -1;
            }
            PyErr_Clear();
        }
        Py_DECREF(key);
    }
    if (op->put)
        return inmem_cold_set(t, op->key, op->klen, op->value, op->vlen, op->version, op->hash);
    inmem_cold_remove(t, op->key, op->klen, op->hash);
    return 0;
}

/* Apply the oldest queued write (there is one); on failure the rest of the queue is dropped too. */
static int inmem_cold_apply_oldest(InmemCold *t)
{
    inmem_cold_op op = t->pending[t->head];
    t->head = (t->head + 1) % INMEM_COLD_BATCH;
    t->npending--;
    if (inmem_cold_apply(t, &op) != 0) {
        t->npending = 0;
        return -1;
    }
    return 0;
}

/* Apply every queued write, oldest first. */
static int inmem_cold_flush(InmemCold *t)
{
    while (t->npending > 0)
        if (inmem_cold_apply_oldest(t) != 0)
            return -1;
    return 0;
}

/* Forget the queued writes (the replay failed: they point into its buffer). */
static void inmem_cold_drop_pending(InmemCold *t)
{
    t->npending = 0;
    t->head = 0;
}

/* Queue a write from a replayed record (put: value != NULL), applying the oldest when the queue is full.
   The bytes must stay valid until inmem_cold_flush. */
static int inmem_cold_queue(InmemCold *t, const uint8_t *k, uint32_t klen, const uint8_t *v, uint32_t vlen,
                            uint64_t version)
{
    inmem_cold_op *op;
    if (t->npending == INMEM_COLD_BATCH && inmem_cold_apply_oldest(t) != 0)
        return -1;
    op = &t->pending[(t->head + t->npending) % INMEM_COLD_BATCH];
    op->key = k;
    op->klen = klen;
    op->value = v;
    op->vlen = vlen;
    op->version = version;
    op->put = v != NULL;
    op->hash = inmem_cold_hash(t->seed, k, klen);
    if (t->slots != NULL)
        __builtin_prefetch(&t->slots[(size_t)op->hash & t->mask], 1);
    t->npending++;
    return 0;
}
