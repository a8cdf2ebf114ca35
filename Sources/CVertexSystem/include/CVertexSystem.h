// System calls Swift's Glibc module leaves out (GNU extensions need _GNU_SOURCE).
#ifndef C_VERTEX_SYSTEM_H
#define C_VERTEX_SYSTEM_H

#include <stdint.h>

/// Asks the kernel to start writing [offset, offset + count) of a file to disk and
/// returns without waiting (Linux's sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0, or -1 with errno set; elsewhere than Linux it does nothing and returns 0.
int vertex_start_writeback(int descriptor, int64_t offset, int64_t count);

#endif
