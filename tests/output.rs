//! What ends up in the targets file: entry validation, IPv6, ports,
//! duplicates and order, labels, modes, "unchanged means untouched", and the
//! plain log format.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

#[test]
fn entries_validated_normalised_deduplicated_sorted() {
    let dir = TestDir::new("o-entries");
    let long_label = "a".repeat(64);
    let ok_label = "b".repeat(63);
    let too_long_name = vec!["c".repeat(60); 5].join("."); // 304 chars
    let valid: Vec<String> = vec![
        "sensor_0".into(),
        "sensor_1:8080".into(),
        "b.example.com".into(),
        "a-b.example".into(),
        "10.0.0.1".into(),
        "10.0.0.1:9200".into(),
        "2001:db8::1".into(),
        "[2001:db8::2]".into(),
        "[2001:db8::3]:9300".into(),
        "::1".into(),
        format!("{ok_label}.example"),
    ];
    let dupes: Vec<String> = vec![
        "sensor_0".into(),
        "sensor_0:9200".into(), // same as sensor_0 with METRICS_PORT=9200
        "10.0.0.1".into(),
        "[2001:db8::1]".into(),
        "[2001:db8::1]:9200".into(),
    ];
    let invalid: Vec<String> = vec![
        "".into(),
        " ".into(),
        " sensor_9".into(),
        "sensor 9".into(),
        "bad/name".into(),
        "quo\"te".into(),
        "sensör".into(),
        "esc\u{1b}[31mred".into(),
        "nul\0byte".into(),
        "evil\n2025-01-01 00:00:00 - sd-updater - INFO - forged line".into(),
        "-leading".into(),
        "trailing-".into(),
        "double..dot".into(),
        format!("{long_label}.example"),
        too_long_name,
        "sensor:0".into(),
        "sensor:70000".into(),
        "sensor:".into(),
        "sensor:http".into(),
        "[2001:db8::zz]".into(),
        "[sensor_0]:9100".into(),
        "http://sensor".into(),
    ];
    let mut all: Vec<String> = Vec::new();
    all.extend(valid.iter().cloned());
    all.extend(invalid.iter().cloned());
    all.extend(dupes.iter().cloned());
    all.reverse();
    let inv = FakeInventory::start(Behavior::json(serde_json::to_vec(&all).unwrap()));
    let cmd = AgentCmd::new(&dir)
        .env("MAX_INVALID_PERCENT", "100")
        .inventory(&inv)
        .env("METRICS_PORT", "9200")
        .env("METRICS_PATH", "/probe")
        .env("TARGET_LABELS", "team=iot,site=lab-1")
        .arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());

    let mut expected: Vec<String> = vec![
        "sensor_0:9200".into(),
        "sensor_1:8080".into(),
        "b.example.com:9200".into(),
        "a-b.example:9200".into(),
        "10.0.0.1:9200".into(),
        "[2001:db8::1]:9200".into(),
        "[2001:db8::2]:9200".into(),
        "[2001:db8::3]:9300".into(),
        "[::1]:9200".into(),
        format!("{ok_label}.example:9200"),
    ];
    expected.sort();
    expected.dedup();
    let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    let content = fs::read_to_string(cmd.targets_file()).expect("file written");
    let got = parse_targets(content.as_bytes()).unwrap();
    assert_eq!(
        got, expected,
        "targets differ (left: file, right: expected)\n{}",
        out.stderr
    );
    assert_eq!(
        content,
        render(&refs, "/probe", &[("team", "iot"), ("site", "lab-1")]),
        "file format"
    );

    let dropped = out
        .stderr
        .lines()
        .filter(|l| l.contains("Dropping invalid sensor entry"))
        .count();
    assert!(
        dropped >= invalid.len(),
        "{} invalid entries, {dropped} logged as dropped\n{}",
        invalid.len(),
        out.stderr
    );
}

