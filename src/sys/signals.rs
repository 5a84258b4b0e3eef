//! Signals as data: handlers only set a flag and write to a self-pipe, so
//! the main loop can wait on signals, worker results and deadlines at once.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::sys::wake::{self, Waiter};

/// What the main loop has been asked to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub reload: bool,
    /// The signal that asked us to stop, if any.
    pub stop: Option<&'static str>,
}

pub struct Signals {
    hup: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    wake: Waiter,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (read, write) = wake::pipe()?;
        let s = Signals {
            hup: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            int: Arc::new(AtomicBool::new(false)),
            wake: read,
        };
        for (sig, flag) in [(SIGHUP, &s.hup), (SIGTERM, &s.term), (SIGINT, &s.int)] {
            // The flag first, so it is set by the time the pipe wakes us.
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone_fd()?)?;
        }
        Ok(s)
    }

    /// The pipe to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.fd()
    }

    /// Whether SIGTERM or SIGINT is pending, without taking it: long work
    /// (a large write) checks this to give up early.
    pub fn stop_requested(&self) -> bool {
        self.term.load(Ordering::SeqCst) || self.int.load(Ordering::SeqCst)
    }

    /// Empties the pipe and returns what was signalled since the last call.
    pub fn take(&self) -> Pending {
        self.wake.drain();
        let stop = if self.term.swap(false, Ordering::SeqCst) {
            Some("SIGTERM")
        } else if self.int.swap(false, Ordering::SeqCst) {
            Some("SIGINT")
        } else {
            None
        };
        Pending {
            reload: self.hup.swap(false, Ordering::SeqCst),
            stop,
        }
    }
}
