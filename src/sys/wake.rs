//! A self-pipe: writing to one end wakes a poll(2) on the other. Signal
//! handlers and the fetch thread use it to wake the main loop.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;

/// The end the main loop polls for readability.
pub struct Waiter(OwnedFd);

/// The end that wakes it.
pub struct Waker(OwnedFd);

/// A non-blocking, close-on-exec pipe.
pub fn pipe() -> io::Result<(Waiter, Waker)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    Ok((Waiter(read), Waker(write)))
}

impl Waiter {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Reads the pipe until it is empty, so that the next poll waits again.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = nix::unistd::read(self.0.as_fd(), &mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

impl Waker {
    pub fn wake(&self) {
        // A full pipe already holds a wake-up: nothing is lost.
        let _ = nix::unistd::write(&self.0, &[1]);
    }

    /// Another descriptor for the same end, for a signal handler to own.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable(w: &Waiter) -> bool {
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 1
    }

    #[test]
    fn wakes_and_drains() {
        let (waiter, waker) = pipe().unwrap();
        assert!(!readable(&waiter));
        waker.wake();
        assert!(readable(&waiter));
        waiter.drain();
        assert!(!readable(&waiter));
        // Far more wake-ups than the pipe holds neither block nor fail.
        for _ in 0..100_000 {
            waker.wake();
        }
        waiter.drain();
        assert!(!readable(&waiter));
        let clone = Waker(waker.try_clone_fd().unwrap());
        clone.wake();
        assert!(readable(&waiter));
    }
}
