//! Log injection: sensor names holding newlines, ANSI
//! escape sequences, NUL bytes and other control characters are rejected,
//! and logged escaped on a single line, in stderr mode and in journal mode
//! (journal.rs covers the structured fields; this adds NUL, CR, C1
//! controls and Unicode line separators). Hostile bytes in the response
//! itself (reason phrase, header values at LOG_LEVEL=trace, raw control
//! bytes in the body) cannot break a line either.

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

/// (raw name, how it must appear escaped in the log)
const HOSTILE: &[(&str, &str)] = &[
    (
        "evil\n2025-01-01 00:00:00 - sd-updater - ERROR - forged line",
        r"evil\n2025-01-01 00:00:00 - sd-updater - ERROR - forged line",
    ),
    ("\u{1b}[31mred\u{1b}[0m", r"\u{1b}[31mred\u{1b}[0m"),
    ("nul\u{0}byte", r"nul\u{0}byte"),
    ("cr\roverwrite", r"cr\roverwrite"),
    ("tab\there", r"tab\there"),
    ("bell\u{7}del\u{7f}", r"bell\u{7}del\u{7f}"),
    ("c1\u{85}\u{9b}31m", r"c1\u{85}\u{9b}31m"),
    ("sep\u{2028}\u{2029}", r"sep\u{2028}\u{2029}"),
    ("bidi\u{202e}gnp.exe", r"bidi\u{202e}gnp.exe"),
];

fn hostile_inventory() -> Vec<u8> {
    let mut names: Vec<&str> = HOSTILE.iter().map(|(raw, _)| *raw).collect();
    names.push("sensor_ok");
    serde_json::to_vec(&names).unwrap()
}

/// Every line is one of ours: timestamp, name, level, message; the whole
/// log is printable ASCII.
fn assert_clean_lines(log: &[u8], ctx: &str) {
    if let Some(i) = log
        .iter()
        .position(|&b| !(b == b'\n' || (0x20..0x7f).contains(&b)))
    {
        panic!(
            "{ctx}: byte {:#04x} at {i} in the log: {:?}",
            log[i],
            String::from_utf8_lossy(&log[i.saturating_sub(80)..(i + 40).min(log.len())])
        );
    }
    let text = String::from_utf8_lossy(log);
    for line in text.lines() {
        let ok = line.len() > 22
            && line.as_bytes()[..19]
                .iter()
                .enumerate()
                .all(|(i, b)| match i {
                    4 | 7 => *b == b'-',
                    10 => *b == b' ',
                    13 | 16 => *b == b':',
                    _ => b.is_ascii_digit(),
                })
            && ["ERROR", "WARNING", "INFO", "DEBUG", "TRACE"]
                .iter()
                .any(|l| line[19..].starts_with(&format!(" - sd-updater - {l} - ")));
        assert!(ok, "{ctx}: not a log line of ours: {line:?}");
        assert!(
            !line.starts_with("2025-01-01 00:00:00"),
            "{ctx}: a forged line: {line:?}"
        );
    }
}

#[test]
fn hostile_names_are_rejected_and_logged_escaped_on_one_line_in_stderr_mode() {
    let dir = TestDir::new("inject");
    let server = Server::start("hostile", Reply::json(hostile_inventory()));
    // Mostly invalid on purpose: past the default MAX_INVALID_PERCENT.
    let spawn = AgentCmd::for_url(&dir, &server.url())
        .env("MAX_INVALID_PERCENT", "100")
        .arg("--once");
    let mut agent = spawn.spawn();
    let st = agent.wait_exit(T);
    let log = agent.log_bytes();
    let text = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{text}");
    // Rejected: only the good sensor is written.
    let file = fs::read(spawn.targets_file()).unwrap();
    assert_eq!(
        parse_file_sd(&file).unwrap(),
        vec!["sensor_ok:9100".to_string()]
    );
    assert_clean_lines(&log, "stderr mode");
    for (raw, escaped) in HOSTILE {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Dropping invalid sensor entry") && l.contains(escaped))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{raw:?} should be logged escaped as {escaped} on one line\n{text}"
        );
    }
}

