//! The fetch thread. Network waits happen here, never in the main loop,
//! which learns of progress through a channel plus a wake-up pipe it polls.

use std::io;
use std::os::fd::BorrowedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::cycle::{self, Failure, Retrying, Update};
use crate::source::Source;
use crate::sys::wake::{self, Waiter};

pub enum Event {
    Retrying(Retrying),
    Done(Result<Update, Failure>),
}

pub struct Worker {
    requests: Sender<Instant>,
    events: Receiver<Event>,
    wake: Waiter,
}

impl Worker {
    pub fn spawn(config: Config, mut source: Box<dyn Source>) -> io::Result<Worker> {
        let (req_tx, req_rx) = mpsc::channel::<Instant>();
        let (ev_tx, ev_rx) = mpsc::channel();
        let (wake_rx, wake_tx) = wake::pipe()?;
        thread::Builder::new().name("fetch".into()).spawn(move || {
            let post = |ev: Event| {
                let _ = ev_tx.send(ev);
                wake_tx.wake();
            };
            // Blocks without polling until the main loop asks for a cycle.
            while let Ok(deadline) = req_rx.recv() {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    cycle::run(source.as_mut(), &config, deadline, &mut |r| {
                        post(Event::Retrying(r.clone()))
                    })
                }))
                .unwrap_or_else(|_| {
                    Err(Failure {
                        reason: "internal error: the fetch panicked".into(),
                        attempts: 0,
                        duration: Duration::ZERO,
                        retry_after: None,
                    })
                });
                post(Event::Done(outcome));
            }
        })?;
        Ok(Worker {
            requests: req_tx,
            events: ev_rx,
            wake: wake_rx,
        })
    }

    /// Starts a cycle whose retries end by `deadline`.
    pub fn start(&self, deadline: Instant) -> bool {
        self.requests.send(deadline).is_ok()
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
