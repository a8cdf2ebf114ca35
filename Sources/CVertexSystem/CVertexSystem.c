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
