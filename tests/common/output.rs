//! The targets file: the agreed rendering, one independent `file_sd`
//! reader, good inventories whose rendering is known by construction, and
//! probes for temp files and untouched files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::Rng;

/// The default labels after `__metrics_path__`.
pub const DEFAULT_LABELS: &[(&str, &str)] = &[("job", "sensors"), ("environment", "production")];

/// Renders the targets file exactly as agreed: pretty JSON, 2-space indent,
/// trailing newline, `__metrics_path__` first, then the labels in order.
pub fn render(targets: &[&str], metrics_path: &str, labels: &[(&str, &str)]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut out = String::with_capacity(targets.iter().map(|t| t.len() + 10).sum::<usize>() + 200);
    out.push_str("[\n  {\n");
    if targets.is_empty() {
        out.push_str("    \"targets\": [],\n");
    } else {
        out.push_str("    \"targets\": [\n");
        for (i, t) in targets.iter().enumerate() {
            out.push_str("      ");
            out.push_str(&q(t));
            if i + 1 < targets.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("    ],\n");
    }
    out.push_str("    \"labels\": {\n");
    out.push_str(&format!("      \"__metrics_path__\": {}", q(metrics_path)));
    for (k, v) in labels {
        out.push_str(&format!(",\n      {}: {}", q(k), q(v)));
    }
    out.push_str("\n    }\n  }\n]\n");
    out
}

/// Renders with the default METRICS_PATH and TARGET_LABELS.
pub fn render_default(targets: &[&str]) -> String {
    render(targets, "/metrics", DEFAULT_LABELS)
}

/// One target group as read back from a file.
pub struct Group {
    pub targets: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// Reads a `file_sd` document strictly: a list of groups, each with only a
/// `targets` list of strings and a `labels` map of strings whose names are
/// valid Prometheus label names. Independent of the agent's own reader on
/// purpose, so that a format bug cannot cancel itself out.
pub fn parse_groups(content: &[u8]) -> Result<Vec<Group>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.as_array().ok_or("top level is not a list")?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let g = g.as_object().ok_or("group is not an object")?;
        if g.keys().any(|k| k != "targets" && k != "labels") {
            return Err(format!("unexpected key in group: {:?}", g.keys()));
        }
        let mut targets = Vec::new();
        for t in g
            .get("targets")
            .and_then(|t| t.as_array())
            .ok_or("no targets list")?
        {
            targets.push(t.as_str().ok_or("target is not a string")?.to_string());
        }
        let mut labels = Vec::new();
        if let Some(l) = g.get("labels") {
            for (k, v) in l.as_object().ok_or("labels is not an object")? {
                if !valid_label_name(k) {
                    return Err(format!("invalid label name {k:?}"));
                }
                let v = v.as_str().ok_or("label value is not a string")?;
                labels.push((k.clone(), v.to_string()));
            }
        }
        out.push(Group { targets, labels });
    }
    Ok(out)
}

/// All targets of a `file_sd` document read with `parse_groups`, in order.
pub fn parse_file_sd(content: &[u8]) -> Result<Vec<String>, String> {
    Ok(parse_groups(content)?
        .into_iter()
        .flat_map(|g| g.targets)
        .collect())
}

/// The target list of a targets file as the agent writes it: exactly one
/// group (read with `parse_groups`).
pub fn parse_targets(content: &[u8]) -> Result<Vec<String>, String> {
    let mut groups = parse_groups(content)?;
    if groups.len() != 1 {
        return Err(format!("expected 1 target group, got {}", groups.len()));
    }
    Ok(groups.remove(0).targets)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn valid_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Inode and mtime (ns) of a file, to prove it was not touched.
pub fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = fs::metadata(p).expect("stat targets file");
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// Names in `dir` that look like the agent's temp files for `file_name`.
pub fn temp_files(dir: &Path, file_name: &str) -> Vec<String> {
    let prefix = format!(".{file_name}.tmp.");
    names_in(dir, |n| n.starts_with(&prefix))
}

/// Names in `dir` with `.tmp` anywhere in them: stricter than
/// `temp_files`, for directories that should hold no temp file at all.
pub fn any_temp_files(dir: &Path) -> Vec<String> {
    names_in(dir, |n| n.contains(".tmp"))
}

fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default()
}

/// The line of `log` that reports a failed cycle (not a retry warning).
pub fn fetch_failure(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("Failed to fetch inventory: "))
}

