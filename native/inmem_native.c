/*
 * inmem native hot path: CRC-32C and WAL frame checking.
 *
 * Compiled by native/build.py (cffi, API mode) into inmem._native. Every
 * function here must give exactly the answer of its pure-Python counterpart
 * (engine/checksum.py, engine/wal/format.py); tests/test_native.py checks that
 * differentially. All functions are pure: no Python API, no allocation, no
 * global state other than constant tables and the CPU-feature flag, which are
 * filled in once when the library is loaded.
 *
 * Frame (little-endian), see engine/wal/format.py:
 *   hcrc u32 | length u32 | lsn u64 | pcrc u32 | type u8 | 3 zero bytes | payload
 *   hcrc = mask(crc32c(header[4:24])), pcrc = mask(crc32c(payload))
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define INMEM_X86_CRC 1
#include <nmmintrin.h>
#else
#define INMEM_X86_CRC 0
#endif

#define INMEM_FRAME_HEADER_SIZE 24u
#define INMEM_MAX_PAYLOAD_BYTES (1u << 30)
#define INMEM_RECORD_COMMIT 1u
#define INMEM_MASK_DELTA 0xA282EAD8u
#define INMEM_CRC32C_POLY 0x82F63B78u /* Castagnoli, reflected */

/* Failure codes of inmem_check_frame, in the order the checks run. */
#define INMEM_OK 0
#define INMEM_HEADER_TRUNCATED 1
#define INMEM_HEADER_CHECKSUM 2
#define INMEM_HEADER_INVALID 3
#define INMEM_PAYLOAD_TRUNCATED 4
#define INMEM_PAYLOAD_CHECKSUM 5

/* ---- little-endian loads (any alignment, any host byte order) ---------- */

static inline uint32_t inmem_load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t inmem_load64(const uint8_t *p)
{
    return (uint64_t)inmem_load32(p) | ((uint64_t)inmem_load32(p + 4) << 32);
}

/* ---- portable CRC-32C: slicing-by-8 --------------------------------------- */

static uint32_t inmem_crc_table[8][256];
static volatile int inmem_tables_ready = 0;
static int inmem_have_sse42 = 0;

static void inmem_init_tables(void)
{
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = (c >> 1) ^ ((c & 1u) ? INMEM_CRC32C_POLY : 0u);
        inmem_crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = inmem_crc_table[0][i];
        for (j = 1; j < 8; j++) {
            c = inmem_crc_table[0][c & 0xFFu] ^ (c >> 8);
            inmem_crc_table[j][i] = c;
        }
    }
    inmem_tables_ready = 1;
}

uint32_t inmem_crc32c_portable(const uint8_t *buf, size_t len, uint32_t crc)
{
    uint32_t c;
    if (!inmem_tables_ready) /* compilers without constructors: idempotent fill */
        inmem_init_tables();
    c = ~crc;
    while (len && ((uintptr_t)buf & 7u)) {
        c = inmem_crc_table[0][(c ^ *buf++) & 0xFFu] ^ (c >> 8);
        len--;
    }
    while (len >= 8) {
        uint32_t lo = c ^ inmem_load32(buf);
        uint32_t hi = inmem_load32(buf + 4);
        c = inmem_crc_table[7][lo & 0xFFu] ^ inmem_crc_table[6][(lo >> 8) & 0xFFu] ^
            inmem_crc_table[5][(lo >> 16) & 0xFFu] ^ inmem_crc_table[4][lo >> 24] ^
            inmem_crc_table[3][hi & 0xFFu] ^ inmem_crc_table[2][(hi >> 8) & 0xFFu] ^
            inmem_crc_table[1][(hi >> 16) & 0xFFu] ^ inmem_crc_table[0][hi >> 24];
        buf += 8;
        len -= 8;
    }
    while (len--)
        c = inmem_crc_table[0][(c ^ *buf++) & 0xFFu] ^ (c >> 8);
    return ~c;
}

/* ---- hardware CRC-32C (SSE4.2 crc32 instruction) -------------------------- */

#if INMEM_X86_CRC
/*
 * The crc32 instruction has a latency of 3 cycles but a throughput of 1 per
 * cycle, so long buffers are cut into three blocks whose CRCs are computed
 * interleaved and then combined: crc(A || B) = shift(crc(A), len(B)) ^ crc0(B),
 * where shift applies len(B) zero bytes to a CRC register (a linear map, kept
 * as four byte-indexed tables) and crc0(B) is B's CRC from a zero register.
 * After Mark Adler's crc32c.c (zlib licence).
 */
