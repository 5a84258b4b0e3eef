//! What the agent knows about its own progress: the one place state lives.
//! It feeds the STATUS= line and the ADDED/REMOVED counts.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::daemon::cycle::{Accepted, Known};
use crate::model::targets::TargetSet;
use crate::model::text::count;
use crate::output::writer::{self, FileDigest};
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
    /// How the last refresh ended: the hook for counting them.
    pub last_refresh: Option<Refresh>,
    /// Validators and body hash of the last accepted response.
    pub known: Known,
    /// The targets file as it was once `known` was published to it.
    pub written: Option<FileStamp>,
    /// Sensors and invalid entries of the last accepted inventory.
    pub accepted_counts: Option<(usize, usize)>,
}

/// How one refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// A new inventory changed the targets file.
    Changed,
    /// A new body (parsed) or the same body (not parsed) that left the file
    /// as it was.
    Unchanged,
    /// `304 Not Modified`: nothing parsed or written.
    NotModified,
    /// No usable answer, or the file could not be written.
    Failed,
}

impl Refresh {
    /// `changed`, `unchanged`, `not_modified` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refresh::Changed => "changed",
            Refresh::Unchanged => "unchanged",
            Refresh::NotModified => "not_modified",
            Refresh::Failed => "failed",
        }
    }
}

/// Identity and version of a file: another inode, size or mtime means
/// someone else replaced or edited it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    /// The stamp of `path`, reached as the writer reaches it; `None` when
    /// it is missing or not a regular file we can open.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = writer::open_existing_reader(path).ok()??.metadata().ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
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
        self.last_refresh = Some(if changed {
            Refresh::Changed
        } else {
            Refresh::Unchanged
        });
        if changed || self.changed_at.is_none() {
            self.changed_at = Some(now);
        }
        self.targets = targets;
        self.checked_at = Some(now);
        self.failing_since = None;
        self.failures = 0;
        self.last_error = None;
    }

    /// A refresh that changed nothing: a 304, or the last accepted body.
    pub fn kept_as_is(&mut self, refresh: Refresh, now: SystemTime) {
        self.checked_at = Some(now);
        self.failing_since = None;
        self.failures = 0;
        self.last_error = None;
        self.last_refresh = Some(refresh);
    }

    /// Remembers a response whose targets `path` now holds.
    pub fn remember(&mut self, accepted: Accepted, path: &Path) {
        self.written = FileStamp::of(path);
        self.known = match self.written {
            Some(_) => Known {
                validators: Some(accepted.validators).filter(|v| !v.is_empty()),
                body_hash: accepted.body_hash,
            },
            None => Known::default(),
        };
    }

    /// What the next request may build on: nothing once the targets file
    /// is not the one last written, since a 304 or an unchanged body would
    /// then leave it missing or changed for good.
    pub fn known_for(&mut self, path: &Path) -> Known {
        if self.known != Known::default() && FileStamp::of(path) != self.written {
            log::info!(
                TARGETS_FILE = path.display().to_string().as_str();
                "{} is not what this agent last wrote: fetching the inventory in full",
                path.display()
            );
            self.forget();
        }
        self.known.clone()
    }

    pub fn forget(&mut self) {
        self.known = Known::default();
        self.written = None;
    }

    pub fn failed(&mut self, reason: &str, now: SystemTime) {
        self.last_refresh = Some(Refresh::Failed);
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
                let how = match self.last_refresh {
                    Some(Refresh::NotModified) => "not modified; ",
                    _ => "",
                };
                format!(
                    "{}, updated {} UTC ({how}last change {changed} UTC)",
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
    fn a_304_says_not_modified() {
        let mut s = State::default();
        s.succeeded(set(2), true, t(0));
        s.kept_as_is(Refresh::NotModified, t(30));
        assert_eq!(
            s.status(),
            "2 targets, updated 12:00:30 UTC (not modified; last change 12:00:00 UTC)"
        );
        assert_eq!(s.last_refresh.map(Refresh::as_str), Some("not_modified"));
        s.kept_as_is(Refresh::Unchanged, t(60));
        assert_eq!(
            s.status(),
            "2 targets, updated 12:01:00 UTC (last change 12:00:00 UTC)"
        );
        s.failed("HTTP 503", t(90));
        assert_eq!(s.last_refresh, Some(Refresh::Failed));
    }

    #[test]
    fn nothing_is_known_once_the_file_is_not_the_one_written() {
        let dir = std::env::temp_dir().join(format!("sdu-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        std::fs::write(&path, b"[]").unwrap();
        let mut s = State::default();
        let accepted = Accepted {
            validators: crate::source::Validators {
                etag: Some("\"x\"".into()),
                last_modified: None,
                uri: String::new(),
            },
            body_hash: Some(crate::source::BodyHash::of(b"x")),
        };
        s.remember(accepted, &path);
        assert!(s.known_for(&path).validators.is_some());
        std::fs::write(&path, b"[ ]").unwrap();
        assert_eq!(s.known_for(&path), Known::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_errors_are_cut() {
        let mut s = State::default();
        s.failed(&"x".repeat(500), t(0));
        assert!(s.status().len() < 250);
    }
}
