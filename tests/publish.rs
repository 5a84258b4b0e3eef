//! Publishing a cycle's targets, the same for the daemon and `--once`: the
//! log lines, ADDED/REMOVED, one line for an unchanged cycle, and counts
//! in the singular where there is one.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// `1 targets`, `(1 sensors` and the like, but not `11 targets`.
fn wrong_singular(text: &str) -> Option<String> {
    for noun in ["targets", "sensors", "entries", "failures"] {
        let bad = format!("1 {noun}");
        for (i, _) in text.match_indices(&bad) {
            let before = text.get(..i).and_then(|s| s.chars().last());
            if !before.is_some_and(|c| c.is_ascii_digit()) {
                return Some(bad);
            }
        }
    }
    None
}

#[test]
fn an_unchanged_daemon_cycle_logs_one_line_at_info() {
    let dir = TestDir::new("pub-quiet");
    let inv = FakeInventory::start(Behavior::list(&["sensor_1", "sensor_2", "sensor_3"]));
    let agent = AgentCmd::new(&dir)
        .inventory(&inv)
        .env("LOG_LEVEL", "info")
        .spawn();
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("Successfully updated targets file")),
        "{}",
        agent.stderr()
    );
    // A changed cycle keeps both lines.
    let first = agent.stderr();
    assert_eq!(
        lines_with(&first, "Successfully fetched 3 sensors in").len(),
        1,
        "{first}"
    );
    let path = agent.targets_file().display().to_string();
    for _ in 0..2 {
        let mark = agent.log_mark();
        agent.signal(Signal::SIGHUP);
        assert!(
            agent.wait_for_log(mark, T, |l| l.contains("Targets unchanged")),
            "{}",
            agent.stderr()
        );
        // Nothing else of the cycle may follow.
        std::thread::sleep(Duration::from_millis(300));
        let log = agent.log_since(mark);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("Received SIGHUP"))
            .collect();
        assert_eq!(lines.len(), 1, "an unchanged cycle logged {lines:#?}");
        let line = lines.first().copied().unwrap_or_default();
        assert!(
            line.contains(" - INFO - Targets unchanged (3 targets from 3 sensors fetched in "),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("); {path} left as it is")),
            "{line}"
        );
    }
}

#[test]
fn the_fetch_line_of_an_unchanged_cycle_moves_to_debug() {
    let dir = TestDir::new("pub-debug");
    let inv = FakeInventory::start(Behavior::list(&["sensor_1", "sensor_2"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    assert_eq!(cmd.run(T).code(), Some(0));
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let fetched = lines_with(&out.stderr, "Successfully fetched 2 sensors in");
    assert_eq!(fetched.len(), 1, "{}", out.describe());
    assert!(
        fetched.iter().all(|l| l.contains(" - DEBUG - ")),
        "{}",
        out.describe()
    );
    assert_eq!(
        lines_with(
            &out.stderr,
            " - INFO - Targets unchanged (2 targets from 2 sensors fetched in "
        )
        .len(),
        1,
        "{}",
        out.describe()
    );
}

#[test]
fn an_unchanged_once_run_logs_one_line_for_its_cycle() {
    let dir = TestDir::new("pub-once-quiet");
    let inv = FakeInventory::start(Behavior::list(&["a", "b", "c", "bad name"]));
    let cmd = AgentCmd::new(&dir)
        .inventory(&inv)
        .env("LOG_LEVEL", "info")
        .arg("--once");
    let first = cmd.run(T);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    assert!(first.stderr.contains("Successfully fetched 4 sensors in"));
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(
        !out.stderr.contains("Successfully fetched"),
        "{}",
        out.describe()
    );
    let unchanged = lines_with(&out.stderr, "Targets unchanged");
    assert_eq!(unchanged.len(), 1, "{}", out.describe());
    assert!(
        unchanged
            .iter()
            .all(|l| l.contains("(3 targets from 4 sensors fetched in ")),
        "{unchanged:?}"
    );
}

#[test]
fn once_counts_added_and_removed_against_the_file_found_at_start() {
    let dir = TestDir::new("pub-once-diff");
    let inv = FakeInventory::start(Behavior::list(&["b", "c", "d", "e"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    // No file yet: everything is added.
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("(4 targets, 4 added, 0 removed)"),
        "{}",
        out.describe()
    );
    // A file with a, b and c: d and e come, a goes.
    let file = cmd.targets_file();
    fs::write(
        &file,
        render(&["a:9100", "b:9100", "c:9100"], "/metrics", DEFAULT_LABELS),
    )
    .unwrap();
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let path = file.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "Successfully updated targets file: {path} (4 targets, 2 added, 1 removed)"
        )),
        "{}",
        out.describe()
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        render(
            &["b:9100", "c:9100", "d:9100", "e:9100"],
            "/metrics",
            DEFAULT_LABELS
        )
    );
    // A file that is no file_sd document: nothing known, all added.
    fs::write(&file, "not json").unwrap();
    let out = cmd.run(T);
    assert!(
        out.stderr.contains("(4 targets, 4 added, 0 removed)"),
        "{}",
        out.describe()
    );
}

#[test]
fn one_target_is_singular_in_status_and_log_lines() {
    let dir = TestDir::new("pub-one");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_1"]));
    let agent = AgentCmd::new(&dir).inventory(&inv).notify(&notify).spawn();
    let status = |prefix: &'static str| {
        notify
            .recv_until(T, |m| {
                m.get("STATUS").is_some_and(|s| s.starts_with(prefix))
            })
            .and_then(|m| m.get("STATUS").map(str::to_string))
    };
    let s = status("1 target, updated ");
    assert!(s.is_some(), "{}\n{}", notify.dump(), agent.stderr());
    let log = agent.stderr();
    assert!(log.contains("Successfully fetched 1 sensor in "), "{log}");
    assert!(log.contains("(1 target, 1 added, 0 removed)"), "{log}");

    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    assert!(
        agent.wait_for_log(mark, T, |l| l
            .contains("Targets unchanged (1 target from 1 sensor fetched in ")),
        "{}",
        agent.stderr()
    );

    inv.set(Behavior::status(503));
    agent.signal(Signal::SIGHUP);
    let s = status("update failing since ").unwrap_or_default();
    assert!(
        s.contains("(1 failure, last: ") && s.contains("; keeping 1 target from "),
        "{s}\n{}",
        notify.dump()
    );
    for m in notify.all() {
        if let Some(s) = m.get("STATUS") {
            assert_eq!(wrong_singular(s), None, "STATUS={s}");
        }
    }
    assert_eq!(wrong_singular(&agent.stderr()), None, "{}", agent.stderr());
}

#[test]
fn an_inventory_of_one_invalid_entry_says_1_entry() {
    let dir = TestDir::new("pub-one-entry");
    let inv = FakeInventory::start(Behavior::list(&["bad name"]));
    let out = AgentCmd::new(&dir).inventory(&inv).arg("--once").run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr
            .contains("inventory has no valid sensors (1 entry, 1 invalid)"),
        "{}",
        out.describe()
    );
    // The fetch itself is still reported before the refusal.
    assert!(
        out.stderr
            .contains(" - INFO - Successfully fetched 1 sensor in "),
        "{}",
        out.describe()
    );
    assert_eq!(wrong_singular(&out.stderr), None, "{}", out.describe());
}
