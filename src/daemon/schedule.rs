//! When the daemon does what: cycles at a fixed rate, SIGHUP refreshes,
//! watchdog pings, and the wedge guard. Pure: every call takes `now`, so
//! the rules are tested without sleeping.

use std::time::{Duration, Instant};

/// The longest a server's `Retry-After` may postpone the next cycle.
pub const MAX_POSTPONE: Duration = Duration::from_secs(3600);

/// A cycle the fetch thread is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    started: Instant,
    deadline: Instant,
}

/// What to do about the watchdog now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// Nothing is due.
    NotDue,
    /// Send `WATCHDOG=1`.
    Send,
    /// A fetch is stuck far past its deadline: no ping, so that systemd
    /// restarts the agent. Reported once per stuck fetch, with its age.
    Wedged(Duration),
    /// Still wedged, already reported.
    Withheld,
}

/// What a finished cycle means for the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// When the next cycle will start.
    pub next_cycle: Instant,
    /// `READY=1` is owed: the refresh a SIGHUP asked for is complete.
    pub ready: bool,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    budget: Duration,
    wedge_grace: Duration,
    watchdog: Option<Duration>,
    next_cycle: Instant,
    next_ping: Instant,
    in_flight: Option<InFlight>,
    /// A SIGHUP asked for a fresh cycle that has not started yet.
    refresh_queued: bool,
    /// READY=1 is owed once the refresh asked for by SIGHUP is done.
    reloading: bool,
    wedged_reported: bool,
}

impl Schedule {
    /// `budget` is the longest a cycle may take; a fetch `wedge_grace` past
    /// it counts as wedged. The first cycle is due at `now`.
    pub fn new(
        now: Instant,
        interval: Duration,
        budget: Duration,
        wedge_grace: Duration,
        watchdog: Option<Duration>,
    ) -> Schedule {
        Schedule {
            interval,
            budget,
            wedge_grace,
            watchdog,
            next_cycle: now,
            next_ping: now,
            in_flight: None,
            refresh_queued: false,
            reloading: false,
            wedged_reported: false,
        }
    }

    /// Starts a cycle if one is due and none is running; returns its
    /// deadline. Cycles keep a fixed rate: a long cycle does not shift the
    /// ones after it.
    pub fn start_cycle(&mut self, now: Instant) -> Option<Instant> {
        if self.in_flight.is_some() || !(self.refresh_queued || now >= self.next_cycle) {
            return None;
        }
        let deadline = after(now, self.budget);
        self.in_flight = Some(InFlight {
            started: now,
            deadline,
        });
        self.refresh_queued = false;
        self.next_cycle = after(now, self.interval);
        Some(deadline)
    }

    /// A SIGHUP: refresh as soon as no cycle is running. Returns whether a
    /// cycle is under way (the refresh then follows it).
    pub fn reload(&mut self) -> bool {
        self.refresh_queued = true;
        self.reloading = true;
        self.in_flight.is_some()
    }

    /// Whether to ping the watchdog now.
    pub fn ping(&mut self, now: Instant) -> Ping {
        let Some(period) = self.watchdog else {
            return Ping::NotDue;
        };
        if now < self.next_ping {
            return Ping::NotDue;
        }
        self.next_ping = after(now, period);
        match self.in_flight {
            Some(f) if now > after(f.deadline, self.wedge_grace) => {
                if self.wedged_reported {
                    Ping::Withheld
                } else {
                    self.wedged_reported = true;
                    Ping::Wedged(now.saturating_duration_since(f.started))
                }
            }
            _ => Ping::Send,
        }
    }

    /// The fetch thread finished. A server's `Retry-After` postpones the
    /// next cycle, by at most [`MAX_POSTPONE`].
    pub fn cycle_done(&mut self, now: Instant, retry_after: Option<Duration>) -> Done {
        self.in_flight = None;
        self.wedged_reported = false;
        if let Some(wait) = retry_after {
            self.next_cycle = self.next_cycle.max(after(now, wait.min(MAX_POSTPONE)));
        }
        let ready = self.reloading && !self.refresh_queued;
        if ready {
            self.reloading = false;
        }
        Done {
            next_cycle: self.next_cycle,
            ready,
        }
    }

    /// How long the loop may sleep: until the next cycle (unless one is
    /// running) or the next ping, whichever is first; `None` is "until
    /// something happens".
    pub fn sleep(&self, now: Instant) -> Option<Duration> {
        let cycle = (self.in_flight.is_none()).then_some(self.next_cycle);
        let ping = self.watchdog.map(|_| self.next_ping);
        [cycle, ping]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now))
    }
}

