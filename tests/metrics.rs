//! The health metrics file (METRICS_FILE) and SOURCE_NAME, driven through
//! the real binary: what each cycle outcome does to the series, the file's
//! mode and atomicity, failures that must not break the targets update,
//! the journald field, and promtool on the file and the alert rules.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

const NAMES: [&str; 8] = [
    "sd_updater_build_info",
    "sd_updater_targets",
    "sd_updater_invalid_entries",
    "sd_updater_last_success_timestamp_seconds",
    "sd_updater_last_change_timestamp_seconds",
    "sd_updater_refresh_duration_seconds",
    "sd_updater_refreshes_total",
    "sd_updater_stale",
];

/// The samples of a metrics file: `name{labels}` -> value, as written.
#[derive(Debug, Default, Clone)]
struct Samples(BTreeMap<String, String>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut map = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            map.insert(series.to_string(), value.to_string());
        }
        Samples(map)
    }

    fn read(path: &Path) -> Option<Samples> {
        fs::read_to_string(path).ok().map(|t| Samples::parse(&t))
    }

    /// The value of `name` with `source` and then `extra` labels.
    fn get(&self, name: &str, source: &str, extra: &str) -> Option<f64> {
        let key = format!("{name}{{source=\"{source}\"{extra}}}");
        self.0.get(&key).map(|v| v.parse().expect("a number"))
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, "targets", "")
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    fn refreshes(&self, result: &str) -> f64 {
        let extra = format!(",result=\"{result}\"");
        self.get("sd_updater_refreshes_total", "targets", &extra)
            .unwrap_or_else(|| panic!("no refreshes_total{{result={result}}} in {self:?}"))
    }

    fn counts(&self) -> (f64, f64, f64) {
        (
            self.refreshes("changed"),
            self.refreshes("unchanged"),
            self.refreshes("failed"),
        )
    }
}

fn metrics_path(dir: &TestDir) -> PathBuf {
    dir.join("out/sd-updater.prom")
}

fn with_metrics(dir: &TestDir, inv: &Server, notify: &NotifySocket) -> AgentCmd {
    daemon(dir, inv, notify).env("METRICS_FILE", metrics_path(dir).display().to_string())
}

/// Waits until the metrics file satisfies `pred`; returns what it holds.
fn wait_metrics(path: &Path, agent: &Agent, pred: impl Fn(&Samples) -> bool) -> Samples {
    let mut last = None;
    let ok = wait_for(T, || {
        last = Samples::read(path);
        last.as_ref().is_some_and(|s| {
            // A file may lack series only if the test is wrong; retry until
            // `pred` can see them.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pred(s))).unwrap_or(false)
        })
    });
    assert!(
        ok,
        "metrics never matched; last: {last:?}\n{}",
        agent.stderr()
    );
    last.unwrap()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_first_cycle_writes_every_series_with_help_and_type() {
    let dir = TestDir::new("m-first");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["a", "bad name", "b", "a"]));
    let before = now_secs();
    // 0644 whatever the umask.
    let agent = with_metrics(&dir, &inv, &notify).umask(0o077).spawn();
    let path = metrics_path(&dir);
    let s = wait_metrics(&path, &agent, |s| s.refreshes("changed") == 1.0);
    let text = fs::read_to_string(&path).unwrap();
    for name in NAMES {
        assert!(
            text.contains(&format!("\n# HELP {name} "))
                || text.starts_with(&format!("# HELP {name} ")),
            "{name}\n{text}"
        );
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}\n{text}"
        );
    }
    // Every sample has the source label and no timestamp.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.contains("{source=\"targets\""), "{line}");
        assert_eq!(line.split(' ').count(), 2, "a timestamp or junk: {line}");
    }
    let version = format!(",version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        s.get("sd_updater_build_info", "targets", &version),
        Some(1.0),
        "{text}"
    );
    assert_eq!(s.counts(), (1.0, 0.0, 0.0));
    assert_eq!(s.value("sd_updater_targets"), 2.0);
    assert_eq!(s.value("sd_updater_invalid_entries"), 1.0);
    assert_eq!(s.value("sd_updater_stale"), 0.0);
    let success = s.value("sd_updater_last_success_timestamp_seconds");
    let change = s.value("sd_updater_last_change_timestamp_seconds");
    assert!(
        success >= before - 1.0 && success <= now_secs() + 1.0,
        "{success}"
    );
    assert!(
        change >= before - 1.0 && change <= now_secs() + 1.0,
        "{change}"
    );
    let took = s.value("sd_updater_refresh_duration_seconds");
    assert!((0.0..5.0).contains(&took), "{took}");

    // Written as the targets file is: 0644, no temp file left behind.
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{mode:o}");
    assert!(any_temp_files(&dir.join("out")).is_empty());
}

