//! sd_notify messages to the service manager. Without `NOTIFY_SOCKET`
//! every call is a no-op, so the agent runs the same outside systemd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::sys::logging;

/// STATUS= text as the service manager shows it: one line, no secrets,
/// escaped like the log (server text such as a redirect Location may be in it).
fn status_text(status: &str) -> String {
    logging::clean(status)
}

fn send(states: &[NotifyState]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        // Once is enough: the socket will not come back by itself.
        if !WARNED.swap(true, Ordering::Relaxed) {
            log::warn!(ERROR = e.to_string().as_str(); "Cannot notify the service manager: {e}");
        }
    }
}

pub fn ready(status: &str) {
    let status = status_text(status);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub fn status(status: &str) {
    let status = status_text(status);
    send(&[NotifyState::Status(&status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `RELOADING=1` must travel with `MONOTONIC_USEC` (systemd 253+).
pub fn reloading(status: &str) {
    let status = status_text(status);
    let status = status.as_str();
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status(status)]),
    }
}

pub fn stopping(status: &str) {
    let status = status_text(status);
    send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
}

/// The shortest ping interval: a tiny `WATCHDOG_USEC` must not make the
/// main loop spin.
pub const MIN_WATCHDOG_PING: Duration = Duration::from_millis(100);

/// How often to ping: half of `WATCHDOG_USEC`, when it is meant for us, but
/// no more often than every [`MIN_WATCHDOG_PING`].
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(ping_interval)
}

fn ping_interval(watchdog: Duration) -> Duration {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let half = watchdog / 2;
    if half >= MIN_WATCHDOG_PING {
        return half;
    }
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "WATCHDOG_USEC={} asks for a ping every {}us; pinging every {}ms instead",
            watchdog.as_micros(),
            half.as_micros(),
            MIN_WATCHDOG_PING.as_millis()
        );
    }
    MIN_WATCHDOG_PING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_interval_is_half_the_timeout_but_at_least_100ms() {
        assert_eq!(
            ping_interval(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            ping_interval(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
        assert_eq!(ping_interval(Duration::from_micros(1)), MIN_WATCHDOG_PING);
        assert_eq!(ping_interval(Duration::from_millis(150)), MIN_WATCHDOG_PING);
    }

    #[test]
    fn status_text_is_one_clean_line() {
        assert_eq!(status_text("plain status"), "plain status");
        assert_eq!(
            status_text("last: redirect to \"/\u{202e}x\u{2028}\n\""),
            "last: redirect to \"/\\u{202e}x\\u{2028}\\n\""
        );
        logging::register_secret("Status-Secr3t");
        assert_eq!(status_text("secret: Status-Secr3t"), "secret: ***");
    }
}
