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

/// `len` zero bytes, or `None` without the memory. A large buffer comes
/// from `calloc` as fresh pages: nothing is written to zero them.
pub fn zeroed(len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: the layout's size is not zero. A pointer that is not null
    // was allocated by the global allocator for exactly `len` bytes of
    // alignment 1, as a Vec<u8> of capacity `len` is, and all `len` bytes
    // are initialised (to zero).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        if p.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(p, len, len))
    }
}

/// Faults in, at once, the pages wholly inside `buf` (a buffer about to
/// be filled, such as the fresh zeroed pages of [`zeroed`]): one call
/// instead of a page fault per 4 KiB; the bytes keep their values. Only a
/// hint: kernels before 5.14 refuse it, and nothing changes.
pub fn populate(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096usize;
        let start = buf.as_mut_ptr() as usize;
        let end = start.saturating_add(buf.len());
        let (Some(from), to) = (start.checked_next_multiple_of(page), end / page * page) else {
            return;
        };
        if to <= from {
            return;
        }
        // SAFETY: [from, to) lies inside `buf`, memory this process owns
        // and may write; MADV_POPULATE_WRITE only maps its pages (zeroed
        // where none was) and never changes bytes already there.
        unsafe {
            nix::libc::madvise(
                from as *mut nix::libc::c_void,
                to - from,
                nix::libc::MADV_POPULATE_WRITE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_are_zero_and_keep_zero_when_populated() {
        for len in [0, 1, 4095, 4096, 1 << 20, (1 << 20) + 3] {
            let mut v = zeroed(len).unwrap();
            assert_eq!(v.len(), len);
            populate(&mut v);
            assert!(v.iter().all(|&b| b == 0));
            v.push(1);
            assert_eq!(v[len], 1);
        }
        assert!(zeroed(usize::MAX).is_none());
    }

    #[test]
    fn populate_keeps_what_the_buffer_holds() {
        let mut v = zeroed(1 << 20).unwrap();
        for (i, b) in v.iter_mut().take(300_001).enumerate() {
            *b = (i % 251) as u8;
        }
        populate(&mut v[1..]);
        assert!(v[..300_001]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8));
        assert!(v[300_001..].iter().all(|&b| b == 0));
        // Less than a page, and nothing at all.
        populate(&mut [7u8; 100]);
        populate(&mut []);
    }

    /// Minor page faults of this thread so far.
    fn thread_minflt() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        // Field 10 of the line; the 8th after the command's name.
        after_comm.split(' ').nth(7).unwrap().parse().unwrap()
    }

    #[test]
    fn populate_takes_the_page_faults_up_front() {
        // Past glibc's largest mmap threshold (32 MiB): fresh pages.
        let mut v = zeroed(40 << 20).unwrap();
        populate(&mut v);
        let before = thread_minflt();
        v.fill(1);
        std::hint::black_box(&mut v);
        let faults = thread_minflt() - before;
        // Without it: one fault per 4 KiB page written, about 10,000.
        assert!(faults < 64, "{faults} page faults after populating");
    }
}