#[test]
fn hostile_bytes_in_responses_cannot_break_lines() {
    let first = GoodList::numbered("first", 3);
    let mut d = Daemon::start(
        TestDir::new("inject-resp"),
        &first,
        &[("LOG_LEVEL", "trace"), ("RETRY_ATTEMPTS", "0")],
    );
    let raw = |b: &[u8]| Reply::Raw(Arc::new(b.to_vec()));
    let cases: Vec<(&'static str, Reply)> = vec![
        (
            "reason phrase with ESC and CR",
            raw(b"HTTP/1.1 500 Oops\x1b[2J\rforged\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        ),
        (
            "header value with C1 controls",
            raw(b"HTTP/1.1 200 OK\r\nX-Evil: a\xc2\x85b\xc2\x9b31m\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"),
        ),
        (
            "raw control bytes in a JSON string",
            raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n[\"a\x1b[31m\nb\x00c\x07\"] "),
        ),
        (
            "an error page with escape sequences",
            Reply::respond(
                404,
                &[("Content-Type", "text/plain")],
                &b"\x1b]0;owned\x07\n2025-01-01 00:00:00 - sd-updater - ERROR - forged\n"[..],
            ),
        ),
    ];
    for (what, reply) in cases {
        let log = d.cycle(what, reply);
        assert!(
            fetch_failure(&log).is_some(),
            "{what}: cycle did not fail\n{log}"
        );
        assert_eq!(fs::read(&d.file).unwrap(), *first.rendered, "{what}");
    }
    assert_clean_lines(&d.agent.log_bytes(), "responses at LOG_LEVEL=trace");
}

// ---------------------------------------------------------------------------
// Journal mode
// ---------------------------------------------------------------------------

type Entry = HashMap<String, Vec<u8>>;

/// Parses one native-protocol datagram: `KEY=value\n`, or
/// `KEY\n<le64 length><bytes>\n` for values that need it.
fn parse_entry(mut data: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            e.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            );
            data = &data[(nl + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            e.insert(key, rest[8..8 + len].to_vec());
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    e
}

#[test]
#[ignore = "needs root"]
fn hostile_names_are_logged_escaped_in_journal_mode() {
    // Journal mode needs a private mount namespace.
    require_root();
    require_tool("unshare", "util-linux");
    let dir = TestDir::new("inject-j");
    let server = Server::start("hostile", Reply::json(hostile_inventory()));
    let jdir = dir.join("journal");
    fs::create_dir(&jdir).unwrap();
    let socket = UnixDatagram::bind(jdir.join("socket")).unwrap();
    fs::set_permissions(jdir.join("socket"), fs::Permissions::from_mode(0o666)).unwrap();
    let stderr_path = dir.join("stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || {{ mkdir -p /run/systemd && \
         mount -t tmpfs tmpfs /run/systemd; }} && mkdir /run/systemd/journal && \
         mount --bind {} /run/systemd/journal && exec {BIN} --once",
        jdir.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUN_AS_USER", "nobody")
        .env("MAX_INVALID_PERCENT", "100")
        .env("INVENTORY_URL", server.url())
        .env("TARGETS_FILE", dir.join("out/targets.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn unshare");
    let mut entries = Vec::new();
    let deadline = Instant::now() + T;
    let mut buf = vec![0u8; 256 * 1024];
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let status = loop {
        if let Ok(n @ 1..) = socket.recv(&mut buf) {
            entries.push(parse_entry(&buf[..n]));
            continue;
        }
        if let Some(st) = child.try_wait().unwrap() {
            // Whatever is still queued.
            while let Ok(n @ 1..) = socket.recv(&mut buf) {
                entries.push(parse_entry(&buf[..n]));
            }
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--once in journal mode did not finish");
        }
    };
    let plain = fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(0), "{plain}");
    assert!(plain.is_empty(), "plain stderr in journal mode: {plain}");
    let dropped: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.get("MESSAGE")
                .is_some_and(|m| String::from_utf8_lossy(m).contains("invalid sensor entry"))
        })
        .collect();
    for (raw, escaped) in HOSTILE {
        let hits: Vec<&&Entry> = dropped
            .iter()
            .filter(|e| String::from_utf8_lossy(&e["MESSAGE"]).contains(escaped))
            .collect();
        assert_eq!(hits.len(), 1, "{raw:?} not logged escaped as {escaped}");
    }
    for e in &entries {
        for (k, v) in e {
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "odd field name {k:?}"
            );
            if k == "MESSAGE" {
                let m = String::from_utf8_lossy(v);
                assert!(
                    !m.chars().any(char::is_control),
                    "control character in MESSAGE {m:?}"
                );
            }
            // NUL never reaches a field (it would cut it short in journald).
            assert!(!v.contains(&0), "NUL in field {k}: {v:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Server text that reorders or breaks lines: a redirect Location
// ---------------------------------------------------------------------------

/// Redirect targets carrying Unicode that reorders or breaks lines, or
/// hides text: bidi overrides and isolates, line and paragraph separators,
/// zero-width and other format characters, tag characters.
const HOSTILE_LOCATIONS: &[(&str, &str)] = &[
    ("/inv\u{202e}nosj.exe", r"\u{202e}"),
    (
        "/a\u{2028}2025-01-01 00:00:00 - sd-updater - ERROR - forged",
        r"\u{2028}",
    ),
    ("/p\u{2029}q", r"\u{2029}"),
    ("/\u{2066}x\u{2069}\u{202a}\u{202d}", r"\u{2066}"),
    ("/soft\u{ad}hy\u{200b}\u{200f}\u{61c}\u{180e}", r"\u{ad}"),
    ("/\u{feff}\u{2060}\u{206f}\u{fff9}", r"\u{feff}"),
    ("/tag\u{e0001}\u{e0041}\u{e007f}", r"\u{e0001}"),
    (
        "http://u:Loc-Secr3t@127.0.0.1:1/\u{202e}x",
        r"u:***@127.0.0.1:1/\u{202e}x",
    ),
];

/// Whether `s` holds a character that must have been escaped.
fn has_unescaped(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        c.is_control()
            || matches!(
                u32::from(c),
                0xAD | 0x61C
                    | 0x180E
                    | 0x200B..=0x200F
                    | 0x2028..=0x202E
                    | 0x2060..=0x206F
                    | 0xFEFF
                    | 0xFFF9..=0xFFFB
                    | 0xE0000..=0xE007F
            )
    })
}

#[test]
fn hostile_locations_are_escaped_in_stderr_mode() {
    for (location, escaped) in HOSTILE_LOCATIONS {
        let dir = TestDir::new("inject-loc");
        let server = Server::start("redirect", Reply::redirect(location.to_string()));
        let RunOutput {
            status: st,
            stderr: log,
            ..
        } = AgentCmd::for_url(&dir, &server.url())
            .arg("--once")
            .env("LOG_LEVEL", "debug")
            .run(T);
        assert_eq!(st.and_then(|s| s.code()), Some(1), "{location:?}: {log}");
        assert_clean_lines(log.as_bytes(), &format!("{location:?}"));
        let failure = fetch_failure(&log).unwrap_or_else(|| panic!("no failure\n{log}"));
        assert!(
            failure.contains(escaped) && failure.contains("refused"),
            "{location:?} should be shown escaped ({escaped}): {failure}"
        );
        assert!(!log.contains("Loc-Secr3t"), "{log}");
    }
}

#[test]
fn hostile_locations_are_escaped_in_status() {
    let first = GoodList::numbered("first", 3);
    let mut d = Daemon::start(
        TestDir::new("inject-loc-st"),
        &first,
        &[("LOG_LEVEL", "trace"), ("RETRY_ATTEMPTS", "0")],
    );
    for (location, escaped) in HOSTILE_LOCATIONS {
        d.server
            .set("redirect", Reply::redirect(location.to_string()));
        d.agent.signal(nix::sys::signal::Signal::SIGHUP);
        // READY=1 after the cycle carries its STATUS=.
        let status = d
            .notify
            .wait_for("READY=1", DAEMON_T)
            .and_then(|m| field(&m, "STATUS").map(str::to_string))
            .unwrap_or_else(|| panic!("no READY=1 with STATUS=: {}", d.notify.recent()));
        let log = d.agent.log_new();
        assert!(fetch_failure(&log).is_some(), "{location:?}: {log}");
        assert!(status.contains("failing"), "{status}");
        if let Some(c) = has_unescaped(&status) {
            panic!("{location:?}: {c:?} reached STATUS= raw: {status:?}");
        }
        let prefix: String = escaped.chars().take(8).collect();
        assert!(status.contains(&prefix), "{location:?}: {status:?}");
        assert!(!status.contains("Loc-Secr3t"), "{status}");
        assert_eq!(fs::read(&d.file).unwrap(), *first.rendered);
    }
    assert_clean_lines(&d.agent.log_bytes(), "Locations at LOG_LEVEL=trace");
}

#[test]
#[ignore = "needs root"]
fn hostile_locations_are_escaped_in_journal_mode() {
    // Journal mode needs a private mount namespace.
    require_root();
    require_tool("unshare", "util-linux");
    for (location, escaped) in HOSTILE_LOCATIONS {
        let dir = TestDir::new("inject-loc-j");
        let server = Server::start("redirect", Reply::redirect(location.to_string()));
        let jdir = dir.join("journal");
        fs::create_dir(&jdir).unwrap();
        let socket = UnixDatagram::bind(jdir.join("socket")).unwrap();
        fs::set_permissions(jdir.join("socket"), fs::Permissions::from_mode(0o666)).unwrap();
        let stderr_path = dir.join("stderr");
        let stderr = File::create(&stderr_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || {{ mkdir -p /run/systemd && \
             mount -t tmpfs tmpfs /run/systemd; }} && mkdir /run/systemd/journal && \
             mount --bind {} /run/systemd/journal && exec {BIN} --once",
            jdir.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env("RUN_AS_USER", "nobody")
            .env("RETRY_ATTEMPTS", "0")
            .env("LOG_LEVEL", "trace")
            .env("INVENTORY_URL", server.url())
            .env("TARGETS_FILE", dir.join("out/targets.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn unshare");
        let mut entries = Vec::new();
        let deadline = Instant::now() + T;
        let mut buf = vec![0u8; 256 * 1024];
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let status = loop {
            if let Ok(n @ 1..) = socket.recv(&mut buf) {
                entries.push(parse_entry(&buf[..n]));
                continue;
            }
            if let Some(st) = child.try_wait().unwrap() {
                while let Ok(n @ 1..) = socket.recv(&mut buf) {
                    entries.push(parse_entry(&buf[..n]));
                }
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("--once in journal mode did not finish");
            }
        };
        assert_eq!(status.code(), Some(1), "{location:?}");
        let failed: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                e.get("MESSAGE").is_some_and(|m| {
                    String::from_utf8_lossy(m).contains("Failed to fetch inventory")
                })
            })
            .collect();
        assert_eq!(failed.len(), 1, "{location:?}");
        for field in ["MESSAGE", "ERROR"] {
            let v = String::from_utf8_lossy(&failed[0][field]).into_owned();
            assert!(v.contains(escaped), "{location:?}: {field}={v:?}");
        }
        for e in &entries {
            for (k, v) in e {
                let v = String::from_utf8_lossy(v);
                if let Some(c) = has_unescaped(&v) {
                    panic!("{location:?}: {c:?} raw in field {k}={v:?}");
                }
                assert!(!v.contains("Loc-Secr3t"), "{k}={v}");
            }
        }
    }
}