/// A temp file a killed run left next to the metrics file is removed at
/// start-up, as next to the targets file.
#[test]
fn old_metrics_temp_files_are_removed_at_start() {
    let dir = TestDir::new("m-temp");
    let notify = NotifySocket::new(&dir);
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    // PID 4194305 is above the kernel's pid_max: no such process.
    let left = out.join(".sd-updater.prom.tmp.4194305.0123456789abcdef");
    fs::write(&left, "partial").unwrap();
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    let agent = with_metrics(&dir, &inv, &notify).spawn();
    wait_metrics(&metrics_path(&dir), &agent, |s| {
        s.refreshes("changed") == 1.0
    });
    assert!(!left.exists(), "{}", agent.stderr());
    assert!(any_temp_files(&out).is_empty());
}

/// The URL's password appears nowhere in the metrics file.
#[test]
fn the_metrics_file_holds_no_password() {
    let dir = TestDir::new("m-secret");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    let url = format!(
        "http://alice:Zebra-Secret-9@127.0.0.1:{}/inventory",
        inv.port()
    );
    let agent = with_metrics(&dir, &inv, &notify)
        .env("INVENTORY_URL", &url)
        .spawn();
    let path = metrics_path(&dir);
    wait_metrics(&path, &agent, |s| s.refreshes("changed") == 1.0);
    inv.set(Behavior::status(503));
    agent.signal(Signal::SIGHUP);
    wait_metrics(&path, &agent, |s| s.refreshes("failed") == 1.0);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("Zebra") && !text.contains("alice"), "{text}");
}

#[test]
fn outcomes_move_the_counters_stale_and_timestamps() {
    let dir = TestDir::new("m-outcomes");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["a", "b"]));
    let mut agent = with_metrics(&dir, &inv, &notify).spawn();
    let path = metrics_path(&dir);
    let first = wait_metrics(&path, &agent, |s| s.counts() == (1.0, 0.0, 0.0));
    let changed_at = first.value("sd_updater_last_change_timestamp_seconds");
    let success_at = first.value("sd_updater_last_success_timestamp_seconds");

    // Unchanged: last_success moves, last_change does not.
    std::thread::sleep(Duration::from_millis(50));
    agent.signal(Signal::SIGHUP);
    let s = wait_metrics(&path, &agent, |s| s.counts() == (1.0, 1.0, 0.0));
    assert!(s.value("sd_updater_last_success_timestamp_seconds") > success_at);
    assert_eq!(
        s.value("sd_updater_last_change_timestamp_seconds"),
        changed_at
    );
    assert_eq!(s.value("sd_updater_stale"), 0.0);
    let success_at = s.value("sd_updater_last_success_timestamp_seconds");

    // Failed with the old file kept: stale, the kept targets, no success.
    inv.set(Behavior::status(503));
    agent.signal(Signal::SIGHUP);
    let s = wait_metrics(&path, &agent, |s| s.counts() == (1.0, 1.0, 1.0));
    assert_eq!(s.value("sd_updater_stale"), 1.0);
    assert_eq!(s.value("sd_updater_targets"), 2.0);
    assert_eq!(
        s.value("sd_updater_last_success_timestamp_seconds"),
        success_at
    );
    agent.signal(Signal::SIGHUP);
    let s = wait_metrics(&path, &agent, |s| s.counts() == (1.0, 1.0, 2.0));
    assert_eq!(s.value("sd_updater_stale"), 1.0);

    // Changed again: stale back to 0, the new count.
    inv.set(Behavior::list(&["a", "b", "c", "x y"]));
    agent.signal(Signal::SIGHUP);
    let s = wait_metrics(&path, &agent, |s| s.counts() == (2.0, 1.0, 2.0));
    assert_eq!(s.value("sd_updater_stale"), 0.0);
    assert_eq!(s.value("sd_updater_targets"), 3.0);
    assert_eq!(s.value("sd_updater_invalid_entries"), 1.0);
    assert!(s.value("sd_updater_last_change_timestamp_seconds") > changed_at);
    assert!(s.value("sd_updater_last_success_timestamp_seconds") > success_at);
    assert!(agent.is_alive());
}

