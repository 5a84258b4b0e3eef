//! glibc allocator tuning for a process that lives for months.

/// Sets glibc's allocator up for a daemon that lives for months: one arena
/// for both threads, and a fixed mmap threshold so that large buffers
/// (response bodies, rendered files) are mapped and unmapped whole instead
/// of fragmenting the heap. glibc otherwise raises the threshold after the
/// first large free, and RSS then creeps up across varied cycles.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // fetch thread starts.
    unsafe {
        use nix::libc::{mallopt, M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD};
        mallopt(M_ARENA_MAX, 1);
        mallopt(M_MMAP_THRESHOLD, 64 * 1024);
        mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Hands memory freed by the cycle back to the kernel, so that RSS follows
/// the current inventory rather than the largest one ever seen.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
