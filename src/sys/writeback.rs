//! Starting the write-back of a file's dirty pages early, so that the
//! `fsync` at the end of a large write waits for little more than the tail.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Asks the kernel to start writing `len` bytes from `offset` of `fd` to
/// storage, without waiting. Only a hint: durability still comes from the
/// `fsync` that follows, so a failure is ignored.
pub fn start(fd: BorrowedFd<'_>, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range takes a descriptor that `fd` keeps open
        // for this call and plain integers; it touches no memory of ours.
        unsafe {
            nix::libc::sync_file_range(
                fd.as_raw_fd(),
                offset,
                len,
                nix::libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, offset, len);
}