#[test]
fn dropped_entries_are_escaped_in_the_log() {
    let dir = TestDir::new("o-escape");
    let nasty = [
        "esc\u{1b}[31mred",
        "nul\0byte",
        "bell\u{7}",
        "sensör",
        "evil\n2025-01-01 00:00:00 - sd-updater - INFO - forged line",
        "cr\rreturn",
    ];
    let mut list = vec!["sensor_0"];
    list.extend(nasty);
    let inv = FakeInventory::start(Behavior::list(&list));
    let cmd = AgentCmd::new(&dir)
        .inventory(&inv)
        // Mostly invalid on purpose: the share guard is tested in formats.rs.
        .env("MAX_INVALID_PERCENT", "100")
        .arg("--once");
    let mut agent = cmd.spawn();
    let status = agent.wait_exit(T);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
    let raw = agent.stderr_bytes();
    let log = agent.stderr();
    for (i, b) in raw.iter().enumerate() {
        assert!(
            *b == b'\n' || (*b >= 0x20 && *b != 0x7f),
            "raw control byte {b:#04x} at {i} in the log: it must be escaped\n{log}"
        );
    }
    for line in log.lines().filter(|l| l.contains("Dropping invalid")) {
        assert!(
            line.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "non-ASCII in a dropped-entry line, it must be escaped: {line:?}"
        );
    }
    assert!(
        !log.lines().any(|l| l.starts_with("2025-01-01 00:00:00")),
        "a sensor name forged a log line\n{log}"
    );
    assert!(log.contains("\\u{1b}"), "ESC not shown escaped\n{log}");
    let dropped = log
        .lines()
        .filter(|l| l.contains("Dropping invalid sensor entry"))
        .count();
    assert!(dropped >= nasty.len(), "{log}");
}

#[test]
fn default_labels_and_empty_target_labels() {
    let dir = TestDir::new("o-labels");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let out = AgentCmd::new(&dir).inventory(&inv).arg("--print").run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, render_default(&["sensor_0:9100"]));

    let out = AgentCmd::new(&dir)
        .inventory(&inv)
        .env("TARGET_LABELS", "")
        .arg("--print")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, render(&["sensor_0:9100"], "/metrics", &[]));
}

#[test]
fn unchanged_inventory_leaves_inode_and_mtime_alone() {
    let dir = TestDir::new("o-unchanged");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_1", "sensor_0"]));
    let agent = daemon(&dir, &inv, &notify)
        .env("UPDATE_INTERVAL", "1")
        .spawn();
    let want = render_default(&["sensor_0:9100", "sensor_1:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(want.as_str())),
        "{}",
        agent.stderr()
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = stamp(agent.targets_file());
    let n = inv.request_count();
    let mark = agent.log_mark();
    // Same set, other order, with duplicates: still unchanged.
    inv.set(Behavior::list(&["sensor_0", "sensor_1", "sensor_0:9100"]));
    assert!(
        inv.wait_for_requests(n + 3, T),
        "UPDATE_INTERVAL=1 but no further cycles"
    );
    agent.signal(Signal::SIGHUP);
    assert!(inv.wait_for_requests(n + 4, T));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fs::read_to_string(agent.targets_file()).unwrap(), want);
    assert_eq!(
        stamp(agent.targets_file()),
        before,
        "an unchanged inventory rewrote the file (inode, mtime)"
    );
    let log = agent.log_since(mark);
    assert!(
        log.to_lowercase().contains("unchanged"),
        "the log does not say nothing changed:\n{log}"
    );

    // A real change replaces the file through a rename (new inode).
    inv.set(Behavior::list(&["sensor_0", "sensor_2"]));
    let want = render_default(&["sensor_0:9100", "sensor_2:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(want.as_str())),
        "changed inventory not written\n{}",
        agent.stderr()
    );
    assert_ne!(
        stamp(agent.targets_file()).0,
        before.0,
        "changed content must be renamed into place, not written in place"
    );
    assert!(temp_files(agent.targets_file().parent().unwrap(), "targets.json").is_empty());
}

#[test]
fn file_mode_0644_and_dir_0755_despite_umask() {
    let dir = TestDir::new("o-mode");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let cmd = AgentCmd::new(&dir)
        .inventory(&inv)
        .env(
            "TARGETS_FILE",
            dir.join("a/b/targets.json").display().to_string(),
        )
        .umask(0o077)
        .arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&cmd.targets_file()),
        0o644,
        "targets file must be 0644 for Prometheus"
    );
    for d in ["a", "a/b"] {
        assert_eq!(
            mode(&dir.join(d)),
            0o755,
            "created directory {d} must be 0755"
        );
    }
}

