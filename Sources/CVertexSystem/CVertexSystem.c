#define _GNU_SOURCE
#include "CVertexSystem.h"

#ifdef __linux__
#include <fcntl.h>

int vertex_start_writeback(int descriptor, int64_t offset, int64_t count) {
    return sync_file_range(descriptor, offset, count, SYNC_FILE_RANGE_WRITE);
}
#else
int vertex_start_writeback(int descriptor, int64_t offset, int64_t count) {
    (void)descriptor; (void)offset; (void)count;
    return 0;
}
#endif

#ifdef __linux__
#include <stdio.h>
#include <errno.h>

int vertex_rename_noreplace(const char *from, const char *to) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}
#else
int vertex_rename_noreplace(const char *from, const char *to) {
    (void)from; (void)to;
    errno = ENOSYS;
    return -1;
}
#endif

#ifdef __GLIBC__
#include <malloc.h>

int vertex_tune_allocator(long mmap_threshold, long trim_threshold) {
    int mmap_set = mmap_threshold < 0 || mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold);
    int trim_set = trim_threshold < 0 || mallopt(M_TRIM_THRESHOLD, (int)trim_threshold);
    return mmap_set && trim_set;
}
#else
int vertex_tune_allocator(long mmap_threshold, long trim_threshold) {
    (void)mmap_threshold; (void)trim_threshold;
    return 0;
}
#endif
