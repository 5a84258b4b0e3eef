//! Health metrics for node_exporter's textfile collector: a `Health`
//! record the caller updates after each refresh, its rendering in the
//! Prometheus text format 0.0.4, and the write through the atomic writer.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::output::writer::{self, WriteError};

/// What one refresh came to, as `sd_updater_refreshes_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The targets file was written.
    Changed,
    /// Success without a write: same targets, or the source not modified.
    Unchanged,
    /// Nothing usable: the file keeps what it held.
    Failed,
}

impl Refresh {
    const ALL: [Refresh; 3] = [Refresh::Changed, Refresh::Unchanged, Refresh::Failed];

    fn label(self) -> &'static str {
        match self {
            Refresh::Changed => "changed",
            Refresh::Unchanged => "unchanged",
            Refresh::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        match self {
            Refresh::Changed => 0,
            Refresh::Unchanged => 1,
            Refresh::Failed => 2,
        }
    }
}

/// What the metrics file reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Targets in the file; `None` while there is no file.
    pub targets: Option<usize>,
    /// Entries dropped from the last accepted inventory.
    pub invalid_entries: usize,
    pub last_success: Option<SystemTime>,
    pub last_change: Option<SystemTime>,
    pub refresh_duration: Duration,
    /// Per result, in `Refresh::ALL` order.
    refreshes: [u64; 3],
    /// The last refresh failed while the file holds older targets.
    pub stale: bool,
}

impl Health {
    /// The state at start-up: what an existing file holds, and when it
    /// last changed (its mtime).
    pub fn new(targets: Option<usize>, last_change: Option<SystemTime>) -> Health {
        Health {
            targets,
            last_change,
            ..Health::default()
        }
    }

    /// Counts a refresh that ended at `now`. The caller sets `targets` and
    /// `last_change` first, from what the file holds now.
    pub fn record(&mut self, refresh: Refresh, took: Duration, now: SystemTime) {
        if let Some(n) = self.refreshes.get_mut(refresh.index()) {
            *n = n.saturating_add(1);
        }
        self.refresh_duration = took;
        if refresh != Refresh::Failed {
            self.last_success = Some(now);
        }
        self.stale = refresh == Refresh::Failed && self.targets.is_some();
    }

    pub fn refreshes(&self, refresh: Refresh) -> u64 {
        self.refreshes.get(refresh.index()).copied().unwrap_or(0)
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds since the epoch with milliseconds; 0 for never, or for a time
/// before 1970.
fn unix_seconds(t: Option<SystemTime>) -> String {
    let d = t
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    seconds(d)
}

fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The metrics document: every series labelled `source`, no timestamps.
pub fn render(h: &Health, source: &str, version: &str) -> String {
    let source = escape_label(source);
    let mut out = String::with_capacity(2048);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{source=\"{source}\"{labels}}} {value}");
        }
    };
    let one = |value: String| [(String::new(), value)];
    family(
        "sd_updater_build_info",
        "gauge",
        "Always 1; the version label is the agent's version.",
        &[(
            format!(",version=\"{}\"", escape_label(version)),
            "1".into(),
        )],
    );
    family(
        "sd_updater_targets",
        "gauge",
        "Targets in the targets file now.",
        &one(h.targets.unwrap_or(0).to_string()),
    );
    family(
        "sd_updater_invalid_entries",
        "gauge",
        "Entries dropped from the last accepted inventory.",
        &one(h.invalid_entries.to_string()),
    );
    family(
        "sd_updater_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful refresh, changed or not (0: none yet).",
        &one(unix_seconds(h.last_success)),
    );
    family(
        "sd_updater_last_change_timestamp_seconds",
        "gauge",
        "Unix time the targets file last changed (0: no file).",
        &one(unix_seconds(h.last_change)),
    );
    family(
        "sd_updater_refresh_duration_seconds",
        "gauge",
        "How long the last refresh took.",
        &one(seconds(h.refresh_duration)),
    );
    let counts: Vec<(String, String)> = Refresh::ALL
        .iter()
        .map(|r| {
            (
                format!(",result=\"{}\"", r.label()),
                h.refreshes(*r).to_string(),
            )
        })
        .collect();
    family(
        "sd_updater_refreshes_total",
        "counter",
        "Refreshes by result: changed, unchanged or failed.",
        &counts,
    );
    family(
        "sd_updater_stale",
        "gauge",
        "1 while the last refresh failed and the file holds older targets.",
        &one(u8::from(h.stale).to_string()),
    );
    out
}