#[test]
fn relative_targets_file_is_relative_to_cwd() {
    let dir = TestDir::new("o-rel");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let out = AgentCmd::new(&dir)
        .inventory(&inv)
        .env("TARGETS_FILE", "rel/targets.json")
        .arg("--once")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        fs::read_to_string(dir.join("rel/targets.json")).unwrap(),
        render_default(&["sensor_0:9100"])
    );
}

#[test]
fn plain_log_lines_look_like_the_seed() {
    let dir = TestDir::new("o-log");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0", "sensor_1", "sensor_2"]));
    let mut agent = daemon(&dir, &inv, &notify).env("LOG_LEVEL", "info").spawn();
    assert!(agent.wait_for_file(T), "{}", agent.stderr());
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(T);
    let log = agent.stderr();
    for line in log.lines() {
        let b = line.as_bytes();
        let ts_ok = b.len() > 22
            && b[..19].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            });
        let rest = line.get(19..).unwrap_or("");
        let level_ok = ["ERROR", "WARNING", "WARN", "INFO"]
            .iter()
            .any(|l| rest.starts_with(&format!(" - sd-updater - {l} - ")));
        assert!(
            ts_ok && level_ok,
            "log line not `YYYY-MM-DD HH:MM:SS - sd-updater - LEVEL - msg` at LOG_LEVEL=info: {line:?}"
        );
    }
    assert!(
        log.contains("Successfully fetched 3 sensors"),
        "fetch count not logged:\n{log}"
    );
    let path = agent.targets_file().display().to_string();
    assert!(
        log.contains(&format!("Successfully updated targets file: {path}")),
        "write not logged:\n{log}"
    );
    assert!(
        log.contains(&inv.url()),
        "start-up configuration (INVENTORY_URL) not logged:\n{log}"
    );
}

/// Addresses nothing can be scraped at, and names the C resolver reads as
/// IPv4 in a non-canonical form, are dropped with a reason, with or
/// without a port. Canonical dotted quads stay.
#[test]
fn unscrapeable_and_non_canonical_addresses_are_dropped() {
    let dir = TestDir::new("o-addr");
    let refused = [
        ("0.0.0.0", "unspecified address"),
        ("0.0.0.0:9100", "unspecified address"),
        ("255.255.255.255", "broadcast address"),
        ("255.255.255.255:80", "broadcast address"),
        ("[::]", "unspecified address"),
        ("[::]:80", "unspecified address"),
        ("::", "unspecified address"),
        ("::ffff:0.0.0.0", "unspecified address"),
        ("0x7f.1", "non-canonical"),
        ("0x7f.1:80", "non-canonical"),
        ("0177.0.0.1", "non-canonical"),
        ("127.1", "non-canonical"),
        ("127.1:9100", "non-canonical"),
        ("0x7f000001", "non-canonical"),
        ("0x7f000001:80", "non-canonical"),
        ("2130706433", "non-canonical"),
        ("2130706433:80", "non-canonical"),
        ("10.0.0.010", "non-canonical"),
    ];
    let mut list: Vec<&str> = refused.iter().map(|(e, _)| *e).collect();
    list.extend(["127.0.0.1", "10.0.0.10:80", "0x7f.example", "::1"]);
    let inv = FakeInventory::start(Behavior::list(&list));
    let cmd = AgentCmd::new(&dir)
        .inventory(&inv)
        // Mostly invalid on purpose: the share guard is tested in formats.rs.
        .env("MAX_INVALID_PERCENT", "100")
        .arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        fs::read_to_string(cmd.targets_file()).unwrap(),
        render_default(&[
            "0x7f.example:9100",
            "10.0.0.10:80",
            "127.0.0.1:9100",
            "[::1]:9100"
        ])
    );
    for (entry, why) in refused {
        let line = format!("Dropping invalid sensor entry \"{entry}\": ");
        let logged = out
            .stderr
            .lines()
            .find(|l| l.contains(&line))
            .unwrap_or_else(|| panic!("{entry:?} not dropped\n{}", out.describe()));
        assert!(logged.contains(why), "{entry:?}: {logged}");
    }
}

