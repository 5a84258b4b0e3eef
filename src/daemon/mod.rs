//! The main loop: waits on signals, the fetch thread and the next deadline
//! together, and publishes each good cycle's targets (`--once` publishes
//! through the same `output::publish`).

pub mod cycle;
pub mod schedule;
pub mod state;
pub mod worker;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::app::cli::exit;
use crate::config::Config;
use crate::daemon::cycle::{Accepted, Failure, Outcome, Update};
use crate::daemon::schedule::{Ping, Schedule};
use crate::daemon::state::{FileStamp, Refresh, State};
use crate::daemon::worker::{Event, Request, Worker};
use crate::model::text::count;
use crate::output::metrics::{self, Health};
use crate::output::publish::{self, Document, Failed, OnFailure};
use crate::output::render;
use crate::sys::clock;
use crate::sys::notify;
use crate::sys::signals::Signals;

/// Longest a cycle may take: its retries stop at the next scheduled cycle,
/// but the first try always gets the full HTTP timeout.
pub fn cycle_budget(config: &Config) -> Duration {
    config.update_interval.max(config.http_timeout)
}

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
    /// What the metrics file reports.
    health: Health,
    watchdog: Option<Duration>,
    /// SIGHUP came: the next cycle reads the secret files again first.
    reread: bool,
}

impl Daemon {
    pub fn new(config: Config, signals: Signals, worker: Worker, state: State) -> Daemon {
        let health = Health::new(state.targets.as_ref().map(|t| t.len()), state.changed_at);
        Daemon {
            health,
            config,
            signals,
            worker,
            state,
            watchdog: notify::watchdog_interval(),
            reread: false,
        }
    }

