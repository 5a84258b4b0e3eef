//! The main loop: waits on signals, the fetch thread and the next deadline
//! together, and is the only place that writes the targets file.

use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::clock;
use crate::config::Config;
use crate::cycle::{Failure, Update};
use crate::notify;
use crate::signals::Signals;
use crate::state::State;
use crate::targets::{self, TargetGroup, TargetSet};
use crate::worker::{Event, Worker};
use crate::writer::{self, Outcome};

/// A cycle the fetch thread is running.
struct InFlight {
    started: Instant,
    deadline: Instant,
}

/// Longest a cycle may take: its retries stop at the next scheduled cycle,
/// but the first try always gets the full HTTP timeout.
pub fn cycle_budget(config: &Config) -> Duration {
    config.update_interval.max(config.http_timeout)
}

/// The longest a server's `Retry-After` may postpone the next cycle.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Past its deadline by this much, a fetch counts as wedged: the watchdog
/// pings stop so that systemd restarts us.
fn wedge_grace(config: &Config) -> Duration {
    config.http_timeout + Duration::from_secs(10)
}

pub struct Daemon {
    config: Config,
    signals: Signals,
    worker: Worker,
    state: State,
    watchdog: Option<Duration>,
}

impl Daemon {
    pub fn new(config: Config, signals: Signals, worker: Worker, state: State) -> Daemon {
        Daemon {
            config,
            signals,
            worker,
            state,
            watchdog: notify::watchdog_interval(),
        }
    }

    /// Runs until SIGTERM/SIGINT; returns the exit code.
    pub fn run(mut self) -> i32 {
        let interval = self.config.update_interval;
        let mut next_cycle = Instant::now();
        let mut next_ping = Instant::now();
        let mut in_flight: Option<InFlight> = None;
        // A SIGHUP asked for a fresh cycle that has not started yet.
        let mut refresh_queued = false;
        // READY=1 is owed once the refresh asked for by SIGHUP is done.
        let mut reloading = false;
        let mut wedged_logged = false;

        if let Some(w) = self.watchdog {
            log::debug!("Watchdog enabled: pinging every {}", clock::human(w));
        }
        notify::ready(&self.state.status());

        loop {
            let now = Instant::now();
            if in_flight.is_none() && (refresh_queued || now >= next_cycle) {
                let deadline = now + cycle_budget(&self.config);
                if !self.worker.start(deadline) {
                    log::error!(
                        "The fetch thread is gone; exiting so that systemd restarts the agent"
                    );
                    return crate::cli::exit::FAILURE;
                }
                in_flight = Some(InFlight {
                    started: now,
                    deadline,
                });
                refresh_queued = false;
                // Fixed rate: the schedule does not drift by cycle length.
                next_cycle = now + interval;
            }

            if let Some(period) = self.watchdog {
                if now >= next_ping {
                    let wedged = in_flight
                        .as_ref()
                        .is_some_and(|f| now > f.deadline + wedge_grace(&self.config));
                    if !wedged {
                        notify::watchdog();
                    } else if !wedged_logged {
                        wedged_logged = true;
                        let age = in_flight
                            .as_ref()
                            .map(|f| now - f.started)
                            .unwrap_or_default();
                        log::error!(
                            "Inventory fetch stuck for {}, far past its deadline; \
                             stopping watchdog pings so that systemd restarts the agent",
                            clock::human(age)
                        );
                        notify::status("wedged: inventory fetch stuck; waiting for the watchdog");
                    }
                    next_ping = now + period;
                }
            }

            let mut wake_at = Vec::with_capacity(2);
            if in_flight.is_none() {
                wake_at.push(next_cycle);
            }
            if self.watchdog.is_some() {
                wake_at.push(next_ping);
            }
            let timeout = wake_at
                .into_iter()
                .min()
                .map(|t| poll_timeout(t.saturating_duration_since(Instant::now())))
                .unwrap_or(PollTimeout::NONE);
            {
                let mut fds = [
                    PollFd::new(self.signals.fd(), PollFlags::POLLIN),
                    PollFd::new(self.worker.fd(), PollFlags::POLLIN),
                ];
                // EINTR just means a signal arrived; the flags say which.
                let _ = poll(&mut fds, timeout);
            }

            let pending = self.signals.take();
            if let Some(signal) = pending.stop {
                log::info!(SIGNAL = signal; "Received {signal}, stopping");
                notify::stopping("stopping");
                return crate::cli::exit::OK;
            }
            if pending.reload {
                let running = in_flight.is_some();
                log::info!(
                    SIGNAL = "SIGHUP";
                    "Received SIGHUP: forcing a refresh{}",
                    if running { " after the cycle under way" } else { "" }
                );
                notify::reloading("reloading: refreshing the inventory now");
                refresh_queued = true;
                reloading = true;
            }

            for event in self.worker.events() {
                match event {
                    Event::Retrying(r) => notify::status(&format!(
                        "fetch attempt {} failed ({}); retrying in {}; {}",
                        r.attempt,
                        r.reason,
                        clock::human(r.delay),
                        self.state.kept()
                    )),
                    Event::Done(result) => {
                        in_flight = None;
                        wedged_logged = false;
                        // A server that asked for a pause gets it, within reason.
                        if let Err(Failure {
                            retry_after: Some(wait),
                            ..
                        }) = &result
                        {
                            let now = Instant::now();
                            next_cycle = next_cycle
                                .max(now.checked_add((*wait).min(MAX_RETRY_AFTER)).unwrap_or(now));
                        }
                        let now = SystemTime::now();
                        let next = now
                            .checked_add(next_cycle.saturating_duration_since(Instant::now()))
                            .unwrap_or(now);
                        match result {
                            Ok(update) => self.apply(update, next),
                            Err(failure) => self.fail(&failure, next),
                        }
                        release_free_memory();
                        let status = self.state.status();
                        if reloading && !refresh_queued {
                            reloading = false;
                            notify::ready(&status);
                        } else {
                            notify::status(&status);
                        }
                    }
                }
            }
        }
    }