/// Names that differ only in letter case are one host, scraped once: the
/// first spelling in byte order is written, as it was written; the others
/// are duplicates, not invalid entries.
#[test]
fn case_variants_are_one_target() {
    let dir = TestDir::new("o-case");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&[
        "ok",
        "sensor.example",
        "OK",
        "Sensor.Example:9100",
        "Ok",
        "ok:9200",
        "[2001:DB8::1]",
        "2001:db8::1",
    ]));
    let agent = daemon(&dir, &inv, &notify).spawn();
    let want = render_default(&[
        "OK:9100",
        "Sensor.Example:9100",
        "[2001:db8::1]:9100",
        "ok:9200",
    ]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(want.as_str())),
        "{}",
        agent.stderr()
    );
    // The summary line follows the rename: wait for it, not just the file.
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("(4 targets, 4 added, 0 removed)")),
        "{}",
        agent.stderr()
    );
    let log = agent.stderr();
    assert!(log.contains("Successfully fetched 8 sensors"), "{log}");
    assert!(!log.contains("Dropping invalid"), "{log}");
    assert!(log.contains("(4 targets, 4 added, 0 removed)"), "{log}");
    // A lower-case spelling alone is the same host: the file changes to
    // it, one target added and one removed, no more.
    inv.set(Behavior::list(&["ok", "sensor.example", "ok:9200", "::1"]));
    agent.signal(Signal::SIGHUP);
    let want = render_default(&["[::1]:9100", "ok:9100", "ok:9200", "sensor.example:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(want.as_str())),
        "{}",
        agent.stderr()
    );
    assert!(
        wait_for(T, || agent
            .stderr()
            .contains("(4 targets, 3 added, 3 removed)")),
        "{}",
        agent.stderr()
    );
}

/// The targets file found at start-up counts for ADDED/REMOVED of the
/// first write.
#[test]
fn added_and_removed_count_from_the_file_found_at_start() {
    let dir = TestDir::new("o-found");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["b", "c", "d", "c"]));
    let cmd = daemon(&dir, &inv, &notify);
    fs::create_dir_all(cmd.targets_file().parent().unwrap()).unwrap();
    fs::write(
        cmd.targets_file(),
        render_default(&["a:9100", "b:9100", "c:9100", "c:9100"]),
    )
    .unwrap();
    let mut agent = cmd.spawn();
    assert!(
        wait_for(T, || agent
            .stderr()
            .contains("(3 targets, 1 added, 1 removed)")),
        "{}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("with 3 targets"),
        "{}",
        agent.stderr()
    );
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(T);
}

/// Windows tools start UTF-8 files with a byte-order mark: it is skipped,
/// over HTTP and from a file.
#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = TestDir::new("o-bom");
    let body = b"\xEF\xBB\xBF[\"sensor_1\", \"sensor_0\"]\r\n".to_vec();
    let want = render_default(&["sensor_0:9100", "sensor_1:9100"]);
    let inv = FakeInventory::start(Behavior::json(body.clone()));
    let out = AgentCmd::new(&dir).inventory(&inv).arg("--print").run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, want);
    let path = dir.join("inventory.json");
    fs::write(&path, &body).unwrap();
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", format!("file://{}", path.display()))
        .arg("--print")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, want);
    // Only at the start: one after whitespace is still invalid JSON.
    let inv = FakeInventory::start(Behavior::json(b" \xEF\xBB\xBF[\"a\"]".to_vec()));
    let out = AgentCmd::new(&dir).inventory(&inv).arg("--print").run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("invalid JSON"), "{}", out.describe());
}