    /// Runs until SIGTERM/SIGINT; returns the exit code. The loop only
    /// waits and dispatches: `Schedule` decides what is due.
    pub fn run(mut self) -> i32 {
        let mut schedule = Schedule::new(
            Instant::now(),
            self.config.update_interval,
            cycle_budget(&self.config),
            wedge_grace(&self.config),
            self.watchdog,
        );
        if let Some(w) = self.watchdog {
            log::debug!("Watchdog enabled: pinging every {}", clock::human(w));
        }
        notify::ready(&self.state.status());
        self.write_metrics();
        loop {
            let now = Instant::now();
            if let Some(deadline) = schedule.start_cycle(now) {
                let request = Request {
                    deadline,
                    known: self.state.known_for(&self.config.targets_file),
                    reload: std::mem::take(&mut self.reread),
                };
                if !self.worker.start(request) {
                    log::error!(
                        "The fetch thread is gone; exiting so that systemd restarts the agent"
                    );
                    return exit::FAILURE;
                }
            }
            self.watchdog_due(schedule.ping(now));
            self.wait(schedule.sleep(Instant::now()));

            let pending = self.signals.take();
            if let Some(signal) = pending.stop {
                log::info!(SIGNAL = signal; "Received {signal}, stopping");
                notify::stopping("stopping");
                return exit::OK;
            }
            if pending.reload {
                self.reread = true;
                let running = schedule.reload();
                log::info!(
                    SIGNAL = "SIGHUP";
                    "Received SIGHUP: forcing a refresh{}",
                    if running { " after the cycle under way" } else { "" }
                );
                notify::reloading("reloading: refreshing the inventory now");
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
                    Event::Done(result) => self.finish(&mut schedule, *result),
                }
            }
        }
    }

    /// Pings the watchdog, or tells why not once a fetch is wedged.
    fn watchdog_due(&self, ping: Ping) {
        match ping {
            Ping::Send => notify::watchdog(),
            Ping::Wedged(age) => {
                log::error!(
                    "Inventory fetch stuck for {}, far past its deadline; \
                     stopping watchdog pings so that systemd restarts the agent",
                    clock::human(age)
                );
                notify::status("wedged: inventory fetch stuck; waiting for the watchdog");
            }
            Ping::NotDue | Ping::Withheld => {}
        }
    }

    /// Sleeps until a signal, a worker event or `timeout` (`None`: no limit).
    fn wait(&self, timeout: Option<Duration>) {
        let timeout = timeout.map(poll_timeout).unwrap_or(PollTimeout::NONE);
        let mut fds = [
            PollFd::new(self.signals.fd(), PollFlags::POLLIN),
            PollFd::new(self.worker.fd(), PollFlags::POLLIN),
        ];
        // EINTR just means a signal arrived; the flags say which.
        let _ = poll(&mut fds, timeout);
    }

    /// A cycle ended: publish its result and tell the service manager.
    fn finish(&mut self, schedule: &mut Schedule, result: Result<Outcome, Failure>) {
        let retry_after = result.as_ref().err().and_then(|f| f.retry_after);
        let done = schedule.cycle_done(Instant::now(), retry_after);
        let now = SystemTime::now();
        let next = now
            .checked_add(done.next_cycle.saturating_duration_since(Instant::now()))
            .unwrap_or(now);
        let started = Instant::now();
        let took = match &result {
            Ok(Outcome::Changed { update, .. }) => update.duration,
            Ok(Outcome::Unchanged { duration, .. } | Outcome::NotModified { duration, .. }) => {
                *duration
            }
            Err(failure) => failure.duration,
        };
        let ended = match result {
            Ok(Outcome::Changed { update, accepted }) => self.apply(update, accepted, next),
            Ok(Outcome::Unchanged {
                accepted,
                attempts,
                duration,
            }) => {
                self.keep(Some(accepted), attempts, duration, next);
                true
            }
            Ok(Outcome::NotModified { attempts, duration }) => {
                self.keep(None, attempts, duration, next);
                true
            }
            Err(failure) => {
                self.fail(&failure, next);
                true
            }
        };
        if let Some(refresh) = self.state.last_refresh.filter(|_| ended) {
            self.record(refresh, took.saturating_add(started.elapsed()));
        }
        crate::sys::alloc::release_free_memory();
        let status = self.state.status();
        if done.ready {
            notify::ready(&status);
        } else {
            notify::status(&status);
        }
    }

    /// Counts the refresh that just ended in the metrics, from what the
    /// file holds now, and writes the metrics file.
    fn record(&mut self, refresh: Refresh, took: Duration) {
        // A 304 is a success that leaves the file as it is.
        let result = match refresh {
            Refresh::Changed => metrics::Refresh::Changed,
            Refresh::Unchanged | Refresh::NotModified => metrics::Refresh::Unchanged,
            Refresh::Failed => metrics::Refresh::Failed,
        };
        self.health.targets = self.state.targets.as_ref().map(|t| t.len());
        self.health.last_change = self.state.changed_at;
        if let Some((_, invalid)) = self.state.accepted_counts {
            self.health.invalid_entries = invalid;
        }
        self.health.record(result, took, SystemTime::now());
        self.write_metrics();
    }

    fn write_metrics(&self) {
        if let Some(path) = &self.config.metrics_file {
            metrics::publish(path, &self.health, &self.config.source_name);
        }
    }

    /// Publishes a good update, or records why that failed. False when a
    /// stop abandoned the write.
    fn apply(&mut self, update: Update, accepted: Accepted, next: SystemTime) -> bool {
        let now = SystemTime::now();
        let counts = (update.sensor_count, update.invalid_count);
        let source = self.config.inventory_url.to_string();
        let fetched = update.fetched(&source);
        let groups = self.config.target_groups(update.targets);
        let groups = groups.as_slice();
        let kept = self.state.kept();
        let on_failure = OnFailure {
            kept: &kept,
            next_attempt: Some(next),
        };
        // SIGTERM during a large write abandons it: the old file stays.
        let signals = &self.signals;
        let mut render = |w: &mut dyn Write| render::render_to(w, groups);
        let doc = Document {
            path: &self.config.targets_file,
            render: &mut render,
            known: &mut self.state.file,
            keep: true,
        };
        match publish::publish_targets(
            doc,
            groups,
            &fetched,
            &mut self.state.targets,
            true,
            &|| signals.stop_requested(),
            &on_failure,
        ) {
            Ok(published) => {
                self.state
                    .succeeded(published.targets, published.changed, now);
                self.state.remember(accepted, &self.config.targets_file);
                self.state.accepted_counts = Some(counts);
                true
            }
            Err(Failed::Abandoned) => false,
            Err(Failed::Write(reason)) => {
                self.state.failed(&reason, now);
                true
            }
        }
    }

    /// A 304 (`accepted` is `None`) or the last accepted body again: the
    /// file already holds these targets, unless someone changed it meanwhile.
    fn keep(
        &mut self,
        accepted: Option<Accepted>,
        attempts: u32,
        duration: Duration,
        next: SystemTime,
    ) {
        let now = SystemTime::now();
        let path = &self.config.targets_file;
        let shown = path.display().to_string();
        if FileStamp::of(path) != self.state.written {
            self.state.forget();
            let failure = Failure {
                reason: format!(
                    "{shown} changed on disk during the refresh; the next one fetches the inventory in full"
                ),
                attempts,
                duration,
                retry_after: None,
            };
            return self.fail(&failure, next);
        }
        let n = self.state.targets.as_ref().map_or(0, |t| t.len());
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let url = self.config.inventory_url.to_string();
        let refresh = match accepted {
            None => {
                log::info!(
                    TARGET_COUNT = n, CHANGED = false, REFRESH = Refresh::NotModified.as_str(),
                    ATTEMPT = attempts, DURATION_MS = ms, TARGETS_FILE = shown.as_str(),
                    INVENTORY_URL = url.as_str();
                    "Inventory not modified (304): {} kept in {shown}",
                    count(n, "target", "targets")
                );
                Refresh::NotModified
            }
            Some(accepted) => {
                let (sensors, invalid) = self.state.accepted_counts.unwrap_or((n, 0));
                log::info!(
                    TARGET_COUNT = n, SENSOR_COUNT = sensors, INVALID_COUNT = invalid,
                    ADDED = 0, REMOVED = 0, CHANGED = false, REFRESH = Refresh::Unchanged.as_str(),
                    BODY_UNCHANGED = true, ATTEMPT = attempts, DURATION_MS = ms,
                    TARGETS_FILE = shown.as_str();
                    "Targets unchanged ({} from {} fetched in {}{}, the same body as before: \
                     not parsed again); {shown} left as it is",
                    count(n, "target", "targets"),
                    count(sensors, "sensor", "sensors"),
                    clock::human(duration),
                    if attempts > 1 { format!(" on attempt {attempts}") } else { String::new() }
                );
                // The server may have new validators for the same body.
                if !accepted.validators.is_empty() {
                    self.state.known.validators = Some(accepted.validators);
                }
                Refresh::Unchanged
            }
        };
        self.state.kept_as_is(refresh, now);
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