/// Writes the metrics document to `path` atomically (mode 0644, a temp
/// name that does not match `*.prom`).
pub fn write(path: &Path, h: &Health, source: &str) -> Result<(), WriteError> {
    let text = render(h, source, env!("CARGO_PKG_VERSION"));
    writer::write_if_changed(path, &mut |w| w.write_all(text.as_bytes())).map(|_| ())
}

/// `write`, with a failure logged as a warning: the metrics file never
/// fails a cycle.
pub fn publish(path: &Path, h: &Health, source: &str) {
    if let Err(e) = write(path, h, source) {
        let shown = path.display().to_string();
        log::warn!(
            METRICS_FILE = shown.as_str(), ERROR = e.to_string().as_str();
            "Cannot write metrics file {shown}: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(s)
    }

    fn sample<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn a_fresh_record_exports_every_series_as_zero() {
        let text = render(&Health::default(), "targets", "1.2.3");
        for name in [
            "sd_updater_build_info",
            "sd_updater_targets",
            "sd_updater_invalid_entries",
            "sd_updater_last_success_timestamp_seconds",
            "sd_updater_last_change_timestamp_seconds",
            "sd_updater_refresh_duration_seconds",
            "sd_updater_refreshes_total",
            "sd_updater_stale",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert_eq!(
            sample(
                &text,
                "sd_updater_build_info{source=\"targets\",version=\"1.2.3\"}"
            ),
            "1"
        );
        for r in ["changed", "unchanged", "failed"] {
            let s = format!("sd_updater_refreshes_total{{source=\"targets\",result=\"{r}\"}}");
            assert_eq!(sample(&text, &s), "0");
        }
        assert_eq!(
            sample(
                &text,
                "sd_updater_last_success_timestamp_seconds{source=\"targets\"}"
            ),
            "0.000"
        );
        assert!(text.contains("# TYPE sd_updater_refreshes_total counter\n"));
        assert!(text.ends_with('\n'));
        // Every sample line carries the source label and no timestamp.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.contains("{source=\"targets\""), "{l}");
            assert_eq!(l.split(' ').count(), 2, "{l}");
        }
    }

    #[test]
    fn outcomes_move_counters_timestamps_and_stale() {
        let mut h = Health::new(Some(3), Some(t(1_000)));
        h.record(Refresh::Failed, Duration::from_millis(250), t(2_000));
        assert!(h.stale);
        assert_eq!(h.last_success, None);
        h.record(Refresh::Unchanged, Duration::from_millis(10), t(3_500));
        assert!(!h.stale);
        assert_eq!(h.last_success, Some(t(3_500)));
        h.targets = Some(5);
        h.last_change = Some(t(4_000));
        h.invalid_entries = 2;
        h.record(Refresh::Changed, Duration::from_millis(1_500), t(4_000));
        let text = render(&h, "netbox", "0.1.0");
        let get = |name: &str| sample(&text, &format!("{name}{{source=\"netbox\"}}")).to_string();
        assert_eq!(get("sd_updater_targets"), "5");
        assert_eq!(get("sd_updater_invalid_entries"), "2");
        assert_eq!(get("sd_updater_last_success_timestamp_seconds"), "4.000");
        assert_eq!(get("sd_updater_last_change_timestamp_seconds"), "4.000");
        assert_eq!(get("sd_updater_refresh_duration_seconds"), "1.500");
        assert_eq!(get("sd_updater_stale"), "0");
        for (r, n) in [("changed", 1), ("unchanged", 1), ("failed", 1)] {
            let s = format!("sd_updater_refreshes_total{{source=\"netbox\",result=\"{r}\"}}");
            assert_eq!(sample(&text, &s), n.to_string());
        }
    }

    #[test]
    fn a_failure_without_a_file_is_not_stale() {
        let mut h = Health::default();
        h.record(Refresh::Failed, Duration::ZERO, t(1));
        assert!(!h.stale);
        assert_eq!(h.refreshes(Refresh::Failed), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let text = render(&Health::default(), "x\"y", "1");
        assert!(text.contains("{source=\"x\\\"y\"}"), "{text}");
    }

    #[test]
    fn times_before_the_epoch_are_zero() {
        let before = UNIX_EPOCH.checked_sub(Duration::from_secs(5));
        assert_eq!(unix_seconds(before), "0.000");
        assert_eq!(unix_seconds(None), "0.000");
    }
}