/// A 304 and an unchanged body count as unchanged successes: last_success
/// moves, last_change and the targets stay.
#[test]
fn not_modified_and_unchanged_bodies_count_as_unchanged() {
    let dir = TestDir::new("m-304");
    let notify = NotifySocket::new(&dir);
    let srv = Server::start(
        "inv",
        Reply::respond(200, &[("ETag", "\"v1\"")], r#"["a", "b", "c", "x y"]"#),
    );
    let agent = with_metrics(&dir, &srv, &notify).spawn();
    let path = metrics_path(&dir);
    let first = wait_metrics(&path, &agent, |s| s.counts() == (1.0, 0.0, 0.0));
    let changed_at = first.value("sd_updater_last_change_timestamp_seconds");
    let mut success_at = first.value("sd_updater_last_success_timestamp_seconds");

    // The same body again (the server ignores If-None-Match), then a 304.
    for (round, reply) in [(1.0, None), (2.0, Some(Reply::status(304)))] {
        if let Some(r) = reply {
            srv.replace("304", r);
        }
        std::thread::sleep(Duration::from_millis(20));
        agent.signal(Signal::SIGHUP);
        let s = wait_metrics(&path, &agent, |s| s.counts() == (1.0, round, 0.0));
        assert!(s.value("sd_updater_last_success_timestamp_seconds") > success_at);
        assert_eq!(
            s.value("sd_updater_last_change_timestamp_seconds"),
            changed_at
        );
        assert_eq!(s.value("sd_updater_targets"), 3.0);
        assert_eq!(s.value("sd_updater_invalid_entries"), 1.0);
        assert_eq!(s.value("sd_updater_stale"), 0.0);
        success_at = s.value("sd_updater_last_success_timestamp_seconds");
    }
    let log = agent.stderr();
    assert!(log.contains("Inventory not modified (304)"), "{log}");
    assert!(log.contains("the same body as before"), "{log}");
}

/// Before the first cycle ends, the file reports what the existing targets
/// file holds and its mtime, with every counter at 0.
#[test]
fn at_start_up_the_existing_file_is_reported() {
    let dir = TestDir::new("m-start");
    let notify = NotifySocket::new(&dir);
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    let targets = out.join("targets.json");
    fs::write(&targets, render_default(&["a:9100", "b:9100", "c:9100"])).unwrap();
    let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    File::options()
        .write(true)
        .open(&targets)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let inv = FakeInventory::start(Behavior::Hang);
    let agent = with_metrics(&dir, &inv, &notify)
        .env("HTTP_TIMEOUT", "60")
        .spawn();
    let s = wait_metrics(&metrics_path(&dir), &agent, |s| {
        s.value("sd_updater_targets") == 3.0
    });
    assert_eq!(s.counts(), (0.0, 0.0, 0.0));
    assert_eq!(
        s.value("sd_updater_last_change_timestamp_seconds"),
        1_700_000_000.0
    );
    assert_eq!(s.value("sd_updater_last_success_timestamp_seconds"), 0.0);
    assert_eq!(s.value("sd_updater_stale"), 0.0);
    assert_eq!(s.value("sd_updater_invalid_entries"), 0.0);
}

/// No targets file at start: last_change is 0, and a failure is not stale
/// (the file holds no older targets).
#[test]
fn without_a_targets_file_a_failure_is_not_stale() {
    let dir = TestDir::new("m-nofile");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::status(503));
    let agent = with_metrics(&dir, &inv, &notify).spawn();
    let s = wait_metrics(&metrics_path(&dir), &agent, |s| {
        s.refreshes("failed") == 1.0
    });
    assert_eq!(s.value("sd_updater_stale"), 0.0);
    assert_eq!(s.value("sd_updater_targets"), 0.0);
    assert_eq!(s.value("sd_updater_last_change_timestamp_seconds"), 0.0);
    assert!(!agent.targets_file().exists());
}