/// Entries the agent must drop.
pub const INVALID: &[&str] = &[
    "",
    " ",
    "bad name",
    "a/b",
    "http://x",
    "\"q\"",
    "sénsor",
    "-lead",
    "trail-",
    "a..b",
    "x:0",
    "x:65536",
    "256.1.1.1",
    "fe80::1%eth0",
    "evil\n2025-01-01 00:00:00 - sd-updater - ERROR - forged",
    "\u{1b}[31mred",
    "nul\u{0}byte",
];

/// An inventory whose correct rendering is known by construction, not by
/// asking the code under test.
pub struct GoodList {
    /// The JSON body served.
    pub body: Arc<Vec<u8>>,
    /// Sorted, unique targets the agent must write.
    pub targets: Vec<String>,
    /// The exact file content expected.
    pub rendered: Arc<Vec<u8>>,
}

/// One valid entry and the target it must become (port 9100 default).
fn valid_entry(rng: &mut Rng) -> (String, String) {
    let port = rng.range(1, 65535);
    match rng.below(8) {
        0..=2 => {
            let n = rng.below(30_000);
            (format!("sensor_{n}"), format!("sensor_{n}:9100"))
        }
        3 => {
            let n = rng.below(5_000);
            let h = format!("Host-{n}.site{}.example", n % 7);
            (h.clone(), format!("{h}:9100"))
        }
        4 => {
            let ip = format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.below(256)
            );
            if rng.chance(50) {
                (format!("{ip}:{port}"), format!("{ip}:{port}"))
            } else {
                (ip.clone(), format!("{ip}:9100"))
            }
        }
        5 => {
            let x = rng.range(1, 0xffff);
            (
                format!("2001:db8::{x:x}"),
                format!("[2001:db8::{x:x}]:9100"),
            )
        }
        6 => {
            let x = rng.range(1, 0xffff);
            (
                format!("[2001:db8::{x:x}]:{port}"),
                format!("[2001:db8::{x:x}]:{port}"),
            )
        }
        _ => {
            let n = rng.below(30_000);
            (format!("sensor_{n}:{port}"), format!("sensor_{n}:{port}"))
        }
    }
}

impl GoodList {
    /// About `n` distinct valid entries (at least one), some duplicated,
    /// a few invalid ones, shuffled.
    pub fn random(rng: &mut Rng, n: usize, invalid: usize) -> GoodList {
        let mut entries = Vec::with_capacity(n + n / 10 + invalid);
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let (e, t) = valid_entry(rng);
            entries.push(e);
            targets.push(t);
        }
        for _ in 0..(n / 20) {
            let i = rng.below(entries.len() as u64) as usize;
            entries.push(entries[i].clone());
        }
        for _ in 0..invalid {
            entries.push(INVALID[rng.below(INVALID.len() as u64) as usize].to_string());
        }
        rng.shuffle(&mut entries);
        GoodList::from_parts(&entries, targets)
    }

    /// Sensors `sensor_<prefix>_<i>` for i in 0..n.
    pub fn numbered(prefix: &str, n: usize) -> GoodList {
        let entries: Vec<String> = (0..n).map(|i| format!("sensor_{prefix}_{i:07}")).collect();
        let targets = entries.iter().map(|e| format!("{e}:9100")).collect();
        GoodList::from_parts(&entries, targets)
    }

    pub fn from_parts(entries: &[String], mut targets: Vec<String>) -> GoodList {
        targets.sort();
        targets.dedup();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let rendered = render_default(&refs).into_bytes();
        GoodList {
            body: Arc::new(serde_json::to_vec(entries).unwrap()),
            targets,
            rendered: Arc::new(rendered),
        }
    }

    /// The same set, served in another order with other duplicates.
    pub fn reshuffled(&self, rng: &mut Rng) -> GoodList {
        let mut entries: Vec<String> = serde_json::from_slice(&self.body).unwrap();
        let extra = rng.below(entries.len() as u64 / 10 + 2) as usize;
        for _ in 0..extra {
            let i = rng.below(entries.len() as u64) as usize;
            entries.push(entries[i].clone());
        }
        rng.shuffle(&mut entries);
        GoodList {
            body: Arc::new(serde_json::to_vec(&entries).unwrap()),
            targets: self.targets.clone(),
            rendered: self.rendered.clone(),
        }
    }
}