/// `t + d`, or `t` itself in the (absurd) case that it overflows.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn sched(watchdog: Option<Duration>) -> (Schedule, Instant) {
        let t0 = Instant::now();
        // interval 30 s, budget 30 s, wedged 20 s past the deadline
        (Schedule::new(t0, 30 * S, 30 * S, 20 * S, watchdog), t0)
    }

    #[test]
    fn first_cycle_at_once_then_at_a_fixed_rate() {
        let (mut s, t0) = sched(None);
        assert_eq!(s.start_cycle(t0), Some(t0 + 30 * S));
        assert_eq!(s.start_cycle(t0), None, "one cycle at a time");
        assert_eq!(s.sleep(t0), None, "nothing to wake for while a cycle runs");
        // A cycle that took 12 s does not shift the next one.
        let done = s.cycle_done(t0 + 12 * S, None);
        assert_eq!(done.next_cycle, t0 + 30 * S);
        assert!(!done.ready);
        assert_eq!(s.sleep(t0 + 12 * S), Some(18 * S));
        assert_eq!(s.start_cycle(t0 + 29 * S), None);
        assert_eq!(s.start_cycle(t0 + 30 * S), Some(t0 + 60 * S));
    }

    #[test]
    fn a_cycle_longer_than_the_interval_is_followed_at_once() {
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        s.cycle_done(t0 + 45 * S, None);
        assert_eq!(s.sleep(t0 + 45 * S), Some(Duration::ZERO));
        assert_eq!(s.start_cycle(t0 + 45 * S), Some(t0 + 75 * S));
        // and the rate restarts from there
        s.cycle_done(t0 + 46 * S, None);
        assert_eq!(s.sleep(t0 + 46 * S), Some(29 * S));
    }

    #[test]
    fn sighup_while_idle_refreshes_now_and_owes_ready() {
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        s.cycle_done(t0 + S, None);
        assert!(!s.reload(), "no cycle was running");
        assert!(
            s.start_cycle(t0 + 2 * S).is_some(),
            "forced before its time"
        );
        assert!(s.cycle_done(t0 + 3 * S, None).ready);
        assert!(
            !s.cycle_done(t0 + 4 * S, None).ready,
            "READY=1 is owed once"
        );
    }

    #[test]
    fn sighup_during_a_fetch_runs_a_fresh_cycle_after_it() {
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        assert!(s.reload(), "a cycle is running");
        assert_eq!(s.start_cycle(t0 + S), None, "never two at once");
        // The running cycle began before the SIGHUP: its end owes nothing.
        assert!(!s.cycle_done(t0 + 2 * S, None).ready);
        assert!(s.start_cycle(t0 + 2 * S).is_some(), "the fresh cycle");
        assert!(s.cycle_done(t0 + 3 * S, None).ready);
    }

    #[test]
    fn sighup_bursts_coalesce_into_one_refresh() {
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        s.cycle_done(t0 + S, None);
        for _ in 0..50 {
            s.reload();
        }
        assert!(s.start_cycle(t0 + 2 * S).is_some());
        assert!(s.cycle_done(t0 + 3 * S, None).ready);
        assert_eq!(s.start_cycle(t0 + 4 * S), None, "only one refresh");
    }

    #[test]
    fn retry_after_postpones_within_a_cap() {
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        let d = s.cycle_done(t0 + S, Some(600 * S));
        assert_eq!(d.next_cycle, t0 + 601 * S);
        assert_eq!(s.start_cycle(t0 + 300 * S), None);
        // A short Retry-After never pulls the next cycle forward.
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        assert_eq!(s.cycle_done(t0 + S, Some(S)).next_cycle, t0 + 30 * S);
        // Nor can a huge one overflow or postpone past the cap.
        let (mut s, t0) = sched(None);
        s.start_cycle(t0);
        let d = s.cycle_done(t0, Some(Duration::MAX));
        assert_eq!(d.next_cycle, t0 + MAX_POSTPONE);
        // SIGHUP still forces a fetch during the pause.
        s.reload();
        assert!(s.start_cycle(t0 + S).is_some());
    }

    #[test]
    fn watchdog_pings_at_its_period_also_during_a_slow_fetch() {
        let (mut s, t0) = sched(Some(10 * S));
        assert_eq!(s.ping(t0), Ping::Send);
        assert_eq!(s.ping(t0 + 5 * S), Ping::NotDue);
        s.start_cycle(t0);
        assert_eq!(s.sleep(t0 + 5 * S), Some(5 * S), "wakes for the ping");
        // Within deadline + grace (30 + 20 s) a slow fetch is not wedged.
        for k in 1..=5 {
            assert_eq!(s.ping(t0 + k * 10 * S), Ping::Send, "at {k}0 s");
        }
    }

    #[test]
    fn a_wedged_fetch_stops_the_pings_and_is_reported_once() {
        let (mut s, t0) = sched(Some(10 * S));
        s.start_cycle(t0);
        assert_eq!(s.ping(t0 + 50 * S), Ping::Send, "at the grace limit");
        assert_eq!(s.ping(t0 + 61 * S), Ping::Wedged(61 * S));
        assert_eq!(s.ping(t0 + 71 * S), Ping::Withheld);
        assert_eq!(s.ping(t0 + 81 * S), Ping::Withheld);
        // Should the fetch come back after all, pings resume.
        s.cycle_done(t0 + 85 * S, None);
        assert_eq!(s.ping(t0 + 91 * S), Ping::Send);
    }

    #[test]
    fn without_a_watchdog_there_is_never_a_ping() {
        let (mut s, t0) = sched(None);
        assert_eq!(s.ping(t0), Ping::NotDue);
        assert_eq!(s.ping(t0 + 1000 * S), Ping::NotDue);
    }
}
