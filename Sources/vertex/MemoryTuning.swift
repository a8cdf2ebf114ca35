import CVertexSystem
import Foundation

/// glibc's allocator tuned for a process that moves data in 256 KiB–1 MiB buffers.
///
/// By default glibc serves each allocation of 128 KiB or more with its own `mmap` and,
/// when the top of the heap holds 128 KiB–32 MiB free, gives it back to the kernel. A
/// file transfer allocates a buffer per chunk and frees it a moment later, so the kernel
/// mapped, zeroed and unmapped the same memory over and over: page faults and
/// `clear_page` took a fifth of the sender's CPU. With buffers up to 1 MiB kept on the
/// heap and up to 16 MiB of free heap kept, `vertex send` → `receive` of 1 GiB on
/// loopback went from 610–636 to 650–740 MB/s, and through the relay from 290–320 to
/// 345–420 MB/s.
/// Settings given in the environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`)
/// win.
enum MemoryTuning {
    static func apply() {
        // -1: leave that one as it is.
        let environment = ProcessInfo.processInfo.environment
        _ = vertex_tune_allocator(environment["MALLOC_MMAP_THRESHOLD_"] == nil ? 1 << 20 : -1,
                                  environment["MALLOC_TRIM_THRESHOLD_"] == nil ? 16 << 20 : -1)
    }
}
