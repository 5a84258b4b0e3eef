//! The fetch thread. Network waits happen here, never in the main loop,
//! which learns of progress through a channel plus a wake-up pipe it polls.

use std::io;
use std::os::fd::BorrowedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::cycle::{self, Failure, Known, Outcome, Retrying};
use crate::source::Source;
use crate::sys::wake::{self, Waiter};

pub enum Event {
    Retrying(Retrying),
    Done(Box<Result<Outcome, Failure>>),
}

/// One cycle to run.
pub struct Request {
    /// Retries end by then.
    pub deadline: Instant,
    /// The last accepted response, for a conditional request.
    pub known: Known,
    /// Read the secret files again first (SIGHUP).
    pub reload: bool,
}

pub struct Worker {
    requests: Sender<Request>,
    events: Receiver<Event>,
    wake: Waiter,
}

impl Worker {
    pub fn spawn(config: Config, mut source: Box<dyn Source>) -> io::Result<Worker> {
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (ev_tx, ev_rx) = mpsc::channel();
        let (wake_rx, wake_tx) = wake::pipe()?;
        thread::Builder::new().name("fetch".into()).spawn(move || {
            let post = |ev: Event| {
                let _ = ev_tx.send(ev);
                wake_tx.wake();
            };
            // Blocks without polling until the main loop asks for a cycle.
            while let Ok(request) = req_rx.recv() {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    if request.reload {
                        source.reload();
                    }
                    cycle::run_with(
                        source.as_mut(),
                        &config,
                        request.deadline,
                        &request.known,
                        &mut |r| post(Event::Retrying(r.clone())),
                    )
                }))
                .unwrap_or_else(|_| {
                    Err(Failure {
                        reason: "internal error: the fetch panicked".into(),
                        attempts: 0,
                        duration: Duration::ZERO,
                        retry_after: None,
                    })
                });
                post(Event::Done(Box::new(outcome)));
            }
        })?;
        Ok(Worker {
            requests: req_tx,
            events: ev_rx,
            wake: wake_rx,
        })
    }

    /// Starts a cycle.
    pub fn start(&self, request: Request) -> bool {
        self.requests.send(request).is_ok()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.fd()
    }

    /// Everything the thread reported since the last call.
    pub fn events(&self) -> Vec<Event> {
        self.wake.drain();
        self.events.try_iter().collect()
    }
}
