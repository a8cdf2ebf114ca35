// What Swift's Glibc module leaves out: GNU extensions (they need _GNU_SOURCE) and
// <malloc.h>.
#ifndef C_VERTEX_SYSTEM_H
#define C_VERTEX_SYSTEM_H

#include <stdint.h>

/// Asks the kernel to start writing [offset, offset + count) of a file to disk and
/// returns without waiting (Linux's sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0, or -1 with errno set; elsewhere than Linux it does nothing and returns 0.
int vertex_start_writeback(int descriptor, int64_t offset, int64_t count);

/// Renames `from` to `to` unless `to` exists (Linux's renameat2 with RENAME_NOREPLACE):
/// the check and the rename are one step. Returns 0, or -1 with errno set (EEXIST when
/// `to` exists; ENOSYS elsewhere than Linux, or EINVAL on a file system without it).
int vertex_rename_noreplace(const char *from, const char *to);

/// Sets glibc's mmap threshold and trim threshold (mallopt M_MMAP_THRESHOLD and
/// M_TRIM_THRESHOLD), in bytes. Returns 1 when both were set; elsewhere than glibc it
/// does nothing and returns 0.
int vertex_tune_allocator(long mmap_threshold, long trim_threshold);

#endif