    /// Writes a good update, or records why that failed.
    fn apply(&mut self, update: Update, next: SystemTime) {
        let path = &self.config.targets_file;
        let shown = path.display().to_string();
        let now = SystemTime::now();
        let group = TargetGroup::from_config(update.targets, &self.config);
        let groups = std::slice::from_ref(&group);
        // SIGTERM during a large write abandons it: the old file stays.
        let signals = &self.signals;
        let stop = || signals.stop_requested();
        match writer::write_if_changed(path, &mut |w| {
            targets::render_to(&mut writer::Interruptible::new(w, &stop), groups)
        }) {
            Ok(outcome) => {
                let changed = outcome == Outcome::Written;
                let n = group.targets.len();
                // The old set goes before the new one is built: only one
                // is held at a time.
                let (added, removed) = match self.state.targets.take() {
                    Some(old) if changed => old.diff(&group.targets),
                    Some(_) => (0, 0),
                    None => (n, 0),
                };
                let (attempt, ms) = (update.attempts, update.duration.as_millis() as u64);
                if changed {
                    log::info!(
                        TARGET_COUNT = n, SENSOR_COUNT = update.sensor_count,
                        INVALID_COUNT = update.invalid_count, ADDED = added, REMOVED = removed,
                        CHANGED = true, ATTEMPT = attempt, DURATION_MS = ms, TARGETS_FILE = shown.as_str();
                        "Successfully updated targets file: {shown} ({n} targets, {added} added, {removed} removed)"
                    );
                } else {
                    log::info!(
                        TARGET_COUNT = n, SENSOR_COUNT = update.sensor_count,
                        INVALID_COUNT = update.invalid_count, ADDED = 0, REMOVED = 0,
                        CHANGED = false, ATTEMPT = attempt, DURATION_MS = ms, TARGETS_FILE = shown.as_str();
                        "Targets unchanged ({n} targets); {shown} left as it is"
                    );
                }
                let set = TargetSet::of(&group.targets);
                drop(group);
                self.state.succeeded(set, changed, now);
            }
            Err(e) if self.signals.stop_requested() => {
                log::info!(
                    TARGETS_FILE = shown.as_str();
                    "Stopping: write of {shown} abandoned ({e}); {}", self.state.kept()
                );
            }
            Err(e) => {
                let reason = e.to_string();
                log::error!(
                    ERROR = reason.as_str(), TARGETS_FILE = shown.as_str();
                    "Failed to write targets file {shown}: {reason}; {}; next attempt at {} UTC",
                    self.state.kept(),
                    clock::time_of_day(next)
                );
                self.state.failed(&reason, now);
            }
        }
    }

    fn fail(&mut self, failure: &Failure, next: SystemTime) {
        log::error!(
            ERROR = failure.reason.as_str(), ATTEMPT = failure.attempts,
            DURATION_MS = failure.duration.as_millis() as u64,
            INVENTORY_URL = self.config.inventory_url.to_string().as_str();
            "Failed to fetch inventory: {}; {}; next attempt at {} UTC",
            failure.reason,
            self.state.kept(),
            clock::time_of_day(next)
        );
        self.state.failed(&failure.reason, SystemTime::now());
    }
}

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
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Rounds up so that a wake-up never comes a hair early and spins.
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_round_up_and_clamp() {
        assert_eq!(poll_timeout(Duration::ZERO).as_millis(), Some(0));
        assert_eq!(poll_timeout(Duration::from_micros(1)).as_millis(), Some(1));
        assert_eq!(
            poll_timeout(Duration::from_millis(1500)).as_millis(),
            Some(1500)
        );
        assert_eq!(
            poll_timeout(Duration::from_secs(365 * 86_400)).as_millis(),
            Some(i32::MAX as u32)
        );
    }
}
