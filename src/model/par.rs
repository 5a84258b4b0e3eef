//! Two pieces of work at once: the second on a thread of its own while
//! this one does the first. Without a second thread (none can be made),
//! this one does both, one after the other: the results are the same.

use std::sync::Mutex;

/// A value on cache lines of its own: a thread that writes it often does
/// not slow down another that writes whatever would lie beside it (false
/// sharing).
#[repr(align(128))]
pub struct Apart<T>(pub T);

/// Runs `first` here and `second` on a scoped second thread called
/// `name`, and returns once both are done. A panic in either goes on in
/// this thread, once both have ended: if `second` waits on `first`, then
/// `first` must wake it however it ends, a panic included.
pub fn both(name: &str, first: impl FnOnce(), second: impl FnOnce() + Send) {
    let second = Mutex::new(Some(second));
    // Taken by whichever thread runs it first: the other finds nothing.
    let take_and_run = || {
        let work = second.lock().ok().and_then(|mut w| w.take());
        if let Some(work) = work {
            work();
        }
    };
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(s, take_and_run);
        first();
        if let Ok(handle) = helper {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        take_and_run();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apart_values_share_no_cache_line() {
        assert_eq!(std::mem::align_of::<Apart<u8>>(), 128);
        assert_eq!(std::mem::size_of::<Apart<[u8; 130]>>(), 256);
        let pair = [Apart(1u8), Apart(2u8)];
        let gap = std::ptr::from_ref(&pair[1]) as usize - std::ptr::from_ref(&pair[0]) as usize;
        assert_eq!(gap, 128);
    }

    #[test]
    fn both_pieces_run_once() {
        let (mut a, mut b) = (0, 0);
        both("test", || a += 1, || b += 1);
        assert_eq!((a, b), (1, 1));
        let mut halves = [0u32; 8];
        let (x, y) = halves.split_at_mut(4);
        both("test", || x.fill(1), || y.fill(2));
        assert_eq!(halves, [1, 1, 1, 1, 2, 2, 2, 2]);
    }
}