#[test]
fn the_source_label_is_source_name_or_the_targets_file_stem() {
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    for (targets, source_name, want) in [
        ("out/netbox.json", None, "netbox"),
        (
            "out/targets.json",
            Some("site-1@eu:x.y_z"),
            "site-1@eu:x.y_z",
        ),
    ] {
        let dir = TestDir::new("m-source");
        let notify = NotifySocket::new(&dir);
        let mut cmd = with_metrics(&dir, &inv, &notify)
            .env("TARGETS_FILE", dir.join(targets).display().to_string());
        if let Some(name) = source_name {
            cmd = cmd.env("SOURCE_NAME", name);
        }
        let agent = cmd.spawn();
        let path = metrics_path(&dir);
        let s = wait_metrics(&path, &agent, |s| {
            s.get("sd_updater_targets", want, "") == Some(1.0)
        });
        assert!(
            s.0.keys()
                .all(|k| k.contains(&format!("{{source=\"{want}\""))),
            "{s:?}"
        );
        let start = agent
            .stderr()
            .lines()
            .find(|l| l.contains("Starting sd-updater"))
            .map(str::to_string)
            .unwrap_or_default();
        assert!(start.contains(want), "{start}");

        let check = cmd.clone().arg("--check-config").run(T);
        assert_eq!(check.code(), Some(0), "{}", check.describe());
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l == format!("SOURCE_NAME={want}")),
            "{}",
            check.stdout
        );
    }
}

#[test]
fn an_empty_or_unset_metrics_file_writes_none() {
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    for value in [Some(""), None] {
        let dir = TestDir::new("m-off");
        let notify = NotifySocket::new(&dir);
        let mut cmd = daemon(&dir, &inv, &notify);
        if let Some(v) = value {
            cmd = cmd.env("METRICS_FILE", v);
        }
        let agent = cmd.spawn();
        assert!(agent.wait_for_file(T), "{}", agent.stderr());
        assert!(notify.wait_for("READY=1", T).is_some());
        std::thread::sleep(Duration::from_millis(200));
        let names: Vec<String> = fs::read_dir(dir.join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["targets.json"], "{value:?}");
        assert!(
            !agent.stderr().contains(".prom"),
            "{value:?}\n{}",
            agent.stderr()
        );
    }
}

#[test]
fn invalid_values_exit_78_naming_the_variable() {
    let dir = TestDir::new("m-bad");
    let long = "x".repeat(65);
    for (var, value) in [
        ("METRICS_FILE", "/tmp/metrics.txt"),
        ("METRICS_FILE", "/tmp/metrics.prom.json"),
        ("METRICS_FILE", "/tmp/.prom"),
        ("METRICS_FILE", "/tmp/x.prom/"),
        ("METRICS_FILE", "/tmp/../x.prom"),
        ("METRICS_FILE", "/tmp/a\nb.prom"),
        ("SOURCE_NAME", "a b"),
        ("SOURCE_NAME", "a\"b"),
        ("SOURCE_NAME", "a\nb"),
        ("SOURCE_NAME", "a/b"),
        ("SOURCE_NAME", "é"),
        ("SOURCE_NAME", long.as_str()),
    ] {
        for arg in [None, Some("--check-config")] {
            let mut cmd = AgentCmd::new(&dir).env(var, value);
            if let Some(a) = arg {
                cmd = cmd.arg(a);
            }
            let out = cmd.run(T);
            assert_eq!(out.code(), Some(78), "{var}={value:?}\n{}", out.describe());
            assert!(
                out.stderr
                    .contains(&format!("sd-updater: invalid configuration: {var}: ")),
                "{var}={value:?}\n{}",
                out.describe()
            );
        }
    }
    assert!(!dir.join("out").exists(), "a config error wrote something");
}

