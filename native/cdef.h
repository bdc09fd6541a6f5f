/* cffi cdef for inmem._native (native/build.py reads this file; keep it in step with inmem_native.c). */
uint32_t inmem_crc32c(const uint8_t *buf, size_t len, uint32_t crc);
uint32_t inmem_crc32c_portable(const uint8_t *buf, size_t len, uint32_t crc);
int inmem_crc32c_hw(void);
uint32_t inmem_mask(uint32_t crc);
int inmem_check_frame(const uint8_t *buf, size_t len, size_t pos, uint64_t *lsn, uint32_t *rtype,
                      size_t *payload_start, size_t *end);
size_t inmem_scan_frames(const uint8_t *buf, size_t len, size_t pos, uint64_t *positions, size_t max_frames,
                         size_t *stop_pos, int *stop_code);
int64_t inmem_find_valid_frame(const uint8_t *buf, size_t len, size_t start, uint64_t min_lsn);
