//! What the agent knows about its own progress: the one place state lives.
//! It feeds the STATUS= line and the ADDED/REMOVED counts.

use std::time::SystemTime;

use crate::model::targets::TargetSet;
use crate::model::text::count;
use crate::output::writer::FileDigest;
use crate::sys::clock;

#[derive(Debug, Default, Clone)]
pub struct State {
    /// Targets the file holds, when known.
    pub targets: Option<TargetSet>,
    /// The file's content hash and identity, when known: an unchanged
    /// render is told without reading the file.
    pub file: Option<FileDigest>,
    /// When the file's content last changed (or its mtime at start-up).
    pub changed_at: Option<SystemTime>,
    /// When a cycle last succeeded.
    pub checked_at: Option<SystemTime>,
    /// Start of the current run of failed cycles.
    pub failing_since: Option<SystemTime>,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// Cuts a reason short for the one-line STATUS=.
fn short(reason: &str) -> String {
    const MAX: usize = 120;
    if reason.chars().count() <= MAX {
        reason.to_string()
    } else {
        format!("{}...", reason.chars().take(MAX).collect::<String>())
    }
}

fn targets(t: &TargetSet) -> String {
    count(t.len(), "target", "targets")
}

fn at(t: SystemTime) -> String {
    clock::time_of_day(t)
}

impl State {
    pub fn succeeded(&mut self, targets: Option<TargetSet>, changed: bool, now: SystemTime) {
        if changed || self.changed_at.is_none() {
            self.changed_at = Some(now);
        }
        self.targets = targets;
        self.checked_at = Some(now);
        self.failing_since = None;
        self.failures = 0;
        self.last_error = None;
    }

    pub fn failed(&mut self, reason: &str, now: SystemTime) {
        self.failing_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason.to_string());
    }

    /// What the file holds, for messages: `keeping 100 targets from 09:59:30`.
    pub fn kept(&self) -> String {
        match (&self.targets, self.changed_at) {
            (Some(t), Some(when)) => format!("keeping {} from {} UTC", targets(t), at(when)),
            (Some(t), None) => format!("keeping {}", targets(t)),
            (None, _) => "no targets written yet".to_string(),
        }
    }

    /// The STATUS= line after a cycle.
    pub fn status(&self) -> String {
        if let (Some(since), Some(err)) = (self.failing_since, &self.last_error) {
            let n = self.failures;
            return format!(
                "update failing since {} UTC ({}, last: {}); {}",
                at(since),
                count(
                    usize::try_from(n).unwrap_or(usize::MAX),
                    "failure",
                    "failures"
                ),
                short(err),
                self.kept()
            );
        }
        match (&self.targets, self.checked_at) {
            (Some(t), Some(checked)) => {
                let changed = self.changed_at.map(at).unwrap_or_default();
                format!(
                    "{}, updated {} UTC (last change {changed} UTC)",
                    targets(t),
                    at(checked)
                )
            }
            _ => format!("starting: first fetch under way; {}", self.kept()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn set(n: usize) -> Option<TargetSet> {
        let names: Vec<String> = (0..n).map(|i| format!("s{i}:1")).collect();
        Some(TargetSet::from_strings(names.iter().map(String::as_str)))
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_735_992_000 + s) // 2025-01-04 12:00:00
    }

    #[test]
    fn status_lines() {
        let mut s = State::default();
        assert_eq!(
            s.status(),
            "starting: first fetch under way; no targets written yet"
        );
        s.succeeded(set(100), true, t(0));
        s.succeeded(set(100), false, t(30));
        assert_eq!(
            s.status(),
            "100 targets, updated 12:00:30 UTC (last change 12:00:00 UTC)"
        );
        s.failed("HTTP 503", t(33));
        s.failed("HTTP 503", t(63));
        s.failed("connection refused", t(93));
        assert_eq!(
            s.status(),
            "update failing since 12:00:33 UTC (3 failures, last: connection refused); \
             keeping 100 targets from 12:00:00 UTC"
        );
        s.succeeded(set(1), true, t(120));
        assert_eq!(s.failures, 0);
        assert_eq!(
            s.status(),
            "1 target, updated 12:02:00 UTC (last change 12:02:00 UTC)"
        );
        s.failed("HTTP 503", t(150));
        assert_eq!(
            s.status(),
            "update failing since 12:02:30 UTC (1 failure, last: HTTP 503); \
             keeping 1 target from 12:02:00 UTC"
        );
        s.succeeded(set(0), true, t(180));
        assert!(
            s.status().starts_with("0 targets, updated"),
            "{}",
            s.status()
        );
    }

    #[test]
    fn long_errors_are_cut() {
        let mut s = State::default();
        s.failed(&"x".repeat(500), t(0));
        assert!(s.status().len() < 250);
    }
}