/// A directory where the metrics file should be: the warning names the
/// path, and the targets file is written and updated all the same.
#[test]
fn a_metrics_write_failure_does_not_break_the_targets_update() {
    let dir = TestDir::new("m-wfail");
    let notify = NotifySocket::new(&dir);
    let path = metrics_path(&dir);
    fs::create_dir_all(&path).unwrap();
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    let mut agent = with_metrics(&dir, &inv, &notify).spawn();
    let first = render_default(&["a:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(first.as_str())),
        "{}",
        agent.stderr()
    );
    let shown = path.display().to_string();
    assert!(
        agent
            .wait_log(&format!("WARNING - Cannot write metrics file {shown}"), T)
            .is_some(),
        "{}",
        agent.stderr()
    );
    inv.set(Behavior::list(&["a", "b"]));
    agent.signal(Signal::SIGHUP);
    let second = render_default(&["a:9100", "b:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(second.as_str())),
        "{}",
        agent.stderr()
    );
    assert!(agent.is_alive());
    assert!(path.is_dir());
    let log = agent.stderr();
    assert!(!log.contains("Failed to write targets file"), "{log}");
    assert!(!log.contains(" - ERROR - "), "{log}");
    assert!(any_temp_files(&dir.join("out")).is_empty());
}

/// `--once` writes the metrics file too: a change, then a failure that
/// keeps the file (stale).
#[test]
fn once_writes_the_metrics_file() {
    let dir = TestDir::new("m-once");
    let inventory = dir.join("inventory.json");
    fs::write(&inventory, r#"["a", "b", "bad name"]"#).unwrap();
    let path = metrics_path(&dir);
    let cmd = AgentCmd::new(&dir)
        .env("INVENTORY_URL", format!("file://{}", inventory.display()))
        .env("METRICS_FILE", path.display().to_string())
        .arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let s = Samples::read(&path).expect("metrics file after --once");
    assert_eq!(s.counts(), (1.0, 0.0, 0.0));
    assert_eq!(s.value("sd_updater_targets"), 2.0);
    assert_eq!(s.value("sd_updater_invalid_entries"), 1.0);

    fs::write(&inventory, "{}").unwrap();
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let s = Samples::read(&path).unwrap();
    assert_eq!(s.counts(), (0.0, 0.0, 1.0), "one run, one refresh");
    assert_eq!(s.value("sd_updater_stale"), 1.0);
    assert_eq!(s.value("sd_updater_targets"), 2.0);
    assert_eq!(s.value("sd_updater_last_success_timestamp_seconds"), 0.0);
}

/// As root, the missing directories of METRICS_FILE are created and only
/// those are handed to the service user, as for TARGETS_FILE.
#[test]
#[ignore = "needs root"]
fn as_root_missing_metrics_directories_go_to_the_service_user() {
    require_root();
    let dir = TestDir::new("m-root");
    let notify = NotifySocket::new(&dir);
    let existing = dir.join("m");
    fs::create_dir(&existing).unwrap();
    let path = existing.join("a/b/sd.prom");
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    let agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", "nobody")
        .env("METRICS_FILE", path.display().to_string())
        .spawn();
    let s = wait_metrics(&path, &agent, |s| s.refreshes("changed") == 1.0);
    assert_eq!(s.value("sd_updater_targets"), 1.0);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for d in ["m/a", "m/a/b"] {
        let m = fs::metadata(dir.join(d)).unwrap();
        assert_eq!(m.uid(), nobody.uid.as_raw(), "{d}");
    }
    assert_eq!(fs::metadata(&existing).unwrap().uid(), 0);
    assert_eq!(fs::metadata(&path).unwrap().uid(), nobody.uid.as_raw());
}

/// As root, a metrics directory the start-up checks refuse (owned by
/// another user, writable by all) is a warning, not a stop: the service
/// user then writes the file there, and the targets file is written anyway.
#[test]
#[ignore = "needs root"]
fn as_root_a_refused_metrics_directory_does_not_stop_the_agent() {
    require_root();
    let dir = TestDir::new("m-root-dir");
    let notify = NotifySocket::new(&dir);
    let other = dir.join("other");
    fs::create_dir(&other).unwrap();
    nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(54321)), None).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o777)).unwrap();
    let path = other.join("sd.prom");
    let inv = FakeInventory::start(Behavior::list(&["a"]));
    let mut agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", "nobody")
        .env("METRICS_FILE", path.display().to_string())
        .spawn();
    assert!(agent.wait_for_file(T), "{}", agent.stderr());
    let shown = path.display().to_string();
    assert!(
        agent
            .wait_log(
                &format!("Cannot prepare the directory of metrics file {shown}"),
                T
            )
            .is_some(),
        "{}",
        agent.stderr()
    );
    let s = wait_metrics(&path, &agent, |s| s.refreshes("changed") == 1.0);
    assert_eq!(s.value("sd_updater_targets"), 1.0);
    assert!(agent.is_alive());
}