#define INMEM_LONG 8192u
#define INMEM_SHORT 256u
static uint32_t inmem_crc_long[4][256];
static uint32_t inmem_crc_short[4][256];

static uint32_t inmem_gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1u)
            sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void inmem_gf2_square(uint32_t *square, const uint32_t *mat)
{
    int n;
    for (n = 0; n < 32; n++)
        square[n] = inmem_gf2_times(mat, mat[n]);
}

/* The operator that applies len zero bytes (len a power of two) to a CRC register. */
static void inmem_zeros_op(uint32_t *even, size_t len)
{
    uint32_t odd[32], row = 1;
    int n;
    odd[0] = INMEM_CRC32C_POLY; /* one zero bit */
    for (n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    inmem_gf2_square(even, odd); /* two zero bits */
    inmem_gf2_square(odd, even); /* four zero bits */
    do {
        inmem_gf2_square(even, odd);
        len >>= 1;
        if (len == 0)
            return;
        inmem_gf2_square(odd, even);
        len >>= 1;
    } while (len);
    for (n = 0; n < 32; n++)
        even[n] = odd[n];
}

static void inmem_zeros_table(uint32_t zeros[4][256], size_t len)
{
    uint32_t op[32], n;
    inmem_zeros_op(op, len);
    for (n = 0; n < 256; n++) {
        zeros[0][n] = inmem_gf2_times(op, n);
        zeros[1][n] = inmem_gf2_times(op, n << 8);
        zeros[2][n] = inmem_gf2_times(op, n << 16);
        zeros[3][n] = inmem_gf2_times(op, n << 24);
    }
}

static inline uint32_t inmem_shift(uint32_t zeros[4][256], uint32_t crc)
{
    return zeros[0][crc & 0xFFu] ^ zeros[1][(crc >> 8) & 0xFFu] ^ zeros[2][(crc >> 16) & 0xFFu] ^
           zeros[3][crc >> 24];
}

static inline uint64_t inmem_load64_native(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* x86 is little-endian; unaligned load */
    return v;
}

__attribute__((target("sse4.2"))) static uint32_t inmem_crc32c_sse42(const uint8_t *buf, size_t len, uint32_t crc)
{
    uint64_t c0 = (uint32_t)~crc, c1, c2;
    const uint8_t *blk_end;

    while (len && ((uintptr_t)buf & 7u)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *buf++);
        len--;
    }
    while (len >= 3 * INMEM_LONG) {
        c1 = c2 = 0;
        blk_end = buf + INMEM_LONG;
        do {
            c0 = _mm_crc32_u64(c0, inmem_load64_native(buf));
            c1 = _mm_crc32_u64(c1, inmem_load64_native(buf + INMEM_LONG));
            c2 = _mm_crc32_u64(c2, inmem_load64_native(buf + 2 * INMEM_LONG));
            buf += 8;
        } while (buf < blk_end);
        c0 = inmem_shift(inmem_crc_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = inmem_shift(inmem_crc_long, (uint32_t)c0) ^ (uint32_t)c2;
        buf += 2 * INMEM_LONG;
        len -= 3 * INMEM_LONG;
    }
    while (len >= 3 * INMEM_SHORT) {
        c1 = c2 = 0;
        blk_end = buf + INMEM_SHORT;
        do {
            c0 = _mm_crc32_u64(c0, inmem_load64_native(buf));
            c1 = _mm_crc32_u64(c1, inmem_load64_native(buf + INMEM_SHORT));
            c2 = _mm_crc32_u64(c2, inmem_load64_native(buf + 2 * INMEM_SHORT));
            buf += 8;
        } while (buf < blk_end);
        c0 = inmem_shift(inmem_crc_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = inmem_shift(inmem_crc_short, (uint32_t)c0) ^ (uint32_t)c2;
        buf += 2 * INMEM_SHORT;
        len -= 3 * INMEM_SHORT;
    }
    while (len >= 8) {
        c0 = _mm_crc32_u64(c0, inmem_load64_native(buf));
        buf += 8;
        len -= 8;
    }
    {
        uint32_t c32 = (uint32_t)c0;
        while (len--)
            c32 = _mm_crc32_u8(c32, *buf++);
        return ~c32;
    }
}
#endif

#if defined(__GNUC__) || defined(__clang__)
/* Fill the tables and detect the CPU once, when the shared library is loaded. */
__attribute__((constructor)) static void inmem_init(void)
{
    inmem_init_tables();
#if INMEM_X86_CRC
    inmem_zeros_table(inmem_crc_long, INMEM_LONG);
    inmem_zeros_table(inmem_crc_short, INMEM_SHORT);
    __builtin_cpu_init();
    inmem_have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}
#endif

/* 1 if inmem_crc32c uses the CPU's crc32 instruction, else 0 (table-driven). */
int inmem_crc32c_hw(void)
{
    return inmem_have_sse42;
}

uint32_t inmem_crc32c(const uint8_t *buf, size_t len, uint32_t crc)
{
#if INMEM_X86_CRC
    if (inmem_have_sse42)
        return inmem_crc32c_sse42(buf, len, crc);
#endif
    return inmem_crc32c_portable(buf, len, crc);
}

uint32_t inmem_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + INMEM_MASK_DELTA;
}

/* ---- frames ----------------------------------------------------------------- */

int inmem_check_frame(const uint8_t *buf, size_t len, size_t pos, uint64_t *lsn, uint32_t *rtype,
                      size_t *payload_start, size_t *end)
{
    const uint8_t *h;
    uint32_t length, pcrc;
    uint8_t type;
    size_t pstart;

    if (pos > len || len - pos < INMEM_FRAME_HEADER_SIZE)
        return INMEM_HEADER_TRUNCATED;
    h = buf + pos;
    /* the length is not looked at before the checksum covering it has passed */
    if (inmem_load32(h) != inmem_mask(inmem_crc32c(h + 4, INMEM_FRAME_HEADER_SIZE - 4, 0)))
        return INMEM_HEADER_CHECKSUM;
    length = inmem_load32(h + 4);
    pcrc = inmem_load32(h + 16);
    type = h[20];
    if (type != INMEM_RECORD_COMMIT || length > INMEM_MAX_PAYLOAD_BYTES || (h[21] | h[22] | h[23]) != 0)
        return INMEM_HEADER_INVALID;
    pstart = pos + INMEM_FRAME_HEADER_SIZE;
    if ((size_t)length > len - pstart)
        return INMEM_PAYLOAD_TRUNCATED;
    if (pcrc != inmem_mask(inmem_crc32c(buf + pstart, length, 0)))
        return INMEM_PAYLOAD_CHECKSUM;
    if (lsn)
        *lsn = inmem_load64(h + 8);
    if (rtype)
        *rtype = type;
    if (payload_start)
        *payload_start = pstart;
    if (end)
        *end = pstart + length;
    return INMEM_OK;
}

size_t inmem_scan_frames(const uint8_t *buf, size_t len, size_t pos, uint64_t *positions, size_t max_frames,
                         size_t *stop_pos, int *stop_code)
{
    size_t n = 0;
    int code = INMEM_OK;
    while (pos < len && n < max_frames) {
        size_t frame_end;
        code = inmem_check_frame(buf, len, pos, NULL, NULL, NULL, &frame_end);
        if (code != INMEM_OK)
            break;
        positions[n++] = pos;
        pos = frame_end;
    }
    *stop_pos = pos;
    *stop_code = code;
    return n;
}

int64_t inmem_find_valid_frame(const uint8_t *buf, size_t len, size_t start, uint64_t min_lsn)
{
    uint64_t max_lsn, span;
    size_t p, last;

    if (start > len || len - start < INMEM_FRAME_HEADER_SIZE)
        return -1;
    span = (uint64_t)((len - start) / INMEM_FRAME_HEADER_SIZE);
    max_lsn = min_lsn + span;
    if (max_lsn < min_lsn) /* wrapped: no LSN is above UINT64_MAX */
        max_lsn = UINT64_MAX;
    last = len - INMEM_FRAME_HEADER_SIZE;
    for (p = start; p <= last; p++) {
        /* Cheap filters first (lsn range, type byte); they reject only
           offsets the full check would also reject or that are out of range. */
        uint64_t l = inmem_load64(buf + p + 8);
        if (l < min_lsn || l > max_lsn || buf[p + 20] != INMEM_RECORD_COMMIT)
            continue;
        if (inmem_check_frame(buf, len, p, NULL, NULL, NULL, NULL) == INMEM_OK)
            return (int64_t)p;
    }
    return -1;
}