#[test]
fn promtool_accepts_the_metrics_file() {
    require_tool("promtool", "prometheus");
    let dir = TestDir::new("m-promtool");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["a", "bad name"]));
    let mut agent = with_metrics(&dir, &inv, &notify)
        .env("SOURCE_NAME", "site-1@eu:x.y_z")
        .spawn();
    let path = metrics_path(&dir);
    let stale = |s: &Samples| s.get("sd_updater_stale", "site-1@eu:x.y_z", "") == Some(1.0);
    wait_metrics(&path, &agent, |s| {
        s.get("sd_updater_targets", "site-1@eu:x.y_z", "") == Some(1.0)
    });
    // Every series at a non-zero value: a failure after a change.
    inv.set(Behavior::status(503));
    agent.signal(Signal::SIGHUP);
    wait_metrics(&path, &agent, stale);
    agent.kill9();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- file ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&path).unwrap()
    );
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The README's alert rules are the example file, verbatim, and promtool
/// accepts it.
#[test]
fn the_alert_rules_pass_promtool_and_the_readme_shows_them() {
    require_tool("promtool", "prometheus");
    let rules = repo_file("packaging/examples/sd-updater-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file = fs::read_to_string(&rules).unwrap();
    for needle in [
        "sd_updater_stale == 1",
        "for: 15m",
        "time() - sd_updater_last_success_timestamp_seconds > 3 * 30",
    ] {
        assert!(file.contains(needle), "{needle}");
    }
    let readme = fs::read_to_string(repo_file("README.md")).unwrap();
    let section = readme
        .split_once("\n## Health metrics\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(""))
        .expect("README.md has a ## Health metrics section");
    let block = section
        .split_once("\n```yaml\n")
        .and_then(|(_, rest)| rest.split_once("\n```\n"))
        .map(|(block, _)| format!("{block}\n"))
        .expect("a ```yaml block in ## Health metrics");
    assert_eq!(block, file, "README's rules differ from the example file");
}

/// One native-protocol datagram: `KEY=value\n`, or for values that may
/// hold newlines `KEY\n<le64 length><bytes>\n`.
fn parse_entry(mut data: &[u8]) -> Vec<(String, String)> {
    let mut e = Vec::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let (k, v) = (&line[..eq], &line[eq + 1..]);
            e.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
            data = &data[(nl + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            e.push((key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned()));
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    e
}

/// Journal mode in a private mount namespace (as tests/journal.rs does):
/// every entry carries SOURCE_NAME.
#[test]
#[ignore = "needs root"]
fn every_journal_entry_carries_source_name() {
    require_root();
    require_tool("unshare", "util-linux");
    for (source_name, want) in [(None, "netbox"), (Some("site-1@eu"), "site-1@eu")] {
        let dir = TestDir::new("m-journal");
        let jdir = dir.join("journal");
        fs::create_dir(&jdir).unwrap();
        let socket = UnixDatagram::bind(jdir.join("socket")).unwrap();
        fs::set_permissions(jdir.join("socket"), fs::Permissions::from_mode(0o666)).unwrap();
        let inventory = dir.join("inventory.json");
        fs::write(&inventory, r#"["a", "bad name"]"#).unwrap();
        let stderr = File::create(dir.join("stderr")).unwrap();
        let meta = stderr.metadata().unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || {{ mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; }} \
             && mkdir /run/systemd/journal && mount --bind {} /run/systemd/journal && exec {BIN} --once",
            jdir.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env("RUN_AS_USER", "root")
            .env("LOG_LEVEL", "debug")
            .env("INVENTORY_URL", format!("file://{}", inventory.display()))
            .env("TARGETS_FILE", dir.join("out/netbox.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(name) = source_name {
            cmd.env("SOURCE_NAME", name);
        }
        // Read while it runs: a full socket buffer would block its logging.
        let mut child = cmd.spawn().expect("spawn unshare");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let deadline = Instant::now() + T;
        let mut status = None;
        while Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(n) if n > 0 => entries.push(buf[..n].to_vec()),
                Ok(_) => {}
                // Nothing for 100 ms: done once the agent has exited.
                Err(_) if status.is_some() => break,
                Err(_) => {}
            }
            if status.is_none() {
                status = child.try_wait().unwrap();
            }
        }
        if status.is_none() {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{entries:?}");
        assert!(entries.len() >= 3, "too few entries: {entries:?}");
        let entries: Vec<Vec<(String, String)>> = entries.iter().map(|e| parse_entry(e)).collect();
        let message = |e: &Vec<(String, String)>| {
            e.iter()
                .find(|(k, _)| k == "MESSAGE")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let start = entries
            .iter()
            .map(message)
            .find(|m| m.starts_with("Starting sd-updater"))
            .unwrap_or_else(|| panic!("no start entry: {entries:?}"));
        assert!(start.ends_with(&format!(" for source {want}")), "{start}");
        for e in &entries {
            let fields: Vec<&str> = e
                .iter()
                .filter(|(k, _)| k == "SOURCE_NAME")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(fields, [want], "{e:?}");
        }
        // stderr stays empty in journal mode.
        assert_eq!(fs::read_to_string(dir.join("stderr")).unwrap(), "");
    }
}
